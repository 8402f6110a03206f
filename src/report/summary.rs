//! The end-of-run summary: totals, the steps that took longest, and each failure with the tail of
//! its log and the command that shows all of it.

use std::fmt::Write;
use std::path::Path;

use crate::engine::RunReport;

/// Steps listed in the summary, slowest first.
const STEPS_SHOWN: usize = 8;

pub fn render(report: &RunReport, db: &Path, color: bool) -> String {
    let (red, green, dim, reset) = if color {
        ("\x1b[31m", "\x1b[32m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let t = &report.totals;
    let rate = if report.elapsed_s > 0.0 {
        t.executed as f64 / report.elapsed_s
    } else {
        0.0
    };
    let mut out = String::new();
    let verdict = match (report.interrupted, t.failed) {
        (Some(_), _) => format!("{red}interrupted{reset}"),
        (None, 0) => format!("{green}ok{reset}"),
        (None, n) => format!("{red}{n} failed{reset}"),
    };
    let _ = writeln!(
        out,
        "run {} {verdict}: {} tasks executed ({} succeeded, {} failed), {} new resources, {} captured, {:.2}s, {:.1} tasks/s",
        report.run,
        t.executed,
        t.succeeded,
        t.failed,
        t.resources_new,
        human_bytes(report.bytes_captured),
        report.elapsed_s,
        rate
    );
    if report.recovered > 0 {
        let _ = writeln!(
            out,
            "  recovered {} task(s) left running by an interrupted run",
            report.recovered
        );
    }
    let mut steps: Vec<_> = report.steps.iter().filter(|s| s.executed > 0).collect();
    steps.sort_by(|a, b| b.busy_ms.cmp(&a.busy_ms));
    if !steps.is_empty() {
        let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "  {dim}{:<width$}  {:>6}  {:>6}  {:>6}  {:>9}{reset}",
            "step", "tasks", "ok", "failed", "busy"
        );
        for s in steps.iter().take(STEPS_SHOWN) {
            let _ = writeln!(
                out,
                "  {:<width$}  {:>6}  {:>6}  {:>6}  {:>8.2}s",
                s.name,
                s.executed,
                s.succeeded,
                s.failed,
                s.busy_ms as f64 / 1000.0
            );
        }
        if steps.len() > STEPS_SHOWN {
            let _ = writeln!(out, "  … and {} more steps", steps.len() - STEPS_SHOWN);
        }
    }
    for failure in &report.failures {
        let _ = writeln!(
            out,
            "{red}failed{reset}: step {} task {}: {}",
            failure.step, failure.task, failure.error
        );
        for line in &failure.log_tail {
            let _ = writeln!(out, "  {dim}|{reset} {line}");
        }
        let _ = writeln!(
            out,
            "  full log: grit log {} --db {}",
            failure.task,
            db.display()
        );
    }
    out
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
