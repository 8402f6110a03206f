//! The store lock: `<db>/lock`, held with `flock` for the whole of a `grit run` (and of the
//! commands that delete). The holder writes its pid into the file so that a second run can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// An exclusive lock on a store; released when dropped (or when the process dies).
pub struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    /// Take the lock without waiting. Fails with [`StoreError::Locked`] naming the holder's pid.
    pub fn acquire(path: &Path) -> Result<StoreLock, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
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
        let pid = std::process::id();
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{pid}")?;
            f.sync_data()
        };
        write(&mut lock).map_err(|e| StoreError::io(path, e))?;
        Ok(StoreLock { _lock: lock })
    }
}
