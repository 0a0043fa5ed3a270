//! The scenarios (`hold`, `fanout`, `slow`, `churn`, `floor`) and what they share: the
//! servers under test (Switchboard behind `--target`, a peer behind URL templates), the
//! client [`Setup`] built from the flags, the ramp with memory sampling along it, the
//! floor beside the figures, and writing the reports.

pub mod churn;
pub mod fanout;
pub mod floor;
pub mod hold;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::ConnArgs;
use crate::cli_values::Transport;
use crate::measure::{MemSample, TargetSampler, UserSource};
use crate::net::addr::{self, Endpoint, Use};
use crate::net::client::sse_request;
use crate::net::conn::CONN_BYTES;
use crate::net::retry::{Backoff, Rng};
use crate::net::{Clients, Clock, Setup, ThreadResult, Totals, transport_index};
use crate::report::{self, Limit, Memory, MixEntry, Peer, Progress, Report};

/// What a run produced: one report per server measured, and whether every one met the
/// scenario's goal (exit status 0, else 3).
#[derive(Debug)]
pub struct Outcome {
    pub reports: Vec<Report>,
    pub met_goal: bool,
}

/// How often the progress display and the stop conditions are looked at.
pub const POLL: Duration = Duration::from_millis(100);

/// A server under test.
#[derive(Debug, Clone)]
pub struct Server {
    /// `switchboard` or the peer's name.
    pub name: String,
    pub peer: Option<Peer>,
    pub url: String,
    /// Subscribe endpoints by transport (`net::TRANSPORTS` order).
    pub subscribe: [Option<Endpoint>; 3],
    pub publish: Option<Endpoint>,
    pub pids: Vec<u32>,
}

/// The servers the flags name: Switchboard (`--target`), then the peer (URL templates).
pub fn servers(conn: &ConnArgs) -> Result<Vec<Server>> {
    let mut out = Vec::new();
    if let Some(target) = &conn.target {
        let t = addr::switchboard_templates(target).map_err(anyhow::Error::msg)?;
        let mut poll = addr::parse_url(&t.poll, Use::Subscribe).map_err(anyhow::Error::msg)?;
        poll.transport = Transport::Poll;
        out.push(Server {
            name: "switchboard".into(),
            peer: None,
            url: target.clone(),
            subscribe: [
                Some(addr::parse_url(&t.ws, Use::Subscribe).map_err(anyhow::Error::msg)?),
                Some(addr::parse_url(&t.sse, Use::Subscribe).map_err(anyhow::Error::msg)?),
                Some(poll),
            ],
            publish: Some(addr::parse_url(&t.publish, Use::Publish).map_err(anyhow::Error::msg)?),
            pids: conn.target_pid.clone(),
        });
    }
    if !conn.subscribe_url.is_empty() || conn.publish_url.is_some() {
        let mut subscribe: [Option<Endpoint>; 3] = [None, None, None];
        let mut templates = BTreeMap::new();
        for url in &conn.subscribe_url {
            let ep = addr::parse_url(url, Use::Subscribe).map_err(anyhow::Error::msg)?;
            let i = transport_index(ep.transport).expect("ws or sse");
            if subscribe[i].is_some() {
                bail!("--subscribe-url: two templates for {}", ep.transport);
            }
            templates.insert(ep.transport, url.clone());
            subscribe[i] = Some(ep);
        }
        if subscribe.iter().all(Option::is_none) {
            bail!("--publish-url needs --subscribe-url (the peer's subscribe template)");
        }
        let publish = match &conn.publish_url {
            Some(u) => Some(addr::parse_url(u, Use::Publish).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let name = conn.peer_name.clone();
        if name.is_empty() || name.contains(['/', '\0']) || name == "switchboard" {
            bail!("--peer-name {name:?}: give a short name without '/' (not \"switchboard\")");
        }
        out.push(Server {
            peer: Some(Peer {
                name: name.clone(),
                url_templates: templates,
                publish: conn.publish_url.clone(),
            }),
            url: conn.subscribe_url.join(" "),
            name,
            subscribe,
            publish,
            pids: conn.peer_pid.clone(),
        });
    }
    if out.is_empty() {
        bail!(
            "nothing to test: give --target http://HOST:PORT (Switchboard) or --subscribe-url TEMPLATE (a peer)"
        );
    }
    Ok(out)
}

/// Refuses a mix a server cannot serve: a transport a peer has no template for (peers
/// are measured over WebSocket and SSE; long-poll speaks Switchboard's `/poll` protocol).
pub fn check_mix(mix: &[(Transport, u32)], server: &Server) -> Result<()> {
    for &(t, w) in mix {
        if w == 0 {
            continue;
        }
        match transport_index(t) {
            None => unreachable!("every transport has an index"),
            Some(i) if server.subscribe[i].is_none() && t == Transport::Poll => bail!(
                "{}: long-poll is measured against Switchboard only (its GET /poll protocol); \
                 use --transport ws or sse for a peer",
                server.name
            ),
            Some(i) if server.subscribe[i].is_none() => bail!(
                "{}: no subscribe template for {t} (give --subscribe-url {}://...)",
                server.name,
                if t == Transport::Ws { "ws" } else { "http" }
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// `RLIMIT_NOFILE` (soft) of this process: the size bound of one fixed-file table.
pub fn nofile_limit() -> u64 {
    match report::host_info().limits.nofile_soft {
        Some(Limit::Value(n)) => n,
        Some(Limit::Unlimited) => 1 << 20,
        None => 1024,
    }
}

/// Client threads for `connections`: `--threads`, checked, or as few rings as the
/// fixed-file limit allows.
pub fn threads_for(connections: u64, threads: Option<u32>) -> Result<u32> {
    let per_ring = nofile_limit().saturating_sub(16).max(1);
    match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(t) => {
            let share = connections.div_ceil(u64::from(t));
            if share > per_ring {
                bail!(
                    "--threads {t}: {share} connections per ring, but a ring's fixed-file table \
                     holds at most {per_ring} (RLIMIT_NOFILE - 16): give --threads {} or more",
                    connections.div_ceil(per_ring)
                );
            }
            Ok(t)
        }
        None => Ok(connections.div_ceil(per_ring).max(1) as u32),
    }
}

/// A fresh topic prefix (`loadgen.<6 hex>`), so that topics start at sequence 1.
pub fn topic_names(conn: &ConnArgs, k: u64) -> Result<Vec<String>> {
    if k == 0 || k > 1_000_000 {
        bail!("--topics {k}: give 1 to 1,000,000");
    }
    let prefix = match &conn.topic_prefix {
        Some(p) => p.clone(),
        None => format!(
            "loadgen.{:06x}",
            Rng::from_entropy(7).next_u64() & 0xff_ffff
        ),
    };
    let names: Vec<String> = (0..k).map(|i| format!("{prefix}.{i}")).collect();
    for n in names.iter().take(1) {
        switchboard_proto::topic::validate_topic(n).map_err(|e| {
            anyhow::anyhow!("--topic-prefix {prefix:?}: {n:?} is no valid topic: {e}")
        })?;
    }
    Ok(names)
}

/// Extra behaviour of a scenario's clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra {
    pub slow_per_mille: u32,
    pub churn_rate: f64,
}

/// The client setup for `server`.
pub fn build_setup(
    conn: &ConnArgs,
    server: &Server,
    connections: u64,
    topics: &[String],
    extra: Extra,
) -> Result<Setup> {
    let mix = conn.mix();
    check_mix(&mix, server)?;
    if connections == 0 || connections > u64::from(u32::MAX / 2) {
        bail!("--connections {connections}: give 1 to {}", u32::MAX / 2);
    }
    let threads = threads_for(connections, conn.threads)?;
    if conn.connect_rate == 0 {
        bail!("--connect-rate must be at least 1");
    }
    if !conn.recv_buffers.is_power_of_two() || conn.recv_buffers > 32768 {
        bail!(
            "--recv-buffers {}: a power of two up to 32768",
            conn.recv_buffers
        );
    }
    if !(256..=1 << 20).contains(&conn.recv_buffer_size) {
        bail!(
            "--recv-buffer-size {}: 256 B to 1 MiB",
            conn.recv_buffer_size
        );
    }
    let dst = server
        .subscribe
        .iter()
        .flatten()
        .next()
        .map(|e| e.addr)
        .context("no subscribe endpoint")?;
    // Churn opens a new client per churned one: leave room for the TIME_WAITs it causes.
    let churned = (extra.churn_rate * 120.0) as u64;
    let sources = match &conn.source_ips {
        Some(s) => s.0.clone(),
        None => addr::default_sources(connections + churned, dst),
    };
    addr::check_sources(connections + churned, &sources).map_err(anyhow::Error::msg)?;
    let ws_targets = topics
        .iter()
        .map(|t| {
            server.subscribe[0]
                .as_ref()
                .map(|e| e.target(t))
                .unwrap_or_default()
        })
        .collect();
    let sse_requests = topics
        .iter()
        .map(|t| {
            server.subscribe[1]
                .as_ref()
                .map(|e| sse_request(&e.host, &e.target(t)))
                .unwrap_or_default()
        })
        .collect();
    let poll_targets = topics
        .iter()
        .map(|t| {
            server.subscribe[2]
                .as_ref()
                .map(|e| e.target(t))
                .unwrap_or_default()
        })
        .collect();
    Ok(Setup {
        endpoints: server.subscribe.clone(),
        mix,
        topics: topics.to_vec(),
        ws_targets,
        sse_requests,
        poll_targets,
        sources,
        connect_timeout: conn.connect_timeout,
        handshake_timeout: conn.handshake_timeout,
        backoff: Backoff {
            base: conn.backoff,
            max: conn.backoff_max,
            retries: conn.retries,
        },
        connections: connections as u32,
        threads,
        connect_rate: conn.connect_rate as f64,
        max_in_progress: conn.max_in_progress.max(1),
        slow_per_mille: extra.slow_per_mille,
        churn_rate: extra.churn_rate,
        recv_buffers: conn.recv_buffers,
        recv_buffer_size: conn.recv_buffer_size as u32,
        clock: Clock::new(),
        ws_secret: Rng::from_entropy(99).next_u64(),
        max_message_bytes: 64 << 20,
    })
}

/// The ramp's time bound: `--ramp-timeout`, or twice what the rate needs plus 30 s.
pub fn ramp_timeout(conn: &ConnArgs, connections: u64) -> Duration {
    conn.ramp_timeout.unwrap_or_else(|| {
        Duration::from_secs_f64(2.0 * connections as f64 / conn.connect_rate as f64 + 30.0)
    })
}

/// Memory samples along a run: one before the ramp, one per interval, and those taken
/// on demand.
pub struct Sampling {
    sampler: TargetSampler,
    pub samples: Vec<MemSample>,
    interval: Duration,
    last: Option<Instant>,
    clock: Clock,
}

impl Sampling {
    pub fn new(pids: &[u32], interval: Duration, clock: Clock) -> Result<Sampling> {
        let sampler = TargetSampler::new(pids).context("cannot sample the target's memory")?;
        Ok(Sampling {
            sampler,
            samples: Vec::new(),
            interval,
            last: None,
            clock,
        })
    }

    pub fn user_source(&self) -> UserSource {
        self.sampler.user_source()
    }

    pub fn note(&self) -> Option<&str> {
        self.sampler.user_source_note()
    }

    /// Takes a sample now; returns its index.
    pub fn take(&mut self, connections: u64) -> Result<usize> {
        let s = self
            .sampler
            .sample(connections, self.clock.ms())
            .context("sampling /proc")?;
        self.samples.push(s);
        self.last = Some(Instant::now());
        Ok(self.samples.len() - 1)
    }

    /// Takes a sample if the interval has passed.
    pub fn maybe(&mut self, connections: u64) -> Result<()> {
        if self.last.is_none_or(|t| t.elapsed() >= self.interval) {
            self.take(connections)?;
        }
        Ok(())
    }
}

/// The progress display (`--quiet`: none).
pub fn progress(quiet: bool, what: &str, target: u64) -> Progress {
    if quiet {
        Progress::hidden()
    } else {
        Progress::new(what, target)
    }
}

/// Connections per second over the last interval, for the progress line.
pub struct RateMeter {
    last: (Instant, u64),
}

impl RateMeter {
    pub fn new() -> RateMeter {
        RateMeter {
            last: (Instant::now(), 0),
        }
    }

    pub fn rate(&mut self, count: u64) -> f64 {
        let now = Instant::now();
        let dt = (now - self.last.0).as_secs_f64();
        let r = if dt > 0.0 {
            count.saturating_sub(self.last.1) as f64 / dt
        } else {
            0.0
        };
        self.last = (now, count);
        r
    }
}

impl Default for RateMeter {
    fn default() -> RateMeter {
        RateMeter::new()
    }
}

/// How a ramp ended.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub totals: Totals,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Waits until every connection is open or given up (or the timeout), updating the
/// progress display and sampling memory on the way.
pub fn ramp(
    clients: &Clients,
    target: u64,
    timeout: Duration,
    sampling: &mut Sampling,
    progress: &Progress,
) -> Result<Ramp> {
    let start = Instant::now();
    let mut meter = RateMeter::new();
    loop {
        std::thread::sleep(POLL);
        let t = clients.control.totals();
        progress.update(t.open, meter.rate(t.open), t.errors);
        sampling.maybe(t.open)?;
        if clients.any_finished() {
            bail!("a client thread ended early (see its error below)");
        }
        let settled = t.launched_all && t.in_progress == 0 && t.open + t.failed >= target;
        if settled || start.elapsed() >= timeout {
            return Ok(Ramp {
                totals: t,
                elapsed: start.elapsed(),
                timed_out: !settled,
            });
        }
    }
}

/// Waits `d` while updating the display and sampling memory.
pub fn hold_for(
    clients: &Clients,
    d: Duration,
    sampling: &mut Sampling,
    progress: &Progress,
) -> Result<Totals> {
    let end = Instant::now() + d;
    let mut meter = RateMeter::new();
    loop {
        let t = clients.control.totals();
        progress.update(t.open, meter.rate(t.open), t.errors);
        sampling.maybe(t.open)?;
        if clients.any_finished() {
            bail!("a client thread ended early");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(t);
        }
        std::thread::sleep(POLL.min(end - now));
    }
}

/// Runs `one` against every server the flags name, Switchboard first: the floor is taken
/// once before the first, and before each later one the kernel is given time to release
/// the previous server's sockets (see [`settle`]).
pub fn each_server(
    conn: &ConnArgs,
    connections: u64,
    mut one: impl FnMut(&Server, Option<&FloorRef>) -> Result<(Report, bool)>,
) -> Result<Outcome> {
    let servers = servers(conn)?;
    let baseline = (tcp_in_use(), time_wait_sockets());
    let floor = floor_for(conn, connections)?;
    let mut reports = Vec::new();
    let mut met_goal = true;
    for (i, server) in servers.iter().enumerate() {
        let waited = if i > 0 { Some(settle(baseline)) } else { None };
        let (mut r, ok) = one(server, floor.as_ref())?;
        if let Some(note) = waited {
            r.notes.push(note);
        }
        reports.push(r);
        met_goal &= ok;
    }
    Ok(Outcome { reports, met_goal })
}

/// The longest wait in [`settle`].
const SETTLE_MAX: Duration = Duration::from_secs(90);

/// Waits until the previous server's sockets are gone from the kernel's books, so that
/// they do not read as a negative cost of the next one (kernel figures are host-wide
/// `Slab` deltas): TCP sockets in use and in `TIME_WAIT` (which lasts 60 s) back to
/// within a few of `baseline` (taken before the first server), then `Slab` steady (within
/// 0.5% over a second). At most [`SETTLE_MAX`]. Returns a note saying how long it took.
pub fn settle(baseline: (Option<u64>, Option<u64>)) -> String {
    let start = Instant::now();
    let slab = || {
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("Slab:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
    };
    let mut last_slab = slab();
    while start.elapsed() < SETTLE_MAX {
        std::thread::sleep(Duration::from_secs(1));
        let back = |now: Option<u64>, base: Option<u64>, slack: u64| match (now, base) {
            (Some(now), Some(base)) => now <= base + slack,
            _ => true,
        };
        let sockets_gone = back(tcp_in_use(), baseline.0, 16);
        let tw_gone = back(time_wait_sockets(), baseline.1, 1000);
        let now_slab = slab();
        let steady = match (last_slab, now_slab) {
            (Some(a), Some(b)) => a.abs_diff(b) * 200 <= a.max(1),
            _ => true,
        };
        last_slab = now_slab;
        if sockets_gone && tw_gone && steady {
            return format!(
                "measured after waiting {:.0} s for the previous server's sockets to leave the kernel",
                start.elapsed().as_secs_f64()
            );
        }
    }
    format!(
        "the previous server's sockets had not all left the kernel after {} s (kernel figures may read low)",
        SETTLE_MAX.as_secs()
    )
}

/// `key` of the `TCP:` line of /proc/net/sockstat (`inuse`, `tw`, ...).
fn sockstat_tcp(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next()?.parse().ok();
        }
    }
    None
}

fn tcp_in_use() -> Option<u64> {
    sockstat_tcp("inuse")
}

fn time_wait_sockets() -> Option<u64> {
    sockstat_tcp("tw")
}

/// The floor beside a run's figures. Taken once per invocation, before the first server
/// is measured: taken again between servers, it would read the previous server's sockets
/// being torn down.
#[derive(Debug, Clone)]
pub struct FloorRef {
    method: String,
    before: MemSample,
    after: MemSample,
    note: String,
}

impl FloorRef {
    /// Puts the floor beside `report`'s figures, with a note saying where it came from.
    pub fn apply(&self, report: &mut Report) {
        report
            .memory
            .set_floor(&self.method, self.before, self.after, false);
        report.notes.push(self.note.clone());
    }
}

/// The floor: from `--floor-json`, or measured now with `--floor-pairs` bare pairs
/// (default min(connections, 10000)), or none.
pub fn floor_for(conn: &ConnArgs, connections: u64) -> Result<Option<FloorRef>> {
    if let Some(path) = &conn.floor_json {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--floor-json {}", path.display()))?;
        let floor: Report = serde_json::from_str(&text)
            .with_context(|| format!("--floor-json {}: not a loadgen report", path.display()))?;
        let Some(f) = floor.memory.floor else {
            bail!(
                "--floor-json {}: the report holds no floor measurement",
                path.display()
            );
        };
        return Ok(Some(FloorRef {
            method: f.method,
            before: f.before,
            after: f.after,
            note: format!("floor taken from {} ({})", path.display(), floor.started_at),
        }));
    }
    let pairs = conn.floor_pairs.unwrap_or(connections.min(10_000));
    if pairs == 0 {
        return Ok(None);
    }
    let f = floor::measure_pairs(
        pairs,
        conn.source_ips.as_ref().map(|s| s.0.clone()),
        conn.quiet,
    )?;
    Ok(Some(FloorRef {
        method: f.method,
        before: f.before,
        after: f.armed,
        note: format!(
            "floor measured before the run: {pairs} idle loopback pairs, a receive armed on both ends ({:.0} B/pair kernel; {:.0} B/pair with no receive armed)",
            f.armed_per_pair, f.idle_per_pair
        ),
    }))
}

/// The memory figures from the samples along the run (plateau − pre-ramp), keeping the
/// floor already beside them.
pub fn fill_memory(report: &mut Report, sampling: &Sampling, pre: usize, plateau: usize) {
    let floor = report.memory.floor.clone();
    report.memory = Memory::from_samples(
        sampling.samples.clone(),
        pre,
        plateau,
        sampling.user_source(),
    );
    if let Some(f) = floor {
        report.memory.set_floor(&f.method, f.before, f.after, false);
    }
}

/// Fills what every client scenario reports the same way.
pub fn fill_common(report: &mut Report, server: &Server, setup: &Setup, res: &ThreadResult) {
    report.target = report::target_info(Some(&server.url), &server.pids);
    report.peer = server.peer.clone();
    report.mix = setup
        .mix
        .iter()
        .map(|&(transport, weight)| MixEntry { transport, weight })
        .collect();
    for (name, n) in res.errors.by_name() {
        report.add_error(&name, n);
    }
    report.latency_us.connect = res.connect.summary();
    report.latency_us.first_message = res.first_message.summary();
    let p = &mut report.parameters;
    let mut put = |k: &str, v: serde_json::Value| {
        p.insert(k.to_string(), v);
    };
    put("threads", setup.threads.into());
    put("connect_rate", setup.connect_rate.into());
    put("source_addresses", setup.sources.len().into());
    put("topics", setup.topics.len().into());
    put(
        "topic_first",
        setup.topics.first().cloned().unwrap_or_default().into(),
    );
    put("connect_attempts", res.attempts.into());
    put("connections_given_up", res.failed.into());
    put("connections_dropped_after_open", res.dropped.into());
    put("recv_buffer_starved", res.recv_starved.into());
    put("loadgen_conn_state_bytes", CONN_BYTES.into());
    put(
        "handshake_timeout_s",
        setup.handshake_timeout.as_secs_f64().into(),
    );
    put(
        "connect_timeout_s",
        setup.connect_timeout.as_secs_f64().into(),
    );
}

/// A note when many sockets sit in TIME_WAIT: as they expire during a run, the kernel's
/// slab shrinks and the kernel figure reads low.
pub fn time_wait_note(report: &mut Report) {
    let tw = time_wait_sockets();
    if let Some(tw) = tw
        && tw > 1000
    {
        report.notes.push(format!(
            "{tw} TCP sockets were in TIME_WAIT at the start (an earlier run?): as they expire \
             the kernel figure reads lower; wait 60 s between runs for exact kernel figures"
        ));
    }
}

/// Writes each report: JSON, SVGs, and the summary on stdout. With several servers,
/// the first gets the given names and the others `<stem>.<name>.json` / `<dir>/<name>`.
pub fn emit(reports: &[Report], json: Option<&Path>, svg: Option<&Path>) -> Result<()> {
    let several = reports.len() > 1;
    for (i, r) in reports.iter().enumerate() {
        let name = r.peer.as_ref().map_or("switchboard", |p| p.name.as_str());
        if let Some(path) = json {
            let path = if i == 0 {
                path.to_path_buf()
            } else {
                with_suffix(path, name)
            };
            report::write_json(r, &path).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(dir) = svg {
            let dir = if several {
                dir.join(name)
            } else {
                dir.to_path_buf()
            };
            report::write_svgs(r, &dir)
                .with_context(|| format!("writing plots into {}", dir.display()))?;
        }
        let mut out = std::io::stdout().lock();
        if i > 0 {
            writeln!(out)?;
        }
        report::print_summary(r, &mut out)?;
        out.flush()?;
    }
    Ok(())
}

/// `f.json` + `nchan` -> `f.nchan.json`.
pub fn with_suffix(path: &Path, name: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let file = match ext {
        Some(e) => format!("{stem}.{name}.{e}"),
        None => format!("{stem}.{name}"),
    };
    path.with_file_name(file)
}

/// Starts the client threads for `setup` (shared with the caller).
pub fn start_clients(setup: &Arc<Setup>) -> Result<Clients> {
    Clients::start(setup.clone()).context("starting the client threads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_file_names() {
        assert_eq!(
            with_suffix(Path::new("/x/f.json"), "nchan"),
            PathBuf::from("/x/f.nchan.json")
        );
        assert_eq!(
            with_suffix(Path::new("out"), "nchan"),
            PathBuf::from("out.nchan")
        );
    }

    #[test]
    fn threads_cover_the_fixed_file_limit() {
        let per_ring = nofile_limit() - 16;
        assert_eq!(threads_for(1, None).unwrap(), 1);
        assert_eq!(threads_for(per_ring, None).unwrap(), 1);
        assert_eq!(threads_for(per_ring + 1, None).unwrap(), 2);
        assert!(threads_for(per_ring * 2 + 1, Some(2)).is_err());
        assert!(threads_for(10, Some(0)).is_err());
        assert_eq!(threads_for(10, Some(4)).unwrap(), 4);
    }
}
