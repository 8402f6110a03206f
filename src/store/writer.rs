//! The single writer thread: it owns the read-write SQLite connection and runs jobs sent to it in
//! order. The async engine awaits results through oneshot channels, so SQLite never blocks the
//! runtime and all writes are naturally serialised.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
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
            });
        if let Err(e) = spawned {
            // Without a thread every call reports WriterGone; keep the error visible.
            tracing::error!("cannot start the store writer thread: {e}");
        }
        Writer { jobs }
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
