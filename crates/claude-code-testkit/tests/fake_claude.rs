//! The `fake-claude` modes behave as documented.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use claude_code_testkit::fake::{self, FakeMode};
use claude_code_testkit::{
    Sandbox, fake_claude_path, pid_is_running, read_pid_file, read_record, wait_until_gone,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const TIMEOUT: Duration = Duration::from_secs(30);

fn initialize() -> String {
    json!({"type": "control_request", "request_id": "init_1",
        "request": {"subtype": "initialize", "hooks": null}})
    .to_string()
}

fn user(text: &str) -> String {
    json!({"type": "user", "session_id": "", "message": {"role": "user", "content": text},
        "parent_tool_use_id": null})
    .to_string()
}

fn command(sandbox: &Sandbox, mode: FakeMode) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fake-claude"));
    sandbox.configure(command.as_std_mut());
    command
        .env(fake::MODE_ENV, mode.as_str())
        .args([
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Writes `lines` (then closes stdin) and collects everything until exit.
async fn run(mut command: Command, lines: &[String]) -> Output {
    let mut child = command.spawn().expect("spawn fake-claude");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    // Write in the background: a mode may exit (or flood) before reading.
    tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("fake-claude exits")
        .expect("wait for fake-claude")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|line| line["type"] == kind).collect()
}

/// Spawns a mode that stays alive, and reads until the `init` line of its prompt.
async fn start_hanging(sandbox: &Sandbox, mode: FakeMode, pid_file: &PathBuf) -> Child {
    let mut command = command(sandbox, mode);
    command.env(fake::PID_FILE_ENV, pid_file);
    let mut child = command.spawn().expect("spawn fake-claude");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n{}\n", initialize(), user("hello")).as_bytes())
        .await
        .unwrap();
    drop(stdin); // These modes ignore EOF.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(TIMEOUT, stdout.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout stays open");
        if line.contains(r#""subtype":"init""#) {
            break;
        }
    }
    child
}

#[test]
fn the_binary_is_found_next_to_the_test_executable() {
    assert_eq!(
        fake_claude_path(),
        PathBuf::from(env!("CARGO_BIN_EXE_fake-claude"))
    );
}

#[tokio::test]
async fn version_like_the_cli() {
    let sandbox = Sandbox::without_mock();
    let mut cmd = command(&sandbox, FakeMode::ExitEarly);
    cmd.arg("--version");
    let output = run(cmd, &[]).await;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2.1.332 (Claude Code)\n"
    );

    let mut cmd = command(&sandbox, FakeMode::Ok);
    cmd.arg("-v").env(fake::VERSION_ENV, "9.8.7");
    let output = run(cmd, &[]).await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "9.8.7 (Claude Code)\n"
    );
}

#[tokio::test]
async fn ok_answers_and_records_what_it_got() {
    let sandbox = Sandbox::without_mock();
    let record = sandbox.root().join("record.jsonl");
    let pids = sandbox.root().join("pids");
    let mut cmd = command(&sandbox, FakeMode::Ok);
    cmd.env(fake::RECORD_ENV, &record)
        .env(fake::PID_FILE_ENV, &pids)
        .env("CLAUDE_CODE_ENTRYPOINT", "sdk-rust")
        .arg("--max-turns=2");
    let input = [initialize(), user("hello"), user("again")];
    let output = run(cmd, &input).await;
    assert!(output.status.success(), "{output:?}");

    let lines = json_lines(&output);
    let response = &of_type(&lines, "control_response")[0]["response"];
    assert_eq!(response["subtype"], "success");
    assert_eq!(response["request_id"], "init_1");
    assert!(response["response"]["commands"].is_array());
    let init = of_type(&lines, "system")[0];
    assert_eq!(init["subtype"], "init");
    assert_eq!(init["cwd"], sandbox.cwd().to_str().unwrap());
    let results = of_type(&lines, "result");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["result"], "fake-claude reply to: hello");
    assert_eq!(results[0]["session_id"], init["session_id"]);
    assert_eq!(results[1]["total_cost_usd"], 0.00028);
    assert_eq!(of_type(&lines, "assistant").len(), 2);

    let invocations = read_record(&record).unwrap();
    assert_eq!(invocations.len(), 1);
    let invocation = &invocations[0];
    assert!(invocation.has_flag("--verbose"));
    assert_eq!(invocation.flag_value("--max-turns"), Some("2"));
    assert_eq!(invocation.env["CLAUDE_CODE_ENTRYPOINT"], "sdk-rust");
    assert_eq!(invocation.env["CLAUDE_CODE_MAX_RETRIES"], "0");
    assert_eq!(invocation.cwd, sandbox.cwd());
    assert_eq!(invocation.stdin, input);
    assert_eq!(invocation.stdin_json()[1]["message"]["content"], "hello");
    assert_eq!(read_pid_file(&pids), [invocation.pid]);
}

#[tokio::test]
async fn crash_exits_3_without_a_result() {
    let sandbox = Sandbox::without_mock();
    let output = run(
        command(&sandbox, FakeMode::Crash),
        &[initialize(), user("hi")],
    )
    .await;
    assert_eq!(output.status.code(), Some(3));
    let lines = json_lines(&output);
    assert_eq!(of_type(&lines, "assistant").len(), 1);
    assert!(of_type(&lines, "result").is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("crash"));
}

#[tokio::test]
async fn garbage_lines_surround_valid_messages() {
    let sandbox = Sandbox::without_mock();
    let output = run(
        command(&sandbox, FakeMode::Garbage),
        &[initialize(), user("hi")],
    )
    .await;
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let not_json = stdout
        .lines()
        .filter(|line| serde_json::from_str::<Value>(line).is_err())
        .count();
    assert!(not_json >= 4, "{stdout}");
    let lines = json_lines(&output);
    assert!(lines.iter().any(|line| line["type"] == "fake_future_type"));
    assert!(lines.iter().any(Value::is_array));
    assert_eq!(of_type(&lines, "assistant").len(), 2);
    let result = of_type(&lines, "result")[0];
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["result"], "last valid line among garbage");
}

#[tokio::test]
async fn exit_early_reads_nothing() {
    let sandbox = Sandbox::without_mock();
    let record = sandbox.root().join("record.jsonl");
    let mut cmd = command(&sandbox, FakeMode::ExitEarly);
    cmd.env(fake::RECORD_ENV, &record);
    let output = run(cmd, &[initialize()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(!output.stderr.is_empty());
    assert!(read_record(&record).unwrap()[0].stdin.is_empty());
}

#[tokio::test]
async fn huge_line_has_the_requested_size() {
    let sandbox = Sandbox::without_mock();
    let mut cmd = command(&sandbox, FakeMode::HugeLine);
    cmd.env(fake::HUGE_BYTES_ENV, "3_000_000");
    let output = run(cmd, &[initialize(), user("hi")]).await;
    assert!(output.status.success());
    let lines = json_lines(&output);
    let text = of_type(&lines, "assistant")[0]["message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(text, 3_000_000);
    assert_eq!(of_type(&lines, "result").len(), 1);
}

#[tokio::test]
async fn stderr_flood_then_a_normal_answer() {
    let sandbox = Sandbox::without_mock();
    let mut cmd = command(&sandbox, FakeMode::StderrFlood);
    cmd.env(fake::STDERR_BYTES_ENV, (4 << 20).to_string());
    let output = run(cmd, &[initialize(), user("hi")]).await;
    assert!(output.status.success());
    assert_eq!(output.stderr.len(), 4 << 20);
    assert_eq!(of_type(&json_lines(&output), "result").len(), 1);
}

#[tokio::test]
async fn slow_spaces_its_lines() {
    let sandbox = Sandbox::without_mock();
    let mut cmd = command(&sandbox, FakeMode::Slow);
    cmd.env(fake::DELAY_MS_ENV, "60");
    let started = Instant::now();
    let output = run(cmd, &[initialize(), user("hi")]).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    let lines = json_lines(&output);
    assert_eq!(of_type(&lines, "assistant").len(), 3);
    assert_eq!(of_type(&lines, "result")[0]["result"], "slow tick 3");
}

#[tokio::test]
async fn hang_outlives_stdin_until_killed() {
    let sandbox = Sandbox::without_mock();
    let pid_file = sandbox.root().join("pids");
    let mut child = start_hanging(&sandbox, FakeMode::Hang, &pid_file).await;
    let pid = child.id().unwrap();
    assert_eq!(read_pid_file(&pid_file), [pid]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pid_is_running(pid));
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    child.wait().await.unwrap();
    assert!(!pid_is_running(pid));
}

#[tokio::test]
async fn ignore_sigterm_needs_sigkill() {
    let sandbox = Sandbox::without_mock();
    let pid_file = sandbox.root().join("pids");
    let mut child = start_hanging(&sandbox, FakeMode::IgnoreSigterm, &pid_file).await;
    let pid = child.id().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pid_is_running(pid), "SIGTERM must be ignored");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    assert!(wait_until_gone(&[pid], Duration::from_secs(5)).await);
}

#[tokio::test]
async fn grandchild_dies_with_the_process_group() {
    let sandbox = Sandbox::without_mock();
    let pid_file = sandbox.root().join("pids");
    let mut child = start_hanging(&sandbox, FakeMode::Grandchild, &pid_file).await;
    let pids = read_pid_file(&pid_file);
    assert_eq!(pids.len(), 2, "fake-claude and its grandchild: {pids:?}");
    assert_eq!(pids[0], child.id().unwrap());
    assert!(pids.iter().all(|&pid| pid_is_running(pid)));
    // The group is fake-claude's pid (process_group(0)).
    killpg(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    assert!(wait_until_gone(&pids, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn unknown_request_asks_the_sdk_and_reports_its_answer() {
    let sandbox = Sandbox::without_mock();
    let mut child = command(&sandbox, FakeMode::UnknownRequest)
        .spawn()
        .expect("spawn fake-claude");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_json = async || -> Value {
        let line = tokio::time::timeout(TIMEOUT, stdout.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("stdout stays open");
        serde_json::from_str(&line).expect("a JSON line")
    };
    stdin
        .write_all(format!("{}\n{}\n", initialize(), user("hello")).as_bytes())
        .await
        .unwrap();
    assert_eq!(next_json().await["type"], "control_response");
    assert_eq!(next_json().await["subtype"], "init");
    let request = next_json().await;
    assert_eq!(
        request,
        json!({"type": "control_request", "request_id": fake::UNKNOWN_REQUEST_ID,
            "request": {"subtype": fake::UNKNOWN_REQUEST_SUBTYPE}})
    );

    // An answer to some other request changes nothing; the right one ends the turn.
    let answer = |id: &str| {
        json!({"type": "control_response", "response": {"subtype": "error",
            "request_id": id, "error": "Unsupported control request subtype: no_such_subtype"}})
    };
    let other = answer("someone_else");
    let ours = answer(fake::UNKNOWN_REQUEST_ID);
    stdin
        .write_all(format!("{other}\n{ours}\n").as_bytes())
        .await
        .unwrap();
    let assistant = next_json().await;
    let text = assistant["message"]["content"][0]["text"].as_str().unwrap();
    let echoed = text
        .strip_prefix(fake::UNKNOWN_REQUEST_ANSWER_PREFIX)
        .expect("the assistant text starts with the prefix");
    assert_eq!(serde_json::from_str::<Value>(echoed).unwrap(), ours);
    let result = next_json().await;
    assert_eq!(result["type"], "result");
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["result"], text);

    drop(stdin);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("fake-claude exits when stdin closes")
        .unwrap();
    assert!(status.success());
}

#[test]
fn every_mode_has_a_distinct_name() {
    let mut names: Vec<&str> = FakeMode::ALL.iter().map(|mode| mode.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FakeMode::ALL.len());
    assert!(names.contains(&"unknown-request"));
}
