//! A control request of a subtype the SDK does not know is answered with an error that
//! names the subtype, and the run goes on: `fake-claude`'s `unknown-request` mode sends
//! one mid-turn and reports the SDK's answer back as assistant text.

use std::time::Duration;

use claude_code_sdk::{ClaudeCodeOptions, Message, query};
use claude_code_testkit::{FakeMode, Sandbox, fake, fake_claude_path};
use serde_json::Value;

#[tokio::test]
async fn an_unknown_control_request_gets_an_error_answer_and_the_run_succeeds() {
    let sandbox = Sandbox::without_mock();
    let options = ClaudeCodeOptions::builder()
        .cli_path(fake_claude_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .env(fake::MODE_ENV, FakeMode::UnknownRequest.as_str())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let messages = query("hello", options)
        .collect_all()
        .await
        .expect("the run succeeds despite the unknown request");

    // fake-claude echoes the SDK's control_response in its assistant text.
    let text = messages
        .iter()
        .find_map(Message::as_assistant)
        .expect("an assistant message")
        .text();
    let echoed = text
        .strip_prefix(fake::UNKNOWN_REQUEST_ANSWER_PREFIX)
        .unwrap_or_else(|| panic!("unexpected assistant text: {text}"));
    let answer: Value = serde_json::from_str(echoed).expect("the echoed answer is JSON");
    assert_eq!(answer["type"], "control_response", "{answer}");
    let response = &answer["response"];
    assert_eq!(response["subtype"], "error", "{answer}");
    assert_eq!(response["request_id"], fake::UNKNOWN_REQUEST_ID, "{answer}");
    let error = response["error"].as_str().expect("an error text");
    assert!(
        error.contains(fake::UNKNOWN_REQUEST_SUBTYPE),
        "the error names the subtype: {error}"
    );

    let result = messages
        .iter()
        .find_map(Message::as_result)
        .expect("a result");
    assert_eq!(result.subtype, "success");
    assert!(!result.is_error);
    assert!(matches!(messages.last(), Some(Message::Result(_))));
}
