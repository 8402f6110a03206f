//! `grit log`: a task's stored output, exit status and error; or a list of a step's (failed) tasks.
//!
//! Logs are objects, read (and verified) whole before any of their lines are printed. On a
//! terminal a task's log is shown with its control characters escaped (`\x1b[31m`, `\r`), as
//! `journalctl` does, so a script's output cannot drive the terminal or overwrite lines; piped or
//! redirected, it is written byte for byte. Log tails in listings and names are always escaped.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::report::escape::{printable, printable_text};
use crate::report::stdout;
use crate::store::{self, Objects, StoreError, VerifiedReader, provenance, queries};

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
    let mut out = stdout::stdout();
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
                "input: {} {}",
                printable(input),
                info.input_hash.as_deref().unwrap_or("")
            )?;
        }
        if let Some(code) = info.exit_code {
            writeln!(out, "exit status: {code}")?;
        }
        if let Some(error) = &info.error {
            writeln!(out, "error: {}", printable(error))?;
        }
        writeln!(out, "attempts: {}", info.attempts)?;
        writeln!(out, "reason: {}", info.reason)?;
        if let Some(hash) = &info.log_hash {
            writeln!(out, "--- log ---")?;
            let what = format!("the log of task {}", info.id);
            let content = VerifiedReader::open(&objects, hash, None, &what)?.read_verified()?;
            if std::io::stdout().is_terminal() {
                let text = String::from_utf8_lossy(&content);
                out.write_all(printable_text(&text).as_bytes())
            } else {
                out.write_all(&content)
            }
            .context("writing to stdout")?;
        }
        return Ok(Outcome::Success);
    }
    if let Some(name) = step {
        let steps = provenance::graph_steps(&conn)?;
        if !steps.iter().any(|s| s.name == name) {
            let known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            return Err(StoreError::NotFound(format!(
                "no step {name} in the current pipeline\n  help: steps are: {}",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut count = 0u64;
    queries::tasks(&conn, step, failed, |info| {
        let io = |e| StoreError::io(Path::new("stdout"), e);
        count += 1;
        let input = match (&info.input_name, &info.input_hash) {
            (Some(name), Some(hash)) => {
                format!(
                    " input {} ({})",
                    printable(name),
                    crate::store::short_hash(hash)
                )
            }
            _ => String::new(),
        };
        let outcome = match (&info.error, info.state.as_str()) {
            (Some(error), "failed") => format!(": {}", printable(error)),
            _ => String::new(),
        };
        let attempts = if info.attempts > 1 {
            format!(" (after {} attempts)", info.attempts)
        } else {
            String::new()
        };
        writeln!(
            out,
            "task {} {} {}{input}{outcome}{attempts}",
            info.id, info.step, info.state
        )
        .map_err(io)?;
        if info.state == "failed" {
            if let Some(hash) = &info.log_hash {
                let what = format!("the log of task {}", info.id);
                for line in tail_lines(&objects, hash, &what, LIST_TAIL)? {
                    writeln!(out, "    | {}", printable_text(&line)).map_err(io)?;
                }
            }
            writeln!(
                out,
                "    full log: grit log {} --db {}",
                info.id,
                db.display()
            )
            .map_err(io)?;
        }
        Ok(())
    })?;
    if count == 0 {
        let what = if failed { "failed tasks" } else { "tasks" };
        match step {
            Some(name) => writeln!(out, "no {what} in step {name}")?,
            None => writeln!(out, "no {what}")?,
        }
    } else if failed {
        writeln!(
            out,
            "{count} failed task{}; `grit run` retries them",
            if count == 1 { "" } else { "s" }
        )?;
    }
    Ok(Outcome::Success)
}

/// The last `n` lines of a log object, once the whole log checked out.
fn tail_lines(
    objects: &Objects,
    hash: &str,
    what: &str,
    n: usize,
) -> Result<Vec<String>, StoreError> {
    let content = VerifiedReader::open(objects, hash, None, what)?.read_verified()?;
    let mut lines = std::collections::VecDeque::with_capacity(n + 1);
    for line in content.lines().map_while(Result::ok) {
        lines.push_back(line);
        if lines.len() > n {
            lines.pop_front();
        }
    }
    Ok(lines.into())
}
