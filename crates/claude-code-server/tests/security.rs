//! The security cases of issue 12, against the server binary as an operator runs it:
//! its secrets in its environment (two tenants' tokens, an `ANTHROPIC_API_KEY`, a
//! `DATABASE_URL` whose password a private PostgreSQL cluster really checks), the real
//! CLI (behind a wrapper that records the environment of every start, `--version`
//! probes included) against the mock model. Every test ends by checking that no secret
//! is in any log line of the server, any body or event it sent, any request the model
//! got, and (the API key aside, which the CLI needs) any CLI's environment.
//!
//! | case | where it is tested |
//! |---|---|
//! | no token, a wrong token: `401` | every secured route of `/openapi.json`, here (before: some routes in http.rs `requests_without_the_token_are_refused`, the compat routes in operations.rs) |
//! | another tenant's token: `404`, nothing of the owner's shown or changed | every route of `/openapi.json` with an id, on a live session, a running run and a waiting approval, here; routes without an id show the caller nothing of the other's (before: fleet.rs `tenants_apart`, tenancy.rs, http.rs `sessions_and_approvals_belong_to_their_token`) |
//! | a route without auth | only `/`, `/health`, `/ready`, `/openapi.json`: a new unauthenticated route fails the test |
//! | `cwd` with `..`, absolute outside the roots, missing: `400` | http.rs `limits_are_enforced`, operations.rs (tenants' roots); here on every route that takes a `cwd` |
//! | `cwd` a symlink inside the project pointing outside: `400` | here |
//! | a symlink a tool creates during a run, named by a later request (`cwd`, a Read through it) | here |
//! | an approval rewriting a path out of the project, or a command | tenancy.rs `an_approval_cannot_move_a_write_out_of_the_project`, `an_approval_cannot_rewrite_a_command` |
//! | `bypassPermissions`: `403` | http.rs `limits_are_enforced`; here on every route that takes a mode |
//! | extra tools, extra CLI flags, settings, env, MCP servers, a CLI path: `400` (unknown fields) | here |
//! | session ids and `resume` shaped as flags (`--foo`, `-p`, `--resume=x`) | here, on every route with an id and every `resume` (before: http.rs, one `resume`; tenancy.rs, other UUID spellings) |
//! | `model`, `append_system_prompt` shaped as flags: the CLI gets them as values (`--model=...`), never as arguments (its argv recorded) | here |
//! | a prompt that makes the model read `/etc/passwd` or write outside, under every allowed mode, nobody approving | here |
//! | the same with a client that approves everything, on a server that denies paths outside the project | here (tenancy.rs: the operator switch, one Read) |
//! | secrets in log lines, error bodies, events, the model's requests, the CLIs' environment | every test here (before: process_hygiene.rs, a tool's environment; hardening.rs, failed logins) |
//!
//! Not confined, and said so: a `Bash` command a client approves runs on the host with
//! the server's user (the server cannot tell what a command touches; `deny_outside_project`
//! covers the tools with path fields). Operators who cannot trust their clients allow
//! only modes that never ask for Bash (`readOnly`, `plan`), or run the CLI in a sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use claude_code_testkit::{MockAnthropic, Reply, Rule, Sandbox, cli_path};
use common::{PrivatePg, Server, clis_left};
use futures::StreamExt;
use serde_json::{Value, json};

const TOK_A: &str = "tenant-a-token-6b1f0c";
const TOK_B: &str = "tenant-b-token-92e7aa";
const API_KEY: &str = "sk-ant-api03-hostile-secret-key";
const DB_PASSWORD: &str = "db-pw-7Hq2-secret";

/// A server with secrets, and everything that left it.
struct Hostile {
    server: Server,
    mock: MockAnthropic,
    sandbox: Sandbox,
    http: reqwest::Client,
    /// Every body and event text the server sent.
    seen: Mutex<Vec<String>>,
    /// Where the CLI wrapper writes the environment of each start.
    envs: PathBuf,
    started: std::time::Instant,
    _pg: Option<PrivatePg>,
    _data: tempfile::TempDir,
}

impl Hostile {
    async fn start(extra: &[&str]) -> Hostile {
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock).with_env("ANTHROPIC_API_KEY", API_KEY);
        let envs = sandbox.root().join("cli-envs");
        std::fs::create_dir_all(&envs).unwrap();
        let wrapper = sandbox.root().join("claude-wrapper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nat=\"{}/$$-$(date +%s%N)\"\nenv > \"$at.env\"\n\
                 printf '%s\\n' \"$@\" > \"$at.args\"\nexec \"{}\" \"$@\"\n",
                envs.display(),
                cli_path().display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = tempfile::Builder::new()
            .prefix("security-")
            .tempdir()
            .unwrap();
        let pg = PrivatePg::start(DB_PASSWORD);
        let mut command = common::server_command(&sandbox, "secure");
        command
            .env("CLAUDE_CODE_CLI_PATH", &wrapper)
            .env("CLAUDE_SERVER_TOKENS", format!("{TOK_A},{TOK_B}"))
            .env(
                "RUST_LOG",
                "debug,sqlx=info,hyper=info,h2=info,reqwest=info",
            )
            .args(["--approval-timeout", "120"])
            .args(extra);
        match &pg {
            Some(pg) => command.env("DATABASE_URL", pg.url()),
            None => command.arg("--data-dir").arg(data.path()),
        };
        let server = Server::spawn(command).await;
        Hostile {
            server,
            mock,
            sandbox,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            seen: Mutex::new(Vec::new()),
            envs,
            started: std::time::Instant::now(),
            _pg: pg,
            _data: data,
        }
    }

    fn cwd(&self) -> &Path {
        self.sandbox.cwd()
    }

    /// A request; its status and body (kept for the secrets check).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = tokio::time::timeout(common::HANG, response.text())
            .await
            .expect("hang guard: a body did not end")
            .unwrap_or_default();
        self.seen.lock().unwrap().push(text.clone());
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(&body))
            .await
    }

    /// A stream as tenant A, approving (or not) each permission request with
    /// `allow`; its events. `asked` counts the requests.
    async fn stream(&self, body: Value, allow: bool) -> (Vec<(String, Value)>, usize) {
        let response = self
            .http
            .post(format!("{}/v1/query/stream", self.server.url))
            .bearer_auth(TOK_A)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let mut events = Vec::new();
        let mut asked = 0;
        let mut buffer = String::new();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = tokio::time::timeout(common::HANG, bytes.next())
            .await
            .expect("hang guard: the stream stalled")
        {
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                self.seen.lock().unwrap().push(block.clone());
                let (name, data) = sse_block(&block);
                let Some(data) = data else { continue };
                if name == "permission_request" {
                    asked += 1;
                    let id = data["approval_id"].as_str().unwrap().to_owned();
                    let (status, body) = self
                        .post(
                            TOK_A,
                            &format!("/v1/approvals/{id}"),
                            json!({ "allow": allow }),
                        )
                        .await;
                    assert_eq!(status, 204, "{body}");
                }
                events.push((name, data));
            }
        }
        (events, asked)
    }

    /// No secret in anything that left the server, nor in what the CLIs were given
    /// (the API key aside: the CLI needs it).
    /// Stops the server first: its CLIs must go with it (sessions keep theirs hot until
    /// then).
    async fn assert_no_secrets(&mut self, case: &str, outcome: &str) {
        self.server.stop().await;
        assert!(
            clis_left(self.server.pid, Duration::from_secs(20))
                .await
                .is_empty(),
            "CLI processes outlived the server"
        );
        let log = self.server.log();
        assert!(!log.is_empty());
        let seen = self.seen.lock().unwrap().join("\n");
        for secret in [TOK_A, TOK_B, API_KEY, DB_PASSWORD] {
            assert!(!log.contains(secret), "the server logged {secret}");
            assert!(!seen.contains(secret), "the server sent {secret}");
            assert!(
                !self.mock.requests().iter().any(|r| r.mentions(secret)),
                "the model was told {secret}"
            );
        }
        let mut starts = 0;
        for entry in std::fs::read_dir(&self.envs).unwrap().flatten() {
            if entry.path().extension().is_none_or(|e| e != "env") {
                continue;
            }
            starts += 1;
            let env = std::fs::read_to_string(entry.path()).unwrap();
            for secret in [
                TOK_A,
                TOK_B,
                DB_PASSWORD,
                "LD_PRELOAD",
                "CLAUDE_SERVER_TOKENS",
            ] {
                assert!(
                    !env.contains(secret),
                    "a CLI was started with {secret}:\n{env}"
                );
            }
        }
        assert!(starts > 0, "the CLI wrapper never ran");
        let bodies = self.seen.lock().unwrap().len();
        common::record(
            &format!("security: {case}"),
            &format!(
                "{outcome}; no secret in {} log lines, {bodies} bodies and events, \
                 {starts} CLI environments",
                log.lines().count()
            ),
            self.started.elapsed().as_secs_f64(),
            0,
            serde_json::json!({}),
        );
    }
}

/// An SSE block's event name and data (`None` for a comment).
fn sse_block(block: &str) -> (String, Option<Value>) {
    let mut name = "message".to_owned();
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    let data =
        (!data.is_empty()).then(|| serde_json::from_str(&data).unwrap_or(Value::String(data)));
    (name, data)
}

fn echo() -> Rule {
    Rule::any()
        .reply_with(|req| Reply::text(format!("Noted: {}", req.prompt().unwrap_or_default())))
}

// ------------------------------------------------------------------ tokens, every route

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token_and_another_tenants() {
    let mut h = Hostile::start(&[]).await;
    let secret_word = "A-ONLY-WORD-51";
    h.mock.on(Rule::prompt_contains("PENDING").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": h.cwd().join("a.txt").display().to_string(), "content": "a"}),
        ),
        Reply::text("written"),
    ]));
    h.mock.on(echo());

    // Tenant A's things: a session, a run still running, an approval waiting.
    let (status, session) = h
        .post(
            TOK_A,
            "/v1/sessions",
            json!({"prompt": format!("Remember {secret_word}")}),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let session = session["session"].as_str().unwrap().to_owned();
    let pending = h
        .http
        .post(format!("{}/v1/query/stream", h.server.url))
        .bearer_auth(TOK_A)
        .json(&json!({"prompt": "PENDING write", "permission_mode": "askForEdits", "approvals": true}))
        .send()
        .await
        .unwrap();
    let run = pending.headers()["x-run-id"].to_str().unwrap().to_owned();
    let mut pending = pending.bytes_stream();
    let mut buffer = String::new();
    let approval = loop {
        let chunk = tokio::time::timeout(common::HANG, pending.next())
            .await
            .expect("hang guard: no permission request")
            .unwrap()
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(at) = buffer.find("event: permission_request") {
            let block = &buffer[at..];
            if let Some(end) = block.find("\n\n") {
                let (_, data) = sse_block(&block[..end]);
                break data.unwrap()["approval_id"].as_str().unwrap().to_owned();
            }
        }
    };
    let owned = [
        session.as_str(),
        run.as_str(),
        approval.as_str(),
        secret_word,
    ];

    let (status, doc) = h
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    let mut public = Vec::new();
    let mut tried = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if !secured {
                public.push(template.clone());
                continue;
            }
            let path = match template.split_once('{') {
                None => template.clone(),
                Some(_) if template.starts_with("/v1/approvals/") => {
                    template.replace("{id}", &approval)
                }
                Some(_) if template.starts_with("/v1/sessions/") => {
                    template.replace("{id}", &session)
                }
                Some(_) if template.starts_with("/v1/runs/") => template.replace("{id}", &run),
                Some(_) => panic!("{template}: a route with an id this test does not know: add it"),
            };
            let body = operation.get("requestBody").map(|_| {
                if template.starts_with("/v1/approvals/") {
                    json!({"allow": true})
                } else {
                    json!({"prompt": "B probing"})
                }
            });
            tried += 1;
            for token in [None, Some("not-a-token"), Some("")] {
                let (status, answer) = h.call(method.clone(), &path, token, body.as_ref()).await;
                assert_eq!(status, 401, "{method} {template} with {token:?}: {answer}");
            }
            let (status, answer) = h
                .call(method.clone(), &path, Some(TOK_B), body.as_ref())
                .await;
            if template.contains('{') {
                assert!(
                    status == 404 || status == 403,
                    "{method} {template}: B reached A's thing ({status}): {answer}"
                );
            }
            // B may see the id it sent itself (in a 404's message), nothing else of A's.
            let text = answer.to_string();
            for thing in owned.iter().filter(|t| !path.contains(*t)) {
                assert!(
                    !text.contains(thing),
                    "{method} {template}: B was shown {thing}: {answer}"
                );
            }
        }
    }
    public.sort();
    public.dedup();
    assert_eq!(
        public,
        ["/", "/health", "/openapi.json", "/ready"],
        "routes without auth"
    );
    assert!(tried >= 15, "only {tried} secured routes in /openapi.json");

    // A's things are untouched: the approval still waits for A, the session lives.
    let (status, answer) = h
        .post(
            TOK_A,
            &format!("/v1/approvals/{approval}"),
            json!({"allow": false}),
        )
        .await;
    assert_eq!(status, 204, "B's attempts changed A's approval: {answer}");
    while let Some(chunk) = tokio::time::timeout(common::HANG, pending.next())
        .await
        .expect("hang guard: A's stream did not end")
    {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    h.seen.lock().unwrap().push(buffer);
    assert!(!h.cwd().join("a.txt").exists());
    let (status, history) = h
        .call(
            reqwest::Method::GET,
            &format!("/v1/sessions/{session}"),
            Some(TOK_A),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let (status, row) = h
        .call(
            reqwest::Method::GET,
            &format!("/v1/runs/{run}"),
            Some(TOK_A),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        row["cancel_requested"],
        Value::Null,
        "B cancelled A's run: {row}"
    );
    h.assert_no_secrets(
        &format!("every secured route of /openapi.json ({tried} operations): no token, a wrong one, another tenant's"),
        "401 / 404, nothing of the owner's shown or changed",
    )
    .await;
    eprintln!("{tried} secured operations tried with no, a wrong and another tenant's token");
}

// ------------------------------------------------------------------ paths

#[tokio::test]
async fn paths_out_of_the_project_are_refused_even_through_a_symlink_a_tool_made() {
    let mut h = Hostile::start(&[
        "--deny-outside-project",
        "--allowed-modes",
        "readOnly,askForEdits,strict,plan",
    ])
    .await;
    let outside = h.sandbox.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "OUTSIDE-SECRET-3141").unwrap();
    std::fs::create_dir_all(h.cwd().join("inside")).unwrap();
    std::os::unix::fs::symlink(&outside, h.cwd().join("pre-made-link")).unwrap();
    h.mock.on(Rule::prompt_contains("MAKE-LINK").steps([
        Reply::tool_use(
            "Bash",
            json!({"command": format!("ln -s {} made-by-tool", outside.display()), "description": "link"}),
        ),
        Reply::text("linked"),
    ]));
    h.mock.on(Rule::prompt_contains("READ-THROUGH").steps([
        Reply::tool_use(
            "Read",
            json!({"file_path": h.cwd().join("made-by-tool/secret.txt").display().to_string()}),
        ),
        Reply::tool_use("Read", json!({"file_path": "made-by-tool/secret.txt"})),
        Reply::text("read"),
    ]));
    h.mock.on(echo());

    // A tool makes a symlink out of the project during a run (its own client approves it).
    let (events, asked) = h
        .stream(
            json!({"prompt": "MAKE-LINK now", "permission_mode": "strict", "approvals": true}),
            true,
        )
        .await;
    assert_eq!(events.last().unwrap().0, "done", "{events:?}");
    assert_eq!(asked, 1);
    assert!(
        h.cwd().join("made-by-tool").is_symlink(),
        "the tool made no link"
    );

    let absolute_outside = outside.display().to_string();
    let root = h.sandbox.root().display().to_string();
    let bad_cwds = [
        "..",
        "../outside",
        "inside/../..",
        "inside/../../outside",
        "/etc",
        absolute_outside.as_str(),
        root.as_str(),
        "pre-made-link",
        "pre-made-link/",
        "made-by-tool",
        "made-by-tool/.",
        "~",
        "missing",
    ];
    let routes = ["/v1/query", "/v1/query/stream", "/v1/sessions"];
    for cwd in bad_cwds {
        for route in routes {
            let (status, body) = h
                .post(TOK_A, route, json!({"prompt": "hi", "cwd": cwd}))
                .await;
            assert_eq!(status, 400, "{route} cwd {cwd:?}: {body}");
            assert_eq!(body["error"]["kind"], "invalid_options", "{body}");
        }
    }
    let (status, body) = h
        .post(TOK_A, "/v1/query", json!({"prompt": "hi", "cwd": "inside"}))
        .await;
    assert_eq!(status, 200, "a good cwd: {body}");

    // A later run reads through the tool's link: nobody approving, then its client
    // approving everything; the server denies a path outside either way.
    for approvals in [false, true] {
        let (events, asked) = h
            .stream(
                json!({"prompt": "READ-THROUGH", "permission_mode": "readOnly", "approvals": approvals}),
                true,
            )
            .await;
        // Denied reads end the run `done`, or `error` (permission_denied) when nobody
        // could approve them.
        assert!(
            matches!(events.last().unwrap().0.as_str(), "done" | "error"),
            "{events:?}"
        );
        assert_eq!(asked, 0, "a read outside was put to the client");
    }
    for request in h.mock.requests() {
        assert!(
            !request.mentions("OUTSIDE-SECRET-3141"),
            "the model read through the link"
        );
    }
    h.assert_no_secrets(
        "cwd out of the project (.., absolute, symlinks, one a tool made) and reads through a tool's link",
        "400 / denied",
    )
    .await;
}

// ------------------------------------------------------------------ wider permissions, flags

#[tokio::test]
async fn clients_cannot_widen_permissions_or_smuggle_flags() {
    let mut h = Hostile::start(&[]).await;
    h.mock.on(echo());
    let (status, first) = h
        .post(TOK_A, "/v1/sessions", json!({"prompt": "hello"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let session = first["session"].as_str().unwrap().to_owned();
    let starts = ["/v1/query", "/v1/query/stream", "/v1/sessions"];

    for route in starts {
        let (status, body) = h
            .post(
                TOK_A,
                route,
                json!({"prompt": "hi", "permission_mode": "bypassPermissions"}),
            )
            .await;
        // 403 where a mode may be asked for; `POST /v1/sessions` takes none (400).
        assert!(status == 403 || status == 400, "{route}: {body}");
        for (field, value) in [
            ("allowed_tools", json!(["Bash(*)"])),
            ("tools", json!(["Bash"])),
            ("disallowed_tools", json!([])),
            ("extra_args", json!({"dangerously-skip-permissions": null})),
            ("add_dirs", json!(["/"])),
            ("permission_prompt_tool_name", json!("stdio")),
            (
                "settings",
                json!("{\"permissions\":{\"defaultMode\":\"bypassPermissions\"}}"),
            ),
            ("mcp_servers", json!({"x": {"command": "sh"}})),
            ("env", json!({"LD_PRELOAD": "/tmp/x.so"})),
            ("cli_path", json!("/bin/sh")),
            ("dangerously_skip_permissions", json!(true)),
        ] {
            let mut body = json!({"prompt": "hi"});
            body[field] = value;
            let (status, answer) = h.post(TOK_A, route, body).await;
            assert_eq!(status, 400, "{route} with {field}: {answer}");
        }
    }
    let (status, body) = h
        .post(
            TOK_A,
            &format!("/v1/sessions/{session}/messages"),
            json!({"prompt": "hi", "permission_mode": "bypassPermissions"}),
        )
        .await;
    assert!(status == 400 || status == 403, "{body}");

    // Ids and resume values shaped as flags reach no CLI.
    let flags = [
        "--foo",
        "-p",
        "--resume=x",
        "--dangerously-skip-permissions",
        "-",
        "--",
    ];
    for flag in flags {
        for route in ["/v1/query", "/v1/query/stream", "/v1/sessions"] {
            let (status, body) = h
                .post(TOK_A, route, json!({"prompt": "hi", "resume": flag}))
                .await;
            assert_eq!(status, 400, "{route} resume {flag:?}: {body}");
        }
        let encoded: String = flag.replace('=', "%3D");
        for (method, path) in [
            (reqwest::Method::GET, format!("/v1/sessions/{encoded}")),
            (reqwest::Method::DELETE, format!("/v1/sessions/{encoded}")),
            (
                reqwest::Method::POST,
                format!("/v1/sessions/{encoded}/messages"),
            ),
            (
                reqwest::Method::POST,
                format!("/v1/sessions/{encoded}/interrupt"),
            ),
            (reqwest::Method::GET, format!("/v1/runs/{encoded}")),
            (reqwest::Method::GET, format!("/v1/runs/{encoded}/events")),
            (reqwest::Method::POST, format!("/v1/runs/{encoded}/cancel")),
            (reqwest::Method::POST, format!("/v1/approvals/{encoded}")),
        ] {
            let body = json!({"prompt": "hi", "allow": true});
            let body = (method == reqwest::Method::POST).then_some(&body);
            let (status, answer) = h.call(method.clone(), &path, Some(TOK_A), body).await;
            assert!(
                status == 404 || status == 400,
                "{method} {path}: {status} {answer}"
            );
        }
    }
    // Nothing of these reached the model: only the first turn and nothing else ran.
    assert_eq!(h.mock.requests().len(), 1, "a refused request ran");

    // Values shaped as flags where a value is taken reach the CLI as that option's value
    // (`--model=...`), never as an argument of their own.
    for field in ["model", "append_system_prompt"] {
        for flag in ["--dangerously-skip-permissions", "-p", "--permission-mode"] {
            let mut body = json!({"prompt": "hi"});
            body[field] = json!(flag);
            let (status, answer) = h.post(TOK_A, "/v1/query", body).await;
            assert!(status < 500 || status == 502, "{field} {flag}: {answer}");
        }
    }
    let mut as_values = 0;
    for entry in std::fs::read_dir(&h.envs).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "args") {
            let args = std::fs::read_to_string(entry.path()).unwrap();
            as_values += args
                .lines()
                .filter(|a| *a == "--model=--dangerously-skip-permissions")
                .count();
            for flag in ["--dangerously-skip-permissions", "-p", "bypassPermissions"] {
                assert!(
                    !args.lines().any(|a| a == flag),
                    "a CLI was started with {flag} as an argument:\n{args}"
                );
            }
        }
    }
    assert_eq!(
        as_values, 1,
        "the flag-shaped model did not reach the CLI as a value"
    );
    h.assert_no_secrets(
        "bypassPermissions, extra tools, CLI flags, settings, env; ids and resume shaped as flags",
        "403 / 400 / 404, no CLI started",
    )
    .await;
}

// ------------------------------------------------------------------ /etc/passwd, every mode

/// The files a hostile prompt tried to write outside, for `tag`.
fn outside_files(outside: &Path, tag: &str) -> Vec<PathBuf> {
    ["write", "bash"]
        .iter()
        .map(|k| outside.join(format!("{k}-{tag}.txt")))
        .collect()
}

/// Scripts the model to read `/etc/passwd` and write outside (`bash`: with Bash too).
fn hostile_prompt(h: &Hostile, outside: &Path, tag: &str, bash: bool) {
    let [write, through_bash] = <[PathBuf; 2]>::try_from(outside_files(outside, tag)).unwrap();
    let mut steps = vec![
        Reply::tool_use("Read", json!({"file_path": "/etc/passwd"})),
        Reply::tool_use(
            "Write",
            json!({"file_path": write.display().to_string(), "content": "pwned"}),
        ),
        Reply::tool_use("Read", json!({"file_path": "../../../../../../etc/passwd"})),
    ];
    if bash {
        steps.push(Reply::tool_use(
            "Bash",
            json!({"command": format!("cat /etc/passwd > {}", through_bash.display()), "description": "x"}),
        ));
    }
    steps.push(Reply::text(format!("done {tag}")));
    h.mock
        .on(Rule::prompt_contains(format!("HOSTILE-{tag}")).steps(steps));
}

const MODES: [&str; 4] = ["readOnly", "askForEdits", "strict", "plan"];

fn assert_nothing_got_out(h: &Hostile, outside: &Path, tag: &str) {
    for request in h.mock.requests() {
        assert!(
            !request.mentions("root:x:0:0"),
            "{tag}: /etc/passwd reached the model"
        );
    }
    for file in outside_files(outside, tag) {
        assert!(!file.exists(), "{tag}: {} was written", file.display());
    }
}

#[tokio::test]
async fn no_mode_lets_a_prompt_read_or_write_outside_the_project_when_nobody_approves() {
    let mut h = Hostile::start(&["--allowed-modes", "readOnly,askForEdits,strict,plan"]).await;
    let outside = h.sandbox.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for mode in MODES {
        hostile_prompt(&h, &outside, mode, true);
    }
    h.mock.on(echo());
    for mode in MODES {
        let (status, body) = h
            .post(
                TOK_A,
                "/v1/query",
                json!({"prompt": format!("HOSTILE-{mode}"), "permission_mode": mode}),
            )
            .await;
        // Done, or refused typed: 403 permission_denied lists what nobody approved.
        assert!(
            status == 200 || status == 403 || status == 422,
            "{mode}: {body}"
        );
        assert_nothing_got_out(&h, &outside, mode);
    }
    h.assert_no_secrets(
        "a prompt reading /etc/passwd and writing outside, every mode, nobody approving",
        "denied; nothing read or written",
    )
    .await;
}

#[tokio::test]
async fn no_mode_lets_an_approving_client_read_or_write_outside_on_a_confined_server() {
    let mut h = Hostile::start(&[
        "--deny-outside-project",
        "--allowed-modes",
        "readOnly,askForEdits,strict,plan",
    ])
    .await;
    let outside = h.sandbox.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for mode in MODES {
        // Bash is left out: the server cannot tell what a command touches, and a
        // client that approves `cat /etc/passwd` gets it (see the module docs).
        hostile_prompt(&h, &outside, mode, false);
    }
    h.mock.on(echo());
    for mode in MODES {
        let (events, asked) = h
            .stream(
                json!({"prompt": format!("HOSTILE-{mode}"), "permission_mode": mode, "approvals": true}),
                true,
            )
            .await;
        assert!(
            matches!(events.last().unwrap().0.as_str(), "done" | "error"),
            "{events:?}"
        );
        assert_eq!(asked, 0, "{mode}: a path outside was put to the client");
        assert_nothing_got_out(&h, &outside, mode);
    }
    h.assert_no_secrets(
        "the same with a client approving everything, deny_outside_project",
        "denied without asking; nothing read or written",
    )
    .await;
}
