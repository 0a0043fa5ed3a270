//! Eight bytes at a time: the word loads shared by the byte scanners of this crate
//! and the engine (plain `u64` arithmetic on little-endian words, no `unsafe`).

/// The first (up to) eight bytes of `b` as a little-endian word, zero-padded;
/// without a call to `memcpy` for short slices.
pub fn load_word(b: &[u8]) -> u64 {
    if let Some(w) = b.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    b.iter()
        .enumerate()
        .fold(0, |w, (i, &x)| w | (u64::from(x) << (8 * i)))
}

/// The eight bytes of `b` from `at` (0 past the end).
pub fn word_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_le_bytes(*w))
}
