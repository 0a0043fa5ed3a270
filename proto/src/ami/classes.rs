//! Event and permission classes: the `read =`/`write =` lists of `manager.conf`,
//! the `Events:`/`EventMask:` header of the `Login`/`Events` actions, and the
//! `Privilege:` header of events.
//!
//! Bit values and names are Asterisk's (`include/asterisk/manager.h` and the
//! `perms[]` table of `main/manager.c`). Two of them differ from a naive
//! "one bit after the other" numbering: bit 14 is `EVENT_FLAG_HOOKRESPONSE`, which
//! has no name (so `cc` is bit 15, `aoc` 16, `test` 17, `security` 18), and
//! `message` is bit 30. `all` is `INT_MAX` (every bit but the 32nd).

use std::fmt;

use thiserror::Error;

/// A set of AMI classes (a bit mask, as Asterisk stores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Classes(u32);

/// Named classes in Asterisk's order (`perms[]` in `main/manager.c`), which is the
/// order of a rendered `Privilege:` header.
const NAMED: [(Classes, &str); 18] = [
    (Classes::SYSTEM, "system"),
    (Classes::CALL, "call"),
    (Classes::LOG, "log"),
    (Classes::VERBOSE, "verbose"),
    (Classes::COMMAND, "command"),
    (Classes::AGENT, "agent"),
    (Classes::USER, "user"),
    (Classes::CONFIG, "config"),
    (Classes::DTMF, "dtmf"),
    (Classes::REPORTING, "reporting"),
    (Classes::CDR, "cdr"),
    (Classes::DIALPLAN, "dialplan"),
    (Classes::ORIGINATE, "originate"),
    (Classes::AGI, "agi"),
    (Classes::CC, "cc"),
    (Classes::AOC, "aoc"),
    (Classes::TEST, "test"),
    (Classes::SECURITY, "security"),
];

/// Asterisk's `message` class, listed after the others (bit 30).
const MESSAGE_NAME: (Classes, &str) = (Classes::MESSAGE, "message");

/// Asterisk's `EVENT_FLAG_SHUTDOWN` (-1): rendered as `<none>`.
const SHUTDOWN: u32 = u32::MAX;

/// Why [`Classes::parse`] refused a list.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClassesError {
    /// An empty string (Asterisk reads an empty `Events:` as "leave unchanged").
    #[error("empty class list")]
    Empty,
    /// A name that is not a class (Asterisk would silently ignore it).
    #[error("unknown AMI class {0:?}")]
    Unknown(String),
    /// A decimal mask that does not fit 32 bits.
    #[error("class mask {0:?} does not fit 32 bits")]
    MaskOverflow(String),
}

impl Classes {
    /// No class.
    pub const NONE: Self = Self(0);
    pub const SYSTEM: Self = Self(1 << 0);
    pub const CALL: Self = Self(1 << 1);
    pub const LOG: Self = Self(1 << 2);
    pub const VERBOSE: Self = Self(1 << 3);
    pub const COMMAND: Self = Self(1 << 4);
    pub const AGENT: Self = Self(1 << 5);
    pub const USER: Self = Self(1 << 6);
    pub const CONFIG: Self = Self(1 << 7);
    pub const DTMF: Self = Self(1 << 8);
    pub const REPORTING: Self = Self(1 << 9);
    pub const CDR: Self = Self(1 << 10);
    pub const DIALPLAN: Self = Self(1 << 11);
    pub const ORIGINATE: Self = Self(1 << 12);
    pub const AGI: Self = Self(1 << 13);
    /// `EVENT_FLAG_HOOKRESPONSE`: internal to Asterisk, no name in `manager.conf`.
    pub const HOOKRESPONSE: Self = Self(1 << 14);
    pub const CC: Self = Self(1 << 15);
    pub const AOC: Self = Self(1 << 16);
    pub const TEST: Self = Self(1 << 17);
    pub const SECURITY: Self = Self(1 << 18);
    pub const MESSAGE: Self = Self(1 << 30);
    /// `all` (and `on`): Asterisk's `INT_MAX`, every bit but bit 31.
    pub const ALL: Self = Self(0x7FFF_FFFF);

    /// The set with exactly these bits.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The bit mask.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if every class of `other` is in `self` (`NONE` is in every set).
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if `self` and `other` share a class: Asterisk's test for "this user
    /// may read this event" and "this user may run this action".
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The classes of either set.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True for the empty set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The class called `name` (ASCII case-insensitive), `all` and `none` included.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("all") {
            return Some(Self::ALL);
        }
        if name.eq_ignore_ascii_case("none") {
            return Some(Self::NONE);
        }
        NAMED
            .iter()
            .chain(std::iter::once(&MESSAGE_NAME))
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|&(c, _)| c)
    }

    /// Parses a class list as `manager.conf` (`read = call,agent`) and the
    /// `Events:`/`EventMask:` header take it, with the values Asterisk's
    /// `strings_to_mask()` gives:
    ///
    /// - all digits: a decimal bit mask (`0` is none, `1` is `system`, not "true");
    /// - Asterisk's booleans: `on`, `yes`, `true`, `y`, `t` are [`Classes::ALL`];
    ///   `off`, `no`, `false`, `n`, `f` are [`Classes::NONE`];
    /// - otherwise a comma-separated list of class names, `all` and `none` included.
    ///
    /// Unlike Asterisk, names are matched ASCII case-insensitively, spaces around
    /// the whole value and around each name are ignored, and an unknown name is an
    /// error (Asterisk ignores it silently, which hides typos). Empty items
    /// (`call,,agent`) are ignored.
    pub fn parse(text: &str) -> Result<Self, ClassesError> {
        let text = text.trim_matches(is_space);
        if text.is_empty() {
            return Err(ClassesError::Empty);
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<u32>()
                .map(Self)
                .map_err(|_| ClassesError::MaskOverflow(text.to_owned()));
        }
        const TRUE: [&str; 5] = ["on", "yes", "true", "y", "t"];
        const FALSE: [&str; 5] = ["off", "no", "false", "n", "f"];
        if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
            return Ok(Self::ALL);
        }
        if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
            return Ok(Self::NONE);
        }
        let mut classes = Self::NONE;
        for item in text.split(',') {
            let item = item.trim_matches(is_space);
            if item.is_empty() {
                continue;
            }
            match Self::from_name(item) {
                Some(c) => classes = classes.union(c),
                None => return Err(ClassesError::Unknown(item.to_owned())),
            }
        }
        Ok(classes)
    }

    /// Reads the value of an event's `Privilege:` header (`call,all`, `Call`,
    /// `agent,all`, `<none>`) as the classes it names, leaving out `all` (which
    /// Asterisk appends to every non-empty privilege): `call,all` is
    /// [`Classes::CALL`]. Case-insensitive; unknown names are ignored.
    pub fn from_privilege(value: &str) -> Self {
        value
            .split(',')
            .map(|item| item.trim_matches(is_space))
            .filter(|item| !item.eq_ignore_ascii_case("all"))
            .filter_map(Self::from_name)
            .fold(Self::NONE, Self::union)
    }

    /// The value of a `Privilege:` header for an event of these classes, as
    /// Asterisk's `authority_to_str()` writes it: each named class in Asterisk's
    /// order, then `all` (whose `INT_MAX` mask intersects every non-empty set), all
    /// joined by commas: `call,all`, `call,agent,all`, `system,all`. The empty set
    /// (and Asterisk's shutdown class, all 32 bits) is `<none>`. Same text as the
    /// `Display` implementation, which writes without allocating.
    pub fn privilege(&self) -> String {
        self.to_string()
    }
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl fmt::Display for Classes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.0 != SHUTDOWN {
            for (class, name) in NAMED.iter().chain([&MESSAGE_NAME, &(Self::ALL, "all")]) {
                if self.intersects(*class) {
                    f.write_str(sep)?;
                    f.write_str(name)?;
                    sep = ",";
                }
            }
        }
        if sep.is_empty() {
            f.write_str("<none>")?;
        }
        Ok(())
    }
}

impl std::ops::BitOr for Classes {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Classes {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_values_are_asterisks() {
        // manager.h: SYSTEM 1<<0 ... AGI 1<<13, HOOKRESPONSE 1<<14, CC 1<<15,
        // AOC 1<<16, TEST 1<<17, SECURITY 1<<18, MESSAGE 1<<30; "all" is INT_MAX.
        let expected: [(Classes, u32); 20] = [
            (Classes::SYSTEM, 1),
            (Classes::CALL, 2),
            (Classes::LOG, 4),
            (Classes::VERBOSE, 8),
            (Classes::COMMAND, 16),
            (Classes::AGENT, 32),
            (Classes::USER, 64),
            (Classes::CONFIG, 128),
            (Classes::DTMF, 256),
            (Classes::REPORTING, 512),
            (Classes::CDR, 1024),
            (Classes::DIALPLAN, 2048),
            (Classes::ORIGINATE, 4096),
            (Classes::AGI, 8192),
            (Classes::HOOKRESPONSE, 16384),
            (Classes::CC, 32768),
            (Classes::AOC, 65536),
            (Classes::TEST, 131_072),
            (Classes::SECURITY, 262_144),
            (Classes::MESSAGE, 1_073_741_824),
        ];
        for (class, bits) in expected {
            assert_eq!(class.bits(), bits, "{class:?}");
        }
        assert_eq!(Classes::ALL.bits(), i32::MAX as u32);
        assert_eq!(Classes::NONE.bits(), 0);
    }

    #[test]
    fn parses_lists_booleans_and_masks() {
        assert_eq!(
            Classes::parse("call,agent"),
            Ok(Classes::CALL | Classes::AGENT)
        );
        assert_eq!(
            Classes::parse(" Call , AGENT ,, dtmf "),
            Ok(Classes::CALL | Classes::AGENT | Classes::DTMF)
        );
        assert_eq!(Classes::parse("all"), Ok(Classes::ALL));
        assert_eq!(Classes::parse("call,all"), Ok(Classes::ALL));
        assert_eq!(Classes::parse("none"), Ok(Classes::NONE));
        assert_eq!(Classes::parse("call,none"), Ok(Classes::CALL));
        for on in ["on", "ON", "yes", "true", "y", "t", " On "] {
            assert_eq!(Classes::parse(on), Ok(Classes::ALL), "{on}");
        }
        for off in ["off", "Off", "no", "false", "n", "f"] {
            assert_eq!(Classes::parse(off), Ok(Classes::NONE), "{off}");
        }
        // Digits are a mask before they are booleans: "1" is system, "0" none.
        assert_eq!(Classes::parse("1"), Ok(Classes::SYSTEM));
        assert_eq!(Classes::parse("0"), Ok(Classes::NONE));
        assert_eq!(Classes::parse("34"), Ok(Classes::CALL | Classes::AGENT));
        assert_eq!(
            Classes::parse("4294967295"),
            Ok(Classes::from_bits(u32::MAX))
        );
        assert_eq!(
            Classes::parse("4294967296"),
            Err(ClassesError::MaskOverflow("4294967296".into()))
        );
        assert_eq!(Classes::parse(""), Err(ClassesError::Empty));
        assert_eq!(Classes::parse("  "), Err(ClassesError::Empty));
        assert_eq!(
            Classes::parse("call,calls"),
            Err(ClassesError::Unknown("calls".into()))
        );
        assert_eq!(
            Classes::parse("hookresponse"),
            Err(ClassesError::Unknown("hookresponse".into()))
        );
        assert_eq!(Classes::parse("message"), Ok(Classes::MESSAGE));
        assert_eq!(Classes::parse("security"), Ok(Classes::SECURITY));
    }

    #[test]
    fn renders_privilege_like_asterisk() {
        // Single classes, as in the captures.
        for (class, text) in [
            (Classes::CALL, "call,all"),
            (Classes::AGENT, "agent,all"),
            (Classes::SYSTEM, "system,all"),
            (Classes::SECURITY, "security,all"),
            (Classes::DIALPLAN, "dialplan,all"),
            (Classes::REPORTING, "reporting,all"),
            (Classes::CDR, "cdr,all"),
            (Classes::USER, "user,all"),
            (Classes::COMMAND, "command,all"),
            (Classes::DTMF, "dtmf,all"),
            (Classes::MESSAGE, "message,all"),
        ] {
            assert_eq!(class.privilege(), text);
        }
        // Several classes: each named one in perms[] order, then "all".
        assert_eq!(
            (Classes::AGENT | Classes::CALL).privilege(),
            "call,agent,all"
        );
        assert_eq!(
            (Classes::MESSAGE | Classes::SYSTEM | Classes::CC).privilege(),
            "system,cc,message,all"
        );
        // HOOKRESPONSE has no name but is inside INT_MAX.
        assert_eq!(Classes::HOOKRESPONSE.privilege(), "all");
        assert_eq!(
            Classes::ALL.privilege(),
            "system,call,log,verbose,command,agent,user,config,dtmf,reporting,cdr,\
             dialplan,originate,agi,cc,aoc,test,security,message,all"
        );
        assert_eq!(Classes::NONE.privilege(), "<none>");
        assert_eq!(Classes::from_bits(1 << 31).privilege(), "<none>");
        assert_eq!(Classes::from_bits(u32::MAX).privilege(), "<none>");
        assert_eq!(format!("{}", Classes::CDR), "cdr,all");
    }

    #[test]
    fn reads_privilege_headers() {
        assert_eq!(Classes::from_privilege("call,all"), Classes::CALL);
        assert_eq!(Classes::from_privilege("Call"), Classes::CALL);
        assert_eq!(
            Classes::from_privilege("call,agent,all"),
            Classes::CALL | Classes::AGENT
        );
        assert_eq!(Classes::from_privilege("<none>"), Classes::NONE);
        assert_eq!(Classes::from_privilege("all"), Classes::NONE);
        for class in NAMED.iter().chain([&MESSAGE_NAME]).map(|&(c, _)| c) {
            assert_eq!(Classes::from_privilege(&class.privilege()), class);
        }
    }

    #[test]
    fn set_operations() {
        let user = Classes::CALL | Classes::AGENT;
        assert!(user.contains(Classes::CALL));
        assert!(!user.contains(Classes::CALL | Classes::SYSTEM));
        assert!(user.contains(Classes::NONE));
        assert!(user.intersects(Classes::CALL | Classes::SYSTEM));
        assert!(!user.intersects(Classes::SYSTEM | Classes::SECURITY));
        assert!(!user.intersects(Classes::NONE));
        assert!(Classes::ALL.contains(Classes::MESSAGE | Classes::HOOKRESPONSE));
        assert!(!Classes::ALL.contains(Classes::from_bits(1 << 31)));
        let mut c = Classes::NONE;
        assert!(c.is_empty());
        c |= Classes::DTMF;
        assert_eq!(c, Classes::DTMF);
        assert_eq!(Classes::from_name("DialPlan"), Some(Classes::DIALPLAN));
        assert_eq!(Classes::from_name("nope"), None);
    }
}
