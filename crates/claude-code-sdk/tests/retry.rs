//! `query_with_retry` against the real CLI: what is retried and what is not.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_code_sdk::{ErrorKind, RetryPolicy, query_with_retry};
use claude_code_testkit::{Reply, Rule};
use common::{Harness, result_of};
use serde_json::json;

/// Each retry's attempt number and wait.
type RetryLog = Arc<Mutex<Vec<(u32, Duration)>>>;

/// A policy with short waits that records each retry's attempt number and wait.
fn recording_policy(max: u32) -> (RetryPolicy, RetryLog) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let policy = RetryPolicy::exponential(max, Duration::from_millis(50))
        .max_delay(Duration::from_millis(200))
        .on_retry(move |event| log.lock().unwrap().push((event.attempt, event.delay)));
    (policy, seen)
}

#[tokio::test]
async fn an_overloaded_api_is_retried_with_backoff_until_it_succeeds() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().times(2).reply(Reply::error(529)));
    h.mock
        .on(Rule::any().reply(Reply::text("third time lucky")));
    let (policy, seen) = recording_policy(3);

    let messages = query_with_retry("hello", h.options().build().unwrap(), policy)
        .await
        .unwrap();

    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("third time lucky")
    );
    let retries = seen.lock().unwrap().clone();
    assert_eq!(retries.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert!(retries.iter().all(|r| r.1 <= Duration::from_millis(200)));
    assert_eq!(h.mock.requests().len(), 3);
}

#[tokio::test]
async fn retries_give_up_after_the_last_attempt() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::error(529)));
    let (policy, seen) = recording_policy(2);
    let err = query_with_retry("hello", h.options().build().unwrap(), policy)
        .await
        .unwrap_err();
    assert_eq!(err.api_status(), Some(529));
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(h.mock.requests().len(), 3);
}

#[tokio::test]
async fn an_authentication_failure_is_not_retried() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::error(401)));
    let (policy, seen) = recording_policy(3);
    let err = query_with_retry("hello", h.options().build().unwrap(), policy)
        .await
        .unwrap_err();
    assert_eq!(err.api_status(), Some(401));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(h.mock.requests().len(), 1);
}

/// A model that runs a command, then fails with 529 (once).
fn bash_then_overloaded(h: &Harness) {
    h.mock.on(Rule::prompt_contains("append").times(1).steps([
        Reply::tool_use("Bash", json!({"command": "echo line >> log.txt"})),
        Reply::error(529),
    ]));
}

#[tokio::test]
async fn a_failure_after_a_command_ran_is_not_retried_from_scratch() {
    let h = Harness::new().await;
    bash_then_overloaded(&h);
    let (policy, seen) = recording_policy(3);
    let options = h.options().allowed_tools(["Bash"]).build().unwrap();

    let err = query_with_retry("append a line", options, policy)
        .await
        .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::SideEffectsNotRepeatable, "{err:?}");
    assert_eq!(err.tools_ran(), ["Bash"]);
    assert!(seen.lock().unwrap().is_empty());
    let log = std::fs::read_to_string(h.file("log.txt")).unwrap();
    assert_eq!(log.lines().count(), 1, "the command ran exactly once");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("529"), "{source}");
}

#[tokio::test]
async fn resume_after_tools_continues_the_same_session() {
    let h = Harness::new().await;
    bash_then_overloaded(&h);
    let (policy, seen) = recording_policy(3);
    let options = h.options().allowed_tools(["Bash"]).build().unwrap();

    let messages = query_with_retry("append a line", options, policy.resume_after_tools())
        .await
        .unwrap();

    assert_eq!(seen.lock().unwrap().len(), 1);
    let log = std::fs::read_to_string(h.file("log.txt")).unwrap();
    assert_eq!(log.lines().count(), 1, "the command did not run again");
    let last = h.mock.requests().pop().unwrap();
    assert!(
        last.has_tool_result_for("Bash"),
        "the resumed model sees what already ran"
    );
    assert!(last.mentions("append a line"));
    assert!(!result_of(&messages).is_error);
}

#[tokio::test]
async fn a_run_cut_off_while_a_command_runs_is_not_retried() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("long job").reply(Reply::tool_use(
            "Bash",
            json!({"command": "echo started >> log.txt; sleep 300"}),
        )));
    let (policy, seen) = recording_policy(3);
    // Long enough for the command to start on a loaded machine (2.1.197 took more than
    // 8 s there), far shorter than its 300 s sleep.
    let options = h
        .options()
        .allowed_tools(["Bash"])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let err = query_with_retry("run the long job", options, policy)
        .await
        .unwrap_err();

    // The timeout is transient, but the command may have done its work: no retry.
    assert_eq!(err.kind(), ErrorKind::SideEffectsNotRepeatable, "{err:?}");
    assert_eq!(err.tools_ran(), ["Bash"]);
    assert!(seen.lock().unwrap().is_empty());
    let log = std::fs::read_to_string(h.file("log.txt")).unwrap();
    assert_eq!(log.lines().count(), 1);
    // The command the timeout cut off was killed with its CLI.
    let cwd = h.sandbox.cwd().canonicalize().unwrap();
    let left = claude_code_testkit::survivors_in(&cwd, Duration::from_secs(10)).await;
    assert_eq!(left, Vec::<u32>::new());
}
