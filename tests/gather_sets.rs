//! A gather step's input set over time: a set that returns to an earlier one brings back that
//! set's result, and what consumes the result still gets its tasks; a gather task left pending by
//! an interrupted run for a set that is no longer current never runs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Project, describe, executed};

/// `in/*` → `item_*` (only the last run's items live) → gathered `summary` → `final`.
const RETURNING: &str = r#"
[[step]]
name = "src"
keep = "run"
script = 'for f in in/*; do cp "$f" "$OUTPUT_DIR/item_$(basename "$f")"; done'

[[step]]
name = "all"
inputs = ["item_*"]
gather = true
script = 'cat "$INPUT_DIR"/* > "$OUTPUT_DIR/summary"'

[[step]]
name = "post"
inputs = ["summary"]
script = 'POST'
"#;

fn returning(post: &str) -> String {
    RETURNING.replace("POST", post)
}

fn write_input(p: &Project, text: &str) {
    std::fs::create_dir_all(p.path().join("in")).expect("mkdir in");
    std::fs::write(p.path().join("in/a"), text).expect("write in/a");
}

#[test]
fn a_returning_input_set_gives_its_result_to_a_changed_consumer() {
    let p = Project::new(&returning(r#"cp "$INPUT_FILE" "$OUTPUT_DIR/final""#));
    write_input(&p, "1\n");
    p.run_ok(&[]);
    assert_eq!(p.contents("final"), ["1\n"]);
    write_input(&p, "2\n");
    p.run_ok(&[]);
    assert_eq!(p.contents("final"), ["2\n"]);

    // The consumer changes while the input set goes back to the first run's: the gather's first
    // result is live again (its task is not re-run), and the new `post` must run on it.
    p.write_manifest(&returning(
        r#"{ cat "$INPUT_FILE"; echo v2; } > "$OUTPUT_DIR/final""#,
    ));
    write_input(&p, "1\n");
    let summary = p.run_ok(&[]);
    assert_eq!(
        p.contents("final"),
        ["1\nv2\n"],
        "the changed consumer did not run on the returned summary: {summary}"
    );

    // Nothing changed since: nothing of `post` is left to do.
    let again = p.run_ok(&[]);
    assert_eq!(executed(&again, "post"), 0, "{again}");
    assert_eq!(p.contents("final"), ["1\nv2\n"]);
}

/// `in` → `item` → gathered `summary` (slow while `slow` exists) → `final`; every gather and
/// consumer task appends what it saw to `log`.
const INTERRUPTED: &str = r#"
[[step]]
name = "src"
script = 'cp in "$OUTPUT_DIR/item"'

[[step]]
name = "all"
inputs = ["item"]
gather = true
script = '''
touch started
if [ -e slow ]; then sleep 60; fi
echo "all $(cat "$INPUT_DIR"/*)" >> log
cat "$INPUT_DIR"/* > "$OUTPUT_DIR/summary"
'''

[[step]]
name = "post"
inputs = ["summary"]
script = '''
echo "post $(cat "$INPUT_FILE")" >> log
cp "$INPUT_FILE" "$OUTPUT_DIR/final"
'''
"#;

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_gather_for_an_old_input_set_does_not_run_again() {
    let p = Project::new(INTERRUPTED);
    let dir = p.path();
    std::fs::write(dir.join("in"), "old\n").expect("write in");
    std::fs::write(dir.join("slow"), "").expect("write slow");
    let child = p
        .run_command(&["--no-sandbox"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn grit");
    wait_for(&dir.join("started"));
    interrupt(child.id());
    let output = child.wait_with_output().expect("wait for grit");
    assert_eq!(output.status.code(), Some(130), "{}", describe(&output));

    // The input changes before the next run: only the current set is gathered, and only its
    // summary is consumed.
    std::fs::remove_file(dir.join("slow")).expect("remove slow");
    std::fs::write(dir.join("in"), "new\n").expect("write in");
    p.run_ok(&[]);
    let log = std::fs::read_to_string(dir.join("log")).expect("read log");
    assert_eq!(log, "all new\npost new\n", "stale work ran");
    assert_eq!(p.contents("final"), ["new\n"]);
}

/// SIGINT, as Ctrl-C sends it.
fn interrupt(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT {pid} failed");
}

/// `in/*` → `item_*` (only the last run's live) → `ok_*`, failing on BAD → gathered `summary`.
const HELD: &str = r#"
[[step]]
name = "src"
keep = "run"
script = 'for f in in/*; do cp "$f" "$OUTPUT_DIR/item_$(basename "$f")"; done'

[[step]]
name = "check"
inputs = ["item_*"]
script = '''
if grep -q BAD "$INPUT_FILE"; then echo "bad item" >&2; exit 3; fi
cp "$INPUT_FILE" "$OUTPUT_DIR/ok_$GRIT_INPUT_NAME"
'''

[[step]]
name = "all"
inputs = ["ok_*"]
gather = true
script = 'cat "$INPUT_DIR"/* > "$OUTPUT_DIR/summary"'
"#;

#[test]
fn a_gather_held_after_its_inputs_changed_keeps_the_output_live_when_the_run_began() {
    let p = Project::new(HELD);
    // The input set goes S1, S2, S1: the first task's summary is live, the second's is the
    // last one made.
    for text in ["1\n", "2\n", "1\n"] {
        write_input(&p, text);
        p.run_ok(&[]);
        assert_eq!(p.contents("summary"), [text]);
    }
    // The source replaces its items (a's changes, so no summary matches the new set) and a bad
    // item fails its check: the gather is held, and the summary live before the run stays live,
    // not the last one made.
    write_input(&p, "3\n");
    std::fs::write(p.path().join("in/b"), "BAD\n").expect("write in/b");
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(summary["held"][0]["step"], "all", "{summary}");
    assert_eq!(p.contents("summary"), ["1\n"]);
}

/// `in/*` → `item_*`; `kc` gathers the items; `ke` gathers the items and `kc`'s result.
const GATHER_OVER_GATHER: &str = r#"
[[step]]
name = "src"
keep = "run"
script = 'for f in in/*; do cp "$f" "$OUTPUT_DIR/item_$(basename "$f")"; done'

[[step]]
name = "ke"
inputs = ["item_*", "kc_*"]
gather = true
script = 'ls "$INPUT_DIR" > "$OUTPUT_DIR/ke_all"'

[[step]]
name = "kc"
inputs = ["item_*"]
gather = true
script = 'ls "$INPUT_DIR" > "$OUTPUT_DIR/kc_all"'
"#;

/// A gather fed by another gather runs once, on the set with the other's result, and only that
/// result is live: it used to run first on the set without it, and both outputs stayed live.
/// (`ke` comes first in the manifest: the order must not matter.)
#[test]
fn a_gather_fed_by_a_gather_runs_once_on_the_settled_set() {
    let p = Project::new(GATHER_OVER_GATHER);
    std::fs::create_dir_all(p.path().join("in")).expect("mkdir in");
    for name in ["a", "b"] {
        std::fs::write(p.path().join("in").join(name), name).expect("write input");
    }
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "kc"), 1, "{summary}");
    assert_eq!(executed(&summary, "ke"), 1, "{summary}");
    assert_eq!(p.contents("ke_all"), ["item_a\nitem_b\nkc_all\n"]);
    assert_eq!(p.contents("kc_all"), ["item_a\nitem_b\n"]);

    // A new item: each gather runs once more, and again one result each is live.
    std::fs::write(p.path().join("in/c"), "c").expect("write input");
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "kc"), 1, "{summary}");
    assert_eq!(executed(&summary, "ke"), 1, "{summary}");
    assert_eq!(p.contents("ke_all"), ["item_a\nitem_b\nitem_c\nkc_all\n"]);

    // Nothing changed: nothing runs but the source, and the live set stays.
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "ke"), 0, "{summary}");
    assert_eq!(executed(&summary, "kc"), 0, "{summary}");
    assert_eq!(p.contents("ke_all"), ["item_a\nitem_b\nitem_c\nkc_all\n"]);
}

/// The live result of a gather fed by a gather is the one for the settled set, even when a
/// result for the set without the other gather's output exists too (here made with `--step`).
#[test]
fn only_the_settled_sets_result_of_a_gather_fed_by_a_gather_is_live() {
    let p = Project::new(GATHER_OVER_GATHER);
    std::fs::create_dir_all(p.path().join("in")).expect("mkdir in");
    std::fs::write(p.path().join("in/a"), "a").expect("write input");
    p.run_ok(&["--step", "src"]);
    p.run_ok(&["--step", "ke"]);
    assert_eq!(p.contents("ke_all"), ["item_a\n"]);
    let summary = p.run_ok(&[]);
    assert_eq!(executed(&summary, "ke"), 1, "{summary}");
    assert_eq!(p.contents("ke_all"), ["item_a\nkc_all\n"]);
}
