//! What a session listing shows, folded from transcript entries.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::SessionInfo;

/// How much of a transcript file's start and end a listing reads.
pub(crate) const HEAD_TAIL_BYTES: u64 = 64 << 10;

/// The longest first prompt shown (characters); longer ones are cut and end in `…`.
const PROMPT_CHARS: usize = 200;

/// Prompts the CLI writes itself, never taken for the user's first prompt.
const NOT_A_PROMPT: &[&str] = &[
    "<local-command-",
    "<session-start-hook>",
    "<system-reminder>",
    "<tick>",
    "<goal>",
    "[Request interrupted by user",
    "<ide_opened_file>",
    "<ide_selection>",
];

/// The fields of a listing, updated entry by entry in file order.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    first: bool,
    sidechain: bool,
    first_prompt: Option<String>,
    command_fallback: Option<String>,
    custom_title: Option<String>,
    ai_title: Option<String>,
    last_prompt: Option<String>,
    summary: Option<String>,
    tag: Option<String>,
    git_branch: Option<String>,
    cwd: Option<String>,
    created_at: Option<DateTime<Utc>>,
}

fn text<'a>(entry: &'a Value, field: &str) -> Option<&'a str> {
    entry.get(field).and_then(Value::as_str)
}

impl Fold {
    pub(crate) fn add(&mut self, entry: &Value) {
        if !self.first {
            self.first = true;
            self.sidechain = entry.get("isSidechain").and_then(Value::as_bool) == Some(true);
        }
        let kind = text(entry, "type").unwrap_or_default();
        match kind {
            "custom-title" => set_last(&mut self.custom_title, text(entry, "customTitle")),
            "ai-title" => set_last(&mut self.ai_title, text(entry, "aiTitle")),
            "last-prompt" => set_last(&mut self.last_prompt, text(entry, "lastPrompt")),
            "summary" => set_last(&mut self.summary, text(entry, "summary")),
            "tag" => {
                self.tag = text(entry, "tag")
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
            }
            _ => {}
        }
        if kind != "custom-title" {
            // Older CLIs put titles on other entries too.
            set_last(&mut self.custom_title, text(entry, "customTitle"));
        }
        if kind != "ai-title" {
            set_last(&mut self.ai_title, text(entry, "aiTitle"));
        }
        set_last(&mut self.git_branch, text(entry, "gitBranch"));
        if self.cwd.is_none() {
            self.cwd = text(entry, "cwd").map(str::to_owned);
        }
        if self.created_at.is_none() {
            self.created_at = text(entry, "timestamp")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.to_utc());
        }
        if kind == "user" && self.first_prompt.is_none() {
            self.first_prompt_of(entry);
        }
    }

    fn first_prompt_of(&mut self, entry: &Value) {
        let flag = |name: &str| entry.get(name).and_then(Value::as_bool) == Some(true);
        if flag("isMeta") || flag("isCompactSummary") {
            return;
        }
        let content = &entry["message"]["content"];
        let texts: Vec<&str> = match content {
            Value::String(s) => vec![s.as_str()],
            Value::Array(blocks) => {
                if blocks.iter().any(|b| b["type"] == "tool_result") {
                    return;
                }
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect()
            }
            _ => return,
        };
        for raw in texts {
            let line = raw.replace('\n', " ");
            let prompt = line.trim();
            if prompt.is_empty() {
                continue;
            }
            if let Some(name) = between(prompt, "<command-name>", "</command-name>") {
                if self.command_fallback.is_none() {
                    self.command_fallback = Some(name.to_owned());
                }
                continue;
            }
            if NOT_A_PROMPT.iter().any(|p| prompt.starts_with(p)) {
                continue;
            }
            self.first_prompt = Some(shorten(prompt));
            return;
        }
    }

    /// The listing; `None` for a subagent's transcript or one with nothing to show.
    pub(crate) fn finish(
        self,
        session_id: &str,
        project_key: &str,
        last_modified: DateTime<Utc>,
        size_bytes: u64,
    ) -> Option<SessionInfo> {
        if self.sidechain {
            return None;
        }
        let first_prompt = self.first_prompt.or(self.command_fallback);
        let title = self.custom_title.or(self.ai_title);
        let summary = title
            .clone()
            .or(self.last_prompt)
            .or(self.summary)
            .or_else(|| first_prompt.clone())?;
        Some(SessionInfo {
            session_id: session_id.to_owned(),
            project_key: project_key.to_owned(),
            summary,
            title,
            first_prompt,
            tag: self.tag,
            git_branch: self.git_branch,
            cwd: self.cwd,
            created_at: self.created_at,
            last_modified,
            size_bytes,
        })
    }
}

fn set_last(slot: &mut Option<String>, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        *slot = Some(value.to_owned());
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

fn shorten(prompt: &str) -> String {
    if prompt.chars().count() <= PROMPT_CHARS {
        return prompt.to_owned();
    }
    let cut: String = prompt.chars().take(PROMPT_CHARS).collect();
    format!("{}…", cut.trim_end())
}

/// Lists one transcript file by its first and last [`HEAD_TAIL_BYTES`] (the whole file
/// when it is not larger than both): never the whole of a large file. Lines cut by the
/// window are skipped.
pub(crate) fn info_from_file(
    path: &Path,
    session_id: &str,
    project_key: &str,
) -> std::io::Result<Option<SessionInfo>> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let size = meta.len();
    let modified: DateTime<Utc> = meta.modified().map(DateTime::from).unwrap_or_default();
    let mut fold = Fold::default();
    if size <= 2 * HEAD_TAIL_BYTES {
        let mut all = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.read_to_end(&mut all)?;
        fold_lines(&mut fold, &all, false, false);
    } else {
        let mut head = vec![0; usize::try_from(HEAD_TAIL_BYTES).unwrap_or(0)];
        file.read_exact(&mut head)?;
        fold_lines(&mut fold, &head, false, true);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(size - HEAD_TAIL_BYTES))?;
        file.take(HEAD_TAIL_BYTES).read_to_end(&mut tail)?;
        fold_lines(&mut fold, &tail, true, false);
    }
    Ok(fold.finish(session_id, project_key, modified, size))
}

/// Folds the complete JSON lines of a chunk; `cut_start`/`cut_end` say the chunk's
/// first/last line may be partial.
fn fold_lines(fold: &mut Fold, chunk: &[u8], cut_start: bool, cut_end: bool) {
    let mut lines: Vec<&[u8]> = chunk.split(|&b| b == b'\n').collect();
    if cut_start && !lines.is_empty() {
        lines.remove(0);
    }
    if cut_end {
        lines.pop();
    }
    for line in lines {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Ok(entry) = serde_json::from_slice::<Value>(line) {
            fold.add(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn titles_tags_and_prompts() {
        let mut fold = Fold::default();
        for entry in [
            json!({"type": "user", "isMeta": true, "message": {"content": "meta"}}),
            json!({"type": "user", "message": {"content": "<command-name>/init</command-name>"}, "cwd": "/w", "timestamp": "2026-01-02T03:04:05.000Z"}),
            json!({"type": "user", "message": {"content": [{"type": "tool_result", "content": "x"}]}}),
            json!({"type": "user", "message": {"content": [{"type": "text", "text": "  fix the\nbug  "}]}, "gitBranch": "main"}),
            json!({"type": "custom-title", "customTitle": "First"}),
            json!({"type": "tag", "tag": "red"}),
            json!({"type": "custom-title", "customTitle": "Second"}),
            json!({"type": "tag", "tag": ""}),
            json!({"type": "tag", "tag": "blue"}),
        ] {
            fold.add(&entry);
        }
        let info = fold.finish("s", "p", DateTime::default(), 10).unwrap();
        assert_eq!(info.first_prompt.as_deref(), Some("fix the bug"));
        assert_eq!(info.title.as_deref(), Some("Second"));
        assert_eq!(info.summary, "Second");
        assert_eq!(info.tag.as_deref(), Some("blue"));
        assert_eq!(info.cwd.as_deref(), Some("/w"));
        assert_eq!(info.git_branch.as_deref(), Some("main"));
        assert_eq!(
            info.created_at.unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );

        let mut cleared = Fold::default();
        cleared.add(&json!({"type": "user", "message": {"content": "x".repeat(300)}}));
        cleared.add(&json!({"type": "tag", "tag": ""}));
        let info = cleared.finish("s", "p", DateTime::default(), 1).unwrap();
        assert_eq!(info.tag, None);
        assert_eq!(info.summary.chars().count(), 201);

        let mut side = Fold::default();
        side.add(&json!({"type": "user", "isSidechain": true, "message": {"content": "x"}}));
        assert!(side.finish("s", "p", DateTime::default(), 1).is_none());
        assert!(
            Fold::default()
                .finish("s", "p", DateTime::default(), 0)
                .is_none()
        );
    }
}
