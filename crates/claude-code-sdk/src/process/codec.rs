//! Newline framing with a length limit.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Splits a byte stream into lines (without the newline), refusing lines longer than
/// a limit instead of buffering without bound.
///
/// It remembers how far it has already searched, so a line that arrives in many reads
/// is scanned once: a 200 MB line costs one pass, not one pass per read. The search is
/// `memchr` (SIMD), about ten times a byte loop on long lines (`benches/codec.rs`).
///
/// A line of [`HAND_OFF`] bytes or more takes the read buffer with it (the few bytes
/// read past its newline move to a new buffer), so the line is never copied and its
/// decoder can own the buffer outright.
/// Lines at least this long take the read buffer with them instead of sharing it.
pub(crate) const HAND_OFF: usize = 1 << 20;

/// The read buffer's size after a long line took the old one.
const FRESH_BUFFER: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct LineCodec {
    max: usize,
    scanned: usize,
}

/// A line went over the limit.
#[derive(Debug)]
pub(crate) enum LineError {
    /// The line is longer than the limit; `seen` bytes had arrived without a newline.
    TooLong {
        limit: usize,
        seen: usize,
        head: Vec<u8>,
    },
    /// Reading failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for LineError {
    fn from(err: std::io::Error) -> Self {
        LineError::Io(err)
    }
}

impl LineCodec {
    pub(crate) fn new(max: usize) -> Self {
        LineCodec { max, scanned: 0 }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        if let Some(offset) = memchr::memchr(b'\n', &buf[self.scanned..]) {
            let end = self.scanned + offset;
            self.scanned = 0;
            if end > self.max {
                return Err(too_long(self.max, buf));
            }
            let mut line = if end >= HAND_OFF {
                let rest = &buf[end + 1..];
                let mut fresh = BytesMut::with_capacity(rest.len().max(FRESH_BUFFER));
                fresh.extend_from_slice(rest);
                std::mem::replace(buf, fresh)
            } else {
                buf.split_to(end + 1)
            };
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            return Ok(Some(line));
        }
        self.scanned = buf.len();
        if buf.len() > self.max {
            return Err(too_long(self.max, buf));
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => {
                // A last line without a newline.
                self.scanned = 0;
                let line = buf.split_to(buf.len());
                Ok(Some(line))
            }
        }
    }
}

fn too_long(limit: usize, buf: &mut BytesMut) -> LineError {
    let head = buf[..buf.len().min(256)].to_vec();
    let seen = buf.len();
    buf.advance(buf.len());
    LineError::TooLong { limit, seen, head }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_handles_partial_reads() {
        let mut codec = LineCodec::new(1024);
        let mut buf = BytesMut::from(&b"{\"a\":1}\n{\"b\""[..]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"{\"a\":1}");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b":2}\r\n");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"{\"b\":2}");
        buf.extend_from_slice(b"tail");
        assert_eq!(&codec.decode_eof(&mut buf).unwrap().unwrap()[..], b"tail");
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn a_long_line_takes_the_buffer() {
        let mut codec = LineCodec::new(4 * HAND_OFF);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![b'x'; HAND_OFF + 10]);
        buf.extend_from_slice(b"\r\n{\"a\"");
        let line = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(line.len(), HAND_OFF + 10);
        assert!(line.iter().all(|b| *b == b'x'));
        assert_eq!(&buf[..], b"{\"a\"");
        buf.extend_from_slice(b":1}\n");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"{\"a\":1}");
        // The line owns its buffer: it becomes a Vec without a copy.
        let ptr = line.as_ptr();
        let owned: Vec<u8> = line.into();
        assert_eq!(owned.as_ptr(), ptr);
    }

    #[test]
    fn refuses_long_lines_without_a_newline() {
        let mut codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789"[..]);
        match codec.decode(&mut buf) {
            Err(LineError::TooLong {
                limit: 8, seen: 10, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&b"0123456789\n"[..]);
        let mut codec = LineCodec::new(8);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(LineError::TooLong { .. })
        ));
    }
}
