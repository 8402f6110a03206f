//! The Pipelines page (each pipeline's last run, next scheduled run, queue), one pipeline's page
//! (step graph, task counts, the dry run, recent runs) and the Run form with its trigger.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::layout::{self, Nav, Scripts};
use super::runs::runs_table;
use super::session::Session;
use super::{Page, UiError, graph};
use crate::manifest::Manifest;
use crate::serve::api::{self, ApiError, Shared, read_store};
use crate::serve::queue::{self, RunRecord};
use crate::serve::schedule;
use crate::serve::worker::Pipeline;
use crate::store::plan::{StepPlan, plan};
use crate::store::provenance;
use crate::store::queries;

/// Recent runs on a pipeline's page.
const RECENT_RUNS: usize = 10;

/// What a pipeline's page shows of its steps, read from the store in one snapshot: the same read
/// models as `grit graph` and `grit status`. Kept in [`Pipeline::step_models`] until the data
/// they read changes (they read only what the store's dataflow generation guards).
pub struct StepModels {
    steps: Vec<provenance::GraphStep>,
    flows: Vec<provenance::Flow>,
    status: Vec<queries::StepStatus>,
}

impl StepModels {
    fn read(conn: &rusqlite::Connection) -> Result<Self, crate::store::StoreError> {
        Ok(StepModels {
            steps: provenance::graph_steps(conn)?,
            flows: provenance::flows(conn)?,
            status: queries::status(conn)?,
        })
    }
}

/// Compute `pipeline`'s [`StepModels`] ahead of the next view, on the calling thread: called
/// (on a blocking thread) when the server starts and when a run ends, the two moments the store
/// has just changed and nobody has looked yet. On a store of 100,000 resources the computation
/// takes about 0.1 s, which would otherwise be the next viewer's wait; a viewer who comes while
/// it runs waits for it instead of computing it again. Best effort: while one computation is
/// under way another is not started (a burst of triggers costs one, not one each), and a view
/// the burst left stale computes its own.
pub fn warm(pipeline: &Pipeline) {
    let warmed = pipeline.step_models.refresh_if_idle(
        || Ok(crate::store::open_read(&pipeline.paths.root)?.1),
        StepModels::read,
    );
    if let Some(Err(e)) = warmed {
        // The page computes them itself, and reports the error if it recurs.
        tracing::debug!(pipeline = %pipeline.config().name, "computing the step graph ahead: {e}");
    }
}

/// The [`StepModels`] of `pipeline`'s store as it is now, off the async threads. While a run is
/// publishing, every task changes the store, and computing them anew for each view costs about
/// 0.1 s at 100,000 resources: then the page shows the last ones computed at once, and one
/// refresh at a time computes the next in the background (the page's counts trail the run by one
/// view; the run's own page follows it live). Outside a run they are always the store's own.
async fn step_models(pipeline: &Arc<Pipeline>) -> Result<Arc<StepModels>, UiError> {
    if pipeline.publishing()
        && let Some(latest) = pipeline.step_models.latest()
    {
        let pipeline = pipeline.clone();
        tokio::task::spawn_blocking(move || {
            pipeline.step_models.refresh_if_idle(
                || Ok(crate::store::open_read(&pipeline.paths.root)?.1),
                StepModels::read,
            )
        });
        return Ok(latest);
    }
    let pipeline = pipeline.clone();
    let models = tokio::task::spawn_blocking(move || {
        pipeline.step_models.get(
            || Ok(crate::store::open_read(&pipeline.paths.root)?.1),
            StepModels::read,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)?;
    Ok(models)
}

/// What the Pipelines page shows of one pipeline.
struct Overview {
    last: Option<RunRecord>,
    queued: usize,
    next_fire_ms: Option<i64>,
}

async fn overview(pipeline: &Pipeline) -> Result<Overview, UiError> {
    let config = pipeline.config();
    let name = config.name.clone();
    let schedule = config.schedule.clone();
    Ok(read_store(pipeline, move |conn| {
        Ok(Overview {
            last: queue::page(conn, &name, None, None, 1)?.pop(),
            queued: queue::waiting(conn)?.len(),
            next_fire_ms: schedule::next_fire(conn, &name, &schedule, queue::unix_ms())?,
        })
    })
    .await?)
}

/// The Run button of a pipeline (operators only): a link to its form.
fn run_button(session: &Session, name: &str) -> Markup {
    html! {
        @if session.operator() {
            a.button.primary href={ "/ui/pipelines/" (name) "/run" } { "Run " span.visually-hidden { (name) } }
        }
    }
}

/// `GET /ui/`: the Pipelines page.
pub async fn list(State(state): State<Shared>, Extension(session): Extension<Session>) -> Page {
    let mut rows = Vec::new();
    for (name, pipeline) in &state.pipelines {
        rows.push((name, pipeline.current(), overview(pipeline).await?));
    }
    let body = html! {
        h1 { "Pipelines" }
        div.scroll {
            table {
                thead {
                    tr {
                        th scope="col" { "Pipeline" }
                        th scope="col" { "Last run" }
                        th scope="col" { "When" }
                        th scope="col" { "Took" }
                        th scope="col" { "Next scheduled" }
                        th.num scope="col" { "Queued" }
                        @if session.operator() { th scope="col" { span.visually-hidden { "Actions" } } }
                    }
                }
                tbody {
                    @for (name, current, o) in &rows {
                        tr {
                            th scope="row" { a href={ "/ui/pipelines/" (name) } { (name) } }
                            td {
                                @match &o.last {
                                    Some(run) => {
                                        a href={ "/ui/runs/" (run.public_id()) } { (layout::state(&run.status)) }
                                        @if current.is_some() && run.status != "running" {
                                            " " span.hint { "(one is running)" }
                                        }
                                    }
                                    None => span.hint { "never ran" },
                                }
                            }
                            td { (layout::when(o.last.as_ref().map(|r| r.started_at.as_deref().unwrap_or(&r.queued_at)))) }
                            td { @if let Some(run) = &o.last { (layout::took(run.started_at.as_deref(), run.finished_at.as_deref())) } }
                            td {
                                @match o.next_fire_ms {
                                    Some(ms) => (layout::at_ms(ms)),
                                    None => span.hint { "not scheduled" },
                                }
                            }
                            td.num { (o.queued) }
                            @if session.operator() { td { (run_button(&session, name)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &session,
        "Pipelines",
        Nav::Pipelines,
        Scripts::None,
        body,
    ))
}

/// The manifest of `pipeline` as its runs see it now, with its configured params bound; or why
/// it cannot be read (said on the page, never as a path).
fn manifest_now(pipeline: &Pipeline) -> Result<Manifest, String> {
    let config = pipeline.config();
    let mut manifest = crate::manifest::load(&config.manifest)
        .map_err(|e| {
            tracing::warn!("pipeline {}: {e}", config.name);
            "its manifest cannot be read now (the server's log says why)".to_string()
        })?
        .manifest;
    manifest
        .bind_params(&config.params)
        .map_err(|e| format!("its parameters: {e}"))?;
    Ok(manifest)
}

fn plan_table(plans: &[StepPlan]) -> Markup {
    html! {
        div.scroll {
            table {
                caption.visually-hidden { "What a run would execute now, and why" }
                thead {
                    tr {
                        th scope="col" { "Step" }
                        th scope="col" { "Version" }
                        th.num scope="col" { "Would run" }
                        th scope="col" { "Why" }
                        th.num scope="col" { "Up to date" }
                    }
                }
                tbody {
                    @for p in plans {
                        tr {
                            th scope="row" { (p.step) }
                            td {
                                code { (p.version) }
                                @if let Some(change) = p.change { " " span.hint { "(" (change) ")" } }
                            }
                            td.num { (p.tasks) }
                            td {
                                @if let Some(until) = &p.gated_until {
                                    "gated by min_interval until " (until)
                                } @else if p.reasons.is_empty() && p.tasks == 0 {
                                    span.hint { "nothing to do" }
                                }
                                ul {
                                    @for r in &p.reasons {
                                        li {
                                            (r.reason) " × " (r.count)
                                            @if !r.examples.is_empty() {
                                                span.hint { " (e.g. " (r.examples.join(", ")) ")" }
                                            }
                                        }
                                    }
                                    @if !p.after.is_empty() {
                                        li { "may run after " (p.after.join(", ")) " gives it new inputs" }
                                    }
                                    @for change in &p.params_changed {
                                        li { "parameter " code { (change.name) } " changed" }
                                    }
                                }
                            }
                            td.num { (p.up_to_date) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/pipelines/{name}`
pub async fn show(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Page {
    let pipeline = state.pipeline(&name)?.clone();
    let config = pipeline.config();
    let overview = overview(&pipeline).await?;
    let manifest = manifest_now(&pipeline);
    let key = name.clone();
    let models = step_models(&pipeline).await?;
    let StepModels {
        steps,
        flows,
        status,
    } = &*models;
    let (recent, plans) = read_store(&pipeline, move |conn| {
        let plans = match &manifest {
            Ok(m) => Ok(plan(Some(conn), m, &[], &[])?),
            Err(e) => Err(e.clone()),
        };
        Ok((queue::page(conn, &key, None, None, RECENT_RUNS)?, plans))
    })
    .await?;
    let running = pipeline.current().map(|c| queue::public_id(&name, c.id));
    let body = html! {
        h1 { "Pipeline " (name) }
        div.actions {
            (run_button(&session, &name))
            a.button href={ "/ui/runs?pipeline=" (name) } { "All runs" }
            a.button href={ "/ui/resources?pipeline=" (name) } { "Resources" }
        }
        (layout::facts([
            ("Running", html! { @match &running { Some(id) => a href={ "/ui/runs/" (id) } { (id) }, None => span.hint { "nothing" } } }),
            ("Queued", html! { (overview.queued) " of at most " (config.queue_limit) }),
            ("Schedule", html! {
                @if config.schedule.is_empty() { span.hint { "none" } }
                @else { (config.schedule.join(", ")) " — next " @if let Some(ms) = overview.next_fire_ms { (layout::at_ms(ms)) } }
            }),
        ]))
        h2 { "Steps" }
        @if steps.is_empty() {
            p.hint { "No step has run yet: the graph appears after the first run." }
        } @else {
            figure.graph { (graph::svg(steps, flows, status)) }
            div.scroll {
                table {
                    caption.visually-hidden { "Tasks of each step by state" }
                    thead {
                        tr {
                            th scope="col" { "Step" }
                            th scope="col" { "State" }
                            (layout::task_count_heads())
                            th.num.wide scope="col" { "Live outputs" }
                        }
                    }
                    tbody {
                        @for s in status {
                            tr {
                                th scope="row" { (s.name) " " span.hint { (s.kind) " " code { (s.version) } } }
                                td { (layout::state(graph::step_state(Some(s)))) }
                                (layout::task_count_cells(&layout::TaskCounts {
                                    pending: s.pending,
                                    running: s.running,
                                    succeeded: s.succeeded,
                                    failed: s.failed,
                                }))
                                td.num.wide { a href={ "/ui/resources?pipeline=" (name) } { (s.live_outputs) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "What a run would do now" }
        @match &plans {
            Ok(plans) => (plan_table(plans)),
            Err(e) => p.notice { "No dry run: " (e) },
        }
        h2 { "Recent runs" }
        (runs_table(&recent, false))
    };
    Ok(layout::page(
        &session,
        &name,
        Nav::Pipelines,
        Scripts::None,
        body,
    ))
}

/// The Run form of `name`: its declared parameters, filled with the configured values or the
/// defaults.
fn run_form_page(
    session: &Session,
    name: &str,
    manifest: &Manifest,
    values: &BTreeMap<String, String>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { "Run " (name) }
        @if let Some(error) = error { p.notice role="alert" { (error) } }
        form method="post" action={ "/ui/pipelines/" (name) "/runs" } {
            (layout::csrf(session))
            @if manifest.params.is_empty() {
                p.hint { "This pipeline declares no parameters." }
            }
            @for p in &manifest.params {
                @let id = format!("param-{}", p.name);
                label for=(id) { (p.name) }
                input #(id) type="text" name={ "param." (p.name) }
                    value=(values.get(&p.name).or(p.default.as_ref()).map(String::as_str).unwrap_or(""))
                    required[p.default.is_none()]
                    aria-describedby={ (id) "-hint" };
                p.hint id={ (id) "-hint" } {
                    @if let Some(d) = &p.description { (d) ". " }
                    @match &p.default { Some(d) => { "Default: " code { (d) } }, None => "Required." }
                }
            }
            p { button.primary type="submit" { "Queue the run" } }
        }
    };
    let mut response = layout::page(
        session,
        &format!("Run {name}"),
        Nav::Pipelines,
        Scripts::None,
        body,
    );
    *response.status_mut() = status;
    response
}

/// `GET /ui/pipelines/{name}/run`
pub async fn run_form(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Page {
    let pipeline = state.pipeline(&name)?;
    if !session.operator() {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "running a pipeline needs the operator role; you are signed in as a viewer",
        ));
    }
    let manifest = manifest_now(pipeline).map_err(|e| {
        UiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("pipeline {name}: {e}"),
        )
    })?;
    Ok(run_form_page(
        &session,
        &name,
        &manifest,
        &pipeline.config().params,
        None,
        StatusCode::OK,
    ))
}

/// `POST /ui/pipelines/{name}/runs`: queue a run with the form's `param.NAME` fields, then show it.
pub async fn trigger(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Page {
    let params: BTreeMap<String, String> = fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_string(), v)))
        .collect();
    match api::runs::enqueue_run(&state, &name, params.clone(), "ui").await {
        Ok(triggered) => {
            Ok(Redirect::to(&format!("/ui/runs/{}", triggered.run_id)).into_response())
        }
        Err(e)
            if e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::TOO_MANY_REQUESTS =>
        {
            let pipeline = state.pipeline(&name)?;
            let manifest = manifest_now(pipeline)
                .map_err(|m| UiError::new(StatusCode::SERVICE_UNAVAILABLE, m))?;
            Ok(run_form_page(
                &session,
                &name,
                &manifest,
                &params,
                Some(&e.message),
                e.status,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
