//! A server child process that logs to stderr and says where it listens.
//!
//! The `claude-code-server` binary logs `... listening addr=<host:port>` on stderr once
//! its socket is bound (on port `0` when the test lets the system pick one).
//! [`ServerProcess::spawn`] starts such a program and waits for that line; a task
//! reads the rest of its stderr for as long as the pipe is open, so the program never
//! blocks on a full pipe, and keeps the first 1 MiB of it in a [`ServerLog`] the test
//! can read later (to grep it, or to show it in a failure).
//!
//! ```no_run
//! # async fn test() {
//! use std::time::Duration;
//! use claude_code_testkit::ServerProcess;
//!
//! let mut command = tokio::process::Command::new("claude-code-server");
//! command.args(["--bind", "127.0.0.1:0"]).kill_on_drop(true);
//! let server = ServerProcess::spawn(command, Duration::from_secs(90))
//!     .await
//!     .expect("the server listens");
//! // ... requests to server.url() ...
//! assert!(!server.log.text().contains("panicked"));
//! # }
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;

/// How much of the log a [`ServerLog`] keeps; the rest is read and dropped.
const LOG_LIMIT: usize = 1 << 20;

/// A child process that has said where it listens, and its log.
#[derive(Debug)]
pub struct ServerProcess {
    /// The process. Its stderr has been taken (the log task reads it); the rest is as
    /// the caller configured it, `kill_on_drop` included.
    pub child: Child,
    /// The address from its `listening ... addr=` line.
    pub addr: SocketAddr,
    /// Its stderr so far, and from now on.
    pub log: ServerLog,
}

impl ServerProcess {
    /// Spawns `command` with its stderr piped (everything else, environment,
    /// arguments, stdin, stdout and `kill_on_drop`, is the caller's) and waits up to
    /// `timeout` for its `listening ... addr=` line ([`ServerProcess::watch`]).
    pub async fn spawn(mut command: Command, timeout: Duration) -> Result<Self, ListenError> {
        command.stderr(Stdio::piped());
        let child = command.spawn().map_err(ListenError::Spawn)?;
        Self::watch(child, timeout).await
    }

    /// Reads the stderr of `child` (spawned with it piped) in a task of its own until
    /// the pipe closes, and waits up to `timeout` for the first line that contains
    /// `listening` and `addr=<address>`.
    ///
    /// An error carries the log so far. On a timeout or an address that is not one,
    /// the child is killed; when its stderr closes first, it is waited for (within
    /// `timeout`) so that the error can say how it ended.
    pub async fn watch(mut child: Child, timeout: Duration) -> Result<Self, ListenError> {
        let Some(stderr) = child.stderr.take() else {
            return Err(ListenError::NoStderr);
        };
        let log = ServerLog::default();
        let (addr_tx, addr_rx) = oneshot::channel();
        tokio::spawn(read_log(stderr, log.clone(), addr_tx));
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, addr_rx).await {
            Ok(Ok(Ok(addr))) => Ok(ServerProcess { child, addr, log }),
            Ok(Ok(Err(value))) => {
                let _ = child.kill().await;
                Err(ListenError::BadAddress {
                    value,
                    log: log.text(),
                })
            }
            // The log task ended: stderr is closed, the process (most likely) gone.
            Ok(Err(_)) => {
                let status = tokio::time::timeout_at(deadline, child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                Err(ListenError::Exited {
                    status,
                    log: log.text(),
                })
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(ListenError::TimedOut {
                    after: timeout,
                    log: log.text(),
                })
            }
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a process wrote on stderr: the first 1 MiB of it, in whole lines (invalid UTF-8
/// replaced). Clones share the same log.
#[derive(Debug, Clone, Default)]
pub struct ServerLog {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    text: String,
    /// Bytes read after the log was full.
    dropped: u64,
}

impl ServerLog {
    /// The log so far, each line ending in `\n`. Once 1 MiB is kept, a last line says
    /// how many bytes were read after it and dropped.
    pub fn text(&self) -> String {
        let kept = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = kept.text.clone();
        if kept.dropped > 0 {
            text.push_str(&format!(
                "[{} more bytes of log read and not kept: the log keeps {LOG_LIMIT} bytes]\n",
                kept.dropped
            ));
        }
        text
    }

    fn push(&self, line: &str) {
        let mut kept = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.dropped == 0 && kept.text.len() + line.len() < LOG_LIMIT {
            kept.text.push_str(line);
            kept.text.push('\n');
        } else {
            kept.dropped += line.len() as u64 + 1;
        }
    }
}

/// Why [`ServerProcess`] has no address. Each case with a log carries the log so far.
///
/// `Debug` shows the same text as `Display`, so that `expect` prints the log as lines.
#[non_exhaustive]
pub enum ListenError {
    /// The command did not start.
    Spawn(std::io::Error),
    /// The child's stderr was not piped (or was taken already).
    NoStderr,
    /// Its stderr closed before a `listening` line: it exited (`status`, when it ended
    /// within the timeout) or closed its stderr.
    Exited {
        /// How it ended.
        status: Option<ExitStatus>,
        /// Its log.
        log: String,
    },
    /// No `listening` line within the timeout.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// Its log so far.
        log: String,
    },
    /// The `listening` line's `addr=` value is not a socket address.
    BadAddress {
        /// The value.
        value: String,
        /// Its log so far.
        log: String,
    },
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Spawn(error) => write!(f, "the process did not start: {error}"),
            ListenError::NoStderr => write!(f, "the process's stderr is not piped"),
            ListenError::Exited { status, log } => {
                let status = status.map_or_else(|| "still running".to_owned(), |s| s.to_string());
                write!(
                    f,
                    "the process closed its stderr before it said where it listens ({status}); its log:\n{log}"
                )
            }
            ListenError::TimedOut { after, log } => write!(
                f,
                "the process did not say where it listens within {after:?}; its log so far:\n{log}"
            ),
            ListenError::BadAddress { value, log } => write!(
                f,
                "the process's listening line has `addr={value}`, not a socket address; its log:\n{log}"
            ),
        }
    }
}

impl fmt::Debug for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Spawn(error) => Some(error),
            _ => None,
        }
    }
}

/// Reads `stderr` line by line into `log` until it closes; sends the address of the
/// first `listening` line (or the value that is not one) on `addr_tx`.
async fn read_log(
    stderr: ChildStderr,
    log: ServerLog,
    addr_tx: oneshot::Sender<Result<SocketAddr, String>>,
) {
    let mut addr_tx = Some(addr_tx);
    read_lines(BufReader::new(stderr), |line| {
        log.push(line);
        if addr_tx.is_some()
            && let Some(value) = listening_addr(line)
            && let Some(tx) = addr_tx.take()
        {
            let _ = tx.send(value.parse().map_err(|_| value.to_owned()));
        }
    })
    .await;
}

/// Calls `each` with every line of `reader` (without its line end, invalid UTF-8
/// replaced) until the end or a read error. A line longer than the log limit is cut
/// there (the rest is read and dropped), so memory stays bounded whatever is written.
async fn read_lines(mut reader: impl AsyncBufRead + Unpin, mut each: impl FnMut(&str)) {
    let mut line = Vec::new();
    loop {
        let (used, complete) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let (used, complete) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (chunk.len(), false),
                };
                let room = LOG_LIMIT.saturating_sub(line.len());
                line.extend_from_slice(&chunk[..used.min(room)]);
                (used, complete)
            }
        };
        reader.consume(used);
        if complete {
            each(trim_line_end(&String::from_utf8_lossy(&line)));
            line.clear();
        }
    }
    if !line.is_empty() {
        each(trim_line_end(&String::from_utf8_lossy(&line)));
    }
}

fn trim_line_end(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

/// The `addr=` value of a `listening` line: up to the next white space.
fn listening_addr(line: &str) -> Option<&str> {
    if !line.contains("listening") {
        return None;
    }
    let (_, rest) = line.split_once("addr=")?;
    rest.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]).kill_on_drop(true);
        command
    }

    /// The error of [`ServerProcess::spawn`] on `script`.
    async fn spawn_error(script: &str, timeout: Duration) -> ListenError {
        ServerProcess::spawn(shell(script), timeout)
            .await
            .unwrap_err()
    }

    #[test]
    fn the_address_is_the_value_after_addr_on_a_listening_line() {
        assert_eq!(
            listening_addr(
                "INFO claude_code_server: claude-code-server listening addr=127.0.0.1:4000"
            ),
            Some("127.0.0.1:4000")
        );
        assert_eq!(
            listening_addr("listening addr=[::1]:80 replica=a"),
            Some("[::1]:80")
        );
        assert_eq!(listening_addr("bound addr=127.0.0.1:4000"), None);
        assert_eq!(listening_addr("listening on a port"), None);
    }

    #[tokio::test]
    async fn gives_the_address_and_keeps_reading_the_log() {
        let mut command = shell(
            "echo starting >&2; echo 'x listening addr=127.0.0.1:4321' >&2; \
             read _; echo after >&2",
        );
        command.stdin(Stdio::piped());
        let server = ServerProcess::spawn(command, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(server.addr, "127.0.0.1:4321".parse().unwrap());
        assert_eq!(server.url(), "http://127.0.0.1:4321");
        let mut child = server.child;
        drop(child.stdin.take()); // `read` returns: it logs once more and exits
        child.wait().await.unwrap();
        // The log task reads to the end of the pipe.
        for _ in 0..600 {
            if server.log.text().contains("after") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            server.log.text(),
            "starting\nx listening addr=127.0.0.1:4321\nafter\n"
        );
    }

    #[tokio::test]
    async fn an_exit_before_listening_is_an_error_with_the_log() {
        let error = spawn_error("echo 'no config' >&2; exit 3", Duration::from_secs(60)).await;
        let ListenError::Exited { status, log } = &error else {
            panic!("{error}");
        };
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        assert_eq!(log, "no config\n");
        assert!(error.to_string().contains("no config"), "{error}");
    }

    #[tokio::test]
    async fn a_timeout_is_an_error_and_the_child_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo $$ > '{}'; echo 'still starting' >&2; exec sleep 600",
            pid_file.display()
        );
        let error = spawn_error(&script, Duration::from_secs(1)).await;
        assert!(
            matches!(error, ListenError::TimedOut { after, .. } if after == Duration::from_secs(1)),
            "{error}"
        );
        // Killed and reaped (when it got as far as writing its pid).
        for pid in crate::read_pid_file(&pid_file) {
            assert!(!crate::pid_is_running(pid));
        }
    }

    #[tokio::test]
    async fn an_address_that_is_not_one_is_an_error() {
        let error = spawn_error(
            "echo 'listening addr=somewhere' >&2; exec sleep 600",
            Duration::from_secs(60),
        )
        .await;
        assert!(
            matches!(&error, ListenError::BadAddress { value, .. } if value == "somewhere"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_child_without_piped_stderr_is_an_error() {
        let child = shell("exit 0").stderr(Stdio::null()).spawn().unwrap();
        let error = ServerProcess::watch(child, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(matches!(error, ListenError::NoStderr), "{error}");
    }

    #[tokio::test]
    async fn the_log_keeps_one_mebibyte_and_drains_the_rest() {
        // 4 MiB of 1 KiB lines, a line of 2 MiB without an end, then the address: the
        // pipe never fills, and the log stops at 1 MiB.
        let server = ServerProcess::spawn(
            shell(
                "head -c 4194304 /dev/zero | tr '\\0' x | fold -w 1023 >&2; \
                 head -c 2097152 /dev/zero | tr '\\0' y >&2; echo >&2; \
                 echo 'listening addr=127.0.0.1:1' >&2",
            ),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let text = server.log.text();
        let (kept, note) = text.trim_end().rsplit_once('\n').unwrap();
        assert!(kept.len() < LOG_LIMIT, "{}", kept.len());
        assert!(kept.len() > LOG_LIMIT - 1024, "{}", kept.len());
        assert!(
            kept.lines()
                .all(|l| l.len() == 1023 && l.bytes().all(|b| b == b'x'))
        );
        assert!(
            note.contains("more bytes of log read and not kept"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn lines_are_split_at_line_ends_and_cut_at_the_limit() {
        let mut input = b"one\r\ntwo\n\xffthree".to_vec();
        input.extend(std::iter::repeat_n(b'z', 3 * LOG_LIMIT));
        input.extend_from_slice(b"\nfour");
        let mut lines = Vec::new();
        read_lines(&input[..], |line| lines.push(line.to_owned())).await;
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert!(lines[2].starts_with("\u{fffd}three"));
        // The limit counts bytes read; the one invalid byte became three.
        assert_eq!(lines[2].len(), LOG_LIMIT - 1 + "\u{fffd}".len());
        assert_eq!(lines[3], "four");
    }
}
