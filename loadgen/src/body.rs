//! The body of every message loadgen publishes: a JSON object carrying the message's
//! per-topic sequence number and its *scheduled* publish time, padded to the requested
//! size, e.g. `{"lg_seq":7,"lg_at_ns":1795264496000000000,"pad":"xxxx"}`.
//!
//! Receivers find both numbers by their keys anywhere in what arrives, so the same
//! decoder reads a Switchboard envelope (`{"topic":..,"seq":..,"data":<this body>}`) and
//! the raw body a peer server (Nchan, a Node `ws` server) relays. The keys cannot occur
//! in a Switchboard topic (topics exclude `"`), so the envelope never confuses them.

/// Key of the per-topic sequence number (1, 2, 3, ... per topic).
pub const SEQ_KEY: &[u8] = b"\"lg_seq\":";
/// Key of the scheduled publish time, nanoseconds since the Unix epoch.
pub const AT_KEY: &[u8] = b"\"lg_at_ns\":";

/// The body without padding: its length is the smallest `size` honoured exactly.
fn unpadded(out: &mut Vec<u8>, seq: u64, at_ns: u64) {
    out.extend_from_slice(b"{");
    out.extend_from_slice(SEQ_KEY);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",");
    out.extend_from_slice(AT_KEY);
    out.extend_from_slice(at_ns.to_string().as_bytes());
}

/// Appends the body of message `seq` scheduled at `at_ns` to `out`: exactly `size`
/// bytes when `size` is at least [`min_size`] for these numbers, else the unpadded body.
/// Returns the body's length.
pub fn encode(out: &mut Vec<u8>, seq: u64, at_ns: u64, size: usize) -> usize {
    let start = out.len();
    unpadded(out, seq, at_ns);
    // `,"pad":""}` is 10 bytes; without room for it the object just closes.
    const PAD_OVERHEAD: usize = 10;
    let used = out.len() - start;
    if size >= used + PAD_OVERHEAD {
        out.extend_from_slice(b",\"pad\":\"");
        out.resize(out.len() + (size - used - PAD_OVERHEAD), b'x');
        out.extend_from_slice(b"\"}");
    } else {
        out.push(b'}');
    }
    out.len() - start
}

/// The shortest body for these numbers (a requested size below it is not honoured).
pub fn min_size(seq: u64, at_ns: u64) -> usize {
    let mut v = Vec::with_capacity(48);
    unpadded(&mut v, seq, at_ns);
    v.len() + 1
}

/// `(seq, at_ns)` from a received message (a body, an envelope around one, or an SSE
/// event's data); `None` when either key is missing or not followed by digits.
pub fn decode(msg: &[u8]) -> Option<(u64, u64)> {
    Some((number_after(msg, SEQ_KEY)?, number_after(msg, AT_KEY)?))
}

/// A server's `reset` message (`{"topic":..,"reset":true,..}`): the server says messages
/// of that topic were skipped.
pub fn is_reset(msg: &[u8]) -> bool {
    find(msg, b"\"reset\":true").is_some()
}

/// One of the server's own messages (`{"op":"hello",..}`, op replies): no delivery.
pub fn is_server_op(msg: &[u8]) -> bool {
    msg.starts_with(b"{\"op\":")
}

fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    let digits = hay.get(at..)?;
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// First position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if hay.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_are_told_apart_from_deliveries() {
        let hello = br#"{"op":"hello","id":"0100000007e38766094dbfe0163696cb402620464d"}"#;
        let reset = br#"{"topic":"a","reset":true,"seq":9}"#;
        let mut body = Vec::new();
        encode(&mut body, 3, 1_700_000_000_000_000_000, 100);
        let envelope = [
            br#"{"topic":"a","seq":3,"pos":"1f0c93aa-42","data":"#.as_slice(),
            &body,
            b"}",
        ]
        .concat();
        assert!(is_server_op(hello) && !is_reset(hello) && decode(hello).is_none());
        assert!(is_reset(reset) && !is_server_op(reset) && decode(reset).is_none());
        assert_eq!(decode(&envelope), Some((3, 1_700_000_000_000_000_000)));
        assert!(!is_reset(&envelope) && !is_server_op(&envelope));
    }

    #[test]
    fn encodes_exact_sizes_and_decodes_back() {
        let at = 1_795_264_496_123_456_789;
        for size in [0, 10, 40, 60, 61, 100, 1000, 65_536] {
            let mut out = b"prefix".to_vec();
            let n = encode(&mut out, 42, at, size);
            let body = &out[6..];
            assert_eq!(n, body.len());
            if size >= min_size(42, at) + 9 {
                assert_eq!(body.len(), size, "size {size}");
            } else {
                assert_eq!(body.len(), min_size(42, at), "size {size}");
            }
            let v: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
            assert_eq!(v["lg_seq"], 42);
            assert_eq!(v["lg_at_ns"].as_u64(), Some(at));
            assert_eq!(decode(body), Some((42, at)));
        }
    }

    #[test]
    fn decodes_inside_an_envelope_and_an_sse_data_line() {
        let mut body = Vec::new();
        encode(&mut body, 7, 99, 80);
        let body = String::from_utf8(body).unwrap();
        let envelope = format!(r#"{{"topic":"lg.a.3","seq":7,"data":{body}}}"#);
        assert_eq!(decode(envelope.as_bytes()), Some((7, 99)));
        assert_eq!(decode(body.as_bytes()), Some((7, 99)));
    }

    #[test]
    fn refuses_what_is_not_a_body() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(br#"{"op":"subscribed","topics":["a"]}"#), None);
        assert_eq!(decode(br#"{"lg_seq":1}"#), None);
        assert_eq!(decode(br#"{"lg_seq":x,"lg_at_ns":5}"#), None);
        assert_eq!(
            decode(br#"{"lg_seq":99999999999999999999999,"lg_at_ns":5}"#),
            None
        );
        assert_eq!(decode(br#""lg_se"lg_seq":3,"lg_at_ns":4"#), Some((3, 4)));
    }
}
