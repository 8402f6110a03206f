//! Telling a grit store from anything else, so that grit never starts a new store on top of data.
//!
//! A grit database carries `PRAGMA application_id` = [`APPLICATION_ID`] (set by every grit that
//! opens it for writing; stores of schema v1 made before it existed are recognised by their
//! tables). A directory is fit for a *new* store only when it is missing or empty (a `lock`, an
//! empty `tmp/` and an `objects/` tree without files are what an interrupted first run leaves, and
//! count as empty).

use std::fs;
use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, schema};

/// `PRAGMA application_id` of a grit database: "grit" in ASCII.
pub const APPLICATION_ID: i32 = 0x6772_6974;

/// What an opened `grit.sqlite` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// No schema yet: a first run created the file and stopped.
    Fresh,
    /// A grit store of this schema version (at most this grit's).
    Grit(i64),
}

/// Identify the database behind `conn`; anything but a grit store (of a version this grit can
/// read) or a fresh file is an error that says what was found and what to do.
pub fn identify(conn: &Connection, root: &Path) -> Result<Database, StoreError> {
    let read = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let (application_id, version) =
        match (read("PRAGMA application_id"), read("PRAGMA user_version")) {
            (Ok(a), Ok(v)) => (a as i32, v),
            (Err(e), _) | (_, Err(e)) => {
                if root.join("grit.sqlite-journal").exists()
                    && e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly)
                {
                    // A write was interrupted, and this process may not roll it back.
                    return Err(StoreError::DatabaseDamaged {
                        path: root.join("grit.sqlite"),
                        problem: "a write to it was interrupted (grit.sqlite-journal is left), \
                                  and only a process that may write to the store can roll it \
                                  back: run grit once as a user with write access"
                            .into(),
                    });
                }
                return Err(not_a_store(
                    root,
                    format!("grit.sqlite cannot be read as an SQLite database ({e})"),
                ));
            }
        };
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .map_err(|e| {
            // The header says grit wrote it: this is a grit store whose database is damaged.
            if application_id == APPLICATION_ID {
                return StoreError::DatabaseDamaged {
                    path: root.join("grit.sqlite"),
                    problem: e.to_string(),
                };
            }
            not_a_store(
                root,
                format!("grit.sqlite cannot be read as an SQLite database ({e})"),
            )
        })?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(not_a_store(
            root,
            format!(
                "grit.sqlite is a database of another program (application_id {application_id:#x})"
            ),
        ));
    }
    if version > schema::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: schema::SCHEMA_VERSION,
        });
    }
    if version == 0 && tables.is_empty() {
        return Ok(Database::Fresh);
    }
    let has = |t: &str| tables.iter().any(|n| n == t);
    let grit_tables = has("runs") && has("resources") && has("tasks");
    if application_id == APPLICATION_ID || (version >= 1 && grit_tables) {
        return Ok(Database::Grit(version));
    }
    Err(not_a_store(
        root,
        format!(
            "grit.sqlite is an SQLite database without grit's schema (tables: {})",
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            }
        ),
    ))
}

/// Refuse to create a store in `root` unless it is missing or empty (see the module doc).
pub fn check_empty_for_new_store(root: &Path) -> Result<(), StoreError> {
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(());
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let harmless = match name.as_str() {
            "lock" => path.is_file(),
            "tmp" | "objects" => path.is_dir() && !holds_files(&path),
            _ => false,
        };
        if !harmless {
            found.push(if name == "objects" {
                "objects/ with object files".to_string()
            } else {
                name
            });
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let shown: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
    let more = found.len().saturating_sub(shown.len());
    Err(not_a_store(
        root,
        format!(
            "the directory is not empty and has no grit.sqlite: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    ))
}

fn holds_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| !e.path().is_dir() || holds_files(&e.path()))
    })
}

fn not_a_store(root: &Path, found: String) -> StoreError {
    StoreError::NotAStore {
        path: root.to_path_buf(),
        found,
    }
}

/// Mark the database as grit's (new stores, and stores made before the mark existed).
pub fn mark(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    Ok(())
}
