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
//! as it was, tool calls and results included. A conversation that is *hot* keeps its
//! [`ClaudeClient`] (and CLI process) between turns; a *cold* one is resumed by session
//! id (`--resume`), which works across restarts when the store persists. The seed's
//! approach of pasting a truncated transcript into a new prompt loses all of that.
//!
//! # Limits
//!
//! - At most [`ManagerConfig::max_hot`] conversations stay hot (default 8); the least
//!   recently used is closed when another needs a place. A hot conversation idle for
//!   [`ManagerConfig::idle_timeout`] (default 5 minutes) is closed by a background
//!   sweep; it continues cold later.
//! - One turn at a time per conversation: a second concurrent turn gets a
//!   [`ConversationBusy`](crate::ErrorKind::ConversationBusy) error instead of
//!   interleaved output. Unknown ids get [`NotFound`](crate::ErrorKind::NotFound).
//! - The store keeps each turn's prompt and final text, not every message; the CLI's own
//!   session files (under its config directory) hold the full transcript that resuming
//!   uses. Those must survive for a cold continuation to work.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::client::ClaudeClient;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::query::{collect_stream, query};
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
    }
}

/// How a [`ConversationManager`] keeps conversations hot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Conversations that keep their CLI process between turns (0: always resume cold).
    pub max_hot: usize,
    /// A hot conversation idle this long is closed (it continues cold later).
    pub idle_timeout: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            max_hot: 8,
            idle_timeout: Duration::from_secs(300),
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
}

struct Hot {
    client: ClaudeClient,
    last_used: Instant,
}

struct ManagerInner {
    base: ClaudeCodeOptions,
    store: Arc<dyn ConversationStore>,
    config: ManagerConfig,
    hot: Mutex<HashMap<String, Hot>>,
    busy: Mutex<std::collections::HashSet<String>>,
}

/// Named conversations over the CLI. See the [module docs](crate::conversation).
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

    /// A manager over a store of your choice.
    pub fn with_store(
        base: ClaudeCodeOptions,
        store: impl ConversationStore,
        config: ManagerConfig,
    ) -> ConversationManager {
        let inner = Arc::new(ManagerInner {
            base,
            store: Arc::new(store),
            config,
            hot: Mutex::new(HashMap::new()),
            busy: Mutex::new(Default::default()),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
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
        let _busy = self.enter(id)?;
        if self.inner.store.load(id).await?.is_some() {
            return Err(Error::invalid_options(format!(
                "conversation {id:?} already exists; continue it or end it first"
            )));
        }
        let project_path = project_path.as_ref().to_owned();
        let options = self.inner.base.to_builder().cwd(&project_path).build()?;
        let now = Utc::now();
        let mut record = ConversationRecord {
            id: id.to_owned(),
            session_id: String::new(),
            project_path,
            created_at: now,
            updated_at: now,
            turns: Vec::new(),
        };
        self.run_turn(&mut record, prompt, options, None).await
    }

    /// Runs a follow-up turn: the model sees every earlier turn.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown id;
    /// [`ConversationBusy`](ErrorKind::ConversationBusy) while another turn of it runs;
    /// the turn's errors.
    pub async fn continue_conversation(&self, id: &str, follow_up: &str) -> Result<Vec<Message>> {
        let _busy = self.enter(id)?;
        let mut record = self.load(id).await?;
        let hot = self.take_hot(id);
        let options = self
            .inner
            .base
            .to_builder()
            .cwd(&record.project_path)
            .build()?;
        self.run_turn(&mut record, follow_up, options, hot).await
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
            self.close_hot(&id).await;
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
        let _busy = self.enter(id)?;
        self.close_hot(id).await;
        if self.inner.store.delete(id).await? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// How many conversations are hot now.
    pub fn hot_count(&self) -> usize {
        self.lock_hot().len()
    }

    /// The process id of a hot conversation's CLI.
    pub fn hot_pid(&self, id: &str) -> Option<u32> {
        self.lock_hot().get(id).and_then(|h| h.client.pid())
    }

    async fn run_turn(
        &self,
        record: &mut ConversationRecord,
        prompt: &str,
        options: ClaudeCodeOptions,
        hot: Option<ClaudeClient>,
    ) -> Result<Vec<Message>> {
        let keep_hot = self.inner.config.max_hot > 0;
        let resume = (!record.session_id.is_empty()).then(|| record.session_id.clone());
        let (messages, error, client) = if keep_hot {
            let client = match hot {
                Some(client) => client,
                None => {
                    let options = match &resume {
                        Some(session) => options.to_builder().resume(session).build()?,
                        None => options,
                    };
                    ClaudeClient::connect(options).await?
                }
            };
            let (messages, error) = match client.query(prompt).await {
                Ok(()) => collect_stream(client.receive_response()).await,
                Err(err) => (Vec::new(), Some(err)),
            };
            let alive = client.is_alive();
            (messages, error, alive.then_some(client))
        } else {
            let options = match &resume {
                Some(session) => options.to_builder().resume(session).build()?,
                None => options,
            };
            let (messages, error) = query(prompt, options).collect_messages().await;
            (messages, error, None)
        };

        let result = messages.iter().rev().find_map(Message::as_result);
        if let Some(result) = result {
            record.session_id = result.session_id.clone();
        } else if let Some(session) = messages.iter().find_map(Message::session_id) {
            record.session_id = session.to_owned();
        }
        if !record.session_id.is_empty() {
            record.updated_at = Utc::now();
            record.turns.push(Turn {
                prompt: prompt.to_owned(),
                response: result
                    .and_then(|r| r.result.clone())
                    .unwrap_or_else(|| error.as_ref().map(|e| e.to_string()).unwrap_or_default()),
                at: record.updated_at,
                cost_usd: result.and_then(|r| r.turn_cost_usd),
                tools_used: messages
                    .iter()
                    .flat_map(Message::tools_used)
                    .map(str::to_owned)
                    .collect(),
                is_error: error.is_some(),
            });
            self.inner.store.save(record).await?;
        }
        if let Some(client) = client {
            self.put_hot(&record.id, client).await;
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
        self.inner
            .store
            .load(id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    fn lock_hot(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hot>> {
        lock(&self.inner.hot)
    }

    /// The conversation's hot client, if it has one that can still run turns (a dead
    /// one is dropped: the conversation resumes cold).
    fn take_hot(&self, id: &str) -> Option<ClaudeClient> {
        self.lock_hot()
            .remove(id)
            .map(|h| h.client)
            .filter(ClaudeClient::is_alive)
    }

    async fn put_hot(&self, id: &str, client: ClaudeClient) {
        let evicted = {
            let mut hot = self.lock_hot();
            hot.insert(
                id.to_owned(),
                Hot {
                    client,
                    last_used: Instant::now(),
                },
            );
            let mut evicted = Vec::new();
            while hot.len() > self.inner.config.max_hot {
                let Some(oldest) = hot
                    .iter()
                    .min_by_key(|(_, h)| h.last_used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(h) = hot.remove(&oldest) {
                    evicted.push(h.client);
                }
            }
            evicted
        };
        for client in evicted {
            let _ = client.close().await;
        }
    }

    async fn close_hot(&self, id: &str) {
        if let Some(client) = self.take_hot(id) {
            let _ = client.close().await;
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

/// Closes hot conversations that have been idle too long.
async fn sweep(manager: Weak<ManagerInner>) {
    loop {
        let pause = match manager.upgrade() {
            Some(inner) => {
                let idle = inner.config.idle_timeout;
                let stale: Vec<ClaudeClient> = {
                    let mut hot = lock(&inner.hot);
                    let ids: Vec<String> = hot
                        .iter()
                        .filter(|(_, h)| h.last_used.elapsed() >= idle)
                        .map(|(k, _)| k.clone())
                        .collect();
                    ids.iter()
                        .filter_map(|id| hot.remove(id))
                        .map(|h| h.client)
                        .collect()
                };
                for client in stale {
                    let _ = client.close().await;
                }
                (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
            }
            None => return,
        };
        tokio::time::sleep(pause).await;
    }
}
