//! [`QueryPool`]: every CLI process of a program in one bound, and the warm processes
//! that answer without a cold start.
//!
//! ```no_run
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, PoolConfig, QueryPool};
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let options = ClaudeCodeOptions::builder().max_turns(1).build()?;
//! let pool = QueryPool::new(
//!     PoolConfig {
//!         max_concurrent: 4,
//!         max_queued: 32,
//!         queue_timeout: Duration::from_secs(10),
//!         ..Default::default()
//!     }
//!     .prewarm(options.clone(), 2),
//! );
//! // A spare binds to this run's working directory, model and mode in ~40 ms.
//! let run_here = options.to_builder().cwd("/srv/projects/a").build()?;
//! let messages = pool.query("Explain this error message", run_here).await?.collect_all().await?;
//! println!("{:?}", pool.stats());
//! # Ok(()) }
//! ```
//!
//! # The warm paths
//!
//! A run takes the first of these that fits, else starts a CLI cold (0.4–0.9 s and a
//! CPU-second):
//!
//! 1. **Hot**: the process that ran the previous turn of the conversation the run
//!    resumes (`resume` = its session id), kept by [`Runner::run_turn`] (the
//!    conversation manager and scoped sessions run their turns that way). Only the
//!    prompt is written; the model sees every earlier turn.
//! 2. **Spare**: a process started with `--await-claim` and parked, bound to the run by
//!    a `claim_session` request (working directory, permission mode, appended system
//!    prompt, extra directories, agents) and `set_model` (CLI 2.1.331 or later), written
//!    together with the run's first prompt (the CLI reads its input in order). Spares
//!    are keyed by what the CLI reads at start-up (the executable, the environment, the
//!    other flags, the shape of the callbacks), so one profile serves every working
//!    directory, model and mode of a tenant. A claim the CLI refuses (a mode the spare
//!    cannot take, a missing directory) falls back to a cold start (the spare refuses
//!    the prompt that followed the claim, without asking the model); the reason is
//!    counted in [`PoolStats::claim_fallbacks`].
//! 3. **Reused**: with [`PoolConfig::reuse_processes`], a process whose run ended with a
//!    result is reset (`/clear`: new session id, no earlier turns in the next request)
//!    and serves the next run with exactly the same options.
//!
//! Runs that name a conversation (`resume`, `continue_conversation`, `session_id`,
//! `fork_session`) never take a spare or a reused process (the CLI refuses
//! `--resume` with `--await-claim`, and has no other way to load a conversation into
//! a parked process): when their conversation is not hot, they start cold.
//!
//! # Limits
//!
//! - At most `max_concurrent` CLI processes of the pool are alive at once: running,
//!   hot, parked, being reset or still exiting. A slot is given back only after its
//!   process has exited. When a run needs a slot and idle processes hold them all, the
//!   pool stops one to make room: a spare of another profile first, then a reused
//!   process, then the least recently used hot conversation.
//! - At most `max_queued` runs wait for a slot; more are refused at once with a
//!   [`PoolBusy`](crate::ErrorKind::PoolBusy) error, and so is a run that waited
//!   `queue_timeout`.
//! - At most `max_hot` conversations stay hot; one idle for `hot_idle_timeout` ends (its
//!   next turn resumes cold).
//! - A replacement spare starts `refill_delay` after a spare is taken (a starting CLI
//!   burns about a CPU-second, which slows the run that just took the spare on a small
//!   machine), never while runs wait for a slot. Spares older than `max_process_age`
//!   are replaced.
//!
//! # Caveats
//!
//! State outside the conversation survives a reset or a claim: files the tools wrote,
//! the process environment, MCP server state (commands a run's tools left running are
//! killed before a reset). A run with a stderr callback never takes a spare (the
//! callback is attached when a process starts). Dropping the last clone of the pool
//! kills every idle process; running ones end with their runs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::ClaudeClient;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::process::argv::SparePlan;
use crate::process::subprocess::ProcessGuard;
use crate::process::{self, Prepared};
use crate::prompt::Prompt;
use crate::query::Query;
use crate::runner::{Run, Runner, collect_ok, collect_stream};
use crate::session::{CliSession, ProcessSlot};
use crate::util::lock;

/// How long the refill task waits after a failed warm start.
const REFILL_BACKOFF: Duration = Duration::from_secs(2);
/// The longest the maintenance task sleeps.
const MAINTENANCE_TICK: Duration = Duration::from_secs(5);

/// An options profile to keep spares for (see [`PoolConfig::prewarm`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrewarmProfile {
    /// The options the spares are started with; runs whose options differ only in what
    /// a claim sets (working directory, model, permission mode, appended system prompt,
    /// extra directories, agents) and in their callbacks (of the same shape) take them.
    pub options: ClaudeCodeOptions,
    /// How many to keep parked.
    pub count: usize,
}

/// How a [`QueryPool`] behaves. `PoolConfig::default()` allows 4 processes, 64 queued
/// runs, a 30 s queue timeout, spares up to 10 minutes old, 4 hot conversations idle
/// up to 5 minutes, no pre-warming and no reuse.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Processes alive at once, idle ones included (at least 1).
    pub max_concurrent: usize,
    /// Runs that may wait for a slot.
    pub max_queued: usize,
    /// How long a run may wait for a slot.
    pub queue_timeout: Duration,
    /// Spares and reused processes older than this are replaced.
    pub max_process_age: Duration,
    /// Keep a finished process for the next run with the same options, after a reset.
    pub reuse_processes: bool,
    /// How long after a spare is taken its replacement starts.
    pub refill_delay: Duration,
    /// Profiles to keep spares for.
    pub prewarm: Vec<PrewarmProfile>,
    /// Conversations whose process stays alive between turns (0: every turn resumes
    /// cold).
    pub max_hot: usize,
    /// A hot conversation idle this long loses its process.
    pub hot_idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_concurrent: 4,
            max_queued: 64,
            queue_timeout: Duration::from_secs(30),
            max_process_age: Duration::from_secs(600),
            reuse_processes: false,
            refill_delay: Duration::from_millis(250),
            prewarm: Vec::new(),
            max_hot: 4,
            hot_idle_timeout: Duration::from_secs(300),
        }
    }
}

impl PoolConfig {
    /// Keeps `count` spares parked for runs like `options`.
    #[must_use]
    pub fn prewarm(mut self, options: ClaudeCodeOptions, count: usize) -> Self {
        self.prewarm.push(PrewarmProfile { options, count });
        self
    }

    /// Lets a finished process serve the next run with the same options (see the module
    /// docs).
    #[must_use]
    pub fn reuse_processes(mut self, reuse: bool) -> Self {
        self.reuse_processes = reuse;
        self
    }

    /// How many conversations stay hot, and for how long when idle.
    #[must_use]
    pub fn hot(mut self, max_hot: usize, idle_timeout: Duration) -> Self {
        self.max_hot = max_hot;
        self.hot_idle_timeout = idle_timeout;
        self
    }
}

/// Where a run records how it was served (a claim that falls back changes it).
type ServedCell = Arc<Mutex<Served>>;

/// How a run was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Served {
    /// The process of its conversation's previous turn.
    Hot,
    /// A parked spare, claimed.
    Claimed,
    /// A process reset after an earlier run with the same options.
    Reused,
    /// A new process.
    #[default]
    Cold,
}

/// Live figures of a pool.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Runs running now, clients, and slots held with [`QueryPool::reserve`].
    pub active: usize,
    /// Runs waiting for a slot now.
    pub queued: usize,
    /// Idle processes ready for a run now: spares and reused processes.
    pub warm: usize,
    /// Parked spares now.
    pub spares: usize,
    /// Hot conversations (idle, with their process) now.
    pub hot: usize,
    /// Processes of the pool alive now (running, idle, starting or exiting).
    pub processes: usize,
    /// Runs that ended without error.
    pub completed: u64,
    /// Runs that ended with an error, and refused runs and reservations.
    pub failed: u64,
    /// Runs refused with `PoolBusy`.
    pub rejected: u64,
    /// Runs served without a cold start (hot, claimed or reused).
    pub warm_hits: u64,
    /// Runs served by a hot conversation.
    pub hot_hits: u64,
    /// Runs served by a claimed spare.
    pub claimed: u64,
    /// Runs that started a process cold.
    pub cold_starts: u64,
    /// Processes the pool started (spares and cold starts).
    pub started: u64,
    /// Processes reset for reuse.
    pub reused: u64,
    /// Claims that failed, by the CLI's reason (`permission_mode_not_claimable`,
    /// `cwd_not_found`, `spare_exited`, ...): each fell back to a cold start.
    pub claim_fallbacks: BTreeMap<String, u64>,
    /// Mean time runs and reservations waited for a slot or a warm process.
    pub mean_wait: Duration,
}

#[derive(Default)]
struct Counters {
    completed: u64,
    failed: u64,
    rejected: u64,
    hot_hits: u64,
    claimed: u64,
    reused_hits: u64,
    cold_starts: u64,
    started: u64,
    reused: u64,
    claim_fallbacks: BTreeMap<String, u64>,
    waits: u64,
    total_wait: Duration,
}

/// What an idle process is kept for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kept {
    /// A parked spare for runs with this spare key.
    Spare(String),
    /// A reset process for runs with this options fingerprint.
    Reset(String),
    /// The next turn of conversation `session` (with this hot key).
    Hot { session: String, key: String },
}

/// An idle process and the slot it holds.
struct Idle {
    kept: Kept,
    session: CliSession,
    lease: Lease,
    /// When it started.
    born: Instant,
    /// When it last finished a run (or was parked).
    since: Instant,
}

/// A process slot: a semaphore permit, counted while held, given back only after the
/// process that used it has exited.
pub(crate) struct Lease {
    permit: Option<OwnedSemaphorePermit>,
    pool: Weak<Inner>,
    /// Counted in `active` (runs, clients, reservations), not idle.
    counted: bool,
}

impl Lease {
    fn new(permit: OwnedSemaphorePermit, pool: &Arc<Inner>) -> Lease {
        Lease {
            permit: Some(permit),
            pool: Arc::downgrade(pool),
            counted: false,
        }
    }

    /// Counts the slot as active (a run, a client, a reservation).
    fn activate(mut self) -> Lease {
        if !self.counted
            && let Some(pool) = self.pool.upgrade()
        {
            pool.active.fetch_add(1, Ordering::SeqCst);
            self.counted = true;
        }
        self
    }

    /// No longer active (its process is going back to the pool's idle ones).
    fn deactivate(mut self) -> Lease {
        if self.counted
            && let Some(pool) = self.pool.upgrade()
        {
            pool.active.fetch_sub(1, Ordering::SeqCst);
        }
        self.counted = false;
        self
    }

    /// Kills `process` (if any) and gives the slot back once it has exited; then wakes
    /// the maintenance task, which may start a spare in the freed slot.
    pub(crate) fn release_after_exit(mut self, process: Option<Arc<ProcessGuard>>) {
        let permit = self.permit.take();
        let pool = self.pool.clone();
        drop(self);
        let release = move || {
            drop(permit);
            if let Some(pool) = pool.upgrade() {
                pool.maintain.notify_one();
                pool.slot_free.notify_waiters();
            }
        };
        match (process, tokio::runtime::Handle::try_current()) {
            (Some(process), Ok(handle)) => {
                process.kill();
                handle.spawn(async move {
                    process.wait().await;
                    release();
                });
            }
            _ => release(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.counted
            && let Some(pool) = self.pool.upgrade()
        {
            pool.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// A prewarm profile, prepared once the CLI's version is known.
struct Profile {
    options: ClaudeCodeOptions,
    count: usize,
    /// Filled by the maintenance task.
    prepared: Mutex<Option<(Prepared, Option<SparePlan>)>>,
    /// No replacement starts before this (refill delay after a take).
    not_before: Mutex<Option<Instant>>,
    starting: AtomicUsize,
}

struct Inner {
    config: PoolConfig,
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    active: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    profiles: Vec<Profile>,
    counters: Mutex<Counters>,
    /// Wakes the maintenance task.
    maintain: Arc<Notify>,
    /// Wakes runs waiting for an idle process or a slot.
    slot_free: Notify,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Dropping the idle processes kills their process groups.
    }
}

/// A pool of CLI processes, and a [`Runner`]. Cheap to clone; clones share the pool. See
/// the [module docs](crate::toolkit::pool).
#[derive(Clone)]
pub struct QueryPool {
    inner: Arc<Inner>,
}

/// What a run got from the pool.
enum Got {
    Idle(Box<Idle>),
    Permit(Lease),
}

impl QueryPool {
    /// Creates the pool and, when profiles are configured, starts warming processes in
    /// the background (this needs a Tokio runtime).
    pub fn new(mut config: PoolConfig) -> QueryPool {
        config.max_concurrent = config.max_concurrent.max(1);
        let profiles = config
            .prewarm
            .iter()
            .filter(|p| p.count > 0)
            .map(|p| Profile {
                options: p.options.clone(),
                count: p.count,
                prepared: Mutex::new(None),
                not_before: Mutex::new(None),
                starting: AtomicUsize::new(0),
            })
            .collect();
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            profiles,
            counters: Mutex::new(Counters::default()),
            maintain: Arc::new(Notify::new()),
            slot_free: Notify::new(),
            shutdown: CancellationToken::new(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(maintain(Arc::downgrade(&inner), inner.shutdown.clone()));
        }
        QueryPool { inner }
    }

    /// Runs a prompt on the warmest process that fits (see the module docs), else on a
    /// new process once a slot is free. The process ends with the run (or, with
    /// `reuse_processes`, is reset for the next run with the same options).
    ///
    /// # Errors
    ///
    /// Invalid options, a missing CLI; [`PoolBusy`](ErrorKind::PoolBusy) when the queue
    /// is full or the wait exceeds `queue_timeout`. Errors of the run itself come from
    /// the returned stream.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits leaves the queue; nothing is started.
    pub async fn query(
        &self,
        prompt: impl Into<Prompt>,
        options: ClaudeCodeOptions,
    ) -> Result<PooledQuery> {
        self.start_run(prompt.into(), options, false).await
    }

    /// Runs a turn of a conversation: like [`query`](QueryPool::query), but the process
    /// stays hot afterwards (up to `max_hot` conversations, `hot_idle_timeout` idle) for
    /// the next turn, which names it with `resume` = the result's session id.
    ///
    /// # Errors
    ///
    /// See [`query`](QueryPool::query).
    ///
    /// # Cancel safety
    ///
    /// See [`query`](QueryPool::query).
    pub async fn query_turn(
        &self,
        prompt: impl Into<Prompt>,
        options: ClaudeCodeOptions,
    ) -> Result<PooledQuery> {
        self.start_run(prompt.into(), options, true).await
    }

    async fn start_run(
        &self,
        prompt: Prompt,
        options: ClaudeCodeOptions,
        keep_hot: bool,
    ) -> Result<PooledQuery> {
        let inner = &self.inner;
        let prepared = process::prepare(&options).await?;
        let fingerprint = options.fingerprint();
        let hot_key = prepared.plan.hot_key.clone();
        let reuse = inner.config.reuse_processes && !options.names_conversation();
        let wanted = Wanted {
            resume: options.resume.clone(),
            hot_key: hot_key.clone(),
            spare: prepared.plan.spare.as_ref().map(|s| s.key.clone()),
            // A fresh process for exactly these options: one reset for reuse, or one
            // prewarmed on a CLI too old to park spares (whatever `reuse_processes` says).
            reset: (!options.names_conversation()).then(|| fingerprint.clone()),
        };
        let (got, waited) = self.acquire(&wanted).await?;
        let keep_hot = keep_hot && inner.config.max_hot > 0;
        let slot = ProcessSlot::default();
        let served_cell: ServedCell = Arc::default();
        let (served, lease, start): (Served, Lease, BoxFuture<'static, Result<CliSession>>) =
            match got {
                Got::Idle(idle) => {
                    let Idle {
                        kept,
                        session,
                        lease,
                        ..
                    } = *idle;
                    *lock(&slot) = session.link.process().cloned();
                    let served = match kept {
                        Kept::Hot { .. } => Served::Hot,
                        Kept::Reset(_) => Served::Reused,
                        Kept::Spare(_) => Served::Claimed,
                    };
                    let start = warm_start(
                        Arc::downgrade(inner),
                        session,
                        served,
                        prompt,
                        options.clone(),
                        prepared,
                        Arc::clone(&slot),
                        Arc::clone(&served_cell),
                    );
                    (served, lease, start)
                }
                Got::Permit(lease) => {
                    inner.lock_counters().started += 1;
                    let options = options.clone();
                    let publish = Arc::clone(&slot);
                    let start = Box::pin(async move {
                        let session =
                            CliSession::connect_prepared(&prepared, &options, &publish).await?;
                        session.link.send_prompt(&prompt).await?;
                        Ok(session)
                    });
                    (
                        Served::Cold,
                        lease,
                        start as BoxFuture<'static, Result<CliSession>>,
                    )
                }
            };
        {
            let mut c = inner.lock_counters();
            match served {
                Served::Hot => c.hot_hits += 1,
                Served::Claimed => c.claimed += 1,
                Served::Reused => c.reused_hits += 1,
                Served::Cold => c.cold_starts += 1,
            }
        }
        *lock(&served_cell) = served;
        let mut run = Query::new(start, slot, options.timeout, options.requested_tool_names())
            .with_idle_timeout(options.idle_timeout);
        if keep_hot || reuse {
            run = run.keep_alive();
        }
        Ok(PooledQuery {
            query: Some(run),
            lease: Some(lease.activate()),
            pool: Arc::downgrade(inner),
            after: After {
                keep_hot,
                reuse,
                fingerprint,
                hot_key,
            },
            served: served_cell,
            waited,
            outcome: Outcome::Running,
        })
    }

    /// A [`ClaudeClient`] on a claimed spare when one fits, else on a new process, in a
    /// slot of the pool (held until the client is dropped and its process has exited).
    ///
    /// # Errors
    ///
    /// See [`query`](QueryPool::query) and [`ClaudeClient::connect`].
    pub async fn client(&self, options: ClaudeCodeOptions) -> Result<ClaudeClient> {
        let inner = &self.inner;
        let prepared = process::prepare(&options).await?;
        // A client may outlive a turn and change its own mode or model: it takes a
        // spare or a new process, never a hot conversation or a reused process.
        let wanted = Wanted {
            resume: None,
            hot_key: String::new(),
            spare: prepared.plan.spare.as_ref().map(|s| s.key.clone()),
            reset: None,
        };
        let (got, _) = self.acquire(&wanted).await?;
        let slot = ProcessSlot::default();
        let (started, lease) = match got {
            Got::Idle(idle) => {
                let Idle { session, lease, .. } = *idle;
                inner.lock_counters().claimed += 1;
                (
                    claim_or_cold(inner, session, &options, &prepared, &slot, true, None, None)
                        .await,
                    lease,
                )
            }
            Got::Permit(lease) => {
                {
                    let mut c = inner.lock_counters();
                    c.started += 1;
                    c.cold_starts += 1;
                }
                (
                    CliSession::connect_prepared(&prepared, &options, &slot).await,
                    lease,
                )
            }
        };
        match started {
            Ok(session) => Ok(ClaudeClient::on(session, &options, Some(lease.activate()))),
            Err(err) => {
                lease.release_after_exit(lock(&slot).take());
                Err(err)
            }
        }
    }

    /// Waits for a process slot without starting anything, under the same queue bound
    /// and timeout as [`query`](QueryPool::query): for work that starts its own CLI but
    /// must count against the pool. The slot is held until the [`PoolSlot`] drops; drop
    /// it only after the process you started has exited.
    ///
    /// # Errors
    ///
    /// [`PoolBusy`](ErrorKind::PoolBusy) as for `query`.
    pub async fn reserve(&self) -> Result<PoolSlot> {
        let (lease, _) = self.acquire_permit().await?;
        Ok(PoolSlot {
            lease: Some(lease.activate()),
        })
    }

    /// Ends the hot process of conversation `session_id`, if the pool keeps one.
    pub fn end_conversation(&self, session_id: &str) {
        let ended: Vec<Idle> = {
            let mut idle = self.inner.lock_idle();
            let (ended, keep): (Vec<Idle>, Vec<Idle>) = idle.drain(..).partition(
                |i| matches!(&i.kept, Kept::Hot { session, .. } if session == session_id),
            );
            *idle = keep;
            ended
        };
        for i in ended {
            retire(i);
        }
    }

    /// The pool's live figures.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let (spares, resets, hot) = {
            let idle = inner.lock_idle();
            let count = |f: fn(&Kept) -> bool| idle.iter().filter(|i| f(&i.kept)).count();
            (
                count(|k| matches!(k, Kept::Spare(_))),
                count(|k| matches!(k, Kept::Reset(_))),
                count(|k| matches!(k, Kept::Hot { .. })),
            )
        };
        let c = inner.lock_counters();
        PoolStats {
            active: inner.active.load(Ordering::SeqCst),
            queued: inner.queued.load(Ordering::SeqCst),
            warm: spares + resets,
            spares,
            hot,
            processes: inner.config.max_concurrent - inner.permits.available_permits(),
            completed: c.completed,
            failed: c.failed,
            rejected: c.rejected,
            warm_hits: c.hot_hits + c.claimed + c.reused_hits,
            hot_hits: c.hot_hits,
            claimed: c.claimed,
            cold_starts: c.cold_starts,
            started: c.started,
            reused: c.reused,
            claim_fallbacks: c.claim_fallbacks.clone(),
            mean_wait: if c.waits == 0 {
                Duration::ZERO
            } else {
                c.total_wait / c.waits as u32
            },
        }
    }

    /// The process ids of the idle spares and reused processes.
    pub fn warm_pids(&self) -> Vec<u32> {
        self.inner
            .lock_idle()
            .iter()
            .filter(|i| !matches!(i.kept, Kept::Hot { .. }))
            .filter_map(|i| i.session.link.pid())
            .collect()
    }

    /// The process id of conversation `session_id`'s hot process, if it has one.
    pub fn hot_pid(&self, session_id: &str) -> Option<u32> {
        self.inner
            .lock_idle()
            .iter()
            .find(|i| matches!(&i.kept, Kept::Hot { session, .. } if session == session_id))
            .and_then(|i| i.session.link.pid())
    }

    /// Waits until at least `count` spares or reused processes are idle, or `timeout`
    /// passes; returns whether they are.
    pub async fn wait_warm(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.slot_free.notified();
            if self.stats().warm >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.stats().warm >= count;
            }
        }
    }

    /// A permit for a new process, waiting in the bounded queue.
    async fn acquire_permit(&self) -> Result<(Lease, Duration)> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.inner.config.queue_timeout;
        let mut queued: Option<QueueSlot<'_>> = None;
        let mut retired = false;
        loop {
            let freed = self.inner.slot_free.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(permit) = Arc::clone(&self.inner.permits).try_acquire_owned() {
                let waited = started.elapsed();
                self.inner.note_wait(waited);
                return Ok((Lease::new(permit, &self.inner), waited));
            }
            if !retired {
                retired = self.inner.retire_one_idle(None);
            }
            self.wait_in_queue(&mut queued, deadline, freed).await?;
        }
    }

    /// A slot for a run of `options`: the warmest idle process that fits, else a permit
    /// for a new process (waiting in the bounded queue).
    async fn acquire(&self, wanted: &Wanted) -> Result<(Got, Duration)> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + inner.config.queue_timeout;
        let mut queued: Option<QueueSlot<'_>> = None;
        let mut retired = false;
        loop {
            // Listen before looking, so an idle process offered in between wakes us.
            let freed = inner.slot_free.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(idle) = inner.take_idle(wanted) {
                if matches!(idle.kept, Kept::Spare(_)) {
                    inner.delay_refill(&idle.kept);
                }
                let waited = started.elapsed();
                inner.note_wait(waited);
                return Ok((Got::Idle(Box::new(idle)), waited));
            }
            if let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() {
                let waited = started.elapsed();
                inner.note_wait(waited);
                return Ok((Got::Permit(Lease::new(permit, inner)), waited));
            }
            // Make room by stopping one idle process this run cannot use (one per run:
            // its slot comes back once it has exited).
            if !retired {
                retired = inner.retire_one_idle(Some(wanted));
            }
            self.wait_in_queue(&mut queued, deadline, freed).await?;
        }
    }

    async fn wait_in_queue<'a>(
        &'a self,
        queued: &mut Option<QueueSlot<'a>>,
        deadline: tokio::time::Instant,
        freed: Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<()> {
        let inner = &self.inner;
        if queued.is_none() {
            if inner.queued.load(Ordering::SeqCst) >= inner.config.max_queued {
                return Err(inner.refuse(format!(
                    "the pool's queue is full ({} runs already wait for a slot; max_concurrent is {})",
                    inner.config.max_queued, inner.config.max_concurrent
                )));
            }
            *queued = Some(QueueSlot::enter(&inner.queued));
        }
        tokio::select! {
            () = freed => Ok(()),
            () = tokio::time::sleep_until(deadline) => Err(inner.refuse(format!(
                "no process slot became free within the queue timeout of {:?}",
                inner.config.queue_timeout
            ))),
            () = inner.shutdown.cancelled() => Err(inner.refuse("the pool is shut down".to_owned())),
        }
    }
}

/// What a run can use.
struct Wanted {
    resume: Option<String>,
    hot_key: String,
    spare: Option<String>,
    reset: Option<String>,
}

impl Wanted {
    fn fits(&self, kept: &Kept) -> bool {
        match kept {
            Kept::Hot { session, key } => {
                self.resume.as_deref() == Some(session.as_str()) && *key == self.hot_key
            }
            Kept::Spare(key) => self.spare.as_deref() == Some(key.as_str()),
            Kept::Reset(fp) => self.reset.as_deref() == Some(fp.as_str()),
        }
    }
}

impl Runner for QueryPool {
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        Box::pin(async move { Ok(Run::new(self.query(prompt, options).await?)) })
    }

    fn run_turn(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        Box::pin(async move { Ok(Run::new(self.query_turn(prompt, options).await?)) })
    }

    fn end_conversation(&self, session_id: &str) {
        QueryPool::end_conversation(self, session_id);
    }
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPool")
            .field("max_concurrent", &self.inner.config.max_concurrent)
            .field("stats", &self.stats())
            .finish()
    }
}

struct QueueSlot<'a>(&'a AtomicUsize);

impl<'a> QueueSlot<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        QueueSlot(counter)
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        lock(&self.idle)
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    fn note_wait(&self, waited: Duration) {
        let mut c = self.lock_counters();
        c.waits += 1;
        c.total_wait += waited;
    }

    fn refuse(&self, message: String) -> Error {
        let mut c = self.lock_counters();
        c.rejected += 1;
        c.failed += 1;
        Error::new(ErrorKind::PoolBusy, message)
    }

    /// The idle process that fits `wanted` best (hot, then spare, then reset), if any
    /// is alive. Idle processes found dead are stopped (their slots come back once
    /// they are reaped), so a run never gets one and waits no maintenance tick for
    /// their slots.
    fn take_idle(&self, wanted: &Wanted) -> Option<Idle> {
        let (found, dead) = {
            let mut idle = self.lock_idle();
            let mut alive: Vec<bool> = idle.iter().map(|i| !i.session.link.has_exited()).collect();
            let at = policy::best_fit(idle.iter().zip(&alive).map(|(i, a)| (&i.kept, *a)), wanted);
            let found = at.map(|at| {
                alive.remove(at);
                idle.remove(at)
            });
            let mut dead = Vec::new();
            for at in (0..idle.len()).rev() {
                if !alive[at] {
                    dead.push(idle.remove(at));
                }
            }
            (found, dead)
        };
        for idle in dead {
            tracing::debug!(kept = ?idle.kept, "an idle process died; stopping it");
            retire(idle);
        }
        found
    }

    /// Stops one idle process that `wanted` cannot use, to free its slot: a spare of
    /// another profile first, then a reused process, then the least recently used hot
    /// conversation. Returns whether one was stopped.
    fn retire_one_idle(&self, wanted: Option<&Wanted>) -> bool {
        let victim = {
            let mut idle = self.lock_idle();
            let at = policy::victim(idle.iter().map(|i| (&i.kept, i.since)), wanted);
            at.map(|at| idle.remove(at))
        };
        match victim {
            Some(idle) => {
                retire(idle);
                true
            }
            None => false,
        }
    }

    /// A replacement for a taken spare starts `refill_delay` from now, not sooner.
    fn delay_refill(self: &Arc<Self>, kept: &Kept) {
        let Kept::Spare(key) = kept else { return };
        let at = Instant::now() + self.config.refill_delay;
        for profile in &self.profiles {
            let matches = lock(&profile.prepared)
                .as_ref()
                .is_some_and(|(_, plan)| plan.as_ref().is_some_and(|p| &p.key == key));
            if matches {
                *lock(&profile.not_before) = Some(at);
            }
        }
        let pool = Arc::downgrade(self);
        let delay = self.config.refill_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(pool) = pool.upgrade() {
                pool.maintain.notify_one();
            }
        });
    }

    /// Keeps an idle process, within `max_hot` for hot ones (the least recently used
    /// beyond it is stopped).
    fn keep(self: &Arc<Self>, idle: Idle) {
        if self.shutdown.is_cancelled() {
            retire(idle);
            return;
        }
        let evicted = {
            let mut list = self.lock_idle();
            list.push(idle);
            let mut evicted = Vec::new();
            while let Some(at) =
                policy::over_hot_limit(list.iter().map(|i| (&i.kept, i.since)), self.config.max_hot)
            {
                evicted.push(list.remove(at));
            }
            evicted
        };
        for idle in evicted {
            retire(idle);
        }
        self.slot_free.notify_waiters();
    }

    /// Stops idle processes that are too old, idle too long, or dead.
    fn expire(&self) {
        let max_age = self.config.max_process_age;
        let hot_idle = self.config.hot_idle_timeout;
        let expired: Vec<Idle> = {
            let mut idle = self.lock_idle();
            let now = Instant::now();
            let (expired, keep): (Vec<Idle>, Vec<Idle>) = idle.drain(..).partition(|i| {
                policy::expired(
                    &i.kept,
                    i.born,
                    i.since,
                    !i.session.link.has_exited(),
                    now,
                    max_age,
                    hot_idle,
                )
            });
            *idle = keep;
            expired
        };
        for idle in expired {
            retire(idle);
        }
    }
}

/// Which idle process a run takes, which one makes room, which ones expire: the
/// pool's decisions, apart from the processes themselves (unit-tested on fakes).
mod policy {
    use std::time::{Duration, Instant};

    use super::{Kept, Wanted};

    /// The idle process `wanted` fits best among `(kept, alive)` entries: the
    /// conversation's own hot process, then a spare, then a reset process.
    pub(super) fn best_fit<'a>(
        entries: impl Iterator<Item = (&'a Kept, bool)>,
        wanted: &Wanted,
    ) -> Option<usize> {
        let rank = |k: &Kept| match k {
            Kept::Hot { .. } => 0,
            Kept::Spare(_) => 1,
            Kept::Reset(_) => 2,
        };
        entries
            .enumerate()
            .filter(|(_, (kept, alive))| *alive && wanted.fits(kept))
            .min_by_key(|(_, (kept, _))| rank(kept))
            .map(|(at, _)| at)
    }

    /// The idle process to stop for a run that needs a slot, among `(kept, idle
    /// since)` entries: never one `wanted` could use; a spare first (cheap to replace),
    /// then a reset process, then a hot conversation (its next turn would start cold);
    /// the longest idle first within each.
    pub(super) fn victim<'a>(
        entries: impl Iterator<Item = (&'a Kept, Instant)>,
        wanted: Option<&Wanted>,
    ) -> Option<usize> {
        let rank = |k: &Kept| match k {
            Kept::Spare(_) => 0,
            Kept::Reset(_) => 1,
            Kept::Hot { .. } => 2,
        };
        entries
            .enumerate()
            .filter(|(_, (kept, _))| wanted.is_none_or(|w| !w.fits(kept)))
            .min_by_key(|(_, (kept, since))| (rank(kept), *since))
            .map(|(at, _)| at)
    }

    /// The hot conversation to stop when more than `max_hot` are kept: the least
    /// recently used.
    pub(super) fn over_hot_limit<'a>(
        entries: impl Iterator<Item = (&'a Kept, Instant)> + Clone,
        max_hot: usize,
    ) -> Option<usize> {
        let hot = |k: &Kept| matches!(k, Kept::Hot { .. });
        if entries.clone().filter(|(k, _)| hot(k)).count() <= max_hot {
            return None;
        }
        entries
            .enumerate()
            .filter(|(_, (k, _))| hot(k))
            .min_by_key(|(_, (_, since))| *since)
            .map(|(at, _)| at)
    }

    /// Whether an idle process is done: dead, a hot conversation idle for
    /// `hot_idle`, or a spare or reset process older than `max_age`.
    pub(super) fn expired(
        kept: &Kept,
        born: Instant,
        since: Instant,
        alive: bool,
        now: Instant,
        max_age: Duration,
        hot_idle: Duration,
    ) -> bool {
        !alive
            || match kept {
                Kept::Hot { .. } => now.duration_since(since) >= hot_idle,
                _ => now.duration_since(born) >= max_age,
            }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn hot(session: &str) -> Kept {
            Kept::Hot {
                session: session.into(),
                key: "k".into(),
            }
        }

        fn wanted(resume: Option<&str>, spare: Option<&str>, reset: Option<&str>) -> Wanted {
            Wanted {
                resume: resume.map(Into::into),
                hot_key: "k".into(),
                spare: spare.map(Into::into),
                reset: reset.map(Into::into),
            }
        }

        #[test]
        fn a_run_takes_its_conversation_then_a_spare_then_a_reset_process() {
            let idle = [
                Kept::Reset("fp".into()),
                Kept::Spare("s".into()),
                hot("other"),
                hot("mine"),
            ];
            fn alive(entries: &[Kept]) -> Vec<(&Kept, bool)> {
                entries.iter().map(|k| (k, true)).collect()
            }
            let all = wanted(Some("mine"), Some("s"), Some("fp"));
            assert_eq!(best_fit(alive(&idle).into_iter(), &all), Some(3));
            let no_resume = wanted(None, Some("s"), Some("fp"));
            assert_eq!(best_fit(alive(&idle).into_iter(), &no_resume), Some(1));
            let reset_only = wanted(None, Some("other key"), Some("fp"));
            assert_eq!(best_fit(alive(&idle).into_iter(), &reset_only), Some(0));
            // Another conversation's hot process, or another key, never fits.
            let nothing = wanted(Some("nobody"), Some("x"), None);
            assert_eq!(best_fit(alive(&idle).into_iter(), &nothing), None);
            // A hot process under another hot key (other options) does not fit either.
            let other_key = Wanted {
                hot_key: "other".into(),
                ..wanted(Some("mine"), None, None)
            };
            assert_eq!(best_fit(alive(&idle).into_iter(), &other_key), None);
            // A dead process is never taken.
            let dead = [(&idle[3], false), (&idle[1], true)];
            assert_eq!(best_fit(dead.into_iter(), &all), Some(1));
        }

        #[test]
        fn room_is_made_by_stopping_spares_first_and_hot_conversations_last() {
            let t0 = Instant::now();
            let at = |s: u64| t0 + Duration::from_secs(s);
            let idle = [
                (hot("a"), at(1)),
                (Kept::Reset("fp".into()), at(5)),
                (Kept::Spare("s2".into()), at(9)),
                (Kept::Spare("s1".into()), at(3)),
            ];
            let entries = || idle.iter().map(|(k, t)| (k, *t));
            // The oldest spare goes first, whatever the run is.
            assert_eq!(victim(entries(), None), Some(3));
            // Never what the run itself could take.
            let wants_s1 = wanted(None, Some("s1"), None);
            assert_eq!(victim(entries(), Some(&wants_s1)), Some(2));
            let spares_and_reset = wanted(Some("a"), Some("s1"), Some("fp"));
            let only_hot_left = [(hot("b"), at(2)), (idle[0].0.clone(), at(1))];
            assert_eq!(
                victim(
                    only_hot_left.iter().map(|(k, t)| (k, *t)),
                    Some(&spares_and_reset)
                ),
                Some(0),
                "the hot conversation the run resumes is kept"
            );
        }

        #[test]
        fn beyond_max_hot_the_least_recently_used_conversation_goes() {
            let t0 = Instant::now();
            let idle = [
                (hot("a"), t0 + Duration::from_secs(5)),
                (Kept::Spare("s".into()), t0),
                (hot("b"), t0 + Duration::from_secs(2)),
                (hot("c"), t0 + Duration::from_secs(9)),
            ];
            let entries = || idle.iter().map(|(k, t)| (k, *t));
            assert_eq!(over_hot_limit(entries(), 3), None);
            assert_eq!(over_hot_limit(entries(), 2), Some(2));
            assert_eq!(over_hot_limit(entries(), 0), Some(2));
        }

        #[test]
        fn spares_age_out_and_hot_conversations_idle_out() {
            let t0 = Instant::now();
            let later = t0 + Duration::from_secs(100);
            let (age, idle) = (Duration::from_secs(60), Duration::from_secs(30));
            let spare = Kept::Spare("s".into());
            assert!(
                expired(&spare, t0, later, true, later, age, idle),
                "old spare"
            );
            assert!(!expired(&spare, later, later, true, later, age, idle));
            let conversation = hot("a");
            // Born long ago, but used recently: kept.
            assert!(!expired(
                &conversation,
                t0,
                later,
                true,
                later + Duration::from_secs(10),
                age,
                idle
            ));
            assert!(expired(
                &conversation,
                t0,
                later,
                true,
                later + idle,
                age,
                idle
            ));
            assert!(
                expired(&spare, later, later, false, later, age, idle),
                "dead"
            );
        }
    }
}

/// Kills an idle process and gives its slot back once it has exited.
fn retire(idle: Idle) {
    let Idle { session, lease, .. } = idle;
    let process = session.link.process().cloned();
    drop(session);
    lease.release_after_exit(process);
}

/// The start of a run on an idle process: bind it (claim a spare, rebind a hot or reset
/// process's callbacks), then write the prompt.
#[allow(clippy::too_many_arguments)]
fn warm_start(
    pool: Weak<Inner>,
    session: CliSession,
    served: Served,
    prompt: Prompt,
    options: ClaudeCodeOptions,
    prepared: Prepared,
    slot: ProcessSlot,
    cell: ServedCell,
) -> BoxFuture<'static, Result<CliSession>> {
    Box::pin(async move {
        match served {
            Served::Claimed => {
                let Some(inner) = pool.upgrade() else {
                    return Err(Error::new(ErrorKind::PoolBusy, "the pool is shut down"));
                };
                // The prompt goes out with the claim (see `CliSession::claim`).
                claim_or_cold(
                    &inner,
                    session,
                    &options,
                    &prepared,
                    &slot,
                    false,
                    Some(&prompt),
                    Some(&cell),
                )
                .await
            }
            _ => {
                session.adopt(&options);
                session.link.send_prompt(&prompt).await?;
                Ok(session)
            }
        }
    })
}

/// Claims `spare` for a run of `options` and writes `prompt` (if any) with the claim;
/// when the CLI refuses (or the spare died), the reason is counted, the spare is
/// killed, and the run starts cold in the spare's slot (the prompt written there).
#[allow(clippy::too_many_arguments)]
async fn claim_or_cold(
    inner: &Arc<Inner>,
    spare: CliSession,
    options: &ClaudeCodeOptions,
    prepared: &Prepared,
    slot: &ProcessSlot,
    include_initialize: bool,
    prompt: Option<&Prompt>,
    served: Option<&ServedCell>,
) -> Result<CliSession> {
    let reason = match &prepared.plan.spare {
        Some(plan) => match spare.claim(options, plan, include_initialize, prompt).await {
            Ok(()) => return Ok(spare),
            Err(err) => claim_refusal(&err, &spare),
        },
        None => "no_spare_plan".to_owned(),
    };
    tracing::debug!(reason, "a spare could not be claimed; starting cold");
    if let Some(served) = served {
        *lock(served) = Served::Cold;
    }
    {
        let mut c = inner.lock_counters();
        *c.claim_fallbacks.entry(reason).or_default() += 1;
        c.claimed = c.claimed.saturating_sub(1);
        c.cold_starts += 1;
        c.started += 1;
    }
    // The spare's slot serves the cold start: wait until the spare has exited.
    if let Some(process) = spare.link.process().cloned() {
        drop(spare);
        process.wait().await;
    }
    *lock(slot) = None;
    let session = CliSession::connect_prepared(prepared, options, slot).await?;
    if let Some(prompt) = prompt {
        session.link.send_prompt(prompt).await?;
    }
    Ok(session)
}

/// The CLI's reason token for a refused claim (`env_key_not_claimable`, ...).
fn claim_refusal(err: &Error, spare: &CliSession) -> String {
    if spare.link.has_exited() || err.is_connection() {
        return "spare_exited".to_owned();
    }
    if err.is_timeout() {
        return "timeout".to_owned();
    }
    let text = err.to_string();
    let after = text
        .split_once("request: ")
        .map_or(text.as_str(), |(_, rest)| rest);
    let token: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if token.is_empty() {
        "refused".to_owned()
    } else {
        token
    }
}

/// The background task: keeps spares at their targets, expires idle processes.
async fn maintain(pool: Weak<Inner>, shutdown: CancellationToken) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        inner.expire();
        let mut failed = false;
        let mut next_due: Option<Instant> = None;
        for profile in &inner.profiles {
            if let Err(err) = refill(&inner, profile, &mut next_due).await {
                tracing::warn!(%err, "could not start a spare CLI process");
                failed = true;
            }
        }
        let wake = Arc::clone(&inner.maintain);
        let hot_tick = (inner.config.hot_idle_timeout / 4).max(Duration::from_millis(50));
        // Hold no strong reference while waiting: the pool must be able to drop.
        drop(inner);
        let mut pause = if failed {
            REFILL_BACKOFF
        } else {
            MAINTENANCE_TICK.min(hot_tick)
        };
        if let Some(due) = next_due {
            pause = pause.min(due.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Starts spares for `profile` while it has fewer than its target, slots are free,
/// nobody waits for one, and its refill delay has passed.
async fn refill(
    inner: &Arc<Inner>,
    profile: &Profile,
    next_due: &mut Option<Instant>,
) -> Result<()> {
    if lock(&profile.prepared).is_none() {
        let prepared = process::prepare(&profile.options).await?;
        let plan = prepared.plan.spare.clone();
        *lock(&profile.prepared) = Some((prepared, plan));
    }
    let Some((prepared, plan)) = lock(&profile.prepared).clone() else {
        return Ok(());
    };
    let kept = match &plan {
        Some(plan) => Kept::Spare(plan.key.clone()),
        // An older CLI cannot park: keep ready processes for exactly these options.
        None => Kept::Reset(profile.options.fingerprint()),
    };
    loop {
        let not_before = *lock(&profile.not_before);
        if let Some(at) = not_before
            && Instant::now() < at
        {
            *next_due = Some(next_due.map_or(at, |d| d.min(at)));
            return Ok(());
        }
        let have = inner.lock_idle().iter().filter(|i| i.kept == kept).count()
            + profile.starting.load(Ordering::SeqCst);
        if have >= profile.count || inner.queued.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() else {
            return Ok(());
        };
        let lease = Lease::new(permit, inner);
        profile.starting.fetch_add(1, Ordering::SeqCst);
        let slot = ProcessSlot::default();
        let started = match &plan {
            Some(plan) => CliSession::park(&prepared, plan, &profile.options, &slot).await,
            None => CliSession::connect_prepared(&prepared, &profile.options, &slot).await,
        };
        profile.starting.fetch_sub(1, Ordering::SeqCst);
        if lock(&slot).is_some() {
            inner.lock_counters().started += 1;
        }
        match started {
            Ok(session) => {
                let born = session.link.born();
                inner.keep(Idle {
                    kept: kept.clone(),
                    session,
                    lease,
                    born,
                    since: Instant::now(),
                });
            }
            Err(err) => {
                lease.release_after_exit(lock(&slot).take());
                return Err(err);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Running,
    Succeeded,
    Failed,
}

/// What becomes of a run's process when the run ends.
struct After {
    keep_hot: bool,
    reuse: bool,
    fingerprint: String,
    hot_key: String,
}

/// A run in a [`QueryPool`]: a stream of messages like [`Query`], holding its process
/// slot until it ends.
#[must_use = "a PooledQuery does nothing unless polled"]
pub struct PooledQuery {
    query: Option<Query>,
    lease: Option<Lease>,
    pool: Weak<Inner>,
    after: After,
    served: ServedCell,
    waited: Duration,
    outcome: Outcome,
}

impl PooledQuery {
    /// Collects every message. See [`Query::collect_all`].
    ///
    /// # Errors
    ///
    /// The first error of the run.
    pub async fn collect_all(self) -> Result<Vec<Message>> {
        collect_ok(self).await
    }

    /// Collects every message, and the error that ended the run, if any.
    pub async fn collect_messages(self) -> (Vec<Message>, Option<Error>) {
        collect_stream(self).await
    }

    /// How the run was served: a hot conversation, a claimed spare, a reused process, or
    /// a cold start.
    pub fn served(&self) -> Served {
        *lock(&self.served)
    }

    /// Whether the run was served without a cold start.
    pub fn was_warm(&self) -> bool {
        self.served() != Served::Cold
    }

    /// How long the run waited for a slot or an idle process.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The CLI's process id, once known.
    pub fn pid(&self) -> Option<u32> {
        self.query.as_ref().and_then(Query::pid)
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.outcome != Outcome::Running {
            return;
        }
        self.outcome = outcome;
        if let Some(pool) = self.pool.upgrade() {
            let mut c = pool.lock_counters();
            match outcome {
                Outcome::Succeeded => c.completed += 1,
                _ => c.failed += 1,
            }
        }
    }
}

impl Stream for PooledQuery {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(query) = this.query.as_mut() else {
            return Poll::Ready(None);
        };
        let item = Pin::new(&mut *query).poll_next(cx);
        match &item {
            // A result decides: readers often stop there without polling to the end.
            Poll::Ready(Some(Ok(Message::Result(_)))) => {
                let outcome = match query.result_failed() {
                    Some(true) => Outcome::Failed,
                    _ => Outcome::Succeeded,
                };
                this.finish(outcome);
            }
            Poll::Ready(Some(Err(_))) => this.finish(Outcome::Failed),
            Poll::Ready(None) => this.finish(Outcome::Succeeded),
            _ => {}
        }
        item
    }
}

impl Drop for PooledQuery {
    fn drop(&mut self) {
        let Some(mut query) = self.query.take() else {
            return;
        };
        let Some(lease) = self.lease.take() else {
            return;
        };
        if self.outcome == Outcome::Running {
            self.finish(Outcome::Failed);
        }
        let pool = self.pool.upgrade();
        // A run that ended with a result in keep-alive mode hands its process back.
        if let (Some(pool), Some(session)) = (pool, query.take_idle()) {
            let lease = lease.deactivate();
            let session_id = session.link.session_id();
            if self.after.keep_hot
                && let Some(session_id) = session_id
            {
                let key = std::mem::take(&mut self.after.hot_key);
                let born = session.link.born();
                pool.keep(Idle {
                    kept: Kept::Hot {
                        session: session_id,
                        key,
                    },
                    session,
                    lease,
                    born,
                    since: Instant::now(),
                });
                return;
            }
            if self.after.reuse
                && let Ok(handle) = tokio::runtime::Handle::try_current()
            {
                let fingerprint = std::mem::take(&mut self.after.fingerprint);
                handle.spawn(async move {
                    match session.reset().await {
                        Ok(session) => {
                            pool.lock_counters().reused += 1;
                            let born = session.link.born();
                            pool.keep(Idle {
                                kept: Kept::Reset(fingerprint),
                                session,
                                lease,
                                born,
                                since: Instant::now(),
                            });
                        }
                        Err((err, session)) => {
                            tracing::debug!(%err, "a pooled process could not be reset; stopping it");
                            let process = session.link.process().cloned();
                            drop(session);
                            lease.release_after_exit(process);
                        }
                    }
                });
                return;
            }
            let process = session.link.process().cloned();
            drop(session);
            lease.release_after_exit(process);
            return;
        }
        let process = query.process();
        drop(query);
        lease.release_after_exit(process);
    }
}

impl std::fmt::Debug for PooledQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledQuery")
            .field("pid", &self.pid())
            .field("served", &self.served())
            .field("waited", &self.waited)
            .finish()
    }
}

/// A process slot held without a process of the pool's own; see [`QueryPool::reserve`].
#[must_use = "the slot is given back when this drops"]
#[derive(Debug)]
pub struct PoolSlot {
    lease: Option<Lease>,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release_after_exit(None);
        }
    }
}
