//! Where a client meets a limit: each refusal is counted in
//! `switchboard_limit_hits_total{limit}` and logged (debug) here; the answer itself (a
//! status, a close code, an `error` op) is sent by the handler that found it, except for
//! the limits owned here: connections per source address (counted per shard) and topics
//! per connection in a request.

use std::collections::HashMap;
use std::net::IpAddr;

use switchboard_proto::http1::HeadError;

use super::Core;
use super::conn::flag;
use crate::metrics::{CloseReason, Limit};

/// Whether the answer to `limit` closes the connection (the others answer and go on).
fn closes(limit: Limit) -> bool {
    match limit {
        Limit::HeadBytes
        | Limit::RequestLine
        | Limit::Headers
        | Limit::PublishBytes
        | Limit::WsMessageBytes
        | Limit::ConnsPerIp => true,
        Limit::Subscriptions | Limit::TopicsPerOp => false,
    }
}

/// Single-shot accepts kept armed when connections per address are limited (each
/// needs its own address buffer, so the multishot accept cannot be used).
pub(super) const PEER_ACCEPT_DEPTH: u32 = 16;

/// Connections per source address on this shard, kept only with `--max-conns-per-ip`.
#[derive(Debug, Default)]
pub(super) struct PerIp {
    counts: HashMap<IpAddr, u32>,
    /// The address each counted connection was accepted from.
    by_slot: HashMap<u32, IpAddr>,
}

impl PerIp {
    /// Counts a connection from `ip` in `slot` unless `ip` already holds `max`.
    fn admit(&mut self, slot: u32, ip: IpAddr, max: u32) -> bool {
        let count = self.counts.entry(ip).or_default();
        if *count >= max {
            if *count == 0 {
                self.counts.remove(&ip);
            }
            return false;
        }
        *count += 1;
        self.by_slot.insert(slot, ip);
        true
    }

    /// The connection in `slot` is gone: its address holds one connection less.
    pub(super) fn release(&mut self, slot: u32) {
        let Some(ip) = self.by_slot.remove(&slot) else {
            return;
        };
        if let Some(count) = self.counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&ip);
            }
        }
    }
}

/// The limit a refused request head ran into, if it was a limit rather than a mistake.
pub(super) fn head_limit(e: &HeadError) -> Option<Limit> {
    match e {
        HeadError::UriTooLong => Some(Limit::RequestLine),
        HeadError::HeadTooLarge => Some(Limit::HeadBytes),
        HeadError::TooManyHeaders => Some(Limit::Headers),
        _ => None,
    }
}

impl Core {
    /// Counts and logs one refusal for `limit`; a connection it closes counts as closed
    /// for a limit.
    pub(super) fn limit_hit(&mut self, slot: u32, limit: Limit) {
        if closes(limit) {
            self.conns.slot_mut(slot).close_because(CloseReason::Limit);
        }
        tracing::debug!(slot, limit = limit.name(), "limit reached");
        self.metrics.limit_hit(limit);
    }

    /// Subscriptions one connection may hold (`--max-subscriptions`).
    pub(super) fn max_subscriptions(&self) -> usize {
        usize::from(self.settings.max_subscriptions)
    }

    /// A connection just accepted from `ip`: counted, or, past `--max-conns-per-ip`,
    /// answered `429` and closed without reading a request.
    pub(super) fn admit_peer(&mut self, slot: u32, ip: IpAddr) {
        let max = self.settings.max_conns_per_ip;
        if self.per_ip.admit(slot, ip, max) {
            return;
        }
        tracing::debug!(slot, %ip, "more than {max} connections from one address");
        self.limit_hit(slot, Limit::ConnsPerIp);
        let conn = self.conns.slot_mut(slot);
        conn.set(flag::HTTP_CLOSE);
        conn.close_because(CloseReason::Limit);
        self.respond_text(slot, 429, &format!("at most {max} connections per address"));
    }

    /// A request asked for more topics than a connection may hold: `400`, counted.
    pub(super) fn too_many_topics(&mut self, slot: u32) {
        self.limit_hit(slot, Limit::Subscriptions);
        let max = self.max_subscriptions();
        self.bad_request(slot, &format!("at most {max} topics per connection"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_admit_up_to_the_maximum_and_release_by_slot() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let mut p = PerIp::default();
        assert!(p.admit(1, a, 2));
        assert!(p.admit(2, a, 2));
        assert!(!p.admit(3, a, 2), "a third from the same address");
        assert!(p.admit(3, b, 2), "another address has its own count");
        p.release(3);
        p.release(3); // a slot released twice counts once
        p.release(7); // never counted
        assert_eq!(p.counts.get(&b), None);
        p.release(1);
        assert!(p.admit(4, a, 2), "room again after a release");
        p.release(2);
        p.release(4);
        assert!(p.counts.is_empty() && p.by_slot.is_empty());
    }

    #[test]
    fn only_size_and_count_errors_are_limits() {
        assert_eq!(head_limit(&HeadError::UriTooLong), Some(Limit::RequestLine));
        assert_eq!(head_limit(&HeadError::HeadTooLarge), Some(Limit::HeadBytes));
        assert_eq!(head_limit(&HeadError::TooManyHeaders), Some(Limit::Headers));
        assert_eq!(head_limit(&HeadError::Malformed), None);
        assert_eq!(head_limit(&HeadError::BadHost), None);
    }
}
