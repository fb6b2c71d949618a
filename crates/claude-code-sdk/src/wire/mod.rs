//! Serde types for every line the CLI writes or reads.
//!
//! These mirror the JSON exactly and tolerate what they do not know: an unknown line
//! type, block type or control subtype has a fallback at every tagged level, and
//! unknown fields are ignored. The public types in [`crate::message`] are built from
//! them.

mod decode;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, ErrorKind, Result};
use crate::message::{
    AssistantMessage, ContentBlock, Message, PermissionDenial, RateLimitEvent, ResultMessage,
    StreamEvent, SystemMessage, ToolResultContent, UnknownMessage, Usage, UserMessage,
};
pub(crate) use decode::BlockIn;
use decode::{Text, UserContent};

/// How much of an offending line an error keeps.
const RAW_KEEP: usize = 4096;

/// One classified stdout line.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// An answer to a request the SDK sent.
    ControlResponse(ControlResponse),
    /// A request from the CLI (`can_use_tool`, `hook_callback`, `mcp_message`, ...).
    ControlRequest { request_id: String, request: Value },
    /// The CLI withdraws a request it sent.
    ControlCancel { request_id: String },
    /// A keep-alive line: nothing to do.
    KeepAlive,
    /// Everything else.
    Message(Box<Message>),
}

/// An answer to a control request.
#[derive(Debug)]
pub(crate) struct ControlResponse {
    pub(crate) request_id: String,
    pub(crate) outcome: std::result::Result<Value, String>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireControlResponse {
    response: WireControlResponseBody,
}

#[derive(Deserialize)]
struct WireControlResponseBody {
    #[serde(default)]
    subtype: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireControlRequest {
    request_id: String,
    request: Value,
}

#[derive(Deserialize)]
struct WireControlCancel {
    request_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WireApiMessage<'a> {
    pub(crate) id: Option<String>,
    pub(crate) model: Option<String>,
    #[serde(borrow)]
    pub(crate) content: Vec<BlockIn<'a>>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage: Option<Usage>,
}

#[derive(Deserialize)]
pub(crate) struct WireAssistant<'a> {
    #[serde(borrow)]
    pub(crate) message: WireApiMessage<'a>,
    #[serde(default)]
    pub(crate) parent_tool_use_id: Option<String>,
    #[serde(default)]
    pub(crate) session_id: Option<String>,
    #[serde(default)]
    pub(crate) uuid: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub(crate) timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(crate) struct WireUserBody<'a> {
    #[serde(borrow)]
    pub(crate) content: UserContent<'a>,
}

#[derive(Deserialize)]
pub(crate) struct WireUser<'a> {
    #[serde(borrow)]
    pub(crate) message: WireUserBody<'a>,
    #[serde(default)]
    pub(crate) parent_tool_use_id: Option<String>,
    #[serde(default)]
    pub(crate) session_id: Option<String>,
    #[serde(default)]
    pub(crate) uuid: Option<String>,
    #[serde(default)]
    pub(crate) tool_use_result: Option<Value>,
    #[serde(default, rename = "isReplay")]
    pub(crate) is_replay: Option<bool>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub(crate) timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WireResult<'a> {
    /// The line's `type`, to check a guess (see `parse_with`).
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) subtype: String,
    pub(crate) is_error: bool,
    pub(crate) duration_ms: u64,
    pub(crate) duration_api_ms: u64,
    pub(crate) num_turns: u32,
    #[serde(borrow)]
    pub(crate) result: Option<Text<'a>>,
    pub(crate) session_id: String,
    pub(crate) total_cost_usd: Option<f64>,
    pub(crate) usage: Option<Usage>,
    #[serde(rename = "modelUsage")]
    pub(crate) model_usage: Map<String, Value>,
    pub(crate) permission_denials: Vec<PermissionDenial>,
    pub(crate) structured_output: Option<Value>,
    pub(crate) api_error_status: Option<u16>,
    pub(crate) api_error: Option<String>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) terminal_reason: Option<String>,
    #[serde(deserialize_with = "lenient_strings")]
    pub(crate) errors: Vec<String>,
    pub(crate) uuid: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireStreamEvent {
    pub(crate) event: Value,
    #[serde(default)]
    pub(crate) session_id: Option<String>,
    #[serde(default)]
    pub(crate) parent_tool_use_id: Option<String>,
    #[serde(default)]
    pub(crate) uuid: Option<String>,
}

fn lenient_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<DateTime<Utc>>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

fn lenient_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(match value {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s],
        _ => Vec::new(),
    })
}

/// Classifies one stdout line (see [`parse_bytes`]).
///
/// # Errors
///
/// As [`parse_bytes`].
pub(crate) fn parse_line(line: String) -> Result<Inbound> {
    parse_bytes(bytes_of(line))
}

/// Classifies one framed stdout line, parsing it once (see `decode.rs`).
///
/// # Errors
///
/// A [`Protocol`](ErrorKind::Protocol) error (with the start of the line) when the line
/// is not a JSON object. The caller decides whether to skip it.
pub(crate) fn parse_bytes(line: BytesMut) -> Result<Inbound> {
    parse_with(line, true)
}

/// [`parse_bytes`]; `guess` allows taking a line with `"type":"result"` in it for a
/// result before parsing it (the CLI writes a result's `type` after its text: probing
/// for it would parse a 50 MiB answer twice). The guess is checked against the
/// `type` the parse finds; a wrong one is parsed again after a probe.
fn parse_with(line: BytesMut, guess: bool) -> Result<Inbound> {
    let fast = decode::fast_type(&line).map(str::to_owned);
    let guessed = fast.is_none() && guess && memchr::memmem::find(&line, RESULT_TYPE).is_some();
    let kind = match fast {
        Some(kind) => Some(kind),
        None if guessed => Some("result".to_owned()),
        None => match serde_json::from_slice::<Head<'_>>(&line) {
            Ok(head) => head.kind.map(Cow::into_owned),
            Err(err) => return not_json(&line, err),
        },
    };
    let decoded = match kind.as_deref() {
        Some("control_response") => {
            let body = serde_json::from_slice::<WireControlResponse>(&line)
                .map_err(|e| bad_shape("control_response", &line, e))?
                .response;
            let outcome = if body.subtype == "error" {
                Err(match body.error {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => "the CLI answered with an error".to_owned(),
                })
            } else {
                Ok(body.response.unwrap_or(Value::Null))
            };
            return Ok(Inbound::ControlResponse(ControlResponse {
                request_id: body.request_id,
                outcome,
            }));
        }
        Some("control_request") => {
            let req = serde_json::from_slice::<WireControlRequest>(&line)
                .map_err(|e| bad_shape("control_request", &line, e))?;
            return Ok(Inbound::ControlRequest {
                request_id: req.request_id,
                request: req.request,
            });
        }
        Some("control_cancel_request") => {
            let req = serde_json::from_slice::<WireControlCancel>(&line)
                .map_err(|e| bad_shape("control_cancel_request", &line, e))?;
            return Ok(Inbound::ControlCancel {
                request_id: req.request_id,
            });
        }
        Some("keep_alive") => return Ok(Inbound::KeepAlive),
        Some(known) => decode_message(known, &line),
        None => Ok(None),
    };
    let (mut message, steal) = match decoded {
        Err(_) if guessed => return parse_with(line, false),
        Ok(Some(decoded)) => decoded,
        Ok(None) => {
            // A type this SDK does not know: the line is all it has.
            if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
                return not_json(&line, err);
            }
            let message = Message::Unknown(UnknownMessage::from_wire(line_arc(&line), kind));
            return Ok(Inbound::Message(Box::new(message)));
        }
        Err(err) => {
            if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
                return not_json(&line, err);
            }
            if std::str::from_utf8(&line).is_err() {
                // Bytes that are not UTF-8 inside a string: decode what is there.
                let text = String::from_utf8_lossy(&line).into_owned();
                return parse_bytes(bytes_of(text));
            }
            // A known type whose shape changed: keep the line rather than break the stream.
            tracing::warn!(kind = ?kind, error = %err, "unexpected shape for a known line type; passing it on as Unknown");
            let message = Message::Unknown(UnknownMessage::from_wire(line_arc(&line), kind));
            return Ok(Inbound::Message(Box::new(message)));
        }
    };
    let len = line.len();
    match steal {
        Some(steal) => decode::fill(&mut message, steal, line),
        None if len <= decode::BIG_LINE => message.keep_line(line_arc(&line)),
        None => {}
    }
    message.set_line_len(len);
    Ok(Inbound::Message(Box::new(message)))
}

/// A result's `type` as the CLI writes it.
const RESULT_TYPE: &[u8] = br#""type":"result""#;

/// A decoded message, and the text that is to take over its line's buffer.
type Decoded = (Message, Option<decode::Steal>);

/// Decodes a line of a known message type in one parse; `None` for other types.
fn decode_message(kind: &str, line: &[u8]) -> serde_json::Result<Option<Decoded>> {
    Ok(Some(match kind {
        "assistant" => {
            let mut w = serde_json::from_slice::<WireAssistant<'_>>(line)?;
            let steal = decode::claim_in_blocks(line, &mut w.message.content);
            (Message::Assistant(AssistantMessage::from_wire(w)), steal)
        }
        "user" => {
            let mut w = serde_json::from_slice::<WireUser<'_>>(line)?;
            let steal = decode::claim_in_user(line, &mut w.message.content);
            (Message::User(UserMessage::from_wire(w)), steal)
        }
        "result" => {
            let mut w = serde_json::from_slice::<WireResult<'_>>(line)?;
            if w.kind.as_deref() != Some("result") {
                // A guess (see `parse_with`) that was wrong.
                return Err(serde::de::Error::custom("not a result line"));
            }
            let steal = decode::claim_result(line, &mut w.result);
            (Message::Result(ResultMessage::from_wire(w)), steal)
        }
        "stream_event" => {
            let w = serde_json::from_slice::<WireStreamEvent>(line)?;
            (Message::StreamEvent(StreamEvent::from_wire(w)), None)
        }
        "system" => {
            let data = serde_json::from_slice::<Map<String, Value>>(line)?;
            (Message::System(SystemMessage::from_data(data)), None)
        }
        "rate_limit_event" => {
            let data = serde_json::from_slice::<Map<String, Value>>(line)?;
            (Message::RateLimit(RateLimitEvent::from_wire(data)), None)
        }
        _ => return Ok(None),
    }))
}

/// A string's bytes as a buffer, without a copy.
fn bytes_of(text: String) -> BytesMut {
    bytes::Bytes::from(text.into_bytes())
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

/// The line as text (it is UTF-8 when it parsed; a lossy copy otherwise).
fn line_arc(line: &[u8]) -> Arc<str> {
    match std::str::from_utf8(line) {
        Ok(text) => Arc::from(text),
        Err(_) => Arc::from(String::from_utf8_lossy(line).as_ref()),
    }
}

fn not_json(line: &[u8], err: serde_json::Error) -> Result<Inbound> {
    Err(
        Error::protocol("the CLI wrote a line that is not a JSON object")
            .with_source(err)
            .with_raw_line(head_text(line)),
    )
}

/// The start of a line, for an error.
fn head_text(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(&line[..line.len().min(RAW_KEEP)]);
    if line.len() <= RAW_KEEP {
        text.into_owned()
    } else {
        format!("{text}… ({} bytes)", line.len())
    }
}

fn bad_shape(kind: &str, raw: &[u8], err: serde_json::Error) -> Error {
    Error::protocol(format!("malformed {kind} line"))
        .with_source(err)
        .with_raw_line(head_text(raw))
}

// ---------------------------------------------------------------------------
// Content blocks
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Thinking {
        thinking: Cow<'a, str>,
        #[serde(default)]
        signature: Cow<'a, str>,
    },
    RedactedThinking {
        data: Cow<'a, str>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        #[serde(default)]
        input: Cow<'a, Value>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Cow<'a, Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    ServerToolUse {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        #[serde(default)]
        input: Cow<'a, Value>,
    },
    Image {
        source: Cow<'a, Value>,
    },
}

pub(crate) const SERVER_TOOL_RESULTS: &[&str] = &[
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_result",
];

pub(crate) fn block_from_value(value: Value) -> ContentBlock {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if SERVER_TOOL_RESULTS.contains(&kind.as_str()) {
        let tool_use_id = value
            .get("tool_use_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let content = value.get("content").cloned().unwrap_or(Value::Null);
        return ContentBlock::ServerToolResult {
            kind,
            tool_use_id,
            content,
        };
    }
    match WireBlock::deserialize(&value) {
        Ok(block) => match block {
            WireBlock::Text { text } => ContentBlock::Text {
                text: text.into_owned(),
            },
            WireBlock::Thinking {
                thinking,
                signature,
            } => ContentBlock::Thinking {
                thinking: thinking.into_owned(),
                signature: signature.into_owned(),
            },
            WireBlock::RedactedThinking { data } => ContentBlock::RedactedThinking {
                data: data.into_owned(),
            },
            WireBlock::ToolUse { id, name, input } => ContentBlock::ToolUse {
                id: id.into_owned(),
                name: name.into_owned(),
                input: input.into_owned(),
            },
            WireBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => ContentBlock::ToolResult {
                tool_use_id: tool_use_id.into_owned(),
                content: content.map(|c| tool_result_content(c.into_owned())),
                is_error,
            },
            WireBlock::ServerToolUse { id, name, input } => ContentBlock::ServerToolUse {
                id: id.into_owned(),
                name: name.into_owned(),
                input: input.into_owned(),
            },
            WireBlock::Image { source } => ContentBlock::Image {
                source: source.into_owned(),
            },
        },
        Err(_) => ContentBlock::Unknown { kind, raw: value },
    }
}

fn tool_result_content(value: Value) -> ToolResultContent {
    match value {
        Value::String(s) => ToolResultContent::Text(s),
        Value::Array(items) => {
            ToolResultContent::Blocks(items.into_iter().map(block_from_value).collect())
        }
        other => ToolResultContent::Text(other.to_string()),
    }
}

pub(crate) fn block_to_value(block: &ContentBlock) -> Value {
    let wire = match block {
        ContentBlock::Text { text } => WireBlock::Text { text: text.into() },
        ContentBlock::Thinking {
            thinking,
            signature,
        } => WireBlock::Thinking {
            thinking: thinking.into(),
            signature: signature.into(),
        },
        ContentBlock::RedactedThinking { data } => {
            WireBlock::RedactedThinking { data: data.into() }
        }
        ContentBlock::ToolUse { id, name, input } => WireBlock::ToolUse {
            id: id.into(),
            name: name.into(),
            input: Cow::Borrowed(input),
        },
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => WireBlock::ToolResult {
            tool_use_id: tool_use_id.into(),
            content: content.as_ref().map(|c| {
                Cow::Owned(match c {
                    ToolResultContent::Text(t) => Value::String(t.clone()),
                    ToolResultContent::Blocks(b) => {
                        Value::Array(b.iter().map(block_to_value).collect())
                    }
                })
            }),
            is_error: *is_error,
        },
        ContentBlock::ServerToolUse { id, name, input } => WireBlock::ServerToolUse {
            id: id.into(),
            name: name.into(),
            input: Cow::Borrowed(input),
        },
        ContentBlock::ServerToolResult {
            kind,
            tool_use_id,
            content,
        } => {
            return json!({"type": kind, "tool_use_id": tool_use_id, "content": content});
        }
        ContentBlock::Image { source } => WireBlock::Image {
            source: Cow::Borrowed(source),
        },
        ContentBlock::Unknown { raw, .. } => return raw.clone(),
    };
    serde_json::to_value(wire).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------
// Results to errors
// ---------------------------------------------------------------------------

pub(crate) fn classify_result(result: &ResultMessage) -> Option<Error> {
    if !result.is_error && result.subtype == "success" && result.permission_denials.is_empty() {
        // The common case: nothing to classify, and nothing copied (the text may be a
        // 50 MiB answer).
        return None;
    }
    let text = result
        .result
        .as_deref()
        .or_else(|| result.errors.first().map(String::as_str))
        .unwrap_or(&result.subtype);
    let kind = if !result.is_error && result.subtype == "success" {
        if result.permission_denials.is_empty() {
            return None;
        }
        let names: Vec<&str> = result
            .permission_denials
            .iter()
            .map(|d| d.tool_name.as_str())
            .collect();
        return Some(
            Error::new(
                ErrorKind::PermissionDenied,
                format!("tool use denied: {}", names.join(", ")),
            )
            .with_result(result.clone()),
        );
    } else {
        match result.subtype.as_str() {
            "error_max_turns" => ErrorKind::MaxTurns,
            "error_max_budget_usd" => ErrorKind::Budget,
            "error_during_execution"
                if result.terminal_reason.as_deref() == Some("aborted_streaming")
                    || result.terminal_reason.as_deref() == Some("aborted_tools")
                    || text.contains("interrupted") =>
            {
                ErrorKind::Interrupted
            }
            "error_during_execution" => ErrorKind::Execution,
            _ if result.api_error_status.is_some() => ErrorKind::Api,
            _ if result.api_error.as_deref() == Some("connection_failed")
                || text.contains("Unable to connect")
                || text.contains("Connection error")
                || text.contains("ECONNREFUSED") =>
            {
                ErrorKind::Connection
            }
            _ if result.api_error.is_some() || text.starts_with("API Error") => ErrorKind::Api,
            _ => ErrorKind::Execution,
        }
    };
    let message = match kind {
        ErrorKind::MaxTurns => {
            format!("the run reached max_turns after {} turns", result.num_turns)
        }
        ErrorKind::Budget => "the run reached max_budget_usd".to_owned(),
        _ => text.to_owned(),
    };
    Some(
        Error::new(kind, message)
            .with_api_status(result.api_error_status)
            .with_retry_after(retry_after_hint(result))
            .with_result(result.clone()),
    )
}

fn retry_after_hint(result: &ResultMessage) -> Option<Duration> {
    // The CLI does not forward the retry-after header; some error texts carry it.
    let text = result.result.as_deref()?;
    let idx = text.find("retry after ")?;
    let secs: String = text[idx + 12..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    secs.parse().ok().map(Duration::from_secs)
}

// ---------------------------------------------------------------------------
// Lines the SDK writes
// ---------------------------------------------------------------------------

/// A prompt as a `user` line.
pub(crate) fn user_line(
    content: Value,
    session_id: &str,
    parent_tool_use_id: Option<&str>,
) -> String {
    json!({
        "type": "user",
        "session_id": session_id,
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": parent_tool_use_id,
    })
    .to_string()
}

/// A control request from the SDK.
pub(crate) fn control_request_line(request_id: &str, request: &Value) -> String {
    json!({"type": "control_request", "request_id": request_id, "request": request}).to_string()
}

/// A successful answer to a CLI request.
pub(crate) fn control_success_line(request_id: &str, response: Value) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    })
    .to_string()
}

/// An error answer to a CLI request.
pub(crate) fn control_error_line(request_id: &str, error: &str) -> String {
    json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::shorten;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    /// Every line of every captured session parses, and nothing becomes `Unknown`
    /// except types we do not model.
    #[test]
    fn fixture_lines_parse() {
        let dir = std::fs::read_dir(format!("{FIXTURES}/cli-2.1.197")).unwrap();
        let mut seen = 0;
        for entry in dir {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let record: Value = serde_json::from_str(line).unwrap();
                if record["dir"] != "out" || !record["msg"].is_object() {
                    continue;
                }
                // As re-serialized (sorted keys) and as captured (the CLI's key order).
                #[derive(Deserialize)]
                struct Captured<'a> {
                    #[serde(borrow)]
                    msg: &'a serde_json::value::RawValue,
                }
                let captured: Captured<'_> = serde_json::from_str(line).unwrap();
                for text in [record["msg"].to_string(), captured.msg.get().to_owned()] {
                    let inbound = parse_line(text).unwrap();
                    if let Inbound::Message(m) = inbound {
                        assert!(
                            !matches!(*m, Message::Unknown(_)),
                            "{}: {}",
                            path.display(),
                            shorten(m.raw(), 300)
                        );
                    }
                }
                seen += 1;
            }
        }
        assert!(seen > 100, "only {seen} lines");
    }

    /// Mangled lines (cut short, bytes changed, values of the wrong type) never panic:
    /// they parse, become `Unknown`, or are a protocol error.
    #[test]
    fn mangled_lines_never_panic() {
        let dir = std::fs::read_dir(format!("{FIXTURES}/cli-2.1.197")).unwrap();
        let mut lines = Vec::new();
        for entry in dir {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    let record: Value = serde_json::from_str(line).unwrap();
                    if record["msg"].is_object() {
                        lines.push(record["msg"].to_string());
                    }
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let swaps: [&[u8]; 6] = [b"null", b"[]", b"{}", b"-1", b"\"x\"", b"1e999"];
        for line in &lines {
            for _ in 0..20 {
                let mut bytes = line.clone().into_bytes();
                match rng.u8(0..3) {
                    0 => bytes.truncate(rng.usize(0..=bytes.len())),
                    1 => {
                        for _ in 0..rng.usize(1..8) {
                            let at = rng.usize(0..bytes.len());
                            bytes[at] = rng.u8(..);
                        }
                    }
                    _ => {
                        // Replace the value after a random `:` with one of another type.
                        let colons: Vec<usize> = bytes
                            .iter()
                            .enumerate()
                            .filter(|(_, b)| **b == b':')
                            .map(|(i, _)| i)
                            .collect();
                        if let Some(&at) = colons.get(rng.usize(0..colons.len().max(1))) {
                            let end = bytes[at + 1..]
                                .iter()
                                .position(|b| *b == b',' || *b == b'}')
                                .map_or(bytes.len(), |p| at + 1 + p);
                            let swap = swaps[rng.usize(0..swaps.len())];
                            bytes.splice(at + 1..end, swap.iter().copied());
                        }
                    }
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let _ = parse_line(text);
            }
        }
        assert!(lines.len() > 100);
    }

    /// A line over 1 MiB: its text takes over the line's buffer, the line is not kept,
    /// and `raw()` rebuilds it with the same values.
    #[test]
    fn big_lines_decode_without_keeping_the_line() {
        let text = "x".repeat(3 << 20) + "é";
        let line = json!({
            "type": "assistant",
            "message": {"id": "m1", "type": "message", "model": "claude", "role": "assistant",
                "content": [{"type": "text", "text": "small"}, {"type": "text", "text": text},
                    {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": "ls"}}],
                "stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 2}},
            "parent_tool_use_id": null, "session_id": "s", "uuid": "u"
        });
        let message = Message::from_json(&line.to_string()).unwrap();
        let a = message.as_assistant().unwrap();
        assert_eq!(a.content[0], ContentBlock::text("small"));
        assert_eq!(a.content[1], ContentBlock::text(text.clone()));
        assert_eq!(message.tools_used(), ["Bash"]);
        assert_eq!(message.line_len(), line.to_string().len());
        let mut rebuilt: Value = serde_json::from_str(message.raw()).unwrap();
        let mut line = line;
        assert_eq!(rebuilt["message"]["content"][1]["text"], text.as_str());
        rebuilt["message"]["content"][1]["text"] = Value::Null;
        line["message"]["content"][1]["text"] = Value::Null;
        assert_eq!(rebuilt, line);

        let result = json!({"type": "result", "subtype": "success", "is_error": false,
            "duration_ms": 1, "duration_api_ms": 1, "num_turns": 1, "result": text,
            "session_id": "s", "total_cost_usd": 0.5});
        let message = Message::from_json(&result.to_string()).unwrap();
        assert_eq!(
            message.as_result().unwrap().result.as_deref(),
            Some(text.as_str())
        );
        assert_eq!(message.content().len(), text.len());

        let escaped = json!({"type": "user", "message": {"role": "user", "content": format!("{text}\n\"q\"")}});
        let message = Message::from_json(&escaped.to_string()).unwrap();
        assert_eq!(message.content(), format!("{text}\n\"q\""));
    }

    /// A big text in a block of an odd shape goes back to the field it came from: an
    /// unknown block keeps it, a text block keeps its own `text`, not another field's.
    #[test]
    fn big_texts_of_odd_blocks_stay_in_their_field() {
        let big = "y".repeat(2 << 20);
        let assistant = |blocks: Value| {
            json!({"type": "assistant", "message": {"role": "assistant", "model": "m",
                "content": blocks}, "session_id": "s"})
            .to_string()
        };
        let message = Message::from_json(&assistant(json!([
            {"type": "citation_x", "text": big},
            {"type": "thinking", "thinking": "t", "signature": null, "content": "c"},
        ])))
        .unwrap();
        let blocks = &message.as_assistant().unwrap().content;
        assert!(
            matches!(&blocks[0], ContentBlock::Unknown { kind, raw }
                if kind == "citation_x" && raw["text"] == big.as_str()),
            "{:?}",
            &blocks[0].clone()
        );
        let message = Message::from_json(&assistant(json!([
            {"type": "text", "text": "hi", "content": big},
        ])))
        .unwrap();
        assert_eq!(
            message.as_assistant().unwrap().content[0],
            ContentBlock::text("hi")
        );
        let message = Message::from_json(&assistant(json!([
            {"type": "thinking", "thinking": big, "signature": null},
        ])))
        .unwrap();
        assert!(matches!(
            &message.as_assistant().unwrap().content[0],
            ContentBlock::Unknown { raw, .. } if raw["thinking"] == big.as_str()
        ));
    }

    /// The CLI writes a result's `type` after its text: it is found without a probe,
    /// and a line that only holds `"type":"result"` deeper down is not taken for one.
    #[test]
    fn a_result_whose_type_comes_late() {
        let result = Message::from_json(
            r#"{"result":"done","session_id":"s","subtype":"success","is_error":false,"type":"result","num_turns":1}"#,
        )
        .unwrap();
        assert_eq!(result.as_result().unwrap().result.as_deref(), Some("done"));
        let nested = Message::from_json(
            r#"{"message":{"content":[{"type":"tool_use","id":"t","name":"X","input":{"type":"result"}}]},"type":"assistant"}"#,
        )
        .unwrap();
        assert_eq!(nested.tools_used(), ["X"]);
        let other = Message::from_json(r#"{"x":{"type":"result"},"type":"telepathy"}"#).unwrap();
        assert_eq!(other.kind(), "telepathy");
    }

    #[test]
    fn control_lines() {
        let ok = parse_line(
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"r1","response":{"mode":"acceptEdits"}}}"#.into(),
        )
        .unwrap();
        match ok {
            Inbound::ControlResponse(r) => {
                assert_eq!(r.request_id, "r1");
                assert_eq!(r.outcome.unwrap()["mode"], "acceptEdits");
            }
            other => panic!("{other:?}"),
        }
        let err = parse_line(
            r#"{"type":"control_response","response":{"subtype":"error","request_id":"r2","error":"Unsupported control request subtype: x"}}"#.into(),
        )
        .unwrap();
        match err {
            Inbound::ControlResponse(r) => assert!(r.outcome.unwrap_err().contains("Unsupported")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn result_classification() {
        let parse = |s: &str| match parse_line(s.to_owned()).unwrap() {
            Inbound::Message(m) => match *m {
                Message::Result(r) => r,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let max_turns = parse(
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":2,"session_id":"s"}"#,
        );
        assert!(classify_result(&max_turns).unwrap().is_max_turns());
        let conn = parse(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error":"connection_failed","result":"API Error: Connection refused","session_id":"s"}"#,
        );
        assert!(classify_result(&conn).unwrap().is_connection());
        let denied = parse(
            r#"{"type":"result","subtype":"success","is_error":false,"session_id":"s","permission_denials":[{"tool_name":"Write","tool_use_id":"t","tool_input":{}}]}"#,
        );
        let err = classify_result(&denied).unwrap();
        assert!(err.is_permission());
        assert_eq!(err.permission_denials()[0].tool_name, "Write");
        let auth = parse(
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"API Error: 401","session_id":"s"}"#,
        );
        let err = classify_result(&auth).unwrap();
        assert!(err.is_api() && !err.is_transient());
    }
}
