//! Hashing off the FUSE thread. A write is synchronous for the writer, so hashing 1 MiB inside
//! the request (~0.6 ms) stalls it; handing the bytes to this worker lets the writer, the FUSE
//! thread and the hash run on different cores. Buffers come from a fixed pool (no allocation per
//! write, bounded memory); when all are in flight the FUSE thread waits, which throttles the writer.
//! Jobs for one file are applied in the order they were sent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

/// Buffers in flight: enough to keep the worker busy while the FUSE thread copies the next one.
const POOL: usize = 4;

enum Job {
    /// Take over a file's hash state (the bytes hashed inline so far).
    Start {
        ino: u64,
        state: Box<Sha256>,
    },
    Update {
        ino: u64,
        buf: Vec<u8>,
    },
    Finish {
        ino: u64,
        reply: SyncSender<Option<String>>,
    },
    Forget {
        ino: u64,
    },
}

pub(super) struct Hasher {
    jobs: Mutex<Option<Sender<Job>>>,
    free: Mutex<Receiver<Vec<u8>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Hasher {
    pub(super) fn new(buf_size: usize) -> std::io::Result<Hasher> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(POOL);
        for _ in 0..POOL {
            // Cannot fail: the channel has room for POOL buffers and its receiver is alive.
            let _ = free_tx.send(Vec::with_capacity(buf_size));
        }
        let thread = std::thread::Builder::new()
            .name("grit-hash".into())
            .spawn(move || work(jobs_rx, free_tx))?;
        Ok(Hasher {
            jobs: Mutex::new(Some(jobs_tx)),
            free: Mutex::new(free_rx),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Hand a file's hash state to the worker; later bytes go through `update`.
    pub(super) fn start(&self, ino: u64, state: Sha256) -> bool {
        self.send(Job::Start {
            ino,
            state: Box::new(state),
        })
    }

    /// Queue `data` to be hashed after everything queued before for `ino`.
    pub(super) fn update(&self, ino: u64, data: &[u8]) -> bool {
        let buf = {
            let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            match free.recv() {
                Ok(buf) => buf,
                Err(_) => return false,
            }
        };
        let mut buf = buf;
        buf.clear();
        buf.extend_from_slice(data);
        self.send(Job::Update { ino, buf })
    }

    /// The final hash of `ino`, once every queued update is applied.
    pub(super) fn finish(&self, ino: u64) -> Option<String> {
        let (tx, rx) = sync_channel(1);
        if !self.send(Job::Finish { ino, reply: tx }) {
            return None;
        }
        rx.recv().ok().flatten()
    }

    pub(super) fn forget(&self, ino: u64) {
        self.send(Job::Forget { ino });
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // Closing the job channel ends the worker.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn work(jobs: Receiver<Job>, free: SyncSender<Vec<u8>>) {
    let mut states: HashMap<u64, Sha256> = HashMap::new();
    for job in jobs {
        match job {
            Job::Start { ino, state } => {
                states.insert(ino, *state);
            }
            Job::Update { ino, buf } => {
                if let Some(h) = states.get_mut(&ino) {
                    h.update(&buf);
                }
                let _ = free.send(buf);
            }
            Job::Finish { ino, reply } => {
                let hash = states.remove(&ino).map(|h| hex::encode(h.finalize()));
                let _ = reply.send(hash);
            }
            Job::Forget { ino } => {
                states.remove(&ino);
            }
        }
    }
}
