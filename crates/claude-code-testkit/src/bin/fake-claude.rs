//! `fake-claude`: stands in for the Claude Code CLI when a test needs a fault the real
//! CLI cannot produce (a crash, garbage lines, a 200 MB line, a stderr flood, a process
//! that ignores SIGTERM...).
//!
//! It answers `--version` like the CLI and ignores its other flags; the behaviour comes
//! from `FAKE_CLAUDE_MODE` (see `claude_code_testkit::FakeMode`). It speaks the
//! stream-json protocol: a `control_response` for each `control_request`, and for each
//! `user` line a `system`/`init` line, then whatever the mode does (`unknown-request`
//! sends a `control_request` of its own and reads the SDK's `control_response`). Lines have the
//! shapes of CLI 2.1.331.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufWriter, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use claude_code_testkit::fake::{
    self, DEFAULT_VERSION, DELAY_MS_ENV, FakeMode, HUGE_BYTES_ENV, MODE_ENV, PID_FILE_ENV,
    RECORD_ENV, REPLAY_FILE_ENV, RecordLine, STDERR_BYTES_ENV, UNKNOWN_REQUEST_ANSWER_PREFIX,
    UNKNOWN_REQUEST_ID, UNKNOWN_REQUEST_SUBTYPE, VERSION_ENV,
};
use serde_json::{Value, json};

const MODEL: &str = "claude-opus-5-5";
const DEFAULT_HUGE_BYTES: u64 = 200_000_000;
const DEFAULT_STDERR_BYTES: u64 = 64 * 1024 * 1024;
const DEFAULT_DELAY_MS: u64 = 200;
const SLOW_LINES: usize = 3;
/// The cost of one turn (10 input and 5 output tokens, as the pinned CLI prices them).
const TURN_COST_USD: f64 = 0.000_14;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let pid = std::process::id();
    record(&RecordLine::Start {
        pid,
        argv: argv.clone(),
        env: std::env::vars()
            .filter(|(key, _)| key.starts_with("CLAUDE") || key.starts_with("ANTHROPIC"))
            .collect::<BTreeMap<_, _>>(),
        cwd: std::env::current_dir().unwrap_or_default(),
    });
    if argv.iter().any(|arg| arg == "--version" || arg == "-v") {
        println!("{} (Claude Code)", version());
        return ExitCode::SUCCESS;
    }
    let mode = match std::env::var(MODE_ENV) {
        Ok(name) if !name.is_empty() => match name.parse::<FakeMode>() {
            Ok(mode) => mode,
            Err(error) => {
                eprintln!("fake-claude: {error}");
                return ExitCode::from(64);
            }
        },
        _ => FakeMode::Ok,
    };
    append_pid(pid);
    match mode {
        FakeMode::ExitEarly => {
            eprintln!("fake-claude: simulated start-up failure (exit-early mode)");
            return ExitCode::from(2);
        }
        FakeMode::StderrFlood => flood_stderr(env_u64(STDERR_BYTES_ENV, DEFAULT_STDERR_BYTES)),
        FakeMode::IgnoreSigterm => ignore_sigterm(),
        FakeMode::Grandchild => spawn_grandchild(),
        _ => {}
    }
    let mut session = Session::new(mode);
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        record(&RecordLine::Stdin {
            pid,
            line: line.clone(),
        });
        if let Err(error) = session.handle(&line) {
            // The reader went away (EPIPE): nothing left to talk to.
            eprintln!("fake-claude: cannot write stdout: {error}");
            return ExitCode::FAILURE;
        }
    }
    match mode {
        FakeMode::Hang | FakeMode::IgnoreSigterm | FakeMode::Grandchild => sleep_forever(),
        _ => ExitCode::SUCCESS,
    }
}

/// One fake CLI session: the state the stream-json lines need.
struct Session {
    mode: FakeMode,
    session_id: String,
    turns: u32,
    messages: u32,
    /// `unknown-request`: the turn waiting for the SDK's answer, by when it started.
    awaiting_answer: Option<Instant>,
    /// `replay`: the captured turns not played yet.
    replay: std::collections::VecDeque<Vec<String>>,
    out: BufWriter<io::StdoutLock<'static>>,
}

impl Session {
    fn new(mode: FakeMode) -> Self {
        Self {
            mode,
            session_id: uuid::Uuid::new_v4().to_string(),
            turns: 0,
            messages: 0,
            awaiting_answer: None,
            replay: if mode == FakeMode::Replay {
                load_replay()
            } else {
                Default::default()
            },
            out: BufWriter::with_capacity(1 << 16, io::stdout().lock()),
        }
    }

    fn handle(&mut self, line: &str) -> io::Result<()> {
        if self.mode == FakeMode::NoInitialize {
            return Ok(());
        }
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            eprintln!("fake-claude: ignoring a stdin line that is not JSON");
            return Ok(());
        };
        match value.get("type").and_then(Value::as_str) {
            Some("control_request") => self.control(&value),
            Some("control_response") => self.answer(&value),
            Some("user") => self.prompt(&value),
            _ => Ok(()),
        }
    }

    fn control(&mut self, request: &Value) -> io::Result<()> {
        let id = request.get("request_id").cloned().unwrap_or(Value::Null);
        let subtype = request.pointer("/request/subtype").and_then(Value::as_str);
        let response = if subtype == Some("initialize") {
            json!({
                "commands": [], "models": [], "agents": [], "output_style": "default",
                "available_output_styles": ["default"], "pid": std::process::id(),
                "claude_code_version": version(),
            })
        } else {
            json!({})
        };
        self.emit(&json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": id, "response": response},
        }))
    }

    /// A `control_response` from the SDK: in `unknown-request` mode, the answer to the
    /// request of unknown subtype ends the waiting turn.
    fn answer(&mut self, response: &Value) -> io::Result<()> {
        let id = response
            .pointer("/response/request_id")
            .and_then(Value::as_str);
        if id != Some(UNKNOWN_REQUEST_ID) {
            return Ok(());
        }
        let Some(started) = self.awaiting_answer.take() else {
            return Ok(());
        };
        let text = format!("{UNKNOWN_REQUEST_ANSWER_PREFIX}{response}");
        self.say(&text)?;
        self.emit(&self.result(&text, started))
    }

    fn prompt(&mut self, user: &Value) -> io::Result<()> {
        let started = Instant::now();
        self.turns += 1;
        let prompt = prompt_text(user);
        if self.mode == FakeMode::Replay {
            return match self.replay.pop_front() {
                Some(turn) => turn.iter().try_for_each(|line| self.raw(line)),
                None => {
                    let mut result = self.result("fake-claude: no captured turn left", started);
                    result["is_error"] = json!(true);
                    result["subtype"] = json!("error_during_execution");
                    self.emit(&result)
                }
            };
        }
        self.emit(&self.init())?;
        match self.mode {
            FakeMode::Ok | FakeMode::StderrFlood => {
                let text = format!("fake-claude reply to: {prompt}");
                self.say(&text)?;
                self.emit(&self.result(&text, started))
            }
            FakeMode::Crash => {
                self.say("fake-claude is about to crash")?;
                eprintln!("fake-claude: simulated crash (crash mode), exiting with code 3");
                std::process::exit(3);
            }
            FakeMode::Garbage => self.garbage(started),
            FakeMode::HugeLine => self.huge_line(started),
            FakeMode::Slow => {
                let delay = Duration::from_millis(env_u64(DELAY_MS_ENV, DEFAULT_DELAY_MS));
                let mut text = String::new();
                for tick in 1..=SLOW_LINES {
                    if tick > 1 {
                        std::thread::sleep(delay);
                    }
                    text = format!("slow tick {tick}");
                    self.say(&text)?;
                }
                self.emit(&self.result(&text, started))
            }
            FakeMode::UnknownRequest => {
                // The turn goes on in `answer`, when the SDK's control_response arrives.
                self.awaiting_answer = Some(started);
                self.emit(&json!({
                    "type": "control_request",
                    "request_id": UNKNOWN_REQUEST_ID,
                    "request": {"subtype": UNKNOWN_REQUEST_SUBTYPE},
                }))
            }
            FakeMode::Hang | FakeMode::IgnoreSigterm | FakeMode::Grandchild => Ok(()),
            // Exits before reading stdin; a future mode answers like `ok`.
            _ => {
                let text = format!("fake-claude reply to: {prompt}");
                self.say(&text)?;
                self.emit(&self.result(&text, started))
            }
        }
    }

    fn garbage(&mut self, started: Instant) -> io::Result<()> {
        let unknown = json!({"type": "fake_future_type", "session_id": self.session_id,
            "payload": {"note": "a message type from a newer CLI"}});
        let unknown_system = json!({"type": "system", "subtype": "fake_future_subtype",
            "session_id": self.session_id, "uuid": uuid::Uuid::new_v4().to_string()});
        self.raw("this line is not JSON at all")?;
        self.raw("")?;
        self.say("first valid line among garbage")?;
        self.raw("   ")?;
        self.emit(&unknown)?;
        self.raw("[1, 2, 3]")?;
        self.raw(r#"{"type":"assistant","message":{"id":"msg_truncated","content":[{"type":"te"#)?;
        self.emit(&unknown_system)?;
        let text = "last valid line among garbage";
        self.say(text)?;
        self.raw("\u{1b}[31mansi noise\u{1b}[0m")?;
        self.emit(&self.result(text, started))
    }

    fn huge_line(&mut self, started: Instant) -> io::Result<()> {
        const MARKER: &str = "@@FAKE_CLAUDE_HUGE_TEXT@@";
        let size = env_u64(HUGE_BYTES_ENV, DEFAULT_HUGE_BYTES);
        let line = self.assistant(MARKER).to_string();
        let (prefix, suffix) = line.split_once(MARKER).unwrap_or((&line, ""));
        let chunk: Vec<u8> = (b'a'..=b'z').cycle().take(1 << 16).collect();
        self.out.write_all(prefix.as_bytes())?;
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            self.out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        self.out.write_all(suffix.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        self.emit(&self.result(
            &format!("sent one assistant line with {size} bytes of text"),
            started,
        ))
    }

    fn init(&self) -> Value {
        json!({
            "type": "system", "subtype": "init",
            "cwd": std::env::current_dir().unwrap_or_default(),
            "session_id": self.session_id,
            "tools": ["Task", "Bash", "Edit", "Read", "Write"],
            "mcp_servers": [], "model": MODEL, "permissionMode": "default",
            "slash_commands": ["clear", "compact"], "apiKeySource": "ANTHROPIC_API_KEY",
            "claude_code_version": version(), "output_style": "default",
            "agents": [], "skills": [], "plugins": [],
            "analytics_disabled": true, "uuid": uuid::Uuid::new_v4().to_string(),
            "fast_mode_state": "off",
        })
    }

    fn assistant(&mut self, text: &str) -> Value {
        self.messages += 1;
        json!({
            "type": "assistant",
            "message": {
                "id": format!("msg_fake_{}", self.messages), "type": "message",
                "role": "assistant", "model": MODEL,
                "content": [{"type": "text", "text": text}],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
                "context_management": null,
            },
            "parent_tool_use_id": null, "session_id": self.session_id,
            "uuid": uuid::Uuid::new_v4().to_string(), "timestamp": timestamp(),
        })
    }

    fn result(&self, text: &str, started: Instant) -> Value {
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let total_cost = f64::from(self.turns) * TURN_COST_USD;
        json!({
            "type": "result", "subtype": "success", "is_error": false,
            "api_error_status": null, "duration_ms": duration_ms,
            "duration_api_ms": duration_ms, "num_turns": 1, "result": text,
            "stop_reason": "end_turn", "session_id": self.session_id,
            "total_cost_usd": total_cost,
            "usage": {
                "input_tokens": 10, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 5,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            },
            "modelUsage": {MODEL: {
                "inputTokens": 10 * self.turns, "outputTokens": 5 * self.turns,
                "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                "webSearchRequests": 0, "costUSD": total_cost,
                "contextWindow": 200_000, "maxOutputTokens": 32_000,
            }},
            "permission_denials": [], "terminal_reason": "completed",
            "fast_mode_state": "off", "uuid": uuid::Uuid::new_v4().to_string(),
        })
    }

    fn say(&mut self, text: &str) -> io::Result<()> {
        let line = self.assistant(text);
        self.emit(&line)
    }

    fn emit(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    fn raw(&mut self, line: &str) -> io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// The turns of the capture named by `FAKE_CLAUDE_REPLAY_FILE` (none when unset or
/// unreadable, with a word on stderr).
fn load_replay() -> std::collections::VecDeque<Vec<String>> {
    let Some(path) = std::env::var_os(REPLAY_FILE_ENV) else {
        eprintln!("fake-claude: replay mode without {REPLAY_FILE_ENV}");
        return Default::default();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => fake::captured_turns(&text).into(),
        Err(error) => {
            eprintln!(
                "fake-claude: cannot read {}: {error}",
                path.to_string_lossy()
            );
            Default::default()
        }
    }
}

/// The text of a `user` line: its string content, or its text blocks joined.
fn prompt_text(user: &Value) -> String {
    match user.pointer("/message/content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn version() -> String {
    std::env::var(VERSION_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_VERSION.to_owned())
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|value| value.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Appends one line to the `FAKE_CLAUDE_RECORD` file, in one write.
fn record(line: &RecordLine) {
    let Some(path) = std::env::var_os(RECORD_ENV) else {
        return;
    };
    let Ok(mut text) = serde_json::to_string(line) else {
        return;
    };
    text.push('\n');
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()));
    if let Err(error) = written {
        eprintln!("fake-claude: cannot write {}: {error}", fake::RECORD_ENV);
    }
}

fn append_pid(pid: u32) {
    let Some(path) = std::env::var_os(PID_FILE_ENV) else {
        return;
    };
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{pid}\n").as_bytes()));
    if let Err(error) = written {
        eprintln!("fake-claude: cannot write {PID_FILE_ENV}: {error}");
    }
}

fn flood_stderr(bytes: u64) {
    let line = b"fake-claude stderr flood: a parent that does not drain stderr blocks here\n";
    let chunk: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 1024)
        .collect();
    let mut stderr = io::stderr().lock();
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        if stderr.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
}

/// Replaces SIGTERM's default action with a handler that only says so.
fn ignore_sigterm() {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fake-claude: cannot build a runtime for the signal handler");
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut terminate = signal(SignalKind::terminate())
                .expect("fake-claude: cannot install a SIGTERM handler");
            let _ = ready.send(());
            while terminate.recv().await.is_some() {
                eprintln!("fake-claude: ignoring SIGTERM (ignore-sigterm mode)");
            }
        });
    });
    // Only go on once SIGTERM is really ignored.
    let _ = installed.recv();
}

fn spawn_grandchild() {
    match Command::new("sleep")
        .arg("3600")
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            eprintln!("fake-claude: spawned grandchild {}", child.id());
            append_pid(child.id());
        }
        Err(error) => eprintln!("fake-claude: cannot spawn the grandchild: {error}"),
    }
}

fn sleep_forever() -> ExitCode {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Now as RFC 3339 UTC with milliseconds, like the CLI's `timestamp` fields.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        now.subsec_millis()
    )
}
