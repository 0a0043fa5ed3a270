//! Graceful drain (PROTOCOL.md "Stopping"): SIGTERM or SIGINT stops accepting, closes
//! WebSockets with 1001, ends SSE streams after a final `retry:` hint, answers held
//! long-polls, flushes what was queued, and the process exits 0 by itself.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::Value;
use switchboard_e2e::*;

/// Messages published before the signal, none read by the subscribers until after it.
const MESSAGES: u64 = 20;

/// An SSE stream read as raw bytes, to see exactly what ends it.
fn raw_sse(server: &Server, topic: &str) -> TcpStream {
    let mut stream = tcp_connect(server.addr()).expect("connect");
    let request = format!(
        "GET /sse?topic={topic} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, DEFAULT_TIMEOUT, |b| {
        String::from_utf8_lossy(b).contains("event: hello")
    });
    stream
}

/// The `data:` lines of an event stream, parsed as JSON, hellos left out.
fn sse_envelopes(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).expect("data is JSON"))
        .filter(|v| v["op"] != "hello")
        .collect()
}

fn assert_all_messages(what: &str, envelopes: &[Value]) {
    let seqs: Vec<u64> = envelopes
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=MESSAGES).collect();
    assert_eq!(
        seqs, want,
        "{what}: every message published before the signal, once, in order"
    );
    for (i, v) in envelopes.iter().enumerate() {
        assert_eq!(v["topic"], "drain.t", "{what}: {v}");
        assert_eq!(v["data"], i as u64 + 1, "{what}: {v}");
    }
}

/// PROTOCOL.md "Stopping": with WebSocket, SSE and long-poll clients connected and
/// messages queued but not yet read, SIGTERM makes every WebSocket receive all of them
/// then a 1001 close, every SSE stream all of them then a `retry:` hint then its end,
/// the held poll a `200` with `Connection: close`; new connections are refused; the
/// process logs the drain and exits 0 on its own.
#[test]
fn sigterm_drains_every_transport_and_exits_zero() {
    let mut server = Server::start(&["--shards", "2", "--sse-retry", "4321ms"]);
    let addr = server.addr();
    // The hello of each is read (and checked) by `read_until_close` below.
    let mut wss: Vec<WsClient> = (0..3)
        .map(|_| ws_connect(&server.ws_url("/ws?topic=drain.t")))
        .collect();
    let mut sses: Vec<TcpStream> = (0..3).map(|_| raw_sse(&server, "drain.t")).collect();
    // A long-poll on a topic nobody publishes to: held until the drain answers it.
    let mut poll = HttpConn::connect(addr).expect("connect");
    poll.send_request("GET", "/poll?topic=drain.quiet", &[], b"")
        .unwrap();
    assert!(
        wait_until(DEFAULT_TIMEOUT, || metric_sum(
            &metrics(addr),
            "switchboard_polls_held_total"
        ) == Some(1.0)),
        "the poll is held"
    );
    for i in 1..=MESSAGES {
        publish(addr, "drain.t", i.to_string().as_bytes());
    }

    server.signal(libc::SIGTERM);

    for (i, ws) in wss.iter_mut().enumerate() {
        let (texts, code) = read_until_close(ws);
        let envelopes: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_all_messages(&format!("ws {i}"), &envelopes);
        assert_eq!(code, Some(1001), "ws {i}: close 1001 going away");
    }
    for (i, sse) in sses.iter_mut().enumerate() {
        let (bytes, end) = read_to_end(sse, DEFAULT_TIMEOUT);
        assert!(
            matches!(end, End::Eof),
            "sse {i}: the stream ends ({end:?})"
        );
        let text = String::from_utf8_lossy(&bytes).to_string();
        assert_all_messages(&format!("sse {i}"), &sse_envelopes(&text));
        assert!(
            text.ends_with("retry: 4321\n\n"),
            "sse {i}: a retry hint after the last message, then the end: {text:?}"
        );
    }
    let r = poll
        .read_response("GET")
        .expect("the held poll is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["messages"], Value::Array(vec![]), "{}", r.text());
    assert_eq!(r.header("Connection"), Some("close"), "{r:?}");

    assert!(
        wait_until(DEFAULT_TIMEOUT, || TcpStream::connect(addr).is_err()),
        "new connections are refused once the drain has started"
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits by itself after the drain");
    assert!(status.success(), "exit status 0: {status:?}");
    let log = server.log();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(log.contains("drained in"), "{log}");
}

/// PROTOCOL.md "Stopping": SIGINT drains too; a client in the middle of a request is
/// left to finish it until `--drain-timeout`, then cut, and the process still exits 0
/// on its own, logging the cut. (With `--max-conns-per-ip`, so that the single-shot
/// accepts that mode uses are cancelled too.)
#[test]
fn sigint_drains_and_an_unfinished_request_is_cut_at_the_deadline() {
    let mut server = Server::start(&[
        "--shards",
        "1",
        "--drain-timeout",
        "1s",
        "--request-timeout",
        "60s",
        "--max-conns-per-ip",
        "8",
    ]);
    let mut slow = tcp_connect(server.addr()).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    assert!(
        wait_until(DEFAULT_TIMEOUT, || metric_sum(
            &metrics(server.addr()),
            "switchboard_connections"
        ) >= Some(2.0)),
        "the slow client is connected"
    );
    server.signal(libc::SIGINT);
    let (_, end) = read_to_end(&mut slow, Duration::from_secs(30));
    assert!(
        matches!(end, End::Eof | End::Reset),
        "the unfinished request is cut: {end:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits by itself after the drain");
    assert!(status.success(), "exit status 0: {status:?}");
    let log = server.log();
    assert!(log.contains("SIGINT: draining"), "{log}");
    assert!(log.contains("1 cut at the deadline"), "{log}");
}

/// PROTOCOL.md "Other endpoints": `GET /healthz` answers `503 draining` once the drain
/// has started (here on a request that was still being received when it did).
#[test]
fn healthz_answers_503_while_draining() {
    let mut server = Server::start(&["--shards", "1"]);
    assert_healthy(server.addr());
    let mut conn = HttpConn::connect(server.addr()).expect("connect");
    conn.send_raw(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    assert!(
        wait_until(DEFAULT_TIMEOUT, || metric_sum(
            &metrics(server.addr()),
            "switchboard_connections"
        ) >= Some(2.0)),
        "the client is connected"
    );
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_for_output("no longer accepting", DEFAULT_TIMEOUT),
        "the shard starts draining: {}",
        server.log()
    );
    conn.send_raw(b"st: x\r\n\r\n").unwrap();
    let r = conn.read_response("GET").expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (503, "draining"), "{r:?}");
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits by itself after the drain");
    assert!(status.success(), "exit status 0: {status:?}");
}
