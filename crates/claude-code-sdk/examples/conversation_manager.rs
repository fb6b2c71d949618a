//! Conversations for a web application: `ConversationManager` and scoped sessions.
//!
//! - A `ConversationManager` keeps named conversations (one per ticket, chat tab or
//!   user): start, continue, history, end. A follow-up continues the CLI session
//!   itself, so the model sees every earlier turn exactly, tool calls included: the
//!   third turn here needs a fact from the first.
//! - `claude_session` / `ClaudeSession::open` is a conversation bound to a scope: its
//!   CLI process is gone when the session is, whichever way the scope is left.
//! - With the `sqlite` feature, a `SqliteStore` lets a conversation continue after the
//!   manager (or the whole service) restarts.
//!
//! ```text
//! cargo run -p claude-code-sdk --example conversation_manager
//! cargo run -p claude-code-sdk --example conversation_manager --features sqlite
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use claude_code_sdk::{
    ClaudeCodeOptions, ClaudeSession, ConversationManager, Error, ErrorKind, Message,
    claude_session,
};
use claude_code_testkit::{pid_is_running, wait_until_gone};
use common::Backend;

#[tokio::main]
async fn main() -> claude_code_sdk::Result<()> {
    let backend = Backend::start().await;
    // Every conversation of a manager starts from these options; each conversation
    // sets its own working directory.
    let base = backend.options().max_turns(1).build()?;

    conversations(&base, &backend).await?;
    scoped_sessions(&base, &backend).await?;
    #[cfg(feature = "sqlite")]
    surviving_a_restart(&base, &backend).await?;
    #[cfg(not(feature = "sqlite"))]
    println!(
        "\n(Run with `--features sqlite` to see a conversation continue after the \
         manager is rebuilt over a SQLite store.)"
    );
    Ok(())
}

async fn conversations(base: &ClaudeCodeOptions, backend: &Backend) -> claude_code_sdk::Result<()> {
    println!("=== ConversationManager ===");
    // In memory (a `MemoryStore`), with the default limits: up to 8 conversations
    // keep their CLI process between turns ("hot"), and one idle for 5 minutes is
    // closed, to be resumed by session id ("cold") on its next turn.
    let manager = ConversationManager::new(base.clone());

    let id = "ticket-42";
    let first = "Hi, I'm Ada, and our staging server is called bluebird. Please remember that.";
    say(
        first,
        &manager
            .start_conversation(id, first, backend.workdir())
            .await?,
    );
    println!(
        "(hot conversations: {}; {id} keeps CLI process {} for its next turn)\n",
        manager.hot_count(),
        show(manager.hot_pid(id).await)
    );

    // One turn at a time per conversation: a second turn sent while one is running is
    // refused with `ConversationBusy` instead of mixing two answers.
    let second = "Suggest a name for the production server.";
    let (answer, overlapping) = tokio::join!(
        manager.continue_conversation(id, second),
        manager.continue_conversation(id, "Are you still there?"),
    );
    say(second, &answer?);
    match overlapping {
        Err(err) if err.kind() == ErrorKind::ConversationBusy => {
            println!("(a turn sent at the same time was refused: {err})\n");
        }
        Err(err) => return Err(err),
        Ok(_) => println!("(the overlapping turn ran too: it did not overlap)\n"),
    }

    // Turn 3 needs a fact from turn 1: the model sees the whole conversation.
    let third = "Remind me: what is the staging server called?";
    say(third, &manager.continue_conversation(id, third).await?);

    // The store keeps each turn's prompt and final answer (the CLI's own session files
    // keep the full transcript).
    println!("\nhistory of {id}:");
    for (n, turn) in manager.history(id).await?.iter().enumerate() {
        println!(
            "  {}. {} -> {} (tools: {:?}, error: {})",
            n + 1,
            turn.prompt,
            turn.response,
            turn.tools_used,
            turn.is_error
        );
    }

    // Ending a conversation closes its process and forgets it; asking after it again
    // is a `NotFound` error (a web handler's 404).
    let pid = manager.hot_pid(id).await;
    manager.end(id).await?;
    println!(
        "\nended {id}; its CLI process {} is still running: {}",
        show(pid),
        pid.is_some_and(pid_is_running)
    );
    match manager.continue_conversation(id, "Hello?").await {
        Err(err) if err.is_not_found() => println!("continuing it now: {err}"),
        Err(err) => return Err(err),
        Ok(_) => println!("continuing it now: (it was still there)"),
    }
    Ok(())
}

async fn scoped_sessions(
    base: &ClaudeCodeOptions,
    backend: &Backend,
) -> claude_code_sdk::Result<()> {
    println!("\n=== Scoped sessions ===");
    // `claude_session(project_path, max_turns)` is the seed's `async with
    // claude_session(...)`: one conversation, one CLI process. It builds default
    // options, which use your own Claude credentials; with the mock model we need the
    // backend's options, so we open the same session with `ClaudeSession::open`.
    let session = if backend.is_mock() {
        ClaudeSession::open(base.to_builder().max_turns(3).build()?).await?
    } else {
        claude_session(backend.workdir(), 3).await?
    };
    for prompt in [
        "My favourite colour is teal.",
        "What is my favourite colour?",
    ] {
        say(prompt, &session.query(prompt).await?);
    }
    // `close` ends it gracefully: the CLI's input is closed and it exits.
    session.close().await?;

    // Leaving the scope any other way (an error returned with `?`, a panic, a
    // cancelled request) drops the session, and dropping it kills the CLI's whole
    // process group at once.
    let mut pid = None;
    let outcome = handle_request(base, &mut pid).await;
    println!("the request handler returned: {}", outcome.unwrap_err());
    let gone = wait_until_gone(&Vec::from_iter(pid), Duration::from_secs(5)).await;
    println!("its CLI process {} is gone: {gone}", show(pid));
    Ok(())
}

/// A request handler that fails half-way, after its session started a CLI process.
async fn handle_request(
    base: &ClaudeCodeOptions,
    pid: &mut Option<u32>,
) -> claude_code_sdk::Result<String> {
    let session = ClaudeSession::open(base.clone()).await?;
    let prompt = "My favourite colour is green.";
    say(prompt, &session.query(prompt).await?);
    *pid = session.pid();
    // Something else in the handler fails; `?` returns, and `session` is dropped.
    Err(Error::custom(
        ErrorKind::Storage,
        "could not save the answer (a made-up failure)",
    ))
}

#[cfg(feature = "sqlite")]
async fn surviving_a_restart(
    base: &ClaudeCodeOptions,
    backend: &Backend,
) -> claude_code_sdk::Result<()> {
    use claude_code_sdk::{ManagerConfig, SqliteStore};

    println!("\n=== SqliteStore: continuing after a restart ===");
    // The database lives outside the project directory.
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("conversations.db");
    {
        let store = SqliteStore::open(&db).await?;
        let manager =
            ConversationManager::with_store(base.clone(), store, ManagerConfig::default());
        let prompt = "Remember this: the deploy key is K-7731.";
        say(
            prompt,
            &manager
                .start_conversation("deploy", prompt, backend.workdir())
                .await?,
        );
        // Dropping the manager closes its hot processes: the "service" stops here.
    }

    // A new manager over the same file knows the conversation; its first turn resumes
    // the CLI session by id (`--resume`), so the model still sees the first turn.
    // This needs the CLI's own session files, under its config directory, to survive.
    let store = SqliteStore::open(&db).await?;
    let manager = ConversationManager::with_store(base.clone(), store, ManagerConfig::default());
    let prompt = "Which deploy key did I give you?";
    say(
        prompt,
        &manager.continue_conversation("deploy", prompt).await?,
    );
    println!(
        "(the rebuilt manager has {} turns of \"deploy\")",
        manager.history("deploy").await?.len()
    );
    manager.end("deploy").await
}

/// Prints a prompt and the final answer of its turn.
fn say(prompt: &str, messages: &[Message]) {
    let answer = messages
        .iter()
        .rev()
        .find_map(Message::as_result)
        .and_then(|result| result.result.as_deref())
        .unwrap_or("(no answer)");
    println!("You:       {prompt}\nAssistant: {answer}");
}

fn show(pid: Option<u32>) -> String {
    pid.map_or_else(|| "(unknown)".to_owned(), |pid| pid.to_string())
}
