//! The rpm analyser: `rpmdb.sqlite` (SQLite, read from memory), BerkeleyDB
//! `Packages` (hash pages, overflow chains), NDB `Packages.db`, and the rpm
//! header blobs both hold, directly (deep header paths are hard to reach
//! through a database's own structure).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::rpm::Rpm;
use strata_worker::fuzzing::{analyze_file, rpm_header};

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 4) else {
        return;
    };
    match which {
        0 => {
            analyze_file(&Rpm, "/var/lib/rpm/rpmdb.sqlite", rest);
        }
        1 => {
            analyze_file(&Rpm, "/var/lib/rpm/Packages", rest);
        }
        2 => {
            analyze_file(&Rpm, "/usr/lib/sysimage/rpm/Packages.db", rest);
        }
        _ => {
            rpm_header(rest);
        }
    }
});
