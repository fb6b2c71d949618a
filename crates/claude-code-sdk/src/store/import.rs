//! Copying the CLI's transcript files into a [`SessionStore`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::jsonl::{JsonlReader, Line};
use super::mirror::json_size;
use super::{SessionKey, SessionStore};
use crate::error::{Error, ErrorKind, Result};

/// Entries per append while importing.
const BATCH_ENTRIES: usize = 500;
/// Bytes per append while importing (a larger single entry goes alone).
const BATCH_BYTES: usize = 4 << 20;

/// What an import stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Transcript files read (the main one and each subagent's).
    pub transcripts: usize,
    /// Entries handed to the store (it skips those whose `uuid` it holds already).
    pub entries: usize,
    /// Lines skipped: not JSON (a line torn while the CLI wrote it) or over 256 MiB.
    pub skipped_lines: usize,
}

/// Appends the transcript file at `path` to the store under `key`, in batches, reading
/// one line at a time. Entries the key already holds (same `uuid`) are skipped by the
/// store, so importing again, or after a failed mirror, only adds what is missing.
///
/// # Errors
///
/// [`NotFound`](ErrorKind::NotFound) when the file does not exist; an
/// [`Io`](ErrorKind::Io) error when it cannot be read; the store's errors (entries of
/// earlier batches stay stored).
///
/// # Cancel safety
///
/// Dropped midway, the batches appended so far stay stored; importing again completes
/// it.
pub async fn import_transcript_file(
    store: &dyn SessionStore,
    path: impl AsRef<Path>,
    key: &SessionKey,
) -> Result<ImportReport> {
    let path = path.as_ref();
    let mut reader = JsonlReader::open(path)
        .await
        .map_err(|e| open_error(path, e))?;
    let mut report = ImportReport {
        transcripts: 1,
        ..ImportReport::default()
    };
    let mut batch: Vec<Value> = Vec::new();
    let mut bytes = 0;
    while let Some(line) = reader.next().await.map_err(|e| read_error(path, e))? {
        let Line::Entry(entry) = line else {
            report.skipped_lines += 1;
            continue;
        };
        let size = json_size(&entry);
        if !batch.is_empty() && (batch.len() >= BATCH_ENTRIES || bytes + size > BATCH_BYTES) {
            store.append(key, &batch).await?;
            report.entries += batch.len();
            batch.clear();
            bytes = 0;
        }
        bytes += size;
        batch.push(entry);
    }
    if !batch.is_empty() {
        store.append(key, &batch).await?;
        report.entries += batch.len();
    }
    Ok(report)
}

/// Imports a session the CLI wrote on disk: its main transcript `transcript`
/// (`…/projects/<project>/<session>.jsonl`) under `key`, and every subagent transcript
/// below `…/projects/<project>/<session>/` under `key` with the matching subpath. A
/// subagent's `.meta.json` sidecar becomes an `agent_metadata` entry, as the CLI
/// mirrors it, so [`materialize_session`](super::materialize_session) restores it.
///
/// # Errors
///
/// [`InvalidOptions`](ErrorKind::InvalidOptions) when `key` has a subpath;
/// otherwise as [`import_transcript_file`].
///
/// # Cancel safety
///
/// As [`import_transcript_file`].
pub async fn import_session(
    store: &dyn SessionStore,
    transcript: impl AsRef<Path>,
    key: &SessionKey,
) -> Result<ImportReport> {
    if !key.is_main() {
        return Err(Error::new(
            ErrorKind::InvalidOptions,
            format!("import_session takes a session's main key, not {key}"),
        ));
    }
    let transcript = transcript.as_ref();
    let mut report = import_transcript_file(store, transcript, key).await?;
    let session_dir = transcript.with_extension("");
    for (subpath, path) in subagent_files(&session_dir).await? {
        let Ok(sub_key) = key.with_subpath(subpath) else {
            continue;
        };
        let meta = path.with_extension("meta.json");
        if let Ok(text) = tokio::fs::read_to_string(&meta).await
            && let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&text)
        {
            fields.insert("type".into(), Value::from("agent_metadata"));
            store.append(&sub_key, &[Value::Object(fields)]).await?;
            report.entries += 1;
        }
        let sub = import_transcript_file(store, &path, &sub_key).await?;
        report.transcripts += sub.transcripts;
        report.entries += sub.entries;
        report.skipped_lines += sub.skipped_lines;
    }
    Ok(report)
}

/// The `.jsonl` files below a session directory, as `(subpath, path)`, sorted; none
/// when the directory does not exist. Symbolic links are not followed.
pub(crate) async fn subagent_files(session_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let root = session_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_error(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| read_error(&dir, e))?;
                let kind = entry.file_type().map_err(|e| read_error(&dir, e))?;
                let path = entry.path();
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file()
                    && let Some(name) = path.file_name().and_then(|n| n.to_str())
                    && let Some(stem) = name.strip_suffix(".jsonl")
                    && let Ok(relative) = dir.strip_prefix(&root)
                {
                    let mut parts: Vec<String> = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    parts.push(stem.to_owned());
                    found.push((parts.join("/"), path));
                }
            }
        }
        found.sort();
        Ok(found)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, "listing subagent transcripts failed").with_source(e))?
}

fn open_error(path: &Path, err: std::io::Error) -> Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        Error::new(
            ErrorKind::NotFound,
            format!("no transcript at {}", path.display()),
        )
    } else {
        read_error(path, err)
    }
}

pub(crate) fn read_error(path: &Path, err: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot read {}", path.display())).with_source(err)
}
