//! A multi-turn chat with `ClaudeClient`: one CLI process, three turns, and the
//! conversation remembered between them.
//!
//! ```text
//! cargo run -p claude-code-sdk --example multi_turn_chat
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{ClaudeClient, Message};
use futures::StreamExt;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = common::Backend::start().await;

    // `connect` starts the CLI and completes its handshake; the process then stays up
    // for every turn until `close()`.
    let client = ClaudeClient::connect(backend.options().max_turns(1).build()?).await?;
    println!(
        "Connected to Claude Code {}\n",
        client.server_info().cli_version
    );

    let turns = [
        "Hi! My name is Ada and I'm learning Rust.",
        "What's my name?",
        "And what am I learning?",
    ];
    for prompt in turns {
        println!("You:       {prompt}");
        // Send the prompt, then read this turn's messages up to its result.
        client.query(prompt).await?;
        let mut response = client.receive_response();
        while let Some(message) = response.next().await {
            if let Message::Assistant(assistant) = message? {
                println!("Assistant: {}", assistant.text());
            }
        }
        println!();
    }

    // The client keeps running totals over its turns.
    let totals = client.totals();
    println!(
        "{} turns, ${:.6} in total, {} input and {} output tokens",
        totals.turns, totals.total_cost_usd, totals.input_tokens, totals.output_tokens
    );
    println!(
        "session id: {}",
        client.session_id().unwrap_or_else(|| "(none)".into())
    );

    // Close gracefully: end the CLI's input and wait for it to exit.
    client.close().await
}
