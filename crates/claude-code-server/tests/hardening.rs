//! Hostile clients against the real accept loop on a live loopback socket: connections
//! that never finish their headers, slow loris, one address taking every connection,
//! clients that stop reading a stream; plus start-up checks, request ids and the log
//! of failed logins. The server runs the real CLI against the mock model, in process
//! through `serve_on` or as the `claude-code-server` binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use claude_code_sdk::{ClaudeCodeOptions, PoolConfig};
use claude_code_server::{AppState, ServerConfig, serve_on};
use claude_code_testkit::{
    MockAnthropic, Reply, Rule, Sandbox, ServerLog, ServerProcess, cli_path, survivors_in,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "hardening-token";

/// The server in this process, served by `serve_on` until `stop`.
struct Running {
    addr: SocketAddr,
    url: String,
    mock: MockAnthropic,
    sandbox: Sandbox,
    state: AppState,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Running {
        log_capture();
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        let options = ClaudeCodeOptions::builder()
            .cli_path(cli_path())
            .envs(sandbox.env())
            .build()
            .unwrap();
        let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
            // Spares are tested on their own (tests/pool_bound.rs): none here.
            .prewarm(0)
            .api_token(TOKEN)
            .project_root(sandbox.cwd())
            .base_options(options);
        let state = AppState::new(configure(config)).await.unwrap();
        // Clients connect from other loopback addresses too (127.0.0.2, ...): each
        // counts as another client.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_on(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            url: format!("http://{addr}"),
            mock,
            sandbox,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            served,
        }
    }

    /// Stops serving; returns once `serve_on` did.
    async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.served).await.unwrap()
    }
}

/// A connection to `addr` from the loopback address `from` (127.0.0.x: every one of
/// them is local, and each counts as another client).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (end of stream or reset); returns what
/// it sent, or `None` if it still holds the connection after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let reading = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading).await.ok()?;
    Some(received)
}

/// `GET /health` on a fresh connection from `from`: the answer's status line and body,
/// or what a refused connection got.
async fn health_from(from: &str, addr: SocketAddr) -> String {
    let mut stream = connect_from(from, addr).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .ok();
    let answer = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server holds a connection it should answer or refuse");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB (informative).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Every log line of this test binary (a global subscriber: the server logs from tasks
/// on every thread).
fn log_capture() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || Sink(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

fn log_lines() -> Vec<String> {
    String::from_utf8_lossy(&log_capture().lock().unwrap())
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `claude-code-server` binary, in the sandbox's environment.
struct Binary {
    child: tokio::process::Child,
    addr: SocketAddr,
    stderr: ServerLog,
}

impl Binary {
    async fn start(sandbox: &Sandbox, extra: &[&str]) -> Binary {
        let mut command = Binary::command(sandbox);
        // No spares: their pipes would count in the open-file figures.
        command.args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--prewarm", "0"]);
        command.arg("--project-root").arg(sandbox.cwd()).args(extra);
        let server = ServerProcess::spawn(command, Duration::from_secs(30))
            .await
            .expect("the server listens");
        Binary {
            child: server.child,
            addr: server.addr,
            stderr: server.log,
        }
    }

    fn command(sandbox: &Sandbox) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
        sandbox.configure(command.as_std_mut());
        command
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .env("RUST_LOG", "info")
            // Each server on a database of its own (a temporary SQLite one): make test
            // sets DATABASE_URL for the store tests, and servers sharing it would take
            // each other's queued runs.
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not exit")
            .unwrap()
            .code()
    }

    fn stderr(&self) -> String {
        self.stderr.text()
    }
}

async fn query(http: &reqwest::Client, url: &str, prompt: &str) -> (u16, Value) {
    let response = http
        .post(format!("{url}/v1/query"))
        .bearer_auth(TOKEN)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The CLIs (and anything they started) still working in `dir`.
async fn left_running(dir: &Path) -> Vec<u32> {
    survivors_in(dir, Duration::from_secs(15)).await
}

#[tokio::test]
async fn half_open_connections_are_closed_and_their_files_given_back() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let sandbox = Sandbox::new(&mock);
    let mut server = Binary::start(
        &sandbox,
        &["--header-timeout", "3", "--max-connections-per-ip", "2000"],
    )
    .await;
    let pid = server.pid();
    // A first query opens what the server keeps open (database connections, the
    // pool's pipes): the baseline is the server at work, not the server idle.
    let (status, body) = query(
        &reqwest::Client::new(),
        &server.url(),
        "The capital of France?",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = open_fds(pid);
    let baseline_rss = rss_kib(pid);

    // 300 requests cut off in their headers, 20 connections that say nothing, 20 that
    // start an HTTP/2 preface and stop.
    let mut held = Vec::new();
    for i in 0..340 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let partial: &[u8] = match i {
            0..300 => b"POST /v1/query HTTP/1.1\r\nhost: localhost\r\ncontent-ty",
            300..320 => b"",
            _ => b"PRI * HTTP/2.0\r\n\r\nS",
        };
        stream.write_all(partial).await.unwrap();
        held.push(stream);
    }
    // (Informative only: how many the server held at once.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peak = open_fds(pid);
    let peak_rss = rss_kib(pid);

    let closing = held
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_secs(20)));
    let closed = futures::future::join_all(closing).await;
    let still_held = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(still_held, 0, "connections the server still holds");
    for answer in closed.iter().flatten() {
        // Timed out, not refused by a cap (a refusal is a 503) or answered.
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(answer));
    }
    drop(held);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = open_fds(pid);
    while after > baseline + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = open_fds(pid);
    }
    println!(
        "server open fds: baseline {baseline}, with 340 half-open {peak}, after {after}; \
         RSS KiB: {baseline_rss}, {peak_rss}, {}",
        rss_kib(pid)
    );
    assert!(
        after <= baseline + 2,
        "open fds: {after}, baseline {baseline}"
    );

    let (status, body) = query(
        &reqwest::Client::new(),
        &server.url(),
        "The capital of France?",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "Paris.");

    server.signal("TERM");
    assert_eq!(server.exit_code().await, Some(0), "{}", server.stderr());
    assert!(left_running(sandbox.cwd()).await.is_empty());
}

#[tokio::test]
async fn a_slow_loris_is_cut_by_the_total_header_time() {
    // A byte a second never leaves a gap of 3 s: only a limit on the whole head cuts it.
    let s = Running::start(|c| c.header_timeout(Duration::from_secs(3))).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    let closed = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => panic!("answered: {}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        if stream.write_all(b"a").await.is_err() {
            break true;
        }
        sent += 1;
    };
    assert!(closed, "still trickling after {sent} bytes");
    assert!(sent >= 1, "closed before the trickle started");
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let s = Running::start(|c| {
        c.header_timeout(Duration::from_secs(120))
            .max_connections_per_ip(4)
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", s.addr).await);
    }
    // Over the cap: answered 503 (or reset) and closed at once, not held.
    let refused = health_from("127.0.0.1", s.addr).await;
    assert!(!refused.contains(" 200 "), "{refused}");
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "{refused}"
    );
    // Another address is served meanwhile.
    let other = health_from("127.0.0.2", s.addr).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // Once one of the four goes, the address is served again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = health_from("127.0.0.1", s.addr).await;
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {again}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_over_the_total_cap_are_refused_at_once() {
    let s = Running::start(|c| {
        c.header_timeout(Duration::from_secs(120))
            .max_connections(6)
    })
    .await;
    let mut held = Vec::new();
    for from in ["127.0.0.1", "127.0.0.3", "127.0.0.4"] {
        for _ in 0..2 {
            held.push(connect_from(from, s.addr).await);
        }
    }
    let refused = health_from("127.0.0.5", s.addr).await;
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "{refused}"
    );
    if !refused.is_empty() {
        assert!(refused.contains("too_many_connections"), "{refused}");
        assert!(refused.to_ascii_lowercase().contains("retry-after: 1"));
    }
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = health_from("127.0.0.5", s.addr).await;
        if again.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {again}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = Running::start(|c| {
        c.header_timeout(Duration::from_secs(60))
            .idle_timeout(Duration::from_secs(1))
    })
    .await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The answer, then the connection stays open for the next request (keep-alive)...
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"status\":\"ok\"") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    // ... until it has been idle for the idle timeout, far less than the header one.
    assert!(
        closed_within(&mut stream, Duration::from_secs(20))
            .await
            .is_some_and(|rest| rest.is_empty()),
        "an idle connection is held"
    );
}

#[tokio::test]
async fn stopping_closes_waiting_connections_and_returns() {
    let mut s = Running::start(|c| c.header_timeout(Duration::from_secs(120))).await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut partial = TcpStream::connect(s.addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    // Both are accepted and waiting before the stop.
    let ok = health_from("127.0.0.1", s.addr).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    tokio::time::timeout(Duration::from_secs(20), s.stop())
        .await
        .expect("serve_on waits for connections that have nothing in progress")
        .unwrap();
    for stream in [&mut silent, &mut partial] {
        assert!(
            closed_within(stream, Duration::from_secs(5))
                .await
                .is_some(),
            "a waiting connection outlived the server"
        );
    }
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "still accepting after the stop"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_its_stream_frees_its_process() {
    let s = Running::start(|c| {
        c.stream_stall_timeout(Duration::from_secs(2))
            // A stream nobody reads is a client gone: the run ends after this grace.
            .disconnect_grace(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(600))
            .pool(PoolConfig {
                max_concurrent: 1,
                ..PoolConfig::default()
            })
    })
    .await;
    // Far more output than the socket buffers and the event queue hold.
    let text = "All work and no play makes Jack a dull boy. ".repeat(300_000);
    s.mock
        .on(Rule::prompt_contains("flood").reply(Reply::text(text)));
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(s.addr).await.unwrap();
    let body = json!({"prompt": "flood me", "include_partial_messages": true}).to_string();
    let request = format!(
        "POST /v1/query/stream HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read the response head, then stop reading.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The run is claimed and started (by now, or very soon).
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.state.pool().stats().active != 1 {
        assert!(Instant::now() < deadline, "the run never took its slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Well before the request timeout (600 s), the slot is free and the CLI gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.state.pool().stats().active != 0 {
        assert!(
            Instant::now() < deadline,
            "a stalled stream still holds its process slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left_running(s.sandbox.cwd()).await.is_empty());
    // The connection is cut too: what is left to read ends, rather than waiting for
    // the rest of the run.
    assert!(
        closed_within(&mut stream, Duration::from_secs(30))
            .await
            .is_some(),
        "the server still holds the stalled connection"
    );
    // The slot serves the next query.
    s.mock
        .on(Rule::prompt_contains("capital").reply(Reply::text("Paris.")));
    let (status, body) = query(&s.http, &s.url, "The capital of France?").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn every_response_has_a_request_id_and_failed_logins_are_logged_without_the_token() {
    let s = Running::start(|c| c).await;
    let secret = "sekrit-hunter2-presented-token";
    let refused = s
        .http
        .post(format!(
            "{}/v1/sessions/3f1e1a56-0000-4000-8000-000000000000/messages",
            s.url
        ))
        .bearer_auth(secret)
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    let anonymous = s
        .http
        .post(format!("{}/v1/query", s.url))
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let anonymous_id = anonymous.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, anonymous_id);

    let lines = log_lines();
    let line = lines
        .iter()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("no log line with request id {id}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("failed login"), "{line}");
    assert!(line.contains("unknown token"), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    // The route's pattern, not the path (which holds a session id).
    assert!(line.contains("/v1/sessions/{id}/messages"), "{line}");
    assert!(!line.contains("3f1e1a56"), "{line}");
    let anonymous_line = lines
        .iter()
        .find(|l| l.contains(&anonymous_id))
        .unwrap_or_else(|| panic!("no log line with request id {anonymous_id}"));
    assert!(
        anonymous_line.contains("no bearer token"),
        "{anonymous_line}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("hunter2")),
        "the presented token reached the log"
    );

    // Successes and unknown routes carry one too; a client's own plain id is kept, an
    // odd one replaced.
    for path in ["/health", "/no-such-route"] {
        let response = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let traced = s
        .http
        .get(format!("{}/health", s.url))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-42");
    let odd = s
        .http
        .get(format!("{}/health", s.url))
        .header("x-request-id", "x level=ERROR forged")
        .send()
        .await
        .unwrap();
    let replaced = odd.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(replaced, "x level=ERROR forged");
    assert!(!replaced.is_empty());
}

#[tokio::test]
async fn a_missing_project_root_is_named_before_listening() {
    let sandbox = Sandbox::without_mock();
    let root = sandbox.root().join("no-such-project");
    let mut command = Binary::command(&sandbox);
    // Every limit flag, so that none of them is what fails.
    command
        .args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--project-root"])
        .arg(&root)
        .args([
            "--max-sessions",
            "5",
            "--session-ttl",
            "60",
            "--approval-timeout",
            "30",
            "--header-timeout",
            "5",
            "--idle-timeout",
            "30",
            "--max-connections",
            "100",
            "--max-connections-per-ip",
            "10",
            "--stream-stall-timeout",
            "10",
        ]);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&root.display().to_string()), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");

    // A token file that is not there is named too.
    let missing = sandbox.root().join("no-tokens");
    let output = Binary::command(&sandbox)
        .args(["--bind", "127.0.0.1:0", "--token-file"])
        .arg(&missing)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    // Zero is not a limit.
    let output = Binary::command(&sandbox)
        .args(["--max-connections-per-ip", "0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn a_signal_ends_streams_and_the_server_and_a_second_one_exits_at_once() {
    let mock = MockAnthropic::start().await;
    mock.on(Rule::any().reply(Reply::text("never mind").delay(Duration::from_secs(60))));
    let sandbox = Sandbox::new(&mock);

    // First signal: the stream ends with `shutting_down`, the server exits cleanly (no
    // drain: tests/operations.rs has those).
    let mut server = Binary::start(&sandbox, &["--drain-timeout", "0"]).await;
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{}/v1/query/stream", server.url()))
        .bearer_auth(TOKEN)
        .json(&json!({"prompt": "wait"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    while mock.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.signal("TERM");
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .unwrap()
        .unwrap();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("shutting_down"), "{body}");
    assert_eq!(server.exit_code().await, Some(0), "{}", server.stderr());
    assert!(left_running(sandbox.cwd()).await.is_empty());

    // Second signal while the drain waits for a request in progress (a body that is
    // still coming): exit 130 at once, nothing left running.
    let mut server = Binary::start(&sandbox, &["--body-timeout", "120"]).await;
    let mut uploading = TcpStream::connect(server.addr).await.unwrap();
    uploading
        .write_all(
            format!(
                "POST /v1/query HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"prompt\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let ok = health_from("127.0.0.1", server.addr).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the first signal waits for the request in progress"
    );
    server.signal("INT");
    assert_eq!(server.exit_code().await, Some(130), "{}", server.stderr());
    assert!(left_running(sandbox.cwd()).await.is_empty());
}

#[tokio::test]
async fn a_body_that_never_ends_is_refused_after_the_body_timeout() {
    let s = Running::start(|c| c.body_timeout(Duration::from_secs(2))).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /v1/query HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"prompt\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(30))
        .await
        .expect("the server waits for the body forever");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(s.mock.requests().is_empty());
}

/// The binary's flags reach the server: the session cap and lifetime, the body limit,
/// the turn cap, operator tokens.
#[tokio::test]
async fn the_binarys_flags_take_effect() {
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let operator = "operator-token";
    let mut server = Binary::start(
        &sandbox,
        &[
            "--max-sessions",
            "1",
            "--session-ttl",
            "1",
            "--max-body-bytes",
            "2048",
            "--max-turns",
            "3",
            "--operator-token",
            operator,
            "--max-response-bytes",
            "65536",
            "--max-conversations",
            "100",
            "--conversation-ttl",
            "600",
            "--deny-outside-project",
            "--home-grace-ms",
            "500",
            "--approval-timeout",
            "5",
        ],
    )
    .await;
    let url = server.url();
    let http = reqwest::Client::new();

    let health: Value = http
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["max_turns"], 3, "{health}");

    // --max-body-bytes
    let big = http
        .post(format!("{url}/v1/query"))
        .bearer_auth(TOKEN)
        .json(&json!({"prompt": "x".repeat(4096)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);

    // --operator-token: accepted, and shown the pool; other tokens are not.
    let stats = |token: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let response = http
                .get(format!("{url}/v1/stats"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let mine = stats(TOKEN).await;
    assert!(mine.get("pool").is_none(), "{mine}");
    assert_eq!(mine["sessions"]["max"], 1, "{mine}");
    assert!(stats(operator).await.get("pool").is_some());

    // --max-sessions 1: a second session waits for the first to end, which
    // --session-ttl 1 does soon.
    let start = || {
        http.post(format!("{url}/v1/sessions"))
            .bearer_auth(TOKEN)
            .json(&json!({"prompt": "hello"}))
            .send()
    };
    let first = start().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = start().await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["kind"],
        "too_many_sessions"
    );
    let id = first["session"].as_str().unwrap();
    let ended = async {
        loop {
            let status = http
                .get(format!("{url}/v1/sessions/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status();
            if status == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), ended)
        .await
        .expect("the session outlived --session-ttl 1 by a minute");
    assert_eq!(start().await.unwrap().status(), 201);

    server.signal("TERM");
    assert_eq!(server.exit_code().await, Some(0));
}
