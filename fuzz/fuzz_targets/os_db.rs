//! The OS package databases kept as text, and the release files.
//! First byte picks the file: dpkg `status`, a `status.d/` entry, apk
//! `installed`, or one of the os-release candidates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::{apk::Apk, dpkg::Dpkg, os_release::OsReleaseAnalyzer};
use strata_worker::fuzzing::analyze_file;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 8) else {
        return;
    };
    let _ = match which {
        0 => analyze_file(&Dpkg, "/var/lib/dpkg/status", rest),
        1 => analyze_file(&Dpkg, "/var/lib/dpkg/status.d/libc6", rest),
        2 => analyze_file(&Apk, "/lib/apk/db/installed", rest),
        3 => analyze_file(&OsReleaseAnalyzer, "/etc/os-release", rest),
        4 => analyze_file(&OsReleaseAnalyzer, "/usr/lib/os-release", rest),
        5 => analyze_file(&OsReleaseAnalyzer, "/etc/alpine-release", rest),
        6 => analyze_file(&OsReleaseAnalyzer, "/etc/redhat-release", rest),
        _ => analyze_file(&OsReleaseAnalyzer, "/etc/debian_version", rest),
    };
});
