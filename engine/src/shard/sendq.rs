//! Per-connection send queues as linked lists of nodes in one shard-wide slab: a
//! connection with nothing pending owns no queue memory, and queued messages are shared
//! `Bytes` (one reference each), never copies. A node that carries a routed message
//! remembers it, so that the `drop` slow-consumer policy can discard exactly the
//! messages (never a handshake, an op reply or a close frame) and know their topics.

use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::conn::{Conn, NIL};
use crate::pubsub::link::Message;

#[derive(Debug)]
struct Node {
    buf: Bytes,
    /// The routed message `buf` encodes, if it is one (discardable).
    msg: Option<Arc<Message>>,
    next: u32,
}

#[derive(Default)]
pub struct SendQueues {
    nodes: Slab<Node>,
}

impl SendQueues {
    /// Appends `buf` (the encoding of `msg`, if given) to `conn`'s queue.
    pub fn push(&mut self, conn: &mut Conn, buf: Bytes, msg: Option<Arc<Message>>) {
        conn.queued_bytes = conn.queued_bytes.saturating_add(buf.len() as u32);
        conn.queued_msgs = conn.queued_msgs.saturating_add(1);
        let node = self.nodes.insert(Node {
            buf,
            msg,
            next: NIL,
        }) as u32;
        if conn.send_tail == NIL {
            conn.send_head = node;
        } else {
            self.nodes[conn.send_tail as usize].next = node;
        }
        conn.send_tail = node;
    }

    /// Takes the first buffer of `conn`'s queue.
    pub fn pop(&mut self, conn: &mut Conn) -> Option<Bytes> {
        if conn.send_head == NIL {
            return None;
        }
        let Node { buf, next, .. } = self.nodes.remove(conn.send_head as usize);
        conn.send_head = next;
        if next == NIL {
            conn.send_tail = NIL;
        }
        conn.queued_bytes = conn.queued_bytes.saturating_sub(buf.len() as u32);
        conn.queued_msgs = conn.queued_msgs.saturating_sub(1);
        Some(buf)
    }

    /// Drops everything queued for `conn`.
    pub fn clear(&mut self, conn: &mut Conn) {
        while self.pop(conn).is_some() {}
    }

    /// Removes the routed messages from `conn`'s queue, in order, handing each to
    /// `dropped`; everything else stays queued in its order. Returns how many went.
    pub fn discard_messages(&mut self, conn: &mut Conn, mut dropped: impl FnMut(&Message)) -> u32 {
        let (mut node, mut prev) = (conn.send_head, NIL);
        let mut count = 0;
        while node != NIL {
            let next = self.nodes[node as usize].next;
            if self.nodes[node as usize].msg.is_some() {
                let gone = self.nodes.remove(node as usize);
                if let Some(msg) = &gone.msg {
                    dropped(msg);
                }
                conn.queued_bytes = conn.queued_bytes.saturating_sub(gone.buf.len() as u32);
                conn.queued_msgs = conn.queued_msgs.saturating_sub(1);
                count += 1;
                if prev == NIL {
                    conn.send_head = next;
                } else {
                    self.nodes[prev as usize].next = next;
                }
                if next == NIL {
                    conn.send_tail = prev;
                }
            } else {
                prev = node;
            }
            node = next;
        }
        count
    }

    /// Queued buffers on this shard.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::conn::ConnTable;

    fn msg(topic: &str, seq: u64) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.into(),
            seq,
            gseq: seq,
            ws_frame: Bytes::new(),
            sse_event: Bytes::new(),
            envelope: Bytes::new(),
            in_history: Default::default(),
        })
    }

    #[test]
    fn queues_are_fifo_per_connection_and_count_bytes() {
        let mut table = ConnTable::new(2);
        let mut q = SendQueues::default();
        let a = table.slot_mut(0);
        q.push(a, Bytes::from_static(b"one"), None);
        q.push(a, Bytes::from_static(b"three"), None);
        assert_eq!((a.queued_bytes, a.queued_msgs), (8, 2));
        let b = table.slot_mut(1);
        q.push(b, Bytes::from_static(b"b1"), None);
        let a = table.slot_mut(0);
        assert_eq!(q.pop(a).as_deref(), Some(&b"one"[..]));
        q.push(a, Bytes::from_static(b"four"), None);
        assert_eq!(q.pop(a).as_deref(), Some(&b"three"[..]));
        assert_eq!(q.pop(a).as_deref(), Some(&b"four"[..]));
        assert_eq!(q.pop(a), None);
        assert!(a.send_queue_empty() && a.queued_bytes == 0 && a.queued_msgs == 0);
        let b = table.slot_mut(1);
        q.clear(b);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn discarding_keeps_everything_but_messages_in_order() {
        let mut table = ConnTable::new(1);
        let mut q = SendQueues::default();
        let c = table.slot_mut(0);
        q.push(c, Bytes::from_static(b"m1"), Some(msg("a", 1)));
        q.push(c, Bytes::from_static(b"ack"), None);
        q.push(c, Bytes::from_static(b"m2"), Some(msg("b", 1)));
        q.push(c, Bytes::from_static(b"pong"), None);
        q.push(c, Bytes::from_static(b"m3"), Some(msg("a", 2)));
        let mut seen = Vec::new();
        let n = q.discard_messages(c, |m| seen.push((m.topic.to_string(), m.seq)));
        assert_eq!(n, 3);
        assert_eq!(
            seen,
            vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]
        );
        assert_eq!((c.queued_bytes, c.queued_msgs), (7, 2));
        q.push(c, Bytes::from_static(b"next"), None);
        assert_eq!(q.pop(c).as_deref(), Some(&b"ack"[..]));
        assert_eq!(q.pop(c).as_deref(), Some(&b"pong"[..]));
        assert_eq!(q.pop(c).as_deref(), Some(&b"next"[..]));
        assert_eq!(q.pop(c), None);
        assert_eq!(q.len(), 0);
    }
}
