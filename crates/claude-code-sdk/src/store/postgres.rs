//! [`PostgresSessionStore`]: transcripts in PostgreSQL (feature `postgres`).

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::{decode, encode, storage, subpath_column};
use super::{EntryStream, SessionKey, SessionStore, StoredSession};
use crate::error::Result;

/// An arbitrary constant: the advisory lock that serializes schema set-up across
/// processes starting at once.
const SCHEMA_LOCK: i64 = 0x636c_6175_6465_7373;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS claude_session_keys (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        project_key TEXT NOT NULL,
        session_id TEXT NOT NULL,
        subpath TEXT NOT NULL DEFAULT '',
        modified_ms BIGINT NOT NULL,
        batches BIGINT NOT NULL DEFAULT 0,
        UNIQUE (project_key, session_id, subpath)
    )",
    "CREATE TABLE IF NOT EXISTS claude_session_entries (
        key_id BIGINT NOT NULL REFERENCES claude_session_keys (id) ON DELETE CASCADE,
        batch BIGINT NOT NULL,
        ord BIGINT NOT NULL,
        uuid TEXT,
        entry TEXT NOT NULL,
        PRIMARY KEY (key_id, batch, ord)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS claude_session_entries_uuid
        ON claude_session_entries (key_id, uuid) WHERE uuid IS NOT NULL",
];

/// A [`SessionStore`] in PostgreSQL (feature `postgres`, via `sqlx`): many replicas
/// share one database, and any of them can resume any session.
///
/// Two tables, created when the store connects if they do not exist (under an
/// advisory lock, so replicas starting together do not race):
/// `claude_session_keys` (one row per transcript: project, session, subpath, last
/// append time by the database's clock) and `claude_session_entries` (one row per
/// entry, its JSON as text, unique per `uuid` within a transcript). Deleting a key
/// row deletes its entries.
///
/// Each [`append`](SessionStore::append) is one transaction that first locks the
/// transcript's key row, so concurrent appends to one transcript are serialized and
/// stored in commit order; appends to different transcripts do not wait for each
/// other. A [`load`](SessionStore::load) streams rows as it reads them, holding one
/// pooled connection until the stream ends or is dropped.
///
/// ```no_run
/// use claude_code_sdk::store::PostgresSessionStore;
///
/// # async fn demo() -> claude_code_sdk::Result<()> {
/// let store = PostgresSessionStore::connect("postgres://app@db.internal/claude").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresSessionStore {
    pool: PgPool,
}

impl PostgresSessionStore {
    /// Connects to the database at `url` (a pool of up to 8 connections) and creates
    /// the tables if needed.
    ///
    /// # Errors
    ///
    /// [`Storage`](crate::ErrorKind::Storage) when the database cannot be reached or
    /// the tables cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(|e| storage("connect to PostgreSQL", e))?;
        Self::from_pool(pool).await
    }

    /// A store over a pool of yours; creates the tables if needed.
    ///
    /// # Errors
    ///
    /// [`Storage`](crate::ErrorKind::Storage) when the tables cannot be created.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| storage("begin the schema set-up", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| storage("lock the schema set-up", e))?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| storage("create its tables", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| storage("create its tables", e))?;
        Ok(PostgresSessionStore { pool })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl SessionStore for PostgresSessionStore {
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
                .begin()
                .await
                .map_err(|e| storage("begin an append", e))?;
            // Locks the key row until commit: appends to one transcript serialize.
            let row = sqlx::query(
                "INSERT INTO claude_session_keys (project_key, session_id, subpath, modified_ms, batches)
                 VALUES ($1, $2, $3, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT, 1)
                 ON CONFLICT (project_key, session_id, subpath) DO UPDATE
                 SET modified_ms = GREATEST(claude_session_keys.modified_ms + 1, EXCLUDED.modified_ms),
                     batches = claude_session_keys.batches + 1
                 RETURNING id, batches",
            )
            .bind(key.project_key())
            .bind(key.session_id())
            .bind(subpath_column(key))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| storage("record a transcript", e))?;
            let id: i64 = row
                .try_get(0)
                .map_err(|e| storage("record a transcript", e))?;
            let batch: i64 = row
                .try_get(1)
                .map_err(|e| storage("record a transcript", e))?;
            sqlx::query(
                "INSERT INTO claude_session_entries (key_id, batch, ord, uuid, entry)
                 SELECT $1, $2, t.ord, t.uuid, t.entry
                 FROM UNNEST($3::TEXT[], $4::TEXT[]) WITH ORDINALITY AS t(uuid, entry, ord)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(batch)
            .bind(&uuids)
            .bind(&texts)
            .execute(&mut *tx)
            .await
            .map_err(|e| storage("append entries", e))?;
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
             WHERE k.project_key = $1 AND k.session_id = $2 AND k.subpath = $3
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
                 WHERE project_key = $1 AND subpath = ''",
            )
            .bind(project_key)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| storage("list sessions", e))?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get(0).map_err(|e| storage("list sessions", e))?;
                    let ms: i64 = row.try_get(1).map_err(|e| storage("list sessions", e))?;
                    Ok(StoredSession::new(id, super::sql::time_of(ms)))
                })
                .collect()
        })
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let query = if key.is_main() {
                sqlx::query(
                    "DELETE FROM claude_session_keys WHERE project_key = $1 AND session_id = $2",
                )
                .bind(key.project_key())
                .bind(key.session_id())
            } else {
                sqlx::query(
                    "DELETE FROM claude_session_keys
                     WHERE project_key = $1 AND session_id = $2 AND subpath = $3",
                )
                .bind(key.project_key())
                .bind(key.session_id())
                .bind(subpath_column(key))
            };
            query
                .execute(&self.pool)
                .await
                .map_err(|e| storage("delete a transcript", e))?;
            Ok(())
        })
    }

    fn list_subkeys<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT subpath FROM claude_session_keys
                 WHERE project_key = $1 AND session_id = $2 AND subpath <> ''
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
