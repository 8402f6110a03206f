//! Setting up one engine run on an open store: the warnings a run gives before it starts, the
//! output capture it mounts, and the [`RunInputs`] it hands to [`crate::engine::run`].
//!
//! `grit run` and `grit serve` are both clients of the engine; this is the set-up they share, so
//! a run started over HTTP behaves exactly like one started from the shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::capture::Capture;
use crate::capture::dir::DirCapture;
use crate::capture::fuse::FuseCapture;
use crate::cli::CaptureMode;
use crate::commands::exit::UsageError;
use crate::engine::{RunInputs, RunOptions};
use crate::executor::process::ProcessExecutor;
use crate::executor::slurm::{SlurmExecutor, SlurmSettings};
use crate::executor::{Executor, LineSink};
use crate::manifest::Manifest;
use crate::manifest::cluster::ExecutorKind;
use crate::store::{self, StorePaths, Writer};

/// Warn when the store's filesystem is fuller than this (as GRIT did).
const DISK_WARN_FRACTION: f64 = 0.85;

/// `-j` when none is given: the number of CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Tasks handed to the Slurm executor at once when no `-j` is given: they wait in Slurm's queue,
/// not in grit's.
const SLURM_IN_FLIGHT: usize = 1_000_000;

/// Who runs a run's tasks, how their outputs are captured, and how many may be handed over at
/// once (`jobs`, or the default of each executor).
pub struct Placing {
    pub executor: Arc<dyn Executor>,
    pub capture: CaptureMode,
    pub jobs: usize,
}

/// Where a run's tasks run: [`SlurmExecutor`] when `slurm` says so (`--executor`), or else when
/// the manifest's `[executor] kind` is `slurm`; the local [`ProcessExecutor`] otherwise. The
/// Slurm executor gets absolute paths, since its jobs read them on other machines, and the
/// directory capture, since tasks write on the compute nodes.
pub struct Where<'a> {
    pub manifest: &'a Manifest,
    pub manifest_path: &'a Path,
    /// task-pipeline's `--start`, to load the manifest on the nodes as the run did.
    pub start: Option<&'a str>,
    pub params: &'a BTreeMap<String, String>,
    pub store: &'a Path,
    /// `--executor`, when given.
    pub slurm: Option<bool>,
    pub capture: CaptureMode,
    pub jobs: Option<usize>,
}

impl Where<'_> {
    /// Whether the tasks go to Slurm.
    pub fn on_slurm(&self) -> bool {
        self.slurm
            .unwrap_or(self.manifest.executor.kind == ExecutorKind::Slurm)
    }

    pub fn placing(&self, writer: &Writer) -> anyhow::Result<Placing> {
        if !self.on_slurm() {
            return Ok(Placing {
                executor: Arc::new(ProcessExecutor::new()),
                capture: self.capture,
                jobs: self.jobs.unwrap_or_else(default_jobs),
            });
        }
        let absolute = |p: &Path| {
            std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
        };
        let settings = SlurmSettings {
            config: self.manifest.executor.clone(),
            manifest: absolute(self.manifest_path)?,
            start: self.start.map(str::to_string),
            params: self.params.clone(),
            store: absolute(self.store)?,
            grit: std::env::current_exe().context("finding the grit binary for the Slurm jobs")?,
        };
        Ok(Placing {
            executor: Arc::new(SlurmExecutor::new(settings, writer.clone())),
            capture: CaptureMode::Dir,
            jobs: self.jobs.unwrap_or(SLURM_IN_FLIGHT),
        })
    }
}

/// Everything a run needs that is not the store: what to run and how.
pub struct Launch {
    pub manifest: Manifest,
    pub capture: CaptureMode,
    /// Task output lines as they are written (the CLI's `--verbose`); `None` keeps them in logs only.
    pub lines: Option<LineSink>,
    /// Who runs the tasks (the local process executor, with its sandbox).
    pub executor: Arc<dyn Executor>,
    pub options: RunOptions,
}

/// Prepare a run on a store opened for writing (its lock held by the caller): warn about a full
/// disk and about the graph (`known` says which resource names the store holds, see
/// [`known_names`]), mount the output capture, and build the engine's inputs.
pub fn prepare(
    launch: Launch,
    paths: &StorePaths,
    writer: Writer,
    known: &dyn Fn(&str) -> bool,
) -> anyhow::Result<RunInputs> {
    warn_if_disk_full(&paths.root);
    warn_about_graph(&launch.manifest, known);
    let capture = mount_capture(launch.capture, &paths.tmp)?;
    Ok(RunInputs {
        manifest: launch.manifest,
        paths: paths.clone(),
        writer,
        capture,
        executor: launch.executor,
        lines: launch.lines,
        options: launch.options,
    })
}

/// Which resource names the store holds, for the graph warnings. Its read connection is kept
/// by the caller for the length of the run: the writer then never closes as the database's
/// last connection mid-command, and the store's files end as `grit run` has always left them.
pub fn known_names(paths: &StorePaths) -> anyhow::Result<impl Fn(&str) -> bool> {
    Ok(store::queries::resource_name_matcher(&paths.root)?)
}

/// The output capture for one run. `auto` picks FUSE when /dev/fuse works. The mount lives as
/// long as the last Arc (the engine's); dropping it unmounts, also after a cancelled run.
pub fn mount_capture(mode: CaptureMode, tmp: &Path) -> anyhow::Result<Arc<dyn Capture>> {
    Ok(match mode {
        CaptureMode::Fuse => Arc::new(FuseCapture::mount(tmp).map_err(|e| {
            UsageError(format!(
                "--capture fuse: {e}\n  help: use --capture dir (or auto)"
            ))
        })?),
        CaptureMode::Auto => match FuseCapture::mount(tmp) {
            Ok(fuse) => Arc::new(fuse),
            Err(e) => {
                tracing::info!("output capture: using a plain directory ({e})");
                Arc::new(DirCapture::new(tmp))
            }
        },
        CaptureMode::Dir => Arc::new(DirCapture::new(tmp)),
    })
}

fn warn_if_disk_full(path: &Path) {
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return;
    };
    let block = stat.fragment_size() as f64;
    if let Some(message) = disk_warning(
        stat.blocks() as f64 * block,
        stat.blocks_available() as f64 * block,
    ) {
        tracing::warn!("{message}: {}", path.display());
    }
}

/// Inputs nothing writes are worth a warning, unless the store already holds such resources
/// (`known`: ingested files, or outputs of steps that no longer exist); and cycles.
pub fn warn_about_graph(manifest: &Manifest, known: &dyn Fn(&str) -> bool) {
    for warning in manifest.unwritten_inputs(&|pattern| known(pattern)) {
        tracing::warn!("{warning}");
    }
    for warning in manifest.cycle_warnings() {
        tracing::warn!("{warning}");
    }
}

/// The warning for a filesystem of `total` bytes with `free` bytes available, if it is too full.
fn disk_warning(total: f64, free: f64) -> Option<String> {
    let used = (total - free) / total;
    (total > 0.0 && used > DISK_WARN_FRACTION).then(|| {
        format!(
            "the store's filesystem is {:.0}% full ({:.1} GB free of {:.1} GB)",
            used * 100.0,
            free / 1e9,
            total / 1e9
        )
    })
}

/// The pipeline's name: `[pipeline] name`, else the manifest's file stem.
pub fn pipeline_name(manifest: &Manifest) -> String {
    // Read `[pipeline] name` from the text too, in case the parsed model leaves it out.
    let from_text = || {
        let table: toml::Table = toml::from_str(&manifest.text).ok()?;
        Some(table.get("pipeline")?.get("name")?.as_str()?.to_string())
    };
    manifest
        .pipeline_name
        .clone()
        .or_else(from_text)
        .unwrap_or_else(|| {
            manifest
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "grit".into())
        })
}

#[cfg(test)]
mod tests {
    use super::disk_warning;

    #[test]
    fn warns_above_85_percent_used() {
        assert_eq!(disk_warning(100e9, 20e9), None);
        assert_eq!(disk_warning(100e9, 15e9), None, "exactly 85 % is fine");
        assert_eq!(
            disk_warning(100e9, 10e9).as_deref(),
            Some("the store's filesystem is 90% full (10.0 GB free of 100.0 GB)")
        );
        assert_eq!(disk_warning(0.0, 0.0), None);
    }
}
