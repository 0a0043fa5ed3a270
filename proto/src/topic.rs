//! Topic names and subscription patterns: what a valid topic is, what a pattern is
//! (`a.b` exact, or `a.b.*` for the subtree strictly below `a.b`), how a pattern
//! matches a topic, and the allocation-free walk over a topic's ancestors that the
//! engine uses to find subtree subscribers.
//!
//! A topic is 1..=[`MAX_TOPIC_BYTES`] bytes of dot-separated, non-empty segments.
//! Segment bytes are ASCII letters and digits plus [`TOPIC_PUNCTUATION`]
//! (`-_:/@+=~!$'(),;`). Everything else is rejected, notably space, `"`, `\`, `*`,
//! `?`, `#`, `&`, `%`, control bytes and any non-ASCII character: topics travel in
//! URLs, JSON and logs, and the wildcard `*` is reserved for patterns.

use std::fmt;

/// Longest topic, in bytes (a subtree pattern may add the two bytes `.*`).
pub const MAX_TOPIC_BYTES: usize = 200;

/// The punctuation allowed inside a segment, besides ASCII letters and digits.
pub const TOPIC_PUNCTUATION: &str = "-_:/@+=~!$'(),;";

/// The suffix that turns a topic into a subtree pattern.
pub const SUBTREE_SUFFIX: &str = ".*";

/// The namespace of direct addresses: `client.<id>` reaches one connection. Clients
/// cannot subscribe to anything in it (see [`is_reserved`]).
pub const DIRECT_PREFIX: &str = "client.";

/// Whether `topic` is a direct address (`client.` and more).
pub fn is_direct(topic: &str) -> bool {
    topic.starts_with(DIRECT_PREFIX)
}

/// Whether a subscription to `name` (a topic, or a subtree's prefix) would reach into
/// the direct-address namespace: `client` itself or anything below it.
pub fn is_reserved(name: &str) -> bool {
    name == "client" || is_direct(name)
}

/// Why a topic or pattern was rejected. The messages are shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {len} bytes long; the limit is {MAX_TOPIC_BYTES}")]
    TooLong { len: usize },
    #[error("topic has an empty segment at byte {at} (it starts or ends with '.', or has '..')")]
    EmptySegment { at: usize },
    #[error(
        "'*' at byte {at} is not allowed in a topic; a subscription pattern may only end in '.*'"
    )]
    Wildcard { at: usize },
    #[error(
        "character {ch:?} at byte {at} is not allowed in a topic \
         (allowed: ASCII letters, digits, '.' between segments, and -_:/@+=~!$'(),;)"
    )]
    InvalidChar { ch: char, at: usize },
    #[error("a lone '*' is not a valid pattern; subscribe to 'prefix.*' for a subtree")]
    LoneWildcard,
}

/// Is `b` allowed inside a topic segment?
#[inline]
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || TOPIC_PUNCTUATION.as_bytes().contains(&b)
}

/// Checks that `s` is a valid topic (see the module docs for the rules).
pub fn validate_topic(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { len: s.len() });
    }
    let mut segment_len = 0usize;
    for (at, ch) in s.char_indices() {
        match ch {
            '.' => {
                if segment_len == 0 {
                    return Err(TopicError::EmptySegment { at });
                }
                segment_len = 0;
            }
            '*' => return Err(TopicError::Wildcard { at }),
            _ if ch.is_ascii() && is_segment_byte(ch as u8) => segment_len += 1,
            _ => return Err(TopicError::InvalidChar { ch, at }),
        }
    }
    if segment_len == 0 {
        return Err(TopicError::EmptySegment { at: s.len() });
    }
    Ok(())
}

/// A parsed subscription pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern<'a> {
    /// Exactly this topic.
    Exact(&'a str),
    /// Every topic strictly below this prefix (the pattern text minus its `.*`):
    /// `Subtree("a")` matches `a.b` and `a.b.c`, not `a`.
    Subtree(&'a str),
}

/// Parses a subscription pattern: a topic, or a topic followed by `.*`.
pub fn parse_pattern(s: &str) -> Result<Pattern<'_>, TopicError> {
    if s == "*" {
        return Err(TopicError::LoneWildcard);
    }
    match s.strip_suffix(SUBTREE_SUFFIX) {
        Some(prefix) => {
            validate_topic(prefix)?;
            Ok(Pattern::Subtree(prefix))
        }
        None => {
            validate_topic(s)?;
            Ok(Pattern::Exact(s))
        }
    }
}

impl<'a> Pattern<'a> {
    /// Does this pattern match `topic`? (`topic` is assumed valid; an invalid one
    /// never matches a subtree through an empty last segment.)
    pub fn matches(&self, topic: &str) -> bool {
        match *self {
            Pattern::Exact(t) => t == topic,
            Pattern::Subtree(prefix) => topic
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| !rest.is_empty()),
        }
    }

    /// The topic part: the exact topic, or the subtree prefix without `.*`. This
    /// is the key the engine indexes subscriptions by. For the full pattern text
    /// use the `Display` impl.
    pub fn as_str(&self) -> &'a str {
        match *self {
            Pattern::Exact(t) | Pattern::Subtree(t) => t,
        }
    }

    /// Is this a subtree (`.*`) pattern?
    pub fn is_subtree(&self) -> bool {
        matches!(self, Pattern::Subtree(_))
    }
}

impl fmt::Display for Pattern<'_> {
    /// Writes the pattern as a client would send it (`a.b` or `a.b.*`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Pattern::Exact(t) => f.write_str(t),
            Pattern::Subtree(p) => {
                f.write_str(p)?;
                f.write_str(SUBTREE_SUFFIX)
            }
        }
    }
}

/// Iterator over the proper prefixes of a topic at segment boundaries, longest
/// first: `a.b.c` yields `a.b`, then `a`. Borrowing only, no allocation.
#[derive(Debug, Clone)]
pub struct Ancestors<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Ancestors<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let dot = self.rest.rfind('.')?;
        // '.' is ASCII, so `dot` is a char boundary; `get` keeps this panic-free anyway.
        let parent = self.rest.get(..dot)?;
        self.rest = parent;
        Some(parent)
    }
}

/// The proper ancestors of `topic`, longest first (`a.b.c` -> `a.b`, `a`). A
/// subscriber to `x.*` must receive `topic` exactly when `x` is yielded here.
pub fn ancestors(topic: &str) -> Ancestors<'_> {
    Ancestors { rest: topic }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_namespace_is_reserved() {
        assert!(is_reserved("client") && is_reserved("client.abc"));
        assert!(!is_reserved("clients") && !is_reserved("a.client"));
        assert!(is_direct("client.00") && !is_direct("client"));
    }

    #[test]
    fn accepts_valid_topics() {
        let long = "a".repeat(MAX_TOPIC_BYTES);
        let ok = [
            "a",
            "chat.lobby",
            "ami.queue.sales",
            "ami.call.1700000000.123",
            "ami.endpoint.PJSIP/101",
            "user@example.com",
            "x-y_z:1/2@3+4=5~6!7$8'9(0),;",
            "A.B.C",
            long.as_str(),
        ];
        for t in ok {
            assert_eq!(validate_topic(t), Ok(()), "{t:?}");
        }
    }

    #[test]
    fn rejects_invalid_topics() {
        let too_long = "a".repeat(MAX_TOPIC_BYTES + 1);
        let cases: &[(&str, TopicError)] = &[
            ("", TopicError::Empty),
            (
                &too_long,
                TopicError::TooLong {
                    len: MAX_TOPIC_BYTES + 1,
                },
            ),
            (".a", TopicError::EmptySegment { at: 0 }),
            ("a.", TopicError::EmptySegment { at: 2 }),
            ("a..b", TopicError::EmptySegment { at: 2 }),
            (".", TopicError::EmptySegment { at: 0 }),
            ("a.*", TopicError::Wildcard { at: 2 }),
            ("*", TopicError::Wildcard { at: 0 }),
            ("a b", TopicError::InvalidChar { ch: ' ', at: 1 }),
            ("a\"b", TopicError::InvalidChar { ch: '"', at: 1 }),
            ("a\\b", TopicError::InvalidChar { ch: '\\', at: 1 }),
            ("a?b", TopicError::InvalidChar { ch: '?', at: 1 }),
            ("a#b", TopicError::InvalidChar { ch: '#', at: 1 }),
            ("a&b", TopicError::InvalidChar { ch: '&', at: 1 }),
            ("a%b", TopicError::InvalidChar { ch: '%', at: 1 }),
            ("a\nb", TopicError::InvalidChar { ch: '\n', at: 1 }),
            ("a\0b", TopicError::InvalidChar { ch: '\0', at: 1 }),
            ("a\x7fb", TopicError::InvalidChar { ch: '\x7f', at: 1 }),
            ("café", TopicError::InvalidChar { ch: 'é', at: 3 }),
            (
                "a.b\u{2028}",
                TopicError::InvalidChar {
                    ch: '\u{2028}',
                    at: 3,
                },
            ),
        ];
        for (t, want) in cases {
            assert_eq!(validate_topic(t), Err(*want), "{t:?}");
        }
    }

    #[test]
    fn every_ascii_byte_classified_as_documented() {
        for b in 0u8..=0x7f {
            let s = String::from(b as char);
            let expect_ok = b.is_ascii_alphanumeric() || b"-_:/@+=~!$'(),;".contains(&b);
            assert_eq!(validate_topic(&s).is_ok(), expect_ok, "byte {b:#04x}");
        }
    }

    #[test]
    fn error_messages_are_readable() {
        let msg = validate_topic("a b").unwrap_err().to_string();
        assert!(msg.contains("' '") && msg.contains("byte 1"), "{msg}");
        let msg = parse_pattern("*").unwrap_err().to_string();
        assert!(msg.contains("lone '*'"), "{msg}");
        let msg = validate_topic("a\nb").unwrap_err().to_string();
        assert!(msg.contains("'\\n'"), "control chars are escaped: {msg}");
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(parse_pattern("a"), Ok(Pattern::Exact("a")));
        assert_eq!(parse_pattern("a.b"), Ok(Pattern::Exact("a.b")));
        assert_eq!(parse_pattern("a.*"), Ok(Pattern::Subtree("a")));
        assert_eq!(parse_pattern("a.b.*"), Ok(Pattern::Subtree("a.b")));
        let max_prefix = format!("{}.*", "p".repeat(MAX_TOPIC_BYTES));
        assert!(matches!(
            parse_pattern(&max_prefix),
            Ok(Pattern::Subtree(_))
        ));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(parse_pattern("*"), Err(TopicError::LoneWildcard));
        assert_eq!(parse_pattern(".*"), Err(TopicError::Empty));
        assert_eq!(parse_pattern("a.**"), Err(TopicError::Wildcard { at: 2 }));
        assert_eq!(parse_pattern("a.*.b"), Err(TopicError::Wildcard { at: 2 }));
        assert_eq!(parse_pattern("*.a"), Err(TopicError::Wildcard { at: 0 }));
        assert_eq!(parse_pattern("a*"), Err(TopicError::Wildcard { at: 1 }));
        assert_eq!(
            parse_pattern("a..*"),
            Err(TopicError::EmptySegment { at: 2 })
        );
        assert_eq!(parse_pattern(""), Err(TopicError::Empty));
    }

    #[test]
    fn display_and_as_str() {
        let p = parse_pattern("a.b.*").unwrap();
        assert_eq!(p.to_string(), "a.b.*");
        assert_eq!(p.as_str(), "a.b");
        assert!(p.is_subtree());
        let e = parse_pattern("a.b").unwrap();
        assert_eq!(e.to_string(), "a.b");
        assert_eq!(e.as_str(), "a.b");
        assert!(!e.is_subtree());
    }

    #[test]
    fn subtree_matches_strictly_below() {
        let p = Pattern::Subtree("a");
        assert!(p.matches("a.b"));
        assert!(p.matches("a.b.c"));
        assert!(!p.matches("a"));
        assert!(!p.matches("ab"));
        assert!(!p.matches("ab.c"));
        assert!(!p.matches("b.a"));
        assert!(!p.matches("a."));
        let e = Pattern::Exact("a.b");
        assert!(e.matches("a.b"));
        assert!(!e.matches("a.b.c"));
        assert!(!e.matches("a"));
    }

    /// The obvious, slow definition: split both into segments and compare.
    fn naive_matches(pattern: &str, topic: &str) -> bool {
        let t: Vec<&str> = topic.split('.').collect();
        match pattern.strip_suffix(".*") {
            Some(prefix) => {
                let p: Vec<&str> = prefix.split('.').collect();
                t.len() > p.len() && t[..p.len()] == p[..]
            }
            None => pattern == topic,
        }
    }

    #[test]
    fn matches_agrees_with_naive_on_generated_set() {
        // Every topic of up to 3 segments over a small alphabet, including
        // segments that are prefixes of each other ("a", "ab").
        let segs = ["a", "ab", "b", "a-b"];
        let mut topics: Vec<String> = Vec::new();
        for x in segs {
            topics.push(x.to_string());
            for y in segs {
                topics.push(format!("{x}.{y}"));
                for z in segs {
                    topics.push(format!("{x}.{y}.{z}"));
                }
            }
        }
        let mut patterns: Vec<String> = topics.clone();
        patterns.extend(topics.iter().map(|t| format!("{t}.*")));
        let mut positives = 0;
        for ps in &patterns {
            let p = parse_pattern(ps).unwrap();
            for t in &topics {
                let want = naive_matches(ps, t);
                assert_eq!(p.matches(t), want, "pattern {ps} topic {t}");
                // The engine's lookup: exact key, or a subtree key among ancestors.
                let via_ancestors = match p {
                    Pattern::Exact(k) => k == t,
                    Pattern::Subtree(k) => ancestors(t).any(|a| a == k),
                };
                assert_eq!(via_ancestors, want, "ancestors: pattern {ps} topic {t}");
                positives += usize::from(want);
            }
        }
        assert!(positives > patterns.len(), "the set exercises matches");
    }

    #[test]
    fn ancestors_longest_first() {
        assert_eq!(ancestors("a.b.c").collect::<Vec<_>>(), ["a.b", "a"]);
        assert_eq!(
            ancestors("ami.endpoint.PJSIP/101").collect::<Vec<_>>(),
            ["ami.endpoint", "ami"]
        );
        assert_eq!(ancestors("a").count(), 0);
        assert_eq!(ancestors("").count(), 0);
    }

    #[test]
    fn ancestors_borrow_from_the_topic() {
        let topic = String::from("x.y.z");
        for a in ancestors(&topic) {
            assert_eq!(a.as_ptr(), topic.as_ptr(), "a prefix slice, not a copy");
        }
    }
}
