//! [`ClaudeCodeOptions::fingerprint`]: one digest of everything that can change what a
//! run does or answers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{ClaudeCodeOptions, McpServerConfig};

/// A SHA-256 digest of `value`'s JSON text, in hex.
pub(crate) fn digest(value: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address as a JSON string: the identity of a callback.
fn ptr(p: usize) -> Value {
    json!(format!("{p:#x}"))
}

impl ClaudeCodeOptions {
    /// A digest (SHA-256, hex) of everything in these options that can change what a
    /// run does or answers: model and prompts, tools and permissions, the working
    /// directory (canonicalized), sessions, MCP servers, agents, structured output,
    /// environment, settings, the CLI, extra flags, and the identity of callbacks,
    /// hooks and in-process tools (two different closures never share a key).
    ///
    /// Left out, because they do not change the answer: `timeout`, `idle_timeout`, `verbose`,
    /// `max_line_bytes`, `max_api_retries` and the stderr callback.
    ///
    /// Used as the cache key (with the prompt). It is stable within a build of this
    /// crate, not across versions.
    pub fn fingerprint(&self) -> String {
        digest(&self.fingerprint_value())
    }

    fn fingerprint_value(&self) -> Value {
        // Every field, by name: a new option does not compile until it is either part
        // of the key or named here as not changing the answer.
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
            verbose: _,
            timeout: _,
            idle_timeout: _,
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
            max_line_bytes: _,
            max_api_retries: _,
            stderr: _,
            can_use_tool,
            hooks,
            // Where transcripts are mirrored does not change an answer (runs that
            // resume, the only ones a store changes, are never cached).
            session_store: _,
            mirror: _,
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
        let cwd = cwd.as_ref().map(|c| {
            c.canonicalize()
                .unwrap_or_else(|_| c.clone())
                .display()
                .to_string()
        });
        let mcp: BTreeMap<&String, Value> = mcp_servers
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
        let hooks: Vec<Value> = hooks
            .iter()
            .map(|h| {
                let crate::hooks::HookMatcher {
                    matcher,
                    timeout,
                    block_on_failure,
                } = &h.matcher;
                json!([
                    h.event.as_str(),
                    matcher,
                    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    block_on_failure,
                    ptr(std::sync::Arc::as_ptr(&h.callback.0) as *const () as usize)
                ])
            })
            .collect();
        // What the official SDKs added since: each changes what a run does or yields.
        let parity = json!({
            "enable_file_checkpointing": enable_file_checkpointing,
            "thinking": thinking,
            "task_budget": task_budget,
            "resume_session_at": resume_session_at,
            "persist_session": persist_session,
            "plugins": plugins,
            "skills": skills,
            "sandbox": sandbox,
            "output_style": output_style,
            "agent": agent,
            "betas": betas,
            "strict_mcp_config": strict_mcp_config,
            "include_hook_events": include_hook_events,
        });
        json!({
            "parity": parity,
            "max_turns": max_turns,
            "system_prompt": system_prompt,
            "append_system_prompt": append_system_prompt,
            "cwd": cwd,
            "allowed_tools": allowed_tools,
            "disallowed_tools": disallowed_tools,
            "tools": tools,
            "permission_mode": permission_mode,
            "model": model,
            "fallback_model": fallback_model,
            "output_format": output_format,
            "continue_conversation": continue_conversation,
            "resume": resume,
            "fork_session": fork_session,
            "session_id": session_id,
            "mcp_servers": mcp,
            "env": env,
            "env_remove": env_remove,
            "inherit_env": inherit_env,
            "add_dirs": add_dirs,
            "settings": settings,
            "setting_sources": setting_sources,
            "include_partial_messages": include_partial_messages,
            "max_budget_usd": max_budget_usd,
            "effort": effort,
            "agents": agents,
            "cli_path": cli_path,
            "extra_args": extra_args,
            "can_use_tool": can_use_tool
                .as_ref()
                .map(|c| ptr(std::sync::Arc::as_ptr(&c.0) as *const () as usize)),
            "hooks": hooks,
        })
    }
}
