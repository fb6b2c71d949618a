//! A fuzzer that needs no nightly compiler and no libFuzzer: it runs a target over its
//! corpus, then over random mutations of it (bit flips, byte changes, insertions of
//! JSON tokens, deletions, duplications, splices) until the time is up. Coverage is
//! not measured, so it finds less than `cargo fuzz`; it runs anywhere `cargo` does.
//!
//! `stable-fuzz <wire_lines|transcript> <corpus dir> <seconds> [<seed>]`
//!
//! A panic writes the input to `crash-<target>-<n>` in the current directory and
//! exits 1. At the end it prints one JSON line: target, runs, seconds, peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

/// Inputs are cut to this length, as libFuzzer's `-max_len`.
const MAX_LEN: usize = 64 * 1024;

/// Fragments worth inserting: JSON structure, the wire's keys and values.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\n",
    b"\r\n",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"true",
    b"-1e999",
    b"18446744073709551616",
    b"\"type\":",
    b"\"result\"",
    b"\"assistant\"",
    b"\"user\"",
    b"\"system\"",
    b"\"control_request\"",
    b"\"control_response\"",
    b"\"control_cancel_request\"",
    b"\"keep_alive\"",
    b"\"subtype\":",
    b"\"message\":",
    b"\"content\":",
    b"\"uuid\":",
    b"\"parentUuid\":",
    b"\"sessionId\":",
    b"\"is_error\":",
    b"\"request_id\":",
    b"\"response\":",
    b"\"summary\"",
    b"\"custom-title\"",
    b"\"tag\"",
    b"\xff\xfe",
    b"\xe2\x82",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0u8, 0xff, b'"', b'\n', b'{', b'}', b'\\', b'0'][rng.below(8)];
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                input.drain(from..to);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(256)).min(len);
                let piece = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(input.len() + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            6 => {
                // A digit run: numbers at their edges.
                let at = rng.below(len + 1);
                let digits = b"99999999999999999999".repeat(1 + rng.below(3));
                input.splice(at..at, digits);
            }
            _ => {
                let at = rng.below(len + 1);
                let byte = rng.next().to_le_bytes()[0];
                input.insert(at, byte);
            }
        }
    }
    input.truncate(MAX_LEN);
}

fn load(dir: &Path) -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .map(|mut data| {
                    data.truncate(MAX_LEN);
                    data
                })
                .collect()
        })
        .unwrap_or_default();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    corpus
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: stable-fuzz <wire_lines|transcript> <corpus dir> <seconds> [<seed>]");
        std::process::exit(2);
    }
    let target: fn(&[u8]) = match args[1].as_str() {
        "wire_lines" => claude_code_sdk_fuzz::wire_lines,
        "transcript" => claude_code_sdk_fuzz::transcript,
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    };
    let corpus = load(Path::new(&args[2]));
    let limit = Duration::from_secs(args[3].parse().unwrap_or(60));
    let seed = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    let mut rng = Rng(seed.max(1));
    let started = Instant::now();
    let mut runs: u64 = 0;
    let run = |input: &[u8], runs: &mut u64| {
        *runs += 1;
        if std::panic::catch_unwind(|| target(input)).is_err() {
            let path = format!("crash-{}-{}", args[1], runs);
            let _ = std::fs::write(&path, input);
            eprintln!("stable-fuzz: {} panicked; input saved to {path}", args[1]);
            std::process::exit(1);
        }
    };
    for input in &corpus {
        run(input, &mut runs);
    }
    while started.elapsed() < limit {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &corpus);
        run(&input, &mut runs);
    }
    println!(
        "{{\"target\":\"{}\",\"engine\":\"stable-fuzz\",\"runs\":{runs},\"seconds\":{:.0},\"corpus\":{},\"peak_rss_kib\":{},\"seed\":{seed}}}",
        args[1],
        started.elapsed().as_secs_f64(),
        corpus.len(),
        peak_rss_kib()
    );
}
