//! Per-connection send queues as linked lists of nodes in one shard-wide slab: a
//! connection with nothing pending owns no queue memory, and queued messages are shared
//! `Bytes` (one reference each), never copies.

use bytes::Bytes;
use slab::Slab;

use super::conn::{Conn, NIL};

#[derive(Debug)]
struct Node {
    buf: Bytes,
    next: u32,
}

#[derive(Default)]
pub struct SendQueues {
    nodes: Slab<Node>,
}

impl SendQueues {
    /// Appends `buf` to `conn`'s queue.
    pub fn push(&mut self, conn: &mut Conn, buf: Bytes) {
        conn.queued_bytes = conn.queued_bytes.saturating_add(buf.len() as u32);
        let node = self.nodes.insert(Node { buf, next: NIL }) as u32;
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
        let Node { buf, next } = self.nodes.remove(conn.send_head as usize);
        conn.send_head = next;
        if next == NIL {
            conn.send_tail = NIL;
        }
        conn.queued_bytes = conn.queued_bytes.saturating_sub(buf.len() as u32);
        Some(buf)
    }

    /// Drops everything queued for `conn`.
    pub fn clear(&mut self, conn: &mut Conn) {
        while self.pop(conn).is_some() {}
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

    #[test]
    fn queues_are_fifo_per_connection_and_count_bytes() {
        let mut table = ConnTable::new(2);
        let mut q = SendQueues::default();
        let a = table.slot_mut(0);
        q.push(a, Bytes::from_static(b"one"));
        q.push(a, Bytes::from_static(b"three"));
        assert_eq!(a.queued_bytes, 8);
        let b = table.slot_mut(1);
        q.push(b, Bytes::from_static(b"b1"));
        let a = table.slot_mut(0);
        assert_eq!(q.pop(a).as_deref(), Some(&b"one"[..]));
        q.push(a, Bytes::from_static(b"four"));
        assert_eq!(q.pop(a).as_deref(), Some(&b"three"[..]));
        assert_eq!(q.pop(a).as_deref(), Some(&b"four"[..]));
        assert_eq!(q.pop(a), None);
        assert!(a.send_queue_empty() && a.queued_bytes == 0);
        let b = table.slot_mut(1);
        q.clear(b);
        assert_eq!(q.len(), 0);
    }
}
