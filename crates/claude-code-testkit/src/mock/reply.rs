//! What the mock answers: the [`Reply`] builder and its rendering as Anthropic SSE,
//! JSON or an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};

/// Input tokens reported when a reply does not set [`Reply::usage`].
pub const DEFAULT_INPUT_TOKENS: u64 = 100;
/// Output tokens reported when a reply does not set [`Reply::usage`].
pub const DEFAULT_OUTPUT_TOKENS: u64 = 10;

/// One scripted answer of the mock model: content blocks streamed as Anthropic SSE, or
/// an HTTP error.
///
/// ```
/// use std::time::Duration;
/// use claude_code_testkit::Reply;
/// use serde_json::json;
///
/// let _call = Reply::text("Let me look.").then_tool_use("Bash", json!({"command": "ls"}));
/// let _slow = Reply::text("a long answer").chunk_delay(Duration::from_millis(20));
/// let _busy = Reply::error(429).retry_after(1);
/// let _deep = Reply::thinking("hmm").then_text("42").usage(1_000, 20);
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    body: Body,
    delay: Duration,
    chunk_delay: Duration,
    stop_reason: Option<String>,
    usage: Option<(u64, u64)>,
    retry_after: Option<u64>,
    mid_stream_error: Option<String>,
    cut: Option<StreamCut>,
    auto_structured_output: bool,
}

/// How [`Reply::stall_mid_stream`] and [`Reply::reset_mid_stream`] break an answer
/// after its first delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamCut {
    /// The connection stays open and no byte follows.
    Stall,
    /// The connection is closed without the rest of the response.
    Reset,
}

#[derive(Clone, Debug)]
enum Body {
    Blocks(Vec<Block>),
    Error {
        status: u16,
        error_type: String,
        message: String,
    },
}

#[derive(Clone, Debug)]
enum Block {
    Text(Arc<str>),
    Thinking(Arc<str>),
    ToolUse { name: String, input: Value },
}

impl Reply {
    fn blocks(block: Block) -> Self {
        Self {
            body: Body::Blocks(vec![block]),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            stop_reason: None,
            usage: None,
            retry_after: None,
            mid_stream_error: None,
            cut: None,
            auto_structured_output: true,
        }
    }

    /// A text block. Streamed as several `text_delta`s (word by word for short texts,
    /// in pieces of up to 32 KiB for long ones); texts of many megabytes are fine.
    pub fn text(text: impl Into<String>) -> Self {
        Self::blocks(Block::Text(text.into().into()))
    }

    /// A thinking block with a (mock) signature, streamed as `thinking_delta`s and a
    /// `signature_delta`.
    pub fn thinking(text: impl Into<String>) -> Self {
        Self::blocks(Block::Thinking(text.into().into()))
    }

    /// A `tool_use` block calling `name` with `input`. Its id, `toolu_mock_N`, is
    /// generated when the reply is sent (unique per mock). The stop reason becomes
    /// `tool_use`.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Self::blocks(Block::ToolUse {
            name: name.into(),
            input,
        })
    }

    /// A call of the `StructuredOutput` tool with `value`: how the model answers a
    /// `--json-schema` run in CLI 2.1.331 (the CLI ends the turn with it and reports
    /// `value` as the result's `structured_output`).
    pub fn structured_output(value: Value) -> Self {
        Self::tool_use(crate::STRUCTURED_OUTPUT_TOOL, value)
    }

    /// An HTTP error with an Anthropic error body,
    /// `{"type":"error","error":{"type":..,"message":"mock <type>"}}`, whose type
    /// follows the status: 400 `invalid_request_error`, 401 `authentication_error`,
    /// 403 `permission_error`, 404 `not_found_error`, 413 `request_too_large`,
    /// 429 `rate_limit_error`, 500 and other 5xx `api_error`, 529 `overloaded_error`.
    pub fn error(status: u16) -> Self {
        let error_type = error_type_for(status);
        Self::error_with(status, error_type, format!("mock {error_type}"))
    }

    /// An HTTP error with an explicit error type and message.
    pub fn error_with(
        status: u16,
        error_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            body: Body::Error {
                status,
                error_type: error_type.into(),
                message: message.into(),
            },
            ..Self::text("")
        }
    }

    fn then(mut self, block: Block) -> Self {
        match &mut self.body {
            Body::Blocks(blocks) => blocks.push(block),
            Body::Error { status, .. } => {
                panic!("Reply::error({status}) cannot carry content blocks")
            }
        }
        self
    }

    /// Appends a text block to the same assistant message.
    ///
    /// # Panics
    /// On an error reply.
    pub fn then_text(self, text: impl Into<String>) -> Self {
        self.then(Block::Text(text.into().into()))
    }

    /// Appends a thinking block to the same assistant message.
    ///
    /// # Panics
    /// On an error reply.
    pub fn then_thinking(self, text: impl Into<String>) -> Self {
        self.then(Block::Thinking(text.into().into()))
    }

    /// Appends a `tool_use` block to the same assistant message (parallel tool calls
    /// when there are several).
    ///
    /// # Panics
    /// On an error reply.
    pub fn then_tool_use(self, name: impl Into<String>, input: Value) -> Self {
        self.then(Block::ToolUse {
            name: name.into(),
            input,
        })
    }

    /// Appends a `StructuredOutput` call with `value`.
    ///
    /// # Panics
    /// On an error reply.
    pub fn then_structured_output(self, value: Value) -> Self {
        self.then_tool_use(crate::STRUCTURED_OUTPUT_TOOL, value)
    }

    /// Sets a `retry-after` header (seconds) on an error reply, as a 429 has.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Waits this long before answering (before the status line is sent).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Waits this long before each streamed delta: a slow stream.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Overrides the stop reason (default: `tool_use` when the reply calls a tool, else
    /// `end_turn`), e.g. `max_tokens` or `refusal`.
    pub fn stop_reason(mut self, reason: impl Into<String>) -> Self {
        self.stop_reason = Some(reason.into());
        self
    }

    /// Sets the reported token usage (default
    /// [`DEFAULT_INPUT_TOKENS`]/[`DEFAULT_OUTPUT_TOKENS`]).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Some((input_tokens, output_tokens));
        self
    }

    /// Breaks the stream: after the first delta of the first block, sends an SSE
    /// `error` event of this type (e.g. `overloaded_error`) and ends the response.
    /// A non-streaming request gets the whole message instead.
    ///
    /// CLI 2.1.331 then silently sends the same request again without streaming; that
    /// retry is a new turn request, matched like any other (a rule with `times(1)` is
    /// used up by then, so the next rule or the default reply answers it).
    pub fn mid_stream_error(mut self, error_type: impl Into<String>) -> Self {
        self.mid_stream_error = Some(error_type.into());
        self
    }

    /// A stream that stops sending bytes: after the first delta of the first block
    /// nothing more comes, and the connection stays open. A non-streaming request gets
    /// the status line and half its body, then nothing.
    pub fn stall_mid_stream(mut self) -> Self {
        self.cut = Some(StreamCut::Stall);
        self
    }

    /// A connection reset mid-stream: after the first delta of the first block the
    /// server closes the connection without ending the response (no final chunk). A
    /// non-streaming request gets half its body, then the same.
    pub fn reset_mid_stream(mut self) -> Self {
        self.cut = Some(StreamCut::Reset);
        self
    }

    /// Sends the reply exactly as built. By default, when a request offers the
    /// `StructuredOutput` tool (a `--json-schema` run) and a reply calls no tool, the
    /// mock appends a `StructuredOutput` call with a value conforming to the tool's
    /// schema, so the run succeeds; this turns that off (to test the CLI's
    /// `[structured-output-enforce]` retries, for example).
    pub fn without_structured_output(mut self) -> Self {
        self.auto_structured_output = false;
        self
    }

    /// Whether this is an HTTP error reply.
    pub fn is_error(&self) -> bool {
        matches!(self.body, Body::Error { .. })
    }

    /// Appends a `StructuredOutput` call if `schema` is offered and the reply calls no
    /// tool (see [`Reply::without_structured_output`]).
    pub(crate) fn complete_structured_output(self, schema: Option<&Value>) -> Self {
        let calls_tool = match &self.body {
            Body::Blocks(blocks) => blocks.iter().any(|b| matches!(b, Block::ToolUse { .. })),
            Body::Error { .. } => true,
        };
        match schema {
            Some(schema) if self.auto_structured_output && !calls_tool => {
                self.then_structured_output(crate::conforming_value(schema))
            }
            _ => self,
        }
    }

    pub(crate) fn delay_before(&self) -> Duration {
        self.delay
    }

    /// Fixes ids and signatures, and renders the answer for a request.
    pub(crate) fn render(&self, counters: &Counters, model: &str, streaming: bool) -> Rendered {
        let blocks = match &self.body {
            Body::Error {
                status,
                error_type,
                message,
            } => {
                return Rendered::Error {
                    status: *status,
                    retry_after: self.retry_after,
                    body: error_body(error_type, message),
                };
            }
            Body::Blocks(blocks) => blocks,
        };
        let resolved: Vec<Resolved> = blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => Resolved::Text(text.clone()),
                Block::Thinking(text) => Resolved::Thinking {
                    text: text.clone(),
                    signature: format!("mock-signature-{}", counters.next_signature()),
                },
                Block::ToolUse { name, input } => Resolved::ToolUse {
                    id: format!("toolu_mock_{}", counters.next_tool()),
                    name: name.clone(),
                    input: input.clone(),
                },
            })
            .collect();
        let message = Message {
            id: format!("msg_mock_{}", counters.next_message()),
            model: model.to_owned(),
            stop_reason: self.stop_reason.clone().unwrap_or_else(|| {
                let calls_tool = resolved
                    .iter()
                    .any(|b| matches!(b, Resolved::ToolUse { .. }));
                if calls_tool { "tool_use" } else { "end_turn" }.to_owned()
            }),
            usage: self
                .usage
                .unwrap_or((DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS)),
            fingerprint: fingerprint(&resolved),
            blocks: resolved,
        };
        if streaming {
            let mut frames = message.sse_frames(self.mid_stream_error.as_deref());
            if self.cut.is_some()
                && let Some(first_delta) = frames.iter().position(|frame| frame.paced)
            {
                frames.truncate(first_delta + 1);
            }
            Rendered::Stream {
                frames,
                cut: self.cut,
                chunk_delay: self.chunk_delay,
                fingerprint: message.fingerprint,
            }
        } else {
            Rendered::Json {
                body: message.json(),
                cut: self.cut,
                fingerprint: message.fingerprint,
            }
        }
    }
}

/// Per-mock counters for message ids, tool ids and signatures.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    message: AtomicU64,
    tool: AtomicU64,
    signature: AtomicU64,
}

impl Counters {
    fn next_message(&self) -> u64 {
        self.message.fetch_add(1, Ordering::Relaxed) + 1
    }
    fn next_tool(&self) -> u64 {
        self.tool.fetch_add(1, Ordering::Relaxed) + 1
    }
    fn next_signature(&self) -> u64 {
        self.signature.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A rendered answer, ready for the HTTP layer.
#[derive(Debug)]
pub(crate) enum Rendered {
    Error {
        status: u16,
        retry_after: Option<u64>,
        body: Value,
    },
    Stream {
        frames: Vec<Frame>,
        cut: Option<StreamCut>,
        chunk_delay: Duration,
        fingerprint: String,
    },
    Json {
        body: Value,
        cut: Option<StreamCut>,
        fingerprint: String,
    },
}

/// One SSE event; `paced` events wait for the chunk delay first.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) bytes: Bytes,
    pub(crate) paced: bool,
}

#[derive(Debug)]
enum Resolved {
    Text(Arc<str>),
    Thinking {
        text: Arc<str>,
        signature: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

struct Message {
    id: String,
    model: String,
    stop_reason: String,
    usage: (u64, u64),
    blocks: Vec<Resolved>,
    fingerprint: String,
}

impl Message {
    fn json(&self) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .map(|block| match block {
                Resolved::Text(text) => json!({"type": "text", "text": &**text}),
                Resolved::Thinking { text, signature } => {
                    json!({"type": "thinking", "thinking": &**text, "signature": signature})
                }
                Resolved::ToolUse { id, name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
            })
            .collect();
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": self.usage_json(self.usage.1),
        })
    }

    fn usage_json(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.usage.0,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        })
    }

    fn sse_frames(&self, mid_stream_error: Option<&str>) -> Vec<Frame> {
        let mut frames = vec![
            event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": self.usage_json(1),
                }}),
                false,
            ),
            event("ping", &json!({"type": "ping"}), false),
        ];
        for (index, block) in self.blocks.iter().enumerate() {
            let (start, deltas) = match block {
                Resolved::Text(text) => (
                    json!({"type": "text", "text": ""}),
                    split_text(text)
                        .into_iter()
                        .map(|piece| json!({"type": "text_delta", "text": piece}))
                        .collect::<Vec<_>>(),
                ),
                Resolved::Thinking { text, signature } => {
                    let mut deltas: Vec<Value> = split_text(text)
                        .into_iter()
                        .map(|piece| json!({"type": "thinking_delta", "thinking": piece}))
                        .collect();
                    deltas.push(json!({"type": "signature_delta", "signature": signature}));
                    (
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                        deltas,
                    )
                }
                Resolved::ToolUse { id, name, input } => {
                    let input = input.to_string();
                    let (head, tail) = input.split_at(floor_char_boundary(&input, input.len() / 2));
                    (
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        [head, tail]
                            .into_iter()
                            .filter(|piece| !piece.is_empty())
                            .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                            .collect(),
                    )
                }
            };
            frames.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": start}),
                false,
            ));
            for delta in deltas {
                frames.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                    true,
                ));
                if let Some(error_type) = mid_stream_error {
                    let message = format!("mock {error_type} mid-stream");
                    frames.push(event("error", &error_body(error_type, &message), true));
                    return frames;
                }
            }
            frames.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
                false,
            ));
        }
        frames.push(event(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": self.usage.1}}),
            false,
        ));
        frames.push(event(
            "message_stop",
            &json!({"type": "message_stop"}),
            false,
        ));
        frames
    }
}

fn event(name: &str, data: &Value, paced: bool) -> Frame {
    Frame {
        bytes: Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        paced,
    }
}

/// The fingerprint a later request of the same turn will show (see
/// `request::turn_fingerprint`).
fn fingerprint(blocks: &[Resolved]) -> String {
    let ids: Vec<&str> = blocks
        .iter()
        .filter_map(|block| match block {
            Resolved::ToolUse { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        super::request::fingerprint_of_texts(blocks.iter().filter_map(|block| match block {
            Resolved::Text(text) => Some(&**text),
            _ => None,
        }))
    } else {
        super::request::fingerprint_of_tools(ids)
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub(crate) fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// The Anthropic error type for an HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Splits a text into streaming pieces: after each run of whitespace for short texts
/// (like a model streams words), in pieces of up to 32 KiB for long ones.
fn split_text(text: &str) -> Vec<&str> {
    const SHORT: usize = 256;
    const PIECE: usize = 32 * 1024;
    if text.is_empty() {
        return vec![""];
    }
    let mut pieces = Vec::new();
    if text.len() <= SHORT {
        let mut start = 0;
        let mut in_space = false;
        for (index, ch) in text.char_indices() {
            if ch.is_whitespace() {
                in_space = true;
            } else if in_space {
                pieces.push(&text[start..index]);
                start = index;
                in_space = false;
            }
        }
        pieces.push(&text[start..]);
        return pieces;
    }
    let piece = (text.len() / 8).clamp(SHORT, PIECE);
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = floor_char_boundary(rest, piece.min(rest.len()));
        if end == 0 {
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(end);
        pieces.push(head);
        rest = tail;
    }
    pieces
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_text(frames: &[Frame]) -> String {
        frames
            .iter()
            .map(|f| String::from_utf8(f.bytes.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_broken_stream_ends_after_its_first_delta() {
        let counters = Counters::default();
        for reply in [
            Reply::text("one two three").stall_mid_stream(),
            Reply::text("one two three").reset_mid_stream(),
        ] {
            let Rendered::Stream { frames, cut, .. } = reply.render(&counters, "m", true) else {
                panic!("expected a stream");
            };
            assert!(cut.is_some());
            let text = frames_text(&frames);
            assert!(text.ends_with("\n\n"), "{text}");
            assert_eq!(text.matches("content_block_delta").count(), 2, "{text}");
            assert!(!text.contains("message_stop"), "{text}");
        }
    }

    #[test]
    fn splits_short_text_into_words_and_long_text_into_pieces() {
        assert_eq!(
            split_text("Hello from the mock."),
            ["Hello ", "from ", "the ", "mock."]
        );
        let long = "é".repeat(100_000);
        let pieces = split_text(&long);
        assert!(pieces.len() >= 6);
        assert_eq!(pieces.concat(), long);
    }

    #[test]
    fn stream_has_the_anthropic_event_sequence() {
        let counters = Counters::default();
        let reply = Reply::thinking("hmm")
            .then_text("Hi there")
            .then_tool_use("Bash", json!({"command": "ls"}));
        let Rendered::Stream {
            frames,
            fingerprint,
            ..
        } = reply.render(&counters, "claude-x", true)
        else {
            panic!("expected a stream");
        };
        assert_eq!(fingerprint, "tools:toolu_mock_1");
        let names: Vec<String> = frames_text(&frames)
            .lines()
            .filter_map(|line| line.strip_prefix("event: ").map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let text = frames_text(&frames);
        assert!(text.contains(r#""model":"claude-x""#));
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        assert!(text.contains(r#""signature":"mock-signature-1""#));
    }

    #[test]
    fn json_rendering_and_errors() {
        let counters = Counters::default();
        let Rendered::Json { body, .. } =
            Reply::text("ok").usage(7, 3).render(&counters, "m", false)
        else {
            panic!("expected json");
        };
        assert_eq!(body["content"][0]["text"], "ok");
        assert_eq!(body["usage"]["input_tokens"], 7);
        assert_eq!(body["stop_reason"], "end_turn");
        let Rendered::Error {
            status,
            retry_after,
            body,
        } = Reply::error(429)
            .retry_after(2)
            .render(&counters, "m", true)
        else {
            panic!("expected an error");
        };
        assert_eq!((status, retry_after), (429, Some(2)));
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn structured_output_is_completed_only_without_tool_calls() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let counters = Counters::default();
        let Rendered::Json { body, .. } = Reply::text("done")
            .complete_structured_output(Some(&schema))
            .render(&counters, "m", false)
        else {
            panic!("expected json");
        };
        assert_eq!(body["content"][1]["name"], "StructuredOutput");
        assert_eq!(body["content"][1]["input"], json!({"n": 0}));
        let exact = Reply::text("done")
            .without_structured_output()
            .complete_structured_output(Some(&schema));
        let Rendered::Json { body, .. } = exact.render(&counters, "m", false) else {
            panic!("expected json");
        };
        assert_eq!(body["content"].as_array().unwrap().len(), 1);
    }
}
