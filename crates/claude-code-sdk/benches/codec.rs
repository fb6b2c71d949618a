//! Micro-benchmark of the SDK's line framing and message decoding (issue 11, measure 8),
//! next to their floors on the same bytes: a plain `memchr` newline scan for framing, a
//! `serde_json::from_slice` into `IgnoredAny` (validation only, nothing kept) for
//! decoding.
//!
//! Inputs: a captured session (every CLI-to-SDK line of the CLI 2.1.197 fixtures, in
//! the CLI's key order, repeated to about 8 MiB), and one 50 MiB assistant message
//! line. `copy_50mib_line` is the floor for framing the big line: filling 50 MiB of
//! memory the process did not have.
//!
//! `cargo bench -p claude-code-sdk --features internals --bench codec`
//! (`make bench` runs it). Figures are bytes per second of input.

use divan::Bencher;
use divan::counter::BytesCount;

fn main() {
    divan::main();
}

const BIG: usize = 50 << 20;
/// Reads from a pipe arrive in chunks about this big.
const CHUNK: usize = 64 * 1024;
/// A line limit above every input here.
const MAX: usize = 1 << 30;

/// The captured session's CLI-to-SDK lines, newline-terminated, about 8 MiB: each
/// line's text as captured (the CLI's key order: `type` first, a result's `type` after
/// its text), without the whitespace the capture added.
fn session() -> &'static [u8] {
    static SESSION: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SESSION.get_or_init(|| {
        #[derive(serde::Deserialize)]
        struct Record<'a> {
            #[serde(default)]
            dir: Option<&'a str>,
            #[serde(borrow, default)]
            msg: Option<&'a serde_json::value::RawValue>,
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cli-2.1.197");
        let mut lines = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("the fixtures")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        entries.sort();
        for path in entries {
            for line in std::fs::read_to_string(&path).expect("a fixture").lines() {
                let record: Record<'_> = serde_json::from_str(line).expect("JSON");
                if let (Some("out"), Some(msg)) = (record.dir, record.msg)
                    && msg.get().starts_with('{')
                {
                    minify_into(msg.get().as_bytes(), &mut lines);
                    lines.push(b'\n');
                }
            }
        }
        assert!(!lines.is_empty(), "no captured lines");
        let mut out = Vec::with_capacity(8 << 20);
        while out.len() < 8 << 20 {
            out.extend_from_slice(&lines);
        }
        out
    })
}

/// Copies JSON text without the whitespace outside its strings.
fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !b.is_ascii_whitespace() {
            in_string = b == b'"';
            out.push(b);
        }
    }
}

/// One 50 MiB assistant message line, newline-terminated, in the CLI's key order.
fn big_line() -> &'static [u8] {
    static BIG_LINE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BIG_LINE.get_or_init(|| {
        let mut line = String::with_capacity(BIG + 512);
        line.push_str(r#"{"type":"assistant","message":{"id":"msg_bench","type":"message","#);
        line.push_str(
            r#""role":"assistant","model":"claude-mock","content":[{"type":"text","text":""#,
        );
        line.push_str(&"x".repeat(BIG));
        line.push_str(r#""}],"stop_reason":null,"usage":{"input_tokens":1,"output_tokens":1}},"#);
        line.push_str(
            r#""parent_tool_use_id":null,"session_id":"00000000-0000-0000-0000-000000000000","#,
        );
        line.push_str(r#""uuid":"00000000-0000-0000-0000-000000000001"}"#);
        line.push('\n');
        serde_json::from_str::<serde::de::IgnoredAny>(line.trim_end()).expect("JSON");
        line.into_bytes()
    })
}

fn lines_of(input: &[u8]) -> Vec<String> {
    input
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8(l.to_vec()).expect("UTF-8"))
        .collect()
}

#[divan::bench(sample_count = 20)]
fn frame_session(bencher: Bencher<'_, '_>) {
    let input = session();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench(|| claude_code_sdk::__bench::frame(input, CHUNK, MAX));
}

#[divan::bench(sample_count = 20)]
fn memchr_session(bencher: Bencher<'_, '_>) {
    let input = session();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench(|| memchr::memchr_iter(b'\n', input).count());
}

#[divan::bench(sample_count = 10)]
fn frame_50mib_line(bencher: Bencher<'_, '_>) {
    let input = big_line();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench(|| claude_code_sdk::__bench::frame(input, CHUNK, MAX));
}

/// The floor of framing a line that arrives in pieces: copying it into memory the
/// process did not have (first-touch page faults dominate; `perf stat` shows most of
/// the framing's time in the kernel).
#[divan::bench(sample_count = 10)]
fn copy_50mib_line(bencher: Bencher<'_, '_>) {
    let input = big_line();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench(|| input.to_vec());
}

#[divan::bench(sample_count = 10)]
fn memchr_50mib_line(bencher: Bencher<'_, '_>) {
    let input = big_line();
    bencher
        .counter(BytesCount::of_slice(input))
        .bench(|| memchr::memchr_iter(b'\n', input).count());
}

#[divan::bench(sample_count = 10)]
fn decode_session(bencher: Bencher<'_, '_>) {
    let input = session();
    let lines = lines_of(input);
    bencher
        .counter(BytesCount::of_slice(input))
        .with_inputs(|| lines.clone())
        .bench_values(|lines| {
            lines
                .into_iter()
                .map(claude_code_sdk::__bench::decode)
                .filter(|ok| *ok)
                .count()
        });
}

#[divan::bench(sample_count = 10)]
fn from_slice_session(bencher: Bencher<'_, '_>) {
    let input = session();
    let lines = lines_of(input);
    bencher.counter(BytesCount::of_slice(input)).bench(|| {
        lines
            .iter()
            .filter(|l| serde_json::from_slice::<serde::de::IgnoredAny>(l.as_bytes()).is_ok())
            .count()
    });
}

#[divan::bench(sample_count = 10)]
fn decode_50mib_line(bencher: Bencher<'_, '_>) {
    let input = big_line();
    let line = String::from_utf8(input[..input.len() - 1].to_vec()).expect("UTF-8");
    bencher
        .counter(BytesCount::of_slice(input))
        .with_inputs(|| line.clone())
        .bench_values(claude_code_sdk::__bench::decode);
}

#[divan::bench(sample_count = 10)]
fn from_slice_50mib_line(bencher: Bencher<'_, '_>) {
    let input = big_line();
    bencher.counter(BytesCount::of_slice(input)).bench(|| {
        serde_json::from_slice::<serde::de::IgnoredAny>(&input[..input.len() - 1]).is_ok()
    });
}
