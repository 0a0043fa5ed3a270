//! Access control on a shard: the pure checks of [`crate::auth`] turned into answers
//! (`401` + `WWW-Authenticate`, `403`, the WebSocket `forbidden` error op), CORS headers
//! and preflights, a metrics counter and a debug log line per refusal (never a token).
//!
//! Under `--auth required` each WebSocket and SSE connection keeps its verified claims
//! for later `subscribe` ops in a side table indexed by slot (8 bytes per slot, in pages
//! of 1024 allocated on first use, plus one boxed `Claims` per connection), so `Conn`
//! does not grow; an ordered set of `(exp, slot)` (one entry per such connection) lets
//! the shard's tick close the connection whose token expires first without scanning.
//! With `--auth off` the table and the set are never allocated.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_proto::control;
use switchboard_proto::http1::Request;
use switchboard_proto::ws::close;

use super::Core;
use super::conn::Phase;
use crate::ami::gateway::AmiGrants;
use crate::auth::{AuthError, Claims, LEEWAY_SECS, RequestParts};

/// Slots per page of the claims table (as the connection table's pages).
const PAGE_SLOTS: usize = 1024;
/// `WWW-Authenticate` of a `401` for a request without a token (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"switchboard\"";
/// `WWW-Authenticate` of a `401` for a token that is not valid (RFC 6750 §3.1).
const CHALLENGE_INVALID: &str = "Bearer realm=\"switchboard\", error=\"invalid_token\"";
/// The request headers a page from an allowed origin may send (preflight answer).
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Seconds a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";
/// The close reason (WebSocket 1008) of a connection whose token expired.
pub const TOKEN_EXPIRED: &str = "token expired";

/// A page of the claims table: the claims of `PAGE_SLOTS` consecutive slots.
type ClaimsPage = Box<[Option<Box<Claims>>]>;

/// The claims, expiries and CORS origins of a shard's connections.
pub struct Access {
    /// Claims of each WebSocket and SSE connection authorized under `--auth required`,
    /// by slot; empty (no pages) with `--auth off`.
    claims: Vec<Option<ClaimsPage>>,
    /// `(exp, slot)` of every connection in `claims`: the first expires first.
    expiries: BTreeSet<(u64, u32)>,
    /// The `Origin` (allowed) of the request being answered on a slot, for the CORS
    /// headers of its answer, which may come later (SSE head, held poll, publish ack).
    cors: HashMap<u32, Box<str>>,
}

impl Access {
    /// A table for `slots` connections; allocates nothing unless `required`.
    pub fn new(slots: u32, required: bool) -> Access {
        let pages = if required {
            (slots as usize).div_ceil(PAGE_SLOTS)
        } else {
            0
        };
        Access {
            claims: (0..pages).map(|_| None).collect(),
            expiries: BTreeSet::new(),
            cors: HashMap::new(),
        }
    }

    /// Keeps `claims` for `slot` (replacing any it had).
    fn keep(&mut self, slot: u32, claims: Claims) {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        let Some(page) = self.claims.get_mut(page) else {
            return; // auth off: nothing is kept
        };
        let page = page.get_or_insert_with(|| (0..PAGE_SLOTS).map(|_| None).collect());
        if let Some(old) = page[i].take() {
            self.expiries.remove(&(old.exp, slot));
        }
        self.expiries.insert((claims.exp, slot));
        page[i] = Some(Box::new(claims));
    }

    /// The claims `slot` was authorized with, if any.
    pub fn claims(&self, slot: u32) -> Option<&Claims> {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        self.claims.get(page)?.as_ref()?[i].as_deref()
    }

    /// Forgets everything about a connection that leaves.
    pub fn forget(&mut self, slot: u32) {
        let (page, i) = (slot as usize / PAGE_SLOTS, slot as usize % PAGE_SLOTS);
        if let Some(Some(page)) = self.claims.get_mut(page)
            && let Some(old) = page[i].take()
        {
            self.expiries.remove(&(old.exp, slot));
        }
        self.clear_cors(slot);
    }

    /// The slot whose token expired first, if one has at `now` (seconds since the Unix
    /// epoch; the verifier's leeway is granted here too), taken out of the expiry set.
    fn pop_expired(&mut self, now: u64) -> Option<u32> {
        let &(exp, slot) = self.expiries.first()?;
        if now <= exp.saturating_add(LEEWAY_SECS) {
            return None;
        }
        self.expiries.pop_first();
        Some(slot)
    }

    /// The allowed origin of the request being answered on `slot`.
    pub fn cors(&self, slot: u32) -> Option<&str> {
        if self.cors.is_empty() {
            return None;
        }
        self.cors.get(&slot).map(|o| &**o)
    }

    pub fn clear_cors(&mut self, slot: u32) {
        if !self.cors.is_empty() {
            self.cors.remove(&slot);
        }
    }
}

/// The CORS headers of an answer to a request from the allowed `origin`: the origin
/// itself (never `*`, which browsers refuse with credentials), credentials allowed
/// (cookies carry tokens), and `Vary: Origin` for caches.
pub fn cors_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]
}

/// Seconds since the Unix epoch (what `exp` and `nbf` count).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a request's credentials are.
fn credentials<'b>(req: &Request<'_, 'b>) -> RequestParts<'b> {
    RequestParts {
        authorization: req.header("authorization"),
        cookie: req.header("cookie"),
        query: req.query,
    }
}

/// An action's caller as the gateway sees it: the token's subject and `ami` grants.
fn caller_of(claims: &Claims) -> (Box<str>, Option<AmiGrants>) {
    (
        claims.sub.as_deref().unwrap_or_default().into(),
        claims.ami.clone(),
    )
}

/// Whether a request is a CORS preflight (Fetch: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`); any other `OPTIONS` is an ordinary request.
pub fn is_preflight(req: &Request<'_, '_>) -> bool {
    req.method == "OPTIONS"
        && req.header("origin").is_some()
        && req.header("access-control-request-method").is_some()
}

impl Core {
    /// The origin check of `/ws`, `/sse`, `/poll` and `/publish/...`: a browser's
    /// `Origin` outside `--allowed-origins` is answered `403`; false then. An allowed
    /// one is remembered for the CORS headers of the answer when `cors`.
    pub(super) fn origin_checked(&mut self, slot: u32, req: &Request<'_, '_>, cors: bool) -> bool {
        let origin = req.header("origin");
        if !self.settings.auth.origin_allowed(origin) {
            self.metrics.origin_rejected.fetch_add(1, Relaxed);
            tracing::debug!(slot, path = req.path, "403: origin not allowed");
            self.respond_text(slot, 403, "origin not allowed");
            return false;
        }
        if cors && let Some(origin) = origin.and_then(|o| std::str::from_utf8(o).ok()) {
            self.access.cors.insert(slot, origin.into());
        }
        true
    }

    /// Answers a CORS preflight for a resource taking `methods`: `204` with the allow
    /// headers for an allowed origin, `403` for another.
    pub(super) fn preflight(&mut self, slot: u32, req: &Request<'_, '_>, methods: &str) {
        if !self.origin_checked(slot, req, true) {
            return;
        }
        self.respond(
            slot,
            204,
            &[
                ("Access-Control-Allow-Methods", methods),
                ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
                ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_SECS),
            ],
            None,
            b"",
        );
    }

    /// Authorizes a subscriber (`/ws`, `/sse`, `/poll`) for every one of `patterns`;
    /// refuses it otherwise (`401`/`403`, nothing subscribed) and returns false. With
    /// `keep` (a WebSocket or an event stream) the claims stay with the connection for
    /// its later ops and its expiry.
    pub(super) fn subscriber_authorized(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
        patterns: &[&str],
        keep: bool,
    ) -> bool {
        if !self.settings.auth.required {
            return true;
        }
        let verified = self
            .settings
            .auth
            .authorize_subscribe(&credentials(req), &[], unix_now());
        let claims = match verified {
            Ok(Some(claims)) => claims,
            Ok(None) => return true,
            Err(e) => {
                self.refuse(slot, e, req.path);
                return false;
            }
        };
        if let Some(p) = patterns.iter().find(|p| !claims.may_subscribe(p)) {
            self.refuse(slot, AuthError::Forbidden, p);
            return false;
        }
        if keep {
            self.access.keep(slot, claims);
        }
        true
    }

    /// Authorizes a publish to `topic` (a token granting it, or the publisher secret);
    /// refuses it otherwise (`401`/`403`) and returns false.
    pub(super) fn publisher_authorized(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
        topic: &str,
    ) -> bool {
        if !self.settings.auth.required {
            return true;
        }
        let verified = self
            .settings
            .auth
            .authorize_publish(&credentials(req), topic, unix_now());
        match verified {
            Ok(_) => true,
            Err(e) => {
                self.refuse(slot, e, topic);
                false
            }
        }
    }

    /// Who is calling `POST /ami/action`: the token's subject and `ami` grants under
    /// `--auth required` (a missing or invalid token is refused with `401`: `None`);
    /// with auth off nobody has grants, and the gateway refuses every action.
    pub(super) fn action_caller(
        &mut self,
        slot: u32,
        req: &Request<'_, '_>,
    ) -> Option<(Box<str>, Option<AmiGrants>)> {
        let verified = self
            .settings
            .auth
            .authorize_subscribe(&credentials(req), &[], unix_now());
        match verified {
            Ok(None) => Some(("".into(), None)),
            Ok(Some(claims)) => Some(caller_of(&claims)),
            Err(e) => {
                self.refuse(slot, e, req.path);
                None
            }
        }
    }

    /// The subject and `ami` grants a WebSocket connection was authorized with.
    pub(super) fn ws_caller(&self, slot: u32) -> (Box<str>, Option<AmiGrants>) {
        self.access
            .claims(slot)
            .map_or_else(|| ("".into(), None), caller_of)
    }

    /// Answers an auth failure: `401` with a Bearer challenge, or `403` naming the
    /// topic or pattern (`what`) that is not granted. Counted and logged by reason.
    fn refuse(&mut self, slot: u32, e: AuthError, what: &str) {
        self.metrics.auth_failure(e);
        tracing::debug!(slot, reason = e.reason(), what, "auth refused");
        match e {
            AuthError::Forbidden => self.respond_text(slot, 403, &format!("forbidden: {what}")),
            AuthError::Missing => self.respond(
                slot,
                401,
                &[("WWW-Authenticate", CHALLENGE)],
                Some("text/plain; charset=utf-8"),
                format!("{e}\n").as_bytes(),
            ),
            _ => self.respond(
                slot,
                401,
                &[("WWW-Authenticate", CHALLENGE_INVALID)],
                Some("text/plain; charset=utf-8"),
                format!("{e}\n").as_bytes(),
            ),
        }
    }

    /// A WebSocket `subscribe` op under `--auth required`: if the connection's token
    /// does not grant one of `patterns`, answers `{"op":"error","error":"forbidden:
    /// <pattern>"}` (nothing of the op is subscribed) and returns true.
    pub(super) fn op_forbidden(&mut self, slot: u32, patterns: &[String]) -> bool {
        if !self.settings.auth.required {
            return false;
        }
        let claims = self.access.claims(slot);
        let Some(p) = patterns
            .iter()
            .find(|p| !claims.is_some_and(|c| c.may_subscribe(p)))
        else {
            return false;
        };
        self.metrics.auth_failure(AuthError::Forbidden);
        tracing::debug!(slot, pattern = %p, "subscribe op refused: not granted");
        let mut out = Vec::new();
        control::write_error(&mut out, &format!("forbidden: {p}"));
        self.ws_text(slot, &out);
        true
    }

    /// On each tick: closes the connections whose token has expired (WebSocket 1008
    /// "token expired", SSE end of stream), first to expire first.
    pub(super) fn expire_tokens(&mut self) {
        if self.access.expiries.is_empty() {
            return;
        }
        let now = unix_now();
        while let Some(slot) = self.access.pop_expired(now) {
            let phase = self.conns.slot_mut(slot).phase;
            if !self.conns.slot_mut(slot).is_live() {
                continue;
            }
            self.metrics.token_expiry_closes.fetch_add(1, Relaxed);
            tracing::debug!(slot, "token expired: closing the connection");
            if phase == Phase::Ws {
                self.ws_close(slot, close::POLICY, TOKEN_EXPIRED);
            } else {
                self.close_after_flush(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: None,
            exp,
            subscribe: Vec::new(),
            publish: Vec::new(),
            ami: None,
        }
    }

    #[test]
    fn a_slot_of_the_claims_table_is_one_pointer() {
        assert_eq!(size_of::<Option<Box<Claims>>>(), 8);
    }

    #[test]
    fn nothing_is_allocated_or_kept_with_auth_off() {
        let mut a = Access::new(5000, false);
        assert!(a.claims.is_empty());
        a.keep(7, claims(100));
        assert!(a.claims(7).is_none());
        assert!(a.expiries.is_empty());
    }

    #[test]
    fn claims_are_kept_per_slot_and_forgotten() {
        let mut a = Access::new(5000, true);
        assert!(a.claims.iter().all(Option::is_none), "pages on first use");
        a.keep(4999, claims(100));
        assert_eq!(a.claims(4999).map(|c| c.exp), Some(100));
        assert!(a.claims(4998).is_none());
        assert!(a.claims(99_999).is_none(), "beyond the table");
        assert_eq!(a.claims.iter().filter(|p| p.is_some()).count(), 1);
        a.keep(4999, claims(200));
        assert_eq!(a.expiries.len(), 1, "replaced, not added");
        a.forget(4999);
        assert!(a.claims(4999).is_none());
        assert!(a.expiries.is_empty());
        a.forget(4999); // twice is harmless
    }

    #[test]
    fn expiries_come_out_in_order_after_the_leeway() {
        let mut a = Access::new(100, true);
        a.keep(1, claims(1_000));
        a.keep(2, claims(500));
        a.keep(3, claims(2_000));
        a.forget(3);
        assert_eq!(a.pop_expired(500 + LEEWAY_SECS), None, "within the leeway");
        assert_eq!(a.pop_expired(1_000 + LEEWAY_SECS + 1), Some(2));
        assert_eq!(a.pop_expired(1_000 + LEEWAY_SECS + 1), Some(1));
        assert_eq!(a.pop_expired(u64::MAX), None, "forgotten ones never expire");
    }

    #[test]
    fn cors_origins_are_per_slot() {
        let mut a = Access::new(10, false);
        assert_eq!(a.cors(1), None);
        a.cors.insert(1, "https://a.example".into());
        assert_eq!(a.cors(1), Some("https://a.example"));
        assert_eq!(a.cors(2), None);
        a.forget(1);
        assert_eq!(a.cors(1), None);
    }
}
