//! What a run would execute now, and why: the plan that `grit run --dry-run` prints and
//! `grit status -m` draws on, as plain data (a read model over the store). The reasons are
//! modelled on Snakemake's rerun reasons (peers.md §2.2): a new step or a changed step version, a
//! new input, a new input set (gather), a failure before, a task an interrupted run left behind, a
//! source that runs every time, and steps that may run afterwards because an upstream step runs
//! ("input updated by another job").
//!
//! Whether a task runs, and why, is [`super::decide`]'s rule, the one the engine's scheduling
//! follows too; this module only counts with it. It only reads. Counts are computed on the
//! resources live now; outputs of the steps that would run can trigger more.

use rusqlite::Connection;

use super::StoreError;
use super::decide::{self, Situation, TaskState, VersionStatus, Why};
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
        plans.push(plan_step(conn, step, allowed, forced.contains(&step.name))?);
    }
    add_downstream(conn, manifest, &mut plans)?;
    Ok(plans)
}

fn plan_step(
    conn: Option<&Connection>,
    step: &Step,
    allowed: bool,
    forced: bool,
) -> Result<StepPlan, StoreError> {
    let hash = step.version_hash();
    let VersionFacts {
        versions,
        stored,
        replaces,
        params_changed,
        status: version,
    } = version_facts(conn, step)?;
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
    // Decided as a run that has not started yet decides: nothing failed in it so far.
    let situation = Situation {
        kind,
        once: step.once,
        forced,
        failed_in_this_run: false,
    };
    // `count` tasks in `state` (None: not created yet): counted as running, with their reason,
    // or as up to date.
    let count = |plan: &mut StepPlan, state: Option<&str>, count: u64, examples: Vec<String>| {
        let state = match state.map(TaskState::parse) {
            Some(None) => return,
            Some(Some(state)) => Some(state),
            None => None,
        };
        match decide::runs(situation, state) {
            Some(why) if count > 0 => {
                plan.tasks += count;
                // A forced task counts as forced even though a version may be new.
                plan.reasons.push(Reason {
                    reason: why.text(kind, version),
                    count,
                    examples: if why == Why::Forced {
                        Vec::new()
                    } else {
                        examples
                    },
                });
            }
            Some(_) => {}
            None => plan.up_to_date += count,
        }
    };
    match kind {
        // The state is that of the one task a `once` source has per version; an every-run
        // source has a new task each run.
        // A time gate (`min_interval`) keeps an every-run source from running; `--force-step`
        // lifts it once, as in the engine.
        StepKind::Source if !step.once && !forced => {
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
                None => count(&mut plan, None, 1, Vec::new()),
            }
        }
        StepKind::Source => {
            let state = match (conn, stored) {
                (Some(conn), Some(id)) if step.once => provenance::once_source_state(conn, id)?,
                _ => None,
            };
            count(&mut plan, state.as_deref(), 1, Vec::new());
        }
        StepKind::Map => {
            let Some(conn) = conn else {
                return Ok(plan);
            };
            for group in provenance::map_inputs(conn, stored, &step.inputs)? {
                let examples = if group.state == "failed" {
                    group
                        .examples
                        .iter()
                        .zip(&group.tasks)
                        .map(|(name, task)| format!("{name} (task {task})"))
                        .collect()
                } else {
                    group.examples.clone()
                };
                let state = (group.state != "new").then_some(group.state.as_str());
                count(&mut plan, state, group.count, examples);
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
            let task = match stored {
                Some(id) => provenance::gather_task_state(conn, id, &key)?,
                None => None,
            };
            let examples = match &task {
                Some((task, state)) if state == "failed" => vec![format!("task {task}")],
                _ => vec![format!("{members} input(s)")],
            };
            count(
                &mut plan,
                task.as_ref().map(|(_, state)| state.as_str()),
                1,
                examples,
            );
        }
    }
    Ok(plan)
}

/// How the manifest's version of a step relates to the store (none yet: everything is new).
pub struct VersionFacts {
    /// The store's versions of the step, the current one first.
    pub versions: Vec<VersionRow>,
    /// The id of this version, when the store has it.
    pub stored: Option<i64>,
    /// The current version this one replaces (short hash), when the step changed.
    pub replaces: Option<String>,
    pub params_changed: Vec<ParamChange>,
    /// What a task that does not exist yet runs for: the version is new, or only its input.
    pub status: VersionStatus,
}

/// The [`VersionFacts`] of `step`: what the dry run says of it, and what the engine records as
/// the reason of its new tasks (`store::runs::begin_run`, before it makes the version current).
pub fn version_facts(conn: Option<&Connection>, step: &Step) -> Result<VersionFacts, StoreError> {
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
    let status = match (&replaces, versions.is_empty(), stored) {
        (_, true, _) => VersionStatus::NewStep,
        (Some(_), _, None) if only_params => VersionStatus::ParamsChanged,
        (Some(_), _, None) => VersionStatus::Changed,
        (None, _, None) => VersionStatus::NotCurrent,
        (_, _, Some(_)) => VersionStatus::Known,
    };
    Ok(VersionFacts {
        versions,
        stored,
        replaces,
        params_changed,
        status,
    })
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
