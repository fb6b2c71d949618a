//! The sessions API on transcripts the real CLI wrote against the mock: list, read,
//! rename, tag, fork (resumed by the real CLI), delete; in the CLI's files and in a
//! PostgreSQL store.
#![cfg(feature = "postgres")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use claude_code_sdk::sessions::{ForkOptions, SessionInfo, SessionMessage, Sessions};
use claude_code_sdk::store::{
    MaterializeOptions, PostgresSessionStore, SessionKey, SessionStore, import_session,
    materialize_session, project_key_for_directory, projects_dir,
};
use claude_code_sdk::{ContentBlock, Message, query};
use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{RecordedRequest, Reply, Rule};
use common::Harness;
use serde_json::json;

/// Three real sessions: A (two turns), B (parallel tool calls, one with a large
/// input), C (named with `--name`).
struct World {
    h: Harness,
    project: String,
    a: String,
    b: String,
    c: String,
}

async fn world() -> World {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("FIRST_PROMPT_ALPHA").reply(Reply::text("ALPHA_ANSWER one")));
    h.mock
        .on(Rule::prompt_contains("SECOND_PROMPT_ALPHA").reply(Reply::text("ALPHA_TWO two")));
    // B's transcript is over 128 KiB (read by head and tail) whatever the CLI does with
    // a long tool output (2.1.197 keeps 30 000 characters of it): the 200 000 bytes
    // written are in the tool call itself.
    let big = h.file("big.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("PARALLEL_TOOLS").steps([
        Reply::text("Two at once.")
            .then_tool_use("Bash", json!({"command": "echo one", "description": "one"}))
            .then_tool_use(
                "Write",
                json!({"file_path": big, "content": "x".repeat(200_000)}),
            ),
        Reply::text("Both done."),
    ]));
    let run = |options: claude_code_sdk::ClaudeCodeOptions, prompt: &'static str| async move {
        let messages = query(prompt, options).collect_all().await.unwrap();
        common::result_of(&messages).session_id.clone()
    };
    let a = run(h.options().build().unwrap(), "FIRST_PROMPT_ALPHA please").await;
    let again = run(
        h.options().resume(&a).build().unwrap(),
        "SECOND_PROMPT_ALPHA please",
    )
    .await;
    assert_eq!(again, a);
    let b = run(
        h.options()
            .allowed_tools(["Bash", "Write"])
            .build()
            .unwrap(),
        "PARALLEL_TOOLS now",
    )
    .await;
    let c = run(
        h.options()
            .extra_arg("name", Some("Named Session"))
            .build()
            .unwrap(),
        "third session",
    )
    .await;
    let project = project_key_for_directory(h.sandbox.cwd());
    World {
        h,
        project,
        a,
        b,
        c,
    }
}

impl World {
    fn files(&self) -> Sessions {
        Sessions::from_config_dir(self.h.sandbox.config_dir())
    }

    fn transcript(&self, id: &str) -> PathBuf {
        projects_dir(self.h.sandbox.config_dir())
            .join(&self.project)
            .join(format!("{id}.jsonl"))
    }
}

fn find<'a>(list: &'a [SessionInfo], id: &str) -> &'a SessionInfo {
    list.iter()
        .find(|s| s.session_id == id)
        .unwrap_or_else(|| panic!("{id} not listed in {list:#?}"))
}

fn texts(messages: &[SessionMessage]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (m.message.role().as_str().to_owned(), m.message.content()))
        .filter(|(_, text)| !text.is_empty())
        .collect()
}

fn tool_ids(messages: &[SessionMessage]) -> (Vec<String>, Vec<String>) {
    let mut uses = Vec::new();
    let mut results = Vec::new();
    for message in messages {
        let blocks = match &message.message {
            Message::Assistant(a) => &a.content,
            Message::User(u) => &u.content,
            _ => continue,
        };
        for block in blocks {
            match block {
                ContentBlock::ToolUse { id, .. } => uses.push(id.clone()),
                ContentBlock::ToolResult { tool_use_id, .. } => results.push(tool_use_id.clone()),
                _ => {}
            }
        }
    }
    (uses, results)
}

fn said(request: &RecordedRequest, role: &str, needle: &str) -> bool {
    request
        .messages()
        .iter()
        .any(|message| message["role"] == role && message["content"].to_string().contains(needle))
}

fn assert_conversation_a(messages: &[SessionMessage]) {
    assert_eq!(
        texts(messages),
        [
            ("user".to_owned(), "FIRST_PROMPT_ALPHA please".to_owned()),
            ("assistant".to_owned(), "ALPHA_ANSWER one".to_owned()),
            ("user".to_owned(), "SECOND_PROMPT_ALPHA please".to_owned()),
            ("assistant".to_owned(), "ALPHA_TWO two".to_owned()),
        ]
    );
}

fn assert_parallel_b(messages: &[SessionMessage]) {
    let (uses, results) = tool_ids(messages);
    assert_eq!(uses.len(), 2, "{uses:?}");
    let mut sorted_results = results.clone();
    sorted_results.sort();
    let mut sorted_uses = uses.clone();
    sorted_uses.sort();
    assert_eq!(
        sorted_results, sorted_uses,
        "every parallel call has its result"
    );
    // Each result comes after its call; the final answer comes last.
    for id in &uses {
        let call = messages
            .iter()
            .position(|m| matches!(&m.message, Message::Assistant(a) if a.content.iter().any(|b| matches!(b, ContentBlock::ToolUse { id: i, .. } if i == id))))
            .unwrap();
        let result = messages
            .iter()
            .position(|m| matches!(&m.message, Message::User(u) if u.content.iter().any(|b| matches!(b, ContentBlock::ToolResult { tool_use_id, .. } if tool_use_id == id))))
            .unwrap();
        assert!(call < result);
    }
    assert_eq!(messages.last().unwrap().message.content(), "Both done.");
}

#[tokio::test]
async fn sessions_in_the_cli_files() {
    let w = world().await;
    let sessions = w.files();

    // List: every session, newest first, from heads and tails.
    let all = sessions.list_sessions(None).await.unwrap();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all.windows(2)
            .all(|p| p[0].last_modified >= p[1].last_modified)
    );
    assert_eq!(sessions.list_sessions(Some(&w.project)).await.unwrap(), all);
    let a = find(&all, &w.a);
    assert_eq!(a.first_prompt.as_deref(), Some("FIRST_PROMPT_ALPHA please"));
    assert_eq!(a.summary, "SECOND_PROMPT_ALPHA please", "the last prompt");
    assert_eq!(a.title, None);
    assert_eq!(a.project_key, w.project);
    assert_eq!(a.cwd.as_deref(), w.h.sandbox.cwd().to_str());
    assert_eq!(
        a.size_bytes,
        std::fs::metadata(w.transcript(&w.a)).unwrap().len()
    );
    assert!(a.created_at.unwrap() <= a.last_modified);
    let b = find(&all, &w.b);
    assert!(
        b.size_bytes > 2 * 64 * 1024,
        "B is read by head and tail: {}",
        b.size_bytes
    );
    assert_eq!(b.first_prompt.as_deref(), Some("PARALLEL_TOOLS now"));
    let c = find(&all, &w.c);
    assert_eq!(c.title.as_deref(), Some("Named Session"));
    assert_eq!(c.summary, "Named Session");
    assert_eq!(&sessions.get_session_info(&w.a, None).await.unwrap(), a);

    // Read: the conversation, typed; parallel tool calls whole.
    assert_conversation_a(&sessions.get_session_messages(&w.a, None).await.unwrap());
    assert_parallel_b(
        &sessions
            .get_session_messages(&w.b, Some(&w.project))
            .await
            .unwrap(),
    );

    // Rename and tag: appended lines, the last one wins; a cleared tag is gone.
    sessions
        .rename_session(&w.a, "  First title ", None)
        .await
        .unwrap();
    sessions
        .rename_session(&w.a, "Renamed A", Some(&w.project))
        .await
        .unwrap();
    sessions
        .tag_session(&w.b, Some("urgent\u{200B}"), None)
        .await
        .unwrap();
    let info = sessions.get_session_info(&w.a, None).await.unwrap();
    assert_eq!(
        (info.title.as_deref(), info.summary.as_str()),
        (Some("Renamed A"), "Renamed A")
    );
    assert_eq!(
        sessions
            .get_session_info(&w.b, None)
            .await
            .unwrap()
            .tag
            .as_deref(),
        Some("urgent")
    );
    sessions.tag_session(&w.b, None, None).await.unwrap();
    assert_eq!(
        sessions.get_session_info(&w.b, None).await.unwrap().tag,
        None
    );

    // Fork A after its first answer; the real CLI resumes the fork with that history.
    let messages = sessions.get_session_messages(&w.a, None).await.unwrap();
    let first_answer = messages[1].uuid.clone();
    let fork = sessions
        .fork_session(&w.a, None, ForkOptions::new().up_to(&first_answer))
        .await
        .unwrap();
    assert_ne!(fork, w.a);
    let forked = sessions.get_session_messages(&fork, None).await.unwrap();
    assert_eq!(texts(&forked), texts(&messages)[..2]);
    assert!(forked.iter().all(|m| m.session_id == fork));
    assert!(
        forked
            .iter()
            .all(|m| messages.iter().all(|o| o.uuid != m.uuid)),
        "fresh uuids"
    );
    let info = sessions.get_session_info(&fork, None).await.unwrap();
    assert_eq!(info.title.as_deref(), Some("Renamed A (fork)"));
    let resumed = query(
        "AFTER_FORK go on",
        w.h.options().resume(&fork).build().unwrap(),
    )
    .collect_all()
    .await
    .unwrap();
    assert_eq!(common::result_of(&resumed).session_id, fork);
    let request = w.h.mock.requests().pop().unwrap();
    assert!(said(&request, "user", "FIRST_PROMPT_ALPHA"));
    assert!(said(&request, "assistant", "ALPHA_ANSWER"));
    assert!(
        !said(&request, "user", "SECOND_PROMPT_ALPHA"),
        "past the fork point"
    );
    assert!(
        !said(&request, "assistant", "ALPHA_TWO"),
        "past the fork point"
    );
    let whole = sessions
        .fork_session(&w.b, None, ForkOptions::new().title("Copy of B"))
        .await
        .unwrap();
    assert_parallel_b(&sessions.get_session_messages(&whole, None).await.unwrap());
    assert_eq!(
        sessions
            .get_session_info(&whole, None)
            .await
            .unwrap()
            .title
            .as_deref(),
        Some("Copy of B")
    );

    // Delete: the transcript and its subagent directory.
    std::fs::create_dir_all(w.transcript(&w.c).with_extension("").join("subagents")).unwrap();
    sessions.delete_session(&w.c, None).await.unwrap();
    assert!(!w.transcript(&w.c).exists());
    assert!(!w.transcript(&w.c).with_extension("").exists());
    assert!(
        sessions
            .get_session_info(&w.c, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        sessions
            .delete_session(&w.c, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let left: Vec<String> = sessions
        .list_sessions(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(left.len(), 4, "A, B and two forks: {left:?}");
    assert!(!left.contains(&w.c));

    // Bad input is a clear error.
    let unknown = uuid::Uuid::new_v4().to_string();
    assert!(
        sessions
            .get_session_info("not-a-uuid", None)
            .await
            .unwrap_err()
            .is_invalid_options()
    );
    assert!(
        sessions
            .get_session_messages(&unknown, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        sessions
            .rename_session(&unknown, "x", None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        sessions
            .rename_session(&w.a, "   ", None)
            .await
            .unwrap_err()
            .is_invalid_options()
    );
    assert!(
        sessions
            .tag_session(&w.a, Some(" \u{200B} "), None)
            .await
            .unwrap_err()
            .is_invalid_options()
    );
    assert!(
        sessions
            .fork_session(&w.a, None, ForkOptions::new().up_to(&unknown))
            .await
            .unwrap_err()
            .is_invalid_options()
    );
    assert!(
        sessions
            .get_session_info(&w.a, Some("../escape"))
            .await
            .unwrap_err()
            .is_invalid_options()
    );
}

#[tokio::test]
async fn sessions_in_a_postgres_store() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store: Arc<dyn SessionStore> =
        Arc::new(PostgresSessionStore::connect(db.url()).await.unwrap());
    let w = world().await;
    for id in [&w.a, &w.b, &w.c] {
        let key = SessionKey::new(&w.project, id.as_str()).unwrap();
        import_session(store.as_ref(), w.transcript(id), &key)
            .await
            .unwrap();
    }
    let files = w.files();
    let sessions = Sessions::from_store(store.clone());

    // The same listings as from the files, bar the clocks and the JSON sizes.
    let listed = sessions.list_sessions(Some(&w.project)).await.unwrap();
    assert_eq!(listed.len(), 3);
    for on_disk in files.list_sessions(None).await.unwrap() {
        let stored = find(&listed, &on_disk.session_id);
        assert_eq!(
            (
                &stored.summary,
                &stored.title,
                &stored.first_prompt,
                &stored.cwd,
                &stored.created_at
            ),
            (
                &on_disk.summary,
                &on_disk.title,
                &on_disk.first_prompt,
                &on_disk.cwd,
                &on_disk.created_at
            )
        );
        assert!(stored.size_bytes > 0);
    }
    assert!(
        sessions
            .list_sessions(None)
            .await
            .unwrap_err()
            .is_invalid_options()
    );

    // The same conversations.
    let from_store = sessions
        .get_session_messages(&w.a, Some(&w.project))
        .await
        .unwrap();
    assert_conversation_a(&from_store);
    let from_files = files.get_session_messages(&w.a, None).await.unwrap();
    let ids = |m: &[SessionMessage]| m.iter().map(|m| m.uuid.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&from_store), ids(&from_files));
    assert_parallel_b(
        &sessions
            .get_session_messages(&w.b, Some(&w.project))
            .await
            .unwrap(),
    );

    // Rename, tag.
    sessions
        .rename_session(&w.a, "Stored title", Some(&w.project))
        .await
        .unwrap();
    sessions
        .tag_session(&w.a, Some("kept"), Some(&w.project))
        .await
        .unwrap();
    let info = sessions
        .get_session_info(&w.a, Some(&w.project))
        .await
        .unwrap();
    assert_eq!(
        (info.title.as_deref(), info.tag.as_deref()),
        (Some("Stored title"), Some("kept"))
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert!(
        sessions
            .rename_session(&unknown, "x", Some(&w.project))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Fork in the store, materialize it on a fresh config dir, resume it with the CLI.
    let first_answer = from_store[1].uuid.clone();
    let fork = sessions
        .fork_session(
            &w.a,
            Some(&w.project),
            ForkOptions::new().up_to(&first_answer),
        )
        .await
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let key = SessionKey::new(&w.project, fork.as_str()).unwrap();
    materialize_session(
        store.as_ref(),
        &key,
        MaterializeOptions::new().target(target.path()),
    )
    .await
    .unwrap();
    let resumed = query(
        "AFTER_STORE_FORK",
        w.h.options()
            .env("CLAUDE_CONFIG_DIR", target.path().to_str().unwrap())
            .resume(&fork)
            .build()
            .unwrap(),
    )
    .collect_all()
    .await
    .unwrap();
    assert_eq!(common::result_of(&resumed).session_id, fork);
    let request = w.h.mock.requests().pop().unwrap();
    assert!(said(&request, "user", "FIRST_PROMPT_ALPHA"));
    assert!(said(&request, "assistant", "ALPHA_ANSWER"));
    assert!(!said(&request, "user", "SECOND_PROMPT_ALPHA"));
    assert_eq!(
        sessions
            .get_session_info(&fork, Some(&w.project))
            .await
            .unwrap()
            .title
            .as_deref(),
        Some("Stored title (fork)")
    );

    // Delete.
    sessions
        .delete_session(&w.c, Some(&w.project))
        .await
        .unwrap();
    assert!(
        sessions
            .get_session_info(&w.c, Some(&w.project))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        sessions
            .list_sessions(Some(&w.project))
            .await
            .unwrap()
            .len(),
        3
    );
}
