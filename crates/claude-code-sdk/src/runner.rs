//! [`Runner`]: "run this prompt with these options, give me its messages": the seam
//! between the toolkit and where a run executes.
//!
//! [`DirectRunner`] starts a new CLI for each run (what [`query()`](crate::query())
//! does); [`QueryPool`](crate::QueryPool) runs on warm processes within a bound. The
//! toolkit takes any runner, so its pieces compose:
//!
//! ```no_run
//! use std::time::Duration;
//! use claude_code_sdk::{
//!     ClaudeCodeOptions, PoolConfig, QueryPool, ResponseCache, RetryPolicy, Retrying,
//! };
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let pool = QueryPool::new(PoolConfig::default());
//! // cache → retry → pool
//! let runner = Retrying::new(pool.clone(), RetryPolicy::exponential(3, Duration::from_millis(500)));
//! let cache = ResponseCache::new(64 << 20, Duration::from_secs(600));
//! let options = ClaudeCodeOptions::builder().cwd("/srv/app").build()?;
//! let answer = cache.query(&runner, "What does this project do?", options).await?;
//! # Ok(()) }
//! ```
//!
//! Implement [`Runner`] to run elsewhere (a fleet of hosts, a container): retry, the
//! cache, conversations and scoped sessions work on it unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::prompt::Prompt;

/// Runs prompts. See the [module docs](crate::runner).
pub trait Runner: Send + Sync {
    /// Starts a run of `prompt` with `options`.
    ///
    /// # Errors
    ///
    /// What keeps the run from starting (a full pool's [`PoolBusy`](crate::ErrorKind::PoolBusy));
    /// the run's own errors come from the returned [`Run`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes starts nothing that outlives it.
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>>;

    /// Starts a turn of a conversation that will go on: the runner may keep what the
    /// next turn needs (a pool keeps the process hot; the next turn names it with
    /// `resume` = the result's session id). The default is [`run`](Runner::run).
    ///
    /// # Errors
    ///
    /// See [`run`](Runner::run).
    fn run_turn(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        self.run(prompt, options)
    }

    /// Forgets what the runner keeps for the conversation `session_id` (a pool's hot
    /// process): the conversation has ended. The default does nothing.
    fn end_conversation(&self, session_id: &str) {
        let _ = session_id;
    }
}

impl<R: Runner + ?Sized> Runner for Arc<R> {
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        (**self).run(prompt, options)
    }

    fn run_turn(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        (**self).run_turn(prompt, options)
    }

    fn end_conversation(&self, session_id: &str) {
        (**self).end_conversation(session_id);
    }
}

impl<R: Runner + ?Sized> Runner for &R {
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        (**self).run(prompt, options)
    }

    fn run_turn(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        (**self).run_turn(prompt, options)
    }

    fn end_conversation(&self, session_id: &str) {
        (**self).end_conversation(session_id);
    }
}

/// A new CLI for each run: [`query()`](crate::query()) as a [`Runner`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectRunner;

impl Runner for DirectRunner {
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        Box::pin(async move { Ok(Run::new(crate::query(prompt, options))) })
    }
}

/// The messages of one run, from any [`Runner`]: a stream that ends after the run's
/// result (or its error). Dropping it ends the run.
#[must_use = "a Run does nothing unless polled"]
pub struct Run {
    stream: BoxStream<'static, Result<Message>>,
}

impl Run {
    /// A run from a stream of messages.
    pub fn new(stream: impl Stream<Item = Result<Message>> + Send + 'static) -> Run {
        Run {
            stream: stream.boxed(),
        }
    }

    /// A run that already happened: its messages, then its error, if any.
    pub fn from_messages(messages: Vec<Message>, error: Option<Error>) -> Run {
        let items = messages
            .into_iter()
            .map(Ok)
            .chain(error.map(Err))
            .collect::<Vec<_>>();
        Run::new(futures::stream::iter(items))
    }

    /// Collects every message of the run.
    ///
    /// # Errors
    ///
    /// The first error of the stream; the messages before it are dropped (the error
    /// keeps the result message, if there was one).
    pub async fn collect_all(self) -> Result<Vec<Message>> {
        collect_ok(self).await
    }

    /// Collects every message of the run, and the error that ended it, if any.
    pub async fn collect_messages(self) -> (Vec<Message>, Option<Error>) {
        collect_stream(self).await
    }
}

impl Stream for Run {
    type Item = Result<Message>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Run")
    }
}

/// Collects a stream of messages up to its end or its first error (the streams of this
/// crate end after an error).
pub(crate) async fn collect_stream<S>(mut stream: S) -> (Vec<Message>, Option<Error>)
where
    S: Stream<Item = Result<Message>> + Unpin,
{
    let mut messages = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(message) => messages.push(message),
            Err(err) => return (messages, Some(err)),
        }
    }
    (messages, None)
}

/// Collects a stream of messages; its first error instead, if it has one.
pub(crate) async fn collect_ok<S>(stream: S) -> Result<Vec<Message>>
where
    S: Stream<Item = Result<Message>> + Unpin,
{
    match collect_stream(stream).await {
        (messages, None) => Ok(messages),
        (_, Some(err)) => Err(err),
    }
}
