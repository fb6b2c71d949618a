//! The server on a real socket, running the real CLI against the mock model.

use std::time::Duration;

use claude_code_sdk::{ClaudeCodeOptions, PermissionMode, PoolConfig};
use claude_code_server::{AppState, ServerConfig, router};
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
use futures::StreamExt;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

struct Server {
    url: String,
    mock: MockAnthropic,
    sandbox: Sandbox,
    http: reqwest::Client,
    state: AppState,
}

impl Server {
    async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Server {
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        std::fs::create_dir_all(sandbox.cwd().join("app")).unwrap();
        let options = ClaudeCodeOptions::builder()
            .cli_path(cli_path())
            .envs(sandbox.env())
            .build()
            .unwrap();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
            // Spares are tested on their own (tests/pool_bound.rs): none here.
            .prewarm(0)
            .api_token(TOKEN)
            .project_root(sandbox.cwd())
            .base_options(options)
            .modes(
                [PermissionMode::ReadOnly, PermissionMode::AskForEdits],
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
            state,
        }
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
    }

    /// GET `path` with the token: its JSON body.
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.post(path, body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
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

#[tokio::test]
async fn a_json_query_answers_with_messages_and_a_result() {
    let s = Server::start(|c| c).await;
    s.mock
        .on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let (status, body) = s
        .json("/v1/query", json!({"prompt": "The capital of France?"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "Paris.");
    assert_eq!(body["result"]["is_error"], false);
    assert!(
        body["result"]["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let assistant: Vec<&Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(assistant[0]["content"], "Paris.");
    assert!(assistant[0]["timestamp"].is_string());
}

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let s = Server::start(|c| c).await;
    let none = s
        .http
        .post(format!("{}/v1/query", s.url))
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = s
        .http
        .post(format!("{}/v1/query", s.url))
        .bearer_auth("nope")
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "unauthorized");
    assert!(s.mock.requests().is_empty());
    // The page and the health check need no token.
    let page = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let health = s
        .http
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn a_stream_delivers_messages_then_done() {
    let s = Server::start(|c| c).await;
    s.mock
        .on(Rule::any().reply(Reply::text("streamed words arrive in order")));
    let response = s
        .post(
            "/v1/query/stream",
            json!({"prompt": "stream please", "include_partial_messages": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = read_events(response, |_, _| {}).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"done"));
    let deltas: String = events
        .iter()
        .filter(|(n, v)| n == "message" && v["type"] == "stream_event")
        .map(|(_, v)| v["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(deltas, "streamed words arrive in order");
    assert_eq!(
        events.last().unwrap().1["text"],
        "streamed words arrive in order"
    );
}

#[tokio::test]
async fn a_browser_approves_a_write_and_denies_the_next() {
    let s = Server::start(|c| c).await;
    let path = |name: &str| s.sandbox.cwd().join(name).display().to_string();
    s.mock.on(Rule::prompt_contains("two files").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": path("approved.txt"), "content": "yes"}),
        ),
        Reply::tool_use(
            "Write",
            json!({"file_path": path("denied.txt"), "content": "no"}),
        ),
        Reply::text("done writing"),
    ]));
    let response = s
        .post(
            "/v1/query/stream",
            json!({"prompt": "write two files", "permission_mode": "askForEdits", "approvals": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (answers_tx, mut answers_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let answering = {
        let (http, url) = (s.http.clone(), s.url.clone());
        tokio::spawn(async move {
            while let Some((id, allow)) = answers_rx.recv().await {
                let answer = http
                    .post(format!("{url}/v1/approvals/{id}"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"allow": allow, "message": "not this one"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status().as_u16(), 204);
            }
        })
    };
    let mut asked = Vec::new();
    let events = read_events(response, |name, value| {
        if name == "permission_request" {
            let first = asked.is_empty();
            asked.push(value["tool_name"].as_str().unwrap().to_owned());
            let id = value["approval_id"].as_str().unwrap().to_owned();
            answers_tx.send((id, first)).unwrap();
        }
    })
    .await;
    drop(answers_tx);
    answering.await.unwrap();

    assert_eq!(asked, ["Write", "Write"]);
    assert_eq!(
        std::fs::read_to_string(s.sandbox.cwd().join("approved.txt")).unwrap(),
        "yes"
    );
    assert!(!s.sandbox.cwd().join("denied.txt").exists());
    let done = &events.last().unwrap().1;
    assert_eq!(events.last().unwrap().0, "done");
    assert_eq!(done["permission_denials"][0]["tool_name"], "Write");
    let seen = s.mock.requests().pop().unwrap().tool_results();
    assert!(seen.last().unwrap().content.contains("not this one"));
}

#[tokio::test]
async fn sessions_continue_exactly_and_end() {
    let s = Server::start(|c| c).await;
    s.mock
        .on(Rule::prompt_contains("Which city").reply(Reply::text("You said Lisbon.")));
    let (status, first) = s
        .json("/v1/sessions", json!({"prompt": "I live in Lisbon."}))
        .await;
    assert_eq!(status, 201, "{first}");
    let id = first["session"].as_str().unwrap().to_owned();
    let (status, second) = s
        .json(
            &format!("/v1/sessions/{id}/messages"),
            json!({"prompt": "Which city do I live in?"}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["result"]["text"], "You said Lisbon.");
    assert!(
        s.mock
            .requests()
            .pop()
            .unwrap()
            .mentions("I live in Lisbon.")
    );

    let history: Value = s.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(history["turns"].as_array().unwrap().len(), 2);
    let ended = s
        .http
        .delete(format!("{}/v1/sessions/{id}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status().as_u16(), 204);
    let (status, gone) = s
        .json(
            &format!("/v1/sessions/{id}/messages"),
            json!({"prompt": "hello?"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(gone["error"]["kind"], "not_found");
}

#[tokio::test]
async fn limits_are_enforced() {
    let s = Server::start(|c| {
        c.pool(PoolConfig {
            max_concurrent: 1,
            max_queued: 0,
            ..PoolConfig::default()
        })
    })
    .await;
    // A mode the server does not allow.
    let (status, body) = s
        .json(
            "/v1/query",
            json!({"prompt": "hi", "permission_mode": "bypassPermissions"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // A working directory outside the project root.
    for cwd in ["../", "/etc", "missing"] {
        let (status, body) = s
            .json("/v1/query", json!({"prompt": "hi", "cwd": cwd}))
            .await;
        assert_eq!(status, 400, "{cwd}: {body}");
        assert_eq!(body["error"]["kind"], "invalid_options");
    }
    let (status, _) = s
        .json("/v1/query", json!({"prompt": "hi", "cwd": "app"}))
        .await;
    assert_eq!(status, 200);
    // Unknown fields are refused rather than ignored, in the API's error shape.
    let (status, body) = s
        .json("/v1/query", json!({"prompt": "hi", "temperature": 2}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["kind"], "invalid_request");
    // A resume value must be a session id: nothing else reaches the CLI.
    let (status, body) = s
        .json(
            "/v1/query",
            json!({"prompt": "hi", "resume": "--debug-file=/tmp/x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Unknown routes answer in the same shape.
    let (status, body) = s.json("/v1/nothing-here", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["kind"], "not_found");
    // No slot free and no queue: 503 with Retry-After.
    s.mock
        .on(Rule::prompt_contains("slow").reply(Reply::text("late").delay(Duration::from_secs(2))));
    let slow = s.post("/v1/query", json!({"prompt": "slow one"})).send();
    let busy = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.post("/v1/query", json!({"prompt": "another"}))
            .send()
            .await
            .unwrap()
    };
    let (slow, busy) = tokio::join!(slow, busy);
    assert_eq!(slow.unwrap().status().as_u16(), 200);
    assert_eq!(busy.status().as_u16(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    let body: Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "pool_busy");
}

#[tokio::test]
async fn the_api_describes_itself_as_openapi() {
    let s = Server::start(|c| c).await;
    let doc: Value = s
        .http
        .get(format!("{}/openapi.json", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/query",
        "/v1/query/stream",
        "/v1/approvals/{id}",
        "/v1/sessions",
        "/v1/sessions/{id}/messages",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is missing");
    }
    let request = &doc["components"]["schemas"]["QueryRequest"];
    assert_eq!(request["required"], json!(["prompt"]));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

const OTHER: &str = "other-token";

#[tokio::test]
async fn sessions_and_approvals_belong_to_their_token() {
    let s = Server::start(|c| c.api_token(OTHER)).await;
    let (status, first) = s.json("/v1/sessions", json!({"prompt": "mine"})).await;
    assert_eq!(status, 201, "{first}");
    let id = first["session"].as_str().unwrap();
    let theirs = s
        .http
        .post(format!("{}/v1/sessions/{id}/messages", s.url))
        .bearer_auth(OTHER)
        .json(&json!({"prompt": "let me in"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        theirs.status().as_u16(),
        404,
        "another token cannot use the session"
    );

    let target = s.sandbox.cwd().join("approved.txt").display().to_string();
    s.mock.on(Rule::prompt_contains("write it").steps([
        Reply::tool_use("Write", json!({"file_path": target, "content": "yes"})),
        Reply::text("done"),
    ]));
    let response = s
        .post(
            "/v1/query/stream",
            json!({"prompt": "write it", "permission_mode": "askForEdits", "approvals": true}),
        )
        .send()
        .await
        .unwrap();
    let (ids_tx, mut ids_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let answering = {
        let (http, url) = (s.http.clone(), s.url.clone());
        tokio::spawn(async move {
            let id = ids_rx.recv().await.unwrap();
            let answer = |token: &'static str| {
                http.post(format!("{url}/v1/approvals/{id}"))
                    .bearer_auth(token)
                    .json(&json!({"allow": true}))
                    .send()
            };
            assert_eq!(answer(OTHER).await.unwrap().status().as_u16(), 404);
            assert_eq!(answer(TOKEN).await.unwrap().status().as_u16(), 204);
        })
    };
    read_events(response, |name, value| {
        if name == "permission_request" {
            ids_tx
                .send(value["approval_id"].as_str().unwrap().to_owned())
                .unwrap();
        }
    })
    .await;
    answering.await.unwrap();
    assert!(s.sandbox.cwd().join("approved.txt").exists());
}

#[tokio::test]
async fn session_turns_count_against_the_pool() {
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
    let session = s
        .post("/v1/sessions", json!({"prompt": "a slow start"}))
        .send();
    let query = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.post("/v1/query", json!({"prompt": "meanwhile"}))
            .send()
            .await
            .unwrap()
    };
    let (session, query) = tokio::join!(session, query);
    assert_eq!(session.unwrap().status().as_u16(), 201);
    assert_eq!(
        query.status().as_u16(),
        503,
        "the session turn held the only slot"
    );
}

#[tokio::test]
async fn shutdown_ends_running_streams() {
    let s = Server::start(|c| c.operator_token(TOKEN)).await;
    s.mock
        .on(Rule::any().reply(Reply::text("never mind").delay(Duration::from_secs(30))));
    let response = s
        .post("/v1/query/stream", json!({"prompt": "wait"}))
        .send()
        .await
        .unwrap();
    let state = s.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        state.shut_down();
    });
    let events = read_events(response, |_, _| {}).await;
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(last["error"]["kind"], "shutting_down");
    // The run ends (interrupted) and its CLI with it, soon after.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats: Value = s.get("/v1/stats").await;
        if stats["runs"]["active"] == 0 && stats["pool"]["active"] == 0 {
            assert_eq!(stats["runs"]["failed"], 1, "interrupted: {stats}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shutdown ended the run before its executor could: the executor still
    // completes the run's audit row (its end, cost and tools).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let audit: Value = s.get("/v1/audit").await;
        let row = &audit["entries"][0];
        assert_eq!(row["outcome"], "interrupted", "{audit}");
        if row["ended_at"].is_string() {
            assert_eq!(row["tools"], json!([]), "{row}");
            assert!(row["cost_usd"].is_number(), "{row}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_token_only_localhost_is_served() {
    let s = Server::start(|mut c| {
        c.api_tokens.clear();
        c
    })
    .await;
    let local = s
        .http
        .post(format!("{}/v1/query", s.url))
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status().as_u16(), 200);
    let rebound = s
        .http
        .post(format!("{}/v1/query", s.url))
        .header("host", "attacker.example:8080")
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let body: Value = rebound.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "forbidden_host");
}

/// A turn refused because another turn of its session is under way is no run: the
/// audit log keeps no row of it. Each turn that ran has its row completed (outcome,
/// cost, end) by the transaction that wrote its final event, so the client that got
/// the answer finds it there.
#[tokio::test]
async fn a_refused_turn_is_not_audited_and_each_answered_turn_is_complete() {
    let s = Server::start(|c| c).await;
    s.mock
        .on(Rule::prompt_contains("slow turn")
            .reply(Reply::text("late").delay(Duration::from_secs(2))));
    let (status, first) = s.json("/v1/sessions", json!({"prompt": "hello"})).await;
    assert_eq!(status, 201, "{first}");
    let id = first["session"].as_str().unwrap().to_owned();
    let turn = format!("/v1/sessions/{id}/messages");
    let slow = s.post(&turn, json!({"prompt": "a slow turn"})).send();
    let refused = async {
        // Until the slow turn has reached the model: its run is under way.
        for _ in 0..200 {
            if s.mock.requests().iter().any(|r| r.mentions("a slow turn")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        s.json(&turn, json!({"prompt": "meanwhile"})).await
    };
    let (slow, (status, body)) = tokio::join!(slow, refused);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["kind"], "conversation_busy");
    let slow: Value = slow.unwrap().json().await.unwrap();
    assert_eq!(slow["result"]["text"], "late", "{slow}");

    let audit: Value = s.get("/v1/audit").await;
    let rows: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["session"] == id.as_str())
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "the two turns that ran, not the refused one: {audit}"
    );
    for row in rows {
        assert_eq!(row["outcome"], "succeeded", "{row}");
        assert!(row["ended_at"].is_string(), "{row}");
        assert!(row["cost_usd"].is_number(), "{row}");
        assert_eq!(row["tools"], json!([]), "{row}");
    }
}
