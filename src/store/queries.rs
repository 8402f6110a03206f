//! Read-side queries for the commands that look at a store (`status`, `resources`, `cat`, `log`).
//! Listings stream rows to a callback so that memory does not grow with the store.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// One current step, as `grit status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepStatus {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub live_outputs: u64,
}

pub fn status(conn: &Connection) -> Result<Vec<StepStatus>, StoreError> {
    let mut versions = conn.prepare(
        "SELECT id, name, hash, kind FROM step_versions WHERE current = 1 ORDER BY position",
    )?;
    let rows = versions.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    // A non-once source has one task per run: only the latest one describes its state now.
    let mut counts = conn.prepare(
        "SELECT state, COUNT(*) FROM tasks
         WHERE step_version_id = ?1
           AND (source_run IS NULL OR source_run = 0
                OR source_run = (SELECT MAX(source_run) FROM tasks WHERE step_version_id = ?1))
         GROUP BY state",
    )?;
    // Driven from the step's few versions through its tasks to their outputs (CROSS JOIN fixes
    // that order): left to itself SQLite started from every live resource, once per step, which
    // took 0.75 s at 100,000 resources; this way the cost is the step's own outputs.
    let mut live = conn.prepare(
        "SELECT COUNT(DISTINCT o.resource_id) FROM step_versions v
           CROSS JOIN tasks t ON t.step_version_id = v.id
           CROSS JOIN outputs o ON o.task_id = t.id
           CROSS JOIN resources r ON r.id = o.resource_id
         WHERE v.name = ?1 AND r.live = 1",
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, hash, kind) = row?;
        let mut status = StepStatus {
            live_outputs: live.query_row([&name], |r| r.get::<_, i64>(0))? as u64,
            name,
            version: super::short_hash(&hash).to_string(),
            kind,
            pending: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
        };
        let states = counts.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        for state in states {
            let (state, n) = state?;
            match state.as_str() {
                "pending" => status.pending = n,
                "running" => status.running = n,
                "succeeded" => status.succeeded = n,
                "failed" => status.failed = n,
                _ => {}
            }
        }
        out.push(status);
    }
    Ok(out)
}

/// One resource, as `grit resources` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ResourceRow {
    pub name: String,
    pub hash: String,
    pub size: u64,
    /// The step that first produced it (else the latest that still did); `None` for ingested
    /// files.
    pub step: Option<String>,
    pub live: bool,
    pub created_at: String,
}

/// Stream resources (live only unless `all`), optionally of one name, ordered by name then age.
pub fn resources(
    conn: &Connection,
    name: Option<&str>,
    all: bool,
    each: impl FnMut(ResourceRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    stream_resources(conn, name, false, all, each)
}

/// [`resources`] whose name is `pattern` or matches it as a glob (`report-*.csv`).
pub fn resources_matching(
    conn: &Connection,
    pattern: &str,
    all: bool,
    each: impl FnMut(ResourceRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    stream_resources(conn, Some(pattern), true, all, each)
}

fn stream_resources(
    conn: &Connection,
    name: Option<&str>,
    glob: bool,
    all: bool,
    mut each: impl FnMut(ResourceRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(&format!(
        "{RESOURCE_SELECT}
         WHERE (?1 IS NULL OR r.name = ?1 OR (?3 AND r.name GLOB ?1)) AND (?2 OR r.live = 1)
         ORDER BY r.name, r.id"
    ))?;
    let mut rows = stmt.query(params![name, all, glob])?;
    while let Some(row) = rows.next()? {
        each(resource_row(row)?)?;
    }
    Ok(())
}

/// The columns of a [`ResourceRow`], from `resources r`: the first producer, else (when `delete`
/// or `prune` removed that task) the latest one left: a derived resource is never shown as
/// ingested while a step explains it.
const RESOURCE_SELECT: &str = "SELECT r.name, r.hash, r.size,
        COALESCE(v.name, (SELECT pv.name FROM outputs o
                            JOIN tasks pt ON pt.id = o.task_id
                            JOIN step_versions pv ON pv.id = pt.step_version_id
                          WHERE o.resource_id = r.id ORDER BY pt.id DESC LIMIT 1)),
        r.live, r.created_at, r.id FROM resources r
   LEFT JOIN tasks t ON t.id = r.task_id
   LEFT JOIN step_versions v ON v.id = t.step_version_id";

fn resource_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        name: row.get(0)?,
        hash: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        step: row.get(3)?,
        live: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Which resources a page of [`resources_page`] lists.
#[derive(Debug, Clone, Default)]
pub struct ResourceFilter {
    /// Names starting with this, or matching it as a glob when it has `*`, `?` or `[`.
    pub name: Option<String>,
    /// Every resource the store holds (newest first), not only the live ones (by name).
    pub all: bool,
}

/// Where a page of [`resources_page`] starts: strictly after this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceCursor {
    pub name: String,
    pub id: i64,
}

/// Up to `limit` resources after `after`, with the cursor of the next page when there is one:
/// live resources by name, or with `all` every resource newest first. Keyed on indexes, so a
/// page costs the same at any depth of a large store.
pub fn resources_page(
    conn: &Connection,
    filter: &ResourceFilter,
    after: Option<&ResourceCursor>,
    limit: usize,
) -> Result<(Vec<ResourceRow>, Option<ResourceCursor>), StoreError> {
    let pattern = filter.name.as_deref().map(|n| {
        if n.contains(['*', '?', '[']) {
            n.to_string()
        } else {
            // A prefix; GLOB's own characters cannot occur in it (checked just above).
            format!("{n}*")
        }
    });
    let order = if filter.all {
        "AND (?2 IS NULL OR r.id < ?3) ORDER BY r.id DESC"
    } else {
        "AND r.live = 1 AND (?2 IS NULL OR r.name > ?2 OR (r.name = ?2 AND r.id > ?3))
         ORDER BY r.name, r.id"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "{RESOURCE_SELECT} WHERE (?1 IS NULL OR r.name GLOB ?1) {order} LIMIT ?4"
    ))?;
    let mut rows = stmt.query(params![
        pattern,
        after.map(|c| c.name.as_str()),
        after.map(|c| c.id),
        limit as i64 + 1
    ])?;
    let mut page = Vec::with_capacity(limit);
    let mut next = None;
    let mut last_id = 0i64;
    while let Some(row) = rows.next()? {
        if page.len() == limit {
            let last: &ResourceRow = &page[limit - 1];
            next = Some(ResourceCursor {
                name: last.name.clone(),
                id: last_id,
            });
            break;
        }
        last_id = row.get(6)?;
        page.push(resource_row(row)?);
    }
    Ok((page, next))
}

/// One resource a task wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskOutput {
    pub name: String,
    pub hash: String,
    pub size: u64,
}

/// The first `limit` resources task `id` wrote, by name; and how many it wrote in all (a source
/// can write thousands).
pub fn task_outputs(
    conn: &Connection,
    id: i64,
    limit: usize,
) -> Result<(Vec<TaskOutput>, u64), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.name, r.hash, r.size FROM outputs o JOIN resources r ON r.id = o.resource_id
         WHERE o.task_id = ?1 ORDER BY r.name, r.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![id, limit as i64], |r| {
        Ok(TaskOutput {
            name: r.get(0)?,
            hash: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
        })
    })?;
    let first = rows.collect::<Result<_, _>>()?;
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM outputs WHERE task_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    Ok((first, total as u64))
}

/// Resolve a hash or a unique prefix of at least 8 hex characters to a full object hash known to
/// the store (a resource's content or a task log).
pub fn resolve_hash(conn: &Connection, prefix: &str) -> Result<String, StoreError> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < 8 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::NotFound(format!(
            "'{prefix}' is not a hash prefix\n  help: give at least 8 hex characters of a hash shown by `grit resources`"
        )));
    }
    let pattern = format!("{prefix}*");
    let mut stmt = conn.prepare(
        "SELECT hash FROM resources WHERE hash GLOB ?1
         UNION SELECT log_hash FROM tasks WHERE log_hash GLOB ?1 LIMIT 2",
    )?;
    let found: Vec<String> = stmt
        .query_map([&pattern], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StoreError::NotFound(format!(
            "no object with hash {prefix}…\n  help: list hashes with `grit resources --all`"
        ))),
        _ => Err(StoreError::NotFound(format!(
            "hash prefix {prefix} is ambiguous\n  help: give more characters of the hash"
        ))),
    }
}

/// How the store knows an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// A name for messages: `resource <name>`, `the log of task <id>`, or `an object`.
    pub what: String,
    /// The name of the first resource with this content, if any has it.
    pub resource: Option<String>,
    /// The recorded size (task logs have none).
    pub size: Option<u64>,
}

/// How the store knows the object `hash`: a resource's content, or the log of a task.
pub fn object_identity(conn: &Connection, hash: &str) -> Result<ObjectIdentity, StoreError> {
    let resource = conn
        .query_row(
            "SELECT name, size FROM resources WHERE hash = ?1 ORDER BY id LIMIT 1",
            [hash],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    if let Some((name, size)) = resource {
        return Ok(ObjectIdentity {
            what: format!("resource {name}"),
            resource: Some(name),
            size: Some(size as u64),
        });
    }
    let task: Option<i64> = conn
        .query_row(
            "SELECT id FROM tasks WHERE log_hash = ?1 ORDER BY id LIMIT 1",
            [hash],
            |r| r.get(0),
        )
        .optional()?;
    Ok(ObjectIdentity {
        what: task
            .map(|id| format!("the log of task {id}"))
            .unwrap_or_else(|| "an object".into()),
        resource: None,
        size: None,
    })
}

/// Everything stored about one task.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TaskInfo {
    pub id: i64,
    pub step: String,
    pub version: String,
    pub state: String,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub log_hash: Option<String>,
    pub input_name: Option<String>,
    pub input_hash: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Why the task runs, or ran: what the run that decided to run it recorded, in the dry run's
    /// words (`new input`, `step changed (new version)`, `failed before (attempt 2)`,
    /// `forced with --force-step`, ...); `pending from an earlier run (run N): …` when an earlier
    /// run decided it and ended before running it; `not recorded (run before grit recorded
    /// reasons)` for tasks from before grit recorded them.
    #[schema(example = "step changed (new version)")]
    pub reason: String,
    /// The Slurm job that runs the task now, or last ran it; absent for tasks that never ran
    /// on a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<TaskJob>,
}

/// The Slurm job of a task that ran on a cluster (kept in the store's `slurm_jobs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TaskJob {
    /// As Slurm names it: `123_4` is element 4 of array job 123.
    #[schema(example = "123_4")]
    pub job_id: String,
    /// While the task is on the cluster, the job's state as Slurm gives it (`PENDING`,
    /// `RUNNING`, ...; `ENDED` once it left the queue); afterwards the task's end there:
    /// `COMPLETED` or `FAILED` (its result came back), Slurm's reason (e.g. `TIMEOUT`), or
    /// `CANCELLED`.
    #[schema(example = "RUNNING")]
    pub state: String,
    /// The task is on the cluster now.
    pub on_cluster: bool,
    /// When the state was last seen to change.
    pub updated_at: String,
}

impl TaskJob {
    /// The job of task `id`, if it ever ran on Slurm.
    pub fn of(conn: &Connection, id: i64) -> Option<TaskJob> {
        super::slurm_jobs::of_task(conn, id).map(|row| TaskJob {
            on_cluster: row.ended_at.is_none(),
            job_id: row.job_id,
            state: row.state,
            updated_at: row.updated_at,
        })
    }
}

const TASK_COLUMNS: &str =
    "t.id, v.name, v.hash, t.state, t.attempts, t.exit_code, t.error, t.log_hash,
     r.name, r.hash, t.started_at, t.finished_at, t.duration_ms, t.reason, t.reason_run,
     t.last_run
     FROM tasks t JOIN step_versions v ON v.id = t.step_version_id
     LEFT JOIN resources r ON r.id = t.input_resource_id";

fn task_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskInfo> {
    let hash: String = row.get(2)?;
    let state: String = row.get(3)?;
    let reason: Option<String> = row.get(13)?;
    let last_run: Option<i64> = row.get(15)?;
    Ok(TaskInfo {
        id: row.get(0)?,
        step: row.get(1)?,
        version: super::short_hash(&hash).to_string(),
        reason: super::decide::recorded(reason.as_deref(), row.get(14)?, last_run, &state),
        state,
        attempts: row.get(4)?,
        exit_code: row.get(5)?,
        error: row.get(6)?,
        log_hash: row.get(7)?,
        input_name: row.get(8)?,
        input_hash: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
        duration_ms: row.get(12)?,
        slurm: None,
    })
}

pub fn task(conn: &Connection, id: i64) -> Result<TaskInfo, StoreError> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} WHERE t.id = ?1"),
        [id],
        task_row,
    )
    .optional()?
    .map(|info| TaskInfo {
        slurm: TaskJob::of(conn, info.id),
        ..info
    })
    .ok_or_else(|| {
        StoreError::NotFound(format!(
            "no task {id}\n  help: `grit log --step NAME` lists a step's tasks"
        ))
    })
}

/// Stream tasks of current step versions, optionally of one step and only failed ones.
pub fn tasks(
    conn: &Connection,
    step: Option<&str>,
    failed_only: bool,
    mut each: impl FnMut(TaskInfo) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TASK_COLUMNS} WHERE v.current = 1 AND (?1 IS NULL OR v.name = ?1)
           AND (NOT ?2 OR t.state = 'failed') ORDER BY t.id"
    ))?;
    let mut rows = stmt.query(params![step, failed_only])?;
    while let Some(row) = rows.next()? {
        each(task_row(row)?)?;
    }
    Ok(())
}

/// Tasks last started by the engine runs `first..=last` (a served run's tasks), in id order.
pub fn tasks_of_runs(
    conn: &Connection,
    first: i64,
    last: i64,
) -> Result<Vec<TaskInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} WHERE t.last_run BETWEEN ?1 AND ?2 ORDER BY t.id"
    ))?;
    let rows = stmt.query_map(params![first, last], task_row)?;
    let mut tasks: Vec<TaskInfo> = rows.collect::<Result<_, _>>()?;
    for task in &mut tasks {
        task.slurm = TaskJob::of(conn, task.id);
    }
    Ok(tasks)
}

/// The run that last started task `id`, and its state: where its live log is while it runs.
pub fn task_progress(
    conn: &Connection,
    id: i64,
) -> Result<Option<(Option<i64>, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT last_run, state FROM tasks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// A lookup "does the store hold a resource whose name matches this glob?", for manifest
/// warnings. An empty or missing store knows no names.
pub fn resource_name_matcher(root: &std::path::Path) -> Result<impl Fn(&str) -> bool, StoreError> {
    let conn = match super::open_read(root) {
        Ok((_, conn)) => Some(conn),
        Err(StoreError::Missing(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(move |pattern: &str| {
        conn.as_ref()
            .is_some_and(|c| has_resource_matching(c, pattern))
    })
}

/// The names of the resources that tasks of run `run` wrote (sorted, each once).
pub fn names_written_in_run(conn: &Connection, run: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT r.name FROM tasks t
           JOIN outputs o ON o.task_id = t.id
           JOIN resources r ON r.id = o.resource_id
          WHERE t.last_run = ?1 AND t.state = 'succeeded'
          ORDER BY r.name",
    )?;
    let names = stmt
        .query_map([run], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

/// Whether the store holds any resource (live or not) whose name matches the glob `pattern`.
pub fn has_resource_matching(conn: &Connection, pattern: &str) -> bool {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM resources WHERE name GLOB ?1)",
        [pattern],
        |r| r.get(0),
    )
    .unwrap_or(false)
}
