//! The coordinator's background tasks: on start every running scan is
//! dispatched again (jobs re-published under the same message id) before
//! results are read, so nothing submitted before a crash is lost; then the
//! loops run until shutdown. Worker heartbeats and queue lag are followed
//! here; results, dead jobs, retries and the fleet refresh live with what
//! they change.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use super::changes::Followed;
use super::peers::LEASE_HISTORY;
use super::records::ScanStatus;
use super::{Coordinator, CoordinatorError};
use crate::util::lock;

impl Coordinator {
    /// Runs the background loops until `shutdown`: first every unfinished
    /// scan is dispatched again, then results, dead jobs, heartbeats and
    /// queue lag are followed.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        // With other coordinators: the leases and the members first (who
        // looks after which scan decides what is dispatched again), renewed
        // from then on (recovering thousands of scans may outlast a lease),
        // and the change streams' starting points before the buckets are read.
        let mut follow_from = Vec::new();
        if let Some(peers) = self.peers() {
            peers.round().await;
            for which in [Followed::Scans, Followed::Layers, Followed::Images] {
                follow_from.push((which, self.follow_from(which).await));
            }
            tasks.spawn(self.clone().peers_loop(stop_rx.clone()));
        }
        // Retried until every scan was read: a scan not tracked here would
        // never be taken over.
        let mut pause = Duration::from_secs(1);
        while let Err(err) = self.recover().await {
            tracing::warn!(error = %err, retry_secs = pause.as_secs(), "recovering unfinished scans failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => {
                    self.stop_tasks(stop_tx, tasks).await;
                    return;
                }
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
        tokio::spawn({
            let this = self.clone();
            async move {
                this.clone().fleet_warm_up().await;
                if let Err(err) = this.fleet_check_matcher().await {
                    tracing::warn!(error = %err, "checking the matcher revision failed; `strata fleet rematch` re-matches by hand");
                }
                // Changes made while the coordinator was away become events now.
                if let Err(err) = this.fleet_reconcile_all().await {
                    tracing::warn!(error = %err, "recording findings changes at start failed; the next change retries");
                }
            }
        });
        tasks.spawn(self.clone().results_loop(stop_rx.clone()));
        tasks.spawn(self.clone().dead_jobs_loop(stop_rx.clone()));
        tasks.spawn(self.clone().heartbeat_loop(stop_rx.clone()));
        tasks.spawn(self.clone().lag_loop(stop_rx.clone()));
        tasks.spawn(self.clone().retry_loop(stop_rx.clone()));
        tasks.spawn(self.clone().refresh_loop(stop_rx.clone()));
        tasks.spawn(self.clone().gc_loop(stop_rx.clone()));
        for (which, after) in follow_from {
            tasks.spawn(self.clone().follow_bucket(which, after, stop_rx.clone()));
        }
        shutdown.await;
        self.stop_tasks(stop_tx, tasks).await;
    }

    async fn stop_tasks(&self, stop: tokio::sync::watch::Sender<bool>, mut tasks: tokio::task::JoinSet<()>) {
        let _ = stop.send(true);
        // Each loop finishes what it holds (a result batch is acked only
        // after its effects are stored), then returns.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        // Stopping cleanly: the others take the leases and this
        // coordinator's scans now, not when its records expire.
        if let Some(peers) = self.peers() {
            peers.leave().await;
        }
    }

    /// Renews presence and leases every third of the lease time; a lease
    /// gained or a coordinator gone changes what this one does.
    async fn peers_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(peers) = self.peers().cloned() else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(peers.config().renew_every()) => {}
                _ = stop.changed() => return,
            }
            let round = peers.round().await;
            if round.gained.contains(&LEASE_HISTORY) {
                // What another holder recorded is read afresh, then every
                // registered image compared (changes missed meanwhile become
                // events now; the event log drops repeats).
                let this = self.clone();
                tokio::spawn(async move {
                    this.inner.histories.lock().await.reset();
                    if let Err(err) = this.fleet_reconcile_all().await {
                        tracing::warn!(error = %err, "recording findings changes after taking the history lease failed; the next change retries");
                    }
                });
            }
            if round.members_changed {
                let this = self.clone();
                let someone_left = !round.left.is_empty();
                tokio::spawn(async move { this.adopt_scans(someone_left).await });
            }
        }
    }

    async fn recover(&self) -> Result<(), CoordinatorError> {
        let keys = self.inner.buckets.scans.keys().await?;
        let mut resumed = 0;
        for key in keys.iter().filter(|k| k.starts_with("s-")) {
            let Some((scan, _)) = self.load_scan(key).await? else {
                continue;
            };
            if scan.status == ScanStatus::Running {
                // Followed wherever it runs; dispatched again here only if
                // this coordinator looks after it.
                self.track_running(&scan);
                if !self.looks_after(&scan.id) {
                    continue;
                }
                resumed += 1;
                if let Err(err) = self.dispatch_scan(&scan, true).await {
                    tracing::warn!(scan = %scan.id, error = %err, "could not resume scan; retrying");
                    lock(&self.inner.redispatch).insert(scan.id.clone());
                }
            }
        }
        if resumed > 0 {
            tracing::info!(scans = resumed, "resumed unfinished scans");
        }
        Ok(())
    }

    async fn heartbeat_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut beats = match self.inner.queue.heartbeats().await {
                Ok(b) => b,
                Err(err) => {
                    tracing::debug!(error = %err, "heartbeats unavailable");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.changed() => return,
                    }
                }
            };
            loop {
                tokio::select! {
                    beat = beats.next() => match beat {
                        Some(hb) => {
                            let mut workers = lock(&self.inner.workers);
                            // Bounded: forget workers not heard from in an hour.
                            workers.retain(|_, (_, seen)| seen.elapsed() < Duration::from_secs(3600));
                            if workers.len() < 100_000 {
                                workers.insert(hb.worker_id.clone(), (hb, Instant::now()));
                            }
                        }
                        None => break,
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }

    async fn lag_loop(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Ok(lags) = self.inner.queue.lag().await {
                for lag in lags {
                    self.inner
                        .metrics
                        .set_queue_lag(lag.priority.as_str(), lag.pending, lag.in_flight);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
