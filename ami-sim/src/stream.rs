//! The fan-out: every session's bounded outbound queue ([`Outbox`]), the registry of
//! logged-in sessions ([`Hub`]) that copies each event into the queue of every session
//! whose classes intersect the event's, and the driver ([`Sim`]) that advances the PBX
//! by the simulation clock, stamps each event with its due time (for `--record`) and
//! hands the batch to the hub. Single-threaded (monoio, one thread): shared state is in
//! `Cell`/`RefCell`, and no borrow is held across an `.await`.
//!
//! A queue is bounded in bytes: an event that would take a session's queue past
//! `--max-queue` drops that session (it is not reading), never the event for the others
//! and never by waiting. Queues are byte buffers that the session's writer swaps out
//! whole, so everything queued since its last write goes out in one `write`.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::io::Canceller;
use slab::Slab;
use switchboard_proto::ami::Classes;

use crate::pbx::{Event, Pbx, SimTime};
use crate::record::Recorder;

/// Why a session's output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Writing what is queued.
    Open,
    /// Write what is queued, then close (Logoff, failed login).
    Closing,
    /// Close now, discarding what is queued.
    Dropped(DropReason),
}

/// Why a session was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// More than `--max-queue` bytes waiting: the client does not read.
    QueueFull,
    /// A write made no progress for `--write-timeout`.
    WriteTimeout,
    /// The socket failed or the client closed it.
    Closed,
    /// Not logged in within `--auth-timeout`.
    AuthTimeout,
    /// `--fault disconnect-every`.
    Fault,
    /// The server is stopping (`--duration` elapsed).
    Shutdown,
}

/// One session's outbound queue, shared by its reader (responses), the hub (events),
/// its replay and fault tasks (their bytes) and its writer (the only consumer).
pub struct Outbox {
    buf: RefCell<Vec<u8>>,
    max_bytes: usize,
    state: Cell<OutState>,
    /// Classes of events this session receives (none before login).
    classes: Cell<Classes>,
    /// The writer, waiting for bytes or for the state to change.
    writer: Cell<Option<Waker>>,
    /// A producer waiting for room ([`Outbox::room`]).
    producer: Cell<Option<Waker>>,
    /// When the session logged in (faults count from there).
    login_at: Cell<Option<Instant>>,
    /// Cancels the reader's pending read when the session is dropped.
    reader_cancel: RefCell<Option<Canceller>>,
    /// Bytes handed to the socket so far.
    pub written: Cell<u64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("state", &self.state.get())
            .field("classes", &self.classes.get())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox {
            buf: RefCell::new(Vec::with_capacity(16 * 1024)),
            max_bytes: max_bytes.max(1),
            state: Cell::new(OutState::Open),
            classes: Cell::new(Classes::NONE),
            writer: Cell::new(None),
            producer: Cell::new(None),
            login_at: Cell::new(None),
            reader_cancel: RefCell::new(None),
            written: Cell::new(0),
        }
    }

    pub fn state(&self) -> OutState {
        self.state.get()
    }

    pub fn is_open(&self) -> bool {
        self.state.get() == OutState::Open
    }

    pub fn classes(&self) -> Classes {
        self.classes.get()
    }

    pub fn set_classes(&self, classes: Classes) {
        self.classes.set(classes);
    }

    pub fn login_at(&self) -> Option<Instant> {
        self.login_at.get()
    }

    pub fn set_login_at(&self, at: Instant) {
        self.login_at.set(Some(at));
    }

    pub fn set_reader_cancel(&self, c: Canceller) {
        *self.reader_cancel.borrow_mut() = Some(c);
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.buf.borrow().len()
    }

    /// Queues `bytes` (whole messages) without waking the writer; false (and the
    /// session dropped) if that would exceed the limit; false if it is not open.
    pub fn push_quiet(&self, bytes: &[u8]) -> bool {
        if !self.is_open() {
            return false;
        }
        let mut buf = self.buf.borrow_mut();
        if buf.len() + bytes.len() > self.max_bytes {
            drop(buf);
            self.drop_now(DropReason::QueueFull);
            return false;
        }
        buf.extend_from_slice(bytes);
        true
    }

    /// [`push_quiet`](Self::push_quiet), then wakes the writer.
    pub fn push(&self, bytes: &[u8]) -> bool {
        let ok = self.push_quiet(bytes);
        self.wake_writer();
        ok
    }

    pub fn wake_writer(&self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Write what is queued, then close.
    pub fn close_after_flush(&self) {
        if self.is_open() {
            self.state.set(OutState::Closing);
        }
        self.wake_writer();
    }

    /// Close now: what is queued is discarded, the reader's pending read is cancelled.
    pub fn drop_now(&self, reason: DropReason) {
        if matches!(self.state.get(), OutState::Dropped(_)) {
            return;
        }
        self.state.set(OutState::Dropped(reason));
        self.buf.borrow_mut().clear();
        if let Some(c) = self.reader_cancel.borrow_mut().take() {
            let _ = c.cancel();
        }
        self.wake_writer();
        if let Some(w) = self.producer.take() {
            w.wake();
        }
    }

    /// Writer: waits until there is something to write or the state is not `Open`.
    pub fn ready(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if !self.buf.borrow().is_empty() || !self.is_open() {
                Poll::Ready(())
            } else {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }

    /// Writer: resolves once the session is dropped (to abandon a blocked write).
    pub fn dropped(&self) -> impl Future<Output = DropReason> + '_ {
        poll_fn(move |cx| match self.state.get() {
            OutState::Dropped(r) => Poll::Ready(r),
            _ => {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }

    /// Writer: takes up to `max` queued bytes into `into` (which must be empty); with
    /// `max >= queued` the buffers are swapped (no copy).
    pub fn take(&self, into: &mut Vec<u8>, max: usize) {
        debug_assert!(into.is_empty());
        let mut buf = self.buf.borrow_mut();
        if buf.len() <= max {
            std::mem::swap(&mut *buf, into);
        } else {
            into.extend_from_slice(&buf[..max]);
            buf.drain(..max);
        }
        drop(buf);
        if let Some(w) = self.producer.take() {
            w.wake();
        }
    }

    /// Producer: waits until fewer than `below` bytes (and less than half the limit) are
    /// queued, waking the writer if it must wait; false once the session is no longer
    /// open. For producers that must not outrun a reading client (a replay).
    pub fn room(&self, below: usize) -> impl Future<Output = bool> + '_ {
        let limit = below.min(self.max_bytes / 2).max(1);
        poll_fn(move |cx| {
            if !self.is_open() {
                return Poll::Ready(false);
            }
            if self.buf.borrow().len() < limit {
                Poll::Ready(true)
            } else {
                self.producer.set(Some(cx.waker().clone()));
                self.wake_writer();
                Poll::Pending
            }
        })
    }
}

/// A wake-up flag for one waiting task.
#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// Which of two futures finished first.
#[derive(Debug)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Runs two futures until one completes (`a` is polled first); the other is dropped.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// The logged-in sessions that receive events.
#[derive(Debug, Default)]
pub struct Hub {
    sessions: RefCell<Slab<Rc<Outbox>>>,
}

impl Hub {
    pub fn register(&self, outbox: Rc<Outbox>) -> usize {
        self.sessions.borrow_mut().insert(outbox)
    }

    pub fn unregister(&self, key: usize) {
        self.sessions.borrow_mut().try_remove(key);
    }

    pub fn len(&self) -> usize {
        self.sessions.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.borrow().is_empty()
    }

    /// Copies each event into the queue of every open session whose classes intersect
    /// the event's, then wakes the writers that got something.
    pub fn fan_out(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let sessions = self.sessions.borrow();
        for (_, s) in sessions.iter() {
            let classes = s.classes();
            if classes.is_empty() || !s.is_open() {
                continue;
            }
            let mut any = false;
            for e in events {
                if classes.intersects(e.class) {
                    any = true;
                    if !s.push_quiet(&e.bytes) {
                        break;
                    }
                }
            }
            if any {
                s.wake_writer();
            }
        }
    }

    /// One message for every open session reading `class`.
    pub fn broadcast(&self, class: Classes, bytes: &[u8]) {
        let sessions = self.sessions.borrow();
        for (_, s) in sessions.iter() {
            if s.classes().intersects(class) {
                s.push(bytes);
            }
        }
    }

    /// Drops every session (shutdown).
    pub fn drop_all(&self, reason: DropReason) {
        let all: Vec<Rc<Outbox>> = self
            .sessions
            .borrow()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        for s in all {
            s.drop_now(reason);
        }
    }
}

/// The simulation clock: `start` (µs since the epoch) plus the wall time since `t0`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub t0: Instant,
    pub start: SimTime,
}

impl Clock {
    pub fn new(start: SimTime) -> Clock {
        Clock {
            t0: Instant::now(),
            start,
        }
    }

    pub fn now(&self) -> SimTime {
        self.start + self.t0.elapsed().as_micros() as SimTime
    }

    /// The wall-clock instant of a simulated time.
    pub fn instant(&self, t: SimTime) -> Instant {
        self.t0 + Duration::from_micros(t.saturating_sub(self.start))
    }
}

/// Most events handed out by one [`Sim::pump`] before the driver yields to the sessions
/// when it runs behind (about 1 MB, a couple of ms of work: well below `--max-queue`).
const PUMP_MAX_EVENTS: usize = 2_000;

/// The running PBX: the model, its clock, the hub it feeds and the recorder.
pub struct Sim {
    pub pbx: RefCell<Pbx>,
    pub clock: Clock,
    pub hub: Rc<Hub>,
    pub recorder: RefCell<Option<Recorder>>,
    /// `--duration`: nothing is simulated past this time.
    pub end: Option<SimTime>,
    /// Wakes the driver when an action may have scheduled something earlier.
    pub wake: Notify,
    /// Events fanned out so far.
    pub events: Cell<u64>,
    scratch: RefCell<Vec<Event>>,
}

impl Sim {
    pub fn new(
        pbx: Pbx,
        clock: Clock,
        hub: Rc<Hub>,
        recorder: Option<Recorder>,
        end: Option<SimTime>,
    ) -> Sim {
        Sim {
            pbx: RefCell::new(pbx),
            clock,
            hub,
            recorder: RefCell::new(recorder),
            end,
            wake: Notify::default(),
            events: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
        }
    }

    /// The current simulated time (never past the end).
    pub fn now(&self) -> SimTime {
        let now = self.clock.now();
        self.end.map_or(now, |e| now.min(e))
    }

    /// Hands out every event due at or before `now`, each batch stamped with its due
    /// time (so a recording is the same whenever this runs), and fans them out. Returns
    /// false if it stopped early ([`PUMP_MAX_EVENTS`]) with more due.
    pub fn pump(&self, now: SimTime) -> bool {
        let mut events = self.scratch.borrow_mut();
        events.clear();
        let mut done = true;
        {
            let mut pbx = self.pbx.borrow_mut();
            let mut rec = self.recorder.borrow_mut();
            while let Some(due) = pbx.next_due() {
                if due > now {
                    break;
                }
                if events.len() >= PUMP_MAX_EVENTS {
                    done = false;
                    break;
                }
                let first = events.len();
                pbx.advance(due, &mut events);
                if events.len() == first {
                    // Nothing came out: the model moved on internally; it must not be
                    // asked for the same time forever.
                    if pbx.next_due() == Some(due) {
                        break;
                    }
                    continue;
                }
                if let Some(r) = rec.as_mut() {
                    r.frame(due.saturating_sub(self.clock.start), &events[first..]);
                }
            }
            if let Some(r) = rec.as_mut() {
                r.flush();
            }
        }
        self.events.set(self.events.get() + events.len() as u64);
        self.hub.fan_out(&events);
        events.clear();
        done
    }

    /// The driver (a task of its own): pumps at every due time (to the nearest timer
    /// tick), or at once when woken; returns at `end`.
    pub async fn drive(self: Rc<Self>) {
        loop {
            let now = self.now();
            let done = self.pump(now);
            if done && self.end.is_some_and(|e| now >= e) {
                if let Some(r) = self.recorder.borrow_mut().as_mut() {
                    r.flush();
                }
                return;
            }
            if !done {
                // Behind: let the sessions' writes complete before the next slice (a
                // timer sleep goes through the runtime's park, which reaps completions;
                // a plain yield would not).
                monoio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let next = self.pbx.borrow().next_due();
            let mut until = next.unwrap_or(now + 1_000_000).min(now + 1_000_000);
            if let Some(e) = self.end {
                until = until.min(e);
            }
            let deadline = monoio::time::Instant::from_std(self.clock.instant(until));
            let _ = race(monoio::time::sleep_until(deadline), self.wake.notified()).await;
        }
    }
}
