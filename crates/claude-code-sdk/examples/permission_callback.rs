//! A permission callback: your code decides every tool use. This one allows reads,
//! rewrites a command that writes outside the project, and denies a destructive one.
//!
//! ```text
//! cargo run -p claude-code-sdk --example permission_callback
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{Message, PermissionDecision, PermissionMode, ToolPermissionContext, query};
use futures::StreamExt;
use serde_json::Value;

/// Called before each tool use, with the tool's name and input. It can allow (with the
/// input as is, or rewritten) or deny (the model is told why).
async fn decide(
    tool: String,
    mut input: Value,
    _context: ToolPermissionContext,
) -> PermissionDecision {
    match tool.as_str() {
        // Reading is harmless.
        "Read" | "Grep" | "Glob" => {
            println!("  [callback] allow {tool}");
            PermissionDecision::allow()
        }
        "Bash" => {
            let command = input["command"].as_str().unwrap_or_default().to_owned();
            if command.contains("rm -rf") || command.starts_with("sudo") {
                println!("  [callback] deny  Bash `{command}`");
                PermissionDecision::deny("destructive commands are not allowed here")
            } else if command.contains("/tmp/") {
                // Keep the output in the project: write to ./ instead of /tmp/.
                let rewritten = command.replace("/tmp/", "./");
                println!("  [callback] allow Bash, rewritten: `{command}` -> `{rewritten}`");
                input["command"] = Value::from(rewritten);
                PermissionDecision::allow_with_input(input)
            } else {
                println!("  [callback] allow Bash `{command}`");
                PermissionDecision::allow()
            }
        }
        other => {
            println!("  [callback] deny  {other}");
            PermissionDecision::deny(format!("{other} is not allowed in this example"))
        }
    }
}

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = common::Backend::start().await;
    let workdir = backend.workdir();
    std::fs::write(
        workdir.join("config.toml"),
        "name = \"demo\"\nport = 8080\ndebug = false\n",
    )?;
    std::fs::create_dir_all(workdir.join("build"))?;

    // `Strict` asks before every tool use, reads included, so the callback sees them all.
    // (With `AskForEdits`, reads would run without asking.)
    let options = backend
        .options()
        .permission_mode(PermissionMode::Strict)
        .can_use_tool(decide)
        .build()?;

    let prompt = "Read config.toml, save a one-line summary of it to /tmp/summary.txt \
                  with echo in Bash, then delete the build directory with rm -rf build.";
    let mut stream = query(prompt, options);
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Assistant(assistant)) if !assistant.text().is_empty() => {
                println!("Assistant: {}", assistant.text());
            }
            Ok(Message::Result(result)) => {
                for denial in &result.permission_denials {
                    println!(
                        "Denied during the run: {} {}",
                        denial.tool_name, denial.tool_input
                    );
                }
            }
            Ok(_) => {}
            // Denials the callback decided are listed in the result, not errors: the
            // run succeeds. (A denial nobody decided would end it with a permission error.)
            Err(err) => return Err(err),
        }
    }

    // What really happened on disk.
    let summary = std::fs::read_to_string(workdir.join("summary.txt"));
    println!(
        "\n./summary.txt: {}",
        summary.as_deref().map_or("(missing)", str::trim)
    );
    println!("build/ still exists: {}", workdir.join("build").exists());
    Ok(())
}
