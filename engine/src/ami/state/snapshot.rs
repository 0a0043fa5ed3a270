//! Snapshots: what a new subscriber of an `ami.*` topic gets before any live
//! message, for one exact topic or for every existing topic below a subtree.
//! Lists are in a stable order (channels and calls oldest first, queues and
//! endpoints by name).

use super::super::{
    NAMESPACE, PREFIX_CALL, PREFIX_ENDPOINT, PREFIX_QUEUE, Sink, TOPIC_CALLS, TOPIC_EVENTS,
    call_segment, topic_segment,
};
use super::Pbx;
use super::model::{Call, Channel, Endpoint, Queue};
use super::render::{Obj, write_call, write_channel, write_endpoint, write_queue};

/// What one snapshot describes.
enum Subject<'a> {
    Events,
    Calls,
    Call(Option<&'a Call>),
    Queue(Option<&'a Queue>),
    Endpoint(Option<&'a Endpoint>),
}

fn list<T>(out: &mut Vec<u8>, items: &[&T], write: impl Fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

impl Pbx {
    /// Publishes the snapshot of the topic `name` (`subtree == false`; an unknown
    /// call, queue or endpoint gets its snapshot with `null`), or one snapshot per
    /// existing topic strictly below `name` (`subtree == true`). Nothing for names
    /// outside the `ami` namespace.
    pub fn snapshot(&self, name: &str, subtree: bool, out: &mut impl Sink) {
        let mut buf = Vec::new();
        if !subtree {
            if let Some(subject) = self.subject(name) {
                self.write_snapshot(&mut buf, &subject);
                out.publish(name, &buf);
            }
            return;
        }
        let below = |topic: &str| {
            name.is_empty()
                || topic
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        let in_namespace = name
            .strip_prefix(NAMESPACE)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        if !(name.is_empty() || in_namespace) {
            return;
        }
        let mut emit = |topic: &str, subject: Subject<'_>| {
            if below(topic) {
                buf.clear();
                self.write_snapshot(&mut buf, &subject);
                out.publish(topic, &buf);
            }
        };
        emit(TOPIC_EVENTS, Subject::Events);
        emit(TOPIC_CALLS, Subject::Calls);
        let mut topic = String::new();
        for call in self.sorted_calls() {
            topic.clear();
            topic.push_str(PREFIX_CALL);
            topic.push_str(&call_segment(&call.linkedid));
            emit(&topic, Subject::Call(Some(call)));
        }
        for q in self.sorted_queues() {
            topic.clear();
            topic.push_str(PREFIX_QUEUE);
            topic.push_str(&topic_segment(&q.name));
            emit(&topic, Subject::Queue(Some(q)));
        }
        for e in self.sorted_endpoints() {
            topic.clear();
            topic.push_str(PREFIX_ENDPOINT);
            topic.push_str(&topic_segment(&e.name));
            emit(&topic, Subject::Endpoint(Some(e)));
        }
    }

    /// The subject of an exact topic name.
    fn subject(&self, name: &str) -> Option<Subject<'_>> {
        if name == TOPIC_EVENTS {
            return Some(Subject::Events);
        }
        if name == TOPIC_CALLS {
            return Some(Subject::Calls);
        }
        if let Some(seg) = name.strip_prefix(PREFIX_CALL).filter(|s| !s.is_empty()) {
            let call = match self.calls.get(seg) {
                Some(c) if call_segment(&c.linkedid) == seg => Some(c),
                _ => self
                    .calls
                    .values()
                    .find(|c| call_segment(&c.linkedid) == seg),
            };
            return Some(Subject::Call(call.filter(|c| c.announced)));
        }
        if let Some(seg) = name.strip_prefix(PREFIX_QUEUE).filter(|s| !s.is_empty()) {
            let q = match self.queues.get(seg) {
                Some(q) if topic_segment(&q.name) == seg => Some(q),
                _ => self.queues.values().find(|q| topic_segment(&q.name) == seg),
            };
            return Some(Subject::Queue(q));
        }
        if let Some(seg) = name.strip_prefix(PREFIX_ENDPOINT).filter(|s| !s.is_empty()) {
            let e = match self.endpoints.get(seg) {
                Some(e) if topic_segment(&e.name) == seg => Some(e),
                _ => self
                    .endpoints
                    .values()
                    .find(|e| topic_segment(&e.name) == seg),
            };
            return Some(Subject::Endpoint(e));
        }
        None
    }

    fn write_snapshot(&self, buf: &mut Vec<u8>, subject: &Subject<'_>) {
        let mut o = Obj::new(buf);
        o.str("kind", "snapshot").bool("connected", self.connected);
        match subject {
            Subject::Events => {
                let mut p = Obj::new(o.key("pbx"));
                list(p.key("channels"), &self.sorted_channels(), write_channel);
                self.write_calls(p.key("calls"));
                list(p.key("queues"), &self.sorted_queues(), write_queue);
                list(p.key("endpoints"), &self.sorted_endpoints(), |out, e| {
                    write_endpoint(out, e, &self.channels);
                });
                p.end();
            }
            Subject::Calls => self.write_calls(o.key("calls")),
            Subject::Call(c) => match c {
                Some(c) => write_call(o.key("call"), c, &self.channels),
                None => {
                    o.null("call");
                }
            },
            Subject::Queue(q) => match q {
                Some(q) => write_queue(o.key("queue"), q),
                None => {
                    o.null("queue");
                }
            },
            Subject::Endpoint(e) => match e {
                Some(e) => write_endpoint(o.key("endpoint"), e, &self.channels),
                None => {
                    o.null("endpoint");
                }
            },
        }
        o.end();
    }

    /// Only announced calls are listed (a call seen during a resync appears with
    /// its `started`).
    fn write_calls(&self, out: &mut Vec<u8>) {
        list(out, &self.sorted_calls(), |out, c| {
            write_call(out, c, &self.channels);
        });
    }

    fn sorted_channels(&self) -> Vec<&Channel> {
        let mut v: Vec<&Channel> = self.channels.values().collect();
        v.sort_by(|a, b| (a.created_ms, &a.uniqueid).cmp(&(b.created_ms, &b.uniqueid)));
        v
    }

    fn sorted_calls(&self) -> Vec<&Call> {
        let mut v: Vec<&Call> = self.calls.values().filter(|c| c.announced).collect();
        v.sort_by(|a, b| (a.started_ms, &a.linkedid).cmp(&(b.started_ms, &b.linkedid)));
        v
    }

    fn sorted_queues(&self) -> Vec<&Queue> {
        let mut v: Vec<&Queue> = self.queues.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn sorted_endpoints(&self) -> Vec<&Endpoint> {
        let mut v: Vec<&Endpoint> = self.endpoints.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
