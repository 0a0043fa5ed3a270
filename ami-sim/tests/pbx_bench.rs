//! Throughput of `Pbx::advance`, encoding included (ignored: a measurement, not a
//! check). Run it in release mode on an idle machine:
//!
//! ```text
//! cargo test -p ami-sim --release --test pbx_bench -- --ignored --nocapture
//! ```

use std::time::Instant;

use ami_sim::pbx::{Pbx, PbxConfig};

const T0: u64 = 1_795_249_000_000_000;

fn measure(label: &str, cfg: PbxConfig, sim_secs: u64) {
    let mut pbx = Pbx::new(cfg, 1, T0);
    let mut out = Vec::with_capacity(1 << 16);
    let (mut events, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut t = T0;
    while t < T0 + sim_secs * 1_000_000 {
        t += 10_000;
        pbx.advance(t, &mut out);
        events += out.len() as u64;
        bytes += out.iter().map(|e| e.bytes.len() as u64).sum::<u64>();
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label}: {events} events, {:.0} MB in {secs:.2} s: {:.0} events/s, {:.1} MB/s ({:.0} B/event); {} calls up",
        bytes as f64 / 1e6,
        events as f64 / secs,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / events.max(1) as f64,
        pbx.stats().calls_up
    );
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn events_per_second() {
    measure(
        "stress 500k ev/s target, noise on ",
        PbxConfig {
            events_per_sec: Some(500_000.0),
            ..PbxConfig::default()
        },
        20,
    );
    measure(
        "stress 500k ev/s target, noise off",
        PbxConfig {
            events_per_sec: Some(500_000.0),
            noise: false,
            ..PbxConfig::default()
        },
        20,
    );
    measure(
        "3,000 calls/s, noise on             ",
        PbxConfig {
            calls_per_sec: 3000.0,
            ..PbxConfig::default()
        },
        20,
    );
}
