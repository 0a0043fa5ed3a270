//! The request parser never panics, never claims more bytes than it has, and a complete
//! request's head is complete at exactly `head_len` (a shorter prefix is incomplete or
//! fails the same way a malformed one would, never a different complete request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::http1::{EMPTY_HEADER, Limits, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head_bytes: 1024,
        max_headers: 16,
    };
    let mut headers = [EMPTY_HEADER; 16];
    let Ok(Some(req)) = parse_request(data, &limits, &mut headers) else {
        return;
    };
    let head_len = req.head_len;
    assert!(head_len <= data.len() && head_len <= limits.max_head_bytes);
    assert!(req.path.len() <= req.target.len());
    let mut again = [EMPTY_HEADER; 16];
    let req2 = parse_request(&data[..head_len], &limits, &mut again)
        .expect("the head alone parses")
        .expect("the head alone is complete");
    assert_eq!(req2.head_len, head_len);
    let mut shorter = [EMPTY_HEADER; 16];
    if let Ok(Some(_)) = parse_request(&data[..head_len - 1], &limits, &mut shorter) {
        panic!("a strict prefix of the head parsed as a complete request");
    }
});
