//! The one rule of what a run executes, and why (DESIGN §2.1–2.7): given a step's kind and the
//! stored state of one of its tasks (or that it has none yet), whether a run executes that task
//! and for which reason.
//!
//! Both sides of "what would run" use it, so they cannot drift apart:
//! - the engine's scheduling (`schedule.rs`, and crash recovery in `runs.rs`) turns it into the
//!   SQL that creates tasks and puts stored ones back to pending ([`requeued`], [`recovered`],
//!   [`runs`]);
//! - the plan (`plan.rs`: `grit run --dry-run`, `grit status -m`) counts tasks with it and names
//!   the reasons ([`Why::text`]).
//!
//! The engine records each decision with the task (`tasks.reason`, `tasks.reason_run`, written in
//! the statements that create a task or put it back to pending), and [`recorded`] reads it back,
//! so a task's page says why it ran without guessing from its state.
//!
//! Where the engine's decision needs what only a running run knows (that a gather task already
//! failed in *this* run), the plan asks as a run that has not started yet does.

use super::runs::StepKind;

/// The stored state of a task (the `tasks.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 4] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
    ];

    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }

    /// The state a column value names (the schema admits no other).
    pub fn parse(value: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// Why a run executes a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A source without `once`: it polls in every run (DESIGN §2.2).
    EveryRun,
    /// No task yet: the step (version), its input or its input set is new.
    Fresh,
    /// It failed in an earlier run; every run retries failures (DESIGN §2.6).
    FailedBefore,
    /// Created by an earlier run that ended before running it.
    Pending,
    /// A run stopped while it ran (crash, cancel); the next run starts it again (DESIGN §2.7).
    Interrupted,
    /// `--force-step`: it is up to date, and runs again.
    Forced,
}

/// How the manifest's version of a step relates to the store, for naming [`Why::Fresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionStatus {
    /// The store knows no version of the step.
    NewStep,
    /// The store's current version is another one, and this one never ran.
    Changed,
    /// As `Changed`, where only the values of run parameters differ.
    ParamsChanged,
    /// The store holds this version, but another is current.
    NotCurrent,
    /// This version is in the store (current, or run before).
    Known,
}

impl Why {
    /// The reason as the dry run prints it (modelled on Snakemake's rerun reasons, peers.md §2.2).
    pub fn text(self, kind: StepKind, version: VersionStatus) -> &'static str {
        match self {
            Why::EveryRun => "source: runs every run",
            Why::Fresh => match (version, kind) {
                (VersionStatus::NewStep, _) => "new step",
                (VersionStatus::Changed, _) => "step changed (new version)",
                (VersionStatus::ParamsChanged, _) => "parameter value changed",
                (VersionStatus::NotCurrent, _) => "step version not current",
                (VersionStatus::Known, StepKind::Source) => "never ran",
                (VersionStatus::Known, StepKind::Map) => "new input",
                (VersionStatus::Known, StepKind::Gather) => "new input set",
            },
            Why::FailedBefore => "failed before",
            Why::Pending => "pending: not run yet",
            Why::Interrupted => "interrupted: a run stopped during it",
            Why::Forced => "forced with --force-step",
        }
    }
}

/// Shown for a task whose row predates recorded reasons (schema v7).
pub const NOT_RECORDED: &str = "not recorded (run before grit recorded reasons)";
/// Recorded by `grit repair` for a task it puts back to pending: its output was damaged.
pub const REPAIRED: &str = "its output was damaged: reset by grit repair";
/// Recorded by `grit delete` for a task whose output it deleted.
pub const DELETED: &str = "its output was deleted: reset by grit delete";

/// A task's recorded reason for people: what the run that decided it recorded, or, when an
/// earlier run decided it and ended before running it, that reason as "pending from" that run
/// (the dry run's [`Why::Pending`]). `reason_run` is the run that decided (`None`: a decision
/// left for whichever run comes next), `last_run` the run that last started the task.
pub fn recorded(
    reason: Option<&str>,
    reason_run: Option<i64>,
    last_run: Option<i64>,
    state: &str,
) -> String {
    let Some(reason) = reason else {
        return NOT_RECORDED.to_string();
    };
    match (reason_run, last_run) {
        (Some(decided), Some(ran)) if ran > decided && state != TaskState::Pending.as_str() => {
            format!("pending from an earlier run (run {decided}): {reason}")
        }
        _ => reason.to_string(),
    }
}

/// SQL for the reason of a failed task run again: "failed before (attempt N)", N being the
/// attempt about to run (`tasks.attempts` counts those done).
pub fn failed_before_sql() -> String {
    format!(
        "'{} (attempt ' || (attempts + 1) || ')'",
        Why::FailedBefore.text(StepKind::Map, VersionStatus::Known)
    )
}

/// SQL for the reason of a task a stopped run left behind: "interrupted: … (run N)", N being the
/// run that stopped during it (`tasks.last_run`).
pub fn interrupted_sql() -> String {
    format!(
        "'{} (run ' || COALESCE(last_run, '?') || ')'",
        Why::Interrupted.text(StepKind::Map, VersionStatus::Known)
    )
}

/// What the rule needs to know besides the task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub kind: StepKind,
    /// A source with `once = true` (one task per version instead of one per run).
    pub once: bool,
    /// `--force-step` names the step.
    pub forced: bool,
    /// The task already failed in the run that decides (a gather task is not retried within
    /// the run that saw it fail; the plan, deciding before a run, says `false`).
    pub failed_in_this_run: bool,
}

/// Whether a run executes a task that is in `state` (`None`: the task does not exist yet, and
/// the run creates it), and why.
pub fn runs(situation: Situation, state: Option<TaskState>) -> Option<Why> {
    if situation.kind == StepKind::Source && !situation.once {
        return Some(Why::EveryRun);
    }
    match state {
        None => Some(Why::Fresh),
        Some(TaskState::Pending) => Some(Why::Pending),
        Some(TaskState::Running) => Some(Why::Interrupted),
        Some(TaskState::Failed) if situation.failed_in_this_run => None,
        Some(TaskState::Failed) => Some(Why::FailedBefore),
        Some(TaskState::Succeeded) if situation.forced => Some(Why::Forced),
        Some(TaskState::Succeeded) => None,
    }
}

/// The finished states whose tasks a run puts back to pending before it starts work (a failure
/// is retried; with `forced`, a success runs again).
pub fn requeued(kind: StepKind, once: bool, forced: bool) -> Vec<TaskState> {
    let situation = Situation {
        kind,
        once,
        forced,
        failed_in_this_run: false,
    };
    [TaskState::Succeeded, TaskState::Failed]
        .into_iter()
        .filter(|&state| runs(situation, Some(state)).is_some())
        .collect()
}

/// The states a run puts back to pending when it starts: tasks an earlier run left running.
pub fn recovered() -> Vec<TaskState> {
    TaskState::ALL
        .into_iter()
        .filter(|&state| {
            let situation = Situation {
                kind: StepKind::Map,
                once: false,
                forced: false,
                failed_in_this_run: false,
            };
            runs(situation, Some(state)) == Some(Why::Interrupted)
        })
        .collect()
}

/// `'failed', 'succeeded'`: states as an SQL list for `state IN (...)` (the values are the fixed
/// strings of [`TaskState::as_str`], never input). An empty list matches nothing.
pub fn sql_list(states: &[TaskState]) -> String {
    if states.is_empty() {
        return "NULL".into();
    }
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation(kind: StepKind) -> Situation {
        Situation {
            kind,
            once: false,
            forced: false,
            failed_in_this_run: false,
        }
    }

    #[test]
    fn a_run_retries_failures_resumes_interruptions_and_skips_successes() {
        for kind in [StepKind::Map, StepKind::Gather] {
            let s = situation(kind);
            assert_eq!(runs(s, None), Some(Why::Fresh));
            assert_eq!(runs(s, Some(TaskState::Pending)), Some(Why::Pending));
            assert_eq!(runs(s, Some(TaskState::Running)), Some(Why::Interrupted));
            assert_eq!(runs(s, Some(TaskState::Failed)), Some(Why::FailedBefore));
            assert_eq!(runs(s, Some(TaskState::Succeeded)), None);
            let forced = Situation { forced: true, ..s };
            assert_eq!(runs(forced, Some(TaskState::Succeeded)), Some(Why::Forced));
            let failed_now = Situation {
                failed_in_this_run: true,
                ..s
            };
            assert_eq!(runs(failed_now, Some(TaskState::Failed)), None);
        }
        let every_run = situation(StepKind::Source);
        assert_eq!(
            runs(every_run, Some(TaskState::Succeeded)),
            Some(Why::EveryRun)
        );
        let once = Situation {
            once: true,
            ..every_run
        };
        assert_eq!(runs(once, Some(TaskState::Succeeded)), None);
    }

    #[test]
    fn a_recorded_reason_reads_back_with_the_run_that_decided_it() {
        assert_eq!(recorded(None, None, Some(3), "succeeded"), NOT_RECORDED);
        assert_eq!(
            recorded(Some("new input"), Some(3), Some(3), "succeeded"),
            "new input"
        );
        assert_eq!(
            recorded(Some("new input"), Some(3), Some(4), "failed"),
            "pending from an earlier run (run 3): new input"
        );
        // Still pending, or decided for the next run: the reason as recorded.
        assert_eq!(
            recorded(Some("new input"), Some(3), Some(2), "pending"),
            "new input"
        );
        assert_eq!(recorded(Some(DELETED), None, Some(9), "succeeded"), DELETED);
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let text: String = conn
            .query_row(
                &format!(
                    "SELECT {} || ' / ' || {} FROM (SELECT 2 AS attempts, 7 AS last_run)",
                    failed_before_sql(),
                    interrupted_sql()
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            text,
            "failed before (attempt 3) / interrupted: a run stopped during it (run 7)"
        );
    }

    #[test]
    fn the_sql_filters_follow_the_rule() {
        assert_eq!(requeued(StepKind::Map, false, false), [TaskState::Failed]);
        assert_eq!(
            requeued(StepKind::Gather, false, true),
            [TaskState::Succeeded, TaskState::Failed]
        );
        assert_eq!(recovered(), [TaskState::Running]);
        assert_eq!(sql_list(&recovered()), "'running'");
        assert_eq!(sql_list(&[]), "NULL");
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
    }
}
