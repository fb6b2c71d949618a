//! The toolkit's pieces composed over one pool: cache → retry → pool, conversations on
//! hot processes, spares claimed in any working directory, refill timing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_code_sdk::{
    ConversationManager, ManagerConfig, MemoryStore, Message, PermissionMode, PoolConfig,
    QueryPool, ResponseCache, RetryPolicy, Retrying, Served,
};
use claude_code_testkit::{Reply, RequestKind, Rule};
use common::{Harness, result_of};
use serde_json::json;

/// Model requests that carry a turn (not the CLI's housekeeping).
fn turns(h: &Harness) -> Vec<claude_code_testkit::RecordedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.kind() == RequestKind::Turn)
        .collect()
}

#[tokio::test]
async fn a_cached_query_through_a_retrying_pool_runs_once_for_five_callers() {
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("ONCE")
        .reply(Reply::text("computed once").delay(Duration::from_millis(500))));
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 2,
        ..PoolConfig::default()
    });
    let runner = Arc::new(Retrying::new(
        pool.clone(),
        RetryPolicy::exponential(2, Duration::from_millis(10)),
    ));
    let cache = ResponseCache::new(16 << 20, Duration::from_secs(60));
    let options = h.options().build().unwrap();
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let (cache, runner, options) = (cache.clone(), Arc::clone(&runner), options.clone());
            tokio::spawn(async move { cache.query(&runner, "ONCE please", options).await })
        })
        .collect();
    for caller in callers {
        let messages = caller.await.unwrap().unwrap();
        assert_eq!(
            result_of(&messages).result.as_deref(),
            Some("computed once")
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.started, 1, "one process for five callers: {stats:?}");
    assert_eq!(
        turns(&h)
            .iter()
            .filter(|r| r.mentions("ONCE please"))
            .count(),
        1,
        "one model request"
    );
    assert_eq!(cache.stats().misses, 1);
    assert_eq!(cache.stats().hits, 4);

    // The retry is really in the chain: a transient failure is retried through the
    // pool, and the answer cached.
    h.mock
        .on(Rule::prompt_contains("FLAKY")
            .reply(Reply::error(529))
            .times(1))
        .on(Rule::prompt_contains("FLAKY").reply(Reply::text("second time lucky")));
    let messages = cache
        .query(&runner, "FLAKY please", options.clone())
        .await
        .unwrap();
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("second time lucky")
    );
    assert_eq!(
        turns(&h)
            .iter()
            .filter(|r| r.mentions("FLAKY please"))
            .count(),
        2
    );
    cache.query(&runner, "FLAKY please", options).await.unwrap();
    assert_eq!(
        turns(&h)
            .iter()
            .filter(|r| r.mentions("FLAKY please"))
            .count(),
        2,
        "the second ask is a hit"
    );
}

#[tokio::test]
async fn a_conversation_stays_on_one_process_while_hot_and_resumes_cold_after() {
    // 2.1.197 writes a turn's transcript late: the resume after the hot process was
    // stopped may miss the last turns (the compatibility run saw it).
    claude_code_testkit::require_cli!("2.1.331", "a transcript on disk when a turn ends");
    let h = Harness::new().await;
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 2,
        ..PoolConfig::default()
    });
    let manager = ConversationManager::with_runner(
        h.options().build().unwrap(),
        MemoryStore::default(),
        pool.clone(),
        ManagerConfig::default(),
    );
    manager
        .start_conversation("c", "My name is Ada.", h.sandbox.cwd())
        .await
        .unwrap();
    let pid = manager.hot_pid("c").await;
    assert!(pid.is_none(), "the manager's own pool is not used");
    let record = manager.record("c").await.unwrap();
    let hot = pool.hot_pid(&record.session_id).expect("hot after turn 1");
    manager
        .continue_conversation("c", "I live in Paris.")
        .await
        .unwrap();
    manager
        .continue_conversation("c", "Where do I live, and what is my name?")
        .await
        .unwrap();
    let stats = pool.stats();
    assert_eq!(stats.started, 1, "three turns, one process: {stats:?}");
    assert_eq!(stats.hot_hits, 2);
    let record = manager.record("c").await.unwrap();
    assert_eq!(pool.hot_pid(&record.session_id), Some(hot));
    let third = turns(&h).pop().unwrap();
    assert!(third.mentions("My name is Ada.") && third.mentions("I live in Paris."));

    // Evicted, the next turn resumes the conversation in a new process: the CLI
    // cannot load a conversation into a parked spare, so it is a cold `--resume`.
    pool.end_conversation(&record.session_id);
    assert!(claude_code_testkit::wait_until_gone(&[hot], Duration::from_secs(10)).await);
    manager
        .continue_conversation("c", "And my name again?")
        .await
        .unwrap();
    let stats = pool.stats();
    assert_eq!(stats.started, 2, "{stats:?}");
    assert_eq!(stats.cold_starts, 2);
    let fourth = turns(&h).pop().unwrap();
    assert!(fourth.mentions("My name is Ada.") && fourth.mentions("I live in Paris."));
    // Each turn's own cost adds up to the conversation's.
    let record = manager.record("c").await.unwrap();
    let sum: f64 = record.turns.iter().filter_map(|t| t.cost_usd).sum();
    assert!((sum - record.total_cost_usd).abs() < 1e-9, "{record:?}");
    assert!(record.turns.iter().all(|t| t.cost_usd.unwrap_or(0.0) > 0.0));
}

#[tokio::test]
async fn one_spare_profile_serves_three_directories_models_and_modes_without_a_cold_start() {
    claude_code_testkit::require_cli!("2.1.331", "parked spares (--await-claim) and claim_session");
    let h = Harness::new().await;
    let profile = h.options().build().unwrap();
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 2,
            refill_delay: Duration::ZERO,
            ..PoolConfig::default()
        }
        .prewarm(profile.clone(), 1),
    );
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (dir, model) in [
        ("a", "claude-haiku-4-5"),
        ("b", "claude-sonnet-4-5"),
        ("c", "claude-haiku-4-5"),
    ] {
        assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
        let cwd = h.sandbox.cwd().join(dir);
        std::fs::create_dir_all(&cwd).unwrap();
        let cwd = cwd.canonicalize().unwrap();
        let marker = format!("MARK_{dir}");
        h.mock.on(Rule::prompt_contains(&marker).steps([
            Reply::tool_use("Write", json!({"file_path": "marker.txt", "content": dir})),
            Reply::text("written"),
        ]));
        let options = profile
            .to_builder()
            .cwd(&cwd)
            .model(model)
            .permission_mode(PermissionMode::AcceptEdits)
            .build()
            .unwrap();
        let run = pool.query(&marker, options).await.unwrap();
        assert_eq!(run.served(), Served::Claimed, "{dir}");
        let messages = run.collect_all().await.unwrap();
        let init = messages
            .iter()
            .find_map(|m| match m {
                Message::System(s) => s.init().map(|i| i.cwd.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(std::path::Path::new(&init), cwd, "the spare moved to {dir}");
        assert_eq!(
            std::fs::read_to_string(cwd.join("marker.txt")).unwrap(),
            dir
        );
        let request = turns(&h)
            .into_iter()
            .rfind(|r| r.mentions(&marker))
            .unwrap();
        seen.insert(
            dir.to_owned(),
            request.model().unwrap_or_default().to_owned(),
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.cold_starts, 0, "{stats:?}");
    assert_eq!(stats.claimed, 3, "{stats:?}");
    assert_eq!(seen["a"], "claude-haiku-4-5");
    assert_eq!(seen["b"], "claude-sonnet-4-5");
    assert_eq!(seen["c"], "claude-haiku-4-5");
}

#[tokio::test]
async fn a_claim_the_cli_refuses_falls_back_to_a_cold_start_and_says_why() {
    claude_code_testkit::require_cli!("2.1.331", "parked spares (--await-claim) and claim_session");
    let h = Harness::new().await;
    // Root may bypass permissions only in a sandbox.
    let profile = h.options().env("IS_SANDBOX", "1").build().unwrap();
    let pool = QueryPool::new(PoolConfig::default().prewarm(profile.clone(), 1));
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    // A spare started without --allow-dangerously-skip-permissions cannot take
    // bypassPermissions: the CLI refuses the claim.
    let options = profile
        .to_builder()
        .permission_mode(PermissionMode::BypassPermissions)
        .build()
        .unwrap();
    let mut run = pool.query("hello bypass", options).await.unwrap();
    let mut messages = Vec::new();
    while let Some(message) = futures::StreamExt::next(&mut run).await {
        messages.push(message.unwrap());
    }
    assert_eq!(run.served(), Served::Cold, "the run says how it was served");
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("Mock reply to: hello bypass")
    );
    let stats = pool.stats();
    assert_eq!(
        stats.claim_fallbacks.get("permission_mode_not_claimable"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.cold_starts, 1, "{stats:?}");
    assert_eq!(stats.claimed, 0, "{stats:?}");
    // The prompt went out with the refused claim: the spare refused it too, so the
    // model saw it once, from the cold start.
    assert_eq!(turns(&h).len(), 1, "{:?}", turns(&h));
}

#[tokio::test]
async fn a_replacement_spare_waits_for_the_refill_delay() {
    claude_code_testkit::require_cli!("2.1.331", "parked spares (--await-claim) and claim_session");
    let h = Harness::new().await;
    let options = h.options().build().unwrap();
    let delay = Duration::from_secs(4);
    let pool = QueryPool::new(
        PoolConfig {
            refill_delay: delay,
            ..PoolConfig::default()
        }
        .prewarm(options.clone(), 1),
    );
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    let before = pool.stats().started;
    let taken = Instant::now();
    let run = pool.query("take the spare", options).await.unwrap();
    assert_eq!(run.served(), Served::Claimed);
    run.collect_all().await.unwrap();
    // Watch process starts: none before the delay has passed (the run's own process
    // exiting frees a slot at once, which used to start the replacement early).
    while taken.elapsed() < delay - Duration::from_millis(500) {
        assert_eq!(
            pool.stats().started,
            before,
            "a replacement started {:?} after the take",
            taken.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pool.wait_warm(1, Duration::from_secs(60)).await);
    assert_eq!(pool.stats().started, before + 1);
    assert!(taken.elapsed() >= delay);
}
