//! [`materialize_session`]: a stored session written out as a config directory the
//! CLI can resume from.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

use super::{SessionKey, SessionStore, projects_dir};
use crate::error::{Error, ErrorKind, Result};

/// Files copied from the source config directory, when present.
const USER_FILES: &[&str] = &[
    ".credentials.json",
    ".claude.json",
    "settings.json",
    "CLAUDE.md",
];
/// Directories copied from the source config directory, when present.
const USER_DIRS: &[&str] = &["plugins", "commands", "skills", "agents", "output-styles"];
/// The entry type of a subagent's metadata sidecar (`agent-<id>.meta.json`) in a
/// mirrored transcript.
const AGENT_METADATA: &str = "agent_metadata";

/// Where and how [`materialize_session`] writes.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MaterializeOptions {
    target: Option<PathBuf>,
    source_config_dir: Option<PathBuf>,
    project_dir: Option<String>,
}

impl MaterializeOptions {
    /// Defaults: a new temporary directory, the key's project key as the project
    /// directory name, nothing copied besides the transcripts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes into this config directory (created if missing) instead of a new
    /// temporary one. Files of the session already there are replaced.
    pub fn target(mut self, config_dir: impl Into<PathBuf>) -> Self {
        self.target = Some(config_dir.into());
        self
    }

    /// Copies what a resume needs besides the transcript from this config directory
    /// (the one the CLI used before, or a template): `.credentials.json` (without its
    /// OAuth refresh token, so the resumed CLI cannot use up the source's single-use
    /// token), `.claude.json`, `settings.json` (without an `env.CLAUDE_CONFIG_DIR` that
    /// would point the CLI elsewhere), the user `CLAUDE.md`, the user-level
    /// `plugins/`, `commands/`, `skills/`, `agents/` and `output-styles/` trees, and the
    /// project's auto-memory (`projects/<project>/memory/`). Paths into the source
    /// directory in the JSON files directly under `plugins/` are rewritten to the
    /// target.
    pub fn source_config_dir(mut self, config_dir: impl Into<PathBuf>) -> Self {
        self.source_config_dir = Some(config_dir.into());
        self
    }

    /// The working directory the CLI will resume in: its project directory name
    /// ([`project_key_for_directory`](super::project_key_for_directory)) is where the
    /// transcript goes. Needed when the store's project keys are not directory names
    /// (tenant ids, for example). Pass the canonical path.
    pub fn cwd(mut self, cwd: impl AsRef<Path>) -> Self {
        self.project_dir = Some(super::project_key_for_directory(cwd));
        self
    }
}

/// A session written out by [`materialize_session`].
///
/// A temporary directory made for it is removed when this value drops, unless
/// [`keep`](MaterializedSession::keep) is called: run the CLI before dropping it.
#[derive(Debug)]
pub struct MaterializedSession {
    config_dir: PathBuf,
    session_id: String,
    transcript: PathBuf,
    entries: usize,
    subagents: usize,
    copied: Vec<PathBuf>,
    temp: Option<TempDir>,
}

impl MaterializedSession {
    /// The config directory: run the CLI with `CLAUDE_CONFIG_DIR` set to it.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The session id to pass to `--resume`.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The main transcript file written.
    pub fn transcript_path(&self) -> &Path {
        &self.transcript
    }

    /// Entries written to the main transcript.
    pub fn entry_count(&self) -> usize {
        self.entries
    }

    /// Subagent transcripts written.
    pub fn subagent_count(&self) -> usize {
        self.subagents
    }

    /// What was copied from the source config directory (paths in the target).
    pub fn copied(&self) -> &[PathBuf] {
        &self.copied
    }

    /// Keeps a temporary directory on disk (it is yours to remove) and returns its path.
    pub fn keep(mut self) -> PathBuf {
        if let Some(temp) = self.temp.take() {
            // `keep` only fails to return the path on platforms without it; the
            // directory is kept either way.
            let _ = temp.keep();
        }
        self.config_dir.clone()
    }
}

/// Writes the session `key` from `store` into a config directory, laid out as the CLI
/// keeps it, so that a CLI started with `CLAUDE_CONFIG_DIR=<that directory>` in the
/// same working directory can `--resume` it on a host that never ran it.
///
/// Writes `projects/<project>/<session>.jsonl` (mode 0600) and, when the store
/// supports [`list_subkeys`](SessionStore::list_subkeys), every subagent transcript
/// below `projects/<project>/<session>/` with its `.meta.json` sidecar (from the
/// mirrored `agent_metadata` entries, the last one winning). With
/// [`MaterializeOptions::source_config_dir`], copies credentials, settings and the
/// user-level plugins, commands, skills and agents too, so the resumed CLI has the same
/// commands and tools as the first one.
///
/// ```no_run
/// use claude_code_sdk::store::{MaterializeOptions, SessionKey, SqliteSessionStore, materialize_session};
///
/// # async fn demo() -> claude_code_sdk::Result<()> {
/// let store = SqliteSessionStore::open("sessions.db").await?;
/// let key = SessionKey::for_directory("/srv/app", "0b6e7a4e-6a43-4c53-9d0e-3c7f6c7e1d10")?;
/// let session = materialize_session(
///     &store,
///     &key,
///     MaterializeOptions::new().source_config_dir("/home/app/.claude"),
/// ).await?;
/// // run the CLI in /srv/app with CLAUDE_CONFIG_DIR=session.config_dir() and
/// // --resume session.session_id(), then drop `session`
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`InvalidOptions`](ErrorKind::InvalidOptions) for a key with a subpath or a session
/// id that is not a UUID (the CLI resumes only those); [`NotFound`](ErrorKind::NotFound)
/// when the store holds no entries for the key; the store's errors; an
/// [`Io`](ErrorKind::Io) error when the directory cannot be written. A temporary
/// directory is removed on error; files written into a given target stay.
///
/// # Cancel safety
///
/// Dropped midway, a temporary directory is removed; a given target may hold part of
/// the session (the main transcript is written to a temporary name first and renamed
/// into place, so it is never half-written).
pub async fn materialize_session(
    store: &dyn SessionStore,
    key: &SessionKey,
    options: MaterializeOptions,
) -> Result<MaterializedSession> {
    if !key.is_main() {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!("materialize a session by its main key, not {key}"),
        ));
    }
    if uuid::Uuid::parse_str(key.session_id()).is_err() {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!(
                "the CLI resumes sessions by UUID; {:?} is not one",
                key.session_id()
            ),
        ));
    }
    let (config_dir, temp) = match &options.target {
        Some(dir) => {
            create_private_dir(dir).await?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("claude-resume-")
                .tempdir()
                .map_err(|e| io_error("create a temporary config directory", e))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let project_dir = options
        .project_dir
        .clone()
        .unwrap_or_else(|| key.project_key().to_owned());
    let projects = projects_dir(&config_dir);
    let transcript = key.transcript_path(&projects, &project_dir);

    let (entries, _) = write_transcript(store, key, &transcript).await?;
    if entries == 0 {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("the session store holds no transcript for {key}"),
        ));
    }

    let mut subagents = 0;
    let subkeys = match store.list_subkeys(key).await {
        Ok(subkeys) => subkeys,
        Err(e) if e.is_unsupported() => Vec::new(),
        Err(e) => return Err(e),
    };
    for subpath in subkeys {
        let sub_key = match key.with_subpath(subpath.clone()) {
            Ok(sub_key) => sub_key,
            Err(_) => {
                tracing::warn!(subpath, "skipping an unsafe subpath from the session store");
                continue;
            }
        };
        let path = sub_key.transcript_path(&projects, &project_dir);
        let (written, metadata) = write_transcript(store, &sub_key, &path).await?;
        if let Some(Value::Object(mut fields)) = metadata {
            fields.remove("type");
            let meta = path.with_extension("meta.json");
            let text = serde_json::to_vec(&fields).map_err(|e| {
                Error::new(ErrorKind::Storage, "could not encode agent metadata").with_source(e)
            })?;
            write_private(&meta, &text).await?;
        }
        if written > 0 {
            subagents += 1;
        }
    }

    let mut copied = Vec::new();
    if let Some(source) = &options.source_config_dir {
        let source = source.clone();
        let target = config_dir.clone();
        let project = project_dir.clone();
        copied = tokio::task::spawn_blocking(move || copy_user_config(&source, &target, &project))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Io, "copying the user configuration failed").with_source(e)
            })??;
    }

    Ok(MaterializedSession {
        config_dir,
        session_id: key.session_id().to_owned(),
        transcript,
        entries,
        subagents,
        copied,
        temp,
    })
}

/// Streams `key`'s entries into `path` (through a temporary file renamed into place).
/// Returns the number of transcript lines written and the last `agent_metadata`
/// entry, which is not a transcript line. Writes nothing for an empty key.
async fn write_transcript(
    store: &dyn SessionStore,
    key: &SessionKey,
    path: &Path,
) -> Result<(usize, Option<Value>)> {
    let mut stream = store.load(key);
    let mut metadata = None;
    let mut written = 0;
    let mut file: Option<(tokio::io::BufWriter<tokio::fs::File>, PathBuf)> = None;
    let mut line = Vec::new();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        if entry.get("type").and_then(Value::as_str) == Some(AGENT_METADATA) {
            metadata = Some(entry);
            continue;
        }
        if file.is_none() {
            if let Some(parent) = path.parent() {
                create_private_dir(parent).await?;
            }
            let partial = path.with_extension("jsonl.partial");
            let handle = open_private(&partial).await?;
            file = Some((
                tokio::io::BufWriter::with_capacity(256 << 10, handle),
                partial,
            ));
        }
        if let Some((writer, _)) = file.as_mut() {
            line.clear();
            serde_json::to_writer(&mut line, &entry).map_err(|e| {
                Error::new(ErrorKind::Storage, "could not encode a transcript entry").with_source(e)
            })?;
            line.push(b'\n');
            writer
                .write_all(&line)
                .await
                .map_err(|e| io_error("write a transcript", e))?;
            written += 1;
        }
    }
    if let Some((mut writer, partial)) = file {
        writer
            .flush()
            .await
            .map_err(|e| io_error("write a transcript", e))?;
        writer
            .into_inner()
            .sync_all()
            .await
            .map_err(|e| io_error("write a transcript", e))?;
        tokio::fs::rename(&partial, path)
            .await
            .map_err(|e| io_error("move a transcript into place", e))?;
    } else if metadata.is_some()
        && let Some(parent) = path.parent()
    {
        create_private_dir(parent).await?;
    }
    Ok((written, metadata))
}

async fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .await
        .map_err(|e| io_error(&format!("create {}", dir.display()), e))
}

async fn open_private(path: &Path) -> Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .await
        .map_err(|e| io_error(&format!("create {}", path.display()), e))
}

async fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = open_private(path).await?;
    file.write_all(contents)
        .await
        .map_err(|e| io_error(&format!("write {}", path.display()), e))?;
    file.flush()
        .await
        .map_err(|e| io_error(&format!("write {}", path.display()), e))
}

fn io_error(what: &str, err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("materializing a session: cannot {what}"),
    )
    .with_source(err)
}

/// Copies the user configuration (see [`MaterializeOptions::source_config_dir`]).
/// A missing source file or directory is skipped; an unreadable one is an error.
fn copy_user_config(source: &Path, target: &Path, project_dir: &str) -> Result<Vec<PathBuf>> {
    let mut copied = Vec::new();
    for name in USER_FILES {
        let from = source.join(name);
        let bytes = match std::fs::read(&from) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(&format!("read {}", from.display()), e)),
        };
        let bytes = match *name {
            ".credentials.json" => without_refresh_token(bytes),
            "settings.json" => without_config_dir_override(bytes),
            _ => bytes,
        };
        let to = target.join(name);
        write_private_sync(&to, &bytes)?;
        copied.push(to);
    }
    let memory = Path::new("projects").join(project_dir).join("memory");
    let trees = USER_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::iter::once(memory));
    for tree in trees {
        let from = source.join(&tree);
        match std::fs::symlink_metadata(&from) {
            Ok(meta) if meta.is_dir() => {
                let to = target.join(&tree);
                copy_tree(&from, &to)?;
                copied.push(to);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&format!("read {}", from.display()), e)),
        }
    }
    rewrite_plugin_paths(source, target)?;
    Ok(copied)
}

fn write_private_sync(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| io_error(&format!("create {}", path.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| io_error(&format!("write {}", path.display()), e))
}

/// Copies a directory tree: files with their permissions, symbolic links as links
/// (never followed), directories recursively; other kinds (sockets, FIFOs) skipped.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io_error(&format!("create {}", to.display()), e))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| io_error(&format!("read {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&format!("read {}", from.display()), e))?;
        let kind = entry
            .file_type()
            .map_err(|e| io_error(&format!("read {}", from.display()), e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)
                .map_err(|e| io_error(&format!("copy {}", src.display()), e))?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            {
                let link = std::fs::read_link(&src)
                    .map_err(|e| io_error(&format!("read {}", src.display()), e))?;
                let _ = std::fs::remove_file(&dst);
                std::os::unix::fs::symlink(&link, &dst)
                    .map_err(|e| io_error(&format!("link {}", dst.display()), e))?;
            }
        }
    }
    Ok(())
}

/// The CLI records absolute paths into its config directory (plugin install paths,
/// marketplace clones) in the JSON files directly under `plugins/`; point them at the
/// copies.
fn rewrite_plugin_paths(source: &Path, target: &Path) -> Result<()> {
    let plugins = target.join("plugins");
    let Ok(entries) = std::fs::read_dir(&plugins) else {
        return Ok(());
    };
    let (Some(from), Some(to)) = (source.to_str(), target.to_str()) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json")
            || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if replace_prefix(&mut value, from, to)
            && let Ok(bytes) = serde_json::to_vec_pretty(&value)
        {
            write_private_sync(&path, &bytes)?;
        }
    }
    Ok(())
}

/// Replaces `from` at the start of every string in `value` (as a whole path prefix)
/// with `to`; whether anything changed.
fn replace_prefix(value: &mut Value, from: &str, to: &str) -> bool {
    match value {
        Value::String(s) => {
            let matches = s
                .strip_prefix(from)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if matches {
                *s = format!("{to}{}", &s[from.len()..]);
            }
            matches
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            replace_prefix(item, from, to) | changed
        }),
        Value::Object(map) => map.values_mut().fold(false, |changed, item| {
            replace_prefix(item, from, to) | changed
        }),
        _ => false,
    }
}

/// `.credentials.json` without `claudeAiOauth.refreshToken`: refresh tokens are single
/// use, and a resumed CLI refreshing with the source's token would revoke the source's
/// login. Content that is not a JSON object is copied as it is.
fn without_refresh_token(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let removed = value
        .get_mut("claudeAiOauth")
        .and_then(Value::as_object_mut)
        .and_then(|oauth| oauth.remove("refreshToken"))
        .is_some();
    if !removed {
        return bytes;
    }
    serde_json::to_vec(&value).unwrap_or(bytes)
}

/// `settings.json` without `env.CLAUDE_CONFIG_DIR`, which would send the resumed CLI
/// to another config directory. Content that is not a JSON object is copied as it is.
fn without_config_dir_override(bytes: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&bytes);
    let Ok(mut value) = serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) else {
        return bytes;
    };
    let removed = value
        .get_mut("env")
        .and_then(Value::as_object_mut)
        .and_then(|env| env.remove("CLAUDE_CONFIG_DIR"))
        .is_some();
    if !removed {
        return bytes;
    }
    serde_json::to_vec_pretty(&value).unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_lose_the_refresh_token_only() {
        let creds = json!({"claudeAiOauth": {"accessToken": "a", "refreshToken": "r"}, "x": 1});
        let out: Value =
            serde_json::from_slice(&without_refresh_token(serde_json::to_vec(&creds).unwrap()))
                .unwrap();
        assert_eq!(out, json!({"claudeAiOauth": {"accessToken": "a"}, "x": 1}));
        assert_eq!(without_refresh_token(b"not json".to_vec()), b"not json");
    }

    #[test]
    fn settings_lose_the_config_dir_override_only() {
        let settings = json!({"env": {"CLAUDE_CONFIG_DIR": "/x", "A": "b"}, "model": "m"});
        let out: Value = serde_json::from_slice(&without_config_dir_override(
            serde_json::to_vec(&settings).unwrap(),
        ))
        .unwrap();
        assert_eq!(out, json!({"env": {"A": "b"}, "model": "m"}));
    }

    #[test]
    fn prefixes_are_replaced_as_whole_paths() {
        let mut value = json!({"a": "/src/plugins/x", "b": ["/src", "/srcother/y"], "c": 1});
        assert!(replace_prefix(&mut value, "/src", "/dst"));
        assert_eq!(
            value,
            json!({"a": "/dst/plugins/x", "b": ["/dst", "/srcother/y"], "c": 1})
        );
    }
}
