//! `strata status`: ask a coordinator's `AdminService` how it is.

use anyhow::Context;
use clap::Args;

use strata_proto::v1;

use super::client::ConnectArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let conn = args.connect.connect().await?;
    let status = conn
        .call(conn.admin().get_status(conn.request(v1::GetStatusRequest {})))
        .await
        .context("asking the coordinator for its status")?;
    if args.json {
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
    serde_json::json!({
        "version": status.version,
        "uptime_seconds": status.uptime_seconds,
        "nats": { "state": state, "url": url },
        "workers": status.workers.len(),
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

fn status_text(status: &v1::GetStatusResponse) -> String {
    let (state, url) = nats_state(status);
    let mut out = format!(
        "version   {}\nuptime    {}s\nnats      {state}",
        status.version, status.uptime_seconds
    );
    if !url.is_empty() {
        out.push_str(&format!(" ({url})"));
    }
    out.push_str(&format!("\nworkers   {}\n", status.workers.len()));
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
        let json = status_json(&status);
        assert_eq!(json["events"]["webhook_dead_letters"], 1);
        assert_eq!(json["events"]["last_sequence"], 42);
    }
}
