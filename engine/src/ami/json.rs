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
    if !list.repeats && write_plain(out, list.headers()) {
        return;
    }
    out.truncate(start);
    write_general(out, list);
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The common case: no key repeats and every key and value is printable ASCII other
/// than `"` and `\`, so each goes into its JSON string as it is. The object's length
/// is known beforehand: room is made for it (and a word more), then every piece is
/// written as whole words, a word's bytes past the end of its piece being overwritten
/// by the next piece: keys and values eight bytes at a time (checked as they go), the
/// punctuation between them (`","`, `":"`) as one word each. False if a byte needs
/// escaping (`out` then holds garbage past its old length).
fn write_plain(out: &mut Vec<u8>, headers: &[Header<'_>]) -> bool {
    /// `{"`, `","`, `":"` and `"}` as little-endian words (the bytes past them are
    /// overwritten).
    const OPEN: u64 = u64::from_le_bytes(*b"{\"\0\0\0\0\0\0");
    const NEXT: u64 = u64::from_le_bytes(*b"\",\"\0\0\0\0\0");
    const COLON: u64 = u64::from_le_bytes(*b"\":\"\0\0\0\0\0");
    const CLOSE: u64 = u64::from_le_bytes(*b"\"}\0\0\0\0\0\0");
    if headers.is_empty() {
        out.extend_from_slice(b"{}");
        return true;
    }
    let text: usize = headers.iter().map(|h| h.key.len() + h.value.len()).sum();
    // `{` `}`, and per header `"k":"v"` and a comma (one too many).
    let len = 2 + text + 6 * headers.len();
    let start = out.len();
    out.resize(start + len + 8, 0);
    let Some(dst) = out.get_mut(start..) else {
        return false;
    };
    let mut plain = Plain::default();
    store(dst, 0, OPEN);
    let mut at = 2;
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            store(dst, at, NEXT);
            at += 3;
        }
        copy_checked(dst, &mut at, h.key, &mut plain);
        store(dst, at, COLON);
        at += 3;
        copy_checked(dst, &mut at, h.value, &mut plain);
    }
    store(dst, at, CLOSE);
    at += 2;
    out.truncate(start + at);
    plain.holds()
}

/// Copies `src` to `dst[at..]` in whole words (`dst` has eight bytes of room past
/// the end of the copy), moves `at` past it and adds its bytes to `plain`.
#[inline]
fn copy_checked(dst: &mut [u8], at: &mut usize, src: &[u8], plain: &mut Plain) {
    let mut chunks = src.chunks_exact(8);
    for c in &mut chunks {
        let w = c.first_chunk::<8>().map_or(0, |w| u64::from_le_bytes(*w));
        plain.add(w);
        store(dst, *at, w);
        *at += 8;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let w = load_word(rest);
        // Padded with plain bytes (`a`) past the remainder's own, for the check.
        plain.add(w | (LO * u64::from(b'a')) << (8 * rest.len()));
        store(dst, *at, w);
        *at += rest.len();
    }
}

#[inline]
fn store(dst: &mut [u8], at: usize, w: u64) {
    if let Some(d) = dst.get_mut(at..).and_then(<[u8]>::first_chunk_mut::<8>) {
        *d = w.to_le_bytes();
    }
}

/// Whether every byte of the words added is plain: printable ASCII other than `"`
/// and `\` (what goes into a JSON string as it is). Eight bytes at a time, with two
/// accumulators: `any` gathers high bits (a byte of 0x80 or more), `all` keeps a
/// byte's high bit only while every byte in its lane so far was at least 0x20 (adding
/// 0x60 reaches 0x80), not `"` and not `\` (the XOR is not zero: adding 0x7F reaches
/// 0x80). For ASCII bytes no addition carries into the next byte; a word with a
/// byte of 0x80 or more fails through `any` whatever its carries did.
#[derive(Debug, Clone, Copy)]
struct Plain {
    any: u64,
    all: u64,
}

impl Default for Plain {
    fn default() -> Self {
        Plain {
            any: 0,
            all: u64::MAX,
        }
    }
}

impl Plain {
    #[inline]
    fn add(&mut self, w: u64) {
        const LOW7: u64 = LO * 0x7f;
        let printable = w.wrapping_add(LO * 0x60);
        let not_quote = (w ^ (LO * u64::from(b'"'))).wrapping_add(LOW7);
        let not_backslash = (w ^ (LO * u64::from(b'\\'))).wrapping_add(LOW7);
        self.any |= w;
        self.all &= printable & not_quote & not_backslash;
    }

    fn holds(&self) -> bool {
        (self.any | !self.all) & HI == 0
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
    noise: Vec<String>,
    set: NameSet,
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
            noise: noise.to_vec(),
            set: NameSet::new(noise),
        }
    }

    /// The noise event names (for logging).
    pub fn noise(&self) -> &[String] {
        &self.noise
    }

    /// True if `name` is a noise event name.
    pub fn is_noise(&self, name: &[u8]) -> bool {
        self.set.contains(name)
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

    #[test]
    fn plain_is_exact_per_byte() {
        // Every byte value in every lane of a word, after a plain word and before one.
        for lane in 0..8 {
            for b in 0..=255u8 {
                let mut w = [b'a'; 8];
                w[lane] = b;
                let mut plain = Plain::default();
                plain.add(u64::from_le_bytes(*b"plain ok"));
                plain.add(u64::from_le_bytes(w));
                plain.add(u64::from_le_bytes(*b"~plain }"));
                let want = (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
                assert_eq!(plain.holds(), want, "byte {b:#x} in lane {lane}");
            }
        }
    }

    /// The fast path and the general one write the same object for every byte value at
    /// every position of keys and values of every length (word boundaries included).
    #[test]
    fn fast_and_general_paths_agree() {
        for len in 1..=17 {
            for at in 0..len {
                for b in (0..=255u8)
                    .step_by(3)
                    .chain([b'"', b'\\', 0x7f, 0x80, 0xe2])
                {
                    let mut value = vec![b'v'; len];
                    value[at] = b;
                    let mut key = vec![b'K'; len];
                    key[at] = if b.is_ascii_alphanumeric() { b } else { b'k' };
                    let mut raw = b"Event: X\r\n".to_vec();
                    raw.extend_from_slice(&key);
                    raw.extend_from_slice(b": ");
                    raw.extend_from_slice(&value);
                    raw.extend_from_slice(b"\r\nTail: t\r\n\r\n");
                    with_msg(&raw, |m| {
                        let mut list = FieldList::new();
                        list.read(m);
                        let mut fast = b"[".to_vec();
                        write_event_json_from(&mut fast, &list);
                        let mut general = b"[".to_vec();
                        write_general(&mut general, &list);
                        assert_eq!(fast, general, "{b:#x} at {at} of {len}");
                        let v: serde_json::Value =
                            serde_json::from_slice(&fast[1..]).expect("valid JSON");
                        assert_eq!(v["Tail"], "t");
                    });
                }
            }
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
