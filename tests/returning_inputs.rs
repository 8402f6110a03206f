//! An input that becomes live again in the middle of a run (a changed step whose output comes
//! out byte-identical to an earlier one) brings back its consumers' tasks that exist already: one
//! an earlier run left pending, and one that failed in an earlier run, which is retried as a
//! run retries every failure on a live input.

mod common;

use common::{Project, executed};

/// `in` → `item_x` → `up_item_x` (by `UP`) → `len_up_item_x`, failing while `fail` exists.
const PIPELINE: &str = r#"
[[step]]
name = "src"
keep = "run"
script = 'cp in "$OUTPUT_DIR/item_x"'

[[step]]
name = "up"
inputs = ["item_*"]
script = 'UP'

[[step]]
name = "len"
inputs = ["up_*"]
script = '''
if [ -e fail ]; then echo "told to fail" >&2; exit 3; fi
wc -c < "$INPUT_FILE" > "$OUTPUT_DIR/len_$GRIT_INPUT_NAME"
'''
"#;

const UPPER: &str = r#"tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/up_$GRIT_INPUT_NAME""#;
const UPPER_V1: &str =
    r#"{ tr a-z A-Z < "$INPUT_FILE"; echo v1; } > "$OUTPUT_DIR/up_$GRIT_INPUT_NAME""#;
/// The first script again under another text: a new version with the first one's output.
const UPPER_AGAIN: &str =
    r#"tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/up_$GRIT_INPUT_NAME" # the same output"#;

fn manifest(up: &str) -> String {
    PIPELINE.replace("UP", up)
}

/// Runs 2 and 3 of both cases, then the checks: the final live set is a fresh run's, and a
/// rerun with nothing changed runs nothing.
fn change_and_change_back(p: &Project) {
    p.write_manifest(&manifest(UPPER_V1));
    p.run_ok(&[]);
    assert_eq!(p.contents("len_up_item_x"), ["8\n"]);
    p.write_manifest(&manifest(UPPER_AGAIN));
    p.run_ok(&[]);
    assert_eq!(
        p.contents("len_up_item_x"),
        ["5\n"],
        "the consumer of the returned input did not run"
    );
    let again = p.run_ok(&[]);
    assert_eq!(executed(&again, "len"), 0, "{again}");

    let fresh = Project::new(&manifest(UPPER_AGAIN));
    std::fs::write(fresh.path().join("in"), "hello").expect("write in");
    fresh.run_ok(&[]);
    let names = |p: &Project| {
        let mut live: Vec<String> = p.live().into_iter().map(|(name, _)| name).collect();
        live.sort();
        live
    };
    assert_eq!(names(p), names(&fresh));
}

#[test]
fn a_task_left_pending_runs_when_its_input_returns_mid_run() {
    let p = Project::new(&manifest(UPPER));
    std::fs::write(p.path().join("in"), "hello").expect("write in");
    // The run stops after two tasks: `len`'s task exists, pending, as after a crash.
    let (output, _) = p.run(&["--max-tasks", "2"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(p.contents("len_up_item_x").is_empty());
    change_and_change_back(&p);
}

#[test]
fn a_task_that_failed_in_an_earlier_run_is_retried_when_its_input_returns_mid_run() {
    let p = Project::new(&manifest(UPPER));
    std::fs::write(p.path().join("in"), "hello").expect("write in");
    std::fs::write(p.path().join("fail"), "").expect("write fail");
    let (output, _) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1));
    std::fs::remove_file(p.path().join("fail")).expect("remove fail");
    change_and_change_back(&p);
}
