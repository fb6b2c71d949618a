//! [`SqliteSessionStore`]: transcripts in a SQLite file (feature `sqlite`).

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{decode, encode, storage, subpath_column, time_of};
use super::{EntryStream, SessionKey, SessionStore, StoredSession};
use crate::error::Result;

/// Rows per `INSERT` of an append: 5 bound values each, well under SQLite's limit of
/// 32,766 bound values per statement.
const ROWS_PER_INSERT: usize = 500;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS claude_session_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_key TEXT NOT NULL,
        session_id TEXT NOT NULL,
        subpath TEXT NOT NULL DEFAULT '',
        modified_ms INTEGER NOT NULL,
        batches INTEGER NOT NULL DEFAULT 0,
        UNIQUE (project_key, session_id, subpath)
    )",
    "CREATE TABLE IF NOT EXISTS claude_session_entries (
        key_id INTEGER NOT NULL REFERENCES claude_session_keys (id) ON DELETE CASCADE,
        batch INTEGER NOT NULL,
        ord INTEGER NOT NULL,
        uuid TEXT,
        entry TEXT NOT NULL,
        PRIMARY KEY (key_id, batch, ord)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS claude_session_entries_uuid
        ON claude_session_entries (key_id, uuid) WHERE uuid IS NOT NULL",
];

/// How far a [`SqliteSessionStore`]'s committed append is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// It survives a power loss: each commit waits for the disk (SQLite's
    /// `synchronous = FULL`). The default.
    #[default]
    PowerLoss,
    /// It survives a crash of the process, not of the machine: commits do not wait
    /// for the disk (`synchronous = NORMAL` in WAL mode), so an append costs no
    /// `fsync`.
    ProcessCrash,
}

/// A [`SessionStore`] in a SQLite file (feature `sqlite`, via `sqlx` with bundled
/// SQLite): one host keeps its transcripts across restarts and disk cleanups of the
/// CLI's config directory.
///
/// The same two tables as [`PostgresSessionStore`](super::PostgresSessionStore)
/// (`claude_session_keys`, `claude_session_entries`), in WAL mode with a 5 s busy
/// timeout. Each append is one `BEGIN IMMEDIATE` transaction: SQLite runs one writer
/// at a time, so appends are stored in commit order. The file can be shared with a
/// [`SqliteStore`](crate::SqliteStore) of conversations (other tables).
///
/// ```no_run
/// use claude_code_sdk::store::SqliteSessionStore;
///
/// # async fn demo() -> claude_code_sdk::Result<()> {
/// let store = SqliteSessionStore::open("/var/lib/myapp/sessions.db").await?;
/// # Ok(()) }
/// ```
///
/// # Durability
///
/// [`open`](Self::open) makes every commit wait for the disk (SQLite's
/// `synchronous = FULL`): an append survives a power loss, and costs one `fsync` (about
/// 4 ms on the disk this crate is developed on). An append that only has to survive a
/// crash of the process, not of the machine, skips it with
/// [`Durability::ProcessCrash`] (`synchronous = NORMAL` in WAL mode): a transcript is
/// then as durable as anything else the application keeps that way.
///
/// ```no_run
/// use claude_code_sdk::store::{Durability, SqliteSessionStore};
///
/// # async fn demo() -> claude_code_sdk::Result<()> {
/// let store =
///     SqliteSessionStore::open_with("/var/lib/myapp/sessions.db", Durability::ProcessCrash)
///         .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteSessionStore {
    pool: SqlitePool,
}

impl SqliteSessionStore {
    /// Opens (creating if needed) the database file at `path` and its tables.
    ///
    /// # Errors
    ///
    /// [`Storage`](crate::ErrorKind::Storage) when the file cannot be opened or set up.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Durability::PowerLoss).await
    }

    /// Opens (creating if needed) the database file at `path` and its tables, with
    /// commits as durable as `durability` says.
    ///
    /// # Errors
    ///
    /// [`Storage`](crate::ErrorKind::Storage) when the file cannot be opened or set up.
    pub async fn open_with(path: impl AsRef<Path>, durability: Durability) -> Result<Self> {
        let synchronous = match durability {
            Durability::PowerLoss => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            // A file handle does not go stale: no ping when a connection is taken.
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| storage("open its SQLite file", e))?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&pool)
                .await
                .map_err(|e| storage("create its tables", e))?;
        }
        Ok(SqliteSessionStore { pool })
    }
}

impl SessionStore for SqliteSessionStore {
    fn append<'a>(
        &'a self,
        key: &'a SessionKey,
        entries: &'a [Value],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if entries.is_empty() {
                return Ok(());
            }
            let (uuids, texts) = encode(entries)?;
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| storage("begin an append", e))?;
            let row = sqlx::query(
                "INSERT INTO claude_session_keys (project_key, session_id, subpath, modified_ms, batches)
                 VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT (project_key, session_id, subpath) DO UPDATE
                 SET modified_ms = max(claude_session_keys.modified_ms + 1, excluded.modified_ms),
                     batches = claude_session_keys.batches + 1
                 RETURNING id, batches",
            )
            .bind(key.project_key())
            .bind(key.session_id())
            .bind(subpath_column(key))
            .bind(Utc::now().timestamp_millis())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| storage("record a transcript", e))?;
            let id: i64 = row
                .try_get(0)
                .map_err(|e| storage("record a transcript", e))?;
            let batch: i64 = row
                .try_get(1)
                .map_err(|e| storage("record a transcript", e))?;
            // One statement per chunk of rows, not one per entry: each statement is a
            // round trip to the connection's thread.
            let rows: Vec<(i64, Option<&str>, &str)> = uuids
                .iter()
                .zip(&texts)
                .enumerate()
                .map(|(ord, (uuid, text))| {
                    (
                        i64::try_from(ord).unwrap_or(i64::MAX),
                        uuid.as_deref(),
                        text.as_str(),
                    )
                })
                .collect();
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT OR IGNORE INTO claude_session_entries (key_id, batch, ord, uuid, entry) ",
                );
                insert.push_values(chunk, |mut row, (ord, uuid, text)| {
                    row.push_bind(id)
                        .push_bind(batch)
                        .push_bind(*ord)
                        .push_bind(*uuid)
                        .push_bind(*text);
                });
                insert
                    .build()
                    // Only the full chunk's statement is worth keeping prepared: every
                    // other length would push hot statements out of the cache.
                    .persistent(chunk.len() == ROWS_PER_INSERT)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| storage("append entries", e))?;
            }
            tx.commit()
                .await
                .map_err(|e| storage("commit an append", e))?;
            Ok(())
        })
    }

    fn load<'a>(&'a self, key: &'a SessionKey) -> EntryStream<'a> {
        let rows = sqlx::query(
            "SELECT e.entry FROM claude_session_entries e
             JOIN claude_session_keys k ON k.id = e.key_id
             WHERE k.project_key = ?1 AND k.session_id = ?2 AND k.subpath = ?3
             ORDER BY e.batch, e.ord",
        )
        .bind(key.project_key())
        .bind(key.session_id())
        .bind(subpath_column(key))
        .fetch(&self.pool);
        Box::pin(rows.map(|row| {
            let row = row.map_err(|e| storage("load a transcript", e))?;
            let text: &str = row
                .try_get(0)
                .map_err(|e| storage("load a transcript", e))?;
            decode(text)
        }))
    }

    fn list_sessions<'a>(
        &'a self,
        project_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT session_id, modified_ms FROM claude_session_keys
                 WHERE project_key = ?1 AND subpath = ''",
            )
            .bind(project_key)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| storage("list sessions", e))?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get(0).map_err(|e| storage("list sessions", e))?;
                    let ms: i64 = row.try_get(1).map_err(|e| storage("list sessions", e))?;
                    Ok(StoredSession::new(id, time_of(ms)))
                })
                .collect()
        })
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| storage("begin a delete", e))?;
            // Entries first: correct even on a connection without foreign keys.
            let (entries, keys) = if key.is_main() {
                (
                    "DELETE FROM claude_session_entries WHERE key_id IN (SELECT id FROM claude_session_keys WHERE project_key = ?1 AND session_id = ?2 AND ?3 = ?3)",
                    "DELETE FROM claude_session_keys WHERE project_key = ?1 AND session_id = ?2 AND ?3 = ?3",
                )
            } else {
                (
                    "DELETE FROM claude_session_entries WHERE key_id IN (SELECT id FROM claude_session_keys WHERE project_key = ?1 AND session_id = ?2 AND subpath = ?3)",
                    "DELETE FROM claude_session_keys WHERE project_key = ?1 AND session_id = ?2 AND subpath = ?3",
                )
            };
            for statement in [entries, keys] {
                sqlx::query(statement)
                    .bind(key.project_key())
                    .bind(key.session_id())
                    .bind(subpath_column(key))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| storage("delete a transcript", e))?;
            }
            tx.commit()
                .await
                .map_err(|e| storage("commit a delete", e))?;
            Ok(())
        })
    }

    fn list_subkeys<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT subpath FROM claude_session_keys
                 WHERE project_key = ?1 AND session_id = ?2 AND subpath <> ''
                 ORDER BY subpath",
            )
            .bind(key.project_key())
            .bind(key.session_id())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| storage("list subkeys", e))?;
            rows.iter()
                .map(|row| row.try_get(0).map_err(|e| storage("list subkeys", e)))
                .collect()
        })
    }
}
