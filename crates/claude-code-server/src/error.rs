//! Errors as HTTP answers, all in one shape:
//! `{"error": {"kind", "message", "transient", ...}, "messages": [...]}`.

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
    #[schema(value_type = Object, example = json!({"kind": "pool_busy", "message": "...", "transient": true}))]
    pub error: Value,
    /// The messages the run produced before it failed, if it ran.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
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

    /// The error's JSON for a client. Server-side failures (5xx) say what kind of
    /// failure it was and carry a request id; their details (stderr, paths) go to the
    /// server's log, not to the client.
    pub fn error_json(err: &Error) -> Value {
        let status = ApiError::status_for(err);
        let message = if status.is_server_error() && err.kind() != ErrorKind::PoolBusy {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(request_id = %id, error = ?err, "a run failed");
            let what = match err.kind() {
                ErrorKind::Api => "the model API answered with an error",
                ErrorKind::Timeout => "the run took longer than the server allows",
                ErrorKind::Connection => {
                    "the Claude Code CLI failed or could not reach the model API"
                }
                _ => "the Claude Code CLI failed",
            };
            format!("{what} (request id {id}; details are in the server log)")
        } else {
            err.to_string()
        };
        let mut error = json!({
            "kind": err.kind().as_str(),
            "message": message,
            "transient": err.is_transient(),
        });
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
        let web: Vec<WebMessage> = messages.iter().map(Message::to_web).collect();
        let status = ApiError::status_for(err);
        let retry_after = matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
        .then(|| err.retry_after().map_or(1, |d| d.as_secs().max(1)));
        ApiError {
            status,
            body: json!({"error": ApiError::error_json(err), "messages": web}),
            retry_after,
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

/// `Json<T>` whose rejections answer in the API's error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(value))
    }
}
