//! What a run's CLI is started with: its arguments, its environment, and, when the run
//! can take a parked spare, what the spare must have been started with and the
//! `claim_session` request that binds it.
//!
//! Every option is turned into arguments here, once; the pool's keys are digests of
//! what comes out, so a new option changes them without anyone remembering to.

use std::ffi::OsString;

use serde_json::{Value, json};

use super::discovery::{CliVersion, FLAGS_SINCE, HOOK_EVENTS_SINCE, since};
use super::reaper;
use crate::error::{Error, Result};
use crate::hooks::initialize_hooks;
use crate::options::{
    ClaudeCodeOptions, InheritEnv, McpServerConfig, OutputFormat, PermissionMode, READ_ONLY_TOOLS,
    SIDE_EFFECT_TOOLS, has_side_effects,
};

/// The flags every run starts with: the control protocol over stream-json.
pub(crate) const BASE_ARGS: &[&str] = &[
    "--output-format",
    "stream-json",
    "--verbose",
    "--input-format",
    "stream-json",
];

/// The flag that starts a parked spare.
pub(crate) const AWAIT_CLAIM: &str = "--await-claim";

/// The longest single command-line argument Linux accepts (`MAX_ARG_STRLEN`, 128 KiB
/// with the terminating NUL).
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// The value of `CLAUDE_CODE_ENTRYPOINT` the SDK sets: the CLI treats `sdk-cli` as an
/// SDK host (only `sdk-ts`, `sdk-py` and `sdk-cli` count).
pub(crate) const ENTRYPOINT: &str = "sdk-cli";

/// The variable that turns on file checkpoints in a CLI run by an SDK (measured: read
/// by 2.1.197 and 2.1.332 alike; without it an SDK host's CLI keeps none).
pub(crate) const FILE_CHECKPOINTING_ENV: &str = "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING";

/// Flags a claim (or a `set_model` right after it) sets on a parked spare: they are
/// left out of a spare's start-up arguments.
const CLAIMED_FLAGS: &[&str] = &[
    "--permission-mode",
    "--model",
    "--append-system-prompt",
    "--add-dir",
    "--agents",
];

/// Flags that name a conversation: left out of the key of a process kept hot for the
/// next turn of its conversation.
const CONVERSATION_FLAGS: &[&str] = &["--resume", "--continue", "--session-id", "--fork-session"];

/// The environment of a CLI.
#[derive(Debug, Clone)]
pub(crate) struct SpawnEnv {
    /// Variables set explicitly (the SDK's, then the options').
    pub(crate) vars: Vec<(String, String)>,
    /// Variables of this process that must not reach the CLI.
    pub(crate) remove: Vec<String>,
    /// Which variables of this process the CLI inherits.
    pub(crate) inherit: InheritEnv,
}

/// How a run's CLI starts.
#[derive(Debug, Clone)]
pub(crate) struct LaunchPlan {
    /// The arguments of a cold start, the stream-json flags included.
    pub(crate) args: Vec<OsString>,
    /// Its environment.
    pub(crate) env: SpawnEnv,
    /// The key of a process kept hot after a turn of this run's conversation: another
    /// run may continue on it when it names the conversation and its key is equal.
    pub(crate) hot_key: String,
    /// How to run on a parked spare instead, when this run can.
    pub(crate) spare: Option<SparePlan>,
}

/// How a run binds a parked spare.
#[derive(Debug, Clone)]
pub(crate) struct SparePlan {
    /// The arguments a compatible spare is started with (`--await-claim` included).
    pub(crate) args: Vec<OsString>,
    /// Spares with an equal key can serve the run.
    pub(crate) key: String,
    /// The `claim_session` request.
    pub(crate) claim: Value,
    /// The model, set with `set_model` right after the claim.
    pub(crate) model: Option<String>,
}

/// Plans how the CLI at `program` (version `version`) starts for `options`.
///
/// # Errors
///
/// [`InvalidOptions`](crate::ErrorKind::InvalidOptions) for an argument longer than the
/// system allows; [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli) for a flag or a
/// hook event the CLI's version does not have (see [`check_version_gates`]).
pub(crate) fn plan(
    options: &ClaudeCodeOptions,
    program: &std::path::Path,
    version: &CliVersion,
) -> Result<LaunchPlan> {
    if options.session_store.is_some() && !version.supports_session_mirror() {
        return Err(Error::new(
            crate::ErrorKind::UnsupportedCli,
            format!(
                "a session store needs the CLI's --session-mirror, which CLI {version} lacks; \
                 it needs {} or later",
                super::discovery::SESSION_MIRROR_SINCE
            ),
        ));
    }
    let mut args: Vec<OsString> = BASE_ARGS.iter().map(OsString::from).collect();
    args.extend(cli_args(options, version));
    check_version_gates(options, &args, program, version)?;
    if let Some(long) = args.iter().find(|a| a.len() > MAX_ARG_BYTES) {
        let name: String = long.to_string_lossy().chars().take(40).collect();
        return Err(Error::invalid_options(format!(
            "the CLI argument {name}... is {} bytes; one command-line argument is limited to \
             128 KiB (Linux). Put a long system prompt in a file and pass \
             extra_arg(\"system-prompt-file\", Some(path)) instead",
            long.len()
        )));
    }
    let env = spawn_env(options);
    let callbacks = callback_shape(options);
    let cwd = options
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .map(|c| c.canonicalize().unwrap_or(c));
    let without = |flags: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| {
                !flags
                    .iter()
                    .any(|f| a == f || a.starts_with(&format!("{f}=")))
            })
            .collect()
    };
    let hot_key = crate::options::digest(&json!({
        "program": program,
        "args": without(CONVERSATION_FLAGS),
        "env": env_shape(&env),
        "cwd": cwd,
        "callbacks": callbacks,
    }));
    let spare = (version.supports_await_claim()
        && !options.names_conversation()
        && !options.fork_session
        && options.stderr.is_none())
    .then(|| {
        let mut spare_args: Vec<OsString> = without(CLAIMED_FLAGS)
            .into_iter()
            .map(OsString::from)
            .collect();
        spare_args.push(AWAIT_CLAIM.into());
        let key = crate::options::digest(&json!({
            "program": program,
            "args": spare_args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "env": env_shape(&env),
            "callbacks": callbacks,
        }));
        SparePlan {
            args: spare_args,
            key,
            claim: claim_request(options, cwd.as_deref()),
            model: options.model.clone(),
        }
    });
    Ok(LaunchPlan {
        args,
        env,
        hot_key,
        spare,
    })
}

/// Refuses what the CLI at `program` (version `version`) would not do: a flag it does
/// not know (it would exit with `unknown option`), or a hook for an event it never fires
/// (it would take the hook at `initialize` and never call it, which for a guard hook
/// means the guard silently does nothing).
///
/// # Errors
///
/// [`UnsupportedCli`](crate::ErrorKind::UnsupportedCli), naming the flag or event and
/// the first CLI version known to have it.
fn check_version_gates(
    options: &ClaudeCodeOptions,
    args: &[OsString],
    program: &std::path::Path,
    version: &CliVersion,
) -> Result<()> {
    let needs = |what: String, needed: CliVersion| {
        Error::unsupported_cli(format!(
            "{what} needs Claude Code CLI {needed} or newer, and the CLI at {} is {version}; \
             update it (`npm install -g @anthropic-ai/claude-code@latest`) or set cli_path to a \
             newer one",
            program.display()
        ))
    };
    for hook in &options.hooks {
        let event = hook.event.as_str();
        if let Some(needed) = since(HOOK_EVENTS_SINCE, event).filter(|v| v > version) {
            return Err(needs(
                format!("a {event} hook (the CLI would never call it)"),
                needed,
            ));
        }
    }
    for arg in args {
        let arg = arg.to_string_lossy();
        let Some(flag) = arg.strip_prefix("--") else {
            continue;
        };
        let name = flag.split_once('=').map_or(flag, |(name, _)| name);
        if let Some(needed) = since(FLAGS_SINCE, name).filter(|v| v > version) {
            return Err(needs(format!("the flag --{name}"), needed));
        }
    }
    Ok(())
}

/// The environment options give a CLI.
fn spawn_env(options: &ClaudeCodeOptions) -> SpawnEnv {
    let mut vars: Vec<(String, String)> =
        vec![("CLAUDE_CODE_ENTRYPOINT".into(), ENTRYPOINT.into())];
    if let Some(retries) = options.max_api_retries {
        vars.push(("CLAUDE_CODE_MAX_RETRIES".into(), retries.to_string()));
    }
    if options.enable_file_checkpointing {
        vars.push((FILE_CHECKPOINTING_ENV.into(), "true".into()));
    }
    // A removed variable goes for the SDK's own defaults too; the caller's env wins.
    vars.retain(|(key, _)| !options.env_remove.contains(key));
    vars.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(cwd) = &options.cwd {
        vars.push(("PWD".into(), cwd.display().to_string()));
    }
    SpawnEnv {
        vars,
        remove: options.env_remove.clone(),
        inherit: options.inherit_env.clone(),
    }
}

/// The environment as a key sees it: `PWD` is the claimed directory's business.
fn env_shape(env: &SpawnEnv) -> Value {
    let vars: Vec<&(String, String)> = env.vars.iter().filter(|(k, _)| k != "PWD").collect();
    json!({"vars": vars, "remove": env.remove, "inherit": env.inherit, "outer_run": std::env::var(reaper::RUN_MARKER_ENV).ok()})
}

/// What the CLI knows of the callbacks: the hooks it was told about at `initialize`,
/// whether permission prompts go to the SDK, and the in-process tools. Processes whose
/// callbacks have the same shape can take each other's runs (the callbacks themselves
/// are swapped in).
fn callback_shape(options: &ClaudeCodeOptions) -> Value {
    let (hooks, _) = initialize_hooks(&options.hooks);
    let servers: Vec<(String, Vec<String>)> = options
        .mcp_servers
        .iter()
        .filter_map(|(name, config)| match config {
            McpServerConfig::Sdk(server) => Some((name.clone(), server.tool_names())),
            _ => None,
        })
        .collect();
    json!({
        "hooks": hooks,
        "can_use_tool": options.can_use_tool.is_some(),
        "sdk_servers": servers,
        // A process mirrors to the store it was started with.
        "session_store": options
            .session_store
            .as_ref()
            .map(|s| format!("{:p}", std::sync::Arc::as_ptr(s) as *const ())),
    })
}

/// The `claim_session` request binding a spare to a run of these options.
fn claim_request(options: &ClaudeCodeOptions, cwd: Option<&std::path::Path>) -> Value {
    let mut claim = json!({"subtype": "claim_session"});
    if let Some(cwd) = cwd {
        claim["cwd"] = json!(cwd);
    }
    if let Some(mode) = cli_permission_mode(options) {
        claim["permission_mode"] = json!(mode);
    }
    if let Some(prompt) = &options.append_system_prompt {
        claim["append_system_prompt"] = json!(prompt);
    }
    if !options.add_dirs.is_empty() {
        claim["additional_directories"] = json!(options.add_dirs);
    }
    if !options.agents.is_empty() {
        claim["agents"] = json!(options.agents);
    }
    claim
}

/// The CLI's `--permission-mode` for these options, if any.
fn cli_permission_mode(options: &ClaudeCodeOptions) -> Option<&'static str> {
    let mode = options.permission_mode?;
    Some(match mode {
        // With someone to ask, Strict and ReadOnly run under the CLI's default mode:
        // what would need asking (a read outside the project) goes to the callback, and
        // the SDK's guard hook does the rest (Strict asks before every tool use;
        // ReadOnly's tool set has nothing that writes).
        PermissionMode::Strict | PermissionMode::ReadOnly if options.can_use_tool.is_some() => {
            "default"
        }
        other => other.cli_mode(),
    })
}

/// The CLI arguments for `options` (after the fixed stream-json flags).
pub(crate) fn cli_args(options: &ClaudeCodeOptions, version: &CliVersion) -> Vec<OsString> {
    // Every field, by name: a new option does not compile until it says which flag it
    // becomes, or why it becomes none.
    let ClaudeCodeOptions {
        max_turns,
        system_prompt,
        append_system_prompt,
        // The process's working directory, not a flag.
        cwd: _,
        // With what `skills` adds (below).
        allowed_tools: _,
        disallowed_tools,
        tools,
        permission_mode,
        model,
        fallback_model,
        output_format,
        verbose,
        // Enforced by the SDK.
        timeout: _,
        idle_timeout: _,
        continue_conversation,
        resume,
        fork_session,
        session_id,
        mcp_servers,
        // The environment (see `spawn_env`).
        env: _,
        env_remove: _,
        inherit_env: _,
        add_dirs,
        // With `sandbox` and `output_style` merged in (below).
        settings: _,
        setting_sources,
        include_partial_messages,
        max_budget_usd,
        effort,
        agents,
        // Which program, not a flag.
        cli_path: _,
        extra_args,
        // Enforced by the SDK's reader.
        max_line_bytes: _,
        // `CLAUDE_CODE_MAX_RETRIES` in the environment.
        max_api_retries: _,
        // The SDK's stderr drain.
        stderr: _,
        can_use_tool,
        // Sent with `initialize`.
        hooks: _,
        session_store,
        // The SDK's mirror sink.
        mirror: _,
        // `CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING` in the environment, and prompts
        // echoed with their ids.
        enable_file_checkpointing,
        thinking,
        task_budget,
        resume_session_at,
        persist_session,
        plugins,
        // In `--allowedTools` (`effective_allowed_tools`).
        skills: _,
        // In `--settings` (`effective_settings`).
        sandbox: _,
        output_style: _,
        agent,
        betas,
        strict_mcp_config,
        include_hook_events,
    } = options;
    let allowed_tools = &options.effective_allowed_tools();
    let settings = options.effective_settings();
    let mut args: Vec<OsString> = Vec::new();
    // `--name=value` as one argument: a value can never be read as a flag of its own,
    // whatever it starts with (the CLI's `--resume` takes an optional value).
    let mut flag = |name: &str, value: Option<String>| {
        args.push(match value {
            Some(v) => format!("--{name}={v}").into(),
            None => format!("--{name}").into(),
        });
    };
    if let Some(prompt) = system_prompt {
        flag("system-prompt", Some(prompt.clone()));
    }
    if let Some(prompt) = append_system_prompt {
        flag("append-system-prompt", Some(prompt.clone()));
    }
    if let Some(turns) = max_turns {
        flag("max-turns", Some(turns.to_string()));
    }
    if let Some(model) = model {
        flag("model", Some(model.clone()));
    }
    if let Some(model) = fallback_model {
        flag("fallback-model", Some(model.clone()));
    }

    let mode = *permission_mode;
    // Tools: ReadOnly narrows the set to the read tools.
    let tools: Option<Vec<String>> = match mode {
        Some(PermissionMode::ReadOnly) => Some(match tools {
            Some(user) => user.clone(),
            None => READ_ONLY_TOOLS.iter().map(|s| (*s).to_owned()).collect(),
        }),
        _ => tools.clone(),
    };
    if let Some(tools) = tools {
        flag("tools", Some(tools.join(",")));
    }
    let allowed: Vec<String> = match mode {
        // ReadOnly runs under dontAsk with the read tools only. They are not
        // pre-approved: the CLI lets them read the project on its own, and a read
        // elsewhere would need asking, which dontAsk denies.
        Some(PermissionMode::ReadOnly) => allowed_tools
            .iter()
            .filter(|t| !has_side_effects(t))
            .cloned()
            .collect(),
        _ => allowed_tools.clone(),
    };
    if !allowed.is_empty() {
        flag("allowedTools", Some(allowed.join(",")));
    }
    let mut disallowed = disallowed_tools.clone();
    if mode == Some(PermissionMode::ReadOnly) {
        // Belt and braces: even if a tool set slips through, these stay denied.
        disallowed.extend(SIDE_EFFECT_TOOLS.iter().map(|s| (*s).to_owned()));
    }
    if !disallowed.is_empty() {
        flag("disallowedTools", Some(disallowed.join(",")));
    }
    let has_callback = can_use_tool.is_some();
    if let Some(cli_mode) = cli_permission_mode(options) {
        flag("permission-mode", Some(cli_mode.to_owned()));
    }
    // Nobody can be asked (no permission callback): make the CLI deny what would
    // prompt instead of waiting, whatever the mode (a claim or `set_permission_mode`
    // may change it later).
    if !has_callback && version.supports_permission_prompts_flag() {
        flag("permission-prompts", Some("none".to_owned()));
    }
    if has_callback {
        flag("permission-prompt-tool", Some("stdio".to_owned()));
    }
    if *continue_conversation {
        flag("continue", None);
    }
    if let Some(id) = resume {
        flag("resume", Some(id.clone()));
    }
    if *fork_session {
        flag("fork-session", None);
    }
    if let Some(id) = session_id {
        flag("session-id", Some(id.clone()));
    }
    if !mcp_servers.is_empty() {
        let config = json!({ "mcpServers": mcp_servers });
        flag("mcp-config", Some(config.to_string()));
    }
    for dir in add_dirs {
        flag("add-dir", Some(dir.display().to_string()));
    }
    if let Some(settings) = settings {
        flag("settings", Some(settings));
    }
    if let Some(sources) = setting_sources {
        let joined: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
        flag("setting-sources", Some(joined.join(",")));
    }
    if *include_partial_messages {
        flag("include-partial-messages", None);
    }
    if let Some(budget) = max_budget_usd {
        flag("max-budget-usd", Some(budget.to_string()));
    }
    if let Some(effort) = effort {
        flag("effort", Some(effort.as_str().to_owned()));
    }
    if let Some(OutputFormat::JsonSchema { schema }) = output_format {
        flag("json-schema", Some(schema.to_string()));
    }
    if !agents.is_empty() {
        flag(
            "agents",
            Some(serde_json::to_string(agents).unwrap_or_default()),
        );
    }
    if *verbose {
        flag("debug", None);
    }
    if session_store.is_some() {
        flag("session-mirror", None);
    }
    if *enable_file_checkpointing {
        flag("replay-user-messages", None);
    }
    for (name, value) in thinking.iter().flat_map(|t| t.flags()) {
        flag(name, Some(value));
    }
    if let Some(budget) = task_budget {
        flag("task-budget", Some(budget.to_string()));
    }
    if let Some(at) = resume_session_at {
        flag("resume-session-at", Some(at.clone()));
    }
    if *persist_session == Some(false) {
        flag("no-session-persistence", None);
    }
    for crate::options::PluginConfig::Local { path } in plugins {
        flag("plugin-dir", Some(path.display().to_string()));
    }
    if let Some(agent) = agent {
        flag("agent", Some(agent.clone()));
    }
    if !betas.is_empty() {
        flag("betas", Some(betas.join(",")));
    }
    if *strict_mcp_config {
        flag("strict-mcp-config", None);
    }
    if *include_hook_events {
        flag("include-hook-events", None);
    }
    for (name, value) in extra_args {
        flag(name, value.clone());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PermissionDecision;
    use std::time::Duration;

    fn args(options: &ClaudeCodeOptions) -> Vec<String> {
        cli_args(options, &CliVersion::new(2, 1, 331))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn plan_for(options: &ClaudeCodeOptions) -> LaunchPlan {
        plan(
            options,
            std::path::Path::new("/bin/claude"),
            &CliVersion::new(2, 1, 331),
        )
        .unwrap()
    }

    #[test]
    fn flags_for_options() {
        let options = ClaudeCodeOptions::builder()
            .max_turns(3)
            .system_prompt("be brief")
            .allowed_tools(["Read", "Grep"])
            .model("claude-sonnet-4-5")
            .extra_arg("debug-file", Some("/tmp/x"))
            .extra_arg("strict-mcp-config", None)
            .setting_sources([])
            .build()
            .unwrap();
        let a = args(&options);
        let joined = a.join(" ");
        assert!(a.contains(&"--max-turns=3".to_owned()), "{joined}");
        assert!(
            a.contains(&"--system-prompt=be brief".to_owned()),
            "{joined}"
        );
        assert!(
            a.contains(&"--allowedTools=Read,Grep".to_owned()),
            "{joined}"
        );
        assert!(
            a.contains(&"--model=claude-sonnet-4-5".to_owned()),
            "{joined}"
        );
        assert!(a.contains(&"--debug-file=/tmp/x".to_owned()), "{joined}");
        assert!(a.contains(&"--strict-mcp-config".to_owned()));
        assert!(a.contains(&"--setting-sources=".to_owned()));
    }

    #[test]
    fn read_only_exposes_only_read_tools() {
        let options = ClaudeCodeOptions::builder()
            .permission_mode(PermissionMode::ReadOnly)
            .allowed_tools(["Grep"])
            .build()
            .unwrap();
        let a = args(&options);
        assert!(a.contains(&"--tools=Read,Grep,Glob".to_owned()), "{a:?}");
        // Only what the caller allowed is pre-approved, and nothing that writes.
        assert!(a.contains(&"--allowedTools=Grep".to_owned()), "{a:?}");
        assert!(a.contains(&"--permission-mode=dontAsk".to_owned()), "{a:?}");
    }

    #[test]
    fn spares_are_shared_across_directories_models_and_modes() {
        let a = ClaudeCodeOptions::builder()
            .max_turns(2)
            .permission_mode(PermissionMode::AcceptEdits)
            .build()
            .unwrap();
        let dir = std::env::temp_dir();
        let b = a
            .to_builder()
            .cwd(&dir)
            .model("opus")
            .append_system_prompt("be kind")
            .permission_mode(PermissionMode::AskForEdits)
            .build()
            .unwrap();
        let (pa, pb) = (plan_for(&a), plan_for(&b));
        let (sa, sb) = (pa.spare.unwrap(), pb.spare.unwrap());
        assert_eq!(sa.key, sb.key, "cwd, model, prompt and mode are claimed");
        assert!(sa.args.iter().any(|x| x == "--await-claim"));
        assert!(
            !sb.args
                .iter()
                .any(|x| x.to_string_lossy().starts_with("--model"))
        );
        assert_eq!(sb.claim["permission_mode"], "default");
        assert_eq!(sb.claim["append_system_prompt"], "be kind");
        assert_eq!(sb.model.as_deref(), Some("opus"));
        assert_ne!(pa.hot_key, pb.hot_key, "a hot process keeps its directory");

        // What the CLI reads at start-up separates spares.
        for other in [
            a.to_builder().max_turns(3).build().unwrap(),
            a.to_builder().env("X", "1").build().unwrap(),
            a.to_builder().tools(["Read"]).build().unwrap(),
            a.to_builder()
                .can_use_tool(|_, _, _| async { PermissionDecision::allow() })
                .build()
                .unwrap(),
        ] {
            assert_ne!(plan_for(&other).spare.unwrap().key, sa.key, "{other:?}");
        }
        // Only the shape of callbacks counts: another closure takes the same spare.
        let one = a
            .to_builder()
            .can_use_tool(|_, _, _| async { PermissionDecision::allow() })
            .build()
            .unwrap();
        let two = a
            .to_builder()
            .can_use_tool(|_, _, _| async { PermissionDecision::deny("no") })
            .build()
            .unwrap();
        assert_eq!(
            plan_for(&one).spare.unwrap().key,
            plan_for(&two).spare.unwrap().key
        );
        assert_ne!(one.fingerprint(), two.fingerprint());
        // The timeout is the SDK's business.
        let timed = a
            .to_builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(plan_for(&timed).spare.unwrap().key, sa.key);
    }

    #[test]
    fn flags_and_hook_events_newer_than_the_cli_are_refused() {
        let old = CliVersion::new(2, 1, 197);
        let plan_on = |options: &ClaudeCodeOptions, version: &CliVersion| {
            plan(options, std::path::Path::new("/bin/claude"), version)
        };
        let flagged = ClaudeCodeOptions::builder()
            .extra_arg("system-prompt-snapshot", Some("off"))
            .build()
            .unwrap();
        let err = plan_on(&flagged, &old).unwrap_err();
        assert!(err.is_unsupported_cli(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("--system-prompt-snapshot")
                && text.contains("2.1.331")
                && text.contains("2.1.197"),
            "{text}"
        );
        assert!(plan_on(&flagged, &CliVersion::new(2, 1, 331)).is_ok());

        let hooked = ClaudeCodeOptions::builder()
            .hook(
                crate::HookEvent::PreSkillShellCommand,
                crate::HookMatcher::all(),
                |_, _, _| async { Ok(crate::HookOutput::deny("no")) },
            )
            .build()
            .unwrap();
        for version in [old, CliVersion::new(2, 1, 331)] {
            let err = plan_on(&hooked, &version).unwrap_err();
            assert!(err.is_unsupported_cli());
            assert!(err.to_string().contains("PreSkillShellCommand"), "{err}");
            assert!(err.to_string().contains("2.1.332"), "{err}");
        }
        assert!(plan_on(&hooked, &CliVersion::new(2, 1, 332)).is_ok());

        // What the SDK emits itself on an old CLI passes: --permission-prompts is left
        // out there, not refused.
        let asking = ClaudeCodeOptions::builder()
            .permission_mode(PermissionMode::AskForEdits)
            .build()
            .unwrap();
        let planned = plan_on(&asking, &old).unwrap();
        assert!(
            !planned
                .args
                .iter()
                .any(|a| a.to_string_lossy().starts_with("--permission-prompts"))
        );
    }

    #[test]
    fn conversations_never_start_on_spares_and_keep_their_hot_key() {
        let base = ClaudeCodeOptions::builder().max_turns(2).build().unwrap();
        let resumed = base
            .to_builder()
            .resume("0c8b7a4e-7d1c-4b8e-9a51-2f0f3c9d6e11")
            .build()
            .unwrap();
        assert!(plan_for(&resumed).spare.is_none());
        assert_eq!(plan_for(&resumed).hot_key, plan_for(&base).hot_key);
        let old = plan(
            &base,
            std::path::Path::new("/bin/claude"),
            &CliVersion::new(2, 1, 197),
        )
        .unwrap();
        assert!(old.spare.is_none(), "2.1.197 has no --await-claim");
    }

    #[test]
    fn the_official_sdks_options_become_flags_settings_and_environment() {
        use crate::options::{PluginConfig, SandboxSettings, Skills, ThinkingConfig};
        let dir = std::env::temp_dir();
        let options = ClaudeCodeOptions::builder()
            .allowed_tools(["Read"])
            .skills(Skills::Only(vec!["pdf".into(), "xlsx".into()]))
            .settings(r#"{"model": "opus", "sandbox": {"enabled": false}}"#)
            .sandbox(SandboxSettings::enabled())
            .output_style("Explanatory")
            .thinking(ThinkingConfig::adaptive())
            .task_budget(1000)
            .resume("0c8b7a4e-7d1c-4b8e-9a51-2f0f3c9d6e11")
            .resume_session_at("5b0f0f4e-2d7c-4b61-9f0e-0d3c2f6b1a77")
            .persist_session(false)
            .plugin(PluginConfig::local(&dir))
            .main_agent("reviewer")
            .beta("a")
            .beta("b")
            .strict_mcp_config(true)
            .include_hook_events(true)
            .enable_file_checkpointing(true)
            .build()
            .unwrap();
        let a = args(&options);
        for expected in [
            "--allowedTools=Read,Skill(pdf),Skill(xlsx)".to_owned(),
            "--thinking=adaptive".to_owned(),
            "--task-budget=1000".to_owned(),
            "--resume-session-at=5b0f0f4e-2d7c-4b61-9f0e-0d3c2f6b1a77".to_owned(),
            "--no-session-persistence".to_owned(),
            format!("--plugin-dir={}", dir.display()),
            "--agent=reviewer".to_owned(),
            "--betas=a,b".to_owned(),
            "--strict-mcp-config".to_owned(),
            "--include-hook-events".to_owned(),
            "--replay-user-messages".to_owned(),
        ] {
            assert!(a.contains(&expected), "{expected} in {a:?}");
        }
        // sandbox and output_style merged over the given settings.
        let settings = a
            .iter()
            .find_map(|x| x.strip_prefix("--settings="))
            .unwrap();
        let settings: Value = serde_json::from_str(settings).unwrap();
        assert_eq!(
            settings,
            json!({"model": "opus", "sandbox": {"enabled": true}, "outputStyle": "Explanatory"})
        );
        let env = spawn_env(&options);
        assert!(
            env.vars
                .contains(&(FILE_CHECKPOINTING_ENV.to_owned(), "true".to_owned())),
            "{env:?}"
        );
        // Without them: none of it.
        let plain = args(
            &ClaudeCodeOptions::builder()
                .settings("/etc/s.json")
                .build()
                .unwrap(),
        );
        assert!(plain.contains(&"--settings=/etc/s.json".to_owned()));
        assert!(!plain.iter().any(|x| x.contains("replay-user-messages")
            || x.contains("thinking")
            || x.contains("Skill")));
        assert!(
            !spawn_env(&ClaudeCodeOptions::default())
                .vars
                .iter()
                .any(|(k, _)| k == FILE_CHECKPOINTING_ENV)
        );
        // Each of them changes the fingerprint and the keys a process is reused by.
        let base = ClaudeCodeOptions::default();
        for other in [
            base.to_builder()
                .enable_file_checkpointing(true)
                .build()
                .unwrap(),
            base.to_builder()
                .thinking(ThinkingConfig::Disabled)
                .build()
                .unwrap(),
            base.to_builder().skills(Skills::All).build().unwrap(),
            base.to_builder().output_style("Learning").build().unwrap(),
        ] {
            assert_ne!(base.fingerprint(), other.fingerprint(), "{other:?}");
            assert_ne!(
                plan_for(&base).hot_key,
                plan_for(&other).hot_key,
                "{other:?}"
            );
        }
    }

    #[test]
    fn the_official_sdks_options_are_validated() {
        use crate::options::{PluginConfig, SandboxSettings, Skills, ThinkingConfig};
        let bad = [
            ClaudeCodeOptions::builder()
                .settings("/etc/settings.json")
                .sandbox(SandboxSettings::enabled())
                .build(),
            ClaudeCodeOptions::builder()
                .resume_session_at("5b0f0f4e-2d7c-4b61-9f0e-0d3c2f6b1a77")
                .build(),
            ClaudeCodeOptions::builder()
                .resume("0c8b7a4e-7d1c-4b8e-9a51-2f0f3c9d6e11")
                .resume_session_at("--debug")
                .build(),
            ClaudeCodeOptions::builder().task_budget(0).build(),
            ClaudeCodeOptions::builder()
                .thinking(ThinkingConfig::budget(0))
                .build(),
            ClaudeCodeOptions::builder()
                .plugin(PluginConfig::local("/no/such/plugin"))
                .build(),
            ClaudeCodeOptions::builder()
                .skills(Skills::Only(vec!["a b".into()]))
                .build(),
            ClaudeCodeOptions::builder().beta("a,b").build(),
            ClaudeCodeOptions::builder().main_agent("--x").build(),
        ];
        for result in bad {
            let err = result.unwrap_err();
            assert!(err.is_invalid_options(), "{err:?}");
        }
    }
}
