//! Publish/subscribe semantics against the real engine: the envelope, the WebSocket ops,
//! subtree patterns, ordering and sequence numbers, fan-out across shards.
//! The authority is PROTOCOL.md; each test cites the section it checks.
//!
//! Barriers: where a test checks that something does NOT arrive, it publishes a marker
//! afterwards and checks what arrives before the marker. This relies on the router
//! being the single point that orders every publish (PROTOCOL.md "Server-Sent Events":
//! the SSE `id` is "the router-wide sequence number ... in the order the messages were
//! published").

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// PROTOCOL.md "The envelope": every message is exactly `{"topic","seq","pos","data"}`;
/// `data` is the body when the body is one JSON value (surrounding whitespace trimmed),
/// otherwise the body as a JSON string (`hello` -> `"hello"`, empty -> `""`).
/// "Publishing": the answer is `202` `{"topic","seq"}`.
#[test]
fn ws_envelope_for_json_and_text_bodies() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws?topic=env.t"));

    // The compact JSON case, byte for byte as PROTOCOL.md shows it.
    assert_eq!(publish(server.addr(), "env.t", br#"{"text":"hello"}"#), 1);
    let text = next_text(&mut ws);
    let pos = serde_json::from_str::<Value>(&text).unwrap()["pos"]
        .as_str()
        .expect("pos")
        .to_string();
    pos_gseq(&pos);
    assert_eq!(
        text,
        format!(r#"{{"topic":"env.t","seq":1,"pos":"{pos}","data":{{"text":"hello"}}}}"#)
    );

    let cases: Vec<(&[u8], Value)> = vec![
        (b"hello", json!("hello")),
        (b"", json!("")),
        (
            b"line one\nline two\r\nline three\n",
            json!("line one\nline two\r\nline three\n"),
        ),
        (br#""a JSON string""#, json!("a JSON string")),
        (b"  [1, 2, {\"x\": null}]  \n", json!([1, 2, {"x": null}])),
        (b"42", json!(42)),
        (b"-1.5e3", json!(-1500.0)),
        (b"true", json!(true)),
        (b"false", json!(false)),
        (b"null", json!(null)),
        (
            b"{\n  \"multi\": [\"line\",\n 1]\n}",
            json!({"multi": ["line", 1]}),
        ),
        (br#"{"a":"#, json!(r#"{"a":"#)),     // not JSON: a string
        (b"[1] [2]", json!("[1] [2]")),       // two JSON values: a string
        (b"{\"a\":1}x", json!("{\"a\":1}x")), // trailing garbage: a string
        (
            br#"tab	quote" backslash\ "#,
            json!("tab\tquote\" backslash\\ "),
        ),
        (
            "h\u{e9}llo \u{2713} \u{1F600}".as_bytes(),
            json!("h\u{e9}llo \u{2713} \u{1F600}"),
        ),
        (
            br#"{"nested":{"deep":[{"k":"v"}]},"n":-0.25}"#,
            json!({"nested":{"deep":[{"k":"v"}]},"n":-0.25}),
        ),
    ];
    for (i, (body, data)) in cases.iter().enumerate() {
        let seq = publish(server.addr(), "env.t", body);
        assert_eq!(seq, i as u64 + 2, "seq of publish #{}", i + 2);
        let text = next_text(&mut ws);
        let got: Value = strip_pos(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("envelope is not JSON ({e}): {text:?}")),
        );
        assert_eq!(
            got,
            json!({"topic": "env.t", "seq": seq, "data": data}),
            "body {:?} gave {text:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(got.as_object().unwrap().len(), 3, "{text}");
    }
}

/// PROTOCOL.md "The envelope": `seq` is per topic, starting at 1 and counting every
/// publish to that topic, whoever subscribes (also when nobody does).
#[test]
fn seq_is_per_topic_and_counts_without_subscribers() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    assert_eq!(publish(addr, "s.one", b"1"), 1);
    assert_eq!(publish(addr, "s.one", b"2"), 2);
    assert_eq!(publish(addr, "s.two", b"1"), 1);
    assert_eq!(publish(addr, "s", b"1"), 1);
    assert_eq!(publish(addr, "s.one", b"3"), 3);
    let mut ws = ws_connect(&server.ws_url("/ws?topic=s.one"));
    assert_eq!(publish(addr, "s.one", b"4"), 4);
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "s.one", "seq": 4, "data": 4})
    );
}

/// PROTOCOL.md "Topics": `ami.endpoint.PJSIP/101` is a topic; in the publish path `/`
/// is written `%2F`, in a query string both `PJSIP%2F101` and `PJSIP/101` work; all the
/// allowed punctuation passes; a 200-byte topic is valid.
#[test]
fn topics_with_slash_punctuation_and_max_length() {
    let server = Server::start(&["--shards", "2"]);
    let mut plain = ws_connect(&server.ws_url("/ws?topic=ami.endpoint.PJSIP/101"));
    let mut encoded = ws_connect(&server.ws_url("/ws?topic=ami.endpoint.PJSIP%2F101"));
    let mut sse = SseClient::connect(server.addr(), "/sse?topic=ami.endpoint.PJSIP%2F101");
    assert_eq!(
        publish(
            server.addr(),
            "ami.endpoint.PJSIP%2F101",
            b"{\"state\":\"ringing\"}"
        ),
        1
    );
    let want = json!({"topic": "ami.endpoint.PJSIP/101", "seq": 1, "data": {"state": "ringing"}});
    assert_eq!(next_json(&mut plain), want);
    assert_eq!(next_json(&mut encoded), want);
    let ev = next_sse(&mut sse);
    assert_eq!(
        strip_pos(serde_json::from_str::<Value>(&ev.data).unwrap()),
        want
    );

    // Every allowed punctuation byte (percent-encoded where a URL needs it).
    let topic = "p.-_:/@+=~!$'(),;.x";
    let encoded_topic = "p.-_:%2F@+=~!$'(),;.x";
    let mut ws = ws_connect(&server.ws_url("/ws?topic=p.*"));
    assert_eq!(publish(server.addr(), encoded_topic, b"1"), 1);
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": topic, "seq": 1, "data": 1})
    );

    // 200 bytes: the longest topic.
    let long = format!("l.{}", "y".repeat(198));
    assert_eq!(long.len(), 200);
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?topic={long}")));
    assert_eq!(publish(server.addr(), &long, b"\"x\""), 1);
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": long, "seq": 1, "data": "x"})
    );
}

/// PROTOCOL.md "WebSocket": `{"op":"subscribe","topics":[...]}` is answered
/// `{"op":"subscribed","topics":[...]}` once live: a publish after the ack reaches the
/// connection, for exact topics and subtrees.
#[test]
fn subscribe_op_acks_listing_topics_then_delivers() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws"));
    ws.send_text(r#"{"op":"subscribe","topics":["ops.a","ops.b.*"]}"#);
    assert_eq!(
        next_text(&mut ws),
        r#"{"op":"subscribed","topics":["ops.a","ops.b.*"]}"#
    );
    assert_eq!(publish(server.addr(), "ops.a", b"1"), 1);
    assert_eq!(publish(server.addr(), "ops.b.c", b"2"), 1);
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "ops.a", "seq": 1, "data": 1})
    );
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "ops.b.c", "seq": 1, "data": 2})
    );
    // A second subscribe on the same connection adds to the first.
    ws_subscribe(&mut ws, &["ops.c"]);
    publish(server.addr(), "ops.c", b"3");
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "ops.c", "seq": 1, "data": 3})
    );
}

/// PROTOCOL.md "WebSocket": `unsubscribe` is answered `{"op":"unsubscribed","topics":[..]}`
/// and "no message of `a` is queued after it". A publisher keeps publishing to the topic
/// while the client unsubscribes; after the ack, nothing of that topic may arrive before a
/// marker published (on another, still subscribed topic) after the publisher stopped.
#[test]
fn unsubscribe_ack_then_no_message_of_that_topic() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=u.a&topic=u.marker"));

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published) = (stop.clone(), published.clone());
        thread::spawn(move || {
            let mut conn = HttpConn::connect(addr).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let seq = publish_on(&mut conn, "u.a", b"{\"k\":1}");
                published.store(seq, Ordering::SeqCst);
            }
        })
    };
    // Traffic flows: a few messages arrive, in order.
    let mut expected_seq = 1;
    while expected_seq <= 5 {
        let m = next_json(&mut ws);
        assert_eq!(
            (&m["topic"], &m["seq"]),
            (&json!("u.a"), &json!(expected_seq))
        );
        expected_seq += 1;
    }
    ws.send_text(r#"{"op":"unsubscribe","topics":["u.a"]}"#);
    // Until the ack, u.a messages may still come (in order, none lost).
    loop {
        let m = next_json(&mut ws);
        if m.get("op").is_some() {
            assert_eq!(m, json!({"op": "unsubscribed", "topics": ["u.a"]}));
            break;
        }
        assert_eq!(
            (&m["topic"], &m["seq"]),
            (&json!("u.a"), &json!(expected_seq))
        );
        expected_seq += 1;
    }
    // The publisher goes on for a while after the ack, then stops.
    let at_ack = published.load(Ordering::SeqCst);
    assert!(
        wait_until(DEFAULT_TIMEOUT, || published.load(Ordering::SeqCst)
            >= at_ack + 20),
        "publisher stalled"
    );
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    publish(addr, "u.marker", b"\"marker\"");
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "u.marker", "seq": 1, "data": "marker"}),
        "a message of an unsubscribed topic arrived after the unsubscribed ack"
    );
    // Re-subscribing works again.
    ws_subscribe(&mut ws, &["u.a"]);
    let seq = publish(addr, "u.a", b"2");
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "u.a", "seq": seq, "data": 2})
    );
}

/// PROTOCOL.md "WebSocket": anything invalid gets `{"op":"error","error":"..."}` and
/// the connection stays open (and keeps its subscriptions).
#[test]
fn invalid_ops_get_error_and_connection_stays_usable() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws?topic=inv.t"));
    let too_many: Vec<String> = (0..65).map(|i| format!("inv.many.{i}")).collect();
    let too_many = json!({"op": "subscribe", "topics": too_many}).to_string();
    let invalid: Vec<&str> = vec![
        "not json",
        "",
        "{",
        "[]",
        "\"subscribe\"",
        "42",
        "null",
        r#"{"topics":["a"]}"#,
        r#"{"op":"dance","topics":["a"]}"#,
        r#"{"op":1,"topics":["a"]}"#,
        r#"{"op":"subscribe"}"#,
        r#"{"op":"subscribe","topics":"a"}"#,
        r#"{"op":"subscribe","topics":[1]}"#,
        r#"{"op":"subscribe","topics":["bad topic"]}"#,
        r#"{"op":"subscribe","topics":["*"]}"#,
        r#"{"op":"subscribe","topics":["a.*.b"]}"#,
        r#"{"op":"subscribe","topics":["a..b"]}"#,
        r#"{"op":"subscribe","topics":[".a"]}"#,
        r#"{"op":"subscribe","topics":["a."]}"#,
        r#"{"op":"subscribe","topics":["a?b"]}"#,
        r#"{"op":"subscribe","topics":["caf\u00e9"]}"#,
        r#"{"op":"unsubscribe","topics":["a b"]}"#,
        &too_many,
    ];
    for op in &invalid {
        ws.send_text(op);
        let reply = next_json(&mut ws);
        assert_eq!(reply["op"], "error", "{op:?} -> {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{op:?} -> {reply}"
        );
        assert_eq!(reply.as_object().unwrap().len(), 2, "{op:?} -> {reply}");
    }
    // Still open, still subscribed, still taking ops.
    assert_eq!(publish(server.addr(), "inv.t", b"1"), 1);
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "inv.t", "seq": 1, "data": 1})
    );
    ws_subscribe(&mut ws, &["inv.u"]);
    publish(server.addr(), "inv.u", b"2");
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "inv.u", "seq": 1, "data": 2})
    );
}

/// PROTOCOL.md "WebSocket": at most 64 topics per op and 256 subscriptions per
/// connection: 64 per op and 256 in all are accepted; the 257th is an error, the
/// connection stays usable.
#[test]
fn subscription_limits_per_op_and_per_connection() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws"));
    for op in 0..4 {
        let topics: Vec<String> = (0..64).map(|i| format!("lim.{op}.{i}")).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        ws_subscribe(&mut ws, &refs);
    }
    ws.send_text(r#"{"op":"subscribe","topics":["lim.extra"]}"#);
    let reply = next_json(&mut ws);
    assert_eq!(reply["op"], "error", "257th subscription: {reply}");
    // The first and the last of the 256 are live.
    publish(server.addr(), "lim.0.0", b"1");
    publish(server.addr(), "lim.extra", b"2");
    publish(server.addr(), "lim.3.63", b"3");
    assert_eq!(next_json(&mut ws)["topic"], "lim.0.0");
    assert_eq!(
        next_json(&mut ws)["topic"],
        "lim.3.63",
        "the refused subscription must not deliver"
    );
}

/// PROTOCOL.md "Topics": `a.*` matches the whole subtree strictly below `a` (`a.b`,
/// `a.b.c`) but not `a` itself, nor `ab.c`; the envelope names the real topic.
/// On WebSocket and SSE.
#[test]
fn subtree_pattern_matches_strictly_below() {
    let server = Server::start(&["--shards", "2"]);
    let mut subs = vec![
        Sub::ws(&server, "topic=a.*"),
        Sub::sse(&server, "topic=a.*"),
    ];
    let addr = server.addr();
    for t in [
        "a",
        "ab.c",
        "a.b",
        "b.a",
        "a.b.c",
        "ab",
        "x.a.b",
        "a.b.c.d.e",
    ] {
        publish(addr, t, format!("\"{t}\"").as_bytes());
    }
    publish(addr, "a.marker", b"\"end\"");
    for sub in &mut subs {
        let mut got = Vec::new();
        loop {
            let m = sub.next();
            assert_eq!(m["seq"], 1, "{m}");
            let topic = m["topic"].as_str().unwrap().to_string();
            if topic == "a.marker" {
                break;
            }
            assert_eq!(m["data"], topic.as_str(), "{m}");
            got.push(topic);
        }
        assert_eq!(got, ["a.b", "a.b.c", "a.b.c.d.e"], "{}", sub.kind());
    }
}

/// PROTOCOL.md "The envelope": "A message that matches several of one connection's
/// subscriptions (`a.b` and `a.*`) is delivered once" (subscriptions from the query
/// string and from ops, exact and nested subtrees).
#[test]
fn overlapping_subscriptions_deliver_once() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=d.b&topic=d.*"));
    ws_subscribe(&mut ws, &["d.b.*", "d.b.c"]);
    let mut sse = Sub::sse(&server, "topic=d.b&topic=d.*&topic=d.b.*&topic=d.b.c");
    for i in 1..=3 {
        publish(addr, "d.b", i.to_string().as_bytes());
    }
    for i in 1..=2 {
        publish(addr, "d.b.c", i.to_string().as_bytes());
    }
    publish(addr, "d.z", b"1");
    let want = [
        ("d.b", 1),
        ("d.b", 2),
        ("d.b", 3),
        ("d.b.c", 1),
        ("d.b.c", 2),
        ("d.z", 1),
    ];
    let mut ws = Sub::Ws(ws);
    for sub in [&mut ws, &mut sse] {
        let mut got = Vec::new();
        while got.last().is_none_or(|(t, _)| *t != "d.z") {
            let m = sub.next();
            assert_eq!(m["data"], m["seq"], "{m}");
            got.push((
                m["topic"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
            ));
        }
        let got: Vec<(&str, u64)> = got.iter().map(|(t, s)| (t.as_str(), *s)).collect();
        assert_eq!(got, want, "{}", sub.kind());
    }
}

/// PROTOCOL.md "The envelope": every subscriber receives a topic's messages in `seq`
/// order, `seq` counting 1, 2, 3... 300 messages interleaved on two topics reach WS and
/// SSE subscribers of either topic and of both (through a subtree), nothing lost,
/// duplicated or reordered; SSE ids increase along each stream ("Server-Sent Events":
/// the id "increases across all topics of the server, in the order the messages were
/// published").
#[test]
fn ordering_300_messages_on_two_topics_ws_and_sse() {
    const N: u64 = 300;
    let server = Server::start(&["--shards", "2"]);
    let mut subs = Vec::new();
    for query in [
        "topic=ord.a",
        "topic=ord.b",
        "topic=ord.*",
        "topic=ord.a&topic=ord.b",
    ] {
        for _ in 0..2 {
            subs.push((query, Sub::ws(&server, query)));
            subs.push((query, Sub::sse(&server, query)));
        }
    }
    let mut conn = HttpConn::connect(server.addr()).unwrap();
    for i in 0..N {
        let topic = if i % 3 == 0 { "ord.b" } else { "ord.a" };
        publish_on(&mut conn, topic, json!({"i": i}).to_string().as_bytes());
    }
    let count_a = (0..N).filter(|i| i % 3 != 0).count() as u64;
    let count_b = N - count_a;
    for (query, sub) in &mut subs {
        let wants_a = query.contains("ord.a") || query.contains("ord.*");
        let wants_b = query.contains("ord.b") || query.contains("ord.*");
        let total = u64::from(wants_a) * count_a + u64::from(wants_b) * count_b;
        let mut next_seq: HashMap<String, u64> = HashMap::new();
        for _ in 0..total {
            let m = sub.next();
            let topic = m["topic"].as_str().unwrap().to_string();
            assert!(
                (topic == "ord.a" && wants_a) || (topic == "ord.b" && wants_b),
                "{} {query}: unexpected {m}",
                sub.kind()
            );
            let want_seq = next_seq.entry(topic.clone()).or_insert(1);
            assert_eq!(m["seq"], *want_seq, "{} {query}: {m}", sub.kind());
            *want_seq += 1;
            // The body tells which publish it was: the i-th went to ord.b iff i % 3 == 0,
            // and its seq is its rank among that topic's publishes.
            let i = m["data"]["i"].as_u64().unwrap();
            let rank = (0..=i)
                .filter(|j| (j % 3 == 0) == (topic == "ord.b"))
                .count() as u64;
            assert_eq!(m["seq"], rank, "{m}");
        }
    }
    // Nothing more: a final marker on both topics is the next message everyone gets.
    publish_on(&mut conn, "ord.a", b"\"end\"");
    publish_on(&mut conn, "ord.b", b"\"end\"");
    for (query, sub) in &mut subs {
        let m = sub.next();
        assert_eq!(m["data"], "end", "{} {query}: {m}", sub.kind());
    }
}

/// PROTOCOL.md "The envelope" (`seq` "whoever subscribes and on whichever shard",
/// subscribers receive in `seq` order) with `--shards 2`: 24 WebSocket and 24 SSE
/// subscribers land on both shards (the per-shard `switchboard_connections` gauges of
/// GET /metrics prove it), four publishers on their own connections publish at once,
/// and every subscriber gets every message in `seq` order, each `seq` carrying the body
/// whose `202` answered that `seq`.
#[test]
fn across_shards_every_subscriber_gets_every_message_in_order() {
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 50;
    let server = Server::start(&["--shards", "2"]);
    assert_eq!(server.shards(), 2);
    let mut subs = Vec::new();
    for i in 0..24 {
        let query = if i % 4 == 3 { "topic=x.*" } else { "topic=x.t" };
        subs.push(Sub::ws(&server, query));
        subs.push(Sub::sse(&server, query));
    }
    let text = metrics(server.addr());
    for shard in 0..2 {
        assert!(
            conns(&text, shard, "ws") > 0.0,
            "no WebSocket on shard {shard}:\n{text}"
        );
        assert!(
            conns(&text, shard, "sse") > 0.0,
            "no SSE stream on shard {shard}:\n{text}"
        );
    }
    let ws_total = conns(&text, 0, "ws") + conns(&text, 1, "ws");
    let sse_total = conns(&text, 0, "sse") + conns(&text, 1, "sse");
    assert_eq!((ws_total, sse_total), (24.0, 24.0), "{text}");

    let addr = server.addr();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            thread::spawn(move || {
                let mut conn = HttpConn::connect(addr).unwrap();
                (0..PER_PUBLISHER)
                    .map(|i| {
                        let body = json!({"p": p, "i": i});
                        (
                            publish_on(&mut conn, "x.t", body.to_string().as_bytes()),
                            body,
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_seq = HashMap::new();
    for p in publishers {
        for (seq, body) in p.join().unwrap() {
            assert!(
                by_seq.insert(seq, body).is_none(),
                "seq {seq} answered twice"
            );
        }
    }
    let total = PUBLISHERS * PER_PUBLISHER;
    assert_eq!(
        by_seq.keys().copied().collect::<BTreeSet<_>>(),
        (1..=total).collect(),
        "the 202 answers' seqs are 1..={total}"
    );
    for (n, sub) in subs.iter_mut().enumerate() {
        for seq in 1..=total {
            let m = sub.next();
            assert_eq!(
                m,
                json!({"topic": "x.t", "seq": seq, "data": by_seq[&seq]}),
                "subscriber #{n} ({})",
                sub.kind()
            );
        }
    }
}

/// PROTOCOL.md "WebSocket": the `101` is sent "only once those subscriptions are live:
/// every message published after the client has seen the `101` reaches it"; the same for
/// the `subscribed` ack and the SSE `200`. Subscribers (WebSocket by query, by op, SSE)
/// join on both shards while a publisher publishes without pause: each one's messages
/// are a gapless run of `seq`s that starts no later than the first publish sent after
/// it was live, and ends with the final marker.
#[test]
fn subscribers_joining_during_publishing_get_every_later_message() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, acked) = (stop.clone(), acked.clone());
        thread::spawn(move || {
            let mut conn = HttpConn::connect(addr).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let seq = publish_on(&mut conn, "race.t", b"0");
                acked.store(seq, Ordering::SeqCst);
            }
        })
    };
    assert!(wait_until(DEFAULT_TIMEOUT, || acked.load(Ordering::SeqCst) >= 10));
    let mut subs = Vec::new();
    for i in 0..24 {
        let sub = match i % 3 {
            0 => Sub::ws(&server, "topic=race.t"),
            1 => {
                let mut ws = ws_connect(&server.ws_url("/ws"));
                ws.send_json(&json!({"op": "subscribe", "topics": ["race.*"]}));
                // Messages may only come after the ack.
                assert_eq!(
                    next_json(&mut ws),
                    json!({"op": "subscribed", "topics": ["race.*"]})
                );
                Sub::Ws(ws)
            }
            _ => Sub::sse(&server, "topic=race.t"),
        };
        // Publishes up to `acked` were answered before the subscription was live; the
        // one in flight may have been sent before; every later one must arrive.
        subs.push((acked.load(Ordering::SeqCst) + 2, sub));
    }
    let last_live = acked.load(Ordering::SeqCst);
    assert!(wait_until(DEFAULT_TIMEOUT, || acked.load(Ordering::SeqCst)
        >= last_live + 20));
    stop.store(true, Ordering::SeqCst);
    publisher.join().unwrap();
    let end = publish(addr, "race.t", b"\"end\"");
    for (n, (must_from, sub)) in subs.iter_mut().enumerate() {
        let must_from = *must_from;
        let first = sub.next();
        let first_seq = first["seq"].as_u64().unwrap();
        assert!(
            first_seq <= must_from,
            "subscriber #{n} ({}): first message seq {first_seq}, but every seq from \
             {must_from} was published after it was live",
            sub.kind()
        );
        let mut seq = first_seq;
        while seq < end {
            let m = sub.next();
            assert_eq!(m["seq"], seq + 1, "subscriber #{n} ({}): gap", sub.kind());
            seq += 1;
        }
    }
}

/// PROTOCOL.md "The envelope" (`seq` "whoever subscribes and on whichever shard") and
/// "WebSocket" (`unsubscribe`): the router forwards a topic to a shard while that shard
/// has a subscriber, whatever the other shard does: a subscriber on each shard, one
/// unsubscribes (exact and subtree), the other keeps receiving; the last one leaves,
/// a new one on the other shard receives again.
#[test]
fn interest_follows_subscribers_on_each_shard() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let (mut a, spare_a) = ws_on_shard(&server, 0);
    let (mut b, _spare_b) = ws_on_shard(&server, 1);
    ws_subscribe(&mut a, &["it.t", "it.*", "it.ma"]);
    ws_subscribe(&mut b, &["it.t", "it.x", "it.mb"]);

    let seq = publish(addr, "it.t", b"1");
    assert_eq!(next_json(&mut a)["seq"], seq);
    assert_eq!(next_json(&mut b)["seq"], seq);

    // a leaves it.t and it.*; b still gets both, a gets nothing before its marker.
    a.send_text(r#"{"op":"unsubscribe","topics":["it.t","it.*"]}"#);
    assert_eq!(
        next_json(&mut a),
        json!({"op": "unsubscribed", "topics": ["it.t", "it.*"]})
    );
    let t2 = publish(addr, "it.t", b"2");
    let x1 = publish(addr, "it.x", b"3");
    publish(addr, "it.ma", b"\"marker\"");
    assert_eq!(
        next_json(&mut a)["topic"],
        "it.ma",
        "a message after unsubscribing"
    );
    assert_eq!(
        next_json(&mut b),
        json!({"topic": "it.t", "seq": t2, "data": 2})
    );
    assert_eq!(
        next_json(&mut b),
        json!({"topic": "it.x", "seq": x1, "data": 3})
    );

    // b goes away entirely; a subscribes again and receives.
    drop(b);
    assert!(wait_until(DEFAULT_TIMEOUT, || conns(
        &metrics(addr),
        1,
        "ws"
    ) == spare_a.len() as f64));
    ws_subscribe(&mut a, &["it.x"]);
    let x2 = publish(addr, "it.x", b"4");
    assert_eq!(
        next_json(&mut a),
        json!({"topic": "it.x", "seq": x2, "data": 4})
    );
    // And a new subscriber on shard 1.
    let (mut c, _spare_c) = ws_on_shard(&server, 1);
    ws_subscribe(&mut c, &["it.*"]);
    let t3 = publish(addr, "it.t", b"5");
    assert_eq!(
        next_json(&mut c),
        json!({"topic": "it.t", "seq": t3, "data": 5})
    );
}

/// PROTOCOL.md "WebSocket": "`topic` parameters (any number, up to 256) subscribe at
/// connect time": 256 of them are all live; duplicates (in the query and again by op)
/// still deliver each message once.
#[test]
fn many_and_duplicate_query_topics() {
    let server = Server::start(&["--shards", "2"]);
    let query: Vec<String> = (0..256).map(|i| format!("topic=q.{i}")).collect();
    let mut ws = ws_connect(&server.ws_url(&format!("/ws?{}", query.join("&"))));
    for t in ["q.0", "q.128", "q.255"] {
        publish(server.addr(), t, b"1");
        assert_eq!(next_json(&mut ws)["topic"], t);
    }
    let mut dup = ws_connect(&server.ws_url("/ws?topic=dup.t&topic=dup.t&topic=dup.*"));
    ws_subscribe(&mut dup, &["dup.t", "dup.t"]);
    let mut sse = Sub::sse(&server, "topic=dup.t&topic=dup.t&topic=dup.*");
    publish(server.addr(), "dup.t", b"1");
    publish(server.addr(), "dup.t", b"2");
    publish(server.addr(), "dup.end", b"3");
    let mut dup = Sub::Ws(dup);
    for sub in [&mut dup, &mut sse] {
        for (topic, seq) in [("dup.t", 1), ("dup.t", 2), ("dup.end", 1)] {
            let m = sub.next();
            assert_eq!(
                (&m["topic"], &m["seq"]),
                (&json!(topic), &json!(seq)),
                "{}",
                sub.kind()
            );
        }
    }
}

/// PROTOCOL.md "WebSocket": "256 subscriptions per connection" also holds when the
/// subscribe ops are sent back to back without waiting for their acks: of five ops of
/// 64 new topics each, at most four are acked `subscribed` (the others get `error`),
/// and at most 256 of the 320 topics deliver.
#[test]
fn back_to_back_subscribes_respect_the_256_limit() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws"));
    let topics: Vec<Vec<String>> = (0..5)
        .map(|op| (0..64).map(|i| format!("bb.{op}.{i}")).collect())
        .collect();
    for t in &topics {
        ws.send_json(&json!({"op": "subscribe", "topics": t}));
    }
    let replies: Vec<Value> = (0..5).map(|_| next_json(&mut ws)).collect();
    let acked = replies.iter().filter(|r| r["op"] == "subscribed").count();
    let errors = replies.iter().filter(|r| r["op"] == "error").count();
    let kinds: Vec<&Value> = replies.iter().map(|r| &r["op"]).collect();
    assert_eq!((acked, errors), (4, 1), "replies: {kinds:?}");
    // Count what is delivered: one publish per topic, then a marker on a subscribed one.
    let addr = server.addr();
    let mut conn = HttpConn::connect(addr).unwrap();
    for t in topics.iter().flatten() {
        publish_on(&mut conn, t, b"1");
    }
    let marker_topic = replies
        .iter()
        .find_map(|r| r["topics"].get(0).and_then(Value::as_str))
        .expect("a subscribed op")
        .to_string();
    publish_on(&mut conn, &marker_topic, b"\"marker\"");
    let mut delivered = 0;
    while next_json(&mut ws)["data"] != "marker" {
        delivered += 1;
    }
    assert_eq!(delivered, 256, "subscriptions live on one connection");
}
