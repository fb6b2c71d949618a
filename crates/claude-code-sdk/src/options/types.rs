//! The value types of [`ClaudeCodeOptions`](super::ClaudeCodeOptions): permission
//! modes, MCP servers, agents, output formats, environment inheritance.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tools::SdkMcpServer;

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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn as_str(self) -> &'static str {
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

/// A custom subagent (`--agents`), in the CLI's shape: what the official SDKs'
/// `AgentDefinition` has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AgentDefinition {
    /// When the main agent should use it.
    pub description: String,
    /// Its system prompt.
    pub prompt: String,
    /// The tools it may use (all when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Tools it may not use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_tools: Option<Vec<String>>,
    /// Its model (`sonnet`, `opus`, `haiku`, `inherit`, or a full name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Skills it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<String>>,
    /// Its MCP servers: names of configured servers, or `{name: config}` objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<Value>>,
    /// A first prompt it starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_prompt: Option<String>,
    /// Its limit on model round trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Whether it runs in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// Its effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// Its permission mode (the CLI's: `default`, `acceptEdits`, `plan`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Where it keeps memory (`user`, `project`, `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Any other field of the CLI's agent definitions, as JSON.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl AgentDefinition {
    /// An agent with a description and a prompt.
    pub fn new(description: impl Into<String>, prompt: impl Into<String>) -> Self {
        AgentDefinition {
            description: description.into(),
            prompt: prompt.into(),
            tools: None,
            disallowed_tools: None,
            model: None,
            skills: None,
            mcp_servers: None,
            initial_prompt: None,
            max_turns: None,
            background: None,
            effort: None,
            permission_mode: None,
            memory: None,
            extra: serde_json::Map::new(),
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

    /// Denies it tools.
    #[must_use]
    pub fn disallowed_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.disallowed_tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Sets its model.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Gives it skills.
    #[must_use]
    pub fn skills<I, S>(mut self, skills: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.skills = Some(skills.into_iter().map(Into::into).collect());
        self
    }

    /// Limits its model round trips.
    #[must_use]
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = Some(turns);
        self
    }

    /// Sets its effort.
    #[must_use]
    pub fn effort(mut self, effort: Effort) -> Self {
        self.effort = Some(effort);
        self
    }

    /// Sets its permission mode (the CLI's name).
    #[must_use]
    pub fn permission_mode(mut self, mode: impl Into<String>) -> Self {
        self.permission_mode = Some(mode.into());
        self
    }

    /// Runs it in the background.
    #[must_use]
    pub fn background(mut self, yes: bool) -> Self {
        self.background = Some(yes);
        self
    }

    /// Gives it a first prompt.
    #[must_use]
    pub fn initial_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.initial_prompt = Some(prompt.into());
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
/// Variables set with [`env`](crate::ClaudeCodeOptionsBuilder::env) and the SDK's own
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

/// Whether a tool (a name or an `allowed_tools` pattern) may change something: the
/// built-in tools in [`SIDE_EFFECT_TOOLS`], and every MCP tool (`mcp__*`), since the
/// SDK cannot know what those do. One definition for the read-only guard, the retry
/// and the cache.
pub(crate) fn has_side_effects(name: &str) -> bool {
    let base = name.split('(').next().unwrap_or(name).trim();
    SIDE_EFFECT_TOOLS.contains(&base) || base.starts_with("mcp__")
}
