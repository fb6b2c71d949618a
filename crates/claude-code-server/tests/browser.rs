//! The web page in a real browser: headless Chromium (Debian's `chromium`, driven
//! through its `chromedriver` with the `fantoccini` WebDriver client) against the server
//! binary, the pinned CLI and the mock model. A person's session: type a prompt and
//! watch the answer stream in; allow a `Write` and find the file on disk; reload the page
//! while a `Write` waits and still answer it; reload the page while an answer streams and
//! watch it go on where it was, nothing drawn twice; stop a run and find it cancelled.
//!
//! `make test` installs `chromium` and `chromium-driver` first (`make browser`). The
//! test starts its own chromedriver on a loopback port, with a browser profile of its
//! own, and kills both (their whole process group) at the end, failure or not.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use claude_code_testkit::{
    MockAnthropic, Reply, Rule, Sandbox, ServerProcess, cli_path, survivors_in,
};
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

const TOKEN: &str = "browser-test-token";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// A hang guard for each thing the test waits for, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(90);

/// The server binary on a loopback port, alone on a temporary SQLite database.
struct Server {
    child: tokio::process::Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(sandbox: &Sandbox) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_claude-code-server"));
        sandbox.configure(command.as_std_mut());
        command
            .env("CLAUDE_CODE_CLI_PATH", cli_path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // Its own database: servers sharing make test's DATABASE_URL would take each
            // other's runs.
            .env_remove("DATABASE_URL")
            .env_remove("CLAUDE_SERVER_DATA_DIR")
            .env_remove("CLAUDE_SERVER_TOKENS")
            .args(["--bind", "127.0.0.1:0", "--token", TOKEN, "--prewarm", "0"])
            .arg("--data-dir")
            .arg(data.path())
            .arg("--project-root")
            .arg(sandbox.cwd())
            // The page offers the modes the server allows; askForEdits asks for a Write.
            .args(["--allowed-modes", "readOnly,askForEdits"])
            // A stream nobody reads is not cancelled during the test: a run that ends
            // `cancelled` was cancelled by the page's Stop.
            .args(["--disconnect-grace", "600"])
            .current_dir(sandbox.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let server = ServerProcess::spawn(command, Duration::from_secs(60))
            .await
            .expect("the server listens");
        Server {
            url: server.url(),
            child: server.child,
            _data: data,
        }
    }

    /// SIGTERM, and the server's own shutdown (which ends its CLIs).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let exited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(exited.is_ok(), "the server did not stop on SIGTERM");
    }
}

/// chromedriver on a loopback port, in a process group of its own that its Chromium
/// joins: dropping it kills the group, so no browser outlives the test.
struct Driver {
    child: std::process::Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: `make browser` installs Debian's chromium and chromium-driver"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("browser-test-profile-")
            .tempdir()
            .unwrap();
        // A free loopback port (chromedriver takes the number, not a socket).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Chromium's own scratch files go there too, and go with it.
        let scratch = profile.path().join("tmp");
        std::fs::create_dir(&scratch).unwrap();
        let mut command = std::process::Command::new(CHROMEDRIVER);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .current_dir(profile.path())
            .env("TMPDIR", &scratch)
            // Nor in the home directory (crash reports, caches, certificate store).
            .env("HOME", &scratch)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{}/status", driver.url)).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let profile = self.profile.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // As root Chromium runs only without its sandbox; the test's page is
                    // its own server's.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a headless Chromium")
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Kills chromedriver and its browser; returns the processes of the group still
    /// there after a while (none, when all went).
    fn kill(&mut self) -> Vec<u32> {
        let _ = killpg(self.group(), Signal::SIGKILL);
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = group_members(self.group());
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Live (not zombie) processes of process group `group`.
fn group_members(group: Pid) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp ...`
            let fields: Vec<&str> = stat
                .rfind(')')
                .map(|end| stat[end + 1..].split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2
                && !matches!(fields[0], "Z" | "X")
                && fields[2] == group.as_raw().to_string()
        })
        .collect()
}

/// What the page shows of its last turn.
async fn last_turn(browser: &Client) -> Value {
    browser
        .execute(
            r##"
            const turns = [...document.querySelectorAll("#log .turn")];
            const turn = turns[turns.length - 1];
            if (!turn) return { turns: 0 };
            return {
              turns: turns.length,
              prompt: turn.querySelector(".user")?.textContent ?? null,
              text: [...turn.querySelectorAll(".assistant")].map((b) => b.textContent).join("\n"),
              streaming: !!turn.querySelector(".assistant.streaming"),
              foot: turn.querySelector(".foot")?.textContent ?? null,
              notices: [...turn.querySelectorAll(".notice")].map((n) => n.textContent),
              cards: [...turn.querySelectorAll("section.card")].map((c) => ({
                label: c.getAttribute("aria-label"),
                open: !c.classList.contains("closed"),
                state: c.querySelector(".state")?.textContent ?? "",
              })),
              page: document.body.textContent,
              saved: sessionStorage.getItem("claude-code-server.run"),
            };
            "##,
            Vec::new(),
        )
        .await
        .expect("the page answers a script")
}

/// Looks at the last turn until `check` accepts it (each look is handed to `check`).
async fn watch<T>(browser: &Client, what: &str, mut check: impl FnMut(&Value) -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let turn = last_turn(browser).await;
        if let Some(found) = check(&turn) {
            return found;
        }
        let mut shown = turn.clone();
        shown["page"] = Value::Null;
        assert!(
            Instant::now() < deadline,
            "waited for {what}; the page shows {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn type_prompt(browser: &Client, prompt: &str) {
    let input = browser.find(Locator::Css("#prompt")).await.unwrap();
    input.send_keys(prompt).await.unwrap();
    browser
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn text(turn: &Value) -> &str {
    turn["text"].as_str().unwrap_or_default()
}

fn finished(turn: &Value) -> bool {
    turn["foot"].is_string() && !turn["streaming"].as_bool().unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_asks_approves_a_write_and_reloads_mid_stream() {
    let mock = MockAnthropic::start().await;
    let sandbox = Sandbox::new(&mock);
    let note: PathBuf = sandbox.cwd().join("note.txt");
    let second: PathBuf = sandbox.cwd().join("second.txt");

    const FIRST: &str = "The capital of France is Paris, a city on the Seine with many bridges.";
    mock.on(Rule::prompt_contains("capital of France")
        .reply(Reply::text(FIRST).chunk_delay(Duration::from_millis(150))));
    mock.on(Rule::prompt_contains("Save a note").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": note, "content": "written from the browser\n"}),
        ),
        Reply::text("Saved the note."),
    ]));
    mock.on(Rule::prompt_contains("Save another note").steps([
        Reply::tool_use(
            "Write",
            json!({"file_path": second, "content": "after a reload\n"}),
        ),
        Reply::text("Saved the second note."),
    ]));
    // Slow enough to reload the page in the middle: one word every 250 ms.
    let count: String = (1..=60)
        .map(|i| format!("n{i:02}"))
        .collect::<Vec<_>>()
        .join(" ");
    mock.on(Rule::prompt_contains("Count slowly")
        .reply(Reply::text(count.clone()).chunk_delay(Duration::from_millis(250))));

    let server = Server::start(&sandbox).await;
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    let group = driver.group();

    browser.goto(&format!("{}/", server.url)).await.unwrap();
    // The token, as a person types it (kept by the page when the field is left), and
    // the mode that asks before an edit.
    browser
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    let mode = browser.find(Locator::Css("#mode")).await.unwrap();
    // The modes come from the server's /health (its version shows when it answered).
    let version = browser.find(Locator::Css("#version")).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while version.text().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the page never heard from /health"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mode.select_by_value("askForEdits").await.unwrap();

    // 1. The answer streams in: part of it shows while the rest is still coming.
    type_prompt(&browser, "What is the capital of France?").await;
    let partial = watch(&browser, "part of the first answer", |t| {
        let shown = text(t);
        (t["streaming"] == true && !shown.is_empty() && shown != FIRST).then(|| shown.to_owned())
    })
    .await;
    assert!(
        FIRST.starts_with(&partial),
        "{partial:?} is not how {FIRST:?} starts"
    );
    let turn = watch(&browser, "the first answer", |t| {
        finished(t).then(|| t.clone())
    })
    .await;
    assert_eq!(text(&turn), FIRST);
    assert_eq!(turn["notices"], json!([]), "{turn:#}");

    // 2. A Write waits for the person; allowed, the file is written.
    type_prompt(&browser, "Save a note, please.").await;
    let card = watch(&browser, "the approval card", |t| {
        t["cards"]
            .as_array()
            .and_then(|cards| cards.iter().find(|c| c["open"] == true).cloned())
    })
    .await;
    assert_eq!(card["label"], "Permission request: Write", "{card:#}");
    assert!(
        !note.exists(),
        "the note was written before anyone allowed it"
    );
    browser
        .find(Locator::Css("section.card:not(.closed) button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let turn = watch(&browser, "the end of the Write turn", |t| {
        finished(t).then(|| t.clone())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&note).ok().as_deref(),
        Some("written from the browser\n"),
        "{turn:#}"
    );
    assert_eq!(turn["cards"][0]["state"], "Allowed.", "{turn:#}");
    assert!(text(&turn).contains("Saved the note."), "{turn:#}");
    assert_eq!(turn["notices"], json!([]), "{turn:#}");

    // 3. A reload while a Write waits: the card is there again, and still answers.
    type_prompt(&browser, "Save another note, please.").await;
    watch(&browser, "the second approval card", |t| {
        t["cards"]
            .as_array()
            .and_then(|cards| cards.iter().find(|c| c["open"] == true))
            .map(|_| ())
    })
    .await;
    browser.refresh().await.unwrap();
    let turn = watch(&browser, "the approval card after the reload", |t| {
        let cards = t["cards"].as_array()?;
        cards.iter().any(|c| c["open"] == true).then(|| t.clone())
    })
    .await;
    assert_eq!(turn["prompt"], "Save another note, please.", "{turn:#}");
    assert_eq!(turn["cards"].as_array().unwrap().len(), 1, "{turn:#}");
    assert!(!second.exists(), "written before anyone allowed it");
    browser
        .find(Locator::Css("section.card:not(.closed) button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let turn = watch(&browser, "the end of the second Write turn", |t| {
        finished(t).then(|| t.clone())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&second).ok().as_deref(),
        Some("after a reload\n"),
        "{turn:#}"
    );
    assert!(text(&turn).contains("Saved the second note."), "{turn:#}");
    assert_eq!(turn["notices"], json!([]), "{turn:#}");

    // 4. A reload while the answer streams: the page goes on where it was.
    type_prompt(&browser, "Count slowly to sixty.").await;
    let before = watch(&browser, "a few words of the count", |t| {
        let shown = text(t);
        (t["streaming"] == true && shown.contains("n05") && !shown.contains("n20"))
            .then(|| shown.to_owned())
    })
    .await;
    assert!(count.starts_with(&before), "{before:?}");
    browser.refresh().await.unwrap();
    // After the reload: the turn drawn again and followed live. Every look shows a
    // beginning of the answer (a delta drawn twice would break it), and the answer
    // grows past what was there before the reload while it still streams.
    let mut looks = 0;
    let resumed = watch(&browser, "the count going on after the reload", |t| {
        let shown = text(t);
        if !shown.is_empty() {
            looks += 1;
            assert!(
                count.starts_with(shown.trim_end()),
                "after the reload the page shows {shown:?}, not a beginning of the count"
            );
        }
        (t["streaming"] == true && shown.len() > before.len()).then(|| shown.to_owned())
    })
    .await;
    assert!(looks > 0 && resumed.len() > before.len());
    let turn = watch(&browser, "the end of the count", |t| {
        let shown = text(t);
        assert!(
            count.starts_with(shown.trim_end()),
            "the page shows {shown:?}"
        );
        finished(t).then(|| t.clone())
    })
    .await;
    assert_eq!(text(&turn), count, "{turn:#}");
    assert_eq!(turn["prompt"], "Count slowly to sixty.");
    assert_eq!(turn["notices"], json!([]), "{turn:#}");
    let page = turn["page"].as_str().unwrap();
    for word in ["n01", "n05", "n60"] {
        assert_eq!(page.matches(word).count(), 1, "{word} shows more than once");
    }
    // The tab forgets a finished run.
    assert_eq!(turn["saved"], Value::Null, "{turn:#}");

    // 5. Stop ends the run on the server, not only the page's stream.
    type_prompt(&browser, "Count slowly once more.").await;
    let run = watch(&browser, "the run id kept by the tab", |t| {
        let saved: Value = serde_json::from_str(t["saved"].as_str()?).ok()?;
        let shown = text(t);
        (t["streaming"] == true && shown.contains("n03"))
            .then(|| saved["run"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    browser
        .find(Locator::Css("#stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let turn = watch(&browser, "the stopped turn", |t| {
        t["foot"]
            .as_str()
            .is_some_and(|f| f.starts_with("Stopped"))
            .then(|| t.clone())
    })
    .await;
    assert_eq!(
        turn["saved"],
        Value::Null,
        "a stopped run is forgotten: {turn:#}"
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status: Value = http
            .get(format!("{}/v1/runs/{run}", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match status["state"].as_str() {
            Some("cancelled") => break,
            Some("succeeded" | "failed" | "interrupted") => {
                panic!("Stop did not cancel: {status:#}")
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the stopped run is {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.close().await.unwrap();
    let left = driver.kill();
    assert!(
        left.is_empty(),
        "browser processes outlived the test: {left:?}"
    );
    assert!(group_members(group).is_empty());
    server.stop().await;
    let cli_left = survivors_in(sandbox.cwd(), Duration::from_secs(15)).await;
    assert!(
        cli_left.is_empty(),
        "CLI processes left in the project: {cli_left:?}"
    );
}
