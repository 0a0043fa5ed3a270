//! The AMI session supervisor, as a sans-I/O state machine: the AMI thread does the
//! socket I/O and tells the [`Session`] what happened (a connect started, TCP is up,
//! the parser produced an [`Item`], the clock moved, the socket is gone); the session
//! says what to send (bytes appended to `out`), what to do with a message ([`Step`]),
//! when the session has failed and when to try again.
//!
//! # Phases
//!
//! ```text
//!  Waiting ──on_connecting──▶ Connecting ──on_connected──▶ Banner
//!     ▲                                                      │ Item::Banner: send Challenge (MD5)
//!     │                                                      ▼
//!     │                                                  Challenge
//!     │      Success + Challenge: Login with Key ┐           │
//!     │      Error (refused): Login with Secret  └──────────▶│
//!     │                                                      ▼
//!     │ on_failure:                                        Login ── Error: Fail(LoginRejected)
//!     │ retry at now + backoff                               │ accepted: Step::LoggedIn, send the lists
//!     │                                                      ▼
//!     └──── Step::Fail(..) from any phase ◀──────────────  Syncing
//!           (the thread closes the socket,                   │ all three lists complete: Step::Synced
//!            then calls on_failure)                          ▼
//!                                                          Live
//! ```
//!
//! - **Login**: the banner must come first (`Asterisk Call Manager/<version>`), else
//!   [`Failure::BadBanner`]. Then `Challenge` with `AuthType: MD5`; a `Challenge:`
//!   answer gets a `Login` with `Key: md5(challenge + secret)`, a refusal a plain
//!   `Login` with `Secret:`. Both carry `Events: <events>`. Every action of the
//!   session has `ActionID: sb-s-<n>` (`n` grows for the life of the [`Session`], so
//!   an answer can never be taken for that of another attempt).
//! - **Resync lists**: once logged in, `CoreShowChannels`, `QueueStatus` and `Status`,
//!   one at a time (a PBX queues a whole list at once; a big PBX's three lists together
//!   can pass what it lets one session queue, 4 MiB for ami-sim). Their items (and every other event) are [`Step::Pbx`]; a list
//!   ends with its `…Complete` event (`EventList: Complete`) or with an `Error` answer
//!   (a PBX without `app_queue` refuses `QueueStatus`). The `…Complete` events and
//!   list answers are the session's own business ([`Step::Nothing`]), except that
//!   the last completion is [`Step::Synced`].
//! - **Keep-alive**: from login on, a `Ping` every `ping_interval` (zero: none).
//!   Only the answer to a ping (any response with its `ActionID`, normally
//!   `Ping: Pong`) counts: a stalled PBX may still be flushing queued events. A ping
//!   still unanswered when the next one is due is a miss; `ping_misses` misses in a
//!   row is [`Failure::Stalled`]. A pong resets the count.
//! - **Step timeouts**: connect, banner, Challenge answer and Login answer each get
//!   `step_timeout`; the lists get `step_timeout` without progress (an answer, an
//!   item or a completion of one of them restarts it, so a big PBX's long lists do
//!   not time out while they flow). Expiry is [`Failure::Timeout`] with the phase.
//! - **Backoff**: after the `k`-th failure in a row the next attempt is at
//!   `now + jitter(min(backoff_max, backoff_min * 2^(k-1)))`, the jitter being uniform
//!   in `[d/2, d]` (xorshift seeded by [`Session::new`]'s `seed`). Failures before a
//!   connection count too; a session that was live for `stable_after` resets `k`, so
//!   losing it retries quickly. Attempts go on forever.
//!
//! The first attempt is due at once. [`Status`] follows every transition for
//! `/metrics` and `/healthz`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use switchboard_proto::ami::{
    Item, Message, ParseError, decode_text, md5_key, write_action, write_login, write_login_md5,
};

use super::Millis;

/// Default `Events:` value of the login: every class the AMI user may read.
pub const DEFAULT_EVENTS: &str = "on";
/// Default interval between keep-alive pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Default number of unanswered pings in a row that fail the session.
pub const DEFAULT_PING_MISSES: u32 = 2;
/// Default timeout of each step before live (connect, banner, challenge, login,
/// lists).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default delay before the retry after a first failure.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Default longest delay between attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default time live after which the backoff starts again from its minimum.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(30);

/// The prefix of every `ActionID` the session sends (the gateway's is `sb-g-`).
pub const ACTION_ID_PREFIX: &str = "sb-s-";
/// The lists that rebuild the state model after login, in the order they are sent.
pub const RESYNC_LISTS: [&str; 3] = ["CoreShowChannels", "QueueStatus", "Status"];

/// Pings remembered while unanswered (more are forgotten, oldest first).
const MAX_PINGS_TRACKED: usize = 8;
/// The longest excerpt of a bad first line kept in a [`Failure::BadBanner`].
const EXCERPT_CHARS: usize = 80;

/// The session's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The AMI user (`Username:`).
    pub user: String,
    /// Its secret: sent only in a plain login, otherwise hashed with the challenge.
    pub secret: String,
    /// The `Events:` value of the login (omitted when empty).
    pub events: String,
    /// Interval between keep-alive pings (zero: no pings).
    pub ping_interval: Duration,
    /// Unanswered pings in a row that fail the session (0 counts as 1).
    pub ping_misses: u32,
    /// Timeout of each step before live (connect, banner, challenge, login, lists).
    pub step_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Time live after which a loss retries after `backoff_min` again.
    pub stable_after: Duration,
}

impl SessionConfig {
    /// The settings for `user` and `secret`, every other one at its default.
    pub fn new(user: impl Into<String>, secret: impl Into<String>) -> SessionConfig {
        SessionConfig {
            user: user.into(),
            secret: secret.into(),
            events: DEFAULT_EVENTS.to_owned(),
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_misses: DEFAULT_PING_MISSES,
            step_timeout: DEFAULT_STEP_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stable_after: DEFAULT_STABLE_AFTER,
        }
    }
}

/// The secret is not shown.
impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("ping_interval", &self.ping_interval)
            .field("ping_misses", &self.ping_misses)
            .field("step_timeout", &self.step_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("stable_after", &self.stable_after)
            .finish()
    }
}

/// Where the session is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// No connection; the next attempt is due at the retry time.
    Waiting,
    /// The thread is connecting.
    Connecting,
    /// TCP is up; the banner is awaited.
    Banner,
    /// `Challenge` sent; its answer is awaited.
    Challenge,
    /// `Login` sent; its answer is awaited.
    Login,
    /// Logged in; the resync lists are coming.
    Syncing,
    /// Synced: the state model follows the PBX.
    Live,
}

impl Phase {
    /// A lowercase name, for logs, `/healthz` and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Connecting => "connecting",
            Phase::Banner => "banner",
            Phase::Challenge => "challenge",
            Phase::Login => "login",
            Phase::Syncing => "syncing",
            Phase::Live => "live",
        }
    }

    /// What a timeout in this phase was waiting for.
    const fn awaited(self) -> &'static str {
        match self {
            Phase::Waiting | Phase::Live => "the PBX",
            Phase::Connecting => "the TCP connection",
            Phase::Banner => "the AMI banner",
            Phase::Challenge => "the answer to Challenge",
            Phase::Login => "the answer to Login",
            Phase::Syncing => "the resync lists",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an attempt or a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connect failed (refused, unreachable, name not resolved): the error text.
    ConnectFailed(String),
    /// A receive or send failed (reset, broken pipe): the error text.
    Io(String),
    /// The PBX closed the socket, or said `Response: Goodbye`.
    Closed,
    /// The server did not start with an AMI banner: what it sent instead.
    BadBanner(String),
    /// The login was refused: the PBX's `Message:` (`Authentication failed`).
    LoginRejected(String),
    /// A step before live took too long.
    Timeout(Phase),
    /// The PBX stopped answering pings.
    Stalled,
    /// The stream could not be parsed (a line or a message over the limits).
    Garbage(String),
}

impl Failure {
    /// Every [`kind`](Self::kind), in the order of [`Status::failures`].
    pub const KINDS: [&'static str; 8] = [
        "connect",
        "io",
        "closed",
        "bad_banner",
        "login_rejected",
        "timeout",
        "stalled",
        "garbage",
    ];

    /// A short label for metrics (one of [`KINDS`](Self::KINDS)).
    pub const fn kind(&self) -> &'static str {
        match self {
            Failure::ConnectFailed(_) => "connect",
            Failure::Io(_) => "io",
            Failure::Closed => "closed",
            Failure::BadBanner(_) => "bad_banner",
            Failure::LoginRejected(_) => "login_rejected",
            Failure::Timeout(_) => "timeout",
            Failure::Stalled => "stalled",
            Failure::Garbage(_) => "garbage",
        }
    }

    /// The position of [`kind`](Self::kind) in [`KINDS`](Self::KINDS).
    pub const fn index(&self) -> usize {
        match self {
            Failure::ConnectFailed(_) => 0,
            Failure::Io(_) => 1,
            Failure::Closed => 2,
            Failure::BadBanner(_) => 3,
            Failure::LoginRejected(_) => 4,
            Failure::Timeout(_) => 5,
            Failure::Stalled => 6,
            Failure::Garbage(_) => 7,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ConnectFailed(e) => write!(f, "cannot connect to the PBX: {e}"),
            Failure::Io(e) => write!(f, "AMI socket error: {e}"),
            Failure::Closed => f.write_str("the PBX closed the AMI session"),
            Failure::BadBanner(got) => write!(f, "not an AMI server: it sent {got:?}"),
            Failure::LoginRejected(m) => write!(f, "AMI login rejected: {m}"),
            Failure::Timeout(p) => write!(f, "timed out waiting for {}", p.awaited()),
            Failure::Stalled => f.write_str("the PBX stopped answering pings"),
            Failure::Garbage(e) => write!(f, "unreadable AMI stream: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

/// A parser error ends the session: a bad first line is [`Failure::BadBanner`],
/// anything else [`Failure::Garbage`].
impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Failure {
        match e {
            ParseError::BadBanner => Failure::BadBanner("a first line that is not a banner".into()),
            other => Failure::Garbage(other.to_string()),
        }
    }
}

/// What the thread does after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing (beyond sending `out`).
    Nothing,
    /// Give this message (an event) to the state model (`Pbx::on_event`).
    Pbx,
    /// Logged in: call `Pbx::resync_begin` (the lists are in `out`).
    LoggedIn,
    /// Every list is complete: call `Pbx::resync_end`; the session is live.
    Synced,
    /// Close the socket, then call [`Session::on_failure`] with this failure.
    Fail(Failure),
}

/// What `/metrics` and `/healthz` show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// TCP is up (from `on_connected` to `on_failure`).
    pub connected: bool,
    /// Logged in (from the accepted login to `on_failure`).
    pub logged_in: bool,
    /// Synced and live.
    pub live: bool,
    /// Connects started.
    pub attempts: u64,
    /// Sessions lost after login.
    pub reconnects: u64,
    /// Failures by kind, in the order of [`Failure::KINDS`].
    pub failures: [u64; Failure::KINDS.len()],
    /// Failures since the last stable session (what the backoff grows with).
    pub consecutive_failures: u32,
    /// The last failure's text, and when it happened.
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
    /// The AMI version of the last banner (`5.0.4`).
    pub version: Option<String>,
    /// Live since.
    pub since: Option<Millis>,
    /// Pings answered.
    pub pongs: u64,
    /// When the next attempt is due, while waiting after a failure.
    pub retry_at: Option<Millis>,
}

impl Status {
    /// `(kind, count)` for every failure kind.
    pub fn failures_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Failure::KINDS
            .iter()
            .copied()
            .zip(self.failures.iter().copied())
    }
}

/// The supervisor of one PBX's AMI session (see the module docs).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    /// A `Step::Fail` was returned: inputs are ignored until `on_failure`.
    failing: bool,
    /// xorshift64 state (never 0).
    rng: u64,
    /// The number of the next `sb-s-<n>`.
    next_id: u64,
    /// Waiting: when the next attempt is due.
    retry_at: Millis,
    /// Failures since the last stable session.
    consecutive: u32,
    /// Connecting to Syncing: when the current step times out.
    deadline: Millis,
    challenge_id: u64,
    login_id: u64,
    /// Syncing: each list's `ActionID` number and whether it is complete.
    lists: [(u64, bool); RESYNC_LISTS.len()],
    /// Syncing: how many of the lists have been asked for. They are asked for one at a
    /// time: a PBX queues a whole list at once, and the three of a big PBX together
    /// can pass what it lets one session queue (Asterisk and ami-sim drop the session).
    lists_sent: usize,
    /// Syncing and Live: when the next ping is due.
    next_ping_at: Millis,
    /// Pings sent and not answered, oldest first.
    pings: Vec<u64>,
    /// Pings in a row found unanswered when the next was due.
    misses: u32,
    status: Status,
}

impl Session {
    /// A session waiting for its first attempt, due at once. `seed` drives the
    /// backoff jitter (any value; different engines should differ).
    pub fn new(config: SessionConfig, seed: u64) -> Session {
        Session {
            config,
            phase: Phase::Waiting,
            failing: false,
            rng: seed_rng(seed),
            next_id: 1,
            retry_at: 0,
            consecutive: 0,
            deadline: 0,
            challenge_id: 0,
            login_id: 0,
            lists: [(0, false); RESYNC_LISTS.len()],
            lists_sent: 0,
            next_ping_at: 0,
            pings: Vec::new(),
            misses: 0,
            status: Status::default(),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether the thread should start a connect now: waiting, retry time reached.
    pub fn connect_due(&self, now: Millis) -> bool {
        self.phase == Phase::Waiting && now >= self.retry_at
    }

    /// The thread started a connect (the connect step's timeout starts).
    pub fn on_connecting(&mut self, now: Millis) {
        self.reset_connection();
        self.phase = Phase::Connecting;
        self.deadline = now.saturating_add(ms(self.config.step_timeout));
        self.status.attempts += 1;
        self.status.retry_at = None;
    }

    /// TCP is up: the banner is awaited.
    pub fn on_connected(&mut self, now: Millis) {
        self.phase = Phase::Banner;
        self.deadline = now.saturating_add(ms(self.config.step_timeout));
        self.status.connected = true;
    }

    /// An item from the parser (`Parser::client()`); bytes to send are appended to
    /// `out`. Messages whose `ActionID` starts `sb-g-` go to the gateway, not here
    /// (were they passed, responses would be ignored and events be [`Step::Pbx`]).
    pub fn on_item(&mut self, item: &Item<'_>, now: Millis, out: &mut Vec<u8>) -> Step {
        if self.failing {
            return Step::Nothing;
        }
        match self.phase {
            Phase::Waiting => Step::Nothing,
            Phase::Connecting | Phase::Banner => match item {
                Item::Banner(version) => self.on_banner(version, now, out),
                Item::Message(m) => self.fail(Failure::BadBanner(excerpt(m.raw()))),
                Item::Rejected(_) => self.fail(Failure::BadBanner("a rejected message".into())),
            },
            _ => match item {
                Item::Message(m) => self.on_message(m, now, out),
                Item::Banner(v) => self.fail(Failure::Garbage(format!("a second banner ({v})"))),
                Item::Rejected(_) => Step::Nothing,
            },
        }
    }

    /// The clock: keep-alive pings (in `out`), missed pongs, step timeouts, the
    /// stable-session reset. Call it at [`next_deadline`](Self::next_deadline), or
    /// every 100 ms to 1 s.
    pub fn on_tick(&mut self, now: Millis, out: &mut Vec<u8>) -> Step {
        if self.failing {
            return Step::Nothing;
        }
        match self.phase {
            Phase::Waiting => Step::Nothing,
            Phase::Connecting | Phase::Banner | Phase::Challenge | Phase::Login => {
                self.check_deadline(now)
            }
            Phase::Syncing => match self.check_deadline(now) {
                Step::Nothing => self.keep_alive(now, out),
                fail => fail,
            },
            Phase::Live => {
                if self.stable(now) {
                    self.consecutive = 0;
                    self.status.consecutive_failures = 0;
                }
                self.keep_alive(now, out)
            }
        }
    }

    /// The socket is gone (after a [`Step::Fail`], or a connect, receive or send
    /// error, or the peer closing): records the failure and schedules the next
    /// attempt. Call it once per lost attempt.
    pub fn on_failure(&mut self, failure: Failure, now: Millis) {
        if self.stable(now) {
            self.consecutive = 0;
        }
        if self.status.logged_in {
            self.status.reconnects += 1;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let delay = self.backoff_delay();
        let delay = self.jitter(delay);
        self.retry_at = now.saturating_add(delay);

        self.reset_connection();
        self.phase = Phase::Waiting;
        let s = &mut self.status;
        if let Some(n) = s.failures.get_mut(failure.index()) {
            *n += 1;
        }
        s.consecutive_failures = self.consecutive;
        s.last_error = Some(failure.to_string());
        s.last_error_at = Some(now);
        s.retry_at = Some(self.retry_at);
    }

    /// When [`on_tick`](Self::on_tick) (a ping, a timeout) or a connect is next
    /// needed; `None` after a `Step::Fail` until `on_failure`, and when nothing is
    /// scheduled (live with keep-alive off).
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.failing {
            return None;
        }
        let at = match self.phase {
            Phase::Waiting => self.retry_at,
            Phase::Connecting | Phase::Banner | Phase::Challenge | Phase::Login => self.deadline,
            Phase::Syncing => self.deadline.min(self.next_ping_at),
            Phase::Live => self.next_ping_at,
        };
        (at != Millis::MAX).then_some(at)
    }

    fn on_banner(&mut self, version: &str, now: Millis, out: &mut Vec<u8>) -> Step {
        self.status.connected = true;
        self.status.version = Some(version.to_owned());
        self.challenge_id = self.take_id();
        write_action(
            out,
            "Challenge",
            &action_id(self.challenge_id),
            &[("AuthType", "MD5")],
        );
        self.enter(Phase::Challenge, now);
        Step::Nothing
    }

    fn on_message(&mut self, m: &Message<'_>, now: Millis, out: &mut Vec<u8>) -> Step {
        let Some(status) = m.response() else {
            if m.event().is_some() {
                return self.on_event(m, now, out);
            }
            return Step::Nothing;
        };
        if status.eq_ignore_ascii_case(b"Goodbye") {
            return self.fail(Failure::Closed);
        }
        let Some(id) = our_id(m) else {
            return Step::Nothing;
        };
        let success = status.eq_ignore_ascii_case(b"Success");
        match self.phase {
            Phase::Challenge if id == self.challenge_id => {
                self.login_id = self.take_id();
                let login_id = action_id(self.login_id);
                let events = Some(self.config.events.as_str()).filter(|e| !e.is_empty());
                match m.get_str("Challenge").filter(|c| success && !c.is_empty()) {
                    Some(challenge) => {
                        let key = md5_key(&challenge, &self.config.secret);
                        write_login_md5(out, &login_id, &self.config.user, &key, events);
                    }
                    None => write_login(
                        out,
                        &login_id,
                        &self.config.user,
                        &self.config.secret,
                        events,
                    ),
                }
                self.enter(Phase::Login, now);
                Step::Nothing
            }
            Phase::Login if id == self.login_id => {
                if !success {
                    let message = m
                        .get_str("Message")
                        .filter(|m| !m.is_empty())
                        .unwrap_or(Cow::Borrowed("no reason given"));
                    return self.fail(Failure::LoginRejected(message.into_owned()));
                }
                self.status.logged_in = true;
                for i in 0..RESYNC_LISTS.len() {
                    let id = self.take_id();
                    if let Some(list) = self.lists.get_mut(i) {
                        *list = (id, false);
                    }
                }
                self.lists_sent = 0;
                self.ask_next_list(out);
                self.next_ping_at = match ms(self.config.ping_interval) {
                    0 => Millis::MAX, // keep-alive off
                    interval => now.saturating_add(interval),
                };
                self.enter(Phase::Syncing, now);
                Step::LoggedIn
            }
            Phase::Syncing | Phase::Live => {
                if let Some(at) = self.pings.iter().position(|&p| p == id) {
                    self.pings.drain(..=at);
                    self.misses = 0;
                    self.status.pongs += 1;
                    return Step::Nothing;
                }
                match self.list_of(id) {
                    Some(i) if !success => self.complete(i, now, out),
                    Some(_) => {
                        self.progress(now);
                        Step::Nothing
                    }
                    None => Step::Nothing,
                }
            }
            _ => Step::Nothing,
        }
    }

    fn on_event(&mut self, m: &Message<'_>, now: Millis, out: &mut Vec<u8>) -> Step {
        // Only a resync's lists are ours; live, the ActionID is not even looked for.
        if self.phase == Phase::Syncing
            && let Some(i) = our_id(m).and_then(|id| self.list_of(id))
        {
            let complete = m
                .get("EventList")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"Complete"))
                || m.event().is_some_and(|e| e.ends_with(b"Complete"));
            if complete {
                return self.complete(i, now, out);
            }
            self.progress(now);
        }
        Step::Pbx
    }

    /// Writes the action of the next list not asked for yet, if any.
    fn ask_next_list(&mut self, out: &mut Vec<u8>) {
        if let (Some(name), Some(&(id, _))) = (
            RESYNC_LISTS.get(self.lists_sent),
            self.lists.get(self.lists_sent),
        ) {
            write_action(out, name, &action_id(id), &[]);
            self.lists_sent += 1;
        }
    }

    /// The list `i` is complete: `Synced` if it was the last one, else the next list
    /// is asked for.
    fn complete(&mut self, i: usize, now: Millis, out: &mut Vec<u8>) -> Step {
        if let Some(list) = self.lists.get_mut(i) {
            list.1 = true;
        }
        if self.lists.iter().all(|&(_, done)| done) {
            self.phase = Phase::Live;
            self.lists = [(0, false); RESYNC_LISTS.len()];
            self.status.live = true;
            self.status.since = Some(now);
            Step::Synced
        } else {
            self.ask_next_list(out);
            self.progress(now);
            Step::Nothing
        }
    }

    /// Syncing: which incomplete list has this `ActionID` number.
    fn list_of(&self, id: u64) -> Option<usize> {
        if self.phase != Phase::Syncing {
            return None;
        }
        self.lists
            .iter()
            .position(|&(list, done)| list == id && !done)
    }

    /// A list moved: its timeout starts again.
    fn progress(&mut self, now: Millis) {
        self.deadline = now.saturating_add(ms(self.config.step_timeout));
    }

    fn keep_alive(&mut self, now: Millis, out: &mut Vec<u8>) -> Step {
        if now < self.next_ping_at {
            return Step::Nothing;
        }
        if !self.pings.is_empty() {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= self.config.ping_misses.max(1) {
                return self.fail(Failure::Stalled);
            }
        }
        if self.pings.len() >= MAX_PINGS_TRACKED {
            self.pings.remove(0);
        }
        let id = self.take_id();
        write_action(out, "Ping", &action_id(id), &[]);
        self.pings.push(id);
        self.next_ping_at = now.saturating_add(ms(self.config.ping_interval));
        Step::Nothing
    }

    fn check_deadline(&mut self, now: Millis) -> Step {
        if now >= self.deadline {
            self.fail(Failure::Timeout(self.phase))
        } else {
            Step::Nothing
        }
    }

    /// Live for at least `stable_after`.
    fn stable(&self, now: Millis) -> bool {
        self.status
            .since
            .is_some_and(|since| now.saturating_sub(since) >= ms(self.config.stable_after))
    }

    fn enter(&mut self, phase: Phase, now: Millis) {
        self.phase = phase;
        self.deadline = now.saturating_add(ms(self.config.step_timeout));
    }

    fn fail(&mut self, failure: Failure) -> Step {
        self.failing = true;
        Step::Fail(failure)
    }

    /// Forgets everything about the current connection.
    fn reset_connection(&mut self) {
        self.failing = false;
        self.challenge_id = 0;
        self.login_id = 0;
        self.lists = [(0, false); RESYNC_LISTS.len()];
        self.pings.clear();
        self.misses = 0;
        let s = &mut self.status;
        s.connected = false;
        s.logged_in = false;
        s.live = false;
        s.since = None;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// `min(backoff_max, backoff_min * 2^(consecutive - 1))`, in milliseconds.
    fn backoff_delay(&self) -> Millis {
        let max = ms(self.config.backoff_max);
        let mut delay = ms(self.config.backoff_min);
        for _ in 1..self.consecutive {
            if delay == 0 || delay >= max {
                break;
            }
            delay = delay.saturating_mul(2);
        }
        delay.min(max)
    }

    /// Uniform in `[delay / 2, delay]`.
    fn jitter(&mut self, delay: Millis) -> Millis {
        let low = delay / 2;
        let span = delay - low;
        low + self.next_random() % (span + 1)
    }

    /// xorshift64.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// A non-zero xorshift state from any seed (one splitmix64 step spreads small seeds).
fn seed_rng(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z }
}

fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

fn action_id(n: u64) -> String {
    format!("{ACTION_ID_PREFIX}{n}")
}

/// The number of a session `ActionID` (`sb-s-<n>`).
fn our_id(m: &Message<'_>) -> Option<u64> {
    let id = m.action_id()?.strip_prefix(ACTION_ID_PREFIX.as_bytes())?;
    std::str::from_utf8(id).ok()?.parse().ok()
}

/// The first line of what came instead of a banner, shortened.
fn excerpt(raw: &[u8]) -> String {
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = decode_text(line);
    let mut chars = text.chars();
    let mut s: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use switchboard_proto::ami::{MessageWriter, Parser};

    use super::*;

    const MD5_CAPTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/fixtures/ami/asterisk16-md5.bin"
    ));
    const BADLOGIN_CAPTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/fixtures/ami/asterisk16-badlogin.bin"
    ));
    const CALLS_CAPTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/fixtures/ami/asterisk16-calls.bin"
    ));
    const EDGE_CAPTURE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/tests/fixtures/ami/asterisk16-edge.bin"
    ));

    /// The challenge in asterisk16-md5.bin.
    const CAPTURED_CHALLENGE: &str = "942327271";
    /// md5("942327271" + "secret"), computed independently (see proto's auth tests).
    const CAPTURED_KEY: &str = "33af22d540bb93b441beba27cb1d524e";

    const T0: Millis = 1_795_248_000_000;

    fn config() -> SessionConfig {
        SessionConfig::new("switchboard", "secret")
    }

    /// Every message of `capture` (after its banner) whose ActionID is `id`, written
    /// back with the ActionID `to` instead.
    fn answers(capture: &[u8], id: &str, to: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages(capture) {
            let m = m.message();
            if m.action_id() != Some(id.as_bytes()) {
                continue;
            }
            let mut w = MessageWriter::new(&mut out);
            for f in m.fields() {
                if f.is("ActionID") {
                    w.field("ActionID", to);
                } else {
                    w.field_bytes(f.key(), f.value());
                }
            }
            w.finish();
        }
        assert!(!out.is_empty(), "no {id} in the capture");
        out
    }

    /// The messages of a capture (banner skipped) or of bytes without a banner.
    fn messages(capture: &[u8]) -> Vec<switchboard_proto::ami::OwnedMessage> {
        let mut parser = if capture.starts_with(b"Asterisk Call Manager/") {
            Parser::client()
        } else {
            Parser::client().skip_banner()
        };
        let mut at = 0;
        let mut all = Vec::new();
        while let Ok((n, Some(item))) = parser.parse(&capture[at..]) {
            at += n;
            if let Item::Message(m) = item {
                all.push(m.into_owned());
            }
        }
        all
    }

    /// The first `n` events of asterisk16-calls.bin without an ActionID, raw.
    fn live_events(n: usize) -> Vec<Vec<u8>> {
        messages(CALLS_CAPTURE)
            .iter()
            .map(|m| m.message())
            .filter(|m| m.event().is_some() && m.action_id().is_none())
            .take(n)
            .map(|m| m.raw().to_vec())
            .collect()
    }

    fn banner(capture: &[u8]) -> &[u8] {
        let end = capture.iter().position(|&b| b == b'\n').unwrap() + 1;
        &capture[..end]
    }

    /// A session, a client parser and its buffer, the clock and what was sent.
    struct Harness {
        session: Session,
        parser: Parser,
        buf: Vec<u8>,
        out: Vec<u8>,
        now: Millis,
    }

    impl Harness {
        fn new(config: SessionConfig) -> Harness {
            Harness {
                session: Session::new(config, 7),
                parser: Parser::client(),
                buf: Vec::new(),
                out: Vec::new(),
                now: T0,
            }
        }

        /// Connects (a fresh parser, as for a new socket).
        fn connect(&mut self) {
            assert!(self.session.connect_due(self.now));
            self.session.on_connecting(self.now);
            assert_eq!(self.session.phase(), Phase::Connecting);
            self.session.on_connected(self.now);
            assert_eq!(self.session.phase(), Phase::Banner);
            self.parser = Parser::client();
            self.buf.clear();
        }

        /// Feeds server bytes; the steps, one per item (a parse error is a Fail).
        fn feed(&mut self, bytes: &[u8]) -> Vec<Step> {
            self.buf.extend_from_slice(bytes);
            let mut steps = Vec::new();
            let mut at = 0;
            loop {
                match self.parser.parse(&self.buf[at..]) {
                    Ok((n, Some(item))) => {
                        at += n;
                        steps.push(self.session.on_item(&item, self.now, &mut self.out));
                    }
                    Ok((n, None)) => {
                        at += n;
                        break;
                    }
                    Err(e) => {
                        steps.push(Step::Fail(e.into()));
                        break;
                    }
                }
            }
            self.buf.drain(..at);
            steps
        }

        /// Feeds one message; its one step.
        fn step(&mut self, bytes: &[u8]) -> Step {
            let steps = self.feed(bytes);
            assert_eq!(steps.len(), 1, "{steps:?}");
            steps.into_iter().next().unwrap()
        }

        fn tick(&mut self) -> Step {
            self.session.on_tick(self.now, &mut self.out)
        }

        fn sent(&mut self) -> String {
            String::from_utf8(std::mem::take(&mut self.out)).unwrap()
        }

        /// Banner, challenge, MD5 login accepted: Syncing, the lists sent.
        fn log_in(&mut self) {
            self.connect();
            let first = self.session.next_id;
            assert_eq!(self.step(banner(MD5_CAPTURE)), Step::Nothing);
            let step = self.step(&answers(MD5_CAPTURE, "ch-1", &action_id(first)));
            assert_eq!(step, Step::Nothing);
            let step = self.step(&answers(MD5_CAPTURE, "li-1", &action_id(first + 1)));
            assert_eq!(step, Step::LoggedIn);
            self.out.clear();
        }

        /// The lists' ActionIDs, in RESYNC_LISTS order.
        fn list_ids(&self) -> [String; 3] {
            self.session.lists.map(|(id, _)| action_id(id))
        }

        /// Logged in and synced with empty lists.
        fn go_live(&mut self) {
            self.log_in();
            self.complete_lists();
            self.out.clear();
        }

        /// Every resync list answered, empty: the session is live.
        fn complete_lists(&mut self) {
            let ids = self.list_ids();
            for (name, id) in [
                "CoreShowChannelsComplete",
                "QueueStatusComplete",
                "StatusComplete",
            ]
            .iter()
            .zip(&ids)
            {
                self.feed(complete(name, id).as_bytes());
            }
            assert_eq!(self.session.phase(), Phase::Live);
        }

        /// Fails the session now with `failure` (through on_failure); the delay.
        fn fail_with(&mut self, failure: Failure) -> Millis {
            self.session.on_failure(failure, self.now);
            assert_eq!(self.session.phase(), Phase::Waiting);
            let retry = self.session.status().retry_at.unwrap();
            assert_eq!(self.session.next_deadline(), Some(retry));
            retry - self.now
        }
    }

    fn complete(event: &str, id: &str) -> String {
        format!("Event: {event}\r\nActionID: {id}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n")
    }

    fn pong(id: &str) -> String {
        format!(
            "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1795248261.359381\r\n\r\n"
        )
    }

    #[test]
    fn md5_login_with_the_captured_challenge() {
        let mut h = Harness::new(config());
        assert_eq!(h.session.phase(), Phase::Waiting);
        assert!(h.session.connect_due(0), "the first attempt is due at once");
        h.connect();
        assert!(h.session.status().connected);
        assert_eq!(h.session.status().attempts, 1);

        assert_eq!(h.step(banner(MD5_CAPTURE)), Step::Nothing);
        assert_eq!(h.session.phase(), Phase::Challenge);
        assert_eq!(h.session.status().version.as_deref(), Some("5.0.4"));
        assert_eq!(
            h.sent(),
            "Action: Challenge\r\nActionID: sb-s-1\r\nAuthType: MD5\r\n\r\n"
        );

        let challenge = answers(MD5_CAPTURE, "ch-1", "sb-s-1");
        assert!(String::from_utf8_lossy(&challenge).contains(CAPTURED_CHALLENGE));
        assert_eq!(h.step(&challenge), Step::Nothing);
        assert_eq!(h.session.phase(), Phase::Login);
        assert_eq!(md5_key(CAPTURED_CHALLENGE, "secret"), CAPTURED_KEY);
        assert_eq!(
            h.sent(),
            format!(
                "Action: Login\r\nActionID: sb-s-2\r\nAuthType: MD5\r\nUsername: switchboard\r\n\
                 Key: {CAPTURED_KEY}\r\nEvents: on\r\n\r\n"
            )
        );

        let accepted = answers(MD5_CAPTURE, "li-1", "sb-s-2");
        assert!(String::from_utf8_lossy(&accepted).contains("Authentication accepted"));
        assert_eq!(h.step(&accepted), Step::LoggedIn);
        assert_eq!(h.session.phase(), Phase::Syncing);
        assert!(h.session.status().logged_in);
        assert!(!h.session.status().live);
        // One list at a time: the next is asked for when the previous is complete.
        assert_eq!(
            h.sent(),
            "Action: CoreShowChannels\r\nActionID: sb-s-3\r\n\r\n"
        );
        assert_eq!(
            h.step(complete("CoreShowChannelsComplete", "sb-s-3").as_bytes()),
            Step::Nothing
        );
        assert_eq!(h.sent(), "Action: QueueStatus\r\nActionID: sb-s-4\r\n\r\n");
        assert_eq!(
            h.step(complete("QueueStatusComplete", "sb-s-4").as_bytes()),
            Step::Nothing
        );
        assert_eq!(h.sent(), "Action: Status\r\nActionID: sb-s-5\r\n\r\n");

        // FullyBooted follows the login: for the state model.
        let booted = live_events(1);
        assert!(booted[0].starts_with(b"Event: FullyBooted"));
        assert_eq!(h.step(&booted[0]), Step::Pbx);
    }

    #[test]
    fn events_mask_is_sent_as_configured_and_omitted_when_empty() {
        let mut c = config();
        c.events = "call,agent".into();
        let mut h = Harness::new(c);
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        h.feed(b"Response: Success\r\nActionID: sb-s-1\r\nChallenge: 1\r\n\r\n");
        assert!(h.sent().ends_with("Events: call,agent\r\n\r\n"));

        let mut c = config();
        c.events.clear();
        let mut h = Harness::new(c);
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        h.feed(b"Response: Error\r\nActionID: sb-s-1\r\nMessage: Must specify AuthType\r\n\r\n");
        let sent = h.sent();
        assert!(sent.ends_with("Secret: secret\r\n\r\n"), "{sent}");
        assert!(!sent.contains("Events"));
    }

    #[test]
    fn plain_login_when_the_challenge_is_refused() {
        let mut h = Harness::new(config());
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        h.out.clear();
        // ami-sim's (and Asterisk's) refusal of a Challenge it cannot serve.
        let refused =
            "Response: Error\r\nActionID: sb-s-1\r\nMessage: Must specify AuthType\r\n\r\n";
        assert_eq!(h.step(refused.as_bytes()), Step::Nothing);
        assert_eq!(h.session.phase(), Phase::Login);
        assert_eq!(
            h.sent(),
            "Action: Login\r\nActionID: sb-s-2\r\nUsername: switchboard\r\nSecret: secret\r\n\
             Events: on\r\n\r\n"
        );
        let accepted = answers(CALLS_CAPTURE, "login", "sb-s-2");
        assert_eq!(h.step(&accepted), Step::LoggedIn);

        // A Success without a Challenge field falls back too.
        let mut h = Harness::new(config());
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        h.out.clear();
        h.feed(b"Response: Success\r\nActionID: sb-s-1\r\n\r\n");
        assert!(h.sent().contains("Secret: secret\r\n"));
    }

    #[test]
    fn bad_login_is_rejected_and_retried_quickly() {
        let mut h = Harness::new(config());
        h.connect();
        h.feed(&BADLOGIN_CAPTURE[..banner(BADLOGIN_CAPTURE).len()]);
        h.feed(b"Response: Success\r\nActionID: sb-s-1\r\nChallenge: 5\r\n\r\n");
        let step = h.step(&answers(BADLOGIN_CAPTURE, "bad-1", "sb-s-2"));
        let failure = Failure::LoginRejected("Authentication failed".into());
        assert_eq!(step, Step::Fail(failure.clone()));
        // Until on_failure, the session ignores what still comes.
        assert_eq!(
            h.step(&answers(MD5_CAPTURE, "li-1", "sb-s-2")),
            Step::Nothing
        );
        assert_eq!(h.tick(), Step::Nothing);
        assert_eq!(h.session.next_deadline(), None);

        h.now += 1_000; // the PBX closes the socket a second later
        let delay = h.fail_with(failure);
        let min = ms(DEFAULT_BACKOFF_MIN);
        assert!((min / 2..=min).contains(&delay), "{delay}");
        let s = h.session.status();
        assert!(!s.connected && !s.logged_in && !s.live);
        assert_eq!(s.reconnects, 0, "never logged in");
        assert_eq!(
            s.failures[Failure::KINDS
                .iter()
                .position(|&k| k == "login_rejected")
                .unwrap()],
            1
        );
        assert_eq!(s.failures.iter().sum::<u64>(), 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("AMI login rejected: Authentication failed")
        );
        assert_eq!(s.last_error_at, Some(h.now));
        assert_eq!(s.consecutive_failures, 1);
        assert!(!h.session.connect_due(h.now + delay - 1));
        assert!(h.session.connect_due(h.now + delay));
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_in_bounds() {
        let c = config();
        let (min, max) = (ms(c.backoff_min), ms(c.backoff_max));
        for seed in [0, 1, 2, 42, u64::MAX] {
            let mut s = Session::new(c.clone(), seed);
            let mut now = T0;
            let mut seen = std::collections::HashSet::new();
            for k in 1..=200u32 {
                // Failures before ever connecting count too.
                s.on_connecting(now);
                s.on_failure(Failure::ConnectFailed("Connection refused".into()), now);
                let delay = s.status().retry_at.unwrap() - now;
                let full = (0..k - 1).fold(min, |d, _| (d * 2).min(max));
                assert!(
                    (full / 2..=full).contains(&delay),
                    "seed {seed} failure {k}: {delay} not in [{}, {full}]",
                    full / 2
                );
                if full == max {
                    seen.insert(delay);
                }
                assert_eq!(s.status().consecutive_failures, k);
                now += delay;
                assert!(s.connect_due(now));
            }
            assert_eq!(s.status().attempts, 200);
            assert_eq!(s.status().failures[0], 200);
            assert!(seen.len() > 50, "jitter spreads: {} values", seen.len());
        }
        // The first delays: 250, 500, 1000, 2000 ms (full values), capped at 30 s.
        let mut s = Session::new(c, 3);
        let mut fulls = Vec::new();
        for _ in 0..10 {
            s.on_failure(Failure::Closed, T0);
            fulls.push(s.backoff_delay());
        }
        assert_eq!(
            fulls,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn a_stable_session_resets_the_backoff() {
        let mut h = Harness::new(config());
        for _ in 0..6 {
            h.session.on_connecting(h.now);
            h.fail_with(Failure::ConnectFailed("Connection refused".into()));
        }
        h.now = h.session.status().retry_at.unwrap();

        // Live, but lost before stable_after: the backoff keeps growing.
        h.go_live();
        h.now += ms(DEFAULT_STABLE_AFTER) - 1;
        let delay = h.fail_with(Failure::Closed);
        assert_eq!(h.session.status().consecutive_failures, 7);
        assert!(delay >= 16_000 / 2, "{delay}");
        assert_eq!(h.session.status().reconnects, 1);

        // Live for stable_after: the next loss retries after backoff_min.
        h.now = h.session.status().retry_at.unwrap();
        h.go_live();
        let since = h.session.status().since.unwrap();
        assert_eq!(since, h.now);
        h.now += ms(DEFAULT_STABLE_AFTER);
        let delay = h.fail_with(Failure::Stalled);
        let min = ms(DEFAULT_BACKOFF_MIN);
        assert!((min / 2..=min).contains(&delay), "{delay}");
        assert_eq!(h.session.status().consecutive_failures, 1);
        assert_eq!(h.session.status().reconnects, 2);

        // The reset also shows in the status while live (on_tick).
        for _ in 0..3 {
            h.session.on_connecting(h.now);
            h.fail_with(Failure::Closed);
        }
        h.now = h.session.status().retry_at.unwrap();
        h.go_live();
        h.now += ms(DEFAULT_STABLE_AFTER);
        h.tick();
        assert_eq!(h.session.status().consecutive_failures, 0);
    }

    #[test]
    fn lists_sync_only_when_all_three_complete_in_any_order() {
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for order in orders {
            let mut h = Harness::new(config());
            h.log_in();
            let ids = h.list_ids();
            // Each list as the PBX sends it: answer, items, completion.
            let lists = [
                answers(MD5_CAPTURE, "csc-1", &ids[0]),
                answers(MD5_CAPTURE, "qs-1", &ids[1]),
                answers(EDGE_CAPTURE, "st-1", &ids[2]),
            ];
            let mut events = live_events(40).into_iter();
            let mut completed = 0;
            for &i in &order {
                let list = &lists[i];
                let msgs = messages(list);
                assert!(msgs.len() >= 2);
                for (n, m) in msgs.iter().enumerate() {
                    // A live event between every two list messages.
                    let event = events.next().unwrap();
                    assert_eq!(h.step(&event), Step::Pbx, "live event");
                    let m = m.message();
                    let mut raw = Vec::new();
                    m.write_to(&mut raw);
                    let step = h.step(&raw);
                    let last = n + 1 == msgs.len();
                    if n == 0 {
                        assert!(m.response().is_some());
                        assert_eq!(step, Step::Nothing, "the list's answer");
                    } else if !last {
                        assert_eq!(step, Step::Pbx, "a list item");
                    } else {
                        completed += 1;
                        let want = if completed == 3 {
                            Step::Synced
                        } else {
                            Step::Nothing
                        };
                        assert_eq!(step, want, "order {order:?}, list {i}");
                    }
                    if completed < 3 {
                        assert_eq!(h.session.phase(), Phase::Syncing);
                        assert!(!h.session.status().live);
                    }
                }
            }
            assert_eq!(h.session.phase(), Phase::Live);
            let s = h.session.status();
            assert!(s.live && s.logged_in && s.connected);
            assert_eq!(s.since, Some(h.now));
            // Live: every event is for the state model, a repeated completion too.
            assert_eq!(h.step(&events.next().unwrap()), Step::Pbx);
            assert_eq!(
                h.step(complete("StatusComplete", &ids[2]).as_bytes()),
                Step::Pbx
            );
            // Nothing sent but the two lists asked for as the earlier ones completed.
            let sent = h.sent();
            assert_eq!(sent.matches("Action: ").count(), 2, "{sent}");
            assert!(!sent.contains("Ping"), "{sent}");
        }
    }

    #[test]
    fn an_error_answer_to_queue_status_still_completes_the_sync() {
        let mut h = Harness::new(config());
        h.log_in();
        let ids = h.list_ids();
        let refused = format!(
            "Response: Error\r\nActionID: {}\r\nMessage: Invalid/unknown command: QueueStatus. \
             Use Action: ListCommands to show available commands.\r\n\r\n",
            ids[1]
        );
        assert_eq!(h.step(refused.as_bytes()), Step::Nothing);
        assert_eq!(
            h.step(complete("CoreShowChannelsComplete", &ids[0]).as_bytes()),
            Step::Nothing
        );
        assert_eq!(h.session.phase(), Phase::Syncing);
        assert_eq!(
            h.step(complete("StatusComplete", &ids[2]).as_bytes()),
            Step::Synced
        );
        assert_eq!(h.session.phase(), Phase::Live);

        // The refusal as the last one completes too.
        let mut h = Harness::new(config());
        h.log_in();
        let ids = h.list_ids();
        h.feed(complete("CoreShowChannelsComplete", &ids[0]).as_bytes());
        h.feed(complete("StatusComplete", &ids[2]).as_bytes());
        let refused = format!(
            "Response: Error\r\nActionID: {}\r\nMessage: x\r\n\r\n",
            ids[1]
        );
        assert_eq!(h.step(refused.as_bytes()), Step::Synced);
    }

    #[test]
    fn pings_on_schedule_and_stalled_after_the_misses() {
        let mut h = Harness::new(config());
        h.log_in();
        let login = h.now;
        let interval = ms(DEFAULT_PING_INTERVAL);
        // Pings start at login, while syncing.
        assert_eq!(h.session.next_deadline(), Some(login + interval));
        h.now = login + interval - 1;
        assert_eq!(h.tick(), Step::Nothing);
        assert!(h.out.is_empty());
        h.now = login + interval;
        assert_eq!(h.tick(), Step::Nothing);
        assert_eq!(h.sent(), "Action: Ping\r\nActionID: sb-s-6\r\n\r\n");
        h.complete_lists();
        h.out.clear();

        // The PBX keeps sending events but never answers: they are not pongs.
        let events = live_events(20);
        let mut events = events.iter().cycle();
        for _ in 0..5 {
            h.now += 1_000;
            assert_eq!(h.step(events.next().unwrap()), Step::Pbx);
            assert_eq!(h.tick(), Step::Nothing);
        }
        // 2 x interval after login: the first ping is a miss, a second one goes out.
        assert_eq!(h.now, login + 2 * interval);
        assert_eq!(h.sent(), "Action: Ping\r\nActionID: sb-s-7\r\n\r\n");
        assert_eq!(h.session.next_deadline(), Some(login + 3 * interval));
        for _ in 0..4 {
            h.now += 1_000;
            assert_eq!(h.step(events.next().unwrap()), Step::Pbx);
            assert_eq!(h.tick(), Step::Nothing);
        }
        h.now += 1_000;
        assert_eq!(h.step(events.next().unwrap()), Step::Pbx);
        assert_eq!(h.tick(), Step::Fail(Failure::Stalled));
        assert!(h.out.is_empty(), "no third ping");
        h.fail_with(Failure::Stalled);
        assert_eq!(h.session.status().reconnects, 1);
        assert_eq!(h.session.status().pongs, 0);

        // ping_misses = 1: the first unanswered ping is enough.
        let mut c = config();
        c.ping_misses = 1;
        let mut h = Harness::new(c);
        h.go_live();
        h.now += interval;
        assert_eq!(h.tick(), Step::Nothing);
        h.now += interval;
        assert_eq!(h.tick(), Step::Fail(Failure::Stalled));
    }

    #[test]
    fn a_pong_resets_the_miss_count() {
        let mut h = Harness::new(config());
        h.go_live();
        let interval = ms(DEFAULT_PING_INTERVAL);
        let mut last_ping = String::new();
        for round in 0..10 {
            // Each ping is answered late, after the next went out: one miss each time,
            // never two in a row.
            h.now += interval;
            assert_eq!(h.tick(), Step::Nothing, "round {round}");
            let sent = h.sent();
            let id = sent
                .lines()
                .find_map(|l| l.strip_prefix("ActionID: "))
                .unwrap()
                .to_owned();
            if !last_ping.is_empty() {
                assert_eq!(h.step(pong(&last_ping).as_bytes()), Step::Nothing);
            }
            last_ping = id;
        }
        assert_eq!(h.session.status().pongs, 9);
        assert!(h.session.status().live);

        // An answer to a ping from the same PBX, whatever its status, is a pong;
        // a pong with another ActionID is not.
        h.feed(pong(&last_ping).as_bytes());
        h.now += interval;
        h.tick();
        h.feed(pong("sb-s-99999").as_bytes());
        h.feed(pong("sb-g-7").as_bytes());
        h.now += interval;
        assert_eq!(h.tick(), Step::Nothing, "one miss");
        h.now += interval;
        assert_eq!(h.tick(), Step::Fail(Failure::Stalled));
    }

    #[test]
    fn a_zero_ping_interval_turns_keep_alive_off() {
        let mut c = config();
        c.ping_interval = Duration::ZERO;
        let mut h = Harness::new(c);
        h.go_live();
        assert_eq!(h.session.next_deadline(), None);
        for _ in 0..100 {
            h.now += 1_000;
            assert_eq!(h.tick(), Step::Nothing);
        }
        assert!(h.out.is_empty());
        assert!(h.session.status().live);
    }

    #[test]
    fn step_timeouts_in_each_phase() {
        let timeout = ms(DEFAULT_STEP_TIMEOUT);
        // Drive a fresh session to `phase`, at T0.
        let reach = |phase: Phase| -> Harness {
            let mut h = Harness::new(config());
            h.session.on_connecting(h.now);
            if phase == Phase::Connecting {
                return h;
            }
            h.session.on_connected(h.now);
            h.parser = Parser::client();
            if phase == Phase::Banner {
                return h;
            }
            h.feed(banner(MD5_CAPTURE));
            if phase == Phase::Challenge {
                return h;
            }
            h.feed(&answers(MD5_CAPTURE, "ch-1", "sb-s-1"));
            if phase == Phase::Login {
                return h;
            }
            h.feed(&answers(MD5_CAPTURE, "li-1", "sb-s-2"));
            h
        };
        for phase in [
            Phase::Connecting,
            Phase::Banner,
            Phase::Challenge,
            Phase::Login,
            Phase::Syncing,
        ] {
            let mut h = reach(phase);
            assert_eq!(h.session.phase(), phase);
            let next = match phase {
                Phase::Syncing => T0 + ms(DEFAULT_PING_INTERVAL), // the first ping
                _ => T0 + timeout,
            };
            assert_eq!(h.session.next_deadline(), Some(next));
            h.now = T0 + timeout - 1;
            assert_eq!(h.tick(), Step::Nothing, "{phase}");
            h.now = T0 + timeout;
            assert_eq!(h.tick(), Step::Fail(Failure::Timeout(phase)), "{phase}");
            h.fail_with(Failure::Timeout(phase));
            assert_eq!(h.session.status().failures[5], 1);
        }
        assert_eq!(
            Failure::Timeout(Phase::Banner).to_string(),
            "timed out waiting for the AMI banner"
        );

        // The lists' timeout restarts while they make progress (no pings here).
        let mut c = config();
        c.ping_interval = Duration::from_secs(3600);
        let mut h = Harness::new(c);
        h.log_in();
        let ids = h.list_ids();
        let list = answers(MD5_CAPTURE, "qs-1", &ids[1]);
        let msgs = messages(&list);
        for m in &msgs[..msgs.len() - 1] {
            h.now += timeout - 1;
            assert_eq!(h.tick(), Step::Nothing);
            let mut raw = Vec::new();
            m.message().write_to(&mut raw);
            h.feed(&raw);
        }
        // Events alone are no progress.
        let t = h.now;
        h.now = t + timeout - 1;
        assert_eq!(h.step(&live_events(1)[0]), Step::Pbx);
        assert_eq!(h.tick(), Step::Nothing);
        h.now = t + timeout;
        assert_eq!(h.tick(), Step::Fail(Failure::Timeout(Phase::Syncing)));
        assert!(h.out.is_empty());

        // Live has no step timeout.
        let mut h = Harness::new(config());
        h.go_live();
        for _ in 0..10 {
            h.now += ms(DEFAULT_PING_INTERVAL);
            assert_eq!(h.tick(), Step::Nothing);
            let sent = h.sent();
            let id = sent
                .lines()
                .find_map(|l| l.strip_prefix("ActionID: "))
                .unwrap();
            h.feed(pong(id).as_bytes());
        }
        assert_eq!(h.session.status().pongs, 10);
    }

    #[test]
    fn a_bad_banner_fails() {
        // Not AMI at all: the parser refuses the first line.
        let mut h = Harness::new(config());
        h.connect();
        let steps = h.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(steps.len(), 1);
        let Step::Fail(failure @ Failure::BadBanner(_)) = &steps[0] else {
            panic!("{steps:?}");
        };
        assert_eq!(failure.kind(), "bad_banner");
        h.fail_with(failure.clone());
        assert_eq!(h.session.status().failures[3], 1);
        assert!(h.out.is_empty(), "nothing sent to a non-AMI server");

        // A message where the banner should be (a parser told to skip it).
        let mut h = Harness::new(config());
        h.connect();
        h.parser = Parser::client().skip_banner();
        let step = h.step(b"Response: Success\r\nActionID: x\r\n\r\n");
        assert_eq!(
            step,
            Step::Fail(Failure::BadBanner("Response: Success".into()))
        );
        assert!(h.out.is_empty());

        // A second banner later is garbage.
        let mut h = Harness::new(config());
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        let step = h.session.on_item(&Item::Banner("5.0.4"), h.now, &mut h.out);
        assert!(matches!(step, Step::Fail(Failure::Garbage(_))), "{step:?}");
    }

    #[test]
    fn goodbye_and_a_closed_socket_are_closed() {
        let mut h = Harness::new(config());
        h.go_live();
        let goodbye = answers(MD5_CAPTURE, "lo-1", "sb-g-3");
        assert_eq!(h.step(&goodbye), Step::Fail(Failure::Closed));
        h.fail_with(Failure::Closed);
        let s = h.session.status();
        assert_eq!(s.reconnects, 1);
        assert_eq!(s.failures[2], 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("the PBX closed the AMI session")
        );
        assert_eq!(s.since, None);

        // Goodbye during the login too.
        let mut h = Harness::new(config());
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        assert_eq!(
            h.step(b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"),
            Step::Fail(Failure::Closed)
        );

        // The thread reporting the close directly.
        let mut h = Harness::new(config());
        h.connect();
        h.fail_with(Failure::Closed);
        assert_eq!(h.session.status().reconnects, 0);
        assert!(!h.session.status().connected);
    }

    #[test]
    fn unknown_responses_are_ignored() {
        let mut h = Harness::new(config());
        h.connect();
        h.feed(banner(MD5_CAPTURE));
        h.out.clear();
        // Not our ActionID, or none, or a stale one: nothing happens.
        for answer in [
            "Response: Success\r\nActionID: ch-1\r\nChallenge: 1\r\n\r\n",
            "Response: Success\r\nChallenge: 1\r\n\r\n",
            "Response: Success\r\nActionID: sb-s-0\r\nChallenge: 1\r\n\r\n",
            "Response: Success\r\nActionID: sb-s-x\r\nChallenge: 1\r\n\r\n",
            "Event: Something\r\nActionID: sb-s-1\r\n\r\n",
        ] {
            let step = h.step(answer.as_bytes());
            assert!(matches!(step, Step::Nothing | Step::Pbx), "{step:?}");
            assert_eq!(h.session.phase(), Phase::Challenge);
        }
        assert!(h.out.is_empty());
        h.go_live_from_challenge();
        let step = h.step(&answers(MD5_CAPTURE, "u-1", "sb-s-1234"));
        assert_eq!(step, Step::Nothing);
        let step = h.step(&answers(MD5_CAPTURE, "c-1", "sb-s-3"));
        assert_eq!(step, Step::Nothing);
        assert_eq!(h.session.phase(), Phase::Live);
    }

    impl Harness {
        fn go_live_from_challenge(&mut self) {
            self.feed(&answers(MD5_CAPTURE, "ch-1", "sb-s-1"));
            assert_eq!(
                self.step(&answers(MD5_CAPTURE, "li-1", "sb-s-2")),
                Step::LoggedIn
            );
            self.complete_lists();
        }
    }

    #[test]
    fn failures_have_kinds_and_messages() {
        let all = [
            Failure::ConnectFailed("Connection refused (os error 111)".into()),
            Failure::Io("Connection reset by peer (os error 104)".into()),
            Failure::Closed,
            Failure::BadBanner("SSH-2.0-OpenSSH_9.6".into()),
            Failure::LoginRejected("Authentication failed".into()),
            Failure::Timeout(Phase::Login),
            Failure::Stalled,
            Failure::Garbage("AMI line longer than 65536 bytes".into()),
        ];
        for (i, f) in all.iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(f.kind(), Failure::KINDS[i]);
            assert!(!f.to_string().is_empty());
        }
        assert_eq!(
            all[0].to_string(),
            "cannot connect to the PBX: Connection refused (os error 111)"
        );
        assert_eq!(
            all[3].to_string(),
            "not an AMI server: it sent \"SSH-2.0-OpenSSH_9.6\""
        );
        assert_eq!(
            all[5].to_string(),
            "timed out waiting for the answer to Login"
        );
        assert_eq!(
            Failure::from(ParseError::LineTooLong { limit: 10 }),
            Failure::Garbage("AMI line longer than 10 bytes".into())
        );
        let mut s = Session::new(config(), 1);
        s.on_failure(all[6].clone(), T0);
        let counts: Vec<_> = s.status().failures_by_kind().collect();
        assert_eq!(counts.len(), 8);
        assert_eq!(counts[6], ("stalled", 1));
        assert!(
            !format!("{:?}", config()).contains("\"secret\""),
            "secret redacted"
        );
        assert_eq!(excerpt(&[b'x'; 200]).chars().count(), EXCERPT_CHARS + 1);
    }
}
