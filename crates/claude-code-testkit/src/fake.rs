//! The `fake-claude` binary's knobs ([`FakeMode`], environment variable names) and its
//! recordings ([`Invocation`]).
//!
//! `fake-claude` stands in for the CLI when a test needs a fault the real CLI cannot
//! produce. It answers `--version`, ignores its other flags, answers control requests,
//! and on each `user` line writes a `system`/`init` line and then acts per
//! [`FakeMode`], with the line shapes of CLI 2.1.331.
//!
//! ```no_run
//! use claude_code_testkit::{FakeMode, fake_claude_path, fake};
//!
//! let mut cmd = tokio::process::Command::new(fake_claude_path());
//! cmd.env(fake::MODE_ENV, FakeMode::Crash.as_str());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Selects the behaviour ([`FakeMode`], by [`FakeMode::as_str`]); default `ok`.
pub const MODE_ENV: &str = "FAKE_CLAUDE_MODE";
/// The version `--version` prints, as `<version> (Claude Code)`; default
/// [`DEFAULT_VERSION`].
pub const VERSION_ENV: &str = "FAKE_CLAUDE_VERSION";
/// Size in bytes of the text of the `huge-line` assistant line; default 200 000 000.
pub const HUGE_BYTES_ENV: &str = "FAKE_CLAUDE_HUGE_BYTES";
/// Bytes written to stderr by `stderr-flood`; default 64 MiB.
pub const STDERR_BYTES_ENV: &str = "FAKE_CLAUDE_STDERR_BYTES";
/// Milliseconds between the assistant lines of `slow`; default 200.
pub const DELAY_MS_ENV: &str = "FAKE_CLAUDE_DELAY_MS";
/// A file to which every fake-claude process appends its pid (and its grandchild's), one
/// per line. `--version` calls are not written.
pub const PID_FILE_ENV: &str = "FAKE_CLAUDE_PID_FILE";
/// The captured session the `replay` mode plays back (a `tests/fixtures/cli-*/*.jsonl`
/// file of the SDK; see [`captured_turns`]).
pub const REPLAY_FILE_ENV: &str = "FAKE_CLAUDE_REPLAY_FILE";
/// A JSON-lines file to which every fake-claude process appends what it got: argv,
/// environment, working directory and stdin lines. Read it with [`read_record`].
pub const RECORD_ENV: &str = "FAKE_CLAUDE_RECORD";

/// The version fake-claude reports by default: the pinned CLI's.
pub const DEFAULT_VERSION: &str = "2.1.332";

/// The `request_id` of the control request the `unknown-request` mode sends.
pub const UNKNOWN_REQUEST_ID: &str = "fake_unknown_1";
/// The subtype of the control request the `unknown-request` mode sends: one no SDK knows.
pub const UNKNOWN_REQUEST_SUBTYPE: &str = "no_such_subtype";
/// The text before the JSON of the SDK's answer in the `unknown-request` mode's
/// assistant line (and result): `<prefix><control_response line as JSON>`.
pub const UNKNOWN_REQUEST_ANSWER_PREFIX: &str = "fake-claude got this control_response: ";

/// What fake-claude does with a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FakeMode {
    /// One assistant text, then a success result; exits 0 when stdin closes.
    Ok,
    /// An assistant line, then exits with code 3 without a result (a message on stderr).
    Crash,
    /// Interleaves non-JSON lines, blank lines, a line of unknown `type`, a JSON array
    /// and a truncated JSON line with valid messages, then a success result.
    Garbage,
    /// One assistant line whose text is `FAKE_CLAUDE_HUGE_BYTES` bytes, then a result
    /// (whose `result` is a short summary, not the huge text).
    HugeLine,
    /// Writes `FAKE_CLAUDE_STDERR_BYTES` to stderr at start-up, before reading stdin,
    /// then behaves like `ok`: a parent that does not drain stderr deadlocks.
    StderrFlood,
    /// Answers control requests and writes `init` for a prompt, never answers it, and
    /// stays alive after stdin closes: only a signal ends it.
    Hang,
    /// Like `hang`, and ignores SIGTERM: only SIGKILL ends it.
    IgnoreSigterm,
    /// Spawns a `sleep 3600` child (in fake-claude's process group, holding its stdout and
    /// stderr), appends both pids to `FAKE_CLAUDE_PID_FILE`, then hangs.
    Grandchild,
    /// Writes an error to stderr and exits 2 before reading anything.
    ExitEarly,
    /// A few assistant lines `FAKE_CLAUDE_DELAY_MS` apart, then a result.
    Slow,
    /// After the prompt's `init`, sends the SDK a control request of an unknown subtype
    /// (`{"type":"control_request","request_id":"fake_unknown_1","request":{"subtype":"no_such_subtype"}}`),
    /// waits for the SDK's `control_response` to it, then writes an assistant text
    /// [`UNKNOWN_REQUEST_ANSWER_PREFIX`] followed by that response line's JSON, and a
    /// success result with the same text.
    UnknownRequest,
    /// Plays back a captured CLI session (`FAKE_CLAUDE_REPLAY_FILE`): for the n-th prompt,
    /// the n-th turn of [`captured_turns`], every line exactly as the real CLI wrote it
    /// (no `init` of its own). A prompt past the last captured turn gets an error result.
    Replay,
    /// Reads stdin and answers nothing: not `initialize`, not a prompt. Exits when
    /// stdin closes.
    NoInitialize,
}

impl FakeMode {
    /// Every mode.
    pub const ALL: [FakeMode; 13] = [
        FakeMode::Ok,
        FakeMode::Crash,
        FakeMode::Garbage,
        FakeMode::HugeLine,
        FakeMode::StderrFlood,
        FakeMode::Hang,
        FakeMode::IgnoreSigterm,
        FakeMode::Grandchild,
        FakeMode::ExitEarly,
        FakeMode::Slow,
        FakeMode::UnknownRequest,
        FakeMode::Replay,
        FakeMode::NoInitialize,
    ];

    /// The value for [`MODE_ENV`], e.g. `ignore-sigterm`.
    pub fn as_str(self) -> &'static str {
        match self {
            FakeMode::Ok => "ok",
            FakeMode::Crash => "crash",
            FakeMode::Garbage => "garbage",
            FakeMode::HugeLine => "huge-line",
            FakeMode::StderrFlood => "stderr-flood",
            FakeMode::Hang => "hang",
            FakeMode::IgnoreSigterm => "ignore-sigterm",
            FakeMode::Grandchild => "grandchild",
            FakeMode::ExitEarly => "exit-early",
            FakeMode::Slow => "slow",
            FakeMode::UnknownRequest => "unknown-request",
            FakeMode::Replay => "replay",
            FakeMode::NoInitialize => "no-initialize",
        }
    }
}

impl fmt::Display for FakeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`FakeMode`] name that is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFakeMode(pub String);

impl fmt::Display for UnknownFakeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = FakeMode::ALL.iter().map(|mode| mode.as_str()).collect();
        write!(
            f,
            "unknown fake-claude mode {:?} (known: {})",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownFakeMode {}

impl FromStr for FakeMode {
    type Err = UnknownFakeMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FakeMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == name)
            .ok_or_else(|| UnknownFakeMode(name.to_owned()))
    }
}

/// The stdout lines of a captured CLI session, cut into turns: each turn ends with (and
/// includes) a `result` line; lines after the last result are left out. Control lines
/// (`control_request`, `control_response`, `control_cancel_request`) are left out too:
/// they answer or ask a particular host. Every other line is kept as captured, unknown
/// types and `keep_alive` included.
///
/// Two capture formats are read: records `{"dir": "out", "msg": {...}}` (with `in`,
/// `stderr` and `exit` records, and an `{"argv": [...]}` header, skipped), and plain
/// stdout lines (any object with a `type`; a header without one is skipped).
pub fn captured_turns(capture: &str) -> Vec<Vec<String>> {
    let mut turns = Vec::new();
    let mut turn = Vec::new();
    for line in capture.lines() {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let message = match record.get("dir").and_then(Value::as_str) {
            Some("out") => record.get("msg").cloned().unwrap_or(Value::Null),
            Some(_) => continue,
            None => record,
        };
        let Some(kind) = message.get("type").and_then(Value::as_str) else {
            continue;
        };
        if kind.starts_with("control_") {
            continue;
        }
        let is_result = kind == "result";
        turn.push(message.to_string());
        if is_result {
            turns.push(std::mem::take(&mut turn));
        }
    }
    turns
}

/// One line of a [`RECORD_ENV`] file. Every line names the process that wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecordLine {
    /// Written first by each process.
    Start {
        /// The process id.
        pid: u32,
        /// The arguments, without the program name.
        argv: Vec<String>,
        /// Every environment variable whose name starts with `CLAUDE` or `ANTHROPIC`.
        env: BTreeMap<String, String>,
        /// The working directory.
        cwd: PathBuf,
    },
    /// One line read from stdin, verbatim (without the newline).
    Stdin {
        /// The process id.
        pid: u32,
        /// The line.
        line: String,
    },
}

/// Everything one fake-claude process was given, from a [`RECORD_ENV`] file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Invocation {
    /// The process id.
    pub pid: u32,
    /// The arguments, without the program name.
    pub argv: Vec<String>,
    /// Every environment variable whose name starts with `CLAUDE` or `ANTHROPIC`.
    pub env: BTreeMap<String, String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The stdin lines, in order.
    pub stdin: Vec<String>,
}

impl Invocation {
    /// Whether `flag` (e.g. `--verbose`) is among the arguments, alone or as
    /// `flag=value`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.argv.iter().any(|arg| {
            arg == flag
                || arg
                    .strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    }

    /// The value of `flag`: the next argument, or what follows `flag=`.
    pub fn flag_value(&self, flag: &str) -> Option<&str> {
        self.argv.iter().enumerate().find_map(|(index, arg)| {
            if arg == flag {
                self.argv.get(index + 1).map(String::as_str)
            } else {
                arg.strip_prefix(flag)?.strip_prefix('=')
            }
        })
    }

    /// The stdin lines that are JSON, parsed.
    pub fn stdin_json(&self) -> Vec<Value> {
        self.stdin
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// Reads a [`RECORD_ENV`] file: one [`Invocation`] per process, in the order they
/// started. Lines that are not records (or were cut short) are skipped.
///
/// # Errors
/// If the file cannot be read.
pub fn read_record(path: impl AsRef<Path>) -> io::Result<Vec<Invocation>> {
    let text = std::fs::read_to_string(path)?;
    let mut invocations: Vec<Invocation> = Vec::new();
    for line in text.lines() {
        match serde_json::from_str::<RecordLine>(line) {
            Ok(RecordLine::Start {
                pid,
                argv,
                env,
                cwd,
            }) => invocations.push(Invocation {
                pid,
                argv,
                env,
                cwd,
                stdin: Vec::new(),
            }),
            Ok(RecordLine::Stdin { pid, line }) => {
                if let Some(invocation) = invocations.iter_mut().rev().find(|i| i.pid == pid) {
                    invocation.stdin.push(line);
                }
            }
            Err(_) => {}
        }
    }
    Ok(invocations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for mode in FakeMode::ALL {
            assert_eq!(mode.as_str().parse::<FakeMode>(), Ok(mode));
        }
        assert!(
            "nope"
                .parse::<FakeMode>()
                .unwrap_err()
                .to_string()
                .contains("known: ok")
        );
    }

    #[test]
    fn flags() {
        let invocation = Invocation {
            argv: ["--verbose", "--max-turns", "3", "--setting-sources="]
                .map(String::from)
                .to_vec(),
            ..Invocation::default()
        };
        assert!(invocation.has_flag("--verbose"));
        assert!(invocation.has_flag("--setting-sources"));
        assert!(!invocation.has_flag("--max"));
        assert_eq!(invocation.flag_value("--max-turns"), Some("3"));
        assert_eq!(invocation.flag_value("--setting-sources"), Some(""));
    }
}
