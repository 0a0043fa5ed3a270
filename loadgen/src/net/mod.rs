//! loadgen's connection engine: client threads, each owning one io_uring ring with a
//! fixed-file table, a provided-buffer ring and a table of connections. A thread opens
//! its share of the connections at its share of `--connect-rate` (connect chains on
//! direct descriptors, bound to spread source addresses), performs the WebSocket or SSE
//! handshake, holds the connections, reads and measures what arrives, and obeys the
//! scenario's commands (measure, stop) through a shared [`Control`]. No locks on the data
//! path: a thread publishes its counters in atomics once per tick and hands its
//! histograms back when it ends.

pub mod addr;
pub mod client;
pub mod conn;
pub mod errors;
pub mod floor;
pub mod retry;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::cli_values::Transport;
use crate::measure::{Latency, SeqCounts, Timeline};
use addr::Endpoint;
use errors::ErrorCounts;
use retry::Backoff;

/// The monotonic clock every thread and the publisher share, with its Unix-time anchor:
/// scheduled times and receive times come from the same clock, so a wall-clock step
/// during a run changes no latency.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub epoch: Instant,
    pub epoch_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let epoch = Instant::now();
        let epoch_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            epoch,
            epoch_unix_ns,
        }
    }

    /// Nanoseconds since the Unix epoch, by the monotonic clock.
    pub fn unix_ns(&self) -> u64 {
        self.epoch_unix_ns + self.epoch.elapsed().as_nanos() as u64
    }

    /// `at` as nanoseconds since the Unix epoch.
    pub fn unix_ns_at(&self, at: Instant) -> u64 {
        self.epoch_unix_ns + at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// Transports a client thread speaks (long-poll is refused before any thread starts).
pub const TRANSPORTS: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

pub fn transport_index(t: Transport) -> Option<usize> {
    TRANSPORTS.iter().position(|&x| x == t)
}

/// Everything the client threads share, fixed before they start.
#[derive(Debug)]
pub struct Setup {
    /// Subscribe endpoints by transport (`TRANSPORTS` order).
    pub endpoints: [Option<Endpoint>; 3],
    pub mix: Vec<(Transport, u32)>,
    pub topics: Vec<String>,
    /// Per topic: the WebSocket request target (the request itself carries a per-connection
    /// key) and the whole SSE request (the same bytes for every subscriber of the topic).
    pub ws_targets: Vec<String>,
    pub sse_requests: Vec<Bytes>,
    /// Per topic: the long-poll request target without `since` (`/poll?topic=...`).
    pub poll_targets: Vec<String>,
    pub sources: Vec<Ipv4Addr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub backoff: Backoff,
    /// Connections opened at start, over all threads.
    pub connections: u32,
    pub threads: u32,
    /// New connections per second over all threads.
    pub connect_rate: f64,
    /// Connects and handshakes in flight per thread, at most.
    pub max_in_progress: u32,
    /// Clients per thousand that stop reading when measuring begins (`slow`).
    pub slow_per_mille: u32,
    /// Disconnects (each followed by a new client) per second over all threads (`churn`).
    pub churn_rate: f64,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub clock: Clock,
    /// Secret the WebSocket keys are derived from.
    pub ws_secret: u64,
    /// Largest message accepted from the server.
    pub max_message_bytes: u64,
}

impl Setup {
    /// Connections thread `t` opens at start: ids `t, t + threads, t + 2 threads, ...`.
    pub fn share(&self, t: u32) -> u32 {
        if t >= self.connections {
            0
        } else {
            (self.connections - t).div_ceil(self.threads)
        }
    }

    pub fn topic_of(&self, id: u32) -> usize {
        id as usize % self.topics.len().max(1)
    }

    pub fn transport_of(&self, id: u32) -> Transport {
        addr::transport_for(id, &self.mix)
    }

    pub fn is_slow(&self, id: u32) -> bool {
        is_slow(id, self.connections, self.slow_per_mille)
    }
}

/// Whether client `id` of `connections` is slow: exactly `connections * per_mille / 1000`
/// (rounded down) of the ids `0..connections` are, spread over topics and threads (ids
/// run round-robin over both). The ids are permuted by multiplying with a unit modulo
/// `connections` near `connections / φ` (Fibonacci hashing: a bijection that scatters
/// neighbours), and the first positions of the permutation are the slow ones.
pub fn is_slow(id: u32, connections: u32, per_mille: u32) -> bool {
    let n = u64::from(connections.max(1));
    let slow = n * u64::from(per_mille.min(1000)) / 1000;
    let mut a = ((n as f64) * 0.618_033_988_749_895).round().max(1.0) as u64;
    while gcd(a, n) != 1 {
        a += 1;
    }
    u64::from(id) * a % n < slow
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What the scenario tells the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// Open and hold connections.
    Run = 0,
    /// Start measuring: every open client counts from now on (its topic's expected
    /// deliveries), slow clients stop reading.
    Measure = 1,
    /// End: each thread returns its results.
    Stop = 2,
}

/// One thread's live counters, published once per tick.
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Connections open (handshake done) now.
    pub open: AtomicU64,
    /// Connects and handshakes in flight.
    pub in_progress: AtomicU64,
    /// Connections given up.
    pub failed: AtomicU64,
    /// Connect attempts so far.
    pub attempts: AtomicU64,
    /// Failures so far (every kind, every attempt).
    pub errors: AtomicU64,
    /// Messages received by measured clients.
    pub delivered: AtomicU64,
    /// Connections closed by churn.
    pub churned: AtomicU64,
    /// Connections that closed after being open (server closes, resets).
    pub dropped: AtomicU64,
    /// Every connection of the initial share has been started.
    pub launched_all: AtomicBool,
    /// The thread has taken its measuring snapshot.
    pub measuring: AtomicBool,
    /// Clients measured (open at the snapshot and not slow).
    pub measured: AtomicU64,
}

#[derive(Debug)]
pub struct Control {
    command: AtomicU8,
    pub threads: Vec<ThreadCounters>,
    /// Measured clients per topic, added by each thread once, when measuring begins.
    pub measured_per_topic: std::sync::Mutex<Vec<u64>>,
}

/// A sum of every thread's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub open: u64,
    pub in_progress: u64,
    pub failed: u64,
    pub attempts: u64,
    pub errors: u64,
    pub delivered: u64,
    pub churned: u64,
    pub dropped: u64,
    pub measured: u64,
    pub launched_all: bool,
    pub measuring: bool,
}

impl Control {
    pub fn new(threads: u32, topics: usize) -> Control {
        Control {
            command: AtomicU8::new(Command::Run as u8),
            threads: (0..threads).map(|_| ThreadCounters::default()).collect(),
            measured_per_topic: std::sync::Mutex::new(vec![0; topics]),
        }
    }

    /// Measured clients per topic (complete once `Totals::measuring`).
    pub fn measured_per_topic(&self) -> Vec<u64> {
        self.measured_per_topic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn command(&self) -> Command {
        match self.command.load(Relaxed) {
            0 => Command::Run,
            1 => Command::Measure,
            _ => Command::Stop,
        }
    }

    pub fn set(&self, c: Command) {
        self.command.store(c as u8, Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            launched_all: true,
            measuring: true,
            ..Totals::default()
        };
        for c in &self.threads {
            t.open += c.open.load(Relaxed);
            t.in_progress += c.in_progress.load(Relaxed);
            t.failed += c.failed.load(Relaxed);
            t.attempts += c.attempts.load(Relaxed);
            t.errors += c.errors.load(Relaxed);
            t.delivered += c.delivered.load(Relaxed);
            t.churned += c.churned.load(Relaxed);
            t.dropped += c.dropped.load(Relaxed);
            t.measured += c.measured.load(Relaxed);
            t.launched_all &= c.launched_all.load(Relaxed);
            t.measuring &= c.measuring.load(Relaxed);
        }
        t
    }
}

/// What a thread measured, handed back when it ends.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    pub errors: ErrorCounts,
    /// Start of the connect to the end of the handshake.
    pub connect: Latency,
    /// End of the handshake to the first message.
    pub first_message: Latency,
    /// Scheduled publish time to receipt, by transport (`TRANSPORTS` order).
    pub delivery: [Latency; 3],
    pub seq: SeqCounts,
    /// Measured clients per topic.
    pub measured_per_topic: Vec<u64>,
    /// Measured deliveries per second of the run.
    pub timeline: Timeline,
    /// Messages received by clients that are not measured.
    pub unmeasured: u64,
    /// Messages that carried no loadgen body (`lg_seq`/`lg_at_ns`).
    pub unparsed: u64,
    /// `reset` messages: the server declared a gap (history exceeded, messages dropped).
    pub resets: u64,
    pub attempts: u64,
    pub churned: u64,
    pub failed: u64,
    pub dropped: u64,
    pub open_at_end: u64,
    /// Receives that ran out of provided buffers (re-armed).
    pub recv_starved: u64,
    /// Clients that stopped reading (`slow`).
    pub paused: u64,
}

impl ThreadResult {
    pub fn new(topics: usize) -> ThreadResult {
        ThreadResult {
            errors: ErrorCounts::default(),
            connect: Latency::new(),
            first_message: Latency::new(),
            delivery: [Latency::new(), Latency::new(), Latency::new()],
            seq: SeqCounts::default(),
            measured_per_topic: vec![0; topics],
            timeline: Timeline::new(),
            unmeasured: 0,
            unparsed: 0,
            resets: 0,
            attempts: 0,
            churned: 0,
            failed: 0,
            dropped: 0,
            open_at_end: 0,
            recv_starved: 0,
            paused: 0,
        }
    }

    pub fn merge(&mut self, o: &ThreadResult) {
        self.errors.merge(&o.errors);
        self.connect.merge(&o.connect);
        self.first_message.merge(&o.first_message);
        for (a, b) in self.delivery.iter_mut().zip(o.delivery.iter()) {
            a.merge(b);
        }
        self.seq.merge(&o.seq);
        for (a, b) in self
            .measured_per_topic
            .iter_mut()
            .zip(&o.measured_per_topic)
        {
            *a += b;
        }
        self.timeline.merge(&o.timeline);
        self.unmeasured += o.unmeasured;
        self.unparsed += o.unparsed;
        self.resets += o.resets;
        self.attempts += o.attempts;
        self.churned += o.churned;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.open_at_end += o.open_at_end;
        self.recv_starved += o.recv_starved;
        self.paused += o.paused;
    }
}

/// The running client threads.
pub struct Clients {
    pub control: Arc<Control>,
    handles: Vec<std::thread::JoinHandle<std::io::Result<ThreadResult>>>,
}

impl Clients {
    /// Starts `setup.threads` client threads.
    pub fn start(setup: Arc<Setup>) -> std::io::Result<Clients> {
        let control = Arc::new(Control::new(setup.threads, setup.topics.len()));
        let mut handles = Vec::with_capacity(setup.threads as usize);
        for t in 0..setup.threads {
            let (setup, control) = (setup.clone(), control.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-{t}"))
                    .spawn(move || client::run(t, setup, control))?,
            );
        }
        Ok(Clients { control, handles })
    }

    /// Whether a thread has ended (it only ends early on an error).
    pub fn any_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Tells the threads to stop and merges their results.
    pub fn stop(self, topics: usize) -> std::io::Result<ThreadResult> {
        self.control.set(Command::Stop);
        let mut total = ThreadResult::new(topics);
        let mut first_err = None;
        for h in self.handles {
            match h.join() {
                Ok(Ok(r)) => total.merge(&r),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(std::io::Error::other("a client thread panicked"));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_fraction_is_exact_and_spread_over_topics() {
        for n in [1u32, 7, 40, 1000, 200_000] {
            for per_mille in [0u32, 1, 100, 250, 500, 999, 1000] {
                let slow = (0..n).filter(|&id| is_slow(id, n, per_mille)).count() as u64;
                assert_eq!(
                    slow,
                    u64::from(n) * u64::from(per_mille) / 1000,
                    "{n} {per_mille}"
                );
            }
        }
        // 1000 clients over 10 topics (id % 10), a quarter slow: every topic keeps most
        // of its readers and loses some.
        let mut per_topic = [0u32; 10];
        for id in (0..1000).filter(|&id| is_slow(id, 1000, 250)) {
            per_topic[id as usize % 10] += 1;
        }
        assert!(
            per_topic.iter().all(|&k| (20..=30).contains(&k)),
            "{per_topic:?}"
        );
    }
}
