//! The store side of `grit verify --repair`: fixing permissions, moving damaged objects to
//! `<db>/quarantine/`, and deciding, from provenance, how each lost object can come back.
//!
//! A lost object of a *live derived* resource is re-created by putting the task that produced it
//! (a task of the step's current version) back to pending; the engine re-runs it and verifies it
//! again. Source outputs and ingested files ("facts") cannot be re-created by any task: they are
//! listed with the steps whose results depend on them. A lost object of a resource that is no
//! longer live is history; `grit gc` drops its row. A lost task log is only a log: its reference
//! is cleared, and the repair says so.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rusqlite::{Connection, params};

use super::objects::create_store_dirs;
use super::verify::{BadMode, BadObject};
use super::{StoreError, StorePaths};

/// Lost data no task can re-create.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LostData {
    pub name: String,
    pub hash: String,
    /// `source` (a source step's output) or `ingested`.
    pub origin: String,
    /// Steps whose results were computed from it, directly or further down.
    pub dependents: Vec<String>,
}

/// What to do about a set of lost objects.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Plan {
    /// Tasks to re-run, with their step names.
    pub rerun: Vec<(i64, String)>,
    pub unrecoverable: Vec<LostData>,
    /// Resources no longer live whose object is gone: `grit gc` removes them.
    pub history: Vec<(String, String)>,
    /// Task logs that are gone: (task id, hash).
    pub logs: Vec<(i64, String)>,
}

/// Give a path the mode grit gives such a path in this store (never wider: a private store's
/// paths become the owner's alone, a shared store's keep the group's read access).
pub fn fix_mode(bad: &BadMode) -> io::Result<()> {
    fs::set_permissions(&bad.path, fs::Permissions::from_mode(bad.want))
}

/// Move a damaged object to `<db>/quarantine/<hash>` (with a numbered suffix if that exists);
/// returns where it went.
pub fn quarantine(paths: &StorePaths, bad: &BadObject) -> io::Result<PathBuf> {
    let dir = paths.quarantine();
    create_store_dirs(&dir)?;
    let mut target = dir.join(&bad.hash);
    let mut n = 1;
    while fs::symlink_metadata(&target).is_ok() {
        target = dir.join(format!("{}.{n}", bad.hash));
        n += 1;
    }
    fs::rename(&bad.path, &target)?;
    Ok(target)
}

/// Decide how each lost object (by hash) comes back, if it can.
pub fn plan(conn: &Connection, lost: &[String]) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let mut rerun = BTreeSet::new();
    let mut resources = conn.prepare(
        "SELECT id, name, live, fact, task_id IS NULL FROM resources WHERE hash = ?1 ORDER BY id",
    )?;
    // The newest task of a current, non-source version that produced the resource.
    let mut producer = conn.prepare(
        "SELECT t.id, v.name FROM outputs o
           JOIN tasks t ON t.id = o.task_id
           JOIN step_versions v ON v.id = t.step_version_id
         WHERE o.resource_id = ?1 AND v.current = 1 AND v.kind <> 'source'
         ORDER BY t.id DESC LIMIT 1",
    )?;
    let mut logs = conn.prepare("SELECT id FROM tasks WHERE log_hash = ?1 ORDER BY id")?;
    // A task whose own input is lost too waits for the next round, when that input is back: run
    // now, it would only fail (and leave a log nobody needs).
    let mut inputs = conn.prepare(
        "SELECT r.hash FROM tasks t JOIN resources r ON r.id = t.input_resource_id WHERE t.id = ?1
         UNION SELECT r.hash FROM gather_inputs g JOIN resources r ON r.id = g.resource_id
           WHERE g.task_id = ?1",
    )?;
    let lost_set: BTreeSet<&str> = lost.iter().map(String::as_str).collect();
    for hash in lost {
        let rows = resources
            .query_map([hash], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (id, name, live, fact, ingested) in rows {
            if fact {
                plan.unrecoverable.push(LostData {
                    dependents: dependents(conn, id)?,
                    origin: if ingested { "ingested" } else { "source" }.into(),
                    name,
                    hash: hash.clone(),
                });
                continue;
            }
            let made_by: Option<(i64, String)> = producer
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .ok();
            match made_by {
                Some(task) if live => {
                    let needs_lost = inputs
                        .query_map([task.0], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?
                        .iter()
                        .any(|h| lost_set.contains(h.as_str()));
                    if !needs_lost {
                        rerun.insert(task);
                    }
                }
                _ => plan.history.push((name, hash.clone())),
            }
        }
        let tasks = logs
            .query_map([hash], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        plan.logs
            .extend(tasks.into_iter().map(|task| (task, hash.clone())));
    }
    plan.rerun = rerun.into_iter().collect();
    Ok(plan)
}

/// Steps whose tasks read the resource, or read something computed from it.
fn dependents(conn: &Connection, resource_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE
           consumes(task_id, resource_id) AS (
             SELECT id, input_resource_id FROM tasks WHERE input_resource_id IS NOT NULL
             UNION ALL SELECT task_id, resource_id FROM gather_inputs),
           downstream(rid) AS (
             SELECT ?1
             UNION SELECT o.resource_id FROM downstream d
               JOIN consumes c ON c.resource_id = d.rid
               JOIN outputs o ON o.task_id = c.task_id)
         SELECT DISTINCT v.name FROM downstream d
           JOIN consumes c ON c.resource_id = d.rid
           JOIN tasks t ON t.id = c.task_id
           JOIN step_versions v ON v.id = t.step_version_id
         ORDER BY v.name",
    )?;
    let names = stmt
        .query_map([resource_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// Put tasks back to pending so that the engine runs them again.
pub fn reset_tasks(conn: &mut Connection, tasks: &[i64]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        // Recorded for whichever run comes next (no run decided it).
        let mut reset = tx.prepare(
            "UPDATE tasks SET state = 'pending', reason = ?2, reason_run = NULL WHERE id = ?1",
        )?;
        for id in tasks {
            reset.execute(params![id, super::decide::REPAIRED])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Forget lost task logs: the tasks keep their status and error, without a log to show.
pub fn forget_logs(conn: &mut Connection, logs: &[(i64, String)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut forget =
            tx.prepare("UPDATE tasks SET log_hash = NULL WHERE id = ?1 AND log_hash = ?2")?;
        for (task, hash) in logs {
            forget.execute(params![task, hash])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The manifest of the last run (path and text): repairs re-run tasks with it.
pub fn last_manifest(conn: &Connection) -> Result<Option<(String, String)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT manifest_path, manifest_text FROM runs ORDER BY id DESC LIMIT 1")?;
    let mut rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.next().transpose()?)
}
