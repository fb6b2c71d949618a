//! The options the official SDKs take beyond the first set, against the real CLI: each
//! test shows the option doing what it says (in the model's request, on disk, or in
//! what the CLI reports), next to a run without it.

mod common;

use claude_code_sdk::{
    AgentDefinition, ClaudeClient, Message, PluginConfig, ThinkingConfig, query,
};
use claude_code_testkit::{Reply, Rule};
use common::{Harness, result_of};

/// The last model request that mentions `needle`.
fn request_with(h: &Harness, needle: &str) -> claude_code_testkit::RecordedRequest {
    h.mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.mentions(needle))
        .unwrap_or_else(|| panic!("a request mentions {needle:?}"))
}

#[tokio::test]
async fn thinking_task_budget_and_betas_reach_the_model() {
    let h = Harness::new().await;
    let plain = h.options().model("claude-sonnet-4-5").build().unwrap();
    query("PLAIN_RUN", plain).collect_all().await.unwrap();
    let plain = request_with(&h, "PLAIN_RUN");
    assert!(
        plain
            .body()
            .get("thinking")
            .is_none_or(|t| t["budget_tokens"] != 3000)
    );

    let options = h
        .options()
        .model("claude-sonnet-4-5")
        .thinking(ThinkingConfig::budget(3000))
        .task_budget(50_000)
        .beta("context-1m-2025-08-07")
        .build()
        .unwrap();
    query("TUNED_RUN", options).collect_all().await.unwrap();
    let tuned = request_with(&h, "TUNED_RUN");
    assert_eq!(
        tuned.body()["thinking"]["budget_tokens"],
        3000,
        "{}",
        tuned.body()["thinking"]
    );
    let betas = tuned.header("anthropic-beta").unwrap_or_default();
    assert!(betas.contains("context-1m-2025-08-07"), "{betas}");
    assert_eq!(
        tuned.body()["output_config"]["task_budget"]["total"],
        50_000,
        "the task budget is in the request"
    );
    assert!(
        plain
            .body()
            .get("output_config")
            .is_none_or(|c| c.get("task_budget").is_none())
    );
}

/// The CLI's transcript files for the sandbox's project.
fn transcripts(h: &Harness) -> Vec<std::path::PathBuf> {
    let projects = h.sandbox.config_dir().join("projects");
    let Ok(dirs) = std::fs::read_dir(&projects) else {
        return Vec::new();
    };
    dirs.flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect()
}

#[tokio::test]
async fn persist_session_false_leaves_no_transcript() {
    let h = Harness::new().await;
    let options = h.options().persist_session(false).build().unwrap();
    let messages = query("NOT_KEPT", options).collect_all().await.unwrap();
    let id = result_of(&messages).session_id.clone();
    assert!(
        !transcripts(&h)
            .iter()
            .any(|p| p.to_string_lossy().contains(&id)),
        "{:?}",
        transcripts(&h)
    );
    // The same run without the option keeps one: the check can fail.
    let messages = query("KEPT", h.options().build().unwrap())
        .collect_all()
        .await
        .unwrap();
    let id = result_of(&messages).session_id.clone();
    assert!(
        transcripts(&h)
            .iter()
            .any(|p| p.to_string_lossy().contains(&id)),
        "{:?}",
        transcripts(&h)
    );
}

#[tokio::test]
async fn agents_output_style_and_plugins_show_in_what_the_cli_reports() {
    let h = Harness::new().await;
    // A plugin with one command.
    let plugin = h.sandbox.root().join("demo-plugin");
    std::fs::create_dir_all(plugin.join(".claude-plugin")).unwrap();
    std::fs::create_dir_all(plugin.join("commands")).unwrap();
    std::fs::write(
        plugin.join(".claude-plugin/plugin.json"),
        r#"{"name": "demo-plugin", "version": "1.0.0", "description": "a test plugin"}"#,
    )
    .unwrap();
    std::fs::write(
        plugin.join("commands/greet-everyone.md"),
        "---\ndescription: Greets everyone\n---\nSay hello to everyone.\n",
    )
    .unwrap();
    let reviewer = AgentDefinition::new("Reviews code", "You are REVIEWER_AGENT_PROMPT.")
        .tools(["Read", "Grep"])
        .disallowed_tools(["Bash"])
        .max_turns(3);
    let options = h
        .options()
        .agent("reviewer", reviewer)
        .main_agent("reviewer")
        .output_style("Explanatory")
        .plugin(PluginConfig::local(&plugin))
        .build()
        .unwrap();
    let client = ClaudeClient::connect(options).await.unwrap();
    let info = client.server_info();
    assert!(
        client
            .supported_agents()
            .iter()
            .any(|a| a.name == "reviewer"),
        "{:?}",
        info.agents
    );
    assert_eq!(
        info.output_style.as_deref(),
        Some("Explanatory"),
        "{}",
        info.raw
    );
    assert!(
        client
            .supported_commands()
            .iter()
            .any(|c| c.name.contains("greet-everyone")),
        "{:?}",
        client
            .supported_commands()
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    // The main thread runs as the agent: its prompt is the system prompt.
    client.query("WHO_ARE_YOU").await.unwrap();
    let _: Vec<_> = futures::StreamExt::collect(client.receive_response()).await;
    let request = request_with(&h, "WHO_ARE_YOU");
    assert!(
        request.system_text().contains("REVIEWER_AGENT_PROMPT"),
        "{}",
        request.system_text()
    );
    client.close().await.unwrap();
}

#[tokio::test]
async fn resume_session_at_continues_from_an_earlier_message() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("ALPHA_TURN").reply(Reply::text("alpha answer")));
    h.mock
        .on(Rule::prompt_contains("BETA_TURN").reply(Reply::text("beta answer")));
    let client = ClaudeClient::connect(h.options().build().unwrap())
        .await
        .unwrap();
    client.query("ALPHA_TURN").await.unwrap();
    let first: Vec<Message> = futures::StreamExt::collect::<Vec<_>>(client.receive_response())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let alpha_answer = first
        .iter()
        .find_map(|m| match m {
            Message::Assistant(a) => a.uuid.clone(),
            _ => None,
        })
        .expect("the first answer has a uuid");
    client.query("BETA_TURN").await.unwrap();
    let _: Vec<_> = futures::StreamExt::collect(client.receive_response()).await;
    let session = client.session_id().unwrap();
    client.close().await.unwrap();

    let options = h
        .options()
        .resume(&session)
        .resume_session_at(&alpha_answer)
        .build()
        .unwrap();
    query("GAMMA_TURN", options).collect_all().await.unwrap();
    let request = request_with(&h, "GAMMA_TURN");
    assert!(request.mentions("ALPHA_TURN"), "the turn before is kept");
    assert!(
        !request.mentions("BETA_TURN"),
        "what came after the message is dropped"
    );
}

#[tokio::test]
async fn fork_session_continues_a_conversation_under_a_new_id() {
    let h = Harness::new().await;
    h.mock
        .on(Rule::prompt_contains("FORK_BASE").reply(Reply::text("base answer")));
    let messages = query("FORK_BASE", h.options().build().unwrap())
        .collect_all()
        .await
        .unwrap();
    let original = result_of(&messages).session_id.clone();
    let options = h
        .options()
        .resume(&original)
        .fork_session(true)
        .build()
        .unwrap();
    let messages = query("FORK_NEXT", options).collect_all().await.unwrap();
    let forked = result_of(&messages).session_id.clone();
    assert_ne!(forked, original, "the fork has an id of its own");
    assert!(request_with(&h, "FORK_NEXT").mentions("FORK_BASE"));
    // The original transcript does not have the fork's turn.
    let original_file = transcripts(&h)
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&original))
        .unwrap();
    assert!(
        !std::fs::read_to_string(original_file)
            .unwrap()
            .contains("FORK_NEXT")
    );
}

#[tokio::test]
async fn strict_mcp_config_ignores_the_projects_mcp_servers() {
    let h = Harness::new().await;
    std::fs::write(
        h.file(".mcp.json"),
        r#"{"mcpServers": {"from-project": {"type": "stdio", "command": "/bin/false"}}}"#,
    )
    .unwrap();
    let names = |strict: bool| {
        let options = h
            .options()
            .settings(r#"{"enableAllProjectMcpServers": true}"#)
            .mcp_server(
                "from-options",
                claude_code_sdk::McpServerConfig::stdio("/bin/false", Vec::<String>::new()),
            )
            .strict_mcp_config(strict)
            .build()
            .unwrap();
        async move {
            let client = ClaudeClient::connect(options).await.unwrap();
            let names: Vec<String> = client
                .mcp_status()
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect();
            client.close().await.unwrap();
            names
        }
    };
    let all = names(false).await;
    assert!(all.contains(&"from-project".to_owned()), "{all:?}");
    assert!(all.contains(&"from-options".to_owned()), "{all:?}");
    let strict = names(true).await;
    assert_eq!(strict, ["from-options"]);
}

#[tokio::test]
async fn include_hook_events_yields_the_hook_lifecycle() {
    let h = Harness::new().await;
    let hooked =
        r#"{"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "true"}]}]}}"#;
    let subtypes = |include: bool| {
        let options = h
            .options()
            .settings(hooked)
            .include_hook_events(include)
            .build()
            .unwrap();
        async move {
            query("HOOKED_RUN", options)
                .collect_all()
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    Message::System(s) => Some(s.subtype),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    let with = subtypes(true).await;
    assert!(
        with.iter().any(|s| s.starts_with("hook_")),
        "hook events yielded: {with:?}"
    );
    let without = subtypes(false).await;
    assert!(
        !without.iter().any(|s| s.starts_with("hook_")),
        "{without:?}"
    );
}
