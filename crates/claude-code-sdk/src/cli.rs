//! The Claude Code CLI itself: finding it, its version, its credentials, and the
//! processes runs leave behind.
//!
//! ```no_run
//! # async fn run() -> claude_code_sdk::Result<()> {
//! use claude_code_sdk::cli;
//!
//! let path = cli::find_cli(None)?;
//! let version = cli::cli_version(&path, &[]).await?;
//! let auth = cli::auth_status(&path, &[]).await?;
//! println!("{} {version}, logged in: {}", path.display(), auth.logged_in);
//! # Ok(()) }
//! ```
//!
//! # Processes
//!
//! Every CLI the SDK starts carries a marker naming its run and the process that owns
//! it. A program that may be killed without a chance to clean up (a server) calls
//! [`set_owner_scope`] once and [`reap_orphans`] when it starts, so what a crashed
//! predecessor left running is killed; [`kill_all_runs`] kills every run of this
//! process before a hard exit.

pub use crate::process::discovery::{
    AuthStatus, CliVersion, MIN_CLI_VERSION, auth_status, cli_version, find_cli,
};
pub use crate::process::reaper::{kill_all_runs, reap_orphans, set_owner_scope};
