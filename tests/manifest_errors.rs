//! Runs `grit validate -m FILE` on malformed manifests (tests/fixtures/manifests/bad) and on
//! GRIT's demo manifests (tests/fixtures/manifests/grit-demos), checking exit codes, exact
//! `FILE:LINE:COL` locations, messages, help lines and the rendered step graph.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(sub)
}

/// Run `grit validate -m FILE` from `dir` (so FILE is printed exactly as given).
fn validate(dir: &Path, file: &str) -> (i32, String, String) {
    let out = Command::cargo_bin("grit")
        .expect("grit binary")
        .current_dir(dir)
        .args(["validate", "-m", file])
        .output()
        .expect("run grit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (fixture, "LINE:COL", phrase in the message, phrase in the help line if there is one)
const BAD: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "unknown-step-key",
        "4:1",
        "unknown key `scrpt` in [[step]]",
        Some("did you mean `script`?"),
    ),
    (
        "toml-syntax",
        "2:10",
        "invalid TOML: invalid basic string",
        None,
    ),
    (
        "unquoted-string",
        "2:8",
        "string values must be quoted",
        Some("quote text values"),
    ),
    (
        "duplicate-key",
        "3:1",
        "duplicate key",
        Some("each key may appear once"),
    ),
    (
        "parallel-as-string",
        "4:12",
        "`parallel` must be an integer, not a string",
        Some("remove the quotes: parallel = 4"),
    ),
    (
        "parallel-zero",
        "4:12",
        "`parallel` must be at least 1, not 0",
        Some("parallel = 4"),
    ),
    (
        "retries-negative",
        "4:11",
        "`retries` must be 0 or more, not -1",
        Some("retries = 2"),
    ),
    (
        "no-steps",
        "1:1",
        "the manifest has no steps",
        Some("[[step]]"),
    ),
    (
        "single-bracket-step",
        "1:1",
        "`step` must be an array of tables",
        Some("[[step]] header (double brackets)"),
    ),
    (
        "bad-step-name",
        "2:8",
        "step name `my step` contains ' '",
        Some("name = \"my_step\""),
    ),
    (
        "bad-duration",
        "4:11",
        "invalid `timeout`: `10 minutes` is not a duration",
        Some("\"30s\", \"10m\", \"2h\""),
    ),
    (
        "duration-without-unit",
        "4:11",
        "`timeout` needs a unit",
        Some("timeout = \"30s\""),
    ),
    (
        "bad-size",
        "4:10",
        "invalid `memory`: `12X` is not a size",
        Some("\"512M\" or \"2G\""),
    ),
    (
        "env-not-string",
        "4:19",
        "env value `RETRIES` must be a string, not an integer",
        Some("quote it: RETRIES = \"3\""),
    ),
    (
        "unclosed-glob",
        "4:23",
        "invalid glob `item_[0-9`: `[` is never closed",
        Some("\"item_[0-9]\""),
    ),
    (
        "unclosed-exclusion",
        "4:23",
        "invalid glob `!tmp_[0-9`: `[` is never closed",
        Some("\"item_[0-9]\""),
    ),
    (
        "only-exclusions",
        "4:10",
        "`inputs` only excludes (every entry starts with `!`), so it selects nothing",
        Some("inputs = [\"*.csv\", \"!tmp_*\"]"),
    ),
    (
        "empty-exclusion",
        "4:20",
        "an input exclusion `!` names nothing",
        Some("[!]name"),
    ),
    (
        "input-and-inputs",
        "5:1",
        "both `input` and `inputs` are given",
        Some("keep one"),
    ),
    (
        "gather-without-inputs",
        "4:1",
        "has `gather = true` but no inputs",
        Some("inputs = [\"item_*\"]"),
    ),
    (
        "once-with-inputs",
        "5:1",
        "has `once = true` but it has inputs",
        Some("remove `once`"),
    ),
    (
        "duplicate-step-name",
        "5:8",
        "duplicate step name `a` (first used on line 2)",
        Some("unique name"),
    ),
    (
        "relative-read-only",
        "4:25",
        "`read_only` paths must be absolute, not `data`",
        Some("full path"),
    ),
    (
        "empty-shell",
        "4:9",
        "`shell` is empty",
        Some("shell = [\"bash\", \"-ec\"]"),
    ),
    (
        "shell-empty-entry",
        "4:18",
        "`shell` has an empty entry",
        Some("shell = [\"bash\", \"-ec\"]"),
    ),
    (
        "bad-sandbox",
        "4:11",
        "`sandbox` must be \"strict\" or \"off\", not \"loose\"",
        Some("sandbox = \"off\""),
    ),
    (
        "pipeline-unknown-key",
        "2:1",
        "unknown key `paralel` in [pipeline]",
        Some("did you mean `parallel`?"),
    ),
    (
        "pipeline-step-key",
        "2:1",
        "unknown key `script` in [pipeline]",
        Some("belongs in a [[step]]"),
    ),
    (
        "pipeline-array",
        "1:1",
        "`pipeline` must be a table, not an array",
        Some("single [pipeline] table"),
    ),
    (
        "unknown-top-key",
        "1:1",
        "unknown top-level key `stepz`",
        Some("did you mean `step`?"),
    ),
    (
        "grit-csv-table",
        "5:3",
        "unknown top-level key `csv`",
        Some("grit ingest"),
    ),
    (
        "start-with-inputs",
        "8:11",
        "step `b` has `inputs`, but step `a` has task-pipeline's `start`",
        Some("remove `start`"),
    ),
    (
        "task-unknown-key",
        "3:1",
        "unknown key `scrpt` in [[task]]",
        Some("did you mean `script`?"),
    ),
    (
        "mixed-task-and-step",
        "5:3",
        "mixes task-pipeline's first form ([[task]] tables) with [[step]] tables",
        Some("one form"),
    ),
    (
        "reserved-env",
        "4:5",
        "`OUTPUT_DIR` is set by grit",
        Some("another name"),
    ),
    (
        "input-with-slash",
        "4:15",
        "input `dir/file` can never match",
        Some("file name the upstream step writes"),
    ),
    (
        "missing-script",
        "1:1",
        "step `a` has no `script`",
        Some("script = "),
    ),
    (
        "missing-name",
        "1:1",
        "this step has no `name`",
        Some("name = \"fetch\""),
    ),
    (
        "blank-script",
        "3:10",
        "the script is empty",
        Some("shell commands"),
    ),
    (
        "name-not-string",
        "2:8",
        "`name` must be a string, not an integer",
        Some("name = \"fetch\""),
    ),
    (
        "network-as-string",
        "4:11",
        "`network` must be a boolean, not a string",
        Some("remove the quotes: network = true"),
    ),
    (
        "zero-cpu",
        "4:7",
        "`cpu` must be greater than zero",
        Some("cpu = \"10m\""),
    ),
    (
        "later-error-in-second-step",
        "9:11",
        "invalid `timeout`: `soon` is not a duration",
        Some("\"1h30m\""),
    ),
];

#[test]
fn malformed_manifests_are_located_errors() {
    let dir = fixtures("bad");
    assert!(BAD.len() >= 20);
    for (name, at, phrase, help) in BAD {
        let file = format!("{name}.toml");
        let (code, stdout, stderr) = validate(&dir, &file);
        assert_eq!(code, 2, "{file}: exit code\n{stderr}");
        assert!(stdout.is_empty(), "{file}: nothing on stdout, got {stdout}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        let mut lines = stderr.lines();
        let first = lines.next().unwrap_or("");
        let prefix = format!("{file}:{at}: error: ");
        assert!(
            first.starts_with(&prefix),
            "{file}: want prefix {prefix:?}, got {first:?}"
        );
        assert!(
            first.contains(phrase),
            "{file}: want {phrase:?} in {first:?}"
        );
        let help_line = lines.next();
        match help {
            Some(h) => {
                let line = help_line.unwrap_or("");
                assert!(
                    line.starts_with("  help: "),
                    "{file}: want a help line, got {line:?}"
                );
                assert!(line.contains(h), "{file}: want {h:?} in {line:?}");
            }
            None => assert!(help_line.is_none(), "{file}: unexpected {help_line:?}"),
        }
    }
}

#[test]
fn every_bad_fixture_is_in_the_table() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures("bad"))
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BAD.iter().map(|b| b.0.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn unreadable_manifest_is_an_io_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = validate(tmp.path(), "missing.toml");
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("missing.toml: error: cannot read manifest: "),
        "{stderr}"
    );
    std::fs::write(tmp.path().join("latin1.toml"), b"name = \"caf\xe9\"\n").expect("write");
    let (code, _, stderr) = validate(tmp.path(), "latin1.toml");
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("latin1.toml: error: cannot read manifest: "),
        "{stderr}"
    );
}

/// The three demo manifests of upstream GRIT's HEAD (`input = "..."` syntax) are valid, and
/// the rendered graph shows the flow read from their scripts.
#[test]
fn grit_demo_manifests_validate() {
    let dir = fixtures("grit-demos");
    let cases: &[(&str, &[&[&str]])] = &[
        (
            "Minimal linear pipeline.toml",
            &[
                &["extract", "source", "-", "process", "process"],
                &["process", "step", "process", "done", "-"],
            ],
        ),
        (
            "Fan-out with shared upstream.toml",
            &[
                &["start", "source", "-", "upper", "sort", "upper", "sort"],
                &["upper", "step", "upper", "done", "-"],
                &["sort", "step", "sort", "done", "-"],
            ],
        ),
        (
            "Parallel fan-out with controlled dependency.toml",
            &[
                &["generate", "source", "-", "work", "work"],
                &["work", "step", "work", "done", "-"],
            ],
        ),
    ];
    for (file, rows) in cases {
        let (code, stdout, stderr) = validate(&dir, file);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(
            stderr.is_empty(),
            "{file}: no warnings expected, got {stderr}"
        );
        let lines: Vec<Vec<&str>> = stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(
            stdout.starts_with(&format!(
                "manifest {file}: {} steps, 1 source, ",
                rows.len()
            )),
            "{stdout}"
        );
        assert_eq!(lines[1], ["STEP", "KIND", "INPUTS", "WRITES", "DOWNSTREAM"]);
        assert_eq!(lines.len(), rows.len() + 2, "{stdout}");
        for (got, want) in lines[2..].iter().zip(rows.iter()) {
            assert_eq!(got.as_slice(), *want, "{file}:\n{stdout}");
        }
    }
}

/// Warnings go to stderr with a location, and do not make the manifest invalid.
#[test]
fn warnings_for_cycles_and_unwritten_inputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("crawl.toml"),
        r#"[pipeline]
name = "crawler"

[[step]]
name = "seed"
script = "echo https://example.org > $OUTPUT_DIR/url"

[[step]]
name = "crawl"
inputs = ["url"]
script = '''
n=0
for link in $(cat "$INPUT_FILE"); do n=$((n+1)); echo "$link" > "$OUTPUT_DIR/url"; echo x > "$OUTPUT_DIR/page_$n"; done
'''

[[step]]
name = "index"
inputs = ["page_*"]
gather = true
script = "ls $INPUT_DIR > $OUTPUT_DIR/index"

[[step]]
name = "orphan"
inputs = ["nothing_writes_this"]
script = "true"
"#,
    )
    .expect("write");
    let (code, stdout, stderr) = validate(tmp.path(), "crawl.toml");
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0]
            .starts_with("crawl.toml:8:1: warning: step `crawl` consumes its own output `url`"),
        "{stderr}"
    );
    assert!(
        warnings[1]
            .starts_with("crawl.toml:24:11: warning: step `orphan` reads `nothing_writes_this`"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("pipeline crawler: 4 steps, 1 source, 3 edges\n"),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[1],
        [
            "crawl",
            "step,cycle",
            "url",
            "url",
            "page_*",
            "crawl",
            "index"
        ]
    );
    assert_eq!(rows[2], ["index", "gather", "page_*", "index", "-"]);
    assert!(stdout.contains("cycle: `crawl`\n"), "{stdout}");
}
