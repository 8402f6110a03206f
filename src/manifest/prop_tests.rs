//! Property tests: the parser never panics, its errors are always located at a real
//! `LINE:COL`, and [`glob_match`] agrees with SQLite's GLOB on arbitrary patterns.

use std::path::Path;

use proptest::prelude::*;

use super::error::ManifestError;
use super::glob::tests::sqlite_glob;
use super::{Manifest, glob_match, parse};

/// Pieces of valid and nearly valid manifests, glued together at random.
const FRAGMENTS: &[&str] = &[
    "[[step]]\n",
    "[pipeline]\n",
    "[step]\n",
    "[[pipeline]]\n",
    "[step.env]\n",
    "name = \"a\"\n",
    "name = \"b\"\n",
    "name = \"a b\"\n",
    "name = 3\n",
    "script = \"echo x > $OUTPUT_DIR/a\"\n",
    "script = '''\necho > $OUTPUT_DIR/item_$i\n'''\n",
    "script = \"\"\n",
    "script = \"  \"\n",
    "inputs = [\"a\"]\n",
    "inputs = [\"item_*\", \"b\"]\n",
    "inputs = \"a\"\n",
    "inputs = [\"a[\"]\n",
    "input = \"a\"\n",
    "input = \"\"\n",
    "parallel = 4\n",
    "parallel = 0\n",
    "parallel = \"4\"\n",
    "parallel = -1\n",
    "timeout = \"30s\"\n",
    "timeout = \"1h30m\"\n",
    "timeout = \"soon\"\n",
    "timeout = 5\n",
    "retries = 2\n",
    "retries = -1\n",
    "env = { A = \"1\" }\n",
    "env = { A = 1 }\n",
    "B = \"x\"\n",
    "once = true\n",
    "gather = true\n",
    "shell = [\"bash\", \"-ec\"]\n",
    "shell = []\n",
    "shell = [\"\"]\n",
    "sandbox = \"off\"\n",
    "sandbox = \"loose\"\n",
    "network = true\n",
    "read_only = [\"/srv\"]\n",
    "read_only = [\"rel\"]\n",
    "memory = \"512M\"\n",
    "memory = \"lots\"\n",
    "memory = 0\n",
    "processes = 64\n",
    "open_files = 1024\n",
    "cpu = \"10m\"\n",
    "max_output = \"1G\"\n",
    "scrpt = \"x\"\n",
    "[[csv]]\n",
    "# comment\n",
    "\n",
    "=",
    "\"",
    "'''",
    "[",
    "]",
    "{",
    "}",
    "ç",
    "\t",
    "\r\n",
    "name = \"é\"\n",
    "step = [{ name = \"c\", script = \"true\" }]\n",
    "x.y.z = 1\n",
    "name = \"a\"\nname = \"b\"\n",
];

/// Every error except I/O must carry `FILE:LINE:COL:` with a line inside the text and a
/// column inside that line (or just past its end).
fn assert_located(text: &str, result: Result<super::Loaded, ManifestError>) {
    match result {
        Ok(loaded) => {
            let Manifest { steps, .. } = &loaded.manifest;
            assert!(!steps.is_empty());
            for w in &loaded.warnings {
                check_position(text, w.line, w.column);
            }
            let _ = loaded.manifest.render_graph();
            for s in steps {
                assert_eq!(s.version_hash().len(), 64);
            }
        }
        Err(e) => {
            let (line, column) = e.position().expect("parse errors are located");
            check_position(text, line, column);
            let shown = e.to_string();
            let prefix = format!("m.toml:{line}:{column}: error: ");
            assert!(shown.starts_with(&prefix), "{shown}");
        }
    }
}

fn check_position(text: &str, line: usize, column: usize) {
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        line >= 1 && line <= lines.len(),
        "line {line} outside 1..={}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        column >= 1 && column <= width + 1,
        "column {column} outside line of {width}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        assert_located(&text, parse(&text, Path::new("m.toml")));
    }

    #[test]
    fn near_manifests_never_panic(parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..30)) {
        let text: String = parts.concat();
        assert_located(&text, parse(&text, Path::new("m.toml")));
    }

    #[test]
    fn glob_matches_sqlite(
        pattern in "[ab*?\\[\\]^\\-é]{0,8}",
        name in "[ab\\[\\]^\\-*?é]{0,8}",
    ) {
        thread_local! {
            static CONN: rusqlite::Connection =
                rusqlite::Connection::open_in_memory().expect("sqlite");
        }
        let want = CONN.with(|c| sqlite_glob(c, &pattern, &name));
        prop_assert_eq!(glob_match(&pattern, &name), want, "pattern {:?} name {:?}", pattern, name);
    }

    #[test]
    fn glob_matches_sqlite_on_any_text(pattern in "\\PC{0,6}", name in "\\PC{0,6}") {
        thread_local! {
            static CONN: rusqlite::Connection =
                rusqlite::Connection::open_in_memory().expect("sqlite");
        }
        let want = CONN.with(|c| sqlite_glob(c, &pattern, &name));
        prop_assert_eq!(glob_match(&pattern, &name), want);
    }

    /// A name a script writes literally is always matched by itself as an input and flows on
    /// an edge: the write analysis and the glob agree.
    #[test]
    fn literal_writes_make_edges(name in "[a-z][a-z0-9_.-]{0,10}") {
        let text = format!(
            "[[step]]\nname = \"p\"\nscript = \"echo > $OUTPUT_DIR/{name}\"\n\
             [[step]]\nname = \"c\"\ninputs = [\"{name}\"]\nscript = \"true\"\n"
        );
        let loaded = parse(&text, Path::new("m.toml")).expect("valid");
        prop_assert!(loaded.warnings.is_empty());
        let e = loaded.manifest.edges();
        prop_assert_eq!(e.len(), 1);
        prop_assert_eq!(&e[0].via, &name);
    }
}

/// Optional keys of a valid step, one line each.
const VALID_LINES: &[&str] = &[
    "inputs = [\"item_*\", \"raw\"]",
    "parallel = 3",
    "timeout = \"2m30s\"",
    "retries = 2",
    "env = { A = \"1\", B = \"two\" }",
    "shell = [\"bash\", \"-ec\"]",
    "sandbox = \"off\"",
    "network = true",
    "read_only = [\"/srv\"]",
    "read_write = [\"/tmp/x\"]",
    "memory = \"512M\"",
    "processes = 64",
    "open_files = 1024",
    "cpu = \"10m\"",
    "max_output = \"1G\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any combination of valid keys, in any order, parses; key order and layout do not
    /// change the version hash.
    #[test]
    fn valid_steps_parse_in_any_key_order(
        picked in prop::sample::subsequence(VALID_LINES, 0..VALID_LINES.len()),
        seed in any::<u64>(),
    ) {
        let mut lines: Vec<&str> = picked.clone();
        lines.push("name = \"s\"");
        lines.push("script = \"echo > $OUTPUT_DIR/raw\"");
        let text = format!("[[step]]\n{}\n", lines.join("\n"));
        // A deterministic shuffle driven by `seed`.
        let mut shuffled = lines.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap_or(0));
        }
        let other = format!("# reordered\n\n[[step]]\n{}\n", shuffled.join("\n\n"));
        let a = parse(&text, Path::new("m.toml"));
        let b = parse(&other, Path::new("m.toml"));
        prop_assert!(a.is_ok(), "{:?}", a.err().map(|e| e.to_string()));
        prop_assert!(b.is_ok(), "{:?}", b.err().map(|e| e.to_string()));
        if let (Ok(a), Ok(b)) = (a, b) {
            prop_assert_eq!(a.manifest.steps[0].version_hash(), b.manifest.steps[0].version_hash());
            prop_assert_eq!(a.manifest.steps[0].line, 1);
            prop_assert_eq!(b.manifest.steps[0].line, 3);
        }
    }
}
