//! The real pinned CLI against the mock: text, tools, errors, structured output,
//! streaming. Each test costs about one CLI start-up (~1 s).

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use claude_code_testkit::{DEMO_FILE, MOCK_API_KEY, MockAnthropic, Reply, Rule, Sandbox, cli_path};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How long any single step of a CLI session may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// One CLI process in stream-json mode, driven by hand.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
}

impl Cli {
    /// Spawns the CLI in the sandbox and completes the `initialize` handshake.
    async fn start(sandbox: &Sandbox, extra_args: &[&str]) -> Self {
        let mut command = Command::new(cli_path());
        sandbox.configure(command.as_std_mut());
        command
            .args([
                "--output-format",
                "stream-json",
                "--verbose",
                "--input-format",
                "stream-json",
            ])
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().expect("cannot spawn the CLI");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        let mut cli = Self {
            child,
            stdin,
            stdout,
            stderr,
        };
        cli.send(&json!({"type": "control_request", "request_id": "init_1",
            "request": {"subtype": "initialize", "hooks": null}}))
            .await;
        cli.read_until(|line| {
            line["type"] == "control_response" && line["response"]["request_id"] == "init_1"
        })
        .await;
        cli
    }

    async fn send(&mut self, value: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let line = format!("{value}\n");
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the CLI");
        stdin.flush().await.expect("flush to the CLI");
    }

    /// Reads stdout lines until one satisfies `done`; returns them all, that one last.
    async fn read_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let next = tokio::time::timeout(STEP_TIMEOUT, self.stdout.next_line())
                .await
                .expect("the CLI did not answer in time");
            let Some(line) = next.expect("read from the CLI") else {
                panic!("the CLI closed stdout early; lines so far: {lines:#?}");
            };
            let value: Value = serde_json::from_str(&line).expect("the CLI writes JSON lines");
            let finished = done(&value);
            lines.push(value);
            if finished {
                return lines;
            }
        }
    }

    /// Sends a prompt and returns the lines of its turn, the `result` last.
    async fn prompt(&mut self, text: &str) -> Vec<Value> {
        self.send(&json!({"type": "user", "session_id": "",
            "message": {"role": "user", "content": text}, "parent_tool_use_id": null}))
            .await;
        self.read_until(|line| line["type"] == "result").await
    }

    /// Closes stdin (after the last result, as the CLI wants) and waits for the exit.
    async fn finish(mut self) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("the CLI did not exit after stdin closed")
            .expect("wait for the CLI");
        let stderr = self.stderr.await.unwrap_or_default();
        (status, stderr)
    }
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["type"] == kind).collect()
}

fn result_of(lines: &[Value]) -> &Value {
    lines
        .last()
        .filter(|line| line["type"] == "result")
        .expect("a result line")
}

#[tokio::test]
async fn text_answer_and_what_the_model_saw() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("hello").reply(Reply::text("Hello from the mock model.")));
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &["--append-system-prompt", "SYSTEM_MARKER_42"]).await;

    let turn = cli.prompt("hello there").await;
    let result = result_of(&turn);
    assert_eq!(result["subtype"], "success", "{result:#}");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Hello from the mock model.");
    let init = of_type(&turn, "system")
        .into_iter()
        .find(|line| line["subtype"] == "init")
        .expect("an init line");
    assert_eq!(init["cwd"], sandbox.cwd().to_str().unwrap());
    assert_eq!(init["session_id"], result["session_id"]);

    // A second turn in the same process falls to the default reply.
    let turn = cli.prompt("tell me more").await;
    assert_eq!(result_of(&turn)["result"], "Mock reply to: tell me more");
    let (status, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}, stderr: {stderr}");

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let first = &requests[0];
    assert_eq!(first.path(), "/v1/messages");
    assert_eq!(first.query(), Some("beta=true"));
    assert!(first.is_streaming());
    assert_eq!(first.prompt().as_deref(), Some("hello there"));
    assert_eq!(first.step(), 0);
    assert_eq!(first.matched_rule(), Some(0));
    assert!(first.system_text().contains("SYSTEM_MARKER_42"));
    assert!(
        first
            .system_text()
            .contains(sandbox.cwd().to_str().unwrap())
    );
    assert_eq!(first.header("x-api-key"), Some(MOCK_API_KEY));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert!(first.tool_names().contains(&"Bash"));
    // The assistant line echoes the model the CLI asked for.
    let model = first.model().expect("a model");
    let assistant = of_type(&turn, "assistant")[0];
    assert_eq!(assistant["message"]["model"], model);

    let second = &requests[1];
    assert_eq!(second.prompt().as_deref(), Some("tell me more"));
    assert_eq!((second.step(), second.matched_rule()), (0, None));
    assert!(second.mentions("Hello from the mock model."));
}

#[tokio::test]
async fn bash_tool_use_really_runs() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("USE_BASH").steps([
        Reply::text("Running a command.").then_tool_use(
            "Bash",
            json!({"command": "echo hi > out.txt && echo wrote", "description": "Create a file"}),
        ),
        Reply::text("All done."),
    ]));
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &["--allowedTools", "Bash"]).await;
    let turn = cli.prompt("please USE_BASH").await;
    let (status, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}, stderr: {stderr}");

    let result = result_of(&turn);
    assert_eq!(result["result"], "All done.", "{turn:#?}");
    assert_eq!(result["num_turns"], 2);
    assert_eq!(
        std::fs::read_to_string(sandbox.cwd().join("out.txt")).unwrap(),
        "hi\n"
    );
    let tool_result = of_type(&turn, "user")
        .into_iter()
        .find(|line| line["message"]["content"][0]["type"] == "tool_result")
        .expect("a tool_result line");
    assert_eq!(
        tool_result["message"]["content"][0]["tool_use_id"],
        "toolu_mock_1"
    );

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].step(), 1);
    assert_eq!(requests[1].matched_rule(), Some(0));
    assert_eq!(requests[1].prompt().as_deref(), Some("please USE_BASH"));
    assert!(requests[1].has_tool_result_for("Bash"));
    let results = requests[1].tool_results();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].content, "wrote");
    assert!(!results[0].is_error);
    assert_eq!(
        requests[1].tool_uses()[0].input["command"],
        "echo hi > out.txt && echo wrote"
    );
}

#[tokio::test]
async fn overloaded_fails_fast_without_retries_then_recovers() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::any().times(1).reply(Reply::error(529)));
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &[]).await;

    let started = Instant::now();
    let turn = cli.prompt("first").await;
    let elapsed = started.elapsed();
    let result = result_of(&turn);
    assert_eq!(result["is_error"], true, "{result:#}");
    assert_eq!(result["api_error_status"], 529);
    assert!(
        result["result"].as_str().unwrap().contains("529"),
        "{result:#}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "CLAUDE_CODE_MAX_RETRIES=0 should fail at once, took {elapsed:?}"
    );
    assert!(
        of_type(&turn, "system")
            .iter()
            .all(|line| line["subtype"] != "api_retry")
    );

    let turn = cli.prompt("second").await;
    assert_eq!(result_of(&turn)["result"], "Mock reply to: second");
    let (status, _) = cli.finish().await;
    assert!(
        status.success(),
        "the last result succeeded, so the exit is 0"
    );
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn structured_output_through_the_structured_output_tool() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1}
        },
        "required": ["name", "age", "tags"]
    });
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("explicit").reply(
        Reply::text("Here you are.")
            .then_structured_output(json!({"name": "Ada", "age": 36, "tags": ["b"]})),
    ));
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &["--json-schema", &schema.to_string()]).await;

    // The default reply gets a conforming StructuredOutput call appended.
    let turn = cli.prompt("give me a person").await;
    let result = result_of(&turn);
    assert_eq!(result["subtype"], "success", "{result:#}");
    assert_eq!(
        result["structured_output"],
        json!({"name": "mock", "age": 18, "tags": ["a"]})
    );

    let turn = cli.prompt("explicit please").await;
    let result = result_of(&turn);
    assert_eq!(
        result["structured_output"],
        json!({"name": "Ada", "age": 36, "tags": ["b"]})
    );
    let (status, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}, stderr: {stderr}");

    let requests = mock.requests();
    // The CLI ends a turn on the StructuredOutput call: one request per turn.
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests[0].tool_names().contains(&"StructuredOutput"));
    assert_eq!(requests[0].structured_output_schema(), Some(&schema));
    assert!(requests[0].output_json_schema().is_none());
}

#[tokio::test]
async fn partial_messages_thinking_and_usage() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::any().reply(
        Reply::thinking("Let me think about it.")
            .then_text("one two three four five")
            .chunk_delay(Duration::from_millis(5))
            .usage(1234, 56),
    ));
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &["--include-partial-messages"]).await;
    let turn = cli.prompt("think first").await;
    let (status, stderr) = cli.finish().await;
    assert!(status.success(), "exit {status}, stderr: {stderr}");

    let deltas: Vec<&Value> = of_type(&turn, "stream_event")
        .into_iter()
        .filter(|line| line["event"]["type"] == "content_block_delta")
        .map(|line| &line["event"]["delta"])
        .collect();
    let text: String = deltas
        .iter()
        .filter(|delta| delta["type"] == "text_delta")
        .map(|delta| delta["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three four five");
    assert!(deltas.iter().filter(|d| d["type"] == "text_delta").count() >= 5);
    assert!(deltas.iter().any(|d| d["type"] == "thinking_delta"));

    let blocks: Vec<&Value> = of_type(&turn, "assistant")
        .into_iter()
        .flat_map(|line| line["message"]["content"].as_array().unwrap())
        .collect();
    assert!(
        blocks
            .iter()
            .any(|block| block["type"] == "thinking"
                && block["thinking"] == "Let me think about it.")
    );
    let result = result_of(&turn);
    assert_eq!(result["result"], "one two three four five");
    assert_eq!(result["usage"]["input_tokens"], 1234);
    assert_eq!(result["usage"]["output_tokens"], 56);
}

#[tokio::test]
async fn demo_rules_answer_and_write_a_file() {
    let mock = MockAnthropic::start_demo().await;
    let sandbox = Sandbox::new(&mock);
    let mut cli = Cli::start(&sandbox, &["--permission-mode", "acceptEdits"]).await;

    let turn = cli
        .prompt("Write a Python function to validate email addresses")
        .await;
    let answer = result_of(&turn)["result"].as_str().unwrap().to_owned();
    assert!(answer.contains("mock model"), "{answer}");
    assert!(answer.contains("def is_valid_email"), "{answer}");

    let turn = cli.prompt("Please create a file with a greeting").await;
    let answer = result_of(&turn)["result"].as_str().unwrap().to_owned();
    assert!(answer.contains(DEMO_FILE), "{answer}");
    let (status, _) = cli.finish().await;
    assert!(status.success());
    assert!(sandbox.cwd().join(DEMO_FILE).exists());
}
