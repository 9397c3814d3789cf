//! Image manifests and indexes (OCI and Docker schema 2) with the checks a
//! resolve applies (platform choice, descriptors), and image configs.
//! First byte: even = a manifest or index, odd = an image config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 2) else {
        return;
    };
    if which == 0 {
        let _ = fuzzing::manifest(rest);
    } else {
        let _ = fuzzing::image_config(rest);
    }
});
