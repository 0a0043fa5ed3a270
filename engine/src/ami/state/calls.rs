//! Channels, bridges and calls: creating and updating channels from their
//! snapshots, hangups, renames, dials, bridges, transfers, hold and recording, and
//! the `ami.calls` lifecycle they drive (`started`, `ringing`, `answered`, `held`,
//! `unheld`, `transferred`, `recording`, `ended`).

use std::sync::Arc;

use switchboard_proto::ami::{Message, decode_text};

use super::super::{Millis, Sink, endpoint_of};
use super::event::{Block, named};
use super::model::{
    Bridge, Call, CallState, Channel, Id, Party, STATE_RINGING, arc, parse_u64, set_text,
};
use super::{MAX_BRIDGES, MAX_CHANNELS, Pbx, ends_with_ci, publish_lifecycle};

/// Why a call ended without a hangup cause.
const REASON_LOST: &str = "lost";
/// A call whose channels all moved to another `Linkedid`.
const REASON_MERGED: &str = "merged";

/// A hangup's cause and `Cause-txt`.
pub(super) type Cause<'a> = (Option<u64>, &'a [u8]);

/// Updates a channel's caller ids, context and exten from a block; true if any
/// changed.
fn update_ids(ch: &mut Channel, b: &Block<'_>) -> bool {
    let mut changed = false;
    for (dst, v) in [
        (&mut ch.caller.num, b.cid_num),
        (&mut ch.caller.name, b.cid_name),
        (&mut ch.connected.num, b.conn_num),
        (&mut ch.connected.name, b.conn_name),
        (&mut ch.context, b.context),
        (&mut ch.exten, b.exten),
    ] {
        if let Some(v) = v {
            changed |= set_text(dst, v);
        }
    }
    changed
}

fn state_code(v: &[u8]) -> Option<u8> {
    parse_u64(v).map(|s| u8::try_from(s).unwrap_or(u8::MAX))
}

/// Seconds of an `HH:MM:SS` duration (`CoreShowChannel`'s `Duration`).
fn parse_hms(v: &[u8]) -> Option<u64> {
    v.split(|&b| b == b':').try_fold(0u64, |acc, part| {
        Some(acc.saturating_mul(60).saturating_add(parse_u64(part)?))
    })
}

impl Pbx {
    /// Updates the channel of a snapshot block, or creates it (with its call and
    /// endpoint) if `create` and it is neither known nor recently hung up.
    /// Returns its Uniqueid if it is live.
    pub(super) fn upsert_channel(
        &mut self,
        b: &Block<'_>,
        create: bool,
        now: Millis,
        event: &str,
        out: &mut impl Sink,
    ) -> Option<Arc<str>> {
        let uid_text = b.text.of(named(b.uniqueid)?);
        let generation = self.generation;
        if let Some(ch) = self.channels.get_mut(&*uid_text) {
            ch.seen = generation;
            let mut rang = false;
            if let Some(s) = b.state.and_then(state_code)
                && s != ch.state
            {
                ch.state = s;
                rang = s == STATE_RINGING;
            }
            update_ids(ch, b);
            let uid = ch.uniqueid.clone();
            let relink = named(b.linkedid)
                .filter(|l| *l != ch.linkedid.as_bytes())
                .map(arc);
            if let Some(linkedid) = relink {
                self.relink(&uid, linkedid, now, out);
            }
            if rang && let Some(l) = self.channels.get(&uid).map(|c| c.linkedid.clone()) {
                self.call_ringing(&l, now, out);
            }
            return Some(uid);
        }
        if !create || self.channels.len() >= MAX_CHANNELS || self.tombstones.contains(&uid_text) {
            return None;
        }
        let name = arc(named(b.channel)?);
        let uid: Arc<str> = Arc::from(&*uid_text);
        let linkedid = named(b.linkedid).map_or_else(|| uid.clone(), arc);
        let state = b.state.and_then(state_code).unwrap_or(0);
        let endpoint = self.endpoint_for(endpoint_of(&name));
        let mut ch = Channel {
            uniqueid: uid.clone(),
            name: name.clone(),
            linkedid: linkedid.clone(),
            endpoint: endpoint.clone(),
            state,
            caller: Id::default(),
            connected: Id::default(),
            context: String::new(),
            exten: String::new(),
            bridge: None,
            held: false,
            recording: false,
            created_ms: now,
            seen: generation,
        };
        update_ids(&mut ch, b);
        self.names.insert(name, uid.clone());
        self.channels.insert(uid.clone(), ch);
        self.endpoint_add(&endpoint, &uid, event);
        self.join_call(&uid, &linkedid, now, out);
        if state == STATE_RINGING {
            self.call_ringing(&linkedid, now, out);
        }
        Some(uid)
    }

    /// Adds a channel to the call `linkedid`, creating (and, outside a resync,
    /// announcing) the call.
    fn join_call(&mut self, uid: &Arc<str>, linkedid: &Arc<str>, now: Millis, out: &mut impl Sink) {
        let created = self.channels.get(uid).map_or(now, |c| c.created_ms);
        let is_new = !self.calls.contains_key(linkedid);
        let call = self.calls.entry(linkedid.clone()).or_insert_with(|| Call {
            linkedid: linkedid.clone(),
            channels: Vec::new(),
            origin: None,
            from: Party::default(),
            to: None,
            queue: None,
            state: CallState::Started,
            started_ms: created,
            ringing_ms: None,
            answered_ms: None,
            cause: None,
            cause_txt: String::new(),
            announced: false,
        });
        if !call.channels.contains(uid) {
            call.channels.push(uid.clone());
        }
        let first = call.origin.is_none() && call.channels.len() == 1;
        if first || (**uid == **linkedid && call.origin.as_ref() != Some(uid)) {
            call.origin = Some(uid.clone());
        }
        if is_new && !self.resyncing {
            call.announced = true;
            self.lifecycle(linkedid, "started", now, |_| {}, out);
        }
    }

    /// Moves a channel whose `Linkedid` changed to its new call; the old call, if
    /// left empty, ends (`"reason":"merged"`).
    fn relink(&mut self, uid: &Arc<str>, linkedid: Arc<str>, now: Millis, out: &mut impl Sink) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        let old = std::mem::replace(&mut ch.linkedid, linkedid.clone());
        let party = ch.party();
        let mut empty = false;
        if let Some(call) = self.calls.get_mut(&old) {
            call.channels.retain(|u| u != uid);
            if call.origin.as_ref() == Some(uid) {
                call.from = party;
                call.origin = None;
            }
            empty = call.channels.is_empty();
        }
        self.join_call(uid, &linkedid, now, out);
        if empty {
            self.end_call(&old, now, Some(REASON_MERGED), out);
        }
    }

    /// Removes a channel (hangup, or unseen at a resync: `lost`) from everything
    /// that refers to it; its call ends when it was the last channel.
    pub(super) fn remove_channel(
        &mut self,
        uid: &str,
        cause: Option<Cause<'_>>,
        now: Millis,
        event: &str,
        lost: bool,
        out: &mut impl Sink,
    ) {
        let Some(ch) = self.channels.remove(uid) else {
            return;
        };
        if self.names.get(&ch.name) == Some(&ch.uniqueid) {
            self.names.remove(&ch.name);
        }
        if let Some(bid) = &ch.bridge {
            self.bridge_leave(bid, uid);
        }
        self.endpoint_remove(&ch.endpoint, uid, event);
        self.queues_forget(uid, event);
        let mut empty = false;
        if let Some(call) = self.calls.get_mut(&ch.linkedid) {
            call.channels.retain(|u| **u != *uid);
            if call.origin.as_deref() == Some(uid) {
                call.from = ch.party();
                call.origin = None;
            }
            if let Some((Some(code), txt)) = cause
                && (call.cause.is_none() || (call.cause == Some(0) && code != 0))
            {
                call.cause = Some(code);
                set_text(&mut call.cause_txt, txt);
            }
            empty = call.channels.is_empty();
        }
        if empty {
            let reason = lost.then_some(REASON_LOST);
            self.end_call(&ch.linkedid, now, reason, out);
        }
        self.tombstones.add(ch.uniqueid);
    }

    /// Removes a call, publishing `ended` if it was announced.
    fn end_call(&mut self, linkedid: &str, now: Millis, reason: Option<&str>, out: &mut impl Sink) {
        let Some(call) = self.calls.remove(linkedid) else {
            return;
        };
        let duration = now.saturating_sub(call.started_ms);
        let talk = call.answered_ms.map_or(0, |a| now.saturating_sub(a));
        let extra = |o: &mut super::Obj<'_>| {
            match reason {
                Some(r) => {
                    o.null("cause").null("cause_txt").str("reason", r);
                }
                None => {
                    o.opt_num("cause", call.cause);
                    if call.cause.is_some() {
                        o.str("cause_txt", &call.cause_txt);
                    } else {
                        o.null("cause_txt");
                    }
                }
            }
            o.bool("answered", call.answered_ms.is_some())
                .num("duration_ms", duration)
                .num("talk_ms", talk);
        };
        publish_lifecycle(
            &mut self.buf,
            &self.channels,
            &call,
            "ended",
            now,
            extra,
            out,
        );
    }

    /// `ringing`, the first time a channel of the call rings (before any answer).
    pub(super) fn call_ringing(&mut self, linkedid: &str, now: Millis, out: &mut impl Sink) {
        let Some(call) = self.calls.get_mut(linkedid) else {
            return;
        };
        if call.state != CallState::Started {
            return;
        }
        call.state = CallState::Ringing;
        call.ringing_ms = Some(now);
        self.lifecycle(linkedid, "ringing", now, |_| {}, out);
    }

    /// `answered`, once: two parties of the call are connected. `answerer` (a
    /// Uniqueid) becomes the call's `to` if `replace_to` or it has none.
    pub(super) fn call_answered(
        &mut self,
        linkedid: &str,
        answerer: Option<&str>,
        replace_to: bool,
        now: Millis,
        out: &mut impl Sink,
    ) {
        let party = answerer
            .and_then(|u| self.channels.get(u))
            .map(Channel::party);
        let Some(call) = self.calls.get_mut(linkedid) else {
            return;
        };
        if call.state == CallState::Answered {
            return;
        }
        call.state = CallState::Answered;
        call.answered_ms = Some(now);
        if let Some(p) = party {
            let is_origin = call.origin.as_deref() == answerer;
            if !is_origin && (replace_to || call.to.is_none()) {
                call.to = Some(p);
            }
        }
        let ring_ms = call.ringing_ms.map_or(0, |r| now.saturating_sub(r));
        self.lifecycle(
            linkedid,
            "answered",
            now,
            |o| {
                o.num("ring_ms", ring_ms);
            },
            out,
        );
    }

    /// `Rename`: the channel's new name (and endpoint).
    pub(super) fn rename(&mut self, msg: &Message<'_>, block: &Block<'_>, event: &str) {
        let Some(new) = named(msg.get("Newname")) else {
            return;
        };
        let Some(uid) = self.resolve(block) else {
            return;
        };
        let new_name = arc(new);
        let Some(ch) = self.channels.get_mut(&uid) else {
            return;
        };
        if ch.name == new_name {
            return;
        }
        let old_name = std::mem::replace(&mut ch.name, new_name.clone());
        let old_endpoint = ch.endpoint.clone();
        if self.names.get(&old_name) == Some(&uid) {
            self.names.remove(&old_name);
        }
        self.names.insert(new_name.clone(), uid.clone());
        let endpoint = endpoint_of(&new_name);
        if endpoint == &*old_endpoint {
            self.endpoint_dirty(&old_endpoint, event);
        } else {
            self.endpoint_remove(&old_endpoint, &uid, event);
            let key = self.endpoint_for(endpoint);
            if let Some(ch) = self.channels.get_mut(&uid) {
                ch.endpoint = key.clone();
            }
            self.endpoint_add(&key, &uid, event);
        }
    }

    /// `DialBegin` (the call's `to`), `DialState` (`RINGING`), `DialEnd`
    /// (`ANSWER` with a calling channel: answered).
    pub(super) fn dial(
        &mut self,
        name: &[u8],
        msg: &Message<'_>,
        block: &Block<'_>,
        caller: Option<&Arc<str>>,
        now: Millis,
        out: &mut impl Sink,
    ) {
        let event = block.text.of(name);
        let event = &*event;
        let dest = Block::read(msg, b"Dest", block.text);
        let dest_uid = if dest.is_snapshot() {
            self.upsert_channel(&dest, true, now, event, out)
        } else {
            self.resolve(&dest)
        };
        let linkedid_of = |u: Option<&Arc<str>>| {
            u.and_then(|u| self.channels.get(u))
                .map(|c| c.linkedid.clone())
        };
        let Some(linkedid) = linkedid_of(caller).or_else(|| linkedid_of(dest_uid.as_ref())) else {
            return;
        };
        let status = msg.get("DialStatus").unwrap_or_default();
        match name {
            b"DialBegin" => {
                let to = caller
                    .and(dest_uid.as_ref())
                    .and_then(|d| self.channels.get(d))
                    .map(Channel::party);
                if let (Some(to), Some(call)) = (to, self.calls.get_mut(&linkedid))
                    && call.to.is_none()
                {
                    call.to = Some(to);
                }
            }
            b"DialState" if status.eq_ignore_ascii_case(b"RINGING") => {
                self.call_ringing(&linkedid, now, out);
            }
            b"DialEnd" if caller.is_some() && status.eq_ignore_ascii_case(b"ANSWER") => {
                self.call_answered(&linkedid, dest_uid.as_deref(), true, now, out);
            }
            _ => {}
        }
    }

    /// `BridgeCreate`: a known, empty bridge.
    pub(super) fn bridge_create(&mut self, msg: &Message<'_>) {
        if let Some(bid) = named(msg.get("BridgeUniqueid")) {
            self.bridge_key(&decode_text(bid));
        }
    }

    /// The key of a bridge, created if needed (`None` past [`MAX_BRIDGES`]).
    fn bridge_key(&mut self, bid: &str) -> Option<Arc<str>> {
        let generation = self.generation;
        if let Some((k, b)) = self.bridges.get_key_value(bid) {
            let k = k.clone();
            if b.seen != generation
                && let Some(b) = self.bridges.get_mut(&k)
            {
                b.seen = generation;
            }
            return Some(k);
        }
        if self.bridges.len() >= MAX_BRIDGES {
            return None;
        }
        let k: Arc<str> = Arc::from(bid);
        self.bridges.insert(
            k.clone(),
            Bridge {
                channels: Vec::new(),
                seen: generation,
            },
        );
        Some(k)
    }

    /// A channel enters a bridge (leaving any other); two channels of one call in
    /// a bridge answer it.
    pub(super) fn bridge_enter(
        &mut self,
        bid: &[u8],
        uid: &Arc<str>,
        now: Millis,
        out: &mut impl Sink,
    ) {
        let bid = decode_text(bid);
        let old = self.channels.get(uid).and_then(|c| c.bridge.clone());
        if let Some(old) = old {
            if *old == *bid {
                return;
            }
            self.bridge_leave(&old, uid);
        }
        let Some(key) = self.bridge_key(&bid) else {
            return;
        };
        if let Some(b) = self.bridges.get_mut(&key)
            && !b.channels.contains(uid)
        {
            b.channels.push(uid.clone());
        }
        if let Some(ch) = self.channels.get_mut(uid) {
            ch.bridge = Some(key.clone());
        }
        self.check_bridge(&key, now, out);
    }

    /// Answers every not yet answered call with two channels in the bridge.
    fn check_bridge(&mut self, key: &str, now: Millis, out: &mut impl Sink) {
        let Some(b) = self.bridges.get(key) else {
            return;
        };
        let mut found: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (i, u) in b.channels.iter().enumerate() {
            let Some(c) = self.channels.get(u) else {
                continue;
            };
            let answered = self
                .calls
                .get(&c.linkedid)
                .is_none_or(|call| call.state == CallState::Answered);
            if answered || found.iter().any(|(l, _)| *l == c.linkedid) {
                continue;
            }
            let other = b.channels.iter().skip(i + 1).find(|v| {
                self.channels
                    .get(*v)
                    .is_some_and(|d| d.linkedid == c.linkedid)
            });
            if let Some(other) = other {
                found.push((c.linkedid.clone(), other.clone()));
            }
        }
        for (linkedid, other) in found {
            self.call_answered(&linkedid, Some(&other), false, now, out);
        }
    }

    /// A channel leaves a bridge; an empty bridge is forgotten.
    pub(super) fn bridge_leave(&mut self, bid: &str, uid: &str) {
        if let Some(b) = self.bridges.get_mut(bid) {
            b.channels.retain(|u| **u != *uid);
            if b.channels.is_empty() {
                self.bridges.remove(bid);
            }
        }
        if let Some(ch) = self.channels.get_mut(uid)
            && ch.bridge.as_deref() == Some(bid)
        {
            ch.bridge = None;
        }
    }

    /// `BridgeDestroy`.
    pub(super) fn bridge_destroy(&mut self, bid: &str) {
        let Some(b) = self.bridges.remove(bid) else {
            return;
        };
        for u in &b.channels {
            if let Some(ch) = self.channels.get_mut(u)
                && ch.bridge.as_deref() == Some(bid)
            {
                ch.bridge = None;
            }
        }
    }

    /// `BridgeMerge`: the channels of `From` move to `To`.
    pub(super) fn bridge_merge(&mut self, msg: &Message<'_>, now: Millis, out: &mut impl Sink) {
        let (Some(to), Some(from)) = (
            named(msg.get("ToBridgeUniqueid")),
            named(msg.get("FromBridgeUniqueid")),
        ) else {
            return;
        };
        let (to, from) = (decode_text(to), decode_text(from));
        if to == from {
            return;
        }
        let Some(moved) = self.bridges.remove(&*from) else {
            return;
        };
        let Some(key) = self.bridge_key(&to) else {
            return;
        };
        for u in moved.channels {
            if let Some(ch) = self.channels.get_mut(&u) {
                ch.bridge = Some(key.clone());
            }
            if let Some(b) = self.bridges.get_mut(&key)
                && !b.channels.contains(&u)
            {
                b.channels.push(u);
            }
        }
        self.check_bridge(&key, now, out);
    }

    /// `BlindTransfer` / `AttendedTransfer` with `Result: Success`: `transferred`
    /// on every known call the event names.
    pub(super) fn transfer(
        &mut self,
        name: &[u8],
        msg: &Message<'_>,
        now: Millis,
        out: &mut impl Sink,
    ) {
        if !msg
            .get("Result")
            .is_some_and(|r| r.eq_ignore_ascii_case(b"Success"))
        {
            return;
        }
        let blind = name == b"BlindTransfer";
        let to = if blind {
            decode_text(msg.get("Extension").unwrap_or_default()).into_owned()
        } else {
            self.attended_target(msg)
        };
        let mut calls: Vec<Arc<str>> = Vec::new();
        for f in msg.fields() {
            if f.has_colon()
                && ends_with_ci(f.key(), b"linkedid")
                && let Some((k, _)) = self.calls.get_key_value(&*decode_text(f.value()))
                && !calls.contains(k)
            {
                calls.push(k.clone());
            }
        }
        let kind = if blind { "blind" } else { "attended" };
        for linkedid in calls {
            self.lifecycle(
                &linkedid,
                "transferred",
                now,
                |o| {
                    o.str("transfer", kind).str("to", &to);
                },
                out,
            );
        }
    }

    /// Where an attended transfer went: the target channel (`TransferTarget*`, else
    /// the channel of the destination bridge that is neither transferer nor
    /// transferee), the application, or the other end of a link.
    fn attended_target(&self, msg: &Message<'_>) -> String {
        if let Some(t) = named(msg.get("TransferTargetChannel")) {
            return decode_text(t).into_owned();
        }
        let dest_type = msg.get("DestType").unwrap_or_default();
        let text = |k: &str| decode_text(msg.get(k).unwrap_or_default()).into_owned();
        if dest_type.eq_ignore_ascii_case(b"App") {
            return text("DestApp");
        }
        if dest_type.eq_ignore_ascii_case(b"Link") {
            return text("LocalTwoChannel");
        }
        if dest_type.eq_ignore_ascii_case(b"Threeway") {
            return text("DestThreewayChannel");
        }
        let parties: Vec<&[u8]> = [
            "OrigTransfererChannel",
            "SecondTransfererChannel",
            "TransfereeChannel",
        ]
        .iter()
        .filter_map(|k| msg.get(k))
        .collect();
        named(msg.get("DestBridgeUniqueid"))
            .and_then(|bid| self.bridges.get(&*decode_text(bid)))
            .and_then(|b| {
                b.channels
                    .iter()
                    .filter_map(|u| self.channels.get(u))
                    .find(|c| !parties.contains(&c.name.as_bytes()))
            })
            .map(|c| c.name.to_string())
            .unwrap_or_default()
    }

    /// `Hold` / `Unhold`: `held` / `unheld` when the channel's flag changes.
    pub(super) fn set_held(&mut self, uid: &str, on: bool, now: Millis, out: &mut impl Sink) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if ch.held == on {
            return;
        }
        ch.held = on;
        let (linkedid, name) = (ch.linkedid.clone(), ch.name.clone());
        let kind = if on { "held" } else { "unheld" };
        self.lifecycle(
            &linkedid,
            kind,
            now,
            |o| {
                o.str("channel", &name);
            },
            out,
        );
    }

    /// `MixMonitorStart` / `MixMonitorStop`: `recording` when the flag changes.
    pub(super) fn set_recording(&mut self, uid: &str, on: bool, now: Millis, out: &mut impl Sink) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if ch.recording == on {
            return;
        }
        ch.recording = on;
        let (linkedid, name) = (ch.linkedid.clone(), ch.name.clone());
        self.lifecycle(
            &linkedid,
            "recording",
            now,
            |o| {
                o.bool("recording", on).str("channel", &name);
            },
            out,
        );
    }

    /// `CoreShowChannel` / `Status` items: the channel's bridge and age.
    pub(super) fn list_channel(
        &mut self,
        msg: &Message<'_>,
        uid: &Arc<str>,
        now: Millis,
        out: &mut impl Sink,
    ) {
        let age = msg
            .get("Seconds")
            .and_then(parse_u64)
            .or_else(|| msg.get("Duration").and_then(parse_hms));
        if let Some(secs) = age {
            let created = now.saturating_sub(secs.saturating_mul(1000));
            if let Some(ch) = self.channels.get_mut(uid) {
                ch.created_ms = ch.created_ms.min(created);
                if let Some(call) = self.calls.get_mut(&ch.linkedid)
                    && !call.announced
                {
                    call.started_ms = call.started_ms.min(created);
                }
            }
        }
        match msg.get("BridgeId") {
            Some(bid) if named(Some(bid)).is_some() => self.bridge_enter(bid, uid, now, out),
            Some(_) => {
                if let Some(old) = self.channels.get(uid).and_then(|c| c.bridge.clone()) {
                    self.bridge_leave(&old, uid);
                }
            }
            None => {}
        }
    }

    /// At the end of a resync: `started` (then `ringing` or `answered`) for every
    /// call first seen during it, oldest first.
    pub(super) fn announce_new_calls(&mut self, now: Millis, out: &mut impl Sink) {
        let mut fresh: Vec<(u64, Arc<str>)> = self
            .calls
            .values()
            .filter(|c| !c.announced)
            .map(|c| (c.started_ms, c.linkedid.clone()))
            .collect();
        fresh.sort();
        for (_, linkedid) in fresh {
            let Some(call) = self.calls.get_mut(&linkedid) else {
                continue;
            };
            call.announced = true;
            let state = call.state;
            let ring_ms = match (call.ringing_ms, call.answered_ms) {
                (Some(r), Some(a)) => a.saturating_sub(r),
                _ => 0,
            };
            self.lifecycle(&linkedid, "started", now, |_| {}, out);
            match state {
                CallState::Started => {}
                CallState::Ringing => self.lifecycle(&linkedid, "ringing", now, |_| {}, out),
                CallState::Answered => self.lifecycle(
                    &linkedid,
                    "answered",
                    now,
                    |o| {
                        o.num("ring_ms", ring_ms);
                    },
                    out,
                ),
            }
        }
    }
}
