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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::control::{Closed, Event, Session};
use crate::dispatch::Dispatcher;
use crate::error::{Error, Result};
use crate::message::{ContentBlock, Message};
use crate::options::ClaudeCodeOptions;
use crate::transport::subprocess::ProcessGuard;
use crate::transport::{self, discovery::CliVersion};
use crate::util::lock;
use crate::wire;

/// How long the CLI gets to answer `initialize`.
pub(crate) const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the CLI gets to exit after its stdin closes before it is sent `SIGTERM`.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long after `SIGTERM` before `SIGKILL`.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);

/// What a prompt can be: text, or content blocks (text and images).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Prompt {
    /// Plain text.
    Text(String),
    /// Content blocks, e.g. text with an image.
    Blocks(Vec<ContentBlock>),
}

impl Prompt {
    pub(crate) fn to_content(&self) -> Value {
        match self {
            Prompt::Text(text) => Value::String(text.clone()),
            Prompt::Blocks(blocks) => serde_json::to_value(blocks).unwrap_or(Value::Null),
        }
    }

    /// The prompt's text (text blocks joined).
    pub fn text(&self) -> String {
        match self {
            Prompt::Text(text) => text.clone(),
            Prompt::Blocks(blocks) => crate::message::join_text(blocks),
        }
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_owned())
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Self {
        Prompt::Text(text)
    }
}

impl From<&String> for Prompt {
    fn from(text: &String) -> Self {
        Prompt::Text(text.clone())
    }
}

impl From<Vec<ContentBlock>> for Prompt {
    fn from(blocks: Vec<ContentBlock>) -> Self {
        Prompt::Blocks(blocks)
    }
}

/// A started, initialized CLI.
pub(crate) struct Connected {
    pub(crate) session: Session,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) server_info: Value,
    pub(crate) version: CliVersion,
    /// Serves the CLI's requests; also knows which denials were decided.
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// When the process was started.
    pub(crate) born: Instant,
}

/// Collects a stream of messages up to its end or its first error (the streams of this
/// crate end after an error).
pub(crate) async fn collect_stream<S>(mut stream: S) -> (Vec<Message>, Option<Error>)
where
    S: Stream<Item = Result<Message>> + Unpin,
{
    use futures::StreamExt;
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

/// Where a starting run publishes its process as soon as it exists, so whoever owns
/// the run can wait for the process to exit even if the start is abandoned.
pub(crate) type ProcessSlot = Arc<std::sync::Mutex<Option<Arc<ProcessGuard>>>>;

/// Starts a CLI for `options` with the options' callbacks and completes the
/// `initialize` handshake.
pub(crate) async fn connect_for(
    options: &ClaudeCodeOptions,
    slot: &ProcessSlot,
) -> Result<Connected> {
    let dispatcher = Dispatcher::new(options);
    let (pipes, version) = transport::open(options, Vec::new()).await?;
    let (session, events) = Session::start(
        pipes,
        options.line_limit(),
        Some(dispatcher.handler()),
        options.verbose,
    );
    *lock(slot) = session.process().cloned();
    match session
        .request(dispatcher.initialize_request(), INITIALIZE_TIMEOUT)
        .await
    {
        Ok(server_info) => Ok(Connected {
            session,
            events,
            server_info,
            version,
            dispatcher,
            born: Instant::now(),
        }),
        Err(err) => Err(with_exit_context(&session, err).await),
    }
}

/// Adds the exit code and stderr of a CLI that died during start-up.
pub(crate) async fn with_exit_context(session: &Session, err: Error) -> Error {
    let Some(process) = session.process() else {
        return err;
    };
    if !err.is_connection() {
        // Still alive (a start-up that hangs, say): what it said on stderr helps.
        return err.with_stderr(session.stderr_tail());
    }
    let exit = tokio::time::timeout(Duration::from_secs(2), process.wait()).await;
    // Give the stderr drain a moment to read what the CLI said on its way out.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let closed = Closed {
        exit: exit.ok(),
        stderr: session.stderr_tail(),
    };
    closed.premature_exit_error()
}

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
    let timeout = options.timeout;
    let requested_tools = options.requested_tool_names();
    let slot = ProcessSlot::default();
    let publish = Arc::clone(&slot);
    let start = async move {
        let connected = connect_for(&options, &publish).await?;
        send_prompt(connected, &prompt).await
    };
    Query::new(Box::pin(start), slot, timeout, requested_tools)
}

async fn send_prompt(connected: Connected, prompt: &Prompt) -> Result<Connected> {
    let line = wire::user_line(prompt.to_content(), "", None);
    if let Err(err) = connected.session.send_line(line).await {
        return Err(with_exit_context(&connected.session, err).await);
    }
    Ok(connected)
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
}

enum State {
    Connecting(BoxFuture<'static, Result<Connected>>),
    Running(Box<Running>),
    /// Kept alive after its result, for reuse (see [`Query::keep_alive`]).
    Idle(Box<Running>),
    Done,
}

struct Running {
    session: Session,
    events: mpsc::Receiver<Event>,
    version: CliVersion,
    dispatcher: Arc<Dispatcher>,
    born: Instant,
    result_seen: bool,
    /// The error to yield after the process has exited.
    pending_error: Option<Error>,
    /// A fatal error was yielded: drop what is left and end.
    failed: bool,
}

impl Query {
    fn new(
        start: BoxFuture<'static, Result<Connected>>,
        process: ProcessSlot,
        timeout: Option<Duration>,
        requested_tools: Vec<String>,
    ) -> Query {
        Query {
            state: State::Connecting(start),
            process,
            deadline: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
            timeout,
            requested_tools,
            unknown_tools: Vec::new(),
            keep_alive: false,
            pending_after_idle: None,
        }
    }

    /// A run on a CLI that is already started and initialized (a pool's warm process).
    pub(crate) fn on_connected(
        connected: Connected,
        prompt: Prompt,
        options: &ClaudeCodeOptions,
    ) -> Query {
        let slot = ProcessSlot::new(std::sync::Mutex::new(connected.session.process().cloned()));
        let start = async move { send_prompt(connected, &prompt).await };
        Query::new(
            Box::pin(start),
            slot,
            options.timeout,
            options.requested_tool_names(),
        )
    }

    /// Keeps the CLI running after the result instead of closing it: the stream ends
    /// right after the result (and its error, if any), and [`Query::take_idle`] hands
    /// the live process back.
    pub(crate) fn keep_alive(mut self) -> Query {
        self.keep_alive = true;
        self
    }

    /// The live process of a run that ended with a result in keep-alive mode.
    pub(crate) fn take_idle(&mut self) -> Option<Connected> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Idle(running) => {
                let running = *running;
                Some(Connected {
                    session: running.session,
                    events: running.events,
                    server_info: Value::Null,
                    version: running.version,
                    dispatcher: running.dispatcher,
                    born: running.born,
                })
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Whether a result of this run ends it in an error (denials the callbacks decided
    /// do not).
    pub(crate) fn result_fails(&self, result: &crate::message::ResultMessage) -> bool {
        match &self.state {
            State::Running(r) | State::Idle(r) => r.dispatcher.result_error(result).is_some(),
            _ => result.to_error().is_some(),
        }
    }

    /// The process behind the run, while there is one.
    pub(crate) fn process(&self) -> Option<Arc<ProcessGuard>> {
        lock(&self.process).clone()
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
            State::Running(r) | State::Idle(r) => r.session.session_id(),
            _ => None,
        }
    }

    /// The CLI's process id (also its process group id), once it has started; still
    /// known after the run ends.
    pub fn pid(&self) -> Option<u32> {
        self.process().map(|p| p.pid())
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
        if let State::Running(running) | State::Idle(running) =
            std::mem::replace(&mut self.state, State::Done)
        {
            let Running {
                session, events, ..
            } = *running;
            // Nobody reads the rest: let the reader drain the CLI's output freely.
            drop(events);
            session.close_stdin();
            if let Some(process) = session.process() {
                process.shutdown(EXIT_GRACE, TERM_GRACE).await;
            }
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
}

impl Stream for Query {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(deadline) = &mut this.deadline
                && match &this.state {
                    State::Connecting(_) => true,
                    // Once the result is in, the run succeeded or failed on its own
                    // terms; the CLI's shutdown has its own escalation.
                    State::Running(r) => !r.result_seen,
                    _ => false,
                }
                && deadline.as_mut().poll(cx).is_ready()
            {
                if let State::Running(r) = &this.state {
                    r.session.kill();
                }
                let stderr = match &this.state {
                    State::Running(r) => r.session.stderr_tail(),
                    _ => String::new(),
                };
                this.state = State::Done;
                let limit = this.timeout.unwrap_or_default();
                return Poll::Ready(Some(Err(Error::timeout(format!(
                    "the run did not finish within the timeout of {limit:?}; the CLI was killed"
                ))
                .with_stderr(stderr))));
            }
            match &mut this.state {
                State::Idle(_) => return Poll::Ready(this.pending_after_idle.take().map(Err)),
                State::Done => return Poll::Ready(None),
                State::Connecting(start) => match start.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(Ok(connected)) => {
                        this.state = State::Running(Box::new(Running {
                            session: connected.session,
                            events: connected.events,
                            version: connected.version,
                            dispatcher: connected.dispatcher,
                            born: connected.born,
                            result_seen: false,
                            pending_error: None,
                            failed: false,
                        }));
                    }
                },
                State::Running(running) => match running.events.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Event::Message(message))) => {
                        if running.failed {
                            continue;
                        }
                        if let Message::Result(result) = &*message {
                            running.result_seen = true;
                            running.pending_error = running.dispatcher.result_error(result);
                            let interrupted = running
                                .pending_error
                                .as_ref()
                                .is_some_and(|e| e.kind() == crate::ErrorKind::Interrupted);
                            if this.keep_alive && !interrupted {
                                // End the stream after the result; keep the process.
                                let error = running.pending_error.take();
                                if let State::Running(r) =
                                    std::mem::replace(&mut this.state, State::Done)
                                {
                                    this.state = State::Idle(r);
                                }
                                this.pending_after_idle = error;
                                return Poll::Ready(Some(Ok(*message)));
                            }
                            running.session.close_stdin();
                            if let Some(process) = running.session.process() {
                                let process = Arc::clone(process);
                                tokio::spawn(async move {
                                    process.shutdown(EXIT_GRACE, TERM_GRACE).await;
                                });
                            }
                        }
                        this.check_tools(&message);
                        return Poll::Ready(Some(Ok(*message)));
                    }
                    Poll::Ready(Some(Event::Fatal(err))) => {
                        if running.failed {
                            continue;
                        }
                        running.failed = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(Some(Event::Closed(closed))) => {
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
                    Poll::Ready(None) => {
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
            State::Connecting(_) => "connecting",
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
