//! Queues (callers and members) and endpoints (device state and channels): their
//! events, what a resync drops, and the `update` messages of the ones that changed.

use std::sync::Arc;

use switchboard_proto::ami::{Message, decode_text};

use super::super::{Millis, PREFIX_ENDPOINT, PREFIX_QUEUE, Sink, topic_segment};
use super::event::{Block, named};
use super::model::{
    Caller, Endpoint, Id, Map, Member, Queue, arc, parse_bool, parse_u64, set_text,
};
use super::render::{Obj, write_endpoint, write_queue};
use super::{BIG_LIST, BIG_UPDATE_MS, MAX_ENDPOINTS, MAX_QUEUE_ENTRIES, MAX_QUEUES, Pbx};

/// An endpoint's state before any `DeviceStateChange`.
const UNKNOWN_STATE: &str = "UNKNOWN";

/// Sets a number; true if it changed.
fn set_num<T: PartialEq>(dst: &mut T, v: T) -> bool {
    if *dst == v {
        return false;
    }
    *dst = v;
    true
}

/// Updates a member from the fields of a `QueueMember*` event; true if it changed.
fn update_member(m: &mut Member, msg: &Message<'_>) -> bool {
    let mut changed = false;
    for f in msg.fields() {
        if !f.has_colon() {
            continue;
        }
        let (k, v) = (f.key(), f.value());
        let is = |name: &str| k.eq_ignore_ascii_case(name.as_bytes());
        if is("MemberName") || is("Name") {
            changed |= set_text(&mut m.name, v);
        } else if is("StateInterface") {
            changed |= set_text(&mut m.state_interface, v);
        } else if is("Status") {
            if let Some(s) = parse_u64(v) {
                changed |= set_num(&mut m.status, u32::try_from(s).unwrap_or(u32::MAX));
            }
        } else if is("Paused") {
            changed |= set_num(&mut m.paused, parse_bool(v));
        } else if is("PausedReason") || is("Reason") {
            changed |= set_text(&mut m.paused_reason, v);
        } else if is("InCall") {
            changed |= set_num(&mut m.in_call, parse_bool(v));
        } else if is("CallsTaken")
            && let Some(n) = parse_u64(v)
        {
            changed |= set_num(&mut m.calls_taken, n);
        }
    }
    changed
}

/// Positions 1..n in list order after a caller left.
fn renumber(callers: &mut [Caller]) {
    for (i, c) in callers.iter_mut().enumerate() {
        c.position = i as u64 + 1;
    }
}

impl Pbx {
    /// The key of a queue, created if needed (`None` past [`MAX_QUEUES`]).
    fn queue_key(&mut self, name: &[u8], event: &str) -> Option<Arc<str>> {
        let text = decode_text(name);
        if let Some((k, _)) = self.queues.get_key_value(&*text) {
            return Some(k.clone());
        }
        if self.queues.len() >= MAX_QUEUES {
            return None;
        }
        let k: Arc<str> = Arc::from(&*text);
        self.queues.insert(
            k.clone(),
            Queue {
                name: k.clone(),
                callers: Vec::new(),
                caller_ids: Map::default(),
                members: Vec::new(),
                dirty: false,
                changed_by: String::new(),
                updated_ms: 0,
            },
        );
        self.queue_dirty(&k, event);
        Some(k)
    }

    fn queue_dirty(&mut self, key: &Arc<str>, event: &str) {
        if let Some(q) = self.queues.get_mut(key) {
            if !q.dirty {
                q.dirty = true;
                self.dirty_queues.push(key.clone());
            }
            set_text(&mut q.changed_by, event.as_bytes());
        }
    }

    /// Queue events and list items (`QueueParams`, `QueueMember`, `QueueEntry`,
    /// callers joining and leaving, member changes, agents connecting).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_event(
        &mut self,
        name: &[u8],
        msg: &Message<'_>,
        block: &Block<'_>,
        uid: Option<&Arc<str>>,
        now: Millis,
        event: &str,
        out: &mut impl Sink,
    ) {
        let Some(key) = named(msg.get("Queue")).and_then(|q| self.queue_key(q, event)) else {
            return;
        };
        let generation = self.generation;
        let changed = match name {
            b"QueueParams" => false,
            b"QueueCallerJoin" | b"QueueEntry" => {
                self.caller_join(&key, msg, block, uid, name == b"QueueEntry", now)
            }
            b"QueueCallerLeave" | b"QueueCallerAbandon" => {
                let id = named(block.uniqueid).map(decode_text);
                let chan = named(block.channel).map(decode_text);
                self.queues.get_mut(&key).is_some_and(|q| {
                    let before = q.callers.len();
                    match (&id, &chan) {
                        (Some(id), _) => {
                            q.remove_caller(id);
                        }
                        (None, Some(ch)) => q.retain_callers(|c| c.channel != **ch),
                        (None, None) => {}
                    }
                    renumber(&mut q.callers);
                    q.callers.len() != before
                })
            }
            b"QueueMemberRemoved" => {
                let iface = member_interface(msg);
                self.queues.get_mut(&key).is_some_and(|q| {
                    let before = q.members.len();
                    q.members.retain(|m| Some(m.interface.as_bytes()) != iface);
                    q.members.len() != before
                })
            }
            b"AgentConnect" | b"AgentComplete" | b"AgentCalled" => {
                let connect = name == b"AgentConnect";
                if connect
                    && let Some(l) = uid
                        .and_then(|u| self.channels.get(u))
                        .map(|c| c.linkedid.clone())
                {
                    if let Some(call) = self.calls.get_mut(&l) {
                        call.queue.get_or_insert_with(|| key.clone());
                    }
                    let dest = named(msg.get("DestUniqueid")).map(decode_text);
                    self.call_answered(&l, dest.as_deref(), true, now, out);
                }
                match (name, self.member_mut(&key, msg, generation)) {
                    (b"AgentCalled", _) | (_, None) => false,
                    (_, Some((m, new))) => set_num(&mut m.in_call, connect) || new,
                }
            }
            _ => match self.member_mut(&key, msg, generation) {
                Some((m, new)) => update_member(m, msg) || new,
                None => false,
            },
        };
        if changed {
            self.queue_dirty(&key, event);
        }
    }

    /// The member an event names (`Interface`, or `Location` in `QueueMember`
    /// items), marked seen, created if needed (then with `true`).
    fn member_mut(
        &mut self,
        key: &Arc<str>,
        msg: &Message<'_>,
        generation: u32,
    ) -> Option<(&mut Member, bool)> {
        let iface = decode_text(member_interface(msg)?);
        let q = self.queues.get_mut(key)?;
        let (i, new) = match q.members.binary_search_by(|m| (*m.interface).cmp(&*iface)) {
            Ok(i) => (i, false),
            Err(i) => {
                if q.members.len() >= MAX_QUEUE_ENTRIES {
                    return None;
                }
                q.members.insert(
                    i,
                    Member {
                        interface: Box::from(&*iface),
                        ..Member::default()
                    },
                );
                (i, true)
            }
        };
        let m = q.members.get_mut(i)?;
        m.seen = generation;
        Some((m, new))
    }

    /// A caller joins (or is listed by `QueueEntry`); true if the queue changed.
    fn caller_join(
        &mut self,
        key: &Arc<str>,
        msg: &Message<'_>,
        block: &Block<'_>,
        uid: Option<&Arc<str>>,
        listed: bool,
        now: Millis,
    ) -> bool {
        let Some(id) = named(block.uniqueid) else {
            return false;
        };
        let id_text = decode_text(id);
        if self.tombstones.contains(&id_text) {
            return false;
        }
        let uid = uid.cloned().or_else(|| self.resolve(block));
        if let Some(call) = uid
            .as_ref()
            .and_then(|u| self.channels.get(u))
            .and_then(|c| self.calls.get_mut(&c.linkedid))
        {
            call.queue = Some(key.clone());
        }
        let generation = self.generation;
        let position = msg.get("Position").and_then(parse_u64).unwrap_or(0);
        let wait = msg.get("Wait").and_then(parse_u64).unwrap_or(0);
        let Some(q) = self.queues.get_mut(key) else {
            return false;
        };
        let mut changed = false;
        let i = match q.caller_index(&id_text) {
            Some(i) => i,
            None => {
                if q.callers.len() >= MAX_QUEUE_ENTRIES {
                    return false;
                }
                let joined_ms = if listed {
                    now.saturating_sub(wait.saturating_mul(1000))
                } else {
                    now
                };
                let uniqueid = uid.clone().unwrap_or_else(|| arc(id));
                self.queued.insert(uniqueid.clone(), ());
                q.push_caller(Caller {
                    uniqueid,
                    channel: String::new(),
                    position,
                    id: Id::default(),
                    joined_ms,
                    seen: generation,
                });
                changed = true;
                q.callers.len() - 1
            }
        };
        let Some(c) = q.callers.get_mut(i) else {
            return changed;
        };
        c.seen = generation;
        changed |= set_num(&mut c.position, position);
        for (dst, v) in [
            (&mut c.channel, block.channel),
            (&mut c.id.num, block.cid_num),
            (&mut c.id.name, block.cid_name),
        ] {
            if let Some(v) = v {
                changed |= set_text(dst, v);
            }
        }
        // The callers are in position order; only this one may have moved. A big
        // queue (hundreds of callers) is sorted only when it did.
        let prev = i.checked_sub(1).and_then(|p| q.callers.get(p));
        let (this, next) = (q.callers.get(i), q.callers.get(i + 1));
        let in_place = |a: Option<&Caller>, b: Option<&Caller>| match (a, b) {
            (Some(a), Some(b)) => a.position <= b.position,
            _ => true,
        };
        if !in_place(prev, this) || !in_place(this, next) {
            q.callers.sort_by_key(|c| c.position);
        }
        changed
    }

    /// A channel is gone: it waits in no queue any more.
    pub(super) fn queues_forget(&mut self, uid: &str, event: &str) {
        if self.queued.remove(uid).is_none() {
            return;
        }
        let mut changed: Vec<Arc<str>> = Vec::new();
        for (k, q) in &mut self.queues {
            if q.remove_caller(uid) {
                renumber(&mut q.callers);
                changed.push(k.clone());
            }
        }
        for k in changed {
            self.queue_dirty(&k, event);
        }
    }

    /// At the end of a resync: members and callers not listed since its start go.
    pub(super) fn resync_queues(&mut self, generation: u32) {
        let mut changed: Vec<Arc<str>> = Vec::new();
        for (k, q) in &mut self.queues {
            let before = (q.callers.len(), q.members.len());
            q.retain_callers(|c| c.seen == generation);
            q.members.retain(|m| m.seen == generation);
            if (q.callers.len(), q.members.len()) != before {
                renumber(&mut q.callers);
                changed.push(k.clone());
            }
        }
        for k in changed {
            self.queue_dirty(&k, super::RESYNC_EVENT);
        }
    }

    /// The key of an endpoint, created if needed (past [`MAX_ENDPOINTS`], a key
    /// that is not in the map).
    pub(super) fn endpoint_for(&mut self, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.endpoints.get_key_value(name) {
            return k.clone();
        }
        let k: Arc<str> = Arc::from(name);
        if self.endpoints.len() < MAX_ENDPOINTS {
            self.endpoints.insert(
                k.clone(),
                Endpoint {
                    name: k.clone(),
                    state: UNKNOWN_STATE.to_owned(),
                    state_known: false,
                    channels: Default::default(),
                    dirty: false,
                    changed_by: String::new(),
                    updated_ms: 0,
                },
            );
        }
        k
    }

    pub(super) fn endpoint_dirty(&mut self, key: &Arc<str>, event: &str) {
        if let Some(e) = self.endpoints.get_mut(key) {
            if !e.dirty {
                e.dirty = true;
                self.dirty_endpoints.push(key.clone());
            }
            set_text(&mut e.changed_by, event.as_bytes());
        }
    }

    pub(super) fn endpoint_add(&mut self, key: &Arc<str>, uid: &Arc<str>, event: &str) {
        if let Some(e) = self.endpoints.get_mut(key) {
            e.channels.insert(uid.clone());
            self.endpoint_dirty(key, event);
        }
    }

    pub(super) fn endpoint_remove(&mut self, key: &Arc<str>, uid: &str, event: &str) {
        if let Some(e) = self.endpoints.get_mut(key) {
            e.channels.remove(uid);
            self.endpoint_dirty(key, event);
        }
    }

    /// `DeviceStateChange`: `Device` is in `State`.
    pub(super) fn device_state(&mut self, msg: &Message<'_>, event: &str) {
        let (Some(device), Some(state)) = (named(msg.get("Device")), msg.get("State")) else {
            return;
        };
        let key = self.endpoint_for(&decode_text(device));
        let Some(e) = self.endpoints.get_mut(&key) else {
            return;
        };
        let known = std::mem::replace(&mut e.state_known, true);
        if set_text(&mut e.state, state) || !known {
            self.endpoint_dirty(&key, event);
        }
    }

    /// Publishes the `update` of every queue and endpoint changed since the last
    /// flush (a big one's only once [`BIG_UPDATE_MS`] have passed since its last
    /// one: it stays dirty until then); forgets endpoints with no channel and no known
    /// state.
    pub(super) fn flush_updates(&mut self, now: Millis, out: &mut impl Sink) {
        let mut list = std::mem::take(&mut self.dirty_queues);
        let mut kept = 0;
        for i in 0..list.len() {
            let Some(key) = list.get(i).cloned() else {
                break;
            };
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            let big = q.callers.len() + q.members.len() > BIG_LIST;
            if big && now < q.updated_ms.saturating_add(BIG_UPDATE_MS) {
                list.swap(kept, i);
                kept += 1;
                continue;
            }
            q.dirty = false;
            q.updated_ms = now;
            self.buf.clear();
            let mut o = Obj::new(&mut self.buf);
            o.str("kind", "update").str("event", &q.changed_by);
            write_queue(o.key("queue"), q);
            o.end();
            self.topic.clear();
            self.topic.push_str(PREFIX_QUEUE);
            self.topic.push_str(&topic_segment(&q.name));
            out.publish(&self.topic, &self.buf);
        }
        list.truncate(kept);
        self.dirty_queues = list;
        let mut list = std::mem::take(&mut self.dirty_endpoints);
        let mut kept = 0;
        for i in 0..list.len() {
            let Some(key) = list.get(i).cloned() else {
                break;
            };
            let Some(e) = self.endpoints.get_mut(&key) else {
                continue;
            };
            let big = e.channels.len() > BIG_LIST;
            if big && now < e.updated_ms.saturating_add(BIG_UPDATE_MS) {
                list.swap(kept, i);
                kept += 1;
                continue;
            }
            e.dirty = false;
            e.updated_ms = now;
            self.buf.clear();
            let mut o = Obj::new(&mut self.buf);
            o.str("kind", "update").str("event", &e.changed_by);
            write_endpoint(o.key("endpoint"), e, &self.channels);
            o.end();
            self.topic.clear();
            self.topic.push_str(PREFIX_ENDPOINT);
            self.topic.push_str(&topic_segment(&e.name));
            out.publish(&self.topic, &self.buf);
            if e.channels.is_empty() && !e.state_known {
                self.endpoints.remove(&key);
            }
        }
        list.truncate(kept);
        self.dirty_endpoints = list;
    }
}

/// The interface a member event names.
fn member_interface<'a>(msg: &Message<'a>) -> Option<&'a [u8]> {
    named(msg.get("Interface")).or_else(|| named(msg.get("Location")))
}
