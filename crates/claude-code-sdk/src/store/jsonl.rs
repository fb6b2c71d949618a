//! Reading JSON-lines transcript files with a bound on line length.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The longest transcript line read (256 MiB); longer lines are skipped.
pub(crate) const MAX_LINE_BYTES: usize = 256 << 20;

/// One line of a transcript file.
pub(crate) enum Line {
    /// A JSON value.
    Entry(Value),
    /// Not JSON (a torn last line while the CLI writes, for example), or too long.
    Skipped,
}

/// Reads a JSON-lines file one line at a time.
pub(crate) struct JsonlReader {
    reader: BufReader<tokio::fs::File>,
    buf: Vec<u8>,
}

impl JsonlReader {
    pub(crate) async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(path).await?;
        Ok(JsonlReader {
            reader: BufReader::with_capacity(64 << 10, file),
            buf: Vec::new(),
        })
    }

    /// The next non-empty line; `None` at the end of the file.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            self.buf.clear();
            let mut too_long = false;
            let mut read_any = false;
            loop {
                let available = self.reader.fill_buf().await?;
                if available.is_empty() {
                    break;
                }
                read_any = true;
                let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (&available[..i], Some(i + 1)),
                    None => (available, None),
                };
                if !too_long {
                    if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
                        too_long = true;
                        self.buf = Vec::new();
                    } else {
                        self.buf.extend_from_slice(chunk);
                    }
                }
                let used = found.unwrap_or(available.len());
                self.reader.consume(used);
                if found.is_some() {
                    break;
                }
            }
            if !read_any {
                return Ok(None);
            }
            if too_long {
                return Ok(Some(Line::Skipped));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(match serde_json::from_slice(&self.buf) {
                Ok(value) => Line::Entry(value),
                Err(_) => Line::Skipped,
            }));
        }
    }
}
