//! `grit resources`: list resources (live by default), and GRIT's `-export NAME` (live hashes).

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::report::stdout;
use crate::report::summary::human_bytes;
use crate::store::{self, StoreError, queries};

pub fn resources(db: &Path, name: Option<&str>, all: bool, json: bool) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    let mut out = std::io::BufWriter::new(stdout::stdout());
    let io = |e: std::io::Error| StoreError::io(Path::new("stdout"), e);
    if json {
        // Streamed as it is read, so a large store does not build one big value in memory.
        write!(out, "{{\"resources\":[").map_err(io)?;
        let mut first = true;
        queries::resources(&conn, name, all, |row| {
            if !first {
                write!(out, ",").map_err(io)?;
            }
            first = false;
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
        queries::resources(&conn, name, all, |row| {
            writeln!(
                out,
                "{:<24}  {:<16}  {:>10}  {:<16}  {:<5}  {}",
                row.name,
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
