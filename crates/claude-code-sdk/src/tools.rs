//! In-process tools: async Rust functions the model can call, served to the CLI as an
//! MCP server that lives inside your process (an "SDK MCP server").
//!
//! ```no_run
//! use claude_code_sdk::{ClaudeCodeOptions, ToolResult, sdk_mcp_server, tool};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct AddArgs {
//!     a: f64,
//!     b: f64,
//! }
//!
//! let add = tool("add", "Add two numbers", |args: AddArgs| async move {
//!     Ok(ToolResult::text(format!("{}", args.a + args.b)))
//! });
//! let calc = sdk_mcp_server("calc", "1.0.0", [add]);
//! let options = ClaudeCodeOptions::builder()
//!     .sdk_mcp_server(calc)
//!     .allowed_tools(["mcp__calc__add"])
//!     .build()?;
//! # Ok::<(), claude_code_sdk::Error>(())
//! ```
//!
//! The model sees the tool as `mcp__<server>__<tool>`. Like any MCP tool it needs
//! permission: name it in `allowed_tools`, or approve it in a permission callback.
//!
//! Arguments are checked by deserializing them into the input type, whose JSON Schema
//! (from `schemars`) is what the model is shown. A bad argument, an unknown tool or a
//! handler error becomes an error tool result the model sees; it never breaks the
//! protocol. The MCP shapes come from the `rmcp` crate's model types; the JSON-RPC
//! envelope is answered here because the CLI drives these servers through control
//! requests (and re-initializes them), not over a transport `rmcp` could own.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock as Content, Implementation,
    InitializeResult, ListToolsResult, ServerCapabilities, Tool,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// What a tool returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    content: Vec<Content>,
    is_error: bool,
}

impl ToolResult {
    /// A text result.
    pub fn text(text: impl Into<String>) -> Self {
        ToolResult {
            content: vec![Content::text(text.into())],
            is_error: false,
        }
    }

    /// A JSON result, as text.
    pub fn json(value: &impl serde::Serialize) -> Self {
        ToolResult::text(serde_json::to_string(value).unwrap_or_else(|e| e.to_string()))
    }

    /// A base64 image.
    pub fn image(data: impl Into<String>, mime_type: impl Into<String>) -> Self {
        ToolResult {
            content: vec![Content::image(data.into(), mime_type.into())],
            is_error: false,
        }
    }

    /// An error result: the model sees the text and knows the tool failed.
    pub fn error(text: impl Into<String>) -> Self {
        ToolResult {
            content: vec![Content::text(text.into())],
            is_error: true,
        }
    }

    /// Adds more content.
    #[must_use]
    pub fn and(mut self, more: ToolResult) -> Self {
        self.content.extend(more.content);
        self.is_error |= more.is_error;
        self
    }

    /// Whether this is an error result.
    pub fn is_error(&self) -> bool {
        self.is_error
    }

    fn into_rmcp(self) -> CallToolResult {
        if self.is_error {
            CallToolResult::error(self.content)
        } else {
            CallToolResult::success(self.content)
        }
    }
}

type ToolFn = dyn Fn(Value) -> BoxFuture<'static, ToolResult> + Send + Sync;

/// The error a tool handler may return: its text becomes an error tool result.
pub type ToolError = Box<dyn std::error::Error + Send + Sync>;

/// A tool: a name, a description, an input schema and an async handler.
#[derive(Clone)]
pub struct SdkTool {
    name: String,
    description: String,
    schema: Map<String, Value>,
    handler: Arc<ToolFn>,
}

impl SdkTool {
    /// The tool's name within its server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JSON Schema of its input.
    pub fn input_schema(&self) -> &Map<String, Value> {
        &self.schema
    }
}

impl fmt::Debug for SdkTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkTool")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Defines a tool from an async function of its typed arguments.
///
/// `A` gives the schema (`schemars::JsonSchema`) and is deserialized from the model's
/// arguments; a mismatch becomes an error result naming the problem. The function's
/// error, if it returns one, becomes an error result with the error's text.
pub fn tool<A, F, Fut>(name: impl Into<String>, description: impl Into<String>, f: F) -> SdkTool
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ToolResult, ToolError>> + Send + 'static,
{
    let name = name.into();
    let schema = match serde_json::to_value(schemars::schema_for!(A)) {
        Ok(Value::Object(mut map)) => {
            map.remove("$schema");
            map.remove("title");
            map
        }
        _ => json!({"type": "object"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let f = Arc::new(f);
    let tool_name = name.clone();
    let handler: Arc<ToolFn> = Arc::new(move |args: Value| {
        let f = Arc::clone(&f);
        let tool_name = tool_name.clone();
        Box::pin(async move {
            let args = match serde_json::from_value::<A>(args) {
                Ok(args) => args,
                Err(err) => {
                    return ToolResult::error(format!("invalid arguments for {tool_name}: {err}"));
                }
            };
            match f(args).await {
                Ok(result) => result,
                Err(err) => ToolResult::error(format!("{tool_name} failed: {err}")),
            }
        })
    });
    SdkTool {
        name,
        description: description.into(),
        schema,
        handler,
    }
}

/// A group of tools served in-process under one MCP server name.
#[derive(Clone)]
pub struct SdkMcpServer {
    name: String,
    version: String,
    tools: Arc<BTreeMap<String, SdkTool>>,
}

/// Groups tools into an in-process MCP server; register it with
/// [`ClaudeCodeOptionsBuilder::sdk_mcp_server`](crate::ClaudeCodeOptionsBuilder::sdk_mcp_server).
pub fn sdk_mcp_server(
    name: impl Into<String>,
    version: impl Into<String>,
    tools: impl IntoIterator<Item = SdkTool>,
) -> SdkMcpServer {
    SdkMcpServer {
        name: name.into(),
        version: version.into(),
        tools: Arc::new(tools.into_iter().map(|t| (t.name.clone(), t)).collect()),
    }
}

impl SdkMcpServer {
    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names the model sees: `mcp__<server>__<tool>`.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools
            .keys()
            .map(|t| format!("mcp__{}__{t}", self.name))
            .collect()
    }

    /// Identifies this server's tool set (for cache and pool keys).
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.tools) as *const () as usize
    }

    /// Answers one JSON-RPC message from the CLI. Notifications get an empty result.
    pub(crate) async fn handle(&self, message: Value) -> Value {
        let id = message.get("id").cloned();
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let result: Result<Value, (i64, String)> = match method {
            "initialize" => {
                let capabilities: ServerCapabilities =
                    serde_json::from_value(json!({"tools": {}})).unwrap_or_default();
                let info = InitializeResult::new(capabilities)
                    .with_server_info(Implementation::new(self.name.clone(), self.version.clone()));
                let mut value = serde_json::to_value(&info).unwrap_or(Value::Null);
                // Speak the version the client asked for: the CLI moves faster than rmcp.
                if let Some(v) = params.get("protocolVersion") {
                    value["protocolVersion"] = v.clone();
                }
                Ok(value)
            }
            "tools/list" => {
                let tools: Vec<Tool> = self
                    .tools
                    .values()
                    .map(|t| {
                        Tool::new(
                            t.name.clone(),
                            t.description.clone(),
                            Arc::new(t.schema.clone()),
                        )
                    })
                    .collect();
                Ok(serde_json::to_value(ListToolsResult::with_all_items(tools))
                    .unwrap_or(Value::Null))
            }
            "tools/call" => match serde_json::from_value::<CallToolRequestParams>(params) {
                Ok(call) => {
                    let args = call.arguments.map(Value::Object).unwrap_or(json!({}));
                    let result = match self.tools.get(call.name.as_ref()) {
                        Some(tool) => {
                            let fut = (tool.handler)(args);
                            // A panicking handler is an error result, not a dead router.
                            match tokio::spawn(fut).await {
                                Ok(result) => result,
                                Err(err) => ToolResult::error(format!(
                                    "{} failed: {}",
                                    call.name,
                                    if err.is_panic() {
                                        "it panicked"
                                    } else {
                                        "it was cancelled"
                                    }
                                )),
                            }
                        }
                        None => ToolResult::error(format!(
                            "unknown tool {:?} on server {}; it has: {}",
                            call.name,
                            self.name,
                            self.tools.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    Ok(serde_json::to_value(result.into_rmcp()).unwrap_or(Value::Null))
                }
                Err(err) => Err((-32602, format!("invalid tools/call params: {err}"))),
            },
            "ping" => Ok(json!({})),
            m if m.starts_with("notifications/") => return json!({"jsonrpc": "2.0", "result": {}}),
            other => Err((-32601, format!("method not found: {other}"))),
        };
        match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err((code, message)) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
            }
        }
    }
}

impl fmt::Debug for SdkMcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkMcpServer")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for SdkMcpServer {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.tools, &other.tools)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, JsonSchema)]
    struct AddArgs {
        a: f64,
        b: f64,
    }

    fn calc() -> SdkMcpServer {
        let add = tool("add", "Add two numbers", |args: AddArgs| async move {
            Ok(ToolResult::text(format!("{}", args.a + args.b)))
        });
        let fail = tool("fail", "Always fails", |_: AddArgs| async move {
            Err("disk on fire".into())
        });
        sdk_mcp_server("calc", "1.0.0", [add, fail])
    }

    #[tokio::test]
    async fn speaks_mcp() {
        let server = calc();
        let init = server
            .handle(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"claude-code","version":"2"}}}))
            .await;
        assert_eq!(init["id"], 0);
        assert_eq!(init["result"]["serverInfo"]["name"], "calc");
        assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
        assert!(init["result"]["capabilities"]["tools"].is_object());

        let list = server
            .handle(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await;
        let tools = list["result"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0]["name"], "add");
        assert_eq!(tools[0]["inputSchema"]["required"], json!(["a", "b"]));

        let call = |args: Value, name: &str| json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":name,"arguments":args}});
        let ok = server.handle(call(json!({"a": 1, "b": 2}), "add")).await;
        assert_eq!(ok["result"]["content"][0]["text"], "3");
        assert_ne!(ok["result"]["isError"], true);

        let bad = server.handle(call(json!({"a": "one"}), "add")).await;
        assert_eq!(bad["result"]["isError"], true);
        assert!(
            bad["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("invalid arguments")
        );

        let failed = server.handle(call(json!({"a": 1, "b": 2}), "fail")).await;
        assert!(
            failed["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("disk on fire")
        );

        let unknown = server.handle(call(json!({}), "mul")).await;
        assert_eq!(unknown["result"]["isError"], true);

        let note = server
            .handle(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await;
        assert_eq!(note["result"], json!({}));
        assert_eq!(server.tool_names(), ["mcp__calc__add", "mcp__calc__fail"]);
    }
}
