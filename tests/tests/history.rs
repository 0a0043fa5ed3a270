//! History and resume (PROTOCOL.md "Positions and resume") against the real engine:
//! SSE streams resumed by `Last-Event-ID`, WebSockets by `since` (query and subscribe
//! op), with no loss and no duplicate while publishing goes on; resets when a resume
//! reaches further back than history (size, age, another server instance); bad
//! positions refused.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// Per-topic record of what a resuming client received, checking as it goes that each
/// topic's `seq`s arrive as 1, 2, 3... (no gap, no duplicate) and that positions only
/// increase.
#[derive(Default)]
struct Seen {
    seqs: BTreeMap<String, u64>,
    last_gseq: u64,
}

impl Seen {
    fn take(&mut self, env: &Value, pos: &str) {
        let topic = env["topic"].as_str().expect("topic").to_string();
        let seq = env["seq"].as_u64().expect("seq");
        let last = self.seqs.entry(topic.clone()).or_default();
        assert_eq!(seq, *last + 1, "{topic}: seq {seq} after {last} ({env})");
        *last = seq;
        let gseq = pos_gseq(pos);
        assert!(
            gseq > self.last_gseq,
            "position {pos} after {}",
            self.last_gseq
        );
        self.last_gseq = gseq;
    }
}

/// Publishes `per_topic` messages to each of `topics`, round-robin, on a background
/// thread; returns its handle and the flag it sets when done.
fn publish_in_background(
    addr: std::net::SocketAddr,
    topics: &'static [&'static str],
    per_topic: u64,
) -> (thread::JoinHandle<()>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let handle = thread::spawn(move || {
        let mut conn = HttpConn::connect(addr).unwrap();
        for i in 1..=per_topic {
            for t in topics {
                assert_eq!(
                    publish_on(&mut conn, t, json!({ "i": i }).to_string().as_bytes()),
                    i
                );
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    (handle, done)
}

/// PROTOCOL.md "Positions and resume": an SSE stream following a topic and a subtree,
/// cut three times while messages keep coming (topics under the subtree appear while it
/// is disconnected), resumes with the browser's `Last-Event-ID` each time: every message
/// of every followed topic arrives exactly once, in order; unfollowed topics never.
#[test]
fn sse_resumes_every_topic_and_subtree_with_last_event_id() {
    let server = Server::start(&["--shards", "2", "--history-size", "4096"]);
    let addr = server.addr();
    const TOPICS: &[&str] = &["rs.a", "rs.sub.x", "rs.other", "rs.sub.y.deep", "rs.sub"];
    const PER_TOPIC: u64 = 120;
    let path = "/sse?topic=rs.a&topic=rs.sub.*";
    let mut sse = SseClient::connect(addr, path);
    let (publisher, done) = publish_in_background(addr, TOPICS, PER_TOPIC);

    let mut seen = Seen::default();
    let mut cuts = 0;
    let wanted = 3 * PER_TOPIC; // rs.a, rs.sub.x, rs.sub.y.deep
    let mut got = 0;
    while got < wanted {
        let ev = sse.expect_event(DEFAULT_TIMEOUT);
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        if ev.event == "hello" {
            hello_id(&v);
            continue;
        }
        assert!(v.get("reset").is_none(), "no reset within history: {v}");
        assert_eq!(v["pos"], ev.id.as_str(), "the id is the envelope's pos");
        seen.take(&v, &ev.id);
        got += 1;
        if got % 90 == 0 && cuts < 3 {
            // Drop the stream and come back as a browser does.
            cuts += 1;
            drop(sse);
            sse = SseClient::try_connect(addr, path, &[("Last-Event-ID", &ev.id)]).unwrap();
        }
    }
    publisher.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(cuts, 3);
    assert_eq!(
        seen.seqs,
        BTreeMap::from([
            ("rs.a".to_string(), PER_TOPIC),
            ("rs.sub.x".to_string(), PER_TOPIC),
            ("rs.sub.y.deep".to_string(), PER_TOPIC),
        ]),
        "`rs.other` and `rs.sub` (not below itself) are not followed"
    );
    // Nothing more: the next message is a new one.
    publish(addr, "rs.a", b"\"last\"");
    let ev = next_sse(&mut sse);
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(
        (&v["topic"], &v["seq"]),
        (&json!("rs.a"), &json!(PER_TOPIC + 1))
    );
    let m = metrics(addr);
    assert!(
        metric_sum(&m, "switchboard_router_replays_total").unwrap() >= 3.0,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "switchboard_router_resets_total"), Some(0.0));
}

/// PROTOCOL.md "Positions and resume": a WebSocket resumes with `since` in the query
/// string (replay after the hello, then live), and a `subscribe` op with `since`
/// replays the op's topics after that position before live messages, after its ack.
#[test]
fn ws_resumes_with_since_in_the_query_and_in_the_subscribe_op() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=wr.a&topic=wr.b.*"));
    publish(addr, "wr.a", b"1");
    publish(addr, "wr.b.c", b"2");
    let first = ws.recv_json(DEFAULT_TIMEOUT).unwrap();
    hello_id(&first);
    assert_eq!(
        strip_pos(next_json_raw(&mut ws)),
        json!({"topic":"wr.a","seq":1,"data":1})
    );
    let second = next_json_raw(&mut ws);
    let pos = second["pos"].as_str().unwrap().to_string();
    drop(ws);
    // Missed while away: two on followed topics, one not followed.
    publish(addr, "wr.a", b"3");
    publish(addr, "wr.z", b"4");
    publish(addr, "wr.b.d", b"5");
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic=wr.a&topic=wr.b.*&since={pos}")));
    hello_id(&ws.recv_json(DEFAULT_TIMEOUT).unwrap());
    assert_eq!(next_json(&mut ws), json!({"topic":"wr.a","seq":2,"data":3}));
    assert_eq!(
        next_json(&mut ws),
        json!({"topic":"wr.b.d","seq":1,"data":5})
    );
    publish(addr, "wr.a", b"6");
    assert_eq!(next_json(&mut ws), json!({"topic":"wr.a","seq":3,"data":6}));

    // The subscribe op: only the op's topics are replayed, after the ack.
    let mut op = ws_connect(&server.ws_url("/ws"));
    op.send_json(&json!({"op":"subscribe","topics":["wr.z"],"since":pos}));
    assert_eq!(
        next_json(&mut op),
        json!({"op":"subscribed","topics":["wr.z"]})
    );
    assert_eq!(next_json(&mut op), json!({"topic":"wr.z","seq":1,"data":4}));
    publish(addr, "wr.z", b"7");
    assert_eq!(next_json(&mut op), json!({"topic":"wr.z","seq":2,"data":7}));
}

/// The next JSON message, the hello skipped, `pos` kept.
fn next_json_raw(ws: &mut WsClient) -> Value {
    loop {
        let v = ws.recv_json(DEFAULT_TIMEOUT).expect("a message");
        if v["op"] != "hello" {
            return v;
        }
    }
}

/// PROTOCOL.md "Resets": with `--history-size 3`, a resume from before the oldest
/// retained message gets `{"topic","reset":true,"seq":<last seq>}` first, then what
/// history still holds, then live messages; a resume from within history gets none.
#[test]
fn a_resume_older_than_history_gets_a_reset_before_the_rest() {
    let server = Server::start(&["--shards", "2", "--history-size", "3"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=rz.a"));
    let mut pos = Vec::new();
    for i in 1..=5 {
        publish(addr, "rz.a", i.to_string().as_bytes());
        pos.push(next_json_raw(&mut ws)["pos"].as_str().unwrap().to_string());
    }
    let mut sse =
        SseClient::try_connect(addr, "/sse?topic=rz.a", &[("Last-Event-ID", &pos[0])]).unwrap();
    let reset = next_sse(&mut sse);
    assert_eq!(reset.id, "", "a reset carries no id: {reset:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&reset.data).unwrap(),
        json!({"topic":"rz.a","reset":true,"seq":5})
    );
    for seq in 3..=5 {
        let ev = next_sse(&mut sse);
        assert_eq!(ev.id, pos[seq - 1]);
        assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap()["seq"], seq);
    }
    publish(addr, "rz.a", b"6");
    assert_eq!(
        serde_json::from_str::<Value>(&next_sse(&mut sse).data).unwrap()["seq"],
        6
    );

    // After message 3, history (4, 5, 6) is complete: no reset.
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic=rz.a&since={}", pos[2])));
    for seq in 4..=6 {
        assert_eq!(next_json(&mut ws)["seq"], seq);
    }
    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_router_resets_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_resets_sent_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_history_messages"),
        Some(3.0),
        "{m}"
    );
}

/// PROTOCOL.md "Resets": messages leave history after `--history-ttl`; a resume from
/// before them gets a reset and nothing else but live messages.
#[test]
fn expired_history_gives_a_reset() {
    let server = Server::start(&["--shards", "2", "--history-ttl", "1s"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=tt.a"));
    publish(addr, "tt.a", b"1");
    let pos = next_json_raw(&mut ws)["pos"].as_str().unwrap().to_string();
    publish(addr, "tt.a", b"2");
    assert!(
        wait_until(DEFAULT_TIMEOUT, || metric_sum(
            &metrics(addr),
            "switchboard_history_messages"
        ) == Some(0.0)),
        "history did not expire"
    );
    let mut again = ws_connect(&server.ws_url(&format!("/ws?topic=tt.a&since={pos}")));
    assert_eq!(
        next_json(&mut again),
        json!({"topic":"tt.a","reset":true,"seq":2})
    );
    publish(addr, "tt.a", b"3");
    assert_eq!(
        next_json(&mut again),
        json!({"topic":"tt.a","seq":3,"data":3})
    );
}

/// PROTOCOL.md "Resets": a position from another server instance (another epoch)
/// vouches for nothing: a reset for each pattern (`seq` for a known topic), then all of
/// history for them.
#[test]
fn a_position_of_another_instance_resets_every_pattern() {
    let server = Server::start(&["--shards", "1"]);
    let addr = server.addr();
    publish(addr, "ep.a", b"1");
    publish(addr, "ep.b.c", b"2");
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ep.a&topic=ep.b.*&since=00000000-1"));
    assert_eq!(
        next_json(&mut ws),
        json!({"topic":"ep.a","reset":true,"seq":1})
    );
    assert_eq!(next_json(&mut ws), json!({"topic":"ep.b.*","reset":true}));
    assert_eq!(next_json(&mut ws), json!({"topic":"ep.a","seq":1,"data":1}));
    assert_eq!(
        next_json(&mut ws),
        json!({"topic":"ep.b.c","seq":1,"data":2})
    );
}

/// PROTOCOL.md "Positions and resume": a `since` or `Last-Event-ID` that is not a
/// position is `400` (and `since` needs a topic); in a subscribe op it is an `error`
/// op. The server serves others afterwards.
#[test]
fn bad_positions_are_refused() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for (path, headers) in [
        ("/sse?topic=a&since=42", vec![]),
        ("/sse?topic=a&since=0000000g-1", vec![]),
        ("/sse?topic=a", vec![("Last-Event-ID", "17")]),
        (
            "/sse?topic=a",
            vec![("Last-Event-ID", "0000abcd-99999999999999999999")],
        ),
        ("/poll?topic=a&since=abc", vec![]),
        ("/poll?topic=a&since=0000abcd-", vec![]),
    ] {
        let r = http_request(addr, "GET", path, &headers, b"");
        assert_eq!(r.status, 400, "GET {path} {headers:?}: {}", r.text());
        assert!(
            r.text().contains("since") || r.text().contains("Last-Event-ID"),
            "{}",
            r.text()
        );
    }
    for path in ["/ws?topic=a&since=-1", "/ws?since=0000abcd-1"] {
        match try_ws_connect(&server.ws_url(path)) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400, "{path}"),
            other => panic!("{path}: expected 400, got {:?}", other.map(|_| ())),
        }
    }
    let mut ws = ws_connect(&server.ws_url("/ws"));
    ws.send_json(&json!({"op":"subscribe","topics":["a"],"since":"nope"}));
    let err = next_json(&mut ws);
    assert_eq!(err["op"], "error", "{err}");
    assert!(err["error"].as_str().unwrap().contains("since"), "{err}");
    assert_healthy(addr);
    // An empty Last-Event-ID (no event seen yet) is no position: a plain stream.
    let mut sse = SseClient::try_connect(addr, "/sse?topic=a", &[("Last-Event-ID", "")]).unwrap();
    publish(addr, "a", b"1");
    assert_eq!(
        serde_json::from_str::<Value>(&next_sse(&mut sse).data).unwrap()["seq"],
        1
    );
}

/// History is bounded in topics: past `--history-topics`, the topic published least
/// recently is forgotten (counted), and a later resume through it gets a reset.
#[test]
fn the_topic_limit_forgets_the_oldest_topic() {
    let server = Server::start(&["--shards", "1", "--history-topics", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=lt.*"));
    publish(addr, "lt.a", b"1");
    let pos = next_json_raw(&mut ws)["pos"].as_str().unwrap().to_string();
    publish(addr, "lt.a", b"2");
    publish(addr, "lt.b", b"3");
    publish(addr, "lt.c", b"4");
    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_history_topics_evicted_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_router_topics"),
        Some(2.0),
        "{m}"
    );
    let mut again = ws_connect(&server.ws_url(&format!("/ws?topic=lt.*&since={pos}")));
    assert_eq!(next_json(&mut again), json!({"topic":"lt.*","reset":true}));
    assert_eq!(
        next_json(&mut again),
        json!({"topic":"lt.b","seq":1,"data":3})
    );
    assert_eq!(
        next_json(&mut again),
        json!({"topic":"lt.c","seq":1,"data":4})
    );
}

/// PROTOCOL.md "History": `--history-bytes` bounds history over all topics. Past it the
/// oldest messages of the whole server leave first (counted in `/metrics`): a resume
/// from before them gets a reset for their topic, while the newest topic's history is
/// still complete.
#[test]
fn the_byte_budget_evicts_the_oldest_messages_of_all_topics() {
    const BUDGET: f64 = 64.0 * 1024.0;
    const TOPICS: usize = 100;
    let server = Server::start(&["--shards", "1", "--history-bytes", "64KiB"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=hb.start"));
    publish(addr, "hb.start", b"0");
    let pos = next_json_raw(&mut ws)["pos"].as_str().unwrap().to_string();
    // About 1.4 KB of history each (frame, event, overhead): 200 of them pass 64 KiB.
    let body = json!("x".repeat(500)).to_string();
    let mut conn = HttpConn::connect(addr).unwrap();
    for t in 0..TOPICS {
        for seq in 1..=2 {
            assert_eq!(
                publish_on(&mut conn, &format!("hb.t{t}"), body.as_bytes()),
                seq
            );
        }
    }
    let m = metrics(addr);
    let bytes = metric_sum(&m, "switchboard_history_bytes").expect("the gauge");
    assert!(bytes > 0.0 && bytes <= BUDGET, "{m}");
    assert!(
        metric_sum(&m, "switchboard_history_budget_evictions_total").is_some_and(|n| n > 0.0),
        "{m}"
    );
    let last = format!("hb.t{}", TOPICS - 1);
    let url = format!("/ws?topic=hb.t0&topic={last}&since={pos}");
    let mut again = ws_connect(&server.ws_url(&url));
    assert_eq!(
        next_json(&mut again),
        json!({"topic":"hb.t0","reset":true,"seq":2})
    );
    for seq in 1..=2 {
        let v = next_json(&mut again);
        assert_eq!((&v["topic"], &v["seq"]), (&json!(last), &json!(seq)), "{v}");
    }
}
