//! Permission callbacks, hooks and in-process tools, against the real CLI.

mod common;

use std::sync::{Arc, Mutex};

use claude_code_sdk::{
    ClaudeCodeOptionsBuilder, HookEvent, HookMatcher, HookOutput, Message, PermissionDecision,
    PermissionMode, ToolResult, query, sdk_mcp_server, tool,
};
use claude_code_testkit::{Reply, Rule};
use common::{Harness, result_of};
use serde::Deserialize;
use serde_json::{Value, json};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Adds a callback that records each tool it is asked about and answers with `decide`.
fn with_callback(
    builder: ClaudeCodeOptionsBuilder,
    asked: &Log,
    decide: impl Fn(&str, &Value) -> PermissionDecision + Send + Sync + 'static,
) -> ClaudeCodeOptionsBuilder {
    let asked = asked.clone();
    let decide = Arc::new(decide);
    builder.can_use_tool(move |tool, input, context| {
        let asked = asked.clone();
        let decide = decide.clone();
        async move {
            assert!(
                context.tool_use_id.is_some(),
                "the context names the tool use"
            );
            asked.lock().unwrap().push(tool.clone());
            decide(&tool, &input)
        }
    })
}

#[tokio::test]
async fn a_callback_that_allows_lets_the_command_run() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("run").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "sh -c 'echo allowed > allowed.txt'"}),
        ),
        Reply::text("ran"),
    ]));
    let asked = log();
    let options = with_callback(h.options(), &asked, |_, _| PermissionDecision::allow())
        .build()
        .unwrap();
    query("run it", options).collect_all().await.unwrap();
    assert_eq!(entries(&asked), ["Bash"]);
    assert_eq!(
        std::fs::read_to_string(h.file("allowed.txt"))
            .unwrap()
            .trim(),
        "allowed"
    );
}

#[tokio::test]
async fn a_callback_that_rewrites_the_input_runs_the_rewritten_command() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("run").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "sh -c 'echo original > original.txt'"}),
        ),
        Reply::text("ran"),
    ]));
    let asked = log();
    let options = with_callback(h.options(), &asked, |_, input| {
        let mut input = input.clone();
        input["command"] = json!("sh -c 'echo rewritten > rewritten.txt'");
        PermissionDecision::allow_with_input(input)
    })
    .build()
    .unwrap();
    query("run it", options).collect_all().await.unwrap();
    assert!(!h.file("original.txt").exists());
    assert_eq!(
        std::fs::read_to_string(h.file("rewritten.txt"))
            .unwrap()
            .trim(),
        "rewritten"
    );
}

#[tokio::test]
async fn a_callback_that_denies_stops_the_write_and_the_denial_is_reported() {
    let h = Harness::new().await;
    let target = h.file("denied.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("write").steps([
        Reply::tool_use("Write", json!({"file_path": target, "content": "nope"})),
        Reply::text("could not write"),
    ]));
    let asked = log();
    let options = with_callback(h.options(), &asked, |_, _| {
        PermissionDecision::deny("denied by the test's callback")
    })
    .build()
    .unwrap();
    let (messages, error) = query("write a file", options).collect_messages().await;
    assert_eq!(entries(&asked), ["Write"]);
    assert!(!h.file("denied.txt").exists());
    let result = result_of(&messages);
    assert_eq!(result.permission_denials.len(), 1);
    assert_eq!(result.permission_denials[0].tool_name, "Write");
    // The callback decided: the denial is reported, but the run did not fail.
    assert!(error.is_none(), "{error:?}");
    let seen = h.mock.requests().pop().unwrap().tool_results();
    assert!(seen[0].is_error && seen[0].content.contains("denied by the test's callback"));
}

/// Which tools each seed mode asks the callback about, when the model tries Read,
/// Write, Edit and a command. The callback allows everything.
async fn asked_in(mode: PermissionMode) -> (Vec<String>, Harness) {
    let h = Harness::new().await;
    std::fs::write(h.file("a.txt"), "alpha").unwrap();
    let path = |n: &str| h.file(n).display().to_string();
    h.mock.on(Rule::prompt_contains("everything").steps([
        Reply::tool_use("Read", json!({"file_path": path("a.txt")})),
        Reply::tool_use(
            "Write",
            json!({"file_path": path("b.txt"), "content": "beta"}),
        ),
        Reply::tool_use(
            "Edit",
            json!({"file_path": path("a.txt"), "old_string": "alpha", "new_string": "gamma"}),
        ),
        Reply::tool_use("Bash", json!({"command": "sh -c 'echo c > c.txt'"})),
        Reply::text("done"),
    ]));
    let asked = log();
    let options = with_callback(h.options().permission_mode(mode), &asked, |_, _| {
        PermissionDecision::allow()
    })
    .build()
    .unwrap();
    let (_, error) = query("try everything", options).collect_messages().await;
    assert!(error.is_none(), "{mode}: {error:?}");
    (entries(&asked), h)
}

#[tokio::test]
async fn ask_for_edits_asks_before_every_change_but_not_reads() {
    let (asked, h) = asked_in(PermissionMode::AskForEdits).await;
    assert_eq!(asked, ["Write", "Edit", "Bash"]);
    assert!(h.file("b.txt").exists() && h.file("c.txt").exists());
}

#[tokio::test]
async fn strict_asks_before_every_tool_use_reads_included() {
    let (asked, h) = asked_in(PermissionMode::Strict).await;
    assert_eq!(asked, ["Read", "Write", "Edit", "Bash"]);
    assert_eq!(std::fs::read_to_string(h.file("a.txt")).unwrap(), "gamma");
}

#[tokio::test]
async fn accept_edits_asks_only_for_commands() {
    let (asked, h) = asked_in(PermissionMode::AcceptEdits).await;
    assert_eq!(asked, ["Bash"]);
    assert!(h.file("b.txt").exists());
}

#[tokio::test]
async fn read_only_never_asks_and_never_writes() {
    let h = Harness::new().await;
    let path = h.file("x.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("write").steps([
        Reply::tool_use("Write", json!({"file_path": path, "content": "x"})),
        Reply::text("done"),
    ]));
    let asked = log();
    let options = with_callback(
        h.options().permission_mode(PermissionMode::ReadOnly),
        &asked,
        |_, _| PermissionDecision::allow(),
    )
    .build()
    .unwrap();
    let _ = query("write it", options).collect_messages().await;
    assert!(entries(&asked).is_empty());
    assert!(!h.file("x.txt").exists());
}

#[tokio::test]
async fn hooks_fire_in_order_and_a_pre_tool_use_block_stops_the_tool() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("hooks").steps([
        Reply::tool_use("Bash", json!({"command": "sh -c 'echo one > one.txt'"})),
        Reply::tool_use(
            "Bash",
            json!({"command": "sh -c 'echo blocked > blocked.txt'"}),
        ),
        Reply::text("finished"),
    ]));
    let events = log();
    let record = |events: &Log| {
        let events = events.clone();
        move |input: claude_code_sdk::HookInput, _id: Option<String>, _ctx| {
            let events = events.clone();
            async move {
                let label = match input.tool_input() {
                    Some(i) => format!("{}:{}", input.event, i["command"].as_str().unwrap_or("")),
                    None => input.event.to_string(),
                };
                events.lock().unwrap().push(label);
                let blocked = input.event == HookEvent::PreToolUse
                    && input
                        .tool_input()
                        .is_some_and(|i| i.to_string().contains("blocked"));
                Ok(if blocked {
                    HookOutput::deny("blocked by a hook")
                } else if input.event == HookEvent::UserPromptSubmit {
                    HookOutput::additional_context("CONTEXT FROM A HOOK")
                } else {
                    HookOutput::default()
                })
            }
        }
    };
    let options = h
        .options()
        .allowed_tools(["Bash"])
        .hook(
            HookEvent::UserPromptSubmit,
            HookMatcher::all(),
            record(&events),
        )
        .hook(
            HookEvent::PreToolUse,
            HookMatcher::new("Bash"),
            record(&events),
        )
        .hook(
            HookEvent::PostToolUse,
            HookMatcher::new("Bash"),
            record(&events),
        )
        .hook(HookEvent::Stop, HookMatcher::all(), record(&events))
        .build()
        .unwrap();
    // A hook's block is a decision, not a failure of the run.
    query("test the hooks", options)
        .collect_all()
        .await
        .unwrap();

    let seen = entries(&events);
    let first = "sh -c 'echo one > one.txt'";
    let second = "sh -c 'echo blocked > blocked.txt'";
    assert_eq!(
        seen,
        [
            "UserPromptSubmit".to_owned(),
            format!("PreToolUse:{first}"),
            format!("PostToolUse:{first}"),
            format!("PreToolUse:{second}"),
            "Stop".to_owned(),
        ]
    );
    assert!(h.file("one.txt").exists());
    assert!(!h.file("blocked.txt").exists());
    let requests = h.mock.requests();
    assert!(
        requests[0].mentions("CONTEXT FROM A HOOK"),
        "additional context reached the model"
    );
    let results = requests.last().unwrap().tool_results();
    assert!(
        results
            .last()
            .unwrap()
            .content
            .contains("blocked by a hook")
    );
}

#[derive(Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: f64,
    b: f64,
}

#[tokio::test]
async fn an_in_process_tool_is_called_and_its_result_reaches_the_model() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("add").steps([
        Reply::tool_use("mcp__calc__add", json!({"a": 1, "b": 2})),
        Reply::tool_use("mcp__calc__add", json!({"a": "one", "b": 2})),
        Reply::text("done adding"),
    ]));
    let calls = log();
    let counter = calls.clone();
    let add = tool("add", "Add two numbers", move |args: AddArgs| {
        let counter = counter.clone();
        async move {
            counter
                .lock()
                .unwrap()
                .push(format!("{}+{}", args.a, args.b));
            Ok(ToolResult::text(format!("{}", args.a + args.b)))
        }
    });
    let options = h
        .options()
        .sdk_mcp_server(sdk_mcp_server("calc", "1.0.0", [add]))
        .allowed_tools(["mcp__calc__add"])
        .build()
        .unwrap();
    let messages = query("please add", options).collect_all().await.unwrap();

    assert_eq!(
        entries(&calls),
        ["1+2"],
        "the bad call never reached the handler"
    );
    let requests = h.mock.requests();
    let good = &requests[1].tool_results()[0];
    assert_eq!(good.content, "3");
    assert!(!good.is_error);
    let bad = requests[2].tool_results().pop().unwrap();
    assert!(bad.is_error, "{bad:?}");
    assert!(bad.content.contains("invalid arguments"), "{bad:?}");
    assert!(messages.iter().any(|m| matches!(m, Message::Result(_))));
}

#[tokio::test]
async fn a_callback_in_flight_is_stopped_when_the_query_is_dropped() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("run").reply(Reply::tool_use(
            "Bash",
            json!({"command": "sh -c 'echo x > asked.txt'"}),
        )));
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let options = {
        let (started, finished) = (started.clone(), finished.clone());
        h.options()
            .timeout(std::time::Duration::from_secs(30))
            .can_use_tool(move |_, _, _| {
                let (started, finished) = (started.clone(), finished.clone());
                async move {
                    started.notify_one();
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    finished.store(true, Ordering::SeqCst);
                    PermissionDecision::allow()
                }
            })
            .build()
            .unwrap()
    };
    let mut stream = query("run it", options);
    let waiting = started.notified();
    tokio::pin!(waiting);
    tokio::select! {
        () = &mut waiting => {}
        _ = async { while let Some(m) = stream.next().await { m.unwrap(); } } => {
            panic!("the run ended before the callback was asked");
        }
    }
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the callback outlived its query"
    );
}

#[tokio::test]
async fn read_only_asks_before_reading_outside_the_project() {
    let h = Harness::new().await;
    let outside = h.sandbox.root().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE").unwrap();
    h.mock.on(Rule::prompt_contains("peek").steps([
        Reply::tool_use("Read", json!({"file_path": outside.display().to_string()})),
        Reply::text("peeked"),
    ]));
    let asked = log();
    let options = with_callback(
        h.options().permission_mode(PermissionMode::ReadOnly),
        &asked,
        |_, _| PermissionDecision::allow(),
    )
    .build()
    .unwrap();
    query("peek outside", options).collect_all().await.unwrap();
    assert_eq!(entries(&asked), ["Read"]);
    let results = h.mock.requests().pop().unwrap().tool_results();
    assert!(
        results[0].content.contains("OUTSIDE"),
        "the approved read ran"
    );
}
