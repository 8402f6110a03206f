//! `grit trigger`: queue a run on a `grit serve` server; with `--wait`, follow it to its end and
//! exit like `grit run` (0 succeeded, 1 failed or cancelled).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::exit::{Outcome, UsageError};
use crate::cli::TriggerArgs;
use crate::report::stdout;
use crate::serve::client::Client;

/// How often `--wait` asks the server how the run is doing.
const POLL: Duration = Duration::from_millis(250);

pub fn trigger(args: TriggerArgs) -> anyhow::Result<Outcome> {
    let mut params = BTreeMap::new();
    for param in &args.params {
        let (name, value) = param.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "--param {param}: write NAME=VALUE (e.g. --param region=us)"
            ))
        })?;
        params.insert(name.to_string(), value.to_string());
    }
    let client = Client::new(&args.server.server, args.server.token_file.as_deref())?;
    let path = format!(
        "/pipelines/{}/runs",
        crate::serve::client::query_value(&args.pipeline)
    );
    let queued = client
        .post(&path, &json!({ "params": params }))
        .map_err(|e| e.into_anyhow())?;
    let run_id = queued["run_id"].as_str().unwrap_or_default().to_string();
    let position = queued["position"].as_u64().unwrap_or(0);
    if !args.wait {
        if args.json {
            stdout::println(&queued.to_string())?;
        } else {
            stdout::println(&run_id)?;
            eprintln!(
                "queued run {run_id} on {} (position {position})",
                client.server()
            );
        }
        return Ok(Outcome::Success);
    }
    eprintln!(
        "queued run {run_id} on {} (position {position})",
        client.server()
    );
    let run = follow(&client, &run_id)?;
    if args.json {
        stdout::println(&run.to_string())?;
    }
    Ok(match run["status"].as_str() {
        Some("succeeded") => Outcome::Success,
        _ => Outcome::TaskFailed,
    })
}

/// Poll the run until it ends, printing each change of state and of its steps' counts.
fn follow(client: &Client, run_id: &str) -> anyhow::Result<Value> {
    let mut last_line = String::new();
    loop {
        let run = client
            .get(&format!(
                "/runs/{}",
                crate::serve::client::query_value(run_id)
            ))
            .map_err(|e| e.into_anyhow())?;
        let status = run["status"].as_str().unwrap_or("unknown");
        let line = progress_line(&run);
        if line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        if !matches!(status, "queued" | "running") {
            if let Some(reason) = run["reason"].as_str() {
                eprintln!("  {reason}");
            }
            return Ok(run);
        }
        std::thread::sleep(POLL);
    }
}

/// `run etl.3 running: split 1 ok · shout 3 ok, 1 failed, 2 running, 4 pending`.
fn progress_line(run: &Value) -> String {
    let status = run["status"].as_str().unwrap_or("unknown");
    let mut line = format!("run {} {status}", run["run_id"].as_str().unwrap_or("?"));
    if let Some(position) = run["position"].as_u64() {
        line.push_str(&format!(" (position {position})"));
    }
    if run["resumed"].as_bool() == Some(true) {
        line.push_str(" (resumed)");
    }
    let steps: Vec<String> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let mut parts = vec![format!("{} ok", s["succeeded"].as_u64().unwrap_or(0))];
            for key in ["failed", "running", "pending"] {
                let n = s[key].as_u64().unwrap_or(0);
                if n > 0 {
                    parts.push(format!("{n} {key}"));
                }
            }
            format!("{} {}", s["name"].as_str().unwrap_or("?"), parts.join(", "))
        })
        .collect();
    let finished = !matches!(status, "queued" | "running");
    let executed: u64 = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["succeeded"].as_u64().unwrap_or(0) + s["failed"].as_u64().unwrap_or(0))
        .sum();
    if finished && executed == 0 && status == "succeeded" {
        line.push_str(": nothing to do, every task is up to date");
    } else if !steps.is_empty() {
        line.push_str(": ");
        line.push_str(&steps.join(" · "));
    }
    line
}
