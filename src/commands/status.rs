//! `grit status`: each current step's version, task counts and live outputs.

use std::path::Path;

use super::exit::Outcome;
use crate::store::{self, queries};

pub fn status(db: &Path, json: bool) -> anyhow::Result<Outcome> {
    let (_, conn) = store::open_read(db)?;
    let steps = queries::status(&conn)?;
    if json {
        println!("{}", serde_json::json!({ "steps": steps }));
        return Ok(Outcome::Success);
    }
    if steps.is_empty() {
        println!(
            "no steps yet: run `grit run -m MANIFEST --db {}` first",
            db.display()
        );
        return Ok(Outcome::Success);
    }
    let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<width$}  {:<6}  {:<12}  {:>7}  {:>7}  {:>9}  {:>6}  {:>12}",
        "STEP", "KIND", "VERSION", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "LIVE OUTPUTS"
    );
    for s in &steps {
        println!(
            "{:<width$}  {:<6}  {:<12}  {:>7}  {:>7}  {:>9}  {:>6}  {:>12}",
            s.name, s.kind, s.version, s.pending, s.running, s.succeeded, s.failed, s.live_outputs
        );
    }
    Ok(Outcome::Success)
}
