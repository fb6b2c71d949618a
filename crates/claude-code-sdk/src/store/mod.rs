//! Session stores: the CLI's session transcripts, kept in a database of yours.
//!
//! The CLI writes each session's transcript as JSON lines under its config directory
//! (`$CLAUDE_CONFIG_DIR/projects/<project>/<session>.jsonl`) and resumes a session
//! only from there. A [`SessionStore`] keeps a copy elsewhere, so that a session can be
//! resumed on another host, after the host's disk is gone, or by another replica:
//!
//! 1. **Mirror.** With `--session-mirror` the CLI also writes every transcript entry on
//!    stdout as a `transcript_mirror` line. A [`MirrorSink`] takes those lines, batches
//!    them and appends them to the store with bounded retries; what cannot be stored is
//!    reported as a [`MirrorFailure`], never dropped silently.
//! 2. **Materialize.** Before resuming on a host that never ran the session,
//!    [`materialize_session`] writes the transcript (and its subagents' transcripts)
//!    into a config directory, with what else a resume needs from a source config
//!    directory (credentials, settings, user-level plugins, commands, skills, agents).
//!    Point the CLI at it with `CLAUDE_CONFIG_DIR` and resume with `--resume <id>`.
//! 3. **Read and manage.** [`crate::sessions::Sessions`] lists, reads, renames, tags,
//!    forks and deletes sessions, in a store or in the CLI's own files.
//!
//! [`import_session`] copies a transcript the CLI wrote on disk into a store (and
//! repairs gaps after a failed mirror: appends are idempotent per entry `uuid`).
//!
//! # Backends
//!
//! | store | feature | what for |
//! |---|---|---|
//! | [`InMemorySessionStore`] | — | tests, development, one process |
//! | [`SqliteSessionStore`] | `sqlite` | one host, a file that survives restarts |
//! | [`PostgresSessionStore`] | `postgres` | many replicas sharing one database |
//!
//! Every backend here passes the same conformance suite (`conformance`, feature
//! `store-conformance`); run it on yours.
//!
//! # The contract
//!
//! - **Entries** are the transcript's JSON lines as [`serde_json::Value`]s, opaque to
//!   the store: it keeps them deep-equal (not necessarily byte-equal; key order may
//!   change).
//! - **Order.** [`SessionStore::load`] yields a key's entries in append order: the
//!   calls of one writer in the order they completed, each call's entries in order.
//!   Appends of concurrent writers to one key may interleave, batch by batch.
//! - **Idempotence.** An entry with a string `uuid` that the key already holds is
//!   skipped (retries and re-imports do not duplicate); entries without a `uuid`
//!   (titles, tags, queue markers) are always appended.
//! - **Unknown keys** load as an empty stream, not an error. A store need not tell a
//!   never-written key from an emptied one.
//! - **Subpaths.** A subagent's transcript has a key with a subpath; it is stored apart
//!   from the main transcript, listed by [`SessionStore::list_subkeys`] and deleted
//!   with the main transcript by [`SessionStore::delete`].
//! - **Optional methods** ([`list_sessions`](SessionStore::list_sessions),
//!   [`delete`](SessionStore::delete), [`list_subkeys`](SessionStore::list_subkeys))
//!   answer an [`Unsupported`](crate::ErrorKind::Unsupported) error by default. Without
//!   `list_subkeys`, [`materialize_session`] restores the main transcript only.
//!
//! ```
//! use claude_code_sdk::store::{InMemorySessionStore, SessionKey, SessionStore};
//! use futures::TryStreamExt;
//! use serde_json::json;
//!
//! # async fn demo() -> claude_code_sdk::Result<()> {
//! let store = InMemorySessionStore::new();
//! let key = SessionKey::new("-srv-app", "0b6e7a4e-6a43-4c53-9d0e-3c7f6c7e1d10")?;
//! store.append(&key, &[json!({"type": "user", "uuid": "u1"})]).await?;
//! store.append(&key, &[json!({"type": "user", "uuid": "u1"})]).await?; // a retry: skipped
//! let entries: Vec<_> = store.load(&key).try_collect().await?;
//! assert_eq!(entries.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Cancel safety
//!
//! Dropping an `append` future before it completes may leave none, some or all of its
//! entries stored (the SQL stores write each call in one transaction: none or all);
//! appending the same entries again is safe for entries with a `uuid`. Dropping a
//! `load` stream stops reading; the SQL stores hold one pooled connection while a load
//! stream is alive.

mod import;
pub(crate) mod jsonl;
mod key;
mod materialize;
mod memory;
mod mirror;
pub(crate) use mirror::json_size;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "store-conformance")]
pub mod conformance;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

pub use import::{ImportReport, import_session, import_transcript_file};
pub use key::{SessionKey, config_dir_for_env, project_key_for_directory, projects_dir};
pub use materialize::{MaterializeOptions, MaterializedSession, materialize_session};
pub use memory::InMemorySessionStore;
pub use mirror::{MIRROR_LINE_TYPE, MirrorConfig, MirrorFailure, MirrorFrame, MirrorSink};
#[cfg(feature = "postgres")]
pub use postgres::PostgresSessionStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{Durability, SqliteSessionStore};

/// A stream of transcript entries, as [`SessionStore::load`] yields them.
pub type EntryStream<'a> = BoxStream<'a, Result<Value>>;

/// A session a store holds, as [`SessionStore::list_sessions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSession {
    /// The session id.
    pub session_id: String,
    /// When the session's main transcript was last appended to, by the store's clock.
    pub modified: DateTime<Utc>,
}

impl StoredSession {
    /// A listing entry (for implementations of [`SessionStore::list_sessions`]).
    pub fn new(session_id: impl Into<String>, modified: DateTime<Utc>) -> Self {
        StoredSession {
            session_id: session_id.into(),
            modified,
        }
    }
}

/// Where session transcripts are kept. See the [module docs](self) for the contract.
///
/// Only [`append`](SessionStore::append) and [`load`](SessionStore::load) are
/// required. The trait is dyn-compatible: share a store as
/// `Arc<dyn SessionStore>`.
///
/// # Errors
///
/// Implementations report failures of their backend as
/// [`Storage`](ErrorKind::Storage) errors ([`Error::custom`] builds one) and optional
/// methods they do not provide as [`Unsupported`](ErrorKind::Unsupported).
pub trait SessionStore: Send + Sync + 'static {
    /// Appends `entries` to the transcript `key`, after what it holds, skipping each
    /// entry whose string `uuid` the key already holds. Appending nothing is a no-op
    /// (it creates no session).
    fn append<'a>(&'a self, key: &'a SessionKey, entries: &'a [Value])
    -> BoxFuture<'a, Result<()>>;

    /// The entries of `key` in append order; an empty stream for an unknown key.
    fn load<'a>(&'a self, key: &'a SessionKey) -> EntryStream<'a>;

    /// The sessions (main transcripts) of a project, in no particular order.
    /// Optional: [`Unsupported`](ErrorKind::Unsupported) by default.
    fn list_sessions<'a>(
        &'a self,
        project_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>>> {
        let _ = project_key;
        Box::pin(async { Err(unsupported("list_sessions")) })
    }

    /// Deletes a transcript. For a main key, also every subpath of the session; for a
    /// key with a subpath, that transcript only. Deleting an unknown key is not an
    /// error. Optional: [`Unsupported`](ErrorKind::Unsupported) by default.
    fn delete<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<()>> {
        let _ = key;
        Box::pin(async { Err(unsupported("delete")) })
    }

    /// The subpaths stored under `key`'s session (the main transcript excluded),
    /// sorted. Optional: [`Unsupported`](ErrorKind::Unsupported) by default.
    fn list_subkeys<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<Vec<String>>> {
        let _ = key;
        Box::pin(async { Err(unsupported("list_subkeys")) })
    }
}

impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    fn append<'a>(
        &'a self,
        key: &'a SessionKey,
        entries: &'a [Value],
    ) -> BoxFuture<'a, Result<()>> {
        (**self).append(key, entries)
    }

    fn load<'a>(&'a self, key: &'a SessionKey) -> EntryStream<'a> {
        (**self).load(key)
    }

    fn list_sessions<'a>(
        &'a self,
        project_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>>> {
        (**self).list_sessions(project_key)
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<()>> {
        (**self).delete(key)
    }

    fn list_subkeys<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<Vec<String>>> {
        (**self).list_subkeys(key)
    }
}

fn unsupported(method: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("this session store does not support {method}"),
    )
}

/// The `uuid` of a transcript entry: its idempotency key, when it is a string.
pub fn entry_uuid(entry: &Value) -> Option<&str> {
    entry.get("uuid").and_then(Value::as_str)
}
