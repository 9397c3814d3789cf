//! Per-scan event logs: what `WatchScan` replays and then follows.
//!
//! A log lives in memory while its scan runs and for a while after; a
//! watcher of a scan whose log is gone (a restart, or evicted) gets the
//! events rebuilt from the scan record instead: the same states, in order.
//!
//! An event is told once per log: its key (kind, layer index, layer
//! state) is remembered, so the events a scan record implies can be fed
//! again as the record changes — by another coordinator, through the
//! change stream (`emit_replayed`) — and only what is new goes out.
//! Clients that reconnect elsewhere and watch again drop what they were
//! already told by the same key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use strata_proto::v1::{self, scan_event::Event};
use tokio::sync::broadcast;

use super::records::{ScanRecord, ScanStatus};
use crate::util::lock;

/// Logs kept at most; the oldest finished ones go first.
const MAX_LOGS: usize = 4096;
/// Events kept per log (a scan has at most a few per layer).
const MAX_EVENTS: usize = 4096;

#[derive(Default)]
pub struct EventLogs {
    logs: Mutex<Logs>,
}

#[derive(Default)]
struct Logs {
    by_scan: HashMap<String, Log>,
    /// Every log's id, oldest first (ids of logs gone are skipped, and
    /// dropped when they pile up).
    order: VecDeque<String>,
    /// Ids of finished logs, in the order they finished: evicted first.
    finished: VecDeque<String>,
}

struct Log {
    events: Vec<v1::ScanEvent>,
    /// The keys of the events told (see [`EventKey`]).
    seen: HashSet<Option<EventKey>>,
    /// Made when someone subscribes: most scans (background ones) are
    /// never watched, and a channel's buffer is allocated whole.
    tx: Option<broadcast::Sender<v1::ScanEvent>>,
    done: bool,
}

impl Log {
    fn new() -> Log {
        Log {
            events: Vec::new(),
            seen: HashSet::new(),
            tx: None,
            done: false,
        }
    }
}

/// Events a watcher may fall behind by before it reads the scan record
/// instead (`RecvError::Lagged`).
const CHANNEL: usize = 256;

impl EventLogs {
    pub fn emit(&self, scan_id: &str, event: Event) {
        let done = matches!(event, Event::Done(_));
        let event = v1::ScanEvent {
            scan_id: scan_id.to_owned(),
            at_unix_ms: strata_proto::text::now_unix_ms(),
            event: Some(event),
        };
        let mut logs = lock(&self.logs);
        if !logs.by_scan.contains_key(scan_id) {
            logs.insert(scan_id, Log::new());
        }
        let Some(log) = logs.by_scan.get_mut(scan_id) else {
            return;
        };
        if !log.seen.insert(EventKey::of(&event)) {
            return; // told already
        }
        if log.events.len() < MAX_EVENTS || done {
            log.events.push(event.clone());
        }
        let finished_now = done && !log.done;
        log.done |= done;
        if let Some(tx) = &log.tx {
            let _ = tx.send(event);
        }
        if finished_now {
            logs.finished.push_back(scan_id.to_owned());
        }
    }

    /// Feeds the events a scan record implies ([`replay`]) into the scan's
    /// log, if one is kept: those not told yet go out, in order. (Called
    /// for every scan change another coordinator writes: nothing is built
    /// for a scan nobody here watches.)
    pub fn emit_replayed(&self, scan: &ScanRecord) {
        if lock(&self.logs).by_scan.contains_key(&scan.id) {
            self.emit_kept(&scan.id, replay(scan));
        }
    }

    /// `events` into the scan's log if one is kept (see [`Self::emit_replayed`]).
    fn emit_kept(&self, scan_id: &str, events: Vec<v1::ScanEvent>) {
        if !lock(&self.logs).by_scan.contains_key(scan_id) {
            return;
        }
        for event in events {
            if let Some(e) = event.event {
                self.emit(scan_id, e);
            }
        }
    }

    /// The events so far and a receiver for the rest. `rebuild` makes the
    /// history when no log is kept for the scan.
    pub fn subscribe(
        &self,
        scan_id: &str,
        rebuild: impl FnOnce() -> Vec<v1::ScanEvent>,
    ) -> (Vec<v1::ScanEvent>, broadcast::Receiver<v1::ScanEvent>) {
        let mut logs = lock(&self.logs);
        if !logs.by_scan.contains_key(scan_id) {
            let mut log = Log::new();
            log.events = rebuild();
            log.seen = log.events.iter().map(EventKey::of).collect();
            log.done = log.events.iter().any(|e| matches!(e.event, Some(Event::Done(_))));
            let done = log.done;
            logs.insert(scan_id, log);
            if done {
                logs.finished.push_back(scan_id.to_owned());
            }
        }
        let Some(log) = logs.by_scan.get_mut(scan_id) else {
            unreachable!("inserted above")
        };
        let rx = log
            .tx
            .get_or_insert_with(|| broadcast::channel(CHANNEL).0)
            .subscribe();
        (log.events.clone(), rx)
    }
}

impl Logs {
    fn insert(&mut self, scan_id: &str, log: Log) {
        self.evict();
        self.by_scan.insert(scan_id.to_owned(), log);
        self.order.push_back(scan_id.to_owned());
        // Ids of logs gone pile up in `order` while finished ones are
        // evicted: dropped once they are half of it.
        if self.order.len() > 2 * self.by_scan.len() + 64 {
            let by_scan = &self.by_scan;
            self.order.retain(|id| by_scan.contains_key(id));
        }
    }

    /// Room for one more log: the oldest finished one goes, else the
    /// oldest. Amortised constant time (each id is popped once).
    fn evict(&mut self) {
        while self.by_scan.len() >= MAX_LOGS {
            let finished = loop {
                match self.finished.pop_front() {
                    Some(id) if self.by_scan.get(&id).is_some_and(|l| l.done) => break Some(id),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let victim = finished.or_else(|| {
                while let Some(id) = self.order.pop_front() {
                    if self.by_scan.contains_key(&id) {
                        return Some(id);
                    }
                }
                None
            });
            match victim {
                Some(id) => {
                    self.by_scan.remove(&id);
                }
                None => break,
            }
        }
    }
}

/// What tells one scan event from another: its kind, and for a layer's
/// progress the layer's index and state. A scan tells each key once; the
/// event logs drop repeats by it, and clients that watch again elsewhere
/// (`strata submit --wait`) drop what they already saw by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKey {
    Submitted,
    Resolved,
    Layer { index: u32, state: i32 },
    Matched,
    Done,
}

impl EventKey {
    /// `None` for an event without a payload (nothing to show or count).
    pub fn of(event: &v1::ScanEvent) -> Option<EventKey> {
        Some(match event.event.as_ref()? {
            Event::Submitted(_) => EventKey::Submitted,
            Event::Resolved(_) => EventKey::Resolved,
            Event::Layer(l) => EventKey::Layer {
                index: l.index,
                state: l.state,
            },
            Event::Matched(_) => EventKey::Matched,
            Event::Done(_) => EventKey::Done,
        })
    }
}

/// The events a scan's record implies, in order.
pub fn replay(scan: &ScanRecord) -> Vec<v1::ScanEvent> {
    let at = scan.updated_unix_ms;
    let ev = |event: Event| v1::ScanEvent {
        scan_id: scan.id.clone(),
        at_unix_ms: at,
        event: Some(event),
    };
    let mut out = vec![
        ev(Event::Submitted(v1::Submitted {
            existing: true,
            status: scan.status.to_proto().into(),
        })),
        ev(Event::Resolved(v1::Resolved {
            image_digest: scan.image_digest.clone(),
            platform: scan.resolved_platform.clone(),
            layer_digests: scan.layers.iter().map(|l| l.digest.clone()).collect(),
        })),
    ];
    for (index, layer) in scan.layers.iter().enumerate() {
        if layer.state == super::records::ScanLayerState::Pending {
            continue;
        }
        out.push(ev(Event::Layer(v1::LayerProgress {
            digest: layer.digest.clone(),
            index: index as u32,
            state: layer.state.to_proto().into(),
            error: layer.error.clone().unwrap_or_default(),
            packages: layer.packages,
        })));
    }
    if scan.status.is_terminal() {
        let (cached, analysed, failed) = scan.layer_counts();
        if scan.status == ScanStatus::Complete {
            out.push(ev(Event::Matched(v1::Matched {
                packages: scan.packages,
                findings: scan.findings,
                vulndb_version: scan.vulndb_version.clone(),
            })));
        }
        out.push(ev(Event::Done(v1::Done {
            status: scan.status.to_proto().into(),
            error: scan.error.clone().unwrap_or_default(),
            layers_total: scan.layers.len() as u32,
            layers_cached: cached,
            layers_analysed: analysed,
            layers_failed: failed,
            counts: Some(scan.counts.to_proto()),
        })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Event {
        Event::Done(v1::Done::default())
    }

    fn progress() -> Event {
        Event::Submitted(v1::Submitted::default())
    }

    #[test]
    fn finished_logs_go_first_and_memory_stays_bounded() {
        let logs = EventLogs::default();
        // A long-running scan first, then many that finish.
        logs.emit("running", progress());
        for i in 0..3 * MAX_LOGS {
            let id = format!("s{i}");
            logs.emit(&id, progress());
            logs.emit(&id, done());
        }
        let l = lock(&logs.logs);
        assert_eq!(l.by_scan.len(), MAX_LOGS);
        assert!(l.by_scan.contains_key("running"), "the unfinished log is kept");
        assert!(l.by_scan.contains_key(&format!("s{}", 3 * MAX_LOGS - 1)));
        assert!(l.order.len() <= 2 * MAX_LOGS + 64, "{}", l.order.len());
        assert!(l.finished.len() <= MAX_LOGS + 1, "{}", l.finished.len());
    }

    #[test]
    fn when_nothing_finished_the_oldest_goes() {
        let logs = EventLogs::default();
        for i in 0..MAX_LOGS + 10 {
            logs.emit(&format!("s{i}"), progress());
        }
        let l = lock(&logs.logs);
        assert_eq!(l.by_scan.len(), MAX_LOGS);
        assert!(!l.by_scan.contains_key("s0"));
        assert!(l.by_scan.contains_key("s10"));
    }

    #[test]
    fn events_replayed_from_the_record_go_out_once() {
        let logs = EventLogs::default();
        logs.emit("s", progress());
        let (past, mut rx) = logs.subscribe("s", || unreachable!("the log is kept"));
        assert_eq!(past.len(), 1);
        let layer = |index, state| v1::ScanEvent {
            scan_id: "s".into(),
            at_unix_ms: 1,
            event: Some(Event::Layer(v1::LayerProgress {
                index,
                state,
                ..Default::default()
            })),
        };
        // Another coordinator's record: submitted (told), layer 0 queued.
        logs.emit_kept("s", vec![past[0].clone(), layer(0, 1)]);
        // The same record again, then a newer one.
        logs.emit_kept("s", vec![past[0].clone(), layer(0, 1)]);
        logs.emit_kept("s", vec![past[0].clone(), layer(0, 1), layer(0, 3)]);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| EventKey::of(&e))
            .collect();
        assert_eq!(
            got,
            vec![
                EventKey::Layer { index: 0, state: 1 },
                EventKey::Layer { index: 0, state: 3 }
            ]
        );
        // No log kept: nothing is made for a scan nobody watches.
        logs.emit_kept("other", vec![layer(0, 1)]);
        assert!(!lock(&logs.logs).by_scan.contains_key("other"));
    }

    #[test]
    fn a_subscriber_gets_the_past_then_what_follows() {
        let logs = EventLogs::default();
        logs.emit("s", progress());
        let (past, mut rx) = logs.subscribe("s", || unreachable!("the log is kept"));
        assert_eq!(past.len(), 1);
        logs.emit("s", done());
        let next = rx.try_recv().unwrap();
        assert!(matches!(next.event, Some(Event::Done(_))));
        // A scan without a log: rebuilt, and followed from there.
        let (past, _rx) = logs.subscribe("gone", || {
            vec![v1::ScanEvent {
                scan_id: "gone".into(),
                at_unix_ms: 1,
                event: Some(done()),
            }]
        });
        assert_eq!(past.len(), 1);
        assert!(lock(&logs.logs).finished.iter().any(|id| id == "gone"));
    }
}
