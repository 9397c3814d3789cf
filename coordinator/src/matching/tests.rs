//! Matcher tests on hand-written advisories.

use super::*;
use crate::vulndb::{AffectedEntry, EvalRange};

fn ev(kind: &str, v: &str) -> Event {
    match kind {
        "i" => Event::Introduced(v.into()),
        "f" => Event::Fixed(v.into()),
        "l" => Event::LastAffected(v.into()),
        _ => Event::Limit(v.into()),
    }
}

fn eco_range(events: &[(&str, &str)]) -> EvalRange {
    EvalRange {
        kind: RangeKind::Ecosystem,
        events: events.iter().map(|(k, v)| ev(k, v)).collect(),
    }
}

fn semver_range(events: &[(&str, &str)]) -> EvalRange {
    EvalRange {
        kind: RangeKind::Semver,
        events: events.iter().map(|(k, v)| ev(k, v)).collect(),
    }
}

fn affected(eco: Ecosystem, release: Option<&str>, name: &str, ranges: Vec<EvalRange>) -> AffectedEntry {
    AffectedEntry {
        ecosystem: eco,
        release: release.map(Into::into),
        name: name.into(),
        ranges,
        versions: vec![],
    }
}

fn adv(id: &str, severity: Severity, affected: Vec<AffectedEntry>) -> Advisory {
    Advisory {
        id: id.into(),
        modified: String::new(),
        aliases: vec![format!("CVE-{id}")],
        summary: format!("summary of {id}"),
        severity,
        score: Some(7.5),
        score_source: "test".into(),
        affected,
    }
}

pub(super) fn pkg(eco: Ecosystem, name: &str, version: &str) -> Package {
    Package {
        ecosystem: eco,
        name: name.into(),
        version: version.into(),
        source_name: None,
        source_version: None,
        arch: None,
        purl: String::new(),
        path: "/x".into(),
        layer: None,
        evidence: Default::default(),
    }
}

pub(super) fn os(id: &str, version_id: &str) -> OsRelease {
    OsRelease {
        id: id.into(),
        version_id: version_id.into(),
        path: "/etc/os-release".into(),
        ..Default::default()
    }
}

fn ids(f: &[Finding]) -> Vec<(&str, &str)> {
    f.iter()
        .map(|f| (f.vulnerability_id.as_str(), f.package.name.as_str()))
        .collect()
}

fn matcher(advs: &[Advisory]) -> Matcher {
    Matcher::from_advisories("db-1", advs)
}

#[test]
fn events_of_every_kind() {
    let m = matcher(&[
        adv(
            "A-zero",
            Severity::High,
            vec![affected(
                Ecosystem::PyPI,
                None,
                "x",
                vec![eco_range(&[("i", "0"), ("f", "2.0")])],
            )],
        ),
        adv(
            "A-last",
            Severity::Low,
            vec![affected(
                Ecosystem::PyPI,
                None,
                "x",
                vec![eco_range(&[("i", "1.5"), ("l", "1.8")])],
            )],
        ),
        adv(
            "A-limit",
            Severity::Medium,
            vec![affected(
                Ecosystem::PyPI,
                None,
                "x",
                vec![eco_range(&[("i", "0"), ("m", "1.0")])],
            )],
        ),
    ]);
    let at = |v: &str| {
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "x", v)])
            .iter()
            .map(|f| f.vulnerability_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(at("0.1"), ["A-zero", "A-limit"]); // ordered: high, medium
    assert_eq!(at("1.0"), ["A-zero"]); // limit is exclusive
    assert_eq!(at("1.5"), ["A-zero", "A-last"]); // introduced inclusive
    assert_eq!(at("1.8"), ["A-zero", "A-last"]); // last_affected inclusive
    assert_eq!(at("1.8.1"), ["A-zero"]);
    assert_eq!(at("2.0"), Vec::<String>::new()); // fixed exclusive
    assert_eq!(at("2.0.post1"), Vec::<String>::new());
}

#[test]
fn finding_carries_everything() {
    let m = matcher(&[adv(
        "GHSA-1",
        Severity::Critical,
        vec![affected(
            Ecosystem::CratesIo,
            None,
            "foo",
            vec![semver_range(&[("i", "0"), ("f", "1.2.0")])],
        )],
    )]);
    let p = pkg(Ecosystem::CratesIo, "foo", "1.1.0");
    let f = m.match_packages(None, std::slice::from_ref(&p));
    assert_eq!(f.len(), 1);
    let f = &f[0];
    assert_eq!(f.vulnerability_id, "GHSA-1");
    assert_eq!(f.aliases, ["CVE-GHSA-1"]);
    assert_eq!(f.summary, "summary of GHSA-1");
    assert_eq!(f.package, p);
    assert_eq!(f.installed_version, "1.1.0");
    assert_eq!(f.fixed_versions, ["1.2.0"]);
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.score, Some(7.5));
    assert_eq!(f.score_source, "test");
    assert_eq!(f.vulndb_version, "db-1");
}

#[test]
fn several_ranges_and_entries_give_one_finding() {
    // Two ranges in one entry and a second entry for the same package: one
    // finding, fixed versions are the fixes above the installed version.
    let m = matcher(&[adv(
        "V-1",
        Severity::High,
        vec![
            affected(
                Ecosystem::Npm,
                None,
                "lodash",
                vec![
                    semver_range(&[("i", "1.0.0"), ("f", "1.5.0")]),
                    semver_range(&[("i", "1.4.0"), ("f", "1.6.0")]),
                ],
            ),
            affected(
                Ecosystem::Npm,
                None,
                "lodash",
                vec![semver_range(&[("i", "0"), ("f", "1.7.0")])],
            ),
        ],
    )]);
    let f = m.match_packages(None, &[pkg(Ecosystem::Npm, "lodash", "1.4.5")]);
    assert_eq!(ids(&f), [("V-1", "lodash")]);
    assert_eq!(f[0].fixed_versions, ["1.5.0", "1.6.0", "1.7.0"]);
    let f = m.match_packages(None, &[pkg(Ecosystem::Npm, "lodash", "1.5.5")]);
    assert_eq!(f[0].fixed_versions, ["1.6.0", "1.7.0"]);
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::Npm, "lodash", "1.7.0")])
            .is_empty()
    );
}

#[test]
fn versions_list_matches_and_is_the_fallback_for_unparsable_ranges() {
    let mut a = affected(
        Ecosystem::PyPI,
        None,
        "y",
        vec![eco_range(&[("i", "0"), ("f", "not/a/version")])],
    );
    a.versions = vec!["0.3".into(), "weird-build".into()];
    let m = matcher(&[adv("L-1", Severity::Low, vec![a])]);
    assert_eq!(m.stats().unevaluable_ranges, 1);
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "y", "0.3")]).len(),
        1
    );
    // String-equal: the list names "weird-build", which is no PEP 440 version.
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "y", "weird-build")])
            .len(),
        1
    );
    // The broken range is not used: 0.2 is not listed.
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "y", "0.2")])
            .is_empty()
    );
}

#[test]
fn hostile_advisory_versions_are_dropped_not_fatal() {
    let long = "1".repeat(5000);
    let mut a = affected(
        Ecosystem::Npm,
        None,
        "h",
        vec![semver_range(&[("i", "0"), ("f", &long)])],
    );
    a.versions = vec![long.clone()];
    let m = matcher(&[
        adv("H-1", Severity::High, vec![a]),
        adv(
            "H-2",
            Severity::High,
            vec![affected(
                Ecosystem::NuGet,
                None,
                "n",
                vec![eco_range(&[("i", "0"), ("f", "1.0.0-")])],
            )],
        ),
    ]);
    assert_eq!(m.stats().unevaluable_ranges, 2);
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::Npm, "h", "1.0.0")])
            .is_empty()
    );
    // The list still matches string-equal, even a long one.
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::Npm, "h", &long)]).len(),
        1
    );
    // A NuGet event version NuGet would reject (`1.0.0-`): the range cannot be used.
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::NuGet, "n", "1.0.0")])
            .is_empty()
    );
}

#[test]
fn unparsable_installed_version_matches_nothing() {
    let m = matcher(&[adv(
        "U-1",
        Severity::High,
        vec![affected(
            Ecosystem::PyPI,
            None,
            "z",
            vec![eco_range(&[("i", "0")])],
        )],
    )]);
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "z", "%%garbage%%")])
            .is_empty()
    );
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "z", "")])
            .is_empty()
    );
    assert!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "z", &"9".repeat(5000))])
            .is_empty()
    );
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "z", "1.0")]).len(),
        1
    );
}

#[test]
fn os_release_awareness() {
    let m = matcher(&[
        adv(
            "DSA-11",
            Severity::High,
            vec![affected(
                Ecosystem::Debian,
                Some("11"),
                "openssl",
                vec![eco_range(&[("i", "0"), ("f", "3.0.0-1")])],
            )],
        ),
        adv(
            "DSA-12",
            Severity::High,
            vec![affected(
                Ecosystem::Debian,
                Some("12"),
                "openssl",
                vec![eco_range(&[("i", "0"), ("f", "3.0.9-1")])],
            )],
        ),
        adv(
            "ALPINE-1",
            Severity::Low,
            vec![affected(
                Ecosystem::Alpine,
                Some("3.19"),
                "musl",
                vec![eco_range(&[("i", "0"), ("f", "1.2.4-r3")])],
            )],
        ),
        adv(
            "USN-1",
            Severity::Low,
            vec![affected(
                Ecosystem::Ubuntu,
                Some("22.04"),
                "bash",
                vec![eco_range(&[("i", "0"), ("f", "5.2-1")])],
            )],
        ),
    ]);
    let ssl = pkg(Ecosystem::Debian, "openssl", "1.1.1n-0+deb11u5");
    assert_eq!(
        ids(&m.match_packages(Some(&os("debian", "12")), std::slice::from_ref(&ssl))),
        [("DSA-12", "openssl")]
    );
    assert_eq!(
        ids(&m.match_packages(Some(&os("debian", "11")), std::slice::from_ref(&ssl))).len(),
        2 - 1
    );
    assert_eq!(
        m.match_packages(Some(&os("debian", "11")), std::slice::from_ref(&ssl))[0].vulnerability_id,
        "DSA-11"
    );
    // No os-release: OS packages match nothing release-specific.
    assert!(m.match_packages(None, std::slice::from_ref(&ssl)).is_empty());
    let musl = pkg(Ecosystem::Alpine, "musl", "1.2.4-r2");
    assert_eq!(
        m.match_packages(Some(&os("alpine", "3.19.1")), std::slice::from_ref(&musl))
            .len(),
        1
    );
    assert!(
        m.match_packages(Some(&os("alpine", "3.18.4")), std::slice::from_ref(&musl))
            .is_empty()
    );
    let bash = pkg(Ecosystem::Ubuntu, "bash", "5.1-6ubuntu1");
    assert_eq!(
        m.match_packages(Some(&os("ubuntu", "22.04")), std::slice::from_ref(&bash))
            .len(),
        1
    );
    assert!(
        m.match_packages(Some(&os("ubuntu", "24.04")), std::slice::from_ref(&bash))
            .is_empty()
    );
}

#[test]
fn release_keys() {
    assert_eq!(
        release_key(Ecosystem::Debian, Some(&os("debian", "12"))).as_deref(),
        Some("12")
    );
    assert_eq!(
        release_key(Ecosystem::Debian, Some(&os("debian", "12.5"))).as_deref(),
        Some("12")
    );
    assert_eq!(
        release_key(Ecosystem::Alpine, Some(&os("alpine", "3.19.1"))).as_deref(),
        Some("3.19")
    );
    assert_eq!(
        release_key(Ecosystem::Ubuntu, Some(&os("ubuntu", "22.04"))).as_deref(),
        Some("22.04")
    );
    assert_eq!(release_key(Ecosystem::Debian, None), None);
    assert_eq!(release_key(Ecosystem::Debian, Some(&os("debian", ""))), None);
    assert_eq!(release_key(Ecosystem::PyPI, Some(&os("debian", "12"))), None);
}

#[test]
fn debian_matches_by_source_package_and_version() {
    let m = matcher(&[adv(
        "DSA-5",
        Severity::High,
        vec![affected(
            Ecosystem::Debian,
            Some("12"),
            "openssl",
            vec![eco_range(&[("i", "0"), ("f", "3.0.11-1~deb12u2")])],
        )],
    )]);
    let mut lib = pkg(Ecosystem::Debian, "libssl3", "3.0.11-1~deb12u1+b1");
    lib.source_name = Some("openssl".into());
    lib.source_version = Some("3.0.11-1~deb12u1".into());
    let bookworm = os("debian", "12");
    let f = m.match_packages(Some(&bookworm), std::slice::from_ref(&lib));
    assert_eq!(ids(&f), [("DSA-5", "libssl3")]);
    assert_eq!(f[0].installed_version, "3.0.11-1~deb12u1+b1");
    // Source version decides: a fixed source version is not matched even if
    // the binary version string alone would be.
    lib.source_version = Some("3.0.11-1~deb12u2".into());
    lib.version = "3.0.11-1~deb12u1".into();
    assert!(
        m.match_packages(Some(&bookworm), std::slice::from_ref(&lib))
            .is_empty()
    );
    // No source recorded: the binary name and version are the source's.
    assert_eq!(
        m.match_packages(Some(&bookworm), &[pkg(Ecosystem::Debian, "openssl", "3.0.0-1")])
            .len(),
        1
    );
    // Binary name alone does not match a source advisory.
    assert!(
        m.match_packages(Some(&bookworm), &[pkg(Ecosystem::Debian, "libssl3", "3.0.0-1")])
            .is_empty()
    );
}

#[test]
fn alpine_matches_by_origin() {
    let m = matcher(&[adv(
        "ALPINE-2",
        Severity::Medium,
        vec![affected(
            Ecosystem::Alpine,
            Some("3.19"),
            "openssl",
            vec![eco_range(&[("i", "0"), ("f", "3.1.4-r5")])],
        )],
    )]);
    let mut p = pkg(Ecosystem::Alpine, "libcrypto3", "3.1.4-r1");
    p.source_name = Some("openssl".into());
    assert_eq!(m.match_packages(Some(&os("alpine", "3.19.0")), &[p]).len(), 1);
}

#[test]
fn rpm_matches_by_binary_name() {
    let m = matcher(&[adv(
        "RHSA-1",
        Severity::Medium,
        vec![affected(
            Ecosystem::RedHat,
            None,
            "openssl-libs",
            vec![eco_range(&[("i", "0"), ("f", "1:3.0.7-25.el9")])],
        )],
    )]);
    let mut p = pkg(Ecosystem::RedHat, "openssl-libs", "1:3.0.7-24.el9");
    p.source_name = Some("openssl".into());
    assert_eq!(m.match_packages(Some(&os("rhel", "9.3")), &[p]).len(), 1);
}

#[test]
fn pypi_names_are_normalised() {
    assert_eq!(
        normalise_name(Ecosystem::PyPI, "Foo.Bar__baz-_-Qux"),
        "foo-bar-baz-qux"
    );
    assert_eq!(normalise_name(Ecosystem::PyPI, "a--b"), "a-b");
    assert_eq!(normalise_name(Ecosystem::PyPI, "requests"), "requests");
    assert_eq!(normalise_name(Ecosystem::Npm, "Foo_Bar"), "Foo_Bar");
    let m = matcher(&[adv(
        "PYSEC-1",
        Severity::Low,
        vec![affected(
            Ecosystem::PyPI,
            None,
            "Zope.Interface",
            vec![eco_range(&[("i", "0"), ("f", "5.0")])],
        )],
    )]);
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "zope-interface", "4.0")])
            .len(),
        1
    );
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::PyPI, "ZOPE_interface", "4.0")])
            .len(),
        1
    );
    // Other ecosystems are exact.
    let n = matcher(&[adv(
        "N-1",
        Severity::Low,
        vec![affected(
            Ecosystem::Npm,
            None,
            "Foo",
            vec![semver_range(&[("i", "0")])],
        )],
    )]);
    assert!(
        n.match_packages(None, &[pkg(Ecosystem::Npm, "foo", "1.0.0")])
            .is_empty()
    );
}

#[test]
fn order_is_severity_then_id_then_package() {
    let r = || vec![eco_range(&[("i", "0")])];
    let m = matcher(&[
        adv(
            "B",
            Severity::Low,
            vec![
                affected(Ecosystem::PyPI, None, "p", r()),
                affected(Ecosystem::PyPI, None, "q", r()),
            ],
        ),
        adv(
            "A",
            Severity::Low,
            vec![affected(Ecosystem::PyPI, None, "q", r())],
        ),
        adv(
            "Z",
            Severity::Critical,
            vec![affected(Ecosystem::PyPI, None, "q", r())],
        ),
    ]);
    let f = m.match_packages(
        None,
        &[pkg(Ecosystem::PyPI, "q", "1"), pkg(Ecosystem::PyPI, "p", "1")],
    );
    assert_eq!(ids(&f), [("Z", "q"), ("A", "q"), ("B", "p"), ("B", "q")]);
}

#[test]
fn fleet_equals_per_image() {
    let m = matcher(&[
        adv(
            "DSA-11",
            Severity::High,
            vec![affected(
                Ecosystem::Debian,
                Some("11"),
                "openssl",
                vec![eco_range(&[("i", "0"), ("f", "3.0.0-1")])],
            )],
        ),
        adv(
            "DSA-12",
            Severity::High,
            vec![affected(
                Ecosystem::Debian,
                Some("12"),
                "openssl",
                vec![eco_range(&[("i", "0"), ("f", "3.0.9-1")])],
            )],
        ),
        adv(
            "PY-1",
            Severity::Medium,
            vec![affected(
                Ecosystem::PyPI,
                None,
                "django",
                vec![eco_range(&[("i", "4.0"), ("f", "4.2.1")])],
            )],
        ),
        adv(
            "GO-1",
            Severity::Low,
            vec![affected(
                Ecosystem::Go,
                None,
                "golang.org/x/net",
                vec![semver_range(&[("i", "0"), ("f", "0.17.0")])],
            )],
        ),
    ]);
    let ssl = |v: &str| pkg(Ecosystem::Debian, "openssl", v);
    let images = vec![
        (
            Some(os("debian", "12")),
            vec![
                ssl("1.1.1n-0"),
                pkg(Ecosystem::PyPI, "Django", "4.1"),
                pkg(Ecosystem::Go, "golang.org/x/net", "v0.10.0"),
            ],
        ),
        (
            Some(os("debian", "11")),
            vec![ssl("1.1.1n-0"), pkg(Ecosystem::PyPI, "django", "4.1")],
        ),
        (
            None,
            vec![ssl("1.1.1n-0"), pkg(Ecosystem::Go, "golang.org/x/net", "v0.17.0")],
        ),
        (Some(os("debian", "12")), vec![]),
        (
            Some(os("debian", "12")),
            vec![
                ssl("3.0.9-1"),
                ssl("1.1.1n-0"),
                pkg(Ecosystem::PyPI, "django", "4.1"),
            ],
        ),
    ];
    let fleet = m.match_fleet(&images);
    assert_eq!(fleet.len(), images.len());
    for ((os, pkgs), got) in images.iter().zip(&fleet) {
        assert_eq!(got, &m.match_packages(os.as_ref(), pkgs));
    }
    assert_eq!(
        ids(&fleet[0]),
        [
            ("DSA-12", "openssl"),
            ("PY-1", "Django"),
            ("GO-1", "golang.org/x/net")
        ]
    );
    assert_eq!(ids(&fleet[1]), [("DSA-11", "openssl"), ("PY-1", "django")]);
    assert!(fleet[2].is_empty());
    assert_eq!(fleet[4].len(), 2);
    // The compact form: one match per distinct key, counts per image.
    let fm = m.match_fleet_compact(&images);
    // Distinct: openssl 1.1.1n-0 on 12, 11 and no release; django 4.1 (Django
    // normalises to it); x/net v0.10.0 and v0.17.0; openssl 3.0.9-1 on 12.
    assert_eq!(fm.distinct_keys(), 7);
    assert_eq!(
        (0..images.len()).map(|i| fm.finding_count(i)).collect::<Vec<_>>(),
        [3, 2, 0, 0, 2]
    );
    assert_eq!(fm.finding_count(99), 0);
    assert!(m.findings_of(&fm, 99, &images[0].1).is_empty());
    // Borrowed hits say the same as the findings, by package index; shared
    // packages (`Arc`, as the fleet index holds them) match as owned ones.
    let shared: Vec<(Option<OsRelease>, Vec<std::sync::Arc<Package>>)> = images
        .iter()
        .map(|(os, p)| (os.clone(), p.iter().cloned().map(std::sync::Arc::new).collect()))
        .collect();
    let fm = m.match_fleet_compact(&shared);
    for (i, (_, pkgs)) in images.iter().enumerate() {
        let mut borrowed: Vec<(String, String, Vec<String>)> = m
            .hits_of(&fm, i)
            .map(|h| {
                (
                    h.id.to_owned(),
                    pkgs[h.package].name.clone(),
                    h.fixed_versions.to_vec(),
                )
            })
            .collect();
        let mut owned: Vec<(String, String, Vec<String>)> = fleet[i]
            .iter()
            .map(|f| {
                (
                    f.vulnerability_id.clone(),
                    f.package.name.clone(),
                    f.fixed_versions.clone(),
                )
            })
            .collect();
        borrowed.sort();
        owned.sort();
        assert_eq!(borrowed, owned, "image {i}");
    }
    assert_eq!(m.hits_of(&fm, 99).count(), 0);
}

/// NuGet ids and Composer names are case-insensitive; both now have a
/// version ordering (`versions::nuget`, `versions::composer`).
#[test]
fn nuget_and_packagist_match_case_insensitively_with_their_orderings() {
    let m = matcher(&[
        adv(
            "N-1",
            Severity::High,
            vec![affected(
                Ecosystem::NuGet,
                None,
                "Newtonsoft.Json",
                vec![eco_range(&[("i", "0"), ("f", "13.0.1")])],
            )],
        ),
        adv(
            "P-1",
            Severity::High,
            vec![affected(
                Ecosystem::Packagist,
                None,
                "guzzlehttp/guzzle",
                vec![eco_range(&[("i", "7.0.0"), ("f", "7.4.5")])],
            )],
        ),
    ]);
    let hit = |eco, name: &str, v: &str| !m.match_packages(None, &[pkg(eco, name, v)]).is_empty();
    assert!(hit(Ecosystem::NuGet, "newtonsoft.json", "12.0.3"));
    assert!(hit(Ecosystem::NuGet, "Newtonsoft.Json", "13.0.1-beta1"));
    assert!(!hit(Ecosystem::NuGet, "Newtonsoft.Json", "13.0.1.0"));
    assert!(!hit(Ecosystem::NuGet, "Newtonsoft.Json", "13.0.3"));
    assert!(hit(Ecosystem::Packagist, "GuzzleHttp/Guzzle", "v7.4.4"));
    assert!(hit(Ecosystem::Packagist, "guzzlehttp/guzzle", "7.4.5-RC1"));
    assert!(!hit(Ecosystem::Packagist, "guzzlehttp/guzzle", "7.4.5"));
    assert!(!hit(Ecosystem::Packagist, "guzzlehttp/guzzle", "6.5.8"));
    assert!(!hit(Ecosystem::Packagist, "guzzlehttp/guzzle", "dev-master"));
}

#[test]
fn app_packages_and_go_devel_are_never_matched() {
    let m = matcher(&[adv(
        "A-1",
        Severity::High,
        vec![
            affected(Ecosystem::Npm, None, "lodash", vec![semver_range(&[("i", "0")])]),
            affected(
                Ecosystem::Go,
                None,
                "example.com/app",
                vec![eco_range(&[("i", "0")])],
            ),
        ],
    )]);
    let mut lodash = pkg(Ecosystem::Npm, "lodash", "4.17.20");
    assert_eq!(m.match_packages(None, std::slice::from_ref(&lodash)).len(), 1);
    lodash.evidence = strata_proto::domain::Evidence::App;
    assert!(m.match_packages(None, std::slice::from_ref(&lodash)).is_empty());
    let devel = pkg(Ecosystem::Go, "example.com/app", "(devel)");
    assert!(m.match_packages(None, std::slice::from_ref(&devel)).is_empty());
    assert_eq!(
        m.match_packages(None, &[pkg(Ecosystem::Go, "example.com/app", "v1.0.0")])
            .len(),
        1
    );
    // The fleet path agrees.
    let fleet = m.match_fleet(&[(None, vec![lodash, devel])]);
    assert!(fleet[0].is_empty());
}
