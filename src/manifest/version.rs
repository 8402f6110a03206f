//! Step versions: a canonical JSON encoding of everything that can change a step's results,
//! and its SHA-256; that includes the values of the run parameters the step lists (so a value is
//! part of the identity of the step's tasks). `name`, `parallel`, `timeout` and `retries` are deliberately left out
//! (DESIGN §1 "step version"): they change how a step is scheduled, not what it produces.
//! A source's `keep` is left out too: it decides which of the source's outputs are live, not what
//! its script computes. Were it hashed, switching `keep` would re-run a `once` source for nothing,
//! and its outputs would be the same bytes; instead `store::facts` re-applies the rule to the
//! outputs already stored when it changes. A gather's `gather_partial` is left out for the same
//! reason: it decides whether the step runs after an upstream failure, not what it computes.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Policy, SandboxMode, Step};

/// Bumped only if the encoding itself must change (that would re-version every step).
const FORMAT: u32 = 1;

// Fields are declared in alphabetical order: serde writes struct fields in declaration order,
// so the JSON keys come out sorted without relying on serde_json's map ordering features.
#[derive(Serialize)]
struct Canonical<'a> {
    env: &'a BTreeMap<String, String>,
    /// Content hashes of the step's `files`; left out when there are none, so that steps
    /// without `files` keep the versions they had before the key existed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    files: &'a BTreeMap<String, String>,
    format: u32,
    gather: bool,
    /// The image's digest; left out without one, so other steps keep their versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    inputs: Vec<&'a str>,
    once: bool,
    /// The run parameters the step lists, with their values in this run; left out when it lists
    /// none, so that steps without `params` keep the versions they had before the key existed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<&'a str, Option<&'a str>>,
    policy: CanonicalPolicy,
    script: &'a str,
    shell: &'a [String],
}

#[derive(Serialize)]
struct CanonicalPolicy {
    cpu_ms: Option<u64>,
    max_output: Option<u64>,
    memory: Option<u64>,
    network: bool,
    open_files: Option<u64>,
    processes: Option<u64>,
    read_only: Vec<String>,
    read_write: Vec<String>,
    sandbox: &'static str,
}

fn sorted_paths(paths: &[std::path::PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn canonical_policy(p: &Policy) -> CanonicalPolicy {
    CanonicalPolicy {
        cpu_ms: p
            .cpu
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        max_output: p.max_output,
        memory: p.memory,
        network: p.network,
        open_files: p.open_files,
        processes: p.processes,
        read_only: sorted_paths(&p.read_only),
        read_write: sorted_paths(&p.read_write),
        sandbox: match p.sandbox {
            SandboxMode::Strict => "strict",
            SandboxMode::Off => "off",
        },
    }
}

/// The canonical JSON of a step's result-affecting definition (compact, sorted keys).
pub(crate) fn canonical_definition(step: &Step) -> String {
    let mut inputs: Vec<&str> = step.inputs.iter().map(String::as_str).collect();
    inputs.sort_unstable();
    let c = Canonical {
        env: &step.env,
        files: &step.file_hashes,
        format: FORMAT,
        gather: step.gather,
        image: step.image.as_ref().map(|i| i.digest.as_str()),
        inputs,
        once: step.once,
        params: step.canonical_params(),
        policy: canonical_policy(&step.policy),
        script: &step.script,
        shell: &step.shell,
    };
    // Serialising plain strings, integers and bools into a String cannot fail; fall back to
    // the Debug form (still deterministic) rather than panic if serde_json ever disagrees.
    serde_json::to_string(&c).unwrap_or_else(|e| format!("unencodable step: {e}"))
}

/// Lowercase hex SHA-256 of [`canonical_definition`].
pub(crate) fn version_hash(step: &Step) -> String {
    hex::encode(Sha256::digest(canonical_definition(step).as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// A named edit to a step.
    type Change = Box<dyn Fn(&mut Step)>;

    fn base() -> Step {
        Step {
            name: "s".into(),
            script: "echo hi > $OUTPUT_DIR/x".into(),
            inputs: vec!["b".into(), "a*".into()],
            ..Step::default()
        }
    }

    #[test]
    fn canonical_json_is_sorted_and_stable() {
        let s = base();
        let json = canonical_definition(&s);
        assert!(
            json.starts_with("{\"env\":{},\"format\":1,\"gather\":false,\"inputs\":[\"a*\",\"b\"]")
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["policy"]["sandbox"], "strict");
        assert_eq!(
            v["shell"],
            serde_json::json!(crate::manifest::default_shell())
        );
        assert_eq!(version_hash(&s).len(), 64);
        assert!(
            version_hash(&s)
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Input order does not matter; reverting a change returns the old hash.
        let mut t = base();
        t.inputs.reverse();
        assert_eq!(version_hash(&s), version_hash(&t));
        t.script.push('!');
        assert_ne!(version_hash(&s), version_hash(&t));
        t.script.pop();
        assert_eq!(version_hash(&s), version_hash(&t));
    }

    #[test]
    fn every_counted_field_changes_the_hash() {
        let h = version_hash(&base());
        let changes: Vec<(&str, Change)> = vec![
            ("script", Box::new(|s| s.script = "other".into())),
            ("inputs", Box::new(|s| s.inputs.push("c".into()))),
            (
                "shell",
                Box::new(|s| s.shell = vec!["bash".into(), "-c".into()]),
            ),
            (
                "env",
                Box::new(|s| {
                    s.env.insert("K".into(), "v".into());
                }),
            ),
            ("once", Box::new(|s| s.once = true)),
            ("gather", Box::new(|s| s.gather = true)),
            (
                "params",
                Box::new(|s| {
                    s.params.push("region".into());
                    s.param_values.insert("region".into(), "eu".into());
                }),
            ),
            ("sandbox", Box::new(|s| s.policy.sandbox = SandboxMode::Off)),
            ("network", Box::new(|s| s.policy.network = true)),
            (
                "read_only",
                Box::new(|s| s.policy.read_only.push(PathBuf::from("/srv"))),
            ),
            (
                "read_write",
                Box::new(|s| s.policy.read_write.push(PathBuf::from("/srv"))),
            ),
            ("memory", Box::new(|s| s.policy.memory = Some(1 << 20))),
            ("processes", Box::new(|s| s.policy.processes = Some(10))),
            ("open_files", Box::new(|s| s.policy.open_files = Some(64))),
            (
                "cpu",
                Box::new(|s| s.policy.cpu = Some(Duration::from_secs(5))),
            ),
            (
                "max_output",
                Box::new(|s| s.policy.max_output = Some(1 << 30)),
            ),
        ];
        for (what, change) in changes {
            let mut s = base();
            change(&mut s);
            assert_ne!(
                version_hash(&s),
                h,
                "changing {what} must change the version"
            );
        }
    }

    #[test]
    fn scheduling_fields_do_not_change_the_hash() {
        let h = version_hash(&base());
        let changes: Vec<(&str, Change)> = vec![
            ("name", Box::new(|s| s.name = "renamed".into())),
            ("parallel", Box::new(|s| s.parallel = Some(3))),
            (
                "timeout",
                Box::new(|s| s.timeout = Some(Duration::from_secs(9))),
            ),
            ("retries", Box::new(|s| s.retries = 4)),
            ("line", Box::new(|s| s.line = 99)),
        ];
        for (what, change) in changes {
            let mut s = base();
            change(&mut s);
            assert_eq!(
                version_hash(&s),
                h,
                "changing {what} must not change the version"
            );
        }
    }
}
