//! One coarse timer wheel per shard: no kernel timeout per socket. Each connection has a
//! single deadline (its meaning depends on its phase); the wheel holds `(slot,
//! generation)` entries per tick and checks them against the connection when the tick
//! comes, so rescheduling never searches: stale entries are skipped.

/// Ticks the wheel spans; deadlines further out are clamped (see [`Wheel::schedule`]).
pub const WHEEL_TICKS: u32 = 1024;

pub struct Wheel {
    buckets: Vec<Vec<(u32, u32)>>,
    /// The last tick processed.
    now: u32,
}

impl Wheel {
    pub fn new() -> Wheel {
        Wheel {
            buckets: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(),
            now: 1,
        }
    }

    /// Files `(slot, generation)` under the tick `after` ticks from now (at least 1, at
    /// most the wheel's span) and returns that tick, to be stored as the connection's
    /// deadline.
    pub fn schedule(&mut self, slot: u32, generation: u32, after: u32) -> u32 {
        let after = after.clamp(1, WHEEL_TICKS - 1);
        let at = self.now + after;
        self.buckets[(at % WHEEL_TICKS) as usize].push((slot, generation));
        at
    }

    /// Advances to tick `to`, appending each due entry as `(slot, generation, tick)` to
    /// `due`; the caller checks each against its connection (generation and deadline).
    pub fn advance(&mut self, to: u32, due: &mut Vec<(u32, u32, u32)>) {
        while self.now < to {
            self.now += 1;
            let bucket = &mut self.buckets[(self.now % WHEEL_TICKS) as usize];
            due.extend(
                bucket
                    .drain(..)
                    .map(|(slot, generation)| (slot, generation, self.now)),
            );
        }
    }
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_at_their_tick_and_not_before() {
        let mut w = Wheel::new();
        let at3 = w.schedule(7, 1, 3);
        let at1 = w.schedule(8, 1, 1);
        let mut fired = Vec::new();
        w.advance(w.now + 1, &mut fired);
        assert_eq!(fired, vec![(8, 1, at1)]);
        fired.clear();
        w.advance(w.now + 1, &mut fired);
        assert!(fired.is_empty());
        w.advance(w.now + 1, &mut fired);
        assert_eq!(fired, vec![(7, 1, at3)]);
    }

    #[test]
    fn far_deadlines_are_clamped_to_the_span() {
        let mut w = Wheel::new();
        let start = w.now;
        let at = w.schedule(1, 1, 10 * WHEEL_TICKS);
        assert_eq!(at, start + WHEEL_TICKS - 1);
        let mut fired = Vec::new();
        w.advance(at - 1, &mut fired);
        assert!(fired.is_empty());
        w.advance(at, &mut fired);
        assert_eq!(fired, vec![(1, 1, at)]);
    }

    #[test]
    fn advancing_over_many_ticks_fires_everything_due() {
        let mut w = Wheel::new();
        for slot in 0..100 {
            w.schedule(slot, 0, 1 + slot % 50);
        }
        let mut fired = Vec::new();
        w.advance(w.now + 60, &mut fired);
        assert_eq!(fired.len(), 100);
    }
}
