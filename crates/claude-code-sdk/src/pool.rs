//! [`QueryPool`]: a bound on CLI processes, a bounded wait queue, and pre-warmed
//! processes that answer without the cold start.
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
//! let messages = pool.query("Explain this error message", options).await?.collect_all().await?;
//! println!("{:?}", pool.stats());
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! - At most `max_concurrent` CLI processes started by the pool are alive at once,
//!   warm ones included: a process's slot is given back only after it has exited.
//!   When a query needs a slot that an idle warm process of another profile holds,
//!   that warm process is stopped to make room.
//! - At most `max_queued` queries wait for a slot; more are refused at once with a
//!   [`PoolBusy`](crate::ErrorKind::PoolBusy) error, and so is a query that waited
//!   `queue_timeout`.
//!
//! # Pre-warming
//!
//! [`PoolConfig::prewarm`] keeps `n` processes started and initialized for an options
//! profile (see [`ClaudeCodeOptions::fingerprint`]): a query with those options only
//! writes its prompt. A query whose options match no warm process starts cold. Warm
//! processes are replaced in the background when used, recycled after
//! `max_process_age`, and all killed when the last clone of the pool drops. A new warm
//! process is not started while queries wait for a slot.
//!
//! # Reusing processes
//!
//! By default a process serves one query. With `reuse_processes: true`, a process whose
//! query ended with a result is reset and kept warm for the next query of the same
//! profile: the SDK sends `/clear`, which makes the CLI start a new conversation (new
//! session id, no earlier turns in the next model request), and waits for it before the
//! process is offered again. Limits of reuse: state outside the conversation survives
//! the reset (files the tools wrote, the process environment, MCP server state; the
//! commands a query's tools left running are killed before the reset), and a query that
//! ended in a fatal error, a timeout or an interrupt is never reused. Processes whose options name a conversation (`resume`,
//! `continue_conversation`, `session_id`) are never reset or reused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::control::Event;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::query::{
    Connected, ProcessSlot, Prompt, Query, collect_ok, collect_stream, connect_for, query,
};
use crate::util::lock;
use crate::wire;

/// How long a reset (`/clear`) of a reused process may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the refill task waits after a failed warm start.
const REFILL_BACKOFF: Duration = Duration::from_secs(2);

/// An options profile to keep warm processes for (see [`PoolConfig::prewarm`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrewarmProfile {
    /// The options the warm processes are started with.
    pub options: ClaudeCodeOptions,
    /// How many to keep ready.
    pub count: usize,
}

/// How a [`QueryPool`] behaves. `PoolConfig::default()` allows 4 processes, 64 queued
/// queries, a 30 s queue timeout, warm processes up to 10 minutes old, no pre-warming
/// and no reuse.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Processes alive at once, warm ones included (at least 1).
    pub max_concurrent: usize,
    /// Queries that may wait for a slot.
    pub max_queued: usize,
    /// How long a query may wait for a slot.
    pub queue_timeout: Duration,
    /// Warm processes older than this are replaced.
    pub max_process_age: Duration,
    /// Keep finished processes for the next query of the same profile, after a reset.
    pub reuse_processes: bool,
    /// How long after a warm process is taken its replacement starts. A starting CLI
    /// burns about a CPU-second; starting it at once slows the query that just took
    /// the warm process on a small machine (see BENCHMARKS.md).
    pub refill_delay: Duration,
    /// Profiles to keep warm processes for.
    pub prewarm: Vec<PrewarmProfile>,
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
        }
    }
}

impl PoolConfig {
    /// Keeps `count` processes warm for `options`.
    #[must_use]
    pub fn prewarm(mut self, options: ClaudeCodeOptions, count: usize) -> Self {
        self.prewarm.push(PrewarmProfile { options, count });
        self
    }

    /// Lets a finished process serve the next query of its profile (see the module docs).
    #[must_use]
    pub fn reuse_processes(mut self, reuse: bool) -> Self {
        self.reuse_processes = reuse;
        self
    }
}

/// Live figures of a pool.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Queries running now, and slots held with [`QueryPool::reserve`].
    pub active: usize,
    /// Queries waiting for a slot now.
    pub queued: usize,
    /// Idle warm processes now.
    pub warm: usize,
    /// Queries that ended without error.
    pub completed: u64,
    /// Queries that ended with an error, and refused queries and reservations.
    pub failed: u64,
    /// Queries refused with `PoolBusy`.
    pub rejected: u64,
    /// Queries served by a warm process.
    pub warm_hits: u64,
    /// Processes the pool started (warm and cold).
    pub started: u64,
    /// Processes reused after a reset.
    pub reused: u64,
    /// Mean time queries and reservations waited for a slot or a warm process.
    pub mean_wait: Duration,
}

#[derive(Default)]
struct Counters {
    completed: u64,
    failed: u64,
    rejected: u64,
    warm_hits: u64,
    started: u64,
    reused: u64,
    waits: u64,
    total_wait: Duration,
}

struct Warm {
    key: String,
    connected: Connected,
    permit: OwnedSemaphorePermit,
    born: Instant,
}

struct Inner {
    config: PoolConfig,
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    active: AtomicUsize,
    warm: Mutex<Vec<Warm>>,
    starting: Mutex<HashMap<String, usize>>,
    profiles: Vec<(String, PrewarmProfile)>,
    counters: Mutex<Counters>,
    /// Wakes the refill task.
    refill: Arc<Notify>,
    /// Wakes queries waiting for a warm process or a slot.
    warm_ready: Notify,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Dropping the warm processes kills their process groups.
    }
}

/// A pool of CLI processes. Cheap to clone; clones share the pool. See the [module
/// docs](crate::pool).
#[derive(Clone)]
pub struct QueryPool {
    inner: Arc<Inner>,
}

impl QueryPool {
    /// Creates the pool and, when profiles are configured, starts warming processes in
    /// the background (this needs a Tokio runtime).
    pub fn new(mut config: PoolConfig) -> QueryPool {
        config.max_concurrent = config.max_concurrent.max(1);
        let profiles: Vec<(String, PrewarmProfile)> = config
            .prewarm
            .iter()
            .filter(|p| p.count > 0)
            .map(|p| (p.options.fingerprint(), p.clone()))
            .collect();
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            queued: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            warm: Mutex::new(Vec::new()),
            starting: Mutex::new(HashMap::new()),
            profiles,
            counters: Mutex::new(Counters::default()),
            refill: Arc::new(Notify::new()),
            warm_ready: Notify::new(),
            shutdown: CancellationToken::new(),
        });
        if !inner.profiles.is_empty() || inner.config.reuse_processes {
            tokio::spawn(maintain(Arc::downgrade(&inner), inner.shutdown.clone()));
        }
        QueryPool { inner }
    }

    /// Runs a prompt on a warm process of the same options profile if one is idle,
    /// otherwise on a new process once a slot is free.
    ///
    /// # Errors
    ///
    /// [`PoolBusy`](ErrorKind::PoolBusy) when the queue is full or the wait exceeds
    /// `queue_timeout`. Errors of the run itself come from the returned stream.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits leaves the queue; nothing is started.
    pub async fn query(
        &self,
        prompt: impl Into<Prompt>,
        options: ClaudeCodeOptions,
    ) -> Result<PooledQuery> {
        let inner = &self.inner;
        let prompt = prompt.into();
        let key = options.fingerprint();
        let (permit, warm, waited) = self.acquire(Some(&key)).await?;
        let was_warm = warm.is_some();
        if !was_warm {
            inner.lock_counters().started += 1;
        }
        let options_snapshot = options.clone();
        let warm_pid = warm
            .as_ref()
            .and_then(|c| c.session.process().map(|p| p.pid()));
        let mut run = match warm {
            Some(connected) => Query::on_connected(connected, prompt, &options),
            None => query(prompt, options),
        };
        if inner.config.reuse_processes && reusable(&options_snapshot) {
            run = run.keep_alive();
        }
        inner.active.fetch_add(1, Ordering::SeqCst);
        Ok(PooledQuery {
            query: Some(run),
            permit: Some(permit),
            pool: Arc::downgrade(inner),
            key,
            was_warm,
            warm_pid,
            waited,
            outcome: Outcome::Running,
        })
    }

    /// Waits for a process slot without starting anything, under the same queue bound
    /// and timeout as [`query`](QueryPool::query): for work that starts its own CLI
    /// (a [`ClaudeClient`](crate::ClaudeClient) turn, say) but must count against the
    /// pool. The slot is held until the [`PoolSlot`] drops; drop it only after the
    /// process you started has exited.
    ///
    /// # Errors
    ///
    /// [`PoolBusy`](ErrorKind::PoolBusy) as for `query`.
    pub async fn reserve(&self) -> Result<PoolSlot> {
        let (permit, warm, _) = self.acquire(None).await?;
        debug_assert!(warm.is_none());
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        Ok(PoolSlot {
            permit: Some(permit),
            pool: Arc::downgrade(&self.inner),
        })
    }

    /// A slot: a warm process of profile `key` if one is idle, else a permit for a new
    /// process (waiting in the bounded queue).
    async fn acquire(
        &self,
        key: Option<&str>,
    ) -> Result<(OwnedSemaphorePermit, Option<Connected>, Duration)> {
        let inner = &self.inner;
        let started_waiting = Instant::now();
        let deadline = tokio::time::Instant::now() + inner.config.queue_timeout;
        let mut queued: Option<QueueSlot<'_>> = None;
        let mut retired = false;
        let (permit, warm) = loop {
            // Listen before looking, so a warm process offered in between wakes us.
            let warm_ready = inner.warm_ready.notified();
            tokio::pin!(warm_ready);
            warm_ready.as_mut().enable();
            if let Some(warm) = key.and_then(|key| inner.take_warm(key)) {
                inner.schedule_refill();
                break (warm.permit, Some(warm.connected));
            }
            if let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() {
                break (permit, None);
            }
            // Make room by stopping one idle warm process of another profile (one per
            // query: its slot comes back once it has exited).
            if !retired {
                retired = inner.retire_one_idle(key.unwrap_or_default());
            }
            if queued.is_none() {
                if inner.queued.load(Ordering::SeqCst) >= inner.config.max_queued {
                    return Err(inner.refuse(format!(
                        "the pool's queue is full ({} queries already wait for a slot; max_concurrent is {})",
                        inner.config.max_queued, inner.config.max_concurrent
                    )));
                }
                queued = Some(QueueSlot::enter(&inner.queued));
            }
            tokio::select! {
                permit = Arc::clone(&inner.permits).acquire_owned() => {
                    match permit {
                        Ok(permit) => break (permit, None),
                        Err(_) => return Err(inner.refuse("the pool is shut down".to_owned())),
                    }
                }
                () = warm_ready => continue,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(inner.refuse(format!(
                        "no process slot became free within the queue timeout of {:?}",
                        inner.config.queue_timeout
                    )));
                }
            }
        };
        drop(queued);
        let waited = started_waiting.elapsed();
        let mut c = inner.lock_counters();
        c.waits += 1;
        c.total_wait += waited;
        if warm.is_some() {
            c.warm_hits += 1;
        }
        Ok((permit, warm, waited))
    }

    /// The pool's live figures.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let c = inner.lock_counters();
        PoolStats {
            active: inner.active.load(Ordering::SeqCst),
            queued: inner.queued.load(Ordering::SeqCst),
            warm: inner.lock_warm().len(),
            completed: c.completed,
            failed: c.failed,
            rejected: c.rejected,
            warm_hits: c.warm_hits,
            started: c.started,
            reused: c.reused,
            mean_wait: if c.waits == 0 {
                Duration::ZERO
            } else {
                c.total_wait / c.waits as u32
            },
        }
    }

    /// The process ids of the idle warm processes.
    pub fn warm_pids(&self) -> Vec<u32> {
        self.inner
            .lock_warm()
            .iter()
            .filter_map(|w| w.connected.session.process().map(|p| p.pid()))
            .collect()
    }

    /// Waits until at least `count` warm processes are idle, or `timeout` passes;
    /// returns whether they are.
    pub async fn wait_warm(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.warm_ready.notified();
            if self.inner.lock_warm().len() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.lock_warm().len() >= count;
            }
        }
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
    fn lock_warm(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        lock(&self.warm)
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        lock(&self.counters)
    }

    fn refuse(&self, message: String) -> Error {
        let mut c = self.lock_counters();
        c.rejected += 1;
        c.failed += 1;
        Error::new(ErrorKind::PoolBusy, message)
    }

    fn take_warm(&self, key: &str) -> Option<Warm> {
        let mut warm = self.lock_warm();
        let at = warm.iter().position(|w| {
            w.key == key
                && w.connected
                    .session
                    .process()
                    .is_some_and(|p| p.exited().is_none())
        })?;
        Some(warm.remove(at))
    }

    /// Stops the oldest idle warm process of another profile, to free its slot for a
    /// query that has none. Returns whether one was stopped.
    fn retire_one_idle(&self, wanted: &str) -> bool {
        let victim = {
            let mut warm = self.lock_warm();
            let oldest = warm
                .iter()
                .enumerate()
                .filter(|(_, w)| w.key != wanted)
                .min_by_key(|(_, w)| w.born)
                .map(|(i, _)| i);
            oldest.map(|i| warm.remove(i))
        };
        match victim {
            Some(w) => {
                retire(w.connected, w.permit, Some(Arc::clone(&self.refill)));
                true
            }
            None => false,
        }
    }
}

/// Whether a process of these options may be reset with `/clear`: not when the
/// options name a conversation (`resume`, `continue_conversation`, `session_id`),
/// which a reset would throw away.
fn reusable(options: &ClaudeCodeOptions) -> bool {
    options.resume.is_none() && !options.continue_conversation && options.session_id.is_none()
}

/// A process slot held without a process of the pool's own; see [`QueryPool::reserve`].
#[must_use = "the slot is given back when this drops"]
#[derive(Debug)]
pub struct PoolSlot {
    permit: Option<OwnedSemaphorePermit>,
    pool: Weak<Inner>,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        let pool = self.pool.upgrade();
        if let Some(pool) = &pool {
            pool.active.fetch_sub(1, Ordering::SeqCst);
        }
        let wake = pool.map(|pool| Arc::clone(&pool.refill));
        if let Some(permit) = self.permit.take() {
            release_after_exit(None, permit, wake);
        }
    }
}

/// Kills a process and gives its slot back once it has exited.
fn retire(connected: Connected, permit: OwnedSemaphorePermit, wake: Option<Arc<Notify>>) {
    let process = connected.session.process().cloned();
    drop(connected);
    release_after_exit(process, permit, wake);
}

/// Kills a process (if any) and gives its slot back once it has exited; then wakes the
/// refill task (`wake`), which may start a warm process in the freed slot.
fn release_after_exit(
    process: Option<Arc<crate::transport::subprocess::ProcessGuard>>,
    permit: OwnedSemaphorePermit,
    wake: Option<Arc<Notify>>,
) {
    let release = move || {
        drop(permit);
        if let Some(wake) = wake {
            wake.notify_one();
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

/// The background task: keeps warm processes at their targets, recycles old ones.
async fn maintain(pool: Weak<Inner>, shutdown: CancellationToken) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        inner.recycle_old();
        let mut failed = false;
        for (key, profile) in &inner.profiles {
            loop {
                let have = inner.lock_warm().iter().filter(|w| &w.key == key).count()
                    + lock(&inner.starting).get(key).copied().unwrap_or(0);
                if have >= profile.count || inner.queued.load(Ordering::SeqCst) > 0 {
                    break;
                }
                let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() else {
                    break;
                };
                *lock(&inner.starting).entry(key.clone()).or_default() += 1;
                let slot = ProcessSlot::default();
                let started = match connect_for(&profile.options, &slot).await {
                    // A first `/clear` runs the CLI's start-of-conversation work (no
                    // model request), so the first real prompt is as fast as a later one.
                    Ok(connected) if reusable(&profile.options) => {
                        reset(connected).await.map_err(|(err, _)| err)
                    }
                    other => other,
                };
                if lock(&slot).is_some() {
                    inner.lock_counters().started += 1;
                }
                *lock(&inner.starting).entry(key.clone()).or_default() -= 1;
                match started {
                    Ok(connected) => {
                        inner.lock_warm().push(Warm {
                            key: key.clone(),
                            born: connected.born,
                            connected,
                            permit,
                        });
                        inner.warm_ready.notify_waiters();
                    }
                    Err(err) => {
                        tracing::warn!(%err, "could not start a warm CLI process");
                        let process = lock(&slot).take();
                        release_after_exit(process, permit, None);
                        failed = true;
                        break;
                    }
                }
            }
        }
        let refill = Arc::clone(&inner.refill);
        // Hold no strong reference while waiting: the pool must be able to drop.
        drop(inner);
        let pause = if failed {
            REFILL_BACKOFF
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = refill.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

impl Inner {
    /// Wakes the refill task after `refill_delay`.
    fn schedule_refill(self: &Arc<Self>) {
        let delay = self.config.refill_delay;
        if delay.is_zero() {
            self.refill.notify_one();
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(pool) = pool.upgrade() {
                pool.refill.notify_one();
            }
        });
    }

    fn recycle_old(&self) {
        let max_age = self.config.max_process_age;
        let old: Vec<Warm> = {
            let mut warm = self.lock_warm();
            let (old, keep): (Vec<Warm>, Vec<Warm>) = warm.drain(..).partition(|w| {
                w.born.elapsed() > max_age
                    || w.connected
                        .session
                        .process()
                        .is_some_and(|p| p.exited().is_some())
            });
            *warm = keep;
            old
        };
        for w in old {
            retire(w.connected, w.permit, Some(Arc::clone(&self.refill)));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Running,
    Succeeded,
    Failed,
}

/// A query running in a [`QueryPool`]: a stream of messages like [`Query`], holding
/// its process slot until it ends.
#[must_use = "a PooledQuery does nothing unless polled"]
pub struct PooledQuery {
    query: Option<Query>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Weak<Inner>,
    key: String,
    was_warm: bool,
    warm_pid: Option<u32>,
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

    /// Whether a warm process served this query.
    pub fn was_warm(&self) -> bool {
        self.was_warm
    }

    /// How long the query waited for a slot or a warm process.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The CLI's process id: known from the start for a warm process, once the process
    /// has started for a cold one.
    pub fn pid(&self) -> Option<u32> {
        self.query.as_ref().and_then(Query::pid).or(self.warm_pid)
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
            Poll::Ready(Some(Ok(Message::Result(result)))) => {
                let outcome = if query.result_fails(result) {
                    Outcome::Failed
                } else {
                    Outcome::Succeeded
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
        let Some(permit) = self.permit.take() else {
            return;
        };
        let pool = self.pool.upgrade();
        if let Some(pool) = &pool {
            pool.active.fetch_sub(1, Ordering::SeqCst);
        }
        if self.outcome == Outcome::Running {
            self.finish(Outcome::Failed);
        }
        // A finished run in keep-alive mode hands its process back for reuse.
        if let (Some(pool), Some(connected), Ok(handle)) = (
            pool,
            query.take_idle(),
            tokio::runtime::Handle::try_current(),
        ) {
            let key = std::mem::take(&mut self.key);
            handle.spawn(async move {
                match reset(connected).await {
                    Ok(connected) if !pool.shutdown.is_cancelled() => {
                        pool.lock_counters().reused += 1;
                        pool.lock_warm().push(Warm {
                            key,
                            born: connected.born,
                            connected,
                            permit,
                        });
                        pool.warm_ready.notify_waiters();
                    }
                    Ok(connected) => retire(connected, permit, None),
                    Err((err, connected)) => {
                        tracing::debug!(%err, "a pooled process could not be reset; stopping it");
                        retire(connected, permit, Some(Arc::clone(&pool.refill)));
                    }
                }
            });
            return;
        }
        let process = query.process();
        drop(query);
        let wake = self.pool.upgrade().map(|pool| Arc::clone(&pool.refill));
        release_after_exit(process, permit, wake);
    }
}

impl std::fmt::Debug for PooledQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledQuery")
            .field("pid", &self.pid())
            .field("was_warm", &self.was_warm)
            .field("waited", &self.waited)
            .finish()
    }
}

/// Starts a new conversation on a live process: `/clear`, then wait for the CLI to
/// confirm with a result under a new session id.
async fn reset(mut connected: Connected) -> std::result::Result<Connected, (Error, Connected)> {
    let before = connected.session.session_id();
    // What the last query's tools left running (a background server, a watcher) must
    // not live on into the next query.
    if let Some(process) = connected.session.process() {
        process.kill_tool_processes().await;
    }
    let line = wire::user_line(serde_json::Value::String("/clear".into()), "", None);
    if let Err(err) = connected.session.send_line(line).await {
        return Err((err, connected));
    }
    let wait = async {
        let mut reset_seen = false;
        while let Some(event) = connected.events.recv().await {
            match event {
                Event::Message(m) => match *m {
                    Message::Unknown(u) if u.kind.as_deref() == Some("conversation_reset") => {
                        reset_seen = true;
                    }
                    Message::Result(r) if reset_seen && Some(&r.session_id) != before.as_ref() => {
                        return Ok(());
                    }
                    // A result before the reset (say, the CLI reporting on a background
                    // command that was just stopped) belongs to the old conversation.
                    Message::Result(r) => {
                        tracing::debug!(
                            session = r.session_id,
                            "skipping a result while resetting"
                        );
                    }
                    _ => {}
                },
                Event::Fatal(err) => return Err(err),
                Event::Closed(closed) => return Err(closed.premature_exit_error()),
            }
        }
        Err(Error::connection("the CLI went away during the reset"))
    };
    match tokio::time::timeout(RESET_TIMEOUT, wait).await {
        Ok(Ok(())) => Ok(connected),
        Ok(Err(err)) => Err((err, connected)),
        Err(_) => Err((Error::timeout("the reset did not finish"), connected)),
    }
}
