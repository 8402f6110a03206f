//! The task's private filesystem view as flat lists of mount operations replayed with raw system
//! calls: the [`template`] the zygote builds once (the static part every task shares a copy
//! of), each task's own [`plan`] on top of it, and the landlock allow-list that mirrors both.
//!
//! Every path keeps its host spelling inside the sandbox, so the environment the executor
//! computes (`INPUT_FILE`, `OUTPUT_DIR`, `TMPDIR`, the working directory) stays valid. The root
//! is a tmpfs holding only mountpoints; the zygote assembles it at [`STAGING`] and pivots to it.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::SandboxError;

/// Where the zygote assembles the template's root before it pivots there. It must exist on every
/// Linux host and must never be the ancestor of a bind source (sources are opened by their host
/// paths while the staging tmpfs covers this directory). The host's procfs is never a source, so
/// it qualifies (the zygote copies it before covering it, for the template's `/proc`).
pub(crate) const STAGING: &str = "/proc";
/// [`STAGING`] for the raw system calls of the task's init.
pub(crate) const STAGING_C: &std::ffi::CStr = c"/proc";

/// Top-level host entries that make up the read-only system part of the new root. Symlinks
/// (merged-/usr distributions) are recreated as symlinks; directories are bound read-only.
pub(crate) const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
    "/nix/store",
    "/run/current-system",
];

/// Device nodes of the minimal /dev, bound from the host.
pub(crate) const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Files and directories that only root may read. Uid 0 inside the sandbox owns them even without
/// capabilities, so when grit runs as root they are covered (see [`HostLayout::masks`]).
pub(crate) const ROOT_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/credstore",
    "/etc/credstore.encrypted",
    "/etc/ssh",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
];

/// System directories searched, as root, for every other entry only root may read: a file that
/// others may not read, a directory they may not enter (a configuration's password, the munge
/// key, a database's access rules). Secrets live here by convention; `/usr` and `/nix/store` are
/// readable by everyone and too large to search at each run's start.
pub(crate) const SEARCHED_FOR_SECRETS: &[&str] = &["/etc", "/opt"];
/// Most entries [`SEARCHED_FOR_SECRETS`] looks at. `/etc` holds a few thousand.
const SEARCH_BUDGET: usize = 200_000;
/// Longest the search may take (this machine's `/etc`: about 5 ms).
const SEARCH_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// Most root-only entries masked beyond [`ROOT_SECRETS`]: every mask is a mount that the zygote
/// checks before each task, so a host with thousands of them is told to run as another user
/// instead.
const MAX_FOUND_MASKS: usize = 64;

/// One step of building a mount tree. Template steps use paths prefixed with [`STAGING`]; a
/// task's steps use the paths the task sees (it starts inside a copy of the template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountOp {
    /// `mkdir`, where an existing entry is fine.
    Mkdir(CString),
    /// Create an empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// Recursive bind of a host path, then recursively read-only, nosuid and nodev. In a task's
    /// plan the zygote turns it into an [`MountOp::Attach`] of a copy made in the host view.
    BindRo {
        src: CString,
        dst: CString,
    },
    /// Recursive bind of a host path that stays writable (turned into an attach likewise).
    BindRw {
        src: CString,
        dst: CString,
    },
    /// Plain bind of a device node (no nodev), by a path the building process sees.
    BindDev {
        src: CString,
        dst: CString,
    },
    /// `move_mount` of a detached tree (an `open_tree` copy) the process holds as `fd`.
    Attach {
        fd: std::os::fd::RawFd,
        dst: CString,
    },
    Tmpfs {
        dst: CString,
        flags: libc::c_ulong,
        data: CString,
    },
    Proc {
        dst: CString,
    },
    /// Make one mount (not its children) read-only once everything under it is in place.
    SetReadOnly(CString),
    /// An overlay of a writable tmpfs directory over a read-only image (`rootfs.rs`).
    Overlay {
        lower: CString,
        upper: CString,
        work: CString,
        dst: CString,
    },
    /// Make `dst` the root and detach the old one.
    PivotRoot(CString),
}

/// What a landlock rule grants beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Read, list and execute.
    Read,
    /// Everything.
    Write,
    /// Read, write, truncate and ioctl on a device node.
    Device,
}

/// A system entry of the host, read once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SystemEntry {
    Dir(PathBuf),
    Symlink { path: PathBuf, target: PathBuf },
}

/// What the host looks like, gathered once: the system entries, the device nodes and (as root)
/// the root-only files to cover.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostLayout {
    pub system: Vec<SystemEntry>,
    pub dev_nodes: Vec<PathBuf>,
    /// Existing root-only paths and whether each is a directory; empty when not root.
    pub masks: Vec<(PathBuf, bool)>,
    /// Why some root-only paths stay readable to a task run by root, when some do.
    pub unmasked: Option<String>,
}

impl HostLayout {
    /// Reads the host. `as_root` adds the root-only masks.
    pub(crate) fn read(as_root: bool) -> Self {
        let mut system = Vec::new();
        for p in SYSTEM_PATHS {
            let path = PathBuf::from(p);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(&path) {
                    system.push(SystemEntry::Symlink { path, target });
                }
            } else if meta.is_dir() {
                system.push(SystemEntry::Dir(path));
            }
        }
        let dev_nodes = DEV_NODES
            .iter()
            .map(|n| Path::new("/dev").join(n))
            .filter(|p| p.exists())
            .collect();
        let mut masks = Vec::new();
        let mut unmasked = None;
        if as_root {
            for p in ROOT_SECRETS {
                if let Ok(meta) = std::fs::metadata(p) {
                    masks.push((PathBuf::from(p), meta.is_dir()));
                }
            }
            let roots: Vec<&Path> = SEARCHED_FOR_SECRETS.iter().map(Path::new).collect();
            unmasked = add_root_only(&mut masks, &roots, SEARCH_BUDGET);
        }
        HostLayout {
            system,
            dev_nodes,
            masks,
            unmasked,
        }
    }
}

/// Adds to `masks` (the named secrets) what [`root_only_entries`] finds under `roots`, up to
/// [`MAX_FOUND_MASKS`] of them, looking at no more than `budget` entries; says what stays
/// readable, if anything does.
fn add_root_only(
    masks: &mut Vec<(PathBuf, bool)>,
    roots: &[&Path],
    mut budget: usize,
) -> Option<String> {
    let mut found = Vec::new();
    let deadline = std::time::Instant::now() + SEARCH_TIME;
    let mut complete = true;
    for root in roots {
        complete &= root_only_entries(root, &mut budget, deadline, &mut found);
    }
    let found: Vec<_> = outermost(found)
        .into_iter()
        .filter(|(p, _)| !covered(masks, p))
        .collect();
    let over = found.len().saturating_sub(MAX_FOUND_MASKS);
    masks.extend(found.into_iter().take(MAX_FOUND_MASKS));
    *masks = outermost(std::mem::take(masks));
    let searched = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    if over > 0 {
        Some(format!(
            "{over} more files or directories under {searched} that only root may read stay \
             readable to tasks (at most {MAX_FOUND_MASKS} are hidden): run pipelines as a \
             dedicated user, not as root"
        ))
    } else if !complete {
        Some(format!(
            "{searched} hold too many entries to search them all in time; files there that \
             only root may read can stay readable to tasks: run pipelines as a dedicated user, \
             not as root"
        ))
    } else {
        None
    }
}

/// Adds to `found` the entries under `dir` that only their owner or group may read (a regular
/// file others may not read, a directory others may not enter), without looking inside the
/// directories it adds, following symlinks or leaving `dir`'s filesystem (an NFS or autofs
/// mount there could take long to answer). Looks at no more than `budget` entries, until
/// `deadline`; false when it stopped before looking at everything.
///
/// A task run by root runs as root's own uid without capabilities: it reads what root owns and
/// nothing else. Hiding every entry others cannot read leaves it what any user can read.
fn root_only_entries(
    dir: &Path,
    budget: &mut usize,
    deadline: std::time::Instant,
    found: &mut Vec<(PathBuf, bool)>,
) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return true;
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if *budget == 0 || std::time::Instant::now() > deadline {
                return false;
            }
            *budget -= 1;
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let others = meta.permissions().mode() & 0o007;
            if meta.is_dir() {
                if others & 0o001 == 0 {
                    found.push((path, true));
                } else if meta.dev() == device {
                    pending.push(path);
                }
            } else if meta.is_file() && others & 0o004 == 0 {
                found.push((path, false));
            }
        }
    }
    true
}

/// Whether `path` is one of `masks` or lies under one of its directories.
fn covered(masks: &[(PathBuf, bool)], path: &Path) -> bool {
    masks
        .iter()
        .any(|(m, is_dir)| m == path || (*is_dir && path.starts_with(m)))
}

/// `masks` in path order without those under another masked directory: a mask inside an empty
/// tmpfs would have nothing to cover.
fn outermost(mut masks: Vec<(PathBuf, bool)>) -> Vec<(PathBuf, bool)> {
    masks.sort();
    masks.dedup_by(|a, b| a.0 == b.0);
    let mut kept: Vec<(PathBuf, bool)> = Vec::with_capacity(masks.len());
    for (path, is_dir) in masks {
        if !covered(&kept, &path) {
            kept.push((path, is_dir));
        }
    }
    kept
}

/// The host paths of one task, as handed over by the executor.
#[derive(Debug, Clone)]
pub(crate) struct TaskPaths<'a> {
    pub cwd: &'a Path,
    pub input_file: Option<&'a Path>,
    pub input_dir: Option<&'a Path>,
    pub output_dir: &'a Path,
    pub scratch_dir: &'a Path,
    pub store_dir: &'a Path,
    pub read_only: &'a [PathBuf],
    pub read_write: &'a [PathBuf],
    /// Size cap of the private /tmp, in bytes.
    pub tmp_size: Option<u64>,
    /// The image's root filesystem, which replaces the host's system directories as `/`
    /// (see `rootfs.rs`).
    pub image: Option<&'a Path>,
}

/// The result of planning: mount operations in order, and the landlock rules on host paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub ops: Vec<MountOp>,
    pub grants: Vec<(PathBuf, Grant)>,
}

/// What goes at one target path.
#[derive(Debug, Clone)]
pub(super) enum Mount {
    Symlink(PathBuf),
    BindRo(PathBuf),
    BindRoFile(PathBuf),
    /// /dev/null over a root-only file: reads find it empty, and the landlock rule on its
    /// directory allows no write, so a plain bind (one system call) is enough.
    MaskFile,
    BindRw(PathBuf),
    BindDev(PathBuf),
    /// An empty read-only directory over something root-only.
    MaskDir,
    /// A writable tmpfs that becomes read-only at the end (the hidden store).
    HideDir,
    PrivateTmp,
    Proc,
}

/// Checks that a path from the request or the policy is usable as a mount source and target.
pub(super) fn check_path(path: &Path, what: &'static str) -> Result<(), SandboxError> {
    check_spelling(path, what)?;
    if let Err(e) = std::fs::metadata(path) {
        return Err(SandboxError::BadPath {
            what,
            path: path.to_path_buf(),
            reason: match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".into(),
                _ => e.to_string(),
            },
        });
    }
    Ok(())
}

/// [`check_path`] without looking the path up: for `OUTPUT_DIR`, which may be a directory of
/// grit's own FUSE mount. Planning runs in the zygote, which could look it up safely, but the
/// copy of the tree (`open_tree`) reports a missing directory just as well.
pub(super) fn check_spelling(path: &Path, what: &'static str) -> Result<(), SandboxError> {
    let bad = |reason: &str| SandboxError::BadPath {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if !path.is_absolute() {
        return Err(bad("must be absolute"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("must not contain `.` or `..`"));
    }
    if path.parent().is_none() {
        return Err(bad("cannot be `/`: that would expose the whole host"));
    }
    if path.starts_with(STAGING) {
        return Err(bad("cannot be under /proc: the task gets its own /proc"));
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    Ok(())
}

fn staged(path: &Path) -> CString {
    let mut bytes = STAGING.as_bytes().to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    // check_path rejected NUL bytes and the constants have none, so this cannot fail; an empty
    // string would only make the child's syscall fail with a message, never panic.
    CString::new(bytes).unwrap_or_default()
}

pub(super) fn host(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

pub(super) fn depth(path: &Path) -> usize {
    path.components().count()
}

/// The static part of every task's tree, built once by the zygote at [`STAGING`] before it
/// pivots there: read-only binds of the system directories, the device nodes and the empty
/// mountpoints `/tmp` and `/proc` (the zygote attaches a copy of
/// the host's procfs there, without which the kernel refuses a task its fresh proc). The root
/// stays writable in the template: each task creates the few top-level mountpoints it needs and
/// then makes its own copy of the root read-only.
pub(crate) fn template(layout: &HostLayout) -> Vec<MountOp> {
    let mut targets: Vec<(PathBuf, Mount)> = Vec::new();
    for entry in &layout.system {
        match entry {
            SystemEntry::Dir(p) => targets.push((p.clone(), Mount::BindRo(p.clone()))),
            SystemEntry::Symlink { path, target } => {
                targets.push((path.clone(), Mount::Symlink(target.clone())));
            }
        }
    }
    for node in &layout.dev_nodes {
        targets.push((node.clone(), Mount::BindDev(node.clone())));
    }
    for (link, target) in DEV_LINKS {
        targets.push((PathBuf::from(link), Mount::Symlink(PathBuf::from(target))));
    }
    // The masks over root-only files are not part of it: the zygote mounts them after the
    // pivot ([`masks`]), one at a time, passing over a file gone meanwhile. The search found
    // every root-only file, and some live for a moment (`/etc/gshadow+` while `groupadd`
    // runs): made here, a mountpoint for one that vanished failed the whole template.
    targets.sort_by_key(|(p, _)| depth(p));
    let mut ops = vec![MountOp::Tmpfs {
        dst: CString::new(STAGING).unwrap_or_default(),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: CString::new("mode=0755,size=1m").unwrap_or_default(),
    }];
    let mut made = HashSet::new();
    for (target, mount) in targets {
        for a in target
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
        {
            if made.insert(a.to_path_buf()) {
                ops.push(MountOp::Mkdir(staged(a)));
            }
        }
        emit(&mut ops, &mut made, &target, mount, staged(&target), None);
    }
    for dir in ["/tmp", "/proc"] {
        ops.push(MountOp::Mkdir(staged(Path::new(dir))));
    }
    ops
}

/// The host's layout and what the template derives from it, computed once per zygote for the
/// planning of every task.
#[derive(Debug)]
pub(crate) struct Template {
    pub layout: HostLayout,
    /// See [`template_entries`].
    entries: HashSet<PathBuf>,
}

impl Template {
    pub(crate) fn new(layout: HostLayout) -> Template {
        let entries = template_entries(&layout);
        Template { layout, entries }
    }
}

/// Every entry the template puts in its tree outside its mounts: the directories it creates in
/// its root tmpfs, the system mounts and symlinks, the /dev entries. A task path beneath one of
/// these but not beneath a mount lies in the root that every task shares; one that is an entry
/// needs no mountpoint.
fn template_entries(layout: &HostLayout) -> HashSet<PathBuf> {
    let mut entries: HashSet<PathBuf> = ["/", "/dev", "/tmp", "/proc"].map(PathBuf::from).into();
    for entry in &layout.system {
        let path = match entry {
            SystemEntry::Dir(p) => p,
            SystemEntry::Symlink { path, .. } => path,
        };
        entries.extend(path.ancestors().map(Path::to_path_buf));
    }
    entries.extend(layout.dev_nodes.iter().cloned());
    entries.extend(DEV_LINKS.iter().map(|(link, _)| PathBuf::from(link)));
    entries
}

/// The template's masks over root-only files, with the paths a task sees (no staging prefix):
/// what the zygote mounts after its pivot, and again when the host replaced a masked file.
pub(crate) fn masks(layout: &HostLayout) -> Vec<MountOp> {
    let mut ops = Vec::new();
    let mut made = HashSet::new();
    for (p, is_dir) in &layout.masks {
        let mount = if *is_dir {
            Mount::MaskDir
        } else {
            Mount::MaskFile
        };
        // Only the mount itself: the file or directory exists on the host.
        made.insert(p.clone());
        emit(&mut ops, &mut made, p, mount, host(p), None);
    }
    ops
}

/// The operations that mask one root-only path (see [`masks`]), for one that appeared on the
/// host after the template was built.
pub(crate) fn mask(path: &Path, is_dir: bool) -> Vec<MountOp> {
    masks(&HostLayout {
        system: Vec::new(),
        dev_nodes: Vec::new(),
        masks: vec![(path.to_path_buf(), is_dir)],
        unmasked: None,
    })
}

/// /dev entries that are symlinks into the task's own proc and tmp.
pub(super) const DEV_LINKS: [(&str, &str); 5] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/shm", "/tmp"),
];

/// Appends the operations that put `mount` at `dst` (the mountpoint first, unless made before).
/// A tmpfs that must end read-only is recorded in `finish`.
pub(super) fn emit(
    ops: &mut Vec<MountOp>,
    made: &mut HashSet<PathBuf>,
    target: &Path,
    mount: Mount,
    dst: CString,
    tmp_size: Option<u64>,
) -> Vec<MountOp> {
    let mut finish = Vec::new();
    let is_file_target = matches!(
        mount,
        Mount::BindRoFile(_) | Mount::BindDev(_) | Mount::MaskFile
    );
    if !matches!(mount, Mount::Symlink(_)) && made.insert(target.to_path_buf()) {
        ops.push(if is_file_target {
            MountOp::Touch(dst.clone())
        } else {
            MountOp::Mkdir(dst.clone())
        });
    }
    match mount {
        Mount::Symlink(to) => ops.push(MountOp::Symlink {
            target: host(&to),
            link: dst,
        }),
        Mount::BindRo(src) | Mount::BindRoFile(src) => ops.push(MountOp::BindRo {
            src: host(&src),
            dst,
        }),
        Mount::BindRw(src) => ops.push(MountOp::BindRw {
            src: host(&src),
            dst,
        }),
        Mount::BindDev(src) => ops.push(MountOp::BindDev {
            src: host(&src),
            dst,
        }),
        Mount::MaskFile => ops.push(MountOp::BindDev {
            src: CString::from(c"/dev/null"),
            dst,
        }),
        Mount::MaskDir => ops.push(MountOp::Tmpfs {
            dst,
            flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: CString::new("size=4k,mode=0").unwrap_or_default(),
        }),
        Mount::HideDir => {
            ops.push(MountOp::Tmpfs {
                dst: dst.clone(),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: CString::new("size=64k,mode=0755").unwrap_or_default(),
            });
            finish.push(MountOp::SetReadOnly(dst));
        }
        Mount::PrivateTmp => {
            let data = match tmp_size {
                Some(bytes) => format!("mode=1777,size={bytes}"),
                None => "mode=1777".to_string(),
            };
            ops.push(MountOp::Tmpfs {
                dst,
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: CString::new(data).unwrap_or_default(),
            });
        }
        Mount::Proc => ops.push(MountOp::Proc { dst }),
    }
    finish
}

/// Plans one task's part of the tree (on top of a copy of the [`template`]) and the landlock
/// grants for its whole view. Paths are the task's own (no staging prefix).
///
/// Mountpoints that lie in the shared template root are created there only at the first level
/// that is neither a template entry nor beneath a mount (a handful of names such as `/work` or
/// `/var`); a private tmpfs ("scaffold") covers each, and every deeper mountpoint is made inside
/// it. Those first-level names stay in the shared root for the zygote's life, so a task can see
/// the top-level names other tasks' paths use (never their content).
pub(crate) fn plan(template: &Template, task: &TaskPaths<'_>) -> Result<Plan, SandboxError> {
    let layout = &template.layout;
    check_task_paths(task)?;
    if let Some(image) = task.image {
        return super::rootfs::plan(layout, task, image);
    }
    let mut targets: Vec<(PathBuf, Mount)> = Vec::new();
    let mut grants: Vec<(PathBuf, Grant)> = Vec::new();
    // Directories whose host content shows through: the store must be covered when it lies
    // beneath one of them.
    let mut exposed: Vec<PathBuf> = Vec::new();
    // Mounts of the template that mountpoints can be made inside.
    let mut mounted: Vec<PathBuf> = Vec::new();
    for entry in &layout.system {
        if let SystemEntry::Dir(p) = entry {
            grants.push((p.clone(), Grant::Read));
            exposed.push(p.clone());
            mounted.push(p.clone());
        }
    }
    // One rule for the nodes: /dev holds nothing else but symlinks (landlock checks their
    // targets), and each rule costs the task's init three system calls.
    if !layout.dev_nodes.is_empty() {
        grants.push((PathBuf::from("/dev"), Grant::Device));
    }
    targets.push((PathBuf::from("/tmp"), Mount::PrivateTmp));
    targets.push((PathBuf::from("/proc"), Mount::Proc));

    let (task_targets, task_grants) = task_mounts(layout, task, exposed);
    targets.extend(task_targets);
    grants.extend(task_grants);

    // Parents before children: a mount then never hides one made or created after it. The sort is
    // stable, so at equal depth the later (more specific) request wins.
    targets.sort_by_key(|(p, _)| depth(p));

    let mut ops = Vec::new();
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut finish = Vec::new();
    for (target, mount) in targets {
        let mut chain: Vec<&Path> = target.ancestors().skip(1).collect();
        chain.reverse();
        for a in chain.into_iter().skip(1) {
            // A template entry exists (a directory, or a mount or symlink whose own content
            // holds the rest of the path); so does anything made before.
            if made.contains(a) || template.entries.contains(a) && !beneath(a, &mounted) {
                continue;
            }
            made.insert(a.to_path_buf());
            ops.push(MountOp::Mkdir(host(a)));
            if !beneath(a, &mounted) {
                // The first level in the shared root: a private tmpfs holds everything deeper.
                ops.push(MountOp::Tmpfs {
                    dst: host(a),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    data: CString::new("size=64k,mode=0755").unwrap_or_default(),
                });
                finish.push(MountOp::SetReadOnly(host(a)));
                mounted.push(a.to_path_buf());
            }
        }
        let takes_children = !matches!(
            mount,
            Mount::Symlink(_) | Mount::BindRoFile(_) | Mount::MaskFile | Mount::BindDev(_)
        );
        finish.extend(emit(
            &mut ops,
            &mut made,
            &target,
            mount,
            host(&target),
            task.tmp_size,
        ));
        if takes_children {
            mounted.push(target);
        }
    }
    ops.extend(finish);
    ops.push(MountOp::SetReadOnly(CString::from(c"/")));
    Ok(Plan { ops, grants })
}

/// Checks every path of the task before anything is planned.
fn check_task_paths(task: &TaskPaths<'_>) -> Result<(), SandboxError> {
    check_path(task.cwd, "working directory")?;
    check_spelling(task.output_dir, "output_dir")?;
    check_path(task.scratch_dir, "scratch_dir")?;
    check_path(task.store_dir, "store_dir")?;
    if let Some(p) = task.input_file {
        check_path(p, "input_file")?;
    }
    if let Some(p) = task.input_dir {
        check_path(p, "input_dir")?;
    }
    for p in task.read_only {
        check_path(p, "read_only")?;
    }
    for p in task.read_write {
        check_path(p, "read_write")?;
    }

    if let Some(p) = task.image {
        check_path(p, "image")?;
    }
    Ok(())
}

/// The task's own mounts and landlock grants, the same in the host's root and in an image's:
/// the manifest directory, the extra paths, masks over root-only files they would uncover, the
/// cover over the store, the inputs, `OUTPUT_DIR` and the scratch directory. `exposed` holds
/// the directories whose host content already shows (the system directories).
pub(super) fn task_mounts(
    layout: &HostLayout,
    task: &TaskPaths<'_>,
    mut exposed: Vec<PathBuf>,
) -> Targets {
    let mut targets: Vec<(PathBuf, Mount)> = Vec::new();
    let mut grants: Vec<(PathBuf, Grant)> = Vec::new();
    targets.push((
        task.cwd.to_path_buf(),
        Mount::BindRo(task.cwd.to_path_buf()),
    ));
    grants.push((task.cwd.to_path_buf(), Grant::Read));
    exposed.push(task.cwd.to_path_buf());
    let mut task_binds: Vec<&Path> = vec![task.cwd];
    for p in task.read_only {
        targets.push((p.clone(), Mount::BindRo(p.clone())));
        grants.push((p.clone(), Grant::Read));
        exposed.push(p.clone());
        task_binds.push(p);
    }
    for p in task.read_write {
        targets.push((p.clone(), Mount::BindRw(p.clone())));
        grants.push((p.clone(), Grant::Write));
        exposed.push(p.clone());
        task_binds.push(p);
    }
    // The template covers the root-only files, but a bind of this task over one of their
    // directories would show them again. A path the step names itself is shown as asked. A
    // masked directory that holds one of the task's own paths (a store or a project in a 0700
    // directory under /opt) gets an empty tmpfs the task's mountpoints can be made in, read-only
    // at the end: as empty as the mask, apart from those paths.
    let own_paths: Vec<&Path> = task_binds
        .iter()
        .copied()
        .chain([task.output_dir, task.scratch_dir, task.store_dir])
        .chain(task.input_dir)
        .chain(task.input_file)
        .collect();
    for (p, is_dir) in &layout.masks {
        if *is_dir && beneath_any(p, &own_paths) {
            targets.push((p.clone(), Mount::HideDir));
        } else if task_binds.iter().any(|b| p.starts_with(b) && p != b) {
            let mount = if *is_dir {
                Mount::MaskDir
            } else {
                Mount::MaskFile
            };
            targets.push((p.clone(), mount));
        }
    }
    if exposed.iter().any(|e| task.store_dir.starts_with(e)) {
        targets.push((task.store_dir.to_path_buf(), Mount::HideDir));
    }
    if let Some(p) = task.input_dir {
        targets.push((p.to_path_buf(), Mount::BindRo(p.to_path_buf())));
        grants.push((p.to_path_buf(), Grant::Read));
    }
    if let Some(p) = task.input_file {
        targets.push((p.to_path_buf(), Mount::BindRoFile(p.to_path_buf())));
        grants.push((p.to_path_buf(), Grant::Read));
    }
    targets.push((
        task.output_dir.to_path_buf(),
        Mount::BindRw(task.output_dir.to_path_buf()),
    ));
    grants.push((task.output_dir.to_path_buf(), Grant::Write));
    targets.push((
        task.scratch_dir.to_path_buf(),
        Mount::BindRw(task.scratch_dir.to_path_buf()),
    ));
    grants.push((task.scratch_dir.to_path_buf(), Grant::Write));

    (targets, grants)
}

/// What goes where, and the landlock grants that go with it.
pub(super) type Targets = (Vec<(PathBuf, Mount)>, Vec<(PathBuf, Grant)>);

/// Whether one of `paths` lies strictly beneath `dir`.
fn beneath_any(dir: &Path, paths: &[&Path]) -> bool {
    paths.iter().any(|p| *p != dir && p.starts_with(dir))
}

/// Whether `path` lies strictly beneath one of `mounts`.
fn beneath(path: &Path, mounts: &[PathBuf]) -> bool {
    mounts.iter().any(|m| path != m && path.starts_with(m))
}

#[cfg(test)]
mod tests {
    #[test]
    fn staging_has_one_spelling() {
        assert_eq!(STAGING_C.to_str(), Ok(STAGING));
    }

    use super::*;

    fn layout() -> HostLayout {
        HostLayout {
            system: vec![
                SystemEntry::Dir("/usr".into()),
                SystemEntry::Symlink {
                    path: "/bin".into(),
                    target: "usr/bin".into(),
                },
                SystemEntry::Dir("/etc".into()),
                SystemEntry::Dir("/nix/store".into()),
            ],
            dev_nodes: vec!["/dev/null".into()],
            masks: vec![("/etc/shadow".into(), false)],
            unmasked: None,
        }
    }

    /// A task whose every directory is `dir`, with no input and no extra paths.
    fn in_one_dir(dir: &Path) -> TaskPaths<'_> {
        TaskPaths {
            cwd: dir,
            input_file: None,
            input_dir: None,
            output_dir: dir,
            scratch_dir: dir,
            store_dir: dir,
            read_only: &[],
            read_write: &[],
            tmp_size: None,
            image: None,
        }
    }

    fn pos(ops: &[MountOp], want: impl Fn(&MountOp) -> bool) -> usize {
        ops.iter().position(want).unwrap_or(usize::MAX)
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn tmpfs_at(ops: &[MountOp], path: &Path) -> usize {
        pos(
            ops,
            |o| matches!(o, MountOp::Tmpfs { dst, .. } if *dst == host(path)),
        )
    }

    #[test]
    fn the_template_holds_the_static_tree_at_the_staging_root() {
        let ops = template(&layout());
        assert!(matches!(&ops[0], MountOp::Tmpfs { dst, .. } if *dst == c(STAGING)));
        let etc = pos(
            &ops,
            |o| matches!(o, MountOp::BindRo { src, dst } if *src == c("/etc") && *dst == c("/proc/etc")),
        );
        assert!(etc != usize::MAX, "{ops:#?}");
        // The masks come after the pivot, at the paths a task sees.
        assert!(
            !ops.iter().any(|o| matches!(o,
                MountOp::BindDev { dst, .. } | MountOp::Touch(dst) if *dst == c("/proc/etc/shadow"))),
            "{ops:#?}"
        );
        assert!(
            masks(&layout()).contains(&MountOp::BindDev {
                src: c("/dev/null"),
                dst: c("/etc/shadow")
            }),
            "{:#?}",
            masks(&layout())
        );
        assert!(ops.contains(&MountOp::Symlink {
            target: c("usr/bin"),
            link: c("/proc/bin")
        }));
        assert!(ops.contains(&MountOp::Mkdir(c("/proc/nix"))));
        assert!(ops.contains(&MountOp::Mkdir(c("/proc/proc"))));
        assert!(ops.contains(&MountOp::Mkdir(c("/proc/tmp"))));
        // The root stays writable in the template (each task makes its own copy read-only).
        assert!(!ops.iter().any(|o| matches!(o, MountOp::SetReadOnly(_))));
    }

    #[test]
    fn store_inside_the_manifest_dir_is_hidden_before_task_dirs_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        let store = cwd.join("db");
        let out = store.join("tmp/t1/out");
        let scratch = store.join("tmp/t1/scratch");
        let obj = store.join("objects/ab/cd/ef");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
        std::fs::write(&obj, b"x").unwrap();
        let task = TaskPaths {
            cwd,
            input_file: Some(&obj),
            input_dir: None,
            output_dir: &out,
            scratch_dir: &scratch,
            store_dir: &store,
            read_only: &[],
            read_write: &[],
            tmp_size: None,
            image: None,
        };
        let plan = plan(&Template::new(layout()), &task).unwrap();
        let cwd_bind = pos(
            &plan.ops,
            |o| matches!(o, MountOp::BindRo { dst, .. } if *dst == host(cwd)),
        );
        let hide = tmpfs_at(&plan.ops, &store);
        let out_bind = pos(
            &plan.ops,
            |o| matches!(o, MountOp::BindRw { dst, .. } if *dst == host(&out)),
        );
        let obj_touch = pos(
            &plan.ops,
            |o| matches!(o, MountOp::Touch(p) if *p == host(&obj)),
        );
        let obj_bind = pos(
            &plan.ops,
            |o| matches!(o, MountOp::BindRo { dst, .. } if *dst == host(&obj)),
        );
        assert!(cwd_bind < hide, "{:#?}", plan.ops);
        assert!(hide < out_bind && hide < obj_touch && obj_touch < obj_bind);
        // The hidden store and the root become read-only last, root at the very end.
        assert_eq!(plan.ops.last(), Some(&MountOp::SetReadOnly(c("/"))));
        assert!(plan.ops.contains(&MountOp::SetReadOnly(host(&store))));
        // The store itself is never granted, only the task's own paths beneath it.
        assert!(!plan.grants.iter().any(|(p, _)| p == &store));
        assert!(plan.grants.contains(&(out.clone(), Grant::Write)));
        assert!(plan.grants.contains(&(obj.clone(), Grant::Read)));
        assert!(plan.grants.contains(&(cwd.to_path_buf(), Grant::Read)));
    }

    #[test]
    fn mountpoints_in_the_shared_root_are_covered_by_a_private_tmpfs() {
        // Paths under /tmp lie in the task's private /tmp (and a checkout may live there): use a
        // path outside it.
        let base_dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let base = base_dir.path();
        let cwd = base.join("manifest");
        let store = base.join("db");
        let out = store.join("tmp/t1/out");
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let task = TaskPaths {
            cwd: &cwd,
            input_file: None,
            input_dir: None,
            output_dir: &out,
            scratch_dir: &out,
            store_dir: &store,
            read_only: &[],
            read_write: &[],
            tmp_size: None,
            image: None,
        };
        let plan = plan(&Template::new(layout()), &task).unwrap();
        // The first level of the path in the shared root gets a private tmpfs; nothing deeper
        // is created outside it.
        let top: PathBuf = cwd
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .nth(1)
            .unwrap()
            .into();
        let scaffold = tmpfs_at(&plan.ops, &top);
        assert!(scaffold != usize::MAX, "{:#?}", plan.ops);
        for (i, op) in plan.ops.iter().enumerate() {
            if let MountOp::Mkdir(p) | MountOp::Touch(p) = op
                && Path::new(std::ffi::OsStr::from_bytes(p.to_bytes())).starts_with(&top)
                && *p != host(&top)
            {
                assert!(
                    i > scaffold,
                    "{p:?} made before the scaffold: {:#?}",
                    plan.ops
                );
            }
        }
        assert!(plan.ops.contains(&MountOp::SetReadOnly(host(&top))));
        assert!(tmpfs_at(&plan.ops, Path::new("/tmp")) < scaffold);
    }

    #[test]
    fn the_search_finds_what_others_cannot_read_and_stops_at_closed_directories() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let at = |p: &str| d.path().join(p);
        let mode = |p: &str, m: u32| {
            std::fs::set_permissions(at(p), std::fs::Permissions::from_mode(m)).unwrap();
        };
        for dir in ["open", "open/enter-only", "closed", "closed/inner"] {
            std::fs::create_dir(at(dir)).unwrap();
        }
        for file in [
            "open/readable",
            "open/private",
            "open/group-only",
            "open/enter-only/private",
            "open/enter-only/readable",
            "closed/inner/x",
        ] {
            std::fs::write(at(file), "x").unwrap();
        }
        mode("open/private", 0o600);
        mode("open/group-only", 0o640);
        mode("open/enter-only", 0o711);
        mode("open/enter-only/private", 0o400);
        mode("closed", 0o750);
        std::os::unix::fs::symlink("/etc/shadow", at("open/link")).unwrap();
        let mut budget = 100;
        let mut found = Vec::new();
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert!(root_only_entries(d.path(), &mut budget, later, &mut found));
        found.sort();
        let expected: Vec<(PathBuf, bool)> = vec![
            (at("closed"), true),
            (at("open/enter-only/private"), false),
            (at("open/group-only"), false),
            (at("open/private"), false),
        ];
        assert_eq!(found, expected);
        // Nothing inside `closed` was looked at: 4 directories' entries, less `closed/inner`.
        assert_eq!(budget, 100 - 9);
        let mut small = 2;
        let mut partial = Vec::new();
        assert!(!root_only_entries(
            d.path(),
            &mut small,
            later,
            &mut partial
        ));
        assert_eq!(small, 0);
        // Exactly enough budget is a complete search.
        let mut exact = 9;
        assert!(root_only_entries(
            d.path(),
            &mut exact,
            later,
            &mut Vec::new()
        ));
        assert_eq!(exact, 0);
        // Past the deadline nothing more is looked at.
        let mut plenty = 100;
        let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
        assert!(!root_only_entries(
            d.path(),
            &mut plenty,
            past,
            &mut Vec::new()
        ));
    }

    #[test]
    fn found_masks_are_capped_and_what_stays_readable_is_said() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        for i in 0..MAX_FOUND_MASKS + 3 {
            let f = d.path().join(format!("secret{i:03}"));
            std::fs::write(&f, "x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut masks = vec![(d.path().join("secret000"), false)];
        let said = add_root_only(&mut masks, &[d.path()], 1000).unwrap();
        // The named one counts once; 66 found beyond it, 64 kept.
        assert_eq!(masks.len(), MAX_FOUND_MASKS + 1);
        assert!(said.starts_with("2 more files"), "{said}");
        let mut few = Vec::new();
        let said = add_root_only(&mut few, &[d.path()], 5).unwrap();
        assert_eq!(few.len(), 5);
        assert!(said.contains("too many entries"), "{said}");
        let mut none = Vec::new();
        assert_eq!(
            add_root_only(&mut none, &[Path::new("/nonexistent")], 5),
            None
        );
    }

    #[test]
    fn masks_inside_masked_directories_are_dropped() {
        let masks = vec![
            (PathBuf::from("/etc/ssh/ssh_host_key"), false),
            (PathBuf::from("/etc/ssh"), true),
            (PathBuf::from("/etc/ssh-extra"), false),
            (PathBuf::from("/etc/shadow"), false),
            (PathBuf::from("/etc/shadow"), false),
        ];
        assert_eq!(
            outermost(masks),
            vec![
                (PathBuf::from("/etc/shadow"), false),
                (PathBuf::from("/etc/ssh"), true),
                (PathBuf::from("/etc/ssh-extra"), false),
            ]
        );
        assert!(covered(
            &[("/etc/ssh".into(), true)],
            Path::new("/etc/ssh/a")
        ));
        assert!(!covered(
            &[("/etc/shadow".into(), false)],
            Path::new("/etc/shadow/a")
        ));
    }

    #[test]
    fn a_task_bind_over_a_masked_directory_is_masked_again() {
        let etc = tempfile::tempdir_in("/var/tmp").unwrap();
        let etc_dir = etc.path().to_path_buf();
        std::fs::create_dir_all(etc_dir.join("ssl")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let layout = HostLayout {
            masks: vec![(etc_dir.join("ssl"), true)],
            ..layout()
        };
        let ro = [etc_dir.clone()];
        let task = TaskPaths {
            read_only: &ro,
            ..in_one_dir(d.path())
        };
        let plan = plan(&Template::new(layout.clone()), &task).unwrap();
        let bind = pos(
            &plan.ops,
            |o| matches!(o, MountOp::BindRo { dst, .. } if *dst == host(&etc_dir)),
        );
        let mask = tmpfs_at(&plan.ops, &etc_dir.join("ssl"));
        assert!(bind < mask && mask != usize::MAX, "{:#?}", plan.ops);
        // Without the bind, the template's mask is enough.
        let plain = plan_without(&layout, &task);
        assert_eq!(tmpfs_at(&plain.ops, &etc_dir.join("ssl")), usize::MAX);
        // A step that names the masked directory itself gets it, unmasked.
        let named = [etc_dir.join("ssl")];
        let task = TaskPaths {
            read_only: &named,
            ..in_one_dir(d.path())
        };
        let shown = super::plan(&Template::new(layout.clone()), &task).unwrap();
        assert_eq!(tmpfs_at(&shown.ops, &etc_dir.join("ssl")), usize::MAX);
        assert_ne!(
            pos(
                &shown.ops,
                |o| matches!(o, MountOp::BindRo { dst, .. } if *dst == host(&etc_dir.join("ssl")))
            ),
            usize::MAX
        );
    }

    #[test]
    fn a_masked_directory_holding_the_task_own_paths_lets_them_be_made() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let closed = d.path().join("closed");
        let project = closed.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let layout = HostLayout {
            masks: vec![(closed.clone(), true)],
            ..layout()
        };
        let task = in_one_dir(&project);
        let plan = plan(&Template::new(layout.clone()), &task).unwrap();
        // A writable tmpfs over the mask, before the project's bind; no read-only mask there.
        let scaffold = pos(&plan.ops, |o| {
            matches!(o, MountOp::Tmpfs { dst, flags, .. }
                if *dst == host(&closed) && flags & libc::MS_RDONLY == 0)
        });
        let bind = pos(
            &plan.ops,
            |o| matches!(o, MountOp::BindRo { dst, .. } if *dst == host(&project)),
        );
        assert!(scaffold < bind && bind != usize::MAX, "{:#?}", plan.ops);
        let sealed = pos(
            &plan.ops,
            |o| matches!(o, MountOp::SetReadOnly(dst) if *dst == host(&closed)),
        );
        assert!(bind < sealed && sealed != usize::MAX, "{:#?}", plan.ops);
        // A task whose paths are elsewhere leaves the template's mask alone.
        let elsewhere = tempfile::tempdir().unwrap();
        let plain = plan_without(&layout, &in_one_dir(elsewhere.path()));
        assert_eq!(tmpfs_at(&plain.ops, &closed), usize::MAX);
    }

    fn plan_without(layout: &HostLayout, task: &TaskPaths<'_>) -> Plan {
        plan(
            &Template::new(layout.clone()),
            &TaskPaths {
                read_only: &[],
                ..task.clone()
            },
        )
        .unwrap()
    }

    #[test]
    fn store_outside_every_exposed_dir_needs_no_cover() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let store = b.path().join("db");
        let out = store.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let task = TaskPaths {
            cwd: a.path(),
            input_file: None,
            input_dir: None,
            output_dir: &out,
            scratch_dir: &out,
            store_dir: &store,
            read_only: &[],
            read_write: &[],
            tmp_size: Some(1 << 20),
            image: None,
        };
        let plan = plan(&Template::new(layout()), &task).unwrap();
        assert_eq!(tmpfs_at(&plan.ops, &store), usize::MAX);
        assert!(
            plan.ops
                .iter()
                .any(|o| matches!(o, MountOp::Tmpfs { dst, data, .. }
            if *dst == c("/tmp") && data.to_bytes().ends_with(b"size=1048576")))
        );
        assert!(plan.ops.contains(&MountOp::Proc { dst: c("/proc") }));
    }

    #[test]
    fn rejects_paths_that_would_break_isolation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let base = in_one_dir(p);
        for bad in [
            "/",
            "relative/x",
            "/proc/1",
            "/nonexistent-grit-path",
            "/usr/../etc",
        ] {
            let ro = [PathBuf::from(bad)];
            let task = TaskPaths {
                read_only: &ro,
                ..base.clone()
            };
            let err = plan(&Template::new(layout()), &task).unwrap_err();
            assert!(matches!(err, SandboxError::BadPath { .. }), "{bad}: {err}");
        }
        assert!(plan(&Template::new(layout()), &base).is_ok());
    }

    #[test]
    fn paths_beneath_template_mounts_and_symlinks_get_no_scaffold() {
        let d = tempfile::tempdir().unwrap();
        let ro = [
            PathBuf::from("/usr/share"),
            PathBuf::from("/bin/sh"),
            PathBuf::from("/etc"),
        ];
        let task = TaskPaths {
            read_only: &ro,
            ..in_one_dir(d.path())
        };
        let plan = plan(&Template::new(layout()), &task).unwrap();
        // No tmpfs may cover a template mount or symlink: that would hide the system.
        for top in ["/usr", "/bin", "/etc", "/nix", "/nix/store", "/usr/bin"] {
            assert_eq!(
                tmpfs_at(&plan.ops, Path::new(top)),
                usize::MAX,
                "{top}: {:#?}",
                plan.ops
            );
            // (Only a requested path itself gets a `Mkdir`, which finds it there.)
            assert!(
                top == "/etc" || !plan.ops.contains(&MountOp::Mkdir(c(top))),
                "{top}: {:#?}",
                plan.ops
            );
        }
        // The binds themselves are there (the mountpoint of /usr/share exists in the bind).
        for p in ["/usr/share", "/bin/sh", "/etc"] {
            assert!(
                plan.ops
                    .iter()
                    .any(|o| matches!(o, MountOp::BindRo { dst, .. } if *dst == c(p))),
                "{p}: {:#?}",
                plan.ops
            );
        }
    }
}
