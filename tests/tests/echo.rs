//! The conformance endpoint (PROTOCOL.md "Other endpoints": `GET /echo` only with
//! `--echo`, "a WebSocket that echoes every text and binary message (up to 16 MiB)").

mod common;

use common::*;
use switchboard_e2e::*;
use tungstenite::Message;

/// Without `--echo`, `/echo` is like any unknown path: `404`, also for a correct
/// WebSocket handshake.
#[test]
fn echo_is_404_without_the_flag() {
    let server = Server::start(&["--shards", "2"]);
    match try_ws_connect(&server.ws_url("/echo")) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    let r = http_request(server.addr(), "GET", "/echo", &[], b"");
    assert_eq!(r.status, 404);
    assert_healthy(server.addr());
}

/// With `--echo`: text and binary messages come back unchanged, including empty ones,
/// 1 MiB ones and a fragmented one; the close handshake ends it.
#[test]
fn echo_echoes_text_and_binary_up_to_1_mib() {
    let server = Server::start(&["--shards", "2", "--echo"]);
    let mut ws = ws_connect(&server.ws_url("/echo"));
    let big_text: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let big_binary: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let messages = vec![
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text("h\u{e9}llo \u{1F600}\n{\"not\":\"an op\"}"),
        Message::text(big_text),
        Message::binary(big_binary),
    ];
    for msg in messages {
        ws.send(msg.clone()).unwrap();
        let got = ws.recv(DEFAULT_TIMEOUT).expect("the echo");
        assert!(
            got == msg,
            "echo differs (len {} vs {})",
            got.len(),
            msg.len()
        );
    }
    let reply = ws.close_handshake(None, DEFAULT_TIMEOUT);
    assert!(reply.is_some(), "no close reply");

    // A fragmented message is echoed as one message with the same content.
    let mut raw = RawWs::connect(server.addr(), "/echo");
    raw.send(&client_frame(false, OP_BINARY, &[1, 2, 3]));
    raw.send(&client_frame(false, OP_CONT, &[4, 5]));
    raw.send(&client_frame(true, OP_CONT, &[6]));
    let mut payload = Vec::new();
    let mut first = true;
    loop {
        let f = raw.expect_frame();
        assert_eq!(f.opcode, if first { OP_BINARY } else { OP_CONT }, "{f:?}");
        first = false;
        payload.extend_from_slice(&f.payload);
        if f.fin {
            break;
        }
    }
    assert_eq!(payload, [1, 2, 3, 4, 5, 6]);
}

/// "(up to 16 MiB)": a frame header announcing 16 MiB + 1 is closed with 1009 ("message
/// too large (detected from the frame header)").
#[test]
fn echo_over_16_mib_is_closed_with_1009() {
    let server = Server::start(&["--shards", "2", "--echo"]);
    let mut raw = RawWs::connect(server.addr(), "/echo");
    raw.send(&frame_bytes(
        true,
        0,
        OP_BINARY,
        b"",
        Some([5, 6, 7, 8]),
        Some((16 << 20) + 1),
    ));
    assert_eq!(raw.expect_close(), Some(1009));
    raw.expect_eof();
    assert_healthy(server.addr());
}
