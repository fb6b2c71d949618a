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
//! # Caveats
//!
//! The timeout (`ClaudeCodeOptions::timeout`) is checked while the stream is polled;
//! a stream nobody polls keeps its CLI until it is dropped. Read the stream to its end,
//! or drop it.

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
    let requested_tools = options.requested_tool_names();
    let start = async move {
        let session = CliSession::connect(&options, &publish).await?;
        session.link.send_prompt(&prompt).await?;
        Ok(session)
    };
    Query::new(Box::pin(start), slot, timeout, requested_tools)
}

/// The stream of messages of one run. See [`query()`].
#[must_use = "a Query does nothing unless polled"]
pub struct Query {
    state: State,
    /// The run's process, once started; kept after the run ends.
    process: ProcessSlot,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Option<Duration>,
    requested_tools: Vec<String>,
    unknown_tools: Vec<String>,
    keep_alive: bool,
    pending_after_idle: Option<Error>,
    /// How the run's result ended it: `Some(true)` when it stands for an error.
    result_failed: Option<bool>,
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
        Query {
            state: State::Starting(start),
            process,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            timeout,
            requested_tools,
            unknown_tools: Vec::new(),
            keep_alive: false,
            pending_after_idle: None,
            result_failed: None,
        }
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

    fn timed_out(&mut self) -> Error {
        let stderr = match &self.state {
            State::Running(r) => {
                r.session.link.kill();
                r.session.link.stderr_tail()
            }
            _ => String::new(),
        };
        self.state = State::Done;
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
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(Ok(session)) => {
                        this.state = State::Running(Box::new(Running {
                            session,
                            result_seen: false,
                            pending_error: None,
                            failed: false,
                        }));
                    }
                },
                State::Running(running) => match running.session.poll_step(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Step::Message(message)) => {
                        if running.failed {
                            continue;
                        }
                        this.check_tools(&message);
                        return Poll::Ready(Some(Ok(message)));
                    }
                    Poll::Ready(Step::Result(message, error)) => {
                        if running.failed {
                            continue;
                        }
                        running.result_seen = true;
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
                        return Poll::Ready(outcome);
                    }
                    Poll::Ready(Step::Gone) => {
                        let outcome = running.pending_error.take().map(Err);
                        this.state = State::Done;
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
