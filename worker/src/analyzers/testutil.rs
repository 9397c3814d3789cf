//! Test helpers shared by the analysers' unit tests.

use strata_proto::Evidence;

use super::{Analysis, Analyzer, LayerFile};

/// A file of the shared real-world fixtures (`shared/testdata/pkgdb/`).
pub(crate) fn fixture(rel: &str) -> Vec<u8> {
    let path = format!("{}/../../shared/testdata/pkgdb/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A file of an analyser's own `testdata/` (`rel` from `src/analyzers/`).
pub(crate) fn local(rel: &str) -> Vec<u8> {
    let path = format!("{}/src/analyzers/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// name, version, purl, evidence of every package, in order.
pub(crate) fn rows(a: &Analysis) -> Vec<(&str, &str, &str, Evidence)> {
    a.packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.purl.as_str(), p.evidence))
        .collect()
}

/// `a` run on one layer's `(path, data)` files; an error fails the test.
pub(crate) fn run(a: &dyn Analyzer, files: &[(&str, &[u8])]) -> Analysis {
    let layer: Vec<LayerFile<'_>> = files
        .iter()
        .map(|(path, data)| LayerFile { path, data })
        .collect();
    a.analyze(&layer).unwrap_or_else(|e| panic!("{e}"))
}

/// `a` wants every path of `yes` and none of `no`.
pub(crate) fn assert_wants(a: &dyn Analyzer, yes: &[&str], no: &[&str]) {
    for p in yes {
        assert!(a.wants(p), "{} should want {p}", a.name());
    }
    for p in no {
        assert!(!a.wants(p), "{} should not want {p}", a.name());
    }
}
