//! One client connection: a plain struct in a fixed-capacity table indexed by its
//! fixed-file slot, and the state machine it moves through:
//!
//! ```text
//!   Idle ──▶ Connecting ──▶ Handshaking ──▶ Open ──▶ Closing ──▶ Done
//!              │   ▲            │                      │
//!              ▼   │            ▼                      ├──▶ Backoff ──▶ Connecting (retry)
//!            Closing ◀──────────┘                      ├──▶ Failed   (retries used up)
//!                                                      └──▶ Idle     (churn: a new client)
//! ```
//!
//! `Connecting` is a connect chain in the kernel; `Handshaking` has sent the WebSocket
//! upgrade or the SSE request and waits for the `101`/`200`; `Open` is subscribed;
//! `Closing` waits until the kernel holds no operation that names the slot, then closes
//! it. The transitions are checked (`legal`), and what a failure leads to is a pure
//! function (`after_failure`), both unit-tested.

use std::time::Duration;

use switchboard_uring::{Kind, Token, next_generation};

use super::errors::ErrorKind;
use super::retry::{Backoff, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Not started (or a churned slot waiting for its new client).
    Idle = 0,
    Connecting,
    Handshaking,
    Open,
    Closing,
    /// Failed, waiting to try again.
    Backoff,
    /// Gave up: retries used up or a failure not worth retrying. Terminal.
    Failed,
    /// Closed on purpose (end of run). Terminal.
    Done,
}

impl State {
    /// Whether `from -> to` is a transition of the state machine above.
    pub fn legal(from: State, to: State) -> bool {
        use State::*;
        matches!(
            (from, to),
            (Idle | Backoff, Connecting)
                | (Connecting, Handshaking | Closing)
                | (Handshaking, Open | Closing)
                | (Open, Closing)
                | (Closing, Backoff | Failed | Done | Idle)
        )
    }

    /// Counted as "connecting" (a connect or handshake in flight).
    pub fn in_progress(self) -> bool {
        matches!(self, State::Connecting | State::Handshaking)
    }
}

/// `Conn::flags` bits.
pub mod flag {
    /// The chain's connect succeeded.
    pub const CONNECTED: u8 = 1 << 0;
    /// The multishot recv is armed.
    pub const RECV_ARMED: u8 = 1 << 1;
    /// A send is in flight (at most one per connection: frames queued meanwhile wait in
    /// the thread's overflow map).
    pub const SENDING: u8 = 1 << 2;
    /// Subscribed when measuring began: its deliveries count towards the expected ones.
    pub const MEASURED: u8 = 1 << 3;
    /// Its first message has been seen (time to first message recorded).
    pub const FIRST_SEEN: u8 = 1 << 4;
    /// Reading stopped on purpose (`slow`): the recv is not re-armed.
    pub const PAUSED: u8 = 1 << 5;
    /// A slow client (`slow`): stops reading once measuring begins.
    pub const SLOW: u8 = 1 << 6;
    /// The server sent a WebSocket close; ours is on its way.
    pub const CLOSE_SEEN: u8 = 1 << 7;
}

/// What a connection in `Closing` becomes once the kernel has let go of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum After {
    /// Try again after this attempt's backoff.
    Retry = 0,
    /// Give up (counted as a failed connection).
    GiveUp,
    /// Closed on purpose by churn: the slot takes a new client.
    Churn,
    /// Closed on purpose, for good.
    Done,
}

/// Receive state that exists only while something is partial (a response head, a
/// WebSocket frame or fragmented message), or for an event stream's parser.
#[derive(Debug)]
pub enum Rx {
    /// The beginning of a response head.
    Head(Vec<u8>),
    /// A WebSocket frame or message in progress.
    Ws {
        reader: switchboard_proto::ws::Reader,
        msg: Vec<u8>,
    },
    /// An event stream: its parser, and the chunked decoder when the body is chunked.
    Sse {
        parser: switchboard_proto::sse::Parser,
        chunked: Option<switchboard_proto::http1::ChunkedDecoder>,
    },
    /// A long-poll answer being received (head and body so far).
    Poll(Vec<u8>),
}

/// One connection. 40 bytes; everything else it owns is boxed in `rx` only while needed.
#[derive(Debug)]
pub struct Conn {
    pub generation: u32,
    /// The client's id: decides its transport, topic and source address.
    pub id: u32,
    /// Highest sequence number received (the `observe_seq` state of its one topic).
    pub last_seq: u64,
    /// Microseconds since the run's epoch (wrapping every 71 minutes; only differences
    /// are used) when the attempt started (connect time), then when the handshake ended
    /// (time to first message).
    pub since_us: u32,
    pub state: State,
    pub flags: u8,
    /// Operations the kernel holds that name this slot (each posts one more completion).
    pub pending: u8,
    /// Attempts made (1 during the first).
    pub attempt: u8,
    /// The first failure of the current attempt (`ErrorKind as u8`, 0: none).
    pub err: u8,
    /// `After as u8` while `Closing`.
    pub after: u8,
    /// Index of its transport in the thread's table (0: ws, 1: sse).
    pub transport: u8,
    pub rx: Option<Box<Rx>>,
}

/// The per-connection state, in bytes (reported by `loadgen --version`-style notes and
/// asserted here).
pub const CONN_BYTES: usize = size_of::<Conn>();
// A client's state stays small: 1M of them fit in 40 MB.
const _: () = assert!(CONN_BYTES <= 40);
const _: () = assert!(size_of::<Conn>() <= 40, "Conn must stay small");

impl Conn {
    pub const IDLE: Conn = Conn {
        generation: 0,
        id: 0,
        last_seq: 0,
        since_us: 0,
        state: State::Idle,
        flags: 0,
        pending: 0,
        attempt: 0,
        err: 0,
        after: After::Done as u8,
        transport: 0,
        rx: None,
    };

    pub fn token(&self, kind: Kind, slot: u32) -> Token {
        Token::new(kind, self.generation, slot)
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u8) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u8) {
        self.flags &= !f;
    }

    /// Moves to `to`, which must be a legal transition (a broken invariant otherwise).
    pub fn go(&mut self, to: State) {
        assert!(
            State::legal(self.state, to),
            "illegal transition {:?} -> {to:?}",
            self.state
        );
        self.state = to;
    }

    /// Starts a new attempt: a new generation (completions of older attempts are
    /// recognised as stale), attempt counted, per-attempt state cleared.
    pub fn begin_attempt(&mut self, now_us: u32) {
        self.go(State::Connecting);
        self.generation = next_generation(self.generation);
        self.attempt = self.attempt.saturating_add(1);
        self.err = 0;
        self.flags &= flag::SLOW;
        self.last_seq = 0;
        self.since_us = now_us;
        self.rx = None;
    }

    /// Records the first failure of this attempt (later ones are consequences).
    pub fn note_error(&mut self, kind: ErrorKind) {
        if self.err == 0 {
            self.err = kind as u8;
        }
    }

    pub fn error(&self) -> Option<ErrorKind> {
        ErrorKind::from_u8(self.err)
    }
}

/// What a failure in `state` leads to: before the connection was established, a retry
/// (after the returned delay) while `retryable` and the backoff allows; otherwise the
/// connection is given up.
pub fn after_failure(
    state: State,
    retryable: bool,
    attempt: u8,
    backoff: &Backoff,
    rng: &mut Rng,
) -> (After, Option<Duration>) {
    if state.in_progress()
        && retryable
        && let Some(d) = backoff.delay(attempt, rng)
    {
        return (After::Retry, Some(d));
    }
    (After::GiveUp, None)
}

/// The connections of one thread, indexed by fixed-file slot, allocated up front (the
/// thread's whole share is opened, so every entry is used).
pub struct ConnTable {
    conns: Vec<Conn>,
}

impl ConnTable {
    pub fn new(capacity: u32) -> ConnTable {
        ConnTable {
            conns: (0..capacity).map(|_| Conn::IDLE).collect(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.conns.len() as u32
    }

    pub fn slot_mut(&mut self, slot: u32) -> &mut Conn {
        &mut self.conns[slot as usize]
    }

    pub fn slot(&self, slot: u32) -> &Conn {
        &self.conns[slot as usize]
    }

    /// The connection a completion names, if it is still the same attempt.
    pub fn get(&mut self, slot: u32, generation: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot as usize)
            .filter(|c| c.generation == generation)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.conns.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conn> {
        self.conns.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    const ALL: [State; 8] = [
        Idle,
        Connecting,
        Handshaking,
        Open,
        Closing,
        Backoff,
        Failed,
        Done,
    ];

    #[test]
    fn legal_transitions_are_exactly_the_diagram() {
        let allowed = [
            (Idle, Connecting),
            (Backoff, Connecting),
            (Connecting, Handshaking),
            (Connecting, Closing),
            (Handshaking, Open),
            (Handshaking, Closing),
            (Open, Closing),
            (Closing, Backoff),
            (Closing, Failed),
            (Closing, Done),
            (Closing, Idle),
        ];
        for from in ALL {
            for to in ALL {
                assert_eq!(
                    State::legal(from, to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        // Terminal states lead nowhere.
        for to in ALL {
            assert!(!State::legal(Failed, to) && !State::legal(Done, to));
        }
    }

    #[test]
    fn a_full_life_with_a_retry() {
        let mut c = Conn::IDLE;
        c.set(flag::SLOW);
        c.begin_attempt(5);
        let g1 = c.generation;
        assert_eq!((c.state, c.attempt, c.since_us), (Connecting, 1, 5));
        c.note_error(ErrorKind::ConnectRefused);
        c.note_error(ErrorKind::Reset);
        assert_eq!(
            c.error(),
            Some(ErrorKind::ConnectRefused),
            "the first failure counts"
        );
        c.go(Closing);
        c.go(Backoff);
        c.set(flag::CONNECTED | flag::FIRST_SEEN);
        c.begin_attempt(9);
        assert_ne!(c.generation, g1, "a new attempt is a new generation");
        assert_eq!((c.attempt, c.error()), (2, None));
        assert_eq!(c.flags, flag::SLOW, "per-attempt flags cleared, SLOW kept");
        c.go(Handshaking);
        c.go(Open);
        c.go(Closing);
        c.go(Done);
    }

    #[test]
    #[should_panic(expected = "illegal transition")]
    fn illegal_transitions_panic() {
        let mut c = Conn::IDLE;
        c.go(Open);
    }

    #[test]
    fn failures_retry_only_before_open_and_within_the_backoff() {
        let b = super::Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            retries: 2,
        };
        let mut rng = Rng::new(1);
        let (a, d) = after_failure(Connecting, true, 1, &b, &mut rng);
        assert_eq!(a, After::Retry);
        assert!(d.unwrap() <= Duration::from_millis(10));
        assert_eq!(
            after_failure(Handshaking, true, 2, &b, &mut rng).0,
            After::Retry
        );
        assert_eq!(
            after_failure(Handshaking, true, 3, &b, &mut rng),
            (After::GiveUp, None)
        );
        assert_eq!(
            after_failure(Connecting, false, 1, &b, &mut rng),
            (After::GiveUp, None)
        );
        assert_eq!(
            after_failure(Open, true, 1, &b, &mut rng),
            (After::GiveUp, None)
        );
    }

    #[test]
    fn table_rejects_stale_generations() {
        let mut t = ConnTable::new(3);
        let c = t.slot_mut(2);
        c.begin_attempt(0);
        let g = c.generation;
        assert!(t.get(2, g).is_some());
        assert!(t.get(2, g.wrapping_sub(1)).is_none());
        assert!(t.get(3, g).is_none());
    }
}
