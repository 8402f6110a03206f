//! Choosing resources by what people type: a hash or a unique prefix of one, a name, or a name
//! glob (`report-*.csv`, SQLite `GLOB` like the manifest's `inputs`). Shared by `cat`,
//! `resources` and `export`; a pattern that matches nothing is a usage error (exit 2).

use rusqlite::Connection;

use super::exit::UsageError;
use crate::report::escape::printable;
use crate::store::queries::{self, ResourceRow};
use crate::store::{StoreError, short_hash};

/// The object `cat` prints for `what`: a hash (or unique prefix of 8+ hex characters) first,
/// else the one live resource whose name is or matches `what`. Several are listed, not guessed.
pub fn one(conn: &Connection, what: &str) -> anyhow::Result<String> {
    let by_hash = queries::resolve_hash(conn, what);
    if let Ok(hash) = by_hash {
        return Ok(hash);
    }
    let live = matching(conn, what, false)?;
    match live.as_slice() {
        [one] => Ok(one.hash.clone()),
        [] => {
            let looks_like_hash = what.bytes().all(|b| b.is_ascii_hexdigit());
            match by_hash {
                // Mostly hex: the hash's message (too short, unknown, ambiguous) is the useful one.
                Err(e) if looks_like_hash => Err(e.into()),
                _ => Err(no_match(conn, what, false)?.into()),
            }
        }
        several => {
            let mut text = format!(
                "{} live resources match `{what}`; name one by its hash:",
                several.len()
            );
            for row in several {
                text.push_str(&format!("\n  {}", describe(row)));
            }
            text.push_str(&format!(
                "\n  help: `grit cat {}` prints the first",
                short_hash(&several[0].hash)
            ));
            Err(UsageError(text).into())
        }
    }
}

/// The resources (live unless `all`) whose name is or matches `pattern`, oldest first per name.
pub fn matching(
    conn: &Connection,
    pattern: &str,
    all: bool,
) -> Result<Vec<ResourceRow>, StoreError> {
    let mut rows = Vec::new();
    queries::resources_matching(conn, pattern, all, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// Every resource matching one of `patterns`, each pattern required to match something.
pub fn all_of(
    conn: &Connection,
    patterns: &[String],
    all: bool,
) -> anyhow::Result<Vec<ResourceRow>> {
    let mut rows: Vec<ResourceRow> = Vec::new();
    for pattern in patterns {
        let found = matching(conn, pattern, all)?;
        if found.is_empty() {
            return Err(no_match(conn, pattern, all)?.into());
        }
        for row in found {
            // Two patterns may match the same resource; export it once.
            if !rows
                .iter()
                .any(|r| r.name == row.name && r.hash == row.hash)
            {
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// The error for a pattern that matched nothing, with a hint when history has matches.
pub fn no_match(conn: &Connection, pattern: &str, all: bool) -> Result<UsageError, StoreError> {
    let (what, help) = if all {
        ("no resource", "list names with `grit resources --all`")
    } else if matching(conn, pattern, true)?.is_empty() {
        ("no live resource", "list names with `grit resources`")
    } else {
        (
            "no live resource",
            "only resources that are no longer live match: add --all",
        )
    };
    Ok(UsageError(format!(
        "{what} is named or matches `{pattern}`\n  help: {help}"
    )))
}

/// `5891b5b5c0ff  upper  12 B  2026-01-01T00:00:00.000Z` for lists of candidates.
fn describe(row: &ResourceRow) -> String {
    format!(
        "{}  {}  {}  {}  {}",
        short_hash(&row.hash),
        printable(&row.name),
        row.step.as_deref().unwrap_or("(ingested)"),
        crate::report::summary::human_bytes(row.size),
        row.created_at
    )
}
