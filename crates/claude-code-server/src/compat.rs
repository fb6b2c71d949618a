//! The shapes of the Python SDK's documented web patterns, for people porting them:
//! `POST /api/claude/query` and `POST /api/claude/stream`. Same auth, limits, audit and
//! fleet as `/v1` (a run of the server's default mode and working directory).
//!
//! Their messages are the conversation's `assistant` and `user` (tool result)
//! messages, in the flat web shape; the CLI's `system` and `result` lines are left out.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, body::to_bytes};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::QueryRequest;
use crate::error::{ApiError, ApiJson};
use crate::routes::Caller;
use crate::runs::{CancelOnDrop, is_final_event};

/// A prompt, as the Python SDK's web examples send it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompatRequest {
    /// The prompt.
    pub(crate) prompt: String,
    /// Model round trips; capped by the server's `max_turns`.
    #[serde(default)]
    pub(crate) max_turns: Option<u32>,
    /// Appended to the CLI's system prompt (the CLI's own tool instructions stay).
    #[serde(default)]
    pub(crate) system_prompt: Option<String>,
}

/// One message of a compat answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CompatMessage {
    /// Its text.
    pub(crate) content: String,
    /// `assistant` or `user`.
    pub(crate) role: String,
    /// When it was made (RFC 3339).
    pub(crate) timestamp: String,
    /// The tools it asks to use.
    pub(crate) tools_used: Vec<String>,
}

/// The answer of `POST /api/claude/query`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CompatResponse {
    /// The conversation's messages.
    pub(crate) messages: Vec<CompatMessage>,
    /// Whether the run succeeded.
    pub(crate) success: bool,
    /// What went wrong, when it did not.
    pub(crate) error: Option<String>,
}

/// Whether a web message is one the compat shapes carry.
fn carried(message: &Value) -> bool {
    matches!(message["type"].as_str(), Some("assistant" | "user"))
}

fn compat_message(message: &Value) -> CompatMessage {
    CompatMessage {
        content: message["content"].as_str().unwrap_or_default().to_owned(),
        role: message["role"].as_str().unwrap_or_default().to_owned(),
        timestamp: message["timestamp"].as_str().unwrap_or_default().to_owned(),
        tools_used: message["tools_used"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A failure (any answer that is not a success) in the compat shape, with the status
/// and headers (`Retry-After`, `x-request-id`, `WWW-Authenticate`) of the `/v1` answer.
pub(crate) async fn shape_failure(response: Response) -> Response {
    if response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body: Value = to_bytes(body, 1024 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let messages = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| carried(m))
                .map(compat_message)
                .collect()
        })
        .unwrap_or_default();
    let answer = CompatResponse {
        messages,
        success: false,
        error: Some(
            body["error"]["message"]
                .as_str()
                .unwrap_or("the run failed")
                .to_owned(),
        ),
    };
    let mut out = (parts.status, Json(answer)).into_response();
    for name in ["retry-after", "x-request-id", "www-authenticate"] {
        if let Some(value) = parts.headers.get(name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

fn compat_error(err: ApiError) -> Response {
    err.into_response()
}

/// Submits a compat request as a `/v1` run; its id.
async fn submit(
    state: &AppState,
    caller: &Caller,
    request: CompatRequest,
    endpoint: &str,
) -> Result<String, ApiError> {
    let inner = &state.inner;
    let query: QueryRequest = serde_json::from_value(json!({
        "prompt": request.prompt,
        "max_turns": request.max_turns,
        "append_system_prompt": request.system_prompt,
    }))
    .map_err(|err| ApiError::bad_request("invalid_request", err.to_string()))?;
    let mut run = inner.resolve(&query, caller).await?;
    run.max_line_bytes = Some(inner.config.max_response_bytes.max(4096));
    let admitted = inner.admit(caller).await?;
    inner
        .enqueue(admitted, caller, endpoint, None, &run, false)
        .await
}

#[utoipa::path(post, path = "/api/claude/query", tag = "compat", request_body = CompatRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run's messages (`success: true`)", body = CompatResponse),
        (status = 400, description = "Invalid body (`success: false`, `error`)", body = CompatResponse),
        (status = 401, description = "No or bad token", body = CompatResponse),
        (status = 422, description = "Max turns or budget reached, or interrupted", body = CompatResponse),
        (status = 429, description = "A tenant limit, or the model API rate limited (see Retry-After)", body = CompatResponse),
        (status = 502, description = "The model API or the CLI failed", body = CompatResponse),
        (status = 503, description = "No process slot free (see Retry-After)", body = CompatResponse),
    ))]
pub(crate) async fn query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Result<ApiJson<CompatRequest>, ApiError>,
) -> Response {
    let answer = async {
        let ApiJson(request) = request?;
        let id = submit(&state, &caller, request, "compat_query").await?;
        let guard = CancelOnDrop::new(&state.inner.fleet, &id);
        let answer =
            crate::runs::collect(&state, &id, None, state.inner.config.max_response_bytes).await;
        guard.disarm();
        answer
    }
    .await;
    match answer {
        Ok(answer) => {
            let messages: Vec<Value> = answer.messages.iter().map(|m| json!(m)).collect();
            let failed = answer.result.as_ref().is_none_or(|r| r.is_error);
            let body = CompatResponse {
                messages: messages
                    .iter()
                    .filter(|m| carried(m))
                    .map(compat_message)
                    .collect(),
                success: !failed,
                error: failed.then(|| {
                    answer
                        .result
                        .as_ref()
                        .and_then(|r| r.text.clone())
                        .unwrap_or_else(|| "the run failed".to_owned())
                }),
            };
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(err) => compat_error(err),
    }
}

#[utoipa::path(post, path = "/api/claude/stream", tag = "compat", request_body = CompatRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/event-stream",
         description = "Each message as `data: {content, role, timestamp}`; a failure as `data: {\"error\": \"...\"}`; then `data: [DONE]`. A client that goes away cancels the run."),
        (status = 400, description = "Invalid body", body = CompatResponse),
        (status = 401, description = "No or bad token", body = CompatResponse),
        (status = 429, description = "A tenant limit (see Retry-After)", body = CompatResponse),
        (status = 503, description = "No process slot free (see Retry-After)", body = CompatResponse),
    ))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Result<ApiJson<CompatRequest>, ApiError>,
) -> Response {
    let submitted = async {
        let ApiJson(request) = request?;
        submit(&state, &caller, request, "compat_stream").await
    }
    .await;
    match submitted {
        Ok(id) => events(state, id).into_response(),
        Err(err) => compat_error(err),
    }
}

/// The run's messages as `data:` lines, then `data: [DONE]`.
fn events(state: AppState, run: String) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Reading {
        state: AppState,
        feed: crate::fleet::EventFeed,
        after: i64,
        pending: std::collections::VecDeque<Event>,
        ended: bool,
        done: bool,
        // The client going away (the stream dropped) cancels the run.
        _cancel: CancelOnDrop,
        _reading: crate::Reading,
    }
    let reading = Reading {
        _cancel: CancelOnDrop::new(&state.inner.fleet, &run),
        _reading: state.inner.reading(),
        feed: state.inner.fleet.feed(&run),
        state,
        after: 0,
        pending: Default::default(),
        ended: false,
        done: false,
    };
    let stream = futures::stream::unfold(reading, |mut r| async move {
        loop {
            if let Some(event) = r.pending.pop_front() {
                return Some((Ok(event), r));
            }
            if r.done {
                return None;
            }
            if r.ended {
                r.done = true;
                return Some((Ok(Event::default().data("[DONE]")), r));
            }
            let next = tokio::select! {
                next = r.feed.next(r.after, Duration::from_secs(1)) => next,
                () = r.state.inner.shutdown.cancelled() => {
                    r.ended = true;
                    r.pending.push_back(error_event("the server is shutting down"));
                    continue;
                }
            };
            let events = match next {
                Ok(events) => events,
                Err(err) => {
                    tracing::warn!(%err, "could not read a run's events");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for event in events {
                r.after = event.seq;
                r.state.inner.metrics.delivered(event.at);
                match event.kind.as_str() {
                    "message" if carried(&event.data) => {
                        let m = compat_message(&event.data);
                        let data = json!({
                            "content": m.content,
                            "role": m.role,
                            "timestamp": m.timestamp,
                        });
                        r.pending.push_back(Event::default().data(data.to_string()));
                    }
                    "error" => {
                        let message = event.data["error"]["message"]
                            .as_str()
                            .unwrap_or("the run failed");
                        r.pending.push_back(error_event(message));
                    }
                    _ => {}
                }
                if is_final_event(&event.kind) {
                    r.ended = true;
                    break;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn error_event(message: &str) -> Event {
    Event::default().data(json!({ "error": message }).to_string())
}
