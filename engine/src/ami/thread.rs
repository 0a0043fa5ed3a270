//! The AMI thread's I/O: one small io_uring ring of its own, with one fixed-file slot
//! for the PBX socket. It connects (a linked SOCKET → CONNECT → LINK_TIMEOUT chain),
//! reads with a multishot recv from a provided-buffer ring, writes one send at a time,
//! and ticks every 100 ms. Between the PBX and the router it only moves bytes and
//! messages: what to send and when to reconnect is the [`Session`]'s decision, what a
//! message means is the [`Pbx`]'s, whether an action may run is the [`Gateway`]'s.
//!
//! The router wakes this thread through its doorbell (`IORING_OP_MSG_RING` into this
//! ring, as for the shards); this thread wakes the router the same way after pushing.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_proto::ami::{Item, MessageKind, Parser};

use super::gateway::{Caller, Done, Gateway, GatewaySettings};
use super::input::Input;
use super::json::EventFilter;
use super::session::{Failure, Session, SessionConfig, Step};
use super::state::Pbx;
use super::status::AmiStatus;
use super::{Arena, Millis, Sink};
use crate::pubsub::link::{AmiEnd, ConnRef, Doorbell, FromAmi, ToAmi};
use crate::uring::{BufRing, Completion, ConnectSpec, Kind, Ring, RingParams, Token};

/// How often the session's clock, the gateway's deadlines and the reconnect are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Bound on one TCP connect to the PBX.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The provided-buffer group of the PBX socket's reads.
const RECV_GROUP: u16 = 0;
/// Receive buffers and their size: 1 MiB in flight at most, so that a burst of events
/// (a stress PBX sends several hundred MB/s) is read in large pieces.
const RECV_BUFFERS: u16 = 16;
const RECV_BUFFER_BYTES: u32 = 64 * 1024;
/// The only fixed-file slot: the PBX socket.
const SLOT: u32 = 0;
/// The `ActionID` prefix of the gateway's actions.
const GATEWAY_IDS: &[u8] = b"sb-g-";

/// What the AMI thread needs from the configuration.
#[derive(Debug, Clone)]
pub struct AmiSettings {
    /// `HOST:PORT`, resolved at every attempt.
    pub address: String,
    pub session: SessionConfig,
    pub gateway: GatewaySettings,
    pub noise: Vec<String>,
}

/// Everything the thread is started with.
pub struct AmiInit {
    pub settings: AmiSettings,
    pub link: AmiEnd,
    pub router_bell: Arc<Doorbell>,
    pub status: Arc<AmiStatus>,
}

/// The AMI thread's ring parameters: one socket, a few operations at a time.
pub fn ring_params() -> RingParams {
    RingParams {
        sq_entries: 64,
        cq_entries: 1024,
        fixed_files: 1,
    }
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// Where the PBX socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Socket {
    /// No socket; the session decides when to try again.
    Idle,
    /// A connect chain is in flight: completions still to come, whether the connect
    /// itself succeeded, and the first error (errno) of the chain.
    Connecting { remaining: u8, ok: bool, error: i32 },
    /// Connected; the recv is armed.
    Open,
    /// Operations are being cancelled; the slot is closed when that completes.
    Closing,
}

/// The parts of the thread a parsed message is dispatched to (apart from the parser
/// and its buffer, which the message borrows).
struct Core {
    ring: Ring,
    link: AmiEnd,
    router_bell: Arc<Doorbell>,
    /// Something was pushed to the router since its doorbell was last rung.
    router_dirty: bool,
    status: Arc<AmiStatus>,
    session: Session,
    pbx: Pbx,
    gateway: Gateway<(u16, ConnRef)>,
    socket: Socket,
    /// The socket's generation: completions of an earlier socket are ignored.
    generation: u32,
    /// Bytes to write to the PBX, and whether a send is in flight.
    out: Vec<u8>,
    sending: bool,
    /// Where published topics and data are copied for the router.
    arena: Arena,
    /// Messages published (mirrored into the status with the rest).
    published: u64,
}

/// Publishes into the router's queue; when it is full, rings the router and waits
/// (reading from the PBX pauses meanwhile, and the kernel's socket buffer absorbs it).
struct RouterSink<'a> {
    outbox: &'a mut rtrb::Producer<FromAmi>,
    ring: &'a mut Ring,
    bell: &'a Doorbell,
    dirty: &'a mut bool,
    arena: &'a mut Arena,
    published: &'a mut u64,
}

impl RouterSink<'_> {
    fn push(&mut self, mut msg: FromAmi) {
        loop {
            match self.outbox.push(msg) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(back)) => {
                    msg = back;
                    if self.bell.ring() {
                        self.ring.wake(self.bell.ring_fd());
                        let _ = self.ring.enter(false);
                    }
                    std::thread::yield_now();
                }
            }
        }
        *self.dirty = true;
    }
}

impl Sink for RouterSink<'_> {
    fn publish(&mut self, topic: &str, data: &[u8]) {
        let data = self.arena.copy_data(data);
        self.send(topic, data);
    }

    /// The data is the previous publish's (the trait's contract): its copy is shared.
    fn republish(&mut self, topic: &str, data: &[u8]) {
        let shared = self.arena.shared();
        debug_assert_eq!(&shared[..], data);
        self.send(topic, shared);
    }
}

impl RouterSink<'_> {
    fn send(&mut self, topic: &str, data: Bytes) {
        *self.published += 1;
        let topic = self.arena.copy(topic.as_bytes());
        self.push(FromAmi::Publish { topic, data });
    }
}

macro_rules! sink {
    ($core:expr) => {
        RouterSink {
            outbox: &mut $core.link.outbox,
            ring: &mut $core.ring,
            bell: &$core.router_bell,
            dirty: &mut $core.router_dirty,
            arena: &mut $core.arena,
            published: &mut $core.published,
        }
    };
}

/// Runs the AMI thread until the process exits.
pub fn run(init: AmiInit, ring: Ring, bell: Arc<Doorbell>) -> std::io::Result<()> {
    let AmiInit {
        settings,
        link,
        router_bell,
        status,
    } = init;
    let mut bufs = BufRing::new(&ring, RECV_GROUP, RECV_BUFFERS, RECV_BUFFER_BYTES)?;
    let seed = now_ms() ^ u64::from(std::process::id()) << 32;
    let mut core = Core {
        ring,
        link,
        router_bell,
        router_dirty: false,
        status,
        session: Session::new(settings.session.clone(), seed),
        pbx: Pbx::new(EventFilter::new(&settings.noise)),
        gateway: Gateway::new(settings.gateway.clone()),
        socket: Socket::Idle,
        generation: 0,
        out: Vec::new(),
        sending: false,
        arena: Arena::default(),
        published: 0,
    };
    // The parser does not split the events the model drops on sight.
    let skip = core.pbx.skippable();
    let mut parser = Parser::client().skip_events(&skip);
    let mut input = Input::default();
    let mut completions = Vec::new();
    // The socket generation the parser's stream belongs to.
    let mut stream = core.generation;
    core.ring.tick(TICK);
    loop {
        while let Ok(msg) = core.link.inbox.pop() {
            core.on_router(msg);
        }
        core.flush();
        bell.arm();
        let idle = core.link.inbox.is_empty();
        core.ring.enter(idle)?;
        bell.disarm();
        completions.clear();
        core.ring.reap(&mut completions);
        // Everything read in one turn is one batch for the state model: a queue or
        // endpoint it changes gets one `update`.
        core.pbx.begin_batch();
        for c in completions.drain(..) {
            match c.token.kind {
                Kind::Tick => {
                    core.ring.tick(TICK);
                    core.tick(&settings.address);
                }
                Kind::Wake => {}
                Kind::Recv if c.token.generation == core.generation => {
                    core.received(&c, &mut bufs, &mut parser, &mut input);
                }
                Kind::Recv => {
                    if let Some(bid) = c.buffer_id() {
                        bufs.recycle(bid);
                    }
                }
                Kind::Send => core.sent(c),
                Kind::Socket | Kind::Connect | Kind::ConnectTimeout => core.connecting(&c),
                Kind::Cancel if c.token.generation == core.generation => {
                    core.ring.close(core.token(Kind::Close));
                    core.socket = Socket::Idle;
                }
                kind if c.result < 0 && c.result != -libc::ECANCELED => {
                    tracing::debug!(
                        "ami: {kind:?} failed: {}",
                        std::io::Error::from_raw_os_error(-c.result)
                    );
                }
                _ => {}
            }
        }
        core.pbx.end_batch(now_ms(), &mut sink!(core));
        bufs.publish();
        if stream != core.generation {
            // A new socket starts a new stream: the parser expects the banner again.
            stream = core.generation;
            parser = Parser::client().skip_events(&skip);
            input.clear();
        }
    }
}

impl Core {
    fn token(&self, kind: Kind) -> Token {
        Token::new(kind, self.generation, SLOT)
    }

    /// Every tick: the session's timers, the gateway's deadlines, a due reconnect.
    fn tick(&mut self, address: &str) {
        let now = now_ms();
        let mut out = std::mem::take(&mut self.out);
        let step = self.session.on_tick(now, &mut out);
        self.out = out;
        self.step(step, None, now);
        for done in self.gateway.expire(now) {
            self.result(done);
        }
        self.pbx.tick(now, &mut sink!(self));
        if self.socket == Socket::Idle && self.session.connect_due(now) {
            self.connect(address, now);
        }
        self.update_status();
    }

    fn connect(&mut self, address: &str, now: Millis) {
        self.generation = self.generation.wrapping_add(1);
        self.session.on_connecting(now);
        self.status.attempts.fetch_add(1, Relaxed);
        // Resolution is synchronous: an address is normally an IP or a local name.
        let dst: Option<SocketAddr> = address.to_socket_addrs().ok().and_then(|mut a| a.next());
        let Some(dst) = dst else {
            let f = Failure::ConnectFailed(format!("cannot resolve {address:?}"));
            self.fail(f, now);
            return;
        };
        let spec = ConnectSpec {
            src: None,
            dst,
            bind_no_port: false,
            timeout: Some(CONNECT_TIMEOUT),
        };
        let remaining = self.ring.connect_direct(self.token(Kind::Connect), &spec);
        self.socket = Socket::Connecting {
            remaining,
            ok: false,
            error: 0,
        };
        tracing::debug!("ami: connecting to {dst}");
    }

    /// One completion of the connect chain; the last one decides.
    fn connecting(&mut self, c: &Completion) {
        if c.token.generation != self.generation {
            return;
        }
        let Socket::Connecting {
            remaining,
            ok,
            error,
        } = self.socket
        else {
            return;
        };
        let ok = ok || (c.token.kind == Kind::Connect && c.result == 0);
        // The first real error of the chain says why (the rest are cancellations).
        let error = if error == 0 && c.result < 0 && c.result != -libc::ECANCELED {
            -c.result
        } else {
            error
        };
        let remaining = remaining.saturating_sub(1);
        if remaining > 0 {
            self.socket = Socket::Connecting {
                remaining,
                ok,
                error,
            };
            return;
        }
        let now = now_ms();
        if !ok {
            let why = match error {
                0 => "no answer".to_string(),
                libc::ETIME => format!("no answer within {CONNECT_TIMEOUT:?}"),
                e => std::io::Error::from_raw_os_error(e).to_string(),
            };
            self.fail(Failure::ConnectFailed(format!("connect: {why}")), now);
            return;
        }
        self.socket = Socket::Open;
        self.ring.recv_multishot(self.token(Kind::Recv), RECV_GROUP);
        self.session.on_connected(now);
        self.update_status();
    }

    /// Bytes from the PBX: parsed (where the kernel put them, see [`Input`]) and
    /// dispatched message by message.
    fn received(
        &mut self,
        c: &Completion,
        bufs: &mut BufRing,
        parser: &mut Parser,
        input: &mut Input,
    ) {
        let now = now_ms();
        if c.result > 0
            && let Some(bid) = c.buffer_id()
        {
            self.status
                .bytes_received
                .fetch_add(c.result as u64, Relaxed);
            let data = bufs.take(bid, c.result as usize);
            input.feed(data, |bytes| self.parse(bytes, parser, now));
            bufs.recycle(bid);
        }
        if c.result == 0 {
            self.fail(Failure::Closed, now);
            return;
        }
        if c.result < 0 {
            if c.result == -libc::ENOBUFS && self.socket == Socket::Open {
                // Every buffer was in use: they are back now; read on.
                self.ring.recv_multishot(self.token(Kind::Recv), RECV_GROUP);
                return;
            }
            if self.socket == Socket::Open {
                let e = std::io::Error::from_raw_os_error(-c.result);
                self.fail(Failure::Io(format!("recv: {e}")), now);
            }
            return;
        }
        if !c.more() && self.socket == Socket::Open {
            self.ring.recv_multishot(self.token(Kind::Recv), RECV_GROUP);
        }
        self.update_status();
    }

    /// Parses and dispatches the messages of `bytes` (the unconsumed input) and
    /// returns how many bytes were consumed. A parse error ends the session.
    fn parse(&mut self, bytes: &[u8], parser: &mut Parser, now: Millis) -> usize {
        let mut pos = 0;
        let mut messages = 0;
        let mut failure = None;
        while self.socket == Socket::Open {
            match parser.parse(bytes.get(pos..).unwrap_or_default()) {
                Ok((n, item)) => {
                    pos += n;
                    let Some(item) = item else { break };
                    messages += 1;
                    self.dispatch(&item, now);
                }
                Err(e) => {
                    failure = Some(Failure::from(e));
                    break;
                }
            }
        }
        self.status.messages.fetch_add(messages, Relaxed);
        if let Some(f) = failure {
            self.fail(f, now);
        }
        pos
    }

    /// One item from the PBX: a gateway's answer, or the session's business.
    fn dispatch(&mut self, item: &Item<'_>, now: Millis) {
        if let Item::Message(m) = item
            && m.kind() == MessageKind::Other
        {
            // Neither an event nor a response (a stray line of junk between two
            // messages): skipped and counted. The framing held, so the session goes on;
            // what breaks the framing is a parse error, which ends it.
            self.status.garbage.fetch_add(1, Relaxed);
            tracing::debug!("ami: skipped a message that is neither an event nor a response");
            return;
        }
        // Only while the gateway waits for an answer is a message looked through for
        // its ActionID (an answer after its action timed out takes the session's way:
        // an event still reaches the model, a response is ignored).
        if let Item::Message(m) = item
            && self.gateway.pending() > 0
            && m.action_id().is_some_and(|id| id.starts_with(GATEWAY_IDS))
        {
            if m.event().is_some() {
                self.pbx.on_event(m, now, &mut sink!(self));
            }
            if let Some(done) = self.gateway.on_message(m, now) {
                self.result(done);
            }
            return;
        }
        let step = self.session.on_item(item, now, &mut self.out);
        let message = match item {
            Item::Message(m) => Some(m),
            _ => None,
        };
        self.step(step, message, now);
    }

    /// Acts on what the session decided.
    fn step(
        &mut self,
        step: Step,
        message: Option<&switchboard_proto::ami::Message<'_>>,
        now: Millis,
    ) {
        match step {
            Step::Nothing => {}
            Step::Pbx => {
                if let Some(m) = message {
                    self.pbx.on_event(m, now, &mut sink!(self));
                }
            }
            Step::LoggedIn => {
                tracing::info!("ami: logged in; synchronising the PBX state");
                self.status
                    .set_version(self.session.status().version.clone());
                self.pbx.resync_begin();
            }
            Step::Synced => {
                self.pbx.resync_end(now, &mut sink!(self));
                self.pbx.set_connected(true, &mut sink!(self));
                tracing::info!(
                    "ami: live: {} channels, {} calls, {} queues",
                    self.pbx.channels(),
                    self.pbx.calls(),
                    self.pbx.queues()
                );
            }
            Step::Fail(f) => self.fail(f, now),
        }
    }

    /// The session is over: close the socket, fail pending actions, tell subscribers,
    /// and let the session schedule the next attempt.
    fn fail(&mut self, failure: Failure, now: Millis) {
        tracing::warn!("ami: {failure}");
        self.status.failed(failure.kind(), failure.to_string(), now);
        if matches!(self.socket, Socket::Open | Socket::Connecting { .. }) {
            self.ring.cancel_all(self.token(Kind::Cancel));
            self.socket = Socket::Closing;
        }
        self.out.clear();
        self.sending = false;
        self.session.on_failure(failure, now);
        self.pbx.set_connected(false, &mut sink!(self));
        for done in self.gateway.fail_all() {
            self.result(done);
        }
        self.update_status();
    }

    /// Something from the router: a snapshot to make, or an action to check and send.
    fn on_router(&mut self, msg: ToAmi) {
        match msg {
            ToAmi::Snapshot {
                shard,
                id,
                patterns,
            } => {
                let mut made: Vec<(String, Vec<u8>)> = Vec::new();
                for (name, subtree) in patterns.iter() {
                    self.pbx.snapshot(name, *subtree, &mut made);
                }
                self.status.snapshots.fetch_add(1, Relaxed);
                let messages = made
                    .into_iter()
                    .map(|(t, d)| (t.into_boxed_str(), Bytes::from(d)))
                    .collect();
                sink!(self).push(FromAmi::Snapshot {
                    shard,
                    id,
                    messages,
                });
            }
            ToAmi::Action { shard, request } => {
                let now = now_ms();
                let live = self.session.status().live;
                let before = self.out.len();
                let caller = Caller {
                    handle: (shard, request.conn),
                    user: &request.user,
                    grants: request.grants.as_ref(),
                };
                let submitted =
                    self.gateway
                        .submit(caller, &request.body, &self.pbx, live, now, &mut self.out);
                match submitted {
                    Ok(_) => {
                        if self.out.len() > before {
                            self.status.actions_sent.fetch_add(1, Relaxed);
                        }
                    }
                    Err(done) => self.result(done),
                }
            }
        }
    }

    /// Sends an action's result to its connection, through the router.
    fn result(&mut self, done: Done<(u16, ConnRef)>) {
        let (shard, conn) = done.caller;
        self.status.result(done.code);
        let status = http_status(done.code);
        sink!(self).push(FromAmi::Result {
            shard,
            conn,
            status,
            body: Bytes::from(done.result),
        });
    }

    /// Starts a send of what is waiting, if none is in flight; rings the router.
    fn flush(&mut self) {
        if !self.sending && !self.out.is_empty() && self.socket == Socket::Open {
            let buf = Bytes::from(std::mem::take(&mut self.out));
            self.ring.send(self.token(Kind::Send), buf);
            self.sending = true;
        }
        if std::mem::take(&mut self.router_dirty) && self.router_bell.ring() {
            self.ring.wake(self.router_bell.ring_fd());
        }
    }

    /// A send completed: continue a partial one, or fail the session.
    fn sent(&mut self, c: Completion) {
        if c.token.generation != self.generation || self.socket != Socket::Open {
            return;
        }
        self.sending = false;
        let Some(buf) = c.sent else { return };
        if c.result < 0 {
            let e = std::io::Error::from_raw_os_error(-c.result);
            self.fail(Failure::Io(format!("send: {e}")), now_ms());
            return;
        }
        let n = c.result as usize;
        if n < buf.len() {
            self.ring.send(self.token(Kind::Send), buf.slice(n..));
            self.sending = true;
        }
    }

    fn update_status(&self) {
        let s = self.session.status();
        let st = &self.status;
        st.connected.store(s.connected, Relaxed);
        st.logged_in.store(s.logged_in, Relaxed);
        st.live.store(s.live, Relaxed);
        st.reconnects.store(s.reconnects, Relaxed);
        st.live_since_ms.store(s.since.unwrap_or(0), Relaxed);
        st.retry_at_ms.store(s.retry_at.unwrap_or(0), Relaxed);
        st.channels.store(self.pbx.channels() as u64, Relaxed);
        st.calls.store(self.pbx.calls() as u64, Relaxed);
        st.queues.store(self.pbx.queues() as u64, Relaxed);
        st.published.store(self.published, Relaxed);
    }
}

/// The HTTP status of `POST /ami/action` for a result code.
pub fn http_status(code: &str) -> u16 {
    match code {
        "ok" => 200,
        "invalid" => 400,
        "forbidden" => 403,
        "rate_limited" => 429,
        "timeout" => 504,
        "pbx_error" => 502,
        _ => 503,
    }
}
