//! The executor seam (DESIGN §3): run one attempt of one task — `shell + script` with the script
//! contract's environment — and report how it ended. Output capture and publishing are the
//! engine's; the executor only runs processes.
//!
//! [`process::ProcessExecutor`] is the one implementation: it spawns the script in its own process
//! group (plain) or, for steps with `sandbox = "strict"`, inside the sandbox of `crate::sandbox`.

pub mod process;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::manifest::Step;

/// What the script reads.
#[derive(Debug, Clone)]
pub enum TaskInput {
    /// A source: `INPUT_FILE` is empty.
    None,
    /// One resource: `INPUT_FILE` is its read-only object.
    File {
        path: PathBuf,
        name: String,
        hash: String,
    },
    /// A gather task's input set: `INPUT_DIR`.
    Dir { path: PathBuf },
}

/// Everything needed to run one attempt of one task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub task_id: i64,
    pub run_id: i64,
    pub step: Arc<Step>,
    /// The manifest's directory: the script's working directory.
    pub workdir: PathBuf,
    pub input: TaskInput,
    pub output_dir: PathBuf,
    /// Private writable scratch: `TMPDIR` and `HOME`.
    pub scratch_dir: PathBuf,
    /// The store directory, which a sandbox hides.
    pub store_dir: PathBuf,
    /// Where stdout and stderr go.
    pub log_path: PathBuf,
    /// Run inside the sandbox (the step's policy, unless `--no-sandbox`).
    pub sandboxed: bool,
    /// Tells the output capture which processes are the task's, once they exist.
    pub admission: Option<crate::capture::Admission>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut(Duration),
    /// The process could not be started (or the sandbox could not be set up).
    SpawnFailed(String),
    /// grit is shutting down (SIGINT/SIGTERM): not a failure of the task.
    Cancelled,
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The exit code recorded for the task (128 + signal for signals, as shells do).
    pub fn code(&self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(*c),
            Exit::Signal(s) => Some(128 + s),
            _ => None,
        }
    }

    /// A human description for logs and summaries.
    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::TimedOut(d) => format!("timed out after {}", humantime::format_duration(*d)),
            Exit::SpawnFailed(e) => format!("could not start: {e}"),
            Exit::Cancelled => "cancelled".into(),
        }
    }
}

/// Which stream a script line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives the scripts' output lines while they run (for `-v` and journald).
pub type LineSink = Arc<dyn Fn(&TaskSpec, Stream, &str) + Send + Sync>;

/// Running tasks, so that a cancel can kill whole trees: the process group of a plain task, or
/// the init of a sandboxed one (which takes its pid namespace with it, also while it is still
/// setting up and has no process group of its own yet).
#[derive(Default)]
pub struct RunningTasks {
    groups: Mutex<Groups>,
}

#[derive(Default)]
struct Groups {
    by_task: HashMap<i64, (i32, bool)>,
    /// [`RunningTasks::kill_all`] ran: a task that registers later (its future had not started
    /// its process yet, or it begins another attempt) is killed at once.
    killed: bool,
}

impl RunningTasks {
    /// Registers a task's process group leader; `sandboxed` when `pid` is a sandbox's init,
    /// which stays unreaped until the task is removed.
    pub fn insert(&self, task_id: i64, pid: i32, sandboxed: bool) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.by_task.insert(task_id, (pid, sandboxed));
            if groups.killed {
                kill(pid, sandboxed);
            }
        }
    }

    pub fn remove(&self, task_id: i64) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.by_task.remove(&task_id);
        }
    }

    /// SIGKILL every running task's process group, and every one that registers from now on.
    pub fn kill_all(&self) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.killed = true;
            for (pid, sandboxed) in groups.by_task.values() {
                kill(*pid, *sandboxed);
            }
        }
    }
}

fn kill(pid: i32, sandboxed: bool) {
    process::kill_group(pid);
    if sandboxed {
        // SAFETY: kill on our own unreaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
