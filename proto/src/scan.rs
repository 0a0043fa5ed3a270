//! The structural scan of the AMI reader: where the LFs and colons of a buffer are,
//! found 64 bytes at a time as one bit per byte, so that finding the end of a line or
//! of a key costs a mask and a count of trailing zeros instead of a byte loop.
//!
//! The compares are SIMD through `wide`: 16 bytes at a time with SSE2 on x86_64
//! (part of its baseline, so no run-time detection), NEON on aarch64, and a
//! portable fallback elsewhere. [`masks`] is checked against a byte loop for every
//! byte value at every position.

use wide::u8x16;

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
