//! Process checks for "nothing is left running" assertions.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`wait_until_gone`] looks.
const POLL: Duration = Duration::from_millis(20);

/// Whether process `pid` exists and is not a zombie.
///
/// On Linux this reads `/proc/<pid>/stat`: a missing entry, or state `Z` (zombie) or `X`
/// (dead), means not running. Elsewhere it asks `kill(pid, 0)`, which cannot tell a
/// zombie apart.
pub fn pid_is_running(pid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (comm) S ...`: comm may hold spaces and parentheses; the state follows
        // the last `)`.
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        return !matches!(state, Some("Z" | "X") | None);
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Waits until none of `pids` is running ([`pid_is_running`]), polling every 20 ms.
/// Returns `false` if some still run after `timeout`.
pub async fn wait_until_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&pid| pid_is_running(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until_gone`] for code outside an async runtime.
pub fn wait_until_gone_blocking(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&pid| pid_is_running(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The pids in a pid file (one per line, as `FAKE_CLAUDE_PID_FILE` is written); empty
/// if the file does not exist. Lines that are not numbers are skipped.
pub fn read_pid_file(path: impl AsRef<Path>) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Live processes whose working directory is `dir` (read from `/proc`; `dir` should be
/// canonical, as [`Sandbox::cwd`](crate::Sandbox::cwd) is): a CLI run in a sandbox and
/// whatever its tools started there.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
                && pid_is_running(*pid)
        })
        .collect()
}

/// Waits until no process works in `dir` ([`processes_in`]), polling every 20 ms;
/// returns the survivors after `timeout` (empty when all are gone).
pub async fn survivors_in(dir: &Path, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_in(dir);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_runs_and_reaped_child_does_not() {
        assert!(pid_is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_is_running(pid));
        assert!(wait_until_gone_blocking(&[pid], Duration::from_millis(10)));
    }

    #[test]
    fn zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits.
        assert!(wait_until_gone_blocking(&[pid], Duration::from_secs(5)));
        child.wait().unwrap();
    }
}
