//! Tasks: the tasks a run started (`GET /runs/{id}/tasks`), one task (`GET /tasks/{id}`) and its
//! log (`GET /tasks/{id}/log`): the stored log, verified, or with `?follow=1` the live log of a
//! running task as it grows, then the rest of the stored one.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Segment, Shared, channel_body, read_store};
use crate::serve::queue;
use crate::serve::worker::Pipeline;
use crate::store::queries::{self, TaskInfo};
use crate::store::{ObjectError, Objects, VerifiedReader};

/// How often a followed log is looked at again.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// A task.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    /// `PIPELINE.N`
    #[schema(example = "quickstart.3")]
    task_id: String,
    pipeline: String,
    #[serde(flatten)]
    info: TaskInfo,
}

fn view(pipeline: &str, info: TaskInfo) -> TaskView {
    TaskView {
        task_id: queue::public_id(pipeline, info.id),
        pipeline: pipeline.to_string(),
        info,
    }
}

fn parse<'a>(state: &'a Shared, id: &str) -> Result<(&'a Arc<Pipeline>, String, i64), ApiError> {
    let (name, number) = queue::parse_public_id(id)
        .ok_or_else(|| ApiError::not_found(format!("no task `{id}`: task ids are PIPELINE.N")))?;
    Ok((state.pipeline(name)?, name.to_string(), number))
}

/// The answer of `GET /runs/{id}/tasks`.
#[derive(Serialize, ToSchema)]
pub struct RunTasks {
    run_id: String,
    tasks: Vec<TaskView>,
}

/// `GET /runs/{id}/tasks`: the tasks this run started, in order (a task a later run executed
/// again is listed with that run).
#[utoipa::path(get, path = "/api/v1/runs/{id}/tasks", operation_id = "listRunTasks", tag = "tasks",
    security(("bearer" = [])), params(super::openapi::RunId),
    responses(
        (status = 200, description = "The tasks the run started", body = RunTasks),
        (status = 404, description = "No such run", body = super::ErrorBody),
    ))]
pub async fn of_run(
    State(state): State<Shared>,
    Segment(id): Segment,
) -> Result<Json<RunTasks>, ApiError> {
    let (pipeline, name, number) = parse(&state, &id)?;
    let live = pipeline
        .current()
        .filter(|c| c.id == number)
        .and_then(|c| c.engine_run);
    let tasks = read_store(pipeline, move |conn| {
        let Some(record) = queue::get(conn, number)? else {
            return Ok(None);
        };
        let last = live.or(record.engine_run);
        let tasks = match last {
            Some(last) => {
                queries::tasks_of_runs(conn, record.first_engine_run.unwrap_or(last), last)?
            }
            None => Vec::new(),
        };
        Ok(Some(tasks))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no run `{id}` on this server")))?;
    let tasks: Vec<TaskView> = tasks.into_iter().map(|t| view(&name, t)).collect();
    Ok(Json(RunTasks { run_id: id, tasks }))
}

/// `GET /tasks/{id}`: one task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", operation_id = "getTask", tag = "tasks",
    security(("bearer" = [])), params(super::openapi::TaskId),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No such task", body = super::ErrorBody),
    ))]
pub async fn show(
    State(state): State<Shared>,
    Segment(id): Segment,
) -> Result<Json<TaskView>, ApiError> {
    let (pipeline, name, number) = parse(&state, &id)?;
    let info = read_store(pipeline, move |conn| queries::task(conn, number)).await?;
    Ok(Json(view(&name, info)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// `1` (or `true`, `yes`): follow a running task's log as it grows, until the task ends.
    #[serde(default)]
    follow: Option<String>,
}

/// `GET /tasks/{id}/log[?follow=1]`: text/plain.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/log", operation_id = "getTaskLog", tag = "tasks",
    security(("bearer" = [])), params(super::openapi::TaskId, LogQuery),
    responses(
        (status = 200, description = "The log, verified before it is sent; with `follow`, \
            streamed as it grows", body = String, content_type = "text/plain"),
        (status = 404, description = "No such task", body = super::ErrorBody),
    ))]
pub async fn log(
    State(state): State<Shared>,
    Segment(id): Segment,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let follow = matches!(query.follow.as_deref(), Some("1" | "true" | "yes"));
    let (pipeline, _, number) = parse(&state, &id)?;
    // 404 before anything streams.
    read_store(pipeline, move |conn| queries::task(conn, number)).await?;
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let now = {
        let pipeline = pipeline.clone();
        tokio::task::spawn_blocking(move || log_now(&pipeline, number))
            .await
            .map_err(ApiError::internal)??
    };
    // A stored log checks out whole before the first byte goes out (as a resource's content).
    if let LogNow::Stored(Some(stored)) = &now {
        let stored = stored.clone();
        tokio::task::spawn_blocking(move || stored.open().and_then(VerifiedReader::verify))
            .await
            .map_err(ApiError::internal)?
            .map_err(object_error)?;
    }
    let (sender, body) = channel_body(state.stopping.clone());
    let pipeline = pipeline.clone();
    let mut stopping = state.stopping.clone();
    // Bytes are read and sent a chunk at a time, so a log of any size costs a chunk of memory.
    tokio::spawn(async move {
        let mut offset = 0u64;
        let mut end: Option<u64> = None;
        let mut now = Some(now);
        loop {
            let current = match now.take() {
                Some(current) => current,
                None => {
                    let p = pipeline.clone();
                    match tokio::task::spawn_blocking(move || log_now(&p, number)).await {
                        Ok(Ok(current)) => current,
                        Ok(Err(e)) => {
                            let _ = sender.send(Err(std::io::Error::other(e.message))).await;
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            match current {
                LogNow::Stored(stored) => {
                    if let Some(stored) = stored {
                        let sender = sender.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            let send = |item| sender.blocking_send(item).is_ok();
                            match stored.open() {
                                Ok(reader) => {
                                    let rest = stored.size.saturating_sub(offset);
                                    super::resources::stream_verified(reader, offset, rest, &send);
                                }
                                Err(e) => {
                                    send(Err(std::io::Error::other(e)));
                                }
                            }
                        })
                        .await;
                    }
                    return;
                }
                LogNow::Running(path) => {
                    // Without `follow`, the log as it is now: up to its length at the first look.
                    if !follow && end.is_none() {
                        end = Some(std::fs::metadata(&path).map_or(0, |m| m.len()));
                    }
                    let (from, until) = (offset, end);
                    let read =
                        tokio::task::spawn_blocking(move || read_live(&path, from, until)).await;
                    let content = read.unwrap_or_default();
                    offset += content.len() as u64;
                    let full = content.len() == LIVE_CHUNK;
                    if !content.is_empty() && sender.send(Ok(Bytes::from(content))).await.is_err() {
                        return;
                    }
                    if !follow && (!full || end.is_some_and(|end| offset >= end)) {
                        return;
                    }
                    if full {
                        // More is there already: no pause.
                        continue;
                    }
                }
                LogNow::Pending if !follow => return,
                LogNow::Pending => {}
            }
            if sender.is_closed() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
    });
    Ok((text_plain, body).into_response())
}

/// Most bytes of a running task's log read at once.
const LIVE_CHUNK: usize = 256 * 1024;

/// A stored log: enough to open it, verified, again.
#[derive(Clone)]
pub(crate) struct StoredLog {
    objects: Objects,
    hash: String,
    task: i64,
    /// Its size on disk when it was looked up; the verified read checks the hash.
    size: u64,
}

impl StoredLog {
    fn open(&self) -> Result<VerifiedReader, ObjectError> {
        let what = format!("the log of task {}", self.task);
        VerifiedReader::open(&self.objects, &self.hash, None, &what)
    }
}

/// Where a task's log is now.
pub(crate) enum LogNow {
    /// Not started: no log yet.
    Pending,
    /// Running: its live log in the store's staging area, growing (not stored, so not verified).
    Running(std::path::PathBuf),
    /// Ended: its stored log, if it has one.
    Stored(Option<StoredLog>),
}

/// Where the log of `task` is now.
pub(crate) fn log_now(pipeline: &Pipeline, task: i64) -> Result<LogNow, ApiError> {
    let (_, conn) = crate::store::open_read(&pipeline.paths.root)?;
    let progress = queries::task_progress(&conn, task)?;
    let Some((last_run, state)) = progress else {
        return Err(ApiError::not_found(format!("no task {task}")));
    };
    Ok(match state.as_str() {
        "pending" => LogNow::Pending,
        "running" => LogNow::Running(
            pipeline
                .paths
                .tmp
                .join(format!("t{task}-r{}.log", last_run.unwrap_or(0))),
        ),
        _ => {
            let info = queries::task(&conn, task)?;
            LogNow::Stored(info.log_hash.map(|hash| {
                let objects = Objects::new(pipeline.paths.objects.clone());
                let size = std::fs::metadata(objects.path(&hash)).map_or(0, |m| m.len());
                StoredLog {
                    objects,
                    hash,
                    task,
                    size,
                }
            }))
        }
    })
}

/// Up to [`LIVE_CHUNK`] bytes of a live log from byte `offset` on, not past `end` when given;
/// nothing when it is not there (not yet, or just stored away: the next look finds it or the
/// stored log).
fn read_live(path: &std::path::Path, offset: u64, end: Option<u64>) -> Vec<u8> {
    let most = end.map_or(LIVE_CHUNK as u64, |end| {
        end.saturating_sub(offset).min(LIVE_CHUNK as u64)
    });
    let mut content = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.take(most).read_to_end(&mut content);
    }
    content
}

/// The last `keep` bytes of a task's log as it is now (a stored one read whole through its
/// check, keeping only its end), and whether anything before them was left out.
pub(crate) fn log_tail(
    pipeline: &Pipeline,
    task: i64,
    keep: usize,
) -> Result<(Vec<u8>, bool), ApiError> {
    match log_now(pipeline, task)? {
        LogNow::Pending | LogNow::Stored(None) => Ok((Vec::new(), false)),
        LogNow::Running(path) => {
            let Ok(mut file) = std::fs::File::open(&path) else {
                return Ok((Vec::new(), false));
            };
            let length = file.metadata().map_or(0, |m| m.len());
            let start = length.saturating_sub(keep as u64);
            let mut content = Vec::new();
            if file.seek(SeekFrom::Start(start)).is_ok() {
                let _ = file.take(keep as u64).read_to_end(&mut content);
            }
            Ok((content, start > 0))
        }
        LogNow::Stored(Some(stored)) => {
            let mut reader = stored.open().map_err(object_error)?;
            let mut tail: std::collections::VecDeque<u8> =
                std::collections::VecDeque::with_capacity(keep + LIVE_CHUNK);
            let mut buffer = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        total += n as u64;
                        tail.extend(&buffer[..n]);
                        let excess = tail.len().saturating_sub(keep);
                        tail.drain(..excess);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(match e.downcast::<ObjectError>() {
                            Ok(damage) => object_error(damage),
                            Err(e) => ApiError::internal(e),
                        });
                    }
                }
            }
            let cut = total > tail.len() as u64;
            Ok((tail.into(), cut))
        }
    }
}

fn object_error(e: ObjectError) -> ApiError {
    if e.is_damage() {
        ApiError::damaged(e)
    } else {
        ApiError::internal(e)
    }
}
