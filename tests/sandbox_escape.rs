//! Escape tests for the per-task sandbox (issue 3 item 5), modelled on landrun's and
//! bubblewrap's suites: each scenario is a real manifest run by the real `grit` binary with the
//! sandbox on, whose step attempts something it must not do and records what happened in an
//! output file (read back with `grit cat`) or fails with the reason in `grit log`. Each test
//! asserts the denial and, where it applies, that the host is unchanged.
//!
//! Run as root, the suite also reruns itself as an unprivileged user it creates
//! (`unprivileged_rerun`), because the sandbox takes a different path there (user namespace
//! without privilege, RLIMIT_NPROC instead of a pids cgroup).

#[path = "common/sandbox_support.rs"]
mod sandbox_support;

use std::os::unix::net::UnixListener;
use std::path::Path;

use sandbox_support::{Sandboxed, marker, open_up, processes_with, survivors, wait_for_process};

/// Runs `attempt` (a shell snippet) in a source step with extra step `keys`; returns the
/// observation: `ALLOWED` or `DENIED <status>`, then the snippet's stdout and stderr.
fn observe(attempt: &str, keys: &str) -> String {
    let p = Sandboxed::new(&probe_manifest(attempt, keys, false));
    let (out, _) = p.run(&[]);
    p.cat("obs").unwrap_or_else(|| {
        panic!(
            "no observation; grit said: {}\n{}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.log_of_step("probe")
        )
    })
}

/// The same, with the probe as a map step over a source's `data` resource (so `INPUT_FILE`
/// points into the store).
fn observe_with_input(attempt: &str, keys: &str) -> String {
    let p = Sandboxed::new(&probe_manifest(attempt, keys, true));
    let (out, _) = p.run(&[]);
    p.cat("obs").unwrap_or_else(|| {
        panic!(
            "no observation: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn probe_manifest(attempt: &str, keys: &str, with_input: bool) -> String {
    let source = if with_input {
        "[[step]]\nname = \"seed\"\nscript = \"echo seed-content > $OUTPUT_DIR/data; echo other > $OUTPUT_DIR/other\"\n\n"
    } else {
        ""
    };
    let inputs = if with_input {
        "inputs = [\"data\"]\n"
    } else {
        ""
    };
    format!(
        r#"{source}[[step]]
name = "probe"
{inputs}{keys}
script = '''
set +e
( {attempt}
) > "$TMPDIR/out" 2> "$TMPDIR/err"
rc=$?
if [ $rc -eq 0 ]; then echo ALLOWED; else echo "DENIED $rc"; fi > "$OUTPUT_DIR/obs"
cat "$TMPDIR/out" "$TMPDIR/err" >> "$OUTPUT_DIR/obs"
'''
"#
    )
}

fn assert_denied(obs: &str, why: &[&str]) {
    assert!(obs.starts_with("DENIED"), "not denied: {obs}");
    assert!(
        why.iter().any(|w| obs.contains(w)),
        "denied for another reason than {why:?}: {obs}"
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Removes what a test planted on the host (in /etc or /opt), files or directories, whatever
/// happens to the test.
struct RemovedOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

// ---- Writes -----------------------------------------------------------------------------------

#[test]
fn write_etc_is_read_only() {
    let obs = observe("echo x > /etc/grit-escape-test", "");
    assert_denied(&obs, &["Read-only file system"]);
    assert!(!Path::new("/etc/grit-escape-test").exists());
}

#[test]
fn write_usr_is_read_only() {
    let obs = observe("touch /usr/bin/grit-escape-test", "");
    assert_denied(&obs, &["Read-only file system"]);
    assert!(!Path::new("/usr/bin/grit-escape-test").exists());
}

#[test]
fn write_host_tmp_stays_private() {
    let target = format!("/tmp/grit-escape-{}", std::process::id());
    let obs = observe(&format!("echo x > {target} && cat {target}"), "");
    // /tmp is the task's own tmpfs: the write works there and never reaches the host.
    assert!(obs.starts_with("ALLOWED"), "{obs}");
    assert!(
        !Path::new(&target).exists(),
        "the task wrote the host's /tmp"
    );
}

#[test]
fn host_tmp_content_is_invisible() {
    let marker_file = format!("/tmp/grit-host-secret-{}", std::process::id());
    std::fs::write(&marker_file, "TOP-SECRET-CONTENT").unwrap();
    let obs = observe(&format!("cat {marker_file}"), "");
    std::fs::remove_file(&marker_file).unwrap();
    assert_denied(&obs, &["No such file"]);
    assert!(!obs.contains("TOP-SECRET-CONTENT"));
}

#[test]
fn write_home_is_impossible() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let target = format!("{home}/grit-escape-test");
    let obs = observe(&format!("echo x > {target}"), "");
    assert_denied(
        &obs,
        &[
            "No such file",
            "nonexistent",
            "Read-only",
            "Permission denied",
        ],
    );
    assert!(!Path::new(&target).exists());
}

#[test]
fn write_manifest_dir_is_read_only() {
    let p = Sandboxed::new(&probe_manifest(
        "echo x > ./escape; echo y >> pipeline.toml",
        "",
        false,
    ));
    p.run(&[]);
    let obs = p.cat("obs").unwrap();
    assert_denied(&obs, &["Read-only file system"]);
    assert!(!p.path().join("escape").exists());
    assert!(
        !std::fs::read_to_string(p.path().join("pipeline.toml"))
            .unwrap()
            .contains("\ny\n")
    );
}

#[test]
fn write_into_the_store_is_impossible() {
    let p = Sandboxed::new(&probe_manifest(
        "echo x > db/injected || echo x > db/objects/injected || mkdir db/objects/zz",
        "",
        false,
    ));
    p.run(&[]);
    let obs = p.cat("obs").unwrap();
    assert_denied(&obs, &["No such file", "Read-only", "Permission denied"]);
    assert!(!p.db().join("injected").exists());
    assert!(!p.db().join("objects/injected").exists());
    assert!(!p.db().join("objects/zz").exists());
}

#[test]
fn overwrite_sqlite_is_impossible() {
    let p = Sandboxed::new(&probe_manifest("echo garbage > db/grit.sqlite", "", false));
    p.run(&[]);
    let obs = p.cat("obs").unwrap();
    assert_denied(&obs, &["No such file", "Read-only"]);
    // The store still works.
    assert!(p.grit(&["status"]).status.success());
}

#[test]
fn input_file_is_read_only() {
    let obs = observe_with_input(
        r#"cat "$INPUT_FILE"; echo evil > "$INPUT_FILE" || chmod 666 "$INPUT_FILE" || rm -f "$INPUT_FILE""#,
        "",
    );
    assert_denied(&obs, &["Read-only file system", "Permission denied"]);
    assert!(obs.contains("seed-content"));
}

#[test]
fn other_tasks_output_dirs_are_invisible() {
    // Two tasks run at once; each lists the store's staging area.
    let m = r#"
[[step]]
name = "a"
script = 'sleep 1; ls "$(dirname "$(dirname "$OUTPUT_DIR")")" > "$OUTPUT_DIR/seen_a"'
[[step]]
name = "b"
script = 'sleep 1; ls "$(dirname "$(dirname "$OUTPUT_DIR")")" > "$OUTPUT_DIR/seen_b"'
"#;
    let p = Sandboxed::new(m);
    let (out, _) = p.run(&["-j", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["seen_a", "seen_b"] {
        let seen = p.cat(name).unwrap();
        assert_eq!(
            seen.lines().count(),
            1,
            "{name} saw other task dirs: {seen}"
        );
    }
}

// ---- Reads ------------------------------------------------------------------------------------

#[test]
fn store_objects_are_hidden_except_the_input() {
    let obs = observe_with_input(
        r#"echo "T=$TMPDIR"; echo "O=$OUTPUT_DIR"; find "$PWD/db" -type f"#,
        "",
    );
    assert!(obs.starts_with("ALLOWED"), "{obs}");
    let own = |prefix: &str| {
        obs.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{obs}"))
            .to_string()
    };
    let (tmp, out) = (own("T="), own("O="));
    let files: Vec<&str> = obs
        .lines()
        .filter(|l| l.starts_with('/') && l.contains("/db/"))
        .collect();
    // At most the input object (none where the FUSE capture serves the input itself), and the
    // task's own scratch and output directories.
    let objects = files.iter().filter(|l| l.contains("/db/objects/")).count();
    let served = out.contains("/capture.");
    assert_eq!(objects, usize::from(!served), "objects of the store: {obs}");
    let others: Vec<&&str> = files
        .iter()
        .filter(|l| !l.contains("/db/objects/") && !l.starts_with(&tmp) && !l.starts_with(&out))
        .collect();
    assert!(others.is_empty(), "{others:?}\n{obs}");
    assert!(!obs.contains("grit.sqlite"));
}

#[test]
fn sqlite_file_cannot_be_read() {
    let obs = observe("cat db/grit.sqlite | head -c 16", "");
    assert!(!obs.contains("SQLite format"), "{obs}");
}

#[test]
fn root_only_files_are_unreadable() {
    let obs = observe("cat /etc/shadow", "");
    assert!(!obs.contains("root:"), "/etc/shadow leaked: {obs}");
    if !is_root() {
        assert_denied(&obs, &["Permission denied"]);
    }
}

#[test]
fn every_file_only_root_may_read_in_etc_and_opt_is_hidden_from_a_root_task() {
    // Not only the named secrets (shadow, ssh keys): any file in /etc or /opt that others may
    // not read, and any directory they may not enter, such as a service's key or a database's
    // access rules. What any user may read stays readable.
    if !is_root() {
        eprintln!("skipped: masks apply to a grit running as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tag = format!("grit-test-{}", std::process::id());
    let etc_file = Path::new("/etc").join(format!("{tag}.conf"));
    let etc_dir = Path::new("/etc").join(format!("{tag}.d"));
    std::fs::create_dir_all("/opt").unwrap();
    let opt_dir = Path::new("/opt").join(&tag);
    let _cleanup = RemovedOnDrop(vec![etc_file.clone(), etc_dir.clone(), opt_dir.clone()]);
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(&etc_file, "SECRET-ONE\n", 0o600);
    // A 0711 directory others may enter: its world-readable file stays, its private one goes.
    std::fs::create_dir(&etc_dir).unwrap();
    std::fs::set_permissions(&etc_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    write(&etc_dir.join("public"), "PUBLIC-TEXT\n", 0o644);
    write(&etc_dir.join("private"), "SECRET-TWO\n", 0o640);
    // A directory others may not enter, deep in /opt: hidden whole.
    std::fs::create_dir_all(opt_dir.join("app/conf")).unwrap();
    write(&opt_dir.join("app/conf/token"), "SECRET-THREE\n", 0o644);
    std::fs::set_permissions(opt_dir.join("app"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let obs = observe(
        &format!(
            "cat {} {}/private {}/app/conf/token; cat {}/public",
            etc_file.display(),
            etc_dir.display(),
            opt_dir.display(),
            etc_dir.display()
        ),
        "",
    );
    for secret in ["SECRET-ONE", "SECRET-TWO", "SECRET-THREE"] {
        assert!(!obs.contains(secret), "{secret} leaked: {obs}");
    }
    assert!(
        obs.contains("PUBLIC-TEXT"),
        "a world-readable file was hidden: {obs}"
    );
    // A step that names such a file in `read_only` gets it: the manifest's author asked.
    let granted = observe(
        &format!("cat {}", etc_file.display()),
        &format!("read_only = [\"{}\"]", etc_file.display()),
    );
    assert!(granted.contains("SECRET-ONE"), "{granted}");
}

#[test]
fn a_root_project_inside_a_directory_only_root_may_enter_still_runs() {
    // /opt/<dir> 0700 is hidden from tasks, but a project (manifest and store) inside it must
    // still run; the directory's other files stay hidden.
    if !is_root() {
        eprintln!("skipped: masks apply to a grit running as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let closed = Path::new("/opt").join(format!("grit-test-closed-{}", std::process::id()));
    let _cleanup = RemovedOnDrop(vec![closed.clone()]);
    let project = closed.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(closed.join("sibling-secret"), "SIBLING\n").unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        project.join("pipeline.toml"),
        format!(
            "[[step]]\nname = \"probe\"\nscript = '(cat {}/sibling-secret || echo hidden) > \"$OUTPUT_DIR/obs\" 2>/dev/null'\n",
            closed.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["run", "-m"])
        .arg(project.join("pipeline.toml"))
        .arg("--db")
        .arg(project.join("db"))
        .env_remove("GRIT_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["cat", "obs", "--db"])
        .arg(project.join("db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout), "hidden\n");
}

#[test]
fn a_root_only_directory_that_is_a_mount_of_its_own_is_masked() {
    // A volume mounted on a root-only path (`/etc/ssh` or `/opt/app/keys` in a container) is a
    // mount root in the template's recursive bind of `/etc` or `/opt` already; it must be
    // covered like any root-only directory, not taken for a mask that is in place.
    if !is_root() {
        eprintln!("skipped: masks apply to a grit running as root");
        return;
    }
    if std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipped: unshare -m is unavailable");
        return;
    }
    let dir = Path::new("/opt").join(format!("grit-test-mounted-{}", std::process::id()));
    let _cleanup = RemovedOnDrop(vec![dir.clone()]);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let secret = dir.join("keys/key");
    let p = Sandboxed::new(&format!(
        "[[step]]\nname = \"probe\"\n\
         script = '(cat {} || echo hidden) > \"$OUTPUT_DIR/seen\" 2>/dev/null'\n",
        secret.display()
    ));
    // The volume lives in a mount namespace of this run only, and goes with it.
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec"])
        .arg(
            "mount -t tmpfs -o mode=0700 grit-test-volume \"$1\"; echo TOPSECRET > \"$2\"; \
             chmod 600 \"$2\"; shift 2; exec \"$@\"",
        )
        .arg("sh")
        .arg(dir.join("keys"))
        .arg(&secret)
        .arg(assert_cmd::cargo::cargo_bin("grit"))
        .args(["run", "-m"])
        .arg(p.path().join("pipeline.toml"))
        .arg("--db")
        .arg(p.db())
        .env_remove("GRIT_DB")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.cat("seen").as_deref(), Some("hidden\n"));
}

#[test]
fn a_root_only_file_that_comes_and_goes_never_fails_a_sandbox() {
    // Tools such as `groupadd` write `/etc/gshadow+` (root only) and rename it away a moment
    // later. The sandbox masks every root-only file it finds; one found and then gone before
    // its mask was made failed the whole sandbox ("cannot create mountpoint …: Read-only file
    // system"), so every task of the run. Here a root-only file under /opt comes and goes as
    // fast as it can while runs start their sandboxes.
    if !is_root() {
        eprintln!("skipped: masks apply to a grit running as root");
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = Path::new("/opt").join(format!("grit-test-flicker-{}", std::process::id()));
    let _cleanup = RemovedOnDrop(vec![dir.clone()]);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gshadow+");
    let stop = AtomicBool::new(false);
    let p =
        Sandboxed::new("[[step]]\nname = \"source\"\nscript = 'echo ok > \"$OUTPUT_DIR/ok\"'\n");
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&file);
                let _ = std::fs::remove_file(&file);
            }
        });
        let failures: Vec<String> = (0..25)
            .filter_map(|_| {
                let (out, _) = p.run(&[]);
                (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        assert!(
            failures.is_empty(),
            "{} of 25 runs failed; the first:\n{}",
            failures.len(),
            failures[0]
        );
    });
}

#[test]
fn a_root_only_file_made_during_a_run_is_masked_from_the_next_task_on() {
    // The sandbox masks the root-only paths it knows (/etc/credstore, …) where they exist when
    // its template is built; one a service creates during a run must be masked too. Root only:
    // a task of another user cannot read such a file anyway.
    if !is_root() {
        eprintln!("skipped: masks apply to a grit running as root");
        return;
    }
    let secret_dir = Path::new("/etc/credstore.encrypted");
    if secret_dir.exists() {
        eprintln!("skipped: /etc/credstore.encrypted exists on this machine");
        return;
    }
    let p = Sandboxed::new(
        "[[step]]\nname = \"first\"\nscript = 'sleep 1.5; echo > \"$OUTPUT_DIR/first\"'\n\n\
         [[step]]\nname = \"later\"\ninputs = [\"first\"]\n\
         script = 'cat /etc/credstore.encrypted/secret > \"$OUTPUT_DIR/seen\" 2>/dev/null || echo denied > \"$OUTPUT_DIR/seen\"'\n",
    );
    let command = p.command(&[]);
    let run = std::process::Command::new(command.get_program())
        .args(command.get_args())
        .env_remove("GRIT_DB")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first task's sandbox (and its template) exists by now; the secret comes after it.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _cleanup = RemovedOnDrop(vec![secret_dir.to_path_buf()]);
    std::fs::create_dir(secret_dir).unwrap();
    std::fs::set_permissions(
        secret_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let secret = secret_dir.join("secret");
    std::fs::write(&secret, "TOPSECRET\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nlog: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        p.log_of_step("later")
    );
    assert_eq!(p.cat("seen").as_deref(), Some("denied\n"));
}

#[test]
fn host_home_and_root_dirs_are_absent() {
    let obs = observe("ls /root || ls /home/* || ls /srv/*", "");
    assert_denied(&obs, &["No such file"]);
}

#[test]
fn sys_and_host_devices_are_absent() {
    let obs = observe("ls /dev; ls /sys/fs/cgroup", "");
    assert_denied(&obs, &["No such file"]);
    let dev: Vec<&str> = obs
        .lines()
        .skip(1)
        .take_while(|l| !l.contains("ls:"))
        .collect();
    for allowed in ["null", "zero", "full", "random", "urandom", "tty"] {
        assert!(dev.contains(&allowed), "/dev lacks {allowed}: {obs}");
    }
    assert!(
        !obs.contains("kmsg")
            && !obs.contains("sda")
            && !obs.contains("vda")
            && !obs.contains("mem\n")
    );
}

// ---- Network ----------------------------------------------------------------------------------

fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn tcp_to_a_host_loopback_port_fails_without_network() {
    let (_l, port) = listener();
    let obs = observe(&format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'"), "");
    assert_denied(&obs, &["Connection refused", "unreachable"]);
}

#[test]
fn tcp_to_a_host_loopback_port_works_with_network() {
    let (_l, port) = listener();
    let obs = observe(
        &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}'"),
        "network = true",
    );
    assert!(obs.starts_with("ALLOWED"), "{obs}");
}

#[test]
fn outside_network_is_unreachable() {
    let obs = observe("bash -c 'exec 3<>/dev/tcp/1.1.1.1/53'", "timeout = \"20s\"");
    assert_denied(&obs, &["unreachable"]);
}

const ABSTRACT_CONNECT: &str = r#"perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!"; connect($s, pack_sockaddr_un("\0NAME")) or die "connect: $!\n"; print "connected\n"'"#;

#[test]
fn abstract_unix_socket_of_the_host_is_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("grit-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _l = UnixListener::bind_addr(&addr).unwrap();
    let attempt = ABSTRACT_CONNECT.replace("NAME", &name);
    // Private network namespace: a different abstract namespace.
    let obs = observe(&attempt, "");
    assert_denied(&obs, &["connect:"]);
    // Shared network: landlock's abstract-socket scope still refuses it.
    let obs = observe(&attempt, "network = true");
    assert_denied(&obs, &["connect: Operation not permitted"]);
}

// ---- Processes --------------------------------------------------------------------------------

#[test]
fn outside_processes_are_invisible_and_unsignalable() {
    let me = std::process::id();
    let obs = observe(
        &format!("ls /proc | grep -c '^[0-9]'; test ! -e /proc/{me} && kill -0 {me}"),
        "",
    );
    assert_denied(&obs, &["No such process"]);
    let visible: usize = obs
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(999);
    assert!(visible < 10, "{visible} pids visible: {obs}");
}

#[test]
fn ptrace_of_init_and_outside_is_denied() {
    if !Path::new("/usr/bin/strace").exists() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let me = std::process::id();
    let obs = observe(
        &format!("strace -p 1 -e none & sleep 1; kill %1; strace -p {me}"),
        "",
    );
    assert_denied(&obs, &["Operation not permitted", "No such process"]);
    assert!(!obs.contains("attached"), "{obs}");
}

// ---- Privilege --------------------------------------------------------------------------------

#[test]
fn mount_is_denied() {
    let obs = observe("mount -t tmpfs none \"$TMPDIR\"", "");
    assert_denied(
        &obs,
        &[
            "permission denied",
            "Operation not permitted",
            "must be superuser",
        ],
    );
}

#[test]
fn unshare_of_a_user_namespace_is_denied() {
    let obs = observe("unshare -Ur true", "");
    assert_denied(&obs, &["No space left", "Operation not permitted"]);
}

#[test]
fn unshare_of_mount_and_net_namespaces_is_denied() {
    let obs = observe("unshare -m true || unshare -n true", "");
    assert_denied(&obs, &["Operation not permitted"]);
}

#[test]
fn chroot_is_denied() {
    let obs = observe("chroot / true", "");
    assert_denied(&obs, &["Operation not permitted"]);
}

#[test]
fn setuid_binaries_gain_nothing() {
    // su is setuid root on most distributions; the mounts are nosuid and no_new_privs is set.
    let obs = observe(
        "grep NoNewPrivs /proc/self/status; grep -E ' /usr ' /proc/self/mountinfo; su -c id root </dev/null",
        "",
    );
    assert_denied(
        &obs,
        &[
            "Authentication",
            "must be run from a terminal",
            "failure",
            "Permission denied",
            "not permitted",
        ],
    );
    assert!(obs.contains("NoNewPrivs:\t1"), "{obs}");
    assert!(obs.contains("nosuid"), "{obs}");
}

/// The task's uid is grit's: a set-user-ID file it made in a writable place would run as grit's
/// user (or root) for anyone who can reach it, after the task, outside the sandbox.
#[test]
fn no_set_user_or_group_id_file_can_be_made_in_a_writable_place() {
    let extra = tempfile::tempdir().unwrap();
    open_up(extra.path());
    let rw = extra.path().join("shared");
    std::fs::create_dir(&rw).unwrap();
    open_up(&rw);
    let attempts = [
        ("chmod", "cp /bin/true {rw}/a && chmod 4755 {rw}/a"),
        ("chmod g+s", "cp /bin/true {rw}/b && chmod g+s {rw}/b"),
        ("install -m", "install -m 4755 /bin/true {rw}/c"),
        ("mkdir -m", "mkdir -m 2775 {rw}/d"),
        (
            "open with a mode",
            "perl -e 'use Fcntl; sysopen(my $f, \"{rw}/e\", O_CREAT|O_WRONLY, 04755) or die \"$!\\n\"'",
        ),
        (
            "scratch",
            "cp /bin/true \"$TMPDIR/f\" && chmod 4755 \"$TMPDIR/f\"",
        ),
    ];
    for (what, attempt) in attempts {
        let rw_path = rw.display().to_string();
        let obs = observe(
            &attempt.replace("{rw}", &rw_path),
            &format!("read_write = [\"{rw_path}\"]"),
        );
        assert_denied(&obs, &["Operation not permitted"]);
        assert!(!obs.contains("{rw}"), "{what}: {obs}");
    }
    for entry in std::fs::read_dir(&rw).unwrap() {
        let entry = entry.unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        assert_eq!(mode & 0o6000, 0, "{:?} has mode {mode:o}", entry.path());
    }
    // Ordinary modes still work.
    let rw_path = rw.display().to_string();
    let obs = observe(
        &format!(
            "cp /bin/true {rw_path}/ok && chmod 755 {rw_path}/ok && mkdir -m 775 {rw_path}/dir"
        ),
        &format!("read_write = [\"{rw_path}\"]"),
    );
    assert!(obs.starts_with("ALLOWED"), "{obs}");
}

/// Keyrings are not namespaced: a task must neither read grit's session keyring nor leave keys
/// in it for other tasks; io_uring would bypass the filter that guards the rest.
#[test]
fn kernel_keyrings_and_io_uring_are_unavailable() {
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), add_key and io_uring_setup.
    #[cfg(target_arch = "x86_64")]
    let (keyctl, add_key, io_uring_setup) = (250, 248, 425);
    #[cfg(target_arch = "aarch64")]
    let (keyctl, add_key, io_uring_setup) = (219, 217, 425);
    let obs = observe(
        &format!(
            "perl -e 'for my $c ([{keyctl}, 0, -3, 0], [{add_key}, \"user\", \"k\", \"v\", 1, -3], [{io_uring_setup}, 1, 0]) {{ \
               my $n = shift @$c; my $r = syscall($n, @$c); print \"$n: $r $!\\n\"; }}'; exit 1"
        ),
        "",
    );
    for call in [keyctl, add_key, io_uring_setup] {
        assert!(
            obs.contains(&format!("{call}: -1 Function not implemented")),
            "{call}: {obs}"
        );
    }
}

#[test]
fn device_nodes_cannot_be_created() {
    let obs = observe("mknod \"$TMPDIR/mem\" c 1 1 || mknod /tmp/mem c 1 1", "");
    assert_denied(&obs, &["Operation not permitted", "Permission denied"]);
}

/// The device nodes are the host's own inodes: a task running as their owner (root) must not
/// change their mode or times host-wide, through them or through a mask over a secret.
#[test]
fn device_nodes_and_masks_cannot_be_changed() {
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata("/dev/full").unwrap();
    for attempt in [
        "chmod 600 /dev/full",
        "touch -d 2001-01-01 /dev/full",
        "chmod 600 /dev/null",
    ] {
        let obs = observe(&format!("echo x > /dev/null && {attempt}"), "");
        assert_denied(&obs, &["Read-only file system", "Operation not permitted"]);
    }
    if is_root() {
        let obs = observe("chmod 666 /etc/shadow", "");
        assert_denied(&obs, &["Read-only file system"]);
    }
    let after = std::fs::metadata("/dev/full").unwrap();
    assert_eq!(before.mode(), after.mode());
    assert_eq!(before.mtime(), after.mtime());
    assert_eq!(
        std::fs::metadata("/dev/null").unwrap().mode() & 0o777,
        0o666
    );
}

#[test]
fn hostname_and_sysctl_cannot_change() {
    let obs = observe(
        "hostname; hostname evil || echo evil > /proc/sys/kernel/hostname",
        "",
    );
    assert_denied(
        &obs,
        &["Operation not permitted", "Permission denied", "Read-only"],
    );
    assert!(obs.contains("grit"), "{obs}");
}

#[test]
fn no_capabilities_remain() {
    let obs = observe("grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status", "");
    assert!(obs.starts_with("ALLOWED"));
    assert_eq!(obs.matches("0000000000000000").count(), 5, "{obs}");
}

// ---- Limits -----------------------------------------------------------------------------------

#[test]
fn fork_bomb_is_stopped_by_the_process_limit() {
    let m = marker(1);
    let obs = observe(
        &format!(
            "sh -c 'for i in $(seq 60); do sleep {m} & done' 2>/dev/null; set -- /proc/[0-9]*; echo \"pids=$#\""
        ),
        "processes = 16",
    );
    let pids: usize = obs
        .lines()
        .find_map(|l| l.strip_prefix("pids="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{obs}"));
    assert!(pids <= 17, "{pids} processes under a limit of 16: {obs}");
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
}

/// The directory under which a grit running as root makes its tasks' pids cgroups (the cgroup
/// v1 pids hierarchy, or a cgroup v2 subtree with the pids controller), as grit finds it.
fn pids_cgroup_base() -> Option<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            let dir = Path::new("/sys/fs/cgroup/pids").join(rel);
            if dir.is_dir() {
                return Some(dir);
            }
        }
    }
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    enabled
        .split_whitespace()
        .any(|c| c == "pids")
        .then_some(dir)
}

#[test]
fn task_cgroups_left_by_grits_that_are_gone_are_swept() {
    if !is_root() {
        eprintln!("skipped: per-task pids cgroups are made only by a grit running as root");
        return;
    }
    let Some(base) = pids_cgroup_base() else {
        eprintln!("skipped: no pids cgroup hierarchy here");
        return;
    };
    // What a grit killed with `kill -9`, or the last task of an earlier run, leaves: an empty
    // task cgroup named after a pid no process has (above any pid_max), here an hour old.
    let departed = base.join("grit-4194399-0");
    let _ = std::fs::remove_dir(&departed);
    std::fs::create_dir(&departed).unwrap();
    let aged = std::process::Command::new("touch")
        .args(["-m", "-d", "1 hour ago"])
        .arg(&departed)
        .status()
        .unwrap();
    assert!(aged.success());
    // A fresh one may belong to a grit of another pid namespace between creating it and
    // cloning its task into it: it stays.
    let fresh = base.join("grit-4194398-0");
    let _ = std::fs::remove_dir(&fresh);
    std::fs::create_dir(&fresh).unwrap();

    let obs = observe("echo limited", "processes = 16");
    let departed_left = departed.exists();
    let fresh_left = fresh.exists();
    let _ = std::fs::remove_dir(&departed);
    let _ = std::fs::remove_dir(&fresh);
    assert!(obs.starts_with("ALLOWED"), "{obs}");
    assert!(!departed_left, "the departed grit's cgroup was not swept");
    assert!(
        fresh_left,
        "a cgroup younger than the sweep's age limit was removed"
    );
}

#[test]
fn a_slow_admission_of_the_task_still_lets_it_write_its_outputs() {
    // grit tells its FUSE capture which processes are the task's by the pid namespace of the
    // task's init, read from /proc after the zygote answered. A process that made itself
    // non-dumpable hides that from a reader without CAP_SYS_PTRACE (a root service whose
    // bounding set lacks it, as hardened units do), so init must stay dumpable until grit has
    // read it, however late (here 300 ms, as on a loaded machine), or the task loses its own
    // OUTPUT_DIR.
    if !is_root() {
        eprintln!("skipped: the FUSE capture, which this is about, needs root here");
        return;
    }
    let p = Sandboxed::new(
        "[[step]]\nname = \"late\"\nscript = 'echo written > \"$OUTPUT_DIR/late\"'\n",
    );
    let run = p.command(&[]);
    let mut hardened = std::process::Command::new("setpriv");
    hardened
        .args(["--bounding-set", "-sys_ptrace", "--"])
        .arg(run.get_program())
        .args(run.get_args())
        .env_remove("GRIT_DB")
        .env("NO_COLOR", "1")
        .env("GRIT_TEST_ADMIT_DELAY_MS", "300");
    let out = hardened.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}\nlog: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        p.log_of_step("late")
    );
    assert_eq!(p.cat("late").as_deref(), Some("written\n"));
}

#[test]
fn many_process_limited_tasks_at_once_all_get_their_cgroup() {
    // As root on the cgroup v1 pids hierarchy, a task's init joined its cgroup by a write of its
    // own, which could come after the next spawn's sweep had removed the still-empty cgroup: the
    // task then failed with "cannot join the pids cgroup" (every run of this manifest did, on
    // this machine). Runs elsewhere use other paths and must pass too.
    let p = Sandboxed::new(
        "[[step]]\nname = \"src\"\nscript = 'for i in $(seq 1 60); do echo $i > $OUTPUT_DIR/item_$i; done'\n\n\
         [[step]]\nname = \"work\"\ninputs = [\"item_*\"]\nparallel = 8\nprocesses = 16\n\
         script = 'cat $INPUT_FILE > $OUTPUT_DIR/out_$GRIT_INPUT_NAME'\n",
    );
    let (out, json) = p.run(&["-j", "8"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["succeeded"], 61, "{json}");
}

#[test]
fn real_fork_bomb_is_contained_and_killed_by_the_timeout() {
    let m = marker(2);
    let p = Sandboxed::new(&format!(
        "[[step]]\nname = \"bomb\"\nprocesses = 50\ntimeout = \"3s\"\nscript = '''\nsleep {m} &\nbomb() {{ bomb | bomb & }}\nbomb\nwait\n'''\n"
    ));
    let (out, json) = p.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["failed"], 1);
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
}

#[test]
fn memory_hog_is_stopped_by_the_memory_limit() {
    let obs = observe(
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo len=${#x}",
        "memory = \"100M\"",
    );
    assert!(obs.starts_with("DENIED"), "{obs}");
    assert!(!obs.contains("len=300000000"));
}

#[test]
fn endless_loop_is_killed_by_the_timeout_without_survivors() {
    let m = marker(3);
    let p = Sandboxed::new(&format!(
        "[[step]]\nname = \"spin\"\ntimeout = \"1s\"\nscript = '''\nsleep {m} &\n(sleep {m} &)\nwhile :; do :; done\n'''\n"
    ));
    let (out, json) = p.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert!(
        p.log_of_step("spin").contains("timed out"),
        "{}",
        p.log_of_step("spin")
    );
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
}

#[test]
fn cpu_limit_kills_a_spinning_task() {
    let obs = observe("sh -c 'while :; do :; done'", "cpu = \"1s\"");
    // SIGXCPU: 128 + 24.
    assert!(obs.starts_with("DENIED 152"), "{obs}");
}

#[test]
fn open_files_limit_applies() {
    let obs = observe("ulimit -n; exec 40</dev/null", "open_files = 32");
    assert!(obs.contains("32"), "{obs}");
    assert!(obs.starts_with("DENIED"), "{obs}");
}

// ---- Escapes by link --------------------------------------------------------------------------

#[test]
fn symlink_in_output_publishes_nothing_from_outside() {
    let p = Sandboxed::new(
        "[[step]]\nname = \"link\"\nscript = '''\nln -s \"$PWD/db/grit.sqlite\" \"$OUTPUT_DIR/sq\"\nln -s /etc/passwd \"$OUTPUT_DIR/pw\"\necho ok > \"$OUTPUT_DIR/fine\"\n'''\n",
    );
    p.run(&[]);
    for name in ["sq", "pw"] {
        if let Some(content) = p.cat(name) {
            assert!(
                !content.contains("SQLite format") && !content.contains("root:"),
                "{name} published outside content"
            );
        }
    }
}

#[test]
fn hard_link_to_outside_files_is_refused() {
    let obs = observe(
        "ln /etc/passwd \"$OUTPUT_DIR/pw\" || ln \"$PWD/pipeline.toml\" \"$OUTPUT_DIR/m\"",
        "",
    );
    assert_denied(
        &obs,
        &[
            "Invalid cross-device link",
            "Operation not permitted",
            "Read-only",
        ],
    );
}

// ---- Lingering --------------------------------------------------------------------------------

#[test]
fn background_process_is_killed_and_late_writes_are_not_published() {
    let m = marker(4);
    let p = Sandboxed::new(&format!(
        "[[step]]\nname = \"linger\"\nscript = '''\n(sleep {m}; echo late > \"$OUTPUT_DIR/late\") &\necho early > \"$OUTPUT_DIR/early\"\n'''\n"
    ));
    let (out, _) = p.run(&[]);
    assert!(out.status.success());
    assert_eq!(p.cat("early").as_deref(), Some("early\n"));
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
    assert!(p.cat("late").is_none());
}

// ---- Positive cases ---------------------------------------------------------------------------

#[test]
fn a_normal_pipeline_works_inside_the_sandbox() {
    let p = Sandboxed::new(
        r#"
[[step]]
name = "fetch"
script = '''
cat words.txt > "$OUTPUT_DIR/words"
'''
[[step]]
name = "sort"
inputs = ["words"]
script = '''
sort "$INPUT_FILE" > "$TMPDIR/sorted"
echo hi > /tmp/t && cat /tmp/t > /dev/null
cp "$TMPDIR/sorted" "$OUTPUT_DIR/sorted"
test "$HOME" = "$TMPDIR"
'''
[[step]]
name = "count"
inputs = ["sorted"]
gather = true
script = '''
cat "$INPUT_DIR"/* | wc -l > "$OUTPUT_DIR/count"
'''
"#,
    );
    std::fs::write(p.path().join("words.txt"), "pear\napple\nfig\n").unwrap();
    let (out, json) = p.run(&[]);
    assert!(
        out.status.success(),
        "{json} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.cat("sorted").as_deref(), Some("apple\nfig\npear\n"));
    assert_eq!(
        p.cat("count").map(|s| s.trim().to_string()).as_deref(),
        Some("3")
    );
}

#[test]
fn extra_read_only_and_read_write_paths_are_honoured() {
    let extra = tempfile::tempdir().unwrap();
    open_up(extra.path());
    let ro = extra.path().join("ref");
    let rw = extra.path().join("cache");
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    open_up(&rw);
    std::fs::write(ro.join("table"), "reference").unwrap();
    let obs = observe(
        &format!(
            "cat {0}/table && echo c > {1}/c && ! echo x > {0}/x",
            ro.display(),
            rw.display()
        ),
        &format!(
            "read_only = [\"{}\"]\nread_write = [\"{}\"]",
            ro.display(),
            rw.display()
        ),
    );
    assert!(obs.starts_with("ALLOWED"), "{obs}");
    assert_eq!(std::fs::read_to_string(rw.join("c")).unwrap(), "c\n");
    assert!(!ro.join("x").exists());
}

#[test]
fn sandbox_off_and_no_sandbox_opt_out() {
    let attempt = "echo $$; test -f db/grit.sqlite";
    let obs = observe(attempt, "sandbox = \"off\"");
    assert!(obs.starts_with("ALLOWED"), "{obs}");
    let p = Sandboxed::new(&probe_manifest(attempt, "", false));
    p.run(&["--no-sandbox"]);
    assert!(p.cat("obs").unwrap().starts_with("ALLOWED"));
}

// ---- Ending grit ------------------------------------------------------------------------------

fn spawn_grit_with_sleepers(m: &str) -> (Sandboxed, std::process::Child) {
    let p = Sandboxed::new(&format!(
        "[[step]]\nname = \"a\"\nscript = 'sleep {m} & sleep {m}'\n[[step]]\nname = \"b\"\nscript = 'sleep {m}'\n"
    ));
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"))
        .args(["run", "-q", "-j", "2", "-m"])
        .arg(p.path().join("pipeline.toml"))
        .arg("--db")
        .arg(p.db())
        .env_remove("GRIT_DB")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for_process(&format!("sleep {m}")),
        "tasks never started"
    );
    (p, child)
}

#[test]
fn kill_9_of_grit_leaves_no_task_alive() {
    let m = marker(5);
    let (_p, mut child) = spawn_grit_with_sleepers(&m);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
}

#[test]
fn a_task_whose_init_starts_after_grit_was_killed_never_runs_its_script() {
    // grit writes a task's go byte as soon as it holds the task's pidfd, which can be before
    // the task's init first runs (a loaded machine). Killed then, grit is gone before init ties
    // itself to grit (the parent-death signal), so no signal comes, and the byte is waiting:
    // the script ran on with no grit. The test hook holds every init for 2 s before that tie.
    let m = marker(8);
    let p = Sandboxed::new(&format!("[[step]]\nname = \"a\"\nscript = 'sleep {m}'\n"));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("grit"))
        // Without the FUSE capture, whose end with grit would fail init's mounts anyway.
        .args(["run", "-q", "--capture", "dir", "-m"])
        .arg(p.path().join("pipeline.toml"))
        .arg("--db")
        .arg(p.db())
        .env_remove("GRIT_DB")
        .env("GRIT_TEST_INIT_START_DELAY_MS", "2000")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the task's init (grit's child in a pid namespace of its own), then give grit a
    // moment to send its go while init waits in the hook.
    let own_pid_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let grit = child.id();
    let init_started = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            parent.as_deref() == Some(grit.to_string().as_str())
                && std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|ns| ns != own_pid_ns)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !init_started() {
        assert!(std::time::Instant::now() < deadline, "no task started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // Past the hook, and time for a script to start.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
    // Init reached its check and said so in the task's log.
    let said = walkdir(&p.db()).into_iter().any(|file| {
        std::fs::read_to_string(file)
            .is_ok_and(|text| text.contains("grit ended before the task started; not run"))
    });
    assert!(said, "the task's log does not say why it did not run");
}

/// Every file under `dir`.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(t) if t.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

#[test]
fn sigterm_and_sigint_kill_every_task_and_exit_143_130() {
    for (signal, code, n) in [(libc::SIGTERM, 143, 6), (libc::SIGINT, 130, 7)] {
        let m = marker(n);
        let (_p, mut child) = spawn_grit_with_sleepers(&m);
        // Both tasks must be running before the signal.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while processes_with(&format!("sleep {m}")).len() < 3
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        // SAFETY: kill(2) on the child we spawned.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {signal}");
        assert_eq!(survivors(&format!("sleep {m}")), Vec::<u32>::new());
    }
}

// ---- Reaching in: other users, other runs (issue 20) -------------------------------------------
//
// The scenarios above keep a task inside its sandbox; these keep everyone else out of a running
// task's OUTPUT_DIR and out of the store: another local user, and another grit run of the same
// user. Each holds a task mid-run (it has written `data` and `gone` and waits for a `go` file in
// the project directory) while the test attempts to get in.

/// The unprivileged user the suite reruns as; also "user A" of an unprivileged run.
const UNPRIVILEGED_USER: &str = "grit-sbx-test";
/// "User B": a local user with no rights on anything of A's.
const OTHER_USER: &str = "grit-other-test";
/// A group B belongs to, for stores shared with `--group`.
const SHARE_GROUP: &str = "grit-share-test";

/// Creates the system user `name` if it does not exist; false (with a printed reason) when that
/// is impossible.
fn ensure_user(name: &str) -> bool {
    let exists = std::process::Command::new("id")
        .arg(name)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return true;
    }
    let made = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", "--shell", "/bin/sh", name])
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        eprintln!("skipped: useradd {name} is unavailable ({made:?})");
        return false;
    }
    true
}

/// As root and with `OTHER_USER` available; else false with a printed reason.
fn other_user_available() -> bool {
    if !is_root() {
        eprintln!("skipped: creating and switching to the user {OTHER_USER} needs root");
        return false;
    }
    ensure_user(OTHER_USER)
}

/// Runs `sh -c script` as `user` (only its own group, or its groups with `with_groups`); the
/// script's stdout and stderr, with `D` set to `dir`.
fn as_user(user: &str, with_groups: bool, dir: &Path, script: &str) -> String {
    let groups = if with_groups {
        "--init-groups"
    } else {
        "--clear-groups"
    };
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid", user, "--regid", user, groups, "--", "sh", "-c", script,
        ])
        .env("D", dir)
        .current_dir("/")
        .output()
        .expect("setpriv");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `grit run` whose task `slow` is held mid-run.
struct Held {
    p: Sandboxed,
    child: std::process::Child,
    /// The task's OUTPUT_DIR, read from its environment.
    output_dir: std::path::PathBuf,
    /// The task's scratch directory (`TMPDIR`), likewise.
    scratch_dir: std::path::PathBuf,
}

/// Starts `grit run --json` (as `run_as`, else as the test's user) on a step `slow` with extra
/// `keys`, and waits until it has written `data` and `gone` into its OUTPUT_DIR.
fn hold_a_task(run_as: Option<&str>, keys: &str, extra: &[&str], n: u32) -> Held {
    hold_a_task_after(run_as, keys, "", extra, n)
}

/// [`hold_a_task`] whose script runs `prelude` first.
fn hold_a_task_after(
    run_as: Option<&str>,
    keys: &str,
    prelude: &str,
    extra: &[&str],
    n: u32,
) -> Held {
    let m = marker(n);
    let p = Sandboxed::new(&format!(
        r#"[[step]]
name = "slow"
{keys}
script = '''
{prelude}
echo data > "$OUTPUT_DIR/data"
echo gone > "$OUTPUT_DIR/gone"
sleep {m} &
i=0
while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
kill $!
'''
"#
    ));
    let grit = assert_cmd::cargo::cargo_bin("grit");
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
                .arg(&grit)
                .env("HOME", "/nonexistent");
            c
        }
        None => std::process::Command::new(&grit),
    };
    let child = cmd
        .args(["run", "--json", "-m"])
        .arg(p.path().join("pipeline.toml"))
        .arg("--db")
        .arg(p.db())
        .args(extra)
        .env_remove("GRIT_DB")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run grit");
    assert!(
        wait_for_process(&format!("sleep {m}")),
        "the task never started"
    );
    let pid = processes_with(&format!("sleep {m}"))[0];
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("task environment");
    let variable = |name: &str| {
        let prefix = format!("{name}=");
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
            .map(|v| std::path::PathBuf::from(String::from_utf8_lossy(v).into_owned()))
            .unwrap_or_else(|| panic!("{name} in the task's environment"))
    };
    Held {
        p,
        child,
        output_dir: variable("OUTPUT_DIR"),
        scratch_dir: variable("TMPDIR"),
    }
}

impl Held {
    /// Lets the task finish; returns the project and grit's stdout (the JSON summary last).
    fn release(self) -> (Sandboxed, String) {
        std::fs::write(self.p.path().join("go"), "").expect("go");
        let out = self.child.wait_with_output().expect("grit");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (self.p, stdout)
    }
}

/// Every way into a task directory; prints a line for each that worked, then `done`.
const INTRUSIONS: &str = r#"
ls "$D" >/dev/null 2>&1 && echo "list allowed"
cat "$D/data" 2>/dev/null && echo "read allowed"
(echo evil > "$D/evil") 2>/dev/null && echo "create allowed"
(echo evil >> "$D/data") 2>/dev/null && echo "write allowed"
mv "$D/data" "$D/moved" 2>/dev/null && echo "rename allowed"
rm "$D/gone" 2>/dev/null && echo "unlink allowed"
ls "$(dirname "$D")" >/dev/null 2>&1 && echo "listing the capture root allowed"
echo done
"#;

/// After the run: `data` and `gone` were published unchanged, nothing else was.
fn assert_outputs_untouched(p: &Sandboxed) {
    let mut names: Vec<String> = p.resources().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, vec!["data", "gone"]);
    assert_eq!(p.cat("data").as_deref(), Some("data\n"));
}

#[test]
fn another_user_cannot_reach_a_running_task_of_root_or_of_a_user() {
    if !other_user_available() || !ensure_user(UNPRIVILEGED_USER) {
        return;
    }
    // Root's run captures through FUSE; an unprivileged user's through a plain directory.
    for (run_as, n) in [(None, 20), (Some(UNPRIVILEGED_USER), 21)] {
        let held = hold_a_task(run_as, "", &[], n);
        let runtime_dir = held.output_dir.parent().and_then(Path::parent).unwrap();
        let said = as_user(
            OTHER_USER,
            false,
            &held.output_dir,
            &format!(
                "{INTRUSIONS}\nls {} >/dev/null 2>&1 && echo listing the runtime directory allowed",
                runtime_dir.display()
            ),
        );
        let (p, _) = held.release();
        assert_eq!(said, "done\n", "{OTHER_USER} got into a task of {run_as:?}");
        assert_outputs_untouched(&p);
    }
}

#[test]
fn another_user_cannot_read_a_store_of_root_or_of_a_user() {
    if !other_user_available() || !ensure_user(UNPRIVILEGED_USER) {
        return;
    }
    for (run_as, n) in [(None, 22), (Some(UNPRIVILEGED_USER), 23)] {
        let held = hold_a_task(run_as, "", &[], n);
        let (p, _) = held.release();
        let db = p.db();
        assert_store_private(&db);
        let object = first_object(&db);
        let grit = assert_cmd::cargo::cargo_bin("grit");
        let said = as_user(
            OTHER_USER,
            false,
            &db,
            &format!(
                r#"cat "$D/grit.sqlite" >/dev/null 2>&1 && echo "database readable"
                   ls "$D" >/dev/null 2>&1 && echo "store listable"
                   ls "$D/objects" >/dev/null 2>&1 && echo "objects listable"
                   cat {object} >/dev/null 2>&1 && echo "object readable"
                   {grit} log 1 --db "$D" >/dev/null 2>&1 && echo "logs readable"
                   {grit} status --db "$D" >/dev/null 2>&1 && echo "status readable"
                   echo done"#,
                object = object.display(),
                grit = grit.display(),
            ),
        );
        assert_eq!(said, "done\n", "{OTHER_USER} read the store of {run_as:?}");
    }
}

/// Every directory of the store is 0700, every object 0400, every other file 0600.
fn assert_store_private(db: &Path) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![db.to_path_buf()];
    let mut objects = 0;
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if path.starts_with(db.join("objects")) {
            assert_eq!(mode, 0o400, "{}", path.display());
            objects += 1;
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
    assert!(objects >= 3, "the outputs and the log are objects");
}

fn first_object(db: &Path) -> std::path::PathBuf {
    let mut dir = db.join("objects");
    for _ in 0..3 {
        dir = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
    }
    dir
}

/// Makes sure group [`SHARE_GROUP`] exists with [`OTHER_USER`] in it; false (said) if it cannot.
fn share_group_has_other_user() -> bool {
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "getent group {SHARE_GROUP} >/dev/null || groupadd --system {SHARE_GROUP}; \
             gpasswd -a {OTHER_USER} {SHARE_GROUP} >/dev/null"
        ))
        .status();
    let ok = matches!(made, Ok(ref s) if s.success());
    if !ok {
        eprintln!("skipped: cannot create the group {SHARE_GROUP} ({made:?})");
    }
    ok
}

#[test]
fn a_store_made_with_group_is_readable_by_that_group_only() {
    use std::os::unix::fs::MetadataExt;
    if !other_user_available() {
        return;
    }
    if !share_group_has_other_user() {
        return;
    }
    let held = hold_a_task(None, "", &["--group", SHARE_GROUP], 24);
    let (p, _) = held.release();
    let object = first_object(&p.db());
    let read = format!("cat {} >/dev/null && echo readable", object.display());
    assert_eq!(as_user(OTHER_USER, true, &p.db(), &read), "readable\n");
    // Without the group, nothing.
    assert!(!as_user(OTHER_USER, false, &p.db(), &read).contains("readable\n"));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o7777;
    assert_eq!(mode(&p.db()), 0o2750);
    assert_eq!(mode(&p.db().join("objects")), 0o2750);
    assert_eq!(mode(&object), 0o440);
    assert_eq!(mode(&p.db().join("grit.sqlite")), 0o640);
}

#[test]
fn the_group_of_a_shared_store_cannot_read_a_task_scratch_directory_the_task_opened_up() {
    // A group store lets its group read objects and the database, never a running task's
    // scratch files: even a task that opens its scratch directory and files to everyone keeps
    // them from the group, since the directory holding every scratch directory is the owner's.
    if !other_user_available() {
        return;
    }
    if !share_group_has_other_user() {
        return;
    }
    let prelude =
        r#"chmod 755 "$TMPDIR"; echo SCRATCH-SECRET > "$TMPDIR/notes"; chmod 644 "$TMPDIR/notes""#;
    let held = hold_a_task_after(None, "", prelude, &["--group", SHARE_GROUP], 26);
    let said = as_user(
        OTHER_USER,
        true,
        &held.scratch_dir,
        r#"cat "$D/notes" 2>/dev/null; ls "$D" >/dev/null 2>&1 && echo "scratch listable"; echo done"#,
    );
    let (p, _) = held.release();
    assert_eq!(
        said, "done\n",
        "the store's group reached the task's scratch"
    );
    // The group still reads what the store shares with it.
    let object = first_object(&p.db());
    let read = format!("cat {} >/dev/null && echo readable", object.display());
    assert_eq!(as_user(OTHER_USER, true, &p.db(), &read), "readable\n");
}

#[test]
fn a_second_run_of_the_same_user_cannot_reach_a_running_task() {
    if !is_root() {
        // Unprivileged, the capture is a plain directory: its mode keeps other users out, but
        // cannot tell one run of a user from another (a sandboxed task of the second run cannot
        // see it; an unsandboxed one is that user, with all its rights).
        eprintln!("skipped: the per-request check of the FUSE capture needs root");
        return;
    }
    let held = hold_a_task(None, "", &["--capture", "fuse"], 25);
    // Another run of the same user, whose unsandboxed task tries every way in.
    let intruder = Sandboxed::new(&format!(
        "[[step]]\nname = \"intrude\"\nsandbox = \"off\"\nscript = '''\n{INTRUSIONS}\n'''\n"
    ));
    let second = intruder
        .command(&[])
        .env("D", &held.output_dir)
        .output()
        .expect("second run");
    let said = intruder.log_of_step("intrude");
    // Nor can the test itself, root as well.
    let direct = std::process::Command::new("sh")
        .arg("-c")
        .arg(INTRUSIONS)
        .env("D", &held.output_dir)
        .output()
        .expect("sh");
    let (p, stdout) = held.release();
    assert!(second.status.success(), "{second:?}");
    assert!(said.contains("done") && !said.contains("allowed"), "{said}");
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "done\n");
    assert_outputs_untouched(&p);
    // The refusals are named in the task's log and in the run summary.
    let log = p.log_of_step("slow");
    assert!(
        log.contains("grit: OUTPUT_DIR: refused ") && log.contains(", uid 0: "),
        "{log}"
    );
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("JSON summary");
    let refused = summary["refused_accesses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        refused.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains(" from pid ") && l.contains(", uid 0: "))),
        "{summary}"
    );
}

// ---- Unprivileged rerun -----------------------------------------------------------------------

/// As root, reruns this whole test binary as a user created for the purpose.
#[test]
fn unprivileged_rerun() {
    if !is_root() || std::env::var_os("GRIT_SANDBOX_UNPRIVILEGED").is_some() {
        return;
    }
    let user = UNPRIVILEGED_USER;
    if !ensure_user(user) {
        eprintln!("skipped: so the unprivileged rerun cannot run");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .arg(&exe)
        .args(["--test-threads", "2", "--skip", "unprivileged_rerun"])
        .env("GRIT_SANDBOX_UNPRIVILEGED", "1")
        .env("HOME", "/nonexistent")
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "unprivileged rerun failed:\n{text}");
    assert!(text.contains("test result: ok"), "{text}");
}

#[test]
fn positive_the_script_gets_grits_environment_and_the_contract() {
    // The sandboxed spawn builds the script's environment itself; it must be what std's Command
    // gives the plain spawn: grit's own variables, the step's, and the contract's.
    let p = Sandboxed::new(
        r#"
[[step]]
name = "seed"
env = { MINE = "step" }
script = 'echo "step=$GRIT_STEP mine=$MINE inherited=$GRIT_TEST_INHERITED" > "$OUTPUT_DIR/env"'
"#,
    );
    let mut seen = Vec::new();
    for extra in [&[][..], &["--no-sandbox"][..]] {
        let _ = std::fs::remove_dir_all(p.db());
        let output = p
            .command(extra)
            .env("GRIT_TEST_INHERITED", "yes")
            .output()
            .expect("run grit");
        assert_eq!(output.status.code(), Some(0), "{extra:?}: {output:?}");
        seen.push(p.cat("env").expect("env output"));
    }
    // OUTPUT_DIR itself is per-capture and per-task; that the file arrived proves it.
    for env in &seen {
        assert_eq!(env, "step=seed mine=step inherited=yes\n", "{seen:?}");
    }
}
