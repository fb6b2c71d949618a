//! File checkpoints against the real CLI: a turn's `Edit` and `Write` change real files
//! in the sandbox, a dry run says what a rewind would change and changes nothing, and
//! the rewind puts the files back.

mod common;

use claude_code_sdk::{ClaudeClient, ErrorKind, Message, PermissionMode};
use claude_code_testkit::{Reply, Rule};
use common::Harness;
use futures::StreamExt;
use serde_json::json;

/// Runs one turn; returns its messages (every item must be `Ok`).
async fn turn(client: &ClaudeClient, prompt: &str) -> Vec<Message> {
    client.query(prompt).await.unwrap();
    let items: Vec<_> = client.receive_response().collect().await;
    items
        .into_iter()
        .map(|item| item.expect("the turn succeeds"))
        .collect()
}

/// The id of the turn's prompt, as the CLI echoed it back.
fn prompt_id(messages: &[Message], prompt: &str) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            Message::User(user) if user.is_replay && m.content().contains(prompt) => {
                user.uuid.clone()
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the prompt {prompt:?} came back with a uuid: {messages:#?}"))
}

/// The mock's script: turn 1 reads and edits `notes.txt` and writes a new `added.txt`;
/// turn 2 edits `notes.txt` again.
fn script(h: &Harness) {
    let notes = h.file("notes.txt").display().to_string();
    let added = h.file("added.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("FIRST_CHANGE").steps([
        Reply::tool_use("Read", json!({"file_path": notes})),
        Reply::tool_use(
            "Edit",
            json!({"file_path": notes, "old_string": "original line", "new_string": "edited once"}),
        ),
        Reply::tool_use(
            "Write",
            json!({"file_path": added, "content": "a file that did not exist\n"}),
        ),
        Reply::text("changed two files"),
    ]));
    h.mock.on(Rule::prompt_contains("SECOND_CHANGE").steps([
        Reply::tool_use(
            "Edit",
            json!({"file_path": notes, "old_string": "edited once", "new_string": "edited twice"}),
        ),
        Reply::text("changed it again"),
    ]));
}

#[tokio::test]
async fn a_rewind_restores_the_files_a_turn_changed_and_a_dry_run_changes_nothing() {
    let h = Harness::new().await;
    std::fs::write(h.file("notes.txt"), "original line\nsecond line\n").unwrap();
    script(&h);
    let options = h
        .options()
        .permission_mode(PermissionMode::AcceptEdits)
        .enable_file_checkpointing(true)
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();

    let first = turn(&client, "FIRST_CHANGE please").await;
    let first_id = prompt_id(&first, "FIRST_CHANGE");
    let notes = || std::fs::read_to_string(h.file("notes.txt")).unwrap();
    assert_eq!(notes(), "edited once\nsecond line\n", "the Edit ran");
    assert!(h.file("added.txt").exists(), "the Write ran");

    let second = turn(&client, "SECOND_CHANGE please").await;
    let second_id = prompt_id(&second, "SECOND_CHANGE");
    assert_ne!(first_id, second_id);
    assert_eq!(notes(), "edited twice\nsecond line\n");

    // A dry run to the second prompt: only notes.txt would change, and nothing does.
    let preview = client.rewind_files_dry_run(&second_id).await.unwrap();
    assert!(preview.can_rewind, "{preview:?}");
    assert!(
        preview
            .files_changed
            .iter()
            .any(|f| f.ends_with("notes.txt")),
        "{preview:?}"
    );
    assert!(
        !preview
            .files_changed
            .iter()
            .any(|f| f.ends_with("added.txt")),
        "{preview:?}"
    );
    assert_eq!(
        notes(),
        "edited twice\nsecond line\n",
        "a dry run changes nothing"
    );

    // A dry run to the first prompt names both files.
    let preview = client.rewind_files_dry_run(&first_id).await.unwrap();
    assert!(preview.can_rewind, "{preview:?}");
    for name in ["notes.txt", "added.txt"] {
        assert!(
            preview.files_changed.iter().any(|f| f.ends_with(name)),
            "{name} in {preview:?}"
        );
    }
    assert!(h.file("added.txt").exists());

    // An id with no checkpoint: the dry run says why, the rewind is an error, and
    // nothing changes.
    let unknown = "5b0f0f4e-2d7c-4b61-9f0e-0d3c2f6b1a77";
    let preview = client.rewind_files_dry_run(unknown).await.unwrap();
    assert!(!preview.can_rewind, "{preview:?}");
    assert!(
        preview
            .error
            .as_deref()
            .is_some_and(|e| e.contains("No file checkpoint")),
        "{preview:?}"
    );
    let err = client.rewind_files(unknown).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ControlRequest, "{err:?}");
    assert!(err.to_string().contains("No file checkpoint"), "{err}");
    assert_eq!(notes(), "edited twice\nsecond line\n");

    // The rewind: notes.txt as before the first turn, added.txt gone.
    let done = client.rewind_files(&first_id).await.unwrap();
    assert!(done.can_rewind, "{done:?}");
    assert_eq!(notes(), "original line\nsecond line\n");
    assert!(
        !h.file("added.txt").exists(),
        "a file the turn created is removed"
    );

    // The client goes on.
    h.mock
        .on(Rule::prompt_contains("STILL_THERE").reply(Reply::text("yes")));
    let after = turn(&client, "STILL_THERE?").await;
    assert!(after.iter().any(Message::is_result));
    client.close().await.unwrap();
}

#[tokio::test]
async fn without_checkpointing_a_rewind_is_refused_with_the_clis_reason() {
    let h = Harness::new().await;
    std::fs::write(h.file("notes.txt"), "original line\nsecond line\n").unwrap();
    script(&h);
    let options = h
        .options()
        .permission_mode(PermissionMode::AcceptEdits)
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    let first = turn(&client, "FIRST_CHANGE please").await;
    // Without checkpointing the CLI does not echo prompts: no id to rewind to but one
    // we make up (a tool result's id would do no better).
    assert!(
        !first
            .iter()
            .any(|m| matches!(m, Message::User(u) if u.is_replay)),
        "prompts are echoed only with checkpointing"
    );
    let made_up = "5b0f0f4e-2d7c-4b61-9f0e-0d3c2f6b1a77";
    let err = client.rewind_files(made_up).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::ControlRequest), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(h.file("notes.txt")).unwrap(),
        "edited once\nsecond line\n",
        "nothing was rewound"
    );
}
