//! What the engine tells the outside world while it runs. Reporting (progress bars, logs, the
//! summary) subscribes through [`Observer`]; it never sits inside the scheduling loop.

use std::time::Duration;

/// One thing that happened during a run.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    RunStarted {
        run_id: i64,
        recovered: u64,
    },
    /// `count` more tasks of `step` became pending.
    TasksQueued {
        step: &'a str,
        count: u64,
    },
    TaskStarted {
        step: &'a str,
        task_id: i64,
        /// The input resource's name and content hash (map steps).
        input: Option<&'a str>,
        input_hash: Option<&'a str>,
    },
    TaskFinished {
        step: &'a str,
        task_id: i64,
        succeeded: bool,
        duration: Duration,
        outputs: usize,
        error: Option<&'a str>,
        /// What the log suggests the sandbox hid: shown for failures and successes alike, since
        /// a pipe can hide an error.
        hints: &'a [String],
    },
    /// The executor placed a running task somewhere, or its place changed state: a cluster's
    /// job (`job`, e.g. the Slurm job `123_4`) and that job's state (`PENDING`, `RUNNING`, ...).
    /// Local tasks have none.
    TaskPlaced {
        step: &'a str,
        task_id: i64,
        job: &'a str,
        state: &'a str,
    },
    /// A succeeded task published this output (new, or identical to an existing resource).
    Output {
        step: &'a str,
        task_id: i64,
        name: &'a str,
        hash: &'a str,
        size: u64,
    },
}

/// Receives engine events. Implementations must be cheap: they run on the scheduling thread.
pub trait Observer: Send + Sync {
    fn event(&self, event: &Event<'_>);
}
