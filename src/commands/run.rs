//! `grit run`: load the manifest, lock the store, run the engine, print the summary.

use std::sync::Arc;

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use crate::capture::Capture;
use crate::capture::dir::DirCapture;
use crate::capture::fuse::FuseCapture;
use crate::cli::{CaptureMode, RunArgs};
use crate::engine::{self, RunInputs, RunOptions, events::Silent};
use crate::executor::{LineSink, Stream};
use crate::report::logging::{self, Level};
use crate::report::summary;
use crate::{manifest, store};

/// Warn when the store's filesystem is fuller than this (as GRIT did).
const DISK_WARN_FRACTION: f64 = 0.85;

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let level = match (args.verbosity.quiet, args.verbosity.verbose) {
        (true, _) => Level::Quiet,
        (_, true) => Level::Verbose,
        _ => Level::Normal,
    };
    logging::init(level, args.log_format);

    let loaded = manifest::load(&args.manifest)?;
    for warning in &loaded.warnings {
        tracing::warn!(
            "{}:{}:{}: {}",
            args.manifest.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    let manifest = loaded.manifest;
    for name in &args.steps {
        if manifest.step(name).is_none() {
            let known: Vec<&str> = manifest.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(UsageError(format!(
                "--step {name}: no such step in {}\n  help: steps are: {}",
                args.manifest.display(),
                known.join(", ")
            ))
            .into());
        }
    }

    let (paths, _lock, writer) = store::open_for_write(&args.db.db)?;
    warn_if_disk_full(&paths.root);
    // Inputs nothing writes are worth a warning, unless the store already holds such resources
    // (ingested files, or outputs of steps that no longer exist).
    let known = store::queries::resource_name_matcher(&paths.root)?;
    for warning in manifest.unwritten_inputs(&|pattern| known(pattern)) {
        tracing::warn!("{warning}");
    }
    for warning in manifest.cycle_warnings() {
        tracing::warn!("{warning}");
    }

    // FUSE HOOK: `auto` picks FUSE when /dev/fuse works. The mount lives as long as the last
    // Arc (the engine's); dropping it unmounts, also after SIGINT/SIGTERM ended the run.
    let capture: Arc<dyn Capture> = match args.capture {
        CaptureMode::Fuse => Arc::new(FuseCapture::mount(&paths.tmp).map_err(|e| {
            UsageError(format!(
                "--capture fuse: {e}\n  help: use --capture dir (or auto)"
            ))
        })?),
        CaptureMode::Auto => match FuseCapture::mount(&paths.tmp) {
            Ok(fuse) => Arc::new(fuse),
            Err(e) => {
                tracing::info!("output capture: using a plain directory ({e})");
                Arc::new(DirCapture::new(paths.tmp.clone()))
            }
        },
        CaptureMode::Dir => Arc::new(DirCapture::new(paths.tmp.clone())),
    };
    let lines: Option<LineSink> = (level == Level::Verbose).then(|| {
        Arc::new(
            |spec: &crate::executor::TaskSpec, stream: Stream, line: &str| {
                let tag = if stream == Stream::Stderr { "!" } else { " " };
                eprintln!("  {}#{}{tag} {line}", spec.step.name, spec.task_id);
            },
        ) as LineSink
    });
    let jobs = args.jobs.map(|j| j as usize).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let inputs = RunInputs {
        manifest,
        paths: paths.clone(),
        writer,
        capture,
        lines,
        options: RunOptions {
            jobs,
            only_steps: args.steps.clone(),
            max_tasks: args.max_tasks,
            no_sandbox: args.no_sandbox,
        },
    };
    // One thread runs the scheduler and spawns every task, so per-thread process attributes (the
    // parent-death signal) stay tied to a thread that lives as long as the run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(engine::run(inputs, &Silent))?;

    if level != Level::Quiet {
        eprint!(
            "{}",
            summary::render(&report, &args.db.db, logging::color_wanted())
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the JSON summary")?
        );
    }
    Ok(match (report.interrupted, report.totals.failed) {
        (Some(signal), _) => Outcome::Code(engine::interrupted_exit_code(signal) as u8),
        (None, 0) => Outcome::Success,
        (None, _) => Outcome::TaskFailed,
    })
}

fn warn_if_disk_full(path: &std::path::Path) {
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return;
    };
    let total = stat.blocks() as f64 * stat.fragment_size() as f64;
    let free = stat.blocks_available() as f64 * stat.fragment_size() as f64;
    if total > 0.0 && (total - free) / total > DISK_WARN_FRACTION {
        tracing::warn!(
            "the store's filesystem is {:.0}% full ({:.1} GB free of {:.1} GB): {}",
            (total - free) / total * 100.0,
            free / 1e9,
            total / 1e9,
            path.display()
        );
    }
}
