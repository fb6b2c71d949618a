//! Latency of the ways to run a prompt, side by side in one run, against the real
//! pinned CLI and the testkit's mock model (so the numbers are the SDK's and the
//! CLI's, not a model's).
//!
//! Run with `make bench` (`cargo bench -p claude-code-sdk --bench latency`). It prints a
//! Markdown table: time to the first assistant message and to the result, median and
//! 90th percentile over `BENCH_RUNS` runs (default 20) of each way:
//!
//! - `query()` cold: a new CLI process per prompt;
//! - `QueryPool` warm: a pre-started, initialized process per prompt, its replacement
//!   started after the default `refill_delay` (250 ms), and the same with the
//!   replacement started at once (`refill_delay` zero);
//! - `QueryPool` reuse: one process reset with `/clear` between prompts;
//! - `QueryPool` claimed spare in a new working directory: a spare parked with
//!   `--await-claim`, bound by `claim_session` to a directory no run used before (the
//!   pool's path for "any working directory of a tenant");
//! - the claim itself: `QueryPool::client` on a spare in a new working directory, to
//!   the connected client (no prompt);
//! - `ClaudeClient` turn: the next turn on an open client (a hot process);
//! - a cold `--resume` turn: `query()` resuming the previous round's conversation in a
//!   new process (what a server session's follow-up turn cost before it ran on the
//!   pool's hot processes);
//! - a server session's second turn: `POST /v1/sessions/{id}/messages` on the server
//!   binary (its own temporary SQLite directory, `DATABASE_URL` removed), whose first
//!   turn left the conversation hot. That endpoint answers with the whole turn as JSON,
//!   so both columns are the time to the answer;
//! - `ResponseCache` hit: no process at all.
//! - the CLI's floor for a reused process: a copy of the spare started by hand, claimed
//!   once for the run's working directory, each round a prompt written by hand and then
//!   `/clear` (untimed, as the pool resets when a run ends); what the SDK's reused row
//!   costs above the CLI itself.
//! - the CLI's floor for a claimed spare: a process started by hand with exactly the
//!   command line and environment of the pool's spare (read from `/proc`), parked at
//!   the start of the round, then `claim_session` and the prompt written together by
//!   hand; what the SDK's claimed-spare row costs above the CLI itself.
//!
//! The server row needs the server binary: `BENCH_SERVER_BIN`, else
//! `target/release/claude-code-server` (`make bench` builds it); without it the row is
//! left out.
//!
//! Before each timed row the bench waits until all its pools have their spares back
//! (see `settle`): a refill starting a CLI beside a timed row measures the machine's
//! two cores, not the path.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use claude_code_sdk::{
    ClaudeClient, ClaudeCodeOptions, Message, PoolConfig, QueryPool, ResponseCache, cached_query,
    query,
};
use claude_code_testkit::{MockAnthropic, Sandbox, cli_path};
use common::Server;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Default)]
struct Samples {
    first: Vec<Duration>,
    result: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, first: Duration, result: Duration) {
        self.first.push(first);
        self.result.push(result);
    }
}

/// The `p` quantile of `samples`; `None` without samples (a row with none in a short
/// run, `BENCH_RUNS=1`).
fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "–".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

/// Times a stream: to its first assistant message, and to its result.
async fn time_stream<S>(start: Instant, mut stream: S) -> (Duration, Duration)
where
    S: Stream<Item = claude_code_sdk::Result<Message>> + Unpin,
{
    let mut first = None;
    while let Some(message) = stream.next().await {
        let message = message.expect("the run succeeds");
        if first.is_none() && matches!(message, Message::Assistant(_)) {
            first = Some(start.elapsed());
        }
        if message.is_result() {
            let at = start.elapsed();
            return (first.unwrap_or(at), at);
        }
    }
    panic!("no result");
}

/// The server binary, if built.
fn server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/claude-code-server")
        });
    path.is_file().then_some(path)
}

/// A spare started by hand: the pool's spare's command line and environment, no SDK.
struct RawSpare {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// NUL-separated `/proc/<pid>/<file>`.
fn proc_list(pid: u32, file: &str) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read(format!("/proc/{pid}/{file}"))
        .expect("the spare's /proc entry")
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| std::ffi::OsString::from_vec(part.to_vec()))
        .collect()
}

impl RawSpare {
    /// Starts a copy of the process `pid` (same program, arguments, environment and
    /// working directory) and waits until it has answered `initialize`.
    async fn park_like(pid: u32) -> RawSpare {
        use tokio::io::AsyncWriteExt;
        let argv = proc_list(pid, "cmdline");
        let env = proc_list(pid, "environ");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the spare's cwd");
        let mut command = tokio::process::Command::new(&argv[0]);
        command.args(&argv[1..]).env_clear().current_dir(cwd);
        for pair in &env {
            let pair = pair.to_string_lossy();
            // Not the SDK's run markers: the copy is no run of the SDK's, and the
            // spare's run ending must not take it along.
            if let Some((key, value)) = pair.split_once('=')
                && !key.starts_with("CLAUDE_CODE_SDK_")
            {
                command.env(key, value);
            }
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the CLI starts");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let init = json!({"type": "control_request", "request_id": "init",
            "request": {"subtype": "initialize"}});
        stdin
            .write_all(format!("{init}\n").as_bytes())
            .await
            .expect("write");
        while let Some(line) = lines.next_line().await.expect("read") {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if value["response"]["request_id"] == "init" {
                break;
            }
        }
        RawSpare {
            child,
            stdin,
            lines,
        }
    }

    /// Writes `claim_session` for `cwd` and the prompt together; times the first
    /// assistant message and the result.
    async fn claim_and_ask(mut self, cwd: &Path, prompt: &str) -> (Duration, Duration) {
        use tokio::io::AsyncWriteExt;
        let claim = json!({"type": "control_request", "request_id": "claim",
            "request": {"subtype": "claim_session", "cwd": cwd}});
        let user = json!({"type": "user", "session_id": "", "parent_tool_use_id": null,
            "message": {"role": "user", "content": prompt}});
        let start = Instant::now();
        self.stdin
            .write_all(format!("{claim}\n{user}\n").as_bytes())
            .await
            .expect("write");
        let timed = self.read_turn(start).await;
        let _ = self.child.kill().await;
        timed
    }

    /// Reads the CLI's output until the result of the turn written at `start`: the time
    /// to its first assistant message and to its result. A refused control request
    /// (the claim) fails the bench.
    async fn read_turn(&mut self, start: Instant) -> (Duration, Duration) {
        let mut first = None;
        while let Some(line) = self.lines.next_line().await.expect("read") {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            match value["type"].as_str() {
                Some("assistant") => {
                    first.get_or_insert_with(|| start.elapsed());
                }
                Some("result") => {
                    let at = start.elapsed();
                    assert_eq!(value["is_error"], false, "{value}");
                    return (first.unwrap_or(at), at);
                }
                Some("control_response") if value["response"]["subtype"] == "error" => {
                    panic!("the raw CLI refused a request: {value}");
                }
                _ => {}
            }
        }
        panic!("the raw CLI ended without a result");
    }
}

/// The CLI's floor for a reused process: a copy of the pool's spare, claimed once for
/// the run's working directory, then per round a prompt written by hand and, when its
/// result is in, `/clear` written by hand (as the pool resets when a run ends).
struct RawReused {
    spare: RawSpare,
}

impl RawReused {
    /// Claims a copy of the spare `pid` for `cwd` and resets it once, so every timed
    /// prompt is the first of a conversation on a process that has run one.
    async fn start(pid: u32, cwd: &Path) -> RawReused {
        use tokio::io::AsyncWriteExt;
        let mut spare = RawSpare::park_like(pid).await;
        let claim = json!({"type": "control_request", "request_id": "claim",
            "request": {"subtype": "claim_session", "cwd": cwd}});
        spare
            .stdin
            .write_all(format!("{claim}\n").as_bytes())
            .await
            .expect("write");
        while let Some(line) = spare.lines.next_line().await.expect("read") {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if value["response"]["request_id"] == "claim" {
                assert_eq!(value["response"]["subtype"], "success", "{value}");
                break;
            }
        }
        let mut raw = RawReused { spare };
        raw.turn("warm-up run").await;
        raw.turn("/clear").await;
        raw
    }

    /// Writes `prompt` as a user line; times the first assistant message and the
    /// result.
    async fn turn(&mut self, prompt: &str) -> (Duration, Duration) {
        use tokio::io::AsyncWriteExt;
        let user = json!({"type": "user", "session_id": "", "parent_tool_use_id": null,
            "message": {"role": "user", "content": prompt}});
        let start = Instant::now();
        self.spare
            .stdin
            .write_all(format!("{user}\n").as_bytes())
            .await
            .expect("write");
        self.spare.read_turn(start).await
    }

    /// A timed prompt, then the untimed `/clear` that readies the next one.
    async fn ask_then_reset(&mut self, prompt: &str) -> (Duration, Duration) {
        let timed = self.turn(prompt).await;
        self.turn("/clear").await;
        timed
    }
}

/// Waits until every pool has its spare (or reset process) back: a refill starting a
/// CLI (about a CPU-second) must not run beside the next timed row, as it would not
/// on a service that is not saturated.
async fn settle(pools: &[&QueryPool]) {
    for pool in pools {
        assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    }
}

/// A directory no run used before, under the sandbox's working directory.
fn fresh_dir(sandbox: &Sandbox, name: &str) -> PathBuf {
    let dir = sandbox.cwd().join(name);
    std::fs::create_dir_all(&dir).expect("new working directory");
    dir
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let options = ClaudeCodeOptions::builder()
        .cli_path(cli_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .build()
        .expect("valid options");

    let mut table: Vec<(&str, Samples)> = Vec::new();

    // Interleave the ways round by round, so machine noise hits them alike.
    let mut cold = Samples::default();
    let mut warm = Samples::default();
    let mut warm_eager = Samples::default();
    let mut reuse = Samples::default();
    let mut client_turn = Samples::default();
    let mut cache_hit = Samples::default();
    let mut claimed_new_cwd = Samples::default();
    let mut claim = Samples::default();
    let mut cold_resume = Samples::default();
    let mut server_turn = Samples::default();
    let mut raw_claim = Samples::default();

    // Spares parked with `--await-claim`, claimed for a new working directory each run.
    let spare_pool = QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1));
    let client_pool = QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1));
    let server = match server_binary() {
        // The sandbox's CLI environment (first what must not leak in: it names
        // CLAUDE_CODE_CLI_PATH too), sessions kept hot, one minute to start.
        Some(binary) => Some(
            Server::start(&binary, sandbox.cwd(), Duration::from_secs(60), |command| {
                for key in sandbox.inherited_env_to_remove() {
                    command.env_remove(key);
                }
                command
                    .envs(sandbox.env())
                    .env("CLAUDE_CODE_CLI_PATH", cli_path())
                    .current_dir(sandbox.root());
            })
            .await,
        ),
        None => {
            eprintln!(
                "no server binary (BENCH_SERVER_BIN or target/release/claude-code-server): \
                 the server row is left out"
            );
            None
        }
    };
    let mut last_session: Option<String> = None;

    let warm_pool = QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1));
    let eager_pool = QueryPool::new(
        PoolConfig {
            refill_delay: Duration::ZERO,
            ..PoolConfig::default()
        }
        .prewarm(options.clone(), 1),
    );
    let reuse_pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 1,
            ..PoolConfig::default()
        }
        .reuse_processes(true)
        .prewarm(options.clone(), 1),
    );
    let client = ClaudeClient::connect(options.clone())
        .await
        .expect("client");
    let cache = ResponseCache::new(64 * 1024 * 1024, Duration::from_secs(600));
    cached_query(&cache, "cached prompt", options.clone())
        .await
        .expect("cache fill");

    // The reuse pool's first run is served by its prewarmed spare; only the runs after
    // it find a process reset with `/clear`. Run that one untimed.
    reuse_pool
        .query("warm-up run", options.clone())
        .await
        .expect("reuse warm-up")
        .collect_all()
        .await
        .expect("reuse warm-up");
    let all = [
        &warm_pool,
        &eager_pool,
        &reuse_pool,
        &spare_pool,
        &client_pool,
    ];
    let mut raw_reused = RawReused::start(spare_pool.warm_pids()[0], sandbox.cwd()).await;
    let mut raw_reuse = Samples::default();
    for round in 0..runs {
        let prompt = format!("benchmark prompt {round}");
        // The floor's spare parks now, like the pool's, which parked during an earlier
        // round: both are idle when claimed.
        settle(&all).await;
        let raw_spare = RawSpare::park_like(spare_pool.warm_pids()[0]).await;

        settle(&all).await;
        let start = Instant::now();
        let (first, result) = time_stream(start, query(prompt.as_str(), options.clone())).await;
        cold.push(first, result);

        settle(&all).await;
        let start = Instant::now();
        let run = warm_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("warm");
        assert!(run.was_warm());
        let (first, result) = time_stream(start, run).await;
        warm.push(first, result);

        settle(&all).await;
        let start = Instant::now();
        let run = eager_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("warm");
        assert!(run.was_warm());
        let (first, result) = time_stream(start, run).await;
        warm_eager.push(first, result);

        settle(&all).await;
        let start = Instant::now();
        let run = reuse_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("reuse");
        assert_eq!(run.served(), claude_code_sdk::Served::Reused);
        let (first, result) = time_stream(start, run).await;
        reuse.push(first, result);

        settle(&all).await;
        let (first, result) = raw_reused.ask_then_reset(prompt.as_str()).await;
        raw_reuse.push(first, result);

        settle(&all).await;
        let start = Instant::now();
        client.query(prompt.as_str()).await.expect("client query");
        let (first, result) = time_stream(start, client.receive_response()).await;
        client_turn.push(first, result);

        let start = Instant::now();
        let messages = cached_query(&cache, "cached prompt", options.clone())
            .await
            .expect("cache hit");
        let at = start.elapsed();
        assert!(messages.iter().any(Message::is_result));
        cache_hit.push(at, at);

        let here = options
            .to_builder()
            .cwd(fresh_dir(&sandbox, &format!("query-{round}")))
            .build()
            .expect("valid options");
        settle(&all).await;
        let start = Instant::now();
        let run = spare_pool
            .query(prompt.as_str(), here)
            .await
            .expect("claimed");
        assert_eq!(run.served(), claude_code_sdk::Served::Claimed);
        let (first, result) = time_stream(start, run).await;
        claimed_new_cwd.push(first, result);

        settle(&all).await;
        let (first, result) = raw_spare
            .claim_and_ask(&fresh_dir(&sandbox, &format!("raw-{round}")), &prompt)
            .await;
        raw_claim.push(first, result);

        let here = options
            .to_builder()
            .cwd(fresh_dir(&sandbox, &format!("client-{round}")))
            .build()
            .expect("valid options");
        settle(&all).await;
        let start = Instant::now();
        let claimed = client_pool.client(here).await.expect("claimed client");
        let at = start.elapsed();
        claim.push(at, at);
        claimed.close().await.expect("close");

        if let Some(session) = last_session.take() {
            let resumed = options.to_builder().resume(session).build().expect("valid");
            settle(&all).await;
            let start = Instant::now();
            let (first, result) = time_stream(start, query(prompt.as_str(), resumed)).await;
            cold_resume.push(first, result);
        }
        let messages = query(prompt.as_str(), options.clone())
            .collect_all()
            .await
            .expect("a conversation to resume");
        last_session = messages
            .iter()
            .find_map(|m| m.session_id().map(str::to_owned));

        if let Some(server) = &server {
            let started = server
                .post(
                    "/v1/sessions",
                    json!({"prompt": format!("first turn {round}")}),
                )
                .await;
            let id = started["session"]
                .as_str()
                .expect("a session id")
                .to_owned();
            let start = Instant::now();
            let answer = server
                .post(
                    &format!("/v1/sessions/{id}/messages"),
                    json!({"prompt": prompt}),
                )
                .await;
            let at = start.elapsed();
            assert!(answer["result"].is_object(), "{answer}");
            server_turn.push(at, at);
            server.delete(&format!("/v1/sessions/{id}")).await;
        }
    }
    table.push(("`query()` cold (new process)", cold));
    table.push(("`QueryPool` warm process (refill after 250 ms)", warm));
    table.push(("`QueryPool` warm process (refill at once)", warm_eager));
    table.push(("`QueryPool` reused process (after `/clear`)", reuse));
    table.push((
        "the CLI's floor for that: a copy of the spare, claimed once, prompt and `/clear` written by hand",
        raw_reuse,
    ));
    table.push((
        "`QueryPool` claimed spare, new working directory",
        claimed_new_cwd,
    ));
    table.push((
        "the CLI's floor for that: a copy of the spare, claim + prompt written by hand",
        raw_claim,
    ));
    table.push((
        "the claim itself (`QueryPool::client`, new working directory, no prompt)",
        claim,
    ));
    table.push(("`ClaudeClient` next turn (hot process)", client_turn));
    table.push((
        "`query()` cold `--resume` turn (a server follow-up before the pool)",
        cold_resume,
    ));
    if server.is_some() {
        table.push((
            "server session's second turn (`POST /v1/sessions/{id}/messages`, whole answer)",
            server_turn,
        ));
    }
    table.push(("`ResponseCache` hit", cache_hit));

    println!("Runs per row: {runs} (interleaved round by round)\n");
    println!("| way | first assistant message, median | p90 | result, median | p90 |");
    println!("|---|---|---|---|---|");
    for (name, samples) in &table {
        println!(
            "| {name} | {} ms | {} ms | {} ms | {} ms |",
            ms(percentile(&samples.first, 0.5)),
            ms(percentile(&samples.first, 0.9)),
            ms(percentile(&samples.result, 0.5)),
            ms(percentile(&samples.result, 0.9)),
        );
    }
    let stats = cache.stats();
    println!("\ncache: {} hits, {} misses", stats.hits, stats.misses);
    println!(
        "pools: warm {:?}; reuse {:?}",
        warm_pool.stats(),
        reuse_pool.stats()
    );
    println!("pools: claimed spares {:?}", spare_pool.stats());
    client.close().await.expect("close");
    if let Some(server) = server {
        server.stop().await;
    }
}
