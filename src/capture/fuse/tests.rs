//! Tests of the FUSE capture: real mounts (as root; skipped with a printed reason when /dev/fuse
//! cannot be used), driven by real shell commands writing into the task directory, checking every
//! captured hash against an independent SHA-256 of the content.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{FuseCapture, cleanup_stale_mounts, mounts};
use crate::capture::CapturedFile;
use crate::capture::{Capture, CaptureError};

/// A store-like directory with a `tmp/` staging area, and the mounted capture.
struct Fixture {
    _db: tempfile::TempDir,
    staging: PathBuf,
    cap: FuseCapture,
}

fn fixture() -> Option<Fixture> {
    if let Err(why) = FuseCapture::available() {
        eprintln!("skipping FUSE test: {why}");
        return None;
    }
    let db = tempfile::tempdir().expect("tempdir");
    let staging = db.path().join("tmp");
    std::fs::create_dir(&staging).expect("mkdir tmp");
    let cap = FuseCapture::mount(&staging).expect("mount");
    Some(Fixture {
        _db: db,
        staging,
        cap,
    })
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Run `sh -c script` with OUTPUT_DIR set (and SCRATCH, a private scratch dir).
fn sh(out: &Path, script: &str) -> Output {
    let scratch = out.parent().map(|_| std::env::temp_dir());
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .env("OUTPUT_DIR", out)
        .env("SCRATCH", scratch.unwrap_or_default())
        .output()
        .expect("spawn sh")
}

fn sh_ok(out: &Path, script: &str) {
    let o = sh(out, script);
    assert!(
        o.status.success(),
        "script failed: {script}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Check that each captured file's hash and size match its staged content, and return
/// name -> content.
fn contents(files: &[CapturedFile]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|f| {
            let data = std::fs::read(&f.staged).expect("read staged");
            assert_eq!(f.hash, sha(&data), "hash of {}", f.name);
            assert_eq!(f.size, data.len() as u64, "size of {}", f.name);
            (f.name.clone(), data)
        })
        .collect()
}

fn staged_names(staging: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(staging)
        .expect("read staging")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts::parse_mountinfo(&info)
        .iter()
        .any(|m| m.mountpoint == mp)
}

#[test]
fn thousand_small_files() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("t1", None).expect("start");
    sh_ok(
        &out,
        r#"i=1; while [ $i -le 1000 ]; do echo "file $i" > "$OUTPUT_DIR/f_$i"; i=$((i+1)); done
           [ "$(ls "$OUTPUT_DIR" | wc -l)" -eq 1000 ]"#,
    );
    let (files, refusals) = fx.cap.finish_task("t1").expect("finish");
    assert!(refusals.is_empty(), "{refusals:?}");
    assert_eq!(files.len(), 1000);
    let got = contents(&files);
    for (name, data) in got {
        let i: u32 = name.strip_prefix("f_").expect("name").parse().expect("num");
        assert_eq!(data, format!("file {i}\n").into_bytes());
    }
    // Finishing removes the task directory.
    assert!(!out.exists());
}

#[test]
fn one_gib_file_matches_sha256sum() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("big", None).expect("start");
    let sum = tempfile::NamedTempFile::new().expect("tmp");
    sh_ok(
        &out,
        &format!(
            r#"head -c 1073741824 /dev/urandom | tee "$OUTPUT_DIR/big" | sha256sum > {}"#,
            sum.path().display()
        ),
    );
    let (files, _) = fx.cap.finish_task("big").expect("finish");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].size, 1 << 30);
    let want = std::fs::read_to_string(sum.path()).expect("sum");
    assert_eq!(files[0].hash, want.split_whitespace().next().expect("hash"));
    // The staged file really holds that content.
    let data = std::fs::read(&files[0].staged).expect("read staged");
    assert_eq!(files[0].hash, sha(&data));
}

#[test]
fn chunks_at_random_offsets() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("rnd", None).expect("start");
    let src = tempfile::NamedTempFile::new().expect("tmp");
    let data: Vec<u8> = (0..64 * 65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.path(), &data).expect("write src");
    // Shell: dd each 64 KiB chunk into place, in shuffled order, one process per chunk.
    sh_ok(
        &out,
        &format!(
            r#"for i in $(seq 0 63 | shuf); do
                 dd if={src} of="$OUTPUT_DIR/dd" bs=65536 skip=$i seek=$i count=1 conv=notrunc status=none
               done"#,
            src = src.path().display()
        ),
    );
    // Rust: one open file, pwrite at shuffled offsets with odd sizes, then one overwrite.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(out.join("pw")).expect("create pw");
        let mut order: Vec<usize> = (0..97).collect();
        let mut x = 12345u64;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let chunk = 10007;
        for i in order {
            let start = i * chunk;
            let end = ((i + 1) * chunk).min(data.len());
            if start < end {
                f.write_all_at(&data[start..end], start as u64)
                    .expect("pwrite");
            }
        }
        f.write_all_at(&data[..5000], 0).expect("rewrite head");
    }
    let (files, _) = fx.cap.finish_task("rnd").expect("finish");
    let got = contents(&files);
    let pw_len = (97 * 10007).min(data.len());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "dd");
    assert_eq!(files[0].hash, sha(&data));
    assert_eq!(got[1].0, "pw");
    assert_eq!(files[1].hash, sha(&data[..pw_len]));
}

/// Map `len` bytes of `f` shared, for reading (and writing when `write`).
fn map_shared(f: &std::fs::File, len: usize, write: bool) -> *mut u8 {
    use std::os::fd::AsRawFd;
    let prot = libc::PROT_READ | if write { libc::PROT_WRITE } else { 0 };
    // SAFETY: a fresh mapping of an open file; the caller unmaps it with the same length.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

#[test]
fn shared_mmap_writes_and_reads_are_captured() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("mm", None).expect("start");
    let len = 3 * 4096 + 100;
    let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 + 3) as u8).collect();
    // Written through a shared mapping (as databases and some linkers do), then re-read.
    {
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out.join("mapped"))
            .expect("create");
        f.set_len(len as u64).expect("set_len");
        let p = map_shared(&f, len, true);
        // SAFETY: p maps len bytes, writable; msync/munmap use the same range.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p, len);
            assert_eq!(libc::msync(p.cast(), len, libc::MS_SYNC), 0, "msync");
            assert_eq!(libc::munmap(p.cast(), len), 0, "munmap");
        }
    }
    assert_eq!(std::fs::read(out.join("mapped")).expect("read back"), data);
    // Written with write(2), then read through a mapping in another open.
    std::fs::write(out.join("written"), &data).expect("write");
    {
        let f = std::fs::File::open(out.join("written")).expect("open");
        let p = map_shared(&f, len, false);
        // SAFETY: p maps len readable bytes until munmap.
        let seen = unsafe { std::slice::from_raw_parts(p, len).to_vec() };
        // SAFETY: same range as mapped.
        unsafe { libc::munmap(p.cast(), len) };
        assert_eq!(seen, data);
    }
    let (files, refusals) = fx.cap.finish_task("mm").expect("finish");
    assert!(refusals.is_empty(), "{refusals:?}");
    assert_eq!(
        contents(&files),
        vec![
            ("mapped".to_string(), data.clone()),
            ("written".to_string(), data)
        ]
    );
}

/// Pages of `f` in the kernel's page cache (`cachestat(2)`, Linux 6.5), or None without it.
fn cached_pages(f: &std::fs::File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // The syscall number is 451 on every architecture (the unified table); libc lacks a name.
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = [0u64, 0]; // offset 0, length 0 = to the end of the file
    let mut stat = [0u64; 5]; // nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted
    // SAFETY: both pointers are valid for the sizes the kernel reads and writes.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            range.as_ptr(),
            stat.as_mut_ptr(),
            0,
        )
    };
    (rc == 0).then_some(stat[0])
}

#[test]
fn outputs_are_not_kept_twice_in_the_page_cache() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("pc", None).expect("start");
    let data = vec![42u8; 1 << 20];
    {
        use std::io::{Read, Seek, Write};
        // One descriptor throughout: a new open would drop the cache and hide a copy.
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(out.join("big"))
            .expect("create");
        f.write_all(&data).expect("write");
        f.rewind().expect("rewind");
        let mut back = Vec::new();
        f.read_to_end(&mut back).expect("read back");
        assert_eq!(back, data);
        match cached_pages(&f) {
            // Written and read with direct I/O: the only copy in RAM is the staging file's.
            Some(pages) => assert_eq!(pages, 0, "pages of the FUSE file in the page cache"),
            None => eprintln!("skipping the page-cache check: no cachestat(2) here"),
        }
    }
    let (files, _) = fx.cap.finish_task("pc").expect("finish");
    assert_eq!(contents(&files), vec![("big".to_string(), data)]);
}

#[test]
fn append_sort_rename_truncate_unlink() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("ops", None).expect("start");
    sh_ok(
        &out,
        r#"cd "$OUTPUT_DIR"
           echo a > app; echo b >> app; printf c >> app
           printf '3\n1\n2\n' > s; sort -o s s; [ "$(cat s)" = "$(printf '1\n2\n3')" ]
           echo tmp > tmpname; mv tmpname renamed
           echo one > over; echo two > other; mv other over
           printf 0123456789 > t; truncate -s 4 t
           printf ab > grow; truncate -s 5 grow
           echo full > empty; : > empty
           echo gone > del; rm del
           echo x > rw; echo y >> rw; [ "$(wc -l < rw)" -eq 2 ]
           sed -i 's/x/z/' rw
           [ "$(ls | tr '\n' ' ')" = "app empty grow over renamed rw s t " ]"#,
    );
    let (files, refusals) = fx.cap.finish_task("ops").expect("finish");
    assert!(refusals.is_empty(), "{refusals:?}");
    let got = contents(&files);
    let want: Vec<(&str, &[u8])> = vec![
        ("app", b"a\nb\nc"),
        ("empty", b""),
        ("grow", b"ab\0\0\0"),
        ("over", b"two\n"),
        ("renamed", b"tmp\n"),
        ("rw", b"z\ny\n"),
        ("s", b"1\n2\n3\n"),
        ("t", b"0123"),
    ];
    let got: Vec<(&str, &[u8])> = got
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    assert_eq!(got, want);
    // Only the captured files are left in staging (deleted/overwritten ones are gone).
    assert_eq!(staged_names(&fx.staging).len(), files.len());
}

/// A closed file keeps only its digest (its hash state is sealed): every way of opening it again
/// must still end in the hash of its final content.
#[test]
fn files_closed_and_written_again_hash_their_final_content() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("again", None).expect("start");
    sh_ok(
        &out,
        r#"cd "$OUTPUT_DIR"
           touch e; echo x >> e
           : > z; : > z
           printf 12 > a; printf 34 >> a; printf 56 >> a
           printf abc > w; printf X | dd of=w bs=1 seek=1 conv=notrunc 2>/dev/null
           printf old > r; mv r moved; printf er >> moved
           for i in 1 2 3; do echo $i >> loop; done"#,
    );
    let (files, refusals) = fx.cap.finish_task("again").expect("finish");
    assert!(refusals.is_empty(), "{refusals:?}");
    let got = contents(&files);
    let got: Vec<(&str, &[u8])> = got
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let want: Vec<(&str, &[u8])> = vec![
        ("a", b"123456"),
        ("e", b"x\n"),
        ("loop", b"1\n2\n3\n"),
        ("moved", b"older"),
        ("w", b"aXc"),
        ("z", b""),
    ];
    assert_eq!(got, want);
}

#[test]
fn refusals_get_errno_and_message() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("ref", None).expect("start");
    let o = sh(
        &out,
        r#"cd "$OUTPUT_DIR"; echo ok > keep
           mkdir sub 2>&1 || true
           ln -s keep sym 2>&1 || true
           ln keep hard 2>&1 || true
           mkfifo fifo 2>&1 || true
           { echo x > .hidden; } 2>&1 || true
           mv keep .dot 2>/dev/null || echo "mv refused"
           [ -f keep ]"#,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert_eq!(
        stdout.matches("Operation not permitted").count(),
        4,
        "{stdout}"
    );
    assert_eq!(stdout.matches("Invalid argument").count(), 1, "{stdout}");
    assert!(stdout.contains("mv refused"), "{stdout}");
    // Each refusal also fails the task, as the plain-directory capture's checks do: the
    // message lists them all, and nothing is handed over.
    let all = match fx.cap.finish_task("ref") {
        Err(crate::capture::CaptureError::Rule(msg)) => msg,
        Err(e) => panic!("unexpected error: {e}"),
        Ok((files, refusals)) => panic!(
            "the task was not failed: {:?} {refusals:?}",
            contents(&files)
        ),
    };
    assert!(all.starts_with("capturing outputs failed: "), "{all}");
    for needle in [
        "OUTPUT_DIR/sub: refused a directory (mkdir)",
        "OUTPUT_DIR/sym: refused a symbolic link",
        "OUTPUT_DIR/hard: refused a hard link",
        "OUTPUT_DIR/fifo: refused a special file",
        "OUTPUT_DIR/.hidden: an output name must not start with '.'; creating it was refused",
        "OUTPUT_DIR/.dot: an output name must not start with '.'; renaming to it was refused",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in {all}");
    }
}

/// Run `sh -c script` in a process group of its own: a process of grit's uid that is no task.
fn sh_outsider(out: &Path, script: &str) -> Output {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("OUTPUT_DIR", out)
        .process_group(0)
        .output()
        .expect("spawn sh")
}

#[test]
fn only_the_task_and_grit_reach_a_task_directory() {
    use std::os::unix::fs::PermissionsExt;
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("mine", None).expect("start");
    sh_ok(
        &out,
        r#"echo data > "$OUTPUT_DIR/data"; echo gone > "$OUTPUT_DIR/gone""#,
    );
    // Owner-only modes, on the mount point, the task directory and its files.
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(fx.cap.mountpoint()), 0o700);
    assert_eq!(mode(fx.cap.mountpoint().parent().unwrap()), 0o700);
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("data")), 0o600);
    let o = sh_outsider(
        &out,
        r#"cd "$OUTPUT_DIR" 2>/dev/null && echo "cd allowed"
           echo evil > "$OUTPUT_DIR/evil" 2>/dev/null && echo "create allowed"
           echo evil > "$OUTPUT_DIR/data" 2>/dev/null && echo "write allowed"
           echo evil >> "$OUTPUT_DIR/data" 2>/dev/null && echo "append allowed"
           cat "$OUTPUT_DIR/data" 2>/dev/null && echo "read allowed"
           ls "$OUTPUT_DIR" 2>/dev/null && echo "list allowed"
           ls "$OUTPUT_DIR/.." 2>/dev/null && echo "root list allowed"
           mv "$OUTPUT_DIR/data" "$OUTPUT_DIR/moved" 2>/dev/null && echo "rename allowed"
           rm "$OUTPUT_DIR/gone" 2>/dev/null && echo "unlink allowed"
           truncate -s 0 "$OUTPUT_DIR/data" 2>/dev/null && echo "truncate allowed"
           echo done"#,
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(said, "done\n", "an outsider got through: {said}");
    // grit itself (this process) may look.
    assert_eq!(
        std::fs::read(out.join("data")).expect("grit reads"),
        b"data\n"
    );
    let outsiders = fx.cap.refused_accesses();
    assert!(
        outsiders
            .iter()
            .any(|l| l.starts_with("task mine: refused ") && l.contains(" accesses from pid ")),
        "{outsiders:?}"
    );
    assert!(
        outsiders
            .iter()
            .any(|l| l.starts_with("capture root: refused 1 access from pid ")),
        "{outsiders:?}"
    );
    let (files, refusals) = fx.cap.finish_task("mine").expect("finish");
    assert_eq!(
        contents(&files),
        vec![
            ("data".to_string(), b"data\n".to_vec()),
            ("gone".to_string(), b"gone\n".to_vec())
        ]
    );
    let uid = nix::unistd::geteuid();
    assert!(
        refusals
            .iter()
            .any(|r| r.starts_with("OUTPUT_DIR: refused ")
                && r.contains(&format!(", uid {uid}: "))
                && r.ends_with("(not a process of this task; EACCES)")),
        "{refusals:?}"
    );
    // The summary keeps the finished task's refusals.
    assert!(
        fx.cap
            .refused_accesses()
            .iter()
            .any(|l| l.starts_with("task mine: "))
    );
}

#[test]
fn served_inputs_are_read_only_ordinary_files_for_the_task_alone() {
    use crate::capture::{Capture, ServedInput};
    use std::os::unix::fs::PermissionsExt;
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("reader", None).expect("start");
    // An object as the store keeps it: read-only on disk.
    let object = fx.staging.join("object");
    std::fs::write(&object, b"input-bytes\n").expect("write object");
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let served = [ServedInput {
        name: "in.txt".into(),
        path: object.clone(),
        size: 12,
    }];
    let dir = fx
        .cap
        .serve_inputs("reader", &served)
        .expect("serve")
        .expect("the FUSE capture serves inputs");
    assert_eq!(dir, fx.cap.mountpoint().join("reader.in"));
    assert!(super::is_served_input(&dir.join("in.txt")) && super::is_served_input(&dir));
    assert!(!super::is_served_input(&out.join("in.txt")));
    let input = dir.join("in.txt");
    let copy = std::env::temp_dir().join(format!("grit-served-copy-{}", std::process::id()));
    let _ = std::fs::remove_file(&copy);
    sh_ok(
        &out,
        &format!(
            r#"in='{input}'; copy='{copy}'
               test "$(cat "$in")" = input-bytes
               test "$(stat -c %a "$in")" = 644
               test "$(ls "$(dirname "$in")")" = in.txt
               ! test -w "$in"
               ! (echo x >> "$in") 2>/dev/null
               ! (: > "$in") 2>/dev/null
               ! rm -f "$in" 2>/dev/null
               ! chmod 666 "$in" 2>/dev/null
               ! (echo x > "$(dirname "$in")/new") 2>/dev/null
               ! mv "$in" "$OUTPUT_DIR/moved" 2>/dev/null
               cp "$in" "$copy"; test -w "$copy"; cp "$in" "$copy"
               cat "$in" > "$OUTPUT_DIR/echo""#,
            input = input.display(),
            copy = copy.display()
        ),
    );
    let copied = std::fs::metadata(&copy).expect("copy").permissions().mode();
    let _ = std::fs::remove_file(&copy);
    assert_ne!(copied & 0o200, 0, "the copy has mode {copied:o}");
    // Nobody else reads it.
    let o = sh_outsider(
        &out,
        &format!(
            r#"cat '{input}' 2>/dev/null && echo "read allowed"
               ls '{dir}' 2>/dev/null && echo "list allowed"
               echo done"#,
            input = input.display(),
            dir = dir.display()
        ),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "done\n");
    // The object is untouched, and the inputs go with the task.
    assert_eq!(std::fs::read(&object).expect("object"), b"input-bytes\n");
    assert_eq!(
        std::fs::metadata(&object)
            .expect("object")
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
    let (files, _) = fx.cap.finish_task("reader").expect("finish");
    assert_eq!(
        contents(&files),
        vec![("echo".to_string(), b"input-bytes\n".to_vec())]
    );
    assert!(!input.exists(), "the input outlived its task");
    assert!(
        fx.cap.serve_inputs("reader", &served).is_err(),
        "inputs of a task that is gone"
    );
}

#[test]
fn a_task_not_yet_admitted_waits_and_one_never_admitted_is_refused() {
    use std::os::unix::process::CommandExt;
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_task("spawning", None).expect("start");
    // As the plain executor does: expect, spawn (the script writes at once), then admit.
    fx.cap.shared.expect("spawning");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"echo early > "$OUTPUT_DIR/early""#)
        .env("OUTPUT_DIR", &out)
        .process_group(0)
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    fx.cap.shared.admit(
        "spawning",
        Some(crate::capture::TaskIdentity::ProcessGroup(child.id() as i32)),
    );
    assert!(
        child.wait().expect("wait").success(),
        "the admitted task was refused"
    );
    let (files, _) = fx.cap.finish_task("spawning").expect("finish");
    assert_eq!(
        contents(&files),
        vec![("early".to_string(), b"early\n".to_vec())]
    );

    // Not admitted at all (a sandboxed task before its init exists): refused at once.
    let out = fx.cap.start_task("nobody", None).expect("start");
    let o = sh_outsider(&out, r#"echo x > "$OUTPUT_DIR/x""#);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{o:?}"
    );
    fx.cap.discard_task("nobody");
}

#[test]
fn two_tasks_same_name_concurrently() {
    let Some(fx) = fixture() else { return };
    let a = fx.cap.start_test_task("ta", None).expect("start a");
    let b = fx.cap.start_test_task("tb", None).expect("start b");
    std::thread::scope(|s| {
        let ha = s.spawn(|| sh_ok(&a, r#"seq 1 200000 > "$OUTPUT_DIR/out""#));
        let hb = s.spawn(|| sh_ok(&b, r#"seq 5 300000 > "$OUTPUT_DIR/out""#));
        ha.join().expect("a");
        hb.join().expect("b");
    });
    let (fa, _) = fx.cap.finish_task("ta").expect("finish a");
    let (fb, _) = fx.cap.finish_task("tb").expect("finish b");
    let ca = contents(&fa);
    let cb = contents(&fb);
    let seq = |lo: u32, hi: u32| -> Vec<u8> {
        (lo..=hi)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    assert_eq!(ca, vec![("out".to_string(), seq(1, 200000))]);
    assert_eq!(cb, vec![("out".to_string(), seq(5, 300000))]);
    assert_ne!(fa[0].staged, fb[0].staged);
}

#[test]
fn late_writer_after_discard_resurrects_nothing() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("late", None).expect("start");
    let status = tempfile::NamedTempFile::new().expect("tmp");
    // Keeps writing through an open descriptor and creating new files until a write fails.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"exec 3>"$OUTPUT_DIR/late"; n=0
               while echo x >&3 && echo $n > "$OUTPUT_DIR/new_$n"; do n=$((n+1)); sleep 0.01; done
               echo stopped > {}"#,
            status.path().display()
        ))
        .env("OUTPUT_DIR", &out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn writer");
    // Wait until it has produced something, then discard the task under its feet.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.join("new_3").exists() {
        assert!(Instant::now() < deadline, "writer never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    fx.cap.discard_task("late");
    // A new task with the same key must start empty, whatever the survivor does.
    let again = fx.cap.start_test_task("late", None).expect("restart");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(status.path()).unwrap_or_default() != "stopped\n" {
        assert!(
            Instant::now() < deadline,
            "the late writer was never refused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    assert!(std::fs::read_dir(&again).expect("ls").next().is_none());
    let (files, _) = fx.cap.finish_task("late").expect("finish");
    assert!(files.is_empty());
    assert!(
        staged_names(&fx.staging).is_empty(),
        "{:?}",
        staged_names(&fx.staging)
    );
}

#[test]
fn quota_exceeded_is_enospc_and_fails_the_task() {
    let Some(fx) = fixture() else { return };
    let out = fx.cap.start_test_task("q", Some(10_000)).expect("start");
    let o = sh(
        &out,
        r#"head -c 6000 /dev/zero > "$OUTPUT_DIR/a"; head -c 6000 /dev/zero > "$OUTPUT_DIR/b""#,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No space left on device"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    match fx.cap.finish_task("q") {
        Err(CaptureError::Rule(msg)) => {
            assert!(msg.contains("max_output = 10000"), "{msg}");
            assert!(msg.contains("ENOSPC"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a task over its quota must fail"),
    }
    assert!(staged_names(&fx.staging).is_empty());

    // Within the quota, replacing a file frees its bytes.
    let out = fx.cap.start_test_task("q2", Some(10_000)).expect("start");
    sh_ok(
        &out,
        r#"head -c 6000 /dev/zero > "$OUTPUT_DIR/a"; head -c 9000 /dev/zero > "$OUTPUT_DIR/a""#,
    );
    let (files, _) = fx.cap.finish_task("q2").expect("finish");
    assert_eq!(files[0].hash, sha(&[0u8; 9000]));
}

/// A 16 MiB tmpfs holding the store; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_disk_fails_the_task_and_keeps_published_data() {
    if let Err(why) = FuseCapture::available() {
        eprintln!("skipping FUSE test: {why}");
        return;
    }
    let disk = SmallDisk {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    if let Err(e) = nix::mount::mount(
        Some("grit-test"),
        disk.dir.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m"),
    ) {
        eprintln!("skipping full-disk test: cannot mount a tmpfs: {e}");
        return;
    }
    let db = disk.dir.path();
    let staging = db.join("tmp");
    let objects = db.join("objects");
    std::fs::create_dir(&staging).expect("tmp");
    std::fs::create_dir(&objects).expect("objects");
    let cap = FuseCapture::mount(&staging).expect("mount");

    // Publish a first output, as the store would.
    let out = cap.start_test_task("first", None).expect("start");
    sh_ok(&out, r#"head -c 4194304 /dev/urandom > "$OUTPUT_DIR/kept""#);
    let (files, _) = cap.finish_task("first").expect("finish first");
    let kept = objects.join(&files[0].hash);
    std::fs::rename(&files[0].staged, &kept).expect("publish");

    // Fill the disk.
    let out = cap.start_test_task("fill", None).expect("start");
    let o = sh(&out, r#"head -c 33554432 /dev/zero > "$OUTPUT_DIR/huge""#);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("No space left on device"));
    match cap.finish_task("fill") {
        Err(CaptureError::Rule(msg)) => {
            assert!(msg.contains("ENOSPC"), "{msg}");
            assert!(msg.contains("'huge'"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a task that hit ENOSPC must fail"),
    }
    // Its partial data is gone, the published object is intact.
    assert!(staged_names(&staging).is_empty());
    let data = std::fs::read(&kept).expect("read kept");
    assert_eq!(sha(&data), files[0].hash);

    // With room again, the next task succeeds.
    let out = cap.start_test_task("after", None).expect("start");
    sh_ok(&out, r#"head -c 1048576 /dev/zero > "$OUTPUT_DIR/ok""#);
    let (files, _) = cap.finish_task("after").expect("finish after");
    assert_eq!(files[0].hash, sha(&vec![0u8; 1 << 20]));
    cap.unmount().expect("unmount");
}

#[test]
fn unmount_leaves_nothing_behind_even_with_a_busy_file() {
    let Some(fx) = fixture() else { return };
    let Fixture {
        _db, staging, cap, ..
    } = fx;
    let mp = cap.mountpoint().to_path_buf();
    let out = cap.start_test_task("busy", None).expect("start");
    assert!(mounted(&mp));
    // A process that keeps a file open in the mount while grit unmounts.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3>"$OUTPUT_DIR/held"; echo ready >&3; sleep 30"#)
        .env("OUTPUT_DIR", &out)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(out.join("held"))
        .map(|m| m.len())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "holder never wrote");
        std::thread::sleep(Duration::from_millis(10));
    }
    cap.unmount().expect("unmount");
    assert!(!mounted(&mp), "mount left behind");
    assert!(!mp.exists(), "mount point dir left behind");
    assert!(staged_names(&staging).is_empty());
    let _ = child.kill();
    let _ = child.wait();
}

/// Not a test by itself: mounts a capture, prints its mount point and sleeps, so that
/// `stale_mount_of_killed_process_is_detached` can `kill -9` a process owning a mount.
#[test]
#[ignore]
fn helper_mount_and_sleep() {
    let Ok(staging) = std::env::var("GRIT_TEST_STAGING") else {
        return;
    };
    let cap = FuseCapture::mount(Path::new(&staging)).expect("mount");
    let _ = cap.start_test_task("victim", None).expect("start");
    println!("MOUNTPOINT={}", cap.mountpoint().display());
    std::thread::sleep(Duration::from_secs(120));
}

/// Runs the ignored test `helper` of this binary as a separate process with its staging in
/// `staging` (stdin and stdout piped), and returns it with the mount point it printed.
fn spawn_mount_helper(helper: &str, staging: &Path) -> (std::process::Child, PathBuf) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            &format!("capture::fuse::tests::{helper}"),
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("GRIT_TEST_STAGING", staging)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some(p) = line.expect("line").strip_prefix("MOUNTPOINT=") {
            return (child, PathBuf::from(p));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("helper {helper} printed no mount point");
}

#[test]
fn stale_mount_of_killed_process_is_detached() {
    if let Err(why) = FuseCapture::available() {
        eprintln!("skipping FUSE test: {why}");
        return;
    }
    let db = tempfile::tempdir().expect("tempdir");
    let (mut child, mp) = spawn_mount_helper("helper_mount_and_sleep", db.path());
    assert!(mounted(&mp));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let _ = child.wait();
    // Another test's mount() may have cleaned it up already; either way it must end up gone.
    let cleaned = cleanup_stale_mounts().expect("cleanup");
    assert!(
        !mounted(&mp),
        "stale mount still there (cleaned {cleaned:?})"
    );
    assert!(!mp.exists());
}

/// Not a test by itself: mounts a capture with a task `victim` whose processes are being spawned
/// (requests from unknown processes wait for admission) and a task `other`, prints its mount
/// point, then on a line on stdin discards `other`, which invalidates its entry in the mount's
/// root: the kernel takes the root's lock for that, and waits while a lookup holds it.
#[test]
#[ignore]
fn helper_notify_while_a_lookup_waits() {
    let Ok(staging) = std::env::var("GRIT_TEST_STAGING") else {
        return;
    };
    let cap = FuseCapture::mount(Path::new(&staging)).expect("mount");
    cap.start_task("victim", None).expect("start victim");
    Capture::expect(&cap, "victim");
    cap.start_test_task("other", None).expect("start other");
    println!("MOUNTPOINT={}", cap.mountpoint().display());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    cap.discard_task("other");
    std::thread::sleep(Duration::from_secs(120));
}

/// The deadlock a `kill -9` of grit can leave (seen in a crash test), made on purpose: a lookup in
/// the mount's root waits for grit's FUSE thread, grit's other thread waits for the root's lock
/// to invalidate an entry, and grit is killed. Its FUSE thread dies, the waiting thread cannot,
/// so grit stays a zombie holding the connection, and the lookup never returns. The next sweep
/// of stale mounts must not hang on that mount, and must free everything stuck on it.
#[test]
// The helper and the lookup stay unreaped while they are stuck (the helper's pid must stay its
// own); the loop at the end reaps both with `try_wait`.
#[allow(clippy::zombie_processes)]
fn a_mount_left_by_a_grit_killed_in_a_notification_is_cleaned_without_hanging() {
    if let Err(why) = FuseCapture::available() {
        eprintln!("skipping FUSE test: {why}");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: freeing a stuck FUSE connection needs root here (umount -f)");
        return;
    }
    use std::io::Write;
    let db = tempfile::tempdir().expect("tempdir");
    let (mut grit, mp) = spawn_mount_helper("helper_notify_while_a_lookup_waits", db.path());
    // An outsider's lookup of `victim`: the FUSE thread holds it for up to 2 s (admission).
    let mut looker = Command::new("stat")
        .arg(mp.join("victim"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stat");
    std::thread::sleep(Duration::from_millis(300));
    writeln!(grit.stdin.as_mut().expect("stdin")).expect("tell the helper");
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grit.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    // The next run comes after the killed one is dead: a zombie, whose stuck thread holds the
    // connection (it is not reaped here, so its pid stays its own).
    let pid = grit.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mounts::process_state(pid) != Some('Z') {
        assert!(
            Instant::now() < deadline,
            "the killed helper never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The sweep runs on a thread of its own: if it hung, the test fails instead of waiting.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cleanup_stale_mounts());
    });
    let cleaned = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the sweep of stale mounts hung on the dead mount")
        .expect("cleanup");
    assert!(
        !mounted(&mp),
        "stale mount still there (cleaned {cleaned:?})"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut looker_done, mut grit_done) = (false, false);
    while !(looker_done && grit_done) && Instant::now() < deadline {
        looker_done = looker_done || looker.try_wait().expect("looker").is_some();
        grit_done = grit_done || grit.try_wait().expect("helper").is_some();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(looker_done, "the lookup is still stuck on the dead mount");
    assert!(grit_done, "the killed helper never finished dying");
}

/// CPU seconds (user + system) used so far by this process's threads, by thread name, for the
/// benchmark's profile line: `grit-hash:0.61,fuser-0:0.45,...`.
fn thread_cpu() -> String {
    let tick = 100.0; // USER_HZ on Linux
    let mut by_name: Vec<(String, f64)> = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let name = head.split_once(" (").map(|(_, n)| n).unwrap_or("?");
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
        by_name.push((name.to_string(), ticks / tick));
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
        .iter()
        .map(|(n, s)| format!("{n}:{s:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Benchmark driver for benches/capture.sh: mounts a capture with staging in
/// `$GRIT_BENCH_STAGING`, runs `$GRIT_BENCH_SCRIPT` with OUTPUT_DIR set, finishes the task and
/// prints `BENCH files=<n> bytes=<n> secs=<s> vmhwm_kb=<n> cpu=<per thread>`, the time covering the script and
/// finish_task (all hashes final). Staged files are deleted afterwards.
#[test]
#[ignore]
fn bench_driver() {
    let (Ok(staging), Ok(script)) = (
        std::env::var("GRIT_BENCH_STAGING"),
        std::env::var("GRIT_BENCH_SCRIPT"),
    ) else {
        return;
    };
    let cap = FuseCapture::mount(Path::new(&staging)).expect("mount");
    let out = cap.start_test_task("bench", None).expect("start");
    let t0 = Instant::now();
    sh_ok(&out, &script);
    let script_secs = t0.elapsed().as_secs_f64();
    let (files, _) = cap.finish_task("bench").expect("finish");
    let secs = t0.elapsed().as_secs_f64();
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().to_string())
        .unwrap_or_default();
    println!(
        "BENCH files={} bytes={bytes} script_secs={script_secs:.4} secs={secs:.4} vmhwm_kb={hwm} cpu={}",
        files.len(),
        thread_cpu()
    );
    for f in files {
        let _ = std::fs::remove_file(f.staged);
    }
    cap.unmount().expect("unmount");
}
