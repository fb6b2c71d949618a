//! [`Prompt`]: what a run is asked.

use serde_json::Value;

use crate::message::ContentBlock;

/// What a prompt can be: text, or content blocks (text and images).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Prompt {
    /// Plain text.
    Text(String),
    /// Content blocks, e.g. text with an image.
    Blocks(Vec<ContentBlock>),
}

impl Prompt {
    pub(crate) fn to_content(&self) -> Value {
        match self {
            Prompt::Text(text) => Value::String(text.clone()),
            Prompt::Blocks(blocks) => serde_json::to_value(blocks).unwrap_or(Value::Null),
        }
    }

    /// The prompt's text (text blocks joined).
    pub fn text(&self) -> String {
        match self {
            Prompt::Text(text) => text.clone(),
            Prompt::Blocks(blocks) => crate::message::join_text(blocks),
        }
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_owned())
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Self {
        Prompt::Text(text)
    }
}

impl From<&String> for Prompt {
    fn from(text: &String) -> Self {
        Prompt::Text(text.clone())
    }
}

impl From<Vec<ContentBlock>> for Prompt {
    fn from(blocks: Vec<ContentBlock>) -> Self {
        Prompt::Blocks(blocks)
    }
}
