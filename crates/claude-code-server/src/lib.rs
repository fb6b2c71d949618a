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
//! Against clients that hold resources without using them ([`serve`] and [`serve_on`]
//! enforce these; the bare [`router`] cannot):
//!
//! | limit | default | what happens |
//! |---|---|---|
//! | `max_connections` | half the soft open-files limit (raised to the hard limit at start-up), at most 65 536 | a connection over it is answered `503` (`too_many_connections`, `Retry-After: 1`) and closed at once |
//! | `max_connections_per_ip` | 256 (an IPv6 /64 is one address) | the same, for one client address |
//! | `header_timeout` | 10 s | a request head (request line and headers) not complete this long after accept, or after the first byte of a later request, closes the connection; total time, so trickling bytes does not help |
//! | `idle_timeout` | 60 s | a kept-alive connection with no request in progress is closed |
//! | `body_timeout` | 30 s | a request body not complete this long after its head is refused (`400`) |
//! | `stream_stall_timeout` | 30 s | a client that takes no event of its stream, or no byte of a response, for this long is cut off: its run is cancelled (CLI killed, slot freed) and its connection closed |
//!
//! Every response carries an `x-request-id` (a client's own, when it is a short plain
//! token, or a new UUID); the server's log lines about the request carry the same id.
//! Failed logins are logged (`warn`) with the client's address and the route, never
//! with what was presented.
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
//! # Shutdown
//!
//! `SIGINT` or `SIGTERM` stops accepting connections, ends running streams with an
//! `error` event (`shutting_down`), refuses pending approvals, closes connections with
//! no request in progress, waits for the others, and kills every CLI the server
//! started; a second signal kills every CLI run and exits at once (status 130).

mod api;
mod approvals;
mod error;
mod listen;
pub mod openapi;
mod request_id;
mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use axum::Router;
use claude_code_sdk::{
    ClaudeCodeOptions, ConversationManager, ManagerConfig, MemoryStore, PermissionMode, PoolConfig,
    QueryPool,
};

pub use api::{
    ApprovalAnswer, NewSession, PermissionRequest, QueryRequest, QueryResponse, ResultSummary,
    SessionTurn,
};
pub use approvals::Approvals;
pub use error::{ApiError, ApiJson, ErrorBody};
pub use listen::serve_on;

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
    /// The longest a client may take to send a request's head (request line and
    /// headers): counted from accept for a connection's first request, from the first
    /// byte of the next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// The longest a client may take to send a request's body, counted from the end
    /// of its head; a body still incomplete then is refused (`400`).
    pub body_timeout: Duration,
    /// The most connections open at once; `None`: half the soft limit on open files
    /// when serving starts (at most 65 536). Connections over it are answered `503` and
    /// closed at once.
    pub max_connections: Option<usize>,
    /// The most connections open at once from one client address (an IPv6 /64 counts
    /// as one address). Behind a reverse proxy every client has the proxy's address:
    /// raise it to `max_connections` there.
    pub max_connections_per_ip: usize,
    /// A client that accepts nothing of a response for this long is cut off: its run
    /// is cancelled (its CLI killed, its process slot freed) and its connection closed.
    pub stream_stall_timeout: Duration,
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
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: 256,
            stream_stall_timeout: Duration::from_secs(30),
        }
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

    /// The most sessions that may exist at once.
    #[must_use]
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// A session unused this long ends.
    #[must_use]
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The longest a client may take to send a request's head.
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How long a kept-alive connection may wait for its next request.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The longest a client may take to send a request's body.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The most connections open at once (instead of half the open-files limit).
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// The most connections open at once from one client address.
    #[must_use]
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// How long a client may accept nothing of a response before it is cut off.
    #[must_use]
    pub fn stream_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stream_stall_timeout = timeout;
        self
    }

    /// Checks what can be checked before serving: the project root, the limits.
    fn check(&self) -> std::io::Result<()> {
        use std::io::{Error, ErrorKind};
        let root = &self.project_root;
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("the project root {} is not a directory", root.display()),
                ));
            }
            Err(err) => {
                return Err(Error::new(
                    err.kind(),
                    format!("the project root {}: {err}", root.display()),
                ));
            }
        }
        self.check_limits()
    }

    /// Every limit is positive.
    fn check_limits(&self) -> std::io::Result<()> {
        let zero = [
            ("max_turns", self.max_turns == 0),
            ("max_sessions", self.max_sessions == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            ("request_timeout", self.request_timeout.is_zero()),
            ("approval_timeout", self.approval_timeout.is_zero()),
            ("session_ttl", self.session_ttl.is_zero()),
            ("header_timeout", self.header_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("body_timeout", self.body_timeout.is_zero()),
            ("max_connections", self.max_connections == Some(0)),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
            ("stream_stall_timeout", self.stream_stall_timeout.is_zero()),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name} must be more than zero"),
            )),
            None => Ok(()),
        }
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
    pub fn new(config: ServerConfig) -> std::io::Result<AppState> {
        let project_root = config.project_root.canonicalize()?;
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

/// The router, with auth and limits applied, and a request id on every request
/// (`x-request-id`, in the tracing span of its log lines).
pub fn router(state: AppState) -> Router {
    request_id::layer(routes::router(state))
}

/// Checks `config`, listens on `config.bind` and serves ([`serve_on`]) until `SIGINT`
/// or `SIGTERM` (see the crate docs on shutdown). Raises the soft limit on open files
/// to the hard limit first.
///
/// # Errors
///
/// Before anything is bound or logged: when the project root is not a directory or a
/// limit is zero (the error names the path or the setting). Then when the address
/// cannot be bound.
pub async fn serve(config: ServerConfig) -> std::io::Result<()> {
    config.check()?;
    if let Some(limit) = listen::raise_open_files_limit() {
        tracing::debug!(limit, "open files");
    }
    let bind = config.bind;
    let state = AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {bind}: {err}"))
    })?;
    tracing::info!(addr = %listener.local_addr()?, "claude-code-server listening");
    let stop = async {
        stop_signal().await;
        tracing::info!("shutting down: ending streams and runs (a second signal exits at once)");
        tokio::spawn(async {
            stop_signal().await;
            // Exiting skips destructors: kill every CLI run first.
            claude_code_sdk::transport::reaper::kill_all();
            std::process::exit(130);
        });
    };
    serve_on(listener, state, stop).await
    // The state is dropped with `serve_on`'s future: the pool and the sessions go,
    // and their CLIs are killed.
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
