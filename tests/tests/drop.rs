//! The `drop` slow-consumer policy (PROTOCOL.md "Slow consumers") against the real
//! engine: subscribers that stop reading lose messages instead of their connection, and
//! learn it by a reset once they read again; a subscriber that reads loses nothing.

mod common;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// What a stalled subscriber finds when it reads again: an in-order prefix of the
/// messages (what the kernel and its in-flight send held), then one reset for the topic
/// whose `seq` is the last message discarded. Returns the prefix length.
fn check_prefix_then_reset(items: &[Value], last: u64) -> u64 {
    let mut next = 1;
    for (i, v) in items.iter().enumerate() {
        if v.get("reset").is_some() {
            assert_eq!(*v, json!({"topic":"dr.t","reset":true,"seq":last}), "{v}");
            assert_eq!(i + 1, items.len(), "the reset comes last");
            return next - 1;
        }
        assert_eq!(v["seq"], next, "order before the reset");
        next += 1;
    }
    panic!("no reset after {} messages", next - 1);
}

/// PROTOCOL.md "Slow consumers": with `--slow-policy drop`, a WebSocket and an SSE
/// subscriber that do not read while 512 messages of 64 KiB are published keep their
/// connections; when they read again they get a prefix of the messages, then a reset
/// for the topic (`seq` 512), then live messages; a subscriber that reads gets every
/// message in order. Drops and resets are counted; nobody is closed.
#[test]
fn slow_consumers_lose_messages_not_their_connection_and_get_a_reset() {
    const N: u64 = 512;
    const AHEAD: u64 = 3;
    let server = Server::start(&[
        "--shards",
        "2",
        "--max-queued-bytes",
        "256KiB",
        "--slow-policy",
        "drop",
    ]);
    let addr = server.addr();
    let mut slow_ws = RawWs::connect(addr, "/ws?topic=dr.t");
    let mut slow_sse = SseClient::connect(addr, "/sse?topic=dr.t");
    let good = ws_connect(&server.ws_url("/ws?topic=dr.t"));
    let (mut good, mut conn) = publish_paced(addr, "dr.t", N, AHEAD, good);

    // The stalled WebSocket reads again.
    let mut items = Vec::new();
    while items
        .last()
        .is_none_or(|v: &Value| v.get("reset").is_none())
    {
        let f = slow_ws.expect_frame();
        assert_eq!(f.opcode, OP_TEXT, "{f:?}");
        items.push(serde_json::from_slice(&f.payload).unwrap());
    }
    let kept = check_prefix_then_reset(&items, N);
    assert!(kept < N, "the WebSocket got everything: it was not slow");
    // The stalled SSE stream too (resets have no id).
    let mut items = Vec::new();
    while items
        .last()
        .is_none_or(|v: &Value| v.get("reset").is_none())
    {
        let ev = next_sse(&mut slow_sse);
        if ev.data.contains("\"reset\"") {
            assert_eq!(ev.event, "message");
        }
        items.push(serde_json::from_str(&ev.data).unwrap());
    }
    let kept = check_prefix_then_reset(&items, N);
    assert!(kept < N, "the SSE stream got everything: it was not slow");

    // Live again, all three.
    publish_on(&mut conn, "dr.t", b"\"after\"");
    assert_eq!(next_json(&mut good)["seq"], N + 1);
    let f = slow_ws.expect_frame();
    assert_eq!(
        serde_json::from_slice::<Value>(&f.payload).unwrap()["seq"],
        N + 1
    );
    let ev = next_sse(&mut slow_sse);
    assert_eq!(
        serde_json::from_str::<Value>(&ev.data).unwrap()["seq"],
        N + 1
    );

    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_slow_consumer_drops_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_drop_resets_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_slow_consumer_closes_total"),
        Some(0.0),
        "{m}"
    );
    assert!(
        metric_sum(&m, "switchboard_dropped_messages_total").unwrap() > 0.0,
        "{m}"
    );
}

/// PROTOCOL.md "Slow consumers": `--max-queued-messages` bounds the queue in messages
/// too: with 16 (and a byte bound of 1 GiB that 5000 messages of 16 KiB cannot reach),
/// a stalled subscriber is closed (default policy) with close 1013.
#[test]
fn the_message_count_bound_applies() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--max-queued-messages",
        "16",
        "--max-queued-bytes",
        "1GiB",
    ]);
    let addr = server.addr();
    let mut slow = RawWs::connect(addr, "/ws?topic=mc.t");
    let mut conn = HttpConn::connect(addr).unwrap();
    // Small messages fill the kernel buffers slowly; publish until the bound bites.
    let pad = "q".repeat(16 * 1024);
    let mut i = 0;
    while metric_sum(&metrics(addr), "switchboard_slow_consumer_closes_total") != Some(1.0) {
        i += 1;
        assert!(i < 5000, "never closed");
        publish_on(
            &mut conn,
            "mc.t",
            json!({"i": i, "pad": pad}).to_string().as_bytes(),
        );
    }
    let end = loop {
        match slow.read_frame(DEFAULT_TIMEOUT) {
            Ok(f) if f.opcode == OP_TEXT => {}
            other => break other,
        }
    };
    match end {
        Ok(f) => assert_eq!((f.opcode, close_code(&f.payload)), (OP_CLOSE, Some(1013))),
        Err(End::Eof | End::Reset) => {}
        Err(End::Timeout) => panic!("still open"),
    }
}
