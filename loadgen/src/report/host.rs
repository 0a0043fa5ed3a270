//! The machine a run happened on, and the target processes: what a reader needs to
//! reproduce or discount a figure. Read from `/proc` and `/sys`; a value that cannot be
//! read is `null` in the report, never a guess.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::measure::{clock_ticks_per_sec, page_size};

/// The host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// `/proc/sys/kernel/hostname`.
    pub hostname: Option<String>,
    /// Kernel release (`uname -r`): `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: Option<String>,
    /// CPU architecture loadgen was built for (`x86_64`, `aarch64`).
    pub arch: String,
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Online CPUs (`/sys/devices/system/cpu/online`).
    pub cores: u64,
    /// CPUs loadgen may run on (its affinity mask).
    pub cores_available: u64,
    /// `MemTotal` of `/proc/meminfo`, bytes.
    pub memory_total_bytes: Option<u64>,
    pub page_size: u64,
    /// `USER_HZ`, the unit of `/proc/PID/stat` CPU times.
    pub clock_ticks_per_sec: u64,
    pub limits: HostLimits,
    /// loadgen's version (Cargo package version).
    pub loadgen_version: String,
}

/// Limits that cap how many connections a run can hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostLimits {
    /// loadgen's own `RLIMIT_NOFILE` (soft), from `/proc/self/limits`.
    pub nofile_soft: Option<Limit>,
    /// loadgen's own `RLIMIT_NOFILE` (hard).
    pub nofile_hard: Option<Limit>,
    /// `fs.nr_open`: the most any process may raise `RLIMIT_NOFILE` to.
    pub nr_open: Option<u64>,
    /// `fs.file-max`: open files host-wide.
    pub file_max: Option<u64>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: [first, last] ephemeral port.
    pub ip_local_port_range: Option<[u32; 2]>,
    /// `net.ipv4.tcp_mem`: [min, pressure, max] in pages.
    pub tcp_mem_pages: Option<[u64; 3]>,
}

/// A resource limit: a number, or the string `"unlimited"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Unlimited,
}

impl Limit {
    fn parse(s: &str) -> Option<Limit> {
        if s == "unlimited" {
            Some(Limit::Unlimited)
        } else {
            s.parse().ok().map(Limit::Value)
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Value(v) => s.serialize_u64(*v),
            Limit::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Limit, E> {
                if v == "unlimited" {
                    Ok(Limit::Unlimited)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The processes under test.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Target {
    /// The base URL loadgen connected to.
    pub url: Option<String>,
    /// One entry per `--target-pid`.
    pub processes: Vec<TargetProcess>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetProcess {
    pub pid: u32,
    /// `Name` of `/proc/PID/status` (the command, at most 15 bytes).
    pub name: Option<String>,
    /// `Threads` of `/proc/PID/status` when the report was built.
    pub threads: Option<u64>,
    /// The target's `RLIMIT_NOFILE` (its capacity when sockets are process fds).
    pub nofile_soft: Option<Limit>,
    pub nofile_hard: Option<Limit>,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u64(path: &str) -> Option<u64> {
    read_trim(path)?.parse().ok()
}

fn read_numbers<const N: usize, T: std::str::FromStr + Copy + Default>(
    path: &str,
) -> Option<[T; N]> {
    let s = read_trim(path)?;
    let mut out = [T::default(); N];
    let mut it = s.split_whitespace();
    for o in &mut out {
        *o = it.next()?.parse().ok()?;
    }
    it.next().is_none().then_some(out)
}

/// `Max open files  soft  hard  files` of a `/proc/PID/limits` text.
fn nofile(limits: &str) -> (Option<Limit>, Option<Limit>) {
    for line in limits.lines() {
        if let Some(rest) = line.strip_prefix("Max open files") {
            let mut w = rest.split_whitespace();
            return (
                w.next().and_then(Limit::parse),
                w.next().and_then(Limit::parse),
            );
        }
    }
    (None, None)
}

/// `0-3,8-11` -> 8.
fn count_cpu_list(s: &str) -> Option<u64> {
    let mut n = 0;
    for part in s.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<u64>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

fn os_pretty_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(v.trim_matches('"').to_string())
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The host, read now. Never fails: what cannot be read is `None`.
pub fn host_info() -> Host {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let (nofile_soft, nofile_hard) = std::fs::read_to_string("/proc/self/limits")
        .map(|s| nofile(&s))
        .unwrap_or((None, None));
    let memory_total_bytes = std::fs::read("/proc/meminfo")
        .ok()
        .and_then(|t| crate::measure::procfs_field(&t, b"MemTotal:"))
        .map(|kib| kib * 1024);
    Host {
        hostname: read_trim("/proc/sys/kernel/hostname"),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        os: os_pretty_name(),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model: cpu_model(),
        cores: read_trim("/sys/devices/system/cpu/online")
            .and_then(|s| count_cpu_list(&s))
            .unwrap_or(available),
        cores_available: available,
        memory_total_bytes,
        page_size: page_size(),
        clock_ticks_per_sec: clock_ticks_per_sec(),
        limits: HostLimits {
            nofile_soft,
            nofile_hard,
            nr_open: read_u64("/proc/sys/fs/nr_open"),
            file_max: read_u64("/proc/sys/fs/file-max"),
            somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            ip_local_port_range: read_numbers("/proc/sys/net/ipv4/ip_local_port_range"),
            tcp_mem_pages: read_numbers("/proc/sys/net/ipv4/tcp_mem"),
        },
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The target: its URL and, per pid, name, threads and `RLIMIT_NOFILE` (best effort: a
/// pid that is gone gets `null`s).
pub fn target_info(url: Option<&str>, pids: &[u32]) -> Target {
    let processes = pids
        .iter()
        .map(|&pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let line = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let (nofile_soft, nofile_hard) = std::fs::read_to_string(format!("/proc/{pid}/limits"))
                .map(|s| nofile(&s))
                .unwrap_or((None, None));
            TargetProcess {
                pid,
                name: line("Name:"),
                threads: line("Threads:").and_then(|v| v.parse().ok()),
                nofile_soft,
                nofile_hard,
            }
        })
        .collect();
    Target {
        url: url.map(str::to_string),
        processes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                unlimited            files\n";
        assert_eq!(
            nofile(limits),
            (Some(Limit::Value(20000)), Some(Limit::Unlimited))
        );
        assert_eq!(count_cpu_list("0-3,8-11\n"), Some(8));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(
            serde_json::to_string(&[Limit::Value(5), Limit::Unlimited]).unwrap(),
            r#"[5,"unlimited"]"#
        );
        let back: Vec<Limit> = serde_json::from_str(r#"[5,"unlimited"]"#).unwrap();
        assert_eq!(back, vec![Limit::Value(5), Limit::Unlimited]);
        assert!(serde_json::from_str::<Limit>(r#""lots""#).is_err());
    }

    #[test]
    fn this_host() {
        let h = host_info();
        assert!(h.kernel.is_some());
        assert!(h.cores >= 1 && h.cores_available >= 1);
        assert!(h.memory_total_bytes.unwrap() > 0);
        assert!(h.limits.nofile_soft.is_some());
        let [lo, hi] = h.limits.ip_local_port_range.unwrap();
        assert!(lo <= hi);

        let t = target_info(Some("http://127.0.0.1:8080"), &[std::process::id()]);
        let p = &t.processes[0];
        assert!(p.name.is_some() && p.threads.unwrap() >= 1 && p.nofile_soft.is_some());
    }
}
