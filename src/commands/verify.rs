//! `grit verify [--repair] [--json]`: check the whole store and, with `--repair`, fix what can be
//! fixed: permissions, damaged objects moved to `<db>/quarantine/`, lost derived objects re-created
//! by re-running the tasks that produced them. Lost source or ingested data is listed with what
//! depends on it.

use crate::report::stdout::outln;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exit::{Outcome, STORE_DAMAGED};
use crate::report::escape::printable;
use crate::report::summary::human_bytes;
use crate::store::verify::{self, Report};
use crate::store::{self, StoreError, StorePaths};

pub fn verify(db: &Path, repair: bool, json: bool, no_sandbox: bool) -> anyhow::Result<Outcome> {
    if repair {
        return super::repair::repair(db, json, no_sandbox);
    }
    let started = Instant::now();
    let report = check_store(db, !json)?;
    if json {
        outln!(
            "{}",
            serde_json::json!({ "clean": report.clean(), "report": report })
        );
    } else {
        print_report(&report, db, started.elapsed().as_secs_f64());
    }
    Ok(outcome(&report))
}

pub fn outcome(report: &Report) -> Outcome {
    if report.clean() {
        Outcome::Success
    } else {
        Outcome::Code(STORE_DAMAGED)
    }
}

/// Check the store at `db`, with a progress bar on a terminal. A database that cannot be opened
/// at all is a finding (exit 4), not an error, as long as the directory is a grit store.
pub fn check_store(db: &Path, show_progress: bool) -> anyhow::Result<Report> {
    let paths = StorePaths::new(db);
    let conn = match store::open_read(db) {
        Ok((_, conn)) => conn,
        // A store (it has objects/) whose database is unreadable is damaged, not foreign.
        Err(
            e @ (StoreError::Sqlite(_)
            | StoreError::NotAStore { .. }
            | StoreError::DatabaseDamaged { .. }),
        ) if paths.objects.is_dir() && paths.exists() => {
            return Ok(Report {
                database: vec![format!(
                    "the database {} cannot be read: {e}",
                    paths.database.display()
                )],
                ..Report::default()
            });
        }
        Err(e) => return Err(e.into()),
    };
    let bar = if show_progress && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "verifying [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = verify::check(&paths, &conn, &|total| bar.set_length(total), &|bytes| {
        bar.inc(bytes)
    });
    bar.finish_and_clear();
    Ok(report)
}

/// The human report: a summary line, then one list per kind of problem.
pub fn print_report(report: &Report, db: &Path, seconds: f64) {
    let problems = report.problems();
    outln!(
        "checked the database and {} object{} ({}) in {seconds:.2}s: {}",
        report.objects_checked,
        if report.objects_checked == 1 { "" } else { "s" },
        human_bytes(report.bytes_checked),
        if problems == 0 {
            "clean".to_string()
        } else {
            format!("{problems} problem{}", if problems == 1 { "" } else { "s" })
        }
    );
    let section = |title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            outln!("{title} ({}):", lines.len());
            for line in lines {
                outln!("  {line}");
            }
        }
    };
    section("database", report.database.clone());
    section("foreign keys", report.foreign_keys.clone());
    let objects = |list: &[verify::BadObject]| {
        list.iter()
            .map(|b| {
                format!(
                    "{} {}: {} ({})",
                    printable(&b.what),
                    b.hash,
                    b.problem,
                    b.path.display()
                )
            })
            .collect()
    };
    section("missing objects", objects(&report.missing));
    section("corrupt objects", objects(&report.corrupt));
    section(
        "permissions",
        report
            .modes
            .iter()
            .map(|m| format!("{} {}: {}", m.path.display(), m.mode, m.problem))
            .collect(),
    );
    section(
        "unreferenced objects (not damage: no record needs them; `grit gc` removes them)",
        report
            .unreferenced
            .iter()
            .map(|u| format!("{} ({})", u.path.display(), human_bytes(u.size)))
            .collect(),
    );
    if problems > 0 {
        outln!(
            "help: `grit verify --repair --db {}` fixes permissions, moves damaged objects to quarantine/ and re-creates derived ones; restore source data from a backup",
            db.display()
        );
    }
}
