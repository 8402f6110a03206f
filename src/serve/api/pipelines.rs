//! `GET /pipelines` and `GET /pipelines/{name}`: what the server runs, each pipeline's steps and
//! edges (read from its manifest now), its settings and its wait list.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::runs::{RunView, view};
use super::{ApiError, Shared, read_store};
use crate::serve::config::QueueStrategy;
use crate::serve::queue;
use crate::serve::worker::Pipeline;
use crate::store::runs::StepKind;

#[derive(Serialize)]
pub struct PipelineSummary {
    name: String,
    manifest: String,
    db: String,
    queue_limit: usize,
    queue_strategy: QueueStrategy,
    start_delay_s: f64,
    params: BTreeMap<String, String>,
    /// Runs waiting to start.
    queued: usize,
    /// The run executing now, if any.
    running: Option<String>,
}

#[derive(Serialize)]
pub struct StepInfo {
    name: String,
    kind: &'static str,
    inputs: Vec<String>,
}

#[derive(Serialize)]
pub struct EdgeInfo {
    from: String,
    to: String,
    via: String,
}

#[derive(Serialize)]
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

/// `GET /pipelines`
pub async fn list(
    State(state): State<Shared>,
) -> Result<Json<BTreeMap<&'static str, Vec<PipelineSummary>>>, ApiError> {
    let mut out = Vec::new();
    for pipeline in state.pipelines.values() {
        out.push(summary(pipeline).await?.0);
    }
    Ok(Json(BTreeMap::from([("pipelines", out)])))
}

/// `GET /pipelines/{name}`
pub async fn show(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PipelineDetail>, ApiError> {
    let pipeline = state.pipeline(&name)?;
    let config = pipeline.config();
    let (summary, queue) = summary(pipeline).await?;
    let (steps, edges, manifest_error) = match crate::manifest::load(&config.manifest) {
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
