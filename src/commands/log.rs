//! `grit log`: a task's stored output, exit status and error; or a list of a step's (failed) tasks.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::store::{self, Objects, StoreError, queries};

/// Log lines shown per task when listing.
const LIST_TAIL: usize = 5;

pub fn log(
    db: &Path,
    task: Option<i64>,
    step: Option<&str>,
    failed: bool,
) -> anyhow::Result<Outcome> {
    let (paths, conn) = store::open_read(db)?;
    let objects = Objects::new(paths.objects);
    let mut out = std::io::stdout().lock();
    if let Some(id) = task {
        let info = queries::task(&conn, id)?;
        writeln!(
            out,
            "task {} of step {} (version {}): {}",
            info.id, info.step, info.version, info.state
        )?;
        if let Some(input) = &info.input_name {
            writeln!(
                out,
                "input: {input} {}",
                info.input_hash.as_deref().unwrap_or("")
            )?;
        }
        if let Some(code) = info.exit_code {
            writeln!(out, "exit status: {code}")?;
        }
        if let Some(error) = &info.error {
            writeln!(out, "error: {error}")?;
        }
        writeln!(out, "attempts: {}", info.attempts)?;
        if let Some(hash) = &info.log_hash {
            writeln!(out, "--- log ---")?;
            let mut file =
                std::fs::File::open(objects.path(hash)).context("opening the task's log")?;
            std::io::copy(&mut file, &mut out)?;
        }
        return Ok(Outcome::Success);
    }
    queries::tasks(&conn, step, failed, |info| {
        let io = |e| StoreError::io(Path::new("stdout"), e);
        writeln!(
            out,
            "task {} {} {}{}{}",
            info.id,
            info.step,
            info.state,
            info.input_name
                .as_deref()
                .map(|n| format!(" input={n}"))
                .unwrap_or_default(),
            info.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
        .map_err(io)?;
        if info.state == "failed"
            && let Some(hash) = &info.log_hash
        {
            for line in tail_lines(&objects.path(hash), LIST_TAIL) {
                writeln!(out, "    | {line}").map_err(io)?;
            }
        }
        Ok(())
    })?;
    Ok(Outcome::Success)
}

fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut lines = std::collections::VecDeque::with_capacity(n + 1);
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        lines.push_back(line);
        if lines.len() > n {
            lines.pop_front();
        }
    }
    lines.into()
}
