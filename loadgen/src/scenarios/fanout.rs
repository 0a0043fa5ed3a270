//! `fanout` and `slow`: subscribers first (the server answers the handshake only once
//! the subscription is live), then the publish schedule; every subscriber open when
//! measuring begins counts: its topic's published messages are expected, each arrival
//! goes through its sequence bookkeeping and its latency is taken from the message's
//! *scheduled* time. After the last publish, at most `--drain` for the stragglers. In
//! `slow`, a fraction of the subscribers stops reading when measuring begins and is left
//! out of the accounting; the others are measured as usual while the target buffers for
//! the slow ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{
    Extra, FloorRef, Outcome, POLL, RateMeter, Sampling, Server, build_setup, each_server,
    fill_common, fill_memory, progress, ramp, ramp_timeout, start_clients, time_wait_note,
    topic_names,
};
use crate::cli::{FanoutArgs, SlowArgs};
use crate::measure::{Latency, UserSource};
use crate::net::{Command, TRANSPORTS};
use crate::publisher::{self, PublishProgress, Schedule};
use crate::report::{self, Report};

/// How long the threads get to take their measuring snapshot.
const MEASURE_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Message 0 is due this long after the publisher starts (its connections open first).
const PUBLISH_LEAD: Duration = Duration::from_millis(300);

pub fn run(args: &FanoutArgs) -> Result<Outcome> {
    run_all(args, 0.0, "fanout")
}

pub fn run_slow(args: &SlowArgs) -> Result<Outcome> {
    if !(0.0..1.0).contains(&args.slow_fraction) {
        bail!(
            "--slow-fraction {}: give a fraction in [0, 1)",
            args.slow_fraction
        );
    }
    run_all(&args.fanout, args.slow_fraction, "slow")
}

fn run_all(args: &FanoutArgs, slow_fraction: f64, scenario: &str) -> Result<Outcome> {
    each_server(&args.conn, args.subscribers, |server, floor| {
        run_one(args, server, floor, slow_fraction, scenario)
    })
}

fn run_one(
    args: &FanoutArgs,
    server: &Server,
    floor: Option<&FloorRef>,
    slow_fraction: f64,
    scenario: &str,
) -> Result<(Report, bool)> {
    let conn = &args.conn;
    let p = &args.publish;
    let n = args.subscribers;
    if p.rate == 0 || p.messages == 0 {
        bail!("--rate and --messages must be at least 1");
    }
    let Some(publish_ep) = server.publish.clone() else {
        bail!(
            "{}: no publish endpoint (give --publish-url TEMPLATE)",
            server.name
        );
    };
    let topics = topic_names(conn, conn.topics)?;
    let extra = Extra {
        slow_per_mille: (slow_fraction * 1000.0).round() as u32,
        churn_rate: 0.0,
    };
    let setup = Arc::new(build_setup(conn, server, n, &topics, extra)?);
    let mut report = Report::new(scenario, &setup.mix, report::current_argv());
    time_wait_note(&mut report);
    if let Some(f) = floor {
        f.apply(&mut report);
    }

    let mut sampling = Sampling::new(&server.pids, conn.sample_interval, setup.clock)?;
    let pre = sampling.take(0)?;
    let started = Instant::now();
    let clients = start_clients(&setup)?;
    let prog = progress(
        conn.quiet,
        &format!("{scenario} {}: subscribe", server.name),
        n,
    );
    let ramped = match ramp(&clients, n, ramp_timeout(conn, n), &mut sampling, &prog) {
        Ok(r) => r,
        Err(e) => {
            prog.finish();
            let _ = clients.stop(topics.len());
            return Err(e);
        }
    };
    prog.finish();
    let subscribed = ramped.totals.open;
    let plateau = sampling.take(subscribed)?;

    // Measuring begins: every open subscriber counts from here (slow ones stop reading).
    clients.control.set(Command::Measure);
    let asked = Instant::now();
    while !clients.control.totals().measuring {
        if asked.elapsed() > MEASURE_ACK_TIMEOUT || clients.any_finished() {
            let _ = clients.stop(topics.len());
            bail!("the client threads did not start measuring within {MEASURE_ACK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let measured_per_topic = clients.control.measured_per_topic();
    let measured: u64 = measured_per_topic.iter().sum();
    let k = topics.len() as u64;
    let scheduled_per_topic: Vec<u64> = (0..k)
        .map(|t| p.messages / k + u64::from(t < p.messages % k))
        .collect();
    let expected_max: u64 = scheduled_per_topic
        .iter()
        .zip(&measured_per_topic)
        .map(|(m, s)| m * s)
        .sum();

    let connections = p
        .publishers
        .unwrap_or_else(|| publisher::auto_connections(p.rate as f64, topics.len()))
        .clamp(1, topics.len());
    let before = sampling.take(subscribed)?;
    let t0 = Instant::now() + PUBLISH_LEAD;
    let pub_progress = Arc::new(PublishProgress::default());
    let handle = publisher::start(
        Schedule {
            endpoint: publish_ep.clone(),
            topics: Arc::new(topics.clone()),
            rate: p.rate as f64,
            messages: p.messages,
            payload: p.payload,
            connections,
            clock: setup.clock,
            t0,
        },
        pub_progress.clone(),
    )?;
    let dprog = progress(
        conn.quiet,
        &format!("{scenario} {}: deliveries", server.name),
        expected_max,
    );
    let mut meter = RateMeter::new();
    // Publishing: show the deliveries until the publisher is done.
    while !handle.is_finished() {
        std::thread::sleep(POLL);
        let t = clients.control.totals();
        dprog.update(t.delivered, meter.rate(t.delivered), t.errors);
        sampling.maybe(t.open)?;
        if clients.any_finished() {
            let _ = clients.stop(topics.len());
            bail!("a client thread ended early");
        }
    }
    let pub_res = handle
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
    let expected: u64 = pub_res
        .acked_per_topic
        .iter()
        .zip(&measured_per_topic)
        .map(|(a, s)| a * s)
        .sum();
    // Draining: at most --drain for what is still on its way.
    let drain_deadline = Instant::now() + p.drain;
    let mut all_in_at = None;
    loop {
        let t = clients.control.totals();
        dprog.update(t.delivered, meter.rate(t.delivered), t.errors);
        sampling.maybe(t.open)?;
        if t.delivered >= expected {
            all_in_at = Some(Instant::now());
            break;
        }
        if Instant::now() >= drain_deadline || clients.any_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    dprog.finish();
    let end = Instant::now();
    let after_sample = sampling.take(clients.control.totals().open)?;
    let res = clients.stop(topics.len())?;

    report.duration_s = started.elapsed().as_secs_f64();
    report.connections_target = n;
    report.connections_established = subscribed;
    fill_common(&mut report, server, &setup, &res);
    fill_memory(&mut report, &sampling, pre, plateau);
    report.set_sequences(&res.seq, expected);
    let mut all = Latency::new();
    for (i, l) in res.delivery.iter().enumerate() {
        all.merge(l);
        if let Some(s) = l.summary() {
            report
                .latency_us
                .delivery_by_transport
                .insert(TRANSPORTS[i], s);
        }
    }
    report.latency_us.delivery = all.summary();
    let window = all_in_at.unwrap_or(end).saturating_duration_since(t0);
    report.deliveries_per_sec = crate::measure::rate(res.seq.delivered, window);
    report.deliveries_over_time = res.timeline.points();
    if !server.pids.is_empty() {
        let after = sampling.samples[after_sample];
        report.set_target_cpu(&sampling.samples[before], &after, res.seq.delivered);
    }
    for (kind, n) in &pub_res.errors {
        report.add_error(kind, *n);
    }

    let prm = &mut report.parameters;
    let mut put = |k: &str, v: serde_json::Value| {
        prm.insert(k.to_string(), v);
    };
    put("rate", p.rate.into());
    put("messages", p.messages.into());
    put("payload_bytes", p.payload.into());
    put("publish_connections", connections.into());
    put("published_acked", pub_res.acked.into());
    put("published_failed", pub_res.failed.into());
    put("subscribers_measured", measured.into());
    put("drain_s", p.drain.as_secs_f64().into());
    put("delivery_window_s", window.as_secs_f64().into());
    put("deliveries_unmeasured", res.unmeasured.into());
    put("deliveries_without_body", res.unparsed.into());
    put("server_resets", res.resets.into());
    put("gaps", res.seq.gaps.into());
    put(
        "publish_lag_us",
        serde_json::to_value(pub_res.lag.summary())?,
    );
    put(
        "publish_ack_us",
        serde_json::to_value(pub_res.ack.summary())?,
    );
    if slow_fraction > 0.0 {
        put("slow_fraction", slow_fraction.into());
        put("slow_clients_paused", res.paused.into());
        if sampling.user_source() != UserSource::None {
            let peak = sampling.samples[before..]
                .iter()
                .map(|s| s.user_anon_bytes)
                .max()
                .unwrap_or(0);
            put(
                "user_anon_growth_during_publish_bytes",
                (peak as f64 - sampling.samples[before].user_anon_bytes as f64).into(),
            );
        }
    }
    if ramped.timed_out {
        report.notes.push(format!(
            "the subscribe ramp stopped after {:.0} s with {subscribed} of {n} subscribed",
            ramped.elapsed.as_secs_f64()
        ));
    }
    if all_in_at.is_none() {
        report.notes.push(format!(
            "the drain ended after {:.1} s with deliveries still missing",
            p.drain.as_secs_f64()
        ));
    }
    if let Some(note) = sampling.note() {
        report.notes.push(note.to_string());
    }
    let ok = subscribed == n
        && expected > 0
        && report.lost == 0
        && report.duplicates == 0
        && pub_res.failed == 0;
    Ok((report, ok))
}
