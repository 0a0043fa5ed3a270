//! The router: one thread that orders every publish. It gives each message its per-topic
//! sequence number (and a router-wide one), encodes it once per transport, and hands the
//! shared bytes to exactly the shards that have subscribers, over their SPSC links. It
//! knows shards, never connections: each shard tells it when it gains or loses interest
//! in a topic or subtree.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use switchboard_proto::{envelope, sse, topic, ws};

use super::ShardSet;
use super::link::{Doorbell, FromRouter, Message, RouterEnd, ToRouter};
use crate::uring::{Completion, Ring, RingParams};

/// Counters the router exports in `/metrics`.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub published: AtomicU64,
    pub routed: AtomicU64,
    pub topics: AtomicU64,
    pub outbox_full_waits: AtomicU64,
}

/// Messages handled before the router looks at its wake-ups again.
const BATCH_MESSAGES: usize = 4096;

/// Room kept in front of an envelope for the WebSocket frame header (at most 10 bytes
/// for a server frame), so that the frame is built without a second copy.
const WS_HEADROOM: usize = 10;

pub struct Router {
    ring: Ring,
    bell: Arc<Doorbell>,
    links: Vec<RouterEnd>,
    shard_bells: Vec<Arc<Doorbell>>,
    /// Shards with at least one subscriber of the exact topic.
    exact: HashMap<Box<str>, ShardSet>,
    /// Shards with at least one subscriber of the subtree below the prefix.
    subtree: HashMap<Box<str>, ShardSet>,
    /// The last sequence number given in each topic ever published.
    seqs: HashMap<Box<str>, u64>,
    gseq: u64,
    /// Shards that were sent something since their doorbell was last rung.
    touched: ShardSet,
    metrics: Arc<RouterMetrics>,
    completions: Vec<Completion>,
}

impl Router {
    /// The ring is created by the caller (its fd is every shard's wake-up address).
    pub fn new(
        ring: Ring,
        bell: Arc<Doorbell>,
        links: Vec<RouterEnd>,
        shard_bells: Vec<Arc<Doorbell>>,
        metrics: Arc<RouterMetrics>,
    ) -> Router {
        Router {
            ring,
            bell,
            links,
            shard_bells,
            exact: HashMap::new(),
            subtree: HashMap::new(),
            seqs: HashMap::new(),
            gseq: 0,
            touched: ShardSet::default(),
            metrics,
            completions: Vec::new(),
        }
    }

    /// The router's ring: small, it only carries wake-ups.
    pub fn ring_params() -> RingParams {
        RingParams {
            sq_entries: 256,
            cq_entries: 1024,
            fixed_files: 0,
        }
    }

    pub fn run(mut self) -> std::io::Result<()> {
        loop {
            let mut handled = 0;
            for shard in 0..self.links.len() {
                while handled < BATCH_MESSAGES {
                    let Ok(msg) = self.links[shard].inbox.pop() else {
                        break;
                    };
                    self.handle(shard, msg);
                    handled += 1;
                }
            }
            self.ring_shards();
            if handled > 0 {
                self.ring.enter(false)?;
            } else {
                self.bell.arm();
                let idle = self.links.iter().all(|l| l.inbox.is_empty());
                self.ring.enter(idle)?;
                self.bell.disarm();
            }
            self.completions.clear();
            self.ring.reap(&mut self.completions);
            for c in &self.completions {
                if c.result < 0 {
                    tracing::error!(
                        "router: {:?} failed: {}",
                        c.token.kind,
                        std::io::Error::from_raw_os_error(-c.result)
                    );
                }
            }
        }
    }

    fn handle(&mut self, from: usize, msg: ToRouter) {
        match msg {
            ToRouter::Publish { topic, data, reply } => {
                let seq = self.publish(&topic, &data);
                self.send(from, FromRouter::Published { reply, topic, seq });
            }
            ToRouter::Interest {
                prefix,
                subtree,
                add,
            } => {
                let map = if subtree {
                    &mut self.subtree
                } else {
                    &mut self.exact
                };
                if add {
                    map.entry(prefix).or_default().insert(from);
                } else if let Some(set) = map.get_mut(&prefix) {
                    set.remove(from);
                    if set.is_empty() {
                        map.remove(&prefix);
                    }
                }
            }
            ToRouter::Barrier { id } => self.send(from, FromRouter::Barrier { id }),
        }
    }

    /// Sequences one message and delivers it to every interested shard; returns its `seq`.
    fn publish(&mut self, topic_name: &str, data: &[u8]) -> u64 {
        let seq = match self.seqs.get_mut(topic_name) {
            Some(seq) => {
                *seq += 1;
                *seq
            }
            None => {
                self.seqs.insert(topic_name.into(), 1);
                self.metrics
                    .topics
                    .store(self.seqs.len() as u64, Ordering::Relaxed);
                1
            }
        };
        self.gseq += 1;
        self.metrics.published.fetch_add(1, Ordering::Relaxed);

        let mut targets = self.exact.get(topic_name).copied().unwrap_or_default();
        for prefix in topic::ancestors(topic_name) {
            if let Some(set) = self.subtree.get(prefix) {
                targets.union_with(set);
            }
        }
        if targets.is_empty() {
            return seq;
        }
        let msg = Arc::new(encode(topic_name, seq, self.gseq, data));
        for shard in targets.iter() {
            self.send(shard, FromRouter::Deliver(msg.clone()));
        }
        self.metrics.routed.fetch_add(1, Ordering::Relaxed);
        seq
    }

    /// Pushes to a shard's queue. A full queue means that shard is behind: wake it and
    /// wait, which in turn stops this router from draining the publishers' queues, whose
    /// shards then answer 503. Nothing is dropped and nothing grows without bound.
    fn send(&mut self, shard: usize, mut msg: FromRouter) {
        loop {
            match self.links[shard].outbox.push(msg) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(back)) => {
                    msg = back;
                    self.metrics
                        .outbox_full_waits
                        .fetch_add(1, Ordering::Relaxed);
                    if self.shard_bells[shard].ring() {
                        self.ring.wake(self.shard_bells[shard].ring_fd());
                        let _ = self.ring.enter(false);
                    }
                    std::thread::yield_now();
                }
            }
        }
        self.touched.insert(shard);
    }

    fn ring_shards(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for shard in touched.iter() {
            if self.shard_bells[shard].ring() {
                self.ring.wake(self.shard_bells[shard].ring_fd());
            }
        }
    }
}

/// Builds the envelope once and frames it for each transport.
pub fn encode(topic_name: &str, seq: u64, gseq: u64, data: &[u8]) -> Message {
    let mut frame = Vec::with_capacity(WS_HEADROOM + data.len() + topic_name.len() + 40);
    frame.resize(WS_HEADROOM, 0);
    envelope::write_envelope(&mut frame, topic_name, seq, data);
    let payload_len = (frame.len() - WS_HEADROOM) as u64;
    let mut header = [0u8; 14];
    let n = ws::frame::encode_header(
        true,
        ws::frame::Opcode::Text,
        payload_len,
        None,
        &mut header,
    );
    let start = WS_HEADROOM - n;
    frame[start..WS_HEADROOM].copy_from_slice(&header[..n]);

    let envelope_bytes = &frame[WS_HEADROOM..];
    let mut event = Vec::with_capacity(envelope_bytes.len() + 32);
    let id = gseq.to_string();
    sse::write_event(&mut event, Some(&id), None, envelope_bytes);

    Message {
        topic: topic_name.into(),
        seq,
        gseq,
        ws_frame: Bytes::from(frame).slice(start..),
        sse_event: Bytes::from(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_envelope_for_both_transports() {
        let msg = encode("chat.lobby", 7, 42, br#"{"text":"hi"}"#);
        let envelope = br#"{"topic":"chat.lobby","seq":7,"data":{"text":"hi"}}"#;
        // An unmasked final text frame with a 7-bit length, then the envelope.
        assert_eq!(msg.ws_frame[0], 0x81);
        assert_eq!(usize::from(msg.ws_frame[1]), envelope.len());
        assert_eq!(&msg.ws_frame[2..], envelope);
        let expected = format!(
            "id: 42\ndata: {}\n\n",
            std::str::from_utf8(envelope).unwrap()
        );
        assert_eq!(&msg.sse_event[..], expected.as_bytes());
    }

    #[test]
    fn long_envelopes_get_extended_length_headers() {
        let body = format!("\"{}\"", "x".repeat(70_000));
        let msg = encode("t", 1, 1, body.as_bytes());
        assert_eq!(msg.ws_frame[1], 127);
        let len = u64::from_be_bytes(msg.ws_frame[2..10].try_into().unwrap());
        assert_eq!(len as usize, msg.ws_frame.len() - 10);
    }
}
