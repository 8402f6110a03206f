//! Tasks: the tasks a run started (`GET /runs/{id}/tasks`), one task (`GET /tasks/{id}`) and its
//! log (`GET /tasks/{id}/log`): the stored log, verified, or with `?follow=1` the live log of a
//! running task as it grows, then the rest of the stored one.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Segment, Shared, channel_body, read_store};
use crate::serve::queue;
use crate::serve::worker::Pipeline;
use crate::store::queries::{self, TaskInfo};
use crate::store::{Objects, VerifiedReader};

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
    if !follow {
        let pipeline = pipeline.clone();
        let bytes = tokio::task::spawn_blocking(move || log_now(&pipeline, number, 0))
            .await
            .map_err(ApiError::internal)??;
        return Ok((text_plain, Body::from(bytes.content)).into_response());
    }
    let (sender, body) = channel_body(state.stopping.clone());
    let pipeline = pipeline.clone();
    let mut stopping = state.stopping.clone();
    tokio::spawn(async move {
        let mut offset = 0u64;
        loop {
            let from = offset;
            let p = pipeline.clone();
            let chunk = match tokio::task::spawn_blocking(move || log_now(&p, number, from)).await {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    let _ = sender.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
                Err(_) => return,
            };
            offset += chunk.content.len() as u64;
            if !chunk.content.is_empty()
                && sender.send(Ok(Bytes::from(chunk.content))).await.is_err()
            {
                return;
            }
            if chunk.finished || sender.is_closed() {
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

/// The part of a task's log from byte `offset` on, as it is now.
pub(crate) struct LogChunk {
    pub content: Vec<u8>,
    /// The task has ended: this was the stored log and nothing more will come.
    pub finished: bool,
}

/// While the task runs, its live log in the store's staging area; once it ended, its stored log
/// (verified whole before any of it is returned).
pub(crate) fn log_now(pipeline: &Pipeline, task: i64, offset: u64) -> Result<LogChunk, ApiError> {
    let (_, conn) = crate::store::open_read(&pipeline.paths.root)?;
    let progress = queries::task_progress(&conn, task)?;
    let Some((last_run, state)) = progress else {
        return Err(ApiError::not_found(format!("no task {task}")));
    };
    match state.as_str() {
        "pending" => Ok(LogChunk {
            content: Vec::new(),
            finished: false,
        }),
        "running" => {
            let path = pipeline
                .paths
                .tmp
                .join(format!("t{task}-r{}.log", last_run.unwrap_or(0)));
            let mut content = Vec::new();
            // Not there yet, or just stored away: the next look finds it or the stored log.
            if let Ok(mut file) = std::fs::File::open(&path)
                && file.seek(SeekFrom::Start(offset)).is_ok()
            {
                let _ = file.read_to_end(&mut content);
            }
            Ok(LogChunk {
                content,
                finished: false,
            })
        }
        _ => {
            let info = queries::task(&conn, task)?;
            let content = match &info.log_hash {
                Some(hash) => {
                    let objects = Objects::new(pipeline.paths.objects.clone());
                    let what = format!("the log of task {task}");
                    VerifiedReader::open(&objects, hash, None, &what)
                        .and_then(VerifiedReader::read_verified)
                        .map_err(|e| {
                            if e.is_damage() {
                                ApiError::damaged(e)
                            } else {
                                ApiError::internal(e)
                            }
                        })?
                }
                None => Vec::new(),
            };
            let start = (offset as usize).min(content.len());
            Ok(LogChunk {
                content: content[start..].to_vec(),
                finished: true,
            })
        }
    }
}
