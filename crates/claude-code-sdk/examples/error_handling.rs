//! Error handling: one `Error` type, and `is_*()` predicates to tell failures apart.
//!
//! Five failures, provoked on purpose: bad options, a missing CLI, a timeout, an API
//! that cannot be reached, and a file write the permission mode denies.
//!
//! ```text
//! cargo run -p claude-code-sdk --example error_handling
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use claude_code_sdk::{Error, PermissionMode, query};
use common::Backend;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = Backend::start().await;

    // 1. Options are validated by `build()`: here, a working directory that does not
    //    exist.
    println!("=== Invalid options ===");
    match backend.options().cwd("/no/such/project").build() {
        Ok(_) => println!("(no error)"),
        Err(err) => explain(&err),
    }

    // 2. No CLI where we said it would be. (Without `cli_path`, the SDK searches
    //    CLAUDE_CODE_CLI_PATH, PATH and the usual install locations.)
    println!("\n=== CLI not found ===");
    let options = backend
        .options()
        .cli_path("/opt/nowhere/bin/claude")
        .build()?;
    report(query("Hello", options).collect_all().await);

    // 3. A run that takes longer than its timeout is killed, with the CLI's whole
    //    process group, and ends with a timeout error.
    println!("\n=== Timeout ===");
    let options = backend.options().timeout(Duration::from_secs(3)).build()?;
    let prompt = "Write a very long essay about the history of Rust.";
    report(query(prompt, options).collect_all().await);

    // 4. The model API cannot be reached: here we point the CLI at a closed port and
    //    turn off its retries (by default it retries for minutes).
    println!("\n=== Connection ===");
    let options = backend
        .options()
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .max_api_retries(0)
        .build()?;
    report(query("Hello", options).collect_all().await);

    // 5. `AskForEdits` lets reads run but asks before any change. With nobody to ask
    //    (no permission callback), the write is denied: the run still ends with its
    //    result, which lists the denials, and then a permission error.
    println!("\n=== Permission denied ===");
    let options = backend
        .options()
        .permission_mode(PermissionMode::AskForEdits)
        .build()?;
    let (messages, error) = query("Write a file called secret.txt", options)
        .collect_messages()
        .await;
    println!("the run yielded {} messages", messages.len());
    match error {
        Some(err) => explain(&err),
        None => println!("(no error: nothing was denied)"),
    }
    let secret = backend.workdir().join("secret.txt");
    println!("secret.txt exists: {}", secret.exists());
    Ok(())
}

/// Prints how a run ended.
fn report<T>(outcome: claude_code_sdk::Result<T>) {
    match outcome {
        Ok(_) => println!("(no error: the run succeeded)"),
        Err(err) => explain(&err),
    }
}

/// What a caller would do with each kind of error.
fn explain(err: &Error) {
    if err.is_invalid_options() {
        println!("invalid options, fix the code: {err}");
    } else if err.is_cli_not_found() {
        println!("install Claude Code: {err}");
        println!("  searched: {:?}", err.searched_paths());
    } else if err.is_timeout() {
        println!("too slow, try a bigger timeout: {err}");
    } else if err.is_connection() {
        println!("could not reach Claude: {err}");
    } else if err.is_permission() {
        println!("a tool use was refused: {err}");
        for denial in err.permission_denials() {
            println!("  denied: {} {}", denial.tool_name, denial.tool_input);
        }
    } else if err.is_api() {
        println!("the API said no (status {:?}): {err}", err.api_status());
    } else {
        println!("something else ({}): {err}", err.kind());
    }
    // Errors worth another try say so.
    if err.is_transient() {
        println!("  (transient: a retry may succeed)");
    }
}
