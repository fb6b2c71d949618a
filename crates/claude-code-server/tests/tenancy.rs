//! Tenancy and error classes: two tenants (and an operator) on one server, on a real
//! socket, running the real CLI against the mock model.

use std::time::Duration;

use claude_code_sdk::{ClaudeCodeOptions, PermissionMode, PoolConfig};
use claude_code_server::{AppState, ServerConfig, router};
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
use futures::StreamExt;
use serde_json::{Value, json};

const TOK_A: &str = "tokA";
const TOK_B: &str = "tokB";
const OPERATOR: &str = "tokOperator";

struct Server {
    url: String,
    mock: MockAnthropic,
    sandbox: Sandbox,
    http: reqwest::Client,
    _state: AppState,
}

impl Server {
    async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Server {
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        let options = ClaudeCodeOptions::builder()
            .cli_path(cli_path())
            .envs(sandbox.env())
            .build()
            .unwrap();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
            // Spares are tested on their own (tests/pool_bound.rs): none here.
            .prewarm(0)
            .api_token(TOK_A)
            .api_token(TOK_B)
            .operator_token(OPERATOR)
            .project_root(sandbox.cwd())
            .base_options(options)
            .modes(
                [
                    PermissionMode::ReadOnly,
                    PermissionMode::AskForEdits,
                    PermissionMode::Strict,
                ],
                PermissionMode::ReadOnly,
            )
            .request_timeout(Duration::from_secs(120));
        let state = AppState::new(configure(config)).await.unwrap();
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            url,
            mock,
            sandbox,
            http: reqwest::Client::new(),
            _state: state,
        }
    }

    fn post(&self, token: &str, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
    }

    /// Status, `Retry-After` and body.
    async fn send(&self, token: &str, path: &str, body: Value) -> (u16, Option<String>, Value) {
        let response = self.post(token, path, body).send().await.unwrap();
        answer(response).await
    }

    async fn json(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self.send(token, path, body).await;
        (status, body)
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let (status, _, body) = answer(response).await;
        (status, body)
    }

    async fn stats(&self, token: &str) -> Value {
        let (status, body) = self.get(token, "/v1/stats").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// How many model requests mention `needle`.
    fn model_saw(&self, needle: &str) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| r.mentions(needle))
            .count()
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

/// Reads server-sent events until the stream ends; `on_event` may act on each.
async fn read_events(
    response: reqwest::Response,
    mut on_event: impl FnMut(&str, &Value),
) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
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
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            on_event(&name, &value);
            events.push((name, value));
        }
    }
    events
}

fn session_id(body: &Value) -> String {
    body["result"]["session_id"].as_str().unwrap().to_owned()
}

// 1. A CLI session id belongs to the caller whose run produced it.

#[tokio::test]
async fn another_tenant_cannot_resume_my_conversation() {
    let s = Server::start(|c| c).await;
    s.mock.on(Rule::any().reply(Reply::text("Noted.")));
    let (status, first) = s
        .json(
            TOK_A,
            "/v1/query",
            json!({"prompt": "My locker code is 4711."}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let id = session_id(&first);

    // B presents A's id, on both query endpoints: unknown to B.
    let (status, body) = s
        .json(
            TOK_B,
            "/v1/query",
            json!({"prompt": "B asks: what is the locker code?", "resume": id}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["kind"], "not_found");
    assert_eq!(body["error"]["transient"], false);
    let (status, body) = s
        .json(
            TOK_B,
            "/v1/query/stream",
            json!({"prompt": "B asks: what is the locker code?", "resume": id}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        s.model_saw("B asks"),
        0,
        "the model must not hear from B in A's conversation"
    );

    // An id nobody's run produced is unknown too, and never reaches the CLI.
    let stranger = uuid::Uuid::new_v4().to_string();
    let (status, body) = s
        .json(
            TOK_A,
            "/v1/query",
            json!({"prompt": "B asks again", "resume": stranger}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("stderr"), "{body}");
    assert_eq!(s.model_saw("B asks"), 0);

    // A continues its own conversation, and only its own turns are in it.
    let (status, second) = s
        .json(
            TOK_A,
            "/v1/query",
            json!({"prompt": "A asks: which code did I give?", "resume": id}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let last = s.mock.requests().pop().unwrap();
    assert!(last.mentions("My locker code is 4711."));
    assert!(!last.mentions("B asks"));
}

// 2. Sessions: only real conversations count, per tenant.

#[tokio::test]
async fn aborted_session_starts_leave_nothing_behind() {
    let s = Server::start(|c| {
        c.pool(PoolConfig {
            max_concurrent: 1,
            max_queued: 64,
            queue_timeout: Duration::from_secs(60),
            ..PoolConfig::default()
        })
        .sessions(3, Duration::from_secs(3600))
    })
    .await;
    s.mock.on(Rule::prompt_contains("hold the slot")
        .reply(Reply::text("finally").delay(Duration::from_secs(3))));
    s.mock.on(Rule::any().reply(Reply::text("hello")));
    let holder = s.post(TOK_A, "/v1/query", json!({"prompt": "hold the slot"}));
    let holding = tokio::spawn(holder.send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ten starts wait for the slot and give up: the client drops each request.
    for _ in 0..10 {
        let _ = s
            .post(TOK_A, "/v1/sessions", json!({"prompt": "never mind"}))
            .timeout(Duration::from_millis(100))
            .send()
            .await;
    }
    let held = holding.await.unwrap().unwrap();
    let st = held.status().as_u16();
    let b = held.text().await.unwrap();
    assert_eq!(st, 200, "{b}");
    // Nothing was left behind: both tenants start sessions, up to A's cap.
    assert_eq!(s.stats(TOK_A).await["sessions"]["open"], 0);
    for token in [TOK_A, TOK_B] {
        let (status, body) = s
            .json(token, "/v1/sessions", json!({"prompt": "a real one"}))
            .await;
        assert_eq!(status, 201, "{token}: {body}");
    }
    assert_eq!(s.stats(TOK_A).await["sessions"]["open"], 1);
    assert_eq!(s.stats(TOK_B).await["sessions"]["open"], 1);
    assert_eq!(s.model_saw("never mind"), 0);
}

#[tokio::test]
async fn the_session_cap_is_per_tenant() {
    let s = Server::start(|c| c.sessions(2, Duration::from_secs(3600))).await;
    s.mock.on(Rule::any().reply(Reply::text("hello")));
    for _ in 0..2 {
        let (status, body) = s.json(TOK_A, "/v1/sessions", json!({"prompt": "hi"})).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, retry_after, body) = s.send(TOK_A, "/v1/sessions", json!({"prompt": "hi"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "too_many_sessions");
    assert_eq!(body["error"]["transient"], true);
    assert!(retry_after.is_some());
    // A's full cap does not lock B out.
    let (status, body) = s.json(TOK_B, "/v1/sessions", json!({"prompt": "hi"})).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_failing_first_turn_keeps_no_session() {
    let s = Server::start(|c| c.sessions(1, Duration::from_secs(3600))).await;
    s.mock
        .on(Rule::prompt_contains("doomed").reply(Reply::error(500)));
    s.mock.on(Rule::any().reply(Reply::text("hello")));
    let (status, body) = s
        .json(TOK_A, "/v1/sessions", json!({"prompt": "a doomed start"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.get("session").is_none(), "{body}");
    assert_eq!(s.stats(TOK_A).await["sessions"]["open"], 0);
    // The failed start holds none of A's one session.
    let (status, body) = s
        .json(TOK_A, "/v1/sessions", json!({"prompt": "a good start"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["session"].as_str().unwrap();
    let (status, _) = s.get(TOK_A, &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(s.stats(TOK_A).await["sessions"]["open"], 1);
}

// 3. Approvals stay in the project.

/// Streams `prompt` with approvals as `token`, answering each permission request with
/// `answer(request) -> [(body, expected status)]` (tried in order). Returns the events.
async fn approve_with(
    s: &Server,
    mode: &str,
    prompt: &str,
    answer: impl Fn(&Value) -> Vec<(Value, u16)> + Send + 'static,
) -> Vec<(String, Value)> {
    let response = s
        .post(
            TOK_A,
            "/v1/query/stream",
            json!({"prompt": prompt, "permission_mode": mode, "approvals": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let answering = {
        let (http, url) = (s.http.clone(), s.url.clone());
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                let id = request["approval_id"].as_str().unwrap().to_owned();
                for (body, expected) in answer(&request) {
                    let response = http
                        .post(format!("{url}/v1/approvals/{id}"))
                        .bearer_auth(TOK_A)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap();
                    assert_eq!(status, expected, "{body} -> {text}");
                    if status == 400 {
                        let error: Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(error["error"]["transient"], false);
                    }
                }
            }
        })
    };
    let events = read_events(response, |name, value| {
        if name == "permission_request" {
            tx.send(value.clone()).unwrap();
        }
    })
    .await;
    drop(tx);
    answering.await.unwrap();
    events
}

#[tokio::test]
async fn an_approval_cannot_move_a_write_out_of_the_project() {
    let s = Server::start(|c| c).await;
    let root = s.sandbox.cwd().to_owned();
    let outside = s.sandbox.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let inside = root.join("inside.txt").display().to_string();
    s.mock.on(Rule::prompt_contains("write a file").steps([
        Reply::tool_use("Write", json!({"file_path": inside, "content": "ok"})),
        Reply::text("written"),
    ]));
    let rewrites = [
        outside.join("direct.txt").display().to_string(),
        format!("{}/../outside/dotdot.txt", root.display()),
        "../outside/relative.txt".to_owned(),
        root.join("escape/through-link.txt").display().to_string(),
        root.join("escape/new-dir/deeper.txt").display().to_string(),
        "~/home.txt".to_owned(),
    ];
    let tries = rewrites.clone();
    let events = approve_with(&s, "askForEdits", "write a file", move |request| {
        assert_eq!(request["tool_name"], "Write");
        let mut answers: Vec<(Value, u16)> = tries
            .iter()
            .map(|path| {
                (
                    json!({"allow": true, "updated_input": {"file_path": path, "content": "pwned"}}),
                    400,
                )
            })
            .collect();
        // Not an object at all.
        answers.push((json!({"allow": true, "updated_input": "rm -rf /"}), 400));
        // The request is still pending after refused rewrites: a rewrite inside the
        // project is delivered.
        let moved = request["input"]["file_path"]
            .as_str()
            .unwrap()
            .replace("inside.txt", "moved.txt");
        answers.push((
            json!({"allow": true, "updated_input": {"file_path": moved, "content": "moved"}}),
            204,
        ));
        answers
    })
    .await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("moved.txt")).unwrap(),
        "moved"
    );
    for name in [
        "direct.txt",
        "dotdot.txt",
        "relative.txt",
        "through-link.txt",
    ] {
        assert!(!outside.join(name).exists(), "{name} was written");
    }
    assert!(!outside.join("new-dir").exists());
    assert!(!s.sandbox.home().join("home.txt").exists());
}

#[tokio::test]
async fn an_approval_cannot_rewrite_a_command() {
    let s = Server::start(|c| c).await;
    let outside = s.sandbox.root().join("pwned.txt");
    s.mock.on(Rule::prompt_contains("run a command").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": "echo hello", "description": "greet"}),
        ),
        Reply::text("ran"),
    ]));
    let target = outside.display().to_string();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let events = approve_with(&s, "strict", "run a command", move |request| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(request["tool_name"], "Bash");
        let original = request["input"].clone();
        vec![
            (
                json!({"allow": true, "updated_input": {"command": format!("echo pwned > {target}")}}),
                400,
            ),
            // The unchanged input is fine.
            (json!({"allow": true, "updated_input": original}), 204),
        ]
    })
    .await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!outside.exists());
    let results = s.mock.requests().pop().unwrap().tool_results();
    assert!(results.last().unwrap().content.contains("hello"));
}

#[tokio::test]
async fn the_operator_can_refuse_approvals_outside_the_project() {
    let s = Server::start(|c| c.deny_outside_project(true)).await;
    let secret = s.sandbox.root().join("secret.txt");
    std::fs::write(&secret, "the-secret-value").unwrap();
    s.mock.on(Rule::prompt_contains("read it").steps([
        Reply::tool_use("Read", json!({"file_path": secret.display().to_string()})),
        Reply::text("read"),
    ]));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let events = approve_with(&s, "readOnly", "read it", move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![(json!({"allow": true}), 204)]
    })
    .await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    for request in s.mock.requests() {
        assert!(!request.mentions("the-secret-value"));
    }
    let results = s.mock.requests().pop().unwrap().tool_results();
    assert!(
        results
            .last()
            .unwrap()
            .content
            .contains("outside the project"),
        "{:?}",
        results.last().unwrap().content
    );
    // The default follows the address: on for the network, off on loopback.
    assert!(ServerConfig::new("0.0.0.0:8080".parse().unwrap()).deny_outside_project);
    assert!(!ServerConfig::new("127.0.0.1:8080".parse().unwrap()).deny_outside_project);
}

/// A run in `acceptEdits` writes inside the project without asking, but not the files
/// that configure later runs (`.claude/settings.json` could add a hook or an allow
/// rule, `.mcp.json` a server the CLI starts): those go to a person, and without one
/// they are denied. (CLI 2.1.332 asks about these paths itself; the server's hook keeps
/// the rule whatever a CLI version does.)
#[tokio::test]
async fn a_run_cannot_configure_later_runs_without_a_person() {
    let s = Server::start(|c| {
        c.modes(
            [PermissionMode::AcceptEdits, PermissionMode::AskForEdits],
            PermissionMode::AskForEdits,
        )
    })
    .await;
    let cwd = s.sandbox.cwd().to_path_buf();
    let script = |tag: &str| {
        Rule::prompt_contains(format!("plant {tag}")).steps([
            Reply::tool_use(
                "Write",
                json!({"file_path": ".claude/settings.json", "content": "{\"permissions\":{\"allow\":[\"Bash\"]}}"}),
            ),
            Reply::tool_use(
                "Write",
                json!({"file_path": cwd.join(".mcp.json").display().to_string(), "content": "{}"}),
            ),
            Reply::tool_use(
                "Write",
                json!({"file_path": format!("plain-{tag}.txt"), "content": "fine"}),
            ),
            Reply::text(format!("planted {tag}")),
        ])
    };
    s.mock.on(script("alone"));
    let (status, body) = s
        .json(
            TOK_A,
            "/v1/query",
            json!({"prompt": "plant alone", "permission_mode": "acceptEdits"}),
        )
        .await;
    assert!(status == 200 || status == 403, "{status} {body}");
    assert!(
        cwd.join("plain-alone.txt").exists(),
        "an ordinary write was refused: {body}"
    );
    assert!(
        !cwd.join(".claude/settings.json").exists(),
        "settings planted: {body}"
    );
    assert!(
        !cwd.join(".mcp.json").exists(),
        "an MCP server planted: {body}"
    );

    s.mock.on(script("asked"));
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    let events = approve_with(&s, "acceptEdits", "plant asked", move |request| {
        seen.lock().unwrap().push(request["input"].to_string());
        vec![(json!({"allow": true}), 204)]
    })
    .await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[0].contains(".claude/settings.json") && asked[1].contains(".mcp.json"),
        "{asked:?}"
    );
    assert!(cwd.join(".claude/settings.json").exists() && cwd.join(".mcp.json").exists());
    assert!(cwd.join("plain-asked.txt").exists());
}

// 4. A client's mistakes are 400s.

#[tokio::test]
async fn client_mistakes_are_bad_requests_not_upstream_failures() {
    let s = Server::start(|c| c).await;
    s.mock.on(Rule::any().reply(Reply::text("should not run")));
    let id = uuid::Uuid::new_v4();
    let bodies = [
        json!({"prompt": "hi", "json_schema": {"type": 5}}),
        json!({"prompt": "hi", "json_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}),
        json!({"prompt": "hi", "json_schema": {"required": "a"}}),
        json!({"prompt": "hi", "json_schema": "not a schema"}),
        json!({"prompt": "hi", "model": "claude\u{0}x"}),
        json!({"prompt": "hi", "append_system_prompt": "be\u{0}nice"}),
        json!({"prompt": "h\u{0}i"}),
        json!({"prompt": "hi", "cwd": "a\u{0}b"}),
        json!({"prompt": "hi", "resume": format!("{{{id}}}")}),
        json!({"prompt": "hi", "resume": format!("urn:uuid:{id}")}),
        json!({"prompt": "hi", "resume": id.simple().to_string()}),
    ];
    for body in bodies {
        for path in ["/v1/query", "/v1/query/stream"] {
            let (status, answer) = s.json(TOK_A, path, body.clone()).await;
            assert_eq!(status, 400, "{path} {body}: {answer}");
            assert_eq!(answer["error"]["transient"], false, "{answer}");
            assert!(
                answer["error"]["message"].as_str().unwrap().len() > 10,
                "{answer}"
            );
        }
    }
    let (status, answer) = s
        .json(TOK_A, "/v1/sessions", json!({"prompt": "h\u{0}i"}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(s.mock.requests().is_empty(), "nothing reached the model");
    // A valid schema and an uppercase id are fine (the id is then unknown: 404).
    let (status, answer) = s
        .json(
            TOK_A,
            "/v1/query",
            json!({"prompt": "hi", "resume": id.to_string().to_uppercase()}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
}

// 5. One redaction rule; transient exactly when Retry-After is sent.

/// Everything that leaves the server must be free of the model's address.
fn assert_redacted(s: &Server, text: &str) {
    let port = s.mock.addr().port().to_string();
    for leak in ["127.0.0.1", "inference gateway", "stderr", port.as_str()] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
}

#[tokio::test]
async fn api_failures_are_described_without_internals() {
    let s = Server::start(|c| c).await;
    s.mock.on(Rule::any().reply(Reply::error(529)));
    let (status, retry_after, body) = s.send(TOK_A, "/v1/query", json!({"prompt": "hi"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["transient"], true, "{body}");
    assert!(retry_after.is_some(), "transient errors say when to retry");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request id")
    );
    assert_redacted(&s, &body.to_string());
    let messages = body["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "assistant" && m["content"].as_str().unwrap().contains("529")),
        "{body}"
    );

    let response = s
        .post(TOK_A, "/v1/query/stream", json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    let events = read_events(response, |_, _| {}).await;
    assert_eq!(events.last().unwrap().0, "error");
    for (_, value) in &events {
        assert_redacted(&s, &value.to_string());
    }

    let (status, body) = s.json(TOK_A, "/v1/sessions", json!({"prompt": "hi"})).await;
    assert_eq!(status, 502, "{body}");
    assert_redacted(&s, &body.to_string());
}

#[tokio::test]
async fn a_busy_pool_is_transient() {
    let s = Server::start(|c| {
        c.pool(PoolConfig {
            max_concurrent: 1,
            max_queued: 0,
            ..PoolConfig::default()
        })
    })
    .await;
    s.mock
        .on(Rule::prompt_contains("slow").reply(Reply::text("late").delay(Duration::from_secs(2))));
    s.mock.on(Rule::any().reply(Reply::text("ok")));
    let slow = s
        .post(TOK_A, "/v1/query", json!({"prompt": "slow one"}))
        .send();
    let busy = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.send(TOK_B, "/v1/query", json!({"prompt": "another"}))
            .await
    };
    let (slow, (status, retry_after, body)) = tokio::join!(slow, busy);
    assert_eq!(slow.unwrap().status().as_u16(), 200);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "pool_busy");
    assert_eq!(body["error"]["transient"], true);
    assert!(retry_after.is_some());
    // A 4xx is never transient and never says when to retry.
    let (status, retry_after, body) = s
        .send(TOK_A, "/v1/query", json!({"prompt": "hi", "cwd": "/etc"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["transient"], false);
    assert!(retry_after.is_none());
}

// 6. A run's own cost, and the conversation's total.

#[tokio::test]
async fn resumed_runs_report_their_own_cost() {
    let s = Server::start(|c| c).await;
    s.mock
        .on(Rule::any().reply(Reply::text("again").usage(10_000, 1_000)));
    let mut costs = Vec::new();
    let mut totals = Vec::new();
    let mut resume: Option<String> = None;
    for turn in 0..3 {
        let mut body = json!({"prompt": format!("turn {turn}")});
        if let Some(id) = &resume {
            body["resume"] = json!(id);
        }
        let result = if turn == 1 {
            // The middle turn streams: the `done` event carries the same figures.
            let response = s
                .post(TOK_A, "/v1/query/stream", body)
                .send()
                .await
                .unwrap();
            let events = read_events(response, |_, _| {}).await;
            assert_eq!(events.last().unwrap().0, "done");
            events.last().unwrap().1.clone()
        } else {
            let (status, body) = s.json(TOK_A, "/v1/query", body).await;
            assert_eq!(status, 200, "{body}");
            body["result"].clone()
        };
        resume = Some(result["session_id"].as_str().unwrap().to_owned());
        costs.push(result["cost_usd"].as_f64().unwrap());
        totals.push(result["session_cost_usd"].as_f64().unwrap());
    }
    assert!(costs[1] > 0.0);
    assert!((costs[1] - costs[2]).abs() < 1e-9, "{costs:?}");
    assert!(totals[0] < totals[1] && totals[1] < totals[2], "{totals:?}");
    assert!(
        (totals[2] - totals[1] - costs[2]).abs() < 1e-9,
        "{totals:?} {costs:?}"
    );

    // Session turns too.
    let (status, first) = s
        .json(TOK_A, "/v1/sessions", json!({"prompt": "start"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let id = first["session"].as_str().unwrap().to_owned();
    let mut session_costs = vec![first["result"]["cost_usd"].as_f64().unwrap()];
    let mut session_totals = vec![first["result"]["session_cost_usd"].as_f64().unwrap()];
    for _ in 0..2 {
        let (status, turn) = s
            .json(
                TOK_A,
                &format!("/v1/sessions/{id}/messages"),
                json!({"prompt": "more"}),
            )
            .await;
        assert_eq!(status, 200, "{turn}");
        session_costs.push(turn["result"]["cost_usd"].as_f64().unwrap());
        session_totals.push(turn["result"]["session_cost_usd"].as_f64().unwrap());
    }
    assert!(
        (session_costs[1] - session_costs[2]).abs() < 1e-9,
        "{session_costs:?}"
    );
    assert!(
        session_totals[0] < session_totals[1] && session_totals[1] < session_totals[2],
        "{session_totals:?}"
    );
    // The session's history tells the same.
    let (status, history) = s.get(TOK_A, &format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{history}");
    let turns = history["turns"].as_array().unwrap();
    for (turn, (cost, total)) in turns.iter().zip(session_costs.iter().zip(&session_totals)) {
        assert!(
            (turn["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9,
            "{history}"
        );
        assert!(
            (turn["session_cost_usd"].as_f64().unwrap() - total).abs() < 1e-9,
            "{history}"
        );
    }
}

// 7. Stats: a tenant sees its own figures; the operator sees the pool.

#[tokio::test]
async fn stats_are_per_tenant_and_the_pool_is_for_operators() {
    let s = Server::start(|c| c).await;
    s.mock.on(Rule::any().reply(Reply::text("hi")));
    for _ in 0..2 {
        let (status, _) = s.json(TOK_A, "/v1/query", json!({"prompt": "a run"})).await;
        assert_eq!(status, 200);
    }
    let (status, body) = s
        .json(TOK_A, "/v1/sessions", json!({"prompt": "a session"}))
        .await;
    assert_eq!(status, 201);
    let id = body["session"].as_str().unwrap();
    let (status, _) = s
        .json(
            TOK_A,
            &format!("/v1/sessions/{id}/messages"),
            json!({"prompt": "more"}),
        )
        .await;
    assert_eq!(status, 200);

    let a = s.stats(TOK_A).await;
    // Every run counts, session turns included (two queries, two session turns).
    assert_eq!(a["runs"]["completed"], 4, "{a}");
    assert_eq!(a["runs"]["active"], 0, "{a}");
    assert_eq!(a["sessions"]["open"], 1, "{a}");
    assert_eq!(a["sessions"]["turns"], 2, "{a}");
    assert_eq!(a["approvals"]["waiting"], 0, "{a}");
    assert!(
        a.get("pool").is_none(),
        "a tenant sees no global figures: {a}"
    );

    let b = s.stats(TOK_B).await;
    assert_eq!(b["runs"]["completed"], 0, "{b}");
    assert_eq!(b["sessions"]["open"], 0, "{b}");
    assert_eq!(b["sessions"]["turns"], 0, "{b}");
    assert!(b.get("pool").is_none(), "{b}");

    // The page shows a turn's own cost and the conversation's total.
    let page = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("summary.cost_usd") && page.contains("summary.session_cost_usd"));

    let operator = s.stats(OPERATOR).await;
    assert!(
        operator["pool"]["completed"].as_u64().unwrap() >= 2,
        "{operator}"
    );
    assert_eq!(operator["sessions"]["open_all"], 1, "{operator}");
}

// 8. `/v1/query` collects a bounded answer.

#[tokio::test]
async fn a_huge_answer_is_refused_by_the_json_endpoint() {
    let s = Server::start(|c| c.max_response_bytes(256 * 1024)).await;
    let huge = "All work and no play. ".repeat(150_000); // ~3.3 MB
    s.mock
        .on(Rule::prompt_contains("huge").reply(Reply::text(huge.clone())));
    let (status, retry_after, body) = s
        .send(TOK_A, "/v1/query", json!({"prompt": "a huge answer"}))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["kind"], "response_too_large");
    assert_eq!(body["error"]["transient"], false);
    assert!(retry_after.is_none());
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/query/stream"),
        "{body}"
    );
    assert!(body.to_string().len() < 256 * 1024);
    assert_eq!(s.stats(TOK_A).await["runs"]["active"], 0);
    // The stream delivers it.
    let response = s
        .post(
            TOK_A,
            "/v1/query/stream",
            json!({"prompt": "a huge answer"}),
        )
        .send()
        .await
        .unwrap();
    let events = read_events(response, |_, _| {}).await;
    assert_eq!(events.last().unwrap().0, "done");
    assert_eq!(
        events.last().unwrap().1["text"].as_str().unwrap().len(),
        huge.len()
    );
}
