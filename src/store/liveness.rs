//! Liveness (DESIGN §2.3): which resources are current.
//!
//! The roots are the live facts: resources with a live claim of a source or of `grit ingest`
//! ([`super::facts`] decides which claims a newer publication supersedes). A derived resource is
//! live when a succeeded task of the *current* version of its step produced it from a live input;
//! a gather task's outputs are live when its input set is exactly the current live set matching
//! its inputs, or, while the gather is held back after an upstream failure, when it is the held
//! task ([`super::schedule::hold_gather`]).
//!
//! The `resources.live` column caches this. [`propagate`] extends it cheaply when resources become
//! live; [`recompute`] rebuilds it from the facts after anything that can shrink it: a changed
//! step version or `keep` rule, a superseded fact, a delete, a prune, or a new gather result.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use super::StoreError;

/// Upper bound on gather rounds in a full recompute; gather outputs feeding other gather steps
/// need one round per level, and a cycle through gather steps must not loop forever.
const MAX_GATHER_ROUNDS: usize = 32;

/// Create (once per connection) and empty the scratch tables of a liveness walk. Cached
/// statements: this runs on every publish.
fn temp_tables(conn: &Connection) -> Result<(), StoreError> {
    for sql in [
        "CREATE TEMP TABLE IF NOT EXISTS live_roots (id INTEGER PRIMARY KEY)",
        "CREATE TEMP TABLE IF NOT EXISTS live_reached (id INTEGER PRIMARY KEY)",
        "DELETE FROM live_roots",
        "DELETE FROM live_reached",
    ] {
        conn.prepare_cached(sql)?.execute([])?;
    }
    Ok(())
}

/// How far a liveness walk goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Through every resource (a full recompute, where `live` is stale).
    Everything,
    /// Only into resources not live yet (extending a correct `live` column).
    StopAtLive,
}

/// The walk from `live_roots` into `live_reached`: outputs of succeeded tasks of current step
/// versions whose input was reached, transitively (`UNION` ends cycles).
///
/// The unary `+` keeps SQLite from driving these joins by the low-selectivity `state`, `current`
/// and `live` columns, so every step starts from the row at hand (measured: without it, each
/// publish scanned all succeeded tasks, and 10,000 tasks took twice as long).
fn reach_sql(walk: Walk) -> String {
    let stop = match walk {
        Walk::Everything => "",
        Walk::StopAtLive => "JOIN resources r ON r.id = o.resource_id AND +r.live = 0",
    };
    format!(
        "INSERT INTO live_reached (id)
         WITH RECURSIVE reach (id) AS (
             SELECT id FROM live_roots
             UNION
             SELECT o.resource_id FROM reach
               JOIN tasks t ON t.input_resource_id = reach.id AND +t.state = 'succeeded'
               JOIN step_versions v ON v.id = t.step_version_id AND +v.current = 1
               JOIN outputs o ON o.task_id = t.id
               {stop}
         )
         SELECT id FROM reach"
    )
}

/// The resources a walk reached that are not live yet. Driven by the (small) walk, never by
/// `resources`: written as a join, SQLite scanned all of `resources` by its (live, name) index on
/// every publish, which took 8 ms per task at 100,000 resources (BENCHMARKS.md, issue 16).
const NEWLY_LIVE_SQL: &str = "SELECT r.id, r.name FROM resources r WHERE r.id IN (SELECT id FROM live_reached) AND +r.live = 0";

/// Mark `roots` live together with everything they make live downstream through succeeded tasks
/// of current step versions. Returns the resources that were not live before, as (id, name).
pub fn propagate(conn: &Connection, roots: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    temp_tables(conn)?;
    {
        let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO live_roots (id) SELECT id FROM resources WHERE id = ?1 AND live = 0")?;
        for id in roots {
            insert.execute([id])?;
        }
    }
    // Only resources that are not live yet are entered: below a live resource everything reachable
    // is already live (the invariant this module maintains), so the walk stops there.
    conn.prepare_cached(&reach_sql(Walk::StopAtLive))?
        .execute([])?;
    let newly: Vec<(i64, String)> = conn
        .prepare_cached(NEWLY_LIVE_SQL)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    conn.prepare_cached(
        "UPDATE resources SET live = 1 WHERE id IN (SELECT id FROM live_reached) AND +live = 0",
    )?
    .execute([])?;
    Ok(newly)
}

/// What a full recompute changed.
#[derive(Debug, Default)]
pub struct Recomputed {
    /// Resources that stopped being live.
    pub dropped: u64,
    /// Resources that became live again, as (id, name): a superseded fact's successor set can
    /// bring back an earlier gather result, whose consumers may need tasks they never had (a step
    /// changed since), so the caller creates them ([`super::schedule::tasks_for_new_live`]).
    pub raised: Vec<(i64, String)>,
}

/// Rebuild `resources.live` from the facts.
pub fn recompute(conn: &Connection) -> Result<Recomputed, StoreError> {
    temp_tables(conn)?;
    // A claim counts while its source is a source step of the current manifest (or `grit
    // ingest`, ''): a source removed from the manifest, renamed, or turned into a derived step
    // no longer vouches for what it published, as on a fresh run of the manifest. The claims
    // stay, so the outputs come back if the source does. (`IN` over an uncorrelated subquery:
    // SQLite builds the list of current sources once, not once per claim.)
    conn.execute(
        "INSERT OR IGNORE INTO live_roots (id)
         SELECT c.resource_id FROM fact_claims c
         WHERE c.live = 1
           AND (c.source = ''
                OR c.source IN (SELECT name FROM step_versions
                                WHERE current = 1 AND kind = 'source'))",
        [],
    )?;
    // A held gather's live output is its held task's, whatever its current input set is.
    conn.execute(
        "INSERT OR IGNORE INTO live_roots (id)
         SELECT o.resource_id FROM gather_holds h
           JOIN step_versions v ON v.id = h.step_version_id AND v.current = 1
           JOIN outputs o ON o.task_id = h.task_id",
        [],
    )?;
    let held: Vec<i64> = conn
        .prepare_cached("SELECT step_version_id FROM gather_holds")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut gathers = current_gather_versions(conn)?;
    gathers.retain(|(id, _)| !held.contains(id));
    // The roots without any gather's output, kept apart: each round starts from them again.
    conn.prepare_cached("CREATE TEMP TABLE IF NOT EXISTS live_base (id INTEGER PRIMARY KEY)")?
        .execute([])?;
    conn.prepare_cached("DELETE FROM live_base")?.execute([])?;
    conn.execute("INSERT INTO live_base (id) SELECT id FROM live_roots", [])?;
    // Each gather's live output is that of its task for the set it sees once everything else is
    // settled, the outputs of gathers upstream of it included. So the rounds are not cumulative:
    // a gather fed by another one sees a smaller set in the first round (without the other's
    // output), and that round's choice must not stay live beside the final one. Each round
    // walks from the base roots plus the outputs the previous round chose, until the choices
    // stop changing (one round per level of gathers feeding gathers).
    let mut chosen: Vec<Option<String>> = vec![None; gathers.len()];
    for round in 0..MAX_GATHER_ROUNDS {
        if round > 0 {
            conn.execute("DELETE FROM live_roots", [])?;
            conn.execute("INSERT INTO live_roots (id) SELECT id FROM live_base", [])?;
            for ((version_id, _), key) in gathers.iter().zip(&chosen) {
                let Some(key) = key else { continue };
                conn.execute(
                    "INSERT OR IGNORE INTO live_roots (id)
                     SELECT o.resource_id FROM tasks t JOIN outputs o ON o.task_id = t.id
                     WHERE t.step_version_id = ?1 AND t.input_set = ?2 AND t.state = 'succeeded'",
                    params![version_id, key],
                )?;
            }
        }
        conn.execute("DELETE FROM live_reached", [])?;
        conn.execute(&reach_sql(Walk::Everything), [])?;
        let mut keys = Vec::with_capacity(gathers.len());
        for (_, patterns) in &gathers {
            keys.push(gather_key(conn, patterns, LiveSource::Reached)?);
        }
        // (In the first round, no gather with a set means nothing to add.)
        if keys == chosen {
            break;
        }
        chosen = keys;
    }
    let dropped = conn.execute(
        "UPDATE resources SET live = 0 WHERE live = 1 AND id NOT IN (SELECT id FROM live_reached)",
        [],
    )?;
    let raised: Vec<(i64, String)> = conn
        .prepare_cached(NEWLY_LIVE_SQL)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    conn.execute(
        "UPDATE resources SET live = 1 WHERE live = 0 AND id IN (SELECT id FROM live_reached)",
        [],
    )?;
    Ok(Recomputed {
        dropped: dropped as u64,
        raised,
    })
}

/// Current gather step versions with their input patterns.
pub fn current_gather_versions(conn: &Connection) -> Result<Vec<(i64, Vec<String>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, inputs FROM step_versions WHERE current = 1 AND kind = 'gather' ORDER BY position",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, inputs) = row?;
        let patterns: Vec<String> = serde_json::from_str(&inputs).unwrap_or_default();
        out.push((id, patterns));
    }
    Ok(out)
}

/// Which liveness a gather key is computed over.
#[derive(Clone, Copy)]
pub enum LiveSource {
    /// The cached `resources.live` column.
    Column,
    /// The `live_reached` temp table of a recompute in progress.
    Reached,
}

/// The identity of the live input set of a gather step: SHA-256 over the sorted resource ids that
/// match its patterns, or `None` when the set is empty (a gather step never runs on nothing).
pub fn gather_key(
    conn: &Connection,
    patterns: &[String],
    source: LiveSource,
) -> Result<Option<String>, StoreError> {
    let ids = gather_members(conn, patterns, source)?;
    if ids.is_empty() {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    for id in &ids {
        hasher.update(id.to_string().as_bytes());
        hasher.update(b",");
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// The sorted ids of live resources matching any of `patterns`.
pub fn gather_members(
    conn: &Connection,
    patterns: &[String],
    source: LiveSource,
) -> Result<Vec<i64>, StoreError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let liveness = match source {
        LiveSource::Column => "r.live = 1",
        LiveSource::Reached => "r.id IN (SELECT id FROM live_reached)",
    };
    let (matches, values) = crate::manifest::inputs_sql("r.name", patterns);
    let sql = format!("SELECT r.id FROM resources r WHERE {liveness} AND {matches} ORDER BY r.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let ids = stmt
        .query_map(rusqlite::params_from_iter(values), |row| row.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// The per-publish queries look rows up by key: their cost must not grow with the store
    /// (a plan that scans `resources` or `tasks` is O(store) on every task).
    #[test]
    fn per_publish_queries_never_scan_the_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        super::temp_tables(&conn).unwrap();
        for sql in [
            super::NEWLY_LIVE_SQL.to_string(),
            super::reach_sql(super::Walk::StopAtLive),
            "UPDATE resources SET live = 1 WHERE id IN (SELECT id FROM live_reached) AND +live = 0"
                .to_string(),
        ] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                let scanned = step.strip_prefix("SCAN ").and_then(|s| s.split(' ').next());
                let scans_store = scanned.is_some_and(|table| {
                    ["r", "t", "o", "resources", "tasks", "outputs"].contains(&table)
                });
                assert!(!scans_store, "{sql}\nscans the store: {plan:?}");
            }
        }
    }
}
