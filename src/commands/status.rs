//! `grit status`: each current step's version, task counts and live outputs, and whether any live
//! object is missing (one stat each; `grit verify` hashes everything).

use std::path::Path;

use std::io::Write;

use super::exit::Outcome;
use crate::report::stdout;
use crate::store::{self, Objects, provenance, queries, verify};

pub fn status(db: &Path, json: bool) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let mut out = stdout::stdout();
    let steps = queries::status(&conn)?;
    let last = provenance::last_run(&conn)?;
    let missing = verify::missing_live(&conn, &Objects::new(paths.objects))?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "steps": steps,
                "last_run": last,
                "store_damaged": !missing.is_empty(),
                "missing_objects": missing,
            })
        )?;
        return Ok(Outcome::Success);
    }
    if !missing.is_empty() {
        writeln!(
            out,
            "store damaged: {} live object{} missing — run `grit verify --db {}`",
            missing.len(),
            if missing.len() == 1 { " is" } else { "s are" },
            db.display()
        )?;
    }
    if steps.is_empty() {
        writeln!(
            out,
            "no steps yet: run `grit run -m MANIFEST --db {}` first",
            db.display()
        )?;
        return Ok(Outcome::Success);
    }
    let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<width$}  {:<6}  {:<12}  {:>7}  {:>7}  {:>9}  {:>6}  {:>12}",
        "STEP", "KIND", "VERSION", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "LIVE OUTPUTS"
    )?;
    for s in &steps {
        writeln!(
            out,
            "{:<width$}  {:<6}  {:<12}  {:>7}  {:>7}  {:>9}  {:>6}  {:>12}",
            s.name, s.kind, s.version, s.pending, s.running, s.succeeded, s.failed, s.live_outputs
        )?;
    }
    if let Some(run) = last {
        writeln!(
            out,
            "\nlast run {}{}: {}, {} executed ({} succeeded, {} failed), {} new resources; started {}{}",
            run.id,
            run.pipeline
                .as_deref()
                .map(|p| format!(" of {p}"))
                .unwrap_or_default(),
            run.status,
            run.executed,
            run.succeeded,
            run.failed,
            run.resources_new,
            run.started_at,
            run.finished_at
                .as_deref()
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        )?;
    }
    for s in steps.iter().filter(|s| s.failed > 0) {
        writeln!(
            out,
            "{} failed task{} in {}: grit log --step {} --failed --db {}",
            s.failed,
            if s.failed == 1 { "" } else { "s" },
            s.name,
            s.name,
            db.display()
        )?;
    }
    Ok(Outcome::Success)
}
