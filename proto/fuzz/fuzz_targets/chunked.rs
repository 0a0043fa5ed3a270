//! The chunked decoder gives the same body (or the same error) whole and byte by byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::http1::{BodyError, ChunkedDecoder};

fn whole(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut out = Vec::new();
    let d = ChunkedDecoder::new().decode(input, &mut out, 4096)?;
    Ok((out, d.consumed, d.done))
}

fn bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut consumed = 0;
    for b in input {
        let d = dec.decode(std::slice::from_ref(b), &mut out, 4096)?;
        consumed += d.consumed;
        if d.done {
            return Ok((out, consumed, true));
        }
    }
    Ok((out, consumed, false))
}

fuzz_target!(|data: &[u8]| {
    let a = whole(data);
    let b = bytewise(data);
    assert_eq!(a, b);
    if let Ok((body, consumed, _)) = a {
        assert!(consumed <= data.len() && body.len() <= 4096);
    }
});
