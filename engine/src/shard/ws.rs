//! WebSocket connections on a shard: the upgrade, frames read in place from receive
//! buffers (state boxed only while a frame or message is partial), the close handshake,
//! the subscriber's JSON ops, and the conformance echo.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use switchboard_proto::control::{self, ClientOp};
use switchboard_proto::http1::Request;
use switchboard_proto::position::Position;
use switchboard_proto::topic;
use switchboard_proto::ws::{self, Event, Reader, Role, close, frame::Opcode, handshake};

use super::conn::{Phase, Rx, flag};
use super::subscribe::After;
use super::{Core, ToRouter};
use crate::config::{ECHO_MAX_MESSAGE_BYTES, WS_MAX_CLIENT_MESSAGE_BYTES};
use crate::metrics::{CloseReason, Limit};

/// Fresh receive state for a connection in `phase`: its frame reader is sized for the
/// phase (a connection that is not a WebSocket yet gets one that accepts nothing). Every
/// place that creates receive state goes through here, so parked input is always read
/// later with the right limits.
pub(super) fn new_rx(phase: Phase) -> Rx {
    Rx::new(Reader::new(Role::Server, max_message_bytes(phase)))
}

/// Largest message a client may send in `phase` (0: not a WebSocket).
fn max_message_bytes(phase: Phase) -> u64 {
    match phase {
        Phase::Echo => ECHO_MAX_MESSAGE_BYTES,
        Phase::Ws => WS_MAX_CLIENT_MESSAGE_BYTES,
        _ => 0,
    }
}

/// What to do with the rest of the input after an event.
enum Next {
    Continue,
    /// An op waits for the router: keep what follows for when it answers.
    Park,
    /// The connection is closing: discard what follows.
    Stop,
}

impl Core {
    pub(super) fn ws_upgrade(&mut self, slot: u32, req: &Request<'_, '_>, echo: bool) {
        let accept = match handshake::server_handshake(req.method, req.minor_version, req.headers) {
            Ok(accept) => accept,
            Err(e) => {
                let reason = format!("{}\n", e.reason());
                match e.status() {
                    405 => self.method_not_allowed(slot, "GET"),
                    426 => self.respond(
                        slot,
                        426,
                        &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
                        Some("text/plain"),
                        reason.as_bytes(),
                    ),
                    status => self.respond(
                        slot,
                        status,
                        &[("Sec-WebSocket-Version", "13")],
                        Some("text/plain"),
                        reason.as_bytes(),
                    ),
                }
                return;
            }
        };
        if echo {
            self.ws_open(slot, &accept, Phase::Echo);
            return;
        }
        if !self.origin_checked(slot, req, false) {
            return;
        }
        let since = match super::subscribe::query_since(req.query) {
            Ok(since) => since,
            Err(msg) => return self.bad_request(slot, &msg),
        };
        match super::subscribe::query_patterns(req.query) {
            Err(msg) => self.bad_request(slot, &msg),
            Ok(patterns) if patterns.len() > self.max_subscriptions() => self.too_many_topics(slot),
            Ok(patterns) if patterns.is_empty() && since.is_some() => {
                self.bad_request(slot, "since needs at least one topic")
            }
            Ok(patterns) => {
                let refs: Vec<&str> = patterns.iter().map(|p| &**p).collect();
                if !self.subscriber_authorized(slot, req, &refs, true) {
                    return;
                }
                if refs.is_empty() {
                    self.ws_start(slot, &accept);
                } else {
                    self.set_phase(slot, Phase::Subscribing);
                    self.subscribe_then(slot, &refs, After::WsHandshake(accept), since);
                }
            }
        }
    }

    /// Opens a subscriber WebSocket: gives it its direct address, sends the `101` and
    /// the hello. False if it could not (answered 500).
    pub(super) fn ws_start(&mut self, slot: u32, accept: &[u8; 28]) -> bool {
        let Some(id) = self.open_address(slot) else {
            return false;
        };
        self.ws_open(slot, accept, Phase::Ws);
        let mut hello = Vec::with_capacity(64);
        control::write_hello(&mut hello, &id);
        self.ws_text(slot, &hello);
        true
    }

    /// Sends `101 Switching Protocols`; from now on the connection speaks frames.
    pub(super) fn ws_open(&mut self, slot: u32, accept: &[u8; 28], phase: Phase) {
        let mut out = Vec::with_capacity(160);
        handshake::write_response(&mut out, accept, &[]);
        self.metrics.response(101);
        self.send(slot, Bytes::from(out));
        self.set_phase(slot, phase);
        let conn = self.conns.slot_mut(slot);
        conn.deadline = 0;
        conn.clear(flag::HTTP_CLOSE);
        // Frames get a reader sized for `phase`; parked input (if any) stays for
        // `resume_input`.
        if let Some(rx) = conn.rx.as_mut() {
            rx.ws = Reader::new(Role::Server, max_message_bytes(phase));
        }
        if phase == Phase::Ws {
            self.ws_keepalive_start(slot);
        }
    }

    /// Frames from a WebSocket client, unmasked and parsed in place.
    pub(super) fn ws_input(&mut self, slot: u32, data: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        let echo = conn.phase == Phase::Echo;
        // Connections between messages have no boxed state: parse with a reader on the
        // stack and box it only if this read ends inside a frame or message.
        let mut boxed = conn.rx.take();
        let mut local = None;
        let rx = match boxed.as_deref_mut() {
            Some(rx) => rx,
            None => local.insert(new_rx(conn.phase)),
        };
        let mut pos = 0;
        while pos < data.len() {
            let (used, event) = match rx.ws.read(&mut data[pos..]) {
                Ok(step) => step,
                Err(e) => {
                    tracing::debug!(slot, "websocket protocol error: {e}");
                    if e.close_code() == close::TOO_BIG {
                        self.limit_hit(slot, Limit::WsMessageBytes);
                    } else {
                        let conn = self.conns.slot_mut(slot);
                        conn.close_because(CloseReason::ProtocolError);
                    }
                    self.ws_close(slot, e.close_code(), e.reason());
                    return;
                }
            };
            pos += used;
            let Some(event) = event else {
                if used == 0 {
                    break;
                }
                continue;
            };
            let next = match event {
                Event::Data {
                    payload,
                    text,
                    first,
                    fin,
                } => {
                    if first && fin {
                        self.ws_message(slot, echo, text, payload)
                    } else {
                        rx.msg.extend_from_slice(payload);
                        if fin {
                            let msg = std::mem::take(&mut rx.msg);
                            self.ws_message(slot, echo, text, &msg)
                        } else {
                            Next::Continue
                        }
                    }
                }
                Event::Ping(payload) => {
                    let mut out = Vec::with_capacity(2 + payload.len());
                    ws::frame::encode_frame(&mut out, Opcode::Pong, true, payload, None);
                    self.send(slot, Bytes::from(out));
                    Next::Continue
                }
                Event::Pong(_) => Next::Continue,
                Event::Close { code, reason: _ } => {
                    self.conns.slot_mut(slot).close_because(CloseReason::Client);
                    // Answer with the peer's code (or an empty close if it gave none),
                    // then FIN after it: the server closes the TCP connection first.
                    let mut out = Vec::with_capacity(4);
                    close::encode_close_frame(&mut out, code, "", None);
                    self.metrics.ws_close(code.unwrap_or(close::NORMAL));
                    self.send(slot, Bytes::from(out));
                    self.conns.slot_mut(slot).set(flag::WS_CLOSE_SENT);
                    self.close_after_flush(slot);
                    Next::Stop
                }
            };
            match next {
                Next::Continue => {}
                Next::Stop => return,
                Next::Park => {
                    // The op's frame ended exactly here: what follows starts a frame.
                    rx.spill.extend_from_slice(&data[pos..]);
                    break;
                }
            }
        }
        let partial = !rx.is_idle();
        let conn = self.conns.slot_mut(slot);
        if conn.is_live() && partial {
            conn.rx = boxed.or_else(|| local.map(Box::new));
            self.pause_reading_if_full(slot);
        }
    }

    /// One complete message from the client.
    fn ws_message(&mut self, slot: u32, echo: bool, text: bool, payload: &[u8]) -> Next {
        self.metrics.ws_messages_in.fetch_add(1, Relaxed);
        if echo {
            let mut out = Vec::with_capacity(10 + payload.len());
            let opcode = if text { Opcode::Text } else { Opcode::Binary };
            ws::frame::encode_frame(&mut out, opcode, true, payload, None);
            self.send(slot, Bytes::from(out));
            return Next::Continue;
        }
        if !text {
            self.ws_close(slot, close::UNSUPPORTED, "binary messages are not accepted");
            return Next::Stop;
        }
        match control::parse_client_op(payload) {
            Ok(ClientOp::Subscribe { topics, since }) => {
                return self.ws_subscribe(slot, &topics, since);
            }
            Ok(ClientOp::Unsubscribe(patterns)) => self.ws_unsubscribe(slot, &patterns),
            Ok(ClientOp::Action) => self.ws_action(slot, payload),
            Err(e) => {
                if matches!(e, control::OpError::TooManyTopics { .. }) {
                    self.limit_hit(slot, Limit::TopicsPerOp);
                }
                let mut out = Vec::new();
                control::write_error(&mut out, &e.to_string());
                self.ws_text(slot, &out);
            }
        }
        Next::Continue
    }

    /// A `subscribe` op: confirmed by a router barrier, during which the connection's
    /// further input is parked so that ops are applied and answered in order.
    fn ws_subscribe(&mut self, slot: u32, patterns: &[String], since: Option<Position>) -> Next {
        if self.refuse_reserved(slot, patterns) || self.op_forbidden(slot, patterns) {
            return Next::Continue;
        }
        let conn = self.conns.slot_mut(slot);
        let new = patterns
            .iter()
            .filter_map(|p| topic::parse_pattern(p).ok())
            .filter(|&p| !self.topics.holds(p, conn.sub_head))
            .count();
        let max = usize::from(self.settings.max_subscriptions);
        if usize::from(conn.subs) + new > max {
            self.limit_hit(slot, Limit::Subscriptions);
            let mut out = Vec::new();
            control::write_error(
                &mut out,
                &format!("at most {max} subscriptions per connection"),
            );
            self.ws_text(slot, &out);
            return Next::Continue;
        }
        conn.set(flag::OP_PENDING);
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        self.subscribe_then(slot, &refs, After::WsAck, since);
        Next::Park
    }

    /// Answers an op naming a pattern in the direct-address namespace with an error;
    /// true if it did.
    fn refuse_reserved(&mut self, slot: u32, patterns: &[String]) -> bool {
        let reserved = patterns
            .iter()
            .any(|p| topic::parse_pattern(p).is_ok_and(super::subscribe::is_reserved_pattern));
        if reserved {
            tracing::debug!(slot, "op on the client namespace refused");
            let mut out = Vec::new();
            control::write_error(&mut out, super::subscribe::RESERVED);
            self.ws_text(slot, &out);
        }
        reserved
    }

    fn ws_unsubscribe(&mut self, slot: u32, patterns: &[String]) {
        if self.refuse_reserved(slot, patterns) {
            return;
        }
        let mut removed = 0u16;
        for p in patterns {
            let Ok(pattern) = topic::parse_pattern(p) else {
                continue;
            };
            let conn = self.conns.slot_mut(slot);
            let (was, change) = self.topics.unsubscribe(pattern, &mut conn.sub_head);
            if was {
                removed += 1;
            }
            if let Some(c) = change {
                self.tell_router(ToRouter::Interest {
                    prefix: c.prefix,
                    subtree: c.subtree,
                    add: false,
                });
            }
        }
        let conn = self.conns.slot_mut(slot);
        conn.subs -= removed;
        self.metrics
            .subscriptions
            .fetch_sub(u64::from(removed), Relaxed);
        self.metrics.topics.store(self.topics.len() as u64, Relaxed);
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        control::write_unsubscribed(&mut out, &refs);
        self.ws_text(slot, &out);
    }

    /// Sends one text message.
    pub(super) fn ws_text(&mut self, slot: u32, text: &[u8]) {
        let mut out = Vec::with_capacity(10 + text.len());
        ws::frame::encode_frame(&mut out, Opcode::Text, true, text, None);
        self.send(slot, Bytes::from(out));
    }

    /// Starts the close handshake from our side with `code`; input that follows is
    /// discarded and the socket is closed once the frame is out and the peer is done.
    pub(super) fn ws_close(&mut self, slot: u32, code: u16, reason: &str) {
        let mut out = Vec::with_capacity(4 + reason.len());
        close::encode_close_frame(&mut out, Some(code), reason, None);
        self.metrics.ws_close(code);
        self.send(slot, Bytes::from(out));
        self.conns.slot_mut(slot).set(flag::WS_CLOSE_SENT);
        self.close_after_flush(slot);
    }
}
