//! Slurm's command-line clients, as grit uses them: `sbatch` to submit an array job, `squeue` to
//! see which elements are queued or running, `sacct` (or `scontrol` where accounting is off) for
//! why a job ended, `scancel` to stop jobs. Parsing is kept apart from running so it is tested
//! without a cluster.

use std::collections::HashMap;
use std::path::Path;

use tokio::process::Command;

/// A client failed to run or said no.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run `{program}`: {source} (is Slurm installed here, and SLURM_CONF set?)")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed: {message}")]
    Failed {
        program: &'static str,
        message: String,
    },
}

async fn output(program: &'static str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| SlurmError::Spawn { program, source })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(SlurmError::Failed {
            program,
            message: if message.is_empty() {
                format!("exit status {}", out.status)
            } else {
                message
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sbatch --parsable ARGS SCRIPT`: the new job's id.
pub async fn sbatch(args: &[String], script: &Path) -> Result<String, SlurmError> {
    let mut all = vec!["--parsable".to_string()];
    all.extend(args.iter().cloned());
    all.push(script.display().to_string());
    let text = output("sbatch", &all).await?;
    parse_sbatch(&text).ok_or_else(|| SlurmError::Failed {
        program: "sbatch",
        message: format!("no job id in its answer {text:?}"),
    })
}

/// `123` or `123;cluster` → `123`.
fn parse_sbatch(text: &str) -> Option<String> {
    let id = text.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// The states of this user's queued and running jobs whose (array) job id is in `jobs`, by job
/// id as squeue names elements (`123_4`). A job not in the answer has left the queue.
pub async fn squeue(jobs: &[String]) -> Result<HashMap<String, String>, SlurmError> {
    let user = nix::unistd::Uid::current().as_raw().to_string();
    let text = output(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            format!("--user={user}"),
            "--format=%i %T".into(),
        ],
    )
    .await?;
    Ok(parse_squeue(&text, jobs))
}

fn parse_squeue(text: &str, jobs: &[String]) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once(' ')?;
            let base = id.split('_').next()?;
            jobs.iter()
                .any(|j| j == base)
                .then(|| (id.to_string(), state.trim().to_string()))
        })
        .collect()
}

/// Why a job that left the queue ended: `sacct`'s state (with the exit code), else `scontrol`'s
/// state and reason while the controller still remembers the job, else `None`.
pub async fn why_ended(job: &str) -> Option<String> {
    let sacct = output(
        "sacct",
        &[
            "--noheader".into(),
            "--parsable2".into(),
            "--allocations".into(),
            format!("--jobs={job}"),
            "--format=State,ExitCode".into(),
        ],
    )
    .await;
    if let Ok(text) = sacct
        && let Some(reason) = parse_sacct(&text)
    {
        return Some(reason);
    }
    let text = output(
        "scontrol",
        &["show".into(), "job".into(), "--oneliner".into(), job.into()],
    )
    .await
    .ok()?;
    parse_scontrol(&text)
}

fn parse_sacct(text: &str) -> Option<String> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let (state, exit) = line.trim().split_once('|').unwrap_or((line.trim(), ""));
    Some(if exit.is_empty() {
        state.to_string()
    } else {
        format!("{state} (exit code {exit})")
    })
}

fn parse_scontrol(text: &str) -> Option<String> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    let state = field("JobState")?;
    Some(match field("Reason").filter(|r| r != "None") {
        Some(reason) => format!("{state} ({reason})"),
        None => state,
    })
}

/// The CPUs of a partition (the default one when `None`), from `sinfo`; `None` if unknown.
pub async fn partition_cpus(partition: Option<&str>) -> Option<usize> {
    let mut args = vec!["--noheader".to_string(), "--format=%C".to_string()];
    if let Some(p) = partition {
        args.push(format!("--partition={p}"));
    }
    let text = output("sinfo", &args).await.ok()?;
    parse_cpus(&text)
}

/// `A/I/O/T` (allocated, idle, other, total) per line → the total over the lines.
fn parse_cpus(text: &str) -> Option<usize> {
    let totals: Vec<usize> = text
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next()?.parse().ok())
        .collect();
    (!totals.is_empty()).then(|| totals.iter().sum())
}

/// `--time` in whole minutes (Slurm's smallest unit), at least 1.
pub fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_answers() {
        assert_eq!(parse_sbatch("123\n").as_deref(), Some("123"));
        assert_eq!(parse_sbatch("77;cluster\n").as_deref(), Some("77"));
        assert_eq!(parse_sbatch("Submitted batch job 5"), None);
        assert_eq!(parse_sbatch(""), None);
    }

    #[test]
    fn squeue_keeps_only_our_jobs() {
        let text = "12_0 RUNNING\n12_1 PENDING\n13 RUNNING\n99_4 PENDING\n";
        let states = parse_squeue(text, &["12".into(), "13".into()]);
        assert_eq!(states.len(), 3);
        assert_eq!(states["12_1"], "PENDING");
        assert_eq!(states["13"], "RUNNING");
        assert!(!states.contains_key("99_4"));
    }

    #[test]
    fn reasons_from_sacct_and_scontrol() {
        assert_eq!(
            parse_sacct("TIMEOUT|0:0\n").as_deref(),
            Some("TIMEOUT (exit code 0:0)")
        );
        assert_eq!(parse_sacct("\n"), None);
        let line = "JobId=2 ArrayJobId=1 JobState=TIMEOUT Reason=TimeLimit Dependency=(null)";
        assert_eq!(parse_scontrol(line).as_deref(), Some("TIMEOUT (TimeLimit)"));
        let line = "JobId=3 JobState=CANCELLED Reason=None ExitCode=0:15";
        assert_eq!(parse_scontrol(line).as_deref(), Some("CANCELLED"));
    }

    #[test]
    fn partition_cpus_from_sinfo() {
        assert_eq!(parse_cpus("0/2/0/2\n"), Some(2));
        assert_eq!(parse_cpus("4/60/0/64\n0/8/0/8\n"), Some(72));
        assert_eq!(parse_cpus(""), None);
    }

    #[test]
    fn time_limits_in_minutes() {
        assert_eq!(minutes(std::time::Duration::from_secs(1)), 1);
        assert_eq!(minutes(std::time::Duration::from_secs(61)), 2);
    }
}
