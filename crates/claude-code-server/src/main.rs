//! `claude-code-server`: the Claude Code SDK over HTTP.
//!
//! ```sh
//! claude-code-server --bind 127.0.0.1:8080 --token "$API_TOKEN" --project-root /srv/projects
//! ```
//!
//! Without `--token` (or `CLAUDE_SERVER_TOKENS`) the API is open: only do that on
//! loopback. The CLI is found as the SDK finds it (`CLAUDE_CODE_CLI_PATH`, `PATH`, ...)
//! and uses the credentials of the environment (`ANTHROPIC_API_KEY` or a login).

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
    #[arg(long = "token", env = "CLAUDE_SERVER_TOKENS", value_delimiter = ',')]
    tokens: Vec<String>,
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
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.tokens.is_empty() && !args.bind.ip().is_loopback() {
        tracing::warn!(
            "no --token given and not on loopback: anyone who reaches {} can run Claude",
            args.bind
        );
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
        .request_timeout(Duration::from_secs(args.request_timeout));
    for token in args.tokens {
        config = config.api_token(token);
    }
    serve(config).await
}
