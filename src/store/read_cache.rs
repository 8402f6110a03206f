//! A value computed from the store, kept until the store changes.
//!
//! Some read models (the step graph's flows, for one) cost time in proportion to the whole store,
//! and a page that shows them is asked for far more often than the store changes. A
//! [`ReadCache`] keeps one such value together with the SQLite `PRAGMA data_version` of the
//! snapshot it was computed from, on a connection of its own. SQLite changes that number on a
//! connection whenever another connection, in this process or any other, has committed to the
//! database since; a connection that only reads never changes it itself. So a value is served
//! again only while the store is exactly as it was when the value was computed: the first read
//! after any write computes it anew. Time plays no part.
//!
//! The version is read as the first statement of a read transaction, and the value is computed
//! inside that same transaction, so both describe one snapshot.
//!
//! While a store keeps changing (a run publishing), a caller that accepts the last value computed
//! can take it at once ([`ReadCache::latest`]) and leave the new computation to
//! [`ReadCache::refresh_if_idle`] on another thread: one computation at a time, never one per
//! caller.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::StoreError;

/// One cached value of type `T` and the connection whose `data_version` guards it.
pub struct ReadCache<T> {
    slot: Mutex<Option<Slot<T>>>,
    /// The last value computed, readable while `slot` is held by a computation.
    latest: Mutex<Option<Arc<T>>>,
}

struct Slot<T> {
    /// Read-only, used by this cache alone: `data_version` is only comparable on one connection.
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
    /// The value for the store as it is now: the kept one when nothing was committed since it
    /// was computed, else `compute`'s (then kept). `open` gives the cache its read-only
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

    /// The last value computed, whatever has been committed since (`None` before the first).
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

impl<T> Slot<T> {
    fn read(
        &mut self,
        compute: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<Arc<T>, StoreError> {
        // Deferred: the pragma below is the statement that starts the read transaction, so the
        // version it returns is the version of the snapshot `compute` then reads.
        let snapshot = self.conn.unchecked_transaction()?;
        let version: i64 = snapshot.query_row("PRAGMA data_version", [], |r| r.get(0))?;
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

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
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

    fn sum(conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.query_row("SELECT total(x) FROM t", [], |r| r.get::<_, f64>(0))? as i64)
    }

    #[test]
    fn a_value_is_kept_until_another_connection_commits_then_computed_once_again() {
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
                        sum(c)
                    },
                )
                .unwrap()
        };
        assert_eq!(get(), 1);
        assert_eq!(get(), 1);
        assert_eq!(computed.get(), 1, "nothing changed: kept");

        writer.execute("INSERT INTO t VALUES (10)", []).unwrap();
        assert_eq!(get(), 11, "a commit makes the next read compute");
        assert_eq!(get(), 11);
        assert_eq!(computed.get(), 2);

        // A write that leaves the value unchanged still makes it computed again; a rolled-back
        // one does not, and neither does an update that rewrites a row with the bytes it had
        // (SQLite writes no page for it: the store did not change).
        writer
            .execute_batch("BEGIN; UPDATE t SET x = x + 5; ROLLBACK;")
            .unwrap();
        writer.execute("UPDATE t SET x = x", []).unwrap();
        assert_eq!(get(), 11);
        assert_eq!(computed.get(), 2, "nothing was committed");
        writer.execute("INSERT INTO t VALUES (0)", []).unwrap();
        assert_eq!(get(), 11);
        assert_eq!(
            computed.get(),
            3,
            "every change counts, whatever it does to the value"
        );
    }

    #[test]
    fn the_version_and_the_value_come_from_one_snapshot() {
        // What `Slot::read` relies on: once the pragma has started the read transaction, a
        // commit by another connection is invisible until that transaction ends.
        let (_dir, path) = store();
        let writer = Connection::open(&path).unwrap();
        let conn = reader(&path).unwrap();
        let snapshot = conn.unchecked_transaction().unwrap();
        let before: i64 = snapshot
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap();
        writer.execute("INSERT INTO t VALUES (10)", []).unwrap();
        assert_eq!(sum(&snapshot).unwrap(), 1);
        let still: i64 = snapshot
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, still);
        drop(snapshot);
        assert_eq!(sum(&conn).unwrap(), 11);
        let after: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap();
        assert_ne!(before, after);
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
                    "SELECT nope FROM t",
                    [],
                    |r| r.get(0)
                )?))
                .is_err()
        );
        assert_eq!(*cache.get(open, sum).unwrap(), 1);
        assert_eq!(opened.get(), 2);
    }

    #[test]
    fn the_latest_value_is_served_while_one_refresh_at_a_time_computes_the_next() {
        let (_dir, path) = store();
        let writer = Connection::open(&path).unwrap();
        let cache: std::sync::Arc<ReadCache<i64>> = Default::default();
        assert!(cache.latest().is_none());
        assert_eq!(*cache.get(|| reader(&path), sum).unwrap(), 1);
        writer.execute("INSERT INTO t VALUES (10)", []).unwrap();
        assert_eq!(
            *cache.latest().unwrap(),
            1,
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
                        sum(c)
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
                sum(c)
            },
        );
        assert!(second.is_none() && !computed.get(), "one refresh at a time");
        assert_eq!(*cache.latest().unwrap(), 1);
        release_tx.send(()).unwrap();
        assert_eq!(*slow.join().unwrap().unwrap().unwrap(), 11);
        assert_eq!(*cache.latest().unwrap(), 11);
    }
}
