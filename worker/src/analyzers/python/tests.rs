use super::*;
use crate::analyzers::testutil::{assert_wants, fixture, rows};

const TRIVY: &str = "aquasecurity+trivy/pkg/fanal/analyzer/language/python";
const SYFT: &str = "anchore+syft";

#[test]
fn wants_metadata_files_only() {
    assert_wants(
        &Python,
        &[
            "/usr/local/lib/python3.12/site-packages/Jinja2-3.1.2.dist-info/METADATA",
            "/usr/lib/python3/dist-packages/requests-2.28.1.egg-info/PKG-INFO",
            "/opt/venv/lib/python3.11/site-packages/six-1.16.0.egg/EGG-INFO/PKG-INFO",
            "/usr/lib/python3/dist-packages/python_apt-2.4.0.egg-info",
            "/x/Pygments-2.6.1.DIST-INFO/METADATA",
        ],
        &[
            "/usr/lib/python3/dist-packages/requests-2.28.1.dist-info/RECORD",
            "/usr/lib/python3/dist-packages/requests-2.28.1.egg-info/SOURCES.txt",
            "/src/app/PKG-INFO",
            "/src/app/METADATA",
            "/x/.egg-info",
            "/x/foo.egg-info.bak",
            "METADATA",
            "/",
            "",
        ],
    );
}

#[test]
fn real_metadata_files() {
    let site = "/usr/local/lib/python3.10/site-packages";
    let files = [
        (
            format!("{site}/annotated_types-0.7.0.dist-info/METADATA"),
            fixture(&format!(
                "{TRIVY}/pip/testdata/libs/python-dir/lib/python3.10/site-packages/annotated_types-0.7.0.dist-info/METADATA"
            )),
        ),
        (
            format!("{site}/Flask-2.0.0.dist-info/METADATA"),
            fixture(&format!(
                "{TRIVY}/pip/testdata/libs/common-dir/lib/site-packages/Flask-2.0.0.dist-info/METADATA"
            )),
        ),
        (
            format!("{site}/typing_extensions-4.4.0.dist-info/METADATA"),
            fixture(&format!(
                "{TRIVY}/packaging/testdata/license-file-dist/typing_extensions-4.4.0.dist-info/METADATA"
            )),
        ),
        (
            format!("{site}/distlib-0.3.1.egg-info/PKG-INFO"),
            fixture(&format!(
                "{TRIVY}/packaging/testdata/happy-egg/distlib-0.3.1.egg-info/PKG-INFO"
            )),
        ),
        // The same metadata as a distutils `.egg-info` *file*.
        (
            "/usr/lib/python3/dist-packages/someotherpkg-3.19.0-py3.8.egg-info".to_owned(),
            fixture(&format!(
                "{SYFT}/cmd/syft/internal/test/integration/testdata/image-pkg-coverage/pkgs/python/someotherpkg-3.19.0-py3.8.egg-info/PKG-INFO"
            )),
        ),
        (
            format!("{site}/Pygments-2.6.1.DIST-INFO/METADATA"),
            fixture(&format!(
                "{SYFT}/syft/pkg/cataloger/python/testdata/site-packages/uppercase/dist-name/DIST-INFO/METADATA"
            )),
        ),
        // Not metadata at all ("bogus"): a warning.
        (
            "/opt/w-1.0.egg/EGG-INFO/PKG-INFO".to_owned(),
            fixture(&format!(
                "{SYFT}/syft/pkg/cataloger/python/testdata/glob-paths/site-packages/w.EGG-INFO/PKG-INFO"
            )),
        ),
    ];
    let layer: Vec<LayerFile<'_>> = files
        .iter()
        .map(|(p, d)| LayerFile { path: p, data: d })
        .collect();
    let a = Python.analyze(&layer).unwrap();
    assert_eq!(
        rows(&a),
        [
            (
                "someotherpkg",
                "3.19.0",
                "pkg:pypi/someotherpkg@3.19.0",
                Evidence::Installed
            ),
            ("Flask", "2.0.0", "pkg:pypi/flask@2.0.0", Evidence::Installed),
            (
                "Pygments",
                "2.6.1",
                "pkg:pypi/pygments@2.6.1",
                Evidence::Installed
            ),
            (
                "annotated-types",
                "0.7.0",
                "pkg:pypi/annotated-types@0.7.0",
                Evidence::Installed
            ),
            ("distlib", "0.3.1", "pkg:pypi/distlib@0.3.1", Evidence::Installed),
            (
                "typing_extensions",
                "4.4.0",
                "pkg:pypi/typing-extensions@4.4.0",
                Evidence::Installed
            ),
        ]
    );
    let egg_file = a.packages.iter().find(|p| p.name == "someotherpkg").unwrap();
    assert_eq!(
        egg_file.path,
        "/usr/lib/python3/dist-packages/someotherpkg-3.19.0-py3.8.egg-info"
    );
    assert!(
        a.packages
            .iter()
            .all(|p| p.ecosystem == Ecosystem::PyPI && p.layer.is_none())
    );
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    assert!(a.warnings[0].starts_with("python: /opt/w-1.0.egg/EGG-INFO/PKG-INFO: "));
}

#[test]
fn header_stops_at_the_body_and_ignores_case_and_continuations() {
    let a = |data: &[u8]| {
        Python
            .analyze(&[LayerFile {
                path: "/s/x.dist-info/METADATA",
                data,
            }])
            .unwrap()
    };
    let got = a(b"Metadata-Version: 2.1\r\nname: Zope.Interface\r\nSummary: x\r\n  more\r\nversion: 6.0\r\n\r\nName: other\n");
    assert_eq!(
        rows(&got),
        [(
            "Zope.Interface",
            "6.0",
            "pkg:pypi/zope-interface@6.0",
            Evidence::Installed
        )]
    );
    // Version only in the body: not a package.
    let got = a(b"Name: a\nSummary: s\n\nVersion: 1\n");
    assert!(got.packages.is_empty() && got.warnings.len() == 1);
    let got = a(b"Name: \xff\nVersion: 1\n");
    assert!(got.packages.is_empty() && got.warnings.len() == 1);
}

#[test]
fn oversized_file_is_skipped_with_a_warning() {
    let big = vec![b'a'; MAX_FILE_BYTES as usize + 1];
    let a = Python
        .analyze(&[
            LayerFile {
                path: "/s/big.dist-info/METADATA",
                data: &big,
            },
            LayerFile {
                path: "/s/ok.dist-info/METADATA",
                data: b"Name: ok\nVersion: 1\n",
            },
        ])
        .unwrap();
    assert_eq!(a.packages.len(), 1);
    assert_eq!(a.warnings.len(), 1);
}
