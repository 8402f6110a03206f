//! The plain-directory capture: `OUTPUT_DIR` is a pooled directory in `<db>/tmp`, and after the
//! task exits its flat regular files are validated and hashed in place (they are already on the
//! store's filesystem, so publishing is a rename). A file the executor vouched for (it hashed it
//! already, [`Capture::vouch`]) is not hashed again while it is the same file.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Capture, CaptureError, CapturedFile, invalid_name_reason};
use crate::store::objects::hash_open_file;
use crate::store::staging::DirPool;

pub struct DirCapture {
    pool: DirPool,
    /// Names for private copies of outputs another process still holds open.
    copies: CopyNames,
    /// Output directory and `max_output` quota of each active task key.
    active: Mutex<HashMap<String, (PathBuf, Option<u64>)>>,
    /// Hashes the executor vouched for, per task key and file.
    vouched: Mutex<HashMap<String, HashMap<PathBuf, Vouched>>>,
}

/// A file's hash as the executor computed it, and which file that was.
struct Vouched {
    hash: String,
    size: u64,
    identity: FileIdentity,
}

/// Device, inode and modification time: a file replaced or written to since has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// Unique paths in `<db>/tmp` for private copies (`copy-<pid>-<n>`); the store's end-of-run
/// cleanup removes any that were not published.
struct CopyNames {
    staging: PathBuf,
    next: std::sync::atomic::AtomicU64,
}

impl CopyNames {
    fn new(staging: &Path) -> CopyNames {
        CopyNames {
            staging: staging.to_path_buf(),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn acquire_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.staging
            .join(format!("copy-{:x}-{n}", std::process::id()))
    }
}

/// Whether a process other than grit has `file` open (grit's own descriptor aside). A write
/// lease is granted only when no other descriptor of the file exists; where leases are not
/// available (disabled, or a filesystem without them, such as NFS) this says no, and the file is
/// published as it is.
fn held_open_elsewhere(file: &fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns, with integer arguments.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) } == 0 {
        // SAFETY: as above; the lease goes with the descriptor anyway.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN)
}

/// Hash `source` while copying it into a new private file `to`.
fn copy_and_hash(source: &mut fs::File, to: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut copy = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    hash_open_file(source, |chunk| copy.write_all(chunk))
}

impl DirCapture {
    /// `staging` is `<db>/tmp`.
    pub fn new(staging: &Path) -> Self {
        DirCapture {
            pool: DirPool::new(staging, "out"),
            copies: CopyNames::new(staging),
            active: Mutex::new(HashMap::new()),
            vouched: Mutex::new(HashMap::new()),
        }
    }

    fn out_dir(&self, key: &str) -> Result<(PathBuf, Option<u64>), CaptureError> {
        self.active
            .lock()
            .ok()
            .and_then(|active| active.get(key).cloned())
            .ok_or_else(|| {
                CaptureError::Rule(format!("internal: no output directory for task {key}"))
            })
    }
}

impl Capture for DirCapture {
    fn start_task(&self, key: &str, quota: Option<u64>) -> Result<PathBuf, CaptureError> {
        let dir = self.pool.acquire().map_err(|source| CaptureError::Io {
            path: PathBuf::from("<db>/tmp"),
            source,
        })?;
        if let Ok(mut active) = self.active.lock() {
            active.insert(key.to_string(), (dir.clone(), quota));
        }
        Ok(dir)
    }

    fn finish_task(&self, key: &str) -> Result<(Vec<CapturedFile>, Vec<String>), CaptureError> {
        let (dir, quota) = self.out_dir(key)?;
        let vouched = self
            .vouched
            .lock()
            .ok()
            .and_then(|mut v| v.remove(key))
            .unwrap_or_default();
        let io = |source| CaptureError::Io {
            path: dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let raw = entry.file_name();
            let Some(name) = raw.to_str() else {
                return Err(CaptureError::Rule(format!(
                    "OUTPUT_DIR/{}: output names must be valid UTF-8",
                    raw.to_string_lossy()
                )));
            };
            if let Some(reason) = invalid_name_reason(name) {
                return Err(CaptureError::Rule(format!("OUTPUT_DIR/{name}: {reason}")));
            }
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                return Err(CaptureError::Rule(format!(
                    "OUTPUT_DIR/{name}: is a directory; outputs must be flat regular files (write OUTPUT_DIR/{name}_part instead of OUTPUT_DIR/{name}/part)"
                )));
            }
            if kind.is_symlink() {
                return Err(CaptureError::Rule(format!(
                    "OUTPUT_DIR/{name}: is a symbolic link; outputs must be regular files (copy the content instead)"
                )));
            }
            if !kind.is_file() {
                return Err(CaptureError::Rule(format!(
                    "OUTPUT_DIR/{name}: is not a regular file; outputs must be regular files"
                )));
            }
            if meta.nlink() != 1 {
                // Renaming a hard-linked file into the store would let the script alias (and make
                // read-only) a file outside OUTPUT_DIR.
                return Err(CaptureError::Rule(format!(
                    "OUTPUT_DIR/{name}: is a hard link; outputs must be files written in OUTPUT_DIR (copy the content instead)"
                )));
            }
            let file_io = |source| CaptureError::Io {
                path: path.clone(),
                source,
            };
            // Opened once: for the lease check, then for the hash.
            let mut file = fs::File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(file_io)?;
            // A process that left the task (a daemon started with `setsid` under
            // `--no-sandbox`) may still hold the file open and write to it later; renamed into
            // the store, its late writes would change a stored object. Such a file is copied
            // into a staging file of grit's own, hashed on the way, and the copy is published.
            if held_open_elsewhere(&file) {
                let copy = self.copies.acquire_path();
                let (hash, size) = copy_and_hash(&mut file, &copy).map_err(file_io)?;
                files.push(CapturedFile {
                    name: name.to_string(),
                    hash,
                    size,
                    staged: copy,
                });
                continue;
            }
            let known = vouched
                .get(&path)
                .filter(|v| v.size == meta.len() && v.identity == FileIdentity::of(&meta));
            let (hash, size) = match known {
                Some(v) => (v.hash.clone(), v.size),
                None => hash_open_file(&mut file, |_| Ok(())).map_err(file_io)?,
            };
            files.push(CapturedFile {
                name: name.to_string(),
                hash,
                size,
                staged: path,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        // A plain directory cannot refuse the write that crosses the quota (FUSE can); the
        // total is checked after the fact instead, with the same verdict for the task.
        let total: u64 = files.iter().map(|f| f.size).sum();
        if let Some(quota) = quota.filter(|q| total > *q) {
            return Err(CaptureError::Rule(format!(
                "OUTPUT_DIR: outputs total {total} bytes, over the max_output quota of {quota} bytes (ENOSPC)"
            )));
        }
        Ok((files, Vec::new()))
    }

    fn vouch(&self, key: &str, path: &Path, hash: &str, size: u64) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if let Ok(mut vouched) = self.vouched.lock() {
            vouched.entry(key.to_string()).or_default().insert(
                path.to_path_buf(),
                Vouched {
                    hash: hash.to_string(),
                    size,
                    identity: FileIdentity::of(&meta),
                },
            );
        }
    }

    fn discard_task(&self, key: &str) {
        if let Ok(mut vouched) = self.vouched.lock() {
            vouched.remove(key);
        }
        let dir = self
            .active
            .lock()
            .ok()
            .and_then(|mut active| active.remove(key));
        if let Some((dir, _)) = dir {
            self.pool.release(dir);
        }
    }

    fn kind(&self) -> &'static str {
        "dir"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::objects::hash_file;

    #[test]
    fn a_vouched_file_is_not_hashed_again_unless_it_was_replaced() {
        let staging = tempfile::tempdir().expect("tempdir");
        let capture = DirCapture::new(staging.path());
        let dir = capture.start_task("k", None).expect("start");
        std::fs::write(dir.join("a"), b"alpha").expect("a");
        std::fs::write(dir.join("b"), b"beta").expect("b");
        // A hash no file has, to see which one the capture took.
        let vouched = "f".repeat(64);
        capture.vouch("k", &dir.join("a"), &vouched, 5);
        capture.vouch("k", &dir.join("b"), &vouched, 4);
        // `b` is replaced after it was vouched for: another file, hashed afresh.
        std::fs::write(dir.join("b.new"), b"BETA").expect("b.new");
        std::fs::rename(dir.join("b.new"), dir.join("b")).expect("replace b");
        let (files, _) = capture.finish_task("k").expect("finish");
        let by_name: HashMap<&str, &str> = files
            .iter()
            .map(|f| (f.name.as_str(), f.hash.as_str()))
            .collect();
        assert_eq!(by_name["a"], vouched);
        assert_eq!(by_name["b"], hash_file(&dir.join("b")).expect("hash").0);
        capture.discard_task("k");
        assert!(capture.vouched.lock().expect("lock").is_empty());
    }
}
