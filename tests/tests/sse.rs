//! Server-Sent Events (PROTOCOL.md "Server-Sent Events: `GET /sse`") against the real
//! engine: the response head, `retry:`, events with ids and envelopes, line breaks in
//! JSON bodies, heartbeats, and refused requests.

mod common;

use std::io::Write;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// Splits raw stream text into blocks separated by blank lines.
fn blocks(body: &str) -> Vec<&str> {
    body.split("\n\n").filter(|b| !b.is_empty()).collect()
}

/// PROTOCOL.md "Server-Sent Events": `200` with `Content-Type: text/event-stream`,
/// `Cache-Control: no-cache`, `X-Accel-Buffering: no`; `retry:` (`--sse-retry`) once at
/// the start; then the `hello` event with the connection's direct address; then each
/// message is one event, `id: <pos>` followed by the envelope in one `data:` line — the
/// same envelope WebSocket subscribers get, whose `pos` is the id. Read as raw bytes, so the
/// wire format itself is checked (identity transfer coding assumed).
#[test]
fn sse_head_retry_once_and_one_event_per_message() {
    let server = Server::start(&["--shards", "2", "--sse-retry", "2500ms"]);
    let addr = server.addr();
    let mut stream = tcp_connect(addr).unwrap();
    stream
        .write_all(&build_request(
            addr,
            "GET",
            "/sse?topic=raw.t",
            &[("Accept", "text/event-stream")],
            b"",
            false,
        ))
        .unwrap();
    let mut buf = Vec::new();
    read_until(&mut stream, &mut buf, DEFAULT_TIMEOUT, |b| {
        b.windows(4).any(|w| w == b"\r\n\r\n")
    });
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 200 "), "{head}");
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/event-stream"),
        "{head}"
    );
    assert_eq!(
        header("cache-control").as_deref(),
        Some("no-cache"),
        "{head}"
    );
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"), "{head}");
    assert_eq!(
        header("transfer-encoding"),
        None,
        "test assumes identity coding: {head}"
    );
    buf.drain(..head_end);

    // The same messages to a WebSocket subscriber, to compare envelopes.
    let mut ws = ws_connect(&server.ws_url("/ws?topic=raw.t"));
    let bodies: [&[u8]; 5] = [
        br#"{"text":"hello"}"#,
        b"plain text",
        b"",
        b"text with\nline breaks\r\n",
        b"[1,2]",
    ];
    for body in bodies {
        publish(addr, "raw.t", body);
    }
    let want_blocks = 2 + bodies.len();
    read_until(&mut stream, &mut buf, DEFAULT_TIMEOUT, |b| {
        blocks(&String::from_utf8_lossy(b)).len() >= want_blocks && b.ends_with(b"\n\n")
    });
    let body = String::from_utf8(buf.clone()).unwrap();
    assert!(body.starts_with("retry: 2500\n\n"), "{body:?}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("retry")).count(),
        1,
        "retry: only once: {body:?}"
    );
    let hello: Vec<&str> = blocks(&body)[1].split('\n').collect();
    assert_eq!(hello[0], "event: hello", "{body:?}");
    hello_id(&serde_json::from_str(hello[1].strip_prefix("data: ").unwrap()).unwrap());
    let events = &blocks(&body)[2..];
    assert_eq!(events.len(), bodies.len(), "{body:?}");
    let mut last_id = 0;
    for (i, event) in events.iter().enumerate() {
        let lines: Vec<&str> = event.split('\n').collect();
        assert_eq!(lines.len(), 2, "one id line and one data line: {event:?}");
        let pos = lines[0]
            .strip_prefix("id: ")
            .unwrap_or_else(|| panic!("first line is `id: POS`: {event:?}"));
        let id = pos_gseq(pos);
        assert!(id > last_id, "{body:?}");
        last_id = id;
        let data = lines[1]
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("second line is `data: `: {event:?}"));
        let ws_text = next_text(&mut ws);
        assert_eq!(data, ws_text, "SSE and WebSocket envelopes differ");
        let env: Value = serde_json::from_str(data).unwrap();
        assert_eq!(env["pos"], pos, "the id is the envelope's pos");
        assert_eq!(
            (&env["topic"], &env["seq"]),
            (&json!("raw.t"), &json!(i + 1))
        );
    }
}

/// PROTOCOL.md "Server-Sent Events": `--sse-retry` defaults to 3 s (`retry: 3000`).
#[test]
fn sse_default_retry_is_3000() {
    let server = Server::start(&["--shards", "1"]);
    let mut sse = SseClient::connect(server.addr(), "/sse?topic=r.t");
    publish(server.addr(), "r.t", b"1");
    next_sse(&mut sse);
    assert_eq!(sse.retry(), Some(3000));
}

/// PROTOCOL.md "Server-Sent Events": "The envelope is one line unless the published
/// JSON body itself contained line breaks; then each line becomes its own `data:`
/// line, which `EventSource` joins back with `\n`". Bodies with LF, CRLF and lone CR
/// line breaks (all line breaks in an event stream) arrive as the same JSON value; with
/// LF the joined data is the WebSocket envelope byte for byte.
#[test]
fn sse_multiline_json_body_arrives_intact() {
    let server = Server::start(&["--shards", "2"]);
    let mut sse = SseClient::connect(server.addr(), "/sse?topic=ml.t");
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ml.t"));
    let want_data = json!({"a": 1, "b": [true, false], "c": "x"});
    let bodies: [&str; 4] = [
        "{\n  \"a\": 1,\n  \"b\": [true,\n false],\n  \"c\": \"x\"\n}",
        "{\r\n  \"a\": 1,\r\n  \"b\": [true,\r\n false],\r\n  \"c\": \"x\"\r\n}",
        "{\r  \"a\": 1,\r  \"b\": [true,\r false],\r  \"c\": \"x\"\r}",
        "\n\n{\"a\":1,\"b\":[true,\n\n\nfalse],\"c\":\"x\"}\n\n",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let seq = publish(server.addr(), "ml.t", body.as_bytes());
        let ws_text = next_text(&mut ws);
        let event = next_sse(&mut sse);
        let got: Value = strip_pos(serde_json::from_str(&event.data).unwrap_or_else(|e| {
            panic!("body #{i} {body:?}: data not JSON ({e}): {:?}", event.data)
        }));
        assert_eq!(
            got,
            json!({"topic": "ml.t", "seq": seq, "data": want_data}),
            "body #{i} {body:?}: event data {:?}",
            event.data
        );
        assert_eq!(
            strip_pos(serde_json::from_str::<Value>(&ws_text).unwrap()),
            got,
            "body #{i}: WebSocket {ws_text:?}"
        );
        if i == 0 {
            assert_eq!(event.data, ws_text, "LF line breaks are kept as they are");
            assert!(event.data.contains('\n'));
        }
    }
}

/// PROTOCOL.md "Positions": the `id` is the message's position (router-wide): the
/// same message has the same id for every subscriber, and ids increase across topics in
/// publish order.
#[test]
fn sse_ids_are_router_wide_in_publish_order() {
    let server = Server::start(&["--shards", "2"]);
    let mut only_a: Vec<SseClient> = (0..3)
        .map(|_| SseClient::connect(server.addr(), "/sse?topic=id.a"))
        .collect();
    let mut only_b = SseClient::connect(server.addr(), "/sse?topic=id.b");
    let mut both = SseClient::connect(server.addr(), "/sse?topic=id.*");
    let order = [
        "id.a", "id.b", "id.a", "id.b", "id.b", "id.a", "id.a", "id.b",
    ];
    for (i, topic) in order.iter().enumerate() {
        publish(
            server.addr(),
            topic,
            json!({ "i": i }).to_string().as_bytes(),
        );
    }
    let mut id_of = vec![0u64; order.len()];
    let mut last = 0;
    let mut pos_of = vec![String::new(); order.len()];
    for _ in 0..order.len() {
        let ev = next_sse(&mut both);
        let id = pos_gseq(&ev.id);
        assert!(
            id > last,
            "ids increase along the stream: {id} after {last}"
        );
        last = id;
        let env: Value = serde_json::from_str(&ev.data).unwrap();
        id_of[env["data"]["i"].as_u64().unwrap() as usize] = id;
        pos_of[env["data"]["i"].as_u64().unwrap() as usize] = ev.id.clone();
    }
    assert!(
        id_of.windows(2).all(|w| w[0] < w[1]),
        "ids in publish order: {id_of:?}"
    );
    for sub in &mut only_a {
        for (i, _) in order.iter().enumerate().filter(|(_, t)| **t == "id.a") {
            let ev = next_sse(sub);
            let env: Value = serde_json::from_str(&ev.data).unwrap();
            assert_eq!(env["data"]["i"], i);
            assert_eq!(ev.id, pos_of[i], "same message, same id");
        }
    }
    for (i, _) in order.iter().enumerate().filter(|(_, t)| **t == "id.b") {
        let ev = next_sse(&mut only_b);
        assert_eq!(ev.id, pos_of[i], "same message, same id");
    }
}

/// PROTOCOL.md "Server-Sent Events": a comment line `: heartbeat` every
/// `--sse-heartbeat`; the stream still delivers events between heartbeats.
#[test]
fn sse_heartbeat_comments_arrive() {
    let server = Server::start(&["--shards", "2", "--sse-heartbeat", "200ms"]);
    let mut sse = SseClient::connect(server.addr(), "/sse?topic=hb.t");
    let heartbeats = |sse: &SseClient| sse.comments().iter().filter(|c| *c == " heartbeat").count();
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    while heartbeats(&sse) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 3 heartbeats within {DEFAULT_TIMEOUT:?}: {:?}",
            sse.comments()
        );
        if let Some(ev) = sse.next_event(std::time::Duration::from_millis(100)) {
            assert_eq!(
                ev.event, "hello",
                "only the hello before any publish: {ev:?}"
            );
        }
        assert!(!sse.is_closed(), "{:?}", sse.read_error());
    }
    assert!(
        sse.comments().iter().all(|c| c == " heartbeat"),
        "{:?}",
        sse.comments()
    );
    publish(server.addr(), "hb.t", b"1");
    let ev = next_sse(&mut sse);
    assert_eq!(
        strip_pos(serde_json::from_str::<Value>(&ev.data).unwrap()),
        json!({"topic": "hb.t", "seq": 1, "data": 1})
    );
}

/// PROTOCOL.md "Server-Sent Events": at least one `topic` is required (`400`
/// otherwise); an invalid topic or pattern is a `400` too. The server serves others
/// afterwards.
#[test]
fn sse_without_valid_topic_is_400() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for path in [
        "/sse",
        "/sse?",
        "/sse?other=x",
        "/sse?topic=",
        "/sse?topic=bad%20topic",
        "/sse?topic=*",
        "/sse?topic=a.*.b",
        "/sse?topic=a..b",
        "/sse?topic=ok&topic=bad%22quote",
    ] {
        let r = http_request(addr, "GET", path, &[("Accept", "text/event-stream")], b"");
        assert_eq!(r.status, 400, "GET {path}: {r:?}");
        assert_healthy(addr);
    }
    // And a valid one still works.
    let mut sse = SseClient::connect(addr, "/sse?topic=ok");
    publish(addr, "ok", b"1");
    next_sse(&mut sse);
}
