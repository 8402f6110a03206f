//! Removing history: `gc` (everything no live resource needs), `delete` (chosen resources) and
//! `prune` (keep the newest N of each name). They run under the store lock, so no task is running,
//! and an object is deleted only when no remaining resource or task log refers to it.

use rusqlite::{Connection, params};

use super::objects::Objects;
use super::{StoreError, liveness};

/// What a removal did (or, for a dry run, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Removed {
    pub resources: u64,
    pub tasks: u64,
    pub objects: u64,
    pub bytes_freed: u64,
    /// Tasks of current steps that produced a deleted resource, pending again so that the next
    /// run makes it anew (`grit delete` only, like deleting a make target).
    pub rerun: u64,
    pub dry_run: bool,
}

/// Remove non-live resources (derived ones and superseded facts), the tasks that only served history, unused step versions,
/// and every object nothing refers to any more (including orphans left by a crash).
pub fn gc(conn: &mut Connection, objects: &Objects, dry_run: bool) -> Result<Removed, StoreError> {
    let tx = conn.transaction()?;
    liveness::recompute(&tx)?;
    // Superseded facts included: a source's replaced outputs are history like any other.
    let mut removed = remove_resources(&tx, "SELECT id FROM resources WHERE live = 0", [])?;
    // Tasks of old versions that no longer explain any resource are history nobody can reach.
    removed.tasks += tx.execute(
        "DELETE FROM tasks WHERE step_version_id IN (SELECT id FROM step_versions WHERE current = 0)
           AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.task_id = tasks.id)
           AND state <> 'running'",
        [],
    )? as u64;
    tx.execute(
        "DELETE FROM step_versions WHERE current = 0
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.step_version_id = step_versions.id)",
        [],
    )?;
    finish(tx, objects, removed, dry_run)
}

/// Delete resources by exact hash (or unique prefix, resolved by the caller) or by name.
pub fn delete(
    conn: &mut Connection,
    objects: &Objects,
    hash: Option<&str>,
    name: Option<&str>,
    dry_run: bool,
) -> Result<Removed, StoreError> {
    let tx = conn.transaction()?;
    // Chosen before the resources go: their provenance goes with them.
    let rerun = tx.execute(
        "UPDATE tasks SET state = 'pending', reason = ?3, reason_run = NULL
         WHERE state = 'succeeded' AND COALESCE(source_run, 0) = 0
           AND step_version_id IN (SELECT id FROM step_versions WHERE current = 1)
           AND id IN (SELECT o.task_id FROM outputs o JOIN resources r ON r.id = o.resource_id
                      WHERE (?1 IS NOT NULL AND r.hash = ?1) OR (?2 IS NOT NULL AND r.name = ?2))",
        params![hash, name, super::decide::DELETED],
    )? as u64;
    let mut removed = remove_resources(
        &tx,
        "SELECT id FROM resources WHERE (?1 IS NOT NULL AND hash = ?1) OR (?2 IS NOT NULL AND name = ?2)",
        params![hash, name],
    )?;
    removed.rerun = rerun;
    if removed.resources == 0 {
        return Err(StoreError::NotFound(
            "no resource matches\n  help: list resources with `grit resources --all`".into(),
        ));
    }
    liveness::recompute(&tx)?;
    finish(tx, objects, removed, dry_run)
}

/// Keep the newest `keep` resources of each name (or of `name` only); delete the older ones.
pub fn prune(
    conn: &mut Connection,
    objects: &Objects,
    keep: u64,
    name: Option<&str>,
    dry_run: bool,
) -> Result<Removed, StoreError> {
    let tx = conn.transaction()?;
    let removed = remove_resources(
        &tx,
        "SELECT id FROM (
             SELECT id, ROW_NUMBER() OVER (PARTITION BY name ORDER BY id DESC) AS newest
             FROM resources WHERE ?2 IS NULL OR name = ?2
         ) WHERE newest > ?1",
        params![keep as i64, name],
    )?;
    liveness::recompute(&tx)?;
    finish(tx, objects, removed, dry_run)
}

/// Delete the resources `select` (a query of resource ids) picks, with the tasks that consumed
/// them.
fn remove_resources(
    conn: &Connection,
    select: &str,
    params: impl rusqlite::Params,
) -> Result<Removed, StoreError> {
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY); DELETE FROM doomed;",
    )?;
    conn.execute(&format!("INSERT INTO doomed {select}"), params)?;
    let mut removed = Removed::default();
    // Tasks reading a doomed resource (directly or in a gather set) can never run or be live again.
    removed.tasks += conn.execute(
        "DELETE FROM tasks WHERE input_resource_id IN (SELECT id FROM doomed)
            OR id IN (SELECT task_id FROM gather_inputs WHERE resource_id IN (SELECT id FROM doomed))",
        [],
    )? as u64;
    removed.resources = conn.execute(
        "DELETE FROM resources WHERE id IN (SELECT id FROM doomed)",
        [],
    )? as u64;
    Ok(removed)
}

/// Delete unreferenced objects (after the metadata change), then commit or roll back.
fn finish(
    tx: rusqlite::Transaction<'_>,
    objects: &Objects,
    mut removed: Removed,
    dry_run: bool,
) -> Result<Removed, StoreError> {
    removed.dry_run = dry_run;
    let mut unreferenced = Vec::new();
    {
        let mut referenced = tx.prepare(
            "SELECT EXISTS (SELECT 1 FROM resources WHERE hash = ?1)
                 OR EXISTS (SELECT 1 FROM tasks WHERE log_hash = ?1)",
        )?;
        let mut failure = None;
        objects
            .walk(|hash, size| {
                match referenced.query_row([&hash], |r| r.get::<_, bool>(0)) {
                    Ok(true) => {}
                    Ok(false) => unreferenced.push((hash, size)),
                    Err(e) => failure = Some(e),
                }
                Ok(())
            })
            .map_err(|e| StoreError::io(std::path::Path::new("objects"), e))?;
        if let Some(e) = failure {
            return Err(e.into());
        }
    }
    if dry_run {
        removed.objects = unreferenced.len() as u64;
        removed.bytes_freed = unreferenced.iter().map(|(_, s)| s).sum();
        tx.rollback()?;
        return Ok(removed);
    }
    // Commit first: if deleting files fails halfway, the leftovers are unreferenced and the next
    // gc removes them; the reverse order could leave rows pointing at missing objects.
    tx.commit()?;
    for (hash, _) in unreferenced {
        let freed = objects
            .remove(&hash)
            .map_err(|e| StoreError::io(&objects.path(&hash), e))?;
        removed.objects += 1;
        removed.bytes_freed += freed;
    }
    Ok(removed)
}
