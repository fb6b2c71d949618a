//! This SDK's side of `make bench` (issue 11): a worker that `tools/bench/driver.py`
//! drives round by round, interleaved with the same worker written against the
//! official Python and TypeScript SDKs (`tools/bench/worker.py`, `worker.mjs`).
//!
//! It reads one JSON command per line on stdin and answers one JSON line on stdout.
//! The environment it inherits is the sandbox the driver made (mock model, `HOME`,
//! `CLAUDE_CONFIG_DIR`, ...), and the CLI inherits it in turn, as in the other SDKs;
//! `BENCH_CWD` is the working directory, `CLAUDE_CODE_CLI_PATH` the pinned CLI.
//!
//! Commands (`op`), times in milliseconds:
//!
//! | op | what | answer |
//! |---|---|---|
//! | `cold` | `query()`, a new CLI | `first`, `result` |
//! | `claimed` | `QueryPool::query` on a spare claimed for `cwd` (a new directory) | `first`, `result` |
//! | `claim` | `QueryPool::client` on a spare claimed for `cwd`, to connected | `first` |
//! | `reuse` | `QueryPool::query` on a process reset with `/clear` | `first`, `result` |
//! | `client_turn` | the next turn of an open `ClaudeClient` | `first`, `result` |
//! | `client_first_turn` | the first turn of a freshly connected `ClaudeClient` | `first`, `result` |
//! | `server_turn` | a server session's second turn (server binary, own SQLite dir) | `first` |
//! | `throughput` | `n` queries through a pool of 4 (warmed before the clock) with reuse, each answer checked | `wall`, `ok`, `cli_cpu` |
//! | `early_stop` | drop a query after its first message, until its CLI is gone | `gone` |
//! | `rss_concurrent` | `n` concurrent `query()`s: this process's peak RSS rise | `rss_kb`, `ok` |
//! | `big` | a `bytes`-long answer: wall time, peak RSS rise, CPU of this process | `wall`, `rss_kb`, `cpu` |
//!
//! Before a timed command the worker waits until its pools have their spares back
//! (`Worker::settle`): their refills must not run beside what is timed.
//!
//! Not a criterion benchmark (`harness = false`): a benchmark that needs other SDKs in
//! the same run does not fit one process's harness.

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claude_code_sdk::{
    ClaudeClient, ClaudeCodeOptions, ContentBlock, Message, PoolConfig, QueryPool, Served, query,
};
use common::Server;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times a stream to its first assistant message and to its result; the assistant text.
async fn time_stream<S>(start: Instant, mut stream: S) -> (Duration, Duration, String)
where
    S: Stream<Item = claude_code_sdk::Result<Message>> + Unpin,
{
    let mut first = None;
    let mut text = String::new();
    while let Some(message) = stream.next().await {
        let message = message.expect("the run succeeds");
        if let Some(assistant) = message.as_assistant() {
            first.get_or_insert_with(|| start.elapsed());
            text.push_str(&assistant.text());
        }
        if message.is_result() {
            let at = start.elapsed();
            return (first.unwrap_or(at), at, text);
        }
    }
    panic!("no result");
}

/// `/proc/self/status` field in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// (own CPU, waited-for children's CPU) in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let at = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0);
    let tick = 100.0;
    ((at(14) + at(15)) / tick, (at(16) + at(17)) / tick)
}

/// Whether any process carries `BENCH_TAG=<tag>` in its environment.
fn tagged_alive(tag: &str) -> bool {
    let needle = format!("BENCH_TAG={tag}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        std::fs::read(entry.path().join("environ"))
            .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// The server binary (`BENCH_SERVER_BIN`, else the release build) for `root`, with
/// room for the concurrent streams of `server_sse`.
async fn start_server(root: &Path) -> Server {
    let binary = std::env::var_os("BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/claude-code-server")
        });
    Server::start(&binary, root, Duration::from_secs(120), |command| {
        command
            .args(["--max-concurrent", "8", "--max-queued", "200"])
            .args(["--queue-timeout", "600"]);
    })
    .await
}

impl Server {
    /// One streamed run: (time to the first `message` event with an assistant message,
    /// time to `done`, every event name in order).
    async fn stream(&self, prompt: &str) -> (Duration, Duration, Vec<String>) {
        let start = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/query/stream", self.url))
            .json(&json!({"prompt": prompt}))
            .send()
            .await
            .expect("the server answers");
        assert!(response.status().is_success(), "{}", response.status());
        let mut body = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        let mut first = None;
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk.expect("a chunk"));
            while let Some(end) = find(&buffer, b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let name = text
                    .lines()
                    .find_map(|l| l.strip_prefix("event:"))
                    .unwrap_or("message")
                    .trim()
                    .to_owned();
                if name == "message" && first.is_none() && text.contains("\"assistant\"") {
                    first = Some(start.elapsed());
                }
                events.push(name);
            }
        }
        let at = start.elapsed();
        (first.unwrap_or(at), at, events)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Worker {
    options: ClaudeCodeOptions,
    root: PathBuf,
    spares: QueryPool,
    claim_pool: QueryPool,
    reuse: QueryPool,
    client: Option<ClaudeClient>,
    server: Option<Server>,
    turns: usize,
}

impl Worker {
    /// Waits until this worker's pools have their spares (and reset process) back, so
    /// a refill starting a CLI (about a CPU-second) does not run beside a timed
    /// command, as it would not on a service that is not saturated.
    async fn settle(&self) {
        for pool in [&self.spares, &self.claim_pool, &self.reuse] {
            assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
        }
    }

    fn options_in(&self, cwd: &str) -> ClaudeCodeOptions {
        self.options.to_builder().cwd(cwd).build().expect("valid")
    }

    async fn run(&mut self, command: &Value) -> Value {
        let op = command["op"].as_str().unwrap_or_default();
        let prompt = command["prompt"]
            .as_str()
            .unwrap_or("benchmark prompt")
            .to_owned();
        match op {
            "cold" => {
                self.settle().await;
                let start = Instant::now();
                let (first, result, _) =
                    time_stream(start, query(prompt.as_str(), self.options.clone())).await;
                json!({"first": ms(first), "result": ms(result)})
            }
            "claimed" => {
                let options = self.options_in(command["cwd"].as_str().unwrap_or("."));
                self.settle().await;
                let start = Instant::now();
                let run = self
                    .spares
                    .query(prompt.as_str(), options)
                    .await
                    .expect("run");
                let served = format!("{:?}", run.served());
                let (first, result, _) = time_stream(start, run).await;
                json!({"first": ms(first), "result": ms(result), "served": served})
            }
            "claim" => {
                let options = self.options_in(command["cwd"].as_str().unwrap_or("."));
                self.settle().await;
                let start = Instant::now();
                let client = self.claim_pool.client(options).await.expect("client");
                let at = start.elapsed();
                client.close().await.expect("close");
                json!({"first": ms(at), "result": ms(at)})
            }
            "reuse" => {
                // The pool's first run is served by its prewarmed spare; only the runs
                // after it find a process reset with `/clear`. Run that first one
                // untimed, so every timed row is what it says.
                if self.reuse.stats().reused == 0 {
                    self.settle().await;
                    self.reuse
                        .query("warm-up run", self.options.clone())
                        .await
                        .expect("run")
                        .collect_all()
                        .await
                        .expect("warm-up run");
                }
                self.settle().await;
                let start = Instant::now();
                let run = self
                    .reuse
                    .query(prompt.as_str(), self.options.clone())
                    .await
                    .expect("run");
                let served = run.served();
                assert_eq!(
                    served,
                    Served::Reused,
                    "the reuse row runs on a reset process"
                );
                let (first, result, _) = time_stream(start, run).await;
                json!({"first": ms(first), "result": ms(result), "served": format!("{served:?}")})
            }
            "client_turn" => {
                if self.client.is_none() {
                    let client = ClaudeClient::connect(self.options.clone())
                        .await
                        .expect("client");
                    client.query("warm-up turn").await.expect("query");
                    time_stream(Instant::now(), client.receive_response()).await;
                    self.client = Some(client);
                }
                let client = self.client.as_ref().expect("client");
                self.turns += 1;
                // A long conversation grows every request: start over every 20 turns.
                self.settle().await;
                let start = Instant::now();
                client.query(prompt.as_str()).await.expect("query");
                let (first, result, _) = time_stream(start, client.receive_response()).await;
                if self.turns.is_multiple_of(20)
                    && let Some(client) = self.client.take()
                {
                    client.close().await.expect("close");
                }
                json!({"first": ms(first), "result": ms(result)})
            }
            "client_first_turn" => {
                let client = ClaudeClient::connect(self.options.clone())
                    .await
                    .expect("client");
                let start = Instant::now();
                client.query(prompt.as_str()).await.expect("query");
                let (first, result, _) = time_stream(start, client.receive_response()).await;
                client.close().await.expect("close");
                json!({"first": ms(first), "result": ms(result)})
            }
            "server_turn" => {
                if self.server.is_none() {
                    self.server = Some(start_server(&self.root).await);
                }
                let server = self.server.as_ref().expect("server");
                let started = server
                    .post("/v1/sessions", json!({"prompt": "first turn"}))
                    .await;
                let id = started["session"].as_str().expect("session id").to_owned();
                let start = Instant::now();
                let answer = server
                    .post(
                        &format!("/v1/sessions/{id}/messages"),
                        json!({"prompt": prompt}),
                    )
                    .await;
                let at = start.elapsed();
                assert!(answer["result"].is_object(), "{answer}");
                server.delete(&format!("/v1/sessions/{id}")).await;
                json!({"first": ms(at), "result": ms(at)})
            }
            "server_sse" => {
                if self.server.is_none() {
                    self.server = Some(start_server(&self.root).await);
                }
                let server = self.server.as_ref().expect("server");
                let clients = command["n"].as_u64().unwrap_or(100) as usize;
                let start = Instant::now();
                let runs = futures::future::join_all(
                    (0..clients)
                        .map(|i| async move { server.stream(&format!("sse client {i}")).await }),
                )
                .await;
                let wall = start.elapsed();
                let complete = runs.iter().all(|(_, _, events)| {
                    events.last().map(String::as_str) == Some("done")
                        && events.iter().filter(|e| *e == "done").count() == 1
                });
                let mut firsts: Vec<f64> = runs.iter().map(|r| ms(r.0)).collect();
                firsts.sort_by(f64::total_cmp);
                json!({
                    "wall": ms(wall),
                    "ok": complete,
                    "p50": firsts[firsts.len() / 2],
                    "p99": firsts[(firsts.len() * 99 / 100).min(firsts.len() - 1)],
                    "runs_per_s": clients as f64 / wall.as_secs_f64(),
                })
            }
            "direct_concurrent" => {
                // The server's pool shape (8 processes, one spare), called directly.
                let clients = command["n"].as_u64().unwrap_or(100) as usize;
                let pool = QueryPool::new(
                    PoolConfig {
                        max_concurrent: 8,
                        max_queued: 200,
                        queue_timeout: Duration::from_secs(600),
                        ..PoolConfig::default()
                    }
                    .prewarm(self.options.clone(), 1),
                );
                pool.wait_warm(1, Duration::from_secs(60)).await;
                let start = Instant::now();
                let runs = futures::future::join_all((0..clients).map(|i| {
                    let pool = pool.clone();
                    let options = self.options.clone();
                    async move {
                        let start = Instant::now();
                        let run = pool
                            .query(format!("direct client {i}"), options)
                            .await
                            .expect("run");
                        time_stream(start, run).await
                    }
                }))
                .await;
                let wall = start.elapsed();
                let mut firsts: Vec<f64> = runs.iter().map(|r| ms(r.0)).collect();
                firsts.sort_by(f64::total_cmp);
                json!({
                    "wall": ms(wall),
                    "ok": true,
                    "p50": firsts[firsts.len() / 2],
                    "p99": firsts[(firsts.len() * 99 / 100).min(firsts.len() - 1)],
                    "runs_per_s": clients as f64 / wall.as_secs_f64(),
                })
            }
            "throughput" => {
                let n = command["n"].as_u64().unwrap_or(32) as usize;
                // `prewarm: 0` for the cold pool (a comparison by hand).
                let prewarm = command["prewarm"].as_u64().unwrap_or(4) as usize;
                let (_, children_before) = cpu_seconds();
                // A service's pool: its four processes started (parked) before the
                // queries arrive. Their start-up CPU is counted (they are reaped after
                // the pool drops); their start-up time is not in the wall time.
                let pool = QueryPool::new(
                    PoolConfig {
                        max_concurrent: 4,
                        max_queued: n,
                        queue_timeout: Duration::from_secs(600),
                        ..PoolConfig::default()
                    }
                    .reuse_processes(true)
                    .prewarm(self.options.clone(), prewarm),
                );
                assert!(pool.wait_warm(prewarm, Duration::from_secs(120)).await);
                let start = Instant::now();
                let answers = futures::future::join_all((0..n).map(|i| {
                    let pool = pool.clone();
                    let options = self.options.clone();
                    async move {
                        let id = format!("query-id-{i}-{}", uuid_like());
                        let run = pool.query(id.as_str(), options).await.expect("run");
                        let (_, _, text) = time_stream(Instant::now(), run).await;
                        text.contains(&id)
                    }
                }))
                .await;
                let wall = start.elapsed();
                let pids = pool.warm_pids();
                drop(pool);
                wait_gone(&pids).await;
                let (_, children_after) = cpu_seconds();
                json!({
                    "wall": ms(wall),
                    "ok": answers.iter().all(|ok| *ok),
                    "cli_cpu": (children_after - children_before) / n as f64,
                })
            }
            "early_stop" => {
                let tag = uuid_like();
                let options = self
                    .options
                    .to_builder()
                    .env("BENCH_TAG", &tag)
                    .build()
                    .expect("valid");
                let mut run = query(prompt.as_str(), options);
                let _first = run.next().await.expect("a message").expect("ok");
                let start = Instant::now();
                drop(run);
                while tagged_alive(&tag) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if start.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                }
                json!({"gone": ms(start.elapsed())})
            }
            "rss_concurrent" => {
                let n = command["n"].as_u64().unwrap_or(32) as usize;
                reset_peak_rss();
                let before = status_kb("VmRSS:");
                let answers = futures::future::join_all((0..n).map(|i| {
                    let options = self.options.clone();
                    async move {
                        let id = format!("rss-id-{i}-{}", uuid_like());
                        let (_, _, text) =
                            time_stream(Instant::now(), query(id.as_str(), options)).await;
                        text.contains(&id)
                    }
                }))
                .await;
                let peak = status_kb("VmHWM:");
                json!({"rss_kb": peak.saturating_sub(before), "ok": answers.iter().all(|ok| *ok)})
            }
            "big" => {
                let bytes = command["bytes"].as_u64().unwrap_or(50 << 20);
                reset_peak_rss();
                let before = status_kb("VmRSS:");
                let (cpu_before, _) = cpu_seconds();
                let start = Instant::now();
                let mut run = query(format!("BIG_ANSWER:{bytes}"), self.options.clone());
                let mut got = 0usize;
                while let Some(message) = run.next().await {
                    let message = message.expect("ok");
                    if let Some(assistant) = message.as_assistant() {
                        // The length of its text, without joining a copy of it.
                        got += assistant
                            .content
                            .iter()
                            .filter_map(ContentBlock::as_text)
                            .map(str::len)
                            .sum::<usize>();
                    }
                    if message.is_result() {
                        break;
                    }
                }
                let wall = start.elapsed();
                drop(run);
                let (cpu_after, _) = cpu_seconds();
                let peak = status_kb("VmHWM:");
                json!({
                    "wall": ms(wall),
                    "rss_kb": peak.saturating_sub(before),
                    "cpu": cpu_after - cpu_before,
                    "ok": got as u64 >= bytes,
                })
            }
            "stop" => {
                if let Some(client) = self.client.take() {
                    let _ = client.close().await;
                }
                if let Some(server) = self.server.take() {
                    server.stop().await;
                }
                json!({"stopped": true})
            }
            other => json!({"error": format!("unknown op {other:?}")}),
        }
    }
}

/// Waits (up to 10 s) until the processes are gone, so their CPU is counted.
async fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The pool reaps its processes in the background: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn uuid_like() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[tokio::main]
async fn main() {
    let cwd = std::env::var("BENCH_CWD").expect("BENCH_CWD: the sandbox's working directory");
    let root = PathBuf::from(std::env::var("BENCH_ROOT").unwrap_or_else(|_| cwd.clone()));
    let options = ClaudeCodeOptions::builder()
        .cli_path(claude_code_testkit::cli_path())
        .cwd(&cwd)
        .build()
        .expect("valid options");
    let mut worker = Worker {
        spares: QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1)),
        claim_pool: QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1)),
        reuse: QueryPool::new(
            PoolConfig {
                max_concurrent: 1,
                ..PoolConfig::default()
            }
            .reuse_processes(true)
            .prewarm(options.clone(), 1),
        ),
        options,
        root,
        client: None,
        server: None,
        turns: 0,
    };
    println!(
        "{}",
        json!({"ready": true, "sdk": "claude-code-sdk", "version": env!("CARGO_PKG_VERSION")})
    );
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::task::block_in_place(|| stdin.lock().read_line(&mut line));
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
        let command: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let answer = worker.run(&command).await;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
        if command["op"] == "stop" {
            break;
        }
    }
}
