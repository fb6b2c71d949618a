//! The fuzz targets' bodies, shared by the libFuzzer targets (`cargo fuzz`, nightly)
//! and the stable harness (`stable-fuzz`): each takes arbitrary bytes and must neither
//! panic nor allocate without bound.

use std::sync::OnceLock;

use claude_code_sdk::sessions::Sessions;

/// The limit the targets frame lines with: small, so that inputs cross it.
pub const MAX_LINE_BYTES: usize = 4096;

/// The first bytes choose where the pipe's reads are cut; the rest is the CLI's
/// stdout. Framed and classified as a run's reader does.
pub fn wire_lines(data: &[u8]) {
    let (head, body) = data.split_at(data.len().min(4));
    let cuts: Vec<usize> = head.iter().map(|b| usize::from(*b) * 7).collect();
    let seen = claude_code_sdk::fuzzing::read_stdout(body, &cuts, MAX_LINE_BYTES);
    assert!(seen.messages + seen.control + seen.skipped <= seen.lines);
    // The same bytes in one read frame the same way.
    let whole = claude_code_sdk::fuzzing::read_stdout(body, &[], MAX_LINE_BYTES);
    assert_eq!(seen, whole, "framing depends on where reads are cut");
}

/// The session id every transcript is written under.
const SESSION: &str = "0e83f050-8f2d-4a98-8793-785f2c77b495";
/// The project directory name.
const PROJECT: &str = "-fuzz-project";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn config_dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("projects").join(PROJECT))
            .expect("the project directory");
        dir
    })
}

/// `data` as a transcript file, listed and read through the public sessions API:
/// typed errors are fine, panics are not.
pub fn transcript(data: &[u8]) {
    let dir = config_dir();
    let file = dir
        .path()
        .join("projects")
        .join(PROJECT)
        .join(format!("{SESSION}.jsonl"));
    std::fs::write(&file, data).expect("write the transcript");
    let sessions = Sessions::from_config_dir(dir.path());
    runtime().block_on(async {
        let listed = sessions.list_sessions(Some(PROJECT)).await;
        let info = sessions.get_session_info(SESSION, Some(PROJECT)).await;
        let messages = sessions.get_session_messages(SESSION, Some(PROJECT)).await;
        if let Ok(listed) = &listed {
            assert!(listed.len() <= 1, "one file, {} sessions", listed.len());
        }
        if let (Ok(info), Ok(listed)) = (&info, &listed) {
            assert!(listed.iter().all(|l| l.session_id == info.session_id));
        }
        let _ = messages.map(|m| m.len());
    });
}
