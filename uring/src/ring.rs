//! One io_uring instance and the operations the engine submits to it.
//!
//! The ring owns every buffer the kernel may still read: a send's `Bytes` moves into the
//! ring's in-flight table when the SQE is pushed and comes back in the [`Completion`], so
//! no caller can drop or reuse memory the kernel is using. Entries that do not fit the
//! submission queue wait in a FIFO (never on the stack) and are pushed, in order, before
//! the next enter.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use super::connect::{InflightChain, chain_completed};
use super::token::{Kind, Token};

/// Sizes of one ring.
#[derive(Clone, Copy, Debug)]
pub struct RingParams {
    /// Submission queue entries (a power of two; the kernel rounds up).
    pub sq_entries: u32,
    /// Completion queue entries: large, so that a fan-out burst never overflows it.
    pub cq_entries: u32,
    /// Slots of the fixed-file table (0: no table). At most `RLIMIT_NOFILE`.
    pub fixed_files: u32,
}

/// How completions are run, from best to plainest; see [`Ring::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRun {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completion work runs only when this thread enters
    /// the kernel to wait, never as an interrupt of its user-space work.
    Deferred,
    /// `SINGLE_ISSUER | COOP_TASKRUN`.
    Cooperative,
    /// No flags: what any kernel with io_uring accepts.
    Plain,
}

impl fmt::Display for TaskRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskRun::Deferred => "SINGLE_ISSUER|DEFER_TASKRUN",
            TaskRun::Cooperative => "SINGLE_ISSUER|COOP_TASKRUN",
            TaskRun::Plain => "no setup flags",
        })
    }
}

/// One completion, decoded. `sent` gives back the buffer of a send; `peer` is the
/// address of a connection accepted by [`Ring::accept_with_peer`].
#[derive(Debug)]
pub struct Completion {
    pub token: Token,
    pub result: i32,
    pub flags: u32,
    pub sent: Option<Bytes>,
    pub peer: Option<IpAddr>,
}

impl Completion {
    /// The provided buffer a recv completion filled, if any.
    pub fn buffer_id(&self) -> Option<u16> {
        io_uring::cqueue::buffer_select(self.flags)
    }

    /// Whether a multishot operation stays armed after this completion.
    pub fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }
}

/// A send the kernel has not completed yet: the bytes it reads and who asked.
struct InflightSend {
    buf: Bytes,
    token: Token,
}

/// Where the kernel writes the address of the peer a single-shot accept accepts. Boxed
/// in the ring's table, so it stays put while the accept is in flight.
struct InflightAccept {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl InflightAccept {
    /// The peer's IP address, once the accept has completed.
    fn peer(&self) -> Option<IpAddr> {
        match i32::from(self.addr.ss_family) {
            libc::AF_INET if self.len as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a `sockaddr_in` (family AF_INET, length checked)
                // at the start of the storage, which is larger and at least as aligned.
                let sin = unsafe { &*(&raw const self.addr).cast::<libc::sockaddr_in>() };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 if self.len as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for a `sockaddr_in6` (family AF_INET6).
                let sin6 = unsafe { &*(&raw const self.addr).cast::<libc::sockaddr_in6>() };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// An entry waiting for room in the submission queue. `chain_rest` counts the entries
/// after it that belong to the same linked chain: a chain is only ever moved into the
/// queue whole, so that one `enter` never submits half of it (the kernel would run the
/// half as a complete chain).
struct Waiting {
    entry: squeue::Entry,
    chain_rest: u8,
}

pub struct Ring {
    uring: IoUring,
    task_run: TaskRun,
    /// Entries that did not fit the submission queue, in submission order.
    backlog: VecDeque<Waiting>,
    /// Buffers of sends in flight, keyed by the slot number carried in their `user_data`.
    sends: Slab<InflightSend>,
    /// Address buffers of single-shot accepts in flight, keyed like `sends`.
    accepts: Slab<Box<InflightAccept>>,
    /// Connect chains in flight (their addresses and timeout), keyed like `sends`.
    pub(super) chains: Slab<InflightChain>,
    /// The tick interval; boxed so its address is stable while a timeout SQE points at it.
    tick: Box<types::Timespec>,
}

/// Linux's `IORING_ENTER_GETEVENTS`: also run pending completion work and reap.
const ENTER_GETEVENTS: u32 = 1;

impl Ring {
    /// Creates a ring with the best task-run mode this kernel accepts, falling back one
    /// step at a time on `EINVAL`, and registers a sparse fixed-file table.
    pub fn new(params: RingParams) -> io::Result<Ring> {
        let mut last_err = None;
        for task_run in [TaskRun::Deferred, TaskRun::Cooperative, TaskRun::Plain] {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(params.cq_entries).setup_submit_all();
            match task_run {
                TaskRun::Deferred => {
                    builder.setup_single_issuer().setup_defer_taskrun();
                }
                TaskRun::Cooperative => {
                    builder.setup_single_issuer().setup_coop_taskrun();
                }
                TaskRun::Plain => {}
            }
            match builder.build(params.sq_entries) {
                Ok(uring) => {
                    if task_run != TaskRun::Deferred {
                        tracing::warn!(
                            "io_uring: this kernel refused DEFER_TASKRUN ({}); using {task_run}",
                            last_err
                                .as_ref()
                                .map_or(String::new(), |e: &io::Error| e.to_string())
                        );
                    }
                    if params.fixed_files > 0 {
                        uring
                            .submitter()
                            .register_files_sparse(params.fixed_files)
                            .map_err(|e| fixed_files_error(e, params.fixed_files))?;
                    }
                    return Ok(Ring {
                        uring,
                        task_run,
                        backlog: VecDeque::new(),
                        sends: Slab::new(),
                        accepts: Slab::new(),
                        chains: Slab::new(),
                        tick: Box::new(types::Timespec::new()),
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
                Err(e) => return Err(setup_error(e)),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
    }

    pub fn task_run(&self) -> TaskRun {
        self.task_run
    }

    /// The ring's descriptor, the address other rings post wake-ups to.
    pub fn fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }

    /// Opcodes this kernel supports, for [`super::probe`].
    pub(super) fn probe(&self) -> io::Result<io_uring::Probe> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        Ok(probe)
    }

    pub(super) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }

    /// Sends in flight (each holds one reference to its buffer).
    pub fn sends_in_flight(&self) -> usize {
        self.sends.len()
    }

    /// Multishot accept on `listener`: each new connection goes straight into a free slot of
    /// the fixed-file table (no process descriptor); the completion's result is that slot.
    pub fn accept_multishot(&mut self, listener: RawFd) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener))
            .allocate_file_index(true)
            .build()
            .user_data(Token::ring(Kind::Accept).encode());
        self.push(entry);
    }

    /// A single-shot accept on `listener` into a free slot of the fixed-file table that
    /// also reports the peer's address: it completes as `Kind::AcceptPeer` with the slot
    /// as result and [`Completion::peer`] set. (A multishot accept cannot report
    /// addresses: all its completions would share one buffer.)
    pub fn accept_with_peer(&mut self, listener: RawFd) {
        let mut inflight = Box::new(InflightAccept {
            // SAFETY: `sockaddr_storage` is plain old data: all zeroes is a valid value.
            addr: unsafe { std::mem::zeroed() },
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        });
        let addr = (&raw mut inflight.addr).cast::<libc::sockaddr>();
        let len = &raw mut inflight.len;
        let key = self.accepts.insert(inflight);
        let entry = opcode::Accept::new(types::Fd(listener), addr, len)
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build()
            .user_data(Token::new(Kind::AcceptPeer, 0, key as u32).encode());
        self.push(entry);
    }

    /// Multishot recv on a fixed file, each completion filling one buffer of `group`.
    pub fn recv_multishot(&mut self, token: Token, group: u16) {
        let entry = opcode::RecvMulti::new(types::Fixed(token.slot), group)
            .build()
            .user_data(token.encode());
        self.push(entry);
    }

    /// Sends `buf` on the fixed file `token.slot`. The ring keeps `buf` until the
    /// completion, which hands it back (a partial send is continued by sending a slice of
    /// it). `MSG_WAITALL` makes the kernel finish a partial send itself; `MSG_NOSIGNAL`
    /// turns a dead peer into `EPIPE` rather than `SIGPIPE`.
    pub fn send(&mut self, token: Token, buf: Bytes) {
        debug_assert!(!buf.is_empty(), "empty send");
        let (ptr, len) = (buf.as_ptr(), buf.len().min(u32::MAX as usize) as u32);
        let key = self.sends.insert(InflightSend { buf, token });
        let entry = opcode::Send::new(types::Fixed(token.slot), ptr, len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(Token::new(Kind::Send, 0, key as u32).encode());
        self.push(entry);
    }

    /// `shutdown(SHUT_WR)`: our FIN goes out after everything queued; reads continue.
    /// Always completes: the kernel runs it on a worker thread, which looks the fixed file
    /// up only then, so the slot must not be closed (and reused) before this completes.
    pub fn shutdown_write(&mut self, token: Token) {
        let entry = opcode::Shutdown::new(types::Fixed(token.slot), libc::SHUT_WR)
            .build()
            .user_data(
                Token {
                    kind: Kind::Shutdown,
                    ..token
                }
                .encode(),
            );
        self.push(entry);
    }

    /// Cancels every operation pending on the fixed file `token.slot`; each cancelled one
    /// completes with `-ECANCELED`, and so does this (with the count, or `-ENOENT`). The
    /// slot must not be closed before this completes either.
    pub fn cancel_all(&mut self, token: Token) {
        let entry =
            opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fixed(token.slot)).all())
                .build()
                .user_data(
                    Token {
                        kind: Kind::Cancel,
                        ..token
                    }
                    .encode(),
                );
        self.push(entry);
    }

    /// Cancels the recv submitted with `recv` (matched by its `user_data`, so no file is
    /// looked up and a reused slot cannot be hit); the recv then completes with
    /// `-ECANCELED`. Only a failure of the cancel itself (e.g. `-ENOENT`) completes here.
    pub fn cancel_recv(&mut self, recv: Token) {
        let entry = opcode::AsyncCancel::new(recv.encode())
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(
                Token {
                    kind: Kind::CancelRecv,
                    ..recv
                }
                .encode(),
            );
        self.push(entry);
    }

    /// Cancels every accept on `listener` (the multishot one, or the single-shot ones):
    /// each then completes with `-ECANCELED` (a multishot one without
    /// `IORING_CQE_F_MORE`). Only a failure of the cancel itself completes here (as
    /// `Kind::CancelRecv`).
    pub fn cancel_accepts(&mut self, listener: RawFd) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(listener)).all())
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Token::ring(Kind::CancelRecv).encode());
        self.push(entry);
    }

    /// Closes the fixed file `token.slot`, freeing the slot for a later accept. Only a
    /// failure completes. The caller must have seen the completion of every other
    /// operation on the slot: after this runs, the kernel may give the slot to a new
    /// connection, and a late lookup by an older operation would find that one.
    pub fn close(&mut self, token: Token) {
        let entry = opcode::Close::new(types::Fixed(token.slot))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(
                Token {
                    kind: Kind::Close,
                    ..token
                }
                .encode(),
            );
        self.push(entry);
    }

    /// A one-shot timeout that completes (with `-ETIME`) after `interval`; re-armed by the
    /// caller on each completion.
    pub fn tick(&mut self, interval: Duration) {
        *self.tick = types::Timespec::from(interval);
        let entry = opcode::Timeout::new(&*self.tick as *const types::Timespec)
            .build()
            .user_data(Token::ring(Kind::Tick).encode());
        self.push(entry);
    }

    /// Posts a completion with `user_data = Token::ring(Kind::Wake)` into the ring `target`
    /// (`IORING_OP_MSG_RING`), waking its thread if it waits. Only a failure completes here.
    pub fn wake(&mut self, target: RawFd) {
        let entry =
            opcode::MsgRingData::new(types::Fd(target), 0, Token::ring(Kind::Wake).encode(), None)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(Token::ring(Kind::WakeSent).encode());
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.push_chain(std::slice::from_ref(&entry));
    }

    /// Free entries in the submission queue.
    fn sq_room(&mut self) -> usize {
        let mut sq = self.uring.submission();
        sq.sync();
        sq.capacity() - sq.len()
    }

    /// Queues `entries` (one entry, or a chain linked with `IO_LINK` on all but the last)
    /// as one unit: either all of them go into the submission queue now, or all wait in
    /// the backlog, behind whatever already waits there.
    pub(super) fn push_chain(&mut self, entries: &[squeue::Entry]) {
        let capacity = self.uring.submission().capacity();
        assert!(
            !entries.is_empty() && entries.len() <= capacity.min(usize::from(u8::MAX)),
            "a chain of {} entries never fits a submission queue of {capacity}",
            entries.len()
        );
        if self.backlog.is_empty() {
            if self.sq_room() < entries.len() {
                // The queue is full: hand it to the kernel and look again.
                if let Err(e) = self.uring.submit() {
                    tracing::debug!("io_uring submit while the queue was full: {e}");
                }
            }
            if self.sq_room() >= entries.len() {
                for entry in entries {
                    let pushed = self.try_push(entry);
                    assert!(pushed, "room was checked");
                }
                return;
            }
        }
        let n = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            self.backlog.push_back(Waiting {
                entry: entry.clone(),
                chain_rest: (n - 1 - i) as u8,
            });
        }
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every pointer an entry carries outlives its completion: a send's buffer
        // is owned by `self.sends` until `reap` sees its completion; a connect chain's
        // addresses and timespec are boxed in `self.chains` until `reap` has seen the
        // completion of every entry of the chain (and leaked if the ring is dropped
        // first); an accept's address buffer is boxed in `self.accepts` likewise; the
        // socket option value is a `static`; the tick's timespec is boxed in
        // `self` and only rewritten by `tick`, which the caller issues again only after
        // the previous timeout completed; the other operations carry no pointers.
        unsafe { self.uring.submission().push(entry).is_ok() }
    }

    /// Moves waiting entries into the submission queue, a whole chain at a time,
    /// submitting once if it fills; what still does not fit waits for the next enter.
    fn flush_backlog(&mut self) {
        let mut submitted = false;
        while let Some(head) = self.backlog.front() {
            let need = usize::from(head.chain_rest) + 1;
            if self.sq_room() < need {
                if submitted {
                    return;
                }
                if let Err(e) = self.uring.submit() {
                    tracing::debug!("io_uring submit while draining the backlog: {e}");
                }
                submitted = true;
                if self.sq_room() < need {
                    return;
                }
            }
            for _ in 0..need {
                let waiting = self.backlog.pop_front().expect("a chain is queued whole");
                let pushed = self.try_push(&waiting.entry);
                assert!(pushed, "room was checked");
            }
        }
    }

    /// Submits what is queued and runs the kernel's pending completion work; with `wait`,
    /// blocks until at least one completion is ready. An interrupted or CQ-overflowed enter
    /// is not an error: the caller reaps and comes back.
    pub fn enter(&mut self, wait: bool) -> io::Result<()> {
        self.flush_backlog();
        let to_submit = self.uring.submission().len() as u32;
        let min_complete = u32::from(wait && self.backlog.is_empty());
        // SAFETY: `enter` with no extended argument; the entries it submits were checked by
        // `try_push`.
        let res = unsafe {
            self.uring.submitter().enter::<libc::sigset_t>(
                to_submit,
                min_complete,
                ENTER_GETEVENTS,
                None,
            )
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every ready completion into `out`, decoded; completions are handled by the
    /// caller afterwards, never inside the reap.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.uring.completion() {
            let Some(token) = Token::decode(cqe.user_data()) else {
                tracing::error!(
                    "io_uring: completion with foreign user_data {:#x}",
                    cqe.user_data()
                );
                continue;
            };
            let mut peer = None;
            let (token, sent) = match token.kind {
                Kind::AcceptPeer => match self.accepts.try_remove(token.slot as usize) {
                    Some(inflight) => {
                        if cqe.result() >= 0 {
                            peer = inflight.peer();
                        }
                        (token, None)
                    }
                    None => {
                        tracing::error!(
                            "io_uring: accept completion for unknown key {}",
                            token.slot
                        );
                        continue;
                    }
                },
                Kind::Send => match self.sends.try_remove(token.slot as usize) {
                    Some(send) => (send.token, Some(send.buf)),
                    None => {
                        tracing::error!("io_uring: send completion for unknown key {}", token.slot);
                        continue;
                    }
                },
                Kind::Socket
                | Kind::SockOpt
                | Kind::Bind
                | Kind::Connect
                | Kind::ConnectTimeout => match chain_completed(&mut self.chains, token) {
                    Some(token) => (token, None),
                    None => {
                        tracing::error!(
                            "io_uring: {:?} completion for unknown chain {}",
                            token.kind,
                            token.slot
                        );
                        continue;
                    }
                },
                _ => (token, None),
            };
            out.push(Completion {
                token,
                result: cqe.result(),
                flags: cqe.flags(),
                sent,
                peer,
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.leak_chains();
        // The kernel tears pending accepts down after the ring is gone and may still
        // write their addresses: their buffers must outlive it.
        for inflight in std::mem::take(&mut self.accepts).drain() {
            Box::leak(inflight);
        }
    }
}

fn fixed_files_error(e: io::Error, n: u32) -> io::Error {
    if e.raw_os_error() == Some(libc::EMFILE) {
        io::Error::new(
            e.kind(),
            format!(
                "cannot register a fixed-file table of {n} slots: it may not exceed RLIMIT_NOFILE \
                 (raise `ulimit -n`, or lower --max-conns and add shards)"
            ),
        )
    } else {
        io::Error::new(
            e.kind(),
            format!("cannot register a fixed-file table of {n} slots: {e}"),
        )
    }
}

fn setup_error(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no io_uring",
        Some(libc::EPERM) => "io_uring is disabled here (see /proc/sys/kernel/io_uring_disabled)",
        Some(libc::ENOMEM) => "not enough locked memory for the ring (see `ulimit -l`)",
        _ => "io_uring setup failed",
    };
    io::Error::new(e.kind(), format!("{hint}: {e}"))
}
