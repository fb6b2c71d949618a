//! [`ConversationManager`]: named conversations that continue exactly.
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeCodeOptions, ConversationManager};
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let manager = ConversationManager::new(ClaudeCodeOptions::default());
//! manager.start_conversation("ticket-42", "Read src/main.rs and explain the bug", "/srv/app").await?;
//! let answer = manager.continue_conversation("ticket-42", "Now fix it").await?;
//! for turn in manager.history("ticket-42").await? {
//!     println!("> {}\n{}", turn.prompt, turn.response);
//! }
//! manager.end("ticket-42").await?;
//! # Ok(()) }
//! ```
//!
//! # Exact continuation
//!
//! A follow-up continues the CLI session itself, so the model sees every earlier turn
//! as it was, tool calls and results included. Pasting a
//! truncated transcript into a new prompt loses all of that.
//!
//! # Where turns run
//!
//! Every turn goes through a [`Runner`]. By default the manager has a
//! [`QueryPool`] of its own (`max_hot` conversations hot, at most `max_hot` processes,
//! at least 1): a conversation's next turn runs on the process of its previous turn
//! while that is hot (only the prompt is written), and resumes the CLI session cold
//! (`--resume`) otherwise, which works across restarts when the store persists. Give it
//! your own runner ([`ConversationManager::with_runner`]) to share one bound with the
//! rest of a program; `max_hot` and `idle_timeout` then belong to that pool.
//!
//! # Limits
//!
//! - One turn at a time per conversation: a second concurrent turn gets a
//!   [`ConversationBusy`](crate::ErrorKind::ConversationBusy) error instead of
//!   interleaved output. Unknown ids get [`NotFound`](crate::ErrorKind::NotFound), and
//!   so do ids owned by someone else (the `_for` methods).
//! - With [`ManagerConfig::ttl`], a conversation unused that long is ended (record and
//!   hot process) by a background sweep.
//! - The store keeps each turn's prompt and final text, not every message; the CLI's own
//!   session files (under its config directory) hold the full transcript that resuming
//!   uses. Those must survive for a cold continuation to work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::prompt::Prompt;
use crate::runner::Runner;
use crate::toolkit::pool::{PoolConfig, QueryPool};
use crate::util::lock;

/// One turn of a conversation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Turn {
    /// What was asked.
    pub prompt: String,
    /// The final text of the answer (the result's text).
    pub response: String,
    /// When the turn ended.
    pub at: DateTime<Utc>,
    /// What the turn cost.
    pub cost_usd: Option<f64>,
    /// Tools the model used.
    pub tools_used: Vec<String>,
    /// Whether the turn failed.
    pub is_error: bool,
}

/// A conversation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConversationRecord {
    /// The caller's id.
    pub id: String,
    /// The CLI session id to resume.
    pub session_id: String,
    /// The project directory the conversation works in.
    pub project_path: PathBuf,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When its last turn ended.
    pub updated_at: DateTime<Utc>,
    /// Its turns, oldest first.
    pub turns: Vec<Turn>,
    /// Who owns it, when it was started with an owner (the `_for` methods).
    #[serde(default)]
    pub owner: Option<String>,
    /// What the whole conversation has cost so far.
    #[serde(default)]
    pub total_cost_usd: f64,
}

/// Where conversations are kept. [`MemoryStore`] by default; `SqliteStore` (feature
/// `sqlite`) survives restarts. Implement it for your own database.
pub trait ConversationStore: Send + Sync + 'static {
    /// The conversation with this id, if any.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ConversationRecord>>>;
    /// Inserts or replaces a conversation.
    fn save<'a>(&'a self, record: &'a ConversationRecord) -> BoxFuture<'a, Result<()>>;
    /// Deletes a conversation; returns whether it existed.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Ids of conversations whose last turn ended before `cutoff`.
    fn idle_since(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>>>;
    /// How many conversations `owner` has (all of them for `None`).
    fn count<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<usize>>;
}

/// Conversations in memory: gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, ConversationRecord>>,
}

impl MemoryStore {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConversationRecord>> {
        lock(&self.records)
    }
}

impl ConversationStore for MemoryStore {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ConversationRecord>>> {
        let found = self.records().get(id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn save<'a>(&'a self, record: &'a ConversationRecord) -> BoxFuture<'a, Result<()>> {
        self.records().insert(record.id.clone(), record.clone());
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let existed = self.records().remove(id).is_some();
        Box::pin(async move { Ok(existed) })
    }

    fn idle_since(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>>> {
        let ids = self
            .records()
            .values()
            .filter(|r| r.updated_at < cutoff)
            .map(|r| r.id.clone())
            .collect();
        Box::pin(async move { Ok(ids) })
    }

    fn count<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<usize>> {
        let count = self
            .records()
            .values()
            .filter(|r| owner.is_none_or(|o| r.owner.as_deref() == Some(o)))
            .count();
        Box::pin(async move { Ok(count) })
    }
}

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use sqlx::Row;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

    /// Conversations in a SQLite file (feature `sqlite`, via `sqlx`): a restarted
    /// process continues the conversations it started before.
    #[derive(Debug, Clone)]
    pub struct SqliteStore {
        pool: SqlitePool,
    }

    fn storage(err: sqlx::Error) -> Error {
        Error::new(ErrorKind::Storage, "the SQLite conversation store failed").with_source(err)
    }

    impl SqliteStore {
        /// Opens (and creates if needed) the database file at `path`.
        ///
        /// # Errors
        ///
        /// [`Storage`](ErrorKind::Storage) when the file cannot be opened or set up.
        pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                // A file handle does not go stale: no ping when a connection is taken.
                .test_before_acquire(false)
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(storage)?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS claude_conversations (
                    id TEXT PRIMARY KEY,
                    updated_at TEXT NOT NULL,
                    record TEXT NOT NULL
                )",
            )
            .execute(&pool)
            .await
            .map_err(storage)?;
            Ok(SqliteStore { pool })
        }
    }

    impl ConversationStore for SqliteStore {
        fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ConversationRecord>>> {
            Box::pin(async move {
                let row = sqlx::query("SELECT record FROM claude_conversations WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(storage)?;
                let Some(row) = row else { return Ok(None) };
                let text: String = row.try_get("record").map_err(storage)?;
                serde_json::from_str(&text).map(Some).map_err(|e| {
                    Error::new(ErrorKind::Storage, format!("conversation {id} is corrupt"))
                        .with_source(e)
                })
            })
        }

        fn save<'a>(&'a self, record: &'a ConversationRecord) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                let text = serde_json::to_string(record).map_err(|e| {
                    Error::new(ErrorKind::Storage, "could not encode a conversation").with_source(e)
                })?;
                sqlx::query(
                    "INSERT INTO claude_conversations (id, updated_at, record) VALUES (?, ?, ?)
                     ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at, record = excluded.record",
                )
                .bind(&record.id)
                .bind(record.updated_at.to_rfc3339())
                .bind(text)
                .execute(&self.pool)
                .await
                .map_err(storage)?;
                Ok(())
            })
        }

        fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM claude_conversations WHERE id = ?")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(storage)?;
                Ok(done.rows_affected() > 0)
            })
        }

        fn idle_since(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>>> {
            Box::pin(async move {
                let rows = sqlx::query("SELECT id FROM claude_conversations WHERE updated_at < ?")
                    .bind(cutoff.to_rfc3339())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(storage)?;
                rows.iter()
                    .map(|row| row.try_get::<String, _>("id").map_err(storage))
                    .collect()
            })
        }

        fn count<'a>(&'a self, owner: Option<&'a str>) -> BoxFuture<'a, Result<usize>> {
            Box::pin(async move {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM claude_conversations \
                     WHERE ?1 IS NULL OR json_extract(record, '$.owner') = ?1",
                )
                .bind(owner)
                .fetch_one(&self.pool)
                .await
                .map_err(storage)?;
                let n: i64 = row.try_get("n").map_err(storage)?;
                Ok(usize::try_from(n).unwrap_or(0))
            })
        }
    }
}

/// How a [`ConversationManager`] keeps conversations.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Conversations that keep their CLI process between turns (0: always resume
    /// cold), in the manager's own pool.
    pub max_hot: usize,
    /// A hot conversation idle this long loses its process (it continues cold later),
    /// in the manager's own pool.
    pub idle_timeout: Duration,
    /// A conversation unused this long is ended: record and process (`None`: kept
    /// until ended).
    pub ttl: Option<Duration>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            max_hot: 8,
            idle_timeout: Duration::from_secs(300),
            ttl: None,
        }
    }
}

impl ManagerConfig {
    /// Sets `max_hot`.
    #[must_use]
    pub fn max_hot(mut self, max_hot: usize) -> Self {
        self.max_hot = max_hot;
        self
    }

    /// Sets `idle_timeout`.
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Sets `ttl`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

struct ManagerInner {
    base: ClaudeCodeOptions,
    store: Arc<dyn ConversationStore>,
    runner: Arc<dyn Runner>,
    /// The manager's own pool, when it has one.
    pool: Option<QueryPool>,
    config: ManagerConfig,
    busy: Mutex<std::collections::HashSet<String>>,
}

/// Named conversations over the CLI. See the [module docs](crate::toolkit::conversation).
///
/// Cheap to clone; clones share conversations. Dropping the last clone closes every
/// hot conversation's process.
#[derive(Clone)]
pub struct ConversationManager {
    inner: Arc<ManagerInner>,
}

/// Marks a conversation busy for the length of a turn.
struct BusyGuard<'a> {
    inner: &'a ManagerInner,
    id: String,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.id);
    }
}

impl ConversationManager {
    /// A manager keeping conversations in memory. `base` gives every conversation's
    /// options; each conversation sets its own `cwd`.
    pub fn new(base: ClaudeCodeOptions) -> ConversationManager {
        ConversationManager::with_store(base, MemoryStore::default(), ManagerConfig::default())
    }

    /// A manager over a store of your choice, running turns on a pool of its own.
    pub fn with_store(
        base: ClaudeCodeOptions,
        store: impl ConversationStore,
        config: ManagerConfig,
    ) -> ConversationManager {
        let pool = QueryPool::new(
            PoolConfig {
                max_concurrent: config.max_hot.max(1),
                ..PoolConfig::default()
            }
            .hot(config.max_hot, config.idle_timeout),
        );
        Self::build(
            base,
            Arc::new(store),
            Arc::new(pool.clone()),
            Some(pool),
            config,
        )
    }

    /// A manager whose turns run on `runner` (a shared [`QueryPool`], say).
    pub fn with_runner(
        base: ClaudeCodeOptions,
        store: impl ConversationStore,
        runner: impl Runner + 'static,
        config: ManagerConfig,
    ) -> ConversationManager {
        Self::build(base, Arc::new(store), Arc::new(runner), None, config)
    }

    fn build(
        base: ClaudeCodeOptions,
        store: Arc<dyn ConversationStore>,
        runner: Arc<dyn Runner>,
        pool: Option<QueryPool>,
        config: ManagerConfig,
    ) -> ConversationManager {
        let inner = Arc::new(ManagerInner {
            base,
            store,
            runner,
            pool,
            config,
            busy: Mutex::new(Default::default()),
        });
        if inner.config.ttl.is_some()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(sweep(Arc::downgrade(&inner)));
        }
        ConversationManager { inner }
    }

    /// Starts a conversation working in `project_path` and runs its first turn.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when the id is taken or the path
    /// does not exist; the turn's errors (the conversation is kept when the CLI
    /// reported a session).
    pub async fn start_conversation(
        &self,
        id: &str,
        prompt: &str,
        project_path: impl AsRef<Path>,
    ) -> Result<Vec<Message>> {
        self.start(None, id, prompt, project_path.as_ref()).await
    }

    /// [`start_conversation`](ConversationManager::start_conversation) owned by
    /// `owner`: the `_for` methods of anyone else get `NotFound` for it.
    ///
    /// # Errors
    ///
    /// See [`start_conversation`](ConversationManager::start_conversation).
    pub async fn start_conversation_for(
        &self,
        owner: &str,
        id: &str,
        prompt: &str,
        project_path: impl AsRef<Path>,
    ) -> Result<Vec<Message>> {
        self.start(Some(owner), id, prompt, project_path.as_ref())
            .await
    }

    async fn start(
        &self,
        owner: Option<&str>,
        id: &str,
        prompt: &str,
        project_path: &Path,
    ) -> Result<Vec<Message>> {
        let _busy = self.enter(id)?;
        if self.inner.store.load(id).await?.is_some() {
            return Err(Error::invalid_options(format!(
                "conversation {id:?} already exists; continue it or end it first"
            )));
        }
        let project_path = project_path.to_owned();
        let options = self.inner.base.to_builder().cwd(&project_path).build()?;
        let now = Utc::now();
        let mut record = ConversationRecord {
            id: id.to_owned(),
            session_id: String::new(),
            project_path,
            created_at: now,
            updated_at: now,
            turns: Vec::new(),
            owner: owner.map(str::to_owned),
            total_cost_usd: 0.0,
        };
        self.run_turn(&mut record, prompt, options).await
    }

    /// Runs a follow-up turn: the model sees every earlier turn.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id;
    /// [`ConversationBusy`](ErrorKind::ConversationBusy) while another turn of it runs;
    /// the turn's errors.
    pub async fn continue_conversation(&self, id: &str, follow_up: &str) -> Result<Vec<Message>> {
        self.continue_as(None, id, follow_up).await
    }

    /// [`continue_conversation`](ConversationManager::continue_conversation) by
    /// `owner`.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) when the conversation does not exist or
    /// belongs to someone else; see
    /// [`continue_conversation`](ConversationManager::continue_conversation).
    pub async fn continue_conversation_for(
        &self,
        owner: &str,
        id: &str,
        follow_up: &str,
    ) -> Result<Vec<Message>> {
        self.continue_as(Some(owner), id, follow_up).await
    }

    async fn continue_as(
        &self,
        owner: Option<&str>,
        id: &str,
        follow_up: &str,
    ) -> Result<Vec<Message>> {
        let _busy = self.enter(id)?;
        let mut record = self.load_as(owner, id).await?;
        let options = self
            .inner
            .base
            .to_builder()
            .cwd(&record.project_path)
            .resume(&record.session_id)
            .build()?;
        self.run_turn(&mut record, follow_up, options).await
    }

    /// The turns so far.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id.
    pub async fn history(&self, id: &str) -> Result<Vec<Turn>> {
        Ok(self.load(id).await?.turns)
    }

    /// The stored record of a conversation.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id.
    pub async fn record(&self, id: &str) -> Result<ConversationRecord> {
        self.load(id).await
    }

    /// The stored record of a conversation of `owner`.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id or another owner's.
    pub async fn record_for(&self, owner: &str, id: &str) -> Result<ConversationRecord> {
        self.load_as(Some(owner), id).await
    }

    /// Ends conversations idle for longer than `max_age`; returns how many.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn cleanup_old_conversations(&self, max_age: Duration) -> Result<usize> {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let ids = self.inner.store.idle_since(cutoff).await?;
        let mut ended = 0;
        for id in ids {
            // A conversation with a turn in progress is not idle: leave it.
            let Ok(_busy) = self.enter(&id) else {
                continue;
            };
            if let Ok(Some(record)) = self.inner.store.load(&id).await {
                self.inner.runner.end_conversation(&record.session_id);
            }
            if self.inner.store.delete(&id).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Ends a conversation: closes its process and forgets it.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id;
    /// [`ConversationBusy`](ErrorKind::ConversationBusy) while a turn runs.
    pub async fn end(&self, id: &str) -> Result<()> {
        self.end_as(None, id).await
    }

    /// Ends a conversation of `owner`.
    ///
    /// # Errors
    ///
    /// As [`end`](ConversationManager::end); [`NotFound`](ErrorKind::NotFound) for
    /// another owner's.
    pub async fn end_for(&self, owner: &str, id: &str) -> Result<()> {
        self.end_as(Some(owner), id).await
    }

    async fn end_as(&self, owner: Option<&str>, id: &str) -> Result<()> {
        let _busy = self.enter(id)?;
        let record = self.load_as(owner, id).await?;
        self.inner.runner.end_conversation(&record.session_id);
        if self.inner.store.delete(id).await? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// How many conversations `owner` has (all of them for `None`).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn count(&self, owner: Option<&str>) -> Result<usize> {
        self.inner.store.count(owner).await
    }

    /// How many conversations have a hot process now, in the manager's own pool (0 with
    /// a runner of yours: ask it).
    pub fn hot_count(&self) -> usize {
        self.inner.pool.as_ref().map_or(0, |p| p.stats().hot)
    }

    /// The process id of a conversation's hot process, in the manager's own pool.
    pub async fn hot_pid(&self, id: &str) -> Option<u32> {
        let record = self.inner.store.load(id).await.ok()??;
        self.inner.pool.as_ref()?.hot_pid(&record.session_id)
    }

    async fn run_turn(
        &self,
        record: &mut ConversationRecord,
        prompt: &str,
        options: ClaudeCodeOptions,
    ) -> Result<Vec<Message>> {
        let prompt = Prompt::Text(prompt.to_owned());
        let (messages, error) = match self.inner.runner.run_turn(prompt.clone(), options).await {
            Ok(run) => run.collect_messages().await,
            Err(err) => (Vec::new(), Some(err)),
        };
        let result = messages.iter().rev().find_map(Message::as_result);
        if let Some(result) = result {
            record.session_id = result.session_id.clone();
        } else if let Some(session) = messages.iter().find_map(Message::session_id) {
            record.session_id = session.to_owned();
        }
        if !record.session_id.is_empty() {
            record.updated_at = Utc::now();
            // The run's own cost (the SDK knows what the process had counted before).
            let cost = result.and_then(|r| r.turn_cost_usd);
            record.total_cost_usd += cost.unwrap_or(0.0);
            record.turns.push(Turn {
                prompt: prompt.text(),
                response: result
                    .and_then(|r| r.result.clone())
                    .unwrap_or_else(|| error.as_ref().map(|e| e.to_string()).unwrap_or_default()),
                at: record.updated_at,
                cost_usd: cost,
                tools_used: messages
                    .iter()
                    .flat_map(Message::tools_used)
                    .map(str::to_owned)
                    .collect(),
                is_error: error.is_some(),
            });
            self.inner.store.save(record).await?;
        }
        match error {
            Some(err) => Err(err),
            None => Ok(messages),
        }
    }

    fn enter(&self, id: &str) -> Result<BusyGuard<'_>> {
        let mut busy = lock(&self.inner.busy);
        if !busy.insert(id.to_owned()) {
            return Err(Error::new(
                ErrorKind::ConversationBusy,
                format!("conversation {id:?} already has a turn in progress"),
            ));
        }
        Ok(BusyGuard {
            inner: &self.inner,
            id: id.to_owned(),
        })
    }

    async fn load(&self, id: &str) -> Result<ConversationRecord> {
        self.load_as(None, id).await
    }

    /// The record of `id`; with an owner, only if it is theirs.
    async fn load_as(&self, owner: Option<&str>, id: &str) -> Result<ConversationRecord> {
        match self.inner.store.load(id).await? {
            Some(record) if owner.is_none_or(|o| record.owner.as_deref() == Some(o)) => Ok(record),
            _ => Err(not_found(id)),
        }
    }
}

impl std::fmt::Debug for ConversationManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationManager")
            .field("hot", &self.hot_count())
            .field("config", &self.inner.config)
            .finish()
    }
}

fn not_found(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no conversation with id {id:?}"),
    )
}

/// Ends conversations unused for longer than the TTL.
async fn sweep(manager: Weak<ManagerInner>) {
    loop {
        let pause = match manager.upgrade() {
            Some(inner) => {
                let Some(ttl) = inner.config.ttl else { return };
                let manager = ConversationManager { inner };
                match manager.cleanup_old_conversations(ttl).await {
                    Ok(0) => {}
                    Ok(ended) => tracing::debug!(ended, "ended unused conversations"),
                    Err(err) => tracing::warn!(%err, "could not end unused conversations"),
                }
                (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
            }
            None => return,
        };
        tokio::time::sleep(pause).await;
    }
}
