//! Tool-use approvals answered from a browser.
//!
//! A streaming query with `"approvals": true` gets a permission callback that turns
//! each question of the CLI into a `permission_request` event on the client's stream
//! and waits for `POST /v1/approvals/{id}`. No answer within the approval timeout, or
//! a client that went away, is a denial.
//!
//! An answer may rewrite the tool's input (`updated_input`) only where the server can
//! check the result: the path fields of `Read`, `Write`, `Edit`, `MultiEdit`
//! (`file_path`), `NotebookEdit` (`notebook_path`), `Grep` and `Glob` (`path`) must
//! stay inside the project root (see [`crate::confine`]); any other tool's input may
//! only be repeated unchanged. A refused rewrite answers `400` and the request stays
//! pending, to be answered again or to expire (a denial).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    tool_name: String,
    input: Value,
    cwd: PathBuf,
    answer: oneshot::Sender<ApprovalAnswer>,
}

/// Pending approvals by id.
#[derive(Debug, Clone)]
pub struct Approvals {
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    root: Arc<Path>,
    shutdown: CancellationToken,
}

/// Why an answer was not delivered.
#[derive(Debug)]
pub(crate) enum AnswerError {
    /// No request with that id waits for this caller.
    NotFound,
    /// The answer's `updated_input` is refused; the request still waits.
    Refused(String),
}

/// What the server decides about a permission request before anyone is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AskPolicy {
    /// Deny requests about paths outside the project root without asking.
    pub(crate) deny_outside_project: bool,
}

impl Approvals {
    pub(crate) fn new(shutdown: CancellationToken, root: &Path) -> Approvals {
        Approvals {
            pending: Arc::default(),
            root: Arc::from(root),
            shutdown,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `owner`'s answer, after checking its `updated_input` (see the module
    /// docs).
    pub(crate) fn answer(
        &self,
        id: &str,
        owner: &str,
        answer: ApprovalAnswer,
    ) -> Result<(), AnswerError> {
        if let (true, Some(rewritten)) = (answer.allow, &answer.updated_input) {
            let (tool, original, cwd) = {
                let pending = self.pending();
                match pending.get(id) {
                    Some(p) if p.owner == owner => {
                        (p.tool_name.clone(), p.input.clone(), p.cwd.clone())
                    }
                    _ => return Err(AnswerError::NotFound),
                }
            };
            // File-system look-ups, outside the lock.
            crate::confine::check_rewrite(&self.root, &cwd, &tool, &original, rewritten)
                .map_err(AnswerError::Refused)?;
        }
        let mut pending = self.pending();
        if pending.get(id).is_none_or(|p| p.owner != owner) {
            return Err(AnswerError::NotFound);
        }
        match pending.remove(id).map(|p| p.answer.send(answer)) {
            Some(Ok(())) => Ok(()),
            _ => Err(AnswerError::NotFound),
        }
    }

    /// How many approvals wait for an answer.
    pub fn waiting(&self) -> usize {
        self.pending().len()
    }

    /// How many approvals wait for `owner`'s answer.
    pub(crate) fn waiting_for(&self, owner: &str) -> usize {
        self.pending().values().filter(|p| p.owner == owner).count()
    }

    /// Asks the client on `events` and waits up to `timeout` for the answer of
    /// `owner` (the caller who started the run, in `cwd`). With
    /// `policy.deny_outside_project`, a request about a path outside the project root
    /// is denied without asking.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn ask(
        &self,
        events: &mpsc::Sender<PermissionRequest>,
        owner: &str,
        cwd: &Path,
        policy: AskPolicy,
        tool_name: String,
        input: Value,
        context: ToolPermissionContext,
        timeout: Duration,
    ) -> PermissionDecision {
        if policy.deny_outside_project {
            let outside = crate::confine::outside_paths(
                &self.root,
                cwd,
                &tool_name,
                &input,
                context.blocked_path.as_deref(),
            );
            if !outside.is_empty() {
                return PermissionDecision::deny(format!(
                    "{tool_name} was denied: this server does not allow access outside the \
                     project"
                ));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending().insert(
            id.clone(),
            Pending {
                owner: owner.to_owned(),
                tool_name: tool_name.clone(),
                input: input.clone(),
                cwd: cwd.to_owned(),
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
