//! Eight bytes at a time: the word loads shared by the byte scanners of this crate
//! and the engine (plain `u64` arithmetic on little-endian words, no `unsafe`).

/// The first (up to) eight bytes of `b` as a little-endian word, zero-padded;
/// without a call to `memcpy` or a loop for short slices: a slice of 4 to 7 bytes is
/// two overlapping 4-byte loads (the bytes they share are equal, so OR-ing them is
/// exact), one of 2 or 3 bytes two overlapping 2-byte loads.
#[inline]
pub fn load_word(b: &[u8]) -> u64 {
    let n = b.len();
    if let Some(w) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    let last = |k: usize| b.get(n.saturating_sub(k)..).unwrap_or_default();
    if n >= 4 {
        let lo = b.first_chunk::<4>().map_or(0, |w| u32::from_le_bytes(*w));
        let hi = last(4)
            .first_chunk::<4>()
            .map_or(0, |w| u32::from_le_bytes(*w));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 4));
    }
    if n >= 2 {
        let lo = b.first_chunk::<2>().map_or(0, |w| u16::from_le_bytes(*w));
        let hi = last(2)
            .first_chunk::<2>()
            .map_or(0, |w| u16::from_le_bytes(*w));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 2));
    }
    b.first().map_or(0, |&x| u64::from(x))
}

/// The eight bytes of `b` from `at` (0 past the end).
#[inline]
pub fn word_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_le_bytes(*w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_word_is_the_bytes_zero_padded() {
        let bytes: Vec<u8> = (1..=12).map(|i| i * 17).collect();
        for n in 0..=12 {
            let b = &bytes[..n];
            let mut want = [0u8; 8];
            let k = n.min(8);
            want[..k].copy_from_slice(&b[..k]);
            assert_eq!(load_word(b), u64::from_le_bytes(want), "{n} bytes");
        }
        assert_eq!(word_at(&bytes, 4), load_word(&bytes[4..]));
        assert_eq!(word_at(&bytes, 5), 0);
    }
}
