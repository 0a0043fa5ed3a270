//! The AMI action gateway: the only way a browser acts on the PBX. Pure and
//! sans-I/O, generic over the engine's handle of the requesting connection.
//!
//! A request (`{"op":"action","action":"Hangup","ref":"r1","channel":".."}`, over
//! WebSocket or as the body of `POST /ami/action`) is checked against the token's
//! `ami` claim ([`AmiGrants`]) and the PBX's live channels ([`PbxView`]); the AMI
//! action is then built on the server from a whitelist ([`Action`]) with an
//! `ActionID` of `sb-g-<n>`, and the PBX's answer (a response, an event list, an
//! `OriginateResponse`) becomes one JSON result for that caller alone ([`Done`]).
//! Nothing a client sends reaches the PBX as a header name, an action name or a
//! value with a control byte.
//!
//! - `grants`: the whitelist and the `ami` claim;
//! - `request`: reading and validating requests, and the AMI actions written;
//! - `reply`: the JSON results;
//! - `limit`: the per-user token buckets.

mod grants;
mod limit;
mod reply;
mod request;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use switchboard_proto::ami::{Message, decode_text};

pub use grants::{ANY, Action, ActionSet, AmiGrants, MAX_GRANT_NAME_BYTES, MAX_GRANT_NAMES, Names};
pub use limit::MAX_BUCKETS;
pub use request::{
    HANGUP_CAUSE, MAX_DIGITS, MAX_PENALTY, MAX_REF_BYTES, MAX_REQUEST_BYTES, MAX_REQUEST_KEYS,
    MAX_VALUE_BYTES, Refusal,
};

use super::{Millis, PbxView};
use limit::RateLimiter;
use request::Request;

/// Every gateway `ActionID` is this prefix and a decimal counter from 1.
pub const ACTION_ID_PREFIX: &str = "sb-g-";
/// How long past its ring timeout an Originate waits for its `OriginateResponse`.
pub const ORIGINATE_GRACE: Duration = Duration::from_secs(5);
/// Most list items (QueueStatus) one request may collect; past it the result is an
/// error.
pub const MAX_LIST_ITEMS: usize = 10_000;
/// Most bytes of list items (as JSON) one request may collect.
pub const MAX_LIST_BYTES: usize = 1 << 20;
/// Most bytes of list items all pending requests may hold together.
pub const MAX_COLLECTED_BYTES: usize = 16 << 20;

/// Result code of a success.
pub const CODE_OK: &str = "ok";
/// The token does not allow it: action, endpoint, channel, queue, or a key that is
/// never accepted.
pub const CODE_FORBIDDEN: &str = "forbidden";
/// The request is malformed: JSON, types, formats, unknown keys, unknown targets.
pub const CODE_INVALID: &str = "invalid";
/// The user's token bucket is empty.
pub const CODE_RATE_LIMITED: &str = "rate_limited";
/// `max_pending` actions are in flight.
pub const CODE_BUSY: &str = "busy";
/// The PBX did not answer in time.
pub const CODE_TIMEOUT: &str = "timeout";
/// The PBX is not connected, or the link went down before it answered.
pub const CODE_UNAVAILABLE: &str = "unavailable";
/// The PBX answered with an error (or the call of an Originate failed).
pub const CODE_PBX_ERROR: &str = "pbx_error";

/// What the gateway is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// The dialplan context an Originate dials the number in.
    pub originate_context: String,
    /// The context of Redirect and Atxfer.
    pub transfer_context: String,
    /// Originate's `CallerID` (shown on the user's phone); the number when `None`.
    pub caller_id: Option<String>,
    /// How long the user's endpoint rings on Originate (`Timeout`).
    pub ring_timeout: Duration,
    /// Where MixMonitor writes (a directory on the PBX).
    pub record_dir: String,
    /// How long any other action waits for its answer.
    pub action_timeout: Duration,
    /// Per-user refill rate of the token bucket.
    pub rate_per_sec: f64,
    /// Per-user bucket size.
    pub burst: u32,
    /// Most actions in flight at once.
    pub max_pending: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            originate_context: "from-internal".into(),
            transfer_context: "from-internal".into(),
            caller_id: None,
            ring_timeout: Duration::from_secs(30),
            record_dir: "/var/spool/asterisk/monitor".into(),
            action_timeout: Duration::from_secs(10),
            rate_per_sec: 2.0,
            burst: 10,
            max_pending: 256,
        }
    }
}

/// Who sends a request: the engine's handle of its connection, the token's `sub`
/// (the rate-limit key; tokens without one share the key `""`), and its grants
/// (`None`: no `ami` claim, nothing granted).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a, C> {
    pub handle: C,
    pub user: &'a str,
    pub grants: Option<&'a AmiGrants>,
}

/// A finished request: the JSON result to send to `caller`, and no one else.
#[derive(Clone, PartialEq, Eq)]
pub struct Done<C> {
    pub caller: C,
    /// The action, when the request named a whitelisted one.
    pub action: Option<Action>,
    pub ok: bool,
    /// [`CODE_OK`] or one of the failure codes (`CODE_*`), for metrics.
    pub code: &'static str,
    /// `{"op":"result",...}` (see the crate's protocol notes).
    pub result: Vec<u8>,
}

impl<C: std::fmt::Debug> std::fmt::Debug for Done<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("caller", &self.caller)
            .field("action", &self.action)
            .field("ok", &self.ok)
            .field("code", &self.code)
            .field("result", &String::from_utf8_lossy(&self.result))
            .finish()
    }
}

/// A request sent to the PBX and not answered yet.
#[derive(Debug)]
struct Pending<C> {
    caller: C,
    action: Action,
    reference: Option<String>,
    deadline: Millis,
    /// The response as a JSON object, kept while an Originate waits for its
    /// `OriginateResponse` or a list for its items.
    response: Option<Vec<u8>>,
    /// A list's items so far: JSON objects separated by commas.
    items: Vec<u8>,
    item_count: usize,
    /// QueueStatus: the queues whose items the caller may see (`None`: every one).
    queues: Option<Names>,
}

/// The gateway: validation, rate limits and the requests in flight.
#[derive(Debug)]
pub struct Gateway<C> {
    settings: GatewaySettings,
    next_id: u64,
    pending: HashMap<u64, Pending<C>>,
    deadlines: BTreeSet<(Millis, u64)>,
    limiter: RateLimiter,
    /// Bytes in every pending request's `items`.
    collected: usize,
}

impl<C: Copy> Gateway<C> {
    pub fn new(settings: GatewaySettings) -> Self {
        Gateway {
            limiter: RateLimiter::new(settings.rate_per_sec, settings.burst),
            settings,
            next_id: 1,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            collected: 0,
        }
    }

    /// Handles one request (the raw JSON bytes a client sent). If it is allowed, the
    /// AMI action is appended to `out` (bytes for the PBX), remembered under its
    /// `ActionID`, and its action returned; otherwise the result to send back at
    /// once. Checks, in order: JSON, `op`, `ref`, `action` in the whitelist, the
    /// user's rate, the grants and every parameter, the link (`connected`), the
    /// number in flight. Every request that names a whitelisted action takes a token
    /// from the user's bucket, refused or not.
    pub fn submit(
        &mut self,
        caller: Caller<'_, C>,
        request: &[u8],
        pbx: &dyn PbxView,
        connected: bool,
        now: Millis,
        out: &mut Vec<u8>,
    ) -> Result<Action, Done<C>> {
        let handle = caller.handle;
        let req = Request::read(request).map_err(|r| refused(handle, None, None, r))?;
        let action = req
            .action()
            .map_err(|r| refused(handle, Some(&req), None, r))?;
        let refuse = |r: Refusal| refused(handle, Some(&req), Some(action), r);
        if !self.limiter.allow(caller.user, now) {
            return Err(refuse(Refusal::new(
                CODE_RATE_LIMITED,
                format!(
                    "too many actions: at most {} a second, {} at once",
                    self.settings.rate_per_sec, self.settings.burst
                ),
            )));
        }
        let grants = caller.grants.ok_or_else(|| {
            refuse(Refusal::new(
                CODE_FORBIDDEN,
                "your token grants no AMI actions",
            ))
        })?;
        let plan = req.plan(action, grants, pbx).map_err(refuse)?;
        if !connected {
            return Err(refuse(Refusal::new(
                CODE_UNAVAILABLE,
                "the PBX is not connected",
            )));
        }
        if self.pending.len() >= self.settings.max_pending {
            return Err(refuse(Refusal::new(
                CODE_BUSY,
                "too many actions in flight, try again",
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        plan.write(&self.settings, &format!("{ACTION_ID_PREFIX}{id}"), out);
        let timeout = match action {
            Action::Originate => self.settings.ring_timeout.saturating_add(ORIGINATE_GRACE),
            _ => self.settings.action_timeout,
        };
        let deadline = now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let queues = (action == Action::QueueStatus && !grants.queues.is_any())
            .then(|| grants.queues.clone());
        self.pending.insert(
            id,
            Pending {
                caller: handle,
                action,
                reference: req.reference.clone(),
                deadline,
                response: None,
                items: Vec::new(),
                item_count: 0,
                queues,
            },
        );
        self.deadlines.insert((deadline, id));
        Ok(action)
    }

    /// A message from the PBX whose `ActionID` starts with `sb-g-`: a response, a
    /// list item, a list's `...Complete` event or an `OriginateResponse`. Returns the
    /// result when this message finishes a request. Messages of unknown (finished,
    /// timed out) requests are ignored.
    pub fn on_message(&mut self, msg: &Message<'_>, _now: Millis) -> Option<Done<C>> {
        let id = parse_action_id(msg.action_id()?)?;
        let p = self.pending.get_mut(&id)?;
        if let Some(status) = msg.response() {
            let waits_on = matches!(p.action, Action::Originate | Action::QueueStatus);
            if !status.eq_ignore_ascii_case(b"Success") {
                let error = msg.get_str("Message").map_or_else(
                    || format!("the PBX answered {}", decode_text(status)),
                    |m| m.into_owned(),
                );
                return self.finish_response_error(id, msg, &error);
            }
            if !waits_on {
                return self.finish(id, |out, _| {
                    reply::member_message(out, "response", msg);
                });
            }
            if p.response.is_none() {
                let mut json = Vec::new();
                reply::write_message(&mut json, msg);
                p.response = Some(json);
            }
            return None;
        }
        let event = msg.event()?;
        match p.action {
            Action::Originate if event.eq_ignore_ascii_case(b"OriginateResponse") => {
                self.finish_originate(id, msg)
            }
            Action::QueueStatus => {
                let complete = msg
                    .get("EventList")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"Complete"));
                if complete {
                    return self.finish(id, |out, p| {
                        out.extend_from_slice(br#","events":["#);
                        out.extend_from_slice(&p.items);
                        out.push(b']');
                    });
                }
                self.collect(id, msg)
            }
            _ => None,
        }
    }

    /// Requests whose deadline is at or before `now` finish with `timeout`.
    pub fn expire(&mut self, now: Millis) -> Vec<Done<C>> {
        let mut done = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first()
            && deadline <= now
        {
            self.deadlines.pop_first();
            if let Some(p) = self.take(id) {
                let error = match p.action {
                    Action::Originate => "the call was not set up in time",
                    _ => "the PBX did not answer in time",
                };
                done.push(failed(p, CODE_TIMEOUT, error));
            }
        }
        done
    }

    /// The PBX link went down: every pending request finishes with `unavailable`
    /// (in the order they were sent). Their `ActionID`s are never reused.
    pub fn fail_all(&mut self) -> Vec<Done<C>> {
        let mut ids: Vec<u64> = self.pending.keys().copied().collect();
        ids.sort_unstable();
        self.deadlines.clear();
        ids.into_iter()
            .filter_map(|id| self.take(id))
            .map(|p| failed(p, CODE_UNAVAILABLE, "the connection to the PBX was lost"))
            .collect()
    }

    /// Requests in flight.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The earliest deadline of a request in flight (when to call [`expire`](Self::expire)).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    /// Users with a rate-limit bucket.
    pub fn tracked_users(&self) -> usize {
        self.limiter.len()
    }

    /// Adds a list item to request `id`, if its queue is the caller's; a request that
    /// would collect too much fails.
    fn collect(&mut self, id: u64, msg: &Message<'_>) -> Option<Done<C>> {
        let p = self.pending.get_mut(&id)?;
        let visible = p.queues.as_ref().is_none_or(|q| {
            msg.get("Queue")
                .is_some_and(|name| q.contains(&decode_text(name)))
        });
        if !visible {
            return None;
        }
        let mut item = Vec::with_capacity(msg.raw().len() + 32);
        if p.item_count > 0 {
            item.push(b',');
        }
        reply::write_message(&mut item, msg);
        if p.item_count >= MAX_LIST_ITEMS
            || p.items.len() + item.len() > MAX_LIST_BYTES
            || self.collected + item.len() > MAX_COLLECTED_BYTES
        {
            let p = self.take(id)?;
            return Some(failed(
                p,
                CODE_PBX_ERROR,
                &format!(
                    "the list is too long (at most {MAX_LIST_ITEMS} items, {MAX_LIST_BYTES} bytes)"
                ),
            ));
        }
        p.items.extend_from_slice(&item);
        p.item_count += 1;
        self.collected += item.len();
        None
    }

    fn finish_originate(&mut self, id: u64, event: &Message<'_>) -> Option<Done<C>> {
        let success = event
            .get("Response")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"Success"));
        let reason = event
            .get_str("Reason")
            .and_then(|r| r.trim().parse::<u32>().ok());
        let p = self.take(id)?;
        let mut out = Vec::with_capacity(512);
        reply::begin(
            &mut out,
            p.reference.as_deref(),
            Some(p.action.name()),
            success,
        );
        let code = if success {
            CODE_OK
        } else {
            let error = format!(
                "the call failed: {}",
                reason.map_or("no reason given", originate_reason)
            );
            reply::failure(&mut out, CODE_PBX_ERROR, &error);
            CODE_PBX_ERROR
        };
        out.extend_from_slice(br#","reason":"#);
        match reason {
            Some(r) => out.extend_from_slice(r.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","response":"#);
        out.extend_from_slice(p.response.as_deref().unwrap_or(b"null"));
        reply::member_message(&mut out, "event", event);
        out.push(b'}');
        Some(Done {
            caller: p.caller,
            action: Some(p.action),
            ok: success,
            code,
            result: out,
        })
    }

    fn finish_response_error(
        &mut self,
        id: u64,
        msg: &Message<'_>,
        error: &str,
    ) -> Option<Done<C>> {
        let p = self.take(id)?;
        let mut out = Vec::with_capacity(256);
        reply::begin(
            &mut out,
            p.reference.as_deref(),
            Some(p.action.name()),
            false,
        );
        reply::failure(&mut out, CODE_PBX_ERROR, error);
        reply::member_message(&mut out, "response", msg);
        out.push(b'}');
        Some(Done {
            caller: p.caller,
            action: Some(p.action),
            ok: false,
            code: CODE_PBX_ERROR,
            result: out,
        })
    }

    /// A success: the head, `,"response":` (the one kept, or what `body` writes),
    /// then `body`, then the closing brace.
    fn finish(&mut self, id: u64, body: impl FnOnce(&mut Vec<u8>, &Pending<C>)) -> Option<Done<C>> {
        let p = self.take(id)?;
        let mut out = Vec::with_capacity(256 + p.items.len());
        reply::begin(
            &mut out,
            p.reference.as_deref(),
            Some(p.action.name()),
            true,
        );
        if let Some(response) = &p.response {
            out.extend_from_slice(br#","response":"#);
            out.extend_from_slice(response);
        } else if p.action == Action::QueueStatus {
            out.extend_from_slice(br#","response":null"#);
        }
        body(&mut out, &p);
        out.push(b'}');
        Some(Done {
            caller: p.caller,
            action: Some(p.action),
            ok: true,
            code: CODE_OK,
            result: out,
        })
    }

    /// Removes request `id` and its deadline, and releases what it collected.
    fn take(&mut self, id: u64) -> Option<Pending<C>> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        self.collected = self.collected.saturating_sub(p.items.len());
        Some(p)
    }
}

/// `sb-g-<n>` -> `n`.
fn parse_action_id(id: &[u8]) -> Option<u64> {
    let digits = id.strip_prefix(ACTION_ID_PREFIX.as_bytes())?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A refusal at submission.
fn refused<C>(caller: C, req: Option<&Request>, action: Option<Action>, r: Refusal) -> Done<C> {
    let label = req.and_then(|q| q.label.as_deref());
    let reference = req.and_then(|q| q.reference.as_deref());
    Done {
        caller,
        action,
        ok: false,
        code: r.code,
        result: reply::refusal(reference, label, r.code, &r.error),
    }
}

/// A pending request that failed without an answer to show.
fn failed<C>(p: Pending<C>, code: &'static str, error: &str) -> Done<C> {
    Done {
        caller: p.caller,
        action: Some(p.action),
        ok: false,
        code,
        result: reply::refusal(p.reference.as_deref(), Some(p.action.name()), code, error),
    }
}

/// The `Reason` of a failed `OriginateResponse` (the last control frame Asterisk
/// saw on the ringing channel), in words.
fn originate_reason(reason: u32) -> &'static str {
    match reason {
        0 => "no such endpoint or it is unavailable",
        1 => "hung up",
        3 => "not answered in time",
        5 => "busy",
        8 => "congestion",
        _ => "not answered",
    }
}
