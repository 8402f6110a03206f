//! Publishing a finished task: one SQLite transaction that writes the task's state, its outputs and
//! their provenance, marks what became live, and creates the downstream tasks (DESIGN §2.5).
//! The objects themselves are already in `objects/` (renamed in before this commit).

use rusqlite::{Connection, OptionalExtension, params};

use super::schedule::{self, MapStep};
use super::{StoreError, facts, liveness, now};
use crate::manifest::Keep;

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
    /// Set for a source's task: its outputs are facts of this source, kept by this rule
    /// (DESIGN §2.3).
    pub source: Option<FactSource>,
    pub outputs: Vec<OutputRecord>,
}

/// The source a task's outputs are facts of.
#[derive(Debug, Clone)]
pub struct FactSource {
    /// The step name (claims outlive step versions).
    pub name: String,
    pub keep: Keep,
}

/// What publishing changed.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub resources_new: u64,
    pub newly_live: u64,
    /// The tasks its new live resources created or made pending again.
    pub work: schedule::NewWork,
}

/// Publish one finished task in a transaction of its own.
pub fn publish(
    conn: &mut Connection,
    record: &TaskRecord,
    maps: &[MapStep],
) -> Result<Published, StoreError> {
    let tx = conn.transaction()?;
    let published = publish_in(&tx, record, maps)?;
    tx.commit()?;
    Ok(published)
}

/// The engine's group commit: one transaction marks tasks whose scripts started as running
/// (`starting`, each with the time it started) and publishes every task that finished meanwhile, in order. Each task's
/// outputs and state still land together (the whole group lands or none of it); a crash before
/// the commit leaves the group's tasks pending or running, which the next run takes up again
/// (running → pending), and their objects already in `objects/` are found again by content.
/// One commit per group instead of two per task: the WAL frames of the shared pages (the task
/// queue's index, the resources' indexes) are written once per group.
pub fn commit_group(
    conn: &mut Connection,
    run_id: i64,
    starting: &[(i64, std::time::SystemTime)],
    records: &[&TaskRecord],
    maps: &[MapStep],
) -> Result<Vec<Published>, StoreError> {
    let tx = conn.transaction()?;
    schedule::mark_running(&tx, run_id, starting)?;
    let mut published = Vec::with_capacity(records.len());
    for record in records {
        published.push(publish_in(&tx, record, maps)?);
    }
    crash_test_pause(records);
    tx.commit()?;
    Ok(published)
}

/// Crash-test hook: with `GRIT_TEST_GROUP_COMMIT_PAUSE=<file>` in the environment, a group commit
/// that publishes tasks appends their ids to `<file>` (one line per group, comma-separated) and
/// waits 300 ms before it commits, so that `tests/crash.rs` can `kill -9` grit while a group's
/// rows are written but not committed. Only that test sets it.
fn crash_test_pause(records: &[&TaskRecord]) {
    static PAUSE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(path) =
        PAUSE.get_or_init(|| std::env::var_os("GRIT_TEST_GROUP_COMMIT_PAUSE").map(Into::into))
    else {
        return;
    };
    if records.is_empty() {
        return;
    }
    let ids: Vec<String> = records.iter().map(|r| r.task_id.to_string()).collect();
    let line = format!("{}\n", ids.join(","));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("crash-test hook: cannot write {}: {e}", path.display());
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// Publish one finished task inside the caller's transaction.
fn publish_in(
    tx: &Connection,
    record: &TaskRecord,
    maps: &[MapStep],
) -> Result<Published, StoreError> {
    let state = if record.succeeded {
        "succeeded"
    } else {
        "failed"
    };
    tx.prepare_cached(
        "UPDATE tasks SET state = ?2, attempts = attempts + ?3, exit_code = ?4, error = ?5, log_hash = ?6,
                          finished_at = ?7, duration_ms = ?8, last_run = ?9
         WHERE id = ?1",
    )?
    .execute(params![
            record.task_id,
            state,
            record.attempts,
            record.exit_code,
            record.error,
            record.log_hash,
            now(),
            record.duration_ms as i64,
            record.run_id
        ])?;
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
                    record.source.is_some()
                ])? as u64;
                let id: i64 = lookup.query_row(params![output.name, output.hash], |r| r.get(0))?;
                provenance.execute(params![record.task_id, id])?;
                ids.push(id);
            }
        }
        // A task that ran before (forced, or remaking a deleted output) no longer explains what
        // it wrote then and not now.
        let replaced = forget_other_outputs(tx, record.task_id, &ids)?;
        let superseded = match &record.source {
            Some(source) => {
                let seq = facts::next_seq(tx)?;
                facts::publish(tx, &source.name, source.keep, seq, &ids)?
            }
            None => 0,
        };
        // A map task whose input stopped being live while it ran (a source superseded it)
        // leaves history only: its outputs must not become live.
        if record.source.is_some() || input_is_live(tx, record.task_id)? {
            let newly = liveness::propagate(tx, &ids)?;
            published.newly_live = newly.len() as u64;
            published.work = schedule::tasks_for_new_live(tx, record.run_id, &newly, maps)?;
        }
        // Growing first, then shrinking: what the new facts made live stays, and what only the
        // superseded ones held up stops being live.
        if superseded + replaced > 0 {
            let recomputed = liveness::recompute(tx)?;
            let more = schedule::tasks_for_new_live(tx, record.run_id, &recomputed.raised, maps)?;
            published.work.extend(more);
        }
    }
    Ok(published)
}

/// Drop the provenance links of `task_id` to resources other than `keep`. Returns how many.
fn forget_other_outputs(conn: &Connection, task_id: i64, keep: &[i64]) -> Result<u64, StoreError> {
    let linked: Vec<i64> = conn
        .prepare_cached("SELECT resource_id FROM outputs WHERE task_id = ?1")?
        .query_map([task_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if linked.is_empty() {
        return Ok(0);
    }
    let keep: std::collections::HashSet<i64> = keep.iter().copied().collect();
    let mut forget =
        conn.prepare_cached("DELETE FROM outputs WHERE task_id = ?1 AND resource_id = ?2")?;
    let mut count = 0;
    for id in linked.iter().filter(|id| !keep.contains(id)) {
        count += forget.execute(params![task_id, id])? as u64;
    }
    Ok(count)
}

/// Whether a task's input is live; true for tasks without one input (sources, gather steps).
fn input_is_live(conn: &Connection, task_id: i64) -> Result<bool, StoreError> {
    let live: Option<bool> = conn
        .prepare_cached(
            "SELECT r.live FROM tasks t JOIN resources r ON r.id = t.input_resource_id WHERE t.id = ?1",
        )?
        .query_row([task_id], |r| r.get(0))
        .optional()?;
    Ok(live.unwrap_or(true))
}

/// What one `grit ingest` command is: one publication, superseding the names it adds unless
/// `keep_both`.
#[derive(Debug, Clone, Copy)]
pub struct Ingestion {
    pub seq: i64,
    pub keep_both: bool,
}

impl Ingestion {
    /// Start an ingestion: every file of one command shares its publication number, so files
    /// added together under one name stay live together.
    pub fn begin(conn: &Connection, keep_both: bool) -> Result<Ingestion, StoreError> {
        Ok(Ingestion {
            seq: facts::next_seq(conn)?,
            keep_both,
        })
    }
}

/// What ingesting one file did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ingested {
    /// The resource was not in the store before.
    pub new: bool,
    /// Live facts of the same name that this file superseded.
    pub superseded: u64,
}

/// Record an ingested file (already stored as an object) as a fact. Tasks for it are created by
/// the next run's backfill.
pub fn ingest(
    conn: &mut Connection,
    output: &OutputRecord,
    ingestion: Ingestion,
) -> Result<Ingested, StoreError> {
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
    let superseded = facts::ingest(&tx, ingestion.seq, &[id], ingestion.keep_both)?;
    liveness::propagate(&tx, &[id])?;
    if superseded > 0 {
        liveness::recompute(&tx)?;
    }
    tx.commit()?;
    Ok(Ingested { new, superseded })
}
