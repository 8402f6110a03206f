//! `grit resources`: list resources (live by default), and GRIT's `-export NAME` (live hashes).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use super::select;
use crate::report::escape::printable;
use crate::report::stdout;
use crate::report::summary::human_bytes;
use crate::store::queries::ResourceRow;
use crate::store::{self, StoreError, queries};

pub fn resources(db: &Path, name: Option<&str>, all: bool, json: bool) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    // Streamed as it is read, so a large store does not build one big list in memory; `NAME` is
    // a name or a glob.
    let each = |each: &mut dyn FnMut(ResourceRow) -> Result<(), StoreError>| match name {
        Some(pattern) => queries::resources_matching(&conn, pattern, all, each),
        None => queries::resources(&conn, None, all, each),
    };
    let mut count = 0u64;
    let mut out = std::io::BufWriter::new(stdout::stdout());
    let io = |e: std::io::Error| StoreError::io(Path::new("stdout"), e);
    if json {
        write!(out, "{{\"resources\":[").map_err(io)?;
        each(&mut |row| {
            if count > 0 {
                write!(out, ",").map_err(io)?;
            }
            count += 1;
            serde_json::to_writer(&mut out, &row).map_err(|e| io(e.into()))
        })?;
        writeln!(out, "]}}").map_err(io)?;
    } else {
        writeln!(
            out,
            "{:<24}  {:<16}  {:>10}  {:<16}  {:<5}  CREATED",
            "NAME", "HASH", "SIZE", "STEP", "LIVE"
        )
        .map_err(io)?;
        each(&mut |row| {
            count += 1;
            writeln!(
                out,
                "{:<24}  {:<16}  {:>10}  {:<16}  {:<5}  {}",
                printable(&row.name),
                &row.hash[..16],
                human_bytes(row.size),
                row.step.as_deref().unwrap_or("(ingested)"),
                if row.live { "yes" } else { "no" },
                row.created_at
            )
            .map_err(io)
        })?;
    }
    out.flush().context("writing to stdout")?;
    if let (Some(pattern), 0) = (name, count) {
        return Err(select::no_match(&conn, pattern, all)?.into());
    }
    Ok(Outcome::Success)
}

/// GRIT's `-export NAME`: the live hashes of NAME, one a line.
pub fn legacy_export(db: &Path, name: &str) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    let mut out = std::io::BufWriter::new(stdout::stdout());
    queries::resources(&conn, Some(name), false, |row| {
        writeln!(out, "{}", row.hash).map_err(|e| StoreError::io(Path::new("stdout"), e))
    })?;
    out.flush().context("writing to stdout")?;
    Ok(Outcome::Success)
}
