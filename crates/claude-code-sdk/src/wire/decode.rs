//! Decoding a framed stdout line into its typed form in one pass.
//!
//! The line's bytes are parsed once, by `serde_json::from_slice`, straight into wire
//! types whose long strings borrow from the line. Converting to the public types copies
//! the small fields; the largest text of a big line (over [`BIG_LINE`]) is not copied
//! at all: the line's own buffer becomes that `String` (the text is moved to its front
//! and the rest cut off), so a 50 MiB answer never exists twice in memory.
//!
//! The line type is read from the line's start (`{"type":"...`), as the CLI writes it;
//! a line whose `type` is not its first key is probed with a separate parse.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::message::{ContentBlock, Message, ToolResultContent};

/// Lines longer than this are not kept whole beside their message (see
/// [`Message::raw`]), and their largest text takes over the line's buffer.
pub(crate) const BIG_LINE: usize = 1 << 20;

/// The `type` of a line written the way the CLI writes it: `{"type":"<kind>", ...`
/// (whitespace allowed around the tokens). `None` when the line starts otherwise (or
/// the type has escapes); the caller then probes with a parse.
pub(crate) fn fast_type(line: &[u8]) -> Option<&str> {
    let mut rest = skip_ws(line).strip_prefix(b"{")?;
    rest = skip_ws(rest).strip_prefix(b"\"type\"")?;
    rest = skip_ws(rest).strip_prefix(b":")?;
    rest = skip_ws(rest).strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A JSON string that borrows from the line when it has no escapes.
#[derive(Debug, Default)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A field of a content block: a string (borrowed when it can be) or any other value.
#[derive(Debug)]
pub(crate) enum Field<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl Field<'_> {
    fn into_value(self) -> Value {
        match self {
            Field::Str(s) => Value::String(s.into_owned()),
            Field::Other(v) => v,
        }
    }
}

/// Any JSON value, strings borrowed; objects become a list of fields when `fields` is
/// set (a content block), a [`Value`] otherwise.
struct AnyVisitor<'a> {
    fields: bool,
    _line: std::marker::PhantomData<&'a ()>,
}

enum Any<'a> {
    Field(Field<'a>),
    Fields(Vec<(Cow<'a, str>, Field<'a>)>),
}

impl<'de: 'a, 'a> Visitor<'de> for AnyVisitor<'a> {
    type Value = Any<'a>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Str(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Str(Cow::Owned(v))))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::Bool(v))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::from(v))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::from(v))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::from(v))))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::Null)))
    }
    fn visit_none<E: de::Error>(self) -> Result<Any<'a>, E> {
        Ok(Any::Field(Field::Other(Value::Null)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any<'a>, A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Any::Field(Field::Other(value)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any<'a>, A::Error> {
        if !self.fields {
            let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            return Ok(Any::Field(Field::Other(value)));
        }
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Text(key)) = map.next_key::<Text<'a>>()? {
            let value = map.next_value::<Field<'a>>()?;
            fields.push((key, value));
        }
        Ok(Any::Fields(fields))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(AnyVisitor {
            fields: false,
            _line: std::marker::PhantomData,
        })? {
            Any::Field(field) => Ok(field),
            // Not produced with `fields: false`.
            Any::Fields(fields) => Ok(Field::Other(fields_value(fields))),
        }
    }
}

fn fields_value(fields: Vec<(Cow<'_, str>, Field<'_>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_value()))
            .collect::<Map<String, Value>>(),
    )
}

/// A content block as it arrives: its fields, strings borrowed from the line. Known
/// types become typed [`ContentBlock`]s; anything else (an unknown type, a field of an
/// unexpected type, not an object at all) becomes [`ContentBlock::Unknown`].
#[derive(Debug)]
pub(crate) enum BlockIn<'a> {
    Fields(Vec<(Cow<'a, str>, Field<'a>)>),
    Other(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for BlockIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(AnyVisitor {
            fields: true,
            _line: std::marker::PhantomData,
        })? {
            Any::Fields(fields) => Ok(BlockIn::Fields(fields)),
            Any::Field(field) => Ok(BlockIn::Other(field.into_value())),
        }
    }
}

/// The field names whose text may take over a big line's buffer.
const BIG_TEXT_FIELDS: [&str; 3] = ["text", "thinking", "content"];

impl<'a> BlockIn<'a> {
    fn get(&self, key: &str) -> Option<&Field<'a>> {
        match self {
            BlockIn::Fields(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            BlockIn::Other(_) => None,
        }
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Field::Str(s) => Some(s),
            Field::Other(_) => None,
        }
    }

    fn take(&mut self, key: &str) -> Option<Field<'a>> {
        match self {
            BlockIn::Fields(fields) => {
                let at = fields.iter().position(|(k, _)| k == key)?;
                Some(fields.swap_remove(at).1)
            }
            BlockIn::Other(_) => None,
        }
    }

    fn take_string(&mut self, key: &str) -> String {
        match self.take(key) {
            Some(Field::Str(s)) => s.into_owned(),
            _ => String::new(),
        }
    }

    fn take_value(&mut self, key: &str) -> Value {
        self.take(key).map_or(Value::Null, Field::into_value)
    }

    /// The longest string of this block that borrows from the line, if any, with the
    /// name of its field.
    fn big_borrowed(&mut self) -> Option<(&'static str, &mut Cow<'a, str>)> {
        let BlockIn::Fields(fields) = self else {
            return None;
        };
        fields
            .iter_mut()
            .filter_map(|(k, v)| {
                let field = BIG_TEXT_FIELDS.iter().find(|f| **f == k.as_ref())?;
                match v {
                    Field::Str(s @ Cow::Borrowed(_)) => Some((*field, s)),
                    _ => None,
                }
            })
            .max_by_key(|(_, s)| s.len())
    }

    /// The typed block.
    pub(crate) fn into_block(mut self) -> ContentBlock {
        let kind = self.str_of("type").unwrap_or("").to_owned();
        let is_str = |b: &Self, k: &str| matches!(b.get(k), Some(Field::Str(_)));
        let opt_str = |b: &Self, k: &str| matches!(b.get(k), None | Some(Field::Str(_)));
        if crate::wire::SERVER_TOOL_RESULTS.contains(&kind.as_str()) {
            let tool_use_id = self.str_of("tool_use_id").unwrap_or("").to_owned();
            let content = self.take_value("content");
            return ContentBlock::ServerToolResult {
                kind,
                tool_use_id,
                content,
            };
        }
        let known = match kind.as_str() {
            "text" => is_str(&self, "text"),
            "thinking" => is_str(&self, "thinking") && opt_str(&self, "signature"),
            "redacted_thinking" => is_str(&self, "data"),
            "tool_use" | "server_tool_use" => is_str(&self, "id") && is_str(&self, "name"),
            "tool_result" => {
                is_str(&self, "tool_use_id")
                    && matches!(
                        self.get("is_error"),
                        None | Some(Field::Other(Value::Bool(_) | Value::Null))
                    )
            }
            "image" => self.get("source").is_some(),
            _ => false,
        };
        if !known {
            let raw = match self {
                BlockIn::Fields(fields) => fields_value(fields),
                BlockIn::Other(value) => value,
            };
            return ContentBlock::Unknown { kind, raw };
        }
        match kind.as_str() {
            "text" => ContentBlock::Text {
                text: self.take_string("text"),
            },
            "thinking" => ContentBlock::Thinking {
                thinking: self.take_string("thinking"),
                signature: self.take_string("signature"),
            },
            "redacted_thinking" => ContentBlock::RedactedThinking {
                data: self.take_string("data"),
            },
            "tool_use" => ContentBlock::ToolUse {
                id: self.take_string("id"),
                name: self.take_string("name"),
                input: self.take_value("input"),
            },
            "server_tool_use" => ContentBlock::ServerToolUse {
                id: self.take_string("id"),
                name: self.take_string("name"),
                input: self.take_value("input"),
            },
            "tool_result" => ContentBlock::ToolResult {
                tool_use_id: self.take_string("tool_use_id"),
                content: match self.take("content") {
                    None | Some(Field::Other(Value::Null)) => None,
                    Some(Field::Str(s)) => Some(ToolResultContent::Text(s.into_owned())),
                    Some(Field::Other(Value::Array(items))) => Some(ToolResultContent::Blocks(
                        items
                            .into_iter()
                            .map(crate::wire::block_from_value)
                            .collect(),
                    )),
                    Some(Field::Other(other)) => Some(ToolResultContent::Text(other.to_string())),
                },
                is_error: match self.take("is_error") {
                    Some(Field::Other(Value::Bool(b))) => Some(b),
                    _ => None,
                },
            },
            _ => ContentBlock::Image {
                source: self.take_value("source"),
            },
        }
    }
}

/// A user message's content: a prompt's text or content blocks.
#[derive(Debug)]
pub(crate) enum UserContent<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<BlockIn<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for UserContent<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = UserContent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content blocks")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(UserContent::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(UserContent::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(UserContent::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(block) = seq.next_element::<BlockIn<'a>>()? {
                    blocks.push(block);
                }
                Ok(UserContent::Blocks(blocks))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl UserContent<'_> {
    pub(crate) fn into_blocks(self) -> Vec<ContentBlock> {
        match self {
            UserContent::Text(text) => vec![ContentBlock::Text {
                text: text.into_owned(),
            }],
            UserContent::Blocks(blocks) => blocks.into_iter().map(BlockIn::into_block).collect(),
        }
    }
}

/// Where the text that takes over a big line's buffer goes in the message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    /// Field `.1` of content block `.0` (a text or thinking block's text, a tool
    /// result's text; any string field of a block kept as `Unknown`).
    Block(usize, &'static str),
    /// A result's `result`.
    Result,
}

/// The text of a big line that will take over its buffer: its bytes in the line, and
/// where it goes.
#[derive(Debug)]
pub(crate) struct Steal {
    pub(crate) range: Range<usize>,
    pub(crate) slot: Slot,
}

/// Marks `text` (borrowed from `line`) as the one to take over the line's buffer: it is
/// left empty here and filled in by [`fill`] once the line is free.
fn claim(line: &[u8], text: &mut Cow<'_, str>, slot: Slot) -> Steal {
    let start = (text.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
    let range = start..start + text.len();
    *text = Cow::Owned(String::new());
    Steal { range, slot }
}

/// Picks the longest borrowed text among `blocks` when `line` is big.
pub(crate) fn claim_in_blocks(line: &[u8], blocks: &mut [BlockIn<'_>]) -> Option<Steal> {
    if line.len() <= BIG_LINE {
        return None;
    }
    let (index, field, text) = blocks
        .iter_mut()
        .enumerate()
        .filter_map(|(i, b)| b.big_borrowed().map(|(field, t)| (i, field, t)))
        .max_by_key(|(_, _, t)| t.len())?;
    Some(claim(line, text, Slot::Block(index, field)))
}

/// The same for a user message's content.
pub(crate) fn claim_in_user(line: &[u8], content: &mut UserContent<'_>) -> Option<Steal> {
    match content {
        UserContent::Text(text @ Cow::Borrowed(_)) if line.len() > BIG_LINE => {
            Some(claim(line, text, Slot::Block(0, "text")))
        }
        UserContent::Text(_) => None,
        UserContent::Blocks(blocks) => claim_in_blocks(line, blocks),
    }
}

/// The same for a result's text.
pub(crate) fn claim_result(line: &[u8], result: &mut Option<Text<'_>>) -> Option<Steal> {
    match result {
        Some(Text(text @ Cow::Borrowed(_))) if line.len() > BIG_LINE => {
            Some(claim(line, text, Slot::Result))
        }
        _ => None,
    }
}

/// Turns the line's buffer into the claimed text (moving the text to the buffer's
/// front, no new allocation) and puts it where it belongs in `message`.
pub(crate) fn fill(message: &mut Message, steal: Steal, line: bytes::BytesMut) {
    let mut buf: Vec<u8> = line.into();
    let Steal { range, slot } = steal;
    if range.end > buf.len() {
        return;
    }
    buf.truncate(range.end);
    buf.drain(..range.start);
    buf.shrink_to_fit();
    let text = match String::from_utf8(buf) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    };
    let (target, field) = match (message, slot) {
        (Message::Assistant(m), Slot::Block(i, field)) => (m.content.get_mut(i), field),
        (Message::User(m), Slot::Block(i, field)) => (m.content.get_mut(i), field),
        (Message::Result(m), Slot::Result) => {
            m.result = Some(text);
            return;
        }
        _ => return,
    };
    // The text goes back to the field it came from: a typed block keeps it only in the
    // field its type reads; a block kept as `Unknown` keeps every field.
    match (target, field) {
        (Some(ContentBlock::Text { text: t }), "text")
        | (Some(ContentBlock::Thinking { thinking: t, .. }), "thinking")
        | (
            Some(ContentBlock::ToolResult {
                content: Some(ToolResultContent::Text(t)),
                ..
            }),
            "content",
        ) => *t = text,
        (Some(ContentBlock::Unknown { raw, .. }), field) => {
            if let Some(object) = raw.as_object_mut() {
                object.insert(field.to_owned(), Value::String(text));
            }
        }
        // A field the typed block does not keep (it was dropped as unknown).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_type_reads_the_cli_s_line_start() {
        assert_eq!(
            fast_type(br#"{"type":"assistant","x":1}"#),
            Some("assistant")
        );
        assert_eq!(fast_type(br#" { "type" : "result" }"#), Some("result"));
        assert_eq!(fast_type(br#"{"uuid":"u","type":"result"}"#), None);
        assert_eq!(fast_type(br#"{"type":"a\"b"}"#), None);
        assert_eq!(fast_type(br#"{"type":"#), None);
    }

    #[test]
    fn text_borrows_without_escapes() {
        let line = br#"{"type":"text","text":"plain"}"#;
        let block: BlockIn<'_> = serde_json::from_slice(line).unwrap();
        assert!(matches!(
            block.get("text"),
            Some(Field::Str(Cow::Borrowed("plain")))
        ));
        let escaped: BlockIn<'_> =
            serde_json::from_slice(br#"{"type":"text","text":"a\nb"}"#).unwrap();
        assert_eq!(escaped.into_block(), ContentBlock::text("a\nb"));
        let t: Text<'_> = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(t.0, "x");
    }

    #[test]
    fn odd_blocks_become_unknown() {
        let wrong: BlockIn<'_> = serde_json::from_slice(br#"{"type":"text","text":3}"#).unwrap();
        assert!(matches!(wrong.into_block(), ContentBlock::Unknown { kind, .. } if kind == "text"));
        let string: BlockIn<'_> = serde_json::from_slice(br#""just a string""#).unwrap();
        assert!(
            matches!(string.into_block(), ContentBlock::Unknown { kind, .. } if kind.is_empty())
        );
    }
}
