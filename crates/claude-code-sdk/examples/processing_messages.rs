//! Processing messages: every `Message` variant, the content blocks inside them, the
//! tools used, the result's cost and usage, and the flat JSON a web page wants.
//!
//! ```text
//! cargo run -p claude-code-sdk --example processing_messages
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{ContentBlock, Message, query};
use futures::StreamExt;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = common::Backend::start().await;

    // A file for Claude to read, so the run has a tool use to look at.
    std::fs::write(
        backend.workdir().join("notes.txt"),
        "Ship the Rust SDK on Friday.\nWrite the README.\nBenchmark the pool.\n",
    )?;

    let options = backend.options().allowed_tools(["Read"]).build()?;
    let mut stream = query("Read notes.txt and summarize it in one sentence.", options);

    // Every message also has a flat, web-friendly form; keep them to print at the end.
    let mut web = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        describe(&message);
        web.push(message.to_web_json());
    }

    println!("\n=== The same run as web JSON (`to_web_json()`) ===");
    for json in &web {
        println!("{json}");
    }
    Ok(())
}

/// Prints what a message holds, variant by variant.
fn describe(message: &Message) {
    match message {
        // `system` lines: `init` describes the session; others report status.
        Message::System(system) => match system.init() {
            Some(init) => println!(
                "[system/init] model {}, {} tools, permission mode {}, CLI {}",
                init.model,
                init.tools.len(),
                init.permission_mode,
                init.claude_code_version
            ),
            None => println!("[system/{}]", system.subtype),
        },
        // The assistant speaks in content blocks: text, thinking, tool calls.
        Message::Assistant(assistant) => {
            for block in &assistant.content {
                match block {
                    ContentBlock::Text { text } => println!("[assistant] {text}"),
                    ContentBlock::Thinking { thinking, .. } => {
                        println!("[assistant, thinking] {thinking}");
                    }
                    ContentBlock::ToolUse { name, input, .. } => {
                        println!("[assistant] calls {name} with {input}");
                    }
                    other => println!("[assistant] a {} block", other.kind()),
                }
            }
            // The same, as a list of names.
            let tools = message.tools_used();
            if !tools.is_empty() {
                println!("  tools used: {tools:?}");
            }
        }
        // `user` lines carry tool results back to the model.
        Message::User(user) => {
            for block in &user.content {
                if let ContentBlock::ToolResult {
                    content, is_error, ..
                } = block
                {
                    let text = content.as_ref().map(|c| c.text()).unwrap_or_default();
                    let status = if *is_error == Some(true) {
                        "error"
                    } else {
                        "ok"
                    };
                    println!("[tool result, {status}] {} bytes", text.len());
                }
            }
        }
        // The result ends the run: outcome, cost, usage, timing.
        Message::Result(result) => {
            println!(
                "[result] {} after {} turn(s), {} ms",
                result.subtype, result.num_turns, result.duration_ms
            );
            println!("  answer: {}", result.result.as_deref().unwrap_or(""));
            if let Some(cost) = result.total_cost_usd {
                println!("  cost:   ${cost:.6}");
            }
            if let Some(usage) = &result.usage {
                println!(
                    "  usage:  {} input tokens, {} output tokens",
                    usage.input_tokens, usage.output_tokens
                );
            }
        }
        // Partial deltas (with `include_partial_messages`), rate-limit notices, and
        // line types newer than this SDK: all still arrive, never break the stream.
        other => println!("[{}]", other.kind()),
    }
}
