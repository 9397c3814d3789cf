use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use ::zip::write::SimpleFileOptions;
use ::zip::{CompressionMethod, ZipWriter};

use super::meta::{self, FileName};
use super::*;
use crate::analyzers::HEAD_BYTES;
use crate::layer::Limits;

const TESTDATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/pkgdb/anchore+syft/syft/pkg/cataloger/java/testdata/jar-metadata"
);

/// A `pom.properties` from Syft's test data (real files from real jars).
fn pom(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{TESTDATA}/{rel}")).unwrap()
}

fn opensaml() -> Vec<u8> {
    pom("opensaml-core-3.4.6/META-INF/maven/org.opensaml/opensaml-core/pom.properties")
}

const STORED: CompressionMethod = CompressionMethod::Stored;
const DEFLATED: CompressionMethod = CompressionMethod::Deflated;

/// How the zip crate writes a jar.
#[derive(Clone, Copy, Debug)]
enum Writer {
    /// Sizes in every local header.
    Sized,
    /// Sizes in data descriptors after the data (flag bit 3), as a writer
    /// that cannot seek back does (Java's `JarOutputStream` too).
    Streamed,
    /// Zip64 extra fields with the sizes (`0xffffffff` in the header).
    Zip64,
}

fn jar(writer: Writer, entries: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
    fn add<W: Write + std::io::Seek>(
        z: &mut ZipWriter<W>,
        large: bool,
        e: &[(&str, &[u8], CompressionMethod)],
    ) {
        for (name, data, method) in e {
            let options = SimpleFileOptions::default()
                .compression_method(*method)
                .large_file(large);
            z.start_file(*name, options).unwrap();
            z.write_all(data).unwrap();
        }
    }
    let file = match writer {
        Writer::Sized | Writer::Zip64 => {
            let mut z = ZipWriter::new(Cursor::new(Vec::new()));
            add(&mut z, matches!(writer, Writer::Zip64), entries);
            z.finish().unwrap().into_inner()
        }
        Writer::Streamed => {
            let mut z = ZipWriter::new_stream(Vec::new());
            for (name, data, method) in entries {
                let options = SimpleFileOptions::default().compression_method(*method);
                z.start_file(*name, options).unwrap();
                z.write_all(data).unwrap();
            }
            z.finish().unwrap().into_inner()
        }
    };
    // The first local header is written as the test means it.
    if !entries.is_empty() {
        let bit3 = file[6] & 0x08 != 0;
        let sizes = &file[18..26];
        match writer {
            Writer::Sized => assert!(!bit3 && sizes != [0xff; 8]),
            Writer::Streamed => assert!(bit3 && sizes == [0; 8]),
            Writer::Zip64 => assert!(!bit3 && sizes == [0xff; 8]),
        }
    }
    file
}

/// Some class files: bytes that are neither metadata nor archives.
fn classes() -> Vec<(String, Vec<u8>)> {
    (0..20)
        .map(|i| {
            let data: Vec<u8> = (0..3000u32).map(|j| (j * 7 + i) as u8).collect();
            (format!("org/example/C{i}.class"), data)
        })
        .collect()
}

fn run_with(path: &str, file: &[u8], chunk: usize, limits: &Limits, max_inflated: u64) -> Option<Analysis> {
    let entry = EntryHead {
        path,
        mode: 0o644,
        size: file.len() as u64,
        head: &file[..file.len().min(HEAD_BYTES)],
        limits,
    };
    JavaArchives.open(&entry)?;
    let mut sink: Box<dyn EntrySink> = Box::new(Sink::new(&entry, max_inflated)?);
    for piece in file.chunks(chunk.max(1)) {
        if !sink.write(piece) {
            break;
        }
    }
    Some(sink.finish(true))
}

fn run(path: &str, file: &[u8], chunk: usize) -> Analysis {
    run_with(path, file, chunk, &Limits::default(), MAX_INFLATED).expect("a jar")
}

/// `(path, name, version)` of every package.
fn found(a: &Analysis) -> Vec<(String, String, String)> {
    a.packages
        .iter()
        .map(|p| (p.path.clone(), p.name.clone(), p.version.clone()))
        .collect()
}

fn row(path: &str, name: &str, version: &str) -> (String, String, String) {
    (path.to_owned(), name.to_owned(), version.to_owned())
}

const CHUNKS: [usize; 4] = [1, 7, 4096, 65536];

#[test]
fn pom_properties_read_from_stored_deflated_sized_and_streamed_entries() {
    let manifest =
        b"Manifest-Version: 1.0\r\nImplementation-Title: other\r\nImplementation-Version: 9\r\n\r\n";
    let classes = classes();
    let pom = opensaml();
    for writer in [Writer::Sized, Writer::Streamed, Writer::Zip64] {
        for method in [STORED, DEFLATED] {
            if matches!((writer, method), (Writer::Streamed, CompressionMethod::Stored)) {
                continue; // cannot be delimited: its own test below
            }
            // The manifest first and pom.properties last, as Maven writes them.
            let mut entries: Vec<(&str, &[u8], CompressionMethod)> =
                vec![("META-INF/MANIFEST.MF", &manifest[..], method)];
            entries.extend(classes.iter().map(|(n, d)| (n.as_str(), d.as_slice(), method)));
            entries.push((
                "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
                &pom,
                method,
            ));
            let file = jar(writer, &entries);
            for chunk in CHUNKS {
                let a = run("/usr/share/java/opensaml-core.jar", &file, chunk);
                let what = format!("{writer:?} {method:?} in chunks of {chunk}");
                assert_eq!(
                    found(&a),
                    [row(
                        "/usr/share/java/opensaml-core.jar",
                        "org.opensaml:opensaml-core",
                        "3.4.6"
                    )],
                    "{what}"
                );
                assert!(a.warnings.is_empty(), "{what}: {:?}", a.warnings);
                let p = &a.packages[0];
                assert_eq!(p.ecosystem, Ecosystem::Maven);
                assert_eq!(p.purl, "pkg:maven/org.opensaml/opensaml-core@3.4.6");
                assert_eq!(p.evidence, Evidence::Installed);
                assert!(p.layer.is_none());
                crate::analyzers::conformance::check_purl(p, &what);
            }
        }
    }
}

#[test]
fn shaded_jar_lists_every_embedded_artifact_once() {
    let api = pom("api-all-2.0.0-sources/META-INF/maven/org.apache.directory.api/api-all/pom.properties");
    let asn1 =
        pom("api-all-2.0.0-sources/META-INF/maven/org.apache.directory.api/api-asn1-api/pom.properties");
    let saml = opensaml();
    let com = pom("org.multiple-thename/META-INF/maven/com.multiple/thename/pom.properties");
    let org = pom("org.multiple-thename/META-INF/maven/org.multiple/thename/pom.properties");
    let file = jar(
        Writer::Sized,
        &[
            ("META-INF/MANIFEST.MF", b"Implementation-Version: 1\n", DEFLATED),
            (
                "META-INF/maven/org.apache.directory.api/api-all/pom.properties",
                &api,
                DEFLATED,
            ),
            (
                "META-INF/maven/org.apache.directory.api/api-asn1-api/pom.properties",
                &asn1,
                STORED,
            ),
            (
                "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
                &saml,
                DEFLATED,
            ),
            // The same artifact again (a shading mistake): listed once.
            (
                "META-INF/maven/org.opensaml/opensaml-core/copy/pom.properties",
                &saml,
                DEFLATED,
            ),
            // One artifact id in two groups: two packages.
            (
                "META-INF/maven/com.multiple/thename/pom.properties",
                &com,
                DEFLATED,
            ),
            (
                "META-INF/maven/org.multiple/thename/pom.properties",
                &org,
                DEFLATED,
            ),
        ],
    );
    let a = run("/app/api-all-2.0.0.jar", &file, 4096);
    let p = "/app/api-all-2.0.0.jar";
    assert_eq!(
        found(&a),
        [
            row(p, "com.multiple:thename", "10.11.12"),
            row(p, "org.apache.directory.api:api-all", "2.0.0"),
            row(p, "org.apache.directory.api:api-asn1-api", "2.0.0"),
            row(p, "org.multiple:thename", "10.11.12"),
            row(p, "org.opensaml:opensaml-core", "3.4.6"),
        ]
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
}

#[test]
fn manifest_lists_the_jar_beside_embedded_artifacts_not_its_own() {
    // Debian's guice.jar (4.2.3): cglib shaded in, guice's own
    // pom.properties not kept; its manifest (main section, abridged) names it.
    let guice_manifest = b"Manifest-Version: 1.0\r\nCreated-By: Apache Maven 3.6.3\r\n\
        Automatic-Module-Name: com.google.guice\r\nBundle-Name: guice\r\n\
        Bundle-SymbolicName: com.google.inject\r\nBundle-Version: 4.2.3\r\n\r\n";
    let cglib = b"#Created by Apache Maven 3.6.3\nversion=3.2.12\ngroupId=cglib\nartifactId=cglib\n";
    let file = jar(
        Writer::Sized,
        &[
            ("META-INF/MANIFEST.MF", guice_manifest, DEFLATED),
            ("META-INF/maven/cglib/cglib/pom.properties", cglib, DEFLATED),
        ],
    );
    let a = run("/usr/share/java/guice.jar", &file, 7);
    let p = "/usr/share/java/guice.jar";
    assert_eq!(
        found(&a),
        [
            row(p, "cglib:cglib", "3.2.12"),
            row(p, "com.google.inject:guice", "4.2.3")
        ]
    );
    assert!(a.packages.iter().all(|p| p.evidence == Evidence::Installed));
    // Debian's maven3-slf4j-provider.jar: its own pom.properties has the
    // manifest's version (the file name and title differ from its artifact).
    let manifest = b"Manifest-Version: 1.0\nSpecification-Title: Maven SLF4J Simple Provider\n\
        Specification-Version: 3.8\nImplementation-Title: Maven SLF4J Simple Provider\n\
        Implementation-Version: 3.8.7\n\n";
    let own = b"artifactId=maven-slf4j-provider\ngroupId=org.apache.maven\nversion=3.8.7\n";
    let simple = b"artifactId=slf4j-simple\ngroupId=org.slf4j\nversion=1.7.32\n";
    let file = jar(
        Writer::Streamed,
        &[
            ("META-INF/MANIFEST.MF", manifest, DEFLATED),
            (
                "META-INF/maven/org.apache.maven/maven-slf4j-provider/pom.properties",
                own,
                DEFLATED,
            ),
            (
                "META-INF/maven/org.slf4j/slf4j-simple/pom.properties",
                simple,
                DEFLATED,
            ),
        ],
    );
    let p = "/usr/share/java/maven3-slf4j-provider.jar";
    let a = run(p, &file, 4096);
    assert_eq!(
        found(&a),
        [
            row(p, "org.apache.maven:maven-slf4j-provider", "3.8.7"),
            row(p, "org.slf4j:slf4j-simple", "1.7.32")
        ]
    );
    // Debian's geronimo-annotation-1.3-spec.jar: an OSGi version and a
    // symbolic name under its own group.
    let manifest = b"Bundle-SymbolicName: org.apache.geronimo.specs.geronimo-annotation_1.3\n\
        Bundle-Version: 1.3.0\nSpecification-Title: JSR-250 Common Annotations 1.3\n";
    let own = b"groupId=org.apache.geronimo.specs\nartifactId=geronimo-annotation_1.3_spec\nversion=1.3\n";
    let p = "/usr/share/java/geronimo-annotation-1.3-spec.jar";
    let a = run(
        p,
        &jar(Writer::Sized, &[("META-INF/MANIFEST.MF", manifest, DEFLATED)]),
        4096,
    );
    assert_eq!(a.packages.len(), 1, "the manifest alone");
    for version in [&b"1.3"[..], b"9"] {
        let pom = [&own[..own.len() - 4], version, b"\n"].concat();
        let file = jar(
            Writer::Sized,
            &[
                ("META-INF/MANIFEST.MF", manifest, DEFLATED),
                ("META-INF/maven/g/a/pom.properties", &pom, DEFLATED),
            ],
        );
        let a = run(p, &file, 4096);
        assert_eq!(a.packages.len(), 1, "{:?}", found(&a));
        assert_eq!(
            a.packages[0].name,
            "org.apache.geronimo.specs:geronimo-annotation_1.3_spec"
        );
    }
}

/// log4j-core 2.13.1's manifest (its main section, as the jar has it, lines
/// wrapped at 72 bytes), in a jar built without `pom.properties`.
const LOG4J_MANIFEST: &str = "Manifest-Version: 1.0\r\n\
Automatic-Module-Name: org.apache.logging.log4j.core\r\n\
Bundle-Name: Apache Log4j Core\r\n\
Bundle-SymbolicName: org.apache.logging.log4j.core\r\n\
Bundle-Version: 2.13.1\r\n\
Implementation-Title: Apache Log4j Core\r\n\
Implementation-URL: https://logging.apache.org/log4j/2.x/log4j-core/\r\n\
Implementation-Vendor-Id: org.apache.logging.log\r\n 4j\r\n\
Implementation-Version: 2.13.1\r\n\
Specification-Title: Apache Log4j Core\r\n\
Specification-Version: 2.13.1\r\n\
\r\n\
Name: org/apache/logging/log4j/core/Logger.class\r\n\
Implementation-Version: 9.9.9\r\n\r\n";

#[test]
fn manifest_only_jar() {
    let classes = classes();
    let mut entries: Vec<(&str, &[u8], CompressionMethod)> =
        vec![("META-INF/MANIFEST.MF", LOG4J_MANIFEST.as_bytes(), DEFLATED)];
    entries.extend(classes.iter().map(|(n, d)| (n.as_str(), d.as_slice(), DEFLATED)));
    for writer in [Writer::Sized, Writer::Streamed] {
        let file = jar(writer, &entries);
        for chunk in CHUNKS {
            let a = run("/opt/lib/log4j-core-2.13.1.jar", &file, chunk);
            assert_eq!(
                found(&a),
                [row(
                    "/opt/lib/log4j-core-2.13.1.jar",
                    "org.apache.logging.log4j:log4j-core",
                    "2.13.1"
                )],
                "{writer:?} {chunk}"
            );
            assert_eq!(a.packages[0].evidence, Evidence::Installed);
            assert_eq!(
                a.packages[0].purl,
                "pkg:maven/org.apache.logging.log4j/log4j-core@2.13.1"
            );
        }
    }
    // Renamed: the artifact comes from the manifest's titles only when one
    // is an artifact id; "Apache Log4j Core" is not, so the file's stem is.
    let file = jar(Writer::Sized, &entries);
    let a = run("/opt/lib/core.jar", &file, 4096);
    assert_eq!(
        found(&a),
        [row(
            "/opt/lib/core.jar",
            "org.apache.logging.log4j:core",
            "2.13.1"
        )]
    );
}

#[test]
fn manifest_rules() {
    let m = meta::manifest(LOG4J_MANIFEST.as_bytes(), false);
    assert_eq!(
        m.get("implementation-vendor-id"),
        Some("org.apache.logging.log4j")
    );
    assert_eq!(
        m.get("Implementation-Version"),
        Some("2.13.1"),
        "the main section only"
    );
    let name = |n: &str| FileName {
        name: Some(n.to_owned()),
        version: None,
    };
    let nameless = FileName {
        name: None,
        version: None,
    };
    let got =
        |text: &str, file: &FileName| meta::from_manifest(&meta::manifest(text.as_bytes(), false), file);
    let t = |g: &str, a: &str, v: &str| Some((g.to_owned(), a.to_owned(), v.to_owned()));
    // The bundle plugin's default names, undone.
    let bsn = "Bundle-SymbolicName: org.apache.logging.log4j.core;singleton:=true\nBundle-Version: 2.19.0\n";
    assert_eq!(
        got(bsn, &name("log4j-core")),
        t("org.apache.logging.log4j", "log4j-core", "2.19.0")
    );
    let bsn = "Bundle-SymbolicName: com.fasterxml.jackson.core.jackson-databind\nBundle-Version: 2.15.2\n";
    assert_eq!(
        got(bsn, &name("jackson-databind")),
        t("com.fasterxml.jackson.core", "jackson-databind", "2.15.2")
    );
    // Any other dotted name whole, as Syft.
    let bsn = "Bundle-SymbolicName: org.example.tool\nImplementation-Version: 1.0\n";
    assert_eq!(got(bsn, &name("widget")), t("org.example.tool", "widget", "1.0"));
    // Gradle-built (spring-core): a title that is an artifact id, no group.
    let spring = "Implementation-Title: spring-core\nImplementation-Version: 5.3.20\nAutomatic-Module-Name: spring.core\n";
    assert_eq!(got(spring, &nameless), t("spring-core", "spring-core", "5.3.20"));
    // Syft's fixture: version precedence, a title with no file name.
    let syft = "Manifest-Version: 1.0\nName: the-best-name\nSpecification-Title: the-spec-title\n\
        Specification-Vendor: the-spec-vendor\nSpecification-Version: the-spec-version\n\
        Implementation-Title: the-impl-title\nImplementation-Vendor: the-impl-vendor\n\
        Implementation-Version: the-impl-version\n\n";
    assert_eq!(
        got(syft, &nameless),
        t("the-impl-title", "the-impl-title", "the-impl-version")
    );
    // No version, or no name: not usable.
    assert_eq!(got("Implementation-Title: x\n", &name("x")), None);
    assert_eq!(
        got(
            "Implementation-Title: Two Words\nImplementation-Version: 1\n",
            &nameless
        ),
        None
    );
    // A cut manifest drops its partial last line.
    let cut = meta::manifest(b"Implementation-Version: 1.2.3\nBundle-Version: 4.5", true);
    assert_eq!(
        (cut.get("Implementation-Version"), cut.get("Bundle-Version")),
        (Some("1.2.3"), None)
    );
}

#[test]
fn pom_properties_rules() {
    let p =
        meta::pom_properties(b"#c\n! c\n groupId = org.x\nartifactId:a\\-b\nversion=1.0\\:beta\nother=1\n")
            .unwrap();
    assert_eq!(
        (p.group.as_str(), p.artifact.as_str(), p.version.as_str()),
        ("org.x", "a-b", "1.0:beta")
    );
    for bad in [
        &b"artifactId=a\nversion=1\n"[..],
        b"groupId=g\nartifactId=a\nversion=${project.version}\n",
        b"groupId=g h\nartifactId=a\nversion=1\n",
        b"groupId=g\nartifactId=a\nversion=\n",
        b"\xff\xfe",
    ] {
        assert!(
            meta::pom_properties(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn file_name_rule() {
    let f = |p: &str| {
        let f = meta::file_name(p);
        (f.name, f.version)
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        f("/usr/share/java/log4j-core-2.14.1.jar"),
        (s("log4j-core"), s("2.14.1"))
    );
    assert_eq!(
        f("/a.war!/WEB-INF/lib/guava-31.1-jre.jar"),
        (s("guava"), s("31.1-jre"))
    );
    assert_eq!(
        f("/x/spring-boot-2.7.0.RELEASE.jar"),
        (s("spring-boot"), s("2.7.0.RELEASE"))
    );
    assert_eq!(f("/x/my-http2-server-5.jar"), (s("my-http2-server"), s("5")));
    assert_eq!(f("/x/log4j-core.jar"), (s("log4j-core"), None));
    assert_eq!(f("/x/2.0-x.jar"), (None, None));
}

#[test]
fn file_name_is_the_last_resort() {
    let classes = classes();
    let entries: Vec<(&str, &[u8], CompressionMethod)> = classes
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), DEFLATED))
        .collect();
    let file = jar(Writer::Streamed, &entries);
    for chunk in CHUNKS {
        let a = run("/usr/share/java/log4j-core-2.14.1.jar", &file, chunk);
        assert_eq!(
            found(&a),
            [row(
                "/usr/share/java/log4j-core-2.14.1.jar",
                "log4j-core:log4j-core",
                "2.14.1"
            )]
        );
        let p = &a.packages[0];
        assert_eq!(p.evidence, Evidence::FileName);
        assert_eq!(p.purl, "pkg:maven/log4j-core/log4j-core@2.14.1");
    }
    // No version in the name: nothing.
    assert!(
        run("/usr/share/java/log4j-core.jar", &file, 4096)
            .packages
            .is_empty()
    );
    // A manifest without a version does not stop the file name.
    let m: &[u8] = b"Manifest-Version: 1.0\nCreated-By: hand\n";
    let file = jar(Writer::Sized, &[("META-INF/MANIFEST.MF", m, STORED)]);
    assert_eq!(run("/x/a-1.jar", &file, 7).packages[0].name, "a:a");
}

/// A jar holding `inner` at `name`, plus its own pom.properties.
fn wrap(
    group: &str,
    artifact: &str,
    name: &str,
    inner: &[u8],
    method: CompressionMethod,
    writer: Writer,
) -> Vec<u8> {
    let pom = format!(
        "groupId={group}\nartifactId={artifact}\nversion=1.{}\n",
        inner.len() % 10
    );
    let pom_path = format!("META-INF/maven/{group}/{artifact}/pom.properties");
    let classes = classes();
    let mut entries: Vec<(&str, &[u8], CompressionMethod)> = vec![(&pom_path, pom.as_bytes(), method)];
    entries.push((&classes[0].0, &classes[0].1, method));
    entries.push((name, inner, method));
    entries.push((&classes[1].0, &classes[1].1, method));
    jar(writer, &entries)
}

#[test]
fn nested_archives_are_read_as_they_inflate() {
    for (writer, method) in [
        (Writer::Sized, STORED),
        (Writer::Sized, DEFLATED),
        (Writer::Streamed, DEFLATED),
        (Writer::Zip64, DEFLATED),
    ] {
        let leaf = wrap("org.leaf", "leaf", "x.txt", b"hello", method, writer);
        let lib = wrap("org.lib", "lib", "lib/leaf-1.0.jar", &leaf, method, writer);
        let war = wrap("org.app", "app", "WEB-INF/lib/lib-2.0.jar", &lib, method, writer);
        for chunk in CHUNKS {
            let a = run("/srv/app.war", &war, chunk);
            let names: Vec<_> = found(&a).into_iter().map(|(p, n, _)| (p, n)).collect();
            assert_eq!(
                names,
                [
                    ("/srv/app.war".to_owned(), "org.app:app".to_owned()),
                    (
                        "/srv/app.war!/WEB-INF/lib/lib-2.0.jar".to_owned(),
                        "org.lib:lib".to_owned()
                    ),
                    (
                        "/srv/app.war!/WEB-INF/lib/lib-2.0.jar!/lib/leaf-1.0.jar".to_owned(),
                        "org.leaf:leaf".to_owned()
                    ),
                ],
                "{writer:?} {method:?} {chunk}"
            );
            assert!(a.warnings.is_empty(), "{:?}", a.warnings);
        }
    }
}

#[test]
fn nesting_past_the_cap_costs_little_and_warns() {
    for (writer, method) in [(Writer::Sized, STORED), (Writer::Streamed, DEFLATED)] {
        let mut file = wrap("g0", "a0", "x.txt", b"x", method, writer);
        for depth in 1..50 {
            file = wrap(
                &format!("g{depth}"),
                &format!("a{depth}"),
                "in.jar",
                &file,
                method,
                writer,
            );
        }
        let started = Instant::now();
        let a = run("/deep.jar", &file, 4096);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The layer is depth 0, this jar 1: three levels with the default cap.
        let names: Vec<_> = a.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["g49:a49", "g48:a48", "g47:a47"], "{writer:?}");
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        assert!(
            a.warnings[0].contains("max_nesting_depth = 3"),
            "{:?}",
            a.warnings
        );
        assert!(
            a.warnings[0].starts_with("/deep.jar!/in.jar!/in.jar!/in.jar"),
            "{:?}",
            a.warnings
        );
        // A cap of 50 reads all of them.
        let limits = Limits {
            max_nesting_depth: 50,
            ..Limits::default()
        };
        let a = run_with("/deep.jar", &file, 65536, &limits, MAX_INFLATED).unwrap();
        assert_eq!(a.packages.len(), 50, "{writer:?}");
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }
}

/// One local entry written by hand: DEFLATED with flag bit 3 (no sizes in
/// the header), then a data descriptor in one of its four forms.
fn descriptor_entry(name: &str, data: &[u8], signed: bool, zip64: bool) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    let deflated = enc.finish().unwrap();
    let mut b = b"PK\x03\x04\x14\x00\x08\x00\x08\x00\0\0\0\0".to_vec();
    b.extend_from_slice(&[0; 12]); // crc, sizes: in the descriptor
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    let extra: &[u8] = if zip64 {
        &[1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    } else {
        &[]
    };
    b.extend_from_slice(&(extra.len() as u16).to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(extra);
    b.extend_from_slice(&deflated);
    if signed {
        b.extend_from_slice(b"PK\x07\x08");
    }
    b.extend_from_slice(&0x1234_5678u32.to_le_bytes()); // crc: not checked
    for size in [deflated.len(), data.len()] {
        if zip64 {
            b.extend_from_slice(&(size as u64).to_le_bytes());
        } else {
            b.extend_from_slice(&(size as u32).to_le_bytes());
        }
    }
    b
}

/// Where the central directory would start: the reader stops at it.
const CENTRAL_DIRECTORY: &[u8] = b"PK\x01\x02 the central directory, never read";

#[test]
fn data_descriptors_in_every_form() {
    let classes = classes();
    for signed in [true, false] {
        for zip64 in [false, true] {
            let mut file = descriptor_entry("META-INF/", b"", signed, zip64);
            file.extend(descriptor_entry(&classes[0].0, &classes[0].1, signed, zip64));
            file.extend(descriptor_entry(
                "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
                &opensaml(),
                signed,
                zip64,
            ));
            file.extend(descriptor_entry(&classes[1].0, &[0; 10], signed, zip64));
            let inner = jar(
                Writer::Streamed,
                &[(
                    "META-INF/maven/g/a/pom.properties",
                    b"groupId=g\nartifactId=a\nversion=2\n",
                    DEFLATED,
                )],
            );
            file.extend(descriptor_entry("BOOT-INF/lib/a-2.jar", &inner, signed, zip64));
            file.extend_from_slice(CENTRAL_DIRECTORY);
            for chunk in CHUNKS {
                let a = run("/app.jar", &file, chunk);
                let what = format!("signed {signed} zip64 {zip64} chunks of {chunk}");
                assert_eq!(
                    found(&a),
                    [
                        row("/app.jar", "org.opensaml:opensaml-core", "3.4.6"),
                        row("/app.jar!/BOOT-INF/lib/a-2.jar", "g:a", "2"),
                    ],
                    "{what}"
                );
                assert!(a.warnings.is_empty(), "{what}: {:?}", a.warnings);
            }
        }
    }
}

#[test]
fn stored_entry_with_a_descriptor_stops_the_archive() {
    let pom = opensaml();
    let mut file = jar(
        Writer::Sized,
        &[(
            "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
            &pom,
            DEFLATED,
        )],
    );
    // Cut before its central directory and followed by a streamed STORED entry.
    let cd = file.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    file.truncate(cd);
    let streamed = jar(Writer::Streamed, &[("a/b.class", b"0123456789", STORED)]);
    let cd = streamed.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    file.extend_from_slice(&streamed[..cd]);
    file.extend_from_slice(CENTRAL_DIRECTORY);
    let a = run("/x/opensaml-core-3.4.6.jar", &file, 4096);
    assert_eq!(
        found(&a),
        [row(
            "/x/opensaml-core-3.4.6.jar",
            "org.opensaml:opensaml-core",
            "3.4.6"
        )]
    );
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    assert!(a.warnings[0].contains("a/b.class"), "{:?}", a.warnings);
}

#[test]
fn zip_bomb_is_bounded() {
    // 24 MiB of zeros, deflated to about 24 KiB, in a nested jar whose
    // entries carry no sizes: only inflating finds their end.
    let zeros = vec![0u8; 24 << 20];
    let bomb = jar(Writer::Streamed, &[("zeros.bin", &zeros, DEFLATED)]);
    let outer = jar(Writer::Streamed, &[("lib/bomb.jar", &bomb, DEFLATED)]);
    let limits = Limits::default();
    let started = Instant::now();
    let a = run_with("/bomb.jar", &outer, 65536, &limits, 4 << 20).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(a.packages.is_empty());
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    assert!(a.warnings[0].contains("zip bomb"), "{:?}", a.warnings);
    // The same bomb STORED in the outer jar: one warning still.
    let outer = jar(Writer::Sized, &[("lib/bomb.jar", &bomb, STORED)]);
    let a = run_with("/bomb.jar", &outer, 4096, &limits, 4 << 20).unwrap();
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    // Sizes in the headers: the unread entry is skipped, never inflated.
    let bomb = jar(Writer::Sized, &[("zeros.bin", &zeros, DEFLATED)]);
    let outer = jar(Writer::Sized, &[("lib/bomb-1.jar", &bomb, DEFLATED)]);
    let a = run_with("/bomb.jar", &outer, 65536, &limits, 4 << 20).unwrap();
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(found(&a), [row("/bomb.jar!/lib/bomb-1.jar", "bomb:bomb", "1")]);
}

#[test]
fn truncated_jars_keep_what_was_read() {
    let pom = opensaml();
    let classes = classes();
    let mut entries: Vec<(&str, &[u8], CompressionMethod)> = vec![(
        "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
        &pom,
        DEFLATED,
    )];
    entries.extend(classes.iter().map(|(n, d)| (n.as_str(), d.as_slice(), DEFLATED)));
    for writer in [Writer::Sized, Writer::Streamed] {
        let file = jar(writer, &entries);
        let cd = file.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        for n in (31..cd).step_by(97).chain([cd - 1]) {
            let a = run("/x/opensaml-core-3.4.6.jar", &file[..n], 4096);
            assert!(a.packages.len() <= 1, "{n}");
            assert!(
                a.packages.iter().all(|p| p.evidence == Evidence::Installed),
                "{n}"
            );
            assert_eq!(a.warnings.len(), 1, "cut at {n}: {:?}", a.warnings);
            assert!(a.warnings[0].contains("truncated"), "{n}: {:?}", a.warnings);
        }
        // Cut after the pom.properties: it is listed.
        let a = run("/x/opensaml-core-3.4.6.jar", &file[..cd - 1], 4096);
        assert_eq!(a.packages.len(), 1);
    }
}

#[test]
fn garbage_after_the_magic_and_files_not_opened() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for len in [0, 1, 29, 30, 100, 5000, 100_000] {
        let mut file = b"PK\x03\x04".to_vec();
        file.extend((0..len).map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        }));
        for chunk in [1, 7, 4096] {
            if chunk == 1 && len > 5000 {
                continue;
            }
            let a = run("/x/g-1.0.jar", &file, chunk);
            assert!(a.packages.is_empty(), "{len} {chunk}: {:?}", a.packages);
        }
    }
    // A header whose name and extra say 64 KiB each, then nothing.
    let mut file = b"PK\x03\x04".to_vec();
    file.extend_from_slice(&[0; 22]);
    file.extend_from_slice(&[0xff; 4]);
    let a = run("/x/g.jar", &file, 4096);
    assert!(a.packages.is_empty() && a.warnings.len() == 1, "{:?}", a.warnings);

    let file = jar(
        Writer::Sized,
        &[(
            "META-INF/maven/g/a/pom.properties",
            b"groupId=g\nartifactId=a\nversion=1\n",
            DEFLATED,
        )],
    );
    let limits = Limits::default();
    for (path, data) in [
        ("/x/a.zip", &file[..]),
        ("/x/a.JAR.txt", &file[..]),
        ("/x/.jar", &file[..]),
        ("/x/a.jar", b"MZ\x90\0"),
    ] {
        let head = &data[..data.len().min(HEAD_BYTES)];
        let entry = EntryHead {
            path,
            mode: 0o644,
            size: data.len() as u64,
            head,
            limits: &limits,
        };
        assert!(JavaArchives.open(&entry).is_none(), "{path}");
    }
    // Every extension, any case.
    for ext in ["jar", "WAR", "ear", "jpi", "hpi"] {
        let a = run(&format!("/x/a.{ext}"), &file, 4096);
        assert_eq!(a.packages.len(), 1, "{ext}");
    }
}

#[test]
fn a_layer_with_jars_streams_them_and_reads_on() {
    const STATUS: &[u8] = b"Package: libopensaml-java\nStatus: install ok installed\nVersion: 3.4.6-1\n\n";
    use sha2::Digest as _;
    let pom = opensaml();
    let file = jar(
        Writer::Streamed,
        &[
            (
                "META-INF/maven/org.opensaml/opensaml-core/pom.properties",
                &pom,
                DEFLATED,
            ),
            ("org/opensaml/A.class", &[7; 100_000], DEFLATED),
        ],
    );
    let mut layer = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        layer.append_data(&mut h, name, data).unwrap();
    };
    add(
        "usr/share/java/opensaml-core-3.4.6.jar",
        tar::EntryType::Regular,
        None,
        &file,
    );
    // Debian's unversioned names are symlinks: never followed.
    add(
        "usr/share/java/opensaml-core.jar",
        tar::EntryType::Symlink,
        Some("opensaml-core-3.4.6.jar"),
        b"",
    );
    add("var/lib/dpkg/status", tar::EntryType::Regular, None, STATUS);
    let blob = layer.into_inner().unwrap();
    let digest = strata_proto::Digest::sha256_from_hex(&hex::encode(sha2::Sha256::digest(&blob))).unwrap();
    let out = crate::layer::analyze_layer(
        &blob[..],
        &digest,
        None,
        &crate::analyzers::all(),
        &Limits::default(),
    )
    .unwrap();
    let got: Vec<_> = out
        .inventory
        .packages
        .iter()
        .map(|p| (p.ecosystem, p.name.as_str(), p.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Ecosystem::Debian, "libopensaml-java", "/var/lib/dpkg/status"),
            (
                Ecosystem::Maven,
                "org.opensaml:opensaml-core",
                "/usr/share/java/opensaml-core-3.4.6.jar"
            ),
        ]
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(
        out.captured_bytes as usize,
        STATUS.len(),
        "the jar is streamed, not captured"
    );
}
