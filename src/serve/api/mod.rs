//! The HTTP API under `/api/v1`: the router, the error shape every endpoint shares
//! (`{"error": {"code", "message"}}`), bearer-token authentication, the body limit and request
//! timeouts. The handlers live in one file per resource; [`openapi`] describes them all.

// The web UI ([`super::ui`]) serves some of these handlers again behind its session cookie.
pub(crate) mod events;
pub mod openapi;
mod pipelines;
pub(crate) mod resources;
pub(crate) mod runs;
pub(crate) mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use super::auth::{Claims, Role, Secret, TokenError};
use super::worker::{Hub, Pipeline};
use crate::store::{self, ObjectError, StoreError};
use tokio::sync::watch;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 1 << 20;

/// What every handler shares.
pub struct AppState {
    pub pipelines: BTreeMap<String, Arc<Pipeline>>,
    pub secret: Secret,
    pub request_timeout: Duration,
    pub hub: Arc<Hub>,
    /// Turns true when the server stops: streaming answers end then.
    pub stopping: watch::Receiver<bool>,
}

impl AppState {
    /// The pipeline a store-wide request means: `name`, or the only one when the server has one.
    fn pipeline_or_only(&self, name: Option<&str>) -> Result<&Arc<Pipeline>, ApiError> {
        match name {
            Some(name) => self.pipeline(name),
            None if self.pipelines.len() == 1 => self
                .pipelines
                .values()
                .next()
                .ok_or_else(|| ApiError::not_found("no pipelines")),
            None => Err(ApiError::bad_request(format!(
                "pipeline: this server has several pipelines; name one with ?pipeline= ({})",
                self.pipelines
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub(crate) fn pipeline(&self, name: &str) -> Result<&Arc<Pipeline>, ApiError> {
        self.pipelines.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "no pipeline `{name}` on this server (it serves: {})",
                self.pipelines
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

pub type Shared = Arc<AppState>;

/// The router of the whole API.
pub fn router(state: Shared) -> Router {
    Router::new()
        .nest("/api/v1", v1(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Every route under `/api/v1`. Each one is described in [`openapi`]; `tests/serve.rs` reads the
/// `.route(` calls of this function and checks that `/api/v1/openapi.json` lists them all.
fn v1(state: Shared) -> Router<Shared> {
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi::document));
    let authenticated = Router::new()
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{name}", get(pipelines::show))
        .route("/pipelines/{name}/runs", post(runs::trigger))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show).delete(runs::delete))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/tasks", get(tasks::of_run))
        .route("/tasks/{id}", get(tasks::show))
        .route("/resources", get(resources::list))
        .route("/resources/{hash}", get(resources::show))
        .route("/metrics", get(events::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit));
    // Streaming answers last as long as the client wants: no request timeout.
    let streaming = Router::new()
        .route("/tasks/{id}/log", get(tasks::log))
        .route("/resources/{hash}/content", get(resources::content))
        .route("/events", get(events::stream))
        .route_layer(middleware::from_fn_with_state(state, authenticate));
    public.merge(authenticated).merge(streaming)
}

/// The answer of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`: the server is up (no token needed).
#[utoipa::path(get, path = "/api/v1/healthz", operation_id = "healthz", tag = "server",
    responses((status = 200, description = "The server answers", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// An API error: its status and the `{"error": {"code", "message"}}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// An object the answer needs is missing or corrupt: nothing of it is served. The error's
    /// own text already says to run `grit verify --repair`.
    pub fn damaged(error: ObjectError) -> ApiError {
        tracing::error!("{error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_damaged",
            error.to_string(),
        )
    }

    /// A failure of the server or its store; the details go to the log, not to the client.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!("request failed: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; its log says why",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::Object(e) if e.is_damage() => ApiError::damaged(e),
            other => ApiError::internal(other),
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `bad_request`, `bad_params`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `request_timeout`, `conflict`, `payload_too_large`,
    /// `range_not_satisfiable`, `queue_full`, `internal`, `store_damaged`.
    #[schema(example = "not_found")]
    code: String,
    /// For people: what happened and what to do.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Every endpoint but `/healthz` needs `Authorization: Bearer <JWT>`; a viewer may only read.
async fn authenticate(
    State(state): State<Shared>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthorized(
                "missing token: send `Authorization: Bearer <token>` (mint one with `grit token`)"
                    .into(),
            )
        })?;
    // The scheme's name is case-insensitive (RFC 7235): `bearer` and `BEARER` are `Bearer`.
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token))
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`".into()))?;
    let claims: Claims = state.secret.verify(token.trim()).map_err(|e| match e {
        TokenError::Expired => unauthorized("the token has expired: mint a new one".into()),
        TokenError::Invalid(_) => unauthorized(e.to_string()),
    })?;
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && claims.role != Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} {} needs the operator role; this token is a viewer's",
                request.method(),
                request.uri().path()
            ),
        ));
    }
    request.extensions_mut().insert(claims);
    Ok(next.run(request).await)
}

/// Answer within `request_timeout` or give up with 408.
pub(crate) async fn time_limit(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "{path} took longer than request_timeout ({})",
                humantime::format_duration(state.request_timeout)
            ),
        )
        .into_response(),
    }
}

/// A JSON body: at most [`MAX_BODY`] bytes (413), any content type, empty or `null` meaning `{}`; a
/// malformed body is a 400 naming the field (`params.region: invalid type ...`).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        };
        // Refused on its announced length, before any of it is read (a client that waits for
        // an answer before sending gets one).
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        // No body, or a JSON `null` (what the document's optional body allows), is `{}`.
        let text: &[u8] =
            if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
                b"{}"
            } else {
                &bytes
            };
        // Every body of this API is an object: serde would take an array for a struct's
        // fields in order (`[]` a trigger with no params).
        if !text.trim_ascii_start().starts_with(b"{") {
            return Err(ApiError::bad_request(
                "malformed JSON body: expected an object (`{...}`)",
            ));
        }
        let mut json = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::bad_request(format!("malformed JSON body: {inner}"))
            } else {
                ApiError::bad_request(format!("malformed JSON body: {path}: {inner}"))
            }
        })?;
        json.end()
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// One path segment (`{name}`, `{id}`, `{hash}`) as text; a segment that is not UTF-8 once
/// percent-decoded is a 400 with the error shape (axum's own rejection is plain text).
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(segment)| Segment(segment))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Idle read-only connections kept per pipeline (requests beyond open their own).
const IDLE_READERS: usize = 4;

/// Run `read` on a read-only connection to `pipeline`'s store, off the async threads. The
/// connection is a kept one when one is idle (each read is its own transaction, so it sees the
/// store as it is now), else a new one; it is kept again unless SQLite failed on it.
pub async fn read_store<T, F>(pipeline: &Pipeline, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let idle = pipeline
        .readers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop();
    let root = pipeline.paths.root.clone();
    let (result, conn) = tokio::task::spawn_blocking(move || {
        let conn = match idle {
            Some(conn) => conn,
            None => store::open_read(&root)?.1,
        };
        let result = read(&conn);
        Ok::<_, StoreError>((result, conn))
    })
    .await
    .map_err(ApiError::internal)??;
    // A connection whose read failed in SQLite is not trusted again.
    if !matches!(result, Err(StoreError::Sqlite(_))) {
        let mut readers = pipeline
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
    }
    result.map_err(ApiError::from)
}

/// Bytes sent on the returned channel become a streamed response body; an error sent ends the
/// body without a clean end (the connection is cut), so a client never takes bad data for all
/// of it. When the server stops, the body is cut the same way: a slow client must not keep a
/// stopping server alive (the graceful shutdown waits for every open response).
pub fn channel_body(
    stopping: watch::Receiver<bool>,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    axum::body::Body,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let stream = futures_util::stream::unfold(
        (receiver, stopping, false),
        |(mut receiver, mut stopping, cut)| async move {
            if cut {
                return None;
            }
            // `None`: the server stops first.
            let next = tokio::select! {
                // The stop first: a body whose channel is always full would never see it.
                biased;
                _ = stopping.wait_for(|stop| *stop) => None,
                item = receiver.recv() => Some(item),
            };
            match next {
                Some(item) => item.map(|item| (item, (receiver, stopping, false))),
                None => Some((
                    Err(std::io::Error::other("the server is stopping")),
                    (receiver, stopping, true),
                )),
            }
        },
    );
    (sender, axum::body::Body::from_stream(stream))
}
