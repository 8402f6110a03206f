//! Output capture: where a task's `OUTPUT_DIR` comes from and how its files become staged,
//! hashed outputs (DESIGN §5).
//!
//! The engine talks to one [`Capture`] per run. [`dir::DirCapture`] is a plain directory hashed
//! after the task exits; the FUSE capture streams and hashes while the script writes. Both hand back
//! [`CapturedFile`]s staged under `<db>/tmp`, which the store renames into `objects/`.

pub mod dir;
pub mod fuse;

use std::path::PathBuf;

/// One file a task left in its OUTPUT_DIR, hashed and staged for publishing.
#[derive(Debug, Clone)]
pub struct CapturedFile {
    /// The flat file name = the resource name.
    pub name: String,
    /// Lowercase hex SHA-256 of the final content.
    pub hash: String,
    pub size: u64,
    /// A file under `<db>/tmp` holding exactly that content; the store renames it into objects/
    /// (same filesystem) or deletes it when the object already exists.
    pub staged: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The script broke an output rule (DESIGN §2.9); the task fails with this message.
    #[error("{0}")]
    Rule(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
}

/// What the engine needs from an output capture. `key` names one attempt of one task.
pub trait Capture: Send + Sync {
    /// Create the task's empty output directory; returns the path to use as `OUTPUT_DIR`.
    fn start_task(&self, key: &str, quota: Option<u64>) -> Result<PathBuf, CaptureError>;
    /// After every process of the task is dead: its files, and messages for the task log about
    /// operations that were refused.
    fn finish_task(&self, key: &str) -> Result<(Vec<CapturedFile>, Vec<String>), CaptureError>;
    /// The task is over: throw away whatever is still in its directory (everything, for a failed
    /// or killed task; nothing, once published files were renamed away) and forget the key.
    fn discard_task(&self, key: &str);
    /// Short name for messages (`dir`, `fuse`).
    fn kind(&self) -> &'static str;
}

/// Why a file name cannot be a resource name, if it cannot (DESIGN §2.9: flat names only).
pub fn invalid_name_reason(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("an output name must not be empty")
    } else if name.contains('/') {
        Some("an output name must not contain '/'")
    } else if name.starts_with('.') {
        Some("an output name must not start with '.'")
    } else {
        None
    }
}
