//! Byte classes as bit masks, one bit per byte, computed 16 bytes per compare:
//!
//! - [`masks`]: where the LFs and colons of a 64-byte block are: the AMI reader's
//!   structural scan, so that finding the end of a line or of a key costs a mask and
//!   a count of trailing zeros instead of a byte loop;
//! - [`json_special`]: which bytes of 16 a JSON string cannot hold as they are (the
//!   engine's event JSON checks keys and values with it as it copies them).
//!
//! The compares are SIMD through `wide`: SSE2 on x86_64 (part of its baseline, so no
//! run-time detection), NEON on aarch64, and a portable fallback elsewhere. Each is
//! checked against a byte loop for every byte value at every position.

use wide::{i8x16, u8x16};

/// The bytes one block covers.
pub const BLOCK: usize = 64;

/// Bit `i` of each mask describes byte `i` of a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Masks {
    /// `\n`.
    pub lf: u64,
    /// `:`.
    pub colon: u64,
}

/// The masks of one block.
#[inline]
pub fn masks(block: &[u8; BLOCK]) -> Masks {
    let (lf, colon) = (u8x16::splat(b'\n'), u8x16::splat(b':'));
    let mut out = Masks::default();
    for (i, lane) in block.chunks_exact(16).enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(lane);
        let v = u8x16::from(bytes);
        let shift = 16 * i;
        out.lf |= u64::from(v.simd_eq(lf).to_bitmask()) << shift;
        out.colon |= u64::from(v.simd_eq(colon).to_bitmask()) << shift;
    }
    out
}

/// Bit `i` is set iff byte `i` of `chunk` cannot go into a JSON string as it is: a
/// control character (below 0x20), `"`, `\`, or not ASCII (0x80 and up: it may be
/// valid UTF-8, but that is for a slower path to find out). One signed compare
/// catches both ends: as `i8`, 0x80..=0xFF are negative.
#[inline]
pub fn json_special(chunk: &[u8; 16]) -> u32 {
    let bytes = u8x16::from(*chunk);
    // The same register read as signed bytes (a free cast, not a per-byte map).
    let signed: i8x16 = wide::bytemuck::cast(bytes);
    let low_or_high = signed.simd_lt(i8x16::splat(0x20)).to_bitmask();
    let quote = bytes.simd_eq(u8x16::splat(b'"')).to_bitmask();
    let backslash = bytes.simd_eq(u8x16::splat(b'\\')).to_bitmask();
    low_or_high | quote | backslash
}

/// The masks of the block at `at` in `hay`; past the end of `hay` the block is
/// zeros (neither LF nor colon).
#[inline]
pub fn masks_at(hay: &[u8], at: usize) -> Masks {
    let rest = hay.get(at..).unwrap_or_default();
    match rest.first_chunk::<BLOCK>() {
        Some(block) => masks(block),
        None => {
            let mut block = [0u8; BLOCK];
            if let Some(head) = block.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            masks(&block)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(block: &[u8; BLOCK]) -> Masks {
        let bits = |want: u8| {
            block
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == want)
                .fold(0u64, |m, (i, _)| m | 1 << i)
        };
        Masks {
            lf: bits(b'\n'),
            colon: bits(b':'),
        }
    }

    /// Every byte value at every position of a block, on a background of each of
    /// the interesting bytes.
    #[test]
    fn masks_are_exact_for_every_byte_at_every_position() {
        for background in [b'a', b'\n', b':', 0, 0x80, 0xff] {
            for at in 0..BLOCK {
                for value in 0..=255u8 {
                    let mut block = [background; BLOCK];
                    block[at] = value;
                    assert_eq!(
                        masks(&block),
                        reference(&block),
                        "byte {value:#04x} at {at} on {background:#04x}"
                    );
                }
            }
        }
    }

    #[test]
    fn json_special_is_exact_for_every_byte_at_every_position() {
        for background in [b'a', b'"', 0, 0x80, 0x7f] {
            for at in 0..16 {
                for value in 0..=255u8 {
                    let mut chunk = [background; 16];
                    chunk[at] = value;
                    let want = chunk.iter().enumerate().fold(0u32, |m, (i, &b)| {
                        let special = !(0x20..0x80).contains(&b) || b == b'"' || b == b'\\';
                        m | u32::from(special) << i
                    });
                    assert_eq!(
                        json_special(&chunk),
                        want,
                        "{value:#04x} at {at} on {background:#04x}"
                    );
                }
            }
        }
    }

    /// At every start of buffers of every length up to three blocks: the block
    /// there, zero-padded past the end.
    #[test]
    fn masks_at_reads_the_block_there_and_pads_the_end_with_zeros() {
        let text: Vec<u8> = b"Event: Newchannel\r\nChannel: PJSIP/100-0001\r\nNo colon\n\n:v\r\n"
            .iter()
            .copied()
            .cycle()
            .take(3 * BLOCK)
            .collect();
        for len in 0..=text.len() {
            let hay = &text[..len];
            for at in 0..=len + 1 {
                let mut block = [0u8; BLOCK];
                for (i, b) in hay.iter().skip(at).take(BLOCK).enumerate() {
                    block[i] = *b;
                }
                assert_eq!(masks_at(hay, at), reference(&block), "len {len} at {at}");
            }
        }
    }
}
