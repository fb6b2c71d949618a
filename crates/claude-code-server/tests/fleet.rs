//! The fleet: three `claude-code-server` processes on loopback ports and one real
//! PostgreSQL database (a database of its own per test, dropped after it), each
//! replica with its own `HOME` and `CLAUDE_CONFIG_DIR` (a conversation moves between
//! them only through the database's session store) and the same project root; the
//! real CLI against one mock model. The same functional scenarios also run on one
//! server alone on SQLite.
//!
//! Which replica runs a run is up to the replicas (any with a free slot claims it),
//! so the scenarios look it up (`GET /v1/runs/{id}`) and act through the others.
//! Waits poll with generous hang guards; nothing asserts how long anything took.

mod common;

use std::time::{Duration, Instant};

use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, wait_until_gone};
use common::eventually;
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Tenant A's token.
const TOK_A: &str = "fleet-tenant-a";
/// Tenant B's token.
const TOK_B: &str = "fleet-tenant-b";
/// The hang guard of every wait.
const HANG: Duration = Duration::from_secs(60);
/// The lease the replicas hold runs with (seconds): short, so takeovers are quick.
const LEASE: &str = "2";

/// Where the replicas keep their state.
enum Store {
    Postgres(Box<TestDatabase>),
    Sqlite(tempfile::TempDir),
}

/// One `claude-code-server` process.
struct Replica {
    id: String,
    child: Option<tokio::process::Child>,
    pid: u32,
    url: String,
    log: claude_code_testkit::ServerLog,
    /// Stopped with SIGSTOP: not asked anything until it continues.
    paused: bool,
}

/// N replicas on one store, one mock model, one project root.
struct Cluster {
    // Dropped first: the servers go before their database.
    replicas: Vec<Replica>,
    store: Store,
    mock: MockAnthropic,
    sandbox: Sandbox,
    extra: Vec<String>,
    http: reqwest::Client,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<i64>,
    event: String,
    data: Value,
}

impl Cluster {
    /// `n` replicas on a new PostgreSQL database; `None` (skipped) without PostgreSQL.
    async fn postgres(n: usize, extra: &[&str]) -> Option<Cluster> {
        let db = TestDatabase::create().await?;
        Some(Cluster::start(Store::Postgres(Box::new(db)), n, extra).await)
    }

    /// One server alone on SQLite under a data directory of its own.
    async fn sqlite(extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("fleet-sqlite-")
            .tempdir()
            .unwrap();
        Cluster::start(Store::Sqlite(dir), 1, extra).await
    }

    async fn start(store: Store, n: usize, extra: &[&str]) -> Cluster {
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        let mut cluster = Cluster {
            replicas: Vec::new(),
            store,
            mock,
            sandbox,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        let ids: Vec<String> = (0..n)
            .map(|i| format!("replica-{}", char::from(b'a' + i as u8)))
            .collect();
        let started =
            futures::future::join_all(ids.iter().map(|id| cluster.spawn(id.clone()))).await;
        cluster.replicas = started;
        cluster
    }

    async fn spawn(&self, id: String) -> Replica {
        // A home of its own (`server_command`): the CLI's transcripts of one replica are
        // not on disk for another; a conversation moves only through the database.
        let mut command = common::server_command(&self.sandbox, &id);
        let home = self.sandbox.root().join(format!("home-{id}"));
        command
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .args(["--token", TOK_A, "--token", TOK_B]);
        if !self.extra.iter().any(|a| a == "--lease") {
            command.args(["--lease", LEASE]);
        }
        command.args(["--request-timeout", "120", "--approval-timeout", "60"]);
        match &self.store {
            Store::Postgres(db) => command.args(["--database-url", db.url()]),
            Store::Sqlite(dir) => command.arg("--data-dir").arg(dir.path()),
        };
        command.args(&self.extra);
        let server = common::Server::spawn(command).await;
        Replica {
            id,
            child: server.child,
            pid: server.pid,
            url: server.url,
            log: server.log,
            paused: false,
        }
    }

    fn n(&self) -> usize {
        self.replicas.len()
    }

    /// Replica `k` (modulo the number of replicas: one server alone is every one).
    fn r(&self, k: usize) -> &Replica {
        &self.replicas[k % self.n()]
    }

    fn index_of(&self, id: &str) -> usize {
        self.replicas
            .iter()
            .position(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id}"))
    }

    /// The replicas that answer (not killed, not paused).
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n()).filter(|i| self.replicas[*i].child.is_some() && !self.replicas[*i].paused)
    }

    fn req(
        &self,
        k: usize,
        method: reqwest::Method,
        token: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.r(k).url))
            .bearer_auth(token)
    }

    /// Status, `Retry-After` and body of a JSON request.
    async fn call(
        &self,
        k: usize,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Option<String>, Value) {
        let mut request = self.req(k, method, token, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, k: usize, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self
            .call(k, reqwest::Method::POST, token, path, Some(body))
            .await;
        (status, body)
    }

    async fn get(&self, k: usize, token: &str, path: &str) -> (u16, Value) {
        let (status, _, body) = self.call(k, reqwest::Method::GET, token, path, None).await;
        (status, body)
    }

    /// Opens `POST /v1/query/stream`; the response and its run id.
    async fn stream(&self, k: usize, token: &str, body: Value) -> (reqwest::Response, String) {
        let response = self
            .req(k, reqwest::Method::POST, token, "/v1/query/stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "stream through {k}");
        let run = response.headers()["x-run-id"].to_str().unwrap().to_owned();
        (response, run)
    }

    /// Opens `GET /v1/runs/{run}/events`, after `last` when given.
    async fn events(
        &self,
        k: usize,
        token: &str,
        run: &str,
        last: Option<i64>,
    ) -> reqwest::Response {
        let mut request = self.req(
            k,
            reqwest::Method::GET,
            token,
            &format!("/v1/runs/{run}/events"),
        );
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "events through {k}");
        response
    }

    /// The whole log of a run that is over, read through replica `k`.
    async fn whole_log(&self, k: usize, token: &str, run: &str) -> Vec<Sse> {
        let mut reader = SseReader::new(self.events(k, token, run, None).await);
        reader
            .rest()
            .await
            .into_iter()
            .filter(|e| e.id.is_some())
            .collect()
    }

    /// `GET /v1/runs/{run}` through the first replica that answers.
    async fn run(&self, token: &str, run: &str) -> Value {
        let k = self.live().next().expect("no replica answers");
        let (status, body) = self.get(k, token, &format!("/v1/runs/{run}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the run until `done` holds for it.
    async fn wait_run(
        &self,
        token: &str,
        run: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(what, || async {
            let row = self.run(token, run).await;
            done(&row).then_some(row)
        })
        .await
    }

    /// The index of the replica that holds (or held) the run.
    async fn runner(&self, token: &str, run: &str) -> usize {
        let row = self
            .wait_run(token, run, "the run to be claimed", |r| {
                r["replica"].is_string()
            })
            .await;
        self.index_of(row["replica"].as_str().unwrap())
    }

    /// The CLI processes replica `k` started (they carry its owner marker).
    fn cli_pids(&self, k: usize) -> Vec<u32> {
        common::cli_pids_of(self.r(k).pid)
    }

    fn signal(&mut self, k: usize, signal: Signal) {
        let replica = &mut self.replicas[k];
        kill(Pid::from_raw(replica.pid as i32), signal).unwrap();
        match signal {
            Signal::SIGSTOP => replica.paused = true,
            Signal::SIGCONT => replica.paused = false,
            _ => {}
        }
    }

    /// Kills replica `k` with SIGKILL and reaps it.
    async fn kill9(&mut self, k: usize) {
        self.signal(k, Signal::SIGKILL);
        let mut child = self.replicas[k].child.take().unwrap();
        tokio::time::timeout(HANG, child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Stops replica `k` gracefully (SIGTERM) and waits for it to exit.
    async fn stop(&mut self, k: usize) {
        self.signal(k, Signal::SIGTERM);
        let mut child = self.replicas[k].child.take().unwrap();
        tokio::time::timeout(HANG, child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Starts replica `k` again with its id (after [`Cluster::kill9`] or
    /// [`Cluster::stop`]).
    async fn restart(&mut self, k: usize) {
        assert!(self.replicas[k].child.is_none());
        let id = self.replicas[k].id.clone();
        self.replicas[k] = self.spawn(id).await;
    }

    fn log(&self, k: usize) -> String {
        self.r(k).log.text()
    }

    /// Waits until the mock has a turn request for which `matches` holds.
    async fn wait_request(
        &self,
        what: &str,
        matches: impl Fn(&claude_code_testkit::RecordedRequest) -> bool,
    ) {
        eventually(what, || async {
            self.mock.requests().iter().any(&matches).then_some(())
        })
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A paused replica must not outlive the test (SIGKILL reaches it anyway; be
        // explicit for the CLIs it started).
        for replica in &self.replicas {
            if replica.child.is_some() {
                let _ = kill(Pid::from_raw(replica.pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Reads server-sent events off a response.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: Vec::new(),
        }
    }

    /// The next event, `None` at the end of the stream.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                let mut event = Sse {
                    id: None,
                    event: "message".to_owned(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data).unwrap();
                return Some(event);
            }
            let chunk = tokio::time::timeout(HANG, self.body.next())
                .await
                .expect("hang guard: no event")?;
            self.buffer.extend_from_slice(&chunk.ok()?);
        }
    }

    /// Every event to the end of the stream.
    async fn rest(&mut self) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn is_final(event: &Sse) -> bool {
    matches!(event.event.as_str(), "done" | "error")
}

/// The mock's default: an echo of the prompt.
fn echo() -> Rule {
    Rule::any()
        .reply_with(|req| Reply::text(format!("Noted: {}", req.prompt().unwrap_or_default())))
}

// --- the scenarios, on any number of replicas ------------------------------------------

/// A session started through replica 0 continues through 1 and 2; the model sees
/// every earlier turn.
async fn session_moves(c: &Cluster) {
    c.mock.on(echo());
    let (status, first) = c
        .post(
            0,
            TOK_A,
            "/v1/sessions",
            json!({"prompt": "Remember the word ALPHA-1."}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    for (k, word) in [(1, "BETA-2"), (2, "GAMMA-3")] {
        let (status, turn) = c
            .post(
                k,
                TOK_A,
                &format!("/v1/sessions/{session}/messages"),
                json!({"prompt": format!("Remember the word {word}.")}),
            )
            .await;
        assert_eq!(status, 200, "{turn}");
        assert!(
            turn["result"]["text"].as_str().unwrap().contains(word),
            "{turn}"
        );
    }
    let last = c.mock.requests().pop().unwrap();
    assert_eq!(last.prompt().as_deref(), Some("Remember the word GAMMA-3."));
    for earlier in [
        "Remember the word ALPHA-1.",
        "Noted: Remember the word ALPHA-1.",
        "Remember the word BETA-2.",
        "Noted: Remember the word BETA-2.",
    ] {
        assert!(last.mentions(earlier), "the model did not see {earlier:?}");
    }
    let (status, history) = c.get(2, TOK_A, &format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["turns"].as_array().unwrap().len(), 3, "{history}");
}

/// A stream read half through replica 0 and, after a disconnect, the rest through
/// replica 1 with `Last-Event-ID`: the same events as one whole read, none lost or
/// doubled. Returns the run and its whole log.
async fn stream_resumes(c: &Cluster) -> (String, Vec<Sse>) {
    let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
    c.mock.on(Rule::prompt_contains("LONG-STREAM")
        .reply(Reply::text(words.join(" ")).chunk_delay(Duration::from_millis(40))));
    let (response, run) = c
        .stream(
            0,
            TOK_A,
            json!({"prompt": "LONG-STREAM please", "include_partial_messages": true}),
        )
        .await;
    let mut reader = SseReader::new(response);
    let opening = reader.next().await.unwrap();
    assert_eq!(opening.event, "run");
    assert_eq!(opening.data["run_id"], run.as_str());
    let mut first = Vec::new();
    while first.len() < 8 {
        let event = reader.next().await.expect("the stream ended early");
        assert!(event.id.is_some(), "{event:?}");
        let end = is_final(&event);
        first.push(event);
        if end {
            break;
        }
    }
    drop(reader); // the disconnect
    let last = first.last().unwrap().id.unwrap();
    let mut second = SseReader::new(c.events(1, TOK_A, &run, Some(last)).await)
        .rest()
        .await;
    // A reconnection with Last-Event-ID starts right after it: no `run` event.
    assert!(second.iter().all(|e| e.id.is_some()), "{second:?}");
    assert!(second.len() > 1, "too short a run to split: {second:?}");
    assert!(second.last().is_some_and(is_final), "{second:?}");
    let whole = c.whole_log(2, TOK_A, &run).await;
    let mut joined = first;
    joined.append(&mut second);
    let ids: Vec<i64> = joined.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "ids");
    assert_eq!(joined, whole, "two halves differ from the whole");
    assert_eq!(whole.last().unwrap().event, "done", "{:?}", whole.last());
    // The partial deltas add up to the answer once, and the final message once.
    let final_texts = whole
        .iter()
        .filter(|e| e.event == "message" && e.data["content"] == words.join(" ").as_str())
        .count();
    assert!(final_texts >= 1, "the answer is missing from the log");
    // A client that saw the final event and reconnects (as an EventSource does when
    // the stream closes) gets an empty stream that ends: nothing more will come.
    let last = whole.last().unwrap().id.unwrap();
    let after_end = tokio::time::timeout(
        HANG,
        SseReader::new(c.events(1, TOK_A, &run, Some(last)).await).rest(),
    )
    .await
    .expect("a stream resumed after its final event does not end");
    assert!(after_end.is_empty(), "{after_end:?}");
    (run, whole)
}

/// An approval raised where the run runs, answered through another replica: the file
/// is written.
async fn approval_elsewhere(c: &Cluster) {
    let target = c.sandbox.cwd().join("approved.txt");
    c.mock.on(Rule::prompt_contains("WRITE-IT").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": target.to_str().unwrap(), "content": "yes"}),
        ),
        Reply::text("written"),
    ]));
    let (response, run) = c
        .stream(
            0,
            TOK_A,
            json!({"prompt": "WRITE-IT now", "permission_mode": "askForEdits", "approvals": true}),
        )
        .await;
    let mut reader = SseReader::new(response);
    let mut asked = 0;
    let mut last = None;
    while let Some(event) = reader.next().await {
        if event.event == "permission_request" {
            asked += 1;
            assert_eq!(event.data["tool_name"], "Write", "{event:?}");
            let runner = c.runner(TOK_A, &run).await;
            let through = (runner + 2) % c.n();
            assert!(c.n() == 1 || through != runner);
            let id = event.data["approval_id"].as_str().unwrap();
            let (status, body) = c
                .post(
                    through,
                    TOK_A,
                    &format!("/v1/approvals/{id}"),
                    json!({"allow": true}),
                )
                .await;
            assert_eq!(status, 204, "{body}");
            // Answered once: a second answer finds nothing waiting, on any replica.
            let (status, _) = c
                .post(
                    runner,
                    TOK_A,
                    &format!("/v1/approvals/{id}"),
                    json!({"allow": false}),
                )
                .await;
            assert_eq!(status, 404);
        }
        last = Some(event);
    }
    assert_eq!(asked, 1);
    let last = last.unwrap();
    assert_eq!(last.event, "done", "{last:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "yes");
}

/// A run cancelled through another replica than the one running it ends cancelled; its
/// CLI is gone.
async fn cancel_elsewhere(c: &Cluster) {
    c.mock.on(Rule::prompt_contains("SLOW-CANCEL")
        .reply(Reply::text("too late").delay(Duration::from_secs(90))));
    let (response, run) = c
        .stream(0, TOK_A, json!({"prompt": "SLOW-CANCEL this"}))
        .await;
    let mut reader = SseReader::new(response);
    c.wait_request("the slow request", |r| r.mentions("SLOW-CANCEL"))
        .await;
    let runner = c.runner(TOK_A, &run).await;
    let clis = c.cli_pids(runner);
    assert!(!clis.is_empty(), "no CLI of the runner found");
    let through = (runner + 1) % c.n();
    let (status, body) = c
        .post(through, TOK_A, &format!("/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let events = reader.rest().await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.data["error"]["kind"], "cancelled", "{last:?}");
    let row = c
        .wait_run(TOK_A, &run, "the run to end", |r| r["state"] != "running")
        .await;
    assert_eq!(row["state"], "cancelled", "{row}");
    assert!(
        wait_until_gone(&clis, HANG).await,
        "the cancelled run's CLI lives on"
    );
    // Over: a second cancel finds nothing in progress.
    let (status, _) = c
        .post(runner, TOK_A, &format!("/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(status, 404);
}

/// Tenant B cannot see, continue, approve, read or cancel anything of tenant A's,
/// through any replica; A's things are untouched by the attempts.
async fn tenants_apart(c: &Cluster) {
    let target = c.sandbox.cwd().join("tenant-a.txt");
    c.mock.on(Rule::prompt_contains("A-WRITES").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": target.to_str().unwrap(), "content": "a"}),
        ),
        Reply::text("done"),
    ]));
    c.mock.on(echo());
    let (status, first) = c
        .post(
            0,
            TOK_A,
            "/v1/sessions",
            json!({"prompt": "A's secret is KIWI."}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    let conversation = first["result"]["session_id"].as_str().unwrap().to_owned();
    // A run of A's waiting for an approval: running, with a waiting approval.
    let (response, run) = c
        .stream(
            1,
            TOK_A,
            json!({"prompt": "A-WRITES", "permission_mode": "askForEdits", "approvals": true}),
        )
        .await;
    let mut reader = SseReader::new(response);
    let approval = loop {
        let event = reader.next().await.expect("no permission request");
        if event.event == "permission_request" {
            break event.data["approval_id"].as_str().unwrap().to_owned();
        }
    };
    for k in 0..c.n() {
        use reqwest::Method;
        let attempts: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, format!("/v1/sessions/{session}"), None),
            (
                Method::POST,
                format!("/v1/sessions/{session}/messages"),
                Some(json!({"prompt": "What is A's secret?"})),
            ),
            (
                Method::POST,
                format!("/v1/sessions/{session}/interrupt"),
                None,
            ),
            (Method::DELETE, format!("/v1/sessions/{session}"), None),
            (Method::GET, format!("/v1/runs/{run}"), None),
            (Method::GET, format!("/v1/runs/{run}/events"), None),
            (Method::POST, format!("/v1/runs/{run}/cancel"), None),
            (
                Method::POST,
                format!("/v1/approvals/{approval}"),
                Some(json!({"allow": true})),
            ),
            (
                Method::POST,
                "/v1/query".to_owned(),
                Some(json!({"prompt": "What is the secret?", "resume": conversation})),
            ),
        ];
        for (method, path, body) in attempts {
            let (status, _, answer) = c.call(k, method.clone(), TOK_B, &path, body).await;
            assert_eq!(
                status, 404,
                "tenant B got {status} for {method} {path} through {k}: {answer}"
            );
        }
        let mut request = c.req(
            k,
            reqwest::Method::GET,
            TOK_B,
            &format!("/v1/runs/{run}/events"),
        );
        request = request.header("last-event-id", "1");
        assert_eq!(request.send().await.unwrap().status().as_u16(), 404);
    }
    // A's things are as they were: the run waits, the approval is A's to answer.
    let row = c.run(TOK_A, &run).await;
    assert_eq!(row["state"], "running", "{row}");
    assert!(row["cancel_requested"].is_null(), "{row}");
    let (status, body) = c
        .post(
            2,
            TOK_A,
            &format!("/v1/approvals/{approval}"),
            json!({"allow": true}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let rest = reader.rest().await;
    assert_eq!(rest.last().unwrap().event, "done", "{rest:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "a");
    let (status, turn) = c
        .post(
            2,
            TOK_A,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "And now?"}),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    assert!(
        c.mock
            .requests()
            .pop()
            .unwrap()
            .mentions("A's secret is KIWI.")
    );
    // B's own figures show nothing of A's.
    let (status, stats) = c.get(0, TOK_B, "/v1/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["sessions"]["open"], 0, "{stats}");
    assert_eq!(stats["runs"]["completed"], 0, "{stats}");
}

// --- on PostgreSQL, three replicas -----------------------------------------------------

/// 32 turns of one session asked at once, through every replica: one runs, the
/// others are refused (409), so no two CLIs ever continue one conversation.
async fn one_turn_at_a_time(c: &Cluster) {
    // Before the echo: the first matching rule answers.
    c.mock.on(Rule::prompt_contains("at once")
        .reply(Reply::text("one at a time").delay(Duration::from_secs(2))));
    c.mock.on(echo());
    let (status, first) = c
        .post(0, TOK_A, "/v1/sessions", json!({"prompt": "hello"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    let path = format!("/v1/sessions/{session}/messages");
    let asks = (0..32).map(|k| {
        c.post(
            k % c.replicas.len(),
            TOK_A,
            &path,
            json!({"prompt": format!("turn {k} at once")}),
        )
    });
    let answers = futures::future::join_all(asks).await;
    let ran: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 409 && b["error"]["kind"] == "conversation_busy")
        .count();
    assert_eq!((ran.len(), refused), (1, 31), "{answers:?}");
    let (status, history) = c.get(0, TOK_A, &format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["turns"].as_array().unwrap().len(), 2, "{history}");
}

#[tokio::test]
async fn fleet_one_turn_at_a_time_under_concurrent_requests() {
    let Some(c) = Cluster::postgres(2, &[]).await else {
        return;
    };
    one_turn_at_a_time(&c).await;
}

#[tokio::test]
async fn sqlite_one_turn_at_a_time_under_concurrent_requests() {
    let c = Cluster::sqlite(&[]).await;
    one_turn_at_a_time(&c).await;
}

#[tokio::test]
async fn fleet_session_continues_through_every_replica() {
    let Some(c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    session_moves(&c).await;
}

#[tokio::test]
async fn fleet_stream_resumes_on_another_replica() {
    let Some(c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    stream_resumes(&c).await;
}

#[tokio::test]
async fn fleet_approval_answered_through_another_replica() {
    let Some(c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    approval_elsewhere(&c).await;
}

#[tokio::test]
async fn fleet_run_cancelled_through_another_replica() {
    let Some(c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    cancel_elsewhere(&c).await;
}

#[tokio::test]
async fn fleet_tenants_cannot_touch_each_other() {
    let Some(c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    tenants_apart(&c).await;
}

/// The mock rule of a run that shows a message, then waits long in its second step.
fn long_turn(tag: &str, wait: Duration) -> Rule {
    Rule::prompt_contains(tag).steps([
        Reply::text(format!("Looking around first ({tag})."))
            .then_tool_use("Glob", json!({"pattern": "*.md"})),
        Reply::text(format!("finished {tag}")).delay(wait),
    ])
}

#[tokio::test]
async fn fleet_replica_killed_mid_run() {
    let Some(mut c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    c.mock.on(long_turn("KILL-ME", Duration::from_secs(120)));
    c.mock.on(echo());
    let (status, first) = c
        .post(
            0,
            TOK_A,
            "/v1/sessions",
            json!({"prompt": "Remember the word DELTA-4."}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    let (_, history) = c.get(0, TOK_A, &format!("/v1/sessions/{session}")).await;
    let home = c.index_of(history["home_replica"].as_str().expect("no home replica"));
    // The second turn, through another replica than home; it runs where it is claimed.
    let through = (home + 1) % 3;
    let turn = {
        let request = c
            .req(
                through,
                reqwest::Method::POST,
                TOK_A,
                &format!("/v1/sessions/{session}/messages"),
            )
            .json(&json!({"prompt": "KILL-ME slowly"}));
        tokio::spawn(async move { request.send().await })
    };
    c.wait_request("the second step of the long turn", |r| {
        r.prompt().is_some_and(|p| p.contains("KILL-ME")) && r.step() == 1
    })
    .await;
    let run = eventually("the turn's run", || async {
        let (_, history) = c
            .get(through, TOK_A, &format!("/v1/sessions/{session}"))
            .await;
        history["turns"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["state"] == "running"))
            .map(|t| t["run"].as_str().unwrap().to_owned())
    })
    .await;
    let victim = c.runner(TOK_A, &run).await;
    let clis = c.cli_pids(victim);
    assert!(!clis.is_empty(), "no CLI of the running replica found");
    // One turn at a time, whichever replica is asked.
    for k in 0..3 {
        let (status, body) = c
            .post(
                k,
                TOK_A,
                &format!("/v1/sessions/{session}/messages"),
                json!({"prompt": "meanwhile"}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
    }
    let before = c.whole_log_so_far(through, &run).await;
    assert!(
        before.iter().any(|e| e.event == "message"
            && e.data
                .to_string()
                .contains("Looking around first (KILL-ME).")),
        "{before:?}"
    );

    c.kill9(victim).await;
    let killed_at = Instant::now();

    // Its lease runs out; another replica ends the run, interrupted, messages kept.
    let row = c
        .wait_run(TOK_A, &run, "the takeover", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    let takeover = killed_at.elapsed().as_secs_f64();
    assert_eq!(row["state"], "interrupted", "{row}");
    let survivor = c.live().next().unwrap();
    let log = c.whole_log(survivor, TOK_A, &run).await;
    assert_eq!(
        &log[..before.len()],
        &before[..],
        "the messages before the kill changed"
    );
    let last = log.last().unwrap();
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.data["error"]["kind"], "interrupted", "{last:?}");
    assert!(
        wait_until_gone(&clis, HANG).await,
        "the killed replica's CLIs live on: {:?}",
        clis
    );
    let clis_gone = killed_at.elapsed().as_secs_f64();
    common::record(
        "server: replica SIGKILLed mid-run (3-replica fleet)",
        "run interrupted, its events kept; session continued elsewhere",
        takeover,
        0,
        json!({
            "takeover_seconds": takeover,
            "lease_seconds": LEASE.parse::<f64>().unwrap(),
            "clis_of_the_killed_replica": clis.len(),
            "clis_gone_seconds": clis_gone,
        }),
    );
    // The client that waited on the turn (on a replica that lives) hears of it.
    if through != victim {
        let answer = tokio::time::timeout(HANG, turn)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_ne!(answer.status().as_u16(), 200);
    }

    // The session goes on elsewhere, with what it had.
    let next = c.live().find(|k| *k != victim).unwrap();
    let (status, third) = c
        .post(
            next,
            TOK_A,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "Which word did I ask you to remember?"}),
        )
        .await;
    assert_eq!(status, 200, "{third}");
    let seen = c.mock.requests().pop().unwrap();
    assert!(
        seen.mentions("Remember the word DELTA-4."),
        "the model lost the first turn"
    );
    let (_, history) = c.get(next, TOK_A, &format!("/v1/sessions/{session}")).await;
    let third_run = history["turns"][2]["run"].as_str().unwrap().to_owned();
    let row = c.run(TOK_A, &third_run).await;
    assert_ne!(row["replica"], c.r(victim).id.as_str(), "{row}");

    // Restarted with its id, it serves again.
    c.restart(victim).await;
    eventually("the restarted replica to be ready", || async {
        let (status, _) = c.get(victim, TOK_A, "/ready").await;
        (status == 200).then_some(())
    })
    .await;
    let (status, answer) = c
        .post(victim, TOK_A, "/v1/query", json!({"prompt": "back?"}))
        .await;
    assert_eq!(status, 200, "{answer}");
}

impl Cluster {
    /// The log of a run still in progress, as far as it goes now.
    async fn whole_log_so_far(&self, k: usize, run: &str) -> Vec<Sse> {
        let mut reader = SseReader::new(self.events(k, TOK_A, run, None).await);
        let mut events = Vec::new();
        // The backlog comes at once; stop at the first pause.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(2), reader.next()).await
        {
            if event.id.is_some() {
                events.push(event);
            }
        }
        events
    }
}

#[tokio::test]
async fn fleet_paused_replica_cannot_write_after_takeover() {
    let Some(mut c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    let reply_wait = Duration::from_secs(5);
    c.mock.on(long_turn("PAUSE-ME", reply_wait));
    let (response, run) = c
        .stream(0, TOK_A, json!({"prompt": "PAUSE-ME please"}))
        .await;
    drop(response); // read later, from the log
    c.wait_request("the second step", |r| {
        r.prompt().is_some_and(|p| p.contains("PAUSE-ME")) && r.step() == 1
    })
    .await;
    let asked = Instant::now();
    let paused = c.runner(TOK_A, &run).await;
    let clis = c.cli_pids(paused);
    assert!(!clis.is_empty(), "no CLI of the running replica found");

    c.signal(paused, Signal::SIGSTOP);

    let row = c
        .wait_run(TOK_A, &run, "the takeover", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    assert_eq!(row["state"], "interrupted", "{row}");
    let other = c.live().next().unwrap();
    let before = c.whole_log(other, TOK_A, &run).await;
    assert_eq!(before.last().unwrap().data["error"]["kind"], "interrupted");
    // Let the CLI (which was not paused) get its late answer into its pipe, so the
    // replica has something to write when it resumes.
    let ready = asked + reply_wait + Duration::from_secs(2);
    tokio::time::sleep_until(ready.into()).await;

    c.signal(paused, Signal::SIGCONT);

    assert!(
        wait_until_gone(&clis, HANG).await,
        "the resumed replica's CLI lives on"
    );
    eventually("the resumed replica to give the run up", || async {
        c.log(paused)
            .contains("lost the lease of a run")
            .then_some(())
    })
    .await;
    let after = c.whole_log(paused, TOK_A, &run).await;
    assert_eq!(after, before, "the resumed replica wrote to the run's log");
    let row = c.run(TOK_A, &run).await;
    assert_eq!(row["state"], "interrupted", "{row}");
    assert!(
        !after
            .iter()
            .any(|e| e.data.to_string().contains("finished PAUSE-ME"))
    );
}

/// A cancel that reaches a run whose replica has stopped (paused here) is not lost: when
/// the lease runs out, the run ends cancelled, as asked, not interrupted.
#[tokio::test]
async fn fleet_cancel_of_a_run_on_a_paused_replica_ends_it_cancelled() {
    let Some(mut c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    c.mock.on(Rule::prompt_contains("PAUSED-CANCEL")
        .reply(Reply::text("too late").delay(Duration::from_secs(90))));
    let (response, run) = c
        .stream(0, TOK_A, json!({"prompt": "PAUSED-CANCEL this"}))
        .await;
    drop(response);
    c.wait_request("the slow request", |r| r.mentions("PAUSED-CANCEL"))
        .await;
    let paused = c.runner(TOK_A, &run).await;
    let clis = c.cli_pids(paused);
    assert!(!clis.is_empty(), "no CLI of the running replica found");
    c.signal(paused, Signal::SIGSTOP);
    let through = (paused + 1) % c.n();
    let (status, body) = c
        .post(through, TOK_A, &format!("/v1/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let row = c
        .wait_run(TOK_A, &run, "the takeover", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    assert_eq!(row["state"], "cancelled", "{row}");
    let log = c.whole_log(through, TOK_A, &run).await;
    assert_eq!(
        log.last().unwrap().data["error"]["kind"],
        "cancelled",
        "{log:?}"
    );
    c.signal(paused, Signal::SIGCONT);
    assert!(
        wait_until_gone(&clis, HANG).await,
        "the resumed replica's CLI lives on"
    );
    assert_eq!(c.run(TOK_A, &run).await["state"], "cancelled");
}

#[tokio::test]
async fn fleet_tenant_limits_hold_across_replicas() {
    let Some(c) = Cluster::postgres(
        3,
        &[
            "--max-concurrent",
            "1",
            "--max-queued",
            "0",
            "--tenant-max-concurrent",
            "1",
            "--tenant-max-queued",
            "1",
            "--tenant-runs-per-minute",
            "3",
        ],
    )
    .await
    else {
        return;
    };
    c.mock.on(Rule::prompt_contains("SLOW-LIMIT")
        .reply(Reply::text("late").delay(Duration::from_secs(90))));
    c.mock.on(echo());
    // A's first run runs.
    let (_a1_stream, a1) = c.stream(0, TOK_A, json!({"prompt": "SLOW-LIMIT a1"})).await;
    c.wait_run(TOK_A, &a1, "a1 running", |r| r["state"] == "running")
        .await;
    // A's second is admitted, but waits: A may run one at a time, fleet-wide, though
    // two replicas have a free slot.
    let (_a2_stream, a2) = c.stream(1, TOK_A, json!({"prompt": "SLOW-LIMIT a2"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let row = c.run(TOK_A, &a2).await;
    assert_eq!(row["state"], "queued", "tenant A runs two at once: {row}");
    // A's third: A's queue is full.
    let (status, retry, body) = c
        .call(
            2,
            reqwest::Method::POST,
            TOK_A,
            "/v1/query",
            Some(json!({"prompt": "a3"})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some(), "no Retry-After");
    assert_eq!(body["error"]["limit"], "queued runs", "{body}");
    // B runs on the last free slot; then the fleet is full: 503 for B.
    let (_b1_stream, b1) = c.stream(2, TOK_B, json!({"prompt": "SLOW-LIMIT b1"})).await;
    c.wait_run(TOK_B, &b1, "b1 running", |r| r["state"] == "running")
        .await;
    let (status, retry, body) = c
        .call(
            0,
            reqwest::Method::POST,
            TOK_B,
            "/v1/query",
            Some(json!({"prompt": "b2"})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "no Retry-After");
    assert_eq!(body["error"]["kind"], "pool_busy", "{body}");
    // Cancelled through other replicas, the queued one first.
    for (k, token, run) in [(2, TOK_A, &a2), (1, TOK_A, &a1), (0, TOK_B, &b1)] {
        let (status, body) = c
            .post(k, token, &format!("/v1/runs/{run}/cancel"), json!({}))
            .await;
        assert_eq!(status, 202, "{body}");
        c.wait_run(token, run, "the cancel", |r| r["state"] == "cancelled")
            .await;
    }
    // A's third run this minute goes; the fourth is over the per-minute limit.
    let (status, body) = c.post(1, TOK_A, "/v1/query", json!({"prompt": "a4"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, retry, body) = c
        .call(
            2,
            reqwest::Method::POST,
            TOK_A,
            "/v1/query",
            Some(json!({"prompt": "a5"})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some(), "no Retry-After");
    assert_eq!(body["error"]["limit"], "runs in the last minute", "{body}");
    // B, within its own limits, is not affected by A's.
    let (status, body) = c.post(0, TOK_B, "/v1/query", json!({"prompt": "b3"})).await;
    assert_eq!(status, 200, "{body}");
}

/// A session whose turns went elsewhere comes back to a replica that still keeps a
/// hot process from an earlier turn: that process must not answer with an outdated
/// conversation.
#[tokio::test]
async fn fleet_session_back_on_an_old_home_sees_every_turn() {
    let Some(mut c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    c.mock.on(echo());
    let (status, first) = c
        .post(
            0,
            TOK_A,
            "/v1/sessions",
            json!({"prompt": "Remember the word ONE-1."}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    let turn_runner =
        |history: &Value, n: usize| history["turns"][n]["run"].as_str().unwrap().to_owned();
    let (_, history) = c.get(0, TOK_A, &format!("/v1/sessions/{session}")).await;
    let old_home = c.runner(TOK_A, &turn_runner(&history, 0)).await;
    // The old home is away: the second turn runs elsewhere, from the store.
    c.signal(old_home, Signal::SIGSTOP);
    let through = (old_home + 1) % 3;
    let (status, second) = c
        .post(
            through,
            TOK_A,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "Remember the word TWO-2."}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    c.signal(old_home, Signal::SIGCONT);
    let (_, history) = c
        .get(through, TOK_A, &format!("/v1/sessions/{session}"))
        .await;
    let second_runner = c.runner(TOK_A, &turn_runner(&history, 1)).await;
    assert_ne!(second_runner, old_home);
    // Now only the old home can take the third turn.
    let others: Vec<usize> = (0..3).filter(|k| *k != old_home).collect();
    for k in &others {
        c.signal(*k, Signal::SIGSTOP);
    }
    let (status, third) = c
        .post(
            old_home,
            TOK_A,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "Which words did I ask you to remember?"}),
        )
        .await;
    for k in &others {
        c.signal(*k, Signal::SIGCONT);
    }
    assert_eq!(status, 200, "{third}");
    let (_, history) = c
        .get(old_home, TOK_A, &format!("/v1/sessions/{session}"))
        .await;
    assert_eq!(c.runner(TOK_A, &turn_runner(&history, 2)).await, old_home);
    let last = c.mock.requests().pop().unwrap();
    assert_eq!(
        last.prompt().as_deref(),
        Some("Which words did I ask you to remember?")
    );
    for earlier in ["Remember the word ONE-1.", "Remember the word TWO-2."] {
        assert!(last.mentions(earlier), "the model did not see {earlier:?}");
    }
}

#[tokio::test]
async fn fleet_approval_of_a_dead_replica_is_not_delivered() {
    let Some(mut c) = Cluster::postgres(3, &[]).await else {
        return;
    };
    let target = c.sandbox.cwd().join("never.txt");
    c.mock.on(Rule::prompt_contains("WRITE-THEN-DIE").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": target.to_str().unwrap(), "content": "no"}),
        ),
        Reply::text("written"),
    ]));
    let (response, run) = c
        .stream(
            0,
            TOK_A,
            json!({"prompt": "WRITE-THEN-DIE", "permission_mode": "askForEdits", "approvals": true}),
        )
        .await;
    let mut reader = SseReader::new(response);
    let approval = loop {
        let event = reader.next().await.expect("no permission request");
        if event.event == "permission_request" {
            break event.data["approval_id"].as_str().unwrap().to_owned();
        }
    };
    drop(reader);
    let victim = c.runner(TOK_A, &run).await;
    c.kill9(victim).await;
    let row = c
        .wait_run(TOK_A, &run, "the takeover", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    assert_eq!(row["state"], "interrupted", "{row}");
    // Nobody waits for the answer any more: it is not taken as delivered, on any
    // replica, and the approval no longer counts as waiting.
    for k in c.live().collect::<Vec<_>>() {
        let (status, body) = c
            .post(
                k,
                TOK_A,
                &format!("/v1/approvals/{approval}"),
                json!({"allow": true}),
            )
            .await;
        assert_eq!(
            status, 404,
            "an approval of an ended run was accepted: {body}"
        );
        let (_, stats) = c.get(k, TOK_A, "/v1/stats").await;
        assert_eq!(stats["approvals"]["waiting"], 0, "{stats}");
    }
    assert!(!target.exists());
}

#[tokio::test]
async fn fleet_stream_nobody_reads_is_cancelled_after_the_grace() {
    let Some(c) = Cluster::postgres(3, &["--disconnect-grace", "2"]).await else {
        return;
    };
    c.mock.on(Rule::prompt_contains("ABANDONED")
        .reply(Reply::text("nobody hears this").delay(Duration::from_secs(90))));
    let (response, run) = c
        .stream(0, TOK_A, json!({"prompt": "ABANDONED stream"}))
        .await;
    c.wait_request("the slow request", |r| r.mentions("ABANDONED"))
        .await;
    let runner = c.runner(TOK_A, &run).await;
    let clis = c.cli_pids(runner);
    assert!(!clis.is_empty(), "no CLI of the runner found");
    drop(response); // the client goes away and does not come back
    let row = c
        .wait_run(TOK_A, &run, "the run to end", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    assert_eq!(row["state"], "cancelled", "{row}");
    let log = c.whole_log(1, TOK_A, &run).await;
    let last = log.last().unwrap();
    assert_eq!(last.data["error"]["kind"], "cancelled", "{last:?}");
    assert!(
        wait_until_gone(&clis, HANG).await,
        "the abandoned run's CLI lives on"
    );
}

// --- alone on SQLite --------------------------------------------------------------------

#[tokio::test]
async fn sqlite_session_continues() {
    let c = Cluster::sqlite(&[]).await;
    session_moves(&c).await;
}

#[tokio::test]
async fn sqlite_stream_resumes_and_survives_a_restart() {
    let mut c = Cluster::sqlite(&[]).await;
    let (run, whole) = stream_resumes(&c).await;
    // The log is in the database: after a restart, Last-Event-ID still resumes exactly.
    c.stop(0).await;
    c.restart(0).await;
    let middle = whole[whole.len() / 2].id.unwrap();
    let rest: Vec<Sse> = SseReader::new(c.events(0, TOK_A, &run, Some(middle)).await)
        .rest()
        .await;
    assert_eq!(rest, whole[whole.len() / 2 + 1..].to_vec());
}

#[tokio::test]
async fn sqlite_crash_and_restart_end_the_run() {
    // A long lease: only the restarted server can end the run before the test ends.
    let mut c = Cluster::sqlite(&["--lease", "120"]).await;
    c.mock.on(Rule::prompt_contains("CRASH-HERE")
        .reply(Reply::text("never").delay(Duration::from_secs(90))));
    c.mock.on(echo());
    let (response, run) = c.stream(0, TOK_A, json!({"prompt": "CRASH-HERE"})).await;
    c.wait_request("the slow request", |r| r.mentions("CRASH-HERE"))
        .await;
    let clis = c.cli_pids(0);
    assert!(!clis.is_empty(), "no CLI of the server found");
    c.kill9(0).await;
    drop(response);
    assert!(
        wait_until_gone(&clis, HANG).await,
        "the killed server's CLI lives on"
    );
    c.restart(0).await;
    let row = c
        .wait_run(TOK_A, &run, "the run to end", |r| {
            r["state"] != "running" && r["state"] != "claimed"
        })
        .await;
    assert_eq!(row["state"], "interrupted", "{row}");
    let log = c.whole_log(0, TOK_A, &run).await;
    let last = log.last().unwrap();
    assert_eq!(last.data["error"]["kind"], "interrupted", "{last:?}");
    assert!(
        last.data["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{last:?}"
    );
    let (status, answer) = c
        .post(0, TOK_A, "/v1/query", json!({"prompt": "back?"}))
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn sqlite_approval() {
    let c = Cluster::sqlite(&[]).await;
    approval_elsewhere(&c).await;
}

#[tokio::test]
async fn sqlite_cancel() {
    let c = Cluster::sqlite(&[]).await;
    cancel_elsewhere(&c).await;
}

#[tokio::test]
async fn sqlite_tenants_cannot_touch_each_other() {
    let c = Cluster::sqlite(&[]).await;
    tenants_apart(&c).await;
}
