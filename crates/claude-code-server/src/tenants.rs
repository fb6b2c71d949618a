//! Who owns what: server sessions, the CLI conversations runs produced, and each
//! caller's figures.
//!
//! Callers are identified by a digest of their bearer token (`local` without auth).
//! The number of callers is bounded by the configured tokens, so per-caller maps are
//! bounded too; the conversation record is a bounded cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use claude_code_sdk::{ConversationManager, Message};

/// A CLI conversation (session id) some caller's run produced.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    /// The caller whose run produced it.
    pub(crate) owner: String,
    /// The conversation's cumulative cost after its last run: the sum of its runs'
    /// own costs.
    pub(crate) total_cost_usd: Option<f64>,
}

/// One caller's figures.
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures {
    /// Session starts under way (they count against the cap while they run).
    pub(crate) starting: usize,
    /// Session turns run (first turns included).
    pub(crate) session_turns: u64,
    /// Queries running now.
    pub(crate) runs_active: usize,
    /// Queries that ended without an error.
    pub(crate) runs_completed: u64,
    /// Queries that ended in an error, or whose client went away.
    pub(crate) runs_failed: u64,
}

#[derive(Debug, Default)]
struct Books {
    callers: HashMap<String, Figures>,
}

/// The server's record of ownership. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tenants {
    books: Arc<Mutex<Books>>,
    conversations: moka::sync::Cache<String, Conversation>,
    max_sessions: usize,
}

impl Tenants {
    pub(crate) fn new(max_sessions: usize, conversations: u64, idle: Duration) -> Tenants {
        Tenants {
            books: Arc::default(),
            conversations: moka::sync::Cache::builder()
                .max_capacity(conversations)
                .time_to_idle(idle)
                .build(),
            max_sessions,
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- conversations -----------------------------------------------------------

    /// Records the CLI session ids `messages` report as `owner`'s, with the last
    /// cumulative cost. An id another caller owns is left alone.
    pub(crate) fn record_run(&self, owner: &str, messages: &[Message]) {
        for message in messages {
            self.record_message(owner, message);
        }
    }

    /// [`record_run`](Tenants::record_run) for one message (an `init` or a result).
    pub(crate) fn record_message(&self, owner: &str, message: &Message) {
        let (id, cost) = match message {
            Message::Result(r) => (r.session_id.as_str(), r.turn_cost_usd),
            Message::System(s) if s.subtype == "init" => match &s.session_id {
                Some(id) => (id.as_str(), None),
                None => return,
            },
            _ => return,
        };
        if id.is_empty() {
            return;
        }
        let known = self.conversations.get(id);
        if let Some(known) = &known
            && known.owner != owner
        {
            tracing::warn!(
                session = id,
                "a run reported a session id another caller owns; ownership is unchanged"
            );
            return;
        }
        // The conversation's total is the sum of its runs' own costs (the CLI's running
        // total restarts when a process was killed).
        let before = known.and_then(|k| k.total_cost_usd);
        let total = match (before, cost) {
            (Some(before), Some(cost)) => Some(before + cost),
            (before, cost) => before.or(cost),
        };
        self.conversations.insert(
            id.to_owned(),
            Conversation {
                owner: owner.to_owned(),
                total_cost_usd: total,
            },
        );
    }

    /// The conversation, if `owner`'s runs produced it.
    pub(crate) fn conversation(&self, owner: &str, id: &str) -> Option<Conversation> {
        self.conversations.get(id).filter(|c| c.owner == owner)
    }

    // --- sessions ----------------------------------------------------------------

    /// Room for one more session of `owner`, who has `open` sessions: the start counts
    /// against the caller's cap until the ticket is committed or dropped. `None` when
    /// the caller is at its cap.
    pub(crate) fn start_session(
        &self,
        owner: &str,
        open: usize,
        id: &str,
        manager: &ConversationManager,
    ) -> Option<StartTicket> {
        let mut books = self.books();
        let figures = books.callers.entry(owner.to_owned()).or_default();
        if open + figures.starting >= self.max_sessions {
            return None;
        }
        figures.starting += 1;
        Some(StartTicket {
            tenants: self.clone(),
            owner: owner.to_owned(),
            id: id.to_owned(),
            manager: manager.clone(),
            done: false,
        })
    }

    /// Counts a session turn of `owner`.
    pub(crate) fn count_session_turn(&self, owner: &str) {
        self.books()
            .callers
            .entry(owner.to_owned())
            .or_default()
            .session_turns += 1;
    }

    // --- runs ----------------------------------------------------------------------

    /// Counts a query of `owner` as running until the guard finishes or drops (a
    /// dropped guard counts as failed: the client went away).
    pub(crate) fn run(&self, owner: &str) -> RunGuard {
        self.books()
            .callers
            .entry(owner.to_owned())
            .or_default()
            .runs_active += 1;
        RunGuard {
            tenants: self.clone(),
            owner: owner.to_owned(),
            done: false,
        }
    }

    // --- figures -------------------------------------------------------------------

    /// `owner`'s figures.
    pub(crate) fn figures(&self, owner: &str) -> Figures {
        self.books().callers.get(owner).cloned().unwrap_or_default()
    }
}

/// A session start under way; see [`Tenants::start_session`].
pub(crate) struct StartTicket {
    tenants: Tenants,
    owner: String,
    id: String,
    manager: ConversationManager,
    done: bool,
}

impl StartTicket {
    /// The first turn produced a conversation: the session exists (its record, owned
    /// by the caller, is in the conversation manager's store).
    pub(crate) fn commit(mut self) {
        self.release();
        self.done = true;
    }

    /// The first turn failed: ends whatever the manager kept of it.
    pub(crate) async fn abandon(mut self) {
        // Released first: a drop while `end` runs must not release twice.
        self.release();
        self.done = true;
        let _ = self.manager.end(&self.id).await;
    }

    fn release(&self) {
        let mut books = self.tenants.books();
        if let Some(figures) = books.callers.get_mut(&self.owner) {
            figures.starting = figures.starting.saturating_sub(1);
        }
    }
}

impl Drop for StartTicket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The request was dropped mid-start (its client went away): nothing of it may
        // stay. The manager keeps a conversation only once a turn finished, which can
        // have happened just before the drop.
        self.release();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let manager = self.manager.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let _ = manager.end(&id).await;
            });
        }
    }
}

/// A query counted as running; see [`Tenants::run`].
pub(crate) struct RunGuard {
    tenants: Tenants,
    owner: String,
    done: bool,
}

impl RunGuard {
    /// The query ended, well or not.
    pub(crate) fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut books = self.tenants.books();
        if let Some(figures) = books.callers.get_mut(&self.owner) {
            figures.runs_active = figures.runs_active.saturating_sub(1);
            if ok {
                figures.runs_completed += 1;
            } else {
                figures.runs_failed += 1;
            }
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.end(false);
    }
}
