//! A gather's `INPUT_DIR` gives every input a name of its own (DESIGN §2.10): a resource named
//! like another's disambiguated form (`x.<short hash>`) neither replaces that input nor stops
//! the task, under either output capture.

mod common;

use common::{Project, describe, executed, sha256_hex};

/// Two steps publish `x`, so the gather sees them as `x.<short hash>`; a third publishes a
/// resource named exactly the first one's form.
const IMPOSTOR: &str = r#"
[[step]]
name = "s1"
script = 'echo one > $OUTPUT_DIR/x'

[[step]]
name = "s2"
script = 'echo two > $OUTPUT_DIR/x'

[[step]]
name = "hostile"
script = 'echo EVIL > $OUTPUT_DIR/x.2c8b08da5ce6'

[[step]]
name = "g"
inputs = ["x*"]
gather = true
script = 'for f in $INPUT_DIR/*; do echo "$(basename $f): $(cat $f)"; done > $OUTPUT_DIR/report'
"#;

/// Whether FUSE capture can be used here; else why not.
fn fuse_usable() -> Result<(), String> {
    match std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) if nix::unistd::geteuid().is_root() => Ok(()),
        Ok(_) => Err("FUSE mounts need root here".into()),
        Err(e) => Err(format!("cannot open /dev/fuse: {e}")),
    }
}

/// Run the impostor pipeline with `--capture MODE` and check the gather saw all three inputs,
/// each under a name of its own, the same names on every run.
fn every_input_under_its_own_name(mode: &str) {
    let one = sha256_hex(b"one\n");
    assert!(one.starts_with("2c8b08da5ce6"), "the repro's hash prefix");
    let two = sha256_hex(b"two\n");
    let p = Project::new(IMPOSTOR);
    let (out, _) = p.run(&["--capture", mode]);
    assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
    let reports = p.contents("report");
    assert_eq!(reports.len(), 1, "[{mode}] one report: {reports:?}");
    let mut lines: Vec<&str> = reports[0].lines().collect();
    lines.sort_unstable();
    // The impostor keeps its own name; the input it named itself after gets the full hash.
    let mut expected = vec![
        format!("x.{one}: one"),
        format!("x.{}: two", &two[..12]),
        "x.2c8b08da5ce6: EVIL".to_string(),
    ];
    expected.sort_unstable();
    assert_eq!(lines, expected, "[{mode}] the gather's report");

    // The same set gives the same names: a second run has nothing to do.
    let (again, json) = p.run(&["--capture", mode]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "[{mode}] {}",
        describe(&again)
    );
    assert_eq!(executed(&json, "g"), 0, "[{mode}] {json}");
}

#[test]
fn an_impostor_input_takes_no_ones_place_with_fuse_capture() {
    if let Err(why) = fuse_usable() {
        eprintln!("skipping --capture fuse: {why}");
        return;
    }
    every_input_under_its_own_name("fuse");
}

#[test]
fn an_impostor_input_takes_no_ones_place_with_dir_capture() {
    every_input_under_its_own_name("dir");
}

/// Two steps publish the same 250-byte name: the disambiguated forms (`<name>.<hash>`) would be
/// longer than a file name may be, so they give up the name's end instead, and the gather runs
/// on both inputs under either capture.
fn inputs_with_the_longest_names_still_get_names_of_their_own(mode: &str) {
    let long = "n".repeat(250);
    let manifest = format!(
        r#"
[[step]]
name = "s1"
script = 'echo one > $OUTPUT_DIR/{long}'

[[step]]
name = "s2"
script = 'echo two > $OUTPUT_DIR/{long}'

[[step]]
name = "g"
inputs = ["n*"]
gather = true
script = 'for f in $INPUT_DIR/*; do n=$(basename $f); echo "${{#n}} $(cat $f)"; done > $OUTPUT_DIR/report'
"#
    );
    let p = Project::new(&manifest);
    let (out, _) = p.run(&["--capture", mode]);
    assert_eq!(out.status.code(), Some(0), "[{mode}] {}", describe(&out));
    let reports = p.contents("report");
    assert_eq!(reports.len(), 1, "[{mode}] one report: {reports:?}");
    let mut lines: Vec<&str> = reports[0].lines().collect();
    lines.sort_unstable();
    // `<242 bytes of the name>.<12-digit hash>`: 255 bytes each.
    assert_eq!(
        lines,
        ["255 one", "255 two"],
        "[{mode}] the gather's report"
    );
}

#[test]
fn the_longest_names_fit_in_input_dir_with_fuse_capture() {
    if let Err(why) = fuse_usable() {
        eprintln!("skipping --capture fuse: {why}");
        return;
    }
    inputs_with_the_longest_names_still_get_names_of_their_own("fuse");
}

#[test]
fn the_longest_names_fit_in_input_dir_with_dir_capture() {
    inputs_with_the_longest_names_still_get_names_of_their_own("dir");
}
