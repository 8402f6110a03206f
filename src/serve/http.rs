//! The server's HTTP connections: accepting them (TCP or a unix socket), serving each with
//! hyper's HTTP/1, and the limits that keep clients that send nothing from holding the server.
//!
//! `axum::serve` gives no timeout on reading a request: a client that sends half a header, or
//! keeps an idle connection, holds a descriptor for ever, and about a thousand of them (the
//! usual soft limit) left the server unable to accept anyone. Here every connection must send a
//! whole request head within [`HEADER_TIMEOUT`] of the server waiting for one (its first, or the
//! next on a kept-alive connection), and at most half the open-files limit are open at once
//! (more wait in the kernel's queue), so the server always has descriptors for its own work.
//! A client that stops taking a response (a download, a followed log) is dropped once it has
//! taken nothing for [`SEND_TIMEOUT`] ([`SendDeadline`]): it would otherwise hold its slot for
//! ever, and enough such readers are the same exhaustion by another door.
//!
//! Every response also carries the headers that keep a browser from caching what a token or a
//! session was needed for, from guessing a download's type, and from framing a page
//! ([`secure_headers`]).

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

/// How long a client may take to send a request's head, counted from when the server waits for
/// it (hyper's own default, which only applies with a timer).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take none of a response's bytes before its connection is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; each holds a descriptor.
const MAX_CONNECTIONS: usize = 1024;

/// `default`, or the milliseconds in the environment variable `hook` (tests shorten the
/// timeouts with `GRIT_TEST_HEADER_TIMEOUT_MS` and `GRIT_TEST_SEND_TIMEOUT_MS`).
fn timeout_or_test_hook(hook: &str, default: Duration) -> Duration {
    std::env::var(hook)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// `text` percent-encoded: ASCII letters and digits and the bytes in `keep` as they are,
/// every other byte (of the UTF-8) as `%XX`.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
    let timeout = timeout_or_test_hook("GRIT_TEST_HEADER_TIMEOUT_MS", HEADER_TIMEOUT);
    let send_limit = timeout_or_test_hook("GRIT_TEST_SEND_TIMEOUT_MS", SEND_TIMEOUT);
    let capacity = connection_slots();
    let slots = Arc::new(Semaphore::new(capacity));
    // Every connection holds a receiver; a send asks them to finish.
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    // When every slot was last found taken: said in the log at most once a minute.
    let mut full_since: Option<std::time::Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if full_since.is_none_or(|said| said.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        "all {capacity} connection slots are taken: new connections wait to be \
                         accepted (clients that send or take nothing are dropped after 30 s)"
                    );
                    full_since = Some(std::time::Instant::now());
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
                }
            }
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
                .serve_connection(TokioIo::new(SendDeadline::new(stream, send_limit)), service)
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

/// A connection whose writes fail once the client has accepted none of them for `limit`.
///
/// hyper's timer covers only the wait for a request head; a response the client stops reading
/// waits for the socket's buffer to drain, for ever. The clock starts when a write (or flush)
/// cannot go on and stops at the next one that does, like nginx's `send_timeout`: a slow
/// download that keeps taking bytes is served to its end.
struct SendDeadline<I> {
    inner: I,
    limit: Duration,
    /// Armed while a write waits for the client.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> SendDeadline<I> {
    fn new(inner: I, limit: Duration) -> Self {
        SendDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes on the outcome of a write (`wrote`) or a flush or shutdown: arms the clock when
    /// the call must wait, and fails it once the clock has run out. Only bytes taken stop the
    /// clock: a flush of a TCP stream is always ready, and hyper flushes between writes.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
        wrote: bool,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            if wrote {
                self.stalled = None;
            }
            return outcome;
        }
        let limit = self.limit;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if clock.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no data for {limit:?}"),
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, outcome, true)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, outcome, true)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, outcome, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, outcome, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(150);

    #[tokio::test]
    async fn a_client_that_takes_nothing_fails_the_write_after_the_limit() {
        let (server, _client) = tokio::io::duplex(1024);
        let mut conn = SendDeadline::new(server, LIMIT);
        let started = std::time::Instant::now();
        let error = loop {
            if let Err(e) = conn.write_all(&[0u8; 4096]).await {
                break e;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slow_client_that_keeps_taking_bytes_gets_them_all() {
        let (server, mut client) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = [0u8; 512];
            loop {
                // Each pause is shorter than the limit, together far longer.
                tokio::time::sleep(LIMIT / 3).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let mut conn = SendDeadline::new(server, LIMIT);
        let total = 16 * 1024;
        conn.write_all(&vec![7u8; total]).await.unwrap();
        conn.shutdown().await.unwrap();
        drop(conn);
        assert_eq!(reader.await.unwrap(), total);
    }
}
