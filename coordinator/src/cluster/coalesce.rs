//! [`Coalescer`]: concurrent identical lookups share one request — but
//! only a request sent after they arrived, so nobody gets an answer older
//! than their own call. Used for the manifest `HEAD` of `SubmitImage`: a
//! hundred CI jobs submitting the same tag cost two registry requests, not
//! a hundred, and a tag pushed just before a submit is still seen.
//!
//! While a lookup for a key runs, callers for that key queue up; when it
//! ends, the first of them leads one new lookup for the whole queue. A
//! leader that goes away (its caller's future dropped) hands the queue on
//! the same way, so nobody waits on a lookup that no one runs. Written by
//! hand: the "singleflight" crates share a lookup already in flight, which
//! would answer a caller with data from before its call.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

enum Msg<V> {
    /// The answer of the lookup this caller waited for.
    Value(V),
    /// Run the lookup for these callers (and yourself).
    Lead(Vec<oneshot::Sender<Msg<V>>>),
}

/// Callers waiting for the next lookup of each key being looked up now.
pub struct Coalescer<K, V> {
    waiting: Mutex<HashMap<K, Vec<oneshot::Sender<Msg<V>>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Coalescer<K, V> {
    fn default() -> Self {
        Coalescer {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Coalescer<K, V> {
    /// `lookup()`'s answer, from a call of it that started after this one.
    pub async fn run<F, Fut>(&self, key: K, lookup: F) -> V
    where
        F: Fn() -> Fut,
        Fut: Future<Output = V>,
    {
        let queued = {
            let mut waiting = self.lock();
            match waiting.get_mut(&key) {
                Some(queue) => {
                    let (tx, rx) = oneshot::channel();
                    queue.push(tx);
                    Some(rx)
                }
                None => {
                    waiting.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        let mut followers = Vec::new();
        if let Some(rx) = queued {
            match rx.await {
                Ok(Msg::Value(v)) => return v,
                Ok(Msg::Lead(queue)) => followers = queue,
                // Our leader went away holding us: look up alone.
                Err(_) => return lookup().await,
            }
        }
        let hand_off = HandOff { coalescer: self, key };
        let value = lookup().await;
        for tx in followers {
            let _ = tx.send(Msg::Value(value.clone()));
        }
        drop(hand_off);
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Vec<oneshot::Sender<Msg<V>>>>> {
        crate::util::lock(&self.waiting)
    }
}

/// Passes the queue that gathered during a lookup to its first live caller
/// (or forgets the key), when the lookup ends or is dropped.
struct HandOff<'a, K: Hash + Eq + Clone, V: Clone> {
    coalescer: &'a Coalescer<K, V>,
    key: K,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for HandOff<'_, K, V> {
    fn drop(&mut self) {
        let mut waiting = self.coalescer.lock();
        let mut queue = waiting.get_mut(&self.key).map(std::mem::take).unwrap_or_default();
        loop {
            if queue.is_empty() {
                waiting.remove(&self.key);
                return;
            }
            let first = queue.remove(0);
            match first.send(Msg::Lead(queue)) {
                Ok(()) => return, // the key stays: its new leader runs
                Err(Msg::Lead(back)) => queue = back,
                Err(Msg::Value(_)) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A lookup that takes 50 ms and answers how many lookups had started.
    fn counting(calls: Arc<AtomicU64>) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> {
        move || {
            let calls = calls.clone();
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                n
            })
        }
    }

    #[tokio::test]
    async fn a_crowd_shares_two_lookups_and_each_answer_is_newer_than_its_call() {
        let c = Arc::new(Coalescer::<&str, u64>::default());
        let calls = Arc::new(AtomicU64::new(0));
        let first = {
            let (c, f) = (c.clone(), counting(calls.clone()));
            tokio::spawn(async move { c.run("tag", f).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // 50 callers arrive while the first lookup runs.
        let crowd: Vec<_> = (0..50)
            .map(|_| {
                let (c, f) = (c.clone(), counting(calls.clone()));
                tokio::spawn(async move { c.run("tag", f).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 1);
        for t in crowd {
            // Not the lookup that was already running when they called.
            assert_eq!(t.await.unwrap(), 2);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Afterwards a caller looks up afresh.
        assert_eq!(c.run("tag", counting(calls.clone())).await, 3);
        // Other keys are not held up.
        assert_eq!(c.run("other", counting(calls.clone())).await, 4);
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_hands_the_queue_on() {
        let c = Arc::new(Coalescer::<&str, u64>::default());
        let calls = Arc::new(AtomicU64::new(0));
        let leader = {
            let (c, f) = (c.clone(), counting(calls.clone()));
            tokio::spawn(async move { c.run("tag", f).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = {
            let (c, f) = (c.clone(), counting(calls.clone()));
            tokio::spawn(async move { c.run("tag", f).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower was not left waiting")
            .unwrap();
        assert_eq!(got, 2);
        assert!(c.lock().is_empty(), "nothing left behind");
    }
}
