//! Packagist ordering: the vectors beside this file (composer/semver's
//! `VersionParserTest` and `ComparatorTest`, osv.dev, PHP's documented order).

use std::cmp::Ordering;

use super::*;
use crate::versions::vectors::{check_rows, local_rows};
use crate::versions::{compare, parse};

#[test]
fn vectors() {
    let rows = local_rows("composer/vectors.tsv");
    let mut failures = Vec::new();
    let (mut norms, mut invalids) = (0, 0);
    let mut pairs = Vec::new();
    for r in rows {
        match r[0].as_str() {
            "norm" => {
                norms += 1;
                let got = normalize(&r[1]);
                if got.as_deref() != Some(r[2].as_str()) {
                    failures.push(format!("normalize({:?}) = {got:?}, want {:?}", r[1], r[2]));
                }
                if parse(Scheme::Composer, &r[1]).is_err() {
                    failures.push(format!("{:?} does not parse", r[1]));
                }
            }
            "invalid" => {
                invalids += 1;
                if let Some(n) = normalize(&r[1]) {
                    failures.push(format!("normalize({:?}) = {n:?}, want an error", r[1]));
                }
            }
            _ => pairs.push(r),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let n = check_rows("composer/vectors.tsv", &pairs, |a, b| {
        compare(Scheme::Composer, a, b)
    });
    assert!(norms >= 60 && invalids >= 15 && n >= 30, "{norms} {invalids} {n}");
}

#[test]
fn php_version_compare_rules() {
    let c = |a: &str, b: &str| compare(Scheme::Composer, a, b).unwrap();
    // A longer version wins by a number, loses by a lower word.
    assert_eq!(c("1.0.0.1", "1.0.0"), Ordering::Greater);
    assert_eq!(c("1.0.0-beta", "1.0.0"), Ordering::Less);
    assert_eq!(c("1.0.0-patch1", "1.0.0"), Ordering::Greater);
    // Branches sit below every numbered version and order by name.
    assert_eq!(c("dev-main", "0.0.0-dev"), Ordering::Less);
    assert_eq!(c("dev-bar", "dev-foo"), Ordering::Less);
    assert_eq!(c("dev-foo", "dev-foo"), Ordering::Equal);
    assert_eq!(canonicalize(b"1.0.0.0-RC1-dev"), b"1.0.0.0.RC.1.dev");
    assert_eq!(canonicalize(b"1..2__3"), b"1.2.3");
    assert!(parse(Scheme::Composer, "").is_err());
    assert!(parse(Scheme::Composer, "1.0\u{7}").is_err());
}
