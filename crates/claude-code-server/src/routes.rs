//! The handlers.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{
    ApprovalAnswer, ApprovalCounts, Health, HealthModes, NewSession, QueryRequest, QueryResponse,
    Ready, RunCounts, RunStatus, SessionCounts, SessionHistory, SessionTurn, SessionTurnRecord,
    Stats, StreamEvent,
};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::runs::{self, CancelOnDrop, RunRequest};
use crate::{AppState, StateInner};

const PAGE: &str = include_str!("page.html");

/// Who is calling: the tenant's name for a tenants file's token, the hex SHA-256 of a
/// `--token` token, or `local` without auth. Sessions, runs and approvals belong to it.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) String);

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
        .route("/v1/sessions/{id}/interrupt", post(interrupt_session))
        .route("/v1/runs/{id}", get(run_status))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/stats", get(stats))
        .route("/v1/audit", get(audit_log))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    // The Python SDK's web shapes: their failures (auth's included) in their shape.
    let compat = Router::new()
        .route("/api/claude/query", post(crate::compat::query))
        .route("/api/claude/stream", post(crate::compat::stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .route_layer(middleware::map_response(crate::compat::shape_failure));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .merge(api)
        .merge(compat)
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

#[utoipa::path(get, path = "/openapi.json", tag = "server",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

#[utoipa::path(get, path = "/", tag = "server",
    responses((status = 200, description = "The web page (it asks for a token when the server has them)", content_type = "text/html", body = String)))]
pub(crate) async fn page() -> Response {
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
    responses((status = 200, description = "The server is up: its version, the permission modes it allows and its default, the max turns", body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let config = &state.inner.config;
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        modes: HealthModes {
            allowed: config.allowed_modes.clone(),
            default: config.default_mode,
        },
        max_turns: config.max_turns,
    })
}

#[utoipa::path(get, path = "/ready", tag = "server",
    responses(
        (status = 200, description = "Ready: the database answers, and the replica is not draining", body = Ready),
        (status = 503, description = "Not ready (see Retry-After)", body = ErrorBody),
    ))]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let fleet = &state.inner.fleet;
    if fleet.is_draining() || state.inner.shutdown.is_cancelled() {
        return Err(ApiError::unavailable(
            "draining",
            "this replica is draining",
            5,
        ));
    }
    if !fleet.db().ping().await {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database does not answer",
            2,
        ));
    }
    Ok(Json(Ready {
        status: "ready".to_owned(),
        replica: fleet.replica().to_owned(),
    }))
}

/// Bearer-token check for the API routes; without tokens, only loopback `Host`s.
async fn auth(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let tokens = &state.inner.config.api_tokens;
    let tenants = &state.inner.tenants;
    if tokens.is_empty() && tenants.is_empty() {
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
    // Every hash is compared, in constant time: no early exit tells which matched.
    let mut caller = None;
    if let Some(p) = &presented {
        if tokens
            .iter()
            .fold(false, |found, t| found | same(&digest(t), p))
        {
            caller = Some(hex(p));
        }
        for tenant in tenants {
            if tenant
                .hashes
                .iter()
                .fold(false, |found, h| found | same(h, p))
            {
                caller = Some(tenant.name.clone());
            }
        }
    }
    if let Some(caller) = caller {
        request.extensions_mut().insert(Caller(caller));
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

/// The ids in paths (runs, sessions, approvals) are UUIDs this server made: anything
/// else names nothing, and is answered `404` before the database is asked (which could
/// refuse some strings, such as one with a NUL, as an error of its own).
fn known_id(id: &str, what: &str) -> Result<(), ApiError> {
    if canonical_uuid(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no {what} {id:?}")))
    }
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
    /// The tenant of the tenants file `tenant` names, if it is one.
    pub(crate) fn tenant(&self, tenant: &str) -> Option<&std::sync::Arc<crate::tenants::Resolved>> {
        self.tenants.iter().find(|t| t.name == tenant)
    }

    /// The project roots of `tenant`: its own, or the server's.
    pub(crate) fn roots(&self, tenant: &str) -> &[PathBuf] {
        match self.tenant(tenant) {
            Some(t) => &t.roots,
            None => std::slice::from_ref(&self.project_root),
        }
    }

    /// The project root of `tenant` that holds `cwd` (its first when none does).
    pub(crate) fn root_for(&self, tenant: &str, cwd: &Path) -> PathBuf {
        let roots = self.roots(tenant);
        roots
            .iter()
            .find(|r| cwd.starts_with(r))
            .or(roots.first())
            .cloned()
            .unwrap_or_else(|| self.project_root.clone())
    }

    /// The storage identity of the project root that holds `cwd`.
    pub(crate) fn workspace_for(&self, cwd: &Path) -> &crate::workspace::Workspace {
        self.workspaces
            .iter()
            .filter(|(root, _)| cwd.starts_with(root))
            .max_by_key(|(root, _)| root.as_os_str().len())
            .map_or(&self.workspace, |(_, w)| w)
    }

    /// The limits of `tenant`: its own, or the server-wide ones.
    fn limits(&self, tenant: &str) -> &crate::TenantLimits {
        match self.tenant(tenant) {
            Some(t) => &t.limits,
            None => &self.config.tenant_limits,
        }
    }

    /// The working directory for a request: in one of the caller's project roots,
    /// existing. A relative `cwd` is resolved under the first root; an absolute one
    /// must be in one of them.
    fn resolve_cwd(&self, cwd: Option<&str>, caller: &Caller) -> Result<PathBuf, ApiError> {
        let roots = self.roots(&caller.0);
        let first = roots.first().unwrap_or(&self.project_root);
        let Some(relative) = cwd.filter(|c| !c.is_empty()) else {
            return Ok(first.clone());
        };
        let bad = |why: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_options",
                format!("cwd {relative:?} {why}"),
            )
        };
        let path = Path::new(relative);
        let absolute = path.is_absolute();
        if path.components().any(|c| {
            let allowed = matches!(c, Component::Normal(_) | Component::CurDir)
                || (absolute && c == Component::RootDir);
            !allowed
        }) {
            return Err(bad("must be a path inside the project root"));
        }
        // Canonical: symlinks are followed before the check.
        let full = first
            .join(path)
            .canonicalize()
            .map_err(|_| bad("does not exist under the project root"))?;
        if !roots.iter().any(|root| full.starts_with(root)) || !full.is_dir() {
            return Err(bad("must be a directory inside the project root"));
        }
        Ok(full)
    }

    /// What a request asks, within the server's limits: a [`RunRequest`] any replica
    /// can execute.
    pub(crate) async fn resolve(
        &self,
        request: &QueryRequest,
        caller: &Caller,
    ) -> Result<RunRequest, ApiError> {
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
            match self.fleet.db().conversation(&session).await? {
                Some((owner, total)) if owner == caller.0 => previous_total = Some(total),
                _ => {
                    return Err(ApiError::not_found(format!(
                        "no conversation {session:?} to resume"
                    )));
                }
            }
            resume = Some(session);
        }
        let turns = request
            .max_turns
            .unwrap_or(config.max_turns)
            .clamp(1, config.max_turns);
        Ok(RunRequest {
            prompt: request.prompt.clone(),
            cwd: self.resolve_cwd(request.cwd.as_deref(), caller)?,
            mode,
            max_turns: turns,
            model: request.model.clone(),
            append_system_prompt: request.append_system_prompt.clone(),
            json_schema: request.json_schema.clone(),
            include_partial_messages: request.include_partial_messages,
            approvals: request.approvals,
            resume,
            previous_total,
            max_line_bytes: None,
            request_id: crate::request_id::current().map(|id| id.to_string()),
        })
    }

    /// Whether `caller` sees the server-wide figures: an operator token's caller, or
    /// everyone when the server has no tokens.
    pub(crate) fn is_operator(&self, caller: &Caller) -> bool {
        (self.config.api_tokens.is_empty() && self.tenants.is_empty())
            || self.operators.contains(&caller.0)
            || self.tenant(&caller.0).is_some_and(|t| t.operator)
    }
}

#[utoipa::path(post, path = "/v1/query", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run's messages and result", body = QueryResponse),
        (status = 400, description = "Invalid options or body (`invalid_request`, `invalid_options`)", body = ErrorBody),
        (status = 404, description = "`resume` names no conversation of this caller's", body = ErrorBody),
        (status = 409, description = "The conversation to resume has a turn in progress", body = ErrorBody),
        (status = 403, description = "A permission mode or model the server does not allow, or a tool use nobody could approve (`permission_denied`)", body = ErrorBody),
        (status = 422, description = "Max turns or budget reached, or the run was interrupted or cancelled", body = ErrorBody),
        (status = 429, description = "The model API is rate limited, or the caller is over one of its limits (`rate_limited`, see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 502, description = "The model API or the CLI failed, or (`response_too_large`) the answer exceeded the server's limit", body = ErrorBody),
        (status = 503, description = "No process slot free (`pool_busy`), the database does not answer, or the server is shutting down (see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
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
    let mut run = inner.resolve(&request, &caller).await?;
    // What this endpoint collects is bounded: a single line longer than the whole
    // allowance is refused by the SDK before it is buffered.
    let limit = inner.config.max_response_bytes;
    run.max_line_bytes = Some(limit.max(4096));
    let admitted = inner.admit(&caller).await?;
    let id = inner
        .enqueue(admitted, &caller, "query", None, &run, false)
        .await?;
    // A client that goes away takes its run with it.
    let guard = CancelOnDrop::new(&inner.fleet, &id);
    let answer = runs::collect(&state, &id, None, limit).await;
    guard.disarm();
    Ok(Json(answer?))
}

#[utoipa::path(post, path = "/v1/query/stream", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent,
         description = "Server-sent events: `run` (the run id, to reconnect with), `message` (a web message), `permission_request` (a PermissionRequest, with `approvals: true`), then `done` (a ResultSummary) or `error` (an ErrorDetail, with `status` and `retry_after`). Failures of the run after the stream opened are `error` events, not statuses.",
         headers(("x-run-id" = String, description = "The run id (for GET /v1/runs/{id}/events)"))),
        (status = 400, description = "Invalid options or body (`invalid_request`, `invalid_options`)", body = ErrorBody),
        (status = 403, description = "A permission mode or model the server does not allow", body = ErrorBody),
        (status = 404, description = "`resume` names no conversation of this caller's", body = ErrorBody),
        (status = 429, description = "The caller is over one of its limits (`rate_limited`, see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "No process slot free (`pool_busy`), the database does not answer, or the server is shutting down (see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub(crate) async fn query_stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let run = inner.resolve(&request, &caller).await?;
    let admitted = inner.admit(&caller).await?;
    let id = inner
        .enqueue(admitted, &caller, "stream", None, &run, true)
        .await?;
    Ok(stream_response(state.clone(), &id, 0))
}

/// A run's events as an SSE response from `after` on, opened with a `run` event and an
/// `x-run-id` header (to reconnect with).
fn stream_response(state: AppState, run: &str, after: i64) -> Response {
    let first = (after == 0).then(|| runs::run_event(run));
    let mut response = runs::sse(state, run.to_owned(), after, first).into_response();
    if let Ok(value) = HeaderValue::from_str(run) {
        response.headers_mut().insert("x-run-id", value);
    }
    // A stream's connection ends with it: a client that stopped reading is not kept
    // as an idle keep-alive connection once its run is over.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "query",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The run id (the `run` event's `run_id`, or the `x-run-id` header)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The last event seen: the stream resumes after it"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = StreamEvent, description = "The run's events after `Last-Event-ID` (an event number; anything else counts as 0), then its live tail",
         headers(("x-run-id" = String, description = "The run id"))),
        (status = 404, description = "No such run of this caller", body = ErrorBody),
    ))]
pub(crate) async fn run_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    known_id(&id, "run")?;
    if state
        .inner
        .fleet
        .db()
        .run(&id, Some(&caller.0))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no run {id:?}")));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    Ok(stream_response(state.clone(), &id, after))
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "query",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id")),
    responses(
        (status = 200, description = "The run: `state` (queued, claimed, running, succeeded, failed, interrupted, cancelled), the replica that holds or held it, its session, whether a cancellation was asked for", body = RunStatus),
        (status = 404, description = "No such run of this caller", body = ErrorBody),
    ))]
pub(crate) async fn run_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunStatus>, ApiError> {
    known_id(&id, "run")?;
    let Some(run) = state.inner.fleet.db().run(&id, Some(&caller.0)).await? else {
        return Err(ApiError::not_found(format!("no run {id:?}")));
    };
    Ok(Json(RunStatus {
        run: run.id,
        state: run.state,
        replica: run.replica,
        session: run.session,
        cancel_requested: run.cancel,
        stream: run.stream,
        created_at: chrono::DateTime::from_timestamp_millis(run.created_at),
    }))
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "query",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The run id")),
    responses(
        (status = 202, description = "Cancelling: the run ends `cancelled` within a second, wherever it runs"),
        (status = 404, description = "No such run of this caller, or it is over", body = ErrorBody),
    ))]
pub(crate) async fn cancel_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    known_id(&id, "run in progress")?;
    if state
        .inner
        .fleet
        .cancel(&id, Some(&caller.0), "cancelled by its client")
        .await?
    {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!("no run {id:?} in progress")))
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
    let inner = &state.inner;
    let not_found = || {
        ApiError::not_found(format!(
            "no permission request {id:?} is waiting (answered, expired or unknown)"
        ))
    };
    if !canonical_uuid(&id) {
        return Err(not_found());
    }
    let Some((row, request)) = inner.fleet.db().approval_of(&id, &caller.0).await? else {
        return Err(not_found());
    };
    if row.state != "waiting" || row.expires_at <= crate::fleet::db::now_ms() {
        return Err(not_found());
    }
    if let (true, Some(rewritten)) = (answer.allow, &answer.updated_input) {
        let tool = request["tool_name"].as_str().unwrap_or_default();
        let cwd = request["cwd"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| inner.root_for(&caller.0, &inner.project_root));
        crate::confine::check_rewrite(
            &inner.root_for(&caller.0, &cwd),
            &cwd,
            tool,
            &request["input"],
            rewritten,
        )
        .map_err(|why| {
            ApiError::bad_request(
                "invalid_request",
                format!("{why} (the permission request still waits for an answer)"),
            )
        })?;
    }
    let stored = json!({"message": answer.message, "updated_input": answer.updated_input});
    if inner
        .fleet
        .answer_approval(&id, &caller.0, answer.allow, &stored)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

impl StateInner {
    /// The session, if it exists, is not ended, and belongs to `caller`.
    async fn own_session(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<crate::fleet::db::SessionRow, ApiError> {
        known_id(id, "session with id")?;
        match self.fleet.db().session(id, Some(&caller.0)).await? {
            Some(session) if session.state != "ended" => Ok(session),
            _ => Err(ApiError::not_found(format!("no session with id {id:?}"))),
        }
    }

    /// Queues `run`, which [`StateInner::admit`] let `caller` start, with its audit
    /// row (one transaction: no run goes unrecorded), and wakes the replicas: the
    /// run's id. A session's turn is refused (409 `conversation_busy`) while another
    /// turn of the session is queued or running.
    ///
    /// # Errors
    ///
    /// 409 as above, database errors.
    pub(crate) async fn enqueue(
        &self,
        admitted: Admitted,
        caller: &Caller,
        endpoint: &str,
        session: Option<&str>,
        run: &RunRequest,
        stream: bool,
    ) -> Result<String, ApiError> {
        let id = uuid::Uuid::new_v4().to_string();
        let queued = self
            .fleet
            .submit(&crate::fleet::db::NewRun {
                id: &id,
                tenant: &caller.0,
                session,
                request: run,
                stream,
                endpoint,
                audit_prompt: self.config.audit_prompts,
            })
            .await?;
        drop(admitted);
        if !queued {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conversation_busy",
                format!(
                    "session {:?} already has a turn in progress",
                    session.unwrap_or_default()
                ),
            ));
        }
        Ok(id)
    }

    /// Whether `caller` may start a run now: this replica is not draining, the fleet
    /// has a free slot or room in its queue (503 otherwise), and the caller is within its concurrent, queued and
    /// per-minute limits (429 with `Retry-After` otherwise).
    ///
    /// Holding the returned [`Admitted`] until the run's row is written keeps
    /// concurrent requests from all passing the same check: each counts the ones
    /// admitted before it and not yet written (200 requests at once used to all be
    /// admitted, and most then timed out in the queue). Another replica's requests in
    /// that window are not counted: the fleet may take one more run per replica.
    pub(crate) async fn admit(&self, caller: &Caller) -> Result<Admitted, ApiError> {
        let admitted = Admitted::new(&self.admitting);
        if self.fleet.is_draining() {
            // Its runs finish here; new ones go to another replica (its /ready says so).
            return Err(ApiError::unavailable(
                "draining",
                "this replica is draining: send the request to another",
                1,
            ));
        }
        // The fleet's load and the caller's, read side by side.
        let (room, (active, queued, recent)) = tokio::try_join!(
            self.fleet.has_room(admitted.ahead),
            self.fleet
                .db()
                .tenant_load(&caller.0, crate::fleet::db::now_ms() - 60_000),
        )?;
        if !room {
            return Err(ApiError::unavailable(
                "pool_busy",
                "every process slot is taken and the queue is full; try again shortly",
                1,
            ));
        }
        let limits = self.limits(&caller.0);
        let over = |what: &str, n: i64, max: Option<u32>| {
            max.filter(|max| n >= i64::from(*max)).map(|max| {
                ApiError::too_many(
                    what,
                    format!("you have {n} {what} (your limit is {max}); try again shortly"),
                    if what == "runs in the last minute" {
                        60
                    } else {
                        2
                    },
                )
            })
        };
        if let Some(err) = over("runs in the last minute", recent, limits.runs_per_minute)
            .or_else(|| over("queued runs", queued, limits.max_queued))
        {
            return Err(err);
        }
        if let Some(max) = limits.max_concurrent
            && active >= i64::from(max)
            && limits.max_queued.is_some_and(|q| queued >= i64::from(q))
        {
            return Err(ApiError::too_many(
                "runs",
                format!(
                    "you have {active} runs in progress and {queued} queued (your limits are {max} and {})",
                    limits.max_queued.unwrap_or(0)
                ),
                2,
            ));
        }
        Ok(admitted)
    }
}

/// A request admitted whose run's row is not written yet: counted by the admissions
/// that come after it until it is dropped (drop it once the row is written).
pub(crate) struct Admitted {
    count: Arc<AtomicUsize>,
    /// The admissions under way when this one began.
    ahead: usize,
}

impl Admitted {
    fn new(count: &Arc<AtomicUsize>) -> Admitted {
        let ahead = count.fetch_add(1, Ordering::SeqCst);
        Admitted {
            count: Arc::clone(count),
            ahead,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The session's id (`session`) and its first turn", body = QueryResponse),
        (status = 400, description = "Invalid body, or a `cwd` outside the project root", body = ErrorBody),
        (status = 403, description = "A tool use nobody could approve (`permission_denied`)", body = ErrorBody),
        (status = 422, description = "Max turns or budget reached, or the run was interrupted or cancelled", body = ErrorBody),
        (status = 429, description = "The model API is rate limited, or the caller is over one of its limits (`rate_limited`, see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 502, description = "The model API or the CLI failed", body = ErrorBody),
        (status = 503, description = "No process slot free (`pool_busy`), the caller holds its maximum of sessions (`too_many_sessions`), the database does not answer, or the server is shutting down (see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 504, description = "The run timed out", body = ErrorBody),
    ))]
pub(crate) async fn start_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<NewSession>,
) -> Result<(StatusCode, Json<QueryResponse>), ApiError> {
    let inner = &state.inner;
    let cwd = inner.resolve_cwd(request.cwd.as_deref(), &caller)?;
    let open = inner.fleet.db().open_sessions(Some(&caller.0)).await?;
    if open >= i64::try_from(inner.config.max_sessions).unwrap_or(i64::MAX) {
        return Err(ApiError::unavailable(
            "too_many_sessions",
            format!(
                "you hold your maximum of {} sessions (starts under way included); end one first",
                inner.config.max_sessions
            ),
            60,
        ));
    }
    let admitted = inner.admit(&caller).await?;
    let now = crate::fleet::db::now_ms();
    let id = uuid::Uuid::new_v4().to_string();
    let options = json!({
        "mode": inner.config.default_mode,
        "max_turns": inner.config.max_turns,
    });
    inner
        .fleet
        .db()
        .insert_session(&crate::fleet::db::SessionRow {
            id: id.clone(),
            tenant: caller.0.clone(),
            cwd: cwd.display().to_string(),
            options,
            state: "starting".into(),
            cli_session: None,
            home: None,
            workspace: Some(inner.workspace_for(&cwd).id().to_owned()),
            turns: 0,
            total_cost: 0.0,
            created_at: now,
            updated_at: now,
        })
        .await?;
    // The client never learns the id of a session whose first turn fails or that it
    // abandons: nothing of it may stay.
    let forget = ForgetSession::new(&state, &id);
    let run = session_run(inner, &request.prompt, &cwd);
    let run_id = inner
        .enqueue(admitted, &caller, "session", Some(&id), &run, false)
        .await?;
    let cancel = CancelOnDrop::new(&inner.fleet, &run_id);
    let answer = runs::collect(&state, &run_id, Some(id.clone()), usize::MAX).await;
    cancel.disarm();
    forget.keep();
    match answer {
        Ok(answer) => Ok((StatusCode::CREATED, Json(answer))),
        Err(err) => {
            // The run is over (its final event was read): the session goes before the
            // client hears of the failure.
            inner.fleet.db().delete_session(&id).await?;
            Err(err)
        }
    }
}

/// The request of a session's turn (its conversation is resumed when it starts).
fn session_run(inner: &StateInner, prompt: &str, cwd: &Path) -> RunRequest {
    RunRequest {
        prompt: prompt.to_owned(),
        cwd: cwd.to_owned(),
        mode: inner.config.default_mode,
        max_turns: inner.config.max_turns,
        model: None,
        append_system_prompt: None,
        json_schema: None,
        include_partial_messages: false,
        approvals: false,
        resume: None,
        previous_total: None,
        max_line_bytes: None,
        request_id: crate::request_id::current().map(|id| id.to_string()),
    }
}

/// Deletes a session whose first turn did not succeed, unless kept.
struct ForgetSession {
    state: AppState,
    id: String,
    keep: bool,
}

impl ForgetSession {
    fn new(state: &AppState, id: &str) -> Self {
        ForgetSession {
            state: state.clone(),
            id: id.to_owned(),
            keep: false,
        }
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for ForgetSession {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let state = self.state.clone();
        let id = std::mem::take(&mut self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                // After its run has ended (a cancelled start ends within a second).
                for _ in 0..20 {
                    match state.inner.fleet.db().session_busy(&id).await {
                        Ok(false) | Err(_) => break,
                        Ok(true) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
                    }
                }
                let _ = state.inner.fleet.db().delete_session(&id).await;
            });
        }
    }
}

#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions", request_body = SessionTurn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The turn", body = QueryResponse),
        (status = 404, description = "Unknown session (or another caller's)", body = ErrorBody),
        (status = 409, description = "The session has a turn in progress (`conversation_busy`), or it was started on a project root whose files this replica does not have (`workspace_moved`)", body = ErrorBody),
        (status = 403, description = "A tool use nobody could approve (`permission_denied`)", body = ErrorBody),
        (status = 422, description = "Max turns or budget reached, or the run was interrupted or cancelled", body = ErrorBody),
        (status = 429, description = "The model API is rate limited, or the caller is over one of its limits (`rate_limited`, see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 502, description = "The model API or the CLI failed, or (`response_too_large`) the answer exceeded the server's limit", body = ErrorBody),
        (status = 503, description = "No process slot free (`pool_busy`), the database does not answer, or the server is shutting down (see Retry-After)", body = ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 504, description = "The run timed out", body = ErrorBody),
    ))]
pub(crate) async fn continue_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    ApiJson(request): ApiJson<SessionTurn>,
) -> Result<Json<QueryResponse>, ApiError> {
    let inner = &state.inner;
    // The session and the admission's load, read side by side.
    let (session, admitted) =
        tokio::try_join!(inner.own_session(&id, &caller), inner.admit(&caller))?;
    let run = session_run(inner, &request.prompt, Path::new(&session.cwd));
    let run_id = inner
        .enqueue(admitted, &caller, "session", Some(&id), &run, false)
        .await?;
    let cancel = CancelOnDrop::new(&inner.fleet, &run_id);
    let answer = runs::collect(&state, &run_id, Some(id.clone()), usize::MAX).await;
    cancel.disarm();
    Ok(Json(answer?))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/interrupt", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 202, description = "The session's turn in progress is being cancelled"),
        (status = 404, description = "Unknown session (or another caller's), or no turn in progress", body = ErrorBody),
    ))]
pub(crate) async fn interrupt_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let inner = &state.inner;
    inner.own_session(&id, &caller).await?;
    for (run, state_name, _) in inner.fleet.db().session_runs(&id).await? {
        if !crate::fleet::db::state::is_final(&state_name)
            && inner
                .fleet
                .cancel(&run, Some(&caller.0), "interrupted by its client")
                .await?
        {
            return Ok(StatusCode::ACCEPTED);
        }
    }
    Err(ApiError::not_found(format!(
        "session {id:?} has no turn in progress"
    )))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session's turns", body = SessionHistory),
        (status = 404, description = "Unknown session (or another caller's)", body = ErrorBody),
    ))]
pub(crate) async fn session_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<SessionHistory>, ApiError> {
    let inner = &state.inner;
    let session = inner.own_session(&id, &caller).await?;
    let mut total = 0.0;
    let mut turns = Vec::new();
    for (run, run_state, outcome) in inner.fleet.db().session_runs(&id).await? {
        let Some(row) = inner.fleet.db().run(&run, Some(&caller.0)).await? else {
            continue;
        };
        let cost = outcome.as_ref().and_then(|o| o["cost_usd"].as_f64());
        total += cost.unwrap_or(0.0);
        turns.push(SessionTurnRecord {
            prompt: row.request["prompt"].as_str().map(str::to_owned),
            response: outcome
                .as_ref()
                .and_then(|o| o["text"].as_str().map(str::to_owned)),
            is_error: run_state != crate::fleet::db::state::SUCCEEDED,
            state: run_state,
            run,
            cost_usd: cost,
            session_cost_usd: total,
            at: chrono::DateTime::from_timestamp_millis(row.created_at),
        });
    }
    Ok(Json(SessionHistory {
        session: session.id,
        home_replica: session.home,
        created_at: chrono::DateTime::from_timestamp_millis(session.created_at),
        updated_at: chrono::DateTime::from_timestamp_millis(session.updated_at),
        turns,
    }))
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
    let inner = &state.inner;
    let session = inner.own_session(&id, &caller).await?;
    if inner.fleet.db().session_busy(&id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conversation_busy",
            format!("session {id:?} has a turn in progress"),
        ));
    }
    inner.fleet.db().end_session(&id, &caller.0).await?;
    if let Some(cli) = &session.cli_session {
        inner.pool.end_conversation(cli);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/stats", tag = "server",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's own figures (runs, sessions, session turns, approvals waiting); for operator tokens also the pool's and the server-wide figures", body = Stats)))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Stats>, ApiError> {
    let inner = &state.inner;
    let db = inner.fleet.db();
    let counts = |rows: Vec<(String, i64)>| {
        let get = |names: &[&str]| -> i64 {
            rows.iter()
                .filter(|(s, _)| names.contains(&s.as_str()))
                .map(|(_, n)| n)
                .sum()
        };
        RunCounts {
            active: get(&["claimed", "running"]),
            queued: get(&["queued"]),
            completed: get(&["succeeded"]),
            failed: get(&["failed", "interrupted", "cancelled"]),
        }
    };
    let mut body = Stats {
        runs: counts(db.run_counts(Some(&caller.0)).await?),
        sessions: SessionCounts {
            open: db.open_sessions(Some(&caller.0)).await?,
            turns: db.session_turns(Some(&caller.0)).await?,
            max: u64::try_from(inner.config.max_sessions).unwrap_or(u64::MAX),
            open_all: None,
        },
        approvals: ApprovalCounts {
            waiting: db.approvals_waiting(Some(&caller.0)).await?,
            waiting_all: None,
        },
        runs_all: None,
        pool: None,
        replica: None,
    };
    if inner.is_operator(&caller) {
        let pool = inner.pool.stats();
        body.pool = Some(json!({
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
        }));
        body.replica = Some(json!({
            "id": inner.fleet.replica(),
            "running": inner.fleet.running(),
            "draining": inner.fleet.is_draining(),
        }));
        body.runs_all = Some(counts(db.run_counts(None).await?));
        body.sessions.open_all = Some(db.open_sessions(None).await?);
        body.approvals.waiting_all = Some(db.approvals_waiting(None).await?);
    }
    Ok(Json(body))
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this tenant's runs (operators; everyone else sees only their own).
    tenant: Option<String>,
    /// Only runs submitted before this time (Unix ms): page with the last row's `at_ms`.
    before: Option<i64>,
    /// At most this many rows (default 100, at most 1000).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "server",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "`{\"entries\": [...]}`, newest first: who (`tenant`), what (`run`, `session`, `endpoint`, `prompt_sha256`, `prompt_chars`, `prompt` only with --audit-prompts), where (`cwd`), `mode`, `model`, `outcome`, `cost_usd`, `tools`, `request_id`; an operator's token sees every tenant's, any other token only its own"),
        (status = 400, description = "A filter that is not of its type (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
    ))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(query) = query
        .map_err(|rejection| ApiError::bad_request("invalid_request", rejection.body_text()))?;
    let inner = &state.inner;
    let tenant = if inner.is_operator(&caller) {
        query.tenant
    } else {
        Some(caller.0.clone())
    };
    let limit = i64::from(query.limit.unwrap_or(100).clamp(1, 1000));
    let entries =
        crate::audit::list(inner.fleet.db(), tenant.as_deref(), query.before, limit).await?;
    Ok(Json(json!({ "entries": entries })))
}

#[utoipa::path(get, path = "/metrics", tag = "server",
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "application/openmetrics-text", description = "The OpenMetrics text format, which Prometheus reads: runs by state, queue depth, leases held, takeovers, pool processes, approvals waiting, event lag, cost by tenant (operator tokens only)"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "Not an operator's token", body = ErrorBody),
    ))]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    if !inner.is_operator(&caller) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    }
    let text = crate::metrics::render(inner).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
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
