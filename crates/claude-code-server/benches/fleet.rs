//! `make bench`'s server and fleet figures (issues 10 and 11): prints a Markdown section
//! that tools/bench/run puts into BENCHMARKS.md between `<!-- fleet:begin -->` and
//! `<!-- fleet:end -->`.
//!
//! 1. **What the server adds** (issue 11, measure 7): the same warm work through one
//!    `claude-code-server` (alone, on SQLite, as `make serve` runs it) and through the
//!    SDK called directly, interleaved pair by pair with the order alternating, at a
//!    load the pool serves without queueing (one run at a time, each on a warm spare
//!    of both sides: the bench waits for both pools to be warm and idle before a pair).
//!    A pooled query: time to the first assistant message and to the result (`done`).
//!    A session's follow-up turn (a hot process on both sides): time to the result.
//!    Added = server minus direct, per pair; p50/p99 of those differences.
//! 2. **The fleet** (issue 10): the same total load (`FLEET_BENCH_RUNS` concurrent
//!    streamed runs, spread round-robin over the replicas) through 1, 2 and 3 replicas
//!    on one PostgreSQL database of the bench's own (dropped after): runs per second and
//!    p50/p99 time to the first event (the first assistant message) of a run.
//! 3. **Takeover**: a session's turn running on a replica that is killed with SIGKILL;
//!    the client asks the survivors for the next turn until one accepts it; the time
//!    from the kill to the first event of that continued turn on another replica.
//!
//! Environment: `FLEET_BENCH_PAIRS` (default 20 pooled-query pairs), `FLEET_BENCH_TURNS`
//! (default 100 session-turn pairs: cheap, and enough for a p99 that is not the maximum),
//! `FLEET_BENCH_RUNS` (default 24 runs per replica count), `FLEET_BENCH_KILLS`
//! (default 3 takeovers), `FLEET_BENCH_LEASE` (seconds, default 2), `DATABASE_URL`
//! (else 127.0.0.1:5432; without PostgreSQL the fleet rows say so),
//! `CLAUDE_CODE_CLI_PATH` (the CLI), `FLEET_BENCH_ONLY` (a comma-separated subset of
//! `added`, `fleet`, `takeover`), `FLEET_BENCH_SERVER_LOG` (the servers' `RUST_LOG`, to
//! profile them: e.g. `info,sqlx::query=debug`; each server's first MiB of log is then
//! written to `target/bench/fleet-<replica>.log`), `FLEET_BENCH_SERVER_BIN` (another
//! `claude-code-server` binary to measure instead of this build's, e.g. an older
//! commit's, for an A/B of two builds against the same direct baseline). Timing goes
//! here, never into tests.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use claude_code_sdk::{ClaudeClient, ClaudeCodeOptions, PermissionMode, PoolConfig, QueryPool};
use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, ServerProcess, cli_path};
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The bench's bearer token (an operator's: `/metrics` answers it).
const TOKEN: &str = "fleet-bench-token";
/// The longest any single step may take before the bench gives up on it.
const HANG: Duration = Duration::from_secs(120);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (nearest rank) of `values`.
fn pct(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_owned()
    } else if v.abs() < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU time (user + system) process `pid` has used, in ms (`/proc/<pid>/stat`; the
/// kernel counts it in ticks of 10 ms).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the
    // 14th and 15th of the line.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

/// One `claude-code-server` process.
struct Server {
    child: Option<tokio::process::Child>,
    pid: u32,
    url: String,
    id: String,
    log: claude_code_testkit::ServerLog,
}

/// Where a server keeps its state.
enum Store<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

impl Server {
    async fn start(sandbox: &Sandbox, id: &str, store: Store<'_>, extra: &[&str]) -> Server {
        let binary = std::env::var_os("FLEET_BENCH_SERVER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_claude-code-server").into());
        let mut command = tokio::process::Command::new(binary);
        sandbox.configure(command.as_std_mut());
        // A home of its own per replica: a conversation moves only through the database.
        let home = sandbox.root().join(format!("home-{id}"));
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        command
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .env(
                "RUST_LOG",
                std::env::var("FLEET_BENCH_SERVER_LOG")
                    .unwrap_or_else(|_| "warn,claude_code_server=info".to_owned()),
            )
            .env_remove("DATABASE_URL")
            .args(["--bind", "127.0.0.1:0", "--operator-token", TOKEN])
            .args(["--replica-id", id, "--request-timeout", "120"])
            // The sandbox's settings for the CLI, as the direct side has them.
            .args([
                "--pass-env",
                "CLAUDE_CODE_TMPDIR,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,CLAUDE_CODE_MAX_RETRIES,DISABLE_*,XDG_*",
            ])
            .arg("--project-root")
            .arg(sandbox.cwd());
        match store {
            Store::Sqlite(dir) => command.arg("--data-dir").arg(dir),
            Store::Postgres(url) => command.args(["--database-url", url]),
        };
        command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let server = ServerProcess::spawn(command, HANG)
            .await
            .unwrap_or_else(|err| panic!("server {id} did not start: {err}"));
        Server {
            pid: server.child.id().expect("a pid"),
            url: server.url(),
            child: Some(server.child),
            id: id.to_owned(),
            log: server.log,
        }
    }

    /// This server's `/metrics` text.
    async fn metrics(&self, http: &reqwest::Client) -> String {
        http.get(format!("{}/metrics", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// This server's CLI processes, warm ones, busy ones (from `/metrics`).
    async fn pool(&self, http: &reqwest::Client) -> (u64, u64) {
        let text = self.metrics(http).await;
        let value = |state: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("ccs_pool_processes{") && l.contains(&format!("\"{state}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        (value("warm"), value("busy"))
    }

    /// Waits until this server has `warm` idle processes and none busy.
    async fn wait_warm(&self, http: &reqwest::Client, warm: u64) {
        let deadline = Instant::now() + HANG;
        loop {
            let (w, busy) = self.pool(http).await;
            if w >= warm && busy == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "server {} never warm", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill9(&mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        self.child = None;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
        if std::env::var_os("FLEET_BENCH_SERVER_LOG").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("fleet-{}.log", self.id)), self.log.text());
        }
    }
}

/// What one streamed run gave: time to its first assistant message, to `done`, and
/// whether every event came once, in order, ending with `done`.
struct Streamed {
    first: Duration,
    result: Duration,
    done: Duration,
    complete: bool,
}

/// Reads a server-sent event stream; `first` is the first `message` event that carries
/// an assistant message.
async fn read_stream(start: Instant, response: reqwest::Response) -> Streamed {
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut first = None;
    let mut result = None;
    let mut ids: Vec<i64> = Vec::new();
    let mut last_event = String::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut event = "message";
            let mut data = "";
            let mut id = None;
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
            }
            if let Some(id) = id {
                ids.push(id);
                last_event = event.to_owned();
            }
            if event == "message" && first.is_none() && data.contains("\"assistant\"") {
                first = Some(start.elapsed());
            }
            if event == "message" && result.is_none() && data.contains("\"type\":\"result\"") {
                result = Some(start.elapsed());
            }
        }
    }
    let done = start.elapsed();
    let in_order = ids.windows(2).all(|w| w[1] == w[0] + 1);
    Streamed {
        first: first.unwrap_or(done),
        result: result.unwrap_or(done),
        done,
        complete: in_order && last_event == "done",
    }
}

async fn stream(http: &reqwest::Client, server: &Server, body: Value) -> Option<Streamed> {
    let start = Instant::now();
    let response = http
        .post(format!("{}/v1/query/stream", server.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        eprintln!("stream through {}: {}", server.id, response.status());
        return None;
    }
    Some(read_stream(start, response).await)
}

async fn post(http: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(format!("{}{path}", server.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(http: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let response = http
        .get(format!("{}{path}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Times a direct SDK stream: first assistant message, result, end of the stream.
async fn time_direct<S>(start: Instant, mut run: S) -> (Duration, Duration, Duration)
where
    S: futures::Stream<Item = claude_code_sdk::Result<claude_code_sdk::Message>> + Unpin,
{
    let mut first = None;
    let mut result = None;
    while let Some(item) = run.next().await {
        let message = item.expect("a direct message");
        if first.is_none() && message.as_assistant().is_some() {
            first = Some(start.elapsed());
        }
        if message.is_result() {
            result = Some(start.elapsed());
        }
    }
    let at = start.elapsed();
    (first.unwrap_or(at), result.unwrap_or(at), at)
}

fn echo() -> Rule {
    Rule::any()
        .reply_with(|req| Reply::text(format!("Noted: {}", req.prompt().unwrap_or_default())))
}

/// The options of a server run that chooses nothing (readOnly, 10 turns), called
/// directly: the same CLI flags the server's spares are started with.
fn direct_options(sandbox: &Sandbox) -> ClaudeCodeOptions {
    ClaudeCodeOptions::builder()
        .cli_path(cli_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .permission_mode(PermissionMode::ReadOnly)
        .max_turns(10)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("valid options")
}

/// Per-pair samples: server, direct.
#[derive(Default)]
struct Pairs {
    server: Vec<f64>,
    direct: Vec<f64>,
}

impl Pairs {
    fn push(&mut self, server: Duration, direct: Duration) {
        self.server.push(ms(server));
        self.direct.push(ms(direct));
    }

    fn added(&self) -> Vec<f64> {
        self.server
            .iter()
            .zip(&self.direct)
            .map(|(s, d)| s - d)
            .collect()
    }

    fn row(&self, label: &str) -> String {
        let added = self.added();
        // Judged whatever the load: both sides of a pair run under the same load, and
        // the load average (the bench's own CLIs keep it near the core count) is
        // printed beside the table.
        let verdict = if added.is_empty() {
            String::new()
        } else {
            let (p50, p99) = (pct(&added, 50.0), pct(&added, 99.0));
            format!(
                "{} / {}",
                if p50 < 5.0 { "met" } else { "**missed**" },
                if p99 < 20.0 { "met" } else { "**missed**" }
            )
        };
        format!(
            "| {label} | {} / {} | {} / {} | **{}** / **{}** | {} | {verdict} |",
            fmt_ms(pct(&self.server, 50.0)),
            fmt_ms(pct(&self.server, 99.0)),
            fmt_ms(pct(&self.direct, 50.0)),
            fmt_ms(pct(&self.direct, 99.0)),
            fmt_ms(pct(&added, 50.0)),
            fmt_ms(pct(&added, 99.0)),
            added.len(),
        )
    }
}

/// Part 1: what the server adds over the SDK called directly.
async fn added_latency(out: &mut Vec<String>, pairs: usize, turns: usize) {
    let mock = MockAnthropic::start().await;
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let http = reqwest::Client::new();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        &sandbox,
        "alone",
        Store::Sqlite(data.path()),
        &["--prewarm", "1", "--max-concurrent", "4"],
    )
    .await;
    let options = direct_options(&sandbox);
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 4,
            ..PoolConfig::default()
        }
        .prewarm(options.clone(), 1),
    );
    let direct_warm = |pool: QueryPool| async move {
        assert!(pool.wait_warm(1, HANG).await, "the direct pool never warm");
        while pool.stats().active > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // A pooled query on a warm spare.
    let mut first = Pairs::default();
    let mut result = Pairs::default();
    let mut over = Pairs::default();
    let mut incomplete = 0;
    for i in 0..pairs + 2 {
        let prompt = format!("pooled query {i}");
        let mut s = None;
        let mut d = None;
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            // Before each side, both pools are warm and idle: the spare the other
            // side just used is replaced (a CLI start, about half a CPU-second) before
            // this side's clock starts, not while it runs.
            server.wait_warm(&http, 2).await;
            direct_warm(pool.clone()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if side == 0 {
                s = stream(&http, &server, json!({"prompt": prompt})).await;
            } else {
                let start = Instant::now();
                let run = pool.query(prompt.as_str(), options.clone()).await.unwrap();
                d = Some(time_direct(start, run).await);
            }
        }
        // The first two pairs warm both sides' caches up; they are not counted.
        if i < 2 {
            continue;
        }
        match (s, d) {
            (Some(s), Some((df, dr, de))) if s.complete => {
                first.push(s.first, df);
                result.push(s.result, dr);
                over.push(s.done, de);
            }
            _ => incomplete += 1,
        }
    }
    eprintln!(
        "added latency, pooled queries: {} pairs",
        first.added().len()
    );
    // The server's own figure for the last hop: an event's append to the log to its
    // delivery to the client (`ccs_event_lag_seconds`), summed over those runs.
    let metrics = server.metrics(&http).await;
    let figure = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("ccs_event_lag_seconds_{suffix}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (lag_sum, lag_count) = (figure("sum"), figure("count"));

    // A session's follow-up turn on a hot process: server session vs a connected client,
    // and vs a connected client that keeps its transcript in a SQLite store as the
    // server does (`--session-mirror`, the result held until the transcript is stored):
    // how much of what the server adds is that durability.
    let mut turn = Pairs::default();
    let mut turn_stored = Pairs::default();
    let store_dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        claude_code_sdk::store::SqliteSessionStore::open_with(
            store_dir.path().join("sessions.db"),
            claude_code_sdk::store::Durability::ProcessCrash,
        )
        .await
        .unwrap(),
    );
    let stored_options = options.to_builder().session_store(store).build().unwrap();
    let per_session = 10;
    // CPU used during the turns (sessions' starts and ends left out): the server's, and
    // the bench process's (the HTTP client and the direct SDK side).
    let mut cpu = (0.0, 0.0);
    let mut cpu_turns = 0;
    let mut done = 0;
    while done < turns {
        server.wait_warm(&http, 1).await;
        let (status, started) = post(
            &http,
            &server,
            "/v1/sessions",
            json!({"prompt": "first turn"}),
        )
        .await;
        assert_eq!(status, 201, "{started}");
        let session = started["session"].as_str().unwrap().to_owned();
        let client = ClaudeClient::connect(options.clone()).await.unwrap();
        client.query("first turn").await.unwrap();
        time_direct(Instant::now(), client.receive_response()).await;
        let stored_client = ClaudeClient::connect(stored_options.clone()).await.unwrap();
        stored_client.query("first turn").await.unwrap();
        time_direct(Instant::now(), stored_client.receive_response()).await;
        // The server has replaced the spare its session took before the turns start.
        server.wait_warm(&http, 1).await;
        let cpu_before = (cpu_ms(server.pid), cpu_ms(std::process::id()));
        let mut measured = 0;
        for k in 0..per_session {
            if done >= turns {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let prompt = format!("follow-up {done}");
            let mut s = Duration::ZERO;
            let mut d = Duration::ZERO;
            let mut ds = Duration::ZERO;
            let mut ok = true;
            // The three sides in a rotating order.
            for side in [0, 1, 2].map(|side| (side + k) % 3) {
                let start = Instant::now();
                if side == 0 {
                    let (status, answer) = post(
                        &http,
                        &server,
                        &format!("/v1/sessions/{session}/messages"),
                        json!({"prompt": prompt}),
                    )
                    .await;
                    s = start.elapsed();
                    ok &= status == 200 && answer["result"].is_object();
                } else if side == 1 {
                    client.query(prompt.as_str()).await.unwrap();
                    d = time_direct(start, client.receive_response()).await.1;
                } else {
                    stored_client.query(prompt.as_str()).await.unwrap();
                    ds = time_direct(start, stored_client.receive_response()).await.1;
                }
            }
            measured += 1;
            if ok {
                turn.push(s, d);
                turn_stored.push(s, ds);
            } else {
                incomplete += 1;
            }
            done += 1;
        }
        cpu.0 += cpu_ms(server.pid) - cpu_before.0;
        cpu.1 += cpu_ms(std::process::id()) - cpu_before.1;
        cpu_turns += measured;
        client.close().await.unwrap();
        stored_client.close().await.unwrap();
        let _ = http
            .delete(format!("{}/v1/sessions/{session}", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await;
    }
    eprintln!("added latency, session turns: {} pairs", turn.added().len());

    out.push("### What the server adds over calling the SDK directly (issue 11, measure 7)".into());
    out.push(String::new());
    out.push(format!(
        "The same warm work, interleaved pair by pair (the order alternating), one run at a time: \
         `claude-code-server` alone on SQLite (`--prewarm 1 --max-concurrent 4`, over loopback HTTP, \
         SSE for the query, JSON for the session turn) against a `QueryPool` with one spare of the \
         same options (and a connected `ClaudeClient` for the session turn; a second one that keeps \
         its transcript in a SQLite store as the server does, `--session-mirror` with the result \
         held until the transcript is stored, is the last row's direct side), all against the \
         same mock model; before each side of a pair the bench waits until both pools are warm and \
         idle (a spare used by one side is replaced before the other side's clock starts). \
         Added = server − direct of each pair; p99 is the nearest rank. Load average {} at the end.",
        load()
    ));
    out.push(String::new());
    out.push("| measure | server p50 / p99 | direct p50 / p99 | **added** p50 / p99 | pairs | target (under 5 ms / 20 ms) |".into());
    out.push("|---|---|---|---|---|---|".into());
    out.push(first.row("pooled query on a warm spare: first assistant message"));
    out.push(result.row("pooled query on a warm spare: the result message"));
    out.push(over.row("pooled query on a warm spare: run over (`done` / the direct stream's end)"));
    out.push(turn.row("session follow-up turn on a hot process: result"));
    out.push(turn_stored.row(
        "the same turn against a direct client that keeps its transcript in a SQLite store, as the server does",
    ));
    out.push(String::new());
    out.push(format!(
        "The server's own figure for its last hop (`ccs_event_lag_seconds`, from an event's \
         append to the log to its delivery to the client), over the pooled queries' {lag_count:.0} \
         events: mean {}. With a load average near or above the 2 cores, each hop between \
         processes and threads (HTTP client → server → its database thread → the CLI and back) \
         can wait for a core, so what the server adds grows with the load: compare runs by \
         their load average. `FLEET_BENCH_SERVER_LOG=info,sqlx::query=debug,tower_http=debug` \
         writes each server's log with every statement's time (target/bench/fleet-*.log).",
        fmt_ms(lag_sum / lag_count * 1000.0)
    ));
    out.push(String::new());
    let per_turn = |ms: f64| fmt_ms(ms / f64::from(cpu_turns.max(1)));
    out.push(format!(
        "CPU per session turn (user + system, `/proc`, over the {cpu_turns} turns): the server \
         {}, the bench process (its HTTP client and the direct SDK sides together) {}. Where the \
         server's CPU goes (a `perf` profile: mostly hand-offs between threads, each SQLite \
         statement a round trip to sqlx's connection thread): the notes on the targets above.",
        per_turn(cpu.0),
        per_turn(cpu.1)
    ));
    out.push(String::new());
    if incomplete > 0 {
        out.push(format!(
            "{incomplete} pair(s) left out: a server stream not complete and in order, or a turn refused."
        ));
        out.push(String::new());
    }
    drop(server);
    drop(pool);
}

/// Part 2: the same load through 1, 2 and 3 replicas.
async fn fleet_scaling(out: &mut Vec<String>, db: &TestDatabase, runs: usize) {
    let mock = MockAnthropic::start().await;
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(runs)
        .build()
        .unwrap();
    out.push("### The fleet: the same load through 1, 2 and 3 replicas (issue 10)".into());
    out.push(String::new());
    out.push(format!(
        "{runs} streamed queries at once (`POST /v1/query/stream`, spread round-robin over the \
         replicas), each replica `--max-concurrent 4 --prewarm 1`, all on one PostgreSQL database \
         of the bench's own (dropped after); time to the first event = to the first assistant \
         message. **This machine has {} cores**: every CLI costs about half a CPU-second to start, \
         so more replicas here only share the same cores and runs per second cannot scale; on \
         separate hosts each replica brings its own.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    out.push(String::new());
    out.push("| replicas | runs/s | first event p50 | first event p99 | wall | complete and in order | load average after |".into());
    out.push("|---|---|---|---|---|---|---|".into());
    for n in 1..=3usize {
        let mut servers = Vec::new();
        for k in 0..n {
            servers.push(
                Server::start(
                    &sandbox,
                    &format!("scale{n}-{k}"),
                    Store::Postgres(db.url()),
                    &[
                        "--prewarm",
                        "1",
                        "--max-concurrent",
                        "4",
                        "--max-queued",
                        "256",
                    ],
                )
                .await,
            );
        }
        for s in &servers {
            s.wait_warm(&http, 2).await;
        }
        let start = Instant::now();
        let results =
            futures::future::join_all(
                (0..runs).map(|i| {
                    let server = &servers[i % n];
                    let http = &http;
                    async move {
                        stream(http, server, json!({"prompt": format!("fleet run {i}")})).await
                    }
                }),
            )
            .await;
        let wall = start.elapsed();
        let complete = results
            .iter()
            .filter(|r| r.as_ref().is_some_and(|r| r.complete))
            .count();
        let firsts: Vec<f64> = results.iter().flatten().map(|r| ms(r.first)).collect();
        out.push(format!(
            "| {n} | {:.2} | {} | {} | {:.1} s | {complete} of {runs} | {} |",
            runs as f64 / wall.as_secs_f64(),
            fmt_ms(pct(&firsts, 50.0)),
            fmt_ms(pct(&firsts, 99.0)),
            wall.as_secs_f64(),
            load()
        ));
        eprintln!("fleet of {n}: {:.1} s", wall.as_secs_f64());
        drop(servers);
        // Let the stopped replicas' CLIs go before the next size starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    out.push(String::new());
}

/// Part 3: a replica killed mid-turn; the time until the session's next turn shows its
/// first event on another replica.
async fn takeover(out: &mut Vec<String>, db: &TestDatabase, kills: usize, lease: &str) {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("SLOW-TURN").steps([
        Reply::text("Looking around first.").then_tool_use("Glob", json!({"pattern": "*.md"})),
        Reply::text("finished").delay(Duration::from_secs(600)),
    ]));
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let http = reqwest::Client::new();
    let extra = ["--prewarm", "1", "--lease", lease];
    let mut servers = vec![
        Server::start(&sandbox, "take-a", Store::Postgres(db.url()), &extra).await,
        Server::start(&sandbox, "take-b", Store::Postgres(db.url()), &extra).await,
    ];
    let mut to_first = Vec::new();
    let mut to_interrupted = Vec::new();
    for round in 0..kills {
        let (status, started) = post(
            &http,
            &servers[0],
            "/v1/sessions",
            json!({"prompt": format!("first turn {round}")}),
        )
        .await;
        assert_eq!(status, 201, "{started}");
        let session = started["session"].as_str().unwrap().to_owned();
        // The slow turn, submitted through replica 0, runs where it is claimed.
        let request = http
            .post(format!("{}/v1/sessions/{session}/messages", servers[0].url))
            .bearer_auth(TOKEN)
            .json(&json!({"prompt": "SLOW-TURN please"}));
        let pending = tokio::spawn(async move { request.send().await });
        let deadline = Instant::now() + HANG;
        let run = loop {
            assert!(Instant::now() < deadline, "the slow turn never ran");
            let (_, history) = get(&http, &servers[1], &format!("/v1/sessions/{session}")).await;
            let running = history["turns"].as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["state"] == "running")
                    .and_then(|t| t["run"].as_str().map(str::to_owned))
            });
            let stepped = mock
                .requests()
                .iter()
                .any(|r| r.mentions("SLOW-TURN") && r.step() == 1);
            if let (Some(run), true) = (running, stepped) {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, row) = get(&http, &servers[1], &format!("/v1/runs/{run}")).await;
        let victim_id = row["replica"].as_str().unwrap().to_owned();
        let victim = servers.iter().position(|s| s.id == victim_id).unwrap();
        let other = 1 - victim;
        let killed = Instant::now();
        servers[victim].kill9();
        // The slow turn's own request is left alone: dropping it would cancel the run
        // through the survivor when it went there, not let its lease run out.
        drop(pending);
        // The client retries the next turn through the survivor until it is accepted
        // (409 while the killed replica's lease holds the turn).
        let survivor = &servers[other];
        let mut accepted: Option<tokio::task::JoinHandle<u16>> = None;
        let next = loop {
            assert!(killed.elapsed() < HANG, "the session never continued");
            let (_, history) = get(&http, survivor, &format!("/v1/sessions/{session}")).await;
            let turns = history["turns"].as_array().cloned().unwrap_or_default();
            if to_interrupted.len() == round
                && turns
                    .iter()
                    .any(|t| t["run"] == run.as_str() && t["state"] == "interrupted")
            {
                to_interrupted.push(ms(killed.elapsed()));
            }
            if turns.len() >= 3
                && let Some(next) = turns
                    .last()
                    .and_then(|t| t["run"].as_str())
                    .filter(|r| *r != run)
            {
                break next.to_owned();
            }
            if accepted
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
            {
                // The client asks again (the first tries get 409 while the killed
                // replica's lease holds the turn); an accepted turn runs in its task
                // (dropping a JSON request would cancel its run).
                let request = http
                    .post(format!("{}/v1/sessions/{session}/messages", survivor.url))
                    .bearer_auth(TOKEN)
                    .json(&json!({"prompt": "and now?"}));
                accepted = Some(tokio::spawn(async move {
                    request
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Its first event, read from the log through the survivor.
        let response = http
            .get(format!("{}/v1/runs/{next}/events", survivor.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let mut body = response.bytes_stream();
        let mut seen = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: message") || seen.contains("event:message") {
                break;
            }
        }
        to_first.push(ms(killed.elapsed()));
        if to_interrupted.len() == round {
            to_interrupted.push(f64::NAN);
        }
        eprintln!("takeover {round}: {:.0} ms", to_first[round]);
        // The killed replica comes back with its id for the next round.
        servers[victim] =
            Server::start(&sandbox, &victim_id, Store::Postgres(db.url()), &extra).await;
    }
    drop(servers);
    out.push("### A replica killed mid-turn: its session continuing elsewhere (issue 10)".into());
    out.push(String::new());
    out.push(format!(
        "Two replicas on PostgreSQL, `--lease {lease}`. A session's turn is running (its CLI waits on \
         the model) when the replica running it gets SIGKILL; the client then asks the survivor for \
         the next turn whenever its last try is answered (409 while the dead replica's lease still holds the turn) and \
         reads the new turn's events. Time from the kill: until the killed turn is marked \
         `interrupted` (the session polled every ~20 ms), and until the first event of the continued turn on \
         the survivor (resuming the conversation from the database's session store). The lease \
         dominates: a takeover cannot come before it runs out (default `--lease 10`)."
    ));
    out.push(String::new());
    out.push("| measure | median | min | max | n |".into());
    out.push("|---|---|---|---|---|".into());
    for (label, v) in [
        ("kill → turn marked interrupted", &to_interrupted),
        (
            "kill → first event of the continued turn elsewhere",
            &to_first,
        ),
    ] {
        let v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        out.push(format!(
            "| {label} | {} | {} | {} | {} |",
            fmt_ms(pct(&v, 50.0)),
            fmt_ms(v.iter().copied().fold(f64::NAN, f64::min)),
            fmt_ms(v.iter().copied().fold(f64::NAN, f64::max)),
            v.len()
        ));
    }
    out.push(String::new());
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the arguments.
    let pairs = env_usize("FLEET_BENCH_PAIRS", 20);
    let turns = env_usize("FLEET_BENCH_TURNS", 100);
    let runs = env_usize("FLEET_BENCH_RUNS", 24);
    let kills = env_usize("FLEET_BENCH_KILLS", 3);
    let lease = std::env::var("FLEET_BENCH_LEASE").unwrap_or_else(|_| "2".to_owned());
    let only = std::env::var("FLEET_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    let mut out = Vec::new();
    out.push("## The server and the fleet (issues 10 and 11)".into());
    out.push(String::new());
    out.push(format!(
        "Run of {}: `make bench` (this part: `cargo bench -p claude-code-server --bench fleet`, \
         FLEET_BENCH_PAIRS={pairs} FLEET_BENCH_TURNS={turns} FLEET_BENCH_RUNS={runs} FLEET_BENCH_KILLS={kills}); load average \
         {} at the start; the real CLI against the testkit's mock model.",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        load()
    ));
    out.push(String::new());
    if wanted("added") {
        added_latency(&mut out, pairs, turns).await;
    }
    if wanted("fleet") || wanted("takeover") {
        match TestDatabase::create().await {
            Some(db) => {
                if wanted("fleet") {
                    fleet_scaling(&mut out, &db, runs).await;
                }
                if wanted("takeover") {
                    takeover(&mut out, &db, kills, &lease).await;
                }
            }
            None => {
                out.push(
                    "No PostgreSQL reachable (DATABASE_URL, else 127.0.0.1:5432): no fleet rows."
                        .into(),
                );
                out.push(String::new());
            }
        }
    }
    println!("{}", out.join("\n"));
}
