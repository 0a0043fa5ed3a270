//! Direct addresses (PROTOCOL.md "Direct addresses") against the real engine: every
//! WebSocket and SSE connection's first message carries its id; a publish to
//! `client.<id>` reaches that connection only, on whichever shard; a message for a gone
//! connection is dropped and counted, a malformed address is `404`; clients cannot
//! subscribe to the `client` namespace.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

fn ws_hello(ws: &mut WsClient) -> String {
    hello_id(&ws.recv_json(DEFAULT_TIMEOUT).expect("the hello"))
}

/// PROTOCOL.md "Direct addresses": connections on both shards each get a distinct id
/// in their first message; a publish to one connection's address reaches it and no
/// other (each other connection's next message is the broadcast marker published
/// after it).
#[test]
fn a_direct_message_reaches_only_its_connection_on_either_shard() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let (on0, mut others0) = ws_on_shard(&server, 0);
    let (on1, mut others1) = ws_on_shard(&server, 1);
    let mut all: Vec<WsClient> = vec![on0, on1];
    all.append(&mut others0);
    all.append(&mut others1);
    let ids: Vec<String> = all.iter_mut().map(ws_hello).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids are distinct"
    );
    for ws in &mut all {
        ws_subscribe(ws, &["dm.all"]);
    }
    for target in [0, 1] {
        let topic = format!("client.{}", ids[target]);
        let r = http_request(
            addr,
            "POST",
            &format!("/publish/{topic}"),
            &[],
            b"{\"to\":\"you\"}",
        );
        assert_eq!(r.status, 202, "{}", r.text());
        publish(addr, "dm.all", format!("{target}").as_bytes());
        for (i, ws) in all.iter_mut().enumerate() {
            if i == target {
                assert_eq!(
                    next_json(ws),
                    json!({"topic": topic, "seq": 0, "data": {"to": "you"}})
                );
            }
            assert_eq!(
                next_json(ws)["topic"],
                "dm.all",
                "connection #{i}: nothing before the marker"
            );
        }
    }
    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_direct_delivered_total"),
        Some(2.0),
        "{m}"
    );
}

/// PROTOCOL.md "Direct addresses": an SSE stream's first event is `event: hello`; its
/// address reaches it (`seq` 0, `pos` as the id); once the stream is gone, messages
/// for it are accepted and dropped (counted), and do not reach the connections that
/// come after it; an address that is not an id, or names a shard that does not exist,
/// is `404`.
#[test]
fn sse_addresses_work_gone_ones_drop_and_malformed_ones_are_404() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut sse = SseClient::connect(addr, "/sse?topic=ds.t");
    let hello = sse.expect_event(DEFAULT_TIMEOUT);
    assert_eq!((hello.event.as_str(), hello.id.as_str()), ("hello", ""));
    let id = hello_id(&serde_json::from_str(&hello.data).unwrap());
    let path = format!("/publish/client.{id}");
    assert_eq!(http_request(addr, "POST", &path, &[], b"1").status, 202);
    let ev = next_sse(&mut sse);
    let v = serde_json::from_str::<Value>(&ev.data).unwrap();
    assert_eq!(v["pos"], ev.id.as_str());
    assert_eq!(
        strip_pos(v),
        json!({"topic": format!("client.{id}"), "seq": 0, "data": 1})
    );
    drop(sse);
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            let m = metrics(addr);
            (0..2).map(|s| conns(&m, s, "sse")).sum::<f64>() == 0.0
        }),
        "the stream never closed"
    );
    // Whoever gets the slot next has another secret.
    let mut next: Vec<SseClient> = (0..4)
        .map(|_| SseClient::connect(addr, "/sse?topic=ds.t"))
        .collect();
    assert_eq!(http_request(addr, "POST", &path, &[], b"2").status, 202);
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            metric_sum(&metrics(addr), "switchboard_direct_dropped_total") == Some(1.0)
        }),
        "the message for the closed stream was not dropped"
    );
    publish(addr, "ds.t", b"\"marker\"");
    for c in &mut next {
        let first = serde_json::from_str::<Value>(&next_sse(c).data).unwrap();
        assert_eq!(first["topic"], "ds.t", "the marker comes first: {first}");
    }
    for bad in [
        "0".repeat(32),
        format!("ff{}", &id[2..]),
        id.to_uppercase(),
        format!("{id}.x"),
    ] {
        let r = http_request(addr, "POST", &format!("/publish/client.{bad}"), &[], b"x");
        assert_eq!(r.status, 404, "client.{bad}: {}", r.text());
    }
    assert_healthy(addr);
}

/// PROTOCOL.md "Direct addresses": subscribing to anything in the `client` namespace is
/// refused (`400` in a query, an `error` op on a WebSocket, which stays usable).
#[test]
fn the_client_namespace_cannot_be_subscribed() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for path in [
        "/sse?topic=client.*",
        "/sse?topic=client",
        "/sse?topic=a&topic=client.x",
    ] {
        let r = http_request(addr, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains("reserved"), "{}", r.text());
    }
    match try_ws_connect(&server.ws_url("/ws?topic=client.*")) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
    let mut ws = ws_connect(&server.ws_url("/ws"));
    let id = ws_hello(&mut ws);
    for topics in [json!(["client.*"]), json!([format!("client.{id}")])] {
        ws.send_json(&json!({"op": "subscribe", "topics": topics}));
        let err = next_json(&mut ws);
        assert_eq!(err["op"], "error", "{err}");
    }
    ws.send_json(&json!({"op": "unsubscribe", "topics": [format!("client.{id}")]}));
    assert_eq!(next_json(&mut ws)["op"], "error");
    // Its own address still works.
    assert_eq!(
        http_request(addr, "POST", &format!("/publish/client.{id}"), &[], b"1").status,
        202
    );
    assert_eq!(next_json(&mut ws)["data"], 1);
}
