//! [`ClaudeCodeOptionsBuilder`]: `ClaudeCodeOptions::builder()...build()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::Result;
use crate::hooks::{
    HookCallback, HookContext, HookError, HookEvent, HookInput, HookMatcher, HookOutput,
    HookRegistration,
};
use crate::permission::{CanUseTool, PermissionDecision, ToolPermissionContext};
use crate::tools::SdkMcpServer;

use super::{
    AgentDefinition, ClaudeCodeOptions, Effort, InheritEnv, McpServerConfig, OutputFormat,
    PermissionMode, SettingSource,
};

/// Builds [`ClaudeCodeOptions`]; `build()` validates.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone, Debug)]
pub struct ClaudeCodeOptionsBuilder {
    pub(super) options: ClaudeCodeOptions,
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl ClaudeCodeOptionsBuilder {
    pub(super) fn new(options: ClaudeCodeOptions) -> Self {
        ClaudeCodeOptionsBuilder { options }
    }

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

    /// The idle watchdog: the longest the CLI may stay silent while a turn runs (see
    /// [`ClaudeCodeOptions::idle_timeout`]).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.options.idle_timeout = Some(idle);
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

    /// Keeps session transcripts in `store` too (see [`crate::store`]).
    pub fn session_store(mut self, store: std::sync::Arc<dyn crate::store::SessionStore>) -> Self {
        self.options.session_store = Some(store);
        self
    }

    /// How transcripts are mirrored to the session store.
    pub fn mirror(mut self, config: crate::store::MirrorConfig) -> Self {
        self.options.mirror = config;
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
