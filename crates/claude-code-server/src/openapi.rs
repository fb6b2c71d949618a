//! The OpenAPI description of the API, served at `GET /openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    ApprovalAnswer, NewSession, PermissionRequest, QueryRequest, QueryResponse, ResultSummary,
    SessionTurn,
};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "claude-code-server", description = "The Claude Code SDK over HTTP"),
    paths(
        routes::health,
        routes::query_json,
        routes::query_stream,
        routes::approve,
        routes::start_session,
        routes::continue_session,
        routes::session_history,
        routes::end_session,
        routes::stats,
        routes::audit_log,
        routes::metrics,
        crate::compat::query,
        crate::compat::stream,
    ),
    components(schemas(
        QueryRequest,
        QueryResponse,
        ResultSummary,
        NewSession,
        SessionTurn,
        ApprovalAnswer,
        PermissionRequest,
        crate::compat::CompatRequest,
        crate::compat::CompatResponse,
        crate::compat::CompatMessage,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
