//! Faults that `faults.rs` (fake-claude) and `errors.rs` (HTTP errors) do not cover
//! yet, each ending in a typed error (or a whole answer) within a bound, with no CLI
//! process left in the sandbox afterwards:
//!
//! - from the model (the real CLI against the mock): every HTTP error status with the
//!   processes counted, a 429 with `retry-after`, an SSE error mid-stream, a stream
//!   that stops sending bytes (caught by the idle watchdog), a connection reset
//!   mid-stream, a model that never stops calling tools, a 50 MB answer;
//! - from the CLI: missing, not executable, never answers `initialize`, silent (the
//!   idle watchdog), unpolled past its timeout, a spare that dies while parked.
//!
//! When `RELIABILITY_LOG` names a file, each test appends one JSON line to it (case,
//! outcome, seconds, processes left): `make soak` builds RELIABILITY.md from them.
//! Times are recorded, never asserted; the hang guards are generous.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use claude_code_sdk::{
    ClaudeClient, ClaudeCodeOptions, Error, ErrorKind, Message, PermissionDecision, PoolConfig,
    QueryPool, RetryPolicy, query, query_with_retry,
};
use claude_code_testkit::{
    FakeMode, Reply, Rule, Sandbox, fake, pid_is_running, read_pid_file, survivors_in,
    wait_until_gone,
};
use common::{Harness, fake_options, pid_file, result_of};
use futures::StreamExt;
use serde_json::json;

/// How long the processes of a finished run get to be gone.
const GONE: Duration = Duration::from_secs(15);

/// The processes still working in the sandbox (none expected), after waiting for them.
async fn left_in(sandbox: &Sandbox) -> Vec<u32> {
    survivors_in(sandbox.cwd(), GONE).await
}

/// Appends this case to `RELIABILITY_LOG`, when set.
fn record(case: &str, outcome: &str, started: Instant, left: usize) {
    let Ok(path) = std::env::var("RELIABILITY_LOG") else {
        return;
    };
    let line = json!({
        "case": case,
        "outcome": outcome,
        "seconds": started.elapsed().as_secs_f64(),
        "left": left,
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

/// Reads `stream` until its first error (the watchdog's), within the hang guard `guard`;
/// a `what` ("run", "turn") that ends without an error fails the test.
async fn first_error<S>(stream: &mut S, guard: Duration, what: &str) -> Error
where
    S: futures::Stream<Item = claude_code_sdk::Result<claude_code_sdk::Message>> + Unpin,
{
    loop {
        match tokio::time::timeout(guard, stream.next())
            .await
            .unwrap_or_else(|_| panic!("the watchdog ends the {what}"))
        {
            Some(Ok(_)) => {}
            Some(Err(err)) => return err,
            None => panic!("the {what} ended without an error"),
        }
    }
}

fn outcome(err: &Error) -> String {
    match err.api_status() {
        Some(status) => format!("{:?} ({status})", err.kind()),
        None => format!("{:?}", err.kind()),
    }
}

// ---------------------------------------------------------------- from the model

#[tokio::test]
async fn every_model_error_status_ends_typed_with_no_process_left() {
    for status in [401, 429, 500, 529] {
        let h = Harness::new().await;
        h.mock.on(Rule::any().reply(Reply::error(status)));
        let options = h.options().max_api_retries(0).build().unwrap();
        let started = Instant::now();
        let (messages, err) = query("hello", options).collect_messages().await;
        let err = err.unwrap_or_else(|| panic!("a {status} is an error"));
        assert_eq!(err.kind(), ErrorKind::Api, "{status}: {err:?}");
        assert_eq!(err.api_status(), Some(status));
        assert!(result_of(&messages).is_error);
        let left = left_in(&h.sandbox).await;
        record(
            &format!("model: HTTP {status}"),
            &outcome(&err),
            started,
            left.len(),
        );
        assert!(left.is_empty(), "{status}: processes left: {left:?}");
    }
}

#[tokio::test]
async fn a_429_with_retry_after_ends_typed_and_transient() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::error(429).retry_after(1)));
    // CLI 2.1.332 does not retry this 429 itself (one call), and does not pass the
    // header on: the error is transient, for the caller's retry policy.
    let options = h.options().max_api_retries(1).build().unwrap();
    let started = Instant::now();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert_eq!(err.api_status(), Some(429), "{err:?}");
    assert!(err.is_transient());
    let left = left_in(&h.sandbox).await;
    record(
        "model: 429 with retry-after",
        &outcome(&err),
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_429_with_retry_after_then_success_loses_nothing_with_a_retry_policy() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::error(429).retry_after(1)).times(1));
    h.mock.on(Rule::any().reply(Reply::text("after the wait")));
    let options = h.options().max_api_retries(0).build().unwrap();
    let policy = RetryPolicy::exponential(2, Duration::from_millis(200));
    let started = Instant::now();
    let messages = query_with_retry("hello", options, policy).await.unwrap();
    assert_eq!(h.mock.requests().len(), 2);
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("after the wait")
    );
    let left = left_in(&h.sandbox).await;
    record(
        "model: 429 with retry-after, then success (query_with_retry)",
        "completed",
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_sse_error_mid_stream_is_recovered_with_the_whole_answer() {
    let h = Harness::new().await;
    // Every streamed answer breaks after its first delta; the CLI's non-streaming
    // retry gets the whole message.
    h.mock.on(Rule::any().reply(
        Reply::text("the whole answer, every word of it").mid_stream_error("overloaded_error"),
    ));
    let options = h.options().max_api_retries(1).build().unwrap();
    let started = Instant::now();
    let (messages, err) = query("hello", options).collect_messages().await;
    let left = left_in(&h.sandbox).await;
    match err {
        None => {
            assert_eq!(
                result_of(&messages).result.as_deref(),
                Some("the whole answer, every word of it")
            );
            record(
                "model: SSE error mid-stream",
                "completed (retried whole)",
                started,
                left.len(),
            );
        }
        Some(err) => {
            // A typed failure is acceptable; a partial answer passed off as a result is not.
            assert!(err.is_api() || err.is_connection(), "{err:?}");
            assert!(result_of(&messages).is_error);
            record(
                "model: SSE error mid-stream",
                &outcome(&err),
                started,
                left.len(),
            );
        }
    }
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_stream_that_stops_sending_bytes_is_caught_by_the_idle_watchdog() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("this answer never finishes").stall_mid_stream()));
    let options = h
        .options()
        .idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut stream = query("hello", options);
    let err = first_error(&mut stream, Duration::from_secs(120), "run").await;
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
    assert!(stream.next().await.is_none());
    let left = left_in(&h.sandbox).await;
    record(
        "model: stream stops sending bytes (idle_timeout 5 s)",
        &outcome(&err),
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_connection_reset_mid_stream_ends_typed() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("cut off in the middle").reset_mid_stream()));
    let options = h.options().max_api_retries(0).build().unwrap();
    let started = Instant::now();
    let (messages, err) = query("hello", options).collect_messages().await;
    let err = err.expect("a reset answer is an error");
    assert!(err.is_connection() || err.is_api(), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
    assert!(result_of(&messages).is_error);
    assert!(
        !messages
            .iter()
            .filter_map(Message::as_assistant)
            .any(|a| a.text().contains("cut off in the middle")),
        "no half answer is passed off as the answer"
    );
    let left = left_in(&h.sandbox).await;
    record(
        "model: connection reset mid-stream",
        &outcome(&err),
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_model_that_never_stops_calling_tools_ends_at_max_turns() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::tool_use("Bash", json!({"command": "true"}))));
    let options = h
        .options()
        .allowed_tools(["Bash"])
        .max_turns(3)
        .build()
        .unwrap();
    let started = Instant::now();
    let (messages, err) = query("loop forever", options).collect_messages().await;
    let err = err.expect("max turns is an error");
    assert!(err.is_max_turns(), "{err:?}");
    assert_eq!(result_of(&messages).subtype, "error_max_turns");
    let left = left_in(&h.sandbox).await;
    record(
        "model: never stops calling tools (max_turns 3)",
        &outcome(&err),
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_50_mb_answer_arrives_whole() {
    let h = Harness::new().await;
    let size = 50 * 1024 * 1024;
    h.mock.on(Rule::any().reply(Reply::text("y".repeat(size))));
    let options = h.options().build().unwrap();
    let started = Instant::now();
    let messages = query("a long answer please", options)
        .collect_all()
        .await
        .unwrap();
    let text: usize = messages
        .iter()
        .filter_map(Message::as_assistant)
        .map(|a| a.text().len())
        .sum();
    assert_eq!(text, size, "the answer arrived whole");
    assert!(!result_of(&messages).is_error);
    let left = left_in(&h.sandbox).await;
    record("model: 50 MB answer", "completed", started, left.len());
    assert!(left.is_empty(), "{left:?}");
}

// ------------------------------------------------------------------ from the CLI

#[tokio::test]
async fn a_missing_cli_is_cli_not_found() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Ok)
        .cli_path(sandbox.root().join("no-such-claude"))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CliNotFound, "{err:?}");
    assert!(err.to_string().contains("no-such-claude"), "{err}");
    record("cli: missing", &outcome(&err), started, 0);
}

#[tokio::test]
async fn a_cli_that_is_not_executable_is_refused_typed() {
    let sandbox = Sandbox::without_mock();
    let path = sandbox.root().join("claude-not-executable");
    std::fs::copy(claude_code_testkit::fake_claude_path(), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let options = fake_options(&sandbox, FakeMode::Ok)
        .cli_path(&path)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CliNotFound | ErrorKind::Connection),
        "{err:?}"
    );
    assert!(err.to_string().contains("claude-not-executable"), "{err}");
    assert!(read_pid_file(pid_file(&sandbox)).is_empty(), "nothing ran");
    record("cli: not executable", &outcome(&err), started, 0);
}

#[tokio::test]
async fn a_cli_that_never_answers_initialize_times_out_and_is_killed() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::NoInitialize)
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let pids = read_pid_file(pid_file(&sandbox));
    assert_eq!(pids.len(), 1, "{pids:?}");
    let gone = wait_until_gone(&pids, GONE).await;
    record(
        "cli: never answers initialize (timeout 3 s)",
        &outcome(&err),
        started,
        usize::from(!gone),
    );
    assert!(gone, "{pids:?}");
}

#[tokio::test]
async fn the_idle_watchdog_kills_a_cli_that_goes_silent() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Hang)
        .idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let (messages, err) = query("hello", options).collect_messages().await;
    assert!(
        messages.iter().any(|m| m.kind() == "system"),
        "{messages:?}"
    );
    let err = err.expect("the watchdog fires");
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
    let pids = read_pid_file(pid_file(&sandbox));
    let gone = wait_until_gone(&pids, GONE).await;
    record(
        "cli: silent mid-turn (idle_timeout 2 s)",
        &outcome(&err),
        started,
        usize::from(!gone),
    );
    assert!(gone, "{pids:?}");
}

/// The idle watchdog also ends a `ClaudeClient` turn read with `receive_response`: a
/// typed timeout, the CLI gone, and the client closed for further turns.
#[tokio::test]
async fn the_idle_watchdog_ends_a_client_turn_that_goes_silent() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Hang)
        .idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let client = ClaudeClient::connect(options).await.unwrap();
    client.query("hello").await.unwrap();
    let mut turn = client.receive_response();
    let err = first_error(&mut turn, Duration::from_secs(60), "turn").await;
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
    assert!(turn.next().await.is_none());
    drop(turn);
    let pids = read_pid_file(pid_file(&sandbox));
    let gone = wait_until_gone(&pids, GONE).await;
    record(
        "cli: silent mid-turn of a ClaudeClient (idle_timeout 2 s)",
        &outcome(&err),
        started,
        usize::from(!gone),
    );
    assert!(gone, "{pids:?}");
    let again = client.query("again").await;
    assert!(again.as_ref().is_err_and(Error::is_connection), "{again:?}");
}

#[tokio::test]
async fn the_idle_watchdog_lets_a_slow_but_steady_cli_finish() {
    let sandbox = Sandbox::without_mock();
    // Lines 1 s apart, 4 s of silence allowed: the run's whole length is past the
    // limit, no single silence is.
    let options = fake_options(&sandbox, FakeMode::Slow)
        .env(fake::DELAY_MS_ENV, "1000")
        .idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let messages = query("hello", options).collect_all().await.unwrap();
    assert!(!result_of(&messages).is_error);
}

#[tokio::test]
async fn the_idle_watchdog_does_not_count_a_slow_permission_callback() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().steps([
        Reply::tool_use("Bash", json!({"command": "echo asked > asked.txt"})),
        Reply::text("done after asking"),
    ]));
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let options = h
        .options()
        // Room for the CLI's own silent stretches (start, the model call) on a loaded
        // machine; the callback takes twice as long.
        .idle_timeout(Duration::from_secs(10))
        .can_use_tool(move |_, _, _| {
            let counter = counter.clone();
            async move {
                // A person taking their time: longer than the idle limit.
                tokio::time::sleep(Duration::from_secs(20)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                PermissionDecision::allow()
            }
        })
        .build()
        .unwrap();
    let messages = query("run it", options).collect_all().await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("done after asking")
    );
    assert!(h.file("asked.txt").exists());
}

#[tokio::test]
async fn the_whole_run_timeout_kills_the_cli_even_when_nobody_polls() {
    let sandbox = Sandbox::without_mock();
    let options = fake_options(&sandbox, FakeMode::Hang)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut stream = query("hello", options);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.kind(), "system");
    let pid = stream.pid().expect("started");
    // Nobody polls from here on; the timeout still ends the CLI.
    let gone = wait_until_gone(&[pid], Duration::from_secs(60)).await;
    assert!(
        gone,
        "the CLI outlived its timeout while the stream sat unpolled"
    );
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(stream.next().await.is_none());
    record(
        "cli: run unpolled past its timeout (2 s)",
        &outcome(&err),
        started,
        usize::from(pid_is_running(pid)),
    );
}

#[tokio::test]
async fn a_spare_that_dies_while_parked_is_not_handed_out() {
    // Parked spares fall back to a cold start when their claim fails. Before 2.1.331 the
    // pool prewarms ready processes instead; one found dead when it is taken falls back
    // to a cold start the same way.
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::text("served anyway")));
    let options = h.options().build().unwrap();
    let started = Instant::now();
    let outcome_text = {
        let pool = QueryPool::new(PoolConfig::default().prewarm(options.clone(), 1));
        assert!(
            pool.wait_warm(1, Duration::from_secs(120)).await,
            "a spare parked"
        );
        let spares = pool.warm_pids();
        assert_eq!(spares.len(), 1, "{spares:?}");
        // SIGKILL the whole group of the parked spare.
        let group = nix::unistd::Pid::from_raw(i32::try_from(spares[0]).unwrap());
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(wait_until_gone(&spares, GONE).await);
        let run = pool.query("hello", options).await.unwrap();
        let messages = run.collect_all().await.unwrap();
        assert_eq!(
            result_of(&messages).result.as_deref(),
            Some("served anyway")
        );
        let stats = pool.stats();
        assert_eq!(stats.failed, 0);
        "completed (served by a new process)"
    };
    let left = left_in(&h.sandbox).await;
    record(
        "cli: spare dies while parked",
        outcome_text,
        started,
        left.len(),
    );
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn idle_timeout_zero_is_refused() {
    let err = ClaudeCodeOptions::builder()
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.is_invalid_options(), "{err:?}");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
}
