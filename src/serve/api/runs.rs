//! Runs: trigger (`POST /pipelines/{name}/runs`), list (`GET /runs`, paged newest first across
//! pipelines), show, cancel and delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, JsonBody, Segment, Shared, read_store};
use crate::serve::queue::{self, CancelQueued, Cursor, Enqueued, RunRecord, StepCounts, Trigger};

/// Runs per page when `limit` is not given, and the most a page holds.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// One step's task counts in a run.
#[derive(Debug, Serialize, Deserialize, Default, ToSchema)]
pub struct StepView {
    pub name: String,
    /// Tasks executed (finished) in this run.
    #[serde(default)]
    pub executed: u64,
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub failed: u64,
    /// Tasks started and not finished yet (live runs only).
    #[serde(default)]
    pub running: u64,
    /// Tasks waiting to start (live runs only).
    #[serde(default)]
    pub pending: u64,
}

/// A run as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// `PIPELINE.N`
    #[schema(example = "quickstart.1")]
    pub run_id: String,
    #[serde(flatten)]
    pub record: RunRecord,
    /// Runs ahead of it in the wait list (queued runs only; 0 = next).
    pub position: Option<usize>,
    /// Per-step task counts (empty until the run started).
    pub steps: Vec<StepView>,
}

/// The view of `record`; `live` are the counts of a running run.
pub fn view(record: RunRecord, position: Option<usize>, live: Option<Vec<StepCounts>>) -> RunView {
    let steps = match live {
        Some(live) => live
            .into_iter()
            .map(|c| StepView {
                name: c.name,
                executed: c.succeeded + c.failed,
                succeeded: c.succeeded,
                failed: c.failed,
                running: c.running,
                pending: c.pending,
            })
            .collect(),
        None => record
            .steps
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
    };
    RunView {
        run_id: record.public_id(),
        record,
        position,
        steps,
    }
}

/// The full view of record `id`, with live counts while it runs.
pub(crate) async fn load(
    state: &Shared,
    pipeline_name: &str,
    id: i64,
) -> Result<RunView, ApiError> {
    let pipeline = state.pipeline(pipeline_name)?;
    let current = pipeline.current().filter(|c| c.id == id);
    let (record, position, live) = read_store(pipeline, move |conn| {
        let Some(record) = queue::get(conn, id)? else {
            return Ok((None, None, None));
        };
        let position = queue::position_in(conn, id)?;
        let engine_run = current.and_then(|c| c.engine_run).or(record.engine_run);
        let live = match (record.status.as_str(), record.first_engine_run, engine_run) {
            ("running", first, Some(last)) => Some(queue::live_step_counts(
                conn,
                first.unwrap_or(last).min(last),
                last,
            )?),
            _ => None,
        };
        Ok((Some(record), position, live))
    })
    .await?;
    let record = record.ok_or_else(|| no_run(&queue::public_id(pipeline_name, id)))?;
    Ok(view(record, position, live))
}

fn no_run(id: &str) -> ApiError {
    ApiError::not_found(format!("no run `{id}` on this server"))
}

/// The pipeline and row id of a public run id, or 404.
fn parse_id<'a>(state: &Shared, id: &'a str) -> Result<(&'a str, i64), ApiError> {
    queue::parse_public_id(id)
        .filter(|(pipeline, _)| state.pipelines.contains_key(*pipeline))
        .ok_or_else(|| no_run(id))
}

/// The body of a trigger; empty means `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Parameter values of this run, over the pipeline's configured `params`; each must be
    /// declared in the manifest's `[pipeline.params]`.
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// A queued run.
#[derive(Serialize, ToSchema)]
pub struct Triggered {
    /// `PIPELINE.N`
    pub run_id: String,
    /// Runs ahead of it in the wait list (0 = next to start).
    pub position: usize,
    /// The trigger merged into a run still waiting out its start delay.
    pub merged: bool,
}

/// `POST /pipelines/{name}/runs` `{"params": {...}}` → 202 `{"run_id", "position"}`.
#[utoipa::path(post, path = "/api/v1/pipelines/{name}/runs", operation_id = "triggerRun",
    tag = "runs", security(("bearer" = [])), params(super::openapi::PipelineName),
    request_body(content = Option<TriggerBody>, content_type = "application/json",
        description = "The run's parameters; an empty body is `{}`"),
    responses(
        (status = 202, description = "Queued (or merged into a run waiting out its `start_delay`)",
            body = Triggered),
        (status = 400, description = "Malformed JSON (`bad_request`, naming the field) or a \
            parameter the manifest does not declare or a required one left out (`bad_params`)",
            body = super::ErrorBody),
        (status = 404, description = "No such pipeline", body = super::ErrorBody),
        (status = 429, description = "The wait list is full (`queue_full`)", body = super::ErrorBody),
    ))]
pub async fn trigger(
    State(state): State<Shared>,
    Segment(name): Segment,
    JsonBody(body): JsonBody<TriggerBody>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let triggered = enqueue_run(&state, &name, body.params, "api").await?;
    Ok((StatusCode::ACCEPTED, Json(triggered)))
}

/// Queue a run of pipeline `name` with `given` params over its configured ones (what a trigger
/// from the API or the web UI, named by `source`, does).
pub(crate) async fn enqueue_run(
    state: &Shared,
    name: &str,
    given: BTreeMap<String, String>,
    source: &'static str,
) -> Result<Triggered, ApiError> {
    let name = name.to_string();
    let pipeline = state.pipeline(&name)?;
    let config = pipeline.config();
    // The pipeline's configured values, overridden by the trigger's, checked against the
    // manifest's `[pipeline.params]` now, so that a wrong name is this request's 400 and not a
    // failed run later.
    let mut params = config.params.clone();
    params.extend(given.clone());
    // Read on a blocking thread, as in `GET /pipelines/{name}`.
    let path = config.manifest.clone();
    let manifest = tokio::task::spawn_blocking(move || crate::manifest::load(&path))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(format!("pipeline {name}: {e}")))?
        .manifest;
    if let Err(e) = manifest.effective_params(&params) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_params",
            format!("params: {e}"),
        ));
    }
    let trigger = Trigger {
        pipeline: name.clone(),
        source,
        params,
        given,
        strategy: config.queue_strategy,
        limit: config.queue_limit,
        start_delay: config.start_delay,
    };
    let outcome = pipeline
        .writer
        .call(move |conn| queue::enqueue(conn, &trigger))
        .await?;
    pipeline.store_written();
    let (id, position, merged, replaced) = match outcome {
        Enqueued::Queued {
            id,
            position,
            replaced,
        } => (id, position, false, replaced),
        Enqueued::Merged { id, position } => (id, position, true, Vec::new()),
        Enqueued::Full { limit } => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!(
                    "{limit} runs of {name} are already waiting (queue_limit); try again later"
                ),
            ));
        }
    };
    // Announced before the worker is woken: otherwise its `run_started` can reach the event
    // stream before `run_queued` (seen on a loaded machine).
    if !merged {
        state.hub.events.publish(
            "run_queued",
            serde_json::json!({
                "pipeline": name, "run_id": queue::public_id(&name, id), "position": position,
                "trigger": source,
            }),
        );
    }
    for old in replaced {
        pipeline.ended_waiting(old, &queue::replaced_reason(&name, id));
    }
    pipeline.wake.notify_one();
    Ok(Triggered {
        run_id: queue::public_id(&name, id),
        position,
        merged,
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this pipeline's runs.
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pipeline: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<queue::RunStatus>)]
    status: Option<String>,
    /// Runs per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<usize>,
    /// Where the page starts: the `next_cursor` of the page before (empty: the first page).
    #[param(pattern = "^[0-9a-f]*$")]
    cursor: Option<String>,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /runs?pipeline=&status=&limit=&cursor=`: newest first.
#[utoipa::path(get, path = "/api/v1/runs", operation_id = "listRuns", tag = "runs",
    security(("bearer" = [])), params(ListQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPage),
        (status = 400, description = "A query value out of range or unknown", body = super::ErrorBody),
        (status = 404, description = "No such pipeline", body = super::ErrorBody),
    ))]
pub async fn list(
    State(state): State<Shared>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RunPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let page = page_of_runs(
        &state,
        query.pipeline.as_deref(),
        query.status.as_deref(),
        query.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page))
}

/// One page of runs, newest first across the pipelines (or of `pipeline`), in state `status`,
/// after `cursor` (a `next_cursor` given out before): `GET /runs` and the web UI's Runs page.
pub(crate) async fn page_of_runs(
    state: &Shared,
    pipeline: Option<&str>,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<RunPage, ApiError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is out of range: give 1 to {MAX_LIMIT}"
        )));
    }
    if let Some(status) = status
        && !queue::STATES.contains(&status)
    {
        return Err(ApiError::bad_request(format!(
            "status: `{status}` is not a run state: use one of {}",
            queue::STATES.join(", ")
        )));
    }
    // An empty cursor (`cursor=` from a client that passes on an absent `next_cursor`): the
    // first page.
    let cursor = cursor
        .filter(|text| !text.is_empty())
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Cursor>(&bytes).ok())
                .ok_or_else(|| ApiError::bad_request("cursor: not a cursor this server gave out"))
        })
        .transpose()?;
    let pipelines: Vec<_> = match pipeline {
        Some(name) => vec![state.pipeline(name)?.clone()],
        None => state.pipelines.values().cloned().collect(),
    };
    // Each store's newest `limit + 1` after the cursor, merged: enough to fill the page and know
    // whether another follows.
    let mut all = Vec::new();
    for pipeline in pipelines {
        let name = pipeline.config().name.clone();
        let status = status.map(str::to_string);
        let cursor = cursor.clone();
        let mut rows = read_store(&pipeline, move |conn| {
            queue::page(conn, &name, status.as_deref(), cursor.as_ref(), limit + 1)
        })
        .await?;
        all.append(&mut rows);
    }
    all.sort_by(|a, b| (&b.queued_at, &b.pipeline, b.id).cmp(&(&a.queued_at, &a.pipeline, a.id)));
    let more = all.len() > limit;
    all.truncate(limit);
    let next_cursor = match (more, all.last()) {
        (true, Some(last)) => {
            let cursor = Cursor {
                queued_at: last.queued_at.clone(),
                pipeline: last.pipeline.clone(),
                id: last.id,
            };
            Some(hex::encode(
                serde_json::to_vec(&cursor).map_err(ApiError::internal)?,
            ))
        }
        _ => None,
    };
    let mut runs = Vec::with_capacity(all.len());
    for record in all {
        let view = match record.status.as_str() {
            // Live counts and positions need more reads; only for the few unfinished runs.
            "queued" | "running" => load(state, &record.pipeline.clone(), record.id).await?,
            _ => view(record, None, None),
        };
        runs.push(view);
    }
    Ok(RunPage { runs, next_cursor })
}

/// `GET /runs/{id}`: one run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", operation_id = "getRun", tag = "runs",
    security(("bearer" = [])), params(super::openapi::RunId),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run", body = super::ErrorBody),
    ))]
pub async fn show(
    State(state): State<Shared>,
    Segment(id): Segment,
) -> Result<Json<RunView>, ApiError> {
    let (pipeline, id) = parse_id(&state, &id)?;
    Ok(Json(load(&state, pipeline, id).await?))
}

/// What became of a cancelled run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelStatus {
    /// It was queued and is now cancelled.
    Cancelled,
    /// It is running and being stopped.
    Cancelling,
}

/// The answer of a cancel.
#[derive(Serialize, ToSchema)]
pub struct CancelAnswer {
    run_id: String,
    status: CancelStatus,
}

/// `POST /runs/{id}/cancel`: a queued run is cancelled at once; a running one is stopped (its
/// running tasks are killed and publish nothing; the store stays resumable).
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", operation_id = "cancelRun", tag = "runs",
    security(("bearer" = [])), params(super::openapi::RunId),
    responses(
        (status = 202, description = "Cancelled (queued) or being stopped (running)",
            body = CancelAnswer),
        (status = 404, description = "No such run", body = super::ErrorBody),
        (status = 409, description = "The run has already ended", body = super::ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<Shared>,
    Segment(public): Segment,
) -> Result<(StatusCode, Json<CancelAnswer>), ApiError> {
    let status = cancel_run(&state, &public).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelAnswer {
            run_id: public,
            status,
        }),
    ))
}

/// Cancel run `public`: cancelled at once when it was queued, being stopped when it runs; 409
/// when it has ended. The API's cancel and the web UI's Cancel button.
pub(crate) async fn cancel_run(state: &Shared, public: &str) -> Result<CancelStatus, ApiError> {
    let (name, id) = parse_id(state, public)?;
    let pipeline = state.pipeline(name)?;
    let found = pipeline
        .writer
        .call(move |conn| queue::cancel_queued(conn, id, "cancelled by a client"))
        .await?;
    pipeline.store_written();
    let status = match found {
        CancelQueued::NotFound => return Err(no_run(public)),
        CancelQueued::Cancelled => {
            pipeline.ended_waiting(id, "cancelled by a client");
            pipeline.wake.notify_one();
            CancelStatus::Cancelled
        }
        CancelQueued::Running => {
            if !pipeline.cancel_running(id) {
                // Either it is starting (claimed, not current yet: the cancel is kept for its
                // start) or it ended between the two looks.
                let again = pipeline
                    .writer
                    .call(move |conn| queue::cancel_queued(conn, id, "cancelled by a client"))
                    .await?;
                if let CancelQueued::Finished(status) = again {
                    pipeline.forget_cancel(id);
                    return Err(ApiError::conflict(format!(
                        "run {public} has already ended ({status})"
                    )));
                }
            }
            CancelStatus::Cancelling
        }
        CancelQueued::Finished(status) => {
            return Err(ApiError::conflict(format!(
                "run {public} has already ended ({status})"
            )));
        }
    };
    Ok(status)
}

/// The answer of a delete.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    run_id: String,
    /// Always true.
    deleted: bool,
    /// The run's state when it was deleted.
    #[schema(value_type = queue::RunStatus)]
    status: String,
}

/// `DELETE /runs/{id}`: removes a queued run from the wait list (or a finished run's record);
/// a running run must be cancelled first.
#[utoipa::path(delete, path = "/api/v1/runs/{id}", operation_id = "deleteRun", tag = "runs",
    security(("bearer" = [])), params(super::openapi::RunId),
    responses(
        (status = 200, description = "The record is gone", body = Deleted),
        (status = 404, description = "No such run", body = super::ErrorBody),
        (status = 409, description = "The run is running: cancel it first", body = super::ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Shared>,
    Segment(public): Segment,
) -> Result<Json<Deleted>, ApiError> {
    let (name, id) = parse_id(&state, &public)?;
    let pipeline = state.pipeline(name)?;
    let before = pipeline
        .writer
        .call(move |conn| queue::delete(conn, id))
        .await?;
    pipeline.store_written();
    match before.as_deref() {
        None => Err(no_run(&public)),
        Some("running") => Err(ApiError::conflict(format!(
            "run {public} is running: cancel it first (POST /api/v1/runs/{public}/cancel)"
        ))),
        Some(status) => {
            if status == "queued" {
                pipeline.ended_waiting(id, "deleted by a client");
            }
            pipeline.wake.notify_one();
            Ok(Json(Deleted {
                run_id: public,
                deleted: true,
                status: status.to_string(),
            }))
        }
    }
}
