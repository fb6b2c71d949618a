//! The server with its web page, ready to try: `make serve`, then open the URL it prints.
//!
//! Like the SDK's examples, it uses real Claude when credentials exist
//! (`ANTHROPIC_API_KEY` or a logged-in CLI) and the bundled mock model otherwise, and
//! says which. Requests work in a temporary project directory. No token is required:
//! the demo listens on loopback only (`DEMO_BIND`, default `127.0.0.1:8080`).

#[path = "../../claude-code-sdk/examples/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use claude_code_sdk::PermissionMode;
use claude_code_server::{ServerConfig, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind: SocketAddr = std::env::var("DEMO_BIND")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;
    if !bind.ip().is_loopback() {
        return Err("the demo runs without a token, so it only listens on loopback".into());
    }
    let backend = common::Backend::start().await;
    let config = ServerConfig::new(bind)
        .base_options(backend.options().build()?)
        .project_root(backend.workdir())
        .modes(
            [
                PermissionMode::ReadOnly,
                PermissionMode::AskForEdits,
                PermissionMode::AcceptEdits,
                PermissionMode::Strict,
                PermissionMode::Plan,
            ],
            PermissionMode::AskForEdits,
        );
    println!("\nclaude-code-server demo: open http://{bind}/  (Ctrl-C to stop)");
    println!("project directory: {}\n", backend.workdir().display());
    serve(config).await?;
    Ok(())
}
