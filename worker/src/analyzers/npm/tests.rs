use super::*;
use crate::analyzers::testutil::{self, assert_wants, fixture, local, rows};
use strata_proto::Evidence::{App, Installed, Lockfile};

const SYFT: &str = "anchore+syft/syft/pkg/cataloger/javascript/testdata";
const TRIVY: &str = "aquasecurity+trivy/pkg/fanal/analyzer/language/nodejs";
const SCALIBR: &str = "google+osv-scalibr";

fn run(files: &[(&str, &[u8])]) -> Analysis {
    testutil::run(&Npm, files)
}

fn one(path: &str, data: &[u8]) -> Analysis {
    run(&[(path, data)])
}

type Row = (&'static str, &'static str, &'static str, Evidence);

fn lock(kind: &str, rel: &str) -> Vec<Row> {
    let d = fixture(rel);
    let a = one(&format!("/srv/app/{kind}"), &d);
    rows(&a)
        .into_iter()
        .map(|(n, v, p, e)| -> Row { (n.to_owned().leak(), v.to_owned().leak(), p.to_owned().leak(), e) })
        .collect()
}

#[test]
fn wants_installed_manifests_and_lockfiles_only() {
    assert_wants(
        &Npm,
        &[
            "/app/node_modules/lodash/package.json",
            "/app/node_modules/@babel/core/package.json",
            "/app/node_modules/a/node_modules/b/package.json",
            "/app/node_modules/a/node_modules/@s/b/package.json",
            "/app/node_modules/.pnpm/x@1.0.0/node_modules/x/package.json",
            "/node_modules/x/package.json",
            "/usr/local/lib/node_modules/npm/node_modules/semver/package.json",
            "/app/package.json",
            "/package.json",
            "/app/package-lock.json",
            "/app/npm-shrinkwrap.json",
            "/app/yarn.lock",
            "/app/pnpm-lock.yaml",
        ],
        &[
            "/app/node_modules/foo/test/fixtures/package.json",
            "/app/node_modules/foo/lib/package.json",
            "/app/node_modules/@babel/package.json",
            "/app/node_modules/@/x/package.json",
            "/app/node_modules/.cache/x/package.json",
            "/app/node_modules/package.json",
            "/app/node_modules/wrappy/package-lock.json",
            "/app/node_modules/x/yarn.lock",
            "/app/node_modules/.package-lock.json",
            "/app/package.json5",
            "/app/xpackage.json",
            "/app/yarn.lock.bak",
            "package.json",
        ],
    );
}

#[test]
fn installed_packages_scoped_nested_and_the_project() {
    let babel = local("npm/testdata/babel-core.package.json");
    let npm_cli = local("npm/testdata/npm-cli.package.json");
    let lock = fixture(&format!("{TRIVY}/npm/testdata/happy/package-lock.json"));
    let a = run(&[
        ("/app/node_modules/@babel/core/package.json", &babel),
        (
            "/app/node_modules/lodash/package.json",
            br#"{"name":"lodash","version":"4.17.21"}"#,
        ),
        (
            "/app/node_modules/foo/node_modules/lodash/package.json",
            br#"{"version":"4.17.4","name":"lodash","dependencies":{}}"#,
        ),
        // An alias install (`"foo-lodash": "npm:lodash@3"`): the real package.
        (
            "/app/node_modules/foo-lodash/package.json",
            br#"{"name":"lodash","version":"3.10.1"}"#,
        ),
        ("/usr/local/lib/node_modules/npm/package.json", &npm_cli),
        // The project, with a lockfile and node_modules beside it: the
        // lockfile is not read.
        (
            "/app/package.json",
            br#"{"name":"my-app","version":"1.2.3","private":true}"#,
        ),
        ("/app/package-lock.json", &lock),
        // A package.json that is not a project's: nothing.
        (
            "/usr/share/doc/x/package.json",
            br#"{"name":"x","version":"1.0.0"}"#,
        ),
        (
            "/app/node_modules/broken/package.json",
            b"{\"name\": \"broken\", \"version\": ",
        ),
        (
            "/app/node_modules/noversion/package.json",
            br#"{"name":"noversion"}"#,
        ),
    ]);
    assert_eq!(
        rows(&a),
        [
            ("@babel/core", "7.0.0", "pkg:npm/%40babel/core@7.0.0", Installed),
            // In path order: `foo-lodash` sorts before `foo/`.
            ("lodash", "3.10.1", "pkg:npm/lodash@3.10.1", Installed),
            ("lodash", "4.17.4", "pkg:npm/lodash@4.17.4", Installed),
            ("lodash", "4.17.21", "pkg:npm/lodash@4.17.21", Installed),
            ("my-app", "1.2.3", "pkg:npm/my-app@1.2.3", App),
            ("npm", "6.14.6", "pkg:npm/npm@6.14.6", Installed),
        ]
    );
    assert_eq!(
        a.packages[2].path,
        "/app/node_modules/foo/node_modules/lodash/package.json"
    );
    assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
    assert!(a.warnings[0].starts_with("npm: /app/node_modules/broken/package.json: not a package.json"));
}

#[test]
fn lockfile_is_read_only_without_node_modules_beside_it() {
    let lock = fixture(&format!("{TRIVY}/npm/testdata/no-node_modules/package-lock.json"));
    let dep = br#"{"name":"ms","version":"2.1.3"}"#;
    // node_modules of another project, and one in a subdirectory of the
    // lockfile's (a nested project's), are not beside it.
    let a = run(&[
        ("/srv/app/package-lock.json", &lock),
        ("/srv/other/node_modules/ms/package.json", dep),
        ("/srv/app/sub/node_modules/ms/package.json", dep),
    ]);
    let lockfile: Vec<_> = a.packages.iter().filter(|p| p.evidence == Lockfile).collect();
    assert!(!lockfile.is_empty());
    assert!(lockfile.iter().all(|p| p.path == "/srv/app/package-lock.json"));
    // Beside it: the lockfile yields nothing.
    let a = run(&[
        ("/srv/app/package-lock.json", &lock),
        ("/srv/app/node_modules/ms/package.json", dep),
    ]);
    assert_eq!(rows(&a), [("ms", "2.1.3", "pkg:npm/ms@2.1.3", Installed)]);
    // A project package.json with only a lockfile beside it is the app.
    let a = run(&[
        ("/srv/app/package-lock.json", &lock),
        ("/srv/app/package.json", br#"{"name":"srv","version":"0.1.0"}"#),
    ]);
    assert!(rows(&a).contains(&("srv", "0.1.0", "pkg:npm/srv@0.1.0", App)));
}

#[test]
fn package_lock_v1_v2_v3() {
    let all = |l| -> Vec<Row> { l };
    let v1 = lock("package-lock.json", &format!("{SYFT}/pkg-lock/package-lock.json"));
    assert_eq!(
        all(v1),
        [
            (
                "@actions/core",
                "1.6.0",
                "pkg:npm/%40actions/core@1.6.0",
                Lockfile
            ),
            ("ansi-regex", "3.0.0", "pkg:npm/ansi-regex@3.0.0", Lockfile),
            ("cowsay", "1.4.0", "pkg:npm/cowsay@1.4.0", Lockfile),
            ("get-stdin", "5.0.1", "pkg:npm/get-stdin@5.0.1", Lockfile),
            (
                "is-fullwidth-code-point",
                "2.0.0",
                "pkg:npm/is-fullwidth-code-point@2.0.0",
                Lockfile
            ),
            ("minimist", "0.0.10", "pkg:npm/minimist@0.0.10", Lockfile),
            ("optimist", "0.6.1", "pkg:npm/optimist@0.6.1", Lockfile),
            ("string-width", "2.1.1", "pkg:npm/string-width@2.1.1", Lockfile),
            ("strip-ansi", "4.0.0", "pkg:npm/strip-ansi@4.0.0", Lockfile),
            ("strip-eof", "1.0.0", "pkg:npm/strip-eof@1.0.0", Lockfile),
            ("wordwrap", "0.0.3", "pkg:npm/wordwrap@0.0.3", Lockfile),
        ]
    );
    // v2: the `packages` map; workspace members, links and the root are
    // skipped, an alias (`node_modules/babel-code-frame` naming
    // `@babel/code-frame`) is the real package, duplicates are one.
    let v2 = lock(
        "package-lock.json",
        &format!("{SCALIBR}/annotator/misc/npmsource/testdata/package-lock.json"),
    );
    assert_eq!(
        v2,
        [
            ("acorn", "5.5.0", "pkg:npm/acorn@5.5.0", Lockfile),
            ("ajv", "5.5.2", "pkg:npm/ajv@5.5.2", Lockfile),
            (
                "@babel/code-frame",
                "7.0.0",
                "pkg:npm/%40babel/code-frame@7.0.0",
                Lockfile
            ),
            ("local-package", "1.2.0", "pkg:npm/local-package@1.2.0", Lockfile),
            ("wrappy", "1.0.2", "pkg:npm/wrappy@1.0.2", Lockfile),
        ]
    );
    let v3 = lock(
        "package-lock.json",
        &format!("{SCALIBR}/guidedremediation/testdata/npm/basic/package-lock.json"),
    );
    assert_eq!(
        v3,
        [
            ("bar", "1.0.0", "pkg:npm/bar@1.0.0", Lockfile),
            ("baz", "1.0.0", "pkg:npm/baz@1.0.0", Lockfile),
            ("baz", "2.0.0", "pkg:npm/baz@2.0.0", Lockfile),
            ("foo", "1.0.0", "pkg:npm/foo@1.0.0", Lockfile),
        ]
    );
    // The v1 nested tree and an alias in it.
    let a = one(
        "/a/package-lock.json",
        br#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}},"x":{"version":"npm:@s/real@3.0.0"},"g":{"version":"git+https://h/g.git#abc"}}}"#,
    );
    assert_eq!(
        rows(&a),
        [
            ("a", "1.0.0", "pkg:npm/a@1.0.0", Lockfile),
            ("@s/real", "3.0.0", "pkg:npm/%40s/real@3.0.0", Lockfile),
            ("b", "2.0.0", "pkg:npm/b@2.0.0", Lockfile),
        ]
    );
    // syft's v1 fixture also has a "node_modules/async" dependency: not a name.
    let a = one(
        "/a/package-lock.json",
        &fixture(&format!("{SYFT}/pkg-lock/package-lock.json")),
    );
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
}

#[test]
fn yarn_v1_and_berry() {
    assert_eq!(
        lock("yarn.lock", &format!("{TRIVY}/yarn/testdata/alias/yarn.lock")),
        [
            (
                "@types/node",
                "20.10.5",
                "pkg:npm/%40types/node@20.10.5",
                Lockfile
            ),
            ("debug", "4.3.4", "pkg:npm/debug@4.3.4", Lockfile),
            (
                "@types/jsonstream",
                "0.8.33",
                "pkg:npm/%40types/jsonstream@0.8.33",
                Lockfile
            ),
            ("ms", "2.1.3", "pkg:npm/ms@2.1.3", Lockfile),
            ("@types/uuid", "9.0.7", "pkg:npm/%40types/uuid@9.0.7", Lockfile),
            ("ms", "2.1.2", "pkg:npm/ms@2.1.2", Lockfile),
            ("undici-types", "5.26.5", "pkg:npm/undici-types@5.26.5", Lockfile),
        ]
    );
    let v1 = lock("yarn.lock", &format!("{SYFT}/yarn/yarn.lock"));
    assert_eq!(v1.len(), 9);
    assert_eq!(
        v1[8],
        (
            "c0n-fab_u.laTION",
            "7.7.7",
            "pkg:npm/c0n-fab_u.lation@7.7.7",
            Lockfile
        )
    );
    // berry: the same packages but the workspace root.
    let berry = lock("yarn.lock", &format!("{SYFT}/yarn-berry/yarn.lock"));
    assert_eq!(berry, v1[..8]);
    assert_eq!(
        lock("yarn.lock", &format!("{SYFT}/yarn-berry-dups/yarn.lock")),
        [
            ("async", "3.2.6", "pkg:npm/async@3.2.6", Lockfile),
            ("async", "0.9.2", "pkg:npm/async@0.9.2", Lockfile),
        ]
    );
    // berry monorepo: workspaces skipped, multi-specifier entries once.
    let mono = lock("yarn.lock", &format!("{TRIVY}/yarn/testdata/monorepo/yarn.lock"));
    assert_eq!(mono.len(), 11);
    assert!(
        mono.iter()
            .all(|r| !["c", "package1", "package2", "util1"].contains(&r.0))
    );
    assert!(mono.contains(&("loose-envify", "1.4.0", "pkg:npm/loose-envify@1.4.0", Lockfile)));
}

#[test]
fn pnpm_v5_v6_v9() {
    assert_eq!(
        lock("pnpm-lock.yaml", &format!("{SYFT}/pnpm/pnpm-lock.yaml")),
        [(
            "@bcoe/v8-coverage",
            "0.2.3",
            "pkg:npm/%40bcoe/v8-coverage@0.2.3",
            Lockfile
        )]
    );
    assert_eq!(
        lock(
            "pnpm-lock.yaml",
            &format!("{SYFT}/pnpm-v5-peer-suffix/pnpm-lock.yaml")
        ),
        [
            ("acorn", "8.8.0", "pkg:npm/acorn@8.8.0", Lockfile),
            ("acorn-jsx", "5.3.2", "pkg:npm/acorn-jsx@5.3.2", Lockfile),
            ("webpack-cli", "4.10.0", "pkg:npm/webpack-cli@4.10.0", Lockfile),
        ]
    );
    let v6 = lock("pnpm-lock.yaml", &format!("{SYFT}/pnpm-v6/pnpm-lock.yaml"));
    assert_eq!(v6.len(), 10);
    assert_eq!(
        v6[0],
        ("@babel/core", "7.21.4", "pkg:npm/%40babel/core@7.21.4", Lockfile)
    );
    assert!(v6.contains(&("react-dom", "18.2.0", "pkg:npm/react-dom@18.2.0", Lockfile)));
    assert_eq!(
        lock("pnpm-lock.yaml", &format!("{SYFT}/pnpm-v9/pnpm-lock.yaml")),
        [
            ("@babel/core", "7.24.7", "pkg:npm/%40babel/core@7.24.7", Lockfile),
            (
                "@babel/helper-plugin-utils",
                "7.24.7",
                "pkg:npm/%40babel/helper-plugin-utils@7.24.7",
                Lockfile
            ),
            ("is-positive", "3.1.0", "pkg:npm/is-positive@3.1.0", Lockfile),
            ("rollup", "4.18.0", "pkg:npm/rollup@4.18.0", Lockfile),
        ]
    );
    // Peers only under `snapshots:`, which is not read.
    assert_eq!(
        lock(
            "pnpm-lock.yaml",
            &format!("{SYFT}/pnpm-v9-snapshots/pnpm-lock.yaml")
        )
        .len(),
        6
    );
    // Two documents: the package manager's own lockfile and the project's.
    assert_eq!(
        lock("pnpm-lock.yaml", &format!("{SYFT}/pnpm-multi-doc/pnpm-lock.yaml")),
        [
            (
                "@pnpm/exe.linux-x64",
                "12.0.0-rc.3",
                "pkg:npm/%40pnpm/exe.linux-x64@12.0.0-rc.3",
                Lockfile
            ),
            ("pnpm", "12.0.0-rc.3", "pkg:npm/pnpm@12.0.0-rc.3", Lockfile),
            ("minimist", "1.2.0", "pkg:npm/minimist@1.2.0", Lockfile),
        ]
    );
    // Other sources have no version in the key; a v6 key with peers.
    let a = one(
        "/a/pnpm-lock.yaml",
        b"lockfileVersion: '6.0'\n\npackages:\n\n  /@s/a@1.0.0(react@18.2.0):\n    resolution: {integrity: x}\n  github.com/u/r/abc:\n    name: r\n    version: 1.0.0\n  '@s/b@https://codeload.example/b.tgz':\n    version: 2.0.0\n",
    );
    assert_eq!(rows(&a), [("@s/a", "1.0.0", "pkg:npm/%40s/a@1.0.0", Lockfile)]);
}

#[test]
fn broken_files_are_warnings_and_oversized_files_skipped() {
    let a = one(
        "/a/package-lock.json",
        &fixture(&format!("{SYFT}/corrupt/package-lock.json")),
    );
    assert!(a.packages.is_empty() && a.warnings.len() == 1, "{:?}", a.warnings);
    let a = one(
        "/a/pnpm-lock.yaml",
        &fixture(&format!("{SYFT}/corrupt/pnpm-lock.yaml")),
    );
    assert!(a.packages.is_empty());
    let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
    let a = run(&[
        ("/a/node_modules/x/package.json", &big),
        (
            "/a/node_modules/y/package.json",
            br#"{"name":"y","version":"1.0.0"}"#,
        ),
    ]);
    assert_eq!(rows(&a), [("y", "1.0.0", "pkg:npm/y@1.0.0", Installed)]);
    assert_eq!(a.warnings.len(), 1);
    // Deep nesting: serde_json's recursion limit, a warning.
    let deep = [&b"{\"dependencies\":"[..], &b"[".repeat(100_000)].concat();
    let a = one("/a/package-lock.json", &deep);
    assert!(a.packages.is_empty() && a.warnings.len() == 1);
}

#[test]
fn large_lockfiles_are_read_in_one_pass() {
    // 50,000 entries each: linear parsing, every entry kept (under the cap).
    let n = 50_000;
    let mut lock = String::from(r#"{"lockfileVersion":3,"packages":{"":{}"#);
    let mut yarn = String::from("# yarn lockfile v1\n\n");
    for i in 0..n {
        lock.push_str(&format!(r#","node_modules/p{i}":{{"version":"1.0.{i}"}}"#));
        yarn.push_str(&format!("p{i}@^1.0.0:\n  version \"1.0.{i}\"\n\n"));
    }
    lock.push_str("}}");
    let start = std::time::Instant::now();
    let a = run(&[
        ("/a/package-lock.json", lock.as_bytes()),
        ("/b/yarn.lock", yarn.as_bytes()),
    ]);
    assert_eq!(a.packages.len(), 2 * n);
    assert!(a.warnings.is_empty());
    assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
}
