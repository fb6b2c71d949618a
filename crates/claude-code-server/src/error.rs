//! Errors as HTTP answers, all in one shape:
//! `{"error": {"kind", "message", "transient", ...}, "messages": [...]}`.
//!
//! # Redaction
//!
//! One rule for everything that leaves the server (JSON bodies, `messages[]`, SSE
//! events): text the CLI or the server writes *about a failure* never goes out as it
//! is. Error messages are the server's own descriptions of the failure's kind (with
//! the API status, and a request id for 5xx); the CLI's stderr, the model API's
//! address, file paths and the SDK's error text go to the server's log only. The
//! CLI's synthetic API-error assistant messages and failed results are described the
//! same way ([`web_message`]). The conversation itself (the model's text, tool uses
//! and tool results) is passed on unchanged.
//!
//! `transient` is `true` exactly when the answer carries `Retry-After` (SSE `error`
//! events, which have no headers, carry `retry_after_secs` instead).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use claude_code_sdk::{Error, ErrorKind, Message, WebMessage};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The body of every error answer (for the OpenAPI document).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
    /// The messages the run produced before it failed, if it ran (web messages).
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
}

/// The `error` of an [`ErrorBody`] (and the data of a stream's `error` event).
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({"kind": "pool_busy", "message": "no process slot is free", "transient": true, "retry_after_secs": 1}))]
pub struct ErrorDetail {
    /// The kind: the SDK's error kind for a run's failure (`api`, `timeout`,
    /// `max_turns`, `permission_denied`, ...), or the server's own (`invalid_request`,
    /// `invalid_options`, `unauthorized`, `forbidden_host`, `not_found`,
    /// `pool_busy`, `rate_limited`, `too_many_sessions`, `database_unavailable`, ...).
    pub kind: String,
    /// What went wrong, redacted (see the crate docs).
    pub message: String,
    /// Whether the same request may succeed later: `true` exactly when the answer
    /// carries `Retry-After`.
    pub transient: bool,
    /// Seconds to wait before a retry (transient failures of a run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// The limit that was reached (`429 rate_limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The model API's status, when it answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_status: Option<u16>,
    /// The CLI conversation of the failed run, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Tool uses that were denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub permission_denials: Option<Vec<Value>>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error of this server's own (bad input, auth), not of a run.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({
                "error": {"kind": kind, "message": message.into(), "transient": false},
                "messages": [],
            }),
            retry_after: None,
        }
    }

    /// `503` with `Retry-After`.
    pub fn unavailable(kind: &str, message: impl Into<String>, retry_after: u64) -> ApiError {
        let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, kind, message);
        err.body["error"]["transient"] = json!(true);
        err.retry_after = Some(retry_after);
        err
    }

    /// `429` with `Retry-After`: the caller is over one of its limits.
    pub(crate) fn too_many(what: &str, message: impl Into<String>, retry_after: u64) -> ApiError {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        err.body["error"]["transient"] = json!(true);
        err.body["error"]["limit"] = json!(what);
        err.retry_after = Some(retry_after);
        err
    }

    /// `400`: the request is not one the server can run.
    pub(crate) fn bad_request(kind: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, kind, message)
    }

    /// `404`.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `502 response_too_large`: `/v1/query` collected more than the server keeps.
    /// Neither the client's mistake nor transient: the same query would do it again.
    pub(crate) fn response_too_large(limit: usize) -> ApiError {
        let id = request_id();
        tracing::warn!(request_id = %id, limit, "a /v1/query answer exceeded max_response_bytes");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "response_too_large",
            format!(
                "the answer exceeded this server's limit of {limit} bytes for POST /v1/query \
                 and the run was stopped; use POST /v1/query/stream, which has no such limit \
                 (request id {id})"
            ),
        )
    }

    /// The status an SDK error maps to.
    pub fn status_for(err: &Error) -> StatusCode {
        match err.kind() {
            ErrorKind::InvalidOptions => StatusCode::BAD_REQUEST,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::ConversationBusy => StatusCode::CONFLICT,
            ErrorKind::MaxTurns | ErrorKind::Budget | ErrorKind::Interrupted => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::Api if err.api_status() == Some(429) => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::PoolBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether an SDK error is worth retrying, and after how many seconds: `Some`
    /// exactly for transient errors (and always for a busy pool or a rate limit).
    pub(crate) fn retry_after_for(err: &Error) -> Option<u64> {
        let status = ApiError::status_for(err);
        let transient = err.is_transient()
            || matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            );
        transient.then(|| err.retry_after().map_or(1, |d| d.as_secs().max(1)))
    }

    /// The error's JSON for a client, redacted (see the module docs). Server-side
    /// failures (5xx) say what kind of failure it was and carry a request id; their
    /// details go to the server's log.
    pub fn error_json(err: &Error) -> Value {
        let status = ApiError::status_for(err);
        let message = if status.is_server_error() && err.kind() != ErrorKind::PoolBusy {
            let id = request_id();
            tracing::error!(request_id = %id, error = ?err, "a run failed");
            let what = match err.kind() {
                ErrorKind::Api => match err.api_status() {
                    Some(code) => format!("the model API answered with an error (status {code})"),
                    None => "the model API answered with an error".to_owned(),
                },
                ErrorKind::Timeout => "the run took longer than the server allows".to_owned(),
                ErrorKind::Connection => {
                    "the Claude Code CLI failed or could not reach the model API".to_owned()
                }
                _ => "the Claude Code CLI failed".to_owned(),
            };
            format!("{what} (request id {id}; details are in the server log)")
        } else {
            tracing::info!(error = ?err, "a run ended in an error");
            client_message(err)
        };
        let retry_after = ApiError::retry_after_for(err);
        let mut error = json!({
            "kind": err.kind().as_str(),
            "message": message,
            "transient": retry_after.is_some(),
        });
        if let Some(secs) = retry_after {
            error["retry_after_secs"] = json!(secs);
        }
        if let Some(status) = err.api_status() {
            error["api_status"] = json!(status);
        }
        if let Some(session) = err.session_id() {
            error["session_id"] = json!(session);
        }
        if !err.permission_denials().is_empty() {
            error["permission_denials"] = json!(err.permission_denials());
        }
        error
    }

    /// An SDK error, with the messages the run produced before it.
    pub fn from_run(err: &Error, messages: &[Message]) -> ApiError {
        let web: Vec<WebMessage> = messages.iter().map(web_message).collect();
        let status = ApiError::status_for(err);
        let retry_after = ApiError::retry_after_for(err);
        ApiError {
            status,
            body: json!({"error": ApiError::error_json(err), "messages": web}),
            retry_after,
        }
    }
}

impl ApiError {
    /// The data of a run's `error` event for an SDK error: the error's JSON, and the
    /// status and `Retry-After` a JSON answer about it carries.
    pub(crate) fn event_data(err: &Error) -> Value {
        let mut data = json!({
            "error": ApiError::error_json(err),
            "status": ApiError::status_for(err).as_u16(),
        });
        if let Some(secs) = ApiError::retry_after_for(err) {
            data["retry_after"] = json!(secs);
        }
        data
    }

    /// The answer to a run that ended with the `error` event `data` (see
    /// [`ApiError::event_data`]), after `messages`.
    pub(crate) fn from_event(data: &Value, messages: Vec<Value>) -> ApiError {
        let status = data["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(match data["error"]["kind"].as_str() {
                Some("cancelled" | "interrupted") => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_GATEWAY,
            });
        ApiError {
            status,
            body: json!({"error": data["error"].clone(), "messages": messages}),
            retry_after: data["retry_after"].as_u64(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::from_run(&err, &[])
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_request",
        };
        // 400 for every body the server cannot use, as documented.
        let status = if kind == "invalid_request" {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, kind, rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `Json<T>` whose rejections answer in the API's error shape. A string with a NUL
/// character anywhere in the body (keys included) is refused: no such string can be a
/// model name, a prompt the CLI accepts, or a path.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<Value>::from_request(request, state).await?;
        if let Some(at) = find_nul(&value, "") {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("strings must not contain NUL characters (found at `{at}`)"),
            ));
        }
        serde_json::from_value(value).map(ApiJson).map_err(|err| {
            ApiError::bad_request(
                "invalid_request",
                format!("the JSON body does not fit this endpoint: {err}"),
            )
        })
    }
}

/// Where the first string (or key) with a NUL character is, as a JSON path.
fn find_nul(value: &Value, at: &str) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() {
            "$".to_owned()
        } else {
            at.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_nul(v, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(format!("{at}.<key>"));
            }
            find_nul(v, &format!("{at}.{k}"))
        }),
        _ => None,
    }
}

/// The id of the request being answered (the `x-request-id` header and the log's
/// `request_id`), or a new one outside a request.
fn request_id() -> String {
    crate::request_id::current().map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |id| id.to_string(),
    )
}

/// The message of a 4xx answer to an SDK error: the server's description of the
/// kind, never the SDK's text (which can quote the CLI's stderr).
fn client_message(err: &Error) -> String {
    match err.kind() {
        // Options the server built from the request: the SDK's text is about them.
        ErrorKind::InvalidOptions if err.stderr_tail().is_none() => err.to_string(),
        ErrorKind::InvalidOptions => "the CLI refused the run's options".to_owned(),
        ErrorKind::NotFound => "no conversation with that id to continue".to_owned(),
        ErrorKind::ConversationBusy => "the session has a turn in progress".to_owned(),
        ErrorKind::PermissionDenied => {
            "a tool use was denied and nobody could approve it (see permission_denials)".to_owned()
        }
        ErrorKind::MaxTurns => "the run reached its maximum number of turns".to_owned(),
        ErrorKind::Budget => "the run reached its budget".to_owned(),
        ErrorKind::Interrupted => "the run was interrupted".to_owned(),
        ErrorKind::Api => match err.api_status() {
            Some(429) => "the model API is rate limited".to_owned(),
            Some(code) => format!("the model API answered with an error (status {code})"),
            None => "the model API answered with an error".to_owned(),
        },
        ErrorKind::PoolBusy => {
            "no process slot is free (the queue is full or the wait timed out)".to_owned()
        }
        kind => format!("the run failed ({kind})"),
    }
}

/// A message in the web shape, redacted: the CLI's synthetic API-error messages and
/// failed results carry the server's description (kind and status), not the CLI's
/// text, which names the model API's address. Everything else is unchanged.
pub(crate) fn web_message(message: &Message) -> WebMessage {
    let mut web = message.to_web();
    if let Some(text) = failure_text(message) {
        web.content.clone_from(&text);
        web.error = Some(text);
    }
    web
}

/// The server's description of a failure message, or `None` for other messages.
pub(crate) fn failure_text(message: &Message) -> Option<String> {
    match message {
        Message::Assistant(m) if m.error.is_some() => {
            let status = api_status_in(&m.text());
            let tag = m.error.as_deref().unwrap_or("error");
            Some(match status {
                Some(code) => format!(
                    "API error {code} ({tag}): the model API answered with an error; details are in the server log"
                ),
                None => format!(
                    "API error ({tag}): the model API answered with an error; details are in the server log"
                ),
            })
        }
        Message::Result(r) if r.is_error => Some(match (r.api_error_status, r.subtype.as_str()) {
            (Some(code), _) => {
                format!("the run failed: the model API answered with an error (status {code})")
            }
            (None, "error_max_turns") => "the run reached its maximum number of turns".to_owned(),
            (None, "error_max_budget_usd") => "the run reached its budget".to_owned(),
            (None, subtype) => format!("the run failed ({subtype})"),
        }),
        _ => None,
    }
}

/// The status in the CLI's `API Error: 529 ...` text.
fn api_status_in(text: &str) -> Option<u16> {
    let rest = text.split("API Error: ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|code| (100..600).contains(code))
}

impl From<crate::fleet::db::DbError> for ApiError {
    /// The database failed: `503` with `Retry-After` (the details go to the log); `507`
    /// with `Retry-After` when it failed because its storage is full.
    fn from(err: crate::fleet::db::DbError) -> Self {
        let id = request_id();
        tracing::error!(request_id = %id, error = %err, "the database failed");
        if err.is_storage_full() {
            return ApiError::storage_full(format!(
                "the server's database has no room to write this request; try again later \
                 (request id {id})"
            ));
        }
        ApiError::unavailable(
            "database_unavailable",
            format!("the server's database did not answer; try again (request id {id})"),
            2,
        )
    }
}

impl ApiError {
    /// `507` with `Retry-After`: the database has no room to write.
    fn storage_full(message: String) -> ApiError {
        let mut answer = ApiError::unavailable("insufficient_storage", message, 30);
        answer.status = StatusCode::INSUFFICIENT_STORAGE;
        answer
    }

    /// A run that stopped because its events could not be written
    /// ([`crate::fleet::Stop::WriteFailed`]); the details are in the log.
    pub(crate) fn write_failed(storage_full: bool) -> ApiError {
        if storage_full {
            ApiError::storage_full(
                "the server's database has no room for this run's output; try again later"
                    .to_owned(),
            )
        } else {
            ApiError::unavailable(
                "database_unavailable",
                "the server's database failed while recording this run; try again",
                2,
            )
        }
    }

    /// The data of an `error` event that ends a run with this answer (the shape of
    /// [`ApiError::event_data`]).
    pub(crate) fn to_event_data(&self) -> Value {
        let mut data = json!({"error": self.body["error"].clone(), "status": self.status.as_u16()});
        if let Some(secs) = self.retry_after {
            data["retry_after"] = json!(secs);
        }
        data
    }
}
