//! What this machine offers the sandbox and the capture filesystem, for `grit doctor`: each
//! feature is tried for real (a user namespace is created, /dev/fuse opened, a task run in the
//! strict sandbox), not guessed from version numbers.
// Until the lead wires `grit doctor [--json]` to `probe()` and `Probe::render_table()`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use super::{Policy, Program, SandboxRequest, TARGET_ABI, landlock_abi, missing_landlock_features};

/// One feature: whether it works here, and the detail a user needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub ok: bool,
    pub detail: String,
}

impl Feature {
    fn yes(detail: impl Into<String>) -> Self {
        Feature {
            ok: true,
            detail: detail.into(),
        }
    }
    fn no(detail: impl Into<String>) -> Self {
        Feature {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// The machine report behind `grit doctor [--json]`.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `uname -r`.
    pub kernel: String,
    /// Whether grit runs as root.
    pub root: bool,
    /// The kernel's landlock ABI version; `None` without landlock.
    pub landlock_abi: Option<u32>,
    pub landlock: Feature,
    pub user_namespaces: Feature,
    pub dev_fuse: Feature,
    pub cgroup_v2: Feature,
    /// A `sh -c true` task run end to end in the strict sandbox.
    pub sandbox: Feature,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn probe_landlock() -> (Option<u32>, Feature) {
    match landlock_abi() {
        Ok(abi) => {
            let missing = missing_landlock_features(abi);
            let f = if missing.is_empty() {
                Feature::yes(format!(
                    "ABI {abi}: fully enforced (grit uses up to ABI {})",
                    TARGET_ABI as u32
                ))
            } else {
                Feature::yes(format!(
                    "ABI {abi}: partly enforced, missing {}",
                    missing.join(", ")
                ))
            };
            (Some(abi), f)
        }
        Err(e) => (
            None,
            Feature::no(format!(
                "unavailable: {} (needs Linux 5.13+ with landlock in the lsm= list)",
                io::Error::from_raw_os_error(e)
            )),
        ),
    }
}

/// Creates a user namespace in a throwaway child.
fn probe_userns() -> Feature {
    let mut cmd = Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure makes one raw syscall and then _exits or returns the error.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::_exit(0)
        });
    }
    match cmd.spawn().and_then(|mut c| c.wait()) {
        Ok(s) if s.success() => Feature::yes("can be created by this user"),
        Ok(s) => Feature::no(format!("probe child ended with {s}")),
        Err(e) => Feature::no(format!("unshare(CLONE_NEWUSER): {e}")),
    }
}

fn probe_fuse() -> Feature {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Feature::yes("openable: outputs are captured through FUSE"),
        Err(e) => Feature::no(format!(
            "{e}: outputs fall back to a plain directory hashed after exit"
        )),
    }
}

fn fs_type(path: &Path) -> Option<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs with a valid path and an out-struct of the right type.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st.f_type as i64)
    }
}

fn probe_cgroup() -> Feature {
    #[allow(clippy::unnecessary_cast)] // the magic constant's type differs between targets
    let magic = libc::CGROUP2_SUPER_MAGIC as i64;
    if fs_type(Path::new("/sys/fs/cgroup")) == Some(magic) {
        Feature::yes("unified hierarchy at /sys/fs/cgroup")
    } else if fs_type(Path::new("/sys/fs/cgroup/unified")) == Some(magic) {
        Feature::yes("hybrid: v2 at /sys/fs/cgroup/unified, v1 controllers elsewhere")
    } else {
        Feature::no("not mounted (limits use rlimits either way)")
    }
}

/// Runs `sh -c true` in the strict sandbox inside a throwaway directory tree.
///
/// The tree lives in a fresh private directory (mode 0700, a random name created exclusively in
/// the temp dir): a name derived from the pid could be planted beforehand by another user of a
/// shared `/tmp`, with links that make `grit doctor` (often run as root) create directories where
/// they point.
fn probe_sandbox() -> Feature {
    let base = match tempfile::Builder::new().prefix("grit-doctor-").tempdir() {
        Ok(base) => base,
        Err(e) => {
            return Feature::no(format!(
                "cannot create a temporary directory in {}: {e}",
                std::env::temp_dir().display()
            ));
        }
    };
    let result = (|| -> Result<Feature, String> {
        let (cwd, db) = (base.path().join("manifest"), base.path().join("db"));
        let (out, scratch) = (db.join("tmp/out"), db.join("tmp/scratch"));
        // Below a directory only this user can enter, nothing else can plant a link.
        for d in [&cwd, &out, &scratch] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let policy = Policy::default();
        let req = SandboxRequest {
            cwd: &cwd,
            input_file: None,
            input_dir: None,
            output_dir: &out,
            scratch_dir: &scratch,
            store_dir: &db,
            policy: &policy,
            image: None,
        };
        let devnull = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let args = ["sh", "-c", "true"].map(OsString::from);
        let env = [(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))];
        let program = Program {
            name: OsStr::new("sh"),
            args: &args,
            env: &env,
            stdio: [devnull.as_fd(), devnull.as_fd(), write.as_fd()],
        };
        // A sandbox of its own: its zygote ends when the probe is done.
        let sandbox = super::Sandbox::new();
        let mut task = sandbox.spawn(&req, &program).map_err(|e| e.to_string())?;
        drop(write);
        let mut err = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut err)
            .map_err(|e| e.to_string())?;
        let status = task.wait_blocking().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(Feature::yes("a task ran in the strict sandbox"))
        } else {
            Ok(Feature::no(format!(
                "{status}: {}",
                err.lines().next().unwrap_or("no message")
            )))
        }
    })();
    // Best effort: a leftover private directory in the temp dir is harmless.
    let _ = base.close();
    result.unwrap_or_else(Feature::no)
}

/// Probes this machine. Takes a few milliseconds; spawns two short-lived children.
pub fn probe() -> Probe {
    let (landlock_abi, landlock) = probe_landlock();
    Probe {
        kernel: kernel_release(),
        // SAFETY: geteuid cannot fail.
        root: unsafe { libc::geteuid() } == 0,
        landlock_abi,
        landlock,
        user_namespaces: probe_userns(),
        dev_fuse: probe_fuse(),
        cgroup_v2: probe_cgroup(),
        sandbox: probe_sandbox(),
    }
}

impl Probe {
    /// A fixed-width table for the terminal.
    pub fn render_table(&self) -> String {
        let mut s = format!(
            "kernel {}{}\n",
            self.kernel,
            if self.root { " (running as root)" } else { "" }
        );
        s.push_str(&format!("{:<16} {:<4} {}\n", "FEATURE", "OK", "DETAIL"));
        for (name, f) in [
            ("landlock", &self.landlock),
            ("user namespaces", &self.user_namespaces),
            ("/dev/fuse", &self.dev_fuse),
            ("cgroup v2", &self.cgroup_v2),
            ("sandbox", &self.sandbox),
        ] {
            let ok = if f.ok { "yes" } else { "no" };
            s.push_str(&format!("{name:<16} {ok:<4} {}\n", f.detail));
        }
        if !self.sandbox.ok {
            s.push_str(
                "\nTasks cannot be sandboxed here: set `sandbox = \"off\"` on the steps, or run \
                 `grit run --no-sandbox`.\n",
            );
        }
        s
    }
}
