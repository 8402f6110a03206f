//! The Runs page (paged, filtered by pipeline and state) and one run's page: its facts, per-step
//! progress and tasks (failed first, with their error), Cancel and Run again. The live part is a
//! fragment (`/ui/runs/{id}/live`) that htmx fetches again whenever the server's event stream
//! says a task or the run moved; without JavaScript the page is the same, as of its rendering.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Scripts};
use super::session::Session;
use super::{PAGE_ROWS, Page, UiError};
use crate::serve::api::runs::{RunView, load, page_of_runs};
use crate::serve::api::{self, Shared, read_store};
use crate::serve::queue::{self, RunRecord};
use crate::store::queries::{self, TaskInfo};

/// A table of runs; `pipeline_column` when they come from several pipelines.
pub fn runs_table(runs: &[RunRecord], pipeline_column: bool) -> Markup {
    html! {
        @if runs.is_empty() {
            p.hint { "No runs." }
        } @else {
            div.scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Run" }
                            @if pipeline_column { th scope="col" { "Pipeline" } }
                            th scope="col" { "State" }
                            th scope="col" { "Queued" }
                            th scope="col" { "Took" }
                            th.wide scope="col" { "Trigger" }
                        }
                    }
                    tbody {
                        @for run in runs {
                            tr {
                                th scope="row" { a href={ "/ui/runs/" (run.public_id()) } { (run.public_id()) } }
                                @if pipeline_column {
                                    td { a href={ "/ui/pipelines/" (run.pipeline) } { (run.pipeline) } }
                                }
                                td { (layout::state(&run.status)) }
                                td { (layout::when(Some(&run.queued_at))) }
                                td { (layout::took(run.started_at.as_deref(), run.finished_at.as_deref())) }
                                td.wide { (run.trigger) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pipeline: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// An empty form field means "any".
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// `GET /ui/runs?pipeline=&status=&cursor=`
pub async fn list(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Page {
    let (pipeline, status) = (given(&query.pipeline), given(&query.status));
    let page = page_of_runs(&state, pipeline, status, given(&query.cursor), PAGE_ROWS).await?;
    let records: Vec<RunRecord> = page.runs.into_iter().map(|v| v.record).collect();
    let next = page.next_cursor.map(|cursor| {
        let mut url = format!("/ui/runs?cursor={cursor}");
        if let Some(p) = pipeline {
            url.push_str(&format!("&pipeline={p}"));
        }
        if let Some(s) = status {
            url.push_str(&format!("&status={s}"));
        }
        url
    });
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/ui/runs" {
            div {
                label for="f-pipeline" { "Pipeline" }
                select #f-pipeline name="pipeline" {
                    option value="" { "any" }
                    @for name in state.pipelines.keys() {
                        option value=(name) selected[pipeline == Some(name.as_str())] { (name) }
                    }
                }
            }
            div {
                label for="f-status" { "State" }
                select #f-status name="status" {
                    option value="" { "any" }
                    @for s in queue::STATES {
                        option value=(s) selected[status == Some(*s)] { (s) }
                    }
                }
            }
            div { button type="submit" { "Filter" } }
        }
        (runs_table(&records, state.pipelines.len() > 1))
        nav.pager aria-label="Pages" {
            @if query.cursor.is_some() { a href="/ui/runs" { "Newest" } }
            @if let Some(next) = next { a href=(next) rel="next" { "Older runs" } }
        }
    };
    Ok(layout::page(
        &session,
        "Runs",
        Nav::Runs,
        Scripts::None,
        body,
    ))
}

#[derive(Deserialize, Default)]
pub struct RunQuery {
    /// The first task shown (tasks are paged).
    from: Option<usize>,
}

/// The pipeline and row id of a public run id, or 404.
fn parse(state: &Shared, id: &str) -> Result<(String, i64), UiError> {
    queue::parse_public_id(id)
        .filter(|(p, _)| state.pipelines.contains_key(*p))
        .map(|(p, n)| (p.to_string(), n))
        .ok_or_else(|| {
            UiError::new(
                StatusCode::NOT_FOUND,
                format!("no run `{id}` on this server"),
            )
        })
}

/// The run and the tasks it started, failed first, then running, then the rest in order.
async fn load_with_tasks(state: &Shared, id: &str) -> Result<(RunView, Vec<TaskInfo>), UiError> {
    let (name, number) = parse(state, id)?;
    let view = load(state, &name, number).await?;
    let pipeline = state.pipeline(&name)?;
    let live = pipeline
        .current()
        .filter(|c| c.id == number)
        .and_then(|c| c.engine_run);
    let (first, last) = (
        view.record.first_engine_run,
        live.or(view.record.engine_run),
    );
    let mut tasks = match last {
        Some(last) => {
            read_store(pipeline, move |conn| {
                queries::tasks_of_runs(conn, first.unwrap_or(last).min(last), last)
            })
            .await?
        }
        None => Vec::new(),
    };
    let rank = |t: &TaskInfo| match t.state.as_str() {
        "failed" => 0,
        "running" => 1,
        _ => 2,
    };
    tasks.sort_by_key(|t| (rank(t), t.id));
    Ok((view, tasks))
}

/// The part of the run page that changes while it runs.
fn live_part(session: &Session, view: &RunView, tasks: &[TaskInfo], from: usize) -> Markup {
    let run = &view.record;
    let id = &view.run_id;
    let active = !queue::is_final(&run.status);
    let shown = tasks.iter().skip(from).take(super::PAGE_ROWS);
    let failed = tasks.iter().filter(|t| t.state == "failed").count();
    html! {
        (layout::facts([
            ("State", html! {
                span #run-state { (layout::state(&run.status)) }
                @if run.resumed { " " span.hint { "(resumed after an interruption)" } }
                @if let Some(p) = view.position { " " span.hint { "(" (p) " ahead of it)" } }
            }),
            ("Queued", layout::when(Some(&run.queued_at))),
            ("Started", layout::when(run.started_at.as_deref())),
            ("Finished", layout::when(run.finished_at.as_deref())),
            ("Took", layout::took(run.started_at.as_deref(), run.finished_at.as_deref())),
            ("Engine run", html! { @match run.engine_run { Some(n) => (n), None => span.hint { "not started" } } }),
        ]))
        @if let Some(reason) = &run.reason { p.notice { (reason) } }
        @if session.operator() {
            div.actions {
                @if active {
                    form.inline method="post" action={ "/ui/runs/" (id) "/cancel" } {
                        (layout::csrf(session))
                        button.danger type="submit" { "Cancel" }
                    }
                }
                form.inline method="post" action={ "/ui/runs/" (id) "/again" } {
                    (layout::csrf(session))
                    button type="submit" { "Run again" }
                }
            }
        }
        h2 { "Steps" }
        @if view.steps.is_empty() {
            p.hint { "No task has started yet." }
        } @else {
            div.scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Step" }
                            th scope="col" { "Progress" }
                            (layout::task_count_heads())
                        }
                    }
                    tbody {
                        @for s in &view.steps {
                            @let done = s.succeeded + s.failed;
                            @let total = done + s.running + s.pending;
                            tr {
                                th scope="row" { (s.name) }
                                td {
                                    progress max=(total.max(1)) value=(done)
                                        aria-label={ (s.name) ": " (done) " of " (total) " tasks done" } {}
                                    " " span.hint { (done) "/" (total) }
                                }
                                (layout::task_count_cells(&layout::TaskCounts {
                                    pending: s.pending,
                                    running: s.running,
                                    succeeded: s.succeeded,
                                    failed: s.failed,
                                }))
                            }
                        }
                    }
                }
            }
        }
        h2 { "Tasks" @if failed > 0 { " " span.hint { "(" (failed) " failed, listed first)" } } }
        @if tasks.is_empty() {
            p.hint { "None yet." }
        } @else {
            div.scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Task" }
                            th scope="col" { "Step" }
                            th scope="col" { "State" }
                            th.num scope="col" { "Took" }
                            th.num scope="col" { "Attempt" }
                            th.num scope="col" { "Exit" }
                            th scope="col" { "Input / error" }
                        }
                    }
                    tbody {
                        @for t in shown {
                            tr {
                                th scope="row" { a href={ "/ui/tasks/" (run.pipeline) "." (t.id) } { (t.id) } }
                                td { (t.step) }
                                td { (layout::state(&t.state)) }
                                td.num {
                                    @match t.duration_ms {
                                        Some(ms) => (layout::rough(std::time::Duration::from_millis(ms.max(0) as u64))),
                                        None => (layout::took(t.started_at.as_deref(), t.finished_at.as_deref())),
                                    }
                                }
                                td.num { (t.attempts) }
                                td.num { @if let Some(code) = t.exit_code { (code) } }
                                td {
                                    @if let Some(error) = &t.error {
                                        span.error-line { (error.lines().next().unwrap_or("")) }
                                    } @else if let Some(input) = &t.input_name {
                                        (input)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Task pages" {
                @if from > 0 {
                    a href={ "/ui/runs/" (id) "?from=" (from.saturating_sub(super::PAGE_ROWS)) } { "Previous tasks" }
                }
                @if from + super::PAGE_ROWS < tasks.len() {
                    a href={ "/ui/runs/" (id) "?from=" (from + super::PAGE_ROWS) } rel="next" {
                        "More tasks (" (tasks.len() - from - super::PAGE_ROWS) ")"
                    }
                }
            }
        }
    }
}

/// `GET /ui/runs/{id}`
pub async fn show(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Page {
    let (view, tasks) = load_with_tasks(&state, &id).await?;
    let from = query.from.unwrap_or(0);
    let run = &view.record;
    let live = live_part(&session, &view, &tasks, from);
    let body = html! {
        h1 { "Run " (view.run_id) }
        (layout::facts([
            ("Pipeline", html! { a href={ "/ui/pipelines/" (run.pipeline) } { (run.pipeline) } }),
            ("Trigger", html! { (run.trigger) }),
            ("Parameters", html! {
                @if run.params.is_empty() { span.hint { "none" } }
                @for (k, v) in &run.params { code { (k) "=" (v) } " " }
            }),
        ]))
        div hx-ext="sse" sse-connect={ "/ui/events?pipeline=" (run.pipeline) } {
            div #live hx-get={ "/ui/runs/" (view.run_id) "/live?from=" (from) }
                // Once connected (events before that were missed), and at each change.
                hx-trigger="htmx:sseOpen from:closest [sse-connect], sse:run_started, sse:run_finished, sse:task_started, sse:task_finished"
                // Events during a fetch make one more fetch after it: a burst costs two fetches,
                // and the last event is never lost (htmx's `throttle` would drop it).
                hx-sync="this:queue last" hx-swap="innerHTML" aria-live="polite" {
                (live)
            }
        }
    };
    Ok(layout::page(
        &session,
        &format!("Run {}", view.run_id),
        Nav::Runs,
        Scripts::Live,
        body,
    ))
}

/// `GET /ui/runs/{id}/live`: the changing part of the run page, for htmx.
pub async fn live(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
) -> Page {
    let (view, tasks) = load_with_tasks(&state, &id).await?;
    Ok(
        Html(live_part(&session, &view, &tasks, query.from.unwrap_or(0)).into_string())
            .into_response(),
    )
}

/// `POST /ui/runs/{id}/cancel`
pub async fn cancel(State(state): State<Shared>, Path(id): Path<String>) -> Page {
    api::runs::cancel_run(&state, &id).await?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
}

/// `POST /ui/runs/{id}/again`: a new run with the same parameters.
pub async fn again(State(state): State<Shared>, Path(id): Path<String>) -> Page {
    let (name, number) = parse(&state, &id)?;
    let view = load(&state, &name, number).await?;
    let triggered = api::runs::enqueue_run(&state, &name, view.record.params, "ui").await?;
    Ok(Redirect::to(&format!("/ui/runs/{}", triggered.run_id)).into_response())
}
