//! `grit run`: load the manifest, lock the store, run the engine, print the summary.

use anyhow::Context;

use super::exit::{Outcome, UsageError};
use super::locate;
use crate::cli::RunArgs;
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
    let loaded = manifest::load(&manifest_path)?;
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
    let manifest = loaded.manifest;
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

    let group = super::store_group(args.group.group.as_deref())?;
    let (paths, _lock, writer) = store::open_for_write_shared(db, group.as_ref())?;
    let launch = Launch {
        manifest,
        capture: args.capture,
        lines: logging.line_sink(),
        options: RunOptions {
            jobs: args
                .jobs
                .map(|j| j as usize)
                .unwrap_or_else(launch::default_jobs),
            only_steps: args.steps.clone(),
            force_steps: args.force_steps.clone(),
            max_tasks: args.max_tasks,
            no_sandbox: args.no_sandbox,
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
