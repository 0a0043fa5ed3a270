//! AMI parse throughput on a real Asterisk 22 capture (not a test: prints figures).
//!
//! `cargo run --release -p switchboard-proto --example ami_parse_bench [-- FILE [PASSES]]`
//!
//! Parses the capture (default `tests/fixtures/ami/asterisk22-local.txt`, 9.3 MB,
//! 23,759 messages) PASSES times (default 30) in the client role, on one core, in
//! three ways: the whole capture in one buffer; the same plus a typical consumer's
//! lookups (event name, `Uniqueid`, `Channel`); and a read loop feeding 16 KiB
//! reads into a buffer that is compacted as messages are consumed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use switchboard_proto::ami::{Item, Parser};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        format!(
            "{}/tests/fixtures/ami/asterisk22-local.txt",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let passes: u32 = args.next().map_or(30, |p| p.parse().expect("PASSES"));
    let capture = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let banner = capture
        .iter()
        .position(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let stream = &capture[banner..];
    println!("{path}: {} bytes, {passes} passes, one core", stream.len());

    report("whole buffer, parse only", stream.len(), passes, || {
        parse_whole(stream, |_| 0)
    });
    report(
        "whole buffer + 3 lookups per message",
        stream.len(),
        passes,
        || {
            parse_whole(stream, |m| {
                let name = m.event().map_or(0, <[u8]>::len);
                let id = m.get("Uniqueid").map_or(0, <[u8]>::len);
                let channel = m.get("Channel").map_or(0, <[u8]>::len);
                name + id + channel
            })
        },
    );
    report(
        "16 KiB reads into a compacting buffer",
        stream.len(),
        passes,
        || parse_reads(stream, 16 * 1024),
    );
}

/// Parses `stream` in one buffer; returns (messages, checksum).
fn parse_whole(
    stream: &[u8],
    touch: impl Fn(&switchboard_proto::ami::Message<'_>) -> usize,
) -> (u64, usize) {
    let mut parser = Parser::client().skip_banner();
    let mut at = 0;
    let mut messages = 0;
    let mut sum = 0;
    while let Ok((n, Some(item))) = parser.parse(&stream[at..]) {
        if let Item::Message(m) = item {
            messages += 1;
            sum += m.len() + touch(&m);
        }
        at += n;
    }
    (messages, sum)
}

/// Feeds `stream` in reads of `read` bytes, as a socket loop would.
fn parse_reads(stream: &[u8], read: usize) -> (u64, usize) {
    let mut parser = Parser::client().skip_banner();
    let mut buf = Vec::with_capacity(4 * read);
    let mut messages = 0;
    let mut sum = 0;
    for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let Ok((n, item)) = parser.parse(&buf[at..]) else {
                panic!("parse error")
            };
            at += n;
            match item {
                Some(Item::Message(m)) => {
                    messages += 1;
                    sum += m.len();
                }
                Some(_) => {}
                None => break,
            }
        }
        buf.drain(..at);
    }
    (messages, sum)
}

fn report(what: &str, bytes: usize, passes: u32, mut run: impl FnMut() -> (u64, usize)) {
    // One warm-up pass (sizes the field index, warms the caches).
    let (messages, _) = black_box(run());
    let mut best = Duration::MAX;
    let start = Instant::now();
    for _ in 0..passes {
        let t = Instant::now();
        black_box(run());
        best = best.min(t.elapsed());
    }
    let mean = start.elapsed() / passes;
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let mps = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "{what:40} mean {:7.1} MB/s {:10.0} msg/s | best {:7.1} MB/s {:10.0} msg/s ({messages} messages/pass)",
        mbps(mean),
        mps(mean),
        mbps(best),
        mps(best),
    );
}
