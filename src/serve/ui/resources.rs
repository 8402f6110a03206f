//! The Resources page (search by name or hash prefix, live or the whole history, paged) and one
//! resource's page: its facts, a download link and its provenance (`grit why`) as a path of
//! links back to the sources and ingested files.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Scripts};
use super::session::Session;
use super::{PAGE_ROWS, Page, UiError};
use crate::commands::why::{Node, provenance_trees};
use crate::serve::api::{Shared, read_store};
use crate::serve::worker::Pipeline;
use crate::store::StoreError;
use crate::store::queries::{self, ResourceCursor, ResourceFilter};

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pipeline: Option<String>,
    /// A name prefix, a glob, or a hash prefix (8+ hex characters).
    q: Option<String>,
    /// `history`: every resource the store holds, newest first; else the live ones by name.
    show: Option<String>,
    after_name: Option<String>,
    after_id: Option<i64>,
}

/// The pipeline a resource request means: the named one, else the first.
fn pipeline_of<'a>(state: &'a Shared, name: Option<&str>) -> Result<&'a Arc<Pipeline>, UiError> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => Ok(state.pipeline(name)?),
        None => state
            .pipelines
            .values()
            .next()
            .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "this server has no pipelines")),
    }
}

fn looks_like_hash(q: &str) -> bool {
    (8..=64).contains(&q.len()) && q.bytes().all(|b| b.is_ascii_hexdigit())
}

fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// `GET /ui/resources?pipeline=&q=&show=live|history`
pub async fn list(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Page {
    let pipeline = pipeline_of(&state, query.pipeline.as_deref())?;
    let name = pipeline.config().name.clone();
    let q = query
        .q
        .clone()
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    // A hash prefix that names one object goes straight to it.
    if let Some(q) = q.clone().filter(|q| looks_like_hash(q)) {
        let found = read_store(pipeline, move |conn| {
            match queries::resolve_hash(conn, &q) {
                Ok(full) => Ok(Some(full)),
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        if let Some(full) = found {
            return Ok(
                Redirect::to(&format!("/ui/resources/{full}?pipeline={}", encode(&name)))
                    .into_response(),
            );
        }
    }
    let history = query.show.as_deref() == Some("history");
    let filter = ResourceFilter {
        name: q.clone(),
        all: history,
    };
    let after = query.after_id.map(|id| ResourceCursor {
        name: query.after_name.clone().unwrap_or_default(),
        id,
    });
    let (rows, next) = read_store(pipeline, move |conn| {
        queries::resources_page(conn, &filter, after.as_ref(), PAGE_ROWS)
    })
    .await?;
    let base = format!(
        "/ui/resources?pipeline={}&q={}&show={}",
        encode(&name),
        encode(q.as_deref().unwrap_or("")),
        if history { "history" } else { "live" }
    );
    let body = html! {
        h1 { "Resources" }
        form.filters method="get" action="/ui/resources" role="search" {
            @if state.pipelines.len() > 1 {
                div {
                    label for="r-pipeline" { "Pipeline" }
                    select #r-pipeline name="pipeline" {
                        @for p in state.pipelines.keys() {
                            option value=(p) selected[*p == name] { (p) }
                        }
                    }
                }
            } @else {
                input type="hidden" name="pipeline" value=(name);
            }
            div {
                label for="r-q" { "Name or hash prefix" }
                input #r-q type="search" name="q" value=(q.as_deref().unwrap_or("")) placeholder="report-*.csv";
            }
            div {
                label for="r-show" { "Show" }
                select #r-show name="show" {
                    option value="live" selected[!history] { "live resources" }
                    option value="history" selected[history] { "all, with history" }
                }
            }
            div { button type="submit" { "Search" } }
        }
        @if rows.is_empty() {
            p.hint { "No resources match." }
        } @else {
            div.scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Hash" }
                            th.num scope="col" { "Size" }
                            th scope="col" { "Made by" }
                            @if history { th scope="col" { "Live" } }
                            th.wide scope="col" { "Created" }
                            th scope="col" { span.visually-hidden { "Download" } }
                        }
                    }
                    tbody {
                        @for r in &rows {
                            tr {
                                th scope="row" { a href={ "/ui/resources/" (r.hash) "?pipeline=" (encode(&name)) } { (r.name) } }
                                td { (layout::short_hash(&r.hash)) }
                                td.num { (layout::size(r.size)) }
                                td { @match &r.step { Some(s) => (s), None => span.hint { "ingested" } } }
                                @if history { td { @if r.live { "live" } @else { span.hint { "old" } } } }
                                td.wide { (layout::when(Some(&r.created_at))) }
                                td { a href={ "/ui/resources/" (r.hash) "/content?pipeline=" (encode(&name)) } download=(r.name) { "Download" span.visually-hidden { " " (r.name) } } }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if query.after_id.is_some() { a href=(base) { "First page" } }
            @if let Some(next) = next {
                a rel="next" href={ (base) "&after_name=" (encode(&next.name)) "&after_id=" (next.id) } { "Next page" }
            }
        }
    };
    Ok(layout::page(
        &session,
        "Resources",
        Nav::Resources,
        Scripts::None,
        body,
    ))
}

#[derive(Deserialize, Default)]
pub struct OneQuery {
    pipeline: Option<String>,
}

/// One resource of the provenance tree and what made it, recursively.
fn chain(node: &Node, pipeline: &str) -> Markup {
    let r = &node.resource;
    html! {
        li {
            a href={ "/ui/resources/" (r.hash) "?pipeline=" (encode(pipeline)) } { (r.name) }
            " " (layout::short_hash(&r.hash)) " " span.hint { (layout::size(r.size)) }
            @if node.shown_above {
                " " span.hint { "(its origin is shown above)" }
            } @else if node.made_by.is_empty() {
                " — " strong { @if r.fact { "a source's output" } @else { "an ingested file" } }
            }
            @if !node.shown_above && !node.made_by.is_empty() {
                ol {
                    @for made in &node.made_by {
                        li {
                            "made by task "
                            a href={ "/ui/tasks/" (pipeline) "." (made.task.task) } { (made.task.task) }
                            " of step " strong { (made.task.step) } " (" (made.task.kind) ", version " code { (made.task.version) }
                            @if !made.task.current { ", not current" } ") "
                            (layout::state(&made.task.state))
                            @if made.inputs.is_empty() {
                                @if made.task.kind == "source" { " — " strong { "source" } }
                            } @else {
                                ", from:"
                                ol {
                                    @for input in &made.inputs { (chain(input, pipeline)) }
                                }
                                @if made.inputs_total > made.inputs.len() as u64 {
                                    p.hint { "and " (made.inputs_total - made.inputs.len() as u64) " more inputs" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/resources/{hash}?pipeline=`
pub async fn show(
    State(state): State<Shared>,
    Extension(session): Extension<Session>,
    Path(hash): Path<String>,
    Query(query): Query<OneQuery>,
) -> Page {
    let pipeline = pipeline_of(&state, query.pipeline.as_deref())?;
    let name = pipeline.config().name.clone();
    let trees = read_store(pipeline, move |conn| provenance_trees(conn, &hash)).await?;
    let Some(first) = trees.first() else {
        return Err(UiError::new(StatusCode::NOT_FOUND, "no such resource"));
    };
    let r = &first.resource;
    let body = html! {
        h1 { "Resource " (r.name) }
        (layout::facts([
            ("Hash", html! { code { (r.hash) } }),
            ("Size", html! { (layout::size(r.size)) " (" (r.size) " bytes)" }),
            ("Live", html! { @if r.live { "yes" } @else { "no (an older version)" } }),
            ("Created", layout::when(Some(&r.created_at))),
        ]))
        div.actions {
            a.button href={ "/ui/resources/" (r.hash) "/content?pipeline=" (encode(&name)) } download=(r.name) { "Download" }
        }
        h2 { "Provenance" }
        p.hint { "Where it came from, back to the sources (as " code { "grit why" } " prints it)." }
        ol.chain {
            @for tree in &trees { (chain(tree, &name)) }
        }
    };
    Ok(layout::page(
        &session,
        &r.name,
        Nav::Resources,
        Scripts::None,
        body,
    ))
}
