//! The SQLite schema and its forward migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`, in one transaction
//! with the new `user_version`. Migrations only ever move forward; a store written by a newer
//! grit (higher version) is refused rather than guessed at.

use rusqlite::Connection;

use super::{StoreError, facts};

/// Code that rewrites data where SQL alone cannot, inside the migration's transaction.
pub type DataMigration = fn(&Connection) -> Result<(), StoreError>;

/// One schema step: SQL, then optionally a [`DataMigration`] (both inside one transaction).
pub struct Migration {
    pub sql: &'static str,
    pub data: Option<DataMigration>,
}

/// Forward migrations; index `i` upgrades `user_version` `i` to `i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    // v1: the whole model of DESIGN §1.
    Migration {
        data: None,
        sql: r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- One row per `grit run`; the manifest text lets commands without -m know the current steps.
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY,
        started_at    TEXT NOT NULL,
        finished_at   TEXT,
        pid           INTEGER NOT NULL,
        manifest_path TEXT NOT NULL,
        manifest_text TEXT NOT NULL,
        pipeline      TEXT,
        status        TEXT NOT NULL DEFAULT 'running', -- running | ok | failed | interrupted
        executed      INTEGER NOT NULL DEFAULT 0,
        succeeded     INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        resources_new INTEGER NOT NULL DEFAULT 0
    );
    -- A step version is identified by (name, hash of its canonical definition).
    CREATE TABLE step_versions (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        hash        TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('source', 'map', 'gather')),
        inputs      TEXT NOT NULL, -- JSON array of input names and globs
        definition  TEXT NOT NULL,
        current     INTEGER NOT NULL DEFAULT 0,
        position    INTEGER NOT NULL DEFAULT 0,
        created_run INTEGER,
        UNIQUE (name, hash)
    );
    -- A resource is (name, content hash), stored once. `fact` marks source outputs and ingested
    -- files; `live` is maintained by store::liveness.
    CREATE TABLE resources (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        task_id    INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
        run_id     INTEGER,
        created_at TEXT NOT NULL,
        fact       INTEGER NOT NULL DEFAULT 0,
        live       INTEGER NOT NULL DEFAULT 0,
        UNIQUE (name, hash)
    );
    CREATE INDEX resources_live_name ON resources (live, name);
    CREATE INDEX resources_hash ON resources (hash);
    -- A task is one execution key: (version, input resource), (version, input set) for gather
    -- steps, or (version, run) for sources (run 0 for `once` sources).
    CREATE TABLE tasks (
        id                INTEGER PRIMARY KEY,
        step_version_id   INTEGER NOT NULL REFERENCES step_versions (id),
        input_resource_id INTEGER REFERENCES resources (id),
        input_set         TEXT,
        source_run        INTEGER,
        state             TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
        attempts          INTEGER NOT NULL DEFAULT 0,
        exit_code         INTEGER,
        error             TEXT,
        log_hash          TEXT,
        created_run       INTEGER,
        last_run          INTEGER,
        started_at        TEXT,
        finished_at       TEXT,
        duration_ms       INTEGER
    );
    CREATE UNIQUE INDEX tasks_map ON tasks (step_version_id, input_resource_id)
        WHERE input_resource_id IS NOT NULL;
    CREATE UNIQUE INDEX tasks_gather ON tasks (step_version_id, input_set)
        WHERE input_set IS NOT NULL;
    CREATE UNIQUE INDEX tasks_source ON tasks (step_version_id, source_run)
        WHERE source_run IS NOT NULL;
    CREATE INDEX tasks_queue ON tasks (step_version_id, state, id);
    -- Crash recovery looks for tasks left running; few ever are.
    CREATE INDEX tasks_running ON tasks (id) WHERE state = 'running';
    CREATE INDEX tasks_input ON tasks (input_resource_id);
    CREATE INDEX tasks_log ON tasks (log_hash);
    -- Provenance: which task produced which resource (a resource may have several producers).
    CREATE TABLE outputs (
        task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        resource_id INTEGER NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
        PRIMARY KEY (task_id, resource_id)
    ) WITHOUT ROWID;
    CREATE INDEX outputs_resource ON outputs (resource_id);
    -- The input set of a gather task.
    CREATE TABLE gather_inputs (
        task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        resource_id INTEGER NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
        PRIMARY KEY (task_id, resource_id)
    ) WITHOUT ROWID;
    CREATE INDEX gather_inputs_resource ON gather_inputs (resource_id);
    "#,
    },
    // v2: a source's new output replaces its old one (DESIGN §2.3). Claims say which source
    // published which resource, in which publication, and whether that claim is still live;
    // liveness walks start from the resources with a live claim (store::facts). And a gather does
    // not publish from a partial set: a held gather keeps its previous output live.
    Migration {
        data: Some(facts::migrate_v2),
        sql: r#"
    CREATE TABLE fact_claims (
        source      TEXT NOT NULL, -- the source step's name; '' for `grit ingest`
        resource_id INTEGER NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
        seq         INTEGER NOT NULL, -- the publication that last made this claim
        live        INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (source, resource_id)
    ) WITHOUT ROWID;
    CREATE INDEX fact_claims_resource ON fact_claims (resource_id);
    CREATE INDEX fact_claims_seq ON fact_claims (seq);
    -- The `keep` rule each source's claims were last derived with (absent: "latest").
    CREATE TABLE source_keep (
        source TEXT PRIMARY KEY,
        keep   TEXT NOT NULL CHECK (keep IN ('latest', 'run', 'all'))
    );
    -- A gather step held back because a task upstream of it failed: the task whose outputs stay
    -- live instead of the outputs for the current (partial) input set (store::liveness).
    CREATE TABLE gather_holds (
        step_version_id INTEGER PRIMARY KEY REFERENCES step_versions (id) ON DELETE CASCADE,
        task_id         INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE
    );
    "#,
    },
    // v3: the run parameters of each run (issue 12): a JSON object of every declared parameter's
    // value; NULL for runs recorded before parameters existed.
    Migration {
        data: None,
        sql: r#"
    ALTER TABLE runs ADD COLUMN params TEXT;
    "#,
    },
    // v4: `grit serve` (issue 12). The wait list and the record of every run the server was asked
    // for, so a restarted server still has its queue and resumes a run a crash interrupted
    // (serve::queue). `engine_run` points at the `runs` row of the engine run that did the work.
    Migration {
        data: None,
        sql: r#"
    CREATE TABLE serve_runs (
        id               INTEGER PRIMARY KEY,
        pipeline         TEXT NOT NULL,
        status           TEXT NOT NULL CHECK (status IN
                             ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
        trigger          TEXT NOT NULL,              -- api | schedule | watch
        params           TEXT NOT NULL DEFAULT '{}', -- JSON object of parameter values
        queued_at        TEXT NOT NULL,
        not_before_ms    INTEGER NOT NULL,           -- start_delay: the earliest start (unix ms)
        started_at       TEXT,
        finished_at      TEXT,
        first_engine_run INTEGER,                    -- a resumed run spans several engine runs
        engine_run       INTEGER,
        resumed          INTEGER NOT NULL DEFAULT 0, -- a crash or a stop interrupted it; it resumed
        resume           INTEGER NOT NULL DEFAULT 0, -- stopped with the server: resume at next start
        reason           TEXT,                       -- why it failed or was cancelled
        steps            TEXT                        -- JSON per-step counts, once finished
    );
    CREATE INDEX serve_runs_queue ON serve_runs (status, id);
    CREATE INDEX serve_runs_recent ON serve_runs (queued_at, id);
    -- When each `schedule` entry of a served pipeline last fired (serve::schedule).
    CREATE TABLE serve_schedule (
        pipeline     TEXT NOT NULL,
        spec         TEXT NOT NULL,
        last_fire_ms INTEGER NOT NULL,
        PRIMARY KEY (pipeline, spec)
    ) WITHOUT ROWID;
    "#,
    },
    Migration {
        data: None,
        sql: r#"
    -- Tasks handed to a Slurm cluster and not yet published (executor::slurm): a `grit run`
    -- after a crash adopts the jobs still running instead of starting the tasks again, and
    -- `grit status` shows each task's job and its state.
    CREATE TABLE slurm_jobs (
        task_id    INTEGER PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
        run_id     INTEGER NOT NULL,
        job_id     TEXT NOT NULL,  -- as squeue names it: `123` or `123_4` (an array element)
        work       TEXT NOT NULL,  -- the task's directory under <db>/slurm/work
        step       TEXT NOT NULL,
        state      TEXT NOT NULL,  -- Slurm's job state: PENDING, RUNNING, ...
        updated_at TEXT NOT NULL
    );
    "#,
    },
    // v6: a task's row outlives its result, as the record of the Slurm job that last ran it (the
    // server's task view shows it); `ended_at` is NULL while the task is on the cluster, set once
    // the submitting grit took its result or gave it up. Only rows without it are adopted.
    Migration {
        data: None,
        sql: r#"
    ALTER TABLE slurm_jobs ADD COLUMN ended_at TEXT;
    CREATE INDEX slurm_jobs_active ON slurm_jobs (task_id) WHERE ended_at IS NULL;
    "#,
    },
    // v7 (issue 14): why each task runs, recorded when a run decides to run it, and a counter
    // that changes exactly when the data the step read models read changes.
    //
    // `reason` is the decision in the dry run's words (`store::decide::Why::text`, with the
    // attempt or the interrupted run where it applies); `reason_run` is the run that decided it
    // (NULL: a cancelled run's task, for whichever run comes next). Rows written before this
    // version have neither. See `store::decide::RecordedReason`.
    //
    // `dataflow_generation` is bumped by the triggers below, in the writer's own transaction,
    // whoever writes (grit, or sqlite3 beside it): on every row inserted into or deleted from
    // `step_versions`, `tasks`, `resources`, `outputs` and `gather_inputs`, and on every update
    // that changes a column the step models read (`store::read_cache`). Other tables (runs, the
    // server's records) and other columns (a task's log, times, reason) leave it alone.
    Migration {
        data: None,
        sql: r#"
    ALTER TABLE tasks ADD COLUMN reason TEXT;
    ALTER TABLE tasks ADD COLUMN reason_run INTEGER;
    CREATE TABLE dataflow_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n  INTEGER NOT NULL
    );
    INSERT INTO dataflow_generation (id, n) VALUES (1, 0);
    CREATE TRIGGER step_versions_insert_generation AFTER INSERT ON step_versions
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER step_versions_delete_generation AFTER DELETE ON step_versions
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER step_versions_update_generation
        AFTER UPDATE OF id, name, hash, kind, inputs, current, position ON step_versions
        WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name OR OLD.hash IS NOT NEW.hash
          OR OLD.kind IS NOT NEW.kind OR OLD.inputs IS NOT NEW.inputs
          OR OLD.current IS NOT NEW.current OR OLD.position IS NOT NEW.position
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER tasks_insert_generation AFTER INSERT ON tasks
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER tasks_delete_generation AFTER DELETE ON tasks
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER tasks_update_generation
        AFTER UPDATE OF id, step_version_id, input_resource_id, input_set, source_run, state ON tasks
        WHEN OLD.id IS NOT NEW.id OR OLD.step_version_id IS NOT NEW.step_version_id
          OR OLD.input_resource_id IS NOT NEW.input_resource_id
          OR OLD.input_set IS NOT NEW.input_set OR OLD.source_run IS NOT NEW.source_run
          OR OLD.state IS NOT NEW.state
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER resources_insert_generation AFTER INSERT ON resources
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER resources_delete_generation AFTER DELETE ON resources
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER resources_update_generation
        AFTER UPDATE OF id, name, live ON resources
        WHEN OLD.id IS NOT NEW.id OR OLD.name IS NOT NEW.name OR OLD.live IS NOT NEW.live
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER outputs_insert_generation AFTER INSERT ON outputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER outputs_delete_generation AFTER DELETE ON outputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER outputs_update_generation AFTER UPDATE ON outputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER gather_inputs_insert_generation AFTER INSERT ON gather_inputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER gather_inputs_delete_generation AFTER DELETE ON gather_inputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    CREATE TRIGGER gather_inputs_update_generation AFTER UPDATE ON gather_inputs
        BEGIN UPDATE dataflow_generation SET n = n + 1 WHERE id = 1; END;
    "#,
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database up to [`SCHEMA_VERSION`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql)?;
        if let Some(data) = migration.data {
            data(&tx)?;
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.execute("INSERT INTO meta VALUES ('k', 'v')", [])
            .unwrap();
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
