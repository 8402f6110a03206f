//! The executor seam (DESIGN §3): run one attempt of one task — `shell + script` with the script
//! contract's environment — and report how it ended. Output capture and publishing are the
//! engine's; the executor only runs the task's processes, wherever they run.
//!
//! The engine holds an `Arc<dyn` [`Executor`]`>` it was given in its
//! [`crate::engine::RunInputs`]; it never names an implementation. [`process::ProcessExecutor`]
//! is today's: it spawns the script in its own process group (plain) or, for steps with
//! `sandbox = "strict"`, inside its own [`crate::sandbox::Sandbox`]. A cluster executor (Slurm)
//! or a test's fake plugs in the same way.
//!
//! Nothing here is process-global: an executor owns what it starts (the sandbox's zygote), and
//! what belongs to one run (its cancellation, where script lines go) comes with each task in a
//! [`TaskControl`], so one executor may serve runs one after the other or at once.

pub mod process;
pub mod slurm;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::capture::HelperCheck;
use crate::manifest::Step;

/// The future of one attempt, boxed so that [`Executor`] stays object safe.
pub type ExecFuture<'a> = Pin<Box<dyn Future<Output = Exit> + Send + 'a>>;

/// Where and how a task's script runs: the seam between the engine and processes.
pub trait Executor: Send + Sync {
    /// Runs one attempt of `spec` to its end and says how it ended. The attempt writes its
    /// outputs into `spec.output_dir` and its stdout and stderr into `spec.log_path` (and hands
    /// each line to `control.lines`, when given). Once `control.cancel` fires, it kills what it
    /// started (or starts nothing) and returns [`Exit::Cancelled`]. Nothing of the attempt may
    /// outlive the returned future, also when the future is dropped unfinished.
    fn execute<'a>(&'a self, spec: &'a TaskSpec, control: &'a TaskControl) -> ExecFuture<'a>;

    /// Processes outside every task that use a running task's `OUTPUT_DIR` on its behalf (the
    /// sandbox's zygote), for the output capture's caller check; `None` when there are none.
    fn helpers(&self) -> Option<HelperCheck> {
        None
    }

    /// A run that used this executor is over, and its output capture is about to go: let go of
    /// anything that holds the run's mounts (the sandbox's zygote has a copy of them). The next
    /// task starts afresh.
    fn run_ended(&self) {}

    /// Short name for messages (`process`, `slurm`, ...).
    fn kind(&self) -> &'static str;

    /// Whether a stopping `grit serve` cancels a run on this executor at once rather than letting
    /// it finish for `shutdown_timeout`: its tasks are jobs that may wait in a cluster's queue far
    /// longer than any timeout, and nobody watches them once the server is gone.
    fn cancel_at_server_stop(&self) -> bool {
        false
    }

    /// Whether a task's `scratch_dir` must be made on this machine. An executor that runs tasks
    /// elsewhere and makes their scratch there (Slurm) says no: it has every task of a big step
    /// in flight at once, and a directory each here would be thousands of `mkdir`s, and as many
    /// `rmdir`s at the end of the run (each waiting for the device under `discard`).
    fn needs_scratch_dir(&self) -> bool {
        true
    }

    /// Whether this executor can set a task up before its script may run, and waits for
    /// [`TaskControl::script_may_start`] in between. The engine then starts up to `-j` more tasks
    /// than scripts may run, so the next task's sandbox is ready when a script ends: a
    /// sandbox's set-up takes about a millisecond, mostly waiting (the zygote, the kernel), and
    /// at `-j` equal to the CPUs that wait would leave a CPU idle between every two tasks.
    fn prepares_ahead(&self) -> bool {
        false
    }
}

/// The right to start a task's script, under `-j` and the step's `parallel`, for a task the
/// engine started ahead (see [`Executor::prepares_ahead`]). The limits are semaphores, so tasks
/// get their turn in the order they asked; the task counts as running from then on.
#[derive(Clone)]
pub struct ScriptGate {
    /// `-j`.
    pub run: Arc<tokio::sync::Semaphore>,
    /// The step's `parallel`, if it has one.
    pub step: Option<Arc<tokio::sync::Semaphore>>,
    pub task_id: i64,
    /// Told the task's id once its script may start: from then on it is running.
    pub started: tokio::sync::mpsc::UnboundedSender<i64>,
    /// Microseconds the task waited for its turn (added over its attempts), which are not part
    /// of its duration.
    pub waited_us: Arc<std::sync::atomic::AtomicU64>,
}

/// Held while a task's script runs; dropping it lets the next one start.
#[derive(Default)]
pub struct ScriptPermit {
    _step: Option<tokio::sync::OwnedSemaphorePermit>,
    _run: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What the run a task belongs to lends the executor for it.
#[derive(Clone)]
pub struct TaskControl {
    /// The run's cancellation: the attempt stops when it fires.
    pub cancel: CancelToken,
    /// Receives output lines; when `None`, stdout and stderr go straight to the log file.
    pub lines: Option<LineSink>,
    /// Receives where the executor placed the task, each time that changes (a cluster's job and
    /// its state); a local executor sends nothing.
    pub placed: Option<PlacementSink>,
    /// The task's turn to run its script, when the engine started it ahead.
    pub gate: Option<ScriptGate>,
    /// Where an executor that times attempts where they ran (a cluster's node) reports it.
    pub ran_for: Option<RanFor>,
}

/// The time a task's attempts took where they ran, as the executor measured it there (added
/// over attempts). It is then the task's duration: the time the attempt was away from the
/// engine includes, on a cluster, the queue and the tasks before it in its job.
#[derive(Clone, Default)]
pub struct RanFor(Arc<std::sync::Mutex<Option<std::time::Duration>>>);

impl RanFor {
    pub fn add(&self, time: std::time::Duration) {
        let mut total = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *total = Some(total.unwrap_or_default() + time);
    }

    /// What the executor reported, if it reported anything.
    pub fn total(&self) -> Option<std::time::Duration> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TaskControl {
    /// Waits until the task's script may start (at once when the task was not started ahead).
    /// The executor calls it after it set the task up and before the script runs, and holds
    /// the permit until the script's processes are gone. Returns `None` once the run is
    /// cancelled.
    pub async fn script_may_start(&self) -> Option<ScriptPermit> {
        let Some(gate) = &self.gate else {
            return Some(ScriptPermit::default());
        };
        let asked = std::time::Instant::now();
        let acquire = async {
            let step = match &gate.step {
                Some(step) => Some(step.clone().acquire_owned().await.ok()?),
                None => None,
            };
            // Step first, then the run: a task holding a run permit always holds its step's.
            let run = gate.run.clone().acquire_owned().await.ok()?;
            Some(ScriptPermit {
                _step: step,
                _run: Some(run),
            })
        };
        let permit = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            permit = acquire => permit,
        }?;
        gate.waited_us.fetch_add(
            asked.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        // The receiver lives as long as the run.
        let _ = gate.started.send(gate.task_id);
        Some(permit)
    }
}

/// Where an executor placed a task, as it learned it: which job of a cluster runs it, and that
/// job's state (`PENDING`, `RUNNING`, ...), in the scheduler's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task_id: i64,
    pub step: String,
    pub job: String,
    pub state: String,
}

/// Where an executor sends [`Placement`]s; the engine turns them into events.
pub type PlacementSink = tokio::sync::mpsc::UnboundedSender<Placement>;

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
    /// Private writable scratch: `TMPDIR` and `HOME`. Empty for an executor that makes its own
    /// where the task runs ([`Executor::needs_scratch_dir`]).
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
    /// The run was cancelled (a signal, a client) and the attempt was stopped: not a failure of
    /// the task.
    Cancelled,
    /// The cluster's scheduler ended the attempt (a time limit, out of memory, preemption, a
    /// node failure, `scancel`): its reason, as Slurm gives it.
    Scheduler(String),
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
            Exit::Scheduler(reason) => format!("stopped by Slurm: {reason}"),
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
