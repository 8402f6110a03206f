//! task-sync's time gate (issue 15 item 4): `min_interval` on a source keeps it from running
//! again until that long after its last success; `--force-step` runs it once anyway; the dry run
//! and `status` say until when.

mod common;

use common::{Project, describe, executed};

const GATED: &str = r#"
[[step]]
name = "fetch"
min_interval = "6h"
script = 'date +%s%N > "$OUTPUT_DIR/stamp"'

[[step]]
name = "use"
inputs = ["stamp"]
script = 'cat "$INPUT_FILE" > "$OUTPUT_DIR/copy"'
"#;

#[test]
fn a_gated_source_is_skipped_until_its_interval_passes_and_force_step_runs_it() {
    let p = Project::new(GATED);
    assert_eq!(executed(&p.run_ok(&[]), "fetch"), 1);
    let stamp = p.contents("stamp");

    let gated = p.run_ok(&[]);
    assert_eq!(executed(&gated, "fetch"), 0, "{gated}");
    assert_eq!(p.contents("stamp"), stamp);

    let dry = p.grit(&["run", "-m", p.manifest().to_str().unwrap(), "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("gated by min_interval until"),
        "{}",
        describe(&dry)
    );
    assert!(text.contains("0 tasks would run"), "{}", describe(&dry));

    let status = p.grit(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("fetch is gated by min_interval"),
        "{}",
        describe(&status)
    );

    let forced = p.run_ok(&["--force-step", "fetch"]);
    assert_eq!(executed(&forced, "fetch"), 1, "{forced}");
    assert_ne!(p.contents("stamp"), stamp);
    assert_eq!(executed(&forced, "use"), 1, "downstream sees the new stamp");
}

#[test]
fn the_gate_opens_after_the_interval() {
    let p = Project::new(&GATED.replace("\"6h\"", "\"1s\""));
    p.run_ok(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    // More than the interval has passed since the last success: it runs.
    assert_eq!(executed(&p.run_ok(&[]), "fetch"), 1);
}

#[test]
fn min_interval_only_gates_sources_that_run_every_run() {
    for (manifest, phrase) in [
        (
            "[[step]]\nname = \"a\"\ninputs = [\"x\"]\nmin_interval = \"1h\"\nscript = \"true\"\n",
            "only a source (no inputs) is gated by time",
        ),
        (
            "[[step]]\nname = \"a\"\nonce = true\nmin_interval = \"1h\"\nscript = \"true\"\n",
            "runs once per version",
        ),
        (
            "[[step]]\nname = \"a\"\nmin_interval = 60\nscript = \"true\"\n",
            "needs a unit",
        ),
    ] {
        let p = Project::new(manifest);
        let (out, _) = p.run(&[]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("pipeline.toml:4:") || err.contains("pipeline.toml:3:"),
            "{err}"
        );
        assert!(err.contains(phrase), "{err}");
    }
}
