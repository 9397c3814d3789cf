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
    out
}
