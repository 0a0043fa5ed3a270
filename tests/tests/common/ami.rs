//! Helpers of the AMI end-to-end tests (`ami.rs` against ami-sim, `ami_asterisk.rs`
//! against a real Asterisk): an engine following a PBX, waiting for its session, and
//! reading and checking `ami.*` streams.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::*;

use super::*;

pub const JWT_SECRET: &str = "e2e-jwt-secret-0123456789abcdef0123";
/// How long the engine may take to reach a PBX that is up (backoff included).
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// `switchboard serve` following the PBX at `ami` as `user`, with quick keep-alive and
/// backoff.
pub fn ami_engine(ami: SocketAddr, user: &str, secret: &str, extra: &[&str]) -> Server {
    let addr = ami.to_string();
    let mut args = vec![
        "--shards",
        "2",
        "--ami",
        &addr,
        "--ami-user",
        user,
        "--ami-secret",
        secret,
        "--ami-ping-interval",
        "300ms",
        "--ami-backoff-max",
        "1s",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `GET /healthz/ami`: status and body.
pub fn ami_health(server: &Server) -> (u16, String) {
    let r = http_request(server.addr(), "GET", "/healthz/ami", &[], b"");
    (r.status, r.text())
}

/// Waits until `/healthz/ami` says live (200); panics with the engine's log otherwise.
pub fn wait_live(server: &Server) {
    wait_health(server, 200);
}

pub fn wait_health(server: &Server, status: u16) {
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let (got, body) = ami_health(server);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz/ami still {got} ({body:?}), expected {status}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A metric summed over its label sets (0 when absent).
pub fn total(server: &Server, name: &str) -> f64 {
    metric_sum(&metrics(server.addr()), name).unwrap_or(0.0)
}

/// Waits until `cond` holds for the engine's metrics text (bounded).
pub fn wait_metrics(server: &Server, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + LIVE_TIMEOUT;
    loop {
        let text = metrics(server.addr());
        if cond(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached\n{text}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sample(text: &str, name: &str) -> f64 {
    metric(text, name).unwrap_or(0.0)
}

/// The next envelope of `sub` within `timeout`, or `None`.
pub fn next_within(sub: &mut Sub, timeout: Duration) -> Option<Value> {
    match sub {
        Sub::Ws(ws) => loop {
            let v = ws.recv_json(timeout)?;
            if v["op"] == "hello" {
                continue;
            }
            return Some(v);
        },
        Sub::Sse { client, .. } => loop {
            let ev = client.next_event(timeout)?;
            if ev.event == "hello" {
                continue;
            }
            return Some(serde_json::from_str(&ev.data).expect("SSE data is JSON"));
        },
    }
}

/// Everything `sub` receives for `d`.
pub fn collect(sub: &mut Sub, d: Duration) -> Vec<Value> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match next_within(sub, left.min(Duration::from_millis(200))) {
            Some(v) => out.push(v),
            None if Instant::now() >= end => break,
            None => {}
        }
    }
    out
}

/// Checks the `ami.calls` stream a subscriber received: the first message is the
/// snapshot; afterwards every call that was not in the snapshot starts before anything
/// else is said of it, nothing follows its end, and it starts and ends once. Returns
/// the linkedids of the snapshot and of the calls that ended.
pub fn check_call_stream(msgs: &[Value]) -> (BTreeSet<String>, BTreeSet<String>) {
    let first = msgs.first().expect("at least the snapshot");
    assert_eq!(first["topic"], "ami.calls", "{first}");
    assert_eq!(first["data"]["kind"], "snapshot", "snapshot first: {first}");
    let in_snapshot: BTreeSet<String> = first["data"]["calls"]
        .as_array()
        .expect("snapshot calls")
        .iter()
        .map(|c| c["linkedid"].as_str().unwrap().to_string())
        .collect();
    let mut started = in_snapshot.clone();
    let mut ended = BTreeSet::new();
    let mut last_seq = first["seq"].as_u64().unwrap();
    for m in &msgs[1..] {
        assert_eq!(m["topic"], "ami.calls", "{m}");
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "no gap, no duplicate: {m}");
        last_seq = seq;
        let data = &m["data"];
        let kind = data["kind"].as_str().unwrap();
        if kind == "link" {
            continue;
        }
        assert_ne!(kind, "snapshot", "one snapshot only: {m}");
        let id = data["linkedid"].as_str().expect("linkedid").to_string();
        assert!(!ended.contains(&id), "{kind} after the end of {id}");
        match kind {
            "started" => assert!(started.insert(id.clone()), "{id} started twice"),
            _ => assert!(started.contains(&id), "{kind} of {id} before it started"),
        }
        if kind == "ended" {
            ended.insert(id);
        }
    }
    (in_snapshot, ended)
}

// ---- the action gateway ----

/// A token of user `agent-101` subscribing to `ami.*` and `chat.*`, with `ami` grants.
pub fn action_token(ami: Value) -> String {
    let claims = json!({
        "sub": "agent-101",
        "exp": now() + 3600,
        "subscribe": ["ami.*", "chat.*"],
        "ami": ami,
    });
    sign(
        JWT_SECRET,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &claims.to_string(),
    )
}

/// Sends an action over `ws` and returns its result (other messages are skipped).
pub fn act(ws: &mut WsClient, action: Value) -> Value {
    ws.send_json(&action);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = ws.recv_json(left).expect("a result before the deadline");
        if v["op"] == "result" {
            return v;
        }
    }
}
