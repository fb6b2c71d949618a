//! [`Sandbox`]: a hermetic place to run the CLI.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::MockAnthropic;

/// The API key the sandbox gives the CLI; the mock accepts anything.
pub const MOCK_API_KEY: &str = "sk-ant-testkit-mock";

/// Where [`Sandbox::without_mock`] points the CLI: a loopback port with nothing
/// behind it, so a stray model request fails fast instead of leaving the machine.
pub const UNREACHABLE_BASE_URL: &str = "http://127.0.0.1:9";

/// A temporary working directory and a temporary home for one CLI run, and the
/// environment that keeps the CLI offline, quiet and quick.
///
/// Everything lives under one temporary directory that is deleted on drop:
/// `cwd/` (the working directory), `home/` (`HOME` and the `XDG_*` directories),
/// `home/.claude/` (`CLAUDE_CONFIG_DIR`) and `tmp/` (`CLAUDE_CODE_TMPDIR`: the CLI's
/// per-project scratch files and its `cc-socks` sockets, otherwise under `/tmp`).
///
/// ```no_run
/// # async fn demo() {
/// use claude_code_testkit::{MockAnthropic, Sandbox, cli_path};
///
/// let mock = MockAnthropic::start().await;
/// let sandbox = Sandbox::new(&mock);
/// let mut cmd = tokio::process::Command::new(cli_path());
/// sandbox.configure(cmd.as_std_mut());
/// # }
/// ```
#[derive(Debug)]
pub struct Sandbox {
    root: TempDir,
    cwd: PathBuf,
    home: PathBuf,
    config_dir: PathBuf,
    tmp: PathBuf,
    base_url: String,
    overrides: Vec<(String, String)>,
}

impl Sandbox {
    /// A sandbox whose CLI talks to `mock`.
    ///
    /// # Panics
    /// If the temporary directories cannot be created.
    pub fn new(mock: &MockAnthropic) -> Self {
        Self::with_base_url(mock.url())
    }

    /// A sandbox whose CLI talks to the Messages API at `base_url`.
    ///
    /// # Panics
    /// If the temporary directories cannot be created.
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        let root = tempfile::Builder::new()
            .prefix("claude-testkit-")
            .tempdir()
            .expect("cannot create the sandbox directory");
        // Canonical paths: what the CLI reports (e.g. `cwd` in `init`) compares equal.
        let base = root
            .path()
            .canonicalize()
            .unwrap_or_else(|_| root.path().to_path_buf());
        let cwd = base.join("cwd");
        let home = base.join("home");
        let config_dir = home.join(".claude");
        let tmp = base.join("tmp");
        for dir in [&cwd, &config_dir, &tmp] {
            std::fs::create_dir_all(dir).expect("cannot create the sandbox directories");
        }
        Self {
            root,
            cwd,
            home,
            config_dir,
            tmp,
            base_url: base_url.into(),
            overrides: Vec::new(),
        }
    }

    /// A sandbox for `fake-claude` runs: no mock, and any real model request fails fast
    /// ([`UNREACHABLE_BASE_URL`]).
    ///
    /// # Panics
    /// If the temporary directories cannot be created.
    pub fn without_mock() -> Self {
        Self::with_base_url(UNREACHABLE_BASE_URL)
    }

    /// Sets (or overrides) one variable of [`Sandbox::env`], e.g.
    /// `CLAUDE_CODE_MAX_RETRIES=2` to see retries.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.overrides.retain(|(k, _)| *k != key);
        self.overrides.push((key, value.into()));
        self
    }

    /// The working directory for the CLI (empty at first).
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The `HOME` for the CLI.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The `CLAUDE_CONFIG_DIR` for the CLI (`<home>/.claude`), where it keeps sessions.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The sandbox's root directory, parent of all the others.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The environment for the CLI:
    ///
    /// | variable | value | why |
    /// |---|---|---|
    /// | `ANTHROPIC_BASE_URL` | the mock's URL | the model is the mock |
    /// | `ANTHROPIC_API_KEY` | [`MOCK_API_KEY`] | API-key auth, no login or keychain |
    /// | `HOME`, `XDG_CONFIG_HOME`, `XDG_CACHE_HOME`, `XDG_DATA_HOME`, `XDG_STATE_HOME` | under the sandbox | no user settings, memory or history leak in or out |
    /// | `CLAUDE_CONFIG_DIR` | `<home>/.claude` | same, for the CLI's own config and sessions |
    /// | `CLAUDE_CODE_TMPDIR` | `<root>/tmp` | scratch files and sockets stay in the sandbox |
    /// | `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC` | `1` | no update checks, telemetry or `/api/hello` probes |
    /// | `DISABLE_AUTOUPDATER`, `DISABLE_TELEMETRY`, `DISABLE_ERROR_REPORTING` | `1` | belt and braces for the same |
    /// | `CLAUDE_CODE_MAX_RETRIES` | `0` | an API error fails the turn at once instead of ~3 minutes of retries |
    ///
    /// plus the [`Sandbox::with_env`] overrides. Use it with
    /// [`Sandbox::inherited_env_to_remove`], or let [`Sandbox::configure`] do both.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = [
            ("ANTHROPIC_BASE_URL", self.base_url.clone()),
            ("ANTHROPIC_API_KEY", MOCK_API_KEY.to_owned()),
            ("HOME", path(&self.home)),
            ("XDG_CONFIG_HOME", path(&self.home.join(".config"))),
            ("XDG_CACHE_HOME", path(&self.home.join(".cache"))),
            ("XDG_DATA_HOME", path(&self.home.join(".local/share"))),
            ("XDG_STATE_HOME", path(&self.home.join(".local/state"))),
            ("CLAUDE_CONFIG_DIR", path(&self.config_dir)),
            ("CLAUDE_CODE_TMPDIR", path(&self.tmp)),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
            ("DISABLE_AUTOUPDATER", "1".to_owned()),
            ("DISABLE_TELEMETRY", "1".to_owned()),
            ("DISABLE_ERROR_REPORTING", "1".to_owned()),
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        for (key, value) in &self.overrides {
            match env.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1.clone_from(value),
                None => env.push((key.clone(), value.clone())),
            }
        }
        env
    }

    /// Variables of the current process that would leak into the child and change what
    /// the CLI does: every `CLAUDE*` and `ANTHROPIC*` variable (auth tokens, a parent
    /// Claude Code session's markers, model overrides, Bedrock/Vertex switches) that
    /// [`Sandbox::env`] does not set.
    pub fn inherited_env_to_remove(&self) -> Vec<String> {
        let env = self.env();
        std::env::vars_os()
            .filter_map(|(key, _)| key.into_string().ok())
            .filter(|key| key.starts_with("CLAUDE") || key.starts_with("ANTHROPIC"))
            .filter(|key| !env.iter().any(|(k, _)| k == key))
            .collect()
    }

    /// Prepares a command for the sandbox: working directory, inherited variables
    /// removed, [`Sandbox::env`] set. For a `tokio::process::Command`, pass
    /// `cmd.as_std_mut()`.
    pub fn configure<'a>(
        &self,
        command: &'a mut std::process::Command,
    ) -> &'a mut std::process::Command {
        command.current_dir(&self.cwd);
        for key in self.inherited_env_to_remove() {
            command.env_remove(key);
        }
        command.envs(
            self.env()
                .iter()
                .map(|(k, v)| (OsStr::new(k), OsStr::new(v))),
        )
    }
}
