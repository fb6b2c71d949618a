//! Faults of the host under the server binary, each ending typed within a bound, with
//! nothing lost and no CLI process left (counted by the run marker the server's reaper
//! looks for):
//!
//! | fault | how it is made | what must hold |
//! |---|---|---|
//! | the database restarted mid-run | a private PostgreSQL cluster (this test's alone) stopped with `pg_ctl -m fast` while a run waits on the model, started again seconds later | while it is down: `/health` answers, requests get `503` with `Retry-After`; the run in flight ends in a final state, its events before the outage kept in order; both replicas serve again without a restart |
//! | the disk full for the SQLite store | the server started with `RLIMIT_FSIZE` just above its files' sizes (SIGXFSZ ignored, so a write past it fails with `EFBIG`); and, as root, its data directory on a small tmpfs filled but for 96 KiB (`ENOSPC`) | requests whose writes do not fit answer `507` or `503`, never hang; restarted without the limit, the server reads back every run it had |
//! | a clock jump | `libfaketime` (`faketime` from apt) under one replica, its wall clock moved an hour ahead, then an hour behind, during runs | no run is taken over by the replica ahead, none lost by the replica behind: both runs succeed |
//! | a replica SIGKILLed mid-run | tests/fleet.rs (`fleet_replica_killed_mid_run`) | its figures (time to takeover, CLIs left) go to `RELIABILITY_LOG` from there |
//!
//! Each test appends its figures to `RELIABILITY_LOG` when set; no test asserts a time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox};
use common::{HANG, PrivatePg, Server, clis_left, eventually, record};
use serde_json::{Value, json};

const TOKEN: &str = "host-faults-token";

/// How long a finished run's CLIs get to be gone.
const GONE: Duration = Duration::from_secs(20);

/// The server binary for `sandbox`, as replica `id`, with its token and a short lease.
fn server_command(sandbox: &Sandbox, id: &str) -> tokio::process::Command {
    let mut command = common::server_command(sandbox, id);
    command.args(["--token", TOKEN, "--lease", "2", "--request-timeout", "120"]);
    command
}

/// The mock rule of a run that shows a message, then waits `wait` in its second step.
fn long_turn(tag: &str, wait: Duration) -> Rule {
    Rule::prompt_contains(tag).steps([
        Reply::text(format!("Looking around first ({tag})."))
            .then_tool_use("Glob", json!({"pattern": "*.md"})),
        Reply::text(format!("finished {tag}")).delay(wait),
    ])
}

fn echo() -> Rule {
    Rule::any()
        .reply_with(|req| Reply::text(format!("Noted: {}", req.prompt().unwrap_or_default())))
}

struct Client {
    http: reqwest::Client,
}

/// One answer: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Client {
    fn new() -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    async fn get(&self, server: &Server, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", server.url)))
            .await
    }

    async fn query(&self, server: &Server, prompt: &str) -> Answer {
        self.send(
            self.http
                .post(format!("{}/v1/query", server.url))
                .json(&json!({ "prompt": prompt })),
        )
        .await
    }

    /// Starts a streamed run through `server`; its id, and a task reading it to the end.
    async fn stream(
        &self,
        server: &Server,
        prompt: &str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let response = self
            .http
            .post(format!("{}/v1/query/stream", server.url))
            .bearer_auth(TOKEN)
            .json(&json!({ "prompt": prompt }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let run = response.headers()["x-run-id"].to_str().unwrap().to_owned();
        let reader = tokio::spawn(async move {
            // Cut or whole: what the client saw.
            let mut seen = Vec::new();
            let mut body = response;
            while let Ok(Ok(Some(chunk))) = tokio::time::timeout(HANG, body.chunk()).await {
                seen.extend_from_slice(&chunk);
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        (run, reader)
    }

    /// The run's state row, polled until it is final.
    async fn final_run(&self, server: &Server, run: &str) -> Value {
        eventually("the run to end", || async {
            let answer = self.get(server, &format!("/v1/runs/{run}")).await;
            (answer.status == 200
                && !["queued", "claimed", "running"]
                    .contains(&answer.body["state"].as_str().unwrap_or("running")))
            .then_some(answer.body)
        })
        .await
    }

    /// The run's whole event log (it is over): `(seq, event, data)`.
    async fn log(&self, server: &Server, run: &str) -> Vec<(i64, String, Value)> {
        let response = self
            .http
            .get(format!("{}/v1/runs/{run}/events", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let text = tokio::time::timeout(HANG, response.text())
            .await
            .expect("hang guard: the log of a finished run did not end")
            .unwrap();
        parse_sse(&text)
    }
}

/// The events of an SSE body that carry an id.
fn parse_sse(text: &str) -> Vec<(i64, String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if let Some(id) = id {
            events.push((
                id,
                event,
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ));
        }
    }
    events
}

/// Sequence numbers 1, 2, 3, ...: none lost, none doubled.
fn assert_in_order(log: &[(i64, String, Value)]) {
    let seqs: Vec<i64> = log.iter().map(|(s, _, _)| *s).collect();
    let expected: Vec<i64> = (1..=i64::try_from(log.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "the event log has gaps or doubles");
}

// ------------------------------------------------------------------ the database restarted

#[tokio::test]
async fn the_database_restarted_mid_run_pauses_the_fleet_which_recovers_by_itself() {
    let Some(pg) = PrivatePg::start("pg-secret-Xq83") else {
        return;
    };
    let mock = MockAnthropic::start().await;
    mock.on(long_turn("OUTAGE", Duration::from_secs(6)));
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let spawn = |id: &str| {
        let mut command = server_command(&sandbox, id);
        command.args(["--database-url", &pg.url()]);
        Server::spawn(command)
    };
    let a = spawn("replica-a").await;
    let b = spawn("replica-b").await;
    let c = Client::new();
    assert_eq!(c.query(&a, "warm up").await.status, 200);

    let (run, reader) = c.stream(&a, "OUTAGE please").await;
    eventually("the run's long second step", || async {
        mock.requests()
            .iter()
            .any(|r| r.prompt().is_some_and(|p| p.contains("OUTAGE")) && r.step() == 1)
            .then_some(())
    })
    .await;
    let before = c.log(&b, &run).await.len();
    assert!(before > 0);

    pg.down();
    let down_at = Instant::now();
    // While it is down: liveness answers, requests are refused typed and at once.
    let mut refused = Vec::new();
    let mut health_ms: f64 = 0.0;
    while down_at.elapsed() < Duration::from_secs(5) {
        for server in [&a, &b] {
            let asked = Instant::now();
            let health = c.get(server, "/health").await;
            health_ms = health_ms.max(asked.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(health.status, 200, "liveness during the outage");
            let asked = Instant::now();
            let answer = c.query(server, "during the outage").await;
            refused.push((answer.status, asked.elapsed().as_secs_f64()));
            assert_eq!(answer.status, 503, "{}", answer.body);
            assert!(answer.retry_after.is_some(), "a 503 without Retry-After");
            assert_eq!(
                answer.body["error"]["kind"], "database_unavailable",
                "{}",
                answer.body
            );
            let ready = c.get(server, "/ready").await;
            assert_eq!(ready.status, 503, "ready during the outage: {}", ready.body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pg.up();
    let up_at = Instant::now();

    // The fleet recovers by itself: both replicas serve again.
    for server in [&a, &b] {
        eventually("a replica to serve again", || async {
            (c.query(server, "after the outage").await.status == 200).then_some(())
        })
        .await;
    }
    let recovered = up_at.elapsed().as_secs_f64();

    // The run in flight ends in a final state; what it logged before is kept, in order.
    let row = c.final_run(&a, &run).await;
    let ended = down_at.elapsed().as_secs_f64();
    let state = row["state"].as_str().unwrap().to_owned();
    assert!(
        ["succeeded", "interrupted", "failed"].contains(&state.as_str()),
        "{row}"
    );
    let log = c.log(&b, &run).await;
    assert!(log.len() >= before, "events of the run were lost");
    assert_in_order(&log);
    assert!(
        log.iter()
            .any(|(_, _, d)| d.to_string().contains("Looking around first (OUTAGE).")),
        "{log:?}"
    );
    let last = log.last().unwrap();
    assert!(matches!(last.1.as_str(), "done" | "error"), "{last:?}");
    let client_saw = tokio::time::timeout(HANG, reader).await.unwrap().unwrap();
    assert!(client_saw.contains("Looking around first (OUTAGE)."));

    let left = clis_left(a.pid, GONE).await.len() + clis_left(b.pid, GONE).await.len();
    assert_eq!(left, 0, "CLI processes left after the outage");
    let slowest_refusal = refused.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    record(
        "server: database restarted mid-run",
        &format!("run {state}; requests 503 + Retry-After while down"),
        ended,
        left,
        json!({
            "refused": refused.len(),
            "slowest_refusal_seconds": slowest_refusal,
            "health_max_ms": health_ms,
            "recovered_seconds_after_restart": recovered,
        }),
    );
    eprintln!(
        "database restart: run {state}; {} requests refused (slowest {slowest_refusal:.2} s), \
         /health max {health_ms:.0} ms, both replicas serving {recovered:.1} s after the restart",
        refused.len()
    );
}

// ------------------------------------------------------------------ the disk full (SQLite)

/// The largest file under `dir`, in bytes.
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// `command` run under `prlimit --fsize`: no file it writes grows past `bytes`, and
/// (SIGXFSZ ignored) a write past it fails with `EFBIG`, as on a full disk.
fn with_file_size_limit(command: &tokio::process::Command, bytes: u64) -> tokio::process::Command {
    let std = command.as_std();
    let mut wrapped = tokio::process::Command::new("sh");
    wrapped
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; exec prlimit --fsize={bytes}:{bytes} \"$0\" \"$@\""
        ))
        .arg(std.get_program())
        .args(std.get_args());
    for (key, value) in std.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = std.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// How the disk is made full.
#[derive(Clone, Copy, PartialEq)]
enum Full {
    /// `RLIMIT_FSIZE` just above the files' sizes (`EFBIG`): works unprivileged.
    FileSizeLimit,
    /// A real file system out of room (`ENOSPC`): a small tmpfs under the data
    /// directory, filled by a file of the test's but for 96 KiB (needs root).
    Tmpfs,
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one of `size` at `dir`; `None` (a note) when this process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    /// Fills it but for `spare` bytes.
    fn fill(&self, spare: u64) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(spare)).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_under_the_sqlite_store_is_a_typed_error_and_corrupts_nothing() {
    full_disk(Full::FileSizeLimit).await;
}

#[tokio::test]
async fn a_full_file_system_under_the_sqlite_store_is_a_typed_error_and_corrupts_nothing() {
    full_disk(Full::Tmpfs).await;
}

async fn full_disk(how: Full) {
    let mock = MockAnthropic::start().await;
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let data = tempfile::Builder::new()
        .prefix("hostile-sqlite-")
        .tempdir()
        .unwrap();
    let tmpfs = match how {
        Full::Tmpfs => match Tmpfs::mount(data.path(), "16m") {
            Some(tmpfs) => Some(tmpfs),
            None => return,
        },
        Full::FileSizeLimit => None,
    };
    let c = Client::new();
    let command = |limit: Option<u64>| {
        let mut command = server_command(&sandbox, "alone");
        command.arg("--data-dir").arg(data.path());
        match limit {
            Some(bytes) => with_file_size_limit(&command, bytes),
            None => command,
        }
    };

    // Some history first, written with room to spare.
    let mut server = Server::spawn(command(None)).await;
    let mut kept = Vec::new();
    for i in 0..2 {
        let (run, reader) = c.stream(&server, &format!("kept {i}")).await;
        tokio::time::timeout(HANG, reader).await.unwrap().unwrap();
        let row = c.final_run(&server, &run).await;
        assert_eq!(row["state"], "succeeded", "{row}");
        kept.push((run.clone(), c.log(&server, &run).await));
    }
    server.stop().await;

    // Now every file may grow by a little only, or the file system has 96 KiB left.
    let (limit, filler) = match &tmpfs {
        None => (Some(largest_file(data.path()) + 96 * 1024), None),
        Some(tmpfs) => (None, Some(tmpfs.fill(96 * 1024))),
    };
    let mut server = Server::spawn(command(limit)).await;
    let big = "x".repeat(150 * 1024);
    let started = Instant::now();
    let mut answers = Vec::new();
    for i in 0..6 {
        let asked = Instant::now();
        let prompt = format!("full {i} {big}");
        let answer = tokio::time::timeout(HANG, c.query(&server, &prompt))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "hang guard: a request on a full disk hung; the server's log:\n{}",
                    server.log.text()
                )
            });
        answers.push((answer.status, asked.elapsed().as_secs_f64(), answer.body));
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    for (i, (status, _, body)) in answers.iter().enumerate() {
        assert!(
            matches!(status, 200 | 503 | 507),
            "a full disk answered {status}: {body}"
        );
        if *status != 200 {
            assert!(body["error"]["message"].is_string(), "{body}");
        } else {
            // An answer is read back from the run's log: a 200 holds the whole turn,
            // the reply included (an event whose write failed is never taken as stored).
            let reply = format!("Noted: full {i} ");
            let replied = body["messages"].as_array().is_some_and(|messages| {
                messages
                    .iter()
                    .any(|m| m["content"].as_str().is_some_and(|c| c.starts_with(&reply)))
            });
            let shape: Vec<String> = body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{} ({} chars)",
                        m["type"],
                        m["content"].as_str().map_or(0, str::len)
                    )
                })
                .collect();
            assert!(
                replied && body["result"].is_object(),
                "an incomplete 200 for request {i}: messages {shape:?}, result {}",
                body["result"]
            );
        }
    }
    assert!(
        statuses.contains(&507),
        "no write was refused as storage full ({limit:?} bytes a file): {statuses:?}"
    );
    let seconds = started.elapsed().as_secs_f64();
    let slowest = answers.iter().map(|(_, s, _)| *s).fold(0.0, f64::max);
    let left = clis_left(server.pid, GONE).await.len();
    assert_eq!(left, 0, "CLI processes left on a full disk");
    server.stop().await;

    // Room again: the server reads back everything it had, and works.
    if let Some(filler) = filler {
        std::fs::remove_file(filler).unwrap();
    }
    let mut server = Server::spawn(command(None)).await;
    for (run, log) in &kept {
        let row = c.final_run(&server, run).await;
        assert_eq!(row["state"], "succeeded", "{row}");
        assert_eq!(&c.log(&server, run).await, log, "a run's events changed");
    }
    let answer = c.query(&server, "after the full disk").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let first_refusal = answers
        .iter()
        .find(|(s, _, _)| *s != 200)
        .map(|(s, _, b)| format!("{s} {}", b["error"]["kind"].as_str().unwrap_or("?")))
        .unwrap_or_default();
    server.stop().await;
    record(
        match how {
            Full::FileSizeLimit => "server: disk full under the SQLite store (file size limit)",
            Full::Tmpfs => "server: disk full under the SQLite store (a full tmpfs)",
        },
        &format!("refused {first_refusal}; data read back whole after a restart"),
        seconds,
        left,
        json!({"statuses": statuses, "slowest_answer_seconds": slowest}),
    );
    eprintln!("disk full: answers {statuses:?}, slowest {slowest:.2} s");
}

// ------------------------------------------------------------------ a clock jump

/// libfaketime's preload library, where Debian's `faketime` package puts it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test]
async fn a_replica_whose_wall_clock_jumps_neither_steals_nor_loses_leases() {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            !claude_code_testkit::pg::required(),
            "{LIBFAKETIME} is missing: `apt-get install faketime` (make test does)"
        );
        eprintln!("skipped: {LIBFAKETIME} is missing (apt-get install faketime)");
        return;
    }
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mock = MockAnthropic::start().await;
    mock.on(long_turn("AHEAD", Duration::from_secs(8)));
    mock.on(long_turn("BEHIND", Duration::from_secs(8)));
    mock.on(echo());
    let sandbox = Sandbox::new(&mock);
    let clock = sandbox.root().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let spawn = |id: &str, skewed: bool| {
        let mut command = server_command(&sandbox, id);
        command.args(["--database-url", db.url()]);
        if skewed {
            // The wall clock follows the file (re-read every second); the monotonic
            // clock is left alone, as a real jump of the wall clock leaves it.
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &clock)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        Server::spawn(command)
    };
    let c = Client::new();
    let started = Instant::now();

    // A run on replica A; replica B's clock jumps an hour ahead while it runs.
    let mut a = spawn("replica-a", false).await;
    let (ahead, reader) = c.stream(&a, "AHEAD of time").await;
    let b = spawn("replica-b", true).await;
    eventually("B to be ready", || async {
        (c.get(&b, "/ready").await.status == 200).then_some(())
    })
    .await;
    std::fs::write(&clock, "+1h\n").unwrap();
    let row = c.final_run(&b, &ahead).await;
    assert_eq!(row["replica"], "replica-a", "{row}");
    assert_eq!(
        row["state"], "succeeded",
        "the replica an hour ahead took the run over: {row}"
    );
    tokio::time::timeout(HANG, reader).await.unwrap().unwrap();

    // A run on replica B; B's clock jumps back an hour behind while it runs, and A,
    // whose clock is right, watches its lease.
    a.stop().await;
    let (behind, reader) = c.stream(&b, "BEHIND the times").await;
    let deadline = Instant::now() + HANG;
    while !mock
        .requests()
        .iter()
        .any(|r| r.prompt().is_some_and(|p| p.contains("BEHIND")))
    {
        assert!(
            Instant::now() < deadline,
            "hang guard: B's run did not start: {}\n{}",
            c.get(&b, &format!("/v1/runs/{behind}")).await.body,
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&clock, "-1h\n").unwrap();
    let a = spawn("replica-a", false).await;
    let row = c.final_run(&a, &behind).await;
    assert_eq!(row["replica"], "replica-b", "{row}");
    assert_eq!(
        row["state"], "succeeded",
        "the run of the replica an hour behind was taken over: {row}"
    );
    tokio::time::timeout(HANG, reader).await.unwrap().unwrap();
    assert_in_order(&c.log(&a, &behind).await);

    let left = clis_left(a.pid, GONE).await.len() + clis_left(b.pid, GONE).await.len();
    assert_eq!(left, 0);
    record(
        "server: wall clock jumps ±1 h on a replica (leases)",
        "both runs succeeded, no takeover",
        started.elapsed().as_secs_f64(),
        left,
        json!({}),
    );
}
