//! The router's memory of topics: each topic's sequence number and a bounded ring of its
//! last messages (already encoded, shared `Arc<Message>`s, so a replay encodes nothing),
//! and the replay of what a set of patterns had after a position. Everything here is
//! bounded: `size` messages and `ttl` per topic, `topics` topics, and `bytes` over all
//! topics (the router-wide oldest message leaves first). Owned by the router thread
//! alone; pure logic (the caller passes the time), unit-tested below.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use switchboard_proto::topic;

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
    /// Bytes retained over all topics at most (each message counted by [`cost`]); past
    /// it the oldest message of the whole router leaves first (0: no history).
    pub bytes: usize,
}

/// Most messages one replay hands a connection; older ones are cut and reported with a
/// `reset` for their topic (a subtree with many busy topics could otherwise queue
/// `topics x size` messages at once).
pub const MAX_REPLAY_MESSAGES: usize = 4096;

/// What a retained message costs beyond its bytes (frame, event, topic name), on a 64-bit
/// target: the `Arc`'s counters (16) and the `Message` (128: the topic's box, two
/// numbers, three `Bytes`), the ring slot (24: time and pointer), the publish-order
/// entry (8), and the heap blocks behind the topic name and the two buffers (the shared
/// header `Bytes` puts in front of a sliced buffer, and the allocator's own per-block
/// overhead: ~80). Rounded up; a unit test checks the in-memory parts fit.
pub const MESSAGE_OVERHEAD: usize = 256;

/// Recently forgotten topics remembered by name, so that a resume is reset only for the
/// patterns that could match one; past it, the oldest is dropped into `forgotten_floor`
/// and every resume from before it is reset for all its patterns.
pub const FORGOTTEN_KEPT: usize = 4096;

/// Publish-order entries allowed beyond twice the retained messages before the stale ones
/// are dropped (amortised: a compaction after at least this many publishes).
const ORDER_SLACK: usize = 1024;

/// What a retained message counts against [`HistoryLimits::bytes`]. `envelope` is a slice
/// of `ws_frame`'s bytes, so it is not counted again.
pub fn cost(msg: &Message) -> usize {
    msg.ws_frame.len() + msg.sse_event.len() + msg.topic.len() + MESSAGE_OVERHEAD
}

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

/// What the rings hold over all topics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    messages: usize,
    /// Sum of [`cost`].
    bytes: usize,
}

impl Usage {
    fn add(&mut self, msg: &Message) {
        self.messages += 1;
        self.bytes += cost(msg);
    }

    fn remove(&mut self, msg: &Message) {
        self.messages -= 1;
        self.bytes -= cost(msg);
    }
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

    /// Whether topic `name` is this topic or lies below this subtree (the protocol's
    /// rule).
    fn matches(&self, name: &str) -> bool {
        if self.subtree {
            topic::Pattern::Subtree(self.name).matches(name)
        } else {
            topic::Pattern::Exact(self.name).matches(name)
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
    /// Every retained message in publish order (gseq increasing), plus stale entries for
    /// messages that already left their ring another way (size, age, a forgotten topic):
    /// those are skipped when met, and dropped all at once when they outnumber the live
    /// ones (see `compact_order`). A `Weak` costs
    /// no allocation per publish, and names the topic while the message lives.
    order: VecDeque<Weak<Message>>,
    /// Recently forgotten topics, oldest first: `(name, router-wide sequence number of
    /// its last message)`, at most [`FORGOTTEN_KEPT`].
    forgotten: VecDeque<(Box<str>, u64)>,
    /// The newest last sequence number of the topics dropped from `forgotten`: a
    /// position older than this may have missed messages of a topic no longer known by
    /// name, for any pattern.
    forgotten_floor: u64,
    usage: Usage,
    /// Topics forgotten because the `topics` limit was reached.
    pub evicted_topics: u64,
    /// Messages that left history because of the `bytes` limit.
    pub budget_evictions: u64,
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
            order: VecDeque::new(),
            forgotten: VecDeque::new(),
            forgotten_floor: 0,
            usage: Usage::default(),
            evicted_topics: 0,
            budget_evictions: 0,
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
        self.usage.messages
    }

    /// Bytes retained over all topics (the sum of [`cost`]).
    pub fn retained_bytes(&self) -> usize {
        self.usage.bytes
    }

    /// Sequences the message with router-wide number `gseq` on `topic`: `make` builds it
    /// from its per-topic `seq`; it is kept in the topic's ring (oldest out first), then
    /// the router-wide oldest messages leave until the byte budget holds again.
    pub fn publish(
        &mut self,
        topic: &str,
        gseq: u64,
        now: Instant,
        make: impl FnOnce(u64) -> Message,
    ) -> Arc<Message> {
        // One lookup for a known topic (names are long and alike: `ami.call.<id>`).
        let state = match self.topics.get_mut(topic) {
            Some(state) => {
                if let Some(name) = self.lru.remove(&state.last_gseq) {
                    self.lru.insert(gseq, name);
                }
                state
            }
            None => {
                if self.topics.len() >= self.limits.topics
                    && let Some((_, oldest)) = self.lru.pop_first()
                {
                    self.evicted_topics += 1;
                    self.forget(&oldest);
                }
                self.lru.insert(gseq, topic.into());
                self.topics.entry(topic.into()).or_default()
            }
        };
        state.last_gseq = gseq;
        state.seq += 1;
        let msg = Arc::new(make(state.seq));
        expire(state, self.limits.ttl, now, &mut self.usage);
        if self.limits.size == 0 {
            state.evicted_gseq = gseq;
            return msg;
        }
        if cost(&msg) > self.limits.bytes {
            // It would leave at once, after every older message: keep those instead.
            state.evicted_gseq = gseq;
            self.budget_evictions += 1;
            return msg;
        }
        if state.ring.len() == self.limits.size {
            pop_oldest(state, &mut self.usage);
        }
        msg.in_history.store(true, Relaxed);
        state.ring.push_back(Retained {
            at: now,
            msg: msg.clone(),
        });
        self.usage.add(&msg);
        self.order.push_back(Arc::downgrade(&msg));
        self.enforce_budget();
        if self.order.len() > 2 * self.usage.messages + ORDER_SLACK {
            self.compact_order();
        }
        msg
    }

    /// Evicts the router-wide oldest retained messages while the bytes retained exceed
    /// the budget. `order` holds every retained message in gseq order, so its first live
    /// entry (a message still in its ring: [`Message::in_history`]) is the oldest
    /// retained message of all, and it is at the front of its own ring, since any older
    /// message of its topic still in the ring would have an earlier, live entry.
    /// Stale entries are skipped.
    fn enforce_budget(&mut self) {
        while self.usage.bytes > self.limits.bytes {
            let Some(entry) = self.order.pop_front() else {
                break;
            };
            let Some(msg) = entry.upgrade().filter(|m| m.in_history.load(Relaxed)) else {
                continue;
            };
            let Some(state) = self.topics.get_mut(&*msg.topic) else {
                continue;
            };
            if state.ring.front().is_some_and(|r| r.msg.gseq == msg.gseq) {
                pop_oldest(state, &mut self.usage);
                self.budget_evictions += 1;
            }
        }
    }

    /// Drops the stale entries of `order` (messages no longer in their ring), keeping
    /// the live ones in order.
    fn compact_order(&mut self) {
        self.order
            .retain(|entry| entry.upgrade().is_some_and(|m| m.in_history.load(Relaxed)));
    }

    /// Drops messages past their age, then forgets every topic with nothing retained
    /// that `wanted` (a subscriber's interest) does not keep. Runs periodically.
    pub fn sweep(&mut self, now: Instant, wanted: impl Fn(&str) -> bool) {
        let mut gone = Vec::new();
        for (name, state) in self.topics.iter_mut() {
            expire(state, self.limits.ttl, now, &mut self.usage);
            if state.ring.is_empty() && !wanted(name) {
                gone.push(name.clone());
            }
        }
        for name in gone {
            self.forget(&name);
        }
    }

    /// Forgets a topic and its history, remembering its name for later resumes.
    fn forget(&mut self, name: &str) {
        let Some((name, state)) = self.topics.remove_entry(name) else {
            return;
        };
        self.lru.remove(&state.last_gseq);
        for r in &state.ring {
            r.msg.in_history.store(false, Relaxed);
            self.usage.remove(&r.msg);
        }
        self.forgotten.push_back((name, state.last_gseq));
        if self.forgotten.len() > FORGOTTEN_KEPT
            && let Some((_, last_gseq)) = self.forgotten.pop_front()
        {
            self.forgotten_floor = self.forgotten_floor.max(last_gseq);
        }
    }

    /// What `patterns` had after router-wide position `since` (`None`: a position of
    /// another server instance, so nothing can be vouched for): a reset for each topic
    /// whose messages after `since` are no longer all retained (and for each pattern
    /// that may cover a topic forgotten since), then every retained message after
    /// `since`, once each, in publish order, at most [`MAX_REPLAY_MESSAGES`].
    pub fn replay(&mut self, patterns: &[Pattern<'_>], since: Option<u64>, now: Instant) -> Replay {
        let mut out = Replay::default();
        let after = since.unwrap_or(0);
        // Topics forgotten after the position, by name (few, for a recent position).
        let lost: Vec<&str> = self
            .forgotten
            .iter()
            .filter(|(_, last_gseq)| *last_gseq > after)
            .map(|(name, _)| &**name)
            .collect();
        let lost_track = since.is_none_or(|g| self.forgotten_floor > g);
        for p in patterns {
            if lost_track || lost.iter().any(|name| p.matches(name)) {
                let seq = (!p.subtree)
                    .then(|| self.topics.get(p.name).map(|t| t.seq))
                    .flatten();
                out.resets.push((p.text(), seq));
            }
        }
        let ttl = self.limits.ttl;
        let usage = &mut self.usage;
        let mut visit = |name: &str, state: &mut TopicState, out: &mut Replay| {
            expire(state, ttl, now, usage);
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

/// Drops the messages of `state` older than `ttl`, counting them out of `usage`.
fn expire(state: &mut TopicState, ttl: Option<Duration>, now: Instant, usage: &mut Usage) {
    let Some(ttl) = ttl else { return };
    while state
        .ring
        .front()
        .is_some_and(|first| now.saturating_duration_since(first.at) >= ttl)
    {
        pop_oldest(state, usage);
    }
}

/// Drops the oldest message of `state`'s ring (if any), which a position from before it
/// has now missed, counting it out of `usage`.
fn pop_oldest(state: &mut TopicState, usage: &mut Usage) {
    if let Some(old) = state.ring.pop_front() {
        old.msg.in_history.store(false, Relaxed);
        state.evicted_gseq = old.msg.gseq;
        usage.remove(&old.msg);
    }
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
            bytes: usize::MAX,
        }
    }

    /// The frame length of the messages the budget tests publish.
    const FRAME: usize = 100;

    /// What one message of [`FRAME`] bytes on a one-letter topic costs.
    const COST: usize = FRAME + 1 + MESSAGE_OVERHEAD;

    impl History {
        /// `usage` recounted from the rings.
        fn recount(&self) -> Usage {
            let mut usage = Usage::default();
            for state in self.topics.values() {
                for r in &state.ring {
                    usage.add(&r.msg);
                }
            }
            usage
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
            self.publish_sized(topic, at_s, 0)
        }

        /// Publishes a message whose WebSocket frame is `frame` bytes long.
        fn publish_sized(&mut self, topic: &str, at_s: u64, frame: usize) -> (u64, u64) {
            self.gseq += 1;
            let gseq = self.gseq;
            let m = self
                .h
                .publish(topic, gseq, self.t0 + Duration::from_secs(at_s), |seq| {
                    Message {
                        topic: topic.into(),
                        seq,
                        gseq,
                        ws_frame: Bytes::from(vec![b'x'; frame]),
                        sse_event: Bytes::new(),
                        envelope: Bytes::new(),
                        in_history: Default::default(),
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

    #[test]
    fn the_overhead_covers_what_a_retained_message_holds_in_memory() {
        let arc_counters = 2 * std::mem::size_of::<usize>();
        let held = arc_counters
            + std::mem::size_of::<Message>()
            + std::mem::size_of::<Retained>()
            + std::mem::size_of::<Weak<Message>>();
        assert!(held <= MESSAGE_OVERHEAD, "{held}");
    }

    #[test]
    fn the_byte_budget_holds_after_every_publish_expiry_sweep_and_replay() {
        let budget = 10 * COST;
        let mut b = Bench::new(HistoryLimits {
            bytes: budget,
            ..limits(8, 60, 5)
        });
        let names = ["a", "b.c", "b.d", "e", "f", "g"];
        for i in 0..2000_usize {
            let at = i as u64 / 20;
            b.publish_sized(names[i / 3 % names.len()], at, i % 300);
            assert!(b.h.retained_bytes() <= budget, "after publish {i}");
            assert_eq!(b.h.usage, b.h.recount(), "after publish {i}");
            if i % 50 == 0 {
                b.h.sweep(b.t0 + Duration::from_secs(at), |t| t == "a");
                assert_eq!(b.h.usage, b.h.recount(), "after sweep {i}");
            }
            if i % 70 == 0 {
                b.replay(&["b.*", "a"], Some(b.gseq / 2), at + 30);
                assert_eq!(b.h.usage, b.h.recount(), "after replay {i}");
            }
        }
        assert!(b.h.budget_evictions > 0);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_message_of_the_router_first() {
        let mut b = Bench::new(HistoryLimits {
            bytes: 3 * COST + 10,
            ..limits(8, 0, 100)
        });
        b.publish_sized("a", 0, FRAME);
        b.publish_sized("b", 0, FRAME);
        b.publish_sized("a", 0, FRAME);
        assert_eq!(b.h.budget_evictions, 0);
        b.publish_sized("c", 0, FRAME);
        assert_eq!(b.h.budget_evictions, 1);
        assert_eq!((b.h.retained(), b.h.retained_bytes()), (3, 3 * COST));
        let r = b.replay(&["a", "b", "c"], Some(0), 0);
        assert_eq!(r.resets, vec![("a".into(), Some(2))], "the first `a` went");
        assert_eq!(
            seqs(&r),
            vec![("b".into(), 1), ("a".into(), 2), ("c".into(), 1)]
        );
        assert!(b.replay(&["a", "b", "c"], Some(1), 0).resets.is_empty());
    }

    #[test]
    fn the_byte_budget_skips_messages_that_already_left_their_ring() {
        let mut b = Bench::new(HistoryLimits {
            bytes: 3 * COST,
            ..limits(2, 0, 100)
        });
        for _ in 0..3 {
            b.publish_sized("a", 0, FRAME); // a:1 leaves by the size limit
        }
        b.publish_sized("b", 0, FRAME);
        assert_eq!(b.h.budget_evictions, 0);
        b.publish_sized("c", 0, FRAME);
        assert_eq!(b.h.budget_evictions, 1, "a:2, not the stale a:1 nor b:1");
        let r = b.replay(&["a", "b", "c"], Some(0), 0);
        assert_eq!(r.resets, vec![("a".into(), Some(3))]);
        assert_eq!(
            seqs(&r),
            vec![("a".into(), 3), ("b".into(), 1), ("c".into(), 1)]
        );
    }

    #[test]
    fn a_message_over_the_whole_budget_is_not_kept_and_evicts_nothing() {
        let mut b = Bench::new(HistoryLimits {
            bytes: 3 * COST,
            ..limits(8, 0, 100)
        });
        b.publish_sized("a", 0, FRAME);
        b.publish_sized("b", 0, 3 * COST);
        assert_eq!((b.h.retained(), b.h.budget_evictions), (1, 1));
        let r = b.replay(&["a", "b"], Some(0), 0);
        assert_eq!(r.resets, vec![("b".into(), Some(1))]);
        assert_eq!(seqs(&r), vec![("a".into(), 1)]);
    }

    #[test]
    fn a_zero_byte_budget_keeps_nothing_and_resets() {
        let mut b = Bench::new(HistoryLimits {
            bytes: 0,
            ..limits(8, 0, 100)
        });
        b.publish_sized("a", 0, FRAME);
        b.publish_sized("a", 0, FRAME);
        assert_eq!((b.h.retained(), b.h.retained_bytes()), (0, 0));
        let r = b.replay(&["a"], Some(1), 0);
        assert_eq!(r.resets, vec![("a".into(), Some(2))]);
        assert!(r.messages.is_empty());
    }

    #[test]
    fn stale_publish_order_entries_do_not_pile_up() {
        let mut b = Bench::new(limits(4, 0, 100));
        for _ in 0..100_000 {
            b.publish("a", 0);
            assert!(b.h.order.len() <= 2 * 4 + ORDER_SLACK + 1);
        }
        assert_eq!(b.h.retained(), 4);
    }

    #[test]
    fn a_forgotten_topic_resets_only_the_patterns_that_cover_it() {
        let mut b = Bench::new(limits(8, 0, 2));
        b.publish("y", 0);
        let (_, since) = b.publish("x.1", 0);
        b.publish("x.1", 0);
        b.publish("y", 0);
        b.publish("z", 0); // forgets `x.1`, published least recently
        assert_eq!((b.h.topics(), b.h.evicted_topics), (2, 1));
        for unrelated in [&["y"][..], &["y.*"], &["x"], &["x.1.*"], &["xx.*"]] {
            let r = b.replay(unrelated, Some(since), 0);
            assert!(r.resets.is_empty(), "{unrelated:?}: {:?}", r.resets);
        }
        assert_eq!(
            seqs(&b.replay(&["y"], Some(since), 0)),
            vec![("y".into(), 2)]
        );
        for (pattern, reset) in [("x.*", ("x.*", None)), ("x.1", ("x.1", None))] {
            let r = b.replay(&[pattern, "y"], Some(since), 0);
            assert_eq!(r.resets, vec![(reset.0.into(), reset.1)], "{pattern}");
        }
        let after = since + 1;
        assert!(b.replay(&["x.*"], Some(after), 0).resets.is_empty());
    }

    #[test]
    fn past_the_forgotten_topics_kept_every_older_resume_resets() {
        let mut b = Bench::new(limits(8, 0, 1));
        for i in 0..=FORGOTTEN_KEPT {
            b.publish(&format!("f.{i}"), 0); // forgets the previous one
        }
        b.publish("g", 0); // forgets the last `f`: `f.0` leaves the ring
        assert_eq!(b.h.forgotten.len(), FORGOTTEN_KEPT);
        assert_eq!(b.h.forgotten_floor, 1, "`f.0` was published first");
        let r = b.replay(&["y", "q.*"], Some(0), 0);
        assert_eq!(r.resets, vec![("y".into(), None), ("q.*".into(), None)]);
        assert!(b.replay(&["y", "q.*"], Some(1), 0).resets.is_empty());
        assert_eq!(b.replay(&["f.*"], Some(1), 0).resets.len(), 1);
    }
}
