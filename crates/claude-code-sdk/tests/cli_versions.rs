//! What differs between the CLI versions the SDK supports, checked on the CLI under
//! test. `make test` runs this file on the pinned CLI and again on the oldest supported
//! one (2.1.197): each test checks what its CLI does (the newer feature, or the clear
//! `UnsupportedCli` error in its place), or skips, saying why, when it needs a newer CLI.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use claude_code_sdk::{
    ClaudeClient, ErrorKind, HookEvent, HookInput, HookMatcher, HookOutput, Message,
    PermissionMode, query,
};
use claude_code_testkit::{Reply, Rule, Sandbox, cli_is_at_least, cli_version, require_cli};
use common::{Harness, result_of};
use futures::StreamExt;
use serde_json::json;

/// Runs one turn on `client`: its messages, and the error that ended it, if any.
async fn turn(
    client: &ClaudeClient,
    prompt: &str,
) -> (Vec<Message>, Option<claude_code_sdk::Error>) {
    client.query(prompt).await.unwrap();
    let mut messages = Vec::new();
    let mut error = None;
    let mut stream = std::pin::pin!(client.receive_response());
    while let Some(item) = stream.next().await {
        match item {
            Ok(m) => messages.push(m),
            Err(e) => error = Some(e),
        }
    }
    (messages, error)
}

#[tokio::test]
async fn a_cli_older_than_the_oldest_supported_is_refused() {
    // fake-claude, copied to a path of its own (versions are cached by path), says it
    // is 2.1.196.
    let sandbox = Sandbox::without_mock();
    let old = sandbox.root().join("claude-2.1.196");
    std::fs::copy(claude_code_testkit::fake_claude_path(), &old).unwrap();
    let options = common::fake_options(&sandbox, claude_code_testkit::FakeMode::Ok)
        .cli_path(&old)
        .env(claude_code_testkit::fake::VERSION_ENV, "2.1.196")
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_unsupported_cli(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("2.1.196") && text.contains("2.1.197"),
        "{text}"
    );
    assert_eq!(claude_code_sdk::cli::MIN_CLI_VERSION.to_string(), "2.1.197");
    assert!(
        common::pid_file(&sandbox).metadata().is_err(),
        "no CLI was started for a run"
    );
}

#[tokio::test]
async fn a_flag_newer_than_the_cli_is_refused_before_the_cli_starts() {
    let h = Harness::new().await;
    let options = h
        .options()
        .extra_arg("forward-subagent-text", None)
        .build()
        .unwrap();
    let outcome = query("hello", options).collect_all().await;
    if cli_is_at_least("2.1.331") {
        let messages = outcome.unwrap();
        assert!(!result_of(&messages).is_error);
        return;
    }
    let err = outcome.unwrap_err();
    assert!(err.is_unsupported_cli(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("--forward-subagent-text") && text.contains("2.1.331"),
        "names the flag and the version needed: {text}"
    );
    assert!(text.contains(&cli_version().to_string()), "{text}");
    assert!(!err.is_transient());
    assert!(h.mock.all_requests().is_empty(), "the CLI never started");
    assert_eq!(
        claude_code_testkit::processes_in(h.sandbox.cwd()),
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn a_flag_the_cli_does_not_know_is_unsupported_cli_not_a_connection_error() {
    let h = Harness::new().await;
    let options = h
        .options()
        .extra_arg("no-such-flag-for-tests", Some("1"))
        .build()
        .unwrap();
    let err = query("hello", options).collect_all().await.unwrap_err();
    assert!(err.is_unsupported_cli(), "{err:?}");
    assert!(
        err.to_string().contains("--no-such-flag-for-tests"),
        "{err}"
    );
    assert!(!err.is_transient(), "retrying cannot help");
    assert_eq!(err.exit_code(), Some(1));
}

#[tokio::test]
async fn a_hook_for_an_event_the_cli_never_fires_is_refused() {
    let h = Harness::new().await;
    let with_hook = |event: HookEvent| {
        h.options()
            .hook(event, HookMatcher::all(), |_, _, _| async {
                Ok(HookOutput::deny("no"))
            })
            .build()
            .unwrap()
    };
    for (event, since) in [
        (HookEvent::PreSkillShellCommand, "2.1.332"),
        (HookEvent::Other("PreModelSwitch".into()), "2.1.331"),
    ] {
        let name = event.as_str().to_owned();
        let connected = ClaudeClient::connect(with_hook(event)).await;
        if cli_is_at_least(since) {
            connected.unwrap().close().await.unwrap();
            continue;
        }
        let err = connected.unwrap_err();
        assert!(err.is_unsupported_cli(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&name) && text.contains(since), "{text}");
    }
}

#[tokio::test]
async fn a_control_request_the_cli_lacks_is_unsupported_cli() {
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    let models = client
        .control_request(json!({"subtype": "list_models"}))
        .await;
    if cli_is_at_least("2.1.331") {
        let models = models.unwrap();
        assert!(models["models"].is_array(), "{models}");
    } else {
        let err = models.unwrap_err();
        assert!(err.is_unsupported_cli(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("\"list_models\"") && text.contains("2.1.331"),
            "{text}"
        );
    }
    let err = client
        .control_request(json!({"subtype": "no_such_subtype"}))
        .await
        .unwrap_err();
    assert!(err.is_unsupported_cli(), "{err:?}");
    assert!(err.to_string().contains("\"no_such_subtype\""), "{err}");
    // The client goes on.
    let (messages, error) = turn(&client, "still there?").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        result_of(&messages).result.as_deref(),
        Some("Mock reply to: still there?")
    );
}

/// The CLI answers `set_permission_mode` with the mode in effect: `auto` asked while a
/// model switch is pending waits, a `plan` request overtakes it, and the `auto` request
/// is answered with `plan` (measured on 2.1.331 and 2.1.332).
#[tokio::test]
async fn set_permission_mode_returns_the_mode_the_cli_kept() {
    require_cli!(
        "2.1.331",
        "set_permission_mode answers that name the mode in effect"
    );
    let h = Harness::new().await;
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    let (model, auto, plan) = tokio::join!(
        client.set_model(Some("claude-haiku-4-5")),
        client.set_permission_mode(PermissionMode::Auto),
        client.set_permission_mode(PermissionMode::Plan),
    );
    model.unwrap();
    assert_eq!(
        auto.unwrap(),
        PermissionMode::Plan,
        "auto was overtaken by plan"
    );
    assert_eq!(plan.unwrap(), PermissionMode::Plan);
    assert_eq!(client.permission_mode(), Some(PermissionMode::Plan));
    // The next turn runs in plan mode.
    client.query("which mode?").await.unwrap();
    let messages: Vec<Message> = client
        .receive_response()
        .map(Result::unwrap)
        .collect()
        .await;
    let init = messages
        .iter()
        .find_map(|m| match m {
            Message::System(s) if s.subtype == "init" => Some(s),
            _ => None,
        })
        .expect("an init line");
    assert_eq!(init.data["permissionMode"], "plan", "{:?}", init.data);
}

/// A mode the project's settings disable is refused (on every supported CLI), and the
/// client keeps the mode it had.
#[tokio::test]
async fn a_mode_the_project_disables_is_refused_and_the_mode_kept() {
    let h = Harness::new().await;
    let settings = h.sandbox.cwd().join(".claude");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("settings.json"),
        json!({"permissions": {"disableBypassPermissionsMode": "disable"}}).to_string(),
    )
    .unwrap();
    let options = h
        .options()
        .permission_mode(PermissionMode::AcceptEdits)
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    let err = client
        .set_permission_mode(PermissionMode::BypassPermissions)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ControlRequest, "{err:?}");
    assert!(err.to_string().contains("disabled by settings"), "{err}");
    assert_eq!(client.permission_mode(), Some(PermissionMode::AcceptEdits));
    // The CLI kept it too: a file write goes through without asking.
    let target = h.file("kept.txt").display().to_string();
    h.mock.on(Rule::prompt_contains("write it").steps([
        Reply::tool_use("Write", json!({"file_path": target, "content": "kept"})),
        Reply::text("written"),
    ]));
    let (_, error) = turn(&client, "write it").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(std::fs::read_to_string(h.file("kept.txt")).unwrap(), "kept");
}

/// A project skill whose text runs a shell command.
fn write_greet_skill(h: &Harness) {
    let skill = h.sandbox.cwd().join(".claude/skills/greet");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: greet\ndescription: Writes a marker file\n---\n\
         The marker says: !`echo ran >> marker.txt && echo MARKER_WRITTEN`\n",
    )
    .unwrap();
}

const SKILL_COMMAND: &str = "echo ran >> marker.txt && echo MARKER_WRITTEN";

#[tokio::test]
async fn pre_skill_shell_command_hooks_decide_whether_a_skill_command_runs() {
    require_cli!("2.1.332", "PreSkillShellCommand hooks");
    let h = Harness::new().await;
    write_greet_skill(&h);
    h.mock.on(Rule::prompt_contains("USE_SKILL").steps([
        Reply::tool_use("Skill", json!({"skill": "greet"})),
        Reply::text("greeted"),
    ]));
    let seen: Arc<Mutex<Vec<HookInput>>> = Arc::default();
    let record = seen.clone();
    let options = h
        .options()
        .permission_mode(PermissionMode::AcceptEdits)
        .hook(
            HookEvent::PreSkillShellCommand,
            HookMatcher::all(),
            move |input, _, _| {
                let record = record.clone();
                async move {
                    // Typed skills may not run shell commands; the model's may.
                    let answer = if input.invoked_by() == Some("user") {
                        HookOutput::deny("no shell for typed skills")
                    } else {
                        HookOutput::allow()
                    };
                    record.lock().unwrap().push(input);
                    Ok(answer)
                }
            },
        )
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();

    // The user types /greet: denied, the command does not run.
    let (messages, error) = turn(&client, "/greet").await;
    assert!(error.is_none(), "{error:?}");
    assert!(!h.file("marker.txt").exists(), "the denied command ran");
    let blocked = "[not run: blocked by hook: no shell for typed skills]";
    assert!(
        h.mock.requests().iter().any(|r| r.mentions(blocked)),
        "the model sees why the skill's output is missing"
    );
    assert!(
        messages.iter().any(|m| matches!(m, Message::System(s)
            if s.subtype == "informational" && s.data["tag"] == "skill_shell_hook")),
        "the CLI reports the blocked command"
    );

    // The model invokes the skill: allowed, the command runs.
    let (_, error) = turn(&client, "USE_SKILL now").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        std::fs::read_to_string(h.file("marker.txt")).unwrap(),
        "ran\n"
    );

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (input, invoked_by) in seen.iter().zip(["user", "claude"]) {
        assert_eq!(input.event, HookEvent::PreSkillShellCommand);
        assert_eq!(input.tool_name(), Some("Bash"));
        assert_eq!(input.command(), Some(SKILL_COMMAND));
        assert_eq!(input.command_name(), Some("greet"));
        assert_eq!(input.command_source(), Some("projectSettings"));
        assert_eq!(input.invoked_by(), Some(invoked_by));
    }
}

/// What the other answers do (2.1.332): `ask` and a changed command block the command
/// (a changed command is never run), a hook that fails counts as no answer and lets it
/// run.
#[tokio::test]
async fn pre_skill_shell_command_ask_and_changed_commands_block_and_a_failing_hook_does_not() {
    require_cli!("2.1.332", "PreSkillShellCommand hooks");
    let h = Harness::new().await;
    write_greet_skill(&h);
    const ASK: u8 = 0;
    const CHANGE: u8 = 1;
    const FAIL: u8 = 2;
    let policy = Arc::new(AtomicU8::new(ASK));
    let current = policy.clone();
    let options = h
        .options()
        .permission_mode(PermissionMode::AcceptEdits)
        .hook(
            HookEvent::PreSkillShellCommand,
            HookMatcher::all(),
            move |_, _, _| {
                let policy = current.load(Ordering::SeqCst);
                async move {
                    match policy {
                        ASK => Ok(HookOutput::ask()),
                        CHANGE => Ok(HookOutput::allow()
                            .with_updated_input(json!({"command": "echo changed >> marker.txt"}))),
                        _ => Err("the hook failed".into()),
                    }
                }
            },
        )
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    for (answer, why) in [
        (
            ASK,
            "the hook asked for approval, which a skill can't wait for",
        ),
        (
            CHANGE,
            "the hook changed the command, which isn't supported here",
        ),
    ] {
        policy.store(answer, Ordering::SeqCst);
        let (_, error) = turn(&client, "/greet").await;
        assert!(error.is_none(), "{error:?}");
        assert!(!h.file("marker.txt").exists(), "neither command ran");
        assert!(
            h.mock.requests().iter().any(|r| r.mentions(why)),
            "the model sees: {why}"
        );
    }
    policy.store(FAIL, Ordering::SeqCst);
    let (_, error) = turn(&client, "/greet").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        std::fs::read_to_string(h.file("marker.txt")).unwrap(),
        "ran\n",
        "a failing hook does not block the command"
    );
}
