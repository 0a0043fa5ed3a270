//! The floor no server can beat, measured with the same rings as everything else:
//!
//! - bare idle loopback TCP pairs: a listener per group, `pairs` connect chains into one
//!   ring's fixed-file table and as many multishot accepts into another's, nothing read,
//!   nothing written; then a multishot receive armed on every socket of both ends;
//! - a raw send loop: the accepting side sends the same WebSocket frame to every socket,
//!   `rounds` times (one send in flight per socket, batched submits), while the
//!   connecting side reads in a tight loop and counts the bytes.
//!
//! Each group is two threads (an accept/send ring and a connect/receive ring, at most
//! one fixed-file table of sockets each), so the sender's CPU time is its own. The
//! listener has `SO_LINGER` 0, which accepted sockets inherit: at the end the accepting
//! side closes first with a reset, and no pair leaves a `TIME_WAIT` behind to skew the
//! next measurement.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Socket, Type};
use switchboard_uring::{BufRing, Completion, ConnectSpec, Kind, Ring, RingParams, Token, probe};

use super::addr;

const TICK: Duration = Duration::from_millis(10);
const RECV_GROUP: u16 = 0;

/// Phases, in order; the orchestrator moves the threads on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Connect = 0,
    Arm = 1,
    Send = 2,
    Stop = 3,
}

#[derive(Debug)]
pub struct FloorPlan {
    /// Pairs per group (each at most one fixed-file table).
    pub groups: Vec<u32>,
    pub sources: Vec<Ipv4Addr>,
    /// Connects per second, over all groups.
    pub connect_rate: f64,
    pub connect_timeout: Duration,
    /// The frame the send loop delivers.
    pub frame: Bytes,
    pub rounds: u32,
}

/// Live counters of one group.
#[derive(Debug, Default)]
pub struct GroupCounters {
    pub accepted: AtomicU64,
    pub connected: AtomicU64,
    pub connect_errors: AtomicU64,
    pub armed_server: AtomicU64,
    pub armed_client: AtomicU64,
    pub sends_done: AtomicU64,
    pub bytes_received: AtomicU64,
    pub send_finished: AtomicBool,
    /// CPU time of the sending thread during the send loop, ns (`schedstat`).
    pub sender_cpu_ns: AtomicU64,
    pub send_errors: AtomicU64,
}

#[derive(Debug)]
pub struct FloorControl {
    phase: AtomicU8,
    pub groups: Vec<GroupCounters>,
}

impl FloorControl {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            0 => Phase::Connect,
            1 => Phase::Arm,
            2 => Phase::Send,
            _ => Phase::Stop,
        }
    }

    pub fn set(&self, p: Phase) {
        self.phase.store(p as u8, Relaxed);
    }
}

/// The running floor threads.
pub struct Floor {
    pub control: Arc<FloorControl>,
    servers: Vec<std::thread::JoinHandle<io::Result<()>>>,
    clients: Vec<std::thread::JoinHandle<io::Result<()>>>,
}

impl Floor {
    pub fn start(plan: FloorPlan) -> io::Result<Floor> {
        let plan = Arc::new(plan);
        let control = Arc::new(FloorControl {
            phase: AtomicU8::new(Phase::Connect as u8),
            groups: plan
                .groups
                .iter()
                .map(|_| GroupCounters::default())
                .collect(),
        });
        let mut servers = Vec::new();
        let mut clients = Vec::new();
        for (g, &pairs) in plan.groups.iter().enumerate() {
            let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            listener.set_reuse_address(true)?;
            listener.set_linger(Some(Duration::ZERO))?;
            listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            listener.listen(65535)?;
            let addr = listener
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no inet address"))?;
            let (c, p) = (control.clone(), plan.clone());
            servers.push(
                std::thread::Builder::new()
                    .name(format!("floor-accept-{g}"))
                    .spawn(move || server(g, pairs, listener, &p, &c))?,
            );
            let (c, p) = (control.clone(), plan.clone());
            clients.push(
                std::thread::Builder::new()
                    .name(format!("floor-connect-{g}"))
                    .spawn(move || client(g, pairs, addr, &p, &c))?,
            );
        }
        Ok(Floor {
            control,
            servers,
            clients,
        })
    }

    pub fn any_finished(&self) -> bool {
        self.servers
            .iter()
            .chain(&self.clients)
            .any(|h| h.is_finished())
    }

    /// Stops the accepting side first (its resets leave no `TIME_WAIT`), then the rest.
    pub fn stop(self) -> io::Result<()> {
        self.control.set(Phase::Stop);
        let mut first_err = None;
        for h in self.servers.into_iter().chain(self.clients) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(io::Error::other("a floor thread panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// CPU time of the calling thread, ns (`/proc/thread-self/schedstat`, first field).
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ring(slots: u32) -> io::Result<Ring> {
    let ring = Ring::new(RingParams {
        sq_entries: 4096,
        cq_entries: 32768,
        fixed_files: slots.max(1),
    })?;
    probe::check_client(&ring).map_err(io::Error::other)?;
    Ok(ring)
}

/// Enter, reap, and hand each completion to `f`; the tick keeps the loop turning.
fn turn(ring: &mut Ring, out: &mut Vec<Completion>) -> io::Result<()> {
    ring.enter(true)?;
    ring.reap(out);
    Ok(())
}

/// The accepting and sending side of group `g`.
fn server(
    g: usize,
    pairs: u32,
    listener: Socket,
    plan: &FloorPlan,
    control: &FloorControl,
) -> io::Result<()> {
    let mut ring = ring(pairs)?;
    let mut bufs = BufRing::new(&ring, RECV_GROUP, 64, 4096)?;
    let counters = &control.groups[g];
    let mut slots: Vec<u32> = Vec::with_capacity(pairs as usize);
    // Rounds left per slot, and sends in flight.
    let mut left: Vec<u32> = Vec::new();
    let mut in_flight = 0u64;
    let mut armed = false;
    let mut sending = false;
    let mut cpu_start = 0;
    ring.accept_multishot(listener.as_raw_fd());
    ring.tick(TICK);
    let mut cqes = Vec::with_capacity(4096);
    loop {
        turn(&mut ring, &mut cqes)?;
        for c in cqes.drain(..) {
            match c.token.kind {
                Kind::Accept if c.result >= 0 => {
                    slots.push(c.result as u32);
                    counters.accepted.fetch_add(1, Relaxed);
                    if !c.more() {
                        ring.accept_multishot(listener.as_raw_fd());
                    }
                }
                Kind::Accept => {
                    tracing::warn!("floor accept: {}", io::Error::from_raw_os_error(-c.result));
                    if !c.more() {
                        ring.accept_multishot(listener.as_raw_fd());
                    }
                }
                Kind::Recv => {
                    if let Some(bid) = c.buffer_id() {
                        bufs.take(bid, 0);
                        bufs.recycle(bid);
                    }
                }
                Kind::Send => {
                    in_flight -= 1;
                    let i = c.token.generation as usize;
                    let buf = c.sent.unwrap_or_default();
                    if c.result < 0 {
                        counters.send_errors.fetch_add(1, Relaxed);
                        left[i] = 0;
                    } else if (c.result as usize) < buf.len() {
                        ring.send(c.token, buf.slice(c.result as usize..));
                        in_flight += 1;
                        continue;
                    } else {
                        counters.sends_done.fetch_add(1, Relaxed);
                    }
                    if left[i] > 0 {
                        left[i] -= 1;
                        ring.send(c.token, plan.frame.clone());
                        in_flight += 1;
                    }
                }
                Kind::Tick => ring.tick(TICK),
                _ => {}
            }
        }
        bufs.publish();
        if sending && in_flight == 0 && !counters.send_finished.load(Relaxed) {
            let end = thread_cpu_ns().unwrap_or(0);
            counters
                .sender_cpu_ns
                .store(end.saturating_sub(cpu_start), Relaxed);
            counters.send_finished.store(true, Relaxed);
        }
        match control.phase() {
            Phase::Arm | Phase::Send if !armed => {
                armed = true;
                for &slot in &slots {
                    ring.recv_multishot(Token::new(Kind::Recv, 0, slot), RECV_GROUP);
                }
                counters.armed_server.store(slots.len() as u64, Relaxed);
            }
            Phase::Send if !sending => {
                sending = true;
                cpu_start = thread_cpu_ns().unwrap_or(0);
                left = vec![plan.rounds.saturating_sub(1); slots.len()];
                if plan.rounds == 0 {
                    left.clear();
                }
                for (i, &slot) in slots.iter().enumerate().take(left.len()) {
                    // The generation field carries the index of the slot in `slots`.
                    ring.send(Token::new(Kind::Send, i as u32, slot), plan.frame.clone());
                    in_flight += 1;
                }
            }
            Phase::Stop => return Ok(()),
            _ => {}
        }
    }
}

/// The connecting and receiving side of group `g`.
fn client(
    g: usize,
    pairs: u32,
    dst: SocketAddr,
    plan: &FloorPlan,
    control: &FloorControl,
) -> io::Result<()> {
    let mut ring = ring(pairs)?;
    let mut bufs = BufRing::new(&ring, RECV_GROUP, 4096, 4096)?;
    let counters = &control.groups[g];
    let groups = plan.groups.len() as f64;
    let rate = plan.connect_rate / groups;
    let mut budget = 1.0;
    let mut next = 0u32;
    let mut pending = vec![0u8; pairs as usize];
    let mut connected = vec![false; pairs as usize];
    let mut in_progress = 0u32;
    let mut armed = false;
    let mut last = std::time::Instant::now();
    ring.tick(TICK);
    let mut cqes = Vec::with_capacity(4096);
    loop {
        turn(&mut ring, &mut cqes)?;
        for c in cqes.drain(..) {
            match c.token.kind {
                Kind::Socket
                | Kind::SockOpt
                | Kind::Bind
                | Kind::Connect
                | Kind::ConnectTimeout => {
                    let slot = c.token.slot as usize;
                    pending[slot] -= 1;
                    if c.token.kind == Kind::Connect && c.result == 0 {
                        connected[slot] = true;
                    }
                    if pending[slot] == 0 {
                        in_progress -= 1;
                        if connected[slot] {
                            counters.connected.fetch_add(1, Relaxed);
                        } else {
                            counters.connect_errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                Kind::Recv => {
                    if let Some(bid) = c.buffer_id() {
                        let n = c.result.max(0) as usize;
                        bufs.take(bid, n);
                        bufs.recycle(bid);
                        counters.bytes_received.fetch_add(n as u64, Relaxed);
                    }
                    if !c.more() && c.result > 0 || c.result == -libc::ENOBUFS {
                        ring.recv_multishot(c.token, RECV_GROUP);
                    }
                }
                Kind::Tick => {
                    ring.tick(TICK);
                    let now = std::time::Instant::now();
                    budget = (budget + rate * (now - last).as_secs_f64()).min(rate * 0.02 + 1.0);
                    last = now;
                    while budget >= 1.0 && next < pairs && in_progress < 1024 {
                        let spec = ConnectSpec {
                            src: addr::source_for(next * groups as u32 + g as u32, &plan.sources),
                            dst,
                            bind_no_port: true,
                            timeout: Some(plan.connect_timeout),
                        };
                        pending[next as usize] =
                            ring.connect_direct(Token::new(Kind::Connect, 0, next), &spec);
                        next += 1;
                        in_progress += 1;
                        budget -= 1.0;
                    }
                }
                _ => {}
            }
        }
        bufs.publish();
        match control.phase() {
            Phase::Arm | Phase::Send if !armed => {
                armed = true;
                let mut n = 0;
                for (slot, ok) in connected.iter().enumerate() {
                    if *ok {
                        ring.recv_multishot(Token::new(Kind::Recv, 0, slot as u32), RECV_GROUP);
                        n += 1;
                    }
                }
                counters.armed_client.store(n, Relaxed);
            }
            Phase::Stop => return Ok(()),
            _ => {}
        }
    }
}
