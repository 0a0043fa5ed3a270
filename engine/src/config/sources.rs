//! Where each `serve` setting comes from: built-in defaults, a TOML file (`--config`),
//! `SWITCHBOARD_*` environment variables and flags, in increasing precedence. The
//! catalogue of settings is the clap definition of [`ServeArgs`] itself: the flag
//! `--max-queued-bytes` is the TOML key `max_queued_bytes` and the variable
//! `SWITCHBOARD_MAX_QUEUED_BYTES`, so a field added there needs no code here.
//!
//! Every value, whatever its source, goes through the flag's own value parser, then
//! [`ServeArgs::validate`]. Errors name the file and line or the variable and the key.
//! Secrets (keys ending in `secret`) are never printed: not in errors, not in reports.
//!
//! TOML tables group keys: `[t] k` is the setting `t_k` (`[history] size` is
//! `history_size`), except the keys in [`TABLE_KEY_EXCEPTIONS`] (`[auth] mode` is
//! `auth`, `[auth] jwt_secret` is `jwt_secret`).

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use toml::de::{DeTable, DeValue};

use super::ServeArgs;

/// Prefix of the settings' environment variables.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";
/// The variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SWITCHBOARD_CONFIG";
/// What a secret's value is shown as.
pub const MASK: &str = "***";
/// A setting whose key ends with this is a secret.
const SECRET_SUFFIX: &str = "secret";
/// Largest config file read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Dotted TOML keys that do not follow the `[t] k` = `t_k` rule, and their setting.
pub const TABLE_KEY_EXCEPTIONS: &[(&str, &str)] = &[
    ("auth.mode", "auth"),
    ("auth.jwt_secret", "jwt_secret"),
    ("auth.publisher_secret", "publisher_secret"),
    ("auth.allowed_origins", "allowed_origins"),
    ("ami.address", "ami"),
];

/// Where a setting's value came from, in increasing precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        }
    }
}

/// How a setting takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A flag without a value (`--echo`): TOML `true`/`false`, env `true|false|1|0`.
    Switch,
    /// A comma-separated list: TOML a string or an array of strings.
    List,
    /// One value in the flag's syntax: TOML a string or a number.
    Value,
}

/// One setting as clap describes it.
#[derive(Debug, Clone)]
struct Spec {
    id: String,
    long: String,
    /// The TOML key (the flag with `_` for `-`).
    key: String,
    env: String,
    kind: Kind,
    secret: bool,
    default: Option<String>,
}

/// A setting's effective value and its source.
#[derive(Debug, Clone)]
pub struct Effective {
    pub key: String,
    pub source: Source,
    /// The value in the flag's syntax; `None` when unset (an optional setting).
    raw: Option<String>,
    kind: Kind,
    secret: bool,
}

impl Effective {
    /// The value as `check-config` prints it: `***` for a set secret, `(unset)`,
    /// `true`/`false`, an integer bare, a list as a TOML array, else a TOML string.
    pub fn display_value(&self) -> String {
        let Some(raw) = &self.raw else {
            return "(unset)".into();
        };
        if self.secret {
            return MASK.into();
        }
        match self.kind {
            Kind::Switch => raw.clone(),
            Kind::List => {
                let items: Vec<String> = raw.split(',').map(toml_string).collect();
                format!("[{}]", items.join(", "))
            }
            Kind::Value if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => {
                raw.clone()
            }
            Kind::Value => toml_string(raw),
        }
    }

    /// The value in the flag's syntax, if set and not a secret.
    pub fn shown_raw(&self) -> Option<&str> {
        self.raw.as_deref().filter(|_| !self.secret)
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The resolved settings.
#[derive(Debug)]
pub struct Loaded {
    pub args: ServeArgs,
    /// Every setting in `--help` order.
    pub settings: Vec<Effective>,
}

impl Loaded {
    /// `check-config`'s output: one `key = value  # source` line per setting.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for s in &self.settings {
            out.push_str(&format!(
                "{} = {}  # {}\n",
                s.key,
                s.display_value(),
                s.source.as_str()
            ));
        }
        out
    }
}

/// Everything wrong with a configuration, one message each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// The raw material of a configuration, before any parsing.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// The config file's name (for messages) and text.
    pub file: Option<(&'a str, &'a str)>,
    /// Environment variables (all of them: those that are not settings are ignored).
    pub env: Vec<(String, String)>,
    /// Flags given on the command line: clap argument id and raw value (lists
    /// comma-joined, switches `true`).
    pub flags: Vec<(String, String)>,
}

/// The `serve` flags as a stand-alone command (no binary name, no subcommand).
fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve").no_binary_name(true))
}

fn specs(cmd: &Command) -> Vec<Spec> {
    cmd.get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let key = long.replace('-', "_");
            let kind = match a.get_action() {
                ArgAction::SetTrue => Kind::Switch,
                _ if a.get_value_delimiter().is_some() => Kind::List,
                _ => Kind::Value,
            };
            let defaults: Vec<&str> = a
                .get_default_values()
                .iter()
                .filter_map(|v| v.to_str())
                .collect();
            // A switch's `false` default only appears once clap builds the command.
            let default = match kind {
                Kind::Switch => Some("false".to_owned()),
                _ => (!defaults.is_empty()).then(|| defaults.join(",")),
            };
            Some(Spec {
                id: a.get_id().to_string(),
                long: long.to_owned(),
                env: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                secret: key.ends_with(SECRET_SUFFIX),
                kind,
                default,
                key,
            })
        })
        .filter(|s| s.id != "help" && s.id != "version")
        .collect()
}

/// The flags given on the command line, from the `serve`/`check-config` matches.
pub fn flags_from_matches(matches: &ArgMatches) -> Vec<(String, String)> {
    specs(&serve_command())
        .into_iter()
        .filter(|s| matches.value_source(&s.id) == Some(ValueSource::CommandLine))
        .filter_map(|s| {
            let raw: Vec<String> = matches
                .get_raw(&s.id)?
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some((s.id, raw.join(",")))
        })
        .collect()
}

/// Reads the config file (`--config`, else `$SWITCHBOARD_CONFIG`) and the process
/// environment, and resolves them with the command-line flags in `matches`.
pub fn load(matches: &ArgMatches, config: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let path: Option<PathBuf> = config.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let text = match &path {
        Some(p) => Some(read_config_file(p).map_err(|e| ConfigErrors(vec![e]))?),
        None => None,
    };
    let name = path.as_ref().map(|p| p.display().to_string());
    let mut errors = Vec::new();
    let env = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            if !k.starts_with(ENV_PREFIX) {
                return None;
            }
            match v.into_string() {
                Ok(v) => Some((k, v)),
                Err(_) => {
                    errors.push(format!("environment variable {k}: value is not UTF-8"));
                    None
                }
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    resolve(&Inputs {
        file: name.as_deref().zip(text.as_deref()),
        env,
        flags: flags_from_matches(matches),
    })
}

fn read_config_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("config file {shown}: {e}"))?;
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "config file {shown}: larger than {MAX_CONFIG_FILE_BYTES} bytes"
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("config file {shown}: {e}"))
}

/// Resolves defaults < file < environment < flags into validated [`ServeArgs`].
pub fn resolve(inputs: &Inputs<'_>) -> Result<Loaded, ConfigErrors> {
    let cmd = serve_command();
    let specs = specs(&cmd);
    let mut errors = Vec::new();
    let mut chosen: Vec<(Option<String>, Source)> = specs
        .iter()
        .map(|s| (s.default.clone(), Source::Default))
        .collect();

    if let Some((name, text)) = inputs.file {
        for (i, raw) in file_values(name, text, &specs, &mut errors) {
            chosen[i] = (Some(raw), Source::File);
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        let Some((_, value)) = inputs.env.iter().find(|(k, _)| *k == spec.env) else {
            continue;
        };
        if value.is_empty() {
            continue; // an empty variable counts as unset
        }
        let raw = if spec.kind == Kind::Switch {
            match parse_switch(value) {
                Some(b) => b.to_string(),
                None => {
                    errors.push(format!(
                        "environment variable {}: expected true, false, 1 or 0",
                        spec.env
                    ));
                    continue;
                }
            }
        } else {
            value.clone()
        };
        if let Err(e) = check_value(&cmd, spec, &raw) {
            errors.push(format!("environment variable {}: {e}", spec.env));
            continue;
        }
        chosen[i] = (Some(raw), Source::Env);
    }
    for (id, raw) in &inputs.flags {
        if let Some(i) = specs.iter().position(|s| s.id == *id) {
            chosen[i] = (Some(raw.clone()), Source::Flag);
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    // The winners as one command line (defaults left to clap), parsed by clap itself.
    let mut argv: Vec<String> = Vec::new();
    for (spec, (raw, source)) in specs.iter().zip(&chosen) {
        let (Some(raw), false) = (raw, *source == Source::Default) else {
            continue;
        };
        match spec.kind {
            Kind::Switch if raw == "true" => argv.push(format!("--{}", spec.long)),
            Kind::Switch => {} // off is the default
            Kind::List | Kind::Value => argv.push(format!("--{}={raw}", spec.long)),
        }
    }
    let args = cmd
        .try_get_matches_from(argv)
        .and_then(|m| ServeArgs::from_arg_matches(&m))
        .map_err(|e| ConfigErrors(vec![clap_message(&e)]))?;
    args.validate().map_err(|e| ConfigErrors(vec![e]))?;

    let settings = specs
        .into_iter()
        .zip(chosen)
        .map(|(spec, (raw, source))| Effective {
            key: spec.key,
            source,
            raw,
            kind: spec.kind,
            secret: spec.secret,
        })
        .collect();
    Ok(Loaded { args, settings })
}

/// The settings in a TOML document, as (spec index, raw value); problems go to
/// `errors` as `FILE:LINE: KEY: what is wrong`.
fn file_values(
    name: &str,
    text: &str,
    specs: &[Spec],
    errors: &mut Vec<String>,
) -> Vec<(usize, String)> {
    let table = match DeTable::parse(text) {
        Ok(t) => t.into_inner(),
        Err(e) => {
            errors.push(format!("{name}: {}", e.to_string().trim_end()));
            return Vec::new();
        }
    };
    let mut leaves = Vec::new();
    leaves_of(&table, "", &mut leaves);
    // Per setting: the dotted key that set it, its line, and the raw value.
    let mut found: BTreeMap<usize, (String, usize, String)> = BTreeMap::new();
    for (dotted, offset, value) in leaves {
        let line = line_of(text, offset);
        let at = format!("{name}:{line}: {dotted}");
        let setting = TABLE_KEY_EXCEPTIONS
            .iter()
            .find(|(k, _)| *k == dotted)
            .map_or_else(|| dotted.replace('.', "_"), |(_, s)| (*s).to_owned());
        let Some(i) = specs.iter().position(|s| s.key == setting) else {
            let hint = specs
                .iter()
                .find(|s| s.key == setting.replace('-', "_"))
                .map(|s| format!(" (did you mean {}?)", s.key))
                .unwrap_or_default();
            errors.push(format!(
                "{at}: unknown key{hint}; the keys are listed in CONFIG.md and \
                 `switchboard serve --help`"
            ));
            continue;
        };
        let spec = &specs[i];
        let raw = match toml_raw(spec, value) {
            Ok(raw) => raw,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        if let Err(e) = check_value(&serve_command(), spec, &raw) {
            errors.push(format!("{at}: {e}"));
            continue;
        }
        if let Some((other, other_line, _)) = found.get(&i) {
            errors.push(format!(
                "{at}: sets {} again (already set by {other} on line {other_line})",
                spec.key
            ));
            continue;
        }
        found.insert(i, (dotted, line, raw));
    }
    found.into_iter().map(|(i, (_, _, raw))| (i, raw)).collect()
}

/// Every non-table value of `table` with its dotted key and its key's byte offset.
fn leaves_of<'t, 'i>(
    table: &'t DeTable<'i>,
    prefix: &str,
    out: &mut Vec<(String, usize, &'t DeValue<'i>)>,
) {
    for (key, value) in table.iter() {
        let dotted = format!("{prefix}{}", key.get_ref());
        match value.get_ref() {
            DeValue::Table(t) => leaves_of(t, &format!("{dotted}."), out),
            v => out.push((dotted, key.span().start, v)),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A TOML value in the flag's syntax, or what was expected instead.
fn toml_raw(spec: &Spec, value: &DeValue<'_>) -> Result<String, String> {
    let found = match value {
        DeValue::Boolean(b) if spec.kind == Kind::Switch => return Ok(b.to_string()),
        _ if spec.kind == Kind::Switch => type_name(value),
        DeValue::String(s) => return Ok(s.to_string()),
        DeValue::Integer(i) => {
            return i128::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| "integer out of range".to_string());
        }
        DeValue::Float(f) => return Ok(f.as_str().to_owned()),
        DeValue::Array(items) if spec.kind == Kind::List => {
            let mut out = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(s) if !s.contains(',') && !s.is_empty() => {
                        out.push(s.to_string())
                    }
                    _ => return Err("expected an array of non-empty strings without commas".into()),
                }
            }
            if out.is_empty() {
                return Err("expected at least one entry".into());
            }
            return Ok(out.join(","));
        }
        v => type_name(v),
    };
    let expected = match spec.kind {
        Kind::Switch => "true or false".to_string(),
        Kind::List => "a string or an array of strings".to_string(),
        Kind::Value => match &spec.default {
            Some(d) if !spec.secret => format!("a string or a number such as {}", toml_string(d)),
            _ => "a string or a number".to_string(),
        },
    };
    Err(format!("expected {expected}, found {found}"))
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn parse_switch(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Runs the flag's own value parser on `raw` (a switch's `true`/`false` is already
/// checked: the flag takes no value).
fn check_value(cmd: &Command, spec: &Spec, raw: &str) -> Result<(), String> {
    if spec.kind == Kind::Switch {
        return Ok(());
    }
    match cmd
        .clone()
        .try_get_matches_from([format!("--{}={raw}", spec.long)])
    {
        Ok(_) => Ok(()),
        Err(e) if spec.secret => Err(format!("invalid value: {}", clap_message(&e))),
        Err(e) => Err(format!("invalid value {raw:?}: {}", clap_message(&e))),
    }
}

/// The useful part of a clap error: the value parser's message, or the valid values.
fn clap_message(e: &clap::Error) -> String {
    if let Some(source) = e.source() {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of: {}", valid.join(", "));
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Loaded, ConfigErrors> {
        resolve(&Inputs {
            file: file.map(|t| ("test.toml", t)),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn setting<'a>(l: &'a Loaded, key: &str) -> &'a Effective {
        l.settings.iter().find(|s| s.key == key).unwrap()
    }

    fn errors(r: Result<Loaded, ConfigErrors>) -> String {
        r.expect_err("should be rejected").to_string()
    }

    #[test]
    fn every_flag_has_a_key_and_a_variable() {
        let specs = specs(&serve_command());
        let keys: Vec<&str> = specs.iter().map(|s| s.key.as_str()).collect();
        for key in [
            "listen",
            "max_publish_bytes",
            "echo",
            "auth",
            "jwt_secret",
            "allowed_origins",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        let s = specs.iter().find(|s| s.key == "max_queued_bytes").unwrap();
        assert_eq!(s.env, "SWITCHBOARD_MAX_QUEUED_BYTES");
        assert_eq!(s.long, "max-queued-bytes");
        assert!(specs.iter().find(|s| s.key == "jwt_secret").unwrap().secret);
        assert!(!specs.iter().find(|s| s.key == "listen").unwrap().secret);
        // Every exception names a real setting.
        for (_, setting) in TABLE_KEY_EXCEPTIONS {
            assert!(keys.contains(setting), "{setting}");
        }
    }

    #[test]
    fn defaults_alone() {
        let l = resolve_with(None, &[], &[]).unwrap();
        assert_eq!(l.args.max_publish_bytes, 1 << 20);
        assert_eq!(l.args.auth, super::super::AuthMode::Off);
        assert!(l.settings.iter().all(|s| s.source == Source::Default));
        assert_eq!(setting(&l, "shards").display_value(), "(unset)");
        assert_eq!(setting(&l, "max_publish_bytes").display_value(), "\"1MiB\"");
        assert_eq!(setting(&l, "allowed_origins").display_value(), "[\"*\"]");
        assert_eq!(setting(&l, "echo").display_value(), "false");
    }

    #[test]
    fn precedence_flags_env_file_default() {
        let file =
            "max_publish_bytes = \"2KiB\"\nmax_head_bytes = 4096\nmax_headers = 10\necho = true\n";
        let env = [
            ("SWITCHBOARD_MAX_HEAD_BYTES", "2KiB"),
            ("SWITCHBOARD_MAX_HEADERS", "20"),
            ("SWITCHBOARD_LOG", "debug"),
        ];
        let flags = [("max_headers", "30")];
        let l = resolve_with(Some(file), &env, &flags).unwrap();
        assert_eq!(l.args.max_publish_bytes, 2048);
        assert_eq!(setting(&l, "max_publish_bytes").source, Source::File);
        assert_eq!(l.args.max_head_bytes, 2048);
        assert_eq!(setting(&l, "max_head_bytes").source, Source::Env);
        assert_eq!(l.args.max_headers, 30);
        assert_eq!(setting(&l, "max_headers").source, Source::Flag);
        assert!(l.args.echo);
        assert_eq!(l.args.max_queued_bytes, 4 << 20);
        assert_eq!(setting(&l, "max_queued_bytes").source, Source::Default);
        let report = l.report();
        assert!(report.contains("max_headers = 30  # flag\n"), "{report}");
        assert!(
            report.contains("max_head_bytes = \"2KiB\"  # env\n"),
            "{report}"
        );
        assert!(report.contains("echo = true  # file\n"), "{report}");
    }

    #[test]
    fn tables_and_exceptions() {
        let file = "[auth]\nmode = \"required\"\n\
                    jwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
                    allowed_origins = [\"https://a.example\", \"http://localhost:3000\"]\n";
        let l = resolve_with(Some(file), &[], &[]).unwrap();
        assert_eq!(l.args.auth, super::super::AuthMode::Required);
        assert_eq!(
            l.args.jwt_secret.as_ref().map(|s| s.expose()),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(l.args.allowed_origins.len(), 2);
        let policy = l.args.auth_policy();
        assert!(policy.required && policy.verifier.is_some());
        assert!(policy.origin_allowed(Some(b"http://localhost:3000")));
        assert!(!policy.origin_allowed(Some(b"https://b.example")));
        assert_eq!(setting(&l, "jwt_secret").display_value(), MASK);
        assert!(!l.report().contains("0123456789abcdef"));
        assert!(!format!("{:?}", l.args).contains("0123456789abcdef"));
        // The general rule: `[t] k` is `t_k`.
        let l = resolve_with(Some("[max_publish]\nbytes = 100\n"), &[], &[]).unwrap();
        assert_eq!(l.args.max_publish_bytes, 100);
        // The same setting twice.
        let e = errors(resolve_with(
            Some("jwt_secret = \"a\"\n[auth]\njwt_secret = \"b\"\n"),
            &[],
            &[],
        ));
        assert!(e.contains("already set"), "{e}");
        assert!(!e.contains("\"a\"") && !e.contains("\"b\""), "{e}");
    }

    #[test]
    fn file_errors_name_file_line_and_key() {
        let e = errors(resolve_with(
            Some("listen = \"127.0.0.1:0\"\n\nmax_publsh_bytes = 5\n"),
            &[],
            &[],
        ));
        assert!(
            e.starts_with("test.toml:3: max_publsh_bytes: unknown key"),
            "{e}"
        );
        let e = errors(resolve_with(Some("max-publish-bytes = 5\n"), &[], &[]));
        assert!(e.contains("did you mean max_publish_bytes?"), "{e}");
        let e = errors(resolve_with(Some("[auth]\nmode = \"maybe\"\n"), &[], &[]));
        assert!(
            e.starts_with("test.toml:2: auth.mode: invalid value \"maybe\""),
            "{e}"
        );
        assert!(e.contains("off, required"), "{e}");
        let e = errors(resolve_with(Some("max_queued_bytes = \"4XB\"\n"), &[], &[]));
        assert!(
            e.starts_with("test.toml:1: max_queued_bytes: invalid value"),
            "{e}"
        );
        assert!(e.contains("unknown size unit"), "{e}");
        let e = errors(resolve_with(Some("echo = \"yes\"\n"), &[], &[]));
        assert_eq!(
            e,
            "test.toml:1: echo: expected true or false, found a string"
        );
        let e = errors(resolve_with(Some("max_headers = true\n"), &[], &[]));
        assert!(
            e.starts_with("test.toml:1: max_headers: expected a string or a number"),
            "{e}"
        );
        let e = errors(resolve_with(Some("listen = [\"a\"]\n"), &[], &[]));
        assert!(e.contains("found an array"), "{e}");
        let e = errors(resolve_with(Some("shards = 0\n"), &[], &[]));
        assert!(
            e.starts_with("test.toml:1: shards: invalid value \"0\""),
            "{e}"
        );
        // Several problems are all reported.
        let e = errors(resolve_with(Some("a = 1\nb = 2\n"), &[], &[]));
        assert_eq!(e.lines().count(), 2, "{e}");
        // Not TOML at all.
        let e = errors(resolve_with(Some("listen = \n"), &[], &[]));
        assert!(e.starts_with("test.toml: "), "{e}");
    }

    #[test]
    fn env_errors_and_switches() {
        let e = errors(resolve_with(
            None,
            &[("SWITCHBOARD_MAX_HEADERS", "lots")],
            &[],
        ));
        assert!(
            e.starts_with("environment variable SWITCHBOARD_MAX_HEADERS: invalid value \"lots\""),
            "{e}"
        );
        let e = errors(resolve_with(None, &[("SWITCHBOARD_ECHO", "yes")], &[]));
        assert!(e.contains("SWITCHBOARD_ECHO"), "{e}");
        let l = resolve_with(None, &[("SWITCHBOARD_ECHO", "1")], &[]).unwrap();
        assert!(l.args.echo);
        // A flag beats a switch turned off in the environment.
        let l = resolve_with(None, &[("SWITCHBOARD_ECHO", "false")], &[("echo", "true")]).unwrap();
        assert!(l.args.echo);
        // Empty means unset; unknown SWITCHBOARD_* variables are not settings.
        let l = resolve_with(
            None,
            &[("SWITCHBOARD_LISTEN", ""), ("SWITCHBOARD_NOPE", "1")],
            &[],
        )
        .unwrap();
        assert_eq!(setting(&l, "listen").source, Source::Default);
    }

    #[test]
    fn validation_runs_on_the_merged_result() {
        let e = errors(resolve_with(None, &[("SWITCHBOARD_AUTH", "required")], &[]));
        assert!(e.contains("jwt_secret"), "{e}");
        let e = errors(resolve_with(
            None,
            &[
                ("SWITCHBOARD_AUTH", "required"),
                ("SWITCHBOARD_JWT_SECRET", "short-secret-value"),
            ],
            &[],
        ));
        assert!(
            e.contains("at least 32 bytes") && !e.contains("short-secret-value"),
            "{e}"
        );
        let e = errors(resolve_with(Some("recv_buffers = 1000\n"), &[], &[]));
        assert!(e.contains("power of two"), "{e}");
        let e = errors(resolve_with(
            Some("allowed_origins = \"https://a.example/path\"\n"),
            &[],
            &[],
        ));
        assert!(e.contains("invalid origin"), "{e}");
    }
}
