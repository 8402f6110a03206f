//! Output capture: where a task's `OUTPUT_DIR` comes from and how its files become staged,
//! hashed outputs (DESIGN §5).
//!
//! The engine talks to one [`Capture`] per run. [`dir::DirCapture`] is a plain directory hashed
//! after the task exits; the FUSE capture streams and hashes while the script writes. Both hand back
//! [`CapturedFile`]s staged under `<db>/tmp`, which the store renames into `objects/`.

pub mod dir;
pub mod fuse;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// One input a capture serves to a task: its name there and the verified file holding it.
#[derive(Debug, Clone)]
pub struct ServedInput {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
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
    /// Serve the inputs of started task `key` read-only, with an ordinary file's mode, in a
    /// directory reachable by the same processes as its `OUTPUT_DIR`; returns that directory.
    /// The store's objects are read-only files and `cp` keeps a source's mode, so a copy made
    /// from the object itself could not be overwritten by the next run's copy. `None`: this
    /// capture cannot (the dir capture), and the task reads the objects themselves.
    fn serve_inputs(
        &self,
        _key: &str,
        _inputs: &[ServedInput],
    ) -> Result<Option<PathBuf>, CaptureError> {
        Ok(None)
    }
    /// The task's processes are about to start (a plain spawn: they may use `OUTPUT_DIR` before
    /// [`Capture::admit`] names them). A capture that checks its callers holds their first
    /// requests until then.
    fn expect(&self, _key: &str) {}
    /// From now on, the processes of `who` are the task's; `None`: the spawn failed, nobody is.
    /// Only they (and grit) may use the task's `OUTPUT_DIR`. The dir capture leaves that to
    /// file modes (its directories are 0700), so it ignores this.
    fn admit(&self, _key: &str, _who: Option<TaskIdentity>) {}
    /// Accesses from outside the tasks that were refused during the run, one line each, for the
    /// run summary (`refused 1 access from pid N, uid U ...`).
    fn refused_accesses(&self) -> Vec<String> {
        Vec::new()
    }
    /// Processes outside every task that `helpers` recognises work for grit (the sandbox's
    /// zygote copies a task's `OUTPUT_DIR` into the task's mount namespace): a capture that
    /// checks its callers lets them in, as it lets grit in. The engine passes its executor's
    /// check before the first task starts.
    fn trust(&self, _helpers: HelperCheck) {}
    /// The executor already hashed the file at `path` in task `key`'s `OUTPUT_DIR`, which no
    /// process writes any more (the Slurm executor checked a node's output against the node's
    /// record, then moved it in). A capture that hashes outputs after the task may take this
    /// hash instead, while the file is still the one vouched for (same inode, size and
    /// modification time); the others ignore it.
    fn vouch(&self, _key: &str, _path: &Path, _hash: &str, _size: u64) {}
}

/// Answers whether a process (by pid, in grit's pid namespace) is a helper of grit's executor.
/// It is asked while a request waits, so it must be quick and take no lock a spawn may hold.
pub type HelperCheck = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// Which processes make up a running task, for the capture's access check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskIdentity {
    /// A sandboxed task: every process in its pid namespace, named by the device and inode of
    /// `/proc/<pid>/ns/pid`. Nothing outside the sandbox can enter it (no capability in the task's
    /// user namespace, and setns needs one), and the task cannot leave it.
    PidNamespace { dev: u64, ino: u64 },
    /// A plain task (no sandbox): the processes of its process group, whose id is the script's
    /// pid. Weaker: a process of the same user in grit's session could join it with setpgid;
    /// without the sandbox nothing separates processes of one user anyway (they may ptrace).
    ProcessGroup(i32),
}

impl TaskIdentity {
    /// The pid namespace of process `pid` (a sandboxed task's init, before its script runs).
    pub fn pid_namespace_of(pid: i32) -> std::io::Result<TaskIdentity> {
        let meta = std::fs::metadata(format!("/proc/{pid}/ns/pid"))?;
        Ok(TaskIdentity::PidNamespace {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// What the executor needs to tell a capture which processes are the task of `key`.
#[derive(Clone)]
pub struct Admission {
    pub capture: Arc<dyn Capture>,
    pub key: String,
}

impl Admission {
    pub fn expect(&self) {
        self.capture.expect(&self.key);
    }

    pub fn admit(&self, who: Option<TaskIdentity>) {
        self.capture.admit(&self.key, who);
    }

    pub fn vouch(&self, path: &Path, hash: &str, size: u64) {
        self.capture.vouch(&self.key, path, hash, size);
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("capture", &self.capture.kind())
            .field("key", &self.key)
            .finish()
    }
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
