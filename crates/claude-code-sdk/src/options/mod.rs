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
//!
//! # Where things are
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the [`ClaudeCodeOptions`] struct |
//! | `types.rs` | the value types: [`PermissionMode`], [`McpServerConfig`], [`AgentDefinition`], [`InheritEnv`], ... |
//! | `extended.rs` | [`ThinkingConfig`], [`PluginConfig`], [`Skills`], [`SandboxSettings`] |
//! | `builder.rs` | [`ClaudeCodeOptionsBuilder`] |
//! | `validate.rs` | [`ClaudeCodeOptions::validate`] |
//! | `key.rs` | [`ClaudeCodeOptions::fingerprint`], the cache and pool key |
//!
//! The CLI arguments an options value becomes are built next to the process code
//! (`process/argv.rs`), since they depend on the CLI's version. The fingerprint, the
//! arguments and `Debug` each take the struct apart field by field, without `..`: a
//! new option does not compile until each of them says what it does with it.

mod builder;
mod extended;
mod key;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use builder::ClaudeCodeOptionsBuilder;
pub use extended::{PluginConfig, SandboxSettings, Skills, ThinkingConfig};
pub(crate) use key::digest;
pub(crate) use types::has_side_effects;
pub use types::{
    AgentDefinition, DEFAULT_MAX_LINE_BYTES, ESSENTIAL_ENV, Effort, InheritEnv, McpServerConfig,
    OutputFormat, PermissionMode, READ_ONLY_TOOLS, SIDE_EFFECT_TOOLS, SettingSource,
    StderrCallback,
};

use crate::hooks::HookRegistration;
use crate::permission::CanUseTool;

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
    /// group is killed (by a timer task, whether or not the stream is being polled) and
    /// the stream ends with a [`Timeout`](crate::ErrorKind::Timeout) error when it is
    /// next polled. A [`ClaudeClient`](crate::ClaudeClient) applies it to its start and
    /// to each turn instead.
    pub timeout: Option<Duration>,
    /// The idle watchdog: the longest the CLI may stay silent (no output line, no
    /// request of its own being served) while a run's turn is in progress. On expiry
    /// the CLI's process group is killed and the stream ends with a
    /// [`Timeout`](crate::ErrorKind::Timeout) error. `None` (the default) has no
    /// watchdog. Applies to [`query()`](crate::query()), the pool's runs, and the
    /// turns of a [`ClaudeClient`](crate::ClaudeClient) read with
    /// [`receive_response`](crate::ClaudeClient::receive_response) (which also closes
    /// that client; [`receive_messages`](crate::ClaudeClient::receive_messages) spans
    /// the quiet time between turns and is not watched).
    ///
    /// The CLI writes nothing while the model composes a message (without
    /// `include_partial_messages`) or while a tool runs, so choose it above the longest
    /// silent stretch you expect: a long `Bash` command or a long answer. Time spent
    /// in your permission callback, hooks or in-process tools does not count. Silence
    /// is noticed while the stream is polled.
    pub idle_timeout: Option<Duration>,
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
    /// The `claude` executable. See [`crate::cli::find_cli`] for the search order.
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
    /// Where session transcripts are kept besides the CLI's own files (see
    /// [`crate::store`]): the CLI mirrors every transcript entry to it
    /// (`--session-mirror`), and a `resume` continues from it on a host that never ran
    /// the session.
    pub session_store: Option<std::sync::Arc<dyn crate::store::SessionStore>>,
    /// How transcripts are mirrored to `session_store`: batches, retries, backlog.
    pub mirror: crate::store::MirrorConfig,
    /// Track the files the CLI's file tools change, so that
    /// [`ClaudeClient::rewind_files`](crate::ClaudeClient::rewind_files) can put them
    /// back (`CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING`). The CLI then also echoes
    /// each prompt back as a [`UserMessage`](crate::UserMessage) with the `uuid` a
    /// rewind names (`--replay-user-messages`).
    pub enable_file_checkpointing: bool,
    /// How the model thinks (`--thinking`, `--max-thinking-tokens`,
    /// `--thinking-display`).
    pub thinking: Option<ThinkingConfig>,
    /// A token budget for the whole task, which the model is told about and paces
    /// itself by (`--task-budget`).
    pub task_budget: Option<u64>,
    /// With `resume`: continue from this message (a `uuid` of the transcript) instead
    /// of the end, dropping what came after it (`--resume-session-at`).
    pub resume_session_at: Option<String>,
    /// `Some(false)`: write no transcript to disk, so the session cannot be resumed
    /// or listed (`--no-session-persistence`). `None` is the CLI's default (written).
    pub persist_session: Option<bool>,
    /// Plugins to load (`--plugin-dir`).
    pub plugins: Vec<PluginConfig>,
    /// Skills the model may use without asking: added to `allowed_tools` as `Skill`
    /// or `Skill(name)`.
    pub skills: Option<Skills>,
    /// How commands are sandboxed: merged into the settings (`--settings`) as
    /// `sandbox`.
    pub sandbox: Option<SandboxSettings>,
    /// The output style (a built-in one such as `Explanatory`, or one in
    /// `.claude/output-styles/`): merged into the settings (`--settings`) as
    /// `outputStyle`.
    pub output_style: Option<String>,
    /// The agent the main thread runs as: one of `agents` or of the project's
    /// (`--agent`).
    pub agent: Option<String>,
    /// API beta features to turn on (`--betas`), e.g. `context-1m-2025-08-07`.
    pub betas: Vec<String>,
    /// Use only the MCP servers of these options, none from settings files or
    /// `.mcp.json` (`--strict-mcp-config`).
    pub strict_mcp_config: bool,
    /// Yield the CLI's hook lifecycle as system messages (`hook_started`,
    /// `hook_response`; `--include-hook-events`).
    pub include_hook_events: bool,
}

impl fmt::Debug for ClaudeCodeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field, by name: a new option must be added here to compile.
        let ClaudeCodeOptions {
            max_turns,
            system_prompt,
            append_system_prompt,
            cwd,
            allowed_tools,
            disallowed_tools,
            tools,
            permission_mode,
            model,
            fallback_model,
            output_format,
            verbose,
            timeout,
            idle_timeout,
            continue_conversation,
            resume,
            fork_session,
            session_id,
            mcp_servers,
            env,
            env_remove,
            inherit_env,
            add_dirs,
            settings,
            setting_sources,
            include_partial_messages,
            max_budget_usd,
            effort,
            agents,
            cli_path,
            extra_args,
            max_line_bytes,
            max_api_retries,
            stderr,
            can_use_tool,
            hooks,
            session_store,
            mirror,
            enable_file_checkpointing,
            thinking,
            task_budget,
            resume_session_at,
            persist_session,
            plugins,
            skills,
            sandbox,
            output_style,
            agent,
            betas,
            strict_mcp_config,
            include_hook_events,
        } = self;
        f.debug_struct("ClaudeCodeOptions")
            .field("max_turns", max_turns)
            .field("system_prompt", system_prompt)
            .field("append_system_prompt", append_system_prompt)
            .field("cwd", cwd)
            .field("allowed_tools", allowed_tools)
            .field("disallowed_tools", disallowed_tools)
            .field("tools", tools)
            .field("permission_mode", permission_mode)
            .field("model", model)
            .field("fallback_model", fallback_model)
            .field("output_format", output_format)
            .field("verbose", verbose)
            .field("timeout", timeout)
            .field("idle_timeout", idle_timeout)
            .field("continue_conversation", continue_conversation)
            .field("resume", resume)
            .field("fork_session", fork_session)
            .field("session_id", session_id)
            .field("mcp_servers", mcp_servers)
            // Values may be secrets: names only.
            .field("env", &env.keys().collect::<Vec<_>>())
            .field("env_remove", env_remove)
            .field("inherit_env", inherit_env)
            .field("add_dirs", add_dirs)
            .field("settings", settings)
            .field("setting_sources", setting_sources)
            .field("include_partial_messages", include_partial_messages)
            .field("max_budget_usd", max_budget_usd)
            .field("effort", effort)
            .field("agents", agents)
            .field("cli_path", cli_path)
            .field("extra_args", extra_args)
            .field("max_line_bytes", max_line_bytes)
            .field("max_api_retries", max_api_retries)
            .field("stderr", &stderr.as_ref().map(|_| "<callback>"))
            .field("can_use_tool", can_use_tool)
            .field(
                "hooks",
                &hooks.iter().map(|h| h.event.as_str()).collect::<Vec<_>>(),
            )
            .field("session_store", &session_store.as_ref().map(|_| "<store>"))
            .field("mirror", mirror)
            .field("enable_file_checkpointing", enable_file_checkpointing)
            .field("thinking", thinking)
            .field("task_budget", task_budget)
            .field("resume_session_at", resume_session_at)
            .field("persist_session", persist_session)
            .field("plugins", plugins)
            .field("skills", skills)
            .field("sandbox", sandbox)
            .field("output_style", output_style)
            .field("agent", agent)
            .field("betas", betas)
            .field("strict_mcp_config", strict_mcp_config)
            .field("include_hook_events", include_hook_events)
            .finish()
    }
}

impl ClaudeCodeOptions {
    /// A builder with every option unset.
    pub fn builder() -> ClaudeCodeOptionsBuilder {
        ClaudeCodeOptionsBuilder::new(ClaudeCodeOptions::default())
    }

    /// A builder that starts from these options.
    pub fn to_builder(&self) -> ClaudeCodeOptionsBuilder {
        ClaudeCodeOptionsBuilder::new(self.clone())
    }

    /// The effective line limit.
    pub fn line_limit(&self) -> usize {
        self.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES)
    }

    /// The names this configuration asks for in `tools` and `allowed_tools` (built-in
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

    /// Whether these options name a conversation to continue (`resume`,
    /// `continue_conversation`, `session_id`): such a run cannot start on a spare and
    /// its process must never be reset.
    pub(crate) fn names_conversation(&self) -> bool {
        self.resume.is_some() || self.continue_conversation || self.session_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PermissionDecision;
    use serde_json::json;

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
    fn read_only_exposes_only_read_tools() {
        for writer in ["Bash(ls)", "Write", "mcp__fs__write_file"] {
            let err = ClaudeCodeOptions::builder()
                .permission_mode(PermissionMode::ReadOnly)
                .allowed_tools([writer])
                .build()
                .unwrap_err();
            assert!(err.is_invalid_options(), "{writer}");
        }
        assert!(
            ClaudeCodeOptions::builder()
                .permission_mode(PermissionMode::ReadOnly)
                .allowed_tools(["Grep"])
                .build()
                .is_ok()
        );
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
