//! Latency histograms: HdrHistogram in microseconds, 1 µs to 1 h, 3 significant digits.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The largest value a [`Latency`] tells apart: one hour, in microseconds. Larger values
/// are recorded as this value (and so show as `max` = 1 h).
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits kept: any recorded value is reported within 0.1 %.
pub const LATENCY_SIGFIG: u8 = 3;

/// A latency distribution in microseconds. One per thread on the hot path (recording is a
/// few adds, no allocation), merged at the end with [`Latency::merge`].
///
/// Memory: about 190 KiB per histogram (the counts array for 1 µs .. 1 h at 3 digits),
/// allocated once in `new`.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

/// Summary of a distribution, all in microseconds. Quantiles and `max`/`min` are the upper
/// (lower) bound of the histogram bucket holding the value, within 0.1 % of it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of values recorded.
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    pub max: u64,
    /// Arithmetic mean (of the bucket midpoints), µs.
    pub mean: f64,
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            h: Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGFIG)
                .expect("1 µs .. 1 h at 3 digits is a valid histogram"),
        }
    }

    /// Records one value in microseconds; 0 is kept as 0, values above an hour as an hour.
    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.min(LATENCY_MAX_US));
    }

    /// Records one duration (rounded down to whole microseconds).
    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other` (e.g. another thread's histogram) to this one.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so `add` cannot fail on range; it saturates counts.
        self.h
            .add(&other.h)
            .expect("histograms with identical bounds always merge");
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The summary; all zero when nothing was recorded (see [`Latency::summary`]).
    pub fn percentiles(&self) -> Percentiles {
        if self.h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.h.len(),
            min: self.h.min(),
            p50: self.h.value_at_quantile(0.50),
            p90: self.h.value_at_quantile(0.90),
            p99: self.h.value_at_quantile(0.99),
            p999: self.h.value_at_quantile(0.999),
            max: self.h.max(),
            mean: self.h.mean(),
        }
    }

    /// The summary, or `None` when nothing was recorded (what the report stores, so that an
    /// unmeasured latency reads `null`, never a fake 0).
    pub fn summary(&self) -> Option<Percentiles> {
        (!self.h.is_empty()).then(|| self.percentiles())
    }

    /// The value at quantile `q` (0.0 ..= 1.0), µs; 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        self.h.value_at_quantile(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's resolution (0.1 %) plus one unit.
    fn close(got: u64, want: u64) -> bool {
        let tol = want / 1000 + 1;
        got.abs_diff(want) <= tol
    }

    #[test]
    fn empty() {
        let l = Latency::new();
        assert_eq!(l.count(), 0);
        assert_eq!(l.percentiles(), Percentiles::default());
        assert_eq!(l.summary(), None);
    }

    #[test]
    fn uniform_1_to_10000() {
        let mut l = Latency::new();
        for v in 1..=10_000 {
            l.record_us(v);
        }
        let p = l.percentiles();
        assert_eq!(p.count, 10_000);
        assert_eq!(p.min, 1);
        assert!(close(p.p50, 5_000), "{p:?}");
        assert!(close(p.p90, 9_000), "{p:?}");
        assert!(close(p.p99, 9_900), "{p:?}");
        assert!(close(p.p999, 9_990), "{p:?}");
        assert!(close(p.max, 10_000), "{p:?}");
        assert!((p.mean - 5_000.5).abs() < 5.0, "{p:?}");
    }

    #[test]
    fn skewed_tail() {
        // 99 % at 100 µs, 0.9 % at 10 ms, 0.1 % at 1 s.
        let mut l = Latency::new();
        for _ in 0..99_000 {
            l.record_us(100);
        }
        for _ in 0..900 {
            l.record_us(10_000);
        }
        for _ in 0..100 {
            l.record_us(1_000_000);
        }
        let p = l.percentiles();
        assert!(
            close(p.p50, 100) && close(p.p90, 100) && close(p.p99, 100),
            "{p:?}"
        );
        assert!(close(p.p999, 10_000), "{p:?}");
        assert!(close(p.max, 1_000_000), "{p:?}");
    }

    #[test]
    fn extremes_saturate() {
        let mut l = Latency::new();
        l.record_us(0);
        l.record_us(u64::MAX);
        l.record(Duration::from_secs(10 * 3600));
        let p = l.percentiles();
        assert_eq!(p.count, 3);
        assert_eq!(p.min, 0);
        assert!(close(p.max, LATENCY_MAX_US), "{p:?}");
    }

    #[test]
    fn merge_equals_recording_all() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        let mut all = Latency::new();
        for v in 0..5_000u64 {
            let x = (v * 7919) % 20_000 + 1;
            if v % 3 == 0 {
                a.record_us(x);
            } else {
                b.record_us(x);
            }
            all.record_us(x);
        }
        let before_b = b.percentiles();
        a.merge(&b);
        assert_eq!(a.count(), 5_000);
        assert_eq!(a.percentiles(), all.percentiles());
        assert_eq!(b.percentiles(), before_b, "merge leaves the source alone");
        // Merging an empty histogram changes nothing.
        a.merge(&Latency::new());
        assert_eq!(a.percentiles(), all.percentiles());
    }

    #[test]
    fn merge_across_threads() {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut l = Latency::new();
                    for v in 1..=1_000 {
                        l.record_us(v + t * 1_000);
                    }
                    l
                })
            })
            .collect();
        let mut total = Latency::new();
        for h in handles {
            total.merge(&h.join().unwrap());
        }
        let p = total.percentiles();
        assert_eq!(p.count, 4_000);
        assert!(close(p.p50, 2_000), "{p:?}");
        assert!(close(p.max, 4_000), "{p:?}");
    }
}
