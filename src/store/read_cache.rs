//! A value computed from the store's dataflow, kept until that dataflow changes.
//!
//! Some read models (the step graph's flows, for one) cost time in proportion to the whole store,
//! and a page that shows them is asked for far more often than the store changes. A
//! [`ReadCache`] keeps one such value together with the store's *dataflow generation* of the
//! snapshot it was computed from: a counter (`dataflow_generation`, schema v7) that SQLite
//! triggers bump in the writer's own transaction whenever a row of `step_versions`, `tasks`,
//! `resources`, `outputs` or `gather_inputs` is inserted or deleted, or changes in a column the
//! step models read. Triggers run whoever writes (grit, or sqlite3 beside it), so a value is served
//! again only while the data it was computed from is as it was; a commit elsewhere (the server's
//! run records, a task's log or times) keeps it. Time plays no part.
//!
//! (It was keyed on `PRAGMA data_version` before, which changes with any commit at all: each
//! change to the server's own run records made the next view of the Pipeline page compute its
//! models again, 78–155 ms at 100,000 resources.)
//!
//! The generation is read as the first statement of a read transaction, and the value is
//! computed inside that same transaction, so both describe one snapshot. A value must read only
//! what the generation guards.
//!
//! While a store keeps changing (a run publishing), a caller that accepts the last value computed
//! can take it at once ([`ReadCache::latest`]) and leave the new computation to
//! [`ReadCache::refresh_if_idle`] on another thread: one computation at a time, never one per
//! caller.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::StoreError;

/// One cached value of type `T`, the generation it was computed at, and the connection it reads.
pub struct ReadCache<T> {
    slot: Mutex<Option<Slot<T>>>,
    /// The last value computed, readable while `slot` is held by a computation.
    latest: Mutex<Option<Arc<T>>>,
}

struct Slot<T> {
    /// Read-only, used by this cache alone (a read transaction at a time).
    conn: Connection,
    cached: Option<(i64, Arc<T>)>,
}

impl<T> Default for ReadCache<T> {
    fn default() -> Self {
        ReadCache {
            slot: Mutex::new(None),
            latest: Mutex::new(None),
        }
    }
}

impl<T> ReadCache<T> {
    /// The value for the store as it is now: the kept one when the dataflow did not change since
    /// it was computed, else `compute`'s (then kept). `open` gives the cache its read-only
    /// connection on first use, and again after SQLite failed on the previous one. Callers
    /// wait for one another, so a changed store is read once, not once per caller.
    pub fn get(
        &self,
        open: impl FnOnce() -> Result<Connection, StoreError>,
        compute: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let guard = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        self.read_holding(guard, open, compute)
    }

    /// The last value computed, whatever changed since (`None` before the first).
    pub fn latest(&self) -> Option<Arc<T>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bring the value up to date as [`get`](Self::get) does, unless another caller is doing
    /// so right now: then return at once (`None`), since that caller's value will be as new.
    pub fn refresh_if_idle(
        &self,
        open: impl FnOnce() -> Result<Connection, StoreError>,
        compute: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Option<Result<Arc<T>, StoreError>> {
        let guard = match self.slot.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.read_holding(guard, open, compute))
    }

    fn read_holding(
        &self,
        mut guard: std::sync::MutexGuard<'_, Option<Slot<T>>>,
        open: impl FnOnce() -> Result<Connection, StoreError>,
        compute: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        let slot = match &mut *guard {
            Some(slot) => slot,
            None => guard.insert(Slot {
                conn: open()?,
                cached: None,
            }),
        };
        let result = slot.read(compute);
        match &result {
            Ok(value) => {
                *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(value.clone())
            }
            // A connection SQLite failed on is not trusted again, nor what was read through it.
            Err(StoreError::Sqlite(_)) => *guard = None,
            Err(_) => {}
        }
        result
    }
}

/// The store's dataflow generation (see the module doc): equal on two reads exactly when no row
/// the step models read changed in between.
pub fn dataflow_generation(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT n FROM dataflow_generation WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

impl<T> Slot<T> {
    fn read(
        &mut self,
        compute: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        // Deferred: the query below is the statement that starts the read transaction, so the
        // generation it returns is that of the snapshot `compute` then reads.
        let snapshot = self.conn.unchecked_transaction()?;
        let version = dataflow_generation(&snapshot)?;
        if let Some((seen, value)) = &self.cached
            && *seen == version
        {
            return Ok(value.clone());
        }
        let value = Arc::new(compute(&snapshot)?);
        drop(snapshot); // ends the read transaction (it wrote nothing)
        self.cached = Some((version, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OpenFlags;
    use std::cell::Cell;

    /// A store with the real schema (its triggers) and one task of one step on one resource.
    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO step_versions (id, name, hash, kind, inputs, definition, current)
                 VALUES (1, 'copy', 'h', 'map', '[\"*\"]', '', 1);
             INSERT INTO resources (id, name, hash, size, created_at, live)
                 VALUES (1, 'a', 'x', 1, 'now', 1);
             INSERT INTO tasks (id, step_version_id, input_resource_id, state)
                 VALUES (1, 1, 1, 'pending');
             INSERT INTO serve_runs (pipeline, status, trigger, queued_at, not_before_ms)
                 VALUES ('p', 'queued', 'api', 'now', 0);",
        )
        .unwrap();
        (dir, path)
    }

    fn reader(path: &std::path::Path) -> Result<Connection, StoreError> {
        Ok(Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }

    /// A stand-in for the step models: tasks by state.
    fn done(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row(
            "SELECT count(*) FROM tasks WHERE state = 'succeeded'",
            [],
            |r| r.get(0),
        )?)
    }

    #[test]
    fn an_unrelated_commit_keeps_the_value_and_a_task_state_change_computes_it_again() {
        let (_dir, path) = store();
        let writer = Connection::open(&path).unwrap();
        let cache = ReadCache::default();
        let computed = Cell::new(0);
        let get = || {
            *cache
                .get(
                    || reader(&path),
                    |c| {
                        computed.set(computed.get() + 1);
                        done(c)
                    },
                )
                .unwrap()
        };
        assert_eq!(get(), 0);
        assert_eq!(get(), 0);
        assert_eq!(computed.get(), 1, "nothing changed: kept");

        // Commits that change nothing the models read: the server's run records, a task's log,
        // times and reason, a run row. Each is a real commit (`PRAGMA data_version` moves).
        writer
            .execute("UPDATE serve_runs SET reason = 'changed' WHERE id = 1", [])
            .unwrap();
        writer
            .execute(
                "UPDATE tasks SET log_hash = 'l', started_at = 'now', reason = 'new input',
                 attempts = attempts + 1 WHERE id = 1",
                [],
            )
            .unwrap();
        writer
            .execute(
                "INSERT INTO runs (started_at, pid, manifest_path, manifest_text) VALUES ('now', 1, '', '')",
                [],
            )
            .unwrap();
        // An update that writes a read column with the value it had.
        writer
            .execute("UPDATE tasks SET state = state WHERE id = 1", [])
            .unwrap();
        assert_eq!(get(), 0);
        assert_eq!(computed.get(), 1, "unrelated commits keep the value");

        writer
            .execute("UPDATE tasks SET state = 'succeeded' WHERE id = 1", [])
            .unwrap();
        assert_eq!(get(), 1, "a task's new state makes the next read compute");
        assert_eq!(get(), 1);
        assert_eq!(computed.get(), 2);

        // A rolled-back change does not count; each guarded table's rows do.
        writer
            .execute_batch("BEGIN; UPDATE tasks SET state = 'failed'; ROLLBACK;")
            .unwrap();
        assert_eq!(get(), 1);
        assert_eq!(computed.get(), 2, "nothing was committed");
        let changes = [
            "UPDATE resources SET live = 0 WHERE id = 1",
            "INSERT INTO resources (id, name, hash, size, created_at) VALUES (2, 'b', 'y', 1, 'now')",
            "INSERT INTO outputs (task_id, resource_id) VALUES (1, 2)",
            "INSERT INTO gather_inputs (task_id, resource_id) VALUES (1, 2)",
            "UPDATE step_versions SET current = 0 WHERE id = 1",
            "DELETE FROM outputs",
            "DELETE FROM tasks WHERE id = 1",
        ];
        for (i, change) in changes.into_iter().enumerate() {
            writer.execute(change, []).unwrap();
            get();
            assert_eq!(computed.get(), 3 + i, "{change}");
        }
    }

    #[test]
    fn the_generation_and_the_value_come_from_one_snapshot() {
        // What `Slot::read` relies on: once the first query has started the read transaction,
        // a commit by another connection is invisible until that transaction ends.
        let (_dir, path) = store();
        let writer = Connection::open(&path).unwrap();
        let conn = reader(&path).unwrap();
        let snapshot = conn.unchecked_transaction().unwrap();
        let before = dataflow_generation(&snapshot).unwrap();
        writer
            .execute("UPDATE tasks SET state = 'succeeded'", [])
            .unwrap();
        assert_eq!(done(&snapshot).unwrap(), 0);
        assert_eq!(dataflow_generation(&snapshot).unwrap(), before);
        drop(snapshot);
        assert_eq!(done(&conn).unwrap(), 1);
        assert_ne!(dataflow_generation(&conn).unwrap(), before);
    }

    #[test]
    fn a_failed_connection_is_opened_again() {
        let (_dir, path) = store();
        let cache: ReadCache<i64> = ReadCache::default();
        let opened = Cell::new(0);
        let open = || {
            opened.set(opened.get() + 1);
            reader(&path)
        };
        assert!(
            cache
                .get(open, |c| Ok(c.query_row(
                    "SELECT nope FROM tasks",
                    [],
                    |r| r.get(0)
                )?))
                .is_err()
        );
        assert_eq!(*cache.get(open, done).unwrap(), 0);
        assert_eq!(opened.get(), 2);
    }

    #[test]
    fn the_latest_value_is_served_while_one_refresh_at_a_time_computes_the_next() {
        let (_dir, path) = store();
        let writer = Connection::open(&path).unwrap();
        let cache: std::sync::Arc<ReadCache<i64>> = Default::default();
        assert!(cache.latest().is_none());
        assert_eq!(*cache.get(|| reader(&path), done).unwrap(), 0);
        writer
            .execute("UPDATE tasks SET state = 'succeeded'", [])
            .unwrap();
        assert_eq!(
            *cache.latest().unwrap(),
            0,
            "the last computed, not recomputed"
        );

        // A refresh that is computing holds the cache: a second one returns at once, and the
        // latest value stays readable meanwhile.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let slow = {
            let (cache, path) = (cache.clone(), path.clone());
            std::thread::spawn(move || {
                cache.refresh_if_idle(
                    || reader(&path),
                    |c| {
                        entered_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        done(c)
                    },
                )
            })
        };
        entered_rx.recv().unwrap();
        let computed = Cell::new(false);
        let second = cache.refresh_if_idle(
            || reader(&path),
            |c| {
                computed.set(true);
                done(c)
            },
        );
        assert!(second.is_none() && !computed.get(), "one refresh at a time");
        assert_eq!(*cache.latest().unwrap(), 0);
        release_tx.send(()).unwrap();
        assert_eq!(*slow.join().unwrap().unwrap().unwrap(), 1);
        assert_eq!(*cache.latest().unwrap(), 1);
    }
}
