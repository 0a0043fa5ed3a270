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

const LO: u64 = 0x0101_0101_0101_0101;

/// The ASCII case bit (0x20) of every byte: OR-ing it makes letters lower case, and
/// for a lower-case letter `l`, `x | 0x20 == l` holds exactly for `l` and its upper
/// case (for other bytes it is only a filter: `@` and `` ` `` fold alike).
pub const CASE: u64 = 0x20 * LO;

/// `a.eq_ignore_ascii_case(b)`, eight bytes at a time: equal words are equal; else
/// every differing byte must differ in bit 5 only (0x20, the ASCII case bit) and be
/// a letter. Slices of up to 8 bytes (most AMI keys and names) are one word each.
#[inline]
pub fn eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && if a.len() <= 8 {
            words_eq_ignore_ascii_case(load_word(a), load_word(b))
        } else {
            long_eq_ignore_ascii_case(a, b)
        }
}

/// [`eq_ignore_ascii_case`] of two slices of the same length, longer than 8 bytes.
fn long_eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    let mut at = 0;
    while at + 8 < a.len() {
        if !words_eq_ignore_ascii_case(word_at(a, at), word_at(b, at)) {
            return false;
        }
        at += 8;
    }
    // The last word overlaps the one before: bytes compared twice compare alike.
    let last = a.len() - 8;
    words_eq_ignore_ascii_case(word_at(a, last), word_at(b, last))
}

/// [`eq_ignore_ascii_case`] against `letters`, a name of lower-case ASCII letters
/// only (a key the caller spells, such as `calleridnum`): then OR-ing [`CASE`] into
/// the other side's words is exact, and a word is one compare.
#[inline]
pub fn eq_letters(key: &[u8], letters: &[u8]) -> bool {
    debug_assert!(letters.iter().all(u8::is_ascii_lowercase));
    let n = key.len();
    if n != letters.len() {
        return false;
    }
    if n < 8 {
        return load_word(key) | CASE == load_word(letters) | CASE;
    }
    let mut at = 0;
    while at + 8 < n {
        if word_at(key, at) | CASE != word_at(letters, at) | CASE {
            return false;
        }
        at += 8;
    }
    word_at(key, n - 8) | CASE == word_at(letters, n - 8) | CASE
}

/// Two words are equal but for the case of ASCII letters.
#[inline]
fn words_eq_ignore_ascii_case(x: u64, y: u64) -> bool {
    let diff = x ^ y;
    if diff == 0 {
        return true;
    }
    if diff & !CASE != 0 {
        return false;
    }
    // The bytes that differ (bit 5 moved to bit 7) must be letters of `x`.
    (diff << 2) & !lowercase_letters(x | CASE) == 0
}

/// Bit 7 of each byte of the result is set iff that byte of `x` is `a..=z`. Exact
/// per byte: with bit 7 masked off, neither sum borrows nor carries out of a byte
/// (the range test of "Bit Twiddling Hacks", `hasbetween`).
#[inline]
fn lowercase_letters(x: u64) -> u64 {
    const HI: u64 = 0x80 * LO;
    let low7 = x & (0x7f * LO);
    let below_z = (0x7f + u64::from(b'z') + 1) * LO - low7;
    let above_a = low7 + (0x7f - u64::from(b'a') + 1) * LO;
    below_z & above_a & !x & HI
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

    #[test]
    fn lowercase_letters_is_exact_per_byte() {
        for v in 0..=255u8 {
            for at in 0..8 {
                for background in [0u8, b'a', b'z', 0x7f, 0xff, b'`', b'{'] {
                    let mut bytes = [background; 8];
                    bytes[at] = v;
                    let got = lowercase_letters(u64::from_le_bytes(bytes)).to_le_bytes();
                    for (i, &b) in bytes.iter().enumerate() {
                        assert_eq!(got[i] == 0x80, b.is_ascii_lowercase(), "{bytes:?} at {i}");
                        assert!(got[i] == 0 || got[i] == 0x80);
                    }
                }
            }
        }
    }

    /// Every pair of byte values, at every position of slices of 1 to 17 bytes
    /// (words and tails), against the standard library.
    #[test]
    fn eq_ignore_ascii_case_agrees_with_the_standard_library() {
        let base = b"Content-Type: X1";
        for len in 1..=17usize {
            let a: Vec<u8> = base.iter().copied().cycle().take(len).collect();
            for at in 0..len {
                for x in 0..=255u8 {
                    for y in [
                        x,
                        x ^ 0x20,
                        x.to_ascii_uppercase(),
                        x.to_ascii_lowercase(),
                        x ^ 1,
                        0,
                        0xff,
                    ] {
                        let (mut p, mut q) = (a.clone(), a.clone());
                        p[at] = x;
                        q[at] = y;
                        assert_eq!(
                            eq_ignore_ascii_case(&p, &q),
                            p.eq_ignore_ascii_case(&q),
                            "{p:?} {q:?}"
                        );
                    }
                }
            }
        }
        assert!(eq_ignore_ascii_case(b"", b""));
        assert!(!eq_ignore_ascii_case(b"a", b""));
        assert!(!eq_ignore_ascii_case(b"Event", b"Events"));
        assert!(eq_ignore_ascii_case(b"ACTIONID", b"ActionID"));
    }

    /// Against the standard library, for every byte value at every position of keys
    /// as long as letter names of 0 to 17 bytes (words, overlapping tails).
    #[test]
    fn eq_letters_agrees_with_the_standard_library_for_letter_names() {
        let letters = b"connectedlinename";
        for len in 0..=letters.len() {
            let name = &letters[..len];
            for at in 0..len {
                for x in 0..=255u8 {
                    let mut key = name.to_ascii_uppercase();
                    key[at] = x;
                    assert_eq!(
                        eq_letters(&key, name),
                        key.eq_ignore_ascii_case(name),
                        "{key:?}"
                    );
                }
            }
            assert!(eq_letters(name, name));
            assert!(!eq_letters(&[name, b"x"].concat(), name));
        }
    }
}
