//! The single writer thread: it owns the read-write SQLite connection and runs jobs sent to it in
//! order. The async engine awaits results through oneshot channels, so SQLite never blocks the
//! runtime and all writes are naturally serialised.
//!
//! When the last [`Writer`] handle goes, the thread checkpoints the WAL into the main file
//! (`wal_checkpoint(TRUNCATE)`) and closes the connection, and the dropping side waits for it: once
//! a command that wrote returns, `grit.sqlite` alone holds everything (a user who copies "the
//! database" copies all of it).

use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    _thread: Arc<Closer>,
}

/// Joins the writer thread when the last handle is dropped, after the job channel has closed
/// (every `Writer`, and so every sender, is gone by then).
struct Closer {
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        // A job that dropped the last handle runs on the writer thread itself: it cannot wait
        // for itself, and the thread checkpoints on its way out anyway.
        if handle.thread().id() != thread::current().id() {
            let _ = handle.join();
        }
    }
}

impl Writer {
    pub fn spawn(mut conn: Connection) -> Writer {
        let (jobs, receiver) = mpsc::channel::<Job>();
        // The thread ends when every Writer handle is dropped; jobs never outlive the connection.
        let spawned = thread::Builder::new()
            .name("grit-store-writer".into())
            .spawn(move || {
                for job in receiver {
                    job(&mut conn);
                }
                checkpoint(&conn);
            });
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // Without a thread every call reports WriterGone; keep the error visible.
                tracing::error!("cannot start the store writer thread: {e}");
                None
            }
        };
        Writer {
            jobs,
            _thread: Arc::new(Closer {
                thread: Mutex::new(thread),
            }),
        }
    }

    /// Run `f` on the writer thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Same as [`Writer::call`], for code that is not async (commands outside a runtime).
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }
}

/// Copy the WAL into the main database file and empty it. A reader still holding a snapshot
/// makes SQLite stop short (busy); the data is then safe in the WAL and the next writer finishes.
pub fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((0, _, _)) => {}
        Ok((busy, log, done)) => tracing::debug!(
            "WAL checkpoint incomplete (busy {busy}, {done} of {log} frames); the next writer finishes it"
        ),
        Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
    }
}
