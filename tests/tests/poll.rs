//! Long-poll, `GET /poll` (PROTOCOL.md "Long-poll"), against the real engine: held
//! then answered by a publish, answered at once from history, the timeout, resume with
//! the returned position across new connections with no loss and no duplicate,
//! resets, keep-alive between polls, and refused requests.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;

use common::*;
use serde_json::{Value, json};
use switchboard_e2e::*;

/// Checks a poll answer (`200`, JSON `{"pos","messages"}`, `Cache-Control: no-store`)
/// and returns `(pos, messages)`.
fn answer(r: &HttpResponse) -> (String, Vec<Value>) {
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    let pos = v["pos"].as_str().expect("pos").to_string();
    pos_gseq(&pos);
    (pos, v["messages"].as_array().expect("messages").clone())
}

fn poll_on(conn: &mut HttpConn, path: &str) -> (String, Vec<Value>) {
    conn.send_request("GET", path, &[], b"").unwrap();
    answer(&conn.read_response("GET").unwrap())
}

/// Waits until `n` polls are held on the server (`switchboard_connections{state="poll"}`).
fn wait_held(addr: SocketAddr, n: f64) {
    assert!(
        wait_until(DEFAULT_TIMEOUT, || {
            let m = metrics(addr);
            (0..2).map(|s| conns(&m, s, "poll")).sum::<f64>() == n
        }),
        "{n} polls never held"
    );
}

/// PROTOCOL.md "Long-poll": with nothing to answer, the request is held; a publish
/// answers it at once with that message and its position; the next poll with that
/// position on the same (kept-alive) connection is held again and answered by the next
/// publish; nothing is repeated.
#[test]
fn a_held_poll_is_answered_by_a_publish_then_polls_again_on_the_same_connection() {
    let server = Server::start(&["--shards", "2", "--poll-timeout", "60s"]);
    let addr = server.addr();
    let poller = thread::spawn(move || {
        let mut conn = HttpConn::connect(addr).unwrap();
        let (pos, first) = poll_on(&mut conn, "/poll?topic=lp.a&topic=lp.b.*");
        let (pos2, second) = poll_on(
            &mut conn,
            &format!("/poll?topic=lp.a&topic=lp.b.*&since={pos}"),
        );
        assert!(pos_gseq(&pos2) > pos_gseq(&pos));
        (pos, first, second)
    });
    wait_held(addr, 1.0);
    publish(addr, "lp.other", b"0");
    publish(addr, "lp.b.c", b"1");
    // The second poll is held once two have been.
    assert!(wait_until(DEFAULT_TIMEOUT, || {
        metric_sum(&metrics(addr), "switchboard_polls_held_total") == Some(2.0)
    }));
    publish(addr, "lp.a", b"2");
    let (pos, first, second) = poller.join().unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0]["pos"],
        pos.as_str(),
        "the answer's pos is its last message's"
    );
    assert_eq!(
        strip_pos(first[0].clone()),
        json!({"topic":"lp.b.c","seq":1,"data":1})
    );
    assert_eq!(
        second.iter().cloned().map(strip_pos).collect::<Vec<_>>(),
        vec![json!({"topic":"lp.a","seq":1,"data":2})]
    );
    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_polls_answered_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "switchboard_polls_timed_out_total"),
        Some(0.0),
        "{m}"
    );
}

/// PROTOCOL.md "Long-poll": `since` older than messages in history answers at once
/// with all of them (in publish order, over topics and subtrees).
#[test]
fn a_poll_with_a_position_is_answered_at_once_from_history() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    let mut conn = HttpConn::connect(addr).unwrap();
    // Learn a position by a first exchange.
    let held = thread::spawn(move || {
        let mut c = HttpConn::connect(addr).unwrap();
        poll_on(&mut c, "/poll?topic=ph.a")
    });
    wait_held(addr, 1.0);
    publish(addr, "ph.a", b"1");
    let (pos, _) = held.join().unwrap();
    publish(addr, "ph.x.y", b"2");
    publish(addr, "ph.z", b"3");
    publish(addr, "ph.a", b"4");
    let (pos2, msgs) = poll_on(
        &mut conn,
        &format!("/poll?topic=ph.a&topic=ph.x.*&since={pos}"),
    );
    assert_eq!(
        msgs.iter().cloned().map(strip_pos).collect::<Vec<_>>(),
        vec![
            json!({"topic":"ph.x.y","seq":1,"data":2}),
            json!({"topic":"ph.a","seq":2,"data":4}),
        ]
    );
    assert!(pos_gseq(&pos2) >= pos_gseq(msgs[1]["pos"].as_str().unwrap()));
}

/// PROTOCOL.md "Long-poll": after `--poll-timeout` with nothing to say, `200` with no
/// messages and a position to poll with next; the connection stays usable.
#[test]
fn a_poll_times_out_empty_and_the_connection_is_kept() {
    let server = Server::start(&["--shards", "2", "--poll-timeout", "1s"]);
    let addr = server.addr();
    let mut conn = HttpConn::connect(addr).unwrap();
    let (pos, msgs) = poll_on(&mut conn, "/poll?topic=pt.a");
    assert!(msgs.is_empty());
    let m = metrics(addr);
    assert_eq!(
        metric_sum(&m, "switchboard_polls_timed_out_total"),
        Some(1.0),
        "{m}"
    );
    // Published between polls: the next poll with the position gets it at once.
    publish(addr, "pt.a", b"1");
    let (_, msgs) = poll_on(&mut conn, &format!("/poll?topic=pt.a&since={pos}"));
    assert_eq!(
        strip_pos(msgs[0].clone()),
        json!({"topic":"pt.a","seq":1,"data":1})
    );
    conn.send_request("GET", "/healthz", &[], b"").unwrap();
    assert_eq!(conn.read_response("GET").unwrap().status, 200);
}

/// PROTOCOL.md "Long-poll": a client polling in a loop with the returned position, on a
/// new connection every other time, while messages are published, gets every message
/// of its topics once, in order.
#[test]
fn polling_with_positions_loses_and_repeats_nothing() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--history-size",
        "4096",
        "--poll-timeout",
        "5s",
    ]);
    let addr = server.addr();
    const N: u64 = 200;
    let mut conn = HttpConn::connect(addr).unwrap();
    // A position of no instance: the first answer starts with a reset per pattern, then
    // everything history has (all of it: history is larger than the run).
    let mut pos = "00000000-0".to_string();
    let mut resets = Vec::new();
    let publisher = thread::spawn(move || {
        let mut c = HttpConn::connect(addr).unwrap();
        for i in 1..=N {
            publish_on(&mut c, "pl.a", i.to_string().as_bytes());
            publish_on(&mut c, "pl.b.c", i.to_string().as_bytes());
            publish_on(&mut c, "pl.q", i.to_string().as_bytes());
        }
    });
    let mut seqs: BTreeMap<String, u64> = BTreeMap::new();
    let mut polls = 0;
    while seqs.values().sum::<u64>() < 2 * N {
        polls += 1;
        if polls % 2 == 0 {
            conn = HttpConn::connect(addr).unwrap();
        }
        let (next, msgs) = poll_on(
            &mut conn,
            &format!("/poll?topic=pl.a&topic=pl.b.*&since={pos}"),
        );
        for m in &msgs {
            if m.get("reset").is_some() {
                assert_eq!(polls, 1, "resets only in the first answer: {m}");
                resets.push(m.clone());
                continue;
            }
            let topic = m["topic"].as_str().unwrap().to_string();
            let last = seqs.entry(topic.clone()).or_default();
            assert_eq!(m["seq"], *last + 1, "{topic} after {last}");
            *last += 1;
        }
        assert!(pos_gseq(&next) >= pos_gseq(&pos));
        pos = next;
    }
    publisher.join().unwrap();
    assert_eq!(
        seqs,
        BTreeMap::from([("pl.a".into(), N), ("pl.b.c".into(), N)])
    );
    assert_eq!(resets.len(), 2, "{resets:?}");
    assert_eq!(resets[1], json!({"topic":"pl.b.*","reset":true}));
}

/// PROTOCOL.md "Resets": a poll from before history answers at once with the reset
/// first, then what history holds.
#[test]
fn a_poll_older_than_history_starts_with_a_reset() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--history-size",
        "2",
        "--poll-timeout",
        "5s",
    ]);
    let addr = server.addr();
    let held = thread::spawn(move || {
        let mut c = HttpConn::connect(addr).unwrap();
        poll_on(&mut c, "/poll?topic=pr.a")
    });
    wait_held(addr, 1.0);
    publish(addr, "pr.a", b"1");
    let (pos, _) = held.join().unwrap();
    for i in 2..=4 {
        publish(addr, "pr.a", i.to_string().as_bytes());
    }
    let mut conn = HttpConn::connect(addr).unwrap();
    let (_, msgs) = poll_on(&mut conn, &format!("/poll?topic=pr.a&since={pos}"));
    assert_eq!(
        msgs.iter().cloned().map(strip_pos).collect::<Vec<_>>(),
        vec![
            json!({"topic":"pr.a","reset":true,"seq":4}),
            json!({"topic":"pr.a","seq":3,"data":3}),
            json!({"topic":"pr.a","seq":4,"data":4}),
        ]
    );
}

/// PROTOCOL.md "Long-poll": no topic, an invalid or reserved one is `400`; another
/// method is `405`; a client that leaves while held costs nothing (the gauge returns
/// to 0).
#[test]
fn bad_polls_are_refused_and_abandoned_polls_are_cleaned_up() {
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr();
    for path in [
        "/poll",
        "/poll?topic=",
        "/poll?topic=a..b",
        "/poll?topic=client.*",
    ] {
        let r = http_request(addr, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    let r = http_request(addr, "POST", "/poll?topic=a", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    {
        let mut c = HttpConn::connect(addr).unwrap();
        c.send_request("GET", "/poll?topic=gone.a", &[], b"")
            .unwrap();
        wait_held(addr, 1.0);
    }
    wait_held(addr, 0.0);
    publish(addr, "gone.a", b"1");
    assert_healthy(addr);
}

/// PROTOCOL.md "Long-poll": an answer from history holds at most `--max-queued-bytes` of
/// envelopes; its `pos` is then its last message's, and polling on from it gets the
/// rest: every message once, in order.
#[test]
fn a_long_replay_comes_in_bounded_answers() {
    let server = Server::start(&["--shards", "2", "--max-queued-bytes", "1KiB"]);
    let addr = server.addr();
    let held = thread::spawn(move || {
        let mut c = HttpConn::connect(addr).unwrap();
        poll_on(&mut c, "/poll?topic=pc.a")
    });
    wait_held(addr, 1.0);
    publish(addr, "pc.a", b"0");
    let (mut pos, _) = held.join().unwrap();
    let pad = "z".repeat(300);
    for i in 1..=10 {
        publish(
            addr,
            "pc.a",
            json!({"i": i, "pad": pad}).to_string().as_bytes(),
        );
    }
    let mut conn = HttpConn::connect(addr).unwrap();
    let mut got = Vec::new();
    let mut answers = 0;
    while got.len() < 10 {
        answers += 1;
        let (next, msgs) = poll_on(&mut conn, &format!("/poll?topic=pc.a&since={pos}"));
        assert!(
            !msgs.is_empty() && msgs.len() <= 3,
            "{} messages",
            msgs.len()
        );
        assert_eq!(next, msgs.last().unwrap()["pos"].as_str().unwrap());
        got.extend(msgs.iter().map(|m| m["data"]["i"].as_u64().unwrap()));
        pos = next;
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    assert!(answers >= 4, "{answers} answers");
}
