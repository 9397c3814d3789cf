use std::io::Write as _;

use super::*;
use crate::layer::Limits;

const AUDIT: &str = r#"{"packages":[
    {"name":"app","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},
    {"name":"smallvec","version":"1.6.0","source":"crates.io"},
    {"name":"regex","version":"1.5.4","source":"crates.io","dependencies":[3]},
    {"name":"regex-syntax","version":"0.6.25","source":"crates.io"},
    {"name":"cc","version":"1.0.73","source":"crates.io","kind":"build"}
]}"#;

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An executable with other zlib streams and stray `0x78` bytes before the
/// audit data, and code after it.
fn binary(audit: &[u8]) -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01\0".to_vec();
    b.extend(std::iter::repeat_n(b"x\x9c\x01x\xdaxx".as_slice(), 500).flatten());
    b.extend_from_slice(&zlib(b"{\"not\":\"the audit data\"}"));
    b.extend_from_slice(&zlib(br#"{"packages":"#));
    b.resize(b.len() + 3000, 0x90);
    b.extend_from_slice(&zlib(audit));
    b.extend(std::iter::repeat_n(0xcc, 10_000));
    b
}

fn run(file: &[u8], chunk: usize) -> Option<Analysis> {
    let limits = Limits::default();
    let entry = EntryHead {
        path: "/usr/local/bin/app",
        mode: 0o755,
        size: file.len() as u64,
        head: &file[..file.len().min(crate::analyzers::HEAD_BYTES)],
        limits: &limits,
    };
    let mut sink = CargoAuditable.open(&entry)?;
    for piece in file.chunks(chunk) {
        if !sink.write(piece) {
            break;
        }
    }
    Some(sink.finish(true))
}

#[test]
fn finds_the_audit_data_whatever_the_chunk_boundaries() {
    let file = binary(AUDIT.as_bytes());
    for chunk in [1, 2, 3, 13, 63, 64, 65, 100, 4096, 65536, usize::MAX] {
        let a = run(&file, chunk).expect("an executable");
        let got: Vec<_> = a
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.evidence))
            .collect();
        assert_eq!(
            got,
            [
                ("app", "0.1.0", Evidence::App),
                ("regex", "1.5.4", Evidence::Installed),
                ("regex-syntax", "0.6.25", Evidence::Installed),
                ("smallvec", "1.6.0", Evidence::Installed),
            ],
            "chunks of {chunk}"
        );
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }
    let a = run(&file, 4096).unwrap();
    assert_eq!(a.packages[3].purl, "pkg:cargo/smallvec@1.6.0");
    assert!(
        a.packages
            .iter()
            .all(|p| p.path == "/usr/local/bin/app" && p.ecosystem == Ecosystem::CratesIo)
    );
}

#[test]
fn binaries_without_audit_data_and_other_files() {
    let mut plain = b"\x7fELF\x02\x01\x01\0".to_vec();
    plain.extend(std::iter::repeat_n(b"x\x9cx\xda".as_slice(), 20_000).flatten());
    let a = run(&plain, 4096).unwrap();
    assert!(a.packages.is_empty() && a.warnings.is_empty(), "{:?}", a.warnings);
    assert!(run(b"#!/bin/sh\nexit 0\n", 4096).is_none());
}

#[test]
fn broken_audit_data_is_a_warning() {
    // Cut inside the stream, not JSON of the right shape, over the cap.
    let file = binary(AUDIT.as_bytes());
    let audit = zlib(AUDIT.as_bytes());
    let at = file.windows(audit.len()).position(|w| w == audit).unwrap();
    let a = run(&file[..at + audit.len() / 2], 4096).unwrap();
    assert!(a.packages.is_empty());
    assert!(a.warnings[0].contains("cut short"), "{:?}", a.warnings);
    let a = run(&binary(br#"{"packages":[{"nome":"x"}]}"#), 4096).unwrap();
    assert!(a.packages.is_empty());
    assert!(
        a.warnings[0].contains("not cargo auditable's"),
        "{:?}",
        a.warnings
    );
    let mut huge = br#"{"packages":["#.to_vec();
    huge.resize(MAX_JSON + 10, b' ');
    let a = run(&binary(&huge), 65536).unwrap();
    assert!(a.warnings[0].contains("over"), "{:?}", a.warnings);
}

#[test]
fn a_real_cargo_auditable_binary() {
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/analyzers/cargo_auditable/testdata/rustapp"
    ))
    .unwrap();
    for chunk in [4096, 65536] {
        let a = run(&file, chunk).expect("an ELF executable");
        let got: Vec<_> = a
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.evidence))
            .collect();
        assert_eq!(
            got,
            [
                ("itoa", "1.0.1", Evidence::Installed),
                ("rustapp", "0.1.0", Evidence::App),
                ("smallvec", "1.6.0", Evidence::Installed),
            ]
        );
    }
}
