//! Subscriptions that are live before they are acknowledged. A subscription is first
//! reserved in the shard's topic index (telling the router of new interest), then a
//! barrier goes to the router behind it; when the barrier comes back, every publish the
//! router orders from then on reaches this shard, so the subscriber is added and only
//! then told: the WebSocket `101`, the SSE `200`, or the `subscribed` ack. A client that
//! publishes after that answer always receives its message.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use switchboard_proto::http1::{self, Request};
use switchboard_proto::{control, sse, topic};

use super::conn::{Phase, flag};
use super::{Core, ToRouter};
use crate::config::MAX_SUBSCRIPTIONS_PER_CONN;
use crate::pubsub::link::ConnRef;

/// The SSE heartbeat: a comment line, ignored by `EventSource`, that keeps proxies and
/// NATs from timing the stream out.
pub const SSE_HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// What happens when the router confirms a subscription.
#[derive(Debug)]
pub enum After {
    /// Complete a WebSocket handshake (the accept key) and start reading frames.
    WsHandshake([u8; 28]),
    /// Answer an SSE request with the event-stream head.
    SseStart,
    /// Acknowledge a `subscribe` op on an open WebSocket.
    WsAck,
}

/// A subscription waiting for its barrier to return from the router.
#[derive(Debug)]
pub struct Barrier {
    conn: ConnRef,
    topics: Vec<u32>,
    then: After,
}

/// The `topic` parameters of a query string, each a valid pattern; an error message
/// for the client otherwise.
pub fn query_patterns(query: &str) -> Result<Vec<String>, String> {
    let mut patterns = Vec::new();
    for pair in http1::query_pairs(query) {
        let (key, value) = pair.map_err(|_| "query: invalid percent-encoding".to_string())?;
        if key != "topic" {
            continue;
        }
        topic::parse_pattern(&value).map_err(|e| format!("topic {value:?}: {e}"))?;
        if !patterns.iter().any(|p| *p == value) {
            patterns.push(value.into_owned());
        }
    }
    if patterns.len() > usize::from(MAX_SUBSCRIPTIONS_PER_CONN) {
        return Err(format!(
            "at most {MAX_SUBSCRIPTIONS_PER_CONN} topics per connection"
        ));
    }
    Ok(patterns)
}

impl Core {
    /// `GET /sse?topic=...`: an event stream, started once its subscriptions are live.
    pub(super) fn sse_request(&mut self, slot: u32, req: &Request<'_, '_>) {
        if req.method != "GET" {
            self.method_not_allowed(slot, "GET");
            return;
        }
        match query_patterns(req.query) {
            Err(msg) => self.respond_text(slot, 400, &msg),
            Ok(patterns) if patterns.is_empty() => {
                self.respond_text(slot, 400, "give at least one topic: /sse?topic=NAME")
            }
            Ok(patterns) => {
                self.set_phase(slot, Phase::Subscribing);
                let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                self.subscribe_then(slot, &refs, After::SseStart);
            }
        }
    }

    /// Reserves `patterns` (already validated) for `slot` and sends the barrier that
    /// will confirm them.
    pub(super) fn subscribe_then(&mut self, slot: u32, patterns: &[&str], then: After) {
        let mut ids = Vec::with_capacity(patterns.len());
        for p in patterns {
            let Ok(pattern) = topic::parse_pattern(p) else {
                continue;
            };
            let (id, change) = self.topics.reserve(pattern);
            ids.push(id);
            if let Some(c) = change {
                self.tell_router(ToRouter::Interest {
                    prefix: c.prefix,
                    subtree: c.subtree,
                    add: true,
                });
            }
        }
        self.metrics.topics.store(self.topics.len() as u64, Relaxed);
        let conn = self.conns.slot_mut(slot).conn_ref(slot);
        let id = self.barriers.insert(Barrier {
            conn,
            topics: ids,
            then,
        }) as u32;
        self.tell_router(ToRouter::Barrier { id });
    }

    /// The router has applied everything sent before barrier `id`.
    pub(super) fn on_barrier(&mut self, id: u32) {
        let Some(barrier) = self.barriers.try_remove(id as usize) else {
            tracing::error!("unknown barrier {id}");
            return;
        };
        let slot = barrier.conn.slot;
        let live = self
            .conns
            .get(slot, barrier.conn.generation)
            .is_some_and(|c| c.is_live() && !c.has(flag::WS_CLOSE_SENT));
        if !live {
            for topic in barrier.topics {
                if let Some(c) = self.topics.abandon(topic) {
                    self.tell_router(ToRouter::Interest {
                        prefix: c.prefix,
                        subtree: c.subtree,
                        add: false,
                    });
                }
            }
            self.metrics.topics.store(self.topics.len() as u64, Relaxed);
            return;
        }
        let conn = self.conns.slot_mut(slot);
        let mut added = 0u16;
        for &topic in &barrier.topics {
            if self.topics.confirm(topic, slot, &mut conn.sub_head) {
                added += 1;
            }
        }
        conn.subs += added;
        self.metrics
            .subscriptions
            .fetch_add(u64::from(added), Relaxed);
        match barrier.then {
            After::WsHandshake(accept) => {
                self.ws_open(slot, &accept, Phase::Ws);
                self.resume_input(slot);
            }
            After::SseStart => {
                let mut out = Vec::with_capacity(256);
                http1::write_head(&mut out, 200, sse::RESPONSE_HEADERS);
                sse::write_retry(&mut out, self.settings.sse_retry.as_millis() as u32);
                self.metrics.response(200);
                self.send(slot, Bytes::from(out));
                self.set_phase(slot, Phase::Sse);
                self.set_deadline(slot, self.settings.sse_heartbeat);
                self.resume_input(slot);
            }
            After::WsAck => {
                let patterns: Vec<String> = barrier
                    .topics
                    .iter()
                    .map(|&t| self.topics.get(t).pattern())
                    .collect();
                let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                let mut out = Vec::new();
                control::write_subscribed(&mut out, &refs);
                self.ws_text(slot, &out);
                self.conns.slot_mut(slot).clear(flag::OP_PENDING);
                self.resume_input(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_patterns_collects_valid_topics_once() {
        assert_eq!(
            query_patterns("topic=a&x=1&topic=b.*&topic=a").unwrap(),
            vec!["a".to_string(), "b.*".to_string()]
        );
        assert_eq!(
            query_patterns("topic=ami.endpoint.PJSIP%2F101").unwrap(),
            vec!["ami.endpoint.PJSIP/101"]
        );
        assert!(query_patterns("").unwrap().is_empty());
        assert!(query_patterns("topic=a..b").is_err());
        assert!(query_patterns("topic=*").is_err());
        assert!(query_patterns("topic=%zz").is_err());
    }
}
