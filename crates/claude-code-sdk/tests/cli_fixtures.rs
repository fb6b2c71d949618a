//! Captured CLI sessions (`tests/fixtures/cli-<version>/`), replayed: every line any
//! captured CLI wrote parses, a line type or field the SDK does not know never breaks a
//! stream, and whole captured sessions play through a `ClaudeClient` (fake-claude's
//! `replay` mode writes them back byte for byte).
//!
//! The captures of the pinned CLI are made by the ignored test at the end:
//! `cargo test -p claude-code-sdk --test cli_fixtures -- --ignored capture_fixtures`
//! drives the CLI under test (`CLAUDE_CODE_CLI_PATH`) against the mock model and writes
//! `tests/fixtures/cli-<its version>/`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claude_code_sdk::{ClaudeClient, ClaudeCodeOptions, ErrorKind, Message};
use claude_code_testkit::{FakeMode, Sandbox, fake, fake_claude_path};
use futures::StreamExt;
use serde_json::{Value, json};

/// The line types the SDK models; any other becomes `Message::Unknown`.
const MODELLED: [&str; 6] = [
    "system",
    "assistant",
    "user",
    "result",
    "stream_event",
    "rate_limit_event",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every `*.jsonl` capture of a CLI's stdout, by CLI version directory.
fn captures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(fixtures_dir()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            // Transcript files are what the CLI wrote to disk, not to stdout.
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".jsonl") && !name.ends_with(".transcript.jsonl") {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

/// Every stdout line of every capture, with where it came from.
fn captured_lines() -> Vec<(PathBuf, Value)> {
    let mut lines = Vec::new();
    for file in captures() {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: a line that is not JSON: {e}", file.display()));
            let message = match record.get("dir").and_then(Value::as_str) {
                Some("out") => record["msg"].clone(),
                Some(_) => continue,
                None if record.get("type").is_some() => record,
                None => continue,
            };
            if message.is_object() {
                lines.push((file.clone(), message));
            }
        }
    }
    lines
}

/// Whether a line is part of the control protocol rather than a message.
fn is_control(kind: &str) -> bool {
    kind.starts_with("control_") || kind == "keep_alive"
}

#[test]
fn there_are_captures_of_the_oldest_and_the_pinned_cli() {
    let dirs: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|d| Some(d.ok()?.file_name().to_str()?.to_owned()))
        .collect();
    for version in ["cli-2.1.197", "cli-2.1.332"] {
        assert!(dirs.iter().any(|d| d == version), "{version} in {dirs:?}");
    }
}

/// Every line a captured CLI wrote parses: a modelled type into its own variant (a
/// changed shape would show as `Unknown`), any other type into `Unknown` with its type
/// kept; control lines are not messages.
#[test]
fn every_captured_line_parses_into_its_own_variant() {
    let lines = captured_lines();
    assert!(lines.len() > 250, "only {} lines", lines.len());
    let mut unknown_types = std::collections::BTreeSet::new();
    for (file, line) in &lines {
        let text = line.to_string();
        let kind = line["type"].as_str().unwrap_or("");
        let parsed = Message::from_json(&text);
        if is_control(kind) {
            let err = parsed.expect_err("a control line is not a message");
            assert!(err.is_protocol(), "{}: {err}", file.display());
            continue;
        }
        let message = parsed.unwrap_or_else(|e| panic!("{}: {e}: {text:.300}", file.display()));
        assert_eq!(message.kind(), kind, "{}: {text:.300}", file.display());
        let unknown = matches!(message, Message::Unknown(_));
        assert_eq!(
            unknown,
            !MODELLED.contains(&kind),
            "{}: {text:.300}",
            file.display()
        );
        if unknown {
            unknown_types.insert(kind.to_owned());
        }
        assert_eq!(message.raw(), text, "the raw line is kept whole");
    }
    // The captures do hold types this SDK does not model (2.1.332: `conversation_reset`
    // is not in them, `transcript_mirror` is, from 2.1.331).
    assert!(
        unknown_types.contains("transcript_mirror"),
        "{unknown_types:?}"
    );
}

/// A newer CLI adds fields and line types: every captured line with a field of every
/// JSON kind added, at the top and inside `message`, still parses into the same
/// variant, and every line with its type renamed becomes `Unknown` with the new type.
#[test]
fn new_fields_and_new_types_never_break_a_line() {
    let additions = [
        json!(null),
        json!(1),
        json!("text"),
        json!([1, {"a": 2}]),
        json!({"nested": {"deep": [true]}}),
    ];
    let mut checked = 0;
    for (file, line) in captured_lines() {
        let kind = line["type"].as_str().unwrap_or("").to_owned();
        if is_control(&kind) {
            continue;
        }
        let before = Message::from_json(&line.to_string()).unwrap();
        for (i, addition) in additions.iter().enumerate() {
            let mut newer = line.clone();
            newer[format!("future_field_{i}")] = addition.clone();
            if newer.get("message").is_some_and(Value::is_object) {
                newer["message"][format!("future_field_{i}")] = addition.clone();
            }
            let after = Message::from_json(&newer.to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(after.kind(), before.kind(), "{}", file.display());
            assert_eq!(
                matches!(after, Message::Unknown(_)),
                matches!(before, Message::Unknown(_)),
                "{}: {newer:.300}",
                file.display()
            );
            assert_eq!(after.content(), before.content(), "{}", file.display());
        }
        let mut renamed = line.clone();
        renamed["type"] = json!(format!("{kind}_from_the_future"));
        let after = Message::from_json(&renamed.to_string()).unwrap();
        assert!(matches!(after, Message::Unknown(_)));
        assert_eq!(after.kind(), format!("{kind}_from_the_future"));
        checked += 1;
    }
    assert!(checked > 200, "{checked}");
}

/// Each captured session, played back byte for byte by fake-claude, goes through a
/// `ClaudeClient` turn by turn: every line arrives as a message of its own type, each
/// turn ends with its result, nothing is a protocol error and nothing panics.
#[tokio::test]
async fn captured_sessions_replay_through_a_client() {
    let mut replayed = 0;
    for file in captures() {
        let text = std::fs::read_to_string(&file).unwrap();
        let turns = fake::captured_turns(&text);
        if turns.is_empty() {
            continue;
        }
        let sandbox = Sandbox::without_mock();
        let options = ClaudeCodeOptions::builder()
            .cli_path(fake_claude_path())
            .cwd(sandbox.cwd())
            .envs(sandbox.env())
            .env(fake::MODE_ENV, FakeMode::Replay.as_str())
            .env(fake::REPLAY_FILE_ENV, file.display().to_string())
            .include_partial_messages(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let client = ClaudeClient::connect(options).await.unwrap();
        for (n, turn) in turns.iter().enumerate() {
            let expected: Vec<String> = turn
                .iter()
                .map(|line| serde_json::from_str::<Value>(line).unwrap())
                .filter_map(|line| line["type"].as_str().map(str::to_owned))
                .filter(|kind| kind != "keep_alive")
                .collect();
            client.query(format!("turn {n}")).await.unwrap();
            let mut kinds = Vec::new();
            let mut stream = client.receive_response();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(message) => kinds.push(message.kind().to_owned()),
                    // An error result stands for its error (after the result itself).
                    Err(err) => assert!(
                        kinds.last().is_some_and(|k| k == "result")
                            && err.kind() != ErrorKind::Protocol,
                        "{} turn {n}: {err:?}",
                        file.display()
                    ),
                }
            }
            drop(stream);
            assert_eq!(kinds, expected, "{} turn {n}", file.display());
        }
        assert!(client.is_alive(), "{}", file.display());
        client.close().await.unwrap();
        replayed += 1;
    }
    assert!(replayed >= 10, "{replayed} captures replayed");
}

// ---------------------------------------------------------------------------------
// Capturing (ignored: run by hand when the pinned CLI changes)
// ---------------------------------------------------------------------------------

type Answer = Box<dyn FnMut(&Value) -> Result<Value, String> + Send>;

/// A CLI driven over stream-json with every line in and out recorded, in the format of
/// the fixtures (`{"argv"}`, then `{"dir", "t", "msg"}` records, then `stderr`, `exit`).
struct Capture {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    t0: Instant,
    records: Vec<Value>,
    answer: Answer,
    next_id: u32,
    sandbox: Sandbox,
}

impl Capture {
    /// Starts the CLI under test in `sandbox` with the stream-json flags and `args`;
    /// `answer` answers its control requests (`can_use_tool`, `hook_callback`,
    /// `mcp_message`).
    fn start(sandbox: Sandbox, args: &[&str], answer: Answer) -> Capture {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut argv: Vec<String> = [
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json",
        ]
        .map(String::from)
        .to_vec();
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let mut command = tokio::process::Command::new(claude_code_testkit::cli_path());
        sandbox.configure(command.as_std_mut());
        command
            .args(&argv)
            .env("CLAUDE_CODE_ENTRYPOINT", "sdk-cli")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Capture {
            child,
            stdin,
            out,
            stderr,
            t0: Instant::now(),
            records: vec![json!({"argv": argv})],
            answer,
            next_id: 0,
            sandbox,
        }
    }

    fn t(&self) -> f64 {
        (self.t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    async fn send(&mut self, message: Value) {
        use tokio::io::AsyncWriteExt;
        self.records
            .push(json!({"dir": "in", "t": self.t(), "msg": message}));
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{message}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn initialize(&mut self, hooks: Value) -> Value {
        self.request(json!({"subtype": "initialize", "hooks": hooks}))
            .await
    }

    async fn prompt(&mut self, text: &str) {
        self.send(json!({"type": "user", "session_id": "",
            "message": {"role": "user", "content": text}, "parent_tool_use_id": null}))
            .await;
    }

    /// The next line that is not a request of the CLI's (those are answered here), or
    /// `None` at the end of the output.
    async fn read(&mut self) -> Option<Value> {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(90), self.out.next_line())
                .await
                .expect("the CLI writes within 90 s")
                .unwrap()?;
            let t = self.t();
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                self.records
                    .push(json!({"dir": "out", "t": t, "raw": line}));
                continue;
            };
            self.records
                .push(json!({"dir": "out", "t": t, "msg": message.clone()}));
            if message["type"] == "control_request" {
                let id = message["request_id"].clone();
                let response = match (self.answer)(&message["request"]) {
                    Ok(response) => json!({"type": "control_response", "response":
                        {"subtype": "success", "request_id": id, "response": response}}),
                    Err(error) => json!({"type": "control_response", "response":
                        {"subtype": "error", "request_id": id, "error": error}}),
                };
                self.send(response).await;
                continue;
            }
            return Some(message);
        }
    }

    /// Sends control requests at once and waits for all their answers (the `response`
    /// objects, in the order sent).
    async fn requests(&mut self, requests: Vec<Value>) -> Vec<Value> {
        let mut ids = Vec::new();
        for request in requests {
            self.next_id += 1;
            let id = format!("req_{}_capture", self.next_id);
            self.send(json!({"type": "control_request", "request_id": id, "request": request}))
                .await;
            ids.push(id);
        }
        let mut answers: Vec<Option<Value>> = vec![None; ids.len()];
        while answers.iter().any(Option::is_none) {
            let message = self.read().await.expect("the CLI answers");
            if message["type"] == "control_response"
                && let Some(i) = ids
                    .iter()
                    .position(|id| message["response"]["request_id"] == id.as_str())
            {
                answers[i] = Some(message["response"].clone());
            }
        }
        answers.into_iter().flatten().collect()
    }

    async fn request(&mut self, request: Value) -> Value {
        self.requests(vec![request]).await.remove(0)
    }

    /// Reads until `done` says so (the line included); panics at the end of the output.
    async fn until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let message = self.read().await.expect("the CLI is still writing");
            if done(&message) {
                return message;
            }
        }
    }

    async fn until_result(&mut self) -> Value {
        self.until(|m| m["type"] == "result").await
    }

    /// Closes stdin, reads to the end, records stderr and the exit code, and writes the
    /// capture with the sandbox's paths replaced by `/tmp/project`, `/tmp/home` and
    /// `/tmp/sandbox`.
    async fn finish(mut self, path: &Path) {
        drop(self.stdin.take());
        while self.read().await.is_some() {}
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the CLI exits when its input closes")
            .unwrap();
        let stderr = (&mut self.stderr).await.unwrap();
        let t = self.t();
        if !stderr.is_empty() {
            self.records
                .push(json!({"dir": "stderr", "t": t, "text": stderr}));
        }
        self.records
            .push(json!({"dir": "exit", "t": t, "code": status.code()}));
        let dashed = |p: &Path| -> String {
            p.display()
                .to_string()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect()
        };
        let replacements = [
            (self.sandbox.cwd().display().to_string(), "/tmp/project"),
            (dashed(self.sandbox.cwd()), "-tmp-project"),
            (self.sandbox.home().display().to_string(), "/tmp/home"),
            (self.sandbox.root().display().to_string(), "/tmp/sandbox"),
        ];
        let mut text = String::new();
        for record in &self.records {
            let mut line = record.to_string();
            for (from, to) in &replacements {
                line = line.replace(from.as_str(), to);
            }
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }
}

/// The SDK-side MCP server `calc` with one tool, `add`, answering `mcp_message`s.
fn calc_server(request: &Value) -> Result<Value, String> {
    let message = &request["message"];
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let result = match message["method"].as_str() {
        Some("initialize") => json!({"protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}}, "serverInfo": {"name": "calc", "version": "1.0.0"}}),
        Some("tools/list") => json!({"tools": [{"name": "add", "description": "Add two numbers",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "number"},
                "b": {"type": "number"}}, "required": ["a", "b"]}}]}),
        Some("tools/call") => {
            let args = &message["params"]["arguments"];
            let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
            json!({"content": [{"type": "text", "text": sum.to_string()}], "isError": false})
        }
        _ => json!({}),
    };
    Ok(json!({"mcp_response": {"jsonrpc": "2.0", "id": id, "result": result}}))
}

/// Drives the CLI under test through the scenarios of the 2.1.197 captures (and what
/// 2.1.332 added) and writes `tests/fixtures/cli-<version>/`.
#[tokio::test]
#[ignore = "writes fixtures: run by hand for a new pinned CLI"]
async fn capture_fixtures() {
    use claude_code_testkit::{MockAnthropic, Reply, Rule};
    common::init_tracing();
    let version = claude_code_testkit::cli_version();
    let dir = fixtures_dir().join(format!("cli-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let quiet = ["--system-prompt=", "--setting-sources="];

    // basic: one prompt with partial messages.
    let mock = MockAnthropic::start().await;
    let mut cap = Capture::start(
        Sandbox::new(&mock),
        &[&quiet[..], &["--include-partial-messages"]].concat(),
        Box::new(|_| Err("unexpected request".into())),
    );
    cap.initialize(Value::Null).await;
    cap.prompt("hello").await;
    cap.until_result().await;
    cap.finish(&dir.join("basic.jsonl")).await;

    // can_use_tool: an allow that rewrites the input, then a deny.
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let notes = sandbox.cwd().join("notes.txt").display().to_string();
    mock.on(Rule::prompt_contains("WRITE_THEN_DELETE").steps([
        Reply::tool_use("Write", json!({"file_path": notes, "content": "draft"})),
        Reply::tool_use("Bash", json!({"command": "rm -f notes.txt"})),
        Reply::text("done"),
    ]));
    let mut cap = Capture::start(
        sandbox,
        &[
            &quiet[..],
            &[
                "--permission-prompt-tool=stdio",
                "--permission-mode=default",
            ],
        ]
        .concat(),
        Box::new(|request| match request["tool_name"].as_str() {
            Some("Write") => {
                let mut input = request["input"].clone();
                input["content"] = json!("rewritten by the host");
                Ok(json!({"behavior": "allow", "updatedInput": input}))
            }
            _ => Ok(json!({"behavior": "deny", "message": "not today"})),
        }),
    );
    cap.initialize(Value::Null).await;
    cap.prompt("WRITE_THEN_DELETE please").await;
    cap.until_result().await;
    cap.finish(&dir.join("can_use_tool.jsonl")).await;

    // hooks: the common events, and PreSkillShellCommand for a user's /greet (denied)
    // and for the model's Skill tool (allowed).
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let skill = sandbox.cwd().join(".claude/skills/greet");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: greet\ndescription: Writes a marker file\n---\n\
         The marker says: !`echo ran >> marker.txt && echo MARKER_WRITTEN`\n",
    )
    .unwrap();
    mock.on(Rule::prompt_contains("USE_BASH").steps([
        Reply::tool_use("Bash", json!({"command": "echo hi"})),
        Reply::text("ran it"),
    ]));
    mock.on(Rule::prompt_contains("USE_SKILL").steps([
        Reply::tool_use("Skill", json!({"skill": "greet"})),
        Reply::text("greeted"),
    ]));
    let mut cap = Capture::start(
        sandbox,
        &[
            "--system-prompt=",
            "--setting-sources=project",
            "--permission-prompt-tool=stdio",
            "--permission-mode=acceptEdits",
            "--include-hook-events",
        ],
        Box::new(|request| {
            let input = &request["input"];
            Ok(match request["callback_id"].as_str() {
                Some("hook_0") => json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
                    "permissionDecision": "allow", "permissionDecisionReason": "capture allows"}}),
                Some("hook_2") => json!({"hookSpecificOutput": {
                    "hookEventName": "UserPromptSubmit", "additionalContext": "extra context"}}),
                Some("hook_4") if input["invoked_by"] == "user" => json!({"hookSpecificOutput": {
                    "hookEventName": "PreSkillShellCommand", "permissionDecision": "deny",
                    "permissionDecisionReason": "no shell for typed skills"}}),
                _ => json!({}),
            })
        }),
    );
    cap.initialize(json!({
        "PreToolUse": [{"matcher": "Bash", "hookCallbackIds": ["hook_0"], "timeout": 30}],
        "PostToolUse": [{"matcher": null, "hookCallbackIds": ["hook_1"]}],
        "UserPromptSubmit": [{"matcher": null, "hookCallbackIds": ["hook_2"]}],
        "Stop": [{"matcher": null, "hookCallbackIds": ["hook_3"]}],
        "PreSkillShellCommand": [{"matcher": null, "hookCallbackIds": ["hook_4"]}],
    }))
    .await;
    cap.prompt("run USE_BASH please").await;
    cap.until_result().await;
    cap.prompt("/greet").await;
    cap.until_result().await;
    cap.prompt("USE_SKILL now").await;
    cap.until_result().await;
    cap.finish(&dir.join("hooks.jsonl")).await;

    // sdk_mcp: an in-process MCP server; mcp_message arrives before the initialize answer.
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("ADD_NUMBERS").steps([
        Reply::tool_use("mcp__calc__add", json!({"a": 1, "b": 2})),
        Reply::text("1 + 2 = 3"),
    ]));
    let mut cap = Capture::start(
        Sandbox::new(&mock),
        &[
            &quiet[..],
            &[
                r#"--mcp-config={"mcpServers": {"calc": {"type": "sdk", "name": "calc"}}}"#,
                "--allowedTools=mcp__calc__add",
                "--permission-prompt-tool=stdio",
            ],
        ]
        .concat(),
        Box::new(calc_server),
    );
    cap.initialize(Value::Null).await;
    cap.prompt("ADD_NUMBERS 1 and 2").await;
    cap.until_result().await;
    cap.request(json!({"subtype": "mcp_status"})).await;
    cap.finish(&dir.join("sdk_mcp.jsonl")).await;

    // controls: the typed requests, newer and unknown subtypes, a mode the CLI does not
    // keep, an interrupt mid-stream, and the next turn.
    let mock = MockAnthropic::start().await;
    let words: Vec<String> = (0..200).map(|i| format!("tick{i}")).collect();
    mock.on(Rule::prompt_contains("SLOW")
        .reply(Reply::text(words.join(" ")).chunk_delay(Duration::from_millis(20))));
    let mut cap = Capture::start(
        Sandbox::new(&mock),
        &[&quiet[..], &["--include-partial-messages"]].concat(),
        Box::new(|_| Err("unexpected request".into())),
    );
    cap.initialize(Value::Null).await;
    for request in [
        json!({"subtype": "set_permission_mode", "mode": "acceptEdits"}),
        json!({"subtype": "set_model", "model": "claude-sonnet-4-5"}),
        json!({"subtype": "mcp_status"}),
        json!({"subtype": "get_context_usage"}),
        json!({"subtype": "list_models"}),
        json!({"subtype": "no_such_subtype"}),
        json!({"subtype": "set_permission_mode", "mode": "manual"}),
    ] {
        cap.request(request).await;
    }
    // `auto` waits behind the pending model switch; `plan` overtakes it, and the
    // `auto` request is answered with the mode in effect.
    cap.requests(vec![
        json!({"subtype": "set_model", "model": "claude-haiku-4-5"}),
        json!({"subtype": "set_permission_mode", "mode": "auto"}),
        json!({"subtype": "set_permission_mode", "mode": "plan"}),
    ])
    .await;
    cap.request(json!({"subtype": "set_permission_mode", "mode": "default"}))
        .await;
    cap.prompt("SLOW please").await;
    cap.until(|m| m["type"] == "stream_event" && m["event"]["delta"]["type"] == "text_delta")
        .await;
    cap.request(json!({"subtype": "interrupt"})).await;
    cap.until_result().await;
    cap.prompt("next turn").await;
    cap.until_result().await;
    cap.finish(&dir.join("controls.jsonl")).await;

    // errors: API 400, max turns, 529 with one retry; the CLI exits 1.
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("API_400").reply(Reply::error(400)));
    mock.on(Rule::prompt_contains("MAX_TURNS").steps([
        Reply::tool_use("Bash", json!({"command": "echo one"})),
        Reply::text("never reached"),
    ]));
    mock.on(Rule::prompt_contains("OVERLOADED").reply(Reply::error(529)));
    let mut cap = Capture::start(
        Sandbox::new(&mock).with_env("CLAUDE_CODE_MAX_RETRIES", "1"),
        &[&quiet[..], &["--max-turns=1", "--allowedTools=Bash"]].concat(),
        Box::new(|_| Err("unexpected request".into())),
    );
    cap.initialize(Value::Null).await;
    for prompt in ["API_400 please", "MAX_TURNS please", "OVERLOADED please"] {
        cap.prompt(prompt).await;
        cap.until_result().await;
    }
    cap.finish(&dir.join("errors.jsonl")).await;

    // replay: --replay-user-messages, two turns.
    let mock = MockAnthropic::start().await;
    let mut cap = Capture::start(
        Sandbox::new(&mock),
        &[&quiet[..], &["--replay-user-messages"]].concat(),
        Box::new(|_| Err("unexpected request".into())),
    );
    cap.initialize(Value::Null).await;
    for prompt in ["first", "second"] {
        cap.prompt(prompt).await;
        cap.until_result().await;
    }
    cap.finish(&dir.join("replay.jsonl")).await;
}
