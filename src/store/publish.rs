//! Publishing a finished task: one SQLite transaction that writes the task's state, its outputs and
//! their provenance, marks what became live, and creates the downstream tasks (DESIGN §2.5).
//! The objects themselves are already in `objects/` (renamed in before this commit).

use rusqlite::{Connection, params};

use super::schedule::{self, MapStep};
use super::{StoreError, liveness, now};

/// One output file of a succeeded task, already stored as an object.
#[derive(Debug, Clone)]
pub struct OutputRecord {
    pub name: String,
    pub hash: String,
    pub size: u64,
}

/// What the engine learned from executing a task.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub task_id: i64,
    pub run_id: i64,
    pub succeeded: bool,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_hash: Option<String>,
    pub duration_ms: u64,
    /// Source outputs are facts (DESIGN §2.3).
    pub facts: bool,
    pub outputs: Vec<OutputRecord>,
}

/// What publishing changed.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub resources_new: u64,
    pub newly_live: u64,
    /// (step version id, tasks created) for steps that got new work.
    pub created: Vec<(i64, u64)>,
}

pub fn publish(
    conn: &mut Connection,
    record: &TaskRecord,
    maps: &[MapStep],
) -> Result<Published, StoreError> {
    let tx = conn.transaction()?;
    let state = if record.succeeded {
        "succeeded"
    } else {
        "failed"
    };
    tx.execute(
        "UPDATE tasks SET state = ?2, attempts = attempts + ?3, exit_code = ?4, error = ?5, log_hash = ?6,
                          finished_at = ?7, duration_ms = ?8, last_run = ?9
         WHERE id = ?1",
        params![
            record.task_id,
            state,
            record.attempts,
            record.exit_code,
            record.error,
            record.log_hash,
            now(),
            record.duration_ms as i64,
            record.run_id
        ],
    )?;
    let mut published = Published::default();
    if record.succeeded {
        let mut ids = Vec::with_capacity(record.outputs.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO resources (name, hash, size, task_id, run_id, created_at, fact)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut lookup =
                tx.prepare_cached("SELECT id FROM resources WHERE name = ?1 AND hash = ?2")?;
            let mut make_fact =
                tx.prepare_cached("UPDATE resources SET fact = 1 WHERE id = ?1 AND fact = 0")?;
            let mut provenance = tx.prepare_cached(
                "INSERT OR IGNORE INTO outputs (task_id, resource_id) VALUES (?1, ?2)",
            )?;
            let created_at = now();
            for output in &record.outputs {
                published.resources_new += insert.execute(params![
                    output.name,
                    output.hash,
                    output.size as i64,
                    record.task_id,
                    record.run_id,
                    created_at,
                    record.facts
                ])? as u64;
                let id: i64 = lookup.query_row(params![output.name, output.hash], |r| r.get(0))?;
                if record.facts {
                    make_fact.execute([id])?;
                }
                provenance.execute(params![record.task_id, id])?;
                ids.push(id);
            }
        }
        let newly = liveness::propagate(&tx, &ids)?;
        published.newly_live = newly.len() as u64;
        published.created = schedule::tasks_for_new_live(&tx, record.run_id, &newly, maps)?;
    }
    tx.commit()?;
    Ok(published)
}

/// Record an ingested file (already stored as an object) as a fact. Returns true when the
/// resource is new. Tasks for it are created by the next run's backfill.
pub fn ingest(conn: &mut Connection, output: &OutputRecord) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let new = tx.execute(
        "INSERT OR IGNORE INTO resources (name, hash, size, created_at, fact) VALUES (?1, ?2, ?3, ?4, 1)",
        params![output.name, output.hash, output.size as i64, now()],
    )? == 1;
    let id: i64 = tx.query_row(
        "SELECT id FROM resources WHERE name = ?1 AND hash = ?2",
        params![output.name, output.hash],
        |r| r.get(0),
    )?;
    tx.execute("UPDATE resources SET fact = 1 WHERE id = ?1", [id])?;
    liveness::propagate(&tx, &[id])?;
    tx.commit()?;
    Ok(new)
}
