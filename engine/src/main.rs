//! The `switchboard` binary: parses flags, starts the engine, maps errors to exit codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::ServeArgs;

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
    Serve(ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => match serve(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
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
