//! Maven ordering: the vectors beside this file (osv.dev's `maven_test.py`
//! and real pairs) and the cases this module always pinned.

use std::cmp::Ordering;

use super::*;
use crate::versions::vectors::{check_rows, local_rows};
use crate::versions::{compare, parse};

fn c(a: &str, b: &str) -> Ordering {
    compare(Scheme::Maven, a, b).unwrap()
}

fn increasing(list: &[&str]) {
    for w in list.windows(2) {
        assert_eq!(c(w[0], w[1]), Ordering::Less, "{w:?}");
        assert_eq!(c(w[1], w[0]), Ordering::Greater, "{w:?}");
    }
}

fn equal(list: &[&str]) {
    for a in list {
        for b in list {
            assert_eq!(c(a, b), Ordering::Equal, "{a} vs {b}");
        }
    }
}

#[test]
fn vectors() {
    let n = check_rows("maven/vectors.tsv", &local_rows("maven/vectors.tsv"), |a, b| {
        compare(Scheme::Maven, a, b)
    });
    assert!(n >= 750, "{n}");
}

/// What the trimmed token lists look like, as osv.dev's `test_normalize`
/// prints them.
#[test]
fn tokens_as_osv_prints_them() {
    fn show(v: &str) -> String {
        let mut out = String::new();
        for t in tokenize(v) {
            out.push_str(match t.sep {
                Sep::None => "",
                Sep::Dot => ".",
                Sep::Dash => "-",
            });
            out.push_str(if t.numeric && t.text.is_empty() {
                "0"
            } else {
                &t.text
            });
        }
        out
    }
    for (v, want) in [
        ("1.0.0", "1"),
        ("1.ga", "1"),
        ("1.final", "1"),
        ("1.", "1"),
        ("1-", "1"),
        ("1.0.0-foo.0.0", "1-foo"),
        ("1.0.0-0.0.0", "1"),
        ("1-1.foo-bar1baz-.1", "1-1.foo-bar-1-baz-0.1"),
        ("1cr", "1-rc"),
        ("1a", "1-a"),
        ("1a1", "1-alpha-1"),
        ("1c1", "1-c-1"),
        ("1m1", "1-milestone-1"),
        ("1-ga-1", "1-1"),
        ("2.9.0-1", "2.9-1"),
        ("2.9.0.RC1", "2.9.0.rc-1"),
        ("1.2.48_noneautotype", "1.2.48-_noneautotype"),
    ] {
        assert_eq!(show(v), want, "{v}");
    }
}

/// The qualifier order from the specification.
#[test]
fn qualifiers() {
    increasing(&[
        "1-alpha",
        "1-beta",
        "1-milestone",
        "1-rc",
        "1-snapshot",
        "1",
        "1-sp",
        "1.1",
    ]);
    equal(&["1-rc", "1-cr"]);
    equal(&[
        "1",
        "1.0",
        "1.0.0",
        "1-ga",
        "1-final",
        "1-release",
        "1.0-GA",
        "1.FINAL",
    ]);
    equal(&["1a1", "1-a1", "1-alpha-1"]);
    // osv.dev keeps the separator: `.alpha` sorts before `-alpha` (Maven
    // 3.9's MNG-7644 made them equal; osv.dev did not follow).
    equal(&["1.alpha1", "1.a1"]);
    increasing(&["1.alpha1", "1-alpha-1"]);
    increasing(&[
        "1-alpha1",
        "1-alpha2",
        "1-alpha10",
        "1-beta1",
        "1-m1",
        "1-rc1",
        "1-SNAPSHOT",
        "1",
    ]);
    // Unknown qualifiers come after the known ones, lexically.
    increasing(&["1-sp", "1-abc", "1-xyz"]);
}

/// The increasing lists of Maven's `ComparableVersionTest` as osv.dev
/// ported them (`VERSIONS_QUALIFIER`, `VERSIONS_NUMBER`), and padding cases.
#[test]
fn ordering_table() {
    increasing(&[
        "1-alpha2snapshot",
        "1-alpha2",
        "1-alpha-123",
        "1-beta-2",
        "1-beta123",
        "1-m2",
        "1-m11",
        "1-rc",
        "1-cr2",
        "1-rc123",
        "1-SNAPSHOT",
        "1",
        "1-sp",
        "1-sp2",
        "1-sp123",
        "1-abc",
        "1-def",
        "1-pom-1",
        "1-1-snapshot",
        "1-1",
        "1-2",
        "1-123",
    ]);
    // Maven 3.9 has `2.0.a < 2-1`; osv.dev (and the spec's
    // `-number < .number` on the padded `.0`) has `2-1 < 2.0.a`.
    increasing(&[
        "2.0", "2-1", "2.0.a", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1", "2.1.0.1",
        "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11", "11", "11.a", "11b", "11c",
        "11m",
    ]);
    equal(&["1", "1.0", "1.0.0", "1-0", "1.0-0", "1-0-0"]);
    equal(&["1a", "1-a", "1.0-a", "1.0.0-a"]);
    equal(&["1x", "1-x", "1.0-x", "1.0.0-x"]);
    equal(&["01.002", "1.2"]);
    // MNG-7644 made this `<` in Maven 3.9; osv.dev compares `.0` with `-x`.
    assert_eq!(c("1.0.0.x1", "1.0.0-x2"), Ordering::Greater);
    assert_eq!(c("1.0.1", "1.0-sp"), Ordering::Greater);
    assert_eq!(c("2.0.0.RELEASE", "2.0.0"), Ordering::Equal);
    assert_eq!(c("5.3.18", "5.3.9"), Ordering::Greater);
    assert_eq!(
        c("99999999999999999999999.1", "99999999999999999999998.9"),
        Ordering::Greater
    );
}

/// The three real disagreements that made this module follow osv.dev.
#[test]
fn real_pairs_order_as_osv_dev_orders_them() {
    assert_eq!(c("2.9.0-1", "2.9.0.RC1"), Ordering::Less);
    assert_eq!(c("1.0.0rc0", "1.0.beta8"), Ordering::Less);
    assert_eq!(c("1.2.48.sec10", "1.2.48_noneautotype"), Ordering::Less);
}

#[test]
fn invalid_versions_are_errors() {
    assert!(parse(Scheme::Maven, "").is_err());
    assert!(parse(Scheme::Maven, "1.0\u{7}").is_err());
}
