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
use crate::store::publish::{OutputRecord, TaskRecord};
use crate::store::schedule::QueuedTask;
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
}

/// The outcome of a task, ready to publish, with what the summary needs.
pub struct Finished {
    pub record: TaskRecord,
    pub exit: Exit,
    /// The last lines of the log, for failures.
    pub log_tail: Vec<String>,
}

/// Lines of a failed task's log shown in the run summary.
const TAIL_LINES: usize = 10;

pub async fn run_task(
    ctx: Arc<TaskContext>,
    step: Arc<Step>,
    queued: QueuedTask,
    gather: bool,
) -> Finished {
    let started = Instant::now();
    let task_id = queued.id;
    let log_path = ctx.paths.tmp.join(format!("t{task_id}.log"));
    let mut attempts = 0;
    let mut exit;
    let mut error: Option<String>;
    let mut outputs: Vec<OutputRecord> = Vec::new();
    loop {
        attempts += 1;
        let key = format!("t{task_id}-a{attempts}");
        let result = attempt(&ctx, &step, &queued, gather, &key, attempts, &log_path).await;
        exit = result.0;
        error = result.1;
        let files = result.2;
        let task_dir = ctx.paths.tmp.join(&key);
        if exit.success() && error.is_none() {
            match adopt_outputs(&ctx.objects, files).await {
                Ok(records) => outputs = records,
                Err(e) => error = Some(format!("storing outputs failed: {e}")),
            }
        } else {
            ctx.capture.discard_task(&key);
        }
        let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(task_dir)).await;
        let succeeded = exit.success() && error.is_none();
        if succeeded || exit == Exit::Cancelled || attempts > step.retries {
            break;
        }
        append_log(
            &log_path,
            &format!(
                "grit: attempt {attempts} failed ({}); retrying",
                failure_text(&exit, &error)
            ),
        );
    }
    let succeeded = exit.success() && error.is_none();
    if !succeeded && error.is_none() {
        error = Some(exit.describe());
    }
    if let Some(message) = &error {
        append_log(&log_path, &format!("grit: task failed: {message}"));
    }
    let log_tail = if succeeded {
        Vec::new()
    } else {
        tail(&log_path)
    };
    let log_hash = store_log(&ctx.objects, log_path).await;
    Finished {
        record: TaskRecord {
            task_id,
            run_id: ctx.run_id,
            succeeded,
            attempts,
            exit_code: exit.code(),
            error,
            log_hash,
            duration_ms: started.elapsed().as_millis() as u64,
            facts: step.is_source(),
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
/// fails the attempt even though the script succeeded, and the captured files.
async fn attempt(
    ctx: &Arc<TaskContext>,
    step: &Arc<Step>,
    queued: &QueuedTask,
    gather: bool,
    key: &str,
    attempt: u32,
    log_path: &std::path::Path,
) -> (Exit, Option<String>, Vec<CapturedFile>) {
    let task_dir = ctx.paths.tmp.join(key);
    let scratch_dir = task_dir.join("scratch");
    if let Err(e) = fs::create_dir_all(&scratch_dir) {
        return (
            Exit::SpawnFailed(format!("{}: {e}", scratch_dir.display())),
            None,
            Vec::new(),
        );
    }
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
        match gather_dir(ctx, queued.id, &task_dir).await {
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
        attempt,
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
    if !exit.success() {
        return (exit, None, Vec::new());
    }
    let capture = ctx.capture.clone();
    let key_owned = key.to_string();
    let finished = tokio::task::spawn_blocking(move || capture.finish_task(&key_owned)).await;
    match finished {
        Ok(Ok((files, refusals))) => {
            for refusal in refusals {
                append_log(log_path, &format!("grit: {refusal}"));
            }
            (exit, None, files)
        }
        Ok(Err(CaptureError::Rule(rule))) => (exit, Some(rule), Vec::new()),
        Ok(Err(e)) => (
            exit,
            Some(format!("capturing outputs failed: {e}")),
            Vec::new(),
        ),
        Err(e) => (
            exit,
            Some(format!("capturing outputs failed: {e}")),
            Vec::new(),
        ),
    }
}

/// Build a gather task's `INPUT_DIR`: hard links to the objects, named `<name>`, or
/// `<name>.<short hash>` where a name repeats (DESIGN §2.10).
async fn gather_dir(
    ctx: &Arc<TaskContext>,
    task_id: i64,
    task_dir: &std::path::Path,
) -> std::io::Result<PathBuf> {
    let members = ctx
        .writer
        .call(move |conn| crate::store::schedule::gather_inputs(conn, task_id))
        .await
        .map_err(std::io::Error::other)?;
    let dir = task_dir.join("in");
    let objects = ctx.objects.clone();
    let target = dir.clone();
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
                    format!("{name}.{}", &hash[..12])
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

/// Move captured files into the object store (off the runtime thread: fsync and rename block).
async fn adopt_outputs(
    objects: &Objects,
    files: Vec<CapturedFile>,
) -> std::io::Result<Vec<OutputRecord>> {
    let objects = objects.clone();
    tokio::task::spawn_blocking(move || {
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
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Store the task's log as an object; returns its hash (None if there was no log or it failed).
async fn store_log(objects: &Objects, log_path: PathBuf) -> Option<String> {
    let objects = objects.clone();
    tokio::task::spawn_blocking(move || {
        if !log_path.exists() {
            return None;
        }
        let (hash, _) = hash_file(&log_path).ok()?;
        objects.adopt(&log_path, &hash).ok()?;
        Some(hash)
    })
    .await
    .ok()
    .flatten()
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
