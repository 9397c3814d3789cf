//! Package URLs as SBOMs and VEX documents give them: parsed (any
//! ecosystem, qualifiers, subpath), and canonical: written again they are
//! the same bytes, and parse to the same purl.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{pick, text};
use strata_proto::purl::Purl;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 2) else {
        return;
    };
    let Some(s) = text(rest) else { return };
    let parsed = if which == 0 {
        Purl::parse(s)
    } else {
        Purl::parse_installed(s)
    };
    let Ok(p) = parsed else { return };
    let again = Purl::parse(p.as_str())
        .unwrap_or_else(|e| panic!("{:?} written as {:?} does not parse: {e}", s, p.as_str()));
    assert_eq!(again.as_str(), p.as_str(), "purl is not canonical");
    let _ = (p.ecosystem(), p.namespace(), p.name(), p.version(), p.subpath());
    for target in strata_proto::Ecosystem::ALL {
        let _ = p.for_distro(*target);
    }
});
