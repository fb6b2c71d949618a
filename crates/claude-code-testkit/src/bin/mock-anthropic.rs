//! `mock-anthropic`: the testkit's mock Anthropic Messages API as a standalone server.
//!
//! Prints `MOCK_ANTHROPIC_URL=http://127.0.0.1:PORT` as its first stdout line, then
//! serves until it gets SIGINT or SIGTERM. `RUST_LOG=debug` logs every request on
//! stderr.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use claude_code_testkit::{MockAnthropic, demo_rules};

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
