//! Counters and gauges, one set per shard (written only by that shard, relaxed) plus the
//! router's, rendered as Prometheus text by whichever shard serves `GET /metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::pubsub::router::RouterMetrics;
use crate::shard::conn::Phase;

/// HTTP statuses counted individually; anything else counts as `other`.
pub const STATUSES: [u16; 17] = [
    101, 200, 202, 400, 403, 404, 405, 408, 413, 414, 415, 426, 431, 500, 501, 503, 505,
];
/// WebSocket close codes counted individually when we send them.
pub const CLOSE_CODES: [u16; 9] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];

#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Open connections by phase (gauges).
    pub conns: [AtomicU64; Phase::COUNT],
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub accept_errors: AtomicU64,
    pub http_requests: AtomicU64,
    /// Responses by status (`STATUSES`, then other).
    pub responses: [AtomicU64; STATUSES.len() + 1],
    pub ws_messages_in: AtomicU64,
    /// Close frames we sent, by code (`CLOSE_CODES`, then other).
    pub ws_closes: [AtomicU64; CLOSE_CODES.len() + 1],
    pub deliveries_ws: AtomicU64,
    pub deliveries_sse: AtomicU64,
    pub deliveries_poll: AtomicU64,
    /// Messages and resets sent from history to resuming subscribers.
    pub replayed: AtomicU64,
    pub resets_sent: AtomicU64,
    /// Long-polls held (nothing to answer at once), answered with messages, timed out.
    pub polls_held: AtomicU64,
    pub polls_answered: AtomicU64,
    pub polls_timed_out: AtomicU64,
    /// Messages for a direct address delivered, or dropped (the connection was gone).
    pub direct_delivered: AtomicU64,
    pub direct_dropped: AtomicU64,
    /// `drop` policy: episodes, messages discarded, resets sent once caught up.
    pub slow_consumer_drops: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub drop_resets: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub publishes: AtomicU64,
    pub publish_rejected_busy: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub recv_buffer_starved: AtomicU64,
    pub read_pauses: AtomicU64,
    pub subscriptions: AtomicU64,
    pub topics: AtomicU64,
    pub send_queue_buffers: AtomicU64,
    pub loop_turns: AtomicU64,
}

impl ShardMetrics {
    pub fn response(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.responses[i].fetch_add(1, Relaxed);
    }

    pub fn ws_close(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.ws_closes[i].fetch_add(1, Relaxed);
    }

    pub fn phase_change(&self, from: Phase, to: Phase) {
        if from != Phase::Free {
            self.conns[from as usize].fetch_sub(1, Relaxed);
        }
        if to != Phase::Free {
            self.conns[to as usize].fetch_add(1, Relaxed);
        }
    }
}

/// Everything `/metrics` reports.
pub struct Registry {
    pub shards: Vec<Arc<ShardMetrics>>,
    pub router: Arc<RouterMetrics>,
}

impl Registry {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let shards = &self.shards;

        header(
            &mut out,
            "switchboard_connections",
            "gauge",
            "Open connections by shard and state.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (p, name) in Phase::NAMES.iter().enumerate().skip(1) {
                let _ = writeln!(
                    out,
                    "switchboard_connections{{shard=\"{i}\",state=\"{name}\"}} {}",
                    m.conns[p].load(Relaxed)
                );
            }
        }
        let per_shard: [Family; 26] = [
            (
                "switchboard_slow_consumer_drops_total",
                "counter",
                "Times a subscriber passed its queue bound under --slow-policy drop.",
                |m| &m.slow_consumer_drops,
            ),
            (
                "switchboard_dropped_messages_total",
                "counter",
                "Messages discarded for slow subscribers under --slow-policy drop.",
                |m| &m.dropped_messages,
            ),
            (
                "switchboard_drop_resets_total",
                "counter",
                "Resets sent to slow subscribers once they caught up after drops.",
                |m| &m.drop_resets,
            ),
            (
                "switchboard_direct_delivered_total",
                "counter",
                "Messages for a direct address (client.<id>) queued to its connection.",
                |m| &m.direct_delivered,
            ),
            (
                "switchboard_direct_dropped_total",
                "counter",
                "Messages for a direct address whose connection was gone.",
                |m| &m.direct_dropped,
            ),
            (
                "switchboard_replayed_messages_total",
                "counter",
                "Messages sent from history to resuming subscribers.",
                |m| &m.replayed,
            ),
            (
                "switchboard_resets_sent_total",
                "counter",
                "Reset notices sent: a resume reached further back than history.",
                |m| &m.resets_sent,
            ),
            (
                "switchboard_polls_held_total",
                "counter",
                "Long-polls held because nothing was there to answer at once.",
                |m| &m.polls_held,
            ),
            (
                "switchboard_polls_answered_total",
                "counter",
                "Long-polls answered with messages or resets.",
                |m| &m.polls_answered,
            ),
            (
                "switchboard_polls_timed_out_total",
                "counter",
                "Held long-polls answered empty at --poll-timeout.",
                |m| &m.polls_timed_out,
            ),
            (
                "switchboard_accepted_total",
                "counter",
                "Connections accepted.",
                |m| &m.accepted,
            ),
            (
                "switchboard_closed_total",
                "counter",
                "Connections closed.",
                |m| &m.closed,
            ),
            (
                "switchboard_accept_errors_total",
                "counter",
                "Failed accepts (e.g. fixed-file table full).",
                |m| &m.accept_errors,
            ),
            (
                "switchboard_http_requests_total",
                "counter",
                "HTTP requests parsed.",
                |m| &m.http_requests,
            ),
            (
                "switchboard_ws_messages_received_total",
                "counter",
                "WebSocket messages received from clients.",
                |m| &m.ws_messages_in,
            ),
            (
                "switchboard_publishes_total",
                "counter",
                "Publish requests accepted on this shard.",
                |m| &m.publishes,
            ),
            (
                "switchboard_publish_rejected_busy_total",
                "counter",
                "Publish requests answered 503 because the router queue was full.",
                |m| &m.publish_rejected_busy,
            ),
            (
                "switchboard_slow_consumer_closes_total",
                "counter",
                "Connections closed because their send queue passed its bound (--slow-policy close).",
                |m| &m.slow_consumer_closes,
            ),
            (
                "switchboard_recv_buffer_starved_total",
                "counter",
                "Receives that found the provided-buffer ring empty.",
                |m| &m.recv_buffer_starved,
            ),
            (
                "switchboard_read_pauses_total",
                "counter",
                "Times a connection stopped being read: it had parked 64 KiB while waiting for the router.",
                |m| &m.read_pauses,
            ),
            (
                "switchboard_bytes_sent_total",
                "counter",
                "Bytes sent to clients.",
                |m| &m.bytes_sent,
            ),
            (
                "switchboard_loop_turns_total",
                "counter",
                "Event loop turns.",
                |m| &m.loop_turns,
            ),
            (
                "switchboard_subscriptions",
                "gauge",
                "Subscriptions held.",
                |m| &m.subscriptions,
            ),
            (
                "switchboard_topics",
                "gauge",
                "Topics and subtrees with subscribers on the shard.",
                |m| &m.topics,
            ),
            (
                "switchboard_send_queue_buffers",
                "gauge",
                "Buffers waiting in send queues.",
                |m| &m.send_queue_buffers,
            ),
            (
                "switchboard_shard_up",
                "gauge",
                "Shard is running (1).",
                |_| &ONE,
            ),
        ];
        for (name, kind, help, get) in per_shard {
            header(&mut out, name, kind, help);
            for (i, m) in shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(m).load(Relaxed));
            }
        }

        header(
            &mut out,
            "switchboard_deliveries_total",
            "counter",
            "Messages queued to subscribers, by transport.",
        );
        for (i, m) in shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_deliveries_total{{shard=\"{i}\",transport=\"ws\"}} {}",
                m.deliveries_ws.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "switchboard_deliveries_total{{shard=\"{i}\",transport=\"sse\"}} {}",
                m.deliveries_sse.load(Relaxed)
            );
            let _ = writeln!(
                out,
                "switchboard_deliveries_total{{shard=\"{i}\",transport=\"poll\"}} {}",
                m.deliveries_poll.load(Relaxed)
            );
        }
        header(
            &mut out,
            "switchboard_http_responses_total",
            "counter",
            "HTTP responses by status.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (j, c) in m.responses.iter().enumerate() {
                let status = STATUSES.get(j).map_or("other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "switchboard_http_responses_total{{shard=\"{i}\",status=\"{status}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }
        header(
            &mut out,
            "switchboard_ws_closes_sent_total",
            "counter",
            "WebSocket close frames sent, by code.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (j, c) in m.ws_closes.iter().enumerate() {
                let code = CLOSE_CODES
                    .get(j)
                    .map_or("other".to_string(), u16::to_string);
                let _ = writeln!(
                    out,
                    "switchboard_ws_closes_sent_total{{shard=\"{i}\",code=\"{code}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }

        let r = &self.router;
        let router: [(&str, &str, &str, &AtomicU64); 9] = [
            (
                "switchboard_history_messages",
                "gauge",
                "Messages retained in history over all topics.",
                &r.history_messages,
            ),
            (
                "switchboard_history_topics_evicted_total",
                "counter",
                "Topics forgotten because --history-topics was reached.",
                &r.history_topics_evicted,
            ),
            (
                "switchboard_router_replays_total",
                "counter",
                "Resumes answered by the router.",
                &r.replays,
            ),
            (
                "switchboard_router_replayed_messages_total",
                "counter",
                "Messages replayed from history.",
                &r.replayed_messages,
            ),
            (
                "switchboard_router_resets_total",
                "counter",
                "Resets issued: resumes that reached further back than history.",
                &r.resets,
            ),
            (
                "switchboard_router_published_total",
                "counter",
                "Messages sequenced by the router.",
                &r.published,
            ),
            (
                "switchboard_router_routed_total",
                "counter",
                "Messages that had subscribers on at least one shard.",
                &r.routed,
            ),
            (
                "switchboard_router_topics",
                "gauge",
                "Topics the router remembers (sequence number and history).",
                &r.topics,
            ),
            (
                "switchboard_router_outbox_full_waits_total",
                "counter",
                "Times the router waited for a shard's full queue.",
                &r.outbox_full_waits,
            ),
        ];
        for (name, kind, help, value) in router {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        out
    }
}

static ONE: AtomicU64 = AtomicU64::new(1);

/// A per-shard metric family: name, type, help, and where each shard keeps its value.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> &AtomicU64,
);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_type() {
        let shard = Arc::new(ShardMetrics::default());
        shard.response(404);
        shard.response(299);
        shard.ws_close(1002);
        shard.phase_change(Phase::Free, Phase::Ws);
        shard.phase_change(Phase::Free, Phase::Ws);
        shard.phase_change(Phase::Ws, Phase::Closing);
        let reg = Registry {
            shards: vec![shard, Arc::new(ShardMetrics::default())],
            router: Arc::new(RouterMetrics::default()),
        };
        let text = reg.render();
        assert!(text.contains("switchboard_http_responses_total{shard=\"0\",status=\"404\"} 1\n"));
        assert!(
            text.contains("switchboard_http_responses_total{shard=\"0\",status=\"other\"} 1\n")
        );
        assert!(text.contains("switchboard_ws_closes_sent_total{shard=\"0\",code=\"1002\"} 1\n"));
        assert!(text.contains("switchboard_connections{shard=\"0\",state=\"ws\"} 1\n"));
        assert!(text.contains("switchboard_connections{shard=\"0\",state=\"closing\"} 1\n"));
        assert!(text.contains("switchboard_shard_up{shard=\"1\"} 1\n"));
        // Every sample line belongs to a family announced by # TYPE before it.
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(announced.contains(name), "{name} has no # TYPE");
            }
        }
    }
}
