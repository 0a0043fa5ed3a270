//! The router's memory of topics: each topic's sequence number and a bounded ring of its
//! last messages (already encoded, shared `Arc<Message>`s, so a replay encodes nothing),
//! and the replay of what a set of patterns had after a position. Everything here is
//! bounded: `size` messages and `ttl` per topic, `topics` topics. Owned by the router
//! thread alone; pure logic (the caller passes the time), unit-tested below.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::link::Message;

/// How much history the router keeps.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Messages kept per topic (0: none).
    pub size: usize,
    /// Age after which a message leaves history (`None`: no age limit).
    pub ttl: Option<Duration>,
    /// Topics the router remembers at most (sequence number and history); past it the
    /// topic published least recently is forgotten.
    pub topics: usize,
}

/// Most messages one replay hands a connection; older ones are cut and reported with a
/// `reset` for their topic (a subtree with many busy topics could otherwise queue
/// `topics x size` messages at once).
pub const MAX_REPLAY_MESSAGES: usize = 4096;

#[derive(Debug)]
struct Retained {
    at: Instant,
    msg: Arc<Message>,
}

#[derive(Debug, Default)]
struct TopicState {
    /// The last sequence number given.
    seq: u64,
    /// Router-wide sequence number of the topic's last message (its key in `lru`).
    last_gseq: u64,
    /// Router-wide sequence number of the newest message that left the ring (or was
    /// never kept): a client whose position is older has missed it.
    evicted_gseq: u64,
    ring: VecDeque<Retained>,
}

/// A subscription pattern as the router sees it: a topic, or the prefix of a subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pattern<'a> {
    pub name: &'a str,
    pub subtree: bool,
}

impl Pattern<'_> {
    fn text(&self) -> Box<str> {
        if self.subtree {
            format!("{}.*", self.name).into()
        } else {
            self.name.into()
        }
    }
}

/// What a resuming subscriber gets: resets first, then messages in publish order.
#[derive(Debug, Default)]
pub struct Replay {
    /// `(topic or pattern, the topic's last seq if known)`, each name once.
    pub resets: Vec<(Box<str>, Option<u64>)>,
    pub messages: Vec<Arc<Message>>,
}

pub struct History {
    limits: HistoryLimits,
    topics: BTreeMap<Box<str>, TopicState>,
    /// Topics by the router-wide sequence number of their last message: the first is
    /// the one published least recently.
    lru: BTreeMap<u64, Box<str>>,
    /// The newest router-wide sequence number of any topic forgotten so far: a position
    /// older than this may have missed messages of a topic the router no longer knows.
    forgotten_gseq: u64,
    /// Messages retained over all topics.
    retained: usize,
    /// Topics forgotten because the `topics` limit was reached.
    pub evicted_topics: u64,
}

impl History {
    pub fn new(limits: HistoryLimits) -> History {
        History {
            limits: HistoryLimits {
                topics: limits.topics.max(1),
                ..limits
            },
            topics: BTreeMap::new(),
            lru: BTreeMap::new(),
            forgotten_gseq: 0,
            retained: 0,
            evicted_topics: 0,
        }
    }

    /// Topics remembered.
    pub fn topics(&self) -> usize {
        self.topics.len()
    }

    /// The last sequence number `topic` was given (0: none, or forgotten).
    pub fn last_seq(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, |t| t.seq)
    }

    /// Messages retained over all topics.
    pub fn retained(&self) -> usize {
        self.retained
    }

    /// Sequences the message with router-wide number `gseq` on `topic`: `make` builds it
    /// from its per-topic `seq`; it is kept in the topic's ring (oldest out first).
    pub fn publish(
        &mut self,
        topic: &str,
        gseq: u64,
        now: Instant,
        make: impl FnOnce(u64) -> Message,
    ) -> Arc<Message> {
        if !self.topics.contains_key(topic) {
            if self.topics.len() >= self.limits.topics
                && let Some((_, oldest)) = self.lru.pop_first()
            {
                self.evicted_topics += 1;
                self.forget(&oldest);
            }
            self.topics.insert(topic.into(), TopicState::default());
            self.lru.insert(gseq, topic.into());
        }
        let state = self.topics.get_mut(topic).expect("inserted above");
        if state.last_gseq != 0
            && let Some(name) = self.lru.remove(&state.last_gseq)
        {
            self.lru.insert(gseq, name);
        }
        state.last_gseq = gseq;
        state.seq += 1;
        let msg = Arc::new(make(state.seq));
        self.retained -= expire(state, self.limits.ttl, now);
        if self.limits.size == 0 {
            state.evicted_gseq = gseq;
            return msg;
        }
        if state.ring.len() == self.limits.size
            && let Some(old) = state.ring.pop_front()
        {
            state.evicted_gseq = old.msg.gseq;
            self.retained -= 1;
        }
        state.ring.push_back(Retained {
            at: now,
            msg: msg.clone(),
        });
        self.retained += 1;
        msg
    }

    /// Drops messages past their age, then forgets every topic with nothing retained
    /// that `wanted` (a subscriber's interest) does not keep. Runs periodically.
    pub fn sweep(&mut self, now: Instant, wanted: impl Fn(&str) -> bool) {
        let mut gone = Vec::new();
        for (name, state) in self.topics.iter_mut() {
            self.retained -= expire(state, self.limits.ttl, now);
            if state.ring.is_empty() && !wanted(name) {
                gone.push(name.clone());
            }
        }
        for name in gone {
            self.forget(&name);
        }
    }

    fn forget(&mut self, name: &str) {
        if let Some(state) = self.topics.remove(name) {
            self.lru.remove(&state.last_gseq);
            self.retained -= state.ring.len();
            self.forgotten_gseq = self.forgotten_gseq.max(state.last_gseq);
        }
    }

    /// What `patterns` had after router-wide position `since` (`None`: a position of
    /// another server instance, so nothing can be vouched for): a reset for each topic
    /// whose messages after `since` are no longer all retained (and for each pattern
    /// when a topic it may cover was forgotten), then every retained message after
    /// `since`, once each, in publish order, at most [`MAX_REPLAY_MESSAGES`].
    pub fn replay(&mut self, patterns: &[Pattern<'_>], since: Option<u64>, now: Instant) -> Replay {
        let mut out = Replay::default();
        let after = since.unwrap_or(0);
        if since.is_none_or(|g| self.forgotten_gseq > g) {
            for p in patterns {
                let seq = (!p.subtree)
                    .then(|| self.topics.get(p.name).map(|t| t.seq))
                    .flatten();
                out.resets.push((p.text(), seq));
            }
        }
        let ttl = self.limits.ttl;
        let mut retained = self.retained;
        let mut visit = |name: &str, state: &mut TopicState, out: &mut Replay| {
            retained -= expire(state, ttl, now);
            if since.is_some() && state.evicted_gseq > after {
                out.resets.push((name.into(), Some(state.seq)));
            }
            out.messages.extend(
                state
                    .ring
                    .iter()
                    .filter(|r| r.msg.gseq > after)
                    .map(|r| r.msg.clone()),
            );
        };
        for p in patterns {
            if p.subtree {
                let start = format!("{}.", p.name);
                let range = self
                    .topics
                    .range_mut::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded));
                for (name, state) in range {
                    if !name.starts_with(&start) {
                        break;
                    }
                    visit(name, state, &mut out);
                }
            } else if let Some(state) = self.topics.get_mut(p.name) {
                visit(p.name, state, &mut out);
            }
        }
        self.retained = retained;
        out.messages.sort_by_key(|m| m.gseq);
        out.messages.dedup_by_key(|m| m.gseq);
        if out.messages.len() > MAX_REPLAY_MESSAGES {
            let cut = out.messages.len() - MAX_REPLAY_MESSAGES;
            for m in out.messages.drain(..cut) {
                let seq = self.topics.get(&*m.topic).map(|t| t.seq);
                out.resets.push((m.topic.clone(), seq));
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.resets.retain(|(name, _)| seen.insert(name.clone()));
        out
    }
}

/// Drops the messages of `state` older than `ttl`; returns how many.
fn expire(state: &mut TopicState, ttl: Option<Duration>, now: Instant) -> usize {
    let Some(ttl) = ttl else { return 0 };
    let mut dropped = 0;
    while let Some(first) = state.ring.front() {
        if now.saturating_duration_since(first.at) < ttl {
            break;
        }
        state.evicted_gseq = first.msg.gseq;
        state.ring.pop_front();
        dropped += 1;
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn limits(size: usize, ttl_s: u64, topics: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: (ttl_s > 0).then(|| Duration::from_secs(ttl_s)),
            topics,
        }
    }

    struct Bench {
        h: History,
        gseq: u64,
        t0: Instant,
    }

    impl Bench {
        fn new(l: HistoryLimits) -> Bench {
            Bench {
                h: History::new(l),
                gseq: 0,
                t0: Instant::now(),
            }
        }

        /// Publishes on `topic` at `at_s` seconds; returns `(seq, gseq)`.
        fn publish(&mut self, topic: &str, at_s: u64) -> (u64, u64) {
            self.gseq += 1;
            let gseq = self.gseq;
            let m = self
                .h
                .publish(topic, gseq, self.t0 + Duration::from_secs(at_s), |seq| {
                    Message {
                        topic: topic.into(),
                        seq,
                        gseq,
                        ws_frame: Bytes::new(),
                        sse_event: Bytes::new(),
                        envelope: Bytes::new(),
                    }
                });
            (m.seq, m.gseq)
        }

        fn replay(&mut self, patterns: &[&str], since: Option<u64>, at_s: u64) -> Replay {
            let ps: Vec<Pattern<'_>> = patterns
                .iter()
                .map(|p| match p.strip_suffix(".*") {
                    Some(name) => Pattern {
                        name,
                        subtree: true,
                    },
                    None => Pattern {
                        name: p,
                        subtree: false,
                    },
                })
                .collect();
            self.h
                .replay(&ps, since, self.t0 + Duration::from_secs(at_s))
        }
    }

    fn seqs(r: &Replay) -> Vec<(String, u64)> {
        r.messages
            .iter()
            .map(|m| (m.topic.to_string(), m.seq))
            .collect()
    }

    #[test]
    fn replays_every_topic_after_a_position_in_publish_order_once() {
        let mut b = Bench::new(limits(8, 0, 100));
        b.publish("a", 0);
        let (_, since) = b.publish("x.one", 0);
        b.publish("a", 0);
        b.publish("x.two.deep", 0);
        b.publish("xy", 0);
        b.publish("x", 0);
        let r = b.replay(&["a", "x.*", "x.one"], Some(since), 0);
        assert!(r.resets.is_empty(), "{:?}", r.resets);
        assert_eq!(
            seqs(&r),
            vec![("a".into(), 2), ("x.two.deep".into(), 1)],
            "after the position only; `x.*` excludes `x` and `xy`; overlaps once"
        );
        assert!(b.replay(&["a"], Some(b.gseq), 0).messages.is_empty());
    }

    #[test]
    fn a_position_older_than_the_ring_gets_a_reset_then_what_is_left() {
        let mut b = Bench::new(limits(3, 0, 100));
        for _ in 0..5 {
            b.publish("a", 0);
        }
        b.publish("b", 0);
        let r = b.replay(&["a", "b"], Some(1), 0);
        assert_eq!(r.resets, vec![("a".into(), Some(5))]);
        assert_eq!(
            seqs(&r),
            vec![
                ("a".into(), 3),
                ("a".into(), 4),
                ("a".into(), 5),
                ("b".into(), 1)
            ]
        );
        // A position at the oldest evicted message's successor is still complete.
        assert!(b.replay(&["a"], Some(2), 0).resets.is_empty());
        assert_eq!(b.h.retained(), 4);
    }

    #[test]
    fn messages_expire_after_the_ttl() {
        let mut b = Bench::new(limits(10, 60, 100));
        b.publish("a", 0);
        b.publish("a", 50);
        let r = b.replay(&["a"], Some(0), 70);
        assert_eq!(r.resets, vec![("a".into(), Some(2))]);
        assert_eq!(seqs(&r), vec![("a".into(), 2)]);
        assert_eq!(b.h.retained(), 1);
    }

    #[test]
    fn sweep_forgets_empty_unwanted_topics_and_later_resumes_reset() {
        let mut b = Bench::new(limits(10, 60, 100));
        b.publish("a.x", 0);
        b.publish("keep", 0);
        b.h.sweep(b.t0 + Duration::from_secs(100), |t| t == "keep");
        assert_eq!(b.h.topics(), 1, "`keep` is wanted, `a.x` is forgotten");
        assert_eq!(b.publish("a.x", 100).0, 1, "a forgotten topic starts again");
        let r = b.replay(&["a.*"], Some(0), 100);
        assert_eq!(r.resets[0], ("a.*".into(), None));
        assert_eq!(seqs(&r), vec![("a.x".into(), 1)]);
        // A position newer than everything forgotten owes no reset.
        let now = b.gseq;
        assert!(b.replay(&["a.*"], Some(now), 100).resets.is_empty());
    }

    #[test]
    fn the_topic_limit_forgets_the_least_recently_published() {
        let mut b = Bench::new(limits(4, 0, 2));
        b.publish("a", 0);
        b.publish("b", 0);
        b.publish("a", 0);
        b.publish("c", 0);
        assert_eq!(b.h.topics(), 2);
        assert_eq!(b.h.evicted_topics, 1);
        assert_eq!(b.publish("a", 0).0, 3, "`a` was kept");
        assert_eq!(b.publish("b", 0).0, 1, "`b` was forgotten");
        assert_eq!(b.h.retained(), 4, "a:3 and b:1, c was forgotten with its 1");
    }

    #[test]
    fn no_history_means_every_missed_message_is_a_reset() {
        let mut b = Bench::new(limits(0, 0, 100));
        b.publish("a", 0);
        b.publish("a", 0);
        let r = b.replay(&["a"], Some(1), 0);
        assert_eq!(r.resets, vec![("a".into(), Some(2))]);
        assert!(r.messages.is_empty());
        assert!(b.replay(&["a"], Some(2), 0).resets.is_empty());
    }

    #[test]
    fn a_foreign_position_resets_every_pattern_and_replays_all() {
        let mut b = Bench::new(limits(4, 0, 100));
        b.publish("a", 0);
        b.publish("q.r", 0);
        let r = b.replay(&["a", "q.*"], None, 0);
        assert_eq!(r.resets, vec![("a".into(), Some(1)), ("q.*".into(), None)]);
        assert_eq!(seqs(&r).len(), 2);
    }

    #[test]
    fn long_replays_are_cut_to_the_newest_with_a_reset() {
        let mut b = Bench::new(limits(MAX_REPLAY_MESSAGES, 0, 100));
        b.publish("old", 0);
        for _ in 0..MAX_REPLAY_MESSAGES {
            b.publish("new", 0);
        }
        let r = b.replay(&["old", "new"], Some(0), 0);
        assert_eq!(r.messages.len(), MAX_REPLAY_MESSAGES);
        assert_eq!(r.resets, vec![("old".into(), Some(1))]);
        assert_eq!(r.messages[0].topic.as_ref(), "new");
    }
}
