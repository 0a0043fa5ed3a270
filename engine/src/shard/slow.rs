//! Slow consumers: what happens to a subscriber whose send queue passes its bound
//! (`--max-queued-bytes` or `--max-queued-messages`), by `--slow-policy`:
//!
//! - `close`: the queue is dropped and the connection closed with an explicit signal
//!   (WebSocket 1013, end of the SSE stream);
//! - `drop`: the routed messages in its queue are discarded (handshakes, op replies and
//!   close frames stay) and so is every message for it until its queue has drained; then
//!   it gets one reset per topic that lost messages, `{"topic","reset":true,"seq":N}`
//!   with the last discarded `seq`, before live messages go on. A connection that loses
//!   messages of more than [`MAX_DROPPED_TOPICS`] topics in one episode is closed as
//!   under `close`, so the record stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use switchboard_proto::{envelope, sse};

use super::Core;
use super::conn::{Phase, flag};
use crate::metrics::CloseReason;
use crate::pubsub::link::Message;

/// The policy for a subscriber past its queue bound.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Close it: WebSocket 1013, SSE end of stream.
    #[default]
    Close,
    /// Discard its messages until it catches up, then send it a reset per topic.
    Drop,
}

/// Most topics one dropping episode records before the connection is closed instead.
pub const MAX_DROPPED_TOPICS: usize = 256;

/// Connections dropping messages: for each (by slot), every topic that lost messages
/// and the last `seq` lost.
#[derive(Default)]
pub struct Dropping {
    by_slot: HashMap<u32, BTreeMap<Box<str>, u64>>,
}

impl Dropping {
    /// Forgets a connection that leaves.
    pub fn forget(&mut self, slot: u32) {
        self.by_slot.remove(&slot);
    }
}

impl Core {
    /// A subscriber's queue passed its bound: apply the policy.
    pub(super) fn over_bound(&mut self, slot: u32) {
        match self.settings.slow_policy {
            SlowPolicy::Close => self.slow_consumer_close(slot),
            SlowPolicy::Drop => self.start_dropping(slot),
        }
    }

    /// Discards the messages queued for `slot` and drops further ones until it catches
    /// up.
    fn start_dropping(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if !conn.is_live() || conn.has(flag::DROPPING) {
            return;
        }
        conn.set(flag::DROPPING);
        self.metrics.slow_consumer_drops.fetch_add(1, Relaxed);
        let mut lost: BTreeMap<Box<str>, u64> = BTreeMap::new();
        let n = self.sendq.discard_messages(conn, |m| {
            lost.insert(m.topic.clone(), m.seq);
        });
        tracing::debug!(slot, n, "slow consumer: dropping its messages");
        self.metrics
            .dropped_messages
            .fetch_add(u64::from(n), Relaxed);
        self.metrics
            .send_queue_buffers
            .store(self.sendq.len() as u64, Relaxed);
        self.dropping.by_slot.insert(slot, lost);
        if lost_too_much(&self.dropping, slot) {
            self.slow_consumer_close(slot);
        }
    }

    /// A message for a connection that is dropping: recorded, not sent.
    pub(super) fn note_dropped(&mut self, slot: u32, msg: &Message) {
        self.metrics.dropped_messages.fetch_add(1, Relaxed);
        if let Some(lost) = self.dropping.by_slot.get_mut(&slot) {
            lost.insert(msg.topic.clone(), msg.seq);
        }
        if lost_too_much(&self.dropping, slot) {
            self.slow_consumer_close(slot);
        }
    }

    /// A dropping connection's queue has drained: tell it what it lost, then it gets
    /// live messages again.
    pub(super) fn caught_up(&mut self, slot: u32) {
        self.conns.slot_mut(slot).clear(flag::DROPPING);
        let Some(lost) = self.dropping.by_slot.remove(&slot) else {
            return;
        };
        let ws = self.conns.slot_mut(slot).phase == Phase::Ws;
        for (topic, seq) in &lost {
            let mut json = Vec::with_capacity(topic.len() + 48);
            envelope::write_reset(&mut json, topic, Some(*seq));
            if ws {
                self.ws_text(slot, &json);
            } else {
                let mut event = Vec::with_capacity(json.len() + 8);
                sse::write_event(&mut event, None, None, &json);
                self.send(slot, Bytes::from(event));
            }
        }
        self.metrics
            .drop_resets
            .fetch_add(lost.len() as u64, Relaxed);
    }

    /// Drops what is queued and closes the connection with an explicit signal
    /// (WebSocket 1013, end of the SSE stream).
    pub(super) fn slow_consumer_close(&mut self, slot: u32) {
        self.dropping.forget(slot);
        let conn = self.conns.slot_mut(slot);
        if !conn.is_live() {
            return;
        }
        conn.clear(flag::DROPPING);
        conn.close_because(CloseReason::SlowConsumer);
        self.metrics.slow_consumer_closes.fetch_add(1, Relaxed);
        self.sendq.clear(conn);
        self.metrics
            .send_queue_buffers
            .store(self.sendq.len() as u64, Relaxed);
        if conn.phase == Phase::Ws {
            self.ws_close(
                slot,
                switchboard_proto::ws::close::TRY_AGAIN_LATER,
                "slow consumer",
            );
        } else {
            self.close_after_flush(slot);
        }
    }
}

fn lost_too_much(dropping: &Dropping, slot: u32) -> bool {
    dropping
        .by_slot
        .get(&slot)
        .is_some_and(|lost| lost.len() > MAX_DROPPED_TOPICS)
}
