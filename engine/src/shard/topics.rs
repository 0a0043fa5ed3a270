//! The shard's topic index: for each topic (or subtree) its connections here, and for
//! each connection its subscriptions, as intrusive lists in slabs so that subscribe,
//! unsubscribe and a connection's departure are O(1) per subscription. It reports when
//! the shard gains or loses interest in a topic so the router can be told.

use std::collections::HashMap;

use slab::Slab;
use switchboard_proto::topic::Pattern;

use super::conn::NIL;

/// One entry of a topic's subscriber list.
#[derive(Clone, Copy, Debug)]
pub struct Sub {
    pub slot: u32,
    node: u32,
}

#[derive(Debug)]
pub struct Topic {
    /// The topic, or the prefix of a subtree (without `.*`).
    pub name: Box<str>,
    pub subtree: bool,
    pub subs: Vec<Sub>,
    /// Subscriptions requested but not yet confirmed by the router (see `Barrier`).
    pub pending: u32,
}

impl Topic {
    /// The pattern as a client wrote it.
    pub fn pattern(&self) -> String {
        if self.subtree {
            format!("{}.*", self.name)
        } else {
            self.name.to_string()
        }
    }
}

/// A subscription: links a connection's list to a topic's list.
#[derive(Debug)]
struct Node {
    topic: u32,
    /// Next subscription of the same connection.
    next: u32,
    /// Index in the topic's `subs`.
    pos: u32,
}

/// A change of this shard's interest that the router must learn.
#[derive(Debug, PartialEq, Eq)]
pub struct InterestChange {
    pub prefix: Box<str>,
    pub subtree: bool,
    pub add: bool,
}

#[derive(Default)]
pub struct Topics {
    exact: HashMap<Box<str>, u32>,
    subtree: HashMap<Box<str>, u32>,
    topics: Slab<Topic>,
    nodes: Slab<Node>,
}

impl Topics {
    pub fn get(&self, id: u32) -> &Topic {
        &self.topics[id as usize]
    }

    /// Subscriptions on this shard.
    pub fn subscriptions(&self) -> usize {
        self.nodes.len()
    }

    /// Topics and subtrees with subscribers or pending subscriptions here.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Finds or creates the entry for `pattern` and counts one pending subscription on it.
    /// A new entry is a gain of interest the router must hear about (before the barrier
    /// that confirms this subscription).
    pub fn reserve(&mut self, pattern: Pattern<'_>) -> (u32, Option<InterestChange>) {
        let (name, subtree) = match pattern {
            Pattern::Exact(t) => (t, false),
            Pattern::Subtree(p) => (p, true),
        };
        let map = if subtree {
            &mut self.subtree
        } else {
            &mut self.exact
        };
        if let Some(&id) = map.get(name) {
            self.topics[id as usize].pending += 1;
            return (id, None);
        }
        let id = self.topics.insert(Topic {
            name: name.into(),
            subtree,
            subs: Vec::new(),
            pending: 1,
        }) as u32;
        map.insert(name.into(), id);
        let change = InterestChange {
            prefix: name.into(),
            subtree,
            add: true,
        };
        (id, Some(change))
    }

    /// The router confirmed a pending subscription: add `slot` (whose list head is `head`)
    /// to the topic, unless it is already there. Returns whether it was added.
    pub fn confirm(&mut self, id: u32, slot: u32, head: &mut u32) -> bool {
        let topic = &mut self.topics[id as usize];
        debug_assert!(topic.pending > 0);
        topic.pending -= 1;
        if self.find(*head, id).is_some() {
            return false;
        }
        let topic = &mut self.topics[id as usize];
        let pos = topic.subs.len() as u32;
        let node = self.nodes.insert(Node {
            topic: id,
            next: *head,
            pos,
        }) as u32;
        self.topics[id as usize].subs.push(Sub { slot, node });
        *head = node;
        true
    }

    /// A pending subscription that will not be confirmed (its connection left).
    pub fn abandon(&mut self, id: u32) -> Option<InterestChange> {
        let topic = &mut self.topics[id as usize];
        topic.pending -= 1;
        self.release_if_unused(id)
    }

    /// Removes `slot`'s subscription to the entry named by `pattern`, if any.
    pub fn unsubscribe(
        &mut self,
        pattern: Pattern<'_>,
        head: &mut u32,
    ) -> (bool, Option<InterestChange>) {
        let id = match pattern {
            Pattern::Exact(t) => self.exact.get(t),
            Pattern::Subtree(p) => self.subtree.get(p),
        };
        let Some(&id) = id else { return (false, None) };
        let Some((prev, node)) = self.find(*head, id) else {
            return (false, None);
        };
        let next = self.nodes[node as usize].next;
        if prev == NIL {
            *head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        (true, self.remove_node(node))
    }

    /// Removes every subscription of a connection, reporting lost interest.
    pub fn unsubscribe_all(&mut self, head: &mut u32, changes: &mut Vec<InterestChange>) {
        let mut node = std::mem::replace(head, NIL);
        while node != NIL {
            let next = self.nodes[node as usize].next;
            changes.extend(self.remove_node(node));
            node = next;
        }
    }

    /// The subscriber lists a message on `topic` reaches: the exact topic, then each
    /// subtree above it. A connection may appear in several (dedupe by stamp).
    pub fn matching<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a [Sub]> + 'a {
        let exact = self
            .exact
            .get(topic)
            .map(|&id| &self.topics[id as usize].subs[..]);
        let subtrees = switchboard_proto::topic::ancestors(topic)
            .filter_map(|p| self.subtree.get(p))
            .map(|&id| &self.topics[id as usize].subs[..]);
        exact.into_iter().chain(subtrees)
    }

    /// Whether the connection whose list starts at `head` holds `pattern`.
    pub fn holds(&self, pattern: Pattern<'_>, head: u32) -> bool {
        let id = match pattern {
            Pattern::Exact(t) => self.exact.get(t),
            Pattern::Subtree(p) => self.subtree.get(p),
        };
        id.is_some_and(|&id| self.find(head, id).is_some())
    }

    /// The patterns `head`'s connection is subscribed to.
    pub fn patterns_of(&self, mut node: u32) -> Vec<String> {
        let mut out = Vec::new();
        while node != NIL {
            let n = &self.nodes[node as usize];
            out.push(self.topics[n.topic as usize].pattern());
            node = n.next;
        }
        out
    }

    /// `(previous node, node)` of the subscription to `id` in the list at `head`.
    fn find(&self, head: u32, id: u32) -> Option<(u32, u32)> {
        let (mut prev, mut node) = (NIL, head);
        while node != NIL {
            let n = &self.nodes[node as usize];
            if n.topic == id {
                return Some((prev, node));
            }
            prev = node;
            node = n.next;
        }
        None
    }

    /// Unlinks a node (already unlinked from its connection's list) from its topic.
    fn remove_node(&mut self, node: u32) -> Option<InterestChange> {
        let Node { topic: id, pos, .. } = self.nodes.remove(node as usize);
        let topic = &mut self.topics[id as usize];
        topic.subs.swap_remove(pos as usize);
        if let Some(moved) = topic.subs.get(pos as usize) {
            self.nodes[moved.node as usize].pos = pos;
        }
        self.release_if_unused(id)
    }

    fn release_if_unused(&mut self, id: u32) -> Option<InterestChange> {
        let topic = &self.topics[id as usize];
        if !topic.subs.is_empty() || topic.pending > 0 {
            return None;
        }
        let topic = self.topics.remove(id as usize);
        let map = if topic.subtree {
            &mut self.subtree
        } else {
            &mut self.exact
        };
        map.remove(&topic.name);
        Some(InterestChange {
            prefix: topic.name,
            subtree: topic.subtree,
            add: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::topic::parse_pattern;

    fn subscribe(
        t: &mut Topics,
        pattern: &str,
        slot: u32,
        head: &mut u32,
    ) -> Option<InterestChange> {
        let (id, change) = t.reserve(parse_pattern(pattern).unwrap());
        assert!(t.confirm(id, slot, head));
        change
    }

    fn reached(t: &Topics, topic: &str) -> Vec<u32> {
        let mut slots: Vec<u32> = t.matching(topic).flatten().map(|s| s.slot).collect();
        slots.sort();
        slots
    }

    #[test]
    fn interest_is_reported_on_first_and_last_subscriber_only() {
        let mut t = Topics::default();
        let (mut a, mut b) = (NIL, NIL);
        let first = subscribe(&mut t, "chat.lobby", 1, &mut a).expect("gain");
        assert!(first.add && !first.subtree && &*first.prefix == "chat.lobby");
        assert!(subscribe(&mut t, "chat.lobby", 2, &mut b).is_none());
        let (removed, change) = t.unsubscribe(parse_pattern("chat.lobby").unwrap(), &mut a);
        assert!(removed && change.is_none());
        let (removed, change) = t.unsubscribe(parse_pattern("chat.lobby").unwrap(), &mut b);
        assert!(removed);
        assert_eq!(
            change,
            Some(InterestChange {
                prefix: "chat.lobby".into(),
                subtree: false,
                add: false
            })
        );
        assert!(t.is_empty() && t.subscriptions() == 0);
    }

    #[test]
    fn matching_covers_exact_and_every_enclosing_subtree() {
        let mut t = Topics::default();
        let mut heads = [NIL; 5];
        subscribe(&mut t, "a.b.c", 0, &mut heads[0]);
        subscribe(&mut t, "a.*", 1, &mut heads[1]);
        subscribe(&mut t, "a.b.*", 2, &mut heads[2]);
        subscribe(&mut t, "a.b.c.*", 3, &mut heads[3]);
        subscribe(&mut t, "x.*", 4, &mut heads[4]);
        assert_eq!(reached(&t, "a.b.c"), vec![0, 1, 2]);
        assert_eq!(reached(&t, "a.b"), vec![1]);
        assert_eq!(
            reached(&t, "a"),
            Vec::<u32>::new(),
            "a subtree excludes its root"
        );
        assert_eq!(reached(&t, "a.b.c.d"), vec![1, 2, 3]);
        assert_eq!(reached(&t, "x.y"), vec![4]);
    }

    #[test]
    fn duplicate_subscription_is_ignored_and_departure_removes_all() {
        let mut t = Topics::default();
        let mut head = NIL;
        subscribe(&mut t, "a", 7, &mut head);
        let (id, change) = t.reserve(parse_pattern("a").unwrap());
        assert!(change.is_none());
        assert!(
            !t.confirm(id, 7, &mut head),
            "second subscription to the same topic"
        );
        subscribe(&mut t, "b.*", 7, &mut head);
        let mut other = NIL;
        subscribe(&mut t, "a", 8, &mut other);
        assert_eq!(
            t.patterns_of(head),
            vec!["b.*".to_string(), "a".to_string()]
        );
        let mut changes = Vec::new();
        t.unsubscribe_all(&mut head, &mut changes);
        assert_eq!(head, NIL);
        assert_eq!(
            changes.len(),
            1,
            "only b.* lost its last subscriber: {changes:?}"
        );
        assert_eq!(reached(&t, "a"), vec![8]);
    }

    #[test]
    fn swap_remove_keeps_positions_consistent() {
        let mut t = Topics::default();
        let mut heads = [NIL; 50];
        for (slot, head) in heads.iter_mut().enumerate() {
            subscribe(&mut t, "t", slot as u32, head);
        }
        for slot in (0..50).step_by(3) {
            let (removed, _) = t.unsubscribe(parse_pattern("t").unwrap(), &mut heads[slot]);
            assert!(removed);
        }
        let expected: Vec<u32> = (0..50).filter(|s| s % 3 != 0).collect();
        assert_eq!(reached(&t, "t"), expected);
        for slot in (0..50).filter(|s| s % 3 != 0) {
            let (removed, _) = t.unsubscribe(parse_pattern("t").unwrap(), &mut heads[slot]);
            assert!(removed, "slot {slot}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn abandoned_reservation_releases_interest() {
        let mut t = Topics::default();
        let (id, change) = t.reserve(parse_pattern("q.*").unwrap());
        assert!(change.unwrap().add);
        let change = t.abandon(id).expect("released");
        assert!(!change.add && change.subtree && &*change.prefix == "q");
    }
}
