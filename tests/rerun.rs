//! Re-running on purpose (issue 19 item 2): `grit run --force-step NAME` re-executes every
//! current task of a step like `make -B`, with early cutoff downstream; `grit delete` of a derived
//! resource makes its task run again, like deleting a make target.

mod common;

use common::{Project, describe, executed};

const PIPELINE: &str = r#"
[[step]]
name = "seed"
once = true
script = 'for i in 1 2 3; do echo "item $i" > "$OUTPUT_DIR/item_$i"; done'

[[step]]
name = "shout"
inputs = ["item_*"]
script = 'tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/loud_$GRIT_INPUT_NAME"'

[[step]]
name = "stamp"
inputs = ["item_1"]
script = 'date +%s%N > "$OUTPUT_DIR/stamp"'

[[step]]
name = "count"
inputs = ["loud_*", "stamp"]
gather = true
script = 'cat "$INPUT_DIR"/loud_* | wc -l | tr -d " " > "$OUTPUT_DIR/count"'
"#;

#[test]
fn force_step_reruns_every_current_task_and_cutoff_still_applies() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let (dry, plan) = p.run(&["--dry-run", "--force-step", "shout"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let shout = &plan["steps"][1];
    assert_eq!(shout["tasks"], 3, "{plan}");
    assert_eq!(shout["reasons"][0]["reason"], "forced with --force-step");
    let forced = p.run_ok(&["--force-step", "shout"]);
    assert_eq!(executed(&forced, "shout"), 3, "{forced}");
    assert_eq!(
        executed(&forced, "count"),
        0,
        "identical outputs: nothing downstream runs"
    );
    assert_eq!(p.contents("loud_item_2"), ["ITEM 2\n"]);

    // A step whose output changes when forced: the new output replaces the old one and
    // downstream runs.
    let before = p.contents("stamp");
    let forced = p.run_ok(&["--force-step", "stamp"]);
    assert_eq!(executed(&forced, "stamp"), 1);
    assert_eq!(executed(&forced, "count"), 1);
    let after = p.contents("stamp");
    assert_eq!(after.len(), 1);
    assert_ne!(before, after);

    // A once source and a gather step are forced too; repeatable.
    let forced = p.run_ok(&["--force-step", "seed", "--force-step", "count"]);
    assert_eq!(executed(&forced, "seed"), 1, "{forced}");
    assert_eq!(executed(&forced, "count"), 1);
    assert_eq!(executed(&forced, "shout"), 0);
    assert_eq!(p.contents("count"), ["3\n"]);

    // Without the flag, nothing runs again.
    assert_eq!(p.run_ok(&[])["executed"], 0);

    let (unknown, _) = p.run(&["--force-step", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--force-step nope: no such step"));
}

#[test]
fn deleting_a_derived_output_makes_its_task_run_again() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let loud = p.contents("loud_item_2");
    let delete = p.grit(&["delete", "--name", "loud_item_2"]);
    assert!(delete.status.success(), "{}", describe(&delete));
    let said = String::from_utf8_lossy(&delete.stdout);
    assert!(
        said.contains("1 task(s) will run again at the next run"),
        "{said}"
    );
    assert!(p.contents("loud_item_2").is_empty());

    let again = p.run_ok(&[]);
    assert_eq!(executed(&again, "shout"), 1, "{again}");
    assert_eq!(p.contents("loud_item_2"), loud, "the output is back");
    assert_eq!(p.contents("count"), ["3\n"]);
    assert_eq!(p.run_ok(&[])["executed"], 0);
}

#[test]
fn a_derived_resource_keeps_its_step_after_delete_removes_its_first_producer() {
    let p = Project::new(
        r#"
[[step]]
name = "seed"
once = true
script = 'echo a > "$OUTPUT_DIR/x_1"; echo b > "$OUTPUT_DIR/x_2"'

[[step]]
name = "norm"
inputs = ["x_*"]
script = 'echo same > "$OUTPUT_DIR/out"'
"#,
    );
    p.run_ok(&[]);
    // `out` was first produced from x_1; deleting x_1 removes that task, not the one from x_2.
    let delete = p.grit(&["delete", "--name", "x_1"]);
    assert!(delete.status.success(), "{}", describe(&delete));
    let out: Vec<_> = p
        .resources(false)
        .into_iter()
        .filter(|r| r["name"] == "out")
        .collect();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["step"], "norm", "{out:?}");
    let listing = p.grit(&["resources", "out"]);
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("norm") && !text.contains("(ingested)"),
        "{text}"
    );
}
