//! Resources of a pipeline's store: the list (`GET /resources?name=&live=`), one resource's
//! provenance (`GET /resources/{hash}`, the `grit why` tree) and its content
//! (`GET /resources/{hash}/content`, with `Range`).
//!
//! Content is served only once it checked out: the whole object is read through the store's
//! verified reader first (size and SHA-256), then streamed; the stream is checked again on the
//! way out and cut, never ended cleanly, if the object changed in between. A damaged object gets
//! a 500 `store_damaged` and not one byte of it.

use std::io::Read;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Segment, Shared, channel_body, read_store};
use crate::store::queries::{self, ResourceRow};
use crate::store::{Objects, StoreError, VerifiedReader};

/// Resources listed when `limit` is not given, and the most one answer lists.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;
/// Bytes per chunk of a streamed object.
const CHUNK: usize = 64 * 1024;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The pipeline whose store is listed (may be left out when the server has one).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pipeline: Option<String>,
    /// A name, or a glob (`loud_*`).
    name: Option<String>,
    /// Only live resources (default), or with `live=false` every one the store holds.
    #[param(default = true)]
    live: Option<bool>,
    /// The most resources listed.
    #[param(minimum = 1, maximum = 100000, default = 1000)]
    limit: Option<usize>,
}

/// The answer of `GET /resources`.
#[derive(Serialize, ToSchema)]
pub struct ResourceList {
    pipeline: String,
    resources: Vec<ResourceRow>,
    /// More resources matched than `limit`.
    truncated: bool,
}

/// `GET /resources?pipeline=&name=&live=&limit=`
#[utoipa::path(get, path = "/api/v1/resources", operation_id = "listResources", tag = "resources",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "The resources, by name then age", body = ResourceList),
        (status = 400, description = "A bad query value, or no `pipeline` on a server with several",
            body = super::ErrorBody),
        (status = 404, description = "No such pipeline", body = super::ErrorBody),
    ))]
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ResourceList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let pipeline = state.pipeline_or_only(query.pipeline.as_deref())?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is out of range: give 1 to {MAX_LIMIT}"
        )));
    }
    let all = !query.live.unwrap_or(true);
    let name = query.name.clone();
    let (rows, truncated) = read_store(pipeline, move |conn| {
        let mut rows: Vec<ResourceRow> = Vec::new();
        let mut truncated = false;
        let mut each = |row: ResourceRow| {
            if rows.len() < limit {
                rows.push(row);
            } else {
                truncated = true;
            }
            Ok(())
        };
        match &name {
            Some(pattern) => queries::resources_matching(conn, pattern, all, &mut each)?,
            None => queries::resources(conn, None, all, &mut each)?,
        }
        Ok((rows, truncated))
    })
    .await?;
    Ok(Json(ResourceList {
        pipeline: pipeline.config().name.clone(),
        resources: rows,
        truncated,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// The pipeline whose store holds it (may be left out when the server has one).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pipeline: Option<String>,
}

/// The answer of `GET /resources/{hash}`: what `grit why --json` prints.
#[derive(Serialize, ToSchema)]
pub struct Provenance {
    /// One tree per resource with that content: the resource (`name`, `hash`, `size`, …),
    /// `made_by` (the tasks that made it, each with its `inputs`, recursively) and
    /// `shown_above` when its provenance appears higher up.
    #[schema(value_type = Vec<Object>)]
    resources: serde_json::Value,
}

/// `GET /resources/{hash}?pipeline=`: provenance, as `grit why --json` prints it.
#[utoipa::path(get, path = "/api/v1/resources/{hash}", operation_id = "getResource",
    tag = "resources", security(("bearer" = [])), params(super::openapi::Hash, OneQuery),
    responses(
        (status = 200, description = "The provenance trees", body = Provenance),
        (status = 400, description = "A bad query value, or no `pipeline` on a server with several",
            body = super::ErrorBody),
        (status = 404, description = "No resource with that hash, or no such pipeline",
            body = super::ErrorBody),
    ))]
pub async fn show(
    State(state): State<Shared>,
    Segment(hash): Segment,
    query: Result<Query<OneQuery>, QueryRejection>,
) -> Result<Json<Provenance>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let pipeline = state.pipeline_or_only(query.pipeline.as_deref())?;
    let trees = read_store(pipeline, move |conn| {
        let trees = crate::commands::why::provenance_trees(conn, &hash)?;
        serde_json::to_value(trees).map_err(|e| StoreError::NotFound(e.to_string()))
    })
    .await?;
    Ok(Json(Provenance { resources: trees }))
}

/// A single byte range of an object of `size` bytes, from a `Range` header. `Ok(None)`: serve
/// it all (no header, or one this server does not do, like several ranges); `Err`: 416.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let n: u64 = last.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (false, true) => (first.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (false, false) => {
            let a: u64 = first.parse().map_err(|_| ())?;
            let b: u64 = last.parse().map_err(|_| ())?;
            if b < a {
                return Err(());
            }
            (a, b.min(size.saturating_sub(1)))
        }
        (true, true) => return Ok(None),
    };
    if size == 0 || parsed.0 >= size {
        return Err(());
    }
    Ok(Some(parsed))
}

/// `GET /resources/{hash}/content?pipeline=`: the bytes, `application/octet-stream`.
#[utoipa::path(get, path = "/api/v1/resources/{hash}/content", operation_id = "getResourceContent",
    tag = "resources", security(("bearer" = [])),
    params(super::openapi::Hash, OneQuery,
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=a-b`, `bytes=a-` \
            or `bytes=-n`")),
    responses(
        (status = 200, description = "The whole object, verified", body = Vec<u8>,
            content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for (`Content-Range` says which)",
            body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "A bad query value, or no `pipeline` on a server with several",
            body = super::ErrorBody),
        (status = 404, description = "No resource with that hash, or no such pipeline",
            body = super::ErrorBody),
        (status = 416, description = "The range is beyond the end (`range_not_satisfiable`)",
            body = super::ErrorBody),
    ))]
pub async fn content(
    State(state): State<Shared>,
    Segment(hash): Segment,
    query: Result<Query<OneQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let pipeline = state.pipeline_or_only(query.pipeline.as_deref())?;
    let (full, identity) = read_store(pipeline, move |conn| {
        let full = queries::resolve_hash(conn, &hash)?;
        let identity = queries::object_identity(conn, &full)?;
        Ok((full, identity))
    })
    .await?;
    let queries::ObjectIdentity {
        what,
        resource,
        size,
    } = identity;
    let Some(size) = size else {
        return Err(ApiError::not_found(format!(
            "{full} is a task's log, not a resource: GET /api/v1/tasks/{{id}}/log serves logs"
        )));
    };
    let objects = Objects::new(pipeline.paths.objects.clone());
    // The whole object checks out before the first byte goes out.
    {
        let (objects, full, what) = (objects.clone(), full.clone(), what.clone());
        tokio::task::spawn_blocking(move || {
            VerifiedReader::open(&objects, &full, Some(size), &what)
                .and_then(VerifiedReader::verify)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            if e.is_damage() {
                ApiError::damaged(e)
            } else {
                ApiError::internal(e)
            }
        })?;
    }
    let range = match range(&headers, size) {
        Ok(range) => range,
        Err(()) => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the object has {size} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let (sender, body) = channel_body(state.stopping.clone());
    let (start, length) = match range {
        Some((a, b)) => (a, b - a + 1),
        None => (0, size),
    };
    {
        let full = full.clone();
        tokio::task::spawn_blocking(move || {
            let send = |item| sender.blocking_send(item).is_ok();
            let reader = match VerifiedReader::open(&objects, &full, Some(size), &what) {
                Ok(reader) => reader,
                Err(e) => {
                    send(Err(std::io::Error::other(e)));
                    return;
                }
            };
            stream_verified(reader, start, length, &send);
        });
    }
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(value) = resource.as_deref().and_then(attachment) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{full}\"")) {
        h.insert(header::ETAG, etag);
    }
    if let Some((a, b)) = range {
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}")) {
            h.insert(header::CONTENT_RANGE, value);
        }
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// `Content-Disposition: attachment` naming the file after the resource (RFC 6266): `filename`
/// for old clients, with every byte that is not plain printable ASCII (or is a quote or a
/// backslash) as `_`, and `filename*` with the exact name, percent-encoded UTF-8.
fn attachment(name: &str) -> Option<HeaderValue> {
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    // RFC 8187's attr-char: sent as is; everything else percent-encoded.
    let exact = crate::serve::http::percent_encode(name, b"!#$&+-.^_`|~");
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"
    ))
    .ok()
}

/// Send bytes `start..start + length` of the object in chunks, reading it whole through
/// `reader`, which checks the size and hash at its end. The last chunk is held back until that
/// check has passed: the response's `Content-Length` is already out, so a body that stops short
/// is the only way to tell a client the bytes changed since the check before the headers, and
/// every byte it did get is then still followed by the cut. (A range costs a read of the whole
/// object: its hash covers all of it.)
pub(crate) fn stream_verified(
    mut reader: VerifiedReader,
    start: u64,
    length: u64,
    send: &dyn Fn(Result<Bytes, std::io::Error>) -> bool,
) {
    let end = start.saturating_add(length);
    let mut buffer = vec![0u8; CHUNK];
    let mut offset = 0u64;
    let mut held: Option<Bytes> = None;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => {
                // Verified to the end: what is held may go.
                if let Some(last) = held.take() {
                    send(Ok(last));
                }
                return;
            }
            Ok(n) => {
                let (from, to) = (offset, offset + n as u64);
                offset = to;
                let (a, b) = (from.max(start), to.min(end));
                if a >= b {
                    continue;
                }
                let part =
                    Bytes::copy_from_slice(&buffer[(a - from) as usize..(b - from) as usize]);
                if let Some(previous) = held.replace(part)
                    && !send(Ok(previous))
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                send(Err(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn an_attachment_names_the_resource_safely() {
        let value = |name: &str| attachment(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            value("report.csv"),
            "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
        );
        assert_eq!(
            value("a \"b\"\\c;d"),
            "attachment; filename=\"a _b__c;d\"; filename*=UTF-8''a%20%22b%22%5Cc%3Bd"
        );
        assert_eq!(
            value("café\r\nX-Evil: 1"),
            "attachment; filename=\"caf___X-Evil: 1\"; filename*=UTF-8''caf%C3%A9%0D%0AX-Evil%3A%201"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range(&with("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(range(&with("bytes=7-"), 10), Ok(Some((7, 9))));
        assert_eq!(range(&with("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(range(&with("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(range(&with("bytes=10-"), 10), Err(()));
        assert_eq!(range(&with("bytes=4-2"), 10), Err(()));
        assert_eq!(range(&with("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(range(&with("items=0-1"), 10), Ok(None));
    }
}
