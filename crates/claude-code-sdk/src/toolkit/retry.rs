//! Retrying transient failures, without ever repeating side effects blindly.
//!
//! ```no_run
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, RetryPolicy, query_with_retry};
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let policy = RetryPolicy::exponential(3, Duration::from_millis(500))
//!     .max_delay(Duration::from_secs(20))
//!     .on_retry(|event| eprintln!("attempt {} failed ({}); retrying in {:?}", event.attempt, event.error, event.delay));
//! let messages = query_with_retry("Summarize README.md", ClaudeCodeOptions::default(), policy).await?;
//! # Ok(()) }
//! ```
//!
//! # What is retried
//!
//! Only [transient](crate::Error::is_transient) failures: connection failures,
//! timeouts, and API statuses 408, 409, 429, 5xx and 529. Never an authentication failure
//! (401), a bad request, a permission denial, `max_turns` or a budget limit.
//!
//! The wait before retry *n* (n = 1, 2, ...) is drawn uniformly from zero to
//! `min(max_delay, base × 2ⁿ⁻¹)` ("full jitter", which spreads out clients that failed
//! together), and is never shorter than a `retry-after` the API asked for.
//! The exponential schedule comes from the `backon` crate.
//!
//! # Side effects
//!
//! An attempt in which a tool with side effects already ran (a shell command, a file
//! write or edit, or any MCP tool, since the SDK cannot know what those do) is not
//! started over: the failure becomes a
//! [`SideEffectsNotRepeatable`](crate::ErrorKind::SideEffectsNotRepeatable) error
//! that names the tools ([`Error::tools_ran`](crate::Error::tools_ran)) and keeps the
//! original error as its source. With [`RetryPolicy::resume_after_tools`], the retry
//! instead resumes the same session (`resume`) with a prompt asking the model to
//! continue where it stopped, so the model sees what already happened.
//!
//! # On any runner
//!
//! [`Retrying`] wraps any [`Runner`] (a [`QueryPool`](crate::QueryPool), say) and is a
//! runner itself, so it composes with the cache and conversations. A retried run's
//! messages arrive once an attempt has succeeded: the messages of a failed attempt
//! cannot be taken back from a stream.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use futures::future::BoxFuture;

use crate::error::{Error, ErrorKind, Result};
use crate::message::{ContentBlock, Message};
use crate::options::{ClaudeCodeOptions, has_side_effects};
use crate::prompt::Prompt;
use crate::runner::{DirectRunner, Run, Runner};
use crate::util::lock;

/// The prompt a resumed attempt sends by default.
pub const DEFAULT_RESUME_PROMPT: &str = "Your previous attempt at this task was cut off by an error. \
Continue the task from where it stopped. Do not repeat steps that already completed.";

/// A retry that is about to happen.
#[derive(Debug)]
#[non_exhaustive]
pub struct RetryEvent<'a> {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// Why it failed.
    pub error: &'a Error,
    /// How long the SDK waits before the next attempt.
    pub delay: Duration,
    /// Whether the next attempt resumes the failed attempt's session.
    pub resumes: bool,
}

type RetryCallback = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// How [`query_with_retry`] retries.
#[derive(Clone)]
#[must_use]
pub struct RetryPolicy {
    max_retries: u32,
    base: Duration,
    max_delay: Duration,
    resume_after_tools: bool,
    resume_prompt: String,
    on_retry: Option<RetryCallback>,
}

impl RetryPolicy {
    /// Up to `max_retries` retries after the first attempt, waiting about `base`, then
    /// `2 × base`, `4 × base`, ... (with full jitter), at most 30 s by default.
    pub fn exponential(max_retries: u32, base: Duration) -> Self {
        RetryPolicy {
            max_retries,
            base,
            max_delay: Duration::from_secs(30),
            resume_after_tools: false,
            resume_prompt: DEFAULT_RESUME_PROMPT.to_owned(),
            on_retry: None,
        }
    }

    /// No retries.
    pub fn none() -> Self {
        RetryPolicy::exponential(0, Duration::ZERO)
    }

    /// The longest wait between attempts.
    pub fn max_delay(mut self, ceiling: Duration) -> Self {
        self.max_delay = ceiling;
        self
    }

    /// After a failure in an attempt that already ran tools with side effects, resume
    /// its session instead of refusing to retry.
    pub fn resume_after_tools(mut self) -> Self {
        self.resume_after_tools = true;
        self
    }

    /// The prompt a resumed attempt sends (default [`DEFAULT_RESUME_PROMPT`]).
    pub fn resume_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.resume_prompt = prompt.into();
        self
    }

    /// Called before each retry with the attempt, the error and the wait. Retries are
    /// also logged as `tracing` warnings.
    pub fn on_retry(mut self, callback: impl Fn(&RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(callback));
        self
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.max_delay.max(self.base))
            .with_max_times(self.max_retries as usize)
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("base", &self.base)
            .field("max_delay", &self.max_delay)
            .field("resume_after_tools", &self.resume_after_tools)
            .finish_non_exhaustive()
    }
}

/// Full jitter: a uniform draw from zero to `ceiling`.
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// Tools with side effects that ran, or may have: every side-effect tool use of the
/// run except those the result lists as denied. A tool use without a result counts,
/// since the run may have ended while it was running.
pub(crate) fn side_effect_tools_ran(messages: &[Message]) -> Vec<String> {
    let denied: Vec<&str> = messages
        .iter()
        .filter_map(Message::as_result)
        .flat_map(|r| r.permission_denials.iter().map(|d| d.tool_use_id.as_str()))
        .collect();
    messages
        .iter()
        .filter_map(Message::as_assistant)
        .flat_map(|a| &a.content)
        .filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, .. }
                if has_side_effects(name) && !denied.contains(&id.as_str()) =>
            {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

struct AttemptState {
    attempt: u32,
    resume: Option<String>,
}

/// Runs a prompt, retrying transient failures per `policy`, and returns the messages
/// of the successful attempt. Each attempt starts a new CLI; see [`Retrying`] for
/// retries on any runner.
///
/// # Errors
///
/// The last attempt's error when retries are exhausted; a non-transient error at
/// once; [`SideEffectsNotRepeatable`](ErrorKind::SideEffectsNotRepeatable) when a
/// failed attempt had already run tools with side effects and the policy does not
/// resume.
pub async fn query_with_retry(
    prompt: impl Into<Prompt>,
    options: ClaudeCodeOptions,
    policy: RetryPolicy,
) -> Result<Vec<Message>> {
    retry_on(&DirectRunner, prompt.into(), options, &policy, false).await
}

/// A [`Runner`] that retries the runs of another per a [`RetryPolicy`].
///
/// ```no_run
/// use std::time::Duration;
/// use claude_code_sdk::{ClaudeCodeOptions, PoolConfig, QueryPool, RetryPolicy, Retrying, Runner};
///
/// # async fn run() -> claude_code_sdk::Result<()> {
/// let runner = Retrying::new(
///     QueryPool::new(PoolConfig::default()),
///     RetryPolicy::exponential(3, Duration::from_millis(500)),
/// );
/// let messages = runner
///     .run("Summarize README.md".into(), ClaudeCodeOptions::default())
///     .await?
///     .collect_all()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Retrying<R> {
    inner: R,
    policy: RetryPolicy,
}

impl<R: Runner> Retrying<R> {
    /// Retries `inner`'s runs per `policy`.
    pub fn new(inner: R, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    /// The runner whose runs are retried.
    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Runner> Runner for Retrying<R> {
    fn run(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        Box::pin(async move {
            Ok(
                match retry_on(&self.inner, prompt, options, &self.policy, false).await {
                    Ok(messages) => Run::from_messages(messages, None),
                    Err(err) => Run::from_messages(Vec::new(), Some(err)),
                },
            )
        })
    }

    fn run_turn(&self, prompt: Prompt, options: ClaudeCodeOptions) -> BoxFuture<'_, Result<Run>> {
        Box::pin(async move {
            Ok(
                match retry_on(&self.inner, prompt, options, &self.policy, true).await {
                    Ok(messages) => Run::from_messages(messages, None),
                    Err(err) => Run::from_messages(Vec::new(), Some(err)),
                },
            )
        })
    }

    fn end_conversation(&self, session_id: &str) {
        self.inner.end_conversation(session_id);
    }
}

async fn retry_on<R: Runner + ?Sized>(
    runner: &R,
    prompt: Prompt,
    options: ClaudeCodeOptions,
    policy: &RetryPolicy,
    turn: bool,
) -> Result<Vec<Message>> {
    let state = Arc::new(Mutex::new(AttemptState {
        attempt: 0,
        resume: None,
    }));
    let attempt = || {
        let state = Arc::clone(&state);
        let options = options.clone();
        let prompt = prompt.clone();
        let policy = policy.clone();
        async move {
            let (number, resume) = {
                let mut s = lock(&state);
                s.attempt += 1;
                (s.attempt, s.resume.clone())
            };
            let (options, prompt) = match resume {
                Some(session) => (
                    options.to_builder().resume(session).build()?,
                    Prompt::Text(policy.resume_prompt.clone()),
                ),
                None => (options, prompt),
            };
            let started = if turn {
                runner.run_turn(prompt, options).await
            } else {
                runner.run(prompt, options).await
            };
            let (messages, error) = match started {
                Ok(run) => run.collect_messages().await,
                Err(err) => (Vec::new(), Some(err)),
            };
            let Some(error) = error else {
                return Ok(messages);
            };
            if !error.is_transient() {
                return Err(error);
            }
            let ran = side_effect_tools_ran(&messages);
            if ran.is_empty() {
                return Err(error);
            }
            let session = error.session_id().map(str::to_owned).or_else(|| {
                messages
                    .iter()
                    .find_map(|m| m.session_id().map(str::to_owned))
            });
            match session {
                Some(session) if policy.resume_after_tools => {
                    lock(&state).resume = Some(session);
                    Err(error.with_tools_ran(ran))
                }
                _ => Err(Error::new(
                    ErrorKind::SideEffectsNotRepeatable,
                    format!(
                        "attempt {number} failed after {} ran (or may have); not retrying from \
                         scratch (RetryPolicy::resume_after_tools() continues the session instead)",
                        ran.join(", ")
                    ),
                )
                .with_tools_ran(ran)
                .with_source(error)),
            }
        }
    };
    attempt
        .retry(policy.backoff().build())
        .when(Error::is_transient)
        .adjust(|error: &Error, delay| {
            delay.map(|ceiling| {
                let wait = full_jitter(ceiling);
                error.retry_after().map_or(wait, |asked| wait.max(asked))
            })
        })
        .notify(|error: &Error, delay: Duration| {
            let s = lock(&state);
            let event = RetryEvent {
                attempt: s.attempt,
                error,
                delay,
                resumes: s.resume.is_some(),
            };
            tracing::warn!(attempt = event.attempt, ?delay, resumes = event.resumes, %error, "retrying a failed query");
            if let Some(callback) = &policy.on_retry {
                callback(&event);
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_under_the_ceiling() {
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn schedule_doubles_up_to_the_ceiling() {
        let policy = RetryPolicy::exponential(5, Duration::from_millis(100))
            .max_delay(Duration::from_millis(500));
        let delays: Vec<Duration> = policy.backoff().build().collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn side_effects_count_tools_that_ran_or_may_have() {
        let lines = [
            // Read has no side effects; Bash ran; Write was cut off before its result;
            // Edit was denied; an MCP tool may do anything.
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Read","input":{}},{"type":"tool_use","id":"t2","name":"Bash","input":{}},{"type":"tool_use","id":"t3","name":"Write","input":{}},{"type":"tool_use","id":"t4","name":"Edit","input":{}},{"type":"tool_use","id":"t5","name":"mcp__db__query","input":{}}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"x"},{"type":"tool_result","tool_use_id":"t2","content":"ok"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"session_id":"s","permission_denials":[{"tool_name":"Edit","tool_use_id":"t4","tool_input":{}}]}"#,
        ];
        let messages: Vec<Message> = lines
            .iter()
            .map(|l| Message::from_json(l).unwrap())
            .collect();
        assert_eq!(
            side_effect_tools_ran(&messages),
            ["Bash", "Write", "mcp__db__query"]
        );
    }
}
