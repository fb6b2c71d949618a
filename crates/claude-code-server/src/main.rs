//! `claude-code-server`: the Claude Code SDK over HTTP.
//!
//! ```sh
//! claude-code-server --bind 127.0.0.1:8080 --token "$API_TOKEN" --project-root /srv/projects
//! ```
//!
//! Tokens come from `--token-file` (one per line; keeps them out of `ps`),
//! `CLAUDE_SERVER_TOKENS` (comma-separated) or `--token`, each a tenant of its own; or
//! from `--tenants-file`, which stores only their SHA-256 (`claude-code-server
//! hash-token` reads a token on standard input and prints it) with each tenant's
//! project roots, configuration directory and limits. Operator tokens, whose callers
//! also see the server-wide figures of `/v1/stats`, come from `--operator-token-file`,
//! `CLAUDE_SERVER_OPERATOR_TOKENS` or `--operator-token` (or a tenant marked `operator`
//! in the tenants file). Without any, the server
//! refuses to start on an address other than loopback unless `--no-auth` is given, and
//! on loopback it answers only requests for `localhost`. The CLI is found as the SDK
//! finds it (`CLAUDE_CODE_CLI_PATH`, `PATH`, ...) and uses the credentials of the
//! environment (`ANTHROPIC_API_KEY` or a login). Logs go to stderr (`RUST_LOG` filters
//! them; default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use claude_code_sdk::{PermissionMode, PoolConfig};
use claude_code_server::{ServerConfig, TenantLimits, serve};

/// The Claude Code SDK over HTTP: JSON and SSE endpoints, sessions, browser approvals.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Tenants with their token hashes, project roots, CLAUDE_CONFIG_DIR and limits
    /// (TOML, or JSON for a name ending in .json; see the crate docs for the format).
    #[arg(long, env = "CLAUDE_SERVER_TENANTS_FILE")]
    tenants_file: Option<PathBuf>,
    /// Seconds a stop signal (SIGTERM, SIGINT) lets running runs finish, claiming no
    /// new one and answering /ready with 503; then the rest end interrupted.
    #[arg(long, default_value_t = 20)]
    drain_timeout: u64,
    /// Keep each run's prompt text in the audit log (default: its length and SHA-256).
    #[arg(long)]
    audit_prompts: bool,
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
    /// Operator tokens: accepted like the others, and their callers also see the
    /// server-wide figures of /v1/stats (comma-separated in the environment variable).
    #[arg(
        long = "operator-token",
        env = "CLAUDE_SERVER_OPERATOR_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    operator_tokens: Vec<String>,
    /// A file with operator tokens, one per line.
    #[arg(long)]
    operator_token_file: Option<PathBuf>,
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
    /// The largest request body, in bytes (larger: 413).
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_body_bytes: u64,
    /// The most bytes of the CLI's output a POST /v1/query collects before it stops the
    /// run and answers 502 response_too_large (at least 4096; the stream has no limit).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_response_bytes: u64,
    /// Deny, without asking, permission requests about paths outside the project root
    /// [default: true unless --bind is a loopback address].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    deny_outside_project: Option<bool>,
    /// CLI conversations whose owner the server remembers (a forgotten one can no
    /// longer be resumed; the least recently used go first).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_conversations: u64,
    /// Seconds an unused conversation's owner is remembered.
    #[arg(long, default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    conversation_ttl: u64,
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
    /// Parked CLIs kept ready for each run shape (without and with approvals): a run
    /// claims one in ~40 ms instead of a cold start; 0 for none.
    #[arg(long, default_value_t = 1)]
    prewarm: usize,
    /// Sessions whose CLI stays alive between turns (their next turn costs a turn,
    /// not a start).
    #[arg(long, default_value_t = 4)]
    max_hot: usize,
    /// Seconds a session's CLI stays alive without a turn.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    hot_idle_timeout: u64,
    /// Variables of this environment the CLI inherits besides the essentials (PATH,
    /// HOME, locale, proxies, ANTHROPIC_* credentials, CLAUDE_CONFIG_DIR):
    /// comma-separated names or prefixes ending in `*`, e.g. `AWS_*`.
    #[arg(long, env = "CLAUDE_SERVER_PASS_ENV", value_delimiter = ',')]
    pass_env: Vec<String>,
    /// Sessions that may exist at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    max_sessions: u64,
    /// Seconds a session may stay unused before it ends.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    session_ttl: u64,
    /// Seconds a browser has to answer a permission request (then it is a denial).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    approval_timeout: u64,
    /// Seconds a client has to send a request's head (request line and headers).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a client has to send a request's body, from the end of its head.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Connections open at once [default: half the open-files limit, at most 65536].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Connections open at once from one client address (an IPv6 /64 is one address).
    /// Behind a reverse proxy, raise it to --max-connections.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_ip: u64,
    /// Seconds a client may take nothing of a response before its run is cancelled and
    /// its connection closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    stream_stall_timeout: u64,
    /// The PostgreSQL database the fleet shares (`postgres://...`): every replica given
    /// it serves every client, and a replica's death loses no session, run, event or
    /// approval. Without it the server runs alone on SQLite under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where a server alone keeps its SQLite database and session transcripts.
    #[arg(
        long,
        env = "CLAUDE_SERVER_DATA_DIR",
        default_value = "claude-code-server-data"
    )]
    data_dir: PathBuf,
    /// This replica's id in the fleet: keep it across restarts of the same replica, and
    /// unique among replicas [default: the host name and the port].
    #[arg(long, env = "CLAUDE_SERVER_REPLICA_ID")]
    replica_id: Option<String>,
    /// Seconds a replica holds a run without renewing its lease; then another replica
    /// ends the run (interrupted).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    lease: u64,
    /// Seconds a streaming run goes on with nobody reading it (a client may reconnect,
    /// to any replica); then it is cancelled.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    disconnect_grace: u64,
    /// Milliseconds a session's turn waits for its home replica (the one holding its
    /// CLI) before another replica takes it.
    #[arg(long, default_value_t = 2000)]
    home_grace_ms: u64,
    /// Runs one tenant may have in progress at once (beyond: queued).
    #[arg(long)]
    tenant_max_concurrent: Option<u32>,
    /// Runs one tenant may have queued.
    #[arg(long)]
    tenant_max_queued: Option<u32>,
    /// Runs one tenant may start per minute (beyond: 429 with Retry-After).
    #[arg(long)]
    tenant_runs_per_minute: Option<u32>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a token on standard input and prints its SHA-256, for a tenants file.
    HashToken,
    /// Prints the newest rows of the audit log, one JSON object a line, newest first,
    /// from the database given before the subcommand (--database-url, or the SQLite
    /// database under --data-dir): `claude-code-server --data-dir DIR audit`.
    Audit {
        /// Only this tenant's runs (its name, or a --token tenant's token SHA-256).
        #[arg(long)]
        tenant: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
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
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut args = Args::parse();
    if let Some(Command::HashToken) = args.command {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(std::io::Error::other(
                "no token on standard input (e.g. `printf %s \"$TOKEN\" | claude-code-server hash-token`)",
            ));
        }
        println!("{}", claude_code_server::hash_token(token));
        return Ok(());
    }
    if let Some(Command::Audit { tenant, limit }) = &args.command {
        let url = args
            .database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty());
        let rows =
            claude_code_server::read_audit(url, &args.data_dir, tenant.as_deref(), *limit).await?;
        for row in rows {
            println!("{row}");
        }
        return Ok(());
    }
    let tenants = match &args.tenants_file {
        Some(file) => claude_code_server::load_tenants(file)?,
        None => Vec::new(),
    };
    if let Some(file) = &args.token_file {
        args.tokens.extend(read_tokens(file)?);
    }
    if let Some(file) = &args.operator_token_file {
        args.operator_tokens.extend(read_tokens(file)?);
    }
    for token in args.tokens.iter_mut().chain(&mut args.operator_tokens) {
        *token = token.trim().to_owned();
    }
    args.tokens.retain(|t| !t.is_empty());
    args.operator_tokens.retain(|t| !t.is_empty());
    if args.tokens.is_empty()
        && args.operator_tokens.is_empty()
        && tenants.is_empty()
        && !args.bind.ip().is_loopback()
    {
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
            max_hot: args.max_hot,
            hot_idle_timeout: Duration::from_secs(args.hot_idle_timeout),
            ..PoolConfig::default()
        })
        .prewarm(args.prewarm)
        .modes(args.allowed_modes, args.default_mode)
        .max_turns(args.max_turns)
        .request_timeout(Duration::from_secs(args.request_timeout))
        .allowed_models(args.allowed_models)
        .pass_env(args.pass_env.into_iter().filter(|p| !p.trim().is_empty()))
        .max_sessions(count(args.max_sessions))
        .session_ttl(Duration::from_secs(args.session_ttl))
        .approval_timeout(Duration::from_secs(args.approval_timeout))
        .header_timeout(Duration::from_secs(args.header_timeout))
        .idle_timeout(Duration::from_secs(args.idle_timeout))
        .body_timeout(Duration::from_secs(args.body_timeout))
        .max_connections_per_ip(count(args.max_connections_per_ip))
        .stream_stall_timeout(Duration::from_secs(args.stream_stall_timeout))
        .lease(Duration::from_secs(args.lease))
        .disconnect_grace(Duration::from_secs(args.disconnect_grace))
        .tenants(tenants)
        .drain_timeout(Duration::from_secs(args.drain_timeout))
        .audit_prompts(args.audit_prompts)
        .tenant_limits({
            let mut limits = TenantLimits::default();
            limits.max_concurrent = args.tenant_max_concurrent;
            limits.max_queued = args.tenant_max_queued;
            limits.runs_per_minute = args.tenant_runs_per_minute;
            limits
        })
        .replica_id(args.replica_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "replica".to_owned());
            match args.bind.port() {
                0 => format!("{host}-{}", std::process::id()),
                port => format!("{host}:{port}"),
            }
        }));
    config = match args.database_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => config.database_url(url),
        None => config.data_dir(args.data_dir),
    };
    if let Some(max) = args.max_connections {
        config = config.max_connections(count(max));
    }
    if let Some(deny) = args.deny_outside_project {
        config = config.deny_outside_project(deny);
    }
    config = config
        .max_response_bytes(count(args.max_response_bytes))
        .conversations(
            args.max_conversations,
            Duration::from_secs(args.conversation_ttl),
        );
    config.max_body_bytes = count(args.max_body_bytes);
    config.home_grace = Duration::from_millis(args.home_grace_ms);
    for token in args.tokens {
        config = config.api_token(token);
    }
    for token in args.operator_tokens {
        config = config.operator_token(token);
    }
    serve(config).await
}

/// The tokens in `file`: one per line, blank lines ignored.
fn read_tokens(file: &std::path::Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("the token file {}: {err}", file.display()),
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A count from the command line (at most `usize::MAX`).
fn count(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
