//! What the mock received: [`RecordedRequest`] and the views a test asserts on.

use std::time::Instant;

use serde_json::Value;

/// Prefixes of user text blocks that the CLI injects itself. Such blocks are
/// never taken for the user's prompt.
const HARNESS_PREFIXES: &[&str] = &["<system-reminder>", "[structured-output-enforce]"];

/// The kind of a request, decided by its endpoint and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// `POST /v1/messages` for a model turn: the requests that [`Rule`]s answer.
    ///
    /// [`Rule`]: crate::Rule
    Turn,
    /// `POST /v1/messages` with a `json_schema` output format (`output_config.format`
    /// or the older `output_format`): the CLI's side queries such as a session title.
    /// Answered automatically with a value that conforms to the schema.
    Housekeeping,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// Any other method or path: answered `404` with an Anthropic error body.
    Unknown,
}

/// One request as the mock received it, with helpers to assert what the model saw.
///
/// Messages follow the Messages API: `messages` is an array of
/// `{"role": "user" | "assistant" | "system", "content": string | [block]}`. CLI 2.1.331
/// also sends `role: "system"` messages inside `messages` (the environment section of
/// its prompt lives there).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
    pub(crate) kind: RequestKind,
    pub(crate) received_at: Instant,
    pub(crate) prompt_index: Option<usize>,
    pub(crate) step: usize,
    pub(crate) rule: Option<usize>,
}

/// A `tool_result` block found in a request's user messages.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// The `tool_use_id` the result answers.
    pub tool_use_id: String,
    /// The name of the tool, resolved from the matching `tool_use` block in an earlier
    /// assistant message of the same request (`None` if it is not there).
    pub tool_name: Option<String>,
    /// The result's text: the string content, or the text blocks joined with `\n`.
    pub content: String,
    /// The block's `is_error` flag (`false` when absent).
    pub is_error: bool,
}

/// A `tool_use` block found in a request's assistant messages (the conversation so far).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolUse {
    /// The block's id, e.g. `toolu_mock_3`.
    pub id: String,
    /// The tool's name, e.g. `Bash`.
    pub name: String,
    /// The tool's input as the CLI sent it back.
    pub input: Value,
}

impl RecordedRequest {
    pub(crate) fn new(
        method: String,
        path: String,
        query: Option<String>,
        headers: Vec<(String, String)>,
        body: Value,
        kind: RequestKind,
    ) -> Self {
        let prompt_index = prompt_index(&body);
        let step = prompt_index.map_or(0, |index| assistant_groups_after(&body, index));
        Self {
            method,
            path,
            query,
            headers,
            body,
            kind,
            received_at: Instant::now(),
            prompt_index,
            step,
            rule: None,
        }
    }

    /// The HTTP method, e.g. `POST`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path without the query string, e.g. `/v1/messages`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string without `?`, e.g. `beta=true`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// All headers, names in lower case, in arrival order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON (`Value::String` holding the raw text if it was not JSON,
    /// `Value::Null` if it was empty).
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// How the mock classified the request.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// When the mock received the request.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The `model` field.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the request asked for a streamed (SSE) answer.
    pub fn is_streaming(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The system prompt: the text of the top-level `system` field (string or text
    /// blocks) followed by the text of every `role: "system"` message, joined with `\n`.
    ///
    /// `--system-prompt` and `--append-system-prompt` land in the top-level field;
    /// CLI 2.1.331 puts its environment section (working directory, platform) in a
    /// system message.
    pub fn system_text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(system) = self.body.get("system") {
            parts.extend(texts_of(system));
        }
        for message in self.messages() {
            if role(message) == Some("system") {
                parts.extend(message.get("content").map(texts_of).unwrap_or_default());
            }
        }
        parts.join("\n")
    }

    /// The `messages` array (empty if absent).
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The user's prompt for this turn: the last text block of the latest user message
    /// that has text of its own.
    ///
    /// Text blocks the CLI injects itself (`<system-reminder>` and
    /// `[structured-output-enforce]` blocks) do not count, and a user message with only
    /// `tool_result` blocks has no text of its own, so a turn keeps its prompt through
    /// its tool calls. The last block, because CLI 2.1.331 appends a new prompt to the
    /// previous user message when no assistant message came between them (after a
    /// failed turn: `["first\n", "second"]`, or next to the `tool_result` of a
    /// `StructuredOutput` call); the text is trimmed.
    pub fn prompt(&self) -> Option<String> {
        let message = &self.messages()[self.prompt_index?];
        prompt_texts(message)
            .last()
            .map(|text| text.trim().to_owned())
    }

    /// How far into its turn this request is: the number of assistant messages after
    /// the prompt (consecutive assistant messages count once). `0` for the first request
    /// of a turn, `1` after one tool round trip, and so on.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The index, in the order added, of the rule that answered this turn request, or
    /// `None` for the default reply (and for requests that are not turns).
    pub fn matched_rule(&self) -> Option<usize> {
        self.rule
    }

    /// The names of the tools offered to the model, in request order.
    pub fn tool_names(&self) -> Vec<&str> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|tool| tool.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The definition of an offered tool (`name`, `description`, `input_schema`).
    pub fn tool(&self, name: &str) -> Option<&Value> {
        self.body
            .get("tools")?
            .as_array()?
            .iter()
            .find(|tool| tool.get("name").and_then(Value::as_str) == Some(name))
    }

    /// The JSON schema of the `StructuredOutput` tool, which CLI 2.1.331 offers when it
    /// runs with `--json-schema`.
    pub fn structured_output_schema(&self) -> Option<&Value> {
        self.tool(crate::STRUCTURED_OUTPUT_TOOL)?
            .get("input_schema")
    }

    /// The schema of a `json_schema` output format (`output_config.format`, or the
    /// older top-level `output_format`): set on housekeeping requests.
    pub fn output_json_schema(&self) -> Option<&Value> {
        let format = self
            .body
            .pointer("/output_config/format")
            .or_else(|| self.body.get("output_format"))?;
        if format.get("type").and_then(Value::as_str) == Some("json_schema") {
            format.get("schema")
        } else {
            None
        }
    }

    /// Every `tool_use` block in the assistant messages of the request.
    pub fn tool_uses(&self) -> Vec<ToolUse> {
        self.blocks_of("assistant")
            .filter(|block| block_type(block) == Some("tool_use"))
            .map(|block| ToolUse {
                id: str_field(block, "id"),
                name: str_field(block, "name"),
                input: block.get("input").cloned().unwrap_or(Value::Null),
            })
            .collect()
    }

    /// Every `tool_result` block in the user messages of the request, oldest first.
    pub fn tool_results(&self) -> Vec<ToolResult> {
        let uses = self.tool_uses();
        self.blocks_of("user")
            .filter(|block| block_type(block) == Some("tool_result"))
            .map(|block| {
                let tool_use_id = str_field(block, "tool_use_id");
                ToolResult {
                    tool_name: uses
                        .iter()
                        .find(|tool_use| tool_use.id == tool_use_id)
                        .map(|tool_use| tool_use.name.clone()),
                    tool_use_id,
                    content: block
                        .get("content")
                        .map(|content| texts_of(content).join("\n"))
                        .unwrap_or_default(),
                    is_error: block.get("is_error").and_then(Value::as_bool) == Some(true),
                }
            })
            .collect()
    }

    /// Whether the request carries a `tool_result` for a call of the named tool, or for
    /// any tool with `None`.
    pub fn has_tool_result_for<'a>(&self, tool: impl Into<Option<&'a str>>) -> bool {
        let tool = tool.into();
        self.tool_results()
            .iter()
            .any(|result| tool.is_none() || result.tool_name.as_deref() == tool)
    }

    /// Whether any string in the system prompt or the messages (text, tool inputs, tool
    /// results) contains `needle`: "the model saw X".
    pub fn mentions(&self, needle: &str) -> bool {
        ["system", "messages"]
            .iter()
            .filter_map(|key| self.body.get(key))
            .any(|value| any_string(value, &|text| text.contains(needle)))
    }

    fn blocks_of<'a>(&'a self, wanted: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.messages()
            .iter()
            .filter(move |message| role(message) == Some(wanted))
            .flat_map(|message| message.get("content").and_then(Value::as_array))
            .flatten()
    }
}

/// The fingerprint of the first assistant reply of the current turn, used to find the
/// rule that started the turn: the mock-generated `tool_use` ids if any, else the text.
pub(crate) fn turn_fingerprint(request: &RecordedRequest) -> Option<String> {
    let start = request.prompt_index? + 1;
    let group: Vec<&Value> = request.messages()[start..]
        .iter()
        .filter(|message| role(message) != Some("system"))
        .take_while(|message| role(message) == Some("assistant"))
        .collect();
    let blocks: Vec<&Value> = group
        .iter()
        .filter_map(|message| message.get("content"))
        .flat_map(|content| content.as_array().map_or(&[][..], Vec::as_slice))
        .collect();
    let strings: Vec<String> = group
        .iter()
        .filter_map(|message| message.get("content").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let ids: Vec<&str> = blocks
        .iter()
        .filter(|block| block_type(block) == Some("tool_use"))
        .filter_map(|block| block.get("id").and_then(Value::as_str))
        .collect();
    if !ids.is_empty() {
        return Some(fingerprint_of_tools(ids));
    }
    let mut texts: Vec<&str> = strings.iter().map(String::as_str).collect();
    texts.extend(
        blocks
            .iter()
            .filter(|block| block_type(block) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str)),
    );
    let texts: Vec<&str> = texts.into_iter().map(str::trim).collect();
    Some(fingerprint_of_texts(texts))
}

pub(crate) fn fingerprint_of_tools<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.into_iter().collect();
    format!("tools:{}", ids.join(","))
}

pub(crate) fn fingerprint_of_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    let texts: Vec<&str> = texts.into_iter().map(str::trim).collect();
    format!("text:{}", texts.join("\n"))
}

fn prompt_index(body: &Value) -> Option<usize> {
    let messages = body.get("messages")?.as_array()?;
    messages
        .iter()
        .rposition(|message| role(message) == Some("user") && !prompt_texts(message).is_empty())
}

fn assistant_groups_after(body: &Value, index: usize) -> usize {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    let mut groups = 0;
    let mut previous_was_assistant = false;
    for message in &messages[index + 1..] {
        match role(message) {
            Some("assistant") => {
                if !previous_was_assistant {
                    groups += 1;
                }
                previous_was_assistant = true;
            }
            Some("system") => {}
            _ => previous_was_assistant = false,
        }
    }
    groups
}

fn prompt_texts(message: &Value) -> Vec<&str> {
    match message.get("content") {
        Some(Value::String(text)) if !is_harness_text(text) => vec![text.as_str()],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|block| block_type(block) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .filter(|text| !is_harness_text(text))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_harness_text(text: &str) -> bool {
    let text = text.trim_start();
    text.is_empty()
        || HARNESS_PREFIXES
            .iter()
            .any(|prefix| text.starts_with(prefix))
}

/// The texts of a `content`-like value: a string, or the `text` of its text blocks.
fn texts_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| match block {
                Value::String(text) => Some(text.clone()),
                _ => block.get("text").and_then(Value::as_str).map(str::to_owned),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn any_string(value: &Value, predicate: &dyn Fn(&str) -> bool) -> bool {
    match value {
        Value::String(text) => predicate(text),
        Value::Array(items) => items.iter().any(|item| any_string(item, predicate)),
        Value::Object(map) => map.values().any(|item| any_string(item, predicate)),
        _ => false,
    }
}

fn role(message: &Value) -> Option<&str> {
    message.get("role").and_then(Value::as_str)
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

fn str_field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> RecordedRequest {
        RecordedRequest::new(
            "POST".into(),
            "/v1/messages".into(),
            Some("beta=true".into()),
            vec![("x-api-key".into(), "k".into())],
            body,
            RequestKind::Turn,
        )
    }

    #[test]
    fn prompt_skips_reminders_tool_results_and_system_messages() {
        let req = request(json!({
            "model": "claude-test",
            "system": [{"type": "text", "text": "SYS one"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "<system-reminder>\nnoise\n</system-reminder>"},
                    {"type": "text", "text": "USE_BASH please"}]},
                {"role": "system", "content": "Primary working directory: /w"},
                {"role": "assistant", "content": [{"type": "text", "text": "Running."}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_mock_1", "name": "Bash", "input": {"command": "ls"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "a.txt", "is_error": false}]},
            ]
        }));
        assert_eq!(req.prompt().as_deref(), Some("USE_BASH please"));
        assert_eq!(req.step(), 1);
        assert_eq!(req.model(), Some("claude-test"));
        assert_eq!(req.system_text(), "SYS one\nPrimary working directory: /w");
        assert!(req.has_tool_result_for("Bash"));
        assert!(req.has_tool_result_for(None));
        assert!(!req.has_tool_result_for("Write"));
        assert_eq!(req.tool_results()[0].content, "a.txt");
        assert!(req.mentions("a.txt"));
        assert!(!req.mentions("b.txt"));
        assert_eq!(req.header("X-API-KEY"), Some("k"));
        assert_eq!(
            turn_fingerprint(&req).as_deref(),
            Some("tools:toolu_mock_1")
        );
    }

    #[test]
    fn string_content_and_enforce_follow_up() {
        let req = request(json!({
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "answer one"},
                {"role": "user", "content": "second"},
                {"role": "assistant", "content": [{"type": "text", "text": " plain \n"}]},
                {"role": "user", "content": [{"type": "text",
                    "text": "[structured-output-enforce] You MUST call the StructuredOutput tool"}]},
            ]
        }));
        assert_eq!(req.prompt().as_deref(), Some("second"));
        assert_eq!(req.step(), 1);
        assert_eq!(turn_fingerprint(&req).as_deref(), Some("text:plain"));
    }

    #[test]
    fn a_prompt_appended_to_a_previous_message_wins() {
        let after_error = request(json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "first\n"},
                {"type": "text", "text": "second"}]},
        ]}));
        assert_eq!(after_error.prompt().as_deref(), Some("second"));
        let after_tool = request(json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_mock_1", "name": "StructuredOutput", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "ok"},
                {"type": "text", "text": "third"}]},
        ]}));
        assert_eq!(after_tool.prompt().as_deref(), Some("third"));
        assert_eq!(after_tool.step(), 0);
    }

    #[test]
    fn no_messages_means_no_prompt() {
        let req = request(json!({"model": "m"}));
        assert_eq!(req.prompt(), None);
        assert_eq!(req.step(), 0);
        assert!(req.tool_names().is_empty());
    }
}
