//! Messages: what a run yields, one per line the CLI writes.
//!
//! [`Message`] is an enum over the CLI's line types, each variant a struct with the
//! fields users reach for. Every message also answers the questions of the Python
//! SDK's flat message shape, whatever its variant: [`role`](Message::role),
//! [`content`](Message::content), [`timestamp`](Message::timestamp),
//! [`metadata`](Message::metadata), [`tools_used`](Message::tools_used) and
//! [`error`](Message::error); [`to_web_json`](Message::to_web_json) gives the
//! `{content, role, timestamp, tools_used, error}` object a web page expects.
//!
//! ```
//! use claude_code_sdk::{ContentBlock, Message};
//!
//! let line = r#"{"type":"assistant","message":{"model":"claude-sonnet-4-5","content":[
//!     {"type":"text","text":"Let me look."},
//!     {"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"main.rs"}}]},
//!     "session_id":"s1","parent_tool_use_id":null}"#;
//! let message = Message::from_json(line)?;
//! assert_eq!(message.role().as_str(), "assistant");
//! assert_eq!(message.content(), "Let me look.");
//! assert_eq!(message.tools_used(), ["Read"]);
//! if let Message::Assistant(assistant) = &message {
//!     assert!(matches!(assistant.content[1], ContentBlock::ToolUse { .. }));
//! }
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! # Forward compatibility
//!
//! A line of a type this SDK does not know becomes [`Message::Unknown`]; a content
//! block of an unknown type becomes [`ContentBlock::Unknown`]; unknown fields are
//! ignored. The raw line is always kept ([`Message::raw`]). A newer CLI never breaks
//! a stream.

use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::wire;

/// Who a message comes from, in the sense of a chat API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// The user: prompts, and the tool results the CLI sends back to the model.
    User,
    /// The model: text, thinking, tool uses, and partial stream events.
    Assistant,
    /// The CLI itself: init and status lines, results, rate-limit events.
    System,
}

impl Role {
    /// `"user"`, `"assistant"` or `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the CLI's output.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Message {
    /// `system` lines: `init` at the start of each turn, `status`, `api_retry`,
    /// `compact_boundary`, hook events, and whatever subtypes newer CLIs add.
    System(SystemMessage),
    /// A model message (the CLI writes one line per content block).
    Assistant(AssistantMessage),
    /// A user message: tool results, replayed prompts, local command output.
    User(UserMessage),
    /// The end of a turn: the outcome, cost, usage and session id.
    Result(ResultMessage),
    /// A partial-message event (with `include_partial_messages`).
    StreamEvent(StreamEvent),
    /// A rate-limit notice from the CLI.
    RateLimit(RateLimitEvent),
    /// A line type this SDK does not know yet.
    Unknown(UnknownMessage),
}

/// Fields every message carries: its line (when kept) and when it was received.
#[derive(Debug, Clone)]
struct Envelope {
    /// The line as the CLI wrote it: kept for lines up to 1 MiB and for every
    /// [`Message::Unknown`]; a longer line is not kept beside its decoded text.
    raw: Option<Arc<str>>,
    /// The line rebuilt from the decoded fields, the first time [`Message::raw`] asks
    /// for a line that was not kept.
    rebuilt: OnceLock<Arc<str>>,
    /// The length of the line in bytes.
    line_len: usize,
    received_at: DateTime<Utc>,
}

impl Envelope {
    fn new(raw: Option<Arc<str>>) -> Self {
        Envelope {
            line_len: raw.as_ref().map_or(0, |r| r.len()),
            raw,
            rebuilt: OnceLock::new(),
            received_at: Utc::now(),
        }
    }
}

/// A `system` line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SystemMessage {
    /// `init`, `status`, `api_retry`, `compact_boundary`, `conversation_reset`, ...
    pub subtype: String,
    /// The session the line belongs to.
    pub session_id: Option<String>,
    /// Every field of the line.
    pub data: Map<String, Value>,
    envelope: Envelope,
}

impl SystemMessage {
    /// The typed view of an `init` line, which starts each turn.
    pub fn init(&self) -> Option<SystemInit> {
        if self.subtype != "init" {
            return None;
        }
        SystemInit::deserialize(Value::Object(self.data.clone())).ok()
    }
}

/// What the CLI reports when a turn starts (`system` / `init`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SystemInit {
    /// The working directory.
    pub cwd: String,
    /// The session id.
    pub session_id: String,
    /// The tools the model can use.
    pub tools: Vec<String>,
    /// MCP servers and their status.
    pub mcp_servers: Vec<Value>,
    /// The model.
    pub model: String,
    /// The permission mode in effect (the CLI's name).
    #[serde(rename = "permissionMode")]
    pub permission_mode: String,
    /// Slash commands available.
    pub slash_commands: Vec<String>,
    /// Agents available.
    pub agents: Vec<String>,
    /// The CLI's version.
    pub claude_code_version: String,
    /// Where the API key came from.
    #[serde(rename = "apiKeySource")]
    pub api_key_source: String,
}

/// A model message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AssistantMessage {
    /// The content blocks of this line (the CLI writes one block per line).
    pub content: Vec<ContentBlock>,
    /// The model that wrote it (`<synthetic>` for messages the CLI makes up, such as
    /// API error reports).
    pub model: String,
    /// The API message id; lines of one model message share it.
    pub message_id: Option<String>,
    /// Why the model stopped, when known.
    pub stop_reason: Option<String>,
    /// Token usage reported with the message.
    pub usage: Option<Usage>,
    /// Set when this message comes from a subagent: the tool use that started it.
    pub parent_tool_use_id: Option<String>,
    /// The session id.
    pub session_id: Option<String>,
    /// The line's unique id.
    pub uuid: Option<String>,
    /// The CLI's error tag for synthetic error messages (`"rate_limit"`,
    /// `"authentication_failed"`, `"server_error"`, ...).
    pub error: Option<String>,
    timestamp: Option<DateTime<Utc>>,
    envelope: Envelope,
}

impl AssistantMessage {
    /// The text blocks joined together.
    pub fn text(&self) -> String {
        join_text(&self.content)
    }
}

/// A user message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UserMessage {
    /// The content: a prompt's text as one [`ContentBlock::Text`], or tool results.
    pub content: Vec<ContentBlock>,
    /// Set when this message belongs to a subagent.
    pub parent_tool_use_id: Option<String>,
    /// The session id.
    pub session_id: Option<String>,
    /// The line's unique id.
    pub uuid: Option<String>,
    /// The structured result of the tool, as the CLI reports it (tool-specific).
    pub tool_use_result: Option<Value>,
    /// `true` for user messages echoed back (`--replay-user-messages`, local commands).
    pub is_replay: bool,
    timestamp: Option<DateTime<Utc>>,
    envelope: Envelope,
}

/// A tool use that was denied during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PermissionDenial {
    /// The tool, e.g. `"Write"`.
    pub tool_name: String,
    /// The tool use id.
    #[serde(default)]
    pub tool_use_id: String,
    /// The input the model gave the tool.
    #[serde(default)]
    pub tool_input: Value,
}

/// The end of a turn.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResultMessage {
    /// `success`, `error_max_turns`, `error_max_budget_usd`, `error_during_execution`, ...
    /// Note that an API failure is reported as `success` with `is_error` set.
    pub subtype: String,
    /// Whether the turn failed.
    pub is_error: bool,
    /// Wall time of the turn.
    pub duration_ms: u64,
    /// Time spent in model API calls.
    pub duration_api_ms: u64,
    /// Model round trips in the turn.
    pub num_turns: u32,
    /// The final text (or the error text).
    pub result: Option<String>,
    /// The session id: pass it to `resume` to continue this conversation.
    pub session_id: String,
    /// Cost of the whole CLI process so far, as the CLI reports it (cumulative).
    pub total_cost_usd: Option<f64>,
    /// Cost of this turn alone (computed by the SDK from the cumulative figure).
    pub turn_cost_usd: Option<f64>,
    /// Token usage of the turn.
    pub usage: Option<Usage>,
    /// Per-model usage, as the CLI reports it (cumulative for the process).
    pub model_usage: Map<String, Value>,
    /// Tool uses that were denied during the turn.
    pub permission_denials: Vec<PermissionDenial>,
    /// The validated value of a structured-output run (`json_schema`).
    pub structured_output: Option<Value>,
    /// The HTTP status of the failed API call, for API errors.
    pub api_error_status: Option<u16>,
    /// The CLI's tag for an API failure (e.g. `"connection_failed"`).
    pub api_error: Option<String>,
    /// Why the model stopped.
    pub stop_reason: Option<String>,
    /// Why the turn ended (`completed`, `max_turns`, `api_error`, `aborted_streaming`, ...).
    pub terminal_reason: Option<String>,
    /// Extra error details the CLI gives.
    pub errors: Vec<String>,
    /// The line's unique id.
    pub uuid: Option<String>,
    envelope: Envelope,
}

impl ResultMessage {
    /// The error this result stands for, if the turn failed or denied a tool use.
    ///
    /// The classification follows the official SDKs: API failures by status,
    /// `error_max_turns`, `error_max_budget_usd`, interrupts, connection failures; a
    /// successful turn that denied tool uses is a [`PermissionDenied`](crate::ErrorKind::PermissionDenied).
    /// (Streams refine the last case: denials a permission callback or hook decided are
    /// not errors there; this function cannot know who decided.)
    pub fn to_error(&self) -> Option<Error> {
        wire::classify_result(self)
    }

    pub(crate) fn set_turn_cost(&mut self, cost: Option<f64>) {
        self.turn_cost_usd = cost;
    }
}

/// A partial-message event: raw Anthropic streaming events (`content_block_delta`, ...).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamEvent {
    /// The Anthropic streaming event, as JSON.
    pub event: Value,
    /// The session id.
    pub session_id: Option<String>,
    /// Set when the event belongs to a subagent.
    pub parent_tool_use_id: Option<String>,
    /// The line's unique id.
    pub uuid: Option<String>,
    envelope: Envelope,
}

impl StreamEvent {
    /// The event type (`message_start`, `content_block_delta`, ...).
    pub fn event_type(&self) -> &str {
        self.event.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The text of a `text_delta`, if this event carries one.
    pub fn text_delta(&self) -> Option<&str> {
        let delta = self.event.get("delta")?;
        (delta.get("type")?.as_str()? == "text_delta")
            .then(|| delta.get("text")?.as_str())
            .flatten()
    }
}

/// A rate-limit notice.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RateLimitEvent {
    /// Every field of the line.
    pub data: Map<String, Value>,
    /// The session id.
    pub session_id: Option<String>,
    envelope: Envelope,
}

/// A line of a type this SDK does not know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnknownMessage {
    /// The line's `type`, if it had one.
    pub kind: Option<String>,
    envelope: Envelope,
}

impl UnknownMessage {
    /// The line, parsed.
    pub fn json(&self) -> Value {
        self.envelope
            .raw
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or(Value::Null)
    }
}

/// Token usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    /// The service tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Every other field, as the CLI sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A content block of a user or assistant message.
///
/// Blocks of types this SDK does not know are kept as [`ContentBlock::Unknown`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// Extended thinking.
    Thinking {
        /// The thinking text.
        thinking: String,
        /// The signature the API attaches.
        signature: String,
    },
    /// Thinking the API redacted.
    RedactedThinking {
        /// The opaque data.
        data: String,
    },
    /// The model asks to use a tool.
    ToolUse {
        /// The tool use id.
        id: String,
        /// The tool name (`Bash`, `Write`, `mcp__server__tool`, ...).
        name: String,
        /// The input.
        input: Value,
    },
    /// The result of a tool use, sent back to the model.
    ToolResult {
        /// The tool use this answers.
        tool_use_id: String,
        /// The result content: a string or a list of blocks.
        content: Option<ToolResultContent>,
        /// Whether the tool failed.
        is_error: Option<bool>,
    },
    /// A tool the API runs itself (web search, code execution, ...).
    ServerToolUse {
        /// The tool use id.
        id: String,
        /// The tool name.
        name: String,
        /// The input.
        input: Value,
    },
    /// The result of a server tool (`web_search_tool_result`, `web_fetch_tool_result`, ...).
    ServerToolResult {
        /// The block type, e.g. `web_search_tool_result`.
        kind: String,
        /// The server tool use this answers.
        tool_use_id: String,
        /// The result content.
        content: Value,
    },
    /// An image (in prompts).
    Image {
        /// The image source: `{"type":"base64","media_type":...,"data":...}` or a URL source.
        source: Value,
    },
    /// A block of a type this SDK does not know.
    Unknown {
        /// The block's `type`.
        kind: String,
        /// The block as the CLI sent it.
        raw: Value,
    },
}

/// The content of a tool result.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ToolResultContent {
    /// Plain text.
    Text(String),
    /// Content blocks (text, images).
    Blocks(Vec<ContentBlock>),
}

impl ToolResultContent {
    /// The text of the result (text blocks joined).
    pub fn text(&self) -> String {
        match self {
            ToolResultContent::Text(text) => text.clone(),
            ToolResultContent::Blocks(blocks) => join_text(blocks),
        }
    }
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }

    /// A base64 image block for a prompt, e.g. `ContentBlock::image_base64("image/png", data)`.
    pub fn image_base64(media_type: impl Into<String>, data: impl Into<String>) -> Self {
        ContentBlock::Image {
            source: serde_json::json!({
                "type": "base64",
                "media_type": media_type.into(),
                "data": data.into(),
            }),
        }
    }

    /// The block's `type` on the wire.
    pub fn kind(&self) -> &str {
        match self {
            ContentBlock::Text { .. } => "text",
            ContentBlock::Thinking { .. } => "thinking",
            ContentBlock::RedactedThinking { .. } => "redacted_thinking",
            ContentBlock::ToolUse { .. } => "tool_use",
            ContentBlock::ToolResult { .. } => "tool_result",
            ContentBlock::ServerToolUse { .. } => "server_tool_use",
            ContentBlock::ServerToolResult { kind, .. } => kind,
            ContentBlock::Image { .. } => "image",
            ContentBlock::Unknown { kind, .. } => kind,
        }
    }

    /// The text, for a text block.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ContentBlock::Text { text } => Some(text),
            _ => None,
        }
    }
}

impl Serialize for ContentBlock {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        wire::block_to_value(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(wire::block_from_value(Value::deserialize(deserializer)?))
    }
}

pub(crate) fn join_text(blocks: &[ContentBlock]) -> String {
    let mut out = String::new();
    for text in blocks.iter().filter_map(ContentBlock::as_text) {
        out.push_str(text);
    }
    out
}

/// The flat shape of a message for web pages and JSON APIs:
/// `{content, role, timestamp, tools_used, error}` plus the message type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WebMessage {
    /// The text ([`Message::content`]).
    pub content: String,
    /// `user`, `assistant` or `system`.
    pub role: Role,
    /// RFC 3339.
    pub timestamp: DateTime<Utc>,
    /// Tools the message asks to use.
    pub tools_used: Vec<String>,
    /// The error, if the message reports one.
    pub error: Option<String>,
    /// The line type (`assistant`, `result`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Message {
    /// Parses one line of the CLI's stream-json output.
    ///
    /// Unknown line types become [`Message::Unknown`]; a control-protocol line is not a
    /// message and is rejected.
    ///
    /// # Errors
    ///
    /// A [`Protocol`](crate::ErrorKind::Protocol) error, keeping the raw line, if the
    /// line is not a JSON object or is a control-protocol line.
    pub fn from_json(line: &str) -> Result<Message> {
        match wire::parse_line(line.to_owned())? {
            wire::Inbound::Message(message) => Ok(*message),
            _ => Err(Error::protocol("a control-protocol line is not a message")
                .with_raw_line(crate::error::shorten(line, 4096))),
        }
    }

    /// The line type: `system`, `assistant`, `user`, `result`, `stream_event`,
    /// `rate_limit_event`, or an unknown line's own type.
    pub fn kind(&self) -> &str {
        match self {
            Message::System(_) => "system",
            Message::Assistant(_) => "assistant",
            Message::User(_) => "user",
            Message::Result(_) => "result",
            Message::StreamEvent(_) => "stream_event",
            Message::RateLimit(_) => "rate_limit_event",
            Message::Unknown(m) => m.kind.as_deref().unwrap_or("unknown"),
        }
    }

    /// Who the message comes from.
    pub fn role(&self) -> Role {
        match self {
            Message::Assistant(_) | Message::StreamEvent(_) => Role::Assistant,
            Message::User(_) => Role::User,
            _ => Role::System,
        }
    }

    /// The message's text: an assistant's text blocks, a prompt or tool result text, a
    /// result's final text, a stream event's text delta. Empty when there is none.
    pub fn content(&self) -> String {
        match self {
            Message::Assistant(m) => m.text(),
            Message::User(m) => {
                let mut out = String::new();
                for block in &m.content {
                    match block {
                        ContentBlock::Text { text } => out.push_str(text),
                        ContentBlock::ToolResult {
                            content: Some(c), ..
                        } => out.push_str(&c.text()),
                        _ => {}
                    }
                }
                out
            }
            Message::Result(m) => m.result.clone().unwrap_or_default(),
            Message::StreamEvent(m) => m.text_delta().unwrap_or_default().to_owned(),
            Message::System(_) | Message::RateLimit(_) | Message::Unknown(_) => String::new(),
        }
    }

    /// When the message was written: the CLI's timestamp when the line has one, else
    /// when the SDK received it.
    pub fn timestamp(&self) -> DateTime<Utc> {
        let (own, envelope) = match self {
            Message::Assistant(m) => (m.timestamp, &m.envelope),
            Message::User(m) => (m.timestamp, &m.envelope),
            _ => (None, self.envelope()),
        };
        own.unwrap_or(envelope.received_at)
    }

    /// Details of the message as a JSON object: session id, uuid, model, usage, cost,
    /// durations, subtype, whichever the message has.
    pub fn metadata(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                map.insert(key.to_owned(), value);
            }
        };
        put("type", Value::from(self.kind()));
        put("session_id", self.session_id().into());
        match self {
            Message::System(m) => put("subtype", m.subtype.clone().into()),
            Message::Assistant(m) => {
                put("model", m.model.clone().into());
                put("message_id", m.message_id.clone().into());
                put("stop_reason", m.stop_reason.clone().into());
                put("uuid", m.uuid.clone().into());
                put("parent_tool_use_id", m.parent_tool_use_id.clone().into());
                put("usage", to_value(&m.usage));
            }
            Message::User(m) => {
                put("uuid", m.uuid.clone().into());
                put("parent_tool_use_id", m.parent_tool_use_id.clone().into());
            }
            Message::Result(m) => {
                put("subtype", m.subtype.clone().into());
                put("is_error", m.is_error.into());
                put("duration_ms", m.duration_ms.into());
                put("duration_api_ms", m.duration_api_ms.into());
                put("num_turns", m.num_turns.into());
                put("total_cost_usd", m.total_cost_usd.into());
                put("turn_cost_usd", m.turn_cost_usd.into());
                put("usage", to_value(&m.usage));
                put("stop_reason", m.stop_reason.clone().into());
                put("terminal_reason", m.terminal_reason.clone().into());
            }
            Message::StreamEvent(m) => put("event_type", m.event_type().into()),
            Message::RateLimit(_) | Message::Unknown(_) => {}
        }
        map
    }

    /// Names of the tools this message asks to use (assistant messages), in order.
    pub fn tools_used(&self) -> Vec<&str> {
        match self {
            Message::Assistant(m) => m
                .content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { name, .. }
                    | ContentBlock::ServerToolUse { name, .. } => Some(name.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The error this message reports: a failed result's text, or a synthetic assistant
    /// message's API error.
    pub fn error(&self) -> Option<&str> {
        match self {
            Message::Result(m) if m.is_error => Some(
                m.result
                    .as_deref()
                    .or(m.errors.first().map(String::as_str))
                    .unwrap_or(m.subtype.as_str()),
            ),
            Message::Assistant(m) if m.error.is_some() => m
                .content
                .iter()
                .find_map(ContentBlock::as_text)
                .or(m.error.as_deref()),
            _ => None,
        }
    }

    /// The session id the line carries.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Message::System(m) => m.session_id.as_deref(),
            Message::Assistant(m) => m.session_id.as_deref(),
            Message::User(m) => m.session_id.as_deref(),
            Message::Result(m) => Some(&m.session_id),
            Message::StreamEvent(m) => m.session_id.as_deref(),
            Message::RateLimit(m) => m.session_id.as_deref(),
            Message::Unknown(_) => None,
        }
    }

    /// The line as the CLI wrote it.
    ///
    /// Exact for lines up to 1 MiB and for every [`Message::Unknown`]. A longer line is
    /// not kept beside its decoded text (a 50 MiB answer would need twice the memory):
    /// the first call rebuilds it from the decoded fields and keeps that; it carries
    /// every field this SDK models, with the same values, in its own key order and
    /// without fields this SDK does not know.
    pub fn raw(&self) -> &str {
        let envelope = self.envelope();
        match &envelope.raw {
            Some(raw) => raw,
            None => envelope
                .rebuilt
                .get_or_init(|| Arc::from(self.rebuild_line().to_string())),
        }
    }

    /// The length in bytes of the line the message was decoded from (of the JSON it
    /// was made from, for messages made by the SDK).
    pub fn line_len(&self) -> usize {
        self.envelope().line_len
    }

    /// Keeps the line the message was decoded from.
    pub(crate) fn keep_line(&mut self, raw: Arc<str>) {
        self.envelope_mut().raw = Some(raw);
    }

    /// Records the length of the line the message was decoded from.
    pub(crate) fn set_line_len(&mut self, len: usize) {
        self.envelope_mut().line_len = len;
    }

    /// The line from the decoded fields (for [`raw`](Message::raw) of a line not kept).
    fn rebuild_line(&self) -> Value {
        fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
            if !value.is_null() {
                map.insert(key.to_owned(), value);
            }
        }
        let mut line = Map::new();
        line.insert("type".to_owned(), Value::from(self.kind()));
        match self {
            Message::System(m) => line.extend(m.data.clone()),
            Message::RateLimit(m) => line.extend(m.data.clone()),
            Message::Assistant(m) => {
                let mut body = Map::new();
                put(&mut body, "id", m.message_id.clone().into());
                body.insert("type".to_owned(), "message".into());
                body.insert("role".to_owned(), "assistant".into());
                body.insert("model".to_owned(), m.model.clone().into());
                body.insert("content".to_owned(), to_value(&m.content));
                body.insert("stop_reason".to_owned(), m.stop_reason.clone().into());
                put(&mut body, "usage", to_value(&m.usage));
                line.insert("message".to_owned(), Value::Object(body));
                line.insert(
                    "parent_tool_use_id".to_owned(),
                    m.parent_tool_use_id.clone().into(),
                );
                put(&mut line, "session_id", m.session_id.clone().into());
                put(&mut line, "uuid", m.uuid.clone().into());
                put(&mut line, "error", m.error.clone().into());
                put(&mut line, "timestamp", to_value(&m.timestamp));
            }
            Message::User(m) => {
                let body = serde_json::json!({"role": "user", "content": to_value(&m.content)});
                line.insert("message".to_owned(), body);
                line.insert(
                    "parent_tool_use_id".to_owned(),
                    m.parent_tool_use_id.clone().into(),
                );
                put(&mut line, "session_id", m.session_id.clone().into());
                put(&mut line, "uuid", m.uuid.clone().into());
                put(&mut line, "tool_use_result", to_value(&m.tool_use_result));
                if m.is_replay {
                    line.insert("isReplay".to_owned(), true.into());
                }
                put(&mut line, "timestamp", to_value(&m.timestamp));
            }
            Message::Result(m) => {
                line.insert("subtype".to_owned(), m.subtype.clone().into());
                line.insert("is_error".to_owned(), m.is_error.into());
                line.insert("duration_ms".to_owned(), m.duration_ms.into());
                line.insert("duration_api_ms".to_owned(), m.duration_api_ms.into());
                line.insert("num_turns".to_owned(), m.num_turns.into());
                put(&mut line, "result", m.result.clone().into());
                line.insert("session_id".to_owned(), m.session_id.clone().into());
                put(&mut line, "total_cost_usd", m.total_cost_usd.into());
                put(&mut line, "usage", to_value(&m.usage));
                line.insert(
                    "modelUsage".to_owned(),
                    Value::Object(m.model_usage.clone()),
                );
                line.insert(
                    "permission_denials".to_owned(),
                    to_value(&m.permission_denials),
                );
                put(
                    &mut line,
                    "structured_output",
                    to_value(&m.structured_output),
                );
                put(&mut line, "api_error_status", m.api_error_status.into());
                put(&mut line, "api_error", m.api_error.clone().into());
                put(&mut line, "stop_reason", m.stop_reason.clone().into());
                put(
                    &mut line,
                    "terminal_reason",
                    m.terminal_reason.clone().into(),
                );
                if !m.errors.is_empty() {
                    line.insert("errors".to_owned(), m.errors.clone().into());
                }
                put(&mut line, "uuid", m.uuid.clone().into());
            }
            Message::StreamEvent(m) => {
                line.insert("event".to_owned(), m.event.clone());
                put(&mut line, "session_id", m.session_id.clone().into());
                line.insert(
                    "parent_tool_use_id".to_owned(),
                    m.parent_tool_use_id.clone().into(),
                );
                put(&mut line, "uuid", m.uuid.clone().into());
            }
            Message::Unknown(m) => return m.json(),
        }
        Value::Object(line)
    }

    /// The flat web shape: `{content, role, timestamp, tools_used, error, type}`.
    pub fn to_web(&self) -> WebMessage {
        WebMessage {
            content: self.content(),
            role: self.role(),
            timestamp: self.timestamp(),
            tools_used: self.tools_used().into_iter().map(str::to_owned).collect(),
            error: self.error().map(str::to_owned),
            kind: self.kind().to_owned(),
            session_id: self.session_id().map(str::to_owned),
        }
    }

    /// [`to_web`](Message::to_web) as a JSON value.
    pub fn to_web_json(&self) -> Value {
        serde_json::to_value(self.to_web()).unwrap_or(Value::Null)
    }

    /// The result, if this is one.
    pub fn as_result(&self) -> Option<&ResultMessage> {
        match self {
            Message::Result(m) => Some(m),
            _ => None,
        }
    }

    /// The assistant message, if this is one.
    pub fn as_assistant(&self) -> Option<&AssistantMessage> {
        match self {
            Message::Assistant(m) => Some(m),
            _ => None,
        }
    }

    /// Whether this is a result (the end of a turn).
    pub fn is_result(&self) -> bool {
        matches!(self, Message::Result(_))
    }

    fn envelope(&self) -> &Envelope {
        match self {
            Message::System(m) => &m.envelope,
            Message::Assistant(m) => &m.envelope,
            Message::User(m) => &m.envelope,
            Message::Result(m) => &m.envelope,
            Message::StreamEvent(m) => &m.envelope,
            Message::RateLimit(m) => &m.envelope,
            Message::Unknown(m) => &m.envelope,
        }
    }

    fn envelope_mut(&mut self) -> &mut Envelope {
        match self {
            Message::System(m) => &mut m.envelope,
            Message::Assistant(m) => &mut m.envelope,
            Message::User(m) => &mut m.envelope,
            Message::Result(m) => &mut m.envelope,
            Message::StreamEvent(m) => &mut m.envelope,
            Message::RateLimit(m) => &mut m.envelope,
            Message::Unknown(m) => &mut m.envelope,
        }
    }
}

/// `role: content`, or `role: [kind]` for a message without text (an `init` line, a
/// tool use): a readable one-line form for logs and terminals.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content = self.content();
        if !content.is_empty() {
            return write!(f, "{}: {content}", self.role());
        }
        let tools = self.tools_used();
        if !tools.is_empty() {
            return write!(f, "{}: [uses {}]", self.role(), tools.join(", "));
        }
        match self {
            Message::System(m) => write!(f, "{}: [{} {}]", self.role(), self.kind(), m.subtype),
            _ => write!(f, "{}: [{}]", self.role(), self.kind()),
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

// Constructors used by the wire layer. They live here so the public structs can keep
// their envelope private.
impl SystemMessage {
    /// A system message made by the SDK, with its line.
    pub(crate) fn from_wire(raw: Arc<str>, data: Map<String, Value>) -> Self {
        let mut message = SystemMessage::from_data(data);
        message.envelope = Envelope::new(Some(raw));
        message
    }

    pub(crate) fn from_data(data: Map<String, Value>) -> Self {
        let subtype = str_field(&data, "subtype").unwrap_or_default();
        let session_id = str_field(&data, "session_id");
        SystemMessage {
            subtype,
            session_id,
            data,
            envelope: Envelope::new(None),
        }
    }
}

impl AssistantMessage {
    pub(crate) fn from_wire(w: wire::WireAssistant<'_>) -> Self {
        AssistantMessage {
            content: w
                .message
                .content
                .into_iter()
                .map(wire::BlockIn::into_block)
                .collect(),
            model: w.message.model.unwrap_or_default(),
            message_id: w.message.id,
            stop_reason: w.message.stop_reason,
            usage: w.message.usage,
            parent_tool_use_id: w.parent_tool_use_id,
            session_id: w.session_id,
            uuid: w.uuid,
            error: w.error,
            timestamp: w.timestamp,
            envelope: Envelope::new(None),
        }
    }
}

impl UserMessage {
    pub(crate) fn from_wire(w: wire::WireUser<'_>) -> Self {
        UserMessage {
            content: w.message.content.into_blocks(),
            parent_tool_use_id: w.parent_tool_use_id,
            session_id: w.session_id,
            uuid: w.uuid,
            tool_use_result: w.tool_use_result,
            is_replay: w.is_replay.unwrap_or(false),
            timestamp: w.timestamp,
            envelope: Envelope::new(None),
        }
    }
}

impl ResultMessage {
    pub(crate) fn from_wire(w: wire::WireResult<'_>) -> Self {
        ResultMessage {
            subtype: w.subtype,
            is_error: w.is_error,
            duration_ms: w.duration_ms,
            duration_api_ms: w.duration_api_ms,
            num_turns: w.num_turns,
            result: w.result.map(|t| t.0.into_owned()),
            session_id: w.session_id,
            total_cost_usd: w.total_cost_usd,
            turn_cost_usd: None,
            usage: w.usage,
            model_usage: w.model_usage,
            permission_denials: w.permission_denials,
            structured_output: w.structured_output,
            api_error_status: w.api_error_status,
            api_error: w.api_error,
            stop_reason: w.stop_reason,
            terminal_reason: w.terminal_reason,
            errors: w.errors,
            uuid: w.uuid,
            envelope: Envelope::new(None),
        }
    }
}

impl StreamEvent {
    pub(crate) fn from_wire(w: wire::WireStreamEvent) -> Self {
        StreamEvent {
            event: w.event,
            session_id: w.session_id,
            parent_tool_use_id: w.parent_tool_use_id,
            uuid: w.uuid,
            envelope: Envelope::new(None),
        }
    }
}

impl RateLimitEvent {
    pub(crate) fn from_wire(data: Map<String, Value>) -> Self {
        let session_id = str_field(&data, "session_id");
        RateLimitEvent {
            data,
            session_id,
            envelope: Envelope::new(None),
        }
    }
}

impl UnknownMessage {
    pub(crate) fn from_wire(raw: Arc<str>, kind: Option<String>) -> Self {
        UnknownMessage {
            kind,
            envelope: Envelope::new(Some(raw)),
        }
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_shape_of_a_result() {
        let line = r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":529,
            "duration_ms":5,"duration_api_ms":0,"num_turns":1,"result":"API Error: 529 overloaded",
            "session_id":"abc","total_cost_usd":0}"#;
        let message = Message::from_json(line).unwrap();
        let web = message.to_web_json();
        assert_eq!(web["role"], "system");
        assert_eq!(web["type"], "result");
        assert_eq!(web["error"], "API Error: 529 overloaded");
        assert_eq!(web["content"], "API Error: 529 overloaded");
        assert!(web["timestamp"].is_string());
        assert_eq!(web["tools_used"], serde_json::json!([]));
        let err = message.as_result().unwrap().to_error().unwrap();
        assert!(err.is_api() && err.is_transient());
        assert_eq!(err.api_status(), Some(529));
    }

    #[test]
    fn display_is_one_readable_line() {
        let text = Message::from_json(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Hi"}]}}"#,
        )
        .unwrap();
        assert_eq!(text.to_string(), "assistant: Hi");
        let tool = Message::from_json(
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t","name":"Bash","input":{}}]}}"#,
        )
        .unwrap();
        assert_eq!(tool.to_string(), "assistant: [uses Bash]");
        let init = Message::from_json(r#"{"type":"system","subtype":"init"}"#).unwrap();
        assert_eq!(init.to_string(), "system: [system init]");
    }

    #[test]
    fn unknown_blocks_and_lines_survive() {
        let line = r#"{"type":"assistant","message":{"model":"m","content":[
            {"type":"hologram","depth":3},{"type":"text","text":"hi"}]}}"#;
        let message = Message::from_json(line).unwrap();
        let a = message.as_assistant().unwrap();
        assert_eq!(a.content[0].kind(), "hologram");
        assert_eq!(message.content(), "hi");
        let back = serde_json::to_value(&a.content[0]).unwrap();
        assert_eq!(back["depth"], 3);

        let future = Message::from_json(r#"{"type":"telepathy","x":1}"#).unwrap();
        assert_eq!(future.kind(), "telepathy");
        assert!(matches!(future, Message::Unknown(_)));
        assert_eq!(future.raw(), r#"{"type":"telepathy","x":1}"#);
    }

    #[test]
    fn user_tool_results_and_timestamps() {
        let line = r#"{"type":"user","message":{"role":"user","content":[{"tool_use_id":"t1",
            "type":"tool_result","content":"rewritten-by-sdk","is_error":false}]},
            "session_id":"s","timestamp":"2026-11-25T04:26:47.878Z"}"#;
        let message = Message::from_json(line).unwrap();
        assert_eq!(message.role(), Role::User);
        assert_eq!(message.content(), "rewritten-by-sdk");
        assert_eq!(
            message.timestamp().to_rfc3339(),
            "2026-11-25T04:26:47.878+00:00"
        );
    }

    #[test]
    fn control_lines_are_not_messages() {
        let err = Message::from_json(r#"{"type":"control_cancel_request","request_id":"x"}"#)
            .unwrap_err();
        assert!(err.is_protocol());
        assert!(Message::from_json("not json").unwrap_err().is_protocol());
    }
}
