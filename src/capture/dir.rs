//! The plain-directory capture: `OUTPUT_DIR` is `<db>/tmp/<key>/out`, and after the task exits
//! its flat regular files are validated and hashed in place (they are already on the store's
//! filesystem, so publishing is a rename).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{Capture, CaptureError, CapturedFile, invalid_name_reason};
use crate::store::objects::hash_file;

pub struct DirCapture {
    staging: PathBuf,
}

impl DirCapture {
    /// `staging` is `<db>/tmp`.
    pub fn new(staging: PathBuf) -> Self {
        DirCapture { staging }
    }

    fn out_dir(&self, key: &str) -> PathBuf {
        self.staging.join(key).join("out")
    }
}

impl Capture for DirCapture {
    fn start_task(&self, key: &str, _quota: Option<u64>) -> Result<PathBuf, CaptureError> {
        let dir = self.out_dir(key);
        fs::create_dir_all(&dir).map_err(|source| CaptureError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    fn finish_task(&self, key: &str) -> Result<(Vec<CapturedFile>, Vec<String>), CaptureError> {
        let dir = self.out_dir(key);
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
        Ok((files, Vec::new()))
    }

    fn discard_task(&self, key: &str) {
        let _ = fs::remove_dir_all(self.out_dir(key));
    }

    fn kind(&self) -> &'static str {
        "dir"
    }
}
