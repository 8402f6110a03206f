//! One file per subcommand. Each turns parsed arguments into calls on the store and the engine and
//! prints the result for people (tables) or machines (`--json`).

pub mod backup;
pub mod cat;
pub mod completions;
pub mod doctor;
pub mod dryrun;
pub mod exit;
pub mod export;
pub mod gc;
pub mod graph;
pub mod ingest;
pub mod interrupt;
pub mod locate;
pub mod log;
pub mod migrate;
pub mod repair;
pub mod resources;
pub mod run;
pub mod runs;
pub mod select;
pub mod serve;
pub mod status;
pub mod token;
pub mod trigger;
pub mod validate;
pub mod verify;
pub mod why;

use std::path::PathBuf;

use crate::cli::{Cli, Command, DbArg};
use exit::Outcome;

pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    // The store of a command without a manifest: `--db`, `$GRIT_DB`, or found from here up.
    let store = |db: &DbArg| -> anyhow::Result<PathBuf> {
        let found = locate::store(db.db.as_deref(), None)?;
        if let Some(note) = found.note {
            eprintln!("note: {note}");
        }
        Ok(found.path)
    };
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::MigrateManifest { manifest, start } => {
            migrate::migrate_manifest(&manifest, start.as_deref())
        }
        Command::Validate { manifest, db } => {
            let manifest = locate::manifest(manifest.as_deref())?;
            let store = locate::store(db.db.as_deref(), Some(&manifest))?;
            validate::validate(&manifest, &store.path)
        }
        Command::Status {
            db,
            json,
            manifest,
            params,
        } => {
            let db = match &manifest {
                Some(m) => {
                    let found = locate::store(db.db.as_deref(), Some(m))?;
                    if let Some(note) = found.note {
                        eprintln!("note: {note}");
                    }
                    found.path
                }
                None => store(&db)?,
            };
            status::status(&db, json, manifest.as_deref(), &params)
        }
        Command::Resources {
            name,
            db,
            all,
            json,
        } => resources::resources(&store(&db)?, name.as_deref(), all, json),
        Command::Cat { hash, db } => cat::cat(&store(&db)?, &hash),
        Command::Export {
            names,
            to,
            tar,
            all,
            flat,
            db,
        } => export::export(
            &store(&db)?,
            &names,
            to.as_deref(),
            tar.as_deref(),
            all,
            flat,
        ),
        Command::Log {
            task,
            step,
            failed,
            db,
        } => log::log(&store(&db)?, task, step.as_deref(), failed),
        Command::Why { hash, db, json } => why::why(&store(&db)?, &hash, json),
        Command::Graph { db, format } => graph::graph(&store(&db)?, format),
        Command::Ingest {
            name,
            files,
            db,
            keep_both,
            group,
        } => ingest::ingest(
            &store(&db)?,
            group.group.as_deref(),
            name.as_deref(),
            &files,
            keep_both,
        ),
        Command::Gc { dry_run, db } => gc::gc(&store(&db)?, dry_run),
        Command::Delete {
            hash,
            name,
            dry_run,
            db,
        } => gc::delete(&store(&db)?, hash.as_deref(), name.as_deref(), dry_run),
        Command::Prune {
            keep,
            name,
            dry_run,
            db,
        } => gc::prune(&store(&db)?, keep, name.as_deref(), dry_run),
        Command::Verify {
            repair,
            json,
            no_sandbox,
            db,
        } => verify::verify(&store(&db)?, repair, json, no_sandbox),
        Command::Backup { dest, link, db } => backup::backup(&store(&db)?, &dest, link),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::Doctor { json, db } => doctor::doctor(json, db.as_deref()),
        Command::Serve(args) => serve::serve(args),
        Command::Token(args) => token::token(args),
        Command::Trigger(args) => trigger::trigger(args),
        Command::Runs(args) => runs::runs(args),
        Command::SlurmWorker { batch, element } => {
            crate::executor::slurm::worker::run(&batch, element)?;
            Ok(Outcome::Success)
        }
        Command::LegacyExport { name, db } => resources::legacy_export(&store(&db)?, &name),
    }
}

/// The `--group` of a command that may create a store, looked up (a usage error if unknown).
fn store_group(name: Option<&str>) -> anyhow::Result<Option<crate::store::access::Group>> {
    name.map(|n| {
        crate::store::access::Group::lookup(n)
            .map_err(|e| exit::UsageError(format!("--group {n}: {e}")).into())
    })
    .transpose()
}
