//! The version of the CLI under test, and skipping what it is too old for.
//!
//! `make test` runs the SDK's integration tests twice: on the pinned CLI and on the
//! oldest supported one (`CLAUDE_CODE_CLI_PATH` pointing at it). A test of something
//! only newer CLIs have starts with [`require_cli!`](crate::require_cli): on an older
//! CLI it returns early and says so on stderr (past the test harness's capture, so the
//! skip shows in the output of a passing run), never silently passing.
//!
//! ```no_run
//! #[tokio::test]
//! async fn spares_are_claimed() {
//!     claude_code_testkit::require_cli!("2.1.331", "parked spares (--await-claim)");
//!     // ...
//! }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::cli_path;

/// A CLI version, `major.minor.patch`; ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// Parses the first `x.y.z` in `text`, e.g. `2.1.332 (Claude Code)`.
    pub fn parse(text: &str) -> Option<Version> {
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
                Some(Version {
                    major,
                    minor,
                    patch: patch.parse().ok()?,
                })
            })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The version of the CLI under test ([`cli_path`]), read once per path with
/// `--version`.
///
/// # Panics
/// If the CLI cannot be run or prints no version.
pub fn cli_version() -> Version {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Version>>> = OnceLock::new();
    let path = cli_path();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(version) = cache.get(&path) {
        return *version;
    }
    let output = Command::new(&path)
        .arg("--version")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {} --version: {error}", path.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    let version = Version::parse(&text)
        .unwrap_or_else(|| panic!("{} --version printed no version: {text:?}", path.display()));
    cache.insert(path, version);
    version
}

/// Whether the CLI under test is `since` or newer, for a test that checks the newer
/// behaviour on a newer CLI and the older one (an `UnsupportedCli` error, a fallback)
/// on an older CLI.
///
/// # Panics
/// If `since` is not a version, or the CLI's version cannot be read.
pub fn cli_is_at_least(since: &str) -> bool {
    let needed =
        Version::parse(since).unwrap_or_else(|| panic!("{since:?} is not a version (x.y.z)"));
    cli_version() >= needed
}

/// Whether the CLI under test is `since` or newer, for a test that cannot run on an
/// older one ([`require_cli!`](crate::require_cli)). When it is older, writes
/// `SKIPPED <test>: needs Claude Code CLI <since> or newer for <what>; the CLI under
/// test is <version>` on stderr (not captured by the test harness).
///
/// # Panics
/// If `since` is not a version, or the CLI's version cannot be read.
pub fn cli_supports(since: &str, what: &str) -> bool {
    if cli_is_at_least(since) {
        return true;
    }
    let version = cli_version();
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs Claude Code CLI {since} or newer for {what}; the CLI under test \
         is {version}"
    );
    false
}

/// Returns from the calling test (after saying why on stderr) unless the CLI under test
/// is `since` or newer: `require_cli!("2.1.332", "PreSkillShellCommand hooks")`.
#[macro_export]
macro_rules! require_cli {
    ($since:expr, $what:expr) => {
        if !$crate::cli_supports($since, $what) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("2.1.332 (Claude Code)\n").to_string(), "2.1.332");
        assert!(v("2.1.197") < v("2.1.331"));
        assert!(v("2.2.0") > v("2.1.999"));
        assert_eq!(Version::parse("none"), None);
    }
}
