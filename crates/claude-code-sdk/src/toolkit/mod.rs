//! The web-application toolkit: everything here runs on a [`Runner`](crate::Runner), so
//! the pieces compose (`cache → retry → pool`).
//!
//! | module | what it holds |
//! |---|---|
//! | [`pool`] | [`QueryPool`](crate::QueryPool): the bound on processes, spares, hot conversations, reuse |
//! | [`retry`] | [`Retrying`](crate::Retrying), [`query_with_retry`](crate::query_with_retry): transient failures retried, side effects never repeated blindly |
//! | [`cache`] | [`ResponseCache`](crate::ResponseCache): answers keyed by everything that can change them, single flight |
//! | [`conversation`] | [`ConversationManager`](crate::ConversationManager): named conversations that continue exactly, with their store |
//! | [`scoped`] | [`claude_session`](crate::claude_session): a conversation that cleans up after itself |

pub mod cache;
pub mod conversation;
pub mod pool;
pub mod retry;
pub mod scoped;
