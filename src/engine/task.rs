//! The life of one task inside a run: its private directories, its attempts (retries), output
//! capture, and storing its outputs and log as objects. The result is a [`TaskRecord`] that the
//! scheduler publishes in one transaction.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::capture::{Capture, CaptureError, CapturedFile};
use crate::executor::process::ProcessExecutor;
use crate::executor::{Exit, TaskInput, TaskSpec};
use crate::manifest::Step;
use crate::store::objects::{Objects, hash_file};
use crate::store::publish::{FactSource, OutputRecord, TaskRecord};
use crate::store::schedule::QueuedTask;
use crate::store::staging::DirPool;
use crate::store::{StorePaths, Writer};

/// What every task of a run shares.
pub struct TaskContext {
    pub run_id: i64,
    pub paths: StorePaths,
    pub objects: Objects,
    pub workdir: PathBuf,
    pub executor: ProcessExecutor,
    pub capture: Arc<dyn Capture>,
    pub writer: Writer,
    pub no_sandbox: bool,
    /// Scratch (`TMPDIR`/`HOME`) and gather input directories.
    pub workdirs: DirPool,
}

/// The outcome of a task, ready to publish, with what the summary needs.
pub struct Finished {
    pub record: TaskRecord,
    pub exit: Exit,
    /// The last lines of the log, for failures.
    pub log_tail: Vec<String>,
}

/// A task's claim on a script slot (-j, `parallel`): released once, when its last attempt's
/// processes are gone, or at the latest when the task's future ends.
pub struct ScriptSlot {
    free: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
    index: usize,
}

impl ScriptSlot {
    pub fn new(free: tokio::sync::mpsc::UnboundedSender<usize>, index: usize) -> ScriptSlot {
        ScriptSlot {
            free: Some(free),
            index,
        }
    }

    fn release(&mut self) {
        if let Some(free) = self.free.take() {
            // The receiver lives as long as the run; after it, nobody counts slots any more.
            let _ = free.send(self.index);
        }
    }
}

impl Drop for ScriptSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Lines of a failed task's log shown in the run summary.
const TAIL_LINES: usize = 10;

pub async fn run_task(
    ctx: Arc<TaskContext>,
    step: Arc<Step>,
    queued: QueuedTask,
    gather: bool,
    mut script_slot: ScriptSlot,
) -> Finished {
    let started = Instant::now();
    let task_id = queued.id;
    let log_path = ctx
        .paths
        .tmp
        .join(format!("t{task_id}-r{}.log", ctx.run_id));
    let mut attempts = 0;
    let (exit, mut error, files, key, dirs) = loop {
        attempts += 1;
        // Unique per run and attempt: a capture never mixes two attempts' files.
        let key = format!("t{task_id}-r{}-a{attempts}", ctx.run_id);
        let mut dirs = Vec::new();
        let (exit, error, files) =
            attempt(&ctx, &step, &queued, gather, &key, &log_path, &mut dirs).await;
        let succeeded = exit.success() && error.is_none();
        if succeeded || exit == Exit::Cancelled || attempts > step.retries {
            break (exit, error, files, key, dirs);
        }
        let note = format!(
            "grit: attempt {attempts} failed ({}); retrying",
            failure_text(&exit, &error)
        );
        let cleanup = ctx.clone();
        let retry_log = log_path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            cleanup.capture.discard_task(&key);
            for dir in dirs {
                cleanup.workdirs.release(dir);
            }
            append_log(&retry_log, &note);
        })
        .await;
    };
    // The script and everything it started are gone: let the next one run while this task's
    // outputs are stored.
    script_slot.release();

    let ran_ok = exit.success() && error.is_none();
    if !ran_ok && error.is_none() {
        error = Some(exit.describe());
    }
    let post = ctx.clone();
    let failure = error.clone();
    let finished = tokio::task::spawn_blocking(move || {
        let mut error = failure;
        let mut outputs = Vec::new();
        if error.is_none() {
            match adopt_outputs(&post.objects, files) {
                Ok(records) => outputs = records,
                Err(e) => error = Some(format!("storing outputs failed: {e}")),
            }
        }
        // Whatever was not adopted (all of it, for a failure) goes; the directories are reused.
        post.capture.discard_task(&key);
        for dir in dirs {
            post.workdirs.release(dir);
        }
        if let Some(message) = &error {
            append_log(&log_path, &format!("grit: task failed: {message}"));
        }
        let log_tail = if error.is_some() {
            tail(&log_path)
        } else {
            Vec::new()
        };
        let log_hash = store_log(&post.objects, &log_path);
        (outputs, error, log_tail, log_hash)
    })
    .await;
    let (outputs, error, log_tail, log_hash) = match finished {
        Ok(done) => done,
        Err(e) => (
            Vec::new(),
            Some(format!("storing outputs failed: {e}")),
            Vec::new(),
            None,
        ),
    };
    Finished {
        record: TaskRecord {
            task_id,
            run_id: ctx.run_id,
            succeeded: error.is_none(),
            attempts,
            exit_code: exit.code(),
            error,
            log_hash,
            duration_ms: started.elapsed().as_millis() as u64,
            source: step.is_source().then(|| FactSource {
                name: step.name.clone(),
                keep: step.keep,
            }),
            outputs,
        },
        exit,
        log_tail,
    }
}

fn failure_text(exit: &Exit, error: &Option<String>) -> String {
    error.clone().unwrap_or_else(|| exit.describe())
}

/// One attempt: directories, input, execution, capture. Returns the exit, a rule/IO error that
/// fails the attempt even though the script succeeded, and the captured files. The pooled
/// directories it used are pushed onto `dirs` for the caller to release.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    ctx: &Arc<TaskContext>,
    step: &Arc<Step>,
    queued: &QueuedTask,
    gather: bool,
    key: &str,
    log_path: &std::path::Path,
    dirs: &mut Vec<PathBuf>,
) -> (Exit, Option<String>, Vec<CapturedFile>) {
    let scratch_dir = match ctx.workdirs.acquire() {
        Ok(dir) => dir,
        Err(e) => {
            return (
                Exit::SpawnFailed(format!("scratch directory: {e}")),
                None,
                Vec::new(),
            );
        }
    };
    dirs.push(scratch_dir.clone());
    let output_dir = match ctx.capture.start_task(key, step.policy.max_output) {
        Ok(dir) => dir,
        Err(e) => {
            return (
                Exit::SpawnFailed(format!("output capture: {e}")),
                None,
                Vec::new(),
            );
        }
    };
    let input = if gather {
        let input_dir = match ctx.workdirs.acquire() {
            Ok(dir) => dir,
            Err(e) => {
                return (
                    Exit::SpawnFailed(format!("input directory: {e}")),
                    None,
                    Vec::new(),
                );
            }
        };
        dirs.push(input_dir.clone());
        match gather_dir(ctx, queued.id, input_dir).await {
            Ok(path) => TaskInput::Dir { path },
            Err(e) => {
                return (
                    Exit::SpawnFailed(format!("preparing INPUT_DIR: {e}")),
                    None,
                    Vec::new(),
                );
            }
        }
    } else {
        match &queued.input {
            Some(input) => TaskInput::File {
                path: ctx.objects.path(&input.hash),
                name: input.name.clone(),
                hash: input.hash.clone(),
            },
            None => TaskInput::None,
        }
    };
    let spec = TaskSpec {
        task_id: queued.id,
        run_id: ctx.run_id,
        step: step.clone(),
        workdir: ctx.workdir.clone(),
        input,
        output_dir,
        scratch_dir,
        store_dir: ctx.paths.root.clone(),
        log_path: log_path.to_path_buf(),
        sandboxed: !ctx.no_sandbox && step.policy.sandbox == crate::manifest::SandboxMode::Strict,
    };
    let exit = ctx.executor.execute(&spec).await;
    if exit == Exit::Cancelled {
        return (exit, None, Vec::new());
    }
    // Collect the capture's verdict even when the script failed: what the capture refused (a
    // mkdir, a bad name, the quota, a full disk) is often why it failed, and belongs in its log.
    let capture = ctx.capture.clone();
    let key_owned = key.to_string();
    let finished = tokio::task::spawn_blocking(move || capture.finish_task(&key_owned)).await;
    let (files, error) = match finished {
        Ok(Ok((files, refusals))) => {
            for refusal in refusals {
                append_log(log_path, &format!("grit: {refusal}"));
            }
            (files, None)
        }
        Ok(Err(CaptureError::Rule(rule))) => (Vec::new(), Some(rule)),
        Ok(Err(e)) => (Vec::new(), Some(format!("capturing outputs failed: {e}"))),
        Err(e) => (Vec::new(), Some(format!("capturing outputs failed: {e}"))),
    };
    if !exit.success() {
        // The script's own failure is the task's error; a capture rule it broke is in the log.
        if let Some(rule) = &error {
            append_log(log_path, &format!("grit: {rule}"));
        }
        for file in files {
            let _ = crate::store::objects::remove_if_exists(&file.staged);
        }
        return (exit, None, Vec::new());
    }
    (exit, error, files)
}

/// Build a gather task's `INPUT_DIR` in `target`: hard links to the objects, named `<name>`, or
/// `<name>.<short hash>` where a name repeats (DESIGN §2.10).
async fn gather_dir(
    ctx: &Arc<TaskContext>,
    task_id: i64,
    target: PathBuf,
) -> std::io::Result<PathBuf> {
    let members = ctx
        .writer
        .call(move |conn| crate::store::schedule::gather_inputs(conn, task_id))
        .await
        .map_err(std::io::Error::other)?;
    let objects = ctx.objects.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        fs::create_dir_all(&target)?;
        let mut index = 0;
        while index < members.len() {
            let name = &members[index].0;
            let mut end = index + 1;
            while end < members.len() && &members[end].0 == name {
                end += 1;
            }
            let repeated = end - index > 1;
            for (name, hash) in &members[index..end] {
                let file = if repeated {
                    format!("{name}.{}", crate::store::short_hash(hash))
                } else {
                    name.clone()
                };
                fs::hard_link(objects.path(hash), target.join(file))?;
            }
            index = end;
        }
        Ok(target)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Move captured files into the object store.
fn adopt_outputs(
    objects: &Objects,
    files: Vec<CapturedFile>,
) -> std::io::Result<Vec<OutputRecord>> {
    let mut records = Vec::with_capacity(files.len());
    for file in files {
        objects.adopt(&file.staged, &file.hash)?;
        records.push(OutputRecord {
            name: file.name,
            hash: file.hash,
            size: file.size,
        });
    }
    Ok(records)
}

/// Store the task's log as an object; returns its hash (None if there was no log or it failed).
fn store_log(objects: &Objects, log_path: &std::path::Path) -> Option<String> {
    let (hash, _) = hash_file(log_path).ok()?;
    objects.adopt(log_path, &hash).ok()?;
    Some(hash)
}

fn append_log(path: &std::path::Path, line: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// The last lines of a log file (reads at most the final 64 KiB).
fn tail(path: &std::path::Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buffer = Vec::new();
    if file.read_to_end(&mut buffer).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buffer);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
