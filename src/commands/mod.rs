//! One file per subcommand. Each turns parsed arguments into calls on the store and the engine and
//! prints the result for people (tables) or machines (`--json`).

pub mod cat;
pub mod completions;
pub mod doctor;
pub mod dryrun;
pub mod exit;
pub mod export;
pub mod gc;
pub mod graph;
pub mod ingest;
pub mod log;
pub mod resources;
pub mod run;
pub mod status;
pub mod validate;
pub mod why;

use crate::cli::{Cli, Command};
use exit::Outcome;

pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate { manifest } => validate::validate(&manifest),
        Command::Status { db, json, manifest } => status::status(&db.db, json, manifest.as_deref()),
        Command::Resources {
            name,
            db,
            all,
            json,
        } => resources::resources(&db.db, name.as_deref(), all, json),
        Command::Cat { hash, db } => cat::cat(&db.db, &hash),
        Command::Export {
            names,
            to,
            tar,
            all,
            db,
        } => export::export(&db.db, &names, to.as_deref(), tar.as_deref(), all),
        Command::Log {
            task,
            step,
            failed,
            db,
        } => log::log(&db.db, task, step.as_deref(), failed),
        Command::Why { hash, db, json } => why::why(&db.db, &hash, json),
        Command::Graph { db, format } => graph::graph(&db.db, format),
        Command::Ingest {
            name,
            files,
            keep_both,
            db,
        } => ingest::ingest(&db.db, &name, &files, keep_both),
        Command::Gc { dry_run, db } => gc::gc(&db.db, dry_run),
        Command::Delete {
            hash,
            name,
            dry_run,
            db,
        } => gc::delete(&db.db, hash.as_deref(), name.as_deref(), dry_run),
        Command::Prune {
            keep,
            name,
            dry_run,
            db,
        } => gc::prune(&db.db, keep, name.as_deref(), dry_run),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::Doctor { json } => doctor::doctor(json),
        Command::LegacyExport { name, db } => resources::legacy_export(&db.db, &name),
    }
}
