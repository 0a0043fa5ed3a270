//! One client thread: one ring (fixed files, one provided-buffer ring), one table of
//! connections, and an explicit loop: enter (submit + wait), reap a batch of
//! completions, dispatch each, hand buffers back, re-arm starved receives. A 10 ms tick
//! paces new connects (`--connect-rate`), expires handshakes, wakes backed-off retries,
//! churns, obeys the scenario's command and publishes the thread's counters.
//!
//! Every operation that names a connection's slot is counted in `Conn::pending`; the slot
//! is closed (and may take a new socket) only once that count is zero, so no completion
//! can ever arrive for a slot that has moved on. Received bytes are parsed in place in
//! the provided buffer; only a response head, frame or message split across reads is
//! copied into the connection's boxed `Rx`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::http1::{self, ChunkedDecoder, ResponseFraming};
use switchboard_proto::sse;
use switchboard_proto::ws::{self, Event, Opcode, Reader, Role};
use switchboard_uring::{BufRing, Completion, ConnectSpec, Kind, Ring, RingParams, Token, probe};

use super::conn::{After, ConnTable, Rx, State, after_failure, flag};
use super::errors::{ChainOp, ErrorKind, chain_error, io_error, status_retryable};
use super::retry::{Rng, ws_nonce};
use super::{Command, Control, Setup, TRANSPORTS, ThreadResult, addr, transport_index};
use crate::body;
use crate::cli_values::Transport;

/// The provided-buffer group of every thread's receive buffers.
const RECV_GROUP: u16 = 0;
/// The pacing tick.
pub const TICK: Duration = Duration::from_millis(10);
/// Response header fields parsed at most (a handshake answer has a handful).
const MAX_RESPONSE_HEADERS: usize = 48;

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Kind(ErrorKind),
    /// The handshake was answered with this status.
    Status(u16),
    /// The server closed the WebSocket with this code (`None`: no code).
    WsClose(Option<u16>),
}

impl Failure {
    fn retryable(self) -> bool {
        match self {
            Failure::Kind(k) => k.retryable(),
            Failure::Status(s) => status_retryable(s),
            Failure::WsClose(_) => false,
        }
    }
}

/// Runs client thread `index` until the scenario says stop.
pub fn run(index: u32, setup: Arc<Setup>, control: Arc<Control>) -> io::Result<ThreadResult> {
    let capacity = setup.share(index);
    let ring = Ring::new(RingParams {
        sq_entries: 4096,
        cq_entries: 32768,
        fixed_files: capacity.max(1),
    })?;
    probe::check_client(&ring).map_err(io::Error::other)?;
    let bufs = BufRing::new(
        &ring,
        RECV_GROUP,
        setup.recv_buffers,
        setup.recv_buffer_size,
    )?;
    let topics = setup.topics.len();
    let client = Client {
        core: Core {
            ring,
            index,
            conns: ConnTable::new(capacity),
            res: ThreadResult::new(topics),
            rng: Rng::from_entropy(u64::from(index)),
            next_new: 0,
            next_churn_id: index + capacity * setup.threads,
            ready: VecDeque::new(),
            deadlines: VecDeque::new(),
            backoffs: BinaryHeap::new(),
            overflow: HashMap::new(),
            starved: Vec::new(),
            sse_events: Vec::new(),
            scratch: Vec::new(),
            budget: 1.0,
            churn_budget: 0.0,
            last_tick_ms: setup.clock.ms(),
            open: 0,
            in_progress: 0,
            measuring: false,
            stop: false,
            setup,
            control,
        },
        bufs,
    };
    client.run()
}

struct Client {
    /// Declared before `bufs`: the ring goes before the buffer memory it writes into.
    core: Core,
    bufs: BufRing,
}

struct Core {
    ring: Ring,
    index: u32,
    setup: Arc<Setup>,
    control: Arc<Control>,
    conns: ConnTable,
    res: ThreadResult,
    rng: Rng,
    /// Next slot of the initial share to start.
    next_new: u32,
    /// Next id for a churned slot's new client.
    next_churn_id: u32,
    /// Slots to connect as soon as the rate allows (retries due, churned slots).
    ready: VecDeque<u32>,
    /// Handshake deadlines in order (all have the same length): (ms, slot, generation).
    deadlines: VecDeque<(u64, u32, u32)>,
    /// Retries waiting out their backoff: (ms, slot, generation).
    backoffs: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Frames to send on a connection whose one send is in flight: (generation, bytes).
    overflow: HashMap<u32, (u32, Vec<u8>)>,
    /// Receives that stopped for lack of buffers, re-armed after buffers return.
    starved: Vec<(u32, u32)>,
    sse_events: Vec<sse::Event>,
    scratch: Vec<u8>,
    /// Connects the rate allows now.
    budget: f64,
    churn_budget: f64,
    last_tick_ms: u64,
    open: u64,
    in_progress: u64,
    measuring: bool,
    stop: bool,
}

impl Client {
    fn run(mut self) -> io::Result<ThreadResult> {
        self.core.ring.tick(TICK);
        self.core.on_tick();
        let mut completions: Vec<Completion> = Vec::with_capacity(4096);
        while !self.core.stop {
            self.core.ring.enter(true)?;
            self.core.ring.reap(&mut completions);
            for c in completions.drain(..) {
                self.dispatch(c);
            }
            self.bufs.publish();
            self.core.rearm_starved();
        }
        Ok(self.core.finish())
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
                self.bufs.take(bid, 0);
                self.bufs.recycle(bid);
                self.core.on_recv(c.token, c.result, more, &mut []);
            }
            None => self.core.on_recv(c.token, c.result, more, &mut []),
        }
    }
}

impl Core {
    fn now_us(&self) -> u32 {
        self.setup.clock.epoch.elapsed().as_micros() as u32
    }

    fn dispatch(&mut self, c: Completion) {
        match c.token.kind {
            Kind::Tick => self.on_tick(),
            Kind::Socket | Kind::SockOpt | Kind::Bind | Kind::Connect | Kind::ConnectTimeout => {
                self.on_chain(&c)
            }
            Kind::Send => self.on_send(c),
            Kind::Cancel => self.op_done(c.token),
            // Complete only on failure (SKIP_SUCCESS): a close of a slot whose socket was
            // never created, a cancel that found nothing.
            Kind::Close | Kind::CancelRecv => {
                if c.result != -libc::EBADF && c.result != -libc::ENOENT {
                    tracing::debug!(
                        "{:?} on slot {}: {}",
                        c.token.kind,
                        c.token.slot,
                        io::Error::from_raw_os_error(-c.result)
                    );
                }
            }
            other => tracing::error!("unexpected {other:?} completion"),
        }
    }

    /// A completion for `token` that only ends an operation.
    fn op_done(&mut self, token: Token) {
        let Some(conn) = self.conns.get(token.slot, token.generation) else {
            tracing::error!(
                "{:?} completion for a stale slot {}",
                token.kind,
                token.slot
            );
            return;
        };
        conn.pending -= 1;
        self.after_op(token.slot, token.generation, false);
    }

    /// After a completion of a connection's operation: finish a close once nothing is
    /// pending; re-arm a multishot receive the kernel ended.
    fn after_op(&mut self, slot: u32, generation: u32, rearm: bool) {
        let Some(conn) = self.conns.get(slot, generation) else {
            return;
        };
        match conn.state {
            State::Closing if conn.pending == 0 => self.finish_close(slot),
            State::Handshaking | State::Open
                if rearm && !conn.has(flag::RECV_ARMED | flag::PAUSED) =>
            {
                self.arm_recv(slot);
            }
            _ => {}
        }
    }

    fn arm_recv(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        conn.set(flag::RECV_ARMED);
        conn.pending += 1;
        let token = conn.token(Kind::Recv, slot);
        self.ring.recv_multishot(token, RECV_GROUP);
    }

    fn rearm_starved(&mut self) {
        for (slot, generation) in std::mem::take(&mut self.starved) {
            if let Some(conn) = self.conns.get(slot, generation)
                && matches!(conn.state, State::Handshaking | State::Open)
                && !conn.has(flag::RECV_ARMED | flag::PAUSED)
            {
                self.arm_recv(slot);
            }
        }
    }

    // ---- connecting ---------------------------------------------------------------

    /// Gives slot `slot` of the initial share its client.
    fn init_slot(&mut self, slot: u32) {
        let id = self.index + slot * self.setup.threads;
        self.assign(slot, id);
    }

    fn assign(&mut self, slot: u32, id: u32) {
        let transport = transport_index(self.setup.transport_of(id)).expect("checked at setup");
        let slow = self.setup.is_slow(id);
        let conn = self.conns.slot_mut(slot);
        conn.id = id;
        conn.transport = transport as u8;
        conn.attempt = 0;
        conn.flags = if slow { flag::SLOW } else { 0 };
    }

    fn start_attempt(&mut self, slot: u32) {
        let now = self.now_us();
        let conn = self.conns.slot_mut(slot);
        conn.begin_attempt(now);
        let ep = self.setup.endpoints[usize::from(conn.transport)]
            .as_ref()
            .expect("an endpoint for every transport of the mix");
        let spec = ConnectSpec {
            src: addr::source_for(conn.id, &self.setup.sources),
            dst: ep.addr,
            bind_no_port: true,
            timeout: Some(self.setup.connect_timeout),
        };
        let token = conn.token(Kind::Connect, slot);
        conn.pending += self.ring.connect_direct(token, &spec);
        self.in_progress += 1;
        self.res.attempts += 1;
    }

    fn on_chain(&mut self, c: &Completion) {
        let slot = c.token.slot;
        let Some(conn) = self.conns.get(slot, c.token.generation) else {
            tracing::error!("connect completion for a stale slot {slot}");
            return;
        };
        conn.pending -= 1;
        let r = c.result;
        if r < 0 && r != -libc::ECANCELED {
            let op = match c.token.kind {
                Kind::Socket => Some(ChainOp::Socket),
                Kind::SockOpt => Some(ChainOp::SockOpt),
                Kind::Bind => Some(ChainOp::Bind),
                Kind::Connect => Some(ChainOp::Connect),
                _ => None, // the linked timeout: -ETIME when it fired
            };
            let kind = op.map_or(ErrorKind::ConnectTimeout, |op| chain_error(op, -r));
            conn.note_error(kind);
        }
        if c.token.kind == Kind::Connect && r == 0 {
            conn.set(flag::CONNECTED);
        }
        if conn.pending > 0 {
            return;
        }
        match conn.state {
            State::Connecting if conn.has(flag::CONNECTED) => self.begin_handshake(slot),
            State::Connecting => {
                let kind = conn.error().unwrap_or(ErrorKind::ConnectFailed);
                self.fail(slot, Failure::Kind(kind));
            }
            State::Closing => self.finish_close(slot),
            _ => {}
        }
    }

    fn begin_handshake(&mut self, slot: u32) {
        let setup = self.setup.clone();
        let conn = self.conns.slot_mut(slot);
        conn.go(State::Handshaking);
        let topic = setup.topic_of(conn.id);
        let request = match TRANSPORTS[usize::from(conn.transport)] {
            Transport::Ws => {
                let ep = setup.endpoints[0].as_ref().expect("ws endpoint");
                let key = ws::client_key(&ws_nonce(setup.ws_secret, conn.id, conn.attempt));
                let key = std::str::from_utf8(&key).expect("base64 is ASCII");
                let mut out = Vec::with_capacity(192 + setup.ws_targets[topic].len());
                ws::write_client_request(&mut out, &ep.host, &setup.ws_targets[topic], key, &[]);
                Bytes::from(out)
            }
            Transport::Sse => setup.sse_requests[topic].clone(),
            Transport::Poll => poll_request(&setup, topic, PRIME_SINCE),
        };
        let generation = conn.generation;
        self.arm_recv(slot);
        self.send(slot, request);
        let due = self.setup.clock.ms() + self.setup.handshake_timeout.as_millis() as u64;
        self.deadlines.push_back((due, slot, generation));
    }

    // ---- receiving ----------------------------------------------------------------

    fn on_recv(&mut self, token: Token, result: i32, more: bool, data: &mut [u8]) {
        let slot = token.slot;
        let Some(conn) = self.conns.get(slot, token.generation) else {
            tracing::error!("recv completion for a stale slot {slot}");
            return;
        };
        if !more {
            conn.pending -= 1;
            conn.clear(flag::RECV_ARMED);
        }
        match result {
            n if n > 0 => match conn.state {
                State::Handshaking | State::Open
                    if TRANSPORTS[usize::from(conn.transport)] == Transport::Poll =>
                {
                    self.poll_input(slot, data)
                }
                State::Handshaking => self.handshake_input(slot, data),
                State::Open => self.stream_input(slot, data),
                _ => {}
            },
            0 => self.fail(slot, Failure::Kind(ErrorKind::Eof)),
            e if e == -libc::ENOBUFS => {
                self.res.recv_starved += 1;
                if !more {
                    self.starved.push((slot, token.generation));
                }
            }
            e if e == -libc::ECANCELED => {}
            e => self.fail(slot, Failure::Kind(io_error(-e, false))),
        }
        self.after_op(slot, token.generation, !more && result > 0);
    }

    /// The handshake answer: a response head, possibly split across reads, possibly
    /// followed by the first frames or events in the same read.
    fn handshake_input(&mut self, slot: u32, data: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        let mut spill = match conn.rx.take().map(|b| *b) {
            Some(Rx::Head(v)) => Some(v),
            Some(other) => {
                conn.rx = Some(Box::new(other));
                None
            }
            None => None,
        };
        let (id, attempt, transport) = (
            conn.id,
            conn.attempt,
            TRANSPORTS[usize::from(conn.transport)],
        );
        let buf: &mut [u8] = match spill.as_mut() {
            Some(v) => {
                v.extend_from_slice(data);
                v.as_mut_slice()
            }
            None => data,
        };
        let verdict = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            match http1::parse_response(buf, &mut headers) {
                Ok(None) => None,
                Err(_) => Some(Err(Failure::Kind(ErrorKind::HandshakeInvalid))),
                Ok(Some(resp)) => Some(
                    check_response(&resp, transport, self.setup.ws_secret, id, attempt)
                        .map(|chunked| (resp.head_len, chunked)),
                ),
            }
        };
        match verdict {
            None => {
                let head = match spill {
                    Some(v) => v,
                    None => data.to_vec(),
                };
                self.conns.slot_mut(slot).rx = Some(Box::new(Rx::Head(head)));
            }
            Some(Err(f)) => self.fail(slot, f),
            Some(Ok((head_len, chunked))) => {
                self.open(slot, chunked);
                if head_len < buf.len() {
                    self.stream_input(slot, &mut buf[head_len..]);
                }
            }
        }
    }

    fn open(&mut self, slot: u32, chunked: bool) {
        let now = self.now_us();
        let measuring = self.measuring;
        let conn = self.conns.slot_mut(slot);
        conn.go(State::Open);
        self.res
            .connect
            .record_us(u64::from(now.wrapping_sub(conn.since_us)));
        conn.since_us = now;
        if TRANSPORTS[usize::from(conn.transport)] == Transport::Sse {
            conn.rx = Some(Box::new(Rx::Sse {
                parser: sse::Parser::new(),
                chunked: chunked.then(ChunkedDecoder::new),
            }));
        }
        let slow = conn.has(flag::SLOW);
        self.in_progress -= 1;
        self.open += 1;
        if measuring && slow {
            self.pause(slot);
        }
    }

    fn stream_input(&mut self, slot: u32, data: &mut [u8]) {
        match TRANSPORTS[usize::from(self.conns.slot(slot).transport)] {
            Transport::Ws => self.ws_input(slot, data),
            Transport::Sse => self.sse_input(slot, data),
            Transport::Poll => self.poll_input(slot, data),
        }
    }

    /// WebSocket frames (a server's are never masked), parsed in place. Reader state is
    /// boxed only if the read ends inside a frame or message.
    fn ws_input(&mut self, slot: u32, data: &mut [u8]) {
        let generation = self.conns.slot(slot).generation;
        let (mut reader, mut msg) = match self.conns.slot_mut(slot).rx.take().map(|b| *b) {
            Some(Rx::Ws { reader, msg }) => (reader, msg),
            _ => (
                Reader::new(Role::Client, self.setup.max_message_bytes),
                Vec::new(),
            ),
        };
        let mut pos = 0;
        while pos < data.len() {
            let (used, event) = match reader.read(&mut data[pos..]) {
                Ok(step) => step,
                Err(e) => {
                    tracing::debug!(slot, "websocket protocol error: {e}");
                    self.send_close(slot, Some(e.close_code()));
                    self.fail(slot, Failure::Kind(ErrorKind::Protocol));
                    return;
                }
            };
            pos += used;
            match event {
                None if used == 0 => break,
                None => {}
                Some(Event::Data {
                    payload,
                    first,
                    fin,
                    ..
                }) => {
                    if first && fin && msg.is_empty() {
                        self.on_message(slot, payload);
                    } else {
                        msg.extend_from_slice(payload);
                        if fin {
                            self.on_message(slot, &msg);
                            msg.clear();
                        }
                    }
                }
                Some(Event::Ping(payload)) => {
                    let mut out = Vec::with_capacity(payload.len() + 6);
                    ws::encode_frame(&mut out, Opcode::Pong, true, payload, Some(self.rng.mask()));
                    self.send(slot, Bytes::from(out));
                }
                Some(Event::Pong(_)) => {}
                Some(Event::Close { code, .. }) => {
                    // Echo the code (RFC 6455 §5.5.1), then tear down.
                    self.send_close(slot, code);
                    self.conns.slot_mut(slot).set(flag::CLOSE_SEEN);
                    self.fail(slot, Failure::WsClose(code));
                    return;
                }
            }
        }
        if let Some(conn) = self.conns.get(slot, generation)
            && conn.state == State::Open
            && (!reader.is_idle() || !msg.is_empty())
        {
            conn.rx = Some(Box::new(Rx::Ws { reader, msg }));
        }
    }

    /// Long-poll answers (PROTOCOL.md "Long-poll"): each `200` carries
    /// `{"pos":..,"messages":[..]}`; every envelope in it is a delivery, and the next poll
    /// goes out at once with `since=<pos>`, so history covers the time between polls. The
    /// first request primes the connection: its `since` names no server instance, so it
    /// is answered at once (with resets, skipped) and its `pos` is where the connection
    /// starts, like a WebSocket's `101`.
    fn poll_input(&mut self, slot: u32, data: &mut [u8]) {
        let conn = self.conns.slot_mut(slot);
        let mut buf = match conn.rx.take().map(|b| *b) {
            Some(Rx::Poll(v)) => v,
            _ => Vec::new(),
        };
        buf.extend_from_slice(data);
        let mut done = 0;
        loop {
            let answer = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                match http1::parse_response(&buf[done..], &mut headers) {
                    Ok(None) => None,
                    Err(_) => Some(Err(Failure::Kind(ErrorKind::HandshakeInvalid))),
                    Ok(Some(resp)) if resp.status != 200 => Some(Err(Failure::Status(resp.status))),
                    Ok(Some(resp)) => match resp.body {
                        ResponseFraming::Length(n) => Some(Ok((resp.head_len, n as usize))),
                        _ => Some(Err(Failure::Kind(ErrorKind::Protocol))),
                    },
                }
            };
            let (head_len, body_len) = match answer {
                None => break,
                Some(Err(f)) => return self.fail(slot, f),
                Some(Ok(x)) => x,
            };
            let end = done + head_len + body_len;
            if buf.len() < end {
                break;
            }
            let Ok(parsed) = serde_json::from_slice::<PollAnswer<'_>>(&buf[done + head_len..end])
            else {
                return self.fail(slot, Failure::Kind(ErrorKind::Protocol));
            };
            if self.conns.slot(slot).state == State::Handshaking {
                self.open(slot, false);
            } else {
                for m in &parsed.messages {
                    self.on_message(slot, m.get().as_bytes());
                }
            }
            let topic = self.setup.topic_of(self.conns.slot(slot).id);
            let next = poll_request(&self.setup, topic, &parsed.pos);
            self.send(slot, next);
            done = end;
        }
        buf.drain(..done);
        if let Some(conn) = self.conns.get(slot, self.conns.slot(slot).generation)
            && matches!(conn.state, State::Handshaking | State::Open)
            && !buf.is_empty()
        {
            conn.rx = Some(Box::new(Rx::Poll(buf)));
        }
    }

    fn send_close(&mut self, slot: u32, code: Option<u16>) {
        let mut out = Vec::with_capacity(8);
        ws::close::encode_close_frame(&mut out, code, "", Some(self.rng.mask()));
        self.send(slot, Bytes::from(out));
    }

    /// An event stream: de-chunked if needed, parsed by the shared SSE parser.
    fn sse_input(&mut self, slot: u32, data: &mut [u8]) {
        let Some(mut rx) = self.conns.slot_mut(slot).rx.take() else {
            self.fail(slot, Failure::Kind(ErrorKind::Protocol));
            return;
        };
        let mut events = std::mem::take(&mut self.sse_events);
        let mut ended = false;
        let result = if let Rx::Sse { parser, chunked } = &mut *rx {
            match chunked {
                Some(dec) => {
                    self.scratch.clear();
                    match dec.decode(data, &mut self.scratch, usize::MAX) {
                        Ok(d) => {
                            ended = d.done;
                            parser.feed(&self.scratch, &mut events).map_err(|_| ())
                        }
                        Err(_) => Err(()),
                    }
                }
                None => parser.feed(data, &mut events).map_err(|_| ()),
            }
        } else {
            Err(())
        };
        self.conns.slot_mut(slot).rx = Some(rx);
        for event in events.drain(..) {
            self.on_message(slot, event.data.as_bytes());
        }
        self.sse_events = events;
        if result.is_err() {
            self.fail(slot, Failure::Kind(ErrorKind::Protocol));
        } else if ended {
            self.fail(slot, Failure::Kind(ErrorKind::Eof));
        }
    }

    /// One message (a whole WebSocket message or SSE event's data). Only messages that
    /// carry a published body count as deliveries: the server's own messages (its
    /// `hello`, op replies) are skipped, and its `reset`s (a gap the server declares) are
    /// counted apart.
    fn on_message(&mut self, slot: u32, payload: &[u8]) {
        let Some((seq, at_ns)) = body::decode(payload) else {
            if body::is_reset(payload) {
                self.res.resets += 1;
            } else if !body::is_server_op(payload) {
                self.res.unparsed += 1;
            }
            return;
        };
        let now_us = self.now_us();
        let conn = self.conns.slot_mut(slot);
        if !conn.has(flag::FIRST_SEEN) {
            conn.set(flag::FIRST_SEEN);
            self.res
                .first_message
                .record_us(u64::from(now_us.wrapping_sub(conn.since_us)));
        }
        if !conn.has(flag::MEASURED) {
            self.res.unmeasured += 1;
            return;
        }
        let now_ns = self.setup.clock.unix_ns();
        self.res.delivery[usize::from(conn.transport)]
            .record_us(now_ns.saturating_sub(at_ns) / 1000);
        self.res.seq.observe(&mut conn.last_seq, seq);
        self.res.timeline.add_at_ms(self.setup.clock.ms(), 1);
    }

    /// Stops reading (`slow`): the receive is cancelled and not re-armed, so the kernel's
    /// receive buffer fills and TCP pushes back on the server.
    fn pause(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.has(flag::PAUSED) {
            return;
        }
        conn.set(flag::PAUSED);
        if conn.has(flag::RECV_ARMED) {
            let token = conn.token(Kind::Recv, slot);
            self.ring.cancel_recv(token);
        }
        self.res.paused += 1;
    }

    // ---- sending ------------------------------------------------------------------

    /// Sends `buf` on `slot`: at once if nothing is in flight, else after what is.
    fn send(&mut self, slot: u32, buf: Bytes) {
        let conn = self.conns.slot_mut(slot);
        if !conn.has(flag::SENDING) {
            conn.set(flag::SENDING);
            conn.pending += 1;
            let token = conn.token(Kind::Send, slot);
            self.ring.send(token, buf);
            return;
        }
        let generation = conn.generation;
        let entry = self
            .overflow
            .entry(slot)
            .or_insert_with(|| (generation, Vec::new()));
        if entry.0 != generation {
            *entry = (generation, Vec::new());
        }
        entry.1.extend_from_slice(&buf);
    }

    fn on_send(&mut self, c: Completion) {
        let slot = c.token.slot;
        let generation = c.token.generation;
        let Some(conn) = self.conns.get(slot, generation) else {
            tracing::error!("send completion for a stale slot {slot}");
            return;
        };
        conn.pending -= 1;
        conn.clear(flag::SENDING);
        let alive = matches!(conn.state, State::Handshaking | State::Open);
        let buf = c.sent.unwrap_or_default();
        if c.result < 0 {
            if c.result != -libc::ECANCELED {
                self.fail(slot, Failure::Kind(io_error(-c.result, true)));
            }
        } else if alive && (c.result as usize) < buf.len() {
            self.send(slot, buf.slice(c.result as usize..));
        } else if alive
            && let Some((g, next)) = self.overflow.remove(&slot)
            && g == generation
        {
            self.send(slot, Bytes::from(next));
        }
        self.after_op(slot, generation, false);
    }

    // ---- failing and closing ------------------------------------------------------

    fn fail(&mut self, slot: u32, f: Failure) {
        let now_ms = self.setup.clock.ms();
        let conn = self.conns.slot_mut(slot);
        let state = conn.state;
        if !matches!(state, State::Connecting | State::Handshaking | State::Open) {
            return;
        }
        match f {
            Failure::Kind(k) => self.res.errors.add(k),
            Failure::Status(s) => self.res.errors.add_named(format!("handshake_status_{s}")),
            Failure::WsClose(Some(code)) => self.res.errors.add_named(format!("ws_close_{code}")),
            Failure::WsClose(None) => self.res.errors.add_named("ws_close".to_string()),
        }
        if state == State::Open {
            self.open -= 1;
            self.res.dropped += 1;
        } else {
            self.in_progress -= 1;
        }
        let (after, delay) = after_failure(
            state,
            f.retryable(),
            conn.attempt,
            &self.setup.backoff,
            &mut self.rng,
        );
        if let Some(d) = delay {
            self.backoffs.push(Reverse((
                now_ms + d.as_millis() as u64,
                slot,
                conn.generation,
            )));
        }
        self.begin_close(slot, after);
    }

    /// Closes a connection on purpose (churn).
    fn churn(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        if conn.state != State::Open {
            return;
        }
        self.open -= 1;
        self.begin_close(slot, After::Churn);
    }

    fn begin_close(&mut self, slot: u32, after: After) {
        let conn = self.conns.slot_mut(slot);
        conn.go(State::Closing);
        conn.after = after as u8;
        if conn.pending == 0 {
            self.finish_close(slot);
            return;
        }
        // Everything still pending completes (-ECANCELED), then the slot is closed.
        conn.pending += 1;
        let token = conn.token(Kind::Cancel, slot);
        self.ring.cancel_all(token);
    }

    /// The kernel holds nothing that names the slot: close it and move on.
    fn finish_close(&mut self, slot: u32) {
        let conn = self.conns.slot_mut(slot);
        debug_assert_eq!(conn.pending, 0);
        let token = conn.token(Kind::Close, slot);
        conn.rx = None;
        conn.flags &= flag::SLOW;
        let after = conn.after;
        self.ring.close(token);
        self.overflow.remove(&slot);
        match after {
            a if a == After::Retry as u8 => conn.go(State::Backoff),
            a if a == After::GiveUp as u8 => {
                conn.go(State::Failed);
                self.res.failed += 1;
            }
            a if a == After::Churn as u8 => {
                conn.go(State::Idle);
                self.res.churned += 1;
                let id = self.next_churn_id;
                self.next_churn_id = self.next_churn_id.wrapping_add(self.setup.threads);
                self.assign(slot, id);
                self.ready.push_back(slot);
            }
            _ => conn.go(State::Done),
        }
    }

    // ---- the tick -----------------------------------------------------------------

    fn on_tick(&mut self) {
        self.ring.tick(TICK);
        let now = self.setup.clock.ms();
        let dt = now.saturating_sub(self.last_tick_ms) as f64 / 1000.0;
        self.last_tick_ms = now;
        match self.control.command() {
            Command::Stop => {
                self.stop = true;
                self.publish_counters();
                return;
            }
            Command::Measure if !self.measuring => self.begin_measuring(),
            _ => {}
        }
        while let Some(&(due, slot, generation)) = self.deadlines.front() {
            if due > now {
                break;
            }
            self.deadlines.pop_front();
            if self
                .conns
                .get(slot, generation)
                .is_some_and(|c| c.state == State::Handshaking)
            {
                self.fail(slot, Failure::Kind(ErrorKind::HandshakeTimeout));
            }
        }
        while let Some(&Reverse((due, slot, generation))) = self.backoffs.peek() {
            if due > now {
                break;
            }
            self.backoffs.pop();
            match self.conns.get(slot, generation).map(|c| c.state) {
                Some(State::Backoff) => self.ready.push_back(slot),
                // Still letting go of the old socket: look again shortly.
                Some(State::Closing) => self.backoffs.push(Reverse((now + 10, slot, generation))),
                _ => {}
            }
        }
        let threads = f64::from(self.setup.threads);
        if self.measuring && self.setup.churn_rate > 0.0 {
            self.churn_budget += self.setup.churn_rate / threads * dt;
            let mut tries = 0;
            while self.churn_budget >= 1.0 && self.open > 0 && tries < 64 {
                tries += 1;
                let slot = self.rng.below(u64::from(self.conns.capacity())) as u32;
                if self.conns.slot(slot).state == State::Open {
                    self.churn(slot);
                    self.churn_budget -= 1.0;
                }
            }
            self.churn_budget = self.churn_budget.min(1.0 + self.setup.churn_rate / threads);
        }
        let rate = self.setup.connect_rate / threads;
        self.budget = (self.budget + rate * dt).min(rate * 2.0 * TICK.as_secs_f64() + 1.0);
        while self.budget >= 1.0 && self.in_progress < u64::from(self.setup.max_in_progress) {
            let slot = if let Some(slot) = self.ready.pop_front() {
                slot
            } else if self.next_new < self.conns.capacity() {
                let slot = self.next_new;
                self.next_new += 1;
                self.init_slot(slot);
                slot
            } else {
                break;
            };
            self.start_attempt(slot);
            self.budget -= 1.0;
        }
        self.publish_counters();
    }

    /// Measuring begins: every open client counts from now on (slow ones stop reading).
    fn begin_measuring(&mut self) {
        self.measuring = true;
        let mut slow = Vec::new();
        let mut measured = 0;
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            if conn.state != State::Open {
                continue;
            }
            if conn.has(flag::SLOW) {
                slow.push(slot as u32);
            } else {
                conn.set(flag::MEASURED);
                conn.last_seq = 0;
                let topic = conn.id as usize % self.res.measured_per_topic.len().max(1);
                if let Some(n) = self.res.measured_per_topic.get_mut(topic) {
                    *n += 1;
                }
                measured += 1;
            }
        }
        for slot in slow {
            self.pause(slot);
        }
        {
            let mut all = self
                .control
                .measured_per_topic
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (a, b) in all.iter_mut().zip(&self.res.measured_per_topic) {
                *a += b;
            }
        }
        let c = &self.control.threads[self.index as usize];
        c.measured.store(measured, Relaxed);
        c.measuring.store(true, Relaxed);
    }

    fn publish_counters(&self) {
        let c = &self.control.threads[self.index as usize];
        c.open.store(self.open, Relaxed);
        c.in_progress.store(self.in_progress, Relaxed);
        c.failed.store(self.res.failed, Relaxed);
        c.attempts.store(self.res.attempts, Relaxed);
        c.errors.store(self.res.errors.total(), Relaxed);
        c.delivered.store(self.res.seq.delivered, Relaxed);
        c.churned.store(self.res.churned, Relaxed);
        c.dropped.store(self.res.dropped, Relaxed);
        c.launched_all
            .store(self.next_new >= self.conns.capacity(), Relaxed);
    }

    fn finish(mut self) -> ThreadResult {
        self.res.open_at_end = self.open;
        self.res
    }
}

/// Checks a handshake answer; `Ok(chunked)` when it opens the subscription (`chunked`:
/// the event stream's body is chunked).
fn check_response(
    resp: &http1::Response<'_, '_>,
    transport: Transport,
    secret: u64,
    id: u32,
    attempt: u8,
) -> Result<bool, Failure> {
    match transport {
        Transport::Ws => {
            let key = ws::client_key(&ws_nonce(secret, id, attempt));
            let key = std::str::from_utf8(&key).expect("base64 is ASCII");
            match ws::check_server_response(resp.status, resp.headers, key) {
                Ok(()) => Ok(false),
                Err(ws::HandshakeError::Status(s)) => Err(Failure::Status(s)),
                Err(_) => Err(Failure::Kind(ErrorKind::HandshakeInvalid)),
            }
        }
        _ => {
            if resp.status != 200 {
                return Err(Failure::Status(resp.status));
            }
            let is_stream = resp.header("content-type").is_some_and(|v| {
                v.len() >= sse::CONTENT_TYPE.len()
                    && v[..sse::CONTENT_TYPE.len()]
                        .eq_ignore_ascii_case(sse::CONTENT_TYPE.as_bytes())
            });
            match resp.body {
                _ if !is_stream => Err(Failure::Kind(ErrorKind::HandshakeInvalid)),
                ResponseFraming::Chunked => Ok(true),
                ResponseFraming::UntilClose => Ok(false),
                ResponseFraming::None | ResponseFraming::Length(_) => {
                    Err(Failure::Kind(ErrorKind::HandshakeInvalid))
                }
            }
        }
    }
}

/// The `since` of a long-poll connection's first request: epoch 0 is no server's (an
/// epoch is never 0), so the server answers at once with resets and its position.
const PRIME_SINCE: &str = "00000000-0";

/// A long-poll answer: the position to poll with next and the envelopes (and resets),
/// kept as raw JSON.
#[derive(serde::Deserialize)]
struct PollAnswer<'a> {
    #[serde(borrow)]
    pos: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<&'a serde_json::value::RawValue>,
}

/// The next long-poll request of a subscriber of `topic`.
fn poll_request(setup: &Setup, topic: usize, since: &str) -> Bytes {
    let ep = setup.endpoints[2].as_ref().expect("poll endpoint");
    let target = format!("{}&since={since}", setup.poll_targets[topic]);
    let mut out = Vec::with_capacity(96 + target.len());
    http1::write_request(
        &mut out,
        "GET",
        &target,
        &ep.host,
        &[("Accept", "application/json")],
        b"",
    );
    Bytes::from(out)
}

/// The SSE request for a topic: the same bytes for every subscriber of it.
pub fn sse_request(host: &str, target: &str) -> Bytes {
    let mut out = Vec::with_capacity(128 + target.len());
    http1::write_request(
        &mut out,
        "GET",
        target,
        host,
        &[("Accept", sse::CONTENT_TYPE), ("Cache-Control", "no-cache")],
        b"",
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'h, 'b>(
        buf: &'b [u8],
        headers: &'h mut [httparse::Header<'b>],
    ) -> http1::Response<'h, 'b> {
        http1::parse_response(buf, headers).unwrap().unwrap()
    }

    #[test]
    fn websocket_answers_are_checked_against_our_key() {
        let key = ws::client_key(&ws_nonce(9, 4, 1));
        let accept = ws::accept_key(&key);
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept).unwrap()
        );
        let mut h = [httparse::EMPTY_HEADER; 16];
        let r = parse(ok.as_bytes(), &mut h);
        assert_eq!(check_response(&r, Transport::Ws, 9, 4, 1), Ok(false));
        // Another attempt has another key.
        assert_eq!(
            check_response(&r, Transport::Ws, 9, 4, 2),
            Err(Failure::Kind(ErrorKind::HandshakeInvalid))
        );
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        let mut h = [httparse::EMPTY_HEADER; 16];
        let r = parse(busy, &mut h);
        assert_eq!(
            check_response(&r, Transport::Ws, 9, 4, 1),
            Err(Failure::Status(503))
        );
        assert!(Failure::Status(503).retryable() && !Failure::Status(400).retryable());
    }

    #[test]
    fn event_stream_answers() {
        let mut h = [httparse::EMPTY_HEADER; 16];
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
        assert_eq!(
            check_response(&parse(plain, &mut h), Transport::Sse, 0, 0, 1),
            Ok(false)
        );
        let mut h = [httparse::EMPTY_HEADER; 16];
        let chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            check_response(&parse(chunked, &mut h), Transport::Sse, 0, 0, 1),
            Ok(true)
        );
        let mut h = [httparse::EMPTY_HEADER; 16];
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n";
        assert_eq!(
            check_response(&parse(html, &mut h), Transport::Sse, 0, 0, 1),
            Err(Failure::Kind(ErrorKind::HandshakeInvalid))
        );
        let mut h = [httparse::EMPTY_HEADER; 16];
        let sized =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(
            check_response(&parse(sized, &mut h), Transport::Sse, 0, 0, 1),
            Err(Failure::Kind(ErrorKind::HandshakeInvalid))
        );
        let mut h = [httparse::EMPTY_HEADER; 16];
        let missing = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            check_response(&parse(missing, &mut h), Transport::Sse, 0, 0, 1),
            Err(Failure::Status(400))
        );
    }

    #[test]
    fn poll_answers_give_the_next_position_and_raw_envelopes() {
        let mut body = Vec::new();
        crate::body::encode(&mut body, 4, 1_700_000_000_000_000_000, 80);
        let answer = [
            br#"{"pos":"1f0c93aa-57","messages":[{"topic":"a","reset":true,"seq":3},{"topic":"a","seq":4,"pos":"1f0c93aa-57","data":"#.as_slice(),
            &body,
            b"}]}",
        ]
        .concat();
        let parsed: PollAnswer<'_> = serde_json::from_slice(&answer).unwrap();
        assert_eq!(parsed.pos, "1f0c93aa-57");
        assert_eq!(parsed.messages.len(), 2);
        assert!(crate::body::is_reset(parsed.messages[0].get().as_bytes()));
        assert_eq!(
            crate::body::decode(parsed.messages[1].get().as_bytes()),
            Some((4, 1_700_000_000_000_000_000))
        );
        assert!(serde_json::from_slice::<PollAnswer<'_>>(b"{\"messages\":[]}").is_err());
    }

    #[test]
    fn sse_requests_ask_for_an_event_stream() {
        let r = sse_request("127.0.0.1:8080", "/sse?topic=a.b");
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("GET /sse?topic=a.b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.contains("Accept: text/event-stream\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
