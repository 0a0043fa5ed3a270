//! AMI events as JSON (the EVENT object of PROTOCOL.md "PBX topics") and the event filter that
//! decides what reaches the `ami.*` topics.
//!
//! [`write_event_json`] writes a message's fields as one object: keys verbatim in
//! first-appearance order, values as text ([`decode_text`]), a repeated key as an
//! array of its values at its first position, lines without a colon dropped. Up to
//! [`INLINE_FIELDS`] headers it allocates nothing but the growth of `out` (and the
//! text of a value that needs escaping and is not UTF-8).
//!
//! [`EventFilter`] drops noise events by name and every event of the `security` or
//! `system` class.

use std::borrow::Cow;

use smallvec::SmallVec;
use switchboard_proto::ami::{Message, NameSet, decode_text};
use switchboard_proto::envelope::{needs_escape, write_json_string};
use switchboard_proto::scan::json_special;
use switchboard_proto::swar::load_word;

/// Event names dropped by [`EventFilter::default`]: chatty and useless to a browser.
pub const DEFAULT_NOISE: [&str; 6] = [
    "VarSet",
    "Newexten",
    "RTCPSent",
    "RTCPReceived",
    "Cdr",
    "CEL",
];

/// Headers a [`FieldList`] holds without allocating (real events have 15-30).
pub const INLINE_FIELDS: usize = 48;

/// One header of a message (a line with a colon).
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The key's first eight bytes as a little-endian word, zero-padded: one integer
    /// compare rules out nearly every unequal key.
    pub head: u64,
}

/// A message's bytes and, when they are UTF-8 (validated once, whole), the same as
/// text: a key or value of the message is then text for free.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text<'a> {
    raw: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Text<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Text {
            raw,
            text: std::str::from_utf8(raw).ok(),
        }
    }

    /// `part` as text: borrowed from the message's text when `part` is a slice of a
    /// UTF-8 message (found by its address), else [`decode_text`]. Exact: an offset
    /// and length within the message mean `part` lies in the message's own memory
    /// (no other live slice can), so its bytes are those of the text returned.
    #[inline]
    pub fn of(&self, part: &'a [u8]) -> Cow<'a, str> {
        let at = (part.as_ptr() as usize).wrapping_sub(self.raw.as_ptr() as usize);
        match self
            .text
            .and_then(|t| t.get(at..at.wrapping_add(part.len())))
        {
            Some(t) => Cow::Borrowed(t),
            None => decode_text(part),
        }
    }
}

/// A message's headers, read once for the several passes of routing an event (the
/// model's channel block, the JSON, the filter).
#[derive(Default)]
pub struct FieldList<'a> {
    /// The message as text.
    pub text: Text<'a>,
    headers: SmallVec<[Header<'a>; INLINE_FIELDS]>,
    /// Some key appears more than once (compared exactly).
    repeats: bool,
}

impl<'a> FieldList<'a> {
    /// An empty list, to [`read`](Self::read) a message into (in place: the inline
    /// array is large, and a list is not moved once filled).
    #[inline]
    pub fn new() -> Self {
        FieldList {
            text: Text::default(),
            headers: SmallVec::new(),
            repeats: false,
        }
    }

    /// Reads the headers of `msg`. Repeats are found with a 64-bit filter of the
    /// keys' heads and lengths: only a key whose bit is already set is compared with
    /// the keys before it.
    #[inline]
    pub fn read(&mut self, msg: &Message<'a>) {
        self.text = Text::new(msg.raw());
        self.headers.clear();
        self.repeats = false;
        let mut seen = 0u64;
        for f in msg.fields() {
            if !f.has_colon() {
                continue;
            }
            let key = f.key();
            let head = load_word(key);
            let hash = (head ^ key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let bit = 1u64 << (hash >> 58);
            if seen & bit != 0 && !self.repeats {
                self.repeats = self.headers.iter().any(|h| h.head == head && h.key == key);
            }
            seen |= bit;
            self.headers.push(Header {
                key,
                value: f.value(),
                head,
            });
        }
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }
}

/// Appends the EVENT object of `msg` (see the module docs) to `out`.
pub fn write_event_json(out: &mut Vec<u8>, msg: &Message<'_>) {
    let mut list = FieldList::new();
    list.read(msg);
    write_event_json_from(out, &list);
}

/// [`write_event_json`] from the headers already read.
pub fn write_event_json_from(out: &mut Vec<u8>, list: &FieldList<'_>) {
    let start = out.len();
    if !list.repeats && write_plain(out, list) {
        return;
    }
    out.truncate(start);
    write_general(out, list);
}

/// The longest piece [`write_plain`] copies in one go (two 16-byte chunks).
const PIECE: usize = 32;

/// The common case: no key repeats and every key and value is printable ASCII other
/// than `"` and `\`, so each goes into its JSON string as it is. The object's length
/// is known beforehand: room is made for it (and [`PIECE`] bytes more), then every
/// key and value is copied with the bytes after it in the message as [`PIECE`]
/// bytes, in two 16-byte chunks checked as they go ([`json_special`], masked to the
/// piece), and the punctuation after it (`":"`, `","`) as one word, each overwriting
/// what the copy before it wrote past its piece. Longer pieces, and those that end
/// within [`PIECE`] bytes of the end of the message, take a general copy. False if
/// a byte needs escaping (`out` then holds garbage past its old length).
fn write_plain(out: &mut Vec<u8>, list: &FieldList<'_>) -> bool {
    /// `{"`, `":"`, `","` and `"}` as little-endian words (the bytes past them are
    /// overwritten).
    const OPEN: u64 = u64::from_le_bytes(*b"{\"\0\0\0\0\0\0");
    const COLON: u64 = u64::from_le_bytes(*b"\":\"\0\0\0\0\0");
    const NEXT: u64 = u64::from_le_bytes(*b"\",\"\0\0\0\0\0");
    const CLOSE: u64 = u64::from_le_bytes(*b"\"}\0\0\0\0\0\0");
    let headers = list.headers();
    if headers.is_empty() {
        out.extend_from_slice(b"{}");
        return true;
    }
    let raw = list.text.raw;
    let text: usize = headers.iter().map(|h| h.key.len() + h.value.len()).sum();
    // `{` `}`, and per header `"k":"v"` and a comma (one too many).
    let len = 2 + text + 6 * headers.len();
    let start = out.len();
    out.resize(start + len + PIECE, 0);
    let Some(dst) = out.get_mut(start..) else {
        return false;
    };
    let mut special = 0;
    store(dst, 0, OPEN);
    let mut at = 2;
    for h in headers {
        special |= copy_piece(dst, at, raw, h.key);
        at += h.key.len();
        store(dst, at, COLON);
        at += 3;
        special |= copy_piece(dst, at, raw, h.value);
        at += h.value.len();
        store(dst, at, NEXT);
        at += 3;
    }
    // The last `","` becomes `"}`.
    at -= 3;
    store(dst, at, CLOSE);
    out.truncate(start + at + 2);
    special == 0
}

/// Copies `piece` to `dst[at..]` and returns its [`json_special`] bits. A piece of
/// the message `raw` (found by its address, as [`Text::of`] does: in `raw`'s memory,
/// it holds `raw`'s bytes) of at most [`PIECE`] bytes, with [`PIECE`] bytes of `raw`
/// from its start, is copied as those [`PIECE`] bytes (`dst` has room for them).
#[inline]
fn copy_piece(dst: &mut [u8], at: usize, raw: &[u8], piece: &[u8]) -> u32 {
    let offset = (piece.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
    let n = piece.len();
    let window = raw
        .get(offset..)
        .and_then(<[u8]>::first_chunk::<PIECE>)
        .filter(|_| n <= PIECE);
    let target = dst.get_mut(at..).and_then(<[u8]>::first_chunk_mut::<PIECE>);
    match (window, target) {
        (Some(window), Some(target)) => {
            *target = *window;
            let (lo, hi) = window.split_at(PIECE / 2);
            let lo = lo.first_chunk().map_or(0, json_special);
            let hi = hi.first_chunk().map_or(0, json_special);
            (lo | hi << 16) & mask(n)
        }
        _ => copy_long(dst, at, piece),
    }
}

/// The bits of the first `n` (at most 32) bytes.
#[inline]
fn mask(n: usize) -> u32 {
    u32::MAX.checked_shr(32 - n as u32).unwrap_or(0)
}

/// [`copy_piece`] for a long piece, or one near the end of its message.
#[cold]
fn copy_long(dst: &mut [u8], at: usize, piece: &[u8]) -> u32 {
    if let Some(d) = dst.get_mut(at..at + piece.len()) {
        d.copy_from_slice(piece);
    }
    let mut special = 0;
    for part in piece.chunks(16) {
        let mut chunk = [b'a'; 16];
        if let Some(c) = chunk.get_mut(..part.len()) {
            c.copy_from_slice(part);
        }
        special |= json_special(&chunk);
    }
    special
}

#[inline]
fn store(dst: &mut [u8], at: usize, w: u64) {
    if let Some(d) = dst.get_mut(at..).and_then(<[u8]>::first_chunk_mut::<8>) {
        *d = w.to_le_bytes();
    }
}

/// Any message: a repeated key becomes an array of its values at its first
/// position; strings are escaped as needed, and bytes that are not UTF-8 are read as
/// Latin-1 ([`decode_text`]).
fn write_general(out: &mut Vec<u8>, list: &FieldList<'_>) {
    let utf8 = list.text.text.is_some();
    let headers = list.headers();
    let mut done: SmallVec<[bool; INLINE_FIELDS]> = smallvec::smallvec![false; headers.len()];
    out.push(b'{');
    let mut first = true;
    for (i, h) in headers.iter().enumerate() {
        if done.get(i).copied().unwrap_or(true) {
            continue;
        }
        let same = |g: &Header<'_>| g.head == h.head && g.key == h.key;
        let repeated = list.repeats && headers.iter().skip(i + 1).any(same);
        if !first {
            out.push(b',');
        }
        first = false;
        put(out, h.key, utf8);
        out.push(b':');
        if !repeated {
            put(out, h.value, utf8);
            continue;
        }
        out.push(b'[');
        put(out, h.value, utf8);
        for (j, g) in headers.iter().enumerate().skip(i + 1) {
            if same(g) {
                if let Some(d) = done.get_mut(j) {
                    *d = true;
                }
                out.push(b',');
                put(out, g.value, utf8);
            }
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Writes AMI bytes as a JSON string: copied as they are when `utf8` (they are
/// known to be UTF-8) and nothing needs escaping, else through
/// [`write_json_string`] (which also escapes U+2028/U+2029, hence the `0xE2` test).
fn put(out: &mut Vec<u8>, bytes: &[u8], utf8: bool) {
    if utf8 && !needs_escape(bytes) {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        write_json_string(out, &decode_text(bytes));
    }
}

/// Which events are published: not noise (by name, ASCII case-insensitive), not of
/// the `security` or `system` class. Noise and class-filtered events still update
/// the state model.
#[derive(Debug, Clone)]
pub struct EventFilter {
    noise: NameSet,
}

impl Default for EventFilter {
    /// The [`DEFAULT_NOISE`] names.
    fn default() -> Self {
        Self::new(&DEFAULT_NOISE.map(str::to_owned))
    }
}

impl EventFilter {
    /// A filter with these noise event names (empty: no noise).
    pub fn new(noise: &[String]) -> Self {
        Self {
            noise: NameSet::new(noise),
        }
    }

    /// The noise event names, as given.
    pub fn noise(&self) -> Vec<String> {
        self.noise
            .names()
            .map(|n| decode_text(n).into_owned())
            .collect()
    }

    /// True if `name` is a noise event name.
    pub fn is_noise(&self, name: &[u8]) -> bool {
        self.noise.contains(name)
    }

    /// True if `msg` is an event that may be published: not noise, and its
    /// `Privilege:` (if any) holds neither `security` nor `system`.
    pub fn publishes(&self, msg: &Message<'_>) -> bool {
        msg.event()
            .is_some_and(|name| !self.is_noise(name) && Self::class_allowed(msg.get("Privilege")))
    }

    /// True unless a `Privilege:` value (if any) names the `security` or `system`
    /// class.
    pub fn class_allowed(privilege: Option<&[u8]>) -> bool {
        privilege.is_none_or(|p| !restricted_class(p))
    }
}

/// True if a `Privilege:` value names the `security` or `system` class.
fn restricted_class(privilege: &[u8]) -> bool {
    privilege.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        item.eq_ignore_ascii_case(b"system") || item.eq_ignore_ascii_case(b"security")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::ami::{Item, Parser};

    /// Parses one client-role message (no banner) and hands it to `f`.
    fn with_msg<R>(raw: &[u8], f: impl FnOnce(&Message<'_>) -> R) -> R {
        let mut p = Parser::client().skip_banner();
        match p.parse(raw) {
            Ok((_, Some(Item::Message(m)))) => f(&m),
            other => panic!("not a message: {other:?}"),
        }
    }

    fn json(raw: &[u8]) -> String {
        with_msg(raw, |m| {
            let mut out = Vec::new();
            write_event_json(&mut out, m);
            String::from_utf8(out).expect("utf-8")
        })
    }

    /// The fast path and the general one write the same object for every byte value at
    /// every position of keys and values of every length (chunk and piece boundaries
    /// included), in the middle of a message and at its end (where the copy cannot
    /// take the bytes after the piece).
    #[test]
    fn fast_and_general_paths_agree() {
        for len in 1..=40 {
            for at in 0..len {
                for b in (0..=255u8)
                    .step_by(3)
                    .chain([b'"', b'\\', 0x7f, 0x80, 0xe2])
                {
                    let mut value = vec![b'v'; len];
                    value[at] = b;
                    let mut key = vec![b'K'; len];
                    key[at] = if b.is_ascii_alphanumeric() { b } else { b'k' };
                    for tail in [true, false] {
                        let mut raw = b"Event: X\r\n".to_vec();
                        raw.extend_from_slice(&key);
                        raw.extend_from_slice(b": ");
                        raw.extend_from_slice(&value);
                        raw.extend_from_slice(b"\r\n");
                        if tail {
                            raw.extend_from_slice(b"Tail: t\r\n");
                        }
                        raw.extend_from_slice(b"\r\n");
                        with_msg(&raw, |m| {
                            let mut list = FieldList::new();
                            list.read(m);
                            let mut fast = b"[".to_vec();
                            write_event_json_from(&mut fast, &list);
                            let mut general = b"[".to_vec();
                            write_general(&mut general, &list);
                            assert_eq!(fast, general, "{b:#x} at {at} of {len}, tail {tail}");
                            let v: serde_json::Value =
                                serde_json::from_slice(&fast[1..]).expect("valid JSON");
                            assert_eq!(v["Event"], "X");
                        });
                    }
                }
            }
        }
    }

    /// Keys and values that are not slices of the list's message are copied from
    /// themselves, whatever the message holds at their offset.
    #[test]
    fn pieces_from_elsewhere_are_copied_as_they_are() {
        let message = b"Event: Decoy\r\nDecoyKey: decoy value that is long\r\n\r\n".repeat(4);
        let other = b"Event: Real\r\nKey: value\r\n".to_vec();
        let mut list = FieldList::new();
        list.text = Text::new(&message);
        for (key, value) in [
            (&other[0..5], &other[7..11]),
            (&other[13..16], &other[18..23]),
        ] {
            let head = load_word(key);
            list.headers.push(Header { key, value, head });
        }
        let mut out = Vec::new();
        write_event_json_from(&mut out, &list);
        assert_eq!(out, br#"{"Event":"Real","Key":"value"}"#);
    }

    #[test]
    fn mask_keeps_the_first_n_bits() {
        for n in 0..=32 {
            let want = (0..n).fold(0u32, |m, i| m | 1 << i);
            assert_eq!(mask(n), want, "{n}");
        }
    }

    #[test]
    fn small_event_byte_exact() {
        assert_eq!(
            json(b"Event: Hangup\r\nPrivilege: call,all\r\nCause: 16\r\nCause-txt: Normal Clearing\r\n\r\n"),
            r#"{"Event":"Hangup","Privilege":"call,all","Cause":"16","Cause-txt":"Normal Clearing"}"#
        );
    }

    #[test]
    fn repeated_keys_become_arrays_at_first_position() {
        assert_eq!(
            json(b"Event: VarSet\r\nVariable: A=1\r\nChannel: X\r\nVariable: B=a:b=c\r\nVariable: C\r\n\r\n"),
            r#"{"Event":"VarSet","Variable":["A=1","B=a:b=c","C"],"Channel":"X"}"#
        );
        assert_eq!(
            json(
                b"Event: UserEvent\r\nUniqueid: 1.1\r\nUserEvent: KitCall\r\nUniqueid: 1.1\r\n\r\n"
            ),
            r#"{"Event":"UserEvent","Uniqueid":["1.1","1.1"],"UserEvent":"KitCall"}"#
        );
    }

    #[test]
    fn chanvariable_keys_verbatim() {
        assert_eq!(
            json(b"Event: Link\r\nChanVariable(SIP/a-1): X=1\r\nChanVariable(SIP/b-2): X=2\r\nChanVariable(SIP/a-1): Y=3\r\n\r\n"),
            r#"{"Event":"Link","ChanVariable(SIP/a-1)":["X=1","Y=3"],"ChanVariable(SIP/b-2)":"X=2"}"#
        );
    }

    #[test]
    fn empty_non_utf8_escapes_and_colonless_lines() {
        assert_eq!(
            json(b"Event: X\r\nAccountCode: \r\nEmpty:\r\nName: Ren\xe9\r\nno colon here\r\nQ: \"a\\b\"\x01\t\r\n\r\n"),
            "{\"Event\":\"X\",\"AccountCode\":\"\",\"Empty\":\"\",\"Name\":\"Ren\u{e9}\",\"Q\":\"\\\"a\\\\b\\\"\\u0001\\t\"}"
        );
        let s = json(b"Event: X\r\nA: \xff\xfe\r\n\r\n");
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["A"], "\u{ff}\u{fe}");
    }

    #[test]
    fn many_fields_slow_path_matches() {
        let mut raw = b"Event: Big\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("K{}: v{i}\r\n", i % 150).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let s = json(&raw);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["K0"], serde_json::json!(["v0", "v150"]));
        assert_eq!(v["K149"], "v149");
        assert!(s.starts_with(r#"{"Event":"Big","K0":["v0","v150"],"K1":["v1","v151"]"#));
    }

    #[test]
    fn escape_detection() {
        for b in 0u8..=255 {
            for len in [1, 7, 8, 9, 16, 23] {
                for at in [0, len / 2, len - 1] {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let expect = b < 0x20 || b == b'"' || b == b'\\' || b == 0xe2;
                    assert_eq!(needs_escape(&v), expect, "{b:#x} {len} {at}");
                }
            }
        }
        assert!(!needs_escape(b"PJSIP/101-0000002a \xc3\xa9 <unknown>"));
    }

    #[test]
    fn filter_cases() {
        let f = EventFilter::default();
        let p = |raw: &[u8], f: &EventFilter| with_msg(raw, |m| f.publishes(m));
        assert!(p(b"Event: Newchannel\r\nPrivilege: call,all\r\n\r\n", &f));
        assert!(!p(b"Event: VarSet\r\nPrivilege: dialplan,all\r\n\r\n", &f));
        assert!(!p(b"Event: varset\r\nPrivilege: dialplan,all\r\n\r\n", &f));
        assert!(!p(b"Event: CEL\r\nPrivilege: call,all\r\n\r\n", &f));
        assert!(!p(
            b"Event: FullyBooted\r\nPrivilege: system,all\r\n\r\n",
            &f
        ));
        assert!(!p(
            b"Event: SuccessfulAuth\r\nPrivilege: security,all\r\n\r\n",
            &f
        ));
        assert!(!p(b"Event: X\r\nPrivilege: call, System ,all\r\n\r\n", &f));
        assert!(p(b"Event: QueueMember\r\nActionID: x\r\n\r\n", &f));
        assert!(!p(b"Response: Success\r\n\r\n", &f));
        let custom = EventFilter::new(&["dtmfend".to_owned()]);
        assert!(p(
            b"Event: VarSet\r\nPrivilege: dialplan,all\r\n\r\n",
            &custom
        ));
        assert!(!p(
            b"Event: DTMFEnd\r\nPrivilege: dtmf,all\r\n\r\n",
            &custom
        ));
        assert_eq!(custom.noise(), ["dtmfend".to_owned()]);
        assert_eq!(f.noise().len(), DEFAULT_NOISE.len());
    }
}
