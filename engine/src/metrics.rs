//! Counters and gauges, one set per shard (written only by that shard, relaxed) plus the
//! router's, rendered as Prometheus text by whichever shard serves `GET /metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::auth::AuthError;
use crate::pubsub::router::RouterMetrics;
use crate::shard::conn::Phase;

/// HTTP statuses counted individually; anything else counts as `other`.
pub const STATUSES: [u16; 20] = [
    101, 200, 202, 204, 400, 401, 403, 404, 405, 408, 413, 414, 415, 426, 429, 431, 500, 501, 503,
    505,
];
/// WebSocket close codes counted individually when we send them.
pub const CLOSE_CODES: [u16; 9] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];

/// A limit a client ran into, counted in `switchboard_limit_hits_total{limit}`; each is
/// answered with its own status or close code (PROTOCOL.md "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `--max-head-bytes` (431).
    HeadBytes,
    /// The request line alone is longer than `--max-head-bytes` (414).
    RequestLine,
    /// `--max-headers` (431).
    Headers,
    /// `--max-publish-bytes` (413).
    PublishBytes,
    /// A WebSocket message (or frame) larger than the endpoint takes (close 1009).
    WsMessageBytes,
    /// `--max-subscriptions` for one connection (`error` op, or 400 for the query).
    Subscriptions,
    /// More topics in one `subscribe`/`unsubscribe` op than it may carry (`error` op).
    TopicsPerOp,
    /// `--max-conns-per-ip` (429, closed).
    ConnsPerIp,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::HeadBytes,
        Limit::RequestLine,
        Limit::Headers,
        Limit::PublishBytes,
        Limit::WsMessageBytes,
        Limit::Subscriptions,
        Limit::TopicsPerOp,
        Limit::ConnsPerIp,
    ];

    /// The `limit` label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::HeadBytes => "head_bytes",
            Limit::RequestLine => "request_line",
            Limit::Headers => "headers",
            Limit::PublishBytes => "publish_bytes",
            Limit::WsMessageBytes => "ws_message_bytes",
            Limit::Subscriptions => "subscriptions",
            Limit::TopicsPerOp => "topics_per_op",
            Limit::ConnsPerIp => "conns_per_ip",
        }
    }
}

/// Why a connection closed, counted in `switchboard_closed_total{reason}` when its slot
/// is freed. The first reason given wins: a close the server starts for a reason is not
/// recounted as the client's when the client's EOF follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Not told yet (never counted: a connection that closes gets one of the others).
    #[default]
    Unset,
    /// The client closed first: EOF, a reset, a WebSocket close frame, a failed send.
    Client,
    /// The server ended it in the normal course: an HTTP response with
    /// `Connection: close`, an answered request that was refused.
    Server,
    /// `--request-timeout` or the WebSocket pong deadline.
    Timeout,
    /// A slow consumer under `--slow-policy close`.
    SlowConsumer,
    /// Malformed input (WebSocket protocol error, bad request head).
    ProtocolError,
    /// A limit (PROTOCOL.md "Limits").
    Limit,
    /// A graceful drain, or cut at its deadline.
    Drain,
}

impl CloseReason {
    /// The counted reasons, in label order.
    pub const COUNTED: [CloseReason; 7] = [
        CloseReason::Client,
        CloseReason::Server,
        CloseReason::Timeout,
        CloseReason::SlowConsumer,
        CloseReason::ProtocolError,
        CloseReason::Limit,
        CloseReason::Drain,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Unset | CloseReason::Server => "server",
            CloseReason::Client => "client",
            CloseReason::Timeout => "timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Limit => "limit",
            CloseReason::Drain => "drain",
        }
    }
}

#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Open connections by phase (gauges).
    pub conns: [AtomicU64; Phase::COUNT],
    pub accepted: AtomicU64,
    /// Connections closed, by `CloseReason` (index `reason as usize - 1`).
    pub closed: [AtomicU64; CloseReason::COUNTED.len()],
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
    /// Time the loop spent working (from a wake-up to its next wait), in microseconds.
    pub loop_busy_us: AtomicU64,
    /// The longest such turn since `/metrics` last reported it, in microseconds: how long
    /// a ready event may have waited behind the shard's work.
    pub loop_turn_max_us: AtomicU64,
    /// Pings sent to quiet WebSockets, and those closed for not answering in time.
    pub ws_pings_sent: AtomicU64,
    pub ws_pong_timeouts: AtomicU64,
    /// Connections that did not send a complete request within --request-timeout.
    pub request_timeouts: AtomicU64,
    /// Limits clients ran into, by `Limit` (in `Limit::ALL` order).
    pub limit_hits: [AtomicU64; Limit::ALL.len()],
    /// Requests and ops refused by auth, by reason (`AuthError::ALL`).
    pub auth_failures: [AtomicU64; AuthError::ALL.len()],
    /// Requests refused for an `Origin` outside `--allowed-origins`.
    pub origin_rejected: AtomicU64,
    /// WebSocket and SSE connections closed because their token expired.
    pub token_expiry_closes: AtomicU64,
}

impl ShardMetrics {
    pub fn response(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.responses[i].fetch_add(1, Relaxed);
    }

    /// Counts a connection whose slot was freed.
    pub fn closed(&self, reason: CloseReason) {
        let reason = match reason {
            CloseReason::Unset => CloseReason::Server,
            told => told,
        };
        self.closed[reason as usize - 1].fetch_add(1, Relaxed);
    }

    /// Records one loop turn's working time.
    pub fn loop_turn(&self, busy: Duration) {
        let us = busy.as_micros().min(u128::from(u64::MAX)) as u64;
        self.loop_busy_us.fetch_add(us, Relaxed);
        self.loop_turn_max_us.fetch_max(us, Relaxed);
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].fetch_add(1, Relaxed);
    }

    pub fn ws_close(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.ws_closes[i].fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self, e: AuthError) {
        let i = AuthError::ALL.iter().position(|&a| a == e).unwrap_or(0);
        self.auth_failures[i].fetch_add(1, Relaxed);
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
    /// Set once when a graceful drain starts (SIGTERM or SIGINT); shards see it on their
    /// next tick.
    pub draining: AtomicBool,
    /// The AMI session's state, when a PBX is configured.
    pub ami: Option<Arc<crate::ami::status::AmiStatus>>,
}

impl Registry {
    pub fn new(shards: Vec<Arc<ShardMetrics>>, router: Arc<RouterMetrics>) -> Registry {
        Registry {
            shards,
            router,
            draining: AtomicBool::new(false),
            ami: None,
        }
    }

    /// Open connections over every shard, whatever their state.
    pub fn open_connections(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|m| m.conns.iter())
            .map(|c| c.load(Relaxed))
            .sum()
    }

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
        let per_shard: [Family; 28] = [
            (
                "switchboard_ws_pings_sent_total",
                "counter",
                "Pings sent to WebSockets quiet for --ws-ping-interval.",
                |m| &m.ws_pings_sent,
            ),
            (
                "switchboard_ws_pong_timeouts_total",
                "counter",
                "WebSockets closed (1001) for not answering a ping within --ws-pong-timeout.",
                |m| &m.ws_pong_timeouts,
            ),
            (
                "switchboard_request_timeouts_total",
                "counter",
                "HTTP connections closed at --request-timeout (408 when a request was incomplete).",
                |m| &m.request_timeouts,
            ),
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
            "switchboard_closed_total",
            "counter",
            "Connections closed, by reason.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (reason, c) in CloseReason::COUNTED.iter().zip(&m.closed) {
                let _ = writeln!(
                    out,
                    "switchboard_closed_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                    reason.name(),
                    c.load(Relaxed)
                );
            }
        }
        header(
            &mut out,
            "switchboard_loop_busy_seconds_total",
            "counter",
            "Time each shard's event loop spent working rather than waiting.",
        );
        for (i, m) in shards.iter().enumerate() {
            let us = m.loop_busy_us.load(Relaxed);
            let _ = writeln!(
                out,
                "switchboard_loop_busy_seconds_total{{shard=\"{i}\"}} {}",
                us as f64 / 1e6
            );
        }
        header(
            &mut out,
            "switchboard_loop_turn_max_seconds",
            "gauge",
            "Longest event-loop turn (work between two waits) since the previous scrape.",
        );
        for (i, m) in shards.iter().enumerate() {
            // Reset by reading: the next scrape reports the turns after this one.
            let us = m.loop_turn_max_us.swap(0, Relaxed);
            let _ = writeln!(
                out,
                "switchboard_loop_turn_max_seconds{{shard=\"{i}\"}} {}",
                us as f64 / 1e6
            );
        }
        header(
            &mut out,
            "switchboard_limit_hits_total",
            "counter",
            "Requests, messages and ops refused for passing a limit, by limit.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (limit, c) in Limit::ALL.iter().zip(&m.limit_hits) {
                let _ = writeln!(
                    out,
                    "switchboard_limit_hits_total{{shard=\"{i}\",limit=\"{}\"}} {}",
                    limit.name(),
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

        header(
            &mut out,
            "switchboard_auth_failures_total",
            "counter",
            "Requests and WebSocket ops refused by auth, by reason.",
        );
        for (i, m) in shards.iter().enumerate() {
            for (e, c) in AuthError::ALL.iter().zip(&m.auth_failures) {
                let _ = writeln!(
                    out,
                    "switchboard_auth_failures_total{{shard=\"{i}\",reason=\"{}\"}} {}",
                    e.reason(),
                    c.load(Relaxed)
                );
            }
        }
        let access: [Family; 2] = [
            (
                "switchboard_origin_rejected_total",
                "counter",
                "Requests refused (403) for an Origin outside --allowed-origins.",
                |m| &m.origin_rejected,
            ),
            (
                "switchboard_token_expiry_closes_total",
                "counter",
                "WebSocket (1008) and SSE connections closed when their token expired.",
                |m| &m.token_expiry_closes,
            ),
        ];
        for (name, kind, help, get) in access {
            header(&mut out, name, kind, help);
            for (i, m) in shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(m).load(Relaxed));
            }
        }

        let r = &self.router;
        let router: [(&str, &str, &str, &AtomicU64); 11] = [
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
                "switchboard_history_bytes",
                "gauge",
                "Bytes retained in history over all topics, as --history-bytes counts them.",
                &r.history_bytes,
            ),
            (
                "switchboard_history_budget_evictions_total",
                "counter",
                "Messages that left history because --history-bytes was reached.",
                &r.history_budget_evictions,
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
        header(
            &mut out,
            "switchboard_draining",
            "gauge",
            "1 while a graceful drain (SIGTERM or SIGINT) runs.",
        );
        let _ = writeln!(
            out,
            "switchboard_draining {}",
            u8::from(self.draining.load(Relaxed))
        );
        if let Some(ami) = &self.ami {
            ami.render(&mut out);
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
    fn limits_are_listed_in_their_index_order_with_distinct_labels() {
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(*limit as usize, i, "{limit:?}");
        }
        let names: std::collections::HashSet<_> = Limit::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(names.len(), Limit::ALL.len());
    }

    #[test]
    fn limit_hits_and_loop_turns_are_rendered_and_the_max_resets_per_scrape() {
        let shard = Arc::new(ShardMetrics::default());
        shard.limit_hit(Limit::Headers);
        shard.limit_hit(Limit::Headers);
        shard.loop_turn(Duration::from_micros(1500));
        shard.loop_turn(Duration::from_micros(500));
        let reg = Registry::new(vec![shard], Arc::new(RouterMetrics::default()));
        let text = reg.render();
        assert!(text.contains("switchboard_limit_hits_total{shard=\"0\",limit=\"headers\"} 2\n"));
        assert!(
            text.contains("switchboard_limit_hits_total{shard=\"0\",limit=\"head_bytes\"} 0\n")
        );
        assert!(text.contains("switchboard_loop_busy_seconds_total{shard=\"0\"} 0.002\n"));
        assert!(text.contains("switchboard_loop_turn_max_seconds{shard=\"0\"} 0.0015\n"));
        assert!(text.contains("switchboard_draining 0\n"));
        let again = reg.render();
        assert!(again.contains("switchboard_loop_turn_max_seconds{shard=\"0\"} 0\n"));
        assert!(again.contains("switchboard_loop_busy_seconds_total{shard=\"0\"} 0.002\n"));
        reg.draining.store(true, Relaxed);
        assert!(reg.render().contains("switchboard_draining 1\n"));
    }

    #[test]
    fn closes_are_counted_by_reason_and_an_untold_one_is_the_servers() {
        let shard = Arc::new(ShardMetrics::default());
        shard.closed(CloseReason::Timeout);
        shard.closed(CloseReason::Unset);
        shard.closed(CloseReason::Server);
        shard.closed(CloseReason::Drain);
        shard.closed(CloseReason::Client);
        let text = Registry::new(vec![shard], Arc::new(RouterMetrics::default())).render();
        for (reason, n) in [
            ("timeout", 1),
            ("server", 2),
            ("drain", 1),
            ("client", 1),
            ("limit", 0),
        ] {
            let line = format!("switchboard_closed_total{{shard=\"0\",reason=\"{reason}\"}} {n}\n");
            assert!(text.contains(&line), "{line}");
        }
        for (i, reason) in CloseReason::COUNTED.iter().enumerate() {
            assert_eq!(*reason as usize, i + 1, "{reason:?}");
        }
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let shard = Arc::new(ShardMetrics::default());
        shard.response(404);
        shard.response(299);
        shard.ws_close(1002);
        shard.phase_change(Phase::Free, Phase::Ws);
        shard.phase_change(Phase::Free, Phase::Ws);
        shard.phase_change(Phase::Ws, Phase::Closing);
        let reg = Registry::new(
            vec![shard, Arc::new(ShardMetrics::default())],
            Arc::new(RouterMetrics::default()),
        );
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

    #[test]
    fn auth_failures_are_counted_by_reason() {
        let shard = Arc::new(ShardMetrics::default());
        shard.auth_failure(AuthError::Expired);
        shard.auth_failure(AuthError::Expired);
        shard.auth_failure(AuthError::Forbidden);
        shard.origin_rejected.fetch_add(1, Relaxed);
        let reg = Registry::new(vec![shard], Arc::new(RouterMetrics::default()));
        let text = reg.render();
        for (reason, n) in [("expired", 2), ("forbidden", 1), ("missing", 0)] {
            let sample =
                format!("switchboard_auth_failures_total{{shard=\"0\",reason=\"{reason}\"}} {n}\n");
            assert!(text.contains(&sample), "{sample}");
        }
        assert_eq!(text.matches("switchboard_auth_failures_total{").count(), 7);
        assert!(text.contains("switchboard_origin_rejected_total{shard=\"0\"} 1\n"));
    }
}
