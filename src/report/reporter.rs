//! The observer `grit run` hands to the engine: it turns engine events into log records with the
//! structured `grit_*` fields (journald's `GRIT_*`), drives the progress bars, and remembers the
//! inputs of failed tasks for the summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use super::escape::printable;
use super::progress::Progress;
use super::summary::human_bytes;
use crate::engine::events::{Event, Observer};

/// The tracing target of per-task records.
pub const EVENTS_TARGET: &str = "grit::events";

/// An input resource: (name, hash).
type Input = (String, String);

pub struct Reporter {
    pipeline: String,
    run_id: AtomicI64,
    progress: Option<Arc<Progress>>,
    /// Inputs of running tasks (bounded by `-j`), moved to `failed` when a task fails.
    running: Mutex<HashMap<i64, Input>>,
    failed: Mutex<HashMap<i64, Input>>,
    /// The cluster job of each placed task still running, for its end's record.
    jobs: Mutex<HashMap<i64, String>>,
}

impl Reporter {
    pub fn new(pipeline: &str, progress: Option<Arc<Progress>>) -> Reporter {
        Reporter {
            pipeline: pipeline.to_string(),
            run_id: AtomicI64::new(0),
            progress,
            running: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// The input name of a task that failed in this run, for the summary.
    pub fn failed_input(&self, task_id: i64) -> Option<String> {
        self.failed
            .lock()
            .ok()?
            .get(&task_id)
            .map(|(name, _)| name.clone())
    }
}

impl Observer for Reporter {
    fn event(&self, event: &Event<'_>) {
        if let Some(progress) = &self.progress {
            progress.event(event);
        }
        let run = self.run_id.load(Ordering::Relaxed);
        match event {
            Event::RunStarted { run_id, recovered } => {
                self.run_id.store(*run_id, Ordering::Relaxed);
                tracing::info!(
                    target: EVENTS_TARGET,
                    grit_run = run_id,
                    grit_recovered = recovered,
                    "run {run_id} of {} started",
                    self.pipeline
                );
                if *recovered > 0 {
                    tracing::warn!(
                        grit_run = run_id,
                        "{recovered} task(s) left running by an interrupted run will run again"
                    );
                }
            }
            Event::TasksQueued { step, count } => {
                tracing::debug!(
                    target: EVENTS_TARGET,
                    grit_run = run,
                    grit_step = step,
                    "{count} task(s) of {step} queued"
                );
            }
            Event::TaskStarted {
                step,
                task_id,
                input,
                input_hash,
            } => {
                if let (Some(name), Some(hash)) = (input, input_hash)
                    && let Ok(mut running) = self.running.lock()
                {
                    running.insert(*task_id, (name.to_string(), hash.to_string()));
                }
                tracing::debug!(
                    target: EVENTS_TARGET,
                    grit_run = run,
                    grit_step = step,
                    grit_task = task_id,
                    grit_resource = input,
                    grit_hash = input_hash,
                    "task {task_id} of {step} started{}",
                    input
                        .map(|i| format!(" on {}", printable(i)))
                        .unwrap_or_default()
                );
            }
            Event::TaskPlaced {
                step,
                task_id,
                job,
                state,
            } => {
                if let Ok(mut jobs) = self.jobs.lock() {
                    jobs.insert(*task_id, job.to_string());
                }
                tracing::debug!(
                    target: EVENTS_TARGET,
                    grit_run = run,
                    grit_step = step,
                    grit_task = task_id,
                    grit_slurm_job = job,
                    grit_slurm_state = state,
                    "task {task_id} of {step}: Slurm job {job} {state}"
                );
            }
            Event::TaskFinished {
                step,
                task_id,
                succeeded,
                duration,
                outputs,
                error,
                hints,
            } => {
                let input = self.running.lock().ok().and_then(|mut r| r.remove(task_id));
                let job = self.jobs.lock().ok().and_then(|mut j| j.remove(task_id));
                let job = job.as_deref();
                let on_job = job
                    .map(|j| format!(" in Slurm job {j}"))
                    .unwrap_or_default();
                let (resource, hash) = match &input {
                    Some((name, hash)) => (Some(name.as_str()), Some(hash.as_str())),
                    None => (None, None),
                };
                let seconds = duration.as_secs_f64();
                if *succeeded {
                    tracing::info!(
                        target: EVENTS_TARGET,
                        grit_run = run,
                        grit_step = step,
                        grit_task = task_id,
                        grit_resource = resource,
                        grit_hash = hash,
                        grit_duration_s = seconds,
                        grit_outputs = outputs,
                        grit_slurm_job = job,
                        "task {task_id} of {step} succeeded in {seconds:.2}s with {outputs} output(s){on_job}"
                    );
                    for hint in hints.iter() {
                        tracing::warn!(
                            grit_run = run,
                            grit_step = step,
                            grit_task = task_id,
                            "task {task_id} of {step} succeeded, but its log suggests: {hint}"
                        );
                    }
                } else {
                    let error = error.unwrap_or("failed");
                    tracing::warn!(
                        target: EVENTS_TARGET,
                        grit_run = run,
                        grit_step = step,
                        grit_task = task_id,
                        grit_resource = resource,
                        grit_hash = hash,
                        grit_duration_s = seconds,
                        grit_slurm_job = job,
                        "task {task_id} of {step}{}{on_job} failed: {}",
                        resource
                            .map(|r| format!(" (input {})", printable(r)))
                            .unwrap_or_default(),
                        printable(error)
                    );
                    if let (Some(input), Ok(mut failed)) = (input, self.failed.lock()) {
                        failed.insert(*task_id, input);
                    }
                }
            }
            Event::Output {
                step,
                task_id,
                name,
                hash,
                size,
            } => {
                tracing::info!(
                    target: EVENTS_TARGET,
                    grit_run = run,
                    grit_step = step,
                    grit_task = task_id,
                    grit_resource = name,
                    grit_hash = hash,
                    grit_size = size,
                    "task {task_id} of {step} wrote {} {} ({})",
                    printable(name),
                    crate::store::short_hash(hash),
                    human_bytes(*size)
                );
            }
        }
    }
}
