//! Drives the real binary with random manifests: `grit validate -m FILE` must never panic,
//! must exit 0 (valid) or 2 (invalid), and an invalid manifest's first stderr line must be a
//! `FILE:LINE:COL: error:` diagnostic pointing inside the file. The in-process parser gets
//! thousands more cases in src/manifest/prop_tests.rs; this checks the CLI path end to end.

use assert_cmd::Command;
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "[[step]]\n",
    "[pipeline]\n",
    "[step]\n",
    "name = \"a\"\n",
    "name = \"b\"\n",
    "script = \"echo x > $OUTPUT_DIR/a\"\n",
    "script = \"\"\n",
    "inputs = [\"a\"]\n",
    "inputs = [\"item_*\"]\n",
    "inputs = [\"a[\"]\n",
    "input = \"a\"\n",
    "input = \"\"\n",
    "parallel = 2\n",
    "parallel = \"2\"\n",
    "timeout = \"1h30m\"\n",
    "timeout = \"x\"\n",
    "env = { A = \"1\" }\n",
    "env = { A = 1 }\n",
    "once = true\n",
    "gather = true\n",
    "shell = []\n",
    "memory = \"2G\"\n",
    "memory = \"2Q\"\n",
    "read_only = [\"rel\"]\n",
    "sandbox = \"off\"\n",
    "scrpt = \"x\"\n",
    "\n",
    "=",
    "\"",
    "[",
    "é",
    "# c\n",
];

fn check(text: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(dir.path().join("m.toml"), text)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let out = Command::cargo_bin("grit")
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .current_dir(dir.path())
        .args(["validate", "-m", "m.toml"])
        .output()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(!stderr.contains("panicked"), "{}", stderr);
    match out.status.code() {
        Some(0) => {
            prop_assert!(String::from_utf8_lossy(&out.stdout).contains("STEP"));
        }
        Some(2) => {
            let first = stderr.lines().next().unwrap_or("");
            let rest = first.strip_prefix("m.toml:").unwrap_or("");
            let mut parts = rest.splitn(3, ':');
            let line: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let col: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            prop_assert!(
                parts.next().is_some_and(|m| m.starts_with(" error: ")),
                "{}",
                first
            );
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(line >= 1 && line <= lines.len(), "{}", first);
            prop_assert!(
                col >= 1 && col <= lines[line - 1].chars().count() + 1,
                "{}",
                first
            );
        }
        other => prop_assert!(false, "exit {:?}: {}", other, stderr),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn validate_never_panics_on_near_manifests(
        parts in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..20)
    ) {
        check(&parts.concat())?;
    }

    #[test]
    fn validate_never_panics_on_arbitrary_text(text in "\\PC{0,120}") {
        check(&text)?;
    }
}
