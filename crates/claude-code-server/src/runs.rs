//! Runs on the fleet: what a request becomes (a [`RunRequest`] stored with the run, so
//! any replica can execute it), how a replica executes it ([`execute`]), and how a
//! client reads it (the event log: [`collect`] for JSON, [`sse`] for a stream).
//!
//! A run's events are `message` (a web message), `permission_request` (a
//! [`PermissionRequest`]), then one final `done` (a [`ResultSummary`]) or `error`
//! (`{"error": {...}, "status", "retry_after"?}`). Their sequence numbers are the
//! SSE ids: a client reconnects anywhere with `Last-Event-ID`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use claude_code_sdk::options::SIDE_EFFECT_TOOLS;
use claude_code_sdk::{ClaudeCodeOptions, Message, PermissionDecision, PermissionMode};
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{PermissionRequest, QueryResponse, ResultSummary};
use crate::error::{ApiError, web_message};
use crate::fleet::db::{EventRow, RunEnd, now_ms, state};
use crate::fleet::{EventWriter, Fleet, RunCtx, Stop, cancelled_error, interrupted_error};

/// What a run asks, resolved against the server's limits when it was submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRequest {
    pub(crate) prompt: String,
    pub(crate) cwd: PathBuf,
    pub(crate) mode: PermissionMode,
    pub(crate) max_turns: u32,
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) append_system_prompt: Option<String>,
    #[serde(default)]
    pub(crate) json_schema: Option<Value>,
    #[serde(default)]
    pub(crate) include_partial_messages: bool,
    #[serde(default)]
    pub(crate) approvals: bool,
    /// The CLI conversation to continue (a `resume` request; a session's runs take
    /// theirs from the session when they start).
    #[serde(default)]
    pub(crate) resume: Option<String>,
    /// The conversation's total cost before this run.
    #[serde(default)]
    pub(crate) previous_total: Option<f64>,
    /// The longest line the run may produce (a JSON request's answer cap).
    #[serde(default)]
    pub(crate) max_line_bytes: Option<usize>,
    /// The id of the HTTP request that submitted the run: the replica that executes it
    /// logs under it too, so one id follows a run across replicas.
    #[serde(default)]
    pub(crate) request_id: Option<String>,
}

/// Whether a final event ends a run's log.
pub(crate) fn is_final_event(kind: &str) -> bool {
    matches!(kind, "done" | "error")
}

/// Executes a claimed run on this replica's pool: its messages go to the log, fenced by
/// its lease; a stop (a cancellation, the lease lost, a shutdown) drops the run, which
/// kills its CLI.
pub(crate) async fn execute(state: AppState, ctx: RunCtx) {
    use tracing::Instrument;
    let request_id = ctx.row.request["request_id"].as_str().map(str::to_owned);
    let span = tracing::info_span!(
        "run",
        run = %ctx.row.id,
        request_id = request_id.as_deref().unwrap_or("-"),
    );
    crate::request_id::within(
        request_id.as_deref(),
        execute_run(state, ctx).instrument(span),
    )
    .await;
}

async fn execute_run(state: AppState, ctx: RunCtx) {
    let inner = &state.inner;
    let fleet = ctx.fleet().clone();
    let row = ctx.row.clone();
    let writer = ctx.writer().clone();
    let request: RunRequest = match serde_json::from_value(row.request.clone()) {
        Ok(request) => request,
        Err(err) => {
            tracing::error!(%err, run = row.id, "a run's request cannot be read");
            let data = json!({"error": {"kind": "invalid_request", "message": "the run's request cannot be read", "transient": false}, "status": 500});
            ctx.finish(failed(&data)).await;
            return;
        }
    };
    // Marked running, and its session read, side by side.
    let read_session = async {
        match &row.session {
            Some(id) => fleet.db().session(id, Some(&row.tenant)).await.map(Some),
            None => Ok(None),
        }
    };
    let (started, read) = tokio::join!(
        fleet.db().start_run(&row.id, fleet.replica(), row.epoch),
        read_session
    );
    if !matches!(started, Ok(true)) {
        return;
    }
    // With the span's run id and request id: one request id follows a run to
    // whichever replica runs it.
    tracing::info!(
        tenant = %crate::metrics::tenant_label(&row.tenant),
        replica = fleet.replica(),
        "running a claimed run"
    );
    // A session's run continues the session's conversation where its last run left it.
    let mut request = request;
    let mut session = None;
    if row.session.is_some() {
        match read {
            Ok(Some(Some(s))) => {
                if let Some(why) = inner
                    .workspace_for(std::path::Path::new(&s.cwd))
                    .refuses(&s)
                {
                    let data = json!({"error": {"kind": "workspace_moved", "message": why, "transient": false}, "status": 409});
                    ctx.finish(failed(&data)).await;
                    return;
                }
                if let Some(cli) = &s.cli_session
                    && s.home.as_deref() != Some(fleet.replica())
                {
                    // The session's last turn ran on another replica: a hot process
                    // this one kept from an earlier turn has an outdated conversation.
                    // The turn resumes from the store instead.
                    inner.pool.end_conversation(cli);
                }
                request.resume = s.cli_session.clone();
                request.previous_total = Some(s.total_cost);
                session = Some(s);
            }
            _ => {
                let data = json!({"error": {"kind": "not_found", "message": "the session is gone", "transient": false}, "status": 404});
                ctx.finish(failed(&data)).await;
                return;
            }
        }
    }
    let options = match options_for_run(&state, &request, &writer, &row.tenant) {
        Ok(options) => options,
        Err(err) => {
            ctx.finish(failed(&ApiError::event_data(&err))).await;
            return;
        }
    };
    let started = if session.is_some() || request.resume.is_some() {
        inner.pool.query_turn(request.prompt.clone(), options).await
    } else {
        inner.pool.query(request.prompt.clone(), options).await
    };
    let mut run = match started {
        Ok(run) => Box::pin(run.peekable()),
        Err(err) => {
            ctx.finish(failed(&ApiError::event_data(&err))).await;
            return;
        }
    };
    // The run's last message when it is a result whose stream had already ended: it is
    // written with the run's end, in one transaction instead of two (the loop ends
    // with it, so no stop or lost lease comes between).
    let mut last: Option<Value> = None;
    let mut messages: Vec<Message> = Vec::new();
    let mut tools: Vec<String> = Vec::new();
    enum End {
        Done,
        Failed(claude_code_sdk::Error),
        Stopped(Option<Stop>),
    }
    let end = loop {
        tokio::select! {
            biased;
            () = writer.stop_token().cancelled() => break End::Stopped(writer.stop_reason()),
            item = run.next() => match item {
                Some(Ok(message)) => {
                    tools.extend(message.tools_used().iter().map(|t| (*t).to_owned()));
                    let data = json!(web_message(&message));
                    // A session turn's stream ends with its result: already over when
                    // the result comes, so nothing is held back.
                    let over = message.is_result()
                        && matches!(run.as_mut().peek().now_or_never(), Some(None));
                    if message.is_result() {
                        messages.push(message);
                    }
                    if over {
                        // Done: a stop that comes now does not undo a finished turn.
                        last = Some(data);
                        break End::Done;
                    }
                    if !writer.event("message", &data).await {
                        break End::Stopped(writer.stop_reason());
                    }
                }
                Some(Err(err)) => break End::Failed(err),
                None => break End::Done,
            },
        }
    };
    // Ends the CLI (or hands a hot process back to the pool).
    drop(run);
    let side_effects = tools
        .iter()
        .any(|t| SIDE_EFFECT_TOOLS.contains(&t.as_str()) || t.starts_with("mcp__"));
    let result = messages.iter().rev().find_map(Message::as_result).cloned();
    let conversation = result
        .as_ref()
        .filter(|r| !r.session_id.is_empty())
        .map(|r| (r.session_id.as_str(), r.turn_cost_usd.unwrap_or(0.0)));
    let summary = ResultSummary::resumed(&messages, request.previous_total);
    let (final_state, kind, data) = match end {
        End::Done => (state::SUCCEEDED, "done", json!(summary)),
        End::Failed(err) => (state::FAILED, "error", ApiError::event_data(&err)),
        End::Stopped(Some(Stop::Cancelled(reason))) => {
            (state::CANCELLED, "error", cancelled_error(&reason))
        }
        End::Stopped(Some(Stop::WriteFailed { storage_full })) => (
            state::FAILED,
            "error",
            ApiError::write_failed(storage_full).to_event_data(),
        ),
        End::Stopped(Some(Stop::Shutdown)) => (
            state::INTERRUPTED,
            "error",
            interrupted_error("the server shut down"),
        ),
        // The lease is gone: another replica ended the run; nothing more may be written
        // about it. A conversation it produced still belongs to its tenant.
        End::Stopped(_) => {
            tracing::warn!(run = row.id, "lost the lease of a run; its CLI was stopped");
            if let Some((id, cost)) = conversation
                && let Err(err) = fleet.db().record_conversation(id, &row.tenant, cost).await
            {
                tracing::warn!(%err, "could not record a conversation's owner");
            }
            return;
        }
    };
    let cost = summary.as_ref().and_then(|s| s.cost_usd).unwrap_or(0.0);
    let session = session.as_ref();
    let ended_here = ctx
        .finish(RunEnd {
            state: final_state,
            last_message: last.as_ref(),
            event: (kind, &data),
            side_effects,
            conversation,
            session: session.map(|s| s.id.as_str()),
            audit: Some((cost, &tools)),
            // A session whose first turn was cancelled never existed for its client.
            forget_session: session
                .filter(|s| final_state == state::CANCELLED && s.turns == 0)
                .map(|s| s.id.as_str()),
        })
        .await;
    if !ended_here {
        // Someone else ended the run first (a shutdown ends its runs at once): what the
        // run leaves behind is still its tenant's, and its audit row gets its cost
        // and tools (once: a row already completed is left as it is).
        if let Err(err) = fleet
            .db()
            .record_leftovers(&row.id, &row.tenant, conversation, cost, &tools)
            .await
        {
            tracing::warn!(%err, "could not record what an ended run left behind");
        }
    }
}

/// The end of a run that failed before it ran: its audit row says so too.
fn failed(data: &Value) -> RunEnd<'_> {
    RunEnd {
        audit: Some((0.0, &[])),
        ..RunEnd::new(state::FAILED, "error", data)
    }
}

/// The SDK options of a run.
fn options_for_run(
    state: &AppState,
    request: &RunRequest,
    writer: &EventWriter,
    tenant: &str,
) -> claude_code_sdk::Result<ClaudeCodeOptions> {
    let config = &state.inner.config;
    let mut builder = config
        .base_options
        .to_builder()
        .permission_mode(request.mode)
        .max_turns(request.max_turns)
        .cwd(&request.cwd)
        .timeout(config.request_timeout)
        .include_partial_messages(request.include_partial_messages);
    if let Some(model) = &request.model {
        builder = builder.model(model);
    }
    if let Some(extra) = &request.append_system_prompt {
        builder = builder.append_system_prompt(extra);
    }
    if let Some(schema) = &request.json_schema {
        builder = builder.json_schema(schema.clone());
    }
    if let Some(resume) = &request.resume {
        builder = builder.resume(resume);
    }
    if let Some(limit) = request.max_line_bytes {
        builder = builder.max_line_bytes(limit);
    }
    // A tenant's CLIs keep their transcripts, settings and memory in its own
    // configuration directory.
    if let Some(dir) = state
        .inner
        .tenant(tenant)
        .and_then(|t| t.config_dir.as_ref())
    {
        builder = builder.env("CLAUDE_CONFIG_DIR", dir.to_string_lossy());
    }
    let root = state.inner.root_for(tenant, &request.cwd);
    let cwd = request.cwd.clone();
    let deny = config.deny_outside_project;
    builder = with_confinement(builder, move |input| {
        confine_tool_use(&root, &cwd, input, deny)
    });
    if request.approvals {
        let ask = Asker {
            writer: writer.clone(),
            tenant: tenant.into(),
            cwd: request.cwd.clone(),
            root: state.inner.root_for(tenant, &request.cwd),
            timeout: config.approval_timeout,
            deny_outside_project: config.deny_outside_project,
        };
        let ask = Arc::new(ask);
        builder = builder.can_use_tool(move |tool, input, context| {
            let ask = Arc::clone(&ask);
            async move { ask.ask(tool, input, context).await }
        });
    }
    builder.build()
}

/// The tools whose paths the server checks ([`crate::confine::path_fields`]).
const CONFINED_TOOLS: &str = "Read|Write|Edit|MultiEdit|NotebookEdit|Grep|Glob|LSP";

/// Adds the `PreToolUse` hook that keeps the path tools in the project, with `verdict`
/// as its judge. Every run has it (and so the spares, whose hook each run replaces):
/// the CLI asks the permission callback only about some tool uses, and in some modes
/// (`plan`) reads anywhere without asking; a hook sees every use, whatever the mode.
pub(crate) fn with_confinement(
    builder: claude_code_sdk::ClaudeCodeOptionsBuilder,
    verdict: impl Fn(&claude_code_sdk::hooks::HookInput) -> claude_code_sdk::hooks::HookOutput
    + Send
    + Sync
    + 'static,
) -> claude_code_sdk::ClaudeCodeOptionsBuilder {
    builder.hook(
        claude_code_sdk::hooks::HookEvent::PreToolUse,
        // Fail closed: a failed call of this hook blocks the tool use.
        claude_code_sdk::hooks::HookMatcher::new(CONFINED_TOOLS).block_on_failure(),
        move |input, _tool_use_id, _context| {
            let output = verdict(&input);
            async move { Ok(output) }
        },
    )
}

/// The confinement hook's verdict: a tool use about a path outside the project root
/// (or a `Glob` pattern that climbs out of it) is denied with `deny_outside_project`,
/// else put to the permission callback (the client, with approvals; a denial without);
/// so is a write that would configure later runs ([`crate::confine::configures_the_cli`]);
/// any other goes on as the mode says.
fn confine_tool_use(
    root: &std::path::Path,
    cwd: &std::path::Path,
    input: &claude_code_sdk::hooks::HookInput,
    deny_outside_project: bool,
) -> claude_code_sdk::hooks::HookOutput {
    use claude_code_sdk::hooks::HookOutput;
    let (Some(tool), Some(tool_input)) = (input.tool_name(), input.tool_input()) else {
        return HookOutput::default();
    };
    let outside = crate::confine::outside_paths(root, cwd, tool, tool_input, None);
    let climbing = tool == "Glob"
        && tool_input
            .get("pattern")
            .and_then(Value::as_str)
            .is_some_and(|p| {
                p.starts_with('/')
                    || p.starts_with('~')
                    || std::path::Path::new(p)
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
            });
    if outside.is_empty() && !climbing {
        if crate::confine::configures_the_cli(cwd, tool, tool_input).is_empty() {
            HookOutput::default()
        } else {
            // Inside the project, but it would configure later runs: a person decides
            // (the client, with approvals; a denial without), whatever the mode.
            HookOutput::ask()
        }
    } else if deny_outside_project {
        HookOutput::deny(format!(
            "{tool} was denied: this server does not allow access outside the project"
        ))
    } else {
        HookOutput::ask()
    }
}

/// Asks a run's client (through the event log) to approve a tool use, and waits for the
/// answer, which may come through any replica. No answer in time is a denial.
struct Asker {
    writer: EventWriter,
    tenant: String,
    cwd: PathBuf,
    root: PathBuf,
    timeout: Duration,
    deny_outside_project: bool,
}

impl Asker {
    async fn ask(
        &self,
        tool: String,
        input: Value,
        context: claude_code_sdk::ToolPermissionContext,
    ) -> PermissionDecision {
        if self.deny_outside_project {
            let outside = crate::confine::outside_paths(
                &self.root,
                &self.cwd,
                &tool,
                &input,
                context.blocked_path.as_deref(),
            );
            if !outside.is_empty() {
                return PermissionDecision::deny(format!(
                    "{tool} was denied: this server does not allow access outside the project"
                ));
            }
        }
        let fleet = self.writer.fleet();
        let id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_ms() + i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let stored = json!({"tool_name": tool, "input": input, "cwd": self.cwd});
        if let Err(err) = fleet
            .db()
            .insert_approval(&id, self.writer.run(), &self.tenant, &stored, expires_at)
            .await
        {
            tracing::warn!(%err, "could not record an approval");
            return PermissionDecision::deny("the server could not record the approval request");
        }
        let request = PermissionRequest {
            approval_id: id.clone(),
            tool_name: tool.clone(),
            input,
            blocked_path: context.blocked_path,
            expires_in_secs: self.timeout.as_secs(),
        };
        if !self
            .writer
            .event("permission_request", &json!(request))
            .await
        {
            return PermissionDecision::deny("the run is stopping");
        }
        match fleet
            .await_approval(&id, expires_at, self.writer.stop_token())
            .await
        {
            Ok(Some((true, answer))) => PermissionDecision::Allow {
                updated_input: answer
                    .get("updated_input")
                    .filter(|v| !v.is_null())
                    .cloned(),
                updated_permissions: Vec::new(),
            },
            Ok(Some((false, answer))) => PermissionDecision::deny(
                answer["message"]
                    .as_str()
                    .map_or_else(|| format!("the user denied {tool}"), str::to_owned),
            ),
            Ok(None) => PermissionDecision::deny(format!(
                "nobody approved {tool} within {} s",
                self.timeout.as_secs()
            )),
            Err(err) => {
                tracing::warn!(%err, "could not wait for an approval");
                PermissionDecision::deny("the server could not wait for the approval")
            }
        }
    }
}

/// Cancels a run when dropped, unless disarmed: a request whose client goes away.
pub(crate) struct CancelOnDrop {
    fleet: Fleet,
    run: String,
    armed: bool,
}

impl CancelOnDrop {
    pub(crate) fn new(fleet: &Fleet, run: &str) -> Self {
        CancelOnDrop {
            fleet: fleet.clone(),
            run: run.to_owned(),
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let fleet = self.fleet.clone();
        let run = std::mem::take(&mut self.run);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = fleet.cancel(&run, None, "the client went away").await;
            });
        }
    }
}

/// Reads a run's log to its end: the answer of a JSON request. Over `limit` bytes the
/// run is cancelled and the answer is `502 response_too_large`.
pub(crate) async fn collect(
    state: &AppState,
    run: &str,
    session: Option<String>,
    limit: usize,
) -> Result<QueryResponse, ApiError> {
    let fleet = &state.inner.fleet;
    let _reading = state.inner.reading();
    let mut after = 0;
    let mut messages: Vec<Value> = Vec::new();
    let mut collected = 0usize;
    let mut feed = fleet.feed(run);
    loop {
        let events = tokio::select! {
            events = feed.next(after, Duration::from_secs(1)) => events?,
            () = state.inner.shutdown.cancelled() => {
                return Err(ApiError::unavailable("shutting_down", "the server is shutting down", 5));
            }
        };
        for event in events {
            after = event.seq;
            state.inner.metrics.delivered(event.at);
            match event.kind.as_str() {
                "message" => {
                    collected = collected.saturating_add(event.data.to_string().len());
                    if collected > limit {
                        let _ = fleet
                            .cancel(run, None, "the answer exceeded the server's limit")
                            .await;
                        return Err(ApiError::response_too_large(limit));
                    }
                    messages.push(event.data);
                }
                "done" => {
                    let result: Option<ResultSummary> = serde_json::from_value(event.data).ok();
                    return Ok(QueryResponse::from_parts(session, messages, result));
                }
                "error" => {
                    if event.data["error"]["kind"] == "protocol"
                        || event.data["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("max_line_bytes"))
                    {
                        return Err(ApiError::response_too_large(limit));
                    }
                    return Err(ApiError::from_event(&event.data, messages));
                }
                _ => {}
            }
        }
    }
}

/// A run's log as server-sent events from `after` on: `id` is the event's sequence
/// number (resume with `Last-Event-ID`), `event` its kind. Ends after the final
/// event (at once, empty, when resumed after it). While it is read, the run knows a client is there (a run nobody reads for the
/// disconnect grace is cancelled).
pub(crate) fn sse(
    state: AppState,
    run: String,
    after: i64,
    first: Option<Event>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Reading {
        state: AppState,
        run: String,
        feed: crate::fleet::EventFeed,
        after: i64,
        pending: std::collections::VecDeque<EventRow>,
        first: Option<Event>,
        ended: bool,
        touched: i64,
        _reading: crate::Reading,
    }
    let reading = Reading {
        _reading: state.inner.reading(),
        feed: state.inner.fleet.feed(&run),
        state,
        run,
        after,
        pending: Default::default(),
        first,
        ended: false,
        touched: 0,
    };
    let events = futures::stream::unfold(reading, |mut r| async move {
        if let Some(first) = r.first.take() {
            return Some((Ok(first), r));
        }
        loop {
            if r.ended {
                return None;
            }
            if let Some(event) = r.pending.pop_front() {
                r.after = event.seq;
                r.state.inner.metrics.delivered(event.at);
                r.ended = is_final_event(&event.kind);
                let sse = Event::default()
                    .id(event.seq.to_string())
                    .event(&event.kind)
                    .json_data(&event.data)
                    .unwrap_or_else(|_| Event::default().event(&event.kind));
                return Some((Ok(sse), r));
            }
            let fleet = r.state.inner.fleet.clone();
            // The run is cancelled when nobody touched it for the disconnect grace: touch
            // it several times within one, so a reader that is there never looks gone.
            let every = reader_touch_interval(r.state.inner.config.disconnect_grace);
            let every_ms = i64::try_from(every.as_millis()).unwrap_or(1000);
            if now_ms() - r.touched >= every_ms {
                r.touched = now_ms();
                let _ = fleet.db().touch_reader(&r.run).await;
            }
            let next = tokio::select! {
                next = r.feed.next(r.after, every) => next,
                () = r.state.inner.shutdown.cancelled() => {
                    r.ended = true;
                    let event = Event::default().event("error").json_data(json!({"error": {
                        "kind": "shutting_down",
                        "message": "this server is shutting down; reconnect (Last-Event-ID) to another",
                        "transient": true,
                        "retry_after_secs": 1,
                    }})).unwrap_or_default();
                    return Some((Ok(event), r));
                }
            };
            match next {
                Ok(events) if events.is_empty() => {
                    // Nothing after `after`, and the run is over: its final event came
                    // before (it is written with the final state), so nothing ever will
                    // (a client that reconnects after the end gets an empty stream that
                    // ends, not keep-alives forever). Read once more after the state:
                    // the final event may have come in between.
                    if let Ok(Some(row)) = fleet.db().run(&r.run, None).await
                        && state::is_final(&row.state)
                    {
                        match fleet.db().events_after(&r.run, r.after).await {
                            Ok(more) if more.is_empty() => return None,
                            Ok(more) => r.pending.extend(more),
                            Err(err) => tracing::warn!(%err, "could not read a run's events"),
                        }
                    }
                }
                Ok(events) => r.pending.extend(events),
                Err(err) => {
                    tracing::warn!(%err, "could not read a run's events");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// How often a stream's reader tells the fleet it is there: a quarter of the disconnect
/// grace, between 100 ms and 1 s.
fn reader_touch_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The `run` event that opens a stream: the run's id, to reconnect with.
pub(crate) fn run_event(run: &str) -> Event {
    Event::default()
        .event("run")
        .json_data(json!({"run_id": run}))
        .unwrap_or_default()
}
