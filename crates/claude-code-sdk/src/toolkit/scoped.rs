//! [`claude_session`]: the Python SDK's `async with claude_session(...)` as a scoped
//! value.
//!
//! ```no_run
//! use claude_code_sdk::claude_session;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let session = claude_session("/srv/app", 5).await?;
//! let first = session.query("List the modules of this project").await?;
//! let second = session.query("Which one has no tests?").await?; // same conversation
//! session.close().await?; // or just drop it: its process is killed
//! # Ok(()) }
//! ```
//!
//! A [`ClaudeSession`] is one conversation whose turns are collected for you. Its turns
//! run on a [`Runner`]: by default a pool of its own with one process, which stays hot
//! between turns; [`claude_session_on`] runs them on yours (a shared
//! [`QueryPool`]. When the session goes out of scope its process is
//! ended, on any path out of the scope, errors and panics included.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Result;
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::prompt::Prompt;
use crate::runner::Runner;
use crate::toolkit::pool::{PoolConfig, QueryPool};
use crate::util::lock;

/// A conversation that cleans up after itself. See the [module docs](crate::toolkit::scoped).
pub struct ClaudeSession {
    runner: Arc<dyn Runner>,
    /// The session's own pool, when it has one.
    own: Option<QueryPool>,
    options: ClaudeCodeOptions,
    session_id: Mutex<Option<String>>,
}

/// Opens a session working in `project_path` with at most `max_turns` model round
/// trips per prompt.
///
/// # Errors
///
/// Invalid options (a missing directory).
pub async fn claude_session(
    project_path: impl AsRef<Path>,
    max_turns: u32,
) -> Result<ClaudeSession> {
    claude_session_with(ClaudeCodeOptions::default(), project_path, max_turns).await
}

/// Opens a session working in `project_path` with at most `max_turns` model round
/// trips per prompt, on top of `options` (environment, CLI path, model, ...).
///
/// # Errors
///
/// See [`claude_session`].
pub async fn claude_session_with(
    options: ClaudeCodeOptions,
    project_path: impl AsRef<Path>,
    max_turns: u32,
) -> Result<ClaudeSession> {
    let pool = own_pool();
    let mut session = claude_session_on(pool.clone(), options, project_path, max_turns).await?;
    session.own = Some(pool);
    Ok(session)
}

/// A pool for one conversation: one process, hot between turns for as long as the
/// session lives.
fn own_pool() -> QueryPool {
    QueryPool::new(
        PoolConfig {
            max_concurrent: 1,
            ..PoolConfig::default()
        }
        .hot(1, Duration::from_secs(u64::from(u32::MAX))),
    )
}

/// Opens a session whose turns run on `runner`.
///
/// # Errors
///
/// See [`claude_session`].
pub async fn claude_session_on(
    runner: impl Runner + 'static,
    options: ClaudeCodeOptions,
    project_path: impl AsRef<Path>,
    max_turns: u32,
) -> Result<ClaudeSession> {
    let options = options
        .to_builder()
        .cwd(project_path.as_ref())
        .max_turns(max_turns)
        .build()?;
    Ok(ClaudeSession {
        runner: Arc::new(runner),
        own: None,
        options,
        session_id: Mutex::new(None),
    })
}

impl ClaudeSession {
    /// Opens a session with any options (its `cwd` is the project), on a pool of its
    /// own.
    ///
    /// # Errors
    ///
    /// Invalid options.
    pub async fn open(options: ClaudeCodeOptions) -> Result<ClaudeSession> {
        options.validate()?;
        let pool = own_pool();
        Ok(ClaudeSession {
            runner: Arc::new(pool.clone()),
            own: Some(pool),
            options,
            session_id: Mutex::new(None),
        })
    }

    /// Runs one turn and returns its messages.
    ///
    /// # Errors
    ///
    /// The turn's error, after which the session is still usable.
    pub async fn query(&self, prompt: impl Into<Prompt>) -> Result<Vec<Message>> {
        let options = match lock(&self.session_id).clone() {
            Some(session) => self.options.to_builder().resume(session).build()?,
            None => self.options.clone(),
        };
        let (messages, error) = self
            .runner
            .run_turn(prompt.into(), options)
            .await?
            .collect_messages()
            .await;
        if let Some(session) = messages.iter().rev().find_map(Message::session_id) {
            *lock(&self.session_id) = Some(session.to_owned());
        }
        match error {
            Some(err) => Err(err),
            None => Ok(messages),
        }
    }

    /// The conversation's session id, once its first turn has run.
    pub fn session_id(&self) -> Option<String> {
        lock(&self.session_id).clone()
    }

    /// The CLI's process id between turns, when the session runs on its own pool.
    pub fn pid(&self) -> Option<u32> {
        self.own.as_ref()?.hot_pid(&self.session_id()?)
    }

    /// Ends the session: its process is stopped.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for reporting a failed shutdown.
    pub async fn close(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}

impl Drop for ClaudeSession {
    fn drop(&mut self) {
        if let Some(session) = lock(&self.session_id).take() {
            self.runner.end_conversation(&session);
        }
    }
}

impl std::fmt::Debug for ClaudeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeSession")
            .field("session_id", &self.session_id())
            .finish()
    }
}
