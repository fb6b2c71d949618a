//! SDK errors as HTTP answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use claude_code_sdk::{Error, ErrorKind, Message, WebMessage};
use serde_json::{Value, json};

/// An error answer: a status and `{"error": {"kind", "message", ...}, "messages": [...]}`.
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
            body: json!({"error": {"kind": kind, "message": message.into()}}),
            retry_after: None,
        }
    }

    /// The status an SDK error maps to.
    pub fn status_for(err: &Error) -> StatusCode {
        match err.kind() {
            ErrorKind::InvalidOptions => StatusCode::BAD_REQUEST,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::ConversationBusy => StatusCode::CONFLICT,
            ErrorKind::PoolBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::MaxTurns | ErrorKind::Budget | ErrorKind::Interrupted => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorKind::Api if err.api_status() == Some(429) => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Api | ErrorKind::Connection | ErrorKind::Execution => {
                StatusCode::BAD_GATEWAY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error's JSON: kind, message, and the context a client can act on.
    pub fn error_json(err: &Error) -> Value {
        let mut error = json!({
            "kind": err.kind().as_str(),
            "message": err.to_string(),
            "transient": err.is_transient(),
        });
        if let Some(status) = err.api_status() {
            error["api_status"] = json!(status);
        }
        if let Some(code) = err.exit_code() {
            error["exit_code"] = json!(code);
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
        let web: Vec<WebMessage> = messages.iter().map(Message::to_web).collect();
        ApiError {
            status: ApiError::status_for(err),
            body: json!({"error": ApiError::error_json(err), "messages": web}),
            retry_after: (err.kind() == ErrorKind::PoolBusy || err.is_transient())
                .then(|| err.retry_after().map_or(1, |d| d.as_secs().max(1))),
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::from_run(&err, &[])
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
