//! Authentication, grants and origins (PROTOCOL.md "Authentication") against the real
//! engine: tokens made here with the same algorithm (HMAC-SHA-256 over base64url
//! parts), presented as `Authorization: Bearer`, `?token=` and the `sb_token` cookie;
//! every bad token answered `401` with its reason counted; ungranted topics `403` or a
//! `forbidden` error op, with nothing subscribed; publish grants and the publisher
//! secret; tokens expiring on open connections; the origin allow-list, CORS headers
//! and preflights; and auth off letting everything through.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef0123";
const PUBLISHER_SECRET: &str = "e2e-publisher-secret-42";
/// The clock skew the server tolerates on `exp` and `nbf` (engine `auth::LEEWAY_SECS`).
const LEEWAY_SECS: u64 = 30;
/// How long a test waits for a token to expire on an open connection.
const EXPIRY_WAIT: Duration = Duration::from_secs(60);
const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

/// A valid HS256 token with `claims`.
fn token(claims: Value) -> String {
    sign(
        JWT_SECRET,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims.to_string(),
    )
}

/// A token valid for an hour granting `subscribe` and `publish`.
fn grant(subscribe: &[&str], publish: &[&str]) -> String {
    token(json!({"sub": "e2e", "exp": now() + 3600, "subscribe": subscribe, "publish": publish}))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn start_required(extra: &[&str]) -> Server {
    let mut args = vec![
        "--shards",
        "2",
        "--auth",
        "required",
        "--jwt-secret",
        JWT_SECRET,
        "--publisher-secret",
        PUBLISHER_SECRET,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `switchboard_auth_failures_total{reason}` summed over the shards.
fn auth_failures(addr: SocketAddr, reason: &str) -> f64 {
    let text = metrics(addr);
    (0..2)
        .map(|s| {
            let name =
                format!("switchboard_auth_failures_total{{shard=\"{s}\",reason=\"{reason}\"}}");
            metric(&text, &name).unwrap_or_else(|| panic!("no {name} in /metrics"))
        })
        .sum()
}

fn metric_total(addr: SocketAddr, name: &str) -> f64 {
    metric_sum(&metrics(addr), name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// A WebSocket handshake to `path` with extra request headers.
fn try_ws(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::{HeaderName, HeaderValue};
    let mut req = server.ws_url(path).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    try_ws_connect_request(req)
}

fn ws(server: &Server, path: &str, headers: &[(&str, &str)]) -> WsClient {
    try_ws(server, path, headers).unwrap_or_else(|e| panic!("WebSocket {path}: {e}"))
}

/// A refused WebSocket handshake: `(status, WWW-Authenticate, body)`.
fn ws_refused(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    match try_ws(server, path, headers) {
        Err(tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{path}: expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("{path}: expected a refusal, the upgrade succeeded"),
    }
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, "GET", path, headers, b"")
}

fn publish_with(
    addr: SocketAddr,
    topic: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_request(addr, "POST", &format!("/publish/{topic}"), headers, body)
}

/// Publishes with the publisher secret; asserts `202`.
fn publish_as_backend(addr: SocketAddr, topic: &str, body: &[u8]) -> u64 {
    let auth = bearer(PUBLISHER_SECRET);
    ack_seq(
        &publish_with(addr, topic, &[("Authorization", &auth)], body),
        topic,
    )
}

/// Waits until `n` polls are held on the two shards.
fn wait_polls_held(addr: SocketAddr, n: f64) {
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            let m = metrics(addr);
            (0..2).map(|s| conns(&m, s, "poll")).sum::<f64>() == n
        }),
        "{n} polls never held"
    );
}

/// PROTOCOL.md "Authentication": a token granting the topics lets a client subscribe
/// on every transport and from every place a token may travel (WebSocket with
/// `Authorization: Bearer` and with `?token=`, SSE with `?token=` and with the
/// `sb_token` cookie, long-poll with a bearer), and each receives what a publisher
/// holding a publish grant sends.
#[test]
fn valid_tokens_subscribe_and_receive_on_every_transport() {
    let server = start_required(&["--poll-timeout", "60s"]);
    let addr = server.addr();
    let t = grant(&["chat.*"], &["chat.lobby"]);
    let auth = bearer(&t);
    let cookie = format!("theme=dark; sb_token={t}");

    let mut ws_bearer = ws(&server, "/ws?topic=chat.lobby", &[("Authorization", &auth)]);
    let mut ws_query = ws(&server, &format!("/ws?topic=chat.*&token={t}"), &[]);
    let mut sse_query = SseClient::connect(addr, &format!("/sse?topic=chat.lobby&token={t}"));
    let mut sse_cookie = SseClient::try_connect(addr, "/sse?topic=chat.*", &[("Cookie", &cookie)])
        .unwrap_or_else(|e| panic!("SSE with the cookie: {e}"));
    let poll_auth = auth.clone();
    let poller = thread::spawn(move || {
        get(
            addr,
            "/poll?topic=chat.lobby",
            &[("Authorization", &poll_auth)],
        )
    });
    wait_polls_held(addr, 1.0);

    let r = publish_with(addr, "chat.lobby", &[("Authorization", &auth)], b"\"hi\"");
    assert_eq!(ack_seq(&r, "chat.lobby"), 1);

    let expected = json!({"topic": "chat.lobby", "seq": 1, "data": "hi"});
    assert_eq!(next_json(&mut ws_bearer), expected);
    assert_eq!(next_json(&mut ws_query), expected);
    for sse in [&mut sse_query, &mut sse_cookie] {
        let ev = next_sse(sse);
        assert_eq!(strip_pos(serde_json::from_str(&ev.data).unwrap()), expected);
    }
    let answer = poller.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let messages = answer.json()["messages"].clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(1), "{messages}");
    assert_eq!(strip_pos(messages[0].clone()), expected);
    for reason in ["missing", "malformed", "bad_signature", "forbidden"] {
        assert_eq!(auth_failures(addr, reason), 0.0, "{reason}");
    }
}

/// PROTOCOL.md "Authentication": a forged signature, `alg: none`, another algorithm,
/// an expired token, one not valid yet, a malformed one, and none at all are each
/// refused on `/ws`, `/sse` and `/poll` with `401`, `WWW-Authenticate: Bearer ...`
/// (`error="invalid_token"` when a token was given), and counted under their reason;
/// nothing is subscribed.
#[test]
fn bad_tokens_are_refused_401_and_counted_by_reason() {
    let server = start_required(&[]);
    let addr = server.addr();
    let claims = json!({"exp": now() + 3600, "subscribe": ["*"]}).to_string();
    let cases: Vec<(&str, Option<String>)> = vec![
        (
            "bad_signature",
            Some(sign(
                "another-secret-0123456789abcdef01234",
                r#"{"alg":"HS256"}"#,
                &claims,
            )),
        ),
        (
            "wrong_alg",
            Some({
                // `alg: none` with the empty signature RFC 7519 §6 describes.
                let t = sign(JWT_SECRET, r#"{"alg":"none"}"#, &claims);
                format!("{}.", t.rsplit_once('.').unwrap().0)
            }),
        ),
        (
            "wrong_alg",
            Some(sign(JWT_SECRET, r#"{"alg":"HS512"}"#, &claims)),
        ),
        (
            "expired",
            Some(token(json!({"exp": now() - 3600, "subscribe": ["*"]}))),
        ),
        (
            "not_yet_valid",
            Some(token(
                json!({"exp": now() + 7200, "nbf": now() + 3600, "subscribe": ["*"]}),
            )),
        ),
        ("malformed", Some("not.a-token".to_string())),
        ("missing", None),
    ];
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for (reason, t) in &cases {
        let auth = t.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let challenge_ok = |h: Option<&str>| {
            let h = h.unwrap_or_else(|| panic!("{reason}: no WWW-Authenticate"));
            assert!(h.starts_with("Bearer"), "{reason}: {h}");
            assert_eq!(h.contains("error=\"invalid_token\""), t.is_some(), "{h}");
        };

        let (status, challenge, _) = ws_refused(&server, "/ws?topic=a", &headers);
        assert_eq!(status, 401, "{reason} on /ws");
        challenge_ok(challenge.as_deref());

        let sse_path = match t {
            Some(t) => format!("/sse?topic=a&token={t}"),
            None => "/sse?topic=a".to_string(),
        };
        let r = get(addr, &sse_path, &[]);
        assert_eq!(r.status, 401, "{reason} on /sse: {}", r.text());
        challenge_ok(r.header("www-authenticate"));

        let r = get(addr, "/poll?topic=a", &headers);
        assert_eq!(r.status, 401, "{reason} on /poll: {}", r.text());
        challenge_ok(r.header("www-authenticate"));

        *expected.entry(reason).or_default() += 3.0;
    }
    for (reason, n) in expected {
        assert_eq!(auth_failures(addr, reason), n, "reason {reason}");
    }
    let m = metrics(addr);
    assert_eq!(metric_sum(&m, "switchboard_subscriptions"), Some(0.0));
    assert_eq!(metric_sum(&m, "switchboard_topics"), Some(0.0));
    assert_healthy(addr);
}

/// PROTOCOL.md "Authentication": a valid token that does not grant every requested
/// topic or pattern is `403` with `forbidden: <pattern>`, counted as `forbidden`;
/// nothing of the request is subscribed (a later publish to the granted topic reaches
/// no one).
#[test]
fn a_topic_the_token_does_not_grant_is_403() {
    let server = start_required(&[]);
    let addr = server.addr();
    let auth = bearer(&grant(&["chat.*", "news"], &[]));
    let headers = [("Authorization", auth.as_str())];

    let r = get(addr, "/sse?topic=chat.lobby&topic=sport", &headers);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "forbidden: sport\n");
    // `chat.*` covers topics strictly below `chat`, not `chat` itself; an exact grant
    // covers no subtree.
    let (status, _, body) = ws_refused(&server, "/ws?topic=chat", &headers);
    assert_eq!((status, body.as_str()), (403, "forbidden: chat\n"));
    let r = get(addr, "/poll?topic=news.*", &headers);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "forbidden: news.*\n");
    assert_eq!(auth_failures(addr, "forbidden"), 3.0);
    assert_eq!(metric_total(addr, "switchboard_subscriptions"), 0.0);

    let r = publish_with(
        addr,
        "chat.lobby",
        &[("Authorization", &bearer(PUBLISHER_SECRET))],
        b"1",
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        metric_total(addr, "switchboard_router_routed_total"),
        0.0,
        "the refused subscriptions never reached the router"
    );
}

/// PROTOCOL.md "Authentication": on an open WebSocket a `subscribe` op naming a
/// pattern the token does not grant is answered `{"op":"error","error":"forbidden:
/// <pattern>"}` and nothing of the op is subscribed: a publish to that topic does not
/// reach the connection, which stays open and may subscribe to granted topics.
#[test]
fn a_subscribe_op_for_an_ungranted_pattern_gets_an_error_and_nothing() {
    let server = start_required(&[]);
    let addr = server.addr();
    let auth = bearer(&grant(&["chat.*"], &[]));
    let mut c = ws(&server, "/ws", &[("Authorization", &auth)]);

    c.send_json(&json!({"op": "subscribe", "topics": ["chat.a", "news.*"]}));
    assert_eq!(
        next_json(&mut c),
        json!({"op": "error", "error": "forbidden: news.*"})
    );
    assert_eq!(auth_failures(addr, "forbidden"), 1.0);
    assert_eq!(metric_total(addr, "switchboard_subscriptions"), 0.0);
    ws_subscribe(&mut c, &["chat.a"]);

    // Published in this order: if the refused pattern had been subscribed, news.x
    // would arrive before chat.a.
    publish_as_backend(addr, "news.x", b"\"not for you\"");
    publish_as_backend(addr, "chat.a", b"\"for you\"");
    assert_eq!(
        next_json(&mut c),
        json!({"topic": "chat.a", "seq": 1, "data": "for you"})
    );
}

/// PROTOCOL.md "Authentication": a publish needs a token whose `publish` grants cover
/// the topic, or the publisher secret as a bearer credential: nothing is `401`, a
/// token without the grant `403`, with it `202`, the secret `202`, a wrong secret
/// `401`. A direct address needs a grant covering it (`client.*`). Refused publishes
/// are never sequenced.
#[test]
fn publishing_needs_a_publish_grant_or_the_publisher_secret() {
    let server = start_required(&[]);
    let addr = server.addr();
    let mut sub = ws(
        &server,
        "/ws?topic=chat.lobby",
        &[("Authorization", &bearer(&grant(&["chat.*"], &[])))],
    );
    let id = hello_id(&sub.recv_json(DEFAULT_TIMEOUT).expect("the hello"));

    let r = publish_with(addr, "chat.lobby", &[], b"\"nobody\"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let other = bearer(&grant(&["*"], &["chat.other", "news.*"]));
    let r = publish_with(
        addr,
        "chat.lobby",
        &[("Authorization", &other)],
        b"\"no grant\"",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), "forbidden: chat.lobby\n");
    let wrong = bearer("not-the-publisher-secret");
    let r = publish_with(
        addr,
        "chat.lobby",
        &[("Authorization", &wrong)],
        b"\"wrong\"",
    );
    assert_eq!(r.status, 401, "{}", r.text());

    let granted = bearer(&grant(&[], &["chat.*"]));
    let r = publish_with(
        addr,
        "chat.lobby",
        &[("Authorization", &granted)],
        b"\"token\"",
    );
    assert_eq!(ack_seq(&r, "chat.lobby"), 1);
    assert_eq!(publish_as_backend(addr, "chat.lobby", b"\"secret\""), 2);
    assert_eq!(
        next_json(&mut sub),
        json!({"topic": "chat.lobby", "seq": 1, "data": "token"})
    );
    assert_eq!(
        next_json(&mut sub),
        json!({"topic": "chat.lobby", "seq": 2, "data": "secret"})
    );

    // Direct addresses: `chat.*` does not cover them, `client.*` does.
    let direct = format!("client.{id}");
    let r = publish_with(addr, &direct, &[("Authorization", &granted)], b"\"dm\"");
    assert_eq!(r.status, 403, "{}", r.text());
    let clients = bearer(&grant(&[], &["client.*"]));
    let r = publish_with(addr, &direct, &[("Authorization", &clients)], b"\"dm\"");
    assert_eq!(r.status, 202, "{}", r.text());
    let dm = next_json(&mut sub);
    assert_eq!(dm["data"], "dm", "{dm}");
    assert_eq!(dm["seq"], 0, "{dm}");

    assert_eq!(auth_failures(addr, "missing"), 1.0);
    assert_eq!(auth_failures(addr, "forbidden"), 2.0);
    assert_eq!(auth_failures(addr, "malformed"), 1.0);
    assert_eq!(
        metric_total(addr, "switchboard_router_published_total"),
        3.0,
        "only the accepted publishes were sequenced"
    );
}

/// PROTOCOL.md "Authentication": when the token of an open connection expires, a
/// WebSocket is closed with 1008 "token expired" and an event stream ends; both are
/// counted in `switchboard_token_expiry_closes_total`.
#[test]
fn connections_close_when_their_token_expires() {
    let server = start_required(&[]);
    let addr = server.addr();
    // Expired, but 8 s short of the leeway: accepted now, refused soon.
    let t = token(json!({"exp": now() + 8 - LEEWAY_SECS, "subscribe": ["chat.*"]}));
    let mut c = ws(&server, &format!("/ws?topic=chat.a&token={t}"), &[]);
    hello_id(&c.recv_json(DEFAULT_TIMEOUT).expect("the hello"));
    let mut sse = SseClient::connect(addr, &format!("/sse?topic=chat.a&token={t}"));
    assert_eq!(sse.expect_event(DEFAULT_TIMEOUT).event, "hello");

    match c.recv(EXPIRY_WAIT) {
        Some(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "token expired");
        }
        other => panic!("expected a close frame with 1008, got {other:?}"),
    }
    assert!(
        sse.next_event(EXPIRY_WAIT).is_none(),
        "the stream carries nothing more"
    );
    assert!(sse.is_closed(), "the event stream ended");
    assert_eq!(
        metric_total(addr, "switchboard_token_expiry_closes_total"),
        2.0
    );
    let m = metrics(addr);
    let closes_1008: f64 = (0..2)
        .map(|s| {
            let name = format!("switchboard_ws_closes_sent_total{{shard=\"{s}\",code=\"1008\"}}");
            metric(&m, &name).unwrap_or_else(|| panic!("no {name}"))
        })
        .sum();
    assert_eq!(closes_1008, 1.0);
}

/// PROTOCOL.md "Authentication": the default, auth off, lets every client subscribe
/// and publish without a token (a token that would not verify is ignored).
#[test]
fn auth_off_lets_everything_through() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let junk = bearer("junk");
    let mut c = ws(&server, "/ws?topic=open.a", &[("Authorization", &junk)]);
    let mut sse = SseClient::connect(addr, "/sse?topic=open.*&token=junk");
    let r = publish_with(addr, "open.a", &[("Authorization", &junk)], b"1");
    assert_eq!(ack_seq(&r, "open.a"), 1);
    assert_eq!(publish(addr, "open.a", b"2"), 2);
    assert_eq!(next_json(&mut c)["data"], 1);
    assert_eq!(next_json(&mut c)["data"], 2);
    assert_eq!(
        strip_pos(serde_json::from_str(&next_sse(&mut sse).data).unwrap())["data"],
        1
    );
    ws_subscribe(&mut c, &["anything.*"]);
    let r = get(addr, "/poll?topic=open.a&since=00000001-0", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(metric_total(addr, "switchboard_auth_failures_total"), 0.0);
}

/// PROTOCOL.md "Authentication" (origins): with `--allowed-origins`, a browser
/// `Origin` outside the list is `403` on `/ws`, `/sse`, `/poll` and `/publish/...`
/// (auth off too), counted in `switchboard_origin_rejected_total`; an allowed one is
/// served, and `/sse`, `/poll` and publish answers carry `Access-Control-Allow-Origin:
/// <origin>`, `Access-Control-Allow-Credentials: true` and `Vary: Origin`; a request
/// without `Origin` gets no CORS headers.
#[test]
fn origins_outside_the_allow_list_are_refused_and_allowed_ones_get_cors() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--allowed-origins",
        &format!("{APP},http://localhost:3000"),
    ]);
    let addr = server.addr();
    let evil = [("Origin", EVIL)];
    let (status, _, _) = ws_refused(&server, "/ws?topic=o.a", &evil);
    assert_eq!(status, 403);
    for path in ["/sse?topic=o.a", "/poll?topic=o.a"] {
        let r = get(addr, path, &evil);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
    }
    let r = publish_with(addr, "o.a", &evil, b"1");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(metric_total(addr, "switchboard_origin_rejected_total"), 4.0);
    assert_eq!(
        metric_total(addr, "switchboard_router_published_total"),
        0.0
    );

    let app = [("Origin", APP)];
    let cors = |r: &HttpResponse, what: &str| {
        assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{what}");
        assert_eq!(
            r.header("access-control-allow-credentials"),
            Some("true"),
            "{what}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{what}");
    };
    let mut c = ws(&server, "/ws?topic=o.a", &app);
    let sse = SseClient::try_connect(addr, "/sse?topic=o.a", &app)
        .unwrap_or_else(|e| panic!("SSE from an allowed origin: {e}"));
    cors(sse.response(), "/sse");
    let poller = thread::spawn(move || get(addr, "/poll?topic=o.a", &[("Origin", APP)]));
    wait_polls_held(addr, 1.0);
    let r = publish_with(addr, "o.a", &app, b"1");
    assert_eq!(ack_seq(&r, "o.a"), 1);
    cors(&r, "publish");
    let answer = poller.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    cors(&answer, "held poll");
    assert_eq!(next_json(&mut c)["data"], 1);
    // Refusals for an allowed origin carry CORS too, so the page can read them.
    let r = get(addr, "/poll?topic=a..b", &app);
    assert_eq!(r.status, 400);
    cors(&r, "400 on /poll");

    let plain = get(addr, "/poll?topic=o.a&since=00000001-0", &[]);
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("access-control-allow-origin"), None);
    assert_eq!(metric_total(addr, "switchboard_origin_rejected_total"), 4.0);
}

/// PROTOCOL.md "Authentication" (CORS): a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) for `/poll` or `/publish/...` from an allowed
/// origin is `204` with the allow headers; from another origin `403`.
#[test]
fn preflights_are_answered_for_allowed_origins_only() {
    let server = start_required(&["--allowed-origins", APP]);
    let addr = server.addr();
    for (path, method) in [("/poll?topic=a", "GET"), ("/publish/chat.lobby", "POST")] {
        let r = http_request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", APP),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        );
        assert_eq!(r.status, 204, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(APP), "{r:?}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("access-control-allow-methods"), Some(method));
        let allowed = r.header("access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.to_ascii_lowercase().contains("authorization"),
            "{allowed}"
        );
        assert_eq!(r.header("vary"), Some("Origin"));

        let r = http_request(
            addr,
            "OPTIONS",
            path,
            &[("Origin", EVIL), ("Access-Control-Request-Method", method)],
            b"",
        );
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
    assert_eq!(metric_total(addr, "switchboard_origin_rejected_total"), 2.0);
    // A preflight needs no token, and asks for none.
    assert_eq!(metric_total(addr, "switchboard_auth_failures_total"), 0.0);
}
