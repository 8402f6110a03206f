//! The server's HTTP connections: accepting them (TCP or a unix socket), serving each with
//! hyper's HTTP/1, and the limits that keep clients that send nothing from holding the server.
//!
//! `axum::serve` gives no timeout on reading a request: a client that sends half a header, or
//! keeps an idle connection, holds a descriptor for ever, and about a thousand of them (the
//! usual soft limit) left the server unable to accept anyone. Here every connection must send a
//! whole request head within [`HEADER_TIMEOUT`] of the server waiting for one (its first, or the
//! next on a kept-alive connection), and at most half the open-files limit are open at once
//! (more wait in the kernel's queue), so the server always has descriptors for its own work.
//!
//! Every response also carries the headers that keep a browser from caching what a token or a
//! session was needed for, from guessing a download's type, and from framing a page
//! ([`secure_headers`]).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};

/// How long a client may take to send a request's head, counted from when the server waits for
/// it (hyper's own default, which only applies with a timer).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; each holds a descriptor.
const MAX_CONNECTIONS: usize = 1024;

/// The header timeout, shortened by tests through `GRIT_TEST_HEADER_TIMEOUT_MS`.
fn header_timeout() -> Duration {
    std::env::var("GRIT_TEST_HEADER_TIMEOUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(HEADER_TIMEOUT)
}

/// How many connections may be open at once: half the open-files limit (the other half is for
/// the stores, the watched directories and the runs), within 64 and [`MAX_CONNECTIONS`]. The
/// limit is not raised: tasks inherit it, and programs that use `select` expect 1024.
fn connection_slots() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(64, MAX_CONNECTIONS)
}

/// Serves `app` on every connection `accept` yields until `shutdown` completes; then stops
/// accepting, asks every open connection to finish its current request, and returns once they
/// have (the caller bounds that wait).
pub async fn serve<I, A, F>(
    mut accept: A,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = io::Result<I>>,
{
    let timeout = header_timeout();
    let capacity = connection_slots();
    let slots = Arc::new(Semaphore::new(capacity));
    // Every connection holds a receiver; a send asks them to finish.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept() => accepted,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was accepted): not the end
                // of the server. A pause keeps a full descriptor table from spinning the loop.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    let _ = stop.send(true);
    // Every slot back: every connection has ended.
    let _ = slots.acquire_many(capacity as u32).await;
    Ok(())
}

/// Adds to `response` what a browser needs to keep it to the one who asked: `no-store` unless
/// the handler chose its own caching (the UI's static assets), `nosniff` (a resource's bytes
/// are served as `application/octet-stream` and must stay that), and no framing by another site.
pub async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    response
}
