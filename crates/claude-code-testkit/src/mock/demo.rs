//! The offline demo's rule set: a friendly mock model that says what it is.

use serde_json::json;

use super::{RecordedRequest, Reply, Rule};

/// The file the demo model writes when asked to write a file.
pub const DEMO_FILE: &str = "mock_demo.txt";

/// Rules for an offline demo (`make run` without credentials, `mock-anthropic --demo`).
///
/// Every answer says loudly that it comes from the mock model. A prompt that asks to
/// write or create a file gets a `Write` call of [`DEMO_FILE`] in the working directory,
/// then a short confirmation; a prompt about a function gets a small Python example in
/// a code block (a single turn, so it works with `max_turns(1)`); anything else gets a
/// short greeting that quotes the prompt.
pub fn demo_rules() -> Vec<Rule> {
    vec![
        Rule::matching(asks_for_file)
            .and(|req| working_directory(req).is_some())
            .reply_with(|req| match req.step() {
                0 => {
                    let path = format!("{}/{DEMO_FILE}", working_directory(req).unwrap_or("."));
                    Reply::text("I'm the offline mock model; I'll write a small file for you.")
                        .then_tool_use("Write", json!({"file_path": path, "content": DEMO_CONTENT}))
                }
                _ => Reply::text(format!(
                    "Done: I wrote {DEMO_FILE} in your working directory. (This answer came \
                     from the claude-code-testkit mock model, not from Claude.)"
                )),
            }),
        Rule::any().reply_with(|req| Reply::text(demo_answer(&req.prompt().unwrap_or_default()))),
    ]
}

const DEMO_CONTENT: &str =
    "Written by the claude-code-testkit mock model during an offline demo.\n";

const EMAIL_EXAMPLE: &str = r#"```python
import re

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_valid_email(address: str) -> bool:
    """Return True if `address` looks like an email address."""
    return EMAIL.fullmatch(address) is not None
```"#;

const FUNCTION_EXAMPLE: &str = r#"```python
def example(value):
    """A placeholder function from the offline mock model."""
    return value
```"#;

fn demo_answer(prompt: &str) -> String {
    let lower = prompt.to_lowercase();
    let intro = "Hello! I'm the **mock model** of claude-code-testkit, answering offline: \
                 no real Claude model was asked.";
    if lower.contains("function") {
        let example = if lower.contains("email") {
            EMAIL_EXAMPLE
        } else {
            FUNCTION_EXAMPLE
        };
        format!(
            "{intro} Here is the kind of answer you would get, as a canned example:\n\n\
             {example}\n\nSet ANTHROPIC_API_KEY to talk to Claude for real."
        )
    } else {
        let quoted: String = prompt.chars().take(200).collect();
        format!("{intro} You said: \"{quoted}\". Set ANTHROPIC_API_KEY to talk to Claude for real.")
    }
}

fn asks_for_file(req: &RecordedRequest) -> bool {
    let prompt = req.prompt().unwrap_or_default().to_lowercase();
    prompt.contains("file")
        && ["write", "create", "save", "make"]
            .iter()
            .any(|verb| prompt.contains(verb))
}

/// The working directory the CLI reports in its environment section.
fn working_directory(req: &RecordedRequest) -> Option<&str> {
    const MARKER: &str = "Primary working directory: ";
    req.messages()
        .iter()
        .chain(req.body().get("system"))
        .find_map(|value| find_line(value, MARKER))
}

fn find_line<'a>(value: &'a serde_json::Value, marker: &str) -> Option<&'a str> {
    match value {
        serde_json::Value::String(text) => {
            let start = text.find(marker)? + marker.len();
            let rest = &text[start..];
            Some(rest.lines().next().unwrap_or(rest).trim())
        }
        serde_json::Value::Array(items) => items.iter().find_map(|item| find_line(item, marker)),
        serde_json::Value::Object(map) => map.values().find_map(|item| find_line(item, marker)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_they_come_from_the_mock() {
        assert!(demo_answer("hi").contains("mock model"));
        let email = demo_answer("Write a Python function to validate email addresses");
        assert!(email.contains("is_valid_email"));
    }
}
