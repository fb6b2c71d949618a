//! The mock's HTTP behaviour, driven by a minimal HTTP/1.0 client (no CLI).

use std::time::{Duration, Instant};

use claude_code_testkit::{MockAnthropic, Reply, RequestKind, Rule};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status, lower-case headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// `(event name, data)` pairs of an SSE body.
    fn events(&self) -> Vec<(String, Value)> {
        self.body
            .split("\n\n")
            .filter(|frame| !frame.trim().is_empty())
            .map(|frame| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(value).expect("JSON data");
                    }
                }
                (name, data)
            })
            .collect()
    }

    /// The concatenated `text_delta`s of an SSE body.
    fn streamed_text(&self) -> String {
        self.events()
            .iter()
            .filter(|(_, data)| data["delta"]["type"] == "text_delta")
            .map(|(_, data)| data["delta"]["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// One HTTP/1.0 request: the server closes the connection after the body.
async fn send(mock: &MockAnthropic, method: &str, path: &str, body: Option<&Value>) -> Response {
    let mut stream = TcpStream::connect(mock.addr()).await.expect("connect");
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-api-key: test\r\n\r\n",
        mock.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("the mock answered in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_ascii_lowercase(), value.to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn turn(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    })
}

#[tokio::test]
async fn default_reply_streams_the_anthropic_events() {
    let mock = MockAnthropic::start().await;
    let response = send(
        &mock,
        "POST",
        "/v1/messages?beta=true",
        Some(&turn("hi there", true)),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.header("request-id"), Some("req_mock_1"));
    let events = response.events();
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(events[0].1["message"]["model"], "claude-test-1");
    assert_eq!(response.streamed_text(), "Mock reply to: hi there");
    let delta = &events
        .iter()
        .find(|(name, _)| name == "message_delta")
        .unwrap()
        .1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].kind(), RequestKind::Turn);
    assert_eq!(requests[0].header("X-Api-Key"), Some("test"));
}

#[tokio::test]
async fn non_streaming_requests_get_a_json_message() {
    let mock = MockAnthropic::start().await;
    mock.on(
        Rule::any().reply(Reply::text("plain").then_tool_use("Read", json!({"file_path": "/x"})))
    );
    let response = send(&mock, "POST", "/v1/messages", Some(&turn("go", false))).await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude-test-1");
    assert_eq!(body["content"][0], json!({"type": "text", "text": "plain"}));
    assert_eq!(body["content"][1]["id"], "toolu_mock_1");
    assert_eq!(body["stop_reason"], "tool_use");
}

#[tokio::test]
async fn unknown_endpoints_are_404_and_recorded() {
    let mock = MockAnthropic::start().await;
    let response = send(&mock, "GET", "/v1/models", None).await;
    assert_eq!(response.status, 404);
    let body = response.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    let bad = send(&mock, "POST", "/v1/messages", None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let count = send(
        &mock,
        "POST",
        "/v1/messages/count_tokens",
        Some(&turn("x", false)),
    )
    .await;
    assert_eq!(count.json(), json!({"input_tokens": 100}));

    assert!(mock.requests().is_empty());
    let all = mock.all_requests();
    let kinds: Vec<RequestKind> = all.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Unknown,
            RequestKind::Unknown,
            RequestKind::CountTokens
        ]
    );
    assert_eq!((all[0].method(), all[0].path()), ("GET", "/v1/models"));
}

#[tokio::test]
async fn housekeeping_gets_conforming_json_and_is_not_a_turn() {
    let mock = MockAnthropic::start().await;
    // Rules never see housekeeping requests.
    mock.on(Rule::any().reply(Reply::error(500)));
    let schema = json!({"type": "object", "properties": {"title": {"type": "string"}},
        "required": ["title"], "additionalProperties": false});
    let mut streamed = turn("name this session", true);
    streamed["output_config"] = json!({"format": {"type": "json_schema", "schema": schema}});
    let response = send(&mock, "POST", "/v1/messages?beta=true", Some(&streamed)).await;
    assert_eq!(response.status, 200);
    let title: Value = serde_json::from_str(&response.streamed_text()).unwrap();
    assert_eq!(title, json!({"title": "mock"}));

    let mut legacy = turn("classify", false);
    legacy["output_format"] = json!({"type": "json_schema", "schema": {"type": "object",
        "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string"}},
        "required": ["ok", "reason"]}});
    let response = send(&mock, "POST", "/v1/messages", Some(&legacy)).await;
    let text = response.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"ok": true, "reason": "mock"})
    );

    assert!(mock.requests().is_empty());
    assert!(
        mock.all_requests()
            .iter()
            .all(|r| r.kind() == RequestKind::Housekeeping)
    );
    assert_eq!(mock.all_requests()[0].output_json_schema(), Some(&schema));
}

#[tokio::test]
async fn errors_have_anthropic_bodies_and_retry_after() {
    let mock = MockAnthropic::start().await;
    for reply in [
        Reply::error(429).retry_after(3),
        Reply::error(401),
        Reply::error(500),
        Reply::error(529),
    ] {
        mock.on(Rule::any().times(1).reply(reply));
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let response = send(&mock, "POST", "/v1/messages", Some(&turn("x", true))).await;
        let body = response.json();
        assert_eq!(body["type"], "error");
        seen.push((
            response.status,
            body["error"]["type"].as_str().unwrap().to_owned(),
            response.header("retry-after").map(str::to_owned),
        ));
    }
    assert_eq!(
        seen,
        [
            (429, "rate_limit_error".to_owned(), Some("3".to_owned())),
            (401, "authentication_error".to_owned(), None),
            (500, "api_error".to_owned(), None),
            (529, "overloaded_error".to_owned(), None),
        ]
    );
    // Every rule is used up: the default reply is back.
    let response = send(&mock, "POST", "/v1/messages", Some(&turn("x", true))).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn later_steps_stay_with_the_rule_that_started_the_turn() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("go").times(1).steps([
        Reply::tool_use("Bash", json!({"command": "true"})),
        Reply::text("finished by the first rule"),
    ]));
    let first = send(&mock, "POST", "/v1/messages", Some(&turn("go", false)))
        .await
        .json();
    let tool_use = first["content"][0].clone();
    assert_eq!(tool_use["id"], "toolu_mock_1");

    // The tool round trip: the rule's `times` is used up, but the turn is its own.
    let mut step1 = turn("go", false);
    step1["messages"] = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": ""}]},
    ]);
    let second = send(&mock, "POST", "/v1/messages", Some(&step1))
        .await
        .json();
    assert_eq!(second["content"][0]["text"], "finished by the first rule");

    // A new turn with the same prompt no longer matches.
    let third = send(&mock, "POST", "/v1/messages", Some(&turn("go", false)))
        .await
        .json();
    assert_eq!(third["content"][0]["text"], "Mock reply to: go");

    let steps: Vec<(usize, Option<usize>)> = mock
        .requests()
        .iter()
        .map(|r| (r.step(), r.matched_rule()))
        .collect();
    assert_eq!(steps, [(0, Some(0)), (1, Some(0)), (0, None)]);
}

#[tokio::test]
async fn large_texts_stream_intact() {
    let mock = MockAnthropic::start().await;
    let text = format!("{}é{}", "x".repeat(3 * 1024 * 1024), "y".repeat(1000));
    mock.on(Rule::any().reply(Reply::text(text.clone())));
    let response = send(&mock, "POST", "/v1/messages", Some(&turn("big", true))).await;
    let deltas = response
        .events()
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .count();
    assert!(deltas > 8, "{deltas} deltas");
    assert_eq!(response.streamed_text(), text);
}

#[tokio::test]
async fn delays_and_broken_streams() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("slow").reply(
        Reply::text("a b c d")
            .delay(Duration::from_millis(150))
            .chunk_delay(Duration::from_millis(50)),
    ));
    mock.on(Rule::prompt_contains("broken")
        .reply(Reply::text("never finished").mid_stream_error("overloaded_error")));

    let started = Instant::now();
    let response = send(&mock, "POST", "/v1/messages", Some(&turn("slow", true))).await;
    assert!(started.elapsed() >= Duration::from_millis(150 + 4 * 50));
    assert_eq!(response.streamed_text(), "a b c d");

    let response = send(&mock, "POST", "/v1/messages", Some(&turn("broken", true))).await;
    let events = response.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "overloaded_error");
    assert!(!events.iter().any(|(name, _)| name == "message_stop"));
    // The CLI's non-streaming fallback gets the whole message.
    let response = send(&mock, "POST", "/v1/messages", Some(&turn("broken", false))).await;
    assert_eq!(response.json()["content"][0]["text"], "never finished");
}

#[tokio::test]
async fn dropping_the_mock_stops_the_server() {
    let mock = MockAnthropic::start().await;
    let addr = mock.addr();
    assert!(mock.url().starts_with("http://127.0.0.1:"));
    drop(mock);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn works_without_an_async_runtime() {
    let mock = MockAnthropic::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(send(
        &mock,
        "POST",
        "/v1/messages",
        Some(&turn("sync", true)),
    ));
    assert_eq!(response.streamed_text(), "Mock reply to: sync");
}
