//! The OS side of a run: finding the CLI and its version, its arguments and
//! environment, starting it in its own process group, framing its output into lines,
//! keeping a tail of its stderr, and killing everything of a run when it ends.
//!
//! | file | holds |
//! |---|---|
//! | `discovery.rs` | finding the executable, its version, `claude auth status` |
//! | `argv.rs` | the arguments and environment options become, and the pool's keys |
//! | `subprocess.rs` | spawning, the process guard, the stderr tail |
//! | `codec.rs` | line framing with a length limit |
//! | `reaper.rs` | run markers: finding and killing every process of a run |
//!
//! Nothing here knows the control protocol; [`crate::session`] builds on it.

pub(crate) mod argv;
pub(crate) mod codec;
pub(crate) mod discovery;
pub(crate) mod reaper;
pub(crate) mod subprocess;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Result;
use crate::options::{ClaudeCodeOptions, StderrCallback};
use argv::{LaunchPlan, SpawnEnv};
use discovery::CliVersion;

/// The two pipes the control protocol runs over, plus the process behind them (when
/// there is one: unit tests run the protocol over in-memory pipes).
pub(crate) struct Pipes {
    pub(crate) stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) process: Option<subprocess::ProcessGuard>,
    pub(crate) stderr_tail: subprocess::StderrTail,
    pub(crate) stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// A run ready to start: the CLI found, its version known, its launch planned.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) program: PathBuf,
    pub(crate) version: CliVersion,
    pub(crate) plan: LaunchPlan,
}

/// Validates `options`, finds the CLI, reads its version and plans the launch.
///
/// # Errors
///
/// Invalid options, a missing or too old CLI, an argument over the system's limit.
pub(crate) async fn prepare(options: &ClaudeCodeOptions) -> Result<Prepared> {
    options.validate()?;
    let program = discovery::find_cli(options.cli_path.as_deref())?;
    let user_env: Vec<(String, String)> = options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let version = discovery::cli_version(&program, &user_env).await?;
    let plan = argv::plan(options, &program, &version)?;
    Ok(Prepared {
        program,
        version,
        plan,
    })
}

/// Starts the CLI at `program` with `args` and `env`, in `cwd`.
///
/// # Errors
///
/// [`Connection`](crate::ErrorKind::Connection) when it cannot be started.
pub(crate) fn start(
    program: &Path,
    args: &[OsString],
    env: &SpawnEnv,
    cwd: Option<&Path>,
    stderr: Option<StderrCallback>,
) -> Result<Pipes> {
    tracing::debug!(program = %program.display(), ?args, "starting the Claude Code CLI");
    let spawned = subprocess::spawn(subprocess::SpawnSpec {
        program: program.to_owned(),
        args: args.to_vec(),
        cwd: cwd.map(Path::to_owned),
        env: env.vars.clone(),
        env_remove: env.remove.clone(),
        inherit: env.inherit.clone(),
    })?;
    let stderr_tail = subprocess::StderrTail::default();
    let stderr_task = subprocess::drain_stderr(spawned.stderr, stderr_tail.clone(), stderr);
    Ok(Pipes {
        stdin: Box::new(spawned.stdin),
        stdout: Box::new(spawned.stdout),
        process: Some(spawned.guard),
        stderr_tail,
        stderr_task: Some(stderr_task),
    })
}
