//! Spawning the CLI in its own process group, draining its stderr, and ending it.
//!
//! # Caveats
//!
//! The child is the leader of a new process group, and carries a marker in its
//! environment that its descendants inherit (see [`reaper`](super::reaper)). Ending a
//! run kills the group and every marked process:
//!
//! - when the CLI exits on its own, whatever it left behind;
//! - dropping a [`ProcessGuard`] while the CLI runs, at once (`SIGKILL`);
//! - [`ProcessGuard::shutdown`] is the graceful path: stdin is closed first, then
//!   `SIGTERM` to the group after a grace period, then `SIGKILL` to everything.
//! - when this process dies without running destructors (`SIGKILL`, a crash), the
//!   CLI gets `SIGKILL` from the kernel (Linux's parent-death signal). The kernel sends
//!   it when the *thread* that started the CLI ends: the SDK starts CLIs from async
//!   tasks, so that is a runtime worker thread (which lives as long as its runtime) or
//!   the thread of a current-thread runtime. Commands the CLI's tools started are not
//!   reached by it; [`reaper::reap_orphans`] kills them at the next start.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

use super::reaper::{self, Run};
use crate::error::{Error, Result};
use crate::options::{InheritEnv, StderrCallback};
use crate::util::lock;

/// How much stderr an error keeps.
pub(crate) const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// The longest stderr line passed to the callback; longer lines are cut.
const STDERR_LINE_BYTES: usize = 64 * 1024;

/// What to start.
pub(crate) struct SpawnSpec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) env_remove: Vec<String>,
    /// Which variables of this process the CLI inherits.
    pub(crate) inherit: InheritEnv,
}

/// A started CLI: its pipes and the guard that ends it.
pub(crate) struct Spawned {
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
    pub(crate) guard: ProcessGuard,
}

/// Starts the CLI as the leader of a new process group with piped stdio.
///
/// `CLAUDECODE` is not inherited (it makes a nested CLI refuse to start), nor are the
/// variables `spec.inherit` leaves out.
///
/// # Errors
///
/// [`Connection`](crate::ErrorKind::Connection) when the program cannot be started.
pub(crate) fn spawn(spec: SpawnSpec) -> Result<Spawned> {
    let (marker, run_id) = reaper::new_marker();
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_remove("CLAUDECODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let InheritEnv::Only(_) = &spec.inherit {
        command.env_clear();
        for (key, value) in std::env::vars_os() {
            if let Some(name) = key.to_str()
                && spec.inherit.allows(name)
                && name != "CLAUDECODE"
            {
                command.env(&key, value);
            }
        }
    }
    for key in &spec.env_remove {
        command.env_remove(key);
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command.env(reaper::RUN_MARKER_ENV, &marker);
    command.env(reaper::OWNER_ENV, reaper::owner_value());
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|e| {
        Error::connection(format!(
            "could not start the Claude Code CLI at {}",
            spec.program.display()
        ))
        .with_source(e)
        // Not executable, not a program: trying again will not change that.
        .permanent()
    })?;
    let pid = child
        .id()
        .ok_or_else(|| Error::connection("the CLI exited at once"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Error::connection("the CLI's pipes could not be opened"));
    };
    Ok(Spawned {
        stdin,
        stdout,
        stderr,
        guard: ProcessGuard::watch(child, Run::register(pid as i32, run_id)),
    })
}

/// Asks the kernel to kill the CLI when the thread that starts it ends (Linux), so a
/// CLI never outlives a process that was killed without a chance to clean up.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid)
    // and builds errors from raw OS codes, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
            // The parent may have died before the signal was armed.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Owns the CLI's run: its process group and the processes carrying its marker (see
/// [`reaper`](super::reaper)). Dropping it kills them unless the CLI already exited (in
/// which case they were swept when it did).
#[derive(Debug)]
pub(crate) struct ProcessGuard {
    run: Run,
    exit: watch::Receiver<Option<ExitState>>,
    waiter: tokio::task::JoinHandle<()>,
}

/// How the process ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExitState {
    pub(crate) status: Option<ExitStatus>,
}

impl ExitState {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub(crate) fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.status {
            Some(s) if s.code().is_some() => format!("exit code {}", s.code().unwrap_or(-1)),
            Some(s) => format!("signal {}", s.signal().unwrap_or(0)),
            None => "unknown status".to_owned(),
        }
    }
}

/// Kills a run's group at once and its marked processes soon: the `/proc` scan runs on
/// the blocking pool when there is a runtime, so it never stalls an async worker.
fn sweep_soon(run: &Run) {
    reaper::signal_group(run.pgid, Signal::SIGKILL);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            let run = run.clone();
            handle.spawn_blocking(move || run.sweep());
        }
        Err(_) => run.sweep(),
    }
}

impl ProcessGuard {
    fn watch(mut child: Child, run: Run) -> Self {
        let (tx, rx) = watch::channel(None);
        let swept = run.clone();
        let waiter = tokio::spawn(async move {
            let status = child.wait().await.ok();
            // The leader is gone: sweep whatever it left behind.
            let run = swept.clone();
            let _ = tokio::task::spawn_blocking(move || {
                run.sweep();
                run.unregister();
            })
            .await;
            let _ = tx.send(Some(ExitState { status }));
        });
        ProcessGuard {
            run,
            exit: rx,
            waiter,
        }
    }

    /// The process id of the CLI, which is also its process group id.
    pub(crate) fn pid(&self) -> u32 {
        self.run.pgid as u32
    }

    /// How the CLI ended, if it has.
    pub(crate) fn exited(&self) -> Option<ExitState> {
        *self.exit.borrow()
    }

    /// Whether the CLI is still running. Unlike [`exited`](ProcessGuard::exited), which
    /// is set once the waiter task has reaped it and swept its group, this also sees a
    /// CLI that has died and is not reaped yet, or is still dying: a killed CLI's main
    /// thread is a zombie (`Z` in `/proc/<pid>/stat`) until its other threads are gone,
    /// and only then can it be reaped.
    pub(crate) fn is_running(&self) -> bool {
        if self.exited().is_some() {
            return false;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            match std::fs::read_to_string(format!("/proc/{}/stat", self.run.pgid)) {
                // `pid (comm) S ...`: the state follows the last `)`.
                Ok(stat) => {
                    let state = stat
                        .rfind(')')
                        .and_then(|end| stat[end + 1..].split_whitespace().next());
                    !matches!(state, Some("Z" | "X"))
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
                // No /proc: ask the kernel whether it is waitable, without reaping it.
                Err(_) => {
                    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
                    let pid = nix::unistd::Pid::from_raw(self.run.pgid);
                    match waitid(
                        Id::Pid(pid),
                        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
                    ) {
                        Ok(WaitStatus::StillAlive) => true,
                        Ok(_) | Err(nix::errno::Errno::ECHILD) => false,
                        Err(_) => true,
                    }
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            true
        }
    }

    /// Waits until the CLI has exited.
    pub(crate) async fn wait(&self) -> ExitState {
        let mut rx = self.exit.clone();
        loop {
            if let Some(state) = *rx.borrow_and_update() {
                return state;
            }
            if rx.changed().await.is_err() {
                return ExitState { status: None };
            }
        }
    }

    /// Kills the CLI and everything of its run now.
    pub(crate) fn kill(&self) {
        if self.exited().is_none() {
            sweep_soon(&self.run);
        }
    }

    /// Kills what the run's tools left running (background commands), leaving the CLI
    /// itself alive: before a process serves another query.
    pub(crate) async fn kill_tool_processes(&self) {
        let run = self.run.clone();
        let _ = tokio::task::spawn_blocking(move || run.kill_tool_processes()).await;
    }

    /// Waits `grace` for the CLI to exit on its own (its stdin should be closed by
    /// now), then sends `SIGTERM` to the group, waits `term_grace`, then `SIGKILL`.
    pub(crate) async fn shutdown(&self, grace: Duration, term_grace: Duration) -> ExitState {
        if let Ok(state) = tokio::time::timeout(grace, self.wait()).await {
            return state;
        }
        tracing::debug!(
            pid = self.run.pgid,
            "CLI did not exit after stdin closed; sending SIGTERM"
        );
        reaper::signal_group(self.run.pgid, Signal::SIGTERM);
        if let Ok(state) = tokio::time::timeout(term_grace, self.wait()).await {
            return state;
        }
        tracing::debug!(pid = self.run.pgid, "CLI ignored SIGTERM; sending SIGKILL");
        sweep_soon(&self.run);
        self.wait().await
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            sweep_soon(&self.run);
        }
        // The waiter reaps the leader; if the runtime is gone the Child's
        // kill_on_drop and tokio's orphan reaper take over.
        let _ = &self.waiter;
    }
}

/// The last few KiB of stderr, shared between the drain task and error reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct StderrTail {
    inner: Arc<Mutex<TailBuf>>,
}

#[derive(Debug, Default)]
struct TailBuf {
    lines: VecDeque<String>,
    bytes: usize,
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut tail = lock(&self.inner);
        tail.bytes += line.len() + 1;
        tail.lines.push_back(line);
        while tail.bytes > STDERR_TAIL_BYTES && tail.lines.len() > 1 {
            if let Some(old) = tail.lines.pop_front() {
                tail.bytes -= old.len() + 1;
            }
        }
    }

    /// The tail as text.
    pub(crate) fn text(&self) -> String {
        let tail = lock(&self.inner);
        let mut out = String::with_capacity(tail.bytes);
        for line in &tail.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Reads stderr to the end so the CLI never blocks on a full pipe; keeps a bounded
/// tail and passes each line (cut at 64 KiB) to the callback.
pub(crate) fn drain_stderr(
    mut stderr: ChildStderr,
    tail: StderrTail,
    callback: Option<StderrCallback>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut line: Vec<u8> = Vec::new();
        let mut overflowed = false;
        let emit = |line: &mut Vec<u8>, overflowed: &mut bool| {
            let mut text = String::from_utf8_lossy(line).into_owned();
            if *overflowed {
                text.push_str(" [line cut]");
            }
            if let Some(cb) = &callback {
                cb(&text);
            }
            tracing::trace!(target: "claude_code_sdk::stderr", "{text}");
            tail.push(text);
            line.clear();
            *overflowed = false;
        };
        loop {
            let n = match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
                let (body, ends) = match chunk.split_last() {
                    Some((b'\n', body)) => (body, true),
                    _ => (chunk, false),
                };
                let room = STDERR_LINE_BYTES.saturating_sub(line.len());
                if body.len() > room {
                    overflowed = true;
                }
                line.extend_from_slice(&body[..body.len().min(room)]);
                if ends {
                    emit(&mut line, &mut overflowed);
                }
            }
        }
        if !line.is_empty() {
            emit(&mut line, &mut overflowed);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn an_allow_list_passes_only_what_it_names_and_what_the_sdk_sets() {
        let spawned = spawn(SpawnSpec {
            program: PathBuf::from("/usr/bin/env"),
            args: Vec::new(),
            cwd: None,
            env: vec![("EXPLICIT_FOR_THE_CLI".into(), "1".into())],
            env_remove: Vec::new(),
            inherit: InheritEnv::only(["PATH", "LC_*"]),
        })
        .unwrap();
        let Spawned {
            mut stdout, guard, ..
        } = spawned;
        let mut text = String::new();
        stdout.read_to_string(&mut text).await.unwrap();
        guard.wait().await;
        let names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(names.contains(&"PATH"), "{text}");
        assert!(names.contains(&"EXPLICIT_FOR_THE_CLI"), "{text}");
        assert!(names.contains(&reaper::RUN_MARKER_ENV), "{text}");
        assert!(names.contains(&reaper::OWNER_ENV), "{text}");
        for name in names {
            assert!(
                [
                    "PATH",
                    "EXPLICIT_FOR_THE_CLI",
                    reaper::RUN_MARKER_ENV,
                    reaper::OWNER_ENV
                ]
                .contains(&name)
                    || name.starts_with("LC_"),
                "{name} was inherited:\n{text}"
            );
        }
    }
}
