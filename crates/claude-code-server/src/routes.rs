//! The handlers.

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use claude_code_sdk::{ClaudeCodeOptions, Message, PooledQuery};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{
    ApprovalAnswer, NewSession, PermissionRequest, QueryRequest, QueryResponse, ResultSummary,
    SessionTurn,
};
use crate::error::ApiError;
use crate::{AppState, StateInner};

const PAGE: &str = include_str!("page.html");

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
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[utoipa::path(get, path = "/health", tag = "server",
    responses((status = 200, description = "The server is up")))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// Bearer-token check for the API routes.
async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = &state.inner.config.api_tokens;
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = bearer(request.headers());
    let known = presented.is_some_and(|p| tokens.iter().any(|t| same(t.as_bytes(), p.as_bytes())));
    if known {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid `Authorization: Bearer <token>` header is required",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    /// The options of a request, within the server's limits.
    fn options_for(&self, request: &QueryRequest) -> Result<ClaudeCodeOptions, ApiError> {
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
        if let Some(session) = &request.resume {
            builder = builder.resume(session);
        }
        Ok(builder.build()?)
    }
}

#[utoipa::path(post, path = "/v1/query", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run's messages and result", body = QueryResponse),
        (status = 400, description = "Invalid options"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "A permission mode the server does not allow, or a tool use nobody could approve"),
        (status = 422, description = "Max turns or budget reached"),
        (status = 502, description = "The model API or the CLI failed"),
        (status = 503, description = "No process slot free (see Retry-After)"),
        (status = 504, description = "The run timed out"),
    ))]
pub(crate) async fn query_json(
    State(state): State<AppState>,
    Json(request): Json<QueryRequest>,
) -> Result<Json<QueryResponse>, ApiError> {
    if request.approvals {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_options",
            "approvals need a stream to ask on: use POST /v1/query/stream",
        ));
    }
    let options = state.inner.options_for(&request)?;
    let run = state.inner.pool.query(request.prompt, options).await?;
    match run.collect_messages().await {
        (messages, None) => Ok(Json(QueryResponse::new(None, &messages))),
        (messages, Some(err)) => Err(ApiError::from_run(&err, &messages)),
    }
}

#[utoipa::path(post, path = "/v1/query/stream", tag = "query", request_body = QueryRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "Server-sent events: `message` (a web message), `permission_request` (a PermissionRequest, with `approvals: true`), then `done` (a ResultSummary) or `error` (`{\"error\": {...}}`)"),
        (status = 401, description = "No or bad token"),
        (status = 503, description = "No process slot free (see Retry-After)"),
    ))]
pub(crate) async fn query_stream(
    State(state): State<AppState>,
    Json(request): Json<QueryRequest>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut options = state.inner.options_for(&request)?;
    let (ask_tx, ask_rx) = mpsc::channel::<PermissionRequest>(8);
    if request.approvals {
        let approvals = state.inner.approvals.clone();
        let timeout = state.inner.config.approval_timeout;
        options = options
            .to_builder()
            .can_use_tool(move |tool, input, context| {
                let approvals = approvals.clone();
                let ask_tx = ask_tx.clone();
                async move { approvals.ask(&ask_tx, tool, input, context, timeout).await }
            })
            .build()?;
    }
    let run = state.inner.pool.query(request.prompt, options).await?;
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(drive(run, ask_rx, tx));
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

/// Runs a query into a client's event stream; stops (killing the CLI) as soon as the
/// client goes away.
async fn drive(
    mut run: PooledQuery,
    mut asks: mpsc::Receiver<PermissionRequest>,
    tx: mpsc::Sender<Event>,
) {
    let mut summary: Option<ResultSummary> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return,
            Some(ask) = asks.recv() => event("permission_request", &ask),
            item = run.next() => match item {
                Some(Ok(message)) => {
                    if message.is_result() {
                        summary = ResultSummary::of(std::slice::from_ref(&message));
                    }
                    event("message", &message.to_web())
                }
                Some(Err(err)) => {
                    let _ = tx.send(event("error", &json!({"error": ApiError::error_json(&err)}))).await;
                    return;
                }
                None => {
                    let _ = tx.send(event("done", &summary)).await;
                    return;
                }
            },
        };
        if tx.send(next).await.is_err() {
            return;
        }
    }
}

#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "query", request_body = ApprovalAnswer,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The `approval_id` of a permission_request")),
    responses(
        (status = 204, description = "Delivered"),
        (status = 404, description = "No such request waits (answered, expired or unknown)"),
    ))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Json(answer): Json<ApprovalAnswer>,
) -> Result<StatusCode, ApiError> {
    if state.inner.approvals.answer(&id, answer) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no permission request {id:?} is waiting (answered, expired or unknown)"),
        ))
    }
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = NewSession,
    security(("bearer" = [])),
    responses((status = 201, description = "The session's id (`session`) and its first turn", body = QueryResponse)))]
pub(crate) async fn start_session(
    State(state): State<AppState>,
    Json(request): Json<NewSession>,
) -> Result<(StatusCode, Json<QueryResponse>), ApiError> {
    let cwd = state.inner.resolve_cwd(request.cwd.as_deref())?;
    let id = uuid::Uuid::new_v4().to_string();
    let messages = state
        .inner
        .sessions
        .start_conversation(&id, &request.prompt, cwd)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(QueryResponse::new(Some(id), &messages)),
    ))
}

#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions", request_body = SessionTurn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The turn", body = QueryResponse),
        (status = 404, description = "Unknown session"),
        (status = 409, description = "The session has a turn in progress"),
    ))]
pub(crate) async fn continue_session(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Json(request): Json<SessionTurn>,
) -> Result<Json<QueryResponse>, ApiError> {
    let messages: Vec<Message> = state
        .inner
        .sessions
        .continue_conversation(&id, &request.prompt)
        .await?;
    Ok(Json(QueryResponse::new(Some(id), &messages)))
}

#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "The session's turns"), (status = 404, description = "Unknown session")))]
pub(crate) async fn session_history(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.inner.sessions.record(&id).await?;
    Ok(Json(json!({
        "session": record.id,
        "cli_session_id": record.session_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "turns": record.turns,
    })))
}

#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses((status = 204, description = "Ended"), (status = 404, description = "Unknown session")))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    state.inner.sessions.end(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/stats", tag = "server",
    security(("bearer" = [])),
    responses((status = 200, description = "Pool, session and approval figures")))]
pub(crate) async fn stats(State(state): State<AppState>) -> Json<Value> {
    let pool = state.inner.pool.stats();
    Json(json!({
        "pool": {
            "active": pool.active,
            "queued": pool.queued,
            "warm": pool.warm,
            "completed": pool.completed,
            "failed": pool.failed,
            "rejected": pool.rejected,
            "warm_hits": pool.warm_hits,
            "started": pool.started,
            "mean_wait_ms": pool.mean_wait.as_secs_f64() * 1000.0,
        },
        "sessions": {"hot": state.inner.sessions.hot_count()},
        "approvals": {"waiting": state.inner.approvals.waiting()},
    }))
}
