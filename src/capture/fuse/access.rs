//! Who may use the capture mount. Every request that names a task's directory or one of its
//! files by path or inode (lookup, getattr, create, open, unlink, rename, readdir, ...) must come
//! from a process of that task (its pid namespace, or its process group for a plain task), from
//! grit itself or from a helper of grit's executor (the sandbox zygote, which copies the
//! directory into the task's mount namespace; the executor says which pids those are, through
//! [`crate::capture::Capture::trust`]). Anything else is refused with EACCES and recorded for the task log and the run
//! summary.
//!
//! Requests on an open file (read, write, fsync, flush, release) carry the handle of an `open` or
//! `create` that passed this check, so they are not checked again: like Unix permissions, the
//! check is made when a file is opened. That also keeps the write path free of it, and it must be:
//! the kernel writes back a shared mapping from its own threads, not from the task's.
//!
//! The caller is the thread id the kernel puts in the request, in grit's pid namespace (0 for a
//! process in a namespace grit cannot see, which is refused). The check reads `/proc/<pid>` while
//! the request is pending: the caller is blocked in its system call, so its pid cannot pass to
//! another process meanwhile unless it is killed at that very moment and a new process takes the
//! pid before grit looks, which an outsider cannot arrange reliably.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::capture::TaskIdentity;

/// Callers remembered per task; more are counted, not named, so that a flood of refused
/// requests cannot grow grit's memory.
const MAX_CALLERS: usize = 20;

/// Is `pid` a thread of this grit process? (Its executor's helpers are asked apart.)
pub(super) fn is_grit(pid: u32) -> bool {
    pid != 0 && (pid == std::process::id() || Path::new(&format!("/proc/self/task/{pid}")).exists())
}

/// Is the thread `pid` one of the processes of task `who`?
pub(super) fn belongs(who: TaskIdentity, pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match who {
        TaskIdentity::PidNamespace { dev, ino } => std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .is_ok_and(|m| m.dev() == dev && m.ino() == ino),
        TaskIdentity::ProcessGroup(pgid) => in_process_tree(pgid, pid),
    }
}

/// Ancestors looked at before giving up (a task's process tree is never this deep).
const MAX_ANCESTRY: usize = 64;

/// Is `pid` in the process group of a plain task, or a descendant of its leader (whose pid is
/// the group's id)? A child that starts a session of its own (`setsid`) leaves the group but
/// stays in the tree; one that was reparented (a daemon) has left the task.
fn in_process_tree(pgid: i32, pid: u32) -> bool {
    let Ok(leader) = u32::try_from(pgid) else {
        return false;
    };
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        if current == leader {
            return true;
        }
        let Some((parent, group)) = parent_and_group(current) else {
            return false;
        };
        if group == pgid {
            return true;
        }
        // Reaching grit first means `pid` is grit's own child, not a descendant of the task's
        // leader (which grit started).
        if parent <= 1 || is_grit(parent as u32) {
            return false;
        }
        current = parent as u32;
    }
    false
}

/// The parent and the process group of thread `pid`, from `/proc/<pid>/stat`.
fn parent_and_group(pid: u32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent_and_group(&stat)
}

/// `pid (comm) state ppid pgrp ...`; the command name may hold spaces and parentheses.
fn parse_parent_and_group(stat: &str) -> Option<(i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(1);
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((parent, group))
}

/// The command name of `pid`, for messages (empty when it is gone).
fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One refused caller: how often, and which operations.
struct Caller {
    command: String,
    count: u64,
    operations: BTreeSet<&'static str>,
}

/// The refused accesses to one task directory (or to the mount's root).
#[derive(Default)]
pub(super) struct Refused {
    callers: BTreeMap<(u32, u32), Caller>,
    /// Refusals of callers past [`MAX_CALLERS`].
    unnamed: u64,
}

impl Refused {
    pub(super) fn record(&mut self, pid: u32, uid: u32, operation: &'static str) {
        let known = self.callers.len();
        match self.callers.get_mut(&(pid, uid)) {
            Some(c) => {
                c.count += 1;
                c.operations.insert(operation);
            }
            None if known < MAX_CALLERS => {
                self.callers.insert(
                    (pid, uid),
                    Caller {
                        command: command_name(pid),
                        count: 1,
                        operations: BTreeSet::from([operation]),
                    },
                );
            }
            None => self.unnamed += 1,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.callers.is_empty() && self.unnamed == 0
    }

    /// One line per caller: `refused 2 accesses from pid 4711 (sh), uid 1000: create, lookup`.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .callers
            .iter()
            .map(|((pid, uid), c)| {
                let command = if c.command.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.command)
                };
                format!(
                    "refused {} from pid {pid}{command}, uid {uid}: {}",
                    accesses(c.count),
                    c.operations.iter().copied().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        if self.unnamed > 0 {
            out.push(format!(
                "refused {} from further processes",
                accesses(self.unnamed)
            ));
        }
        out
    }
}

fn accesses(n: u64) -> String {
    if n == 1 {
        "1 access".into()
    } else {
        format!("{n} accesses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_is_read_past_an_odd_command_name() {
        let stat = "4711 (a) b (c) S 1 4700 4700 0 -1 4194560 0 0";
        assert_eq!(parse_parent_and_group(stat), Some((1, 4700)));
        assert_eq!(parse_parent_and_group("garbage"), None);
    }

    #[test]
    fn this_thread_is_grit_and_pid_0_is_nobody() {
        assert!(is_grit(std::process::id()));
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(is_grit(tid));
        assert!(!is_grit(0));
        assert!(!belongs(TaskIdentity::ProcessGroup(0), 0));
    }

    #[test]
    fn own_namespace_and_group_match_and_others_do_not() {
        let me = std::process::id();
        let ns = TaskIdentity::pid_namespace_of(me as i32).unwrap();
        assert!(belongs(ns, me));
        // SAFETY: getpgrp cannot fail.
        let pgid = unsafe { libc::getpgrp() };
        assert!(belongs(TaskIdentity::ProcessGroup(pgid), me));
        assert!(!belongs(TaskIdentity::PidNamespace { dev: 0, ino: 1 }, me));

        // A group this process neither is in nor descends from: a child that leads its own.
        // (`pgid + 1` is no such group: it may be the pid of one of this process's ancestors,
        // as when a shell leads the group and cargo is its next child.)
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let child_group = child.id() as i32;
        let child_belongs = belongs(TaskIdentity::ProcessGroup(child_group), child.id());
        let parent_belongs = belongs(TaskIdentity::ProcessGroup(child_group), me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(child_belongs);
        assert!(!parent_belongs);
    }

    /// `benches/access-check.sh`: what one check costs, next to a floor measured in the same
    /// run (one `stat` in /proc, the least a check by /proc can cost).
    #[test]
    #[ignore]
    fn bench_access_check() {
        let n = 200_000u32;
        let me = std::process::id();
        // SAFETY: gettid and getpgrp cannot fail.
        let (tid, group) = unsafe { (libc::gettid() as u32, libc::getpgrp()) };
        let ns = TaskIdentity::pid_namespace_of(me as i32).unwrap();
        let time = |check: &dyn Fn() -> bool| {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                assert!(check());
            }
            t0.elapsed().as_nanos() as f64 / f64::from(n)
        };
        let floor = time(&|| std::fs::metadata("/proc/self").is_ok());
        let namespace = time(&|| belongs(ns, me));
        let process_group = time(&|| belongs(TaskIdentity::ProcessGroup(group), me));
        let grit = time(&|| is_grit(tid));
        println!(
            "BENCH ns_per_check n={n} floor_stat_proc={floor:.0} pid_namespace={namespace:.0} \
             process_group={process_group:.0} grit_itself={grit:.0}"
        );
    }

    #[test]
    fn refusals_are_counted_per_caller_and_bounded() {
        let mut r = Refused::default();
        assert!(r.is_empty());
        r.record(1, 1000, "create");
        r.record(1, 1000, "lookup");
        r.record(1, 1000, "lookup");
        let lines = r.lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("refused 3 accesses from pid 1")
                && lines[0].ends_with(", uid 1000: create, lookup"),
            "{lines:?}"
        );
        for pid in 2..100 {
            r.record(pid, 0, "open");
        }
        let lines = r.lines();
        assert_eq!(lines.len(), MAX_CALLERS + 1);
        assert_eq!(
            lines.last().unwrap(),
            &format!(
                "refused {} accesses from further processes",
                99 - MAX_CALLERS
            )
        );
    }
}
