//! `GET /pipelines` and `GET /pipelines/{name}`: what the server runs, each pipeline's steps and
//! edges (read from its manifest now), its settings and its wait list.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::runs::{RunView, view};
use super::{ApiError, Segment, Shared, read_store};
use crate::serve::config::QueueStrategy;
use crate::serve::queue;
use crate::serve::worker::Pipeline;
use crate::store::runs::StepKind;

/// A pipeline the server runs, with its settings and the state of its wait list.
#[derive(Serialize, ToSchema)]
pub struct PipelineSummary {
    name: String,
    /// The manifest's path on the server.
    manifest: String,
    /// The store's path on the server.
    db: String,
    /// Runs that may wait; a trigger past it gets 429.
    queue_limit: usize,
    queue_strategy: QueueStrategy,
    /// The debounce delay (`start_delay`) in seconds.
    start_delay_s: f64,
    /// Default parameter values of this pipeline's runs.
    params: BTreeMap<String, String>,
    /// Runs waiting to start.
    queued: usize,
    /// The run executing now (`PIPELINE.N`), if any.
    running: Option<String>,
}

/// The answer of `GET /pipelines`.
#[derive(Serialize, ToSchema)]
pub struct PipelineList {
    pipelines: Vec<PipelineSummary>,
}

/// A step of the manifest.
#[derive(Serialize, ToSchema)]
pub struct StepInfo {
    name: String,
    /// How the step takes its inputs (`once`, `each`, `gather`, …, as `grit status` shows).
    kind: &'static str,
    /// The input patterns it reads.
    inputs: Vec<String>,
}

/// Step `to` reads what step `from` writes, through the input pattern `via`.
#[derive(Serialize, ToSchema)]
pub struct EdgeInfo {
    from: String,
    to: String,
    via: String,
}

/// One pipeline in full: its settings, steps, edges and wait list.
#[derive(Serialize, ToSchema)]
pub struct PipelineDetail {
    #[serde(flatten)]
    summary: PipelineSummary,
    steps: Vec<StepInfo>,
    edges: Vec<EdgeInfo>,
    schedule: Vec<String>,
    watch: Vec<String>,
    /// Why the manifest cannot be read now (steps and edges are then empty).
    manifest_error: Option<String>,
    /// The wait list, in the order the runs will start.
    queue: Vec<RunView>,
}

async fn summary(pipeline: &Pipeline) -> Result<(PipelineSummary, Vec<RunView>), ApiError> {
    let config = pipeline.config();
    let waiting = read_store(pipeline, queue::waiting).await?;
    let running = pipeline
        .current()
        .map(|c| queue::public_id(&config.name, c.id));
    let queue: Vec<RunView> = waiting
        .into_iter()
        .enumerate()
        .map(|(position, record)| view(record, Some(position), None))
        .collect();
    Ok((
        PipelineSummary {
            name: config.name.clone(),
            manifest: config.manifest.display().to_string(),
            db: config.db.display().to_string(),
            queue_limit: config.queue_limit,
            queue_strategy: config.queue_strategy,
            start_delay_s: config.start_delay.as_secs_f64(),
            params: config.params.clone(),
            queued: queue.len(),
            running,
        },
        queue,
    ))
}

/// `GET /pipelines`: the pipelines this server runs.
#[utoipa::path(get, path = "/api/v1/pipelines", operation_id = "listPipelines", tag = "pipelines",
    security(("bearer" = [])),
    responses((status = 200, description = "Every pipeline of the server", body = PipelineList)))]
pub async fn list(State(state): State<Shared>) -> Result<Json<PipelineList>, ApiError> {
    let mut pipelines = Vec::new();
    for pipeline in state.pipelines.values() {
        pipelines.push(summary(pipeline).await?.0);
    }
    Ok(Json(PipelineList { pipelines }))
}

/// `GET /pipelines/{name}`: one pipeline with its steps, edges, schedule and wait list.
#[utoipa::path(get, path = "/api/v1/pipelines/{name}", operation_id = "getPipeline",
    tag = "pipelines", security(("bearer" = [])), params(super::openapi::PipelineName),
    responses(
        (status = 200, description = "The pipeline", body = PipelineDetail),
        (status = 404, description = "No such pipeline", body = super::ErrorBody),
    ))]
pub async fn show(
    State(state): State<Shared>,
    Segment(name): Segment,
) -> Result<Json<PipelineDetail>, ApiError> {
    let pipeline = state.pipeline(&name)?;
    let config = pipeline.config();
    let (summary, queue) = summary(pipeline).await?;
    // The manifest is read on a blocking thread: a slow or hung filesystem delays this answer
    // (up to request_timeout), never the server's async threads.
    let path = config.manifest.clone();
    let loaded = tokio::task::spawn_blocking(move || crate::manifest::load(&path))
        .await
        .map_err(ApiError::internal)?;
    let (steps, edges, manifest_error) = match loaded {
        Ok(loaded) => {
            let m = loaded.manifest;
            let steps = m
                .steps
                .iter()
                .map(|s| StepInfo {
                    name: s.name.clone(),
                    kind: StepKind::of(s).as_str(),
                    inputs: s.inputs.clone(),
                })
                .collect();
            let edges = m
                .edges()
                .into_iter()
                .map(|e| EdgeInfo {
                    from: m.steps[e.from].name.clone(),
                    to: m.steps[e.to].name.clone(),
                    via: e.via,
                })
                .collect();
            (steps, edges, None)
        }
        Err(e) => (Vec::new(), Vec::new(), Some(e.to_string())),
    };
    Ok(Json(PipelineDetail {
        summary,
        steps,
        edges,
        schedule: config.schedule.clone(),
        watch: config
            .watch
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        manifest_error,
        queue,
    }))
}
