//! The control-protocol router: one reader task and one writer task per CLI process.
//!
//! The reader owns stdout. It routes every line:
//!
//! - `control_response` lines complete the SDK's own pending requests (by request id);
//! - `control_request` lines from the CLI (`can_use_tool`, `hook_callback`,
//!   `mcp_message`, ...) are each served on a task of their own, so a slow permission
//!   callback never stops the stream, and the CLI may ask before it has answered
//!   `initialize`;
//! - `control_cancel_request` aborts the handler task it names;
//! - everything else is a [`Message`], sent to the consumer over a bounded channel.
//!
//! A writer task owns stdin; everything written goes through its bounded queue, so
//! no lock is ever held across an `.await`.
//!
//! # Backpressure
//!
//! The message channel holds at most [`EVENT_BUFFER`] messages and [`EVENT_BYTES`]
//! bytes of lines (a line longer than that alone), and the reader reads no further
//! while the bytes are used up: a 50 MiB answer is never read while the one before it
//! waits in the channel. A consumer that stops reading stops the reader, and with it
//! the serving of the CLI's requests: keep polling the stream while a run is in
//! progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result, shorten};
use crate::message::Message;
use crate::process::Pipes;
use crate::process::codec::{LineCodec, LineError};
use crate::process::discovery::{FLAGS_SINCE, since};
use crate::process::subprocess::{ExitState, ProcessGuard, StderrTail};
use crate::store::MirrorSink;
use crate::util::lock;
use crate::wire::{self, Inbound};

/// Messages buffered between the reader and a consumer.
pub(crate) const EVENT_BUFFER: usize = 64;
/// Bytes of lines buffered between the reader and a consumer.
pub(crate) const EVENT_BYTES: usize = 1 << 20;
/// Lines queued for stdin.
const OUTBOUND_BUFFER: usize = 64;
/// How long the reader waits for the process to exit once stdout has closed.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Serves the CLI's requests: gets the subtype and the whole request, answers with the
/// response payload or an error text.
pub(crate) type RequestHandler = Arc<
    dyn Fn(String, Value) -> BoxFuture<'static, std::result::Result<Value, String>> + Send + Sync,
>;

/// What the reader tells the consumer.
#[derive(Debug)]
pub(crate) enum Event {
    Message(Box<Message>),
    /// The run cannot go on (a line over the limit, a broken pipe). The process has
    /// been killed; a `Closed` follows.
    Fatal(Error),
    /// stdout closed and the process exited.
    Closed(Closed),
}

/// An event and the bytes of the channel's budget it holds until it is received.
type Budgeted = (Event, Option<OwnedSemaphorePermit>);

/// The consumer's end of the reader's channel (see the module's backpressure notes).
#[derive(Debug)]
pub(crate) struct Events {
    rx: mpsc::Receiver<Budgeted>,
}

impl Events {
    /// The next event; `None` once the reader is gone and everything was received.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`mpsc::Receiver::recv`].
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await.map(|(event, _budget)| event)
    }

    /// Polls for the next event.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|(event, _budget)| event))
    }

    /// Stops the reader from sending more (it keeps draining the CLI's output).
    pub(crate) fn close(&mut self) {
        self.rx.close();
        // What is queued will not be read: give its budget back.
        while self.rx.try_recv().is_ok() {}
    }
}

/// How the process ended, with its stderr tail.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    pub(crate) exit: Option<ExitState>,
    pub(crate) stderr: String,
}

impl Closed {
    /// The error for a process that ended before the run did.
    pub(crate) fn premature_exit_error(&self) -> Error {
        let how = self
            .exit
            .map(|e| e.describe())
            .unwrap_or_else(|| "closed its output".to_owned());
        // A `resume` of a session the CLI does not have: the caller's mistake, not a
        // broken connection (and not worth retrying).
        if let Some(line) = self
            .stderr
            .lines()
            .find(|l| l.contains("No conversation found"))
        {
            return Error::new(
                ErrorKind::NotFound,
                format!("the CLI has no such conversation: {}", line.trim()),
            )
            .with_exit_code(self.exit.and_then(|e| e.code()))
            .with_stderr(self.stderr.clone());
        }
        // A flag this CLI does not know (`error: unknown option '--x=1'`): a newer CLI
        // is needed, or the flag is misspelled. Not a connection problem, and not worth
        // retrying.
        if let Some(flag) = self.stderr.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("error: unknown option '")?;
            let flag = rest.strip_suffix('\'').unwrap_or(rest);
            Some(
                flag.split_once('=')
                    .map_or(flag, |(name, _)| name)
                    .to_owned(),
            )
        }) {
            let needed = flag
                .strip_prefix("--")
                .and_then(|name| since(FLAGS_SINCE, name))
                .map_or_else(
                    || "a CLI that has it (or the flag is misspelled)".to_owned(),
                    |v| format!("Claude Code CLI {v} or newer"),
                );
            return Error::unsupported_cli(format!(
                "the Claude Code CLI does not know the flag {flag} and exited ({how}); it needs \
                 {needed}"
            ))
            .with_exit_code(self.exit.and_then(|e| e.code()))
            .with_stderr(self.stderr.clone());
        }
        // The CLI refused a flag's value (`Error: --json-schema is not a valid JSON
        // Schema: strict mode: unknown keyword: ""`): the options are wrong, and the same
        // run would fail again.
        if let Some(line) = self.stderr.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("Error: --")?;
            rest.contains(' ').then(|| l.trim().to_owned())
        }) {
            return Error::invalid_options(format!(
                "the Claude Code CLI refused the value of a flag and exited ({how}): {line}"
            ))
            .with_exit_code(self.exit.and_then(|e| e.code()))
            .with_stderr(self.stderr.clone());
        }
        Error::connection(format!(
            "the Claude Code CLI ended before the run finished ({how})"
        ))
        .with_exit_code(self.exit.and_then(|e| e.code()))
        .with_stderr(self.stderr.clone())
    }
}

/// Signs of life of the CLI, for the idle watchdog: when it last wrote a line (or the
/// reader last handed one over), and how many of its requests are being served by
/// the SDK (during which the CLI waits, silent, for the answer).
#[derive(Debug)]
pub(crate) struct Activity {
    origin: tokio::time::Instant,
    /// Milliseconds after `origin`.
    last_ms: AtomicU64,
    serving: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the CLI last showed a sign of life.
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether one of the CLI's requests is being served (a permission callback, a
    /// hook, an in-process tool): the CLI is waiting for the SDK, not idle.
    pub(crate) fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed) > 0
    }
}

/// Counts one request being served while it lives.
struct Serving(Arc<Activity>);

impl Serving {
    fn start(activity: &Arc<Activity>) -> Serving {
        activity.serving.fetch_add(1, Ordering::Relaxed);
        Serving(Arc::clone(activity))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<std::result::Result<Value, String>>>>>;

/// State the reader keeps current for anyone holding the session.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) session_id: Option<String>,
    last_total_cost: Option<f64>,
}

/// One CLI process and the tasks that talk to it.
pub(crate) struct Router {
    outbound: mpsc::Sender<String>,
    close_stdin: CancellationToken,
    pending: Pending,
    process: Option<Arc<ProcessGuard>>,
    stderr_tail: StderrTail,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU64,
    tasks: Vec<AbortHandle>,
    /// Cancelled by the reader when the CLI's output has ended: no answer can come.
    closed: CancellationToken,
    activity: Arc<Activity>,
}

impl Router {
    /// Starts the reader and writer tasks over `pipes`; returns the session and the
    /// consumer's end of the event channel.
    pub(crate) fn start(
        pipes: Pipes,
        line_limit: usize,
        handler: Option<RequestHandler>,
        log_wire: bool,
        mirror: Option<MirrorSink>,
    ) -> (Router, Events) {
        let (out_tx, out_rx) = mpsc::channel::<String>(OUTBOUND_BUFFER);
        let (ev_tx, ev_rx) = mpsc::channel::<Budgeted>(EVENT_BUFFER);
        let close_stdin = CancellationToken::new();
        let pending: Pending = Arc::default();
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let process = pipes.process.map(Arc::new);
        let closed = CancellationToken::new();
        let activity = Arc::new(Activity::new());

        let writer = tokio::spawn(write_loop(
            pipes.stdin,
            out_rx,
            close_stdin.clone(),
            log_wire,
        ));
        let reader = tokio::spawn(
            Reader {
                pending: pending.clone(),
                handler,
                outbound: out_tx.clone(),
                events: ev_tx,
                budget: Arc::new(Semaphore::new(EVENT_BYTES)),
                shared: shared.clone(),
                process: process.clone(),
                stderr_tail: pipes.stderr_tail.clone(),
                stderr_task: pipes.stderr_task,
                handlers: HashMap::new(),
                tasks: JoinSet::new(),
                consumer_gone: false,
                closed: closed.clone(),
                log_wire,
                mirror,
                activity: activity.clone(),
            }
            .run(pipes.stdout, line_limit),
        );
        let session = Router {
            outbound: out_tx,
            close_stdin,
            pending,
            process,
            stderr_tail: pipes.stderr_tail,
            shared,
            next_id: AtomicU64::new(1),
            tasks: vec![writer.abort_handle(), reader.abort_handle()],
            closed,
            activity,
        };
        (session, Events { rx: ev_rx })
    }

    /// Queues a line for stdin.
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) when stdin is closed.
    pub(crate) async fn send_line(&self, line: String) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(self
                .closed_error_after_exit("could not write to the CLI: it has exited")
                .await);
        }
        self.outbound
            .send(line)
            .await
            .map_err(|_| self.closed_error("could not write to the CLI: its input is closed"))
    }

    /// Sends a control request and waits for its answer.
    ///
    /// # Errors
    ///
    /// [`Timeout`](ErrorKind::Timeout) when no answer comes in `timeout`;
    /// [`ControlRequest`](ErrorKind::ControlRequest) when the CLI answers with an error;
    /// [`Connection`](ErrorKind::Connection) when the CLI goes away first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; a late answer is ignored.
    pub(crate) async fn request(&self, request: Value, timeout: Duration) -> Result<Value> {
        self.send_request(request).await?.answer(timeout).await
    }

    /// Writes a control request without waiting for its answer, so that more lines
    /// (another request, a prompt) can follow it at once; the CLI reads its input in
    /// order. Wait for the answer with [`PendingAnswer::answer`].
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) when stdin is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future (or the returned [`PendingAnswer`]) forgets the request; a
    /// late answer is ignored.
    pub(crate) async fn send_request(&self, request: Value) -> Result<PendingAnswer<'_>> {
        let id = format!(
            "req_{}_{}",
            self.next_id.fetch_add(1, Ordering::Relaxed),
            short_uuid()
        );
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let pending = PendingAnswer {
            router: self,
            id,
            subtype,
            rx: Some(rx),
        };
        self.send_line(wire::control_request_line(&pending.id, &request))
            .await?;
        Ok(pending)
    }

    /// Closes the CLI's stdin once the queued lines are written: the CLI finishes what
    /// it is doing and exits.
    pub(crate) fn close_stdin(&self) {
        self.close_stdin.cancel();
    }

    /// The process, when there is one.
    pub(crate) fn process(&self) -> Option<&Arc<ProcessGuard>> {
        self.process.as_ref()
    }

    /// The CLI's signs of life, for the idle watchdog.
    pub(crate) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Kills the process group now.
    pub(crate) fn kill(&self) {
        if let Some(p) = &self.process {
            p.kill();
        }
    }

    /// What the CLI's cumulative cost already counts when the process starts (a
    /// resumed conversation's earlier turns): the first turn's own cost is what its
    /// result adds to it.
    pub(crate) fn set_cost_baseline(&self, total: f64) {
        lock(&self.shared).last_total_cost = Some(total);
    }

    /// The session id the CLI reported last.
    pub(crate) fn session_id(&self) -> Option<String> {
        lock(&self.shared).session_id.clone()
    }

    /// The stderr tail so far.
    pub(crate) fn stderr_tail(&self) -> String {
        self.stderr_tail.text()
    }

    /// [`closed_error`](Router::closed_error), once the process has exited (2 s at
    /// most), so the error carries the exit code.
    async fn closed_error_after_exit(&self, message: &str) -> Error {
        if let Some(process) = &self.process {
            let _ = tokio::time::timeout(Duration::from_secs(2), process.wait()).await;
        }
        self.closed_error(message)
    }

    fn closed_error(&self, message: &str) -> Error {
        let mut err = Error::connection(message.to_owned()).with_stderr(self.stderr_tail.text());
        if let Some(exit) = self.process.as_ref().and_then(|p| p.exited()) {
            err = err.with_exit_code(exit.code());
        }
        err
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // Kill first, so the reader's end-of-stream handling finds the group gone.
        self.kill();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A control request written to the CLI, its answer still to come. Dropping it
/// forgets the request.
pub(crate) struct PendingAnswer<'a> {
    router: &'a Router,
    id: String,
    subtype: String,
    rx: Option<oneshot::Receiver<std::result::Result<Value, String>>>,
}

impl PendingAnswer<'_> {
    /// Waits up to `timeout` for the answer.
    ///
    /// # Errors
    ///
    /// See [`Router::request`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; a late answer is ignored.
    pub(crate) async fn answer(mut self, timeout: Duration) -> Result<Value> {
        let router = self.router;
        let subtype = std::mem::take(&mut self.subtype);
        let Some(rx) = self.rx.take() else {
            return Err(Error::connection(format!(
                "the {subtype} request was already answered"
            )));
        };
        let gone = || async {
            router
                .closed_error_after_exit(&format!(
                    "the CLI went away before answering the {subtype} request"
                ))
                .await
        };
        // The reader may have ended (and dropped every pending sender) before this
        // request was registered: then no answer can come.
        let answer = tokio::select! {
            answer = tokio::time::timeout(timeout, rx) => answer,
            () = router.closed.cancelled() => return Err(gone().await),
        };
        match answer {
            Err(_) => Err(Error::timeout(format!(
                "the CLI did not answer the {subtype} request within {timeout:?}"
            ))
            .with_stderr(router.stderr_tail.text())),
            Ok(Err(_)) => Err(gone().await),
            Ok(Ok(Err(text))) => Err(Error::new(
                ErrorKind::ControlRequest,
                format!("the CLI refused the {subtype} request: {text}"),
            )),
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }
}

impl Drop for PendingAnswer<'_> {
    fn drop(&mut self) {
        lock(&self.router.pending).remove(&self.id);
    }
}

fn short_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn write_loop(
    mut stdin: Box<dyn AsyncWrite + Send + Unpin>,
    mut lines: mpsc::Receiver<String>,
    close: CancellationToken,
    log_wire: bool,
) {
    async fn write(
        stdin: &mut (dyn AsyncWrite + Send + Unpin),
        line: &str,
        log_wire: bool,
    ) -> std::io::Result<()> {
        if log_wire {
            tracing::debug!(target: "claude_code_sdk::wire", direction = "in", "{}", shorten(line, 2000));
        }
        stdin.write_all(line.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await
    }
    loop {
        tokio::select! {
            biased;
            line = lines.recv() => match line {
                Some(line) => {
                    if let Err(err) = write(&mut *stdin, &line, log_wire).await {
                        tracing::debug!(%err, "writing to the CLI failed; its input is closed");
                        return;
                    }
                }
                None => break,
            },
            () = close.cancelled() => {
                while let Ok(line) = lines.try_recv() {
                    if write(&mut *stdin, &line, log_wire).await.is_err() {
                        return;
                    }
                }
                break;
            }
        }
    }
    let _ = stdin.shutdown().await;
}

struct Reader {
    pending: Pending,
    handler: Option<RequestHandler>,
    outbound: mpsc::Sender<String>,
    events: mpsc::Sender<Budgeted>,
    /// Bytes of lines the channel may hold ([`EVENT_BYTES`]).
    budget: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
    process: Option<Arc<ProcessGuard>>,
    stderr_tail: StderrTail,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// Handler tasks by request id, for cancellation.
    handlers: HashMap<String, AbortHandle>,
    /// Owns the handler tasks: when the reader goes (its session dropped), they go too.
    tasks: JoinSet<()>,
    /// The consumer dropped its receiver: keep reading stdout, drop the messages.
    consumer_gone: bool,
    closed: CancellationToken,
    log_wire: bool,
    /// Takes the CLI's `transcript_mirror` lines to a session store (they never reach
    /// the consumer); its failures become `mirror_error` system messages.
    mirror: Option<MirrorSink>,
    activity: Arc<Activity>,
}

impl Reader {
    async fn run(mut self, stdout: Box<dyn AsyncRead + Send + Unpin>, line_limit: usize) {
        let mut lines = FramedRead::with_capacity(stdout, LineCodec::new(line_limit), 64 * 1024);
        loop {
            self.wait_for_budget().await;
            let Some(next) = lines.next().await else {
                break;
            };
            match next {
                Ok(line) => {
                    self.activity.touch();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.route(line).await;
                    // A consumer that was slow to take the line: the wait was not the
                    // CLI's silence.
                    self.activity.touch();
                }
                Err(LineError::TooLong { limit, seen, head }) => {
                    let err = Error::protocol(format!(
                        "the CLI wrote a line longer than max_line_bytes ({limit} bytes; \
                         {seen} bytes arrived without a newline)"
                    ))
                    .with_raw_line(String::from_utf8_lossy(&head).into_owned());
                    self.fatal(err).await;
                    break;
                }
                Err(LineError::Io(err)) => {
                    let err = Error::connection("reading the CLI's output failed").with_source(err);
                    self.fatal(err).await;
                    break;
                }
            }
        }
        drop(lines);
        self.finish().await;
    }

    /// Waits while the channel's bytes are used up (the consumer has not taken a big
    /// message yet), so the next line is not read beside it.
    async fn wait_for_budget(&mut self) {
        if self.consumer_gone || self.budget.available_permits() > 0 {
            return;
        }
        tokio::select! {
            _ = self.budget.acquire() => {}
            () = self.events.closed() => self.consumer_gone = true,
        }
    }

    async fn route(&mut self, line: bytes::BytesMut) {
        if self.log_wire {
            let head = String::from_utf8_lossy(&line[..line.len().min(2000)]);
            tracing::debug!(target: "claude_code_sdk::wire", direction = "out", "{}", shorten(&head, 2000));
        }
        let inbound = match wire::parse_bytes(line) {
            Ok(inbound) => inbound,
            Err(err) => {
                tracing::warn!(
                    raw = err.raw_line().unwrap_or(""),
                    "skipping a line from the CLI that is not JSON: {err}"
                );
                return;
            }
        };
        match inbound {
            Inbound::ControlResponse(response) => {
                match lock(&self.pending).remove(&response.request_id) {
                    Some(tx) => {
                        let _ = tx.send(response.outcome);
                    }
                    None => tracing::debug!(
                        request_id = response.request_id,
                        "answer to a request nobody waits for (timed out or cancelled)"
                    ),
                }
            }
            Inbound::ControlRequest {
                request_id,
                request,
            } => {
                self.serve(request_id, request);
            }
            Inbound::ControlCancel { request_id } => {
                if let Some(task) = self.handlers.remove(&request_id) {
                    task.abort();
                    tracing::debug!(request_id, "the CLI cancelled its request");
                }
            }
            Inbound::KeepAlive => {}
            Inbound::Message(mut message) => {
                let mut failures = Vec::new();
                if let Some(mirror) = &self.mirror {
                    if let Message::Unknown(u) = &*message
                        && u.kind.as_deref() == Some(crate::store::MIRROR_LINE_TYPE)
                    {
                        if let Err(err) = mirror.push_line(message.raw()) {
                            tracing::warn!(%err, "skipping a transcript_mirror line");
                        }
                        return;
                    }
                    if message.is_result() {
                        // The turn is stored (or its failures reported) before anyone
                        // sees its result.
                        failures = mirror.flush().await;
                    }
                }
                if !failures.is_empty() {
                    let session = lock(&self.shared).session_id.clone().unwrap_or_default();
                    for failure in failures {
                        self.deliver(Box::new(failure.to_message(&session))).await;
                    }
                }
                self.observe(&mut message);
                self.deliver(message).await;
            }
        }
    }

    /// Sends a message to the consumer, unless it is gone, once the channel has room
    /// for its bytes (all of them, for a line over [`EVENT_BYTES`]).
    async fn deliver(&mut self, message: Box<Message>) {
        if self.consumer_gone {
            return;
        }
        let bytes = message.line_len().min(EVENT_BYTES);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            permit = self.budget.clone().acquire_many_owned(bytes) => permit.ok(),
            () = self.events.closed() => None,
        };
        if permit.is_none()
            || self
                .events
                .send((Event::Message(message), permit))
                .await
                .is_err()
        {
            // Nobody reads messages any more, but the CLI must not block on a full
            // pipe: keep draining its output until it ends.
            self.consumer_gone = true;
        }
    }

    fn serve(&mut self, request_id: String, request: Value) {
        while self.tasks.try_join_next().is_some() {}
        self.handlers.retain(|_, task| !task.is_finished());
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let handler = self.handler.clone();
        let outbound = self.outbound.clone();
        let id = request_id.clone();
        let serving = Serving::start(&self.activity);
        let task = self.tasks.spawn(async move {
            let _serving = serving;
            let answer = match handler {
                Some(handler) => handler(subtype.clone(), request).await,
                None => Err(format!("Unsupported control request subtype: {subtype}")),
            };
            let line = match answer {
                Ok(response) => wire::control_success_line(&id, response),
                Err(text) => wire::control_error_line(&id, &text),
            };
            let _ = outbound.send(line).await;
        });
        self.handlers.insert(request_id, task);
    }

    fn observe(&self, message: &mut Message) {
        let mut shared = lock(&self.shared);
        match message {
            Message::System(m) if m.subtype == "init" => {
                if let Some(id) = &m.session_id {
                    shared.session_id = Some(id.clone());
                }
            }
            Message::Result(r) => {
                shared.session_id = Some(r.session_id.clone());
                if let Some(total) = r.total_cost_usd {
                    let before = shared.last_total_cost.unwrap_or(0.0);
                    r.set_turn_cost(Some((total - before).max(0.0)));
                    shared.last_total_cost = Some(total);
                }
            }
            // `/clear` starts a new conversation, and the CLI's cumulative cost with it.
            Message::Unknown(u) if u.kind.as_deref() == Some("conversation_reset") => {
                shared.last_total_cost = None;
            }
            _ => {}
        }
    }

    async fn fatal(&mut self, err: Error) {
        if let Some(p) = &self.process {
            p.kill();
        }
        let _ = self.events.send((Event::Fatal(err), None)).await;
    }

    async fn finish(mut self) {
        // Nothing more can be answered: tell requests now waiting (dropping their
        // senders) and those about to register (the token).
        self.closed.cancel();
        lock(&self.pending).clear();
        self.handlers.clear();
        self.tasks.abort_all();
        let exit = match &self.process {
            Some(process) => Some(
                match tokio::time::timeout(EXIT_WAIT, process.wait()).await {
                    Ok(state) => state,
                    Err(_) => {
                        tracing::warn!("the CLI closed its output but did not exit; killing it");
                        process.kill();
                        process.wait().await
                    }
                },
            ),
            None => None,
        };
        if let Some(task) = self.stderr_task.take() {
            // stderr closes when the group is gone; don't let a stray holder stall us.
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Some(mirror) = self.mirror.take() {
            // What the CLI mirrored after its last result (or before it died).
            let session = lock(&self.shared).session_id.clone().unwrap_or_default();
            for failure in mirror.close().await {
                self.deliver(Box::new(failure.to_message(&session))).await;
            }
        }
        let closed = Closed {
            exit,
            stderr: self.stderr_tail.text(),
        };
        let _ = self.events.send((Event::Closed(closed), None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// What CLI 2.1.197 writes for a flag it does not know, and what the SDK makes of it.
    #[test]
    fn an_unknown_option_is_an_unsupported_cli() {
        use std::os::unix::process::ExitStatusExt;
        let exit = |stderr: &str| Closed {
            exit: Some(ExitState {
                status: Some(std::process::ExitStatus::from_raw(1 << 8)),
            }),
            stderr: stderr.to_owned(),
        };
        let err = exit("error: unknown option '--forward-subagent-text'\n").premature_exit_error();
        assert!(err.is_unsupported_cli(), "{err:?}");
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains("--forward-subagent-text") && text.contains("2.1.331"),
            "{text}"
        );
        assert_eq!(err.exit_code(), Some(1));
        let err = exit("error: unknown option '--no-such=1'\n").premature_exit_error();
        assert!(err.is_unsupported_cli());
        assert!(
            err.to_string().contains("--no-such "),
            "the value is left out: {err}"
        );
        // A flag's value the CLI refuses (2.1.332, an Ajv strict-mode schema check).
        let err = exit(
            "Error: --json-schema is not a valid JSON Schema: strict mode: unknown keyword: \"\"\n",
        )
        .premature_exit_error();
        assert!(err.is_invalid_options(), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("--json-schema"), "{err}");
        // Any other early exit stays a connection error.
        let err = exit("fatal: something else\n").premature_exit_error();
        assert!(err.is_connection(), "{err:?}");
    }

    /// Runs the router over in-memory pipes; returns the session, its events and the
    /// "CLI side" of both pipes.
    fn harness(
        handler: Option<RequestHandler>,
    ) -> (
        Router,
        Events,
        tokio::io::DuplexStream,
        BufReader<tokio::io::DuplexStream>,
    ) {
        let (sdk_stdout, cli_stdout) = tokio::io::duplex(1 << 16);
        let (sdk_stdin, cli_stdin) = tokio::io::duplex(1 << 16);
        let pipes = Pipes {
            stdin: Box::new(sdk_stdin),
            stdout: Box::new(sdk_stdout),
            process: None,
            stderr_tail: StderrTail::default(),
            stderr_task: None,
        };
        let (session, events) = Router::start(pipes, 1 << 20, handler, false, None);
        (session, events, cli_stdout, BufReader::new(cli_stdin))
    }

    async fn read_json(reader: &mut BufReader<tokio::io::DuplexStream>) -> Value {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[tokio::test]
    async fn requests_are_answered_by_id_while_cli_requests_are_served() {
        let handler: RequestHandler = Arc::new(|subtype, request| {
            Box::pin(async move {
                if subtype == "can_use_tool" {
                    Ok(json!({"behavior": "allow", "updatedInput": request["input"]}))
                } else {
                    Err(format!("Unsupported control request subtype: {subtype}"))
                }
            })
        });
        let (session, _events, mut cli_out, mut cli_in) = harness(Some(handler));
        let session = Arc::new(session);
        let asking = {
            let session = session.clone();
            tokio::spawn(async move {
                session
                    .request(json!({"subtype": "initialize"}), Duration::from_secs(5))
                    .await
            })
        };
        let sent = read_json(&mut cli_in).await;
        assert_eq!(sent["request"]["subtype"], "initialize");
        // Before answering, the CLI asks something itself, and something unknown.
        cli_out
            .write_all(
                b"{\"type\":\"control_request\",\"request_id\":\"c1\",\"request\":{\"subtype\":\"can_use_tool\",\"tool_name\":\"Bash\",\"input\":{\"command\":\"ls\"}}}\n\
                  {\"type\":\"control_request\",\"request_id\":\"c2\",\"request\":{\"subtype\":\"teleport\"}}\n",
            )
            .await
            .unwrap();
        let mut answers = [read_json(&mut cli_in).await, read_json(&mut cli_in).await];
        answers.sort_by_key(|a| a["response"]["request_id"].as_str().unwrap().to_owned());
        assert_eq!(answers[0]["response"]["subtype"], "success");
        assert_eq!(
            answers[0]["response"]["response"]["updatedInput"]["command"],
            "ls"
        );
        assert_eq!(answers[1]["response"]["subtype"], "error");
        assert!(
            answers[1]["response"]["error"]
                .as_str()
                .unwrap()
                .contains("teleport")
        );

        let id = sent["request_id"].as_str().unwrap();
        let answer = json!({"type":"control_response","response":{"subtype":"success","request_id":id,"response":{"ok":true}}});
        cli_out
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(asking.await.unwrap().unwrap()["ok"], true);
    }

    #[tokio::test]
    async fn a_cancelled_request_stops_its_handler_and_gets_no_answer() {
        let started = Arc::new(tokio::sync::Notify::new());
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let handler: RequestHandler = {
            let (started, dropped) = (started.clone(), dropped.clone());
            Arc::new(move |subtype, _request| {
                let (started, dropped) = (started.clone(), dropped.clone());
                Box::pin(async move {
                    if subtype == "slow" {
                        let _guard = SetOnDrop(dropped);
                        started.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Ok(json!({"fast": true}))
                })
            })
        };
        let (_session, _events, mut cli_out, mut cli_in) = harness(Some(handler));
        cli_out
            .write_all(b"{\"type\":\"control_request\",\"request_id\":\"s1\",\"request\":{\"subtype\":\"slow\"}}\n")
            .await
            .unwrap();
        started.notified().await;
        cli_out
            .write_all(b"{\"type\":\"control_cancel_request\",\"request_id\":\"s1\"}\n\
                         {\"type\":\"control_request\",\"request_id\":\"f1\",\"request\":{\"subtype\":\"fast\"}}\n")
            .await
            .unwrap();
        // The next answer is the fast one's: the cancelled request gets none.
        let answer = read_json(&mut cli_in).await;
        assert_eq!(answer["response"]["request_id"], "f1");
        assert!(
            dropped.load(Ordering::SeqCst),
            "the cancelled handler was dropped"
        );
    }

    #[tokio::test]
    async fn messages_flow_and_garbage_is_skipped() {
        let (_session, mut events, mut cli_out, _cli_in) = harness(None);
        cli_out
            .write_all(b"not json\n\n{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\n")
            .await
            .unwrap();
        drop(cli_out);
        match events.recv().await.unwrap() {
            Event::Message(m) => assert_eq!(m.content(), "hi"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(events.recv().await.unwrap(), Event::Closed(_)));
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_a_closed_cli_fails_pending_requests() {
        let (session, _events, cli_out, mut cli_in) = harness(None);
        let err = session
            .request(json!({"subtype": "interrupt"}), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let _ = read_json(&mut cli_in).await;
        let session = Arc::new(session);
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move {
                session
                    .request(json!({"subtype": "mcp_status"}), Duration::from_secs(30))
                    .await
            })
        };
        let _ = read_json(&mut cli_in).await;
        drop(cli_out);
        let err = waiting.await.unwrap().unwrap_err();
        assert!(err.is_connection(), "{err}");
    }
}
