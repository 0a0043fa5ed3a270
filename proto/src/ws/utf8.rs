//! Incremental, fail-fast UTF-8 validation of a text message that arrives in pieces.
//!
//! A text message may be split anywhere (across frames and across reads), even inside
//! a character. [`Utf8Validator`] carries the (at most 3) bytes of a character that
//! is not complete yet, and rejects the input as soon as the bytes seen so far can no
//! longer be the beginning of valid UTF-8 (RFC 6455 §8.1 lets an endpoint fail fast).

use thiserror::Error;

/// The bytes seen so far are not (the beginning of) valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid UTF-8")]
pub struct Utf8Error;

/// Validates a byte stream fed in arbitrary pieces. 4 bytes, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The beginning of a character whose remaining bytes have not arrived yet.
    carry: [u8; 3],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub const fn new() -> Self {
        Self {
            carry: [0; 3],
            carry_len: 0,
        }
    }

    /// Validates the next piece of the stream. Fails as soon as `input` contains the
    /// first byte that makes the stream invalid, even if that byte ends the piece (an
    /// impossible second byte such as `ED A0` or `F4 90` is rejected on arrival).
    /// After an error the validator's state is unspecified: discard the stream.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), Utf8Error> {
        let input = if self.carry_len == 0 {
            input
        } else {
            self.complete_carry(input)?
        };
        if self.carry_len != 0 {
            // `complete_carry` used up all of `input` and the character is still open.
            return Ok(());
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            // `error_len() == None`: the input ends inside a character whose bytes so
            // far are valid; std has already checked the lead byte and the range of
            // the second byte. Keep those 1..=3 bytes for the next piece.
            Err(e) if e.error_len().is_none() => {
                let tail = input.get(e.valid_up_to()..).unwrap_or_default();
                self.carry_len = 0;
                for (slot, &byte) in self.carry.iter_mut().zip(tail) {
                    *slot = byte;
                    self.carry_len += 1;
                }
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// Ends the stream: fails if it stops inside a character. Resets the validator
    /// for the next stream in both cases.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.carry_len == 0;
        *self = Self::new();
        if complete { Ok(()) } else { Err(Utf8Error) }
    }

    /// Appends bytes from `input` to the carried character until it is complete (then
    /// clears the carry and returns the rest of `input`) or `input` runs out (then keeps
    /// the longer carry and returns an empty slice).
    fn complete_carry<'i>(&mut self, input: &'i [u8]) -> Result<&'i [u8], Utf8Error> {
        let have = usize::from(self.carry_len);
        // The carry holds a valid prefix (checked by std), so its lead byte is 2..=4 wide.
        let width: usize = match self.carry[0] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        let take = width.saturating_sub(have).min(input.len());
        let (head, rest) = input.split_at(take);

        let mut seq = [0u8; 4];
        for (slot, &byte) in seq.iter_mut().zip(self.carry.iter().take(have).chain(head)) {
            *slot = byte;
        }
        let seq = &seq[..have + take];
        match std::str::from_utf8(seq) {
            Ok(_) => {
                self.carry_len = 0;
                Ok(rest)
            }
            Err(e) if e.error_len().is_none() => {
                // Still a valid prefix (shorter than `width` because `input` ran out).
                for (slot, &byte) in self.carry.iter_mut().zip(seq) {
                    *slot = byte;
                }
                self.carry_len = seq.len().min(3) as u8;
                Ok(rest)
            }
            Err(_) => Err(Utf8Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlongs, surrogates, code points above U+10FFFF, truncations, stray
    /// continuation bytes, and valid 1..=4-byte characters around them.
    const TRICKY: &[&[u8]] = &[
        b"",
        b"plain ascii",
        "κόσμε €𝄞 \u{10FFFF} \u{FFFD} \u{E000} \u{D7FF}".as_bytes(),
        b"\xC0\x80",                 // overlong NUL
        b"\xC1\xBF",                 // overlong
        b"\xE0\x80\xAF",             // overlong '/'
        b"\xE0\x9F\xBF",             // overlong
        b"\xF0\x80\x80\xAF",         // overlong
        b"\xF0\x8F\xBF\xBF",         // overlong
        b"\xED\xA0\x80",             // U+D800 surrogate
        b"\xED\xBF\xBF",             // U+DFFF surrogate
        b"\xED\xA0\x80\xED\xB0\x80", // surrogate pair
        b"\xF4\x90\x80\x80",         // U+110000
        b"\xF5\x80\x80\x80",         // lead byte beyond U+10FFFF
        b"\xFF",
        b"\xFE\xFE\xFF\xFF",
        b"\x80", // stray continuation
        b"a\xBFb",
        b"\xE2\x82",                         // truncated euro sign
        b"\xF0\x9D\x84",                     // truncated U+1D11E
        b"\xC3",                             // truncated 2-byte
        b"ab\xE2\x82\xACcd\xF0\x9D\x84\x9E", // valid: "ab€cd𝄞"
        b"\xE2\x82\xAC\xE2\x82",             // valid then truncated
        b"\xE2\x82\x41",                     // continuation replaced by ASCII
        b"\xF0\x9D\x84\x41",
        b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80\x65\x64\x69\x74\x65\x64",
        b"\xEF\xBF\xBF",     // U+FFFF is a valid noncharacter
        b"\xF4\x8F\xBF\xBF", // U+10FFFF
    ];

    fn validate_pieces(pieces: &[&[u8]]) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    /// The index of the byte at which the input stops being a prefix of valid UTF-8,
    /// computed with std on each prefix (the oracle for fail-fast).
    fn first_bad_byte(s: &[u8]) -> Option<usize> {
        (0..s.len())
            .find(|&i| matches!(std::str::from_utf8(&s[..=i]), Err(e) if e.error_len().is_some()))
    }

    /// Feeds one byte at a time; returns the index of the byte whose feed failed.
    fn failing_byte(s: &[u8]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        s.iter()
            .position(|b| v.feed(std::slice::from_ref(b)).is_err())
    }

    #[test]
    fn agrees_with_std_on_every_two_point_split() {
        for s in TRICKY {
            let expected = std::str::from_utf8(s).is_ok();
            for a in 0..=s.len() {
                for b in a..=s.len() {
                    let got = validate_pieces(&[&s[..a], &s[a..b], &s[b..]]).is_ok();
                    assert_eq!(got, expected, "{s:02X?} split at {a},{b}");
                }
            }
            let bytewise: Vec<&[u8]> = s.chunks(1).collect();
            assert_eq!(
                validate_pieces(&bytewise).is_ok(),
                expected,
                "{s:02X?} byte by byte"
            );
        }
    }

    #[test]
    fn fails_on_the_first_impossible_byte() {
        for s in TRICKY {
            assert_eq!(failing_byte(s), first_bad_byte(s), "{s:02X?}");
        }
        // The examples from the spec of the validator, byte by byte.
        assert_eq!(failing_byte(b"\xF4\x90\x80\x80"), Some(1));
        assert_eq!(failing_byte(b"\xED\xA0\x80"), Some(1));
        assert_eq!(failing_byte(b"\xE0\x80\x80"), Some(1));
        assert_eq!(failing_byte(b"\xC0\x80"), Some(0));
        assert_eq!(failing_byte(b"ok\xFF"), Some(2));
        assert_eq!(failing_byte(b"\xE2\x82\xAC"), None);
    }

    #[test]
    fn rejects_an_impossible_second_byte_at_the_end_of_a_piece() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xF4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(Utf8Error));

        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xED\xA0"), Err(Utf8Error));
    }

    #[test]
    fn completes_a_character_over_several_tiny_feeds() {
        let mut v = Utf8Validator::new();
        for b in "𝄞".as_bytes() {
            assert_eq!(v.feed(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(v.feed(b""), Ok(()));
        assert_eq!(v.finish(), Ok(()));

        // Carry completed in the middle of a feed, followed by more text.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xF0\x9D"), Ok(()));
        assert_eq!(v.feed(b"\x84"), Ok(()));
        assert_eq!(v.feed(b"\x9Exyz\xE2"), Ok(()));
        assert_eq!(v.finish(), Err(Utf8Error));
    }

    #[test]
    fn finish_rejects_a_truncated_character_and_resets() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xE2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(Utf8Error));
        // The next stream starts clean.
        assert_eq!(v.feed(b"\xAC"), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v, Utf8Validator::new());
    }

    #[test]
    fn random_streams_agree_with_std_and_fail_fast() {
        // Bytes biased towards lead and continuation bytes so that most streams are
        // interesting (valid multi-byte characters happen often enough).
        const ALPHABET: &[u8] =
            b"a\x7F\x80\x8F\x90\x9F\xA0\xBF\xC0\xC2\xDF\xE0\xE1\xED\xEF\xF0\xF4\xF5\xFF";
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 12) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let a = (next() % (len as u64 + 1)) as usize;
            let b = a + (next() % ((len - a) as u64 + 1)) as usize;
            let expected = std::str::from_utf8(&s).is_ok();
            assert_eq!(
                validate_pieces(&[&s[..a], &s[a..b], &s[b..]]).is_ok(),
                expected,
                "{s:02X?}"
            );
            assert_eq!(failing_byte(&s), first_bad_byte(&s), "{s:02X?}");
        }
    }
}
