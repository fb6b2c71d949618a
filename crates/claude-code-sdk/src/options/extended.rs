//! Option types the official SDKs have beyond the Python SDK's first set: thinking,
//! plugins, skills, sandbox settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ClaudeCodeOptions, ClaudeCodeOptionsBuilder};
use crate::control::ThinkingDisplay;
use crate::error::{Error, Result};

/// How the model thinks before it answers (`--thinking`, `--max-thinking-tokens`,
/// `--thinking-display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ThinkingConfig {
    /// The model decides how much to think (`--thinking=adaptive`).
    Adaptive {
        /// How thinking is shown; the CLI's default when `None`.
        display: Option<ThinkingDisplay>,
    },
    /// Thinking with a budget (`--max-thinking-tokens`).
    Enabled {
        /// The most tokens the model may think with.
        budget_tokens: u32,
        /// How thinking is shown; the CLI's default when `None`.
        display: Option<ThinkingDisplay>,
    },
    /// No thinking (`--thinking=disabled`).
    Disabled,
}

impl ThinkingConfig {
    /// Adaptive thinking, shown the CLI's way.
    pub fn adaptive() -> ThinkingConfig {
        ThinkingConfig::Adaptive { display: None }
    }

    /// Thinking within `budget_tokens`, shown the CLI's way.
    pub fn budget(budget_tokens: u32) -> ThinkingConfig {
        ThinkingConfig::Enabled {
            budget_tokens,
            display: None,
        }
    }

    /// The same, shown as `display` (no effect on [`Disabled`](ThinkingConfig::Disabled)).
    #[must_use]
    pub fn display(self, display: ThinkingDisplay) -> ThinkingConfig {
        match self {
            ThinkingConfig::Adaptive { .. } => ThinkingConfig::Adaptive {
                display: Some(display),
            },
            ThinkingConfig::Enabled { budget_tokens, .. } => ThinkingConfig::Enabled {
                budget_tokens,
                display: Some(display),
            },
            ThinkingConfig::Disabled => ThinkingConfig::Disabled,
        }
    }

    /// The CLI flags, `--name=value`.
    pub(crate) fn flags(self) -> Vec<(&'static str, String)> {
        let (mut flags, display) = match self {
            ThinkingConfig::Adaptive { display } => {
                (vec![("thinking", "adaptive".to_owned())], display)
            }
            ThinkingConfig::Enabled {
                budget_tokens,
                display,
            } => (
                vec![("max-thinking-tokens", budget_tokens.to_string())],
                display,
            ),
            ThinkingConfig::Disabled => (vec![("thinking", "disabled".to_owned())], None),
        };
        if let Some(display) = display {
            flags.push(("thinking-display", display.as_str().to_owned()));
        }
        flags
    }
}

/// A plugin the CLI loads for the run (`--plugin-dir`): a directory with
/// `.claude-plugin/plugin.json`, its commands, agents, skills, hooks and MCP servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum PluginConfig {
    /// A plugin in a local directory.
    Local {
        /// The directory.
        path: PathBuf,
    },
}

impl PluginConfig {
    /// A plugin in the directory `path`.
    pub fn local(path: impl Into<PathBuf>) -> PluginConfig {
        PluginConfig::Local { path: path.into() }
    }
}

/// Which skills the model may use without asking (the `Skill` tool, pre-approved in
/// `allowed_tools`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Skills {
    /// Every skill (`Skill`).
    All,
    /// These skills only (`Skill(name)` each).
    Only(Vec<String>),
}

impl Skills {
    /// The `allowed_tools` entries these skills add.
    pub(crate) fn allowed_tools(&self) -> Vec<String> {
        match self {
            Skills::All => vec!["Skill".to_owned()],
            Skills::Only(names) => names.iter().map(|n| format!("Skill({n})")).collect(),
        }
    }
}

/// How the CLI sandboxes the commands it runs (the `sandbox` key of its settings;
/// Linux needs `bubblewrap`, macOS uses Seatbelt).
///
/// The common switches are typed; the network and filesystem rules, and anything a
/// newer CLI adds, go in as JSON in the CLI's own shape (`network`, `filesystem`,
/// `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SandboxSettings {
    /// Run commands in the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Fail instead of running unsandboxed when the sandbox cannot start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_if_unavailable: Option<bool>,
    /// Approve `Bash` commands without asking when they run sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allow_bash_if_sandboxed: Option<bool>,
    /// Whether a command may ask to run outside the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unsandboxed_commands: Option<bool>,
    /// Commands that always run outside the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_commands: Vec<String>,
    /// Network rules (`allowedDomains`, `allowUnixSockets`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Value>,
    /// Filesystem rules (`allowWrite`, `denyRead`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Value>,
    /// Any other key of the CLI's `sandbox` settings.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl SandboxSettings {
    /// Sandboxing on, with the CLI's defaults for the rest.
    pub fn enabled() -> SandboxSettings {
        SandboxSettings {
            enabled: Some(true),
            ..SandboxSettings::default()
        }
    }
}

impl ClaudeCodeOptions {
    /// The `--settings` value: `settings` as given, or, with `sandbox` or
    /// `output_style`, a JSON object with them merged in (over the same keys of
    /// `settings`).
    pub(crate) fn effective_settings(&self) -> Option<String> {
        if self.sandbox.is_none() && self.output_style.is_none() {
            return self.settings.clone();
        }
        let mut merged: Map<String, Value> = self
            .settings
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        if let Some(sandbox) = &self.sandbox {
            merged.insert(
                "sandbox".into(),
                serde_json::to_value(sandbox).unwrap_or(Value::Null),
            );
        }
        if let Some(style) = &self.output_style {
            merged.insert("outputStyle".into(), Value::String(style.clone()));
        }
        Some(Value::Object(merged).to_string())
    }

    /// `allowed_tools` with what `skills` adds.
    pub(crate) fn effective_allowed_tools(&self) -> Vec<String> {
        let mut allowed = self.allowed_tools.clone();
        for tool in self.skills.iter().flat_map(Skills::allowed_tools) {
            if !allowed.contains(&tool) {
                allowed.push(tool);
            }
        }
        allowed
    }

    /// Checks the options of [`extended`](self).
    pub(super) fn validate_extended(&self) -> Result<()> {
        if (self.sandbox.is_some() || self.output_style.is_some())
            && let Some(settings) = &self.settings
            && serde_json::from_str::<Map<String, Value>>(settings).is_err()
        {
            return Err(Error::invalid_options(
                "sandbox and output_style are merged into settings, which must then be a JSON \
                 object, not a file path; put them in the file instead, or give settings as JSON",
            ));
        }
        if let Some(at) = &self.resume_session_at {
            if self.resume.is_none() {
                return Err(Error::invalid_options(
                    "resume_session_at needs resume (the session it points into)",
                ));
            }
            if uuid::Uuid::parse_str(at).is_err() {
                return Err(Error::invalid_options(format!(
                    "resume_session_at must be a message uuid, not {at:?}"
                )));
            }
        }
        if self.task_budget == Some(0) {
            return Err(Error::invalid_options(
                "task_budget must be at least 1 token",
            ));
        }
        if let Some(ThinkingConfig::Enabled {
            budget_tokens: 0, ..
        }) = self.thinking
        {
            return Err(Error::invalid_options(
                "a thinking budget must be at least 1 token; use ThinkingConfig::Disabled for none",
            ));
        }
        for PluginConfig::Local { path } in &self.plugins {
            if !path.is_dir() {
                return Err(Error::invalid_options(format!(
                    "plugins: {} does not exist or is not a directory",
                    path.display()
                )));
            }
        }
        if let Some(Skills::Only(names)) = &self.skills
            && let Some(bad) = names
                .iter()
                .find(|n| n.is_empty() || n.chars().any(|c| c.is_whitespace() || "(),".contains(c)))
        {
            return Err(Error::invalid_options(format!(
                "skills: {bad:?} is not a skill name"
            )));
        }
        if let Some(bad) = self
            .betas
            .iter()
            .find(|b| b.is_empty() || b.contains(',') || b.starts_with('-'))
        {
            return Err(Error::invalid_options(format!(
                "betas: {bad:?} is not a beta name"
            )));
        }
        for (what, value) in [("agent", &self.agent), ("output_style", &self.output_style)] {
            if let Some(v) = value
                && (v.trim().is_empty() || v.starts_with('-'))
            {
                return Err(Error::invalid_options(format!(
                    "{what}: {v:?} is not a name"
                )));
            }
        }
        Ok(())
    }
}

impl ClaudeCodeOptionsBuilder {
    /// Tracks file changes so [`ClaudeClient::rewind_files`](crate::ClaudeClient::rewind_files)
    /// can undo them; prompts come back as user messages with their ids.
    pub fn enable_file_checkpointing(mut self, yes: bool) -> Self {
        self.options.enable_file_checkpointing = yes;
        self
    }

    /// How the model thinks.
    pub fn thinking(mut self, thinking: ThinkingConfig) -> Self {
        self.options.thinking = Some(thinking);
        self
    }

    /// A token budget for the whole task.
    pub fn task_budget(mut self, tokens: u64) -> Self {
        self.options.task_budget = Some(tokens);
        self
    }

    /// With `resume`: continue from this message of the transcript.
    pub fn resume_session_at(mut self, message_uuid: impl Into<String>) -> Self {
        self.options.resume_session_at = Some(message_uuid.into());
        self
    }

    /// `false`: keep no transcript on disk.
    pub fn persist_session(mut self, yes: bool) -> Self {
        self.options.persist_session = Some(yes);
        self
    }

    /// Loads a plugin.
    pub fn plugin(mut self, plugin: PluginConfig) -> Self {
        self.options.plugins.push(plugin);
        self
    }

    /// Skills the model may use without asking.
    pub fn skills(mut self, skills: Skills) -> Self {
        self.options.skills = Some(skills);
        self
    }

    /// How commands are sandboxed.
    pub fn sandbox(mut self, sandbox: SandboxSettings) -> Self {
        self.options.sandbox = Some(sandbox);
        self
    }

    /// The output style.
    pub fn output_style(mut self, style: impl Into<String>) -> Self {
        self.options.output_style = Some(style.into());
        self
    }

    /// The agent the main thread runs as.
    pub fn main_agent(mut self, name: impl Into<String>) -> Self {
        self.options.agent = Some(name.into());
        self
    }

    /// Turns on an API beta feature.
    pub fn beta(mut self, name: impl Into<String>) -> Self {
        self.options.betas.push(name.into());
        self
    }

    /// Only the MCP servers of these options.
    pub fn strict_mcp_config(mut self, yes: bool) -> Self {
        self.options.strict_mcp_config = yes;
        self
    }

    /// Yields hook lifecycle system messages.
    pub fn include_hook_events(mut self, yes: bool) -> Self {
        self.options.include_hook_events = yes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thinking_becomes_flags() {
        assert_eq!(
            ThinkingConfig::adaptive().flags(),
            [("thinking", "adaptive".to_owned())]
        );
        assert_eq!(
            ThinkingConfig::budget(2048)
                .display(ThinkingDisplay::Omitted)
                .flags(),
            [
                ("max-thinking-tokens", "2048".to_owned()),
                ("thinking-display", "omitted".to_owned())
            ]
        );
        assert_eq!(
            ThinkingConfig::Disabled
                .display(ThinkingDisplay::Summarized)
                .flags(),
            [("thinking", "disabled".to_owned())]
        );
    }

    #[test]
    fn sandbox_settings_are_the_clis_shape() {
        let mut sandbox = SandboxSettings::enabled();
        sandbox.auto_allow_bash_if_sandboxed = Some(true);
        sandbox.network = Some(json!({"allowedDomains": ["example.com"]}));
        sandbox.extra.insert("futureKey".into(), json!(1));
        assert_eq!(
            serde_json::to_value(&sandbox).unwrap(),
            json!({"enabled": true, "autoAllowBashIfSandboxed": true,
                   "network": {"allowedDomains": ["example.com"]}, "futureKey": 1})
        );
        assert_eq!(
            Skills::Only(vec!["pdf".into()]).allowed_tools(),
            ["Skill(pdf)"]
        );
    }
}
