//! The control requests a [`ClaudeClient`](crate::ClaudeClient) sends, and typed answers to them a [`ClaudeClient`](crate::ClaudeClient) sends
//! while its CLI runs: MCP server status and changes, context usage, file rewinds,
//! the commands, models, agents and account the CLI reported at start.
//!
//! Every type here reads the CLI's JSON tolerantly: a field a newer CLI adds is kept
//! in the type's `extra` map (nothing is lost, nothing fails), and a field an older
//! CLI leaves out takes its default.
//!
//! | client method | control request | answer |
//! |---|---|---|
//! | [`mcp_status`](crate::ClaudeClient::mcp_status) | `mcp_status` | [`McpServerStatus`] per server |
//! | [`reconnect_mcp_server`](crate::ClaudeClient::reconnect_mcp_server) | `mcp_reconnect` | nothing |
//! | [`toggle_mcp_server`](crate::ClaudeClient::toggle_mcp_server) | `mcp_toggle` | nothing |
//! | [`set_mcp_servers`](crate::ClaudeClient::set_mcp_servers) | `mcp_set_servers` | [`McpSetServersResult`] |
//! | [`context_usage`](crate::ClaudeClient::context_usage) | `get_context_usage` | [`ContextUsage`] |
//! | [`rewind_files`](crate::ClaudeClient::rewind_files), [`rewind_files_dry_run`](crate::ClaudeClient::rewind_files_dry_run) | `rewind_files` | [`RewindFilesResult`] |
//! | [`set_max_thinking_tokens`](crate::ClaudeClient::set_max_thinking_tokens) | `set_max_thinking_tokens` | nothing |
//! | [`stop_task`](crate::ClaudeClient::stop_task) | `stop_task` | nothing |
//! | [`background_tasks`](crate::ClaudeClient::background_tasks) | `background_tasks` | whether a task was moved |
//! | [`apply_flag_settings`](crate::ClaudeClient::apply_flag_settings) | `apply_flag_settings` | nothing |
//! | [`list_models`](crate::ClaudeClient::list_models) | `list_models` (CLI 2.1.331+) | [`ModelInfo`] per model |
//! | [`supported_commands`](crate::ClaudeClient::supported_commands), [`supported_agents`](crate::ClaudeClient::supported_agents), [`account_info`](crate::ClaudeClient::account_info) | none: the `initialize` answer | [`SlashCommand`], [`AgentInfo`], [`AccountInfo`] |
//! | [`reload_plugins`](crate::ClaudeClient::reload_plugins) | `reload_plugins` | [`ReloadedPlugins`] |
//! | [`reload_skills`](crate::ClaudeClient::reload_skills) | `reload_skills` | [`SlashCommand`] per skill |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads a control answer as `T`.
///
/// # Errors
///
/// [`Protocol`](crate::ErrorKind::Protocol) when the answer does not have the shape
/// of `T` (a required field missing or of another type).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(subtype: &str, answer: Value) -> Result<T> {
    let text = answer.to_string();
    serde_json::from_value(answer).map_err(|e| {
        Error::protocol(format!(
            "the CLI's answer to {subtype} has an unexpected shape"
        ))
        .with_source(e)
        .with_raw_line(text)
    })
}

/// The control requests the client sends, typed: their wire shape (`subtype` and
/// fields, as the CLI and the official SDKs spell them) is written here once.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "subtype", rename_all = "snake_case")]
pub(crate) enum Request<'a> {
    McpStatus,
    McpReconnect {
        #[serde(rename = "serverName")]
        server_name: &'a str,
    },
    McpToggle {
        #[serde(rename = "serverName")]
        server_name: &'a str,
        enabled: bool,
    },
    McpSetServers {
        servers: Map<String, Value>,
    },
    GetContextUsage,
    RewindFiles {
        user_message_id: &'a str,
        dry_run: bool,
    },
    SetMaxThinkingTokens {
        /// `null` goes back to the session's budget.
        max_thinking_tokens: Option<u32>,
        /// Left out: the display stays as it is.
        #[serde(skip_serializing_if = "Option::is_none")]
        thinking_display: Option<ThinkingDisplay>,
    },
    StopTask {
        task_id: &'a str,
    },
    BackgroundTasks {
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_use_id: Option<&'a str>,
    },
    ApplyFlagSettings {
        settings: &'a Value,
    },
    ListModels,
    ReloadPlugins,
    ReloadSkills,
}

impl Request<'_> {
    /// The request as the JSON object of a `control_request` line.
    pub(crate) fn to_value(&self) -> Value {
        // Serializing these types cannot fail (string keys, no maps with other keys).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The answer to `background_tasks`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BackgroundTasksAnswer {
    /// Absent on CLIs that do not say: then something was moved.
    #[serde(default = "yes")]
    pub(crate) backgrounded: bool,
}

fn yes() -> bool {
    true
}

/// How an MCP server's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum McpConnection {
    /// Connected; its tools are available.
    Connected,
    /// The connection failed (see [`McpServerStatus::error`]).
    Failed,
    /// The server needs an OAuth login.
    NeedsAuth,
    /// Still connecting.
    Pending,
    /// Turned off (see [`ClaudeClient::toggle_mcp_server`](crate::ClaudeClient::toggle_mcp_server)).
    Disabled,
    /// A state this SDK does not know yet.
    #[serde(other)]
    Unknown,
}

/// One MCP server as the CLI sees it (an element of the `mcp_status` answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerStatus {
    /// The server's name.
    pub name: String,
    /// Its connection.
    pub status: McpConnection,
    /// What the server said about itself (`name`, `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where it was configured (`project`, `user`, `local`, `dynamic`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Its tools, when the CLI lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<McpToolInfo>,
    /// Fields this SDK does not type (`config`, `source`, ...), as the CLI sent them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool of an MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct McpToolInfo {
    /// The tool's name on its server.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fields this SDK does not type (`annotations`, `_meta`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer to `mcp_status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct McpStatusAnswer {
    #[serde(default)]
    pub(crate) mcp_servers: Vec<McpServerStatus>,
}

/// What [`set_mcp_servers`](crate::ClaudeClient::set_mcp_servers) changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct McpSetServersResult {
    /// Servers added.
    #[serde(default)]
    pub added: Vec<String>,
    /// Servers removed (disconnected).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Servers that could not connect, with why.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
    /// Fields this SDK does not type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How the context window is used (the answer to `get_context_usage`, what `/context`
/// shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ContextUsage {
    /// Tokens in use.
    pub total_tokens: u64,
    /// The window's size as the CLI counts it.
    #[serde(default)]
    pub max_tokens: u64,
    /// Percent of the window in use.
    #[serde(default)]
    pub percentage: f64,
    /// The model the usage is counted for.
    #[serde(default)]
    pub model: String,
    /// Tokens by category (system prompt, tools, messages, free space, ...).
    #[serde(default)]
    pub categories: Vec<ContextCategory>,
    /// Whether the conversation is compacted automatically when the window fills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_auto_compact_enabled: Option<bool>,
    /// Fields this SDK does not type (`gridRows`, `memoryFiles`, `mcpTools`,
    /// `messageBreakdown`, ...), as the CLI sent them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One category of [`ContextUsage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ContextCategory {
    /// Its display name ("System prompt", "Messages", ...).
    pub name: String,
    /// Tokens in it.
    #[serde(default)]
    pub tokens: u64,
    /// A stable id (`system_prompt`, `messages`, `free_space`, ...), on newer CLIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Fields this SDK does not type (`color`, `kind`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a rewind of files did, or would do (the answer to `rewind_files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RewindFilesResult {
    /// Whether the files can be (or were) put back.
    pub can_rewind: bool,
    /// Why not, when they cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The files that would change (a dry run; the answer to a real rewind leaves
    /// them out, measured on 2.1.332: preview first to know them).
    #[serde(default)]
    pub files_changed: Vec<String>,
    /// Lines the rewind would add back (a dry run).
    #[serde(default)]
    pub insertions: u64,
    /// Lines the rewind would take out (a dry run).
    #[serde(default)]
    pub deletions: u64,
    /// Tracked files left alone because a link was found at their path (a real
    /// rewind only; never set by a dry run).
    #[serde(default)]
    pub skipped_links: u64,
    /// Fields this SDK does not type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A slash command or skill the CLI offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SlashCommand {
    /// Its name, without the slash.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// A hint at its arguments.
    #[serde(default)]
    pub argument_hint: String,
    /// Fields this SDK does not type (`aliases`, `builtin`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A model the CLI can use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ModelInfo {
    /// What to pass as `model` (an alias or a full name).
    pub value: String,
    /// Its display name.
    #[serde(default)]
    pub display_name: String,
    /// A description.
    #[serde(default)]
    pub description: String,
    /// Fields this SDK does not type (`supportsEffort`, `supportedEffortLevels`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A subagent the CLI can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentInfo {
    /// Its name (the `subagent_type` of a `Task` tool use).
    pub name: String,
    /// When it is used.
    #[serde(default)]
    pub description: String,
    /// Its model, when it has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Fields this SDK does not type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The account the CLI runs under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AccountInfo {
    /// The account's email, for a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Its organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Its subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_type: Option<String>,
    /// Where the token came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_source: Option<String>,
    /// Where the API key came from (`ANTHROPIC_API_KEY`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_source: Option<String>,
    /// The API provider (`firstParty`, `bedrock`, `vertex`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_provider: Option<String>,
    /// Fields this SDK does not type.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What [`reload_plugins`](crate::ClaudeClient::reload_plugins) loaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReloadedPlugins {
    /// The commands and skills now available.
    #[serde(default)]
    pub commands: Vec<SlashCommand>,
    /// The agents now available.
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
    /// The plugins loaded (`name`, `path`, ...).
    #[serde(default)]
    pub plugins: Vec<Value>,
    /// The MCP servers now configured.
    #[serde(default, rename = "mcpServers")]
    pub mcp_servers: Vec<McpServerStatus>,
    /// How many plugins failed to load.
    #[serde(default)]
    pub error_count: u64,
    /// Fields this SDK does not type (`held`, `cache_impact`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer to `reload_skills`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ReloadSkillsAnswer {
    #[serde(default)]
    pub(crate) skills: Vec<SlashCommand>,
}

/// The answer to `list_models`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ListModelsAnswer {
    #[serde(default)]
    pub(crate) models: Vec<ModelInfo>,
}

/// How thinking is shown in the messages (`--thinking-display`, or mid-session with
/// [`set_max_thinking_tokens`](crate::ClaudeClient::set_max_thinking_tokens)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ThinkingDisplay {
    /// A summary of the thinking.
    Summarized,
    /// No thinking text.
    Omitted,
    /// One short title per stretch of thinking (the API takes it only from sessions
    /// Anthropic hosts; elsewhere the CLI refuses it).
    Highlights,
}

impl ThinkingDisplay {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ThinkingDisplay::Summarized => "summarized",
            ThinkingDisplay::Omitted => "omitted",
            ThinkingDisplay::Highlights => "highlights",
        }
    }
}

/// Lists out of the `initialize` answer, typed; entries that do not parse are
/// skipped (a newer CLI's entry of another shape must not hide the others).
pub(crate) fn typed_list<T: serde::de::DeserializeOwned>(raw: &Value, key: &str) -> Vec<T> {
    raw.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| serde_json::from_value(item.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Answers in the shapes CLI 2.1.332 sends (written after its answers to the
    /// tests in `tests/client.rs`, trimmed), with fields no CLI sends yet added, to
    /// prove they are kept.
    #[test]
    fn answers_parse_and_keep_unknown_fields() {
        let status: McpStatusAnswer = parse(
            "mcp_status",
            json!({"mcpServers": [
                {"name": "mem", "status": "failed", "error": "Connection closed", "scope": "dynamic",
                 "config": {"type": "stdio", "command": "false"}, "futureField": 7},
                {"name": "x", "status": "warming-up"}
            ]}),
        )
        .unwrap();
        assert_eq!(status.mcp_servers[0].status, McpConnection::Failed);
        assert_eq!(status.mcp_servers[0].extra["futureField"], 7);
        assert_eq!(status.mcp_servers[0].extra["config"]["command"], "false");
        assert_eq!(status.mcp_servers[1].status, McpConnection::Unknown);

        let rewind: RewindFilesResult = parse(
            "rewind_files",
            json!({"canRewind": true, "filesChanged": ["/tmp/a.txt"], "insertions": 1, "deletions": 2}),
        )
        .unwrap();
        assert!(rewind.can_rewind);
        assert_eq!(rewind.files_changed, ["/tmp/a.txt"]);
        assert_eq!(
            (rewind.insertions, rewind.deletions, rewind.skipped_links),
            (1, 2, 0)
        );

        let refused: RewindFilesResult = parse(
            "rewind_files",
            json!({"canRewind": false, "error": "No file checkpoint found for this message."}),
        )
        .unwrap();
        assert!(!refused.can_rewind && refused.files_changed.is_empty());

        let usage: ContextUsage = parse(
            "get_context_usage",
            json!({"categories": [{"name": "Messages", "tokens": 12, "color": "x", "kind": "used"}],
                   "totalTokens": 12, "maxTokens": 200000, "rawMaxTokens": 200000, "percentage": 0.006,
                   "gridRows": [], "model": "claude-sonnet-4-5", "memoryFiles": [], "mcpTools": [],
                   "agents": [], "isAutoCompactEnabled": true}),
        )
        .unwrap();
        assert_eq!(usage.total_tokens, 12);
        assert_eq!(usage.categories[0].extra["kind"], "used");
        assert!(usage.extra.contains_key("gridRows"));

        // A wrong shape is a protocol error that carries the answer.
        let err =
            parse::<ContextUsage>("get_context_usage", json!({"totalTokens": "many"})).unwrap_err();
        assert!(err.is_protocol(), "{err:?}");

        let set: McpSetServersResult = parse(
            "mcp_set_servers",
            json!({"added": ["a"], "removed": [], "errors": {"b": "spawn failed"}}),
        )
        .unwrap();
        assert_eq!(set.errors["b"], "spawn failed");

        let commands: Vec<SlashCommand> = typed_list(
            &json!({"commands": [{"name": "review", "description": "Review", "argumentHint": ""}, 3]}),
            "commands",
        );
        assert_eq!(commands.len(), 1, "an entry of another shape is skipped");
    }

    /// Each request's frame, field by field as the CLI reads it (camelCase
    /// `serverName` for MCP requests, snake_case elsewhere; optional fields left out).
    #[test]
    fn requests_have_the_clis_shape() {
        let settings = json!({"model": null});
        let cases = [
            (Request::McpStatus, json!({"subtype": "mcp_status"})),
            (
                Request::McpReconnect { server_name: "fs" },
                json!({"subtype": "mcp_reconnect", "serverName": "fs"}),
            ),
            (
                Request::McpToggle {
                    server_name: "fs",
                    enabled: false,
                },
                json!({"subtype": "mcp_toggle", "serverName": "fs", "enabled": false}),
            ),
            (
                Request::McpSetServers {
                    servers: Map::new(),
                },
                json!({"subtype": "mcp_set_servers", "servers": {}}),
            ),
            (
                Request::GetContextUsage,
                json!({"subtype": "get_context_usage"}),
            ),
            (
                Request::RewindFiles {
                    user_message_id: "u1",
                    dry_run: true,
                },
                json!({"subtype": "rewind_files", "user_message_id": "u1", "dry_run": true}),
            ),
            (
                Request::SetMaxThinkingTokens {
                    max_thinking_tokens: None,
                    thinking_display: None,
                },
                json!({"subtype": "set_max_thinking_tokens", "max_thinking_tokens": null}),
            ),
            (
                Request::SetMaxThinkingTokens {
                    max_thinking_tokens: Some(1024),
                    thinking_display: Some(ThinkingDisplay::Omitted),
                },
                json!({"subtype": "set_max_thinking_tokens", "max_thinking_tokens": 1024,
                       "thinking_display": "omitted"}),
            ),
            (
                Request::StopTask { task_id: "t1" },
                json!({"subtype": "stop_task", "task_id": "t1"}),
            ),
            (
                Request::BackgroundTasks { tool_use_id: None },
                json!({"subtype": "background_tasks"}),
            ),
            (
                Request::ApplyFlagSettings {
                    settings: &settings,
                },
                json!({"subtype": "apply_flag_settings", "settings": {"model": null}}),
            ),
            (Request::ListModels, json!({"subtype": "list_models"})),
            (Request::ReloadPlugins, json!({"subtype": "reload_plugins"})),
            (Request::ReloadSkills, json!({"subtype": "reload_skills"})),
        ];
        for (request, frame) in cases {
            assert_eq!(request.to_value(), frame);
        }
        let answer: BackgroundTasksAnswer = parse("background_tasks", json!({})).unwrap();
        assert!(answer.backgrounded);
        let answer: BackgroundTasksAnswer =
            parse("background_tasks", json!({"backgrounded": false})).unwrap();
        assert!(!answer.backgrounded);
    }
}
