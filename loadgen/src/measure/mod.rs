//! What loadgen measures: the target's memory and CPU from `/proc` (`procfs`), latency
//! histograms (`latency`), per-subscription sequence bookkeeping (`seq`) and per-second
//! counts (`timeline`).

mod latency;
mod procfs;
mod seq;
mod timeline;

pub use latency::{LATENCY_MAX_US, LATENCY_SIGFIG, Latency, Percentiles};
pub(crate) use procfs::field as procfs_field;
pub use procfs::{TargetSampler, UserSource, clock_ticks_per_sec, page_size};
pub use seq::{SeqCounts, SeqOutcome, observe_seq};
pub use timeline::{SecondCount, TIMELINE_MAX_SECONDS, Timeline};

use serde::{Deserialize, Serialize};

/// One reading of the target and the kernel. All byte figures are bytes (the `kB` of
/// `/proc` times 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemSample {
    /// Milliseconds since the start of the run (the caller's clock).
    pub at_ms: u64,
    /// Connections established at that moment (the caller's count).
    pub connections: u64,
    /// Resident memory of the target pids, summed: `Rss` of `smaps_rollup` (or `VmRSS` of
    /// `status`, see [`UserSource`]).
    pub user_rss_bytes: u64,
    /// Anonymous resident memory of the target pids, summed: `Anonymous` of
    /// `smaps_rollup` (or `RssAnon` of `status`).
    pub user_anon_bytes: u64,
    /// `Slab` of `/proc/meminfo` (host-wide: reclaimable + unreclaimable).
    pub kernel_slab_bytes: u64,
    /// `SUnreclaim` of `/proc/meminfo` (host-wide).
    pub kernel_sunreclaim_bytes: u64,
    /// `TCP: inuse` of `/proc/net/sockstat` (TCP sockets of this network namespace).
    pub sockstat_tcp_inuse: u64,
    /// `TCP: mem` of `/proc/net/sockstat`: pages charged to TCP buffers, host-wide.
    pub sockstat_tcp_mem_pages: u64,
    /// `utime + stime` of the target pids, summed, in clock ticks
    /// ([`clock_ticks_per_sec`]).
    pub target_cpu_ticks: u64,
}

/// Signed difference `b - a` as f64 (memory can shrink between samples).
#[inline]
fn delta(a: u64, b: u64) -> f64 {
    b as f64 - a as f64
}

/// Bytes per connection between two samples: `(user, kernel)` =
/// `(Δ user_anon_bytes, Δ kernel_slab_bytes) / Δ connections`. `None` when connections did
/// not grow (never a division by zero). May be negative when memory shrank.
pub fn per_connection(before: &MemSample, after: &MemSample) -> Option<(f64, f64)> {
    let n = conn_growth(before, after)?;
    Some((
        delta(before.user_anon_bytes, after.user_anon_bytes) / n,
        delta(before.kernel_slab_bytes, after.kernel_slab_bytes) / n,
    ))
}

/// The other per-connection figures between two samples, same rule as [`per_connection`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerConnDetail {
    /// Δ `user_anon_bytes` / Δ connections.
    pub user_anon: f64,
    /// Δ `user_rss_bytes` / Δ connections.
    pub user_rss: f64,
    /// Δ `kernel_slab_bytes` / Δ connections.
    pub kernel_slab: f64,
    /// Δ `kernel_sunreclaim_bytes` / Δ connections.
    pub kernel_sunreclaim: f64,
    /// Δ `sockstat_tcp_mem_pages` × page size / Δ connections.
    pub tcp_mem: f64,
    /// Δ `sockstat_tcp_inuse` / Δ connections (2.0 for loopback pairs, both ends counted).
    pub tcp_sockets: f64,
}

pub fn per_connection_detail(before: &MemSample, after: &MemSample) -> Option<PerConnDetail> {
    let n = conn_growth(before, after)?;
    let page = page_size() as f64;
    Some(PerConnDetail {
        user_anon: delta(before.user_anon_bytes, after.user_anon_bytes) / n,
        user_rss: delta(before.user_rss_bytes, after.user_rss_bytes) / n,
        kernel_slab: delta(before.kernel_slab_bytes, after.kernel_slab_bytes) / n,
        kernel_sunreclaim: delta(
            before.kernel_sunreclaim_bytes,
            after.kernel_sunreclaim_bytes,
        ) / n,
        tcp_mem: delta(before.sockstat_tcp_mem_pages, after.sockstat_tcp_mem_pages) * page / n,
        tcp_sockets: delta(before.sockstat_tcp_inuse, after.sockstat_tcp_inuse) / n,
    })
}

fn conn_growth(before: &MemSample, after: &MemSample) -> Option<f64> {
    (after.connections > before.connections)
        .then(|| (after.connections - before.connections) as f64)
}

/// Target CPU time between two samples, in microseconds (tick resolution: 10 ms at 100 Hz).
/// `None` if the counter went backwards (samples swapped, or of different targets).
pub fn cpu_us_between(before: &MemSample, after: &MemSample) -> Option<f64> {
    let ticks = after
        .target_cpu_ticks
        .checked_sub(before.target_cpu_ticks)?;
    Some(ticks as f64 * 1e6 / clock_ticks_per_sec() as f64)
}

/// Target CPU microseconds per delivered message between two samples; `None` when nothing
/// was delivered.
pub fn cpu_us_per_delivery(before: &MemSample, after: &MemSample, delivered: u64) -> Option<f64> {
    if delivered == 0 {
        return None;
    }
    Some(cpu_us_between(before, after)? / delivered as f64)
}

/// `count / seconds`, `None` for an empty interval.
pub fn rate(count: u64, elapsed: std::time::Duration) -> Option<f64> {
    let s = elapsed.as_secs_f64();
    (s > 0.0).then(|| count as f64 / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connections: u64, anon: u64, slab: u64) -> MemSample {
        MemSample {
            connections,
            user_anon_bytes: anon,
            user_rss_bytes: anon + 1_000_000,
            kernel_slab_bytes: slab,
            kernel_sunreclaim_bytes: slab / 2,
            ..MemSample::default()
        }
    }

    #[test]
    fn per_connection_arithmetic() {
        let a = sample(1_000, 10_000_000, 500_000_000);
        let b = sample(
            201_000,
            10_000_000 + 200_000 * 517,
            500_000_000 + 200_000 * 9_453,
        );
        assert_eq!(per_connection(&a, &b), Some((517.0, 9_453.0)));
        // Shrinking memory gives a negative figure, not a wrapped one.
        let c = sample(2_000, 9_000_000, 500_000_000);
        let (u, k) = per_connection(&a, &c).unwrap();
        assert_eq!((u, k), (-1_000.0, 0.0));
        let d = per_connection_detail(&a, &b).unwrap();
        assert_eq!(d.user_rss, 517.0);
        assert_eq!(d.kernel_sunreclaim, 9_453.0 / 2.0);
    }

    #[test]
    fn no_growth_no_figure() {
        let a = sample(1_000, 1, 1);
        assert_eq!(per_connection(&a, &a), None);
        assert_eq!(per_connection(&sample(2_000, 1, 1), &a), None);
        assert!(per_connection_detail(&a, &a).is_none());
    }

    #[test]
    fn cpu_per_delivery() {
        let a = MemSample {
            target_cpu_ticks: 100,
            ..MemSample::default()
        };
        let b = MemSample {
            target_cpu_ticks: 170, // 0.7 s at 100 Hz
            ..MemSample::default()
        };
        let hz = clock_ticks_per_sec() as f64;
        assert_eq!(cpu_us_between(&a, &b), Some(70.0 * 1e6 / hz));
        assert_eq!(
            cpu_us_per_delivery(&a, &b, 100_000),
            Some(70.0 * 1e6 / hz / 100_000.0)
        );
        assert_eq!(cpu_us_per_delivery(&a, &b, 0), None);
        assert_eq!(cpu_us_between(&b, &a), None);
        assert_eq!(rate(10, std::time::Duration::ZERO), None);
        assert_eq!(rate(10, std::time::Duration::from_secs(2)), Some(5.0));
    }
}
