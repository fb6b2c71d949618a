//! [`MirrorSink`]: the CLI's `transcript_mirror` lines into a [`SessionStore`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{SessionKey, SessionStore, entry_uuid};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Message, SystemMessage};

/// The `type` of the lines the CLI writes with `--session-mirror`.
pub const MIRROR_LINE_TYPE: &str = "transcript_mirror";

/// One `transcript_mirror` line: entries the CLI appended to a transcript file.
///
/// ```
/// use claude_code_sdk::store::MirrorFrame;
///
/// let line = r#"{"type":"transcript_mirror","filePath":"/c/projects/-w/s1.jsonl",
///                "entries":[{"type":"user","uuid":"u1"}]}"#;
/// let frame = MirrorFrame::from_line(line)?;
/// assert_eq!(frame.entries().len(), 1);
/// # Ok::<(), claude_code_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MirrorFrame {
    file_path: PathBuf,
    entries: Vec<Value>,
    bytes: usize,
}

#[derive(Deserialize)]
struct WireFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "filePath")]
    file_path: PathBuf,
    #[serde(default)]
    entries: Vec<Value>,
}

impl MirrorFrame {
    /// A frame of `entries` appended to the transcript file at `file_path`.
    pub fn new(file_path: impl Into<PathBuf>, entries: Vec<Value>) -> Self {
        let bytes = entries.iter().map(json_size).sum();
        MirrorFrame {
            file_path: file_path.into(),
            entries,
            bytes,
        }
    }

    /// Parses a `transcript_mirror` line as the CLI writes it on stdout
    /// (`{"type":"transcript_mirror","filePath":…,"entries":[…]}`).
    ///
    /// # Errors
    ///
    /// [`Protocol`](ErrorKind::Protocol) when the line is not JSON, not a
    /// `transcript_mirror` line, or lacks `filePath`.
    pub fn from_line(line: &str) -> Result<Self> {
        let wire: WireFrame = serde_json::from_str(line).map_err(|e| {
            Error::protocol("malformed transcript_mirror line")
                .with_source(e)
                .with_raw_line(crate::error::shorten(line, 4096))
        })?;
        if wire.kind != MIRROR_LINE_TYPE {
            return Err(Error::protocol(format!(
                "expected a {MIRROR_LINE_TYPE} line, got {:?}",
                wire.kind
            )));
        }
        Ok(MirrorFrame {
            file_path: wire.file_path,
            entries: wire.entries,
            bytes: line.len(),
        })
    }

    /// The transcript file the entries were appended to.
    pub fn file_path(&self) -> &Path {
        &self.file_path
    }

    /// The entries, in the order the CLI wrote them.
    pub fn entries(&self) -> &[Value] {
        &self.entries
    }

    /// The frame's size in bytes (its line's length, or its entries' JSON size).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// How a [`MirrorSink`] batches, retries and bounds its backlog.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MirrorConfig {
    /// The project key for every frame, instead of the project directory name in its
    /// file path (for a store keyed by tenant). Default: the directory name.
    pub project_key: Option<String>,
    /// The most entries in one append (default 1000).
    pub max_batch_entries: usize,
    /// The most bytes in one append (default 4 MiB); a single larger entry goes alone.
    pub max_batch_bytes: usize,
    /// The most bytes pushed but not yet stored (default 64 MiB). A frame that would
    /// exceed it is not queued but reported as a [`MirrorFailure`] at once (a frame
    /// larger than the bound is still queued when nothing else waits).
    pub max_pending_bytes: usize,
    /// Attempts per append (default 3), with exponential waits between them.
    pub attempts: u32,
    /// The wait before the second attempt (default 200 ms); each later wait is 4 times
    /// longer.
    pub first_retry_delay: Duration,
    /// How long one append may take (default 60 s). A timed-out append is not retried:
    /// it may still land, and entries without a `uuid` would be stored twice.
    pub append_timeout: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            project_key: None,
            max_batch_entries: 1000,
            max_batch_bytes: 4 << 20,
            max_pending_bytes: 64 << 20,
            attempts: 3,
            first_retry_delay: Duration::from_millis(200),
            append_timeout: Duration::from_secs(60),
        }
    }
}

impl MirrorConfig {
    /// Sets [`project_key`](MirrorConfig::project_key).
    #[must_use]
    pub fn project_key(mut self, project_key: impl Into<String>) -> Self {
        self.project_key = Some(project_key.into());
        self
    }

    /// Sets [`max_pending_bytes`](MirrorConfig::max_pending_bytes).
    #[must_use]
    pub fn max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes;
        self
    }

    /// Sets [`max_batch_entries`](MirrorConfig::max_batch_entries) and
    /// [`max_batch_bytes`](MirrorConfig::max_batch_bytes) (each at least 1).
    #[must_use]
    pub fn max_batch(mut self, entries: usize, bytes: usize) -> Self {
        self.max_batch_entries = entries.max(1);
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// Sets [`attempts`](MirrorConfig::attempts) (at least 1) and
    /// [`first_retry_delay`](MirrorConfig::first_retry_delay).
    #[must_use]
    pub fn retry(mut self, attempts: u32, first_delay: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.first_retry_delay = first_delay;
        self
    }

    /// Sets [`append_timeout`](MirrorConfig::append_timeout).
    #[must_use]
    pub fn append_timeout(mut self, timeout: Duration) -> Self {
        self.append_timeout = timeout;
        self
    }
}

/// Entries a [`MirrorSink`] could not store: which, where, and why.
///
/// The CLI's own transcript file still holds them (the CLI writes it before it mirrors);
/// [`import_transcript_file`](super::import_transcript_file) appends what the store
/// misses (entries with a `uuid` it already holds are skipped, entries without one are
/// appended again).
#[derive(Debug)]
pub struct MirrorFailure {
    file_path: PathBuf,
    key: Option<SessionKey>,
    uuids: Vec<String>,
    entries: usize,
    attempts: u32,
    error: Error,
}

impl MirrorFailure {
    /// The transcript file the entries belong to.
    pub fn file_path(&self) -> &Path {
        &self.file_path
    }

    /// The store key the entries were for; `None` when the file path is not a
    /// transcript below the sink's projects directory.
    pub fn key(&self) -> Option<&SessionKey> {
        self.key.as_ref()
    }

    /// The `uuid`s of the entries that were not stored (entries without one are only
    /// counted in [`entry_count`](MirrorFailure::entry_count)).
    pub fn entry_uuids(&self) -> &[String] {
        &self.uuids
    }

    /// How many entries were not stored.
    pub fn entry_count(&self) -> usize {
        self.entries
    }

    /// How many appends were tried (0 when none could be: no key, or the backlog was
    /// full).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why: the store's last error, a [`Timeout`](ErrorKind::Timeout), or an
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) /
    /// [`Storage`](ErrorKind::Storage) error from the sink itself (no key, backlog
    /// full).
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The failure as the official SDKs' `mirror_error` system line:
    /// `{"type":"system","subtype":"mirror_error","error","key":{"projectKey","sessionId","subpath"?},"uuid","session_id"}`,
    /// plus `file_path`, `entry_count`, `entry_uuids` and `attempts`.
    pub fn to_system_json(&self, session_id: &str) -> Value {
        let key = self.key.as_ref().map(|key| {
            let mut value = json!({"projectKey": key.project_key(), "sessionId": key.session_id()});
            if let Some(subpath) = key.subpath() {
                value["subpath"] = Value::from(subpath);
            }
            value
        });
        json!({
            "type": "system",
            "subtype": "mirror_error",
            "error": self.error.to_string(),
            "key": key,
            "uuid": uuid::Uuid::new_v4().to_string(),
            "session_id": session_id,
            "file_path": self.file_path.to_string_lossy(),
            "entry_count": self.entries,
            "entry_uuids": self.uuids,
            "attempts": self.attempts,
        })
    }

    /// The failure as a [`Message::System`] with subtype `mirror_error`, ready to be
    /// put into a run's message stream.
    pub fn to_message(&self, session_id: &str) -> Message {
        let value = self.to_system_json(session_id);
        let raw: Arc<str> = Arc::from(value.to_string());
        let data = match value {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Message::System(SystemMessage::from_wire(raw, data))
    }
}

impl fmt::Display for MirrorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} transcript entries of {} were not stored",
            self.entries,
            self.file_path.display()
        )?;
        if self.attempts > 0 {
            write!(f, " after {} attempt(s)", self.attempts)?;
        }
        write!(f, ": {}", self.error)
    }
}

enum Command {
    Frame(MirrorFrame),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    pending_bytes: AtomicUsize,
    failures: Mutex<Vec<MirrorFailure>>,
    open: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn failures(&self) -> MutexGuard<'_, Vec<MirrorFailure>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, failure: MirrorFailure) {
        if self.open.load(Ordering::Acquire) {
            tracing::warn!(%failure, "session mirror");
            self.failures().push(failure);
        } else {
            // Nobody can take it any more: the log is the last place it can go.
            tracing::error!(%failure, "session mirror (after the sink was dropped)");
        }
    }
}

/// Takes the CLI's `transcript_mirror` frames and appends them to a
/// [`SessionStore`], off the caller's path: [`push`](MirrorSink::push) never waits.
///
/// A worker task appends what was pushed, coalescing the frames that arrive while an
/// append runs into the next one (per transcript, in push order, at most
/// [`max_batch_entries`](MirrorConfig::max_batch_entries) /
/// [`max_batch_bytes`](MirrorConfig::max_batch_bytes) per append). A failed append is
/// retried ([`attempts`](MirrorConfig::attempts), exponential waits); what still fails
/// becomes a [`MirrorFailure`], and the run goes on. Failures are collected until
/// [`flush`](MirrorSink::flush), [`take_failures`](MirrorSink::take_failures) or
/// [`close`](MirrorSink::close) hands them over: nothing is dropped silently.
///
/// ```no_run
/// use std::sync::Arc;
/// use claude_code_sdk::store::{InMemorySessionStore, MirrorConfig, MirrorSink, projects_dir};
///
/// # async fn demo(lines: Vec<String>) -> claude_code_sdk::Result<()> {
/// let store = Arc::new(InMemorySessionStore::new());
/// let sink = MirrorSink::new(store, projects_dir("/home/app/.claude"), MirrorConfig::default())?;
/// for line in &lines {                      // the CLI's stdout, with --session-mirror
///     if line.contains(r#""type":"transcript_mirror""#) {
///         sink.push_line(line)?;            // never waits for the store
///     } else if line.contains(r#""type":"result""#) {
///         for failure in sink.flush().await {   // this turn is stored, or reported
///             eprintln!("{failure}");
///         }
///     }
/// }
/// let _late_failures = sink.close().await;
/// # Ok(()) }
/// ```
///
/// # Limits
///
/// At most [`max_pending_bytes`](MirrorConfig::max_pending_bytes) wait to be stored;
/// frames beyond are refused and reported. Frames whose file is not below the projects
/// directory are reported, not stored. When one append of a transcript fails and a
/// later one succeeds, the store holds the later entries without the failed ones.
///
/// # Cancel safety
///
/// [`flush`](MirrorSink::flush) and [`close`](MirrorSink::close) may be dropped: the
/// worker still stores what was pushed, and failures stay for the next call. A sink
/// dropped without `close` keeps storing in the background what was pushed; failures
/// after that are only logged (`tracing` errors).
pub struct MirrorSink {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    keys: KeyMap,
    max_pending_bytes: usize,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for MirrorSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MirrorSink")
            .field("pending_bytes", &self.pending_bytes())
            .field("failures", &self.shared.failures().len())
            .finish_non_exhaustive()
    }
}

impl MirrorSink {
    /// A sink appending to `store` the frames of transcripts below `projects_dir`
    /// (`$CLAUDE_CONFIG_DIR/projects` of the CLI that writes them; see
    /// [`projects_dir`](super::projects_dir) and
    /// [`config_dir_for_env`](super::config_dir_for_env)). Starts its worker task.
    ///
    /// # Errors
    ///
    /// [`InvalidOptions`](ErrorKind::InvalidOptions) when called outside a Tokio
    /// runtime, or when the configured project key is not a valid key part.
    pub fn new(
        store: Arc<dyn SessionStore>,
        projects_dir: impl Into<PathBuf>,
        config: MirrorConfig,
    ) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                ErrorKind::InvalidOptions,
                "a MirrorSink needs a Tokio runtime for its worker task",
            )
        })?;
        if let Some(project) = &config.project_key {
            SessionKey::new(project.clone(), "check")?;
        }
        let shared = Arc::new(Shared {
            pending_bytes: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
            open: std::sync::atomic::AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = KeyMap {
            projects_dir: projects_dir.into(),
            project_key: config.project_key.clone(),
        };
        let max_pending_bytes = config.max_pending_bytes;
        let worker = Worker {
            store,
            keys: keys.clone(),
            shared: Arc::clone(&shared),
            config,
        };
        let task = handle.spawn(worker.run(rx));
        Ok(MirrorSink {
            tx,
            shared,
            keys,
            max_pending_bytes,
            worker: Some(task),
        })
    }

    /// Queues a frame for the store. Never waits. A frame that would take the backlog
    /// over [`max_pending_bytes`](MirrorConfig::max_pending_bytes) is not queued: it
    /// becomes a [`MirrorFailure`] at once. Frames without entries are ignored.
    pub fn push(&self, frame: MirrorFrame) {
        if frame.entries.is_empty() {
            return;
        }
        let bytes = frame.bytes;
        let admitted = self
            .shared
            .pending_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                let total = pending.checked_add(bytes)?;
                (total <= self.max_pending_bytes || pending == 0).then_some(total)
            })
            .is_ok();
        if !admitted {
            let failure = failure_of(
                &frame.file_path,
                self.keys.key_for(&frame.file_path),
                &frame.entries,
                0,
                Error::new(
                    ErrorKind::Storage,
                    format!(
                        "the session mirror's backlog is full ({} bytes wait for the store)",
                        self.pending_bytes()
                    ),
                ),
            );
            self.shared.fail(failure);
            return;
        }
        if let Err(mpsc::error::SendError(Command::Frame(frame))) =
            self.tx.send(Command::Frame(frame))
        {
            self.shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
            let failure = failure_of(
                &frame.file_path,
                self.keys.key_for(&frame.file_path),
                &frame.entries,
                0,
                Error::new(
                    ErrorKind::Storage,
                    "the session mirror's worker has stopped",
                ),
            );
            self.shared.fail(failure);
        }
    }

    /// Parses a `transcript_mirror` line ([`MirrorFrame::from_line`]) and
    /// [`push`](MirrorSink::push)es it.
    ///
    /// # Errors
    ///
    /// [`Protocol`](ErrorKind::Protocol) for a line that is not a `transcript_mirror`
    /// frame; nothing is queued then.
    pub fn push_line(&self, line: &str) -> Result<()> {
        self.push(MirrorFrame::from_line(line)?);
        Ok(())
    }

    /// Waits until everything pushed before this call is stored or has failed, and
    /// returns the failures not handed over yet. Call it when a turn ends (at its
    /// `result`) so the turn is in the store before the caller moves on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, it stops waiting; failures stay for the next call.
    pub async fn flush(&self) -> Vec<MirrorFailure> {
        let (done, acked) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).is_ok() {
            let _ = acked.await;
        }
        self.take_failures()
    }

    /// The failures not handed over yet, without waiting.
    pub fn take_failures(&self) -> Vec<MirrorFailure> {
        std::mem::take(&mut *self.shared.failures())
    }

    /// Bytes pushed and not yet stored or failed.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending_bytes.load(Ordering::Acquire)
    }

    /// Stores what was pushed, stops the worker, and returns the failures not handed
    /// over yet.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, the worker goes on storing in the background and
    /// later failures are only logged.
    pub async fn close(mut self) -> Vec<MirrorFailure> {
        let failures = self.flush().await;
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
        let mut failures = failures;
        failures.extend(self.take_failures());
        failures
    }
}

impl Drop for MirrorSink {
    fn drop(&mut self) {
        // The worker drains what is queued, then ends when the channel closes.
        self.shared.open.store(false, Ordering::Release);
        let leftovers = self.take_failures();
        for failure in leftovers {
            tracing::error!(%failure, "session mirror failure never taken");
        }
    }
}

/// How frames' file paths map to store keys.
#[derive(Clone)]
struct KeyMap {
    projects_dir: PathBuf,
    project_key: Option<String>,
}

impl KeyMap {
    fn key_for(&self, path: &Path) -> Option<SessionKey> {
        let key = SessionKey::from_transcript_path(path, &self.projects_dir)?;
        match &self.project_key {
            Some(project) => key.in_project(project.clone()).ok(),
            None => Some(key),
        }
    }
}

struct Worker {
    store: Arc<dyn SessionStore>,
    keys: KeyMap,
    shared: Arc<Shared>,
    config: MirrorConfig,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.recv().await {
            let mut frames = Vec::new();
            let mut acks = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    Command::Frame(frame) => frames.push(frame),
                    Command::Flush(ack) => acks.push(ack),
                }
                next = rx.try_recv().ok();
            }
            if !frames.is_empty() {
                self.write(frames).await;
            }
            for ack in acks {
                let _ = ack.send(());
            }
        }
    }

    /// Appends frames, grouped per transcript in first-seen order.
    async fn write(&self, frames: Vec<MirrorFrame>) {
        let mut groups: Vec<(PathBuf, Vec<Value>, usize)> = Vec::new();
        for frame in frames {
            match groups
                .iter_mut()
                .find(|(path, _, _)| *path == frame.file_path)
            {
                Some((_, entries, bytes)) => {
                    entries.extend(frame.entries);
                    *bytes += frame.bytes;
                }
                None => groups.push((frame.file_path, frame.entries, frame.bytes)),
            }
        }
        for (path, entries, bytes) in groups {
            self.write_transcript(&path, entries).await;
            self.shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    async fn write_transcript(&self, path: &Path, entries: Vec<Value>) {
        let Some(key) = self.keys.key_for(path) else {
            let error = Error::new(
                ErrorKind::InvalidOptions,
                format!(
                    "{} is not a transcript below {} (does the CLI run with another CLAUDE_CONFIG_DIR?)",
                    path.display(),
                    self.keys.projects_dir.display()
                ),
            );
            self.shared.fail(failure_of(path, None, &entries, 0, error));
            return;
        };
        for batch in batches(
            &entries,
            self.config.max_batch_entries,
            self.config.max_batch_bytes,
        ) {
            if let Err((error, attempts)) = self.append(&key, batch).await {
                self.shared
                    .fail(failure_of(path, Some(key.clone()), batch, attempts, error));
            }
        }
    }

    /// One append with retries; the error and the attempts made on failure.
    async fn append(
        &self,
        key: &SessionKey,
        batch: &[Value],
    ) -> std::result::Result<(), (Error, u32)> {
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(self.config.first_retry_delay)
            .with_max_delay(self.config.first_retry_delay.saturating_mul(64))
            .with_factor(4.0)
            .with_max_times(self.config.attempts.saturating_sub(1) as usize)
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome =
                tokio::time::timeout(self.config.append_timeout, self.store.append(key, batch))
                    .await;
            let error = match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error,
                Err(_) => {
                    let error = Error::timeout(format!(
                        "the session store did not finish an append in {:?}",
                        self.config.append_timeout
                    ));
                    return Err((error, attempts));
                }
            };
            match delays.next() {
                Some(delay) => {
                    tracing::debug!(%error, attempts, ?delay, key = %key, "session mirror append failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err((error, attempts)),
            }
        }
    }
}

/// Splits entries into appends of at most `max_entries` and `max_bytes` (an entry
/// larger than `max_bytes` goes alone).
fn batches(entries: &[Value], max_entries: usize, max_bytes: usize) -> Vec<&[Value]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, entry) in entries.iter().enumerate() {
        let size = json_size(entry);
        let count = i - start;
        if count > 0 && (count >= max_entries || bytes + size > max_bytes) {
            out.push(&entries[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

fn failure_of(
    path: &Path,
    key: Option<SessionKey>,
    entries: &[Value],
    attempts: u32,
    error: Error,
) -> MirrorFailure {
    MirrorFailure {
        file_path: path.to_path_buf(),
        key,
        uuids: entries
            .iter()
            .filter_map(entry_uuid)
            .map(str::to_owned)
            .collect(),
        entries: entries.len(),
        attempts,
        error,
    }
}

/// The size of a value's compact JSON, without building it.
pub(crate) fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_limits() {
        let entries: Vec<Value> = (0..10).map(|i| json!({"n": i})).collect();
        let sizes: Vec<usize> = batches(&entries, 4, usize::MAX)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [4, 4, 2]);
        let one = json_size(&entries[0]);
        let sizes: Vec<usize> = batches(&entries, 100, one * 3)
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let big = vec![json!("x".repeat(100)), json!(1)];
        let sizes: Vec<usize> = batches(&big, 100, 10).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1]);
        assert!(batches(&[], 1, 1).is_empty());
    }

    #[test]
    fn frames_parse_and_refuse_other_lines() {
        let frame = MirrorFrame::from_line(
            r#"{"type":"transcript_mirror","filePath":"/p/x.jsonl","entries":[{"a":1}]}"#,
        )
        .unwrap();
        assert_eq!(frame.file_path(), Path::new("/p/x.jsonl"));
        assert!(
            MirrorFrame::from_line(r#"{"type":"user"}"#)
                .unwrap_err()
                .is_protocol()
        );
        assert!(MirrorFrame::from_line("nope").unwrap_err().is_protocol());
        let made = MirrorFrame::new("/p/x.jsonl", vec![json!({"a": 1})]);
        assert_eq!(made.bytes(), r#"{"a":1}"#.len());
    }
}
