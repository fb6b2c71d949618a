//! Session stores with the real CLI: `--session-mirror` frames into a store through a
//! `MirrorSink`, failures reported and repaired, and a session materialized from the
//! store into a fresh config directory and resumed there.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use claude_code_sdk::store::{
    InMemorySessionStore, MaterializeOptions, MirrorConfig, MirrorFailure, MirrorFrame, MirrorSink,
    PostgresSessionStore, SessionKey, SessionStore, SqliteSessionStore, import_session,
    import_transcript_file, materialize_session, projects_dir,
};
use claude_code_sdk::{Message, query};
use claude_code_testkit::pg::TestDatabase;
use claude_code_testkit::{RecordedRequest, Reply, Rule};
use common::Harness;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// Runs one prompt with `--session-mirror`, feeding every `transcript_mirror` line to
/// `sink` and flushing at the result, as the SDK's run loop is to do. Returns the
/// messages (mirror lines excluded) and the failures the flushes reported.
async fn mirrored_run(
    options: claude_code_sdk::ClaudeCodeOptions,
    prompt: &str,
    sink: &MirrorSink,
) -> (Vec<Message>, Vec<MirrorFailure>) {
    let mut run = query(prompt.to_owned(), options);
    let mut messages = Vec::new();
    let mut failures = Vec::new();
    while let Some(message) = run.next().await {
        let message = message.expect("the run succeeds");
        if message.kind() == "transcript_mirror" {
            sink.push_line(message.raw())
                .expect("a well-formed mirror line");
            continue;
        }
        if message.is_result() {
            failures.extend(sink.flush().await);
        }
        messages.push(message);
    }
    (messages, failures)
}

fn session_id(messages: &[Message]) -> String {
    common::result_of(messages).session_id.clone()
}

/// The one transcript file of a session in a config directory.
fn transcript_file(config_dir: &Path, session: &str) -> PathBuf {
    let projects = projects_dir(config_dir);
    std::fs::read_dir(&projects)
        .unwrap()
        .map(|entry| entry.unwrap().path().join(format!("{session}.jsonl")))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("no transcript of {session} below {}", projects.display()))
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn uuids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e.get("uuid").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

async fn load(store: &dyn SessionStore, key: &SessionKey) -> Vec<Value> {
    store.load(key).try_collect().await.unwrap()
}

/// Whether the conversation sent to the model has a `role` message with `needle`.
fn said(request: &RecordedRequest, role: &str, needle: &str) -> bool {
    request
        .messages()
        .iter()
        .any(|message| message["role"] == role && message["content"].to_string().contains(needle))
}

/// Every mirrored entry is in the CLI's file, in the file's order, and every
/// conversation entry of the file was mirrored.
fn assert_mirrors_file(stored: &[Value], file: &[Value]) {
    let file_uuids = uuids(file);
    let stored_uuids = uuids(stored);
    let mut positions = stored_uuids.iter().map(|uuid| {
        file_uuids
            .iter()
            .position(|f| f == uuid)
            .unwrap_or_else(|| panic!("mirrored entry {uuid} is not in the transcript file"))
    });
    let mut last = positions.next().unwrap_or(0);
    for position in positions {
        assert!(position > last, "mirrored entries out of the file's order");
        last = position;
    }
    for entry in file {
        if matches!(entry["type"].as_str(), Some("user" | "assistant")) {
            assert!(
                stored.contains(entry),
                "a conversation entry was not mirrored: {}",
                entry["uuid"]
            );
        }
    }
}

#[tokio::test]
async fn a_captured_mirror_session_lands_in_the_store() {
    // Captured from CLI 2.1.331 against the mock: two turns with --session-mirror.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cli-2.1.331");
    let text = std::fs::read_to_string(dir.join("session_mirror.jsonl")).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let config_dir = PathBuf::from(header["config_dir"].as_str().unwrap());
    let store = Arc::new(InMemorySessionStore::new());
    let sink = MirrorSink::new(
        store.clone(),
        projects_dir(&config_dir),
        MirrorConfig::default(),
    )
    .unwrap();
    let mut session = None;
    let mut frames = 0;
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap();
        match value["type"].as_str() {
            Some("transcript_mirror") => {
                sink.push_line(line).unwrap();
                frames += 1;
            }
            Some("result") => {
                session = value["session_id"].as_str().map(str::to_owned);
                assert!(sink.flush().await.is_empty());
            }
            _ => {}
        }
    }
    assert_eq!(frames, 5);
    assert!(sink.close().await.is_empty());
    let key = SessionKey::new("-tmp-wtstore-exp-fx-cwd", session.unwrap()).unwrap();
    let stored = load(store.as_ref(), &key).await;
    let file = read_jsonl(&dir.join("session_mirror.transcript.jsonl"));
    assert_mirrors_file(&stored, &file);
    let prompts: Vec<&Value> = stored
        .iter()
        .filter(|e| e["type"] == "user")
        .map(|e| &e["message"]["content"])
        .collect();
    assert_eq!(prompts, [&json!("hello fixture"), &json!("second turn")]);
    assert_eq!(
        store
            .list_sessions("-tmp-wtstore-exp-fx-cwd")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_live_run_with_a_subagent_is_mirrored_to_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = Arc::new(PostgresSessionStore::connect(db.url()).await.unwrap());
    let h = Harness::new().await;
    h.mock.on(Rule::prompt_contains("USE_AGENT").steps([
        Reply::text("Delegating.").then_tool_use(
            "Agent",
            json!({"description": "look around", "prompt": "SUBAGENT_TASK list the files",
                   "subagent_type": "general-purpose"}),
        ),
        Reply::text("The agent is done."),
    ]));
    let sink = MirrorSink::new(
        store.clone(),
        projects_dir(h.sandbox.config_dir()),
        MirrorConfig::default(),
    )
    .unwrap();
    let options = h
        .options()
        .extra_arg("session-mirror", None)
        .build()
        .unwrap();
    let (messages, failures) = mirrored_run(options, "please USE_AGENT now", &sink).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(sink.close().await.is_empty());
    assert_eq!(
        common::result_of(&messages).result.as_deref(),
        Some("The agent is done.")
    );

    let session = session_id(&messages);
    let key = SessionKey::for_directory(h.sandbox.cwd(), &session).unwrap();
    let file = transcript_file(h.sandbox.config_dir(), &session);
    assert_eq!(
        file.parent().unwrap().file_name().unwrap(),
        key.project_key()
    );
    assert_mirrors_file(&load(store.as_ref(), &key).await, &read_jsonl(&file));

    // The subagent's transcript has a key of its own, with the CLI's layout.
    let subkeys = store.list_subkeys(&key).await.unwrap();
    assert_eq!(subkeys.len(), 1, "{subkeys:?}");
    assert!(subkeys[0].starts_with("subagents/agent-"), "{subkeys:?}");
    let sub_key = key.with_subpath(subkeys[0].clone()).unwrap();
    let sub_file = file
        .with_extension("")
        .join(format!("{}.jsonl", subkeys[0]));
    let stored = load(store.as_ref(), &sub_key).await;
    let transcript: Vec<Value> = stored
        .iter()
        .filter(|e| e["type"] != "agent_metadata")
        .cloned()
        .collect();
    assert_mirrors_file(&transcript, &read_jsonl(&sub_file));
    assert!(
        transcript
            .iter()
            .any(|e| e["message"]["content"] == "SUBAGENT_TASK list the files")
    );
    let metadata = stored
        .iter()
        .rfind(|e| e["type"] == "agent_metadata")
        .unwrap();
    let sidecar: Value = serde_json::from_str(
        &std::fs::read_to_string(sub_file.with_extension("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["toolUseId"], sidecar["toolUseId"]);
    assert_eq!(metadata["description"], "look around");

    // Materialized elsewhere, the subagent comes back with its sidecar.
    let target = tempfile::tempdir().unwrap();
    let materialized = materialize_session(
        store.as_ref(),
        &key,
        MaterializeOptions::new().target(target.path()),
    )
    .await
    .unwrap();
    assert_eq!(materialized.subagent_count(), 1);
    let restored = sub_key.transcript_path(&projects_dir(target.path()), key.project_key());
    assert_eq!(read_jsonl(&restored), transcript);
    let restored_meta: Value = serde_json::from_str(
        &std::fs::read_to_string(restored.with_extension("meta.json")).unwrap(),
    )
    .unwrap();
    let mut expected = metadata.clone();
    expected.as_object_mut().unwrap().remove("type");
    assert_eq!(restored_meta, expected);
}

/// Turn 1 in config dir A mirrored into `store`; A's user-level command; then A is
/// gone, the session is materialized into a fresh B and resumed there.
async fn resume_on_a_fresh_host(store: Arc<dyn SessionStore>) {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("REMEMBER_ME_7731").reply(Reply::text("ANSWER_ONE_4410 noted.")));
    let commands = h.sandbox.config_dir().join("commands");
    std::fs::create_dir_all(&commands).unwrap();
    std::fs::write(
        commands.join("greet.md"),
        "---\ndescription: Greets\n---\nGREET_BODY_MARKER please greet the user warmly.\n",
    )
    .unwrap();
    std::fs::write(
        h.sandbox.config_dir().join("settings.json"),
        r#"{"env": {"STORE_TEST_SETTING": "kept"}}"#,
    )
    .unwrap();

    let sink = MirrorSink::new(
        store.clone(),
        projects_dir(h.sandbox.config_dir()),
        MirrorConfig::default(),
    )
    .unwrap();
    let options = h
        .options()
        .extra_arg("session-mirror", None)
        .build()
        .unwrap();
    let (first, failures) =
        mirrored_run(options, "Please note REMEMBER_ME_7731 for later.", &sink).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(sink.close().await.is_empty());
    let session = session_id(&first);

    // A fresh host: nothing of A is left but what the caller kept aside.
    let host = tempfile::tempdir().unwrap();
    let source = host.path().join("template");
    std::fs::rename(h.sandbox.config_dir(), &source).unwrap();
    let key = SessionKey::for_directory(h.sandbox.cwd(), &session).unwrap();
    let b = host.path().join("b");
    let materialized = materialize_session(
        store.as_ref(),
        &key,
        MaterializeOptions::new()
            .target(&b)
            .source_config_dir(&source),
    )
    .await
    .unwrap();
    std::fs::remove_dir_all(source.join("projects")).unwrap();
    assert_eq!(materialized.session_id(), session);
    assert!(materialized.entry_count() > 3);
    assert!(b.join("commands/greet.md").exists());
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["env"], json!({"STORE_TEST_SETTING": "kept"}));

    let home = host.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let options = h
        .options()
        .env("CLAUDE_CONFIG_DIR", b.to_str().unwrap())
        .env("HOME", home.to_str().unwrap())
        .resume(&session)
        .build()
        .unwrap();
    let turn_two = query("/greet", options).collect_all().await.unwrap();
    let init = turn_two
        .iter()
        .find_map(|m| match m {
            Message::System(system) => system.init(),
            _ => None,
        })
        .expect("an init message");
    assert!(
        init.slash_commands.iter().any(|c| c == "greet"),
        "the user-level command survives: {:?}",
        init.slash_commands
    );
    let request = h.mock.requests().pop().unwrap();
    assert!(
        said(&request, "user", "REMEMBER_ME_7731"),
        "turn 1's prompt is missing"
    );
    assert!(
        said(&request, "assistant", "ANSWER_ONE_4410"),
        "turn 1's answer is missing"
    );
    assert!(
        said(&request, "user", "GREET_BODY_MARKER"),
        "the command did not run"
    );
    assert_eq!(common::result_of(&turn_two).session_id, session);

    // Control: materialized without the source config, the command is not there.
    let bare = host.path().join("bare");
    materialize_session(
        store.as_ref(),
        &key,
        MaterializeOptions::new().target(&bare),
    )
    .await
    .unwrap();
    let options = h
        .options()
        .env("CLAUDE_CONFIG_DIR", bare.to_str().unwrap())
        .env("HOME", home.to_str().unwrap())
        .resume(&session)
        .build()
        .unwrap();
    let bare_turn = query("hello again", options).collect_all().await.unwrap();
    let bare_init = bare_turn
        .iter()
        .find_map(|m| match m {
            Message::System(system) => system.init(),
            _ => None,
        })
        .expect("an init message");
    assert!(!bare_init.slash_commands.iter().any(|c| c == "greet"));

    // Control: the same resume against an empty config dir has nothing to resume.
    let empty = host.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let options = h
        .options()
        .env("CLAUDE_CONFIG_DIR", empty.to_str().unwrap())
        .env("HOME", home.to_str().unwrap())
        .resume(&session)
        .build()
        .unwrap();
    let error = query("/greet", options).collect_all().await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
}

#[tokio::test]
async fn a_session_resumes_from_postgres_on_a_fresh_host() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresSessionStore::connect(db.url()).await.unwrap();
    resume_on_a_fresh_host(Arc::new(store)).await;
}

#[tokio::test]
async fn a_session_resumes_from_sqlite_on_a_fresh_host() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSessionStore::open(dir.path().join("sessions.db"))
        .await
        .unwrap();
    resume_on_a_fresh_host(Arc::new(store)).await;
}

/// A store that fails (or hangs) on demand, counting appends.
#[derive(Default)]
struct Faulty {
    inner: InMemorySessionStore,
    failures_left: AtomicUsize,
    hang: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl SessionStore for Faulty {
    fn append<'a>(
        &'a self,
        key: &'a SessionKey,
        entries: &'a [Value],
    ) -> BoxFuture<'a, claude_code_sdk::Result<()>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _permit = gate.acquire().await;
            }
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let fail = self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(claude_code_sdk::Error::custom(
                    claude_code_sdk::ErrorKind::Storage,
                    "injected store failure",
                ));
            }
            self.inner.append(key, entries).await
        })
    }

    fn load<'a>(&'a self, key: &'a SessionKey) -> claude_code_sdk::store::EntryStream<'a> {
        self.inner.load(key)
    }
}

fn quick_retries() -> MirrorConfig {
    MirrorConfig::default().retry(3, Duration::from_millis(10))
}

#[tokio::test]
async fn a_failing_store_is_retried_then_reported_and_the_run_goes_on() {
    let h = Harness::new().await;
    let projects = projects_dir(h.sandbox.config_dir());

    // Two failures, then success: retried, nothing reported.
    let store = Arc::new(Faulty::default());
    store.failures_left.store(2, Ordering::SeqCst);
    let sink = MirrorSink::new(store.clone(), &projects, quick_retries()).unwrap();
    let options = h
        .options()
        .extra_arg("session-mirror", None)
        .build()
        .unwrap();
    let (messages, failures) = mirrored_run(options, "first run", &sink).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(store.calls.load(Ordering::SeqCst) >= 3);
    let session = session_id(&messages);
    let key = SessionKey::for_directory(h.sandbox.cwd(), &session).unwrap();
    let file = read_jsonl(&transcript_file(h.sandbox.config_dir(), &session));
    assert_mirrors_file(&load(store.as_ref(), &key).await, &file);
    drop(sink);

    // A store that always fails: the run still succeeds, every lost entry is reported.
    let store = Arc::new(Faulty::default());
    store.failures_left.store(usize::MAX, Ordering::SeqCst);
    let sink = MirrorSink::new(store.clone(), &projects, quick_retries()).unwrap();
    let options = h
        .options()
        .extra_arg("session-mirror", None)
        .build()
        .unwrap();
    let (messages, mut failures) = mirrored_run(options, "second run", &sink).await;
    failures.extend(sink.close().await);
    assert_eq!(common::result_of(&messages).subtype, "success");
    assert!(!failures.is_empty());
    let session = session_id(&messages);
    let key = SessionKey::for_directory(h.sandbox.cwd(), &session).unwrap();
    let path = transcript_file(h.sandbox.config_dir(), &session);
    let file = read_jsonl(&path);
    let reported: HashSet<&str> = failures
        .iter()
        .flat_map(|f| f.entry_uuids().iter().map(String::as_str))
        .collect();
    for failure in &failures {
        assert_eq!(failure.key(), Some(&key));
        assert_eq!(failure.attempts(), 3);
        assert!(failure.error().is_storage(), "{}", failure.error());
        let message = failure.to_message(&session);
        let Message::System(system) = &message else {
            panic!("not a system message: {message:?}")
        };
        assert_eq!(system.subtype, "mirror_error");
        assert_eq!(system.data["key"]["sessionId"], session.as_str());
        assert_eq!(system.data["key"]["projectKey"], key.project_key());
    }
    for entry in &file {
        if matches!(entry["type"].as_str(), Some("user" | "assistant")) {
            let uuid = entry["uuid"].as_str().unwrap();
            assert!(reported.contains(uuid), "entry {uuid} was lost silently");
        }
    }
    assert!(load(store.as_ref(), &key).await.is_empty());

    // The CLI's own file repairs the store; a second import adds nothing with a uuid.
    let healthy = InMemorySessionStore::new();
    let report = import_transcript_file(&healthy, &path, &key).await.unwrap();
    assert_eq!(report.entries, file.len());
    assert_eq!(load(&healthy, &key).await, file);
    import_transcript_file(&healthy, &path, &key).await.unwrap();
    assert_eq!(uuids(&load(&healthy, &key).await), uuids(&file));
    let whole = import_session(&healthy, &path, &key).await.unwrap();
    assert_eq!(whole.transcripts, 1);
}

#[tokio::test]
async fn a_hanging_store_times_out_once_without_a_retry() {
    let store = Arc::new(Faulty::default());
    store.hang.store(true, Ordering::SeqCst);
    let projects = Path::new("/cfg/projects");
    let sink = MirrorSink::new(
        store.clone(),
        projects,
        quick_retries().append_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    sink.push(MirrorFrame::new(
        "/cfg/projects/-w/s1.jsonl",
        vec![
            json!({"type": "user", "uuid": "u1"}),
            json!({"type": "tag", "tag": "t"}),
        ],
    ));
    let failures = sink.close().await;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].error().is_timeout(), "{}", failures[0]);
    assert_eq!(failures[0].attempts(), 1);
    assert_eq!(failures[0].entry_count(), 2);
    assert_eq!(failures[0].entry_uuids(), ["u1"]);
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_full_backlog_refuses_frames_and_reports_them_at_once() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let store = Arc::new(Faulty {
        gate: Some(gate.clone()),
        ..Faulty::default()
    });
    let sink = MirrorSink::new(
        store.clone(),
        "/cfg/projects",
        MirrorConfig::default().max_pending_bytes(1100),
    )
    .unwrap();
    let frame = |n: u32| {
        MirrorFrame::new(
            "/cfg/projects/-w/s1.jsonl",
            vec![json!({"type": "user", "uuid": format!("u{n}"), "pad": "x".repeat(300)})],
        )
    };
    for n in 0..5 {
        sink.push(frame(n));
    }
    // Three frames of 336 bytes fit in 1100; the store holds the first append at the gate.
    let refused = sink.take_failures();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].entry_uuids(), ["u3"]);
    assert_eq!(refused[1].entry_uuids(), ["u4"]);
    assert_eq!(refused[0].attempts(), 0);
    assert_eq!(
        refused[0].key(),
        Some(&SessionKey::new("-w", "s1").unwrap())
    );
    assert!(sink.pending_bytes() > 0);
    gate.add_permits(100);
    assert!(sink.flush().await.is_empty());
    assert_eq!(sink.pending_bytes(), 0);
    let key = SessionKey::new("-w", "s1").unwrap();
    assert_eq!(uuids(&load(store.as_ref(), &key).await), ["u0", "u1", "u2"]);
    // Room again once stored.
    sink.push(frame(5));
    assert!(sink.close().await.is_empty());
    assert_eq!(store.inner.len(&key), 4);
}

#[tokio::test]
async fn frames_of_another_config_dir_are_reported_not_stored() {
    let store = Arc::new(InMemorySessionStore::new());
    let sink = MirrorSink::new(store.clone(), "/cfg/projects", MirrorConfig::default()).unwrap();
    sink.push(MirrorFrame::new(
        "/elsewhere/projects/-w/s1.jsonl",
        vec![json!({"type": "user", "uuid": "u1"})],
    ));
    sink.push_line("{\"type\":\"user\"}").unwrap_err();
    let failures = sink.close().await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].key(), None);
    assert!(failures[0].error().is_invalid_options());
    assert!(store.list_sessions("-w").await.unwrap().is_empty());
    let line = failures[0].to_system_json("s1");
    assert_eq!(line["subtype"], "mirror_error");
    assert_eq!(line["key"], Value::Null);
}

#[tokio::test]
async fn a_tenant_project_key_and_a_cwd_put_the_transcript_where_the_cli_looks() {
    let store = Arc::new(InMemorySessionStore::new());
    let sink = MirrorSink::new(
        store.clone(),
        "/cfg/projects",
        MirrorConfig::default().project_key("tenant-42"),
    )
    .unwrap();
    let session = "0b6e7a4e-6a43-4c53-9d0e-3c7f6c7e1d10";
    sink.push(MirrorFrame::new(
        format!("/cfg/projects/-srv-app/{session}.jsonl"),
        vec![json!({"type": "user", "uuid": "u1"})],
    ));
    assert!(sink.close().await.is_empty());
    let key = SessionKey::new("tenant-42", session).unwrap();
    assert_eq!(store.len(&key), 1);
    let target = tempfile::tempdir().unwrap();
    let materialized = materialize_session(
        store.as_ref(),
        &key,
        MaterializeOptions::new()
            .target(target.path())
            .cwd("/srv/app"),
    )
    .await
    .unwrap();
    assert_eq!(
        materialized.transcript_path(),
        target
            .path()
            .join(format!("projects/-srv-app/{session}.jsonl"))
    );
    // Unknown sessions and non-UUID ids are clear errors; a temporary dir is removed.
    let unknown = SessionKey::new("tenant-42", "1b6e7a4e-6a43-4c53-9d0e-3c7f6c7e1d10").unwrap();
    let error = materialize_session(store.as_ref(), &unknown, MaterializeOptions::new())
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    let not_uuid = SessionKey::new("tenant-42", "s1").unwrap();
    let error = materialize_session(store.as_ref(), &not_uuid, MaterializeOptions::new())
        .await
        .unwrap_err();
    assert!(error.is_invalid_options(), "{error:?}");
    let temp = materialize_session(store.as_ref(), &key, MaterializeOptions::new())
        .await
        .unwrap();
    let dir = temp.config_dir().to_path_buf();
    assert!(dir.exists());
    drop(temp);
    assert!(!dir.exists(), "a temporary config dir is removed on drop");
}
