//! Custom tools: async Rust functions the model can call, served from this process as
//! an in-process MCP server. A small calculator.
//!
//! ```text
//! cargo run -p claude-code-sdk --example custom_tools
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{Message, ToolResult, query, sdk_mcp_server, tool};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

// The tools' input. Its JSON Schema (from `schemars`, doc comments included) is what
// the model sees; the arguments it sends are deserialized into it, and bad ones are
// answered with an error result without calling the handler.
/// Two numbers.
#[derive(Deserialize, JsonSchema)]
struct Operands {
    /// The first number.
    a: f64,
    /// The second number.
    b: f64,
}

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = common::Backend::start().await;

    // A tool: a name, a description, and an async handler that takes the typed input.
    let add = tool("add", "Add two numbers", |args: Operands| async move {
        println!("  [tool] add({}, {})", args.a, args.b);
        Ok(ToolResult::text((args.a + args.b).to_string()))
    });
    let multiply = tool(
        "multiply",
        "Multiply two numbers",
        |args: Operands| async move {
            println!("  [tool] multiply({}, {})", args.a, args.b);
            Ok(ToolResult::text((args.a * args.b).to_string()))
        },
    );
    let divide = tool("divide", "Divide a by b", |args: Operands| async move {
        println!("  [tool] divide({}, {})", args.a, args.b);
        if args.b == 0.0 {
            // An error result: the model sees the text and knows the call failed.
            return Ok(ToolResult::error("cannot divide by zero"));
        }
        Ok(ToolResult::text((args.a / args.b).to_string()))
    });

    // The server's name goes into the tool names the model sees:
    // `mcp__calc__add`, `mcp__calc__multiply`, `mcp__calc__divide`.
    let calculator = sdk_mcp_server("calc", "1.0.0", [add, multiply, divide]);
    let options = backend
        .options()
        .sdk_mcp_server(calculator)
        // Like any MCP tool, they need permission: allow them by name.
        .allowed_tools(["mcp__calc__add", "mcp__calc__multiply", "mcp__calc__divide"])
        .build()?;

    let prompt = "Use the calculator tools to compute (12.5 × 4) + 7, then try to divide \
                  the result by 0 and tell me what happened.";
    let mut stream = query(prompt, options);
    while let Some(message) = stream.next().await {
        match message? {
            Message::Assistant(assistant) if !assistant.text().is_empty() => {
                println!("Assistant: {}", assistant.text());
            }
            Message::Result(result) => println!(
                "\n{} model turns, ${:.6}",
                result.num_turns,
                result.total_cost_usd.unwrap_or(0.0)
            ),
            _ => {}
        }
    }
    Ok(())
}
