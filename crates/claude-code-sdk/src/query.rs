//! [`query()`]: one prompt, one run, a stream of messages.
//!
//! ```no_run
//! use claude_code_sdk::{query, ClaudeCodeOptions, Message};
//! use futures::StreamExt;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let options = ClaudeCodeOptions::builder().max_turns(1).build()?;
//! let mut stream = query("Write a haiku about Rust", options);
//! while let Some(message) = stream.next().await {
//!     let message = message?;
//!     if let Message::Result(result) = &message {
//!         println!("cost: {:?}", result.total_cost_usd);
//!     } else {
//!         println!("{}: {}", message.role(), message.content());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # How a run ends
//!
//! - A successful run yields its messages, ending with a [`Message::Result`]; the
//!   stream ends (`None`) once the CLI has exited.
//! - A run that ends in an error result (an API error, max turns, budget, an
//!   interrupt) yields the result, with [`Message::error`] set, and then one `Err`
//!   classified by the [`Error`] predicates.
//! - A run in which a tool use was denied without anyone deciding (no permission
//!   callback to ask, the permission mode's guard) yields its result, then a
//!   [`PermissionDenied`](crate::ErrorKind::PermissionDenied) error. Denials your
//!   permission callback or hooks chose are listed in the result's
//!   `permission_denials` but do not make the run fail.
//! - A failure of the process or the protocol (the CLI crashed, a line over the limit,
//!   the timeout) ends the stream with an `Err` carrying the exit code and stderr tail.
//!
//! # Cancel safety
//!
//! Dropping a [`Query`] at any point kills the CLI's whole process group. Nothing
//! is left running.
//!
//! # Timeouts
//!
//! - `ClaudeCodeOptions::timeout` bounds the whole run. A timer task kills the CLI's
//!   process group when it expires, whether or not anyone polls the stream; the
//!   stream yields the [`Timeout`](ErrorKind::Timeout) error when it is next polled.
//! - `ClaudeCodeOptions::idle_timeout` (the idle watchdog) bounds the CLI's silence
//!   while a turn runs: no output line for that long, with none of the CLI's requests
//!   being served by the SDK, kills the CLI and ends the stream with a
//!   [`Timeout`](ErrorKind::Timeout) error. Silence is noticed while the stream is
//!   polled: a consumer that does not poll is not waiting for the CLI. Lines the
//!   SDK has buffered but the consumer has not read yet never count as silence.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::time::Sleep;

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::prompt::Prompt;
use crate::runner::{collect_ok, collect_stream};
use crate::session::{CliSession, EXIT_GRACE, ProcessSlot, Step, TERM_GRACE};
use crate::util::lock;

/// Runs one prompt through the Claude Code CLI and streams what happens.
///
/// Nothing starts until the returned [`Query`] is first polled. See the [module
/// docs](mod@crate::query) for how a run ends and what dropping it does.
///
/// # Errors
///
/// The stream yields `Err` for invalid options, a missing or too old CLI, a failed
/// start, an error result (after yielding the result) and process or protocol
/// failures. See [`Error`].
pub fn query(prompt: impl Into<Prompt>, options: ClaudeCodeOptions) -> Query {
    let prompt = prompt.into();
    let slot = ProcessSlot::default();
    let publish = Arc::clone(&slot);
    let timeout = options.timeout;
    let idle_timeout = options.idle_timeout;
    let requested_tools = options.requested_tool_names();
    let start = async move {
        let session = CliSession::connect(&options, &publish).await?;
        session.link.send_prompt(&prompt).await?;
        Ok(session)
    };
    Query::new(Box::pin(start), slot, timeout, requested_tools).with_idle_timeout(idle_timeout)
}

/// The stream of messages of one run. See [`query()`].
#[must_use = "a Query does nothing unless polled"]
pub struct Query {
    state: State,
    /// The run's process, once started; kept after the run ends.
    process: ProcessSlot,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Option<Duration>,
    timers: Timers,
    requested_tools: Vec<String>,
    unknown_tools: Vec<String>,
    keep_alive: bool,
    pending_after_idle: Option<Error>,
    /// How the run's result ended it: `Some(true)` when it stands for an error.
    result_failed: Option<bool>,
}

/// The run's watchdogs besides the polled deadline.
#[derive(Default)]
struct Timers {
    /// Kills the process at the deadline even if nobody polls; aborted once the run
    /// has its result or ends.
    deadline_killer: Option<tokio::task::AbortHandle>,
    /// The idle watchdog's limit and timer (armed while a turn runs).
    idle_timeout: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
}

impl Timers {
    /// The run no longer needs its timers: it has its result, or it ended.
    fn disarm(&mut self) {
        if let Some(killer) = self.deadline_killer.take() {
            killer.abort();
        }
        self.idle = None;
    }

    /// Restarts the idle watchdog's timer from now (a line arrived).
    fn rearm_idle(&mut self) {
        if let Some(limit) = self.idle_timeout {
            let at = tokio::time::Instant::now() + limit;
            match &mut self.idle {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.idle = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
    }

    /// Nothing came from the CLI just now: whether it has been silent for longer than
    /// the idle timeout (registering for a wake-up if not).
    fn idle_expired(&mut self, running: &Running, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.idle_timeout else {
            return false;
        };
        if running.result_seen || running.failed {
            return false;
        }
        if self.idle.is_none() {
            self.rearm_idle();
        }
        let Some(sleep) = &mut self.idle else {
            return false;
        };
        let activity = running.session.link.activity();
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = tokio::time::Instant::now();
            // The reader saw a line (or handed one over) since the timer was set, or
            // the SDK is answering one of the CLI's requests: not idle.
            let from = if activity.serving() {
                now
            } else {
                activity.last().max(sleep.deadline() - limit)
            };
            if from + limit <= now {
                return true;
            }
            sleep.as_mut().reset(from + limit);
        }
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        self.timers.disarm();
    }
}

enum State {
    Starting(BoxFuture<'static, Result<CliSession>>),
    Running(Box<Running>),
    /// Kept alive after its result, for the next run (see [`Query::keep_alive`]).
    Idle(Box<CliSession>),
    Done,
}

struct Running {
    session: CliSession,
    result_seen: bool,
    /// The error to yield after the process has exited.
    pending_error: Option<Error>,
    /// A fatal error was yielded: drop what is left and end.
    failed: bool,
}

impl Query {
    /// A run whose CLI session comes from `start` (which also sends the prompt), with
    /// its process published in `process`.
    pub(crate) fn new(
        start: BoxFuture<'static, Result<CliSession>>,
        process: ProcessSlot,
        timeout: Option<Duration>,
        requested_tools: Vec<String>,
    ) -> Query {
        let deadline_killer = timeout.map(|limit| {
            let process = Arc::clone(&process);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(process) = lock(&process).clone() {
                    tracing::debug!(
                        pid = process.pid(),
                        "the run's timeout expired: killing the CLI"
                    );
                    process.kill();
                }
            })
            .abort_handle()
        });
        Query {
            state: State::Starting(start),
            process,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            timeout,
            timers: Timers {
                deadline_killer,
                ..Timers::default()
            },
            requested_tools,
            unknown_tools: Vec::new(),
            keep_alive: false,
            pending_after_idle: None,
            result_failed: None,
        }
    }

    /// Arms the idle watchdog (see [`ClaudeCodeOptions::idle_timeout`]).
    pub(crate) fn with_idle_timeout(mut self, idle: Option<Duration>) -> Query {
        self.timers.idle_timeout = idle;
        self
    }

    /// Keeps the CLI running after the result instead of closing it: the stream ends
    /// right after the result (and its error, if any), and [`Query::take_idle`] hands
    /// the live process back. A run that was interrupted is not kept.
    pub(crate) fn keep_alive(mut self) -> Query {
        self.keep_alive = true;
        self
    }

    /// The live process of a run that ended with a result in keep-alive mode.
    pub(crate) fn take_idle(&mut self) -> Option<CliSession> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Idle(session) => Some(*session),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The run's process, once started.
    pub(crate) fn process(&self) -> Option<Arc<crate::process::subprocess::ProcessGuard>> {
        lock(&self.process).clone()
    }

    /// Whether the run's result stood for an error (`None` before the result).
    pub(crate) fn result_failed(&self) -> Option<bool> {
        self.result_failed
    }

    /// Collects every message of the run.
    ///
    /// # Errors
    ///
    /// The first error of the stream; the messages before it are dropped (the error
    /// keeps the result message, if there was one). Use
    /// [`collect_messages`](Query::collect_messages) to keep them.
    pub async fn collect_all(self) -> Result<Vec<Message>> {
        collect_ok(self).await
    }

    /// Collects every message of the run, and the error that ended it, if any.
    pub async fn collect_messages(self) -> (Vec<Message>, Option<Error>) {
        collect_stream(self).await
    }

    /// The session id, once the CLI has reported it.
    pub fn session_id(&self) -> Option<String> {
        match &self.state {
            State::Running(r) => r.session.link.session_id(),
            State::Idle(s) => s.link.session_id(),
            _ => None,
        }
    }

    /// The CLI's process id (also its process group id), once it has started; still
    /// known after the run ends.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.process).as_ref().map(|p| p.pid())
    }

    /// Tool names given in `tools` or `allowed_tools` that the CLI does not have (for
    /// example `LS`, which current CLIs no longer ship). Known once the run's `init`
    /// message has arrived; each is also logged as a warning.
    pub fn unknown_tools(&self) -> &[String] {
        &self.unknown_tools
    }

    /// Ends the run gracefully: closes the CLI's input, waits for it to exit (5 s), then
    /// sends `SIGTERM` and, 2 s later, `SIGKILL` to its process group.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for reporting a failed shutdown.
    pub async fn close(mut self) -> Result<()> {
        let session = match std::mem::replace(&mut self.state, State::Done) {
            State::Running(running) => Some(running.session),
            State::Idle(session) => Some(*session),
            _ => None,
        };
        if let Some(CliSession { link, events }) = session {
            // Nobody reads the rest: let the reader drain the CLI's output freely.
            drop(events);
            link.close().await;
        }
        Ok(())
    }

    fn check_tools(&mut self, message: &Message) {
        let Message::System(system) = message else {
            return;
        };
        let Some(init) = system.init() else {
            return;
        };
        if !self.unknown_tools.is_empty() || self.requested_tools.is_empty() {
            return;
        }
        self.unknown_tools = self
            .requested_tools
            .iter()
            .filter(|t| !init.tools.iter().any(|have| have == *t))
            .cloned()
            .collect();
        if !self.unknown_tools.is_empty() {
            tracing::warn!(
                unknown = ?self.unknown_tools,
                cli_version = init.claude_code_version,
                "the CLI does not have these tools; they were ignored (note: Grep and Glob exist only when named in `tools`)"
            );
        }
    }

    fn idle_timed_out(&mut self) -> Error {
        let stderr = match &self.state {
            State::Running(r) => {
                r.session.link.kill();
                r.session.link.stderr_tail()
            }
            _ => String::new(),
        };
        self.state = State::Done;
        self.timers.disarm();
        let limit = self.timers.idle_timeout.unwrap_or_default();
        Error::timeout(format!(
            "the CLI wrote nothing for {limit:?} while the turn ran (idle_timeout); the CLI \
             was killed"
        ))
        .with_stderr(stderr)
    }

    fn timed_out(&mut self) -> Error {
        let stderr = match &self.state {
            State::Running(r) => {
                r.session.link.kill();
                r.session.link.stderr_tail()
            }
            _ => String::new(),
        };
        self.state = State::Done;
        self.timers.disarm();
        let limit = self.timeout.unwrap_or_default();
        Error::timeout(format!(
            "the run did not finish within the timeout of {limit:?}; the CLI was killed"
        ))
        .with_stderr(stderr)
    }
}

impl Stream for Query {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(deadline) = &mut this.deadline
                && match &this.state {
                    State::Starting(_) => true,
                    // Once the result is in, the run succeeded or failed on its own
                    // terms; the CLI's shutdown has its own escalation.
                    State::Running(r) => !r.result_seen,
                    _ => false,
                }
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Some(Err(this.timed_out())));
            }
            match &mut this.state {
                State::Idle(_) => return Poll::Ready(this.pending_after_idle.take().map(Err)),
                State::Done => return Poll::Ready(None),
                State::Starting(start) => match start.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => {
                        this.state = State::Done;
                        this.timers.disarm();
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(Ok(session)) => {
                        this.state = State::Running(Box::new(Running {
                            session,
                            result_seen: false,
                            pending_error: None,
                            failed: false,
                        }));
                        this.timers.rearm_idle();
                    }
                },
                State::Running(running) => match running.session.poll_step(cx) {
                    Poll::Pending => {
                        if this.timers.idle_expired(running, cx) {
                            return Poll::Ready(Some(Err(this.idle_timed_out())));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Step::Message(message)) => {
                        if running.failed {
                            continue;
                        }
                        this.timers.rearm_idle();
                        this.check_tools(&message);
                        return Poll::Ready(Some(Ok(message)));
                    }
                    Poll::Ready(Step::Result(message, error)) => {
                        if running.failed {
                            continue;
                        }
                        running.result_seen = true;
                        this.timers.disarm();
                        this.result_failed = Some(error.is_some());
                        let interrupted = error
                            .as_ref()
                            .is_some_and(|e| e.kind() == ErrorKind::Interrupted);
                        if this.keep_alive && !interrupted {
                            // End the stream after the result; keep the process.
                            if let State::Running(r) =
                                std::mem::replace(&mut this.state, State::Done)
                            {
                                this.state = State::Idle(Box::new(r.session));
                            }
                            this.pending_after_idle = error;
                            return Poll::Ready(Some(Ok(message)));
                        }
                        running.pending_error = error;
                        running.session.link.close_stdin();
                        if let Some(process) = running.session.link.process() {
                            let process = Arc::clone(process);
                            tokio::spawn(async move {
                                process.shutdown(EXIT_GRACE, TERM_GRACE).await;
                            });
                        }
                        return Poll::Ready(Some(Ok(message)));
                    }
                    Poll::Ready(Step::Fatal(err)) => {
                        if running.failed {
                            continue;
                        }
                        running.failed = true;
                        this.timers.disarm();
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(Step::Exited(closed)) => {
                        let outcome = if running.failed {
                            None
                        } else if running.result_seen {
                            running.pending_error.take().map(Err)
                        } else {
                            Some(Err(closed.premature_exit_error()))
                        };
                        this.state = State::Done;
                        this.timers.disarm();
                        return Poll::Ready(outcome);
                    }
                    Poll::Ready(Step::Gone) => {
                        let outcome = running.pending_error.take().map(Err);
                        this.state = State::Done;
                        this.timers.disarm();
                        return Poll::Ready(outcome);
                    }
                },
            }
        }
    }
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Starting(_) => "starting",
            State::Running(_) => "running",
            State::Idle(_) => "idle",
            State::Done => "done",
        };
        f.debug_struct("Query")
            .field("state", &state)
            .field("pid", &self.pid())
            .finish()
    }
}
