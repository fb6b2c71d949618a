//! `claude-code-server`: the Claude Code SDK over HTTP.
//!
//! ```sh
//! claude-code-server --bind 127.0.0.1:8080 --token "$API_TOKEN" --project-root /srv/projects
//! ```
//!
//! Tokens come from `--token-file` (one per line; keeps them out of `ps`),
//! `CLAUDE_SERVER_TOKENS` (comma-separated) or `--token`. Without any, the server
//! refuses to start on an address other than loopback unless `--no-auth` is given, and
//! on loopback it answers only requests for `localhost`. The CLI is found as the SDK
//! finds it (`CLAUDE_CODE_CLI_PATH`, `PATH`, ...) and uses the credentials of the
//! environment (`ANTHROPIC_API_KEY` or a login).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use claude_code_sdk::{PermissionMode, PoolConfig};
use claude_code_server::{ServerConfig, serve};

/// The Claude Code SDK over HTTP: JSON and SSE endpoints, sessions, browser approvals.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CLAUDE_SERVER_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Accepted bearer tokens (comma-separated in the environment variable).
    #[arg(
        long = "token",
        env = "CLAUDE_SERVER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// A file with accepted bearer tokens, one per line.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve without authentication on an address other than loopback.
    #[arg(long)]
    no_auth: bool,
    /// Models requests may name (comma-separated; default: any).
    #[arg(long, value_delimiter = ',')]
    allowed_models: Vec<String>,
    /// Requests' working directories are resolved under this directory.
    #[arg(long, env = "CLAUDE_SERVER_PROJECT_ROOT", default_value = ".")]
    project_root: PathBuf,
    /// CLI processes alive at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Requests that may wait for a process.
    #[arg(long, default_value_t = 32)]
    max_queued: usize,
    /// Seconds a request may wait for a process.
    #[arg(long, default_value_t = 30)]
    queue_timeout: u64,
    /// Most model round trips per request.
    #[arg(long, default_value_t = 10)]
    max_turns: u32,
    /// Seconds a run may take.
    #[arg(long, default_value_t = 300)]
    request_timeout: u64,
    /// Permission modes requests may choose (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "readOnly,askForEdits,strict,plan"
    )]
    allowed_modes: Vec<PermissionMode>,
    /// The mode of requests that choose none.
    #[arg(long, default_value = "readOnly")]
    default_mode: PermissionMode,
    /// Variables of this environment the CLI inherits besides the essentials (PATH,
    /// HOME, locale, proxies, ANTHROPIC_* credentials, CLAUDE_CONFIG_DIR):
    /// comma-separated names or prefixes ending in `*`, e.g. `AWS_*`.
    #[arg(long, env = "CLAUDE_SERVER_PASS_ENV", value_delimiter = ',')]
    pass_env: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("claude-code-server: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claude-code-server: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = Args::parse();
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)?;
        args.tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
    }
    for token in &mut args.tokens {
        *token = token.trim().to_owned();
    }
    args.tokens.retain(|t| !t.is_empty());
    if args.tokens.is_empty() && !args.bind.ip().is_loopback() {
        if !args.no_auth {
            return Err(std::io::Error::other(format!(
                "refusing to serve {} without a token: give --token-file (or --token), or \
                 --no-auth if anyone who reaches it may run Claude",
                args.bind
            )));
        }
        tracing::warn!("--no-auth: anyone who reaches {} can run Claude", args.bind);
    }
    let mut config = ServerConfig::new(args.bind)
        .project_root(args.project_root)
        .pool(PoolConfig {
            max_concurrent: args.max_concurrent,
            max_queued: args.max_queued,
            queue_timeout: Duration::from_secs(args.queue_timeout),
            ..PoolConfig::default()
        })
        .modes(args.allowed_modes, args.default_mode)
        .max_turns(args.max_turns)
        .request_timeout(Duration::from_secs(args.request_timeout))
        .allowed_models(args.allowed_models)
        .pass_env(args.pass_env.into_iter().filter(|p| !p.trim().is_empty()));
    for token in args.tokens {
        config = config.api_token(token);
    }
    serve(config).await
}
