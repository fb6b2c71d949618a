//! What the SQL stores share: error mapping and entry encoding.

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// A backend failure as a [`Storage`](ErrorKind::Storage) error.
pub(super) fn storage(what: &str, err: sqlx::Error) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!("the session store could not {what}"),
    )
    .with_source(err)
}

/// One entry as stored: its `uuid` (the idempotency key) and its compact JSON text.
///
/// Entries are kept as text rather than `jsonb`: `jsonb` refuses `\u0000` in strings,
/// which tool output can hold, and text round-trips every JSON value.
pub(super) fn encode(entries: &[Value]) -> Result<(Vec<Option<String>>, Vec<String>)> {
    let mut uuids = Vec::with_capacity(entries.len());
    let mut texts = Vec::with_capacity(entries.len());
    for entry in entries {
        uuids.push(super::entry_uuid(entry).map(str::to_owned));
        texts.push(serde_json::to_string(entry).map_err(|e| {
            Error::new(ErrorKind::Storage, "could not encode a transcript entry").with_source(e)
        })?);
    }
    Ok((uuids, texts))
}

/// Parses a stored entry.
pub(super) fn decode(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::Storage,
            "a stored transcript entry is not valid JSON",
        )
        .with_source(e)
    })
}

/// The subpath column: `''` for a main transcript (so the unique key covers it).
pub(super) fn subpath_column(key: &super::SessionKey) -> &str {
    key.subpath().unwrap_or("")
}

/// Milliseconds since the epoch as a time (the epoch itself if out of range).
pub(super) fn time_of(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
