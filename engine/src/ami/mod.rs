//! The AMI ingest shard: one thread that holds a session with an Asterisk PBX's
//! Manager Interface, turns its event stream into `ami.*` topics, keeps the PBX's
//! state so that a subscriber starts from a snapshot, and runs the action gateway
//! through which authorised browsers act on calls.
//!
//! - [`session`]: the supervisor as a sans-I/O state machine: banner, MD5 challenge
//!   login with plain fallback, event mask, keep-alive pings, the resynchronisation
//!   lists, backoff with jitter between attempts;
//! - [`state`]: the PBX state model (channels, bridges, calls by `Linkedid`, queues,
//!   endpoints), the event -> topic mapping, the `ami.calls` lifecycle and snapshots;
//! - [`input`]: the byte stream, parsed where each read lies;
//! - [`json`]: events as JSON, and the event filter;
//! - [`gateway`]: the action gateway: grants, validation, server-built actions,
//!   `ActionID` correlation, rate limits, results;
//! - [`thread`]: the I/O: a ring of its own (connect, recv, send, ticks) between the
//!   PBX and the router;
//! - [`status`]: the session as `/metrics` and `/healthz` show it.
//!
//! Everything but `thread` is pure and driven by explicit inputs (bytes, messages,
//! the clock), so it is tested without sockets.
//!
//! Snapshots without a gap: a subscription to `ami.*` patterns sends its barrier to the
//! router, which asks this thread for the snapshot instead of answering at once; the
//! snapshot comes back on the same queue as this thread's publishes, after every event
//! it includes, and the router sends it as the barrier's replay. Everything routed
//! before it is in it; everything after it reaches the new subscriber.

pub mod gateway;
pub mod input;
pub mod json;
pub mod session;
pub mod state;
pub mod status;
pub mod thread;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use switchboard_proto::topic;

/// The firehose of (filtered) events.
pub const TOPIC_EVENTS: &str = "ami.events";
/// The normalised call lifecycle stream.
pub const TOPIC_CALLS: &str = "ami.calls";
/// Prefix of one call's topic (`ami.call.<linkedid>`).
pub const PREFIX_CALL: &str = "ami.call.";
/// Prefix of one queue's topic (`ami.queue.<name>`).
pub const PREFIX_QUEUE: &str = "ami.queue.";
/// Prefix of one endpoint's topic (`ami.endpoint.<name>`, e.g. `ami.endpoint.PJSIP/101`).
pub const PREFIX_ENDPOINT: &str = "ami.endpoint.";
/// The namespace every AMI topic lives in.
pub const NAMESPACE: &str = "ami";

/// Milliseconds since the Unix epoch: the clock every pure part is given.
pub type Millis = u64;

/// Where the pure parts put what they publish: a topic and its JSON `data` value.
pub trait Sink {
    fn publish(&mut self, topic: &str, data: &[u8]);

    /// Publishes to `topic` the `data` the previous [`publish`](Self::publish) was
    /// given (an event goes to `ami.events` and to its calls): a sink that copies the
    /// data may share that copy.
    fn republish(&mut self, topic: &str, data: &[u8]) {
        self.publish(topic, data);
    }
}

/// A sink that keeps everything, for tests and snapshots.
impl Sink for Vec<(String, Vec<u8>)> {
    fn publish(&mut self, topic: &str, data: &[u8]) {
        self.push((topic.to_owned(), data.to_vec()));
    }
}

/// How much an [`Arena`] chunk holds: one allocation per this many bytes published.
pub const ARENA_CHUNK: usize = 64 * 1024;

/// The copies of what the AMI thread publishes, carved from shared chunks: the router
/// gets each topic and data as a [`Bytes`] without an allocation per message (a
/// chunk is freed when the router has dropped the last message cut from it, which
/// is right after encoding it).
#[derive(Debug, Default)]
pub struct Arena {
    chunk: BytesMut,
    /// The last data copied, shared by [`Sink::republish`].
    last: Bytes,
}

impl Arena {
    /// A copy of `bytes`.
    pub fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < bytes.len() {
            self.chunk = BytesMut::with_capacity(ARENA_CHUNK.max(bytes.len()));
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.split().freeze()
    }

    /// A copy of a publish's data, remembered for [`shared`](Self::shared).
    pub fn copy_data(&mut self, data: &[u8]) -> Bytes {
        self.last = self.copy(data);
        self.last.clone()
    }

    /// The last [`copy_data`](Self::copy_data), shared (for [`Sink::republish`]).
    pub fn shared(&self) -> Bytes {
        self.last.clone()
    }
}

/// What the gateway needs to know about the PBX to decide whether a caller owns the
/// target of an action. Implemented by [`state::Pbx`].
pub trait PbxView {
    /// The `Linkedid` of the live channel named `channel`, if there is one.
    fn linkedid_of(&self, channel: &str) -> Option<&str>;
    /// The names of the live channels of the call `linkedid`.
    fn channels_of_call(&self, linkedid: &str) -> Vec<&str>;
    /// Whether a queue of this name is known.
    fn has_queue(&self, queue: &str) -> bool;
}

/// The endpoint a channel belongs to: the channel name without its last `-suffix`
/// (`PJSIP/101-0000002a` -> `PJSIP/101`; `Local/200@from-internal-00000001;1` ->
/// `Local/200@from-internal`; `SIP/trunk-0a1b` -> `SIP/trunk`). A name without `/` or
/// without `-` after it is its own endpoint.
pub fn endpoint_of(channel: &str) -> &str {
    let Some(slash) = channel.find('/') else {
        return channel;
    };
    match channel[slash..].rfind('-') {
        Some(dash) if dash > 1 => &channel[..slash + dash],
        _ => channel,
    }
}

/// A name made fit for one topic segment: every byte a topic does not allow (see
/// [`topic::TOPIC_PUNCTUATION`]) becomes `_`, and `.` too (a queue named `a.b` must
/// not become a subtree). Borrowed when nothing changes.
pub fn topic_segment(name: &str) -> Cow<'_, str> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || topic::TOPIC_PUNCTUATION.as_bytes().contains(&b);
    if !name.is_empty() && name.bytes().all(ok) {
        return Cow::Borrowed(name);
    }
    if name.is_empty() {
        return Cow::Borrowed("_");
    }
    Cow::Owned(
        name.bytes()
            .map(|b| if ok(b) { b as char } else { '_' })
            .collect(),
    )
}

/// A call's topic segment: the `Linkedid` as it is (`1795249032.12` keeps its dot, so
/// `ami.call.1795249032.12` is one exact topic), other bytes as [`topic_segment`].
pub fn call_segment(linkedid: &str) -> Cow<'_, str> {
    if usual_linkedid(linkedid)
        || linkedid
            .split('.')
            .all(|s| !s.is_empty() && topic_segment(s) == s)
    {
        Cow::Borrowed(linkedid)
    } else {
        topic_segment(linkedid)
    }
}

/// The usual form of a `Linkedid`, `<seconds>.<counter>`: digits in segments that are
/// not empty (a one-pass check of what [`call_segment`] keeps as it is).
fn usual_linkedid(linkedid: &str) -> bool {
    let mut after_dot = true;
    for &c in linkedid.as_bytes() {
        match c {
            b'.' if after_dot => return false,
            b'.' => after_dot = true,
            b'0'..=b'9' => after_dot = false,
            _ => return false,
        }
    }
    !after_dot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_channels() {
        assert_eq!(endpoint_of("PJSIP/101-0000002a"), "PJSIP/101");
        assert_eq!(
            endpoint_of("Local/200@from-internal-00000001;1"),
            "Local/200@from-internal"
        );
        assert_eq!(endpoint_of("SIP/trunk-0a1b"), "SIP/trunk");
        assert_eq!(endpoint_of("PJSIP/101"), "PJSIP/101");
        assert_eq!(endpoint_of("DAHDI/1-1"), "DAHDI/1");
        assert_eq!(endpoint_of("nodash"), "nodash");
        assert_eq!(endpoint_of("PJSIP/-x"), "PJSIP/-x");
    }

    #[test]
    fn segments_are_valid_topic_parts() {
        assert_eq!(topic_segment("sales"), "sales");
        assert_eq!(topic_segment("PJSIP/101"), "PJSIP/101");
        assert_eq!(topic_segment("a.b c"), "a_b_c");
        assert_eq!(topic_segment(""), "_");
        assert_eq!(call_segment("1795249032.12"), "1795249032.12");
        assert_eq!(call_segment("kitpbx-1795249032.0"), "kitpbx-1795249032.0");
        assert_eq!(call_segment("a..b"), "a__b");
        for usual in ["1795249032.12", "1", "1.2.3"] {
            assert!(usual_linkedid(usual), "{usual}");
        }
        for other in ["", ".", "1.", ".1", "1..2", "1a.2", "1.2-3"] {
            assert!(!usual_linkedid(other), "{other}");
        }
        assert_eq!(call_segment("1.2-3"), "1.2-3");
        assert_eq!(call_segment("1..2"), "1__2");
        for s in ["sales", "a.b c", "é", "PJSIP/101"] {
            let t = format!("{PREFIX_QUEUE}{}", topic_segment(s));
            assert!(topic::validate_topic(&t).is_ok(), "{t}");
        }
        let t = format!("{PREFIX_CALL}{}", call_segment("1795249032.12"));
        assert!(topic::validate_topic(&t).is_ok());
    }
}
