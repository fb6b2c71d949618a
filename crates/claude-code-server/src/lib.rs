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
//! | `GET /health` | `{"status": "ok"}`, the allowed modes and max turns ([`Health`]), no auth |
//! | `GET /ready` | `200` ([`Ready`]) when the database answers and the replica is not draining, else `503`; no auth |
//! | `GET /openapi.json` | this API as OpenAPI 3.1, no auth: every status each operation can answer, with its body ([`openapi`]) |
//! | `POST /v1/query` | runs a [`QueryRequest`]; answers a [`QueryResponse`] |
//! | `POST /v1/query/stream` | the same as server-sent events: `message` (a [`claude_code_sdk::WebMessage`]), `permission_request` (a [`PermissionRequest`]), then `done` (a [`ResultSummary`]) or `error` |
//! | `POST /v1/approvals/{id}` | answers a `permission_request` with an [`ApprovalAnswer`] |
//! | `POST /v1/sessions` | starts a conversation ([`NewSession`]); answers with its id |
//! | `POST /v1/sessions/{id}/messages` | continues it ([`SessionTurn`]) |
//! | `GET /v1/sessions/{id}` | its turns |
//! | `DELETE /v1/sessions/{id}` | ends it |
//! | `POST /v1/sessions/{id}/interrupt` | cancels its turn in progress |
//! | `GET /v1/runs/{id}` | a run's state ([`RunStatus`]) |
//! | `GET /v1/runs/{id}/events` | a run's events as server-sent events, after `Last-Event-ID` (from any replica) |
//! | `POST /v1/runs/{id}/cancel` | cancels a run |
//! | `GET /v1/stats` | the caller's own figures; the pool's and the server-wide ones for operator tokens |
//! | `GET /v1/audit` | the audit log (see below): every tenant's for operator tokens, the caller's own otherwise |
//! | `GET /metrics` | Prometheus metrics, for operator tokens only (see [`metrics`](#metrics)) |
//! | `GET /ready` | `200` when the database answers and the replica is not draining, else `503` |
//! | `POST /api/claude/query` | the Python SDK's web pattern: `{prompt, max_turns, system_prompt}` → `{messages: [{content, role, timestamp, tools_used}], success, error}` |
//! | `POST /api/claude/stream` | the same as `data: {content, role, timestamp}` lines, ending with `data: [DONE]` |
//!
//! Errors are `{"error": {"kind", "message", "transient", ...}, "messages": [...]}` with a
//! status that follows the SDK's [`ErrorKind`](claude_code_sdk::ErrorKind):
//!
//! | status | when |
//! |---|---|
//! | 400 | invalid input: a body that is not the expected JSON (`max_turns` is an integer; a whole number written `3.0` counts), a value the CLI refuses for one of its flags, a string with a NUL character anywhere in it, a `json_schema` that is not a JSON Schema, a `resume` that is not a session id in its 36-character hyphenated form, a `cwd` outside the project root, an approval's `updated_input` the server cannot vouch for |
//! | 401 | no or bad token |
//! | 403 | a permission mode or model the server does not allow, a foreign `Host` without auth, or a tool use nobody could approve |
//! | 404 | an unknown session, run, approval or route (an id that is not a UUID included); a `resume` of a conversation this caller's runs did not produce |
//! | 409 | a session busy with another turn, or started on a project root this replica does not share (`workspace_moved`) |
//! | 413, 415 | body too large, not JSON |
//! | 422 | max turns, budget, or an interrupted run |
//! | 429 | the model API is rate limited, or the caller is over one of its [`TenantLimits`] |
//! | 502 | the model API or the CLI failed; `response_too_large`: a `POST /v1/query` answer over `max_response_bytes` (not transient: use the stream) |
//! | 503 | no process slot (`pool_busy`), the caller holds its maximum of sessions (`too_many_sessions`), too many connections, the database does not answer, the replica drains (`draining`) or shuts down |
//! | 504 | the run timed out |
//! | 507 | the database has no room to write (`insufficient_storage`, with `Retry-After`): a full disk |
//!
//! `transient` is `true` exactly when the answer carries `Retry-After` (SSE `error`
//! events, which have no headers, say `retry_after_secs`). Server-side failures (5xx)
//! carry a request id. Nothing that leaves the server (JSON bodies, `messages[]`, SSE
//! events, the page) carries the CLI's or the SDK's own text about a failure: no
//! stderr, no address of the model API, no file paths. Error messages, the CLI's
//! synthetic API-error messages and failed results say what kind of failure it was
//! (and the API status); the details go to the server's log. The conversation itself
//! (the model's text, tool uses and tool results) is passed on as it is.
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
//! reading; an approval that is not answered in time (2 minutes) is a denial.
//!
//! `POST /v1/query` collects at most `max_response_bytes` (16 MiB) of the CLI's output
//! (its lines, plus the result's text once more): past that, or at a single line that
//! long, the run is stopped and the answer is `502 response_too_large`; the streaming
//! endpoint has no such limit, as it keeps nothing.
//!
//! Each caller may hold `max_sessions` sessions (1000); starts under way count while
//! they run, and a start whose client goes away, or whose first turn fails, leaves
//! nothing. A session unused for `session_ttl` (1 hour) ends.
//!
//! The server remembers who owns each CLI conversation (session id) its runs
//! produced, and the conversation's running cost: at most `max_conversations`
//! (100 000), each forgotten after `conversation_ttl` (24 hours) unused or when the
//! least recently used make room. A forgotten conversation can no longer be resumed
//! (`404`).
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
//! Callers are told apart by their bearer token. Sessions, approvals and the CLI
//! conversations a caller's runs produced belong to that caller: another token gets
//! `404` for them, and `resume` works only with a session id that one of the caller's
//! own runs (query, stream or session turn) reported. `/v1/stats` shows each caller
//! its own runs, sessions, session turns and approvals; the pool's figures and the
//! server-wide counts only to an operator token (`operator_tokens`; without tokens the
//! one local caller is the operator).
//!
//! Approvals stay in the project: an answer's `updated_input` must keep the path
//! fields of `Read`, `Write`, `Edit`, `MultiEdit` (`file_path`), `NotebookEdit`
//! (`notebook_path`), `Grep` and `Glob` (`path`) inside the project root (symlinks are
//! followed and `..` folded, both as the CLI and as the kernel would), and may not
//! change the input of any other tool (Bash included); a refused rewrite answers `400`
//! and the request stays pending. Outside the working directory, reads need approval
//! in every mode: with `"approvals": true` the client is asked, otherwise they are
//! denied (a `PreToolUse` hook sees the path tools' uses, also those a mode such as
//! `plan` would run without asking). With `deny_outside_project` (the default unless
//! the server listens on loopback), a request about a path outside the project root
//! (in the tool's input or the CLI's `blocked_path`) is denied without asking.
//!
//! The tenants of `--token` tokens share the project root: the tools of one run can
//! see the files of another. Tenants of a tenants file ([`ServerConfig::tenants`],
//! `--tenants-file`) have their own project roots, `CLAUDE_CONFIG_DIR` and limits, and
//! their tokens are stored as SHA-256 hashes only; the file's format is below. A
//! tenant's runs work in its roots only (a `cwd` may be relative to its first root, or
//! absolute inside any of them). The CLI's tools are confined to a root by the
//! permission mode and approvals, not by the kernel: a mode that lets the model run
//! any command (`bypassPermissions`, or approving `Bash`) can reach anything the
//! server's user can.
//!
//! ## The tenants file
//!
//! TOML, or JSON when the name ends in `.json`, with the same fields:
//!
//! ```toml
//! [[tenants]]
//! name = "acme"                           # 1 to 64 of A-Z a-z 0-9 . _ -
//! token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! project_roots = ["/srv/acme"]           # the first: runs without a cwd work there
//! config_dir = "/srv/claude-config/acme"  # its CLIs' CLAUDE_CONFIG_DIR (created 0700)
//! operator = false                        # sees /metrics, every tenant's /v1/audit
//!
//! [tenants.limits]                        # each optional: no limit
//! max_concurrent = 2                      # runs in progress; beyond, they queue
//! max_queued = 8                          # runs waiting; beyond, 429
//! runs_per_minute = 30                    # runs started in any minute; beyond, 429
//! ```
//!
//! `printf %s "$TOKEN" | claude-code-server hash-token` prints a token's hash. A
//! presented token is hashed and compared with every known hash in constant time.
//! Runs, sessions and the audit log carry the tenant's name (a `--token` tenant's id is
//! its token's SHA-256); no plaintext token is written to the database or the log.
//! Every replica of a fleet must read the same tenants file. Spares (`prewarm`) are
//! started with the server's environment, so a tenant with its own `config_dir` starts
//! its CLIs cold.
//!
//! ## The audit log
//!
//! One row per run in the fleet's database (table `ccs_audit_log`, PostgreSQL or
//! SQLite), written before the run is queued and completed when it ends: the tenant,
//! the run and session, the request id, the endpoint, the prompt's SHA-256 and length
//! (its text only with [`ServerConfig::audit_prompts`], `--audit-prompts`), the working
//! directory, the permission mode, the model, the outcome, the cost and the tools
//! used. `GET /v1/audit?tenant=&before=&limit=` reads it, newest first (at most 1000
//! rows a page; page with the last row's `at_ms` as `before`); without a server,
//! `claude-code-server --data-dir DIR audit [--tenant NAME] [--limit N]` (or
//! `--database-url URL audit`) prints the same rows as JSON lines ([`read_audit`]).
//!
//! # Metrics
//!
//! `GET /metrics` answers in the Prometheus text format, to operator tokens only (give
//! Prometheus one as its bearer token): `ccs_runs{state}`, `ccs_queue_depth`,
//! `ccs_leases_held`, `ccs_takeovers_total`, `ccs_pool_processes{state}`,
//! `ccs_approvals_waiting`, `ccs_event_lag_seconds` (from an event's append to its
//! delivery to a client), `ccs_cost_usd{tenant}`, `ccs_draining`. Fleet-wide figures
//! (runs, queue, approvals, cost) read the database at each scrape and are the same on
//! every replica; the others are this replica's, labelled `replica`.
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
//! `SIGINT` or `SIGTERM` first drains the replica for up to `drain_timeout` (20 s,
//! `--drain-timeout`; 0 skips it): it claims no new run (other replicas take the queued
//! ones), `/ready` answers `503`, a request for a new run is answered `503 draining`
//! (`Retry-After: 1`: send it to another replica), and it keeps serving until its own runs have ended
//! and no client is reading a run's events from it. Then it stops accepting connections, ends running streams with an
//! `error` event (`shutting_down`), refuses pending approvals, closes connections with
//! no request in progress, waits for the others, and kills every CLI the server
//! started: a run still in progress ends `interrupted` and its lease is released. A
//! second signal ends the drain; a third kills every CLI run and exits at once
//! (status 130).

mod api;
mod audit;
mod compat;
mod confine;
mod error;
mod fleet;
mod listen;
mod metrics;
pub mod openapi;
mod request_id;
mod routes;
mod runs;
mod tenants;
mod workspace;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use axum::Router;
use claude_code_sdk::{
    ClaudeCodeOptions, InheritEnv, ManagerConfig, PermissionMode, PoolConfig, QueryPool,
};

pub use api::{
    ApprovalAnswer, ApprovalCounts, Health, HealthModes, NewSession, PermissionRequest,
    QueryRequest, QueryResponse, Ready, ResultSummary, RunCounts, RunStatus, SessionCounts,
    SessionHistory, SessionTurn, SessionTurnRecord, Stats, StreamEvent, StreamEventKind,
};
pub use error::{ApiError, ApiJson, ErrorBody, ErrorDetail};
pub use listen::serve_on;
pub use tenants::{Tenant, check_tenants, hash_token, load_tenants};

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
    /// The most sessions one caller may have at once (starts under way count).
    pub max_sessions: usize,
    /// A session unused this long ends.
    pub session_ttl: Duration,
    /// Variables of the server's environment the CLI inherits besides
    /// [`ESSENTIAL_ENV`](claude_code_sdk::options::ESSENTIAL_ENV): names, or prefixes
    /// ending in `*`. The server's own secrets can never be named.
    pub pass_env: Vec<String>,
    /// Deny, without asking anyone, a permission request about a path outside the
    /// project root (the tool input's path fields or the CLI's `blocked_path`). Default:
    /// on unless `bind` is a loopback address (set when [`ServerConfig::new`] runs).
    pub deny_outside_project: bool,
    /// Tokens whose callers are operators: they also see the server-wide figures of
    /// `/v1/stats`, `/metrics` and every tenant's `/v1/audit`. Each must also be an
    /// accepted token ([`ServerConfig::operator_token`] adds it to
    /// both lists).
    pub operator_tokens: Vec<String>,
    /// The most a `POST /v1/query` collects (the CLI's output lines, in bytes) before
    /// it stops the run and answers `502 response_too_large` (default 16 MiB).
    pub max_response_bytes: usize,
    /// How many CLI conversations (session ids) the server remembers the owner of
    /// (default 100 000); the least recently used are forgotten first, and can no
    /// longer be resumed.
    pub max_conversations: u64,
    /// A remembered conversation unused this long is forgotten (default 24 hours).
    pub conversation_ttl: Duration,
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
    /// Parked CLIs kept ready for runs (default 1), for each of the two shapes a run
    /// can have: without approvals, and with approvals from a browser. A run in any
    /// working directory, with any model and allowed mode, claims one in ~40 ms instead
    /// of a cold start. They count against the pool's `max_concurrent` and give their
    /// slot up when a run needs it.
    pub prewarm: usize,
    /// The PostgreSQL database the fleet shares (`postgres://...`): every replica
    /// pointed at it serves every client. `None`: the server runs alone on SQLite
    /// under `data_dir` (or in memory when that is `None` too).
    pub database_url: Option<String>,
    /// Where a server alone keeps its SQLite database (`server.db`) and session
    /// transcripts (`sessions.db`). `None` with no `database_url`: in memory, gone at
    /// exit.
    pub data_dir: Option<PathBuf>,
    /// This replica's id: stable across restarts of the same replica (a restarted
    /// replica ends the runs it held before at once), unique among live ones. Default:
    /// a new random id.
    pub replica_id: Option<String>,
    /// How long a replica holds a run without renewing its lease; a run whose lease
    /// runs out is ended `interrupted` by another replica (default 10 s).
    pub lease: Duration,
    /// How long a streaming run goes on with nobody reading it (a client that
    /// disconnected may reconnect, to any replica); then it is cancelled (default 30 s).
    pub disconnect_grace: Duration,
    /// How long a session's turn waits for its home replica (the one with its hot
    /// process) before another replica takes it (default 2 s).
    pub home_grace: Duration,
    /// Per-tenant limits on runs (429 with `Retry-After` beyond them): those of the
    /// tenants of `api_tokens`; each of `tenants` has its own.
    pub tenant_limits: TenantLimits,
    /// Tenants with their own token hashes, project roots, `CLAUDE_CONFIG_DIR` and
    /// limits (see [`Tenant`] and the tenants file format in [`load_tenants`]'s
    /// module docs), beside the tenants of `api_tokens`.
    pub tenants: Vec<Tenant>,
    /// On `SIGTERM` (or `SIGINT`), how long [`serve`] lets this replica's runs finish
    /// before it ends the rest `interrupted` (default 20 s, under the 30 s a
    /// Kubernetes pod is given by default before it is killed; zero: at once). While it
    /// drains it claims no run and `/ready` answers `503`.
    pub drain_timeout: Duration,
    /// Whether the audit log keeps each run's prompt text (default: only its length
    /// and SHA-256).
    pub audit_prompts: bool,
}

/// Per-tenant limits on runs. `None`: no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantLimits {
    /// Runs in progress at once; beyond it runs queue (up to `max_queued`).
    pub max_concurrent: Option<u32>,
    /// Runs waiting for a slot.
    pub max_queued: Option<u32>,
    /// Runs started in any minute.
    pub runs_per_minute: Option<u32>,
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
            deny_outside_project: !bind.ip().is_loopback(),
            operator_tokens: Vec::new(),
            max_response_bytes: 16 * 1024 * 1024,
            max_conversations: 100_000,
            conversation_ttl: Duration::from_secs(24 * 3600),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: 256,
            stream_stall_timeout: Duration::from_secs(30),
            prewarm: 1,
            database_url: None,
            data_dir: None,
            replica_id: None,
            lease: Duration::from_secs(10),
            disconnect_grace: Duration::from_secs(30),
            home_grace: Duration::from_secs(2),
            tenant_limits: TenantLimits::default(),
            tenants: Vec::new(),
            drain_timeout: Duration::from_secs(20),
            audit_prompts: false,
        }
    }

    /// Runs the fleet on this PostgreSQL database (see [`ServerConfig::database_url`]).
    #[must_use]
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Keeps a server alone's database under `dir` (see [`ServerConfig::data_dir`]).
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// This replica's id (see [`ServerConfig::replica_id`]).
    #[must_use]
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = Some(id.into());
        self
    }

    /// How long a lease holds without renewal.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a streaming run goes on with nobody reading it.
    #[must_use]
    pub fn disconnect_grace(mut self, grace: Duration) -> Self {
        self.disconnect_grace = grace;
        self
    }

    /// A tenant of its own token hashes, project roots, config directory and limits
    /// (call again for more).
    #[must_use]
    pub fn tenant(mut self, tenant: Tenant) -> Self {
        self.tenants.push(tenant);
        self
    }

    /// These tenants too (e.g. from [`load_tenants`]).
    #[must_use]
    pub fn tenants(mut self, tenants: impl IntoIterator<Item = Tenant>) -> Self {
        self.tenants.extend(tenants);
        self
    }

    /// How long a stop signal lets running runs finish (see
    /// [`ServerConfig::drain_timeout`](ServerConfig#structfield.drain_timeout)).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Keeps prompts' text in the audit log.
    #[must_use]
    pub fn audit_prompts(mut self, keep: bool) -> Self {
        self.audit_prompts = keep;
        self
    }

    /// Per-tenant limits on runs.
    #[must_use]
    pub fn tenant_limits(mut self, limits: TenantLimits) -> Self {
        self.tenant_limits = limits;
        self
    }

    /// How many parked CLIs to keep ready for each run shape (see
    /// [`ServerConfig::prewarm`]); 0 for none.
    #[must_use]
    pub fn prewarm(mut self, spares: usize) -> Self {
        self.prewarm = spares;
        self
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

    /// The most sessions each caller may have, and how long an unused one lives.
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

    /// Accepts this bearer token, and makes its callers operators (see
    /// [`ServerConfig::operator_tokens`](ServerConfig#structfield.operator_tokens);
    /// call again for more).
    #[must_use]
    pub fn operator_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        if !self.api_tokens.contains(&token) {
            self.api_tokens.push(token.clone());
        }
        self.operator_tokens.push(token);
        self
    }

    /// Deny permission requests about paths outside the project root without asking
    /// (see [`ServerConfig::deny_outside_project`](ServerConfig#structfield.deny_outside_project)).
    #[must_use]
    pub fn deny_outside_project(mut self, deny: bool) -> Self {
        self.deny_outside_project = deny;
        self
    }

    /// The most bytes a `POST /v1/query` collects (at least 4096).
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes.max(4096);
        self
    }

    /// How many CLI conversations the server remembers the owner of, and for how long
    /// an unused one is remembered.
    #[must_use]
    pub fn conversations(mut self, max: u64, ttl: Duration) -> Self {
        self.max_conversations = max;
        self.conversation_ttl = ttl;
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
        tenants::check_tenants(&self.tenants)?;
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
    /// Runs, sessions, approvals and events, shared by every replica.
    fleet: fleet::Fleet,
    /// What identifies the project root's storage.
    workspace: workspace::Workspace,
    /// The tenants of the tenants file.
    tenants: Vec<Arc<tenants::Resolved>>,
    /// What identifies each tenant project root's storage.
    workspaces: Vec<(PathBuf, workspace::Workspace)>,
    /// How many clients read a run's events now (a drain waits for them).
    readers: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests between their admission and their run's row (see `routes::Admitted`).
    admitting: Arc<std::sync::atomic::AtomicUsize>,
    /// What `/metrics` counts besides what the database and the pool say.
    metrics: metrics::Metrics,
    /// The callers of operator tokens.
    operators: Vec<String>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
    /// The temporary directory of a server given no database and no data directory.
    _temp_dir: Option<tempfile::TempDir>,
}

/// Counts a client reading a run's events while it lives.
pub(crate) struct Reading(Arc<std::sync::atomic::AtomicUsize>);

impl StateInner {
    /// A client starts reading a run's events.
    pub(crate) fn reading(&self) -> Reading {
        self.readers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reading(Arc::clone(&self.readers))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for StateInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.fleet.stop_background();
    }
}

fn io_err(err: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(err.to_string())
}

impl AppState {
    /// Builds the state: connects to the database (creating its schema), starts the
    /// pool and this replica's part of the fleet (a Tokio runtime is needed).
    ///
    /// # Errors
    ///
    /// An [`std::io::Error`] when the project root does not exist, the database cannot
    /// be reached or set up, or the options are invalid.
    pub async fn new(mut config: ServerConfig) -> std::io::Result<AppState> {
        let project_root = config.project_root.canonicalize().map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("project root {}: {err}", config.project_root.display()),
            )
        })?;
        config.base_options = cli_environment(&config)?;
        // The database, and where session transcripts live (so any replica can
        // continue any session).
        let mut temp_dir = None;
        let (url, store): (
            String,
            std::sync::Arc<dyn claude_code_sdk::store::SessionStore>,
        ) = match (&config.database_url, &config.data_dir) {
            (Some(url), _) => (
                url.clone(),
                std::sync::Arc::new(
                    claude_code_sdk::store::PostgresSessionStore::connect(url)
                        .await
                        .map_err(io_err)?,
                ),
            ),
            (None, Some(dir)) => {
                std::fs::create_dir_all(dir)?;
                let dir = dir.canonicalize()?;
                (
                    format!("sqlite://{}?mode=rwc", dir.join("server.db").display()),
                    std::sync::Arc::new(
                        // As durable as the server's own SQLite database (WAL,
                        // `synchronous = NORMAL`): a crash of the server loses
                        // nothing, a crash of the host the last commits of both.
                        claude_code_sdk::store::SqliteSessionStore::open_with(
                            dir.join("sessions.db"),
                            claude_code_sdk::store::Durability::ProcessCrash,
                        )
                        .await
                        .map_err(io_err)?,
                    ),
                )
            }
            (None, None) => {
                // No place given: a temporary one, removed with the state.
                let dir = tempfile::Builder::new()
                    .prefix("claude-code-server-")
                    .tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("server.db").display()
                );
                temp_dir = Some(dir);
                (
                    url,
                    std::sync::Arc::new(claude_code_sdk::store::InMemorySessionStore::new()),
                )
            }
        };
        let db = fleet::db::Db::connect(&url, 16).await.map_err(io_err)?;
        audit::migrate(&db).await.map_err(io_err)?;
        config.base_options = config
            .base_options
            .to_builder()
            .session_store(store)
            .build()
            .map_err(io_err)?;
        let mut pool_config = config.pool.clone();
        if config.prewarm > 0 {
            // The options of a request that chooses nothing, as `resolve` and the
            // executor build them: a run that chooses a working directory, a model or
            // an allowed mode differs only in what a claim sets. Approvals add a
            // callback, which changes how the CLI starts: a second profile, whose
            // callback each run replaces.
            let plain = crate::runs::with_confinement(config.base_options.to_builder(), |_| {
                claude_code_sdk::hooks::HookOutput::deny("no run has claimed this process")
            })
            .permission_mode(config.default_mode)
            .max_turns(config.max_turns)
            .cwd(&project_root)
            .timeout(config.request_timeout)
            .build()
            .map_err(io_err)?;
            let approving = plain
                .to_builder()
                .can_use_tool(|_, _, _| async {
                    claude_code_sdk::PermissionDecision::deny("no run has claimed this process")
                })
                .build()
                .map_err(io_err)?;
            pool_config = pool_config
                .prewarm(plain, config.prewarm)
                .prewarm(approving, config.prewarm);
        }
        let capacity = pool_config.max_concurrent.max(1);
        let pool = QueryPool::new(pool_config);
        let fleet = fleet::Fleet::new(
            db,
            fleet::FleetConfig {
                replica: config
                    .replica_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                lease: config.lease,
                home_grace: config.home_grace,
                disconnect_grace: config.disconnect_grace,
                capacity,
                max_queued: config.pool.max_queued,
                queue_timeout: config.pool.queue_timeout,
                tenant_max_active: {
                    // A tenants file's tenant by its name; every other caller (a token
                    // given with --token) by the server-wide tenant limits.
                    let default = config.tenant_limits.max_concurrent;
                    let named: std::collections::HashMap<String, Option<u32>> = config
                        .tenants
                        .iter()
                        .map(|t| (t.name.clone(), t.limits.max_concurrent))
                        .collect();
                    fleet::TenantMaxActive(Arc::new(move |tenant: &str| {
                        named.get(tenant).copied().unwrap_or(default)
                    }))
                },
            },
        );
        let workspace = workspace::Workspace::load(&project_root)?;
        tenants::check_tenants(&config.tenants)?;
        let tenants = config
            .tenants
            .iter()
            .map(|t| tenants::Resolved::new(t).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut workspaces: Vec<(PathBuf, workspace::Workspace)> = Vec::new();
        for root in tenants.iter().flat_map(|t| t.roots.iter()) {
            if *root != project_root && !workspaces.iter().any(|(r, _)| r == root) {
                workspaces.push((root.clone(), workspace::Workspace::load(root)?));
            }
        }
        let operators = config
            .operator_tokens
            .iter()
            .map(|t| routes::caller_id(t))
            .collect();
        let state = AppState {
            inner: Arc::new(StateInner {
                config,
                project_root,
                pool,
                fleet: fleet.clone(),
                workspace,
                tenants,
                workspaces,
                readers: Arc::default(),
                admitting: Arc::default(),
                metrics: metrics::Metrics::default(),
                operators,
                shutdown: CancellationToken::new(),
                _temp_dir: temp_dir,
            }),
        };
        let weak = Arc::downgrade(&state.inner);
        fleet
            .start(Arc::new(move |ctx| {
                let weak = weak.clone();
                Box::pin(async move {
                    if let Some(inner) = weak.upgrade() {
                        runs::execute(AppState { inner }, ctx).await;
                    }
                })
            }))
            .await
            .map_err(io_err)?;
        if let Err(err) = sweep_sessions(&state).await {
            tracing::warn!(%err, "could not end idle sessions");
        }
        tokio::spawn(session_sweeper(Arc::downgrade(&state.inner)));
        Ok(state)
    }

    /// Ends running streams, and stops this replica's runs (their CLIs are killed; they
    /// end `interrupted`): the first step of a graceful shutdown.
    pub fn shut_down(&self) {
        self.inner.shutdown.cancel();
        let fleet = self.inner.fleet.clone();
        tokio::spawn(async move { fleet.shut_down().await });
    }

    /// Stops claiming new runs; runs in progress go on (a graceful drain), and
    /// `/ready` answers `503`.
    pub fn drain(&self) {
        self.inner.fleet.drain();
    }

    /// Waits until this replica runs no run and no client reads a run's events from
    /// it, or `timeout` passed: `true` when it is idle.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let readers = self.inner.readers.load(std::sync::atomic::Ordering::SeqCst);
            if self.inner.fleet.running() == 0 && readers == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    running = self.inner.fleet.running(),
                    readers,
                    "the drain timeout passed: ending what is left"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process pool.
    pub fn pool(&self) -> &QueryPool {
        &self.inner.pool
    }

    /// This replica's id in the fleet.
    pub fn replica_id(&self) -> &str {
        self.inner.fleet.replica()
    }
}

/// The newest `limit` rows of the audit log (of `tenant`, when given), newest first,
/// read straight from the database of a server: the fleet's PostgreSQL database, or
/// the SQLite one under `data_dir` of a server alone. What `claude-code-server audit`
/// prints; the same rows as `GET /v1/audit`.
///
/// # Errors
///
/// When the database cannot be reached (a `data_dir` without a server's database
/// included).
pub async fn read_audit(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
    tenant: Option<&str>,
    limit: u32,
) -> std::io::Result<Vec<serde_json::Value>> {
    let url = match database_url {
        Some(url) => url.to_owned(),
        None => {
            let file = data_dir.join("server.db");
            if !file.is_file() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no server database at {}", file.display()),
                ));
            }
            format!("sqlite://{}?mode=rw", file.display())
        }
    };
    let db = fleet::db::Db::connect(&url, 2).await.map_err(io_err)?;
    audit::migrate(&db).await.map_err(io_err)?;
    audit::list(&db, tenant, None, i64::from(limit.max(1)))
        .await
        .map_err(io_err)
}

/// Ends sessions unused for the session TTL.
async fn sweep_sessions(state: &AppState) -> Result<(), fleet::db::DbError> {
    let inner = &state.inner;
    let ttl = i64::try_from(inner.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let ended = inner
        .fleet
        .db()
        .end_idle_sessions(fleet::db::now_ms().saturating_sub(ttl))
        .await?;
    for (_, cli) in &ended {
        if let Some(cli) = cli {
            inner.pool.end_conversation(cli);
        }
    }
    if !ended.is_empty() {
        tracing::info!(ended = ended.len(), "ended unused sessions");
    }
    Ok(())
}

async fn session_sweeper(state: std::sync::Weak<StateInner>) {
    loop {
        let pause = {
            let Some(inner) = state.upgrade() else { return };
            let state = AppState { inner };
            if let Err(err) = sweep_sessions(&state).await {
                tracing::warn!(%err, "could not end idle sessions");
            }
            (state.inner.config.session_ttl / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(60))
        };
        tokio::time::sleep(pause).await;
    }
}

/// Names the server's own secrets live under: never passed to a CLI.
const SERVER_SECRETS: &[&str] = &[
    "CLAUDE_SERVER_TOKENS",
    "CLAUDE_SERVER_TOKEN_FILE",
    "CLAUDE_SERVER_OPERATOR_TOKENS",
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

/// The owner scope of the server's CLI runs (see
/// [`set_owner_scope`](claude_code_sdk::cli::set_owner_scope)).
pub const OWNER_SCOPE: &str = "claude-code-server";

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
    let bind = config.bind;
    let drain_timeout = config.drain_timeout;
    let state = AppState::new(config).await?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {bind}: {err}"))
    })?;
    tracing::info!(addr = %listener.local_addr()?, "claude-code-server listening");
    let draining = state.clone();
    let stop = async move {
        stop_signal().await;
        if !drain_timeout.is_zero() {
            // Stop claiming; let the runs here finish and their clients read them
            // (others may take the queued runs), up to the drain timeout.
            tracing::info!(
                timeout_secs = drain_timeout.as_secs(),
                "draining: claiming no new run, letting running ones finish (a second signal stops at once)"
            );
            draining.drain();
            tokio::select! {
                _ = draining.drained(drain_timeout) => {}
                () = stop_signal() => {}
            }
        }
        drop(draining);
        tracing::info!("shutting down: ending streams and runs (a second signal exits at once)");
        tokio::spawn(async {
            stop_signal().await;
            // Exiting skips destructors: kill every CLI run first.
            claude_code_sdk::cli::kill_all_runs();
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
