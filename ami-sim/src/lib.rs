//! `ami-sim`: a simulated Asterisk PBX speaking the Asterisk Manager Interface, for
//! testing AMI clients (Switchboard's engine among them) without a PBX.
//!
//! - [`pbx`]: the PBX model (endpoints, queues, calls) and the events it emits;
//! - [`cli`]: the command line; [`config`]: users (`--user`, `--users FILE`);
//! - [`session`]: one session's state machine (login, permissions, event mask);
//! - [`stream`]: the bounded per-session queues, the fan-out and the simulation driver;
//! - [`server`]: the listener and the per-connection reader and writer tasks (monoio);
//! - [`record`] / [`replay`]: `--record` and `--replay`; [`fault`]: `--fault`.

pub mod cli;
pub mod config;
pub mod fault;
pub mod pbx;
pub mod record;
pub mod replay;
pub mod server;
pub mod session;
pub mod stream;

pub use cli::Opts;
pub use server::run;
