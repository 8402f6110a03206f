//! The Slurm executor: tasks run as jobs of a Slurm cluster, the store on a shared filesystem
//! (same path on every node).
//!
//! The engine hands over tasks one by one through [`Executor::execute`], as it does locally.
//! Here each task waits briefly in a per-step queue; a driver task groups the waiting tasks of a
//! step into array jobs (one `sbatch --array` per submission, each element running a group of
//! tasks sized so it takes about `group_target`, from the step's observed durations), keeps at
//! most `max_jobs` elements queued or running, polls `squeue` and the elements' logs, and
//! completes each task's future with its exit. The job on the node (`worker`) runs the tasks in
//! the local sandbox, writes their outputs into `<db>/slurm/work/<key>/` and appends each
//! task's start and result to its element's log ([`wire`]); this side verifies the staged
//! outputs against the result (names, sizes, SHA-256), moves them into the engine's
//! `OUTPUT_DIR` and vouches for the hashes it computed, so the engine's capture does not hash
//! them again; capture, publishing and the single SQLite writer are those of a local run.
//!
//! Each submitted task's job is recorded in the store (`slurm_jobs`): after a `kill -9` of grit
//! the next run adopts the jobs still running, and results already written, instead of running
//! the tasks again. A job Slurm ends before its task finished (time limit, out of memory,
//! preemption, node failure, `scancel`) fails the task with Slurm's reason, and the engine retries
//! it per `retries`; tasks of that job that had not started go back to the queue. Cancelling the
//! run, or dropping a task's future, cancels its job once no task of the run is left in it.

mod commands;
pub mod wire;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{
    ExecFuture, Executor, Exit, Placement, PlacementSink, TaskControl, TaskInput, TaskSpec,
};
use crate::manifest::cluster::ExecutorConfig;
use crate::store::Writer;
use crate::store::objects::hash_file;
use crate::store::slurm_jobs::{self, SlurmJob};
use wire::{Batch, ElementEvent, LogReader, TaskResult, WireInput, WireTask};

/// How often the driver looks at the queue and the result files.
const TICK: Duration = Duration::from_millis(50);
/// Tasks keep arriving while the engine starts them: submit once none came for this long...
const LINGER: Duration = Duration::from_millis(150);
/// ...or once the oldest has waited this long.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// How often `squeue` is asked.
const SQUEUE_EVERY: Duration = Duration::from_millis(500);
/// A job that left the queue may have written results the shared filesystem shows a little
/// later (NFS attribute caches): look again for this long before calling them missing.
const GONE_GRACE: Duration = Duration::from_secs(2);
/// Tasks in the first element of a step whose duration is unknown (the probe).
const PROBE_GROUP: usize = 4;
/// A task that never started goes back to the queue at most this often.
const MAX_REQUEUES: u32 = 3;

/// What the Slurm executor needs besides the manifest's `[executor]` settings.
pub struct SlurmSettings {
    pub config: ExecutorConfig,
    /// The manifest as the run loaded it (its path is read again on the nodes).
    pub manifest: PathBuf,
    pub start: Option<String>,
    pub params: BTreeMap<String, String>,
    /// The store's directory: on the shared filesystem, the same path on every node.
    pub store: PathBuf,
    /// The grit binary the jobs run (the same path on every node).
    pub grit: PathBuf,
}

/// Runs tasks as Slurm jobs; see the module documentation.
pub struct SlurmExecutor {
    shared: Arc<Shared>,
}

struct Shared {
    settings: SlurmSettings,
    writer: Writer,
    state: Mutex<State>,
    /// The recorded jobs of earlier runs have been read (once, at the first task).
    adoption_loaded: tokio::sync::OnceCell<()>,
    batches: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Tasks not yet submitted, per step.
    waiting: BTreeMap<String, VecDeque<Waiting>>,
    /// Submitted tasks by key.
    running: HashMap<String, Running>,
    /// Live jobs (array elements) by job id.
    elements: HashMap<String, Element>,
    /// Observed task durations per step: (total ms, count).
    observed: HashMap<String, (u64, u64)>,
    /// Recorded jobs of earlier runs not yet claimed, by task.
    adoptable: HashMap<i64, SlurmJob>,
    /// When the last task arrived.
    last_arrival: Option<Instant>,
    /// How often each task went back to the queue without running.
    requeues: HashMap<i64, u32>,
    /// Tasks given up (cancelled, dropped, ended by Slurm) with their last state: their rows
    /// end at the end of the run.
    abandoned: Vec<(i64, String)>,
    driver_running: bool,
    /// CPUs of the partition (from sinfo) per task's `cpus`: how many elements can run at once.
    capacity: Option<usize>,
    /// squeue failed: said once.
    squeue_warned: bool,
}

struct Waiting {
    spec: TaskSpec,
    /// The attempt's end, with its time on the node when a result came from there.
    done: oneshot::Sender<(Exit, Option<Duration>)>,
    placed: Option<PlacementSink>,
    since: Instant,
}

struct Running {
    spec: TaskSpec,
    done: oneshot::Sender<(Exit, Option<Duration>)>,
    placed: Option<PlacementSink>,
    job: String,
    work: PathBuf,
    submitted: Instant,
}

impl Running {
    /// Tell the run where the task is: its job and the job's state.
    fn place(&self, state: &str) {
        if let Some(sink) = &self.placed {
            let _ = sink.send(Placement {
                task_id: self.spec.task_id,
                step: self.spec.step.name.clone(),
                job: self.job.clone(),
                state: state.to_string(),
            });
        }
    }
}

struct Element {
    keys: Vec<String>,
    state: String,
    /// When squeue stopped listing it.
    gone_since: Option<Instant>,
    /// The submission's directory: the element's log, and the job's own output.
    batch_dir: PathBuf,
    index: usize,
    /// How far its log has been read.
    reader: LogReader,
    /// Tasks it said it started, without a result yet.
    started: HashSet<String>,
    /// Results of tasks this run has not asked for yet (an adopted job's log names every task
    /// of its group; the engine hands them over one by one).
    early: HashMap<String, TaskResult>,
}

impl Element {
    fn base(id: &str) -> &str {
        id.split('_').next().unwrap_or(id)
    }

    fn new(batch_dir: PathBuf, index: usize, state: &str) -> Element {
        Element {
            keys: Vec::new(),
            state: state.into(),
            gone_since: None,
            batch_dir,
            index,
            reader: LogReader::default(),
            started: HashSet::new(),
            early: HashMap::new(),
        }
    }

    /// The element of a recorded job: its submission is named in the task's work key, its
    /// index in the job id (`ARRAY_INDEX`).
    fn of_row(store: &Path, row: &SlurmJob) -> Element {
        let batch = wire::batch_of_key(&row.work).unwrap_or_default();
        let index = row
            .job_id
            .split_once('_')
            .and_then(|(_, i)| i.parse().ok())
            .unwrap_or(0);
        Element::new(wire::batch_dir(store, batch), index, "UNKNOWN")
    }
}

impl SlurmExecutor {
    pub fn new(settings: SlurmSettings, writer: Writer) -> SlurmExecutor {
        SlurmExecutor {
            shared: Arc::new(Shared {
                settings,
                writer,
                state: Mutex::new(State::default()),
                adoption_loaded: tokio::sync::OnceCell::new(),
                batches: AtomicU64::new(0),
            }),
        }
    }
}

impl Executor for SlurmExecutor {
    fn execute<'a>(&'a self, spec: &'a TaskSpec, control: &'a TaskControl) -> ExecFuture<'a> {
        Box::pin(self.run(spec, control))
    }

    fn run_ended(&self) {
        let (jobs, abandoned) = {
            let mut state = self.shared.lock();
            let jobs: Vec<String> = state.elements.drain().map(|(id, _)| id).collect();
            state.running.clear();
            state.waiting.clear();
            (jobs, std::mem::take(&mut state.abandoned))
        };
        // Nothing of a run outlives it: jobs still listed belong to tasks nobody waits for.
        if !jobs.is_empty() {
            tracing::info!("cancelling Slurm jobs {}", jobs.join(" "));
            scancel_now(&jobs);
        }
        let remaining = self.shared.writer.call_blocking(move |conn| {
            slurm_jobs::end(conn, &abandoned)?;
            slurm_jobs::active(conn)
        });
        // The work directories and submissions no active job needs any more: those of the
        // tasks given up (their jobs were just cancelled) and of jobs no row names. A job of a
        // crashed run that nobody has claimed yet keeps both: it still reads its batch file, and
        // the next run adopts its results.
        if let Ok(remaining) = remaining {
            sweep(&self.shared.settings.store, &remaining);
        }
    }

    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn cancel_at_server_stop(&self) -> bool {
        true
    }

    fn needs_scratch_dir(&self) -> bool {
        // The job makes the task's scratch on the node.
        false
    }
}

/// Gives a task up when its future is dropped or cancelled before its result came.
struct Abandon<'a> {
    shared: &'a Shared,
    task_id: i64,
    finished: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.abandon(self.task_id);
        }
    }
}

impl SlurmExecutor {
    async fn run(&self, spec: &TaskSpec, control: &TaskControl) -> Exit {
        if control.cancel.reason().is_some() {
            return Exit::Cancelled;
        }
        let shared = &self.shared;
        shared
            .adoption_loaded
            .get_or_init(|| async {
                match shared.writer.call(|conn| slurm_jobs::active(conn)).await {
                    Ok(rows) => {
                        // Before this run submits anything: leftovers of jobs that are gone
                        // (cancelled, or of a run that crashed) go.
                        let store = shared.settings.store.clone();
                        let swept = rows.clone();
                        let _ = tokio::task::spawn_blocking(move || sweep(&store, &swept)).await;
                        let mut state = shared.lock();
                        state.adoptable = rows.into_iter().map(|r| (r.task_id, r)).collect();
                    }
                    Err(e) => tracing::warn!("cannot read the recorded Slurm jobs: {e}"),
                }
            })
            .await;
        let (done, result) = oneshot::channel();
        {
            let mut state = shared.lock();
            state.last_arrival = Some(Instant::now());
            match state.adoptable.remove(&spec.task_id) {
                Some(row) => {
                    tracing::info!(
                        "task {} of step {}: adopting Slurm job {} of run {}",
                        spec.task_id,
                        spec.step.name,
                        row.job_id,
                        row.run_id
                    );
                    let work = wire::work_dir(&shared.settings.store, &row.work);
                    state
                        .elements
                        .entry(row.job_id.clone())
                        .or_insert_with(|| Element::of_row(&shared.settings.store, &row))
                        .keys
                        .push(row.work.clone());
                    let running = Running {
                        spec: spec.clone(),
                        done,
                        placed: control.placed.clone(),
                        job: row.job_id,
                        work,
                        submitted: Instant::now(),
                    };
                    running.place(&row.state);
                    state.running.insert(row.work, running);
                }
                None => {
                    state
                        .waiting
                        .entry(spec.step.name.clone())
                        .or_default()
                        .push_back(Waiting {
                            spec: spec.clone(),
                            done,
                            placed: control.placed.clone(),
                            since: Instant::now(),
                        });
                }
            }
        }
        let mut guard = Abandon {
            shared,
            task_id: spec.task_id,
            finished: false,
        };
        shared.ensure_driver();
        let exit = tokio::select! {
            biased;
            _ = control.cancel.cancelled() => Exit::Cancelled,
            ended = result => match ended {
                Ok((exit, ran)) => {
                    if let (Some(ran), Some(ran_for)) = (ran, &control.ran_for) {
                        ran_for.add(ran);
                    }
                    exit
                }
                Err(_) => Exit::SpawnFailed("the Slurm executor stopped watching the task".into()),
            },
        };
        guard.finished = exit != Exit::Cancelled;
        exit
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state is still the best there is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_driver(self: &Arc<Self>) {
        let start = {
            let mut state = self.lock();
            !std::mem::replace(&mut state.driver_running, true)
        };
        if start {
            let shared = self.clone();
            tokio::spawn(async move { shared.drive().await });
        }
    }

    /// Forget a task nobody waits for any more; cancel its job once no task of it is left.
    fn abandon(&self, task_id: i64) {
        let cancel = {
            let mut state = self.lock();
            for queue in state.waiting.values_mut() {
                queue.retain(|w| w.spec.task_id != task_id);
            }
            let key = state
                .running
                .iter()
                .find(|(_, r)| r.spec.task_id == task_id)
                .map(|(k, _)| k.clone());
            let mut cancel = None;
            if let Some(key) = key
                && let Some(running) = state.running.remove(&key)
            {
                state.abandoned.push((task_id, "CANCELLED".into()));
                if let Some(element) = state.elements.get_mut(&running.job) {
                    element.keys.retain(|k| *k != key);
                    if element.keys.is_empty() {
                        state.elements.remove(&running.job);
                        cancel = Some(running.job);
                    }
                }
            }
            cancel
        };
        if let Some(job) = cancel {
            tracing::info!("cancelling Slurm job {job}: no task of this run is left in it");
            scancel_now(&[job]);
        }
    }

    async fn drive(self: Arc<Self>) {
        if self.lock().capacity.is_none() {
            let resources = &self.settings.config.resources;
            let cpus = commands::partition_cpus(resources.partition.as_deref()).await;
            let per_task = resources.cpus.unwrap_or(1).max(1) as usize;
            self.lock().capacity = Some(cpus.map_or(usize::MAX, |c| (c / per_task).max(1)));
        }
        let mut last_squeue: Option<Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            for plan in self.plan_submissions() {
                self.submit(plan).await;
            }
            if last_squeue.is_none_or(|t| t.elapsed() >= SQUEUE_EVERY) {
                last_squeue = Some(Instant::now());
                self.poll_queue().await;
            }
            self.collect_results().await;
            self.settle_gone().await;
            let mut state = self.lock();
            if state.waiting.values().all(VecDeque::is_empty) && state.running.is_empty() {
                state.driver_running = false;
                return;
            }
        }
    }

    /// Which waiting tasks to submit now, grouped: one plan per step, one group per element.
    fn plan_submissions(&self) -> Vec<Plan> {
        let config = &self.settings.config;
        let mut state = self.lock();
        let oldest = state
            .waiting
            .values()
            .filter_map(|q| q.front().map(|w| w.since))
            .min();
        let Some(oldest) = oldest else {
            return Vec::new();
        };
        let quiet = state.last_arrival.is_none_or(|t| t.elapsed() >= LINGER);
        // Groups are sized once the engine has handed the tasks over; a probe, whose size does
        // not depend on how many wait, goes out as soon as it is full (the engine takes seconds
        // to hand over 10,000 tasks, and the probe's result is what sizes their groups).
        let settled = quiet || oldest.elapsed() >= MAX_WAIT;
        // Groups are spread over what the partition runs at once: more elements than that
        // would only cut a short queue into small groups.
        let parallel = config
            .max_jobs
            .min(state.capacity.unwrap_or(usize::MAX))
            .max(1);
        // But once a step's groups are sized, they all go out at once, up to `max_jobs`: Slurm
        // starts the next element the moment a CPU frees up, where a submission of ours made
        // then would leave the CPU idle for an `sbatch` and a scheduling pass (measured: waves
        // of two elements at a time took twice as long as the same groups in one array).
        let mut free = config.max_jobs.saturating_sub(state.elements.len());
        // Steps with tasks on the cluster, and since when (for the duration probe below).
        let mut in_flight: HashMap<String, Instant> = HashMap::new();
        for running in state.running.values() {
            let since = in_flight
                .entry(running.spec.step.name.clone())
                .or_insert(running.submitted);
            *since = (*since).min(running.submitted);
        }
        let steps: Vec<String> = state.waiting.keys().cloned().collect();
        let mut plans = Vec::new();
        for step in steps {
            if free == 0 {
                break;
            }
            let observed = state
                .observed
                .get(&step)
                .map(|(total, count)| (total / (*count).max(1)).max(1));
            let target_ms = u64::try_from(config.group_target.as_millis()).unwrap_or(u64::MAX);
            let estimate = match (observed, in_flight.get(&step)) {
                (Some(ms), _) => Some(ms),
                // Tasks of this step ran for a whole target without one finishing: long ones.
                (None, Some(since)) if since.elapsed() >= config.group_target => Some(target_ms),
                // A probe is out: its first result sizes the groups.
                (None, Some(_)) => continue,
                (None, None) => None,
            };
            let Some(queue) = state.waiting.get_mut(&step) else {
                continue;
            };
            if queue.is_empty() || !(settled || estimate.is_none() && queue.len() >= PROBE_GROUP) {
                continue;
            }
            let mut sizes = match estimate {
                Some(ms) => group_sizes(queue.len(), ms, config.group_target, parallel),
                // Nothing known about the step yet: one small group first, to learn how long its
                // tasks take, rather than fix thousands of tasks into groups sized blindly.
                None => vec![PROBE_GROUP.min(queue.len())],
            };
            sizes.truncate(free);
            free -= sizes.len();
            let groups = sizes
                .into_iter()
                .map(|size| queue.drain(..size.min(queue.len())).collect::<Vec<_>>())
                .collect();
            plans.push(Plan { groups });
        }
        plans
    }

    /// Write the batch, submit it, and track its elements. A failed submission fails its tasks.
    async fn submit(self: &Arc<Self>, plan: Plan) {
        let seq = self.batches.fetch_add(1, Ordering::Relaxed);
        let Some(first) = plan.groups.first().and_then(|g| g.first()) else {
            return;
        };
        let run_id = first.spec.run_id;
        let step = first.spec.step.clone();
        let id = format!("r{run_id}-p{}-b{seq}", std::process::id());
        let store = self.settings.store.clone();
        let batch_dir = wire::batch_dir(&store, &id);
        let groups: Vec<Vec<(String, TaskSpec)>> = plan
            .groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|w| (format!("t{}-{id}", w.spec.task_id), w.spec.clone()))
                    .collect()
            })
            .collect();
        let batch = Batch {
            store: store.clone(),
            manifest: self.settings.manifest.clone(),
            start: self.settings.start.clone(),
            params: self.settings.params.clone(),
            step: step.name.clone(),
            version: step.version_hash(),
            sandboxed: first.spec.sandboxed,
            groups: Vec::new(),
        };
        let grit = self.settings.grit.clone();
        let prepared = {
            let (batch_dir, groups) = (batch_dir.clone(), groups.clone());
            tokio::task::spawn_blocking(move || prepare_batch(batch, &batch_dir, &groups, &grit))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let submitted = match prepared {
            Ok(script) => {
                let args = self.sbatch_args(&step, groups.len(), &batch_dir);
                commands::sbatch(&args, &script)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!(
                "preparing the batch in {}: {e}",
                batch_dir.display()
            )),
        };
        let array = match submitted {
            Ok(array) => array,
            Err(why) => {
                tracing::error!("step {}: cannot submit to Slurm: {why}", step.name);
                for waiting in plan.groups.into_iter().flatten() {
                    let _ = waiting.done.send((
                        Exit::SpawnFailed(format!("submitting to Slurm: {why}")),
                        None,
                    ));
                }
                return;
            }
        };
        let tasks: usize = groups.iter().map(Vec::len).sum();
        tracing::info!(
            "step {}: submitted Slurm job {array} ({} array element{}, {tasks} task{})",
            step.name,
            groups.len(),
            if groups.len() == 1 { "" } else { "s" },
            if tasks == 1 { "" } else { "s" },
        );
        let now = crate::store::now();
        let mut rows = Vec::with_capacity(tasks);
        // Elements all of whose tasks were given up while the submission was under way.
        let mut unwanted = Vec::new();
        {
            let mut state = self.lock();
            for (index, (group, waiting)) in groups.iter().zip(plan.groups).enumerate() {
                let job = format!("{array}_{index}");
                let mut keys = Vec::with_capacity(group.len());
                for ((key, spec), w) in group.iter().zip(waiting) {
                    if w.done.is_closed() {
                        continue;
                    }
                    rows.push(SlurmJob {
                        task_id: spec.task_id,
                        run_id: spec.run_id,
                        job_id: job.clone(),
                        work: key.clone(),
                        step: step.name.clone(),
                        state: "PENDING".into(),
                        updated_at: now.clone(),
                        ended_at: None,
                    });
                    keys.push(key.clone());
                    let running = Running {
                        spec: w.spec,
                        done: w.done,
                        placed: w.placed,
                        job: job.clone(),
                        work: wire::work_dir(&store, key),
                        submitted: Instant::now(),
                    };
                    running.place("PENDING");
                    state.running.insert(key.clone(), running);
                }
                if keys.is_empty() {
                    unwanted.push(job);
                    continue;
                }
                let mut element = Element::new(batch_dir.clone(), index, "PENDING");
                element.keys = keys;
                state.elements.insert(job, element);
            }
        }
        if !unwanted.is_empty() {
            tracing::info!(
                "cancelling Slurm jobs {}: their tasks were given up",
                unwanted.join(" ")
            );
            scancel_now(&unwanted);
        }
        if let Err(e) = self
            .writer
            .call(move |conn| slurm_jobs::record(conn, &rows))
            .await
        {
            tracing::warn!("cannot record Slurm job {array} in the store: {e}");
        }
    }

    fn sbatch_args(
        &self,
        step: &crate::manifest::Step,
        elements: usize,
        batch_dir: &Path,
    ) -> Vec<String> {
        let config = &self.settings.config;
        let resources = step.slurm.or(&config.resources);
        let mut args = vec![
            format!("--array=0-{}", elements.saturating_sub(1)),
            format!("--job-name=grit-{}", step.name),
            format!("--output={}/slurm-%a.out", batch_dir.display()),
            format!("--chdir={}", batch_dir.display()),
        ];
        if let Some(p) = &resources.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &resources.account {
            args.push(format!("--account={a}"));
        }
        if let Some(t) = resources.time {
            args.push(format!("--time={}", commands::minutes(t)));
        }
        if let Some(m) = resources.mem {
            args.push(format!("--mem={}M", m.div_ceil(1 << 20).max(1)));
        }
        if let Some(c) = resources.cpus {
            args.push(format!("--cpus-per-task={c}"));
        }
        args.extend(config.sbatch_args.iter().cloned());
        args
    }

    /// Ask squeue where our jobs are; note the ones that left the queue.
    async fn poll_queue(&self) {
        let bases: Vec<String> = {
            let state = self.lock();
            let set: HashSet<&str> = state.elements.keys().map(|k| Element::base(k)).collect();
            set.into_iter().map(str::to_string).collect()
        };
        if bases.is_empty() {
            return;
        }
        let listed = match commands::squeue(&bases).await {
            Ok(listed) => listed,
            Err(e) => {
                let mut state = self.lock();
                if !std::mem::replace(&mut state.squeue_warned, true) {
                    tracing::warn!("cannot ask Slurm about the run's jobs: {e}");
                }
                return;
            }
        };
        let mut changed = Vec::new();
        {
            let mut state = self.lock();
            for (id, element) in state.elements.iter_mut() {
                match listed.get(id) {
                    Some(now) => {
                        element.gone_since = None;
                        if *now != element.state {
                            tracing::debug!("Slurm job {id}: {now}");
                            element.state = now.clone();
                            changed.push((id.clone(), now.clone()));
                        }
                    }
                    None => {
                        if element.gone_since.is_none() {
                            element.gone_since = Some(Instant::now());
                            element.state = "ENDED".into();
                            changed.push((id.clone(), "ENDED".into()));
                        }
                    }
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        {
            let state = self.lock();
            for (id, now) in &changed {
                let Some(element) = state.elements.get(id) else {
                    continue;
                };
                for running in element.keys.iter().filter_map(|k| state.running.get(k)) {
                    running.place(now);
                }
            }
        }
        let _ = self
            .writer
            .call(move |conn| slurm_jobs::set_states(conn, &changed))
            .await;
    }

    /// Take the results the jobs have written: verify, move the outputs, complete the tasks.
    async fn collect_results(&self) {
        // One log per element that may have started, read from where the last look stopped.
        let logs: Vec<(String, PathBuf, LogReader)> = {
            let state = self.lock();
            state
                .elements
                .iter()
                .filter(|(_, e)| e.state != "PENDING" || !e.early.is_empty())
                .map(|(id, e)| {
                    (
                        id.clone(),
                        wire::element_log(&e.batch_dir, e.index),
                        e.reader.clone(),
                    )
                })
                .collect()
        };
        if logs.is_empty() {
            return;
        }
        let read: Vec<(String, LogReader, Vec<ElementEvent>)> =
            tokio::task::spawn_blocking(move || {
                logs.into_iter()
                    .map(|(id, path, mut reader)| {
                        let events = reader.read_new(&path).unwrap_or_else(|e| {
                            tracing::debug!("reading {}: {e}", path.display());
                            Vec::new()
                        });
                        (id, reader, events)
                    })
                    .collect()
            })
            .await
            .unwrap_or_default();
        let taken: Vec<(Running, TaskResult)> = {
            let mut guard = self.lock();
            let State {
                elements, running, ..
            } = &mut *guard;
            let mut taken = Vec::new();
            for (id, reader, events) in read {
                let Some(element) = elements.get_mut(&id) else {
                    continue;
                };
                element.reader = reader;
                for event in events {
                    match event {
                        ElementEvent::Started { key } => {
                            element.started.insert(key);
                        }
                        ElementEvent::Finished { key, result } => {
                            element.early.insert(key, result);
                        }
                    }
                }
                // Results of the tasks this run waits for; the others wait to be asked for.
                let mine: Vec<String> = element
                    .early
                    .keys()
                    .filter(|k| running.contains_key(*k))
                    .cloned()
                    .collect();
                for key in mine {
                    let (Some(result), Some(task)) =
                        (element.early.remove(&key), running.remove(&key))
                    else {
                        continue;
                    };
                    element.started.remove(&key);
                    element.keys.retain(|k| *k != key);
                    taken.push((task, result));
                }
            }
            taken
        };
        if taken.is_empty() {
            return;
        }
        let finished: Vec<(Running, Exit, Option<u64>)> = tokio::task::spawn_blocking(move || {
            taken
                .into_iter()
                .map(|(running, result)| {
                    let (exit, duration) = take_result(&running.spec, &running.work, result);
                    (running, exit, duration)
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        let mut ends = Vec::with_capacity(finished.len());
        {
            let mut state = self.lock();
            for (running, exit, duration) in finished {
                if let Some(ms) = duration {
                    let entry = state
                        .observed
                        .entry(running.spec.step.name.clone())
                        .or_default();
                    entry.0 += ms;
                    entry.1 += 1;
                }
                tracing::debug!(
                    "task {} finished in Slurm job {}: {}",
                    running.spec.task_id,
                    running.job,
                    exit.describe()
                );
                let last = if exit.success() {
                    "COMPLETED"
                } else {
                    "FAILED"
                };
                ends.push((running.spec.task_id, last.to_string()));
                let _ = running
                    .done
                    .send((exit, duration.map(Duration::from_millis)));
            }
            // An element none of whose tasks is awaited needs no more watching (nor cancelling:
            // an adopted job may still run tasks this run does not ask for). A task of it asked
            // for later finds it again, and reads its log from the start.
            state.elements.retain(|_, e| !e.keys.is_empty());
        }
        let _ = self
            .writer
            .call(move |conn| slurm_jobs::end(conn, &ends))
            .await;
    }

    /// Jobs that left the queue a while ago without results for all their tasks: the task that
    /// was running fails with Slurm's reason; the ones that never started are queued again.
    async fn settle_gone(&self) {
        let gone: Vec<String> = {
            let state = self.lock();
            state
                .elements
                .iter()
                .filter(|(_, e)| e.gone_since.is_some_and(|t| t.elapsed() >= GONE_GRACE))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for job in gone {
            // A result that arrived meanwhile is taken first.
            self.collect_results().await;
            let reason = commands::why_ended(&job).await.unwrap_or_else(|| {
                "the job left the queue without a result (no accounting record of why)".into()
            });
            let mut state = self.lock();
            let Some(element) = state.elements.remove(&job) else {
                continue;
            };
            let job_output = element
                .batch_dir
                .join(format!("slurm-{}.out", element.index));
            let started: Vec<bool> = element
                .keys
                .iter()
                .map(|k| element.started.contains(k))
                .collect();
            let any_started = started.iter().any(|s| *s);
            for (key, was_started) in element.keys.iter().zip(started) {
                let Some(running) = state.running.remove(key) else {
                    continue;
                };
                let task_id = running.spec.task_id;
                let requeues = state.requeues.entry(task_id).or_default();
                if !was_started && any_started && *requeues < MAX_REQUEUES {
                    // It never ran: not a failed attempt.
                    *requeues += 1;
                    state.last_arrival = Some(Instant::now());
                    state
                        .waiting
                        .entry(running.spec.step.name.clone())
                        .or_default()
                        .push_back(Waiting {
                            spec: running.spec,
                            done: running.done,
                            placed: running.placed,
                            since: Instant::now(),
                        });
                    continue;
                }
                let mut why = format!("Slurm job {job} ended {reason} before the task finished");
                if !any_started && let Some(tail) = output_tail(&job_output) {
                    why.push_str(&format!("; the job's output: {tail}"));
                }
                append_log(&running.spec.log_path, &format!("grit: {why}"));
                if was_started {
                    append_node_log(&running.work, &running.spec.log_path);
                }
                let _ = std::fs::remove_dir_all(&running.work);
                state.abandoned.push((task_id, reason.clone()));
                let _ = running
                    .done
                    .send((Exit::Scheduler(format!("job {job} ended {reason}")), None));
            }
        }
    }
}

/// One submission: groups of waiting tasks of one step.
struct Plan {
    groups: Vec<Vec<Waiting>>,
}

/// The sizes of the array elements `waiting` tasks go out in: each with enough tasks to last
/// about `target` at the step's mean duration `estimate_ms`, but no more than it takes to spread
/// the queue over the `parallel` elements the partition runs at once, so a short queue still runs
/// in parallel. Beyond `parallel` elements, their number is rounded up to a multiple of it: the
/// elements then run in full waves, where 3 elements on 2 CPUs left one CPU idle for the whole
/// third element (measured: a third of a 10,000-task run). Sizes differ by at most one task.
fn group_sizes(waiting: usize, estimate_ms: u64, target: Duration, parallel: usize) -> Vec<usize> {
    if waiting == 0 {
        return Vec::new();
    }
    let parallel = parallel.max(1);
    let target = u64::try_from(target.as_millis()).unwrap_or(u64::MAX);
    let by_target = usize::try_from(target / estimate_ms.max(1)).unwrap_or(usize::MAX);
    let size = by_target.min(waiting.div_ceil(parallel)).max(1);
    let mut elements = waiting.div_ceil(size);
    if elements > parallel {
        elements = elements
            .div_ceil(parallel)
            .saturating_mul(parallel)
            .min(waiting);
    }
    (0..elements)
        .map(|i| waiting / elements + usize::from(i < waiting % elements))
        .collect()
}

/// Create the tasks' work directories (a gather task's `INPUT_DIR` is linked into its own, which
/// outlives the run's staging), write the batch file and the job script; returns the script.
fn prepare_batch(
    mut batch: Batch,
    batch_dir: &Path,
    groups: &[Vec<(String, TaskSpec)>],
    grit: &Path,
) -> std::io::Result<PathBuf> {
    crate::store::access::create_dir_all(batch_dir, 0o700)?;
    for group in groups {
        let mut tasks = Vec::with_capacity(group.len());
        for (key, spec) in group {
            let work = wire::work_dir(&batch.store, key);
            let input = match &spec.input {
                TaskInput::None => WireInput::None,
                TaskInput::File { path, name, hash } => WireInput::File {
                    path: path.clone(),
                    name: name.clone(),
                    hash: hash.clone(),
                },
                TaskInput::Dir { path } => {
                    // The rest of the work directory is the job's to make.
                    let linked = work.join("in");
                    crate::store::access::create_dir_all(&linked, 0o700)?;
                    for entry in std::fs::read_dir(path)? {
                        let entry = entry?;
                        std::fs::hard_link(entry.path(), linked.join(entry.file_name()))?;
                    }
                    WireInput::Dir { path: linked }
                }
            };
            tasks.push(WireTask {
                task_id: spec.task_id,
                run_id: spec.run_id,
                key: key.clone(),
                input,
            });
        }
        batch.groups.push(tasks);
    }
    wire::write_atomic(&batch_dir.join("batch.json"), &batch)?;
    let script = batch_dir.join("job.sh");
    let text = format!(
        "#!/bin/sh\n# grit: one element of this array job runs its group of tasks\nexec {} slurm-worker {} \"${{SLURM_ARRAY_TASK_ID:-0}}\"\n",
        shell_quote(&grit.display().to_string()),
        shell_quote(&batch_dir.join("batch.json").display().to_string()),
    );
    std::fs::write(&script, text)?;
    Ok(script)
}

/// Remove what no active job (`active`, the rows of tasks still on the cluster) needs under
/// `<db>/slurm/`: `work/<key>` for every other key, `batch/<id>` for every other submission.
/// Only the store's one writer runs this, while no submission of its own is under way.
fn sweep(store: &Path, active: &[SlurmJob]) {
    let work: HashSet<&str> = active.iter().map(|r| r.work.as_str()).collect();
    let batches: HashSet<&str> = active
        .iter()
        .filter_map(|r| r.work.split_once('-').map(|(_, batch)| batch))
        .collect();
    let removed = remove_unneeded(&wire::root(store).join("work"), &work);
    if removed > 0 {
        tracing::info!("removed {removed} work director(y/ies) of Slurm jobs that are gone");
    }
    remove_unneeded(&wire::root(store).join("batch"), &batches);
}

/// Remove every entry of `dir` whose name is not in `needed`; how many went.
fn remove_unneeded(dir: &Path, needed: &HashSet<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !needed.contains(name.to_string_lossy().as_ref())
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Check a task's staged outputs against its result, move them into the engine's `OUTPUT_DIR`
/// (vouching to the capture for the hashes just computed), and copy the node's log into the
/// task's log. Returns the exit and the task's duration.
fn take_result(spec: &TaskSpec, work: &Path, result: TaskResult) -> (Exit, Option<u64>) {
    let outcome = (|| -> Result<(Exit, u64), String> {
        append_node_log(work, &spec.log_path);
        let exit = result.exit.to_exit();
        if exit.success() {
            let verified = verify_staged(work, &result)?;
            let out = work.join("out");
            for entry in std::fs::read_dir(&out).map_err(|e| format!("{}: {e}", out.display()))? {
                let entry = entry.map_err(|e| format!("{}: {e}", out.display()))?;
                let target = spec.output_dir.join(entry.file_name());
                std::fs::rename(entry.path(), &target).map_err(|e| {
                    format!("moving {} into OUTPUT_DIR: {e}", entry.path().display())
                })?;
                let name = entry.file_name();
                if let (Some(admission), Some(record)) = (
                    &spec.admission,
                    verified.get(name.to_string_lossy().as_ref()),
                ) {
                    admission.vouch(&target, &record.hash, record.size);
                }
            }
        }
        Ok((exit, result.duration_ms))
    })();
    let _ = std::fs::remove_dir_all(work);
    match outcome {
        Ok((exit, ms)) => (exit, Some(ms)),
        Err(why) => {
            append_log(&spec.log_path, &format!("grit: {why}"));
            (Exit::SpawnFailed(why), None)
        }
    }
}

/// The bytes on the shared filesystem are the bytes the node hashed: every regular file in
/// `out/` is in the record with the same size and SHA-256, and nothing the record names is
/// missing. Anything else is refused before the engine's capture sees it. Returns the records
/// of the files checked, by name.
fn verify_staged<'r>(
    work: &Path,
    result: &'r TaskResult,
) -> Result<HashMap<&'r str, &'r wire::WireOutput>, String> {
    let out = work.join("out");
    let mut recorded: HashMap<&str, &wire::WireOutput> = result
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o))
        .collect();
    let mut verified = HashMap::with_capacity(recorded.len());
    let entries = std::fs::read_dir(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", out.display()))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(record) = recorded.remove(name.as_str()) else {
            return Err(format!(
                "output `{name}` appeared after job {} recorded the task's outputs: not published",
                result.job_id
            ));
        };
        let (hash, size) =
            hash_file(&entry.path()).map_err(|e| format!("hashing output `{name}`: {e}"))?;
        if hash != record.hash || size != record.size {
            return Err(format!(
                "output `{name}` does not match what job {} on {} recorded (sha256 {} of {} bytes, found {} of {size}): the shared filesystem returned other bytes; not published",
                result.job_id,
                result.node,
                crate::store::short_hash(&record.hash),
                record.size,
                crate::store::short_hash(&hash),
            ));
        }
        verified.insert(record.name.as_str(), record);
    }
    if let Some(name) = recorded.keys().next() {
        return Err(format!(
            "output `{name}` recorded by job {} is missing from {}: not published",
            result.job_id,
            out.display()
        ));
    }
    Ok(verified)
}

fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = crate::store::access::open_append_private(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// The task's stdout and stderr, as the node wrote them, into its log.
fn append_node_log(work: &Path, log_path: &Path) {
    if let (Ok(mut from), Ok(mut to)) = (
        std::fs::File::open(work.join("log")),
        crate::store::access::open_append_private(log_path),
    ) {
        let _ = std::io::copy(&mut from, &mut to);
    }
}

/// The last lines of a job's own output file, on one line.
fn output_tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    (!tail.is_empty()).then_some(tail)
}

/// `scancel` from a synchronous place (a dropped future, the end of a run).
fn scancel_now(jobs: &[String]) {
    let status = std::process::Command::new("scancel")
        .args(jobs)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Err(e) = status {
        tracing::warn!("cannot run scancel for jobs {}: {e}", jobs.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_target_and_spread_over_the_parallel_elements() {
        let target = Duration::from_secs(30);
        let summary = |sizes: Vec<usize>| {
            let total: usize = sizes.iter().sum();
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            (sizes.len(), total, min, max)
        };
        // 10,000 tasks of 1 ms with a 30 s target: limited by spreading over 100 elements.
        assert_eq!(
            summary(group_sizes(10_000, 1, target, 100)),
            (100, 10_000, Some(100), Some(100))
        );
        // On a 2-CPU partition: two elements of 5,000.
        assert_eq!(group_sizes(10_000, 1, target, 2), vec![5_000, 5_000]);
        // 9 ms tasks on 2 CPUs: 3,333 would last the target, but 3 elements leave a CPU idle
        // for the third; 4 elements of 2,499 run in two full waves.
        assert_eq!(group_sizes(9_996, 9, target, 2), vec![2_499; 4]);
        // 10-second tasks: three per element (3,334 elements, rounded up to 3,400 on 100).
        assert_eq!(
            summary(group_sizes(10_000, 10_000, target, 100)),
            (3_400, 10_000, Some(2), Some(3))
        );
        // Longer than the target: one per element.
        assert_eq!(group_sizes(50, 60_000, target, 100), vec![1; 50]);
        // A short queue is spread out, not packed into one element, nor cut into more elements
        // than tasks.
        assert_eq!(group_sizes(4, 1, target, 100), vec![1; 4]);
        assert_eq!(group_sizes(3, 60_000, target, 2), vec![1; 3]);
        // Uneven: sizes differ by one at most.
        assert_eq!(group_sizes(7, 1, target, 2), vec![4, 3]);
        assert!(group_sizes(0, 1, target, 2).is_empty());
    }

    #[test]
    fn staged_outputs_are_checked_against_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path();
        std::fs::create_dir(work.join("out")).expect("out");
        std::fs::write(work.join("out/a"), b"hello").expect("a");
        let (hash, size) = hash_file(&work.join("out/a")).expect("hash");
        let mut result = TaskResult {
            exit: wire::WireExit::Code { code: 0 },
            duration_ms: 1,
            outputs: vec![wire::WireOutput {
                name: "a".into(),
                hash: hash.clone(),
                size,
            }],
            node: "n1".into(),
            job_id: "7_0".into(),
        };
        let verified = verify_staged(work, &result).expect("the same bytes");
        assert_eq!(
            verified.get("a").map(|o| o.hash.as_str()),
            Some(hash.as_str())
        );
        std::fs::write(work.join("out/a"), b"HELLO").expect("change");
        let err = verify_staged(work, &result).expect_err("changed bytes");
        assert!(
            err.contains("does not match what job 7_0 on n1 recorded"),
            "{err}"
        );
        std::fs::write(work.join("out/a"), b"hello").expect("restore");
        std::fs::write(work.join("out/late"), b"x").expect("late");
        let err = verify_staged(work, &result).expect_err("late file");
        assert!(err.contains("`late` appeared after"), "{err}");
        std::fs::remove_file(work.join("out/late")).expect("rm");
        result.outputs.push(wire::WireOutput {
            name: "gone".into(),
            hash,
            size,
        });
        let err = verify_staged(work, &result).expect_err("missing file");
        assert!(
            err.contains("`gone` recorded by job 7_0 is missing"),
            "{err}"
        );
    }
}
