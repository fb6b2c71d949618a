//! `ClaudeClient` against the real CLI: many turns on one process, interrupt, and
//! runtime changes of mode and model.

mod common;

use std::time::Duration;

use claude_code_sdk::{ClaudeClient, ErrorKind, Message, PermissionMode};
use claude_code_testkit::{Reply, Rule, pid_is_running, wait_until_gone};
use common::Harness;
use futures::StreamExt;
use serde_json::json;

async fn turn(
    client: &ClaudeClient,
    prompt: &str,
) -> (Vec<Message>, Option<claude_code_sdk::Error>) {
    client.query(prompt).await.unwrap();
    let mut messages = Vec::new();
    let mut error = None;
    let mut stream = std::pin::pin!(client.receive_response());
    while let Some(item) = stream.next().await {
        match item {
            Ok(m) => messages.push(m),
            Err(e) => error = Some(e),
        }
    }
    (messages, error)
}

#[tokio::test]
async fn three_turns_on_one_process_share_the_conversation() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("name is").reply(Reply::text("Nice to meet you, Ada.")));
    h.mock
        .on(Rule::prompt_contains("favourite").reply(Reply::text("Noted: the Analytical Engine.")));
    h.mock
        .on(Rule::prompt_contains("What is my name").reply(Reply::text("Your name is Ada.")));
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    let pid = client.pid().unwrap();
    assert!(!client.server_info().commands.is_empty());

    let (first, _) = turn(&client, "My name is Ada.").await;
    let session = client.session_id().unwrap();
    let (_, _) = turn(&client, "My favourite machine is the Analytical Engine.").await;
    let (third, error) = turn(&client, "What is my name?").await;

    assert!(error.is_none());
    assert_eq!(third.last().unwrap().content(), "Your name is Ada.");
    let last_request = h.mock.requests().pop().unwrap();
    assert!(
        last_request.mentions("My name is Ada."),
        "turn 3 sees turn 1"
    );
    assert!(last_request.mentions("Nice to meet you, Ada."));
    assert!(last_request.mentions("Analytical Engine"));
    assert_eq!(client.pid(), Some(pid), "one process for all turns");
    assert_eq!(client.session_id().unwrap(), session);
    assert!(first.iter().any(Message::is_result));

    let totals = client.totals();
    assert_eq!(totals.turns, 3);
    assert!(totals.total_cost_usd > 0.0);
    assert!(totals.last_turn_cost_usd > 0.0 && totals.last_turn_cost_usd < totals.total_cost_usd);
    client.close().await.unwrap();
    assert!(!pid_is_running(pid));
}

#[tokio::test]
async fn interrupt_ends_a_slow_turn_and_the_client_stays_usable() {
    let h = Harness::new().await;
    // 50 s of text: the interrupt lands mid-stream even when a loaded machine starves
    // the CLI for seconds (the turn ends at the interrupt, not after the text).
    let words: Vec<String> = (0..1000).map(|i| format!("tick{i}")).collect();
    h.mock.on(Rule::prompt_contains("SLOW")
        .reply(Reply::text(words.join(" ")).chunk_delay(Duration::from_millis(50))));
    let options = h.options().include_partial_messages(true).build().unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    let pid = client.pid().unwrap();

    client.query("SLOW please").await.unwrap();
    let mut interrupted = false;
    let mut result = None;
    let mut error = None;
    {
        let mut stream = std::pin::pin!(client.receive_response());
        while let Some(item) = stream.next().await {
            match item {
                Ok(Message::StreamEvent(e)) if e.text_delta().is_some() && !interrupted => {
                    client.interrupt().await.unwrap();
                    interrupted = true;
                }
                Ok(Message::Result(r)) => result = Some(r),
                Ok(_) => {}
                Err(e) => error = Some(e),
            }
        }
    }
    assert!(interrupted);
    let result = result.expect("the interrupted turn still ends with a result");
    assert!(result.is_error, "{result:?}");
    assert_eq!(error.unwrap().kind(), ErrorKind::Interrupted);
    assert!(pid_is_running(pid), "the CLI survives an interrupt");

    let (after, error) = turn(&client, "hello after the interrupt").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        after.last().unwrap().content(),
        "Mock reply to: hello after the interrupt"
    );
    drop(client);
    assert!(wait_until_gone(&[pid], Duration::from_secs(10)).await);
}

#[tokio::test]
async fn set_permission_mode_takes_effect_for_the_next_turn() {
    let h = Harness::new().await;
    let target = h.file("notes.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("write").steps([
        Reply::tool_use("Write", json!({"file_path": target, "content": "hello"})),
        Reply::text("tried"),
    ]));
    let options = h
        .options()
        .permission_mode(PermissionMode::AskForEdits)
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();

    let (_, error) = turn(&client, "write the notes").await;
    assert!(error.is_some_and(|e| e.is_permission()));
    assert!(!h.file("notes.txt").exists());

    client
        .set_permission_mode(PermissionMode::AcceptEdits)
        .await
        .unwrap();
    assert_eq!(client.permission_mode(), Some(PermissionMode::AcceptEdits));
    let (_, error) = turn(&client, "write the notes again").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        std::fs::read_to_string(h.file("notes.txt")).unwrap(),
        "hello"
    );

    let err = client
        .set_permission_mode(PermissionMode::ReadOnly)
        .await
        .unwrap_err();
    assert!(err.is_invalid_options());
}

#[tokio::test]
async fn set_model_changes_the_model_of_the_next_request() {
    let h = Harness::new().await;
    let options = h.options().model("claude-sonnet-4-5").build().unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    turn(&client, "first").await;
    client.set_model(Some("claude-haiku-4-5")).await.unwrap();
    turn(&client, "second").await;
    let requests = h.mock.requests();
    assert_eq!(requests[0].model(), Some("claude-sonnet-4-5"));
    assert_eq!(requests.last().unwrap().model(), Some("claude-haiku-4-5"));
}

#[tokio::test]
async fn control_requests_answer_or_fail_clearly() {
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    let status = client.mcp_status().await.unwrap();
    assert!(status.is_empty(), "no MCP server configured: {status:?}");
    let usage = client.context_usage().await.unwrap();
    assert!(usage.total_tokens > 0, "{usage:?}");
    assert!(!usage.categories.is_empty(), "{usage:?}");
    let err = client
        .control_request(json!({"subtype": "no_such_subtype"}))
        .await
        .unwrap_err();
    // The CLI does not know the subtype: an UnsupportedCli error that names it.
    assert_eq!(err.kind(), ErrorKind::UnsupportedCli, "{err:?}");
    assert!(err.to_string().contains("no_such_subtype"), "{err}");
    assert!(!err.is_transient());
    // The client is still fine.
    let (_, error) = turn(&client, "still there?").await;
    assert!(error.is_none());
}

/// MCP servers changed while the client runs (servers that cannot start, so the test
/// needs no MCP server program): one from the options turned off and on, one added
/// with `set_mcp_servers`, both seen in `mcp_status`, and the added one removed again.
#[tokio::test]
async fn mcp_servers_are_set_toggled_reconnected_and_reported_typed() {
    use claude_code_sdk::{McpConnection, McpServerConfig};
    let h = Harness::new().await;
    let broken = McpServerConfig::stdio("/bin/false", Vec::<String>::new());
    let options = h
        .options()
        .mcp_server("configured", broken.clone())
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    let status = client.mcp_status().await.unwrap();
    assert!(status.iter().any(|s| s.name == "configured"), "{status:?}");
    client.toggle_mcp_server("configured", false).await.unwrap();
    let status = client.mcp_status().await.unwrap();
    let server = status.iter().find(|s| s.name == "configured").unwrap();
    assert_eq!(server.status, McpConnection::Disabled, "{server:?}");
    // Turning it on connects it, which fails for this one, with the reason.
    let err = client
        .toggle_mcp_server("configured", true)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ControlRequest, "{err:?}");
    assert!(err.to_string().contains("Connection closed"), "{err}");

    let set = client
        .set_mcp_servers([("broken", broken.clone())])
        .await
        .unwrap();
    assert_eq!(set.added, ["broken"], "{set:?}");
    let status = client.mcp_status().await.unwrap();
    let server = status
        .iter()
        .find(|s| s.name == "broken")
        .unwrap_or_else(|| panic!("the new server is listed: {status:?}"));
    assert!(
        matches!(
            server.status,
            McpConnection::Failed | McpConnection::Pending
        ),
        "{server:?}"
    );

    // Reconnecting a server that cannot start fails with the CLI's reason; one that
    // does not exist too.
    let err = client
        .reconnect_mcp_server("no-such-server")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ControlRequest, "{err:?}");

    // An in-process server cannot be set this way.
    let sdk = claude_code_sdk::sdk_mcp_server("inproc", "1.0.0", Vec::new());
    let err = client
        .set_mcp_servers([("inproc", McpServerConfig::Sdk(sdk))])
        .await
        .unwrap_err();
    assert!(err.is_invalid_options(), "{err:?}");

    let set = client
        .set_mcp_servers(Vec::<(String, McpServerConfig)>::new())
        .await
        .unwrap();
    assert_eq!(set.removed, ["broken"], "{set:?}");
    assert!(
        !client
            .mcp_status()
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == "broken")
    );
}

/// `set_max_thinking_tokens` reaches the model: the next request asks for thinking
/// with that budget.
#[tokio::test]
async fn set_max_thinking_tokens_changes_the_next_request() {
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().model("claude-sonnet-4-5").build().unwrap())
        .await
        .unwrap();
    client
        .set_max_thinking_tokens(Some(4096), None)
        .await
        .unwrap();
    let (_, error) = turn(&client, "THINK_A_LITTLE").await;
    assert!(error.is_none(), "{error:?}");
    let request = h
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.mentions("THINK_A_LITTLE"))
        .unwrap();
    assert_eq!(
        request.body()["thinking"]["budget_tokens"],
        4096,
        "{}",
        request.body()["thinking"]
    );
}

/// What each other control request does on the real CLI: a stop of an unknown task is
/// taken (the CLI answers it like any other), moving tasks to the background with none running moves none, flag
/// settings apply, skills and plugins reload, models are listed live (2.1.331+), and
/// the start-up lists are typed.
#[tokio::test]
async fn task_settings_reload_and_model_requests_answer_typed() {
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    client.stop_task("no-such-task").await.unwrap();
    assert!(!client.background_tasks(Some("toolu_none")).await.unwrap());
    client
        .apply_flag_settings(json!({"permissions": {"deny": ["WebFetch"]}}))
        .await
        .unwrap();
    assert!(
        client
            .apply_flag_settings(json!(["not", "an", "object"]))
            .await
            .unwrap_err()
            .is_invalid_options()
    );
    client.reload_skills().await.unwrap();
    let reloaded = client.reload_plugins().await.unwrap();
    assert_eq!(reloaded.error_count, 0, "{reloaded:?}");
    assert!(!client.supported_commands().is_empty());
    assert!(
        client
            .supported_commands()
            .iter()
            .all(|c| !c.name.is_empty())
    );
    let info = client.account_info().expect("the CLI reports its account");
    assert!(
        info.api_key_source.is_some() || info.token_source.is_some(),
        "{info:?}"
    );
    if claude_code_testkit::cli_is_at_least("2.1.331") {
        let models = client.list_models().await.unwrap();
        assert!(models.iter().all(|m| !m.value.is_empty()), "{models:?}");
    } else {
        let err = client.list_models().await.unwrap_err();
        assert!(err.is_unsupported_cli(), "{err:?}");
        assert!(err.to_string().contains("2.1.331"), "{err}");
    }
}

#[tokio::test]
async fn a_prompt_with_an_image_reaches_the_model_as_blocks() {
    use claude_code_sdk::ContentBlock;
    // A 1x1 transparent PNG.
    const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    client
        .query(vec![
            ContentBlock::text("What is in this picture?"),
            ContentBlock::image_base64("image/png", PIXEL),
        ])
        .await
        .unwrap();
    let messages: Vec<_> = client.receive_response().collect().await;
    assert!(messages.iter().all(Result::is_ok));
    let request = h.mock.requests().pop().unwrap();
    let user = request
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .to_string();
    assert!(user.contains(PIXEL), "the image reached the model");
    assert!(user.contains("What is in this picture?"));
}

#[tokio::test]
async fn query_stream_sends_each_prompt_in_order() {
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    client
        .query_stream(futures::stream::iter(["first prompt", "second prompt"]))
        .await
        .unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let turn: Vec<_> = client.receive_response().collect().await;
        answers.push(turn.last().unwrap().as_ref().unwrap().content());
    }
    assert!(h.mock.requests().iter().any(|r| r.mentions("first prompt")));
    assert!(
        h.mock
            .requests()
            .iter()
            .any(|r| r.mentions("second prompt"))
    );
}
