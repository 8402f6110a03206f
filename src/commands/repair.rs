//! `grit verify --repair`: verify, fix permissions, quarantine damaged objects, re-create lost
//! derived objects by re-running their tasks through the engine (with the last run's manifest),
//! and verify again. Rounds repeat while they make progress, so a chain of lost derived objects
//! (A lost, and B computed from A lost too) comes back in order.

use crate::report::escape::printable;
use crate::report::stdout::outln;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::exit::Outcome;
use super::verify::{check_store, outcome, print_report};
use crate::capture::dir::DirCapture;
use crate::engine::events::{Event, Observer};
use crate::engine::{self, RunInputs, RunOptions};
use crate::store::repair::{self, LostData};
use crate::store::{self, StorePaths};
use crate::{manifest, store::verify::Report};

/// Repair rounds at most (each one re-runs the tasks whose inputs are back).
const MAX_ROUNDS: usize = 8;

/// What the repair did, for the summary and `--json`.
#[derive(Debug, Default, serde::Serialize)]
struct Repaired {
    modes_fixed: u64,
    quarantined: Vec<String>,
    tasks_rerun: Vec<i64>,
    logs_lost: Vec<i64>,
    history_lost: Vec<(String, String)>,
    unrecoverable: Vec<LostData>,
}

/// Task failures during a repair run are reported at the end by the final verify; the engine's
/// events are not shown.
struct Quiet;

impl Observer for Quiet {
    fn event(&self, event: &Event<'_>) {
        if let Event::TaskFinished {
            step,
            task_id,
            succeeded: false,
            error,
            ..
        } = event
        {
            tracing::warn!(
                "repair: task {task_id} of {step} failed: {}",
                error.unwrap_or("")
            );
        }
    }
}

pub fn repair(db: &Path, json: bool, no_sandbox: bool) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut done = Repaired::default();
    // The lock keeps runs out while objects move and tasks are reset.
    let (paths, _lock, writer) = store::open_for_write(db)?;
    let mut previous_lost = usize::MAX;
    for _ in 0..MAX_ROUNDS {
        let report = check_store(&paths.root, !json)?;
        if !report.database.is_empty() || !report.foreign_keys.is_empty() {
            // Repairing objects through a database that is itself damaged would guess.
            break;
        }
        for bad in &report.modes {
            repair::fix_mode(bad)
                .with_context(|| format!("fixing the permissions of {}", bad.path.display()))?;
            done.modes_fixed += 1;
        }
        for bad in &report.corrupt {
            let to = repair::quarantine(&paths, bad)
                .with_context(|| format!("moving {} to quarantine", bad.path.display()))?;
            done.quarantined.push(to.display().to_string());
        }
        let lost: Vec<String> = report
            .missing
            .iter()
            .chain(&report.corrupt)
            .map(|b| b.hash.clone())
            .collect();
        if lost.is_empty() || lost.len() >= previous_lost {
            break;
        }
        previous_lost = lost.len();
        let plan = writer.call_blocking(move |conn| repair::plan(conn, &lost))?;
        let logs = plan.logs.clone();
        writer.call_blocking(move |conn| repair::forget_logs(conn, &logs))?;
        done.logs_lost
            .extend(plan.logs.iter().map(|(task, _)| *task));
        done.history_lost = plan.history.clone();
        done.unrecoverable = plan.unrecoverable.clone();
        if plan.rerun.is_empty() {
            continue;
        }
        done.tasks_rerun
            .extend(plan.rerun.iter().map(|(id, _)| *id));
        rerun(&paths, writer.clone(), &plan.rerun, no_sandbox)?;
    }
    done.tasks_rerun.sort_unstable();
    done.tasks_rerun.dedup();
    let report = check_store(&paths.root, !json)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({ "clean": report.clean(), "repaired": done, "report": report })
        );
    } else {
        print_repair(&done, &report, db);
        print_report(&report, db, started.elapsed().as_secs_f64());
    }
    Ok(outcome(&report))
}

/// Re-run `tasks` through the engine with the last run's manifest, only their steps allowed.
fn rerun(
    paths: &StorePaths,
    writer: store::Writer,
    tasks: &[(i64, String)],
    no_sandbox: bool,
) -> anyhow::Result<()> {
    let Some((path, text)) = writer.call_blocking(|conn| repair::last_manifest(conn))? else {
        return Ok(());
    };
    let loaded = manifest::parse(&text, Path::new(&path))
        .context("reading the manifest of the last run, which the repair re-runs tasks with")?;
    let params = writer
        .call_blocking(|conn| store::params::last_run(conn))?
        .unwrap_or_default();
    let ids: Vec<i64> = tasks.iter().map(|(id, _)| *id).collect();
    writer.call_blocking(move |conn| repair::reset_tasks(conn, &ids))?;
    let mut steps: Vec<String> = tasks.iter().map(|(_, step)| step.clone()).collect();
    steps.sort();
    steps.dedup();
    let inputs = RunInputs {
        manifest: loaded.manifest,
        paths: paths.clone(),
        writer,
        capture: Arc::new(DirCapture::new(&paths.tmp)),
        executor: Arc::new(crate::executor::process::ProcessExecutor::new()),
        lines: None,
        options: RunOptions {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            only_steps: steps,
            max_tasks: None,
            no_sandbox,
            force_steps: Vec::new(),
            // The values the last run had: the versions to repair were made with them.
            params,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // As in `grit run`, SIGINT/SIGTERM stop the re-run cleanly (its tasks stay pending).
    let cancel = engine::CancelToken::new();
    runtime.block_on(async {
        let _interrupts = super::interrupt::cancel_on_signals(cancel.clone())?;
        anyhow::Ok(engine::run(inputs, &Quiet, &cancel).await?)
    })?;
    Ok(())
}

fn print_repair(done: &Repaired, report: &Report, db: &Path) {
    outln!(
        "repair: {} permission{} fixed, {} object{} quarantined, {} task{} re-run",
        done.modes_fixed,
        if done.modes_fixed == 1 { "" } else { "s" },
        done.quarantined.len(),
        if done.quarantined.len() == 1 { "" } else { "s" },
        done.tasks_rerun.len(),
        if done.tasks_rerun.len() == 1 { "" } else { "s" },
    );
    for path in &done.quarantined {
        outln!("  quarantined: {path}");
    }
    for task in &done.logs_lost {
        outln!("  the log of task {task} is lost (the task's status and error are kept)");
    }
    let still_lost = |hash: &str| report.missing.iter().any(|m| m.hash == hash);
    for (name, hash) in done.history_lost.iter().filter(|(_, h)| still_lost(h)) {
        let name = printable(name);
        outln!(
            "  history lost: {name} {hash} is no longer live; `grit gc --db {}` removes its record",
            db.display()
        );
    }
    for lost in done.unrecoverable.iter().filter(|l| still_lost(&l.hash)) {
        let restore = if lost.origin == "ingested" {
            format!(
                "restore it from a backup, or ingest the file again (`grit ingest --name {} FILE`)",
                printable(&lost.name)
            )
        } else {
            "restore it from a backup".to_string()
        };
        outln!(
            "  LOST {} data: {name} {hash}; no task can re-create it. Results that depend on it: {}. To recover: {restore}",
            lost.origin,
            if lost.dependents.is_empty() {
                "none".to_string()
            } else {
                format!("steps {}", lost.dependents.join(", "))
            },
            name = printable(&lost.name),
            hash = lost.hash,
        );
    }
}
