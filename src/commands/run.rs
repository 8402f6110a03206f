//! `grit run`: load the manifest, lock the store, run the engine, print the summary.

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use super::locate;
use crate::cli::{CaptureMode, ExecutorArg, RunArgs};
use crate::engine::{self, CancelToken, RunOptions};
use crate::launch::{self, Launch};
use crate::report::logging::{self, Level};
use crate::report::reporter::Reporter;
use crate::report::{stdout, summary};
use crate::{manifest, store};

pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let manifest_path = locate::manifest(args.manifest.as_deref())?;
    let store = locate::store(args.db.db.as_deref(), Some(&manifest_path))?;
    let db = store.path.as_path();
    let level = match (args.verbosity.quiet, args.verbosity.verbose) {
        (true, _) => Level::Quiet,
        (_, true) => Level::Verbose,
        _ => Level::Normal,
    };
    // The manifest first: journald records carry the pipeline's name. Its errors are returned,
    // not logged, so nothing is lost before logging exists.
    let loaded = manifest::load_starting_at(&manifest_path, args.start.as_deref())?;
    let pipeline = launch::pipeline_name(&loaded.manifest);
    let logging = logging::init(level, args.log_format, &pipeline, !args.dry_run);
    if let Some(note) = &store.note {
        tracing::warn!("{note}");
    }
    // A run checks the graph's warnings again below, knowing what the store holds (an ingested
    // `x` answers "nothing writes `x`"), so the manifest-only ones are left out here.
    let graph_warnings: Vec<_> = {
        let manifest = &loaded.manifest;
        manifest
            .unwritten_inputs(&|_| false)
            .into_iter()
            .chain(manifest.cycle_warnings())
            .collect()
    };
    for warning in loaded
        .warnings
        .iter()
        .filter(|w| !graph_warnings.contains(w))
    {
        tracing::warn!(
            "{}:{}:{}: {}",
            manifest_path.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    let mut manifest = loaded.manifest;
    // Parameter values first: they fix the versions of the steps that read them, which the
    // dry run compares with the store.
    let given =
        manifest::params::parse_assignments(&args.params).map_err(|e| UsageError(e.to_string()))?;
    bind_params(&mut manifest, &given)?;
    if !manifest::bash_on_path()
        && manifest
            .steps
            .iter()
            .any(|s| s.shell == manifest::POSIX_SHELL)
    {
        tracing::warn!(
            "bash is not on PATH: steps that name no `shell` run under `sh -ec`, where a failing command inside a pipeline does not fail the step\n  help: install bash, or set shell = [...] in [pipeline]"
        );
    }
    let named = args
        .steps
        .iter()
        .map(|n| ("--step", n))
        .chain(args.force_steps.iter().map(|n| ("--force-step", n)));
    for (flag, name) in named {
        if manifest.step(name).is_none() {
            let known: Vec<&str> = manifest.steps.iter().map(|s| s.name.as_str()).collect();
            return Err(UsageError(format!(
                "{flag} {name}: no such step in {}\n  help: steps are: {}",
                manifest_path.display(),
                known.join(", ")
            ))
            .into());
        }
    }

    if args.dry_run {
        return super::dryrun::dry_run(&manifest, &args, db);
    }
    if args.no_sandbox
        && let Some(step) = manifest.steps.iter().find(|s| s.image.is_some())
    {
        return Err(UsageError(format!(
            "step `{}` has an `image`, which is the root of its sandbox: it cannot run with \
             --no-sandbox\n  help: run without --no-sandbox",
            step.name
        ))
        .into());
    }

    if manifest.dialect != manifest::Dialect::Grit {
        tracing::info!(
            "{}: read as {}; `grit migrate-manifest` prints it in grit's form",
            manifest_path.display(),
            manifest.dialect.describe()
        );
    }
    if args.migrate_tainted {
        report_changed_steps(&manifest, &args, db)?;
    }
    let group = super::store_group(args.group.group.as_deref())?;
    let (paths, _lock, writer) = store::open_for_write_shared(db, group.as_ref())?;
    prepare_images(&manifest, &paths.root)?;
    // What the unrouted-outputs report needs after the engine has taken the manifest.
    let routed = (manifest.dialect != manifest::Dialect::Grit).then(|| manifest.clone());
    let placing = launch::Where {
        manifest: &manifest,
        manifest_path: &manifest_path,
        start: args.start.as_deref(),
        params: &given,
        store: &paths.root,
        slurm: args.executor.map(|e| e == ExecutorArg::Slurm),
        capture: args.capture,
        jobs: args.jobs.map(|j| j as usize),
    };
    if placing.on_slurm() && args.capture == CaptureMode::Fuse {
        return Err(UsageError(
            "--capture fuse cannot be used with the Slurm executor: tasks write on the compute nodes, into the store's directory\n  help: leave --capture out (the Slurm executor uses the directory capture)".into(),
        )
        .into());
    }
    let launch::Placing {
        executor,
        capture,
        jobs,
    } = placing.placing(&writer)?;
    let launch = Launch {
        manifest,
        capture,
        lines: logging.line_sink(),
        executor,
        options: RunOptions {
            jobs,
            only_steps: args.steps.clone(),
            force_steps: args.force_steps.clone(),
            max_tasks: args.max_tasks,
            no_sandbox: args.no_sandbox,
            params: given,
        },
    };
    let known = launch::known_names(&paths)?;
    let inputs = launch::prepare(launch, &paths, writer, &known)?;
    // One thread runs the scheduler and spawns every task, so per-thread process attributes (the
    // parent-death signal) stay tied to a thread that lives as long as the run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reporter = Reporter::new(&pipeline, logging.progress.clone());
    let cancel = CancelToken::new();
    let result = runtime.block_on(async {
        let _interrupts = super::interrupt::cancel_on_signals(cancel.clone())?;
        anyhow::Ok(engine::run(inputs, &reporter, &cancel).await?)
    });
    logging.finish_progress();
    let report = result?;

    let input_of = |task| reporter.failed_input(task);
    if level == Level::Quiet {
        logging.print_quiet(report.run, &summary::quiet_lines(&report, db, &input_of));
    } else {
        let text = summary::render(&report, db, logging.color, &input_of);
        logging.print_summary(report.run, &text);
    }
    if let Some(routed) = &routed {
        report_unrouted(routed, db, report.run);
    }
    if args.json {
        stdout::println(&serde_json::to_string(&report).context("encoding the JSON summary")?)?;
    }
    Ok(match (report.interrupted, report.totals.failed) {
        (Some(signal), _) => Outcome::Code(super::exit::interrupted(signal)),
        (None, _) if report.store_damaged() => Outcome::Code(super::exit::STORE_DAMAGED),
        (None, 0) => Outcome::Success,
        (None, _) => Outcome::TaskFailed,
    })
}

/// `--migrate-tainted` (task-pipeline's `-migrate-tainted`): which steps changed since the
/// store's current versions, and how many tasks each will redo. grit's versioning re-runs them
/// whether or not this is asked; the flag only says so first.
fn report_changed_steps(
    manifest: &manifest::Manifest,
    args: &RunArgs,
    db: &std::path::Path,
) -> anyhow::Result<()> {
    let conn = match store::open_read(db) {
        Ok((_, conn)) => Some(conn),
        Err(store::StoreError::Missing(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let plans = store::plan::plan(conn.as_ref(), manifest, &args.steps, &args.force_steps)?;
    let changed: Vec<_> = plans.iter().filter(|p| p.replaces.is_some()).collect();
    if changed.is_empty() {
        eprintln!("migrate-tainted: no step changed since the last run");
    }
    for plan in changed {
        eprintln!(
            "migrate-tainted: step `{}` changed (version {} replaces {}): {} task{} will run again",
            plan.step,
            plan.version,
            plan.replaces.as_deref().unwrap_or_default(),
            plan.tasks,
            if plan.tasks == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Unpacks the steps' OCI layouts and archives into the store (once per image: later runs find
/// them there) and says which image steps run under `sh -ec` because their image has no bash.
fn prepare_images(manifest: &manifest::Manifest, store: &std::path::Path) -> anyhow::Result<()> {
    use crate::image::ImageError;
    for step in &manifest.steps {
        let Some(image) = &step.image else { continue };
        if image.needs_unpack(store) {
            tracing::info!(
                "unpacking image {} ({}, {}) into the store",
                image.source.display(),
                image.kind.describe(),
                image.digest
            );
        }
        let rootfs = image.prepare(store).map_err(|e| match e {
            ImageError::Io { .. } => anyhow::Error::from(e),
            other => UsageError(format!("step `{}`: {other}", step.name)).into(),
        })?;
        if image.shell(&rootfs, &step.shell) != step.shell {
            tracing::info!(
                "step `{}`: its image has no bash; the script runs under `sh -ec`",
                step.name
            );
        }
    }
    Ok(())
}

/// Under task-pipeline's routing, the files a run wrote that no step reads (`done`, ...): kept
/// as resources, listed once.
fn report_unrouted(manifest: &manifest::Manifest, db: &std::path::Path, run: i64) {
    let names = match store::open_read(db)
        .map_err(anyhow::Error::from)
        .and_then(|(_, conn)| Ok(store::queries::names_written_in_run(&conn, run)?))
    {
        Ok(names) => names,
        Err(e) => {
            tracing::debug!("listing this run's outputs: {e:#}");
            return;
        }
    };
    let unrouted = manifest.unrouted(&names);
    if !unrouted.is_empty() {
        tracing::warn!(
            "{} output{} routed to no step (kept as resources; read with `grit cat NAME`): {}",
            unrouted.len(),
            if unrouted.len() == 1 { "" } else { "s" },
            unrouted.join(", ")
        );
    }
}

/// Bind `given` to the manifest's parameters; a mismatch is a usage error that names the manifest
/// (and, for a required parameter, the line declaring it).
pub(super) fn bind_params(
    manifest: &mut manifest::Manifest,
    given: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    manifest.bind_params(given).map_err(|e| {
        // A required parameter without a value: at its declaration, as a manifest error.
        if let manifest::ParamError::Missing { name, .. } = &e
            && let Some(param) = manifest.param(name)
        {
            let text = e.to_string();
            let (message, help) = match text.split_once("\n  help: ") {
                Some((m, h)) => (m.to_string(), Some(h.to_string())),
                None => (text.clone(), None),
            };
            return manifest::ManifestError::Invalid {
                path: manifest.path.clone(),
                line: param.line,
                column: param.column,
                message,
                help,
            }
            .into();
        }
        UsageError(format!("{}: {e}", manifest.path.display())).into()
    })
}
