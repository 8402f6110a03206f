//! Run parameters (issue 12 item 2): `[pipeline.params]`, a step's `params = [...]`,
//! `grit run --param NAME=VALUE`, and `GRIT_PARAM_<NAME>` in the scripts of the steps that list
//! a parameter. A value is part of the identity of those steps' tasks: a new value re-runs them
//! (and, through changed outputs, what is downstream), a value seen before is memoised and its
//! outputs are live again, and steps that list no parameter never re-run for one.

mod common;

use common::{Project, describe, executed};
use serde_json::Value;

const PIPELINE: &str = r#"
[pipeline.params]
region = { default = "eu", description = "where the data comes from" }
limit = "2"

[[step]]
name = "seed"
once = true
script = 'for i in 1 2 3; do echo "item $i" > "$OUTPUT_DIR/item_$i"; done'

[[step]]
name = "where"
once = true
params = ["region"]
script = 'echo "$GRIT_PARAM_REGION" > "$OUTPUT_DIR/where"'

[[step]]
name = "tag"
inputs = ["item_*"]
params = ["region", "limit"]
script = 'echo "$GRIT_PARAM_REGION/$GRIT_PARAM_LIMIT: $(cat "$INPUT_FILE")" > "$OUTPUT_DIR/tagged_$GRIT_INPUT_NAME"'

[[step]]
name = "plain"
inputs = ["item_*"]
script = '{ env | grep "^GRIT_PARAM_" || true; cat "$INPUT_FILE"; } > "$OUTPUT_DIR/env_$GRIT_INPUT_NAME"'

[[step]]
name = "count"
inputs = ["tagged_*"]
gather = true
script = 'cat "$INPUT_DIR"/tagged_* | wc -l | tr -d " " > "$OUTPUT_DIR/count"'

[[step]]
name = "report"
inputs = ["count"]
script = 'echo "total: $(cat "$INPUT_FILE")" > "$OUTPUT_DIR/report"'
"#;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn step<'v>(plan: &'v Value, name: &str) -> &'v Value {
    plan["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {plan}"))
}

#[test]
fn params_reach_the_scripts_of_the_steps_that_list_them_only() {
    let p = Project::new(PIPELINE);
    // With the sandbox on, as users run it: the variables pass through the sandbox's launcher.
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-m"];
        let manifest = p.manifest();
        let manifest = manifest.to_str().expect("utf-8 path");
        args.push(manifest);
        args.extend(extra);
        let output = p.grit(&args);
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    };
    run(&[]);
    assert_eq!(p.contents("tagged_item_1"), ["eu/2: item 1\n"]);
    assert_eq!(p.contents("where"), ["eu\n"]);
    assert_eq!(
        p.contents("env_item_2"),
        ["item 2\n"],
        "a step without `params` sees no GRIT_PARAM_ variable"
    );
    run(&["--param", "region=us", "--param", "limit=10"]);
    assert_eq!(p.contents("tagged_item_3"), ["us/10: item 3\n"]);
    assert_eq!(p.contents("where"), ["us\n"]);
    assert_eq!(p.contents("env_item_2"), ["item 2\n"]);
    // A value may hold anything but NUL, `=` included.
    run(&["--param", "region=a=b c"]);
    assert_eq!(p.contents("where"), ["a=b c\n"]);
}

#[test]
fn a_new_value_reruns_its_steps_and_a_value_seen_before_is_memoised() {
    let p = Project::new(PIPELINE);
    let first = p.run_ok(&[]);
    assert_eq!(first["executed"], 10, "{first}");
    assert_eq!(
        first["params"],
        serde_json::json!({"limit": "2", "region": "eu"})
    );
    let eu_tagged = p.contents("tagged_item_1");

    let us = p.run_ok(&["--param", "region=us"]);
    for (name, count) in [
        ("seed", 0),
        ("where", 1),
        ("tag", 3),
        ("plain", 0),
        ("count", 1),
        // Early cutoff: `count` wrote the same 3 again, so `report` is not run.
        ("report", 0),
    ] {
        assert_eq!(executed(&us, name), count, "{name}: {us}");
    }
    assert_eq!(p.contents("tagged_item_1"), ["us/2: item 1\n"]);
    assert_eq!(
        p.contents("tagged_item_2").len(),
        1,
        "only the current value's outputs are live"
    );
    assert_eq!(p.contents("report"), ["total: 3\n"]);

    // The same value again: nothing runs.
    assert_eq!(p.run_ok(&["--param", "region=us"])["executed"], 0);

    // Back to the default: every task of that value is in the store, so nothing runs, and its
    // outputs are live again (as a reverted script's results are).
    let back = p.run_ok(&[]);
    assert_eq!(back["executed"], 0, "{back}");
    assert_eq!(p.contents("tagged_item_1"), eu_tagged);
    assert_eq!(p.contents("where"), ["eu\n"]);
    let status = p.status();
    assert_eq!(
        status["params"],
        serde_json::json!({"limit": "2", "region": "eu"})
    );

    // A parameter only `tag` reads: `where` keeps its version and is not run.
    let limit = p.run_ok(&["--param", "limit=3"]);
    assert_eq!(executed(&limit, "tag"), 3, "{limit}");
    assert_eq!(executed(&limit, "where"), 0, "{limit}");
}

#[test]
fn the_dry_run_says_when_a_task_would_run_because_a_value_changed() {
    let p = Project::new(PIPELINE);
    p.run_ok(&[]);
    let (output, plan) = p.run(&["--dry-run", "--param", "region=us"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        plan["params"],
        serde_json::json!({"limit": "2", "region": "us"})
    );
    let tag = step(&plan, "tag");
    assert_eq!(tag["tasks"], 3, "{plan}");
    assert_eq!(tag["reasons"][0]["reason"], "parameter value changed");
    assert_eq!(
        tag["params_changed"],
        serde_json::json!([{"name": "region", "from": "eu", "to": "us"}])
    );
    assert_eq!(
        step(&plan, "where")["reasons"][0]["reason"],
        "parameter value changed"
    );
    assert_eq!(step(&plan, "plain")["tasks"], 0, "{plan}");
    assert_eq!(step(&plan, "plain")["up_to_date"], 3, "{plan}");
    assert!(step(&plan, "plain").get("params_changed").is_none());

    let text = Project::grit(
        &p,
        &[
            "run",
            "-m",
            p.manifest().to_str().expect("utf-8 path"),
            "--dry-run",
            "--param",
            "region=us",
        ],
    );
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("parameters: limit=\"2\" region=\"us\""),
        "{out}"
    );
    assert!(out.contains("parameter region: \"eu\" → \"us\""), "{out}");
    assert!(out.contains("reason: parameter value changed ×3"), "{out}");
    assert_eq!(p.run_ok(&[])["executed"], 0, "the dry run changed nothing");

    // After a run with `us`, the default is an earlier version whose tasks are all done.
    p.run_ok(&["--param", "region=us"]);
    let (_, plan) = p.run(&["--dry-run"]);
    let tag = step(&plan, "tag");
    assert_eq!(tag["change"], "earlier version", "{plan}");
    assert_eq!(tag["tasks"], 0);
    assert_eq!(tag["up_to_date"], 3);
}

#[test]
fn unknown_missing_and_malformed_params_are_usage_errors() {
    let p = Project::new(PIPELINE);
    let (unknown, _) = p.run(&["--param", "regoin=us"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    let err = stderr(&unknown);
    assert!(
        err.contains("pipeline.toml: unknown parameter `regoin`"),
        "{err}"
    );
    assert!(err.contains("help: did you mean `region`?"), "{err}");
    assert!(!p.db().exists(), "nothing ran, no store was made");

    let (bare, _) = p.run(&["--param", "region"]);
    assert_eq!(bare.status.code(), Some(2), "{}", describe(&bare));
    assert!(
        stderr(&bare).contains("--param <NAME=VALUE>"),
        "{}",
        stderr(&bare)
    );
    assert!(stderr(&bare).contains("expected NAME=VALUE"));

    let (twice, _) = p.run(&["--param", "region=us", "--param", "region=eu"]);
    assert_eq!(twice.status.code(), Some(2), "{}", describe(&twice));
    assert!(stderr(&twice).contains("--param region is given twice"));

    // A step that lists an undeclared parameter: a located manifest error.
    p.write_manifest(&PIPELINE.replace(
        r#"params = ["region", "limit"]"#,
        r#"params = ["regoin", "limit"]"#,
    ));
    let (undeclared, _) = p.run(&[]);
    assert_eq!(
        undeclared.status.code(),
        Some(2),
        "{}",
        describe(&undeclared)
    );
    let err = stderr(&undeclared);
    assert!(
        err.contains("pipeline.toml:20:11: error: step `tag` reads parameter `regoin`, which [pipeline.params] does not declare"),
        "{err}"
    );
    assert!(err.contains("help: did you mean `region`?"), "{err}");
    let validate = p.grit(&["validate", "-m", p.manifest().to_str().expect("utf-8")]);
    assert_eq!(validate.status.code(), Some(2), "{}", describe(&validate));

    // A declaration with a bad name is located too.
    p.write_manifest(&PIPELINE.replace("limit = \"2\"", "max-items = \"2\""));
    let (bad_name, _) = p.run(&[]);
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(
        stderr(&bad_name).contains("pipeline.toml:4:1: error: parameter name `max-items`"),
        "{}",
        stderr(&bad_name)
    );

    // A parameter without a default is required at run time.
    p.write_manifest(&PIPELINE.replace(
        r#"region = { default = "eu", description = "where the data comes from" }"#,
        r#"region = { description = "where the data comes from" }"#,
    ));
    let (missing, _) = p.run(&[]);
    assert_eq!(missing.status.code(), Some(2), "{}", describe(&missing));
    let err = stderr(&missing);
    assert!(
        err.contains("pipeline.toml:3:1: error: parameter `region` is required and has no value"),
        "{err}"
    );
    assert!(err.contains("--param region=VALUE"), "{err}");
    let given = p.run_ok(&["--param", "region=us"]);
    assert_eq!(given["params"]["region"], "us");
}

#[test]
fn validate_and_status_show_parameters() {
    let p = Project::new(PIPELINE);
    let manifest = p.manifest();
    let manifest = manifest.to_str().expect("utf-8 path");
    let validate = p.grit(&["validate", "-m", manifest]);
    assert!(validate.status.success(), "{}", describe(&validate));
    let out = String::from_utf8_lossy(&validate.stdout);
    assert!(out.contains("parameters: 2 declared"), "{out}");
    assert!(
        out.contains("  region     \"eu\"     where,tag  where the data comes from"),
        "{out}"
    );
    assert!(out.contains("  limit      \"2\"      tag"), "{out}");

    p.run_ok(&["--param", "region=us"]);
    let status = p.grit(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        out.contains("  parameters: limit=\"2\" region=\"us\""),
        "{out}"
    );
    // `status -m`: what a run without --param would change (back to the default).
    let json = p.grit(&["status", "--json", "-m", manifest]);
    let json: Value = serde_json::from_slice(&json.stdout).expect("status JSON");
    assert_eq!(
        json["params"],
        serde_json::json!({"limit": "2", "region": "us"})
    );
    assert_eq!(json["declared_params"][0]["name"], "region");
    assert_eq!(json["declared_params"][0]["default"], "eu");
    let changed: Vec<&str> = json["changes"]["changed"]
        .as_array()
        .expect("changed steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(changed, ["where", "tag"], "{json}");
    assert_eq!(
        json["changes"]["changed"][1]["params_changed"][0]["to"],
        "eu"
    );
    // With the last run's values given, nothing changes.
    let same = p.grit(&["status", "--json", "-m", manifest, "--param", "region=us"]);
    let same: Value = serde_json::from_slice(&same.stdout).expect("status JSON");
    assert_eq!(same["changes"]["changed"], serde_json::json!([]), "{same}");
    // `why` names the values a result was made with.
    let why = p.grit(&[
        "why",
        &p.live()
            .iter()
            .find(|(n, _)| n == "where")
            .expect("where")
            .1,
    ]);
    let out = String::from_utf8_lossy(&why.stdout);
    assert!(out.contains("region=\"us\""), "{out}");
}
