//! Retrying transient failures with `query_with_retry` and a `RetryPolicy`.
//!
//! The seed's `query_with_retry(prompt, max_retries=3)` in Rust: exponential backoff
//! with full jitter, a ceiling on the wait, a callback before each retry, and a clear
//! line between what is worth retrying (an overloaded API, a timeout) and what is not
//! (a bad API key).
//!
//! With the bundled mock model, the model answers `529 Overloaded` twice before it
//! succeeds, so you see two retries. With real Claude, the first attempt usually
//! succeeds and you see none.
//!
//! ```text
//! cargo run -p claude-code-sdk --example retry
//! ```

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use claude_code_sdk::{Message, RetryPolicy, query_with_retry};
use claude_code_testkit::{Reply, Rule};
use common::Backend;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    // For the mock model only: the first two turns it is asked fail with HTTP 529
    // ("overloaded"), whatever the prompt. This rule is checked before the others.
    let backend = Backend::start_with(vec![Rule::any().times(2).reply(Reply::error(529))]).await;

    // The CLI has retries of its own: by default it retries a 529 ten times over about
    // three minutes before it gives up. Here the SDK does the retrying, so turn the
    // CLI's off: each failure then reaches us in well under a second.
    let options = backend.options().max_turns(1).max_api_retries(0).build()?;

    println!("=== A transient failure, retried ===");
    // Up to 3 retries after the first attempt. The ceiling on the wait doubles:
    // 500 ms before the first retry, 1 s before the second, 2 s before the third,
    // never more than `max_delay`. The actual wait is drawn at random between zero
    // and that ceiling ("full jitter"), so that clients that failed together do not
    // come back together. A `retry-after` the API sends is always respected.
    let retries = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&retries);
    let policy = RetryPolicy::exponential(3, Duration::from_millis(500))
        .max_delay(Duration::from_secs(5))
        .on_retry(move |event| {
            counter.fetch_add(1, Ordering::Relaxed);
            // `event.error` is the failure; `api_status()` tells a 529 from a 429.
            println!(
                "  attempt {} failed ({}, status {:?}); retrying in {} ms",
                event.attempt,
                event.error.kind(),
                event.error.api_status(),
                event.delay.as_millis()
            );
        });
    let started = Instant::now();
    let messages = query_with_retry(
        "In one short paragraph: why do web services retry with jitter?",
        options.clone(),
        policy,
    )
    .await?;
    // The messages are those of the attempt that succeeded.
    if let Some(result) = messages.iter().rev().find_map(Message::as_result) {
        println!("Answer: {}", result.result.as_deref().unwrap_or(""));
    }
    println!(
        "succeeded after {} retries, in {:.1} s\n",
        retries.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );

    println!("=== An authentication failure, not retried ===");
    // A 401 will not fix itself: `query_with_retry` returns it at once, whatever the
    // policy says. (With real Claude the key below is really refused; the mock model
    // answers this prompt with a 401.)
    let bad_key = options
        .to_builder()
        .env("ANTHROPIC_API_KEY", "sk-ant-example-revoked-key")
        .build()?;
    let retried = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&retried);
    let policy = RetryPolicy::exponential(3, Duration::from_millis(500))
        .on_retry(move |_| _ = counter.fetch_add(1, Ordering::Relaxed));
    let started = Instant::now();
    match query_with_retry("Say hello (with a revoked API key).", bad_key, policy).await {
        Ok(_) => println!("(no error: the key was accepted)"),
        Err(err) => {
            println!("failed: {err}");
            println!(
                "  kind {}, status {:?}, transient: {}",
                err.kind(),
                err.api_status(),
                err.is_transient()
            );
        }
    }
    println!(
        "retries: {}, after {:.1} s",
        retried.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );

    // What this example does not show: a run that already ran a tool with side
    // effects (a shell command, a file write) is never started over from scratch. Its
    // failure becomes a `SideEffectsNotRepeatable` error naming the tools, unless the
    // policy says `.resume_after_tools()`, which continues the same session instead.
    Ok(())
}
