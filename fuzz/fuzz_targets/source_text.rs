//! The small text inputs of image sources: image references (with the
//! `oci-dir:`, `docker-archive:`, `dir:` forms), platforms, and Docker's
//! `config.json` credentials looked up for a registry.
//! First byte: 0 = reference, 1 = platform, 2.. = config.json looked up for
//! one of a few registries (Docker Hub aliases, a host with a port).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{pick, text};
use strata_worker::fuzzing;
use strata_worker::source::{ImageRef, Platform};

const REGISTRIES: &[&str] = &["docker.io", "localhost:5000", "ghcr.io", "registry-1.docker.io"];

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 2 + REGISTRIES.len()) else {
        return;
    };
    match which {
        0 => {
            if let Some(s) = text(rest)
                && let Ok(r) = ImageRef::parse(s)
            {
                let _ = r.to_string();
            }
        }
        1 => {
            if let Some(s) = text(rest)
                && let Ok(p) = Platform::parse(s)
            {
                let _ = p.satisfies(&Platform::linux_amd64());
            }
        }
        n => {
            fuzzing::docker_config(rest, REGISTRIES[n - 2]);
        }
    }
});
