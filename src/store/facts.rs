//! Facts and which of them are live (DESIGN §2.3): the roots every liveness walk starts from.
//!
//! A *claim* says that a source (a step name, or [`INGEST`] for `grit ingest`) published a
//! resource. Each publication (one succeeded source task, one `grit ingest` command) gets a new
//! sequence number, stored on the claims it makes; a resource published again by the same source
//! keeps one claim with the newer number. A claim is live or superseded:
//!
//! - `keep = "latest"`: publishing a name supersedes the source's older claims of that name;
//! - `keep = "run"`: a publication supersedes every older claim of the source;
//! - `keep = "all"`: nothing is superseded.
//!
//! `grit ingest` supersedes every live claim of the names it adds, whoever made them, unless
//! asked to keep both. A source under "latest" does not undo that by publishing the same bytes
//! again (no new output), and its new content of a name supersedes an older ingested file of the
//! name in turn, so a source's file and an ingested one of the same name are never both live by
//! accident. Two sources that write one name each keep their own. A resource is a live fact while at least one of its claims is live;
//! superseded facts stay in the store as history until `grit gc`. Only a succeeded task
//! publishes, so a failed source run supersedes nothing.
//!
//! Superseding only ever happens at a publication, so deleting the newest output of a name does
//! not bring an older one back. When a source's `keep` changes, [`apply_keep`] re-derives its
//! claims from their sequence numbers, which is also what the schema migration does for stores
//! written before claims existed.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::manifest::Keep;

/// The source name of files added by `grit ingest` (step names cannot be empty).
pub const INGEST: &str = "";

/// A number greater than every stored publication: the next publication's sequence number.
pub fn next_seq(conn: &Connection) -> Result<i64, StoreError> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM fact_claims")?
        .query_row([], |r| r.get(0))?;
    Ok(max.unwrap_or(0) + 1)
}

/// Record that `source` published the resources `ids` in publication `seq`, and supersede what
/// its `keep` rule says this publication replaces. Returns how many claims were superseded (when
/// any were, the caller recomputes liveness: what was derived from them may stop being live).
pub fn publish(
    conn: &Connection,
    source: &str,
    keep: Keep,
    seq: i64,
    ids: &[i64],
) -> Result<u64, StoreError> {
    let ids = match keep {
        Keep::Latest => not_replaced_since(conn, source, ids)?,
        Keep::Run | Keep::All => ids.to_vec(),
    };
    let fresh = match keep {
        Keep::Latest => new_to(conn, source, &ids)?,
        Keep::Run | Keep::All => Vec::new(),
    };
    claim(conn, source, seq, &ids)?;
    let superseded = match keep {
        Keep::All => 0,
        Keep::Run => conn
            .prepare_cached(
                "UPDATE fact_claims SET live = 0 WHERE source = ?1 AND live = 1 AND seq < ?2",
            )?
            .execute(params![source, seq])?,
        Keep::Latest => {
            let mut own = conn.prepare_cached(
                "UPDATE fact_claims SET live = 0
                 WHERE source = ?1 AND live = 1 AND seq < ?2
                   AND resource_id IN (SELECT id FROM resources
                                       WHERE name = (SELECT name FROM resources WHERE id = ?3))",
            )?;
            // New content of a name also replaces an older ingested file of that name, which
            // replaced the source's output in its turn: both live would be counted twice. Another
            // source's output of the name is that source's own and stays.
            let mut anyone = conn.prepare_cached(
                "UPDATE fact_claims SET live = 0
                 WHERE live = 1 AND seq < ?1 AND (source = ?3 OR source = ?4)
                   AND resource_id <> ?2
                   AND resource_id IN (SELECT id FROM resources
                                       WHERE name = (SELECT name FROM resources WHERE id = ?2))",
            )?;
            let mut total = 0;
            for id in &ids {
                total += if fresh.contains(id) {
                    anyone.execute(params![seq, id, source, INGEST])?
                } else {
                    own.execute(params![source, seq, id])?
                };
            }
            total
        }
    };
    Ok(superseded as u64)
}

/// `ids` without the resources `source` published before and `grit ingest` replaced since with
/// a newer file of the same name (`grit ingest` of a new `sales.csv` over a source's): publishing
/// the same bytes again is no new output, so the replacement stands.
fn not_replaced_since(
    conn: &Connection,
    source: &str,
    ids: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let mut replaced = conn.prepare_cached(
        "SELECT EXISTS (
             SELECT 1 FROM fact_claims mine, fact_claims newer, resources nr
             WHERE mine.source = ?1 AND mine.resource_id = ?2 AND mine.live = 0
               AND newer.source = ?3 AND newer.live = 1 AND newer.seq > mine.seq
               AND newer.resource_id = nr.id
               AND nr.name = (SELECT name FROM resources WHERE id = ?2))",
    )?;
    let mut kept = Vec::with_capacity(ids.len());
    for &id in ids {
        if !replaced.query_row(params![source, id, INGEST], |r| r.get::<_, bool>(0))? {
            kept.push(id);
        }
    }
    Ok(kept)
}

/// The resources of `ids` that `source` has no claim on yet: new content it publishes.
fn new_to(conn: &Connection, source: &str, ids: &[i64]) -> Result<Vec<i64>, StoreError> {
    let mut known = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM fact_claims WHERE source = ?1 AND resource_id = ?2)",
    )?;
    let mut fresh = Vec::new();
    for &id in ids {
        if !known.query_row(params![source, id], |r| r.get::<_, bool>(0))? {
            fresh.push(id);
        }
    }
    Ok(fresh)
}

/// Record ingested resources as facts of [`INGEST`] in publication `seq`. Unless `keep_both`,
/// every older live claim (of any source) of the same names is superseded. Returns how many
/// claims were superseded.
pub fn ingest(
    conn: &Connection,
    seq: i64,
    ids: &[i64],
    keep_both: bool,
) -> Result<u64, StoreError> {
    claim(conn, INGEST, seq, ids)?;
    if keep_both {
        return Ok(0);
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE fact_claims SET live = 0
         WHERE live = 1 AND seq < ?1
           AND resource_id IN (SELECT id FROM resources
                               WHERE name = (SELECT name FROM resources WHERE id = ?2))
           AND NOT (source = ?3 AND resource_id = ?2)",
    )?;
    let mut total = 0;
    for id in ids {
        total += stmt.execute(params![seq, id, INGEST])?;
    }
    Ok(total as u64)
}

fn claim(conn: &Connection, source: &str, seq: i64, ids: &[i64]) -> Result<(), StoreError> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO fact_claims (source, resource_id, seq, live) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (source, resource_id) DO UPDATE SET seq = excluded.seq, live = 1",
    )?;
    let mut mark =
        conn.prepare_cached("UPDATE resources SET fact = 1 WHERE id = ?1 AND fact = 0")?;
    for id in ids {
        upsert.execute(params![source, id, seq])?;
        mark.execute([id])?;
    }
    Ok(())
}

/// Make `source`'s claims follow `keep` if that is not the rule they were last derived with.
/// Returns how many claims changed state (the caller then recomputes liveness).
pub fn apply_keep(conn: &Connection, source: &str, keep: Keep) -> Result<u64, StoreError> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT keep FROM source_keep WHERE source = ?1")?
        .query_row([source], |r| r.get(0))
        .optional()?;
    // Claims without a recorded rule were derived as "latest": by the migration, or by a grit
    // that published them before the source ever ran with another rule.
    let stored = stored.as_deref().and_then(Keep::parse).unwrap_or_default();
    if stored == keep {
        return Ok(0);
    }
    let changed = conn.execute(&rederive_sql(keep), [source])?;
    conn.prepare_cached(
        "INSERT INTO source_keep (source, keep) VALUES (?1, ?2)
         ON CONFLICT (source) DO UPDATE SET keep = excluded.keep",
    )?
    .execute(params![source, keep.as_str()])?;
    Ok(changed as u64)
}

/// SQL setting `live` on the claims of source `?1` from their sequence numbers under `keep`;
/// only rows whose state changes are touched, so the change count is meaningful.
fn rederive_sql(keep: Keep) -> String {
    let should_live = match keep {
        Keep::All => "1".to_string(),
        Keep::Run => "(c.seq = (SELECT MAX(seq) FROM fact_claims WHERE source = c.source))".into(),
        Keep::Latest => latest_expr("c"),
    };
    format!(
        "UPDATE fact_claims AS c SET live = {should_live}
         WHERE c.source = ?1 AND c.live <> {should_live}"
    )
}

/// Whether claim `c` is its source's newest claim of its resource's name.
fn latest_expr(c: &str) -> String {
    format!(
        "(NOT EXISTS (SELECT 1 FROM fact_claims n JOIN resources nr ON nr.id = n.resource_id
                      WHERE n.source = {c}.source AND n.seq > {c}.seq
                        AND nr.name = (SELECT name FROM resources WHERE id = {c}.resource_id)))"
    )
}

/// Schema v2: build the claims of a store written before they existed, with the default rule
/// ("latest") applied, and recompute liveness so that the store's live set follows it.
///
/// A source's outputs are claimed by its step name, ordered by the id of the task that last
/// produced them (source tasks of later runs have higher ids). Facts no source task produced were
/// ingested; they are claimed by [`INGEST`] in the order they were added.
pub fn migrate_v2(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&format!(
        "INSERT INTO fact_claims (source, resource_id, seq, live)
             SELECT v.name, o.resource_id, MAX(t.id), 1
             FROM outputs o
               JOIN tasks t ON t.id = o.task_id AND t.state = 'succeeded'
               JOIN step_versions v ON v.id = t.step_version_id AND v.kind = 'source'
             GROUP BY v.name, o.resource_id;
         INSERT INTO fact_claims (source, resource_id, seq, live)
             SELECT '{INGEST}', r.id, r.id, 1 FROM resources r
             WHERE r.fact = 1
               AND NOT EXISTS (SELECT 1 FROM fact_claims c WHERE c.resource_id = r.id);
         UPDATE fact_claims AS c SET live = 0 WHERE NOT {latest};",
        latest = latest_expr("c"),
    ))?;
    super::liveness::recompute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    fn resource(conn: &Connection, name: &str, hash: &str) -> i64 {
        conn.execute(
            "INSERT INTO resources (name, hash, size, created_at) VALUES (?1, ?2, 1, 'now')",
            params![name, hash],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn live_claims(conn: &Connection) -> Vec<(String, i64)> {
        conn.prepare("SELECT source, resource_id FROM fact_claims WHERE live = 1 ORDER BY 1, 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn latest_supersedes_per_name_and_republishing_revives() {
        let conn = store();
        let (a1, b1, a2) = (
            resource(&conn, "a", "1"),
            resource(&conn, "b", "1"),
            resource(&conn, "a", "2"),
        );
        assert_eq!(publish(&conn, "s", Keep::Latest, 1, &[a1, b1]).unwrap(), 0);
        assert_eq!(publish(&conn, "s", Keep::Latest, 2, &[a2]).unwrap(), 1);
        assert_eq!(live_claims(&conn), [("s".into(), b1), ("s".into(), a2)]);
        // Another source's claim of the same name is its own.
        assert_eq!(publish(&conn, "t", Keep::Latest, 3, &[a1]).unwrap(), 0);
        // The old content published again is the newest again.
        assert_eq!(publish(&conn, "s", Keep::Latest, 4, &[a1]).unwrap(), 1);
        assert_eq!(
            live_claims(&conn),
            [("s".into(), a1), ("s".into(), b1), ("t".into(), a1)]
        );
    }

    #[test]
    fn run_keeps_one_publication_and_all_keeps_everything() {
        let conn = store();
        let (a, b) = (resource(&conn, "a", "1"), resource(&conn, "b", "1"));
        publish(&conn, "s", Keep::Run, 1, &[a, b]).unwrap();
        assert_eq!(publish(&conn, "s", Keep::Run, 2, &[b]).unwrap(), 1);
        assert_eq!(live_claims(&conn), [("s".into(), b)]);
        // Switching the rule re-derives the claims from their sequence numbers, both ways.
        assert_eq!(apply_keep(&conn, "s", Keep::All).unwrap(), 1);
        assert_eq!(apply_keep(&conn, "s", Keep::All).unwrap(), 0);
        assert_eq!(live_claims(&conn).len(), 2);
        assert_eq!(apply_keep(&conn, "s", Keep::Run).unwrap(), 1);
        assert_eq!(live_claims(&conn), [("s".into(), b)]);
    }

    #[test]
    fn ingest_supersedes_the_live_name_unless_keeping_both() {
        let conn = store();
        let (x1, x2, x3) = (
            resource(&conn, "x", "1"),
            resource(&conn, "x", "2"),
            resource(&conn, "x", "3"),
        );
        publish(&conn, "src", Keep::All, 1, &[x1]).unwrap();
        assert_eq!(ingest(&conn, 2, &[x2], false).unwrap(), 1);
        assert_eq!(ingest(&conn, 3, &[x3], true).unwrap(), 0);
        assert_eq!(
            live_claims(&conn),
            [(INGEST.into(), x2), (INGEST.into(), x3)]
        );
        assert!(next_seq(&conn).unwrap() > 3);
    }
}
