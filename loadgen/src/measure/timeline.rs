//! Counts per second of run time (deliveries over time).

use serde::{Deserialize, Serialize};

/// The longest run a [`Timeline`] keeps per-second counts for: 7 days. Later counts go to
/// `beyond` (kept, not dropped silently).
pub const TIMELINE_MAX_SECONDS: u64 = 7 * 24 * 3600;

/// One point of a per-second series: `count` events during second `second` of the run
/// (second 0 is `[0 s, 1 s)` after the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCount {
    pub second: u64,
    pub count: u64,
}

/// Events per second since the start of the run. One per thread (an add and, at most once
/// a second, a push), merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    counts: Vec<u64>,
    beyond: u64,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Adds `n` events in second `second` of the run.
    #[inline]
    pub fn add(&mut self, second: u64, n: u64) {
        if second >= TIMELINE_MAX_SECONDS {
            self.beyond += n;
            return;
        }
        let i = second as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
    }

    /// Adds `n` events at `elapsed_ms` milliseconds into the run.
    #[inline]
    pub fn add_at_ms(&mut self, elapsed_ms: u64, n: u64) {
        self.add(elapsed_ms / 1000, n);
    }

    pub fn merge(&mut self, other: &Timeline) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.beyond += other.beyond;
    }

    /// Every event counted (including `beyond`).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.beyond
    }

    /// Events past [`TIMELINE_MAX_SECONDS`].
    pub fn beyond(&self) -> u64 {
        self.beyond
    }

    /// One point per second from 0 to the last second with a count (zeros included, so a
    /// stall shows as a dip, not as a missing point).
    pub fn points(&self) -> Vec<SecondCount> {
        self.counts
            .iter()
            .enumerate()
            .map(|(s, &count)| SecondCount {
                second: s as u64,
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merge_points() {
        let mut a = Timeline::new();
        a.add(0, 5);
        a.add_at_ms(2_500, 3);
        let mut b = Timeline::new();
        b.add(3, 1);
        b.add(0, 1);
        b.add(TIMELINE_MAX_SECONDS, 9);
        a.merge(&b);
        let p: Vec<(u64, u64)> = a.points().iter().map(|p| (p.second, p.count)).collect();
        assert_eq!(p, vec![(0, 6), (1, 0), (2, 3), (3, 1)]);
        assert_eq!(a.beyond(), 9);
        assert_eq!(a.total(), 19);
    }
}
