//! The JSON of the model's objects: CHANNEL, CALL, QUEUE and ENDPOINT as
//! PROTOCOL.md "PBX topics" shapes them, and a tiny writer for flat JSON objects.

use std::sync::Arc;

use switchboard_proto::envelope::write_json_string;

use super::model::{
    Call, Channel, Endpoint, Id, Map, Party, Queue, member_status_name, state_name,
};

/// Writes the members of one JSON object; `{` on creation, `}` on [`Obj::end`].
pub(super) struct Obj<'a> {
    pub out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `"k":` (with the comma before it when needed); the value follows.
    pub fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json_string(self.out, k);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        write_json_string(self.key(k), v);
        self
    }

    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    pub fn num(&mut self, k: &str, v: u64) -> &mut Self {
        // Decimal digits, last first, without the formatting machinery.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut v = v;
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.key(k).extend_from_slice(&digits[at..]);
        self
    }

    pub fn opt_num(&mut self, k: &str, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k).extend_from_slice(b"null");
        self
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

fn write_id(out: &mut Vec<u8>, id: &Id) {
    let mut o = Obj::new(out);
    o.str("num", &id.num).str("name", &id.name);
    o.end();
}

fn write_party(out: &mut Vec<u8>, p: &Party) {
    let mut o = Obj::new(out);
    o.str("num", &p.id.num)
        .str("name", &p.id.name)
        .str("endpoint", &p.endpoint);
    o.end();
}

/// CHANNEL.
pub(super) fn write_channel(out: &mut Vec<u8>, ch: &Channel) {
    let mut o = Obj::new(out);
    o.str("channel", &ch.name)
        .str("uniqueid", &ch.uniqueid)
        .str("linkedid", &ch.linkedid)
        .str("endpoint", &ch.endpoint)
        .str("state", state_name(ch.state))
        .num("state_code", u64::from(ch.state));
    write_id(o.key("caller"), &ch.caller);
    write_id(o.key("connected"), &ch.connected);
    o.str("context", &ch.context)
        .str("exten", &ch.exten)
        .opt_str("bridge", ch.bridge.as_deref())
        .bool("held", ch.held)
        .bool("recording", ch.recording)
        .num("created_ms", ch.created_ms);
    o.end();
}

/// CALL: `from` is the live originating channel if there is one.
pub(super) fn write_call(out: &mut Vec<u8>, call: &Call, channels: &Map<Arc<str>, Channel>) {
    let live = || call.channels.iter().filter_map(|u| channels.get(u));
    let mut o = Obj::new(out);
    o.str("linkedid", &call.linkedid)
        .str("state", call.state.name());
    match call.origin.as_ref().and_then(|u| channels.get(u)) {
        Some(ch) => {
            let mut p = Obj::new(o.key("from"));
            p.str("num", &ch.caller.num)
                .str("name", &ch.caller.name)
                .str("endpoint", &ch.endpoint);
            p.end();
        }
        None => write_party(o.key("from"), &call.from),
    }
    match &call.to {
        Some(to) => write_party(o.key("to"), to),
        None => {
            o.null("to");
        }
    }
    let out = o.key("channels");
    out.push(b'[');
    for (i, u) in call.channels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, u);
    }
    out.push(b']');
    o.opt_str("queue", call.queue.as_deref())
        .bool("held", live().any(|c| c.held))
        .bool("recording", live().any(|c| c.recording))
        .num("started_ms", call.started_ms)
        .opt_num("answered_ms", call.answered_ms);
    o.end();
}

/// QUEUE.
pub(super) fn write_queue(out: &mut Vec<u8>, q: &Queue) {
    let mut o = Obj::new(out);
    o.str("name", &q.name);
    let out = o.key("callers");
    out.push(b'[');
    for (i, c) in q.callers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut e = Obj::new(out);
        e.str("channel", &c.channel)
            .str("uniqueid", &c.uniqueid)
            .num("position", c.position);
        write_id(e.key("caller"), &c.id);
        e.num("joined_ms", c.joined_ms);
        e.end();
    }
    out.push(b']');
    let out = o.key("members");
    out.push(b'[');
    for (i, m) in q.members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut e = Obj::new(out);
        e.str("interface", &m.interface)
            .str("name", &m.name)
            .str("state_interface", &m.state_interface)
            .num("status", u64::from(m.status))
            .str("status_text", member_status_name(m.status))
            .bool("paused", m.paused)
            .str("paused_reason", &m.paused_reason)
            .bool("in_call", m.in_call)
            .num("calls_taken", m.calls_taken);
        e.end();
    }
    out.push(b']');
    o.end();
}

/// Channel names an ENDPOINT lists: a phone has one or two, a trunk may have thousands,
/// and an endpoint is written at every change of its channels.
pub const MAX_ENDPOINT_CHANNELS_LISTED: usize = 32;

/// ENDPOINT: how many live channels it has, and the names of the first
/// [`MAX_ENDPOINT_CHANNELS_LISTED`] (by `Uniqueid`).
pub(super) fn write_endpoint(out: &mut Vec<u8>, e: &Endpoint, channels: &Map<Arc<str>, Channel>) {
    let mut o = Obj::new(out);
    o.str("name", &e.name)
        .str("state", &e.state)
        .num("channel_count", e.channels.len() as u64);
    let out = o.key("channels");
    out.push(b'[');
    let mut first = true;
    let listed = e
        .channels
        .iter()
        .filter_map(|u| channels.get(u))
        .take(MAX_ENDPOINT_CHANNELS_LISTED);
    for ch in listed {
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(out, &ch.name);
    }
    out.push(b']');
    o.end();
}
