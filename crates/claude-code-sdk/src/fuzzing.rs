//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).
//!
//! They drive the code that reads what the CLI writes exactly as a run does: the
//! line framing of the reader task (with its length limit) and the classification of
//! each line.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::process::codec::{LineCodec, LineError};
use crate::wire::{self, Inbound};

/// What [`read_stdout`] saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Lines framed.
    pub lines: usize,
    /// Lines that became messages.
    pub messages: usize,
    /// Lines that were control traffic (responses, requests, cancels, keep-alives).
    pub control: usize,
    /// Lines the reader skips as not JSON or of a bad shape.
    pub skipped: usize,
    /// Whether a line went over the limit (the reader stops there).
    pub too_long: bool,
}

/// Feeds `data` to the reader's line framing in pieces cut at `cuts` (offsets into
/// `data`, as the reads of a pipe might cut it), with `max_line_bytes` as the limit,
/// and classifies each line as the reader does.
///
/// # Panics
///
/// When the framing breaks one of its promises: a line longer than the limit, a line
/// with a newline in it, or bytes lost or invented.
pub fn read_stdout(data: &[u8], cuts: &[usize], max_line_bytes: usize) -> Seen {
    let mut codec = LineCodec::new(max_line_bytes);
    let mut buf = BytesMut::new();
    let mut seen = Seen::default();
    let mut framed = 0usize;
    let mut from = 0usize;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    ends.push(data.len());
    ends.sort_unstable();
    for end in ends {
        if end <= from {
            continue;
        }
        buf.extend_from_slice(&data[from..end]);
        from = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    framed += take(&mut seen, &line, max_line_bytes);
                }
                Ok(None) => break,
                Err(LineError::TooLong { .. }) => {
                    seen.too_long = true;
                    return seen;
                }
                Err(LineError::Io(_)) => unreachable!("no I/O here"),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(line)) => framed += take(&mut seen, &line, max_line_bytes),
            Ok(None) => break,
            Err(LineError::TooLong { .. }) => {
                seen.too_long = true;
                return seen;
            }
            Err(LineError::Io(_)) => unreachable!("no I/O here"),
        }
    }
    // Every byte is in a line, a newline or a stripped carriage return.
    assert!(
        framed <= data.len(),
        "{framed} bytes framed from {}",
        data.len()
    );
    seen
}

/// Classifies one framed line; returns the bytes it stood for (its own, with a lower
/// bound for the newline and carriage return that were cut off).
fn take(seen: &mut Seen, line: &[u8], max_line_bytes: usize) -> usize {
    assert!(
        line.len() <= max_line_bytes,
        "a line over the limit was framed"
    );
    assert!(!line.contains(&b'\n'), "a framed line holds a newline");
    seen.lines += 1;
    if !line.iter().all(u8::is_ascii_whitespace) {
        // As the reader does: the framed bytes, UTF-8 or not.
        match wire::parse_bytes(BytesMut::from(line)) {
            Ok(Inbound::Message(message)) => {
                // What a consumer does with a message must not panic either.
                let _ = message.kind();
                let _ = message.content();
                let _ = message.error();
                if let crate::Message::Result(result) = &*message {
                    // How a result becomes the run's error.
                    let _ = wire::classify_result(result);
                }
                seen.messages += 1;
            }
            Ok(_) => seen.control += 1,
            Err(_) => seen.skipped += 1,
        }
    }
    line.len()
}
