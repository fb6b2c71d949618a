//! One CLI session: a started CLI process, the control router that talks to it, the
//! dispatcher that answers its requests, and the channel its messages arrive on.
//!
//! [`CliSession`] is the one type every front runs on: [`Query`](crate::Query),
//! [`ClaudeClient`](crate::ClaudeClient) and the pool's processes. What happens to a
//! CLI, from start to exit, is written here once:
//!
//! - **start**: cold ([`CliSession::connect`]), or parked as a spare
//!   ([`CliSession::park`], `--await-claim`) and bound to a run later
//!   ([`CliSession::claim`]);
//! - **turns**: [`Link::send_prompt`] writes a prompt; [`CliSession::next_step`] reads
//!   what comes back, and [`Link::classify`] is the one place where a CLI event becomes
//!   a message, a turn's result (with the error it stands for) or a failure;
//! - **reset**: [`CliSession::reset`] starts a new conversation on the live process
//!   (`/clear`);
//! - **end**: [`Link::close`] ends the process gracefully (stdin closed, then `SIGTERM`,
//!   then `SIGKILL`); dropping a session kills it at once; [`Link::exit_error`] adds
//!   the exit code and stderr tail of a process that died.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`CliSession`], [`Link`], [`Step`] |
//! | `router.rs` | the reader and writer tasks, control requests by id |
//! | `dispatch.rs` | answering the CLI's requests: permission callback, hooks, in-process tools, the SDK's guard |

pub(crate) mod dispatch;
pub(crate) mod router;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::{ClaudeCodeOptions, PermissionMode};
use crate::process::argv::SparePlan;
use crate::process::discovery::CliVersion;
use crate::process::subprocess::ProcessGuard;
use crate::process::{self, Prepared};
use crate::prompt::Prompt;
use crate::util::lock;
use crate::wire;
use dispatch::Dispatcher;
use router::Router;
pub(crate) use router::{Closed, Event, Events};

/// How long the CLI gets to answer `initialize` (and a claim).
pub(crate) const INITIALIZE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the CLI gets to exit after its stdin closes before it is sent `SIGTERM`.
pub(crate) const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long after `SIGTERM` before `SIGKILL`.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long a control request may wait for its answer.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reset (`/clear`) may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a starting session publishes its process as soon as it exists, so whoever
/// owns the start (a pool slot) can wait for the process to exit even if the start is
/// abandoned half-way.
pub(crate) type ProcessSlot = Arc<Mutex<Option<Arc<ProcessGuard>>>>;

/// What one event of the CLI means for the turn being read.
#[derive(Debug)]
pub(crate) enum Step {
    /// A message of the turn.
    Message(Message),
    /// The turn's result, and the error it stands for (after the result is yielded).
    Result(Message, Option<Error>),
    /// The run cannot go on (a line over the limit, a broken pipe): the process has
    /// been killed.
    Fatal(Error),
    /// The process exited; its exit code and stderr tail.
    Exited(Closed),
    /// Nobody can send anything any more.
    Gone,
}

/// The parts of a CLI session that several tasks may use at once (`&self`): writing,
/// control requests, the process.
pub(crate) struct Link {
    router: Router,
    dispatcher: Arc<Dispatcher>,
    version: CliVersion,
    born: Instant,
    /// What the CLI said about itself at `initialize` (or at a claim).
    server_info: Mutex<Value>,
    /// The config directory a store's session was materialized into for this process
    /// to resume (removed when the session drops).
    _materialized: Option<crate::store::MaterializedSession>,
}

/// A started, initialized CLI and the channel its events arrive on.
pub(crate) struct CliSession {
    pub(crate) link: Link,
    pub(crate) events: Events,
}

impl Link {
    /// Writes a prompt as a `user` line.
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) (with the exit context) when the CLI is
    /// gone.
    pub(crate) async fn send_prompt(&self, prompt: &Prompt) -> Result<()> {
        let session_id = self.router.session_id().unwrap_or_default();
        let line = wire::user_line(prompt.to_content(), &session_id, None);
        match self.router.send_line(line).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.exit_error(err).await),
        }
    }

    /// Sends a control request and waits up to `timeout` for its answer.
    ///
    /// # Errors
    ///
    /// See [`Router::request`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; a late answer is ignored.
    pub(crate) async fn request(&self, request: Value, timeout: Duration) -> Result<Value> {
        self.router.request(request, timeout).await
    }

    /// Sends a control request with the usual timeout ([`CONTROL_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// See [`Router::request`].
    pub(crate) async fn control(&self, request: Value) -> Result<Value> {
        self.request(request, CONTROL_TIMEOUT).await
    }

    /// Changes the permission mode: the CLI's mode, and the SDK guard's. Returns the
    /// mode the CLI reports in effect, when it says.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) for `ReadOnly` when the process did
    /// not start in it; control-request errors otherwise.
    pub(crate) async fn set_permission_mode(
        &self,
        mode: PermissionMode,
        read_only_at_start: bool,
        has_callback: bool,
    ) -> Result<Value> {
        if mode == PermissionMode::ReadOnly && !read_only_at_start {
            return Err(Error::invalid_options(
                "readOnly removes tools, which is only possible when the CLI starts: connect with it",
            ));
        }
        let cli_mode = match mode {
            // As at start: the guard enforces Strict; ReadOnly with a callback asks it
            // about reads outside the project.
            PermissionMode::Strict => "default",
            PermissionMode::ReadOnly if has_callback => "default",
            other => other.cli_mode(),
        };
        let answer = self
            .control(json!({"subtype": "set_permission_mode", "mode": cli_mode}))
            .await?;
        self.dispatcher.set_mode(mode);
        Ok(answer)
    }

    /// The session id the CLI reported last.
    pub(crate) fn session_id(&self) -> Option<String> {
        self.router.session_id()
    }

    /// The process, when there is one.
    pub(crate) fn process(&self) -> Option<&Arc<ProcessGuard>> {
        self.router.process()
    }

    /// The CLI's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process().map(|p| p.pid())
    }

    /// Whether the process has exited (or died and is not reaped yet).
    pub(crate) fn has_exited(&self) -> bool {
        self.process().is_some_and(|p| !p.is_running())
    }

    /// The CLI's version.
    pub(crate) fn version(&self) -> CliVersion {
        self.version
    }

    /// When the process was started.
    pub(crate) fn born(&self) -> Instant {
        self.born
    }

    /// What the CLI said about itself (the answer to `initialize`, or a claim's).
    pub(crate) fn server_info(&self) -> Value {
        lock(&self.server_info).clone()
    }

    /// The stderr tail so far.
    pub(crate) fn stderr_tail(&self) -> String {
        self.router.stderr_tail()
    }

    /// Kills the process group now.
    pub(crate) fn kill(&self) {
        self.router.kill();
    }

    /// The CLI's signs of life, for the idle watchdog.
    pub(crate) fn activity(&self) -> &Arc<router::Activity> {
        self.router.activity()
    }

    /// Closes the CLI's stdin: it finishes what it is doing and exits.
    pub(crate) fn close_stdin(&self) {
        self.router.close_stdin();
    }

    /// Ends the process gracefully: stdin closed, up to [`EXIT_GRACE`] to exit, then
    /// `SIGTERM`, [`TERM_GRACE`] later `SIGKILL` to everything of the run.
    pub(crate) async fn close(&self) {
        self.router.close_stdin();
        if let Some(process) = self.router.process() {
            process.shutdown(EXIT_GRACE, TERM_GRACE).await;
        }
    }

    /// What one event means for the turn being read: a result becomes the error it
    /// stands for, given what the callbacks decided (denials your callback or hooks
    /// chose are not errors; a denial nobody decided is).
    pub(crate) fn classify(&self, event: Option<Event>) -> Step {
        match event {
            Some(Event::Message(message)) => {
                let message = *message;
                match &message {
                    Message::Result(result) => {
                        let error = self.dispatcher.result_error(result);
                        Step::Result(message, error)
                    }
                    _ => Step::Message(message),
                }
            }
            Some(Event::Fatal(err)) => Step::Fatal(err),
            Some(Event::Closed(closed)) => Step::Exited(closed),
            None => Step::Gone,
        }
    }

    /// `err` with the exit code and stderr of a CLI that died (waiting up to 2 s for it
    /// to exit), or with the stderr so far of one that is still alive.
    pub(crate) async fn exit_error(&self, err: Error) -> Error {
        let Some(process) = self.router.process() else {
            return err;
        };
        if !err.is_connection() {
            // Still alive (a start-up that hangs, say): what it said on stderr helps.
            return err.with_stderr(self.router.stderr_tail());
        }
        let exit = tokio::time::timeout(Duration::from_secs(2), process.wait()).await;
        // Give the stderr drain a moment to read what the CLI said on its way out.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Closed {
            exit: exit.ok(),
            stderr: self.router.stderr_tail(),
        }
        .premature_exit_error()
    }
}

impl CliSession {
    /// Starts a CLI for `options` and completes the `initialize` handshake. The process
    /// is published in `slot` as soon as it exists.
    ///
    /// # Errors
    ///
    /// Invalid options, a missing or old CLI, a CLI that fails to start or to answer.
    pub(crate) async fn connect(options: &ClaudeCodeOptions, slot: &ProcessSlot) -> Result<Self> {
        let prepared = process::prepare(options).await?;
        Self::connect_prepared(&prepared, options, slot).await
    }

    /// [`connect`](CliSession::connect) with the CLI found and the launch planned.
    ///
    /// # Errors
    ///
    /// See [`connect`](CliSession::connect).
    pub(crate) async fn connect_prepared(
        prepared: &Prepared,
        options: &ClaudeCodeOptions,
        slot: &ProcessSlot,
    ) -> Result<Self> {
        let mut env = prepared.plan.env.clone();
        // Resuming with a session store: the store is the truth. Its transcript (and
        // the user-level settings, plugins and commands a resume needs) is written to a
        // config directory of this process's own.
        let materialized = match (&options.session_store, &options.resume) {
            (Some(store), Some(id)) => {
                let cwd = run_dir(options)?;
                let key = crate::store::SessionKey::for_directory(&cwd, id.clone())?;
                let mut how = crate::store::MaterializeOptions::new().cwd(&cwd);
                if let Some(source) = config_dir(options) {
                    how = how.source_config_dir(source);
                }
                let session = crate::store::materialize_session(store.as_ref(), &key, how).await?;
                env.vars.push((
                    "CLAUDE_CONFIG_DIR".into(),
                    session.config_dir().display().to_string(),
                ));
                Some(session)
            }
            _ => None,
        };
        let config = materialized
            .as_ref()
            .map(|m| m.config_dir().to_owned())
            .or_else(|| config_dir(options));
        let mirror = mirror_sink(options, config.as_deref())?;
        let pipes = process::start(
            &prepared.program,
            &prepared.plan.args,
            &env,
            options.cwd.as_deref(),
            options.stderr.clone(),
        )?;
        let session =
            Self::initialize(pipes, prepared.version, options, slot, mirror, materialized).await?;
        if let Some(total) = config.and_then(|dir| resumed_cost(options, &dir)) {
            session.link.router.set_cost_baseline(total);
        }
        Ok(session)
    }

    /// Starts a parked spare (`--await-claim`) for runs that share `plan`'s key, with
    /// the callbacks of `options` until a claim rebinds them.
    ///
    /// # Errors
    ///
    /// See [`connect`](CliSession::connect).
    pub(crate) async fn park(
        prepared: &Prepared,
        plan: &SparePlan,
        options: &ClaudeCodeOptions,
        slot: &ProcessSlot,
    ) -> Result<Self> {
        let mirror = mirror_sink(options, config_dir(options).as_deref())?;
        let pipes = process::start(
            &prepared.program,
            &plan.args,
            &prepared.plan.env,
            options.cwd.as_deref(),
            None,
        )?;
        Self::initialize(pipes, prepared.version, options, slot, mirror, None).await
    }

    async fn initialize(
        pipes: process::Pipes,
        version: CliVersion,
        options: &ClaudeCodeOptions,
        slot: &ProcessSlot,
        mirror: Option<crate::store::MirrorSink>,
        materialized: Option<crate::store::MaterializedSession>,
    ) -> Result<Self> {
        let dispatcher = Dispatcher::new(options);
        let (router, events) = Router::start(
            pipes,
            options.line_limit(),
            Some(dispatcher.handler()),
            options.verbose,
            mirror,
        );
        *lock(slot) = router.process().cloned();
        let link = Link {
            router,
            dispatcher,
            version,
            born: Instant::now(),
            server_info: Mutex::new(Value::Null),
            _materialized: materialized,
        };
        let init = link.dispatcher.initialize_request();
        match link.request(init, INITIALIZE_TIMEOUT).await {
            Ok(info) => {
                *lock(&link.server_info) = info;
                Ok(CliSession { link, events })
            }
            Err(err) => Err(link.exit_error(err).await),
        }
    }

    /// Binds a parked spare to a run of `options`: its callbacks, then `claim_session`
    /// (working directory, permission mode, prompts, agents), then the model, then
    /// (when given) the run's first prompt.
    ///
    /// The claim and the model (or, without a model, the claim and the prompt) are
    /// written together, without waiting for the answers in between: the CLI reads its
    /// input in order and finishes a claim before it reads the next line, so the prompt
    /// runs in the claimed session, and a round trip is saved. When the claim fails,
    /// the CLI refuses what follows it (`not_claimed`) without asking the model. A
    /// refused model does not stop the CLI reading on, so with a model the prompt
    /// waits for the model's answer.
    ///
    /// # Errors
    ///
    /// [`ControlRequest`](ErrorKind::ControlRequest) when the CLI refuses the claim or
    /// the model (its message starts with the CLI's reason, e.g.
    /// `env_key_not_claimable`); the spare is then unusable for this run and must be
    /// killed (the prompt may already be running on it).
    pub(crate) async fn claim(
        &self,
        options: &ClaudeCodeOptions,
        plan: &SparePlan,
        include_initialize: bool,
        prompt: Option<&Prompt>,
    ) -> Result<()> {
        self.link.dispatcher.rebind(options);
        let mut claim = plan.claim.clone();
        if include_initialize {
            claim["include_initialize"] = json!(true);
        }
        let router = &self.link.router;
        let claimed = router.send_request(claim).await?;
        let model = match &plan.model {
            Some(model) => Some(
                router
                    .send_request(json!({"subtype": "set_model", "model": model}))
                    .await?,
            ),
            None => None,
        };
        // A refused model leaves the spare's own model in place and the CLI reads on:
        // the prompt waits for the model's answer, so it never runs on the wrong model
        // (and never twice, once here and once on the cold start that replaces this).
        if model.is_none()
            && let Some(prompt) = prompt
        {
            self.link.send_prompt(prompt).await?;
        }
        let answer = claimed.answer(INITIALIZE_TIMEOUT).await?;
        if include_initialize {
            let info = answer
                .get("initialize")
                .cloned()
                .unwrap_or_else(|| answer.clone());
            *lock(&self.link.server_info) = info;
        }
        if let Some(model) = model {
            model.answer(CONTROL_TIMEOUT).await?;
            if let Some(prompt) = prompt {
                self.link.send_prompt(prompt).await?;
            }
        }
        Ok(())
    }

    /// Serves the next run of the same conversation (a hot process) with that run's
    /// callbacks.
    pub(crate) fn adopt(&self, options: &ClaudeCodeOptions) {
        self.link.dispatcher.rebind(options);
    }

    /// Waits for the next event of the turn.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when the future completes.
    pub(crate) async fn next_step(&mut self) -> Step {
        let event = self.events.recv().await;
        self.link.classify(event)
    }

    /// Polls for the next event of the turn.
    pub(crate) fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        self.events.poll_recv(cx).map(|e| self.link.classify(e))
    }

    /// Starts a new conversation on the live process: `/clear`, then waits for the CLI
    /// to confirm with a result under a new session id. What the last run's tools left
    /// running (a background server, a watcher) is killed first.
    ///
    /// # Errors
    ///
    /// The reason the reset failed, with the session (to be killed).
    pub(crate) async fn reset(mut self) -> std::result::Result<Self, (Error, Self)> {
        let version = self.link.version();
        if !version.supports_conversation_reset() {
            // An older CLI starts a new session on `/clear` without a word: nothing to
            // tell a reset from a stray result, so the process is not reused.
            return Err((
                Error::unsupported_cli(format!(
                    "Claude Code CLI {version} does not confirm a /clear; resetting a process \
                     for reuse needs {} or newer",
                    crate::process::discovery::CONVERSATION_RESET_SINCE
                )),
                self,
            ));
        }
        let before = self.link.session_id();
        if let Some(process) = self.link.process() {
            process.kill_tool_processes().await;
        }
        if let Err(err) = self.link.send_prompt(&Prompt::Text("/clear".into())).await {
            return Err((err, self));
        }
        let wait = async {
            let mut reset_seen = false;
            loop {
                match self.next_step().await {
                    Step::Message(Message::Unknown(u))
                        if u.kind.as_deref() == Some("conversation_reset") =>
                    {
                        reset_seen = true;
                    }
                    Step::Result(Message::Result(r), _)
                        if reset_seen && Some(&r.session_id) != before.as_ref() =>
                    {
                        return Ok(());
                    }
                    // A result before the reset (the CLI reporting on a background
                    // command that was just stopped) belongs to the old conversation.
                    Step::Message(_) | Step::Result(..) => {}
                    Step::Fatal(err) => return Err(err),
                    Step::Exited(closed) => return Err(closed.premature_exit_error()),
                    Step::Gone => {
                        return Err(Error::connection("the CLI went away during the reset"));
                    }
                }
            }
        };
        match tokio::time::timeout(RESET_TIMEOUT, wait).await {
            Ok(Ok(())) => Ok(self),
            Ok(Err(err)) => Err((err, self)),
            Err(_) => Err((Error::timeout("the reset did not finish"), self)),
        }
    }
}

/// The CLI's config directory for these options (`CLAUDE_CONFIG_DIR`, else
/// `$HOME/.claude`).
fn config_dir(options: &ClaudeCodeOptions) -> Option<std::path::PathBuf> {
    crate::store::config_dir_for_env(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The run's working directory, canonical.
fn run_dir(options: &ClaudeCodeOptions) -> Result<std::path::PathBuf> {
    let cwd = match &options.cwd {
        Some(cwd) => cwd.clone(),
        None => std::env::current_dir().map_err(|e| {
            Error::new(crate::ErrorKind::Io, "cannot read the current directory").with_source(e)
        })?,
    };
    Ok(cwd.canonicalize().unwrap_or(cwd))
}

/// The sink that takes the CLI's `transcript_mirror` lines to the options' session
/// store, if they have one.
fn mirror_sink(
    options: &ClaudeCodeOptions,
    config: Option<&std::path::Path>,
) -> Result<Option<crate::store::MirrorSink>> {
    let Some(store) = &options.session_store else {
        return Ok(None);
    };
    let Some(config) = config else {
        return Err(Error::invalid_options(
            "a session store needs to know the CLI's config directory: set CLAUDE_CONFIG_DIR or HOME",
        ));
    };
    crate::store::MirrorSink::new(
        std::sync::Arc::clone(store),
        crate::store::projects_dir(config),
        options.mirror.clone(),
    )
    .map(Some)
}

/// What a resumed conversation had cost when its last process ended gracefully: the
/// CLI writes a `cost-state` entry to the transcript at exit and starts a resumed
/// process's cumulative cost from it (a process that was killed writes none, and the
/// next one starts from the last entry there is). Read from the tail of the transcript,
/// so each turn's own cost is exact whichever way the earlier processes ended.
fn resumed_cost(options: &ClaudeCodeOptions, config: &std::path::Path) -> Option<f64> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 256 * 1024;
    let id = options.resume.as_deref()?;
    if options.fork_session {
        return None;
    }
    let cwd = run_dir(options).ok()?;
    let path = crate::store::projects_dir(config)
        .join(crate::store::project_key_for_directory(&cwd))
        .join(format!("{id}.jsonl"));
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail).ok()?;
    tail.split(|b| *b == b'\n').rev().find_map(|line| {
        let entry: Value = serde_json::from_slice(line).ok()?;
        (entry.get("type")?.as_str()? == "cost-state"
            && entry.get("sessionId").and_then(Value::as_str) == Some(id))
        .then(|| entry.get("totalCostUSD")?.as_f64())
        .flatten()
    })
}

impl std::fmt::Debug for CliSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliSession")
            .field("pid", &self.link.pid())
            .field("session_id", &self.link.session_id())
            .finish()
    }
}
