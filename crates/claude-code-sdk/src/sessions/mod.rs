//! Sessions: list, read, rename, tag, fork and delete the CLI's sessions, in its own
//! transcript files or in a [`SessionStore`].
//!
//! ```no_run
//! use claude_code_sdk::sessions::{ForkOptions, Sessions};
//! use claude_code_sdk::store::project_key_for_directory;
//!
//! # async fn demo() -> claude_code_sdk::Result<()> {
//! let sessions = Sessions::from_config_dir("/home/app/.claude");
//! let project = project_key_for_directory("/srv/app");
//! for info in sessions.list_sessions(Some(&project)).await? {
//!     println!("{} {} ({} bytes)", info.session_id, info.summary, info.size_bytes);
//! }
//! # let id = "0b6e7a4e-6a43-4c53-9d0e-3c7f6c7e1d10";
//! for message in sessions.get_session_messages(id, Some(&project)).await? {
//!     println!("{}: {}", message.message.role(), message.message.content());
//! }
//! sessions.rename_session(id, "Login bug", Some(&project)).await?;
//! sessions.tag_session(id, Some("triage"), Some(&project)).await?;
//! let fork = sessions.fork_session(id, Some(&project), ForkOptions::new()).await?;
//! // `claude --resume <fork>` in /srv/app continues the copy
//! # let _ = fork;
//! # Ok(()) }
//! ```
//!
//! # Where sessions live
//!
//! [`Sessions::from_config_dir`] reads the CLI's files under
//! `<config dir>/projects/<project>/<session>.jsonl`; [`Sessions::from_store`] reads a
//! [`SessionStore`]. A *project* is a project key: the CLI's directory name for a
//! working directory ([`project_key_for_directory`](crate::store::project_key_for_directory)),
//! or your own key in a store. With files, `None` means every project; a store needs
//! one (it cannot enumerate projects).
//!
//! # What the CLI keeps in a transcript, and what this module writes
//!
//! Measured with CLI 2.1.331: a title set with `--name` or `/rename` is a
//! `{"type":"custom-title","customTitle":…,"sessionId":…}` line (with an `agent-name`
//! line beside it), and the last one wins. A tag is a
//! `{"type":"tag","tag":…,"sessionId":…}` line (an empty tag clears it), as the
//! official SDKs write it; the CLI has no tag command in SDK mode. The first prompt,
//! the last prompt (`last-prompt` lines), the git branch and the working directory come
//! from the conversation entries. [`rename_session`](Sessions::rename_session) and
//! [`tag_session`](Sessions::tag_session) append such lines; nothing is rewritten.
//!
//! # Limits
//!
//! - Listing reads the first and the last 64 KiB of each transcript file, never a whole
//!   large file, and starts no CLI: a field only on a line that is cut by those windows
//!   (a line longer than 64 KiB) is not seen. A store is listed by streaming each
//!   session's entries (4 at a time), since a store has no head and tail.
//! - Subagent transcripts, and transcripts with neither a prompt nor a title, are not
//!   listed.
//! - [`get_session_messages`](Sessions::get_session_messages) reads the whole
//!   transcript; it keeps only the conversation entries' JSON in memory. Lines over
//!   256 MiB, or not JSON, are skipped.
//! - A fork copies the main conversation (not subagent transcripts, not file-history
//!   snapshots) and starts without undo history.
//!
//! # Errors
//!
//! [`InvalidOptions`](crate::ErrorKind::InvalidOptions) for a session id that is not a
//! UUID, an empty title or tag, or a store without a project;
//! [`NotFound`](crate::ErrorKind::NotFound) for a session that is not there; an
//! [`Io`](crate::ErrorKind::Io) error for files that cannot be read or written; the
//! store's errors.
//!
//! # Cancel safety
//!
//! Reading is cancel safe. A dropped rename or tag appends its line or not; a dropped
//! fork leaves no file (it is written under a temporary name first) but may leave part
//! of the fork in a store; a dropped delete may have removed the transcript but not
//! the subagent transcripts.

mod chain;
mod summary;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::store::jsonl::MAX_LINE_BYTES;
use crate::store::{SessionKey, SessionStore, config_dir_for_env, projects_dir};

use chain::ChainBuilder;
use summary::Fold;

/// How many store sessions a listing reads at once.
const LIST_CONCURRENCY: usize = 4;
/// Entries per append when a fork is written to a store.
const FORK_BATCH: usize = 500;

/// A session as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session id (a UUID).
    pub session_id: String,
    /// The project key (the project directory's name for the CLI's files).
    pub project_key: String,
    /// One line for a list: the title, else the last prompt, else a summary line, else
    /// the first prompt.
    pub summary: String,
    /// The title: the last one set (`--name`, `/rename`,
    /// [`rename_session`](Sessions::rename_session)), else one the CLI generated.
    pub title: Option<String>,
    /// The first prompt the user typed (200 characters at most), or the first slash
    /// command's name.
    pub first_prompt: Option<String>,
    /// The tag, if one is set.
    pub tag: Option<String>,
    /// The git branch the session last ran on.
    pub git_branch: Option<String>,
    /// The working directory the session started in.
    pub cwd: Option<String>,
    /// When the first entry was written.
    pub created_at: Option<DateTime<Utc>>,
    /// The transcript file's modification time, or the store's last append.
    pub last_modified: DateTime<Utc>,
    /// The transcript's size: the file's, or the stored entries' JSON.
    pub size_bytes: u64,
}

/// One message of a session's conversation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionMessage {
    /// The entry's `uuid`: pass it to [`ForkOptions::up_to`] to fork after it.
    pub uuid: String,
    /// The entry before it in the conversation (`parentUuid`).
    pub parent_uuid: Option<String>,
    /// The session the entry was written in.
    pub session_id: String,
    /// When it was written.
    pub timestamp: Option<DateTime<Utc>>,
    /// The message, typed: [`Message::User`] (prompts, tool results) or
    /// [`Message::Assistant`] (one content block per entry, as the CLI writes them).
    pub message: Message,
    /// The transcript entry as the CLI wrote it.
    pub entry: Value,
}

impl SessionMessage {
    fn from_entry(entry: Value) -> Option<Self> {
        let message = Message::from_json(&entry.to_string()).ok()?;
        let field = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
        Some(SessionMessage {
            uuid: field("uuid").unwrap_or_default(),
            parent_uuid: field("parentUuid"),
            session_id: field("sessionId").unwrap_or_default(),
            timestamp: field("timestamp")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.to_utc()),
            message,
            entry,
        })
    }
}

/// How [`Sessions::fork_session`] forks.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ForkOptions {
    up_to: Option<String>,
    title: Option<String>,
}

impl ForkOptions {
    /// The whole conversation, titled `<the source's title> (fork)`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies the transcript up to this entry (its `uuid`, included) and no further.
    pub fn up_to(mut self, uuid: impl Into<String>) -> Self {
        self.up_to = Some(uuid.into());
        self
    }

    /// The fork's title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

#[derive(Clone)]
enum Source {
    Files(PathBuf),
    Store(Arc<dyn SessionStore>),
}

/// The sessions of a CLI config directory or of a store. See the
/// [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    source: Source,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Files(dir) => f.debug_struct("Sessions").field("config_dir", dir).finish(),
            Source::Store(_) => f.debug_struct("Sessions").field("store", &"..").finish(),
        }
    }
}

impl Sessions {
    /// The sessions the CLI keeps under `config_dir` (its `CLAUDE_CONFIG_DIR`).
    pub fn from_config_dir(config_dir: impl Into<PathBuf>) -> Self {
        Sessions {
            source: Source::Files(config_dir.into()),
        }
    }

    /// The sessions of this process's CLI config directory: `CLAUDE_CONFIG_DIR`, else
    /// `$HOME/.claude`.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when neither variable is set.
    pub fn from_env() -> Result<Self> {
        config_dir_for_env([])
            .map(Self::from_config_dir)
            .ok_or_else(|| invalid("neither CLAUDE_CONFIG_DIR nor HOME is set"))
    }

    /// The sessions in a store.
    pub fn from_store(store: Arc<dyn SessionStore>) -> Self {
        Sessions {
            source: Source::Store(store),
        }
    }

    /// The sessions of a project (with files, of every project for `None`), the most
    /// recently modified first.
    ///
    /// # Errors
    ///
    /// See the [module docs](self#errors).
    pub async fn list_sessions(&self, project: Option<&str>) -> Result<Vec<SessionInfo>> {
        let mut list = match &self.source {
            Source::Files(dir) => {
                let dir = dir.clone();
                let project = project.map(str::to_owned);
                blocking(move || files::list(&dir, project.as_deref())).await?
            }
            Source::Store(store) => {
                let project = require_project(project)?;
                let stored = store.list_sessions(project).await?;
                futures::stream::iter(stored)
                    .map(|session| async move {
                        let key = SessionKey::new(project, &session.session_id)?;
                        store_info(store.as_ref(), &key, session.modified).await
                    })
                    .buffer_unordered(LIST_CONCURRENCY)
                    .try_filter_map(|info| async move { Ok(info) })
                    .try_collect::<Vec<_>>()
                    .await?
            }
        };
        list.sort_by(|a, b| {
            b.last_modified
                .cmp(&a.last_modified)
                .then_with(|| a.session_id.cmp(&b.session_id))
        });
        Ok(list)
    }

    /// One session's listing.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown session, a subagent's transcript
    /// or one with nothing to show; see the [module docs](self#errors).
    pub async fn get_session_info(
        &self,
        session_id: &str,
        project: Option<&str>,
    ) -> Result<SessionInfo> {
        check_id(session_id)?;
        let info = match &self.source {
            Source::Files(dir) => {
                let (dir, id, project) = owned(dir, session_id, project);
                blocking(move || {
                    let (path, project) = files::find(&dir, &id, project.as_deref())?;
                    summary::info_from_file(&path, &id, &project).map_err(|e| io_error(&path, e))
                })
                .await?
            }
            Source::Store(store) => {
                let key = SessionKey::new(require_project(project)?, session_id)?;
                let modified = store
                    .list_sessions(key.project_key())
                    .await
                    .ok()
                    .and_then(|list| list.into_iter().find(|s| s.session_id == session_id))
                    .map(|s| s.modified)
                    .unwrap_or_default();
                store_info(store.as_ref(), &key, modified).await?
            }
        };
        info.ok_or_else(|| not_found(session_id))
    }

    /// The conversation of a session, oldest first: the `parentUuid` chain from its
    /// latest message back to its first, with every tool call and result of turns that
    /// ran tools in parallel; abandoned branches, subagents' messages and meta entries
    /// left out.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown session; see the
    /// [module docs](self#errors).
    pub async fn get_session_messages(
        &self,
        session_id: &str,
        project: Option<&str>,
    ) -> Result<Vec<SessionMessage>> {
        check_id(session_id)?;
        let mut builder = ChainBuilder::default();
        match &self.source {
            Source::Files(dir) => {
                let (dir, id, project) = owned(dir, session_id, project);
                builder = blocking(move || {
                    let (path, _) = files::find(&dir, &id, project.as_deref())?;
                    let mut builder = ChainBuilder::default();
                    files::for_each_entry(&path, |entry| builder.add(entry))?;
                    Ok(builder)
                })
                .await?;
            }
            Source::Store(store) => {
                let key = SessionKey::new(require_project(project)?, session_id)?;
                let mut stream = store.load(&key);
                let mut any = false;
                while let Some(entry) = stream.next().await {
                    any = true;
                    builder.add(entry?);
                }
                if !any {
                    return Err(not_found(session_id));
                }
            }
        }
        Ok(builder
            .conversation()
            .into_iter()
            .filter_map(SessionMessage::from_entry)
            .collect())
    }

    /// Sets a session's title: appends a `custom-title` line, as `/rename` does. The
    /// title is trimmed.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) for an empty title;
    /// [`NotFound`](ErrorKind::NotFound) for an unknown session; see the
    /// [module docs](self#errors).
    pub async fn rename_session(
        &self,
        session_id: &str,
        title: &str,
        project: Option<&str>,
    ) -> Result<()> {
        check_id(session_id)?;
        let title = title.trim();
        if title.is_empty() {
            return Err(invalid("a session title cannot be empty"));
        }
        let line = json!({"type": "custom-title", "customTitle": title, "sessionId": session_id});
        self.append_line(session_id, project, line).await
    }

    /// Tags a session, or clears its tag with `None`: appends a `tag` line. The tag is
    /// trimmed, without control and invisible formatting characters.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) for a tag that is empty once
    /// cleaned (pass `None` to clear); [`NotFound`](ErrorKind::NotFound) for an unknown
    /// session; see the [module docs](self#errors).
    pub async fn tag_session(
        &self,
        session_id: &str,
        tag: Option<&str>,
        project: Option<&str>,
    ) -> Result<()> {
        check_id(session_id)?;
        let tag = match tag {
            Some(tag) => {
                let clean = clean_tag(tag);
                if clean.is_empty() {
                    return Err(invalid("a tag cannot be empty; pass None to clear it"));
                }
                clean
            }
            None => String::new(),
        };
        let line = json!({"type": "tag", "tag": tag, "sessionId": session_id});
        self.append_line(session_id, project, line).await
    }

    /// Deletes a session with its subagent transcripts.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ErrorKind::NotFound) for an unknown session (files);
    /// [`Unsupported`](ErrorKind::Unsupported) for a store without `delete`; see the
    /// [module docs](self#errors).
    pub async fn delete_session(&self, session_id: &str, project: Option<&str>) -> Result<()> {
        check_id(session_id)?;
        match &self.source {
            Source::Files(dir) => {
                let (dir, id, project) = owned(dir, session_id, project);
                blocking(move || {
                    let (path, _) = files::find(&dir, &id, project.as_deref())?;
                    std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                    let subagents = path.with_extension("");
                    match std::fs::remove_dir_all(&subagents) {
                        Ok(()) => Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(io_error(&subagents, e)),
                    }
                })
                .await
            }
            Source::Store(store) => {
                let key = SessionKey::new(require_project(project)?, session_id)?;
                store.delete(&key).await
            }
        }
    }

    /// Copies a session into a new one with a new id and new entry uuids, in the same
    /// project, up to [`ForkOptions::up_to`] when given. The CLI resumes the fork like
    /// any session (`--resume <new id>`): the model sees the conversation up to the
    /// fork point. Returns the new session id.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when `up_to` is not an entry of the
    /// session or the session has nothing to fork; [`NotFound`](ErrorKind::NotFound) for
    /// an unknown session; see the [module docs](self#errors).
    pub async fn fork_session(
        &self,
        session_id: &str,
        project: Option<&str>,
        options: ForkOptions,
    ) -> Result<String> {
        check_id(session_id)?;
        match &self.source {
            Source::Files(dir) => {
                let (dir, id, project) = owned(dir, session_id, project);
                blocking(move || {
                    let (path, _) = files::find(&dir, &id, project.as_deref())?;
                    let mut entries = Vec::new();
                    files::for_each_entry(&path, |entry| entries.push(entry))?;
                    let (fork_id, lines) = fork::build(entries, &id, &options)?;
                    let target = path.with_file_name(format!("{fork_id}.jsonl"));
                    files::write_new(&target, &lines)?;
                    Ok(fork_id)
                })
                .await
            }
            Source::Store(store) => {
                let key = SessionKey::new(require_project(project)?, session_id)?;
                let entries: Vec<Value> = store.load(&key).try_collect().await?;
                if entries.is_empty() {
                    return Err(not_found(session_id));
                }
                let (fork_id, lines) = fork::build(entries, session_id, &options)?;
                let fork_key = SessionKey::new(key.project_key(), &fork_id)?;
                for batch in lines.chunks(FORK_BATCH) {
                    store.append(&fork_key, batch).await?;
                }
                Ok(fork_id)
            }
        }
    }

    async fn append_line(
        &self,
        session_id: &str,
        project: Option<&str>,
        line: Value,
    ) -> Result<()> {
        match &self.source {
            Source::Files(dir) => {
                let (dir, id, project) = owned(dir, session_id, project);
                blocking(move || {
                    let (path, _) = files::find(&dir, &id, project.as_deref())?;
                    files::append(&path, &line)
                })
                .await
            }
            Source::Store(store) => {
                let key = SessionKey::new(require_project(project)?, session_id)?;
                if store.load(&key).next().await.transpose()?.is_none() {
                    return Err(not_found(session_id));
                }
                store.append(&key, std::slice::from_ref(&line)).await
            }
        }
    }
}

async fn store_info(
    store: &dyn SessionStore,
    key: &SessionKey,
    modified: DateTime<Utc>,
) -> Result<Option<SessionInfo>> {
    let mut fold = Fold::default();
    let mut size = 0u64;
    let mut any = false;
    let mut stream = store.load(key);
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        any = true;
        size += crate::store::json_size(&entry) as u64 + 1;
        fold.add(&entry);
    }
    if !any {
        return Err(not_found(key.session_id()));
    }
    Ok(fold.finish(key.session_id(), key.project_key(), modified, size))
}

fn owned(dir: &Path, id: &str, project: Option<&str>) -> (PathBuf, String, Option<String>) {
    (dir.to_path_buf(), id.to_owned(), project.map(str::to_owned))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, "a session file task failed").with_source(e))?
}

fn check_id(session_id: &str) -> Result<()> {
    uuid::Uuid::parse_str(session_id)
        .map(|_| ())
        .map_err(|_| invalid(format!("a session id is a UUID; got {session_id:?}")))
}

fn require_project(project: Option<&str>) -> Result<&str> {
    project.ok_or_else(|| invalid("sessions in a store are read per project: pass a project key"))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOptions, message)
}

fn not_found(session_id: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no session {session_id}"))
}

fn io_error(path: &Path, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot access {}", path.display())).with_source(err)
}

/// A tag without control characters and invisible formatting (zero-width,
/// direction marks and isolates, byte-order mark, private use), trimmed.
fn clean_tag(tag: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{00AD}'
                | '\u{E000}'..='\u{F8FF}')
    };
    tag.chars()
        .filter(|&c| !invisible(c))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The CLI's files.
mod files {
    use super::*;

    /// The transcript of `id` and its project key: in `project`, or in any project.
    pub(super) fn find(
        config_dir: &Path,
        id: &str,
        project: Option<&str>,
    ) -> Result<(PathBuf, String)> {
        let projects = projects_dir(config_dir);
        let name = format!("{id}.jsonl");
        let candidates: Vec<String> = match project {
            Some(project) => {
                SessionKey::new(project, id)?;
                vec![project.to_owned()]
            }
            None => project_dirs(&projects)?,
        };
        for project in candidates {
            let path = projects.join(&project).join(&name);
            if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0) {
                return Ok((path, project));
            }
        }
        Err(not_found(id))
    }

    fn project_dirs(projects: &Path) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(projects) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(projects, e)),
        };
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(projects, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Ok(name) = entry.file_name().into_string()
            {
                dirs.push(name);
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    pub(super) fn list(config_dir: &Path, project: Option<&str>) -> Result<Vec<SessionInfo>> {
        let projects = projects_dir(config_dir);
        let dirs = match project {
            Some(project) => vec![project.to_owned()],
            None => project_dirs(&projects)?,
        };
        let mut list = Vec::new();
        for project in dirs {
            let dir = projects.join(&project);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&dir, e)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".jsonl"))
                else {
                    continue;
                };
                if uuid::Uuid::parse_str(id).is_err()
                    || !entry.file_type().is_ok_and(|t| t.is_file())
                {
                    continue;
                }
                // A file that vanished or cannot be read is left out of a listing.
                if let Ok(Some(info)) = summary::info_from_file(&path, id, &project) {
                    list.push(info);
                }
            }
        }
        Ok(list)
    }

    /// Calls `f` with every JSON line of a transcript, in order; lines over
    /// `MAX_LINE_BYTES` or not JSON are skipped.
    pub(super) fn for_each_entry(path: &Path, mut f: impl FnMut(Value)) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut too_long = false;
            let mut read_any = false;
            loop {
                let available = reader.fill_buf().map_err(|e| io_error(path, e))?;
                if available.is_empty() {
                    break;
                }
                read_any = true;
                let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (&available[..i], i + 1, true),
                    None => (available, available.len(), false),
                };
                if !too_long {
                    if line.len() + chunk.len() > MAX_LINE_BYTES {
                        too_long = true;
                        line = Vec::new();
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
                reader.consume(used);
                if done {
                    break;
                }
            }
            if !read_any {
                return Ok(());
            }
            if too_long || line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Ok(entry) = serde_json::from_slice::<Value>(&line) {
                f(entry);
            }
        }
    }

    /// Appends one line to an existing, non-empty transcript (never creates one).
    pub(super) fn append(path: &Path, line: &Value) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => not_found(&path.display().to_string()),
                _ => io_error(path, e),
            })?;
        let mut text = line.to_string();
        text.push('\n');
        file.write_all(text.as_bytes())
            .map_err(|e| io_error(path, e))
    }

    /// Writes a new transcript (mode 0600) through a temporary name; never replaces
    /// an existing file.
    pub(super) fn write_new(path: &Path, lines: &[Value]) -> Result<()> {
        let partial = path.with_extension("jsonl.partial");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&partial).map_err(|e| io_error(&partial, e))?;
        let mut writer = std::io::BufWriter::new(file);
        let written = (|| {
            for line in lines {
                serde_json::to_writer(&mut writer, line).map_err(std::io::Error::other)?;
                writer.write_all(b"\n")?;
            }
            writer.flush()?;
            writer.get_ref().sync_all()?;
            std::fs::hard_link(&partial, path)?;
            std::fs::remove_file(&partial)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(io_error(path, e));
        }
        Ok(())
    }
}

/// Forking: the transcript copied with new ids.
mod fork {
    use super::*;

    /// Entry types a fork copies.
    const COPIED: &[&str] = &["user", "assistant", "attachment", "system", "progress"];
    /// Fields that tie an entry to the source session's runtime state.
    const DROPPED: &[&str] = &["teamName", "agentName", "slug", "sourceToolAssistantUUID"];

    /// The fork's session id and its entries.
    pub(super) fn build(
        entries: Vec<Value>,
        session_id: &str,
        options: &ForkOptions,
    ) -> Result<(String, Vec<Value>)> {
        let mut fold = Fold::default();
        let mut replacements = Vec::new();
        let mut transcript = Vec::new();
        for entry in entries {
            fold.add(&entry);
            let kind = entry
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let has_uuid = entry.get("uuid").and_then(Value::as_str).is_some();
            let sidechain = entry.get("isSidechain").and_then(Value::as_bool) == Some(true);
            if COPIED.contains(&kind) && has_uuid && !sidechain {
                transcript.push(entry);
            } else if kind == "content-replacement"
                && entry.get("sessionId").and_then(Value::as_str) == Some(session_id)
                && let Some(list) = entry.get("replacements").and_then(Value::as_array)
            {
                replacements.extend(list.iter().cloned());
            }
        }
        if let Some(up_to) = &options.up_to {
            let cut = transcript
                .iter()
                .position(|e| e["uuid"] == up_to.as_str())
                .ok_or_else(|| invalid(format!("no entry {up_to} in session {session_id}")))?;
            transcript.truncate(cut + 1);
        }
        let new_ids: std::collections::HashMap<String, String> = transcript
            .iter()
            .filter_map(|e| e["uuid"].as_str())
            .map(|old| (old.to_owned(), uuid::Uuid::new_v4().to_string()))
            .collect();
        let parents: std::collections::HashMap<&str, (&str, Option<&str>)> = transcript
            .iter()
            .filter_map(|e| {
                Some((
                    e["uuid"].as_str()?,
                    (e["type"].as_str().unwrap_or(""), e["parentUuid"].as_str()),
                ))
            })
            .collect();
        // A parent that is a progress entry (not copied) is skipped up the chain.
        let mapped_parent = |start: Option<&str>| -> Option<String> {
            // The key as stored in `parents`, so the walk borrows from `transcript`.
            let mut parent = start.and_then(|p| parents.get_key_value(p).map(|(k, _)| *k));
            let mut steps = 0;
            while let Some(p) = parent {
                steps += 1;
                match parents.get(p) {
                    Some((kind, up)) if *kind == "progress" && steps < 10_000 => parent = *up,
                    Some(_) => return new_ids.get(p).cloned(),
                    None => return None,
                }
            }
            None
        };
        let writable: Vec<&Value> = transcript
            .iter()
            .filter(|e| e["type"] != "progress")
            .collect();
        if writable.is_empty() {
            return Err(invalid(format!(
                "session {session_id} has no messages to fork"
            )));
        }
        let fork_id = uuid::Uuid::new_v4().to_string();
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let last = writable.len() - 1;
        let mut lines = Vec::with_capacity(writable.len() + 2);
        for (i, original) in writable.into_iter().enumerate() {
            let Value::Object(fields) = original else {
                continue;
            };
            let mut entry: Map<String, Value> = fields.clone();
            let old = fields
                .get("uuid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            entry.insert("uuid".into(), json!(new_ids.get(old)));
            entry.insert(
                "parentUuid".into(),
                json!(mapped_parent(
                    fields.get("parentUuid").and_then(Value::as_str)
                )),
            );
            if let Some(logical) = fields.get("logicalParentUuid").and_then(Value::as_str) {
                entry.insert("logicalParentUuid".into(), json!(new_ids.get(logical)));
            }
            entry.insert("sessionId".into(), json!(fork_id));
            entry.insert("isSidechain".into(), json!(false));
            entry.insert(
                "forkedFrom".into(),
                json!({"sessionId": session_id, "messageUuid": old}),
            );
            if i == last || !entry.contains_key("timestamp") {
                // The newest entry is the one the CLI resumes from.
                entry.insert("timestamp".into(), json!(now));
            }
            for field in DROPPED {
                entry.remove(*field);
            }
            lines.push(Value::Object(entry));
        }
        if !replacements.is_empty() {
            lines.push(json!({
                "type": "content-replacement",
                "sessionId": fork_id,
                "replacements": replacements,
                "uuid": uuid::Uuid::new_v4().to_string(),
                "timestamp": now,
            }));
        }
        let title = match options
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(title) => title.to_owned(),
            None => {
                let source = fold
                    .finish(session_id, "", DateTime::default(), 0)
                    .map(|info| info.title.or(info.first_prompt).unwrap_or(info.summary));
                format!(
                    "{} (fork)",
                    source.unwrap_or_else(|| "Forked session".to_owned())
                )
            }
        };
        lines.push(json!({"type": "custom-title", "customTitle": title, "sessionId": fork_id}));
        Ok((fork_id, lines))
    }
}
