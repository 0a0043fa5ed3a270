//! The router: one thread that orders every publish. It gives each message its per-topic
//! sequence number and a router-wide one (the stream position), encodes it once per
//! transport, keeps it in the topic's history, and hands the shared bytes to exactly the
//! shards that have subscribers, over their SPSC links. It knows shards, never
//! connections: each shard tells it when it gains or loses interest in a topic or
//! subtree. Because it orders everything, it is also where a resume is answered: the
//! replay leaves with the barrier that makes the subscription live, so nothing is
//! missed or doubled between replay and live messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::address::DirectAddress;
use switchboard_proto::position::Position;
use switchboard_proto::{envelope, sse, topic, ws};

use super::ShardSet;
use super::history::{History, HistoryLimits, Pattern, Replay};
use super::link::{
    AmiRequest, Doorbell, FromAmi, FromRouter, Message, Resume, RouterAmiEnd, RouterEnd, ToAmi,
    ToRouter,
};
use crate::uring::{Completion, Kind, Ring, RingParams};

/// Counters the router exports in `/metrics`.
#[derive(Debug, Default)]
pub struct RouterMetrics {
    pub published: AtomicU64,
    pub routed: AtomicU64,
    pub topics: AtomicU64,
    pub outbox_full_waits: AtomicU64,
    /// Messages retained in history over all topics (gauge).
    pub history_messages: AtomicU64,
    /// Topics forgotten because `--history-topics` was reached.
    pub history_topics_evicted: AtomicU64,
    /// Bytes retained in history over all topics, as `--history-bytes` counts them
    /// (gauge).
    pub history_bytes: AtomicU64,
    /// Messages that left history because `--history-bytes` was reached.
    pub history_budget_evictions: AtomicU64,
    /// Resumes answered, messages replayed, resets sent.
    pub replays: AtomicU64,
    pub replayed_messages: AtomicU64,
    pub resets: AtomicU64,
}

/// What the router needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct RouterSettings {
    /// This server instance's epoch (random, not 0): the first part of every position.
    pub epoch: u32,
    pub history: HistoryLimits,
}

/// How often expired history is dropped and unused topics are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Messages handled before the router looks at its wake-ups again.
const BATCH_MESSAGES: usize = 4096;

/// Room kept in front of an envelope for the WebSocket frame header (at most 10 bytes
/// for a server frame), so that the frame is built without a second copy.
const WS_HEADROOM: usize = 10;

pub struct Router {
    ring: Ring,
    bell: Arc<Doorbell>,
    links: Vec<RouterEnd>,
    shard_bells: Vec<Arc<Doorbell>>,
    /// Shards with at least one subscriber of the exact topic.
    exact: HashMap<Box<str>, ShardSet>,
    /// Shards with at least one subscriber of the subtree below the prefix.
    subtree: HashMap<Box<str>, ShardSet>,
    /// Every remembered topic's sequence number and history.
    history: History,
    epoch: u32,
    /// The router-wide sequence number of the last message.
    gseq: u64,
    /// Shards that were sent something since their doorbell was last rung.
    touched: ShardSet,
    metrics: Arc<RouterMetrics>,
    completions: Vec<Completion>,
    /// The link with the AMI thread, when a PBX is configured.
    ami: Option<RouterAmiEnd>,
    /// Barriers waiting for the AMI thread's snapshot, by `(shard, id)`, with the resume
    /// of their other patterns.
    snapshots: HashMap<(u16, u32), Option<Box<Resume>>>,
    /// Whether the AMI thread was sent something since its doorbell was last rung.
    ami_touched: bool,
    /// What waits for room in the AMI thread's queue (see `send_ami`).
    ami_backlog: VecDeque<ToAmi>,
}

impl Router {
    /// The ring is created by the caller (its fd is every shard's wake-up address).
    pub fn new(
        ring: Ring,
        bell: Arc<Doorbell>,
        links: Vec<RouterEnd>,
        shard_bells: Vec<Arc<Doorbell>>,
        metrics: Arc<RouterMetrics>,
        settings: RouterSettings,
        ami: Option<RouterAmiEnd>,
    ) -> Router {
        Router {
            ring,
            bell,
            links,
            shard_bells,
            exact: HashMap::new(),
            subtree: HashMap::new(),
            history: History::new(settings.history),
            epoch: settings.epoch,
            gseq: 0,
            touched: ShardSet::default(),
            metrics,
            completions: Vec::new(),
            ami,
            snapshots: HashMap::new(),
            ami_touched: false,
            ami_backlog: VecDeque::new(),
        }
    }

    /// The router's ring: small, it only carries wake-ups.
    pub fn ring_params() -> RingParams {
        RingParams {
            sq_entries: 256,
            cq_entries: 1024,
            fixed_files: 0,
        }
    }

    pub fn run(mut self) -> std::io::Result<()> {
        self.ring.tick(SWEEP_INTERVAL);
        loop {
            let mut handled = 0;
            for shard in 0..self.links.len() {
                while handled < BATCH_MESSAGES {
                    let Ok(msg) = self.links[shard].inbox.pop() else {
                        break;
                    };
                    self.handle(shard, msg);
                    handled += 1;
                }
            }
            self.flush_ami_backlog();
            while handled < BATCH_MESSAGES {
                let Some(msg) = self.ami.as_mut().and_then(|a| a.inbox.pop().ok()) else {
                    break;
                };
                self.handle_ami(msg);
                handled += 1;
            }
            self.ring_shards();
            if handled > 0 {
                self.ring.enter(false)?;
            } else {
                self.bell.arm();
                let idle = self.links.iter().all(|l| l.inbox.is_empty())
                    && self.ami.as_ref().is_none_or(|a| a.inbox.is_empty());
                self.ring.enter(idle)?;
                self.bell.disarm();
            }
            self.completions.clear();
            self.ring.reap(&mut self.completions);
            let mut sweep = false;
            for c in &self.completions {
                if c.token.kind == Kind::Tick {
                    sweep = true;
                } else if c.result < 0 {
                    tracing::error!(
                        "router: {:?} failed: {}",
                        c.token.kind,
                        std::io::Error::from_raw_os_error(-c.result)
                    );
                }
            }
            if sweep {
                self.ring.tick(SWEEP_INTERVAL);
                self.sweep();
            }
        }
    }

    /// Drops expired history and forgets topics that have neither history nor a
    /// subscriber anywhere.
    fn sweep(&mut self) {
        let (exact, subtree) = (&self.exact, &self.subtree);
        self.history.sweep(Instant::now(), |name| {
            exact.contains_key(name) || topic::ancestors(name).any(|p| subtree.contains_key(p))
        });
        self.update_history_metrics();
    }

    fn update_history_metrics(&self) {
        let m = &self.metrics;
        m.topics
            .store(self.history.topics() as u64, Ordering::Relaxed);
        m.history_messages
            .store(self.history.retained() as u64, Ordering::Relaxed);
        m.history_topics_evicted
            .store(self.history.evicted_topics, Ordering::Relaxed);
        m.history_bytes
            .store(self.history.retained_bytes() as u64, Ordering::Relaxed);
        m.history_budget_evictions
            .store(self.history.budget_evictions, Ordering::Relaxed);
    }

    fn handle(&mut self, from: usize, msg: ToRouter) {
        match msg {
            ToRouter::Publish { topic, data, reply } => {
                let (seq, delivered) = self.publish(&topic, &data);
                self.send(
                    from,
                    FromRouter::Published {
                        reply,
                        topic,
                        seq,
                        delivered,
                    },
                );
            }
            ToRouter::Interest {
                prefix,
                subtree,
                add,
            } => {
                let map = if subtree {
                    &mut self.subtree
                } else {
                    &mut self.exact
                };
                if add {
                    map.entry(prefix).or_default().insert(from);
                } else if let Some(set) = map.get_mut(&prefix) {
                    set.remove(from);
                    if set.is_empty() {
                        map.remove(&prefix);
                    }
                }
            }
            ToRouter::Barrier {
                id,
                resume,
                snapshot: Some(patterns),
            } if self.ami.is_some() => {
                self.snapshots.insert((from as u16, id), resume);
                self.send_ami(ToAmi::Snapshot {
                    shard: from as u16,
                    id,
                    patterns,
                });
            }
            ToRouter::Barrier { id, resume, .. } => {
                let replay = resume.map(|r| Box::new(self.replay(&r)));
                let gseq = self.gseq;
                self.send(from, FromRouter::Barrier { id, gseq, replay });
            }
            ToRouter::AmiAction(request) if self.ami.is_some() => {
                self.send_ami(ToAmi::Action {
                    shard: from as u16,
                    request,
                });
            }
            ToRouter::AmiAction(request) => {
                let AmiRequest { conn, .. } = *request;
                let body = Bytes::from_static(NO_AMI_RESULT.as_bytes());
                self.send(
                    from,
                    FromRouter::AmiResult {
                        conn,
                        status: 503,
                        body,
                    },
                );
            }
        }
    }

    /// What the AMI thread sends: its publishes, the snapshots that complete waiting
    /// barriers, and action results.
    fn handle_ami(&mut self, msg: FromAmi) {
        match msg {
            FromAmi::Publish { topic, data } => match std::str::from_utf8(&topic) {
                Ok(topic) => {
                    self.publish(topic, &data);
                }
                // The AMI thread copies topics from `&str`: never the case.
                Err(_) => tracing::error!("ami: a topic that is not UTF-8 was dropped"),
            },
            FromAmi::Snapshot {
                shard,
                id,
                messages,
            } => {
                let resume = self.snapshots.remove(&(shard, id)).flatten();
                let mut replay = match resume {
                    Some(r) => self.replay(&r),
                    None => Replay::default(),
                };
                // The snapshot stands at this point of the order: every AMI message
                // routed before it is in it, every one after it reaches the subscriber.
                let pos = Position {
                    epoch: self.epoch,
                    gseq: self.gseq,
                };
                let snapshot = messages.iter().map(|(topic, data)| {
                    let seq = self.history.last_seq(topic);
                    Arc::new(encode(topic, seq, pos, data))
                });
                replay.messages.splice(0..0, snapshot);
                let gseq = self.gseq;
                self.send(
                    usize::from(shard),
                    FromRouter::Barrier {
                        id,
                        gseq,
                        replay: Some(Box::new(replay)),
                    },
                );
            }
            FromAmi::Result {
                shard,
                conn,
                status,
                body,
            } => {
                self.send(
                    usize::from(shard),
                    FromRouter::AmiResult { conn, status, body },
                );
            }
        }
    }

    /// Pushes to the AMI thread's queue, or behind it when it is full. The router never
    /// waits for the AMI thread: that thread may itself be waiting for room in the
    /// router's queue, and the two would wait for each other. The backlog holds what
    /// the shards asked for (snapshots, actions), which their own limits bound.
    fn send_ami(&mut self, msg: ToAmi) {
        let Some(ami) = self.ami.as_mut() else {
            return;
        };
        self.ami_touched = true;
        if !self.ami_backlog.is_empty() {
            self.ami_backlog.push_back(msg);
            return;
        }
        if let Err(rtrb::PushError::Full(msg)) = ami.outbox.push(msg) {
            self.metrics
                .outbox_full_waits
                .fetch_add(1, Ordering::Relaxed);
            self.ami_backlog.push_back(msg);
        }
    }

    /// Moves what waits behind the AMI thread's full queue into it, as room allows.
    fn flush_ami_backlog(&mut self) {
        let Some(ami) = self.ami.as_mut() else {
            return;
        };
        while let Some(msg) = self.ami_backlog.pop_front() {
            if let Err(rtrb::PushError::Full(msg)) = ami.outbox.push(msg) {
                self.ami_backlog.push_front(msg);
                break;
            }
            self.ami_touched = true;
        }
    }

    /// What a resuming subscriber's patterns had after its position.
    fn replay(&mut self, resume: &Resume) -> super::history::Replay {
        let patterns: Vec<Pattern<'_>> = resume
            .patterns
            .iter()
            .map(|(name, subtree)| Pattern {
                name,
                subtree: *subtree,
            })
            .collect();
        // A position of another instance, or one this instance never reached, vouches
        // for nothing.
        let since = (resume.since.epoch == self.epoch && resume.since.gseq <= self.gseq)
            .then_some(resume.since.gseq);
        let replay = self.history.replay(&patterns, since, Instant::now());
        let m = &self.metrics;
        m.replays.fetch_add(1, Ordering::Relaxed);
        m.replayed_messages
            .fetch_add(replay.messages.len() as u64, Ordering::Relaxed);
        m.resets
            .fetch_add(replay.resets.len() as u64, Ordering::Relaxed);
        self.update_history_metrics();
        replay
    }

    /// Sequences one message, keeps it in history and delivers it to every interested
    /// shard; returns its `seq` and whether any shard had a subscriber.
    fn publish(&mut self, topic_name: &str, data: &[u8]) -> (u64, bool) {
        if topic::is_direct(topic_name) {
            return self.publish_direct(topic_name, data);
        }
        self.gseq += 1;
        let pos = Position {
            epoch: self.epoch,
            gseq: self.gseq,
        };
        let msg = self
            .history
            .publish(topic_name, self.gseq, Instant::now(), |seq| {
                encode(topic_name, seq, pos, data)
            });
        let seq = msg.seq;
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        self.update_history_metrics();

        let mut targets = self.exact.get(topic_name).copied().unwrap_or_default();
        for prefix in topic::ancestors(topic_name) {
            if let Some(set) = self.subtree.get(prefix) {
                targets.union_with(set);
            }
        }
        if targets.is_empty() {
            return (seq, false);
        }
        for shard in targets.iter() {
            self.send(shard, FromRouter::Deliver(msg.clone()));
        }
        self.metrics.routed.fetch_add(1, Ordering::Relaxed);
        (seq, true)
    }

    /// A message for a direct address goes to the shard the address names, which checks
    /// that the connection is still there. It has a position but no per-topic sequence
    /// (`seq` 0) and no history: a reconnecting client has a new address. Returns
    /// `(0, false)` for an address no shard can hold (the publisher gets a 404).
    fn publish_direct(&mut self, topic_name: &str, data: &[u8]) -> (u64, bool) {
        let Some(address) = DirectAddress::from_topic(topic_name)
            .filter(|a| usize::from(a.shard) < self.links.len())
        else {
            return (0, false);
        };
        self.gseq += 1;
        let pos = Position {
            epoch: self.epoch,
            gseq: self.gseq,
        };
        let msg = Arc::new(encode(topic_name, 0, pos, data));
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        self.metrics.routed.fetch_add(1, Ordering::Relaxed);
        self.send(usize::from(address.shard), FromRouter::Deliver(msg));
        (0, true)
    }

    /// Pushes to a shard's queue. A full queue means that shard is behind: wake it and
    /// wait, which in turn stops this router from draining the publishers' queues, whose
    /// shards then answer 503. Nothing is dropped and nothing grows without bound.
    fn send(&mut self, shard: usize, mut msg: FromRouter) {
        loop {
            match self.links[shard].outbox.push(msg) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(back)) => {
                    msg = back;
                    self.metrics
                        .outbox_full_waits
                        .fetch_add(1, Ordering::Relaxed);
                    if self.shard_bells[shard].ring() {
                        self.ring.wake(self.shard_bells[shard].ring_fd());
                        let _ = self.ring.enter(false);
                    }
                    std::thread::yield_now();
                }
            }
        }
        self.touched.insert(shard);
    }

    fn ring_shards(&mut self) {
        if std::mem::take(&mut self.ami_touched)
            && let Some(ami) = self.ami.as_ref()
            && ami.bell.ring()
        {
            self.ring.wake(ami.bell.ring_fd());
        }
        let touched = std::mem::take(&mut self.touched);
        for shard in touched.iter() {
            if self.shard_bells[shard].ring() {
                self.ring.wake(self.shard_bells[shard].ring_fd());
            }
        }
    }
}

/// The result of an action when no PBX is configured.
const NO_AMI_RESULT: &str =
    r#"{"op":"result","ok":false,"code":"unavailable","error":"no PBX is configured (--ami)"}"#;

/// Builds the envelope once and frames it for each transport: the WebSocket frame,
/// and after it in the same allocation (when the envelope is one line, as it is
/// unless the data is pretty-printed JSON) the SSE event.
pub fn encode(topic_name: &str, seq: u64, pos: Position, data: &[u8]) -> Message {
    // What `write_envelope` reserves past the headroom, then the SSE event: one
    // allocation.
    let envelope_room = topic_name.len() + data.len() + 80;
    let mut frame = Vec::with_capacity(WS_HEADROOM + 2 * envelope_room + 48);
    frame.resize(WS_HEADROOM, 0);
    envelope::write_envelope(&mut frame, topic_name, seq, pos, data);
    let payload_len = (frame.len() - WS_HEADROOM) as u64;
    let mut header = [0u8; 14];
    let n = ws::frame::encode_header(
        true,
        ws::frame::Opcode::Text,
        payload_len,
        None,
        &mut header,
    );
    let start = WS_HEADROOM - n;
    frame[start..WS_HEADROOM].copy_from_slice(&header[..n]);

    let end = frame.len();
    let separate = if sse::append_event_at(&mut frame, pos, WS_HEADROOM..end) {
        None
    } else {
        let envelope_bytes = frame.get(WS_HEADROOM..end).unwrap_or_default();
        let mut event = Vec::with_capacity(envelope_bytes.len() + 48);
        sse::write_event_at(&mut event, pos, envelope_bytes);
        Some(Bytes::from(event))
    };
    let frame = Bytes::from(frame);
    Message {
        topic: topic_name.into(),
        seq,
        gseq: pos.gseq,
        ws_frame: frame.slice(start..end),
        sse_event: separate.unwrap_or_else(|| frame.slice(end..)),
        envelope: frame.slice(WS_HEADROOM..end),
        in_history: AtomicBool::new(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_one_envelope_for_both_transports() {
        let pos = Position {
            epoch: 0x1f0c93aa,
            gseq: 42,
        };
        let msg = encode("chat.lobby", 7, pos, br#"{"text":"hi"}"#);
        let envelope =
            br#"{"topic":"chat.lobby","seq":7,"pos":"1f0c93aa-42","data":{"text":"hi"}}"#;
        // An unmasked final text frame with a 7-bit length, then the envelope.
        assert_eq!(msg.ws_frame[0], 0x81);
        assert_eq!(usize::from(msg.ws_frame[1]), envelope.len());
        assert_eq!(&msg.ws_frame[2..], envelope);
        assert_eq!(&msg.envelope[..], envelope);
        let expected = format!(
            "id: 1f0c93aa-42\ndata: {}\n\n",
            std::str::from_utf8(envelope).unwrap()
        );
        assert_eq!(&msg.sse_event[..], expected.as_bytes());
    }

    /// Pretty-printed data makes a multi-line envelope: its SSE event has one `data:`
    /// line per line (and does not share the frame's allocation).
    #[test]
    fn a_multi_line_envelope_gets_one_sse_data_line_per_line() {
        let pos = Position { epoch: 1, gseq: 3 };
        let msg = encode("t", 1, pos, b"{\n  \"a\": 1\n}");
        let envelope =
            "{\"topic\":\"t\",\"seq\":1,\"pos\":\"00000001-3\",\"data\":{\n  \"a\": 1\n}}";
        assert_eq!(&msg.envelope[..], envelope.as_bytes());
        assert_eq!(&msg.ws_frame[2..], envelope.as_bytes());
        assert_eq!(
            &msg.sse_event[..],
            b"id: 00000001-3\ndata: {\"topic\":\"t\",\"seq\":1,\"pos\":\"00000001-3\",\"data\":{\ndata:   \"a\": 1\ndata: }}\n\n"
        );
    }

    #[test]
    fn long_envelopes_get_extended_length_headers() {
        let body = format!("\"{}\"", "x".repeat(70_000));
        let msg = encode("t", 1, Position { epoch: 1, gseq: 1 }, body.as_bytes());
        assert_eq!(msg.ws_frame[1], 127);
        let len = u64::from_be_bytes(msg.ws_frame[2..10].try_into().unwrap());
        assert_eq!(len as usize, msg.ws_frame.len() - 10);
    }
}
