//! The shared output-capture suite (issue 4): the same cases run through the real `grit` binary
//! once per capture mode (`--capture fuse` and `--capture dir`). Each asserts that the stored
//! hashes (`grit resources --json`) equal the SHA-256 of the content the script wrote, and that no
//! grit mount is left behind afterwards, also after a `kill -9` of grit followed by another run.
//! FUSE cases are skipped with a printed reason when /dev/fuse cannot be used.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{Project, describe, sha256_hex};
use serde_json::Value;

/// The cases run one at a time: "no stale grit mount" is a global property of the machine, and
/// the kill -9 case leaves one on purpose until the next run.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The modes to run: both where FUSE works, else `dir` only (with a printed reason).
fn modes() -> Vec<&'static str> {
    match std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) if nix::unistd::geteuid().is_root() => vec!["fuse", "dir"],
        Ok(_) => {
            eprintln!("skipping --capture fuse: FUSE mounts need root here");
            vec!["dir"]
        }
        Err(e) => {
            eprintln!("skipping --capture fuse: cannot open /dev/fuse: {e}");
            vec!["dir"]
        }
    }
}

/// `fuse.grit` mounts in our mount table whose owning grit process is dead.
fn stale_grit_mounts() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("fuse.grit "))
        })
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| {
            let pid = Path::new(mp)
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("capture."))
                .and_then(|r| r.split('.').next())
                .and_then(|p| p.parse::<i32>().ok());
            match pid {
                Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                None => true,
            }
        })
        .collect()
}

fn assert_no_grit_mount_left() {
    let stale = stale_grit_mounts();
    assert!(stale.is_empty(), "grit mounts left behind: {stale:?}");
}

/// Run with `--capture MODE`, assert success, and check no mount is left.
fn run_ok(p: &Project, mode: &str) -> Value {
    let (out, json) = p.run(&["--capture", mode]);
    assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
    assert_no_grit_mount_left();
    json
}

/// Live resources as name -> hash, checked against the content `grit cat` returns.
fn live(p: &Project) -> Vec<(String, String, u64)> {
    let mut v: Vec<(String, String, u64)> = p
        .resources(false)
        .into_iter()
        .filter(|r| r["live"].as_bool() == Some(true))
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["hash"].as_str().unwrap_or_default().to_string(),
                r["size"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    v.sort();
    v
}

fn hash_of(p: &Project, name: &str) -> Vec<String> {
    live(p)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, h, _)| h)
        .collect()
}

fn source_step(script: &str) -> String {
    format!("[[step]]\nname = \"src\"\nonce = true\nscript = '''\n{script}\n'''\n")
}

/// A plain task (`--no-sandbox`) is known to the capture by its process group; a child that
/// starts a session of its own (`setsid`) leaves the group but is still the task's, and writes
/// its outputs like any other process of the task.
#[test]
fn a_child_in_a_new_session_writes_its_task_outputs() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"setsid -w sh -c 'echo detached > "$OUTPUT_DIR/x"'"#,
        ));
        let s = run_ok(&p, mode);
        assert_eq!(s["resources_new"], 1, "[{mode}] {s}");
        assert_eq!(live(&p)[0].1, sha256_hex(b"detached\n"), "[{mode}]");
    }
}

#[test]
fn thousand_small_files() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"i=1; while [ $i -le 1000 ]; do echo "file $i" > "$OUTPUT_DIR/f_$i"; i=$((i+1)); done"#,
        ));
        let s = run_ok(&p, mode);
        assert_eq!(s["resources_new"], 1000, "[{mode}] {s}");
        let live = live(&p);
        assert_eq!(live.len(), 1000);
        for (name, hash, size) in live {
            let i = name.strip_prefix("f_").expect("name");
            let content = format!("file {i}\n");
            assert_eq!(hash, sha256_hex(content.as_bytes()), "[{mode}] {name}");
            assert_eq!(size, content.len() as u64);
        }
    }
}

/// A task may write more files than grit may hold descriptors open (`ulimit -n`): the FUSE
/// capture gives a file's staging descriptor back when the task closes it (it kept all of them
/// open until the task ended, and a source writing 50,000 files failed with EMFILE).
#[test]
fn more_output_files_than_open_descriptors() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"i=1; while [ $i -le 600 ]; do echo "file $i" > "$OUTPUT_DIR/f_$i"; i=$((i+1)); done"#,
        ));
        let grit = assert_cmd::cargo::cargo_bin("grit");
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 200 && exec "$0" "$@""#)
            .arg(&grit)
            .args(["run", "--json", "--no-sandbox", "--capture", mode, "-m"])
            .arg(p.manifest())
            .arg("--db")
            .arg(p.db())
            .env_remove("GRIT_DB")
            .output()
            .expect("run grit");
        assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
        assert_no_grit_mount_left();
        let live = live(&p);
        assert_eq!(live.len(), 600, "[{mode}]");
        for (name, hash, _) in live {
            let i = name.strip_prefix("f_").expect("name");
            assert_eq!(
                hash,
                sha256_hex(format!("file {i}\n").as_bytes()),
                "[{mode}] {name}"
            );
        }
    }
}

#[test]
fn one_gib_file() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new("");
        let sum = p.path().join("expected.sha256");
        p.write_manifest(&source_step(&format!(
            r#"head -c 1073741824 /dev/urandom | tee "$OUTPUT_DIR/big" | sha256sum > {}"#,
            sum.display()
        )));
        run_ok(&p, mode);
        let want = std::fs::read_to_string(&sum).expect("sum");
        let want = want.split_whitespace().next().expect("hash").to_string();
        let live = live(&p);
        assert_eq!(
            live,
            vec![("big".to_string(), want.clone(), 1 << 30)],
            "[{mode}]"
        );
        // The object really holds that content.
        let data = std::fs::read(p.object_path(&want)).expect("object");
        assert_eq!(sha256_hex(&data), want, "[{mode}]");
    }
}

#[test]
fn chunks_at_random_offsets() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new("");
        let src = p.path().join("src.bin");
        let data: Vec<u8> = (0..64 * 65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        std::fs::write(&src, &data).expect("write src");
        p.write_manifest(&source_step(&format!(
            r#"for i in $(seq 0 63 | shuf); do
  dd if={src} of="$OUTPUT_DIR/r" bs=65536 skip=$i seek=$i count=1 conv=notrunc status=none
done"#,
            src = src.display()
        )));
        run_ok(&p, mode);
        assert_eq!(hash_of(&p, "r"), vec![sha256_hex(&data)], "[{mode}]");
    }
}

#[test]
fn append_sort_rename_truncate() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"cd "$OUTPUT_DIR"
echo a > app; echo b >> app; printf c >> app
printf '3\n1\n2\n' > s; sort -o s s
echo tmp > tmpname; mv tmpname renamed
echo one > over; echo two > other; mv other over
printf 0123456789 > t; truncate -s 4 t
echo gone > del; rm del"#,
        ));
        run_ok(&p, mode);
        let want: Vec<(String, String, u64)> = [
            ("app", &b"a\nb\nc"[..]),
            ("over", b"two\n"),
            ("renamed", b"tmp\n"),
            ("s", b"1\n2\n3\n"),
            ("t", b"0123"),
        ]
        .iter()
        .map(|(n, c)| (n.to_string(), sha256_hex(c), c.len() as u64))
        .collect();
        assert_eq!(live(&p), want, "[{mode}]");
    }
}

/// A file removed (or renamed over) while a descriptor holds it open stays readable and writable
/// through that descriptor, as on any filesystem: the temporary-file idiom `exec 3< f; rm f`.
#[test]
fn an_open_file_outlives_its_name() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"cd "$OUTPUT_DIR"
seq 1 5 > scratch
exec 3< scratch
rm scratch
sum=$(awk '{s+=$1} END {print s}' <&3)
echo "$sum" > total
echo old > over
exec 4<> over
echo new > replacement
mv replacement over
echo late >&4
cat <&4 > /dev/null
echo "$(cat over)" > seen"#,
        ));
        run_ok(&p, mode);
        let want: Vec<(String, String, u64)> = [
            ("over", &b"new\n"[..]),
            ("seen", b"new\n"),
            ("total", b"15\n"),
        ]
        .iter()
        .map(|(n, c)| (n.to_string(), sha256_hex(c), c.len() as u64))
        .collect();
        assert_eq!(live(&p), want, "[{mode}]");
    }
}

/// A listing that removes files as it goes sees every file once. glibc's `readdir` reads up to
/// 1 MiB of entries per `getdents` here, about 32,000 names, so 40,000 files take two reads, and
/// the second one must go on after the removals made since the first.
#[test]
fn removing_files_while_listing_them_misses_none() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"cd "$OUTPUT_DIR"
i=0; while [ $i -lt 40000 ]; do : > tmp_$i; i=$((i+1)); done
echo keep > result
perl -e 'opendir(my $d, ".") or die; while (defined(my $f = readdir($d))) { unlink($f) or die "$f: $!" if $f =~ /^tmp_/ }'"#,
        ));
        run_ok(&p, mode);
        let names: Vec<String> = live(&p).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["result"], "[{mode}]");
    }
}

/// Without the sandbox a process can leave the task's process group (`setsid`) and outlive it.
/// One that still holds an output open must not be able to change the stored object afterwards.
#[test]
fn a_process_left_behind_cannot_change_a_stored_output() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"echo good > "$OUTPUT_DIR/x"
setsid sh -c 'exec 3>>"$0"; sleep 1; echo late >&3' "$OUTPUT_DIR/x" </dev/null >/dev/null 2>&1 &
sleep 0.3"#,
        ));
        let (out, _) = p.run(&["--capture", mode]);
        assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
        std::thread::sleep(Duration::from_millis(1500));
        let verify = p.grit(&["verify"]);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "[{mode}] {}",
            describe(&verify)
        );
        let cat = p.grit(&["cat", "x"]);
        assert_eq!(cat.stdout, b"good\n", "[{mode}] {}", describe(&cat));
    }
}

/// Every run cleans the capture mounts of grits that are gone. A grit run as root without
/// `CAP_SYS_PTRACE` (a hardened service) may not look into another root grit's descriptors, and
/// took a running grit's mount for abandoned: it aborted that run's capture.
#[test]
fn a_run_without_cap_sys_ptrace_leaves_a_running_captures_mount_alone() {
    let _g = serial();
    if !modes().contains(&"fuse") {
        return;
    }
    let running = Project::new(&source_step(r#"sleep 2; echo done > "$OUTPUT_DIR/x""#));
    let long = running
        .run_command(&["--capture", "fuse"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let hardened = Project::new(&source_step(r#"echo q > "$OUTPUT_DIR/q""#));
    let run = hardened.run_command(&["--capture", "fuse"]);
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_ptrace", "--"])
        .arg(run.get_program())
        .args(run.get_args())
        .env_remove("GRIT_DB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let long_out = long.wait_with_output().unwrap();
    assert_eq!(long_out.status.code(), Some(0), "{}", describe(&long_out));
    assert_eq!(hash_of(&running, "x"), [sha256_hex(b"done\n")]);
}

#[test]
fn two_tasks_write_the_same_name_at_the_same_time() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(
            r#"[[step]]
name = "src"
once = true
script = 'echo 1 > "$OUTPUT_DIR/item_1"; echo 2 > "$OUTPUT_DIR/item_2"'

[[step]]
name = "work"
inputs = ["item_*"]
script = '''
n=$(cat "$INPUT_FILE")
seq 1 $((n * 100000)) > "$OUTPUT_DIR/out"
'''
"#,
        );
        let (out, _) = p.run(&["--capture", mode, "-j", "2"]);
        assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
        assert_no_grit_mount_left();
        let mut hashes = hash_of(&p, "out");
        hashes.sort();
        let seq = |hi: u32| -> String {
            sha256_hex(
                (1..=hi)
                    .map(|i| format!("{i}\n"))
                    .collect::<String>()
                    .as_bytes(),
            )
        };
        let mut want = vec![seq(100000), seq(200000)];
        want.sort();
        assert_eq!(hashes, want, "[{mode}]");
    }
}

#[test]
fn script_still_writing_after_its_task_was_killed() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new("");
        let pidfile = p.path().join("survivor.pid");
        p.write_manifest(&format!(
            r#"[[step]]
name = "src"
once = true
timeout = "1s"
script = '''
echo early > "$OUTPUT_DIR/early"
# A writer in its own session survives the kill of the task's process group.
setsid sh -c 'echo $$ > {pid}; exec 3>>"$OUTPUT_DIR/late"; while :; do echo x >&3 || exit 0; echo y > "$OUTPUT_DIR/new" || true; sleep 0.05; done' &
sleep 30
'''
"#,
            pid = pidfile.display()
        ));
        let (out, json) = p.run(&["--capture", mode]);
        assert_eq!(out.status.code(), Some(1), "[{mode}] {}", describe(&out));
        assert_eq!(json["failed"], 1, "[{mode}] {json}");
        // Let the survivor keep trying for a while, then stop it.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let pid: i32 = pid.trim().parse().expect("pid");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(live(&p).is_empty(), "[{mode}] {:?}", live(&p));
        assert_no_grit_mount_left();
        // Nothing the survivor wrote turns up in the store's staging area or later runs.
        p.write_manifest(&source_step(r#"echo fine > "$OUTPUT_DIR/fine""#));
        run_ok(&p, mode);
        assert_eq!(
            live(&p),
            vec![("fine".into(), sha256_hex(b"fine\n"), 5)],
            "[{mode}]"
        );
    }
}

#[test]
fn exceeded_quota_fails_the_task() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(
            r#"[[step]]
name = "src"
once = true
max_output = 10000
script = '''
head -c 6000 /dev/zero > "$OUTPUT_DIR/a"
head -c 6000 /dev/zero > "$OUTPUT_DIR/b" || true
'''
"#,
        );
        let (out, json) = p.run(&["--capture", mode]);
        assert_eq!(out.status.code(), Some(1), "[{mode}] {}", describe(&out));
        let failure = json["failures"][0].to_string();
        assert!(failure.contains("ENOSPC"), "[{mode}] {failure}");
        assert!(failure.contains("max_output"), "[{mode}] {failure}");
        assert!(live(&p).is_empty());
        assert_no_grit_mount_left();
    }
}

/// A tmpfs of `size` mounted on a fresh directory; detached on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("tempdir");
        match nix::mount::mount(
            Some("grit-test"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        ) {
            Ok(()) => Some(SmallDisk(dir)),
            Err(e) => {
                eprintln!("skipping the full-disk case: cannot mount a tmpfs: {e}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_disk_fails_the_task_and_keeps_what_was_published() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new("");
        let Some(disk) = SmallDisk::new("24m") else {
            return;
        };
        let db = disk.0.path().join("db");
        let run = |manifest: &str| {
            p.write_manifest(manifest);
            let out = assert_cmd::Command::cargo_bin("grit")
                .expect("grit")
                .args(["run", "--json", "--no-sandbox", "--capture", mode, "-m"])
                .arg(p.manifest())
                .arg("--db")
                .arg(&db)
                .env_remove("GRIT_DB")
                .output()
                .expect("run grit");
            assert_no_grit_mount_left();
            (
                out.status.code(),
                common::parse_last_json(&out),
                describe(&out),
            )
        };
        let resources = || -> Vec<Value> {
            let out = assert_cmd::Command::cargo_bin("grit")
                .expect("grit")
                .args(["resources", "--json", "--db"])
                .arg(&db)
                .output()
                .expect("grit resources");
            let v: Value = serde_json::from_slice(&out.stdout).expect("json");
            v["resources"].as_array().cloned().unwrap_or_default()
        };
        let kept: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();
        let kept_file = p.path().join("kept.bin");
        std::fs::write(&kept_file, &kept).expect("write kept");
        let first = format!(
            "{}\n[[step]]\nname = \"fill\"\nonce = true\nscript = '''\n%FILL%\n'''\n",
            source_step(&format!(
                r#"cat {} > "$OUTPUT_DIR/kept""#,
                kept_file.display()
            ))
        );
        let (code, _, d) = run(&first.replace("%FILL%", "true"));
        assert_eq!(code, Some(0), "[{mode}] {d}");
        // Now a step that writes more than the disk holds.
        let (code, json, d) = run(&first.replace(
            "%FILL%",
            r#"head -c 67108864 /dev/zero > "$OUTPUT_DIR/huge""#,
        ));
        assert_eq!(code, Some(1), "[{mode}] {d}");
        let failure = json["failures"][0].to_string();
        assert_eq!(json["failures"][0]["step"], "fill", "[{mode}] {d}");
        if mode == "fuse" {
            // The capture saw the ENOSPC itself: it reaches the failure record or, when the full
            // disk keeps the script's stderr out of the task log, grit's own log on stderr.
            assert!(
                failure.contains("No space left on device")
                    || failure.contains("ENOSPC")
                    || d.contains("ENOSPC"),
                "[{mode}] {d}"
            );
        }
        // With --capture dir only the script sees the ENOSPC, and its stderr goes to a task log
        // on the same full disk, so no message names it (known gap of the dir capture).
        // What was published before is intact.
        let res = resources();
        assert_eq!(res.len(), 1, "[{mode}] {res:?}");
        assert_eq!(res[0]["hash"], sha256_hex(&kept), "[{mode}]");
        let stored = db
            .join("objects")
            .join(&sha256_hex(&kept)[..2])
            .join(&sha256_hex(&kept)[2..4])
            .join(&sha256_hex(&kept)[4..]);
        assert_eq!(
            sha256_hex(&std::fs::read(stored).expect("object")),
            sha256_hex(&kept)
        );
        // With room, a later run succeeds.
        let (code, _, d) = run(&first.replace(
            "%FILL%",
            r#"head -c 1048576 /dev/zero > "$OUTPUT_DIR/huge""#,
        ));
        assert_eq!(code, Some(0), "[{mode}] {d}");
        let names: Vec<String> = resources()
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(names.contains(&"huge".to_string()), "[{mode}] {names:?}");
        drop(disk);
    }
}

#[test]
fn kill_9_of_grit_leaves_no_mount_after_the_next_run() {
    let _g = serial();
    for mode in modes() {
        let p = Project::new(&source_step(
            r#"echo partial > "$OUTPUT_DIR/partial"; sleep 60"#,
        ));
        let grit = assert_cmd::cargo::cargo_bin("grit");
        let mut child = Command::new(&grit)
            .args(["run", "--no-sandbox", "--capture", mode, "-m"])
            .arg(p.manifest())
            .arg("--db")
            .arg(p.db())
            .env_remove("GRIT_DB")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn grit");
        // Wait until the task has written its file (the run is in the middle of the task).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // FUSE stages `<db>/tmp/fuse-*`; the dir capture writes `<db>/tmp/out-*/partial`.
            let written = std::fs::read_dir(p.db().join("tmp"))
                .map(|d| {
                    d.flatten().any(|e| {
                        e.file_name().to_string_lossy().starts_with("fuse-")
                            || e.path().join("partial").exists()
                    })
                })
                .unwrap_or(false);
            if written {
                break;
            }
            assert!(Instant::now() < deadline, "[{mode}] the task never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9 grit");
        let _ = child.wait();
        if mode == "fuse" {
            assert!(
                !stale_grit_mounts().is_empty(),
                "kill -9 should leave a mount for the next run to clean up"
            );
        }
        // The next run detaches the stale mount, recovers the task and finishes it.
        p.write_manifest(&source_step(r#"echo done > "$OUTPUT_DIR/partial""#));
        run_ok(&p, mode);
        assert_eq!(
            live(&p),
            vec![("partial".into(), sha256_hex(b"done\n"), 5)],
            "[{mode}]"
        );
    }
}

#[test]
fn refused_outputs_fail_the_task_and_are_named_in_its_log() {
    let _g = serial();
    for mode in modes() {
        for (script, name) in [
            (r#"mkdir "$OUTPUT_DIR/sub""#, "OUTPUT_DIR/sub"),
            (r#"ln -s /etc/passwd "$OUTPUT_DIR/link""#, "OUTPUT_DIR/link"),
            (r#"echo x > "$OUTPUT_DIR/.hidden""#, "OUTPUT_DIR/.hidden"),
        ] {
            // The script goes on after the refusal and ends well: the task fails all the same.
            let p = Project::new(&format!(
                "[[step]]\nname = \"bad\"\nonce = true\nscript = '''\necho ok > \"$OUTPUT_DIR/fine\"\n{script} || true\necho more > \"$OUTPUT_DIR/more\"\n'''\n"
            ));
            let (out, json) = p.run(&["--capture", mode]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "[{mode}] {script}: {}",
                describe(&out)
            );
            assert_eq!(json["failed"], 1, "[{mode}] {script}");
            assert!(
                live(&p).is_empty(),
                "[{mode}] {script}: a failed task publishes nothing"
            );
            let log = p.grit(&["log", "1"]);
            let text = String::from_utf8_lossy(&log.stdout);
            assert!(
                text.contains(name),
                "[{mode}] {script}: the log does not name {name}:\n{text}"
            );
            assert_no_grit_mount_left();
        }
    }
}
