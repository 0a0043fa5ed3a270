//! Bad requests, each with the answer PROTOCOL.md documents for it, and the server
//! still serving other clients afterwards (`GET /healthz`).

mod common;

use common::*;
use switchboard_e2e::*;

/// `switchboard_router_published_total`: how many messages the router sequenced.
fn published_total(server: &Server) -> f64 {
    metric(
        &metrics(server.addr()),
        "switchboard_router_published_total",
    )
    .unwrap()
}

/// PROTOCOL.md "Other endpoints": "malformed requests get `400` and the connection is
/// closed": a broken request line or header line, an unparsable or conflicting body
/// framing, a broken chunked body, a missing `Host`.
#[test]
fn malformed_requests_are_400_and_closed() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let cases: [&[u8]; 13] = [
        b"this is not http\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nNo colon here\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        // Conflicting framing (RFC 9112 §6.3).
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n12",
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        // A chunked body with a chunk size that is not hex.
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"POST /publish/t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
        // HTTP/1.1 without Host (RFC 9112 §3.2).
        b"GET /healthz HTTP/1.1\r\n\r\n",
    ];
    for raw in cases {
        let what = String::from_utf8_lossy(raw).to_string();
        let (r, mut conn) = exchange(addr, raw);
        assert_eq!(r.status, 400, "{what:?}: {r:?}");
        assert_closed(&mut conn, &what);
        assert_healthy(addr);
    }
}

/// PROTOCOL.md "Other endpoints": anything else is `404` (and the connection is kept).
#[test]
fn unknown_paths_are_404() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut conn = HttpConn::connect(addr).unwrap();
    for path in [
        "/",
        "/nope",
        "/healthz/",
        "/healthzz",
        "/publish",
        "/wss",
        "/ws/x",
        "/sse/x",
        "/echo",
        "/metrics/x",
    ] {
        conn.send_request("GET", path, &[], b"").unwrap();
        let r = conn.read_response("GET").unwrap();
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
    }
    assert_healthy(addr);
}

/// PROTOCOL.md "Other endpoints": "anything else | `404`" — also when the request to
/// the unknown path carries a body (the server may close the connection afterwards,
/// but the answer is the documented one).
#[test]
fn unknown_path_with_body_is_404() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for (method, path) in [("POST", "/nope"), ("PUT", "/publish"), ("POST", "/pub/a")] {
        let r = http_request(addr, method, path, &[], b"{\"x\":1}");
        assert_eq!(
            r.status,
            404,
            "{method} {path} with a body: {r:?} {}",
            r.text()
        );
        assert_healthy(addr);
    }
}

/// PROTOCOL.md "Publishing": another method than POST on `/publish/<topic>` is `405`
/// with `Allow: POST`; nothing is published.
#[test]
fn wrong_method_on_publish_is_405_allow_post() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for (method, body) in [
        ("GET", &b""[..]),
        ("HEAD", b""),
        ("DELETE", b""),
        ("PUT", b"{\"x\":1}"),
        ("PATCH", b"1"),
        ("OPTIONS", b""),
    ] {
        let r = http_request(addr, method, "/publish/wm.t", &[], body);
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("allow"), Some("POST"), "{method}: {r:?}");
        assert_healthy(addr);
    }
    assert_eq!(published_total(&server), 0.0);
    assert_eq!(publish(addr, "wm.t", b"1"), 1);
}

/// PROTOCOL.md "WebSocket": handshake errors — `405` for a method other than GET on
/// `/ws`; `426 Upgrade Required` + `Upgrade: websocket` + `Sec-WebSocket-Version: 13`
/// without the upgrade headers; `400` + `Sec-WebSocket-Version: 13` for another version
/// or a bad key; `400` for an invalid topic.
#[test]
fn websocket_handshake_errors() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let check = |bytes: Vec<u8>, status: u16, headers: &[(&str, &str)], what: &str| {
        let (r, _conn) = exchange(addr, &bytes);
        assert_eq!(r.status, status, "{what}: {r:?} {}", r.text());
        for (k, v) in headers {
            assert_eq!(r.header(k), Some(*v), "{what}: header {k}: {r:?}");
        }
        assert_healthy(addr);
    };
    for method in ["POST", "PUT", "DELETE"] {
        // The handshake request with another method than its "GET".
        let mut req = method.as_bytes().to_vec();
        req.extend_from_slice(&ws_handshake_request(addr, "/ws?topic=a", &[])[3..]);
        check(req, 405, &[], &format!("{method} /ws"));
    }
    check(
        build_request(addr, "GET", "/ws?topic=a", &[], b"", false),
        426,
        &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        "GET /ws without upgrade headers",
    );
    let bad_version = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "8"),
        ("Sec-WebSocket-Key", WS_KEY),
    ];
    check(
        build_request(addr, "GET", "/ws?topic=a", &bad_version, b"", false),
        400,
        &[("Sec-WebSocket-Version", "13")],
        "Sec-WebSocket-Version: 8",
    );
    for key in ["abc", "dGhlIHNhbXBsZSBub25j", "not base64 at all!!!===="] {
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", key),
        ];
        check(
            build_request(addr, "GET", "/ws?topic=a", &headers, b"", false),
            400,
            &[("Sec-WebSocket-Version", "13")],
            &format!("Sec-WebSocket-Key: {key}"),
        );
    }
    for query in [
        "topic=bad%20topic",
        "topic=*",
        "topic=a..b",
        "topic=a.*.b",
        "topic=",
        "topic=ok&topic=%22",
        "topic=caf%C3%A9",
    ] {
        check(
            ws_handshake_request(addr, &format!("/ws?{query}"), &[]),
            400,
            &[],
            &format!("/ws?{query}"),
        );
    }
    // Refused handshakes subscribed nothing; a correct one still works.
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ok"));
    publish(addr, "ok", b"1");
    assert_eq!(next_json(&mut ws)["seq"], 1);
}

/// PROTOCOL.md "Other endpoints": requests are limited to `--max-head-bytes` (default
/// 8 KiB: `431`, or `414` when the request line alone is longer). Heads just under the
/// limit are served.
#[test]
fn oversized_head_is_431_and_oversized_request_line_is_414() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let big = "v".repeat(9000);
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &[("X-Big", &big)], b"", false),
    );
    assert_eq!(r.status, 431, "{r:?}");
    assert_closed(&mut conn, "431");
    assert_healthy(addr);

    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "GET", &format!("/healthz?{big}"), &[], b"", false),
    );
    assert_eq!(r.status, 414, "{r:?}");
    assert_closed(&mut conn, "414");
    assert_healthy(addr);

    // Many headers adding up to more than 8 KiB.
    let value = "w".repeat(200);
    let headers: Vec<(String, &str)> = (0..45)
        .map(|i| (format!("X-H{i}"), value.as_str()))
        .collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let (r, _) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &headers, b"", false),
    );
    assert_eq!(r.status, 431, "{r:?}");

    // Under the limit: fine.
    let ok = "u".repeat(7000);
    let r = http_request(addr, "GET", "/healthz", &[("X-Ok", &ok)], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_healthy(addr);
}

/// PROTOCOL.md "Other endpoints": a request line alone longer than the head limit is
/// `414`, also when the client has not finished it (the server need not wait for the
/// end of a line that is already too long).
#[test]
fn unfinished_oversized_request_line_is_414() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let line = format!("GET /healthz?{}", "q".repeat(9000));
    let (r, mut conn) = exchange(addr, line.as_bytes());
    assert_eq!(r.status, 414, "{r:?}");
    assert_closed(&mut conn, "414");
    assert_healthy(addr);
}

/// PROTOCOL.md "Other endpoints": more than `--max-headers` (default 64) headers is
/// `431`; 64 are fine. Also with `--max-headers 10`.
#[test]
fn too_many_headers_is_431() {
    for (server, max) in [
        (Server::start(&["--shards", "2"]), 64),
        (Server::start(&["--shards", "2", "--max-headers", "10"]), 10),
    ] {
        let addr = server.addr();
        let request = |count: usize| {
            // Host is one of them.
            let names: Vec<String> = (1..count).map(|i| format!("X-Header-{i}")).collect();
            let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
            build_request(addr, "GET", "/healthz", &headers, b"", false)
        };
        let (r, _) = exchange(addr, &request(max));
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{max} headers");
        let (r, mut conn) = exchange(addr, &request(max + 1));
        assert_eq!(r.status, 431, "{} headers: {r:?}", max + 1);
        assert_closed(&mut conn, "431");
        assert_healthy(addr);
    }
}

/// PROTOCOL.md "Publishing": a body larger than `--max-publish-bytes` is `413` and the
/// connection is closed; nothing is published; exactly the limit is accepted. With
/// Content-Length (refused from the head alone, before the body is sent) and chunked.
#[test]
fn publish_over_max_publish_bytes_is_413() {
    let server = Server::start(&["--shards", "2", "--max-publish-bytes", "1KiB"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=big.t"));

    let over = "x".repeat(1025);
    let (r, mut conn) = exchange(
        addr,
        &build_request(addr, "POST", "/publish/big.t", &[], over.as_bytes(), false),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413 (Content-Length)");
    assert_healthy(addr);

    // Only the head, announcing a large body: refused without waiting for the body.
    let (r, mut conn) = exchange(
        addr,
        &build_request(
            addr,
            "POST",
            "/publish/big.t",
            &[("Content-Length", "10000000")],
            b"",
            false,
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413 (head only)");

    // With `Expect: 100-continue`: the 413 comes instead of the 100.
    let (r, mut conn) = exchange(
        addr,
        &build_request(
            addr,
            "POST",
            "/publish/big.t",
            &[("Expect", "100-continue"), ("Content-Length", "2000")],
            b"",
            false,
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413 (Expect: 100-continue)");

    // Chunked, in chunks each under the limit.
    let mut chunked = Vec::new();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("100\r\n{}\r\n", "c".repeat(256)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (r, mut conn) = exchange(
        addr,
        &build_request(
            addr,
            "POST",
            "/publish/big.t",
            &[("Transfer-Encoding", "chunked")],
            &chunked,
            false,
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413 (chunked)");
    assert_healthy(addr);

    assert_eq!(published_total(&server), 0.0);
    let exact = "y".repeat(1024);
    assert_eq!(publish(addr, "big.t", exact.as_bytes()), 1);
    assert_eq!(next_json(&mut ws)["data"], exact.as_str());
}

/// PROTOCOL.md "Publishing": the default `--max-publish-bytes` is 1 MiB: a 1 MiB body
/// is published, one byte more is `413`.
#[test]
fn default_max_publish_bytes_is_1_mib() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=mib.t"));
    let body = "z".repeat(1 << 20);
    assert_eq!(publish(addr, "mib.t", body.as_bytes()), 1);
    let m = next_json(&mut ws);
    assert_eq!(m["data"].as_str().map(str::len), Some(1 << 20));
    let len = ((1 << 20) + 1).to_string();
    let (r, mut conn) = exchange(
        addr,
        &build_request(
            addr,
            "POST",
            "/publish/mib.t",
            &[("Content-Length", &len)],
            b"",
            false,
        ),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_closed(&mut conn, "413");
}

/// PROTOCOL.md "Publishing": `400` for an invalid topic (or a `.*` pattern) and for
/// invalid percent-encoding in the publish path ("Topics": 1 to 200 bytes, non-empty
/// segments, the allowed bytes only). Nothing is published.
#[test]
fn invalid_publish_topic_is_400() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let too_long = format!("l.{}", "y".repeat(199));
    for topic in [
        "",
        "bad%20topic",
        "a..b",
        ".a",
        "a.",
        ".",
        "a.*",
        "*",
        "a.*.b",
        "a%2",
        "a%zz",
        "a%",
        "caf%C3%A9",
        "a%22b",
        "a%5Cb",
        "a%3Fb",
        "a%23b",
        "a%26b",
        "a%25b",
        "a%2Ab",
        "a%00b",
        "a%09b",
        "a%7Fb",
        too_long.as_str(),
    ] {
        let mut conn = HttpConn::connect(addr).unwrap();
        conn.send_raw(&build_request(
            addr,
            "POST",
            &format!("/publish/{topic}"),
            &[],
            b"1",
            false,
        ))
        .unwrap();
        let r = conn.read_response("POST").unwrap();
        assert_eq!(r.status, 400, "topic {topic:?}: {r:?}");
        assert_healthy(addr);
    }
    assert_eq!(published_total(&server), 0.0);
}

/// PROTOCOL.md "Publishing": a body that is not UTF-8 is `400`; nothing is published
/// (the topic's next publish still gets `seq` 1).
#[test]
fn non_utf8_body_is_400() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=u8.t"));
    let bodies: [&[u8]; 5] = [
        b"\xff",
        b"abc\xc3\x28def",
        b"\xed\xa0\x80",
        b"{\"a\":\"\xc0\xaf\"}",
        b"ok until the end \xe2\x82",
    ];
    for body in bodies {
        let r = http_request(addr, "POST", "/publish/u8.t", &[], body);
        assert_eq!(r.status, 400, "{body:?}: {r:?}");
        let mut chunked = format!("{:x}\r\n", body.len()).into_bytes();
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let r = http_request(
            addr,
            "POST",
            "/publish/u8.t",
            &[("Transfer-Encoding", "chunked")],
            &chunked,
        );
        assert_eq!(r.status, 400, "chunked {body:?}: {r:?}");
        assert_healthy(addr);
    }
    assert_eq!(publish(addr, "u8.t", "\u{e9}t\u{e9}".as_bytes()), 1);
    assert_eq!(
        next_json(&mut ws),
        serde_json::json!({"topic": "u8.t", "seq": 1, "data": "\u{e9}t\u{e9}"})
    );
}
