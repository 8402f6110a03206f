//! grit runs data pipelines made of shell scripts.
//!
//! # Layout
//!
//! The modules follow the data flow of DESIGN §3, in one direction:
//!
//! - [`cli`]: the command line (clap), including GRIT's `-manifest x -db y -run` spelling.
//! - [`manifest`]: the TOML model, validation with line:column errors, step version hashes.
//! - [`store`]: SQLite (schema, migrations, one writer thread), the content-addressed objects,
//!   the lock, liveness, gc. Everything durable lives here.
//! - [`engine`]: the dataflow scheduler of one `grit run`: pulls pending tasks from the store,
//!   runs them, publishes their outputs, and lets gather steps see complete sets.
//! - [`executor`]: runs one task's script as a process (the seam the sandbox plugs into).
//! - [`sandbox`]: the per-task sandbox (namespaces, landlock, caps, rlimits) the executor applies.
//! - [`capture`]: turns what a script wrote into `OUTPUT_DIR` into hashed, staged files.
//! - [`report`]: logging setup, the run summary, and other human and JSON output. It only
//!   subscribes to engine events; it never drives the engine.
//! - [`commands`]: one file per subcommand, gluing the above together.
//!
//! `main` parses the command line, sets up logging and maps errors to exit codes: 0 ok, 1 a task
//! failed, 2 usage or manifest error (or not a grit store), 3 store locked, 4 store damaged.

mod capture;
mod cli;
mod commands;
mod engine;
mod executor;
mod manifest;
mod report;
mod sandbox;
mod store;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::exit::{Outcome, exit_code_for};

fn main() -> ExitCode {
    let args = match cli::translate_legacy(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "error: {message}\n\nUsage: grit -manifest FILE -db DIR -run   (or see `grit --help`)"
            );
            return ExitCode::from(2);
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version with exit 0 and usage errors with exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    match commands::dispatch(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::TaskFailed) => ExitCode::from(1),
        Ok(Outcome::Code(code)) => ExitCode::from(code),
        Err(error) => {
            report::print_error(&error);
            ExitCode::from(exit_code_for(&error))
        }
    }
}
