//! The fleet soak of `make soak` (issue 12, Load): three `claude-code-server`
//! processes on one PostgreSQL database of their own (dropped after), the real CLI
//! against the testkit's mock model, and a random mix of runs, each submitted through
//! one replica and acted on through another: completions, streams dropped mid-way
//! (the run ends after the disconnect grace), cancels, approvals and model errors.
//!
//! It samples every replica's open file descriptors, threads and RSS (from `/proc`) as
//! it goes. At the end: every run's event log, read through another replica than the
//! one that took the request, is whole (ids 1, 2, 3, ... with no gap, one final event,
//! last) and a completion's ends in `done` with its own answer; with
//! `SOAK_SCHEMATHESIS=1`, schemathesis (`tools/schemathesis`) runs against a live
//! replica; then the replicas stop and no CLI may be left. Writes a JSON summary.
//!
//! `SOAK_FLEET_N` runs (default 300), `SOAK_FLEET_CONCURRENCY` at once (default 6),
//! `SOAK_FLEET_SECONDS` (default 240: no run starts after that), `SOAK_SEED`,
//! `SOAK_FLEET_OUT` (default `fleet-soak.json`), `SOAK_SERVER_BIN` (default: the
//! `claude-code-server` next to this example's directory), `DATABASE_URL` (else
//! 127.0.0.1:5432). Exits 1 when a check fails.
#![allow(clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{
    MockAnthropic, Reply, Rule, Sandbox, cli_path, processes_in, survivors_in, workspace_root,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const TOKEN: &str = "fleet-soak-token";
const REPLICAS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Complete,
    Drop,
    Cancel,
    Approval,
    ModelError,
}

impl Case {
    fn pick(roll: u64) -> Case {
        match roll % 100 {
            0..=44 => Case::Complete,
            45..=59 => Case::Drop,
            60..=72 => Case::Cancel,
            73..=86 => Case::Approval,
            _ => Case::ModelError,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::Complete => "completion",
            Case::Drop => "stream dropped mid-way (ends after the 2 s disconnect grace)",
            Case::Cancel => "cancelled through another replica",
            Case::Approval => "approval answered through another replica",
            Case::ModelError => "model error (529)",
        }
    }
}

#[derive(Default)]
struct Tally {
    tried: u64,
    outcomes: BTreeMap<String, u64>,
    max_seconds: f64,
    wrong: u64,
}

/// One server process.
struct Replica {
    child: tokio::process::Child,
    pid: u32,
    url: String,
}

async fn start_replica(bin: &Path, sandbox: &Sandbox, db: &str, id: &str) -> Replica {
    let mut command = tokio::process::Command::new(bin);
    sandbox.configure(command.as_std_mut());
    let home = sandbox.root().join(format!("home-{id}"));
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    command
        // Its own working directory is not the project: only CLIs work there.
        .current_dir(sandbox.root())
        .env("HOME", &home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("CLAUDE_CODE_CLI_PATH", cli_path())
        .env("RUST_LOG", "warn,claude_code_server=info")
        .env_remove("DATABASE_URL")
        // An operator's token: schemathesis reaches /metrics and /v1/audit too.
        .args([
            "--bind",
            "127.0.0.1:0",
            "--operator-token",
            TOKEN,
            "--replica-id",
            id,
        ])
        .args([
            "--database-url",
            db,
            "--prewarm",
            "1",
            "--max-concurrent",
            "3",
        ])
        .args([
            "--max-queued",
            "64",
            "--queue-timeout",
            "120",
            "--lease",
            "3",
        ])
        .args(["--disconnect-grace", "2", "--approval-timeout", "30"])
        .args(["--request-timeout", "60"])
        // The sandbox's settings for the CLI (no retries of a model error, no traffic
        // but the model's): the server passes only the essentials unless told.
        .args([
            "--pass-env",
            "CLAUDE_CODE_TMPDIR,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,CLAUDE_CODE_MAX_RETRIES,DISABLE_*,XDG_*",
        ])
        .arg("--project-root")
        .arg(sandbox.cwd())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the server binary starts");
    let pid = child.id().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let tag = id.to_owned();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.split("addr=").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.trim().to_owned());
            } else if line.contains("panicked")
                || (line.contains("ERROR") && !line.contains("a run failed"))
            {
                eprintln!("{tag}: {line}");
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("a replica says where it listens")
        .expect("a replica starts");
    Replica {
        child,
        pid,
        url: format!("http://{addr}"),
    }
}

/// One replica's resources.
fn proc_sample(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count) as u64;
    (fds, field("Threads:"), field("VmRSS:"))
}

/// A server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<i64>,
    event: String,
    data: Value,
}

struct Reader {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl Reader {
    fn new(response: reqwest::Response) -> Reader {
        Reader {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&raw);
                let mut event = None;
                let mut data = String::new();
                let mut id = None;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    }
                }
                if let Some(event) = event {
                    return Some(Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    });
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    async fn rest(&mut self) -> Vec<Sse> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}

struct Fleet {
    replicas: Vec<Replica>,
    http: reqwest::Client,
}

impl Fleet {
    fn url(&self, k: usize) -> &str {
        &self.replicas[k % REPLICAS].url
    }

    async fn stream(&self, k: usize, body: Value) -> Result<(Reader, String), String> {
        let response = self
            .http
            .post(format!("{}/v1/query/stream", self.url(k)))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(format!("refused {status}"));
        }
        let run = response
            .headers()
            .get("x-run-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((Reader::new(response), run))
    }

    async fn post(&self, k: usize, path: &str, body: Value) -> u16 {
        self.http
            .post(format!("{}{path}", self.url(k)))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    async fn get(&self, k: usize, path: &str) -> Value {
        match self
            .http
            .get(format!("{}{path}", self.url(k)))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

/// Runs one case through replica `k`; its outcome, whether it went wrong, and its run
/// id (with the replica that took it).
async fn run_one(
    fleet: &Fleet,
    case: Case,
    i: usize,
    k: usize,
    cwd: &Path,
) -> (String, bool, Option<String>) {
    let final_of = |events: &[Sse]| {
        events
            .iter()
            .rev()
            .find(|e| e.id.is_some())
            .map(|e| match e.event.as_str() {
                "error" => format!("error: {}", e.data["error"]["kind"].as_str().unwrap_or("?")),
                other => other.to_owned(),
            })
            .unwrap_or_else(|| "no final event".to_owned())
    };
    match case {
        Case::Complete => match fleet
            .stream(k, json!({"prompt": format!("COMPLETE {i}")}))
            .await
        {
            Err(e) => (e, false, None),
            Ok((mut reader, run)) => {
                let events = reader.rest().await;
                let answer = format!("answer {i}");
                let whole = events.last().is_some_and(|e| e.event == "done")
                    && events
                        .iter()
                        .any(|e| e.event == "message" && e.data.to_string().contains(&answer));
                (final_of(&events), !whole, Some(run))
            }
        },
        Case::Drop => match fleet
            .stream(k, json!({"prompt": format!("SLOW {i}")}))
            .await
        {
            Err(e) => (e, false, None),
            Ok((mut reader, run)) => {
                let _ = reader.next().await;
                drop(reader);
                ("dropped".to_owned(), false, Some(run))
            }
        },
        Case::Cancel => match fleet
            .stream(k, json!({"prompt": format!("LONG {i}")}))
            .await
        {
            Err(e) => (e, false, None),
            Ok((mut reader, run)) => {
                let _ = reader.next().await;
                let status = fleet
                    .post(k + 1, &format!("/v1/runs/{run}/cancel"), json!({}))
                    .await;
                let events = reader.rest().await;
                let outcome = final_of(&events);
                // 404: it ended before the cancel arrived (then it is whole).
                let wrong = !(status == 202 && outcome == "error: cancelled"
                    || status == 404 && outcome == "done");
                (outcome, wrong, Some(run))
            }
        },
        Case::Approval => {
            let file = cwd.join(format!("approved-{i}.txt"));
            let body = json!({
                "prompt": format!("APPROVE {i} {}", file.display()),
                "permission_mode": "askForEdits",
                "approvals": true,
            });
            match fleet.stream(k, body).await {
                Err(e) => (e, false, None),
                Ok((mut reader, run)) => {
                    let mut events = Vec::new();
                    let mut answered = 0;
                    while let Some(e) = reader.next().await {
                        if e.event == "permission_request"
                            && let Some(id) = e.data["approval_id"].as_str()
                        {
                            let status = fleet
                                .post(
                                    k + 2,
                                    &format!("/v1/approvals/{id}"),
                                    json!({"allow": true}),
                                )
                                .await;
                            answered += usize::from(status == 204);
                        }
                        events.push(e);
                    }
                    let written = std::fs::read_to_string(&file).is_ok_and(|t| t == format!("{i}"));
                    let outcome = final_of(&events);
                    (
                        outcome.clone(),
                        !(answered == 1 && written && outcome == "done"),
                        Some(run),
                    )
                }
            }
        }
        Case::ModelError => match fleet
            .stream(k, json!({"prompt": format!("FAIL {i}")}))
            .await
        {
            Err(e) => (e, false, None),
            Ok((mut reader, run)) => {
                let events = reader.rest().await;
                let outcome = final_of(&events);
                let wrong = !outcome.starts_with("error");
                (outcome, wrong, Some(run))
            }
        },
    }
}

/// The whole log of a run that is over, read through replica `k`: whether its ids run
/// 1, 2, 3, ... with no gap and exactly one final event comes last; its final event's name.
async fn check_log(fleet: &Fleet, k: usize, run: &str) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = fleet.get(k, &format!("/v1/runs/{run}")).await;
        let state = row["state"].as_str().unwrap_or("?").to_owned();
        if ["succeeded", "failed", "interrupted", "cancelled"].contains(&state.as_str()) {
            break;
        }
        if Instant::now() > deadline {
            return (false, format!("still {state}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = fleet
        .http
        .get(format!("{}/v1/runs/{run}/events", fleet.url(k)))
        .bearer_auth(TOKEN)
        .send()
        .await;
    let Ok(response) = response else {
        return (false, "unreadable".to_owned());
    };
    let events: Vec<Sse> = Reader::new(response)
        .rest()
        .await
        .into_iter()
        .filter(|e| e.id.is_some())
        .collect();
    let ids_ok = events
        .iter()
        .enumerate()
        .all(|(n, e)| e.id == Some(n as i64 + 1));
    let finals = events
        .iter()
        .filter(|e| e.event == "done" || e.event == "error")
        .count();
    let last = events.last().map(|e| e.event.clone()).unwrap_or_default();
    (
        ids_ok && finals == 1 && (last == "done" || last == "error"),
        last,
    )
}

/// Runs schemathesis against replica 0 (`SOAK_SCHEMATHESIS_SEED` repeats a run's
/// cases); (passed, its output's tail). The whole output goes to `full`.
async fn schemathesis(fleet: &Fleet, work: &Path, full: &Path) -> (bool, String) {
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        "# Operations that run the CLI: only their invalid variants in the coverage phase.\n\
         [[operations]]\ninclude-path-regex = '^/v1/(query|sessions)'\n\
         phases.coverage.generation.mode = \"negative\"\n\
         [[operations]]\ninclude-path-regex = '^/api/claude/'\n\
         phases.coverage.generation.mode = \"negative\"\n",
    )
    .unwrap();
    let output = tokio::process::Command::new(workspace_root().join("tools/schemathesis"))
        .current_dir(work)
        .args(["--config-file", config.to_str().unwrap(), "run"])
        .arg(format!("{}/openapi.json", fleet.url(0)))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &std::env::var("SOAK_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_owned()),
            "--workers",
            "2",
            "--request-timeout",
            "120",
            "--generation-database",
            "none",
            "--no-color",
        ])
        .args(
            std::env::var("SOAK_SCHEMATHESIS_SEED")
                .map(|seed| vec!["--seed".to_owned(), seed])
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .output()
        .await;
    match output {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if let Err(err) = std::fs::write(full, &text) {
                eprintln!("fleet soak: cannot write {}: {err}", full.display());
            }
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            (out.status.success(), tail.join("\n"))
        }
        Err(e) => (false, format!("tools/schemathesis did not run: {e}")),
    }
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("SOAK_FLEET_N", 300);
    let concurrency: usize = env_or("SOAK_FLEET_CONCURRENCY", 6);
    let seed: u64 = env_or("SOAK_SEED", 20_261_201);
    let budget = Duration::from_secs(env_or("SOAK_FLEET_SECONDS", 240));
    let out = std::env::var("SOAK_FLEET_OUT").unwrap_or_else(|_| "fleet-soak.json".to_owned());
    let bin = std::env::var_os("SOAK_SERVER_BIN").map_or_else(
        || {
            let me = std::env::current_exe().unwrap();
            // target/<profile>/examples/fleet_soak -> target/<profile>/claude-code-server
            me.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("claude-code-server")
        },
        PathBuf::from,
    );
    let Some(db) = TestDatabase::create().await else {
        eprintln!("fleet soak: no PostgreSQL (DATABASE_URL, else 127.0.0.1:5432)");
        std::process::exit(1);
    };

    let mock = MockAnthropic::start().await;
    let answer = |request: &claude_code_testkit::RecordedRequest| {
        let prompt = request.prompt().unwrap_or_default();
        let i = prompt.split_whitespace().nth(1).unwrap_or("?").to_owned();
        Reply::text(format!("answer {i}"))
    };
    mock.on(Rule::prompt_contains("COMPLETE").reply_with(answer));
    mock.on(Rule::prompt_contains("SLOW")
        .reply_with(move |r| answer(r).chunk_delay(Duration::from_millis(300))));
    mock.on(Rule::prompt_contains("LONG")
        .reply(Reply::text("too late").delay(Duration::from_secs(600))));
    mock.on(Rule::prompt_contains("FAIL").reply(Reply::error(529)));
    mock.on(Rule::prompt_contains("APPROVE").reply_with(|request| {
        let prompt = request.prompt().unwrap_or_default();
        let mut words = prompt.split_whitespace().skip(1);
        let i = words.next().unwrap_or("?").to_owned();
        let file = words.next().unwrap_or("/nonexistent").to_owned();
        if request.has_tool_result_for("Write") {
            Reply::text("written")
        } else {
            Reply::tool_use("Write", json!({"file_path": file, "content": i}))
        }
    }));
    let sandbox = Sandbox::new(&mock);

    let mut replicas = Vec::new();
    for k in 0..REPLICAS {
        replicas.push(start_replica(&bin, &sandbox, db.url(), &format!("soak-{k}")).await);
    }
    let fleet = Arc::new(Fleet {
        replicas,
        http: reqwest::Client::new(),
    });
    let pids: Vec<u32> = fleet.replicas.iter().map(|r| r.pid).collect();
    let cwd = sandbox.cwd().to_owned();

    let tallies: Arc<Mutex<BTreeMap<Case, Tally>>> = Arc::default();
    let runs: Arc<Mutex<Vec<(String, usize, Case)>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Value>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (samples, done, sampling, pids, cwd) = (
            samples.clone(),
            done.clone(),
            sampling.clone(),
            pids.clone(),
            cwd.clone(),
        );
        async move {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let per: Vec<Value> = pids
                    .iter()
                    .map(|p| {
                        let (fds, threads, rss) = proc_sample(*p);
                        json!({"fds": fds, "threads": threads, "rss_kib": rss})
                    })
                    .collect();
                samples.lock().unwrap().push(json!({
                    "done": done.load(std::sync::atomic::Ordering::Relaxed),
                    "replicas": per,
                    "clis": processes_in(&cwd).len(),
                }));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });

    let mut rng = seed | 1;
    let cases: Vec<(Case, usize)> = (0..n)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (Case::pick(rng), (rng >> 32) as usize % REPLICAS)
        })
        .collect();
    futures::stream::iter(cases.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(i, (case, k))| {
            let (fleet, tallies, runs, done, cwd) = (
                fleet.clone(),
                tallies.clone(),
                runs.clone(),
                done.clone(),
                cwd.clone(),
            );
            async move {
                if started.elapsed() > budget {
                    return;
                }
                let t = Instant::now();
                let (outcome, wrong, run) = run_one(&fleet, case, i, k, &cwd).await;
                let secs = t.elapsed().as_secs_f64();
                if wrong {
                    eprintln!(
                        "fleet soak: run {i} ({}) went wrong: {outcome}",
                        case.name()
                    );
                }
                {
                    let mut tallies = tallies.lock().unwrap();
                    let tally = tallies.entry(case).or_default();
                    tally.tried += 1;
                    *tally.outcomes.entry(outcome).or_default() += 1;
                    tally.max_seconds = tally.max_seconds.max(secs);
                    tally.wrong += u64::from(wrong);
                }
                if let Some(run) = run {
                    runs.lock().unwrap().push((run, k, case));
                }
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if finished % 25 == 0 {
                    eprintln!(
                        "fleet soak: {finished}/{n} after {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        })
        .await;
    let elapsed = started.elapsed();

    // Every run's log, through another replica than the one that took it.
    let all_runs = runs.lock().unwrap().clone();
    let mut logs_ok = 0u64;
    let mut logs_bad = Vec::new();
    let mut completed_whole = 0u64;
    for (run, k, case) in &all_runs {
        let (ok, last) = check_log(&fleet, k + 1, run).await;
        if *case == Case::Drop
            && let Some(tally) = tallies.lock().unwrap().get_mut(case)
        {
            // How a run nobody read any more ended: whole before the grace ran out, or
            // cancelled after it.
            *tally.outcomes.entry(format!("then {last}")).or_default() += 1;
        }
        if ok {
            logs_ok += 1;
            if *case == Case::Complete && last == "done" {
                completed_whole += 1;
            }
        } else {
            logs_bad.push(format!("{run} ({}): {last}", case.name()));
        }
    }
    eprintln!("fleet soak: {logs_ok} of {} logs whole", all_runs.len());

    let schemathesis_result = if std::env::var("SOAK_SCHEMATHESIS").is_ok_and(|v| v == "1") {
        let work = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let full = PathBuf::from(format!("{out}.schemathesis.txt"));
        let (passed, tail) = schemathesis(&fleet, work.path(), &full).await;
        eprintln!(
            "fleet soak: schemathesis {}:\n{tail}",
            if passed { "passed" } else { "FAILED" }
        );
        Some(json!({"passed": passed, "seconds": t.elapsed().as_secs_f64(), "tail": tail}))
    } else {
        None
    };

    // Settle, one last sample with the fleet idle, then stop the replicas.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.await;
    let idle_clis = processes_in(&cwd).len();
    let final_sample: Vec<(u64, u64, u64)> = pids.iter().map(|p| proc_sample(*p)).collect();
    let mut fleet = Arc::try_unwrap(fleet)
        .ok()
        .expect("no one else holds the fleet");
    for r in &fleet.replicas {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for r in &mut fleet.replicas {
        let _ = tokio::time::timeout(Duration::from_secs(60), r.child.wait()).await;
    }
    let left = survivors_in(&cwd, Duration::from_secs(30)).await;

    // Growth past warm-up, per replica (warm-up: the first fifth of the samples).
    let samples = samples.lock().unwrap().clone();
    let warm = (samples.len() / 5)
        .max(1)
        .min(samples.len().saturating_sub(1));
    let mut growth = Vec::new();
    let mut growth_ok = true;
    for k in 0..REPLICAS {
        let series = |key: &str| -> Vec<u64> {
            samples
                .iter()
                .map(|s| s["replicas"][k][key].as_u64().unwrap_or(0))
                .collect()
        };
        let mut per = serde_json::Map::new();
        for (key, slack) in [("fds", 12u64), ("threads", 4), ("rss_kib", 0)] {
            let v = series(key);
            let warm_max = v[..=warm.min(v.len() - 1)]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            let late_max = v[warm.min(v.len() - 1)..]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            let slack = if key == "rss_kib" {
                warm_max / 4 + 16 * 1024
            } else {
                slack
            };
            let ok = late_max <= warm_max + slack;
            growth_ok &= ok;
            per.insert(key.to_owned(), json!([warm_max, late_max, ok]));
        }
        growth.push(Value::Object(per));
    }
    let tallies = tallies.lock().unwrap();
    let wrong: u64 = tallies.values().map(|t| t.wrong).sum();
    let ran: u64 = tallies.values().map(|t| t.tried).sum();
    let schemathesis_ok = schemathesis_result
        .as_ref()
        .is_none_or(|s| s["passed"].as_bool() == Some(true));
    let summary = json!({
        "n": n,
        "ran": ran,
        "replicas": REPLICAS,
        "concurrency": concurrency,
        "seed": seed,
        "budget_seconds": budget.as_secs(),
        "seconds": elapsed.as_secs_f64(),
        "wrong": wrong,
        "cases": tallies.iter().map(|(case, t)| json!({
            "case": case.name(),
            "tried": t.tried,
            "outcomes": t.outcomes,
            "max_seconds": t.max_seconds,
            "wrong": t.wrong,
        })).collect::<Vec<_>>(),
        "logs_checked": all_runs.len(),
        "logs_whole": logs_ok,
        "logs_bad": logs_bad,
        "completions_done": completed_whole,
        "clis_while_idle": idle_clis,
        "cli_processes_left": left.len(),
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "samples": samples,
        "final": final_sample.iter().map(|(f, t, r)| json!({"fds": f, "threads": t, "rss_kib": r})).collect::<Vec<_>>(),
        "warm_up_samples": warm + 1,
        "growth": growth,
        "schemathesis": schemathesis_result,
    });
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .expect("write the summary");
    eprintln!("fleet soak: summary in {out}");
    drop(db);
    let ok = left.is_empty() && wrong == 0 && logs_bad.is_empty() && growth_ok && schemathesis_ok;
    if !ok {
        eprintln!(
            "fleet soak: FAILED: left {left:?}, wrong {wrong}, bad logs {}, growth ok {growth_ok}, schemathesis ok {schemathesis_ok}",
            logs_bad.len()
        );
        std::process::exit(1);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
