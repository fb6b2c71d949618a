//! [`ClaudeCodeOptions::validate`]: mistakes caught before a CLI starts.

use crate::error::{Error, ErrorKind, Result};

use super::{
    ClaudeCodeOptions, InheritEnv, OutputFormat, PermissionMode, READ_ONLY_TOOLS, has_side_effects,
};

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
        if let Some(idle) = self.idle_timeout
            && idle.is_zero()
        {
            return Err(Error::invalid_options(
                "idle_timeout must be longer than zero",
            ));
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
        self.validate_extended()?;
        Ok(())
    }
}
