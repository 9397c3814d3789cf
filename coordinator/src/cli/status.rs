//! `strata status`: ask a coordinator's `AdminService` how it is.

use anyhow::Context;
use clap::Args;

use strata_proto::v1;
use strata_worker::queue::Priority;

use super::client::ConnectArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: super::TableOrJson,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    let status = conn
        .call(conn.admin().get_status(conn.request(v1::GetStatusRequest {})))
        .await
        .context("asking the coordinator for its status")?;
    if args.output.json() {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
    } else {
        print!("{}", status_text(&status));
    }
    Ok(super::EXIT_OK)
}

fn nats_state(status: &v1::GetStatusResponse) -> (&'static str, String) {
    let nats = status.nats.clone().unwrap_or_default();
    let state = match nats.state() {
        v1::NatsState::Connected => "connected",
        v1::NatsState::Disconnected => "disconnected",
        v1::NatsState::Connecting => "connecting",
        v1::NatsState::NotConfigured => "not configured (in-process queue)",
        v1::NatsState::Unspecified => "unknown",
    };
    (state, nats.url)
}

fn status_json(status: &v1::GetStatusResponse) -> serde_json::Value {
    let (state, url) = nats_state(status);
    let now = strata_proto::text::now_unix_ms();
    let vulndb = status.vulndb.as_ref().map(|db| {
        serde_json::json!({
            "version": db.version,
            "built": rfc3339(db.built_unix_ms),
            "age_seconds": age_secs(db.built_unix_ms, now),
            "records": db.records,
        })
    });
    let workers: Vec<serde_json::Value> = status
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "worker_id": w.worker_id,
                "hostname": w.hostname,
                "version": w.version,
                "jobs_in_flight": w.jobs_in_flight,
                "jobs_done": w.jobs_done,
                "jobs_failed": w.jobs_failed,
                "last_seen": rfc3339(w.last_seen_unix_ms),
            })
        })
        .collect();
    let queues: Vec<serde_json::Value> = status
        .queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "priority": Priority::from_proto(q.priority).as_str(),
                "pending": q.pending,
                "in_flight": q.in_flight,
            })
        })
        .collect();
    let feeds: Vec<serde_json::Value> = status
        .feeds
        .iter()
        .map(|f| {
            serde_json::json!({
                "url": f.url,
                "last_success": rfc3339(f.last_success_unix_ms),
                "last_attempt": rfc3339(f.last_attempt_unix_ms),
                "last_error": f.last_error,
                "consecutive_failures": f.consecutive_failures,
                "etag": f.etag,
                "last_modified": f.last_modified,
                "next_poll": rfc3339(f.next_poll_unix_ms),
                "records": f.records,
            })
        })
        .collect();
    let coordinators: Vec<serde_json::Value> = status
        .coordinators
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "address": c.address,
                "version": c.version,
                "started": rfc3339(c.started_unix_ms),
                "last_seen": rfc3339(c.last_seen_unix_ms),
                "leases": c.leases,
                "answering": c.answering,
            })
        })
        .collect();
    serde_json::json!({
        "version": status.version,
        "uptime_seconds": status.uptime_seconds,
        "coordinator_id": status.coordinator_id,
        "coordinators": coordinators,
        "nats": { "state": state, "url": url },
        "workers": workers,
        "queues": queues,
        "vulndb": vulndb,
        "layer_cache": status.layer_cache.map(|c| serde_json::json!({
            "layers": c.layers,
            "hits": c.hits,
            "misses": c.misses,
        })),
        "feeds": feeds,
        "gc": status.gc.map(|g| serde_json::json!({
            "last_run": rfc3339(g.last_run_unix_ms),
            "inventories_removed": g.inventories_removed,
            "reports_removed": g.reports_removed,
            "grace_seconds": g.grace_seconds,
        })),
        "events": status.events.map(|e| serde_json::json!({
            "last_sequence": e.last_sequence,
            "kept": e.events,
            "webhooks": e.webhooks,
            "webhook_delivered": e.webhook_delivered,
            "webhook_retries": e.webhook_retries,
            "webhook_dead_letters": e.webhook_dead_letters,
        })),
    })
}

/// A time for people and scripts; `null` for 0 (never).
fn rfc3339(unix_ms: i64) -> Option<String> {
    if unix_ms <= 0 {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

/// Seconds from `unix_ms` to `now`; `null` for 0 (never).
fn age_secs(unix_ms: i64, now: i64) -> Option<i64> {
    (unix_ms > 0).then(|| (now - unix_ms).max(0) / 1000)
}

/// `3 d 4 h`, `5 h 12 min`, `42 s`: an age for people.
fn shown_age(secs: i64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
        s if s >= 3_600 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `-` for never.
fn shown_time(unix_ms: i64) -> String {
    rfc3339(unix_ms).unwrap_or_else(|| "-".to_owned())
}

fn status_text(status: &v1::GetStatusResponse) -> String {
    let (state, url) = nats_state(status);
    let mut out = format!(
        "version   {}\nuptime    {}s\nnats      {state}",
        status.version, status.uptime_seconds
    );
    if !url.is_empty() {
        out.push_str(&format!(" ({url})"));
    }
    let now = strata_proto::text::now_unix_ms();
    if !status.coordinators.is_empty() {
        out.push_str(&format!("\ncoordinators {}\n", status.coordinators.len()));
        out.push_str(&format!(
            "  {:<32} {:<24} {:<10} {:<36} {}\n",
            "ID", "ADDRESS", "VERSION", "LEASES", "LAST SEEN"
        ));
        for c in &status.coordinators {
            let id = strata_proto::text::one_line(&c.id, 30);
            out.push_str(&format!(
                "  {:<32} {:<24} {:<10} {:<36} {}\n",
                if c.answering { format!("{id} *") } else { id },
                strata_proto::text::one_line(&c.address, 24),
                strata_proto::text::one_line(&c.version, 10),
                if c.leases.is_empty() {
                    "-".to_owned()
                } else {
                    strata_proto::text::one_line(&c.leases.join(","), 36)
                },
                age_secs(c.last_seen_unix_ms, now)
                    .map_or("-".to_owned(), |a| format!("{} ago", shown_age(a)))
            ));
        }
        out.push_str("  (* answered this call)\n");
    }
    out.push_str(&format!("\nworkers   {}\n", status.workers.len()));
    if !status.workers.is_empty() {
        out.push_str(&format!(
            "  {:<32} {:<24} {:<10} {:>9} {:>9} {:>7}  {}\n",
            "ID", "HOST", "VERSION", "IN FLIGHT", "DONE", "FAILED", "LAST SEEN"
        ));
        for w in &status.workers {
            out.push_str(&format!(
                "  {:<32} {:<24} {:<10} {:>9} {:>9} {:>7}  {}\n",
                strata_proto::text::one_line(&w.worker_id, 32),
                strata_proto::text::one_line(&w.hostname, 24),
                strata_proto::text::one_line(&w.version, 10),
                w.jobs_in_flight,
                w.jobs_done,
                w.jobs_failed,
                age_secs(w.last_seen_unix_ms, now)
                    .map_or("-".to_owned(), |a| format!("{} ago", shown_age(a)))
            ));
        }
    }
    if !status.queues.is_empty() {
        let lag: Vec<String> = status
            .queues
            .iter()
            .map(|q| {
                format!(
                    "{} {} pending + {} in flight",
                    Priority::from_proto(q.priority).as_str(),
                    q.pending,
                    q.in_flight
                )
            })
            .collect();
        out.push_str(&format!("queues    {}\n", lag.join("; ")));
    }
    if let Some(db) = &status.vulndb {
        out.push_str(&format!(
            "vulndb    {} ({} records, built {}{})\n",
            db.version,
            db.records,
            shown_time(db.built_unix_ms),
            age_secs(db.built_unix_ms, now).map_or(String::new(), |a| format!(", {} old", shown_age(a)))
        ));
    }
    if let Some(c) = &status.layer_cache {
        let asked = c.hits + c.misses;
        out.push_str(&format!(
            "layers    {} analysed; {} hits, {} misses since start{}\n",
            c.layers,
            c.hits,
            c.misses,
            if asked > 0 {
                format!(" ({:.0}% hits)", 100.0 * c.hits as f64 / asked as f64)
            } else {
                String::new()
            }
        ));
    }
    if !status.feeds.is_empty() {
        out.push_str(&format!(
            "feeds\n  {:<60} {:>8} {:<20} {:<20} {:>5}  {}\n",
            "URL", "RECORDS", "LAST SUCCESS", "NEXT POLL", "FAILS", "LAST ERROR"
        ));
        for f in &status.feeds {
            out.push_str(&format!(
                "  {:<60} {:>8} {:<20} {:<20} {:>5}  {}\n",
                f.url,
                f.records,
                shown_time(f.last_success_unix_ms),
                shown_time(f.next_poll_unix_ms),
                f.consecutive_failures,
                strata_proto::text::one_line(&f.last_error, 100)
            ));
        }
    }
    if let Some(g) = &status.gc {
        out.push_str(&format!(
            "gc        {} inventories, {} reports removed since start (grace {} s, last run {})\n",
            g.inventories_removed,
            g.reports_removed,
            g.grace_seconds,
            if g.last_run_unix_ms > 0 {
                shown_time(g.last_run_unix_ms)
            } else {
                "not yet".to_owned()
            }
        ));
    }
    if let Some(e) = &status.events {
        out.push_str(&format!(
            "events    last sequence {}, {} kept\nwebhooks  {}: {} delivered, {} retries, {} dead letters\n",
            e.last_sequence,
            e.events,
            e.webhooks,
            e.webhook_delivered,
            e.webhook_retries,
            e.webhook_dead_letters
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> v1::GetStatusResponse {
        v1::GetStatusResponse {
            version: "0.1.0".into(),
            vulndb: Some(v1::VulnDbInfo {
                version: "osv-0123456789abcdef".into(),
                built_unix_ms: 1_700_000_000_000,
                records: 42,
            }),
            feeds: vec![v1::FeedStatus {
                url: "https://feeds.example/PyPI/all.zip".into(),
                last_success_unix_ms: 1_700_000_000_000,
                last_attempt_unix_ms: 1_700_000_060_000,
                last_error: "HTTP 500 Internal Server Error".into(),
                consecutive_failures: 1,
                etag: "\"v1\"".into(),
                last_modified: String::new(),
                next_poll_unix_ms: 1_700_000_075_000,
                records: 42,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn feeds_and_the_data_in_force_are_printed() {
        let text = status_text(&status());
        assert!(
            text.contains("vulndb    osv-0123456789abcdef (42 records, built 2023-11-14T22:13:20Z, "),
            "{text}"
        );
        let row = text.lines().find(|l| l.contains("feeds.example")).unwrap();
        for part in ["42", "2023-11-14T22:13:20Z", "2023-11-14T22:14:35Z", "HTTP 500"] {
            assert!(row.contains(part), "{part}: {row}");
        }
        let json = status_json(&status());
        assert_eq!(json["vulndb"]["records"], 42);
        assert_eq!(json["feeds"][0]["etag"], "\"v1\"");
        assert_eq!(json["feeds"][0]["consecutive_failures"], 1);
        assert_eq!(json["feeds"][0]["last_success"], "2023-11-14T22:13:20Z");
        assert_eq!(json["feeds"][0]["last_modified"], "");
    }

    #[test]
    fn workers_queues_and_the_layer_cache_are_shown() {
        let now = strata_proto::text::now_unix_ms();
        let status = v1::GetStatusResponse {
            version: "1".into(),
            workers: vec![v1::WorkerInfo {
                worker_id: "worker-a".into(),
                hostname: "node-1".into(),
                version: "0.1.0".into(),
                jobs_in_flight: 3,
                jobs_done: 120,
                jobs_failed: 2,
                last_seen_unix_ms: now - 4_000,
            }],
            queues: vec![
                v1::QueueLag {
                    priority: v1::Priority::Ci.into(),
                    pending: 7,
                    in_flight: 3,
                },
                v1::QueueLag {
                    priority: v1::Priority::Background.into(),
                    pending: 900,
                    in_flight: 0,
                },
            ],
            vulndb: Some(v1::VulnDbInfo {
                version: "v".into(),
                built_unix_ms: now - 2 * 3_600_000 - 60_000,
                records: 1,
            }),
            layer_cache: Some(v1::LayerCacheInfo {
                layers: 50,
                hits: 30,
                misses: 10,
            }),
            ..Default::default()
        };
        let text = status_text(&status);
        let row = text.lines().find(|l| l.contains("worker-a")).unwrap();
        for part in ["node-1", "0.1.0", "3", "120", "2", "s ago"] {
            assert!(row.contains(part), "{part}: {row}");
        }
        assert!(
            text.contains("queues    ci 7 pending + 3 in flight; background 900 pending + 0 in flight\n"),
            "{text}"
        );
        assert!(text.contains(", 2 h 1 min old)"), "{text}");
        assert!(
            text.contains("layers    50 analysed; 30 hits, 10 misses since start (75% hits)\n"),
            "{text}"
        );
        let json = status_json(&status);
        assert_eq!(json["workers"][0]["worker_id"], "worker-a");
        assert_eq!(json["workers"][0]["jobs_in_flight"], 3);
        assert_eq!(json["queues"][1]["priority"], "background");
        assert_eq!(json["queues"][1]["pending"], 900);
        assert_eq!(json["layer_cache"]["hits"], 30);
        assert_eq!(json["vulndb"]["age_seconds"], 7_260);
    }

    #[test]
    fn events_are_shown() {
        let mut status = v1::GetStatusResponse {
            version: "1".into(),
            ..Default::default()
        };
        assert!(!status_text(&status).contains("events"));
        status.events = Some(v1::EventsStatus {
            last_sequence: 42,
            events: 40,
            webhooks: 2,
            webhook_delivered: 30,
            webhook_retries: 3,
            webhook_dead_letters: 1,
        });
        let text = status_text(&status);
        assert!(text.contains("events    last sequence 42, 40 kept\n"), "{text}");
        assert!(
            text.contains("webhooks  2: 30 delivered, 3 retries, 1 dead letters\n"),
            "{text}"
        );
        status.gc = Some(v1::GcStatus {
            last_run_unix_ms: 1_700_000_000_000,
            inventories_removed: 7,
            reports_removed: 2,
            grace_seconds: 604_800,
        });
        let text = status_text(&status);
        assert!(
            text.contains("gc        7 inventories, 2 reports removed since start (grace 604800 s, last run 2023-11-14T22:13:20Z)\n"),
            "{text}"
        );
        let json = status_json(&status);
        assert_eq!(json["gc"]["inventories_removed"], 7);
        assert_eq!(json["events"]["webhook_dead_letters"], 1);
        assert_eq!(json["events"]["last_sequence"], 42);
    }
}
