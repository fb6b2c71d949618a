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
    Durability, EntryStream, InMemorySessionStore, PostgresSessionStore, SessionKey, SessionStore,
    SqliteSessionStore,
};
use claude_code_testkit::pg::TestDatabase;
use futures::future::BoxFuture;
use serde_json::Value;

const EVERY_CONTRACT: usize = 13;

/// Runs the suite on `store`: every contract passes.
async fn assert_conforms(store: &impl SessionStore) {
    let report = check_session_store(store)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.passed().len(), EVERY_CONTRACT, "{report}");
}

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
    assert_conforms(&store).await;
}

/// `Durability::ProcessCrash` keeps the contracts, and an append it committed survives
/// the process that made it being killed (SIGKILL, no chance to close anything): the
/// test runs itself as that process.
#[tokio::test]
async fn sqlite_store_without_fsync_conforms_and_survives_a_killed_process() {
    const CHILD: &str = "STORE_CONFORMANCE_CHILD_DB";
    if let Ok(path) = std::env::var(CHILD) {
        // The child: append, say so, and wait to be killed.
        let store = SqliteSessionStore::open_with(&path, Durability::ProcessCrash)
            .await
            .unwrap();
        let key = SessionKey::new("killed", "s").unwrap();
        store
            .append(&key, &[serde_json::json!({"type": "user", "uuid": "u1"})])
            .await
            .unwrap();
        println!("appended");
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSessionStore::open_with(dir.path().join("c.db"), Durability::ProcessCrash)
        .await
        .unwrap();
    assert_conforms(&store).await;

    let path = dir.path().join("killed.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_store_without_fsync_conforms_and_survives_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let read = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(read > 0, "the child ended before it appended");
        if line.contains("appended") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let reopened = SqliteSessionStore::open(&path).await.unwrap();
    let key = SessionKey::new("killed", "s").unwrap();
    let seen: Vec<Value> = futures::TryStreamExt::try_collect(reopened.load(&key))
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![serde_json::json!({"type": "user", "uuid": "u1"})]
    );
}

/// An append larger than one `INSERT` of the SQLite store (500 rows) keeps every
/// entry, in order, and its `uuid` idempotence across the chunks.
#[tokio::test]
async fn sqlite_store_keeps_a_large_append_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSessionStore::open(dir.path().join("large.db"))
        .await
        .unwrap();
    let key = SessionKey::new("large", "s").unwrap();
    let entries: Vec<Value> = (0..1203)
        .map(|i| serde_json::json!({"type": "user", "uuid": format!("u{i}"), "n": i}))
        .collect();
    store.append(&key, &entries).await.unwrap();
    // Again, with one new entry at the end: only that one is added.
    let mut again = entries.clone();
    again.push(serde_json::json!({"type": "user", "uuid": "last", "n": 1203}));
    store.append(&key, &again).await.unwrap();
    let seen: Vec<Value> = futures::TryStreamExt::try_collect(store.load(&key))
        .await
        .unwrap();
    assert_eq!(seen.len(), 1204);
    assert!(
        seen.iter().enumerate().all(|(i, e)| e["n"] == i),
        "out of order"
    );
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresSessionStore::connect(db.url()).await.unwrap();
    assert_conforms(&store).await;
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
