//! The engine: one `grit run` as a dataflow scheduler (DESIGN §2).
//!
//! The queue of work lives in SQLite: the engine pulls pending tasks page by page per step, starts
//! them within the global `-j` and each step's `parallel` cap, and publishes finished tasks by
//! group commit: one transaction marks tasks started since the last one running (as many as
//! `-j` and `parallel` leave room for, counting the tasks it publishes: [`marks`]) and publishes
//! every task finished meanwhile (each task's outputs, state, and the downstream tasks its outputs
//! trigger), one group in flight at a time, so the scheduler never waits for the writer. When nothing is
//! pending or running, gather steps get their turn on the complete live set; the run ends when that
//! adds no work either. A gather step upstream of which a task failed in this run is held back
//! instead (its set is partial) and keeps its previous output, unless it says `gather_partial`.
//!
//! Everything a run uses comes in its [`RunInputs`] (the store's writer, the output capture, the
//! executor) and its [`CancelToken`]; the engine prints nothing, never exits, installs no signal
//! handler and keeps no process-wide state, so a process may run engines one after the other or
//! at once on different stores. Which tasks run is `store::decide`'s rule, which the dry run's
//! plan follows too.

pub mod events;
mod input_dir;
mod marks;
#[cfg(test)]
mod seam_tests;
pub mod task;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::capture::Capture;
use crate::executor::{Executor, LineSink, ScriptGate, TaskControl};
use crate::manifest::{Manifest, ParamError, Step};
use crate::store::decide::{VersionStatus, Why};
use crate::store::runs::{self, RunTotals, StepKind};
use crate::store::schedule::{self, MapStep, QueuedTask};
use crate::store::{
    StoreError, StorePaths, Writer, liveness, objects::Objects, provenance, publish, verify,
};
use marks::RunningMarks;
// Cancellation is shared with the executor (which stops a task's processes), so it lives beside
// both; `engine::cancel` stays its embedding path.
pub use crate::cancel;
pub use crate::cancel::{CancelReason, CancelToken};
use events::{Event, Observer};
use task::{Finished, TaskContext};

/// Tasks fetched from SQLite per step at a time.
const PAGE: usize = 256;

/// How the user asked the run to behave.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub jobs: usize,
    /// Only these steps may run (empty: all).
    pub only_steps: Vec<String>,
    /// Steps whose current tasks all run again (`--force-step`).
    pub force_steps: Vec<String>,
    pub max_tasks: Option<u64>,
    pub no_sandbox: bool,
    /// Run parameter values given for this run (`--param`); the manifest's defaults fill the
    /// rest. An undeclared name, or a required parameter without a value, fails the run before
    /// anything runs ([`EngineError::Params`]).
    pub params: BTreeMap<String, String>,
}

/// One failed task, for the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub step: String,
    pub task: i64,
    pub status: String,
    pub error: String,
    pub log_tail: Vec<String>,
    /// What the log suggests the sandbox hid ([`crate::sandbox::hints`]).
    pub hints: Vec<String>,
    /// It did not run because an input object is missing or corrupt.
    pub store_damaged: bool,
}

/// A gather step that did not run on a partial set, for the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldGather {
    pub step: String,
    /// The steps upstream of it with a failed task in this run.
    pub failed_upstream: Vec<String>,
    /// The steps upstream of it that this run leaves out (`--step`) and that have a failed task
    /// from an earlier run.
    pub failed_earlier: Vec<String>,
    /// Whether an earlier output of the step stays live.
    pub previous_output: bool,
}

/// Per-step numbers for the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepStats {
    pub name: String,
    pub executed: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Sum of task durations.
    pub busy_ms: u64,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run: i64,
    /// The run's parameter values (declared defaults and the values given).
    pub params: BTreeMap<String, String>,
    #[serde(flatten)]
    pub totals: RunTotals,
    pub elapsed_s: f64,
    pub bytes_captured: u64,
    pub steps: Vec<StepStats>,
    pub failures: Vec<Failure>,
    /// Gather steps held back because a task upstream of them failed.
    pub held: Vec<HeldGather>,
    /// The signal that interrupted the run, if any.
    pub interrupted: Option<i32>,
    /// The run was cancelled through its [`CancelToken`] (by a signal or a client): running tasks
    /// were killed and published nothing, and the run is recorded as interrupted.
    #[serde(skip)]
    pub cancelled: bool,
    pub recovered: u64,
    /// How outputs were captured: `fuse` or `dir`.
    pub capture: &'static str,
    /// Accesses to running tasks' `OUTPUT_DIR` from outside the tasks that the capture refused,
    /// one line per caller (empty for the dir capture, which leaves that to file modes).
    pub refused_accesses: Vec<String>,
    /// Live resources whose object is gone (checked with a stat each at the end of the run).
    pub missing_objects: Vec<verify::MissingObject>,
}

impl RunReport {
    /// The store is damaged: a task could not run because an input object is missing or corrupt,
    /// or a live resource's object is gone.
    pub fn store_damaged(&self) -> bool {
        !self.missing_objects.is_empty() || self.failures.iter().any(|f| f.store_damaged)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
    /// The run's parameter values do not fit the manifest's declarations (a usage error).
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// A task started ahead may run its script now (or ended without): it is running from here on,
/// for the observer and, once a group commit has room for it ([`marks`]), in the store.
fn turn_came(
    awaiting_turn: &mut HashMap<i64, (usize, Option<crate::store::schedule::InputRef>)>,
    task_id: i64,
    slots: &[StepSlot],
    marks: &mut RunningMarks,
    observer: &dyn Observer,
) {
    let Some((index, input)) = awaiting_turn.remove(&task_id) else {
        return;
    };
    marks.started(index, task_id);
    observer.event(&Event::TaskStarted {
        step: &slots[index].step.name,
        task_id,
        input: input.as_ref().map(|i| i.name.as_str()),
        input_hash: input.as_ref().map(|i| i.hash.as_str()),
    });
}

/// Scheduling state of one current step.
struct StepSlot {
    step: Arc<Step>,
    version_id: i64,
    kind: StepKind,
    /// How its version related to the store when the run began: the reason its new tasks record.
    version: VersionStatus,
    allowed: bool,
    cap: usize,
    /// Tasks started and not yet past their script: running, or set up and waiting for their
    /// turn (see `lookahead` in [`run`]).
    running: usize,
    /// The step's `parallel` as a semaphore, for tasks started ahead (see [`ScriptGate`]).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    queue: VecDeque<QueuedTask>,
    /// Gather steps: which steps may feed this one (by slot index).
    upstream: Vec<bool>,
    /// A task of this step failed in this run, or, for a step this run does not run
    /// (`--step`), in an earlier one and was not retried since.
    failed: bool,
    /// Gather steps: the task whose outputs were live when the run began, which a hold keeps
    /// when the run has already replaced its inputs ([`schedule::hold_gather`]).
    live_at_start: Option<i64>,
    /// `--force-step` asks for this gather step to run again; cleared once it has been queued.
    force_gather: bool,
    /// Highest task id fetched so far: the next page starts after it.
    cursor: i64,
    /// No pending task left in SQLite beyond `cursor` (until publishing creates more).
    exhausted: bool,
    /// Ids of the tasks fetched in this run (by page or revived): a task made pending again
    /// behind the cursor is queued unless it is among them ([`take_new_work`]).
    fetched: HashSet<i64>,
}

/// Hand the engine the tasks that new live resources created or made pending again
/// ([`schedule::NewWork`]): new tasks are paged past the cursor; revived ones, which may lie
/// behind it, are queued here unless this run fetched them already. Returns whether any task
/// was added.
fn take_new_work(
    slots: &mut [StepSlot],
    by_version: &HashMap<i64, usize>,
    observer: &dyn Observer,
    work: schedule::NewWork,
) -> bool {
    let mut added = false;
    for (version_id, count) in work.created {
        if let Some(&target) = by_version.get(&version_id) {
            slots[target].exhausted = false;
            observer.event(&Event::TasksQueued {
                step: &slots[target].step.name,
                count,
            });
            added = true;
        }
    }
    for (version_id, task) in work.revived {
        if let Some(&target) = by_version.get(&version_id) {
            let slot = &mut slots[target];
            if slot.fetched.insert(task.id) {
                slot.queue.push_back(task);
                observer.event(&Event::TasksQueued {
                    step: &slot.step.name,
                    count: 1,
                });
                added = true;
            }
        }
    }
    added
}

impl StepSlot {
    /// The reason recorded for a task of this step that does not exist yet (the dry run's words).
    fn fresh_reason(&self) -> &'static str {
        Why::Fresh.text(self.kind, self.version)
    }
}

/// Everything a run needs from the outside.
pub struct RunInputs {
    pub manifest: Manifest,
    pub paths: StorePaths,
    pub writer: Writer,
    pub capture: Arc<dyn Capture>,
    /// Where tasks' scripts run ([`crate::executor::process::ProcessExecutor`] on this machine).
    /// One executor may serve several runs, one after the other or at once.
    pub executor: Arc<dyn Executor>,
    pub lines: Option<LineSink>,
    pub options: RunOptions,
}

/// Tells the executor that the run is over when dropped (also when the run ends with an error),
/// which must happen before the run's capture goes: see [`Executor::run_ended`].
struct RunEnded(Arc<dyn Executor>);

impl Drop for RunEnded {
    fn drop(&mut self) {
        self.0.run_ended();
    }
}

/// Run the pipeline once: the embeddable entry point of the engine.
///
/// Progress goes to `observer` as [`Event`]s; the engine prints nothing, never exits and installs
/// no signal handlers. Cancelling `cancel` stops the run: running tasks are killed and publish
/// nothing, they go back to pending, and the run is recorded as interrupted (the report says
/// `cancelled`), so the store stays resumable. A token cancelled before the call still records a
/// run, which does no work.
pub async fn run(
    inputs: RunInputs,
    observer: &dyn Observer,
    cancel: &CancelToken,
) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let RunInputs {
        mut manifest,
        paths,
        writer,
        capture,
        executor,
        lines,
        options,
    } = inputs;
    // The parameter values fix the versions of the steps that read them: before anything else.
    manifest.bind_params(&options.params)?;
    // The capture lets the executor's helpers (the sandbox's zygote) into task directories.
    if let Some(helpers) = executor.helpers() {
        capture.trust(helpers);
    }
    // Declared after `capture`, so dropped before it: the executor lets go of the run's mounts
    // before the capture unmounts. (The context below holds the capture too, and is declared
    // after this, so it goes first; the capture it shares stays until `capture` goes.)
    let _run_ended = RunEnded(executor.clone());
    clear_staging(&paths)?;

    let manifest = Arc::new(manifest);
    let start = {
        let manifest = manifest.clone();
        writer
            .call(move |conn| runs::begin_run(conn, &manifest))
            .await?
    };
    let run_id = start.run_id;
    // The end-of-run check that every live resource's object exists, started now beside the
    // run's own work on a connection of its own; `None` if it cannot be (the end checks all).
    // It stops once a task finishes: the run then changes the live set, and its end checks
    // every live object anyway.
    let early_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let early_check = {
        let (root, objects) = (paths.root.clone(), Objects::new(paths.objects.clone()));
        let stop = early_stop.clone();
        tokio::task::spawn_blocking(move || {
            let (_, conn) = crate::store::open_read(&root).ok()?;
            verify::absent_live_objects_at(&conn, &objects, &stop)
                .ok()
                .flatten()
        })
    };
    observer.event(&Event::RunStarted {
        run_id,
        recovered: start.recovered,
    });
    tracing::debug!(
        run = run_id,
        recovered = start.recovered,
        versions_changed = start.versions_changed,
        "run started"
    );

    let mut slots: Vec<StepSlot> = manifest
        .steps
        .iter()
        .zip(start.versions.iter().zip(&start.statuses))
        .enumerate()
        .map(|(index, (step, (&version_id, &version)))| StepSlot {
            upstream: if step.gather {
                manifest.upstream_of(index)
            } else {
                Vec::new()
            },
            failed: false,
            live_at_start: None,
            force_gather: step.gather && options.force_steps.contains(&step.name),
            allowed: options.only_steps.is_empty() || options.only_steps.contains(&step.name),
            cap: step.parallel.unwrap_or(usize::MAX).max(1),
            step: Arc::new(step.clone()),
            version_id,
            kind: StepKind::of(step),
            version,
            running: 0,
            gate: None,
            queue: VecDeque::new(),
            cursor: 0,
            // A gather step runs only the task quiescence picks for the current input set.
            exhausted: step.gather,
            fetched: HashSet::new(),
        })
        .collect();
    let by_version: HashMap<i64, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.version_id, i))
        .collect();
    let maps: Arc<Vec<MapStep>> = Arc::new(
        slots
            .iter()
            .filter(|s| s.kind == StepKind::Map)
            .map(|s| MapStep {
                version_id: s.version_id,
                patterns: s.step.inputs.clone(),
                fresh: s.fresh_reason(),
            })
            .collect(),
    );

    // `--force-step`: the step's current tasks run again (a gather step's at its turn, below).
    for slot in slots
        .iter()
        .filter(|s| s.kind != StepKind::Gather && options.force_steps.contains(&s.step.name))
    {
        let (version_id, kind) = (slot.version_id, slot.kind);
        let count = writer
            .call(move |conn| schedule::force(conn, run_id, version_id, kind))
            .await?;
        tracing::debug!(step = %slot.step.name, tasks = count, "forced");
    }

    // Initial work: this run's source tasks, and map tasks for every live input not yet done.
    // Derived work waits until the sources have polled: a source's new output can replace an
    // input (DESIGN §2.3), and work on the replaced one, or its failure, would be for nothing.
    // One call to the writer and one transaction for every step: a call each cost a round trip
    // to the writer's thread and a commit, about 0.2 ms a step before the first task started.
    // A step left out by `--step` keeps the failures of earlier runs (read before the
    // initial work puts them back to pending): a gather it feeds would
    // otherwise run on a partial set, and a later run that fails it again would keep that
    // result live, where a run of the whole manifest never made one.
    if slots
        .iter()
        .any(|s| s.kind == StepKind::Gather && s.allowed)
    {
        for slot in slots.iter_mut().filter(|s| !s.allowed) {
            let version_id = slot.version_id;
            slot.failed = writer
                .call(move |conn| schedule::has_failed_live_task(conn, version_id))
                .await?;
        }
    }
    let initial: Vec<InitialWork> = slots
        .iter()
        .map(|slot| InitialWork {
            step: MapStep {
                version_id: slot.version_id,
                patterns: slot.step.inputs.clone(),
                fresh: slot.fresh_reason(),
            },
            once: slot.step.once,
            kind: slot.kind,
            allowed: slot.allowed,
            gate: slot
                .step
                .min_interval
                .filter(|_| !options.force_steps.contains(&slot.step.name)),
        })
        .collect();
    let scheduled = writer
        .call(move |conn| schedule_initial_work(conn, run_id, &initial))
        .await?;
    for slot in slots.iter_mut().filter(|s| s.kind == StepKind::Gather) {
        let version_id = slot.version_id;
        slot.live_at_start = writer
            .call(move |conn| schedule::live_gather_task(conn, version_id))
            .await?;
    }
    let mut sources_left = 0u64;
    for (slot, (gated, queued)) in slots.iter().zip(scheduled) {
        if let Some(until) = gated {
            tracing::info!(
                "step `{}` is gated by min_interval until {}: not run now (`--force-step {}` runs it)",
                slot.step.name,
                humantime::format_rfc3339_seconds(until),
                slot.step.name
            );
        }
        if slot.kind == StepKind::Source {
            sources_left += queued;
        }
        if queued > 0 {
            observer.event(&Event::TasksQueued {
                step: &slot.step.name,
                count: queued,
            });
        }
    }

    // Where the executor places tasks (a cluster's jobs), passed on to the observer below.
    let (placed_tx, mut placed_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(TaskContext {
        run_id,
        objects: Objects::new(paths.objects.clone()),
        workdir: manifest.dir.clone(),
        executor,
        control: TaskControl {
            cancel: cancel.clone(),
            lines,
            placed: Some(placed_tx),
            gate: None,
            ran_for: None,
        },
        capture: capture.clone(),
        writer: writer.clone(),
        no_sandbox: options.no_sandbox,
        // In a directory of its own that only grit's user may enter, whatever the store's
        // sharing: a task may open its scratch directory up, but not to the store's group.
        workdirs: crate::store::staging::DirPool::new(&paths.scratch(), "work"),
        verified: Default::default(),
        paths: paths.clone(),
    });

    let mut tally = Tally {
        totals: RunTotals::default(),
        stats: slots
            .iter()
            .map(|s| StepStats {
                name: s.step.name.clone(),
                ..StepStats::default()
            })
            .collect(),
        failures: Vec::new(),
        bytes_captured: 0,
        sources_left,
        liveness_grew: false,
        gather_published: false,
    };
    let mut held: Vec<HeldGather> = Vec::new();
    let mut running: JoinSet<(usize, Finished)> = JoinSet::new();
    // Tasks not published yet (the run is quiescent when there are none), and scripts still
    // running (what -j and `parallel` limit). A task frees its script slot as soon as its last
    // attempt's processes are gone, so hashing, storing and publishing its outputs overlap with
    // the next script.
    let mut in_flight = 0usize;
    let mut scripts_running = 0usize;
    let (slot_free_tx, mut slot_free_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut started_count = 0u64;
    let mut rotation = 0usize;
    let mut interrupted = None;
    let jobs = options.jobs.max(1);
    // Lookahead: an executor that sets a task up before its script runs (the sandbox) gets up to
    // `jobs` more tasks than may run scripts, so that when a script ends the next task's sandbox
    // is ready. `-j` and `parallel` still bound the scripts, through semaphores the tasks wait
    // on (`ScriptGate`); such a task counts as running (event, store) only once its script may
    // start, so a run interrupted before then leaves it pending.
    let lookahead = if ctx.executor.prepares_ahead() {
        jobs
    } else {
        0
    };
    let run_gate = Arc::new(tokio::sync::Semaphore::new(jobs));
    if lookahead > 0 {
        for slot in slots.iter_mut().filter(|s| s.cap < usize::MAX) {
            slot.gate = Some(Arc::new(tokio::sync::Semaphore::new(
                slot.cap.min(tokio::sync::Semaphore::MAX_PERMITS),
            )));
        }
    }
    let (script_started_tx, mut script_started_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    // Tasks started ahead whose script has not started yet: what their start event needs.
    let mut awaiting_turn: HashMap<i64, (usize, Option<crate::store::schedule::InputRef>)> =
        HashMap::new();
    // Group commit: what waits for the next transaction (tasks started and not yet marked
    // running, tasks finished since the last one), and the one transaction in flight. The loop
    // never waits for the writer to start a task or to take a finished one: whatever
    // accumulates while a group commits goes into the next group.
    let mut marks = RunningMarks::new(jobs, slots.iter().map(|s| s.cap).collect());
    let mut finished: Vec<(usize, Finished)> = Vec::new();
    let mut committing: Option<GroupCommit> = None;

    loop {
        if let Some(reason) = cancel.reason() {
            interrupted = Some(reason);
            break;
        }
        // Placements first: a task's placements then always reach the observer before its end.
        while let Ok(placement) = placed_rx.try_recv() {
            observer.event(&Event::TaskPlaced {
                step: &placement.step,
                task_id: placement.task_id,
                job: &placement.job,
                state: &placement.state,
            });
        }
        while let Ok(task_id) = script_started_rx.try_recv() {
            turn_came(&mut awaiting_turn, task_id, &slots, &mut marks, observer);
        }
        // Fill free slots, round-robin over steps so that one big step does not starve the others.
        let mut to_start: Vec<(usize, QueuedTask)> = Vec::new();
        while let Ok(index) = slot_free_rx.try_recv() {
            slots[index].running -= 1;
            scripts_running -= 1;
        }
        'fill: while scripts_running + to_start.len() < jobs + lookahead {
            if options
                .max_tasks
                .is_some_and(|max| started_count + to_start.len() as u64 >= max)
            {
                break;
            }
            for offset in 0..slots.len() {
                let index = (rotation + offset) % slots.len();
                let slot = &mut slots[index];
                let starting_here = to_start.iter().filter(|(i, _)| *i == index).count();
                if !slot.allowed
                    || slot.running + starting_here
                        >= slot.cap.saturating_add(lookahead.min(slot.cap))
                    || (tally.sources_left > 0 && slot.kind != StepKind::Source)
                {
                    continue;
                }
                if slot.queue.is_empty() && !slot.exhausted {
                    let (version_id, cursor) = (slot.version_id, slot.cursor);
                    let paging = Instant::now();
                    let page = writer
                        .call(move |conn| schedule::next_pending(conn, version_id, cursor, PAGE))
                        .await?;
                    tracing::trace!(
                        target: "grit::timing",
                        tasks = page.len(),
                        next_pending_us = paging.elapsed().as_micros() as u64,
                        "fetched pending"
                    );
                    let slot = &mut slots[index];
                    if page.len() < PAGE {
                        slot.exhausted = true;
                    }
                    if let Some(last) = page.last() {
                        slot.cursor = last.id;
                    }
                    // A task revived ahead of the cursor was queued already.
                    let mut page = page;
                    page.retain(|task| slot.fetched.insert(task.id));
                    slot.queue.extend(page);
                }
                let slot = &mut slots[index];
                if let Some(task) = slot.queue.pop_front() {
                    to_start.push((index, task));
                    rotation = index + 1;
                    continue 'fill;
                }
            }
            // No step can start another task now.
            break;
        }
        // Marked running by a later group commit ([`marks`]), which follows in the writer's order
        // any commit that could publish them.
        for (index, queued) in to_start {
            let slot = &mut slots[index];
            slot.running += 1;
            scripts_running += 1;
            in_flight += 1;
            started_count += 1;
            let gate = (lookahead > 0).then(|| ScriptGate {
                run: run_gate.clone(),
                step: slot.gate.clone(),
                task_id: queued.id,
                started: script_started_tx.clone(),
                waited_us: Default::default(),
            });
            if gate.is_some() {
                awaiting_turn.insert(queued.id, (index, queued.input.clone()));
            } else {
                marks.started(index, queued.id);
                observer.event(&Event::TaskStarted {
                    step: &slot.step.name,
                    task_id: queued.id,
                    input: queued.input.as_ref().map(|i| i.name.as_str()),
                    input_hash: queued.input.as_ref().map(|i| i.hash.as_str()),
                });
            }
            let (ctx, step, gather) = (
                ctx.clone(),
                slot.step.clone(),
                slot.kind == StepKind::Gather,
            );
            let script_slot = task::ScriptSlot::new(slot_free_tx.clone(), index);
            running.spawn(async move {
                let finished = task::run_task(ctx, step, queued, gather, script_slot, gate).await;
                (index, finished)
            });
        }
        if committing.is_none() && (!finished.is_empty() || marks.any_fits()) {
            let starting =
                marks.for_group(finished.iter().map(|(i, done)| (*i, done.record.task_id)));
            committing = Some(GroupCommit::start(
                &writer,
                run_id,
                &maps,
                starting,
                std::mem::take(&mut finished),
            ));
        }

        if in_flight == 0 && committing.is_none() {
            // Quiescent: settle liveness, then give gather steps the complete live set.
            if options.max_tasks.is_some_and(|max| started_count >= max) {
                break;
            }
            let holds_changed = settle_holds(&slots, &writer, &mut held).await?;
            let mut gathered_more = false;
            if holds_changed
                || tally.gather_published
                || (tally.liveness_grew && slots.iter().any(|s| s.kind == StepKind::Gather))
            {
                let maps_now = maps.clone();
                let work = writer
                    .call(move |conn| {
                        let recomputed = liveness::recompute(conn)?;
                        schedule::tasks_for_new_live(conn, run_id, &recomputed.raised, &maps_now)
                    })
                    .await?;
                // Resources a recompute brought back (an earlier gather result whose input set
                // returned) get the tasks their consumers lack.
                gathered_more = take_new_work(&mut slots, &by_version, observer, work);
                tally.gather_published = false;
                tally.liveness_grew = false;
            }
            let mut gathered = false;
            // A gather fed by another gather waits for that one: queued in the same round, it
            // would run on the set without the upstream result, then again with it (DESIGN
            // §2.10: a gather runs once the rest has settled). Upstream gathers first: one fed by
            // more gathers cannot be upstream of one fed by fewer (short of a cycle).
            let mut order: Vec<usize> = (0..slots.len())
                .filter(|&i| {
                    let s = &slots[i];
                    s.kind == StepKind::Gather
                        && s.allowed
                        && !held.iter().any(|h| h.step == s.step.name)
                })
                .collect();
            let gathers_upstream = |i: usize| {
                (0..slots.len())
                    .filter(|&j| {
                        j != i && slots[j].kind == StepKind::Gather && slots[i].upstream[j]
                    })
                    .count()
            };
            order.sort_by_key(|&i| (gathers_upstream(i), i));
            let mut queued_now: Vec<usize> = Vec::new();
            for index in order {
                if queued_now.iter().any(|&j| slots[index].upstream[j]) {
                    continue;
                }
                let slot = &mut slots[index];
                let (version_id, patterns, version) =
                    (slot.version_id, slot.step.inputs.clone(), slot.version);
                if std::mem::take(&mut slot.force_gather) {
                    let patterns = patterns.clone();
                    writer
                        .call(move |conn| {
                            schedule::force_gather(conn, run_id, version_id, &patterns)
                        })
                        .await?;
                }
                let pending = writer
                    .call(move |conn| {
                        schedule::gather_task(conn, run_id, version_id, &patterns, version)
                    })
                    .await?;
                if let Some(task_id) = pending {
                    // Exactly this task: a gather step's other pending tasks are for input sets
                    // that are no longer current (left by an interrupted run), and must not run.
                    let queued = writer
                        .call(move |conn| schedule::pending_task(conn, task_id))
                        .await?;
                    slot.fetched.extend(queued.iter().map(|task| task.id));
                    slot.queue.extend(queued);
                    gathered = true;
                    queued_now.push(index);
                    observer.event(&Event::TasksQueued {
                        step: &slot.step.name,
                        count: 1,
                    });
                }
            }
            if gathered || gathered_more {
                continue;
            }
            break;
        }

        tokio::select! {
            biased;
            Some(index) = slot_free_rx.recv() => {
                slots[index].running -= 1;
                scripts_running -= 1;
            }
            committed = GroupCommit::wait(&mut committing) => {
                let (group, published) = committed?;
                in_flight -= group.len();
                for ((index, done), published) in group.into_iter().zip(published) {
                    tally.record(&mut slots, &by_version, observer, index, done, published);
                }
            }
            joined = running.join_next(), if !running.is_empty() => {
                let Some(joined) = joined else { continue };
                let (index, done) =
                    joined.map_err(|e| EngineError::Setup(format!("a task panicked: {e}")))?;
                if done.exit == crate::executor::Exit::Cancelled {
                    // The executor saw the cancellation before this loop did: the task publishes
                    // nothing and goes back to pending with the others. (One cancelled while it
                    // waited for its turn never ran: it stays pending as it was.)
                    awaiting_turn.remove(&done.record.task_id);
                    interrupted = Some(cancel.reason().unwrap_or(CancelReason::Requested));
                    break;
                }
                early_stop.store(true, std::sync::atomic::Ordering::Relaxed);
                // A task that ended before its turn (it could not be set up) started all the same.
                turn_came(&mut awaiting_turn, done.record.task_id, &slots, &mut marks, observer);
                finished.push((index, done));
            }
            reason = cancel.cancelled() => {
                interrupted = Some(reason);
                break;
            }
            Some(task_id) = script_started_rx.recv() => {
                turn_came(&mut awaiting_turn, task_id, &slots, &mut marks, observer);
            }
            Some(placement) = placed_rx.recv() => {
                observer.event(&Event::TaskPlaced {
                    step: &placement.step,
                    task_id: placement.task_id,
                    job: &placement.job,
                    state: &placement.state,
                });
            }
        }
    }

    if interrupted.is_some() {
        // The group being committed lands (the writer runs it whatever happens here); tasks
        // finished after it, and those still running, are not published. The executor stops
        // every running task on the cancelled token (and starts no more); they are not
        // failures, so they go back to pending.
        if committing.is_some() {
            let (group, published) = GroupCommit::wait(&mut committing).await?;
            for ((index, done), published) in group.into_iter().zip(published) {
                tally.record(&mut slots, &by_version, observer, index, done, published);
            }
        }
        while running.join_next().await.is_some() {}
        // Tasks whose scripts started since the last commit are recorded running first, so
        // that `reset_running` records this run as having interrupted them.
        while let Ok(task_id) = script_started_rx.try_recv() {
            turn_came(&mut awaiting_turn, task_id, &slots, &mut marks, observer);
        }
        let starting = marks.all_waiting();
        if !starting.is_empty() {
            committing = Some(GroupCommit::start(
                &writer,
                run_id,
                &maps,
                starting,
                Vec::new(),
            ));
            GroupCommit::wait(&mut committing).await?;
        }
        writer.call(|conn| runs::reset_running(conn)).await?;
    }
    let Tally {
        totals,
        stats,
        failures,
        bytes_captured,
        ..
    } = tally;
    let status = match (interrupted, totals.failed) {
        (Some(_), _) => "interrupted",
        (None, 0) => "ok",
        (None, _) => "failed",
    };
    let final_totals = totals.clone();
    writer
        .call(move |conn| runs::finish_run(conn, run_id, status, &final_totals))
        .await?;
    // A deleted object must not hide behind "nothing to do": a stat per live resource, made
    // beside the run's work from its start (`early_check`), and made again here if the run
    // changed the live set.
    let objects = ctx.objects.clone();
    let early = early_check.await.ok().flatten();
    let missing_objects = writer
        .call(move |conn| verify::missing_live_after(conn, &objects, early))
        .await?;
    clear_staging(&paths)?;
    Ok(RunReport {
        run: run_id,
        params: manifest.param_values.clone(),
        totals,
        elapsed_s: started.elapsed().as_secs_f64(),
        bytes_captured,
        steps: stats,
        failures,
        held,
        interrupted: interrupted.and_then(CancelReason::signal),
        cancelled: interrupted.is_some(),
        recovered: start.recovered,
        capture: ctx.capture.kind(),
        refused_accesses: ctx.capture.refused_accesses(),
        missing_objects,
    })
}

/// A group of finished tasks and what publishing each of them changed.
type Committed = (Vec<(usize, Finished)>, Vec<publish::Published>);

/// One group commit in flight on the writer thread ([`publish::commit_group`]). It is sent at
/// once and lands whatever the engine does meanwhile (the writer runs every job it was given).
struct GroupCommit(tokio::task::JoinHandle<Result<Committed, StoreError>>);

impl GroupCommit {
    fn start(
        writer: &Writer,
        run_id: i64,
        maps: &Arc<Vec<MapStep>>,
        starting: Vec<(i64, std::time::SystemTime)>,
        group: Vec<(usize, Finished)>,
    ) -> GroupCommit {
        let (writer, maps) = (writer.clone(), maps.clone());
        GroupCommit(tokio::spawn(async move {
            let sent = Instant::now();
            let (started, finished) = (starting.len(), group.len());
            // The group travels to the writer and back: a source's thousands of output records
            // are not copied.
            let (group, published) = writer
                .call(move |conn| {
                    let begun = Instant::now();
                    let records: Vec<&publish::TaskRecord> =
                        group.iter().map(|(_, done)| &done.record).collect();
                    let published = publish::commit_group(conn, run_id, &starting, &records, &maps);
                    tracing::trace!(
                        target: "grit::timing",
                        started,
                        finished,
                        transaction_us = begun.elapsed().as_micros() as u64,
                        "group commit"
                    );
                    published.map(|published| (group, published))
                })
                .await?;
            tracing::trace!(
                target: "grit::timing",
                finished,
                publish_us = sent.elapsed().as_micros() as u64,
                "group committed"
            );
            Ok((group, published))
        }))
    }

    /// The outcome of the group in flight, taking it; never resolves when there is none.
    async fn wait(slot: &mut Option<GroupCommit>) -> Result<Committed, EngineError> {
        let Some(commit) = slot.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = (&mut commit.0).await;
        *slot = None;
        match outcome {
            Ok(committed) => Ok(committed?),
            Err(e) => Err(EngineError::Setup(format!("a group commit panicked: {e}"))),
        }
    }
}

/// What the run has done so far, for its report, and what the scheduler learns from each
/// published task.
struct Tally {
    totals: RunTotals,
    stats: Vec<StepStats>,
    failures: Vec<Failure>,
    bytes_captured: u64,
    /// Source tasks not published yet: derived work waits for them (a source's new output can
    /// replace an input, DESIGN §2.3).
    sources_left: u64,
    liveness_grew: bool,
    gather_published: bool,
}

impl Tally {
    /// Account for one published task: events, statistics, failures, and the steps it gave work.
    fn record(
        &mut self,
        slots: &mut [StepSlot],
        by_version: &HashMap<i64, usize>,
        observer: &dyn Observer,
        index: usize,
        finished: Finished,
        published: publish::Published,
    ) {
        if slots[index].kind == StepKind::Source {
            self.sources_left = self.sources_left.saturating_sub(1);
        }
        let record = finished.record;
        let succeeded = record.succeeded;
        let slot = &slots[index];
        let step_name = slot.step.name.as_str();
        for output in &record.outputs {
            self.bytes_captured += output.size;
            observer.event(&Event::Output {
                step: step_name,
                task_id: record.task_id,
                name: &output.name,
                hash: &output.hash,
                size: output.size,
            });
        }
        observer.event(&Event::TaskFinished {
            step: step_name,
            task_id: record.task_id,
            succeeded,
            duration: Duration::from_millis(record.duration_ms),
            outputs: record.outputs.len(),
            error: record.error.as_deref(),
            hints: &finished.hints,
        });
        let stat = &mut self.stats[index];
        stat.executed += 1;
        stat.busy_ms += record.duration_ms;
        self.totals.executed += 1;
        if succeeded {
            stat.succeeded += 1;
            self.totals.succeeded += 1;
        } else {
            stat.failed += 1;
            self.totals.failed += 1;
            self.failures.push(Failure {
                step: step_name.to_string(),
                task: record.task_id,
                // A script that exited 0 failed on its outputs (ENOSPC, a rule): say that, not
                // "exited with status 0".
                status: match (&record.error, finished.exit.success()) {
                    (Some(error), true) => error.lines().next().unwrap_or_default().to_string(),
                    _ => finished.exit.describe(),
                },
                error: record.error.clone().unwrap_or_default(),
                log_tail: finished.log_tail,
                hints: finished.hints,
                store_damaged: finished.store_damaged,
            });
        }
        self.totals.resources_new += published.resources_new;
        if published.newly_live > 0 {
            self.liveness_grew = true;
        }
        if slot.kind == StepKind::Gather && succeeded {
            self.gather_published = true;
        }
        if !succeeded {
            slots[index].failed = true;
        }
        take_new_work(slots, by_version, observer, published.work);
    }
}

/// Hold back the gather steps upstream of which a task failed in this run (unless they say
/// `gather_partial`), recording each in `held` once, and release the others' holds from earlier
/// runs. Returns whether any hold changed, so that liveness must be recomputed.
async fn settle_holds(
    slots: &[StepSlot],
    writer: &Writer,
    held: &mut Vec<HeldGather>,
) -> Result<bool, EngineError> {
    let mut changed = false;
    for slot in slots
        .iter()
        .filter(|s| s.kind == StepKind::Gather && s.allowed)
    {
        let failed = |allowed: bool| -> Vec<String> {
            slots
                .iter()
                .zip(&slot.upstream)
                .filter(|(s, feeds)| **feeds && s.failed && s.allowed == allowed)
                .map(|(s, _)| s.step.name.clone())
                .collect()
        };
        let (failed_upstream, failed_earlier) = (failed(true), failed(false));
        let (version_id, live_at_start) = (slot.version_id, slot.live_at_start);
        if (failed_upstream.is_empty() && failed_earlier.is_empty()) || slot.step.gather_partial {
            changed |= writer
                .call(move |conn| schedule::release_gather(conn, version_id))
                .await?;
        } else if !held.iter().any(|h| h.step == slot.step.name) {
            let previous_output = writer
                .call(move |conn| schedule::hold_gather(conn, version_id, live_at_start))
                .await?;
            tracing::warn!(
                "step {} does not run on a partial set: {} failed{}",
                slot.step.name,
                failed_upstream
                    .iter()
                    .map(|s| format!("{s} in this run"))
                    .chain(
                        failed_earlier
                            .iter()
                            .map(|s| format!("{s} in an earlier run"))
                    )
                    .collect::<Vec<_>>()
                    .join(", "),
                if previous_output {
                    "; its previous output stays live"
                } else {
                    ""
                }
            );
            held.push(HeldGather {
                step: slot.step.name.clone(),
                failed_upstream,
                failed_earlier,
                previous_output,
            });
            changed = true;
        }
    }
    Ok(changed)
}

/// What the start of a run schedules for one step (see [`schedule_initial_work`]).
struct InitialWork {
    /// The step's version, input patterns and reason for new tasks (what a backfill needs).
    step: MapStep,
    once: bool,
    kind: StepKind,
    allowed: bool,
    /// The step's `min_interval`, unless `--force-step` names it.
    gate: Option<Duration>,
}

/// The start of a run's work, in one transaction: for each step in order, whether `min_interval`
/// holds its source back (until when) and how many tasks were queued: its source task, or map
/// tasks for every live input that has none yet.
fn schedule_initial_work(
    conn: &mut rusqlite::Connection,
    run_id: i64,
    steps: &[InitialWork],
) -> Result<Vec<(Option<std::time::SystemTime>, u64)>, crate::store::StoreError> {
    let tx = conn.transaction()?;
    let mut scheduled = Vec::with_capacity(steps.len());
    for work in steps {
        let gated = match (work.kind, work.gate) {
            (StepKind::Source, Some(interval)) if work.allowed => {
                provenance::gated_until(&tx, work.step.version_id, interval)?
            }
            _ => None,
        };
        let queued = match work.kind {
            StepKind::Source if work.allowed && gated.is_none() => {
                let step = &work.step;
                u64::from(schedule::source_task(
                    &tx,
                    run_id,
                    step.version_id,
                    work.once,
                    step.fresh,
                )?)
            }
            StepKind::Map => schedule::backfill(&tx, run_id, &work.step)?,
            _ => 0,
        };
        scheduled.push((gated, queued));
    }
    tx.commit()?;
    Ok(scheduled)
}

/// Empty `<db>/tmp`: whatever is there belongs to no running task (we hold the store lock), such
/// as the partial captures of a crashed run. Unsandboxed scripts of a killed run may still be
/// writing there, so a failure is retried and then only reported: leftovers are harmless, since
/// this run's directories have names no earlier run used, and the next run removes them.
fn clear_staging(paths: &StorePaths) -> Result<(), EngineError> {
    let mut last = None;
    for _ in 0..3 {
        match crate::store::staging::clear(&paths.tmp) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(e) = last {
        tracing::warn!("could not empty {}: {e}", paths.tmp.display());
    }
    Ok(())
}
