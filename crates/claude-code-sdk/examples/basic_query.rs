//! Basic queries: a plain prompt, a prompt with options, and a prompt that uses tools.
//!
//! ```text
//! cargo run -p claude-code-sdk --example basic_query
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{Message, query};
use common::Backend;
use futures::StreamExt;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = Backend::start().await;

    basic(&backend).await?;
    with_options(&backend).await?;
    with_tools(&backend).await?;
    Ok(())
}

/// The simplest use: a prompt, default options, and the assistant's text.
async fn basic(backend: &Backend) -> claude_code_sdk::Result<()> {
    println!("=== Basic ===");
    let mut stream = query("What is 2 + 2?", backend.options().build()?);
    while let Some(message) = stream.next().await {
        // Only the assistant's words; `Message` has other variants (see
        // processing_messages.rs).
        if let Message::Assistant(assistant) = message? {
            println!("Assistant: {}", assistant.text());
        }
    }
    println!();
    Ok(())
}

/// Options shape the run: a system prompt, a turn limit, ...
async fn with_options(backend: &Backend) -> claude_code_sdk::Result<()> {
    println!("=== With options ===");
    let options = backend
        .options()
        .system_prompt("You are a helpful assistant that explains things simply.")
        .max_turns(1)
        .build()?;
    // `collect_all()` gathers the whole run when you do not need to stream it.
    let messages = query("Explain what Rust is in one sentence.", options)
        .collect_all()
        .await?;
    for assistant in messages.iter().filter_map(Message::as_assistant) {
        println!("Assistant: {}", assistant.text());
    }
    println!();
    Ok(())
}

/// Tools named in `allowed_tools` run without asking. The CLI runs them for real, in
/// the working directory.
async fn with_tools(backend: &Backend) -> claude_code_sdk::Result<()> {
    println!("=== With tools ===");
    let options = backend
        .options()
        .allowed_tools(["Read", "Write"])
        .system_prompt("You are a helpful file assistant.")
        .build()?;
    let mut stream = query(
        "Create a file called hello.txt with 'Hello, World!' in it",
        options,
    );
    while let Some(message) = stream.next().await {
        let message = message?;
        match &message {
            Message::Assistant(_) => {
                for tool in message.tools_used() {
                    println!("(the assistant uses the {tool} tool)");
                }
                if !message.content().is_empty() {
                    println!("Assistant: {}", message.content());
                }
            }
            Message::Result(result) => {
                println!("Cost: ${:.6}", result.total_cost_usd.unwrap_or(0.0));
            }
            _ => {}
        }
    }
    // The file is really there.
    let hello = backend.workdir().join("hello.txt");
    match std::fs::read_to_string(&hello) {
        Ok(text) => println!("{} contains: {}", hello.display(), text.trim()),
        Err(_) => println!("{} was not created", hello.display()),
    }
    Ok(())
}
