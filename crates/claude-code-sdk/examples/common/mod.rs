//! What every example shares: choosing between real Claude and the bundled mock model.
//!
//! [`Backend::start`] looks for credentials: `ANTHROPIC_API_KEY`, or a logged-in CLI
//! (`claude auth status`). With credentials, the examples talk to Claude for real.
//! Without them, they start the mock Anthropic API of `claude-code-testkit` on
//! 127.0.0.1 and point the real Claude Code CLI at it, in a temporary sandbox, and say
//! so loudly. `CLAUDE_SDK_EXAMPLES_MOCK=1` chooses the mock even with credentials.
//!
//! Either way the examples run in a fresh temporary working directory
//! ([`Backend::workdir`]), so the files they write never land in your project.
//!
//! Include it from an example with:
//!
//! ```ignore
//! #[path = "common/mod.rs"]
//! mod common;
//! ```

// Each example uses only part of this module.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use claude_code_sdk::cli::{auth_status, find_cli};
use claude_code_sdk::{ClaudeCodeOptions, ClaudeCodeOptionsBuilder};
use claude_code_testkit::{MockAnthropic, RecordedRequest, Reply, Rule, Sandbox, demo_rules};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Set to `1` to use the mock model even when credentials exist.
pub const FORCE_MOCK_ENV: &str = "CLAUDE_SDK_EXAMPLES_MOCK";

/// Where the examples get their answers from.
pub struct Backend {
    mode: Mode,
    cli: PathBuf,
}

enum Mode {
    /// Real Claude; the examples work in a temporary directory.
    Real { workdir: TempDir },
    /// The bundled mock model. It stops when this is dropped.
    Mock(Box<Mocked>),
}

struct Mocked {
    mock: MockAnthropic,
    /// Where the CLI runs: its `cwd()` is the working directory.
    sandbox: Sandbox,
}

impl Backend {
    /// Picks the backend and prints which one it is.
    pub async fn start() -> Backend {
        Backend::start_with(Vec::new()).await
    }

    /// Like [`Backend::start`], and with the mock model, `first_rules` are checked
    /// before every other rule: for an example that scripts a fault, such as an
    /// overloaded API. They are ignored with real Claude.
    pub async fn start_with(first_rules: Vec<Rule>) -> Backend {
        let Some(cli) = find_claude() else {
            eprintln!(
                "No Claude Code CLI found: run `make cli` (or `make run`) to install the \
                 pinned one, or set CLAUDE_CODE_CLI_PATH."
            );
            std::process::exit(1);
        };
        let forced_mock = std::env::var(FORCE_MOCK_ENV).is_ok_and(|v| v == "1");
        let credentials = if forced_mock {
            None
        } else {
            credentials(&cli).await
        };
        match credentials {
            Some(how) => Backend::real(&how, cli),
            None => Backend::mock(forced_mock, cli, first_rules).await,
        }
    }

    fn real(how: &str, cli: PathBuf) -> Backend {
        let workdir = tempfile::Builder::new()
            .prefix("claude-sdk-example-")
            .tempdir()
            .expect("cannot create a temporary working directory");
        eprintln!("Using real Claude ({how}), CLI {}", cli.display());
        eprintln!("Working directory: {}\n", workdir.path().display());
        Backend {
            mode: Mode::Real { workdir },
            cli,
        }
    }

    async fn mock(forced: bool, cli: PathBuf, first_rules: Vec<Rule>) -> Backend {
        let mock = MockAnthropic::start().await;
        let sandbox = Sandbox::new(&mock);
        // The examples' own scripts first: the demo rules end with a catch-all.
        let rules = first_rules
            .into_iter()
            .chain(example_rules(sandbox.cwd()))
            .chain(demo_rules());
        for rule in rules {
            mock.on(rule);
        }
        print_banner(forced, &mock, &sandbox, &cli);
        Backend {
            mode: Mode::Mock(Box::new(Mocked { mock, sandbox })),
            cli,
        }
    }

    /// Whether the answers come from the bundled mock model.
    pub fn is_mock(&self) -> bool {
        matches!(self.mode, Mode::Mock(_))
    }

    /// The directory the CLI works in (temporary, deleted at exit).
    pub fn workdir(&self) -> &Path {
        match &self.mode {
            Mode::Real { workdir } => workdir.path(),
            Mode::Mock(mocked) => mocked.sandbox.cwd(),
        }
    }

    /// Options for this backend: the CLI, the working directory and, for the mock,
    /// the sandbox's environment (the mock's URL, a throwaway API key, a temporary
    /// `HOME`). Add your own options to the builder.
    pub fn options(&self) -> ClaudeCodeOptionsBuilder {
        let builder = ClaudeCodeOptions::builder()
            .cli_path(&self.cli)
            .cwd(self.workdir());
        match &self.mode {
            Mode::Real { .. } => builder,
            // The CLI inherits our environment; blank out the Claude and Anthropic
            // variables the sandbox does not set (auth tokens, Bedrock/Vertex switches)
            // so that only the mock can answer.
            Mode::Mock(mocked) => builder
                .envs(
                    mocked
                        .sandbox
                        .inherited_env_to_remove()
                        .into_iter()
                        .map(|key| (key, "")),
                )
                .envs(mocked.sandbox.env()),
        }
    }
}

/// The CLI to run: `CLAUDE_CODE_CLI_PATH` (the Makefile sets it), else the pinned CLI
/// in `tools/claude-cli` (the version the mock model is written for), else wherever
/// the SDK finds one (`PATH`, the usual install locations).
fn find_claude() -> Option<PathBuf> {
    let from_env = std::env::var_os(claude_code_testkit::CLI_PATH_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let pinned =
        claude_code_testkit::workspace_root().join("tools/claude-cli/node_modules/.bin/claude");
    from_env
        .into_iter()
        .chain([pinned])
        .find(|p| p.is_file())
        .or_else(|| find_cli(None).ok())
}

/// How we know Claude can be reached, if it can: an API key, or a logged-in CLI.
async fn credentials(cli: &Path) -> Option<String> {
    if std::env::var("ANTHROPIC_API_KEY").is_ok_and(|key| !key.trim().is_empty()) {
        return Some("ANTHROPIC_API_KEY is set".to_owned());
    }
    let status = auth_status(cli, &[]).await.ok()?;
    if !status.logged_in {
        return None;
    }
    let method = status.auth_method;
    Some(format!("`claude auth status`: logged in, {method}"))
}

fn print_banner(forced: bool, mock: &MockAnthropic, sandbox: &Sandbox, cli: &Path) {
    let rule = "=".repeat(78);
    let why = if forced {
        format!("{FORCE_MOCK_ENV}=1 is set")
    } else {
        "NO CLAUDE CREDENTIALS FOUND (no ANTHROPIC_API_KEY, CLI not logged in)".to_owned()
    };
    eprintln!("{rule}");
    eprintln!("  {why}");
    eprintln!("  => The answers below come from the BUNDLED MOCK MODEL (claude-code-testkit),");
    eprintln!(
        "     a scripted stand-in for the Anthropic API on {}.",
        mock.url()
    );
    eprintln!("     They are canned, NOT written by Claude. The real Claude Code CLI still");
    eprintln!("     runs, with its real tools, in a temporary sandbox:");
    eprintln!("       CLI: {}", cli.display());
    eprintln!("       cwd: {}", sandbox.cwd().display());
    eprintln!("  To use real Claude:  export ANTHROPIC_API_KEY=sk-ant-...");
    eprintln!("                  or:  claude auth login");
    eprintln!("{rule}\n");
}

// ---------------------------------------------------------------------------------
// The mock model's script for the examples. Each rule answers one example's prompt the
// way a model would: with the same tool calls, run for real by the CLI. Anything else
// goes to the testkit's demo rules (a greeting that says it comes from the mock).
// ---------------------------------------------------------------------------------

/// Replies from the mock carry this prefix, so nobody mistakes them for Claude's.
const MOCK: &str = "[mock model]";

fn example_rules(cwd: &Path) -> Vec<Rule> {
    let path = |name: &str| cwd.join(name).display().to_string();
    vec![
        // basic_query
        Rule::prompt_contains("2 + 2").reply(Reply::text(format!("{MOCK} 2 + 2 = 4."))),
        Rule::prompt_contains("Rust is in one sentence").reply(Reply::text(format!(
            "{MOCK} Rust is a systems programming language that gives you C-like speed \
             with memory safety checked at compile time."
        ))),
        Rule::prompt_contains("hello.txt").steps([
            Reply::tool_use(
                "Write",
                json!({"file_path": path("hello.txt"), "content": "Hello, World!\n"}),
            ),
            Reply::text(format!(
                "{MOCK} I created hello.txt with 'Hello, World!' in it."
            )),
        ]),
        // processing_messages
        Rule::prompt_contains("notes.txt").reply_with({
            let notes = path("notes.txt");
            move |req| match req.step() {
                0 => Reply::text(format!("{MOCK} Let me read the file."))
                    .then_tool_use("Read", json!({"file_path": notes})),
                _ => Reply::text(summarize_read(req)),
            }
        }),
        // error_handling
        Rule::prompt_contains("very long essay")
            .reply(Reply::text(format!("{MOCK} (too late)")).delay(Duration::from_secs(30))),
        Rule::prompt_contains("secret.txt").steps([
            Reply::tool_use(
                "Write",
                json!({"file_path": path("secret.txt"), "content": "top secret\n"}),
            ),
            Reply::text(format!("{MOCK} I was not allowed to write secret.txt.")),
        ]),
        // multi_turn_chat
        Rule::prompt_contains("My name is").reply_with(|req| {
            let prompt = req.prompt().unwrap_or_default();
            let name = word_after(&prompt, "My name is ");
            let topic = word_after(&prompt, "learning ");
            Reply::text(format!(
                "{MOCK} Nice to meet you, {}! Good luck learning {}.",
                name.as_deref().unwrap_or("stranger"),
                topic.as_deref().unwrap_or("new things")
            ))
        }),
        Rule::prompt_contains("my name?").reply_with(|req| {
            Reply::text(match word_after(&earlier_user_text(req), "My name is ") {
                Some(name) => {
                    format!("{MOCK} Your name is {name}: you told me in your first message.")
                }
                None => format!("{MOCK} You have not told me your name."),
            })
        }),
        Rule::prompt_contains("am I learning").reply_with(|req| {
            Reply::text(match word_after(&earlier_user_text(req), "learning ") {
                Some(topic) => format!(
                    "{MOCK} You are learning {topic}. Try writing a small CLI tool in it next!"
                ),
                None => format!("{MOCK} You have not told me what you are learning."),
            })
        }),
        // permission_callback
        Rule::prompt_contains("config.toml").steps([
            Reply::tool_use("Read", json!({"file_path": path("config.toml")})),
            Reply::tool_use(
                "Bash",
                json!({"command": "echo 'config.toml: 3 settings' > /tmp/summary.txt"}),
            ),
            Reply::tool_use("Bash", json!({"command": "rm -rf build"})),
            Reply::text(format!(
                "{MOCK} I read config.toml and saved a summary. I could not delete the \
                 build directory: that command was denied."
            )),
        ]),
        // hooks
        Rule::prompt_contains("codename").reply_with(|req| match req.step() {
            0 => {
                let codename = word_after(&everything_said(req), "codename is ");
                Reply::text(format!(
                    "{MOCK} The project codename is {} (I learned it from the context a hook \
                     added). Now the clean-up.",
                    codename.as_deref().unwrap_or("unknown")
                ))
                .then_tool_use("Bash", json!({"command": "rm -rf build"}))
            }
            1 => Reply::tool_use("Bash", json!({"command": "ls"})),
            _ => Reply::text(format!(
                "{MOCK} The `rm -rf` was blocked by a hook, so nothing was deleted; `ls` shows: {}",
                last_tool_result(req).trim().replace('\n', ", ")
            )),
        }),
        // custom_tools
        Rule::prompt_contains("calculator tools").reply_with(|req| match req.step() {
            0 => Reply::text(format!("{MOCK} I'll multiply first."))
                .then_tool_use("mcp__calc__multiply", json!({"a": 12.5, "b": 4})),
            1 => Reply::tool_use(
                "mcp__calc__add",
                json!({"a": number(&last_tool_result(req)), "b": 7}),
            ),
            2 => Reply::tool_use(
                "mcp__calc__divide",
                json!({"a": number(&last_tool_result(req)), "b": 0}),
            ),
            _ => {
                let results: Vec<_> = req.tool_results();
                let sum = results.get(1).map_or("?", |r| r.content.as_str());
                // Only the tool's own words: the CLI may append hints for the model.
                let division = results
                    .get(2)
                    .and_then(|r| r.content.lines().next())
                    .unwrap_or("?");
                Reply::text(format!(
                    "{MOCK} (12.5 × 4) + 7 = {sum}. Dividing it by 0 failed: {division}"
                ))
            }
        }),
        // retry (its two 529s come first, from `Backend::start_with`)
        Rule::prompt_contains("retry with jitter").reply(Reply::text(format!(
            "{MOCK} Clients that failed together would retry together and overload the \
             service again; random waits spread them out."
        ))),
        Rule::prompt_contains("revoked API key").reply(Reply::error(401)),
        // pool
        Rule::prompt_contains("In one sentence, what is a").reply_with(|req| {
            let prompt = req.prompt().unwrap_or_default();
            let answer = [
                ("mutex", "a lock that lets one thread at a time touch shared data"),
                ("semaphore", "a counter of permits that bounds how many tasks run at once"),
                ("channel", "a queue that moves values from one task to another"),
                ("thread pool", "a fixed set of threads that run queued jobs"),
            ]
            .into_iter()
            .find(|(term, _)| prompt.contains(term))
            .map_or("something I have no canned answer for".to_owned(), |(term, what)| {
                format!("a {term} is {what}")
            });
            Reply::text(format!("{MOCK} In one sentence: {answer}."))
        }),
        Rule::prompt_contains("history of operating systems").reply(
            Reply::text(format!(
                "{MOCK} From batch monitors to time sharing, Unix, and the PC: a long story."
            ))
            .delay(Duration::from_secs(3)),
        ),
        // cache
        Rule::prompt_contains("what an HTTP cache does").reply_with(|req| {
            // Which project it was asked in, so that two projects' answers differ.
            let said = everything_said(req);
            let project = word_after(&said, "Primary working directory: ")
                .and_then(|dir| dir.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default();
            Reply::text(format!(
                "{MOCK} (asked in {project}/) An HTTP cache keeps responses close to the \
                 client, so a repeated request is answered without the origin server."
            ))
        }),
        Rule::prompt_contains("request coalescing").reply(Reply::text(format!(
            "{MOCK} Request coalescing lets identical requests that arrive together share one \
             call to the backend."
        ))),
        Rule::prompt_contains("cache-note.txt").steps([
            Reply::tool_use(
                "Write",
                json!({"file_path": path("cache-note.txt"), "content": "written by the cache example\n"}),
            ),
            Reply::text(format!("{MOCK} I wrote cache-note.txt.")),
        ]),
        // conversation_manager
        Rule::prompt_contains("staging server is called").reply_with(|req| {
            let name = word_after(&req.prompt().unwrap_or_default(), "staging server is called ");
            Reply::text(format!(
                "{MOCK} Got it: the staging server is {}.",
                name.as_deref().unwrap_or("unnamed")
            ))
        }),
        Rule::prompt_contains("name for the production server").reply(Reply::text(format!(
            "{MOCK} How about \"kestrel\" for production?"
        ))),
        Rule::prompt_contains("what is the staging server called").reply_with(|req| {
            Reply::text(
                match word_after(&earlier_user_text(req), "staging server is called ") {
                    Some(name) => format!("{MOCK} You told me in your first message: {name}."),
                    None => format!("{MOCK} You have not told me what it is called."),
                },
            )
        }),
        Rule::prompt_contains("the deploy key is").reply(Reply::text(format!(
            "{MOCK} Noted, I will remember the deploy key."
        ))),
        Rule::prompt_contains("Which deploy key").reply_with(|req| {
            Reply::text(match word_after(&earlier_user_text(req), "deploy key is ") {
                Some(key) => format!("{MOCK} The deploy key is {key}."),
                None => format!("{MOCK} You have not given me a deploy key."),
            })
        }),
        Rule::prompt_contains("favourite colour is").reply(Reply::text(format!(
            "{MOCK} Noted."
        ))),
        Rule::prompt_contains("my favourite colour?").reply_with(|req| {
            Reply::text(
                match word_after(&earlier_user_text(req), "favourite colour is ") {
                    Some(colour) => format!("{MOCK} Your favourite colour is {colour}."),
                    None => format!("{MOCK} You have not told me your favourite colour."),
                },
            )
        }),
    ]
}

/// The mock's "summary" of a file it read: its size and first line.
fn summarize_read(req: &RecordedRequest) -> String {
    let content = last_tool_result(req);
    // The Read tool numbers lines (`     1→text`); drop the numbers.
    let lines: Vec<&str> = content
        .lines()
        .map(|line| {
            line.trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start_matches(['→', '\t'])
        })
        .filter(|line| !line.trim().is_empty())
        .collect();
    format!(
        "{MOCK} The file has {} non-empty lines; the first one is \"{}\".",
        lines.len(),
        lines.first().unwrap_or(&"")
    )
}

fn last_tool_result(req: &RecordedRequest) -> String {
    req.tool_results()
        .pop()
        .map(|result| result.content)
        .unwrap_or_default()
}

fn number(text: &str) -> f64 {
    text.trim().parse().unwrap_or(0.0)
}

/// Every string of the request's system prompt and messages: what the model was told.
fn everything_said(req: &RecordedRequest) -> String {
    let mut out = Vec::new();
    for key in ["system", "messages"] {
        strings(&req.body()[key], &mut out);
    }
    out.join("\n")
}

/// The text of the user messages before this turn's prompt.
fn earlier_user_text(req: &RecordedRequest) -> String {
    let messages = req.messages();
    user_texts(&messages[..messages.len().saturating_sub(1)]).join("\n")
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| strings(item, out)),
        _ => {}
    }
}

fn user_texts(messages: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for message in messages.iter().filter(|m| m["role"] == "user") {
        strings(&message["content"], &mut out);
    }
    out
}

/// The word after `marker` in `text`, without trailing punctuation.
fn word_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let word = text[start..]
        .split_whitespace()
        .next()?
        .trim_end_matches(|c: char| !c.is_alphanumeric());
    (!word.is_empty()).then(|| word.to_owned())
}
