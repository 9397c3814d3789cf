//! Per-scan event logs: what `WatchScan` replays and then follows.
//!
//! A log lives in memory while its scan runs and for a while after; a
//! watcher of a scan whose log is gone (a restart, or evicted) gets the
//! events rebuilt from the scan record instead: the same states, in order.

use std::collections::{HashMap, VecDeque};
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
    order: VecDeque<String>,
}

struct Log {
    events: Vec<v1::ScanEvent>,
    tx: broadcast::Sender<v1::ScanEvent>,
    done: bool,
}

impl Log {
    fn new() -> Log {
        Log {
            events: Vec::new(),
            tx: broadcast::channel(1024).0,
            done: false,
        }
    }
}

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
            logs.evict();
            logs.by_scan.insert(scan_id.to_owned(), Log::new());
            logs.order.push_back(scan_id.to_owned());
        }
        if let Some(log) = logs.by_scan.get_mut(scan_id) {
            if log.events.len() < MAX_EVENTS || done {
                log.events.push(event.clone());
            }
            log.done |= done;
            let _ = log.tx.send(event);
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
            logs.evict();
            let mut log = Log::new();
            log.events = rebuild();
            log.done = log.events.iter().any(|e| matches!(e.event, Some(Event::Done(_))));
            logs.by_scan.insert(scan_id.to_owned(), log);
            logs.order.push_back(scan_id.to_owned());
        }
        let log = &logs.by_scan[scan_id];
        (log.events.clone(), log.tx.subscribe())
    }
}

impl Logs {
    fn evict(&mut self) {
        while self.by_scan.len() >= MAX_LOGS {
            // The oldest finished log goes; if none is finished, the oldest.
            let pos = self
                .order
                .iter()
                .position(|id| self.by_scan.get(id).is_none_or(|l| l.done))
                .unwrap_or(0);
            match self.order.remove(pos) {
                Some(id) => {
                    self.by_scan.remove(&id);
                }
                None => break,
            }
        }
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
