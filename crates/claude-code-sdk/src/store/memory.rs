//! [`InMemorySessionStore`]: transcripts in this process's memory.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use super::{EntryStream, SessionKey, SessionStore, StoredSession, entry_uuid};
use crate::error::Result;

/// A [`SessionStore`] in memory: for tests, development and single-process tools.
/// Everything is lost when the process exits, and nothing bounds its size.
///
/// Cheap to clone; clones share the same transcripts. Implements every optional
/// method.
#[derive(Debug, Clone, Default)]
pub struct InMemorySessionStore {
    inner: Arc<Mutex<BTreeMap<SessionKey, Transcript>>>,
}

#[derive(Debug, Default)]
struct Transcript {
    entries: Vec<Arc<Value>>,
    uuids: HashSet<String>,
    modified: Option<DateTime<Utc>>,
}

impl InMemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<SessionKey, Transcript>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of entries `key` holds (0 for an unknown key).
    pub fn len(&self, key: &SessionKey) -> usize {
        self.map().get(key).map_or(0, |t| t.entries.len())
    }
}

impl SessionStore for InMemorySessionStore {
    fn append<'a>(
        &'a self,
        key: &'a SessionKey,
        entries: &'a [Value],
    ) -> BoxFuture<'a, Result<()>> {
        if !entries.is_empty() {
            let mut map = self.map();
            let transcript = map.entry(key.clone()).or_default();
            for entry in entries {
                if let Some(uuid) = entry_uuid(entry)
                    && !transcript.uuids.insert(uuid.to_owned())
                {
                    continue;
                }
                transcript.entries.push(Arc::new(entry.clone()));
            }
            // Strictly increasing per key, like a database's commit order.
            let now = Utc::now();
            transcript.modified = Some(match transcript.modified {
                Some(last) if last >= now => last + chrono::Duration::milliseconds(1),
                _ => now,
            });
        }
        Box::pin(async { Ok(()) })
    }

    fn load<'a>(&'a self, key: &'a SessionKey) -> EntryStream<'a> {
        let entries = self
            .map()
            .get(key)
            .map(|t| t.entries.clone())
            .unwrap_or_default();
        Box::pin(futures::stream::iter(
            entries.into_iter().map(|entry| Ok(Value::clone(&entry))),
        ))
    }

    fn list_sessions<'a>(
        &'a self,
        project_key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>>> {
        let sessions = self
            .map()
            .iter()
            .filter(|(key, _)| key.project_key() == project_key && key.is_main())
            .filter_map(|(key, t)| {
                t.modified
                    .map(|modified| StoredSession::new(key.session_id(), modified))
            })
            .collect();
        Box::pin(async { Ok(sessions) })
    }

    fn delete<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<()>> {
        let mut map = self.map();
        if key.is_main() {
            map.retain(|k, _| {
                !(k.project_key() == key.project_key() && k.session_id() == key.session_id())
            });
        } else {
            map.remove(key);
        }
        Box::pin(async { Ok(()) })
    }

    fn list_subkeys<'a>(&'a self, key: &'a SessionKey) -> BoxFuture<'a, Result<Vec<String>>> {
        let subkeys = self
            .map()
            .keys()
            .filter(|k| k.project_key() == key.project_key() && k.session_id() == key.session_id())
            .filter_map(|k| k.subpath().map(str::to_owned))
            .collect();
        Box::pin(async { Ok(subkeys) })
    }
}
