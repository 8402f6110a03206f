//! The end-of-run summary: totals (tasks, new resources, bytes captured, elapsed time, tasks/s),
//! the steps that took longest, and each failure with its exit status, the tail of its log and the
//! command that shows all of it.

use std::fmt::Write;
use std::path::Path;

use super::escape::{printable, printable_text};
use crate::engine::{Failure, RunReport};

/// Steps listed in the summary, slowest first.
const STEPS_SHOWN: usize = 8;
/// Failures shown with their log tail; the rest are counted per step.
const FAILURES_SHOWN: usize = 10;

/// The summary text. `input_of` names the input resource of a failed task, when it had one.
pub fn render(
    report: &RunReport,
    db: &Path,
    color: bool,
    input_of: &dyn Fn(i64) -> Option<String>,
) -> String {
    let (red, dim, reset) = if color {
        ("\x1b[31m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let t = &report.totals;
    let mut out = String::new();
    let _ = writeln!(out, "{}", verdict_line(report, color));
    if !report.params.is_empty() {
        let values: Vec<String> = report
            .params
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        let _ = writeln!(out, "  parameters: {}", values.join(" "));
    }
    if report.recovered > 0 {
        let _ = writeln!(
            out,
            "  recovered {} task(s) left running by an interrupted run",
            report.recovered
        );
    }
    if !report.refused_accesses.is_empty() {
        let _ = writeln!(
            out,
            "  {red}refused{reset} access to running tasks' OUTPUT_DIR from processes outside them:"
        );
        for line in &report.refused_accesses {
            let _ = writeln!(out, "    {}", printable(line));
        }
    }
    if !report.missing_objects.is_empty() {
        let n = report.missing_objects.len();
        let _ = writeln!(
            out,
            "{red}store damaged{reset}: {n} live object{} missing — run `grit verify --db {}`",
            if n == 1 { " is" } else { "s are" },
            db.display()
        );
        for missing in report.missing_objects.iter().take(FAILURES_SHOWN) {
            let _ = writeln!(
                out,
                "  missing: {} {} ({})",
                printable(&missing.name),
                missing.hash,
                missing.path.display()
            );
        }
    }
    if t.executed == 0 && !report.cancelled && report.missing_objects.is_empty() {
        let _ = writeln!(out, "  nothing to do: every task is up to date");
    }
    let mut steps: Vec<_> = report.steps.iter().filter(|s| s.executed > 0).collect();
    steps.sort_by_key(|s| std::cmp::Reverse(s.busy_ms));
    if !steps.is_empty() {
        let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "  {dim}{:<width$}  {:>6}  {:>6}  {:>6}  {:>9}  {:>9}{reset}",
            "step", "tasks", "ok", "failed", "busy", "per task"
        );
        for s in steps.iter().take(STEPS_SHOWN) {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>6}  {:>6}  {:>6}  {:>8.2}s  {:>8.3}s",
                s.name,
                s.executed,
                s.succeeded,
                if s.failed > 0 {
                    format!("{red}{:>6}{reset}", s.failed)
                } else {
                    format!("{:>6}", 0)
                },
                s.busy_ms as f64 / 1000.0,
                s.busy_ms as f64 / 1000.0 / s.executed as f64
            );
        }
        if steps.len() > STEPS_SHOWN {
            let _ = writeln!(out, "  … and {} more steps", steps.len() - STEPS_SHOWN);
        }
    }
    for failure in report.failures.iter().take(FAILURES_SHOWN) {
        let _ = writeln!(
            out,
            "{}",
            failure_line(failure, input_of(failure.task), color)
        );
        if !failure.error.is_empty() && failure.error != failure.status {
            let _ = writeln!(out, "  error: {}", printable(&failure.error));
        }
        for line in &failure.log_tail {
            let _ = writeln!(out, "  {dim}|{reset} {}", printable_text(line));
        }
        for hint in &failure.hints {
            let _ = writeln!(out, "  hint: {hint}");
        }
        let _ = writeln!(
            out,
            "  full log: grit log {} --db {}",
            failure.task,
            db.display()
        );
    }
    // --- gathers held back on a partial set (issue 19 item 5) ---
    for h in &report.held {
        let kept = if h.previous_output {
            "its previous output stays live"
        } else {
            "it has no earlier output"
        };
        let tasks_of = |steps: &[String]| {
            steps
                .iter()
                .map(|s| format!("a task of {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut why = Vec::new();
        if !h.failed_upstream.is_empty() {
            why.push(format!(
                "{} failed in this run",
                tasks_of(&h.failed_upstream)
            ));
        }
        if !h.failed_earlier.is_empty() {
            why.push(format!(
                "{} failed in an earlier run, and `--step` leaves it out",
                tasks_of(&h.failed_earlier)
            ));
        }
        let _ = writeln!(
            out,
            "{red}held{reset}: gather step {} did not run on a partial set: {}; {kept}\n  help: the next run retries the failed tasks and then runs it; `gather_partial = true` runs it anyway",
            h.step,
            why.join("; "),
        );
    }
    // --- end held gathers ---
    if report.failures.len() > FAILURES_SHOWN {
        let mut rest: Vec<(&str, usize)> = Vec::new();
        for failure in &report.failures[FAILURES_SHOWN..] {
            match rest.iter_mut().find(|(step, _)| *step == failure.step) {
                Some((_, n)) => *n += 1,
                None => rest.push((&failure.step, 1)),
            }
        }
        for (step, n) in rest {
            let _ = writeln!(
                out,
                "{red}failed{reset}: {n} more task(s) of step {step}: grit log --step {step} --failed --db {}",
                db.display()
            );
        }
    }
    out
}

/// What `-q` prints: each failure's one-line summary, each missing live object, then the verdict
/// line; nothing when the run neither failed, nor was interrupted, nor found the store damaged
/// (under cron, no output means no mail).
pub fn quiet_lines(
    report: &RunReport,
    db: &Path,
    input_of: &dyn Fn(i64) -> Option<String>,
) -> Vec<QuietLine> {
    if report.totals.failed == 0 && !report.cancelled && !report.store_damaged() {
        return Vec::new();
    }
    let mut lines: Vec<QuietLine> = report
        .failures
        .iter()
        .map(|failure| QuietLine {
            step: Some(failure.step.clone()),
            task: Some(failure.task),
            text: format!(
                "{} (grit log {} --db {})",
                failure_line(failure, input_of(failure.task), false),
                failure.task,
                db.display()
            ),
        })
        .collect();
    lines.extend(report.missing_objects.iter().map(|missing| QuietLine {
        step: None,
        task: None,
        text: format!(
            "store damaged: live object {} {} is missing ({}) — run `grit verify --db {}`",
            printable(&missing.name),
            missing.hash,
            missing.path.display(),
            db.display()
        ),
    }));
    lines.push(QuietLine {
        step: None,
        task: None,
        text: verdict_line(report, false),
    });
    lines
}

/// One line of `-q` output, with the step and task it is about (for JSON and journald fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietLine {
    pub step: Option<String>,
    pub task: Option<i64>,
    pub text: String,
}

/// `run 7 failed: 2 tasks executed (1 succeeded, 1 failed), …`.
fn verdict_line(report: &RunReport, color: bool) -> String {
    let (red, green, reset) = if color {
        ("\x1b[31m", "\x1b[32m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let t = &report.totals;
    let rate = if report.elapsed_s > 0.0 {
        t.executed as f64 / report.elapsed_s
    } else {
        0.0
    };
    let verdict = match (report.cancelled, t.failed) {
        (true, _) => format!("{red}interrupted{reset}"),
        (false, 0) if report.store_damaged() => format!("{red}store damaged{reset}"),
        (false, 0) => format!("{green}ok{reset}"),
        (false, _) => format!("{red}failed{reset}"),
    };
    format!(
        "run {} {verdict}: {} executed ({} succeeded, {} failed), {} new resource{}, {} captured, {:.2}s, {:.1} tasks/s",
        report.run,
        plural(t.executed, "task"),
        t.succeeded,
        t.failed,
        t.resources_new,
        if t.resources_new == 1 { "" } else { "s" },
        human_bytes(report.bytes_captured),
        report.elapsed_s,
        rate
    )
}

/// `failed: step parse, task 12 (input a.csv): exited with status 2`.
fn failure_line(failure: &Failure, input: Option<String>, color: bool) -> String {
    let (red, reset) = if color {
        ("\x1b[31m", "\x1b[0m")
    } else {
        ("", "")
    };
    let input = input
        .map(|name| format!(" (input {})", printable(&name)))
        .unwrap_or_default();
    format!(
        "{red}failed{reset}: step {}, task {}{input}: {}",
        failure.step,
        failure.task,
        printable(&failure.status)
    )
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StepStats;
    use crate::store::runs::RunTotals;

    fn report(failures: usize) -> RunReport {
        RunReport {
            run: 7,
            params: Default::default(),
            capture: "dir",
            totals: RunTotals {
                executed: 1 + failures as u64,
                succeeded: 1,
                failed: failures as u64,
                resources_new: 1,
            },
            elapsed_s: 2.0,
            bytes_captured: 3 * 1024 * 1024,
            steps: vec![
                StepStats {
                    name: "fast".into(),
                    executed: 1,
                    succeeded: 1,
                    failed: 0,
                    busy_ms: 100,
                },
                StepStats {
                    name: "slow".into(),
                    executed: failures as u64,
                    succeeded: 0,
                    failed: failures as u64,
                    busy_ms: 5000,
                },
                StepStats {
                    name: "idle".into(),
                    ..StepStats::default()
                },
            ],
            failures: (0..failures)
                .map(|i| Failure {
                    step: "slow".into(),
                    task: 100 + i as i64,
                    status: "exited with status 2".into(),
                    error: "exited with status 2".into(),
                    log_tail: vec![format!("line of {i}")],
                    hints: Vec::new(),
                    store_damaged: false,
                })
                .collect(),
            held: Vec::new(),
            interrupted: None,
            cancelled: false,
            recovered: 0,
            refused_accesses: Vec::new(),
            missing_objects: Vec::new(),
        }
    }

    #[test]
    fn renders_totals_slowest_steps_first_and_failures() {
        let text = render(&report(1), Path::new("db"), false, &|task| {
            (task == 100).then(|| "input_a".to_string())
        });
        assert!(text.starts_with(
            "run 7 failed: 2 tasks executed (1 succeeded, 1 failed), 1 new resource, 3.0 MiB captured, 2.00s, 1.0 tasks/s\n"
        ), "{text}");
        let slow = text.find("\n  slow ").unwrap();
        let fast = text.find("\n  fast ").unwrap();
        assert!(slow < fast, "slowest first: {text}");
        assert!(
            !text.contains("idle"),
            "steps that ran nothing are left out"
        );
        assert!(text.contains(
            "failed: step slow, task 100 (input input_a): exited with status 2\n  | line of 0\n  full log: grit log 100 --db db\n"
        ), "{text}");
        assert!(!text.contains("error:"), "the error repeats the status");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn refused_accesses_are_listed() {
        let mut r = report(0);
        r.refused_accesses =
            vec!["task t1-r7-a1: refused 1 access from pid 42 (sh), uid 1000: create".into()];
        let text = render(&r, Path::new("db"), false, &|_| None);
        assert!(text.contains(
            "\n  refused access to running tasks' OUTPUT_DIR from processes outside them:\n    task t1-r7-a1: refused 1 access from pid 42 (sh), uid 1000: create\n"
        ), "{text}");
        assert!(!render(&report(0), Path::new("db"), false, &|_| None).contains("refused"));
    }

    #[test]
    fn held_gathers_say_why_and_what_stays_live() {
        let mut r = report(1);
        r.held.push(crate::engine::HeldGather {
            step: "report".into(),
            failed_upstream: vec!["slow".into()],
            failed_earlier: Vec::new(),
            previous_output: true,
        });
        let text = render(&r, Path::new("db"), false, &|_| None);
        assert!(text.contains(
            "held: gather step report did not run on a partial set: a task of slow failed in this run; its previous output stays live\n  help: "
        ), "{text}");
    }

    #[test]
    fn many_failures_are_counted_after_the_first_ones() {
        let text = render(&report(13), Path::new("db"), true, &|_| None);
        assert_eq!(text.matches("full log: grit log").count(), FAILURES_SHOWN);
        assert!(
            text.contains(
                "failed\x1b[0m: 3 more task(s) of step slow: grit log --step slow --failed --db db"
            ),
            "{text}"
        );
        assert!(text.contains("\x1b[31mfailed\x1b[0m:"));
    }
}
