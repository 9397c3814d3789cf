//! A `docker save` tarball: the header walk that indexes it, its
//! `manifest.json`, links followed inside it, the config and layer lookup.
//! First byte: even = no tag, odd = pick by the tag `latest`. The rest is
//! the tarball, written to a file because the source reads files in place.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::fuzzing;

/// One file per process, rewritten for every input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("strata-fuzz-docker-archive-{}.tar", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 2) else {
        return;
    };
    let path = scratch();
    if std::fs::write(path, rest).is_err() {
        return;
    }
    let tag = (which == 1).then(|| "latest".to_owned());
    let _ = fuzzing::docker_archive(path, tag);
});
