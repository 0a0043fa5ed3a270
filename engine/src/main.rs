//! The `switchboard` binary: parses flags, layers them over the config file and the
//! environment, starts the engine (or only checks the settings), maps errors to exit
//! codes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use switchboard::config::ServeArgs;
use switchboard::config::sources::{self, ConfigErrors};

/// Exit status for an invalid configuration (as clap uses for bad flags).
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "A push engine for the real-time web: WebSocket and SSE publish/subscribe on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve WebSocket and SSE subscribers and the HTTP publish API.
    Serve(ConfigArgs),
    /// Check a configuration exactly as `serve` would, without opening any socket, and
    /// print the effective settings (`key = value  # source`, secrets as `***`). Exits
    /// 0 if it is valid, 2 with the errors otherwise.
    CheckConfig(ConfigArgs),
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// A TOML file of settings (see CONFIG.md) [default: $SWITCHBOARD_CONFIG]. Each
    /// flag is also a key (`--max-queued-bytes` is `max_queued_bytes`) and a variable
    /// (`SWITCHBOARD_MAX_QUEUED_BYTES`); flags beat variables, which beat the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The flags; `config::sources` reads them from the matches, under the file and
    /// the environment, so this parsed copy is not used.
    #[command(flatten)]
    _flags: ServeArgs,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let (_, sub_matches) = matches.subcommand().expect("clap requires a subcommand");
    match cli.command {
        Command::CheckConfig(c) => match sources::load(sub_matches, c.config.as_deref()) {
            Ok(loaded) => {
                print!("{}", loaded.report());
                ExitCode::SUCCESS
            }
            Err(e) => config_failed(&e),
        },
        Command::Serve(c) => {
            init_logging();
            let loaded = match sources::load(sub_matches, c.config.as_deref()) {
                Ok(loaded) => loaded,
                Err(e) => return config_failed(&e),
            };
            match serve(&loaded.args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config_failed(errors: &ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let running = switchboard::server::start(args)?;
    // The one line scripts and tests wait for: the address actually bound (port 0 picks
    // one) once every shard accepts.
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "listening on http://{} shards={}",
        running.addr, running.shards
    )?;
    stdout.flush()?;
    drop(stdout);
    running.wait()
}
