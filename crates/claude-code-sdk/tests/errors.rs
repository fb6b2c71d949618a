//! Failed runs end in typed errors: API errors from the mock model, an unreachable API.

mod common;

use claude_code_sdk::{ErrorKind, query};
use claude_code_testkit::{Reply, Rule, Sandbox};
use common::{Harness, result_of};

/// Runs one prompt against a model that answers with `status`.
async fn run_with_status(status: u16) -> (Vec<claude_code_sdk::Message>, claude_code_sdk::Error) {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::error(status)));
    let options = h.options().max_api_retries(0).build().unwrap();
    let (messages, error) = query("hello", options).collect_messages().await;
    (
        messages,
        error.unwrap_or_else(|| panic!("a {status} ends the stream with an error")),
    )
}

#[tokio::test]
async fn api_401_is_an_api_error_that_is_not_transient() {
    let (messages, err) = run_with_status(401).await;
    let result = result_of(&messages);
    assert!(result.is_error);
    assert!(messages.last().unwrap().error().is_some());
    assert_eq!(err.kind(), ErrorKind::Api);
    assert_eq!(err.api_status(), Some(401));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn api_429_is_transient() {
    let (_, err) = run_with_status(429).await;
    assert!(err.is_api());
    assert_eq!(err.api_status(), Some(429));
    assert!(err.is_transient());
}

#[tokio::test]
async fn api_500_is_transient() {
    let (_, err) = run_with_status(500).await;
    assert_eq!(err.api_status(), Some(500));
    assert!(err.is_transient());
}

#[tokio::test]
async fn api_529_overloaded_is_transient() {
    let (messages, err) = run_with_status(529).await;
    assert_eq!(err.api_status(), Some(529));
    assert!(err.is_transient());
    assert_eq!(
        err.result().unwrap().session_id,
        result_of(&messages).session_id
    );
}

#[tokio::test]
async fn api_400_is_not_transient() {
    let (_, err) = run_with_status(400).await;
    assert_eq!(err.api_status(), Some(400));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn an_unreachable_api_is_a_connection_error() {
    common::init_tracing();
    let sandbox = Sandbox::without_mock();
    let options = claude_code_sdk::ClaudeCodeOptions::builder()
        .cli_path(claude_code_testkit::cli_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .max_api_retries(0)
        .build()
        .unwrap();
    let (messages, err) = query("hello", options).collect_messages().await;
    let err = err.expect("an error");
    assert!(err.is_connection(), "{err:?}");
    assert!(err.is_transient());
    assert!(result_of(&messages).is_error);
}

#[tokio::test]
async fn a_timeout_kills_the_run() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("late").delay(std::time::Duration::from_secs(60))));
    let options = h
        .options()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let mut stream = query("hello", options);
    let mut pid = None;
    let err = loop {
        use futures::StreamExt;
        match stream.next().await {
            Some(Ok(_)) => pid = pid.or(stream.pid()),
            Some(Err(err)) => break err,
            None => panic!("the stream ended without the timeout"),
        }
    };
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.is_transient());
    // Known from the start, whether or not the CLI wrote anything before the timeout
    // (on a loaded machine, 2.1.197 may take seconds to write its first line).
    let pid = pid.or(stream.pid()).expect("the CLI had started");
    assert!(claude_code_testkit::wait_until_gone(&[pid], std::time::Duration::from_secs(10)).await);
}
