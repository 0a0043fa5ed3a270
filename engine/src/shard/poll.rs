//! Long-poll, `GET /poll?topic=...&since=POS`: a request that subscribes like an SSE
//! stream, is answered at once when the replay after `since` has something, and is
//! otherwise held (phase `Poll`, a deadline on the shard's wheel) until a message
//! arrives or `--poll-timeout` passes. Every answer is `200` with
//! `{"pos":"<position to poll with next>","messages":[...]}`; the subscriptions end
//! with the answer and the connection goes back to reading requests (keep-alive).

use std::sync::atomic::Ordering::Relaxed;

use switchboard_proto::envelope;
use switchboard_proto::http1::Request;
use switchboard_proto::position::Position;

use super::Core;
use super::conn::Phase;
use super::subscribe::{After, query_patterns, query_since};
use crate::pubsub::history::Replay;
use crate::pubsub::link::Message;

impl Core {
    pub(super) fn poll_request(&mut self, slot: u32, req: &Request<'_, '_>) {
        if req.method != "GET" {
            self.method_not_allowed(slot, "GET");
            return;
        }
        if !self.origin_checked(slot, req, true) {
            return;
        }
        let since = match query_since(req.query) {
            Ok(since) => since,
            Err(msg) => return self.bad_request(slot, &msg),
        };
        match query_patterns(req.query) {
            Err(msg) => self.bad_request(slot, &msg),
            Ok(patterns) if patterns.is_empty() => {
                self.bad_request(slot, "give at least one topic: /poll?topic=NAME")
            }
            Ok(patterns) if patterns.len() > self.max_subscriptions() => self.too_many_topics(slot),
            Ok(patterns) => {
                let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
                if !self.subscriber_authorized(slot, req, &refs, false) {
                    return;
                }
                self.set_phase(slot, Phase::Subscribing);
                self.subscribe_then(slot, &refs, After::Poll, since);
            }
        }
    }

    /// The poll's subscriptions are live (router position `gseq`): answer with the
    /// replay if it holds anything, else hold the request.
    pub(super) fn poll_ready(&mut self, slot: u32, gseq: u64, replay: Option<&Replay>) {
        if let Some(r) = replay.filter(|r| !r.resets.is_empty() || !r.messages.is_empty()) {
            let mut items = Vec::with_capacity(r.resets.len() + r.messages.len());
            for (name, seq) in &r.resets {
                let mut json = Vec::with_capacity(name.len() + 48);
                envelope::write_reset(&mut json, name, *seq);
                items.push(json);
            }
            // The answer holds messages up to a byte budget (at least one): when it is
            // cut, its position is that of its last message, so the next poll goes on
            // from there and nothing is lost.
            let budget = self.settings.max_queued_bytes as usize;
            let mut all: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            let (mut bytes, mut pos) = (0, gseq);
            for (i, msg) in r.messages.iter().enumerate() {
                if i > 0 && bytes + msg.envelope.len() > budget {
                    pos = r.messages[i - 1].gseq;
                    break;
                }
                bytes += msg.envelope.len();
                all.push(&msg.envelope[..]);
            }
            let m = &self.metrics;
            m.replayed
                .fetch_add((all.len() - items.len()) as u64, Relaxed);
            m.resets_sent.fetch_add(r.resets.len() as u64, Relaxed);
            m.polls_answered.fetch_add(1, Relaxed);
            self.poll_answer(slot, &all, pos);
            return;
        }
        self.metrics.polls_held.fetch_add(1, Relaxed);
        self.set_phase(slot, Phase::Poll);
        self.conns.slot_mut(slot).poll_gseq = gseq;
        self.set_deadline(slot, self.settings.poll_timeout);
    }

    /// A message for a held poll: answered with it at once.
    pub(super) fn poll_deliver(&mut self, slot: u32, msg: &Message) {
        self.metrics.polls_answered.fetch_add(1, Relaxed);
        self.metrics.deliveries_poll.fetch_add(1, Relaxed);
        self.poll_answer(slot, &[&msg.envelope[..]], msg.gseq);
    }

    /// A held poll reached `--poll-timeout`: answered with no messages and the position
    /// it was held at.
    pub(super) fn poll_expired(&mut self, slot: u32) {
        self.metrics.polls_timed_out.fetch_add(1, Relaxed);
        let gseq = self.conns.slot_mut(slot).poll_gseq;
        self.poll_answer(slot, &[], gseq);
    }

    /// Ends the poll's subscriptions and answers `200` with `items` (JSON values) and
    /// the position `gseq`; then reads the next request.
    fn poll_answer(&mut self, slot: u32, items: &[&[u8]], gseq: u64) {
        self.drop_subscriptions(slot);
        self.set_phase(slot, Phase::Http);
        let pos = Position {
            epoch: self.settings.epoch,
            gseq,
        };
        let len: usize = items.iter().map(|i| i.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 64);
        body.extend_from_slice(b"{\"pos\":\"");
        pos.write(&mut body);
        body.extend_from_slice(b"\",\"messages\":[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        self.respond(
            slot,
            200,
            &[("Cache-Control", "no-store")],
            Some("application/json"),
            &body,
        );
        self.resume_input(slot);
    }
}
