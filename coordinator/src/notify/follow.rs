//! Following the log: everything after a sequence, then what comes live,
//! with nothing skipped and nothing sent twice.
//!
//! The live feed is subscribed to *before* the log is read, and every event
//! carries its sequence, so the two meet without a hole: live events at or
//! below the last one read from the log are dropped. Whenever the live feed
//! cannot be trusted to be complete — the reader lagged behind its buffer,
//! a sequence is missing (a backend's tail reconnected), or it has been
//! quiet for [`IDLE_CHECK`] while the log moved on — the log is read again
//! from the last sequence seen.

use std::time::Duration;

use strata_proto::v1;
use tokio::sync::{broadcast::error::RecvError, mpsc};

use super::{EventFilter, EventLog, NotifyError};

/// Events read from the log at once while catching up: with the channel's
/// capacity, what one follower holds in memory.
const PAGE: usize = 256;
/// A quiet live feed is checked against the log this often.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Sends the events after `after` that `filter` keeps, as `wrap(event)`, to
/// `tx`, in sequence order, then the live ones. Returns when the receiver
/// is gone or the log is closed ([`EventLog::close`]); an error when the log
/// cannot be read (the caller tells its client, which resumes later).
pub async fn follow<T>(
    log: &EventLog,
    after: u64,
    filter: &EventFilter,
    tx: &mpsc::Sender<T>,
    wrap: impl Fn(v1::FleetEvent) -> T,
) -> Result<(), NotifyError> {
    let mut live = log.subscribe();
    let mut cursor = after;
    let send = |e: v1::FleetEvent| {
        let item = wrap(e);
        async move {
            tokio::select! {
                sent = tx.send(item) => sent.is_ok(),
                () = log.closed() => false,
            }
        }
    };
    'catch_up: loop {
        if log.is_closed() || tx.is_closed() {
            return Ok(());
        }
        loop {
            let page = log.after(cursor, PAGE).await?;
            if page.is_empty() {
                break;
            }
            for e in page {
                cursor = cursor.max(e.sequence);
                if filter.matches(&e) && !send(e).await {
                    return Ok(());
                }
            }
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = tokio::time::sleep(IDLE_CHECK) => {
                    if log.last_sequence().await? > cursor {
                        continue 'catch_up;
                    }
                    continue;
                }
                () = log.closed() => return Ok(()),
                () = tx.closed() => return Ok(()),
            };
            match next {
                Ok(e) if e.sequence <= cursor => {}
                Ok(e) if e.sequence == cursor + 1 => {
                    cursor = e.sequence;
                    if filter.matches(&e) && !send(e).await {
                        return Ok(());
                    }
                }
                // A hole, or events dropped for this reader: the log has them.
                Ok(_) | Err(RecvError::Lagged(_)) => continue 'catch_up,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> v1::FleetEvent {
        v1::FleetEvent {
            kind: v1::EventKind::FindingNew.into(),
            severity: if i.is_multiple_of(2) {
                v1::Severity::High
            } else {
                v1::Severity::Low
            }
            .into(),
            image_reference: "r/a:1".into(),
            vulnerability_id: format!("V-{i}"),
            ..Default::default()
        }
    }

    /// A reader far slower than the publisher lags behind the live buffer
    /// (4096) many times over, and still gets every event once, in order.
    #[tokio::test]
    async fn a_slow_reader_misses_nothing() {
        let log = EventLog::memory();
        log.publish((0..100).map(event).collect()).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let reader = tokio::spawn({
            let log = log.clone();
            async move { follow(&log, 50, &EventFilter::default(), &tx, |e| e).await }
        });
        // The follower is subscribed once it has sent its first event.
        let first = rx.recv().await.unwrap();
        assert_eq!(first.sequence, 51);
        for chunk in 0..5 {
            let events = (100 + chunk * 2000..100 + (chunk + 1) * 2000)
                .map(event)
                .collect();
            log.publish(events).await.unwrap();
        }
        let mut seen = vec![first.sequence];
        while seen.len() < 10_050 {
            let e = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(e.sequence);
        }
        assert_eq!(seen, (51..=10_100).collect::<Vec<u64>>());
        log.close();
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn filtered_and_ends_when_the_receiver_goes() {
        let log = EventLog::memory();
        log.publish((0..10).map(event).collect()).await.unwrap();
        let filter = EventFilter::new(Some(strata_proto::Severity::High), vec![], &[]).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn({
            let log = log.clone();
            async move { follow(&log, 0, &filter, &tx, |e| e.sequence).await }
        });
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, [1, 3, 5, 7, 9]);
        log.publish(vec![event(10), event(11), event(12)]).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), 11);
        assert_eq!(rx.recv().await.unwrap(), 13);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
