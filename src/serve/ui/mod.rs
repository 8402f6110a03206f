//! The web UI of `grit serve` (issue 14): server-rendered HTML pages under `/ui/`, from the same
//! binary and the same read models as the API ([`super::api`]).
//!
//! Pages read correctly without JavaScript; htmx and its SSE extension (vendored, [`assets`])
//! only make the run page live. Who may see and do what is the API's rule: a session cookie
//! ([`session`]) holds a grit token, viewers read, operators also trigger and cancel, and every
//! form that changes something carries a CSRF token.
//!
//! One file per concept: [`session`] (login, cookie, CSRF), [`assets`] (embedded files),
//! [`layout`] (the page shell and formatting), [`graph`] (the step graph as SVG), and one file
//! per group of pages ([`pipelines`], [`runs`], [`tasks`], [`resources`]).

mod assets;
mod graph;
mod layout;
pub(crate) mod pipelines;
mod resources;
mod runs;
mod session;
mod tasks;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::api::{self, ApiError, Shared};

/// Rows per page of every listing: keeps each page small however large the store is.
pub const PAGE_ROWS: usize = 50;

/// The UI's routes, to merge into the API's router.
pub fn router(state: Shared) -> Router {
    // Changes: only operators, and only with the session's CSRF token (checked by `session`).
    let operate = Router::new()
        .route("/ui/pipelines/{name}/runs", post(pipelines::trigger))
        .route("/ui/runs/{id}/cancel", post(runs::cancel))
        .route("/ui/runs/{id}/again", post(runs::again))
        .route_layer(middleware::from_fn(session::require_operator));
    let signed_in = Router::new()
        .route("/ui/", get(pipelines::list))
        .route("/ui/pipelines/{name}", get(pipelines::show))
        .route("/ui/pipelines/{name}/run", get(pipelines::run_form))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(runs::show))
        .route("/ui/runs/{id}/live", get(runs::live))
        .route("/ui/tasks/{id}", get(tasks::show))
        .route("/ui/resources", get(resources::list))
        .route("/ui/resources/{hash}", get(resources::show))
        // The API's own streams and downloads, behind the session cookie instead of a bearer
        // token (a browser's EventSource cannot send one).
        .route("/ui/events", get(api::events::stream))
        .route("/ui/tasks/{id}/log", get(api::tasks::log))
        .route("/ui/resources/{hash}/content", get(api::resources::content))
        .route("/ui/logout", post(session::logout))
        .merge(operate)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        // The one form anyone may send: its body must arrive within `request_timeout`, so a
        // client trickling it cannot hold a connection for as long as it likes.
        .route(
            "/ui/login",
            get(session::login_form)
                .post(session::login)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    api::time_limit,
                )),
        )
        .route("/ui/assets/{file}", get(assets::serve))
        .merge(signed_in)
        .with_state(state)
}

/// A page that could not be shown: its status and what to tell the user, as an HTML page.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> UiError {
        UiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> UiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        // The API's messages are written for clients already (internal details stay in the log).
        UiError::new(error.status, error.message)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let body = layout::bare(
            &title,
            maud::html! {
                h1 { (self.status.as_u16()) " " (title) }
                p.notice role="alert" { (self.message) }
                p { a href="/ui/" { "Back to the pipelines" } }
            },
        );
        (self.status, body).into_response()
    }
}

/// Handlers' result: a page, or an error page.
pub type Page = Result<Response, UiError>;
