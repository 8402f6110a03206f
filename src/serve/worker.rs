//! One worker per pipeline: a dedicated, long-lived OS thread with its own current-thread tokio
//! runtime that takes runs off the pipeline's wait list, one at a time, and drives the engine.
//!
//! The engine spawns every task from one thread, and the sandbox ties the parent-death signal of
//! what it spawns to that thread, so each pipeline's runs stay on the same thread for the life of
//! the server (as `grit run` keeps its run on its main thread). The HTTP side talks to a worker
//! only through [`Pipeline`]: the store's writer for the queue, `wake` when something was queued,
//! and the running run's [`CancelToken`].
//!
//! A pipeline whose manifest says `[executor] kind = "slurm"` runs its tasks as Slurm jobs, as
//! `grit run` would ([`launch::Where`]); the server's environment must point at the cluster
//! (`SLURM_CONF`), and its store must be on the filesystem the nodes share.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::config::PipelineConfig;
use super::events::EventBus;
use super::metrics::Metrics;
use super::queue::{self, Claim, Finish, RunRecord};
use super::ui::pipelines::StepModels;
use crate::cli::CaptureMode;
use crate::engine::events::{Event, Observer};
use crate::engine::{self, CancelReason, CancelToken, RunOptions, RunReport};
use crate::launch::{self, Launch};
use crate::manifest;
use crate::store::read_cache::ReadCache;
use crate::store::{StoreLock, StorePaths, Writer};

/// How long a worker waits before it retries after its store failed it.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Failures named in a failed run's reason.
const REASON_FAILURES: usize = 3;

/// The run a worker is executing.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: i64,
    pub cancel: CancelToken,
    /// The engine run doing the work, once it started.
    pub engine_run: Option<i64>,
}

/// What every pipeline reports to: the event stream and the metrics.
#[derive(Default)]
pub struct Hub {
    pub events: EventBus,
    pub metrics: Metrics,
}

/// A pipeline the server runs: its config, its store (held locked while the server runs) and
/// the handles its worker listens on.
pub struct Pipeline {
    pub hub: Arc<Hub>,
    config: RwLock<Arc<PipelineConfig>>,
    pub paths: StorePaths,
    pub writer: Writer,
    /// The store lock: one run at a time per store, and no `grit run` beside the server.
    _lock: StoreLock,
    /// Something was queued (or cancelled), or a watched file changed: look again.
    pub wake: Notify,
    /// The config was reloaded (SIGHUP): the scheduler reads it again.
    pub reloaded: Notify,
    /// Watched files that changed and are not ingested yet ([`super::watch`]).
    pub changes: Mutex<super::watch::Changes>,
    current: Mutex<Option<Current>>,
    /// A client's cancel of a run that was claimed but is not `current` yet: [`execute`] applies
    /// it as the run starts. Locked inside `current`'s lock.
    cancel_at_start: Mutex<Option<i64>>,
    /// Read-only connections to the store, kept between API requests ([`super::api::read_store`]):
    /// opening and identifying the store each time was most of a small request's cost.
    pub readers: Mutex<Vec<rusqlite::Connection>>,
    /// The step graph, flows and counts of the Pipeline page, kept until the data they read
    /// changes (the store's dataflow generation): computing them costs time in proportion to the
    /// whole store.
    pub step_models: ReadCache<StepModels>,
    /// True while the engine runs a run of this pipeline: its tasks keep changing the store.
    /// Cleared as soon as the engine returns, before the run's end is recorded, so that whoever
    /// sees the run finished also sees the store as it left it.
    publishing: std::sync::atomic::AtomicBool,
}

impl Pipeline {
    pub fn new(
        config: PipelineConfig,
        paths: StorePaths,
        lock: StoreLock,
        writer: Writer,
        hub: Arc<Hub>,
    ) -> Self {
        Pipeline {
            hub,
            config: RwLock::new(Arc::new(config)),
            paths,
            writer,
            _lock: lock,
            wake: Notify::new(),
            reloaded: Notify::new(),
            changes: Mutex::new(super::watch::Changes::default()),
            current: Mutex::new(None),
            cancel_at_start: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            step_models: ReadCache::default(),
            publishing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> Arc<PipelineConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replace the config (SIGHUP); the running run keeps the one it started with.
    pub fn set_config(&self, config: PipelineConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        self.wake.notify_one();
        self.reloaded.notify_one();
    }

    /// The server has just written to the store outside a run (a trigger, a cancel, a deleted
    /// record, a run's end): bring the Pipeline page's step graph and counts up to date ahead
    /// of the next view, on a blocking thread. Most such writes touch only the server's own
    /// records, which leave the dataflow generation as it was (see `ReadCache`): then this
    /// costs one read of the generation. During a run the page serves the last ones computed
    /// instead, so nothing is done then.
    pub fn store_written(self: &Arc<Self>) {
        if self.publishing() {
            return;
        }
        let pipeline = self.clone();
        tokio::task::spawn_blocking(move || super::ui::pipelines::warm(&pipeline));
    }

    /// Whether the engine is running a run of this pipeline right now (see `publishing`).
    pub fn publishing(&self) -> bool {
        self.publishing.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Make `current` the running run (`None`: no run). A cancel that came for it between its
    /// claim and now ([`Pipeline::cancel_running`]) takes effect here.
    fn set_current(&self, current: Option<Current>) {
        let mut slot = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut early = self
            .cancel_at_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = &current
            && *early == Some(current.id)
        {
            current.cancel.cancel(CancelReason::Requested);
        }
        *early = None;
        *slot = current;
    }

    /// Stop the running run `id` on a client's request. False when `id` is not the current
    /// run: then the cancel is kept for the moment it becomes current, since the record of a
    /// run that is starting says `running` before the worker has made it current. The caller
    /// looks at the record again to tell that from a run that has ended, and then calls
    /// [`Pipeline::forget_cancel`].
    pub fn cancel_running(&self, id: i64) -> bool {
        let slot = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            Some(current) if current.id == id => {
                current.cancel.cancel(CancelReason::Requested);
                true
            }
            _ => {
                *self
                    .cancel_at_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(id);
                false
            }
        }
    }

    /// Announce a run that ended while it waited (cancelled by a client, replaced by a newer
    /// trigger, or its record deleted): its `run_finished` event and its count in the metrics,
    /// as for a run that ran.
    pub fn ended_waiting(&self, id: i64, reason: &str) {
        let name = self.config().name.clone();
        self.hub.metrics.run_ended_unstarted(&name, "cancelled");
        self.hub.events.publish(
            "run_finished",
            serde_json::json!({
                "pipeline": name, "run_id": queue::public_id(&name, id), "status": "cancelled",
                "reason": reason,
            }),
        );
    }

    /// Drop a cancel kept by [`Pipeline::cancel_running`] for run `id`, which has ended.
    pub fn forget_cancel(&self, id: i64) {
        let _slot = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut early = self
            .cancel_at_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *early == Some(id) {
            *early = None;
        }
    }
}

/// Start the worker thread of `pipeline`. It returns once `shutdown` turns true and its running
/// run (if any) has ended: finished within `shutdown_timeout`, or cancelled after it.
pub fn spawn(
    pipeline: Arc<Pipeline>,
    shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let name = pipeline.config().name.clone();
    std::thread::Builder::new()
        .name(format!("grit-serve-{name}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(pipeline = %name, "cannot start the worker's runtime: {e}");
                    return;
                }
            };
            runtime.block_on(work(pipeline, shutdown, shutdown_timeout));
        })
}

async fn work(
    pipeline: Arc<Pipeline>,
    mut shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Changed files first, between runs: they may be what the next run needs.
        let settle = match super::watch::due(&pipeline) {
            super::watch::Due::Ingest(files) => {
                match super::watch::ingest(&pipeline, files).await {
                    Ok(true) => super::schedule::enqueue(&pipeline, "watch").await,
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        pipeline = %pipeline.config().name,
                        "watch: ingesting changed files: {e}"
                    ),
                }
                continue;
            }
            super::watch::Due::Wait(settle) => Some(settle),
            super::watch::Due::Nothing => None,
        };
        let claim = pipeline.writer.call(queue::claim).await;
        let wait = match claim {
            Ok(Claim::Run(record)) => {
                claim_test_delay().await;
                execute(&pipeline, *record, &shutdown, shutdown_timeout).await;
                continue;
            }
            Ok(Claim::Idle) => None,
            Ok(Claim::WaitUntil(ms)) => {
                Some(Duration::from_millis((ms - queue::unix_ms()).max(0) as u64))
            }
            Err(e) => {
                tracing::error!(pipeline = %pipeline.config().name, "reading the wait list: {e}");
                Some(STORE_RETRY)
            }
        };
        let wait = match (wait, settle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = pipeline.wake.notified() => {}
            changed = shutdown.changed() => if changed.is_err() { return },
        }
    }
}

/// Test hook: with `GRIT_TEST_CLAIM_DELAY_MS=<n>` in the environment, the worker waits `n` ms
/// between claiming a run and starting it, as a loaded machine may, so that `tests/serve.rs` can
/// cancel a run in that gap. Only that test sets it.
async fn claim_test_delay() {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("GRIT_TEST_CLAIM_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
    });
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}

/// Run one claimed record to its end and record how it ended.
async fn execute(
    pipeline: &Arc<Pipeline>,
    record: RunRecord,
    shutdown: &watch::Receiver<bool>,
    shutdown_timeout: Duration,
) {
    let id = record.id;
    let cancel = CancelToken::new();
    pipeline.set_current(Some(Current {
        id,
        cancel: cancel.clone(),
        engine_run: None,
    }));
    let name = pipeline.config().name.clone();
    let run_id = record.public_id();
    let began = std::time::Instant::now();
    tracing::info!(pipeline = %name, run = %run_id, resumed = record.resumed, "run started");
    pipeline.hub.events.publish(
        "run_started",
        serde_json::json!({ "pipeline": name, "run_id": run_id, "resumed": record.resumed }),
    );
    // A stop of the server lets the run finish for `shutdown_timeout`, then cancels it; a run
    // on an executor that asks for it (Slurm: its jobs may wait in the queue for hours) is
    // cancelled at once, so its jobs are cancelled while the server is still there to do it.
    let (at_once, mut at_once_seen) = watch::channel(false);
    let guard = {
        let cancel = cancel.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            if shutdown.wait_for(|stop| *stop).await.is_ok() {
                tokio::select! {
                    () = tokio::time::sleep(shutdown_timeout) => {}
                    Ok(_) = at_once_seen.wait_for(|now| *now) => {}
                }
                cancel.cancel(CancelReason::Signal(libc::SIGTERM));
            }
        })
    };
    pipeline
        .publishing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let end = run(pipeline, &record, &cancel, &at_once).await;
    pipeline
        .publishing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    guard.abort();
    tracing::info!(pipeline = %name, run = %record.public_id(), status = end.status, "run ended");
    let config = pipeline.config();
    let (keep_runs, keep_days) = (config.keep_runs, config.keep_days);
    let finished = pipeline
        .writer
        .call({
            let end = end.clone();
            move |conn| {
                queue::finish(conn, id, &end)?;
                queue::prune(conn, keep_runs, keep_days)
            }
        })
        .await;
    if let Err(e) = finished {
        tracing::error!(pipeline = %name, "recording the end of run {run_id}: {e}");
    }
    pipeline.set_current(None);
    pipeline.store_written();
    pipeline
        .hub
        .metrics
        .run_ended(&name, end.status, began.elapsed());
    pipeline.hub.events.publish(
        "run_finished",
        serde_json::json!({
            "pipeline": name, "run_id": run_id, "status": end.status, "reason": end.reason,
        }),
    );
}

fn failed(reason: String) -> Finish {
    Finish {
        status: "failed",
        reason: Some(reason),
        steps: None,
        resume: false,
    }
}

/// Runs the record's pipeline; tells `at_once` whether a stop of the server cancels the run at
/// once (see [`crate::executor::Executor::cancel_at_server_stop`]).
async fn run(
    pipeline: &Arc<Pipeline>,
    record: &RunRecord,
    cancel: &CancelToken,
    at_once: &watch::Sender<bool>,
) -> Finish {
    let config = pipeline.config();
    let loaded = match manifest::load(&config.manifest) {
        Ok(loaded) => loaded,
        Err(e) => return failed(e.to_string()),
    };
    for warning in &loaded.warnings {
        tracing::warn!(pipeline = %config.name, "{warning}");
    }
    let placing = launch::Where {
        manifest: &loaded.manifest,
        manifest_path: &config.manifest,
        start: None,
        params: &record.params,
        store: &pipeline.paths.root,
        slurm: None,
        capture: CaptureMode::Auto,
        jobs: config.jobs,
    }
    .placing(&pipeline.writer);
    let placing = match placing {
        Ok(placing) => placing,
        Err(e) => return failed(format!("{e:#}")),
    };
    let cancel_at_stop = placing.executor.cancel_at_server_stop();
    at_once.send_replace(cancel_at_stop);
    let launch = Launch {
        manifest: loaded.manifest,
        capture: placing.capture,
        lines: None,
        executor: placing.executor,
        options: RunOptions {
            jobs: placing.jobs,
            only_steps: Vec::new(),
            force_steps: Vec::new(),
            max_tasks: None,
            no_sandbox: config.no_sandbox,
            // The config's values with the request's on top (checked when it was queued).
            params: record.params.clone(),
        },
    };
    let known = match launch::known_names(&pipeline.paths) {
        Ok(known) => known,
        Err(e) => return failed(format!("{e:#}")),
    };
    let inputs = match launch::prepare(launch, &pipeline.paths, pipeline.writer.clone(), &known) {
        Ok(inputs) => inputs,
        Err(e) => return failed(format!("{e:#}")),
    };
    let observer = RunObserver {
        pipeline: pipeline.clone(),
        name: config.name.clone(),
        record: record.id,
        run_id: record.public_id(),
    };
    match engine::run(inputs, &observer, cancel).await {
        Ok(report) => ended(&report, cancel.reason(), cancel_at_stop),
        Err(e) => failed(e.to_string()),
    }
}

/// The record's end for an engine report; `at_once`: a stop of the server cancelled the run
/// without waiting for `shutdown_timeout`.
fn ended(report: &RunReport, cancelled: Option<CancelReason>, at_once: bool) -> Finish {
    let steps = serde_json::to_string(&report.steps).ok();
    let (status, reason, resume) = match (report.cancelled, cancelled) {
        (true, Some(CancelReason::Requested)) => {
            ("cancelled", Some("cancelled by a client".to_string()), false)
        }
        (true, _) => (
            "interrupted",
            Some(
                if at_once {
                    "the server stopped during the run (its Slurm jobs were cancelled); it resumes when the server starts again"
                } else {
                    "the server stopped during the run (after shutdown_timeout); it resumes when the server starts again"
                }
                .to_string(),
            ),
            true,
        ),
        (false, _) if report.totals.failed > 0 => {
            let mut reason = format!("{} task(s) failed", report.totals.failed);
            for f in report.failures.iter().take(REASON_FAILURES) {
                reason.push_str(&format!("; {} task {}: {}", f.step, f.task, f.error));
            }
            ("failed", Some(reason), false)
        }
        (false, _) if report.store_damaged() => (
            "failed",
            Some("the store is damaged: run `grit verify` on it".to_string()),
            false,
        ),
        (false, _) => ("succeeded", None, false),
    };
    Finish {
        status,
        reason,
        steps,
        resume,
    }
}

/// Follows the engine's events for one record: remembers the engine run doing its work, and
/// publishes its tasks' starts and ends.
struct RunObserver {
    pipeline: Arc<Pipeline>,
    name: String,
    record: i64,
    run_id: String,
}

impl Observer for RunObserver {
    fn event(&self, event: &Event<'_>) {
        match *event {
            Event::TaskStarted {
                step,
                task_id,
                input,
                ..
            } => self.pipeline.hub.events.publish(
                "task_started",
                serde_json::json!({
                    "pipeline": self.name, "run_id": self.run_id,
                    "task_id": queue::public_id(&self.name, task_id), "step": step, "input": input,
                }),
            ),
            Event::TaskFinished {
                step,
                task_id,
                succeeded,
                duration,
                outputs,
                error,
                ..
            } => {
                self.pipeline
                    .hub
                    .metrics
                    .task_ended(&self.name, succeeded, duration);
                self.pipeline.hub.events.publish(
                    "task_finished",
                    serde_json::json!({
                        "pipeline": self.name, "run_id": self.run_id,
                        "task_id": queue::public_id(&self.name, task_id), "step": step,
                        "succeeded": succeeded, "duration_ms": duration.as_millis() as u64,
                        "outputs": outputs, "error": error,
                    }),
                );
            }
            _ => {}
        }
        if let Event::RunStarted { run_id, .. } = *event {
            if let Some(mut current) = self.pipeline.current() {
                current.engine_run = Some(run_id);
                self.pipeline.set_current(Some(current));
            }
            // Recorded in the store too: a crash must not lose which engine runs did the work.
            let writer = self.pipeline.writer.clone();
            let record = self.record;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let set = writer
                        .call(move |conn| queue::set_engine_run(conn, record, run_id))
                        .await;
                    if let Err(e) = set {
                        tracing::warn!("recording the engine run of a served run: {e}");
                    }
                });
            }
        }
    }
}
