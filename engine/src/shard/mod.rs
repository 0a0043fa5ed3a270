//! A connection shard: one thread, one io_uring ring, one listener, one fixed-file table,
//! one provided-buffer ring, and every connection accepted on it. The loop is an explicit
//! state machine: enter (submit + wait), reap a batch of completions, dispatch each,
//! drain the router's queue, hand buffers back, flush to the router. Nothing here blocks
//! and nothing here locks; other threads reach a shard only through its queue and
//! doorbell.

mod access;
mod ami;
pub mod conn;
mod direct;
mod drain;
mod http;
mod keepalive;
mod limits;
mod poll;
mod sendq;
mod slow;
mod subscribe;
mod timer;
pub mod topics;
mod ws;

pub use slow::SlowPolicy;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;
use socket2::Socket;
use switchboard_proto::address::DirectAddress;
use switchboard_proto::http1;

use crate::config::{LINGER, TICK};
use crate::metrics::{CloseReason, Registry, ShardMetrics};
use crate::pubsub::link::{ConnRef, Doorbell, FromRouter, Message, ShardEnd, ToRouter};
use crate::uring::{BufRing, Completion, Kind, Ring, RingParams, Token};
use conn::{ConnTable, Phase, flag};
use sendq::SendQueues;
use subscribe::Barrier;
use timer::Wheel;
use topics::{InterestChange, Topics};

/// The provided-buffer group id of every shard's receive buffers.
const RECV_GROUP: u16 = 0;

/// What a shard needs from the configuration, in the units it works in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The router's epoch, the first part of every position.
    pub epoch: u32,
    pub poll_timeout: Duration,
    pub echo: bool,
    pub max_conns: u32,
    pub http: http1::Limits,
    pub max_publish_bytes: usize,
    pub max_queued_bytes: u32,
    pub max_queued_messages: u32,
    pub slow_policy: SlowPolicy,
    pub request_timeout: Duration,
    pub sse_heartbeat: Duration,
    pub sse_retry: Duration,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub drain_timeout: Duration,
    /// 0: WebSockets are never pinged.
    pub ws_ping_interval: Duration,
    pub ws_pong_timeout: Duration,
    pub max_subscriptions: u16,
    /// 0: unlimited.
    pub max_conns_per_ip: u32,
    /// Who may subscribe, publish, and connect from which origins.
    pub auth: crate::auth::Policy,
    /// A PBX is configured (`--ami`): `ami.*` subscriptions start with a snapshot and
    /// actions go to the gateway.
    pub ami: bool,
}

/// Everything a shard thread is given when it starts.
pub struct ShardInit {
    pub id: usize,
    pub settings: Arc<Settings>,
    pub listener: Socket,
    pub link: ShardEnd,
    pub router_bell: Arc<Doorbell>,
    pub metrics: Arc<ShardMetrics>,
    pub registry: Arc<Registry>,
}

pub struct Shard {
    /// Declared before `bufs`: the ring (and with it the kernel's use of the buffers) is
    /// torn down before the buffer memory is unmapped.
    core: Core,
    bufs: BufRing,
}

/// The shard minus its receive buffers, so that a buffer can be borrowed while the
/// connection it belongs to is handled.
struct Core {
    ring: Ring,
    /// Dropped when the shard starts draining.
    listener: Option<Socket>,
    settings: Arc<Settings>,
    conns: ConnTable,
    topics: Topics,
    sendq: SendQueues,
    wheel: Wheel,
    barriers: Slab<Barrier>,
    link: ShardEnd,
    /// Messages for the router that found its queue full, in order.
    overflow: VecDeque<ToRouter>,
    /// Something was pushed to the router since its doorbell was last rung.
    router_dirty: bool,
    router_bell: Arc<Doorbell>,
    bell: Arc<Doorbell>,
    metrics: Arc<ShardMetrics>,
    registry: Arc<Registry>,
    /// Connections whose recv stopped for lack of buffers, re-armed after buffers return.
    starved: Vec<ConnRef>,
    /// Stamp of the delivery in progress (dedupes overlapping subscriptions).
    stamp: u32,
    epoch: Instant,
    /// Accept operations the kernel holds: the multishot one, or (with
    /// `--max-conns-per-ip`) up to `limits::PEER_ACCEPT_DEPTH` single-shot ones.
    accepts_armed: u32,
    due: Vec<(u32, u32, u32)>,
    interest: Vec<InterestChange>,
    /// This shard's index (the first part of its connections' direct addresses).
    shard: u8,
    /// Each slot's direct-address secret, and where secrets come from.
    secrets: direct::Secrets,
    secrets_source: direct::SecretSource,
    /// Slow consumers whose messages are being dropped.
    dropping: slow::Dropping,
    /// Set once the process asked to stop: the shard no longer accepts.
    drain: Option<drain::Drain>,
    /// Connections per source address (with `--max-conns-per-ip`).
    per_ip: limits::PerIp,
    /// Each connection's token claims and expiry, and the CORS origin of its request.
    access: access::Access,
}

impl Shard {
    /// Creates the shard's ring, fixed-file table and buffer ring. Must run on the shard's
    /// own thread: the ring accepts submissions only from the thread that made it.
    pub fn new(init: ShardInit) -> io::Result<Shard> {
        let s = &init.settings;
        let ring = Ring::new(RingParams {
            sq_entries: 4096,
            cq_entries: 65536,
            fixed_files: s.max_conns,
        })?;
        let bufs = BufRing::new(&ring, RECV_GROUP, s.recv_buffers, s.recv_buffer_size)?;
        let bell = Doorbell::new(ring.fd());
        let secrets = direct::Secrets::new(s.max_conns);
        let secrets_source = direct::SecretSource::new()?;
        let access = access::Access::new(s.max_conns, s.auth.required);
        tracing::debug!(
            shard = init.id,
            "ring ready ({}), {} connection slots",
            ring.task_run(),
            s.max_conns
        );
        Ok(Shard {
            core: Core {
                conns: ConnTable::new(s.max_conns),
                ring,
                listener: Some(init.listener),
                settings: init.settings,
                topics: Topics::default(),
                sendq: SendQueues::default(),
                wheel: Wheel::new(),
                barriers: Slab::new(),
                link: init.link,
                overflow: VecDeque::new(),
                router_dirty: false,
                router_bell: init.router_bell,
                bell,
                metrics: init.metrics,
                registry: init.registry,
                starved: Vec::new(),
                stamp: 0,
                epoch: Instant::now(),
                accepts_armed: 0,
                due: Vec::new(),
                interest: Vec::new(),
                shard: u8::try_from(init.id).expect("at most 256 shards"),
                secrets,
                secrets_source,
                dropping: slow::Dropping::default(),
                drain: None,
                per_ip: limits::PerIp::default(),
                access,
            },
            bufs,
        })
    }

    /// This shard's doorbell, through which the router wakes it.
    pub fn bell(&self) -> Arc<Doorbell> {
        self.core.bell.clone()
    }

    /// Runs the loop until a drain is over; returns how many connections the drain had
    /// to cut at its deadline. The ring stays with `self`: other rings may still post
    /// wake-ups to it until the process exits.
    pub fn run(&mut self) -> io::Result<u32> {
        let core = &mut self.core;
        core.arm_accept();
        core.ring.tick(TICK);
        let mut completions: Vec<Completion> = Vec::with_capacity(4096);
        loop {
            // Sleep only if nothing is waiting in the router's queue; the doorbell makes a
            // push that races with this check wake us.
            let mut idle = self.core.link.inbox.is_empty();
            if idle {
                self.core.bell.arm();
                idle = self.core.link.inbox.is_empty();
            }
            self.core.ring.enter(idle)?;
            self.core.bell.disarm();
            let turn = Instant::now();

            self.core.ring.reap(&mut completions);
            for c in completions.drain(..) {
                self.dispatch(c);
            }
            self.core.drain_router();
            self.bufs.publish();
            self.core.rearm_starved();
            self.core.flush_router();
            self.core.metrics.loop_turns.fetch_add(1, Relaxed);
            self.core.metrics.loop_turn(turn.elapsed());
            if let Some(cut) = self.core.drained() {
                // Submit the last closes before leaving.
                self.core.ring.enter(false)?;
                return Ok(cut);
            }
        }
    }

    fn dispatch(&mut self, c: Completion) {
        if c.token.kind != Kind::Recv {
            self.core.dispatch(c);
            return;
        }
        let more = c.more();
        match c.buffer_id() {
            Some(bid) if c.result > 0 => {
                let data = self.bufs.take(bid, c.result as usize);
                self.core.on_recv(c.token, c.result, more, data);
                self.bufs.recycle(bid);
            }
            Some(bid) => {
                // A buffer with no data: give it straight back.
                self.bufs.take(bid, 0);
                self.bufs.recycle(bid);
                self.core.on_recv(c.token, c.result, more, &mut []);
            }
            None => self.core.on_recv(c.token, c.result, more, &mut []),
        }
    }
}

impl Core {
    fn dispatch(&mut self, c: Completion) {
        match c.token.kind {
            Kind::Accept | Kind::AcceptPeer => self.on_accept(&c),
            Kind::Send => self.on_send(c),
            Kind::Tick => self.on_tick(),
            Kind::Wake => {}
            Kind::Shutdown | Kind::Cancel => self.on_slot_op_done(&c),
            // These complete only on failure (SKIP_SUCCESS).
            Kind::Close | Kind::WakeSent | Kind::CancelRecv => {
                if c.result != -libc::ENOENT
                    && c.result != -libc::ENOTCONN
                    && c.result != -libc::EALREADY
                {
                    tracing::debug!(
                        "{:?} on slot {} failed: {}",
                        c.token.kind,
                        c.token.slot,
                        io::Error::from_raw_os_error(-c.result)
                    );
                }
            }
            Kind::Recv => {
                unreachable!("recv completions carry buffers and are dispatched by Shard")
            }
            // Client-side operations (loadgen's connect chains); a shard never submits them.
            Kind::Socket | Kind::SockOpt | Kind::Bind | Kind::Connect | Kind::ConnectTimeout => {
                tracing::error!("unexpected {:?} completion on a shard", c.token.kind);
            }
        }
    }

    /// A shutdown or cancel finished: the kernel no longer refers to the slot for it.
    fn on_slot_op_done(&mut self, c: &Completion) {
        let slot = c.token.slot;
        let Some(conn) = self.conns.get(slot, c.token.generation) else {
            tracing::error!("{:?} completion for a freed slot {slot}", c.token.kind);
            return;
        };
        conn.clear(if c.token.kind == Kind::Shutdown {
            flag::SHUTTING
        } else {
            flag::CANCELLING
        });
        if c.result < 0 && ![libc::ENOENT, libc::ENOTCONN, libc::EALREADY].contains(&-c.result) {
            tracing::debug!(
                slot,
                "{:?}: {}",
                c.token.kind,
                io::Error::from_raw_os_error(-c.result)
            );
        }
        if conn.has(flag::FINAL) {
            self.try_release(slot);
        }
    }

    // ---- accept -------------------------------------------------------------------

    /// Arms what is missing of the accepts: the multishot accept, or, when connections
    /// per address are limited, single-shot accepts that report the peer's address.
    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if self.drain.is_some() {
            return;
        }
        let fd = listener.as_raw_fd();
        if self.settings.max_conns_per_ip == 0 {
            if self.accepts_armed == 0 {
                self.ring.accept_multishot(fd);
                self.accepts_armed = 1;
            }
        } else {
            while self.accepts_armed < limits::PEER_ACCEPT_DEPTH {
                self.ring.accept_with_peer(fd);
                self.accepts_armed += 1;
            }
        }
    }

    fn on_accept(&mut self, c: &Completion) {
        if c.token.kind == Kind::AcceptPeer || !c.more() {
            self.accepts_armed -= 1;
            self.accepts_gone();
        }
        if c.result == -libc::ECANCELED && self.drain.is_some() {
            return; // the drain cancelled it
        }
        if c.result < 0 {
            self.metrics.accept_errors.fetch_add(1, Relaxed);
            if c.result == -libc::ENFILE || c.result == -libc::EMFILE {
                // The fixed-file table is full: the accepts are re-armed on the next tick
                // (warned once per tick, when the last of them has failed).
                if self.accepts_armed == 0 {
                    tracing::warn!(
                        "accept: all {} connection slots are in use",
                        self.conns.capacity()
                    );
                }
            } else {
                tracing::warn!("accept failed: {}", io::Error::from_raw_os_error(-c.result));
                self.arm_accept();
            }
            return;
        }
        self.arm_accept();
        let slot = c.result as u32;
        if slot >= self.conns.capacity() {
            tracing::error!("accept: kernel gave slot {slot} beyond the table");
            self.ring.close(Token::new(Kind::Close, 0, slot));
            return;
        }
        let conn = self.conns.slot_mut(slot);
        assert_eq!(
            conn.phase,
            Phase::Free,
            "kernel reused slot {slot} before we freed it"
        );
        conn.phase = Phase::Http;
        conn.set(flag::RECV_ARMED);
        let token = conn.token(Kind::Recv, slot);
        self.conns.live += 1;
        self.metrics.accepted.fetch_add(1, Relaxed);
        self.metrics.phase_change(Phase::Free, Phase::Http);
        self.ring.recv_multishot(token, RECV_GROUP);
        self.set_deadline(slot, self.settings.request_timeout);
        if let Some(peer) = c.peer {
            self.admit_peer(slot, peer);
        }
    }

    // ---- receive ------------------------------------------------------------------

    fn on_recv(&mut self, token: Token, result: i32, more: bool, data: &mut [u8]) {
        let slot = token.slot;
        let Some(conn) = self.conns.get(slot, token.generation) else {
            tracing::error!("recv completion for a freed slot {slot}");
            return;
        };
        if !more {
            conn.clear(flag::RECV_ARMED);
        }
        match result {
            n if n > 0 => self.on_data(slot, data),
            0 => {
                conn.set(flag::PEER_EOF);
                conn.close_because(CloseReason::Client);
                self.on_eof(slot);
            }
            e if e == -libc::ENOBUFS => {
                self.metrics.recv_buffer_starved.fetch_add(1, Relaxed);
                if !more {
                    self.starved.push(conn.conn_ref(slot));
                }
                return;
            }
            e if e == -libc::ECANCELED => {}
            e => {
                tracing::debug!(slot, "recv: {}", io::Error::from_raw_os_error(-e));
                conn.close_because(CloseReason::Client);
                self.finalize(slot);
            }
        }
        let Some(conn) = self.conns.get(slot, token.generation) else {
            return;
        };
        if conn.has(flag::FINAL) {
            self.try_release(slot);
        } else if !more
            && (result > 0 || result == -libc::ECANCELED)
            && !conn.has(flag::RECV_ARMED | flag::READ_PAUSED | flag::PEER_EOF)
        {
            // The kernel ended the multishot (e.g. CQ pressure), or reading was paused and
            // has resumed since the cancel was sent: arm it again.
            conn.set(flag::RECV_ARMED);
            self.ring.recv_multishot(token, RECV_GROUP);
        }
    }

    fn on_data(&mut self, slot: u32, data: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        let op_pending = conn.has(flag::OP_PENDING);
        match conn.phase {
            Phase::Http => self.http_input(slot, data),
            Phase::Publishing | Phase::Subscribing | Phase::Poll => self.park_input(slot, data),
            Phase::Ws | Phase::Echo if op_pending => {
                conn.set(flag::WS_HEARD);
                self.park_input(slot, data)
            }
            Phase::Ws | Phase::Echo => {
                conn.set(flag::WS_HEARD);
                self.ws_input(slot, data)
            }
            // An event stream is one way; lingering connections are being drained.
            Phase::Sse | Phase::Closing => {}
            Phase::Free => unreachable!("data for a free slot"),
        }
    }

    fn on_eof(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        match conn.phase {
            Phase::Closing if conn.has(flag::CLOSE_AFTER_FLUSH) => {} // `shut` sees PEER_EOF
            Phase::Http if conn.has(flag::SENDING) => self.close_after_flush(slot),
            _ => self.finalize(slot),
        }
    }

    fn rearm_starved(&mut self) {
        for r in std::mem::take(&mut self.starved) {
            if let Some(conn) = self.conns.get(r.slot, r.generation)
                && !conn.has(flag::FINAL)
                && !conn.has(flag::RECV_ARMED)
            {
                conn.set(flag::RECV_ARMED);
                let token = conn.token(Kind::Recv, r.slot);
                self.ring.recv_multishot(token, RECV_GROUP);
            }
        }
    }

    // ---- send ---------------------------------------------------------------------

    /// Queues `buf` for `slot`; sends at once if nothing is in flight.
    fn send(&mut self, slot: u32, buf: Bytes) {
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::FINAL) || conn.has(flag::WS_CLOSE_SENT) || buf.is_empty() {
            return;
        }
        send_or_queue(
            &mut self.ring,
            &mut self.sendq,
            &self.metrics,
            &self.settings,
            conn,
            slot,
            buf,
            None,
        );
    }

    fn on_send(&mut self, c: Completion) {
        let slot = c.token.slot;
        let Some(conn) = self.conns.get(slot, c.token.generation) else {
            tracing::error!("send completion for a freed slot {slot}");
            return;
        };
        conn.clear(flag::SENDING);
        let Some(buf) = c.sent else { return };
        if conn.has(flag::FINAL) {
            self.try_release(slot);
            return;
        }
        if c.result < 0 {
            tracing::debug!(slot, "send: {}", io::Error::from_raw_os_error(-c.result));
            conn.close_because(CloseReason::Client);
            self.finalize(slot);
            return;
        }
        let n = c.result as usize;
        self.metrics.bytes_sent.fetch_add(n as u64, Relaxed);
        if n < buf.len() {
            conn.set(flag::SENDING);
            let token = conn.token(Kind::Send, slot);
            self.ring.send(token, buf.slice(n..));
        } else if let Some(next) = self.sendq.pop(conn) {
            self.metrics.send_queue_buffers.fetch_sub(1, Relaxed);
            conn.set(flag::SENDING);
            let token = conn.token(Kind::Send, slot);
            self.ring.send(token, next);
        } else if conn.has(flag::CLOSE_AFTER_FLUSH) {
            self.shut(slot);
        } else if conn.has(flag::DROPPING) {
            self.caught_up(slot);
        }
    }

    // ---- closing ------------------------------------------------------------------

    /// Moves a connection to `Closing`: it leaves its topics and is reachable no more.
    fn leave(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if !conn.is_live() {
            return;
        }
        self.metrics.phase_change(conn.phase, Phase::Closing);
        conn.phase = Phase::Closing;
        conn.close_because(CloseReason::Server);
        self.secrets.clear(slot);
        self.dropping.forget(slot);
        self.access.forget(slot);
        self.drop_subscriptions(slot);
    }

    /// Removes every subscription of a connection, telling the router of lost interest.
    fn drop_subscriptions(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.subs > 0 {
            self.metrics
                .subscriptions
                .fetch_sub(u64::from(conn.subs), Relaxed);
            conn.subs = 0;
        }
        let mut changes = std::mem::take(&mut self.interest);
        self.topics
            .unsubscribe_all(&mut conn.sub_head, &mut changes);
        for change in changes.drain(..) {
            self.tell_router(ToRouter::Interest {
                prefix: change.prefix,
                subtree: change.subtree,
                add: change.add,
            });
        }
        self.interest = changes;
        self.metrics.topics.store(self.topics.len() as u64, Relaxed);
    }

    /// Graceful close: finish sending what is queued, then FIN, then linger for the peer's
    /// EOF so that our last bytes are not destroyed by a reset.
    fn close_after_flush(&mut self, slot: u32) {
        self.leave(slot);
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::FINAL) || conn.has(flag::SHUT) {
            return;
        }
        conn.set(flag::CLOSE_AFTER_FLUSH);
        if !conn.has(flag::SENDING) && conn.send_queue_empty() {
            self.shut(slot);
        } else {
            self.set_deadline(slot, self.settings.request_timeout);
        }
    }

    fn shut(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        conn.clear(flag::CLOSE_AFTER_FLUSH);
        if conn.has(flag::PEER_EOF) || !conn.has(flag::RECV_ARMED) {
            self.finalize(slot);
            return;
        }
        conn.set(flag::SHUT | flag::SHUTTING);
        let token = conn.token(Kind::Shutdown, slot);
        self.ring.shutdown_write(token);
        self.set_deadline(slot, LINGER);
    }

    /// Tears a connection down now: drops what it holds, cancels what the kernel still
    /// has pending, and frees the slot once nothing is.
    fn finalize(&mut self, slot: u32) {
        self.leave(slot);
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::FINAL) {
            return;
        }
        conn.set(flag::FINAL);
        conn.rx = None;
        let dropped = conn.send_head;
        self.sendq.clear(conn);
        if dropped != conn::NIL {
            self.metrics
                .send_queue_buffers
                .store(self.sendq.len() as u64, Relaxed);
        }
        if conn.has(flag::RECV_ARMED | flag::SENDING) {
            conn.set(flag::CANCELLING);
            let token = conn.token(Kind::Cancel, slot);
            self.ring.cancel_all(token);
        }
        self.try_release(slot);
    }

    /// Frees a final connection's slot once no operation that names it is left in the
    /// kernel. The close is submitted now; the kernel can hand the slot to a new
    /// connection only after it runs, and nothing older can look the slot up after that.
    fn try_release(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::IN_KERNEL) {
            return;
        }
        let token = conn.token(Kind::Close, slot);
        self.ring.close(token);
        self.metrics.phase_change(conn.phase, Phase::Free);
        self.metrics.closed(conn.close_reason);
        self.per_ip.release(slot);
        self.conns.free(slot);
    }

    // ---- timers -------------------------------------------------------------------

    fn now_tick(&self) -> u32 {
        (self.epoch.elapsed().as_millis() / TICK.as_millis()) as u32 + 1
    }

    fn set_deadline(&mut self, slot: u32, after: Duration) {
        let ticks = after.as_millis().div_ceil(TICK.as_millis()) as u32;
        let conn = self.conns.slot_mut(slot);
        conn.deadline = self.wheel.schedule(slot, conn.generation, ticks);
    }

    fn on_tick(&mut self) {
        self.ring.tick(TICK);
        self.arm_accept();
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(self.now_tick(), &mut due);
        for (slot, generation, tick) in due.drain(..) {
            let Some(conn) = self.conns.get(slot, generation) else {
                continue;
            };
            if conn.deadline != tick {
                continue; // rescheduled since
            }
            conn.deadline = 0;
            match conn.phase {
                Phase::Sse => {
                    self.send(slot, Bytes::from_static(subscribe::SSE_HEARTBEAT));
                    self.set_deadline(slot, self.settings.sse_heartbeat);
                }
                Phase::Http => self.request_timed_out(slot),
                Phase::Closing => self.finalize(slot),
                Phase::Poll => self.poll_expired(slot),
                Phase::Ws => self.ws_keepalive(slot),
                _ => {}
            }
        }
        self.due = due;
        self.drain_tick();
        self.expire_tokens();
    }

    // ---- router -------------------------------------------------------------------

    /// Sends a control message to the router, in order; a full queue defers it.
    fn tell_router(&mut self, msg: ToRouter) {
        if !self.overflow.is_empty() {
            self.overflow.push_back(msg);
            return;
        }
        match self.link.outbox.push(msg) {
            Ok(()) => self.router_dirty = true,
            Err(rtrb::PushError::Full(msg)) => self.overflow.push_back(msg),
        }
    }

    /// Offers a publish to the router; false when its queue is full (the caller answers
    /// 503: publishes are never queued without bound).
    fn offer_router(&mut self, msg: ToRouter) -> bool {
        if !self.overflow.is_empty() {
            return false;
        }
        match self.link.outbox.push(msg) {
            Ok(()) => {
                self.router_dirty = true;
                true
            }
            Err(_) => false,
        }
    }

    fn flush_router(&mut self) {
        while let Some(msg) = self.overflow.pop_front() {
            match self.link.outbox.push(msg) {
                Ok(()) => self.router_dirty = true,
                Err(rtrb::PushError::Full(msg)) => {
                    self.overflow.push_front(msg);
                    break;
                }
            }
        }
        if self.router_dirty {
            self.router_dirty = false;
            if self.router_bell.ring() {
                self.ring.wake(self.router_bell.ring_fd());
            }
        }
    }

    fn drain_router(&mut self) {
        while let Ok(msg) = self.link.inbox.pop() {
            match msg {
                FromRouter::Deliver(msg) => self.deliver(msg),
                FromRouter::Published {
                    reply,
                    topic,
                    seq,
                    delivered,
                } => self.published(reply, &topic, seq, delivered),
                FromRouter::Barrier { id, gseq, replay } => self.on_barrier(id, gseq, replay),
                FromRouter::AmiResult { conn, status, body } => self.ami_result(conn, status, body),
            }
        }
    }

    /// Queues a message for a direct address to its connection, if it is still there.
    fn deliver_direct(&mut self, msg: &Arc<Message>) {
        let held = DirectAddress::from_topic(&msg.topic).filter(|a| {
            self.secrets.matches(a.slot, a.secret)
                && matches!(self.conns.slot_mut(a.slot).phase, Phase::Ws | Phase::Sse)
        });
        let Some(address) = held else {
            tracing::debug!(
                topic = &*msg.topic,
                "direct message for a connection that is gone"
            );
            self.metrics.direct_dropped.fetch_add(1, Relaxed);
            return;
        };
        let slot = address.slot;
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::DROPPING) {
            self.note_dropped(slot, msg);
            return;
        }
        self.metrics.direct_delivered.fetch_add(1, Relaxed);
        let buf = if conn.phase == Phase::Ws {
            msg.ws_frame.clone()
        } else {
            msg.sse_event.clone()
        };
        let past_bound = send_or_queue(
            &mut self.ring,
            &mut self.sendq,
            &self.metrics,
            &self.settings,
            conn,
            slot,
            buf,
            Some(msg),
        );
        if past_bound {
            self.over_bound(slot);
        }
    }

    /// Queues a routed message to every local subscriber, once each. A subscriber past
    /// its queue bound meets the slow-consumer policy.
    fn deliver(&mut self, msg: Arc<Message>) {
        if switchboard_proto::topic::is_direct(&msg.topic) {
            self.deliver_direct(&msg);
            return;
        }
        self.stamp = self.stamp.wrapping_add(1).max(1);
        let stamp = self.stamp;
        let mut slow = Vec::new();
        let mut polls = Vec::new();
        let mut dropping = Vec::new();
        let Core {
            topics,
            conns,
            ring,
            sendq,
            metrics,
            settings,
            ..
        } = self;
        for subs in topics.matching(&msg.topic) {
            for sub in subs {
                let conn = conns.slot_mut(sub.slot);
                if conn.stamp == stamp {
                    continue;
                }
                conn.stamp = stamp;
                if conn.has(flag::DROPPING) {
                    dropping.push(sub.slot);
                    continue;
                }
                let buf = match conn.phase {
                    Phase::Ws => {
                        metrics.deliveries_ws.fetch_add(1, Relaxed);
                        msg.ws_frame.clone()
                    }
                    Phase::Sse => {
                        metrics.deliveries_sse.fetch_add(1, Relaxed);
                        msg.sse_event.clone()
                    }
                    Phase::Poll => {
                        polls.push(sub.slot);
                        continue;
                    }
                    _ => continue,
                };
                let routed = Some(&msg);
                if send_or_queue(ring, sendq, metrics, settings, conn, sub.slot, buf, routed) {
                    slow.push(sub.slot);
                }
            }
        }
        for slot in dropping {
            self.note_dropped(slot, &msg);
        }
        for slot in slow {
            self.over_bound(slot);
        }
        for slot in polls {
            self.poll_deliver(slot, &msg);
        }
    }
}

/// Sends `buf` on `slot` at once when nothing is in flight, else queues it (with the
/// routed message it encodes, if it is one, so that the `drop` policy can find it).
/// Returns whether the queue is now past one of its bounds (the caller applies the
/// slow-consumer policy). The one path every outgoing byte takes.
#[allow(clippy::too_many_arguments)]
fn send_or_queue(
    ring: &mut Ring,
    sendq: &mut SendQueues,
    metrics: &ShardMetrics,
    settings: &Settings,
    conn: &mut conn::Conn,
    slot: u32,
    buf: Bytes,
    msg: Option<&Arc<Message>>,
) -> bool {
    if !conn.has(flag::SENDING) && conn.send_queue_empty() {
        conn.set(flag::SENDING);
        ring.send(conn.token(Kind::Send, slot), buf);
        return false;
    }
    sendq.push(conn, buf, msg.cloned());
    metrics.send_queue_buffers.fetch_add(1, Relaxed);
    conn.queued_bytes > settings.max_queued_bytes || conn.queued_msgs > settings.max_queued_messages
}
