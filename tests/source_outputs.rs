//! A source's new output replaces its old one (DESIGN §2.3, issue 19 item 1): `keep = "latest"`
//! (the default), `"run"` and `"all"`, `grit ingest` superseding, and the schema v2 migration of a
//! store written by an older grit.

mod common;

use std::path::Path;

use common::{Project, describe, executed};

/// The CSV pipeline: a source copies sales.csv, split writes one resource per row, stats
/// computes each row's total, report gathers them (and `notes` counts ingested `note` lines).
const SALES: &str = include_str!("fixtures/store-v1/pipeline.toml");
const SALES_CSV: &str = "id,item,qty,price\n1,apple,3,2\n2,pear,1,5\n3,plum,4,1\n";

fn sales_project(csv: &str) -> Project {
    let p = Project::new(SALES);
    std::fs::write(p.path().join("sales.csv"), csv).expect("write sales.csv");
    p
}

fn names(p: &Project, name: &str) -> usize {
    p.live().iter().filter(|(n, _)| n == name).count()
}

#[test]
fn csv_pipeline_edit_one_row_and_the_report_equals_a_fresh_run() {
    let p = sales_project(SALES_CSV);
    p.run_ok(&[]);
    assert_eq!(p.contents("report"), ["3 rows, total 15\n"]);

    let edited = SALES_CSV.replace("2,pear,1,5", "2,pear,2,5");
    std::fs::write(p.path().join("sales.csv"), &edited).expect("edit sales.csv");
    let second = p.run_ok(&[]);
    // Only the edited row's work re-runs: rows 1 and 3 come out byte-identical.
    assert_eq!(executed(&second, "split"), 1);
    assert_eq!(executed(&second, "stats"), 1, "{second}");
    assert_eq!(executed(&second, "report"), 1);

    let fresh = sales_project(&edited);
    fresh.run_ok(&[]);
    assert_eq!(fresh.contents("report"), ["3 rows, total 20\n"]);
    for name in ["report", "lines", "sales.csv", "row_2", "total_2"] {
        assert_eq!(p.contents(name), fresh.contents(name), "{name}");
    }
    assert_eq!(p.live().len(), fresh.live().len(), "{:?}", p.live());
    // The old sales.csv, row_2 and total_2 are history: listed with --all until gc removes them.
    let history = |p: &Project| {
        p.resources(true)
            .iter()
            .filter(|r| r["live"] == false)
            .count()
    };
    assert_eq!(
        history(&p),
        5,
        "old sales.csv, row_2, total_2, report, lines"
    );
    let gc = p.grit(&["gc"]);
    assert!(gc.status.success(), "{}", describe(&gc));
    assert_eq!(history(&p), 0);
    assert_eq!(p.contents("report"), ["3 rows, total 20\n"]);
    // An unchanged file starts no work.
    let third = p.run_ok(&[]);
    assert_eq!(third["executed"], 1, "only the source polls: {third}");
}

const MIRROR: &str = r#"
[[step]]
name = "mirror"
keep = "KEEP"
script = '''
test ! -e fail || { cp mirror/* "$OUTPUT_DIR"/; exit 1; }
cp mirror/* "$OUTPUT_DIR"/
'''

[[step]]
name = "size"
inputs = ["?.txt"]
script = 'wc -c < "$INPUT_FILE" | tr -d " " > "$OUTPUT_DIR/size_$GRIT_INPUT_NAME"'
"#;

fn mirror_project(keep: &str) -> Project {
    let p = Project::new(&MIRROR.replace("KEEP", keep));
    std::fs::create_dir(p.path().join("mirror")).expect("mkdir");
    std::fs::write(p.path().join("mirror/a.txt"), "a1\n").expect("write");
    std::fs::write(p.path().join("mirror/b.txt"), "b1\n").expect("write");
    p.run_ok(&[]);
    // b.txt disappears from the mirrored directory; a.txt changes.
    std::fs::remove_file(p.path().join("mirror/b.txt")).expect("rm");
    std::fs::write(p.path().join("mirror/a.txt"), "a22\n").expect("write");
    p.run_ok(&[]);
    p
}

#[test]
fn keep_run_latest_and_all_choose_which_source_outputs_stay_live() {
    let run = mirror_project("run");
    assert_eq!(run.contents("a.txt"), ["a22\n"]);
    assert_eq!(
        names(&run, "b.txt"),
        0,
        "run: a file that disappeared drops out"
    );
    assert_eq!(
        names(&run, "size_b.txt"),
        0,
        "and so does what was derived from it"
    );
    assert_eq!(run.contents("size_a.txt"), ["4\n"]);

    // A failed source run changes nothing, although it wrote a new b.txt before failing.
    std::fs::write(run.path().join("mirror/b.txt"), "b2\n").expect("write");
    std::fs::write(run.path().join("fail"), "").expect("write");
    let (output, failed) = run.run(&[]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(failed["failed"], 1);
    assert_eq!(run.contents("a.txt"), ["a22\n"]);
    assert_eq!(names(&run, "b.txt"), 0);

    let latest = mirror_project("latest");
    assert_eq!(latest.contents("a.txt"), ["a22\n"]);
    assert_eq!(latest.contents("b.txt"), ["b1\n"], "latest: per name");
    assert_eq!(latest.contents("size_a.txt"), ["4\n"]);

    let all = mirror_project("all");
    assert_eq!(
        all.contents("a.txt"),
        ["a1\n", "a22\n"],
        "all: every output"
    );
    assert_eq!(all.contents("size_a.txt"), ["3\n", "4\n"]);
    assert_eq!(all.contents("b.txt"), ["b1\n"]);
}

#[test]
fn a_changed_keep_rule_applies_to_stored_outputs_without_rerunning() {
    let p = mirror_project("all");
    assert_eq!(names(&p, "a.txt"), 2);
    // `keep` is not part of the step version: only `size` may run, and nothing needs to.
    p.write_manifest(&MIRROR.replace("KEEP", "run"));
    let run = p.run_ok(&["--step", "size"]);
    assert_eq!(run["executed"], 0, "{run}");
    assert_eq!(p.contents("a.txt"), ["a22\n"]);
    assert_eq!(names(&p, "b.txt"), 0);
    assert_eq!(p.contents("size_a.txt"), ["4\n"]);
    // History is kept, so going back to "all" restores every output and its derived results.
    p.write_manifest(&MIRROR.replace("KEEP", "all"));
    let back = p.run_ok(&["--step", "size"]);
    assert_eq!(back["executed"], 0, "{back}");
    assert_eq!(p.contents("a.txt"), ["a1\n", "a22\n"]);
    assert_eq!(p.contents("size_a.txt"), ["3\n", "4\n"]);
}

#[test]
fn a_reverted_once_source_returns_to_its_old_output() {
    let seed = |text: &str| {
        format!(
            "[[step]]\nname = \"seed\"\nonce = true\nscript = 'echo {text} > $OUTPUT_DIR/seeded'\n\n\
             [[step]]\nname = \"loud\"\ninputs = [\"seeded\"]\nscript = 'tr a-z A-Z < $INPUT_FILE > $OUTPUT_DIR/loud'\n"
        )
    };
    let p = Project::new(&seed("one"));
    p.run_ok(&[]);
    p.write_manifest(&seed("two"));
    p.run_ok(&[]);
    assert_eq!(p.contents("seeded"), ["two\n"]);
    assert_eq!(p.contents("loud"), ["TWO\n"]);
    p.write_manifest(&seed("one"));
    let back = p.run_ok(&[]);
    assert_eq!(back["executed"], 0, "both versions already ran: {back}");
    assert_eq!(p.contents("seeded"), ["one\n"]);
    assert_eq!(p.contents("loud"), ["ONE\n"]);
}

#[test]
fn ingest_of_a_live_name_supersedes_it_unless_keep_both() {
    let p = sales_project(SALES_CSV);
    for (file, text) in [("n1", "a\n"), ("n2", "a\nb\n"), ("n3", "a\nb\nc\n")] {
        std::fs::write(p.path().join(file), text).expect("write");
    }
    let ingest = |extra: &[&str]| {
        let mut args = vec!["ingest", "--name", "note"];
        args.extend(extra);
        let out = p.grit(&args);
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    ingest(&[p.path().join("n1").to_str().unwrap()]);
    p.run_ok(&[]);
    assert_eq!(p.contents("note_lines"), ["1\n"]);

    let said = ingest(&[p.path().join("n2").to_str().unwrap()]);
    assert!(said.contains("1 earlier 'note' no longer live"), "{said}");
    assert_eq!(p.contents("note"), ["a\nb\n"]);
    assert_eq!(
        names(&p, "note_lines"),
        0,
        "derived from the superseded note"
    );
    let old = common::sha256_hex(b"a\n");
    let why = p.grit(&["why", &old]);
    assert!(
        String::from_utf8_lossy(&why.stdout).contains("not live, fact)\n  replaced: "),
        "{}",
        describe(&why)
    );
    p.run_ok(&[]);
    assert_eq!(p.contents("note_lines"), ["2\n"]);

    ingest(&["--keep-both", p.path().join("n3").to_str().unwrap()]);
    p.run_ok(&[]);
    assert_eq!(p.contents("note"), ["a\nb\n", "a\nb\nc\n"]);
    assert_eq!(p.contents("note_lines"), ["2\n", "3\n"]);

    // Files ingested in one command stay live together, replacing the earlier ones. Files are
    // named after themselves (`--name` renames a single file), so two directories hold `note`.
    for (dir, text) in [("one", "a\n"), ("three", "a\nb\nc\n")] {
        std::fs::create_dir_all(p.path().join(dir)).expect("mkdir");
        std::fs::write(p.path().join(dir).join("note"), text).expect("write");
    }
    let out = p.grit(&[
        "ingest",
        p.path().join("one/note").to_str().unwrap(),
        p.path().join("three/note").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(p.contents("note"), ["a\n", "a\nb\nc\n"]);
}

/// Copy `from` into `to` recursively (the fixture's objects).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_v1_store_is_migrated_to_the_latest_rule() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    let p = Project::new(SALES);
    std::fs::copy(fixture.join("sales.csv"), p.path().join("sales.csv")).expect("copy csv");
    copy_tree(&fixture.join("objects"), &p.db().join("objects"));
    let dump = std::fs::read_to_string(fixture.join("grit.sql")).expect("read dump");
    let conn = rusqlite::Connection::open(p.db().join("grit.sqlite")).expect("create db");
    conn.execute_batch(&dump).expect("load v1 dump");
    drop(conn);

    // Written by the old rule: both sales.csv, both notes and the report over 4 rows are live.
    assert_eq!(names(&p, "sales.csv"), 2);
    assert_eq!(names(&p, "note"), 2);
    assert_eq!(p.contents("report"), ["4 rows, total 25\n"]);

    // Any writer migrates the store; the live set then follows the new rule.
    let gc = p.grit(&["gc", "--dry-run"]);
    assert!(gc.status.success(), "{}", describe(&gc));
    let version: i64 = rusqlite::Connection::open(p.db().join("grit.sqlite"))
        .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
        .expect("user_version");
    assert_eq!(version, grit::store::schema::SCHEMA_VERSION);
    assert_eq!(
        p.contents("sales.csv"),
        [std::fs::read_to_string(fixture.join("sales.csv")).unwrap()]
    );
    assert_eq!(p.contents("row_2"), ["2,pear,2,5\n"]);
    assert_eq!(p.contents("total_2"), ["pear 10\n"]);
    assert_eq!(p.contents("note"), ["a\nb\n"], "the note ingested last");
    assert_eq!(p.contents("note_lines"), ["2\n"]);
    assert_eq!(
        names(&p, "report"),
        0,
        "its input set is no longer the live one"
    );

    // The next run redoes only the gather, and its report equals a fresh run's.
    let run = p.run_ok(&[]);
    assert_eq!(executed(&run, "split"), 0, "{run}");
    assert_eq!(executed(&run, "stats"), 0);
    assert_eq!(executed(&run, "notes"), 0);
    assert_eq!(executed(&run, "report"), 1);
    assert_eq!(p.contents("report"), ["3 rows, total 20\n"]);
}

/// An ingested file of a name a source also writes replaces the source's output, and the source
/// publishing the same bytes again does not bring it back: one `sales.csv` is live, never two
/// counted together. New content from the source is then the newest fact of the name again.
#[test]
fn an_ingested_file_and_a_source_of_the_same_name_are_never_both_live() {
    let p = sales_project(SALES_CSV);
    p.run_ok(&[]);
    assert_eq!(p.contents("report"), ["3 rows, total 15\n"]);

    let newer = p.path().join("newer");
    std::fs::create_dir(&newer).expect("mkdir");
    std::fs::write(newer.join("sales.csv"), "id,item,qty,price\n9,fig,100,1\n").expect("write");
    let out = p.grit(&["ingest", newer.join("sales.csv").to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let run = p.run_ok(&[]);
    assert_eq!(names(&p, "sales.csv"), 1, "{run}");
    assert_eq!(p.contents("report"), ["1 rows, total 100\n"]);
    let again = p.run_ok(&[]);
    assert_eq!(names(&p, "sales.csv"), 1, "{again}");
    assert_eq!(p.contents("report"), ["1 rows, total 100\n"]);

    // The source's file changes: its new content replaces the ingested one.
    std::fs::write(
        p.path().join("sales.csv"),
        "id,item,qty,price\n1,apple,3,2\n",
    )
    .expect("write");
    p.run_ok(&[]);
    assert_eq!(names(&p, "sales.csv"), 1);
    assert_eq!(p.contents("report"), ["1 rows, total 6\n"]);
}
