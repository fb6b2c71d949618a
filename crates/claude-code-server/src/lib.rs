//! The Claude Code SDK over HTTP.
//!
//! An axum [`Router`] that runs prompts through [`claude_code_sdk`]: as JSON, as a
//! server-sent-event stream, and as named sessions that continue exactly; with tool-use
//! approvals answered from the browser, bearer-token auth, and limits. A small web page
//! at `/` uses it all.
//!
//! ```no_run
//! use claude_code_server::{ServerConfig, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::new("127.0.0.1:8080".parse()?)
//!     .api_token("change-me")
//!     .project_root("/srv/projects");
//! serve(config).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /` | the web page |
//! | `GET /health` | `{"status": "ok"}`, no auth |
//! | `GET /openapi.json` | this API as OpenAPI 3.1, no auth |
//! | `POST /v1/query` | runs a [`QueryRequest`]; answers a [`QueryResponse`] |
//! | `POST /v1/query/stream` | the same as server-sent events: `message` (a [`claude_code_sdk::WebMessage`]), `permission_request` (a [`PermissionRequest`]), then `done` (a [`ResultSummary`]) or `error` |
//! | `POST /v1/approvals/{id}` | answers a `permission_request` with an [`ApprovalAnswer`] |
//! | `POST /v1/sessions` | starts a conversation ([`NewSession`]); answers with its id |
//! | `POST /v1/sessions/{id}/messages` | continues it ([`SessionTurn`]) |
//! | `GET /v1/sessions/{id}` | its turns |
//! | `DELETE /v1/sessions/{id}` | ends it |
//! | `GET /v1/stats` | pool, session and approval figures |
//!
//! Errors are `{"error": {"kind", "message", "transient", ...}, "messages": [...]}` with a
//! status that follows the SDK's [`ErrorKind`](claude_code_sdk::ErrorKind): 400 invalid
//! input (a body that is not the expected JSON too), 401 no or bad token, 403 a
//! permission mode or model the server does not allow, a foreign `Host` without auth,
//! or a denied tool use, 404 unknown session or route, 409 a session busy with another
//! turn, 413 body too large, 415 not JSON, 422 max turns, budget or an interrupted run,
//! 429 rate limited, 502 the model API or the CLI failed, 503 no process slot or too
//! many sessions (with `Retry-After`), 504 timeout. Server-side failures (5xx) carry a
//! request id; their details go to the server's log, not to the client.
//!
//! # Limits
//!
//! Every run goes through one [`QueryPool`], session turns included: at most
//! `max_concurrent` CLI processes, a bounded queue, a queue timeout. Requests cannot
//! raise `max_turns` above the server's cap, pick a working directory outside the
//! project root, choose a model outside `allowed_models` (when set), or choose a
//! permission mode the server does not allow (by default `readOnly`, `askForEdits`,
//! `strict` and `plan`; the default mode is `readOnly`). Bodies are limited to 1 MiB.
//! Each run has a timeout (5 minutes), enforced even when a streaming client stops
//! reading; an approval that is not answered in time (2 minutes) is a denial. At most
//! `max_sessions` sessions (1000) exist; one unused for `session_ttl` (1 hour) ends.
//!
//! # Tenancy
//!
//! Sessions and approvals belong to the token that created them: another token gets
//! `404`. The project root is shared by every caller: the tools of one run can see the
//! files of another. Run one server per tenant when that matters. Outside the working
//! directory, reads need approval in `readOnly` and `askForEdits`: with `"approvals":
//! true` the browser is asked, otherwise they are denied. Session ids returned in
//! results (`session_id`, usable as `resume`) are capabilities: whoever holds one can
//! continue that conversation with a query.
//!
//! # What a CLI inherits, and what outlives the server
//!
//! The CLI hands its environment to every tool the model runs, so the server gives
//! it an allow-list, never its own environment: the essentials
//! ([`ESSENTIAL_ENV`](claude_code_sdk::options::ESSENTIAL_ENV): `PATH`, `HOME`,
//! locale, proxies, the `ANTHROPIC_*` credentials, `CLAUDE_CONFIG_DIR`) and the
//! variables the operator names in [`ServerConfig::pass_env`] (`--pass-env`). The
//! server's own secrets (`CLAUDE_SERVER_*`, `DATABASE_URL`, `PGPASSWORD`) cannot be
//! named: the server refuses to start.
//!
//! A server killed with `SIGKILL` takes its CLIs with it (Linux's parent-death
//! signal): none keeps calling the model. Commands the CLIs' tools started (a
//! background `Bash` command) leave the CLI's process group and survive it; the next
//! server start on the host, and every running server once a minute, kills the
//! processes whose owning server is gone ([`OWNER_SCOPE`]).
//!
//! # Shutdown
//!
//! `SIGINT` or `SIGTERM` stops accepting connections, ends running streams with an
//! `error` event (`shutting_down`), refuses pending approvals, and kills every CLI the
//! server started; a second signal exits at once.

mod api;
mod approvals;
mod error;
pub mod openapi;
mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use axum::Router;
use claude_code_sdk::{
    ClaudeCodeOptions, ConversationManager, InheritEnv, ManagerConfig, MemoryStore, PermissionMode,
    PoolConfig, QueryPool,
};

pub use api::{
    ApprovalAnswer, NewSession, PermissionRequest, QueryRequest, QueryResponse, ResultSummary,
    SessionTurn,
};
pub use approvals::Approvals;
pub use error::{ApiError, ApiJson, ErrorBody};

/// How the server runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Accepted bearer tokens. Empty: no authentication (only sensible on loopback).
    pub api_tokens: Vec<String>,
    /// The options every run starts from (CLI path, environment, model, ...).
    pub base_options: ClaudeCodeOptions,
    /// Working directories are resolved under this directory (default: the current one).
    pub project_root: PathBuf,
    /// The process pool.
    pub pool: PoolConfig,
    /// Session (conversation) settings.
    pub sessions: ManagerConfig,
    /// The modes a request may choose.
    pub allowed_modes: Vec<PermissionMode>,
    /// The mode of requests that choose none.
    pub default_mode: PermissionMode,
    /// The most model round trips a request may ask for (and the default).
    pub max_turns: u32,
    /// The longest request body.
    pub max_body_bytes: usize,
    /// The longest a run may take.
    pub request_timeout: Duration,
    /// How long a browser has to answer a permission request.
    pub approval_timeout: Duration,
    /// The models a request may name (empty: any).
    pub allowed_models: Vec<String>,
    /// The most sessions that may exist at once.
    pub max_sessions: usize,
    /// A session unused this long ends.
    pub session_ttl: Duration,
    /// Variables of the server's environment the CLI inherits besides
    /// [`ESSENTIAL_ENV`](claude_code_sdk::options::ESSENTIAL_ENV): names, or prefixes
    /// ending in `*`. The server's own secrets can never be named.
    pub pass_env: Vec<String>,
}

impl ServerConfig {
    /// The defaults, listening on `bind`.
    pub fn new(bind: SocketAddr) -> ServerConfig {
        ServerConfig {
            bind,
            api_tokens: Vec::new(),
            base_options: ClaudeCodeOptions::default(),
            project_root: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            pool: PoolConfig::default(),
            sessions: ManagerConfig::default(),
            allowed_modes: vec![
                PermissionMode::ReadOnly,
                PermissionMode::AskForEdits,
                PermissionMode::Strict,
                PermissionMode::Plan,
            ],
            default_mode: PermissionMode::ReadOnly,
            max_turns: 10,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            approval_timeout: Duration::from_secs(120),
            allowed_models: Vec::new(),
            max_sessions: 1000,
            session_ttl: Duration::from_secs(3600),
            pass_env: Vec::new(),
        }
    }

    /// Lets the CLI inherit these variables of the server's environment too (names, or
    /// prefixes ending in `*`), e.g. `AWS_*` for Bedrock. See [`ServerConfig::pass_env`].
    #[must_use]
    pub fn pass_env<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.pass_env.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Only these models may be requested.
    #[must_use]
    pub fn allowed_models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_models = models.into_iter().map(Into::into).collect();
        self
    }

    /// The most sessions, and how long an unused one lives.
    #[must_use]
    pub fn sessions(mut self, max_sessions: usize, ttl: Duration) -> Self {
        self.max_sessions = max_sessions;
        self.session_ttl = ttl;
        self
    }

    /// Accepts this bearer token (call again for more).
    #[must_use]
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.api_tokens.push(token.into());
        self
    }

    /// Resolves working directories under `root`.
    #[must_use]
    pub fn project_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.project_root = root.into();
        self
    }

    /// The options every run starts from.
    #[must_use]
    pub fn base_options(mut self, options: ClaudeCodeOptions) -> Self {
        self.base_options = options;
        self
    }

    /// The process pool.
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The modes requests may choose, and the default.
    #[must_use]
    pub fn modes(
        mut self,
        allowed: impl IntoIterator<Item = PermissionMode>,
        default: PermissionMode,
    ) -> Self {
        self.allowed_modes = allowed.into_iter().collect();
        if !self.allowed_modes.contains(&default) {
            self.allowed_modes.push(default);
        }
        self.default_mode = default;
        self
    }

    /// The most model round trips per request.
    #[must_use]
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = turns.max(1);
        self
    }

    /// The longest a run may take.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a browser has to answer a permission request.
    #[must_use]
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    config: ServerConfig,
    project_root: PathBuf,
    pool: QueryPool,
    sessions: ConversationManager,
    /// Who owns each session, and when it was last used.
    owners: Mutex<HashMap<String, SessionEntry>>,
    approvals: Approvals,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
}

struct SessionEntry {
    owner: String,
    last_used: Instant,
}

impl Drop for StateInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl AppState {
    /// Builds the state: the pool and the session manager start here (a Tokio runtime
    /// is needed).
    ///
    /// # Errors
    ///
    /// An [`std::io::Error`] when the project root does not exist.
    pub fn new(mut config: ServerConfig) -> std::io::Result<AppState> {
        let project_root = config.project_root.canonicalize()?;
        config.base_options = cli_environment(&config)?;
        let pool = QueryPool::new(config.pool.clone());
        let session_base = config
            .base_options
            .to_builder()
            .permission_mode(config.default_mode)
            .max_turns(config.max_turns)
            .timeout(config.request_timeout)
            .build()
            .map_err(std::io::Error::other)?;
        // Session turns resume their conversation cold, each in a process slot of the
        // pool: no CLI lives outside the pool's bound.
        let sessions = ConversationManager::with_store(
            session_base,
            MemoryStore::default(),
            config.sessions.clone().max_hot(0),
        );
        let shutdown = CancellationToken::new();
        let state = AppState {
            inner: Arc::new(StateInner {
                config,
                project_root,
                pool,
                sessions,
                owners: Mutex::new(HashMap::new()),
                approvals: Approvals::new(shutdown.clone()),
                shutdown,
            }),
        };
        tokio::spawn(expire_sessions(Arc::downgrade(&state.inner)));
        Ok(state)
    }

    /// Ends running streams and approvals: the first step of a graceful shutdown.
    pub fn shut_down(&self) {
        self.inner.shutdown.cancel();
    }

    /// The approvals waiting for browsers.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// The process pool.
    pub fn pool(&self) -> &QueryPool {
        &self.inner.pool
    }
}

/// Names the server's own secrets live under: never passed to a CLI.
const SERVER_SECRETS: &[&str] = &[
    "CLAUDE_SERVER_TOKENS",
    "CLAUDE_SERVER_TOKEN_FILE",
    "CLAUDE_SERVER_DATABASE_URL",
    "DATABASE_URL",
    "PGPASSWORD",
];

/// The base options with the CLI's environment reduced to an allow-list: what the CLI
/// needs ([`ESSENTIAL_ENV`](claude_code_sdk::options::ESSENTIAL_ENV)) and what the
/// operator names in `pass_env`. The CLI hands its environment to the tools the model
/// runs, so anything else of the server's (tokens, database URLs) would be readable by
/// every caller.
fn cli_environment(config: &ServerConfig) -> std::io::Result<ClaudeCodeOptions> {
    let reserved = |pattern: &str| {
        SERVER_SECRETS.iter().any(|secret| {
            pattern_matches(pattern, secret)
                || secret.starts_with("CLAUDE_SERVER_")
                    && pattern_matches(pattern, "CLAUDE_SERVER_ANYTHING")
        })
    };
    if let Some(bad) = config.pass_env.iter().find(|p| reserved(p)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "pass_env {bad:?} would give the CLI (and every tool the model runs) one of \
                 the server's own secrets ({}, CLAUDE_SERVER_*); name the variables the CLI \
                 needs instead",
                SERVER_SECRETS.join(", ")
            ),
        ));
    }
    config
        .base_options
        .to_builder()
        .inherit_env(InheritEnv::essentials().and(config.pass_env.iter().cloned()))
        .build()
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    InheritEnv::only([pattern]).allows(name)
}

/// Ends sessions unused for longer than the TTL.
async fn expire_sessions(state: std::sync::Weak<StateInner>) {
    loop {
        let (expired, pause) = {
            let Some(inner) = state.upgrade() else { return };
            let ttl = inner.config.session_ttl;
            let expired: Vec<String> = inner
                .lock_owners()
                .iter()
                .filter(|(_, e)| e.last_used.elapsed() >= ttl)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                // A session busy with a turn is not idle after all: try again later.
                match inner.sessions.end(id).await {
                    Err(err) if err.is_conversation_busy() => continue,
                    _ => {
                        inner.lock_owners().remove(id);
                    }
                }
            }
            (
                expired.len(),
                (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60)),
            )
        };
        if expired > 0 {
            tracing::info!(expired, "ended unused sessions");
        }
        tokio::time::sleep(pause).await;
    }
}

impl StateInner {
    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The owner scope of the server's CLI runs (see
/// [`set_owner_scope`](claude_code_sdk::cli::set_owner_scope)).
pub const OWNER_SCOPE: &str = "claude-code-server";

/// The router, with auth and limits applied.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Listens on `config.bind` and serves until `SIGINT` or `SIGTERM` (see the crate
/// docs on shutdown).
///
/// # Errors
///
/// When the address cannot be bound or the project root does not exist.
pub async fn serve(config: ServerConfig) -> std::io::Result<()> {
    // CLIs of a server that was killed die with it (the SDK's parent-death signal), but
    // the commands their tools started do not: kill what a dead server left, now and
    // every minute (another server on this host that is alive keeps its own).
    let _ = claude_code_sdk::cli::set_owner_scope(OWNER_SCOPE);
    tokio::task::spawn_blocking(claude_code_sdk::cli::reap_orphans);
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(claude_code_sdk::cli::reap_orphans).await;
        }
    });
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    tracing::info!(addr = %listener.local_addr()?, "claude-code-server listening");
    let state = AppState::new(config)?;
    let app = router(state.clone());
    let stopping = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_signal().await;
            tracing::info!(
                "shutting down: ending streams and runs (a second signal exits at once)"
            );
            stopping.shut_down();
            tokio::spawn(async {
                stop_signal().await;
                // Exiting skips destructors: kill every CLI run first.
                claude_code_sdk::cli::kill_all_runs();
                std::process::exit(130);
            });
        })
        .await?;
    // Dropping the state drops the pool and the sessions: their CLIs are killed.
    drop(state);
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
