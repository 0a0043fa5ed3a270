//! RFC 6455 §5 framing: opcodes, frame header parsing and encoding, payload masking,
//! and whole-frame encoders. Pure functions over byte slices; the streaming state
//! (partial headers, fragmented messages) lives in [`super::reader`].
//!
//! ```text
//!  byte 0: FIN RSV1 RSV2 RSV3 opcode(4)   byte 1: MASK len(7)
//!  len 126 -> 16-bit length follows, len 127 -> 64-bit length follows (network order)
//!  then the 4-byte masking key if MASK is set, then the payload
//! ```

use thiserror::Error;

/// The longest header: 2 bytes + 8-byte extended length + 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Control frames (Close, Ping, Pong) carry at most 125 payload bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The opcodes RFC 6455 defines. The reserved ones (0x3..=0x7, 0xB..=0xF) are
/// protocol errors since no extension is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// The opcode for the low 4 bits of a frame's first byte; `None` if reserved.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Close, Ping and Pong: at most 125 bytes, never fragmented.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key, present iff the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// A frame header that no peer may send (all are answered with close code 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", self.reason())]
pub enum FrameError {
    /// RSV1..3 set without a negotiated extension.
    ReservedBits,
    ReservedOpcode,
    /// A control frame with FIN = 0.
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    ControlTooLong,
    /// A 64-bit payload length with its most significant bit set.
    LengthOverflow,
}

impl FrameError {
    /// A short reason, suitable for a Close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::FragmentedControl => "fragmented control frame",
            Self::ControlTooLong => "control frame payload over 125 bytes",
            Self::LengthOverflow => "payload length over 2^63",
        }
    }
}

/// Parses the frame header at the start of `buf`.
///
/// Returns `Ok(None)` while `buf` holds only a prefix of a header, and
/// `Ok(Some((header, header_len)))` once it is complete. Errors are reported as soon
/// as the offending byte is present: RSV bits, opcode and a fragmented control frame
/// from the first byte, an over-long control frame from the second. Non-minimal length
/// encodings (e.g. 5 in the 16-bit form) are accepted.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode)?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControl);
    }

    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let len7 = b1 & 0x7F;
    // 126 and 127 (extended lengths) are over the limit as well.
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::ControlTooLong);
    }
    let (payload_len, mut header_len) = match len7 {
        126 => match array_at::<2>(buf, 2) {
            Some(ext) => (u64::from(u16::from_be_bytes(ext)), 4),
            None => return Ok(None),
        },
        127 => match array_at::<8>(buf, 2) {
            Some(ext) => (u64::from_be_bytes(ext), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if payload_len >> 63 != 0 {
        return Err(FrameError::LengthOverflow);
    }
    let mask = if b1 & 0x80 != 0 {
        let Some(key) = array_at::<4>(buf, header_len) else {
            return Ok(None);
        };
        header_len += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len,
        },
        header_len,
    )))
}

/// The `N` bytes of `buf` at `at`, if present.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Encodes a frame header into `out` and returns its length (2..=14), using the
/// shortest length encoding. `payload_len` must be below 2^63 (any in-memory length is).
pub fn encode_header(
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
    out: &mut [u8; MAX_HEADER_LEN],
) -> usize {
    out[0] = (u8::from(fin) << 7) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = match payload_len {
        0..=125 => {
            out[1] = mask_bit | payload_len as u8;
            2
        }
        126..=0xFFFF => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        }
    };
    if let Some(key) = mask {
        out[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    len
}

/// XORs `data` with the masking key (§5.3), in place. `phase` is the position in
/// the frame's payload of `data[0]` (only `phase % 4` matters), so that a payload
/// split across reads can be unmasked piece by piece. Masking twice restores the data.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    // The key rotated so that key[0] applies to data[0].
    let key: [u8; 4] = std::array::from_fn(|i| mask[(phase % 4 + i) % 4]);
    // 8 is a multiple of 4, so every 8-byte block starts at key[0] again.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (blocks, tail) = data.as_chunks_mut::<8>();
    for block in blocks {
        *block = (u64::from_ne_bytes(*block) ^ wide).to_ne_bytes();
    }
    // The tail has up to 7 bytes: the key repeats.
    for (byte, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// Appends a whole frame (header and, masked if `mask` is set, payload) to `out`.
/// The caller keeps control frames final and within 125 bytes.
pub fn encode_frame(
    out: &mut Vec<u8>,
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(fin, opcode, payload.len() as u64, mask, &mut header);
    out.reserve(header_len + payload.len());
    out.extend_from_slice(&header[..header_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mask(data: &mut [u8], mask: [u8; 4], phase: usize) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte ^= mask[(phase + i) % 4];
        }
    }

    fn header(buf: &[u8]) -> (FrameHeader, usize) {
        parse_header(buf)
            .expect("valid header")
            .expect("complete header")
    }

    // RFC 6455 §5.7 examples.
    const HELLO_UNMASKED: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const HELLO_MASKED: &[u8] = &[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const HEL: &[u8] = &[0x01, 0x03, 0x48, 0x65, 0x6c];
    const LO: &[u8] = &[0x80, 0x02, 0x6c, 0x6f];
    const PING_HELLO: &[u8] = &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    const PONG_HELLO_MASKED: &[u8] = &[
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc_5_7_examples_encode_byte_for_byte() {
        /// Expected wire bytes, then the arguments of `encode_frame`.
        type Case = (&'static [u8], Opcode, bool, &'static [u8], Option<[u8; 4]>);
        let cases: [Case; 6] = [
            (HELLO_UNMASKED, Opcode::Text, true, b"Hello", None),
            (HELLO_MASKED, Opcode::Text, true, b"Hello", Some(RFC_MASK)),
            (HEL, Opcode::Text, false, b"Hel", None),
            (LO, Opcode::Continuation, true, b"lo", None),
            (PING_HELLO, Opcode::Ping, true, b"Hello", None),
            (
                PONG_HELLO_MASKED,
                Opcode::Pong,
                true,
                b"Hello",
                Some(RFC_MASK),
            ),
        ];
        for (wire, opcode, fin, payload, mask) in cases {
            let mut out = Vec::new();
            encode_frame(&mut out, opcode, fin, payload, mask);
            assert_eq!(out, wire, "{opcode:?}");
        }

        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Binary, true, &[0xAB; 256], None);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);
        out.clear();
        encode_frame(&mut out, Opcode::Binary, true, &vec![0xCD; 65536], None);
        assert_eq!(out[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(out.len(), 10 + 65536);
    }

    #[test]
    fn rfc_5_7_examples_parse() {
        let (h, len) = header(HELLO_UNMASKED);
        assert_eq!(
            (h, len),
            (
                FrameHeader {
                    fin: true,
                    opcode: Opcode::Text,
                    mask: None,
                    payload_len: 5
                },
                2
            )
        );

        let (h, len) = header(HELLO_MASKED);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                opcode: Opcode::Text,
                mask: Some(RFC_MASK),
                payload_len: 5
            }
        );
        let mut payload = HELLO_MASKED[len..].to_vec();
        apply_mask(&mut payload, RFC_MASK, 0);
        assert_eq!(payload, b"Hello");

        assert_eq!(
            header(HEL).0,
            FrameHeader {
                fin: false,
                opcode: Opcode::Text,
                mask: None,
                payload_len: 3
            }
        );
        assert_eq!(
            header(LO).0,
            FrameHeader {
                fin: true,
                opcode: Opcode::Continuation,
                mask: None,
                payload_len: 2
            }
        );
        assert_eq!(header(PING_HELLO).0.opcode, Opcode::Ping);
        assert_eq!(header(PONG_HELLO_MASKED).0.opcode, Opcode::Pong);
        assert_eq!(header(&[0x82, 0x7E, 0x01, 0x00]).0.payload_len, 256);
        assert_eq!(
            header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
            (
                FrameHeader {
                    fin: true,
                    opcode: Opcode::Binary,
                    mask: None,
                    payload_len: 65536
                },
                10
            )
        );
    }

    #[test]
    fn every_strict_prefix_of_a_header_is_incomplete() {
        for payload_len in [0, 125, 126, 65535, 65536, (1 << 63) - 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = [0u8; MAX_HEADER_LEN];
                let len = encode_header(true, Opcode::Binary, payload_len, mask, &mut out);
                for prefix in 0..len {
                    assert_eq!(
                        parse_header(&out[..prefix]),
                        Ok(None),
                        "len {payload_len} prefix {prefix}"
                    );
                }
                let expected = FrameHeader {
                    fin: true,
                    opcode: Opcode::Binary,
                    mask,
                    payload_len,
                };
                // Trailing payload bytes do not change the result.
                let mut with_payload = out[..len].to_vec();
                with_payload.extend_from_slice(&[0xEE; 20]);
                assert_eq!(header(&with_payload), (expected, len));
            }
        }
    }

    #[test]
    fn header_encoding_uses_the_shortest_length_form() {
        let mut out = [0u8; MAX_HEADER_LEN];
        assert_eq!(encode_header(true, Opcode::Text, 125, None, &mut out), 2);
        assert_eq!(encode_header(true, Opcode::Text, 126, None, &mut out), 4);
        assert_eq!(encode_header(true, Opcode::Text, 65535, None, &mut out), 4);
        assert_eq!(encode_header(true, Opcode::Text, 65536, None, &mut out), 10);
        assert_eq!(
            encode_header(false, Opcode::Continuation, 65536, Some([9; 4]), &mut out),
            14
        );
        assert_eq!(out, [0x00, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9]);
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        assert_eq!(header(&[0x82, 126, 0, 5]).0.payload_len, 5);
        assert_eq!(
            header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3]).0.payload_len,
            3
        );
        assert_eq!(
            header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 1, 0]).0.payload_len,
            256
        );
    }

    #[test]
    fn invalid_headers_fail_on_the_offending_byte() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(parse_header(&[0x81 | rsv]), Err(FrameError::ReservedBits));
        }
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(
                parse_header(&[0x80 | op]),
                Err(FrameError::ReservedOpcode),
                "opcode {op:#x}"
            );
        }
        for op in [0x8, 0x9, 0xA] {
            assert_eq!(
                parse_header(&[op]),
                Err(FrameError::FragmentedControl),
                "opcode {op:#x}"
            );
            assert_eq!(
                parse_header(&[0x80 | op, 126]),
                Err(FrameError::ControlTooLong)
            );
            assert_eq!(
                parse_header(&[0x80 | op, 0x80 | 127]),
                Err(FrameError::ControlTooLong)
            );
            assert_eq!(
                parse_header(&[0x80 | op, 125]).map(|h| h.map(|h| h.0.payload_len)),
                Ok(Some(125))
            );
        }
        assert_eq!(
            parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthOverflow)
        );
        assert_eq!(
            parse_header(&[0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
                .map(|h| h.map(|h| h.0.payload_len)),
            Ok(Some(i64::MAX as u64))
        );
    }

    #[test]
    fn apply_mask_matches_the_naive_loop() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..64 {
            for phase in 0..4 {
                let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let mut fast = original.clone();
                let mut naive = original.clone();
                apply_mask(&mut fast, mask, phase);
                naive_mask(&mut naive, mask, phase);
                assert_eq!(fast, naive, "len {len} phase {phase}");
                if len > 0 {
                    assert_ne!(fast, original);
                }
                apply_mask(&mut fast, mask, phase);
                assert_eq!(
                    fast, original,
                    "masking twice restores len {len} phase {phase}"
                );
            }
        }
    }

    #[test]
    fn apply_mask_takes_any_phase_modulo_4() {
        let mask = [1, 2, 4, 8];
        let mut a = [0u8; 9];
        let mut b = [0u8; 9];
        apply_mask(&mut a, mask, usize::MAX); // usize::MAX % 4 == 3: must not overflow
        apply_mask(&mut b, mask, 3);
        assert_eq!(a, b);
        assert_eq!(a, [8, 1, 2, 4, 8, 1, 2, 4, 8]);
    }

    #[test]
    fn apply_mask_in_pieces_equals_apply_mask_whole() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let original: Vec<u8> = (0..100u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        for split in 0..=original.len() {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split {split}");
        }
    }
}
