//! Throughput of `ami-sim`'s event stream to reading clients: a measurement, not a
//! pass/fail test (ignored by default). Run it on an otherwise idle machine with
//!
//! ```text
//! cargo test --release -p switchboard-e2e --test ami_sim_throughput -- --ignored --nocapture
//! ```
//!
//! Environment: `AMI_SIM_RATE` (events/s asked of the simulator, default 200000),
//! `AMI_SIM_SECS` (seconds measured, default 30), `AMI_SIM_CLIENTS` (default "1,10": one
//! run per count). Each client logs in with `Events: on`, then reads as fast as it can
//! and counts complete messages (`\r\n\r\n`); the figure printed is events per second
//! per client and in total over the measured window (after a 2 s warm-up), and how many
//! clients were dropped as too slow (with one client, none may be).

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use switchboard_e2e::*;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts `\r\n\r\n` (message ends) across reads, carrying the last 3 bytes.
fn count_ends(carry: &mut [u8; 3], data: &[u8]) -> u64 {
    let mut n = 0;
    let mut prev = *carry;
    for &b in data {
        // `prev`: the three bytes before `b`, oldest first.
        if b == b'\n' && prev == [b'\r', b'\n', b'\r'] {
            n += 1;
        }
        prev = [prev[1], prev[2], b];
    }
    *carry = prev;
    n
}

fn measure(clients: usize, rate: u64, secs: u64) {
    let rate_s = rate.to_string();
    let server = Server::start_ami_sim(&["--events-per-sec", &rate_s, "--seed", "7"]);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..clients {
        let count = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        counters.push((count.clone(), bytes.clone()));
        let (stop, measuring) = (stop.clone(), measuring.clone());
        let addr = server.addr();
        threads.push(thread::spawn(move || {
            let mut s = tcp_connect(addr).expect("connect");
            s.write_all(
                b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\nEvents: on\r\n\r\n",
            )
            .unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut carry = [0u8; 3];
            let mut closed = false;
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        let ends = count_ends(&mut carry, &buf[..n]);
                        if measuring.load(Ordering::Relaxed) {
                            count.fetch_add(ends, Ordering::Relaxed);
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
            closed
        }));
    }
    thread::sleep(Duration::from_secs(2));
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut total_bytes = 0u64;
    let mut min = u64::MAX;
    for (c, b) in &counters {
        let c = c.load(Ordering::Relaxed);
        total += c;
        total_bytes += b.load(Ordering::Relaxed);
        min = min.min(c);
    }
    let dropped = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&closed| closed)
        .count();
    println!(
        "ami-sim --events-per-sec {rate}: {clients} client(s), {secs} s: {:.0} events/s per client \
         (slowest {:.0}), {:.0} events/s and {:.1} MB/s in total; {dropped} client(s) dropped as \
         too slow",
        total as f64 / elapsed / clients as f64,
        min as f64 / elapsed,
        total as f64 / elapsed,
        total_bytes as f64 / elapsed / 1e6
    );
    // One client on an idle machine must keep up; with many, the clients' threads share
    // the cores with the server and the slowest may be dropped as Asterisk would drop it.
    if clients == 1 {
        assert_eq!(
            dropped,
            0,
            "the reading client was dropped:\n{}",
            server.log()
        );
    }
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture on an idle machine"]
fn events_per_second_to_reading_clients() {
    let rate: u64 = env_or("AMI_SIM_RATE", 200_000);
    let secs: u64 = env_or("AMI_SIM_SECS", 30);
    let counts: String = env_or("AMI_SIM_CLIENTS", "1,10".to_string());
    for n in counts
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        measure(n, rate, secs);
    }
}

#[test]
fn message_ends_are_counted_across_reads() {
    let stream = b"Event: A\r\n\r\nEvent: B\r\nX: y\r\n\r\nEvent: C\r\n\r\n";
    for split in 0..stream.len() {
        let mut carry = [0u8; 3];
        let n = count_ends(&mut carry, &stream[..split]) + count_ends(&mut carry, &stream[split..]);
        assert_eq!(n, 3, "split at {split}");
    }
}
