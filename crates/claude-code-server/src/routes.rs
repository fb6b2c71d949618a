//! The handlers.

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use claude_code_sdk::{ClaudeCodeOptions, Message, PooledQuery};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::api::{
    ApprovalAnswer, NewSession, PermissionRequest, QueryRequest, QueryResponse, ResultSummary,
    SessionTurn,
};
use crate::approvals::{AnswerError, AskPolicy};
use crate::error::{ApiError, ApiJson, ErrorBody, web_message};
use crate::tenants::{RunGuard, Tenants};
use crate::{AppState, StateInner};

const PAGE: &str = include_str!("page.html");

/// Who is calling: a digest of the bearer token (or `local` without auth). Sessions
/// and approvals belong to it.
#[derive(Debug, Clone)]
pub(crate) struct Caller(String);

pub(crate) fn router(state: AppState) -> Router {
    let limit = state.inner.config.max_body_bytes;
    let api = Router::new()
        .route("/v1/query", post(query_json))
        .route("/v1/query/stream", post(query_stream))
        .route("/v1/approvals/{id}", post(approve))
        .route("/v1/sessions", post(start_session))
        .route(
            "/v1/sessions/{id}",
            get(session_history).delete(end_session),
        )
        .route("/v1/sessions/{id}/messages", post(continue_session))
        .route("/v1/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "The server is up: its version, the permission modes it allows and its default, the max turns")))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Value> {
    let config = &state.inner.config;
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "modes": {
            "allowed": config.allowed_modes,
            "default": config.default_mode,
        },
        "max_turns": config.max_turns,
    }))
}

/// Bearer-token check for the API routes; without tokens, only loopback `Host`s.
async fn auth(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let tokens = &state.inner.config.api_tokens;
    if tokens.is_empty() {
        // No auth on loopback: refuse requests for another host name, so a web page
        // elsewhere cannot reach this server by rebinding a name of its own to
        // 127.0.0.1. (Without auth elsewhere, the operator chose to serve anyone.)
        if state.inner.config.bind.ip().is_loopback() && !loopback_host(request.headers()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                "without an API token this server only answers requests for localhost",
            )
            .into_response();
        }
        request.extensions_mut().insert(Caller("local".to_owned()));
        return next.run(request).await;
    }
    let presented = bearer(request.headers()).map(digest);
    let known = presented.as_ref().is_some_and(|p| {
        tokens
            .iter()
            .fold(false, |found, t| found | same(&digest(t), p))
    });
    if let (true, Some(caller)) = (known, presented) {
        request.extensions_mut().insert(Caller(hex(&caller)));
        return next.run(request).await;
    }
    // Who tried and where; never what they presented.
    tracing::warn!(
        remote = %request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string()),
        route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("-", |p| p.as_str()),
        reason = if presented.is_some() { "unknown token" } else { "no bearer token" },
        "failed login"
    );
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <token>` header is required",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without stopping at the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The caller id of a token, as [`auth`] computes it.
pub(crate) fn caller_id(token: &str) -> String {
    hex(&digest(token))
}

/// Whether `id` is a session id in the CLI's own form: a UUID written as 36
/// characters, hyphenated (`{...}`, `urn:uuid:` and unhyphenated forms are refused).
fn canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A request's `json_schema` must be a JSON Schema: checked against the meta-schema
/// it declares with `$schema`, or else against draft 2020-12 or draft 7 (either).
fn check_schema(schema: &Value) -> Result<(), ApiError> {
    let bad = |why: String| {
        ApiError::bad_request(
            "invalid_options",
            format!("json_schema is not a valid JSON Schema: {why}"),
        )
    };
    if !schema.is_object() {
        return Err(bad("it must be an object".to_owned()));
    }
    let Err(first) = jsonschema::meta::validate(schema) else {
        return Ok(());
    };
    if schema.get("$schema").is_none() && jsonschema::draft7::meta::validate(schema).is_ok() {
        return Ok(());
    }
    let at = first.instance_path().to_string();
    Err(bad(if at.is_empty() {
        first.to_string()
    } else {
        format!("{first} (at {at})")
    }))
}

impl StateInner {
    /// The working directory for a request: under the project root, existing.
    fn resolve_cwd(&self, cwd: Option<&str>) -> Result<PathBuf, ApiError> {
        let Some(relative) = cwd.filter(|c| !c.is_empty()) else {
            return Ok(self.project_root.clone());
        };
        let bad = |why: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_options",
                format!("cwd {relative:?} {why}"),
            )
        };
        let path = Path::new(relative);
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(bad("must be a relative path inside the project root"));
        }
        // Canonical: symlinks are followed before the check.
        let full = self
            .project_root
            .join(path)
            .canonicalize()
            .map_err(|_| bad("does not exist under the project root"))?;
        if !full.starts_with(&self.project_root) || !full.is_dir() {
            return Err(bad("must be a directory inside the project root"));
        }
        Ok(full)
    }

    /// The options of a request, within the server's limits, and the cumulative cost
    /// of the conversation it resumes (if it resumes one and the cost is known).
    fn options_for(
        &self,
        request: &QueryRequest,
        caller: &Caller,
    ) -> Result<(ClaudeCodeOptions, Option<f64>), ApiError> {
        let config = &self.config;
        let mode = request.permission_mode.unwrap_or(config.default_mode);
        if !config.allowed_modes.contains(&mode) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "this server does not allow permission mode {mode}; allowed: {}",
                    config
                        .allowed_modes
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(model) = &request.model
            && !config.allowed_models.is_empty()
            && !config.allowed_models.contains(model)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "this server does not allow model {model:?}; allowed: {}",
                    config.allowed_models.join(", ")
                ),
            ));
        }
        if let Some(schema) = &request.json_schema {
            check_schema(schema)?;
        }
        // Only a conversation this caller's runs produced can be resumed: anything else
        // is unknown, whoever else it may belong to.
        let mut resume = None;
        let mut previous_total = None;
        if let Some(session) = &request.resume {
            if !canonical_uuid(session) {
                return Err(ApiError::bad_request(
                    "invalid_options",
                    "resume must be a session id from an earlier result: a UUID in its \
                     36-character hyphenated form",
                ));
            }
            let session = session.to_ascii_lowercase();
            let Some(known) = self.tenants.conversation(&caller.0, &session) else {
                return Err(ApiError::not_found(format!(
                    "no conversation {session:?} to resume"
                )));
            };
            previous_total = known.total_cost_usd;
            resume = Some(session);
        }
        let turns = request
            .max_turns
            .unwrap_or(config.max_turns)
            .clamp(1, config.max_turns);
        let mut builder = config
            .base_options
            .to_builder()
            .permission_mode(mode)
            .max_turns(turns)
            .cwd(self.resolve_cwd(request.cwd.as_deref())?)
            .timeout(config.request_timeout)
            .include_partial_messages(request.include_partial_messages);
        if let Some(model) = &request.model {
            builder = builder.model(model);
        }
        if let Some(extra) = &request.append_system_prompt {
            builder = builder.append_system_prompt(extra);
        }
        if let Some(schema) = &request.json_schema {
            builder = builder.json_schema(schema.clone());
        }
        if let Some(session) = &resume {
            builder = builder.resume(session);
        }
        Ok((builder.build()?, previous_total))
    }

    /// Whether `caller` sees the server-wide figures: an operator token's caller, or
    /// everyone when the server has no tokens.
    fn is_operator(&self, caller: &Caller) -> bool {
        self.config.api_tokens.is_empty() || self.operators.contains(&caller.0)
    }

    fn shutting_down() -> ApiError {
        ApiError::unavailable("shutting_down", "the server is shutting down", 5)
    }
}

#[utoipa::path(post, path = "/v1/query", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run's messages and result", body = QueryResponse),
        (status = 400, description = "Invalid options or body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "A permission mode or model the server does not allow, or a tool use nobody could approve", body = ErrorBody),
        (status = 422, description = "Max turns or budget reached, or the run was interrupted", body = ErrorBody),
        (status = 429, description = "The model API is rate limited", body = ErrorBody),
        (status = 502, description = "The model API or the CLI failed", body = ErrorBody),
        (status = 503, description = "No process slot free (see Retry-After)", body = ErrorBody),
        (status = 504, description = "The run timed out", body = ErrorBody),
    ))]
pub(crate) async fn query_json(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Json<QueryResponse>, ApiError> {
    if request.approvals {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_options",
            "approvals need a stream to ask on: use POST /v1/query/stream",
        ));
    }
    let inner = &state.inner;
    let (options, previous_total) = inner.options_for(&request, &caller)?;
    // What this endpoint collects is bounded: a single line longer than the whole
    // allowance is refused by the SDK before it is buffered.
    let limit = inner.config.max_response_bytes;
    let options = options
        .to_builder()
        .max_line_bytes(options.line_limit().min(limit).max(4096))
        .build()?;
    let mut run = inner.pool.query(request.prompt, options).await?;
    let guard = inner.tenants.run(&caller.0);
    let mut messages = Vec::new();
    let mut collected = 0usize;
    let error = loop {
        // A shutdown drops the run, which kills its CLI.
        let item = tokio::select! {
            item = run.next() => item,
            () = inner.shutdown.cancelled() => return Err(StateInner::shutting_down()),
        };
        match item {
            Some(Ok(message)) => {
                inner.tenants.record_message(&caller.0, &message);
                // The result's text is answered twice (in `messages` and `result`).
                collected = collected
                    .saturating_add(message.raw().len())
                    .saturating_add(
                        message
                            .as_result()
                            .and_then(|r| r.result.as_ref())
                            .map_or(0, String::len),
                    );
                if collected > limit {
                    // Dropping the run kills its CLI.
                    return Err(ApiError::response_too_large(limit));
                }
                messages.push(message);
            }
            Some(Err(err)) if err.is_protocol() && err.to_string().contains("max_line_bytes") => {
                return Err(ApiError::response_too_large(limit));
            }
            Some(Err(err)) => break Some(err),
            None => break None,
        }
    };
    drop(run);
    guard.finish(error.is_none());
    match error {
        None => Ok(Json(QueryResponse::resumed(
            None,
            &messages,
            previous_total,
        ))),
        Some(err) => Err(ApiError::from_run(&err, &messages)),
    }
}

#[utoipa::path(post, path = "/v1/query/stream", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "Server-sent events: `message` (a web message), `permission_request` (a PermissionRequest, with `approvals: true`), then `done` (a ResultSummary) or `error` (an ErrorBody's `error`)"),
        (status = 400, description = "Invalid options or body", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "A permission mode or model the server does not allow", body = ErrorBody),
        (status = 503, description = "No process slot free (see Retry-After)", body = ErrorBody),
    ))]
pub(crate) async fn query_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (mut options, previous_total) = state.inner.options_for(&request, &caller)?;
    let (ask_tx, ask_rx) = mpsc::channel::<PermissionRequest>(8);
    if request.approvals {
        let approvals = state.inner.approvals.clone();
        let timeout = state.inner.config.approval_timeout;
        let owner = caller.0.clone();
        let cwd = options
            .cwd
            .clone()
            .unwrap_or_else(|| state.inner.project_root.clone());
        let policy = AskPolicy {
            deny_outside_project: state.inner.config.deny_outside_project,
        };
        options = options
            .to_builder()
            .can_use_tool(move |tool, input, context| {
                let approvals = approvals.clone();
                let ask_tx = ask_tx.clone();
                let owner = owner.clone();
                let cwd = cwd.clone();
                async move {
                    approvals
                        .ask(&ask_tx, &owner, &cwd, policy, tool, input, context, timeout)
                        .await
                }
            })
            .build()?;
    }
    let run = state.inner.pool.query(request.prompt, options).await?;
    let guard = state.inner.tenants.run(&caller.0);
    let tracker = Tracker {
        tenants: state.inner.tenants.clone(),
        owner: caller.0.clone(),
        previous_total,
        guard: Some(guard),
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    // The run's own deadline is only checked while it is read; this one holds even if
    // the client stops reading.
    let deadline = tokio::time::Instant::now() + state.inner.config.request_timeout;
    tokio::spawn(crate::request_id::carry(drive(
        run,
        ask_rx,
        tx,
        deadline,
        state.inner.config.stream_stall_timeout,
        state.inner.shutdown.clone(),
        tracker,
    )));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

fn error_event(kind: &str, message: &str) -> Event {
    event(
        "error",
        &json!({"error": {"kind": kind, "message": message, "transient": true}}),
    )
}

/// What a streamed run reports to the caller's books: the conversations it produces,
/// its cost, its outcome.
struct Tracker {
    tenants: Tenants,
    owner: String,
    /// The cumulative cost of the conversation the run resumes.
    previous_total: Option<f64>,
    guard: Option<RunGuard>,
}

impl Tracker {
    fn finish(&mut self, ok: bool) {
        if let Some(guard) = self.guard.take() {
            guard.finish(ok);
        }
    }
}

/// Runs a query into a client's event stream. Ends (dropping the run, which kills the
/// CLI) when the client goes away, at the deadline, when the client takes no event for
/// `stall` (it stopped reading), or at shutdown.
async fn drive(
    mut run: PooledQuery,
    mut asks: mpsc::Receiver<PermissionRequest>,
    tx: mpsc::Sender<Event>,
    deadline: tokio::time::Instant,
    stall: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut tracker: Tracker,
) {
    let mut summary: Option<ResultSummary> = None;
    let ended = |kind: &'static str, message: &'static str| {
        let tx = tx.clone();
        async move {
            // Best effort: a client that does not read gets nothing more.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                tx.send(error_event(kind, message)),
            )
            .await;
        }
    };
    loop {
        // The next event, and whether it ends the stream.
        let (next, last) = tokio::select! {
            biased;
            () = tx.closed() => return,
            () = shutdown.cancelled() => {
                return ended("shutting_down", "the server is shutting down").await;
            }
            () = tokio::time::sleep_until(deadline) => {
                return ended("timeout", "the run took longer than the server allows").await;
            }
            Some(ask) = asks.recv() => (event("permission_request", &ask), false),
            item = run.next() => match item {
                Some(Ok(message)) => {
                    tracker.tenants.record_message(&tracker.owner, &message);
                    if message.is_result() {
                        summary = ResultSummary::resumed(
                            std::slice::from_ref(&message),
                            tracker.previous_total,
                        );
                    }
                    (event("message", &web_message(&message)), false)
                }
                Some(Err(err)) => {
                    tracker.finish(false);
                    (event("error", &json!({"error": ApiError::error_json(&err)})), true)
                }
                None => {
                    tracker.finish(true);
                    (event("done", &summary), true)
                }
            },
        };
        tokio::select! {
            sent = tx.send(next) => if sent.is_err() { return },
            () = tokio::time::sleep(stall) => {
                tracing::warn!(
                    stall_secs = stall.as_secs_f64(),
                    "the client stopped reading its stream: cancelling the run"
                );
                return;
            }
            () = tokio::time::sleep_until(deadline) => return,
            () = shutdown.cancelled() => return,
        }
        if last {
            return;
        }
    }
}

#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "query", request_body = ApprovalAnswer,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The `approval_id` of a permission_request")),
    responses(
        (status = 204, description = "Delivered"),
        (status = 400, description = "An `updated_input` the server cannot vouch for (a path outside the project root, or a changed input of a tool without path fields): the request still waits", body = ErrorBody),
        (status = 404, description = "No such request waits for this caller (answered, expired, unknown, or another caller's)", body = ErrorBody),
    ))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    ApiJson(answer): ApiJson<ApprovalAnswer>,
) -> Result<StatusCode, ApiError> {
    match state.inner.approvals.answer(&id, &caller.0, answer) {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(AnswerError::NotFound) => Err(ApiError::not_found(format!(
            "no permission request {id:?} is waiting (answered, expired or unknown)"
        ))),
        Err(AnswerError::Refused(why)) => Err(ApiError::bad_request(
            "invalid_request",
            format!("{why} (the permission request still waits for an answer)"),
        )),
    }
}

impl StateInner {
    /// The session, if it exists and belongs to `caller`; marks it used.
    async fn own_session(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<claude_code_sdk::ConversationRecord, ApiError> {
        self.sessions
            .record_for(&caller.0, id)
            .await
            .map_err(|_| ApiError::not_found(format!("no session with id {id:?}")))
    }
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The session's id (`session`) and its first turn", body = QueryResponse),
        (status = 503, description = "No process slot free, or too many sessions (see Retry-After)", body = ErrorBody),
    ))]
pub(crate) async fn start_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<NewSession>,
) -> Result<(StatusCode, Json<QueryResponse>), ApiError> {
    let inner = &state.inner;
    let cwd = inner.resolve_cwd(request.cwd.as_deref())?;
    let id = uuid::Uuid::new_v4().to_string();
    // The start counts against the caller's cap while it runs; dropping the ticket
    // (a client that goes away, say) leaves nothing behind.
    let open = inner.sessions.count(Some(&caller.0)).await?;
    let Some(ticket) = inner
        .tenants
        .start_session(&caller.0, open, &id, &inner.sessions)
    else {
        return Err(ApiError::unavailable(
            "too_many_sessions",
            format!(
                "you hold your maximum of {} sessions (starts under way included); end one first",
                inner.config.max_sessions
            ),
            60,
        ));
    };
    let turn = inner
        .sessions
        .start_conversation_for(&caller.0, &id, &request.prompt, cwd);
    let outcome = tokio::select! {
        outcome = turn => outcome,
        () = inner.shutdown.cancelled() => Err(claude_code_sdk::Error::custom(
            claude_code_sdk::ErrorKind::PoolBusy, "the server is shutting down")),
    };
    inner.tenants.count_session_turn(&caller.0);
    match outcome {
        Ok(messages) => {
            inner.tenants.record_run(&caller.0, &messages);
            ticket.commit();
            Ok((
                StatusCode::CREATED,
                Json(QueryResponse::new(Some(id), &messages)),
            ))
        }
        Err(err) => {
            // The client never learns this session's id: nothing of it may stay.
            ticket.abandon().await;
            Err(err.into())
        }
    }
}

#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions", request_body = SessionTurn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The turn", body = QueryResponse),
        (status = 404, description = "Unknown session (or another caller's)", body = ErrorBody),
        (status = 409, description = "The session has a turn in progress", body = ErrorBody),
        (status = 503, description = "No process slot free (see Retry-After)", body = ErrorBody),
    ))]
pub(crate) async fn continue_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    ApiJson(request): ApiJson<SessionTurn>,
) -> Result<Json<QueryResponse>, ApiError> {
    let inner = &state.inner;
    // The turn continues the conversation: its running cost is in the record.
    let previous_total = Some(inner.own_session(&id, &caller).await?.total_cost_usd);
    let turn = inner
        .sessions
        .continue_conversation_for(&caller.0, &id, &request.prompt);
    let outcome = tokio::select! {
        outcome = turn => outcome,
        () = inner.shutdown.cancelled() => return Err(StateInner::shutting_down()),
    };
    inner.tenants.count_session_turn(&caller.0);
    let messages: Vec<Message> = outcome?;
    inner.tenants.record_run(&caller.0, &messages);
    Ok(Json(QueryResponse::resumed(
        Some(id),
        &messages,
        previous_total,
    )))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session's turns"),
        (status = 404, description = "Unknown session (or another caller's)", body = ErrorBody),
    ))]
pub(crate) async fn session_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.inner.own_session(&id, &caller).await?;
    // Each turn's own cost is stored; the conversation's total after it is the sum.
    let mut turns = serde_json::to_value(&record.turns).unwrap_or(Value::Null);
    let mut total = 0.0;
    for turn in turns.as_array_mut().into_iter().flatten() {
        let Some(cost) = turn["cost_usd"].as_f64() else {
            continue;
        };
        total += cost;
        turn["session_cost_usd"] = json!(total);
    }
    Ok(Json(json!({
        "session": record.id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "turns": turns,
    })))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 404, description = "Unknown session (or another caller's)", body = ErrorBody),
        (status = 409, description = "The session has a turn in progress", body = ErrorBody),
    ))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .inner
        .sessions
        .end_for(&caller.0, &id)
        .await
        .map_err(|err| match err.kind() {
            claude_code_sdk::ErrorKind::NotFound => {
                ApiError::not_found(format!("no session with id {id:?}"))
            }
            _ => err.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/stats", tag = "server",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's own figures (runs, sessions, session turns, approvals waiting); for operator tokens also the pool's and the server-wide figures")))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let inner = &state.inner;
    let mine = inner.tenants.figures(&caller.0);
    let open = inner.sessions.count(Some(&caller.0)).await.unwrap_or(0);
    let mut body = json!({
        "runs": {
            "active": mine.runs_active,
            "completed": mine.runs_completed,
            "failed": mine.runs_failed,
        },
        "sessions": {
            "open": open,
            "starting": mine.starting,
            "turns": mine.session_turns,
            "max": inner.config.max_sessions,
        },
        "approvals": {"waiting": inner.approvals.waiting_for(&caller.0)},
    });
    if inner.is_operator(&caller) {
        let pool = inner.pool.stats();
        body["pool"] = json!({
            "active": pool.active,
            "queued": pool.queued,
            "warm": pool.warm,
            "spares": pool.spares,
            "hot": pool.hot,
            "processes": pool.processes,
            "completed": pool.completed,
            "failed": pool.failed,
            "rejected": pool.rejected,
            "warm_hits": pool.warm_hits,
            "hot_hits": pool.hot_hits,
            "claimed": pool.claimed,
            "cold_starts": pool.cold_starts,
            "claim_fallbacks": pool.claim_fallbacks,
            "started": pool.started,
            "mean_wait_ms": pool.mean_wait.as_secs_f64() * 1000.0,
        });
        body["sessions"]["open_all"] = json!(inner.sessions.count(None).await.unwrap_or(0));
        body["approvals"]["waiting_all"] = json!(inner.approvals.waiting());
    }
    Json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_checked_without_panics() {
        for good in [
            json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            json!({"type": "array", "items": [{"type": "string"}]}), // draft 7 tuple form
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}),
        ] {
            assert!(check_schema(&good).is_ok(), "{good}");
        }
        for bad in [
            json!({"type": 5}),
            json!({"$schema": 5, "type": "object"}),
            json!({"$schema": "https://example.com/my-own-meta", "type": "object"}),
            json!({"properties": {"a": {"minLength": -1}}}),
            json!([{"type": "string"}]),
            json!(true),
        ] {
            assert!(check_schema(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_hyphenated_uuid_form_is_a_session_id() {
        let id = uuid::Uuid::new_v4();
        assert!(canonical_uuid(&id.to_string()));
        assert!(canonical_uuid(&id.to_string().to_uppercase()));
        for other in [
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.simple().to_string(),
            format!("{id} "),
            "--debug-file=/tmp/x".to_owned(),
        ] {
            assert!(!canonical_uuid(&other), "{other}");
        }
    }
}
