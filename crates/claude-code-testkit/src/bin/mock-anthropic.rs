//! `mock-anthropic`: the testkit's mock Anthropic Messages API as a standalone server.
//!
//! Prints `MOCK_ANTHROPIC_URL=http://127.0.0.1:PORT` as its first stdout line, then
//! serves until it gets SIGINT or SIGTERM. `RUST_LOG=debug` logs every request on
//! stderr.
//!
//! With `--bench` (used by `make bench`), a prompt containing `BIG_ANSWER:<bytes>`
//! is answered with a text of that many bytes (at most [`MAX_BIG_ANSWER`]); every other
//! prompt gets the default `Mock reply to: <prompt>`, so each answer carries its prompt.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use claude_code_testkit::{MockAnthropic, Reply, Rule, demo_rules};

/// The largest `BIG_ANSWER:<bytes>` the `--bench` rules serve (256 MiB).
const MAX_BIG_ANSWER: usize = 256 << 20;

/// A local mock of the Anthropic Messages API, for running the Claude Code CLI offline.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Answer with the demo rules: friendly replies that say they come from the mock.
    #[arg(long)]
    demo: bool,
    /// Answer `BIG_ANSWER:<bytes>` prompts with that many bytes of text (the benchmarks).
    #[arg(long)]
    bench: bool,
}

/// The size a `BIG_ANSWER:<bytes>` prompt asks for.
fn big_answer_size(prompt: &str) -> Option<usize> {
    let rest = &prompt[prompt.find("BIG_ANSWER:")? + "BIG_ANSWER:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(|n: usize| n.min(MAX_BIG_ANSWER))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mock = match MockAnthropic::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))) {
        Ok(mock) => mock,
        Err(error) => {
            eprintln!(
                "mock-anthropic: cannot listen on 127.0.0.1:{}: {error}",
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    if args.demo {
        for rule in demo_rules() {
            mock.on(rule);
        }
    }
    if args.bench {
        mock.on(
            Rule::matching(|req| big_answer_size(&req.prompt().unwrap_or_default()).is_some())
                .reply_with(|req| {
                    let size = big_answer_size(&req.prompt().unwrap_or_default()).unwrap_or(0);
                    Reply::text("x".repeat(size))
                }),
        );
    }
    println!("MOCK_ANTHROPIC_URL={}", mock.url());
    if let Err(error) = shutdown_signal().await {
        eprintln!("mock-anthropic: cannot wait for signals: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
