//! Each permission mode's guarantee, against the real CLI: a model that tries to
//! Read, Write, Edit and run Bash, and the files that result.

mod common;

use std::collections::BTreeMap;

use claude_code_sdk::{ClaudeCodeOptionsBuilder, Error, Message, PermissionMode, query};
use claude_code_testkit::{Reply, Rule};
use common::Harness;
use serde_json::json;

const SECRET: &str = "the secret is 42";

/// What happened to each tool use of the scripted model.
struct Outcome {
    /// tool name -> (is_error, text of the tool result)
    results: BTreeMap<String, (bool, String)>,
    /// Tools the CLI offered the model.
    offered: Vec<String>,
    messages: Vec<Message>,
    error: Option<Error>,
    h: Harness,
}

impl Outcome {
    fn ran(&self, tool: &str) -> bool {
        matches!(self.results.get(tool), Some((false, _)))
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.h.file(name)).ok()
    }

    fn denied_tools(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .error
            .iter()
            .flat_map(|e| e.permission_denials())
            .map(|d| d.tool_name.clone())
            .collect();
        names.sort();
        names
    }
}

/// A model that tries Read, Write, Edit and Bash, one after the other.
async fn try_everything(
    configure: impl FnOnce(ClaudeCodeOptionsBuilder) -> ClaudeCodeOptionsBuilder,
) -> Outcome {
    let h = Harness::new().await;
    std::fs::write(h.file("secret.txt"), SECRET).unwrap();
    let cwd = h.sandbox.cwd().to_owned();
    let path = |name: &str| cwd.join(name).display().to_string();
    h.mock.on(Rule::prompt_contains("try everything").steps([
        Reply::tool_use("Read", json!({"file_path": path("secret.txt")})),
        Reply::tool_use(
            "Write",
            json!({"file_path": path("written.txt"), "content": "written by Write"}),
        ),
        Reply::tool_use(
            "Edit",
            json!({"file_path": path("secret.txt"), "old_string": "42", "new_string": "43"}),
        ),
        // Through `sh -c`: the CLI approves simple file-writing commands
        // (`echo > f`, `touch`) under acceptEdits as edits; this is a command.
        Reply::tool_use(
            "Bash",
            json!({"command": "sh -c 'echo ran > bash.txt'", "description": "run a command"}),
        ),
        Reply::text("All attempts made."),
    ]));
    let options = configure(h.options().max_turns(10)).build().unwrap();
    let (messages, error) = query("try everything", options).collect_messages().await;
    let requests = h.mock.requests();
    let offered = requests
        .first()
        .map(|r| r.tool_names().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let results = requests
        .last()
        .map(|r| r.tool_results())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r.tool_name?, (r.is_error, r.content))))
        .collect();
    Outcome {
        results,
        offered,
        messages,
        error,
        h,
    }
}

#[tokio::test]
async fn read_only_exposes_only_read_tools_and_changes_nothing() {
    let o = try_everything(|b| b.permission_mode(PermissionMode::ReadOnly)).await;
    // `DeferredToolPlaceholder` is the CLI's internal stand-in for tools it loads
    // later; it is not a tool the model can use.
    let mut offered: Vec<&str> = o
        .offered
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "DeferredToolPlaceholder")
        .collect();
    offered.sort();
    assert_eq!(offered, ["Glob", "Grep", "Read"]);
    assert!(o.ran("Read"));
    assert!(o.results["Read"].1.contains(SECRET));
    for tool in ["Write", "Edit", "Bash"] {
        assert!(
            !o.ran(tool),
            "{tool} ran under readOnly: {:?}",
            o.results.get(tool)
        );
    }
    assert_eq!(o.file("written.txt"), None);
    assert_eq!(o.file("bash.txt"), None);
    assert_eq!(o.file("secret.txt").as_deref(), Some(SECRET));
    assert!(o.messages.iter().any(Message::is_result));
}

#[tokio::test]
async fn accept_edits_writes_files_but_denies_commands() {
    let o = try_everything(|b| b.permission_mode(PermissionMode::AcceptEdits)).await;
    assert!(o.ran("Read"));
    assert!(o.ran("Write"));
    assert_eq!(o.file("written.txt").as_deref(), Some("written by Write"));
    assert_eq!(o.file("secret.txt").as_deref(), Some("the secret is 43"));
    assert!(!o.ran("Bash"));
    assert_eq!(o.file("bash.txt"), None);
    let err = o.error.as_ref().expect("the denial is reported");
    assert!(err.is_permission(), "{err:?}");
    assert_eq!(o.denied_tools(), ["Bash"]);
}

#[tokio::test]
async fn ask_for_edits_without_a_callback_reads_but_denies_every_change() {
    let o = try_everything(|b| b.permission_mode(PermissionMode::AskForEdits)).await;
    assert!(o.ran("Read"));
    assert!(o.results["Read"].1.contains(SECRET));
    for tool in ["Write", "Edit", "Bash"] {
        assert!(
            !o.ran(tool),
            "{tool} ran under askForEdits: {:?}",
            o.results.get(tool)
        );
    }
    assert_eq!(o.file("written.txt"), None);
    assert_eq!(o.file("bash.txt"), None);
    assert_eq!(o.file("secret.txt").as_deref(), Some(SECRET));
    assert!(
        o.error.as_ref().is_some_and(Error::is_permission),
        "{:?}",
        o.error
    );
    assert_eq!(o.denied_tools(), ["Bash", "Edit", "Write"]);
}

#[tokio::test]
async fn strict_without_a_callback_denies_even_reads() {
    let o = try_everything(|b| b.permission_mode(PermissionMode::Strict)).await;
    for tool in ["Read", "Write", "Edit", "Bash"] {
        assert!(
            !o.ran(tool),
            "{tool} ran under strict: {:?}",
            o.results.get(tool)
        );
    }
    assert!(
        !o.results["Read"].1.contains(SECRET),
        "the model saw the file"
    );
    assert_eq!(o.file("written.txt"), None);
    assert_eq!(o.file("bash.txt"), None);
    assert!(
        o.error.as_ref().is_some_and(Error::is_permission),
        "{:?}",
        o.error
    );
}

#[tokio::test]
async fn strict_runs_what_allowed_tools_names() {
    let o = try_everything(|b| {
        b.permission_mode(PermissionMode::Strict)
            .allowed_tools(["Read"])
    })
    .await;
    assert!(o.ran("Read"));
    assert!(o.results["Read"].1.contains(SECRET));
    for tool in ["Write", "Edit", "Bash"] {
        assert!(
            !o.ran(tool),
            "{tool} ran under strict: {:?}",
            o.results.get(tool)
        );
    }
}

/// A model that reads a file outside the working directory.
async fn read_outside(mode: PermissionMode) -> (bool, Harness) {
    let h = Harness::new().await;
    let outside = h.sandbox.root().join("outside-secret.txt");
    std::fs::write(&outside, "OUTSIDE-SECRET").unwrap();
    h.mock.on(Rule::prompt_contains("peek").steps([
        Reply::tool_use("Read", json!({"file_path": outside.display().to_string()})),
        Reply::text("peeked"),
    ]));
    let options = h.options().permission_mode(mode).build().unwrap();
    let _ = query("peek outside", options).collect_messages().await;
    let saw = h.mock.requests().iter().any(|r| {
        r.tool_results()
            .iter()
            .any(|t| t.content.contains("OUTSIDE-SECRET"))
    });
    (saw, h)
}

#[tokio::test]
async fn read_only_does_not_read_outside_the_project() {
    let (saw, _h) = read_outside(PermissionMode::ReadOnly).await;
    assert!(!saw, "readOnly read a file outside its working directory");
}

#[tokio::test]
async fn ask_for_edits_without_a_callback_does_not_read_outside_the_project() {
    let (saw, _h) = read_outside(PermissionMode::AskForEdits).await;
    assert!(
        !saw,
        "askForEdits read a file outside its working directory"
    );
}
