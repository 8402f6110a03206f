//! What the submitting grit and the job on a compute node exchange through the store's directory
//! on the shared filesystem: the layout under `<db>/slurm/`, the batch file a job reads (which
//! tasks each array element runs) and the events log each element writes as it goes.
//!
//! Layout:
//! - `<db>/slurm/batch/<id>/batch.json`, `job.sh`, `slurm-<element>.out`: one `sbatch` call;
//!   `element-<element>.log`: that element's [`ElementEvent`]s, one JSON object a line;
//!   `scratch-<element>/`: the scratch directory of that element's tasks, emptied after each.
//! - `<db>/slurm/work/<key>/`: one task's attempt on the cluster: `out/` (its `OUTPUT_DIR`),
//!   `in/` (a gather task's `INPUT_DIR`), `log`.
//!
//! The batch file is written to a temporary name and renamed. An element's log only grows, by
//! whole lines each written with one `write` and the file closed after it (so an NFS client
//! sends it to the server); the reader takes only lines that end in a newline and parse, and
//! reads on from there next time. One log per element, not a file per task, so the submitting
//! grit looks at a handful of files per poll however many tasks are out, and a node creates and
//! syncs no file per task.

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

/// The events log of element `index` of the submission in `batch_dir`.
pub fn element_log(batch_dir: &Path, index: usize) -> PathBuf {
    batch_dir.join(format!("element-{index}.log"))
}

/// The scratch directory (`TMPDIR`, `HOME`) element `index` of the submission in `batch_dir`
/// gives each of its tasks in turn.
pub fn element_scratch(batch_dir: &Path, index: usize) -> PathBuf {
    batch_dir.join(format!("scratch-{index}"))
}

/// The submission a task's work key belongs to: `t<task>-<batch id>` → `<batch id>`.
pub fn batch_of_key(key: &str) -> Option<&str> {
    key.split_once('-').map(|(_, batch)| batch)
}

/// What an element says as it runs its group, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ElementEvent {
    /// The task is about to run: if the job ends before its result, it was running then.
    Started { key: String },
    /// The task's attempt ended.
    Finished { key: String, result: TaskResult },
}

/// Append one event to an element's log (creating it).
pub fn append_event(path: &Path, event: &ElementEvent) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    // One write: a reader sees the line whole or not at all.
    file.write_all(&line)
}

/// Reads an element's log as it grows.
#[derive(Debug, Default, Clone)]
pub struct LogReader {
    /// Bytes of the log already taken.
    pub offset: u64,
}

impl LogReader {
    /// The events appended since the last call; none when the log does not exist yet.
    pub fn read_new(&mut self, path: &Path) -> std::io::Result<Vec<ElementEvent>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut events = Vec::new();
        let mut taken = 0;
        while let Some(end) = bytes[taken..].iter().position(|&b| b == b'\n') {
            let line = &bytes[taken..taken + end];
            // A line the shared filesystem shows only in part (or as zeros) is read again next
            // time, from its start.
            let Ok(event) = serde_json::from_slice(line) else {
                break;
            };
            events.push(event);
            taken += end + 1;
        }
        self.offset += taken as u64;
        Ok(events)
    }
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

/// A task's result record, in its element's log.
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
    fn an_element_log_is_read_by_whole_lines_as_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = element_log(dir.path(), 3);
        let mut reader = LogReader::default();
        assert!(reader.read_new(&path).expect("missing is empty").is_empty());
        append_event(&path, &ElementEvent::Started { key: "t1-b".into() }).expect("append");
        let result = TaskResult {
            exit: WireExit::Code { code: 0 },
            duration_ms: 2,
            outputs: Vec::new(),
            node: "n".into(),
            job_id: "5_3".into(),
        };
        append_event(
            &path,
            &ElementEvent::Finished {
                key: "t1-b".into(),
                result,
            },
        )
        .expect("append");
        // Half a line, as a reader may see one being written: left for later.
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            file.write_all(b"{\"event\":\"started\",\"ke")
                .expect("half");
        }
        let events = reader.read_new(&path).expect("read");
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], ElementEvent::Started { key } if key == "t1-b"));
        assert!(
            matches!(&events[1], ElementEvent::Finished { result, .. } if result.job_id == "5_3")
        );
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            file.write_all(b"y\":\"t2-b\"}\n").expect("rest");
        }
        let events = reader.read_new(&path).expect("read");
        assert!(matches!(&events[..], [ElementEvent::Started { key }] if key == "t2-b"));
        assert!(reader.read_new(&path).expect("read").is_empty());
        assert_eq!(batch_of_key("t12-r3-p9-b0"), Some("r3-p9-b0"));
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
