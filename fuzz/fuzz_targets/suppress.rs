//! Suppressions: ignore files (TOML) and OpenVEX documents (JSON), and the
//! purl patterns VEX statements match products with.
//! First byte: 0 = ignore file, 1 = OpenVEX, 2 = `pattern\npurl`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_coordinator::suppress::{Suppressions, ignore, openvex};
use strata_fuzz::{pick, text};

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 3) else {
        return;
    };
    let Some(s) = text(rest) else { return };
    match which {
        0 => {
            let _ = ignore::parse("fuzz.toml", s);
            let _ = Suppressions::default().add_ignore_toml("fuzz.toml", s);
        }
        1 => {
            let _ = openvex::parse("fuzz.json", s);
            let _ = Suppressions::default().add_openvex_json("fuzz.json", s);
        }
        _ => {
            let (pattern, purl) = s.split_once('\n').unwrap_or((s, "pkg:npm/a@1"));
            let _ = openvex::purl_matches(pattern, purl);
        }
    }
});
