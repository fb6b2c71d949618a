//! Drive [Claude Code](https://docs.claude.com/en/docs/claude-code) from Rust.
//!
//! This crate runs the real `claude` CLI as a child process and talks to it over its
//! stream-json control protocol, the way the official Python and TypeScript SDKs do.
//! You get a stream of typed [`Message`]s, one [`Error`] type with predicates, and the
//! process handling done right: its own process group, bounded buffers, stderr always
//! drained, nothing left running when you drop a stream.
//!
//! # A first query
//!
//! ```no_run
//! use claude_code_sdk::{query, ClaudeCodeOptions, Message};
//! use futures::StreamExt;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let options = ClaudeCodeOptions::builder().max_turns(1).build()?;
//! let mut stream = query("Write a Python function to validate email addresses", options);
//! while let Some(message) = stream.next().await {
//!     let message = message?;
//!     println!("{}: {}", message.role(), message.content());
//! }
//! # Ok(()) }
//! ```
//!
//! # Options
//!
//! [`ClaudeCodeOptions`] carries every option of the Python SDK (`max_turns`,
//! `system_prompt`, `cwd`, `allowed_tools`, `permission_mode`, `model`,
//! `output_format`, `verbose`, `timeout`) and the CLI options a service needs:
//! resuming sessions, MCP servers, structured output, budgets, agents, environment;
//! and what the official SDKs added since: file checkpoints (with
//! [`ClaudeClient::rewind_files`]), thinking, task budgets, plugins, skills, sandbox
//! settings, output styles, `resume_session_at`, `persist_session`. The README's
//! "Parity with the official SDKs" table lists each, with the test that proves it.
//! The builder validates:
//!
//! ```
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, PermissionMode};
//!
//! let options = ClaudeCodeOptions::builder()
//!     .max_turns(3)
//!     .system_prompt("You are a web development expert")
//!     .permission_mode(PermissionMode::AcceptEdits)
//!     .timeout(Duration::from_secs(300))
//!     .build()?;
//!
//! let bad = ClaudeCodeOptions::builder().cwd("/no/such/project").build();
//! assert!(bad.unwrap_err().is_invalid_options());
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! # Permission modes
//!
//! [`PermissionMode`] has the Python SDK's four modes, each with a guarantee the SDK
//! enforces with CLI flags, and the CLI's own modes:
//!
//! | mode | guarantee |
//! |---|---|
//! | [`ReadOnly`](PermissionMode::ReadOnly) | only `Read`, `Grep` and `Glob` exist: no file can change; reads outside the project need approval |
//! | [`AskForEdits`](PermissionMode::AskForEdits) | reads run; file changes and commands need approval, denied when nobody can approve |
//! | [`AcceptEdits`](PermissionMode::AcceptEdits) | file edits in the project run; other commands need approval |
//! | [`Strict`](PermissionMode::Strict) | only tools in `allowed_tools` run; everything else needs approval |
//!
//! # Errors
//!
//! Every failure is an [`Error`]; ask it what happened:
//!
//! ```no_run
//! # use claude_code_sdk::{query, ClaudeCodeOptions};
//! # async fn run() {
//! match query("hello", ClaudeCodeOptions::default()).collect_all().await {
//!     Ok(messages) => println!("{} messages", messages.len()),
//!     Err(e) if e.is_timeout() => eprintln!("too slow: {e}"),
//!     Err(e) if e.is_connection() => eprintln!("could not reach Claude: {e}"),
//!     Err(e) if e.is_permission() => eprintln!("denied: {:?}", e.permission_denials()),
//!     Err(e) if e.is_cli_not_found() => eprintln!("install Claude Code: {e}"),
//!     Err(e) => eprintln!("failed: {e}"),
//! }
//! # }
//! ```
//!
//! # Many turns, callbacks, hooks and tools
//!
//! [`ClaudeClient`] keeps one CLI process for a conversation, with `interrupt`,
//! `set_model` and `set_permission_mode` while it runs. Your code can decide tool uses
//! ([`permission`]), react to the CLI's hooks ([`hooks`]), and give the model tools
//! written in Rust ([`tools`]):
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeClient, ClaudeCodeOptions, PermissionDecision, PermissionMode};
//! use futures::StreamExt;
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let options = ClaudeCodeOptions::builder()
//!     .permission_mode(PermissionMode::AskForEdits)
//!     .can_use_tool(|tool, _input, _context| async move {
//!         if tool == "Bash" { PermissionDecision::deny("no shell here") } else { PermissionDecision::allow() }
//!     })
//!     .build()?;
//! let client = ClaudeClient::connect(options).await?;
//! client.query("Add a CHANGELOG entry for the last commit").await?;
//! let mut turn = client.receive_response();
//! while let Some(message) = turn.next().await {
//!     println!("{}", message?.content());
//! }
//! # Ok(()) }
//! ```
//!
//! # For web applications
//!
//! Everything a service needs runs on a [`Runner`] ("run this prompt with these
//! options, give me its messages"), so the pieces compose. [`QueryPool`] is the runner
//! to use: every CLI of the program within one bound, parked spares that a run claims
//! in any working directory in ~40 ms instead of a 0.5 s cold start, conversations
//! whose next turn runs on their hot process. [`Retrying`] retries transient failures
//! without repeating side effects; [`ResponseCache`] shares answers keyed by everything
//! that can change them; [`ConversationManager`] continues conversations exactly, in
//! memory or in SQLite; [`claude_session`] is a conversation that cleans up after
//! itself. The `claude-code-server` crate puts all of it behind HTTP.
//!
//! ```no_run
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, PoolConfig, QueryPool, ResponseCache, RetryPolicy, Retrying};
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let base = ClaudeCodeOptions::builder().max_turns(3).build()?;
//! let pool = QueryPool::new(PoolConfig::default().prewarm(base.clone(), 2));
//! let runner = Retrying::new(pool.clone(), RetryPolicy::exponential(2, Duration::from_millis(500)));
//! let cache = ResponseCache::new(64 << 20, Duration::from_secs(600));
//! let options = base.to_builder().cwd("/srv/projects/a").build()?;
//! let messages = cache.query(&runner, "What does this project do?", options).await?;
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! Each layer depends only on the ones above it:
//!
//! | layer | files | holds |
//! |---|---|---|
//! | types | `error.rs`, `message.rs`, `prompt.rs`, `options/` | [`Error`], [`Message`], [`Prompt`], [`ClaudeCodeOptions`] (its builder, validation and fingerprint) |
//! | wire | `wire/` | tolerant serde types for every line the CLI writes or reads |
//! | process | `process/` | finding the CLI, its arguments and environment, spawning it in a process group, line framing, the stderr tail, run markers |
//! | CLI session | `session/` | one CLI process: the control router, the dispatcher for its requests (permission callback, hooks, in-process tools), turns, `/clear`, claims, close |
//! | fronts | `query.rs`, `client.rs`, `control.rs` | [`query()`] and [`ClaudeClient`], thin over a CLI session; the typed answers of its control requests |
//! | runners | `runner.rs` | the [`Runner`] trait, [`DirectRunner`], [`Run`] |
//! | toolkit | `toolkit/` | [`QueryPool`], [`Retrying`], [`ResponseCache`], [`ConversationManager`], [`claude_session`] |
//!
//! # Modules
//!
//! | module | what it holds |
//! |---|---|
//! | [`query`](mod@query) | [`query()`] and its [`Query`] stream |
//! | [`client`] | [`ClaudeClient`]: many turns on one process |
//! | [`control`] | typed answers to the client's control requests: MCP status, context usage, file rewinds, models, commands |
//! | [`options`] | [`ClaudeCodeOptions`], [`PermissionMode`] and the option types |
//! | [`message`] | [`Message`], [`ContentBlock`], [`ResultMessage`], [`Usage`] |
//! | [`error`] | [`Error`] and [`ErrorKind`] |
//! | [`permission`], [`hooks`], [`tools`] | permission callbacks, hooks, in-process MCP tools |
//! | [`runner`] | [`Runner`], [`DirectRunner`], [`Run`] |
//! | [`toolkit`] | the pool, retry, cache, conversations, scoped sessions |
//! | [`cli`] | finding the CLI, its version and credentials; reaping what crashed runs left |
//! | [`store`], [`sessions`] | session transcripts in your database (mirror, materialize for resume) and the sessions API (list, read, rename, tag, fork, delete) |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | no | [`SqliteStore`](toolkit::conversation::ConversationStore), a conversation store in SQLite, and `store::SqliteSessionStore` (sqlx, bundled SQLite) |
//! | `postgres` | no | `store::PostgresSessionStore`, session transcripts in PostgreSQL (sqlx) |
//! | `store-conformance` | no | `store::conformance`: the conformance suite for your own `SessionStore` |
//!
//! # Caveats
//!
//! The CLI is a separate process of about 100 MB that takes 0.4–0.9 s to start. A run
//! that is dropped is killed with its whole process group (`SIGKILL`), including tool
//! processes it started; [`Query::close`] ends one gracefully instead.

pub mod cli;
pub mod client;
pub mod control;
pub mod error;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod message;
pub mod options;
pub mod permission;
pub mod prompt;
pub mod query;
pub mod runner;
pub mod sessions;
pub mod store;
pub mod toolkit;
pub mod tools;

mod process;
mod session;
mod util;
mod wire;

/// Internals for the codec micro-benchmark (`benches/codec.rs`); not an API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod __bench {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    /// Splits `buf` into lines with the SDK's line framing, `chunk` bytes arriving at a
    /// time (as reads from the CLI's pipe do); returns the number of lines.
    pub fn frame(input: &[u8], chunk: usize, max: usize) -> usize {
        let mut codec = crate::process::codec::LineCodec::new(max);
        let mut buf = BytesMut::with_capacity(chunk.max(1));
        let mut lines = 0;
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Ok(Some(line)) = codec.decode(&mut buf) {
                std::hint::black_box(&line);
                lines += 1;
            }
        }
        if let Ok(Some(_)) = codec.decode_eof(&mut buf) {
            lines += 1;
        }
        lines
    }

    /// Decodes one line as the SDK does (framing done); whether it parsed.
    pub fn decode(line: String) -> bool {
        crate::wire::parse_line(line).is_ok()
    }
}

pub use client::{ClaudeClient, ServerInfo, SessionTotals};
pub use control::{
    AccountInfo, AgentInfo, ContextCategory, ContextUsage, McpConnection, McpServerStatus,
    McpSetServersResult, McpToolInfo, ModelInfo, ReloadedPlugins, RewindFilesResult, SlashCommand,
    ThinkingDisplay,
};
pub use error::{Error, ErrorKind, Result};
pub use hooks::{
    ActionDecision, HookContext, HookError, HookEvent, HookInput, HookMatcher, HookOutput,
    ToolDecision,
};
pub use message::{
    AssistantMessage, ContentBlock, Message, PermissionDenial, ResultMessage, Role, StreamEvent,
    SystemInit, SystemMessage, ToolResultContent, Usage, UserMessage, WebMessage,
};
pub use options::{
    AgentDefinition, ClaudeCodeOptions, ClaudeCodeOptionsBuilder, Effort, InheritEnv,
    McpServerConfig, OutputFormat, PermissionMode, SettingSource,
};
pub use options::{PluginConfig, SandboxSettings, Skills, ThinkingConfig};
pub use permission::{PermissionDecision, ToolPermissionContext};
pub use prompt::Prompt;
pub use query::{Query, query};
pub use runner::{DirectRunner, Run, Runner};
pub use toolkit::cache::{CacheStats, ResponseCache, ResponseCacheBuilder, cached_query};
#[cfg(feature = "sqlite")]
pub use toolkit::conversation::SqliteStore;
pub use toolkit::conversation::{
    ConversationManager, ConversationRecord, ConversationStore, ManagerConfig, MemoryStore, Turn,
};
pub use toolkit::pool::{
    PoolConfig, PoolSlot, PoolStats, PooledQuery, PrewarmProfile, QueryPool, Served,
};
pub use toolkit::retry::{RetryEvent, RetryPolicy, Retrying, query_with_retry};
pub use toolkit::scoped::{ClaudeSession, claude_session, claude_session_on, claude_session_with};
pub use tools::{SdkMcpServer, SdkTool, ToolError, ToolResult, sdk_mcp_server, tool};
