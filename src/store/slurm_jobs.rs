//! The `slurm_jobs` table: which Slurm job runs which task, so that a `grit run` after a crash
//! adopts jobs still running (and results already written) instead of running the tasks again,
//! and so that `grit status` can say where each task is. Rows live from submission until the
//! submitting grit has taken the task's result; only the writer thread touches them.

use rusqlite::{Connection, params};

use super::StoreError;

/// One task's job, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlurmJob {
    pub task_id: i64,
    pub run_id: i64,
    /// `123` or `123_4` (an element of an array job).
    pub job_id: String,
    /// The task's directory under `<db>/slurm/work`.
    pub work: String,
    pub step: String,
    pub state: String,
    pub updated_at: String,
}

/// Record submitted tasks (replacing an older row of the same task).
pub fn record(conn: &mut Connection, jobs: &[SlurmJob]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO slurm_jobs (task_id, run_id, job_id, work, step, state, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for job in jobs {
            insert.execute(params![
                job.task_id,
                job.run_id,
                job.job_id,
                job.work,
                job.step,
                job.state,
                job.updated_at
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A job's new state, for every task it runs.
pub fn set_states(conn: &mut Connection, states: &[(String, String)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let now = super::now();
        let mut update = tx.prepare_cached(
            "UPDATE slurm_jobs SET state = ?2, updated_at = ?3 WHERE job_id = ?1 AND state <> ?2",
        )?;
        for (job, state) in states {
            update.execute(params![job, state, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The submitting grit has taken these tasks' results (or given them up).
pub fn forget(conn: &mut Connection, task_ids: &[i64]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM slurm_jobs WHERE task_id = ?1")?;
        for id in task_ids {
            delete.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every recorded job, by task.
pub fn all(conn: &Connection) -> Result<Vec<SlurmJob>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT task_id, run_id, job_id, work, step, state, updated_at FROM slurm_jobs ORDER BY task_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SlurmJob {
            task_id: r.get(0)?,
            run_id: r.get(1)?,
            job_id: r.get(2)?,
            work: r.get(3)?,
            step: r.get(4)?,
            state: r.get(5)?,
            updated_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// [`all`], or nothing on a store older than the table (read-only commands do not migrate).
pub fn all_if_any(conn: &Connection) -> Vec<SlurmJob> {
    all(conn).unwrap_or_default()
}
