//! Runs and step versions: what `grit run` records when it starts and ends, including crash
//! recovery of tasks a killed run left *running*.

use rusqlite::{Connection, params};

use super::{StoreError, decide, facts, liveness, now, plan};
use crate::manifest::{Manifest, Step};

/// The scheduling kind of a step, stored with its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Source,
    Map,
    Gather,
}

impl StepKind {
    pub fn of(step: &Step) -> StepKind {
        if step.is_source() {
            StepKind::Source
        } else if step.gather {
            StepKind::Gather
        } else {
            StepKind::Map
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Source => "source",
            StepKind::Map => "map",
            StepKind::Gather => "gather",
        }
    }
}

/// What a run starts from.
#[derive(Debug)]
pub struct RunStart {
    pub run_id: i64,
    /// Step version ids, in manifest order.
    pub versions: Vec<i64>,
    /// How each step's version related to the store before this run (manifest order): what
    /// its new tasks run for ([`decide::Why::Fresh`]).
    pub statuses: Vec<decide::VersionStatus>,
    /// Tasks a crashed run left running, now pending again.
    pub recovered: u64,
    /// Whether the set of current step versions differs from the previous run's.
    pub versions_changed: bool,
}

/// Record a new run, with its parameter values, and make the manifest's step versions current.
/// The manifest's parameters must be bound ([`Manifest::bind_params`]): the versions include them.
///
/// One transaction: crash recovery (running → pending), the run row, the versions, and a liveness
/// recompute when the current versions changed (old versions' outputs stop being live).
pub fn begin_run(conn: &mut Connection, manifest: &Manifest) -> Result<RunStart, StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE runs SET status = 'crashed', finished_at = COALESCE(finished_at, ?1) WHERE status = 'running'",
        [now()],
    )?;
    tx.execute(
        "INSERT INTO runs (started_at, pid, manifest_path, manifest_text, pipeline, params)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now(),
            std::process::id(),
            manifest.path.display().to_string(),
            manifest.text,
            manifest.pipeline_name,
            super::params::encode(&manifest.param_values)
        ],
    )?;
    let run_id = tx.last_insert_rowid();
    // Tasks a crashed run left running run again in this one, recorded as interrupted by it.
    let recovered = tx.execute(
        &format!(
            "UPDATE tasks SET state = 'pending', reason = {}, reason_run = ?1 WHERE state IN ({})",
            decide::interrupted_sql(),
            decide::sql_list(&decide::recovered())
        ),
        [run_id],
    )? as u64;
    // Before any version is made current: what the steps' new tasks run for (their reason).
    let statuses = manifest
        .steps
        .iter()
        .map(|step| Ok(plan::version_facts(Some(&tx), step)?.status))
        .collect::<Result<Vec<_>, StoreError>>()?;

    let before: Vec<i64> = tx
        .prepare("SELECT id FROM step_versions WHERE current = 1 ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut versions = Vec::with_capacity(manifest.steps.len());
    for (position, step) in manifest.steps.iter().enumerate() {
        let hash = step.version_hash();
        tx.execute(
            "INSERT OR IGNORE INTO step_versions (name, hash, kind, inputs, definition, created_run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                step.name,
                hash,
                StepKind::of(step).as_str(),
                serde_json::to_string(&step.inputs).unwrap_or_else(|_| "[]".into()),
                step.canonical_definition(),
                run_id
            ],
        )?;
        let id: i64 = tx.query_row(
            "SELECT id FROM step_versions WHERE name = ?1 AND hash = ?2",
            params![step.name, hash],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE step_versions SET current = 1, position = ?2 WHERE id = ?1",
            params![id, position as i64],
        )?;
        versions.push(id);
    }
    let mut after = versions.clone();
    after.sort_unstable();
    after.dedup();
    // Only versions that stop being current are written: a run of the same steps changes none
    // (which keeps `dataflow_generation`, and the server's cached step models, as they were).
    let keep = after
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(
        &format!("UPDATE step_versions SET current = 0 WHERE current = 1 AND id NOT IN ({keep})"),
        [],
    )?;
    let versions_changed = before != after;

    // Source tasks are per run: ones a crashed run never finished are obsolete (this run polls again).
    tx.execute(
        "DELETE FROM tasks WHERE source_run > 0 AND source_run <> ?1 AND state = 'pending'",
        [run_id],
    )?;
    // A source whose `keep` changed has its claims re-derived under the new rule.
    let mut keep_changed = 0;
    for step in manifest.steps.iter().filter(|s| s.is_source()) {
        keep_changed += facts::apply_keep(&tx, &step.name, step.keep)?;
    }
    // A `once` source returning to a version that already ran (a reverted script) does not run
    // again, so its stored outputs are published anew: they replace what the newer version wrote,
    // as a reverted step's results do (DESIGN §2.4).
    for (step, &id) in manifest.steps.iter().zip(&versions) {
        if step.once && step.is_source() && !before.contains(&id) {
            keep_changed += republish_once(&tx, step, id)?;
        }
    }
    if versions_changed || keep_changed > 0 {
        liveness::recompute(&tx)?;
    }
    tx.commit()?;
    Ok(RunStart {
        run_id,
        versions,
        statuses,
        recovered,
        versions_changed,
    })
}

/// Publish the outputs of a `once` source version's succeeded task again. Returns how many
/// claims that superseded.
fn republish_once(conn: &Connection, step: &Step, version_id: i64) -> Result<u64, StoreError> {
    let ids: Vec<i64> = conn
        .prepare(
            "SELECT o.resource_id FROM tasks t JOIN outputs o ON o.task_id = t.id
             WHERE t.step_version_id = ?1 AND t.source_run = 0 AND t.state = 'succeeded'",
        )?
        .query_map([version_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let seq = facts::next_seq(conn)?;
    facts::publish(conn, &step.name, step.keep, seq, &ids)
}

/// Totals a run reports at its end.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunTotals {
    pub executed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub resources_new: u64,
}

pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    status: &str,
    totals: &RunTotals,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE runs SET finished_at = ?2, status = ?3, executed = ?4, succeeded = ?5, failed = ?6, resources_new = ?7
         WHERE id = ?1",
        params![
            run_id,
            now(),
            status,
            totals.executed as i64,
            totals.succeeded as i64,
            totals.failed as i64,
            totals.resources_new as i64
        ],
    )?;
    Ok(())
}

/// Put tasks of an interrupted run back to pending (SIGINT/SIGTERM), recorded as interrupted by
/// it for whichever run comes next.
pub fn reset_running(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.execute(
        &format!(
            "UPDATE tasks SET state = 'pending', reason = {}, reason_run = NULL WHERE state IN ({})",
            decide::interrupted_sql(),
            decide::sql_list(&decide::recovered())
        ),
        [],
    )? as u64)
}
