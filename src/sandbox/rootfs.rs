//! The mount plan of a task that runs in an image (`image = "…"`): the image replaces the
//! host's system directories as the root, and everything else a task gets stays the same (its
//! directories at their host paths, a private `/tmp`, a fresh `/proc`, a minimal `/dev`, the
//! same landlock rules on them).
//!
//! Init starts in its copy of the template, where `/tmp` is an empty directory. There it mounts a
//! small tmpfs, attaches a read-only copy of the image (made by the zygote in the host's view,
//! like every bind) and builds an overlay with the image below and the tmpfs above, so that the
//! task's mountpoints (`/home/me/project`, `/var/tmp/db/...`) can be made anywhere without ever
//! writing into the image, which the store shares between tasks and runs. `/dev` and a fresh
//! `/proc` go in while the template's copy of the host's procfs is still there (the kernel grants
//! a new proc only then); then init pivots into the overlay, detaching the template, and mounts
//! the task's own directories. The root becomes read-only at the end, as in the host's layout.
//!
//! An image that is itself in `/nix/store` (a Nix-built root, often symbolic links into the store)
//! also gets the host's `/nix/store`, read-only.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::SandboxError;
use super::plan::{
    DEV_LINKS, Grant, HostLayout, Mount, MountOp, Plan, TaskPaths, depth, emit, host, task_mounts,
};

/// Where init assembles the new root: the template's `/tmp`, an empty directory that this
/// task's own tmpfs covers.
const STAGE: &str = "/tmp";

fn staged(rel: &str) -> CString {
    host(&Path::new(STAGE).join(rel))
}

/// Plans a task in the image whose root filesystem is `image` (a host path).
pub(super) fn plan(
    layout: &HostLayout,
    task: &TaskPaths<'_>,
    image: &Path,
) -> Result<Plan, SandboxError> {
    let root = Path::new(STAGE).join("root");
    let in_root = |p: &Path| host(&root.join(p.strip_prefix("/").unwrap_or(p)));
    let mut ops = vec![
        MountOp::Tmpfs {
            dst: host(Path::new(STAGE)),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: CString::new("mode=0700,size=16m").unwrap_or_default(),
        },
        MountOp::Mkdir(staged("lower")),
        MountOp::Mkdir(staged("upper")),
        MountOp::Mkdir(staged("work")),
        MountOp::Mkdir(staged("root")),
        // The zygote turns this into an attach of a read-only, nosuid, nodev copy.
        MountOp::BindRo {
            src: host(image),
            dst: staged("lower"),
        },
        MountOp::Overlay {
            lower: staged("lower"),
            upper: staged("upper"),
            work: staged("work"),
            dst: staged("root"),
        },
        MountOp::Mkdir(in_root(Path::new("/dev"))),
        MountOp::Tmpfs {
            dst: in_root(Path::new("/dev")),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: CString::new("mode=0755,size=64k").unwrap_or_default(),
        },
    ];
    for node in &layout.dev_nodes {
        ops.push(MountOp::Touch(in_root(node)));
        ops.push(MountOp::BindDev {
            src: host(node),
            dst: in_root(node),
        });
    }
    for (link, target) in DEV_LINKS {
        ops.push(MountOp::Symlink {
            target: host(Path::new(target)),
            link: in_root(Path::new(link)),
        });
    }
    ops.push(MountOp::Mkdir(in_root(Path::new("/proc"))));
    ops.push(MountOp::Proc {
        dst: in_root(Path::new("/proc")),
    });
    ops.push(MountOp::PivotRoot(host(&root)));

    // The image is read and run, never written; the device nodes as in the host's layout.
    let mut grants: Vec<(PathBuf, Grant)> = vec![(PathBuf::from("/"), Grant::Read)];
    if !layout.dev_nodes.is_empty() {
        grants.push((PathBuf::from("/dev"), Grant::Device));
    }
    let mut targets: Vec<(PathBuf, Mount)> = vec![(PathBuf::from("/tmp"), Mount::PrivateTmp)];
    // A Nix-built root (`buildEnv`, a profile) is links into /nix/store: it needs the store.
    let nix_store = Path::new("/nix/store");
    if image.starts_with(nix_store) && nix_store.is_dir() {
        targets.push((
            nix_store.to_path_buf(),
            Mount::BindRo(nix_store.to_path_buf()),
        ));
    }
    // Nothing of the host shows but the task's own binds.
    let (task_targets, task_grants) = task_mounts(layout, task, Vec::new());
    targets.extend(task_targets);
    grants.extend(task_grants);
    targets.sort_by_key(|(p, _)| depth(p));

    // The overlay is the task's own: every mountpoint is simply made where it belongs.
    let mut made = std::collections::HashSet::new();
    let mut finish = Vec::new();
    for (target, mount) in targets {
        let mut chain: Vec<&Path> = target.ancestors().skip(1).collect();
        chain.reverse();
        for a in chain.into_iter().skip(1) {
            if made.insert(a.to_path_buf()) {
                ops.push(MountOp::Mkdir(host(a)));
            }
        }
        finish.extend(emit(
            &mut ops,
            &mut made,
            &target,
            mount,
            host(&target),
            task.tmp_size,
        ));
    }
    ops.extend(finish);
    ops.push(MountOp::SetReadOnly(CString::from(c"/dev")));
    ops.push(MountOp::SetReadOnly(CString::from(c"/")));
    Ok(Plan { ops, grants })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn the_image_becomes_the_root_and_the_task_paths_are_mounted_after_the_pivot() {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let image = d.path().join("rootfs");
        let out = d.path().join("db/out");
        std::fs::create_dir_all(&image).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let layout = HostLayout {
            dev_nodes: vec!["/dev/null".into()],
            ..HostLayout::default()
        };
        let task = TaskPaths {
            cwd: d.path(),
            input_file: None,
            input_dir: None,
            output_dir: &out,
            scratch_dir: &out,
            store_dir: &d.path().join("db"),
            read_only: &[],
            read_write: &[],
            tmp_size: None,
            image: Some(&image),
        };
        let plan = plan(&layout, &task, &image).unwrap();
        let pos = |want: &MountOp| plan.ops.iter().position(|o| o == want).unwrap();
        let pivot = pos(&MountOp::PivotRoot(c("/tmp/root")));
        let lower = pos(&MountOp::BindRo {
            src: host(&image),
            dst: c("/tmp/lower"),
        });
        let proc = pos(&MountOp::Proc {
            dst: c("/tmp/root/proc"),
        });
        let out_bind = pos(&MountOp::BindRw {
            src: host(&out),
            dst: host(&out),
        });
        assert!(
            lower < pivot && proc < pivot && pivot < out_bind,
            "{:#?}",
            plan.ops
        );
        // Every ancestor of a task path is made inside the overlay (after the pivot).
        let var = pos(&MountOp::Mkdir(c("/var")));
        assert!(pivot < var);
        assert_eq!(plan.ops.last(), Some(&MountOp::SetReadOnly(c("/"))));
        // No host system directory is granted; the image is, read-only.
        assert!(plan.grants.contains(&(PathBuf::from("/"), Grant::Read)));
        assert!(!plan.grants.iter().any(|(p, _)| p == Path::new("/usr")));
    }
}
