//! Overload (issue 12, Load): 200 clients at once against a server far smaller (a pool
//! of 2 processes, a queue of 6), the server binary on a SQLite directory of its own,
//! the real CLI against the mock model. Every admitted stream completes with every
//! event once and in order; every other client is refused with 503 or 429 and a
//! `Retry-After`; `/health` is polled throughout and its latency is measured (logged to
//! `RELIABILITY_LOG` when set, as JSON lines; never asserted: the machine is shared);
//! no CLI is left after the server stops.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path, survivors_in};
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// The clients that arrive at once.
const CLIENTS: usize = 200;
/// The hang guard of the whole test (nothing asserts how long anything took).
const HANG: Duration = Duration::from_secs(240);

/// What one client got.
enum Outcome {
    /// 200: the event names in order, and whether their ids ran 1, 2, 3, ... with no gap.
    Streamed {
        events: Vec<String>,
        ids_in_order: bool,
    },
    /// Refused: the status and its `Retry-After`.
    Refused {
        status: u16,
        retry_after: Option<String>,
    },
}

async fn client(http: reqwest::Client, url: String, i: usize) -> Outcome {
    let response = http
        .post(format!("{url}/v1/query/stream"))
        .json(&json!({"prompt": format!("overload client {i}")}))
        .send()
        .await
        .expect("the server answers every client");
    let status = response.status().as_u16();
    if status != 200 {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Outcome::Refused {
            status,
            retry_after,
        };
    }
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut ids = Vec::new();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.expect("an admitted stream is not cut"));
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut name = None;
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    ids.push(v.trim().parse::<i64>().expect("a numeric id"));
                }
            }
            // Comments (keep-alives) have no event name; `run` opens the stream.
            if let Some(name) = name.filter(|n| n != "run") {
                events.push(name);
            }
        }
    }
    // A run's log numbers its events 1, 2, 3, ... (the opening `run` event has no id).
    let ids_in_order = ids.iter().enumerate().all(|(k, id)| *id == k as i64 + 1);
    Outcome::Streamed {
        events,
        ids_in_order,
    }
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[tokio::test]
async fn two_hundred_clients_beyond_capacity_are_served_or_refused_and_health_answers() {
    let started = Instant::now();
    let mock = MockAnthropic::start().await;
    mock.on(Rule::any()
        .reply_with(|req| Reply::text(format!("Noted: {}", req.prompt().unwrap_or_default()))));
    let sandbox = Sandbox::new(&mock);
    let data = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
    sandbox.configure(command.as_std_mut());
    command
        // The server's own working directory is not the project: only CLIs work there.
        .current_dir(sandbox.root())
        .env("CLAUDE_CODE_CLI_PATH", cli_path())
        .env("RUST_LOG", "warn,claude_code_server=info")
        .env_remove("DATABASE_URL")
        .env_remove("CLAUDE_SERVER_TOKENS")
        .args(["--bind", "127.0.0.1:0", "--prewarm", "1"])
        .args(["--max-concurrent", "2", "--max-queued", "6"])
        .args(["--queue-timeout", "120", "--request-timeout", "120"])
        .args([
            "--pass-env",
            "CLAUDE_CODE_TMPDIR,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,CLAUDE_CODE_MAX_RETRIES,DISABLE_*,XDG_*",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--project-root")
        .arg(sandbox.cwd())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.split("addr=").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the server says where it listens")
        .expect("the server starts");
    let url = format!("http://{addr}");

    // /health, polled every 25 ms on a connection of its own while the clients run.
    let running = Arc::new(AtomicBool::new(true));
    let health = tokio::spawn({
        let url = url.clone();
        let running = Arc::clone(&running);
        async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            while running.load(Ordering::Relaxed) {
                let at = Instant::now();
                match http.get(format!("{url}/health")).send().await {
                    Ok(r) if r.status().is_success() => {
                        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (latencies, failures)
        }
    });

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let outcomes = tokio::time::timeout(
        HANG,
        futures::future::join_all((0..CLIENTS).map(|i| client(http.clone(), url.clone(), i))),
    )
    .await
    .expect("hang guard: the clients did not all finish");
    running.store(false, Ordering::Relaxed);
    let (mut latencies, health_failures) = health.await.unwrap();

    eprintln!(
        "all {CLIENTS} clients answered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut admitted = 0;
    let mut refused = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Streamed {
                events,
                ids_in_order,
            } => {
                admitted += 1;
                assert!(
                    *ids_in_order,
                    "client {i}: event ids out of order: {events:?}"
                );
                assert_eq!(
                    events.last().map(String::as_str),
                    Some("done"),
                    "client {i}: an admitted run did not complete: {events:?}"
                );
                assert!(
                    events[..events.len() - 1].iter().all(|e| e == "message"),
                    "client {i}: {events:?}"
                );
                assert!(events.len() >= 3, "client {i}: {events:?}");
            }
            Outcome::Refused {
                status,
                retry_after,
            } => {
                refused += 1;
                assert!(
                    *status == 503 || *status == 429,
                    "client {i}: refused with {status}"
                );
                let seconds: u64 = retry_after
                    .as_deref()
                    .unwrap_or_else(|| panic!("client {i}: {status} without Retry-After"))
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(seconds >= 1, "client {i}: Retry-After {seconds}");
            }
        }
    }
    assert!(admitted >= 1, "no client was served");
    assert!(
        refused >= 1,
        "200 clients never overran a pool of 2 and a queue of 6"
    );
    assert_eq!(health_failures, 0, "/health failed under load");
    assert!(!latencies.is_empty(), "/health was never polled");

    // The server stops; no CLI is left working in the project.
    let pid = child.id().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    let left = survivors_in(sandbox.cwd(), Duration::from_secs(15)).await;
    assert!(left.is_empty(), "CLI processes left: {left:?}");

    latencies.sort_by(f64::total_cmp);
    let figures = json!({
        "case": "200 concurrent clients beyond capacity (pool 2, queue 6)",
        "clients": CLIENTS,
        "admitted": admitted,
        "refused": refused,
        "health_polls": latencies.len(),
        "health_p50_ms": pct(&latencies, 50.0),
        "health_p99_ms": pct(&latencies, 99.0),
        "health_max_ms": latencies[latencies.len() - 1],
        "outcome": "admitted runs complete in order; the rest 503/429 with Retry-After",
        "seconds": started.elapsed().as_secs_f64(),
        "left": left.len(),
    });
    eprintln!("{figures}");
    if let Ok(path) = std::env::var("RELIABILITY_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "{figures}").unwrap();
    }
}
