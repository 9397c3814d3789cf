//! `strata db import|update|status`: the local vulnerability database.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_coordinator::vulndb::{self, Db};

#[derive(Args, Debug)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

/// Where the database lives, shared by every `db` subcommand and `scan`.
#[derive(Args, Debug, Clone)]
pub struct DbPath {
    /// The database file (default: `$XDG_CACHE_HOME/strata/vulndb`, else `~/.cache/strata/vulndb`).
    #[arg(long, env = "STRATA_DB", value_name = "FILE")]
    pub db: Option<PathBuf>,
}

impl DbPath {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.db {
            return Ok(p.clone());
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .context("no --db given and neither XDG_CACHE_HOME nor HOME is set")?;
        Ok(cache.join("strata").join("vulndb"))
    }

    pub fn open(&self) -> anyhow::Result<Db> {
        let path = self.path()?;
        Db::open(&path).with_context(|| {
            format!("opening the vulnerability database {} (build one with `strata db import` or `strata db update`)", path.display())
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Build the database from OSV sources: directories of JSON files, `all.zip`
    /// files, `http(s)://` URLs, `file://` or `s3://` object-store URLs.
    Import {
        #[command(flatten)]
        db: DbPath,
        #[arg(required = true, value_name = "SRC")]
        sources: Vec<String>,
        /// Replace the database even when the import read no record or has
        /// fewer than half its advisories (refused otherwise: a wrong path
        /// must not wipe good data).
        #[arg(long)]
        force: bool,
    },
    /// Fetch osv.dev's public per-ecosystem exports and build the database.
    Update {
        #[command(flatten)]
        db: DbPath,
        /// An OSV ecosystem to fetch (repeatable; default: every ecosystem Strata matches).
        #[arg(long = "feed", value_name = "ECOSYSTEM")]
        feeds: Vec<String>,
        /// As for `import`: replace the database whatever the fetch found.
        #[arg(long)]
        force: bool,
    },
    /// Print the database's version, build time, records per ecosystem and sources.
    Status {
        #[command(flatten)]
        db: DbPath,
        #[command(flatten)]
        output: super::TableOrJson,
    },
}

pub async fn run(args: DbArgs) -> anyhow::Result<u8> {
    match args.command {
        DbCommand::Import { db, sources, force } => {
            let sources = sources
                .iter()
                .map(|s| vulndb::Source::parse(s))
                .collect::<Result<Vec<_>, _>>()?;
            let out = db.path()?;
            ensure_parent(&out)?;
            let summary = vulndb::import_with(&sources, &out, force).await?;
            print_summary(&summary, &out);
        }
        DbCommand::Update { db, feeds, force } => {
            let out = db.path()?;
            ensure_parent(&out)?;
            let feeds = if feeds.is_empty() {
                vulndb::DEFAULT_FEEDS.iter().map(|s| s.to_string()).collect()
            } else {
                feeds
            };
            let summary = vulndb::update(&feeds, &out, force).await?;
            print_summary(&summary, &out);
        }
        DbCommand::Status { db, output } => {
            let status = db.open()?.status();
            if output.json() {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{status}");
            }
        }
    }
    Ok(super::EXIT_OK)
}

fn ensure_parent(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

fn print_summary(summary: &vulndb::ImportSummary, out: &std::path::Path) {
    println!("{summary}");
    println!("database written to {}", out.display());
}
