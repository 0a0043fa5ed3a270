//! HTTP/1.1 on a shard: parsing requests out of received bytes (in place when a request
//! arrives whole, from the connection's spill buffer when it arrives in pieces), routing
//! them, reading publish bodies, and answering, with keep-alive between plain requests.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use switchboard_proto::http1::{self, BodyError, BodyFraming, ChunkedDecoder, Request};
use switchboard_proto::{envelope, topic};

use super::conn::{BodyFor, BodyProgress, Phase, PublishBody, flag};
use super::{Core, access, ws};
use crate::config::{MAX_HEADERS_LIMIT, PARK_PAUSE_BYTES};
use crate::metrics::{CloseReason, Limit};
use crate::pubsub::link::{ConnRef, ToRouter};
use crate::uring::Kind;

impl Core {
    /// Bytes for a connection reading HTTP requests.
    pub(super) fn http_input(&mut self, slot: u32, data: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        let spill = conn
            .rx
            .as_mut()
            .map(|rx| std::mem::take(&mut rx.spill))
            .unwrap_or_default();
        if spill.is_empty() {
            let used = self.http_pump(slot, data);
            self.after_pump(slot, &mut data[used..]);
        } else {
            let mut buf = spill;
            buf.extend_from_slice(data);
            let used = self.http_pump(slot, &buf);
            self.after_pump(slot, &mut buf[used..]);
        }
    }

    /// Input that arrives while the connection waits for the router: kept, in order, for
    /// when it reads again. Past `PARK_PAUSE_BYTES` the recv is cancelled, so a client
    /// that pipelines more meets TCP flow control instead of engine memory.
    pub(super) fn park_input(&mut self, slot: u32, data: &[u8]) {
        let limit =
            PARK_PAUSE_BYTES + self.settings.http.max_head_bytes + self.settings.max_publish_bytes;
        let conn = self.conns.slot_mut(slot);
        let rx = conn
            .rx
            .get_or_insert_with(|| Box::new(ws::new_rx(conn.phase)));
        if rx.spill.len() + data.len() > limit {
            // Only reachable if the kernel keeps delivering long after the cancel.
            tracing::debug!(slot, "too much input while waiting for the router");
            self.finalize(slot);
            return;
        }
        rx.spill.extend_from_slice(data);
        self.pause_reading_if_full(slot);
    }

    /// Stops reading a connection whose parked input reached `PARK_PAUSE_BYTES`.
    pub(super) fn pause_reading_if_full(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        let parked = conn.rx.as_ref().map_or(0, |rx| rx.spill.len());
        if parked >= PARK_PAUSE_BYTES && !conn.has(flag::READ_PAUSED) {
            conn.set(flag::READ_PAUSED);
            self.metrics.read_pauses.fetch_add(1, Relaxed);
            if conn.has(flag::RECV_ARMED) {
                let recv = conn.token(Kind::Recv, slot);
                self.ring.cancel_recv(recv);
            }
        }
    }

    /// Resumes reading after the router answered: parked input is processed now, and a
    /// paused recv is armed again once little enough is left parked.
    pub(super) fn resume_input(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        let generation = conn.generation;
        let mut parked = conn
            .rx
            .as_mut()
            .map(|rx| std::mem::take(&mut rx.spill))
            .unwrap_or_default();
        match conn.phase {
            Phase::Http => {
                let used = self.http_pump(slot, &parked);
                self.after_pump(slot, &mut parked[used..]);
            }
            _ => self.after_pump(slot, &mut parked),
        }
        let Some(conn) = self.conns.get(slot, generation) else {
            return;
        };
        let parked = conn.rx.as_ref().map_or(0, |rx| rx.spill.len());
        if conn.has(flag::READ_PAUSED) && !conn.has(flag::FINAL) && parked < PARK_PAUSE_BYTES {
            conn.clear(flag::READ_PAUSED);
            if !conn.has(flag::RECV_ARMED | flag::PEER_EOF) {
                conn.set(flag::RECV_ARMED);
                let recv = conn.token(Kind::Recv, slot);
                self.ring.recv_multishot(recv, super::RECV_GROUP);
            }
        }
    }

    /// What follows the requests handled: frames if the connection was upgraded, a
    /// partial request (kept in the spill buffer) if it still speaks HTTP.
    fn after_pump(&mut self, slot: u32, rest: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        if rest.is_empty() || conn.has(flag::FINAL) {
            self.drop_idle_rx(slot);
            return;
        }
        match conn.phase {
            Phase::Ws | Phase::Echo if conn.has(flag::OP_PENDING) => self.park_input(slot, rest),
            Phase::Ws | Phase::Echo => self.ws_input(slot, rest),
            Phase::Http | Phase::Publishing | Phase::Subscribing | Phase::Poll => {
                conn.rx
                    .get_or_insert_with(|| Box::new(ws::new_rx(conn.phase)))
                    .spill = rest.to_vec();
            }
            Phase::Sse | Phase::Closing | Phase::Free => {}
        }
    }

    /// Frees the connection's receive state when it holds nothing partial.
    pub(super) fn drop_idle_rx(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.rx.as_ref().is_some_and(|rx| rx.is_idle()) {
            conn.rx = None;
        }
    }

    /// Handles complete requests from `input` while the connection keeps reading HTTP;
    /// returns the bytes consumed (the rest is a partial request, or input for later).
    fn http_pump(&mut self, slot: u32, input: &[u8]) -> usize {
        let mut pos = 0;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_LIMIT];
        loop {
            let conn = self.conns.slot_mut(slot);
            if conn.phase != Phase::Http {
                return pos;
            }
            if pos == input.len() {
                return pos;
            }
            if conn.rx.as_ref().is_some_and(|rx| rx.body.is_some()) {
                // Consumes at least one byte, or finishes (or fails) the body.
                pos += self.body_input(slot, &input[pos..]);
                continue;
            }
            let limits = &self.settings.http;
            let max_headers = limits.max_headers.min(MAX_HEADERS_LIMIT);
            match http1::parse_request(&input[pos..], limits, &mut headers[..max_headers]) {
                Ok(None) => return pos,
                Err(e) => {
                    tracing::debug!(slot, "bad request: {e}");
                    if let Some(limit) = super::limits::head_limit(&e) {
                        self.limit_hit(slot, limit);
                    } else {
                        let conn = self.conns.slot_mut(slot);
                        conn.close_because(CloseReason::ProtocolError);
                    }
                    self.conns.slot_mut(slot).set(flag::HTTP_CLOSE);
                    self.respond_text(slot, e.status(), &e.to_string());
                    return input.len();
                }
                Ok(Some(req)) => {
                    pos += req.head_len;
                    self.metrics.http_requests.fetch_add(1, Relaxed);
                    let conn = self.conns.slot_mut(slot);
                    if req.keep_alive {
                        conn.clear(flag::HTTP_CLOSE);
                    } else {
                        conn.set(flag::HTTP_CLOSE);
                    }
                    let used = self.route(slot, &req, &input[pos..]);
                    pos += used;
                }
            }
        }
    }

    /// Answers one request; returns the body bytes it consumed.
    fn route(&mut self, slot: u32, req: &Request<'_, '_>, body: &[u8]) -> usize {
        let path = req.path;
        if access::is_preflight(req) {
            if path.starts_with("/publish/") {
                self.preflight(slot, req, "POST");
                return self.skip_body(slot, req);
            }
            if matches!(path, "/sse" | "/poll") {
                self.preflight(slot, req, "GET");
                return self.skip_body(slot, req);
            }
            if path == super::ami::ACTION_PATH {
                self.preflight(slot, req, "POST");
                return self.skip_body(slot, req);
            }
        }
        if let Some(encoded_topic) = path.strip_prefix("/publish/") {
            return self.publish_request(slot, req, encoded_topic, body);
        }
        if path == super::ami::ACTION_PATH {
            return self.ami_action_request(slot, req, body);
        }
        if !matches!(req.body, BodyFraming::None | BodyFraming::Length(0)) {
            // No other route takes a body; rather than read one to skip it, answer and
            // close.
            self.conns.slot_mut(slot).set(flag::HTTP_CLOSE);
            let known = matches!(
                path,
                "/healthz" | "/healthz/ami" | "/metrics" | "/ws" | "/sse" | "/poll"
            ) || (path == "/echo" && self.settings.echo);
            if known {
                self.respond_text(slot, 400, "this resource takes no request body");
            } else {
                self.respond_text(slot, 404, "not found");
            }
            return 0;
        }
        match path {
            "/healthz" | "/healthz/ami" => self.healthz(slot, req.method, path != "/healthz"),
            "/metrics" => match req.method {
                "GET" => {
                    let text = self.registry.render();
                    self.respond(
                        slot,
                        200,
                        &[],
                        Some("text/plain; version=0.0.4"),
                        text.as_bytes(),
                    );
                }
                _ => self.method_not_allowed(slot, "GET"),
            },
            "/ws" => self.ws_upgrade(slot, req, false),
            "/echo" if self.settings.echo => self.ws_upgrade(slot, req, true),
            "/sse" => self.sse_request(slot, req),
            "/poll" => self.poll_request(slot, req),
            _ => self.respond_text(slot, 404, "not found"),
        }
        0
    }

    /// `/healthz`: `200 ok` while serving (the AMI session's state on a second line
    /// when a PBX is configured), `503 draining` during a drain. `/healthz/ami`: `200`
    /// while the AMI session is live, `503` otherwise (404 without a PBX), with its state.
    fn healthz(&mut self, slot: u32, method: &str, ami_only: bool) {
        let (status, body): (u16, String) = match (&self.registry.ami, ami_only) {
            (None, true) => (404, "no PBX is configured (--ami)\n".into()),
            (Some(ami), true) => {
                let live = ami.live.load(Relaxed);
                (
                    if live { 200 } else { 503 },
                    format!("{}\n", ami.health_line()),
                )
            }
            // Draining: still answering, but not for long (see `drain`).
            (_, false) if self.drain.is_some() => (503, "draining".into()),
            (None, false) => (200, "ok".into()),
            (Some(ami), false) => (200, format!("ok\n{}\n", ami.health_line())),
        };
        match method {
            "GET" => self.respond(slot, status, &[], Some("text/plain"), body.as_bytes()),
            "HEAD" => self.respond_head_only(slot, status, "text/plain", body.len()),
            _ => self.method_not_allowed(slot, "GET, HEAD"),
        }
    }

    fn publish_request(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
        encoded_topic: &str,
        body: &[u8],
    ) -> usize {
        if !self.post_allowed(slot, req) {
            return self.skip_body(slot, req);
        }
        let topic = match http1::percent_decode(encoded_topic) {
            Ok(t) => t,
            Err(_) => {
                self.respond_text(slot, 400, "topic: invalid percent-encoding");
                return self.skip_body(slot, req);
            }
        };
        if let Err(e) = topic::validate_topic(&topic) {
            self.respond_text(slot, 400, &format!("topic: {e}"));
            return self.skip_body(slot, req);
        }
        if !self.publisher_authorized(slot, req, &topic) {
            return self.skip_body(slot, req);
        }
        self.read_body(slot, req, body, BodyFor::Publish(topic.into()))
    }

    /// Reads the body of a `POST` (at most `--max-publish-bytes`, by length or chunked)
    /// and hands it to `target` once complete; returns the body bytes consumed.
    pub(super) fn read_body(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
        body: &[u8],
        target: BodyFor,
    ) -> usize {
        let max = self.settings.max_publish_bytes;
        let progress = match req.body {
            BodyFraming::None => BodyProgress::Length(0),
            BodyFraming::Length(n) if n > max as u64 => {
                self.limit_hit(slot, Limit::PublishBytes);
                self.conns.slot_mut(slot).set(flag::HTTP_CLOSE);
                self.respond_text(slot, 413, &format!("publish body over {max} bytes"));
                return body.len();
            }
            BodyFraming::Length(n) => BodyProgress::Length(n as usize),
            BodyFraming::Chunked => BodyProgress::Chunked(ChunkedDecoder::default()),
        };
        if let BodyProgress::Length(n) = progress
            && body.len() >= n
        {
            self.body_done(slot, target, &body[..n]);
            return n;
        }
        if req.expect_continue {
            self.send(slot, Bytes::from_static(http1::CONTINUE_100));
        }
        let conn = self.conns.slot_mut(slot);
        conn.rx
            .get_or_insert_with(|| Box::new(ws::new_rx(conn.phase)))
            .body = Some(PublishBody {
            target,
            progress,
            data: Vec::new(),
        });
        self.body_input(slot, body)
    }

    /// The checks every `POST` route starts with: the method (`405` otherwise) and the
    /// browser's origin (`403`, see `origin_checked`); false once answered.
    pub(super) fn post_allowed(&mut self, slot: u32, req: &Request<'_, '_>) -> bool {
        if req.method != "POST" {
            self.method_not_allowed(slot, "POST");
            return false;
        }
        self.origin_checked(slot, req, true)
    }

    /// The body of a request that was refused before it was read: skipped when its
    /// length is known and already here, else the connection is closed after the answer.
    pub(super) fn skip_body(&mut self, slot: u32, req: &Request<'_, '_>) -> usize {
        match req.body {
            BodyFraming::None | BodyFraming::Length(0) => 0,
            _ => {
                self.close_after_flush(slot);
                0
            }
        }
    }

    /// Feeds body bytes to the publish in progress; returns the bytes consumed.
    fn body_input(&mut self, slot: u32, input: &[u8]) -> usize {
        let max = self.settings.max_publish_bytes;
        let conn = self.conns.slot_mut(slot);
        let Some(rx) = conn.rx.as_mut() else { return 0 };
        let Some(body) = rx.body.as_mut() else {
            return 0;
        };
        let (used, done) = match &mut body.progress {
            BodyProgress::Length(remaining) => {
                let n = input.len().min(*remaining);
                body.data.extend_from_slice(&input[..n]);
                *remaining -= n;
                (n, *remaining == 0)
            }
            BodyProgress::Chunked(decoder) => match decoder.decode(input, &mut body.data, max) {
                Ok(d) => (d.consumed, d.done),
                Err(e) => {
                    rx.body = None;
                    conn.set(flag::HTTP_CLOSE);
                    if e == BodyError::TooLarge {
                        self.limit_hit(slot, Limit::PublishBytes);
                    }
                    self.respond_text(slot, e.status(), &e.to_string());
                    return input.len();
                }
            },
        };
        if done {
            let body = rx.body.take().expect("checked above");
            self.body_done(slot, body.target, &body.data);
        }
        used
    }

    fn body_done(&mut self, slot: u32, target: BodyFor, data: &[u8]) {
        match target {
            BodyFor::Publish(topic) => self.publish(slot, topic, data),
            BodyFor::AmiAction(caller) => {
                let (user, grants) = *caller;
                self.send_action(slot, user, grants, data);
            }
        }
    }

    /// A complete publish: validated, handed to the router, answered when it returns.
    fn publish(&mut self, slot: u32, topic: Box<str>, body: &[u8]) {
        let data = match envelope::data_json(body) {
            Ok(d) => Bytes::copy_from_slice(&d),
            Err(e) => {
                self.respond_text(slot, 400, &format!("publish body: {e}"));
                return;
            }
        };
        let conn = self.conns.slot_mut(slot);
        let reply = ConnRef {
            slot,
            generation: conn.generation,
        };
        if !self.offer_router(ToRouter::Publish { topic, data, reply }) {
            self.metrics.publish_rejected_busy.fetch_add(1, Relaxed);
            self.respond(
                slot,
                503,
                &[("Retry-After", "1")],
                Some("text/plain"),
                b"router busy, retry",
            );
            return;
        }
        self.metrics.publishes.fetch_add(1, Relaxed);
        self.set_phase(slot, Phase::Publishing);
    }

    /// The router sequenced a publish: answer 202 (404 for a direct address that no
    /// shard can hold) and read the next request.
    pub(super) fn published(&mut self, reply: ConnRef, topic: &str, seq: u64, delivered: bool) {
        let Some(conn) = self.conns.get(reply.slot, reply.generation) else {
            return;
        };
        if conn.phase != Phase::Publishing {
            return;
        }
        self.set_phase(reply.slot, Phase::Http);
        if topic::is_direct(topic) && !delivered {
            tracing::debug!(topic, "publish to a malformed direct address");
            self.respond_text(
                reply.slot,
                404,
                "no such direct address (client.<id>, the id as sent in the hello)",
            );
        } else {
            let mut body = Vec::with_capacity(topic.len() + 32);
            envelope::write_publish_ack(&mut body, topic, seq);
            self.respond(reply.slot, 202, &[], Some("application/json"), &body);
        }
        self.resume_input(reply.slot);
    }

    pub(super) fn set_phase(&mut self, slot: u32, phase: Phase) {
        let conn = self.conns.slot_mut(slot);
        self.metrics.phase_change(conn.phase, phase);
        conn.phase = phase;
    }

    // ---- responses ----------------------------------------------------------------

    pub(super) fn respond(
        &mut self,
        slot: u32,
        status: u16,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let close = self.conns.slot_mut(slot).has(flag::HTTP_CLOSE);
        let mut out = Vec::with_capacity(160 + body.len());
        match self.access.cors(slot) {
            None => http1::write_response(&mut out, status, headers, content_type, body, close),
            Some(origin) => {
                let mut all = headers.to_vec();
                all.extend(access::cors_headers(origin));
                http1::write_response(&mut out, status, &all, content_type, body, close);
            }
        }
        self.finish_response(slot, status, out, close);
    }

    fn respond_head_only(&mut self, slot: u32, status: u16, content_type: &str, len: usize) {
        let close = self.conns.slot_mut(slot).has(flag::HTTP_CLOSE);
        let mut out = Vec::with_capacity(160);
        let body = vec![0u8; len];
        http1::write_response(&mut out, status, &[], Some(content_type), &body, close);
        out.truncate(out.len() - len);
        self.finish_response(slot, status, out, close);
    }

    /// Answers a request the client got wrong with `400` and `text`, logged.
    pub(super) fn bad_request(&mut self, slot: u32, text: &str) {
        tracing::debug!(slot, "400: {text}");
        self.respond_text(slot, 400, text);
    }

    pub(super) fn respond_text(&mut self, slot: u32, status: u16, text: &str) {
        let mut body = String::with_capacity(text.len() + 1);
        body.push_str(text);
        body.push('\n');
        self.respond(
            slot,
            status,
            &[],
            Some("text/plain; charset=utf-8"),
            body.as_bytes(),
        );
    }

    pub(super) fn method_not_allowed(&mut self, slot: u32, allow: &str) {
        self.respond(
            slot,
            405,
            &[("Allow", allow)],
            Some("text/plain"),
            b"method not allowed\n",
        );
    }

    fn finish_response(&mut self, slot: u32, status: u16, out: Vec<u8>, close: bool) {
        self.access.clear_cors(slot);
        self.metrics.response(status);
        self.send(slot, Bytes::from(out));
        if close {
            self.close_after_flush(slot);
        } else if self.conns.slot_mut(slot).phase == Phase::Http {
            self.set_deadline(slot, self.settings.request_timeout);
        }
    }
}
