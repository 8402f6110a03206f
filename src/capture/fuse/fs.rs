//! The capture filesystem served through fuser: a root holding one directory per task, each holding
//! flat files. File data lives in staging files under `<db>/tmp`. SHA-256 is computed while
//! in-order writes stream through; an out-of-order write or a truncation marks the file for a
//! re-hash from its staging file when the task finishes. Refused operations get an errno for the
//! writer and a message for the task log. Every request that names a task's directory or file
//! first passes [`CaptureFs::allow`] (see `access`): only the task's processes and grit get in.
//!
//! Beside each task directory `<key>`, the mount can serve the task's inputs, read-only, in
//! `<key>.in` (see [`Shared::serve_inputs`]): the store's objects are read-only files (0400), and
//! a copy keeps its source's mode, so a script that copied `$INPUT_FILE` somewhere could not
//! overwrite its own copy on the next run. Served here, an input has an ordinary file's mode
//! (0644) while every write to it still fails (EROFS), and its bytes come from the object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use sha2::{Digest, Sha256};

use super::access::{self, Refused};
use super::hasher::Hasher;
use crate::capture::{CapturedFile, HelperCheck, TaskIdentity, invalid_name_reason};

/// Inode of the mount's root, which holds the task directories.
pub(super) const ROOT: u64 = 1;
/// How long the kernel may cache entries and attributes. Every change goes through this
/// filesystem, so the cache only has to be dropped when a task directory disappears.
const TTL: Duration = Duration::from_secs(1);
/// Block size reported by stat: `cat`, `cp` and friends size their buffers from it, so a large
/// value makes them issue writes as big as the kernel allows (1 MiB with 256 max pages).
const BLKSIZE: u32 = 1 << 20;
/// Requested size of one write request. The kernel caps it at `fs.fuse.max_pages_limit` pages.
pub(super) const MAX_WRITE: u32 = 1 << 20;
/// Flags for every opened file. NOFLUSH: `flush` has nothing to do here (writes are synchronous),
/// so the kernel can skip that round trip on every close.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_NOFLUSH;
/// Added to [`OPEN_FLAGS`] where the kernel can also map such files (see `init`). DIRECT_IO:
/// reads and writes go straight between the caller's buffer and this filesystem instead of
/// through a page-cache copy of the file in the kernel. Every write still arrives here,
/// synchronously and in full (quota, ENOSPC and late-writer checks are unchanged); what goes away
/// is one copy of every byte written and a second, cached copy of every output in RAM (measured:
/// the largest cost of capturing after the hash itself).
const DIRECT_IO: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;
/// Writes at least this large are hashed on the hash worker; smaller ones inline, where a
/// thread hand-off would cost more than the hash.
const OFFLOAD_MIN: usize = 128 << 10;
/// Largest piece written to a staging file in one pwrite. The page cache sizes its folios by the
/// write: 1 MiB writes get 1 MiB folios, which on VMs with virtio-balloon free page reporting
/// seem to come from memory the host has taken back (all the extra time is in the copy, on fresh
/// memory only). Measured on a fresh 1 GiB file there: 1 MiB pieces 0.57-0.79 GB/s, 128-512 KiB
/// pieces 3.3-5.4 GB/s (the floor `cat > file` writes 128 KiB). Extra syscalls: three per MiB.
const STAGE_PIECE: usize = 256 << 10;
/// Refusal and error messages kept per task; a script looping on a refused call must not grow
/// grit's memory without bound.
const MAX_MESSAGES: usize = 50;
/// Mode of the mount's root and task directories, and of output files: the owner's alone. The
/// kernel does not enforce them here (no `default_permissions`; the access check in `access`
/// does, more strictly); they tell the truth to `ls` and `test -w`.
pub(super) const DIR_MODE: u16 = 0o700;
const FILE_MODE: u16 = 0o600;
/// Mode of a served input: what a file a user creates has, so that `cp` makes ordinary copies.
/// Writes are refused with EROFS whatever the mode says.
const INPUT_MODE: u16 = 0o644;
/// Suffix of the directory that serves a task's inputs beside its `OUTPUT_DIR`.
pub(super) const INPUTS_SUFFIX: &str = ".in";
/// How long a request from an unknown process waits for a plain task that is being spawned to
/// be admitted (its script may run before grit learns its pid). Admission follows the spawn at
/// once; the bound only matters for a request that would be refused anyway.
const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// State shared between the FUSE thread and the engine's calls.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Signalled when a task is admitted (see [`Shared::admit`]).
    admitted: Condvar,
    /// `<db>/tmp`, where file data is staged.
    staging: PathBuf,
    /// Prefix of this mount's staging file names, unique per process and mount.
    prefix: String,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
    hasher: Hasher,
    /// The executor's helpers that may use task directories (see [`Shared::trust`]).
    helpers: RwLock<Vec<HelperCheck>>,
}

struct State {
    next_ino: u64,
    /// Task key -> directory inode.
    by_key: HashMap<String, u64>,
    dirs: HashMap<u64, TaskDir>,
    /// Boxed: a task may hold hundreds of thousands of files, and a table of 300-byte values
    /// doubles (and is copied) as it grows; a table of pointers costs 16 bytes a slot.
    files: HashMap<u64, Box<FileNode>>,
    /// Reused buffer for reads, so reads do not allocate.
    read_buf: Vec<u8>,
    /// Refused requests on the mount's root (listing it).
    root_refused: Refused,
    /// Refused accesses of tasks already taken out, for the run summary.
    refused_log: Vec<String>,
    /// Input directories (`<key>.in`) by inode.
    input_dirs: HashMap<u64, InputDir>,
    /// Served input files by inode.
    inputs: HashMap<u64, InputNode>,
    /// Open directory handles (`opendir`) and where each one's listing goes on.
    listings: HashMap<u64, Listing>,
    next_listing: u64,
}

/// Where an open directory's listing stands. Offsets are this handle's own numbers for the
/// entries it returned, and a listing goes on after the *name* an offset stands for: a position
/// in the directory would move when a file before it is removed, and the next call would skip
/// files that are still there (a program removing files as it listed them left some behind,
/// which were then published).
/// Files added during a listing appear in it when their name sorts after the current one, which
/// POSIX allows.
#[derive(Default)]
struct Listing {
    /// The offsets of the latest reply's entries and what each stands for: the kernel asks
    /// again from the last entry its caller took, which is one of them.
    latest: Vec<(u64, ListingPosition)>,
    next_offset: u64,
}

#[derive(Clone)]
enum ListingPosition {
    Dot,
    DotDot,
    Name(String),
}

/// The read-only directory serving one task's inputs.
struct InputDir {
    /// The task directory whose processes may read it.
    task: u64,
    entries: BTreeMap<String, u64>,
}

/// One input served read-only from a file of the store.
struct InputNode {
    task: u64,
    /// The object (or a hard link to it) the bytes come from; verified before the task ran.
    path: PathBuf,
    size: u64,
    /// Open while some process has the input open.
    file: Option<File>,
    opens: u32,
}

struct TaskDir {
    key: String,
    /// Linked files by name, sorted: a listing goes on after the last name it returned (see
    /// [`Listing`]).
    entries: BTreeMap<String, u64>,
    /// Every file inode of this task, including unlinked files that are still open.
    nodes: HashSet<u64>,
    quota: Option<u64>,
    /// Sum of the sizes of all `nodes`; compared with `quota`.
    used: u64,
    refusals: Messages,
    /// Failures that make the task fail (ENOSPC, quota, I/O errors).
    errors: Messages,
    /// The task's processes, once spawned; only they and grit may use the directory.
    who: Option<TaskIdentity>,
    /// A plain spawn is under way: requests of unknown processes wait for [`Shared::admit`].
    expecting: bool,
    /// Requests from other processes that were refused.
    intruders: Refused,
    /// The directory serving this task's inputs, when it has one.
    inputs_dir: Option<u64>,
}

impl TaskDir {
    /// The name file `ino` is linked under, for messages (nodes do not keep their names).
    fn name_of(&self, ino: u64) -> String {
        self.entries
            .iter()
            .find(|(_, linked)| **linked == ino)
            .map_or_else(|| "(deleted file)".to_string(), |(name, _)| name.clone())
    }

    /// Record a failure that makes the task fail. The first one is also logged at once: when it
    /// makes the script exit non-zero, the engine discards the task without asking for it, and
    /// a full disk may keep it out of the task log as well.
    fn fail(&mut self, msg: String) {
        if self.errors.kept.is_empty() {
            tracing::warn!("task {}: {msg}", self.key);
        }
        self.errors.push(msg);
    }
}

#[derive(Default)]
struct Messages {
    kept: Vec<String>,
    dropped: usize,
}

impl Messages {
    fn push(&mut self, msg: String) {
        if self.kept.contains(&msg) {
            return;
        }
        if self.kept.len() < MAX_MESSAGES {
            self.kept.push(msg);
        } else {
            self.dropped += 1;
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("... and {} more such messages", self.dropped));
        }
        self.kept
    }
}

impl FileNode {
    /// The open staging file, reopened by its path if every process had closed the node.
    fn staging_file(&mut self, shared: &Shared) -> std::io::Result<&File> {
        let file = match self.file.take() {
            Some(file) => file,
            None => File::options()
                .read(true)
                .write(true)
                .open(shared.staged_path(self.ino))?,
        };
        Ok(self.file.insert(file))
    }
}

///
/// A task may leave hundreds of thousands of files, and each is held here until the task ends,
/// so a node keeps only what it cannot derive: its name lives in the task directory's entries,
/// its staging file's path comes from its inode number ([`Shared::staged_path`]), and the hash
/// state of a closed file shrinks to its digest ([`StreamingHash::Sealed`]). About 170 bytes a
/// file, where it was 320 (heaptrack; BENCHMARKS.md, issue 16).
struct FileNode {
    ino: u64,
    dir: u64,
    /// False once unlinked (the node lives on while a process holds it open).
    linked: bool,
    /// The staging file, open while a process holds the node open (and reopened by path for a
    /// request on a closed one): a task may write more files than grit may hold descriptors.
    file: Option<File>,
    size: u64,
    hasher: StreamingHash,
    /// The hash state lives on the hash worker (`hasher` is unused then).
    offloaded: bool,
    /// Bytes fed to the hash, always a prefix of the content while `rehash` is false.
    hashed: u64,
    rehash: bool,
    opens: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

/// The hash of a file's first `hashed` bytes, kept while the script writes in order.
enum StreamingHash {
    /// Extended by each in-order write (boxed: only a file being written pays for the state).
    Running(Box<Sha256>),
    /// Every process closed the file: the digest of its `hashed` bytes. A later write at the
    /// end cannot extend it, so the file is hashed again by reading it back (`rehash`).
    Sealed([u8; 32]),
}

impl StreamingHash {
    fn new() -> StreamingHash {
        StreamingHash::Running(Box::new(Sha256::new()))
    }

    /// The digest, from here on (a closed file keeps 32 bytes instead of the state).
    fn seal(&mut self) {
        if let StreamingHash::Running(state) = self {
            let state = std::mem::take(&mut **state);
            *self = StreamingHash::Sealed(state.finalize().into());
        }
    }
}

/// What a task directory held when it was taken out of the filesystem.
pub(super) struct TakenTask {
    files: Vec<(String, Box<FileNode>)>,
    orphans: Vec<FileNode>,
    pub(super) refusals: Vec<String>,
    pub(super) errors: Vec<String>,
}

/// Why a task key cannot be used.
pub(super) enum StartError {
    Exists,
}

impl Shared {
    /// The staging file of file node `ino` (nodes do not keep the path: see [`FileNode`]).
    fn staged_path(&self, ino: u64) -> PathBuf {
        self.staging.join(format!("{}{ino}", self.prefix))
    }

    pub(super) fn new(staging: &Path, prefix: String) -> std::io::Result<Shared> {
        Ok(Shared {
            state: Mutex::new(State {
                next_ino: ROOT + 1,
                by_key: HashMap::new(),
                dirs: HashMap::new(),
                files: HashMap::new(),
                read_buf: Vec::new(),
                root_refused: Refused::default(),
                refused_log: Vec::new(),
                input_dirs: HashMap::new(),
                inputs: HashMap::new(),
                listings: HashMap::new(),
                next_listing: 1,
            }),
            admitted: Condvar::new(),
            staging: staging.to_path_buf(),
            prefix,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mounted_at: SystemTime::now(),
            hasher: Hasher::new(MAX_WRITE as usize)?,
            helpers: RwLock::new(Vec::new()),
        })
    }

    /// From now on, the processes `helpers` recognises may use every task directory, as grit may.
    pub(super) fn trust(&self, helpers: HelperCheck) {
        self.helpers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(helpers);
    }

    /// Is `pid` grit itself or a helper of its executor? Asked only where a request names a task
    /// directory, never on the write path.
    fn is_grit(&self, pid: u32) -> bool {
        self.is_grit_or_helper_known(pid) || access::is_grit(pid)
    }

    /// The part of [`Shared::is_grit`] that needs no look at `/proc`: grit's main thread, and the
    /// executor's helpers (the zygotes, whose pids the executor keeps). The zygote names three new
    /// paths on the mount for every sandboxed task, so this goes before any path lookup.
    fn is_grit_or_helper_known(&self, pid: u32) -> bool {
        pid == std::process::id()
            || self
                .helpers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|helper| helper(pid))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another holder cannot leave the maps half-updated in a way that matters
        // more than losing the whole run's capture, so keep serving instead of cascading panics.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn start_task(&self, key: &str, quota: Option<u64>) -> Result<(), StartError> {
        let mut st = self.lock();
        if st.by_key.contains_key(key) {
            return Err(StartError::Exists);
        }
        let ino = st.alloc_ino();
        st.by_key.insert(key.to_string(), ino);
        st.dirs.insert(
            ino,
            TaskDir {
                key: key.to_string(),
                entries: BTreeMap::new(),
                nodes: HashSet::new(),
                quota,
                used: 0,
                refusals: Messages::default(),
                errors: Messages::default(),
                who: None,
                expecting: false,
                intruders: Refused::default(),
                inputs_dir: None,
            },
        );
        Ok(())
    }

    /// Serve `inputs` (name, file, size) read-only in the directory `<key>.in` of started task
    /// `key`, to the same processes as its `OUTPUT_DIR`. Returns false when the task is unknown.
    pub(super) fn serve_inputs(&self, key: &str, inputs: &[(String, PathBuf, u64)]) -> bool {
        let mut st = self.lock();
        let Some(&task) = st.by_key.get(key) else {
            return false;
        };
        let dir_ino = st.alloc_ino();
        let mut entries = BTreeMap::new();
        for (name, path, size) in inputs {
            let ino = st.alloc_ino();
            st.inputs.insert(
                ino,
                InputNode {
                    task,
                    path: path.clone(),
                    size: *size,
                    file: None,
                    opens: 0,
                },
            );
            entries.insert(name.clone(), ino);
        }
        st.input_dirs.insert(dir_ino, InputDir { task, entries });
        if let Some(d) = st.dirs.get_mut(&task) {
            d.inputs_dir = Some(dir_ino);
        }
        true
    }

    /// A plain spawn of the task's processes is under way (see [`Capture::expect`]).
    ///
    /// [`Capture::expect`]: crate::capture::Capture::expect
    pub(super) fn expect(&self, key: &str) {
        let mut st = self.lock();
        if let Some(d) = st.task_dir_mut(key) {
            d.expecting = true;
        }
    }

    /// The task's processes are `who` (`None`: the spawn failed); wakes requests waiting for it.
    pub(super) fn admit(&self, key: &str, who: Option<TaskIdentity>) {
        let mut st = self.lock();
        if let Some(d) = st.task_dir_mut(key) {
            d.who = who;
            d.expecting = false;
        }
        drop(st);
        self.admitted.notify_all();
    }

    /// Refused accesses of the whole run so far, for the summary.
    pub(super) fn refused_accesses(&self) -> Vec<String> {
        let st = self.lock();
        let mut out = st.refused_log.clone();
        let mut active: Vec<(&String, &TaskDir)> = st
            .dirs
            .values()
            .filter(|d| !d.intruders.is_empty())
            .map(|d| (&d.key, d))
            .collect();
        active.sort_by_key(|(k, _)| *k);
        for (key, d) in active {
            out.extend(
                d.intruders
                    .lines()
                    .into_iter()
                    .map(|l| format!("task {key}: {l}")),
            );
        }
        out.extend(
            st.root_refused
                .lines()
                .into_iter()
                .map(|l| format!("capture root: {l}")),
        );
        out
    }

    /// Remove a task's directory and all its files from the filesystem. Later requests on its
    /// inodes (from a process that survived the task) fail with ENOENT/EIO.
    pub(super) fn take_task(&self, key: &str) -> Option<TakenTask> {
        let mut st = self.lock();
        let ino = st.by_key.remove(key)?;
        let dir = st.dirs.remove(&ino)?;
        if let Some(inputs) = dir.inputs_dir.and_then(|i| st.input_dirs.remove(&i)) {
            for input in inputs.entries.values() {
                st.inputs.remove(input);
            }
        }
        let mut dir = dir;
        let mut files = Vec::with_capacity(dir.entries.len());
        let mut orphans = Vec::new();
        // Moved out, not copied: a task may leave hundreds of thousands of names.
        for (name, fino) in std::mem::take(&mut dir.entries) {
            if let Some(node) = st.files.remove(&fino) {
                files.push((name, node));
            }
        }
        for fino in &dir.nodes {
            if let Some(node) = st.files.remove(fino) {
                orphans.push(*node);
            }
        }
        let intruders = dir.intruders.lines();
        for line in &intruders {
            tracing::warn!("task {key}: OUTPUT_DIR: {line} (not a process of this task)");
        }
        st.refused_log
            .extend(intruders.iter().map(|l| format!("task {key}: {l}")));
        let mut refusals = dir.refusals.into_vec();
        refusals.extend(
            intruders
                .into_iter()
                .map(|l| format!("OUTPUT_DIR: {l} (not a process of this task; EACCES)")),
        );
        // Wake requests that still wait for this task: they fail now.
        self.admitted.notify_all();
        Some(TakenTask {
            files,
            orphans,
            refusals,
            errors: dir.errors.into_vec(),
        })
    }

    pub(super) fn task_keys(&self) -> Vec<String> {
        self.lock().by_key.keys().cloned().collect()
    }

    fn attr_dir(&self, ino: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: DIR_MODE,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn attr_input(&self, ino: u64, node: &InputNode) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::RegularFile,
            perm: INPUT_MODE,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn attr_file(&self, ino: u64, node: &FileNode) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind: FileType::RegularFile,
            perm: FILE_MODE,
            nlink: u32::from(node.linked),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// Create an empty file `name` in task directory `dir`, staged in a new file under `<db>/tmp`.
    fn new_file(&self, st: &mut State, dir: u64, name: &str, opens: u32) -> Result<u64, Errno> {
        let ino = st.alloc_ino();
        let staged = self.staged_path(ino);
        let file = match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
        {
            Ok(f) => f,
            Err(e) => {
                if let Some(d) = st.dirs.get_mut(&dir) {
                    d.fail(format!(
                        "creating '{name}' failed: cannot create its staging file {}: {}",
                        staged.display(),
                        describe_io(&e)
                    ));
                }
                return Err(Errno::from(e));
            }
        };
        let now = SystemTime::now();
        st.files.insert(
            ino,
            Box::new(FileNode {
                ino,
                dir,
                linked: true,
                file: Some(file),
                size: 0,
                hasher: StreamingHash::new(),
                offloaded: false,
                hashed: 0,
                rehash: false,
                opens,
                atime: now,
                mtime: now,
                ctime: now,
            }),
        );
        if let Some(d) = st.dirs.get_mut(&dir) {
            d.entries.insert(name.to_string(), ino);
            d.nodes.insert(ino);
        }
        Ok(ino)
    }
}

impl State {
    /// The directory of the task with this key, while it exists.
    fn task_dir_mut(&mut self, key: &str) -> Option<&mut TaskDir> {
        let ino = *self.by_key.get(key)?;
        self.dirs.get_mut(&ino)
    }

    /// The task directory that `ino` is or lies in (None: the root, or nothing any more).
    fn task_of(&self, ino: u64) -> Option<u64> {
        if self.dirs.contains_key(&ino) {
            Some(ino)
        } else if let Some(n) = self.files.get(&ino) {
            Some(n.dir)
        } else if let Some(d) = self.input_dirs.get(&ino) {
            Some(d.task)
        } else {
            self.inputs.get(&ino).map(|n| n.task)
        }
    }

    /// Is `ino` a served input or the directory of them (where nothing may change)?
    fn is_input(&self, ino: u64) -> bool {
        self.input_dirs.contains_key(&ino) || self.inputs.contains_key(&ino)
    }

    fn alloc_ino(&mut self) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Unlink a file (its entry is already gone): drop the node itself unless a process holds
    /// it open.
    fn unlink_node(&mut self, ino: u64, shared: &Shared) {
        let Some(node) = self.files.get_mut(&ino) else {
            return;
        };
        node.linked = false;
        node.ctime = SystemTime::now();
        // The staging file goes now; an open descriptor keeps working on the unlinked inode.
        // A node opened but not yet read or written has no descriptor of grit's yet (it opens
        // the staging file at the first request): open it before the path goes, or that first
        // read or write would find nothing (`exec 3< f; rm f; cat <&3` failed with ENOENT).
        if node.opens > 0 {
            let _ = node.staging_file(shared);
        }
        let _ = std::fs::remove_file(shared.staged_path(ino));
        if node.opens == 0 {
            self.drop_node(ino);
        }
    }

    fn drop_node(&mut self, ino: u64) {
        if let Some(node) = self.files.remove(&ino)
            && let Some(d) = self.dirs.get_mut(&node.dir)
        {
            d.nodes.remove(&ino);
            d.used = d.used.saturating_sub(node.size);
        }
    }

    /// Account a size change of a file against its task's quota. Returns false (and records the
    /// refusal) when growing would exceed it.
    fn charge(&mut self, ino: u64, new_size: u64) -> bool {
        let Some(node) = self.files.get(&ino) else {
            return false;
        };
        let (old, dir) = (node.size, node.dir);
        let Some(d) = self.dirs.get_mut(&dir) else {
            return false;
        };
        let used = d.used.saturating_sub(old).saturating_add(new_size);
        if new_size > old
            && let Some(q) = d.quota
            && used > q
        {
            let name = d.name_of(ino);
            let msg = format!(
                "OUTPUT_DIR/{name}: refused a write beyond the task's output quota (max_output = {q} bytes) (ENOSPC)"
            );
            self.refuse(dir, msg);
            return false;
        }
        d.used = used;
        true
    }

    /// Refuse an operation that breaks an output rule (DESIGN §2.9) or the task's quota: the
    /// operation fails, and so does the task, as with the plain-directory capture, even when the
    /// script goes on.
    fn refuse(&mut self, dir: u64, msg: String) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            d.refusals.push(msg.clone());
            d.fail(msg);
        }
    }
}

impl TakenTask {
    /// Finalize every hash (re-reading the staging files that need it) and hand the files over.
    /// On failure, or when the task recorded errors, every staging file is deleted.
    pub(super) fn into_captured(
        self,
        key: &str,
        shared: &Shared,
    ) -> Result<Vec<CapturedFile>, Vec<String>> {
        let TakenTask {
            files,
            orphans,
            errors,
            ..
        } = self;
        // Their staging files were removed at unlink time.
        for node in orphans {
            if node.offloaded {
                shared.hasher.forget(node.ino);
            }
        }
        let mut errors = errors;
        let mut out = Vec::with_capacity(files.len());
        let mut staged = Vec::with_capacity(files.len());
        for (name, node) in files {
            staged.push(node.ino);
            if !errors.is_empty() {
                if node.offloaded {
                    shared.hasher.forget(node.ino);
                }
                continue;
            }
            match finalize(*node, shared) {
                Ok((hash, size, path)) => out.push(CapturedFile {
                    name,
                    hash,
                    size,
                    staged: path,
                }),
                Err(e) => errors.push(format!(
                    "task {key}: reading back '{name}' from staging failed: {}",
                    describe_io(&e)
                )),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            for ino in staged {
                let _ = std::fs::remove_file(shared.staged_path(ino));
            }
            Err(errors)
        }
    }

    /// Delete every staging file of the task.
    pub(super) fn delete(self, shared: &Shared) {
        for (_, node) in self.files {
            let _ = std::fs::remove_file(shared.staged_path(node.ino));
            if node.offloaded {
                shared.hasher.forget(node.ino);
            }
        }
        for node in self.orphans {
            if node.offloaded {
                shared.hasher.forget(node.ino);
            }
        }
        // Orphans' staging files are already gone; dropping closes their descriptors.
    }
}

/// Write `data` at `offset` into a staging file, in pieces of at most [`STAGE_PIECE`].
fn stage(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = offset;
    for piece in data.chunks(STAGE_PIECE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

fn finalize(node: FileNode, shared: &Shared) -> std::io::Result<(String, u64, PathBuf)> {
    let FileNode {
        ino,
        offloaded,
        file,
        size,
        hasher,
        hashed,
        rehash,
        ..
    } = node;
    let worker = &shared.hasher;
    let staged = shared.staged_path(ino);
    // A closed file is checked by path: a task may leave more files than are worth opening.
    let disk = match &file {
        Some(file) => file.metadata()?.len(),
        None => std::fs::symlink_metadata(&staged)?.len(),
    };
    if disk != size {
        return Err(std::io::Error::other(format!(
            "staging file is {disk} bytes, expected {size}"
        )));
    }
    let hash = if rehash || hashed != size {
        if offloaded {
            worker.forget(ino);
        }
        let mut file = match file {
            Some(file) => file,
            None => File::open(&staged)?,
        };
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n as u64;
        }
        if total != size {
            return Err(std::io::Error::other(format!(
                "read {total} bytes back, expected {size}"
            )));
        }
        hex::encode(h.finalize())
    } else if offloaded {
        worker
            .finish(ino)
            .ok_or_else(|| std::io::Error::other("the hash worker stopped"))?
    } else {
        match hasher {
            StreamingHash::Running(state) => hex::encode(state.finalize()),
            StreamingHash::Sealed(digest) => hex::encode(digest),
        }
    };
    Ok((hash, size, staged))
}

/// Check that `name` can be an output (resource) name: flat, non-empty, not hidden, UTF-8.
pub(super) fn check_name(name: &OsStr) -> Result<&str, &'static str> {
    let Some(s) = name.to_str() else {
        return Err("an output name must be valid UTF-8");
    };
    match invalid_name_reason(s) {
        Some(why) => Err(why),
        None => Ok(s),
    }
}

/// Render an I/O error for the task log, naming the errno (ENOSPC, EDQUOT, ...) explicitly.
pub(super) fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("{e} (ENOSPC)"),
        Some(libc::EDQUOT) => format!("{e} (EDQUOT)"),
        Some(libc::EFBIG) => format!("{e} (EFBIG)"),
        Some(libc::EIO) => format!("{e} (EIO)"),
        _ => e.to_string(),
    }
}

fn display(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

/// Locks the state and lets the request on inode `$ino` through [`CaptureFs::allow`], or replies
/// with its error and returns.
macro_rules! lock_allowed {
    ($fs:ident, $req:ident, $ino:expr, $operation:literal, $reply:ident) => {{
        let st = $fs.shared.lock();
        let dir = st.task_of($ino);
        match $fs.allow($req, st, dir, $operation) {
            Ok(st) => st,
            Err(e) => return $reply.error(e),
        }
    }};
}

/// Replies EROFS when `$ino` is a served input or their directory: inputs never change.
macro_rules! refuse_inputs {
    ($st:ident, $ino:expr, $reply:ident) => {
        if $st.is_input($ino) {
            return $reply.error(Errno::EROFS);
        }
    };
}

/// The filesystem handed to fuser; every method locks `Shared` once and replies.
pub(super) struct CaptureFs {
    pub(super) shared: std::sync::Arc<Shared>,
    /// Flags for opened files, settled in `init`; start with [`CaptureFs::new`].
    open_flags: FopenFlags,
}

impl CaptureFs {
    /// The filesystem before `init`: page-cache opens until the kernel's abilities are known.
    pub(super) fn new(shared: std::sync::Arc<Shared>) -> CaptureFs {
        CaptureFs {
            shared,
            open_flags: OPEN_FLAGS,
        }
    }

    /// Lets the request through when its caller may use task directory `dir` (see `access`);
    /// else records the refusal and returns EACCES. A `dir` of `None` (the root, or a task that
    /// is gone) passes: the operation itself then fails as it should.
    fn allow<'a>(
        &'a self,
        req: &Request,
        mut st: MutexGuard<'a, State>,
        dir: Option<u64>,
        operation: &'static str,
    ) -> Result<MutexGuard<'a, State>, Errno> {
        let Some(dir) = dir else {
            return Ok(st);
        };
        let pid = req.pid();
        let deadline = Instant::now() + ADMIT_WAIT;
        loop {
            let Some(d) = st.dirs.get(&dir) else {
                return Ok(st);
            };
            // The same question as `belongs || is_grit`, cheapest answers first: the in-memory
            // ones, then one `/proc` lookup for the task's own processes, then grit's threads.
            if self.shared.is_grit_or_helper_known(pid)
                || d.who.is_some_and(|who| access::belongs(who, pid))
                || access::is_grit(pid)
            {
                return Ok(st);
            }
            let now = Instant::now();
            if d.who.is_some() || !d.expecting || now >= deadline {
                break;
            }
            st = match self.shared.admitted.wait_timeout(st, deadline - now) {
                Ok((st, _)) => st,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        if let Some(d) = st.dirs.get_mut(&dir) {
            d.intruders.record(pid, req.uid(), operation);
        }
        Err(Errno::EACCES)
    }

    /// Validate a new name in a task directory; records the refusal and returns the errno to
    /// reply with when it is not acceptable.
    fn checked_name<'n>(
        &self,
        st: &mut State,
        dir: u64,
        name: &'n OsStr,
        what: &str,
    ) -> Result<&'n str, Errno> {
        match check_name(name) {
            Ok(s) => Ok(s),
            Err(why) => {
                st.refuse(
                    dir,
                    format!(
                        "OUTPUT_DIR/{}: {why}; {what} it was refused (EINVAL)",
                        display(name)
                    ),
                );
                Err(Errno::EINVAL)
            }
        }
    }

    fn set_size(&self, st: &mut State, ino: u64, size: u64) -> Result<(), Errno> {
        let Some(node) = st.files.get(&ino) else {
            return Err(Errno::EIO);
        };
        if node.size == size {
            return Ok(());
        }
        if !st.charge(ino, size) {
            return Err(Errno::ENOSPC);
        }
        let Some(node) = st.files.get_mut(&ino) else {
            return Err(Errno::EIO);
        };
        if let Err(e) = node
            .staging_file(&self.shared)
            .and_then(|file| file.set_len(size))
        {
            let dir = node.dir;
            if let Some(d) = st.dirs.get_mut(&dir) {
                let msg = format!(
                    "truncating '{}' failed: {}",
                    d.name_of(ino),
                    describe_io(&e)
                );
                d.fail(msg);
            }
            return Err(Errno::from(e));
        }
        if node.offloaded {
            self.shared.hasher.forget(ino);
            node.offloaded = false;
        }
        if size == 0 {
            // `> file` on an existing file: start the streaming hash over.
            node.hasher = StreamingHash::new();
            node.hashed = 0;
            node.rehash = false;
        } else {
            // Shrinking cuts into the hashed prefix; growing adds a hole that is cheaper to
            // re-read at the end than to hash now.
            node.rehash = true;
        }
        node.size = size;
        let now = SystemTime::now();
        node.mtime = now;
        node.ctime = now;
        Ok(())
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for CaptureFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Err carries the nearest accepted value; use it rather than fail the mount.
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        // Direct I/O only where shared mappings of such files still work (kernel 6.6 and
        // later); older kernels keep the page-cache path, slower but complete.
        if config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok()
        {
            self.open_flags = OPEN_FLAGS | DIRECT_IO;
        } else {
            tracing::debug!("no FUSE_DIRECT_IO_ALLOW_MMAP: outputs go through the page cache");
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT {
            let st = self.shared.lock();
            let name = name.to_str().unwrap_or_default();
            // `<key>` is a task's OUTPUT_DIR, `<key>.in` the directory serving its inputs.
            let (task, found) = match st.by_key.get(name) {
                Some(&ino) => (Some(ino), Some(ino)),
                None => {
                    let task = name
                        .strip_suffix(INPUTS_SUFFIX)
                        .and_then(|k| st.by_key.get(k))
                        .copied();
                    (task, task.and_then(|t| st.dirs.get(&t)?.inputs_dir))
                }
            };
            match (found, self.allow(req, st, task, "lookup")) {
                (Some(ino), Ok(_)) => reply.entry(&TTL, &self.shared.attr_dir(ino), Generation(0)),
                (None, _) => reply.error(Errno::ENOENT),
                (_, Err(e)) => reply.error(e),
            }
            return;
        }
        let st = lock_allowed!(self, req, parent.0, "lookup", reply);
        if let Some(inputs) = st.input_dirs.get(&parent.0) {
            let found = name
                .to_str()
                .and_then(|n| inputs.entries.get(n))
                .and_then(|ino| st.inputs.get(ino).map(|node| (*ino, node)));
            return match found {
                Some((ino, node)) => {
                    reply.entry(&TTL, &self.shared.attr_input(ino, node), Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            };
        }
        let Some(dir) = st.dirs.get(&parent.0) else {
            let err = if st.files.contains_key(&parent.0) {
                Errno::ENOTDIR
            } else {
                Errno::ENOENT
            };
            return reply.error(err);
        };
        let found = name
            .to_str()
            .and_then(|n| dir.entries.get(n))
            .and_then(|ino| st.files.get(ino).map(|node| (*ino, node)));
        match found {
            Some((ino, node)) => {
                reply.entry(&TTL, &self.shared.attr_file(ino, node), Generation(0))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // access(2) and chdir(2): the same check as every other request (modes are not
        // enforced here), and `test -w` on an input says what a write would meet.
        let st = lock_allowed!(self, req, ino.0, "access", reply);
        if mask.contains(fuser::AccessFlags::W_OK) {
            refuse_inputs!(st, ino.0, reply);
        }
        reply.ok();
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = lock_allowed!(self, req, ino.0, "getattr", reply);
        if ino.0 == ROOT || st.dirs.contains_key(&ino.0) || st.input_dirs.contains_key(&ino.0) {
            reply.attr(&TTL, &self.shared.attr_dir(ino.0));
        } else if let Some(node) = st.files.get(&ino.0) {
            reply.attr(&TTL, &self.shared.attr_file(ino.0, node));
        } else if let Some(node) = st.inputs.get(&ino.0) {
            reply.attr(&TTL, &self.shared.attr_input(ino.0, node));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = lock_allowed!(self, req, ino.0, "setattr", reply);
        refuse_inputs!(st, ino.0, reply);
        if ino.0 == ROOT || st.dirs.contains_key(&ino.0) {
            // chmod/touch on the directory: harmless, nothing to keep.
            return reply.attr(&TTL, &self.shared.attr_dir(ino.0));
        }
        if !st.files.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        if let Some(size) = size
            && let Err(e) = self.set_size(&mut st, ino.0, size)
        {
            return reply.error(e);
        }
        // Modes and owners are not part of a resource; accept them so `chmod +x` does not fail.
        let Some(node) = st.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(t) = atime {
            node.atime = time_of(t);
        }
        if let Some(t) = mtime {
            node.mtime = time_of(t);
        }
        reply.attr(&TTL, &self.shared.attr_file(ino.0, node));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = lock_allowed!(self, req, parent.0, "mknod", reply);
        refuse_inputs!(st, parent.0, reply);
        if !st.dirs.contains_key(&parent.0) {
            return reply.error(Errno::EPERM);
        }
        if mode & libc::S_IFMT != libc::S_IFREG {
            st.refuse(
                parent.0,
                format!(
                    "OUTPUT_DIR/{}: refused a special file (mknod); outputs must be regular files (EPERM)",
                    display(name)
                ),
            );
            return reply.error(Errno::EPERM);
        }
        let name = match self.checked_name(&mut st, parent.0, name, "creating") {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if st
            .dirs
            .get(&parent.0)
            .is_some_and(|d| d.entries.contains_key(name))
        {
            return reply.error(Errno::EEXIST);
        }
        match self.shared.new_file(&mut st, parent.0, name, 0) {
            Ok(ino) => match st.files.get(&ino) {
                Some(node) => reply.entry(&TTL, &self.shared.attr_file(ino, node), Generation(0)),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = lock_allowed!(self, req, parent.0, "mkdir", reply);
        refuse_inputs!(st, parent.0, reply);
        st.refuse(
            parent.0,
            format!(
                "OUTPUT_DIR/{}: refused a directory (mkdir); outputs must be flat regular files (EPERM)",
                display(name)
            ),
        );
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = lock_allowed!(self, req, parent.0, "unlink", reply);
        refuse_inputs!(st, parent.0, reply);
        let Some(dir) = st.dirs.get_mut(&parent.0) else {
            return reply.error(if parent.0 == ROOT {
                Errno::EPERM
            } else {
                Errno::ENOENT
            });
        };
        match name.to_str().and_then(|n| dir.entries.remove(n)) {
            Some(ino) => {
                st.unlink_node(ino, &self.shared);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let st = lock_allowed!(self, req, parent.0, "rmdir", reply);
        refuse_inputs!(st, parent.0, reply);
        match st.dirs.get(&parent.0) {
            Some(d) if name.to_str().is_some_and(|n| d.entries.contains_key(n)) => {
                reply.error(Errno::ENOTDIR)
            }
            Some(_) => reply.error(Errno::ENOENT),
            // Task directories belong to grit, not to the script.
            None => reply.error(Errno::EPERM),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = lock_allowed!(self, req, parent.0, "symlink", reply);
        refuse_inputs!(st, parent.0, reply);
        st.refuse(
            parent.0,
            format!(
                "OUTPUT_DIR/{}: refused a symbolic link; outputs must be regular files (copy the content instead) (EPERM)",
                display(link_name)
            ),
        );
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // Renames never cross task directories (EXDEV below), so the source's check covers both.
        let mut st = lock_allowed!(self, req, parent.0, "rename", reply);
        refuse_inputs!(st, parent.0, reply);
        if !st.dirs.contains_key(&parent.0) || !st.dirs.contains_key(&newparent.0) {
            return reply.error(Errno::EPERM);
        }
        if parent != newparent {
            return reply.error(Errno::EXDEV);
        }
        let dir_ino = parent.0;
        let Some(old) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let new = match self.checked_name(&mut st, dir_ino, newname, "renaming to") {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let Some(dir) = st.dirs.get_mut(&dir_ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(&src) = dir.entries.get(old) else {
            return reply.error(Errno::ENOENT);
        };
        let dst = dir.entries.get(&new).copied();
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let Some(dst) = dst else {
                return reply.error(Errno::ENOENT);
            };
            dir.entries.insert(old.to_string(), dst);
            dir.entries.insert(new, src);
            return reply.ok();
        }
        if dst == Some(src) {
            return reply.ok();
        }
        if dst.is_some() && flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return reply.error(Errno::EEXIST);
        }
        dir.entries.remove(old);
        dir.entries.insert(new, src);
        if let Some(dst) = dst {
            st.unlink_node(dst, &self.shared);
        }
        if let Some(n) = st.files.get_mut(&src) {
            n.ctime = SystemTime::now();
        }
        reply.ok();
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = lock_allowed!(self, req, newparent.0, "link", reply);
        refuse_inputs!(st, newparent.0, reply);
        st.refuse(
            newparent.0,
            format!(
                "OUTPUT_DIR/{}: refused a hard link; outputs must be files written in OUTPUT_DIR (copy the content instead) (EPERM)",
                display(newname)
            ),
        );
        reply.error(Errno::EPERM);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = lock_allowed!(self, req, ino.0, "open", reply);
        if let Some(input) = st.inputs.get_mut(&ino.0) {
            if flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                return reply.error(Errno::EROFS);
            }
            if input.file.is_none() {
                match File::open(&input.path) {
                    Ok(file) => input.file = Some(file),
                    Err(e) => return reply.error(Errno::from(e)),
                }
            }
            input.opens += 1;
            // The bytes never change: the kernel may keep what it cached across opens. A
            // read-only file has nothing to flush, so closing it costs no round trip.
            return reply.opened(
                FileHandle(ino.0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            );
        }
        match st.files.get_mut(&ino.0) {
            Some(node) => {
                node.opens += 1;
                reply.opened(FileHandle(ino.0), self.open_flags);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.shared.lock();
        let State {
            files,
            read_buf,
            inputs,
            ..
        } = &mut *st;
        let (file, file_size) = match (files.get_mut(&ino.0), inputs.get(&ino.0)) {
            (Some(node), _) => {
                let size = node.size;
                match node.staging_file(&self.shared) {
                    Ok(file) => (file, size),
                    Err(e) => return reply.error(Errno::from(e)),
                }
            }
            (
                None,
                Some(InputNode {
                    file: Some(file),
                    size,
                    ..
                }),
            ) => (file, *size),
            _ => return reply.error(Errno::EIO),
        };
        let want = (size as u64).min(file_size.saturating_sub(offset)) as usize;
        if read_buf.len() < want {
            read_buf.resize(want, 0);
        }
        let buf = &mut read_buf[..want];
        let mut done = 0;
        while done < want {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(Errno::from(e)),
            }
        }
        reply.data(&buf[..done]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.shared.lock();
        let len = data.len() as u64;
        let end = offset.saturating_add(len);
        let Some(size) = st.files.get(&ino.0).map(|n| n.size) else {
            // The task was finished or discarded: a surviving process must not resurrect it.
            return reply.error(Errno::EIO);
        };
        if end > size && !st.charge(ino.0, end) {
            return reply.error(Errno::ENOSPC);
        }
        let State { files, dirs, .. } = &mut *st;
        let Some(node) = files.get_mut(&ino.0) else {
            return reply.error(Errno::EIO);
        };
        if let Err(e) = node
            .staging_file(&self.shared)
            .and_then(|file| stage(file, data, offset))
        {
            // Part of the data may be on disk; the task fails anyway, the hash must not be trusted.
            node.rehash = true;
            if node.offloaded {
                self.shared.hasher.forget(node.ino);
                node.offloaded = false;
            }
            if let Some(d) = dirs.get_mut(&node.dir) {
                let msg = format!(
                    "writing '{}' failed: {} in the staging area {}",
                    d.name_of(node.ino),
                    describe_io(&e),
                    self.shared.staging.display()
                );
                d.fail(msg);
            }
            return reply.error(Errno::from(e));
        }
        if let StreamingHash::Sealed(_) = node.hasher
            && !node.offloaded
            && node.hashed == 0
            && offset == 0
        {
            // An empty file opened again: nothing to re-read, the hash starts here.
            node.hasher = StreamingHash::new();
        }
        let streaming = matches!(node.hasher, StreamingHash::Running(_)) || node.offloaded;
        if streaming && !node.rehash && offset == node.hashed && node.hashed == node.size {
            // The fast path: an in-order append extends the streaming hash, on the hash worker
            // once the writes are large.
            let hashed = match &mut node.hasher {
                _ if node.offloaded => self.shared.hasher.update(node.ino, data),
                StreamingHash::Running(state) if data.len() >= OFFLOAD_MIN => {
                    let state = std::mem::take(&mut **state);
                    node.offloaded = self.shared.hasher.start(node.ino, state);
                    node.offloaded && self.shared.hasher.update(node.ino, data)
                }
                StreamingHash::Running(state) => {
                    state.update(data);
                    true
                }
                // Not streaming (checked above).
                StreamingHash::Sealed(_) => false,
            };
            if hashed {
                node.hashed = end;
            } else {
                // The worker is gone (only at unmount): re-read at the end instead.
                node.rehash = true;
            }
        } else {
            node.rehash = true;
            if node.offloaded {
                self.shared.hasher.forget(node.ino);
                node.offloaded = false;
            }
        }
        node.size = node.size.max(end);
        node.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.shared.lock();
        if let Some(input) = st.inputs.get_mut(&ino.0) {
            input.opens = input.opens.saturating_sub(1);
            if input.opens == 0 {
                input.file = None;
            }
        }
        if let Some(node) = st.files.get_mut(&ino.0) {
            node.opens = node.opens.saturating_sub(1);
            if node.opens == 0 {
                if !node.linked {
                    st.drop_node(ino.0);
                } else {
                    // Closed by every process: give the descriptor back (reopened on demand),
                    // and keep the digest instead of the hash state.
                    node.file = None;
                    if !node.offloaded {
                        node.hasher.seal();
                    }
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Outputs only count once the task succeeds and the store publishes them; durability of
        // the staging copy before that buys nothing, so fsync only confirms the file exists.
        let st = self.shared.lock();
        if st.files.contains_key(&ino.0) || st.inputs.contains_key(&ino.0) {
            reply.ok();
        } else {
            reply.error(Errno::EIO);
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 == ROOT && !self.shared.is_grit(req.pid()) {
            // The root lists every task of the run: grit's alone.
            self.shared
                .lock()
                .root_refused
                .record(req.pid(), req.uid(), "readdir");
            return reply.error(Errno::EACCES);
        }
        let mut st = lock_allowed!(self, req, ino.0, "readdir", reply);
        let State {
            by_key,
            dirs,
            input_dirs,
            listings,
            ..
        } = &mut *st;
        let names = if ino.0 == ROOT {
            None
        } else if let Some(d) = dirs.get(&ino.0) {
            Some(&d.entries)
        } else if let Some(d) = input_dirs.get(&ino.0) {
            Some(&d.entries)
        } else {
            return reply.error(Errno::ENOENT);
        };
        let (Some(names), Some(listing)) = (names, listings.get_mut(&fh.0)) else {
            // The root (grit's alone, never changed while listed) or a handle this filesystem
            // did not open: offsets are positions.
            let mut entries: Vec<(u64, FileType, &str)> = vec![
                (ino.0, FileType::Directory, "."),
                (ROOT, FileType::Directory, ".."),
            ];
            match names {
                Some(names) => entries.extend(
                    names
                        .iter()
                        .map(|(n, i)| (*i, FileType::RegularFile, n.as_str())),
                ),
                None => entries.extend(
                    by_key
                        .iter()
                        .map(|(k, i)| (*i, FileType::Directory, k.as_str())),
                ),
            }
            for (i, (e_ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(e_ino), (i + 1) as u64, kind, name) {
                    break;
                }
            }
            return reply.ok();
        };
        // An offset from an older reply (seekdir) is not kept: the listing starts again
        // rather than guess.
        let resume = listing
            .latest
            .iter()
            .find(|(o, _)| offset != 0 && *o == offset)
            .map(|(_, position)| position.clone());
        let dots = [
            (ListingPosition::Dot, ino.0, "."),
            (ListingPosition::DotDot, ROOT, ".."),
        ];
        let skip_dots = match &resume {
            None => 0,
            Some(ListingPosition::Dot) => 1,
            Some(_) => 2,
        };
        let after = match &resume {
            Some(ListingPosition::Name(name)) => std::ops::Bound::Excluded(name.as_str()),
            _ => std::ops::Bound::Unbounded,
        };
        listing.latest.clear();
        let mut full = false;
        for (position, e_ino, name) in dots.into_iter().skip(skip_dots) {
            listing.next_offset += 1;
            if reply.add(
                INodeNo(e_ino),
                listing.next_offset,
                FileType::Directory,
                name,
            ) {
                full = true;
                break;
            }
            listing.latest.push((listing.next_offset, position));
        }
        if !full {
            for (name, e_ino) in names.range::<str, _>((after, std::ops::Bound::Unbounded)) {
                listing.next_offset += 1;
                if reply.add(
                    INodeNo(*e_ino),
                    listing.next_offset,
                    FileType::RegularFile,
                    name,
                ) {
                    break;
                }
                listing
                    .latest
                    .push((listing.next_offset, ListingPosition::Name(name.clone())));
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.shared.lock();
        let handle = st.next_listing;
        st.next_listing += 1;
        st.listings.insert(handle, Listing::default());
        reply.opened(FileHandle(handle), FopenFlags::empty());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().listings.remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.shared.staging) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = lock_allowed!(self, req, parent.0, "create", reply);
        refuse_inputs!(st, parent.0, reply);
        if !st.dirs.contains_key(&parent.0) {
            // Files directly in the mount root, or in a task directory that is gone.
            return reply.error(if parent.0 == ROOT {
                Errno::EPERM
            } else {
                Errno::ENOENT
            });
        }
        let name = match self.checked_name(&mut st, parent.0, name, "creating") {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let existing = st
            .dirs
            .get(&parent.0)
            .and_then(|d| d.entries.get(name).copied());
        let ino = match existing {
            Some(_) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Some(ino) => {
                if flags & libc::O_TRUNC != 0
                    && let Err(e) = self.set_size(&mut st, ino, 0)
                {
                    return reply.error(e);
                }
                if let Some(n) = st.files.get_mut(&ino) {
                    n.opens += 1;
                }
                ino
            }
            None => match self.shared.new_file(&mut st, parent.0, name, 1) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
        };
        match st.files.get(&ino) {
            Some(node) => reply.created(
                &TTL,
                &self.shared.attr_file(ino, node),
                Generation(0),
                FileHandle(ino),
                self.open_flags,
            ),
            None => reply.error(Errno::EIO),
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::check_name;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names_are_flat_visible_utf8() {
        assert_eq!(check_name(OsStr::new("item_1")), Ok("item_1"));
        assert_eq!(check_name(OsStr::new("a.b")), Ok("a.b"));
        assert!(check_name(OsStr::new("")).is_err());
        assert!(check_name(OsStr::new(".hidden")).is_err());
        assert!(check_name(OsStr::new("a/b")).is_err());
        assert!(check_name(OsStr::from_bytes(b"\xff")).is_err());
    }
}
