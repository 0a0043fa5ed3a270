//! What a token lets its holder do through the gateway: the actions of the
//! whitelist ([`Action`]) and the `ami` claim ([`AmiGrants`]): which of them, on
//! which endpoints, in which queues.

/// Most names one list of the `ami` claim may hold.
pub const MAX_GRANT_NAMES: usize = 256;
/// Longest endpoint or queue name in the `ami` claim, in bytes (as a request value).
pub const MAX_GRANT_NAME_BYTES: usize = 128;
/// The wildcard of every list of the claim.
pub const ANY: &str = "*";

/// An action of the whitelist: the only AMI actions a browser can have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Originate,
    Hangup,
    Redirect,
    Atxfer,
    MixMonitor,
    StopMixMonitor,
    QueuePause,
    QueueAdd,
    QueueRemove,
    QueueStatus,
}

impl Action {
    /// Every action of the whitelist.
    pub const ALL: [Action; 10] = [
        Action::Originate,
        Action::Hangup,
        Action::Redirect,
        Action::Atxfer,
        Action::MixMonitor,
        Action::StopMixMonitor,
        Action::QueuePause,
        Action::QueueAdd,
        Action::QueueRemove,
        Action::QueueStatus,
    ];

    /// The canonical AMI name (what is written after `Action: `).
    pub fn name(self) -> &'static str {
        match self {
            Action::Originate => "Originate",
            Action::Hangup => "Hangup",
            Action::Redirect => "Redirect",
            Action::Atxfer => "Atxfer",
            Action::MixMonitor => "MixMonitor",
            Action::StopMixMonitor => "StopMixMonitor",
            Action::QueuePause => "QueuePause",
            Action::QueueAdd => "QueueAdd",
            Action::QueueRemove => "QueueRemove",
            Action::QueueStatus => "QueueStatus",
        }
    }

    /// The whitelisted action named `name` (ASCII case-insensitive), if any.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Action`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionSet(u16);

impl ActionSet {
    /// No action.
    pub const NONE: ActionSet = ActionSet(0);
    /// Every action of the whitelist (the claim's `"*"`).
    pub const ALL: ActionSet = ActionSet((1 << Action::ALL.len()) - 1);

    /// The set of `actions`.
    pub fn of(actions: &[Action]) -> ActionSet {
        let mut set = ActionSet::NONE;
        for &a in actions {
            set.insert(a);
        }
        set
    }

    pub fn insert(&mut self, action: Action) {
        self.0 |= action.bit();
    }

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A list of endpoint or queue names, or `"*"` (every name). Names compare exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    any: bool,
    names: Vec<String>,
}

impl Names {
    /// No name.
    pub fn none() -> Names {
        Names::default()
    }

    /// Every name (`["*"]`).
    pub fn any() -> Names {
        Names {
            any: true,
            names: Vec::new(),
        }
    }

    /// Exactly `names` (a `"*"` among them makes it [`any`](Self::any)).
    pub fn of<S: AsRef<str>>(names: &[S]) -> Names {
        let mut n = Names::none();
        for s in names {
            n.push(s.as_ref());
        }
        n
    }

    fn push(&mut self, name: &str) {
        if name == ANY {
            self.any = true;
        } else if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_owned());
        }
    }

    /// True for `"*"`.
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        !self.any && self.names.is_empty()
    }

    /// Is `name` granted (listed, or `"*"`)?
    pub fn contains(&self, name: &str) -> bool {
        self.any || self.listed(name)
    }

    /// Is `name` one of the names listed (`"*"` aside)?
    pub fn listed(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The first name listed (`"*"` aside), in the claim's order.
    pub fn first(&self) -> Option<&str> {
        self.names.first().map(String::as_str)
    }
}

/// The `ami` claim of a token: `{"actions":[..],"endpoints":[..],"queues":[..]}`,
/// each list optional (missing = nothing) and `["*"]` meaning everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmiGrants {
    /// The actions the holder may run (names not in the whitelist are ignored).
    pub actions: ActionSet,
    /// The endpoints (`PJSIP/101`) whose channels the holder owns and which it may
    /// ring (Originate) or put in and out of queues.
    pub endpoints: Names,
    /// The queues the holder may act on and see.
    pub queues: Names,
}

impl AmiGrants {
    /// The grants of the claim's three lists. `None` (a malformed claim) when a list
    /// holds more than [`MAX_GRANT_NAMES`] entries, or an endpoint or queue name is
    /// empty, longer than [`MAX_GRANT_NAME_BYTES`] or holds a control byte (such a
    /// name could never match a request). Action names are matched ASCII
    /// case-insensitively; unknown ones are ignored.
    pub fn from_claim<S: AsRef<str>>(
        actions: &[S],
        endpoints: &[S],
        queues: &[S],
    ) -> Option<AmiGrants> {
        if [actions.len(), endpoints.len(), queues.len()]
            .iter()
            .any(|&n| n > MAX_GRANT_NAMES)
        {
            return None;
        }
        let mut set = ActionSet::NONE;
        for a in actions {
            match a.as_ref() {
                ANY => set = ActionSet::ALL,
                name => {
                    if let Some(action) = Action::from_name(name) {
                        set.insert(action);
                    }
                }
            }
        }
        let names = |list: &[S]| {
            list.iter()
                .all(|s| valid_name(s.as_ref()))
                .then(|| Names::of(list))
        };
        Some(AmiGrants {
            actions: set,
            endpoints: names(endpoints)?,
            queues: names(queues)?,
        })
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_GRANT_NAME_BYTES && !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}
