//! The `slurm_jobs` table: which Slurm job runs which task, so that a `grit run` after a crash
//! adopts jobs still running (and results already written) instead of running the tasks again,
//! and so that `grit status`, the server's task view and the web UI can say where each task is.
//!
//! A row is *active* from submission until the submitting grit has taken the task's result or
//! given the task up ([`end`]); then it stays, ended, as the record of the job that last ran the
//! task, until the task is submitted again (the row is replaced) or deleted. Only the writer
//! thread writes rows.

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
    /// When grit took the task's result or gave it up; `None` while the task is on the cluster.
    pub ended_at: Option<String>,
}

/// Record submitted tasks (replacing an older row of the same task, active or ended).
pub fn record(conn: &mut Connection, jobs: &[SlurmJob]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO slurm_jobs
                 (task_id, run_id, job_id, work, step, state, updated_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
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

/// A job's new state, for every task it still runs.
pub fn set_states(conn: &mut Connection, states: &[(String, String)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let now = super::now();
        let mut update = tx.prepare_cached(
            "UPDATE slurm_jobs SET state = ?2, updated_at = ?3
             WHERE job_id = ?1 AND state <> ?2 AND ended_at IS NULL",
        )?;
        for (job, state) in states {
            update.execute(params![job, state, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The submitting grit has taken these tasks' results, or given them up: each active row ends
/// with the task's last state on the cluster (`COMPLETED` when its result came back, Slurm's
/// reason, `CANCELLED`).
pub fn end(conn: &mut Connection, ends: &[(i64, String)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let now = super::now();
        let mut update = tx.prepare_cached(
            "UPDATE slurm_jobs SET state = ?2, updated_at = ?3, ended_at = ?3
             WHERE task_id = ?1 AND ended_at IS NULL",
        )?;
        for (task, state) in ends {
            update.execute(params![task, state, now])?;
        }
    }
    tx.commit()?;
    Ok(())
}

const COLUMNS: &str = "task_id, run_id, job_id, work, step, state, updated_at, ended_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlurmJob> {
    Ok(SlurmJob {
        task_id: r.get(0)?,
        run_id: r.get(1)?,
        job_id: r.get(2)?,
        work: r.get(3)?,
        step: r.get(4)?,
        state: r.get(5)?,
        updated_at: r.get(6)?,
        ended_at: r.get(7)?,
    })
}

/// The tasks on the cluster now (active rows), by task.
pub fn active(conn: &Connection) -> Result<Vec<SlurmJob>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM slurm_jobs WHERE ended_at IS NULL ORDER BY task_id"
    ))?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// [`active`], or nothing on a store older than the table (read-only commands do not migrate).
/// A v5 store has no `ended_at` and only active rows.
pub fn active_if_any(conn: &Connection) -> Vec<SlurmJob> {
    active(conn).unwrap_or_else(|_| {
        let v5 = || -> rusqlite::Result<Vec<SlurmJob>> {
            let mut stmt = conn.prepare(
                "SELECT task_id, run_id, job_id, work, step, state, updated_at, NULL
                 FROM slurm_jobs ORDER BY task_id",
            )?;
            let rows = stmt.query_map([], row)?;
            rows.collect()
        };
        v5().unwrap_or_default()
    })
}

/// The job that runs `task` now, or last ran it; `None` if it never ran on Slurm (or the store
/// predates the table).
pub fn of_task(conn: &Connection, task: i64) -> Option<SlurmJob> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM slurm_jobs WHERE task_id = ?1"
        ))
        .ok()?;
    stmt.query_row([task], row).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(task_id: i64, job_id: &str) -> SlurmJob {
        SlurmJob {
            task_id,
            run_id: 1,
            job_id: job_id.into(),
            work: format!("t{task_id}-r1-p1-b0"),
            step: "s".into(),
            state: "PENDING".into(),
            updated_at: "now".into(),
            ended_at: None,
        }
    }

    #[test]
    fn ended_rows_stay_as_the_record_but_are_not_active() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("db")).expect("open");
        crate::store::schema::migrate(&mut conn).expect("migrate");
        // Rows reference tasks; the constraint is not what this test is about.
        conn.pragma_update(None, "foreign_keys", false)
            .expect("pragma");
        record(&mut conn, &[job(1, "7_0"), job(2, "7_0"), job(3, "7_1")]).expect("record");
        set_states(&mut conn, &[("7_0".into(), "RUNNING".into())]).expect("states");
        end(&mut conn, &[(1, "COMPLETED".into())]).expect("end");
        // An ended row no longer follows its job's state.
        set_states(&mut conn, &[("7_0".into(), "COMPLETING".into())]).expect("states");
        let active: Vec<(i64, String)> = active(&conn)
            .expect("active")
            .into_iter()
            .map(|j| (j.task_id, j.state))
            .collect();
        assert_eq!(
            active,
            vec![(2, "COMPLETING".into()), (3, "PENDING".into())]
        );
        let one = of_task(&conn, 1).expect("kept");
        assert_eq!(
            (one.job_id.as_str(), one.state.as_str()),
            ("7_0", "COMPLETED")
        );
        assert!(one.ended_at.is_some());
        // Submitted again: the row is active once more, with the new job.
        record(&mut conn, &[job(1, "9_0")]).expect("again");
        let again = of_task(&conn, 1).expect("row");
        assert_eq!((again.job_id.as_str(), again.ended_at), ("9_0", None));
        assert_eq!(of_task(&conn, 42), None);
    }
}
