//! Upstream GRIT's demo manifests (tests/fixtures/manifests/grit-demos, verbatim from its HEAD
//! `demo/`) run unchanged, with their expected results under grit's semantics
//! (../shared/notes/upstream-grit.md §6.1), plus GRIT's README shapes rewritten to current syntax.

mod common;

use common::{Project, executed};

fn demo(name: &str) -> Project {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests/grit-demos")
        .join(name);
    Project::new(&std::fs::read_to_string(path).expect("demo manifest"))
}

#[test]
fn minimal_linear_pipeline() {
    let p = demo("Minimal linear pipeline.toml");
    let run = p.run_ok(&[]);
    assert_eq!(run["executed"], 2, "1 source + 1 process task");
    assert_eq!(p.contents("process"), ["hello world\n"]);
    assert_eq!(p.contents("done"), ["HELLO WORLD\n"]);
    // GRIT ran seeds once ever; grit's sources poll every run, and identical output starts nothing.
    let again = p.run_ok(&[]);
    assert_eq!(executed(&again, "extract"), 1);
    assert_eq!(executed(&again, "process"), 0);
    assert_eq!(again["resources_new"], 0);
}

#[test]
fn fan_out_with_shared_upstream() {
    let p = demo("Fan-out with shared upstream.toml");
    p.run_ok(&[]);
    // `upper` and `sort` hold the same bytes: two resources, one object.
    let live = p.live();
    let hash = |name: &str| {
        live.iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .unwrap()
    };
    assert_eq!(hash("upper"), hash("sort"));
    assert_eq!(p.contents("done"), ["BANANA\n", "banana\n"]);
    let objects = walk_objects(&p.db().join("objects"));
    // banana (upper = sort = sort's done), BANANA, plus the (empty) task logs.
    assert!(objects.contains(&common::sha256_hex(b"banana\n")));
    assert!(objects.contains(&common::sha256_hex(b"BANANA\n")));
}

#[test]
fn parallel_fan_out_keeps_the_final_content_of_a_rewritten_file() {
    let p = demo("Parallel fan-out with controlled dependency.toml");
    p.run_ok(&[]);
    // As at GRIT's HEAD: rewriting `work` eight times leaves one resource with the last content.
    assert_eq!(p.contents("work"), ["8\n"]);
    assert_eq!(p.contents("done"), ["64\n"]);
}

#[test]
fn grit_readme_shapes_in_current_syntax() {
    // A filter that drops raw-data-2, a chain of three, and a per-step parallel cap.
    let p = Project::new(
        r#"
[[step]]
name = "fetch"
input = ""
script = '''
echo "sample data" > $OUTPUT_DIR/raw-data
echo "ignored" > $OUTPUT_DIR/raw-data-2
'''

[[step]]
name = "process"
input = "raw-data"
parallel = 2
script = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/processed'

[[step]]
name = "finalize"
input = "processed"
script = 'sed "s/^/final: /" $INPUT_FILE > $OUTPUT_DIR/final'
"#,
    );
    let run = p.run_ok(&[]);
    assert_eq!(executed(&run, "process"), 1, "raw-data-2 matches no input");
    assert_eq!(p.contents("final"), ["final: SAMPLE DATA\n"]);
    assert_eq!(
        p.contents("raw-data-2"),
        ["ignored\n"],
        "unconsumed outputs are still resources"
    );
}

fn walk_objects(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for a in std::fs::read_dir(root).unwrap() {
        let a = a.unwrap();
        for b in std::fs::read_dir(a.path()).unwrap() {
            let b = b.unwrap();
            for c in std::fs::read_dir(b.path()).unwrap() {
                let c = c.unwrap();
                out.push(format!(
                    "{}{}{}",
                    a.file_name().to_string_lossy(),
                    b.file_name().to_string_lossy(),
                    c.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}
