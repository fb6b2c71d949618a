//! Hooks: Rust functions the CLI calls at points of its loop. `PreToolUse` blocks a
//! dangerous command before it runs; `UserPromptSubmit` adds context to the prompt.
//!
//! ```text
//! cargo run -p claude-code-sdk --example hooks
//! ```

#[path = "common/mod.rs"]
mod common;

use claude_code_sdk::{
    HookContext, HookError, HookEvent, HookInput, HookMatcher, HookOutput, Message, query,
};
use futures::StreamExt;

/// Runs before every Bash command: refuses `rm -rf`, lets the rest through.
async fn block_dangerous_commands(
    input: HookInput,
    _tool_use_id: Option<String>,
    _context: HookContext,
) -> Result<HookOutput, HookError> {
    let command = input
        .tool_input()
        .and_then(|tool_input| tool_input["command"].as_str())
        .unwrap_or_default();
    if command.contains("rm -rf") {
        println!("  [PreToolUse hook] blocked `{command}`");
        // The model sees the reason, and the tool never runs.
        return Ok(HookOutput::deny("rm -rf is blocked by a PreToolUse hook"));
    }
    println!("  [PreToolUse hook] allowed `{command}`");
    // The default output changes nothing: normal permission rules apply.
    Ok(HookOutput::default())
}

/// Runs when a prompt is submitted: adds text the model sees along with it.
async fn add_project_context(
    input: HookInput,
    _tool_use_id: Option<String>,
    _context: HookContext,
) -> Result<HookOutput, HookError> {
    println!(
        "  [UserPromptSubmit hook] prompt: {:?}",
        input.prompt().unwrap_or_default()
    );
    Ok(HookOutput::additional_context(
        "Project facts: the codename is Falcon; the build directory is disposable.",
    ))
}

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = common::Backend::start().await;
    std::fs::create_dir_all(backend.workdir().join("build"))?;
    std::fs::write(backend.workdir().join("main.rs"), "fn main() {}\n")?;

    let options = backend
        .options()
        // Bash may run without asking: the hook is the only guard here.
        .allowed_tools(["Bash"])
        .hook(
            HookEvent::PreToolUse,
            HookMatcher::new("Bash"),
            block_dangerous_commands,
        )
        .hook(
            HookEvent::UserPromptSubmit,
            HookMatcher::all(),
            add_project_context,
        )
        .build()?;

    let prompt = "What is the project codename? Then clean up with `rm -rf build` \
                  and show what is left with `ls`.";
    let mut stream = query(prompt, options);
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Assistant(assistant)) if !assistant.text().is_empty() => {
                println!("Assistant: {}", assistant.text());
            }
            Ok(_) => {}
            // A tool use a hook denied is a decision, listed in the result's
            // `permission_denials`; the run itself succeeds.
            Err(err) => return Err(err),
        }
    }
    println!(
        "\nbuild/ still exists: {}",
        backend.workdir().join("build").exists()
    );
    Ok(())
}
