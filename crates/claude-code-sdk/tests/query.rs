//! `query()` against the real CLI and the mock model.

mod common;

use claude_code_sdk::{ContentBlock, Message, Role, query};
use claude_code_testkit::{Reply, Rule, pid_is_running};
use common::{Harness, result_of};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn a_text_answer() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("capital").reply(Reply::text("The capital of France is Paris.")));
    let options = h.options().max_turns(1).build().unwrap();

    let messages = query("What is the capital of France?", options)
        .collect_all()
        .await
        .unwrap();

    let init = messages
        .iter()
        .find_map(|m| match m {
            Message::System(s) => s.init(),
            _ => None,
        })
        .expect("an init message");
    assert_eq!(
        std::path::Path::new(&init.cwd).canonicalize().unwrap(),
        h.sandbox.cwd().canonicalize().unwrap()
    );
    let assistant: Vec<&Message> = messages
        .iter()
        .filter(|m| m.role() == Role::Assistant)
        .collect();
    assert_eq!(assistant.len(), 1);
    assert_eq!(assistant[0].content(), "The capital of France is Paris.");
    let result = result_of(&messages);
    assert!(!result.is_error);
    assert_eq!(
        result.result.as_deref(),
        Some("The capital of France is Paris.")
    );
    assert!(result.total_cost_usd.is_some());
    assert_eq!(result.turn_cost_usd, result.total_cost_usd);
    assert!(!result.session_id.is_empty());
    // The model saw the prompt.
    assert_eq!(
        h.mock.requests()[0].prompt().as_deref(),
        Some("What is the capital of France?")
    );
    // Every message has the seed's web shape.
    let web = assistant[0].to_web_json();
    assert_eq!(web["role"], "assistant");
    assert_eq!(web["content"], "The capital of France is Paris.");
    assert!(web["error"].is_null());
}

#[tokio::test]
async fn a_bash_tool_call_really_runs() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("make a file").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "echo made-by-bash > bash.txt", "description": "write a file"}),
        ),
        Reply::text("Done."),
    ]));
    let options = h.options().allowed_tools(["Bash"]).build().unwrap();

    let messages = query("please make a file", options)
        .collect_all()
        .await
        .unwrap();

    let written = std::fs::read_to_string(h.file("bash.txt")).expect("Bash ran in the cwd");
    assert_eq!(written.trim(), "made-by-bash");
    let used: Vec<&str> = messages.iter().flat_map(Message::tools_used).collect();
    assert_eq!(used, ["Bash"]);
    let tool_result = messages
        .iter()
        .find_map(|m| match m {
            Message::User(u) => u.content.iter().find_map(|b| match b {
                ContentBlock::ToolResult { is_error, .. } => Some(*is_error),
                _ => None,
            }),
            _ => None,
        })
        .expect("a tool result came back");
    assert_ne!(tool_result, Some(true));
    assert!(h.mock.requests()[1].has_tool_result_for("Bash"));
    assert_eq!(result_of(&messages).result.as_deref(), Some("Done."));
}

#[tokio::test]
async fn partial_messages_stream_the_text() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("one two three four five")));
    let options = h.options().include_partial_messages(true).build().unwrap();

    let messages = query("count", options).collect_all().await.unwrap();

    let deltas: String = messages
        .iter()
        .filter_map(|m| match m {
            Message::StreamEvent(e) => e.text_delta().map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "one two three four five");
    let events = messages
        .iter()
        .filter(|m| matches!(m, Message::StreamEvent(_)))
        .count();
    assert!(events >= 5, "{events} stream events");
}

#[tokio::test]
async fn structured_output_conforms_to_the_schema() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::structured_output(
        json!({"name": "Ada Lovelace", "born": 1815}),
    )));
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "born": {"type": "integer"}},
        "required": ["name", "born"],
    });
    let options = h.options().json_schema(schema.clone()).build().unwrap();

    let messages = query("Who wrote the first program?", options)
        .collect_all()
        .await
        .unwrap();

    let result = result_of(&messages);
    assert_eq!(
        result.structured_output,
        Some(json!({"name": "Ada Lovelace", "born": 1815}))
    );
    // The CLI offered the model the schema.
    let offered = h.mock.requests()[0].structured_output_schema().cloned();
    assert_eq!(offered.unwrap()["required"], schema["required"]);
}

#[tokio::test]
async fn max_turns_ends_with_a_typed_error_after_the_result() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::tool_use("Bash", json!({"command": "true"}))));
    let options = h
        .options()
        .allowed_tools(["Bash"])
        .max_turns(1)
        .build()
        .unwrap();

    let (messages, error) = query("loop forever", options).collect_messages().await;

    let result = result_of(&messages);
    assert_eq!(result.subtype, "error_max_turns");
    assert!(messages.last().unwrap().error().is_some());
    let error = error.expect("the stream ends with an error");
    assert!(error.is_max_turns(), "{error:?}");
    assert!(!error.is_transient());
    assert_eq!(error.result().unwrap().subtype, "error_max_turns");
}

#[tokio::test]
async fn resume_continues_a_previous_session() {
    let h = Harness::new().await;
    let first = query("My favourite colour is teal.", h.options().build().unwrap())
        .collect_all()
        .await
        .unwrap();
    let session = result_of(&first).session_id.clone();

    let options = h.options().resume(&session).build().unwrap();
    let second = query("What is my favourite colour?", options)
        .collect_all()
        .await
        .unwrap();

    let last = h.mock.requests().pop().unwrap();
    assert!(
        last.mentions("My favourite colour is teal."),
        "the resumed run's request carries the earlier turn"
    );
    assert_eq!(result_of(&second).session_id, session);
}

#[tokio::test]
async fn unknown_tool_names_are_reported() {
    let h = Harness::new().await;
    let options = h
        .options()
        .allowed_tools(["Read", "Grep", "LS"])
        .build()
        .unwrap();
    let mut stream = query("hello", options);
    while let Some(message) = stream.next().await {
        message.unwrap();
    }
    // LS no longer exists in current CLIs; Read and Grep do.
    assert_eq!(stream.unknown_tools(), ["LS"]);
}

#[tokio::test]
async fn dropping_a_query_mid_run_kills_the_cli() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(
        Reply::text("a slow answer that takes a while to stream out word by word")
            .chunk_delay(std::time::Duration::from_millis(500)),
    ));
    let mut stream = query(
        "slow please",
        h.options().include_partial_messages(true).build().unwrap(),
    );
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.kind(), "system");
    let pid = stream.pid().expect("the CLI runs");
    assert!(pid_is_running(pid));
    drop(stream);
    assert!(
        claude_code_testkit::wait_until_gone(&[pid], std::time::Duration::from_secs(10)).await,
        "the CLI survived its Query"
    );
}

#[tokio::test]
async fn cli_not_found_says_where_it_looked() {
    let h = Harness::new().await;
    let options = h.options().cli_path("/no/such/dir/claude").build().unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_cli_not_found(), "{err:?}");
    assert!(err.to_string().contains("/no/such/dir/claude"));
    assert!(err.to_string().contains("npm install"));
    assert!(h.mock.requests().is_empty());
}

#[tokio::test]
async fn auth_status_reports_how_the_cli_authenticates() {
    use claude_code_sdk::cli::auth_status;
    let h = Harness::new().await;
    let with_key = auth_status(&claude_code_testkit::cli_path(), &h.sandbox.env())
        .await
        .unwrap();
    assert!(with_key.logged_in);
    assert_eq!(with_key.auth_method, "api_key");
    let mut without: Vec<(String, String)> = h.sandbox.env();
    without.retain(|(k, _)| k != "ANTHROPIC_API_KEY");
    without.push(("ANTHROPIC_API_KEY".into(), String::new()));
    let status = auth_status(&claude_code_testkit::cli_path(), &without)
        .await
        .unwrap();
    assert!(!status.logged_in, "{:?}", status.raw);
}

#[tokio::test]
async fn a_tool_command_still_running_dies_with_its_query() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("long").reply(Reply::tool_use(
            "Bash",
            json!({"command": "echo started > started.txt; sleep 300"}),
        )));
    let mut stream = query(
        "a long command",
        h.options().allowed_tools(["Bash"]).build().unwrap(),
    );
    // Read the stream until the command runs (the CLI runs it in a process group of
    // its own); the command writes nothing more, so check the file between messages.
    while !h.file("started.txt").exists() {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(_)) => {}
                other => panic!("the run ended early: {other:?}"),
            },
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
    let cwd = h.sandbox.cwd().canonicalize().unwrap();
    assert!(
        claude_code_testkit::processes_in(&cwd).len() >= 2,
        "the CLI and the command run"
    );
    drop(stream);
    let left = claude_code_testkit::survivors_in(&cwd, std::time::Duration::from_secs(10)).await;
    assert!(left.is_empty(), "processes survived their query: {left:?}");
}

#[tokio::test]
async fn resuming_an_unknown_session_is_not_found() {
    let h = Harness::new().await;
    let options = h
        .options()
        .resume("6f1c2d4e-0000-4000-8000-000000000000")
        .build()
        .unwrap();
    let err = query("hello again", options)
        .collect_all()
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!err.is_transient());
    assert!(h.mock.requests().is_empty());
}
