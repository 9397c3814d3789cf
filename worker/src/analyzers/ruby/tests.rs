use super::*;
use crate::analyzers::testutil::{self, assert_wants, fixture, local, rows};
use strata_proto::Evidence::{App, Installed, Lockfile};

const SPECS: &str = "/usr/local/lib/ruby/gems/3.2.0/specifications";

fn run(files: &[(&str, &[u8])]) -> Analysis {
    testutil::run(&Ruby, files)
}

#[test]
fn wants_installed_specifications_and_lockfiles() {
    assert_wants(
        &Ruby,
        &[
            "/usr/local/lib/ruby/gems/3.2.0/specifications/rack-2.2.8.gemspec",
            "/usr/local/lib/ruby/gems/3.2.0/specifications/default/json-2.6.3.gemspec",
            "/app/vendor/bundle/ruby/3.2.0/specifications/nokogiri-1.15.4-x86_64-linux.gemspec",
            "/app/Gemfile.lock",
            "/app/gems.locked",
        ],
        &[
            "/src/rack/rack.gemspec",
            "/usr/local/lib/ruby/gems/3.2.0/gems/rack-2.2.8/rack.gemspec",
            "/usr/local/lib/ruby/gems/3.2.0/specifications/rack-2.2.8.gemspec.bak",
            "/app/Gemfile",
            "/app/Gemfile.lock.orig",
        ],
    );
}

#[test]
fn installed_gemspecs() {
    let formatador = local("ruby/testdata/formatador-1.0.0.gemspec");
    let test_unit = local("ruby/testdata/test-unit-3.3.7.gemspec");
    let a = run(&[
        (&format!("{SPECS}/formatador-1.0.0.gemspec"), &formatador),
        (&format!("{SPECS}/default/test-unit-3.3.7.gemspec"), &test_unit),
        // No name/version lines: the file name says it, platform dropped.
        (
            &format!("{SPECS}/nokogiri-1.15.4-x86_64-linux.gemspec"),
            b"# empty\n",
        ),
        // The lines disagree with the file name: they win, with a warning.
        (&format!("{SPECS}/formatador-0.9.gemspec"), &formatador),
        (&format!("{SPECS}/nothing.gemspec"), b"\xff\xfe"),
    ]);
    assert_eq!(
        rows(&a),
        [
            ("test-unit", "3.3.7", "pkg:gem/test-unit@3.3.7", Installed),
            ("formatador", "1.0.0", "pkg:gem/formatador@1.0.0", Installed),
            ("formatador", "1.0.0", "pkg:gem/formatador@1.0.0", Installed),
            ("nokogiri", "1.15.4", "pkg:gem/nokogiri@1.15.4", Installed),
        ]
    );
    assert_eq!(a.packages[2].path, format!("{SPECS}/formatador-1.0.0.gemspec"));
    assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
}

#[test]
fn gemfile_lock_gem_git_and_path() {
    let data = fixture("anchore+syft/syft/pkg/cataloger/ruby/testdata/Gemfile.lock");
    let a = run(&[("/app/Gemfile.lock", &data)]);
    let got = rows(&a);
    // 53 spec lines, one of them in a `BAD-SECTION` that is not a source.
    assert_eq!(got.len(), 52, "{got:#?}");
    assert!(!got.iter().any(|r| r.0 == "bad-entry"));
    assert_eq!(
        got[0],
        (
            "google-cloud-errors",
            "1.3.0",
            "pkg:gem/google-cloud-errors@1.3.0",
            App
        )
    );
    assert_eq!(
        got[1],
        ("turbolinks", "3.0.0", "pkg:gem/turbolinks@3.0.0", Lockfile)
    );
    assert_eq!(
        got[2],
        ("actionmailer", "4.1.1", "pkg:gem/actionmailer@4.1.1", Lockfile)
    );
    assert!(got.contains(&(
        "arel",
        "5.0.1.20140414130214",
        "pkg:gem/arel@5.0.1.20140414130214",
        Lockfile
    )));
    // Dependencies (six spaces) are not packages of their own.
    assert!(!got.iter().any(|r| r.0 == "coffee-rails" && r.1 != "4.0.1"));
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);

    let data = fixture("aquasecurity+trivy/pkg/fanal/analyzer/testdata/app/Gemfile.lock");
    let a = run(&[("/app/Gemfile.lock", &data)]);
    assert_eq!(
        rows(&a),
        [
            ("actioncable", "5.2.3", "pkg:gem/actioncable@5.2.3", Lockfile),
            ("actionpack", "5.2.3", "pkg:gem/actionpack@5.2.3", Lockfile),
        ]
    );

    let a = run(&[(
        "/app/Gemfile.lock",
        b"GEM\n  remote: https://rubygems.org/\n  specs:\n    nokogiri (1.15.4-x86_64-linux)\n      racc (~> 1.4)\n    nokogiri (1.15.4-aarch64-linux)\n\nPLATFORMS\n  x86_64-linux\n\nCHECKSUMS\n  nokogiri (1.15.4) sha256=ab\n",
    )]);
    assert_eq!(
        rows(&a),
        [("nokogiri", "1.15.4", "pkg:gem/nokogiri@1.15.4", Lockfile)]
    );
}
