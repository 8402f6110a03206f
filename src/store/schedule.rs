//! Task creation and the task queue: which tasks exist, which are pending, and handing them to the
//! engine page by page (the queue lives in SQLite, so memory does not grow with the store).
//!
//! Which stored tasks run again is not decided here but by [`super::decide`], the rule the dry
//! run's plan counts with; this module only turns that rule into SQL. Each statement that
//! creates a task or puts one back to pending also records why (`reason`, in the dry run's
//! words) and which run decided it (`reason_run`): one more column in a statement that runs
//! anyway, never a statement of its own.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::decide::{self, Situation, TaskState, VersionStatus, Why};
use super::liveness::{self, LiveSource};
use super::runs::StepKind;
use super::{StoreError, timestamp};
use crate::manifest::{inputs_match, inputs_sql};

/// A current non-gather, non-source step version and the patterns it consumes.
#[derive(Debug, Clone)]
pub struct MapStep {
    pub version_id: i64,
    pub patterns: Vec<String>,
    /// The reason recorded for its new tasks in this run ([`decide::Why::Fresh`]'s text: a new
    /// input, or the step's new version).
    pub fresh: &'static str,
}

/// The resource a task reads.
#[derive(Debug, Clone)]
pub struct InputRef {
    pub name: String,
    pub hash: String,
    /// The recorded size, which the object is verified against before the task reads it.
    pub size: u64,
}

/// A pending task handed to the engine.
#[derive(Debug, Clone)]
pub struct QueuedTask {
    pub id: i64,
    pub input: Option<InputRef>,
}

/// Create this run's task for a source step (`once` sources: one task per version, retried while
/// it has failed; `fresh` is the reason recorded for a new one). Returns whether a pending task
/// now exists.
pub fn source_task(
    conn: &Connection,
    run_id: i64,
    version_id: i64,
    once: bool,
    fresh: &str,
) -> Result<bool, StoreError> {
    if once {
        conn.execute(
            "INSERT OR IGNORE INTO tasks (step_version_id, source_run, state, created_run, reason, reason_run)
             VALUES (?1, 0, 'pending', ?2, ?3, ?2)",
            params![version_id, run_id, fresh],
        )?;
        let requeued = decide::sql_list(&decide::requeued(StepKind::Source, true, false));
        conn.execute(
            &format!(
                "UPDATE tasks SET state = 'pending', reason = {failed}, reason_run = ?2
                 WHERE step_version_id = ?1 AND source_run = 0 AND state IN ({requeued})",
                failed = decide::failed_before_sql(),
            ),
            params![version_id, run_id],
        )?;
        let pending: bool = conn.query_row(
            "SELECT state = 'pending' FROM tasks WHERE step_version_id = ?1 AND source_run = 0",
            [version_id],
            |r| r.get(0),
        )?;
        Ok(pending)
    } else {
        let every_run = Why::EveryRun.text(StepKind::Source, VersionStatus::Known);
        conn.execute(
            "INSERT OR IGNORE INTO tasks (step_version_id, source_run, state, created_run, reason, reason_run)
             VALUES (?1, ?2, 'pending', ?2, ?3, ?2)",
            params![version_id, run_id, every_run],
        )?;
        Ok(true)
    }
}

/// Create the missing tasks of a map step for every live matching resource, and put its failed
/// tasks on live inputs back to pending (each run retries failures). Returns the pending count added.
pub fn backfill(conn: &Connection, run_id: i64, step: &MapStep) -> Result<u64, StoreError> {
    if step.patterns.is_empty() {
        return Ok(0);
    }
    let (matches, values) = inputs_sql("r.name", &step.patterns);
    // Every run backfills every map step, so on a large store this is mostly resources that
    // already have their task: probing the task index costs a third of an ignored insert
    // (measured: 13 ms against 42 ms of CPU for 50,000 matching resources).
    let sql = format!(
        "INSERT OR IGNORE INTO tasks (step_version_id, input_resource_id, state, created_run, reason, reason_run)
         SELECT {version}, r.id, 'pending', {run_id}, ?1, {run_id} FROM resources r
         WHERE r.live = 1 AND {matches}
           AND NOT EXISTS (SELECT 1 FROM tasks t
                           WHERE t.step_version_id = {version} AND t.input_resource_id = r.id)",
        version = step.version_id,
    );
    // The reason is `?1`; the patterns' anonymous parameters number on from it.
    let created = conn.execute(
        &sql,
        params_from_iter([step.fresh].into_iter().chain(values)),
    )? as u64;
    let requeued = decide::sql_list(&decide::requeued(StepKind::Map, false, false));
    let retried = conn.execute(
        &format!(
            "UPDATE tasks SET state = 'pending', reason = {failed}, reason_run = ?2
             WHERE step_version_id = ?1 AND state IN ({requeued})
               AND input_resource_id IN (SELECT id FROM resources WHERE live = 1)",
            failed = decide::failed_before_sql(),
        ),
        params![step.version_id, run_id],
    )? as u64;
    Ok(created + retried)
}

/// What making resources live asks of the engine ([`tasks_for_new_live`]).
#[derive(Debug, Default, Clone)]
pub struct NewWork {
    /// (step version id, tasks created): new tasks, whose ids lie past every cursor the engine
    /// pages with.
    pub created: Vec<(i64, u64)>,
    /// (step version id, task) for tasks that existed and are pending now: left pending by an
    /// interrupted run, or failed in an earlier run and put back. Their ids may lie behind the
    /// engine's cursor, so it queues them itself (unless it already fetched them in this run).
    pub revived: Vec<(i64, QueuedTask)>,
}

impl NewWork {
    /// Add `more` to this.
    pub fn extend(&mut self, more: NewWork) {
        for (version, count) in more.created {
            match self.created.iter_mut().find(|(v, _)| *v == version) {
                Some((_, total)) => *total += count,
                None => self.created.push((version, count)),
            }
        }
        self.revived.extend(more.revived);
    }
}

/// Create tasks for resources that just became live, and find the consumers' tasks that exist
/// already: a task an interrupted run left pending, or one that failed in an earlier run, which
/// this run retries (as [`backfill`] does at its start for inputs live then).
pub fn tasks_for_new_live(
    conn: &Connection,
    run_id: i64,
    newly_live: &[(i64, String)],
    steps: &[MapStep],
) -> Result<NewWork, StoreError> {
    let mut work = NewWork::default();
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO tasks (step_version_id, input_resource_id, state, created_run, reason, reason_run)
         VALUES (?1, ?2, 'pending', ?3, ?4, ?3)",
    )?;
    // Built once: this runs on every publish, and the text never changes.
    static RETRY_SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let retry_sql = RETRY_SQL.get_or_init(|| {
        format!(
            "UPDATE tasks SET state = 'pending', reason = {failed}, reason_run = ?3
             WHERE step_version_id = ?1 AND input_resource_id = ?2 AND state IN ({requeued})
               AND last_run IS NOT ?3",
            failed = decide::failed_before_sql(),
            requeued = decide::sql_list(&decide::requeued(StepKind::Map, false, false)),
        )
    });
    let mut retry = conn.prepare_cached(retry_sql)?;
    let mut pending = conn.prepare_cached(
        "SELECT t.id, r.name, r.hash, r.size FROM tasks t JOIN resources r ON r.id = t.input_resource_id
         WHERE t.step_version_id = ?1 AND t.input_resource_id = ?2 AND t.state = 'pending'",
    )?;
    for step in steps {
        let mut count = 0;
        for (id, name) in newly_live {
            if !inputs_match(&step.patterns, name) {
                continue;
            }
            if insert.execute(params![step.version_id, id, run_id, step.fresh])? > 0 {
                count += 1;
                continue;
            }
            // The task exists: retried if it failed before this run, queued if pending.
            retry.execute(params![step.version_id, id, run_id])?;
            let found = pending
                .query_row(params![step.version_id, id], |row| {
                    Ok(QueuedTask {
                        id: row.get(0)?,
                        input: Some(InputRef {
                            name: row.get(1)?,
                            hash: row.get(2)?,
                            size: row.get::<_, i64>(3)? as u64,
                        }),
                    })
                })
                .optional()?;
            work.revived
                .extend(found.map(|task| (step.version_id, task)));
        }
        if count > 0 {
            work.created.push((step.version_id, count));
        }
    }
    Ok(work)
}

/// Whether a version has a failed task whose input is live (or that is a source's): its step's
/// outputs are incomplete until a run retries it.
pub fn has_failed_live_task(conn: &Connection, version_id: i64) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM tasks t LEFT JOIN resources r ON r.id = t.input_resource_id
           WHERE t.step_version_id = ?1 AND t.state = 'failed'
             AND (t.input_resource_id IS NULL OR r.live = 1))",
    )?;
    Ok(stmt.query_row(params![version_id], |row| row.get(0))?)
}

/// Up to `limit` pending tasks of a version with id greater than `after`, whose input is live.
pub fn next_pending(
    conn: &Connection,
    version_id: i64,
    after: i64,
    limit: usize,
) -> Result<Vec<QueuedTask>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, r.id, r.name, r.hash, r.size FROM tasks t
           LEFT JOIN resources r ON r.id = t.input_resource_id
         WHERE t.step_version_id = ?1 AND t.state = 'pending' AND t.id > ?2
           AND (t.input_resource_id IS NULL OR r.live = 1)
         ORDER BY t.id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![version_id, after, limit as i64], |row| {
        let resource_id: Option<i64> = row.get(1)?;
        let input = match resource_id {
            Some(_) => Some(InputRef {
                name: row.get(2)?,
                hash: row.get(3)?,
                size: row.get::<_, i64>(4)? as u64,
            }),
            None => None,
        };
        Ok(QueuedTask {
            id: row.get(0)?,
            input,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One task, if it is pending (a gather step's task for the current input set).
pub fn pending_task(conn: &Connection, task_id: i64) -> Result<Option<QueuedTask>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM tasks WHERE id = ?1 AND state = 'pending'")?
        .query_row([task_id], |row| {
            Ok(QueuedTask {
                id: row.get(0)?,
                input: None,
            })
        })
        .optional()?)
}

/// Mark tasks as running in this run, each with the time its script was let start, inside the
/// caller's transaction (the engine's group commit, [`super::publish::commit_group`]).
pub fn mark_running(
    conn: &Connection,
    run_id: i64,
    tasks: &[(i64, std::time::SystemTime)],
) -> Result<(), StoreError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET state = 'running', last_run = ?2, started_at = ?3 WHERE id = ?1 AND state = 'pending'",
    )?;
    for &(id, when) in tasks {
        stmt.execute(params![id, run_id, timestamp(when)])?;
    }
    Ok(())
}

/// Make sure the gather step has a pending task for its current live input set, unless that set
/// is empty, already done, or already failed in this run. `version` says how the step's version
/// related to the store when the run began (the reason recorded for a new task). Returns the
/// pending task id.
pub fn gather_task(
    conn: &mut Connection,
    run_id: i64,
    version_id: i64,
    patterns: &[String],
    version: VersionStatus,
) -> Result<Option<i64>, StoreError> {
    let tx = conn.transaction()?;
    let Some(key) = liveness::gather_key(&tx, patterns, LiveSource::Column)? else {
        return Ok(None);
    };
    let existing: Option<(i64, String, Option<i64>)> = tx
        .query_row(
            "SELECT id, state, last_run FROM tasks WHERE step_version_id = ?1 AND input_set = ?2",
            params![version_id, key],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let state = existing
        .as_ref()
        .map(|(_, state, _)| TaskState::parse(state));
    let situation = Situation {
        kind: StepKind::Gather,
        once: false,
        forced: false,
        failed_in_this_run: existing
            .as_ref()
            .is_some_and(|(_, _, last_run)| *last_run == Some(run_id)),
    };
    // An unknown state (the schema admits none) is left alone.
    let verdict = match state {
        Some(None) => None,
        Some(Some(state)) => decide::runs(situation, Some(state)),
        None => decide::runs(situation, None),
    };
    let pending = match (existing, verdict) {
        (_, None) => None,
        (None, Some(why)) => {
            tx.execute(
                "INSERT INTO tasks (step_version_id, input_set, state, created_run, reason, reason_run)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?3)",
                params![version_id, key, run_id, why.text(StepKind::Gather, version)],
            )?;
            let task_id = tx.last_insert_rowid();
            let members = liveness::gather_members(&tx, patterns, LiveSource::Column)?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO gather_inputs (task_id, resource_id) VALUES (?1, ?2)",
            )?;
            for member in members {
                insert.execute(params![task_id, member])?;
            }
            Some(task_id)
        }
        (Some((id, _, _)), Some(why)) => {
            // Only a failed task (a succeeded one only when forced, which `force_gather` already
            // made pending) changes here: pending ones keep the reason they were queued for.
            let reason = match why {
                Why::FailedBefore => decide::failed_before_sql(),
                other => format!("'{}'", other.text(StepKind::Gather, version)),
            };
            tx.execute(
                &format!(
                    "UPDATE tasks SET state = 'pending', reason = {reason}, reason_run = ?2
                     WHERE id = ?1 AND state <> 'pending'"
                ),
                params![id, run_id],
            )?;
            Some(id)
        }
    };
    tx.commit()?;
    Ok(pending)
}

/// `--force-step` for a map step or a `once` source: its tasks on live inputs (a `once`
/// source's one task) that already ran are pending again, recorded as forced (a failed one as
/// failed before, as the dry run says). Returns how many. (A source that runs every run has a new
/// task each run anyway.)
pub fn force(
    conn: &Connection,
    run_id: i64,
    version_id: i64,
    kind: StepKind,
) -> Result<u64, StoreError> {
    let forced = decide::sql_list(&decide::requeued(kind, true, true));
    Ok(conn.execute(
        &format!(
            "UPDATE tasks SET state = 'pending', reason = {reason}, reason_run = ?2
             WHERE step_version_id = ?1 AND state IN ({forced})
               AND (source_run = 0
                    OR input_resource_id IN (SELECT id FROM resources WHERE live = 1))",
            reason = forced_reason_sql(),
        ),
        params![version_id, run_id],
    )? as u64)
}

/// The reason `--force-step` records for a task it puts back: a failed task would have run
/// anyway (failed before); a succeeded one runs because it was forced.
fn forced_reason_sql() -> String {
    format!(
        "CASE state WHEN 'failed' THEN {} ELSE '{}' END",
        decide::failed_before_sql(),
        Why::Forced.text(StepKind::Map, VersionStatus::Known)
    )
}

/// `--force-step` for a gather step: its task for the current live input set, if it already
/// ran, is pending again. Returns whether there was one.
pub fn force_gather(
    conn: &Connection,
    run_id: i64,
    version_id: i64,
    patterns: &[String],
) -> Result<bool, StoreError> {
    let Some(key) = liveness::gather_key(conn, patterns, LiveSource::Column)? else {
        return Ok(false);
    };
    let forced = decide::sql_list(&decide::requeued(StepKind::Gather, false, true));
    Ok(conn.execute(
        &format!(
            "UPDATE tasks SET state = 'pending', reason = {reason}, reason_run = ?3
             WHERE step_version_id = ?1 AND input_set = ?2 AND state IN ({forced})",
            reason = forced_reason_sql(),
        ),
        params![version_id, key, run_id],
    )? > 0)
}

/// The task of a gather step version whose outputs are live, if any (the newest such).
pub fn live_gather_task(conn: &Connection, version_id: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM tasks t
             WHERE step_version_id = ?1 AND state = 'succeeded' AND input_set IS NOT NULL
               AND EXISTS (SELECT 1 FROM outputs o JOIN resources r ON r.id = o.resource_id
                           WHERE o.task_id = t.id AND r.live = 1)
             ORDER BY finished_at DESC, id DESC LIMIT 1",
            [version_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Hold a gather step back (a task upstream of it failed in this run): the outputs that are
/// live now stay live instead of following the partial input set. The held task is the one whose
/// outputs are live, which need not be the last one to finish (an input set that went S1, S2,
/// then S1 again has the first task's outputs live). When none is (the run already replaced the
/// gather's inputs before the failure), it is `live_at_start`, the task whose outputs were live
/// when the run began ([`live_gather_task`]); failing that, the last one that succeeded.
/// Keeps an existing hold. Returns whether the step has such a task.
pub fn hold_gather(
    conn: &Connection,
    version_id: i64,
    live_at_start: Option<i64>,
) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO gather_holds (step_version_id, task_id)
         SELECT step_version_id, id FROM tasks t
         WHERE step_version_id = ?1 AND state = 'succeeded' AND input_set IS NOT NULL
         ORDER BY EXISTS (SELECT 1 FROM outputs o JOIN resources r ON r.id = o.resource_id
                          WHERE o.task_id = t.id AND r.live = 1) DESC,
                  id IS ?2 DESC, finished_at DESC, id DESC
         LIMIT 1",
        params![version_id, live_at_start],
    )?;
    let held: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM gather_holds WHERE step_version_id = ?1)",
        [version_id],
        |r| r.get(0),
    )?;
    Ok(held)
}

/// Let a held gather step follow its input set again. Returns whether it was held.
pub fn release_gather(conn: &Connection, version_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM gather_holds WHERE step_version_id = ?1")?
        .execute([version_id])?
        > 0)
}

/// The members of a gather task's input set, ordered by name then hash.
pub fn gather_inputs(conn: &Connection, task_id: i64) -> Result<Vec<InputRef>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name, r.hash, r.size FROM gather_inputs g JOIN resources r ON r.id = g.resource_id
         WHERE g.task_id = ?1 ORDER BY r.name, r.hash",
    )?;
    let rows = stmt.query_map([task_id], |r| {
        Ok(InputRef {
            name: r.get(0)?,
            hash: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
