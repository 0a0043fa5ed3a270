//! AMI users: name, secret, read and write classes, from `--user` specs and a TOML users
//! file (`--users FILE`), the way `manager.conf` sections describe them. Owns parsing
//! and lookup only; it never decides whether a login succeeds (see `session`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use switchboard_proto::ami::Classes;
use thiserror::Error;

/// One AMI user (a `manager.conf` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Matched ASCII case-insensitively at login, as Asterisk does.
    pub name: String,
    /// Compared byte for byte (plain login) or through the MD5 challenge.
    pub secret: String,
    /// Classes of events the user may receive (`read =`).
    pub read: Classes,
    /// Classes of actions the user may run (`write =`).
    pub write: Classes,
}

impl User {
    /// A user with every class, read and write.
    pub fn new(name: &str, secret: &str) -> User {
        User {
            name: name.to_string(),
            secret: secret.to_string(),
            read: Classes::ALL,
            write: Classes::ALL,
        }
    }
}

/// The users known to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: Vec<User>,
}

/// Why a users file was refused.
#[derive(Debug, Error)]
pub enum UsersError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid users file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
}

/// The users file: `[users.NAME]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    secret: String,
    read: Option<String>,
    write: Option<String>,
}

impl Users {
    /// The default when no user is configured: `admin` / `amp111` with every class.
    pub fn default_admin() -> Users {
        Users {
            users: vec![User::new("admin", "amp111")],
        }
    }

    /// Adds users; a name already present (case-insensitively) is an error.
    pub fn add(&mut self, users: impl IntoIterator<Item = User>) -> Result<(), UsersError> {
        for u in users {
            if self.find(&u.name).is_some() {
                return Err(UsersError::Duplicate(u.name));
            }
            self.users.push(u);
        }
        Ok(())
    }

    /// Parses a users file's text. Example:
    ///
    /// ```toml
    /// [users.admin]
    /// secret = "amp111"            # read and write default to "all"
    ///
    /// [users.panel]
    /// secret = "s3cret"
    /// read = "call,agent"          # manager.conf class lists
    /// write = "none"
    /// ```
    pub fn parse_toml(text: &str, path: &str) -> Result<Vec<User>, UsersError> {
        let invalid = |message: String| UsersError::Invalid {
            path: path.to_string(),
            message,
        };
        let file: UsersFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let classes = |name: &str, key: &str, v: &Option<String>| match v {
            None => Ok(Classes::ALL),
            Some(list) => {
                Classes::parse(list).map_err(|e| invalid(format!("users.{name}.{key}: {e}")))
            }
        };
        let mut out = Vec::new();
        for (name, e) in &file.users {
            if name.is_empty() {
                return Err(invalid("a user has an empty name".into()));
            }
            out.push(User {
                name: name.clone(),
                secret: e.secret.clone(),
                read: classes(name, "read", &e.read)?,
                write: classes(name, "write", &e.write)?,
            });
        }
        Ok(out)
    }

    /// Reads and parses a users file.
    pub fn load_file(path: &Path) -> Result<Vec<User>, UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: shown.clone(),
            source,
        })?;
        Users::parse_toml(&text, &shown)
    }

    /// The user called `name`, ASCII case-insensitively (Asterisk's `strcasecmp`).
    pub fn find(&self, name: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file() {
        let text = r#"
            [users.admin]
            secret = "amp111"

            [users.panel]
            secret = "s3:cret"
            read = "call,agent"
            write = "none"
        "#;
        let users = Users::parse_toml(text, "t.toml").unwrap();
        assert_eq!(
            users,
            vec![
                User::new("admin", "amp111"),
                User {
                    name: "panel".into(),
                    secret: "s3:cret".into(),
                    read: Classes::CALL | Classes::AGENT,
                    write: Classes::NONE,
                }
            ]
        );
        let mut all = Users::default();
        all.add(users).unwrap();
        assert_eq!(
            all.find("PANEL").map(|u| u.secret.as_str()),
            Some("s3:cret")
        );
        assert!(all.find("nobody").is_none());
        assert!(matches!(
            all.add([User::new("Admin", "x")]),
            Err(UsersError::Duplicate(_))
        ));
    }

    #[test]
    fn bad_users_files_say_why() {
        for (text, needle) in [
            ("[users.a]\nread = \"all\"\n", "secret"),
            (
                "[users.a]\nsecret = \"x\"\nread = \"calls\"\n",
                "users.a.read",
            ),
            ("[users.a]\nsecret = \"x\"\npassword = \"y\"\n", "password"),
            ("[users.a\n", "t.toml"),
            ("[other]\n", "other"),
        ] {
            let e = Users::parse_toml(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn load_file_reports_missing_files() {
        let e = Users::load_file(Path::new("/nonexistent/users.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/users.toml"), "{e}");
    }
}
