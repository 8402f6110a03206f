//! The life of one task inside a run: its private directories, its attempts (retries), output
//! capture, and storing its outputs and log as objects. The result is a [`TaskRecord`] that the
//! scheduler publishes in one transaction.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::capture::{Capture, CaptureError, CapturedFile, ServedInput};
use crate::executor::{Executor, Exit, RanFor, ScriptGate, TaskControl, TaskInput, TaskSpec};
use crate::manifest::Step;
use crate::sandbox::hints;
use crate::store::objects::{ObjectError, Objects, VerifiedCache, hash_file};
use crate::store::publish::{FactSource, OutputRecord, TaskRecord};
use crate::store::schedule::{InputRef, QueuedTask};
use crate::store::staging::DirPool;
use crate::store::{StorePaths, Writer};

use super::input_dir::input_dir_names;

/// What every task of a run shares.
pub struct TaskContext {
    pub run_id: i64,
    pub paths: StorePaths,
    pub objects: Objects,
    pub workdir: PathBuf,
    pub executor: Arc<dyn Executor>,
    /// What the run lends the executor for each task: its cancellation and the line sink.
    pub control: TaskControl,
    pub capture: Arc<dyn Capture>,
    pub writer: Writer,
    pub no_sandbox: bool,
    /// Scratch (`TMPDIR`/`HOME`) and gather input directories.
    pub workdirs: DirPool,
    /// Input objects verified in this run (each is hashed once, however many tasks read it).
    pub verified: VerifiedCache,
}

/// The outcome of a task, ready to publish, with what the summary needs.
pub struct Finished {
    pub record: TaskRecord,
    pub exit: Exit,
    /// The last lines of the log, for failures.
    pub log_tail: Vec<String>,
    /// What the log suggests the sandbox hid (see [`crate::sandbox::hints`]), failed or not.
    pub hints: Vec<String>,
    /// The task did not run because an input object is missing or corrupt.
    pub store_damaged: bool,
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
    gate: Option<ScriptGate>,
) -> Finished {
    let started = Instant::now();
    let task_id = queued.id;
    let log_path = ctx
        .paths
        .tmp
        .join(format!("t{task_id}-r{}.log", ctx.run_id));
    // Inputs are checked before the first attempt: a task never runs on bytes the store did not
    // record, and retrying cannot help when an input is damaged.
    if let Err(damage) = verify_inputs(&ctx, &queued, gather).await {
        let message = format!("not started: {damage}");
        append_log(&log_path, &format!("grit: task {message}"));
        return Finished {
            record: TaskRecord {
                task_id,
                run_id: ctx.run_id,
                succeeded: false,
                attempts: 0,
                exit_code: None,
                error: Some(message),
                log_hash: store_log(&ctx.objects, &log_path),
                duration_ms: started.elapsed().as_millis() as u64,
                source: None,
                outputs: Vec::new(),
            },
            exit: Exit::SpawnFailed(if damage.is_damage() {
                "an input object is damaged (the store is damaged)".into()
            } else {
                "an input object cannot be read".into()
            }),
            log_tail: last_lines(&tail_text(&log_path)),
            hints: Vec::new(),
            store_damaged: damage.is_damage(),
        };
    }
    let verified_at = Instant::now();
    // What an executor running tasks elsewhere measured there (see `RanFor`).
    let ran_for = RanFor::default();
    let mut attempts = 0;
    let (exit, mut error, files, key, dirs) = loop {
        attempts += 1;
        // Unique per run and attempt: a capture never mixes two attempts' files.
        let key = format!("t{task_id}-r{}-a{attempts}", ctx.run_id);
        let mut dirs = Vec::new();
        let control = TaskControl {
            gate: gate.clone(),
            ran_for: Some(ran_for.clone()),
            ..ctx.control.clone()
        };
        let (exit, error, files) = attempt(
            &ctx, &step, &queued, gather, &key, &log_path, &mut dirs, &control,
        )
        .await;
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
    let ran_at = Instant::now();

    let ran_ok = exit.success() && error.is_none();
    if !ran_ok && error.is_none() {
        error = Some(exit.describe());
    }
    let post = ctx.clone();
    let failure = error.clone();
    let view = hints::View::of(&step.policy, &ctx.workdir, ctx.no_sandbox);
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
        let text = tail_text(&log_path);
        let log_tail = if error.is_some() {
            last_lines(&text)
        } else {
            Vec::new()
        };
        let hints = match &view {
            Some(view) => hints::hints(&text, view, std::env::var_os("PATH").as_deref()),
            None => Vec::new(),
        };
        // In the stored log too, so `grit log` shows them.
        for hint in &hints {
            append_log(&log_path, &format!("grit: hint: {hint}"));
        }
        let log_hash = store_log(&post.objects, &log_path);
        (outputs, error, log_tail, log_hash, hints)
    })
    .await;
    let stored_at = Instant::now();
    tracing::trace!(
        target: "grit::timing",
        task = task_id,
        verify_us = (verified_at - started).as_micros() as u64,
        attempts_us = (ran_at - verified_at).as_micros() as u64,
        store_us = (stored_at - ran_at).as_micros() as u64,
        "task phases"
    );
    let (outputs, error, log_tail, log_hash, hints) = match finished {
        Ok(done) => done,
        Err(e) => (
            Vec::new(),
            Some(format!("storing outputs failed: {e}")),
            Vec::new(),
            None,
            Vec::new(),
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
            // Its wait for a turn to run its script is not part of it. An executor that timed
            // the attempts where they ran (a cluster's node) gives the duration: every task of
            // a big step is in flight here at once, so the time here is mostly queueing.
            duration_ms: match ran_for.total() {
                Some(ran) => ran,
                None => started
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_micros(
                        gate.as_ref().map_or(0, |g| {
                            g.waited_us.load(std::sync::atomic::Ordering::Relaxed)
                        }),
                    )),
            }
            .as_millis() as u64,
            source: step.is_source().then(|| FactSource {
                name: step.name.clone(),
                keep: step.keep,
            }),
            outputs,
        },
        exit,
        log_tail,
        hints,
        store_damaged: false,
    }
}

/// Verify the objects a task is about to read (its input, or a gather task's whole input set)
/// against their recorded size and hash. The sandbox hands the object file itself to the script
/// (a read-only bind mount, or hard links for `INPUT_DIR`), so this is the last point where grit
/// sees the bytes before the script does.
async fn verify_inputs(
    ctx: &Arc<TaskContext>,
    queued: &QueuedTask,
    gather: bool,
) -> Result<(), ObjectError> {
    let task_id = queued.id;
    let inputs = if gather {
        match ctx
            .writer
            .call(move |conn| crate::store::schedule::gather_inputs(conn, task_id))
            .await
        {
            Ok(members) => members,
            // The gather directory cannot be built either; that attempt reports the error.
            Err(_) => return Ok(()),
        }
    } else {
        queued.input.iter().cloned().collect()
    };
    if inputs.is_empty() {
        return Ok(());
    }
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        for input in &inputs {
            let what = format!("input {}", input.name);
            ctx.verified
                .verify(&ctx.objects, &input.hash, Some(input.size), &what)?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| {
        Err(ObjectError::Io {
            what: "an input".into(),
            hash: String::new(),
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })
    })
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
    control: &TaskControl,
) -> (Exit, Option<String>, Vec<CapturedFile>) {
    let begun = Instant::now();
    let scratch_dir = if ctx.executor.needs_scratch_dir() {
        match ctx.workdirs.acquire() {
            Ok(dir) => {
                dirs.push(dir.clone());
                dir
            }
            Err(e) => {
                return (
                    Exit::SpawnFailed(format!("scratch directory: {e}")),
                    None,
                    Vec::new(),
                );
            }
        }
    } else {
        PathBuf::new()
    };
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
    let input = match task_input(ctx, queued, gather, key, dirs).await {
        Ok(input) => input,
        Err(e) => return (Exit::SpawnFailed(e), None, Vec::new()),
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
        admission: Some(crate::capture::Admission {
            capture: ctx.capture.clone(),
            key: key.to_string(),
        }),
    };
    let prepared = Instant::now();
    let exit = ctx.executor.execute(&spec, control).await;
    let executed = Instant::now();
    if exit == Exit::Cancelled {
        return (exit, None, Vec::new());
    }
    // Collect the capture's verdict even when the script failed: what the capture refused (a
    // mkdir, a bad name, the quota, a full disk) is often why it failed, and belongs in its log.
    let capture = ctx.capture.clone();
    let key_owned = key.to_string();
    let finished = tokio::task::spawn_blocking(move || capture.finish_task(&key_owned)).await;
    tracing::trace!(
        target: "grit::timing",
        task = queued.id,
        prepare_us = (prepared - begun).as_micros() as u64,
        execute_us = (executed - prepared).as_micros() as u64,
        capture_us = executed.elapsed().as_micros() as u64,
        "attempt phases"
    );
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
        // A full store filesystem also swallows the script's own complaint (its log lives
        // there too), so grit names the reason itself.
        // The FUSE capture reports a write the staging area refused (ENOSPC) itself.
        let staging_refused = error
            .as_deref()
            .is_some_and(|e| e.contains("(ENOSPC) in the staging area"));
        let full = store_filesystem_full(&ctx.paths.tmp, staging_refused);
        for file in files {
            let _ = crate::store::objects::remove_if_exists(&file.staged);
        }
        return (exit, full, Vec::new());
    }
    (exit, error, files)
}

/// Free space below which a failed task is reported as failed for lack of space.
const FULL_BELOW: u64 = 64 * 1024;

/// The reason to give when the store's filesystem (where outputs and logs are staged) has no
/// room left: the capture saw a write refused there (`refused`), or the filesystem is still full
/// right after the failed script, before its partial outputs are discarded.
fn store_filesystem_full(staging: &std::path::Path, refused: bool) -> Option<String> {
    // The statvfs field types are u64 on 64-bit Linux but narrower on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let free = nix::sys::statvfs::statvfs(staging)
        .map(|stat| (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
        .unwrap_or(u64::MAX);
    (refused || free < FULL_BELOW).then(|| {
        format!(
            "no space left on device: the store's filesystem ({}) is full; nothing of this task was kept. Free some space (`grit gc` removes history) and run again",
            staging.display()
        )
    })
}

/// The task's input as the script will see it: served by the capture where it can (ordinary
/// file modes, read-only; see [`Capture::serve_inputs`]), else the objects themselves (a hard-link
/// directory for a gather). Errors are the reason the attempt cannot start.
///
/// [`Capture::serve_inputs`]: crate::capture::Capture::serve_inputs
async fn task_input(
    ctx: &Arc<TaskContext>,
    queued: &QueuedTask,
    gather: bool,
    key: &str,
    dirs: &mut Vec<PathBuf>,
) -> Result<TaskInput, String> {
    let served = |inputs: &[ServedInput]| {
        ctx.capture
            .serve_inputs(key, inputs)
            .map_err(|e| format!("serving the inputs: {e}"))
    };
    if gather {
        let task_id = queued.id;
        let members = ctx
            .writer
            .call(move |conn| crate::store::schedule::gather_inputs(conn, task_id))
            .await
            .map_err(|e| format!("preparing INPUT_DIR: {e}"))?;
        let listing = gather_listing(&ctx.objects, &members);
        if let Some(path) = served(&listing)? {
            return Ok(TaskInput::Dir { path });
        }
        let input_dir = ctx
            .workdirs
            .acquire()
            .map_err(|e| format!("input directory: {e}"))?;
        dirs.push(input_dir.clone());
        let path = tokio::task::spawn_blocking(move || link_gather_dir(&listing, input_dir))
            .await
            .map_err(std::io::Error::other)
            .and_then(|linked| linked)
            .map_err(|e| format!("preparing INPUT_DIR: {e}"))?;
        return Ok(TaskInput::Dir { path });
    }
    let Some(input) = &queued.input else {
        return Ok(TaskInput::None);
    };
    let object = ctx.objects.path(&input.hash);
    let path = match served(&[ServedInput {
        name: input.name.clone(),
        path: object.clone(),
        size: input.size,
    }])? {
        Some(dir) => dir.join(&input.name),
        None => object,
    };
    Ok(TaskInput::File {
        path,
        name: input.name.clone(),
        hash: input.hash.clone(),
    })
}

/// A gather task's `INPUT_DIR` entries: each member under a name of its own (see
/// [`input_dir_names`]).
fn gather_listing(objects: &Objects, members: &[InputRef]) -> Vec<ServedInput> {
    members
        .iter()
        .zip(input_dir_names(members))
        .map(|(member, name)| ServedInput {
            name,
            path: objects.path(&member.hash),
            size: member.size,
        })
        .collect()
}

/// `INPUT_DIR` as hard links to the objects, where the capture does not serve inputs.
fn link_gather_dir(listing: &[ServedInput], target: PathBuf) -> std::io::Result<PathBuf> {
    fs::create_dir_all(&target)?;
    for input in listing {
        fs::hard_link(&input.path, target.join(&input.name))?;
    }
    Ok(target)
}

/// Move captured files into the object store.
fn adopt_outputs(
    objects: &Objects,
    files: Vec<CapturedFile>,
) -> std::io::Result<Vec<OutputRecord>> {
    // All at once: their durability costs one flush of the disk, not one per file.
    objects.adopt_all(
        files
            .iter()
            .map(|file| (file.staged.as_path(), file.hash.as_str())),
    )?;
    Ok(files
        .into_iter()
        .map(|file| OutputRecord {
            name: file.name,
            hash: file.hash,
            size: file.size,
        })
        .collect())
}

/// Store the task's log as an object; returns its hash (None if there was no log or it failed).
fn store_log(objects: &Objects, log_path: &std::path::Path) -> Option<String> {
    let (hash, _) = hash_file(log_path).ok()?;
    objects.adopt(log_path, &hash).ok()?;
    Some(hash)
}

fn append_log(path: &std::path::Path, line: &str) {
    if let Ok(mut file) = crate::store::access::open_append_private(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// The end of a log file: at most its final 64 KiB.
fn tail_text(path: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buffer = Vec::new();
    if file.read_to_end(&mut buffer).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The last lines of a log's text.
fn last_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
