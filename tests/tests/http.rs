//! The HTTP/1.1 side of the engine (PROTOCOL.md "Publishing", "Other endpoints"):
//! health checks, keep-alive, pipelining, chunked bodies, `Expect: 100-continue`, bodies
//! arriving in pieces, and connection turnover.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard_e2e::*;

/// PROTOCOL.md "Other endpoints": `GET /healthz` (or `HEAD`) answers `200`, body `ok`;
/// the `HEAD` answer carries no body on the wire (the next response on the same
/// connection parses right after it).
#[test]
fn healthz_get_and_head() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let r = http_request(addr, "GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    let raw = raw_exchange(
        addr,
        &build_request(addr, "HEAD", "/healthz", &[], b"", true),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD answer has no body: {text:?}"
    );

    let mut conn = HttpConn::connect(addr).unwrap();
    conn.send_request("HEAD", "/healthz", &[], b"").unwrap();
    conn.send_request("GET", "/healthz", &[], b"").unwrap();
    let head = conn.read_response("HEAD").unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = conn.read_response("GET").unwrap();
    assert_eq!((get.status, get.text().as_str()), (200, "ok"));
}

/// PROTOCOL.md "Publishing": "Connections are kept alive between requests (HTTP/1.1
/// default)": several requests of different kinds, one after the other, on one
/// connection.
#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ka.t"));
    let mut conn = HttpConn::connect(server.addr()).unwrap();
    for round in 1..=5u64 {
        conn.send_request("GET", "/healthz", &[], b"").unwrap();
        let r = conn.read_response("GET").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "round {round}");

        assert_eq!(
            publish_on(&mut conn, "ka.t", round.to_string().as_bytes()),
            round
        );
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "ka.t", "seq": round, "data": round})
        );

        conn.send_request("GET", "/metrics", &[], b"").unwrap();
        let r = conn.read_response("GET").unwrap();
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains("switchboard_connections"),
            "round {round}"
        );

        conn.send_request("GET", "/no/such/thing", &[], b"")
            .unwrap();
        assert_eq!(
            conn.read_response("GET").unwrap().status,
            404,
            "round {round}"
        );
    }
}

/// PROTOCOL.md "Publishing" (keep-alive): requests written all at once (pipelined) are
/// answered in order, publishes sequenced in that order; the subscriber sees them so.
#[test]
fn pipelined_requests_answered_in_order() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=pl.*"));
    let mut conn = HttpConn::connect(addr).unwrap();
    let mut batch = Vec::new();
    let req =
        |m: &str, p: &str, h: &[(&str, &str)], b: &[u8]| build_request(addr, m, p, h, b, false);
    batch.extend(req("POST", "/publish/pl.a", &[], b"\"a1\""));
    batch.extend(req("GET", "/healthz", &[], b""));
    batch.extend(req("POST", "/publish/pl.b", &[], b"\"b1\""));
    batch.extend(req("HEAD", "/healthz", &[], b""));
    batch.extend(req("POST", "/publish/pl.a", &[], b"\"a2\""));
    batch.extend(req("GET", "/nope", &[], b""));
    batch.extend(req(
        "POST",
        "/publish/pl.a",
        &[("Transfer-Encoding", "chunked")],
        b"2\r\n\"a\r\n2\r\n3\"\r\n0\r\n\r\n",
    ));
    batch.extend(req("POST", "/publish/pl.b", &[], b""));
    batch.extend(req("GET", "/healthz", &[], b""));
    conn.send_raw(&batch).unwrap();

    let mut read = |method: &str| conn.read_response(method).unwrap();
    let r = read("POST");
    assert_eq!(ack_seq(&r, "pl.a"), 1);
    assert_eq!(read("GET").text(), "ok");
    assert_eq!(ack_seq(&read("POST"), "pl.b"), 1);
    let head = read("HEAD");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(ack_seq(&read("POST"), "pl.a"), 2);
    assert_eq!(read("GET").status, 404);
    assert_eq!(ack_seq(&read("POST"), "pl.a"), 3);
    assert_eq!(ack_seq(&read("POST"), "pl.b"), 2);
    assert_eq!(read("GET").text(), "ok");

    for (topic, seq, data) in [
        ("pl.a", 1, "a1"),
        ("pl.b", 1, "b1"),
        ("pl.a", 2, "a2"),
        ("pl.a", 3, "a3"),
        ("pl.b", 2, ""),
    ] {
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": topic, "seq": seq, "data": data})
        );
    }

    // A long pipeline of publishes in a single write.
    let mut batch = Vec::new();
    for i in 1..=100u64 {
        batch.extend(build_request(
            addr,
            "POST",
            "/publish/pl.c",
            &[],
            i.to_string().as_bytes(),
            false,
        ));
    }
    conn.send_raw(&batch).unwrap();
    for i in 1..=100u64 {
        let r = conn.read_response("POST").unwrap();
        assert_eq!(ack_seq(&r, "pl.c"), i);
    }
    for i in 1..=100u64 {
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "pl.c", "seq": i, "data": i})
        );
    }
}

/// PROTOCOL.md "Publishing": the body may come with `Transfer-Encoding: chunked`
/// (chunk extensions and trailers allowed by HTTP/1.1), in one write or in pieces.
#[test]
fn chunked_publish_body() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ch.t"));
    let chunked = &[("Transfer-Encoding", "chunked")];
    let bodies: [(&[u8], serde_json::Value); 4] = [
        (
            b"5\r\n{\"par\r\n7\r\nts\":[1,\r\n3\r\n2]}\r\n0\r\n\r\n",
            json!({"parts": [1, 2]}),
        ),
        (
            b"6;ext=1\r\nhello \r\nA\r\nchunked wo\r\n3\r\nrld\r\n0\r\nX-Trailer: yes\r\n\r\n",
            json!("hello chunked world"),
        ),
        (b"0\r\n\r\n", json!("")),
        (
            b"19\r\n{\"long\":\"abcdefghijklmn\"}\r\n0\r\n\r\n",
            json!({"long": "abcdefghijklmn"}),
        ),
    ];
    let mut seq = 0;
    for (body, data) in &bodies {
        // In one write, on a fresh connection.
        let r = http_request(addr, "POST", "/publish/ch.t", chunked, body);
        seq += 1;
        assert_eq!(ack_seq(&r, "ch.t"), seq);
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "ch.t", "seq": seq, "data": data})
        );
    }
    // Byte by byte, on one kept-alive connection.
    let mut conn = HttpConn::connect(addr).unwrap();
    for (body, data) in &bodies {
        let request = build_request(addr, "POST", "/publish/ch.t", chunked, body, false);
        for b in &request {
            conn.send_raw(std::slice::from_ref(b)).unwrap();
        }
        seq += 1;
        assert_eq!(ack_seq(&conn.read_response("POST").unwrap(), "ch.t"), seq);
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "ch.t", "seq": seq, "data": data})
        );
    }
}

/// PROTOCOL.md "Publishing": "`Expect: 100-continue` is honoured": the server answers
/// `100 Continue` while the client still holds the body back, then `202` once it is
/// sent (with Content-Length and with chunked bodies).
#[test]
fn expect_100_continue_before_the_body() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=ex.t"));
    let body = br#"{"expect":true}"#;
    let cl = body.len().to_string();
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers, Vec<u8>); 2] = [
        (
            &[("Expect", "100-continue"), ("Content-Length", &cl)],
            body.to_vec(),
        ),
        (
            &[("Expect", "100-continue"), ("Transfer-Encoding", "chunked")],
            [
                format!("{:x}\r\n", body.len()).as_bytes(),
                body,
                b"\r\n0\r\n\r\n",
            ]
            .concat(),
        ),
    ];
    for (seq, (headers, wire_body)) in cases.iter().enumerate() {
        let mut conn = HttpConn::connect(addr).unwrap();
        // The head alone: build_request with an empty body, the body comes later.
        conn.send_raw(&build_request(
            addr,
            "POST",
            "/publish/ex.t",
            headers,
            b"",
            false,
        ))
        .unwrap();
        let interim = conn.read_response("POST").unwrap();
        assert_eq!(interim.status, 100, "{interim:?}");
        conn.send_raw(wire_body).unwrap();
        let r = conn.read_response("POST").unwrap();
        assert_eq!(ack_seq(&r, "ex.t"), seq as u64 + 1);
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "ex.t", "seq": seq + 1, "data": {"expect": true}})
        );
        // The connection stays usable.
        conn.send_request("GET", "/healthz", &[], b"").unwrap();
        assert_eq!(conn.read_response("GET").unwrap().text(), "ok");
    }
}

/// Regression (a publish whose body arrived in a later read once hung its shard):
/// the head, then a pause, then the body (also: head split mid-line, body in two
/// pieces) is answered `202`, and both shards keep serving afterwards. Repeated on
/// fresh connections so that both shards get such publishes.
#[test]
fn publish_head_and_body_in_separate_writes() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=sp.t"));
    let body = br#"{"split":"body"}"#;
    let request = build_request(addr, "POST", "/publish/sp.t", &[], body, false);
    let head_len = request.len() - body.len();
    let pause = Duration::from_millis(150);
    let mut seq = 0;
    for round in 0..8 {
        let mut conn = HttpConn::connect(addr).unwrap();
        match round % 2 {
            0 => {
                conn.send_raw(&request[..head_len]).unwrap();
                thread::sleep(pause);
                conn.send_raw(&request[head_len..]).unwrap();
            }
            _ => {
                conn.send_raw(&request[..20]).unwrap();
                thread::sleep(pause);
                conn.send_raw(&request[20..head_len]).unwrap();
                thread::sleep(pause);
                conn.send_raw(&request[head_len..head_len + 5]).unwrap();
                thread::sleep(pause);
                conn.send_raw(&request[head_len + 5..]).unwrap();
            }
        }
        seq += 1;
        let r = conn
            .read_response("POST")
            .unwrap_or_else(|e| panic!("round {round}: no answer to the split publish: {e}"));
        assert_eq!(ack_seq(&r, "sp.t"), seq, "round {round}");
        assert_eq!(
            next_json(&mut ws),
            json!({"topic": "sp.t", "seq": seq, "data": {"split": "body"}})
        );
        // The rest of a split body and a whole request in one write.
        conn.send_raw(&request[..head_len + 3]).unwrap();
        thread::sleep(pause);
        let mut rest = request[head_len + 3..].to_vec();
        rest.extend(build_request(addr, "GET", "/healthz", &[], b"", false));
        conn.send_raw(&rest).unwrap();
        seq += 1;
        assert_eq!(
            ack_seq(&conn.read_response("POST").unwrap(), "sp.t"),
            seq,
            "round {round}"
        );
        assert_eq!(conn.read_response("GET").unwrap().text(), "ok");
        assert_eq!(next_json(&mut ws)["seq"], seq);
        // The same connection takes the next request, a normal publish.
        seq += 1;
        assert_eq!(publish_on(&mut conn, "sp.t", b"1"), seq, "round {round}");
        assert_eq!(next_json(&mut ws)["seq"], seq);
        // And new connections (either shard) are served.
        for _ in 0..4 {
            assert_healthy(addr);
        }
    }
}

/// Regression (a new connection right after a `Connection: close` one was once left
/// unanswered, about 1 in 300): 500 times in a row, a request with `Connection: close`
/// is answered and the server closes; the next connection opens at once. Alternates
/// health checks and publishes; now and then a client leaves without reading.
#[test]
fn new_connection_after_connection_close_is_always_answered() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut failures = Vec::new();
    let mut publishes = 0u64;
    for i in 0..500 {
        let request = if i % 5 == 4 {
            publishes += 1;
            build_request(addr, "POST", "/publish/cc.t", &[], b"1", true)
        } else {
            build_request(addr, "GET", "/healthz", &[], b"", true)
        };
        let mut stream = tcp_connect(addr).unwrap();
        stream.write_all(&request).unwrap();
        if i % 50 == 25 {
            // Now and then the client goes away without reading at all; the next
            // connection must be served all the same.
            drop(stream);
            continue;
        }
        let (got, end) = read_to_end(&mut stream, DEFAULT_TIMEOUT);
        let text = String::from_utf8_lossy(&got);
        let ok = if i % 5 == 4 {
            text.starts_with("HTTP/1.1 202 ")
                && text.ends_with(&format!("{{\"topic\":\"cc.t\",\"seq\":{publishes}}}"))
        } else {
            text.starts_with("HTTP/1.1 200 ") && text.ends_with("\r\n\r\nok")
        };
        if !ok || end != End::Eof {
            failures.push(format!("#{i}: {end:?} after {text:?}"));
            if failures.len() == 3 {
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

/// PROTOCOL.md "Other endpoints": `GET /metrics` is Prometheus text with connections
/// by shard and state, accepts, closes, responses by status, close codes sent,
/// deliveries by transport, bytes sent and router counters; the counters move.
#[test]
fn metrics_are_prometheus_text_and_count() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut ws = ws_connect(&server.ws_url("/ws?topic=m.t"));
    let mut sse = SseClient::connect(addr, "/sse?topic=m.t");
    publish(addr, "m.t", b"1");
    next_json(&mut ws);
    next_sse(&mut sse);
    http_request(addr, "GET", "/nope", &[], b"");
    let r = http_request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{r:?}"
    );
    let text = r.text();
    for family in [
        "switchboard_connections",
        "switchboard_accepted_total",
        "switchboard_closed_total",
        "switchboard_http_responses_total",
        "switchboard_ws_closes_sent_total",
        "switchboard_deliveries_total",
        "switchboard_bytes_sent_total",
        "switchboard_router_published_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family}:\n{text}"
        );
    }
    for shard in 0..2 {
        for state in ["http", "ws", "sse"] {
            conns(&text, shard, state); // present for both shards
        }
    }
    let sum = |name: &str| metric_sum(&text, name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(sum("switchboard_router_published_total"), 1.0, "{text}");
    assert!(sum("switchboard_accepted_total") >= 5.0, "{text}");
    assert!(sum("switchboard_bytes_sent_total") > 0.0, "{text}");
    assert_eq!(
        metric_sum(&text, "switchboard_deliveries_total"),
        Some(2.0),
        "{text}"
    );
    let r404: f64 = (0..2)
        .map(|s| {
            metric(
                &text,
                &format!("switchboard_http_responses_total{{shard=\"{s}\",status=\"404\"}}"),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(r404, 1.0, "{text}");
}

/// PROTOCOL.md "Publishing": keep-alive is the HTTP/1.1 default; an HTTP/1.0 request
/// (no keep-alive by default) is answered and the connection closed.
#[test]
fn http_1_0_request_is_answered_then_closed() {
    let server = Server::start(&["--shards", "2"]);
    let (r, mut conn) = exchange(server.addr(), b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_closed(&mut conn, "HTTP/1.0");
    let (r, mut conn) = exchange(
        server.addr(),
        b"POST /publish/h10.t HTTP/1.0\r\nContent-Length: 1\r\n\r\n7",
    );
    assert_eq!(ack_seq(&r, "h10.t"), 1);
    assert_closed(&mut conn, "HTTP/1.0 publish");
}

/// PROTOCOL.md "Publishing": connections are kept alive and requests may be pipelined;
/// nothing limits how much a client pipelines. 2000 publishes of 1 KiB (about 2.2 MB)
/// are written in one go by one thread while another reads the answers: all 2000 are
/// answered `202`, in order, and the connection stays open. (A server may stop reading
/// while it catches up — TCP pushes back on the writer — but must not drop the client.)
#[test]
fn pipelined_publishes_beyond_a_mebibyte_are_all_answered() {
    const N: u64 = 2000;
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let body = vec![b'k'; 1024];
    let mut blob = Vec::new();
    for _ in 0..N {
        blob.extend(build_request(
            addr,
            "POST",
            "/publish/big.pipe",
            &[],
            &body,
            false,
        ));
    }
    let mut conn = HttpConn::connect(addr).unwrap();
    let mut writer_stream = conn.stream().try_clone().unwrap();
    let writer = thread::spawn(move || writer_stream.write_all(&blob));
    for i in 1..=N {
        let r = conn.read_response("POST").unwrap_or_else(|e| {
            panic!(
                "pipelined publish #{i} of {N} (about {} KB in): {e}",
                i * 1100 / 1000
            )
        });
        assert_eq!(ack_seq(&r, "big.pipe"), i);
    }
    writer
        .join()
        .unwrap()
        .expect("the whole pipeline was written");
    conn.send_request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(conn.read_response("GET").unwrap().text(), "ok");
    // 2 MB arrived faster than one publish at a time is answered: the engine stopped
    // reading (back-pressure) rather than buffering it all or dropping the client.
    let pauses = metric_sum(&metrics(addr), "switchboard_read_pauses_total").unwrap_or(0.0);
    assert!(
        pauses >= 1.0,
        "expected the engine to pause reading, saw {pauses} pauses"
    );
}

/// PROTOCOL.md "Publishing": "`Connection: close` closes": requests pipelined behind a
/// request with `Connection: close` are not processed (the publish behind it is not
/// published), the connection ends after the one answer.
#[test]
fn nothing_after_connection_close_is_processed() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut batch = build_request(addr, "GET", "/healthz", &[], b"", true);
    batch.extend(build_request(
        addr,
        "POST",
        "/publish/cl.t",
        &[],
        b"1",
        false,
    ));
    let (r, mut conn) = exchange(addr, &batch);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_closed(&mut conn, "after Connection: close");
    assert_eq!(
        metric(&metrics(addr), "switchboard_router_published_total"),
        Some(0.0),
        "the publish behind Connection: close was processed"
    );
    // The same with a publish carrying Connection: close.
    let mut batch = build_request(addr, "POST", "/publish/cl.t", &[], b"1", true);
    batch.extend(build_request(
        addr,
        "POST",
        "/publish/cl.t",
        &[],
        b"2",
        false,
    ));
    let (r, mut conn) = exchange(addr, &batch);
    assert_eq!(ack_seq(&r, "cl.t"), 1);
    assert_closed(&mut conn, "after Connection: close");
    assert_eq!(
        publish(addr, "cl.t", b"3"),
        2,
        "only one of the two was published"
    );
}
