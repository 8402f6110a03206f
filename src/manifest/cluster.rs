//! Where a pipeline's tasks run: the manifest's `[executor]` table (`kind = "local"` or
//! `"slurm"`, the Slurm submission settings) and a step's `slurm = { … }` resources. None of it is
//! part of a step's version: where a task runs does not change what it computes.

use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::error::ManifestError;
use super::parse::{
    Ctx, closest, duration, entries_in_order, expect_str, int_in, size, string_list, type_name,
};

type Res<T> = Result<T, ManifestError>;

/// Which backend runs the tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Processes on this machine (the sandbox's zygote, `-j`).
    #[default]
    Local,
    /// Jobs of a Slurm cluster, the store on a shared filesystem.
    Slurm,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// What a Slurm job asks for (`sbatch` options); a step's values override `[executor]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmResources {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--time`: the job's wall-clock limit (a whole group of tasks runs in one job).
    pub time: Option<Duration>,
    /// `--mem`, in bytes.
    pub mem: Option<u64>,
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
}

impl SlurmResources {
    /// `self` where set, else `defaults`.
    pub fn or(&self, defaults: &SlurmResources) -> SlurmResources {
        SlurmResources {
            partition: self
                .partition
                .clone()
                .or_else(|| defaults.partition.clone()),
            account: self.account.clone().or_else(|| defaults.account.clone()),
            time: self.time.or(defaults.time),
            mem: self.mem.or(defaults.mem),
            cpus: self.cpus.or(defaults.cpus),
        }
    }
}

/// The manifest's `[executor]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    pub kind: ExecutorKind,
    /// Default resources of every step's jobs.
    pub resources: SlurmResources,
    /// At most this many Slurm jobs (array elements) of this run queued or running at once.
    pub max_jobs: usize,
    /// Tasks of one step are grouped into one job until their estimated run time reaches this.
    pub group_target: Duration,
    /// More `sbatch` arguments, as written (`["--qos=short"]`).
    pub sbatch_args: Vec<String>,
}

/// `max_jobs` when none is given.
pub const DEFAULT_MAX_JOBS: usize = 100;
/// `group_target` when none is given.
pub const DEFAULT_GROUP_TARGET: Duration = Duration::from_secs(30);

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            kind: ExecutorKind::Local,
            resources: SlurmResources::default(),
            max_jobs: DEFAULT_MAX_JOBS,
            group_target: DEFAULT_GROUP_TARGET,
            sbatch_args: Vec::new(),
        }
    }
}

const RESOURCE_KEYS: &[&str] = &["partition", "account", "time", "mem", "cpus"];
const EXECUTOR_KEYS: &[&str] = &[
    "kind",
    "partition",
    "account",
    "time",
    "mem",
    "cpus",
    "max_jobs",
    "group_target",
    "sbatch_args",
];

fn not_a_table(
    ctx: &Ctx<'_>,
    what: &str,
    example: &str,
    v: &Spanned<DeValue<'_>>,
) -> ManifestError {
    ctx.err(
        v.span().start,
        format!("`{what}` must be a table, not {}", type_name(v.get_ref())),
        Some(format!("e.g. {example}")),
    )
}

/// Takes a resource key into `into`; `Ok(false)` if `key` is not one.
fn resource(
    ctx: &Ctx<'_>,
    into: &mut SlurmResources,
    key: &str,
    v: &Spanned<DeValue<'_>>,
) -> Res<bool> {
    match key {
        "partition" | "account" => {
            let s = expect_str(ctx, key, v)?;
            if s.trim().is_empty() || s.contains(char::is_whitespace) {
                return Err(ctx.err(
                    v.span().start,
                    format!("`{key}` must be a Slurm {key} name without spaces, not \"{s}\""),
                    Some(format!("e.g. {key} = \"batch\"")),
                ));
            }
            if key == "partition" {
                into.partition = Some(s.to_string());
            } else {
                into.account = Some(s.to_string());
            }
        }
        "time" => into.time = Some(duration(ctx, key, v)?),
        "mem" => into.mem = Some(size(ctx, key, v)?),
        "cpus" => into.cpus = Some(int_in(ctx, key, v, 1, 4096)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A step's `slurm = { partition = "…", time = "10m", mem = "2G", cpus = 2 }` (or `[step.slurm]`).
pub(super) fn parse_step_resources(ctx: &Ctx<'_>, v: &Spanned<DeValue<'_>>) -> Res<SlurmResources> {
    let DeValue::Table(table) = v.get_ref() else {
        return Err(not_a_table(
            ctx,
            "slurm",
            "slurm = { partition = \"short\", time = \"10m\", mem = \"2G\", cpus = 2 }",
            v,
        ));
    };
    let mut out = SlurmResources::default();
    for (key, value) in entries_in_order(table) {
        let k: &str = key.get_ref();
        if !resource(ctx, &mut out, k, value)? {
            let help = if EXECUTOR_KEYS.contains(&k) {
                format!(
                    "`{k}` belongs in [executor]; a step's `slurm` accepts: {}",
                    RESOURCE_KEYS.join(", ")
                )
            } else {
                match closest(k, RESOURCE_KEYS) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("a step's `slurm` accepts: {}", RESOURCE_KEYS.join(", ")),
                }
            };
            return Err(ctx.err(
                key.span().start,
                format!("unknown key `{k}` in a step's `slurm`"),
                Some(help),
            ));
        }
    }
    Ok(out)
}

/// The top-level `[executor]` table.
pub(super) fn parse_executor(ctx: &Ctx<'_>, v: &Spanned<DeValue<'_>>) -> Res<ExecutorConfig> {
    let DeValue::Table(table) = v.get_ref() else {
        return Err(not_a_table(
            ctx,
            "executor",
            "[executor] then kind = \"slurm\"",
            v,
        ));
    };
    let mut out = ExecutorConfig::default();
    for (key, value) in entries_in_order(table) {
        let k: &str = key.get_ref();
        match k {
            "kind" => {
                out.kind = match expect_str(ctx, k, value)? {
                    "local" => ExecutorKind::Local,
                    "slurm" => ExecutorKind::Slurm,
                    other => {
                        return Err(ctx.err(
                            value.span().start,
                            format!("`kind` must be \"local\" or \"slurm\", not \"{other}\""),
                            Some("kind = \"slurm\" runs tasks as Slurm jobs; \"local\" (the default) on this machine".into()),
                        ));
                    }
                };
            }
            "max_jobs" => out.max_jobs = int_in(ctx, k, value, 1, 1_000_000)?,
            "group_target" => out.group_target = duration(ctx, k, value)?,
            "sbatch_args" => {
                let list = string_list(ctx, k, value)?;
                if let Some((arg, span)) = list.iter().find(|(a, _)| !a.starts_with('-')) {
                    return Err(ctx.err(
                        span.start,
                        format!("`sbatch_args` entry \"{arg}\" is not an option"),
                        Some(
                            "each entry is one sbatch option, e.g. sbatch_args = [\"--qos=short\"]"
                                .into(),
                        ),
                    ));
                }
                out.sbatch_args = list.into_iter().map(|(a, _)| a).collect();
            }
            _ => {
                if !resource(ctx, &mut out.resources, k, value)? {
                    let help = match closest(k, EXECUTOR_KEYS) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("[executor] accepts: {}", EXECUTOR_KEYS.join(", ")),
                    };
                    return Err(ctx.err(
                        key.span().start,
                        format!("unknown key `{k}` in [executor]"),
                        Some(help),
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::ExecutorKind;
    use crate::manifest::{ManifestError, parse};

    fn parsed(text: &str) -> Result<crate::manifest::Manifest, ManifestError> {
        parse(text, Path::new("p.toml")).map(|l| l.manifest)
    }

    fn located(text: &str) -> (usize, usize, String) {
        match parsed(text).expect_err("must fail") {
            ManifestError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    const STEP: &str = "[[step]]\nname = \"a\"\nscript = \"true\"\n";

    #[test]
    fn executor_table_and_step_resources() {
        let m = parsed(&format!(
            "[executor]\nkind = \"slurm\"\npartition = \"batch\"\ntime = \"1h\"\nmax_jobs = 7\ngroup_target = \"5s\"\nsbatch_args = [\"--qos=short\"]\n\n{STEP}slurm = {{ mem = \"2G\", cpus = 2, partition = \"short\" }}\n"
        ))
        .expect("valid");
        assert_eq!(m.executor.kind, ExecutorKind::Slurm);
        assert_eq!(m.executor.max_jobs, 7);
        assert_eq!(m.executor.group_target, Duration::from_secs(5));
        assert_eq!(m.executor.sbatch_args, vec!["--qos=short".to_string()]);
        let r = m.steps[0].slurm.or(&m.executor.resources);
        assert_eq!(r.partition.as_deref(), Some("short"));
        assert_eq!(r.time, Some(Duration::from_secs(3600)));
        assert_eq!(r.mem, Some(2 << 30));
        assert_eq!(r.cpus, Some(2));
    }

    #[test]
    fn step_table_form_is_accepted_and_not_in_the_version() {
        let plain = parsed(STEP).expect("valid");
        let with = parsed(&format!("{STEP}[step.slurm]\ntime = \"5m\"\n")).expect("valid");
        assert_eq!(with.steps[0].slurm.time, Some(Duration::from_secs(300)));
        assert_eq!(plain.steps[0].version_hash(), with.steps[0].version_hash());
    }

    #[test]
    fn unknown_keys_are_located() {
        let (line, column, message) = located(&format!(
            "[executor]\nkind = \"slurm\"\nmax_job = 3\n{STEP}"
        ));
        assert_eq!((line, column), (3, 1));
        assert!(
            message.contains("unknown key `max_job` in [executor]"),
            "{message}"
        );
        let (line, column, message) = located(&format!("{STEP}slurm = {{ memory = \"1G\" }}\n"));
        assert_eq!((line, column), (4, 11));
        assert!(message.contains("unknown key `memory`"), "{message}");
        let (line, _, message) = located(&format!("[executor]\nkind = \"pbs\"\n{STEP}"));
        assert_eq!(line, 2);
        assert!(message.contains("\"local\" or \"slurm\""), "{message}");
    }
}
