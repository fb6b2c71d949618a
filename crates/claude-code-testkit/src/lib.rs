//! Hermetic tests for code that drives the Claude Code CLI.
//!
//! The real CLI (`claude`) runs offline against [`MockAnthropic`], a local
//! Anthropic Messages API whose "model" is scripted with [`Rule`]s and [`Reply`]s. The CLI
//! really runs its tools (Bash, Write, Read...) in a temporary working directory; only
//! the model is fake. Faults the real CLI cannot be made to produce come from the
//! `fake-claude` binary ([`fake`]).
//!
//! # A tour
//!
//! ```no_run
//! # async fn tour() {
//! use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
//! use serde_json::json;
//!
//! // 1. A mock model: a scripted turn, and a default for everything else.
//! let mock = MockAnthropic::start().await;
//! mock.on(Rule::prompt_contains("USE_BASH").steps([
//!     Reply::tool_use("Bash", json!({"command": "echo hi > out.txt"})),
//!     Reply::text("done"),
//! ]));
//!
//! // 2. A sandbox: temporary cwd and HOME, and an environment that keeps the CLI
//! //    offline (ANTHROPIC_BASE_URL = the mock, no retries, no telemetry).
//! let sandbox = Sandbox::new(&mock);
//! let mut cli = tokio::process::Command::new(cli_path());
//! sandbox.configure(cli.as_std_mut());
//! cli.args(["--output-format", "stream-json", "--verbose", "--input-format", "stream-json",
//!           "--allowedTools", "Bash"]);
//! // ... write the initialize request and a user line on stdin, read until `result` ...
//!
//! // 3. Assert on what the model saw, and on what the tools did.
//! let requests = mock.requests();
//! assert!(requests[1].has_tool_result_for("Bash"));
//! assert!(sandbox.cwd().join("out.txt").exists());
//! # }
//! ```
//!
//! # What is here
//!
//! - [`MockAnthropic`], [`Rule`], [`Reply`], [`RecordedRequest`]: the mock model and
//!   what it received. [`demo_rules`] script a friendly offline demo.
//! - [`Sandbox`]: temporary directories and the CLI's environment.
//! - [`cli_path`], [`fake_claude_path`], [`mock_anthropic_path`]: the programs.
//! - [`fake`]: `fake-claude`'s modes and recordings.
//! - [`pg`]: a fresh PostgreSQL database per test.
//! - [`pid_is_running`], [`wait_until_gone`], [`read_pid_file`]: "no process survives".
//! - [`ServerProcess`]: a server binary started as a child process, once it says where
//!   it listens, with its stderr log ([`ServerLog`]).
//! - [`cli_version`], [`cli_is_at_least`], [`require_cli!`]: the version of the CLI
//!   under test, and skipping (loudly) what it is too old for.
//!
//! Two binaries come with the crate: `mock-anthropic` (the mock as a server,
//! `--demo` for the demo rules) and `fake-claude`.

pub mod fake;
mod mock;
mod paths;
pub mod pg;
mod process;
mod sandbox;
mod server;
mod version;

pub use fake::{FakeMode, Invocation, read_record};
pub use mock::{
    DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, DEMO_FILE, MAX_RECORDED_REQUESTS, MockAnthropic,
    RecordedRequest, Reply, RequestKind, Rule, STRUCTURED_OUTPUT_TOOL, ToolResult, ToolUse,
    conforming_value, demo_rules,
};
pub use paths::{CLI_PATH_ENV, cli_path, fake_claude_path, mock_anthropic_path, workspace_root};
pub use process::{
    pid_is_running, processes_in, read_pid_file, survivors_in, wait_until_gone,
    wait_until_gone_blocking,
};
pub use sandbox::{MOCK_API_KEY, Sandbox, UNREACHABLE_BASE_URL};
pub use server::{ListenError, ServerLog, ServerProcess};
pub use version::{Version, cli_is_at_least, cli_supports, cli_version};
