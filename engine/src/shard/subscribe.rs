//! Subscriptions that are live before they are acknowledged. A subscription is first
//! reserved in the shard's topic index (telling the router of new interest), then a
//! barrier goes to the router behind it; when the barrier comes back, every publish the
//! router orders from then on reaches this shard, so the subscriber is added and only
//! then told: the WebSocket `101`, the SSE `200`, or the `subscribed` ack. A client that
//! publishes after that answer always receives its message.
//!
//! A resuming subscription (`since`, `Last-Event-ID`) sends its position with the
//! barrier: the router answers with what the patterns had after it (resets, then
//! messages), which is sent before anything routed after the barrier, so replay and
//! live messages meet with no gap and no duplicate.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use switchboard_proto::address::DirectAddress;
use switchboard_proto::http1::{self, Request};
use switchboard_proto::position::Position;
use switchboard_proto::{control, envelope, sse, topic};

use super::conn::{Phase, flag};
use super::{Core, ToRouter, access};
use crate::pubsub::history::Replay;
use crate::pubsub::link::{ConnRef, Resume};

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
    /// Answer a long-poll at once if the replay has something, else hold it.
    Poll,
}

/// A subscription waiting for its barrier to return from the router.
#[derive(Debug)]
pub struct Barrier {
    conn: ConnRef,
    topics: Vec<u32>,
    then: After,
}

/// Why a client may not subscribe to a pattern in the direct-address namespace.
pub const RESERVED: &str = "the client.* namespace is reserved for direct addresses";

/// Whether a client-given pattern reaches into the direct-address namespace.
pub fn is_reserved_pattern(pattern: topic::Pattern<'_>) -> bool {
    match pattern {
        topic::Pattern::Exact(t) => topic::is_reserved(t),
        topic::Pattern::Subtree(p) => topic::is_reserved(p),
    }
}

/// The `since` parameter of a query string, if any; an error message for the client if
/// it is not a position.
pub fn query_since(query: &str) -> Result<Option<Position>, String> {
    let mut since = None;
    for pair in http1::query_pairs(query) {
        let (key, value) = pair.map_err(|_| "query: invalid percent-encoding".to_string())?;
        if key == "since" {
            let p = Position::parse(&value).map_err(|e| format!("since {value:?}: {e}"))?;
            since = Some(p);
        }
    }
    Ok(since)
}

/// The position in a `Last-Event-ID` header, if one is given and not empty.
pub fn last_event_id(req: &Request<'_, '_>) -> Result<Option<Position>, String> {
    let Some(h) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
    else {
        return Ok(None);
    };
    let value = std::str::from_utf8(h.value)
        .map_err(|_| "Last-Event-ID is not UTF-8".to_string())?
        .trim();
    if value.is_empty() {
        return Ok(None);
    }
    Position::parse(value)
        .map(Some)
        .map_err(|e| format!("Last-Event-ID {value:?}: {e}"))
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
        let pattern = topic::parse_pattern(&value).map_err(|e| format!("topic {value:?}: {e}"))?;
        if is_reserved_pattern(pattern) {
            return Err(format!("topic {value:?}: {RESERVED}"));
        }
        if !patterns.iter().any(|p| *p == value) {
            patterns.push(value.into_owned());
        }
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
        if !self.origin_checked(slot, req, true) {
            return;
        }
        // The browser's `Last-Event-ID` (a reconnection) wins over `since` in the URL
        // (the position the page started from).
        let since = match (last_event_id(req), query_since(req.query)) {
            (Err(msg), _) | (_, Err(msg)) => return self.bad_request(slot, &msg),
            (Ok(header), Ok(query)) => header.or(query),
        };
        match query_patterns(req.query) {
            Err(msg) => self.bad_request(slot, &msg),
            Ok(patterns) if patterns.is_empty() => {
                self.bad_request(slot, "give at least one topic: /sse?topic=NAME")
            }
            Ok(patterns) if patterns.len() > self.max_subscriptions() => self.too_many_topics(slot),
            Ok(patterns) => {
                let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                if !self.subscriber_authorized(slot, req, &refs, true) {
                    return;
                }
                self.set_phase(slot, Phase::Subscribing);
                self.subscribe_then(slot, &refs, After::SseStart, since);
            }
        }
    }

    /// Reserves `patterns` (already validated) for `slot` and sends the barrier that
    /// will confirm them (asking for a replay after `since`, if given).
    pub(super) fn subscribe_then(
        &mut self,
        slot: u32,
        patterns: &[&str],
        then: After,
        since: Option<Position>,
    ) {
        let mut ids = Vec::with_capacity(patterns.len());
        let mut resume = since.map(|since| {
            Box::new(Resume {
                patterns: Vec::with_capacity(patterns.len()),
                since,
            })
        });
        // PBX state topics start from a snapshot rather than from history, except for a
        // long-poll that resumes (it follows history from its previous answer).
        let snapshots = self.settings.ami && !(matches!(then, After::Poll) && since.is_some());
        let mut snapshot = Vec::new();
        for p in patterns {
            let Ok(pattern) = topic::parse_pattern(p) else {
                continue;
            };
            let named = match pattern {
                topic::Pattern::Exact(t) => (t.into(), false),
                topic::Pattern::Subtree(p) => (p.into(), true),
            };
            if snapshots && super::ami::wants_snapshot(pattern) {
                snapshot.push(named);
            } else if let Some(r) = resume.as_mut() {
                r.patterns.push(named);
            }
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
        if resume.as_ref().is_some_and(|r| r.patterns.is_empty()) {
            resume = None;
        }
        let snapshot = (!snapshot.is_empty()).then(|| snapshot.into_boxed_slice());
        self.tell_router(ToRouter::Barrier {
            id,
            resume,
            snapshot,
        });
    }

    /// The router has applied everything sent before barrier `id` (up to router-wide
    /// sequence number `gseq`) and, for a resume, says what to replay.
    pub(super) fn on_barrier(&mut self, id: u32, gseq: u64, replay: Option<Box<Replay>>) {
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
                if !self.ws_start(slot, &accept) {
                    return;
                }
                self.send_replay(slot, replay.as_deref());
                self.resume_input(slot);
            }
            After::SseStart => {
                let Some(id) = self.open_address(slot) else {
                    return;
                };
                let mut out = Vec::with_capacity(256);
                match self.access.cors(slot) {
                    None => http1::write_head(&mut out, 200, sse::RESPONSE_HEADERS),
                    Some(origin) => {
                        let mut headers = sse::RESPONSE_HEADERS.to_vec();
                        headers.extend(access::cors_headers(origin));
                        http1::write_head(&mut out, 200, &headers);
                    }
                }
                self.access.clear_cors(slot);
                sse::write_retry(&mut out, self.settings.sse_retry.as_millis() as u32);
                let mut hello = Vec::with_capacity(64);
                control::write_hello(&mut hello, &id);
                sse::write_event(&mut out, None, Some("hello"), &hello);
                self.metrics.response(200);
                self.send(slot, Bytes::from(out));
                self.set_phase(slot, Phase::Sse);
                self.send_replay(slot, replay.as_deref());
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
                self.send_replay(slot, replay.as_deref());
                self.conns.slot_mut(slot).clear(flag::OP_PENDING);
                self.resume_input(slot);
            }
            After::Poll => self.poll_ready(slot, gseq, replay.as_deref()),
        }
    }

    /// Gives `slot` a direct address and returns its id (for the hello); `None` (after
    /// answering 500) if the OS's random source failed.
    pub(super) fn open_address(&mut self, slot: u32) -> Option<String> {
        match self.secrets_source.next() {
            Ok(secret) => {
                self.secrets.set(slot, secret);
                let address = DirectAddress {
                    shard: self.shard,
                    slot,
                    secret,
                };
                Some(address.id())
            }
            Err(e) => {
                tracing::error!("reading /dev/urandom: {e}");
                self.conns.slot_mut(slot).set(flag::HTTP_CLOSE);
                self.respond_text(slot, 500, "no random source for a client id");
                None
            }
        }
    }

    /// Sends a replay to a WebSocket or SSE subscriber: resets first, then the messages
    /// (already encoded for its transport).
    fn send_replay(&mut self, slot: u32, replay: Option<&Replay>) {
        let Some(replay) = replay else { return };
        let ws = self.conns.slot_mut(slot).phase == Phase::Ws;
        for (name, seq) in &replay.resets {
            let mut json = Vec::with_capacity(name.len() + 48);
            envelope::write_reset(&mut json, name, *seq);
            if ws {
                self.ws_text(slot, &json);
            } else {
                let mut event = Vec::with_capacity(json.len() + 8);
                sse::write_event(&mut event, None, None, &json);
                self.send(slot, Bytes::from(event));
            }
        }
        for msg in &replay.messages {
            let buf = if ws {
                msg.ws_frame.clone()
            } else {
                msg.sse_event.clone()
            };
            self.send(slot, buf);
        }
        let m = &self.metrics;
        m.replayed.fetch_add(replay.messages.len() as u64, Relaxed);
        m.resets_sent.fetch_add(replay.resets.len() as u64, Relaxed);
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
        for reserved in [
            "topic=client",
            "topic=client.*",
            "topic=client.ab",
            "topic=a&topic=client.x.*",
        ] {
            let e = query_patterns(reserved).unwrap_err();
            assert!(e.contains("reserved"), "{reserved}: {e}");
        }
        assert!(query_patterns("topic=clients.*").is_ok());
    }

    #[test]
    fn query_since_takes_a_position_or_nothing() {
        assert_eq!(query_since("topic=a"), Ok(None));
        assert_eq!(
            query_since("topic=a&since=0000abcd-7"),
            Ok(Some(Position {
                epoch: 0xabcd,
                gseq: 7
            }))
        );
        assert_eq!(
            query_since("since=0000abcd-7&since=0000abcd-9"),
            Ok(Some(Position {
                epoch: 0xabcd,
                gseq: 9
            })),
            "the last one counts"
        );
        for bad in ["since=", "since=7", "since=0000abcd-x", "since=%zz"] {
            assert!(query_since(bad).is_err(), "{bad}");
        }
    }
}
