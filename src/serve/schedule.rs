//! `schedule`: cron expressions (`"*/15 * * * *"`, UTC, through `croner`) and intervals
//! (`"every 10m"`) that queue runs. When each entry last fired is kept in the store
//! (`serve_schedule`), so ticks missed while the server was down queue one run at start-up, like
//! systemd's `Persistent=true`; an entry seen for the first time starts counting from then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::watch;

use super::queue::{self, Enqueued, Trigger};
use super::worker::Pipeline;
use crate::store::StoreError;

/// One entry of `schedule`.
#[derive(Debug, Clone)]
pub enum Every {
    Cron(Box<croner::Cron>),
    Interval(Duration),
}

impl Every {
    /// Parse `"every DURATION"` or a cron expression.
    pub fn parse(spec: &str) -> Result<Every, String> {
        if let Some(interval) = spec.trim().strip_prefix("every ") {
            let every = humantime::parse_duration(interval.trim()).map_err(|e| {
                format!("`{spec}`: {e}: write e.g. \"every 10m\" or \"every 1h 30m\"")
            })?;
            if every < Duration::from_secs(1) {
                return Err(format!("`{spec}`: an interval must be at least 1s"));
            }
            return Ok(Every::Interval(every));
        }
        spec.parse::<croner::Cron>()
            .map(|cron| Every::Cron(Box::new(cron)))
            .map_err(|e| {
                format!(
                    "`{spec}` is neither a cron expression ({e}) nor \"every DURATION\": write e.g. \"*/15 * * * *\" or \"every 10m\""
                )
            })
    }

    /// The first tick strictly after `after_ms` (unix milliseconds).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Every::Interval(every) => Some(after_ms + every.as_millis() as i64),
            Every::Cron(cron) => {
                let after = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms)?;
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|next| next.timestamp_millis())
            }
        }
    }
}

fn last_fires(conn: &Connection, pipeline: &str) -> Result<BTreeMap<String, i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT spec, last_fire_ms FROM serve_schedule WHERE pipeline = ?1")?
        .query_map([pipeline], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// When the schedule `specs` of `pipeline` fires next (unix ms), as [`tick`] will see it: each
/// entry's next tick after its last fire (or after `now_ms` when it never fired); `None` when
/// nothing is scheduled. A time already past means the next look queues a run.
pub fn next_fire(
    conn: &Connection,
    pipeline: &str,
    specs: &[String],
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let fires = last_fires(conn, pipeline)?;
    Ok(specs
        .iter()
        .filter_map(|spec| {
            let every = Every::parse(spec).ok()?;
            every.next_after(fires.get(spec).copied().unwrap_or(now_ms))
        })
        .min())
}

fn set_last_fires(
    conn: &mut Connection,
    pipeline: &str,
    fires: &BTreeMap<String, i64>,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM serve_schedule WHERE pipeline = ?1", [pipeline])?;
    for (spec, ms) in fires {
        tx.execute(
            "INSERT INTO serve_schedule (pipeline, spec, last_fire_ms) VALUES (?1, ?2, ?3)",
            params![pipeline, spec, ms],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// What one look at the schedule decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Tick {
    /// At least one entry is due (or was missed): queue one run.
    pub due: bool,
    /// When to look again (unix ms), if any entry has a next tick.
    pub next_ms: Option<i64>,
}

/// Decide, for entries `specs` last fired at `fires` (updated in place), what is due at `now_ms`.
pub fn tick(specs: &[(String, Every)], fires: &mut BTreeMap<String, i64>, now_ms: i64) -> Tick {
    fires.retain(|spec, _| specs.iter().any(|(s, _)| s == spec));
    let mut due = false;
    let mut next_ms: Option<i64> = None;
    for (spec, every) in specs {
        let last = *fires.entry(spec.clone()).or_insert(now_ms);
        if every.next_after(last).is_some_and(|next| next <= now_ms) {
            due = true;
            fires.insert(spec.clone(), now_ms);
        }
        let from = fires.get(spec).copied().unwrap_or(now_ms);
        if let Some(next) = every.next_after(from) {
            next_ms = Some(next_ms.map_or(next, |n| n.min(next)));
        }
    }
    Tick { due, next_ms }
}

/// Queue runs on `pipeline`'s schedule until the server stops. Re-reads the schedule after a
/// reload (SIGHUP).
pub async fn run(pipeline: Arc<Pipeline>, mut stopping: watch::Receiver<bool>) {
    loop {
        let config = pipeline.config();
        let specs: Vec<(String, Every)> = config
            .schedule
            .iter()
            .filter_map(|s| Every::parse(s).ok().map(|e| (s.clone(), e)))
            .collect();
        let name = config.name.clone();
        let decided = pipeline
            .writer
            .call({
                let name = name.clone();
                move |conn| {
                    let mut fires = last_fires(conn, &name)?;
                    let decided = tick(&specs, &mut fires, queue::unix_ms());
                    set_last_fires(conn, &name, &fires)?;
                    Ok(decided)
                }
            })
            .await;
        let next = match decided {
            Ok(tick) => {
                if tick.due {
                    enqueue(&pipeline, "schedule").await;
                }
                tick.next_ms
            }
            Err(e) => {
                tracing::error!(pipeline = %name, "reading the schedule: {e}");
                Some(queue::unix_ms() + 1_000)
            }
        };
        let sleep = async {
            match next {
                Some(ms) => {
                    tokio::time::sleep(Duration::from_millis((ms - queue::unix_ms()).max(0) as u64))
                        .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = pipeline.reloaded.notified() => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Queue a run of `pipeline` triggered by `source` (`schedule`, `watch`), as the API would.
pub async fn enqueue(pipeline: &Pipeline, source: &'static str) {
    let config = pipeline.config();
    let trigger = Trigger {
        pipeline: config.name.clone(),
        source,
        params: config.params.clone(),
        given: BTreeMap::new(),
        strategy: config.queue_strategy,
        limit: config.queue_limit,
        start_delay: config.start_delay,
    };
    let name = config.name.clone();
    match pipeline
        .writer
        .call(move |conn| queue::enqueue(conn, &trigger))
        .await
    {
        Ok(Enqueued::Queued {
            id,
            position,
            replaced,
        }) => {
            tracing::info!(pipeline = %name, run = %queue::public_id(&name, id), "queued by {source}");
            pipeline.hub.events.publish(
                "run_queued",
                serde_json::json!({
                    "pipeline": name, "run_id": queue::public_id(&name, id),
                    "position": position, "trigger": source,
                }),
            );
            for old in replaced {
                pipeline.ended_waiting(old, &queue::replaced_reason(&name, id));
            }
            pipeline.wake.notify_one();
        }
        Ok(Enqueued::Merged { .. }) => pipeline.wake.notify_one(),
        Ok(Enqueued::Full { limit }) => tracing::warn!(
            pipeline = %name,
            "{source}: the wait list is full ({limit} runs, queue_limit); no run queued"
        ),
        Err(e) => tracing::error!(pipeline = %name, "{source}: queueing a run: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn parses_cron_and_intervals() {
        assert!(
            matches!(Every::parse("every 10m"), Ok(Every::Interval(d)) if d == Duration::from_secs(600))
        );
        assert!(matches!(Every::parse("*/15 * * * *"), Ok(Every::Cron(_))));
        assert!(
            Every::parse("every soon")
                .unwrap_err()
                .contains("every 10m")
        );
        assert!(Every::parse("61 * * * *").is_err());
        assert!(Every::parse("every 10ms").is_err());
        // 2026-01-01T00:00:00Z, then the next quarter hour.
        let start = 1_767_225_600_000;
        let quarter = Every::parse("*/15 * * * *").unwrap();
        assert_eq!(quarter.next_after(start), Some(start + 15 * MINUTE));
        assert_eq!(
            quarter.next_after(start + MINUTE),
            Some(start + 15 * MINUTE)
        );
    }

    #[test]
    fn a_missed_tick_fires_once_and_a_new_entry_waits() {
        let specs = vec![("every 10m".to_string(), Every::parse("every 10m").unwrap())];
        let mut fires = BTreeMap::new();
        let t0 = 1_000_000;
        assert_eq!(
            tick(&specs, &mut fires, t0),
            Tick {
                due: false,
                next_ms: Some(t0 + 10 * MINUTE)
            }
        );
        // Down for an hour: six ticks missed, one run.
        let later = t0 + 60 * MINUTE;
        assert_eq!(
            tick(&specs, &mut fires, later),
            Tick {
                due: true,
                next_ms: Some(later + 10 * MINUTE)
            }
        );
        assert!(!tick(&specs, &mut fires, later + MINUTE).due);
        // A removed entry is forgotten.
        assert!(!tick(&[], &mut fires, later).due);
        assert!(fires.is_empty());
    }
}
