//! Deadlines that keep idle connections honest, run from the shard's timer wheel: the
//! WebSocket ping with its pong deadline, and the request deadline of HTTP connections
//! (a slowloris client that trickles a request is closed when it passes).

use bytes::Bytes;
use std::sync::atomic::Ordering::Relaxed;
use switchboard_proto::ws::close;

use super::Core;
use super::conn::flag;
use crate::metrics::CloseReason;

/// An unmasked ping frame with no payload (FIN, opcode 0x9, length 0).
const WS_PING: &[u8] = &[0x89, 0x00];

impl Core {
    /// Arms a new WebSocket's keep-alive timer (`--ws-ping-interval`, unless 0).
    pub(super) fn ws_keepalive_start(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        conn.clear(flag::WS_HEARD | flag::PING_SENT);
        if self.settings.ws_ping_interval.is_zero() {
            conn.deadline = 0;
        } else {
            self.set_deadline(slot, self.settings.ws_ping_interval);
        }
    }

    /// A WebSocket's timer fired. Anything heard from the client since the last firing
    /// (a pong, an op, a ping) proves it alive and restarts the interval; otherwise a
    /// quiet client is pinged, and a pinged one that stayed quiet is closed with 1001.
    pub(super) fn ws_keepalive(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::WS_HEARD) {
            self.ws_keepalive_start(slot);
        } else if conn.has(flag::PING_SENT) {
            tracing::debug!(slot, "no pong within --ws-pong-timeout: closing");
            self.metrics.ws_pong_timeouts.fetch_add(1, Relaxed);
            conn.close_because(CloseReason::Timeout);
            self.ws_close(slot, close::GOING_AWAY, "pong timeout");
        } else {
            conn.set(flag::PING_SENT);
            self.metrics.ws_pings_sent.fetch_add(1, Relaxed);
            self.send(slot, Bytes::from_static(WS_PING));
            self.set_deadline(slot, self.settings.ws_pong_timeout);
        }
    }

    /// An HTTP connection passed `--request-timeout` (counted either way): one in the
    /// middle of a request is answered `408` and closed; an idle one is closed.
    pub(super) fn request_timed_out(&mut self, slot: u32) {
        self.metrics.request_timeouts.fetch_add(1, Relaxed);
        let conn = self.conns.slot_mut(slot);
        conn.close_because(CloseReason::Timeout);
        if conn.rx.is_some() {
            tracing::debug!(slot, "request incomplete at --request-timeout: 408");
            conn.set(flag::HTTP_CLOSE);
            self.respond_text(slot, 408, "request timeout");
        } else {
            tracing::debug!(slot, "idle past --request-timeout: closing");
            self.close_after_flush(slot);
        }
    }
}
