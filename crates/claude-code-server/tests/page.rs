//! The web page at `/`: served without a token, self-contained, and wired to the API.

use claude_code_server::{AppState, ServerConfig, router};

#[tokio::test]
async fn the_page_is_served_without_a_token_and_uses_the_streaming_api() {
    let root = tempfile::tempdir().unwrap();
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap())
        // Spares are tested on their own (tests/pool_bound.rs): none here.
        .prewarm(0)
        .api_token("secret")
        .project_root(root.path());
    let app = router(AppState::new(config).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();

    // The endpoints and event names it relies on.
    for needle in [
        "/v1/query/stream",
        "/v1/approvals/",
        "include_partial_messages",
        "permission_request",
        "\"done\"",
        "Authorization",
        // A reload reattaches to the running turn (tests/browser.rs runs it).
        "sessionStorage",
        "/events",
        "Last-Event-ID",
        "/cancel",
    ] {
        assert!(page.contains(needle), "the page does not mention {needle}");
    }
    // Works offline, and never turns server data into markup.
    for forbidden in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "innerHTML",
        "insertAdjacentHTML",
    ] {
        assert!(!page.contains(forbidden), "the page contains {forbidden}");
    }
}
