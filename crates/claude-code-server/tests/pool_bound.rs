//! Every CLI of the server lives in one bound: sessions, queries and spares together
//! never have more processes alive than `max_concurrent`, and a session's follow-up
//! turn runs on its hot process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use claude_code_sdk::{ClaudeCodeOptions, PermissionMode, PoolConfig};
use claude_code_server::{AppState, ServerConfig, router};
use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
use serde_json::{Value, json};

const TOKEN: &str = "bound-token";
const MAX: usize = 3;

/// CLI processes of this sandbox (by their config directory), alive now.
fn clis_of(config_dir: &Path, cli: &Path) -> usize {
    let needle = format!("CLAUDE_CONFIG_DIR={}", config_dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            claude_code_testkit::pid_is_running(*pid)
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == cli)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .count()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = http
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_queries_and_spares_share_one_bound_and_follow_ups_run_hot() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::any().reply(Reply::text("ok").delay(Duration::from_millis(150))));
    let sandbox = Sandbox::new(&mock);
    for dir in ["a", "b"] {
        std::fs::create_dir_all(sandbox.cwd().join(dir)).unwrap();
    }
    let options = ClaudeCodeOptions::builder()
        .cli_path(cli_path())
        .envs(sandbox.env())
        .build()
        .unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
        .api_token(TOKEN)
        .operator_token(TOKEN)
        .project_root(sandbox.cwd())
        .base_options(options)
        .modes([PermissionMode::ReadOnly], PermissionMode::ReadOnly)
        .pool(PoolConfig {
            max_concurrent: MAX,
            max_queued: 64,
            queue_timeout: Duration::from_secs(120),
            max_hot: 2,
            ..PoolConfig::default()
        })
        .prewarm(1);
    let state = AppState::new(config).await.unwrap();
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Sample the processes while everything runs.
    let config_dir: PathBuf = sandbox.config_dir().to_owned();
    let cli: PathBuf = cli_path().canonicalize().unwrap();
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done) = (Arc::clone(&most), Arc::clone(&done));
        tokio::task::spawn_blocking(move || {
            let mut samples = 0usize;
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(clis_of(&config_dir, &cli), Ordering::SeqCst);
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    // Let the spares start, then: two sessions of three turns and six queries in two
    // directories, all at once.
    while state.pool().stats().spares < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    let mut work = Vec::new();
    for s in 0..2 {
        let (http, url) = (http.clone(), url.clone());
        work.push(tokio::spawn(async move {
            let (status, first) = post(
                &http,
                format!("{url}/v1/sessions"),
                json!({"prompt": format!("session {s} turn 1")}),
            )
            .await;
            assert_eq!(status, 201, "{first}");
            let id = first["session"].as_str().unwrap().to_owned();
            for turn in 2..=3 {
                let (status, body) = post(
                    &http,
                    format!("{url}/v1/sessions/{id}/messages"),
                    json!({"prompt": format!("session {s} turn {turn}")}),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for q in 0..6 {
        let (http, url) = (http.clone(), url.clone());
        work.push(tokio::spawn(async move {
            let dir = if q % 2 == 0 { "a" } else { "b" };
            let (status, body) = post(
                &http,
                format!("{url}/v1/query"),
                json!({"prompt": format!("query {q}"), "cwd": dir}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }));
    }
    for w in work {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!(samples > 10, "the sampler ran ({samples} samples)");
    assert!(most >= 2, "the sampler saw the CLIs ({most})");
    assert!(
        most <= MAX,
        "{most} CLI processes were alive at once; the bound is {MAX}"
    );
    let stats = state.pool().stats();
    println!("at most {most} CLIs alive in {samples} samples; {stats:?}");
    assert!(
        stats.warm_hits > 0,
        "spares or hot sessions served runs: {stats:?}"
    );
    // A session's follow-up on a hot process: run one now that nothing else competes.
    let (status, first) = post(
        &http,
        format!("{url}/v1/sessions"),
        json!({"prompt": "quiet session"}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let id = first["session"].as_str().unwrap();
    let hot_before = state.pool().stats().hot_hits;
    let (status, body) = post(
        &http,
        format!("{url}/v1/sessions/{id}/messages"),
        json!({"prompt": "quiet follow-up"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state.pool().stats().hot_hits,
        hot_before + 1,
        "the follow-up ran on the session's hot process"
    );
}
