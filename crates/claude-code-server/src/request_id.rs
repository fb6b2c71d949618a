//! A request id on every request and response (`x-request-id`), in the tracing span of
//! every log line about the request, and at hand for error messages.
//!
//! A client (or a proxy in front) may send its own `x-request-id`; it is kept when it
//! is 1 to 64 characters of `A-Z a-z 0-9 . _ : -`, and replaced by a new UUID
//! otherwise, so that nothing odd reaches the log.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

/// The header.
const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The id of the request being handled by this task, if any.
pub(crate) fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `future` under request id `id`: the execution of a run, on whichever replica,
/// under the id of the request that submitted it.
pub(crate) async fn within<F: std::future::Future>(id: Option<&str>, future: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(Arc::from(id), future).await,
        None => future.await,
    }
}

/// The router with request ids and a tracing span per request.
pub(crate) fn layer(router: Router) -> Router {
    // The last layer added runs first.
    router
        .layer(middleware::from_fn(scope))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(span_for)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                // Failures are logged where they happen, with their details.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::map_request(drop_unusable_id))
}

/// Removes a client's `x-request-id` that is not a short plain token.
async fn drop_unusable_id(mut request: Request) -> Request {
    let usable = request.headers().get(HEADER).is_none_or(usable);
    if !usable {
        request.headers_mut().remove(HEADER);
    }
    request
}

fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn id_of(request: &Request) -> Option<&str> {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
}

/// The span of a request: its id, method, route (the pattern, never the raw path,
/// which may hold a session id) and the client's address.
fn span_for(request: &Request) -> Span {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| tracing::field::display(*addr));
    tracing::info_span!(
        "request",
        request_id = id_of(request).unwrap_or("-"),
        method = %request.method(),
        route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("-", MatchedPath::as_str),
        remote,
    )
}

/// Makes the id available to [`current`] while the request is handled.
async fn scope(request: Request, next: Next) -> Response {
    let id: Arc<str> = Arc::from(id_of(&request).unwrap_or("-"));
    CURRENT.scope(id, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_ids_are_kept() {
        for ok in ["abc", "0f8e-12", "req_1.2:3", &"a".repeat(64)] {
            assert!(usable(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in ["", "a b", "x\"y", "id=1 level=error", &"a".repeat(65), "é"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert!(!usable(&value), "{bad}");
        }
    }
}
