//! The simulator's own random numbers: xoshiro256** seeded through SplitMix64, and the
//! few distributions the call generator needs. Everything here is plain integer and
//! IEEE-754 arithmetic (+ - * / and `sqrt`, which IEEE rounds exactly), never the
//! platform's libm, so one seed gives the same numbers on every machine and with every
//! crate version, for ever. It must never read the clock or the OS entropy pool.

/// SplitMix64: expands a seed into well-mixed words (used for seeding and for hashing
/// ids into noise values).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stateless mix of two words (derives independent streams and noise values).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ b.rotate_left(32) ^ 0x5851_F42D_4C95_7F2D;
    splitmix64(&mut s)
}

/// xoshiro256** (Blackman & Vigna), 2^256 - 1 period.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            *w = splitmix64(&mut sm);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// An independent stream for `(seed, stream)`.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        Rng::new(mix(seed, stream))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift with rejection, unbiased).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform integer in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Exponential with the given mean (inverse transform).
    pub fn exp(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so ln never sees 0.
        -mean * ln(1.0 - self.f64())
    }

    /// Standard normal (Marsaglia's polar method: needs only ln and sqrt).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * ln(s) / s).sqrt();
            }
        }
    }

    /// Log-normal with the given median and shape `sigma` (mean = median * e^(sigma^2/2)).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * exp(sigma * self.normal())
    }

    /// Index drawn with probability proportional to `weights` (all >= 0, sum > 0).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= *w;
        }
        // Rounding left us past the end: the last index with a positive weight.
        weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
    }
}

const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// Natural logarithm for finite x > 0, to ~1e-15 relative, from basic arithmetic only.
pub fn ln(x: f64) -> f64 {
    assert!(x > 0.0 && x.is_finite(), "ln of {x}");
    let mut bits = x.to_bits();
    let mut k: i64 = 0;
    if bits >> 52 == 0 {
        // Subnormal: scale into the normal range first.
        bits = (x * (1u64 << 54) as f64).to_bits();
        k -= 54;
    }
    k += ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa m in [1, 2).
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        k += 1;
    }
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let mut series = 1.0 / 19.0;
    for d in [17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0] {
        series = series * z + 1.0 / d;
    }
    let lnm = 2.0 * s * (series * z + 1.0);
    let kf = k as f64;
    kf * LN2_HI + (lnm + kf * LN2_LO)
}

/// e^x for |x| < 700, to ~1e-15 relative, from basic arithmetic only.
pub fn exp(x: f64) -> f64 {
    assert!(x.is_finite() && x.abs() < 700.0, "exp of {x}");
    // x = k ln2 + r, |r| <= ln2 / 2.
    let k = (x * core::f64::consts::LOG2_E + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let kf = k as f64;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    // Taylor series of e^r, Horner form, to r^16 / 16!.
    let mut p = 1.0;
    for n in (1..=16).rev() {
        p = 1.0 + p * r / n as f64;
    }
    p * f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // State 1,2,3,4 -> first outputs of xoshiro256** (reference C implementation).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(8);
            (0..8).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Rng::derive(7, 1).next_u64(), Rng::derive(7, 2).next_u64());
    }

    #[test]
    fn ln_and_exp_agree_with_known_values() {
        for (x, want) in [
            (1.0, 0.0),
            (2.0, core::f64::consts::LN_2),
            (10.0, core::f64::consts::LN_10),
            (0.5, -core::f64::consts::LN_2),
            (1e-300, -690.775_527_898_213_7),
            (123_456.789, 11.723_646_487_185_881),
        ] {
            assert!(
                (ln(x) - want).abs() <= 1e-13 * want.abs().max(1.0),
                "ln({x}) = {} want {want}",
                ln(x)
            );
        }
        for (x, want) in [
            (0.0, 1.0),
            (1.0, core::f64::consts::E),
            (-1.0, 1.0 / core::f64::consts::E),
            (10.0, 22_026.465_794_806_718),
            (-20.0, 2.061_153_622_438_558e-9),
        ] {
            assert!(
                (exp(x) - want).abs() <= 1e-14 * want,
                "exp({x}) = {} want {want}",
                exp(x)
            );
        }
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let x = r.f64() * 100.0 - 50.0;
            assert!((ln(exp(x)) - x).abs() < 1e-12, "round trip at {x}");
        }
    }

    #[test]
    fn uniform_and_below_are_unbiased_enough() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let mean = (0..n).map(|_| r.f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[r.below(6) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "counts {counts:?}");
        }
        for _ in 0..1000 {
            let v = r.range(3, 5);
            assert!((3..=5).contains(&v));
        }
    }

    #[test]
    fn exponential_mean_within_tolerance() {
        let mut r = Rng::new(3);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exp(30.0)).sum::<f64>() / n as f64;
        assert!((mean - 30.0).abs() < 0.5, "mean {mean}");
    }

    #[test]
    fn normal_and_lognormal_moments_within_tolerance() {
        let mut r = Rng::new(4);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        // Log-normal median 60, sigma 0.5: mean 60 * e^0.125 = 67.99.
        let ls: Vec<f64> = (0..n).map(|_| r.lognormal(60.0, 0.5)).collect();
        let lmean = ls.iter().sum::<f64>() / n as f64;
        assert!((lmean - 67.99).abs() < 0.6, "lognormal mean {lmean}");
        let below = ls.iter().filter(|x| **x < 60.0).count() as f64 / n as f64;
        assert!((below - 0.5).abs() < 0.01, "median share {below}");
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let mut r = Rng::new(5);
        let w = [1.0, 0.0, 3.0];
        let mut c = [0u32; 3];
        for _ in 0..40_000 {
            c[r.weighted(&w)] += 1;
        }
        assert_eq!(c[1], 0);
        assert!((9_400..10_600).contains(&c[0]), "{c:?}");
    }
}
