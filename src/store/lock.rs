//! The store lock: `<db>/lock`, held with `flock` for the whole of a `grit run` (and of the
//! commands that delete). The holder writes its pid into the file so that a second run can name it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// Width of the pid in the lock file, padded with spaces: wider than any Linux pid (at most
/// 4,194,304) and than what earlier versions wrote (the pid and a newline).
const PID_WIDTH: usize = 10;

/// How long to wait for the lock when its recorded holder is dead.
const DEAD_HOLDER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn alive(pid: u32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but belongs to someone else.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(errno) => errno != nix::errno::Errno::ESRCH,
    }
}

/// An exclusive lock on a store; released when dropped (or when the process dies).
pub struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Take the lock without waiting for a live holder. Fails with [`StoreError::Locked`] naming
    /// the holder's pid.
    ///
    /// A holder that has just died can keep the lock for a moment: a child it was spawning still
    /// has the lock's file descriptor until it execs (close-on-exec). So when the recorded holder
    /// is no longer alive, retry briefly instead of failing.
    pub fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        let deadline = std::time::Instant::now() + DEAD_HOLDER_GRACE;
        loop {
            match Self::try_acquire(path) {
                Err(StoreError::Locked { holder, .. })
                    if holder.is_some_and(|pid| !alive(pid))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_acquire(path: &Path) -> Result<StoreLock, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                    holder: holder.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(StoreError::io(path, errno.into())),
        };
        // The pid only names the holder in a second run's message (the lock itself is the
        // flock, which no crash leaves behind), so it is written in place, at a fixed width that
        // covers any earlier content, and not synced: a truncation and an fsync cost two journal
        // commits on every run's start (measured: 4-8 ms of a 35 ms no-op run on ext4).
        let record = format!("{:<width$}\n", std::process::id(), width = PID_WIDTH);
        lock.write_all_at(record.as_bytes(), 0)
            .map_err(|e| StoreError::io(path, e))?;
        Ok(StoreLock { _lock: lock })
    }
}
