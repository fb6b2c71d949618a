//! Tenants from a tenants file, the audit log, `/metrics`, the drain on `SIGTERM`,
//! request ids in the run's log lines, and the Python SDK's web shapes: the server
//! binary, each on a SQLite directory of its own (or a PostgreSQL database of its own),
//! running the real CLI against the mock model.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use claude_code_testkit::{
    MockAnthropic, Reply, Rule, Sandbox, ServerLog, ServerProcess, cli_path, survivors_in,
};
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ACME_TOKEN: &str = "acme-plaintext-token-3f9c2b7e41d0";
const BETA_TOKEN: &str = "beta-plaintext-token-8a1d5c0f92e4";
const OPS_TOKEN: &str = "ops-plaintext-token-c47b19e0d3a5";
const PLAIN_TOKEN: &str = "plain-plaintext-token-5e2f80a9b1c6";

/// The server binary, logging to a buffer.
struct Binary {
    child: tokio::process::Child,
    url: String,
    log: ServerLog,
    data_dir: tempfile::TempDir,
}

impl Binary {
    async fn start(sandbox: &Sandbox, extra: &[&str]) -> Binary {
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
        sandbox.configure(command.as_std_mut());
        command
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // A database of its own: never a DATABASE_URL another test uses.
            .env_remove("DATABASE_URL")
            .env_remove("CLAUDE_SERVER_TOKENS")
            .args(["--bind", "127.0.0.1:0", "--prewarm", "0", "--data-dir"])
            .arg(data_dir.path())
            .arg("--project-root")
            .arg(sandbox.cwd())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let server = ServerProcess::spawn(command, Duration::from_secs(60))
            .await
            .expect("the server listens");
        Binary {
            url: server.url(),
            child: server.child,
            log: server.log,
            data_dir,
        }
    }

    fn log(&self) -> String {
        self.log.text()
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Option<String>, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, _, body) = answer(response).await;
        (status, body)
    }

    async fn metrics(&self, token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

async fn answer(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The transcripts the CLIs wrote under a config directory.
fn transcripts(config_dir: &Path) -> Vec<PathBuf> {
    if !config_dir.join("projects").exists() {
        return Vec::new();
    }
    files_under(&config_dir.join("projects"))
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect()
}

/// A metric's value: the first sample of metric `name` with `label` (`k="v"`).
fn sample_where(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A metric's value (the first sample whose line starts with `prefix`).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Tenants {
    acme_root: PathBuf,
    beta_root: PathBuf,
    acme_config: PathBuf,
    beta_config: PathBuf,
    file: PathBuf,
}

/// Two tenants with their own roots and config directories (not created yet: the
/// server creates them), an operator, in a TOML tenants file.
fn tenants(sandbox: &Sandbox) -> Tenants {
    let base = sandbox.root();
    let acme_root = base.join("acme-root");
    let beta_root = base.join("beta-root");
    std::fs::create_dir_all(&acme_root).unwrap();
    std::fs::create_dir_all(&beta_root).unwrap();
    let acme_config = base.join("acme-config");
    let beta_config = base.join("beta-config");
    let file = base.join("tenants.toml");
    let hash = claude_code_server::hash_token;
    std::fs::write(
        &file,
        format!(
            r#"
[[tenants]]
name = "acme"
token_sha256 = ["{acme}"]
project_roots = ["{acme_root}"]
config_dir = "{acme_config}"

[[tenants]]
name = "beta"
token_sha256 = ["{beta}"]
project_roots = ["{beta_root}"]
config_dir = "{beta_config}"
[tenants.limits]
runs_per_minute = 2

[[tenants]]
name = "ops"
token_sha256 = ["{ops}"]
project_roots = ["{beta_root}"]
operator = true
"#,
            acme = hash(ACME_TOKEN),
            beta = hash(BETA_TOKEN),
            ops = hash(OPS_TOKEN),
            acme_root = acme_root.display(),
            beta_root = beta_root.display(),
            acme_config = acme_config.display(),
            beta_config = beta_config.display(),
        ),
    )
    .unwrap();
    Tenants {
        acme_root,
        beta_root,
        acme_config,
        beta_config,
        file,
    }
}

#[tokio::test]
async fn tenants_of_a_tenants_file_stay_apart_and_are_audited() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("acme question").reply(Reply::text("Acme answer.")));
    mock.on(Rule::prompt_contains("beta question").reply(Reply::text("Beta answer.")));
    mock.on(Rule::prompt_contains("plain question").reply(Reply::text("Plain answer.")));
    let sandbox = Sandbox::new(&mock);
    let t = tenants(&sandbox);
    let server = Binary::start(
        &sandbox,
        &[
            "--tenants-file",
            t.file.to_str().unwrap(),
            "--token",
            PLAIN_TOKEN,
        ],
    )
    .await;
    // The metrics before anything ran.
    let (status, before) = server.metrics(OPS_TOKEN).await;
    assert_eq!(status, 200, "{before}");

    // acme runs in its own root, with its own config directory.
    let (status, _, body) = server
        .post(ACME_TOKEN, "/v1/query", json!({"prompt": "acme question"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "Acme answer.");
    let acme_conversation = body["result"]["session_id"].as_str().unwrap().to_owned();
    let seen = mock
        .requests()
        .into_iter()
        .filter(|r| r.mentions("acme question"))
        .collect::<Vec<_>>();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r.system_text().contains(t.acme_root.to_str().unwrap())),
        "the model was not told acme's root"
    );
    assert!(
        !transcripts(&t.acme_config).is_empty(),
        "acme's CLI did not use acme's config directory"
    );
    assert!(transcripts(&t.beta_config).is_empty());
    assert!(transcripts(sandbox.config_dir()).is_empty());

    // acme cannot work in beta's root, however it names it.
    for cwd in [
        t.beta_root.to_str().unwrap().to_owned(),
        "../beta-root".to_owned(),
    ] {
        let (status, _, body) = server
            .post(
                ACME_TOKEN,
                "/v1/query",
                json!({"prompt": "acme question", "cwd": cwd}),
            )
            .await;
        assert_eq!(status, 400, "{cwd}: {body}");
    }

    // A session of acme's: beta cannot see, continue, interrupt or end it, nor resume
    // acme's conversation.
    let (status, _, session) = server
        .post(
            ACME_TOKEN,
            "/v1/sessions",
            json!({"prompt": "acme question again"}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let session = session["session"].as_str().unwrap().to_owned();
    let (status, _) = server
        .get(BETA_TOKEN, &format!("/v1/sessions/{session}"))
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = server
        .post(
            BETA_TOKEN,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "beta question"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = server
        .post(
            BETA_TOKEN,
            &format!("/v1/sessions/{session}/interrupt"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = server
        .post(
            BETA_TOKEN,
            "/v1/query",
            json!({"prompt": "beta question", "resume": acme_conversation}),
        )
        .await;
    assert_eq!(status, 404);

    // beta runs in its own root and config directory, within its limit of 2 a minute.
    let (status, _, body) = server
        .post(BETA_TOKEN, "/v1/query", json!({"prompt": "beta question"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        mock.requests()
            .iter()
            .filter(|r| r.mentions("beta question"))
            .all(|r| r.system_text().contains(t.beta_root.to_str().unwrap())
                && !r.system_text().contains(t.acme_root.to_str().unwrap()))
    );
    assert!(!transcripts(&t.beta_config).is_empty());
    // Refused requests (the 404s above) are no runs: one more run, then the next is
    // over the limit.
    let (status, _, body) = server
        .post(
            BETA_TOKEN,
            "/v1/query",
            json!({"prompt": "beta question 2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, retry_after, body) = server
        .post(
            BETA_TOKEN,
            "/v1/query",
            json!({"prompt": "beta question 3"}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    // acme has no such limit.
    let (status, _, body) = server
        .post(
            ACME_TOKEN,
            "/v1/query",
            json!({"prompt": "acme question 3"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A --token token is a tenant of its own, in the server's project root.
    let (status, _, body) = server
        .post(
            PLAIN_TOKEN,
            "/v1/query",
            json!({"prompt": "plain question"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The audit log: acme sees its own runs only; the operator sees every tenant's.
    let (status, own) = server.get(ACME_TOKEN, "/v1/audit").await;
    assert_eq!(status, 200, "{own}");
    let own = own["entries"].as_array().unwrap().clone();
    assert_eq!(own.len(), 3, "{own:?}");
    assert!(own.iter().all(|e| e["tenant"] == "acme"));
    let (status, all) = server.get(OPS_TOKEN, "/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{all}");
    let all = all["entries"].as_array().unwrap().clone();
    assert_eq!(all.len(), 6, "{all:?}");
    let first = all
        .iter()
        .find(|e| e["endpoint"] == "query" && e["tenant"] == "acme" && e["prompt_chars"] == 13)
        .expect("acme's first run is audited");
    let sha = Sha256::digest(b"acme question")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(first["prompt_sha256"], sha);
    assert_eq!(
        first["prompt"],
        Value::Null,
        "the prompt is kept without opt-in"
    );
    assert_eq!(first["cwd"], t.acme_root.to_str().unwrap());
    assert_eq!(first["mode"], "readOnly");
    assert_eq!(first["outcome"], "succeeded");
    assert!(first["cost_usd"].is_number(), "{first}");
    let (_, filtered) = server.get(OPS_TOKEN, "/v1/audit?tenant=beta").await;
    assert_eq!(filtered["entries"].as_array().unwrap().len(), 2);
    // acme cannot read beta's run through the run routes either.
    let beta_run = filtered["entries"][0]["run"].as_str().unwrap();
    let (status, _) = server
        .get(ACME_TOKEN, &format!("/v1/runs/{beta_run}"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .get(ACME_TOKEN, &format!("/v1/runs/{beta_run}/events"))
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = server
        .post(
            ACME_TOKEN,
            &format!("/v1/runs/{beta_run}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);

    // /metrics: for operators only; the names are there, and they moved.
    let (status, _) = server.metrics(ACME_TOKEN).await;
    assert_eq!(status, 404);
    let (status, after) = server.metrics(OPS_TOKEN).await;
    assert_eq!(status, 200, "{after}");
    for name in [
        "ccs_runs{state=\"succeeded\"}",
        "ccs_queue_depth",
        "ccs_leases_held{",
        "ccs_takeovers_total{",
        "ccs_pool_processes{",
        "ccs_approvals_waiting",
        "ccs_event_lag_seconds_count{",
        "ccs_cost_usd{tenant=\"acme\"}",
        "ccs_cost_usd{tenant=\"beta\"}",
        "ccs_draining{",
    ] {
        assert!(after.contains(name), "no {name} in\n{after}");
    }
    assert!(
        after.contains(&format!(
            "ccs_cost_usd{{tenant=\"token-{}\"}}",
            &claude_code_server::hash_token(PLAIN_TOKEN)[..12]
        )),
        "{after}"
    );
    assert_eq!(sample(&before, "ccs_runs{state=\"succeeded\"}"), Some(0.0));
    assert_eq!(sample(&after, "ccs_runs{state=\"succeeded\"}"), Some(6.0));
    assert!(sample(&after, "ccs_event_lag_seconds_count").unwrap() > 0.0);

    // No plaintext token anywhere in the database files or the log.
    let files = files_under(server.data_dir.path());
    assert!(!files.is_empty());
    let log = server.log();
    for token in [ACME_TOKEN, BETA_TOKEN, OPS_TOKEN, PLAIN_TOKEN] {
        for (path, bytes) in &files {
            assert!(!contains(bytes, token), "{token} in {}", path.display());
        }
        assert!(!log.contains(token), "{token} in the log");
    }
}

#[tokio::test]
async fn prompts_are_audited_only_when_the_operator_opts_in() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let sandbox = Sandbox::new(&mock);
    let server = Binary::start(&sandbox, &["--token", PLAIN_TOKEN, "--audit-prompts"]).await;
    let (status, _, body) = server
        .post(
            PLAIN_TOKEN,
            "/v1/query",
            json!({"prompt": "The capital of France?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, audit) = server.get(PLAIN_TOKEN, "/v1/audit").await;
    assert_eq!(status, 200);
    assert_eq!(audit["entries"][0]["prompt"], "The capital of France?");
    assert_eq!(
        audit["entries"][0]["tenant"],
        claude_code_server::hash_token(PLAIN_TOKEN)
    );
}

#[tokio::test]
async fn the_audit_subcommand_reads_a_stopped_servers_log() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let sandbox = Sandbox::new(&mock);
    let mut server = Binary::start(&sandbox, &["--token", PLAIN_TOKEN]).await;
    let (status, _, body) = server
        .post(
            PLAIN_TOKEN,
            "/v1/query",
            json!({"prompt": "The capital of France?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.signal("TERM");
    assert!(server.child.wait().await.unwrap().success());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"))
        .env_remove("DATABASE_URL")
        .arg("--data-dir")
        .arg(server.data_dir.path())
        .args(["audit", "--limit", "10"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "succeeded");
    assert_eq!(
        rows[0]["tenant"],
        claude_code_server::hash_token(PLAIN_TOKEN)
    );
    // A directory without a server's database is an error, not an empty log.
    let empty = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"))
        .env_remove("DATABASE_URL")
        .arg("--data-dir")
        .arg(empty.path())
        .arg("audit")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!empty.path().join("server.db").exists());
}

#[tokio::test]
async fn hash_token_prints_the_sha256_of_standard_input() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"))
        .arg("hash-token")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my token\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let expected: String = Sha256::digest(b"my token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);
}

/// The `data:` payloads of an SSE body.
async fn data_lines(response: reqwest::Response) -> Vec<String> {
    let mut out = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    // A body cut off (its server killed) ends the lines.
    while let Some(Ok(chunk)) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    out.push(data.trim().to_owned());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_python_sdk_web_shapes_are_served() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let sandbox = Sandbox::new(&mock);
    let server = Binary::start(&sandbox, &["--token", PLAIN_TOKEN]).await;

    let (status, _, body) = server
        .post(
            PLAIN_TOKEN,
            "/api/claude/query",
            json!({"prompt": "The capital of France?", "max_turns": 2, "system_prompt": "Answer tersely."}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["error"], Value::Null);
    let messages = body["messages"].as_array().unwrap();
    let answer = messages
        .iter()
        .find(|m| m["role"] == "assistant" && m["content"] == "Paris.")
        .unwrap_or_else(|| panic!("no answer in {body}"));
    assert!(answer["timestamp"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(answer["tools_used"].is_array());
    for m in messages {
        let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["content", "role", "timestamp", "tools_used"]);
    }
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.mentions("capital") && r.system_text().contains("Answer tersely.")),
        "the system prompt did not reach the model"
    );

    let response = reqwest::Client::new()
        .post(format!("{}/api/claude/stream", server.url))
        .bearer_auth(PLAIN_TOKEN)
        .json(&json!({"prompt": "The capital of France?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let lines = data_lines(response).await;
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[DONE]"),
        "{lines:?}"
    );
    let messages: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m["content"] == "Paris." && m["role"] == "assistant"),
        "{lines:?}"
    );
    for m in &messages {
        let mut keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["content", "role", "timestamp"]);
    }

    // Same auth and validation as /v1, in the same shape.
    let (status, _, body) = server
        .post("wrong", "/api/claude/query", json!({"prompt": "hi"}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], false);
    assert!(body["error"].is_string());
    let (status, _, body) = server
        .post(PLAIN_TOKEN, "/api/claude/stream", json!({"prompt": 5}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["success"], false);
    // Both are audited.
    let (_, audit) = server.get(PLAIN_TOKEN, "/v1/audit").await;
    let endpoints: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"compat_query") && endpoints.contains(&"compat_stream"));
}

/// A tenants file with one operator tenant (token [`OPS_TOKEN`]) in `root`.
fn operator_file(sandbox: &Sandbox, root: &Path) -> PathBuf {
    let file = sandbox.root().join("operators.json");
    std::fs::write(
        &file,
        json!({"tenants": [{
            "name": "ops",
            "token_sha256": [claude_code_server::hash_token(OPS_TOKEN)],
            "project_roots": [root],
            "operator": true,
        }]})
        .to_string(),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn sigterm_drains_a_running_run_then_exits() {
    let mock = MockAnthropic::start().await;
    // Slow enough for the test to see the drain while the run is in progress.
    mock.on(Rule::prompt_contains("slow question")
        .reply(Reply::text("Finally.").delay(Duration::from_secs(8))));
    let sandbox = Sandbox::new(&mock);
    let operators = operator_file(&sandbox, sandbox.cwd());
    let mut server = Binary::start(
        &sandbox,
        &[
            "--token",
            PLAIN_TOKEN,
            "--tenants-file",
            operators.to_str().unwrap(),
            "--drain-timeout",
            "120",
        ],
    )
    .await;
    let (_, idle) = server.metrics(OPS_TOKEN).await;
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let query = tokio::spawn({
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{url}/v1/query"))
                .bearer_auth(PLAIN_TOKEN)
                .header("x-request-id", "drain-req-7731")
                .json(&json!({"prompt": "slow question"}))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    // The run is at the model.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !mock.requests().iter().any(|r| r.mentions("slow question")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run never reached the model");
    // The run shows in the metrics: a lease held, a process busy.
    let (_, busy) = server.metrics(OPS_TOKEN).await;
    for (prefix, idle_value, busy_value) in [
        ("ccs_leases_held{", 0.0, 1.0),
        ("ccs_runs{state=\"running\"}", 0.0, 1.0),
    ] {
        assert_eq!(sample(&idle, prefix), Some(idle_value), "{prefix}\n{idle}");
        assert_eq!(sample(&busy, prefix), Some(busy_value), "{prefix}\n{busy}");
    }
    let processes = |text: &str| sample_where(text, "ccs_pool_processes", "state=\"busy\"");
    assert_eq!(processes(&idle), Some(0.0), "{idle}");
    assert_eq!(processes(&busy), Some(1.0), "{busy}");
    assert_eq!(sample(&busy, "ccs_draining{"), Some(0.0));
    server.signal("TERM");
    let (_, draining) = server.metrics(OPS_TOKEN).await;
    assert_eq!(sample(&draining, "ccs_draining{"), Some(1.0), "{draining}");
    // Draining: not ready, still serving.
    let (status, body) = server.get(PLAIN_TOKEN, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "draining");
    // New runs go elsewhere.
    let (status, retry_after, body) = server
        .post(PLAIN_TOKEN, "/v1/query", json!({"prompt": "slow question"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "draining");
    assert!(retry_after.is_some());
    // The run finishes, and its client gets the answer.
    let (status, body) = tokio::time::timeout(Duration::from_secs(120), query)
        .await
        .expect("the drained run never answered")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "Finally.");
    let exit = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .expect("the server did not exit after draining")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let log = server.log();
    assert!(log.contains("draining"), "{log}");
    // The request id is on the line of the replica that ran the run, with the run id.
    assert!(
        log.lines().any(|l| l.contains("running a claimed run")
            && l.contains("drain-req-7731")
            && l.contains("run=")),
        "{log}"
    );
    assert!(
        survivors_in(sandbox.cwd(), Duration::from_secs(15))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_drain_that_times_out_ends_the_run_interrupted() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("endless question")
        .reply(Reply::text("Too late.").delay(Duration::from_secs(300))));
    let sandbox = Sandbox::new(&mock);
    let mut server =
        Binary::start(&sandbox, &["--token", PLAIN_TOKEN, "--drain-timeout", "1"]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/query/stream", server.url))
        .bearer_auth(PLAIN_TOKEN)
        .json(&json!({"prompt": "endless question"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    tokio::time::timeout(Duration::from_secs(60), async {
        while !mock
            .requests()
            .iter()
            .any(|r| r.mentions("endless question"))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run never reached the model");
    server.signal("TERM");
    let lines = tokio::time::timeout(Duration::from_secs(60), data_lines(response))
        .await
        .expect("the stream did not end");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let kind = last["error"]["kind"].as_str().unwrap_or_default();
    assert!(
        kind == "interrupted" || kind == "shutting_down",
        "{lines:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .expect("the server did not exit")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        server.log().contains("drain timeout passed"),
        "{}",
        server.log()
    );
    assert!(
        survivors_in(sandbox.cwd(), Duration::from_secs(15))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn the_audit_log_is_kept_on_postgres() {
    let Some(db) = claude_code_testkit::pg::TestDatabase::create().await else {
        return;
    };
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let sandbox = Sandbox::new(&mock);
    let server = Binary::start(
        &sandbox,
        &["--token", PLAIN_TOKEN, "--database-url", db.url()],
    )
    .await;
    let (status, _, body) = server
        .post(
            PLAIN_TOKEN,
            "/v1/query",
            json!({"prompt": "The capital of France?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, audit) = server.get(PLAIN_TOKEN, "/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entry = &audit["entries"][0];
    assert_eq!(entry["outcome"], "succeeded", "{audit}");
    assert_eq!(entry["prompt_chars"], 22);
    assert_eq!(entry["prompt"], Value::Null);
    let (status, metrics) = server.metrics(PLAIN_TOKEN).await;
    // A --token token is no operator.
    assert_eq!(status, 404, "{metrics}");
}

#[tokio::test]
async fn a_replica_that_takes_over_a_dead_ones_run_counts_it() {
    let Some(db) = claude_code_testkit::pg::TestDatabase::create().await else {
        return;
    };
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("long question")
        .reply(Reply::text("Never.").delay(Duration::from_secs(300))));
    let sandbox = Sandbox::new(&mock);
    let operators = operator_file(&sandbox, sandbox.cwd());
    let args = |replica: &'static str| {
        vec![
            "--tenants-file".to_owned(),
            operators.to_str().unwrap().to_owned(),
            "--database-url".to_owned(),
            db.url().to_owned(),
            "--lease".to_owned(),
            "2".to_owned(),
            "--replica-id".to_owned(),
            replica.to_owned(),
        ]
    };
    let a_args = args("replica-a");
    let mut a = Binary::start(
        &sandbox,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let url = a.url.clone();
    let stream = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/query/stream"))
            .bearer_auth(OPS_TOKEN)
            .json(&json!({"prompt": "long question"}))
            .send()
            .await
            .unwrap();
        let run = response.headers()["x-run-id"].to_str().unwrap().to_owned();
        // Read until A dies.
        let _ = data_lines(response).await;
        run
    });
    tokio::time::timeout(Duration::from_secs(60), async {
        while !mock.requests().iter().any(|r| r.mentions("long question")) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run never reached the model");
    // Only A was there to claim it; now B joins, and A dies.
    let b_args = args("replica-b");
    let b = Binary::start(
        &sandbox,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let (status, before) = b.metrics(OPS_TOKEN).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        sample(&before, "ccs_takeovers_total{"),
        Some(0.0),
        "{before}"
    );
    a.signal("KILL");
    let _ = a.child.wait().await;
    let run = tokio::time::timeout(Duration::from_secs(30), stream)
        .await
        .expect("the stream did not end with A")
        .unwrap();
    // B takes the run over when its lease runs out.
    let after = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (_, text) = b.metrics(OPS_TOKEN).await;
            // The counter moves once the run is ended; a scrape reads the runs before
            // the counter: wait for a scrape that shows both.
            if sample(&text, "ccs_takeovers_total{") == Some(1.0)
                && sample(&text, "ccs_runs{state=\"interrupted\"}") == Some(1.0)
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("B never counted the takeover");
    assert_eq!(
        sample(&after, "ccs_runs{state=\"running\"}"),
        Some(0.0),
        "{after}"
    );
    assert!(after.contains("replica=\"replica-b\""), "{after}");
    let (_, status) = b.get(OPS_TOKEN, &format!("/v1/runs/{run}")).await;
    assert_eq!(status["state"], "interrupted");
    // The audit log, read through B, has the run A started, ended by the takeover.
    let (_, audit) = b.get(OPS_TOKEN, "/v1/audit").await;
    assert_eq!(audit["entries"][0]["run"], run.as_str());
    assert_eq!(audit["entries"][0]["outcome"], "interrupted");
}

#[tokio::test]
async fn a_tenants_approvals_stay_in_its_own_root() {
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let t = tenants(&sandbox);
    let inside = t.acme_root.join("inside.txt").display().to_string();
    mock.on(Rule::prompt_contains("write a file").steps([
        Reply::tool_use("Write", json!({"file_path": inside, "content": "ok"})),
        Reply::text("written"),
    ]));
    let server = Binary::start(&sandbox, &["--tenants-file", t.file.to_str().unwrap()]).await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v1/query/stream", server.url))
        .bearer_auth(ACME_TOKEN)
        .json(
            &json!({"prompt": "write a file", "permission_mode": "askForEdits", "approvals": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut last = String::new();
    let mut asked = 0;
    while let Some(Ok(chunk)) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .unwrap_or("message")
                .trim()
                .to_owned();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap_or("null")
                .trim()
                .to_owned();
            last.clone_from(&name);
            if name != "permission_request" {
                continue;
            }
            asked += 1;
            let request: Value = serde_json::from_str(&data).unwrap();
            let id = request["approval_id"].as_str().unwrap();
            let answer = |token: &'static str, body: Value| {
                let http = http.clone();
                let url = format!("{}/v1/approvals/{id}", server.url);
                async move {
                    let r = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16()
                }
            };
            // Another tenant cannot answer it.
            assert_eq!(answer(BETA_TOKEN, json!({"allow": true})).await, 404);
            // Nor may the answer move the write to the server's root or beta's.
            for path in [
                sandbox.cwd().join("stolen.txt"),
                t.beta_root.join("stolen.txt"),
            ] {
                let rewrite =
                    json!({"allow": true, "updated_input": {"file_path": path, "content": "x"}});
                assert_eq!(answer(ACME_TOKEN, rewrite).await, 400, "{}", path.display());
            }
            let moved = t.acme_root.join("moved.txt");
            let rewrite =
                json!({"allow": true, "updated_input": {"file_path": moved, "content": "moved"}});
            assert_eq!(answer(ACME_TOKEN, rewrite).await, 204);
        }
    }
    assert_eq!(asked, 1);
    assert_eq!(last, "done");
    assert_eq!(
        std::fs::read_to_string(t.acme_root.join("moved.txt")).unwrap(),
        "moved"
    );
    assert!(!sandbox.cwd().join("stolen.txt").exists());
    assert!(!t.beta_root.join("stolen.txt").exists());
}

#[tokio::test]
async fn a_tenants_session_continues_from_its_own_config_dir() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("remember").reply(Reply::text("Remembered.")));
    mock.on(Rule::prompt_contains("which word").reply(Reply::text("Apricot.")));
    let sandbox = Sandbox::new(&mock);
    let t = tenants(&sandbox);
    // No hot process: the second turn resumes from the session store.
    let server = Binary::start(
        &sandbox,
        &["--tenants-file", t.file.to_str().unwrap(), "--max-hot", "0"],
    )
    .await;
    let (status, _, body) = server
        .post(
            ACME_TOKEN,
            "/v1/sessions",
            json!({"prompt": "remember the word apricot-7d1e"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = body["session"].as_str().unwrap().to_owned();
    let (status, _, body) = server
        .post(
            ACME_TOKEN,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "which word did I ask you to remember?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The model saw the first turn with the second.
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.mentions("which word") && r.mentions("apricot-7d1e")),
        "the second turn did not carry the first"
    );
    assert!(!transcripts(&t.acme_config).is_empty());
    assert!(transcripts(&t.beta_config).is_empty());
    assert!(transcripts(sandbox.config_dir()).is_empty());
}
