//! [`ResponseCache`]: answers kept for a while, keyed by everything that can change
//! them, shared by concurrent identical queries.
//!
//! ```no_run
//! use std::time::Duration;
//! use claude_code_sdk::{ClaudeCodeOptions, ResponseCache, cached_query};
//!
//! # async fn run() -> claude_code_sdk::Result<()> {
//! let cache = ResponseCache::new(64 * 1024 * 1024, Duration::from_secs(600));
//! let options = ClaudeCodeOptions::builder().cwd("/srv/project").build()?;
//! let first = cached_query(&cache, "What does this project do?", options.clone()).await?;
//! let again = cached_query(&cache, "What does this project do?", options).await?; // no process
//! assert_eq!(first.len(), again.len());
//! println!("{:?}", cache.stats());
//! # Ok(()) }
//! ```
//!
//! # The key
//!
//! The prompt and [`ClaudeCodeOptions::fingerprint`]: the model, the system prompts,
//! the tools allowed and disallowed, the permission mode, the working directory, max
//! turns, agents, MCP servers, the JSON schema, the environment, and more. Two projects
//! never share an answer. (A key of only `max_turns`, `system_prompt` and
//! `permission_mode` would hand one project's answer to another.)
//!
//! # What is cached
//!
//! Only runs that succeeded and changed nothing: no tool with side effects ran (shell,
//! file writes and edits, MCP tools). [`ResponseCacheBuilder::cache_side_effects`]
//! opts into caching those too. Runs that name a conversation (`resume`,
//! `continue_conversation`, `session_id`) are never cached: their answer depends on a
//! conversation the key cannot see.
//!
//! # On any runner
//!
//! [`ResponseCache::query`] takes the [`Runner`] a miss runs on: a
//! [`QueryPool`](crate::QueryPool), a [`Retrying`](crate::Retrying) one, your own.
//! [`cached_query`] starts a new CLI for each miss.
//!
//! # Single flight
//!
//! Concurrent identical queries share one run: the first starts the CLI, the others
//! wait for its messages. They count as hits. A failed run is shared the same way and
//! not cached.
//!
//! # Bounds
//!
//! Entries expire after the TTL; the cache holds at most `max_bytes` of raw message
//! lines (least recently used entries go first). Both are counted as evictions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::ClaudeCodeOptions;
use crate::prompt::Prompt;
use crate::runner::{DirectRunner, Runner};
use crate::toolkit::retry::side_effect_tools_ran;

/// Figures of a [`ResponseCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Queries answered without starting a run (including those that shared a
    /// concurrent identical run).
    pub hits: u64,
    /// Queries that started a run.
    pub misses: u64,
    /// Entries removed by TTL or the size bound.
    pub evictions: u64,
    /// Entries now. The cache applies insertions and evictions lazily; call
    /// [`ResponseCache::run_pending_tasks`] first for an exact figure.
    pub entries: u64,
    /// Runs not cached because they had side effects or resumed a conversation.
    pub uncacheable: u64,
}

/// Builds a [`ResponseCache`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ResponseCacheBuilder {
    max_bytes: u64,
    ttl: Duration,
    cache_side_effects: bool,
}

impl ResponseCacheBuilder {
    /// The most raw message bytes kept (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long an answer stays (default 10 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Also cache runs in which tools with side effects ran.
    pub fn cache_side_effects(mut self, yes: bool) -> Self {
        self.cache_side_effects = yes;
        self
    }

    /// The cache.
    pub fn build(self) -> ResponseCache {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        let cache = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|_key: &String, value: &Arc<Vec<Message>>| {
                // The lines' lengths: `raw()` would rebuild a long line it did not keep.
                let bytes: usize = value.iter().map(Message::line_len).sum();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(self.ttl)
            .eviction_listener(move |_key, _value, cause| {
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        ResponseCache {
            inner: Arc::new(CacheInner {
                cache,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                uncacheable: AtomicU64::new(0),
                evictions,
                cache_side_effects: self.cache_side_effects,
            }),
        }
    }
}

struct CacheInner {
    cache: Cache<String, Arc<Vec<Message>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    uncacheable: AtomicU64,
    evictions: Arc<AtomicU64>,
    cache_side_effects: bool,
}

/// A response cache. Cheap to clone; clones share entries. See the [module
/// docs](crate::toolkit::cache).
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<CacheInner>,
}

/// Why the single-flight initializer did not produce a cacheable value.
enum NotCached {
    /// The run succeeded but must not be cached; its messages are shared as they are.
    Uncacheable(Vec<Message>),
    /// The run failed.
    Failed(Error),
}

impl ResponseCache {
    /// A cache of at most `max_bytes` of messages, each kept for `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> ResponseCache {
        ResponseCache::builder()
            .max_bytes(max_bytes)
            .ttl(ttl)
            .build()
    }

    /// A builder with the defaults: 64 MiB, 10 minutes, no side effects cached.
    pub fn builder() -> ResponseCacheBuilder {
        ResponseCacheBuilder {
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(600),
            cache_side_effects: false,
        }
    }

    /// The cache key of a prompt under options: a SHA-256 over the prompt and
    /// [`ClaudeCodeOptions::fingerprint`].
    pub fn key(prompt: &Prompt, options: &ClaudeCodeOptions) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(prompt.to_content().to_string().as_bytes());
        hasher.update([0]);
        hasher.update(options.fingerprint().as_bytes());
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Runs the prompt on `runner`, or answers from the cache. The messages are the
    /// same list a fresh run returns (for a hit, the very list of the run that filled
    /// the entry).
    ///
    /// # Errors
    ///
    /// The run's error (shared with concurrent identical queries); errors are never cached.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future of the query that runs drops its run (and its CLI); the
    /// queries waiting on it then run it themselves.
    pub async fn query<R: Runner + ?Sized>(
        &self,
        runner: &R,
        prompt: impl Into<Prompt>,
        options: ClaudeCodeOptions,
    ) -> Result<Vec<Message>> {
        let prompt = prompt.into();
        if options.names_conversation() {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            self.inner.uncacheable.fetch_add(1, Ordering::Relaxed);
            return runner.run(prompt, options).await?.collect_all().await;
        }
        let key = ResponseCache::key(&prompt, &options);
        let ran = Arc::new(AtomicBool::new(false));
        let ran_here = Arc::clone(&ran);
        let inner = Arc::clone(&self.inner);
        let outcome = self
            .inner
            .cache
            .try_get_with(key, async move {
                ran_here.store(true, Ordering::SeqCst);
                inner.misses.fetch_add(1, Ordering::Relaxed);
                let run = runner
                    .run(prompt, options)
                    .await
                    .map_err(NotCached::Failed)?;
                let messages = run.collect_all().await.map_err(NotCached::Failed)?;
                if !inner.cache_side_effects && !side_effect_tools_ran(&messages).is_empty() {
                    inner.uncacheable.fetch_add(1, Ordering::Relaxed);
                    return Err(NotCached::Uncacheable(messages));
                }
                Ok(Arc::new(messages))
            })
            .await;
        if !ran.load(Ordering::SeqCst) {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(messages) => Ok(messages.as_ref().clone()),
            Err(shared) => match shared.as_ref() {
                NotCached::Uncacheable(messages) => Ok(messages.clone()),
                NotCached::Failed(err) => Err(err.duplicate()),
            },
        }
    }

    /// Removes the entry for a prompt under options.
    pub async fn invalidate(&self, prompt: impl Into<Prompt>, options: &ClaudeCodeOptions) {
        let key = ResponseCache::key(&prompt.into(), options);
        self.inner.cache.invalidate(&key).await;
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.inner.cache.invalidate_all();
    }

    /// Hits, misses, evictions and entries.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            entries: self.inner.cache.entry_count(),
            uncacheable: self.inner.uncacheable.load(Ordering::Relaxed),
        }
    }

    /// Applies pending expirations and evictions now (moka does this lazily); useful
    /// before reading [`stats`](ResponseCache::stats).
    pub async fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks().await;
    }
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("stats", &self.stats())
            .finish()
    }
}

/// [`ResponseCache::query`] with a new CLI for each run, as the Python SDK's
/// `cached_query(prompt, options)`.
///
/// # Errors
///
/// See [`ResponseCache::query`].
pub async fn cached_query(
    cache: &ResponseCache,
    prompt: impl Into<Prompt>,
    options: ClaudeCodeOptions,
) -> Result<Vec<Message>> {
    cache.query(&DirectRunner, prompt, options).await
}
