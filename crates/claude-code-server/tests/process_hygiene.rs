//! The server binary as an operator runs it: what its CLIs inherit, and what happens to
//! them when the server is killed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use claude_code_testkit::{
    MockAnthropic, Reply, Rule, Sandbox, ServerProcess, cli_path, pid_is_running, processes_in,
    survivors_in,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const TOKEN_A: &str = "tok-A-3f9c1e";
const TOKEN_B: &str = "tok-B-77d2aa";
const DB_PASSWORD: &str = "hunter2-db-secret";

/// A `claude-code-server` process, its address, and its sandbox.
struct Running {
    child: Child,
    url: String,
}

/// The test database's URL with a password in it: a secret the server's environment
/// holds (trust authentication ignores it).
fn url_with_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) if !user.contains(':') => {
                format!("{scheme}://{user}:{DB_PASSWORD}@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Starts the server binary the way an operator would: secrets in its environment (its
/// tokens; its database URL, with a password), the CLI's environment passed
/// explicitly, the mock model as the API.
async fn start_server(sandbox: &Sandbox, database: &str) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(sandbox.env())
        .env("CLAUDE_CODE_CLI_PATH", cli_path())
        .env("CLAUDE_SERVER_TOKENS", format!("{TOKEN_A},{TOKEN_B}"))
        .env("DATABASE_URL", url_with_password(database))
        // No spares: every CLI in the project is a run's.
        .args(["--bind", "127.0.0.1:0", "--prewarm", "0", "--project-root"])
        .arg(sandbox.cwd())
        .args([
            "--allowed-modes",
            "readOnly,askForEdits",
            "--pass-env",
            "CLAUDE_CODE_TMPDIR,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,CLAUDE_CODE_MAX_RETRIES,DISABLE_*,XDG_*",
        ])
        // Not in the project: only the CLIs and their tools work there.
        .current_dir(sandbox.root())
        // The log goes to stderr (read, and drained, by `ServerProcess`).
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let server = ServerProcess::spawn(command, Duration::from_secs(30))
        .await
        .expect("the server listens within 30 s");
    Running {
        url: server.url(),
        child: server.child,
    }
}

/// Streams a query with approvals, approving every tool use, until `stop` says so or
/// the stream ends. Returns the event names and data.
async fn stream_approving(
    url: &str,
    token: &str,
    body: Value,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{url}/v1/query/stream"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        panic!("{status}: {}", response.text().await.unwrap_or_default());
    }
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let Ok(value) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if name == "permission_request" {
                let id = value["approval_id"].as_str().unwrap();
                let answer = http
                    .post(format!("{url}/v1/approvals/{id}"))
                    .bearer_auth(token)
                    .json(&json!({"allow": true}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status().as_u16(), 204);
            }
            let done = stop(&name, &value);
            events.push((name, value));
            if done {
                return events;
            }
        }
    }
    events
}

fn sigkill(child: &Child) {
    let pid = child.id().expect("the server runs") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Processes working in `dir` whose command line contains `needle`.
fn processes_running(dir: &Path, needle: &str) -> Vec<u32> {
    processes_in(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[tokio::test]
async fn a_tool_sees_none_of_the_servers_secrets() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("PRINT_ENV").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "env", "description": "print the environment"}),
        ),
        Reply::text("printed"),
    ]));
    let sandbox = Sandbox::new(&mock);
    let Some(db) = claude_code_testkit::pg::TestDatabase::create().await else {
        return;
    };
    let server = start_server(&sandbox, db.url()).await;
    let events = stream_approving(
        &server.url,
        TOKEN_A,
        json!({"prompt": "PRINT_ENV", "permission_mode": "askForEdits", "approvals": true}),
        |_, _| false,
    )
    .await;
    assert_eq!(
        events.last().map(|(n, _)| n.as_str()),
        Some("done"),
        "{events:?}"
    );
    let output = mock
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .find(|t| t.tool_name.as_deref() == Some("Bash"))
        .map(|t| t.content)
        .expect("the model got the command's output");
    // The tool ran with a working environment...
    assert!(output.contains("HOME="), "{output}");
    assert!(output.contains("PATH="), "{output}");
    assert!(output.contains("CLAUDE_CODE_TMPDIR="), "{output}");
    // ...and none of the server's secrets.
    for secret in [
        TOKEN_A,
        TOKEN_B,
        DB_PASSWORD,
        "CLAUDE_SERVER_TOKENS",
        "DATABASE_URL",
    ] {
        assert!(!output.contains(secret), "{secret} leaked:\n{output}");
    }
}

#[tokio::test]
async fn a_server_that_refuses_to_pass_its_own_secrets() {
    let sandbox = Sandbox::without_mock();
    for pattern in ["CLAUDE_SERVER_TOKENS", "DATABASE_URL", "CLAUDE_*", "*"] {
        let output = Command::new(env!("CARGO_BIN_EXE_claude-code-server"))
            .args([
                "--bind",
                "127.0.0.1:0",
                "--pass-env",
                pattern,
                "--project-root",
            ])
            .arg(sandbox.cwd())
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{pattern} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("secret"), "{pattern}: {stderr}");
    }
}

#[tokio::test]
async fn clis_die_with_a_killed_server_and_their_leftovers_are_reaped_at_the_next_start() {
    let mock = MockAnthropic::start().await;
    // A run whose tool starts a long command, and a run waiting on a slow model.
    mock.on(Rule::prompt_contains("LONG_COMMAND").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "sleep 3600", "description": "wait", "run_in_background": true}),
        ),
        Reply::text("started").delay(Duration::from_secs(600)),
    ]));
    mock.on(Rule::prompt_contains("SLOW_MODEL")
        .reply(Reply::text("too late").delay(Duration::from_secs(600))));
    let sandbox = Sandbox::new(&mock);
    let cwd = sandbox.cwd().to_owned();
    let Some(db) = claude_code_testkit::pg::TestDatabase::create().await else {
        return;
    };
    let mut server = start_server(&sandbox, db.url()).await;

    let url = server.url.clone();
    let long = tokio::spawn(async move {
        stream_approving(
            &url,
            TOKEN_A,
            json!({"prompt": "LONG_COMMAND", "permission_mode": "askForEdits", "approvals": true}),
            |_, _| false,
        )
        .await
    });
    let url = server.url.clone();
    let slow = tokio::spawn(async move {
        stream_approving(&url, TOKEN_B, json!({"prompt": "SLOW_MODEL"}), |_, _| false).await
    });
    // Wait for the command to run and for both CLIs to exist.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (sleepers, clis) = loop {
        let sleepers = processes_running(&cwd, "sleep 3600");
        let clis = processes_running(&cwd, "stream-json");
        if !sleepers.is_empty() && clis.len() >= 2 {
            break (sleepers, clis);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs did not start: sleepers {sleepers:?}, CLIs {clis:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    sigkill(&server.child);
    let _ = server.child.wait().await;
    // The CLIs die with the server: nobody is left calling the model.
    for pid in &clis {
        assert!(
            claude_code_testkit::wait_until_gone(&[*pid], Duration::from_secs(10)).await,
            "CLI {pid} outlived the killed server"
        );
    }
    long.abort();
    slow.abort();
    // The tool's command left the CLI's process group, so it outlives its CLI...
    assert!(
        sleepers.iter().any(|pid| pid_is_running(*pid)),
        "the command should still run until a server starts again"
    );

    // ...until the next server start reaps what the dead one left.
    let mut again = start_server(&sandbox, db.url()).await;
    let left = survivors_in(&cwd, Duration::from_secs(10)).await;
    assert!(left.is_empty(), "left running after the restart: {left:?}");
    again.child.start_kill().unwrap();
    let _ = again.child.wait().await;
}
