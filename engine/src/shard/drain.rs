//! Graceful drain. Once the process is asked to stop (SIGTERM or SIGINT, seen through
//! `Registry::draining` on the next tick), a shard stops accepting and ends each
//! connection the way its transport expects: WebSocket close 1001, an SSE `retry:` hint
//! then end of stream, a held long-poll answered (`Connection: close`), an idle HTTP
//! connection closed. Queued sends are flushed first; whatever is still open at
//! `--drain-timeout` is cut. Messages already routed to the shard are queued before any
//! connection is told to go.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::sse;
use switchboard_proto::ws::close;

use super::Core;
use super::conn::{Phase, flag};
use crate::metrics::CloseReason;

/// A shard's drain in progress.
pub(super) struct Drain {
    /// When connections still open are cut.
    deadline: Instant,
    /// Connections cut at the deadline.
    cut: u32,
    /// Scratch list of live slots, kept between ticks.
    slots: Vec<u32>,
}

impl Core {
    /// Called on every tick: starts the drain once the process asks for it, then winds
    /// down every connection that can be ended now (new ones, or ones that reached a
    /// state that can end since the last tick), or cuts them all past the deadline.
    pub(super) fn drain_tick(&mut self) {
        if self.drain.is_none() {
            if !self.registry.draining.load(Relaxed) {
                return;
            }
            self.start_drain();
        }
        // Whatever the router handed us before the drain started goes into the queues
        // before the close frames and final hints that end them.
        self.drain_router();
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        let cut = Instant::now() >= drain.deadline;
        let mut slots = std::mem::take(&mut drain.slots);
        self.conns.live_slots(&mut slots);
        let mut cut_now = 0;
        for &slot in &slots {
            if cut {
                let conn = self.conns.slot_mut(slot);
                if !conn.has(flag::FINAL) {
                    conn.close_because(CloseReason::Drain);
                    cut_now += 1;
                    self.finalize(slot);
                }
            } else {
                self.wind_down(slot);
            }
        }
        slots.clear();
        if let Some(drain) = self.drain.as_mut() {
            drain.slots = slots;
            drain.cut += cut_now;
        }
        if cut_now > 0 {
            tracing::warn!(
                shard = self.shard,
                "drain timeout: {cut_now} connections cut"
            );
        }
    }

    fn start_drain(&mut self) {
        // The listener is closed once the cancelled accepts have completed (the cancel
        // finds them through its descriptor): see `accepts_gone`.
        match &self.listener {
            Some(listener) if self.accepts_armed > 0 => {
                self.ring.cancel_accepts(listener.as_raw_fd());
            }
            _ => self.listener = None,
        }
        tracing::info!(
            shard = self.shard,
            connections = self.conns.live,
            "draining: no longer accepting"
        );
        self.drain = Some(Drain {
            deadline: Instant::now() + self.settings.drain_timeout,
            cut: 0,
            slots: Vec::new(),
        });
    }

    /// Ends one connection gracefully if its state allows it now; a request being
    /// received or answered, and a handshake or publish waiting for the router, are left
    /// to finish (a later tick ends them).
    fn wind_down(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        let ends_now = match conn.phase {
            Phase::Ws | Phase::Echo | Phase::Sse | Phase::Poll => true,
            Phase::Http => conn.rx.is_none() && !conn.has(flag::SENDING) && conn.send_queue_empty(),
            Phase::Publishing | Phase::Subscribing | Phase::Closing | Phase::Free => false,
        };
        if !ends_now {
            return;
        }
        conn.close_because(CloseReason::Drain);
        match conn.phase {
            Phase::Ws | Phase::Echo => self.ws_close(slot, close::GOING_AWAY, "going away"),
            Phase::Sse => {
                let mut out = Vec::with_capacity(24);
                sse::write_retry(&mut out, self.settings.sse_retry.as_millis() as u32);
                self.send(slot, Bytes::from(out));
                self.close_after_flush(slot);
            }
            Phase::Poll => {
                conn.set(flag::HTTP_CLOSE);
                self.poll_expired(slot);
            }
            Phase::Http => self.close_after_flush(slot),
            Phase::Publishing | Phase::Subscribing | Phase::Closing | Phase::Free => {}
        }
    }

    /// Called when an accept has completed for good: once none is left during a drain,
    /// the listener is closed, and connections not yet accepted are refused.
    pub(super) fn accepts_gone(&mut self) {
        if self.drain.is_some() && self.accepts_armed == 0 {
            self.listener = None;
        }
    }

    /// Once the drain is over (no connection left, the accept gone): how many
    /// connections were cut at the deadline.
    pub(super) fn drained(&self) -> Option<u32> {
        let drain = self.drain.as_ref()?;
        (self.conns.live == 0 && self.listener.is_none()).then_some(drain.cut)
    }
}
