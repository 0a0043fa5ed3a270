//! Connection state: a plain struct per connection, at most 64 bytes, in a table indexed
//! by the connection's fixed-file slot. The table grows in pages allocated on first use,
//! so capacity that is never used is never allocated and nothing moves on growth.

use switchboard_proto::http1::ChunkedDecoder;
use switchboard_proto::ws;

use crate::metrics::CloseReason;
use crate::pubsub::link::ConnRef;
use crate::uring::{Kind, Token, next_generation};

/// "No index" in the intrusive lists (send queue, subscriptions).
pub const NIL: u32 = u32::MAX;

/// Where a connection is in its life. Transitions are made only by the shard's handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Free = 0,
    /// Reading HTTP requests (keep-alive between them).
    Http = 1,
    /// A publish went to the router; input is parked until its sequence number returns.
    Publishing = 2,
    /// A WebSocket or SSE handshake waits for the router to confirm its subscriptions.
    Subscribing = 3,
    /// A publish/subscribe WebSocket.
    Ws = 4,
    /// The conformance echo WebSocket.
    Echo = 5,
    /// A Server-Sent Events stream.
    Sse = 6,
    /// Finishing: flushing, lingering or waiting for the kernel to let go of the socket.
    Closing = 7,
    /// A long-poll request held until a message arrives or its deadline passes; input
    /// is parked.
    Poll = 8,
}

impl Phase {
    pub const COUNT: usize = 9;
    pub const NAMES: [&'static str; Phase::COUNT] = [
        "free",
        "http",
        "publishing",
        "subscribing",
        "ws",
        "echo",
        "sse",
        "closing",
        "poll",
    ];

    pub fn name(self) -> &'static str {
        Phase::NAMES[self as usize]
    }
}

/// `Conn::flags` bits.
pub mod flag {
    /// The multishot recv is armed (a final completion is still to come).
    pub const RECV_ARMED: u16 = 1 << 0;
    /// A send is in flight.
    pub const SENDING: u16 = 1 << 1;
    /// A `shutdown` is in flight.
    pub const SHUTTING: u16 = 1 << 2;
    /// A cancel of everything on the socket is in flight.
    pub const CANCELLING: u16 = 1 << 3;
    /// Once the send queue drains: `shutdown(SHUT_WR)` and linger.
    pub const CLOSE_AFTER_FLUSH: u16 = 1 << 4;
    /// Our FIN is out; waiting for the peer's EOF or the linger deadline.
    pub const SHUT: u16 = 1 << 5;
    /// Final: everything pending was cancelled; the slot is freed once ops complete.
    pub const FINAL: u16 = 1 << 6;
    /// The peer sent EOF: nothing more will be read.
    pub const PEER_EOF: u16 = 1 << 7;
    /// Our WebSocket close frame is queued: send nothing after it.
    pub const WS_CLOSE_SENT: u16 = 1 << 8;
    /// The current HTTP request asked to close after its response.
    pub const HTTP_CLOSE: u16 = 1 << 9;
    /// A WebSocket op waits for the router: further input is parked, so ops are applied
    /// and answered in order.
    pub const OP_PENDING: u16 = 1 << 10;
    /// Too much input is parked: the recv was cancelled and is re-armed once it drains,
    /// leaving the client to TCP flow control.
    pub const READ_PAUSED: u16 = 1 << 11;
    /// Slow consumer under the `drop` policy: messages for it are discarded until its
    /// send queue has drained.
    pub const DROPPING: u16 = 1 << 12;
    /// `Ws`: something arrived from the client since the keep-alive timer last fired.
    pub const WS_HEARD: u16 = 1 << 13;
    /// `Ws`: a ping is out; the client must send something before the pong deadline.
    pub const PING_SENT: u16 = 1 << 14;
    /// Operations the kernel still holds that name the connection's fixed-file slot:
    /// the slot is closed (and may be reused) only when none is left.
    pub const IN_KERNEL: u16 = RECV_ARMED | SENDING | SHUTTING | CANCELLING;
}

/// One connection. Everything it owns beyond these bytes is allocated only while needed:
/// `rx` while a request, frame or message is partially received, queue nodes while sends
/// are pending, subscription nodes per subscription.
#[derive(Debug)]
pub struct Conn {
    pub generation: u32,
    pub phase: Phase,
    pub flags: u16,
    /// Number of subscriptions.
    pub subs: u16,
    /// Wheel tick at which this connection's single timer fires (0: none).
    pub deadline: u32,
    /// Last delivery stamp: a message matching several of its subscriptions goes once.
    pub stamp: u32,
    /// First node of the connection's subscription list.
    pub sub_head: u32,
    /// Send queue: first and last node, and bytes queued (not counting the one in flight).
    pub send_head: u32,
    pub send_tail: u32,
    pub queued_bytes: u32,
    /// Buffers queued (not counting the one in flight).
    pub queued_msgs: u32,
    /// `Poll`: the router-wide position the poll answers with if it times out.
    pub poll_gseq: u64,
    /// Why it is closing, once known (counted when the slot is freed).
    pub close_reason: CloseReason,
    pub rx: Option<Box<Rx>>,
}

const _: () = assert!(size_of::<Conn>() <= 64, "Conn must fit a cache line");

impl Conn {
    const FREE: Conn = Conn {
        generation: 0,
        phase: Phase::Free,
        flags: 0,
        subs: 0,
        deadline: 0,
        stamp: 0,
        sub_head: NIL,
        send_head: NIL,
        send_tail: NIL,
        queued_bytes: 0,
        queued_msgs: 0,
        poll_gseq: 0,
        close_reason: CloseReason::Unset,
        rx: None,
    };

    pub fn token(&self, kind: Kind, slot: u32) -> Token {
        Token::new(kind, self.generation, slot)
    }

    pub fn conn_ref(&self, slot: u32) -> ConnRef {
        ConnRef {
            slot,
            generation: self.generation,
        }
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u16) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u16) {
        self.flags &= !f;
    }

    /// Still serving its peer (not free, not on its way out).
    /// Records why the connection closes, unless a reason was given already.
    pub fn close_because(&mut self, reason: CloseReason) {
        if self.close_reason == CloseReason::Unset {
            self.close_reason = reason;
        }
    }

    pub fn is_live(&self) -> bool {
        !matches!(self.phase, Phase::Free | Phase::Closing)
    }

    pub fn send_queue_empty(&self) -> bool {
        self.send_head == NIL
    }
}

/// Input state that exists only while something is partially received.
#[derive(Debug)]
pub struct Rx {
    /// Received bytes not consumed yet: a partial HTTP head, or input parked while the
    /// connection waits for the router.
    pub spill: Vec<u8>,
    /// A publish whose body is still arriving.
    pub body: Option<PublishBody>,
    /// WebSocket frame reader state.
    pub ws: ws::Reader,
    /// The WebSocket message being assembled (fragments or a message split across reads).
    pub msg: Vec<u8>,
}

impl Rx {
    pub fn new(ws: ws::Reader) -> Rx {
        Rx {
            spill: Vec::new(),
            body: None,
            ws,
            msg: Vec::new(),
        }
    }

    /// Nothing partial is held: the box can be freed.
    pub fn is_idle(&self) -> bool {
        self.spill.is_empty() && self.body.is_none() && self.msg.is_empty() && self.ws.is_idle()
    }
}

/// A publish request whose body is being received.
#[derive(Debug)]
pub struct PublishBody {
    pub target: BodyFor,
    pub progress: BodyProgress,
    pub data: Vec<u8>,
}

/// What a request body being read is for.
#[derive(Debug)]
pub enum BodyFor {
    /// `POST /publish/<topic>`.
    Publish(Box<str>),
    /// `POST /ami/action`, with the caller's token subject and grants.
    AmiAction(Box<(Box<str>, Option<crate::ami::gateway::AmiGrants>)>),
}

#[derive(Debug)]
pub enum BodyProgress {
    /// Bytes still expected.
    Length(usize),
    Chunked(ChunkedDecoder),
}

/// Connections per page of the table.
const PAGE_CONNS: usize = 1024;

/// Fixed capacity, indexed by fixed-file slot; pages are allocated on first use.
pub struct ConnTable {
    pages: Vec<Option<Box<[Conn; PAGE_CONNS]>>>,
    capacity: u32,
    /// Connections not `Free`.
    pub live: u32,
}

impl ConnTable {
    pub fn new(capacity: u32) -> ConnTable {
        let pages = (capacity as usize).div_ceil(PAGE_CONNS);
        ConnTable {
            pages: (0..pages).map(|_| None).collect(),
            capacity,
            live: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The connection in `slot`, which must be below capacity, allocating its page.
    pub fn slot_mut(&mut self, slot: u32) -> &mut Conn {
        assert!(
            slot < self.capacity,
            "slot {slot} beyond capacity {}",
            self.capacity
        );
        let (page, i) = (slot as usize / PAGE_CONNS, slot as usize % PAGE_CONNS);
        let page = self.pages[page].get_or_insert_with(|| Box::new([Conn::FREE; PAGE_CONNS]));
        &mut page[i]
    }

    /// The connection a completion or a cross-thread reference names, if it is still the
    /// same connection (slot allocated, generation equal).
    pub fn get(&mut self, slot: u32, generation: u32) -> Option<&mut Conn> {
        if slot >= self.capacity {
            return None;
        }
        let page = self.pages[slot as usize / PAGE_CONNS].as_mut()?;
        let conn = &mut page[slot as usize % PAGE_CONNS];
        (conn.phase != Phase::Free && conn.generation == generation).then_some(conn)
    }

    /// Appends the slot of every connection that is not `Free` to `out` (pages never
    /// touched are skipped, and none is allocated).
    pub fn live_slots(&self, out: &mut Vec<u32>) {
        for (p, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            for (i, conn) in page.iter().enumerate() {
                if conn.phase != Phase::Free {
                    out.push((p * PAGE_CONNS + i) as u32);
                }
            }
        }
    }

    /// Frees a slot: bumps its generation so late completions for it are dropped.
    pub fn free(&mut self, slot: u32) {
        let conn = self.slot_mut(slot);
        debug_assert_ne!(conn.phase, Phase::Free);
        let generation = next_generation(conn.generation);
        *conn = Conn {
            generation,
            ..Conn::FREE
        };
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_fits_in_64_bytes() {
        assert!(size_of::<Conn>() <= 64);
    }

    #[test]
    fn table_allocates_pages_lazily_and_rejects_stale_generations() {
        let mut table = ConnTable::new(5000);
        assert!(table.pages.iter().all(Option::is_none));
        let conn = table.slot_mut(4999);
        conn.phase = Phase::Http;
        let generation = conn.generation;
        table.live += 1;
        assert_eq!(table.pages.iter().filter(|p| p.is_some()).count(), 1);
        assert!(table.get(4999, generation).is_some());
        table.free(4999);
        assert!(
            table.get(4999, generation).is_none(),
            "freed slot must not resolve"
        );
        let conn = table.slot_mut(4999);
        conn.phase = Phase::Ws;
        let new_generation = conn.generation;
        assert_ne!(new_generation, generation);
        assert!(
            table.get(4999, generation).is_none(),
            "stale generation must not resolve"
        );
        assert!(table.get(4999, new_generation).is_some());
        assert!(table.get(5000, 0).is_none());
    }
}
