//! AMI events as JSON (the EVENT object of PROTOCOL.md "PBX topics") and the event filter that
//! decides what reaches the `ami.*` topics.
//!
//! [`write_event_json`] writes a message's fields as one object: keys verbatim in
//! first-appearance order, values as text ([`decode_text`]), a repeated key as an
//! array of its values at its first position, lines without a colon dropped. It
//! allocates nothing but the growth of `out` (and the text of a non-UTF-8 value).
//!
//! [`EventFilter`] drops noise events by name and every event of the `security` or
//! `system` class.

use switchboard_proto::ami::{Message, decode_text};
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

/// The most headers a [`FieldList`] holds (real events have 15-30; a longer
/// message is read from the [`Message`] again).
pub const INLINE_FIELDS: usize = 48;

/// A message's headers (lines with a colon) as key/value pairs, read once for the
/// several passes of routing an event.
pub struct FieldList<'a> {
    items: [(&'a [u8], &'a [u8]); INLINE_FIELDS],
    len: usize,
    complete: bool,
}

impl<'a> FieldList<'a> {
    /// An empty list (build it in place, then [`fill`](Self::fill) it).
    pub const EMPTY: FieldList<'static> = FieldList {
        items: [(&[], &[]); INLINE_FIELDS],
        len: 0,
        complete: true,
    };

    /// Reads the headers of `msg` (up to [`INLINE_FIELDS`]).
    pub fn fill(&mut self, msg: &Message<'a>) {
        self.len = 0;
        self.complete = true;
        for f in msg.fields().filter(|f| f.has_colon()) {
            match self.items.get_mut(self.len) {
                Some(slot) => {
                    *slot = (f.key(), f.value());
                    self.len += 1;
                }
                None => {
                    self.complete = false;
                    break;
                }
            }
        }
    }

    /// False if the message has more headers than the list holds.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The headers read, in order.
    pub fn pairs(&self) -> &[(&'a [u8], &'a [u8])] {
        self.items.get(..self.len).unwrap_or_default()
    }
}

/// Appends the EVENT object of `msg` (see the module docs) to `out`.
pub fn write_event_json(out: &mut Vec<u8>, msg: &Message<'_>) {
    let mut list = FieldList::EMPTY;
    list.fill(msg);
    write_event_json_from(out, msg, &list);
}

/// [`write_event_json`] with the headers of `msg` already read into `list`.
pub fn write_event_json_from(out: &mut Vec<u8>, msg: &Message<'_>, list: &FieldList<'_>) {
    // When the whole message is plain ASCII, every key and value is copied as it is;
    // else when it is UTF-8, so is every key and value (they are cut at ASCII bytes),
    // and a string with nothing to escape is copied as it is.
    let plain = plain_text(msg.raw());
    let utf8 = plain || std::str::from_utf8(msg.raw()).is_ok();
    let put = if plain { put_plain } else { put };
    if !list.is_complete() {
        return write_any(out, msg, utf8);
    }
    let fields = list.pairs();
    // Quotes and commas add at most three bytes a field over its line break.
    out.reserve(msg.raw().len() + 3 * fields.len() + 16);
    // A key's signature rules out nearly every unequal pair with one integer
    // compare, and a 64-bit filter of them rules out repeats altogether in the
    // common case.
    let mut sigs = [0u32; INLINE_FIELDS];
    let mut seen = 0u64;
    let mut repeats = false;
    for (i, ((key, _), slot)) in fields.iter().zip(sigs.iter_mut()).enumerate() {
        let sig = signature(key);
        let bit = 1u64 << (sig.wrapping_mul(0x9e37_79b1) >> 26);
        if seen & bit != 0 {
            repeats |= fields
                .get(..i)
                .is_some_and(|prev| prev.iter().any(|(k, _)| k == key));
        }
        seen |= bit;
        *slot = sig;
    }
    out.push(b'{');
    let mut first = true;
    if !repeats {
        for (key, value) in fields {
            separator(out, &mut first);
            put(out, key, utf8);
            out.push(b':');
            put(out, value, utf8);
        }
        out.push(b'}');
        return;
    }
    let mut done = [false; INLINE_FIELDS];
    for (i, &(key, value)) in fields.iter().enumerate() {
        let (Some(&sig), Some(&skip)) = (sigs.get(i), done.get(i)) else {
            break;
        };
        if skip {
            continue;
        }
        let same =
            |j: usize| sigs.get(j) == Some(&sig) && fields.get(j).is_some_and(|(k, _)| *k == key);
        let repeated = (i + 1..fields.len()).any(same);
        separator(out, &mut first);
        put(out, key, utf8);
        out.push(b':');
        if repeated {
            out.push(b'[');
            put(out, value, utf8);
            for j in i + 1..fields.len() {
                if same(j) {
                    if let Some(d) = done.get_mut(j) {
                        *d = true;
                    }
                    if let Some((_, v)) = fields.get(j) {
                        out.push(b',');
                        put(out, v, utf8);
                    }
                }
            }
            out.push(b']');
        } else {
            put(out, value, utf8);
        }
    }
    out.push(b'}');
}

/// [`write_event_json`] for a message of any length: keys compared directly, a
/// field whose key appeared before is skipped.
fn write_any(out: &mut Vec<u8>, msg: &Message<'_>, utf8: bool) {
    out.push(b'{');
    let mut first = true;
    for (i, f) in msg.fields().enumerate() {
        if !f.has_colon() {
            continue;
        }
        let key = f.key();
        if msg
            .fields()
            .take(i)
            .any(|g| g.has_colon() && g.key() == key)
        {
            continue;
        }
        let mut values = msg
            .fields()
            .skip(i)
            .filter(|g| g.has_colon() && g.key() == key)
            .map(|g| g.value());
        separator(out, &mut first);
        put(out, key, utf8);
        out.push(b':');
        let v0 = values.next().unwrap_or_default();
        let mut rest = values.peekable();
        if rest.peek().is_some() {
            out.push(b'[');
            put(out, v0, utf8);
            for v in rest {
                out.push(b',');
                put(out, v, utf8);
            }
            out.push(b']');
        } else {
            put(out, v0, utf8);
        }
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

/// A string known to need no escaping, quoted.
fn put_plain(out: &mut Vec<u8>, bytes: &[u8], _utf8: bool) {
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// True if every byte of `bytes` is printable ASCII other than `"` and `\`, or a
/// line break (CR, LF): a message whose keys and values all go into JSON strings
/// unchanged. Eight bytes at a time, each byte tested exactly (no borrow crosses a
/// byte: every lane stays below 0x100).
fn plain_text(bytes: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // High bit of each lane set where the lane (below 0x80) equals `c`.
    let eq = |x: u64, c: u8| !((x ^ (LO * u64::from(c))) + LOW7) & HI;
    let plain = |x: u64| {
        if x & HI != 0 {
            return false;
        }
        let control = !(x + LO * (0x80 - 0x20)) & HI;
        let bad = (control & !eq(x, b'\r') & !eq(x, b'\n')) | eq(x, b'"') | eq(x, b'\\');
        bad == 0
    };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        if !plain(u64::from_le_bytes(w)) {
            return false;
        }
    }
    let rest = chunks.remainder();
    // Padded with a byte that is plain.
    let pad = (LO * u64::from(b'a'))
        .checked_shl(8 * rest.len() as u32)
        .unwrap_or(0);
    plain(load_word(rest) | pad)
}

fn separator(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

/// A signature of a header's key (from its length and its first and last eight
/// bytes).
fn signature(key: &[u8]) -> u32 {
    let head = load_word(key);
    let tail = load_word(key.get(key.len().saturating_sub(8)..).unwrap_or_default());
    let h = (head ^ tail.rotate_left(29) ^ key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32
}

/// Which events are published: not noise (by name, ASCII case-insensitive), not of
/// the `security` or `system` class. Noise and class-filtered events still update
/// the state model.
#[derive(Debug, Clone)]
pub struct EventFilter {
    noise: Vec<String>,
}

impl Default for EventFilter {
    /// The [`DEFAULT_NOISE`] names.
    fn default() -> Self {
        Self {
            noise: DEFAULT_NOISE.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl EventFilter {
    /// A filter with these noise event names (empty: no noise).
    pub fn new(noise: &[String]) -> Self {
        Self {
            noise: noise.to_vec(),
        }
    }

    /// The noise event names (for logging).
    pub fn noise(&self) -> &[String] {
        &self.noise
    }

    /// True if `name` is a noise event name.
    pub fn is_noise(&self, name: &[u8]) -> bool {
        self.noise
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// True if `msg` is an event that may be published: not noise, and its
    /// `Privilege:` (if any) holds neither `security` nor `system`.
    pub fn publishes(&self, msg: &Message<'_>) -> bool {
        msg.event()
            .is_some_and(|name| self.publishes_parts(name, msg.get("Privilege")))
    }

    /// [`publishes`](Self::publishes) for an event's name and `Privilege:` value
    /// already found.
    pub fn publishes_parts(&self, name: &[u8], privilege: Option<&[u8]>) -> bool {
        !self.is_noise(name) && privilege.is_none_or(|p| !restricted_class(p))
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
    fn plain_text_is_exact_per_byte() {
        assert!(plain_text(b""));
        assert!(plain_text(
            b"Event: Newchannel\r\nChannel: PJSIP/101-0000002a\r\n\r\n"
        ));
        // Every byte value, at every position of a word and in the tail.
        for len in [1usize, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'x'; len];
                    v[at] = b;
                    let want = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
                        || b == b'\r'
                        || b == b'\n'
                        || b == 0x7f;
                    assert_eq!(plain_text(&v), want, "byte {b:#x} at {at} of {len}");
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
