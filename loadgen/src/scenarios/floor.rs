//! `floor`: what the kernel costs before any server does anything, so that every engine
//! figure can be stated as a ratio to it.
//!
//! (a) Memory: `Slab` (host-wide, both ends of each pair) before any socket, with N idle
//! loopback pairs open, and with a multishot receive armed on every socket of both ends
//! (as in a `hold` run, where the server and loadgen each arm one), each after a settling
//! pause. (b) CPU: the accepting side sends the same WebSocket frame (an envelope with a
//! `--payload` body) to every socket `--rounds` times while the connecting side reads;
//! CPU per delivery of the sending threads (`schedstat`) and of the whole process
//! (`utime + stime`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use switchboard_proto::{envelope, ws};

use super::{Outcome, RateMeter, nofile_limit, progress};
use crate::body;
use crate::cli::FloorArgs;
use crate::measure::{MemSample, TargetSampler, UserSource, per_connection_detail};
use crate::net::addr;
use crate::net::floor::{Floor, FloorPlan, Phase};
use crate::report::{self, Memory, Report};

/// The method string of the floor beside other reports.
pub const ARMED_METHOD: &str =
    "idle loopback TCP pairs, a multishot receive armed on both ends (io_uring, fixed files)";

/// The memory part of the floor.
#[derive(Debug, Clone)]
pub struct PairsFloor {
    pub method: String,
    pub pairs: u64,
    pub before: MemSample,
    pub idle: MemSample,
    pub armed: MemSample,
    pub idle_per_pair: f64,
    pub armed_per_pair: f64,
}

/// Pairs per group: as even as possible, each within one fixed-file table.
pub fn groups(pairs: u64) -> Vec<u32> {
    let per_ring = nofile_limit().saturating_sub(16).max(1);
    let n = pairs.div_ceil(per_ring).max(1);
    (0..n)
        .map(|i| (pairs / n + u64::from(i < pairs % n)) as u32)
        .collect()
}

fn frame(payload: usize) -> Bytes {
    let mut data = Vec::new();
    body::encode(&mut data, 1, 0, payload);
    let mut env = Vec::new();
    // A position as long as a busy server's (epoch, a million messages in).
    let pos = switchboard_proto::position::Position {
        epoch: 0x1f0c_93aa,
        gseq: 1_000_000,
    };
    envelope::write_envelope(&mut env, "floor", 1, pos, &data);
    let mut out = Vec::new();
    ws::encode_frame(&mut out, ws::Opcode::Text, true, &env, None);
    Bytes::from(out)
}

/// Runs the pair phases with the threads of `floor`, returning the (idle, armed) samples.
fn pairs_phases(
    floor: &Floor,
    sampler: &mut TargetSampler,
    pairs: u64,
    settle: Duration,
    quiet: bool,
    t0: Instant,
) -> Result<(MemSample, MemSample)> {
    let ms = || t0.elapsed().as_millis() as u64;
    let prog = progress(quiet, "floor: pairs", pairs);
    let mut meter = RateMeter::new();
    let deadline = Instant::now() + Duration::from_secs_f64(60.0 + pairs as f64 / 1000.0);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let g = &floor.control.groups;
        let connected: u64 = g
            .iter()
            .map(|c| c.connected.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let accepted: u64 = g
            .iter()
            .map(|c| c.accepted.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let errors: u64 = g
            .iter()
            .map(|c| c.connect_errors.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        prog.update(connected.min(accepted), meter.rate(connected), errors);
        if errors > 0 {
            prog.finish();
            bail!("floor: {errors} connects failed (a bare loopback pair should never fail)");
        }
        if connected == pairs && accepted == pairs {
            break;
        }
        if Instant::now() > deadline || floor.any_finished() {
            prog.finish();
            bail!("floor: only {connected} connected / {accepted} accepted of {pairs} pairs");
        }
    }
    prog.finish();
    std::thread::sleep(settle);
    let idle = sampler.sample(pairs, ms())?;
    floor.control.set(Phase::Arm);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = &floor.control.groups;
        let armed: u64 = g
            .iter()
            .map(|c| {
                c.armed_server
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .min(c.armed_client.load(std::sync::atomic::Ordering::Relaxed))
            })
            .sum();
        if armed == pairs {
            break;
        }
        if Instant::now() > deadline {
            bail!("floor: receives armed on {armed} of {pairs} pairs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(settle);
    let armed = sampler.sample(pairs, ms())?;
    Ok((idle, armed))
}

/// The memory floor with `pairs` pairs (used before hold/fanout runs).
pub fn measure_pairs(
    pairs: u64,
    sources: Option<Vec<Ipv4Addr>>,
    quiet: bool,
) -> Result<PairsFloor> {
    let mut sampler = TargetSampler::new(&[]).context("sampling /proc")?;
    let t0 = Instant::now();
    let before = sampler.sample(0, 0)?;
    let floor = Floor::start(plan(pairs, sources, 20_000, Bytes::new(), 0)?)?;
    let phases = pairs_phases(
        &floor,
        &mut sampler,
        pairs,
        Duration::from_secs(1),
        quiet,
        t0,
    );
    floor.stop()?;
    let (idle, armed) = phases?;
    // Let the kernel finish tearing the pairs down before anything else is measured.
    std::thread::sleep(Duration::from_millis(500));
    Ok(pairs_floor(pairs, before, idle, armed))
}

fn pairs_floor(pairs: u64, before: MemSample, idle: MemSample, armed: MemSample) -> PairsFloor {
    let k =
        |a: &MemSample, b: &MemSample| per_connection_detail(a, b).map_or(0.0, |d| d.kernel_slab);
    PairsFloor {
        method: ARMED_METHOD.to_string(),
        pairs,
        idle_per_pair: k(&before, &idle),
        armed_per_pair: k(&before, &armed),
        before,
        idle,
        armed,
    }
}

fn plan(
    pairs: u64,
    sources: Option<Vec<Ipv4Addr>>,
    connect_rate: u64,
    frame: Bytes,
    rounds: u32,
) -> Result<FloorPlan> {
    if pairs == 0 || pairs > u64::from(u32::MAX / 4) {
        bail!("floor: give 1 to {} pairs", u32::MAX / 4);
    }
    let dst = "127.0.0.1:1".parse().expect("an address");
    let sources = sources.unwrap_or_else(|| addr::default_sources(pairs, dst));
    addr::check_sources(pairs, &sources).map_err(anyhow::Error::msg)?;
    Ok(FloorPlan {
        groups: groups(pairs),
        sources,
        connect_rate: connect_rate.max(1) as f64,
        connect_timeout: Duration::from_secs(10),
        frame,
        rounds,
    })
}

pub fn run(args: &FloorArgs) -> Result<Outcome> {
    let pairs = args.connections;
    let frame = frame(args.payload);
    let me = std::process::id();
    let mut sampler = TargetSampler::new(&[me]).context("sampling /proc")?;
    let mut report = Report::new("floor", &[], report::current_argv());
    super::time_wait_note(&mut report);
    let started = Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let before = sampler.sample(0, ms())?;
    let floor = Floor::start(plan(
        pairs,
        args.source_ips.as_ref().map(|s| s.0.clone()),
        args.connect_rate,
        frame.clone(),
        args.rounds,
    )?)?;
    let result = (|| -> Result<_> {
        let (idle, armed) = pairs_phases(
            &floor,
            &mut sampler,
            pairs,
            args.settle,
            args.quiet,
            started,
        )?;
        let mut send = None;
        if args.rounds > 0 {
            let deliveries = pairs * u64::from(args.rounds);
            let cpu_before = sampler.sample(pairs, ms())?;
            let t = Instant::now();
            floor.control.set(Phase::Send);
            let prog = progress(args.quiet, "floor: send loop", deliveries);
            let mut meter = RateMeter::new();
            let want = deliveries * frame.len() as u64;
            let deadline =
                Instant::now() + Duration::from_secs_f64(120.0 + deliveries as f64 / 10_000.0);
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let g = &floor.control.groups;
                let got: u64 = g
                    .iter()
                    .map(|c| c.bytes_received.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let done = g
                    .iter()
                    .all(|c| c.send_finished.load(std::sync::atomic::Ordering::Relaxed));
                let delivered = got / frame.len() as u64;
                prog.update(delivered, meter.rate(delivered), 0);
                if done && got >= want {
                    break;
                }
                if Instant::now() > deadline {
                    prog.finish();
                    bail!(
                        "floor: the send loop delivered {delivered} of {deliveries} frames in time"
                    );
                }
            }
            let wall = t.elapsed();
            prog.finish();
            let cpu_after = sampler.sample(pairs, ms())?;
            let g = &floor.control.groups;
            let sender_ns: u64 = g
                .iter()
                .map(|c| c.sender_cpu_ns.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            let send_errors: u64 = g
                .iter()
                .map(|c| c.send_errors.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            send = Some((
                deliveries,
                cpu_before,
                cpu_after,
                sender_ns,
                wall,
                send_errors,
            ));
        }
        Ok((idle, armed, send))
    })();
    floor.stop()?;
    let (idle, armed, send) = result?;

    let f = pairs_floor(pairs, before, idle, armed);
    report.duration_s = started.elapsed().as_secs_f64();
    report.connections_target = pairs;
    report.connections_established = pairs;
    report.target = report::target_info(None, &[me]);
    let samples = vec![before, idle, armed];
    report.memory = Memory::from_samples(samples, 0, 2, UserSource::None);
    report.memory.set_floor(&f.method, before, armed, false);
    let p = &mut report.parameters;
    let mut put = |k: &str, v: serde_json::Value| {
        p.insert(k.to_string(), v);
    };
    put("pairs", pairs.into());
    put("rings", (2 * groups(pairs).len()).into());
    put("idle_kernel_bytes_per_pair", f.idle_per_pair.into());
    put("armed_kernel_bytes_per_pair", f.armed_per_pair.into());
    put(
        "recv_armed_kernel_bytes_per_socket",
        ((f.armed_per_pair - f.idle_per_pair) / 2.0).into(),
    );
    if let Some(d) = per_connection_detail(&before, &idle) {
        put("tcp_sockets_per_pair", d.tcp_sockets.into());
        put("idle_sunreclaim_bytes_per_pair", d.kernel_sunreclaim.into());
    }
    put("frame_bytes", frame.len().into());
    put("payload_bytes", args.payload.into());
    put("rounds", args.rounds.into());
    if let Some((deliveries, cpu_before, cpu_after, sender_ns, wall, send_errors)) = send {
        put("send_wall_s", wall.as_secs_f64().into());
        put("sender_cpu_s", (sender_ns as f64 / 1e9).into());
        put(
            "sender_cpu_us_per_delivery",
            (sender_ns as f64 / 1000.0 / deliveries as f64).into(),
        );
        put("send_errors", send_errors.into());
        report.delivered = deliveries;
        report.expected = deliveries;
        report.deliveries_per_sec = crate::measure::rate(deliveries, wall);
        report.set_target_cpu(&cpu_before, &cpu_after, deliveries);
        report.notes.push(
            "target_cpu_us_per_delivery is loadgen's own process (sender and receiver \
             threads); sender_cpu_us_per_delivery is the sending threads alone, comparable \
             to a server's CPU per delivery"
                .to_string(),
        );
    }
    report.notes.push(format!(
        "kernel figures are Slab deltas (host-wide) per pair, both ends; idle pairs: {:.0} B, \
         with a receive armed on both ends: {:.0} B",
        f.idle_per_pair, f.armed_per_pair
    ));
    Ok(Outcome {
        reports: vec![report],
        met_goal: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_evenly_within_a_table() {
        let per_ring = nofile_limit() - 16;
        assert_eq!(groups(1), vec![1]);
        assert_eq!(groups(per_ring), vec![per_ring as u32]);
        let g = groups(per_ring + 1);
        assert_eq!(g.len(), 2);
        assert_eq!(g.iter().map(|&x| u64::from(x)).sum::<u64>(), per_ring + 1);
        assert!(g[0].abs_diff(g[1]) <= 1);
    }

    #[test]
    fn the_frame_is_an_envelope_in_a_text_frame() {
        let f = frame(100);
        let (h, len) = ws::parse_header(&f).unwrap().unwrap();
        assert_eq!(h.opcode, ws::Opcode::Text);
        assert!(h.fin && h.mask.is_none());
        let env = &f[len..];
        assert_eq!(env.len() as u64, h.payload_len);
        assert_eq!(body::decode(env), Some((1, 0)));
    }
}
