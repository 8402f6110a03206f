//! `grit run --dry-run`: prints what a run would execute now, and why ([`crate::store::plan`]
//! decides it).
//!
//! It only reads: the store is opened read-only and not locked, nothing is created. `grit status
//! -m` shows the part of the same plan that a manifest's changes cause.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use super::exit::Outcome;
use crate::cli::RunArgs;
use crate::manifest::Manifest;
use crate::report::escape::printable;
use crate::report::stdout;
use crate::store::plan::{StepPlan, plan};
use crate::store::{self, StoreError};

pub fn dry_run(manifest: &Manifest, args: &RunArgs, db: &Path) -> anyhow::Result<Outcome> {
    let conn = match store::open_read(db) {
        Ok((_, conn)) => Some(conn),
        Err(StoreError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // The run's own warnings, knowing what the store holds: an ingested `x` answers "nothing
    // writes `x`".
    crate::launch::warn_about_graph(manifest, &|pattern| {
        conn.as_ref()
            .is_some_and(|c| store::queries::has_resource_matching(c, pattern))
    });
    let plans = plan(conn.as_ref(), manifest, &args.steps, &args.force_steps)?;
    let total: u64 = plans.iter().filter(|p| !p.skipped).map(|p| p.tasks).sum();
    let now = args.max_tasks.map_or(total, |max| total.min(max));
    if args.json {
        stdout::println(
            &serde_json::json!({
                "dry_run": true,
                "tasks": now,
                "params": manifest.param_values,
                "steps": plans,
            })
            .to_string(),
        )?;
    } else {
        let mut text = render(&plans, now, total, conn.is_none().then_some(db));
        if !manifest.param_values.is_empty() {
            // After the first line, which says that nothing is executed.
            let at = text.find('\n').map_or(text.len(), |i| i + 1);
            text.insert_str(at, &params_line(&manifest.param_values));
        }
        stdout::print(&text)?;
    }
    Ok(Outcome::Success)
}

/// The run's parameter values, as the dry run shows them.
fn params_line(values: &std::collections::BTreeMap<String, String>) -> String {
    let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("parameters: {}\n", shown.join(" "))
}

fn render(plans: &[StepPlan], now: u64, total: u64, missing_store: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dry run: nothing is executed and the store is not changed{}",
        missing_store
            .map(|db| format!(" (no store at {} yet)", db.display()))
            .unwrap_or_default()
    );
    let width = plans.iter().map(|p| p.step.len()).max().unwrap_or(4);
    for plan in plans {
        let version = match &plan.replaces {
            Some(old) => format!("version {} replaces {old}", plan.version),
            None => format!("version {}", plan.version),
        };
        let verdict = if plan.skipped {
            "skipped: not selected with --step".to_string()
        } else if let Some(until) = &plan.gated_until {
            format!("gated by min_interval until {until} (--force-step runs it)")
        } else if plan.tasks > 0 {
            format!(
                "{} task{} would run",
                plan.tasks,
                if plan.tasks == 1 { "" } else { "s" }
            )
        } else if !plan.after.is_empty() {
            "may run after upstream steps".to_string()
        } else if plan.up_to_date > 0 {
            format!("up to date ({} done)", plan.up_to_date)
        } else {
            "nothing to do (no matching inputs)".to_string()
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {verdict}  [{version}]",
            plan.step, plan.kind
        );
        if plan.skipped {
            continue;
        }
        for change in &plan.params_changed {
            let _ = writeln!(out, "{:<width$}    parameter {change}", "");
        }
        for reason in &plan.reasons {
            let examples = if reason.examples.is_empty() {
                String::new()
            } else {
                let more = reason.count.saturating_sub(reason.examples.len() as u64);
                format!(
                    ": {}{}",
                    reason
                        .examples
                        .iter()
                        .map(|example| printable(example))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if more > 0 && !reason.examples[0].ends_with("input(s)") {
                        format!(", … {more} more")
                    } else {
                        String::new()
                    }
                )
            };
            let _ = writeln!(
                out,
                "{:<width$}    reason: {} ×{}{examples}",
                "", reason.reason, reason.count
            );
        }
        if !plan.after.is_empty() {
            let _ = writeln!(
                out,
                "{:<width$}    then: input updated by another job ({} would run)",
                "",
                plan.after
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let limit = if now < total {
        format!(" (--max-tasks {now} of {total})")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{now} task{} would run now{limit}{}",
        if now == 1 { "" } else { "s" },
        if plans.iter().any(|p| !p.after.is_empty() && !p.skipped) {
            "; their outputs may start more"
        } else {
            ""
        }
    );
    out
}
