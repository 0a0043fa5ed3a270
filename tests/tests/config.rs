//! Configuration (CONFIG.md): a TOML file, `SWITCHBOARD_*` variables and flags with
//! precedence flags > environment > file > defaults, proven through `check-config`'s
//! report and through a real `serve`; `check-config`'s errors (exit 2, the key named)
//! and masked secrets; the example file at the repository root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use switchboard_e2e::*;

const JWT_SECRET: &str = "jwt-secret-that-is-long-enough-0123456789";
const PUBLISHER_SECRET: &str = "publisher-secret-abcdef";

/// A config file in a directory of its own, removed at drop.
struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let dir = std::env::temp_dir().join(format!("sb-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
        let path = dir.join("switchboard.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        TempConfig { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `switchboard` with every `SWITCHBOARD_*` variable of this process removed (so the
/// caller's environment cannot change the result) and `env` added.
fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin("switchboard"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs a command that must end by itself (check-config, or serve refusing its
/// config); kills it (by pid) and fails after a generous deadline.
fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not exit within 30 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_config(args: &[&str], env: &[(&str, &str)]) -> Checked {
    let mut full = vec!["check-config"];
    full.extend_from_slice(args);
    let out = run(switchboard(&full, env));
    Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `key = value  # source` line of `key` in a report, as (value, source).
fn report_line<'a>(report: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = report
        .lines()
        .find(|l| l.split(" = ").next() == Some(key))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{report}"));
    let (_, rest) = line.split_once(" = ").expect("key = value");
    rest.rsplit_once("  # ")
        .unwrap_or_else(|| panic!("no source in {line:?}"))
}

/// CONFIG.md "Precedence": each of four settings is given by a different set of layers
/// and `check-config` reports the value and source of the highest one.
#[test]
fn check_config_reports_values_and_sources_by_precedence() {
    let file = TempConfig::new(
        "precedence",
        "max_publish_bytes = \"2KiB\"\n\
         max_head_bytes = 4096\n\
         max_headers = 10\n\
         [auth]\n\
         allowed_origins = [\"https://app.example.com\", \"http://localhost:3000\"]\n",
    );
    let env = [
        ("SWITCHBOARD_MAX_HEAD_BYTES", "16KiB"),
        ("SWITCHBOARD_MAX_HEADERS", "20"),
        ("SWITCHBOARD_SSE_RETRY", "7s"),
    ];
    let c = check_config(
        &["--config", file.path(), "--max-headers", "30", "--echo"],
        &env,
    );
    assert_eq!(
        c.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        c.stdout,
        c.stderr
    );
    let r = &c.stdout;
    assert_eq!(report_line(r, "max_publish_bytes"), ("\"2KiB\"", "file"));
    assert_eq!(report_line(r, "max_head_bytes"), ("\"16KiB\"", "env"));
    assert_eq!(report_line(r, "max_headers"), ("30", "flag"));
    assert_eq!(report_line(r, "sse_retry"), ("\"7s\"", "env"));
    assert_eq!(report_line(r, "echo"), ("true", "flag"));
    assert_eq!(report_line(r, "max_queued_bytes"), ("\"4MiB\"", "default"));
    assert_eq!(report_line(r, "shards"), ("(unset)", "default"));
    assert_eq!(
        report_line(r, "allowed_origins"),
        (
            "[\"https://app.example.com\", \"http://localhost:3000\"]",
            "file"
        )
    );
    // Every line has the same shape.
    for line in r.lines() {
        assert!(
            line.contains(" = ") && line.contains("  # "),
            "line {line:?} of:\n{r}"
        );
    }
}

/// CONFIG.md "Precedence", through a real server: the file's `max_publish_bytes` is
/// enforced (413 above it), a variable overrides the file, and a flag overrides both.
#[test]
fn serve_enforces_the_layered_publish_limit() {
    let file = TempConfig::new("serve", "max_publish_bytes = \"1KiB\"\nshards = 2\n");
    let start = |env: &[(&str, &str)], flags: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--config", file.path()];
        args.extend_from_slice(flags);
        Server::try_start_command(switchboard(&args, env), READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let status = |addr, len: usize| {
        http_request(
            addr,
            "POST",
            "/publish/cfg.t",
            &[],
            "x".repeat(len).as_bytes(),
        )
        .status
    };

    // The file alone.
    let server = start(&[], &[]);
    assert_eq!(server.shards(), 2, "shards from the file");
    assert_eq!(status(server.addr(), 1024), 202);
    assert_eq!(status(server.addr(), 1025), 413);
    drop(server);

    // The environment over the file.
    let server = start(&[("SWITCHBOARD_MAX_PUBLISH_BYTES", "2KiB")], &[]);
    assert_eq!(status(server.addr(), 2048), 202);
    assert_eq!(status(server.addr(), 2049), 413);
    drop(server);

    // A flag over both.
    let server = start(
        &[("SWITCHBOARD_MAX_PUBLISH_BYTES", "2KiB")],
        &["--max-publish-bytes", "512", "--shards", "1"],
    );
    assert_eq!(server.shards(), 1);
    assert_eq!(status(server.addr(), 512), 202);
    assert_eq!(status(server.addr(), 513), 413);
    assert_healthy(server.addr());
}

/// CONFIG.md "Errors": an unknown key, a bad value, a wrong type and a missing JWT
/// secret each make `check-config` (and `serve`) exit 2, naming the file, line and key.
#[test]
fn check_config_errors_exit_2_and_name_the_key() {
    let unknown = TempConfig::new(
        "unknown",
        "listen = \"127.0.0.1:0\"\n\nmax_publsh_bytes = 5\n",
    );
    let c = check_config(&["--config", unknown.path()], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.stderr.contains(&format!(
            "{}:3: max_publsh_bytes: unknown key",
            unknown.path()
        )),
        "{}",
        c.stderr
    );
    assert!(
        c.stdout.is_empty(),
        "no report for an invalid config: {}",
        c.stdout
    );

    let bad_value = TempConfig::new("badvalue", "[auth]\nmode = \"maybe\"\n");
    let c = check_config(&["--config", bad_value.path()], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.stderr.contains(":2: auth.mode: invalid value \"maybe\""),
        "{}",
        c.stderr
    );
    assert!(c.stderr.contains("off, required"), "{}", c.stderr);

    let wrong_type = TempConfig::new("wrongtype", "max_queued_bytes = true\n");
    let c = check_config(&["--config", wrong_type.path()], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.stderr
            .contains(":1: max_queued_bytes: expected a string or a number"),
        "{}",
        c.stderr
    );

    let c = check_config(&[], &[("SWITCHBOARD_MAX_HEAD_BYTES", "lots")]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.stderr
            .contains("SWITCHBOARD_MAX_HEAD_BYTES: invalid value \"lots\""),
        "{}",
        c.stderr
    );

    let c = check_config(&["--auth", "required"], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(c.stderr.contains("jwt_secret"), "{}", c.stderr);

    let c = check_config(&["--config", "/nonexistent/switchboard.toml"], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(
        c.stderr.contains("/nonexistent/switchboard.toml"),
        "{}",
        c.stderr
    );

    // `serve` refuses the same configuration the same way, before listening.
    let out = run(switchboard(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            unknown.path(),
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "serve must not announce a listener");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_publsh_bytes: unknown key"));
}

/// CONFIG.md "Secrets": secrets from the file, the environment and flags are shown as
/// `***` and never appear in the output, valid or not.
#[test]
fn secrets_are_masked() {
    let file = TempConfig::new(
        "secrets",
        &format!("[auth]\nmode = \"required\"\njwt_secret = \"{JWT_SECRET}\"\n"),
    );
    let c = check_config(
        &["--config", file.path()],
        &[("SWITCHBOARD_PUBLISHER_SECRET", PUBLISHER_SECRET)],
    );
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    assert_eq!(report_line(&c.stdout, "jwt_secret"), ("***", "file"));
    assert_eq!(report_line(&c.stdout, "publisher_secret"), ("***", "env"));
    assert_eq!(report_line(&c.stdout, "auth"), ("\"required\"", "file"));
    for out in [&c.stdout, &c.stderr] {
        assert!(
            !out.contains(JWT_SECRET) && !out.contains(PUBLISHER_SECRET),
            "{out}"
        );
    }

    // Too short: refused without showing it.
    let short = "short-jwt-secret";
    let c = check_config(&["--auth", "required", "--jwt-secret", short], &[]);
    assert_eq!(c.code, Some(2), "{}", c.stderr);
    assert!(c.stderr.contains("at least 32 bytes"), "{}", c.stderr);
    assert!(
        !c.stderr.contains(short) && !c.stdout.contains(short),
        "{}",
        c.stderr
    );
}

/// CONFIG.md "Example": `switchboard.example.toml` at the repository root is accepted
/// and every setting it sets is reported as coming from the file.
#[test]
fn example_config_is_valid() {
    let example: &Path = &workspace_root().join("switchboard.example.toml");
    let path = example.to_str().expect("UTF-8 path");
    let c = check_config(&["--config", path], &[]);
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    let from_file = c.stdout.lines().filter(|l| l.ends_with("  # file")).count();
    assert!(from_file >= 5, "the example sets settings:\n{}", c.stdout);
    assert_eq!(
        report_line(&c.stdout, "history_size").1,
        "file",
        "[history] size"
    );
    assert_eq!(report_line(&c.stdout, "auth"), ("\"off\"", "file"));
}

/// CONFIG.md "Settings": the table documents every key `check-config` reports, with
/// its flag and its variable.
#[test]
fn config_md_documents_every_setting() {
    let doc = std::fs::read_to_string(workspace_root().join("CONFIG.md")).expect("read CONFIG.md");
    let c = check_config(&[], &[]);
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    for line in c.stdout.lines() {
        let key = line.split(" = ").next().expect("key");
        let row = format!(
            "| `{key}` | `--{}` | `SWITCHBOARD_{}` |",
            key.replace('_', "-"),
            key.to_ascii_uppercase()
        );
        assert!(doc.contains(&row), "CONFIG.md has no row starting {row:?}");
    }
}
