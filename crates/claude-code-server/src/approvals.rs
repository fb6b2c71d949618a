//! Tool-use approvals answered from a browser.
//!
//! A streaming query with `"approvals": true` gets a permission callback that turns
//! each question of the CLI into a `permission_request` event on the client's stream
//! and waits for `POST /v1/approvals/{id}`. No answer within the approval timeout, or
//! a client that went away, is a denial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_code_sdk::{PermissionDecision, ToolPermissionContext};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::{ApprovalAnswer, PermissionRequest};

/// A request waiting for its answer, and who may give it.
#[derive(Debug)]
struct Pending {
    owner: String,
    answer: oneshot::Sender<ApprovalAnswer>,
}

/// Pending approvals by id.
#[derive(Debug, Clone)]
pub struct Approvals {
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    shutdown: CancellationToken,
}

impl Approvals {
    pub(crate) fn new(shutdown: CancellationToken) -> Approvals {
        Approvals {
            pending: Arc::default(),
            shutdown,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `owner`'s answer; `false` when no request with that id waits for this
    /// owner (answered, expired, unknown, or another caller's).
    pub fn answer(&self, id: &str, owner: &str, answer: ApprovalAnswer) -> bool {
        let mut pending = self.pending();
        if pending.get(id).is_none_or(|p| p.owner != owner) {
            return false;
        }
        match pending.remove(id) {
            Some(p) => p.answer.send(answer).is_ok(),
            None => false,
        }
    }

    /// How many approvals wait for an answer.
    pub fn waiting(&self) -> usize {
        self.pending().len()
    }

    /// Asks the client on `events` and waits up to `timeout` for the answer of
    /// `owner` (the caller who started the run).
    pub(crate) async fn ask(
        &self,
        events: &mpsc::Sender<PermissionRequest>,
        owner: &str,
        tool_name: String,
        input: Value,
        context: ToolPermissionContext,
        timeout: Duration,
    ) -> PermissionDecision {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending().insert(
            id.clone(),
            Pending {
                owner: owner.to_owned(),
                answer: tx,
            },
        );
        let forget = Forget {
            approvals: self,
            id: &id,
        };
        let request = PermissionRequest {
            approval_id: id.clone(),
            tool_name: tool_name.clone(),
            input,
            blocked_path: context.blocked_path,
            expires_in_secs: timeout.as_secs(),
        };
        if events.send(request).await.is_err() {
            return PermissionDecision::deny("the client that could approve this is gone");
        }
        let answer = tokio::select! {
            answer = tokio::time::timeout(timeout, rx) => answer,
            () = self.shutdown.cancelled() => {
                return PermissionDecision::deny("the server is shutting down");
            }
        };
        drop(forget);
        match answer {
            Ok(Ok(ApprovalAnswer {
                allow: true,
                updated_input,
                ..
            })) => PermissionDecision::Allow {
                updated_input,
                updated_permissions: Vec::new(),
            },
            Ok(Ok(ApprovalAnswer { message, .. })) => PermissionDecision::deny(
                message.unwrap_or_else(|| format!("the user denied {tool_name}")),
            ),
            Ok(Err(_)) | Err(_) => PermissionDecision::deny(format!(
                "nobody approved {tool_name} within {} s",
                timeout.as_secs()
            )),
        }
    }
}

struct Forget<'a> {
    approvals: &'a Approvals,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.approvals.pending().remove(self.id);
    }
}
