//! The UI's static files, compiled into the binary: htmx and its SSE extension (vendored from
//! npm, licence headers kept; see `assets/README.md`), the log follower and the stylesheet.
//! Served with a long cache lifetime: a file's URL carries the grit version, so an upgrade
//! loads the new one.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::UiError;

/// `(file name, content type, bytes)` of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/sse.min.js"),
    ),
    (
        "follow.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/follow.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
];

/// The URL of asset `file` (versioned, so that caches never serve an old one after an upgrade).
pub fn url(file: &str) -> String {
    format!("/ui/assets/{file}?v={}", env!("CARGO_PKG_VERSION"))
}

/// `GET /ui/assets/{file}`: no session needed (nothing in them is secret).
pub async fn serve(Path(file): Path<String>) -> Result<Response, UiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("no asset `{file}`")))?;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
