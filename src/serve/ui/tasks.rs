//! One task's page: its facts (step, version, state, attempts, exit code, error, and its Slurm job
//! when it ran on a cluster), why it ran (as the run that decided it recorded), its input and outputs as links, and its log, followed
//! live while it runs.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::html;

use super::layout::{self, Nav, Scripts};
use super::session::Session;
use super::{PAGE_ROWS, Page, UiError};
use crate::serve::api::{Shared, read_store, tasks::log_tail};
use crate::serve::queue;
use crate::store::queries;

/// The end of a log shown on the page; the whole is a link away (keeps pages small).
const LOG_TAIL: usize = 48 * 1024;

/// `GET /ui/tasks/{id}`
pub async fn show(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    let not_found = || {
        UiError::new(
            StatusCode::NOT_FOUND,
            format!("no task `{id}`: task ids are PIPELINE.N"),
        )
    };
    let (name, number) = queue::parse_public_id(&id).ok_or_else(not_found)?;
    let pipeline = state.pipeline(name)?.clone();
    let (task, (outputs, outputs_total)) = read_store(&pipeline, move |conn| {
        let task = queries::task(conn, number)?;
        let outputs = queries::task_outputs(conn, number, PAGE_ROWS)?;
        Ok((task, outputs))
    })
    .await?;
    let log = {
        let pipeline = pipeline.clone();
        tokio::task::spawn_blocking(move || log_tail(&pipeline, number, LOG_TAIL))
            .await
            .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    let (log_text, cut, log_error) = match log {
        Ok((tail, cut)) => (String::from_utf8_lossy(&tail).into_owned(), cut, None),
        // Not the error's own words: they name the object's path in the store.
        Err(e) if e.code == "store_damaged" => (
            String::new(),
            false,
            Some("The stored log is damaged: `grit verify` tells more.".to_string()),
        ),
        Err(e) => (String::new(), false, Some(e.message)),
    };
    let running = task.state == "running";
    let log_url = format!("/ui/tasks/{id}/log");
    let slurm_row = task.slurm.as_ref().map(|job| {
        (
            "Slurm job",
            html! {
                code { (job.job_id) } " " (job.state)
                @if !job.on_cluster { " " span.hint { "(its end there)" } }
            },
        )
    });
    let body = html! {
        h1 { "Task " (id) }
        (layout::facts([
            ("Step", html! { a href={ "/ui/pipelines/" (name) } { (task.step) } }),
            ("Version", html! { code { (task.version) } }),
            ("State", layout::state(&task.state)),
            ("Why it ran", html! { span #reason { (task.reason) } }),
            ("Attempt", html! { (task.attempts) }),
            ("Exit code", html! { @match task.exit_code { Some(c) => (c), None => span.hint { "—" } } }),
            ("Started", layout::when(task.started_at.as_deref())),
            ("Took", html! {
                @match task.duration_ms {
                    Some(ms) => (layout::rough(std::time::Duration::from_millis(ms.max(0) as u64))),
                    None => (layout::took(task.started_at.as_deref(), task.finished_at.as_deref())),
                }
            }),
            ("Input", html! {
                @match (&task.input_name, &task.input_hash) {
                    (Some(n), Some(h)) => a href={ "/ui/resources/" (h) "?pipeline=" (name) } { (n) },
                    _ => span.hint { "none (a source or a gather task)" },
                }
            }),
        ].into_iter().chain(slurm_row)))
        @if let Some(error) = &task.error {
            p.notice role="alert" { span.error-line { (error) } }
        }
        h2 { "Outputs" }
        @if outputs.is_empty() {
            p.hint { "None." }
        } @else {
            ul {
                @for o in &outputs {
                    li { a href={ "/ui/resources/" (o.hash) "?pipeline=" (name) } { (o.name) } " " span.hint { (layout::size(o.size)) } }
                }
            }
            @if outputs_total > outputs.len() as u64 {
                p.hint {
                    "The first " (outputs.len()) " of " (outputs_total) " outputs, by name; "
                    a href={ "/ui/resources?pipeline=" (name) "&show=history" } { "all resources" } "."
                }
            }
        }
        h2 #log-heading { "Log" }
        @if let Some(e) = log_error { p.notice { (e) } }
        @if cut { p.hint { "The last " (LOG_TAIL / 1024) " KiB; " a href=(log_url) { "the whole log" } "." } }
        @if running {
            p.hint { "The task is running: the log follows as it grows (reload without JavaScript)." }
            pre.log #log aria-labelledby="log-heading" tabindex="0" data-follow={ (log_url) "?follow=1" } { (log_text) }
        } @else {
            pre.log #log aria-labelledby="log-heading" tabindex="0" { (log_text) }
            p { a href=(log_url) { "Plain text" } }
        }
    };
    let scripts = if running {
        Scripts::FollowLog
    } else {
        Scripts::None
    };
    Ok(layout::page(
        &session,
        &format!("Task {id}"),
        Nav::Runs,
        scripts,
        body,
    ))
}
