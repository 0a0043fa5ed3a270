//! The links between the shards and the router: bounded single-producer/single-consumer
//! queues made at start-up, plus a doorbell per consumer so that a producer wakes a
//! sleeping consumer's ring (`IORING_OP_MSG_RING`) at most once per sleep, never per
//! message.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use bytes::Bytes;

use super::ShardSet;
use super::history::Replay;
use crate::ami::gateway::AmiGrants;
use switchboard_proto::position::Position;

/// Identifies a connection across threads: its slot and the generation it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub slot: u32,
    pub generation: u32,
}

/// What a shard sends the router.
#[derive(Debug)]
pub enum ToRouter {
    /// Publish `data` (already a JSON value) to `topic`; answer `reply` with the sequence.
    Publish {
        topic: Box<str>,
        data: Bytes,
        reply: ConnRef,
    },
    /// The shard gained (`add`) or lost its first/last subscriber of a topic
    /// (`subtree == false`) or of the subtree below `prefix`.
    Interest {
        prefix: Box<str>,
        subtree: bool,
        add: bool,
    },
    /// Echoed back once everything the shard sent before it has been applied; with
    /// `resume`, the echo carries what those patterns had after a position. With
    /// `snapshot` (patterns in the `ami` namespace, `(name, subtree)`), the echo waits
    /// for the AMI thread's snapshot of them, which it carries first in its replay.
    Barrier {
        id: u32,
        resume: Option<Box<Resume>>,
        snapshot: Option<Patterns>,
    },
    /// An action for the AMI gateway from connection `conn`, answered with
    /// [`FromRouter::AmiResult`].
    AmiAction(Box<AmiRequest>),
}

/// Subscription patterns as the router and the AMI thread see them: `(name, subtree)`.
pub type Patterns = Box<[(Box<str>, bool)]>;

/// An action request on its way to the AMI gateway.
#[derive(Debug)]
pub struct AmiRequest {
    pub conn: ConnRef,
    /// The token's subject (the rate limit's key); empty without one.
    pub user: Box<str>,
    pub grants: Option<AmiGrants>,
    /// The client's JSON object, as received.
    pub body: Bytes,
}

/// What the router sends the AMI thread.
#[derive(Debug)]
pub enum ToAmi {
    /// Snapshot these patterns for barrier `id` of `shard`.
    Snapshot {
        shard: u16,
        id: u32,
        patterns: Patterns,
    },
    Action {
        shard: u16,
        request: Box<AmiRequest>,
    },
}

/// What the AMI thread sends the router.
#[derive(Debug)]
pub enum FromAmi {
    /// Publish `data` (a JSON value) to `topic` (UTF-8: copied from a `&str`).
    Publish { topic: Bytes, data: Bytes },
    /// The snapshot asked for by barrier `id` of `shard`: `(topic, data)` messages.
    Snapshot {
        shard: u16,
        id: u32,
        messages: Vec<(Box<str>, Bytes)>,
    },
    /// An action's result (a JSON object) for one connection, with the HTTP status
    /// that goes with it for `POST /ami/action`.
    Result {
        shard: u16,
        conn: ConnRef,
        status: u16,
        body: Bytes,
    },
}

/// A subscriber resuming: its patterns (`(name, subtree)`) and its position.
#[derive(Debug)]
pub struct Resume {
    pub patterns: Vec<(Box<str>, bool)>,
    pub since: Position,
}

/// One message as every subscriber receives it, encoded once per transport.
#[derive(Debug)]
pub struct Message {
    pub topic: Box<str>,
    pub seq: u64,
    /// The router-wide sequence number: with the epoch, the message's position (the
    /// envelope's `pos`, the SSE `id`).
    pub gseq: u64,
    /// A complete WebSocket text frame holding the envelope.
    pub ws_frame: Bytes,
    /// A complete SSE event holding the envelope.
    pub sse_event: Bytes,
    /// The envelope alone (long-poll bodies), a slice of `ws_frame`'s bytes.
    pub envelope: Bytes,
    /// True while the router's history holds the message in its topic's ring: how
    /// the history tells its stale publish-order entries without a topic lookup.
    /// Written and read by the router thread only.
    pub in_history: AtomicBool,
}

/// What the router sends a shard.
#[derive(Debug)]
pub enum FromRouter {
    Deliver(Arc<Message>),
    Published {
        reply: ConnRef,
        topic: Box<str>,
        seq: u64,
        /// Handed to at least one shard (false for a topic without subscribers, and for
        /// a direct address no shard can hold, which is answered 404).
        delivered: bool,
    },
    /// The echo of a barrier: `gseq` is the router-wide sequence number reached when
    /// it was applied; `replay` answers a `resume`.
    Barrier {
        id: u32,
        gseq: u64,
        replay: Option<Box<Replay>>,
    },
    /// The result of connection `conn`'s action (a JSON object) and its HTTP status.
    AmiResult {
        conn: ConnRef,
        status: u16,
        body: Bytes,
    },
}

/// Capacity of each queue, in messages.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// One consumer's doorbell: the consumer arms it before it sleeps in its ring, a producer
/// rings it after pushing. The fences make the two sides a Dekker pair: either the
/// consumer's last look at its queues sees the push, or the producer sees the bell armed.
#[derive(Debug)]
pub struct Doorbell {
    armed: AtomicBool,
    /// The consumer's ring, where wake-ups are posted.
    ring_fd: RawFd,
}

impl Doorbell {
    pub fn new(ring_fd: RawFd) -> Arc<Doorbell> {
        Arc::new(Doorbell {
            armed: AtomicBool::new(false),
            ring_fd,
        })
    }

    pub fn ring_fd(&self) -> RawFd {
        self.ring_fd
    }

    /// Consumer: about to sleep. Look at the queues once more after this returns.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Consumer: awake again.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// Producer, after its pushes: true if the consumer may be asleep and must be woken
    /// (by this caller: the bell is disarmed, so others will not).
    pub fn ring(&self) -> bool {
        fence(Ordering::SeqCst);
        self.armed.swap(false, Ordering::SeqCst)
    }
}

/// The router's end of the link with one shard.
pub struct RouterEnd {
    pub inbox: rtrb::Consumer<ToRouter>,
    pub outbox: rtrb::Producer<FromRouter>,
}

/// A shard's end of its link with the router.
pub struct ShardEnd {
    pub outbox: rtrb::Producer<ToRouter>,
    pub inbox: rtrb::Consumer<FromRouter>,
}

/// The router's end of its link with the AMI thread.
pub struct RouterAmiEnd {
    pub inbox: rtrb::Consumer<FromAmi>,
    pub outbox: rtrb::Producer<ToAmi>,
    /// The AMI thread's doorbell.
    pub bell: Arc<Doorbell>,
}

/// The AMI thread's end of its link with the router.
pub struct AmiEnd {
    pub outbox: rtrb::Producer<FromAmi>,
    pub inbox: rtrb::Consumer<ToAmi>,
}

/// Makes the queues between the router and the AMI thread.
pub fn ami_link() -> (AmiEnd, rtrb::Consumer<FromAmi>, rtrb::Producer<ToAmi>) {
    let (to_router, router_inbox) = rtrb::RingBuffer::new(QUEUE_CAPACITY);
    let (router_outbox, from_router) = rtrb::RingBuffer::new(QUEUE_CAPACITY);
    (
        AmiEnd {
            outbox: to_router,
            inbox: from_router,
        },
        router_inbox,
        router_outbox,
    )
}

/// Makes the queues of one shard/router link.
pub fn link() -> (ShardEnd, RouterEnd) {
    let (to_router, router_inbox) = rtrb::RingBuffer::new(QUEUE_CAPACITY);
    let (router_outbox, from_router) = rtrb::RingBuffer::new(QUEUE_CAPACITY);
    (
        ShardEnd {
            outbox: to_router,
            inbox: from_router,
        },
        RouterEnd {
            inbox: router_inbox,
            outbox: router_outbox,
        },
    )
}

impl ShardSet {
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doorbell_rings_once_per_arming() {
        let bell = Doorbell::new(-1);
        assert!(!bell.ring(), "an unarmed bell must not ask for a wake-up");
        bell.arm();
        assert!(bell.ring());
        assert!(!bell.ring(), "the first producer to ring takes the wake-up");
        bell.arm();
        bell.disarm();
        assert!(!bell.ring());
    }

    #[test]
    fn queues_carry_messages_in_order_and_are_bounded() {
        let (mut shard, mut router) = link();
        for id in 0..QUEUE_CAPACITY as u32 {
            shard
                .outbox
                .push(ToRouter::Barrier {
                    id,
                    resume: None,
                    snapshot: None,
                })
                .unwrap();
        }
        assert!(
            shard
                .outbox
                .push(ToRouter::Barrier {
                    id: 0,
                    resume: None,
                    snapshot: None,
                })
                .is_err()
        );
        for id in 0..QUEUE_CAPACITY as u32 {
            match router.inbox.pop().unwrap() {
                ToRouter::Barrier { id: got, .. } => assert_eq!(got, id),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(router.inbox.pop().is_err());
    }
}
