//! A `ResponseCache` in front of Claude: the same question under the same options is
//! answered once, then from memory, until its TTL runs out.
//!
//! A miss then a hit, a different working directory (a miss: projects never share
//! answers), concurrent identical questions sharing one run, and a run with side
//! effects that is not cached.
//!
//! ```text
//! cargo run -p claude-code-sdk --example cache
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use claude_code_sdk::{ClaudeCodeOptions, Message, ResponseCache, cached_query};
use common::Backend;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = Backend::start().await;

    // At most 16 MiB of messages (counted as the raw lines the CLI wrote; the least
    // recently used entries go first), each kept for 10 minutes. Clones of a cache
    // share its entries, so a web service keeps one in its state.
    let cache = ResponseCache::new(16 * 1024 * 1024, Duration::from_secs(600));
    let options = backend.options().max_turns(1).build()?;

    println!("=== A miss, then a hit ===");
    let question = "Explain in two sentences what an HTTP cache does.";
    // The first call runs the CLI; the second finds the answer under the same key and
    // starts no process at all.
    timed(
        "first call ",
        cached_query(&cache, question, options.clone()),
    )
    .await?;
    timed(
        "second call",
        cached_query(&cache, question, options.clone()),
    )
    .await?;
    print_stats(&cache).await;

    println!("=== Another project: a miss ===");
    // The key is the prompt plus every option that can change the answer (model,
    // system prompt, tools, permission mode, working directory, environment, ...):
    // the same question about another project is a different question.
    let other_project = backend.workdir().join("other-project");
    std::fs::create_dir_all(&other_project)?;
    let elsewhere = options.to_builder().cwd(&other_project).build()?;
    // Options that do not change the answer (a timeout, say) keep the same key.
    let patient = options
        .to_builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    println!(
        "keys: {} here, {} in other-project, {} with the new timeout",
        short_key(question, &options),
        short_key(question, &elsewhere),
        short_key(question, &patient)
    );
    timed("other cwd  ", cached_query(&cache, question, elsewhere)).await?;
    timed("new timeout", cached_query(&cache, question, patient)).await?;
    print_stats(&cache).await;

    println!("=== Single flight: two identical questions at once ===");
    // The first starts the CLI; the second waits for the same run instead of starting
    // its own. It counts as a hit.
    let question = "Explain in two sentences what request coalescing is.";
    let (a, b) = tokio::join!(
        timed(
            "caller A   ",
            cached_query(&cache, question, options.clone())
        ),
        timed(
            "caller B   ",
            cached_query(&cache, question, options.clone())
        ),
    );
    a?;
    b?;
    print_stats(&cache).await;

    println!("=== Side effects are not cached ===");
    // A run in which a tool changed something (a file write here; shell commands and
    // MCP tools too) is never answered from the cache: asking again must do it again.
    // So are failed runs and runs that resume a conversation.
    let writer = backend.options().allowed_tools(["Write"]).build()?;
    let task = "Create a file called cache-note.txt that says 'written by the cache example'.";
    timed("write once ", cached_query(&cache, task, writer.clone())).await?;
    timed("write again", cached_query(&cache, task, writer)).await?;
    print_stats(&cache).await;
    Ok(())
}

/// Awaits a cached query and prints how long it took and what it answered.
async fn timed(
    label: &str,
    call: impl Future<Output = claude_code_sdk::Result<Vec<Message>>>,
) -> claude_code_sdk::Result<Vec<Message>> {
    let started = Instant::now();
    let messages = call.await?;
    let answer = messages
        .iter()
        .rev()
        .find_map(Message::as_result)
        .and_then(|result| result.result.as_deref())
        .unwrap_or_default();
    println!(
        "{label}: {:>6.1} ms  {answer}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(messages)
}

/// Prints the cache's figures. The cache applies expiry, eviction and its entry count
/// lazily; `run_pending_tasks` brings them up to date first.
async fn print_stats(cache: &ResponseCache) {
    cache.run_pending_tasks().await;
    println!("{:?}\n", cache.stats());
}

/// The start of the cache key of a prompt under options (a SHA-256, in hex).
fn short_key(prompt: &str, options: &ClaudeCodeOptions) -> String {
    ResponseCache::key(&prompt.into(), options)[..12].to_owned()
}
