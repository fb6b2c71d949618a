//! A `QueryPool` for a web service: a bound on CLI processes, a bounded wait queue,
//! and pre-warmed processes that answer without the CLI's cold start.
//!
//! Four questions run at once on a pool of three processes, two of them started in
//! advance; then a tiny pool shows what happens when there is no room: `PoolBusy`.
//!
//! ```text
//! cargo run -p claude-code-sdk --example pool
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use claude_code_sdk::{ClaudeCodeOptions, Message, PoolConfig, QueryPool};
use common::Backend;
use futures::StreamExt;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = Backend::start().await;
    let options = backend.options().max_turns(1).build()?;

    concurrent_queries(&options).await?;
    when_the_pool_is_full(&options).await?;
    Ok(())
}

async fn concurrent_queries(options: &ClaudeCodeOptions) -> claude_code_sdk::Result<()> {
    println!("=== Four queries on a pool of three processes ===");
    // At most 3 CLI processes at once, warm ones included. Up to 8 queries may wait
    // for one, each for at most 20 s. Two processes are started and initialized in
    // advance for these options, so the first two queries skip the cold start
    // (0.4–0.9 s of process start-up and handshake).
    let pool = QueryPool::new(
        PoolConfig {
            max_concurrent: 3,
            max_queued: 8,
            queue_timeout: Duration::from_secs(20),
            ..Default::default()
        }
        .prewarm(options.clone(), 2),
    );
    // Warming happens in the background; a service would just start serving. We wait
    // so that the demo is predictable.
    let ready = pool.wait_warm(2, Duration::from_secs(60)).await;
    println!("warm processes ready: {ready}, pids {:?}", pool.warm_pids());
    println!("{:?}\n", pool.stats());

    // A warm process is matched by options: a query whose options differ from the
    // pre-warmed profile (another cwd, model, system prompt, ...) starts cold.
    let questions = ["mutex", "semaphore", "channel", "thread pool"];
    let runs = questions.iter().enumerate().map(|(i, term)| {
        let pool = pool.clone(); // clones share the pool
        let options = options.clone();
        async move {
            let started = Instant::now();
            let prompt = format!("In one sentence, what is a {term}?");
            // `query` waits for a warm process or a free slot, then returns a stream
            // of messages that holds its process slot until it is dropped. A warm
            // process's pid is known at once, a cold one's once it has started.
            let mut run = pool.query(prompt, options).await?;
            let mut answer = String::new();
            let mut pid = run.pid();
            while let Some(message) = run.next().await {
                pid = pid.or(run.pid());
                if let Message::Result(result) = message? {
                    answer = result.result.unwrap_or_default();
                }
            }
            let (warm, waited) = (run.was_warm(), run.waited());
            println!(
                "query {}: {} process (pid {}), waited {} ms, done in {} ms\n  {answer}",
                i + 1,
                if warm { "warm" } else { "cold" },
                pid.map_or("?".to_owned(), |p| p.to_string()),
                waited.as_millis(),
                started.elapsed().as_millis(),
            );
            Ok::<(), claude_code_sdk::Error>(())
        }
    });
    for outcome in futures::future::join_all(runs).await {
        outcome?;
    }

    // Used warm processes are replaced in the background (after `refill_delay`,
    // 250 ms by default, so that a starting CLI does not slow the query that just
    // took a warm one). `completed`, `warm_hits`, `started` and `mean_wait` add up
    // what happened.
    println!("\n{:?}", pool.stats());
    // A replacement needs a free slot. One that found all three busy (the cold
    // queries hold them) is started on a later pass of the pool's background task,
    // so the pool can take a few seconds to be fully warm again after a burst.
    let refill = Instant::now();
    pool.wait_warm(2, Duration::from_secs(60)).await;
    println!(
        "after the refill ({} ms later): {:?}",
        refill.elapsed().as_millis(),
        pool.stats()
    );
    // Dropping the last clone of the pool kills its warm processes.
    Ok(())
}

async fn when_the_pool_is_full(options: &ClaudeCodeOptions) -> claude_code_sdk::Result<()> {
    println!("\n=== No room: PoolBusy ===");
    // One process, one place in the queue, and a short wait.
    let pool = QueryPool::new(PoolConfig {
        max_concurrent: 1,
        max_queued: 1,
        queue_timeout: Duration::from_secs(1),
        ..Default::default()
    });

    // A slow query takes the only process...
    let slow = pool
        .query(
            "Take your time: summarize the history of operating systems.",
            options.clone(),
        )
        .await?;
    let slow = tokio::spawn(slow.collect_all());

    // ...a second one waits in the queue (for at most `queue_timeout`)...
    let waiting = tokio::spawn({
        let pool = pool.clone();
        let options = options.clone();
        async move {
            pool.query("In one sentence, what is a mutex?", options)
                .await
                .map(drop)
        }
    });
    while pool.stats().queued == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("queued: {}", pool.stats().queued);

    // ...and a third finds the queue full: refused at once, nothing started.
    match pool
        .query("In one sentence, what is a channel?", options.clone())
        .await
    {
        Ok(_) => println!("third query: (got a process)"),
        Err(err) if err.is_pool_busy() => println!("third query refused at once: {err}"),
        Err(err) => return Err(err),
    }

    // The waiting query gives up when `queue_timeout` passes before a slot frees up.
    // A web handler would answer 503 with a Retry-After for both.
    match waiting.await.expect("the waiting task panicked") {
        Ok(()) => println!("second query: got the process in time"),
        Err(err) if err.is_pool_busy() => println!("second query timed out in the queue: {err}"),
        Err(err) => return Err(err),
    }

    let messages = slow.await.expect("the slow task panicked")?;
    println!("the slow query finished with {} messages", messages.len());
    println!("{:?}", pool.stats());
    Ok(())
}
