//! What a run would execute now, and why: the plan that `grit run --dry-run` prints and
//! `grit status -m` draws on, as plain data (a read model over the store). The reasons are
//! modelled on Snakemake's rerun reasons (peers.md §2.2): a new step or a changed step version, a
//! new input, a new input set (gather), a failure before, a task an interrupted run left behind, a
//! source that runs every time, and steps that may run afterwards because an upstream step runs
//! ("input updated by another job").
//!
//! It only reads. Counts are computed on the resources live now; outputs of the steps that would
//! run can trigger more.

use rusqlite::Connection;

use super::StoreError;
use super::liveness::{self, LiveSource};
use super::params::ParamChange;
use super::provenance::{self, VersionRow};
use super::runs::StepKind;
use crate::manifest::{Manifest, Step};

/// Why some tasks of a step would run.
#[derive(Debug, serde::Serialize)]
pub struct Reason {
    pub reason: &'static str,
    pub count: u64,
    /// A few input names (and failed task ids) as examples.
    pub examples: Vec<String>,
}

/// The verdict for one step.
#[derive(Debug, serde::Serialize)]
pub struct StepPlan {
    pub step: String,
    pub kind: &'static str,
    pub version: String,
    /// The current version this one replaces, when the step changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// How the manifest changes this step: "new step", "new version" or "earlier version".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<&'static str>,
    /// Run parameters whose values differ from the current version's (issue 12).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params_changed: Vec<ParamChange>,
    /// Tasks that would run now.
    pub tasks: u64,
    pub reasons: Vec<Reason>,
    /// Tasks already done for the current inputs.
    pub up_to_date: u64,
    /// Upstream steps that would run and may give this step new inputs.
    pub after: Vec<String>,
    /// Not among the `--step` selection.
    pub skipped: bool,
    /// A source gated by `min_interval`: when it may run again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gated_until: Option<String>,
}

/// What a run of `manifest` would do on the store `conn` (none yet: everything is new), step by
/// step in manifest order. `only` is `--step` (empty: all), `forced` is `--force-step`.
pub fn plan(
    conn: Option<&Connection>,
    manifest: &Manifest,
    only: &[String],
    forced: &[String],
) -> Result<Vec<StepPlan>, StoreError> {
    let mut plans = Vec::with_capacity(manifest.steps.len());
    for step in &manifest.steps {
        let allowed = only.is_empty() || only.contains(&step.name);
        let mut plan = plan_step(conn, step, allowed)?;
        if forced.contains(&step.name) {
            force(&mut plan);
        }
        plans.push(plan);
    }
    add_downstream(conn, manifest, &mut plans)?;
    Ok(plans)
}

fn plan_step(
    conn: Option<&Connection>,
    step: &Step,
    allowed: bool,
) -> Result<StepPlan, StoreError> {
    let hash = step.version_hash();
    let versions: Vec<VersionRow> = match conn {
        Some(conn) => provenance::versions_of(conn, &step.name)?,
        None => Vec::new(),
    };
    let stored = versions.iter().find(|v| v.hash == hash).map(|v| v.id);
    let replaced = versions.iter().find(|v| v.current && v.hash != hash);
    let replaces = replaced.map(|v| short(&v.hash));
    let (params_changed, only_params) = match (conn, replaced) {
        (Some(conn), Some(old)) => super::params::changes(conn, old.id, step)?,
        _ => (Vec::new(), false),
    };
    let version_reason = match (&replaces, versions.is_empty()) {
        (Some(_), _) if only_params => "parameter value changed",
        (Some(_), _) => "step changed (new version)",
        (None, true) => "new step",
        (None, false) => "step version not current",
    };
    let change = match (&replaces, stored) {
        (Some(_), Some(_)) => Some("earlier version"),
        (Some(_), None) => Some("new version"),
        (None, _) if versions.is_empty() => Some("new step"),
        (None, _) => None,
    };
    let kind = StepKind::of(step);
    let mut plan = StepPlan {
        step: step.name.clone(),
        kind: kind.as_str(),
        version: short(&hash),
        replaces,
        change,
        params_changed,
        tasks: 0,
        reasons: Vec::new(),
        up_to_date: 0,
        after: Vec::new(),
        skipped: !allowed,
        gated_until: None,
    };
    let add = |plan: &mut StepPlan, reason: &'static str, count: u64, examples: Vec<String>| {
        if count > 0 {
            plan.tasks += count;
            plan.reasons.push(Reason {
                reason,
                count,
                examples,
            });
        }
    };
    match kind {
        StepKind::Source if !step.once => {
            let gated = match (conn, stored, step.min_interval) {
                (Some(conn), Some(id), Some(interval)) => {
                    provenance::gated_until(conn, id, interval)?
                }
                _ => None,
            };
            match gated {
                Some(until) => {
                    plan.gated_until = Some(humantime::format_rfc3339_seconds(until).to_string());
                    plan.up_to_date = 1;
                }
                None => add(&mut plan, "source: runs every run", 1, Vec::new()),
            }
        }
        StepKind::Source => {
            let state = match (conn, stored) {
                (Some(conn), Some(id)) => provenance::once_source_state(conn, id)?,
                _ => None,
            };
            match state.as_deref() {
                None if stored.is_none() => add(&mut plan, version_reason, 1, Vec::new()),
                None => add(&mut plan, "never ran", 1, Vec::new()),
                Some("failed") => add(&mut plan, "failed before", 1, Vec::new()),
                Some("pending") => add(&mut plan, "pending: not run yet", 1, Vec::new()),
                Some("running") => add(
                    &mut plan,
                    "interrupted: a run stopped during it",
                    1,
                    Vec::new(),
                ),
                Some(_) => plan.up_to_date = 1,
            }
        }
        StepKind::Map => {
            let Some(conn) = conn else {
                return Ok(plan);
            };
            for group in provenance::map_inputs(conn, stored, &step.inputs)? {
                let mut examples = group.examples.clone();
                let reason = match group.state.as_str() {
                    "new" if stored.is_none() => version_reason,
                    "new" => "new input",
                    "failed" => {
                        examples = group
                            .examples
                            .iter()
                            .zip(&group.tasks)
                            .map(|(name, task)| format!("{name} (task {task})"))
                            .collect();
                        "failed before"
                    }
                    "pending" => "pending: not run yet",
                    "running" => "interrupted: a run stopped during it",
                    _ => {
                        plan.up_to_date += group.count;
                        continue;
                    }
                };
                add(&mut plan, reason, group.count, examples);
            }
        }
        StepKind::Gather => {
            let Some(conn) = conn else {
                return Ok(plan);
            };
            let Some(key) = liveness::gather_key(conn, &step.inputs, LiveSource::Column)? else {
                return Ok(plan);
            };
            let members = liveness::gather_members(conn, &step.inputs, LiveSource::Column)?.len();
            let example = vec![format!("{members} input(s)")];
            let state = match stored {
                Some(id) => provenance::gather_task_state(conn, id, &key)?,
                None => None,
            };
            match state {
                None if stored.is_none() => add(&mut plan, version_reason, 1, example),
                None => add(&mut plan, "new input set", 1, example),
                Some((task, state)) => match state.as_str() {
                    "failed" => add(&mut plan, "failed before", 1, vec![format!("task {task}")]),
                    "pending" => add(&mut plan, "pending: not run yet", 1, example),
                    "running" => add(
                        &mut plan,
                        "interrupted: a run stopped during it",
                        1,
                        example,
                    ),
                    _ => plan.up_to_date = 1,
                },
            }
        }
    }
    Ok(plan)
}

/// `--force-step`: the tasks that are up to date run again too.
fn force(plan: &mut StepPlan) {
    // A time gate is ignored once, as the engine does.
    plan.gated_until = None;
    if plan.up_to_date > 0 {
        plan.tasks += plan.up_to_date;
        plan.reasons.push(Reason {
            reason: "forced with --force-step",
            count: plan.up_to_date,
            examples: Vec::new(),
        });
        plan.up_to_date = 0;
    }
}

/// Mark steps that may run after an upstream step runs: a step that would run feeds a consumer
/// when it produced resources matching the consumer's inputs before, or, when it has never run
/// (its outputs are unknown), when it comes earlier in the manifest. Repeated until nothing
/// changes, so the effect travels down the pipeline.
fn add_downstream(
    conn: Option<&Connection>,
    manifest: &Manifest,
    plans: &mut [StepPlan],
) -> Result<(), StoreError> {
    loop {
        let mut changed = false;
        for (i, consumer) in manifest.steps.iter().enumerate() {
            if consumer.is_source() {
                continue;
            }
            for (j, producer) in manifest.steps.iter().enumerate() {
                let runs = !plans[j].skipped && (plans[j].tasks > 0 || !plans[j].after.is_empty());
                if i == j || !runs || plans[i].after.contains(&producer.name) {
                    continue;
                }
                let feeds = match conn {
                    Some(conn) if !provenance::versions_of(conn, &producer.name)?.is_empty() => {
                        provenance::step_fed(conn, &producer.name, &consumer.inputs)?
                    }
                    _ => j < i,
                };
                if feeds {
                    plans[i].after.push(producer.name.clone());
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(());
        }
    }
}

fn short(hash: &str) -> String {
    super::short_hash(hash).to_string()
}
