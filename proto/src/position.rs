//! A stream position: where a subscriber is in everything the server has published, as
//! one compact, URL- and header-safe token `EEEEEEEE-G` (e.g. `1f0c93aa-42`): the
//! server instance's epoch (8 lowercase hex digits) and the router-wide sequence number
//! of the last message seen (decimal). Because the router orders every message of every
//! topic, one number stands for a position in all topics and subtrees at once; the epoch
//! tells a position from another server instance (whose numbering restarted) apart.
//! It is the SSE `id`, the envelope's `pos`, and the `since` of WebSocket and
//! long-poll resumes.

use std::fmt;

/// Longest position text: 8 hex digits, `-`, the 20 digits of `u64::MAX`.
pub const MAX_POSITION_LEN: usize = 8 + 1 + 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The server instance (random at start-up, never 0).
    pub epoch: u32,
    /// The router-wide sequence number of the last message seen (0: none yet).
    pub gseq: u64,
}

/// Why a `since` / `Last-Event-ID` value is not a position. The messages go to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("a position is at most {MAX_POSITION_LEN} bytes")]
    TooLong,
    #[error("a position looks like 1f0c93aa-42 (8 hex digits, '-', a number)")]
    Malformed,
    #[error("a position's number is too large")]
    Overflow,
}

impl Position {
    /// Appends the position's text to `out`, without the formatting machinery (the
    /// router writes two per message).
    pub fn write(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hex: [u8; 8] = std::array::from_fn(|i| {
            let nibble = self.epoch >> (28 - 4 * i) & 0xf;
            HEX.get(nibble as usize).copied().unwrap_or(b'0')
        });
        out.extend_from_slice(&hex);
        out.push(b'-');
        crate::envelope::write_u64(out, self.gseq);
    }

    /// Parses the text written by [`Position::write`]: exactly 8 lowercase hex digits,
    /// `-`, then 1 to 20 decimal digits without a sign; nothing else.
    pub fn parse(text: &str) -> Result<Position, PositionError> {
        if text.len() > MAX_POSITION_LEN {
            return Err(PositionError::TooLong);
        }
        let (epoch, gseq) = text.split_once('-').ok_or(PositionError::Malformed)?;
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if epoch.len() != 8 || !epoch.bytes().all(hex) {
            return Err(PositionError::Malformed);
        }
        if gseq.is_empty() || !gseq.bytes().all(|c| c.is_ascii_digit()) {
            return Err(PositionError::Malformed);
        }
        let epoch = u32::from_str_radix(epoch, 16).map_err(|_| PositionError::Malformed)?;
        let gseq = gseq.parse::<u64>().map_err(|_| PositionError::Overflow)?;
        Ok(Position { epoch, gseq })
    }
}

/// The text of [`Position::write`].
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(MAX_POSITION_LEN);
        self.write(&mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write` (and `Display`, which is its text) gives 8 lowercase hex digits, `-`,
    /// the decimal number, for every nibble of the epoch at every place and numbers of
    /// every length.
    #[test]
    fn write_is_8_hex_digits_a_dash_and_the_number() {
        let epochs = (0..8).flat_map(|at| (0..16u32).map(move |d| d << (4 * at)));
        let gseqs = (0..20).map(|k| 10u64.pow(k)).chain([0, 9, 99, u64::MAX]);
        for (epoch, gseq) in epochs.zip(gseqs.cycle()) {
            let p = Position { epoch, gseq };
            let want = format!("{epoch:08x}-{gseq}");
            let mut out = Vec::new();
            p.write(&mut out);
            assert_eq!(out, want.as_bytes());
            assert_eq!(p.to_string(), want);
        }
    }

    #[test]
    fn round_trips_and_pads_the_epoch() {
        for (p, text) in [
            (
                Position {
                    epoch: 0x1f0c93aa,
                    gseq: 42,
                },
                "1f0c93aa-42",
            ),
            (Position { epoch: 1, gseq: 0 }, "00000001-0"),
            (
                Position {
                    epoch: u32::MAX,
                    gseq: u64::MAX,
                },
                "ffffffff-18446744073709551615",
            ),
        ] {
            let mut out = Vec::new();
            p.write(&mut out);
            assert_eq!(out, text.as_bytes());
            assert_eq!(Position::parse(text), Ok(p));
        }
        assert_eq!("ffffffff-18446744073709551615".len(), MAX_POSITION_LEN);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "42",
            "1f0c93aa",
            "1f0c93aa-",
            "-42",
            "1F0C93AA-42",
            "1f0c93a-42",
            "01f0c93aa-42",
            "1f0c93aa-+42",
            "1f0c93aa--42",
            "1f0c93aa-4 2",
            "1f0c93aa-42-1",
            "1f0c93aa-0x2a",
            "g0000000-1",
        ] {
            assert_eq!(
                Position::parse(bad),
                Err(PositionError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Position::parse("1f0c93aa-18446744073709551616"),
            Err(PositionError::Overflow)
        );
        assert_eq!(
            Position::parse("1f0c93aa-000000000000000000042"),
            Err(PositionError::TooLong)
        );
    }
}
