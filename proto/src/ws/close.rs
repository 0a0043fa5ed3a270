//! Close frames (RFC 6455 §5.5.1, §7.4): the status codes, which of them a peer may
//! send, and parsing/encoding of the close payload (2-byte code + UTF-8 reason).

use thiserror::Error;

use super::frame::{MAX_CONTROL_PAYLOAD, Opcode, encode_frame};

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED: u16 = 1003;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const INTERNAL: u16 = 1011;
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The longest reason that fits a control frame after the 2-byte code.
pub const MAX_REASON_LEN: usize = MAX_CONTROL_PAYLOAD - 2;

/// Whether a peer may put `code` in a Close frame.
///
/// - 1000..=1003 and 1007..=1011 are defined by RFC 6455 (Autobahn case 7.7.x expects
///   them accepted);
/// - 1012..=1014 (service restart, try again later, bad gateway) are registered with
///   IANA; Autobahn does not test them, and we send 1013 ourselves;
/// - 1004 (reserved), 1005 and 1006 (local-only "no code" / "abnormal"), 1015 (TLS,
///   local-only) and the unassigned rest of 0..=2999 are rejected (Autobahn case 7.9.x
///   expects 1002 for 0, 999, 1004, 1005, 1006, 1016, 1100, 2000 and 2999);
/// - 3000..=3999 (registered) and 4000..=4999 (private use) are accepted;
/// - 5000 and above are not defined and rejected.
pub const fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A Close payload that no peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", self.reason())]
pub enum CloseError {
    /// A 1-byte payload: a code is 2 bytes.
    Truncated,
    /// A code that [`is_valid_code`] rejects.
    InvalidCode(u16),
    /// The reason is not valid UTF-8.
    InvalidReason,
}

impl CloseError {
    /// The code of the Close frame to answer with: 1007 for a bad reason, else 1002.
    pub const fn close_code(self) -> u16 {
        match self {
            Self::Truncated | Self::InvalidCode(_) => PROTOCOL_ERROR,
            Self::InvalidReason => INVALID_PAYLOAD,
        }
    }

    /// A short reason, suitable for a Close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "1-byte close payload",
            Self::InvalidCode(_) => "invalid close code",
            Self::InvalidReason => "close reason is not UTF-8",
        }
    }
}

/// Parses a (unmasked) Close payload: empty means no code and no reason; otherwise
/// a valid code followed by a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<u16>, &str), CloseError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(CloseError::Truncated),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(code) {
                return Err(CloseError::InvalidCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::InvalidReason)?;
            Ok((Some(code), reason))
        }
    }
}

/// Writes `code` and `reason` into `out` and returns the payload length. A reason
/// longer than [`MAX_REASON_LEN`] bytes is cut at the last character boundary that fits.
pub fn encode_close_payload(code: u16, reason: &str, out: &mut [u8; MAX_CONTROL_PAYLOAD]) -> usize {
    let reason = truncate_at_char_boundary(reason, MAX_REASON_LEN);
    out[..2].copy_from_slice(&code.to_be_bytes());
    let len = 2 + reason.len();
    out[2..len].copy_from_slice(reason.as_bytes());
    len
}

/// Appends a whole Close frame to `out`: empty payload if `code` is `None` (then
/// `reason` is ignored, a reason needs a code), else as [`encode_close_payload`].
pub fn encode_close_frame(
    out: &mut Vec<u8>,
    code: Option<u16>,
    reason: &str,
    mask: Option<[u8; 4]>,
) {
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    let len = code.map_or(0, |code| encode_close_payload(code, reason, &mut payload));
    encode_frame(out, Opcode::Close, true, &payload[..len], mask);
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char_boundary(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    // Index 0 is always a boundary, so this stops.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::parse_header;

    /// Autobahn|Testsuite case 7.7.x: valid codes, echoed back.
    const AUTOBAHN_VALID: [u16; 13] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    /// Autobahn|Testsuite case 7.9.x: invalid codes, answered with 1002.
    const AUTOBAHN_INVALID: [u16; 9] = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999];

    #[test]
    fn autobahn_valid_codes_are_accepted() {
        for code in AUTOBAHN_VALID {
            assert!(is_valid_code(code), "{code}");
            let payload = code.to_be_bytes();
            assert_eq!(parse_close_payload(&payload), Ok((Some(code), "")));
        }
    }

    #[test]
    fn autobahn_invalid_codes_are_a_protocol_error() {
        for code in AUTOBAHN_INVALID {
            assert!(!is_valid_code(code), "{code}");
            let err = parse_close_payload(&code.to_be_bytes()).unwrap_err();
            assert_eq!(err, CloseError::InvalidCode(code));
            assert_eq!(err.close_code(), PROTOCOL_ERROR);
        }
    }

    #[test]
    fn code_ranges() {
        let valid: Vec<u16> = (0..=u16::MAX).filter(|&c| is_valid_code(c)).collect();
        let expected: Vec<u16> = (1000..=1003)
            .chain(1007..=1014)
            .chain(3000..=4999)
            .collect();
        assert_eq!(valid, expected);
        for code in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED,
            INVALID_PAYLOAD,
            POLICY,
            TOO_BIG,
            INTERNAL,
            TRY_AGAIN_LATER,
        ] {
            assert!(
                is_valid_code(code),
                "our own constant {code} must be sendable"
            );
        }
        assert!(!is_valid_code(1015) && !is_valid_code(5000) && !is_valid_code(u16::MAX));
    }

    #[test]
    fn payload_parsing() {
        assert_eq!(parse_close_payload(b""), Ok((None, "")));
        assert_eq!(parse_close_payload(b"\x03"), Err(CloseError::Truncated));
        assert_eq!(CloseError::Truncated.close_code(), PROTOCOL_ERROR);
        assert_eq!(parse_close_payload(b"\x03\xe8bye"), Ok((Some(1000), "bye")));
        assert_eq!(
            parse_close_payload(&[b"\x0f\xa0", "κόσμε".as_bytes()].concat()),
            Ok((Some(4000), "κόσμε"))
        );
        let bad_reason = parse_close_payload(
            b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        );
        assert_eq!(bad_reason, Err(CloseError::InvalidReason));
        assert_eq!(CloseError::InvalidReason.close_code(), INVALID_PAYLOAD);
        // An invalid code is reported even with an invalid reason.
        assert_eq!(
            parse_close_payload(b"\x03\xed\xff"),
            Err(CloseError::InvalidCode(1005))
        );
    }

    #[test]
    fn encoding_round_trips_and_truncates_at_a_char_boundary() {
        let mut out = [0u8; MAX_CONTROL_PAYLOAD];
        let len = encode_close_payload(GOING_AWAY, "restarting", &mut out);
        assert_eq!(&out[..len], b"\x03\xe9restarting");
        assert_eq!(
            parse_close_payload(&out[..len]),
            Ok((Some(GOING_AWAY), "restarting"))
        );

        // 61 two-byte characters (122 bytes) + one more does not fit in 123 bytes.
        let long = "é".repeat(62);
        let len = encode_close_payload(NORMAL, &long, &mut out);
        assert_eq!(len, 2 + 122);
        assert_eq!(
            parse_close_payload(&out[..len]),
            Ok((Some(NORMAL), &long[..122]))
        );

        let ascii = "x".repeat(200);
        assert_eq!(
            encode_close_payload(NORMAL, &ascii, &mut out),
            MAX_CONTROL_PAYLOAD
        );
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        encode_close_frame(&mut out, None, "ignored", None);
        assert_eq!(out, [0x88, 0x00]);

        out.clear();
        encode_close_frame(&mut out, Some(TOO_BIG), "too big", Some([1, 2, 3, 4]));
        let (header, header_len) = parse_header(&out).unwrap().unwrap();
        assert_eq!(
            (header.opcode, header.fin, header.payload_len),
            (Opcode::Close, true, 9)
        );
        let mut payload = out[header_len..].to_vec();
        crate::ws::frame::apply_mask(&mut payload, [1, 2, 3, 4], 0);
        assert_eq!(
            parse_close_payload(&payload),
            Ok((Some(TOO_BIG), "too big"))
        );
    }
}
