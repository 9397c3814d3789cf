use super::*;
use crate::analyzers::testutil::{self, assert_wants, fixture, local, rows};
use strata_proto::Evidence::{Installed, Lockfile};

fn run(files: &[(&str, &[u8])]) -> Analysis {
    testutil::run(&Php, files)
}

#[test]
fn wants_installed_json_and_project_lockfiles() {
    assert_wants(
        &Php,
        &[
            "/var/www/html/vendor/composer/installed.json",
            "/app/composer.lock",
            "/composer.lock",
        ],
        &[
            "/app/vendor/monolog/monolog/composer.lock",
            "/app/vendor/composer/installed.php",
            "/app/composer.json",
            "/app/vendor/composer/installed.json.bak",
            "/app/composer.lock.orig",
        ],
    );
}

#[test]
fn installed_json_composer_1_and_2() {
    let want = [
        (
            "asm89/stack-cors",
            "1.3.0",
            "pkg:composer/asm89/stack-cors@1.3.0",
            Installed,
        ),
        // `v1.8.1` as Composer wrote it; the `v` dropped.
        ("behat/mink", "1.8.1", "pkg:composer/behat/mink@1.8.1", Installed),
    ];
    for f in ["composer_1.installed.json", "composer_2.installed.json"] {
        let data = local(&format!("php/testdata/{f}"));
        let a = run(&[("/var/www/vendor/composer/installed.json", &data)]);
        assert_eq!(rows(&a), want, "{f}");
        assert!(a.warnings.is_empty(), "{f}: {:?}", a.warnings);
        assert!(a.packages.iter().all(|p| p.ecosystem == Ecosystem::Packagist));
    }
}

#[test]
fn composer_lock_packages_and_dev() {
    let data = fixture("anchore+syft/syft/pkg/cataloger/php/testdata/composer.lock");
    let a = run(&[("/app/composer.lock", &data)]);
    assert_eq!(
        rows(&a),
        [
            (
                "adoy/fastcgi-client",
                "1.0.2",
                "pkg:composer/adoy/fastcgi-client@1.0.2",
                Lockfile
            ),
            (
                "alcaeus/mongo-php-adapter",
                "1.1.11",
                "pkg:composer/alcaeus/mongo-php-adapter@1.1.11",
                Lockfile
            ),
            (
                "behat/gherkin",
                "4.6.2",
                "pkg:composer/behat/gherkin@4.6.2",
                Lockfile
            ),
            (
                "codeception/codeception",
                "4.1.6",
                "pkg:composer/codeception/codeception@4.1.6",
                Lockfile
            ),
        ]
    );
    let data = fixture(
        "aquasecurity+trivy/pkg/fanal/analyzer/language/php/composer/testdata/composer/with-dev/composer.lock",
    );
    let a = run(&[("/app/composer.lock", &data)]);
    assert_eq!(
        rows(&a),
        [
            ("psr/log", "1.1.4", "pkg:composer/psr/log@1.1.4", Lockfile),
            ("pear/log", "1.14.6", "pkg:composer/pear/log@1.14.6", Lockfile),
            (
                "pear/pear_exception",
                "1.0.2",
                "pkg:composer/pear/pear_exception@1.0.2",
                Lockfile
            ),
        ]
    );
    let sad = fixture(
        "aquasecurity+trivy/pkg/fanal/analyzer/language/php/composer/testdata/composer/sad/composer.lock",
    );
    let a = run(&[("/app/composer.lock", &sad)]);
    assert!(a.packages.is_empty() && a.warnings.len() == 1, "{:?}", a.warnings);
}

#[test]
fn lockfile_beside_vendor_is_not_read() {
    let lock = fixture("anchore+syft/syft/pkg/cataloger/php/testdata/composer.lock");
    let installed = local("php/testdata/composer_2.installed.json");
    let a = run(&[
        ("/app/composer.lock", &lock),
        ("/app/vendor/composer/installed.json", &installed),
    ]);
    assert!(
        a.packages.iter().all(|p| p.evidence == Installed),
        "{:?}",
        rows(&a)
    );
    assert_eq!(a.packages.len(), 2);
    // Another project's vendor/ is not beside it.
    let a = run(&[
        ("/app/composer.lock", &lock),
        ("/srv/vendor/composer/installed.json", &installed),
    ]);
    assert_eq!(a.packages.len(), 6);
}

#[test]
fn odd_entries() {
    let a = run(&[(
        "/app/composer.lock",
        br#"{"packages":[{"name":"a/b","version":"dev-main"},{"name":"nov","version":"1.0.0"},{"name":"c/d"},{"name":"e/f","version":"V2.0"}]}"#,
    )]);
    assert_eq!(rows(&a), [("e/f", "2.0", "pkg:composer/e/f@2.0", Lockfile)]);
    assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
}
