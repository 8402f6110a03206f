//! Resource names and script output hold whatever bytes a script chose, newlines and escape
//! sequences included. Human-readable output shows their control characters escaped, so they can
//! neither forge a line of grit's output nor drive the terminal; `--json` keeps names exact and
//! `grit log TASK` keeps the log's bytes when piped.

mod common;

use std::process::Command;

use common::{Project, describe};

/// A name that would print a forged verdict line, and one carrying OSC and CSI sequences.
const FORGED: &str = "a\nrun 99 ok: 0 tasks executed, everything verified";
const FORGED_SHOWN: &str = "a\\nrun 99 ok: 0 tasks executed, everything verified";
const TERMINAL: &str = "b\x1b]0;pwned\x07\x1b[31mred";
const TERMINAL_SHOWN: &str = "b\\x1b]0;pwned\\x07\\x1b[31mred";

/// `evil` writes both names and coloured output; `use` fails on each of them, so the summary
/// and `grit log` name them as inputs.
const PIPELINE: &str = r#"
[[step]]
name = "evil"
script = '''
printf 'x' > "$OUTPUT_DIR/$(printf 'a\nrun 99 ok: 0 tasks executed, everything verified')"
printf 'y' > "$OUTPUT_DIR/$(printf 'b\033]0;pwned\007\033[31mred')"
printf 'script says \033[31mred\033[0m\n'
'''

[[step]]
name = "use"
inputs = ["a*", "b*"]
script = 'printf "tail \033[2J\n"; exit 3'
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// No raw control character but line breaks (and tabs), and no line forged by a name.
fn assert_clean(what: &str, output: &str) {
    assert!(
        !output
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{what}: a raw control character in\n{output:?}"
    );
    assert!(
        !output.lines().any(|l| l.starts_with("run 99 ok")),
        "{what}: a forged line in\n{output}"
    );
}

/// Run the pipeline (it fails: `use` exits 3) with `extra` flags; returns the run's stderr.
fn run(p: &Project, extra: &[&str]) -> String {
    let (out, _) = p.run(extra);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    text(&out.stderr)
}

fn stdout_of(p: &Project, args: &[&str]) -> String {
    let out = p.grit(args);
    assert!(out.status.success(), "grit {args:?}: {}", describe(&out));
    text(&out.stdout)
}

#[test]
fn resources_shows_control_characters_in_names_escaped() {
    let p = Project::new(PIPELINE);
    run(&p, &[]);
    let listing = stdout_of(&p, &["resources"]);
    assert_clean("grit resources", &listing);
    assert!(listing.contains(FORGED_SHOWN), "{listing}");
    assert!(listing.contains(TERMINAL_SHOWN), "{listing}");

    // JSON keeps the names exact.
    let mut names: Vec<String> = p
        .resources(false)
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(names, [FORGED, TERMINAL]);
}

#[test]
fn the_summary_and_verbose_run_escape_names_and_script_output() {
    let p = Project::new(PIPELINE);
    let summary = run(&p, &[]);
    assert_clean("the run summary", &summary);
    assert!(
        summary.contains(&format!("(input {FORGED_SHOWN}): exited with status 3")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("(input {TERMINAL_SHOWN})")),
        "{summary}"
    );
    assert!(summary.contains("| tail \\x1b[2J"), "{summary}");

    let verbose = run(&p, &["-v"]);
    assert_clean("grit run -v", &verbose);
    assert!(
        verbose.contains("| script says \\x1b[31mred\\x1b[0m"),
        "{verbose}"
    );
    assert!(
        verbose.contains(&format!("on {TERMINAL_SHOWN}")),
        "{verbose}"
    );
}

#[test]
fn other_listings_escape_names() {
    let p = Project::new(PIPELINE);
    run(&p, &[]);
    let failed = stdout_of(&p, &["log", "--failed"]);
    assert_clean("grit log --failed", &failed);
    assert!(
        failed.contains(&format!("input {FORGED_SHOWN} (")),
        "{failed}"
    );
    assert!(failed.contains("| tail \\x1b[2J"), "{failed}");

    let hash = &p
        .live()
        .into_iter()
        .find(|(name, _)| name == FORGED)
        .expect("the forged name is live")
        .1;
    let why = stdout_of(&p, &["why", hash]);
    assert_clean("grit why", &why);
    assert!(why.starts_with(FORGED_SHOWN), "{why}");

    // Several candidates are listed in the error.
    let cat = p.grit(&["cat", "*"]);
    assert_eq!(cat.status.code(), Some(2), "{}", describe(&cat));
    let error = text(&cat.stderr);
    assert_clean("grit cat's candidates", &error);
    assert!(error.contains(TERMINAL_SHOWN), "{error}");

    let manifest = p.manifest();
    let manifest = manifest.to_str().expect("a UTF-8 path");
    let plan = stdout_of(&p, &["run", "-m", manifest, "--dry-run"]);
    assert_clean("grit run --dry-run", &plan);
    assert!(plan.contains(&format!("{FORGED_SHOWN} (task")), "{plan}");
}

#[test]
fn a_task_log_is_escaped_on_a_terminal_and_raw_when_piped() {
    let p = Project::new(PIPELINE);
    run(&p, &[]);
    let header = stdout_of(&p, &["log", "1"]);
    assert!(header.contains("task 1 of step evil"), "{header}");
    // Piped: the log's own bytes.
    assert!(
        header.contains("script says \x1b[31mred\x1b[0m\n"),
        "{header:?}"
    );

    // On a terminal (script(1) gives grit a pseudo-terminal): escaped.
    let grit = assert_cmd::cargo::cargo_bin("grit");
    let command = format!("{} log 1 --db {}", grit.display(), p.db().display());
    let Ok(out) = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
    else {
        eprintln!("skipping the terminal case: script(1) is not available");
        return;
    };
    assert!(out.status.success(), "{}", describe(&out));
    // A pseudo-terminal turns each line break into CR LF.
    let shown = text(&out.stdout).replace("\r\n", "\n");
    assert_clean("grit log on a terminal", &shown);
    assert!(
        shown.contains("script says \\x1b[31mred\\x1b[0m\n"),
        "{shown:?}"
    );
}

#[test]
fn a_damaged_objects_error_escapes_its_name() {
    let p = Project::new(PIPELINE);
    run(&p, &[]);
    let hash = p.hash_of(FORGED);
    let object = p.object_path(&hash);
    let mut permissions = std::fs::metadata(&object).expect("object").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&object, permissions).expect("chmod the object");
    std::fs::write(&object, "damaged").expect("damage the object");
    let cat = p.grit(&["cat", &hash]);
    assert_eq!(cat.status.code(), Some(4), "{}", describe(&cat));
    let error = text(&cat.stderr);
    assert_clean("grit cat's damage error", &error);
    assert!(
        error.contains(&format!("resource {FORGED_SHOWN} (object")),
        "{error}"
    );
}
