//! Progress bars on a terminal: one indicatif bar per active step (done/total, rate, ETA) above an
//! overall line, driven by engine events. A step whose tasks an executor placed on a cluster also
//! names their jobs and the jobs' states (`on Slurm: 41_0 RUNNING (250), 41_1 PENDING (250)`). Log output goes through [`StderrWriter`], which suspends
//! the bars while it writes, so a log line never tears them.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::events::{Event, Observer};

/// Jobs named in a step's line; more are counted.
const JOBS_SHOWN: usize = 3;

/// How often the bars redraw on their own (elapsed time and ETA move without events).
const TICK: Duration = Duration::from_millis(200);

/// The bars of one run.
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    color: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: HashMap<String, StepBar>,
    queued: u64,
    done: u64,
    failed: u64,
    running: u64,
    /// The job of each placed task still running: (step, job).
    placed: HashMap<i64, (String, String)>,
}

struct StepBar {
    /// `None` while the step has nothing left to do: only active steps show a bar.
    bar: Option<ProgressBar>,
    queued: u64,
    done: u64,
    failed: u64,
    running: u64,
    /// The jobs its running tasks are in: job → (its state, how many of the step's tasks).
    jobs: BTreeMap<String, (String, u64)>,
}

impl StepBar {
    fn new() -> StepBar {
        StepBar {
            bar: None,
            queued: 0,
            done: 0,
            failed: 0,
            running: 0,
            jobs: BTreeMap::new(),
        }
    }

    /// One task less in `job`.
    fn leave(&mut self, job: &str) {
        if let Some((_, tasks)) = self.jobs.get_mut(job) {
            *tasks = tasks.saturating_sub(1);
            if *tasks == 0 {
                self.jobs.remove(job);
            }
        }
    }
}

impl Progress {
    /// Bars drawn on stderr. Call only when stderr is a terminal and the user did not ask for -q.
    pub fn stderr(color: bool) -> Progress {
        Progress::with_target(ProgressDrawTarget::stderr(), color)
    }

    /// Bars drawn to `target` (hidden in unit tests).
    pub fn with_target(target: ProgressDrawTarget, color: bool) -> Progress {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0).with_style(overall_style(color)));
        overall.set_prefix("overall");
        overall.enable_steady_tick(TICK);
        Progress {
            multi,
            overall,
            color,
            state: Mutex::new(State::default()),
        }
    }

    /// The container the log writer suspends.
    pub fn multi(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Remove every bar (before the summary is printed).
    pub fn finish(&self) {
        if let Ok(state) = self.state.lock() {
            for step in state.steps.values() {
                if let Some(bar) = &step.bar {
                    bar.finish_and_clear();
                    self.multi.remove(bar);
                }
            }
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }

    /// The message of a step's bar.
    #[cfg(test)]
    fn step_line(&self, name: &str) -> Option<String> {
        let state = self.state.lock().ok()?;
        let step = state.steps.get(name)?;
        Some(Progress::step_message(step, false))
    }

    /// (done, queued) of a step, and whether it has a bar now.
    #[cfg(test)]
    fn step(&self, name: &str) -> Option<(u64, u64, bool)> {
        let state = self.state.lock().ok()?;
        state
            .steps
            .get(name)
            .map(|s| (s.done, s.queued, s.bar.is_some()))
    }

    fn update_overall(&self, state: &State) {
        self.overall.set_length(state.queued);
        self.overall.set_position(state.done);
        let mut message = format!("{} running", state.running);
        if state.failed > 0 {
            let (red, reset) = if self.color {
                ("\x1b[31m", "\x1b[0m")
            } else {
                ("", "")
            };
            message.push_str(&format!(", {red}{} failed{reset}", state.failed));
        }
        self.overall.set_message(message);
    }

    fn step_message(step: &StepBar, color: bool) -> String {
        let mut message = format!("{} running", step.running);
        if step.failed > 0 {
            let (red, reset) = if color {
                ("\x1b[31m", "\x1b[0m")
            } else {
                ("", "")
            };
            message.push_str(&format!(", {red}{} failed{reset}", step.failed));
        }
        if !step.jobs.is_empty() {
            let shown: Vec<String> = step
                .jobs
                .iter()
                .take(JOBS_SHOWN)
                .map(|(job, (state, tasks))| format!("{job} {state} ({tasks})"))
                .collect();
            message.push_str(&format!(", on Slurm: {}", shown.join(", ")));
            if step.jobs.len() > JOBS_SHOWN {
                message.push_str(&format!(" +{} jobs", step.jobs.len() - JOBS_SHOWN));
            }
        }
        message
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event<'_>) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let state = &mut *guard;
        match event {
            Event::TasksQueued { step, count } => {
                state.queued += count;
                let entry = state
                    .steps
                    .entry((*step).to_string())
                    .or_insert_with(StepBar::new);
                entry.queued += count;
                let message = Progress::step_message(entry, self.color);
                let bar = entry.bar.get_or_insert_with(|| {
                    let bar = self.multi.insert_before(
                        &self.overall,
                        ProgressBar::new(0).with_style(step_style(self.color)),
                    );
                    bar.set_prefix((*step).to_string());
                    bar
                });
                bar.set_length(entry.queued);
                bar.set_position(entry.done);
                bar.set_message(message);
            }
            Event::TaskStarted { step, .. } => {
                state.running += 1;
                if let Some(entry) = state.steps.get_mut(*step) {
                    entry.running += 1;
                    if let Some(bar) = &entry.bar {
                        bar.set_message(Progress::step_message(entry, self.color));
                    }
                }
            }
            Event::TaskPlaced {
                step,
                task_id,
                job,
                state: job_state,
            } => {
                let Some(entry) = state.steps.get_mut(*step) else {
                    return;
                };
                if let Some((_, old)) = state.placed.get(task_id) {
                    entry.leave(old);
                }
                state
                    .placed
                    .insert(*task_id, ((*step).to_string(), (*job).to_string()));
                let slot = entry
                    .jobs
                    .entry((*job).to_string())
                    .or_insert_with(|| ((*job_state).to_string(), 0));
                slot.0 = (*job_state).to_string();
                slot.1 += 1;
                if let Some(bar) = &entry.bar {
                    bar.set_message(Progress::step_message(entry, self.color));
                }
                return;
            }
            Event::TaskFinished {
                step,
                task_id,
                succeeded,
                ..
            } => {
                if let Some((placed_step, job)) = state.placed.remove(task_id)
                    && let Some(entry) = state.steps.get_mut(&placed_step)
                {
                    entry.leave(&job);
                }
                state.running = state.running.saturating_sub(1);
                state.done += 1;
                if !succeeded {
                    state.failed += 1;
                }
                if let Some(entry) = state.steps.get_mut(*step) {
                    entry.running = entry.running.saturating_sub(1);
                    entry.done += 1;
                    if !succeeded {
                        entry.failed += 1;
                    }
                    if entry.done >= entry.queued && entry.running == 0 {
                        if let Some(bar) = entry.bar.take() {
                            bar.finish_and_clear();
                            self.multi.remove(&bar);
                        }
                    } else if let Some(bar) = &entry.bar {
                        bar.set_position(entry.done);
                        bar.set_message(Progress::step_message(entry, self.color));
                    }
                }
            }
            Event::RunStarted { .. } | Event::Output { .. } => return,
        }
        self.update_overall(state);
    }
}

fn step_template(color: bool) -> &'static str {
    if color {
        "{prefix:>14.cyan.bold} [{bar:30.green/dim}] {pos:>6}/{len:<6} {rate:>8} ETA {eta:<4} {msg}"
    } else {
        "{prefix:>14} [{bar:30}] {pos:>6}/{len:<6} {rate:>8} ETA {eta:<4} {msg}"
    }
}

fn overall_template(color: bool) -> &'static str {
    if color {
        "{prefix:>14.bold} [{bar:30.blue/dim}] {pos:>6}/{len:<6} tasks {elapsed:>6} {msg}"
    } else {
        "{prefix:>14} [{bar:30}] {pos:>6}/{len:<6} tasks {elapsed:>6} {msg}"
    }
}

fn step_style(color: bool) -> ProgressStyle {
    // The templates are constants checked by a unit test; a bad one falls back to the default.
    ProgressStyle::with_template(step_template(color))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}/s", state.per_sec());
            },
        )
        .progress_chars("=> ")
}

fn overall_style(color: bool) -> ProgressStyle {
    ProgressStyle::with_template(overall_template(color))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A `tracing_subscriber` writer for stderr that hides the bars while a line is written.
#[derive(Clone)]
pub struct StderrWriter {
    bars: Option<MultiProgress>,
}

impl StderrWriter {
    pub fn new(bars: Option<MultiProgress>) -> StderrWriter {
        StderrWriter { bars }
    }

    /// Write `text` to stderr without tearing the bars.
    pub fn write_str(&self, text: &str) {
        let write = || {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        };
        match &self.bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

/// One log record, buffered and written whole when dropped.
pub struct BufferedLine {
    buf: Vec<u8>,
    bars: Option<MultiProgress>,
}

impl Write for BufferedLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for BufferedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let write = move || {
            let _ = std::io::stderr().lock().write_all(&buf);
        };
        match &self.bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = BufferedLine;

    fn make_writer(&'a self) -> BufferedLine {
        BufferedLine {
            buf: Vec::with_capacity(128),
            bars: self.bars.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started<'a>(step: &'a str, task_id: i64) -> Event<'a> {
        Event::TaskStarted {
            step,
            task_id,
            input: None,
            input_hash: None,
        }
    }

    fn finished<'a>(step: &'a str, task_id: i64, succeeded: bool) -> Event<'a> {
        Event::TaskFinished {
            step,
            task_id,
            succeeded,
            duration: Duration::from_millis(1),
            outputs: 0,
            error: None,
            hints: &[],
        }
    }

    #[test]
    fn bars_follow_the_events_and_disappear_when_a_step_is_done() {
        let progress = Progress::with_target(ProgressDrawTarget::hidden(), false);
        progress.event(&Event::TasksQueued {
            step: "shout",
            count: 3,
        });
        progress.event(&Event::TasksQueued {
            step: "split",
            count: 1,
        });
        assert_eq!(progress.step("shout"), Some((0, 3, true)));
        progress.event(&started("shout", 1));
        progress.event(&started("shout", 2));
        progress.event(&finished("shout", 1, true));
        progress.event(&finished("shout", 2, false));
        assert_eq!(progress.step("shout"), Some((2, 3, true)));
        assert_eq!(progress.overall.position(), 2);
        assert_eq!(progress.overall.length(), Some(4));
        assert!(progress.overall.message().contains("1 failed"));
        // More work appears while the step runs: the total grows.
        progress.event(&Event::TasksQueued {
            step: "shout",
            count: 2,
        });
        assert_eq!(progress.step("shout"), Some((2, 5, true)));
        for id in 3..=5 {
            progress.event(&started("shout", id));
            progress.event(&finished("shout", id, true));
        }
        assert_eq!(
            progress.step("shout"),
            Some((5, 5, false)),
            "a finished step has no bar"
        );
        assert_eq!(progress.step("split"), Some((0, 1, true)));
        assert_eq!(progress.overall.position(), 5);
        assert_eq!(progress.overall.length(), Some(6));
        progress.finish();
        assert!(progress.overall.is_finished());
    }

    fn placed<'a>(step: &'a str, task_id: i64, job: &'a str, state: &'a str) -> Event<'a> {
        Event::TaskPlaced {
            step,
            task_id,
            job,
            state,
        }
    }

    #[test]
    fn a_steps_line_names_its_slurm_jobs_and_their_states() {
        let progress = Progress::with_target(ProgressDrawTarget::hidden(), false);
        progress.event(&Event::TasksQueued {
            step: "double",
            count: 6,
        });
        for id in 1..=6 {
            progress.event(&started("double", id));
        }
        assert_eq!(progress.step_line("double").as_deref(), Some("6 running"));
        for (id, job) in [
            (1, "41_0"),
            (2, "41_0"),
            (3, "41_1"),
            (4, "41_2"),
            (5, "41_3"),
        ] {
            progress.event(&placed("double", id, job, "PENDING"));
        }
        assert_eq!(
            progress.step_line("double").as_deref(),
            Some(
                "6 running, on Slurm: 41_0 PENDING (2), 41_1 PENDING (1), 41_2 PENDING (1) +1 jobs"
            )
        );
        progress.event(&placed("double", 1, "41_0", "RUNNING"));
        progress.event(&placed("double", 2, "41_0", "RUNNING"));
        progress.event(&finished("double", 3, true));
        progress.event(&finished("double", 4, true));
        assert_eq!(
            progress.step_line("double").as_deref(),
            Some("4 running, on Slurm: 41_0 RUNNING (2), 41_3 PENDING (1)")
        );
        // A task placed again (requeued into another job) leaves its old one.
        progress.event(&placed("double", 5, "42_0", "PENDING"));
        progress.event(&finished("double", 1, true));
        assert_eq!(
            progress.step_line("double").as_deref(),
            Some("3 running, on Slurm: 41_0 RUNNING (1), 42_0 PENDING (1)")
        );
    }

    #[test]
    fn templates_are_valid() {
        for color in [false, true] {
            assert!(ProgressStyle::with_template(step_template(color)).is_ok());
            assert!(ProgressStyle::with_template(overall_template(color)).is_ok());
        }
    }
}
