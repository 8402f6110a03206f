//! The plain-directory capture: `OUTPUT_DIR` is a pooled directory in `<db>/tmp`, and after the
//! task exits its flat regular files are validated and hashed in place (they are already on the
//! store's filesystem, so publishing is a rename).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Capture, CaptureError, CapturedFile, invalid_name_reason};
use crate::store::objects::hash_file;
use crate::store::staging::DirPool;

pub struct DirCapture {
    pool: DirPool,
    /// Output directory and `max_output` quota of each active task key.
    active: Mutex<HashMap<String, (PathBuf, Option<u64>)>>,
}

impl DirCapture {
    /// `staging` is `<db>/tmp`.
    pub fn new(staging: &Path) -> Self {
        DirCapture {
            pool: DirPool::new(staging, "out"),
            active: Mutex::new(HashMap::new()),
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
            let (hash, size) = hash_file(&path).map_err(|source| CaptureError::Io {
                path: path.clone(),
                source,
            })?;
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

    fn discard_task(&self, key: &str) {
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
