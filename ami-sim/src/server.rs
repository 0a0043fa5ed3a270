//! The AMI server: binds the listener, prints the ready line, runs the simulation driver
//! and, per connection, a reader task (actions in: the codec's server-role parser, the
//! session state machine, the PBX) and a writer task (the session's queue out, with the
//! write timeout and the write-side faults). One monoio thread (io_uring) runs it all.
//!
//! Connection lifecycle, as Asterisk's `session_do()`: more than `--auth-limit` sessions
//! not yet logged in -> the new one is closed at once, without a banner; otherwise the
//! banner, then actions; not logged in after `--auth-timeout` -> closed; a failed login
//! -> 1 s later `Authentication failed`, then closed; `Logoff` -> `Goodbye`, closed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use monoio::buf::{Slice, SliceMut};
use monoio::io::{
    AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, Canceller, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::{TcpListener, TcpStream};
use switchboard_proto::ami::{
    Classes, Item, Message, MessageWriter, Parser, decode_text, write_banner,
};
use tracing::{debug, info, warn};

use crate::cli::{Opts, Speed};
use crate::config::Users;
use crate::fault::{Faults, garbage};
use crate::pbx::{AsteriskVersion, Pbx, PbxConfig, SimTime};
use crate::record::{RecordHeader, Recorder};
use crate::replay::{self, Recording};
use crate::session::{Outcome, Session, SessionConfig};
use crate::stream::{Clock, DropReason, Either, Hub, Notify, OutState, Outbox, Sim, race};

/// How long a failed login waits before it is answered (Asterisk's `sleep(1)`).
pub const LOGIN_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// Everything the connection tasks share.
struct Ctx {
    session_cfg: SessionConfig,
    faults: Faults,
    banner: Vec<u8>,
    sim: Rc<Sim>,
    hub: Rc<Hub>,
    replay: Option<Rc<Recording>>,
    speed: Speed,
    write_timeout: Duration,
    max_queue: usize,
    auth_timeout: Duration,
    auth_limit: usize,
    local: SocketAddr,
    system_name: Option<String>,
    unauth: Cell<usize>,
    next_id: Cell<u64>,
    rng: Cell<u64>,
}

impl Ctx {
    /// splitmix64: challenges (deterministic for a seed, which does not matter much).
    fn random(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What a running server reports when it stops by itself (`--duration`).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub events: u64,
}

/// Runs the server until `--duration` elapses (forever without it). Prints the ready
/// line `listening on tcp://HOST:PORT` on stdout once the listener accepts.
pub fn run(opts: Opts) -> anyhow::Result<Summary> {
    let mut users = Users::default();
    users.add(opts.users.clone())?;
    if let Some(path) = &opts.users_file {
        users.add(Users::load_file(path)?)?;
    }
    if users.is_empty() {
        info!("no --user or --users given: user admin, secret amp111, every class");
        users = Users::default_admin();
    }
    let version = AsteriskVersion::from_major(opts.asterisk_version)
        .with_context(|| format!("unsupported Asterisk version {}", opts.asterisk_version))?;
    let faults = Faults::from_list(&opts.faults);

    let wall_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let seed = opts
        .seed
        .unwrap_or_else(|| wall_us ^ (u64::from(std::process::id()) << 32));
    let start = opts.start_us(wall_us);

    let mut cfg = PbxConfig {
        asterisk_version: version,
        system_name: opts.system_name.clone(),
        noise: !opts.no_noise,
        cdr: !opts.no_cdr,
        ..PbxConfig::default()
    };
    if let Some(r) = opts.calls_per_sec {
        cfg.calls_per_sec = r;
    }
    cfg.events_per_sec = opts.events_per_sec;
    cfg.generate = !opts.no_calls && opts.replay.is_none();

    let replay = match &opts.replay {
        Some(path) => {
            let rec = Recording::load(path, opts.replay_messages)?;
            info!(
                "replaying {} ({} messages, {} bytes, {} times)",
                path.display(),
                rec.messages.len(),
                rec.total_bytes(),
                if rec.recorded_times {
                    "recorded"
                } else {
                    "derived"
                }
            );
            Some(Rc::new(rec))
        }
        None => None,
    };

    let recorder = match &opts.record {
        Some(path) => {
            let header = RecordHeader {
                banner: version.banner(),
                start_us: start,
                seed,
            };
            let mut r = Recorder::create(path, &header)
                .with_context(|| format!("cannot create {}", path.display()))?;
            r.raw_frame(0, &fully_booted(0));
            r.flush();
            Some(r)
        }
        None => None,
    };

    let mut banner = Vec::new();
    write_banner(&mut banner, version.ami_version());

    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()
        .context("cannot start the io_uring runtime (is io_uring enabled?)")?;

    rt.block_on(async move {
        let listener = TcpListener::bind(opts.listen)
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let local = listener.local_addr()?;
        let clock = Clock::new(start);
        let end = opts.duration.map(|d| start + d.as_micros() as SimTime);
        let hub = Rc::new(Hub::default());
        let pbx = Pbx::new(cfg, seed, start);
        let sim = Rc::new(Sim::new(pbx, clock, hub.clone(), recorder, end));
        let ctx = Rc::new(Ctx {
            session_cfg: SessionConfig {
                users,
                refuse_login: faults.refuse_login,
            },
            faults,
            banner,
            sim: sim.clone(),
            hub: hub.clone(),
            replay,
            speed: opts.speed,
            write_timeout: opts.write_timeout,
            max_queue: opts.max_queue,
            auth_timeout: opts.auth_timeout,
            auth_limit: opts.auth_limit,
            local,
            system_name: opts.system_name.clone(),
            unauth: Cell::new(0),
            next_id: Cell::new(0),
            rng: Cell::new(seed ^ 0x00A1_5EED),
        });
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on tcp://{local}")?;
            out.flush()?;
        }
        info!(
            "ami-sim: Asterisk {} (AMI {}), seed {seed}, simulated start {}",
            version.release(),
            version.ami_version(),
            iso_ms(start)
        );
        let finished = Rc::new(Notify::default());
        {
            let (sim, finished) = (sim.clone(), finished.clone());
            monoio::spawn(async move {
                sim.drive().await;
                finished.notify();
            });
        }
        match race(accept_loop(ctx.clone(), listener), finished.notified()).await {
            Either::Left(e) => Err(e),
            Either::Right(()) => {
                hub.drop_all(DropReason::Shutdown);
                let rec_error = sim
                    .recorder
                    .borrow()
                    .as_ref()
                    .and_then(|r| r.error().map(|e| format!("{}: {e}", r.path().display())));
                if let Some(e) = rec_error {
                    bail!("recording failed: {e}");
                }
                info!("--duration elapsed: {} events", sim.events.get());
                Ok(Summary {
                    events: sim.events.get(),
                })
            }
        }
    })
}

async fn accept_loop(ctx: Rc<Ctx>, listener: TcpListener) -> anyhow::Error {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(connection(ctx.clone(), stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: keep serving the sessions there are.
                warn!("accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(ctx: Rc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    if ctx.unauth.get() >= ctx.auth_limit {
        debug!(
            "{peer}: closed at once: {} sessions are not logged in",
            ctx.unauth.get()
        );
        return;
    }
    ctx.unauth.set(ctx.unauth.get() + 1);
    let id = ctx.next_id.get() + 1;
    ctx.next_id.set(id);
    let _ = stream.set_nodelay(true);
    let outbox = Rc::new(Outbox::new(ctx.max_queue));
    outbox.push(&ctx.banner);
    let (rd, wr) = stream.into_split();
    let canceller = Canceller::new();
    let handle = canceller.handle();
    outbox.set_reader_cancel(canceller);
    monoio::spawn(writer(ctx.clone(), wr, outbox.clone(), peer));
    debug!("{peer}: session {id} connected");

    let mut conn = Conn {
        ctx: ctx.clone(),
        outbox: outbox.clone(),
        session: Session::new(),
        peer,
        id,
        connected_us: ctx.sim.now(),
        hub_key: None,
        counted_unauth: true,
    };
    conn.read_loop(rd, handle).await;
    if conn.counted_unauth {
        ctx.unauth.set(ctx.unauth.get() - 1);
    }
    if let Some(key) = conn.hub_key {
        ctx.hub.unregister(key);
    }
    if outbox.state() == OutState::Open {
        outbox.drop_now(DropReason::Closed);
    }
}

/// The reader side of one connection.
struct Conn {
    ctx: Rc<Ctx>,
    outbox: Rc<Outbox>,
    session: Session,
    peer: SocketAddr,
    id: u64,
    connected_us: SimTime,
    hub_key: Option<usize>,
    counted_unauth: bool,
}

/// What the read loop does after a message.
enum Next {
    Continue,
    /// Wait 1 s, write this, close.
    LoginFailed(Vec<u8>),
    /// Stop reading (the writer closes after flushing).
    Stop,
}

impl Conn {
    async fn read_loop(&mut self, mut rd: OwnedReadHalf<TcpStream>, cancel: CancelHandle) {
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut start = 0usize;
        let mut parser = Parser::server();
        let auth_deadline = Instant::now() + self.ctx.auth_timeout;
        loop {
            // Everything complete in the buffer.
            loop {
                let (used, item) = parser
                    .parse(&buf[start..])
                    .unwrap_or_else(|e| unreachable!("the server role never fails: {e}"));
                let next = match item {
                    None => {
                        start += used;
                        break;
                    }
                    Some(Item::Rejected(r)) => {
                        let mut out = Vec::new();
                        r.write_response(&mut out);
                        self.outbox.push(&out);
                        Next::Continue
                    }
                    Some(Item::Message(m)) => self.handle(&m),
                    Some(Item::Banner(_)) => Next::Continue,
                };
                start += used;
                match next {
                    Next::Continue => {}
                    Next::Stop => return,
                    Next::LoginFailed(reply) => {
                        info!("{}: login failed", self.peer);
                        monoio::time::sleep(LOGIN_FAILURE_DELAY).await;
                        self.outbox.push(&reply);
                        self.outbox.close_after_flush();
                        return;
                    }
                }
            }
            if start == buf.len() {
                buf.clear();
                start = 0;
            } else if start > 0 && start >= buf.len() / 2 {
                buf.drain(..start);
                start = 0;
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8192);
            }
            let len = buf.len();
            let cap = buf.capacity();
            let read = rd.cancelable_read(SliceMut::new(buf, len, cap), cancel.clone());
            let (res, slice) = if self.session.is_authenticated() {
                read.await
            } else {
                let deadline = monoio::time::Instant::from_std(auth_deadline);
                match monoio::time::timeout_at(deadline, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        info!(
                            "{}: failed to authenticate in {} seconds",
                            self.peer,
                            self.ctx.auth_timeout.as_secs()
                        );
                        self.outbox.drop_now(DropReason::AuthTimeout);
                        return;
                    }
                }
            };
            buf = slice.into_inner();
            match res {
                Ok(0) => {
                    debug!("{}: session {} closed by the client", self.peer, self.id);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    debug!("{}: session {} read: {e}", self.peer, self.id);
                    return;
                }
            }
        }
    }

    fn handle(&mut self, m: &Message<'_>) -> Next {
        let ctx = self.ctx.clone();
        let now = ctx.sim.now();
        let outcome = self
            .session
            .handle(&ctx.session_cfg, m, now, &mut || ctx.random());
        match outcome {
            Outcome::Reply(b) => {
                self.outbox.push(&b);
                if self.session.is_authenticated() {
                    self.outbox.set_classes(self.session.event_classes());
                }
                Next::Continue
            }
            Outcome::LoginFailed(b) => Next::LoginFailed(b),
            Outcome::Logoff(b) => {
                self.outbox.push(&b);
                self.outbox.close_after_flush();
                Next::Stop
            }
            Outcome::LoggedIn(b) => {
                self.logged_in(&b, now);
                Next::Continue
            }
            Outcome::Pbx => {
                let name = decode_text(m.action().unwrap_or_default());
                let fields: Vec<_> = m
                    .fields()
                    .filter(|f| f.has_colon())
                    .map(|f| (f.key_str(), f.value_str()))
                    .collect();
                let fields: Vec<(&str, &str)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_ref()))
                    .collect();
                let aid = m.action_id().filter(|a| !a.is_empty()).map(decode_text);
                // Events due before the action go out before its response.
                ctx.sim.pump(now);
                let replies =
                    ctx.sim
                        .pbx
                        .borrow_mut()
                        .action(now, name.trim(), &fields, aid.as_deref());
                for r in &replies {
                    self.outbox.push_quiet(r);
                }
                self.outbox.wake_writer();
                ctx.sim.wake.notify();
                Next::Continue
            }
        }
    }

    fn logged_in(&mut self, reply: &[u8], now: SimTime) {
        let ctx = self.ctx.clone();
        self.counted_unauth = false;
        ctx.unauth.set(ctx.unauth.get() - 1);
        let user = self
            .session
            .user()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        info!("{}: session {} logged in as {user}", self.peer, self.id);
        self.outbox.push_quiet(reply);
        self.outbox.set_login_at(Instant::now());
        let live = ctx.replay.is_none();
        if live && self.session.wants_fully_booted() {
            let uptime = now.saturating_sub(ctx.sim.clock.start) / 1_000_000;
            self.outbox.push_quiet(&fully_booted(uptime));
        }
        self.outbox.set_classes(self.session.event_classes());
        self.hub_key = Some(ctx.hub.register(self.outbox.clone()));
        if live {
            let auth = successful_auth(&AuthInfo {
                system_name: ctx.system_name.as_deref(),
                now,
                session_start: self.connected_us,
                user: &user,
                session_id: self.id,
                local: ctx.local,
                remote: self.peer,
            });
            ctx.hub.broadcast(Classes::SECURITY, &auth);
        }
        self.outbox.wake_writer();
        if ctx.faults.disconnect_every.is_some() || ctx.faults.garbage_every.is_some() {
            monoio::spawn(fault_task(ctx.clone(), self.outbox.clone()));
        }
        if let Some(rec) = &ctx.replay {
            monoio::spawn(replay::serve(rec.clone(), self.outbox.clone(), ctx.speed));
        }
    }
}

/// The writer side of one connection: everything queued goes out in one write (the
/// rest of a partial write in the next ones); a write that makes no progress for
/// `--write-timeout` drops the session.
async fn writer(
    ctx: Rc<Ctx>,
    mut wr: OwnedWriteHalf<TcpStream>,
    outbox: Rc<Outbox>,
    peer: SocketAddr,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let slice_max = ctx
        .faults
        .slow_write
        .map_or(usize::MAX, |b| (b / 10).max(1) as usize);
    loop {
        outbox.ready().await;
        match outbox.state() {
            OutState::Dropped(reason) => {
                info!("{peer}: session dropped ({reason:?})");
                return;
            }
            OutState::Open | OutState::Closing => {}
        }
        let stall = outbox
            .login_at()
            .and_then(|at| ctx.faults.stalled(at.elapsed()));
        if let Some(left) = stall {
            // --fault stall: nothing is written for `left`; the queue keeps filling.
            debug!("{peer}: stalled for {left:?}");
            let _ = race(monoio::time::sleep(left), outbox.dropped()).await;
            continue;
        }
        outbox.take(&mut buf, slice_max);
        if buf.is_empty() {
            if outbox.state() == OutState::Closing {
                let _ = wr.shutdown().await;
                return;
            }
            continue;
        }
        let total = buf.len();
        let mut sent = 0;
        while sent < total {
            let op = wr.write(Slice::new(buf, sent, total));
            match race(
                monoio::time::timeout(ctx.write_timeout, op),
                outbox.dropped(),
            )
            .await
            {
                Either::Right(reason) => {
                    info!("{peer}: session dropped ({reason:?})");
                    return;
                }
                Either::Left(Err(_elapsed)) => {
                    info!(
                        "{peer}: dropped: a write blocked for {:?} ({} bytes queued)",
                        ctx.write_timeout,
                        total - sent + outbox.queued()
                    );
                    outbox.drop_now(DropReason::WriteTimeout);
                    return;
                }
                Either::Left(Ok((res, slice))) => {
                    buf = slice.into_inner();
                    match res {
                        Ok(n) if n > 0 => {
                            sent += n;
                            outbox.written.set(outbox.written.get() + n as u64);
                        }
                        Ok(_) => {
                            outbox.drop_now(DropReason::Closed);
                            return;
                        }
                        Err(e) => {
                            debug!("{peer}: write: {e}");
                            outbox.drop_now(DropReason::Closed);
                            return;
                        }
                    }
                }
            }
        }
        buf.clear();
        if ctx.faults.slow_write.is_some() {
            // --fault slow-write: B/10 bytes per 100 ms.
            let _ = race(
                monoio::time::sleep(Duration::from_millis(100)),
                outbox.dropped(),
            )
            .await;
        }
    }
}

/// `disconnect-every` and `garbage-every` for one session (see `fault`). Sleeps at most
/// 1 s at a time so that it ends soon after its session.
async fn fault_task(ctx: Rc<Ctx>, outbox: Rc<Outbox>) {
    let login = outbox.login_at().unwrap_or_else(Instant::now);
    let disconnect_at = ctx.faults.disconnect_every.map(|d| login + d);
    let every = ctx.faults.garbage_every;
    let mut next_garbage = every.map(|d| login + d);
    let mut n = 0u64;
    while outbox.is_open() {
        let now = Instant::now();
        if disconnect_at.is_some_and(|t| t <= now) {
            info!("fault: disconnecting a session");
            outbox.drop_now(DropReason::Fault);
            return;
        }
        if let (Some(t), Some(d)) = (next_garbage, every)
            && t <= now
        {
            n += 1;
            outbox.push(&garbage(n));
            next_garbage = Some(t + d);
            continue;
        }
        let wake = [disconnect_at, next_garbage]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        monoio::time::sleep_until(monoio::time::Instant::from_std(wake)).await;
    }
}

/// The `FullyBooted` event a login is answered with (`Uptime` and `LastReload` in
/// seconds since the simulated start).
pub fn fully_booted(uptime_s: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = MessageWriter::event(&mut out, "FullyBooted", Classes::SYSTEM);
    w.field_u64("Uptime", uptime_s)
        .field_u64("LastReload", uptime_s)
        .field("Status", "Fully Booted");
    w.finish();
    out
}

/// What a `SuccessfulAuth` security event says.
pub struct AuthInfo<'a> {
    pub system_name: Option<&'a str>,
    pub now: SimTime,
    pub session_start: SimTime,
    pub user: &'a str,
    pub session_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The `SuccessfulAuth` event (security class) every security reader gets when a
/// session logs in, field for field as Asterisk 22 writes it.
pub fn successful_auth(a: &AuthInfo<'_>) -> Vec<u8> {
    let addr = |s: SocketAddr| {
        let family = if s.is_ipv4() { "IPV4" } else { "IPV6" };
        format!("{family}/TCP/{}/{}", s.ip(), s.port())
    };
    let mut out = Vec::new();
    let mut w = MessageWriter::event(&mut out, "SuccessfulAuth", Classes::SECURITY);
    if let Some(name) = a.system_name {
        w.field("SystemName", name);
    }
    w.field("EventTV", &iso_ms(a.now))
        .field("Severity", "Informational")
        .field("Service", "AMI")
        .field("EventVersion", "1")
        .field("AccountID", a.user)
        .field(
            "SessionID",
            &format!("0x7f{:010x}", 0x8c02_d7b0 + a.session_id * 0x1d0),
        )
        .field("LocalAddress", &addr(a.local))
        .field("RemoteAddress", &addr(a.remote))
        .field("UsingPassword", "0")
        .field("SessionTV", &iso_ms(a.session_start));
    w.finish();
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-21T08:27:24.748+0000`: a simulated time as Asterisk's security events write
/// it (UTC, milliseconds).
pub fn iso_ms(t: SimTime) -> String {
    let secs = t / 1_000_000;
    let ms = (t % 1_000_000) / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            iso_ms(1_795_249_644_748_123),
            "2026-11-21T08:27:24.748+0000"
        );
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000+0000");
        for days in [-1000, 0, 59, 365, 11_016, 20_413, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn fully_booted_as_captured() {
        assert_eq!(
            fully_booted(224),
            b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 224\r\nLastReload: 224\r\n\
              Status: Fully Booted\r\n\r\n"
        );
    }

    #[test]
    fn successful_auth_as_captured() {
        let e = successful_auth(&AuthInfo {
            system_name: Some("kitpbx"),
            now: 1_795_249_644_748_000,
            session_start: 1_795_249_644_748_000,
            user: "admin",
            session_id: 1,
            local: "127.0.0.1:5038".parse().unwrap(),
            remote: "127.0.0.1:49152".parse().unwrap(),
        });
        let text = String::from_utf8(e).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, _)| k))
            .collect();
        // Field order of asterisk22-sip-systemname.txt.
        assert_eq!(
            keys,
            [
                "Event",
                "Privilege",
                "SystemName",
                "EventTV",
                "Severity",
                "Service",
                "EventVersion",
                "AccountID",
                "SessionID",
                "LocalAddress",
                "RemoteAddress",
                "UsingPassword",
                "SessionTV"
            ]
        );
        assert!(text.contains("\r\nEventTV: 2026-11-21T08:27:24.748+0000\r\n"));
        assert!(text.contains("\r\nRemoteAddress: IPV4/TCP/127.0.0.1/49152\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
