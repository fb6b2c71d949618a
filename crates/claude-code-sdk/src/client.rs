//! [`ClaudeClient`]: one CLI process, many turns, and control while they run.
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeClient, ClaudeCodeOptions};
//! use futures::StreamExt;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let client = ClaudeClient::connect(ClaudeCodeOptions::default()).await?;
//!
//! client.query("My name is Ada. Remember it.").await?;
//! let mut turn = client.receive_response();
//! while let Some(message) = turn.next().await {
//!     println!("{}", message?.content());
//! }
//! drop(turn);
//!
//! client.query("What is my name?").await?;
//! let answer = client.receive_response().collect::<Vec<_>>().await;
//! println!("{} messages", answer.len());
//!
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! The client keeps the CLI's stdin open between turns, so permission callbacks,
//! hooks and in-process tools keep working; [`close`](ClaudeClient::close) ends the
//! process gracefully and dropping the client kills its process group.
//!
//! # Concurrency
//!
//! Every method takes `&self`. Control requests ([`interrupt`](ClaudeClient::interrupt),
//! [`set_model`](ClaudeClient::set_model), ...) can be sent while another task reads
//! the turn's messages. Only one reader at a time: a second
//! [`receive_response`](ClaudeClient::receive_response) waits until the first one is
//! dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::cli::CliVersion;
use crate::control::{
    self, AccountInfo, AgentInfo, BackgroundTasksAnswer, ContextUsage, ListModelsAnswer,
    McpServerStatus, McpSetServersResult, McpStatusAnswer, ModelInfo, ReloadSkillsAnswer,
    ReloadedPlugins, Request, RewindFilesResult, SlashCommand, ThinkingDisplay, typed_list,
};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, ResultMessage};
use crate::options::{ClaudeCodeOptions, McpServerConfig, PermissionMode};
use crate::process::discovery::{CONTROL_REQUESTS_SINCE, since};
use crate::prompt::Prompt;
use crate::session::{CliSession, Event, Events, Link, ProcessSlot, Step};
use crate::toolkit::pool::Lease;
use crate::util::lock;

/// What the CLI said about itself when it started (the answer to `initialize`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerInfo {
    /// Slash commands and skills.
    pub commands: Vec<SlashCommand>,
    /// Models the account can use.
    pub models: Vec<ModelInfo>,
    /// Agents available.
    pub agents: Vec<AgentInfo>,
    /// The account: token and API key source, provider.
    pub account: Option<AccountInfo>,
    /// The output style in effect.
    pub output_style: Option<String>,
    /// The CLI's version.
    pub cli_version: CliVersion,
    /// The whole answer.
    pub raw: Value,
}

impl ServerInfo {
    fn from_wire(raw: Value, cli_version: CliVersion) -> Self {
        ServerInfo {
            commands: typed_list(&raw, "commands"),
            models: typed_list(&raw, "models"),
            agents: typed_list(&raw, "agents"),
            account: raw
                .get("account")
                .and_then(|a| serde_json::from_value(a.clone()).ok()),
            output_style: raw
                .get("output_style")
                .and_then(Value::as_str)
                .map(str::to_owned),
            cli_version,
            raw,
        }
    }
}

/// Running totals of a client's turns.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionTotals {
    /// Turns that ended with a result.
    pub turns: u32,
    /// The CLI's cumulative cost for the process.
    pub total_cost_usd: f64,
    /// The cost of the last turn.
    pub last_turn_cost_usd: f64,
    /// Input tokens over all turns.
    pub input_tokens: u64,
    /// Output tokens over all turns.
    pub output_tokens: u64,
}

#[derive(Default)]
struct ClientState {
    totals: SessionTotals,
    /// Why the client cannot go on, once it cannot.
    dead: Option<String>,
    /// Results of turns abandoned after a timeout, still to be skipped.
    stale_results: usize,
    mode: Option<PermissionMode>,
}

/// A connected Claude Code CLI for multi-turn conversations. See the [module
/// docs](crate::client).
pub struct ClaudeClient {
    link: Link,
    events: tokio::sync::Mutex<Events>,
    server_info: ServerInfo,
    timeout: Option<Duration>,
    /// The idle watchdog of a turn read with `receive_response`.
    idle_timeout: Option<Duration>,
    read_only_at_start: bool,
    has_callback: bool,
    state: Mutex<ClientState>,
    /// The pool slot the process holds, for a client from a pool.
    lease: Option<Lease>,
}

impl ClaudeClient {
    /// Starts the CLI and completes the `initialize` handshake.
    ///
    /// `options.timeout`, when set, bounds the start and each turn read with
    /// [`receive_response`](ClaudeClient::receive_response); `options.idle_timeout`,
    /// when set, ends such a turn when the CLI stays silent that long (the CLI is
    /// killed, the turn ends with a [`Timeout`](ErrorKind::Timeout) error and the
    /// client is closed).
    ///
    /// # Errors
    ///
    /// Invalid options, a missing or old CLI, or a CLI that fails to start.
    pub async fn connect(options: ClaudeCodeOptions) -> Result<ClaudeClient> {
        let slot = ProcessSlot::default();
        let start = CliSession::connect(&options, &slot);
        let session = match options.timeout {
            Some(limit) => tokio::time::timeout(limit, start)
                .await
                .map_err(|_| Error::timeout(format!("the CLI did not start within {limit:?}")))??,
            None => start.await?,
        };
        Ok(ClaudeClient::on(session, &options, None))
    }

    /// A client over a started session (from a pool, with the slot it holds).
    pub(crate) fn on(
        session: CliSession,
        options: &ClaudeCodeOptions,
        lease: Option<Lease>,
    ) -> ClaudeClient {
        let CliSession { link, events } = session;
        ClaudeClient {
            server_info: ServerInfo::from_wire(link.server_info(), link.version()),
            link,
            events: tokio::sync::Mutex::new(events),
            timeout: options.timeout,
            idle_timeout: options.idle_timeout,
            read_only_at_start: options.permission_mode == Some(PermissionMode::ReadOnly),
            has_callback: options.can_use_tool.is_some(),
            state: Mutex::new(ClientState {
                mode: options.permission_mode,
                ..Default::default()
            }),
            lease,
        }
    }

    /// Sends a prompt. Read the answer with [`receive_response`](ClaudeClient::receive_response).
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) when the CLI is gone.
    pub async fn query(&self, prompt: impl Into<Prompt>) -> Result<()> {
        self.check_alive()?;
        self.link.send_prompt(&prompt.into()).await
    }

    /// Sends several user messages in order, e.g. from a channel.
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) when the CLI is gone.
    pub async fn query_stream<S, P>(&self, prompts: S) -> Result<()>
    where
        S: Stream<Item = P>,
        P: Into<Prompt>,
    {
        let mut prompts = std::pin::pin!(prompts);
        while let Some(prompt) = prompts.next().await {
            self.query(prompt).await?;
        }
        Ok(())
    }

    /// The messages of the current turn, ending with (and including) its result.
    ///
    /// A turn that ends in an error result yields the result, then one `Err`
    /// classified like [`query()`](crate::query()) errors. If `timeout` was set and the
    /// turn takes longer, the turn is interrupted and the stream ends with a
    /// [`Timeout`](ErrorKind::Timeout) error; the client stays usable.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream mid-turn leaves the rest of the turn's messages queued for
    /// the next reader.
    pub fn receive_response(&self) -> BoxStream<'_, Result<Message>> {
        self.receive(true).boxed()
    }

    /// Every message, across turns, until the CLI exits.
    pub fn receive_messages(&self) -> BoxStream<'_, Result<Message>> {
        self.receive(false).boxed()
    }

    fn receive(&self, stop_at_result: bool) -> impl Stream<Item = Result<Message>> + Send + '_ {
        enum Phase {
            Reading,
            ErrorThenEnd(Error),
            End,
        }
        let deadline = match (stop_at_result, self.timeout) {
            (true, Some(limit)) => Some(tokio::time::Instant::now() + limit),
            _ => None,
        };
        futures::stream::unfold(
            (None, Phase::Reading),
            move |(guard, phase): (Option<tokio::sync::MutexGuard<'_, Events>>, Phase)| async move {
                let mut guard = match phase {
                    Phase::End => return None,
                    Phase::ErrorThenEnd(err) => return Some((Err(err), (None, Phase::End))),
                    Phase::Reading => match guard {
                        Some(g) => g,
                        None => {
                            if let Err(err) = self.check_alive() {
                                return Some((Err(err), (None, Phase::End)));
                            }
                            let mut guard = self.events.lock().await;
                            if let Err(err) = self.skip_stale(&mut guard).await {
                                return Some((Err(err), (None, Phase::End)));
                            }
                            guard
                        }
                    },
                };
                let watched = self.recv_watched(&mut guard, stop_at_result);
                let event = match deadline {
                    Some(at) => match tokio::time::timeout_at(at, watched).await {
                        Ok(event) => event,
                        Err(_) => {
                            let err = self.abandon_turn(&mut guard).await;
                            return Some((Err(err), (None, Phase::End)));
                        }
                    },
                    None => watched.await,
                };
                let event = match event {
                    Ok(event) => event,
                    Err(err) => return Some((Err(err), (None, Phase::End))),
                };
                match self.link.classify(event) {
                    Step::Message(message) => Some((Ok(message), (Some(guard), Phase::Reading))),
                    Step::Result(message, error) => {
                        if let Message::Result(result) = &message {
                            self.record(result);
                        }
                        if stop_at_result {
                            let next = match error {
                                Some(err) => Phase::ErrorThenEnd(err),
                                None => Phase::End,
                            };
                            return Some((Ok(message), (None, next)));
                        }
                        Some((Ok(message), (Some(guard), Phase::Reading)))
                    }
                    Step::Fatal(err) => {
                        self.mark_dead(err.to_string());
                        Some((Err(err), (None, Phase::End)))
                    }
                    Step::Exited(closed) => {
                        let err = closed.premature_exit_error();
                        self.mark_dead(err.to_string());
                        Some((Err(err), (None, Phase::End)))
                    }
                    Step::Gone => {
                        self.mark_dead("the CLI is gone".to_owned());
                        None
                    }
                }
            },
        )
    }

    /// The next event; with `watch` and an `idle_timeout`, the idle watchdog's error
    /// (the CLI killed, the client closed) once the CLI has been silent that long.
    /// Time spent serving the CLI's own requests (callbacks, hooks, in-process tools)
    /// is not silence.
    async fn recv_watched(&self, events: &mut Events, watch: bool) -> Result<Option<Event>> {
        let Some(limit) = self.idle_timeout.filter(|_| watch) else {
            return Ok(events.recv().await);
        };
        let activity = Arc::clone(self.link.activity());
        let mut from = tokio::time::Instant::now();
        loop {
            let at = activity.last().max(from) + limit;
            tokio::select! {
                event = events.recv() => return Ok(event),
                () = tokio::time::sleep_until(at) => {
                    let now = tokio::time::Instant::now();
                    if activity.serving() {
                        from = now;
                    } else if activity.last().max(from) + limit <= now {
                        self.link.kill();
                        let err = Error::timeout(format!(
                            "the CLI wrote nothing for {limit:?} while the turn ran \
                             (idle_timeout); the CLI was killed"
                        ))
                        .with_stderr(self.link.stderr_tail());
                        self.mark_dead(err.to_string());
                        return Err(err);
                    }
                }
            }
        }
    }

    /// The turn took too long: interrupt it and drop what is left of it.
    async fn abandon_turn(&self, events: &mut Events) -> Error {
        let limit = self.timeout.unwrap_or_default();
        let err = Error::timeout(format!(
            "the turn did not finish within {limit:?}; it was interrupted"
        ));
        // Drain while interrupting: the interrupt's answer may sit behind messages the
        // reader cannot deliver until someone reads them.
        let drain = async {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Message(m) if m.is_result() => return true,
                    Event::Message(_) => {}
                    _ => return false,
                }
            }
            false
        };
        let drained = tokio::time::timeout(Duration::from_secs(10), drain);
        let (_, drained) = tokio::join!(self.interrupt(), drained);
        if drained != Ok(true) {
            // Its result is still to come: the next reader skips it.
            self.lock_state().stale_results += 1;
        }
        err
    }

    /// Drops what is left of turns abandoned after a timeout.
    async fn skip_stale(&self, events: &mut Events) -> Result<()> {
        while self.lock_state().stale_results > 0 {
            match events.recv().await {
                Some(Event::Message(m)) if m.is_result() => {
                    self.lock_state().stale_results -= 1;
                }
                Some(Event::Message(_)) => {}
                Some(Event::Fatal(err)) => {
                    self.mark_dead(err.to_string());
                    return Err(err);
                }
                Some(Event::Closed(closed)) => {
                    let err = closed.premature_exit_error();
                    self.mark_dead(err.to_string());
                    return Err(err);
                }
                None => return Err(Error::connection("the client's CLI is gone")),
            }
        }
        Ok(())
    }

    /// Stops the current turn. The turn ends with an `error_during_execution` result
    /// (an [`Interrupted`](ErrorKind::Interrupted) error from `receive_response`); the
    /// client stays usable.
    ///
    /// # Errors
    ///
    /// [`Timeout`](ErrorKind::Timeout) or [`Connection`](ErrorKind::Connection) when the
    /// CLI does not answer.
    pub async fn interrupt(&self) -> Result<()> {
        self.control(json!({"subtype": "interrupt"}))
            .await
            .map(drop)
    }

    /// Changes the permission mode for the next tool uses, and returns the mode in
    /// effect: the CLI may not take the one asked for (the project's settings can
    /// disable a mode), and then it says which it kept.
    ///
    /// The Python SDK's four modes keep their guarantees: [`Strict`](PermissionMode::Strict) takes
    /// effect in the SDK's guard at once (it asks the callback, or denies, before every
    /// tool not in `allowed_tools`); the others map to the CLI's modes.
    /// [`ReadOnly`](PermissionMode::ReadOnly) narrows the tool set, which is fixed when
    /// the CLI starts, so it can only be chosen at connect.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) for `ReadOnly` on a client that did
    /// not start in it; [`ControlRequest`](ErrorKind::ControlRequest) when the CLI refuses
    /// the mode (a mode the project's settings disable, `bypassPermissions` on a CLI not
    /// started with it); control-request errors otherwise.
    pub async fn set_permission_mode(&self, mode: PermissionMode) -> Result<PermissionMode> {
        self.check_alive()?;
        let answer = self
            .link
            .set_permission_mode(mode, self.read_only_at_start, self.has_callback)
            .await
            .map_err(|err| self.unsupported_request(err, "set_permission_mode"))?;
        let effective = effective_mode(mode, self.has_callback, &answer);
        self.lock_state().mode = Some(effective);
        Ok(effective)
    }

    /// Changes the model for the next turns; `None` goes back to the default.
    ///
    /// # Errors
    ///
    /// Control-request errors.
    pub async fn set_model(&self, model: Option<&str>) -> Result<()> {
        self.control(json!({"subtype": "set_model", "model": model}))
            .await
            .map(drop)
    }

    /// The status of each MCP server: connected, failed (and why), needing a login,
    /// pending or disabled, with its tools.
    ///
    /// # Errors
    ///
    /// Control-request errors; [`Protocol`](ErrorKind::Protocol) for an answer of
    /// another shape.
    pub async fn mcp_status(&self) -> Result<Vec<McpServerStatus>> {
        let answer = self.control(Request::McpStatus.to_value()).await?;
        Ok(control::parse::<McpStatusAnswer>("mcp_status", answer)?.mcp_servers)
    }

    /// Reconnects an MCP server (one that failed, or to pick up a change).
    ///
    /// # Errors
    ///
    /// [`ControlRequest`](ErrorKind::ControlRequest) when the CLI cannot (no such
    /// server, the connection fails); other control-request errors.
    pub async fn reconnect_mcp_server(&self, name: &str) -> Result<()> {
        self.control(Request::McpReconnect { server_name: name }.to_value())
            .await
            .map(drop)
    }

    /// Turns an MCP server off (its tools go away) or on again.
    ///
    /// # Errors
    ///
    /// [`ControlRequest`](ErrorKind::ControlRequest) for a server the CLI does not
    /// have; other control-request errors.
    pub async fn toggle_mcp_server(&self, name: &str, enabled: bool) -> Result<()> {
        self.control(
            Request::McpToggle {
                server_name: name,
                enabled,
            }
            .to_value(),
        )
        .await
        .map(drop)
    }

    /// Replaces the MCP servers added by earlier calls with `servers`: servers left out
    /// are disconnected, new ones connected. Servers from the options and from settings
    /// files stay. Only external servers (stdio, SSE, HTTP) can be set this way; an
    /// in-process [`SdkMcpServer`](crate::SdkMcpServer) is given at connect.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) for an in-process server;
    /// control-request errors otherwise. A server that fails to connect is not an
    /// error: it is listed in [`McpSetServersResult::errors`].
    pub async fn set_mcp_servers<I, S>(&self, servers: I) -> Result<McpSetServersResult>
    where
        I: IntoIterator<Item = (S, McpServerConfig)>,
        S: Into<String>,
    {
        let mut map = serde_json::Map::new();
        for (name, config) in servers {
            let name = name.into();
            if matches!(config, McpServerConfig::Sdk(_)) {
                return Err(Error::invalid_options(format!(
                    "set_mcp_servers takes external servers only; {name:?} is in-process: give it \
                     in the options at connect"
                )));
            }
            let value = serde_json::to_value(&config).map_err(|e| {
                Error::invalid_options(format!("MCP server {name:?} cannot be encoded"))
                    .with_source(e)
            })?;
            map.insert(name, value);
        }
        let answer = self
            .control(Request::McpSetServers { servers: map }.to_value())
            .await?;
        control::parse("mcp_set_servers", answer)
    }

    /// How the context window is used, by category (what `/context` shows).
    ///
    /// # Errors
    ///
    /// Control-request errors; [`Protocol`](ErrorKind::Protocol) for an answer of
    /// another shape.
    pub async fn context_usage(&self) -> Result<ContextUsage> {
        let answer = self.control(Request::GetContextUsage.to_value()).await?;
        control::parse("get_context_usage", answer)
    }

    /// Puts the files the CLI's tools changed since the user message
    /// `user_message_id` back the way they were before it. Needs
    /// [`enable_file_checkpointing`](crate::ClaudeCodeOptionsBuilder::enable_file_checkpointing);
    /// the ids are the [`uuid`](crate::UserMessage::uuid)s of the user messages the
    /// client yields (with checkpointing on, the CLI echoes each prompt back with its
    /// id). Only changes made by the CLI's file tools (`Write`, `Edit`, ...) are
    /// tracked, not those of shell commands.
    ///
    /// # Errors
    ///
    /// [`ControlRequest`](ErrorKind::ControlRequest) when the CLI cannot rewind (no
    /// checkpoint for that message, checkpointing off): the error has the CLI's
    /// reason; other control-request errors.
    pub async fn rewind_files(&self, user_message_id: &str) -> Result<RewindFilesResult> {
        let result = self.rewind(user_message_id, false).await?;
        if !result.can_rewind {
            return Err(Error::new(
                ErrorKind::ControlRequest,
                format!(
                    "the CLI could not rewind files to message {user_message_id}: {}",
                    result.error.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
        Ok(result)
    }

    /// What [`rewind_files`](ClaudeClient::rewind_files) would do, changing nothing:
    /// whether it can, and which files would change by how many lines.
    ///
    /// # Errors
    ///
    /// Control-request errors. That the files cannot be rewound is not an error here:
    /// it is [`RewindFilesResult::can_rewind`] `false` with the reason.
    pub async fn rewind_files_dry_run(&self, user_message_id: &str) -> Result<RewindFilesResult> {
        self.rewind(user_message_id, true).await
    }

    async fn rewind(&self, user_message_id: &str, dry_run: bool) -> Result<RewindFilesResult> {
        let answer = self
            .control(
                Request::RewindFiles {
                    user_message_id,
                    dry_run,
                }
                .to_value(),
            )
            .await?;
        control::parse("rewind_files", answer)
    }

    /// Limits the model's thinking for the next turns: `Some(tokens)` sets the
    /// budget, `None` goes back to the session's own. `display`, when given, changes
    /// how thinking is shown from now on.
    ///
    /// # Errors
    ///
    /// Control-request errors (a display the API refuses, such as `Highlights` outside
    /// sessions Anthropic hosts; the budget still applies then).
    pub async fn set_max_thinking_tokens(
        &self,
        tokens: Option<u32>,
        display: Option<ThinkingDisplay>,
    ) -> Result<()> {
        let request = Request::SetMaxThinkingTokens {
            max_thinking_tokens: tokens,
            thinking_display: display,
        };
        self.control(request.to_value()).await.map(drop)
    }

    /// Stops a background task (a `Bash` command or subagent running in the
    /// background), by the task id of its `task_started` / `task_notification` system
    /// messages. The CLI then reports the task `stopped`. An id the CLI does not know
    /// is taken without complaint (measured on 2.1.332).
    ///
    /// # Errors
    ///
    /// Control-request errors.
    pub async fn stop_task(&self, task_id: &str) -> Result<()> {
        self.control(Request::StopTask { task_id }.to_value())
            .await
            .map(drop)
    }

    /// Moves running foreground tasks (commands, subagents) to the background, as
    /// Ctrl+B does in the terminal: the one started by the tool use `tool_use_id`, or
    /// all. Returns whether one was moved.
    ///
    /// # Errors
    ///
    /// Control-request errors (background tasks disabled for the session).
    pub async fn background_tasks(&self, tool_use_id: Option<&str>) -> Result<bool> {
        let answer = self
            .control(Request::BackgroundTasks { tool_use_id }.to_value())
            .await?;
        Ok(control::parse::<BackgroundTasksAnswer>("background_tasks", answer)?.backgrounded)
    }

    /// Merges `settings` (a settings object, as in `--settings`) into the session's
    /// settings for the rest of it; a key set to `null` is cleared.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when `settings` is not an object;
    /// control-request errors (a value the CLI refuses; then nothing of the call
    /// applies).
    pub async fn apply_flag_settings(&self, settings: Value) -> Result<()> {
        if !settings.is_object() {
            return Err(Error::invalid_options("settings must be a JSON object"));
        }
        self.control(
            Request::ApplyFlagSettings {
                settings: &settings,
            }
            .to_value(),
        )
        .await
        .map(drop)
    }

    /// The models the CLI can use now, asked live (the list at start-up is in
    /// [`server_info`](ClaudeClient::server_info)).
    ///
    /// # Errors
    ///
    /// [`UnsupportedCli`](ErrorKind::UnsupportedCli) before CLI 2.1.331;
    /// control-request errors.
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>> {
        let answer = self.control(Request::ListModels.to_value()).await?;
        Ok(control::parse::<ListModelsAnswer>("list_models", answer)?.models)
    }

    /// Reloads plugins from disk and returns the commands, agents, plugins and MCP
    /// servers now in effect.
    ///
    /// # Errors
    ///
    /// Control-request errors.
    pub async fn reload_plugins(&self) -> Result<ReloadedPlugins> {
        let answer = self.control(Request::ReloadPlugins.to_value()).await?;
        control::parse("reload_plugins", answer)
    }

    /// Reloads skills from disk and returns them.
    ///
    /// # Errors
    ///
    /// Control-request errors.
    pub async fn reload_skills(&self) -> Result<Vec<SlashCommand>> {
        let answer = self.control(Request::ReloadSkills.to_value()).await?;
        Ok(control::parse::<ReloadSkillsAnswer>("reload_skills", answer)?.skills)
    }

    /// The slash commands and skills the CLI offered at start-up.
    pub fn supported_commands(&self) -> &[SlashCommand] {
        &self.server_info.commands
    }

    /// The agents the CLI offered at start-up.
    pub fn supported_agents(&self) -> &[AgentInfo] {
        &self.server_info.agents
    }

    /// The account the CLI runs under, as it said at start-up.
    pub fn account_info(&self) -> Option<&AccountInfo> {
        self.server_info.account.as_ref()
    }

    /// Sends any control request (`{"subtype": ..., ...}`) and returns the CLI's answer:
    /// an escape hatch for control subtypes this SDK does not wrap yet.
    ///
    /// # Errors
    ///
    /// [`UnsupportedCli`](ErrorKind::UnsupportedCli) when the CLI does not know the
    /// subtype (it answers "Unsupported control request subtype"): the error names the
    /// subtype and, for a subtype newer CLIs are known to answer (`list_models`, ...), the
    /// version needed; [`ControlRequest`](ErrorKind::ControlRequest) when the CLI refuses
    /// the request for another reason; [`Timeout`](ErrorKind::Timeout) after 30 s
    /// without answer.
    pub async fn control_request(&self, request: Value) -> Result<Value> {
        if request.get("subtype").and_then(Value::as_str).is_none() {
            return Err(Error::invalid_options(
                "a control request needs a \"subtype\"",
            ));
        }
        self.control(request).await
    }

    /// What the CLI said about itself at start-up.
    pub fn server_info(&self) -> &ServerInfo {
        &self.server_info
    }

    /// The conversation's session id, once known (after the first turn starts).
    pub fn session_id(&self) -> Option<String> {
        self.link.session_id()
    }

    /// The permission mode in effect, as last set.
    pub fn permission_mode(&self) -> Option<PermissionMode> {
        self.lock_state().mode
    }

    /// Cost and usage so far.
    pub fn totals(&self) -> SessionTotals {
        self.lock_state().totals.clone()
    }

    /// The CLI's process id (its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.link.pid()
    }

    /// Ends the CLI gracefully: closes its input, waits for it to exit (5 s), then
    /// `SIGTERM` and `SIGKILL` to its process group.
    ///
    /// # Errors
    ///
    /// None today; the signature leaves room for reporting a failed shutdown.
    pub async fn close(self) -> Result<()> {
        // Nobody reads the rest: let the reader drain the CLI's output freely.
        drop(self.events.try_lock().map(|mut rx| rx.close()));
        self.link.close().await;
        Ok(())
    }

    /// Whether the client can still run turns: its CLI has not exited and no fatal
    /// error ended it.
    pub fn is_alive(&self) -> bool {
        self.lock_state().dead.is_none() && !self.link.has_exited()
    }

    async fn control(&self, request: Value) -> Result<Value> {
        self.check_alive()?;
        let subtype = request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        self.link
            .control(request)
            .await
            .map_err(|err| self.unsupported_request(err, &subtype))
    }

    /// `err`, or an [`UnsupportedCli`](ErrorKind::UnsupportedCli) error naming `subtype`
    /// when the CLI answered that it does not know the request.
    fn unsupported_request(&self, err: Error, subtype: &str) -> Error {
        unsupported_request(err, subtype, self.server_info.cli_version)
    }

    fn record(&self, result: &ResultMessage) {
        let mut state = self.lock_state();
        let totals = &mut state.totals;
        totals.turns += 1;
        if let Some(total) = result.total_cost_usd {
            totals.total_cost_usd = total;
        }
        totals.last_turn_cost_usd = result.turn_cost_usd.unwrap_or(0.0);
        if let Some(usage) = &result.usage {
            totals.input_tokens += usage.input_tokens;
            totals.output_tokens += usage.output_tokens;
        }
    }

    fn check_alive(&self) -> Result<()> {
        match &self.lock_state().dead {
            Some(why) => Err(Error::new(
                ErrorKind::Connection,
                format!("the client's CLI is gone: {why}"),
            )),
            None => Ok(()),
        }
    }

    fn mark_dead(&self, why: String) {
        self.lock_state().dead.get_or_insert(why);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        lock(&self.state)
    }
}

/// What a CLI answers a control request of a subtype it does not know (2.1.197 and
/// 2.1.332 alike; newer ones add `"error_code": "unsupported_request"`).
const UNSUPPORTED_REQUEST: &str = "Unsupported control request subtype";

/// `err`, or, when it is the CLI's answer to a control request it does not know, an
/// [`UnsupportedCli`](ErrorKind::UnsupportedCli) error that names the subtype and the
/// version needed when known.
fn unsupported_request(err: Error, subtype: &str, version: CliVersion) -> Error {
    if err.kind() != ErrorKind::ControlRequest || !err.to_string().contains(UNSUPPORTED_REQUEST) {
        return err;
    }
    let needed = match since(CONTROL_REQUESTS_SINCE, subtype) {
        Some(needed) => format!("it needs Claude Code CLI {needed} or newer"),
        None => "it needs a CLI that knows it (or the subtype is misspelled)".to_owned(),
    };
    Error::unsupported_cli(format!(
        "Claude Code CLI {version} does not support the control request {subtype:?}; {needed}"
    ))
    .with_source(err)
}

/// The mode a `set_permission_mode` answer says is in effect. CLIs answer with
/// `{"mode": ...}`, the mode now in effect, which is not always the one asked for: a
/// request that waits (`auto` while a model switch is pending) and is overtaken by a
/// later one is answered with the later one's mode (measured on 2.1.331 and 2.1.332).
/// An answer without a mode, or with one this SDK does not know, leaves the mode asked
/// for.
fn effective_mode(asked: PermissionMode, has_callback: bool, answer: &Value) -> PermissionMode {
    let Some(reported) = answer.get("mode").and_then(Value::as_str) else {
        return asked;
    };
    // What the SDK sent for `asked`: the seed modes map to the CLI's own.
    let sent = match asked {
        PermissionMode::Strict => "default",
        PermissionMode::ReadOnly if has_callback => "default",
        other => other.cli_mode(),
    };
    if reported == sent {
        asked
    } else {
        reported.parse().unwrap_or(asked)
    }
}

impl Drop for ClaudeClient {
    fn drop(&mut self) {
        // The process dies with the link; a pool's slot comes back once it has exited.
        if let Some(lease) = self.lease.take() {
            lease.release_after_exit(self.link.process().cloned());
        }
    }
}

impl std::fmt::Debug for ClaudeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeClient")
            .field("pid", &self.pid())
            .field("session_id", &self.session_id())
            .field("cli_version", &self.server_info.cli_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame captured from CLI 2.1.332 (`tests/fixtures/cli-2.1.332/controls.jsonl`):
    /// `set_permission_mode` to `auto` sent while a `set_model` was pending, overtaken by
    /// a `set_permission_mode` to `plan`, is answered with `plan`.
    const OVERTAKEN: &str = r#"{"type": "control_response", "response": {"subtype": "success", "request_id": "r1", "response": {"mode": "plan"}}}"#;

    fn payload(frame: &str) -> Value {
        let frame: Value = serde_json::from_str(frame).unwrap();
        frame["response"]["response"].clone()
    }

    #[test]
    fn the_effective_mode_is_the_one_the_cli_names() {
        let answer = payload(OVERTAKEN);
        assert_eq!(
            effective_mode(PermissionMode::Auto, false, &answer),
            PermissionMode::Plan
        );
        // The seed modes map to the CLI's: their own answer keeps them.
        let default = json!({"mode": "default"});
        assert_eq!(
            effective_mode(PermissionMode::Strict, false, &default),
            PermissionMode::Strict
        );
        assert_eq!(
            effective_mode(PermissionMode::AskForEdits, false, &default),
            PermissionMode::AskForEdits
        );
        let dont_ask = json!({"mode": "dontAsk"});
        assert_eq!(
            effective_mode(PermissionMode::ReadOnly, false, &dont_ask),
            PermissionMode::ReadOnly
        );
        // Strict kept in plan by the CLI: the CLI's word wins.
        assert_eq!(
            effective_mode(PermissionMode::Strict, false, &answer),
            PermissionMode::Plan
        );
        // No payload (other hosts), or a mode this SDK does not know: the one asked for.
        assert_eq!(
            effective_mode(PermissionMode::AcceptEdits, false, &Value::Null),
            PermissionMode::AcceptEdits
        );
        assert_eq!(
            effective_mode(
                PermissionMode::Plan,
                false,
                &json!({"mode": "someFutureMode"})
            ),
            PermissionMode::Plan
        );
    }

    #[test]
    fn an_unknown_subtype_answer_is_unsupported_cli() {
        let version = CliVersion::new(2, 1, 197);
        let refused = |text: &str| {
            Error::new(
                ErrorKind::ControlRequest,
                format!("the CLI refused the list_models request: {text}"),
            )
        };
        let err = unsupported_request(
            refused("Unsupported control request subtype: list_models"),
            "list_models",
            version,
        );
        assert!(err.is_unsupported_cli(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("\"list_models\"") && text.contains("2.1.331"),
            "{text}"
        );
        assert!(text.contains("2.1.197"), "{text}");
        let unknown = unsupported_request(
            refused("Unsupported control request subtype: no_such"),
            "no_such",
            version,
        );
        assert!(unknown.is_unsupported_cli());
        assert!(unknown.to_string().contains("\"no_such\""), "{unknown}");
        // Any other refusal stays what it is.
        let other = unsupported_request(
            refused("Cannot set permission mode to auto: auto mode disabled by settings"),
            "set_permission_mode",
            version,
        );
        assert_eq!(other.kind(), ErrorKind::ControlRequest);
        let timeout = unsupported_request(Error::timeout("slow"), "x", version);
        assert!(timeout.is_timeout());
    }
}
