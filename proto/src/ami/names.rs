//! [`NameSet`]: a few names (events, keys) matched ASCII case-insensitively, as AMI
//! compares them, for lookups made once per message: a 64-bit filter of the names'
//! lengths and case-folded first eight bytes rejects nearly every other name with one
//! test, and the same two compares pick the candidates among the names.

use crate::swar::{CASE, eq_ignore_ascii_case, load_word};

/// A set of names, ASCII case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    /// Bit [`filter_bit`] of every name.
    filter: u64,
    entries: Vec<Entry>,
}

/// The filter bit of a name whose folded head is `head`: one of 64, by a
/// multiplicative hash of the head and the length.
#[inline]
fn filter_bit(head: u64, len: usize) -> u64 {
    1 << ((head ^ len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The folded first (up to) eight bytes.
    head: u64,
    name: Box<[u8]>,
}

impl NameSet {
    /// The set of `names`.
    pub fn new<S: AsRef<[u8]>>(names: impl IntoIterator<Item = S>) -> Self {
        let entries: Vec<Entry> = names
            .into_iter()
            .map(|n| Entry {
                head: load_word(n.as_ref()) | CASE,
                name: n.as_ref().into(),
            })
            .collect();
        Self {
            filter: entries
                .iter()
                .fold(0, |f, e| f | filter_bit(e.head, e.name.len())),
            entries,
        }
    }

    /// Whether `name` is in the set (ASCII case-insensitive).
    #[inline]
    pub fn contains(&self, name: &[u8]) -> bool {
        let head = load_word(name) | CASE;
        if self.filter & filter_bit(head, name.len()) == 0 {
            return false;
        }
        self.entries
            .iter()
            .any(|e| e.head == head && eq_ignore_ascii_case(&e.name, name))
    }

    /// True if the set has no names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, as given.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| &*e.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exactly_the_names_ignoring_ascii_case() {
        let set = NameSet::new(["VarSet", "CEL", "RTCPReceived", "a@b"]);
        for yes in [
            "VarSet",
            "varset",
            "VARSET",
            "cel",
            "Cel",
            "rtcpreceived",
            "A@B",
        ] {
            assert!(set.contains(yes.as_bytes()), "{yes}");
        }
        // Same folded head but other bytes, other lengths, prefixes, extensions,
        // and the bytes the fold confuses.
        for no in [
            "VarSe",
            "VarSets",
            "CE",
            "CELL",
            "RTCPReceive",
            "RTCPReceivedX",
            "RTCPRECEIVEE",
            "a`b",
            "",
            "Var\u{0}et",
            "VarSet ",
            "cdr",
        ] {
            assert!(!set.contains(no.as_bytes()), "{no}");
        }
        assert!(!NameSet::default().contains(b""));
        assert!(NameSet::new([""]).contains(b""));
        assert_eq!(set.names().count(), 4);
    }

    /// Against a plain scan: every name of up to 3 bytes over letters, their other
    /// case and the bytes the fold confuses with them; and every case variant and
    /// one-byte change of a 9-byte name (past the first word).
    #[test]
    fn agrees_with_a_scan_of_eq_ignore_ascii_case() {
        let names: [&[u8]; 5] = [b"ab", b"aB@", b"", b"abcdefghi", b"@`"];
        let set = NameSet::new(names);
        let check = |probe: &[u8]| {
            let want = names.iter().any(|n| n.eq_ignore_ascii_case(probe));
            assert_eq!(set.contains(probe), want, "{probe:?}");
        };
        let alphabet = [b'a', b'A', b'b', b'B', b'@', b'`', b'c', 0];
        let mut level = vec![Vec::new()];
        for _ in 0..=3 {
            level.iter().for_each(|p| check(p));
            level = level
                .iter()
                .flat_map(|p| alphabet.iter().map(move |&b| [p.as_slice(), &[b]].concat()))
                .collect();
        }
        for cases in 0..512u32 {
            let mut p = b"abcdefghi".to_vec();
            for (i, b) in p.iter_mut().enumerate() {
                if cases >> i & 1 == 1 {
                    b.make_ascii_uppercase();
                }
            }
            check(&p);
            for i in 0..p.len() {
                for x in [b'@', b'`', b'z', 0x80 | p[i]] {
                    let mut q = p.clone();
                    q[i] = x;
                    check(&q);
                }
            }
        }
    }
}
