//! The JSON shapes of the HTTP API.

use claude_code_sdk::{Message, PermissionDenial, PermissionMode, WebMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A prompt and the per-request options a client may set. Everything else comes from
/// the server's configuration.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The prompt.
    pub prompt: String,
    /// The model (any the CLI accepts).
    #[serde(default)]
    pub model: Option<String>,
    /// Appended to the system prompt.
    #[serde(default)]
    pub append_system_prompt: Option<String>,
    /// Model round trips: an integer (an integral number such as `3.0` counts, as
    /// JSON Schema says), at most 4294967295; raised to 1 and capped at the server's
    /// `max_turns` (`GET /health` says which).
    #[serde(default, deserialize_with = "integral_u32")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 4_294_967_295_u64, example = 3)]
    pub max_turns: Option<u32>,
    /// A permission mode (default: the server's default mode). A mode the server
    /// does not allow (`GET /health` lists them) is refused with `403`.
    #[serde(default)]
    #[schema(schema_with = permission_mode_schema)]
    pub permission_mode: Option<PermissionMode>,
    /// A working directory: relative to the caller's project root (its first, for a
    /// tenant with several), or absolute inside one of its roots.
    #[serde(default)]
    pub cwd: Option<String>,
    /// A JSON Schema for structured output (an object valid against the meta-schema
    /// its `$schema` names, or else against draft 2020-12 or draft 7).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub json_schema: Option<Value>,
    /// Continue the conversation with this session id: one that a run of this caller
    /// reported, in its 36-character hyphenated form (anything else is `404` or `400`).
    #[serde(default)]
    pub resume: Option<String>,
    /// Stream partial text as `message` events of type `stream_event` (streaming only).
    #[serde(default)]
    pub include_partial_messages: bool,
    /// Ask this client to approve tool uses: the stream carries `permission_request`
    /// events, answered with `POST /v1/approvals/{id}` (streaming only).
    #[serde(default)]
    pub approvals: bool,
}

/// Accepts an integer, or a number with no fractional part (`199.0`): JSON Schema's
/// `integer` is any number that is a whole one, and clients that write JSON from
/// floating-point values send them so.
fn integral_u32<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            // In range and whole (checked above): the cast is exact.
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "max_turns must be a whole number from 0 to {}, not {number}",
                u32::MAX
            ))
        })
}

/// The schema of a permission mode's name: every mode the SDK knows.
fn permission_mode_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(PermissionMode::ALL.iter().map(|m| m.as_str())))
        .description(Some(
            "A permission mode: what the CLI may do without asking (see the SDK's PermissionMode)",
        ))
        .examples([serde_json::json!("askForEdits")])
        .build()
}

/// The schema of a list of permission modes.
fn permission_modes_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(permission_mode_schema())
        .build()
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// The permission modes requests may choose, and the one they get otherwise.
    pub modes: HealthModes,
    /// The most model round trips a request may ask for (and the default).
    pub max_turns: u32,
}

/// The modes part of [`Health`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthModes {
    /// Modes requests may choose.
    #[schema(schema_with = permission_modes_schema)]
    pub allowed: Vec<PermissionMode>,
    /// The mode of requests that choose none.
    #[schema(schema_with = permission_mode_schema)]
    pub default: PermissionMode,
}

/// `GET /ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// This replica's id.
    pub replica: String,
}

/// `GET /v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunStatus {
    /// The run id.
    pub run: String,
    /// `queued`, `claimed`, `running`, `succeeded`, `failed`, `interrupted` or `cancelled`.
    #[schema(example = "running")]
    pub state: String,
    /// The replica that holds or held it.
    pub replica: Option<String>,
    /// Its session, for a session's turn.
    pub session: Option<String>,
    /// Why a cancellation was asked for, if one was.
    pub cancel_requested: Option<String>,
    /// Whether it was started as a stream.
    pub stream: bool,
    /// When it was submitted (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionHistory {
    /// The session id.
    pub session: String,
    /// The replica that holds its CLI between turns, if any.
    pub home_replica: Option<String>,
    /// When it started (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was last used (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Its turns, oldest first.
    pub turns: Vec<SessionTurnRecord>,
}

/// A turn of a session, in [`SessionHistory`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionTurnRecord {
    /// The turn's run id.
    pub run: String,
    /// The prompt.
    pub prompt: Option<String>,
    /// The final text, once there is one.
    pub response: Option<String>,
    /// The run's state (see [`RunStatus`]).
    pub state: String,
    /// Whether the turn did not succeed (yet).
    pub is_error: bool,
    /// What the turn cost.
    pub cost_usd: Option<f64>,
    /// What the session had cost by the end of this turn.
    pub session_cost_usd: f64,
    /// When the turn was submitted (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Run counts by state, in [`Stats`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunCounts {
    /// Claimed or running.
    pub active: i64,
    /// Waiting for a replica.
    pub queued: i64,
    /// Succeeded.
    pub completed: i64,
    /// Failed, interrupted or cancelled.
    pub failed: i64,
}

/// Session figures, in [`Stats`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionCounts {
    /// The caller's open sessions.
    pub open: i64,
    /// Turns of the caller's sessions.
    pub turns: i64,
    /// The most sessions a caller may hold.
    pub max: u64,
    /// Every caller's open sessions (operator tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_all: Option<i64>,
}

/// Approval figures, in [`Stats`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalCounts {
    /// The caller's permission requests waiting for an answer.
    pub waiting: i64,
    /// Everyone's (operator tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_all: Option<i64>,
}

/// `GET /v1/stats`: the caller's own figures; for operator tokens also the pool's,
/// the replica's and the server-wide ones.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// The caller's runs.
    pub runs: RunCounts,
    /// The caller's sessions.
    pub sessions: SessionCounts,
    /// The caller's approvals.
    pub approvals: ApprovalCounts,
    /// Every caller's runs (operator tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_all: Option<RunCounts>,
    /// This replica's process pool (operator tokens only): counters of processes,
    /// runs and waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub pool: Option<Value>,
    /// This replica (operator tokens only): `id`, `running`, `draining`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub replica: Option<Value>,
}

/// The name of a server-sent event of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamEventKind {
    /// First: `{"run_id"}`, the run to reconnect to.
    Run,
    /// A message, in the flat web shape.
    Message,
    /// A [`PermissionRequest`] to answer (with `approvals: true`).
    PermissionRequest,
    /// Last, on success: a [`ResultSummary`].
    Done,
    /// Last, on failure: `{"error": ErrorDetail, "status", "retry_after"?}`.
    Error,
}

/// A server-sent event of `POST /v1/query/stream` and `GET /v1/runs/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    /// What the event is.
    pub event: StreamEventKind,
    /// Its JSON (see [`StreamEventKind`]).
    pub data: String,
    /// Its sequence number in the run's log: send it back as `Last-Event-ID` to
    /// resume after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ResultSummary {
    /// The final text.
    pub text: Option<String>,
    /// The session id: pass it as `resume` to continue.
    pub session_id: String,
    /// Whether the run failed.
    pub is_error: bool,
    /// What this run cost (not the conversation's running total).
    pub cost_usd: Option<f64>,
    /// What the conversation has cost so far, this run included (a resumed
    /// conversation's earlier runs too).
    pub session_cost_usd: Option<f64>,
    /// Model round trips.
    pub num_turns: u32,
    /// Wall time.
    pub duration_ms: u64,
    /// The structured output, for `json_schema` runs.
    #[schema(value_type = Option<Object>)]
    pub structured_output: Option<Value>,
    /// Tool uses that were denied: `{tool_name, tool_use_id, tool_input}`.
    #[schema(value_type = Vec<Object>)]
    pub permission_denials: Vec<PermissionDenial>,
}

impl ResultSummary {
    /// The summary of the last result among `messages`, for a run that did not
    /// resume a conversation. A failed result's text is the server's description of
    /// the failure (see the crate docs on errors).
    pub fn of(messages: &[Message]) -> Option<ResultSummary> {
        ResultSummary::resumed(messages, None)
    }

    /// The summary of a run that continued a conversation whose cumulative cost was
    /// `previous_total` before it.
    pub(crate) fn resumed(
        messages: &[Message],
        previous_total: Option<f64>,
    ) -> Option<ResultSummary> {
        let message = messages.iter().rev().find(|m| m.is_result())?;
        let r = message.as_result()?;
        // The SDK reports the run's own cost (what the CLI's running total grew by in
        // this process, from what the conversation had cost when it was resumed).
        let cost_usd = r.turn_cost_usd.or(r.total_cost_usd);
        let session_cost_usd = match (previous_total, cost_usd) {
            (Some(before), Some(cost)) => Some(before + cost),
            (before, cost) => before.or(cost),
        };
        Some(ResultSummary {
            text: crate::error::failure_text(message).or_else(|| r.result.clone()),
            session_id: r.session_id.clone(),
            is_error: r.is_error,
            cost_usd,
            session_cost_usd,
            num_turns: r.num_turns,
            duration_ms: r.duration_ms,
            structured_output: r.structured_output.clone(),
            permission_denials: r.permission_denials.clone(),
        })
    }
}

/// The answer of `POST /v1/query` and of session turns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryResponse {
    /// The session (conversation) the turn belongs to, for session endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Every message, in the flat web shape:
    /// `{content, role, timestamp, tools_used, error, type, session_id}`.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<WebMessage>,
    /// The outcome.
    pub result: Option<ResultSummary>,
}

impl QueryResponse {
    /// The answer from a run's log: its web messages and its result.
    pub(crate) fn from_parts(
        session: Option<String>,
        messages: Vec<serde_json::Value>,
        result: Option<ResultSummary>,
    ) -> QueryResponse {
        QueryResponse {
            session,
            messages: messages
                .into_iter()
                .filter_map(|m| serde_json::from_value(m).ok())
                .collect(),
            result,
        }
    }

    /// Builds the answer from a run's messages (redacted as the crate docs say).
    pub fn new(session: Option<String>, messages: &[Message]) -> QueryResponse {
        QueryResponse::resumed(session, messages, None)
    }

    /// [`new`](QueryResponse::new) for a run that resumed a conversation whose
    /// cumulative cost was `previous_total`.
    pub(crate) fn resumed(
        session: Option<String>,
        messages: &[Message],
        previous_total: Option<f64>,
    ) -> QueryResponse {
        QueryResponse {
            session,
            messages: messages.iter().map(crate::error::web_message).collect(),
            result: ResultSummary::resumed(messages, previous_total),
        }
    }
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The first prompt.
    pub prompt: String,
    /// A working directory: relative to the caller's project root (its first, for a
    /// tenant with several), or absolute inside one of its roots.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// `POST /v1/sessions/{id}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionTurn {
    /// The follow-up prompt.
    pub prompt: String,
}

/// `POST /v1/approvals/{id}`: a browser's answer to a `permission_request`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// Run the tool?
    pub allow: bool,
    /// Why not (shown to the model on a denial).
    #[serde(default)]
    pub message: Option<String>,
    /// Run the tool with this input instead.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub updated_input: Option<Value>,
}

/// A `permission_request` event on a stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PermissionRequest {
    /// Answer with `POST /v1/approvals/{approval_id}`.
    pub approval_id: String,
    /// The tool.
    pub tool_name: String,
    /// Its input.
    #[schema(value_type = Object)]
    pub input: Value,
    /// The path that needs permission, if any.
    pub blocked_path: Option<String>,
    /// Seconds until an unanswered request is denied.
    pub expires_in_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_turns(value: Value) -> Result<Option<u32>, String> {
        serde_json::from_value::<QueryRequest>(
            serde_json::json!({"prompt": "p", "max_turns": value}),
        )
        .map(|r| r.max_turns)
        .map_err(|e| e.to_string())
    }

    /// JSON Schema's `integer` includes `199.0`; clients writing floats send it so.
    #[test]
    fn max_turns_takes_whole_numbers_however_written() {
        assert_eq!(max_turns(serde_json::json!(199)), Ok(Some(199)));
        assert_eq!(max_turns(serde_json::json!(199.0)), Ok(Some(199)));
        assert_eq!(max_turns(serde_json::json!(0)), Ok(Some(0)));
        assert_eq!(
            max_turns(serde_json::json!(4_294_967_295_u64)),
            Ok(Some(u32::MAX))
        );
        assert_eq!(max_turns(Value::Null), Ok(None));
        for bad in [
            serde_json::json!(1.5),
            serde_json::json!(-1),
            serde_json::json!(-1.0),
            serde_json::json!(4_294_967_296_u64),
            serde_json::json!(1e300),
            serde_json::json!("3"),
        ] {
            assert!(max_turns(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_documented_permission_modes_are_the_sdks() {
        let schema = serde_json::to_value(permission_mode_schema()).unwrap();
        let names: Vec<&str> = PermissionMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(schema["enum"], serde_json::json!(names));
        for name in names {
            let request: QueryRequest =
                serde_json::from_value(serde_json::json!({"prompt": "p", "permission_mode": name}))
                    .unwrap();
            assert_eq!(
                request.permission_mode.map(PermissionMode::as_str),
                Some(name)
            );
        }
    }
}
