//! Serving the CLI's requests from the options' callbacks: permission prompts
//! (`can_use_tool`), hooks (`hook_callback`) and in-process MCP servers
//! (`mcp_message`), plus the SDK's own permission guard.
//!
//! The guard is a `PreToolUse` hook the SDK always registers. It makes the Python SDK's
//! permission modes hold where CLI flags alone cannot:
//!
//! - [`ReadOnly`](PermissionMode::ReadOnly): denies any tool with side effects that
//!   slipped into the tool set;
//! - [`Strict`](PermissionMode::Strict): asks the permission callback before every
//!   tool use not named in `allowed_tools`, reads included, and denies when there is
//!   no callback.
//!
//! It follows [`ClaudeClient::set_permission_mode`](crate::ClaudeClient::set_permission_mode).

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use serde_json::{Value, json};

use super::router::RequestHandler;
use crate::error::{Error, ErrorKind};
use crate::hooks::{
    HookContext, HookEvent, HookInput, HookOutput, HookRegistration, initialize_hooks,
};
use crate::message::ResultMessage;
use crate::options::{ClaudeCodeOptions, McpServerConfig, PermissionMode, has_side_effects};
use crate::permission::{CanUseTool, PermissionDecision, ToolPermissionContext};
use crate::tools::SdkMcpServer;
use crate::util::lock;

/// The callback id of the SDK's permission guard hook.
pub(crate) const GUARD_ID: &str = "sdk_permission_guard";

pub(crate) struct Dispatcher {
    /// The hooks the CLI was told about at `initialize`: fixed for the process.
    hooks_field: Value,
    /// The callbacks of the run the process serves now (see [`Dispatcher::rebind`]).
    bound: Mutex<Bound>,
    /// Tool uses your callback or hooks chose to deny.
    decided: Mutex<HashSet<String>>,
}

/// The callbacks of one run.
#[derive(Clone)]
struct Bound {
    can_use_tool: Option<CanUseTool>,
    hooks: HashMap<String, HookRegistration>,
    servers: HashMap<String, SdkMcpServer>,
    allowed_tools: Vec<String>,
    mode: Option<PermissionMode>,
}

impl Bound {
    fn of(options: &ClaudeCodeOptions) -> Bound {
        let (_, ids) = initialize_hooks(&options.hooks);
        let servers = options
            .mcp_servers
            .values()
            .filter_map(|config| match config {
                McpServerConfig::Sdk(server) => Some((server.name().to_owned(), server.clone())),
                _ => None,
            })
            .collect();
        Bound {
            can_use_tool: options.can_use_tool.clone(),
            hooks: ids.into_iter().collect(),
            servers,
            allowed_tools: options.allowed_tools.clone(),
            mode: options.permission_mode,
        }
    }
}

impl Dispatcher {
    pub(crate) fn new(options: &ClaudeCodeOptions) -> Arc<Self> {
        let (mut hooks_field, _) = initialize_hooks(&options.hooks);
        let guard = json!({"matcher": null, "hookCallbackIds": [GUARD_ID]});
        if !hooks_field.is_object() {
            hooks_field = json!({});
        }
        match hooks_field["PreToolUse"].as_array_mut() {
            Some(list) => list.insert(0, guard),
            None => hooks_field["PreToolUse"] = json!([guard]),
        }
        Arc::new(Dispatcher {
            hooks_field,
            bound: Mutex::new(Bound::of(options)),
            decided: Mutex::new(HashSet::new()),
        })
    }

    /// Serves the next run's requests with its callbacks: a process started for one
    /// run (a spare, a hot conversation) taking another whose callbacks have the same
    /// shape (the pool's keys make sure of that).
    pub(crate) fn rebind(&self, options: &ClaudeCodeOptions) {
        *lock(&self.bound) = Bound::of(options);
        lock(&self.decided).clear();
    }

    fn bound(&self) -> Bound {
        lock(&self.bound).clone()
    }

    /// The `initialize` request, hooks included.
    pub(crate) fn initialize_request(&self) -> Value {
        json!({"subtype": "initialize", "hooks": self.hooks_field})
    }

    /// Follows a permission mode change.
    pub(crate) fn set_mode(&self, mode: PermissionMode) {
        lock(&self.bound).mode = Some(mode);
    }

    fn decide_denial(&self, tool_use_id: Option<&str>) {
        if let Some(id) = tool_use_id {
            lock(&self.decided).insert(id.to_owned());
        }
    }

    /// The error a result stands for, given what the callbacks decided: denials your
    /// callback or hooks chose are reported in the result but are not errors; a denial
    /// nobody decided (nobody to ask, the SDK's guard) is.
    pub(crate) fn result_error(&self, result: &ResultMessage) -> Option<Error> {
        let err = result.to_error()?;
        if err.kind() != ErrorKind::PermissionDenied {
            return Some(err);
        }
        let decided = lock(&self.decided);
        let undecided = result
            .permission_denials
            .iter()
            .any(|d| !decided.contains(&d.tool_use_id));
        undecided.then_some(err)
    }

    fn mode(&self) -> Option<PermissionMode> {
        lock(&self.bound).mode
    }

    pub(crate) fn handler(self: &Arc<Self>) -> RequestHandler {
        let this = Arc::clone(self);
        Arc::new(move |subtype: String, request: Value| {
            let this = Arc::clone(&this);
            Box::pin(async move {
                let serve = this.serve(&subtype, request);
                match AssertUnwindSafe(serve).catch_unwind().await {
                    Ok(answer) => answer,
                    Err(_) => Err(format!("the SDK's {subtype} handler panicked")),
                }
            })
        })
    }

    async fn serve(&self, subtype: &str, request: Value) -> Result<Value, String> {
        match subtype {
            "can_use_tool" => Ok(self.can_use_tool(request).await),
            "hook_callback" => self.hook_callback(request).await,
            "mcp_message" => Ok(self.mcp_message(request).await),
            other => Err(format!("Unsupported control request subtype: {other}")),
        }
    }

    async fn can_use_tool(&self, request: Value) -> Value {
        let tool = request["tool_name"].as_str().unwrap_or("").to_owned();
        let input = request.get("input").cloned().unwrap_or(json!({}));
        let decision = match &self.bound().can_use_tool {
            Some(callback) => {
                let context = ToolPermissionContext::from_request(&request);
                let decision = callback.call(tool, input.clone(), context).await;
                if !decision.is_allow() {
                    self.decide_denial(request["tool_use_id"].as_str());
                }
                decision
            }
            None => PermissionDecision::deny("no permission callback is set"),
        };
        decision.to_wire(&input)
    }

    async fn hook_callback(&self, request: Value) -> Result<Value, String> {
        let id = request["callback_id"].as_str().unwrap_or("").to_owned();
        let raw_input = request.get("input").cloned().unwrap_or(Value::Null);
        let tool_use_id = request["tool_use_id"].as_str().map(str::to_owned);
        if id == GUARD_ID {
            return Ok(self.guard(&raw_input).await.to_wire(&HookEvent::PreToolUse));
        }
        let Some(hook) = self.bound().hooks.get(&id).cloned() else {
            return Err(format!("no hook with callback id {id}"));
        };
        let input = HookInput::from_wire(raw_input);
        let event = if matches!(input.event, HookEvent::Other(ref n) if n.is_empty()) {
            hook.event.clone()
        } else {
            input.event.clone()
        };
        let context = HookContext { callback_id: id };
        match (hook.callback.0)(input, tool_use_id.clone(), context).await {
            Ok(output) => {
                if output.refuses() {
                    self.decide_denial(tool_use_id.as_deref());
                }
                Ok(output.to_wire(&event))
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// The SDK's permission guard (see the module docs).
    async fn guard(&self, input: &Value) -> HookOutput {
        let tool = input["tool_name"].as_str().unwrap_or("");
        match self.mode() {
            Some(PermissionMode::ReadOnly) if has_side_effects(tool) => HookOutput::deny(format!(
                "read-only mode: {tool} may change files or run commands"
            )),
            Some(PermissionMode::Strict) if !self.pre_approved(tool) => {
                let tool_input = input.get("tool_input").cloned().unwrap_or(json!({}));
                let Some(callback) = self.bound().can_use_tool else {
                    return HookOutput::deny(format!(
                        "strict mode: {tool} needs approval and no permission callback is set"
                    ));
                };
                let context = ToolPermissionContext {
                    tool_use_id: input["tool_use_id"].as_str().map(str::to_owned),
                    strict_guard: true,
                    raw: input.clone(),
                    ..Default::default()
                };
                let decision = callback.call(tool.to_owned(), tool_input, context).await;
                if !decision.is_allow() {
                    self.decide_denial(input["tool_use_id"].as_str());
                }
                match decision {
                    PermissionDecision::Allow { updated_input, .. } => {
                        let mut out = HookOutput::allow();
                        out.updated_input = updated_input;
                        out
                    }
                    PermissionDecision::Deny { message, interrupt } => {
                        let mut out = HookOutput::deny(message.clone());
                        if interrupt {
                            out.continue_ = Some(false);
                            out.stop_reason = Some(message);
                        }
                        out
                    }
                }
            }
            _ => HookOutput::default(),
        }
    }

    /// Whether `allowed_tools` names the tool itself. A pattern (`Bash(git status:*)`)
    /// does not count: the guard cannot tell what it covers, so such tool uses are
    /// still asked about (or denied without a callback).
    fn pre_approved(&self, tool: &str) -> bool {
        lock(&self.bound)
            .allowed_tools
            .iter()
            .any(|allowed| allowed.trim() == tool)
    }

    async fn mcp_message(&self, request: Value) -> Value {
        let name = request["server_name"].as_str().unwrap_or("");
        let message = request.get("message").cloned().unwrap_or(Value::Null);
        let server = self.bound().servers.get(name).cloned();
        let response = match server {
            Some(server) => server.handle(message).await,
            None => json!({
                "jsonrpc": "2.0",
                "id": message.get("id"),
                "error": {"code": -32601, "message": format!("no SDK MCP server named {name}")},
            }),
        };
        json!({"mcp_response": response})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookMatcher;

    fn guard_answer(dispatcher: &Arc<Dispatcher>, tool: &str) -> Value {
        let handler = dispatcher.handler();
        let request = json!({
            "subtype": "hook_callback", "callback_id": GUARD_ID,
            "input": {"hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": {}},
        });
        futures::executor::block_on(handler("hook_callback".into(), request)).unwrap()
    }

    #[test]
    fn guard_follows_the_mode() {
        let options = ClaudeCodeOptions::builder()
            .permission_mode(PermissionMode::ReadOnly)
            .allowed_tools(["Glob"])
            .hook(
                HookEvent::PreToolUse,
                HookMatcher::new("Bash"),
                |_, _, _| async { Ok(HookOutput::default()) },
            )
            .build()
            .unwrap();
        let d = Dispatcher::new(&options);
        let init = d.initialize_request();
        let pre = init["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(pre[0]["hookCallbackIds"][0], GUARD_ID);
        assert_eq!(pre[1]["matcher"], "Bash");

        let write = guard_answer(&d, "Write");
        assert_eq!(write["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(guard_answer(&d, "Read"), json!({}));

        d.set_mode(PermissionMode::Strict);
        assert_eq!(
            guard_answer(&d, "Read")["hookSpecificOutput"]["permissionDecision"],
            "deny"
        );
        assert_eq!(guard_answer(&d, "Glob"), json!({}));
        let patterned = Dispatcher::new(
            &ClaudeCodeOptions::builder()
                .permission_mode(PermissionMode::Strict)
                .allowed_tools(["Bash(git status:*)"])
                .build()
                .unwrap(),
        );
        assert_eq!(
            guard_answer(&patterned, "Bash")["hookSpecificOutput"]["permissionDecision"],
            "deny",
            "a pattern does not pre-approve the whole tool"
        );
        d.set_mode(PermissionMode::AcceptEdits);
        assert_eq!(guard_answer(&d, "Write"), json!({}));
    }

    #[test]
    fn unknown_subtypes_and_panics_are_errors() {
        let options = ClaudeCodeOptions::builder()
            .hook(HookEvent::Stop, HookMatcher::all(), |_, _, _| async {
                if true {
                    panic!("hook bug");
                }
                Ok(HookOutput::default())
            })
            .build()
            .unwrap();
        let d = Dispatcher::new(&options);
        let handler = d.handler();
        let err = futures::executor::block_on(handler("teleport".into(), json!({}))).unwrap_err();
        assert!(err.contains("teleport"));
        let request = json!({"callback_id": "hook_0", "input": {"hook_event_name": "Stop"}});
        let err =
            futures::executor::block_on(handler("hook_callback".into(), request)).unwrap_err();
        assert!(err.contains("panicked"));
    }
}
