//! A small value that conforms to a JSON schema, for housekeeping requests and
//! structured output.

use serde_json::{Map, Number, Value};

/// How deep `$ref`s and nested schemas are followed before giving up with `null`.
const MAX_DEPTH: usize = 32;

/// Builds a small value that conforms to `schema` (JSON Schema, the subset that tools
/// and structured outputs use).
///
/// - `const` and `enum` give their (first) value; `anyOf`/`oneOf` use the first branch;
///   `allOf` merges object branches; local `$ref`s (`#/$defs/...`) are followed.
/// - objects get their `required` properties, recursively;
/// - strings are `"mock"` (stretched or cut to `minLength`/`maxLength`; well-known
///   `format`s such as `date-time`, `email`, `uri`, `uuid` get a valid example);
/// - numbers and integers are `0`, moved into `minimum`/`maximum`;
/// - booleans are `true`; arrays hold `minItems` items; `null` is `null`.
///
/// `pattern`, `multipleOf` and `not` are not honoured.
///
/// ```
/// use claude_code_testkit::conforming_value;
/// use serde_json::json;
///
/// let schema = json!({
///     "type": "object",
///     "properties": {"title": {"type": "string"}, "n": {"type": "integer", "minimum": 3}},
///     "required": ["title", "n"]
/// });
/// assert_eq!(conforming_value(&schema), json!({"title": "mock", "n": 3}));
/// ```
pub fn conforming_value(schema: &Value) -> Value {
    build(schema, schema, 0)
}

fn build(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let Value::Object(map) = schema else {
        // `true`, `false` and malformed schemas: nothing better than null.
        return Value::Null;
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer));
        return target.map_or(Value::Null, |target| build(target, root, depth + 1));
    }
    if let Some(value) = map.get("const") {
        return value.clone();
    }
    if let Some(first) = map
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = map
            .get(key)
            .and_then(Value::as_array)
            .and_then(|v| v.first())
        {
            return build(first, root, depth + 1);
        }
    }
    if let Some(all) = map.get("allOf").and_then(Value::as_array) {
        return merge_all(all, root, depth);
    }
    match schema_type(map) {
        Some("object") => object(map, root, depth),
        Some("array") => array(map, root, depth),
        Some("string") => string(map),
        Some("integer") => number(map, true),
        Some("number") => number(map, false),
        Some("boolean") => Value::Bool(true),
        _ => Value::Null,
    }
}

fn schema_type(map: &Map<String, Value>) -> Option<&str> {
    match map.get("type") {
        Some(Value::String(kind)) => Some(kind),
        Some(Value::Array(kinds)) => kinds.iter().find_map(Value::as_str),
        _ if map.contains_key("properties") || map.contains_key("required") => Some("object"),
        _ if map.contains_key("items") => Some("array"),
        _ => None,
    }
}

fn object(map: &Map<String, Value>, root: &Value, depth: usize) -> Value {
    let properties = map.get("properties").and_then(Value::as_object);
    let extra = map.get("additionalProperties").filter(|v| v.is_object());
    let mut out = Map::new();
    for name in map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let property = properties.and_then(|p| p.get(name)).or(extra);
        let value = property.map_or(Value::Null, |p| build(p, root, depth + 1));
        out.insert(name.to_owned(), value);
    }
    Value::Object(out)
}

fn array(map: &Map<String, Value>, root: &Value, depth: usize) -> Value {
    let count = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
    let item = match map.get("items") {
        Some(items @ Value::Object(_)) => build(items, root, depth + 1),
        _ => Value::Null,
    };
    Value::Array((0..count).map(|_| item.clone()).collect())
}

fn string(map: &Map<String, Value>) -> Value {
    let example = match map.get("format").and_then(Value::as_str) {
        Some("date-time") => "1970-01-01T00:00:00Z",
        Some("date") => "1970-01-01",
        Some("time") => "00:00:00Z",
        Some("email") => "mock@example.com",
        Some("uri" | "url" | "iri") => "https://example.com/",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("ipv4") => "127.0.0.1",
        Some("ipv6") => "::1",
        Some("hostname") => "localhost",
        _ => "mock",
    };
    let min = map.get("minLength").and_then(Value::as_u64).unwrap_or(0);
    let max = map.get("maxLength").and_then(Value::as_u64);
    let mut text: String = example.to_owned();
    while (text.chars().count() as u64) < min {
        text.push('x');
    }
    if let Some(max) = max {
        text = text
            .chars()
            .take(usize::try_from(max).unwrap_or(usize::MAX))
            .collect();
    }
    Value::String(text)
}

fn number(map: &Map<String, Value>, integer: bool) -> Value {
    let bound = |key: &str| map.get(key).and_then(Value::as_f64);
    let mut value: f64 = 0.0;
    if let Some(min) = bound("minimum") {
        value = value.max(min);
    }
    if let Some(min) = bound("exclusiveMinimum")
        && value <= min
    {
        value = if integer {
            min.floor() + 1.0
        } else {
            min + 1.0
        };
    }
    if let Some(max) = bound("maximum") {
        value = value.min(max);
    }
    if let Some(max) = bound("exclusiveMaximum")
        && value >= max
    {
        value = if integer { max.ceil() - 1.0 } else { max - 1.0 };
    }
    if integer {
        let value = value.ceil();
        // Integral and in range by construction; fall back to 0 for absurd bounds.
        if value.abs() < 9.0e15 {
            return Value::Number(Number::from(value as i64));
        }
        return Value::Number(Number::from(0));
    }
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn merge_all(all: &[Value], root: &Value, depth: usize) -> Value {
    let mut merged = Map::new();
    for branch in all {
        match build(branch, root, depth + 1) {
            Value::Object(part) => merged.extend(part),
            other if merged.is_empty() => return other,
            _ => {}
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn session_title_schema() {
        let schema = json!({"type": "object", "properties": {"title": {"type": "string"}},
            "required": ["title"], "additionalProperties": false});
        assert_eq!(conforming_value(&schema), json!({"title": "mock"}));
    }

    #[test]
    fn nested_enums_arrays_refs_and_bounds() {
        let schema = json!({
            "type": "object",
            "$defs": {"tag": {"type": "string", "enum": ["red", "blue"]}},
            "properties": {
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
                "ok": {"type": "boolean"},
                "score": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 9},
                "age": {"type": ["integer", "null"], "minimum": 18},
                "when": {"type": "string", "format": "date-time"},
                "code": {"type": "string", "minLength": 6},
                "short": {"type": "string", "maxLength": 2},
                "choice": {"anyOf": [{"type": "null"}, {"type": "string"}]},
                "optional": {"type": "string"}
            },
            "required": ["tags", "ok", "score", "age", "when", "code", "short", "choice"]
        });
        assert_eq!(
            conforming_value(&schema),
            json!({
                "tags": ["red", "red"], "ok": true, "score": 1.5, "age": 18,
                "when": "1970-01-01T00:00:00Z", "code": "mockxx", "short": "mo", "choice": null
            })
        );
    }

    #[test]
    fn all_of_merges_objects_and_cycles_stop() {
        let schema = json!({"allOf": [
            {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}
        ]});
        assert_eq!(conforming_value(&schema), json!({"a": 1, "b": "mock"}));
        let cyclic = json!({"$ref": "#"});
        assert_eq!(conforming_value(&cyclic), Value::Null);
    }
}
