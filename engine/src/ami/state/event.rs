//! What the model reads from one event: a channel block (`Channel`, `ChannelState`,
//! caller ids, `Context`, `Exten`, `Uniqueid`, `Linkedid`), optionally with a
//! prefix (`Dest`, `Transferee`, ...), found in one pass over the fields.

use switchboard_proto::ami::Message;

use super::super::json::FieldList;
use switchboard_proto::swar::word_at;

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

/// ASCII case-insensitive equality with `letters`, a lower-case name made of
/// letters only (then `x | 0x20 == l` holds exactly for `l` and its upper case);
/// eight bytes at a time.
fn eq_letters(k: &[u8], letters: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let n = k.len();
    if n != letters.len() {
        return false;
    }
    if n < 8 {
        return k.iter().zip(letters).all(|(a, b)| a | 0x20 == *b);
    }
    let mut at = 0;
    while at + 8 < n {
        if word_at(k, at) | CASE != word_at(letters, at) {
            return false;
        }
        at += 8;
    }
    word_at(k, n - 8) | CASE == word_at(letters, n - 8)
}

/// The kind of reference a key is, by its suffix (ASCII case-insensitive).
fn ref_kind(key: &[u8]) -> Option<Ref> {
    let ends = |suffix: &[u8]| {
        key.len() >= suffix.len()
            && key
                .get(key.len() - suffix.len()..)
                .is_some_and(|k| eq_letters(k, suffix))
    };
    match key.last().map(u8::to_ascii_lowercase) {
        Some(b'd') if ends(b"linkedid") => Some(Ref::Linkedid),
        Some(b'd') if ends(b"bridgeuniqueid") => Some(Ref::Bridge),
        Some(b'd') if ends(b"uniqueid") => Some(Ref::Uniqueid),
        Some(b'l') if ends(b"channel") => Some(Ref::Channel),
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
        }
    }
}

/// A value that names something: not empty, not `<unknown>`.
pub(super) fn named(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|v| !v.is_empty() && *v != b"<unknown>")
}

impl<'a> Block<'a> {
    /// The block whose keys start with `prefix` (ASCII case-insensitive; `b""` for
    /// the event's own channel, which also collects `Privilege`, `ActionID` and
    /// the call references). The first of a repeated key wins.
    pub fn read(msg: &Message<'a>, prefix: &[u8]) -> Self {
        let pairs = msg
            .fields()
            .filter(|f| f.has_colon())
            .map(|f| (f.key(), f.value()));
        Self::from_pairs(pairs, prefix)
    }

    /// [`read`](Self::read) from headers already read.
    pub fn from_list(list: &FieldList<'a>, prefix: &[u8], msg: &Message<'a>) -> Self {
        if list.is_complete() {
            Self::from_pairs(list.pairs().iter().copied(), prefix)
        } else {
            Self::read(msg, prefix)
        }
    }

    fn from_pairs(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>, prefix: &[u8]) -> Self {
        let mut b = Block::default();
        let own = prefix.is_empty();
        for (key, value) in pairs {
            let rest = if own {
                key
            } else {
                match key.split_at_checked(prefix.len()) {
                    Some((p, rest)) if p.eq_ignore_ascii_case(prefix) => rest,
                    _ => continue,
                }
            };
            if own
                && b.ref_count < MAX_REFS
                && named(Some(value)).is_some()
                && let (Some(kind), Some(slot)) = (ref_kind(key), b.refs.get_mut(b.ref_count))
            {
                *slot = (kind, value);
                b.ref_count += 1;
            }
            if let Some(slot) = b.slot(rest, own)
                && slot.is_none()
            {
                *slot = Some(value);
            }
        }
        b
    }

    /// Where the value of the (unprefixed) key `k` goes: one candidate by length
    /// and first letter, then one comparison.
    fn slot(&mut self, k: &[u8], own: bool) -> Option<&mut Option<&'a [u8]>> {
        let first = k.first()?.to_ascii_lowercase();
        let (name, slot): (&[u8], _) = match (k.len(), first) {
            (7, b'c') if k.get(1).is_some_and(|c| c.eq_ignore_ascii_case(&b'h')) => {
                (b"channel", &mut self.channel)
            }
            (7, b'c') => (b"context", &mut self.context),
            (5, b'e') => (b"exten", &mut self.exten),
            (8, b'u') => (b"uniqueid", &mut self.uniqueid),
            (8, b'l') => (b"linkedid", &mut self.linkedid),
            (8, b'a') if own => (b"actionid", &mut self.action_id),
            (9, b'p') if own => (b"privilege", &mut self.privilege),
            (11, b'c') => (b"calleridnum", &mut self.cid_num),
            (12, b'c') if k.get(2).is_some_and(|c| c.eq_ignore_ascii_case(&b'a')) => {
                (b"channelstate", &mut self.state)
            }
            (12, b'c') => (b"calleridname", &mut self.cid_name),
            (16, b'c') => (b"connectedlinenum", &mut self.conn_num),
            (17, b'c') => (b"connectedlinename", &mut self.conn_name),
            _ => return None,
        };
        eq_letters(k, name).then_some(slot)
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
        assert_eq!(ref_kind(b"DestLinkedID"), Some(Ref::Linkedid));
        assert_eq!(ref_kind(b"ToBridgeUniqueid"), Some(Ref::Bridge));
        assert_eq!(ref_kind(b"TransfereeUniqueid"), Some(Ref::Uniqueid));
        assert_eq!(ref_kind(b"LocalOneChannel"), Some(Ref::Channel));
        assert_eq!(ref_kind(b"ChannelState"), None);
    }
}
