//! The shard's side of the AMI gateway and snapshots: a WebSocket's
//! `{"op":"action",...}` and `POST /ami/action` go to the router (which hands them to
//! the AMI thread) with the caller's token subject and grants; the result comes back
//! for that connection alone. Which subscription patterns start with a snapshot of the
//! PBX state is decided here too.

use bytes::Bytes;
use switchboard_proto::http1::Request;
use switchboard_proto::topic::Pattern;

use super::conn::Phase;
use super::{Core, ToRouter};
use crate::ami::NAMESPACE;
use crate::ami::gateway::AmiGrants;
use crate::pubsub::link::{AmiRequest, ConnRef};

/// The gateway's HTTP resource.
pub const ACTION_PATH: &str = "/ami/action";

/// Whether a pattern is answered with a snapshot of the PBX state: a topic in the
/// `ami.` namespace, or a subtree of `ami` or below it.
pub fn wants_snapshot(pattern: Pattern<'_>) -> bool {
    let in_namespace = |name: &str| {
        name.strip_prefix(NAMESPACE)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    match pattern {
        Pattern::Exact(t) => t.len() > NAMESPACE.len() && in_namespace(t),
        Pattern::Subtree(p) => in_namespace(p),
    }
}

/// A result written by the shard itself (the request never reached the gateway).
fn local_result(out: &mut Vec<u8>, code: &str, error: &str) {
    use switchboard_proto::envelope::write_json_string;
    out.extend_from_slice(br#"{"op":"result","ok":false,"code":"#);
    write_json_string(out, code);
    out.extend_from_slice(br#","error":"#);
    write_json_string(out, error);
    out.push(b'}');
}

impl Core {
    /// `{"op":"action",...}` on a WebSocket: to the gateway with the connection's grants.
    pub(super) fn ws_action(&mut self, slot: u32, payload: &[u8]) {
        let (user, grants) = self.ws_caller(slot);
        self.send_action(slot, user, grants, payload);
    }

    /// `POST /ami/action`: the body is one action object; answered with its result.
    pub(super) fn ami_action_request(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
        body: &[u8],
    ) -> usize {
        if !self.post_allowed(slot, req) {
            return self.skip_body(slot, req);
        }
        let Some((user, grants)) = self.action_caller(slot, req) else {
            return self.skip_body(slot, req);
        };
        self.read_body(
            slot,
            req,
            body,
            super::conn::BodyFor::AmiAction(Box::new((user, grants))),
        )
    }

    /// Hands a complete action to the router; an HTTP caller waits (input parked) for
    /// the result, a WebSocket reads on.
    pub(super) fn send_action(
        &mut self,
        slot: u32,
        user: Box<str>,
        grants: Option<AmiGrants>,
        body: &[u8],
    ) {
        let http = self.conns.slot_mut(slot).phase == Phase::Http;
        if !self.settings.ami {
            let mut out = Vec::new();
            local_result(&mut out, "unavailable", "no PBX is configured (--ami)");
            return self.action_answer(slot, http, 503, &out);
        }
        let conn = self.conns.slot_mut(slot).conn_ref(slot);
        let request = Box::new(AmiRequest {
            conn,
            user,
            grants,
            body: Bytes::copy_from_slice(body),
        });
        if !self.offer_router(ToRouter::AmiAction(request)) {
            let mut out = Vec::new();
            local_result(&mut out, "busy", "the engine is busy, retry");
            return self.action_answer(slot, http, 503, &out);
        }
        if http {
            // Reuses the publish wait: input parked until the router answers.
            self.set_phase(slot, Phase::Publishing);
        }
    }

    /// A result from the gateway, for `conn` if it is still there.
    pub(super) fn ami_result(&mut self, conn: ConnRef, status: u16, body: Bytes) {
        let Some(c) = self.conns.get(conn.slot, conn.generation) else {
            return;
        };
        match c.phase {
            Phase::Ws => self.ws_text(conn.slot, &body),
            Phase::Publishing => {
                self.set_phase(conn.slot, Phase::Http);
                self.action_answer(conn.slot, true, status, &body);
                self.resume_input(conn.slot);
            }
            _ => {}
        }
    }

    fn action_answer(&mut self, slot: u32, http: bool, status: u16, body: &[u8]) {
        if http {
            self.respond(slot, status, &[], Some("application/json"), body);
        } else {
            self.ws_text(slot, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::topic::parse_pattern;

    #[test]
    fn snapshots_are_for_the_ami_namespace_only() {
        for yes in [
            "ami.calls",
            "ami.events",
            "ami.queue.sales",
            "ami.*",
            "ami.queue.*",
            "ami.call.1795249032.12",
        ] {
            assert!(wants_snapshot(parse_pattern(yes).unwrap()), "{yes}");
        }
        for no in ["ami", "amis.x", "chat.ami", "chat.*", "amiga.*", "x.ami.*"] {
            assert!(!wants_snapshot(parse_pattern(no).unwrap()), "{no}");
        }
    }
}
