//! The PBX state model: channels (by `Uniqueid`), calls (by `Linkedid`), bridges,
//! queues and endpoints, kept from the AMI event stream; the event -> topic mapping
//! (`ami.events`, `ami.call.<linkedid>`, `ami.queue.<name>`, `ami.endpoint.<name>`),
//! the `ami.calls` lifecycle derived from state transitions, resynchronisation after
//! a reconnect, and snapshots (the shapes are in PROTOCOL.md "PBX topics").
//!
//! [`Pbx::on_event`] publishes the event (if the filter passes it), then applies
//! it, publishing lifecycle messages as transitions happen, then the `update`s of
//! the queues and endpoints it changed. Nothing panics on odd input: unknown ids
//! are ignored, channels seen first mid-call are created from any event carrying
//! their snapshot, and recently hung-up channels are not brought back by late
//! events. Everything that ends is removed, so memory follows what is live.
//!
//! Submodules: `model` (the objects, the fast map), `event` (reading a channel
//! block), `render` (the JSON of CHANNEL, CALL, QUEUE, ENDPOINT), `calls`
//! (channels, bridges, transfers, the call lifecycle), `queues` (queues and
//! endpoints), `snapshot`.

mod calls;
mod event;
mod model;
mod queues;
mod render;
mod snapshot;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use switchboard_proto::ami::{Message, NameSet, decode_text};

use super::json::{EventFilter, FieldList, write_event_json_from};
use super::{Millis, PREFIX_CALL, PbxView, Sink, TOPIC_CALLS, TOPIC_EVENTS, call_segment};
use event::{Block, Ref, named};
use model::{Bridge, Call, Channel, Endpoint, Map, Queue, Tombstones};
use render::Obj;

/// The most live channels kept; channels beyond are not tracked (their events are
/// still published).
pub const MAX_CHANNELS: usize = 250_000;
/// The most bridges kept.
pub const MAX_BRIDGES: usize = 250_000;
/// The most queues kept.
pub const MAX_QUEUES: usize = 10_000;
/// The most callers, and the most members, kept per queue.
pub const MAX_QUEUE_ENTRIES: usize = 10_000;
/// The most endpoints kept.
pub const MAX_ENDPOINTS: usize = 250_000;

/// Items of the event lists the session asks for: they update the state but are
/// never published as events (`Status` items carry a `Privilege:`).
const LIST_ITEMS: [&[u8]; 5] = [
    b"CoreShowChannel",
    b"QueueParams",
    b"QueueMember",
    b"QueueEntry",
    b"Status",
];

/// Events that report a channel going away: their snapshot never creates it.
const NO_CREATE: [&[u8]; 8] = [
    b"Hangup",
    b"HangupRequest",
    b"SoftHangupRequest",
    b"BridgeLeave",
    b"ConfbridgeLeave",
    b"MixMonitorStop",
    b"AgentComplete",
    b"QueueCallerLeave",
];

/// Events that never change the state model: Asterisk reports every change of a
/// channel's snapshot with an event of its own (`Newstate`, `Newexten`,
/// `NewCallerid`...), so these only repeat a snapshot the model already has. Together
/// they are about half of a real PBX's stream (`VarSet` alone ~25%, `CEL` ~20% in
/// `asterisk22-local.txt`); when they are not published either (the default noise),
/// they cost a name comparison, and the parser does not even split them
/// ([`Pbx::skippable`]).
const STATELESS: [&str; 5] = ["VarSet", "CEL", "Cdr", "RTCPSent", "RTCPReceived"];

/// The `event` of the `update`s published at the end of a resync.
const RESYNC_EVENT: &str = "Resync";

/// A queue with more entries (callers and members), or an endpoint with more channels,
/// than this is big: its `update`, which lists every entry (a queue) or takes a look at
/// each listed channel (an endpoint), is published at most every [`BIG_UPDATE_MS`]
/// (the last change always gets one: it stays dirty until then). A busy call centre's
/// queue of a thousand waiting callers, or a trunk carrying thousands of calls, changes
/// hundreds of times a second; rendering it for each change would cost the AMI thread
/// more than all the events. Smaller ones get an `update` per change (per batch).
pub const BIG_LIST: usize = 100;

/// How often a big queue's or endpoint's `update` is published at most.
pub const BIG_UPDATE_MS: Millis = 250;

/// The PBX state model; see the module docs.
pub struct Pbx {
    filter: EventFilter,
    /// [`STATELESS`].
    stateless: NameSet,
    connected: bool,
    channels: Map<Arc<str>, Channel>,
    /// Channel name -> Uniqueid.
    names: Map<Arc<str>, Arc<str>>,
    calls: Map<Arc<str>, Call>,
    bridges: Map<Arc<str>, Bridge>,
    queues: Map<Arc<str>, Queue>,
    /// Uniqueids that have waited in a queue (a superset of the callers of every
    /// queue): a hangup looks through the queues only for these.
    queued: Map<Arc<str>, ()>,
    endpoints: Map<Arc<str>, Endpoint>,
    tombstones: Tombstones,
    /// Resync generation: objects seen since `resync_begin` carry it.
    generation: u32,
    resyncing: bool,
    /// Between [`begin_batch`](Pbx::begin_batch) and [`end_batch`](Pbx::end_batch):
    /// queue and endpoint `update`s wait for the end of the batch.
    batching: bool,
    dirty_queues: Vec<Arc<str>>,
    dirty_endpoints: Vec<Arc<str>>,
    /// The `data` of the current event (encoded once for every topic).
    event_buf: Vec<u8>,
    /// Lifecycle and update messages.
    buf: Vec<u8>,
    topic: String,
    /// The calls the current event belongs to: text and spans into it.
    targets: String,
    target_spans: Vec<(usize, usize)>,
}

impl std::fmt::Debug for Pbx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pbx")
            .field("connected", &self.connected)
            .field("channels", &self.channels.len())
            .field("calls", &self.calls.len())
            .field("bridges", &self.bridges.len())
            .field("queues", &self.queues.len())
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Pbx {
    /// An empty model, not connected, publishing what `filter` passes.
    pub fn new(filter: EventFilter) -> Pbx {
        Pbx {
            filter,
            stateless: NameSet::new(STATELESS),
            connected: false,
            channels: Map::default(),
            names: Map::default(),
            calls: Map::default(),
            bridges: Map::default(),
            queues: Map::default(),
            queued: Map::default(),
            endpoints: Map::default(),
            tombstones: Tombstones::default(),
            generation: 0,
            resyncing: false,
            batching: false,
            dirty_queues: Vec::new(),
            dirty_endpoints: Vec::new(),
            event_buf: Vec::new(),
            buf: Vec::new(),
            topic: String::new(),
            targets: String::new(),
            target_spans: Vec::new(),
        }
    }

    /// Live channels.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Live calls.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Known queues.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    /// Known endpoints.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Live bridges.
    pub fn bridges(&self) -> usize {
        self.bridges.len()
    }

    /// The filter in use.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The events this model drops on sight (noise that changes nothing it keeps):
    /// the parser may hand them over with their first field only
    /// ([`Parser::skip_events`](switchboard_proto::ami::Parser::skip_events)).
    pub fn skippable(&self) -> Vec<&'static str> {
        STATELESS
            .into_iter()
            .filter(|s| self.filter.is_noise(s.as_bytes()))
            .collect()
    }

    /// Applies one event (live, or an item of the CoreShowChannels / QueueStatus /
    /// Status lists) and publishes what it causes. Other messages are ignored.
    pub fn on_event(&mut self, msg: &Message<'_>, now: Millis, out: &mut impl Sink) {
        let Some(name) = msg.event() else {
            return;
        };
        let stateless = self.stateless.contains(name);
        let noise = self.filter.is_noise(name);
        if stateless && noise {
            return;
        }
        let mut list = FieldList::new();
        list.read(msg);
        let block = Block::from_list(&list);
        let list_item =
            block.action_id.is_some() && (block.privilege.is_none() || LIST_ITEMS.contains(&name));
        if list_item && name.ends_with(b"Complete") {
            return;
        }
        if !list_item && !noise && EventFilter::class_allowed(block.privilege) {
            self.publish_event(&list, &block, out);
        }
        if stateless {
            return;
        }
        let event = block.text.of(name);
        self.apply(name, &event, msg, &block, now, out);
        if !self.resyncing && !self.batching {
            self.flush_updates(now, out);
        }
    }

    /// Records the link state; publishes `{"kind":"link","connected":b}` on
    /// `ami.events` and `ami.calls` when it changes.
    pub fn set_connected(&mut self, connected: bool, out: &mut impl Sink) {
        if self.connected == connected {
            return;
        }
        self.connected = connected;
        self.buf.clear();
        let mut o = Obj::new(&mut self.buf);
        o.str("kind", "link").bool("connected", connected);
        o.end();
        out.publish(TOPIC_EVENTS, &self.buf);
        out.publish(TOPIC_CALLS, &self.buf);
    }

    /// Starts a batch of events (what one read from the PBX brought): until
    /// [`end_batch`](Self::end_batch), a queue or endpoint changed by several of them
    /// gets one `update`, with its state after the batch, rather than one per event.
    /// A queue with a thousand waiting callers is then written once per read, not once
    /// per caller that joins or leaves. Events and lifecycle messages are not delayed.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch: publishes the `update`s it held back (see
    /// [`flush_updates`](Self::flush_updates) for big queues).
    pub fn end_batch(&mut self, now: Millis, out: &mut impl Sink) {
        self.batching = false;
        self.tick(now, out);
    }

    /// Publishes the `update`s that are due: those of big queues and endpoints held
    /// back ([`BIG_LIST`]). Called at least every 100 ms.
    pub fn tick(&mut self, now: Millis, out: &mut impl Sink) {
        if !self.resyncing && !self.batching {
            self.flush_updates(now, out);
        }
    }

    /// Starts a resync: what is not seen (by a list item or a live event) until
    /// [`resync_end`](Self::resync_end) is dropped then.
    pub fn resync_begin(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.resyncing = true;
    }

    /// Ends a resync: drops unseen channels (their calls, if left without channels,
    /// end with `"cause":null,"reason":"lost"`), unseen queue members and callers,
    /// and empty bridges; announces the calls first seen during the resync
    /// (`started`, then `ringing` or `answered` as far as they got); publishes the
    /// `update`s of changed queues and endpoints.
    pub fn resync_end(&mut self, now: Millis, out: &mut impl Sink) {
        self.resyncing = false;
        let generation = self.generation;
        let mut stale: Vec<Arc<str>> = self
            .channels
            .values()
            .filter(|c| c.seen != generation)
            .map(|c| c.uniqueid.clone())
            .collect();
        stale.sort();
        for uid in stale {
            self.remove_channel(&uid, None, now, RESYNC_EVENT, true, out);
        }
        self.bridges.retain(|_, b| !b.channels.is_empty());
        self.resync_queues(generation);
        self.announce_new_calls(now, out);
        self.flush_updates(now, out);
    }

    /// Publishes the event's `data` on `ami.events` and on the topic of every call
    /// it belongs to.
    fn publish_event(&mut self, list: &FieldList<'_>, block: &Block<'_>, out: &mut impl Sink) {
        self.event_buf.clear();
        self.event_buf
            .extend_from_slice(br#"{"kind":"event","event":"#);
        write_event_json_from(&mut self.event_buf, list);
        self.event_buf.push(b'}');
        out.publish(TOPIC_EVENTS, &self.event_buf);
        self.collect_targets(block);
        for &(start, end) in &self.target_spans {
            let Some(linkedid) = self.targets.get(start..end) else {
                continue;
            };
            self.topic.clear();
            self.topic.push_str(PREFIX_CALL);
            self.topic.push_str(&call_segment(linkedid));
            out.republish(&self.topic, &self.event_buf);
        }
    }

    /// The calls an event belongs to: its `*Linkedid` values, the calls of the
    /// channels it names (`*Uniqueid`, `*Channel`) and of the channels in the
    /// bridges it names (`*BridgeUniqueid`).
    fn collect_targets(&mut self, block: &Block<'_>) {
        self.targets.clear();
        self.target_spans.clear();
        let (targets, spans) = (&mut self.targets, &mut self.target_spans);
        for &(kind, value) in block.refs.iter().take(block.ref_count) {
            let value = block.text.of(value);
            match kind {
                Ref::Linkedid => add_target(targets, spans, &value),
                Ref::Bridge => {
                    if let Some(b) = self.bridges.get(&*value) {
                        for ch in b.channels.iter().filter_map(|u| self.channels.get(u)) {
                            add_target(targets, spans, &ch.linkedid);
                        }
                    }
                }
                Ref::Uniqueid => {
                    if let Some(ch) = self.channels.get(&*value) {
                        add_target(targets, spans, &ch.linkedid);
                    }
                }
                Ref::Channel => {
                    let ch = self.names.get(&*value).and_then(|u| self.channels.get(u));
                    if let Some(ch) = ch {
                        add_target(targets, spans, &ch.linkedid);
                    }
                }
            }
        }
    }

    /// Applies one event to the model.
    fn apply(
        &mut self,
        name: &[u8],
        event: &str,
        msg: &Message<'_>,
        block: &Block<'_>,
        now: Millis,
        out: &mut impl Sink,
    ) {
        let uid = if block.is_snapshot() {
            self.upsert_channel(block, !NO_CREATE.contains(&name), now, event, out)
        } else {
            None
        };
        match name {
            b"Hangup" => {
                let cause = msg.get("Cause").and_then(model::parse_u64);
                let txt = msg.get("Cause-txt").unwrap_or_default();
                if let Some(uid) = self.resolve(block) {
                    self.remove_channel(&uid, Some((cause, txt)), now, event, false, out);
                }
            }
            b"Rename" => self.rename(msg, block, event),
            b"DialBegin" | b"DialState" | b"DialEnd" => {
                self.dial(name, msg, block, uid.as_ref(), now, out)
            }
            b"AgentCalled" => {
                let dest = Block::read(msg, b"Dest", block.text);
                if dest.is_snapshot() {
                    self.upsert_channel(&dest, true, now, event, out);
                }
                self.queue_event(name, msg, block, uid.as_ref(), now, event, out);
            }
            b"BridgeCreate" => self.bridge_create(msg),
            b"BridgeEnter" => {
                if let (Some(uid), Some(bid)) = (uid, named(msg.get("BridgeUniqueid"))) {
                    self.bridge_enter(bid, &uid, now, out);
                }
            }
            b"BridgeLeave" => {
                if let (Some(uid), Some(bid)) =
                    (self.resolve(block), named(msg.get("BridgeUniqueid")))
                {
                    self.bridge_leave(&decode_text(bid), &uid);
                }
            }
            b"BridgeDestroy" => {
                if let Some(bid) = named(msg.get("BridgeUniqueid")) {
                    self.bridge_destroy(&decode_text(bid));
                }
            }
            b"BridgeMerge" => self.bridge_merge(msg, now, out),
            b"BlindTransfer" | b"AttendedTransfer" => self.transfer(name, msg, now, out),
            b"Hold" | b"Unhold" => {
                if let Some(uid) = self.resolve(block) {
                    self.set_held(&uid, name == b"Hold", now, out);
                }
            }
            b"MixMonitorStart" | b"MixMonitorStop" => {
                if let Some(uid) = self.resolve(block) {
                    self.set_recording(&uid, name == b"MixMonitorStart", now, out);
                }
            }
            b"CoreShowChannel" | b"Status" => {
                if let Some(uid) = uid {
                    self.list_channel(msg, &uid, now, out);
                }
            }
            b"DeviceStateChange" => self.device_state(msg, event),
            b"QueueParams"
            | b"QueueMember"
            | b"QueueEntry"
            | b"QueueCallerJoin"
            | b"QueueCallerLeave"
            | b"QueueCallerAbandon"
            | b"QueueMemberAdded"
            | b"QueueMemberRemoved"
            | b"QueueMemberStatus"
            | b"QueueMemberPause"
            | b"QueueMemberPaused"
            | b"QueueMemberPenalty"
            | b"QueueMemberRinginuse"
            | b"AgentConnect"
            | b"AgentComplete" => self.queue_event(name, msg, block, uid.as_ref(), now, event, out),
            _ => {}
        }
    }

    /// The live channel a block names: by `Uniqueid`, else by `Channel` name.
    fn resolve(&self, block: &Block<'_>) -> Option<Arc<str>> {
        if let Some(ch) = named(block.uniqueid).and_then(|u| self.channels.get(&*block.text.of(u)))
        {
            return Some(ch.uniqueid.clone());
        }
        named(block.channel)
            .and_then(|n| self.names.get(&*block.text.of(n)))
            .cloned()
    }

    /// Publishes one lifecycle message about `call` on `ami.calls` (if the call was
    /// announced); `extra` writes the members after `call`.
    fn lifecycle(
        &mut self,
        linkedid: &str,
        kind: &str,
        now: Millis,
        extra: impl FnOnce(&mut Obj<'_>),
        out: &mut impl Sink,
    ) {
        let Some(call) = self.calls.get(linkedid) else {
            return;
        };
        publish_lifecycle(&mut self.buf, &self.channels, call, kind, now, extra, out);
    }
}

/// Writes and publishes one lifecycle message (nothing for a call not announced).
fn publish_lifecycle(
    buf: &mut Vec<u8>,
    channels: &Map<Arc<str>, Channel>,
    call: &Call,
    kind: &str,
    now: Millis,
    extra: impl FnOnce(&mut Obj<'_>),
    out: &mut impl Sink,
) {
    if !call.announced {
        return;
    }
    buf.clear();
    let mut o = Obj::new(buf);
    o.str("kind", kind)
        .str("linkedid", &call.linkedid)
        .num("at_ms", now);
    render::write_call(o.key("call"), call, channels);
    extra(&mut o);
    o.end();
    out.publish(TOPIC_CALLS, buf);
}

fn ends_with_ci(key: &[u8], suffix: &[u8]) -> bool {
    key.len() >= suffix.len()
        && key
            .get(key.len() - suffix.len()..)
            .is_some_and(|k| k.eq_ignore_ascii_case(suffix))
}

fn add_target(targets: &mut String, spans: &mut Vec<(usize, usize)>, linkedid: &str) {
    if spans
        .iter()
        .any(|&(s, e)| targets.get(s..e) == Some(linkedid))
    {
        return;
    }
    let start = targets.len();
    targets.push_str(linkedid);
    spans.push((start, targets.len()));
}

impl PbxView for Pbx {
    fn linkedid_of(&self, channel: &str) -> Option<&str> {
        let uid = self.names.get(channel)?;
        self.channels.get(uid).map(|c| &*c.linkedid)
    }

    fn channels_of_call(&self, linkedid: &str) -> Vec<&str> {
        self.calls
            .get(linkedid)
            .map(|call| {
                call.channels
                    .iter()
                    .filter_map(|u| self.channels.get(u))
                    .map(|c| &*c.name)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn has_queue(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }
}
