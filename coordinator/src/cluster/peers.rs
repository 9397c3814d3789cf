//! Several coordinators on one NATS, all active: each says it is alive,
//! singleton work runs under leases, and every running scan has one
//! coordinator looking after it.
//!
//! - **Presence**: every coordinator writes `member.<id>` in the bucket
//!   `strata_coordinators` every third of the lease time. The bucket's
//!   entries expire (`max_age` = the lease time, by the NATS server's
//!   clock), so a coordinator killed with `-9` drops out by itself.
//! - **Leases** (`lease.<name>`): taken with a create-if-absent, renewed
//!   with a compare-and-set on the revision the holder last wrote. A
//!   holder that cannot renew for two thirds of the lease time gives its
//!   leases up locally (it says so) before the entry expires, so two
//!   coordinators never believe they hold one lease at once unless a
//!   renewal stalls past that margin; the work under a lease is checked
//!   per round (a refresh pass, a feed round, a collection), so an overlap
//!   is at most one round, and each such round is safe to repeat.
//! - **Who looks after a scan**: rendezvous hashing of the scan id over the
//!   live coordinators. Every coordinator follows every scan record (the
//!   change stream, `changes.rs`) but only the one the hash picks refreshes
//!   and finalizes it; when a coordinator leaves, each survivor takes the
//!   scans the hash now gives it and dispatches them again (jobs are
//!   re-published under the same message ids: no layer is queued twice).
//!   Two coordinators that briefly disagree on the members both refresh a
//!   scan: every write is a compare-and-set, so that costs work, not
//!   correctness.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::kv::{Cas, Kv, KvError};
use crate::util::lock;
use strata_proto::text::now_unix_ms;

/// The bucket of presence records and leases.
pub const COORDINATORS_BUCKET: &str = "strata_coordinators";

/// The refresh loop: registered images re-resolved, watched repositories re-listed.
pub const LEASE_REFRESH: &str = "refresh";
/// Advisory feeds polled (the others load what the holder stores).
pub const LEASE_FEEDS: &str = "feeds";
/// Reports and inventories nothing references removed.
pub const LEASE_GC: &str = "gc";
/// Registered images' findings histories compared and fleet events told.
pub const LEASE_HISTORY: &str = "history";
/// Fleet events POSTed to the configured webhooks (cursors are shared).
pub const LEASE_WEBHOOKS: &str = "webhooks";
/// Every lease, in the order they are taken.
pub const LEASES: [&str; 5] = [
    LEASE_REFRESH,
    LEASE_FEEDS,
    LEASE_GC,
    LEASE_HISTORY,
    LEASE_WEBHOOKS,
];

/// How a coordinator takes part.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Unique among the cluster's coordinators (a pod name, a host name).
    pub id: String,
    /// The gRPC address others and `strata status` show.
    pub address: String,
    /// How long a presence record or lease lasts without renewal.
    pub ttl: Duration,
}

impl PeerConfig {
    /// How often presence and leases are renewed.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(200))
    }
}

/// A coordinator's presence record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub version: String,
    pub started_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// The leases it held when it wrote this.
    #[serde(default)]
    pub leases: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct LeaseRecord {
    holder: String,
    renewed_unix_ms: i64,
}

/// What one renewal round changed.
#[derive(Debug, Default)]
pub struct Round {
    pub gained: Vec<&'static str>,
    pub lost: Vec<&'static str>,
    /// The set of live coordinators differs from the last round's.
    pub members_changed: bool,
    /// Coordinators gone since the last round.
    pub left: Vec<String>,
}

/// This coordinator's view of its peers. Shared (`Arc`) by the coordinator.
pub struct Peers {
    config: PeerConfig,
    kv: Kv,
    started_unix_ms: i64,
    state: Mutex<State>,
    /// Set once the first round is over (leases and members known).
    rounds: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Live coordinators (this one included once it has written), by id.
    members: Vec<Member>,
    /// Leases held, with the revision last written.
    held: BTreeMap<&'static str, u64>,
    /// When presence was last written.
    renewed: Option<Instant>,
}

impl Peers {
    /// Opens the bucket (creating it with `config.ttl` as its expiry).
    pub async fn open(
        js: &async_nats::jetstream::Context,
        mut config: PeerConfig,
        replicas: usize,
    ) -> Result<Peers, KvError> {
        let (kv, ttl) = Kv::nats_expiring(js, COORDINATORS_BUCKET, replicas, config.ttl).await?;
        // The bucket's expiry is the lease time, whatever this one was told:
        // renewing on another schedule would let leases lapse between renewals.
        config.ttl = ttl;
        Ok(Peers::with_kv(kv, config))
    }

    /// Over any bucket (tests use a local one).
    pub fn with_kv(kv: Kv, config: PeerConfig) -> Peers {
        Peers {
            config,
            kv,
            started_unix_ms: now_unix_ms(),
            state: Mutex::new(State::default()),
            rounds: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Returns once the first round is over (whatever it came to).
    pub async fn first_round(&self) {
        let mut rx = self.rounds.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Whether this coordinator holds `lease` now.
    pub fn holds(&self, lease: &str) -> bool {
        lock(&self.state).held.contains_key(lease)
    }

    /// The leases held now.
    pub fn held(&self) -> Vec<String> {
        lock(&self.state).held.keys().map(|l| (*l).to_owned()).collect()
    }

    /// The live coordinators as of the last round, by id.
    pub fn members(&self) -> Vec<Member> {
        lock(&self.state).members.clone()
    }

    /// Whether this coordinator looks after `scan_id`: the live member
    /// with the highest hash of (member, scan) does. Alone (or before the
    /// first round), it looks after every scan.
    pub fn responsible(&self, scan_id: &str) -> bool {
        let state = lock(&self.state);
        responsible_among(
            state.members.iter().map(|m| m.id.as_str()),
            &self.config.id,
            scan_id,
        )
    }

    /// One renewal round: leases taken or renewed, presence written, the
    /// members read back. On an error the round stops; leases not renewed
    /// within two thirds of the lease time are given up (returned as lost).
    pub async fn round(&self) -> Round {
        let mut round = Round::default();
        let outcome = self.try_round(&mut round).await;
        self.rounds.send_replace(true);
        match outcome {
            Ok(()) => {}
            Err(err) => {
                let renewed = lock(&self.state).renewed;
                let silent = renewed.map_or(Duration::MAX, |at| at.elapsed());
                tracing::warn!(error = %err, silent_secs = silent.as_secs_f64().min(1e9), "cannot reach the coordinators' bucket");
                if silent >= self.config.ttl * 2 / 3 {
                    let lost: Vec<&'static str> =
                        std::mem::take(&mut lock(&self.state).held).into_keys().collect();
                    if !lost.is_empty() {
                        tracing::warn!(
                            leases = %lost.join(","),
                            "lost contact with NATS: giving up my leases (another coordinator takes them); I take none until NATS is back"
                        );
                        round.lost.extend(lost);
                    }
                }
            }
        }
        round
    }

    async fn try_round(&self, round: &mut Round) -> Result<(), KvError> {
        for lease in LEASES {
            self.take_or_renew(lease, round).await?;
        }
        let me = Member {
            id: self.config.id.clone(),
            address: self.config.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix_ms: self.started_unix_ms,
            last_seen_unix_ms: now_unix_ms(),
            leases: self.held(),
        };
        if let Some(entry) = self.kv.get(&member_key(&self.config.id)).await?
            && let Ok(other) = serde_json::from_slice::<Member>(&entry.value)
            && other.started_unix_ms != self.started_unix_ms
            && lock(&self.state).renewed.is_some()
        {
            tracing::warn!(
                id = %self.config.id,
                "another coordinator runs with this --coordinator-id: give each its own, or they take each other's leases"
            );
        }
        let json = serde_json::to_vec(&me).unwrap_or_default();
        self.kv.put(&member_key(&self.config.id), json.into()).await?;
        lock(&self.state).renewed = Some(Instant::now());
        let mut members = Vec::new();
        for key in self.kv.keys().await? {
            if !key.starts_with("member.") {
                continue;
            }
            let Some(entry) = self.kv.get(&key).await? else {
                continue;
            };
            match serde_json::from_slice::<Member>(&entry.value) {
                Ok(m) => members.push(m),
                Err(err) => tracing::debug!(key, error = %err, "unreadable presence record"),
            }
        }
        if !members.iter().any(|m| m.id == me.id) {
            members.push(me);
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let mut state = lock(&self.state);
        // A member is its id and when it started: one restarted under the
        // same id (a pod name) within the lease time left and came back,
        // and what it was doing when it died must be taken over.
        let ids = |ms: &[Member]| {
            ms.iter()
                .map(|m| (m.id.clone(), m.started_unix_ms))
                .collect::<Vec<_>>()
        };
        round.members_changed = ids(&state.members) != ids(&members);
        round.left = state
            .members
            .iter()
            .filter(|old| {
                !members
                    .iter()
                    .any(|m| m.id == old.id && m.started_unix_ms == old.started_unix_ms)
            })
            .map(|old| old.id.clone())
            .collect();
        if round.members_changed {
            let shown: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
            tracing::info!(coordinators = %shown.join(","), left = %round.left.join(","), "coordinators changed");
        }
        state.members = members;
        Ok(())
    }

    async fn take_or_renew(&self, lease: &'static str, round: &mut Round) -> Result<(), KvError> {
        let key = lease_key(lease);
        let record = LeaseRecord {
            holder: self.config.id.clone(),
            renewed_unix_ms: now_unix_ms(),
        };
        let value: bytes::Bytes = serde_json::to_vec(&record).unwrap_or_default().into();
        let held = lock(&self.state).held.get(lease).copied();
        let written = match held {
            Some(revision) => match self.kv.update(&key, value, revision).await? {
                Cas::Written(rev) => Some(rev),
                Cas::Conflict => {
                    // Expired (this coordinator stalled) and taken by another.
                    lock(&self.state).held.remove(lease);
                    tracing::warn!(lease, "lost the lease to another coordinator");
                    round.lost.push(lease);
                    None
                }
            },
            None => match self.kv.create(&key, value.clone()).await? {
                Cas::Written(rev) => Some(rev),
                Cas::Conflict => {
                    // Ours from before a restart under the same id: take it back.
                    match self.kv.get(&key).await? {
                        Some(entry)
                            if serde_json::from_slice::<LeaseRecord>(&entry.value)
                                .is_ok_and(|r| r.holder == self.config.id) =>
                        {
                            match self.kv.update(&key, value, entry.revision).await? {
                                Cas::Written(rev) => Some(rev),
                                Cas::Conflict => None,
                            }
                        }
                        _ => None,
                    }
                }
            },
        };
        if let Some(rev) = written {
            let newly = lock(&self.state).held.insert(lease, rev).is_none();
            if newly {
                tracing::info!(lease, "took the lease");
                round.gained.push(lease);
            }
        }
        Ok(())
    }

    /// Gives up every lease (a clean shutdown: the others need not wait
    /// for them to expire) and removes the presence record.
    pub async fn leave(&self) {
        let held = std::mem::take(&mut lock(&self.state).held);
        for (lease, revision) in held {
            // At the revision last written: a lease taken by another since
            // (this one stalled) stays theirs.
            let _ = self.kv.delete_at(&lease_key(lease), revision).await;
        }
        let _ = self.kv.delete(&member_key(&self.config.id)).await;
    }

    /// Every lease's holder as stored now (for status), by lease name.
    pub async fn lease_holders(&self) -> Result<BTreeMap<String, String>, KvError> {
        let mut out = BTreeMap::new();
        for lease in LEASES {
            if let Some(entry) = self.kv.get(&lease_key(lease)).await?
                && let Ok(record) = serde_json::from_slice::<LeaseRecord>(&entry.value)
            {
                out.insert(lease.to_owned(), record.holder);
            }
        }
        Ok(out)
    }
}

fn member_key(id: &str) -> String {
    format!("member.{id}")
}

fn lease_key(lease: &str) -> String {
    format!("lease.{lease}")
}

/// A coordinator id as a key-value key allows (letters, digits, `-`, `_`;
/// anything else becomes `_`), at most 64 characters.
pub fn sanitize_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "coordinator".to_owned()
    } else {
        cleaned
    }
}

/// The member that looks after `scan_id` among `members` (rendezvous
/// hashing, as [`Peers::responsible`]); `None` for no members. Public for
/// benchmarks and tools that tell which coordinator owns a scan.
pub fn owner_of<'a>(members: &[&'a str], scan_id: &str) -> Option<&'a str> {
    members
        .iter()
        .copied()
        .find(|m| responsible_among(members.iter().copied(), m, scan_id))
}

/// Rendezvous hashing: `me` looks after `scan_id` when no member's hash
/// beats its own. An empty member list (no round yet) means alone.
fn responsible_among<'a>(members: impl Iterator<Item = &'a str>, me: &str, scan_id: &str) -> bool {
    let score = |member: &str| {
        let mut h = sha2::Sha256::new();
        h.update(member.as_bytes());
        h.update([0]);
        h.update(scan_id.as_bytes());
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    let mine = score(me);
    members.filter(|m| *m != me).all(|m| (score(m), m) < (mine, me))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scan_has_exactly_one_coordinator_and_the_split_is_even() {
        let members = ["coordinator-0", "coordinator-1", "coordinator-2"];
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let scan = format!("s-{i}");
            let owners: Vec<usize> = (0..3)
                .filter(|&m| responsible_among(members.iter().copied(), members[m], &scan))
                .collect();
            assert_eq!(owners.len(), 1, "{scan}: {owners:?}");
            counts[owners[0]] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn when_a_member_leaves_only_its_scans_move() {
        let before = ["a", "b", "c"];
        let after = ["a", "c"];
        for i in 0..500 {
            let scan = format!("s-{i}");
            for me in ["a", "c"] {
                let was = responsible_among(before.iter().copied(), me, &scan);
                let is = responsible_among(after.iter().copied(), me, &scan);
                // Nothing a survivor had moves to the other survivor.
                if was {
                    assert!(is, "{scan} left {me}");
                }
            }
        }
    }

    #[test]
    fn the_owner_is_the_one_member_responsible() {
        let members = ["a", "b", "c"];
        for i in 0..100 {
            let scan = format!("s-{i}");
            let owner = owner_of(&members, &scan).unwrap();
            assert!(responsible_among(members.iter().copied(), owner, &scan));
        }
        assert_eq!(owner_of(&[], "s-1"), None);
    }

    #[test]
    fn alone_or_before_the_first_round_every_scan_is_mine() {
        assert!(responsible_among(std::iter::empty(), "a", "s-1"));
        assert!(responsible_among(["a"].into_iter(), "a", "s-1"));
    }

    #[test]
    fn ids_become_valid_keys() {
        assert_eq!(
            sanitize_id("strata-coordinator-7d9f/x.y"),
            "strata-coordinator-7d9f_x_y"
        );
        assert_eq!(sanitize_id(""), "coordinator");
        assert_eq!(sanitize_id(&"a".repeat(100)).len(), 64);
    }

    #[tokio::test]
    async fn leases_go_to_one_coordinator_and_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::kv::open_local_db(&dir.path().join("kv.redb")).unwrap();
        let kv = Kv::Local(super::super::kv::LocalKv::new(db, COORDINATORS_BUCKET));
        let config = |id: &str| PeerConfig {
            id: id.to_owned(),
            address: "127.0.0.1:1".to_owned(),
            ttl: Duration::from_secs(10),
        };
        let a = Peers::with_kv(kv.clone(), config("a"));
        let b = Peers::with_kv(kv.clone(), config("b"));
        let ra = a.round().await;
        let rb = b.round().await;
        assert_eq!(ra.gained.len(), LEASES.len());
        assert!(rb.gained.is_empty());
        assert!(LEASES.iter().all(|l| a.holds(l) && !b.holds(l)));
        // Renewals keep them where they are.
        assert!(a.round().await.gained.is_empty());
        assert!(b.round().await.gained.is_empty());
        assert_eq!(b.members().len(), 2);
        // `a` restarts under the same id: its leases are its again, and
        // `b` sees that `a` left and came back (what `a` was doing when it
        // died is `b`'s to take over).
        tokio::time::sleep(Duration::from_millis(5)).await;
        let a2 = Peers::with_kv(kv.clone(), config("a"));
        assert_eq!(a2.round().await.gained.len(), LEASES.len());
        let rb = b.round().await;
        assert!(rb.members_changed);
        assert_eq!(rb.left, ["a"]);
        // `a` leaves cleanly: `b` takes them at its next round.
        a2.leave().await;
        assert_eq!(b.round().await.gained.len(), LEASES.len());
        assert_eq!(
            b.lease_holders()
                .await
                .unwrap()
                .get("refresh")
                .map(String::as_str),
            Some("b")
        );
    }
}
