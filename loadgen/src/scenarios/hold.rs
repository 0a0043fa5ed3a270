//! `hold`: open N connections, subscribe, hold them idle for `--duration`; the target's
//! memory is sampled before the ramp, along it and at the end of the plateau, and
//! reported per connection (plateau − pre-ramp, over the connections open at the
//! plateau), with the floor beside it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::{
    Extra, FloorRef, Outcome, Sampling, Server, build_setup, each_server, fill_common, fill_memory,
    hold_for, progress, ramp, ramp_timeout, start_clients, time_wait_note, topic_names,
};
use crate::cli::HoldArgs;
use crate::measure::MemSample;
use crate::report::{self, Report};

pub fn run(args: &HoldArgs) -> Result<Outcome> {
    each_server(&args.conn, args.connections, |server, floor| {
        run_one(args, server, floor)
    })
}

fn run_one(args: &HoldArgs, server: &Server, floor: Option<&FloorRef>) -> Result<(Report, bool)> {
    let conn = &args.conn;
    let n = args.connections;
    let topics = topic_names(conn, conn.topics)?;
    let setup = Arc::new(build_setup(conn, server, n, &topics, Extra::default())?);
    let mut report = Report::new("hold", &setup.mix, report::current_argv());
    time_wait_note(&mut report);
    if let Some(f) = floor {
        f.apply(&mut report);
    }

    let mut sampling = Sampling::new(&server.pids, conn.sample_interval, setup.clock)?;
    let pre = sampling.take(0)?;
    let started = Instant::now();
    let clients = start_clients(&setup)?;
    let progress = progress(conn.quiet, &format!("hold {}", server.name), n);
    let ramped = ramp(&clients, n, ramp_timeout(conn, n), &mut sampling, &progress).and_then(|r| {
        let at_plateau = hold_for(&clients, args.duration, &mut sampling, &progress)?;
        Ok((r, at_plateau))
    });
    let (ramped, totals) = match ramped {
        Ok(x) => x,
        Err(e) => {
            progress.finish();
            let _ = clients.stop(topics.len());
            return Err(e);
        }
    };
    let plateau = sampling.take(totals.open)?;
    progress.finish();
    let res = clients.stop(topics.len())?;

    report.duration_s = started.elapsed().as_secs_f64();
    report.connections_target = n;
    report.connections_established = totals.open;
    fill_common(&mut report, server, &setup, &res);
    fill_memory(&mut report, &sampling, pre, plateau);
    let p = &mut report.parameters;
    p.insert("duration_s".into(), args.duration.as_secs_f64().into());
    p.insert("ramp_s".into(), ramped.elapsed.as_secs_f64().into());
    if let Some((user, kernel)) = slopes(&sampling.samples[pre..=plateau]) {
        // The least-squares slope over the ramp's samples: fixed costs (buffer rings
        // touched once, allocator arenas) do not count in it.
        if sampling.user_source() != crate::measure::UserSource::None {
            p.insert("user_bytes_per_conn_slope".into(), user.into());
        }
        p.insert("kernel_bytes_per_conn_slope".into(), kernel.into());
    }
    if ramped.timed_out {
        report.notes.push(format!(
            "the ramp stopped after {:.0} s (--ramp-timeout) with {} of {n} open",
            ramped.elapsed.as_secs_f64(),
            ramped.totals.open
        ));
    }
    if totals.open < ramped.totals.open {
        report.notes.push(format!(
            "{} connections closed during the plateau",
            ramped.totals.open - totals.open
        ));
    }
    if let Some(note) = sampling.note() {
        report.notes.push(note.to_string());
    }
    let ok = totals.open == n;
    Ok((report, ok))
}

/// Least-squares slopes of (user anon, kernel slab) bytes over connections; `None`
/// with fewer than three samples or no spread in connections.
pub fn slopes(samples: &[MemSample]) -> Option<(f64, f64)> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let mean = |f: &dyn Fn(&MemSample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    let mx = mean(&|s| s.connections as f64);
    let mu = mean(&|s| s.user_anon_bytes as f64);
    let mk = mean(&|s| s.kernel_slab_bytes as f64);
    let (mut sxx, mut sxu, mut sxk) = (0.0, 0.0, 0.0);
    for s in samples {
        let dx = s.connections as f64 - mx;
        sxx += dx * dx;
        sxu += dx * (s.user_anon_bytes as f64 - mu);
        sxk += dx * (s.kernel_slab_bytes as f64 - mk);
    }
    (sxx > 0.0).then(|| (sxu / sxx, sxk / sxx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_ignore_fixed_costs() {
        let s = |c: u64, u: u64, k: u64| MemSample {
            connections: c,
            user_anon_bytes: u,
            kernel_slab_bytes: k,
            ..MemSample::default()
        };
        // 1 MB fixed cost at the first connection, then 500 B and 9 KB per connection.
        let samples = [
            s(0, 10_000_000, 1_000_000_000),
            s(1000, 11_500_000, 1_009_000_000),
            s(2000, 12_000_000, 1_018_000_000),
            s(3000, 12_500_000, 1_027_000_000),
        ];
        let (u, k) = slopes(&samples[1..]).unwrap();
        assert!(
            (u - 500.0).abs() < 1e-6 && (k - 9000.0).abs() < 1e-6,
            "{u} {k}"
        );
        assert!(slopes(&samples[..2]).is_none());
        assert!(slopes(&[samples[1], samples[1], samples[1]]).is_none());
    }
}
