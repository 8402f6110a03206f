//! The wait list and the run records of `grit serve`, in the pipeline's own store (table
//! `serve_runs`, schema v3), so they survive a restart.
//!
//! A record goes `queued` → `running` → `succeeded` | `failed` | `cancelled` | `interrupted`.
//! Writes run on the store's writer thread (as the engine's do); reads use their own read-only
//! connections. The queue is ordered by id, with runs resumed after a crash or a stop first.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::config::QueueStrategy;
use crate::store::{StoreError, now};

/// A run's state as the API shows it.
pub const STATES: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];

/// A run's state, for the API's schema; the same names as [`STATES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// States a run never leaves.
pub fn is_final(status: &str) -> bool {
    !matches!(status, "queued" | "running")
}

/// One row of `serve_runs`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    #[serde(skip)]
    pub id: i64,
    pub pipeline: String,
    #[schema(value_type = RunStatus)]
    pub status: String,
    /// What queued it: `api`, `schedule` or `watch`.
    #[schema(example = "api")]
    pub trigger: String,
    /// The run's parameter values.
    pub params: BTreeMap<String, String>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(example = "2026-12-05T10:39:22.061Z")]
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The engine run (`grit status`'s run number) that did the work, once started.
    pub engine_run: Option<i64>,
    #[serde(skip)]
    pub first_engine_run: Option<i64>,
    /// A crash or a stop of the server interrupted it, and it was resumed.
    pub resumed: bool,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    #[serde(skip)]
    pub steps: Option<String>,
    #[serde(skip)]
    pub not_before_ms: i64,
}

impl RunRecord {
    /// The id clients use: `PIPELINE.N` (ids are per store, a server has several stores).
    pub fn public_id(&self) -> String {
        public_id(&self.pipeline, self.id)
    }
}

pub fn public_id(pipeline: &str, id: i64) -> String {
    format!("{pipeline}.{id}")
}

/// Split a public id into pipeline and row id.
pub fn parse_public_id(text: &str) -> Option<(&str, i64)> {
    let (pipeline, id) = text.rsplit_once('.')?;
    Some((pipeline, id.parse().ok().filter(|&n| n > 0)?))
}

const COLUMNS: &str = "id, pipeline, status, trigger, params, queued_at, started_at, finished_at, \
     engine_run, first_engine_run, resumed, reason, steps, not_before_ms";

fn record(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let params: String = row.get(4)?;
    Ok(RunRecord {
        id: row.get(0)?,
        pipeline: row.get(1)?,
        status: row.get(2)?,
        trigger: row.get(3)?,
        params: serde_json::from_str(&params).unwrap_or_default(),
        queued_at: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        engine_run: row.get(8)?,
        first_engine_run: row.get(9)?,
        resumed: row.get(10)?,
        reason: row.get(11)?,
        steps: row.get(12)?,
        not_before_ms: row.get(13)?,
    })
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A trigger, as the queue sees it.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub pipeline: String,
    /// `api`, `schedule` or `watch`.
    pub source: &'static str,
    /// The run's params: the pipeline's configured values, overridden by `given`.
    pub params: BTreeMap<String, String>,
    /// The params the trigger itself gave (none for a schedule or a watch): all that a trigger
    /// merged into a waiting run changes, so a default never undoes an earlier trigger's value.
    pub given: BTreeMap<String, String>,
    pub strategy: QueueStrategy,
    pub limit: usize,
    pub start_delay: Duration,
}

/// What became of a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new queued run, `position` runs ahead of it in the wait list; `replaced` are the
    /// waiting runs it cancelled (`queue_strategy = "replace"`).
    Queued {
        id: i64,
        position: usize,
        replaced: Vec<i64>,
    },
    /// Merged into a run still waiting out its `start_delay`.
    Merged { id: i64, position: usize },
    /// The wait list is full (`queue_limit`).
    Full { limit: usize },
}

/// Queue a run for `trigger`: merge it into a run still in its start delay, replace the waiting
/// runs (`replace`), or append it unless the wait list is full.
pub fn enqueue(conn: &mut Connection, trigger: &Trigger) -> Result<Enqueued, StoreError> {
    let tx = conn.transaction()?;
    let now_ms = unix_ms();
    let not_before = now_ms + trigger.start_delay.as_millis() as i64;
    if !trigger.start_delay.is_zero() {
        let waiting: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, params FROM serve_runs WHERE status = 'queued' AND not_before_ms > ?1
                 ORDER BY id DESC LIMIT 1",
                [now_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((id, params)) = waiting {
            // The later trigger's own values win, key by key.
            let mut merged: BTreeMap<String, String> =
                serde_json::from_str(&params).unwrap_or_default();
            merged.extend(trigger.given.clone());
            tx.execute(
                "UPDATE serve_runs SET not_before_ms = ?2, params = ?3 WHERE id = ?1",
                params![id, not_before, to_json(&merged)],
            )?;
            let position = position_in(&tx, id)?.unwrap_or(0);
            tx.commit()?;
            return Ok(Enqueued::Merged { id, position });
        }
    }
    let waiting = queued_count(&tx)?;
    if trigger.strategy == QueueStrategy::Append && waiting >= trigger.limit {
        return Ok(Enqueued::Full {
            limit: trigger.limit,
        });
    }
    let id = next_id(&tx)?;
    tx.execute(
        "INSERT INTO serve_runs (id, pipeline, status, trigger, params, queued_at, not_before_ms)
         VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
        params![
            id,
            trigger.pipeline,
            trigger.source,
            to_json(&trigger.params),
            now(),
            not_before
        ],
    )?;
    let mut replaced = Vec::new();
    if trigger.strategy == QueueStrategy::Replace {
        replaced = tx
            .prepare("SELECT id FROM serve_runs WHERE status = 'queued' AND id <> ?1 ORDER BY id")?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "UPDATE serve_runs SET status = 'cancelled', finished_at = ?2, reason = ?3
             WHERE status = 'queued' AND id <> ?1",
            params![id, now(), replaced_reason(&trigger.pipeline, id)],
        )?;
    }
    let position = position_in(&tx, id)?.unwrap_or(0);
    tx.commit()?;
    Ok(Enqueued::Queued {
        id,
        position,
        replaced,
    })
}

/// Why a waiting run was cancelled by the newer run `id` (`queue_strategy = "replace"`).
pub fn replaced_reason(pipeline: &str, id: i64) -> String {
    format!(
        "replaced by run {} (queue_strategy = \"replace\")",
        public_id(pipeline, id)
    )
}

/// The `meta` key that remembers the highest run id ever given.
const LAST_ID_KEY: &str = "serve_last_run_id";

/// The id of a new run: above every id this store ever gave, so that a client's `PIPELINE.N` never
/// names another run later, even after the newest record was deleted (`DELETE /runs/{id}`,
/// retention): a bare rowid would be given again.
fn next_id(tx: &Connection) -> Result<i64, StoreError> {
    let last: i64 = tx.query_row(
        "SELECT max(COALESCE((SELECT max(id) FROM serve_runs), 0),
                    COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1), 0))",
        [LAST_ID_KEY],
        |r| r.get(0),
    )?;
    let id = last + 1;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![LAST_ID_KEY, id.to_string()],
    )?;
    Ok(id)
}

fn to_json(params: &BTreeMap<String, String>) -> String {
    serde_json::to_string(params).unwrap_or_else(|_| "{}".into())
}

fn queued_count(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM serve_runs WHERE status = 'queued'",
        [],
        |r| r.get::<_, i64>(0),
    )? as usize)
}

/// How many queued runs start before run `id` (0: it is next), or `None` when it is not queued.
pub fn position_in(conn: &Connection, id: i64) -> Result<Option<usize>, StoreError> {
    let resumed: Option<bool> = conn
        .query_row(
            "SELECT resumed FROM serve_runs WHERE id = ?1 AND status = 'queued'",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(resumed) = resumed else {
        return Ok(None);
    };
    let ahead: i64 = conn.query_row(
        "SELECT count(*) FROM serve_runs WHERE status = 'queued'
           AND (resumed > ?2 OR (resumed = ?2 AND id < ?1))",
        params![id, resumed],
        |r| r.get(0),
    )?;
    Ok(Some(ahead as usize))
}

/// What the worker should do next.
#[derive(Debug)]
pub enum Claim {
    /// Run this record (now marked running).
    Run(Box<RunRecord>),
    /// The next run waits out its start delay until this time (unix ms).
    WaitUntil(i64),
    /// Nothing is queued.
    Idle,
}

/// Take the next queued run whose start delay has passed and mark it running.
pub fn claim(conn: &mut Connection) -> Result<Claim, StoreError> {
    let tx = conn.transaction()?;
    let next = tx
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM serve_runs WHERE status = 'queued'
                 ORDER BY resumed DESC, id LIMIT 1"
            ),
            [],
            record,
        )
        .optional()?;
    let Some(mut next) = next else {
        return Ok(Claim::Idle);
    };
    if next.not_before_ms > unix_ms() {
        return Ok(Claim::WaitUntil(next.not_before_ms));
    }
    let started = now();
    tx.execute(
        "UPDATE serve_runs SET status = 'running', started_at = ?2 WHERE id = ?1",
        params![next.id, started],
    )?;
    tx.commit()?;
    next.status = "running".into();
    next.started_at = Some(started);
    Ok(Claim::Run(Box::new(next)))
}

/// Remember which engine run is doing the work of record `id`.
pub fn set_engine_run(conn: &Connection, id: i64, engine_run: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE serve_runs SET engine_run = ?2, first_engine_run = COALESCE(first_engine_run, ?2)
         WHERE id = ?1",
        params![id, engine_run],
    )?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: &'static str,
    pub reason: Option<String>,
    /// Per-step counts as JSON.
    pub steps: Option<String>,
    /// Stopped by the server's shutdown: queue it again at the next start.
    pub resume: bool,
}

pub fn finish(conn: &Connection, id: i64, end: &Finish) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE serve_runs SET status = ?2, finished_at = ?3, reason = ?4, steps = COALESCE(?5, steps),
                resume = ?6
         WHERE id = ?1",
        params![id, end.status, now(), end.reason, end.steps, end.resume],
    )?;
    Ok(())
}

/// At start-up: runs a crash left `running`, and runs a stop interrupted, go back to the head of
/// the wait list, marked resumed. Returns their ids.
pub fn recover(conn: &mut Connection) -> Result<Vec<i64>, StoreError> {
    let tx = conn.transaction()?;
    let ids: Vec<i64> = tx
        .prepare(
            "SELECT id FROM serve_runs
             WHERE status = 'running' OR (status = 'interrupted' AND resume = 1) ORDER BY id",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        tx.execute(
            "UPDATE serve_runs SET status = 'queued', resumed = 1, resume = 0, finished_at = NULL,
                    reason = NULL, not_before_ms = 0
             WHERE id = ?1",
            [id],
        )?;
    }
    tx.commit()?;
    Ok(ids)
}

/// Retention (`keep_runs`, `keep_days`): delete the records of finished runs beyond the newest
/// `keep_runs` and those finished more than `keep_days` ago. Queued and running runs always stay;
/// the store's resources, tasks and logs are untouched (`grit gc` decides about data). Returns
/// how many records went.
pub fn prune(
    conn: &Connection,
    keep_runs: Option<u64>,
    keep_days: Option<u64>,
) -> Result<usize, StoreError> {
    let mut removed = 0;
    if let Some(keep) = keep_runs {
        removed += conn.execute(
            "DELETE FROM serve_runs WHERE status NOT IN ('queued', 'running') AND id NOT IN
               (SELECT id FROM serve_runs WHERE status NOT IN ('queued', 'running')
                ORDER BY id DESC LIMIT ?1)",
            [keep as i64],
        )?;
    }
    if let Some(days) = keep_days {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(Duration::from_secs(days.saturating_mul(86_400)))
            .unwrap_or(UNIX_EPOCH);
        let cutoff = humantime::format_rfc3339_millis(cutoff).to_string();
        removed += conn.execute(
            "DELETE FROM serve_runs WHERE status NOT IN ('queued', 'running') AND finished_at < ?1",
            [cutoff],
        )?;
    }
    Ok(removed)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<RunRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM serve_runs WHERE id = ?1"),
            [id],
            record,
        )
        .optional()?)
}

/// The queued runs, in the order they will start.
pub fn waiting(conn: &Connection) -> Result<Vec<RunRecord>, StoreError> {
    Ok(conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM serve_runs WHERE status = 'queued' ORDER BY resumed DESC, id"
        ))?
        .query_map([], record)?
        .collect::<Result<_, _>>()?)
}

/// Where a page of `GET /runs` starts: strictly after this key, newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub queued_at: String,
    pub pipeline: String,
    pub id: i64,
}

/// Up to `limit` records of this store, newest first, after `cursor` in the server-wide order
/// (queued_at, pipeline, id), all descending.
pub fn page(
    conn: &Connection,
    pipeline: &str,
    status: Option<&str>,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    // Rows at the cursor's time come after it when the pipeline sorts lower, or is the same
    // pipeline with a lower id.
    let (after_time, same_time_max_id) = match cursor {
        None => (None, None),
        Some(c) => {
            let same = match pipeline.cmp(c.pipeline.as_str()) {
                std::cmp::Ordering::Less => Some(i64::MAX),
                std::cmp::Ordering::Equal => Some(c.id),
                std::cmp::Ordering::Greater => Some(0),
            };
            (Some(c.queued_at.clone()), same)
        }
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM serve_runs
         WHERE (?1 IS NULL OR status = ?1)
           AND (?2 IS NULL OR queued_at < ?2 OR (queued_at = ?2 AND id < ?3))
         ORDER BY queued_at DESC, id DESC LIMIT ?4"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_map(
            params![status, after_time, same_time_max_id, limit as i64],
            record,
        )?
        .collect::<Result<_, _>>()?)
}

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelQueued {
    /// It was queued and is now cancelled.
    Cancelled,
    /// It is running: the worker must stop it.
    Running,
    /// It already ended with this status.
    Finished(String),
    NotFound,
}

pub fn cancel_queued(conn: &Connection, id: i64, reason: &str) -> Result<CancelQueued, StoreError> {
    let status: Option<String> = conn
        .query_row("SELECT status FROM serve_runs WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match status.as_deref() {
        None => CancelQueued::NotFound,
        Some("queued") => {
            conn.execute(
                "UPDATE serve_runs SET status = 'cancelled', finished_at = ?2, reason = ?3
                 WHERE id = ?1",
                params![id, now(), reason],
            )?;
            CancelQueued::Cancelled
        }
        Some("running") => CancelQueued::Running,
        Some(other) => CancelQueued::Finished(other.to_string()),
    })
}

/// Delete a run record that is not running. Returns its status before, `None` if there was none.
pub fn delete(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    let status: Option<String> = conn
        .query_row("SELECT status FROM serve_runs WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    if matches!(status.as_deref(), Some(s) if s != "running") {
        conn.execute("DELETE FROM serve_runs WHERE id = ?1", [id])?;
    }
    Ok(status)
}

/// Per-step task counts of the engine runs `first..=last` (a live run's progress).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StepCounts {
    pub name: String,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
}

pub fn live_step_counts(
    conn: &Connection,
    first: i64,
    last: i64,
) -> Result<Vec<StepCounts>, StoreError> {
    let mut by_step: BTreeMap<(i64, String), StepCounts> = BTreeMap::new();
    let mut statement = conn.prepare_cached(
        "SELECT v.position, v.name, t.state, count(*) FROM tasks t
         JOIN step_versions v ON v.id = t.step_version_id
         WHERE t.last_run BETWEEN ?1 AND ?2 OR (t.state = 'pending' AND v.current = 1)
         GROUP BY v.position, v.name, t.state",
    )?;
    let rows = statement.query_map(params![first, last], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (position, name, state, count) = row?;
        let entry = by_step
            .entry((position, name.clone()))
            .or_insert_with(|| StepCounts {
                name,
                ..StepCounts::default()
            });
        let count = count as u64;
        match state.as_str() {
            "pending" => entry.pending += count,
            "running" => entry.running += count,
            "succeeded" => entry.succeeded += count,
            _ => entry.failed += count,
        }
    }
    Ok(by_step.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn
    }

    fn trigger(strategy: QueueStrategy, limit: usize, delay_ms: u64) -> Trigger {
        Trigger {
            pipeline: "p".into(),
            source: "api",
            params: BTreeMap::new(),
            given: BTreeMap::new(),
            strategy,
            limit,
            start_delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn a_deleted_newest_run_id_is_not_given_again() {
        let mut conn = store();
        let t = trigger(QueueStrategy::Append, 10, 0);
        let Enqueued::Queued { id: first, .. } = enqueue(&mut conn, &t).unwrap() else {
            panic!("queued")
        };
        assert_eq!(delete(&conn, first).unwrap().as_deref(), Some("queued"));
        let Enqueued::Queued { id: second, .. } = enqueue(&mut conn, &t).unwrap() else {
            panic!("queued")
        };
        assert!(second > first, "{second} reuses {first}");
    }

    #[test]
    fn the_schema_states_are_the_states() {
        assert_eq!(RunStatus::ALL.map(RunStatus::as_str).as_slice(), STATES);
        for status in RunStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
    }

    #[test]
    fn append_fills_up_to_the_limit_and_replace_keeps_one() {
        let mut conn = store();
        let t = trigger(QueueStrategy::Append, 2, 0);
        assert_eq!(
            enqueue(&mut conn, &t).unwrap(),
            Enqueued::Queued {
                id: 1,
                position: 0,
                replaced: vec![]
            }
        );
        assert_eq!(
            enqueue(&mut conn, &t).unwrap(),
            Enqueued::Queued {
                id: 2,
                position: 1,
                replaced: vec![]
            }
        );
        assert_eq!(enqueue(&mut conn, &t).unwrap(), Enqueued::Full { limit: 2 });
        let Claim::Run(first) = claim(&mut conn).unwrap() else {
            panic!("expected a run")
        };
        assert_eq!(first.id, 1);
        let r = trigger(QueueStrategy::Replace, 2, 0);
        assert_eq!(
            enqueue(&mut conn, &r).unwrap(),
            Enqueued::Queued {
                id: 3,
                position: 0,
                replaced: vec![2]
            }
        );
        assert_eq!(get(&conn, 2).unwrap().unwrap().status, "cancelled");
        assert_eq!(get(&conn, 1).unwrap().unwrap().status, "running");
    }

    #[test]
    fn triggers_during_the_start_delay_merge() {
        let mut conn = store();
        let mut t = trigger(QueueStrategy::Append, 5, 3_600_000);
        t.params.insert("a".into(), "1".into());
        t.given.insert("a".into(), "1".into());
        assert!(matches!(
            enqueue(&mut conn, &t).unwrap(),
            Enqueued::Queued { id: 1, .. }
        ));
        t.params.insert("a".into(), "2".into());
        t.given.insert("a".into(), "2".into());
        assert!(matches!(
            enqueue(&mut conn, &t).unwrap(),
            Enqueued::Merged { id: 1, .. }
        ));
        assert_eq!(get(&conn, 1).unwrap().unwrap().params["a"], "2");
        assert!(matches!(claim(&mut conn).unwrap(), Claim::WaitUntil(_)));
    }

    #[test]
    fn a_crashed_run_is_queued_first_and_marked_resumed() {
        let mut conn = store();
        let t = trigger(QueueStrategy::Append, 5, 0);
        enqueue(&mut conn, &t).unwrap();
        enqueue(&mut conn, &t).unwrap();
        let Claim::Run(_) = claim(&mut conn).unwrap() else {
            panic!()
        };
        enqueue(&mut conn, &t).unwrap();
        assert_eq!(recover(&mut conn).unwrap(), vec![1]);
        assert_eq!(position_in(&conn, 1).unwrap(), Some(0));
        assert_eq!(position_in(&conn, 2).unwrap(), Some(1));
        let Claim::Run(again) = claim(&mut conn).unwrap() else {
            panic!()
        };
        assert_eq!((again.id, again.resumed), (1, true));
    }

    #[test]
    fn retention_keeps_the_newest_finished_runs_and_every_unfinished_one() {
        let mut conn = store();
        let t = trigger(QueueStrategy::Append, 10, 0);
        for _ in 0..4 {
            enqueue(&mut conn, &t).unwrap();
            let Claim::Run(run) = claim(&mut conn).unwrap() else {
                panic!()
            };
            let end = Finish {
                status: "succeeded",
                reason: None,
                steps: None,
                resume: false,
            };
            finish(&conn, run.id, &end).unwrap();
        }
        enqueue(&mut conn, &t).unwrap();
        assert_eq!(prune(&conn, Some(2), None).unwrap(), 2);
        let left: Vec<i64> = conn
            .prepare("SELECT id FROM serve_runs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, vec![3, 4, 5]);
        assert_eq!(
            prune(&conn, None, Some(1)).unwrap(),
            0,
            "all finished today"
        );
        conn.execute(
            "UPDATE serve_runs SET finished_at = '2000-01-01T00:00:00.000Z' WHERE id = 3",
            [],
        )
        .unwrap();
        assert_eq!(prune(&conn, None, Some(1)).unwrap(), 1);
    }

    #[test]
    fn public_ids_round_trip() {
        assert_eq!(parse_public_id("etl-2.17"), Some(("etl-2", 17)));
        assert_eq!(parse_public_id("etl"), None);
        assert_eq!(parse_public_id("etl.0"), None);
        assert_eq!(parse_public_id("etl.x"), None);
    }
}
