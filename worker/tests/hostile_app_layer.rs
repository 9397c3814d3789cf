//! One layer full of hostile application content, read by every analyser:
//! a 100 MB `package.json`, a lockfile with a million entries, a zip bomb
//! inside a jar, a jar nested 50 deep, a truncated Go binary, binary
//! garbage as a Python `METADATA`. Each costs a warning on its own file, in
//! bounded memory, and the real packages beside them are still found.

use std::io::Write as _;

use sha2::Digest as _;
use strata_proto::Digest;
use strata_worker::analyzers;
use strata_worker::layer::{Limits, analyze_layer};

fn tar(entries: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A jar holding `inner` as `BOOT-INF/lib/inner.jar` (stored), or `entry`
/// (deflated) when there is no inner jar.
fn jar(inner: Option<Vec<u8>>, entry: (&str, &[u8])) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    match inner {
        Some(inner) => {
            z.start_file("BOOT-INF/lib/inner.jar", stored).unwrap();
            z.write_all(&inner).unwrap();
        }
        None => {
            z.start_file(entry.0, deflated).unwrap();
            z.write_all(entry.1).unwrap();
        }
    }
    z.finish().unwrap().into_inner()
}

/// A jar written as a stream (data descriptors: no sizes in the local
/// headers), whose first entry inflates to 1.5 GiB of zeros from about a
/// MiB: the reader must inflate it to find where it ends.
fn bomb() -> Vec<u8> {
    let mut z = zip::ZipWriter::new_stream(Vec::new());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    z.start_file("zeros.bin", options).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1536 {
        z.write_all(&zeros).unwrap();
    }
    z.start_file(
        "META-INF/maven/org.example/after-bomb/pom.properties",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    z.write_all(b"groupId=org.example\nartifactId=after-bomb\nversion=1\n")
        .unwrap();
    z.finish().unwrap().into_inner()
}

#[test]
fn hostile_application_content_costs_warnings_not_the_layer() {
    let pom = b"groupId=org.example\nartifactId=real\nversion=1.2.3\n".as_slice();
    let mut nested = jar(None, ("META-INF/maven/org.example/deep/pom.properties", pom));
    for _ in 0..50 {
        nested = jar(Some(nested), ("", b""));
    }
    let bomb = bomb();
    let mut lock = String::from("{\"lockfileVersion\":3,\"packages\":{\"\":{\"name\":\"app\"}");
    for i in 0..1_000_000 {
        lock.push_str(&format!(",\"node_modules/p{i}\":{{\"version\":\"1.0.{i}\"}}"));
    }
    lock.push_str("}}");
    let mut go = b"\x7fELF\x02\x01\x01\0".to_vec();
    go.resize(4096, 0);
    go.extend_from_slice(b"\xff Go buildinf:\x08\x02");
    go.resize(4096 + 40, 0);
    let mut huge_json = b"{\"name\":\"huge\",\"version\":\"1.0.0\",\"description\":\"".to_vec();
    huge_json.resize(100 << 20, b'x');
    huge_json.extend_from_slice(b"\"}");
    let layer = tar(&[
        ("app/node_modules/huge/package.json", huge_json, 0o644),
        ("srv/package-lock.json", lock.into_bytes(), 0o644),
        ("opt/bomb.jar", bomb, 0o644),
        ("opt/deep.jar", nested, 0o644),
        ("usr/local/bin/cut-go", go, 0o755),
        (
            "usr/lib/python3/dist-packages/junk-1.0.dist-info/METADATA",
            (0..=255u8).cycle().take(70_000).collect(),
            0o644,
        ),
        // The real packages beside them.
        (
            "usr/lib/python3/dist-packages/requests-2.19.1.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.19.1\n\nbody".to_vec(),
            0o644,
        ),
        (
            "app/node_modules/lodash/package.json",
            br#"{"name":"lodash","version":"4.17.4"}"#.to_vec(),
            0o644,
        ),
        (
            "opt/app.jar",
            jar(None, ("META-INF/maven/org.example/app/pom.properties", pom)),
            0o644,
        ),
    ]);
    let digest = Digest::sha256_from_hex(&hex::encode(sha2::Sha256::digest(&layer))).unwrap();
    let out = analyze_layer(&layer[..], &digest, None, &analyzers::all(), &Limits::default())
        .unwrap_or_else(|e| panic!("the layer failed: {e}"));

    let found = |name: &str, version: &str| {
        out.inventory
            .packages
            .iter()
            .any(|p| p.name == name && p.version == version)
    };
    assert!(found("requests", "2.19.1"));
    assert!(found("lodash", "4.17.4"));
    assert!(
        found("org.example:real", "1.2.3"),
        "the pom.properties beside the bomb"
    );
    assert!(!found("huge", "1.0.0"), "the 100 MB package.json is skipped");
    // The million-entry lockfile: read up to the package cap, no further.
    let locked = out
        .inventory
        .packages
        .iter()
        .filter(|p| p.path == "/srv/package-lock.json")
        .count();
    assert!((1..=200_000).contains(&locked), "{locked}");

    let warned = |needle: &str| out.warnings.iter().any(|w| w.to_string().contains(needle));
    let all: Vec<String> = out.warnings.iter().map(ToString::to_string).collect();
    assert!(warned("/app/node_modules/huge/package.json"), "{all:#?}");
    assert!(warned("/opt/bomb.jar"), "{all:#?}");
    assert!(warned("/opt/deep.jar"), "{all:#?}");
    assert!(warned("/srv/package-lock.json"), "{all:#?}");
    assert!(warned("junk-1.0.dist-info/METADATA"), "{all:#?}");
    assert!(warned("/usr/local/bin/cut-go"), "{all:#?}");
    assert!(
        !found("org.example:after-bomb", "1"),
        "reading stopped at the bomb"
    );
    // Files wanted whole stayed within the capture caps.
    assert!(out.captured_bytes < Limits::default().max_captured_bytes);
}
