//! Finding the `claude` executable and its version.
//!
//! The search order:
//!
//! 1. [`ClaudeCodeOptions::cli_path`](crate::ClaudeCodeOptions::cli_path);
//! 2. the `CLAUDE_CODE_CLI_PATH` environment variable;
//! 3. `claude` on `PATH`;
//! 4. the usual install locations: `~/.claude/local/claude`, `~/.local/bin/claude`,
//!    `~/.npm-global/bin/claude`, `/usr/local/bin/claude`, `~/node_modules/.bin/claude`,
//!    `~/.yarn/bin/claude`, `/opt/homebrew/bin/claude`.
//!
//! A CLI older than [`MIN_CLI_VERSION`] is refused with an
//! [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error. The version is read once
//! per executable (by path and modification time) with `claude --version`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorKind, Result};
use crate::util::lock;

/// The oldest CLI the SDK drives: 2.1.197, the oldest version its test suite runs
/// against (`make test` runs the SDK's integration tests on it). An older CLI is
/// refused with an [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error.
///
/// What 2.1.197 lacks is gated by version (the README's Requirements section lists
/// it): parked pool spares (`--await-claim`), `--permission-prompts`, the `/clear`
/// reset a pool reuses processes with, newer hook events (`PreSkillShellCommand`, ...),
/// newer flags and newer control requests. Asking an older CLI for one of them is an
/// [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error naming the version
/// needed, or, where the SDK has another way (a cold start instead of a spare), the
/// other way.
pub const MIN_CLI_VERSION: CliVersion = CliVersion::new(2, 1, 197);

/// 2.1.331: the first version after 2.1.197 measured here.
const V2_1_331: CliVersion = CliVersion::new(2, 1, 331);
/// 2.1.332.
const V2_1_332: CliVersion = CliVersion::new(2, 1, 332);

/// The first CLI version known to take `--permission-prompts` (measured: absent in
/// 2.1.197, present in 2.1.331).
pub(crate) const PERMISSION_PROMPTS_SINCE: CliVersion = V2_1_331;

/// The first CLI version known to take `--await-claim` and `claim_session` (measured:
/// absent in 2.1.197, present in 2.1.331).
pub(crate) const AWAIT_CLAIM_SINCE: CliVersion = V2_1_331;

/// The first CLI version known to confirm a `/clear` with a `conversation_reset` line
/// (measured: 2.1.197 starts a new session on `/clear` without saying so; 2.1.331 says
/// so). The SDK resets a pooled process only on a CLI that confirms it.
pub(crate) const CONVERSATION_RESET_SINCE: CliVersion = V2_1_331;

/// Command-line flags newer than [`MIN_CLI_VERSION`], with the first version known to
/// take them (measured: 2.1.197 exits with `error: unknown option`; 2.1.331 and 2.1.332
/// take them). A run whose arguments name one of these on an older CLI fails before
/// the CLI starts, with an [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error
/// that names the version needed.
pub(crate) const FLAGS_SINCE: &[(&str, CliVersion)] = &[
    ("await-claim", V2_1_331),
    ("autocompact", V2_1_331),
    ("environment", V2_1_331),
    ("forward-subagent-text", V2_1_331),
    ("permission-prompts", V2_1_331),
    ("restricted", V2_1_331),
    ("system-prompt-snapshot", V2_1_331),
];

/// Hook events newer than [`MIN_CLI_VERSION`], with the first version known to fire
/// them. An older CLI takes a hook for an event it does not know at `initialize` and
/// never calls it (measured on 2.1.197), so the SDK refuses such a hook with an
/// [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error instead.
pub(crate) const HOOK_EVENTS_SINCE: &[(&str, CliVersion)] = &[
    ("DirectoryAdded", V2_1_331),
    ("PostModelSwitch", V2_1_331),
    ("PreModelSwitch", V2_1_331),
    ("PreSkillShellCommand", V2_1_332),
];

/// Control requests (by subtype) newer than [`MIN_CLI_VERSION`], with the first version
/// known to answer them. Any control request a CLI answers with "Unsupported control
/// request subtype" is an [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) error;
/// for these, the error names the version needed.
///
/// Every other control request the SDK types ([`crate::control`]) is answered by
/// 2.1.197 already (measured: `mcp_status`, `mcp_reconnect`, `mcp_toggle`,
/// `mcp_set_servers`, `rewind_files`, `set_max_thinking_tokens`, `stop_task`,
/// `background_tasks`, `get_context_usage`, `apply_flag_settings`, `reload_plugins`,
/// `reload_skills`), and so is file checkpointing.
pub(crate) const CONTROL_REQUESTS_SINCE: &[(&str, CliVersion)] = &[
    ("claim_session", V2_1_331),
    ("list_models", V2_1_331),
    // Measured: absent in 2.1.197, present in 2.1.332 (2.1.331 not measured).
    ("reload_output_styles", V2_1_332),
];

/// The first version known to have `name` in `table`, when it is newer than
/// [`MIN_CLI_VERSION`].
pub(crate) fn since(table: &[(&str, CliVersion)], name: &str) -> Option<CliVersion> {
    table
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, version)| *version)
}

/// The first CLI version known to take `--session-mirror` (measured: present in
/// 2.1.331).
pub(crate) const SESSION_MIRROR_SINCE: CliVersion = V2_1_331;

/// A CLI version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CliVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl CliVersion {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        CliVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses the first `x.y.z` in `claude --version` output, e.g. `2.1.331 (Claude Code)`.
    pub fn parse(text: &str) -> Option<CliVersion> {
        text.split(|c: char| c.is_whitespace() || c == 'v')
            .find_map(|word| {
                let mut parts = word.split('.');
                let major = parts.next()?.parse().ok()?;
                let minor = parts.next()?.parse().ok()?;
                let patch: String = parts
                    .next()?
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                Some(CliVersion::new(major, minor, patch.parse().ok()?))
            })
    }

    /// Whether this CLI takes `--permission-prompts`.
    pub(crate) fn supports_permission_prompts_flag(&self) -> bool {
        *self >= PERMISSION_PROMPTS_SINCE
    }

    /// Whether this CLI can start as a parked spare (`--await-claim`) and be bound to a
    /// run with `claim_session`.
    pub(crate) fn supports_await_claim(&self) -> bool {
        *self >= AWAIT_CLAIM_SINCE
    }

    /// Whether this CLI mirrors transcripts (`--session-mirror`).
    pub(crate) fn supports_session_mirror(&self) -> bool {
        *self >= SESSION_MIRROR_SINCE
    }

    /// Whether this CLI confirms a `/clear` (a `conversation_reset` line), so a process
    /// can be reset and reused for another conversation.
    pub(crate) fn supports_conversation_reset(&self) -> bool {
        *self >= CONVERSATION_RESET_SINCE
    }
}

impl fmt::Display for CliVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

const INSTALL_HINT: &str = "install it with `npm install -g @anthropic-ai/claude-code` \
     (or `curl -fsSL https://claude.ai/install.sh | bash`), or set cli_path / CLAUDE_CODE_CLI_PATH";

/// Finds the `claude` executable.
///
/// # Errors
///
/// [`CliNotFound`](crate::ErrorKind::CliNotFound), naming every place searched
/// ([`Error::searched_paths`]) and how to install the CLI.
pub fn find_cli(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(path) = explicit {
        if is_executable(path) {
            return Ok(path.to_owned());
        }
        return Err(Error::new(
            ErrorKind::CliNotFound,
            format!(
                "Claude Code CLI not found at cli_path {}; {INSTALL_HINT}",
                path.display()
            ),
        )
        .with_searched(vec![path.to_owned()]));
    }
    if let Some(path) = std::env::var_os("CLAUDE_CODE_CLI_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        searched.push(path);
    }
    if let Ok(path) = which::which("claude") {
        return Ok(path);
    }
    searched.push(PathBuf::from("$PATH/claude"));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(home) = &home {
        for rel in [
            ".claude/local/claude",
            ".local/bin/claude",
            ".npm-global/bin/claude",
            "node_modules/.bin/claude",
            ".yarn/bin/claude",
        ] {
            candidates.push(home.join(rel));
        }
    }
    candidates.push(PathBuf::from("/usr/local/bin/claude"));
    candidates.push(PathBuf::from("/opt/homebrew/bin/claude"));
    for path in candidates {
        if is_executable(&path) {
            return Ok(path);
        }
        searched.push(path);
    }
    let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    Err(Error::new(
        ErrorKind::CliNotFound,
        format!(
            "Claude Code CLI not found (searched {}); {INSTALL_HINT}",
            list.join(", ")
        ),
    )
    .with_searched(searched))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

type VersionCache = Mutex<HashMap<(PathBuf, Option<SystemTime>), CliVersion>>;

fn cache() -> &'static VersionCache {
    static CACHE: OnceLock<VersionCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The version of the CLI at `path`, read with `--version` run with `env` added to
/// the environment (cached by path and modification time), and checked against
/// [`MIN_CLI_VERSION`].
///
/// # Errors
///
/// [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) for an old or unreadable
/// version; [`Connection`](crate::ErrorKind::Connection) when it cannot be run.
pub async fn cli_version(path: &Path, env: &[(String, String)]) -> Result<CliVersion> {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let key = (path.to_owned(), mtime);
    if let Some(version) = lock(cache()).get(&key) {
        return Ok(*version);
    }
    let mut command = tokio::process::Command::new(path);
    // Only the essentials of this environment: the process that asks may hold secrets
    // (a server's tokens, its database password) and preloads that are none of the
    // CLI's business, whatever the runs themselves inherit.
    let essentials = crate::options::InheritEnv::essentials();
    command
        .arg("--version")
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(|k| essentials.allows(k))))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .map_err(|_| {
            Error::timeout(format!(
                "{} --version did not answer in 30 s",
                path.display()
            ))
        })?
        .map_err(|e| {
            Error::connection(format!("could not run {} --version", path.display())).with_source(e)
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = CliVersion::parse(&stdout).ok_or_else(|| {
        Error::new(
            ErrorKind::UnsupportedCli,
            format!(
                "could not read a version from `{} --version`: {:?}",
                path.display(),
                stdout.trim()
            ),
        )
        .with_stderr(String::from_utf8_lossy(&output.stderr).into_owned())
        .with_exit_code(output.status.code())
    })?;
    if version < MIN_CLI_VERSION {
        return Err(Error::new(
            ErrorKind::UnsupportedCli,
            format!(
                "Claude Code CLI {version} at {} is older than {MIN_CLI_VERSION}, the oldest this SDK \
                 supports; update it with `npm install -g @anthropic-ai/claude-code@latest`",
                path.display()
            ),
        ));
    }
    lock(cache()).insert(key, version);
    Ok(version)
}

/// What `claude auth status` says about the CLI's credentials.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuthStatus {
    /// Whether the CLI can call the model API (a login, or an API key it found).
    pub logged_in: bool,
    /// How: `"claude.ai"`, `"api_key"`, `"none"`, ... as the CLI names it.
    pub auth_method: String,
    /// The API provider (`firstParty`, `bedrock`, `vertex`, ...).
    pub api_provider: String,
    /// Everything the CLI printed.
    pub raw: serde_json::Value,
}

/// Asks the CLI at `path` whether it has credentials (`claude auth status`), with
/// `env` added to its environment. A login and an `ANTHROPIC_API_KEY` in that
/// environment both count (`auth_method` says which).
///
/// # Errors
///
/// [`Connection`](crate::ErrorKind::Connection) when the CLI cannot be run;
/// [`Timeout`](crate::ErrorKind::Timeout) after 15 s; [`Protocol`](crate::ErrorKind::Protocol)
/// when its answer is not the expected JSON (older CLIs have no `auth status`).
pub async fn auth_status(path: &Path, env: &[(String, String)]) -> Result<AuthStatus> {
    let mut command = tokio::process::Command::new(path);
    command
        .args(["auth", "status", "--json"])
        .env_remove("CLAUDECODE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .map_err(|_| Error::timeout("`claude auth status` did not answer in 15 s"))?
        .map_err(|e| {
            Error::connection(format!("could not run {} auth status", path.display()))
                .with_source(e)
        })?;
    // It exits 1 when logged out, with the same JSON.
    let raw: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        Error::protocol("`claude auth status` did not print JSON")
            .with_source(e)
            .with_raw_line(String::from_utf8_lossy(&output.stdout).into_owned())
            .with_stderr(String::from_utf8_lossy(&output.stderr).into_owned())
    })?;
    let text = |key: &str| raw[key].as_str().unwrap_or_default().to_owned();
    Ok(AuthStatus {
        logged_in: raw["loggedIn"].as_bool().unwrap_or(false),
        auth_method: text("authMethod"),
        api_provider: text("apiProvider"),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            CliVersion::parse("2.1.331 (Claude Code)\n"),
            Some(CliVersion::new(2, 1, 331))
        );
        assert_eq!(CliVersion::parse("v1.0.2"), Some(CliVersion::new(1, 0, 2)));
        assert_eq!(
            CliVersion::parse("claude 2.0.0-beta"),
            Some(CliVersion::new(2, 0, 0))
        );
        assert_eq!(CliVersion::parse("no version"), None);
        assert!(CliVersion::new(2, 1, 197) < CliVersion::new(2, 1, 331));
        assert!(!CliVersion::new(2, 1, 197).supports_permission_prompts_flag());
    }

    #[test]
    fn explicit_missing_path_names_it() {
        let err = find_cli(Some(Path::new("/nope/claude"))).unwrap_err();
        assert!(err.is_cli_not_found());
        assert_eq!(err.searched_paths(), [PathBuf::from("/nope/claude")]);
        assert!(err.to_string().contains("npm install"));
    }
}
