//! Timers (PROTOCOL.md "Timers"): the WebSocket ping and its pong deadline, and the
//! request deadline that closes a slowloris client. Intervals are short here; every wait
//! is for an event with a generous bound, never a measurement.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use switchboard_e2e::*;

/// Bound on anything these tests wait for.
const PATIENCE: Duration = Duration::from_secs(30);

fn counter(server: &Server, name: &str) -> f64 {
    metric_sum(&metrics(server.addr()), name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// PROTOCOL.md "Timers": a WebSocket that answers every ping (tungstenite answers them
/// while it reads) is pinged again and again and stays open: after several pings it
/// still receives a message, and no connection was closed for a missing pong.
#[test]
fn a_client_that_answers_pings_stays_open() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--ws-ping-interval",
        "300ms",
        "--ws-pong-timeout",
        "2s",
    ]);
    let mut ws = ws_connect(&server.ws_url("/ws?topic=tm.alive"));
    let deadline = Instant::now() + PATIENCE;
    while counter(&server, "switchboard_ws_pings_sent_total") < 3.0 {
        assert!(Instant::now() < deadline, "three pings within {PATIENCE:?}");
        // Reading answers the pings; only the hello may come (no message is published).
        if let Some(msg) = ws.recv(Duration::from_millis(200)) {
            let text = msg
                .into_text()
                .unwrap_or_else(|m| panic!("the connection stays open, got {m:?}"));
            assert!(text.contains("\"hello\""), "{text}");
        }
    }
    publish(server.addr(), "tm.alive", b"still here");
    let v = next_json(&mut ws);
    assert_eq!(v["data"], "still here", "{v}");
    assert_eq!(counter(&server, "switchboard_ws_pong_timeouts_total"), 0.0);
}

/// PROTOCOL.md "Timers": a quiet WebSocket gets a ping (an empty ping frame); one that
/// never answers is closed with 1001 "pong timeout" once `--ws-pong-timeout` has passed,
/// and counted in `switchboard_ws_pong_timeouts_total`.
#[test]
fn a_client_that_ignores_pings_is_closed_with_1001() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--ws-ping-interval",
        "300ms",
        "--ws-pong-timeout",
        "300ms",
    ]);
    let mut ws = RawWs::connect(server.addr(), "/ws?topic=tm.dead");
    let ping = ws.read_frame(PATIENCE).expect("a ping");
    assert_eq!(
        (ping.opcode, ping.fin, ping.payload.len()),
        (OP_PING, true, 0),
        "{ping:?}"
    );
    // Not answered: the next frame is the close.
    let close = ws.read_frame(PATIENCE).expect("a close frame");
    assert_eq!(close.opcode, OP_CLOSE, "{close:?}");
    assert_eq!(close_code(&close.payload), Some(1001), "{close:?}");
    assert_eq!(&close.payload[2..], b"pong timeout", "{close:?}");
    // Finish the closing handshake as a client would; the server then ends the TCP
    // connection.
    ws.send(&client_frame(true, OP_CLOSE, &close.payload[..2]));
    ws.expect_eof();
    assert_eq!(counter(&server, "switchboard_ws_pong_timeouts_total"), 1.0);
    let text = metrics(server.addr());
    assert_eq!(
        metric_sum(
            &text,
            "switchboard_ws_closes_sent_total{shard=\"0\",code=\"1001\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

/// PROTOCOL.md "Timers": a client that keeps talking (here a ping of its own each
/// interval) is never pinged: only silence is.
#[test]
fn a_talking_client_is_not_pinged() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--ws-ping-interval",
        "1s",
        "--ws-pong-timeout",
        "1s",
    ]);
    let mut ws = RawWs::connect(server.addr(), "/ws?topic=tm.talk");
    // Fifteen rounds of: our ping, the server's pong. Each round is well within the interval
    // unless the machine stalls; a stall could at worst let one server ping through,
    // which the loop tolerates (it is answered like any other frame).
    let mut pongs = 0;
    let mut server_pings = 0;
    while pongs < 15 {
        ws.send(&client_frame(true, OP_PING, b"hi"));
        let frame = ws.read_frame(PATIENCE).expect("a pong");
        match frame.opcode {
            OP_PONG => pongs += 1,
            OP_PING => server_pings += 1,
            _ => panic!("unexpected {frame:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server_pings <= 1, "{server_pings} server pings");
    assert_eq!(counter(&server, "switchboard_ws_pong_timeouts_total"), 0.0);
}

/// PROTOCOL.md "Other endpoints" and "Timers": a slowloris client that sends one byte
/// of its request head at a time, never finishing it, is answered `408` and closed once
/// `--request-timeout` has passed since it connected, however steadily it trickles; it
/// is counted in `switchboard_request_timeouts_total`.
#[test]
fn a_slowloris_client_is_closed_at_the_request_deadline() {
    let server = Server::start(&["--shards", "1", "--request-timeout", "1s"]);
    let mut stream = tcp_connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
    let mut sent = 0usize;
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        assert!(
            Instant::now() < deadline,
            "still open after {PATIENCE:?}, {sent} bytes sent"
        );
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_err() {
            break true; // the server has closed it (reset)
        }
        sent += 1;
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    assert!(ended);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "an incomplete request is answered 408: {text:?}"
    );
    assert_eq!(counter(&server, "switchboard_request_timeouts_total"), 1.0);
}
