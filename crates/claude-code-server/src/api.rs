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
    /// Model round trips; capped by the server's `max_turns`.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// One of the modes the server allows (default: the server's default mode):
    /// `readOnly`, `askForEdits`, `acceptEdits`, `strict`, `default`, `plan`,
    /// `bypassPermissions`, `dontAsk`, `auto`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "askForEdits")]
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
