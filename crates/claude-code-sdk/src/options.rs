//! [`ClaudeCodeOptions`]: how a run is configured, and [`PermissionMode`].
//!
//! ```
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, PermissionMode};
//!
//! let options = ClaudeCodeOptions::builder()
//!     .max_turns(3)
//!     .system_prompt("You are a web development expert")
//!     .allowed_tools(["Read", "Grep"])
//!     .permission_mode(PermissionMode::AskForEdits)
//!     .model("claude-sonnet-4-5")
//!     .timeout(Duration::from_secs(300))
//!     .build()?;
//! assert_eq!(options.max_turns, Some(3));
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! `build()` validates: a working directory that does not exist, a fallback model
//! equal to the model, an extra flag in a form the CLI cannot take, a session id that
//! is not a UUID, ... each fail with an [`InvalidOptions`](crate::ErrorKind::InvalidOptions)
//! error that says what to change.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{
    HookCallback, HookContext, HookError, HookEvent, HookInput, HookMatcher, HookOutput,
    HookRegistration,
};
use crate::permission::{CanUseTool, PermissionDecision, ToolPermissionContext};
use crate::tools::SdkMcpServer;
use crate::transport::discovery::CliVersion;

/// The default limit on one line of CLI output: 256 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024 * 1024;

/// Read-only built-in tools: the only ones [`PermissionMode::ReadOnly`] exposes.
pub const READ_ONLY_TOOLS: &[&str] = &["Read", "Grep", "Glob"];

/// Tools that change files or run commands. Used to decide what a read-only run may
/// not have and what makes a run unsafe to retry or cache.
pub const SIDE_EFFECT_TOOLS: &[&str] = &[
    "Bash",
    "Write",
    "Edit",
    "MultiEdit",
    "NotebookEdit",
    "PowerShell",
    "KillShell",
    "TaskStop",
];

/// How tool uses are approved.
///
/// The first four are the Python SDK's modes; the SDK defines what each guarantees and
/// enforces it with CLI flags. The rest are the CLI's own modes, passed through.
///
/// | mode | what the model can do without asking | what needs asking | with nobody to ask |
/// |---|---|---|---|
/// | [`AskForEdits`](PermissionMode::AskForEdits) | read files in the project | any file change, any command | denied and reported |
/// | [`AcceptEdits`](PermissionMode::AcceptEdits) | read and edit files in the project, including the simple file-writing shell commands the CLI counts as edits (`echo > file`, `mkdir`, `touch`) | other commands | denied and reported |
/// | [`ReadOnly`](PermissionMode::ReadOnly) | `Read`, `Grep`, `Glob` in the project; no other tool exists | reads outside the project | denied and reported |
/// | [`Strict`](PermissionMode::Strict) | only tools named in `allowed_tools` | every other tool use, reads included | denied and reported |
///
/// "Nobody to ask" means no permission callback is set: the CLI is run so that
/// anything that would prompt is denied, and the denial is listed in the result's
/// `permission_denials` (the run then ends with a [`PermissionDenied`](crate::ErrorKind::PermissionDenied)
/// error after its result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PermissionMode {
    /// Reads are allowed; every file change or command needs approval.
    #[serde(rename = "askForEdits")]
    AskForEdits,
    /// File edits in the project are approved automatically (including simple
    /// file-writing shell commands the CLI counts as edits); other commands need approval.
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    /// Only the read tools exist (`Read`, `Grep`, `Glob`): nothing can change a file.
    #[serde(rename = "readOnly")]
    ReadOnly,
    /// Every tool use needs approval, reads included, unless named in `allowed_tools`.
    #[serde(rename = "strict")]
    Strict,
    /// The CLI's default mode.
    #[serde(rename = "default")]
    Default,
    /// The CLI's plan mode: the model plans and does not act.
    #[serde(rename = "plan")]
    Plan,
    /// The CLI's bypass mode: nothing is checked. As root, the CLI refuses it unless
    /// `IS_SANDBOX=1`.
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
    /// The CLI's don't-ask mode: anything not pre-approved is denied.
    #[serde(rename = "dontAsk")]
    DontAsk,
    /// The CLI's auto mode: a classifier approves.
    #[serde(rename = "auto")]
    Auto,
}

impl PermissionMode {
    /// All modes.
    pub const ALL: [PermissionMode; 9] = [
        PermissionMode::AskForEdits,
        PermissionMode::AcceptEdits,
        PermissionMode::ReadOnly,
        PermissionMode::Strict,
        PermissionMode::Default,
        PermissionMode::Plan,
        PermissionMode::BypassPermissions,
        PermissionMode::DontAsk,
        PermissionMode::Auto,
    ];

    /// The mode's name: `askForEdits`, `acceptEdits`, `readOnly`, `strict`, `default`,
    /// `plan`, `bypassPermissions`, `dontAsk`, `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::AskForEdits => "askForEdits",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::ReadOnly => "readOnly",
            PermissionMode::Strict => "strict",
            PermissionMode::Default => "default",
            PermissionMode::Plan => "plan",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::DontAsk => "dontAsk",
            PermissionMode::Auto => "auto",
        }
    }

    /// The CLI's `--permission-mode` value this mode runs under.
    pub fn cli_mode(self) -> &'static str {
        match self {
            PermissionMode::AskForEdits | PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::ReadOnly | PermissionMode::Strict | PermissionMode::DontAsk => {
                "dontAsk"
            }
            PermissionMode::Plan => "plan",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::Auto => "auto",
        }
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PermissionMode {
    type Err = Error;

    /// Parses a mode name; the Python SDK's snake_case spellings
    /// (`ask_for_edits`, `read_only`, ...) are accepted too.
    fn from_str(s: &str) -> Result<Self> {
        let folded: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        PermissionMode::ALL
            .into_iter()
            .find(|m| m.as_str().to_lowercase() == folded)
            .ok_or_else(|| {
                Error::invalid_options(format!(
                    "unknown permission mode {s:?}; expected one of: {}",
                    PermissionMode::ALL.map(|m| m.as_str()).join(", ")
                ))
            })
    }
}

/// How much effort the model spends (`--effort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Effort {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Extra high.
    #[serde(rename = "xhigh")]
    XHigh,
    /// Maximum.
    Max,
}

impl Effort {
    fn as_str(self) -> &'static str {
        match self {
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::XHigh => "xhigh",
            Effort::Max => "max",
        }
    }
}

/// Which settings files the CLI loads (`--setting-sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SettingSource {
    /// `~/.claude/settings.json`.
    User,
    /// `.claude/settings.json` in the project.
    Project,
    /// `.claude/settings.local.json` in the project.
    Local,
}

impl SettingSource {
    fn as_str(self) -> &'static str {
        match self {
            SettingSource::User => "user",
            SettingSource::Project => "project",
            SettingSource::Local => "local",
        }
    }
}

/// The shape of the final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// Free text (the default).
    Text,
    /// Structured output: the final answer is a JSON value valid against this schema,
    /// found in [`ResultMessage::structured_output`](crate::ResultMessage::structured_output).
    JsonSchema {
        /// A JSON Schema object.
        schema: Value,
    },
}

/// An MCP server the CLI connects to (`--mcp-config`): an external one, or an
/// in-process [`SdkMcpServer`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum McpServerConfig {
    /// A server the CLI starts as a child process.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
        /// Its environment.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// A server reached over server-sent events.
    Sse {
        /// The URL.
        url: String,
        /// HTTP headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// A server reached over streamable HTTP.
    Http {
        /// The URL.
        url: String,
        /// HTTP headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// Tools served from this process (see [`crate::tools`]).
    Sdk(#[serde(serialize_with = "sdk_server_entry")] SdkMcpServer),
}

fn sdk_server_entry<S: serde::Serializer>(
    server: &SdkMcpServer,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("name", server.name())?;
    map.end()
}

impl McpServerConfig {
    /// A stdio server: `McpServerConfig::stdio("npx", ["-y", "@modelcontextprotocol/server-memory"])`.
    pub fn stdio<I, S>(command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        McpServerConfig::Stdio {
            command: command.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
        }
    }

    /// An HTTP server.
    pub fn http(url: impl Into<String>) -> Self {
        McpServerConfig::Http {
            url: url.into(),
            headers: BTreeMap::new(),
        }
    }

    /// An SSE server.
    pub fn sse(url: impl Into<String>) -> Self {
        McpServerConfig::Sse {
            url: url.into(),
            headers: BTreeMap::new(),
        }
    }
}

/// A custom subagent (`--agents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentDefinition {
    /// When the main agent should use it.
    pub description: String,
    /// Its system prompt.
    pub prompt: String,
    /// The tools it may use (all when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Its model (`sonnet`, `opus`, `haiku`, `inherit`, or a full name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl AgentDefinition {
    /// An agent with a description and a prompt.
    pub fn new(description: impl Into<String>, prompt: impl Into<String>) -> Self {
        AgentDefinition {
            description: description.into(),
            prompt: prompt.into(),
            tools: None,
            model: None,
        }
    }

    /// Restricts its tools.
    #[must_use]
    pub fn tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Sets its model.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
}

/// Variables of this process that a CLI needs to run and reach its model: the
/// search path and home, locale and time zone, temporary directory, proxies and
/// certificates, the Anthropic API's credentials and endpoint, and
/// `CLAUDE_CONFIG_DIR`. [`InheritEnv::essentials`] passes exactly these.
///
/// Not included (name them yourself when the CLI needs them): the credentials of
/// Amazon Bedrock (`CLAUDE_CODE_USE_BEDROCK`, `AWS_*`) and Google Vertex AI
/// (`CLAUDE_CODE_USE_VERTEX`, `ANTHROPIC_VERTEX_PROJECT_ID`, `CLOUD_ML_REGION`,
/// `GOOGLE_APPLICATION_CREDENTIALS`), and any other `CLAUDE_CODE_*` setting.
pub const ESSENTIAL_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "ANTHROPIC_DEFAULT_*",
    "CLAUDE_CONFIG_DIR",
];

/// Which variables of this process's environment the CLI inherits.
///
/// The CLI passes its whole environment on to the tools it runs, so whatever the CLI
/// inherits, a `Bash` command of the model can print. A service that keeps secrets in
/// its environment (tokens, database URLs) should pass an allow-list:
///
/// ```
/// use claude_code_sdk::{ClaudeCodeOptions, InheritEnv};
///
/// let options = ClaudeCodeOptions::builder()
///     .inherit_env(InheritEnv::essentials().and(["CLAUDE_CODE_USE_BEDROCK", "AWS_*"]))
///     .build()?;
/// assert!(options.inherit_env.allows("LC_ALL"));
/// assert!(!options.inherit_env.allows("DATABASE_URL"));
/// # Ok::<(), claude_code_sdk::Error>(())
/// ```
///
/// Variables set with [`env`](ClaudeCodeOptionsBuilder::env) and the SDK's own
/// (`CLAUDE_CODE_ENTRYPOINT`, the run marker) are always passed; `env_remove` and
/// `CLAUDECODE` are never inherited.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
#[non_exhaustive]
pub enum InheritEnv {
    /// Every variable (the default, as in the official SDKs).
    #[default]
    All,
    /// Only the variables matching these patterns: a name, or a prefix ending in `*`
    /// (`LC_*`).
    Only(Vec<String>),
}

impl InheritEnv {
    /// Only the variables matching `patterns` (names, or prefixes ending in `*`).
    pub fn only<I, S>(patterns: I) -> InheritEnv
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        InheritEnv::Only(patterns.into_iter().map(Into::into).collect())
    }

    /// Only what a CLI needs: [`ESSENTIAL_ENV`].
    pub fn essentials() -> InheritEnv {
        InheritEnv::only(ESSENTIAL_ENV.iter().copied())
    }

    /// These patterns too (no change for [`InheritEnv::All`]).
    #[must_use]
    pub fn and<I, S>(self, patterns: I) -> InheritEnv
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match self {
            InheritEnv::All => InheritEnv::All,
            InheritEnv::Only(mut list) => {
                list.extend(patterns.into_iter().map(Into::into));
                InheritEnv::Only(list)
            }
        }
    }

    /// Whether a variable of this name is inherited.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            InheritEnv::All => true,
            InheritEnv::Only(patterns) => patterns.iter().any(|p| env_pattern_matches(p, name)),
        }
    }
}

/// Whether `pattern` (a name, or a prefix ending in `*`) matches the variable `name`.
pub(crate) fn env_pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A callback that receives every line the CLI writes on stderr.
pub type StderrCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything that configures a run. Build it with [`ClaudeCodeOptions::builder`];
/// `ClaudeCodeOptions::default()` is a valid configuration too.
///
/// Fields are public to read. Options changed after `build()` are validated again
/// when a run starts.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ClaudeCodeOptions {
    /// Maximum model round trips in a run (`--max-turns`).
    pub max_turns: Option<u32>,
    /// Replaces Claude Code's system prompt (`--system-prompt`). When `None`, the CLI's
    /// own system prompt is used.
    pub system_prompt: Option<String>,
    /// Appended to the system prompt (`--append-system-prompt`).
    pub append_system_prompt: Option<String>,
    /// The working directory of the CLI and its tools. Defaults to the current directory.
    pub cwd: Option<PathBuf>,
    /// Tools that run without asking for permission (`--allowedTools`). Patterns like
    /// `Bash(git *)` work. This does not add tools: see [`tools`](Self::tools).
    pub allowed_tools: Vec<String>,
    /// Tools that are always denied (`--disallowedTools`).
    pub disallowed_tools: Vec<String>,
    /// The built-in tools that exist (`--tools`). `None` keeps the CLI's default set;
    /// `Some(vec![])` removes all. `Grep` and `Glob` exist only when named here.
    pub tools: Option<Vec<String>>,
    /// How tool uses are approved. `None` is the CLI's default mode.
    pub permission_mode: Option<PermissionMode>,
    /// The model (`--model`): an alias (`sonnet`, `opus`) or a full name.
    pub model: Option<String>,
    /// The model to fall back to when the main one is overloaded (`--fallback-model`).
    pub fallback_model: Option<String>,
    /// The shape of the final answer. See also [`json_schema`](ClaudeCodeOptionsBuilder::json_schema).
    pub output_format: Option<OutputFormat>,
    /// Turns on the CLI's debug output (`--debug`, on stderr) and logs every wire line
    /// at `debug` level. The SDK always passes `--verbose`, which stream-json needs.
    pub verbose: bool,
    /// A deadline for the whole run, start-up included. On expiry the CLI's process
    /// group is killed and the stream ends with a [`Timeout`](crate::ErrorKind::Timeout) error.
    pub timeout: Option<Duration>,
    /// Continue the most recent conversation in `cwd` (`--continue`).
    pub continue_conversation: bool,
    /// Resume the conversation with this session id (`--resume`).
    pub resume: Option<String>,
    /// With `resume` or `continue_conversation`: continue under a new session id
    /// (`--fork-session`).
    pub fork_session: bool,
    /// Use this session id (a UUID) for a new conversation (`--session-id`).
    pub session_id: Option<String>,
    /// External MCP servers by name.
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    /// Extra environment variables for the CLI.
    pub env: BTreeMap<String, String>,
    /// Variables of this process the CLI must not inherit (`CLAUDECODE` never is).
    pub env_remove: Vec<String>,
    /// Which variables of this process the CLI inherits (all by default). See
    /// [`InheritEnv`].
    pub inherit_env: InheritEnv,
    /// More directories the tools may access (`--add-dir`).
    pub add_dirs: Vec<PathBuf>,
    /// A settings file path or a JSON string (`--settings`).
    pub settings: Option<String>,
    /// Which settings files to load (`--setting-sources`). `None` is the CLI's default
    /// (all); `Some(vec![])` loads none.
    pub setting_sources: Option<Vec<SettingSource>>,
    /// Yield [`StreamEvent`](crate::StreamEvent)s as the model writes
    /// (`--include-partial-messages`).
    pub include_partial_messages: bool,
    /// Stop when the run has cost this much (`--max-budget-usd`).
    pub max_budget_usd: Option<f64>,
    /// How much effort the model spends (`--effort`).
    pub effort: Option<Effort>,
    /// Custom subagents by name (`--agents`).
    pub agents: BTreeMap<String, AgentDefinition>,
    /// The `claude` executable. See [`crate::transport::discovery`] for the search order.
    pub cli_path: Option<PathBuf>,
    /// Flags passed to the CLI as they are: `("name", Some("value"))` becomes
    /// `--name value`, `("name", None)` becomes `--name`.
    pub extra_args: Vec<(String, Option<String>)>,
    /// The longest line of CLI output accepted, in bytes (default
    /// [`DEFAULT_MAX_LINE_BYTES`]). A longer line ends the run with a
    /// [`Protocol`](crate::ErrorKind::Protocol) error.
    pub max_line_bytes: Option<usize>,
    /// How often the CLI retries a failed API call (`CLAUDE_CODE_MAX_RETRIES`). The CLI's
    /// default retries 529 and 401 ten times over about three minutes.
    pub max_api_retries: Option<u32>,
    /// Receives every stderr line of the CLI.
    pub stderr: Option<StderrCallback>,
    /// Decides tool uses the CLI would ask a person about. See [`crate::permission`].
    pub can_use_tool: Option<CanUseTool>,
    /// Hooks, in registration order. See [`crate::hooks`].
    pub hooks: Vec<HookRegistration>,
}

impl fmt::Debug for ClaudeCodeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaudeCodeOptions")
            .field("max_turns", &self.max_turns)
            .field("system_prompt", &self.system_prompt)
            .field("append_system_prompt", &self.append_system_prompt)
            .field("cwd", &self.cwd)
            .field("allowed_tools", &self.allowed_tools)
            .field("disallowed_tools", &self.disallowed_tools)
            .field("tools", &self.tools)
            .field("permission_mode", &self.permission_mode)
            .field("model", &self.model)
            .field("fallback_model", &self.fallback_model)
            .field("output_format", &self.output_format)
            .field("verbose", &self.verbose)
            .field("timeout", &self.timeout)
            .field("continue_conversation", &self.continue_conversation)
            .field("resume", &self.resume)
            .field("fork_session", &self.fork_session)
            .field("session_id", &self.session_id)
            .field("mcp_servers", &self.mcp_servers)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("env_remove", &self.env_remove)
            .field("inherit_env", &self.inherit_env)
            .field("add_dirs", &self.add_dirs)
            .field("settings", &self.settings)
            .field("setting_sources", &self.setting_sources)
            .field("include_partial_messages", &self.include_partial_messages)
            .field("max_budget_usd", &self.max_budget_usd)
            .field("effort", &self.effort)
            .field("agents", &self.agents)
            .field("cli_path", &self.cli_path)
            .field("extra_args", &self.extra_args)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("max_api_retries", &self.max_api_retries)
            .field("stderr", &self.stderr.as_ref().map(|_| "<callback>"))
            .field("can_use_tool", &self.can_use_tool)
            .field(
                "hooks",
                &self
                    .hooks
                    .iter()
                    .map(|h| h.event.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Flags the SDK sets itself; `extra_args` may not set them.
const RESERVED_FLAGS: &[&str] = &[
    "output-format",
    "input-format",
    "verbose",
    "print",
    "p",
    "permission-prompt-tool",
];

impl ClaudeCodeOptions {
    /// A builder with every option unset.
    pub fn builder() -> ClaudeCodeOptionsBuilder {
        ClaudeCodeOptionsBuilder {
            options: ClaudeCodeOptions::default(),
        }
    }

    /// A builder that starts from these options.
    pub fn to_builder(&self) -> ClaudeCodeOptionsBuilder {
        ClaudeCodeOptionsBuilder {
            options: self.clone(),
        }
    }

    /// The effective line limit.
    pub fn line_limit(&self) -> usize {
        self.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES)
    }

    /// Checks the options for mistakes the CLI would report late or not at all.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](crate::ErrorKind::InvalidOptions) naming the option and what to
    /// change; [`PermissionDenied`](crate::ErrorKind::PermissionDenied) for
    /// `bypassPermissions` as root without `IS_SANDBOX=1`.
    pub fn validate(&self) -> Result<()> {
        if self.max_turns == Some(0) {
            return Err(Error::invalid_options("max_turns must be at least 1"));
        }
        if let Some(cwd) = &self.cwd
            && !cwd.is_dir()
        {
            return Err(Error::invalid_options(format!(
                "cwd {} does not exist or is not a directory",
                cwd.display()
            )));
        }
        for dir in &self.add_dirs {
            if !dir.is_dir() {
                return Err(Error::invalid_options(format!(
                    "add_dirs: {} does not exist or is not a directory",
                    dir.display()
                )));
            }
        }
        if let (Some(model), Some(fallback)) = (&self.model, &self.fallback_model)
            && model == fallback
        {
            return Err(Error::invalid_options(format!(
                "fallback_model is the same as model ({model}); choose a different fallback or none"
            )));
        }
        if let Some(timeout) = self.timeout
            && timeout.is_zero()
        {
            return Err(Error::invalid_options("timeout must be longer than zero"));
        }
        if let Some(budget) = self.max_budget_usd
            && !(budget.is_finite() && budget > 0.0)
        {
            return Err(Error::invalid_options(format!(
                "max_budget_usd must be a positive number, not {budget}"
            )));
        }
        if let Some(limit) = self.max_line_bytes
            && limit < 4096
        {
            return Err(Error::invalid_options(format!(
                "max_line_bytes must be at least 4096, not {limit}"
            )));
        }
        if let Some(id) = &self.session_id
            && uuid::Uuid::parse_str(id).is_err()
        {
            return Err(Error::invalid_options(format!(
                "session_id must be a UUID, not {id:?}"
            )));
        }
        if let Some(resume) = &self.resume
            && (resume.trim().is_empty() || resume.starts_with('-') || resume.contains('\0'))
        {
            return Err(Error::invalid_options(format!(
                "resume must be a session id or name, not {resume:?}"
            )));
        }
        if self.fork_session && self.resume.is_none() && !self.continue_conversation {
            return Err(Error::invalid_options(
                "fork_session needs resume or continue_conversation",
            ));
        }
        if let Some(OutputFormat::JsonSchema { schema }) = &self.output_format
            && !schema.is_object()
        {
            return Err(Error::invalid_options(
                "json_schema must be a JSON object (a JSON Schema)",
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(Error::invalid_options(format!(
                    "env: {key:?} is not a valid environment variable"
                )));
            }
        }
        if let InheritEnv::Only(patterns) = &self.inherit_env
            && let Some(bad) = patterns.iter().find(|p| {
                let name = p.strip_suffix('*').unwrap_or(p);
                p.is_empty() || name.contains('=') || name.contains('\0') || name.contains('*')
            })
        {
            return Err(Error::invalid_options(format!(
                "inherit_env: {bad:?} is not a variable name or a prefix ending in `*`"
            )));
        }
        for (name, value) in &self.extra_args {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                return Err(Error::invalid_options(format!(
                    "extra_args: {name:?} is not a flag name; give it without leading dashes \
                     and without a value, e.g. (\"debug-file\", Some(\"/tmp/log\"))"
                )));
            }
            if RESERVED_FLAGS.contains(&name.as_str()) {
                return Err(Error::invalid_options(format!(
                    "extra_args: --{name} is set by the SDK and cannot be overridden"
                )));
            }
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(Error::invalid_options(format!(
                    "extra_args: the value of --{name} contains a NUL byte"
                )));
            }
        }
        for (name, agent) in &self.agents {
            if name.trim().is_empty()
                || agent.description.trim().is_empty()
                || agent.prompt.trim().is_empty()
            {
                return Err(Error::invalid_options(format!(
                    "agents: {name:?} needs a name, a description and a prompt"
                )));
            }
        }
        for name in self.mcp_servers.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::invalid_options(format!(
                    "mcp_servers: {name:?} is not a valid server name (letters, digits, - and _)"
                )));
            }
        }
        if self.permission_mode == Some(PermissionMode::ReadOnly)
            && let Some(tools) = &self.tools
            && let Some(writer) = tools
                .iter()
                .find(|t| !READ_ONLY_TOOLS.contains(&t.as_str()))
        {
            return Err(Error::invalid_options(format!(
                "permission mode readOnly exposes only {}; tools names {writer:?}",
                READ_ONLY_TOOLS.join(", ")
            )));
        }
        if self.permission_mode == Some(PermissionMode::ReadOnly)
            && let Some(tool) = self.allowed_tools.iter().find(|t| has_side_effects(t))
        {
            return Err(Error::invalid_options(format!(
                "permission mode readOnly cannot allow {tool:?}: it may change files or run \
                 commands (MCP tools count, since the SDK cannot know what they do)"
            )));
        }
        if self.permission_mode == Some(PermissionMode::BypassPermissions)
            && nix::unistd::geteuid().is_root()
        {
            let sandbox = self
                .env
                .get("IS_SANDBOX")
                .cloned()
                .or_else(|| std::env::var("IS_SANDBOX").ok());
            if sandbox.as_deref() != Some("1") {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "the CLI refuses bypassPermissions when run as root; set IS_SANDBOX=1 in env \
                     if this machine is a sandbox, or choose another permission mode",
                ));
            }
        }
        Ok(())
    }

    /// A digest (SHA-256, hex) of everything in these options that can change what a
    /// run does or answers: model and prompts, tools and permissions, the working
    /// directory (canonicalized), sessions, MCP servers, agents, structured output,
    /// environment, settings, the CLI, extra flags, and the identity of callbacks,
    /// hooks and in-process tools (two different closures never share a key).
    ///
    /// Left out, because they do not change the answer: `timeout`, `verbose`,
    /// `max_line_bytes`, `max_api_retries` and the stderr callback.
    ///
    /// Used as the pool's options profile and, with the prompt, as the cache key. It is
    /// stable within a build of this crate, not across versions.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.fingerprint_value().to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn fingerprint_value(&self) -> Value {
        let ptr = |p: usize| json!(format!("{p:#x}"));
        let cwd = self.cwd.as_ref().map(|c| {
            c.canonicalize()
                .unwrap_or_else(|_| c.clone())
                .display()
                .to_string()
        });
        let mcp: BTreeMap<&String, Value> = self
            .mcp_servers
            .iter()
            .map(|(name, config)| {
                let value = match config {
                    McpServerConfig::Sdk(server) => {
                        json!({"sdk": server.tool_names(), "identity": ptr(server.identity())})
                    }
                    other => serde_json::to_value(other).unwrap_or(Value::Null),
                };
                (name, value)
            })
            .collect();
        let hooks: Vec<Value> = self
            .hooks
            .iter()
            .map(|h| {
                json!([
                    h.event.as_str(),
                    h.matcher.matcher,
                    ptr(std::sync::Arc::as_ptr(&h.callback.0) as *const () as usize)
                ])
            })
            .collect();
        json!({
            "max_turns": self.max_turns,
            "system_prompt": self.system_prompt,
            "append_system_prompt": self.append_system_prompt,
            "cwd": cwd,
            "allowed_tools": self.allowed_tools,
            "disallowed_tools": self.disallowed_tools,
            "tools": self.tools,
            "permission_mode": self.permission_mode,
            "model": self.model,
            "fallback_model": self.fallback_model,
            "output_format": self.output_format,
            "continue_conversation": self.continue_conversation,
            "resume": self.resume,
            "fork_session": self.fork_session,
            "session_id": self.session_id,
            "mcp_servers": mcp,
            "env": self.env,
            "env_remove": self.env_remove,
            "inherit_env": self.inherit_env,
            "add_dirs": self.add_dirs,
            "settings": self.settings,
            "setting_sources": self.setting_sources,
            "include_partial_messages": self.include_partial_messages,
            "max_budget_usd": self.max_budget_usd,
            "effort": self.effort,
            "agents": self.agents,
            "cli_path": self.cli_path,
            "extra_args": self.extra_args,
            "can_use_tool": self.can_use_tool.as_ref().map(|c| ptr(std::sync::Arc::as_ptr(&c.0) as *const () as usize)),
            "hooks": hooks,
        })
    }

    /// The names this configuration asks for in `tools` and `allowed_tools` (built-in
    /// names only: patterns are reduced to their tool, MCP tools are left out), used to
    /// report names the CLI does not know.
    pub(crate) fn requested_tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tools
            .iter()
            .flatten()
            .chain(&self.allowed_tools)
            .map(|t| t.split('(').next().unwrap_or(t).trim().to_owned())
            .filter(|t| !t.is_empty() && !t.starts_with("mcp__"))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The CLI arguments for these options (after the fixed stream-json flags).
    pub(crate) fn cli_args(&self, version: &CliVersion) -> Result<Vec<OsString>> {
        let mut args: Vec<OsString> = Vec::new();
        // `--name=value` as one argument: a value can never be read as a flag of its
        // own, whatever it starts with (the CLI's `--resume` takes an optional value).
        let mut flag = |name: &str, value: Option<String>| {
            args.push(match value {
                Some(v) => format!("--{name}={v}").into(),
                None => format!("--{name}").into(),
            });
        };
        if let Some(prompt) = &self.system_prompt {
            flag("system-prompt", Some(prompt.clone()));
        }
        if let Some(prompt) = &self.append_system_prompt {
            flag("append-system-prompt", Some(prompt.clone()));
        }
        if let Some(turns) = self.max_turns {
            flag("max-turns", Some(turns.to_string()));
        }
        if let Some(model) = &self.model {
            flag("model", Some(model.clone()));
        }
        if let Some(model) = &self.fallback_model {
            flag("fallback-model", Some(model.clone()));
        }

        let mode = self.permission_mode;
        // Tools: ReadOnly narrows the set to the read tools.
        let tools: Option<Vec<String>> = match mode {
            Some(PermissionMode::ReadOnly) => Some(match &self.tools {
                Some(user) => user.clone(),
                None => READ_ONLY_TOOLS.iter().map(|s| (*s).to_owned()).collect(),
            }),
            _ => self.tools.clone(),
        };
        if let Some(tools) = tools {
            flag("tools", Some(tools.join(",")));
        }
        let allowed: Vec<String> = match mode {
            // ReadOnly runs under dontAsk with the read tools only. They are not
            // pre-approved: the CLI lets them read the project on its own, and a read
            // elsewhere would need asking, which dontAsk denies.
            Some(PermissionMode::ReadOnly) => self
                .allowed_tools
                .iter()
                .filter(|t| !has_side_effects(t))
                .cloned()
                .collect(),
            _ => self.allowed_tools.clone(),
        };
        if !allowed.is_empty() {
            flag("allowedTools", Some(allowed.join(",")));
        }
        let mut disallowed = self.disallowed_tools.clone();
        if mode == Some(PermissionMode::ReadOnly) {
            // Belt and braces: even if a tool set slips through, these stay denied.
            disallowed.extend(SIDE_EFFECT_TOOLS.iter().map(|s| (*s).to_owned()));
        }
        if !disallowed.is_empty() {
            flag("disallowedTools", Some(disallowed.join(",")));
        }
        let has_callback = self.can_use_tool.is_some();
        if let Some(mode) = mode {
            let cli_mode = match mode {
                // With someone to ask, Strict and ReadOnly run under the CLI's default
                // mode: what would need asking (a read outside the project) goes to the
                // callback, and the SDK's guard hook does the rest (Strict asks before
                // every tool use; ReadOnly's tool set has nothing that writes).
                PermissionMode::Strict | PermissionMode::ReadOnly if has_callback => "default",
                other => other.cli_mode(),
            };
            flag("permission-mode", Some(cli_mode.to_owned()));
            // Nobody can be asked (no permission callback): make the CLI deny what
            // would prompt instead of waiting.
            if !has_callback
                && matches!(
                    mode,
                    PermissionMode::AskForEdits
                        | PermissionMode::Strict
                        | PermissionMode::AcceptEdits
                )
                && version.supports_permission_prompts_flag()
            {
                flag("permission-prompts", Some("none".to_owned()));
            }
        }
        if has_callback {
            flag("permission-prompt-tool", Some("stdio".to_owned()));
        }
        if self.continue_conversation {
            flag("continue", None);
        }
        if let Some(id) = &self.resume {
            flag("resume", Some(id.clone()));
        }
        if self.fork_session {
            flag("fork-session", None);
        }
        if let Some(id) = &self.session_id {
            flag("session-id", Some(id.clone()));
        }
        if !self.mcp_servers.is_empty() {
            let config = json!({ "mcpServers": self.mcp_servers });
            flag("mcp-config", Some(config.to_string()));
        }
        for dir in &self.add_dirs {
            flag("add-dir", Some(dir.display().to_string()));
        }
        if let Some(settings) = &self.settings {
            flag("settings", Some(settings.clone()));
        }
        if let Some(sources) = &self.setting_sources {
            let joined: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
            flag("setting-sources", Some(joined.join(",")));
        }
        if self.include_partial_messages {
            flag("include-partial-messages", None);
        }
        if let Some(budget) = self.max_budget_usd {
            flag("max-budget-usd", Some(budget.to_string()));
        }
        if let Some(effort) = self.effort {
            flag("effort", Some(effort.as_str().to_owned()));
        }
        if let Some(OutputFormat::JsonSchema { schema }) = &self.output_format {
            flag("json-schema", Some(schema.to_string()));
        }
        if !self.agents.is_empty() {
            flag(
                "agents",
                Some(serde_json::to_string(&self.agents).unwrap_or_default()),
            );
        }
        if self.verbose {
            flag("debug", None);
        }
        for (name, value) in &self.extra_args {
            flag(name, value.clone());
        }
        Ok(args)
    }
}

/// Whether a tool (a name or an `allowed_tools` pattern) may change something: the
/// built-in tools in [`SIDE_EFFECT_TOOLS`], and every MCP tool (`mcp__*`), since the
/// SDK cannot know what those do. One definition for the read-only guard, the retry
/// and the cache.
pub(crate) fn has_side_effects(name: &str) -> bool {
    let base = name.split('(').next().unwrap_or(name).trim();
    SIDE_EFFECT_TOOLS.contains(&base) || base.starts_with("mcp__")
}

/// Builds [`ClaudeCodeOptions`]; `build()` validates.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone, Debug)]
pub struct ClaudeCodeOptionsBuilder {
    options: ClaudeCodeOptions,
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl ClaudeCodeOptionsBuilder {
    /// Maximum model round trips in a run.
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.options.max_turns = Some(turns);
        self
    }

    /// Replaces Claude Code's system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.options.system_prompt = Some(prompt.into());
        self
    }

    /// Appends to the system prompt.
    pub fn append_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.options.append_system_prompt = Some(prompt.into());
        self
    }

    /// The working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.options.cwd = Some(cwd.into());
        self
    }

    /// Tools that run without asking.
    pub fn allowed_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.allowed_tools = strings(tools);
        self
    }

    /// Tools that are always denied.
    pub fn disallowed_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.disallowed_tools = strings(tools);
        self
    }

    /// The built-in tools that exist (`[]` for none).
    pub fn tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.tools = Some(strings(tools));
        self
    }

    /// How tool uses are approved.
    pub fn permission_mode(mut self, mode: PermissionMode) -> Self {
        self.options.permission_mode = Some(mode);
        self
    }

    /// The model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.options.model = Some(model.into());
        self
    }

    /// The fallback model.
    pub fn fallback_model(mut self, model: impl Into<String>) -> Self {
        self.options.fallback_model = Some(model.into());
        self
    }

    /// The shape of the final answer.
    pub fn output_format(mut self, format: OutputFormat) -> Self {
        self.options.output_format = Some(format);
        self
    }

    /// Structured output: the final answer is a JSON value valid against `schema`, in
    /// [`ResultMessage::structured_output`](crate::ResultMessage::structured_output).
    pub fn json_schema(self, schema: Value) -> Self {
        self.output_format(OutputFormat::JsonSchema { schema })
    }

    /// CLI debug output on stderr, and wire lines logged at `debug` level.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.options.verbose = verbose;
        self
    }

    /// A deadline for the whole run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Continue the most recent conversation in `cwd`.
    pub fn continue_conversation(mut self, yes: bool) -> Self {
        self.options.continue_conversation = yes;
        self
    }

    /// Resume a conversation by session id.
    pub fn resume(mut self, session_id: impl Into<String>) -> Self {
        self.options.resume = Some(session_id.into());
        self
    }

    /// Continue a resumed conversation under a new session id.
    pub fn fork_session(mut self, yes: bool) -> Self {
        self.options.fork_session = yes;
        self
    }

    /// The session id (a UUID) of a new conversation.
    pub fn session_id(mut self, id: impl Into<String>) -> Self {
        self.options.session_id = Some(id.into());
        self
    }

    /// Adds an external MCP server.
    pub fn mcp_server(mut self, name: impl Into<String>, config: McpServerConfig) -> Self {
        self.options.mcp_servers.insert(name.into(), config);
        self
    }

    /// Sets an environment variable for the CLI.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.env.insert(key.into(), value.into());
        self
    }

    /// Sets several environment variables for the CLI.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.options
            .env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Keeps a variable of this process from the CLI's environment, e.g. a parent's
    /// `ANTHROPIC_API_KEY` when the CLI should use its own login.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.options.env_remove.push(key.into());
        self
    }

    /// Which variables of this process the CLI inherits. See [`InheritEnv`].
    pub fn inherit_env(mut self, inherit: InheritEnv) -> Self {
        self.options.inherit_env = inherit;
        self
    }

    /// Another directory the tools may access.
    pub fn add_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.add_dirs.push(dir.into());
        self
    }

    /// A settings file path or JSON string.
    pub fn settings(mut self, settings: impl Into<String>) -> Self {
        self.options.settings = Some(settings.into());
        self
    }

    /// Which settings files to load (`[]` for none).
    pub fn setting_sources<I: IntoIterator<Item = SettingSource>>(mut self, sources: I) -> Self {
        self.options.setting_sources = Some(sources.into_iter().collect());
        self
    }

    /// Yield partial-message stream events.
    pub fn include_partial_messages(mut self, yes: bool) -> Self {
        self.options.include_partial_messages = yes;
        self
    }

    /// Stop at this cost.
    pub fn max_budget_usd(mut self, usd: f64) -> Self {
        self.options.max_budget_usd = Some(usd);
        self
    }

    /// How much effort the model spends.
    pub fn effort(mut self, effort: Effort) -> Self {
        self.options.effort = Some(effort);
        self
    }

    /// Adds a custom subagent.
    pub fn agent(mut self, name: impl Into<String>, agent: AgentDefinition) -> Self {
        self.options.agents.insert(name.into(), agent);
        self
    }

    /// The `claude` executable.
    pub fn cli_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.cli_path = Some(path.into());
        self
    }

    /// A flag passed to the CLI as is: `extra_arg("debug-file", Some("/tmp/log"))`.
    pub fn extra_arg(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.options
            .extra_args
            .push((name.into(), value.map(str::to_owned)));
        self
    }

    /// The longest line of CLI output accepted.
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.options.max_line_bytes = Some(bytes);
        self
    }

    /// How often the CLI retries a failed API call.
    pub fn max_api_retries(mut self, retries: u32) -> Self {
        self.options.max_api_retries = Some(retries);
        self
    }

    /// Receives every stderr line of the CLI.
    pub fn stderr(mut self, callback: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.options.stderr = Some(Arc::new(callback));
        self
    }

    /// Decides tool uses: `|tool_name, input, context| async { PermissionDecision::allow() }`.
    /// See [`crate::permission`].
    pub fn can_use_tool<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(String, Value, ToolPermissionContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = PermissionDecision> + Send + 'static,
    {
        self.options.can_use_tool = Some(CanUseTool::new(callback));
        self
    }

    /// Adds a hook: `|input, tool_use_id, context| async { Ok(HookOutput::default()) }`.
    /// See [`crate::hooks`].
    pub fn hook<F, Fut>(mut self, event: HookEvent, matcher: HookMatcher, callback: F) -> Self
    where
        F: Fn(HookInput, Option<String>, HookContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<HookOutput, HookError>>
            + Send
            + 'static,
    {
        self.options.hooks.push(HookRegistration {
            event,
            matcher,
            callback: HookCallback::new(callback),
        });
        self
    }

    /// Registers an in-process MCP server under its own name. See [`crate::tools`].
    pub fn sdk_mcp_server(mut self, server: SdkMcpServer) -> Self {
        self.options
            .mcp_servers
            .insert(server.name().to_owned(), McpServerConfig::Sdk(server));
        self
    }

    /// Validates and returns the options.
    ///
    /// # Errors
    ///
    /// See [`ClaudeCodeOptions::validate`].
    pub fn build(self) -> Result<ClaudeCodeOptions> {
        self.options.validate()?;
        Ok(self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(options: &ClaudeCodeOptions) -> Vec<String> {
        options
            .cli_args(&CliVersion::new(2, 1, 331))
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn validation_errors_are_clear() {
        let err = ClaudeCodeOptions::builder()
            .cwd("/definitely/not/here")
            .build()
            .unwrap_err();
        assert!(err.is_invalid_options());
        assert!(err.to_string().contains("/definitely/not/here"));

        let err = ClaudeCodeOptions::builder()
            .model("opus")
            .fallback_model("opus")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("fallback_model"));

        for bad in ["--debug", "debug file", "x=y", ""] {
            let err = ClaudeCodeOptions::builder()
                .extra_arg(bad, None)
                .build()
                .unwrap_err();
            assert!(err.is_invalid_options(), "{bad}");
        }
        let err = ClaudeCodeOptions::builder()
            .extra_arg("output-format", Some("text"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("set by the SDK"));

        assert!(
            ClaudeCodeOptions::builder()
                .session_id("nope")
                .build()
                .is_err()
        );
        assert!(
            ClaudeCodeOptions::builder()
                .fork_session(true)
                .build()
                .is_err()
        );
        assert!(
            ClaudeCodeOptions::builder()
                .resume("--debug-file=/tmp/x")
                .build()
                .is_err()
        );
        assert!(ClaudeCodeOptions::builder().max_turns(0).build().is_err());
        assert!(
            ClaudeCodeOptions::builder()
                .permission_mode(PermissionMode::ReadOnly)
                .tools(["Read", "Write"])
                .build()
                .is_err()
        );
        assert!(
            ClaudeCodeOptions::builder()
                .json_schema(json!(3))
                .build()
                .is_err()
        );
    }

    #[test]
    fn flags_for_options() {
        let options = ClaudeCodeOptions::builder()
            .max_turns(3)
            .system_prompt("be brief")
            .allowed_tools(["Read", "Grep"])
            .model("claude-sonnet-4-5")
            .extra_arg("debug-file", Some("/tmp/x"))
            .extra_arg("strict-mcp-config", None)
            .setting_sources([])
            .build()
            .unwrap();
        let a = args(&options);
        let joined = a.join(" ");
        assert!(a.contains(&"--max-turns=3".to_owned()), "{joined}");
        assert!(
            a.contains(&"--system-prompt=be brief".to_owned()),
            "{joined}"
        );
        assert!(
            a.contains(&"--allowedTools=Read,Grep".to_owned()),
            "{joined}"
        );
        assert!(
            a.contains(&"--model=claude-sonnet-4-5".to_owned()),
            "{joined}"
        );
        assert!(a.contains(&"--debug-file=/tmp/x".to_owned()), "{joined}");
        assert!(a.contains(&"--strict-mcp-config".to_owned()));
        assert!(a.contains(&"--setting-sources=".to_owned()));
    }

    #[test]
    fn read_only_exposes_only_read_tools() {
        for writer in ["Bash(ls)", "Write", "mcp__fs__write_file"] {
            let err = ClaudeCodeOptions::builder()
                .permission_mode(PermissionMode::ReadOnly)
                .allowed_tools([writer])
                .build()
                .unwrap_err();
            assert!(err.is_invalid_options(), "{writer}");
        }
        let options = ClaudeCodeOptions::builder()
            .permission_mode(PermissionMode::ReadOnly)
            .allowed_tools(["Grep"])
            .build()
            .unwrap();
        let a = args(&options);
        assert!(a.contains(&"--tools=Read,Grep,Glob".to_owned()), "{a:?}");
        // Only what the caller allowed is pre-approved, and nothing that writes.
        assert!(a.contains(&"--allowedTools=Grep".to_owned()), "{a:?}");
        assert!(a.contains(&"--permission-mode=dontAsk".to_owned()), "{a:?}");
    }

    #[test]
    fn fingerprints_separate_what_changes_the_answer() {
        let a = ClaudeCodeOptions::builder().model("opus").build().unwrap();
        let same = ClaudeCodeOptions::builder()
            .model("opus")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let dir = std::env::temp_dir();
        for other in [
            a.to_builder().model("sonnet").build().unwrap(),
            a.to_builder().cwd(&dir).build().unwrap(),
            a.to_builder().max_turns(2).build().unwrap(),
            a.to_builder().system_prompt("x").build().unwrap(),
            a.to_builder()
                .permission_mode(PermissionMode::ReadOnly)
                .build()
                .unwrap(),
            a.to_builder()
                .json_schema(json!({"type": "object"}))
                .build()
                .unwrap(),
            a.to_builder()
                .can_use_tool(|_, _, _| async { PermissionDecision::allow() })
                .build()
                .unwrap(),
        ] {
            assert_ne!(a.fingerprint(), other.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn permission_modes_parse() {
        for mode in PermissionMode::ALL {
            assert_eq!(mode.as_str().parse::<PermissionMode>().unwrap(), mode);
        }
        assert_eq!(
            "ask_for_edits".parse::<PermissionMode>().unwrap(),
            PermissionMode::AskForEdits
        );
        assert!("sometimes".parse::<PermissionMode>().is_err());
    }
}
