//! The `loadgen` binary: parses flags, runs the scenario, writes the reports, maps the
//! outcome to an exit status (0 goal met, 3 goal missed, 1 could not run, 2 usage).

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::scenarios::{self, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let (outcome, json, svg): (Outcome, _, _) = match &cli.command {
        Command::Hold(a) => (scenarios::hold::run(a)?, &a.conn.json, &a.conn.svg),
        Command::Fanout(a) => (scenarios::fanout::run(a)?, &a.conn.json, &a.conn.svg),
        Command::Slow(a) => (
            scenarios::fanout::run_slow(a)?,
            &a.fanout.conn.json,
            &a.fanout.conn.svg,
        ),
        Command::Churn(a) => (scenarios::churn::run(a)?, &a.conn.json, &a.conn.svg),
        Command::Floor(a) => (scenarios::floor::run(a)?, &a.json, &a.svg),
    };
    scenarios::emit(&outcome.reports, json.as_deref(), svg.as_deref())?;
    Ok(outcome.met_goal)
}
