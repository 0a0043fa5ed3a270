//! The message every subscriber receives, `{"topic":"a","seq":7,"data":<payload>}`,
//! and the publish acknowledgement `{"topic":"a","seq":7}`. Owns the decision of
//! how a published body becomes the `data` value (JSON as is, anything else as a
//! JSON string) and the JSON string escaping used by every writer in this crate.

use std::borrow::Cow;

use crate::swar::{load_word, word_at};

/// Why a published body cannot be carried in an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is neither JSON nor UTF-8 text")]
    NotUtf8,
}

/// The JSON `data` value for a published body.
///
/// * A body that is exactly one JSON value (validated fully, trailing garbage
///   rejected) is used as is, borrowed, minus surrounding JSON whitespace.
/// * Any other UTF-8 body becomes a JSON string (owned); an empty body is `""`.
/// * A body that is not UTF-8 is an error.
///
/// UTF-8 is checked first: a body such as `"\xff"` is not accepted as JSON even
/// though its quotes and escapes are well formed. serde_json's nesting limit
/// (128) applies, so a valid but deeper value is carried as a string. So is a body
/// with a number no `f64` holds (`1e999`): the grammar allows it, but strict parsers
/// (serde_json's `Value`, many others) refuse the whole document, and every
/// subscriber must be able to read every envelope.
pub fn data_json(body: &[u8]) -> Result<Cow<'_, [u8]>, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotUtf8)?;
    if serde_json::from_str::<Portable>(text).is_ok() {
        return Ok(Cow::Borrowed(trim_json_whitespace(body)));
    }
    let mut out = Vec::with_capacity(body.len().saturating_add(2));
    write_json_string(&mut out, text);
    Ok(Cow::Owned(out))
}

/// Validates a JSON document as strict parsers read it, without building it: every
/// value goes through `deserialize_any`, so numbers are parsed (and range-checked)
/// rather than skipped as `IgnoredAny` does.
struct Portable;

impl<'de> serde::Deserialize<'de> for Portable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortableVisitor)
    }
}

struct PortableVisitor;

impl<'de> serde::de::Visitor<'de> for PortableVisitor {
    type Value = Portable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Portable, E> {
        Ok(Portable)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Portable, E> {
        Ok(Portable)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Portable, E> {
        Ok(Portable)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Portable, E> {
        if v.is_finite() {
            Ok(Portable)
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<Portable, E> {
        Ok(Portable)
    }
    fn visit_unit<E>(self) -> Result<Portable, E> {
        Ok(Portable)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Portable, A::Error> {
        while seq.next_element::<Portable>()?.is_some() {}
        Ok(Portable)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Portable, A::Error> {
        while map.next_entry::<Portable, Portable>()?.is_some() {}
        Ok(Portable)
    }
}

fn is_json_whitespace(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_json_whitespace(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_json_whitespace(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_json_whitespace(last) {
            break;
        }
        s = rest;
    }
    s
}

/// True if `bytes` holds a byte that [`write_json_string`] escapes or looks at twice
/// (a control byte, a quote, a backslash, or `0xE2`, the first byte of U+2028 and
/// U+2029); eight bytes at a time.
pub fn needs_escape(bytes: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Exact for "is there one": a borrow only starts at a flagged byte.
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    let flagged = |x: u64| {
        let control = x.wrapping_sub(LO * 0x20) & !x & HI != 0;
        control | zero(x ^ (LO * 0x22)) | zero(x ^ (LO * 0x5c)) | zero(x ^ (LO * 0xe2))
    };
    let n = bytes.len();
    if n < 8 {
        // Padded with a byte that needs nothing.
        let pad = (LO * u64::from(b'a'))
            .checked_shl(8 * n as u32)
            .unwrap_or(0);
        return flagged(load_word(bytes) | pad);
    }
    // Whole words, the last one overlapping the one before.
    let mut at = 0;
    while at + 8 < n {
        if flagged(word_at(bytes, at)) {
            return true;
        }
        at += 8;
    }
    flagged(word_at(bytes, n - 8))
}

/// Appends `s` as a JSON string literal, quotes included. Escapes `"`, `\`, every
/// control character (`\b \t \n \f \r` by name, the rest as `\u00XX`), and U+2028 /
/// U+2029 as `\u2028` / `\u2029` so the output is also safe inside JavaScript.
/// Runs of bytes that need no escaping are copied in one go.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len().saturating_add(2));
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut run_start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let unicode: [u8; 6];
        let (escape, width): (&[u8], usize) = match b {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            0x08 => (b"\\b", 1),
            0x0c => (b"\\f", 1),
            0x00..=0x1f => {
                let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]);
                unicode = [b'\\', b'u', b'0', b'0', hi, lo];
                (&unicode, 1)
            }
            // U+2028 is E2 80 A8 and U+2029 is E2 80 A9.
            0xe2 => match bytes.get(i + 1..i + 3) {
                Some([0x80, 0xa8]) => (b"\\u2028", 3),
                Some([0x80, 0xa9]) => (b"\\u2029", 3),
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(bytes.get(run_start..i).unwrap_or_default());
        out.extend_from_slice(escape);
        i += width;
        run_start = i;
    }
    out.extend_from_slice(bytes.get(run_start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends the decimal digits of `n` without allocating.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Appends the envelope of a message at stream position `pos`:
/// `{"topic":<topic>,"seq":<seq>,"pos":"<pos>","data":<data_json>}`, no spaces.
/// `data_json` must already be JSON (see [`data_json`]); it is copied verbatim.
pub fn write_envelope(
    out: &mut Vec<u8>,
    topic: &str,
    seq: u64,
    pos: crate::position::Position,
    data_json: &[u8],
) {
    out.reserve(
        topic
            .len()
            .saturating_add(data_json.len())
            .saturating_add(80),
    );
    out.extend_from_slice(b"{\"topic\":");
    write_json_string(out, topic);
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, seq);
    out.extend_from_slice(b",\"pos\":\"");
    pos.write(out);
    out.extend_from_slice(b"\",\"data\":");
    out.extend_from_slice(data_json);
    out.push(b'}');
}

/// Appends a reset notice, `{"topic":<topic>,"reset":true,"seq":<seq>}` (`seq` left
/// out when `None`): messages of `topic` (a topic, or a pattern when the loss cannot be
/// told per topic) after the client's position may be missing, up to `seq` included.
pub fn write_reset(out: &mut Vec<u8>, topic: &str, seq: Option<u64>) {
    out.extend_from_slice(b"{\"topic\":");
    write_json_string(out, topic);
    out.extend_from_slice(b",\"reset\":true");
    if let Some(seq) = seq {
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, seq);
    }
    out.push(b'}');
}

/// Appends the publish acknowledgement `{"topic":<topic>,"seq":<seq>}` (the body
/// of the HTTP 202 answer to a publish).
pub fn write_publish_ack(out: &mut Vec<u8>, topic: &str, seq: u64) {
    out.extend_from_slice(b"{\"topic\":");
    write_json_string(out, topic);
    out.extend_from_slice(b",\"seq\":");
    write_u64(out, seq);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn json_string(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        out
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
    }

    #[test]
    fn escapes_every_control_char() {
        for c in 0u8..0x20 {
            let s = format!("a{}b", c as char);
            let out = json_string(&s);
            let text = std::str::from_utf8(&out).unwrap();
            assert!(
                !text.bytes().any(|b| b < 0x20),
                "raw control byte {c:#04x} in {text}"
            );
            assert_eq!(parse(&out), Value::String(s.clone()), "byte {c:#04x}");
        }
        assert_eq!(json_string("\n\r\t\x08\x0c"), br#""\n\r\t\b\f""#);
        assert_eq!(json_string("\0\x01\x1f"), br#""\u0000\u0001\u001f""#);
    }

    #[test]
    fn escapes_quotes_backslash_and_line_separators() {
        assert_eq!(json_string(r#"say "hi" \o/"#), br#""say \"hi\" \\o/""#);
        assert_eq!(json_string("a\u{2028}b\u{2029}c"), br#""a\u2028b\u2029c""#);
        assert_eq!(json_string("\u{2028}"), br#""\u2028""#);
        assert_eq!(json_string("\u{2029}\u{2028}"), br#""\u2029\u2028""#);
        // Neighbours of U+2028 that share bytes with it stay raw.
        for s in [
            "\u{2027}",
            "\u{202a}",
            "\u{20ac}",
            "\u{a8}",
            "\u{3a8}",
            "é€\u{1f600}",
        ] {
            let out = json_string(s);
            assert_eq!(out, format!("\"{s}\"").into_bytes(), "{s:?}");
        }
        for s in ["x\u{2028}\u{2028}y", "\"\u{2029}\\", "\u{1f600}\u{2028}é"] {
            assert_eq!(parse(&json_string(s)), Value::String(s.into()), "{s:?}");
        }
    }

    #[test]
    fn plain_ascii_unchanged() {
        assert_eq!(json_string("hello world"), b"\"hello world\"");
        assert_eq!(json_string(""), b"\"\"");
        assert_eq!(json_string("\x7f"), b"\"\x7f\"");
    }

    #[test]
    fn string_round_trip_on_all_chars_below_0x3000() {
        let s: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert_eq!(parse(&json_string(&s)), Value::String(s));
    }

    #[test]
    fn data_json_detection_table() {
        // (body, expected data bytes, borrowed?)
        let cases: &[(&[u8], &[u8], bool)] = &[
            (br#"{"a":1}"#, br#"{"a":1}"#, true),
            (br#"[1,2,{"b":null}]"#, br#"[1,2,{"b":null}]"#, true),
            (b"42", b"42", true),
            (b"-1.5e3", b"-1.5e3", true),
            (b"true", b"true", true),
            (b"null", b"null", true),
            (br#""hi""#, br#""hi""#, true),
            (b" \t\r\n{\"a\" : 1}\n ", b"{\"a\" : 1}", true),
            (b"hello", br#""hello""#, false),
            (b"", br#""""#, false),
            (b"   ", br#""   ""#, false),
            (b"{\"a\":1} trailing", br#""{\"a\":1} trailing""#, false),
            (b"{\"a\":1}{}", br#""{\"a\":1}{}""#, false),
            (b"{a:1}", br#""{a:1}""#, false),
            (b"tru", br#""tru""#, false),
            (b"01", br#""01""#, false),
            (b"[1,]", br#""[1,]""#, false),
            (b"\"unterminated", br#""\"unterminated""#, false),
            ("línea\n2".as_bytes(), r#""línea\n2""#.as_bytes(), false),
            // Grammatical JSON that strict parsers refuse (found by the envelope fuzzer).
            (b"3E444444443", br#""3E444444443""#, false),
            (br#"{"x":[1e999]}"#, br#""{\"x\":[1e999]}""#, false),
            (b"1e308", b"1e308", true),
            (
                b"123456789012345678901234567890",
                b"123456789012345678901234567890",
                true,
            ),
        ];
        for &(body, want, borrowed) in cases {
            let got = data_json(body).unwrap();
            assert_eq!(
                &*got,
                want,
                "body {:?}: got {}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&got)
            );
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{body:?}");
            parse(&got);
        }
    }

    #[test]
    fn data_json_non_utf8() {
        assert_eq!(data_json(b"\xff\xfe"), Err(EnvelopeError::NotUtf8));
        assert_eq!(data_json(b"abc\xc3"), Err(EnvelopeError::NotUtf8));
        // Well-formed JSON syntax around invalid UTF-8 is still rejected.
        assert_eq!(data_json(b"\"\xff\""), Err(EnvelopeError::NotUtf8));
    }

    #[test]
    fn data_json_text_is_carried_as_the_same_string() {
        let body = "not json: \"quotes\", \\ and \u{2028} and \x01";
        let got = data_json(body.as_bytes()).unwrap();
        assert_eq!(parse(&got), Value::String(body.into()));
    }

    #[test]
    fn positioned_envelope_and_reset_exact_bytes() {
        let pos = crate::position::Position {
            epoch: 0xab,
            gseq: 42,
        };
        let mut out = Vec::new();
        write_envelope(&mut out, "a.b", 7, pos, b"[1]");
        assert_eq!(
            out,
            br#"{"topic":"a.b","seq":7,"pos":"000000ab-42","data":[1]}"#
        );
        out.clear();
        write_reset(&mut out, "a.b", Some(9));
        assert_eq!(out, br#"{"topic":"a.b","reset":true,"seq":9}"#);
        out.clear();
        write_reset(&mut out, "a.*", None);
        assert_eq!(out, br#"{"topic":"a.*","reset":true}"#);
    }

    const POS: crate::position::Position = crate::position::Position {
        epoch: 0x1f0c_93aa,
        gseq: 57,
    };

    #[test]
    fn envelope_exact_bytes() {
        let mut out = Vec::new();
        write_envelope(&mut out, "a", 7, POS, b"{\"x\":1}");
        assert_eq!(
            out,
            br#"{"topic":"a","seq":7,"pos":"1f0c93aa-57","data":{"x":1}}"#
        );
        out.clear();
        write_envelope(&mut out, "ami.endpoint.PJSIP/101", 0, POS, b"\"hi\"");
        assert_eq!(
            out,
            br#"{"topic":"ami.endpoint.PJSIP/101","seq":0,"pos":"1f0c93aa-57","data":"hi"}"#
        );
    }

    #[test]
    fn envelope_parses_back() {
        let bodies: &[&[u8]] = &[b"{\"k\":[1,2]}", b"plain text", b"", b"3.25", b" [true] "];
        for (i, &body) in bodies.iter().enumerate() {
            for seq in [
                0,
                1,
                9,
                10,
                99,
                12345,
                u64::from(u32::MAX),
                u64::MAX - 1,
                u64::MAX,
            ] {
                let data = data_json(body).unwrap();
                let mut out = Vec::new();
                write_envelope(&mut out, "chat.lobby", seq, POS, &data);
                let v = parse(&out);
                let want_data: Value = serde_json::from_slice(body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8(body.to_vec()).unwrap()));
                assert_eq!(
                    v,
                    json!({"topic": "chat.lobby", "seq": seq, "pos": "1f0c93aa-57", "data": want_data}),
                    "{i}"
                );
                assert_eq!(out.iter().filter(|&&b| b == b' ').count(), {
                    // no spaces outside the data itself
                    data.iter().filter(|&&b| b == b' ').count()
                });
            }
        }
    }

    #[test]
    fn seq_digits_exact() {
        for (seq, text) in [
            (0u64, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, seq);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn envelope_appends() {
        let mut out = b"prefix".to_vec();
        write_envelope(&mut out, "t", 1, POS, b"1");
        assert_eq!(
            out,
            br#"prefix{"topic":"t","seq":1,"pos":"1f0c93aa-57","data":1}"#
        );
    }

    #[test]
    fn publish_ack() {
        let mut out = Vec::new();
        write_publish_ack(&mut out, "a", 7);
        assert_eq!(out, br#"{"topic":"a","seq":7}"#);
        out.clear();
        write_publish_ack(&mut out, "q\"uote", u64::MAX);
        assert_eq!(parse(&out), json!({"topic": "q\"uote", "seq": u64::MAX}));
    }
}
