//! Counters for `GET /metrics` (Prometheus text format 0.0.4): runs and tasks that ended, their
//! durations, since the server started. Gauges (queue length, running runs) are read at scrape
//! time from the queue itself, so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    /// (pipeline, status) → runs that ended so.
    runs: BTreeMap<(String, &'static str), u64>,
    /// pipeline → (seconds, count) of ended runs.
    run_seconds: BTreeMap<String, (f64, u64)>,
    /// (pipeline, result) → tasks that ended so.
    tasks: BTreeMap<(String, &'static str), u64>,
    /// pipeline → (seconds, count) of ended tasks.
    task_seconds: BTreeMap<String, (f64, u64)>,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

/// Per pipeline, read when scraped.
pub struct Gauges {
    pub pipeline: String,
    pub queued: u64,
    pub running: u64,
}

impl Metrics {
    pub fn run_ended(&self, pipeline: &str, status: &'static str, took: Duration) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *c.runs.entry((pipeline.to_string(), status)).or_default() += 1;
        let d = c.run_seconds.entry(pipeline.to_string()).or_default();
        d.0 += took.as_secs_f64();
        d.1 += 1;
    }

    /// A run that ended without starting (cancelled while it waited): counted, with no
    /// duration.
    pub fn run_ended_unstarted(&self, pipeline: &str, status: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *c.runs.entry((pipeline.to_string(), status)).or_default() += 1;
    }

    pub fn task_ended(&self, pipeline: &str, succeeded: bool, took: Duration) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let result = if succeeded { "succeeded" } else { "failed" };
        *c.tasks.entry((pipeline.to_string(), result)).or_default() += 1;
        let d = c.task_seconds.entry(pipeline.to_string()).or_default();
        d.0 += took.as_secs_f64();
        d.1 += 1;
    }

    /// The exposition text.
    pub fn render(&self, gauges: &[Gauges], events: u64) -> String {
        let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut lines: Vec<String> = Vec::new();
        let name = family_line(
            &mut out,
            "grit_serve_runs_total",
            "counter",
            "Runs that ended since the server started, by pipeline and status.",
        );
        for ((pipeline, status), n) in &c.runs {
            lines.push(format!(
                "{name}{{pipeline=\"{pipeline}\",status=\"{status}\"}} {n}"
            ));
        }
        flush(&mut out, &mut lines);
        summary(
            &mut out,
            "grit_serve_run_duration_seconds",
            "How long ended runs took, from start to end.",
            &c.run_seconds,
        );
        let name = family_line(
            &mut out,
            "grit_serve_tasks_total",
            "counter",
            "Tasks that ended since the server started, by pipeline and result.",
        );
        for ((pipeline, result), n) in &c.tasks {
            lines.push(format!(
                "{name}{{pipeline=\"{pipeline}\",result=\"{result}\"}} {n}"
            ));
        }
        flush(&mut out, &mut lines);
        summary(
            &mut out,
            "grit_serve_task_duration_seconds",
            "How long ended tasks took.",
            &c.task_seconds,
        );
        let name = family_line(
            &mut out,
            "grit_serve_queue_length",
            "gauge",
            "Runs waiting to start.",
        );
        for g in gauges {
            lines.push(format!(
                "{name}{{pipeline=\"{}\"}} {}",
                g.pipeline, g.queued
            ));
        }
        flush(&mut out, &mut lines);
        let name = family_line(
            &mut out,
            "grit_serve_runs_running",
            "gauge",
            "Runs executing now (0 or 1 per pipeline).",
        );
        for g in gauges {
            lines.push(format!(
                "{name}{{pipeline=\"{}\"}} {}",
                g.pipeline, g.running
            ));
        }
        flush(&mut out, &mut lines);
        let name = family_line(
            &mut out,
            "grit_serve_events_total",
            "counter",
            "Events published on /api/v1/events.",
        );
        let _ = writeln!(out, "{name} {events}");
        out
    }
}

fn family_line(out: &mut String, name: &str, kind: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name.to_string()
}

fn flush(out: &mut String, lines: &mut Vec<String>) {
    for line in lines.drain(..) {
        out.push_str(&line);
        out.push('\n');
    }
}

fn summary(out: &mut String, name: &str, help: &str, values: &BTreeMap<String, (f64, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for (pipeline, (sum, count)) in values {
        let _ = writeln!(out, "{name}_sum{{pipeline=\"{pipeline}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{pipeline=\"{pipeline}\"}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.run_ended("etl", "succeeded", Duration::from_millis(1500));
        m.task_ended("etl", true, Duration::from_millis(250));
        m.task_ended("etl", false, Duration::from_millis(250));
        let text = m.render(
            &[Gauges {
                pipeline: "etl".into(),
                queued: 2,
                running: 1,
            }],
            7,
        );
        for line in [
            "# TYPE grit_serve_runs_total counter",
            "grit_serve_runs_total{pipeline=\"etl\",status=\"succeeded\"} 1",
            "grit_serve_run_duration_seconds_sum{pipeline=\"etl\"} 1.5",
            "grit_serve_tasks_total{pipeline=\"etl\",result=\"failed\"} 1",
            "grit_serve_task_duration_seconds_count{pipeline=\"etl\"} 2",
            "grit_serve_queue_length{pipeline=\"etl\"} 2",
            "grit_serve_runs_running{pipeline=\"etl\"} 1",
            "grit_serve_events_total 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
