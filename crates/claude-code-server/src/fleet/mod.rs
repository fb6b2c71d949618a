//! The fleet: runs as rows that replicas claim, lease, and write about under the
//! lease's epoch; an event log every client reads from; approvals and cancellations
//! as rows with notifications.
//!
//! # How a run goes
//!
//! 1. A request inserts a run (`queued`) and notifies the replicas.
//! 2. A replica with a free slot claims it (`FOR UPDATE SKIP LOCKED` on PostgreSQL):
//!    `claimed`, its replica id, a lease until now + `lease`, and its epoch raised by
//!    one. A run of a session whose home replica (the one with its hot process) is
//!    alive waits up to `home_grace` for home to claim it. A run whose tenant has its
//!    limit of runs claimed or running (`--tenant-max-concurrent`), fleet-wide, stays
//!    queued; claims are serialized (an advisory lock; SQLite has one writer) and look
//!    at the oldest 256 claimable runs at a time ([`db::CLAIM_WINDOW`]).
//! 3. The replica runs it on its pool. Every message becomes an event, appended with a
//!    sequence number in the same statement that checks the replica still holds the
//!    run at that epoch (fencing): a replica that lost its lease can no longer write,
//!    and kills its CLI when it notices (at its next heartbeat at the latest).
//! 4. The final event (`done` or `error`) and the run's final state are written in one
//!    transaction.
//! 5. A lease that runs out (a replica killed, paused, partitioned) is taken over by
//!    any replica's sweeper: the run is ended `interrupted` (its epoch raised again),
//!    with an `error` event; its messages so far stay in the log. A run is never
//!    started again on its own: a tool with side effects may have run.
//!
//! Readers (SSE or JSON) read the log from the database, so a client may reconnect to
//! any replica with `Last-Event-ID`; notifications only wake them early.

pub(crate) mod db;
pub(crate) mod notify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use db::{Db, DbResult, EVENT_PAGE, EventRow, RunEnd, RunRow, now_ms, state};
use notify::{Channel, Notifier};

/// How the fleet times its leases and checks.
#[derive(Debug, Clone)]
pub(crate) struct FleetConfig {
    /// This replica's id: stable across restarts (so a restarted replica ends the runs
    /// its predecessor held at once), unique among live replicas.
    pub(crate) replica: String,
    /// How long a claim holds without renewal.
    pub(crate) lease: Duration,
    /// How long a session's run waits for its home replica.
    pub(crate) home_grace: Duration,
    /// How long a streaming run goes on without a reader before it is cancelled.
    pub(crate) disconnect_grace: Duration,
    /// How many runs this replica executes at once.
    pub(crate) capacity: usize,
    /// How many runs may wait for a slot, fleet-wide, beyond the slots of live
    /// replicas.
    pub(crate) max_queued: usize,
    /// How long a run may wait for a slot; then it ends with a `pool_busy` error.
    pub(crate) queue_timeout: Duration,
    /// How many runs a tenant may have claimed or running at once, fleet-wide (`None`:
    /// no limit); its other runs stay queued.
    pub(crate) tenant_max_active: TenantMaxActive,
}

/// A tenant's limit on runs claimed or running at once, by tenant id.
#[derive(Clone)]
pub(crate) struct TenantMaxActive(pub(crate) Arc<db::TenantLimit>);

impl std::fmt::Debug for TenantMaxActive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantMaxActive")
    }
}

/// Why a local run must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Someone asked (`POST /v1/runs/{id}/cancel`, a client that went away, ...).
    Cancelled(String),
    /// Another replica took the run over: this one may no longer write about it.
    LeaseLost,
    /// The server is shutting down.
    Shutdown,
    /// The run's events could not be written (the database failed, or its storage is
    /// full): the run ends failed rather than go on unrecorded.
    WriteFailed {
        /// Whether the storage was full (`507`; else `503`).
        storage_full: bool,
    },
}

struct Local {
    epoch: i64,
    stream: bool,
    stop: CancellationToken,
    why: Arc<Mutex<Option<Stop>>>,
}

/// Runs a claimed run: provided by the HTTP layer.
pub(crate) type Executor =
    Arc<dyn Fn(RunCtx) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The fleet engine of one replica. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    notifier: Notifier,
    config: FleetConfig,
    local: Mutex<HashMap<String, Local>>,
    draining: AtomicBool,
    /// Expired leases this replica took over (for `/metrics`).
    takeovers: std::sync::atomic::AtomicU64,
    stop: CancellationToken,
    executor: Mutex<Option<Executor>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("replica", &self.inner.config.replica)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    /// The engine over `db`; nothing runs until [`Fleet::start`].
    pub(crate) fn new(db: Db, config: FleetConfig) -> Fleet {
        let stop = CancellationToken::new();
        let notifier = Notifier::start(db.clone(), stop.clone());
        Fleet {
            inner: Arc::new(Inner {
                db,
                notifier,
                config,
                local: Mutex::new(HashMap::new()),
                draining: AtomicBool::new(false),
                takeovers: std::sync::atomic::AtomicU64::new(0),
                stop,
                executor: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn replica(&self) -> &str {
        &self.inner.config.replica
    }

    /// How many runs this replica executes now.
    pub(crate) fn running(&self) -> usize {
        lock(&self.inner.local).len()
    }

    /// Starts claiming and executing runs with `executor`, and the heartbeat and the
    /// sweeper. First ends the runs a crashed predecessor with this replica id held.
    ///
    /// # Errors
    ///
    /// Database errors while ending the predecessor's runs.
    pub(crate) async fn start(&self, executor: Executor) -> DbResult<()> {
        *lock(&self.inner.executor) = Some(executor);
        let db = &self.inner.db;
        db.heartbeat_replica(
            self.replica(),
            false,
            i64::try_from(self.inner.config.capacity).unwrap_or(0),
        )
        .await?;
        for run in db.runs_held_by(self.replica()).await? {
            let ended = db
                .end_unheld_run(
                    &run.id,
                    &[state::CLAIMED, state::RUNNING],
                    None,
                    state::INTERRUPTED,
                    (
                        "error",
                        &interrupted_error("the replica running it restarted"),
                    ),
                )
                .await?;
            if ended {
                self.inner.notifier.publish(Channel::Events, &run.id).await;
            }
        }
        tokio::spawn(scheduler(self.clone()));
        tokio::spawn(heartbeat(self.clone()));
        tokio::spawn(sweeper(self.clone()));
        Ok(())
    }

    /// Stops the background tasks (the state is going away).
    pub(crate) fn stop_background(&self) {
        self.inner.stop.cancel();
    }

    /// Stops claiming new runs (the first step of a graceful drain).
    pub(crate) fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// How many expired leases this replica took over.
    pub(crate) fn takeovers(&self) -> u64 {
        self.inner.takeovers.load(Ordering::Relaxed)
    }

    /// Whether the replica drains.
    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Stops every local run (their CLIs are killed) and the background tasks; the
    /// runs end `interrupted` (the lease ends with them, so another replica need not
    /// wait for it).
    pub(crate) async fn shut_down(&self) {
        self.drain();
        let local: Vec<(String, Local)> = lock(&self.inner.local).drain().collect();
        for (id, run) in &local {
            *lock(&run.why) = Some(Stop::Shutdown);
            run.stop.cancel();
            let _ = self
                .inner
                .db
                .finish_run(
                    id,
                    self.replica(),
                    run.epoch,
                    &RunEnd::new(
                        state::INTERRUPTED,
                        "error",
                        &interrupted_error("the server shut down"),
                    ),
                )
                .await;
            self.inner.notifier.publish(Channel::Events, id).await;
        }
        self.inner.stop.cancel();
        let _ = self.inner.db.remove_replica(self.replica()).await;
    }

    /// Whether the fleet takes one more run now: a free slot on a live replica, or room
    /// in the queue, once the `admitting` requests this replica admitted before and has
    /// not yet written as runs are counted too.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub(crate) async fn has_room(&self, admitting: usize) -> DbResult<bool> {
        let live_since = now_ms() - 3 * lease_ms(&self.inner.config);
        let (slots, running, queued) = self.inner.db.fleet_load(live_since).await?;
        let max_queued = i64::try_from(self.inner.config.max_queued).unwrap_or(i64::MAX);
        let admitting = i64::try_from(admitting).unwrap_or(i64::MAX);
        Ok(running + queued + admitting < slots + max_queued)
    }

    /// Queues a run with its audit row ([`Db::queue_run`]) and wakes the replicas.
    /// `false` when a session's run was refused: another turn of the session is
    /// queued or running.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub(crate) async fn submit(&self, run: &db::NewRun<'_>) -> DbResult<bool> {
        if !self.inner.db.queue_run(run).await? {
            return Ok(false);
        }
        self.inner.notifier.publish(Channel::Runs, run.id).await;
        Ok(true)
    }

    /// Asks for a run to be cancelled: a queued run ends at once, a running one where it
    /// runs (within a second). `false` when the run is not `tenant`'s or is over.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub(crate) async fn cancel(
        &self,
        run: &str,
        tenant: Option<&str>,
        reason: &str,
    ) -> DbResult<bool> {
        let db = &self.inner.db;
        if !db.request_cancel(run, tenant, reason).await? {
            return Ok(false);
        }
        // Still queued: nobody holds it, end it here.
        let ended = db
            .end_unheld_run(
                run,
                &[state::QUEUED],
                None,
                state::CANCELLED,
                ("error", &cancelled_error(reason)),
            )
            .await?;
        if ended {
            self.inner.notifier.publish(Channel::Events, run).await;
        } else {
            self.inner.notifier.publish(Channel::Cancel, run).await;
            self.stop_local(run, Stop::Cancelled(reason.to_owned()));
        }
        Ok(true)
    }

    fn stop_local(&self, run: &str, why: Stop) {
        if let Some(local) = lock(&self.inner.local).get(run) {
            lock(&local.why).get_or_insert(why);
            local.stop.cancel();
        }
    }

    /// A reader of `run`'s events ([`EventFeed`]), told of new ones from now on.
    pub(crate) fn feed(&self, run: &str) -> EventFeed {
        EventFeed {
            notes: self.inner.notifier.subscribe(),
            fleet: self.clone(),
            run: run.to_owned(),
            read_now: true,
        }
    }

    /// Waits for the answer to approval `id` until `deadline` (ms): `Some((allow,
    /// answer))`, or `None` when it expired unanswered (fail closed: a denial).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub(crate) async fn await_approval(
        &self,
        id: &str,
        deadline: i64,
        stop: &CancellationToken,
    ) -> DbResult<Option<(bool, Value)>> {
        let mut notes = self.inner.notifier.subscribe();
        loop {
            if let Some(row) = self.inner.db.approval(id).await? {
                match row.state.as_str() {
                    "allowed" => return Ok(Some((true, row.answer.unwrap_or(Value::Null)))),
                    "denied" => return Ok(Some((false, row.answer.unwrap_or(Value::Null)))),
                    "waiting" => {}
                    _ => return Ok(None),
                }
            }
            let left = deadline - now_ms();
            if left <= 0 || stop.is_cancelled() {
                // Expired (or the run is stopping): nobody may answer it any more.
                if self.inner.db.expire_approval(id).await? {
                    return Ok(None);
                }
                // Answered in between: take the answer.
                continue;
            }
            let wait =
                Duration::from_millis(u64::try_from(left).unwrap_or(0)).min(Duration::from_secs(1));
            tokio::select! {
                () = Notifier::wait(&mut notes, Channel::Approvals, Some(id), wait) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Answers approval `id` for `tenant` and wakes the replica that waits for it.
    /// `false` when no such approval waits.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub(crate) async fn answer_approval(
        &self,
        id: &str,
        tenant: &str,
        allow: bool,
        answer: &Value,
    ) -> DbResult<bool> {
        let answered = self
            .inner
            .db
            .answer_approval(id, tenant, allow, answer)
            .await?;
        if answered {
            self.inner.notifier.publish(Channel::Approvals, id).await;
        }
        Ok(answered)
    }
}

/// The `error` event of a run interrupted by a lost replica.
pub(crate) fn interrupted_error(why: &str) -> Value {
    json!({"error": {
        "kind": "interrupted",
        "message": format!("the run was interrupted: {why}; its messages so far are kept, and it is not started again (a tool with side effects may have run)"),
        "transient": false,
    }})
}

/// The `error` event of a cancelled run.
pub(crate) fn cancelled_error(reason: &str) -> Value {
    json!({"error": {
        "kind": "cancelled",
        "message": format!("the run was cancelled: {reason}"),
        "transient": false,
    }})
}

/// Reads one run's events as they are appended: the log is read again when a
/// notification says the run has new events (or once per `wait` without one: a
/// notification can be lost), not on every call. Its subscription is taken when it is
/// made, so no notification between two calls is missed.
pub(crate) struct EventFeed {
    fleet: Fleet,
    run: String,
    notes: tokio::sync::broadcast::Receiver<notify::Note>,
    /// Whether to read before waiting: at first, after a full page, and after a read
    /// that did not complete.
    read_now: bool,
}

impl EventFeed {
    /// The events after `after`: at once when some may be waiting, else once a
    /// notification about the run arrives or `wait` (at most a second) passes, then
    /// possibly none.
    ///
    /// # Errors
    ///
    /// Database errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a call cancelled while it read makes the next one read at once.
    pub(crate) async fn next(&mut self, after: i64, wait: Duration) -> DbResult<Vec<EventRow>> {
        if self.read_now {
            let events = self.read(after).await?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
        Notifier::wait(
            &mut self.notes,
            Channel::Events,
            Some(&self.run),
            wait.min(Duration::from_secs(1)),
        )
        .await;
        self.read(after).await
    }

    async fn read(&mut self, after: i64) -> DbResult<Vec<EventRow>> {
        self.read_now = true;
        // What was notified so far is committed, so this read covers it: the
        // notifications waiting now would only wake the next call for nothing.
        while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
            self.notes.try_recv()
        {}
        let events = self.fleet.db().events_after(&self.run, after).await?;
        self.read_now = events.len() >= EVENT_PAGE;
        Ok(events)
    }
}

/// A claimed run, as its executor sees it: write events (fenced), watch for a stop,
/// finish.
pub(crate) struct RunCtx {
    writer: EventWriter,
    pub(crate) row: RunRow,
    finished: bool,
}

/// Writes a run's events (fenced by its epoch), from the executor or its callbacks.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct EventWriter {
    fleet: Fleet,
    run: Arc<str>,
    epoch: i64,
    stop: CancellationToken,
    why: Arc<Mutex<Option<Stop>>>,
}

impl EventWriter {
    /// The fleet.
    pub(crate) fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The run's id.
    pub(crate) fn run(&self) -> &str {
        &self.run
    }

    /// Cancelled when the run must stop; see [`EventWriter::stop_reason`].
    pub(crate) fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Why the run must stop, once it must.
    pub(crate) fn stop_reason(&self) -> Option<Stop> {
        lock(&self.why).clone()
    }

    /// Appends an event; `false` when the run must stop: this replica no longer holds
    /// it (another replica took it over), or the event could not be written
    /// ([`Stop::WriteFailed`]).
    pub(crate) async fn event(&self, kind: &str, data: &Value) -> bool {
        let fleet = &self.fleet.inner;
        match fleet
            .db
            .append_event(&self.run, &fleet.config.replica, self.epoch, kind, data)
            .await
        {
            Ok(Some(_)) => {
                fleet.notifier.publish(Channel::Events, &self.run).await;
                true
            }
            Ok(None) => {
                lock(&self.why).get_or_insert(Stop::LeaseLost);
                self.stop.cancel();
                false
            }
            Err(err) => {
                tracing::warn!(%err, run = %self.run, "could not append an event; the run ends failed");
                lock(&self.why).get_or_insert(Stop::WriteFailed {
                    storage_full: err.is_storage_full(),
                });
                self.stop.cancel();
                false
            }
        }
    }
}

impl RunCtx {
    /// The run's event writer.
    pub(crate) fn writer(&self) -> &EventWriter {
        &self.writer
    }

    /// The fleet.
    pub(crate) fn fleet(&self) -> &Fleet {
        &self.writer.fleet
    }

    /// Ends the run as `end` says (one transaction: [`db::Db::finish_run`]). `false`
    /// when this replica no longer held it.
    pub(crate) async fn finish(mut self, end: RunEnd<'_>) -> bool {
        self.finished = true;
        let fleet = Arc::clone(&self.writer.fleet.inner);
        // Retried: the transaction is fenced and all or nothing (a retry after a
        // commit whose answer was lost finds the run ended and writes nothing).
        const ATTEMPTS: u32 = 3;
        let mut ok = false;
        for attempt in 0..ATTEMPTS {
            match fleet
                .db
                .finish_run(&self.row.id, &fleet.config.replica, self.row.epoch, &end)
                .await
            {
                Ok(done) => {
                    ok = done;
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, run = self.row.id, attempt, "could not end a run");
                    if attempt + 1 < ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
        }
        lock(&fleet.local).remove(&self.row.id);
        fleet.notifier.publish(Channel::Events, &self.row.id).await;
        ok
    }
}

impl Drop for RunCtx {
    fn drop(&mut self) {
        if !self.finished {
            // The executor gave up without finishing: its lease runs out and the
            // sweeper ends the run.
            lock(&self.writer.fleet.inner.local).remove(&self.row.id);
        }
    }
}

/// Claims runs while there is room, and starts them.
async fn scheduler(fleet: Fleet) {
    let inner = &fleet.inner;
    let mut notes = inner.notifier.subscribe();
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        if !fleet.is_draining() {
            let room = inner.config.capacity.saturating_sub(fleet.running());
            let claimed = inner
                .db
                .claim_runs(
                    &inner.config.replica,
                    i64::try_from(room).unwrap_or(0),
                    lease_ms(&inner.config),
                    i64::try_from(inner.config.home_grace.as_millis()).unwrap_or(0),
                    now_ms() - 3 * lease_ms(&inner.config),
                    &*inner.config.tenant_max_active.0,
                )
                .await;
            match claimed {
                Ok(runs) => {
                    for row in runs {
                        launch(&fleet, row);
                    }
                }
                Err(err) => tracing::warn!(%err, "could not claim runs"),
            }
        }
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = Notifier::wait(&mut notes, Channel::Runs, None, Duration::from_millis(500)) => {}
        }
    }
}

fn launch(fleet: &Fleet, row: RunRow) {
    let stop = CancellationToken::new();
    let why = Arc::new(Mutex::new(None));
    lock(&fleet.inner.local).insert(
        row.id.clone(),
        Local {
            epoch: row.epoch,
            stream: row.stream,
            stop: stop.clone(),
            why: Arc::clone(&why),
        },
    );
    let Some(executor) = lock(&fleet.inner.executor).clone() else {
        return;
    };
    let ctx = RunCtx {
        writer: EventWriter {
            fleet: fleet.clone(),
            run: Arc::from(row.id.as_str()),
            epoch: row.epoch,
            stop,
            why,
        },
        row,
        finished: false,
    };
    tokio::spawn(executor(ctx));
}

fn lease_ms(config: &FleetConfig) -> i64 {
    i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX)
}

/// Renews the leases of local runs, notices cancellations and readers gone, and tells
/// the fleet this replica lives.
async fn heartbeat(fleet: Fleet) {
    let inner = &fleet.inner;
    let every = (inner.config.lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let mut notes = inner.notifier.subscribe();
    loop {
        if let Err(err) = inner.db.sync_clock().await {
            tracing::warn!(%err, "could not read the database's clock");
        }
        if let Err(err) = inner
            .db
            .heartbeat_replica(
                &inner.config.replica,
                fleet.is_draining(),
                i64::try_from(inner.config.capacity).unwrap_or(0),
            )
            .await
        {
            tracing::warn!(%err, "could not record this replica's heartbeat");
        }
        let local: Vec<(String, i64, bool)> = lock(&inner.local)
            .iter()
            .map(|(id, l)| (id.clone(), l.epoch, l.stream))
            .collect();
        for (id, epoch, stream) in local {
            match inner
                .db
                .renew_lease(&id, &inner.config.replica, epoch, lease_ms(&inner.config))
                .await
            {
                Ok(true) => {}
                Ok(false) => fleet.stop_local(&id, Stop::LeaseLost),
                Err(err) => tracing::warn!(%err, run = id, "could not renew a lease"),
            }
            if let Ok(Some(reason)) = inner.db.cancel_reason(&id).await {
                fleet.stop_local(&id, Stop::Cancelled(reason));
            }
            if stream
                && let Ok(Some(seen)) = inner.db.reader_seen_at(&id).await
                && now_ms() - seen
                    > i64::try_from(inner.config.disconnect_grace.as_millis()).unwrap_or(i64::MAX)
            {
                fleet.stop_local(
                    &id,
                    Stop::Cancelled("no client read the stream within the disconnect grace".into()),
                );
            }
        }
        tokio::select! {
            () = inner.stop.cancelled() => return,
            // A cancellation of a local run: act on it now rather than at the next beat.
            () = wait_cancel(&fleet, &mut notes, every) => {}
        }
    }
}

async fn wait_cancel(
    fleet: &Fleet,
    notes: &mut tokio::sync::broadcast::Receiver<notify::Note>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Ok(note)) if note.channel == Channel::Cancel => {
                if lock(&fleet.inner.local).contains_key(&note.id)
                    && let Ok(Some(reason)) = fleet.inner.db.cancel_reason(&note.id).await
                {
                    fleet.stop_local(&note.id, Stop::Cancelled(reason));
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => return,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => return,
        }
    }
}

/// Ends the runs whose lease ran out, wherever they ran.
async fn sweeper(fleet: Fleet) {
    let inner = &fleet.inner;
    let every = (inner.config.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match inner.db.expired_runs(now_ms()).await {
            Ok(runs) => {
                for run in runs {
                    // A run somebody cancelled before its replica went quiet ends as they
                    // asked: cancelled, not interrupted.
                    let (final_state, error) = match &run.cancel {
                        Some(reason) => (state::CANCELLED, cancelled_error(reason)),
                        None => (
                            state::INTERRUPTED,
                            interrupted_error(&format!(
                                "replica {} stopped renewing its lease",
                                run.replica.as_deref().unwrap_or("?")
                            )),
                        ),
                    };
                    let ended = inner
                        .db
                        .end_unheld_run(
                            &run.id,
                            &[state::CLAIMED, state::RUNNING],
                            Some(now_ms()),
                            final_state,
                            ("error", &error),
                        )
                        .await;
                    match ended {
                        Ok(true) => {
                            inner.takeovers.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(run = run.id, replica = ?run.replica, state = final_state, "took over a run whose lease ran out");
                            inner.notifier.publish(Channel::Events, &run.id).await;
                        }
                        Ok(false) => {}
                        Err(err) => tracing::warn!(%err, "could not end an expired run"),
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "could not look for expired leases"),
        }
        let waited_too_long =
            now_ms() - i64::try_from(inner.config.queue_timeout.as_millis()).unwrap_or(i64::MAX);
        if let Ok(stale) = inner.db.stale_queued_runs(waited_too_long).await {
            for run in stale {
                let error = json!({
                    "error": {
                        "kind": "pool_busy",
                        "message": format!("the run did not start within the queue timeout of {:?}: no process slot became free, or its tenant stayed at its limit of concurrent runs", inner.config.queue_timeout),
                        "transient": true,
                        "retry_after_secs": 1,
                    },
                    "status": 503,
                    "retry_after": 1,
                });
                if let Ok(true) = inner
                    .db
                    .end_unheld_run(
                        &run,
                        &[state::QUEUED],
                        None,
                        state::FAILED,
                        ("error", &error),
                    )
                    .await
                {
                    inner.notifier.publish(Channel::Events, &run).await;
                }
            }
        }
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
