//! The habits users bring from make, cargo and Unix tools: a closed stdout pipe is not an error,
//! environment errors have their own exit code, the manifest and store are found from a
//! subdirectory, and reader commands take names and globs.

mod common;

use std::process::{Command, Stdio};

use common::{Project, describe};

const TWO: &str = r#"
[[step]]
name = "seed"
once = true
script = '''
echo alpha > $OUTPUT_DIR/word
seq 1 100000 > $OUTPUT_DIR/big.csv
'''

[[step]]
name = "upper"
inputs = ["word"]
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/shout'
"#;

fn grit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grit"));
    cmd.env_remove("GRIT_DB").env("NO_COLOR", "1");
    cmd
}

/// Run `cmd` with stdout a pipe whose reading end is already closed, as after `| head -1` has
/// read its line. Returns the exit code and stderr.
fn into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run grit");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn writing_into_a_closed_pipe_exits_0_quietly() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    let db = p.db();
    let db = db.to_str().unwrap();
    let big = p
        .live()
        .into_iter()
        .find(|(n, _)| n == "big.csv")
        .map(|(_, h)| h)
        .unwrap();
    for args in [
        vec!["status", "--db", db],
        vec!["status", "--json", "--db", db],
        vec!["resources", "--db", db],
        vec!["cat", &big, "--db", db],
        vec!["log", "--step", "upper", "--db", db],
        vec!["graph", "--db", db],
        vec!["completions", "bash"],
    ] {
        let mut cmd = grit();
        cmd.args(&args);
        let (code, stderr) = into_closed_pipe(cmd);
        assert_eq!(code, Some(0), "grit {args:?}: {stderr}");
        assert_eq!(stderr, "", "grit {args:?} is quiet");
    }
}

#[test]
fn environment_errors_exit_5() {
    let p = Project::new(TWO);
    // A store whose directory cannot be created: its parent is a file.
    let file = p.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let output = grit()
        .args(["run", "--no-sandbox", "-m"])
        .arg(p.manifest())
        .arg("--db")
        .arg(file.join("db"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("plain-file/db"),
        "{}",
        describe(&output)
    );

    // A file to ingest that cannot be read.
    let output = p.grit(&["ingest", "--name", "x", "/nonexistent/file.txt"]);
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));

    // A store this user may not read: run as another user when root.
    p.run_ok(&[]);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the permission case: it needs root to switch to another user");
        return;
    }
    let user = "grit-sbx-test";
    let exists = Command::new("id")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists
        && !Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", user])
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("skipped the permission case: useradd is unavailable");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_grit"))
        .args(["status", "--db"])
        .arg(p.db())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
        "{}",
        describe(&output)
    );
}

/// `grit ARGS` in `dir`, with neither `--db` nor `$GRIT_DB`.
fn grit_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    grit()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run grit")
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    common::parse_last_json(output)
}

#[test]
fn run_from_a_subdirectory_finds_grit_toml_and_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("grit.toml"), TWO).unwrap();
    let deep = root.join("src").join("deeper");
    std::fs::create_dir_all(&deep).unwrap();

    let first = grit_in(&deep, &["run", "--no-sandbox", "--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    assert_eq!(json_of(&first)["executed"], 2);
    assert!(
        root.join(".grit").join("grit.sqlite").is_file(),
        "store beside the manifest"
    );
    assert!(!deep.join("db").exists() && !deep.join(".grit").exists());

    // From the manifest's directory: the same store, nothing to do.
    let again = grit_in(root, &["run", "--no-sandbox", "--json"]);
    assert_eq!(json_of(&again)["executed"], 0, "{}", describe(&again));

    // Readers find the store from a subdirectory too.
    let status = grit_in(&deep, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let steps: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(steps["steps"].as_array().unwrap().len(), 2);
    let listing = grit_in(&deep, &["resources"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("shout"));

    // --db and $GRIT_DB still win.
    let elsewhere = root.join("elsewhere");
    let output = grit()
        .current_dir(&deep)
        .args(["run", "--no-sandbox", "--json"])
        .env("GRIT_DB", &elsewhere)
        .output()
        .unwrap();
    assert_eq!(json_of(&output)["executed"], 2, "{}", describe(&output));
    let output = grit_in(
        &deep,
        &["status", "--json", "--db", elsewhere.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

#[test]
fn nothing_found_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let run = grit_in(&sub, &["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", describe(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("no grit.toml in {}", sub.display()))
            && stderr.contains("pass -m FILE"),
        "{stderr}"
    );
    let status = grit_in(&sub, &["status"]);
    assert_eq!(status.status.code(), Some(2), "{}", describe(&status));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains(&format!(
            "no .grit/ or grit.toml in {}, {}",
            sub.display(),
            dir.path().display()
        )) && stderr.contains("--db DIR"),
        "{stderr}"
    );
}

#[test]
fn a_store_in_the_former_default_db_keeps_working_with_a_note() {
    let p = Project::new(TWO);
    p.run_ok(&[]);
    // The old default: `grit run -m pipeline.toml` made ./db in the current directory.
    let output = grit_in(
        p.path(),
        &["run", "--no-sandbox", "--json", "-m", "pipeline.toml"],
    );
    assert_eq!(json_of(&output)["executed"], 0, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("using the store ./db, grit's former default")
            && stderr.contains("mv ./db"),
        "{stderr}"
    );
    assert!(!p.path().join(".grit").exists());
    let status = grit_in(p.path(), &["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));

    // GRIT's spelling without -db meant ./db, and still does.
    let output = grit_in(p.path(), &["-manifest", "pipeline.toml", "-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("former default"));

    // With grit.toml, the former store beside it is found from a subdirectory too, by a run and
    // by the readers, instead of a new .grit/ starting over.
    std::fs::rename(p.path().join("pipeline.toml"), p.path().join("grit.toml")).unwrap();
    let sub = p.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let output = grit_in(&sub, &["run", "--no-sandbox", "--json"]);
    assert_eq!(json_of(&output)["executed"], 0, "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("grit's former default"),
        "{}",
        describe(&output)
    );
    assert!(!p.path().join(".grit").exists());
    for dir in [p.path(), sub.as_path()] {
        let status = grit_in(dir, &["status", "--json"]);
        assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    }
}

const NAMES: &str = r#"
[[step]]
name = "seed"
once = true
script = 'echo alpha > $OUTPUT_DIR/report.csv; echo a > $OUTPUT_DIR/part_a; echo b > $OUTPUT_DIR/part_b'

[[step]]
name = "each"
inputs = ["part_*"]
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/upper.txt'
"#;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn cat_takes_a_name_and_lists_candidates_when_several_match() {
    let p = Project::new(NAMES);
    p.run_ok(&[]);
    assert_eq!(p.cat("report.csv"), "alpha\n");
    assert_eq!(p.cat("report.*"), "alpha\n", "a glob matching one resource");

    let several = p.grit(&["cat", "upper.txt"]);
    assert_eq!(several.status.code(), Some(2), "{}", describe(&several));
    let text = stderr(&several);
    assert!(
        text.contains("2 live resources match `upper.txt`"),
        "{text}"
    );
    for content in ["A\n", "B\n"] {
        let hash = common::sha256_hex(content.as_bytes());
        assert!(text.contains(&hash[..12]), "{hash} listed: {text}");
    }

    let none = p.grit(&["cat", "nothing.csv"]);
    assert_eq!(none.status.code(), Some(2), "{}", describe(&none));
    assert!(stderr(&none).contains("no live resource is named or matches `nothing.csv`"));
}

#[test]
fn resources_and_export_take_globs_and_export_flat_writes_plain_files() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new(NAMES);
    p.run_ok(&[]);

    let listing = p.grit(&["resources", "part_*", "--json"]);
    assert!(listing.status.success(), "{}", describe(&listing));
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let names: Vec<&str> = rows["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["part_a", "part_b"]);
    let none = p.grit(&["resources", "nope*"]);
    assert_eq!(none.status.code(), Some(2), "{}", describe(&none));
    assert!(stderr(&none).contains("no live resource is named or matches `nope*`"));

    let out = p.path().join("out");
    let out_arg = out.to_str().unwrap();
    for _ in 0..2 {
        // Twice: exporting over an earlier export works.
        let result = p.grit(&["export", "part_*", "report.csv", "--flat", "--to", out_arg]);
        assert!(result.status.success(), "{}", describe(&result));
    }
    for (name, content) in [
        ("part_a", "a\n"),
        ("part_b", "b\n"),
        ("report.csv", "alpha\n"),
    ] {
        let file = out.join(name);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert!(
            mode & 0o200 != 0 && mode & 0o111 == 0,
            "{name}: mode {mode:o} is an ordinary file's"
        );
    }
    // The <name>/<hash> layout gets ordinary modes too.
    let nested = p.path().join("nested");
    let result = p.grit(&["export", "report.csv", "--to", nested.to_str().unwrap()]);
    assert!(result.status.success(), "{}", describe(&result));
    let file = nested
        .join("report.csv")
        .join(common::sha256_hex(b"alpha\n"));
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert!(mode & 0o200 != 0, "mode {mode:o}");

    let clash = p.grit(&["export", "upper.txt", "--flat", "--to", out_arg]);
    assert_eq!(clash.status.code(), Some(2), "{}", describe(&clash));
    assert!(stderr(&clash).contains("several live resources are named upper.txt"));
    assert!(!out.join("upper.txt").exists());
    let none = p.grit(&["export", "report.csv", "missing*", "--to", out_arg]);
    assert_eq!(none.status.code(), Some(2), "{}", describe(&none));
    assert!(stderr(&none).contains("`missing*`"));
}

const PIPE: &str = r#"
[[step]]
name = "filter"
once = true
script = 'grep -f missing-patterns /dev/null | sort > $OUTPUT_DIR/out'
"#;

#[test]
fn a_failing_command_inside_a_pipeline_fails_the_step_where_bash_exists() {
    let p = Project::new(PIPE);
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(summary["failed"], 1);
    assert!(
        stderr(&output).contains("missing-patterns"),
        "{}",
        describe(&output)
    );

    // An explicit shell is untouched: POSIX sh takes the pipeline's status from `sort`.
    p.write_manifest(&PIPE.replace("once = true", "once = true\nshell = [\"sh\", \"-ec\"]"));
    let summary = p.run_ok(&[]);
    assert_eq!(summary["succeeded"], 1);
}

#[test]
fn without_bash_the_default_is_sh_and_grit_says_so_once() {
    // A PATH holding only what the script needs, without bash.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["sh", "grep", "sort"] {
        let found = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let p = Project::new(&format!(
        "{PIPE}\n[[step]]\nname = \"two\"\nonce = true\nscript = 'true'\n"
    ));
    let (output, summary) = p.run_with_env(&[], &[("PATH", bin.path().as_os_str())]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(summary["succeeded"], 2);
    let text = stderr(&output);
    assert_eq!(
        text.matches("bash is not on PATH: steps that name no `shell` run under `sh -ec`")
            .count(),
        1,
        "{text}"
    );
}

const READS_INGESTED: &str = r#"
[[step]]
name = "use"
inputs = ["x.txt"]
script = 'cat $INPUT_FILE > $OUTPUT_DIR/y'
"#;

#[test]
fn no_unwritten_input_warning_once_the_name_is_ingested() {
    let p = Project::new(READS_INGESTED);
    let warning = "reads `x.txt`, but no step writes it";
    // Before anything is ingested, the warning is right, and given once.
    for extra in [&[][..], &["-v"][..]] {
        let (output, _) = p.run(extra);
        assert_eq!(
            stderr(&output).matches(warning).count(),
            1,
            "{extra:?}: {}",
            describe(&output)
        );
    }
    let manifest = p.manifest();
    let validate = || p.grit(&["validate", "-m", manifest.to_str().unwrap()]);
    let before = validate();
    assert!(stderr(&before).contains(warning), "{}", describe(&before));
    let file = p.path().join("x.txt");
    std::fs::write(&file, "hi\n").unwrap();
    let ingest = p.grit(&["ingest", file.to_str().unwrap()]);
    assert!(ingest.status.success(), "{}", describe(&ingest));
    // `validate` knows what the store holds, as a run does.
    let after = validate();
    assert_eq!(after.status.code(), Some(0), "{}", describe(&after));
    assert!(!stderr(&after).contains(warning), "{}", describe(&after));
    for extra in [&[][..], &["-v"][..], &["--dry-run"][..]] {
        let (output, _) = p.run(extra);
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        assert!(
            !stderr(&output).contains(warning),
            "{extra:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn validate_explains_that_several_inputs_run_once_per_input() {
    let p = Project::new(
        r#"
[[step]]
name = "seed"
once = true
script = 'echo 1 > $OUTPUT_DIR/a.csv; echo 2 > $OUTPUT_DIR/b.csv'

[[step]]
name = "join"
inputs = ["a.csv", "b.csv"]
script = 'cat $INPUT_FILE > $OUTPUT_DIR/joined'
"#,
    );
    let output = grit()
        .args(["validate", "-m"])
        .arg(p.manifest())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "{}:9:11: note: step `join` has several inputs (`a.csv`, `b.csv`): it runs once per input resource",
            p.manifest().display()
        )) && text.contains("set gather = true"),
        "{text}"
    );
    // A gather step is a join already: no note.
    p.write_manifest(&std::fs::read_to_string(p.manifest()).unwrap().replace(
        "inputs = [\"a.csv\", \"b.csv\"]",
        "inputs = [\"a.csv\", \"b.csv\"]\ngather = true",
    ));
    let output = grit()
        .args(["validate", "-m"])
        .arg(p.manifest())
        .output()
        .unwrap();
    assert!(!stderr(&output).contains("note:"), "{}", describe(&output));
}
