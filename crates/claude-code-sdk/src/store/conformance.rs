//! The conformance suite for [`SessionStore`] implementations (feature
//! `store-conformance`).
//!
//! [`check_session_store`] runs every contract of the [module docs](super) against a
//! store and reports the first one it breaks. It works in project keys of its own
//! (`conformance-<uuid>-…`), so it can run against a shared database without touching
//! other data; it deletes what it wrote when the store supports
//! [`delete`](SessionStore::delete).
//!
//! ```no_run
//! use claude_code_sdk::store::{InMemorySessionStore, conformance::check_session_store};
//!
//! # async fn test() {
//! let report = check_session_store(&InMemorySessionStore::new()).await.unwrap();
//! assert!(report.skipped().is_empty(), "{report}");
//! # }
//! ```
//!
//! | contract | what it checks |
//! |---|---|
//! | `append_then_load` | entries come back deep-equal and in order |
//! | `append_order` | several appends keep call order |
//! | `empty_append` | appending nothing changes nothing and creates no session |
//! | `unknown_key` | an unknown key, or an unknown subpath of a known session, loads empty |
//! | `idempotent_uuid` | an entry whose `uuid` the key holds is skipped, in a later or the same call; entries without `uuid` are kept; a uuid in another key is independent |
//! | `fidelity` | unicode, `\u0000`, big and small numbers, nesting round-trip |
//! | `subpaths` | a subpath is stored apart from the main transcript |
//! | `project_isolation` | the same session id in two projects stays apart |
//! | `list_sessions` | the sessions of a project, not its subpaths, with a plausible, advancing time; none for an unknown project |
//! | `list_subkeys` | the subpaths of one session, sorted, without the main transcript |
//! | `delete` | deleting a session removes its subpaths and nothing else; deleting a subpath removes only it; deleting an unknown key succeeds |
//! | `concurrent_writers` | two writers appending to one key at once: nothing lost, each writer's order kept |
//! | `large_transcript` | a 32 MiB transcript of base64 images loads whole |
//!
//! Optional methods that answer [`Unsupported`](crate::ErrorKind::Unsupported) are
//! skipped, and named in [`ConformanceReport::skipped`].

use std::fmt;

use futures::TryStreamExt;
use serde_json::{Value, json};

use super::{SessionKey, SessionStore};
use crate::error::{Error, Result};

/// What [`check_session_store`] checked.
#[derive(Debug, Clone, Default)]
pub struct ConformanceReport {
    passed: Vec<&'static str>,
    skipped: Vec<&'static str>,
}

impl ConformanceReport {
    /// The contracts that held.
    pub fn passed(&self) -> &[&'static str] {
        &self.passed
    }

    /// The contracts not checked because the store does not support an optional
    /// method they need.
    pub fn skipped(&self) -> &[&'static str] {
        &self.skipped
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "passed: {}", self.passed.join(", "))?;
        if !self.skipped.is_empty() {
            write!(f, "; skipped (unsupported): {}", self.skipped.join(", "))?;
        }
        Ok(())
    }
}

/// A contract the store broke.
#[derive(Debug)]
pub struct ConformanceFailure {
    contract: &'static str,
    detail: String,
    source: Option<Error>,
}

impl ConformanceFailure {
    /// The contract's name (see the table in the [module docs](self)).
    pub fn contract(&self) -> &'static str {
        self.contract
    }

    /// What went wrong.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session store contract `{}` broken: {}",
            self.contract, self.detail
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

type Check<T> = std::result::Result<T, ConformanceFailure>;

struct Suite<'s> {
    store: &'s dyn SessionStore,
    run: String,
    contract: &'static str,
    written: Vec<SessionKey>,
    report: ConformanceReport,
}

/// Runs the conformance suite against `store`.
///
/// # Errors
///
/// The first contract the store breaks, with what was expected and what came back,
/// or the store error that broke it.
///
/// # Cancel safety
///
/// Dropped midway, the suite's data (under its own project keys) stays in the store.
pub async fn check_session_store(
    store: &dyn SessionStore,
) -> std::result::Result<ConformanceReport, ConformanceFailure> {
    let mut suite = Suite {
        store,
        run: format!("conformance-{}", uuid::Uuid::new_v4().simple()),
        contract: "",
        written: Vec::new(),
        report: ConformanceReport::default(),
    };
    let outcome = suite.all().await;
    suite.cleanup().await;
    outcome.map(|()| suite.report)
}

fn entry(uuid: Option<&str>, n: u64) -> Value {
    match uuid {
        Some(uuid) => json!({"type": "x", "uuid": uuid, "n": n}),
        None => json!({"type": "x", "n": n}),
    }
}

impl Suite<'_> {
    async fn all(&mut self) -> Check<()> {
        self.append_then_load().await?;
        self.append_order().await?;
        self.empty_append().await?;
        self.unknown_key().await?;
        self.idempotent_uuid().await?;
        self.fidelity().await?;
        self.subpaths().await?;
        self.project_isolation().await?;
        self.list_sessions().await?;
        self.list_subkeys().await?;
        self.delete().await?;
        self.concurrent_writers().await?;
        self.large_transcript().await?;
        Ok(())
    }

    fn begin(&mut self, contract: &'static str) {
        self.contract = contract;
    }

    fn pass(&mut self) {
        self.report.passed.push(self.contract);
    }

    fn skip(&mut self) {
        self.report.skipped.push(self.contract);
    }

    fn fail(&self, detail: impl Into<String>) -> ConformanceFailure {
        ConformanceFailure {
            contract: self.contract,
            detail: detail.into(),
            source: None,
        }
    }

    fn error(&self, what: &str, error: Error) -> ConformanceFailure {
        ConformanceFailure {
            contract: self.contract,
            detail: format!("{what} failed"),
            source: Some(error),
        }
    }

    fn project(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    fn key(&mut self, project: &str, session: &str) -> Check<SessionKey> {
        let key = SessionKey::new(self.project(project), session)
            .map_err(|e| self.error("building a key", e))?;
        self.written.push(key.clone());
        Ok(key)
    }

    fn sub(&self, key: &SessionKey, subpath: &str) -> Check<SessionKey> {
        key.with_subpath(subpath)
            .map_err(|e| self.error("building a key", e))
    }

    async fn append(&self, key: &SessionKey, entries: &[Value]) -> Check<()> {
        self.store
            .append(key, entries)
            .await
            .map_err(|e| self.error(&format!("append to {key}"), e))
    }

    async fn load(&self, key: &SessionKey) -> Check<Vec<Value>> {
        self.store
            .load(key)
            .try_collect()
            .await
            .map_err(|e| self.error(&format!("load of {key}"), e))
    }

    async fn expect(&self, key: &SessionKey, expected: &[Value]) -> Check<()> {
        let loaded = self.load(key).await?;
        if loaded != expected {
            return Err(self.fail(format!(
                "load of {key}: expected {}, got {}",
                summarize(expected),
                summarize(&loaded)
            )));
        }
        Ok(())
    }

    /// `Ok(None)` when the method is unsupported.
    async fn optional<T>(&self, what: &str, result: Result<T>) -> Check<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_unsupported() => Ok(None),
            Err(e) => Err(self.error(what, e)),
        }
    }

    async fn append_then_load(&mut self) -> Check<()> {
        self.begin("append_then_load");
        let key = self.key("p", "s")?;
        let entries = [entry(Some("b"), 1), entry(Some("a"), 2), entry(None, 3)];
        self.append(&key, &entries).await?;
        self.expect(&key, &entries).await?;
        self.pass();
        Ok(())
    }

    async fn append_order(&mut self) -> Check<()> {
        self.begin("append_order");
        let key = self.key("order", "s")?;
        let all: Vec<Value> = (0..7)
            .map(|n| entry(Some(&format!("u{}", 9 - n)), n))
            .collect();
        self.append(&key, &all[..1]).await?;
        self.append(&key, &all[1..4]).await?;
        self.append(&key, &all[4..]).await?;
        self.expect(&key, &all).await?;
        self.pass();
        Ok(())
    }

    async fn empty_append(&mut self) -> Check<()> {
        self.begin("empty_append");
        let key = self.key("empty", "s")?;
        self.append(&key, &[]).await?;
        self.expect(&key, &[]).await?;
        let listed = self
            .optional(
                "list_sessions",
                self.store.list_sessions(key.project_key()).await,
            )
            .await?;
        if let Some(listed) = listed
            && !listed.is_empty()
        {
            return Err(self.fail("an empty append created a session"));
        }
        let first = entry(Some("a"), 1);
        self.append(&key, std::slice::from_ref(&first)).await?;
        self.append(&key, &[]).await?;
        self.expect(&key, &[first]).await?;
        self.pass();
        Ok(())
    }

    async fn unknown_key(&mut self) -> Check<()> {
        self.begin("unknown_key");
        let known = self.key("unknown", "known")?;
        self.append(&known, &[entry(Some("x"), 1)]).await?;
        let never = self.key("unknown", "never")?;
        self.expect(&never, &[]).await?;
        let sub = self.sub(&known, "subagents/agent-none")?;
        self.expect(&sub, &[]).await?;
        self.pass();
        Ok(())
    }

    async fn idempotent_uuid(&mut self) -> Check<()> {
        self.begin("idempotent_uuid");
        let key = self.key("idem", "s")?;
        let a = entry(Some("a"), 1);
        let a_again = json!({"type": "x", "uuid": "a", "n": 99});
        let b = entry(Some("b"), 2);
        let plain = entry(None, 3);
        self.append(&key, &[a.clone(), plain.clone()]).await?;
        // A retried batch that partly landed, with a duplicate inside the call too.
        self.append(&key, &[a_again, b.clone(), b.clone(), plain.clone()])
            .await?;
        self.expect(&key, &[a.clone(), plain.clone(), b, plain])
            .await?;
        let other = self.key("idem", "other")?;
        self.append(&other, std::slice::from_ref(&a)).await?;
        self.expect(&other, &[a]).await?;
        self.pass();
        Ok(())
    }

    async fn fidelity(&mut self) -> Check<()> {
        self.begin("fidelity");
        let key = self.key("fidelity", "s")?;
        let entries = [
            json!({"type": "x", "uuid": "f1", "text": "héllo wörld ✓ 😀 \u{0} \"quoted\" \\ \n\t"}),
            json!({"type": "x", "uuid": "f2", "big": u64::MAX, "neg": i64::MIN, "float": 0.1, "zero": 0, "null": null, "bool": true}),
            json!({"type": "x", "uuid": "f3", "nested": {"a": [1, {"b": [[], {}]}], "z": {"y": "x"}}, "empty": ""}),
        ];
        self.append(&key, &entries).await?;
        self.expect(&key, &entries).await?;
        self.pass();
        Ok(())
    }

    async fn subpaths(&mut self) -> Check<()> {
        self.begin("subpaths");
        let key = self.key("sub", "s")?;
        let sub = self.sub(&key, "subagents/agent-1")?;
        let deep = self.sub(&key, "subagents/workflows/w1/agent-2")?;
        self.append(&key, &[entry(Some("m"), 1)]).await?;
        self.append(&sub, &[entry(Some("m"), 2)]).await?;
        self.append(&deep, &[entry(Some("d"), 3)]).await?;
        self.expect(&key, &[entry(Some("m"), 1)]).await?;
        self.expect(&sub, &[entry(Some("m"), 2)]).await?;
        self.expect(&deep, &[entry(Some("d"), 3)]).await?;
        self.pass();
        Ok(())
    }

    async fn project_isolation(&mut self) -> Check<()> {
        self.begin("project_isolation");
        let a = self.key("iso-a", "s1")?;
        let b = self.key("iso-b", "s1")?;
        self.append(&a, &[json!({"type": "x", "from": "A"})])
            .await?;
        self.append(&b, &[json!({"type": "x", "from": "B"})])
            .await?;
        self.expect(&a, &[json!({"type": "x", "from": "A"})])
            .await?;
        self.expect(&b, &[json!({"type": "x", "from": "B"})])
            .await?;
        self.pass();
        Ok(())
    }

    async fn list_sessions(&mut self) -> Check<()> {
        self.begin("list_sessions");
        let project = self.project("list");
        let Some(before) = self
            .optional("list_sessions", self.store.list_sessions(&project).await)
            .await?
        else {
            self.skip();
            return Ok(());
        };
        if !before.is_empty() {
            return Err(self.fail("a project never appended to lists sessions"));
        }
        let a = self.key("list", "a")?;
        let b = self.key("list", "b")?;
        let other = self.key("list-other", "c")?;
        self.append(&a, &[entry(None, 1)]).await?;
        self.append(&b, &[entry(None, 1)]).await?;
        self.append(&other, &[entry(None, 1)]).await?;
        self.append(&self.sub(&a, "subagents/agent-1")?, &[entry(None, 1)])
            .await?;
        let listed = self
            .store
            .list_sessions(&project)
            .await
            .map_err(|e| self.error("list_sessions", e))?;
        let mut ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
        ids.sort_unstable();
        if ids != ["a", "b"] {
            return Err(self.fail(format!("expected sessions [a, b], got {ids:?}")));
        }
        let floor = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        if let Some(old) = listed.iter().find(|s| s.modified < floor) {
            return Err(self.fail(format!(
                "implausible modification time {} (seconds taken for milliseconds?)",
                old.modified
            )));
        }
        let first = listed
            .iter()
            .find(|s| s.session_id == "a")
            .map(|s| s.modified);
        self.append(&a, &[entry(None, 2)]).await?;
        let again = self
            .store
            .list_sessions(&project)
            .await
            .map_err(|e| self.error("list_sessions", e))?;
        let second = again
            .iter()
            .find(|s| s.session_id == "a")
            .map(|s| s.modified);
        if second <= first {
            return Err(self.fail(format!(
                "an append did not advance the modification time ({first:?} then {second:?})"
            )));
        }
        self.pass();
        Ok(())
    }

    async fn list_subkeys(&mut self) -> Check<()> {
        self.begin("list_subkeys");
        let key = self.key("subkeys", "s")?;
        let Some(none) = self
            .optional("list_subkeys", self.store.list_subkeys(&key).await)
            .await?
        else {
            self.skip();
            return Ok(());
        };
        if !none.is_empty() {
            return Err(self.fail(format!("an unknown session lists subkeys {none:?}")));
        }
        self.append(&key, &[entry(None, 1)]).await?;
        let only_main = self
            .store
            .list_subkeys(&key)
            .await
            .map_err(|e| self.error("list_subkeys", e))?;
        if !only_main.is_empty() {
            return Err(self.fail(format!(
                "the main transcript is listed as a subkey: {only_main:?}"
            )));
        }
        self.append(&self.sub(&key, "subagents/agent-2")?, &[entry(None, 1)])
            .await?;
        self.append(&self.sub(&key, "subagents/agent-1")?, &[entry(None, 1)])
            .await?;
        let neighbour = self.key("subkeys", "other")?;
        self.append(
            &self.sub(&neighbour, "subagents/agent-x")?,
            &[entry(None, 1)],
        )
        .await?;
        let listed = self
            .store
            .list_subkeys(&key)
            .await
            .map_err(|e| self.error("list_subkeys", e))?;
        if listed != ["subagents/agent-1", "subagents/agent-2"] {
            return Err(self.fail(format!(
                "expected [subagents/agent-1, subagents/agent-2], got {listed:?}"
            )));
        }
        self.pass();
        Ok(())
    }

    async fn delete(&mut self) -> Check<()> {
        self.begin("delete");
        let key = self.key("del", "s")?;
        let Some(()) = self
            .optional("delete", self.store.delete(&key).await)
            .await?
        else {
            self.skip();
            return Ok(());
        };
        let sub1 = self.sub(&key, "subagents/agent-1")?;
        let sub2 = self.sub(&key, "subagents/agent-2")?;
        let sibling = self.key("del", "s2")?;
        let elsewhere = self.key("del-other", "s")?;
        for k in [&key, &sub1, &sub2, &sibling, &elsewhere] {
            self.append(k, &[entry(Some("u"), 1)]).await?;
        }
        self.store
            .delete(&sub1)
            .await
            .map_err(|e| self.error("delete of a subpath", e))?;
        self.expect(&sub1, &[]).await?;
        self.expect(&sub2, &[entry(Some("u"), 1)]).await?;
        self.expect(&key, &[entry(Some("u"), 1)]).await?;
        self.store
            .delete(&key)
            .await
            .map_err(|e| self.error("delete of a session", e))?;
        for gone in [&key, &sub2] {
            self.expect(gone, &[]).await?;
        }
        for kept in [&sibling, &elsewhere] {
            self.expect(kept, &[entry(Some("u"), 1)]).await?;
        }
        if let Some(subkeys) = self
            .optional("list_subkeys", self.store.list_subkeys(&key).await)
            .await?
            && !subkeys.is_empty()
        {
            return Err(self.fail(format!("a deleted session still lists subkeys {subkeys:?}")));
        }
        if let Some(listed) = self
            .optional(
                "list_sessions",
                self.store.list_sessions(key.project_key()).await,
            )
            .await?
            && listed.iter().any(|s| s.session_id == key.session_id())
        {
            return Err(self.fail("a deleted session is still listed"));
        }
        // A deleted session starts afresh: an old uuid is new again.
        self.append(&key, &[entry(Some("u"), 2)]).await?;
        self.expect(&key, &[entry(Some("u"), 2)]).await?;
        self.pass();
        Ok(())
    }

    async fn concurrent_writers(&mut self) -> Check<()> {
        self.begin("concurrent_writers");
        let key = self.key("concurrent", "s")?;
        const BATCHES: u64 = 40;
        const PER_BATCH: u64 = 5;
        let store = self.store;
        let writer = |name: &'static str| {
            let key = key.clone();
            async move {
                for batch in 0..BATCHES {
                    let entries: Vec<Value> = (0..PER_BATCH)
                        .map(|i| {
                            let n = batch * PER_BATCH + i;
                            json!({"type": "x", "uuid": format!("{name}-{n}"), "writer": name, "n": n})
                        })
                        .collect();
                    store.append(&key, &entries).await?;
                }
                Ok::<(), Error>(())
            }
        };
        let (a, b) = futures::join!(writer("a"), writer("b"));
        a.map_err(|e| self.error("writer a's append", e))?;
        b.map_err(|e| self.error("writer b's append", e))?;
        let loaded = self.load(&key).await?;
        if loaded.len() as u64 != 2 * BATCHES * PER_BATCH {
            return Err(self.fail(format!(
                "expected {} entries from two writers, got {}",
                2 * BATCHES * PER_BATCH,
                loaded.len()
            )));
        }
        for name in ["a", "b"] {
            let order: Vec<u64> = loaded
                .iter()
                .filter(|e| e["writer"] == name)
                .filter_map(|e| e["n"].as_u64())
                .collect();
            let expected: Vec<u64> = (0..BATCHES * PER_BATCH).collect();
            if order != expected {
                return Err(self.fail(format!("writer {name}'s entries are out of order")));
            }
        }
        self.pass();
        Ok(())
    }

    async fn large_transcript(&mut self) -> Check<()> {
        self.begin("large_transcript");
        let key = self.key("large", "s")?;
        // 16 screenshots of 2 MiB as base64 image blocks: 32 MiB of entries.
        let image = |i: usize| {
            let data: String = std::iter::repeat_n(
                "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg",
                (2 << 20) / 96,
            )
            .collect::<String>()
                + &format!("{i:08}");
            json!({
                "type": "user",
                "uuid": format!("img-{i}"),
                "message": {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
                    ]}
                ]}
            })
        };
        let entries: Vec<Value> = (0..16).map(image).collect();
        for chunk in entries.chunks(4) {
            self.append(&key, chunk).await?;
        }
        let loaded = self.load(&key).await?;
        if loaded.len() != entries.len() {
            return Err(self.fail(format!(
                "expected {} large entries, got {}",
                entries.len(),
                loaded.len()
            )));
        }
        if let Some(i) = (0..entries.len()).find(|&i| loaded[i] != entries[i]) {
            return Err(self.fail(format!("large entry {i} came back different")));
        }
        self.pass();
        Ok(())
    }

    async fn cleanup(&mut self) {
        let mut sessions: Vec<SessionKey> = self.written.iter().map(SessionKey::main).collect();
        sessions.sort();
        sessions.dedup();
        for key in sessions {
            if let Err(e) = self.store.delete(&key).await {
                if e.is_unsupported() {
                    return;
                }
                tracing::warn!(%key, error = %e, "conformance suite: cleanup failed");
            }
        }
    }
}

fn summarize(entries: &[Value]) -> String {
    let text = serde_json::to_string(entries).unwrap_or_default();
    crate::error::shorten(&text, 600)
}
