//! One OSV record (from an import, a feed, a zip entry) through
//! normalisation: ecosystems and releases, ranges checked against the
//! ecosystem's version scheme, CVSS v3/v4 scoring, alias merging and the
//! database's canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The shared allocation cap (a global allocator) is linked by naming the crate.
use strata_coordinator::fuzzing;
use strata_fuzz as _;

fuzz_target!(|data: &[u8]| {
    fuzzing::osv_record(data);
});
