//! `GET /events` (Server-Sent Events: run queued/started/finished, task started/finished,
//! resumable with `Last-Event-ID`) and `GET /metrics` (Prometheus text).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use utoipa::IntoParams;

use super::{ApiError, Shared, read_store};
use crate::serve::events::ServerEvent;
use crate::serve::metrics::Gauges;
use crate::serve::queue;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this pipeline's events.
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pipeline: Option<String>,
}

struct Subscription {
    backlog: VecDeque<ServerEvent>,
    live: broadcast::Receiver<ServerEvent>,
    last: u64,
    pipeline: Option<String>,
    stopping: watch::Receiver<bool>,
}

fn wanted(event: &ServerEvent, pipeline: &Option<String>) -> bool {
    match pipeline {
        Some(p) => event.data["pipeline"].as_str() == Some(p.as_str()),
        None => true,
    }
}

fn sse(event: &ServerEvent) -> Event {
    Event::default()
        .id(event.id.to_string())
        .event(event.kind)
        .data(event.data.to_string())
}

/// `GET /events[?pipeline=]`; a `Last-Event-ID` header resumes after that event.
#[utoipa::path(get, path = "/api/v1/events", operation_id = "streamEvents", tag = "server",
    security(("bearer" = [])),
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event; an id \
            this start of the server never gave out (one from before a restart) resumes with the \
            next event")),
    responses(
        (status = 200, description = "Server-Sent Events `run_queued`, `run_started`, \
            `run_finished`, `task_started`, `task_finished`, each with an `id` (counting up by one \
            from the unix time in milliseconds of the server's start) and JSON `data`; the stream \
            ends when the server stops", body = String,
            content_type = "text/event-stream"),
        (status = 400, description = "A bad query value, or a `Last-Event-ID` that is not a number",
            body = super::ErrorBody),
        (status = 404, description = "No such pipeline", body = super::ErrorBody),
    ))]
pub async fn stream(
    State(state): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(name) = &query.pipeline {
        state.pipeline(name)?;
    }
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID: not an event id (a whole number)")
                })?,
        ),
    };
    let (backlog, live) = state.hub.events.subscribe(last_id);
    let subscription = Subscription {
        backlog: backlog.into(),
        live,
        // The backlog and the live events were taken under one lock: every live event comes
        // after the backlog, whatever `Last-Event-ID` said.
        last: 0,
        pipeline: query.pipeline,
        stopping: state.stopping.clone(),
    };
    let events = futures_util::stream::unfold(subscription, |mut s| async move {
        while let Some(event) = s.backlog.pop_front() {
            s.last = event.id;
            if wanted(&event, &s.pipeline) {
                return Some((Ok(sse(&event)), s));
            }
        }
        loop {
            let received = tokio::select! {
                received = s.live.recv() => Some(received),
                _ = s.stopping.wait_for(|stop| *stop) => None,
            };
            match received {
                Some(Ok(event)) if event.id <= s.last => continue,
                Some(Ok(event)) => {
                    s.last = event.id;
                    if wanted(&event, &s.pipeline) {
                        return Some((Ok(sse(&event)), s));
                    }
                }
                // Fallen behind or closed, or the server stops: the stream ends, and the client
                // resumes from the backlog with Last-Event-ID.
                Some(Err(_)) | None => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(get, path = "/api/v1/metrics", operation_id = "metrics", tag = "server",
    security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")))]
pub async fn metrics(State(state): State<Shared>) -> Result<Response, ApiError> {
    let mut gauges = Vec::new();
    for (name, pipeline) in &state.pipelines {
        let queued = read_store(pipeline, |conn| Ok(queue::waiting(conn)?.len())).await?;
        gauges.push(Gauges {
            pipeline: name.clone(),
            queued: queued as u64,
            running: u64::from(pipeline.current().is_some()),
        });
    }
    let text = state
        .hub
        .metrics
        .render(&gauges, state.hub.events.published());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
