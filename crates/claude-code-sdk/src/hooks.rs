//! Hooks: Rust functions the CLI calls at points of its loop.
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeCodeOptions, HookEvent, HookMatcher, HookOutput};
//!
//! let options = ClaudeCodeOptions::builder()
//!     .hook(HookEvent::PreToolUse, HookMatcher::new("Bash"), |input, _tool_use_id, _ctx| async move {
//!         let command = input.tool_input().and_then(|i| i["command"].as_str()).unwrap_or("");
//!         if command.contains("rm -rf") {
//!             return Ok(HookOutput::deny("destructive command"));
//!         }
//!         Ok(HookOutput::default())
//!     })
//!     .build()?;
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! Hooks are registered with the CLI in the `initialize` request; the CLI then sends a
//! `hook_callback` control request whenever one fires. Every event name the CLI knows
//! works: the common ones are [`HookEvent`] variants, any other is
//! [`HookEvent::Other`]. A hook that returns an error, or panics, answers the CLI with
//! an error; the CLI treats that as a failed hook and goes on.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// When a hook fires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HookEvent {
    /// Before a tool runs: can allow, deny, ask or rewrite the input.
    PreToolUse,
    /// After a tool ran.
    PostToolUse,
    /// After a tool failed.
    PostToolUseFailure,
    /// When a prompt is submitted: can add context or block it.
    UserPromptSubmit,
    /// When the main agent is about to stop: can make it go on.
    Stop,
    /// When a subagent is about to stop.
    SubagentStop,
    /// When a subagent starts.
    SubagentStart,
    /// Before the conversation is compacted.
    PreCompact,
    /// When the CLI would notify the user.
    Notification,
    /// When a permission dialog would be shown.
    PermissionRequest,
    /// When a session starts.
    SessionStart,
    /// When a session ends.
    SessionEnd,
    /// Before a skill's (or a custom slash command's) inline shell command runs: the
    /// `` !`command` `` lines of a `SKILL.md` or `.claude/commands/*.md`, when the skill
    /// is invoked by the user (`/name`) or by the model (the `Skill` tool). Claude Code
    /// 2.1.332 and later; registering it for an older CLI is an
    /// [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error, since an older CLI
    /// would never call it.
    ///
    /// The input: [`tool_name`](HookInput::tool_name) (`Bash` or `PowerShell`),
    /// [`command`](HookInput::command), [`command_name`](HookInput::command_name) (the
    /// skill), [`command_source`](HookInput::command_source) (where the skill is
    /// defined) and [`invoked_by`](HookInput::invoked_by) (`user` or `claude`).
    ///
    /// What an answer does (measured on 2.1.332):
    ///
    /// - no decision ([`HookOutput::default()`]) or [`HookOutput::allow()`]: the command
    ///   runs (if the permission mode lets it; the hook is asked after the permission
    ///   check);
    /// - any other decision blocks it: [`HookOutput::deny`], [`HookOutput::ask`] (a
    ///   skill cannot wait for an approval), [`HookOutput::block`], a `defer`; the skill
    ///   text gets `[not run: blocked by hook: <reason>]` in place of the output, and the
    ///   CLI writes a `system`/`informational` line tagged `skill_shell_hook`;
    /// - [`HookOutput::with_updated_input`] is never applied: a changed command blocks it,
    ///   even beside `allow`;
    /// - [`HookOutput::stop`] ends the turn before the skill runs;
    /// - a hook that returns an error (or panics) counts as no answer, and **the command
    ///   runs**: return [`HookOutput::deny`] to refuse, never an error.
    PreSkillShellCommand,
    /// Any other event name the CLI knows.
    Other(String),
}

impl HookEvent {
    /// The CLI's name for the event.
    pub fn as_str(&self) -> &str {
        match self {
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
            HookEvent::PostToolUseFailure => "PostToolUseFailure",
            HookEvent::UserPromptSubmit => "UserPromptSubmit",
            HookEvent::Stop => "Stop",
            HookEvent::SubagentStop => "SubagentStop",
            HookEvent::SubagentStart => "SubagentStart",
            HookEvent::PreCompact => "PreCompact",
            HookEvent::Notification => "Notification",
            HookEvent::PermissionRequest => "PermissionRequest",
            HookEvent::SessionStart => "SessionStart",
            HookEvent::SessionEnd => "SessionEnd",
            HookEvent::PreSkillShellCommand => "PreSkillShellCommand",
            HookEvent::Other(name) => name,
        }
    }

    /// The event for a CLI name.
    pub fn from_name(name: &str) -> Self {
        const KNOWN: [HookEvent; 13] = [
            HookEvent::PreToolUse,
            HookEvent::PostToolUse,
            HookEvent::PostToolUseFailure,
            HookEvent::UserPromptSubmit,
            HookEvent::Stop,
            HookEvent::SubagentStop,
            HookEvent::SubagentStart,
            HookEvent::PreCompact,
            HookEvent::Notification,
            HookEvent::PermissionRequest,
            HookEvent::SessionStart,
            HookEvent::SessionEnd,
            HookEvent::PreSkillShellCommand,
        ];
        KNOWN
            .into_iter()
            .find(|e| e.as_str() == name)
            .unwrap_or_else(|| HookEvent::Other(name.to_owned()))
    }
}

impl fmt::Display for HookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for HookEvent {
    fn from(name: &str) -> Self {
        HookEvent::from_name(name)
    }
}

/// Which tool uses a hook fires for: a tool name, `A|B`, a regular expression the CLI
/// understands, or all (`HookMatcher::all()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookMatcher {
    pub(crate) matcher: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) block_on_failure: bool,
}

impl HookMatcher {
    /// Fires for tools matching `pattern`, e.g. `"Bash|Write"`.
    pub fn new(pattern: impl Into<String>) -> Self {
        HookMatcher {
            matcher: Some(pattern.into()),
            timeout: None,
            block_on_failure: false,
        }
    }

    /// Fires for everything.
    pub fn all() -> Self {
        HookMatcher::default()
    }

    /// How long the CLI waits for the hook (the CLI's default when unset).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Fail closed: when the hook's call fails (the callback returns an error, or its
    /// answer does not validate), the action it guards (a tool call, a permission
    /// request, a prompt) is blocked, as a failing command hook blocks. By default
    /// the CLI reports the failure and goes ahead (`onFailure: "continue"`). Use it
    /// for hooks that enforce a rule rather than observe.
    #[must_use]
    pub fn block_on_failure(mut self) -> Self {
        self.block_on_failure = true;
        self
    }
}

/// What the CLI passes a hook. Typed accessors for the common fields; the whole JSON
/// is in [`raw`](HookInput::raw).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HookInput {
    /// The event.
    pub event: HookEvent,
    /// The session id.
    pub session_id: Option<String>,
    /// The working directory.
    pub cwd: Option<String>,
    /// The permission mode in effect (the CLI's name).
    pub permission_mode: Option<String>,
    /// The transcript file.
    pub transcript_path: Option<String>,
    /// Everything the CLI sent.
    pub raw: Value,
}

impl HookInput {
    pub(crate) fn from_wire(raw: Value) -> Self {
        let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_owned);
        HookInput {
            event: HookEvent::from_name(&text("hook_event_name").unwrap_or_default()),
            session_id: text("session_id"),
            cwd: text("cwd"),
            permission_mode: text("permission_mode"),
            transcript_path: text("transcript_path"),
            raw,
        }
    }

    /// The tool, for tool events; for `PreSkillShellCommand`, the shell that runs the
    /// command (`Bash` or `PowerShell`).
    pub fn tool_name(&self) -> Option<&str> {
        self.raw.get("tool_name").and_then(Value::as_str)
    }

    /// The tool input, for tool events; for `PreSkillShellCommand`, `{"command": ...}`.
    pub fn tool_input(&self) -> Option<&Value> {
        self.raw.get("tool_input")
    }

    /// For `PreSkillShellCommand`: the shell command the skill is about to run
    /// (`tool_input.command`). Also a `Bash` tool use's command for `PreToolUse`.
    pub fn command(&self) -> Option<&str> {
        self.tool_input()?.get("command").and_then(Value::as_str)
    }

    /// For `PreSkillShellCommand`: the skill or slash command whose text holds the
    /// command (`greet` for `/greet`).
    pub fn command_name(&self) -> Option<&str> {
        self.raw.get("command_name").and_then(Value::as_str)
    }

    /// For `PreSkillShellCommand`: where the skill is defined, in the CLI's words
    /// (`projectSettings` for the project's `.claude/`, `userSettings`, `plugin`, ...).
    pub fn command_source(&self) -> Option<&str> {
        self.raw.get("command_source").and_then(Value::as_str)
    }

    /// For `PreSkillShellCommand`: who invoked the skill, `user` (a `/name` prompt) or
    /// `claude` (the model, with the `Skill` tool).
    pub fn invoked_by(&self) -> Option<&str> {
        self.raw.get("invoked_by").and_then(Value::as_str)
    }

    /// What the tool returned, for `PostToolUse`.
    pub fn tool_response(&self) -> Option<&Value> {
        self.raw.get("tool_response")
    }

    /// The error, for `PostToolUseFailure`.
    pub fn tool_error(&self) -> Option<&str> {
        self.raw.get("error").and_then(Value::as_str)
    }

    /// The prompt, for `UserPromptSubmit`.
    pub fn prompt(&self) -> Option<&str> {
        self.raw.get("prompt").and_then(Value::as_str)
    }

    /// For `Stop` and `SubagentStop`: whether a stop hook already made the agent go on.
    pub fn stop_hook_active(&self) -> Option<bool> {
        self.raw.get("stop_hook_active").and_then(Value::as_bool)
    }

    /// For `Stop`: the last thing the assistant said.
    pub fn last_assistant_message(&self) -> Option<&str> {
        self.raw
            .get("last_assistant_message")
            .and_then(Value::as_str)
    }
}

/// Extra context for a hook call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HookContext {
    /// The callback id the CLI named.
    pub callback_id: String,
}

/// A `PreToolUse` hook's verdict on a tool use (`permissionDecision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToolDecision {
    /// Run the tool without asking.
    Allow,
    /// Refuse the tool use; the model sees the reason.
    Deny,
    /// Ask the permission callback (or the user) as usual.
    Ask,
}

impl ToolDecision {
    /// The CLI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolDecision::Allow => "allow",
            ToolDecision::Deny => "deny",
            ToolDecision::Ask => "ask",
        }
    }
}

/// A hook's verdict on the action it watches (`decision`): a prompt, a stop, a tool
/// result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActionDecision {
    /// Block the action; the model sees the reason.
    Block,
    /// Approve it (older hooks' spelling of "go on").
    Approve,
}

impl ActionDecision {
    /// The CLI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionDecision::Block => "block",
            ActionDecision::Approve => "approve",
        }
    }
}

/// What a hook answers. `HookOutput::default()` lets everything go on unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct HookOutput {
    /// `Some(false)` stops the agent after this hook (`continue: false`).
    pub continue_: Option<bool>,
    /// Why it stopped (shown to the user).
    pub stop_reason: Option<String>,
    /// Hide the hook's output from the transcript.
    pub suppress_output: bool,
    /// A message for the user.
    pub system_message: Option<String>,
    /// [`ActionDecision::Block`] blocks the action (the model sees `reason`).
    pub decision: Option<ActionDecision>,
    /// Why it was blocked.
    pub reason: Option<String>,
    /// For `PreToolUse`: allow, deny or ask.
    pub permission_decision: Option<ToolDecision>,
    /// For `PreToolUse`: why.
    pub permission_decision_reason: Option<String>,
    /// For `PreToolUse`: run the tool with this input instead.
    pub updated_input: Option<Value>,
    /// For `UserPromptSubmit`, `PostToolUse`, `SessionStart`: text added to the model's context.
    pub additional_context: Option<String>,
    /// Event-specific fields to merge into `hookSpecificOutput` as they are.
    pub extra_specific: Map<String, Value>,
}

impl HookOutput {
    /// `PreToolUse`: let the tool run without asking.
    pub fn allow() -> Self {
        HookOutput {
            permission_decision: Some(ToolDecision::Allow),
            ..Default::default()
        }
    }

    /// `PreToolUse`: refuse the tool use; the model sees `reason`.
    pub fn deny(reason: impl Into<String>) -> Self {
        HookOutput {
            permission_decision: Some(ToolDecision::Deny),
            permission_decision_reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// `PreToolUse`: ask the permission callback (or the user) as usual.
    pub fn ask() -> Self {
        HookOutput {
            permission_decision: Some(ToolDecision::Ask),
            ..Default::default()
        }
    }

    /// Block the action (a prompt, a stop, a tool result) with a reason.
    pub fn block(reason: impl Into<String>) -> Self {
        HookOutput {
            decision: Some(ActionDecision::Block),
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// Stop the agent after this hook.
    pub fn stop(reason: impl Into<String>) -> Self {
        HookOutput {
            continue_: Some(false),
            stop_reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// Add text to the model's context.
    pub fn additional_context(text: impl Into<String>) -> Self {
        HookOutput {
            additional_context: Some(text.into()),
            ..Default::default()
        }
    }

    /// Whether this answer refuses what the hook watched: a tool use denied, or an
    /// action blocked.
    pub fn refuses(&self) -> bool {
        self.permission_decision == Some(ToolDecision::Deny)
            || self.decision == Some(ActionDecision::Block)
    }

    /// Run the tool with this input instead (`PreToolUse`).
    #[must_use]
    pub fn with_updated_input(mut self, input: Value) -> Self {
        self.updated_input = Some(input);
        self
    }

    /// The answer for the CLI.
    pub(crate) fn to_wire(&self, event: &HookEvent) -> Value {
        let mut out = Map::new();
        if let Some(c) = self.continue_ {
            out.insert("continue".into(), c.into());
        }
        if let Some(r) = &self.stop_reason {
            out.insert("stopReason".into(), r.clone().into());
        }
        if self.suppress_output {
            out.insert("suppressOutput".into(), true.into());
        }
        if let Some(m) = &self.system_message {
            out.insert("systemMessage".into(), m.clone().into());
        }
        if let Some(d) = self.decision {
            out.insert("decision".into(), d.as_str().into());
        }
        if let Some(r) = &self.reason {
            out.insert("reason".into(), r.clone().into());
        }
        let mut specific = self.extra_specific.clone();
        if let Some(d) = self.permission_decision {
            specific.insert("permissionDecision".into(), d.as_str().into());
        }
        if let Some(r) = &self.permission_decision_reason {
            specific.insert("permissionDecisionReason".into(), r.clone().into());
        }
        if let Some(i) = &self.updated_input {
            specific.insert("updatedInput".into(), i.clone());
        }
        if let Some(c) = &self.additional_context {
            specific.insert("additionalContext".into(), c.clone().into());
        }
        if !specific.is_empty() {
            specific.insert("hookEventName".into(), event.as_str().into());
            out.insert("hookSpecificOutput".into(), Value::Object(specific));
        }
        Value::Object(out)
    }
}

/// The error a hook may return: its text goes back to the CLI.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

type HookFn = dyn Fn(HookInput, Option<String>, HookContext) -> BoxFuture<'static, Result<HookOutput, HookError>>
    + Send
    + Sync;

/// A hook callback, shareable and cheap to clone.
#[derive(Clone)]
pub struct HookCallback(pub(crate) Arc<HookFn>);

impl HookCallback {
    /// Wraps an async function `(input, tool_use_id, context) -> Result<HookOutput, HookError>`.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(HookInput, Option<String>, HookContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HookOutput, HookError>> + Send + 'static,
    {
        HookCallback(Arc::new(move |input, id, ctx| Box::pin(f(input, id, ctx))))
    }
}

impl fmt::Debug for HookCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookCallback(<callback>)")
    }
}

/// One registered hook: made by [`ClaudeCodeOptionsBuilder::hook`](crate::ClaudeCodeOptionsBuilder::hook).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HookRegistration {
    /// When it fires.
    pub event: HookEvent,
    /// For which tools.
    pub matcher: HookMatcher,
    /// What runs.
    pub callback: HookCallback,
}

/// The `hooks` field of the `initialize` request, and the callbacks by id.
pub(crate) fn initialize_hooks(
    hooks: &[HookRegistration],
) -> (Value, Vec<(String, HookRegistration)>) {
    if hooks.is_empty() {
        return (Value::Null, Vec::new());
    }
    let mut by_event: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut ids = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let id = format!("hook_{i}");
        let HookMatcher {
            matcher,
            timeout,
            block_on_failure,
        } = &hook.matcher;
        let mut entry = json!({"matcher": matcher, "hookCallbackIds": [id]});
        if let Some(t) = timeout {
            entry["timeout"] = json!(t.as_secs_f64().ceil() as u64);
        }
        if *block_on_failure {
            entry["onFailure"] = json!("block");
        }
        by_event
            .entry(hook.event.as_str().to_owned())
            .or_default()
            .push(entry);
        ids.push((id, hook.clone()));
    }
    (json!(by_event), ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_take_the_cli_shape() {
        let deny = HookOutput::deny("no").to_wire(&HookEvent::PreToolUse);
        assert_eq!(
            deny,
            json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                "permissionDecision": "deny", "permissionDecisionReason": "no"}})
        );
        let ctx = HookOutput::additional_context("ctx").to_wire(&HookEvent::UserPromptSubmit);
        assert_eq!(ctx["hookSpecificOutput"]["additionalContext"], "ctx");
        assert_eq!(HookOutput::default().to_wire(&HookEvent::Stop), json!({}));
        let stop = HookOutput::stop("enough").to_wire(&HookEvent::PostToolUse);
        assert_eq!(stop, json!({"continue": false, "stopReason": "enough"}));
        assert_eq!(
            HookEvent::from_name("Elicitation"),
            HookEvent::Other("Elicitation".into())
        );
    }

    /// A matcher that fails closed says so to the CLI.
    #[test]
    fn a_matcher_that_fails_closed_asks_the_cli_to_block() {
        let with = |matcher: HookMatcher| {
            crate::ClaudeCodeOptions::builder()
                .hook(HookEvent::PreToolUse, matcher, |_, _, _| async {
                    Ok(HookOutput::default())
                })
                .build()
                .unwrap()
        };
        let closed = with(
            HookMatcher::new("Read")
                .block_on_failure()
                .timeout(Duration::from_secs(2)),
        );
        let open = with(HookMatcher::new("Read"));
        let (wire, _) = initialize_hooks(&closed.hooks);
        assert_eq!(
            wire["PreToolUse"][0],
            json!({"matcher": "Read", "hookCallbackIds": ["hook_0"], "timeout": 2, "onFailure": "block"})
        );
        let (wire, _) = initialize_hooks(&open.hooks);
        assert!(wire["PreToolUse"][0].get("onFailure").is_none());
    }

    /// The input of a `PreSkillShellCommand` hook as CLI 2.1.332 sends it (captured).
    #[test]
    fn skill_shell_command_input() {
        let raw = json!({
            "session_id": "1ff4d1c4-900d-4185-88f1-743102f33f51",
            "cwd": "/tmp/project", "permission_mode": "acceptEdits",
            "hook_event_name": "PreSkillShellCommand", "tool_name": "Bash",
            "tool_input": {"command": "echo ran >> marker.txt && echo MARKER_WRITTEN"},
            "tool_use_id": "d2658bec-76bf-4fde-945c-ef204c630cb2:inner:preamble-0",
            "command_name": "greet", "command_source": "projectSettings", "invoked_by": "user"
        });
        let input = HookInput::from_wire(raw);
        assert_eq!(input.event, HookEvent::PreSkillShellCommand);
        assert_eq!(input.event.as_str(), "PreSkillShellCommand");
        assert_eq!(input.tool_name(), Some("Bash"));
        assert_eq!(
            input.command(),
            Some("echo ran >> marker.txt && echo MARKER_WRITTEN")
        );
        assert_eq!(input.command_name(), Some("greet"));
        assert_eq!(input.command_source(), Some("projectSettings"));
        assert_eq!(input.invoked_by(), Some("user"));
        assert_eq!(input.permission_mode.as_deref(), Some("acceptEdits"));
        let deny = HookOutput::deny("no").to_wire(&input.event);
        assert_eq!(
            deny["hookSpecificOutput"]["hookEventName"],
            "PreSkillShellCommand"
        );
    }
}
