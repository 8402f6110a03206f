//! `grit why HASH`: a resource's provenance — the task that made it, that task's step version and
//! input, and so on recursively back to the sources and ingested files.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use rusqlite::Connection;

use super::exit::Outcome;
use crate::report::escape::printable;
use crate::report::stdout;
use crate::report::summary::human_bytes;
use crate::store::provenance::{self, Producer, ResourceFacts};
use crate::store::{self, StoreError, queries};

/// Members of a gather task's input set followed further; the rest are counted.
const GATHER_FOLLOWED: usize = 5;
/// Provenance deeper than this is cut (a pipeline is rarely longer; this bounds the output).
const MAX_DEPTH: usize = 64;

/// One resource in the provenance tree.
#[derive(Debug, serde::Serialize)]
pub struct Node {
    #[serde(flatten)]
    pub resource: ResourceFacts,
    pub made_by: Vec<Made>,
    /// Already shown higher up (its provenance is not repeated).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shown_above: bool,
}

/// One task that made a resource, with its inputs.
#[derive(Debug, serde::Serialize)]
pub struct Made {
    #[serde(flatten)]
    pub task: Producer,
    pub inputs: Vec<Node>,
    /// How many inputs the task had (a gather task's set can be larger than `inputs`).
    pub inputs_total: u64,
}

/// The provenance trees of the resources with content `hash` (a unique prefix of 8+ hex
/// characters will do): what `grit why --json` prints and `GET /resources/{hash}` answers.
pub fn provenance_trees(conn: &Connection, hash: &str) -> Result<Vec<Node>, StoreError> {
    let full = queries::resolve_hash(conn, hash)?;
    let roots = provenance::resources_with_hash(conn, &full)?;
    if roots.is_empty() {
        return Err(StoreError::NotFound(format!(
            "{full} is a task's log, not a resource\n  help: `grit log TASK` shows logs"
        )));
    }
    let mut seen = HashSet::new();
    let mut trees = Vec::with_capacity(roots.len());
    for root in roots {
        trees.push(build(conn, root, 0, &mut seen)?);
    }
    Ok(trees)
}

pub fn why(db: &Path, hash: &str, json: bool) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    let trees = provenance_trees(&conn, hash)?;
    if json {
        stdout::println(&serde_json::json!({ "resources": trees }).to_string())?;
    } else {
        let mut out = String::new();
        for tree in &trees {
            render(&mut out, tree, 0);
        }
        stdout::print(&out)?;
    }
    Ok(Outcome::Success)
}

fn build(
    conn: &Connection,
    resource: ResourceFacts,
    depth: usize,
    seen: &mut HashSet<i64>,
) -> Result<Node, StoreError> {
    if !seen.insert(resource.id) || depth >= MAX_DEPTH {
        return Ok(Node {
            resource,
            made_by: Vec::new(),
            shown_above: true,
        });
    }
    let mut made_by = Vec::new();
    for task in provenance::producers(conn, resource.id)? {
        let (members, total) = match (task.input_id, task.gathered) {
            (Some(id), _) => (vec![provenance::resource(conn, id)?], 1),
            (None, 0) => (Vec::new(), 0),
            (None, n) => (provenance::gathered(conn, task.task, GATHER_FOLLOWED)?, n),
        };
        let mut inputs = Vec::with_capacity(members.len());
        for member in members {
            inputs.push(build(conn, member, depth + 1, seen)?);
        }
        made_by.push(Made {
            task,
            inputs,
            inputs_total: total,
        });
    }
    Ok(Node {
        resource,
        made_by,
        shown_above: false,
    })
}

fn render(out: &mut String, node: &Node, depth: usize) {
    let pad = "  ".repeat(depth * 2);
    let r = &node.resource;
    let mut flags = vec![human_bytes(r.size)];
    flags.push(if r.live { "live" } else { "not live" }.into());
    if r.fact {
        flags.push("fact".into());
    }
    let _ = writeln!(
        out,
        "{pad}{} {} ({})",
        printable(&r.name),
        &r.hash[..16.min(r.hash.len())],
        flags.join(", ")
    );
    if node.shown_above {
        let _ = writeln!(out, "{pad}  (provenance shown above)");
        return;
    }
    if r.fact && !r.live {
        let _ = writeln!(
            out,
            "{pad}  replaced: its source published newer outputs (see its `keep`), or a newer `grit ingest` took its name; `grit gc` removes it"
        );
    }
    if node.made_by.is_empty() {
        let origin = if r.fact {
            "ingested with `grit ingest` (a fact: a source of everything derived from it)"
        } else {
            "its producing task is no longer in the store"
        };
        let _ = writeln!(out, "{pad}  {origin}");
    }
    for made in &node.made_by {
        let t = &made.task;
        let mut version = if t.current {
            format!("version {}", t.version)
        } else {
            format!("version {}, no longer current", t.version)
        };
        for (name, value) in &t.params {
            version.push_str(&format!(", {name}={value:?}"));
        }
        let _ = writeln!(
            out,
            "{pad}  made by task {} of step {} ({}, {version}){}{}",
            t.task,
            t.step,
            t.kind,
            t.run.map(|r| format!(" in run {r}")).unwrap_or_default(),
            t.finished_at
                .as_deref()
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        );
        match (t.kind.as_str(), made.inputs_total) {
            ("source", _) => {
                let _ = writeln!(out, "{pad}  a source step: its outputs are facts");
            }
            (_, 0) => {}
            ("gather", total) => {
                let shown = made.inputs.len() as u64;
                let _ = writeln!(
                    out,
                    "{pad}  from the set of {total} input(s){}:",
                    if shown < total {
                        format!(", the first {shown} by name")
                    } else {
                        String::new()
                    }
                );
            }
            _ => {
                let _ = writeln!(out, "{pad}  from input:");
            }
        }
        for input in &made.inputs {
            render(out, input, depth + 1);
        }
        if (made.inputs.len() as u64) < made.inputs_total {
            let _ = writeln!(
                out,
                "{pad}    … and {} more",
                made.inputs_total - made.inputs.len() as u64
            );
        }
    }
}
