//! Helpers of the server binary's tests (fleet, host faults, security): the server binary as a child process
//! (with its log kept), a private PostgreSQL cluster the test may stop and start, the
//! CLI processes a server started, and the `RELIABILITY_LOG` lines.
#![allow(dead_code)] // each test file uses its own part

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The hang guard of every wait.
pub(crate) const HANG: Duration = Duration::from_secs(90);

/// Appends one result row to `RELIABILITY_LOG`, when set (the format of the SDK's
/// tests/reliability.rs: case, outcome, seconds, processes left; `extra` adds figures).
pub(crate) fn record(case: &str, outcome: &str, seconds: f64, left: usize, extra: Value) {
    let Ok(path) = std::env::var("RELIABILITY_LOG") else {
        return;
    };
    let mut line = json!({
        "case": case,
        "outcome": outcome,
        "seconds": seconds,
        "left": left,
        "source": "server",
    });
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(file, "{line}").unwrap();
}

/// Polls `check` every 100 ms until it gives a value; panics after [`HANG`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: still waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server binary for `sandbox` as replica `id`: a home of its own, the pinned
/// CLI, a database only when the caller names one, no spares (every CLI is a run's),
/// on a free loopback port. Tokens, store and the rest are the caller's.
pub(crate) fn server_command(
    sandbox: &claude_code_testkit::Sandbox,
    id: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
    sandbox.configure(command.as_std_mut());
    let home = sandbox.root().join(format!("home-{id}"));
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    command
        .env("HOME", &home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("CLAUDE_CODE_CLI_PATH", claude_code_testkit::cli_path())
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("CLAUDE_SERVER_TOKENS")
        .args([
            "--bind",
            "127.0.0.1:0",
            "--prewarm",
            "0",
            "--replica-id",
            id,
        ])
        .arg("--project-root")
        .arg(sandbox.cwd());
    command
}

/// A `claude-code-server` child process and everything it logged.
pub(crate) struct Server {
    pub(crate) child: Option<tokio::process::Child>,
    pub(crate) pid: u32,
    pub(crate) url: String,
    pub(crate) log: claude_code_testkit::ServerLog,
}

impl Server {
    /// Spawns `command` (the server binary, configured by the caller; its stderr is
    /// taken here) and waits until it says where it listens.
    pub(crate) async fn spawn(mut command: tokio::process::Command) -> Server {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let server = claude_code_testkit::ServerProcess::spawn(command, HANG)
            .await
            .expect("the server listens");
        Server {
            pid: server.child.id().unwrap(),
            url: server.url(),
            child: Some(server.child),
            log: server.log,
        }
    }

    /// Everything it logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.text()
    }

    /// The CLI processes it started and that still run (they carry its owner marker,
    /// the one its reaper looks for).
    pub(crate) fn cli_pids(&self) -> Vec<u32> {
        cli_pids_of(self.pid)
    }

    /// Sends SIGTERM and waits for it to exit.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            tokio::time::timeout(HANG, child.wait())
                .await
                .expect("hang guard: the server did not stop")
                .unwrap();
        }
    }
}

/// The running processes whose environment carries server `pid`'s run marker.
pub(crate) fn cli_pids_of(pid: u32) -> Vec<u32> {
    let marker = format!("CLAUDE_CODE_SDK_OWNER=claude-code-server/{pid}/");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(marker.as_bytes()))
            }) && claude_code_testkit::pid_is_running(*p)
        })
        .collect()
}

/// Waits up to `limit` for server `pid`'s CLIs to be gone; the ones left.
pub(crate) async fn clis_left(pid: u32, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left = cli_pids_of(pid);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A PostgreSQL cluster of this test alone, started from the system's binaries (as
/// `tools/with-postgres` starts one): the test may stop and start it. Its superuser
/// `postgres` logs in with a password (SCRAM) over TCP. Stopped and removed on drop.
pub(crate) struct PrivatePg {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    run_as: Option<String>,
    pub(crate) port: u16,
    pub(crate) password: String,
}

impl PrivatePg {
    /// Starts one; `None` (a note on stderr) when the machine has no PostgreSQL binaries.
    pub(crate) fn start(password: &str) -> Option<PrivatePg> {
        let bindir = find_bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("hostile-pg-")
            .tempdir()
            .unwrap();
        let run_as = nix::unistd::Uid::effective()
            .is_root()
            .then(|| "postgres".to_owned());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, password).unwrap();
        if let Some(user) = &run_as {
            let status = std::process::Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg {
            dir,
            bindir,
            run_as,
            port,
            password: password.to_owned(),
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        Some(pg)
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let program = self.bindir.join(tool);
        match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => std::process::Command::new(program),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the cluster (again), on its port.
    pub(crate) fn up(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the cluster (`fast`: its connections are cut).
    pub(crate) fn down(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of its `postgres` database, password included.
    pub(crate) fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// Its own log.
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb` and `pg_ctl`, else `initdb` on
/// the `PATH`.
fn find_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = dirs.pop() {
        return Some(dir);
    }
    assert!(
        !claude_code_testkit::pg::required(),
        "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql, and PostgreSQL is required"
    );
    eprintln!("skipped: no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql");
    None
}
