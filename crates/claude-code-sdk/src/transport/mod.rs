//! How the SDK talks to the CLI: a child process speaking JSON lines.
//!
//! [`discovery`] finds the executable and reads its version. The process itself is
//! started in its own process group, its stdout is split into lines with a length
//! limit (default 256 MiB, [`ClaudeCodeOptions::max_line_bytes`](crate::ClaudeCodeOptions::max_line_bytes)),
//! and its stderr is always drained into a bounded tail that errors carry.

pub mod discovery;

pub(crate) mod codec;
pub mod reaper;
pub(crate) mod subprocess;

use tokio::io::{AsyncRead, AsyncWrite};

/// The two pipes the control protocol runs over, plus the process behind them (when
/// there is one: unit tests run the protocol over in-memory pipes).
pub(crate) struct Pipes {
    pub(crate) stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) process: Option<subprocess::ProcessGuard>,
    pub(crate) stderr_tail: subprocess::StderrTail,
    pub(crate) stderr_task: Option<tokio::task::JoinHandle<()>>,
}

use std::ffi::OsString;

use crate::error::Result;
use crate::options::ClaudeCodeOptions;
use discovery::CliVersion;

/// The flags every run starts with: the control protocol over stream-json.
const BASE_ARGS: &[&str] = &[
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
];

/// The longest single command-line argument Linux accepts (`MAX_ARG_STRLEN`, 128 KiB
/// with the terminating NUL).
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// The value of `CLAUDE_CODE_ENTRYPOINT` the SDK sets: the CLI treats `sdk-cli` as an
/// SDK host (only `sdk-ts`, `sdk-py` and `sdk-cli` count).
pub const ENTRYPOINT: &str = "sdk-cli";

/// Finds the CLI, checks its version, and starts it for these options.
pub(crate) async fn open(
    options: &ClaudeCodeOptions,
    extra_args: Vec<OsString>,
) -> Result<(Pipes, CliVersion)> {
    options.validate()?;
    let program = discovery::find_cli(options.cli_path.as_deref())?;
    let user_env: Vec<(String, String)> = options
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let version = discovery::cli_version(&program, &user_env).await?;
    let mut args: Vec<OsString> = BASE_ARGS.iter().map(OsString::from).collect();
    args.extend(options.cli_args(&version)?);
    args.extend(extra_args);
    if let Some(long) = args.iter().find(|a| a.len() > MAX_ARG_BYTES) {
        let name: String = long.to_string_lossy().chars().take(40).collect();
        return Err(crate::Error::invalid_options(format!(
            "the CLI argument {name}... is {} bytes; one command-line argument is limited to \
             128 KiB (Linux). Put a long system prompt in a file and pass \
             extra_arg(\"system-prompt-file\", Some(path)) instead",
            long.len()
        )));
    }

    let mut env: Vec<(String, String)> = vec![("CLAUDE_CODE_ENTRYPOINT".into(), ENTRYPOINT.into())];
    if let Some(retries) = options.max_api_retries {
        env.push(("CLAUDE_CODE_MAX_RETRIES".into(), retries.to_string()));
    }
    // A removed variable goes for the SDK's own defaults too; the caller's env wins.
    env.retain(|(key, _)| !options.env_remove.contains(key));
    env.extend(user_env);
    if let Some(cwd) = &options.cwd {
        env.push(("PWD".into(), cwd.display().to_string()));
    }

    tracing::debug!(program = %program.display(), %version, ?args, "starting the Claude Code CLI");
    let spawned = subprocess::spawn(subprocess::SpawnSpec {
        program,
        args,
        cwd: options.cwd.clone(),
        env,
        env_remove: options.env_remove.clone(),
        inherit: options.inherit_env.clone(),
    })?;
    let stderr_tail = subprocess::StderrTail::default();
    let stderr_task =
        subprocess::drain_stderr(spawned.stderr, stderr_tail.clone(), options.stderr.clone());
    Ok((
        Pipes {
            stdin: Box::new(spawned.stdin),
            stdout: Box::new(spawned.stdout),
            process: Some(spawned.guard),
            stderr_tail,
            stderr_task: Some(stderr_task),
        },
        version,
    ))
}
