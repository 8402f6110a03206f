//! The API's OpenAPI 3.1 document, `GET /api/v1/openapi.json` (no token needed, like
//! `/healthz`): generated with utoipa from the handlers' `#[utoipa::path]` attributes and the
//! types they take and answer, so it cannot drift from the code. `docs/openapi.json` is a copy;
//! `tests/serve.rs` checks that the copy is what the server serves and that every route of the
//! router is listed.
//!
//! The error answers every endpoint shares (401 without a valid token, 403 for a viewer that
//! writes, 408, 413, 500) are added here to each operation they apply to, rather than repeated on
//! every handler.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi};

use super::{events, pipelines, resources, runs, tasks};

/// The name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// Operations that stream their answer: the request timeout does not apply to them.
const STREAMING: &[&str] = &["getTaskLog", "getResourceContent", "streamEvents"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "grit serve API",
        description = "Trigger, follow and cancel runs of grit pipelines; read their tasks, logs \
            and resources. Every endpoint but `/healthz` and `/openapi.json` needs \
            `Authorization: Bearer <token>` (mint one with `grit token --role viewer|operator`); \
            a viewer reads, an operator also triggers, cancels and deletes. Errors are \
            `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        super::healthz,
        document,
        pipelines::list,
        pipelines::show,
        runs::trigger,
        runs::list,
        runs::show,
        runs::delete,
        runs::cancel,
        tasks::of_run,
        tasks::show,
        tasks::log,
        resources::list,
        resources::show,
        resources::content,
        events::stream,
        events::metrics,
    ),
    components(schemas(super::ErrorBody)),
    modifiers(&Shared),
    tags(
        (name = "pipelines", description = "What the server runs"),
        (name = "runs", description = "Trigger, list, follow, cancel and delete runs"),
        (name = "tasks", description = "The tasks of runs and their logs"),
        (name = "resources", description = "The pipeline's store: resources, provenance, content"),
        (name = "server", description = "Health, the event stream, metrics, this document"),
    )
)]
struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the OpenAPI document: {e}\"}}"))
});

/// The document as the server serves it (what `docs/openapi.json` holds).
pub fn json() -> &'static str {
    &DOCUMENT
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "server",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

/// `{name}`: a pipeline the server runs.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its description is used.
pub struct PipelineName {
    /// The pipeline's name in the server config.
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$", example = "quickstart")]
    name: String,
}

/// `{id}` of a run.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its description is used.
pub struct RunId {
    /// `PIPELINE.N`
    #[param(example = "quickstart.1")]
    id: String,
}

/// `{id}` of a task.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its description is used.
pub struct TaskId {
    /// `PIPELINE.N`
    #[param(example = "quickstart.3")]
    id: String,
}

/// `{hash}` of a resource.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its description is used.
pub struct Hash {
    /// Its SHA-256, or 8 or more hex characters of it.
    hash: String,
}

/// Adds the bearer scheme and the error answers operations share.
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A JWT (HS256) from `grit token --role viewer|operator`",
                        ))
                        .build(),
                ),
            );
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Delete, &mut item.delete),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    add_shared_errors(method, operation);
                }
            }
        }
    }
}

fn add_shared_errors(method: HttpMethod, operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    if !authenticated {
        return;
    }
    let streaming = operation
        .operation_id
        .as_deref()
        .is_some_and(|id| STREAMING.contains(&id));
    let mut shared = vec![
        (
            "401",
            "No token, or an expired, forged or malformed one (`unauthorized`)",
        ),
        (
            "500",
            "The server or its store failed (`internal`; the log says why), or an object is \
             damaged (`store_damaged`)",
        ),
    ];
    if method != HttpMethod::Get {
        shared.push((
            "403",
            "A viewer's token: this needs the operator role (`forbidden`)",
        ));
    }
    if !streaming {
        shared.push((
            "408",
            "Not answered within the server's `request_timeout` (`request_timeout`)",
        ));
    }
    if operation.request_body.is_some() {
        shared.push(("413", "The body is over 1 MiB (`payload_too_large`)"));
    }
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_params && !operation.responses.responses.contains_key("400") {
        shared.push((
            "400",
            "A path segment that is not UTF-8, or a bad query value (`bad_request`)",
        ));
    }
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        let runs = &doc["paths"]["/api/v1/runs"]["get"];
        assert!(runs["responses"]["401"].is_object(), "{runs}");
        assert!(runs["responses"]["408"].is_object(), "{runs}");
        let health = &doc["paths"]["/api/v1/healthz"]["get"];
        assert!(health["security"].is_null(), "{health}");
        assert!(health["responses"]["401"].is_null(), "{health}");
        let events = &doc["paths"]["/api/v1/events"]["get"];
        assert!(events["responses"]["408"].is_null(), "streaming: {events}");
        let trigger = &doc["paths"]["/api/v1/pipelines/{name}/runs"]["post"];
        for status in ["202", "400", "401", "403", "404", "413", "429"] {
            assert!(trigger["responses"][status].is_object(), "{status}");
        }
    }
}
