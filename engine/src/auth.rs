//! Authentication and authorization as pure functions: JWT HS256 verification, the
//! topic grants a token carries, where a token is found in a request, the publisher
//! secret, and the origin allow-list. No I/O, no clock (callers pass `now`), no
//! state beyond the keys: the shards call in here and turn an [`AuthError`] into a
//! status, a metrics reason and a log line.
//!
//! A token is a compact JWS (RFC 7515) signed with HMAC-SHA-256 (`alg` exactly
//! `HS256`; `none` and every other algorithm are refused before the signature is
//! looked at). Its claims (RFC 7519): `exp` (required), `nbf` (optional), `sub`, and
//! the grants `subscribe` and `publish`: lists of topic patterns (PROTOCOL.md
//! "Topics": `a.b` exactly, `a.b.*` the subtree strictly below `a.b`) plus `*`, which
//! in a grant means every topic; and `ami`, what the holder may do through the AMI
//! action gateway ([`AmiGrants`]). Other claims are ignored.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use switchboard_proto::http1::query_pairs;
use switchboard_proto::topic::{Pattern, parse_pattern, validate_topic};

use crate::ami::gateway::AmiGrants;

/// Longest token accepted, in bytes (it travels in a header, a URL or a cookie).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash output size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Most patterns one grant list may hold.
pub const MAX_GRANTS: usize = 256;
/// The cookie a browser may carry its token in (EventSource cannot set headers).
pub const TOKEN_COOKIE: &str = "sb_token";
/// The query parameter a token may travel in (`/sse?topic=a&token=...`).
pub const TOKEN_PARAM: &str = "token";
/// The only `alg` accepted.
const ALG_HS256: &str = "HS256";
/// Length of an HMAC-SHA-256 tag.
const HS256_TAG_BYTES: usize = 32;
/// The message the publisher secret's check MACs (see [`PublisherSecret`]).
const PUBLISHER_SECRET_CONTEXT: &[u8] = b"switchboard publisher secret";

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not authorized. Each variant has its HTTP status
/// ([`AuthError::status`]) and its `reason` label in `/metrics` ([`AuthError::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token (Authorization: Bearer, ?token= or the sb_token cookie)")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm is not HS256")]
    WrongAlg,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token does not grant this topic")]
    Forbidden,
}

impl AuthError {
    /// Every variant, in the order of the `reason` labels in `/metrics`.
    pub const ALL: [AuthError; 7] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::WrongAlg,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::Forbidden,
    ];

    /// 401 when the caller is not authenticated, 403 when it is but lacks the grant.
    pub fn status(self) -> u16 {
        match self {
            AuthError::Forbidden => 403,
            _ => 401,
        }
    }

    /// The `reason` label of the auth-failure counter.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlg => "wrong_alg",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Forbidden => "forbidden",
        }
    }
}

// ---------------------------------------------------------------------------
// Grants

/// One pattern of a grant list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `*`: every topic.
    All,
    /// `a.b`: exactly that topic.
    Exact(String),
    /// `a.b.*`: every topic strictly below `a.b` (stored without the `.*`).
    Subtree(String),
}

impl Grant {
    /// Parses a grant: `*`, or a subscription pattern of PROTOCOL.md.
    pub fn parse(s: &str) -> Option<Grant> {
        if s == "*" {
            return Some(Grant::All);
        }
        Some(match parse_pattern(s).ok()? {
            Pattern::Exact(t) => Grant::Exact(t.to_owned()),
            Pattern::Subtree(p) => Grant::Subtree(p.to_owned()),
        })
    }

    /// Does this grant cover every topic `requested` can match?
    fn covers(&self, requested: Pattern<'_>) -> bool {
        match (self, requested) {
            (Grant::All, _) => true,
            (Grant::Exact(g), Pattern::Exact(t)) => g == t,
            // An exact grant never covers a subtree, however small.
            (Grant::Exact(_), Pattern::Subtree(_)) => false,
            (Grant::Subtree(g), Pattern::Exact(t)) => Pattern::Subtree(g).matches(t),
            // `a.b.*` is inside `a.*` and inside itself.
            (Grant::Subtree(g), Pattern::Subtree(p)) => p == g || Pattern::Subtree(g).matches(p),
        }
    }
}

fn covered(grants: &[Grant], requested: Pattern<'_>) -> bool {
    grants.iter().any(|g| g.covers(requested))
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, for logs.
    pub sub: Option<String>,
    /// `exp`, seconds since the Unix epoch (fractions dropped).
    pub exp: u64,
    pub subscribe: Vec<Grant>,
    pub publish: Vec<Grant>,
    /// `ami`: the AMI gateway grants; `None` without the claim (nothing granted).
    pub ami: Option<AmiGrants>,
}

impl Claims {
    /// May this token subscribe to `pattern` (a topic or `prefix.*`)? Only if every
    /// topic the pattern can match is granted: `chat.*` needs a grant of `chat.*`, a
    /// broader subtree such as `*`, never just some topics below `chat`. An invalid
    /// pattern is never allowed.
    pub fn may_subscribe(&self, pattern: &str) -> bool {
        parse_pattern(pattern).is_ok_and(|p| covered(&self.subscribe, p))
    }

    /// May this token publish to `topic` (a topic, never a pattern)?
    pub fn may_publish(&self, topic: &str) -> bool {
        validate_topic(topic).is_ok() && covered(&self.publish, Pattern::Exact(topic))
    }
}

// ---------------------------------------------------------------------------
// Verification

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    /// Critical extensions (RFC 7515 §4.1.11): none is understood, so any is refused.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    exp: Option<f64>,
    nbf: Option<f64>,
    sub: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    ami: Option<RawAmi>,
}

/// The `ami` claim as it is written: `{"actions":[..],"endpoints":[..],"queues":[..]}`.
#[derive(Deserialize)]
struct RawAmi {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    queues: Vec<String>,
}

/// Verifies HS256 tokens with one secret; cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { key: *** }")
    }
}

impl Verifier {
    /// A verifier for `secret` (the config checks its length; HMAC takes any key).
    pub fn new(secret: &[u8]) -> Verifier {
        Verifier {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch) and returns its claims.
    /// Checks, in order: size and shape, `alg`, signature (constant time), claims
    /// syntax, `exp`, `nbf`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = decode_b64(header_b64)?;
        let header: Header<'_> =
            serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        if header.alg != ALG_HS256 {
            return Err(AuthError::WrongAlg);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let sig = decode_b64(sig_b64)?;
        if sig.len() != HS256_TAG_BYTES {
            return Err(AuthError::BadSignature);
        }
        let mut mac = self.keyed.clone();
        mac.update(header_b64.as_bytes());
        mac.update(b".");
        mac.update(payload_b64.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;

        let payload = decode_b64(payload_b64)?;
        let raw: RawClaims = serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;
        let exp = numeric_date(raw.exp.ok_or(AuthError::Malformed)?)?;
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = raw.nbf
            && now.saturating_add(LEEWAY_SECS) < numeric_date(nbf)?
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(Claims {
            sub: raw.sub,
            exp,
            subscribe: grants(&raw.subscribe)?,
            publish: grants(&raw.publish)?,
            ami: raw
                .ami
                .map(|a| {
                    AmiGrants::from_claim(&a.actions, &a.endpoints, &a.queues)
                        .ok_or(AuthError::Malformed)
                })
                .transpose()?,
        })
    }
}

/// base64url without padding (RFC 7515 §2); anything else is malformed.
fn decode_b64(s: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Malformed)
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional, never negative here.
fn numeric_date(v: f64) -> Result<u64, AuthError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v as u64)
    } else {
        Err(AuthError::Malformed)
    }
}

fn grants(list: &[String]) -> Result<Vec<Grant>, AuthError> {
    if list.len() > MAX_GRANTS {
        return Err(AuthError::Malformed);
    }
    list.iter()
        .map(|s| Grant::parse(s).ok_or(AuthError::Malformed))
        .collect()
}

// ---------------------------------------------------------------------------
// Publisher secret

/// The shared secret a publisher may present as `Authorization: Bearer <secret>`
/// instead of a token. Compared in constant time, length included: the presented
/// value is used as an HMAC key and its tag checked against the secret's.
#[derive(Clone)]
pub struct PublisherSecret {
    tag: [u8; HS256_TAG_BYTES],
}

impl std::fmt::Debug for PublisherSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublisherSecret(***)")
    }
}

impl PublisherSecret {
    pub fn new(secret: &[u8]) -> PublisherSecret {
        PublisherSecret {
            tag: Self::keyed(secret).finalize().into_bytes().into(),
        }
    }

    fn keyed(key: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        mac.update(PUBLISHER_SECRET_CONTEXT);
        mac
    }

    /// Is `presented` the secret?
    pub fn matches(&self, presented: &[u8]) -> bool {
        Self::keyed(presented).verify_slice(&self.tag).is_ok()
    }
}

// ---------------------------------------------------------------------------
// Finding the token

/// Where a request's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    Query,
    Cookie,
}

/// The credential parts of a request, as the shard has them after parsing the head.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParts<'a> {
    /// The `Authorization` header's value.
    pub authorization: Option<&'a [u8]>,
    /// The `Cookie` header's value.
    pub cookie: Option<&'a [u8]>,
    /// The query string, without the `?`.
    pub query: &'a str,
}

/// The credential of `Authorization: Bearer <credential>` (scheme case-insensitive,
/// RFC 6750 §2.1). `None` for another scheme or an empty credential.
pub fn bearer(authorization: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim_start();
    (scheme.eq_ignore_ascii_case("Bearer") && !credential.is_empty()).then_some(credential)
}

/// The first non-empty `token` query parameter, percent-decoded.
pub fn token_from_query(query: &str) -> Option<Cow<'_, str>> {
    query_pairs(query)
        .filter_map(Result::ok)
        .find(|(k, v)| k == TOKEN_PARAM && !v.is_empty())
        .map(|(_, v)| v)
}

/// The value of the [`TOKEN_COOKIE`] cookie in a `Cookie` header (`a=1; sb_token=...`),
/// surrounding double quotes removed (RFC 6265 §4.1.1).
pub fn token_from_cookie(cookie: &[u8]) -> Option<&str> {
    let cookie = std::str::from_utf8(cookie).ok()?;
    cookie.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (name.trim() == TOKEN_COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The request's token and where it came from: the `Authorization: Bearer` header
/// first, then the `token` query parameter, then the cookie.
pub fn find_token<'a>(parts: &RequestParts<'a>) -> Result<(Cow<'a, str>, TokenSource), AuthError> {
    if let Some(t) = parts.authorization.and_then(bearer) {
        return Ok((Cow::Borrowed(t), TokenSource::Bearer));
    }
    if let Some(t) = token_from_query(parts.query) {
        return Ok((t, TokenSource::Query));
    }
    if let Some(t) = parts.cookie.and_then(token_from_cookie) {
        return Ok((Cow::Borrowed(t), TokenSource::Cookie));
    }
    Err(AuthError::Missing)
}

// ---------------------------------------------------------------------------
// Origins

/// One entry of `--allowed-origins`: `*`, or an origin `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Any,
    Exact(Origin),
}

/// A normalized origin (RFC 6454): lowercase scheme and host, explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, query or user info). The port defaults
    /// from the scheme (80 for http/ws, 443 for https/wss), so `https://a.com` and
    /// `https://a.com:443` are the same origin.
    pub fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            || rest.is_empty()
            || rest.contains(['/', '?', '#', '@'])
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        // An IPv6 literal keeps its brackets; the port follows the last ':' after them.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => match scheme.as_str() {
                "http" | "ws" => 80,
                "https" | "wss" => 443,
                _ => return None,
            },
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b))
        {
            return None;
        }
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Parses one `--allowed-origins` entry (the config's value parser).
pub fn parse_origin_rule(s: &str) -> Result<OriginRule, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(OriginRule::Any);
    }
    Origin::parse(s).map(OriginRule::Exact).ok_or_else(|| {
        format!(
            "invalid origin {s:?} (expected scheme://host[:port], e.g. https://example.com, or *)"
        )
    })
}

/// The origins browsers may connect from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    any: bool,
    origins: Vec<Origin>,
}

impl AllowList {
    pub fn new(rules: &[OriginRule]) -> AllowList {
        let mut list = AllowList {
            any: false,
            origins: Vec::new(),
        };
        for rule in rules {
            match rule {
                OriginRule::Any => list.any = true,
                OriginRule::Exact(o) => list.origins.push(o.clone()),
            }
        }
        list
    }
}

/// May a request with this `Origin` header proceed? No header means a non-browser
/// client, which is allowed; otherwise the origin must be in the list (exact scheme,
/// host case-insensitively, and port), or the list must hold `*`. `Origin: null`
/// and unparsable values match only `*`.
pub fn origin_allowed(list: &AllowList, origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    list.any || Origin::parse(origin.trim()).is_some_and(|o| list.origins.contains(&o))
}

// ---------------------------------------------------------------------------
// Policy

/// Everything the shards need to authorize requests, built once from the settings
/// (`ServeArgs::auth_policy`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `--auth required`; when false every request is authorized.
    pub required: bool,
    pub verifier: Option<Verifier>,
    pub publisher_secret: Option<PublisherSecret>,
    pub origins: AllowList,
}

impl Policy {
    /// Authorizes a publish to `topic`: always when auth is off; otherwise when the
    /// `Authorization: Bearer` credential is the publisher secret (`Ok(None)`), or a
    /// valid token from any source grants `topic` (`Ok(Some(claims))`).
    pub fn authorize_publish(
        &self,
        parts: &RequestParts<'_>,
        topic: &str,
        now: u64,
    ) -> Result<Option<Claims>, AuthError> {
        if !self.required {
            return Ok(None);
        }
        if let (Some(secret), Some(presented)) =
            (&self.publisher_secret, parts.authorization.and_then(bearer))
            && secret.matches(presented.as_bytes())
        {
            return Ok(None);
        }
        let claims = self.verify(parts, now)?;
        if claims.may_publish(topic) {
            Ok(Some(claims))
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// Authorizes subscriptions to every one of `patterns`: always when auth is off
    /// (`Ok(None)`); otherwise a valid token must grant each. The claims are returned
    /// for later `subscribe` ops on the same connection.
    pub fn authorize_subscribe(
        &self,
        parts: &RequestParts<'_>,
        patterns: &[&str],
        now: u64,
    ) -> Result<Option<Claims>, AuthError> {
        if !self.required {
            return Ok(None);
        }
        let claims = self.verify(parts, now)?;
        if patterns.iter().all(|p| claims.may_subscribe(p)) {
            Ok(Some(claims))
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// The origin check for WebSocket, SSE and poll requests (`Origin` header value).
    pub fn origin_allowed(&self, origin: Option<&[u8]>) -> bool {
        match origin {
            None => true,
            Some(bytes) => {
                std::str::from_utf8(bytes).is_ok_and(|o| origin_allowed(&self.origins, Some(o)))
            }
        }
    }

    fn verify(&self, parts: &RequestParts<'_>, now: u64) -> Result<Claims, AuthError> {
        let (token, _) = find_token(parts)?;
        // The settings refuse `required` without a secret; no verifier verifies nothing.
        let verifier = self.verifier.as_ref().ok_or(AuthError::BadSignature)?;
        verifier.verify(&token, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_700_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs `header.payload` with `key` (the same crates, used independently).
    fn sign_raw(key: &[u8], header: &str, payload: &str) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn token(payload: serde_json::Value) -> String {
        sign_raw(
            SECRET,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &payload.to_string(),
        )
    }

    fn verify(t: &str) -> Result<Claims, AuthError> {
        Verifier::new(SECRET).verify(t, NOW)
    }

    /// RFC 7515 appendix A.1: the HS256 example, key and signature from the RFC.
    #[test]
    fn rfc7515_a1_vector_verifies() {
        let key = URL_SAFE_NO_PAD
            .decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwj\
                 AzZr1Z9CAow",
            )
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
            .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxl\
            LmNvbS9pc19yb290Ijp0cnVlfQ\
            .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let v = Verifier::new(&key);
        let claims = v.verify(token, 1_300_819_000).unwrap();
        assert_eq!(claims.exp, 1_300_819_380);
        assert_eq!(claims.sub, None);
        assert!(claims.subscribe.is_empty() && claims.publish.is_empty());
        // The same token an hour after its `exp`.
        assert_eq!(
            v.verify(token, 1_300_819_380 + 3600),
            Err(AuthError::Expired)
        );
        // One flipped signature character.
        let forged = token.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
        assert_eq!(
            v.verify(&forged, 1_300_819_000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn good_token_yields_its_claims() {
        let t = token(serde_json::json!({
            "sub": "alice", "exp": NOW + 60, "nbf": NOW - 5, "iat": NOW - 5,
            "subscribe": ["chat.*", "news"], "publish": ["chat.lobby"]
        }));
        let claims = verify(&t).unwrap();
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert_eq!(claims.exp, NOW + 60);
        assert_eq!(
            claims.subscribe,
            vec![Grant::Subtree("chat".into()), Grant::Exact("news".into())]
        );
        assert_eq!(claims.publish, vec![Grant::Exact("chat.lobby".into())]);
        // Fractional NumericDates are allowed.
        let t = token(serde_json::json!({"exp": (NOW + 60) as f64 + 0.5}));
        assert_eq!(verify(&t).unwrap().exp, NOW + 60);
    }

    #[test]
    fn ami_claim_is_parsed() {
        use crate::ami::gateway::{Action, ActionSet, Names};
        let t = token(serde_json::json!({
            "exp": NOW + 60,
            "ami": {"actions": ["Originate", "hangup", "Command", "NoSuchAction"],
                    "endpoints": ["PJSIP/101", "PJSIP/102"], "queues": ["*"]}
        }));
        let ami = verify(&t).unwrap().ami.expect("ami grants");
        assert_eq!(
            ami.actions,
            ActionSet::of(&[Action::Originate, Action::Hangup]),
            "names match case-insensitively; Command and unknown names are ignored"
        );
        assert_eq!(ami.endpoints, Names::of(&["PJSIP/101", "PJSIP/102"]));
        assert!(ami.endpoints.contains("PJSIP/101") && !ami.endpoints.contains("PJSIP/103"));
        assert!(ami.queues.is_any() && ami.queues.contains("sales"));

        // Every list is optional; "*" grants every whitelisted action.
        let t = token(serde_json::json!({"exp": NOW + 60, "ami": {"actions": ["*"]}}));
        let ami = verify(&t).unwrap().ami.unwrap();
        assert_eq!(ami.actions, ActionSet::ALL);
        assert!(ami.endpoints.is_empty() && ami.queues.is_empty());
        let t = token(serde_json::json!({"exp": NOW + 60, "ami": {}}));
        let ami = verify(&t).unwrap().ami.unwrap();
        assert!(ami.actions.is_empty() && ami.endpoints.is_empty());

        // No claim (or null): no grants at all.
        assert_eq!(
            verify(&token(serde_json::json!({"exp": NOW + 60})))
                .unwrap()
                .ami,
            None
        );
        let t = token(serde_json::json!({"exp": NOW + 60, "ami": null}));
        assert_eq!(verify(&t).unwrap().ami, None);
    }

    #[test]
    fn malformed_ami_claims_invalidate_the_token() {
        let exp = NOW + 60;
        let too_many: Vec<String> = (0..=crate::ami::gateway::MAX_GRANT_NAMES)
            .map(|i| format!("PJSIP/{i}"))
            .collect();
        for ami in [
            serde_json::json!("Originate"),
            serde_json::json!(["Originate"]),
            serde_json::json!(true),
            serde_json::json!({"actions": "Originate"}),
            serde_json::json!({"actions": [1]}),
            serde_json::json!({"actions": null}),
            serde_json::json!({"endpoints": "PJSIP/101"}),
            serde_json::json!({"endpoints": [{"name": "PJSIP/101"}]}),
            serde_json::json!({"endpoints": [""]}),
            serde_json::json!({"endpoints": ["PJSIP/101\r\nAction: Command"]}),
            serde_json::json!({"queues": [null]}),
            serde_json::json!({"queues": ["q".repeat(129)]}),
            serde_json::json!({"endpoints": too_many}),
        ] {
            let t = token(serde_json::json!({"exp": exp, "ami": ami}));
            assert_eq!(verify(&t), Err(AuthError::Malformed), "{ami}");
        }
    }

    #[test]
    fn algorithms_other_than_hs256_are_refused() {
        let payload = serde_json::json!({"exp": NOW + 60}).to_string();
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":""}"#,
        ] {
            let t = sign_raw(SECRET, header, &payload);
            assert_eq!(verify(&t), Err(AuthError::WrongAlg), "{header}");
        }
        // The classic `alg: none` token with an empty signature.
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(payload.as_bytes())
        );
        assert_eq!(verify(&unsigned), Err(AuthError::WrongAlg));
        // No alg at all, and a critical extension.
        assert_eq!(
            verify(&sign_raw(SECRET, r#"{"typ":"JWT"}"#, &payload)),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&sign_raw(
                SECRET,
                r#"{"alg":"HS256","crit":["x"],"x":1}"#,
                &payload
            )),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn signatures_are_checked() {
        let good = token(serde_json::json!({"exp": NOW + 60, "publish": ["*"]}));
        // Another key.
        assert_eq!(
            Verifier::new(b"another secret of thirty-two bytes!").verify(&good, NOW),
            Err(AuthError::BadSignature)
        );
        // A payload swapped under the original signature.
        let parts: Vec<&str> = good.split('.').collect();
        let other = b64(serde_json::json!({"exp": NOW + 9999, "publish": ["*"]})
            .to_string()
            .as_bytes());
        let swapped = format!("{}.{other}.{}", parts[0], parts[2]);
        assert_eq!(verify(&swapped), Err(AuthError::BadSignature));
        // A truncated signature, an empty one, one with a trailing byte.
        let truncated = &good[..good.len() - 3];
        assert_eq!(verify(truncated), Err(AuthError::BadSignature));
        assert_eq!(
            verify(&format!("{}.{}.", parts[0], parts[1])),
            Err(AuthError::BadSignature)
        );
        let long = format!("{good}AAAA");
        assert_eq!(verify(&long), Err(AuthError::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        let good = token(serde_json::json!({"exp": NOW + 60}));
        let padded = {
            let p: Vec<&str> = good.split('.').collect();
            format!("{}=.{}.{}", p[0], p[1], p[2])
        };
        let too_long = format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES));
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            &format!("{good}.x"),
            &padded,
            "!!!.e30.AAAA",
            &too_long,
        ] {
            assert_eq!(verify(bad), Err(AuthError::Malformed), "{bad:?}");
        }
        // Signed correctly but the claims are wrong: no exp, exp not a number, a
        // negative exp, payload not JSON, grants that are not patterns.
        for payload in [
            r#"{"sub":"x"}"#,
            r#"{"exp":"tomorrow"}"#,
            r#"{"exp":-1}"#,
            "not json",
            &format!(r#"{{"exp":{},"subscribe":["chat.**"]}}"#, NOW + 60),
            &format!(r#"{{"exp":{},"publish":["a..b"]}}"#, NOW + 60),
            &format!(r#"{{"exp":{},"publish":"chat"}}"#, NOW + 60),
        ] {
            let t = sign_raw(SECRET, r#"{"alg":"HS256"}"#, payload);
            assert_eq!(verify(&t), Err(AuthError::Malformed), "{payload}");
        }
    }

    #[test]
    fn expiry_and_not_before_honour_the_leeway() {
        let exp = |e: u64| token(serde_json::json!({"exp": e}));
        assert!(verify(&exp(NOW)).is_ok());
        assert!(verify(&exp(NOW - LEEWAY_SECS)).is_ok());
        assert_eq!(verify(&exp(NOW - LEEWAY_SECS - 1)), Err(AuthError::Expired));
        assert_eq!(verify(&exp(0)), Err(AuthError::Expired));
        let nbf = |n: u64| token(serde_json::json!({"exp": NOW + 3600, "nbf": n}));
        assert!(verify(&nbf(NOW + LEEWAY_SECS)).is_ok());
        assert_eq!(
            verify(&nbf(NOW + LEEWAY_SECS + 1)),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn errors_map_to_statuses_and_reasons() {
        let all = AuthError::ALL;
        for e in all {
            assert_eq!(
                e.status(),
                if e == AuthError::Forbidden { 403 } else { 401 }
            );
        }
        let mut reasons: Vec<&str> = all.iter().map(|e| e.reason()).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len(), "reasons are distinct");
        assert!(
            reasons
                .iter()
                .all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    fn claims(subscribe: &[&str], publish: &[&str]) -> Claims {
        Claims {
            sub: None,
            exp: NOW,
            subscribe: subscribe.iter().map(|s| Grant::parse(s).unwrap()).collect(),
            publish: publish.iter().map(|s| Grant::parse(s).unwrap()).collect(),
            ami: None,
        }
    }

    #[test]
    fn subscribe_grants_cover_whole_patterns() {
        let c = claims(&["chat.*", "news", "a.b"], &[]);
        assert!(c.may_subscribe("chat.lobby"));
        assert!(c.may_subscribe("chat.room.7"));
        assert!(c.may_subscribe("chat.*"));
        assert!(c.may_subscribe("chat.room.*"));
        assert!(c.may_subscribe("news"));
        // The subtree is strictly below `chat`, and `chatroom` is another topic.
        assert!(!c.may_subscribe("chat"));
        assert!(!c.may_subscribe("chatroom"));
        assert!(!c.may_subscribe("chatroom.*"));
        assert!(!c.may_subscribe("chat."));
        // An exact grant does not cover anything below it.
        assert!(!c.may_subscribe("news.*"));
        assert!(!c.may_subscribe("news.today"));
        assert!(!c.may_subscribe("a.*"));
        assert!(!c.may_subscribe("a"));
        // Invalid patterns, including a lone `*`.
        assert!(!c.may_subscribe("*"));
        assert!(!c.may_subscribe(""));
        assert!(!c.may_subscribe("chat.**"));

        let all = claims(&["*"], &[]);
        assert!(all.may_subscribe("anything.*"));
        assert!(all.may_subscribe("x"));
        assert!(!all.may_subscribe("*"), "a lone * is not a pattern");
        assert!(!claims(&[], &[]).may_subscribe("x"));
    }

    #[test]
    fn publish_grants() {
        let c = claims(&["*"], &["chat.*", "alerts"]);
        assert!(c.may_publish("chat.lobby"));
        assert!(c.may_publish("alerts"));
        assert!(!c.may_publish("chat"));
        assert!(!c.may_publish("chatroom"));
        assert!(!c.may_publish("alerts.fire"));
        assert!(!c.may_publish("chat.*"), "a pattern is not a topic");
        assert!(!c.may_publish("news"), "subscribe grants do not publish");
        assert!(claims(&[], &["*"]).may_publish("any.topic"));
        assert!(!claims(&[], &["*"]).may_publish("bad topic"));
    }

    #[test]
    fn publisher_secret() {
        let s = PublisherSecret::new(b"publisher-secret");
        assert!(s.matches(b"publisher-secret"));
        assert!(!s.matches(b"publisher-secreT"));
        assert!(!s.matches(b"publisher-secret "));
        assert!(!s.matches(b"publisher-secre"));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "PublisherSecret(***)");
        assert!(!format!("{:?}", Verifier::new(SECRET)).contains("0123"));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer(b"bearer  abc"), Some("abc"));
        assert_eq!(bearer(b"BEARER abc "), Some("abc"));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Bearer \xff"), None);
    }

    #[test]
    fn query_and_cookie() {
        assert_eq!(
            token_from_query("topic=a&token=x.y.z").as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            token_from_query("token=a%2Eb&token=c").as_deref(),
            Some("a.b")
        );
        assert_eq!(
            token_from_query("token=&token=second").as_deref(),
            Some("second")
        );
        assert_eq!(token_from_query("tokens=x&mytoken=y"), None);
        assert_eq!(token_from_query(""), None);

        assert_eq!(token_from_cookie(b"sb_token=x.y.z"), Some("x.y.z"));
        assert_eq!(
            token_from_cookie(b"a=1; sb_token=x.y.z; b=2"),
            Some("x.y.z")
        );
        assert_eq!(token_from_cookie(b"a=1;sb_token=\"x.y.z\""), Some("x.y.z"));
        assert_eq!(token_from_cookie(b"xsb_token=1; sb_tokens=2"), None);
        assert_eq!(token_from_cookie(b"sb_token="), None);
        assert_eq!(token_from_cookie(b""), None);
    }

    #[test]
    fn token_sources_in_order() {
        let parts = RequestParts {
            authorization: Some(b"Bearer from-header"),
            cookie: Some(b"sb_token=from-cookie"),
            query: "token=from-query",
        };
        assert_eq!(
            find_token(&parts),
            Ok((Cow::Borrowed("from-header"), TokenSource::Bearer))
        );
        let parts = RequestParts {
            authorization: Some(b"Basic x"),
            ..parts
        };
        assert_eq!(
            find_token(&parts).unwrap(),
            (Cow::Borrowed("from-query"), TokenSource::Query)
        );
        let parts = RequestParts {
            query: "topic=a",
            ..parts
        };
        assert_eq!(
            find_token(&parts).unwrap(),
            (Cow::Borrowed("from-cookie"), TokenSource::Cookie)
        );
        assert_eq!(
            find_token(&RequestParts::default()),
            Err(AuthError::Missing)
        );
    }

    fn list(rules: &[&str]) -> AllowList {
        let rules: Vec<OriginRule> = rules
            .iter()
            .map(|r| parse_origin_rule(r).unwrap())
            .collect();
        AllowList::new(&rules)
    }

    #[test]
    fn origins() {
        let l = list(&["https://app.example.com", "http://localhost:3000"]);
        assert!(
            origin_allowed(&l, None),
            "non-browser clients send no Origin"
        );
        assert!(origin_allowed(&l, Some("https://app.example.com")));
        assert!(origin_allowed(&l, Some("https://APP.Example.com")));
        assert!(origin_allowed(&l, Some("HTTPS://app.example.com:443")));
        assert!(origin_allowed(&l, Some("http://localhost:3000")));
        assert!(
            !origin_allowed(&l, Some("http://app.example.com")),
            "scheme"
        );
        assert!(
            !origin_allowed(&l, Some("https://app.example.com:8443")),
            "port"
        );
        assert!(
            !origin_allowed(&l, Some("http://localhost")),
            "default port 80"
        );
        assert!(!origin_allowed(&l, Some("https://evil.example.com")));
        assert!(!origin_allowed(
            &l,
            Some("https://app.example.com.evil.com")
        ));
        assert!(!origin_allowed(&l, Some("null")));
        assert!(!origin_allowed(&l, Some("")));
        assert!(!origin_allowed(&l, Some("https://app.example.com/path")));

        let any = list(&["*"]);
        assert!(origin_allowed(&any, Some("https://anything.test")));
        assert!(origin_allowed(&any, Some("null")));
        assert!(!origin_allowed(&AllowList::new(&[]), Some("http://a.b")));

        let v6 = list(&["http://[::1]:8080"]);
        assert!(origin_allowed(&v6, Some("http://[::1]:8080")));
        assert!(!origin_allowed(&v6, Some("http://[::1]")));

        for bad in [
            "example.com",
            "https://",
            "https://a.com/",
            "https://a.com:99999",
            "ftp://a.com",
            "https://u@a.com",
        ] {
            assert!(parse_origin_rule(bad).is_err(), "{bad}");
        }
        assert!(
            parse_origin_rule("ftp://a.com:21").is_ok(),
            "explicit port, any scheme"
        );
    }

    fn policy(required: bool) -> Policy {
        Policy {
            required,
            verifier: Some(Verifier::new(SECRET)),
            publisher_secret: Some(PublisherSecret::new(b"publisher-secret-1234")),
            origins: list(&["https://app.example.com"]),
        }
    }

    fn with_bearer(header: &[u8]) -> RequestParts<'_> {
        RequestParts {
            authorization: Some(header),
            ..RequestParts::default()
        }
    }

    #[test]
    fn policy_for_publishers() {
        let t = token(serde_json::json!({"exp": NOW + 60, "publish": ["chat.*"]}));
        let bearer_t = format!("Bearer {t}");
        let p = policy(true);
        let parts = with_bearer(bearer_t.as_bytes());
        assert!(
            p.authorize_publish(&parts, "chat.lobby", NOW)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            p.authorize_publish(&parts, "news", NOW),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            p.authorize_publish(&parts, "chat.lobby", NOW + 3600),
            Err(AuthError::Expired)
        );
        // The publisher secret, only as a bearer credential.
        let secret = with_bearer(b"Bearer publisher-secret-1234");
        assert_eq!(p.authorize_publish(&secret, "anything", NOW), Ok(None));
        let in_query = RequestParts {
            query: "token=publisher-secret-1234",
            ..RequestParts::default()
        };
        assert_eq!(
            p.authorize_publish(&in_query, "anything", NOW),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            p.authorize_publish(&with_bearer(b"Bearer wrong"), "x", NOW),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            p.authorize_publish(&RequestParts::default(), "x", NOW),
            Err(AuthError::Missing)
        );
        // Auth off: everything goes, tokens or not.
        assert_eq!(
            policy(false).authorize_publish(&RequestParts::default(), "x", NOW),
            Ok(None)
        );
    }

    #[test]
    fn policy_for_subscribers_and_origins() {
        let t = token(serde_json::json!({"exp": NOW + 60, "subscribe": ["chat.*", "news"]}));
        let cookie = format!("sb_token={t}");
        let parts = RequestParts {
            cookie: Some(cookie.as_bytes()),
            ..RequestParts::default()
        };
        let p = policy(true);
        let claims = p
            .authorize_subscribe(&parts, &["chat.*", "news"], NOW)
            .unwrap()
            .expect("claims");
        assert_eq!(claims.exp, NOW + 60);
        assert_eq!(
            p.authorize_subscribe(&parts, &["chat.*", "news.*"], NOW),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            p.authorize_subscribe(&RequestParts::default(), &["news"], NOW),
            Err(AuthError::Missing)
        );
        assert_eq!(
            policy(false).authorize_subscribe(&RequestParts::default(), &["news"], NOW),
            Ok(None)
        );
        assert!(p.origin_allowed(None));
        assert!(p.origin_allowed(Some(b"https://app.example.com")));
        assert!(!p.origin_allowed(Some(b"https://evil.example.com")));
        assert!(!p.origin_allowed(Some(b"https://app.example.com\xff")));
    }
}
