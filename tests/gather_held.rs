//! A gather does not publish from a partial set (issue 19 item 5): when a task upstream of a
//! gather step failed in the run, the gather is held back, says so, and its previous output stays
//! live; `gather_partial = true` runs it anyway.

mod common;

use common::{Project, describe};

/// sales.csv → one resource per row → each row's total (failing on a BAD item) → a gathered
/// report; `audit` fails on an AUDIT item but feeds nothing.
const PIPELINE: &str = r#"
[[step]]
name = "load"
script = 'cp sales.csv "$OUTPUT_DIR/sales.csv"'

[[step]]
name = "split"
inputs = ["sales.csv"]
script = '''
tail -n +2 "$INPUT_FILE" | while IFS=, read -r id item qty price; do
  echo "$id,$item,$qty,$price" > "$OUTPUT_DIR/row_$id"
done
'''

[[step]]
name = "stats"
inputs = ["row_*"]
script = '''
IFS=, read -r id item qty price < "$INPUT_FILE"
if [ "$item" = BAD ]; then echo "cannot price $item" >&2; exit 3; fi
echo "$item $((qty * price))" > "$OUTPUT_DIR/total_$id"
'''

[[step]]
name = "report"
inputs = ["total_*"]
gather = true
PARTIAL
script = '''
awk '{ n += 1; sum += $2 } END { print n " rows, total " sum }' "$INPUT_DIR"/* > "$OUTPUT_DIR/report"
'''

[[step]]
name = "audit"
inputs = ["sales.csv"]
script = '''
if grep -q AUDIT "$INPUT_FILE"; then exit 4; fi
echo clean > "$OUTPUT_DIR/audit"
'''
"#;

const CSV: &str = "id,item,qty,price\n1,apple,3,2\n2,pear,1,5\n3,plum,4,1\n";

fn project(partial: bool) -> Project {
    let p = Project::new(&PIPELINE.replace(
        "PARTIAL",
        if partial { "gather_partial = true" } else { "" },
    ));
    p.write_csv(CSV);
    p.run_ok(&[]);
    assert_eq!(p.contents("report"), ["3 rows, total 15\n"]);
    // Row 2 changes, and a row whose total cannot be computed arrives.
    p.write_csv(&format!(
        "{}4,BAD,1,1\n",
        CSV.replace("2,pear,1,5", "2,pear,2,5")
    ));
    p
}

trait Csv {
    fn write_csv(&self, text: &str);
}

impl Csv for Project {
    fn write_csv(&self, text: &str) {
        std::fs::write(self.path().join("sales.csv"), text).expect("write sales.csv");
    }
}

#[test]
fn a_gather_with_a_failed_upstream_task_is_held_and_keeps_its_output() {
    let p = project(false);
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(summary["held"][0]["step"], "report", "{summary}");
    assert_eq!(summary["held"][0]["failed_upstream"][0], "stats");
    assert_eq!(summary["held"][0]["previous_output"], true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "held: gather step report did not run on a partial set: a task of stats failed in this run; its previous output stays live"
        ),
        "{stderr}"
    );
    assert_eq!(
        p.contents("report"),
        ["3 rows, total 15\n"],
        "the previous report"
    );

    // The failure fixed, the next run completes the set and runs the gather.
    p.write_csv(&format!(
        "{}4,kiwi,1,1\n",
        CSV.replace("2,pear,1,5", "2,pear,2,5")
    ));
    let fixed = p.run_ok(&[]);
    assert!(
        fixed["held"].as_array().is_some_and(|h| h.is_empty()),
        "{fixed}"
    );
    assert_eq!(p.contents("report"), ["4 rows, total 21\n"]);

    // A failed task that does not feed the gather does not hold it.
    let fixed = format!("{}4,kiwi,1,1\n", CSV.replace("2,pear,1,5", "2,pear,2,5"));
    p.write_csv(&format!("{fixed}5,AUDIT,1,1\n"));
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(summary["failures"][0]["step"], "audit", "{summary}");
    assert!(
        summary["held"].as_array().is_some_and(|h| h.is_empty()),
        "{summary}"
    );
    assert_eq!(p.contents("report"), ["5 rows, total 22\n"]);
}

#[test]
fn gather_partial_runs_on_the_partial_set() {
    let p = project(true);
    let (output, summary) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        summary["held"].as_array().is_some_and(|h| h.is_empty()),
        "{summary}"
    );
    assert_eq!(p.contents("report"), ["3 rows, total 20\n"]);
}

/// The held output is the one live when the upstream task failed, which need not be the last the
/// gather made: a mirrored directory went {a} → {a, b} → {a}, so the live summary is the first
/// one again, and a failing new file must keep it, not bring back the summary that had b.
#[test]
fn a_held_gather_keeps_the_output_that_was_live_not_the_last_one_made() {
    let p = Project::new(
        r#"
[[step]]
name = "src"
keep = "run"
script = 'for f in in/*; do cp "$f" "$OUTPUT_DIR/item_$(basename "$f")"; done'

[[step]]
name = "chk"
inputs = ["item_*"]
script = 'if grep -q FAIL "$INPUT_FILE"; then exit 1; fi; cp "$INPUT_FILE" "$OUTPUT_DIR/ok_${GRIT_INPUT_NAME#item_}"'

[[step]]
name = "total"
inputs = ["ok_*"]
gather = true
script = 'cat "$INPUT_DIR"/* > "$OUTPUT_DIR/summary"'
"#,
    );
    let dir = p.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), "1\n").unwrap();
    p.run_ok(&[]);
    std::fs::write(dir.join("b"), "2\n").unwrap();
    p.run_ok(&[]);
    assert_eq!(p.contents("summary"), ["1\n2\n"]);
    std::fs::remove_file(dir.join("b")).unwrap();
    p.run_ok(&[]);
    assert_eq!(p.contents("summary"), ["1\n"]);
    std::fs::write(dir.join("c"), "FAIL\n").unwrap();
    let (out, _) = p.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(p.contents("summary"), ["1\n"]);
}

/// `--step` on the gather alone, while a task upstream of it stays failed from an earlier run:
/// the gather is held as in a whole run. It used to run on the partial set, and the next whole
/// run, failing the task again, kept that partial result live where a fresh store has none.
#[test]
fn step_on_a_gather_with_an_earlier_failed_upstream_task_is_held() {
    let p = Project::new(&PIPELINE.replace("PARTIAL", ""));
    p.write_csv(&format!("{CSV}4,BAD,1,1\n"));
    let (output, _) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(p.contents("report").is_empty());

    let (output, summary) = p.run(&["--step", "report"]);
    assert_eq!(summary["held"][0]["step"], "report", "{summary}");
    assert_eq!(
        summary["held"][0]["failed_earlier"][0], "stats",
        "{summary}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a task of stats failed in an earlier run, and `--step` leaves it out"),
        "{stderr}"
    );
    assert!(p.contents("report").is_empty(), "ran on a partial set");

    let (output, _) = p.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        p.contents("report").is_empty(),
        "a partial result stayed live"
    );
}
