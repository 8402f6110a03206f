//! What the submitting grit and the job on a compute node exchange through the store's directory
//! on the shared filesystem: the layout under `<db>/slurm/`, the batch file a job reads (which
//! tasks each array element runs) and the result record it writes per task.
//!
//! Layout:
//! - `<db>/slurm/batch/<id>/batch.json`, `job.sh`, `slurm-<element>.out`: one `sbatch` call.
//! - `<db>/slurm/work/<key>/`: one task's attempt on the cluster: `out/` (its `OUTPUT_DIR`),
//!   `scratch/`, `in/` (a gather task's `INPUT_DIR`), `log`, `started`, `result.json`.
//!
//! Every file a reader must see whole is written to a temporary name and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::Exit;

/// `<db>/slurm`.
pub fn root(store: &Path) -> PathBuf {
    store.join("slurm")
}

/// The directory of one task's attempt on the cluster.
pub fn work_dir(store: &Path, key: &str) -> PathBuf {
    root(store).join("work").join(key)
}

/// The directory of one submission.
pub fn batch_dir(store: &Path, id: &str) -> PathBuf {
    root(store).join("batch").join(id)
}

/// The file that says a task has a result.
pub fn result_path(work: &Path) -> PathBuf {
    work.join("result.json")
}

/// Written by the job before it starts a task: the task ran (or was running) when the job ended.
pub fn started_path(work: &Path) -> PathBuf {
    work.join("started")
}

/// What a task reads, with host paths that are the same on every node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireInput {
    None,
    File {
        path: PathBuf,
        name: String,
        hash: String,
    },
    Dir {
        path: PathBuf,
    },
}

/// One task of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTask {
    pub task_id: i64,
    pub run_id: i64,
    /// Its directory under `<db>/slurm/work`.
    pub key: String,
    pub input: WireInput,
}

/// One `sbatch --array` submission: every element runs `groups[SLURM_ARRAY_TASK_ID]`, one task
/// after the other, all of the same step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub store: PathBuf,
    pub manifest: PathBuf,
    /// task-pipeline's `--start` override, to load the manifest as the run did.
    pub start: Option<String>,
    pub params: std::collections::BTreeMap<String, String>,
    pub step: String,
    /// The step's version hash when it was submitted: a job refuses to run a changed step.
    pub version: String,
    pub sandboxed: bool,
    pub groups: Vec<Vec<WireTask>>,
}

/// How a task's attempt ended, as the job saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireExit {
    Code { code: i32 },
    Signal { signal: i32 },
    TimedOut { ms: u64 },
    SpawnFailed { error: String },
}

impl WireExit {
    pub fn from_exit(exit: &Exit) -> Option<WireExit> {
        Some(match exit {
            Exit::Code(code) => WireExit::Code { code: *code },
            Exit::Signal(signal) => WireExit::Signal { signal: *signal },
            Exit::TimedOut(d) => WireExit::TimedOut {
                ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Exit::SpawnFailed(error) => WireExit::SpawnFailed {
                error: error.clone(),
            },
            Exit::Cancelled | Exit::Scheduler(_) => return None,
        })
    }

    pub fn to_exit(&self) -> Exit {
        match self {
            WireExit::Code { code } => Exit::Code(*code),
            WireExit::Signal { signal } => Exit::Signal(*signal),
            WireExit::TimedOut { ms } => Exit::TimedOut(Duration::from_millis(*ms)),
            WireExit::SpawnFailed { error } => Exit::SpawnFailed(error.clone()),
        }
    }
}

/// One output as the job hashed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireOutput {
    pub name: String,
    pub hash: String,
    pub size: u64,
}

/// A task's result record, `result.json` in its work directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub exit: WireExit,
    pub duration_ms: u64,
    /// Files the task left in `out/`, hashed on the node (the submitting grit checks them).
    pub outputs: Vec<WireOutput>,
    /// Where it ran.
    pub node: String,
    pub job_id: String,
}

/// Write `value` as JSON to `path` atomically: a temporary file beside it, synced, renamed.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        // The reader is another machine: the bytes must be on the server before the name is.
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Read a JSON file written by [`write_atomic`].
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_survive_the_round_trip() {
        for exit in [
            Exit::Code(0),
            Exit::Code(3),
            Exit::Signal(9),
            Exit::TimedOut(Duration::from_millis(1500)),
            Exit::SpawnFailed("no shell".into()),
        ] {
            let wire = WireExit::from_exit(&exit).expect("a finished attempt");
            let text = serde_json::to_string(&wire).expect("encode");
            let back: WireExit = serde_json::from_str(&text).expect("decode");
            assert_eq!(back.to_exit(), exit);
        }
        assert_eq!(WireExit::from_exit(&Exit::Cancelled), None);
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("result.json");
        let record = WireOutput {
            name: "x".into(),
            hash: "h".into(),
            size: 1,
        };
        write_atomic(&path, &record).expect("write");
        let back: WireOutput = read(&path).expect("read");
        assert_eq!(back, record);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("result.json")]);
    }
}
