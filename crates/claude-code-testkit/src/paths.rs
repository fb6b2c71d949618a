//! Where the programs under test live: the pinned CLI and the testkit's binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Overrides [`cli_path`].
pub const CLI_PATH_ENV: &str = "CLAUDE_CODE_CLI_PATH";

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The pinned Claude Code CLI: `$CLAUDE_CODE_CLI_PATH` if set, else
/// `<workspace>/tools/claude-cli/node_modules/.bin/claude`.
///
/// # Panics
/// If the file does not exist, with a hint to install it (`make cli`).
pub fn cli_path() -> PathBuf {
    let path = std::env::var_os(CLI_PATH_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tools/claude-cli/node_modules/.bin/claude"));
    assert!(
        path.exists(),
        "the pinned Claude Code CLI is not installed at {}: run `make test` or `make cli` \
         (or set {CLI_PATH_ENV})",
        path.display()
    );
    path
}

/// The `fake-claude` binary of this crate, built on first use if missing.
///
/// Cargo does not build the binaries of a dependency, so this looks next to the
/// running test executable (`target/<profile>/deps/..` puts binaries in
/// `target/<profile>/`); if `fake-claude` is not there, it runs
/// `cargo build -p claude-code-testkit --bins` once for the same target directory and
/// profile (`make test` builds every target first, so this is the fallback).
///
/// # Panics
/// If the binary can be neither found nor built.
pub fn fake_claude_path() -> PathBuf {
    testkit_binary("fake-claude")
}

/// The `mock-anthropic` binary of this crate, found or built like
/// [`fake_claude_path`].
///
/// # Panics
/// If the binary can be neither found nor built.
pub fn mock_anthropic_path() -> PathBuf {
    testkit_binary("mock-anthropic")
}

fn testkit_binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());

    let exe = std::env::current_exe().expect("cannot locate the running executable");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if binary.exists() {
        return binary;
    }
    // One build at a time; later callers find the binary built.
    let _guard = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if binary.exists() {
        return binary;
    }
    build_binaries(&dir);
    assert!(
        binary.exists(),
        "`{name}` is still missing at {} after building claude-code-testkit's binaries; \
         run `cargo build -p claude-code-testkit --bins`",
        binary.display()
    );
    binary
}

/// Builds this crate's binaries into `profile_dir` (`<target-dir>/<profile>`).
fn build_binaries(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "claude-code-testkit",
            "--bins",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"));
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    let status = command.status().unwrap_or_else(|error| {
        panic!("cannot run cargo to build claude-code-testkit's binaries: {error}")
    });
    assert!(
        status.success(),
        "`cargo build -p claude-code-testkit --bins` failed ({status})"
    );
}
