//! Per-user rate limits: a token bucket per user (`rate_per_sec` refill, `burst`
//! capacity) in a map of bounded size. A bucket that has refilled is the same as
//! no bucket, so full ones are dropped when room is needed.

use std::collections::HashMap;

use crate::ami::Millis;

/// Most users tracked at once. When the map is full, buckets that have refilled are
/// dropped; if none has, new users are refused until one does.
pub const MAX_BUCKETS: usize = 10_000;
/// Least time between two sweeps of a full map, in milliseconds (a sweep is linear).
const SWEEP_INTERVAL_MS: Millis = 1_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Millis,
}

/// Token buckets by user.
#[derive(Debug)]
pub(super) struct RateLimiter {
    /// Tokens per millisecond.
    per_ms: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
    last_sweep: Option<Millis>,
}

impl RateLimiter {
    /// `rate_per_sec` tokens a second (a negative or non-finite rate is 0), `burst`
    /// at most (0 refuses everything).
    pub fn new(rate_per_sec: f64, burst: u32) -> RateLimiter {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            0.0
        };
        RateLimiter {
            per_ms: rate / 1000.0,
            burst: f64::from(burst),
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Takes one token from `user`'s bucket: false when it is empty (or the map is
    /// full of users who are not idle).
    pub fn allow(&mut self, user: &str, now: Millis) -> bool {
        if let Some(b) = self.buckets.get_mut(user) {
            let tokens = refill(*b, self.per_ms, self.burst, now);
            *b = Bucket {
                tokens: if tokens >= 1.0 { tokens - 1.0 } else { tokens },
                at: now.max(b.at),
            };
            return tokens >= 1.0;
        }
        if self.burst < 1.0 {
            return false;
        }
        if self.buckets.len() >= MAX_BUCKETS && !self.sweep(now) {
            return false;
        }
        self.buckets.insert(
            user.to_owned(),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
        true
    }

    /// Drops every bucket that has refilled; true if that made room. Runs at most
    /// once per [`SWEEP_INTERVAL_MS`].
    fn sweep(&mut self, now: Millis) -> bool {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_sub(t) < SWEEP_INTERVAL_MS)
        {
            return false;
        }
        self.last_sweep = Some(now);
        let (per_ms, burst) = (self.per_ms, self.burst);
        self.buckets
            .retain(|_, b| refill(*b, per_ms, burst, now) < burst);
        self.buckets.len() < MAX_BUCKETS
    }

    /// Users tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The bucket's tokens at `now` (a clock that went back adds nothing).
fn refill(b: Bucket, per_ms: f64, burst: f64, now: Millis) -> f64 {
    let elapsed = now.saturating_sub(b.at) as f64;
    (b.tokens + elapsed * per_ms).min(burst)
}
