//! The one error type of the SDK.
//!
//! Every fallible call returns [`Error`]. It is cheap to move (one box), it keeps
//! the context a failure comes with (the exit code and stderr tail of a failed
//! process, the raw line that did not decode, the API status of a failed model
//! call, the result message that ended a run) and it answers the questions a
//! caller asks with `is_*()` predicates:
//!
//! ```
//! # fn handle(err: claude_code_sdk::Error) {
//! if err.is_timeout() {
//!     eprintln!("Claude took too long");
//! } else if err.is_connection() {
//!     eprintln!("could not reach Claude: {err}");
//! } else if err.is_permission() {
//!     eprintln!("a tool use was refused: {err}");
//! } else if err.is_transient() {
//!     eprintln!("worth retrying: {err}");
//! }
//! # }
//! ```
//!
//! This is the Rust form of the Python SDK's `except TimeoutError`,
//! `except ConnectionError` and `except PermissionError` patterns.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::message::{PermissionDenial, ResultMessage};

/// A `Result` alias where the error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in one word. See [`Error::kind`].
///
/// New kinds may be added in minor releases; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The `claude` executable was not found.
    CliNotFound,
    /// The CLI was found but is older than the SDK supports, or lacks what a run asked of
    /// it: a flag, a hook event or a control request a newer CLI has.
    UnsupportedCli,
    /// [`ClaudeCodeOptions`](crate::ClaudeCodeOptions) failed validation.
    InvalidOptions,
    /// The CLI could not be started, or the conversation with it broke: the process
    /// exited or closed its pipes before the run ended, or the CLI could not reach the API.
    Connection,
    /// The configured timeout elapsed, or the CLI did not answer a control request in time.
    Timeout,
    /// The model API answered with an error status (see [`Error::api_status`]).
    Api,
    /// The run hit `max_turns` before it finished.
    MaxTurns,
    /// The run hit `max_budget_usd`.
    Budget,
    /// A tool use was denied without anyone deciding: nobody could be asked, or the
    /// permission mode's guard refused it. (Also: `bypassPermissions` refused as root.)
    PermissionDenied,
    /// The run was interrupted.
    Interrupted,
    /// The run ended with an error the CLI did not classify further.
    Execution,
    /// The CLI wrote something that breaks the protocol (a line over the length limit, an
    /// answer to a request that was never asked, ...).
    Protocol,
    /// A control request sent to the CLI was answered with an error.
    ControlRequest,
    /// A pool had no room: its queue was full or the wait for a slot timed out.
    PoolBusy,
    /// A conversation already has a turn in progress.
    ConversationBusy,
    /// No conversation or session with that id exists.
    NotFound,
    /// A retry was refused because an earlier attempt already ran a tool with side effects.
    SideEffectsNotRepeatable,
    /// Storage (a conversation store, a cache) failed.
    Storage,
    /// An I/O error outside the CLI's pipes.
    Io,
    /// The operation is not supported by this implementation (for example an optional
    /// [`SessionStore`](crate::store::SessionStore) method a store does not provide).
    Unsupported,
}

impl ErrorKind {
    /// A short, stable name for logs and JSON error bodies, e.g. `"timeout"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::CliNotFound => "cli_not_found",
            ErrorKind::UnsupportedCli => "unsupported_cli",
            ErrorKind::InvalidOptions => "invalid_options",
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Api => "api",
            ErrorKind::MaxTurns => "max_turns",
            ErrorKind::Budget => "budget",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Execution => "execution",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ControlRequest => "control_request",
            ErrorKind::PoolBusy => "pool_busy",
            ErrorKind::ConversationBusy => "conversation_busy",
            ErrorKind::NotFound => "not_found",
            ErrorKind::SideEffectsNotRepeatable => "side_effects_not_repeatable",
            ErrorKind::Storage => "storage",
            ErrorKind::Io => "io",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every fallible SDK call.
///
/// Use the `is_*()` predicates or [`kind`](Error::kind) to decide what to do, and
/// the accessors ([`exit_code`](Error::exit_code), [`stderr_tail`](Error::stderr_tail),
/// [`raw_line`](Error::raw_line), [`api_status`](Error::api_status),
/// [`result`](Error::result), ...) for the context.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
    exit_code: Option<i32>,
    stderr_tail: Option<String>,
    raw_line: Option<String>,
    api_status: Option<u16>,
    retry_after: Option<Duration>,
    result: Option<Box<ResultMessage>>,
    searched: Vec<PathBuf>,
    tools_ran: Vec<String>,
    /// Trying again cannot help, whatever the kind says (a CLI that cannot be executed).
    permanent: bool,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
                exit_code: None,
                stderr_tail: None,
                raw_line: None,
                api_status: None,
                retry_after: None,
                result: None,
                searched: Vec::new(),
                tools_ran: Vec::new(),
                permanent: false,
            }),
        }
    }

    /// Creates an error of the given kind with a message: for code built on the SDK
    /// (a custom store, a server) that reports through the same type.
    pub fn custom(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::new(kind, message)
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn with_exit_code(mut self, code: Option<i32>) -> Self {
        self.inner.exit_code = code;
        self
    }

    pub(crate) fn with_stderr(mut self, tail: String) -> Self {
        if !tail.is_empty() {
            self.inner.stderr_tail = Some(tail);
        }
        self
    }

    pub(crate) fn with_raw_line(mut self, raw: impl Into<String>) -> Self {
        self.inner.raw_line = Some(raw.into());
        self
    }

    pub(crate) fn with_api_status(mut self, status: Option<u16>) -> Self {
        self.inner.api_status = status;
        self
    }

    pub(crate) fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.inner.retry_after = after;
        self
    }

    pub(crate) fn with_result(mut self, result: ResultMessage) -> Self {
        self.inner.result = Some(Box::new(result));
        self
    }

    pub(crate) fn with_searched(mut self, searched: Vec<PathBuf>) -> Self {
        self.inner.searched = searched;
        self
    }

    pub(crate) fn permanent(mut self) -> Self {
        self.inner.permanent = true;
        self
    }

    pub(crate) fn with_tools_ran(mut self, tools: Vec<String>) -> Self {
        self.inner.tools_ran = tools;
        self
    }

    /// A copy for a second receiver of the same failure (the source error, which
    /// cannot be cloned, is kept as its text).
    pub(crate) fn duplicate(&self) -> Error {
        let i = &self.inner;
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                message: i.message.clone(),
                source: i
                    .source
                    .as_ref()
                    .map(|s| Box::<dyn std::error::Error + Send + Sync>::from(s.to_string())),
                exit_code: i.exit_code,
                stderr_tail: i.stderr_tail.clone(),
                raw_line: i.raw_line.clone(),
                api_status: i.api_status,
                retry_after: i.retry_after,
                result: i.result.clone(),
                searched: i.searched.clone(),
                tools_ran: i.tools_ran.clone(),
                permanent: i.permanent,
            }),
        }
    }

    pub(crate) fn invalid_options(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidOptions, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn connection(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Connection, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Timeout, message)
    }

    pub(crate) fn unsupported_cli(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::UnsupportedCli, message)
    }

    /// What went wrong, in one word.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The run took longer than the configured timeout, or the CLI did not answer a
    /// control request in time.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// The CLI could not be started or talked to, its process ended before the run did,
    /// or it could not reach the model API.
    pub fn is_connection(&self) -> bool {
        self.inner.kind == ErrorKind::Connection
    }

    /// A tool use was denied and nobody decided it: there was no permission callback to
    /// ask, or the permission mode forbids it. (Denials your callback or hooks chose are
    /// not errors; they are in the result's `permission_denials`.)
    /// [`permission_denials`](Error::permission_denials) lists them.
    pub fn is_permission(&self) -> bool {
        self.inner.kind == ErrorKind::PermissionDenied
    }

    /// The CLI is older than the SDK supports, or lacks what a run asked of it: a flag, a
    /// hook event or a control request that a newer CLI has. The message names what is
    /// missing and, when known, the CLI version that has it. Retrying cannot help.
    pub fn is_unsupported_cli(&self) -> bool {
        self.inner.kind == ErrorKind::UnsupportedCli
    }

    /// The `claude` executable was not found. The message says where the SDK looked
    /// ([`searched_paths`](Error::searched_paths)) and how to install it.
    pub fn is_cli_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::CliNotFound
    }

    /// The model API answered with an error status.
    pub fn is_api(&self) -> bool {
        self.inner.kind == ErrorKind::Api
    }

    /// Options failed validation.
    pub fn is_invalid_options(&self) -> bool {
        self.inner.kind == ErrorKind::InvalidOptions
    }

    /// The run stopped at `max_turns`.
    pub fn is_max_turns(&self) -> bool {
        self.inner.kind == ErrorKind::MaxTurns
    }

    /// The CLI broke the protocol (for example, a line longer than `max_line_bytes`).
    pub fn is_protocol(&self) -> bool {
        self.inner.kind == ErrorKind::Protocol
    }

    /// A pool refused the query: its queue was full or the wait timed out.
    pub fn is_pool_busy(&self) -> bool {
        self.inner.kind == ErrorKind::PoolBusy
    }

    /// A conversation already had a turn in progress.
    pub fn is_conversation_busy(&self) -> bool {
        self.inner.kind == ErrorKind::ConversationBusy
    }

    /// No conversation or session with the given id exists.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::NotFound
    }

    /// Storage (a conversation or session store, a cache) failed.
    pub fn is_storage(&self) -> bool {
        self.inner.kind == ErrorKind::Storage
    }

    /// The operation is not supported by this implementation (an optional
    /// [`SessionStore`](crate::store::SessionStore) method, for example).
    pub fn is_unsupported(&self) -> bool {
        self.inner.kind == ErrorKind::Unsupported
    }

    /// Trying again may succeed: connection failures, timeouts, and API statuses 408
    /// (timeout), 409 (conflict), 429 (rate limit), 5xx and 529 (overloaded). Never
    /// true for authentication failures, bad requests, an API error without a status,
    /// permission denials, max turns, budget, or a CLI that cannot be executed.
    pub fn is_transient(&self) -> bool {
        if self.inner.permanent {
            return false;
        }
        match self.inner.kind {
            ErrorKind::Connection | ErrorKind::Timeout => true,
            ErrorKind::Api => matches!(self.inner.api_status, Some(408 | 409 | 429 | 500..=599)),
            _ => false,
        }
    }

    /// The process exit code, when a CLI process failed.
    pub fn exit_code(&self) -> Option<i32> {
        self.inner.exit_code
    }

    /// The last lines the CLI wrote on stderr (bounded), when a CLI process failed.
    pub fn stderr_tail(&self) -> Option<&str> {
        self.inner.stderr_tail.as_deref()
    }

    /// The raw line that could not be decoded or broke the protocol (possibly shortened
    /// for very long lines).
    pub fn raw_line(&self) -> Option<&str> {
        self.inner.raw_line.as_deref()
    }

    /// The HTTP status of a failed model API call (401, 429, 529, ...).
    pub fn api_status(&self) -> Option<u16> {
        self.inner.api_status
    }

    /// How long the API asked us to wait before trying again, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The result message that ended the run in this error, if the run got that far.
    pub fn result(&self) -> Option<&ResultMessage> {
        self.inner.result.as_deref()
    }

    /// The tool uses that were denied, for a [`PermissionDenied`](ErrorKind::PermissionDenied)
    /// error (empty otherwise).
    pub fn permission_denials(&self) -> &[PermissionDenial] {
        self.inner
            .result
            .as_deref()
            .map(|r| r.permission_denials.as_slice())
            .unwrap_or(&[])
    }

    /// Where the SDK looked for the CLI, for a [`CliNotFound`](ErrorKind::CliNotFound) error.
    pub fn searched_paths(&self) -> &[PathBuf] {
        &self.inner.searched
    }

    /// Tools with side effects that already ran before the failure, for a
    /// [`SideEffectsNotRepeatable`](ErrorKind::SideEffectsNotRepeatable) error and for
    /// errors of runs that used tools.
    pub fn tools_ran(&self) -> &[String] {
        &self.inner.tools_ran
    }

    /// The session id of the run that failed, when known.
    pub fn session_id(&self) -> Option<&str> {
        self.inner.result.as_deref().map(|r| r.session_id.as_str())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        d.field("message", &self.inner.message);
        if let Some(code) = self.inner.exit_code {
            d.field("exit_code", &code);
        }
        if let Some(status) = self.inner.api_status {
            d.field("api_status", &status);
        }
        if let Some(tail) = &self.inner.stderr_tail {
            d.field("stderr_tail", tail);
        }
        if let Some(raw) = &self.inner.raw_line {
            d.field("raw_line", &shorten(raw, 200));
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(status) = self.inner.api_status
            && !self.inner.message.contains(&status.to_string())
        {
            write!(f, " (API status {status})")?;
        }
        if let Some(code) = self.inner.exit_code
            && !self.inner.message.contains("exit code")
        {
            write!(f, " (exit code {code})")?;
        }
        if let Some(tail) = &self.inner.stderr_tail {
            let last = tail.lines().rev().find(|l| !l.trim().is_empty());
            if let Some(last) = last {
                write!(f, "; stderr: {}", shorten(last.trim(), 300))?;
            }
        }
        // The cause is `source()`'s to tell: error-chain printers show it once.
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "I/O error").with_source(err)
    }
}

pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        let api = |s| Error::new(ErrorKind::Api, "api").with_api_status(Some(s));
        assert!(api(529).is_transient());
        assert!(api(429).is_transient());
        assert!(api(500).is_transient());
        assert!(!api(401).is_transient());
        assert!(!api(400).is_transient());
        assert!(Error::timeout("t").is_transient());
        assert!(Error::connection("c").is_transient());
        assert!(!Error::new(ErrorKind::PermissionDenied, "p").is_transient());
        assert!(!Error::new(ErrorKind::MaxTurns, "m").is_transient());
        assert!(!Error::new(ErrorKind::CliNotFound, "n").is_transient());
    }

    #[test]
    fn display_keeps_context() {
        let err = Error::connection("the CLI exited before the run ended")
            .with_exit_code(Some(3))
            .with_stderr("line one\nfatal: boom\n".into());
        let text = err.to_string();
        assert!(text.contains("exit code 3"), "{text}");
        assert!(text.contains("fatal: boom"), "{text}");
        assert_eq!(err.stderr_tail(), Some("line one\nfatal: boom\n"));
        let said = Error::connection("the CLI ended (exit code 1)").with_exit_code(Some(1));
        assert_eq!(said.to_string().matches("exit code 1").count(), 1);
    }

    #[test]
    fn display_leaves_the_cause_to_source() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::connection("could not start the CLI").with_source(io);
        assert_eq!(err.to_string(), "could not start the CLI");
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "disk on fire");
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        let s = "é".repeat(10);
        let short = shorten(&s, 3);
        assert!(short.starts_with('é'));
        assert!(short.contains("20 bytes"));
    }
}
