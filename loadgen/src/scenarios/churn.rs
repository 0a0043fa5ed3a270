//! `churn`: hold N connections, then for `--duration` close `--rate` of them per second
//! (picked at random among the open ones), each replaced at once by a new client (new
//! source port, new handshake). Reports the connects and their latency, failures by kind,
//! and the target's memory before and after the storm (a leak shows as growth).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::{
    Extra, FloorRef, Outcome, Sampling, Server, build_setup, each_server, fill_common, fill_memory,
    hold_for, progress, ramp, ramp_timeout, start_clients, time_wait_note, topic_names,
};
use crate::cli::ChurnArgs;
use crate::measure::UserSource;
use crate::net::Command;
use crate::report::{self, Report};

pub fn run(args: &ChurnArgs) -> Result<Outcome> {
    each_server(&args.conn, args.connections, |server, floor| {
        run_one(args, server, floor)
    })
}

fn run_one(args: &ChurnArgs, server: &Server, floor: Option<&FloorRef>) -> Result<(Report, bool)> {
    let conn = &args.conn;
    let n = args.connections;
    let topics = topic_names(conn, conn.topics)?;
    let extra = Extra {
        slow_per_mille: 0,
        churn_rate: args.rate as f64,
    };
    let setup = Arc::new(build_setup(conn, server, n, &topics, extra)?);
    let mut report = Report::new("churn", &setup.mix, report::current_argv());
    time_wait_note(&mut report);
    if let Some(f) = floor {
        f.apply(&mut report);
    }

    let mut sampling = Sampling::new(&server.pids, conn.sample_interval, setup.clock)?;
    let pre = sampling.take(0)?;
    let started = Instant::now();
    let clients = start_clients(&setup)?;
    let prog = progress(conn.quiet, &format!("churn {}", server.name), n);
    let phases = ramp(&clients, n, ramp_timeout(conn, n), &mut sampling, &prog).and_then(|r| {
        let plateau = sampling.take(r.totals.open)?;
        clients.control.set(Command::Measure); // the storm begins
        let churn_start = Instant::now();
        let end = hold_for(&clients, args.duration, &mut sampling, &prog)?;
        Ok((r, plateau, churn_start.elapsed(), end))
    });
    let (ramped, plateau, churn_time, at_end) = match phases {
        Ok(x) => x,
        Err(e) => {
            prog.finish();
            let _ = clients.stop(topics.len());
            return Err(e);
        }
    };
    let last = sampling.take(at_end.open)?;
    prog.finish();
    let res = clients.stop(topics.len())?;

    report.duration_s = started.elapsed().as_secs_f64();
    report.connections_target = n;
    report.connections_established = at_end.open;
    fill_common(&mut report, server, &setup, &res);
    fill_memory(&mut report, &sampling, pre, plateau);
    let p = &mut report.parameters;
    p.insert("churn_rate".into(), args.rate.into());
    p.insert("duration_s".into(), args.duration.as_secs_f64().into());
    p.insert("churned".into(), res.churned.into());
    p.insert(
        "churn_rate_achieved".into(),
        (res.churned as f64 / churn_time.as_secs_f64().max(1e-9)).into(),
    );
    p.insert("open_before_churn".into(), ramped.totals.open.into());
    let (a, b) = (sampling.samples[plateau], sampling.samples[last]);
    if sampling.user_source() != UserSource::None {
        p.insert(
            "user_anon_drift_bytes".into(),
            (b.user_anon_bytes as f64 - a.user_anon_bytes as f64).into(),
        );
    }
    p.insert(
        "kernel_slab_drift_bytes".into(),
        (b.kernel_slab_bytes as f64 - a.kernel_slab_bytes as f64).into(),
    );
    if ramped.timed_out {
        report.notes.push(format!(
            "the ramp stopped after {:.0} s with {} of {n} open",
            ramped.elapsed.as_secs_f64(),
            ramped.totals.open
        ));
    }
    report
        .notes
        .push("connect latency covers every connect: the ramp's and the replacements'".to_string());
    let ok = ramped.totals.open == n && res.failed == 0 && res.churned > 0;
    Ok((report, ok))
}
