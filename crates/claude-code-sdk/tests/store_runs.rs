//! A session store in the options: runs mirror their transcripts to it, a resume on
//! another host continues from it, and a store that fails is reported, not fatal.

mod common;

use std::sync::Arc;
use std::time::Duration;

use claude_code_sdk::store::{InMemorySessionStore, SessionKey, SessionStore};
use claude_code_sdk::{Error, ErrorKind, Message, query};
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
use common::{Harness, result_of};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;

async fn entries(store: &dyn SessionStore, key: &SessionKey) -> Vec<Value> {
    store
        .load(key)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_run_mirrors_its_transcript_and_another_host_resumes_from_the_store() {
    claude_code_testkit::require_cli!(
        "2.1.331",
        "the session mirror (--session-mirror) a session store needs"
    );
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("remember").reply(Reply::text("I will remember PINEAPPLE.")));
    let store = Arc::new(InMemorySessionStore::default());
    let options = h.options().session_store(store.clone()).build().unwrap();
    let messages = query("Please remember the word PINEAPPLE", options)
        .collect_all()
        .await
        .unwrap();
    // The mirror lines are the SDK's business, not the caller's.
    assert!(
        !messages.iter().any(
            |m| matches!(m, Message::Unknown(u) if u.kind.as_deref() == Some("transcript_mirror"))
        ),
        "{messages:?}"
    );
    let session = result_of(&messages).session_id.clone();
    let key = SessionKey::for_directory(h.sandbox.cwd(), session.clone()).unwrap();
    let stored = entries(store.as_ref(), &key).await;
    assert!(
        stored
            .iter()
            .any(|e| e.to_string().contains("Please remember the word PINEAPPLE")),
        "{} entries",
        stored.len()
    );

    // Another host: the same project directory, a config directory that never saw
    // the session (no transcript, no login).
    let other = Sandbox::new(&h.mock);
    let elsewhere = claude_code_sdk::ClaudeCodeOptions::builder()
        .cli_path(cli_path())
        .cwd(h.sandbox.cwd())
        .envs(other.env())
        .session_store(store.clone())
        .resume(session.clone())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    assert!(
        !other.config_dir().join("projects").exists(),
        "the other host has no transcripts"
    );
    let messages = query("Which word did I ask you to remember?", elsewhere)
        .collect_all()
        .await
        .unwrap();
    assert!(!result_of(&messages).is_error);
    let second = h.mock.requests().pop().unwrap();
    assert!(second.mentions("Please remember the word PINEAPPLE"));
    assert!(second.mentions("I will remember PINEAPPLE."));
    // The second turn was mirrored too, under the same session.
    let stored = entries(store.as_ref(), &key).await;
    assert!(stored.iter().any(|e| {
        e.to_string()
            .contains("Which word did I ask you to remember?")
    }));
}

/// A store whose appends always fail.
struct Broken;

impl SessionStore for Broken {
    fn append<'a>(
        &'a self,
        _key: &'a SessionKey,
        _entries: &'a [Value],
    ) -> BoxFuture<'a, claude_code_sdk::Result<()>> {
        Box::pin(async { Err(Error::custom(ErrorKind::Storage, "the disk is on fire")) })
    }

    fn load<'a>(&'a self, _key: &'a SessionKey) -> claude_code_sdk::store::EntryStream<'a> {
        Box::pin(futures::stream::empty())
    }
}

#[tokio::test]
async fn a_failing_store_is_reported_before_the_result_and_the_run_goes_on() {
    claude_code_testkit::require_cli!(
        "2.1.331",
        "the session mirror (--session-mirror) a session store needs"
    );
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let options = claude_code_sdk::ClaudeCodeOptions::builder()
        .cli_path(cli_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .session_store(Arc::new(Broken))
        .mirror(claude_code_sdk::store::MirrorConfig::default().retry(2, Duration::from_millis(10)))
        .build()
        .unwrap();
    let messages = query("hello store", options).collect_all().await.unwrap();
    let result_at = messages.iter().position(Message::is_result).unwrap();
    let report = messages
        .iter()
        .position(|m| matches!(m, Message::System(s) if s.subtype == "mirror_error"))
        .expect("a mirror_error message");
    assert!(report < result_at, "reported before the result");
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("Mock reply to: hello store"),
        "the run went on"
    );
    let text = messages[report].raw().to_owned();
    assert!(
        text.contains("the disk is on fire") || text.contains("uuid"),
        "{text}"
    );
}
