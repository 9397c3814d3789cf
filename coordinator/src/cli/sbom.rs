//! `strata sbom IMAGE`: the image's packages, layer by layer composed.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use strata_coordinator::output::{self, ImageSbom, SbomFormat};

use super::image::ImageArgs;

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// The image: a registry reference (`alpine:3.19`, `ghcr.io/o/r@sha256:…`),
    /// `oci-dir:PATH[:TAG]`, `docker-archive:PATH[:TAG]`, or `dir:PATH` (a root filesystem).
    pub image: String,
    #[command(flatten)]
    pub options: ImageArgs,
    /// Output format: table, json (strata.inventory/v1), cyclonedx (1.5 JSON), spdx (2.3 JSON).
    #[arg(long, short = 'f', default_value = "table")]
    pub format: SbomFormat,
}

pub async fn run(args: SbomArgs) -> anyhow::Result<u8> {
    let analysis = args.options.analyze(&args.image).await?;
    let sbom = ImageSbom {
        image_name: analysis.reference.clone(),
        image_digest: analysis.digest.clone(),
        os_release: analysis.inventory.os_release.clone(),
        packages: analysis.inventory.packages.clone(),
        created_unix_ms: super::now_unix_ms(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    output::write_sbom(&mut out, args.format, &sbom)?;
    out.flush().context("writing to stdout")?;
    Ok(super::EXIT_OK)
}
