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
//! - `ClaudeClient` turn: the next turn on an open client;
//! - `ResponseCache` hit: no process at all.

use std::time::{Duration, Instant};

use claude_code_sdk::{
    ClaudeClient, ClaudeCodeOptions, Message, PoolConfig, QueryPool, ResponseCache, cached_query,
    query,
};
use claude_code_testkit::{MockAnthropic, Sandbox, cli_path};
use futures::{Stream, StreamExt};

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

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
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

    for round in 0..runs {
        let prompt = format!("benchmark prompt {round}");

        let start = Instant::now();
        let (first, result) = time_stream(start, query(prompt.as_str(), options.clone())).await;
        cold.push(first, result);

        assert!(warm_pool.wait_warm(1, Duration::from_secs(60)).await);
        let start = Instant::now();
        let run = warm_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("warm");
        assert!(run.was_warm());
        let (first, result) = time_stream(start, run).await;
        warm.push(first, result);

        assert!(eager_pool.wait_warm(1, Duration::from_secs(60)).await);
        let start = Instant::now();
        let run = eager_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("warm");
        assert!(run.was_warm());
        let (first, result) = time_stream(start, run).await;
        warm_eager.push(first, result);

        assert!(reuse_pool.wait_warm(1, Duration::from_secs(60)).await);
        let start = Instant::now();
        let run = reuse_pool
            .query(prompt.as_str(), options.clone())
            .await
            .expect("reuse");
        let (first, result) = time_stream(start, run).await;
        reuse.push(first, result);

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
    }
    table.push(("`query()` cold (new process)", cold));
    table.push(("`QueryPool` warm process (refill after 250 ms)", warm));
    table.push(("`QueryPool` warm process (refill at once)", warm_eager));
    table.push(("`QueryPool` reused process (after `/clear`)", reuse));
    table.push(("`ClaudeClient` next turn", client_turn));
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
    client.close().await.expect("close");
}
