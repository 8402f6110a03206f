//! Run parameters in the store (issue 12): each run's effective values (`runs.params`, a JSON
//! object), and what a step version's recorded parameter values say about why a step changed.
//!
//! The values themselves are part of the step version (`manifest::params`), so they need no
//! table of their own: a version's `definition` carries the values it was made with.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;
use crate::manifest::Step;

/// The JSON stored in `runs.params`.
pub fn encode(values: &BTreeMap<String, String>) -> String {
    // A map of strings always serialises; an empty object is the safe fallback all the same.
    serde_json::to_string(values).unwrap_or_else(|_| "{}".into())
}

fn decode(json: Option<String>) -> Option<BTreeMap<String, String>> {
    json.and_then(|j| serde_json::from_str(&j).ok())
}

/// The parameter values of the newest run (`None`: no run yet, or one recorded before
/// parameters existed).
pub fn last_run(conn: &Connection) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let json: Option<Option<String>> = conn
        .query_row(
            "SELECT params FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(decode(json.flatten()))
}

/// The parameter values of run `run`.
pub fn of_run(conn: &Connection, run: i64) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let json: Option<Option<String>> = conn
        .query_row("SELECT params FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()?;
    Ok(decode(json.flatten()))
}

/// The parameter values recorded in a step version's canonical definition.
pub fn of_definition(definition: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<serde_json::Value>(definition)
        .ok()
        .and_then(|mut v| v.as_object_mut()?.remove("params"))
        .and_then(|p| serde_json::from_value::<BTreeMap<String, Option<String>>>(p).ok())
        .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
        .unwrap_or_default()
}

/// One parameter whose value differs between a stored step version and the step as bound now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParamChange {
    pub name: String,
    /// `None`: the stored version did not read it.
    pub from: Option<String>,
    /// `None`: the step no longer reads it.
    pub to: Option<String>,
}

impl std::fmt::Display for ParamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "(not read)".into(),
        };
        write!(
            f,
            "{}: {} → {}",
            self.name,
            show(&self.from),
            show(&self.to)
        )
    }
}

/// How `step` (bound) differs from stored version `version_id` in its parameters: the changed
/// values, and whether they are the only difference.
pub fn changes(
    conn: &Connection,
    version_id: i64,
    step: &Step,
) -> Result<(Vec<ParamChange>, bool), StoreError> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT definition FROM step_versions WHERE id = ?1",
            [version_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(stored) = stored else {
        return Ok((Vec::new(), false));
    };
    Ok(compare(&stored, &step.canonical_definition()))
}

/// Compare two canonical definitions (JSON objects): the changed `params` values, and whether
/// they are the only change (same parameters read, everything else equal).
fn compare(old: &str, new: &str) -> (Vec<ParamChange>, bool) {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let (Some(mut old), Some(mut new)) = (parse(old), parse(new)) else {
        return (Vec::new(), false);
    };
    let take = |v: &mut serde_json::Value| -> BTreeMap<String, Option<String>> {
        v.as_object_mut()
            .and_then(|o| o.remove("params"))
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default()
    };
    let (old_params, new_params) = (take(&mut old), take(&mut new));
    let mut names: Vec<&String> = old_params.keys().chain(new_params.keys()).collect();
    names.sort();
    names.dedup();
    let changes: Vec<ParamChange> = names
        .into_iter()
        .filter_map(|name| {
            let (from, to) = (
                old_params.get(name).cloned().flatten(),
                new_params.get(name).cloned().flatten(),
            );
            (from != to).then(|| ParamChange {
                name: name.clone(),
                from,
                to,
            })
        })
        .collect();
    // Only values changed: the step reads the same parameters and is otherwise the same.
    let same_names = old_params.keys().eq(new_params.keys());
    let only_params = !changes.is_empty() && same_names && old == new;
    (changes, only_params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_tells_parameter_changes_from_other_changes() {
        let old = r#"{"env":{},"params":{"region":"eu","year":"2024"},"script":"a"}"#;
        let new = r#"{"env":{},"params":{"region":"us","year":"2024"},"script":"a"}"#;
        let (changes, only) = compare(old, new);
        assert!(only);
        assert_eq!(
            changes,
            [ParamChange {
                name: "region".into(),
                from: Some("eu".into()),
                to: Some("us".into())
            }]
        );
        assert_eq!(changes[0].to_string(), "region: \"eu\" → \"us\"");
        let edited = r#"{"env":{},"params":{"region":"us","year":"2024"},"script":"b"}"#;
        assert!(!compare(old, edited).1, "the script changed too");
        let (changes, only) = compare(r#"{"env":{},"script":"a"}"#, new);
        assert!(!only, "reading a parameter is a change of the step itself");
        assert_eq!(changes.len(), 2);
        assert_eq!(compare(old, old), (Vec::new(), false));
    }

    #[test]
    fn values_round_trip_through_json() {
        let values: BTreeMap<String, String> = [("region".to_string(), "e\"u".to_string())].into();
        assert_eq!(decode(Some(encode(&values))), Some(values));
        assert_eq!(decode(None), None);
    }
}
