//! Shared set-up for the SDK's integration tests: the real pinned CLI against the
//! testkit's mock model, in a sandbox of its own; or `fake-claude` for faults.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use claude_code_sdk::{ClaudeCodeOptions, ClaudeCodeOptionsBuilder, Message, ResultMessage};
use claude_code_testkit::{FakeMode, MockAnthropic, Sandbox, cli_path, fake, fake_claude_path};

/// A mock model and a sandbox for one test.
pub struct Harness {
    pub mock: MockAnthropic,
    pub sandbox: Sandbox,
}

impl Harness {
    pub async fn new() -> Harness {
        init_tracing();
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        Harness { mock, sandbox }
    }

    /// Options that run the pinned CLI in the sandbox against the mock.
    pub fn options(&self) -> ClaudeCodeOptionsBuilder {
        ClaudeCodeOptions::builder()
            .cli_path(cli_path())
            .cwd(self.sandbox.cwd())
            .envs(self.sandbox.env())
            .timeout(Duration::from_secs(120))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.sandbox.cwd().join(name)
    }
}

/// Options that run `fake-claude` in `mode`, writing its pids to a file in the sandbox.
pub fn fake_options(sandbox: &Sandbox, mode: FakeMode) -> ClaudeCodeOptionsBuilder {
    init_tracing();
    ClaudeCodeOptions::builder()
        .cli_path(fake_claude_path())
        .cwd(sandbox.cwd())
        .envs(sandbox.env())
        .env(fake::MODE_ENV, mode.as_str())
        .env(fake::PID_FILE_ENV, pid_file(sandbox).display().to_string())
}

pub fn pid_file(sandbox: &Sandbox) -> PathBuf {
    sandbox.root().join("pids")
}

/// The run's result message.
pub fn result_of(messages: &[Message]) -> &ResultMessage {
    messages
        .iter()
        .rev()
        .find_map(Message::as_result)
        .expect("the run has a result")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
