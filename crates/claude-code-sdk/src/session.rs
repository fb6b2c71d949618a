//! [`claude_session`]: the seed's `async with claude_session(...)` as a scoped value.
//!
//! ```no_run
//! use claude_code_sdk::claude_session;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let session = claude_session("/srv/app", 5).await?;
//! let first = session.query("List the modules of this project").await?;
//! let second = session.query("Which one has no tests?").await?; // same conversation
//! session.close().await?; // or just drop it: its processes are killed
//! # Ok(()) }
//! ```
//!
//! A [`ClaudeSession`] is one [`ClaudeClient`] whose turns are collected for you. When
//! it goes out of scope its CLI process group is killed, on any path out of the scope,
//! errors and panics included; [`ClaudeSession::close`] ends it gracefully instead.

use std::path::Path;

use crate::client::ClaudeClient;
use crate::error::Result;
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::query::{Prompt, collect_ok};

/// A conversation that cleans up after itself. See the [module docs](crate::session).
#[derive(Debug)]
pub struct ClaudeSession {
    client: ClaudeClient,
}

/// Opens a session working in `project_path` with at most `max_turns` model round
/// trips per prompt.
///
/// # Errors
///
/// Invalid options (a missing directory), a missing CLI, a failed start.
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
    let options = options
        .to_builder()
        .cwd(project_path.as_ref())
        .max_turns(max_turns)
        .build()?;
    ClaudeSession::open(options).await
}

impl ClaudeSession {
    /// Opens a session with any options.
    ///
    /// # Errors
    ///
    /// See [`ClaudeClient::connect`].
    pub async fn open(options: ClaudeCodeOptions) -> Result<ClaudeSession> {
        Ok(ClaudeSession {
            client: ClaudeClient::connect(options).await?,
        })
    }

    /// Runs one turn and returns its messages.
    ///
    /// # Errors
    ///
    /// The turn's error, after which the session is still usable unless the CLI died.
    pub async fn query(&self, prompt: impl Into<Prompt>) -> Result<Vec<Message>> {
        self.client.query(prompt).await?;
        collect_ok(self.client.receive_response()).await
    }

    /// The underlying client, for interrupts, mode and model changes.
    pub fn client(&self) -> &ClaudeClient {
        &self.client
    }

    /// Ends the session gracefully.
    ///
    /// # Errors
    ///
    /// See [`ClaudeClient::close`].
    pub async fn close(self) -> Result<()> {
        self.client.close().await
    }
}
