//! The store: one directory holding the SQLite database, the content-addressed objects, the
//! staging area and the lock.
//!
//! ```text
//! <db>/grit.sqlite        metadata (WAL): runs, step versions, tasks, resources, provenance
//! <db>/objects/ab/cd/…    read-only object files named by SHA-256
//! <db>/tmp/               staging for outputs and logs; same filesystem as objects/
//! <db>/lock               flock held by the one `grit run` allowed at a time
//! <db>/quarantine/        damaged objects `grit verify --repair` moved aside
//! ```
//!
//! Writes go through one writer thread ([`writer::Writer`]); readers open their own connections
//! (WAL lets them read during a run). The SQL lives in the submodules, one concept each.

pub mod access;
pub mod backup;
pub mod decide;
pub mod dest_dir;
pub mod facts;
pub mod gc;
pub mod identity;
pub mod liveness;
pub mod lock;
pub mod objects;
pub mod params;
pub mod plan;
pub mod provenance;
pub mod publish;
pub mod queries;
pub mod read_cache;
pub mod repair;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod slurm_jobs;
pub mod staging;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

pub use lock::StoreLock;
pub use objects::{ObjectError, Objects, VerifiedReader};
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
        "{path} is not a grit store: {found}\n  help: grit creates a store only in a missing or empty directory. If this is a grit store whose database is lost or damaged, restore grit.sqlite from a backup (see `grit backup`) and run `grit verify`; otherwise point --db at another directory"
    )]
    NotAStore { path: PathBuf, found: String },
    #[error(
        "the database {path} is damaged: {problem}\n  help: run `grit verify` on the store; restore grit.sqlite from an earlier backup"
    )]
    DatabaseDamaged { path: PathBuf, problem: String },
    #[error(
        "no grit store at {0}\n  help: run `grit run -m MANIFEST --db {0}` first, or point --db (or $GRIT_DB) at an existing store"
    )]
    Missing(PathBuf),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Object(#[from] objects::ObjectError),
    /// Writing under a destination the user named (`grit backup DEST`).
    #[error(transparent)]
    Dest(#[from] dest_dir::DestError),
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

    /// The parent of the tasks' scratch directories (`TMPDIR`): 0700 in every store, made by the
    /// first task that needs it (see `staging::DirPool`).
    pub fn scratch(&self) -> PathBuf {
        self.tmp.join("scratch")
    }

    /// Where `grit verify --repair` moves damaged objects.
    pub fn quarantine(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    pub fn exists(&self) -> bool {
        self.database.is_file()
    }
}

/// Open (creating if needed) a store for writing: takes the lock, migrates, starts the writer.
/// A new store is private to its owner (see [`access`]).
pub fn open_for_write(root: &Path) -> Result<(StorePaths, StoreLock, Writer), StoreError> {
    open_for_write_shared(root, None)
}

/// [`open_for_write`], creating a new store readable by `group` (`--group`). An existing store
/// keeps its modes: a group it is not shared with gets a warning, never a chmod.
pub fn open_for_write_shared(
    root: &Path,
    group: Option<&access::Group>,
) -> Result<(StorePaths, StoreLock, Writer), StoreError> {
    // Before creating anything: never start a store on top of other data, never convert another
    // program's database.
    let sharing = if StorePaths::new(root).exists() {
        let (_, conn) = open_connection(root)?;
        identity::identify(&conn, root)?;
        let sharing = access::Sharing::of(root).map_err(|e| StoreError::io(root, e))?;
        if let Some(group) = group {
            warn_if_not_shared_with(root, sharing, group);
        }
        sharing
    } else {
        identity::check_empty_for_new_store(root)?;
        access::prepare_new_root(root, group).map_err(|e| StoreError::io(root, e))?
    };
    let root = root.canonicalize().map_err(|e| StoreError::io(root, e))?;
    let paths = StorePaths::new(&root);
    access::create_file(&paths.lock, sharing.file_mode())
        .map_err(|e| StoreError::io(&paths.lock, e))?;
    let lock = StoreLock::acquire(&paths.lock)?;
    // Under the lock nothing else uses the staging directory: what is there was left by a run
    // that failed or was killed. Emptied before the database is touched, because on a full disk
    // those leftovers (a task's big output) are what keeps SQLite from writing, and a store the
    // next run cannot open because of grit's own garbage is not one it completes.
    if let Err(e) = staging::clear(&paths.tmp) {
        tracing::warn!("could not empty {}: {e}", paths.tmp.display());
    }
    for dir in [&paths.objects, &paths.tmp] {
        access::create_dir(dir, sharing.dir_mode()).map_err(|e| StoreError::io(dir, e))?;
    }
    // SQLite gives the -wal and -shm files the database's mode and owner.
    access::create_file(&paths.database, sharing.file_mode())
        .map_err(|e| StoreError::io(&paths.database, e))?;
    let mut conn = Connection::open(&paths.database)?;
    // Again under the lock: another grit may have created the store meanwhile.
    identity::identify(&conn, &paths.root)?;
    configure(&conn)?;
    schema::migrate(&mut conn)?;
    identity::mark(&conn)?;
    Ok((paths, lock, Writer::spawn(conn)))
}

/// Open an existing store read-only. Never creates anything.
pub fn open_read(root: &Path) -> Result<(StorePaths, Connection), StoreError> {
    let (paths, conn) = open_connection(root)?;
    if identity::identify(&conn, root)? == identity::Database::Fresh {
        // The first run has created the file but not the schema yet.
        return Err(StoreError::Missing(root.to_path_buf()));
    }
    Ok((paths, conn))
}

/// A read-only connection to the store's database, not yet identified.
fn open_connection(root: &Path) -> Result<(StorePaths, Connection), StoreError> {
    let paths = StorePaths::new(root);
    // Only a database that is not there means "no store"; one that cannot be looked at
    // (permissions, I/O) is an environment error, not a hint to create a store.
    match std::fs::metadata(&paths.database) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(StoreError::Missing(root.to_path_buf())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(StoreError::Missing(root.to_path_buf()));
        }
        Err(e) => return Err(StoreError::io(&paths.database, e)),
    }
    roll_back_interrupted_write(&paths.database);
    let conn = Connection::open_with_flags(
        &paths.database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok((paths, conn))
}

/// A first run killed before its switch to WAL (or during it) leaves a hot rollback journal
/// beside the database, which a read-only connection cannot roll back: every later open, even to
/// identify the store, would fail with "attempt to write a readonly database". A read-write
/// connection (never creating anything) rolls it back on its first read, as SQLite does for any
/// writer; SQLite's own locks keep that from touching a journal a live writer still holds. Done
/// only when the journal is there (a store in WAL mode has none); a failure (no write access)
/// is left to the read-only open, whose error [`identity::identify`] explains.
fn roll_back_interrupted_write(database: &Path) {
    let mut journal = database.as_os_str().to_os_string();
    journal.push("-journal");
    if !Path::new(&journal).exists() {
        return;
    }
    if let Ok(conn) = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        let _ = conn.busy_timeout(Duration::from_secs(5));
        let _ = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    }
}

fn warn_if_not_shared_with(root: &Path, sharing: access::Sharing, group: &access::Group) {
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata(root).map(|m| m.gid()).ok();
    if sharing != access::Sharing::Group || gid != Some(group.gid) {
        tracing::warn!(
            "--group {}: the store {} already exists and is not shared with that group; grit              does not change an existing store's permissions (see `grit doctor --db {}`)",
            group.name,
            root.display(),
            root.display()
        );
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL: readers work during a run. NORMAL: durable at checkpoints, never corrupt on a crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Prepared statements kept per connection. rusqlite keeps 16 by default, fewer than a group
/// commit uses (about 20 distinct statements per published task): cycling through them in LRU
/// order, every one missed and was compiled again, 40 % of the writer thread's CPU (`perf`,
/// 1,000-task fan-out).
const STATEMENT_CACHE: usize = 128;

/// The short form of a hash shown to people (step versions, inputs): its first 12 characters.
pub fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Timestamps are stored as RFC 3339 UTC text with milliseconds.
pub fn now() -> String {
    timestamp(SystemTime::now())
}

/// A moment as the store writes it (RFC 3339, milliseconds).
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
