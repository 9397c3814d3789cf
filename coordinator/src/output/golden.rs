//! Golden-file checks: compare output with `testdata/<name>.golden`, or
//! rewrite the file when `UPDATE_GOLDEN=1` is set.

use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/output/testdata")
        .join(format!("{name}.golden"))
}

/// Panics (this is test code) when `actual` differs from the golden file.
pub fn check(name: &str, actual: &str) {
    let p = path(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&p, actual).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        return;
    }
    let want = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            p.display()
        )
    });
    if want != actual {
        let line = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| want.lines().count().min(actual.lines().count()) + 1);
        panic!(
            "{} differs from the output at line {line} (rerun with UPDATE_GOLDEN=1 if the change is intended)\n--- output ---\n{actual}",
            p.display()
        );
    }
}
