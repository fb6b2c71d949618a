//! `GET /openapi.json` is the truth about the server: schemathesis generates requests
//! for every operation the document describes (valid ones, and invalid ones from its
//! coverage phase), sends them to the live `claude-code-server` binary (the real
//! pinned CLI against the testkit's mock model, a SQLite database of its own) with a
//! bearer token, and checks each answer against the document: no 5xx for what a
//! client sent, only documented statuses, content types, headers and bodies.
//!
//! schemathesis is installed by `tools/schemathesis` into a virtual environment under
//! `target/` (pinned, created on first use, reused after). A machine without python3
//! or without a way to install it fails this test: it never skips.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use claude_code_testkit::{
    MockAnthropic, Sandbox, ServerLog, ServerProcess, cli_path, workspace_root,
};
use tokio::io::AsyncReadExt;

const TOKEN: &str = "conformance-token";

/// The checks run against every answer. (`response_headers_conformance` checks the
/// documented headers' values: `Retry-After`, `WWW-Authenticate`, `x-run-id`.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Test cases per operation and phase: enough to reach every documented answer of
/// the cheap operations, few enough that the ones that run the CLI finish in about
/// two minutes on a loaded two-core machine.
const MAX_EXAMPLES: &str = "6";

/// The same cases every run (a failure can be reproduced).
const SEED: &str = "20261201";

/// The server binary on a loopback port.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: ServerLog,
}

impl Server {
    async fn start(sandbox: &Sandbox, data_dir: &Path) -> Server {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
        sandbox.configure(command.as_std_mut());
        command
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .env("RUST_LOG", "info")
            // A database of its own: `make test` sets DATABASE_URL for the store tests.
            .env_remove("DATABASE_URL")
            // A parked CLI for each run shape: most runs start in ~40 ms.
            .args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--prewarm", "1"])
            .arg("--project-root")
            .arg(sandbox.cwd())
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let server = ServerProcess::spawn(command, Duration::from_secs(60))
            .await
            .expect("claude-code-server listens");
        Server {
            child: server.child,
            addr: server.addr,
            log: server.log,
        }
    }

    /// The server's log lines that are errors or panics.
    fn errors(&self) -> String {
        self.log
            .text()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `tools/schemathesis` with `args` in `dir`; its exit status and output.
async fn schemathesis(dir: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = tokio::process::Command::new(workspace_root().join("tools/schemathesis"))
        .args(args)
        .current_dir(dir)
        // Its own files (hypothesis' database, reports) stay in `dir`.
        .env("HOME", dir)
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run tools/schemathesis");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (a, b) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        a.unwrap();
        b.unwrap();
        let status = child.wait().await.unwrap();
        (status, format!("{out}\n{err}"))
    };
    // A hang guard only (the first run also installs schemathesis from PyPI).
    tokio::time::timeout(Duration::from_secs(20 * 60), read)
        .await
        .expect("schemathesis did not finish within 20 minutes")
}

/// Starts a session and a streaming run through the API; their ids.
async fn session_and_run(url: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let session: serde_json::Value = http
        .post(format!("{url}/v1/sessions"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = session["session"].as_str().unwrap().to_owned();
    let stream = http
        .post(format!("{url}/v1/query/stream"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let run = stream.headers()["x-run-id"].to_str().unwrap().to_owned();
    // Read to its end: the run is over when the schemathesis run starts.
    let events = stream.text().await.unwrap();
    assert!(events.contains("event: done"), "{events}");
    (session, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_answer_of_the_live_server() {
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let scratch = tempfile::tempdir().unwrap();
    let data_dir = scratch.path().join("data");
    let work = scratch.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();

    // Installed (or found) before the server starts, so the install's time is not
    // spent with a server waiting.
    let (status, output) = schemathesis(&work, &["--version"]).await;
    assert!(
        status.success(),
        "tools/schemathesis could not set up schemathesis (this test never skips):\n{output}"
    );

    let mut server = Server::start(&sandbox, &data_dir).await;
    let url = format!("http://{}", server.addr);
    let schema = format!("{url}/openapi.json");
    // A session and a run to test the operations on them with (otherwise every id
    // schemathesis makes up is answered `404` and the `200` bodies go unchecked).
    let (session, run) = session_and_run(&url).await;
    let document: serde_json::Value = reqwest::get(&schema).await.unwrap().json().await.unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"# The operations that run the CLI: the coverage phase sends only its invalid
# variants (answered at once); their valid requests come from the examples and
# fuzzing phases, at most --max-examples each (every one is a CLI run).
[[operations]]
include-path-regex = '^/v1/query'
phases.coverage.generation.mode = "negative"

[[operations]]
include-path-regex = '^/api/claude/'
phases.coverage.generation.mode = "negative"

[[operations]]
include-path-regex = '^/v1/sessions$'
phases.coverage.generation.mode = "negative"

[[operations]]
include-path-regex = '^/v1/sessions/[{{]id[}}]/messages$'
parameters = {{ "path.id" = "{session}" }}
phases.coverage.generation.mode = "negative"

# The session and the run made above, for the operations on them.
[[operations]]
include-path-regex = '^/v1/sessions/[{{]id[}}](/interrupt)?$'
parameters = {{ "path.id" = "{session}" }}

[[operations]]
include-path-regex = '^/v1/runs/[{{]id[}}]'
parameters = {{ "path.id" = "{run}" }}
"#
        ),
    )
    .unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let report = work.join("report");
    let report = report.to_str().unwrap();
    let (status, output) = schemathesis(
        &work,
        &[
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &schema,
            "--checks",
            CHECKS,
            "--header",
            &auth,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
            "--workers",
            "2",
            "--request-timeout",
            "120",
            "--generation-database",
            "none",
            "--report-dir",
            report,
            "--no-color",
        ],
    )
    .await;
    let errors = server.errors();
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;

    println!("{output}");
    assert!(
        status.success(),
        "schemathesis found answers the document does not describe:\n{output}\n\
         the server's errors:\n{errors}"
    );
    // It tested every operation it found (not a run that found nothing to test).
    let selected = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Operations:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        // (It leaves out the document's own operation, `GET /openapi.json`.)
        selected + 1 >= operations
            && operations >= 15
            && output.contains(&format!("Tested: {selected}")),
        "schemathesis did not test the document's {operations} operations:\n{output}"
    );
}
