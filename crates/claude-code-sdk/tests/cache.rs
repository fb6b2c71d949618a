//! `ResponseCache` against the real CLI.

mod common;

use std::time::Duration;

use claude_code_sdk::{Message, ResponseCache, cached_query, query};
use claude_code_testkit::{Reply, Rule};
use common::{Harness, result_of};
use serde_json::json;

fn raw(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(Message::raw).collect()
}

fn kinds(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(Message::kind).collect()
}

#[tokio::test]
async fn a_hit_starts_no_process_and_returns_the_same_messages() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().reply(Reply::text("cached answer")));
    let cache = ResponseCache::new(1024 * 1024, Duration::from_secs(60));
    let options = h.options().build().unwrap();

    let fresh = query("what is this?", options.clone())
        .collect_all()
        .await
        .unwrap();
    let miss = cached_query(&cache, "what is this?", options.clone())
        .await
        .unwrap();
    let requests_after_miss = h.mock.requests().len();
    let hit = cached_query(&cache, "what is this?", options)
        .await
        .unwrap();

    assert_eq!(
        kinds(&miss),
        kinds(&fresh),
        "a cached query returns what a fresh run does"
    );
    assert_eq!(
        raw(&hit),
        raw(&miss),
        "a hit returns the very messages of the run"
    );
    assert_eq!(result_of(&hit).result.as_deref(), Some("cached answer"));
    assert_eq!(
        h.mock.requests().len(),
        requests_after_miss,
        "the hit made no model request"
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn a_different_project_or_model_misses() {
    let h = Harness::new().await;
    let other_project = tempfile::tempdir().unwrap();
    let cache = ResponseCache::new(1024 * 1024, Duration::from_secs(60));
    let options = h.options().build().unwrap();
    cached_query(&cache, "summarize", options.clone())
        .await
        .unwrap();
    let elsewhere = options
        .to_builder()
        .cwd(other_project.path())
        .build()
        .unwrap();
    cached_query(&cache, "summarize", elsewhere).await.unwrap();
    let other_model = options
        .to_builder()
        .model("claude-haiku-4-5")
        .build()
        .unwrap();
    cached_query(&cache, "summarize", other_model)
        .await
        .unwrap();
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (0, 3));
    assert_eq!(h.mock.requests().len(), 3);
}

#[tokio::test]
async fn a_run_that_wrote_a_file_is_not_cached() {
    let h = Harness::new().await;
    let target = h.file("out.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("write").steps([
        Reply::tool_use("Write", json!({"file_path": target, "content": "x"})),
        Reply::text("written"),
    ]));
    let cache = ResponseCache::new(1024 * 1024, Duration::from_secs(60));
    let options = h.options().allowed_tools(["Write"]).build().unwrap();
    cached_query(&cache, "write a file", options.clone())
        .await
        .unwrap();
    std::fs::remove_file(h.file("out.txt")).unwrap();
    cached_query(&cache, "write a file", options).await.unwrap();
    assert!(
        h.file("out.txt").exists(),
        "the second query ran the tool again"
    );
    cache.run_pending_tasks().await;
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries, stats.uncacheable),
        (0, 2, 0, 2)
    );
}

#[tokio::test]
async fn five_concurrent_identical_queries_make_one_model_request() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::any().reply(Reply::text("shared").delay(Duration::from_millis(500))));
    let cache = ResponseCache::new(1024 * 1024, Duration::from_secs(60));
    let options = h.options().build().unwrap();
    let runs = (0..5).map(|_| cached_query(&cache, "same question", options.clone()));
    let results = futures::future::join_all(runs).await;
    for messages in &results {
        assert_eq!(
            result_of(messages.as_ref().unwrap()).result.as_deref(),
            Some("shared")
        );
    }
    assert_eq!(h.mock.requests().len(), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (4, 1));
}

#[tokio::test]
async fn failures_are_not_cached_and_entries_expire() {
    let h = Harness::new().await;
    h.mock.on(Rule::any().times(1).reply(Reply::error(529)));
    let cache = ResponseCache::new(1024 * 1024, Duration::from_millis(300));
    let options = h.options().build().unwrap();
    let err = cached_query(&cache, "q", options.clone())
        .await
        .unwrap_err();
    assert_eq!(err.api_status(), Some(529));
    cached_query(&cache, "q", options.clone()).await.unwrap();
    cached_query(&cache, "q", options.clone()).await.unwrap();
    assert_eq!(cache.stats().hits, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cache.run_pending_tasks().await;
    cached_query(&cache, "q", options).await.unwrap();
    let stats = cache.stats();
    assert_eq!(stats.misses, 3);
    assert!(stats.evictions >= 1, "{stats:?}");
}
