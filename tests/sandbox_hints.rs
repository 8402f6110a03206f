//! Failures name their cause when the sandbox hid something (issue 19 item 3): a host file
//! outside the sandbox, a write beside the manifest, a command outside the sandbox, a network
//! error without `network = true`, and the same hint as a warning for a task that succeeded.

#[path = "common/sandbox_support.rs"]
mod sandbox_support;

use std::path::PathBuf;

use sandbox_support::Sandboxed;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file on the host, in a directory the sandbox does not show (the host's /tmp).
fn host_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reference.txt");
    std::fs::write(&file, "ref\n").unwrap();
    (dir, file)
}

/// Runs a one-step pipeline expected to fail; returns stderr and `grit log` of the failed task.
fn failing(project: &Sandboxed, env: &[(&str, &std::ffi::OsStr)]) -> (String, String) {
    failing_run(project, &[], env)
}

/// [`failing`] with extra `grit run` arguments.
fn failing_with(project: &Sandboxed, args: &[&str]) -> (String, String) {
    failing_run(project, args, &[])
}

fn failing_run(
    project: &Sandboxed,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (String, String) {
    let output = project
        .command(args)
        .envs(env.iter().copied())
        .output()
        .expect("run grit");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let summary: serde_json::Value = text(&output.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("summary");
    let task = summary["failures"][0]["task"]
        .as_i64()
        .expect("a failed task");
    let log = text(&project.grit(&["log", &task.to_string()]).stdout);
    (stderr, log)
}

fn step(script: &str, keys: &str) -> String {
    format!("[[step]]\nname = \"probe\"\nonce = true\n{keys}\nscript = '''\n{script}\n'''\n")
}

#[test]
fn a_host_file_outside_the_sandbox_names_read_only() {
    let (dir, file) = host_file();
    let script = format!("cat {} > \"$OUTPUT_DIR/copy\"", file.display());
    let project = Sandboxed::new(&step(&script, ""));
    let (stderr, log) = failing(&project, &[]);
    let hint = format!(
        "hint: `{}` exists on the host but not inside the sandbox: add it (or a directory above it) to `read_only`",
        file.display()
    );
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(log.contains(&format!("grit: {hint}")), "{log}");

    // Exposed with read_only, it works and nothing is hinted.
    let keys = format!("read_only = [\"{}\"]", dir.path().display());
    let project = Sandboxed::new(&step(&script, &keys));
    let (output, _) = project.run(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!text(&output.stderr).contains("hint"));
}

#[test]
fn a_write_beside_the_manifest_names_output_dir() {
    let project = Sandboxed::new(&step("echo x > report.csv", ""));
    let (stderr, log) = failing(&project, &[]);
    let path = project.path().join("report.csv");
    let hint = format!(
        "hint: `{}` is read-only inside the sandbox: write outputs into `$OUTPUT_DIR`",
        path.display()
    );
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(log.contains(&hint), "{log}");
}

#[test]
fn a_command_outside_the_sandbox_names_its_directory() {
    let tools = tempfile::tempdir().unwrap();
    let tool = tools.path().join("mytool");
    std::fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(tools.path().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let project = Sandboxed::new(&step("mytool > \"$OUTPUT_DIR/x\"", ""));
    let (stderr, log) = failing(&project, &[("PATH", path.as_os_str())]);
    let hint = format!(
        "hint: `mytool` is {} on the host, outside the sandbox: add `{}` to `read_only`",
        tool.display(),
        tools.path().display()
    );
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(log.contains(&hint), "{log}");
}

#[test]
fn a_network_error_without_network_names_network_true() {
    let project = Sandboxed::new(&step("echo hi > /dev/tcp/127.0.0.1/9", ""));
    let (stderr, log) = failing(&project, &[]);
    let hint =
        "hint: the step has no network (`network = false`, the default): set `network = true`";
    assert!(stderr.contains(hint), "{stderr}");
    assert!(log.contains(hint), "{log}");
}

#[test]
fn a_task_that_succeeded_still_gets_the_hint_as_a_warning() {
    let (_dir, file) = host_file();
    let script = format!(
        "cat {} || true\necho ok > \"$OUTPUT_DIR/lines\"",
        file.display()
    );
    let project = Sandboxed::new(&step(&script, ""));
    let (output, _) = project.run(&[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "succeeded, but its log suggests: `{}` exists on the host but not inside the sandbox",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_copy_of_the_input_is_an_ordinary_file_that_the_next_run_overwrites() {
    // The store's objects are 0400 and `cp` keeps a source's mode, so a copy of the object itself
    // could not be overwritten by the next run's `cp`. The FUSE capture serves inputs read-only
    // with an ordinary mode instead (issue 19): the copy is writable, the input is not.
    let data = tempfile::tempdir().unwrap();
    sandbox_support::open_up(data.path());
    let manifest = format!(
        r#"[[step]]
name = "seed"
script = 'echo $GRIT_RUN > "$OUTPUT_DIR/word"'

[[step]]
name = "keep"
inputs = ["word"]
read_write = ["{dir}"]
script = '''
cp "$INPUT_FILE" {dir}/copy
if test -w "$INPUT_FILE"; then echo writable; else echo read-only; fi > "$OUTPUT_DIR/mode"
if (echo x >> "$INPUT_FILE") 2>/dev/null; then echo wrote; else echo refused; fi > "$OUTPUT_DIR/append"
cat {dir}/copy > "$OUTPUT_DIR/kept"
'''

[[step]]
name = "all"
inputs = ["word", "kept"]
gather = true
read_write = ["{dir}"]
script = 'mkdir -p {dir}/g && cp "$INPUT_DIR"/* {dir}/g/ && ls {dir}/g > "$OUTPUT_DIR/gathered"'
"#,
        dir = data.path().display()
    );
    let project = Sandboxed::new(&manifest);
    for run in 1..=2 {
        let (output, _) = project.run(&[]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "run {run}: {}",
            text(&output.stderr)
        );
        let copy = std::fs::read_to_string(data.path().join("copy")).unwrap();
        assert_eq!(copy.trim(), run.to_string(), "run {run} overwrote the copy");
    }
    use std::os::unix::fs::PermissionsExt;
    for copy in [data.path().join("copy"), data.path().join("g/word")] {
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_ne!(mode & 0o200, 0, "{} has mode {mode:o}", copy.display());
    }
    let live = project.grit(&["cat", "mode"]);
    assert_eq!(text(&live.stdout).trim(), "read-only");
    assert_eq!(
        text(&project.grit(&["cat", "append"]).stdout).trim(),
        "refused"
    );
    // The objects themselves keep their read-only mode, and the store verifies clean.
    let mut objects = 0;
    let mut dirs = vec![project.db().join("objects")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                let mode = meta.permissions().mode();
                assert_eq!(mode & 0o222, 0, "object mode {mode:o}");
                objects += 1;
            }
        }
    }
    assert!(objects >= 4, "{objects} objects");
    let verify = project.grit(&["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

#[test]
fn under_dir_capture_a_read_only_copy_of_the_input_names_the_fix() {
    // `--capture dir` hands the object itself to the script: a copy keeps its read-only mode,
    // and the next run cannot overwrite it. The hint names the fix.
    let data = tempfile::tempdir().unwrap();
    sandbox_support::open_up(data.path());
    let manifest = format!(
        "[[step]]\nname = \"seed\"\nscript = 'echo $GRIT_RUN > \"$OUTPUT_DIR/word\"'\n\n[[step]]\nname = \"keep\"\ninputs = [\"word\"]\nread_write = [\"{dir}\"]\nscript = 'cp \"$INPUT_FILE\" {dir}/copy; echo ok > \"$OUTPUT_DIR/kept\"'\n",
        dir = data.path().display()
    );
    let project = Sandboxed::new(&manifest);
    let (output, _) = project.run(&["--capture", "dir"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let (stderr, log) = failing_with(&project, &["--capture", "dir"]);
    let hint = format!(
        "hint: `{}` is a read-only file (a copy of a store file keeps its read-only mode): copy with `cp --no-preserve=mode`",
        data.path().join("copy").display()
    );
    assert!(stderr.contains(&hint), "{stderr}");
    assert!(log.contains(&hint), "{log}");
}
