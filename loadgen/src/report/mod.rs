//! The report of a run: the [`Report`] struct (serialised as the JSON documented in
//! `loadgen/SCHEMA.md` and `loadgen/report.schema.json`), the host description, SVG
//! plots, the end-of-run summary table and the live progress line.

mod host;
mod progress;
mod summary;
mod svg;

pub use host::{Host, HostLimits, Limit, Target, TargetProcess, host_info, target_info};
pub use progress::Progress;
pub use summary::print_summary;
pub use svg::write_svgs;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli_values::Transport;
use crate::measure::{
    MemSample, Percentiles, SecondCount, SeqCounts, UserSource, clock_ticks_per_sec,
    cpu_us_between, per_connection_detail,
};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run measured. Built by the scenario code: [`Report::new`] fills the
/// identity (command line, host, start time), the scenario fills the rest, then
/// [`write_json`], [`write_svgs`] and [`print_summary`] present it. Field meanings, units
/// and methods: `loadgen/SCHEMA.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// `hold`, `fanout`, `churn`, `slow`, `floor`, ...
    pub scenario: String,
    /// `ws`, `sse`, `poll`, `mix` (several transports: see `mix`) or `none` (no transport,
    /// e.g. the bare-socket floor).
    pub transport: String,
    /// Transports and their relative weights (one entry for a single transport).
    pub mix: Vec<MixEntry>,
    /// The exact command line: argv shell-quoted and joined with spaces.
    pub command_line: String,
    pub argv: Vec<String>,
    pub host: Host,
    pub target: Target,
    /// Set when the target is not Switchboard (Nchan, a Node `ws` server, ...).
    pub peer: Option<Peer>,
    /// RFC 3339, UTC, millisecond precision.
    pub started_at: String,
    /// Wall-clock length of the run, seconds.
    pub duration_s: f64,
    /// Scenario parameters worth reading without parsing the command line (rate,
    /// message size, topics, ...): an open map.
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub connections_target: u64,
    pub connections_established: u64,
    /// Failures by kind (`connect_refused`, `handshake_status_503`, `reset`, ...): an open map.
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Latencies,
    pub deliveries_per_sec: Option<f64>,
    pub delivered: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub memory: Memory,
    pub target_cpu_us_per_delivery: Option<f64>,
    pub target_cpu: Option<TargetCpu>,
    pub deliveries_over_time: Vec<SecondCount>,
    pub notes: Vec<String>,
}

/// One transport of the mix and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixEntry {
    pub transport: Transport,
    pub weight: u32,
}

/// The peer under test when it is not Switchboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// A name for tables and plots (`nchan`, `node-ws`).
    pub name: String,
    /// URL templates loadgen connects to, per transport (`ws://127.0.0.1:9000/sub/{topic}`).
    pub url_templates: BTreeMap<Transport, String>,
    /// How messages are published to it (a URL template or a description).
    pub publish: Option<String>,
}

/// Latency distributions, microseconds. `null` when not measured in this scenario.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Latencies {
    /// From submitting the TCP connect to the end of the transport handshake (WS: the
    /// `101`; SSE: the `200` head; long-poll: the TCP connect, as its response waits for a
    /// message).
    pub connect: Option<Percentiles>,
    /// From the end of the handshake to the first message received.
    pub first_message: Option<Percentiles>,
    /// From a message's *scheduled* publish time to its receipt by a subscriber (no
    /// coordinated omission), all transports.
    pub delivery: Option<Percentiles>,
    /// `delivery` split by transport.
    pub delivery_by_transport: BTreeMap<Transport, Percentiles>,
}

/// The target's CPU over the delivery phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetCpu {
    /// `utime + stime` ticks of the target pids between the two samples.
    pub ticks: u64,
    pub ticks_per_sec: u64,
    /// `ticks / ticks_per_sec`.
    pub seconds: f64,
    /// Wall-clock time between the two samples, seconds.
    pub wall_s: f64,
    /// Messages delivered in that interval (the divisor of `target_cpu_us_per_delivery`).
    pub deliveries: u64,
}

/// Memory per connection, user space and kernel, with the floor beside it. See SCHEMA.md
/// ("Memory") for the method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Where the user figures come from: `smaps_rollup`, `status` or `none` (no target pid).
    pub user_source: UserSource,
    /// The sample taken before the ramp (the baseline).
    pub pre_ramp: Option<MemSample>,
    /// The sample taken at the plateau.
    pub plateau: Option<MemSample>,
    /// `plateau.connections - pre_ramp.connections`: the divisor of the figures below.
    pub connections_measured: u64,
    /// Δ anonymous resident memory of the target / connection, bytes.
    pub user_bytes_per_conn: Option<f64>,
    /// Δ resident memory (anonymous + file + shmem) of the target / connection, bytes.
    pub user_rss_bytes_per_conn: Option<f64>,
    /// Δ `Slab` / connection, bytes, host-wide (both ends of a loopback connection).
    pub kernel_bytes_per_conn: Option<f64>,
    /// Δ `SUnreclaim` / connection, bytes (part of `kernel_bytes_per_conn`).
    pub kernel_sunreclaim_bytes_per_conn: Option<f64>,
    /// Δ sockstat TCP `mem` pages × page size / connection, bytes (TCP buffer memory,
    /// overlapping `Slab` for skb heads).
    pub tcp_mem_bytes_per_conn: Option<f64>,
    /// Δ sockstat TCP `inuse` / connection (2 for loopback pairs).
    pub tcp_sockets_per_conn: Option<f64>,
    /// The same kernel figure for bare idle socket pairs: what no server goes below.
    pub floor_kernel_bytes_per_conn: Option<f64>,
    /// The user-space figure of the floor measurement (0 when its sockets are held by no
    /// sampled process).
    pub floor_user_bytes_per_conn: Option<f64>,
    /// `kernel_bytes_per_conn / floor_kernel_bytes_per_conn`.
    pub kernel_to_floor: Option<f64>,
    pub floor: Option<FloorMeasurement>,
    /// Every sample of the run, in order: before the ramp, along it, at the plateau.
    pub samples: Vec<MemSample>,
}

/// The floor's two samples (bare idle socket pairs, opened between them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorMeasurement {
    /// What was opened, e.g. `idle loopback TCP pairs`.
    pub method: String,
    pub connections: u64,
    pub before: MemSample,
    pub after: MemSample,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            user_source: UserSource::None,
            pre_ramp: None,
            plateau: None,
            connections_measured: 0,
            user_bytes_per_conn: None,
            user_rss_bytes_per_conn: None,
            kernel_bytes_per_conn: None,
            kernel_sunreclaim_bytes_per_conn: None,
            tcp_mem_bytes_per_conn: None,
            tcp_sockets_per_conn: None,
            floor_kernel_bytes_per_conn: None,
            floor_user_bytes_per_conn: None,
            kernel_to_floor: None,
            floor: None,
            samples: Vec::new(),
        }
    }
}

impl Memory {
    /// The per-connection figures from `samples[plateau] - samples[pre_ramp]`, divided by
    /// the connections established in between. Indices out of range, or no growth in
    /// connections, leave the figures `None`. User figures are `None` when `user_source`
    /// is `None` (no target pid).
    pub fn from_samples(
        samples: Vec<MemSample>,
        pre_ramp: usize,
        plateau: usize,
        user_source: UserSource,
    ) -> Memory {
        let mut m = Memory {
            user_source,
            pre_ramp: samples.get(pre_ramp).copied(),
            plateau: samples.get(plateau).copied(),
            ..Memory::default()
        };
        m.samples = samples;
        if let (Some(a), Some(b)) = (m.pre_ramp, m.plateau) {
            m.connections_measured = b.connections.saturating_sub(a.connections);
            if let Some(d) = per_connection_detail(&a, &b) {
                if user_source != UserSource::None {
                    m.user_bytes_per_conn = Some(d.user_anon);
                    m.user_rss_bytes_per_conn = Some(d.user_rss);
                }
                m.kernel_bytes_per_conn = Some(d.kernel_slab);
                m.kernel_sunreclaim_bytes_per_conn = Some(d.kernel_sunreclaim);
                m.tcp_mem_bytes_per_conn = Some(d.tcp_mem);
                m.tcp_sockets_per_conn = Some(d.tcp_sockets);
            }
        }
        m.update_ratio();
        m
    }

    /// Records the floor: `connections` bare idle socket pairs opened between `before` and
    /// `after` (samples of a sampler whose user figures count only when `user_measured`).
    pub fn set_floor(
        &mut self,
        method: &str,
        before: MemSample,
        after: MemSample,
        user_measured: bool,
    ) {
        let d = per_connection_detail(&before, &after);
        self.floor_kernel_bytes_per_conn = d.map(|d| d.kernel_slab);
        self.floor_user_bytes_per_conn = if user_measured {
            d.map(|d| d.user_anon)
        } else {
            d.map(|_| 0.0)
        };
        self.floor = Some(FloorMeasurement {
            method: method.to_string(),
            connections: after.connections.saturating_sub(before.connections),
            before,
            after,
        });
        self.update_ratio();
    }

    fn update_ratio(&mut self) {
        self.kernel_to_floor = match (self.kernel_bytes_per_conn, self.floor_kernel_bytes_per_conn)
        {
            (Some(k), Some(f)) if f > 0.0 => Some(k / f),
            _ => None,
        };
    }
}

impl Report {
    /// A report with its identity filled: scenario, transports, the exact command line,
    /// the host (read now) and the start time (now). Everything measured starts empty.
    pub fn new(
        scenario: &str,
        mix: &[(Transport, u32)],
        argv: impl IntoIterator<Item = impl Into<String>>,
    ) -> Report {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        let transport = match mix {
            [] => "none".to_string(),
            [(t, _)] => t.as_str().to_string(),
            _ => "mix".to_string(),
        };
        Report {
            schema_version: SCHEMA_VERSION,
            scenario: scenario.to_string(),
            transport,
            mix: mix
                .iter()
                .map(|&(transport, weight)| MixEntry { transport, weight })
                .collect(),
            command_line: shell_join(&argv),
            argv,
            host: host_info(),
            target: Target::default(),
            peer: None,
            started_at: rfc3339_utc(SystemTime::now()),
            duration_s: 0.0,
            parameters: BTreeMap::new(),
            connections_target: 0,
            connections_established: 0,
            errors: BTreeMap::new(),
            latency_us: Latencies::default(),
            deliveries_per_sec: None,
            delivered: 0,
            expected: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            memory: Memory::default(),
            target_cpu_us_per_delivery: None,
            target_cpu: None,
            deliveries_over_time: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds `n` errors of `kind`.
    pub fn add_error(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.errors.entry(kind.to_string()).or_insert(0) += n;
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Fills `delivered`, `duplicates`, `reordered`, `expected` and `lost` (computed as
    /// `expected - (delivered - duplicates)`: see `measure::SeqCounts::lost`).
    pub fn set_sequences(&mut self, counts: &SeqCounts, expected: u64) {
        self.delivered = counts.delivered;
        self.duplicates = counts.duplicates;
        self.reordered = counts.reordered;
        self.expected = expected;
        self.lost = counts.lost(expected);
    }

    /// Fills `target_cpu` and `target_cpu_us_per_delivery` from two samples taken around
    /// the delivery phase, during which `deliveries` messages were delivered.
    pub fn set_target_cpu(&mut self, before: &MemSample, after: &MemSample, deliveries: u64) {
        let Some(us) = cpu_us_between(before, after) else {
            return;
        };
        let hz = clock_ticks_per_sec();
        self.target_cpu = Some(TargetCpu {
            ticks: after.target_cpu_ticks - before.target_cpu_ticks,
            ticks_per_sec: hz,
            seconds: us / 1e6,
            wall_s: after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0,
            deliveries,
        });
        self.target_cpu_us_per_delivery = (deliveries > 0).then(|| us / deliveries as f64);
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Report always serialises")
    }
}

/// Writes the report as pretty-printed JSON (plus a final newline) to `path`.
pub fn write_json(report: &Report, path: &Path) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let f = File::create(path).map_err(ctx)?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, report).map_err(|e| ctx(io::Error::other(e)))?;
    w.write_all(b"\n").map_err(ctx)?;
    w.flush().map_err(ctx)
}

/// argv as one shell-safe line: each argument left bare when it holds only safe
/// characters, else single-quoted (`'` written as `'\''`).
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// This process's argv, non-UTF-8 bytes replaced (what `Report::new` wants).
pub fn current_argv() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// `2026-11-21T12:34:56.789Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quoting() {
        let argv: Vec<String> = [
            "loadgen",
            "hold",
            "--url",
            "ws://127.0.0.1:8080/ws?topic=room.{i}&x=1",
            "--name",
            "it's",
            "",
            "--n=200k",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shell_join(&argv),
            r"loadgen hold --url 'ws://127.0.0.1:8080/ws?topic=room.{i}&x=1' --name 'it'\''s' '' --n=200k"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_264_496);
        assert_eq!(rfc3339_utc(t), "2026-11-21T12:34:56.000Z");
    }

    fn s(conns: u64, anon: u64, slab: u64) -> MemSample {
        MemSample {
            connections: conns,
            user_anon_bytes: anon,
            user_rss_bytes: anon * 2,
            kernel_slab_bytes: slab,
            kernel_sunreclaim_bytes: slab / 4,
            sockstat_tcp_inuse: 2 * conns,
            ..MemSample::default()
        }
    }

    #[test]
    fn memory_figures() {
        let samples = vec![
            s(0, 1_000, 10_000),
            s(50, 30_000, 500_000),
            s(100, 51_000, 1_010_000),
        ];
        let mut m = Memory::from_samples(samples, 0, 2, UserSource::Status);
        assert_eq!(m.connections_measured, 100);
        assert_eq!(m.user_bytes_per_conn, Some(500.0));
        assert_eq!(m.user_rss_bytes_per_conn, Some(1_000.0));
        assert_eq!(m.kernel_bytes_per_conn, Some(10_000.0));
        assert_eq!(m.kernel_sunreclaim_bytes_per_conn, Some(2_500.0));
        assert_eq!(m.tcp_sockets_per_conn, Some(2.0));
        assert_eq!(m.kernel_to_floor, None);
        m.set_floor(
            "idle loopback TCP pairs",
            s(0, 0, 0),
            s(1_000, 0, 8_000_000),
            false,
        );
        assert_eq!(m.floor_kernel_bytes_per_conn, Some(8_000.0));
        assert_eq!(m.floor_user_bytes_per_conn, Some(0.0));
        assert_eq!(m.kernel_to_floor, Some(1.25));

        // No target: no user figure; bad indices or no growth: no figures at all.
        let m = Memory::from_samples(vec![s(0, 0, 0), s(10, 0, 100)], 0, 1, UserSource::None);
        assert_eq!(
            (m.user_bytes_per_conn, m.kernel_bytes_per_conn),
            (None, Some(10.0))
        );
        let m = Memory::from_samples(vec![s(0, 0, 0)], 0, 5, UserSource::Status);
        assert_eq!((m.plateau, m.kernel_bytes_per_conn), (None, None));
        let m = Memory::from_samples(vec![s(10, 0, 0), s(10, 5, 5)], 0, 1, UserSource::Status);
        assert_eq!((m.connections_measured, m.user_bytes_per_conn), (0, None));
    }

    #[test]
    fn sequences_and_cpu() {
        let mut r = Report::new("fanout", &[(Transport::Ws, 1)], ["loadgen", "fanout"]);
        assert_eq!(r.transport, "ws");
        let c = SeqCounts {
            delivered: 1_002,
            duplicates: 2,
            reordered: 1,
            gaps: 6,
        };
        r.set_sequences(&c, 1_005);
        assert_eq!((r.delivered, r.expected, r.lost), (1_002, 1_005, 5));
        let a = MemSample {
            at_ms: 1_000,
            target_cpu_ticks: 10,
            ..MemSample::default()
        };
        let b = MemSample {
            at_ms: 11_000,
            target_cpu_ticks: 80,
            ..MemSample::default()
        };
        r.set_target_cpu(&a, &b, 100_000);
        let cpu = r.target_cpu.unwrap();
        assert_eq!((cpu.ticks, cpu.wall_s), (70, 10.0));
        let want = 70.0 * 1e6 / clock_ticks_per_sec() as f64 / 100_000.0;
        assert_eq!(r.target_cpu_us_per_delivery, Some(want));
        r.set_target_cpu(&a, &b, 0);
        assert_eq!(r.target_cpu_us_per_delivery, None);

        r.add_error("reset", 2);
        r.add_error("reset", 1);
        r.add_error("eof", 0);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors_total(), 3);

        let r = Report::new(
            "hold",
            &[(Transport::Ws, 7), (Transport::Sse, 3)],
            Vec::<String>::new(),
        );
        assert_eq!(r.transport, "mix");
        assert_eq!(Report::new("floor", &[], ["x"]).transport, "none");
    }
}
