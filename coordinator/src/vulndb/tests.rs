//! Import tests on the real OSV data in `shared/testdata/osv`.

use std::path::{Path, PathBuf};

use strata_proto::{Ecosystem, Severity};

use super::*;

fn testdata(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/osv")).join(rel)
}

fn src(rel: &str) -> Source {
    Source::parse(testdata(rel).to_str().unwrap()).unwrap()
}

async fn import_to(sources: &[Source], dir: &Path, name: &str) -> (ImportSummary, Db) {
    let out = dir.join(name);
    let summary = import(sources, &out).await.unwrap();
    let db = Db::open(&out).unwrap();
    (summary, db)
}

fn advisory<'a>(db: &'a Db, id: &str) -> &'a Advisory {
    db.advisories()
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("{id} not in the database"))
}

#[tokio::test]
async fn real_exports_import_with_withdrawn_ignored_and_aliases_merged() {
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        src("PyPI/all.zip"),
        src("Go/all.zip"),
        src("crates-io/all.zip"),
        src("from-testdata"),
    ];
    let (summary, db) = import_to(&sources, dir.path(), "db").await;

    // 2077 + 3430 + 946 + 43 records read; PyPI carries 10 withdrawn ones.
    assert_eq!(summary.records_read, 2077 + 3430 + 946 + 43);
    assert!(summary.withdrawn >= 10, "withdrawn {}", summary.withdrawn);
    for eco in ["PyPI", "Go", "crates.io", "Maven", "Debian", "Alpine"] {
        assert!(
            summary.per_ecosystem.get(eco).copied().unwrap_or(0) > 0,
            "{eco}: {:?}",
            summary.per_ecosystem
        );
    }
    // Every record of the real exports parses: only ranges whose versions
    // the ecosystem's scheme rejects are skipped (two PyPI records).
    assert!(
        !summary.skipped.iter().any(|s| s.reason.contains("malformed")),
        "{:?}",
        summary.skipped
    );
    assert_eq!(db.status().advisories, summary.advisories);
    assert_eq!(db.version(), summary.version);

    // The PYSEC record appears twice (the PyPI export and a test fixture),
    // linked by CVE-2020-36242: one advisory listing every alias.
    let pysec = advisory(&db, "PYSEC-2021-63");
    assert!(
        pysec.aliases.contains(&"CVE-2020-36242".to_string()),
        "{:?}",
        pysec.aliases
    );
    assert!(
        pysec.aliases.contains(&"GHSA-rhm9-p9w5-fwm7".to_string()),
        "{:?}",
        pysec.aliases
    );
    assert!(!db.advisories().iter().any(|a| a.id == "CVE-2020-36242"));
    let ids_with_alias = db
        .advisories()
        .iter()
        .filter(|a| a.id == "CVE-2020-36242" || a.aliases.iter().any(|x| x == "CVE-2020-36242"));
    assert_eq!(ids_with_alias.count(), 1);

    // RUSTSEC-2019-0012 is scored from its CVSS v3 vector.
    let rustsec = advisory(&db, "RUSTSEC-2019-0012");
    assert_eq!(rustsec.score_source, "CVSS_V3");
    assert!(rustsec.score.is_some_and(|s| s > 0.0));
    assert!(rustsec.aliases.contains(&"CVE-2019-15554".to_string()));
    assert!(
        rustsec
            .affected
            .iter()
            .any(|e| e.ecosystem == Ecosystem::CratesIo && e.name == "smallvec")
    );

    // OS releases are kept: DSA-3029-1 is for Debian 7.
    let dsa = advisory(&db, "DSA-3029-1");
    assert!(
        dsa.affected
            .iter()
            .any(|e| e.ecosystem == Ecosystem::Debian && e.release.as_deref() == Some("7"))
    );
    // Alpine:v3.12 → "3.12".
    let alpine = db
        .advisories()
        .iter()
        .find(|a| a.id == "CVE-2022-27449" || a.aliases.iter().any(|x| x == "CVE-2022-27449"))
        .unwrap();
    assert!(
        alpine
            .affected
            .iter()
            .any(|e| e.ecosystem == Ecosystem::Alpine && e.release.as_deref() == Some("3.12"))
    );

    // Status shows the sources it came from.
    let status = db.status();
    assert_eq!(status.sources.len(), 4);
    assert!(status.to_string().contains("PyPI"));
}

#[tokio::test]
async fn same_data_same_version_different_data_different_version() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = import_to(&[src("crates-io/all.zip"), src("from-testdata")], dir.path(), "a").await;
    let (b, _) = import_to(&[src("from-testdata"), src("crates-io/all.zip")], dir.path(), "b").await;
    let (c, _) = import_to(&[src("crates-io/all.zip")], dir.path(), "c").await;
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
    assert!(a.version.starts_with("osv-"));
}

#[tokio::test]
async fn malformed_records_and_unknown_ecosystems_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("feed");
    std::fs::create_dir_all(feed.join("nested")).unwrap();
    std::fs::copy(
        testdata("from-testdata/PYSEC-2021-63.json"),
        feed.join("PYSEC-2021-63.json"),
    )
    .unwrap();
    std::fs::write(
        feed.join("broken.json"),
        b"{\"id\": \"BROKEN-1\", \"affected\": [",
    )
    .unwrap();
    std::fs::write(feed.join("nested/garbage.json"), [0xffu8, 0x00, 0x13, 0x37]).unwrap();
    std::fs::write(
        feed.join("odd.json"),
        br#"{"id":"ODD-1","affected":[
            {"package":{"ecosystem":"Android","name":"x"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]},
            {"package":{"ecosystem":"PyPI","name":"y"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"not a version!"}]}]},
            {"package":{"ecosystem":"PyPI","name":"z"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"1.0"},{"fixed":"1.2"}]}]},
            {"package":{"ecosystem":"Go","name":"g"},"ranges":[{"type":"GIT","repo":"r","events":[{"introduced":"0"}]}]}
        ]}"#,
    )
    .unwrap();
    std::fs::write(
        feed.join("gone.json"),
        br#"{"id":"GONE-1","withdrawn":"2024-01-01T00:00:00Z","affected":[]}"#,
    )
    .unwrap();
    std::fs::write(feed.join("notes.txt"), b"not a record").unwrap();
    // Real feeds write null where the schema says a list.
    std::fs::write(
        feed.join("nulls.json"),
        br#"{"id":"NULLS-1","aliases":null,"severity":null,"affected":[{"package":{"ecosystem":"PyPI","name":"n"},"versions":null,"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0"}]}]}]}"#,
    )
    .unwrap();

    let (summary, db) = import_to(
        &[Source::parse(feed.to_str().unwrap()).unwrap()],
        dir.path(),
        "db",
    )
    .await;
    assert_eq!(summary.records_read, 6);
    advisory(&db, "NULLS-1");
    assert_eq!(summary.withdrawn, 1);
    assert_eq!(summary.git_ranges_skipped, 1);
    let reasons: Vec<String> = summary
        .skipped
        .iter()
        .map(|s| format!("{} {}", s.id, s.reason))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("malformed JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("ODD-1") && r.contains("unknown ecosystem")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("ODD-1") && r.contains("does not parse")),
        "{reasons:?}"
    );
    // The good entry of the odd record is kept; the bad ones are not.
    let odd = advisory(&db, "ODD-1");
    let names: Vec<&str> = odd.affected.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["z"]);
    advisory(&db, "PYSEC-2021-63");
}

#[tokio::test]
async fn truncated_garbage_and_foreign_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("db");
    import(&[src("from-testdata")], &out).await.unwrap();
    let bytes = std::fs::read(&out).unwrap();
    std::fs::write(dir.path().join("truncated"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.path().join("garbage"), b"this is not a database").unwrap();
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 99;
    std::fs::write(dir.path().join("future"), wrong_version).unwrap();
    for (name, needle) in [
        ("truncated", "truncated"),
        ("garbage", "bad magic"),
        ("future", "format version 99"),
    ] {
        let err = Db::open(&dir.path().join(name)).unwrap_err().to_string();
        assert!(err.contains(needle), "{name}: {err}");
    }
    assert!(Db::open(&dir.path().join("missing")).is_err());
}

#[test]
fn sources_parse_by_form() {
    assert!(matches!(
        Source::parse("https://example.invalid/x.zip").unwrap(),
        Source::Http(_)
    ));
    assert!(matches!(
        Source::parse("s3://bucket/osv/all.zip").unwrap(),
        Source::ObjectStore(_)
    ));
    assert!(matches!(
        Source::parse("file:///tmp/x.zip").unwrap(),
        Source::ObjectStore(_)
    ));
    assert!(Source::parse("ftp://x/y").is_err());
    assert!(Source::parse("/nonexistent/strata/osv").is_err());
    assert!(Source::parse("").is_err());
}

/// Serves `body` for every request on a loopback port, `requests` times.
async fn serve(body: Vec<u8>, requests: usize) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut paths = Vec::new();
        for _ in 0..requests {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = socket.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            paths.push(head.split_whitespace().nth(1).unwrap_or_default().to_owned());
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(header.as_bytes()).await.unwrap();
            socket.write_all(&body).await.unwrap();
            socket.shutdown().await.ok();
        }
        paths
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn http_object_store_and_update_sources_give_the_same_database() {
    let dir = tempfile::tempdir().unwrap();
    let zip = std::fs::read(testdata("crates-io/all.zip")).unwrap();
    let (local, _) = import_to(&[src("crates-io/all.zip")], dir.path(), "local").await;

    let (base, server) = serve(zip.clone(), 1).await;
    let (http, _) = import_to(
        &[Source::parse(&format!("{base}/crates.io/all.zip")).unwrap()],
        dir.path(),
        "http",
    )
    .await;
    server.await.unwrap();
    assert_eq!(http.version, local.version);

    let url = format!(
        "file://{}",
        testdata("crates-io/all.zip").canonicalize().unwrap().display()
    );
    let (object, _) = import_to(&[Source::parse(&url).unwrap()], dir.path(), "object").await;
    assert_eq!(object.version, local.version);

    let (base, server) = serve(zip, 1).await;
    let summary = update_from(
        &base,
        &["crates.io".to_string()],
        &dir.path().join("updated"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(summary.version, local.version);
    assert_eq!(server.await.unwrap(), ["/crates.io/all.zip"]);
    // Feed names with spaces are encoded.
    assert_eq!(url_path_segment("Red Hat"), "Red%20Hat");
}

#[test]
fn in_memory_databases_are_canonical() {
    let a = Advisory {
        id: "X-1".into(),
        modified: String::new(),
        aliases: vec!["B".into(), "A".into(), "A".into()],
        summary: String::new(),
        severity: Severity::High,
        score: None,
        score_source: String::new(),
        affected: vec![],
    };
    let db = Db::from_advisories(vec![a], vec![]);
    assert_eq!(db.advisories()[0].aliases, ["A", "B"]);
    assert!(db.version().starts_with("osv-"));
}

#[test]
fn a_database_of_the_old_format_says_to_re_import() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let mut bytes = b"STRATADB".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(b"whatever followed");
    std::fs::write(&path, &bytes).unwrap();
    let err = Db::open(&path).unwrap_err().to_string();
    assert!(err.contains("format version 1"), "{err}");
    assert!(err.contains("re-import"), "{err}");
    // Bytes round-trip as the file does.
    let db = Db::from_advisories(Vec::new(), vec!["x".into()]);
    let back = Db::from_bytes(&db.to_bytes().unwrap(), "mem").unwrap();
    assert_eq!(back.status(), db.status());
}

/// `modified` is the newest of the records merged into an advisory.
#[tokio::test]
async fn advisories_carry_the_newest_modified_of_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_, db) = import_to(&[src("PyPI/all.zip")], dir.path(), "db").await;
    // PYSEC-2006-1 is one record: its own `modified`.
    assert_eq!(
        advisory(&db, "PYSEC-2006-1").modified,
        "2021-07-05T00:01:17.388273Z"
    );
    assert!(db.advisories().iter().all(|a| !a.modified.is_empty()));
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A feed is read strictly: an unreadable record or a truncated zip fails
/// it whole; withdrawn records are left out; combining feeds merges aliases
/// across them as one import would.
#[test]
fn feed_records_are_strict_and_combine_like_one_import() {
    let good = br#"{"id":"GHSA-1","modified":"2024-01-01T00:00:00Z","aliases":["CVE-1"],
        "affected":[{"package":{"ecosystem":"PyPI","name":"a"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.0"}]}]}]}"#;
    let withdrawn = br#"{"id":"GHSA-2","withdrawn":"2024-01-01T00:00:00Z","affected":[]}"#;
    let other = br#"{"id":"PYSEC-1","modified":"2024-02-01T00:00:00Z","aliases":["CVE-1"],
        "affected":[{"package":{"ecosystem":"PyPI","name":"a"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.1"}]}]}]}"#;
    let zip = zip_of(&[("GHSA-1.json", good), ("GHSA-2.json", withdrawn)]);
    let (a, summary) = FeedRecords::from_bytes(&zip, "feed-a").unwrap();
    assert_eq!((a.len(), summary.withdrawn), (1, 1));

    let broken = zip_of(&[("GHSA-1.json", good), ("bad.json", b"{not json")]);
    let err = FeedRecords::from_bytes(&broken, "feed-a")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 unreadable records") && err.contains("malformed JSON"),
        "{err}"
    );
    let err = FeedRecords::from_bytes(&zip[..zip.len() / 2], "feed-a")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad zip"), "{err}");

    let (b, _) = FeedRecords::from_bytes(other, "feed-b").unwrap();
    let back = FeedRecords::decode(&b.encode().unwrap(), "b").unwrap();
    assert_eq!(back, b);
    assert!(FeedRecords::decode(b"STRATAFD\x09\0\0\0", "b").is_err());

    let db = combine(&[&a, &b], vec!["a".into(), "b".into()]);
    assert_eq!(db.advisories().len(), 1, "{:?}", db.advisories());
    let merged = &db.advisories()[0];
    assert_eq!(merged.id, "GHSA-1");
    assert_eq!(merged.aliases, ["CVE-1", "PYSEC-1"]);
    assert_eq!(merged.modified, "2024-02-01T00:00:00Z");
    assert_eq!(db.status().sources, ["a", "b"]);
}

/// The many-ranges bypass of the per-range cap (issue 16): a record of
/// many ranges, each under the cap, is bounded per package and per record.
#[test]
fn events_are_capped_per_package_and_per_record_not_only_per_range() {
    let range = |n: usize| {
        let mut events = vec![serde_json::json!({ "introduced": "0" })];
        events.extend((1..n).map(|i| serde_json::json!({ "fixed": format!("{i}.0") })));
        serde_json::json!({ "type": "ECOSYSTEM", "events": events })
    };
    let package = |name: &str, ranges: usize, events: usize| {
        serde_json::json!({
            "package": { "ecosystem": "PyPI", "name": name },
            "ranges": (0..ranges).map(|_| range(events)).collect::<Vec<_>>(),
        })
    };
    let record = |id: &str, affected: Vec<serde_json::Value>| {
        serde_json::to_vec(
            &serde_json::json!({ "id": id, "modified": "2024-01-01T00:00:00Z", "affected": affected }),
        )
        .unwrap()
    };
    // One package: 3 ranges of 5,000 events, each under the per-range cap.
    let mut summary = ImportSummary::default();
    let one = super::normalize::record(
        &record("X-1", vec![package("a", 3, 5_000), package("b", 1, 2)]),
        "t",
        &mut summary,
    )
    .unwrap();
    assert_eq!(
        one.affected.len(),
        1,
        "the package over the bound is dropped, the other kept"
    );
    assert!(
        summary
            .skipped
            .iter()
            .any(|s| s.reason.contains("events across its ranges")),
        "{:?}",
        summary.skipped
    );
    // Many packages, each under its bound: the record is.
    let mut summary = ImportSummary::default();
    let many: Vec<_> = (0..12).map(|i| package(&format!("p{i}"), 1, 5_000)).collect();
    assert!(super::normalize::record(&record("X-2", many), "t", &mut summary).is_none());
    assert!(
        summary
            .skipped
            .iter()
            .any(|s| s.reason.contains("over the bound of 50000")),
        "{:?}",
        summary.skipped
    );
}
