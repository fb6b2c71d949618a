//! `QueryPool` against the real CLI: the process bound, the queue, warm processes and
//! reuse.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use claude_code_sdk::{ErrorKind, PoolConfig, QueryPool};
use claude_code_testkit::{Reply, Rule, cli_path, pid_is_running, wait_until_gone};
use common::{Harness, result_of};
use futures::StreamExt;

/// Live CLI processes (not their tools) whose working directory is `cwd`: the CLI's
/// executable, started by this test process. (CLI 2.1.197 runs its own executable as
/// `rg` to list files; those children are not CLIs of the pool.)
fn cli_processes_in(cwd: &Path, exe: &Path) -> Vec<u32> {
    let me = std::process::id();
    claude_code_testkit::processes_in(cwd)
        .into_iter()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe))
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

/// The parent process id, from `/proc/<pid>/stat` (the field after the command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

fn cli_exe() -> PathBuf {
    cli_path().canonicalize().unwrap()
}

#[tokio::test]
async fn a_pool_of_three_runs_ten_queries_with_never_more_than_three_processes() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("pooled answer").delay(Duration::from_millis(300))));
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 3,
        max_queued: 10,
        queue_timeout: Duration::from_secs(120),
        ..Default::default()
    });

    // Count the CLI processes of this test every few milliseconds while it runs.
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        let (cwd, exe) = (h.sandbox.cwd().to_owned(), cli_exe());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let alive = cli_processes_in(&cwd, &exe).len();
                peak.fetch_max(alive, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let runs = (0..10).map(|i| {
        let pool = pool.clone();
        let options = h.options().build().unwrap();
        async move {
            pool.query(format!("question {i}"), options)
                .await?
                .collect_all()
                .await
        }
    });
    let results = futures::future::join_all(runs).await;
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    for result in &results {
        let messages = result.as_ref().expect("every query completes");
        assert_eq!(result_of(messages).result.as_deref(), Some("pooled answer"));
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak >= 2, "the sampler saw the processes ({peak})");
    assert!(peak <= 3, "{peak} CLI processes were alive at once");
    let stats = pool.stats();
    assert_eq!(stats.completed, 10);
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.started, 10);
    assert_eq!(stats.active, 0);
    assert!(stats.mean_wait > Duration::ZERO);
}

#[tokio::test]
async fn a_full_queue_is_refused_and_a_long_wait_times_out() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("slow").delay(Duration::from_secs(3))));
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 1,
        max_queued: 1,
        queue_timeout: Duration::from_millis(1500),
        ..Default::default()
    });

    let first = pool
        .query("first", h.options().build().unwrap())
        .await
        .unwrap();
    let running = tokio::spawn(first.collect_all());
    let waiting = {
        let pool = pool.clone();
        let options = h.options().build().unwrap();
        tokio::spawn(async move { pool.query("second", options).await.map(drop) })
    };
    while pool.stats().queued < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = pool
        .query("third", h.options().build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PoolBusy);
    assert!(refused.to_string().contains("queue is full"), "{refused}");

    let timed_out = waiting.await.unwrap().unwrap_err();
    assert!(timed_out.is_pool_busy());
    assert!(
        timed_out.to_string().contains("queue timeout"),
        "{timed_out}"
    );
    running.await.unwrap().unwrap();
    assert_eq!(pool.stats().rejected, 2);
}

#[tokio::test]
async fn a_warm_query_starts_no_new_process() {
    let h = Harness::new().await;
    let options = h.options().build().unwrap();
    let pool = QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1));
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    let warm = pool.warm_pids();
    assert_eq!(warm.len(), 1);
    assert_eq!(pool.stats().started, 1);

    let run = pool.query("hello warm", options).await.unwrap();
    assert!(run.was_warm());
    assert_eq!(
        run.pid(),
        Some(warm[0]),
        "the query ran on the warm process"
    );
    let messages = run.collect_all().await.unwrap();
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("Mock reply to: hello warm")
    );
    assert_eq!(pool.stats().warm_hits, 1);

    // A query with options the CLI reads at start-up starts cold. (Not another model: a
    // spare takes the model at its claim, and the replacement spare may be ready.)
    let other = h.options().max_turns(7).build().unwrap();
    let cold = pool.query("hello cold", other).await.unwrap();
    assert!(!cold.was_warm());
    cold.collect_all().await.unwrap();

    // The pool replaces the used warm process; dropping the pool kills it.
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    let replacement = pool.warm_pids();
    drop(pool);
    assert!(wait_until_gone(&replacement, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_reused_process_never_shows_one_query_to_the_next() {
    claude_code_testkit::require_cli!("2.1.331", "the /clear reset that reuse needs");
    let h = Harness::new().await;
    let options = h.options().build().unwrap();
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 1,
            ..PoolConfig::default()
        }
        .reuse_processes(true),
    );

    let mut first = pool
        .query("The secret word is PAPAYA.", options.clone())
        .await
        .unwrap();
    let opening = first.next().await.unwrap().unwrap();
    let first_pid = first.pid().expect("the first query's process runs");
    let (mut first_messages, error) = first.collect_messages().await;
    assert!(error.is_none());
    first_messages.insert(0, opening);
    assert!(
        pool.wait_warm(1, Duration::from_secs(30)).await,
        "the process came back"
    );
    assert_eq!(pool.stats().reused, 1);

    let second = pool
        .query("What is the secret word?", options)
        .await
        .unwrap();
    assert!(second.was_warm());
    let second_pid = second.pid();
    assert_eq!(second_pid, Some(first_pid), "the same process served both");
    let second_messages = second.collect_all().await.unwrap();

    let last = h.mock.requests().pop().unwrap();
    assert!(last.mentions("What is the secret word?"));
    assert!(
        !last.mentions("PAPAYA"),
        "the second query saw the first one's conversation"
    );
    assert_ne!(
        result_of(&first_messages).session_id,
        result_of(&second_messages).session_id
    );
    assert!(pool.wait_warm(1, Duration::from_secs(30)).await);
    assert_eq!(pool.stats().reused, 2);
    assert!(pid_is_running(first_pid));
    drop(pool);
    assert!(wait_until_gone(&[first_pid], Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_reserved_slot_counts_against_the_bound() {
    let h = Harness::new().await;
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 1,
        max_queued: 0,
        ..Default::default()
    });
    let slot = pool.reserve().await.unwrap();
    let busy = pool
        .query("hello", h.options().build().unwrap())
        .await
        .unwrap_err();
    assert!(busy.is_pool_busy());
    drop(slot);
    // The slot comes back (after a hop through the runtime).
    let mut run = None;
    for _ in 0..100 {
        match pool.query("hello", h.options().build().unwrap()).await {
            Ok(r) => {
                run = Some(r);
                break;
            }
            Err(e) if e.is_pool_busy() => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let messages = run
        .expect("the slot came back")
        .collect_all()
        .await
        .unwrap();
    assert!(!result_of(&messages).is_error);
}

#[tokio::test]
async fn a_reused_process_does_not_keep_the_last_querys_background_commands() {
    claude_code_testkit::require_cli!("2.1.331", "the /clear reset that reuse needs");
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("background").steps([
        Reply::tool_use(
            "Bash",
            serde_json::json!({"command": "sleep 300", "run_in_background": true}),
        ),
        Reply::text("started it"),
    ]));
    let options = h.options().allowed_tools(["Bash"]).build().unwrap();
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 1,
            ..PoolConfig::default()
        }
        .reuse_processes(true),
    );
    let first = pool
        .query("start a background job", options.clone())
        .await
        .unwrap();
    first.collect_all().await.unwrap();
    assert!(
        pool.wait_warm(1, Duration::from_secs(30)).await,
        "the process came back"
    );

    // Only the CLI itself is left in the sandbox: the background `sleep` is gone.
    let cwd = h.sandbox.cwd().canonicalize().unwrap();
    let cli = pool.warm_pids();
    let mut others = Vec::new();
    for _ in 0..100 {
        others = claude_code_testkit::processes_in(&cwd)
            .into_iter()
            .filter(|pid| !cli.contains(pid))
            .collect();
        if others.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        others.is_empty(),
        "left running into the next query: {others:?}"
    );
}

/// On a CLI that cannot confirm a `/clear` (older than 2.1.331), `reuse_processes`
/// stops a finished process instead of resetting it, at once (no wait for a
/// confirmation that never comes), and the next query starts cold.
#[tokio::test]
async fn without_a_clear_confirmation_a_finished_process_is_stopped_not_reused() {
    let h = Harness::new().await;
    let version = claude_code_testkit::cli_version();
    let options = h.options().build().unwrap();
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 1,
            ..PoolConfig::default()
        }
        .reuse_processes(true),
    );
    let mut first = pool.query("first", options.clone()).await.unwrap();
    first.next().await.unwrap().unwrap();
    let pid = first.pid().expect("the query's process runs");
    let (_, error) = first.collect_messages().await;
    assert!(error.is_none(), "{error:?}");
    if claude_code_testkit::cli_is_at_least("2.1.331") {
        // The newer CLI confirms the reset: the process comes back.
        assert!(pool.wait_warm(1, Duration::from_secs(30)).await);
        assert_eq!(pool.warm_pids(), [pid]);
        return;
    }
    assert!(
        wait_until_gone(&[pid], Duration::from_secs(10)).await,
        "CLI {version}: the process is stopped, not kept waiting for a reset"
    );
    assert_eq!(pool.stats().reused, 0);
    let second = pool.query("second", options).await.unwrap();
    assert!(!second.was_warm());
    let messages = second.collect_all().await.unwrap();
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("Mock reply to: second")
    );
}
