//! The OpenAPI description of the API, served at `GET /openapi.json`.
//!
//! Each handler's annotation lists the answers particular to it; a modifier
//! adds those every route of a kind can give, so none is forgotten:
//!
//! | routes | answers |
//! |---|---|
//! | every route behind the bearer check | `401` (with `WWW-Authenticate`), `403 forbidden_host` (a server without tokens answers only `localhost`) |
//! | every route with a JSON body | `400` (not the expected JSON), `413` (over `max_body_bytes`), `415` (not `application/json`) |
//! | every route | `503` with `Retry-After`: too many connections, or (behind the bearer check) the database does not answer |
//! | every route behind the bearer check | `507` with `Retry-After`: the database has no room to write |
//!
//! The conformance test (`tests/openapi_conformance.rs`) runs schemathesis against
//! the live server with this document.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::api::{
    ApprovalAnswer, ApprovalCounts, Health, HealthModes, NewSession, PermissionRequest,
    QueryRequest, QueryResponse, Ready, ResultSummary, RunCounts, RunStatus, SessionCounts,
    SessionHistory, SessionTurn, SessionTurnRecord, Stats, StreamEvent, StreamEventKind,
};
use crate::error::{ErrorBody, ErrorDetail};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "claude-code-server", description = "The Claude Code SDK over HTTP"),
    paths(
        routes::page,
        routes::health,
        routes::ready,
        routes::openapi,
        routes::query_json,
        routes::query_stream,
        routes::approve,
        routes::start_session,
        routes::continue_session,
        routes::interrupt_session,
        routes::session_history,
        routes::end_session,
        routes::run_status,
        routes::run_events,
        routes::cancel_run,
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
        ErrorBody,
        ErrorDetail,
        Health,
        HealthModes,
        Ready,
        RunStatus,
        SessionHistory,
        SessionTurnRecord,
        Stats,
        RunCounts,
        SessionCounts,
        ApprovalCounts,
        StreamEvent,
        StreamEventKind,
        crate::compat::CompatRequest,
        crate::compat::CompatResponse,
        crate::compat::CompatMessage,
    )),
    modifiers(&BearerAuth, &CommonAnswers),
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

/// Adds the answers every route of a kind can give (see the module docs).
struct CommonAnswers;

/// An error answer: an [`ErrorBody`] as JSON, with `Retry-After` when `retry` (the
/// header is a number of seconds).
fn error_answer(description: &str, retry: bool) -> Response {
    let mut answer = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if retry {
        answer = answer.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$")),
                ))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    answer.build()
}

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let common = [
            (
                "Unauthorized",
                ResponseBuilder::from(error_answer(
                    "No bearer token, or one the server does not accept (`unauthorized`)",
                    false,
                ))
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("`Bearer`"))
                        .build(),
                )
                .build(),
            ),
            (
                "ForbiddenHost",
                error_answer(
                    "A server without tokens answers only requests for `localhost` (`forbidden_host`)",
                    false,
                ),
            ),
            (
                "BadRequest",
                error_answer(
                    "The body is not the JSON this route takes, or a string in it has a NUL (`invalid_request`)",
                    false,
                ),
            ),
            (
                "PayloadTooLarge",
                error_answer(
                    "The body is over the server's limit (`payload_too_large`)",
                    false,
                ),
            ),
            (
                "UnsupportedMediaType",
                error_answer(
                    "The body is not `application/json` (`unsupported_media_type`)",
                    false,
                ),
            ),
            (
                "Unavailable",
                error_answer(
                    "Too many connections (`too_many_connections`), the database does not answer (`database_unavailable`), or the server is shutting down",
                    true,
                ),
            ),
            (
                "InsufficientStorage",
                error_answer(
                    "The server's database has no room to write (`insufficient_storage`)",
                    true,
                ),
            ),
        ];
        // The compat routes answer a body they cannot take in their own shape.
        let compat = [
            (
                "CompatBadRequest",
                compat_answer("The body is not the JSON this route takes (`success: false`)"),
            ),
            (
                "CompatPayloadTooLarge",
                compat_answer("The body is over the server's limit (`success: false`)"),
            ),
            (
                "CompatUnsupportedMediaType",
                compat_answer("The body is not `application/json` (`success: false`)"),
            ),
        ];
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, answer) in common.into_iter().chain(compat) {
            components.responses.insert(name.to_owned(), answer.into());
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let compat = path.starts_with("/api/claude/");
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation, compat);
            }
        }
    }
}

/// An answer of the compat routes: a `CompatResponse` as JSON.
fn compat_answer(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("CompatResponse")))
                .build(),
        )
        .build()
}

fn add_common(operation: &mut Operation, compat: bool) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let with_body = operation.request_body.is_some();
    let mut add = |status: &str, name: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if secured {
        add("401", "Unauthorized");
        add("403", "ForbiddenHost");
    }
    if with_body && compat {
        add("400", "CompatBadRequest");
        add("413", "CompatPayloadTooLarge");
        add("415", "CompatUnsupportedMediaType");
    } else if with_body {
        add("400", "BadRequest");
        add("413", "PayloadTooLarge");
        add("415", "UnsupportedMediaType");
    }
    add("503", "Unavailable");
    if secured {
        add("507", "InsufficientStorage");
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
