//! Resource bounds: connections that are not process file descriptors, connection
//! gauges, slow consumers (PROTOCOL.md "Slow consumers"), request timeouts
//! (PROTOCOL.md "Other endpoints": `--request-timeout`) and every limit's answer and
//! counter (PROTOCOL.md "Limits").

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// Sum over shards of `switchboard_connections{state=...}`.
fn conns_in(text: &str, shards: usize, state: &str) -> f64 {
    (0..shards).map(|s| conns(text, s, state)).sum()
}

/// README "fixed-file table (accepted sockets never become process file descriptors)";
/// PROTOCOL.md "Other endpoints" (`/metrics`: connections by shard and state): with 150
/// WebSocket and 150 SSE subscribers open, the engine's fd count has not grown, the
/// gauges count them, every one is live, and after the clients close the gauges return
/// to 0 (only the `/metrics` request's own connection remains) and the fd count is
/// still where it was.
#[test]
fn connections_are_not_fds_and_gauges_count_them() {
    const EACH: usize = 150;
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    // Warm up every kind of connection once, so that lazily created state exists.
    {
        let mut ws = ws_connect(&server.ws_url("/ws?topic=fd.t"));
        let mut sse = SseClient::connect(addr, "/sse?topic=fd.t");
        publish(addr, "fd.t", b"0");
        next_json(&mut ws);
        next_sse(&mut sse);
    }
    assert!(wait_until(DEFAULT_TIMEOUT, || {
        let text = metrics(addr);
        conns_in(&text, 2, "ws") + conns_in(&text, 2, "sse") == 0.0
    }));
    let fds_before = fd_count(server.pid());

    let mut ws: Vec<WsClient> = (0..EACH)
        .map(|_| ws_connect(&server.ws_url("/ws?topic=fd.t")))
        .collect();
    let mut sse: Vec<SseClient> = (0..EACH)
        .map(|_| SseClient::connect(addr, "/sse?topic=fd.t"))
        .collect();
    let fds_during = fd_count(server.pid());
    let text = metrics(addr);
    assert_eq!(conns_in(&text, 2, "ws"), EACH as f64, "{text}");
    assert_eq!(conns_in(&text, 2, "sse"), EACH as f64, "{text}");
    assert!(
        fds_during <= fds_before,
        "engine fds grew from {fds_before} to {fds_during} with {} connections open",
        2 * EACH
    );
    // All live.
    publish(addr, "fd.t", b"1");
    for c in &mut ws {
        assert_eq!(next_json(c)["seq"], 2);
    }
    for c in &mut sse {
        let ev = next_sse(c);
        assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap()["seq"], 2);
    }

    drop(ws);
    drop(sse);
    let mut last = String::new();
    let settled = wait_until(DEFAULT_TIMEOUT, || {
        last = metrics(addr);
        // The /metrics request's own connection is the only one left.
        metric_sum(&last, "switchboard_connections") == Some(1.0)
            && conns_in(&last, 2, "http") == 1.0
    });
    assert!(settled, "gauges did not return to 0:\n{last}");
    assert!(fd_count(server.pid()) <= fds_before);
    assert_healthy(addr);
}

/// PROTOCOL.md "Slow consumers": with `--max-queued-bytes 256KiB`, a WebSocket and an
/// SSE subscriber that never read while 512 messages of 64 KiB (32 MiB, more than the
/// kernel buffers hold) are published are closed (`switchboard_slow_consumer_closes_total`
/// counts them); what they find when they finally read is an in-order prefix of the
/// messages, then (WebSocket) a close 1013 or the end of the connection, (SSE) the end
/// of the stream. A subscriber on the same topic that reads receives every message in
/// order: the publisher keeps at most 3 messages ahead of it (less than the queue
/// bound), so it is never a slow consumer itself, however slow this machine is.
#[test]
fn slow_consumer_is_closed_and_others_are_not_affected() {
    const N: u64 = 512;
    const AHEAD: u64 = 3;
    let server = Server::start(&["--shards", "2", "--max-queued-bytes", "256KiB"]);
    let addr = server.addr();

    // (Their receive buffers keep the kernel's default size: locking them small makes
    // the final reads crawl, the loopback MSS being larger than such a window.)
    let mut slow_ws = RawWs::connect(addr, "/ws?topic=slow.t");
    let mut slow_sse = SseClient::connect(addr, "/sse?topic=slow.t");

    let good = ws_connect(&server.ws_url("/ws?topic=slow.t"));
    let (mut good, mut conn) = publish_paced(addr, "slow.t", N, AHEAD, good);
    // The reading subscriber is still connected and subscribed.
    publish_on(&mut conn, "slow.t", br#"{"i":"end"}"#);
    assert_eq!(next_json(&mut good)["data"]["i"], "end");

    let mut text = String::new();
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            text = metrics(addr);
            metric_sum(&text, "switchboard_slow_consumer_closes_total") >= Some(2.0)
        }),
        "slow consumers not closed:\n{text}"
    );
    assert_eq!(
        metric_sum(&text, "switchboard_slow_consumer_closes_total"),
        Some(2.0),
        "only the two slow consumers:\n{text}"
    );

    // The slow WebSocket: messages 1..k in order, then a close 1013 or the end.
    let mut next_seq = 1;
    let end = loop {
        match slow_ws.read_frame(DEFAULT_TIMEOUT) {
            Ok(f) if f.opcode == OP_TEXT => {
                let m: Value = serde_json::from_slice(&f.payload).unwrap();
                assert_eq!(m["seq"], next_seq, "slow WebSocket: order");
                next_seq += 1;
            }
            Ok(f) => break Ok(f),
            Err(e) => break Err(e),
        }
    };
    assert!(
        next_seq <= N,
        "the slow WebSocket got everything: it was not slow"
    );
    match end {
        Ok(f) => {
            assert_eq!(
                (f.opcode, close_code(&f.payload)),
                (OP_CLOSE, Some(1013)),
                "{f:?}"
            );
            slow_ws.expect_eof();
        }
        Err(End::Eof | End::Reset) => {}
        Err(End::Timeout) => panic!("slow WebSocket still open after {} messages", next_seq - 1),
    }

    // The slow SSE stream: events 1..k in order, then the end of the stream.
    let mut next_seq = 1;
    while let Some(ev) = slow_sse.next_event(DEFAULT_TIMEOUT) {
        if ev.event == "hello" {
            continue;
        }
        let m: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(m["seq"], next_seq, "slow SSE: order");
        next_seq += 1;
    }
    assert!(
        slow_sse.is_closed(),
        "slow SSE stream still open after {} events",
        next_seq - 1
    );
    assert!(
        next_seq <= N,
        "the slow SSE stream got everything: it was not slow"
    );
    assert_healthy(addr);
}

/// PROTOCOL.md "Other endpoints": "A client has `--request-timeout` to send a complete
/// request and to start its next one on a kept-alive connection." With 500ms: a client
/// that sends half a head and stops is disconnected (possibly after a 408); so is one
/// that sends a head and part of its body; so is one that trickles a head byte by byte for longer than the timeout; so is an idle
/// kept-alive connection. Meanwhile the server serves others, and the WebSocket and SSE
/// subscribers opened before (not subject to the timeout) are still live after those
/// disconnections (the barrier: the slow clients were cut after more than 500ms).
#[test]
fn slowloris_is_disconnected_and_others_are_served() {
    let server = Server::start(&["--shards", "2", "--request-timeout", "500ms"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=sl.t"));
    let mut sse = SseClient::connect(addr, "/sse?topic=sl.t");

    let mut idle = HttpConn::connect(addr).unwrap();
    idle.send_request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(idle.read_response("GET").unwrap().text(), "ok");

    let mut half = tcp_connect(addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Wait: for")
        .unwrap();
    // Others are served while the half request is pending.
    for _ in 0..4 {
        assert_healthy(addr);
    }
    let (got, end) = read_to_end(&mut half, DEFAULT_TIMEOUT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        matches!(end, End::Eof | End::Reset),
        "half request still open after {DEFAULT_TIMEOUT:?}; got {text:?}"
    );
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "{text:?}"
    );

    // A complete head, then only part of the body it announces.
    let mut half_body = tcp_connect(addr).unwrap();
    half_body
        .write_all(&build_request(
            addr,
            "POST",
            "/publish/sl.body",
            &[("Content-Length", "10")],
            b"",
            false,
        ))
        .unwrap();
    half_body.write_all(b"123").unwrap();
    let (got, end) = read_to_end(&mut half_body, DEFAULT_TIMEOUT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        matches!(end, End::Eof | End::Reset),
        "half body still open; got {text:?}"
    );
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "{text:?}"
    );

    // A head trickled byte by byte (about 2.4 s in all) never completes in time.
    let head = build_request(
        addr,
        "GET",
        "/healthz",
        &[("X-Pad", "0123456789")],
        b"",
        true,
    );
    let mut trickle = tcp_connect(addr).unwrap();
    for b in &head {
        if trickle.write_all(std::slice::from_ref(b)).is_err() {
            break; // the server is gone
        }
        thread::sleep(Duration::from_millis(40));
    }
    let (got, end) = read_to_end(&mut trickle, DEFAULT_TIMEOUT);
    let text = String::from_utf8_lossy(&got);
    assert!(
        matches!(end, End::Eof | End::Reset),
        "trickling client still open; got {text:?}"
    );
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408 "),
        "a request that took longer than --request-timeout was answered: {text:?}"
    );

    assert_closed(&mut idle, "idle kept-alive connection");
    assert_healthy(addr);

    publish(addr, "sl.t", b"1");
    assert_eq!(
        next_json(&mut ws)["seq"],
        1,
        "WebSocket subscriber cut by the request timeout"
    );
    let ev = next_sse(&mut sse);
    assert_eq!(serde_json::from_str::<Value>(&ev.data).unwrap()["seq"], 1);
}

/// Clients that vanish at every stage — right after sending a WebSocket handshake with
/// topics, an SSE request, a subscribe op, or a publish — leave nothing behind: the
/// connection gauges return to 0 (only the `/metrics` request's own connection is
/// left), the `switchboard_subscriptions` and `switchboard_topics` gauges to 0, and the
/// topics still work for a new subscriber (PROTOCOL.md "Other endpoints": `/metrics`
/// reports connections by shard and state).
#[test]
fn vanishing_clients_leave_nothing_behind() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for i in 0..80 {
        let mut stream = tcp_connect(addr).unwrap();
        let request = match i % 4 {
            0 => ws_handshake_request(addr, "/ws?topic=gone.t&topic=gone.*", &[]),
            1 => build_request(
                addr,
                "GET",
                "/sse?topic=gone.t&topic=gone.a.*",
                &[],
                b"",
                false,
            ),
            2 => [
                ws_handshake_request(addr, "/ws", &[]),
                client_frame(true, OP_TEXT, br#"{"op":"subscribe","topics":["gone.b"]}"#),
            ]
            .concat(),
            _ => build_request(addr, "POST", "/publish/gone.t", &[], b"1", false),
        };
        stream.write_all(&request).unwrap();
        drop(stream);
    }
    // Fully established ones, dropped without a close handshake.
    let ws: Vec<WsClient> = (0..10)
        .map(|_| ws_connect(&server.ws_url("/ws?topic=gone.t&topic=gone.c.*")))
        .collect();
    let sse: Vec<SseClient> = (0..10)
        .map(|_| SseClient::connect(addr, "/sse?topic=gone.t"))
        .collect();
    assert!(metric_sum(&metrics(addr), "switchboard_subscriptions") >= Some(30.0));
    drop((ws, sse));

    let mut text = String::new();
    let clean = wait_until(DEFAULT_TIMEOUT, || {
        text = metrics(addr);
        metric_sum(&text, "switchboard_connections") == Some(1.0)
            && metric_sum(&text, "switchboard_subscriptions") == Some(0.0)
            && metric_sum(&text, "switchboard_topics") == Some(0.0)
    });
    assert!(clean, "state left behind:\n{text}");

    let mut ws = ws_connect(&server.ws_url("/ws?topic=gone.t"));
    let seq = publish(addr, "gone.t", b"\"again\"");
    assert_eq!(
        next_json(&mut ws),
        json!({"topic": "gone.t", "seq": seq, "data": "again"})
    );
}

/// The `switchboard_limit_hits_total` sample of `limit` on shard 0.
fn limit_hits(addr: std::net::SocketAddr, limit: &str) -> f64 {
    let name = format!("switchboard_limit_hits_total{{shard=\"0\",limit=\"{limit}\"}}");
    metric(&metrics(addr), &name).unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

/// PROTOCOL.md "Limits": each limit is answered with its own status, close code or
/// `error` op, and counted in `switchboard_limit_hits_total{limit}` (once per refusal,
/// under its own label and no other); the server goes on serving.
#[test]
fn every_limit_is_answered_and_counted() {
    const LIMITS: [&str; 8] = [
        "head_bytes",
        "request_line",
        "headers",
        "publish_bytes",
        "ws_message_bytes",
        "subscriptions",
        "topics_per_op",
        "conns_per_ip",
    ];
    let server = Server::start(&[
        "--shards",
        "1",
        "--max-head-bytes",
        "1KiB",
        "--max-headers",
        "8",
        "--max-publish-bytes",
        "100",
        "--max-subscriptions",
        "3",
    ]);
    let addr = server.addr();
    let mut expected = [0.0; LIMITS.len()];
    let mut hit = |limit: &str| {
        let i = LIMITS.iter().position(|l| *l == limit).unwrap();
        expected[i] += 1.0;
        for (l, want) in LIMITS.iter().zip(expected) {
            assert_eq!(limit_hits(addr, l), want, "{l} after a {limit} refusal");
        }
    };

    // Request head larger than --max-head-bytes: 431.
    let big = "v".repeat(1500);
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &[("X-Big", &big)], b"", false),
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert_closed(&mut conn, "431");
    hit("head_bytes");

    // The request line alone longer: 414.
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", &format!("/healthz?{big}"), &[], b"", false),
    );
    assert_eq!(r.status, 414, "{r:?}");
    assert_closed(&mut conn, "414");
    hit("request_line");

    // More than --max-headers: 431.
    let names: Vec<String> = (0..8).map(|i| format!("X-H{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &headers, b"", false),
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert_closed(&mut conn, "431");
    hit("headers");

    // A publish body over --max-publish-bytes, announced or chunked: 413.
    let body = vec![b'x'; 101];
    let r = http_request(addr, "POST", "/publish/lim.t", &[], &body);
    assert_eq!(r.status, 413, "{r:?}");
    hit("publish_bytes");
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "POST", "/publish/lim.t", &[], &body, true),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413 (chunked)");
    hit("publish_bytes");
    assert_eq!(
        publish(addr, "lim.t", &body[..100]),
        1,
        "100 bytes are fine"
    );

    // A WebSocket message larger than the endpoint takes: 1009 from the frame header.
    let mut ws = RawWs::connect(addr, "/ws");
    ws.send(&frame_bytes(
        true,
        0,
        OP_TEXT,
        b"",
        Some([1, 2, 3, 4]),
        Some(64 * 1024 + 1),
    ));
    assert_eq!(ws.expect_close(), Some(1009));
    hit("ws_message_bytes");

    // More topics in a request than --max-subscriptions: 400 on every transport.
    let four = "topic=lim.a&topic=lim.b&topic=lim.c&topic=lim.d";
    for path in ["/sse", "/poll"] {
        let r = http_request(addr, "GET", &format!("{path}?{four}"), &[], b"");
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(
            r.text().contains("at most 3 topics"),
            "{path}: {}",
            r.text()
        );
        hit("subscriptions");
    }
    let (r, _) = exchange(
        addr,
        &ws_handshake_request(addr, &format!("/ws?{four}"), &[]),
    );
    assert_eq!(r.status, 400, "/ws: {r:?}");
    hit("subscriptions");

    // A subscribe op past --max-subscriptions, or with too many topics: an error op, and
    // the connection stays.
    let mut ws = ws_connect(&server.ws_url("/ws?topic=lim.a&topic=lim.b&topic=lim.c"));
    ws.send_json(&json!({"op": "subscribe", "topics": ["lim.d"]}));
    let v = next_json(&mut ws);
    assert_eq!(v["op"], "error", "{v}");
    assert!(v["error"].as_str().unwrap().contains("at most 3"), "{v}");
    hit("subscriptions");
    let many: Vec<String> = (0..65).map(|i| format!("lim.m{i}")).collect();
    ws.send_json(&json!({"op": "unsubscribe", "topics": many}));
    let v = next_json(&mut ws);
    assert_eq!(v["op"], "error", "{v}");
    hit("topics_per_op");
    publish(addr, "lim.a", b"still subscribed");
    assert_eq!(next_json(&mut ws)["data"], "still subscribed");
    assert_healthy(addr);
}

/// PROTOCOL.md "Limits": with `--max-conns-per-ip 2`, a third connection from the same
/// address is answered `429` and closed while the first two are served; once one of them
/// has gone, the address may connect again. Each refusal is counted under
/// `conns_per_ip`.
#[test]
fn connections_per_address_are_limited() {
    let server = Server::start(&["--shards", "1", "--max-conns-per-ip", "2"]);
    let addr = server.addr();
    let mut held: Vec<HttpConn> = (0..2)
        .map(|_| {
            let mut c = HttpConn::connect(addr).expect("connect");
            c.send_request("GET", "/healthz", &[], b"").unwrap();
            let r = c.read_response("GET").expect("an answer");
            assert_eq!((r.status, r.text().as_str()), (200, "ok"));
            c
        })
        .collect();
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &[], b"", false),
    );
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.text(), "at most 2 connections per address\n");
    assert_closed(&mut conn, "429");
    // The two held connections are still served.
    for c in &mut held {
        c.send_request("GET", "/healthz", &[], b"").unwrap();
        assert_eq!(c.read_response("GET").expect("an answer").status, 200);
    }
    held.pop();
    let mut refused_meanwhile = 0.0;
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            let r = http_request(addr, "GET", "/healthz", &[], b"");
            if r.status == 429 {
                refused_meanwhile += 1.0;
            }
            r.status == 200
        }),
        "a connection is admitted again once one has closed"
    );
    drop(held);
    assert!(
        wait_until(DEFAULT_TIMEOUT, || limit_hits(addr, "conns_per_ip")
            == 1.0 + refused_meanwhile),
        "each refusal is counted"
    );
}
