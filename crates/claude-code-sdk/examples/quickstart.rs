//! Quickstart: one prompt, every message printed, then the cost and session id.
//!
//! ```text
//! make run                                  # or:
//! cargo run -p claude-code-sdk --example quickstart
//! ```
//!
//! With `ANTHROPIC_API_KEY` set (or `claude auth login` done) this asks Claude. Without
//! credentials it asks the bundled mock model and prints a banner saying so.

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{Message, query};
use futures::StreamExt;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    // Real Claude if credentials exist, else the bundled mock model (see common/mod.rs).
    let backend = common::Backend::start().await;

    // Options are built and validated up front; one turn is enough for this prompt.
    let options = backend.options().max_turns(1).build()?;

    // `query()` starts the Claude Code CLI and streams what it writes, message by message.
    let started = std::time::Instant::now();
    let mut stream = query(
        "Write a Python function to validate email addresses",
        options,
    );
    while let Some(message) = stream.next().await {
        // An `Err` ends the stream: a failed start, a crash, an error result...
        let message = message?;
        match &message {
            // The last message of a run: what it cost, and the session to resume later.
            Message::Result(result) => {
                println!(
                    "\n--- done in {} ms ({} ms of them the turn itself; the rest is the CLI starting) ---",
                    started.elapsed().as_millis(),
                    result.duration_ms
                );
                println!("cost:       ${:.6}", result.total_cost_usd.unwrap_or(0.0));
                println!("session id: {}", result.session_id);
            }
            // `system` lines carry set-up details; `init` comes first.
            Message::System(system) => println!("[system] {}", system.subtype),
            // Everything else: who said it, and what.
            _ => {
                let content = message.content();
                let shown = if content.is_empty() {
                    format!("({} message)", message.kind())
                } else {
                    content
                };
                println!("[{}] {shown}", message.role());
            }
        }
    }
    Ok(())
}
