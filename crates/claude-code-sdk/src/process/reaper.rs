//! Finding and killing every process of a CLI run, including the ones that left its
//! process group.
//!
//! The CLI runs the shells of `Bash` tool calls in process groups of their own, so
//! signalling the CLI's group is not enough. Each CLI gets a marker in its
//! environment, [`RUN_MARKER_ENV`], that its descendants inherit: `<id>` for a run
//! started from a plain process, `<outer>:<id>` for a run started from inside another
//! run (an agent running a program built on this SDK), so ending the outer run reaches
//! the inner one's processes too.
//!
//! Finding marked processes reads `/proc`: it works on Linux; elsewhere only process
//! groups are signalled. To keep the scan cheap and safe it only looks at processes of
//! the current user started no earlier than the run, and kills each match right after
//! reading its environment (a pid that exits and is reused in between would have to
//! carry the marker to be hit). A process that both leaves the group and clears its
//! environment is out of reach.
//!
//! # When this process dies
//!
//! A run cannot clean up after a process that was killed (`SIGKILL`, the OOM killer).
//! Two things cover that on Linux: each CLI is started with a parent-death signal
//! (`SIGKILL` when the thread that started it ends; see the transport's caveats), and
//! each carries [`OWNER_ENV`] naming the process that owns it, so the next start of a
//! program can call [`reap_orphans`] to kill what a dead predecessor left behind (the
//! commands of its tools, which the parent-death signal does not reach).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, OnceLock};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::util::lock;

/// The environment variable that marks every process of a run.
pub(crate) const RUN_MARKER_ENV: &str = "CLAUDE_CODE_SDK_RUN";

/// The environment variable that names the process owning a run:
/// `<scope>/<pid>/<start time>` (see [`set_owner_scope`] and [`reap_orphans`]).
pub(crate) const OWNER_ENV: &str = "CLAUDE_CODE_SDK_OWNER";

fn owner_scope() -> &'static Mutex<String> {
    static SCOPE: OnceLock<Mutex<String>> = OnceLock::new();
    SCOPE.get_or_init(|| Mutex::new("sdk".to_owned()))
}

/// Names this program's runs, for [`reap_orphans`]: processes that carry another scope
/// are never reaped by it. The default scope is `sdk`. Call it before the first run.
///
/// # Errors
///
/// [`InvalidOptions`](crate::ErrorKind::InvalidOptions) for an empty scope or one with
/// `/`, `=` or NUL in it.
pub fn set_owner_scope(scope: &str) -> crate::Result<()> {
    if scope.is_empty() || scope.contains(['/', '=', '\0']) {
        return Err(crate::Error::invalid_options(format!(
            "owner scope {scope:?} must be non-empty, without '/', '=' or NUL"
        )));
    }
    *lock(owner_scope()) = scope.to_owned();
    Ok(())
}

/// The [`OWNER_ENV`] value for runs started by this process.
pub(crate) fn owner_value() -> String {
    let me = std::process::id();
    let start = start_time(me).unwrap_or(0);
    format!("{}/{me}/{start}", lock(owner_scope()))
}

/// Kills every process of this user that carries this program's owner scope (see
/// [`set_owner_scope`]) and whose owning process is gone: the CLIs and tool commands a
/// crashed predecessor left running. Returns how many were killed.
///
/// Processes whose owner is alive (another instance of the same program) are left
/// alone; an owner is recognised by its pid and start time, so a reused pid does not
/// count as alive. Linux only (reads `/proc`); elsewhere it returns 0.
pub fn reap_orphans() -> usize {
    let scope = lock(owner_scope()).clone();
    let me = std::process::id();
    let uid = nix::unistd::getuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let prefix = format!("{OWNER_ENV}=");
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(owner) = env
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_bytes()))
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            continue;
        };
        let mut parts = owner.split('/');
        let (Some(owner_scope), Some(owner_pid), Some(owner_start)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if owner_scope != scope {
            continue;
        }
        let (Ok(owner_pid), Ok(owner_start)) =
            (owner_pid.parse::<u32>(), owner_start.parse::<u64>())
        else {
            continue;
        };
        let owner_alive = start_time(owner_pid) == Some(owner_start)
            && process_state(owner_pid).is_some_and(|s| s != 'Z' && s != 'X');
        if owner_alive {
            continue;
        }
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) => killed += 1,
            Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => tracing::debug!(pid, %err, "could not kill an orphaned process"),
        }
    }
    if killed > 0 {
        tracing::info!(
            killed,
            scope,
            "killed processes left by a previous run of this program"
        );
    }
    killed
}

/// One run's identity: its process group and its marker.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) pgid: i32,
    /// This run's own id (the last part of the marker).
    pub(crate) id: String,
    /// When the run started, in clock ticks since boot (from `/proc`), if known.
    started: Option<u64>,
}

/// The marker value for a new run: the inherited one (if this process belongs to a
/// run) followed by a new id. Returns `(value, id)`.
pub(crate) fn new_marker() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let value = match std::env::var(RUN_MARKER_ENV) {
        Ok(outer) if !outer.is_empty() => format!("{outer}:{id}"),
        _ => id.clone(),
    };
    (value, id)
}

fn live_runs() -> &'static Mutex<HashMap<i32, Run>> {
    static RUNS: OnceLock<Mutex<HashMap<i32, Run>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

impl Run {
    /// Registers a started run (see [`kill_all_runs`]).
    pub(crate) fn register(pgid: i32, id: String) -> Run {
        let run = Run {
            pgid,
            id,
            started: start_time(pgid as u32),
        };
        lock(live_runs()).insert(pgid, run.clone());
        run
    }

    /// Kills the run's process group and every process carrying its marker.
    pub(crate) fn sweep(&self) {
        signal_group(self.pgid, Signal::SIGKILL);
        self.kill_marked(|_| true);
    }

    /// Kills the processes of the run outside the CLI's own process group: the
    /// commands its tools left running. The CLI (and MCP servers in its group) live on.
    pub(crate) fn kill_tool_processes(&self) {
        let pgid = self.pgid;
        self.kill_marked(|pid| process_group(pid) != Some(pgid));
    }

    /// Forgets the run once it is over.
    pub(crate) fn unregister(&self) {
        lock(live_runs()).remove(&self.pgid);
    }

    fn kill_marked(&self, select: impl Fn(u32) -> bool) {
        let me = std::process::id();
        let uid = nix::unistd::getuid().as_raw();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Cheap checks first: our own processes, started since the run.
            if pid == me || entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
                continue;
            }
            if let (Some(run_start), Some(start)) = (self.started, start_time(pid))
                && start < run_start
            {
                continue;
            }
            if self.marks(pid) && select(pid) {
                match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(err) => tracing::debug!(pid, %err, "could not kill a process of the run"),
                }
            }
        }
    }

    /// Whether `pid`'s environment carries this run's id in its marker.
    fn marks(&self, pid: u32) -> bool {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        let prefix = format!("{RUN_MARKER_ENV}=");
        env.split(|b| *b == 0).any(|var| {
            var.strip_prefix(prefix.as_bytes()).is_some_and(|value| {
                value
                    .split(|b| *b == b':')
                    .any(|id| id == self.id.as_bytes())
            })
        })
    }
}

/// Kills every run this process started that is still alive: for a program about to
/// exit without running destructors (a second Ctrl-C, `std::process::exit`).
pub fn kill_all_runs() {
    let runs: Vec<Run> = lock(live_runs()).values().cloned().collect();
    for run in runs {
        run.sweep();
    }
}

/// Signals a process group; a group that is already gone is fine.
pub(crate) fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pgid, %err, ?signal, "could not signal the CLI's process group"),
    }
}

/// Field `n` (1-based, as in `proc(5)`) of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn process_group(pid: u32) -> Option<i32> {
    stat_field(pid, 5).map(|g| g as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(process_group(me), Some(nix::unistd::getpgrp().as_raw()));
    }

    #[test]
    fn nested_markers_keep_the_outer_id() {
        let (value, id) = new_marker();
        assert!(value.ends_with(&id));
        assert_eq!(id.len(), 32);
    }
}
