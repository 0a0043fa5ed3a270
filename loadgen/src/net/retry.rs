//! Randomness and retry timing: a small seeded generator (WebSocket keys and masks,
//! jitter, churn picks) and exponential backoff with jitter, bounded in attempts.

use std::time::Duration;

/// SplitMix64: tiny, fast, good enough for masks, keys and jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the clock, the process and `salt` (e.g. a thread index).
    pub fn from_entropy(salt: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut r = Rng(t ^ (u64::from(std::process::id()) << 32) ^ salt.rotate_left(17));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// SplitMix64's finaliser: a bijective scramble of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 16-byte nonce of a WebSocket key for (connection id, attempt), derived from a
/// per-run secret: recomputed to check the server's answer instead of being stored per
/// connection.
pub fn ws_nonce(secret: u64, id: u32, attempt: u8) -> [u8; 16] {
    let a = mix(secret ^ (u64::from(id) << 8) ^ u64::from(attempt));
    let b = mix(a ^ 0xA5A5_A5A5_A5A5_A5A5);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// When to try again after a failed attempt: `base * 2^(attempt-1)` capped at `max`, with
/// "equal jitter" (uniform in the upper half), for at most `retries` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub retries: u8,
}

impl Backoff {
    /// The delay before attempt `failed + 1`, after `failed` failed attempts (`failed >=
    /// 1`); `None` once the retries are used up.
    pub fn delay(&self, failed: u8, rng: &mut Rng) -> Option<Duration> {
        if failed == 0 || failed > self.retries {
            return None;
        }
        let exp = u32::from(failed - 1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        Some(half + half.mul_f64(rng.next_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            retries: 5,
        };
        let mut rng = Rng::new(7);
        assert_eq!(b.delay(0, &mut rng), None);
        for _ in 0..200 {
            for (failed, full_ms) in [(1u8, 100u64), (2, 200), (3, 400), (4, 800), (5, 1000)] {
                let d = b.delay(failed, &mut rng).unwrap();
                let full = Duration::from_millis(full_ms);
                assert!(d >= full / 2 && d <= full, "attempt {failed}: {d:?}");
            }
        }
        assert_eq!(b.delay(6, &mut rng), None, "retries used up");
        let none = Backoff { retries: 0, ..b };
        assert_eq!(none.delay(1, &mut rng), None);
        // Huge attempt counts saturate instead of overflowing.
        let big = Backoff { retries: 255, ..b };
        assert!(big.delay(200, &mut rng).unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
            retries: 1,
        };
        let mut rng = Rng::new(1);
        let v: Vec<Duration> = (0..100).map(|_| b.delay(1, &mut rng).unwrap()).collect();
        let lo = v
            .iter()
            .filter(|d| **d < Duration::from_millis(750))
            .count();
        assert!((20..=80).contains(&lo), "{lo} of 100 in the lower quarter");
    }

    #[test]
    fn rng_and_nonces() {
        let mut a = Rng::new(3);
        let mut b = Rng::new(3);
        assert_eq!(a.next_u64(), b.next_u64());
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            let f = a.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(ws_nonce(1, 2, 3), ws_nonce(1, 2, 3));
        assert_ne!(ws_nonce(1, 2, 3), ws_nonce(1, 2, 4));
        assert_ne!(ws_nonce(1, 2, 3), ws_nonce(1, 3, 3));
        assert_ne!(ws_nonce(1, 2, 3), ws_nonce(2, 2, 3));
    }
}
