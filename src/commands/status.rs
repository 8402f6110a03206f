//! `grit status`: each current step's version, task counts and live outputs, and whether any live
//! object is missing (one stat each; `grit verify` hashes everything); with `-m`, what a manifest
//! would change (the changed part of the dry-run's plan), at the `--param` values given and the
//! manifest's defaults, as `grit run` would run (a required parameter not given takes the last
//! run's value).

use std::io::Write;
use std::path::Path;

use super::exit::Outcome;
use crate::manifest;
use crate::report::stdout;
use crate::store::plan::{self, StepPlan};
use crate::store::{self, Objects, provenance, queries, verify};

/// What running a manifest would change, for `grit status -m`.
#[derive(Debug, serde::Serialize)]
struct Changes<'p> {
    manifest: String,
    /// Steps the manifest adds or changes, with the tasks they would run now.
    changed: Vec<&'p StepPlan>,
    /// Unchanged steps that may run after the changed ones.
    downstream: Vec<&'p StepPlan>,
    /// Current steps the manifest no longer has (their outputs would stop being live).
    removed: Vec<String>,
    /// ` --param k=v` for each value given, for the command line that shows details.
    #[serde(skip)]
    param_args: String,
}

/// `params`: `--param` values for the comparison with `-m`.
pub fn status(
    db: &Path,
    json: bool,
    manifest_path: Option<&Path>,
    params: &[String],
) -> anyhow::Result<Outcome> {
    let mut given = manifest::params::parse_assignments(params)
        .map_err(|e| super::exit::UsageError(e.to_string()))?;
    let (paths, conn) = store::open_read(db)?;
    let mut out = stdout::stdout();
    let steps = queries::status(&conn)?;
    let last = provenance::last_run(&conn)?;
    let missing = verify::missing_live(&conn, &Objects::new(paths.objects))?;
    let last_params = store::params::last_run(&conn)?;
    let slurm = store::slurm_jobs::active_if_any(&conn);
    let mut loaded = manifest_path.map(manifest::load).transpose()?;
    if let Some(l) = &mut loaded {
        // What `grit run -m` with the same --param would do: declared defaults fill the rest. A
        // required parameter has none, and takes the last run's value.
        for (name, value) in last_params.iter().flatten() {
            if l.manifest.param(name).is_some_and(|p| p.default.is_none()) {
                given.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        super::run::bind_params(&mut l.manifest, &given)?;
    }
    let plans = match &loaded {
        Some(l) => plan::plan(Some(&conn), &l.manifest, &[], &[])?,
        None => Vec::new(),
    };
    let gates = time_gates(&conn, loaded.as_ref().map(|l| &l.manifest), &plans);
    let changes = match (&loaded, manifest_path) {
        (Some(l), Some(path)) => Some(Changes {
            param_args: params.iter().map(|p| format!(" --param {p}")).collect(),
            ..changes(path, &l.manifest, &plans, &steps)
        }),
        _ => None,
    };
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "steps": steps,
                "last_run": last,
                "params": last_params,
                "declared_params": loaded.as_ref().map(|l| &l.manifest.params),
                "store_damaged": !missing.is_empty(),
                "missing_objects": missing,
                "changes": changes,
                "gated": gates,
                "slurm_jobs": slurm,
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
    if steps.is_empty() && changes.is_none() {
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
        if let Some(values) = last_params.as_ref().filter(|v| !v.is_empty()) {
            let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            writeln!(out, "  parameters: {}", shown.join(" "))?;
        }
    }
    for gate in &gates {
        writeln!(
            out,
            "{} is gated by min_interval: it may run again after {} (`grit run --force-step {}` runs it now)",
            gate.step, gate.until, gate.step
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
    if !slurm.is_empty() {
        write!(out, "\n{}", render_slurm(&slurm))?;
    }
    if let Some(changes) = &changes {
        write!(out, "\n{}", render_changes(changes))?;
    }
    if let Some(l) = loaded.as_ref().filter(|l| !l.manifest.params.is_empty()) {
        write!(out, "\n{}", manifest::params::render(&l.manifest))?;
    }
    Ok(Outcome::Success)
}

/// Jobs shown by name in `grit status`; more are counted.
const SLURM_JOBS_SHOWN: usize = 20;

/// The tasks on a Slurm cluster: one line per job with its state, step and tasks.
fn render_slurm(jobs: &[store::slurm_jobs::SlurmJob]) -> String {
    let mut by_job: std::collections::BTreeMap<(&str, &str), (&str, Vec<i64>)> =
        std::collections::BTreeMap::new();
    for job in jobs {
        by_job
            .entry((job.job_id.as_str(), job.step.as_str()))
            .or_insert((job.state.as_str(), Vec::new()))
            .1
            .push(job.task_id);
    }
    let mut text = format!(
        "{} task{} on Slurm, in {} job{}:\n",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        by_job.len(),
        if by_job.len() == 1 { "" } else { "s" }
    );
    for ((job, step), (state, tasks)) in by_job.iter().take(SLURM_JOBS_SHOWN) {
        let ids: Vec<String> = tasks.iter().map(i64::to_string).collect();
        text.push_str(&format!(
            "  job {job:<12} {state:<10} step {step}, task{} {}\n",
            if tasks.len() == 1 { "" } else { "s" },
            ids.join(" ")
        ));
    }
    if by_job.len() > SLURM_JOBS_SHOWN {
        text.push_str(&format!(
            "  ... and {} more jobs\n",
            by_job.len() - SLURM_JOBS_SHOWN
        ));
    }
    text
}

/// A source that `min_interval` keeps from running until `until`.
#[derive(Debug, serde::Serialize)]
struct Gate {
    step: String,
    until: String,
}

/// The sources gated by `min_interval` now, from the dry run's plan of `manifest` (or, without
/// `-m`, of the manifest of the last run), so that `status` and `run` agree.
fn time_gates(
    conn: &rusqlite::Connection,
    manifest: Option<&manifest::Manifest>,
    plans: &[StepPlan],
) -> Vec<Gate> {
    let from_last_run;
    let plans = match manifest {
        Some(_) => plans,
        None => {
            let Ok(Some((path, text))) = store::repair::last_manifest(conn) else {
                return Vec::new();
            };
            // Loading a manifest hashes its `files` and directory images: only for one that
            // has a gate at all.
            if !has_time_gate(&text) {
                return Vec::new();
            }
            // Files named by `files` may have changed or gone since: then no gates are shown.
            let Ok(mut loaded) = manifest::parse(&text, Path::new(&path)) else {
                return Vec::new();
            };
            // At the last run's parameter values, so that its step versions are the stored ones.
            let values = store::params::last_run(conn)
                .ok()
                .flatten()
                .unwrap_or_default();
            if loaded.manifest.bind_params(&values).is_err() {
                return Vec::new();
            }
            from_last_run = plan::plan(Some(conn), &loaded.manifest, &[], &[]).unwrap_or_default();
            &from_last_run
        }
    };
    plans
        .iter()
        .filter_map(|p| {
            Some(Gate {
                step: p.step.clone(),
                until: p.gated_until.clone()?,
            })
        })
        .collect()
}

/// Whether some step of manifest `text` sets `min_interval`, read from the TOML alone.
fn has_time_gate(text: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    // `[[task]]` is task-pipeline's spelling of `[[step]]`.
    ["step", "task"]
        .iter()
        .filter_map(|key| table.get(*key).and_then(toml::Value::as_array))
        .flatten()
        .any(|step| step.get("min_interval").is_some())
}

/// The changed part of the plan: steps with a new (or earlier) version or new, the steps that
/// may run after them, transitively, and current steps the manifest drops.
fn changes<'p>(
    path: &Path,
    manifest: &manifest::Manifest,
    plans: &'p [StepPlan],
    current: &[queries::StepStatus],
) -> Changes<'p> {
    let changed: Vec<&StepPlan> = plans.iter().filter(|p| p.change.is_some()).collect();
    let mut affected: Vec<&str> = changed.iter().map(|p| p.step.as_str()).collect();
    let mut downstream: Vec<&StepPlan> = Vec::new();
    loop {
        let more: Vec<&StepPlan> = plans
            .iter()
            .filter(|p| p.change.is_none() && !affected.contains(&p.step.as_str()))
            .filter(|p| p.after.iter().any(|a| affected.contains(&a.as_str())))
            .collect();
        if more.is_empty() {
            break;
        }
        affected.extend(more.iter().map(|p| p.step.as_str()));
        downstream.extend(more);
    }
    Changes {
        manifest: path.display().to_string(),
        changed,
        downstream,
        removed: current
            .iter()
            .filter(|s| manifest.step(&s.name).is_none())
            .map(|s| s.name.clone())
            .collect(),
        param_args: String::new(),
    }
}

fn render_changes(c: &Changes<'_>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if c.changed.is_empty() && c.removed.is_empty() {
        let _ = writeln!(
            out,
            "{}: no step changes; every step version is current",
            c.manifest
        );
        return out;
    }
    let _ = writeln!(out, "{} would change:", c.manifest);
    let width = c
        .changed
        .iter()
        .chain(&c.downstream)
        .map(|p| p.step.len())
        .chain(c.removed.iter().map(String::len))
        .max()
        .unwrap_or(4);
    for p in &c.changed {
        let version = match &p.replaces {
            Some(old) => format!("version {} replaces {old}", p.version),
            None => format!("version {}", p.version),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {} ({version}): {} task{} would run",
            p.step,
            p.change.unwrap_or_default(),
            p.tasks,
            if p.tasks == 1 { "" } else { "s" }
        );
        for change in &p.params_changed {
            let _ = writeln!(out, "  {:<width$}    parameter {change}", "");
        }
    }
    for p in &c.downstream {
        let _ = writeln!(
            out,
            "  {:<width$}  may run after {}",
            p.step,
            p.after.join(", ")
        );
    }
    for name in &c.removed {
        let _ = writeln!(
            out,
            "  {name:<width$}  removed: its outputs would stop being live"
        );
    }
    let _ = writeln!(
        out,
        "  details: grit run -m {} --dry-run{}",
        c.manifest, c.param_args
    );
    out
}
