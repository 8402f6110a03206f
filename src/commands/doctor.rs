//! `grit doctor`: what this machine offers the sandbox and the output capture.

use anyhow::Context;

use super::exit::Outcome;
use crate::report::stdout;
use crate::sandbox;

pub fn doctor(json: bool) -> anyhow::Result<Outcome> {
    let probe = sandbox::probe();
    if json {
        stdout::println(&serde_json::to_string(&probe).context("encoding the report")?)?;
    } else {
        stdout::print(&probe.render_table())?;
    }
    Ok(Outcome::Success)
}
