//! Where the manifest and the store are when the command line does not say, as make, cargo and
//! just do: `grit.toml` in the current directory or its parents, and the store `.grit/` beside
//! the manifest. `--db` and `$GRIT_DB` always win.
//!
//! The store used to default to `./db` in the current directory, so under cron (`$HOME`) or from
//! a parent directory a run silently started a new store. For stores made that way, `./db` is
//! still used when it holds a grit store and `.grit/` does not exist, with a note saying how to
//! move it.

use std::path::{Path, PathBuf};

use super::exit::UsageError;

/// The manifest found without `-m`.
pub const MANIFEST_NAME: &str = "grit.toml";
/// The default store, a directory beside the manifest.
pub const STORE_DIR: &str = ".grit";
/// The store grit used before `.grit/`: `./db` in the current directory.
const LEGACY_STORE: &str = "db";

/// A store location and, when it was chosen for compatibility, a note to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub path: PathBuf,
    pub note: Option<String>,
}

/// The manifest: `explicit` if given, else the nearest `grit.toml` from the current directory up.
pub fn manifest(explicit: Option<&Path>) -> Result<PathBuf, UsageError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let cwd = current_dir()?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(MANIFEST_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(UsageError(format!(
        "no manifest given and no {MANIFEST_NAME} in {} or its parent directories\n  help: pass -m FILE, or name the manifest {MANIFEST_NAME}",
        cwd.display()
    )))
}

/// The store of a command. `db` is `--db` or `$GRIT_DB`; `manifest` the manifest the command
/// uses, if any. Without either, the nearest `.grit/` or `grit.toml` from the current directory up.
pub fn store(db: Option<&Path>, manifest: Option<&Path>) -> Result<Store, UsageError> {
    if let Some(db) = db {
        return Ok(Store {
            path: db.to_path_buf(),
            note: None,
        });
    }
    if let Some(manifest) = manifest {
        let dir = match manifest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let beside = dir.join(STORE_DIR);
        if !beside.exists()
            && let Some(legacy) = legacy_store(&[dir, Path::new(".")], &beside)
        {
            return Ok(legacy);
        }
        return Ok(Store {
            path: beside,
            note: None,
        });
    }
    let cwd = current_dir()?;
    let mut searched = Vec::new();
    for dir in cwd.ancestors() {
        let store = dir.join(STORE_DIR);
        if store.is_dir() {
            return Ok(Store {
                path: store,
                note: None,
            });
        }
        // A store of the former default beside the manifest (or here) is still the pipeline's.
        let legacy_dirs: &[&Path] = if dir == cwd { &[dir] } else { &[] };
        let has_manifest = dir.join(MANIFEST_NAME).is_file();
        let legacy_dirs: &[&Path] = if has_manifest { &[dir] } else { legacy_dirs };
        if let Some(legacy) = legacy_store(legacy_dirs, &store) {
            return Ok(legacy);
        }
        if has_manifest {
            return Ok(Store {
                path: store,
                note: None,
            });
        }
        searched.push(dir.display().to_string());
    }
    Err(UsageError(format!(
        "no store given and none found: no --db, no $GRIT_DB, and no {STORE_DIR}/ or {MANIFEST_NAME} in {}\n  help: run this inside the pipeline's directory, or pass --db DIR (or set GRIT_DB)",
        searched.join(", ")
    )))
}

/// The first `<dir>/db` of `dirs` that holds a grit store (grit's former default), with a note
/// that the default moved to `instead`.
fn legacy_store(dirs: &[&Path], instead: &Path) -> Option<Store> {
    let legacy = dirs
        .iter()
        .map(|dir| dir.join(LEGACY_STORE))
        .find(|legacy| legacy.join("grit.sqlite").is_file())?;
    Some(Store {
        note: Some(format!(
            "using the store {}, grit's former default; the default is now {} beside the manifest\n  help: `mv {} {}` to adopt it, or pass --db {}",
            legacy.display(),
            instead.display(),
            legacy.display(),
            instead.display(),
            legacy.display()
        )),
        path: legacy,
    })
}

fn current_dir() -> Result<PathBuf, UsageError> {
    std::env::current_dir().map_err(|e| {
        UsageError(format!(
            "the current directory cannot be read ({e})\n  help: pass -m FILE and --db DIR"
        ))
    })
}
