//! `grit runs`: list the runs of a `grit serve` server, newest first.

use super::exit::Outcome;
use crate::cli::RunsArgs;
use crate::report::stdout;
use crate::serve::client::{Client, query_value};

pub fn runs(args: RunsArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.server.server, args.server.token_file.as_deref())?;
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(p) = &args.pipeline {
        query.push(format!("pipeline={}", query_value(p)));
    }
    if let Some(s) = &args.status {
        query.push(format!("status={}", query_value(s)));
    }
    let page = client
        .get(&format!("/runs?{}", query.join("&")))
        .map_err(|e| e.into_anyhow())?;
    if args.json {
        stdout::println(&page.to_string())?;
        return Ok(Outcome::Success);
    }
    let runs = page["runs"].as_array().cloned().unwrap_or_default();
    let mut rows = vec![[
        "RUN".to_string(),
        "STATUS".into(),
        "TRIGGER".into(),
        "QUEUED".into(),
        "FINISHED".into(),
        "TASKS".into(),
    ]];
    for run in &runs {
        let text = |key: &str| run[key].as_str().unwrap_or("-").to_string();
        let (ok, failed) =
            run["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .fold((0, 0), |(ok, failed), s| {
                    (
                        ok + s["succeeded"].as_u64().unwrap_or(0),
                        failed + s["failed"].as_u64().unwrap_or(0),
                    )
                });
        let mut status = text("status");
        if run["resumed"].as_bool() == Some(true) {
            status.push_str(" (resumed)");
        }
        rows.push([
            text("run_id"),
            status,
            text("trigger"),
            text("queued_at"),
            text("finished_at"),
            format!("{ok} ok, {failed} failed"),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        stdout::println(line.join("  ").trim_end())?;
    }
    if runs.is_empty() {
        eprintln!("no runs");
    }
    Ok(Outcome::Success)
}
