//! grit: placeholder entry point while the crate is scaffolded. The manifest branch adds a
//! minimal `grit validate -m FILE` so the manifest module can be tested end to end; the lead's
//! real CLI replaces this file and behaves the same for `validate`.

#[allow(dead_code)] // the lead wires the rest of the API into the engine and CLI
mod manifest;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = match args.as_slice() {
        [cmd, flag, file] if cmd == "validate" && (flag == "-m" || flag == "--manifest") => file,
        _ => {
            eprintln!("usage: grit validate -m FILE");
            return ExitCode::from(2);
        }
    };
    match manifest::load(Path::new(file)) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            print!("{}", loaded.manifest.render_graph());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
