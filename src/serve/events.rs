//! The server's event stream: run queued/started/finished and task started/finished, numbered
//! in order, kept in a bounded backlog so a client that reconnects with `Last-Event-ID` misses
//! nothing still in it, and fanned out live to every `GET /events` subscriber.
//!
//! Ids count up from the unix time in milliseconds of the server's start, so the ids of one start
//! lie above those of the starts before it; an id this start never gave out (a client's last id
//! from before a restart) resumes with what comes next instead of hiding as many events.
//!
//! Publishing is synchronous and cheap (a lock, a push, a broadcast send), so the engine's
//! observer calls it on the scheduling thread.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `Last-Event-ID` resumption.
const BACKLOG: usize = 10_000;
/// Live events a slow subscriber may fall behind by before its stream ends (it reconnects and
/// resumes from the backlog).
const LIVE_BUFFER: usize = 1_024;

/// One published event.
#[derive(Debug, Clone, Serialize)]
pub struct ServerEvent {
    /// Increases by one per event, from the unix time in milliseconds of the server's start.
    pub id: u64,
    /// `run_queued`, `run_started`, `run_finished`, `task_started`, `task_finished`.
    pub kind: &'static str,
    pub data: serde_json::Value,
}

struct Inner {
    /// The id of this start's first event.
    first_id: u64,
    next_id: u64,
    backlog: VecDeque<ServerEvent>,
}

/// The bus every publisher and subscriber shares.
pub struct EventBus {
    inner: Mutex<Inner>,
    live: broadcast::Sender<ServerEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self::starting_at(now_ms.max(1))
    }

    /// A bus whose first event gets id `first_id`.
    fn starting_at(first_id: u64) -> EventBus {
        EventBus {
            inner: Mutex::new(Inner {
                first_id,
                next_id: first_id,
                backlog: VecDeque::new(),
            }),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    pub fn publish(&self, kind: &'static str, data: serde_json::Value) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let event = ServerEvent {
            id: inner.next_id,
            kind,
            data,
        };
        inner.next_id += 1;
        if inner.backlog.len() == BACKLOG {
            inner.backlog.pop_front();
        }
        inner.backlog.push_back(event.clone());
        // Sent under the lock, so a subscriber sees the backlog and the live events without a
        // gap or a repeat. No subscriber is not an error.
        let _ = self.live.send(event);
    }

    /// The events after `last_id` that are still in the backlog (none for `None` or an id this
    /// start never gave out: that subscriber starts with what comes next), and a receiver for the
    /// events published after.
    pub fn subscribe(
        &self,
        last_id: Option<u64>,
    ) -> (Vec<ServerEvent>, broadcast::Receiver<ServerEvent>) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = last_id.filter(|last| (inner.first_id..inner.next_id).contains(last));
        let backlog = match ours {
            Some(last) => inner
                .backlog
                .iter()
                .filter(|e| e.id > last)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (backlog, self.live.subscribe())
    }

    /// How many events were published since the server started.
    pub fn published(&self) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next_id - inner.first_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_resumes_after_its_last_id_without_gaps() {
        let bus = EventBus::starting_at(1);
        for n in 0..3 {
            bus.publish("run_queued", serde_json::json!({ "n": n }));
        }
        let (backlog, mut live) = bus.subscribe(Some(1));
        assert_eq!(backlog.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        bus.publish("run_started", serde_json::json!({}));
        assert_eq!(live.recv().await.unwrap().id, 4);
        let (fresh, _) = bus.subscribe(None);
        assert!(
            fresh.is_empty(),
            "a new subscriber starts with what comes next"
        );
        assert_eq!(bus.published(), 4);
    }

    #[test]
    fn ids_start_above_any_earlier_start_and_foreign_ids_resume_from_now() {
        let first = EventBus::new().inner.lock().unwrap().first_id;
        assert!(first > 1_700_000_000_000, "unix milliseconds: {first}");
        let bus = EventBus::starting_at(100);
        for _ in 0..3 {
            bus.publish("run_queued", serde_json::json!({}));
        }
        for foreign in [0, 9, 99, 103, u64::MAX] {
            let (backlog, _) = bus.subscribe(Some(foreign));
            assert!(backlog.is_empty(), "{foreign}: {backlog:?}");
        }
        let (backlog, _) = bus.subscribe(Some(100));
        assert_eq!(backlog.iter().map(|e| e.id).collect::<Vec<_>>(), [101, 102]);
        assert_eq!(bus.published(), 3);
    }
}
