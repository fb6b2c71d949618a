//! The session store conformance suite against every backend here, and against a
//! minimal store that implements only the required methods.
#![cfg(all(
    feature = "sqlite",
    feature = "postgres",
    feature = "store-conformance"
))]

use std::collections::HashMap;
use std::sync::Mutex;

use claude_code_sdk::store::conformance::check_session_store;
use claude_code_sdk::store::{
    EntryStream, InMemorySessionStore, PostgresSessionStore, SessionKey, SessionStore,
    SqliteSessionStore,
};
use claude_code_testkit::pg::TestDatabase;
use futures::future::BoxFuture;
use serde_json::Value;

const EVERY_CONTRACT: usize = 13;

#[tokio::test]
async fn in_memory_store_conforms() {
    let report = check_session_store(&InMemorySessionStore::new())
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.passed().len(), EVERY_CONTRACT, "{report}");
    assert!(report.skipped().is_empty(), "{report}");
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSessionStore::open(dir.path().join("sessions.db"))
        .await
        .unwrap();
    let report = check_session_store(&store)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.passed().len(), EVERY_CONTRACT, "{report}");
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresSessionStore::connect(db.url()).await.unwrap();
    let report = check_session_store(&store)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.passed().len(), EVERY_CONTRACT, "{report}");
    // Two stores over one database (two replicas) see each other's writes, and a
    // second connect finds the tables in place.
    let other = PostgresSessionStore::connect(db.url()).await.unwrap();
    let key = SessionKey::new("replicas", "s").unwrap();
    store
        .append(&key, &[serde_json::json!({"type": "x", "uuid": "1"})])
        .await
        .unwrap();
    let seen: Vec<Value> = futures::TryStreamExt::try_collect(other.load(&key))
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
}

/// Only the required methods, and a bug: it forgets `uuid` idempotence.
#[derive(Default)]
struct Minimal {
    entries: Mutex<HashMap<SessionKey, Vec<Value>>>,
    dedupe: bool,
}

impl SessionStore for Minimal {
    fn append<'a>(
        &'a self,
        key: &'a SessionKey,
        entries: &'a [Value],
    ) -> BoxFuture<'a, claude_code_sdk::Result<()>> {
        let mut map = self.entries.lock().unwrap();
        if !entries.is_empty() {
            let held = map.entry(key.clone()).or_default();
            for entry in entries {
                let uuid = entry.get("uuid");
                if self.dedupe && uuid.is_some() && held.iter().any(|e| e.get("uuid") == uuid) {
                    continue;
                }
                held.push(entry.clone());
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn load<'a>(&'a self, key: &'a SessionKey) -> EntryStream<'a> {
        let entries = self
            .entries
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default();
        Box::pin(futures::stream::iter(entries.into_iter().map(Ok)))
    }
}

#[tokio::test]
async fn a_store_without_optional_methods_is_checked_on_the_rest() {
    let store = Minimal {
        dedupe: true,
        ..Minimal::default()
    };
    let report = check_session_store(&store)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        report.skipped(),
        ["list_sessions", "list_subkeys", "delete"]
    );
    assert_eq!(report.passed().len(), EVERY_CONTRACT - 3, "{report}");
    let key = SessionKey::new("p", "s").unwrap();
    assert!(store.list_sessions("p").await.unwrap_err().is_unsupported());
    assert!(store.delete(&key).await.unwrap_err().is_unsupported());
    assert!(store.list_subkeys(&key).await.unwrap_err().is_unsupported());
}

#[tokio::test]
async fn the_suite_catches_a_store_that_duplicates_retried_entries() {
    let failure = check_session_store(&Minimal::default())
        .await
        .expect_err("a store without uuid idempotence must fail");
    assert_eq!(failure.contract(), "idempotent_uuid", "{failure}");
}
