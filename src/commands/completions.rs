//! `grit completions SHELL` and `grit man`: generated from the clap definitions, so they never
//! drift from the real command line (the Nix package installs both).

use anyhow::Context;
use clap::CommandFactory;

use std::io::Write;

use super::exit::Outcome;
use crate::cli::{Cli, Shell};
use crate::report::stdout;

pub fn completions(shell: Shell) -> anyhow::Result<Outcome> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory first: `generate` panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "grit", &mut script);
    stdout::stdout()
        .write_all(&script)
        .context("writing the completions")?;
    Ok(Outcome::Success)
}

pub fn man() -> anyhow::Result<Outcome> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut stdout::stdout())
        .context("writing the man page")?;
    Ok(Outcome::Success)
}
