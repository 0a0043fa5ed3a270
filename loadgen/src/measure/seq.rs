//! Per-subscription sequence bookkeeping: loss, duplicates and reordering from the
//! per-topic `seq` of every envelope (PROTOCOL.md: the first message of a topic has seq 1,
//! each next one seq + 1, and every subscriber receives them in order).
//!
//! # State and outcomes
//!
//! A subscription keeps one `u64`, `last`: the highest `seq` it has received, `0` before
//! the first message. (A subscriber that joins a topic that already has messages starts
//! with `last = first_expected_seq - 1`.) [`observe_seq`] classifies each arriving `seq`:
//!
//! | arriving `seq`      | outcome            | `last` becomes |
//! | ------------------- | ------------------ | -------------- |
//! | `last + 1`          | `InOrder`          | `seq`          |
//! | `> last + 1`        | `Gap(seq - last - 1)`: that many are missing *for now* | `seq` |
//! | `== last`           | `Duplicate`        | unchanged      |
//! | `< last`            | `Reordered`: it arrived after a higher seq (a late arrival that fills part of an earlier gap) | unchanged |
//!
//! Every outcome is a delivered message (`SeqCounts::delivered` counts them all).
//!
//! With one integer of state an *old* duplicate (`seq < last` received a second time) cannot
//! be told from a late arrival: it is counted `Reordered`. Switchboard delivers in order on
//! one TCP stream, so any `Duplicate` or `Reordered` is a bug worth reporting; the report
//! shows both counters beside `lost` so the reader knows when `lost` is exact
//! (`reordered == 0`).
//!
//! # The final lost count
//!
//! ```text
//! lost = expected - (delivered - duplicates)        (saturating at 0)
//! ```
//!
//! `expected` is what the subscriptions should have received in total (for fan-out:
//! published messages × subscribers of their topic). `delivered - duplicates` is the number
//! of distinct messages received, *including* late arrivals: a reordered message therefore
//! counts as received and never as lost, even though it was first counted in a `Gap`. Equivalently,
//! per subscription, `lost = gaps - reordered + (last_published - last)`: the missing ones
//! announced by gaps, less those that arrived late, plus the tail that never came (which no
//! later seq revealed as a gap). [`SeqCounts::lost`] computes the first form,
//! [`SeqCounts::lost_from_tail`] the second; they agree (tested).

use serde::{Deserialize, Serialize};

/// What one arriving `seq` means for its subscription (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// `seq == last + 1`.
    InOrder,
    /// `seq == last`: the same message again. (`seq` 0, which is not a valid sequence
    /// number, also lands here while nothing has been received.)
    Duplicate,
    /// `seq < last`: arrived after a higher seq.
    Reordered,
    /// `seq > last + 1`: this message is delivered, and this many before it are missing
    /// so far.
    Gap(u64),
}

/// Classifies `seq` and advances `last` (the subscription's highest seq so far; 0 before
/// the first message). O(1), no allocation.
#[inline]
pub fn observe_seq(last: &mut u64, seq: u64) -> SeqOutcome {
    let l = *last;
    if seq > l {
        *last = seq;
        let missing = seq - l - 1;
        if missing == 0 {
            SeqOutcome::InOrder
        } else {
            SeqOutcome::Gap(missing)
        }
    } else if seq == l {
        SeqOutcome::Duplicate
    } else {
        SeqOutcome::Reordered
    }
}

/// Counters over many subscriptions (one per thread, merged at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeqCounts {
    /// Every message received, whatever its outcome (duplicates included).
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Sum of the `Gap(n)` sizes: messages found missing when a higher seq arrived
    /// (some may have arrived later: see `reordered`).
    pub gaps: u64,
}

impl SeqCounts {
    /// Counts one outcome of [`observe_seq`].
    #[inline]
    pub fn record(&mut self, outcome: SeqOutcome) {
        self.delivered += 1;
        match outcome {
            SeqOutcome::InOrder => {}
            SeqOutcome::Duplicate => self.duplicates += 1,
            SeqOutcome::Reordered => self.reordered += 1,
            SeqOutcome::Gap(n) => self.gaps = self.gaps.saturating_add(n),
        }
    }

    /// `observe_seq` and `record` in one call; returns the outcome.
    #[inline]
    pub fn observe(&mut self, last: &mut u64, seq: u64) -> SeqOutcome {
        let o = observe_seq(last, seq);
        self.record(o);
        o
    }

    pub fn merge(&mut self, other: &SeqCounts) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.gaps = self.gaps.saturating_add(other.gaps);
    }

    /// Distinct messages received: `delivered - duplicates`.
    pub fn distinct(&self) -> u64 {
        self.delivered.saturating_sub(self.duplicates)
    }

    /// The final lost count: `expected - (delivered - duplicates)`, at least 0.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.distinct())
    }

    /// The same figure from the gap side: `gaps - reordered + tail`, where `tail` is the
    /// sum over subscriptions of `last_published_seq - last` (messages after the last one
    /// received). At least 0.
    pub fn lost_from_tail(&self, tail: u64) -> u64 {
        self.gaps
            .saturating_add(tail)
            .saturating_sub(self.reordered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SeqOutcome::*;

    fn run(seqs: &[u64]) -> (Vec<SeqOutcome>, u64, SeqCounts) {
        let mut last = 0;
        let mut c = SeqCounts::default();
        let outs = seqs.iter().map(|&s| c.observe(&mut last, s)).collect();
        (outs, last, c)
    }

    #[test]
    fn in_order() {
        let (o, last, c) = run(&[1, 2, 3, 4]);
        assert_eq!(o, vec![InOrder; 4]);
        assert_eq!(last, 4);
        assert_eq!(
            c,
            SeqCounts {
                delivered: 4,
                ..SeqCounts::default()
            }
        );
        assert_eq!(c.lost(4), 0);
    }

    #[test]
    fn duplicate() {
        let (o, last, c) = run(&[1, 2, 2, 3]);
        assert_eq!(o, vec![InOrder, InOrder, Duplicate, InOrder]);
        assert_eq!(last, 3);
        assert_eq!((c.delivered, c.duplicates, c.distinct()), (4, 1, 3));
        assert_eq!(c.lost(3), 0);
    }

    #[test]
    fn gap_then_late_arrival_is_reordered_not_lost() {
        // 3 and 4 missing when 5 arrives; 4 arrives later; 3 never does.
        let (o, last, c) = run(&[1, 2, 5, 4, 6]);
        assert_eq!(o, vec![InOrder, InOrder, Gap(2), Reordered, InOrder]);
        assert_eq!(last, 6);
        assert_eq!((c.gaps, c.reordered, c.delivered), (2, 1, 5));
        assert_eq!(c.lost(6), 1, "only 3 is lost");
        assert_eq!(c.lost_from_tail(0), 1);
    }

    #[test]
    fn whole_gap_filled_late() {
        let (o, _, c) = run(&[3, 1, 2, 4]);
        assert_eq!(o, vec![Gap(2), Reordered, Reordered, InOrder]);
        assert_eq!(c.lost(4), 0);
        assert_eq!(c.lost_from_tail(0), 0);
    }

    #[test]
    fn tail_loss_is_not_a_gap() {
        // 1..=10 published; 8, 9, 10 never arrive: no higher seq reveals them.
        let (_, last, c) = run(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.gaps, 0);
        assert_eq!(c.lost(10), 3);
        assert_eq!(c.lost_from_tail(10 - last), 3);
    }

    #[test]
    fn old_duplicate_counts_as_reordered() {
        // 2 arrives twice, the second time after 3: indistinguishable from a late arrival.
        let (o, _, c) = run(&[1, 2, 3, 2]);
        assert_eq!(o, vec![InOrder, InOrder, InOrder, Reordered]);
        assert_eq!((c.duplicates, c.reordered), (0, 1));
    }

    #[test]
    fn large_jumps() {
        let mut last = 0;
        assert_eq!(observe_seq(&mut last, 1_000_000), Gap(999_999));
        assert_eq!(observe_seq(&mut last, u64::MAX), Gap(u64::MAX - 1_000_001));
        assert_eq!(last, u64::MAX);
        assert_eq!(observe_seq(&mut last, u64::MAX), Duplicate);
        assert_eq!(observe_seq(&mut last, 5), Reordered);

        let mut c = SeqCounts::default();
        let mut l1 = 0;
        let mut l2 = 0;
        c.observe(&mut l1, u64::MAX);
        c.observe(&mut l2, u64::MAX);
        assert_eq!(c.gaps, u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn seq_zero() {
        let mut last = 0;
        assert_eq!(observe_seq(&mut last, 0), Duplicate);
        assert_eq!(last, 0);
        let mut last = 4;
        assert_eq!(observe_seq(&mut last, 0), Reordered);
    }

    #[test]
    fn late_joiner_starts_from_first_expected() {
        let mut last = 41; // first expected seq is 42
        assert_eq!(observe_seq(&mut last, 42), InOrder);
    }

    #[test]
    fn lost_forms_agree_on_random_streams() {
        // A tiny deterministic generator: drop, duplicate and swap neighbours.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 100
        };
        let mut total = SeqCounts::default();
        let mut tail_sum = 0;
        let mut expected = 0;
        for _sub in 0..200 {
            let published = 1 + rnd() * 3;
            let mut stream: Vec<u64> = Vec::new();
            for s in 1..=published {
                match rnd() {
                    0..=4 => {}                     // lost
                    5..=7 => stream.extend([s, s]), // duplicated at once
                    _ => stream.push(s),
                }
            }
            for i in 1..stream.len() {
                if rnd() < 5 && stream[i - 1] != stream[i] {
                    stream.swap(i - 1, i); // reordered
                }
            }
            let mut last = 0;
            let mut c = SeqCounts::default();
            let mut seen = std::collections::HashSet::new();
            let mut truly_dup = 0;
            for &s in &stream {
                if !seen.insert(s) {
                    truly_dup += 1;
                }
                c.observe(&mut last, s);
            }
            let truly_lost = published - seen.len() as u64;
            // Exact whenever no old duplicate was mistaken for a late arrival.
            if c.duplicates == truly_dup {
                assert_eq!(c.lost(published), truly_lost, "{stream:?}");
            }
            assert_eq!(c.lost(published), c.lost_from_tail(published - last));
            expected += published;
            tail_sum += published - last;
            total.merge(&c);
        }
        assert_eq!(total.lost(expected), total.lost_from_tail(tail_sum));
    }
}
