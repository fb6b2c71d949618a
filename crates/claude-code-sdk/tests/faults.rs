//! Faults the real CLI cannot be made to produce, from `fake-claude`: each ends in a
//! typed error (or a clean run) with no process of the CLI's group left running.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use claude_code_sdk::{Message, query};
use claude_code_testkit::{FakeMode, Sandbox, fake, read_pid_file, wait_until_gone};
use common::{fake_options, pid_file, result_of};
use futures::StreamExt;

/// Every pid fake-claude wrote is gone (zombies count as gone).
async fn assert_all_gone(sandbox: &Sandbox) {
    let pids = read_pid_file(pid_file(sandbox));
    assert!(!pids.is_empty(), "fake-claude wrote no pids");
    assert!(
        wait_until_gone(&pids, Duration::from_secs(10)).await,
        "processes survived: {pids:?}"
    );
}

#[tokio::test]
async fn a_crash_mid_stream_is_a_connection_error_with_exit_code_and_stderr() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Crash).build().unwrap();
    let (messages, err) = query("hello", options).collect_messages().await;
    assert!(messages.iter().any(|m| matches!(m, Message::Assistant(_))));
    let err = err.expect("a crash is an error");
    assert!(err.is_connection(), "{err:?}");
    assert_eq!(err.exit_code(), Some(3));
    assert!(
        err.stderr_tail().is_some_and(|t| !t.trim().is_empty()),
        "{err:?}"
    );
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn garbage_lines_are_skipped_and_unknown_types_pass_through() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Garbage).build().unwrap();
    let messages = query("hello", options).collect_all().await.unwrap();
    assert!(!result_of(&messages).is_error);
    assert!(messages.iter().any(|m| matches!(m, Message::Unknown(_))));
    assert!(messages.iter().any(|m| matches!(m, Message::Assistant(_))));
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn a_200_mb_line_arrives_whole_under_the_default_limit() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::HugeLine).build().unwrap();
    let messages = query("hello", options).collect_all().await.unwrap();
    let huge = messages
        .iter()
        .find_map(Message::as_assistant)
        .expect("the huge assistant line");
    assert_eq!(huge.text().len(), 200_000_000);
    assert!(!result_of(&messages).is_error);
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn a_line_over_the_limit_is_a_protocol_error_not_a_hang() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::HugeLine)
        .env(fake::HUGE_BYTES_ENV, (8 * 1024 * 1024).to_string())
        .max_line_bytes(1024 * 1024)
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
    assert!(err.to_string().contains("max_line_bytes"), "{err}");
    assert!(err.raw_line().is_some_and(|l| l.starts_with('{')));
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn a_stderr_flood_is_drained_and_does_not_deadlock() {
    let sandbox = Sandbox::without_mock();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let options = fake_options(&sandbox, FakeMode::StderrFlood)
        .stderr(move |line| {
            counter.fetch_add(line.len() + 1, Ordering::Relaxed);
        })
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let messages = query("hello", options).collect_all().await.unwrap();
    assert!(!result_of(&messages).is_error);
    assert!(seen.load(Ordering::Relaxed) >= 64 * 1024 * 1024, "{seen:?}");
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn a_hang_hits_the_timeout_and_the_group_is_killed() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Hang)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_all_gone(&sandbox).await;
}

#[tokio::test]
async fn close_escalates_to_sigkill_when_sigterm_is_ignored() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::IgnoreSigterm)
        .build()
        .unwrap();
    let mut stream = query("hello", options);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.kind(), "system");
    stream.close().await.unwrap();
    // close() returns once the process is gone.
    let pids = read_pid_file(pid_file(&sandbox));
    assert!(
        pids.iter()
            .all(|p| !claude_code_testkit::pid_is_running(*p)),
        "{pids:?}"
    );
}

#[tokio::test]
async fn dropping_the_query_kills_grandchildren_too() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Grandchild)
        .build()
        .unwrap();
    let mut stream = query("hello", options);
    let _ = stream.next().await.unwrap().unwrap();
    // Wait until fake-claude has written its own pid and its grandchild's.
    let mut pids = Vec::new();
    for _ in 0..200 {
        pids = read_pid_file(pid_file(&sandbox));
        if pids.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    drop(stream);
    assert!(
        wait_until_gone(&pids, Duration::from_secs(10)).await,
        "{pids:?}"
    );
}

#[tokio::test]
async fn a_cli_that_exits_at_start_is_a_connection_error() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::ExitEarly).build().unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_connection(), "{err:?}");
    assert_eq!(err.exit_code(), Some(2));
    assert!(err.stderr_tail().is_some(), "{err:?}");
}

#[tokio::test]
async fn an_old_cli_is_refused() {
    let sandbox = Sandbox::without_mock();
    // A copy, so the version cache (by path) does not mix it up with other tests.
    let old = sandbox.root().join("old-claude");
    std::fs::copy(claude_code_testkit::fake_claude_path(), &old).unwrap();
    let options = fake_options(&sandbox, FakeMode::Ok)
        .cli_path(&old)
        .env(fake::VERSION_ENV, "1.0.128")
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert_eq!(
        err.kind(),
        claude_code_sdk::ErrorKind::UnsupportedCli,
        "{err:?}"
    );
    assert!(err.to_string().contains("1.0.128"), "{err}");
}

#[tokio::test]
async fn the_cli_gets_the_flags_and_environment_the_options_say() {
    let sandbox = Sandbox::without_mock();
    let record = sandbox.root().join("record.jsonl");
    let base =
        fake_options(&sandbox, FakeMode::Ok).env(fake::RECORD_ENV, record.display().to_string());
    let options = base
        .clone()
        .max_turns(2)
        .model("claude-sonnet-4-5")
        .permission_mode(claude_code_sdk::PermissionMode::AcceptEdits)
        .env("ANTHROPIC_MODEL_HINT", "kept")
        .build()
        .unwrap();
    query("hello", options).collect_all().await.unwrap();
    let removed = base.env_remove("CLAUDE_CODE_ENTRYPOINT").build().unwrap();
    query("hello", removed).collect_all().await.unwrap();

    let runs: Vec<_> = claude_code_testkit::read_record(&record)
        .unwrap()
        .into_iter()
        .filter(|inv| !inv.has_flag("--version"))
        .collect();
    assert_eq!(runs.len(), 2);
    let first = &runs[0];
    for flag in ["--output-format", "--input-format", "--verbose"] {
        assert!(first.has_flag(flag), "{flag} missing: {:?}", first.argv);
    }
    assert_eq!(first.flag_value("--max-turns"), Some("2"));
    assert_eq!(first.flag_value("--model"), Some("claude-sonnet-4-5"));
    assert_eq!(first.flag_value("--permission-mode"), Some("acceptEdits"));
    assert_eq!(
        first.env.get("ANTHROPIC_MODEL_HINT").map(String::as_str),
        Some("kept")
    );
    assert_eq!(
        first.env.get("CLAUDE_CODE_ENTRYPOINT").map(String::as_str),
        Some("sdk-cli")
    );
    let stdin = first.stdin_json();
    assert_eq!(stdin[0]["request"]["subtype"], "initialize");
    assert_eq!(stdin[1]["message"]["content"], "hello");
    assert!(!runs[1].env.contains_key("CLAUDE_CODE_ENTRYPOINT"));
}

#[tokio::test]
async fn a_client_whose_cli_died_fails_fast_with_its_exit_code() {
    use claude_code_sdk::ClaudeClient;
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Crash).build().unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    client.query("hello").await.unwrap();
    let turn: Vec<_> = client.receive_response().collect().await;
    let err = turn
        .into_iter()
        .find_map(Result::err)
        .expect("the crash is reported");
    assert!(err.is_connection());
    assert!(!client.is_alive());
    // A guard against a hang, not a timing assertion: the answer is immediate.
    let after = tokio::time::timeout(Duration::from_secs(10), client.set_model(Some("x")))
        .await
        .expect("a request to a dead CLI does not wait for its timeout");
    let err = after.unwrap_err();
    assert!(err.is_connection(), "{err:?}");
    assert!(client.query("again").await.unwrap_err().is_connection());
}

#[tokio::test]
async fn a_conversation_whose_cli_crashed_is_not_kept_hot() {
    use claude_code_sdk::ConversationManager;
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Crash).build().unwrap();
    let manager = ConversationManager::new(options);
    let err = manager
        .start_conversation("c", "hello", sandbox.cwd())
        .await
        .unwrap_err();
    assert!(err.is_connection(), "{err:?}");
    assert_eq!(manager.hot_count(), 0);
}

#[tokio::test]
async fn an_argument_over_the_kernel_limit_is_refused_before_spawning() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Ok)
        .system_prompt("x".repeat(200 * 1024))
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_invalid_options(), "{err:?}");
    assert!(err.to_string().contains("128 KiB"), "{err}");
    assert!(
        read_pid_file(pid_file(&sandbox)).is_empty(),
        "nothing was started"
    );
}
