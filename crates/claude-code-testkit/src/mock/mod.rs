//! [`MockAnthropic`]: a local Anthropic Messages API for the real CLI to talk to.

mod demo;
mod reply;
mod request;
mod rule;
mod schema;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use reply::StreamCut;

pub use demo::{DEMO_FILE, demo_rules};
pub use reply::{DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, Reply};
pub use request::{RecordedRequest, RequestKind, ToolResult, ToolUse};
pub use rule::Rule;
pub use schema::conforming_value;

use reply::{Counters, Rendered, error_body};

/// The name of the tool through which CLI 2.1.331 receives `--json-schema` output.
pub const STRUCTURED_OUTPUT_TOOL: &str = "StructuredOutput";

/// A mock of the Anthropic Messages API on `127.0.0.1`, scripted with [`Rule`]s.
///
/// Point the CLI at [`MockAnthropic::url`] with `ANTHROPIC_BASE_URL` (see
/// [`Sandbox`](crate::Sandbox)). The mock serves:
///
/// - `POST /v1/messages` (any query, e.g. `?beta=true`): a model **turn** is answered by
///   the first matching rule, else by the default reply, a text
///   `Mock reply to: <prompt>`. Streaming requests (`"stream": true`) get Anthropic SSE
///   (`message_start`, `ping`, `content_block_start/delta/stop`, `message_delta`,
///   `message_stop`) with the request's `model` echoed; others get the JSON message.
///   A request that offers the `StructuredOutput` tool (`--json-schema`) and gets a
///   reply that calls no tool gets a conforming `StructuredOutput` call appended (see
///   [`Reply::without_structured_output`]).
/// - `POST /v1/messages` with a `json_schema` output format: a **housekeeping** side
///   query (session title and the like), answered with [`conforming_value`] as JSON text
///   and not counted as a turn.
/// - `POST /v1/messages/count_tokens`: `{"input_tokens": 100}`.
/// - anything else: `404` with an Anthropic `not_found_error` body.
///
/// Every request is recorded ([`MockAnthropic::all_requests`]). The server runs on its
/// own thread and runtime, so it keeps serving while a test blocks, and it stops, with
/// every open connection, when the `MockAnthropic` is dropped.
///
/// ```no_run
/// # async fn demo() {
/// use claude_code_testkit::{MockAnthropic, Reply, Rule};
/// use serde_json::json;
///
/// let mock = MockAnthropic::start().await;
/// mock.on(Rule::prompt_contains("USE_BASH").steps([
///     Reply::tool_use("Bash", json!({"command": "echo hi > out.txt"})),
///     Reply::text("done"),
/// ]));
/// // ... run the CLI with ANTHROPIC_BASE_URL = mock.url() ...
/// assert!(mock.requests()[1].has_tool_result_for("Bash"));
/// # }
/// ```
pub struct MockAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<MockState>,
    counters: Counters,
}

/// Requests a mock keeps for [`MockAnthropic::requests`]: the most recent ones. A
/// long-running mock (the `mock-anthropic` binary, a soak) would otherwise grow by
/// every request the CLI sends (tens of KiB each).
pub const MAX_RECORDED_REQUESTS: usize = 1000;

#[derive(Default)]
struct MockState {
    rules: Vec<Slot>,
    /// The last [`MAX_RECORDED_REQUESTS`] requests.
    requests: Vec<RecordedRequest>,
    /// Requests received, all told.
    received: usize,
    /// Turn fingerprint (see `request::turn_fingerprint`) -> index of the rule that
    /// started the turn, `None` for the default reply.
    turns: HashMap<String, Option<usize>>,
}

struct Slot {
    rule: Rule,
    turns_started: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, MockState> {
        // A panicking rule closure must not take the whole mock down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MockAnthropic {
    /// Starts a mock with the default behaviour only, on `127.0.0.1` and a free port.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start() -> Self {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("mock-anthropic: cannot bind 127.0.0.1:0")
    }

    /// Starts a mock with the [`demo_rules`].
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start_demo() -> Self {
        let mock = Self::start().await;
        for rule in demo_rules() {
            mock.on(rule);
        }
        mock
    }

    /// Starts a mock on `addr` (port 0 picks a free port) without needing an async
    /// context: the server has its own thread and runtime.
    ///
    /// # Errors
    /// If the address cannot be bound, or the thread or runtime cannot be created.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let router = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&shared));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("mock-anthropic-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener.tap_io(|tcp| {
                            // Small SSE frames must not wait for Nagle.
                            let _ = tcp.set_nodelay(true);
                        }),
                        Err(error) => {
                            tracing::error!(%error, "mock-anthropic: cannot use listener");
                            return;
                        }
                    };
                    tokio::select! {
                        result = axum::serve(listener, router) => {
                            if let Err(error) = result {
                                tracing::error!(%error, "mock-anthropic: server failed");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels every connection task.
            })?;
        Ok(Self {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The base URL for `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a rule after the existing ones. Rules can be added while the CLI runs.
    pub fn on(&self, rule: Rule) -> &Self {
        self.shared.state().rules.push(Slot {
            rule,
            turns_started: 0,
        });
        self
    }

    /// Removes every rule (and forgets which rule started which turn).
    pub fn clear_rules(&self) {
        let mut state = self.shared.state();
        state.rules.clear();
        state.turns.clear();
    }

    /// The model-turn requests ([`RequestKind::Turn`]), in arrival order (of the last
    /// [`MAX_RECORDED_REQUESTS`] requests).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|request| request.kind() == RequestKind::Turn)
            .cloned()
            .collect()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Every request, housekeeping and unknown endpoints included, in arrival order.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }
}

impl fmt::Debug for MockAnthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        f.debug_struct("MockAnthropic")
            .field("addr", &self.addr)
            .field("rules", &state.rules.len())
            .field("requests", &state.requests.len())
            .finish()
    }
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The one handler: classifies, records and answers every request.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = parse_body(&body);
    let kind = classify(&method, uri.path(), &body);
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let mut request = RecordedRequest::new(
        method.to_string(),
        uri.path().to_owned(),
        uri.query().map(str::to_owned),
        headers,
        body,
        kind,
    );
    let step = request.step();
    tracing::debug!(%method, path = uri.path(), ?kind, step, "mock-anthropic request");
    match kind {
        RequestKind::Unknown => {
            let malformed =
                method == Method::POST && uri.path().trim_end_matches('/') == "/v1/messages";
            let (status, error_type, message) = if malformed {
                (
                    400,
                    "invalid_request_error",
                    "mock: the body is not a JSON object",
                )
            } else {
                (404, "not_found_error", "mock: no such endpoint")
            };
            let id = record(&shared, request);
            error_response(status, None, &error_body(error_type, message), id)
        }
        RequestKind::CountTokens => {
            let id = record(&shared, request);
            let mut response =
                axum::Json(json!({"input_tokens": DEFAULT_INPUT_TOKENS})).into_response();
            set_request_id(&mut response, id);
            response
        }
        RequestKind::Housekeeping => {
            let value = request.output_json_schema().map(conforming_value);
            let reply =
                Reply::text(value.unwrap_or(Value::Null).to_string()).without_structured_output();
            let (model, streaming) = (model_of(&request), request.is_streaming());
            let id = record(&shared, request);
            respond(&shared, reply, &model, streaming, id, None).await
        }
        RequestKind::Turn => {
            let reply = choose_reply(&shared, &mut request);
            let (model, streaming) = (model_of(&request), request.is_streaming());
            let turn = (request.step() == 0).then_some(request.matched_rule());
            let id = record(&shared, request);
            respond(&shared, reply, &model, streaming, id, turn).await
        }
    }
}

fn parse_body(body: &Bytes) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn classify(method: &Method, path: &str, body: &Value) -> RequestKind {
    let path = path.trim_end_matches('/');
    match (method, path) {
        (&Method::POST, "/v1/messages/count_tokens") => RequestKind::CountTokens,
        (&Method::POST, "/v1/messages") if body.is_object() => {
            let format = body
                .pointer("/output_config/format/type")
                .or_else(|| body.pointer("/output_format/type"));
            if format.and_then(Value::as_str) == Some("json_schema") {
                RequestKind::Housekeeping
            } else {
                RequestKind::Turn
            }
        }
        _ => RequestKind::Unknown,
    }
}

fn model_of(request: &RecordedRequest) -> String {
    request.model().unwrap_or("claude-mock").to_owned()
}

/// Records a request and returns its number (1-based), used as its `request-id`.
fn record(shared: &Shared, request: RecordedRequest) -> usize {
    let mut state = shared.state();
    if state.requests.len() >= MAX_RECORDED_REQUESTS {
        state.requests.remove(0);
    }
    state.requests.push(request);
    state.received += 1;
    state.received
}

/// Picks the rule for a turn request (see [`Rule`]) and computes its reply.
fn choose_reply(shared: &Shared, request: &mut RecordedRequest) -> Reply {
    let chosen = {
        let mut state = shared.state();
        let index = if request.step() == 0 {
            let index = state.rules.iter().position(|slot| {
                slot.rule.matches(request)
                    && slot
                        .rule
                        .turn_limit()
                        .is_none_or(|limit| slot.turns_started < limit)
            });
            if let Some(index) = index {
                state.rules[index].turns_started += 1;
            }
            index
        } else {
            let known = request::turn_fingerprint(request)
                .and_then(|fingerprint| state.turns.get(&fingerprint).copied());
            known.unwrap_or_else(|| {
                state
                    .rules
                    .iter()
                    .position(|slot| slot.rule.matches(request))
            })
        };
        index.map(|index| (index, state.rules[index].rule.clone()))
    };
    request.rule = chosen.as_ref().map(|(index, _)| *index);
    // Rule closures run outside the lock: they may be slow, or panic.
    let reply = chosen
        .and_then(|(_, rule)| rule.reply_for(request))
        .unwrap_or_else(|| {
            Reply::text(format!(
                "Mock reply to: {}",
                request.prompt().unwrap_or_default()
            ))
        });
    reply.complete_structured_output(request.structured_output_schema())
}

/// Renders a reply; `turn` is `Some(rule)` for the first request of a turn, whose
/// reply is remembered so the turn's later steps find their rule.
async fn respond(
    shared: &Shared,
    reply: Reply,
    model: &str,
    streaming: bool,
    id: usize,
    turn: Option<Option<usize>>,
) -> Response {
    let delay = reply.delay_before();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let remember = |fingerprint: String| {
        if let Some(rule) = turn {
            shared.state().turns.insert(fingerprint, rule);
        }
    };
    let mut response = match reply.render(&shared.counters, model, streaming) {
        Rendered::Error {
            status,
            retry_after,
            body,
        } => return error_response(status, retry_after, &body, id),
        Rendered::Json {
            body,
            cut: None,
            fingerprint,
        } => {
            remember(fingerprint);
            axum::Json(body).into_response()
        }
        Rendered::Json {
            body,
            cut: Some(cut),
            fingerprint,
        } => {
            remember(fingerprint);
            let bytes = Bytes::from(body.to_string());
            let half = bytes.slice(..bytes.len() / 2);
            let stream = futures::stream::once(async move { Ok(half) }).chain(broken(cut));
            let mut response = Body::from_stream(stream).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Rendered::Stream {
            frames,
            cut,
            chunk_delay,
            fingerprint,
        } => {
            remember(fingerprint);
            let stream =
                futures::stream::unfold(frames.into_iter(), move |mut frames| async move {
                    let frame = frames.next()?;
                    if frame.paced && !chunk_delay.is_zero() {
                        tokio::time::sleep(chunk_delay).await;
                    }
                    Some((Ok::<_, io::Error>(frame.bytes), frames))
                });
            let stream = match cut {
                Some(cut) => stream.chain(broken(cut)).boxed(),
                None => stream.boxed(),
            };
            let mut response = Body::from_stream(stream).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    set_request_id(&mut response, id);
    response
}

/// The end of a broken response: nothing, ever (a stall), or an error that makes the
/// server drop the connection without ending the response (a reset).
fn broken(cut: StreamCut) -> futures::stream::BoxStream<'static, Result<Bytes, io::Error>> {
    match cut {
        StreamCut::Stall => futures::stream::pending().boxed(),
        StreamCut::Reset => futures::stream::once(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock: connection reset mid-stream",
            ))
        })
        .boxed(),
    }
}

fn error_response(status: u16, retry_after: Option<u64>, body: &Value, id: usize) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    set_request_id(&mut response, id);
    response
}

fn set_request_id(response: &mut Response, id: usize) {
    if let Ok(value) = HeaderValue::from_str(&format!("req_mock_{id}")) {
        response.headers_mut().insert("request-id", value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_log_keeps_the_last_requests_and_numbers_them_all() {
        let shared = Shared::default();
        let total = MAX_RECORDED_REQUESTS + 5;
        let mut last = 0;
        for i in 0..total {
            let request = RecordedRequest::new(
                "POST".into(),
                "/v1/messages".into(),
                None,
                Vec::new(),
                json!({"n": i}),
                RequestKind::Turn,
            );
            last = record(&shared, request);
        }
        assert_eq!(last, total, "request ids keep counting");
        let state = shared.state();
        assert_eq!(state.requests.len(), MAX_RECORDED_REQUESTS);
        assert_eq!(state.requests[0].body["n"], 5, "the oldest went first");
    }
}
