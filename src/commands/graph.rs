//! `grit graph`: the current steps and the resources that flowed between them, with counts, as
//! Graphviz dot or a Mermaid flowchart. The flows come from the store (what each step's tasks
//! actually produced and consumed), so the picture shows real data, not only the manifest's globs.

use std::fmt::Write;
use std::path::Path;

use super::exit::Outcome;
use crate::cli::GraphFormat;
use crate::manifest::glob_match;
use crate::report::stdout;
use crate::store::provenance::{self, Flow, GraphStep};
use crate::store::{self};

/// Node name of ingested files.
pub(crate) const INGESTED: &str = "ingested";

pub fn graph(db: &Path, format: GraphFormat) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    let steps = provenance::graph_steps(&conn)?;
    let flows = provenance::flows(&conn)?;
    let text = match format {
        GraphFormat::Dot => dot(&steps, &flows),
        GraphFormat::Mermaid => mermaid(&steps, &flows),
    };
    stdout::print(&text)?;
    Ok(Outcome::Success)
}

/// A node: a current step, an old step version that still feeds one, or the ingested files.
pub(crate) struct Node {
    pub name: String,
    pub label: String,
}

pub(crate) fn nodes(steps: &[GraphStep], flows: &[Flow]) -> Vec<Node> {
    let mut nodes: Vec<Node> = steps
        .iter()
        .map(|s| Node {
            name: s.name.clone(),
            label: format!(
                "{}\n{} · {} task{}{}",
                s.name,
                s.kind,
                s.tasks,
                if s.tasks == 1 { "" } else { "s" },
                if s.failed > 0 {
                    format!(", {} failed", s.failed)
                } else {
                    String::new()
                }
            ),
        })
        .collect();
    for flow in flows {
        let name = flow.from.as_deref().unwrap_or(INGESTED);
        if !nodes.iter().any(|n| n.name == name) {
            let label = if flow.from.is_none() {
                "ingested files".to_string()
            } else {
                format!("{name}\n(old step)")
            };
            nodes.push(Node {
                name: name.to_string(),
                label,
            });
        }
    }
    nodes
}

/// An edge's label: the resource name when one name flowed, else the consumer's glob that matches
/// them (or the first and last names), and the number of resources.
pub(crate) fn flow_label(flow: &Flow, steps: &[GraphStep]) -> String {
    let names = if flow.names == 1 {
        flow.first_name.clone()
    } else if let Some(pattern) = flow
        .to
        .as_deref()
        .and_then(|to| steps.iter().find(|s| s.name == to))
        .and_then(|s| {
            s.inputs.iter().find(|p| {
                crate::manifest::exclusion(p).is_none()
                    && glob_match(p, &flow.first_name)
                    && glob_match(p, &flow.last_name)
                    && p.contains('*')
            })
        })
    {
        pattern.clone()
    } else if flow.names == 2 {
        format!("{}, {}", flow.first_name, flow.last_name)
    } else {
        format!("{} … {}", flow.first_name, flow.last_name)
    };
    format!("{names} ({})", flow.resources)
}

fn index_of(nodes: &[Node], name: &str) -> usize {
    nodes.iter().position(|n| n.name == name).unwrap_or(0)
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn dot(steps: &[GraphStep], flows: &[Flow]) -> String {
    let nodes = nodes(steps, flows);
    let mut out = String::from(
        "digraph grit {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];\n",
    );
    for (i, node) in nodes.iter().enumerate() {
        let shape = if node.name == INGESTED && !steps.iter().any(|s| s.name == INGESTED) {
            ", shape=folder"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  n{i} [label=\"{}\"{shape}];",
            dot_escape(&node.label)
        );
    }
    for (k, flow) in flows.iter().enumerate() {
        let from = index_of(&nodes, flow.from.as_deref().unwrap_or(INGESTED));
        let label = dot_escape(&flow_label(flow, steps));
        match &flow.to {
            Some(to) => {
                let _ = writeln!(
                    out,
                    "  n{from} -> n{} [label=\"{label}\"];",
                    index_of(&nodes, to)
                );
            }
            None => {
                let _ = writeln!(out, "  out{k} [label=\"{label}\", shape=note];");
                let _ = writeln!(out, "  n{from} -> out{k};");
            }
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(text: &str) -> String {
    text.replace('"', "#quot;").replace('\n', "<br/>")
}

fn mermaid(steps: &[GraphStep], flows: &[Flow]) -> String {
    let nodes = nodes(steps, flows);
    let mut out = String::from("flowchart LR\n");
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid_escape(&node.label));
    }
    for (k, flow) in flows.iter().enumerate() {
        let from = index_of(&nodes, flow.from.as_deref().unwrap_or(INGESTED));
        let label = mermaid_escape(&flow_label(flow, steps));
        match &flow.to {
            Some(to) => {
                let _ = writeln!(out, "  n{from} -->|\"{label}\"| n{}", index_of(&nodes, to));
            }
            None => {
                let _ = writeln!(out, "  out{k}[/\"{label}\"/]");
                let _ = writeln!(out, "  n{from} --> out{k}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, kind: &str, inputs: &[&str], tasks: u64) -> GraphStep {
        GraphStep {
            name: name.into(),
            kind: kind.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            tasks,
            failed: 0,
        }
    }

    #[test]
    fn labels_use_the_matching_glob_for_many_names() {
        let steps = [
            step("split", "source", &[], 1),
            step("shout", "map", &["fruit_*"], 5),
        ];
        let many = Flow {
            from: Some("split".into()),
            to: Some("shout".into()),
            resources: 5,
            names: 5,
            first_name: "fruit_apple".into(),
            last_name: "fruit_elderberry".into(),
        };
        assert_eq!(flow_label(&many, &steps), "fruit_* (5)");
        let one = Flow {
            names: 1,
            resources: 3,
            first_name: "url".into(),
            last_name: "url".into(),
            ..many.clone()
        };
        assert_eq!(flow_label(&one, &steps), "url (3)");
        let leaf = Flow {
            to: None,
            names: 2,
            resources: 2,
            first_name: "count".into(),
            last_name: "report".into(),
            ..many
        };
        assert_eq!(flow_label(&leaf, &steps), "count, report (2)");
    }

    #[test]
    fn escapes_labels() {
        assert_eq!(dot_escape("a\"b\nc"), "a\\\"b\\nc");
        assert_eq!(mermaid_escape("a\"b\nc"), "a#quot;b<br/>c");
    }
}
