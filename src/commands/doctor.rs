//! `grit doctor`: what this machine offers the sandbox and the output capture, and with `--db`
//! whether a store is open to users who should not read it (with the commands that close it).

use std::path::Path;

use anyhow::Context;

use super::exit::Outcome;
use crate::report::stdout;
use crate::sandbox;
use crate::store::access;

pub fn doctor(json: bool, db: Option<&Path>) -> anyhow::Result<Outcome> {
    let probe = sandbox::probe();
    let audit = db
        .map(|db| access::audit(db).with_context(|| format!("checking the store {}", db.display())))
        .transpose()?;
    if json {
        let mut value = serde_json::to_value(&probe).context("encoding the report")?;
        if let (Some(audit), Some(db)) = (&audit, db) {
            value["store"] = serde_json::json!({
                "path": db,
                "open_to_others": audit.open_count,
                "examples": audit.open.iter().map(|f| serde_json::json!({
                    "path": f.path,
                    "mode": format!("{:04o}", f.mode),
                })).collect::<Vec<_>>(),
                "fix": audit.fix,
                "share_with_a_group": audit.share,
            });
        }
        stdout::println(&value.to_string())?;
    } else {
        stdout::print(&probe.render_table())?;
        if let (Some(audit), Some(db)) = (&audit, db) {
            stdout::print(&render_audit(db, audit))?;
        }
    }
    Ok(Outcome::Success)
}

fn render_audit(db: &Path, audit: &access::Audit) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if audit.open_count == 0 {
        let _ = writeln!(
            out,
            "store {}: ok, nothing is open to other users",
            db.display()
        );
        return out;
    }
    let _ = writeln!(
        out,
        "store {}: {} path(s) can be reached by users other than the owner{}:",
        db.display(),
        audit.open_count,
        match access::Sharing::of(db) {
            Ok(access::Sharing::Group) => " and the store's group",
            _ => "",
        }
    );
    for f in &audit.open {
        let _ = writeln!(out, "  {:04o}  {}", f.mode, f.path.display());
    }
    if audit.open_count > audit.open.len() as u64 {
        let _ = writeln!(
            out,
            "  … and {} more",
            audit.open_count - audit.open.len() as u64
        );
    }
    let _ = writeln!(
        out,
        "grit does not change an existing store's permissions; to close it (while no grit runs):"
    );
    for cmd in &audit.fix {
        let _ = writeln!(out, "  {cmd}");
    }
    if !audit.share.is_empty() {
        let _ = writeln!(out, "or, to let the group GROUP read it instead:");
        for cmd in &audit.share {
            let _ = writeln!(out, "  {cmd}");
        }
    }
    out
}
