//! What the model reads from one event: a channel block (`Channel`, `ChannelState`,
//! caller ids, `Context`, `Exten`, `Uniqueid`, `Linkedid`), optionally with a
//! prefix (`Dest`, `Transferee`, ...), found in one pass over the fields.

use switchboard_proto::ami::Message;

use super::super::json::{FieldList, Text};
use switchboard_proto::swar::{CASE, eq_ignore_ascii_case, eq_letters, load_word, word_at};

/// The channel block of an event; fields absent from the event are `None`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Block<'a> {
    pub channel: Option<&'a [u8]>,
    pub state: Option<&'a [u8]>,
    pub cid_num: Option<&'a [u8]>,
    pub cid_name: Option<&'a [u8]>,
    pub conn_num: Option<&'a [u8]>,
    pub conn_name: Option<&'a [u8]>,
    pub context: Option<&'a [u8]>,
    pub exten: Option<&'a [u8]>,
    pub uniqueid: Option<&'a [u8]>,
    pub linkedid: Option<&'a [u8]>,
    /// `Privilege` and `ActionID` (read with the unprefixed block only).
    pub privilege: Option<&'a [u8]>,
    pub action_id: Option<&'a [u8]>,
    /// The values that tie the event to calls (unprefixed read only): every
    /// `*Linkedid`, `*Uniqueid`, `*BridgeUniqueid` and `*Channel` field, in order,
    /// at most [`MAX_REFS`].
    pub refs: [(Ref, &'a [u8]); MAX_REFS],
    pub ref_count: usize,
    /// The event's text, for the values above.
    pub text: Text<'a>,
}

/// The most call references kept from one event (a transfer has about 8).
pub(super) const MAX_REFS: usize = 12;

/// What a reference field names.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ref {
    #[default]
    Linkedid,
    Uniqueid,
    Bridge,
    Channel,
}

/// The word a key spelled like `name` (lower-case letters, at most eight) has once
/// its head ([`load_word`]) is folded with [`CASE`] (zero padding folds to 0x20, in
/// both).
const fn folded(name: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < name.len() && i < 8 {
        w |= (name[i] as u64) << (8 * i);
        i += 1;
    }
    w | CASE
}

/// The kind of reference a key is, by its suffix (ASCII case-insensitive): the last
/// eight bytes, folded, are `linkedid`, `uniqueid` (`bridgeuniqueid` is a bridge) or
/// `?channel`.
#[inline]
fn ref_kind(key: &[u8], head: u64) -> Option<Ref> {
    const LINKEDID: u64 = folded(b"linkedid");
    const UNIQUEID: u64 = folded(b"uniqueid");
    const CHANNEL: u64 = folded(b"channel");
    let n = key.len();
    if n < 8 {
        return (n == 7 && head | CASE == CHANNEL).then_some(Ref::Channel);
    }
    let tail = word_at(key, n - 8) | CASE;
    match tail {
        LINKEDID => Some(Ref::Linkedid),
        UNIQUEID => {
            let bridge = n >= 14
                && key
                    .get(n - 14..n - 8)
                    .is_some_and(|p| eq_letters(p, b"bridge"));
            Some(if bridge { Ref::Bridge } else { Ref::Uniqueid })
        }
        // The last seven bytes are `channel`: the word's top seven bytes.
        _ if tail >> 8 == CHANNEL & (u64::MAX >> 8) => Some(Ref::Channel),
        _ => None,
    }
}

impl Default for Block<'_> {
    fn default() -> Self {
        Self {
            channel: None,
            state: None,
            cid_num: None,
            cid_name: None,
            conn_num: None,
            conn_name: None,
            context: None,
            exten: None,
            uniqueid: None,
            linkedid: None,
            privilege: None,
            action_id: None,
            refs: [(Ref::Linkedid, &[]); MAX_REFS],
            ref_count: 0,
            text: Text::default(),
        }
    }
}

/// A value that names something: not empty, not `<unknown>`.
pub(super) fn named(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|v| !v.is_empty() && *v != b"<unknown>")
}

impl<'a> Block<'a> {
    /// The block whose keys start with `prefix` (ASCII case-insensitive; e.g. `Dest`),
    /// of the event whose text is `text`. The first of a repeated key wins.
    pub fn read(msg: &Message<'a>, prefix: &[u8], text: Text<'a>) -> Self {
        let mut b = Block {
            text,
            ..Block::default()
        };
        for f in msg.fields().filter(|f| f.has_colon()) {
            let rest = match f.key().split_at_checked(prefix.len()) {
                Some((p, rest)) if eq_ignore_ascii_case(p, prefix) => rest,
                _ => continue,
            };
            if prefix.is_empty() {
                b.add_ref(rest, load_word(rest), f.value());
            }
            b.set(rest, load_word(rest), f.value(), prefix.is_empty());
        }
        b
    }

    /// The event's own block (no prefix), with `Privilege`, `ActionID` and the call
    /// references, from the headers already read.
    pub fn from_list(list: &FieldList<'a>) -> Self {
        let mut b = Block {
            text: list.text,
            ..Block::default()
        };
        for h in list.headers() {
            b.add_ref(h.key, h.head, h.value);
            b.set(h.key, h.head, h.value, true);
        }
        b
    }

    #[inline]
    fn add_ref(&mut self, key: &[u8], head: u64, value: &'a [u8]) {
        if self.ref_count < MAX_REFS
            && let Some(kind) = ref_kind(key, head)
            && named(Some(value)).is_some()
            && let Some(slot) = self.refs.get_mut(self.ref_count)
        {
            *slot = (kind, value);
            self.ref_count += 1;
        }
    }

    #[inline]
    fn set(&mut self, key: &[u8], head: u64, value: &'a [u8], own: bool) {
        if let Some(slot) = self.slot(key, head, own)
            && slot.is_none()
        {
            *slot = Some(value);
        }
    }

    /// Where the value of the (unprefixed) key `k`, whose first eight bytes are
    /// `head`, goes: candidates by length and folded head, the rest (past eight
    /// bytes) compared only then.
    #[inline]
    fn slot(&mut self, k: &[u8], head: u64, own: bool) -> Option<&mut Option<&'a [u8]>> {
        let h = head | CASE;
        let rest = |letters: &[u8]| k.get(8..).is_some_and(|r| eq_letters(r, letters));
        let slot = match k.len() {
            5 if h == folded(b"exten") => &mut self.exten,
            7 if h == folded(b"channel") => &mut self.channel,
            7 if h == folded(b"context") => &mut self.context,
            8 if h == folded(b"uniqueid") => &mut self.uniqueid,
            8 if h == folded(b"linkedid") => &mut self.linkedid,
            8 if own && h == folded(b"actionid") => &mut self.action_id,
            9 if own && h == folded(b"privileg") && rest(b"e") => &mut self.privilege,
            11 if h == folded(b"callerid") && rest(b"num") => &mut self.cid_num,
            12 if h == folded(b"callerid") && rest(b"name") => &mut self.cid_name,
            12 if h == folded(b"channels") && rest(b"tate") => &mut self.state,
            16 if h == folded(b"connecte") && rest(b"dlinenum") => &mut self.conn_num,
            17 if h == folded(b"connecte") && rest(b"dlinename") => &mut self.conn_name,
            _ => return None,
        };
        Some(slot)
    }

    /// A full channel snapshot: a Uniqueid and a state (CEL and CDR records carry
    /// channel names and ids too, but are not channel snapshots).
    pub fn is_snapshot(&self) -> bool {
        named(self.uniqueid).is_some() && self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_compare_case_insensitively() {
        assert!(eq_letters(b"ConnectedLineName", b"connectedlinename"));
        assert!(eq_letters(b"CONNECTEDLINENAME", b"connectedlinename"));
        assert!(eq_letters(b"Uniqueid", b"uniqueid"));
        assert!(eq_letters(b"UniqueID", b"uniqueid"));
        assert!(!eq_letters(b"Uniqueie", b"uniqueid"));
        assert!(!eq_letters(b"Uniqueid ", b"uniqueid"));
        assert!(!eq_letters(b"ConnectedLineNamf", b"connectedlinename"));
        assert!(!eq_letters(b"Channe@", b"channel"));
        assert!(eq_letters(b"", b""));
        let kind = |k: &[u8]| ref_kind(k, load_word(k));
        assert_eq!(kind(b"DestLinkedID"), Some(Ref::Linkedid));
        assert_eq!(kind(b"Linkedid"), Some(Ref::Linkedid));
        assert_eq!(kind(b"ToBridgeUniqueid"), Some(Ref::Bridge));
        assert_eq!(kind(b"BridgeUniqueid"), Some(Ref::Bridge));
        assert_eq!(kind(b"TransfereeUniqueid"), Some(Ref::Uniqueid));
        assert_eq!(kind(b"LocalOneChannel"), Some(Ref::Channel));
        assert_eq!(kind(b"Channel"), Some(Ref::Channel));
        assert_eq!(kind(b"CHANNEL"), Some(Ref::Channel));
        assert_eq!(kind(b"hannel"), None);
        assert_eq!(kind(b"Channel1"), None);
        assert_eq!(kind(b"ChannelState"), None);
        assert_eq!(kind(b"Uniqueid2"), None);
        assert_eq!(kind(b"Bridge"), None);
    }
}
