//! Permission callbacks: your code decides, tool use by tool use.
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeCodeOptions, PermissionDecision, PermissionMode};
//!
//! let options = ClaudeCodeOptions::builder()
//!     .permission_mode(PermissionMode::AskForEdits)
//!     .can_use_tool(|tool_name, input, context| async move {
//!         if tool_name == "Bash" && input["command"].as_str().unwrap_or("").contains("rm ") {
//!             return PermissionDecision::deny("no deleting");
//!         }
//!         PermissionDecision::allow()
//!     })
//!     .build()?;
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! Setting a callback runs the CLI with `--permission-prompt-tool stdio`: whenever the
//! CLI would ask a person, it asks your callback instead (a `can_use_tool` control
//! request). In [`Strict`](crate::PermissionMode::Strict) mode the SDK also asks it
//! before tool uses the CLI would let through on its own, such as reads.
//!
//! An allow always sends `updatedInput` (the original input when you did not change
//! it), as the CLI requires.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

/// What the callback decided.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PermissionDecision {
    /// Run the tool.
    Allow {
        /// Run it with this input instead of the model's.
        updated_input: Option<Value>,
        /// Permission rule updates to apply (the CLI's `updatedPermissions`; see the
        /// suggestions in [`ToolPermissionContext::suggestions`] for their shape).
        updated_permissions: Vec<Value>,
    },
    /// Do not run it.
    Deny {
        /// Why: the model sees this.
        message: String,
        /// Also stop the turn.
        interrupt: bool,
    },
}

impl PermissionDecision {
    /// Allow, with the model's input.
    pub fn allow() -> Self {
        PermissionDecision::Allow {
            updated_input: None,
            updated_permissions: Vec::new(),
        }
    }

    /// Allow, with a rewritten input.
    pub fn allow_with_input(input: Value) -> Self {
        PermissionDecision::Allow {
            updated_input: Some(input),
            updated_permissions: Vec::new(),
        }
    }

    /// Deny, telling the model why.
    pub fn deny(message: impl Into<String>) -> Self {
        PermissionDecision::Deny {
            message: message.into(),
            interrupt: false,
        }
    }

    /// Deny and stop the turn.
    pub fn deny_and_interrupt(message: impl Into<String>) -> Self {
        PermissionDecision::Deny {
            message: message.into(),
            interrupt: true,
        }
    }

    /// Whether this allows the tool use.
    pub fn is_allow(&self) -> bool {
        matches!(self, PermissionDecision::Allow { .. })
    }

    /// The `can_use_tool` answer for the CLI.
    pub(crate) fn to_wire(&self, original_input: &Value) -> Value {
        match self {
            PermissionDecision::Allow {
                updated_input,
                updated_permissions,
            } => {
                let mut answer = json!({
                    "behavior": "allow",
                    "updatedInput": updated_input.as_ref().unwrap_or(original_input),
                });
                if !updated_permissions.is_empty() {
                    answer["updatedPermissions"] = Value::Array(updated_permissions.clone());
                }
                answer
            }
            PermissionDecision::Deny { message, interrupt } => json!({
                "behavior": "deny",
                "message": message,
                "interrupt": interrupt,
            }),
        }
    }
}

/// What the CLI tells the callback besides the tool and its input.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ToolPermissionContext {
    /// Permission updates the CLI suggests (e.g. "always allow this command").
    pub suggestions: Vec<Value>,
    /// The path that needs permission, when a file is involved.
    pub blocked_path: Option<String>,
    /// Why the CLI asks.
    pub decision_reason: Option<String>,
    /// The tool use id.
    pub tool_use_id: Option<String>,
    /// The subagent asking, if any.
    pub agent_id: Option<String>,
    /// `true` when the SDK asks on behalf of [`Strict`](crate::PermissionMode::Strict)
    /// mode for a tool use the CLI itself would have let through.
    pub strict_guard: bool,
    /// The whole request, as the CLI sent it.
    pub raw: Value,
}

impl ToolPermissionContext {
    pub(crate) fn from_request(request: &Value) -> Self {
        let text = |key: &str| request.get(key).and_then(Value::as_str).map(str::to_owned);
        let reason = match request.get("decision_reason") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        ToolPermissionContext {
            suggestions: request
                .get("permission_suggestions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            blocked_path: text("blocked_path"),
            decision_reason: reason,
            tool_use_id: text("tool_use_id"),
            agent_id: text("agent_id"),
            strict_guard: false,
            raw: request.clone(),
        }
    }
}

/// A permission callback, shareable and cheap to clone.
#[derive(Clone)]
pub struct CanUseTool(
    pub(crate)  Arc<
        dyn Fn(String, Value, ToolPermissionContext) -> BoxFuture<'static, PermissionDecision>
            + Send
            + Sync,
    >,
);

impl CanUseTool {
    /// Wraps an async function `(tool_name, input, context) -> PermissionDecision`.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(String, Value, ToolPermissionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PermissionDecision> + Send + 'static,
    {
        CanUseTool(Arc::new(move |name, input, ctx| {
            Box::pin(f(name, input, ctx))
        }))
    }

    pub(crate) async fn call(
        &self,
        tool_name: String,
        input: Value,
        context: ToolPermissionContext,
    ) -> PermissionDecision {
        (self.0)(tool_name, input, context).await
    }
}

impl fmt::Debug for CanUseTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CanUseTool(<callback>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_always_sends_the_input() {
        let input = json!({"command": "ls"});
        let wire = PermissionDecision::allow().to_wire(&input);
        assert_eq!(wire["behavior"], "allow");
        assert_eq!(wire["updatedInput"], input);
        let wire = PermissionDecision::allow_with_input(json!({"command": "pwd"})).to_wire(&input);
        assert_eq!(wire["updatedInput"]["command"], "pwd");
        let wire = PermissionDecision::deny_and_interrupt("no").to_wire(&input);
        assert_eq!(
            wire,
            json!({"behavior": "deny", "message": "no", "interrupt": true})
        );
    }
}
