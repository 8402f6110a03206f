//! The `grit` binary: parses the command line and hands it to the library ([`grit`]'s crate doc
//! describes the layout); [`grit::commands::exit`] turns the outcome into the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    grit::memory::settle_allocator();
    let args = match grit::cli::translate_legacy(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "error: {message}\n\nUsage: grit -manifest FILE -db DIR -run   (or see `grit --help`)"
            );
            return ExitCode::from(grit::commands::exit::USAGE);
        }
    };
    let cli = match grit::cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version with exit 0 and usage errors with exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    grit::commands::exit::exit_status(grit::commands::dispatch(cli))
}
