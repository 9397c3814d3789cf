//! The log in this process's memory: tests, and a coordinator until a
//! durable log is set. Bounded to [`MEMORY_KEEP`] events (the oldest go
//! first, with their ids).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use strata_proto::v1;

use super::{LogStats, event_id};
use crate::util::lock;

/// Events a memory log keeps.
const MEMORY_KEEP: usize = 1_000_000;

#[derive(Default)]
pub(super) struct MemoryLog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: u64,
    /// Each event with its id, oldest first.
    events: VecDeque<(String, v1::FleetEvent)>,
    ids: HashMap<String, u64>,
}

impl MemoryLog {
    pub(super) fn publish(&self, events: Vec<v1::FleetEvent>) -> Vec<v1::FleetEvent> {
        let mut s = lock(&self.state);
        let mut kept = Vec::with_capacity(events.len());
        for mut e in events {
            let id = event_id(&e);
            if s.ids.contains_key(&id) {
                continue;
            }
            s.last += 1;
            e.sequence = s.last;
            s.ids.insert(id.clone(), e.sequence);
            s.events.push_back((id, e.clone()));
            if s.events.len() > MEMORY_KEEP
                && let Some((old, _)) = s.events.pop_front()
            {
                s.ids.remove(&old);
            }
            kept.push(e);
        }
        kept
    }

    pub(super) fn after(&self, after: u64, max: usize) -> Vec<v1::FleetEvent> {
        let s = lock(&self.state);
        // Sequences are dense: the first kept one tells where `after` sits.
        let first = s.events.front().map_or(1, |(_, e)| e.sequence);
        let skip = usize::try_from(after.saturating_sub(first - 1)).unwrap_or(usize::MAX);
        s.events
            .iter()
            .skip(skip)
            .take(max)
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub(super) fn stats(&self) -> LogStats {
        let s = lock(&self.state);
        LogStats {
            last_sequence: s.last,
            kept: s.events.len() as u64,
        }
    }
}
