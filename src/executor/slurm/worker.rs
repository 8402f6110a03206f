//! The compute-node side of the Slurm executor: `grit slurm-worker BATCH ELEMENT` (hidden from
//! `--help`), which one array element of a submission runs. It loads the manifest as the run did,
//! refuses a step whose version changed since submission, and runs its group of tasks one after
//! the other through the local [`ProcessExecutor`] (the same sandbox as a local run), each into
//! its own work directory on the shared filesystem, with the element's one scratch directory
//! (emptied after each task). Per task it appends `started` to the
//! element's log, runs the task, hashes what it left in `out/`, and appends its result
//! ([`wire::ElementEvent`]). It never opens the database: only the submitting grit publishes.
//!
//! Slurm ends a job with SIGTERM (time limit, `scancel`, preemption): the running task is
//! killed, and no result is written for it or the tasks after it; the submitting grit learns why
//! from Slurm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::wire::{
    self, Batch, ElementEvent, TaskResult, WireExit, WireInput, WireOutput, WireTask,
};
use crate::cancel::CancelToken;
use crate::executor::process::ProcessExecutor;
use crate::executor::{Executor, Exit, TaskControl, TaskInput, TaskSpec};
use crate::manifest::{self, Step};
use crate::store::objects::hash_file;

/// How long a failed task's end waits for a stop signal that may have killed it.
const SIGNAL_SETTLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Run element `element` of the batch in `batch_file`; the process's exit status is 0 unless
/// the batch itself cannot be read (a task's failure is in its result).
pub fn run(batch_file: &Path, element: usize) -> anyhow::Result<()> {
    let batch: Batch = wire::read(batch_file)
        .with_context(|| format!("reading the batch {}", batch_file.display()))?;
    let group = batch.groups.get(element).cloned().with_context(|| {
        format!(
            "{} has {} groups; there is no element {element}",
            batch_file.display(),
            batch.groups.len()
        )
    })?;
    let job_id = job_id();
    let batch_dir = batch_file.parent().unwrap_or_else(|| Path::new("."));
    let log = wire::element_log(batch_dir, element);
    let tell = |event: &ElementEvent| {
        wire::append_event(&log, event).with_context(|| format!("writing {}", log.display()))
    };
    let step = match load_step(&batch) {
        Ok(step) => step,
        Err(why) => {
            // Every task of the group fails with the reason; none runs a step it was not meant to.
            for task in &group {
                let result = TaskResult {
                    exit: WireExit::SpawnFailed { error: why.clone() },
                    duration_ms: 0,
                    outputs: Vec::new(),
                    node: node_name(),
                    job_id: job_id.clone(),
                };
                tell(&ElementEvent::Finished {
                    key: task.key.clone(),
                    result,
                })?;
            }
            return Ok(());
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // One scratch directory for the element, emptied after each task: a directory made on the
    // shared filesystem per task, and removed again by the submitting grit, cost more than the
    // tiny tasks themselves. Emptied first too, in case Slurm runs the element again.
    let scratch = wire::element_scratch(batch_dir, element);
    crate::store::access::create_dir_all(&scratch, 0o700)
        .and_then(|()| crate::store::staging::clear(&scratch))
        .with_context(|| format!("preparing {}", scratch.display()))?;
    runtime.block_on(async {
        let cancel = CancelToken::new();
        let _signals = crate::commands::interrupt::cancel_on_signals(cancel.clone())?;
        let executor = ProcessExecutor::new();
        let control = TaskControl {
            cancel: cancel.clone(),
            lines: None,
            placed: None,
            gate: None,
            ran_for: None,
        };
        for task in &group {
            if cancel.reason().is_some() {
                break;
            }
            tell(&ElementEvent::Started {
                key: task.key.clone(),
            })?;
            let Some(result) =
                run_one(&executor, &control, &batch, &step, task, &scratch, &job_id).await?
            else {
                break;
            };
            tell(&ElementEvent::Finished {
                key: task.key.clone(),
                result,
            })?;
        }
        executor.run_ended();
        anyhow::Ok(())
    })
}

/// The batch's step from the manifest, as the run bound it; an error message if it is gone or
/// changed.
fn load_step(batch: &Batch) -> Result<Arc<Step>, String> {
    let loaded = manifest::load_starting_at(&batch.manifest, batch.start.as_deref())
        .map_err(|e| format!("cannot load the manifest on this node: {e}"))?;
    let mut manifest = loaded.manifest;
    manifest
        .bind_params(&batch.params)
        .map_err(|e| format!("the run's parameters no longer fit the manifest: {e}"))?;
    let step = manifest.step(&batch.step).cloned().ok_or_else(|| {
        format!(
            "step `{}` is no longer in {}",
            batch.step,
            batch.manifest.display()
        )
    })?;
    if step.version_hash() != batch.version {
        return Err(format!(
            "step `{}` changed in {} after its tasks were submitted; run grit again",
            batch.step,
            batch.manifest.display()
        ));
    }
    Ok(Arc::new(step))
}

/// Runs one task; `None` when the job is being stopped (no result: Slurm says why).
async fn run_one(
    executor: &ProcessExecutor,
    control: &TaskControl,
    batch: &Batch,
    step: &Arc<Step>,
    task: &WireTask,
    scratch_dir: &Path,
    job_id: &str,
) -> anyhow::Result<Option<TaskResult>> {
    let work = wire::work_dir(&batch.store, &task.key);
    let output_dir = work.join("out");
    crate::store::access::create_dir_all(&output_dir, 0o700)
        .with_context(|| format!("creating {}", output_dir.display()))?;

    let input = match &task.input {
        WireInput::None => TaskInput::None,
        WireInput::File { path, name, hash } => TaskInput::File {
            path: path.clone(),
            name: name.clone(),
            hash: hash.clone(),
        },
        WireInput::Dir { path } => TaskInput::Dir { path: path.clone() },
    };
    let manifest_dir = batch
        .manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let spec = TaskSpec {
        task_id: task.task_id,
        run_id: task.run_id,
        step: step.clone(),
        workdir: manifest_dir,
        input,
        output_dir: output_dir.clone(),
        scratch_dir: scratch_dir.to_path_buf(),
        store_dir: batch.store.clone(),
        log_path: work.join("log"),
        sandboxed: batch.sandboxed,
        admission: None,
    };
    let started = Instant::now();
    let exit = executor.execute(&spec, control).await;
    // What the task left in scratch goes with it; the element's next task starts clean.
    crate::store::staging::clear(scratch_dir)
        .with_context(|| format!("emptying {}", scratch_dir.display()))?;
    if !exit.success() {
        // Slurm signals every process of a job at once: the script may die of the SIGTERM
        // before this process has seen its own. A job being stopped writes no result; Slurm's
        // reason is the task's.
        tokio::time::sleep(SIGNAL_SETTLE).await;
        if control.cancel.reason().is_some() {
            return Ok(None);
        }
    }
    let Some(exit_wire) = WireExit::from_exit(&exit) else {
        return Ok(None);
    };
    let outputs = if exit == Exit::Code(0) {
        match hash_outputs(&output_dir) {
            Ok(outputs) => outputs,
            Err(e) => {
                return Ok(Some(TaskResult {
                    exit: WireExit::SpawnFailed {
                        error: format!("hashing the outputs on {}: {e}", node_name()),
                    },
                    duration_ms: elapsed_ms(started),
                    outputs: Vec::new(),
                    node: node_name(),
                    job_id: job_id.to_string(),
                }));
            }
        }
    } else {
        Vec::new()
    };
    Ok(Some(TaskResult {
        exit: exit_wire,
        duration_ms: elapsed_ms(started),
        outputs,
        node: node_name(),
        job_id: job_id.to_string(),
    }))
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The regular files a task left in its `out/`, hashed. Anything else (directories, links, bad
/// names) is left for the submitting grit's capture to refuse with its usual message.
fn hash_outputs(dir: &Path) -> std::io::Result<Vec<WireOutput>> {
    let mut outputs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let (hash, size) = hash_file(&entry.path())?;
        outputs.push(WireOutput { name, hash, size });
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(outputs)
}

/// This job's id as squeue names it: `ARRAYID_INDEX` for an array element.
fn job_id() -> String {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(array), Some(index)) => format!("{array}_{index}"),
        _ => var("SLURM_JOB_ID").unwrap_or_else(|| "?".into()),
    }
}

fn node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "?".into())
}
