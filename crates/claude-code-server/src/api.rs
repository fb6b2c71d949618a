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
    /// A working directory relative to the server's project root.
    #[serde(default)]
    pub cwd: Option<String>,
    /// A JSON Schema for structured output.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub json_schema: Option<Value>,
    /// Continue the conversation with this session id.
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
    /// What the run cost.
    pub cost_usd: Option<f64>,
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
    /// The summary of the last result among `messages`.
    pub fn of(messages: &[Message]) -> Option<ResultSummary> {
        messages
            .iter()
            .rev()
            .find_map(Message::as_result)
            .map(|r| ResultSummary {
                text: r.result.clone(),
                session_id: r.session_id.clone(),
                is_error: r.is_error,
                cost_usd: r.turn_cost_usd.or(r.total_cost_usd),
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
    /// Builds the answer from a run's messages.
    pub fn new(session: Option<String>, messages: &[Message]) -> QueryResponse {
        QueryResponse {
            session,
            messages: messages.iter().map(Message::to_web).collect(),
            result: ResultSummary::of(messages),
        }
    }
}

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The first prompt.
    pub prompt: String,
    /// A working directory relative to the server's project root.
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
