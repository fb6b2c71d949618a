//! The server binary as the latency and compare benches run it, and the requests they
//! send it.
#![allow(dead_code)] // each bench uses its own part

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use claude_code_testkit::ServerProcess;
use serde_json::Value;

/// A running server binary and a client for it.
pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts the server binary at `binary` on a free loopback port: a temporary SQLite
    /// directory of its own, no `DATABASE_URL`, one spare per run shape, projects under
    /// `project_root`, the sandbox's settings passed on to its CLIs, and what
    /// `configure` adds (environment, arguments). Waits up to `timeout` for it to say
    /// where it listens; its log is read and drained from then on.
    pub(crate) async fn start(
        binary: &Path,
        project_root: &Path,
        timeout: Duration,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        let mut command = tokio::process::Command::new(binary);
        command
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .args(["--bind", "127.0.0.1:0", "--prewarm", "1", "--project-root"])
            .arg(project_root)
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--pass-env",
                "CLAUDE_CODE_TMPDIR,CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC,CLAUDE_CODE_MAX_RETRIES,DISABLE_*,XDG_*",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true);
        configure(&mut command);
        let server = ServerProcess::spawn(command, timeout)
            .await
            .expect("the server listens");
        Server {
            url: server.url(),
            child: server.child,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    /// POSTs `body` as JSON to `path`; the JSON answer, which must be a success.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// DELETEs `path`, whatever the answer.
    pub(crate) async fn delete(&self, path: &str) {
        let _ = self.http.delete(format!("{}{path}", self.url)).send().await;
    }

    /// Kills it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
