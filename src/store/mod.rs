//! The store: one directory holding the SQLite database, the content-addressed objects, the
//! staging area and the lock.
//!
//! ```text
//! <db>/grit.sqlite        metadata (WAL): runs, step versions, tasks, resources, provenance
//! <db>/objects/ab/cd/…    read-only object files named by SHA-256
//! <db>/tmp/               staging for outputs and logs; same filesystem as objects/
//! <db>/lock               flock held by the one `grit run` allowed at a time
//! ```
//!
//! Writes go through one writer thread ([`writer::Writer`]); readers open their own connections
//! (WAL lets them read during a run). The SQL lives in the submodules, one concept each.

pub mod facts;
pub mod gc;
pub mod liveness;
pub mod lock;
pub mod objects;
pub mod provenance;
pub mod publish;
pub mod queries;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod staging;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

pub use lock::StoreLock;
pub use objects::Objects;
pub use writer::Writer;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the store is locked by another grit process{}; lock file {path}\n  help: wait for that run to finish, or use another --db",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
    #[error(
        "this store has schema version {found}, newer than this grit supports ({supported})\n  help: use a newer grit with this store"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "no grit store at {0}\n  help: run `grit run -m MANIFEST --db {0}` first, or point --db (or $GRIT_DB) at an existing store"
    )]
    Missing(PathBuf),
    #[error("{0}")]
    NotFound(String),
    #[error("the store's writer thread stopped unexpectedly")]
    WriterGone,
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The well-known paths inside a store directory.
#[derive(Debug, Clone)]
pub struct StorePaths {
    pub root: PathBuf,
    pub database: PathBuf,
    pub objects: PathBuf,
    pub tmp: PathBuf,
    pub lock: PathBuf,
}

impl StorePaths {
    pub fn new(root: &Path) -> Self {
        StorePaths {
            root: root.to_path_buf(),
            database: root.join("grit.sqlite"),
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            lock: root.join("lock"),
        }
    }

    pub fn exists(&self) -> bool {
        self.database.is_file()
    }
}

/// Open (creating if needed) a store for writing: takes the lock, migrates, starts the writer.
pub fn open_for_write(root: &Path) -> Result<(StorePaths, StoreLock, Writer), StoreError> {
    std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
    let root = root.canonicalize().map_err(|e| StoreError::io(root, e))?;
    let paths = StorePaths::new(&root);
    let lock = StoreLock::acquire(&paths.lock)?;
    for dir in [&paths.objects, &paths.tmp] {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    let mut conn = Connection::open(&paths.database)?;
    configure(&conn)?;
    schema::migrate(&mut conn)?;
    Ok((paths, lock, Writer::spawn(conn)))
}

/// Open an existing store read-only. Never creates anything.
pub fn open_read(root: &Path) -> Result<(StorePaths, Connection), StoreError> {
    let paths = StorePaths::new(root);
    if !paths.exists() {
        return Err(StoreError::Missing(root.to_path_buf()));
    }
    let conn = Connection::open_with_flags(
        &paths.database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        // The first run has created the file but not the schema yet.
        return Err(StoreError::Missing(root.to_path_buf()));
    }
    if version > schema::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: schema::SCHEMA_VERSION,
        });
    }
    Ok((paths, conn))
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL: readers work during a run. NORMAL: durable at checkpoints, never corrupt on a crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// The short form of a hash shown to people (step versions, inputs): its first 12 characters.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Timestamps are stored as RFC 3339 UTC text with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
