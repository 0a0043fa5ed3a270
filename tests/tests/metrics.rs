//! `/metrics` and `/healthz` (PROTOCOL.md "Other endpoints"): after real traffic on
//! every transport, the text passes a real Prometheus parser and linter
//! (`promtool check metrics`, from Debian's `prometheus` package) and the counters the
//! traffic should move have moved.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use switchboard_e2e::*;

/// Runs `promtool check metrics` on `text`; panics with its report unless it passes.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package `prometheus`, see .ci/run) is needed: {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({:?}):\n{}{}\n--- the text ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn value(text: &str, name: &str) -> f64 {
    metric(text, name).unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

fn sum(text: &str, name: &str) -> f64 {
    metric_sum(text, name).unwrap_or_else(|| panic!("no samples of {name} in:\n{text}"))
}

/// Sum over shards of `family{shard="..",<label>}`.
fn labelled(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// PROTOCOL.md "Other endpoints": with a WebSocket, an SSE stream and a held long-poll
/// receiving three messages, a 404 and a refused oversized head, `/metrics` passes
/// `promtool check metrics` and reports: connections by transport and shard, accepts,
/// messages published and delivered by transport, bytes sent, history size, the limit
/// hit, the statuses answered, loop turns and loop time, and not draining.
#[test]
fn metrics_pass_promtool_and_count_the_traffic() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    promtool_check(&metrics(addr));

    let mut ws = ws_connect(&server.ws_url("/ws?topic=met.t"));
    let mut sse = SseClient::connect(addr, "/sse?topic=met.t");
    let mut poll = HttpConn::connect(addr).expect("connect");
    poll.send_request("GET", "/poll?topic=met.t", &[], b"")
        .unwrap();
    assert!(
        wait_until(DEFAULT_TIMEOUT, || metric_sum(
            &metrics(addr),
            "switchboard_polls_held_total"
        ) == Some(1.0)),
        "the poll is held"
    );
    for i in 1..=3 {
        publish(addr, "met.t", format!("{i}").as_bytes());
    }
    for i in 1..=3 {
        assert_eq!(next_json(&mut ws)["seq"], i);
        let ev = next_sse(&mut sse);
        assert!(ev.data.contains(&format!("\"seq\":{i}")), "{ev:?}");
    }
    let r = poll.read_response("GET").expect("the poll is answered");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(http_request(addr, "GET", "/nowhere", &[], b"").status, 404);
    let big = "v".repeat(9000);
    let (r, _) = exchange(
        addr,
        &build_request(addr, "GET", "/healthz", &[("X-Big", &big)], b"", false),
    );
    assert_eq!(r.status, 431);

    let text = metrics(addr);
    promtool_check(&text);
    assert_eq!(
        labelled(&text, "switchboard_connections", "state=\"ws\""),
        1.0
    );
    assert_eq!(
        labelled(&text, "switchboard_connections", "state=\"sse\""),
        1.0
    );
    assert!(sum(&text, "switchboard_accepted_total") >= 4.0);
    assert_eq!(value(&text, "switchboard_router_published_total"), 3.0);
    assert_eq!(sum(&text, "switchboard_publishes_total"), 3.0);
    assert_eq!(
        labelled(&text, "switchboard_deliveries_total", "transport=\"ws\""),
        3.0
    );
    assert_eq!(
        labelled(&text, "switchboard_deliveries_total", "transport=\"sse\""),
        3.0
    );
    assert_eq!(
        labelled(&text, "switchboard_deliveries_total", "transport=\"poll\""),
        1.0
    );
    assert!(sum(&text, "switchboard_bytes_sent_total") > 0.0);
    assert_eq!(value(&text, "switchboard_history_messages"), 3.0);
    assert_eq!(
        labelled(
            &text,
            "switchboard_limit_hits_total",
            "limit=\"head_bytes\""
        ),
        1.0
    );
    assert_eq!(sum(&text, "switchboard_limit_hits_total"), 1.0);
    assert!(labelled(&text, "switchboard_http_responses_total", "status=\"404\"") >= 1.0);
    assert!(labelled(&text, "switchboard_http_responses_total", "status=\"431\"") >= 1.0);
    assert!(sum(&text, "switchboard_loop_turns_total") > 0.0);
    assert!(sum(&text, "switchboard_loop_busy_seconds_total") > 0.0);
    assert!(metric_sum(&text, "switchboard_loop_turn_max_seconds").is_some());
    assert_eq!(value(&text, "switchboard_draining"), 0.0);
    assert_eq!(http_get_ok(addr, "/healthz"), "ok");

    // Closes by reason: the oversized head was closed for a limit, the WebSocket the
    // client closes for the client.
    assert_eq!(
        ws.close_handshake(None, DEFAULT_TIMEOUT)
            .map(|f| f.is_none()),
        Some(true),
        "the server answers the client's close"
    );
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            let text = metrics(addr);
            labelled(&text, "switchboard_closed_total", "reason=\"limit\"") == 1.0
                && labelled(&text, "switchboard_closed_total", "reason=\"client\"") >= 1.0
        }),
        "closes counted by reason:\n{}",
        metrics(addr)
    );
    promtool_check(&metrics(addr));
}
