//! `ConversationManager` and `ClaudeSession` against the real CLI.

mod common;

use std::time::Duration;

use claude_code_sdk::{
    ConversationManager, ErrorKind, ManagerConfig, MemoryStore, claude_session_with,
};
use claude_code_testkit::{Reply, Rule, wait_until_gone};
use common::Harness;

fn scripted(h: &Harness) {
    // Rules match in order: the question first, as it also mentions the key.
    h.mock
        .on(Rule::prompt_contains("Which deploy key")
            .reply(Reply::text("The deploy key is K-7731.")));
    h.mock
        .on(Rule::prompt_contains("deploy key")
            .reply(Reply::text("Got it: the deploy key is K-7731.")));
    h.mock
        .on(Rule::prompt_contains("staging").reply(Reply::text("Staging runs on port 8443.")));
}

async fn three_turns(manager: &ConversationManager, h: &Harness) {
    manager
        .start_conversation(
            "ops",
            "Remember: the deploy key is K-7731.",
            h.sandbox.cwd(),
        )
        .await
        .unwrap();
    manager
        .continue_conversation("ops", "Also, staging runs on port 8443.")
        .await
        .unwrap();
    let third = manager
        .continue_conversation("ops", "Which deploy key did I give you?")
        .await
        .unwrap();
    assert_eq!(third.last().unwrap().content(), "The deploy key is K-7731.");
    let last = h.mock.requests().pop().unwrap();
    assert!(
        last.mentions("the deploy key is K-7731"),
        "turn 3 sees turn 1"
    );
    assert!(
        last.mentions("Staging runs on port 8443."),
        "and turn 2's answer"
    );
    let history = manager.history("ops").await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1].response, "Staging runs on port 8443.");
}

#[tokio::test]
async fn a_hot_conversation_keeps_one_process_for_three_turns() {
    let h = Harness::new().await;
    scripted(&h);
    let manager = ConversationManager::new(h.options().build().unwrap());
    three_turns(&manager, &h).await;
    assert_eq!(manager.hot_count(), 1);
    let pid = manager.hot_pid("ops").await.unwrap();
    manager.end("ops").await.unwrap();
    assert!(wait_until_gone(&[pid], Duration::from_secs(10)).await);
    let err = manager
        .continue_conversation("ops", "hello?")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_cold_conversation_resumes_the_session_every_turn() {
    let h = Harness::new().await;
    scripted(&h);
    let manager = ConversationManager::with_store(
        h.options().build().unwrap(),
        MemoryStore::default(),
        ManagerConfig::default().max_hot(0),
    );
    three_turns(&manager, &h).await;
    assert_eq!(manager.hot_count(), 0);
    let record = manager.record("ops").await.unwrap();
    assert!(!record.session_id.is_empty());
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_conversation_continues_after_the_manager_is_rebuilt_over_sqlite() {
    // 2.1.197 writes the transcript later than the turn's end: a process killed by the
    // drop below leaves nothing to resume (found by the compatibility run).
    claude_code_testkit::require_cli!("2.1.331", "a transcript on disk when a turn ends");
    use claude_code_sdk::SqliteStore;
    let h = Harness::new().await;
    scripted(&h);
    let db = h.sandbox.root().join("conversations.db");
    {
        let store = SqliteStore::open(&db).await.unwrap();
        let manager = ConversationManager::with_store(
            h.options().build().unwrap(),
            store,
            ManagerConfig::default(),
        );
        manager
            .start_conversation(
                "ops",
                "Remember: the deploy key is K-7731.",
                h.sandbox.cwd(),
            )
            .await
            .unwrap();
        let pid = manager.hot_pid("ops").await.unwrap();
        drop(manager);
        assert!(
            wait_until_gone(&[pid], Duration::from_secs(10)).await,
            "dropping the manager ends its processes"
        );
    }
    let store = SqliteStore::open(&db).await.unwrap();
    let manager = ConversationManager::with_store(
        h.options().build().unwrap(),
        store,
        ManagerConfig::default(),
    );
    let answer = manager
        .continue_conversation("ops", "Which deploy key did I give you?")
        .await
        .unwrap();
    assert_eq!(
        answer.last().unwrap().content(),
        "The deploy key is K-7731."
    );
    assert!(
        h.mock
            .requests()
            .pop()
            .unwrap()
            .mentions("the deploy key is K-7731")
    );
    assert_eq!(manager.history("ops").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_second_concurrent_turn_is_refused_and_unknown_ids_are_clear() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("slow")
            .reply(Reply::text("finally").delay(Duration::from_secs(2))));
    let manager = ConversationManager::new(h.options().build().unwrap());
    manager
        .start_conversation("c", "hello", h.sandbox.cwd())
        .await
        .unwrap();

    let slow = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.continue_conversation("c", "a slow one").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = manager
        .continue_conversation("c", "me too")
        .await
        .unwrap_err();
    assert!(busy.is_conversation_busy(), "{busy:?}");
    assert_eq!(
        slow.await.unwrap().unwrap().last().unwrap().content(),
        "finally"
    );

    let unknown = manager
        .continue_conversation("nope", "hi")
        .await
        .unwrap_err();
    assert!(unknown.is_not_found());
    assert!(unknown.to_string().contains("nope"));
    assert!(manager.history("nope").await.unwrap_err().is_not_found());
    let taken = manager
        .start_conversation("c", "again", h.sandbox.cwd())
        .await
        .unwrap_err();
    assert!(taken.is_invalid_options());
}

#[tokio::test]
async fn cleanup_ends_idle_conversations_and_their_processes() {
    let h = Harness::new().await;
    let manager = ConversationManager::new(h.options().build().unwrap());
    manager
        .start_conversation("a", "one", h.sandbox.cwd())
        .await
        .unwrap();
    manager
        .start_conversation("b", "two", h.sandbox.cwd())
        .await
        .unwrap();
    let mut pids: Vec<u32> = Vec::new();
    for id in ["a", "b"] {
        pids.extend(manager.hot_pid(id).await);
    }
    assert_eq!(pids.len(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        manager
            .cleanup_old_conversations(Duration::from_millis(10))
            .await
            .unwrap(),
        2
    );
    assert_eq!(manager.hot_count(), 0);
    assert!(wait_until_gone(&pids, Duration::from_secs(10)).await);
    assert!(manager.history("a").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn a_scoped_session_is_gone_when_it_drops() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("colour").reply(Reply::text("Teal, you said.")));
    let pid;
    {
        let session = claude_session_with(h.options().build().unwrap(), h.sandbox.cwd(), 3)
            .await
            .unwrap();
        session.query("My colour is teal.").await.unwrap();
        pid = session.pid().unwrap();
        let answer = session.query("What colour did I say?").await.unwrap();
        assert_eq!(
            session.pid(),
            Some(pid),
            "the second turn ran on the same process"
        );
        assert_eq!(answer.last().unwrap().content(), "Teal, you said.");
        assert!(
            h.mock
                .requests()
                .pop()
                .unwrap()
                .mentions("My colour is teal.")
        );
    }
    assert!(wait_until_gone(&[pid], Duration::from_secs(10)).await);
}
