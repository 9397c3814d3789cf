use super::*;
use crate::layer::Limits;

/// A fake executable: an ELF head, `pad` bytes, then (16-aligned) a Go
/// 1.18+ build information header with `version` and `modinfo` inline.
fn binary(pad: usize, version: &str, modinfo: &str) -> Vec<u8> {
    let mut b = b"\x7fELF\x02\x01\x01".to_vec();
    b.resize(pad.max(16).next_multiple_of(16), 0x11);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[8, 2]);
    b.resize(b.len() + 16, 0);
    push_string(&mut b, version.as_bytes());
    let mut wrapped = vec![
        0x30, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6,
    ];
    wrapped.extend_from_slice(modinfo.as_bytes());
    wrapped.extend_from_slice(&[
        0xf9, 0x32, 0x43, 0x31, 0x86, 0x18, 0x20, 0x72, 0x00, 0x82, 0x42, 0x10, 0x41, 0x16, 0xd8, 0xf2,
    ]);
    push_string(&mut b, &wrapped);
    b.extend(std::iter::repeat_n(0x22, 4096));
    b
}

fn push_string(b: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            b.push(byte);
            break;
        }
        b.push(byte | 0x80);
    }
    b.extend_from_slice(s);
}

const MODINFO: &str = "path\tgithub.com/nats-io/nats-server/v2\n\
    mod\tgithub.com/nats-io/nats-server/v2\tv2.15.1\t\n\
    dep\tgithub.com/klauspost/compress\tv1.20.1\th1:x=\n\
    dep\tgolang.org/x/crypto\tv0.1.0\th1:y=\n\
    =>\tgithub.com/fork/crypto\tv0.2.0\th1:z=\n\
    build\tGOOS=linux\n";

/// Runs the analyser over `file` as the walk would, `chunk` bytes at a time.
fn run(file: &[u8], chunk: usize) -> Option<Analysis> {
    let limits = Limits::default();
    let head = &file[..file.len().min(crate::analyzers::HEAD_BYTES)];
    let entry = EntryHead {
        path: "/usr/bin/nats-server",
        mode: 0o755,
        size: file.len() as u64,
        head,
        limits: &limits,
    };
    let mut sink = GoBinaries.open(&entry)?;
    for piece in file.chunks(chunk) {
        if !sink.write(piece) {
            break;
        }
    }
    Some(sink.finish(true))
}

fn names(a: &Analysis) -> Vec<(String, String)> {
    a.packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

#[test]
fn reads_build_information_whatever_the_chunk_boundaries() {
    let file = binary(1000, "go1.19.8", MODINFO);
    let expected = vec![
        ("stdlib".to_owned(), "1.19.8".to_owned()),
        (
            "github.com/nats-io/nats-server/v2".to_owned(),
            "v2.15.1".to_owned(),
        ),
        ("github.com/klauspost/compress".to_owned(), "v1.20.1".to_owned()),
        ("github.com/fork/crypto".to_owned(), "v0.2.0".to_owned()),
    ];
    for chunk in [1, 2, 7, 13, 14, 15, 16, 17, 31, 64, 1000, 1024, 65536, usize::MAX] {
        let a = run(&file, chunk).expect("an executable");
        assert_eq!(names(&a), expected, "chunks of {chunk}");
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }
    let a = run(&file, 4096).unwrap();
    let p = &a.packages[0];
    assert_eq!(p.ecosystem, Ecosystem::Go);
    assert_eq!(p.path, "/usr/bin/nats-server");
    assert!(p.layer.is_none());
    assert!(a.packages.iter().all(|p| p.purl.starts_with("pkg:golang/")));
}

#[test]
fn stray_magic_is_not_a_header() {
    // A literal copy of the magic off the alignment, and an aligned one
    // with a nonsense pointer size, come before the real header.
    let mut file = b"\x7fELF".to_vec();
    file.resize(100, 0);
    file.extend_from_slice(MAGIC); // at 100: not aligned
    file.resize(160, 0);
    file.extend_from_slice(MAGIC); // at 160: aligned, but ptr size 7
    file.extend_from_slice(&[7, 2]);
    let real = binary(16, "go1.21rc2", MODINFO);
    file.resize(file.len().next_multiple_of(16), 0);
    file.extend_from_slice(&real[16..]); // the header, aligned
    for chunk in [1, 5, 16, 100, 4096] {
        let a = run(&file, chunk).unwrap();
        assert_eq!(
            a.packages.first().map(|p| p.version.as_str()),
            Some("1.21.0-rc.2"),
            "{chunk}"
        );
        assert_eq!(a.packages.len(), 4, "{chunk}");
    }
}

#[test]
fn devel_main_module_and_no_module_information() {
    let a = run(
        &binary(
            64,
            "go1.22.1",
            "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n",
        ),
        512,
    )
    .unwrap();
    assert_eq!(
        names(&a),
        [
            ("stdlib".to_owned(), "1.22.1".to_owned()),
            ("example.com/app".to_owned(), "(devel)".to_owned())
        ]
    );
    // No module information at all: the toolchain only.
    let mut file = binary(64, "go1.19.8", "");
    let a = run(&file, 512).unwrap();
    assert_eq!(names(&a), [("stdlib".to_owned(), "1.19.8".to_owned())]);
    // Built without modules (Debian's build of nats-server): the program by its path.
    let a = run(
        &binary(
            64,
            "go1.19.8",
            "path\tgithub.com/nats-io/nats-server\nbuild\tGOOS=linux\n",
        ),
        512,
    )
    .unwrap();
    assert_eq!(
        names(&a),
        [
            ("stdlib".to_owned(), "1.19.8".to_owned()),
            ("github.com/nats-io/nats-server".to_owned(), "(devel)".to_owned())
        ]
    );
    // A toolchain built from source: no release to match, said so.
    file = binary(64, "devel go1.23-abcdef", MODINFO);
    let a = run(&file, 512).unwrap();
    assert!(a.packages.iter().all(|p| p.name != "stdlib"));
    assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
}

#[test]
fn old_format_is_a_warning_and_other_files_are_not_opened() {
    let mut file = binary(64, "", "");
    let at = file.windows(MAGIC.len()).position(|w| w == MAGIC).unwrap();
    file[at + MAGIC.len() + 1] = 0; // flags: pointers
    let a = run(&file, 512).unwrap();
    assert!(a.packages.is_empty());
    assert!(a.warnings[0].contains("before Go 1.18"), "{:?}", a.warnings);
    assert!(
        run(b"#!/bin/sh\necho hello\n", 512).is_none(),
        "a script is not opened"
    );
    assert!(run(b"\x7fEL", 512).is_none(), "too small");
}

#[test]
fn hostile_input_is_bounded() {
    // Aligned stray magic every 16 bytes, each with a bad pointer size.
    let mut file = b"\x7fELF".to_vec();
    file.resize(16, 0);
    for _ in 0..100_000 {
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&[9, 9]);
    }
    let started = std::time::Instant::now();
    let a = run(&file, 65536).unwrap();
    assert!(a.packages.is_empty() && a.warnings.is_empty());
    // One pass: well under a second for 1.6 MB even in a debug build.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Lengths past the caps, a truncated header, garbage after the magic.
    let mut huge = binary(0, "go1.22.1", "");
    let at = huge.windows(MAGIC.len()).position(|w| w == MAGIC).unwrap();
    huge.truncate(at + HEADER);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    huge.extend_from_slice(&[0; 64]);
    assert!(run(&huge, 7).unwrap().packages.is_empty());
    let cut = binary(0, "go1.22.1", MODINFO);
    let a = run(&cut[..cut.len() - 4096 - 40], 512).unwrap();
    assert!(a.packages.is_empty(), "cut inside the module information");
}

/// An ELF64 head whose program headers load `[0, text)` read-execute and
/// `[text, text + data)` read-write.
fn elf_with_segments(text: u64, data: u64) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[32..40].copy_from_slice(&64u64.to_le_bytes());
    h[54..56].copy_from_slice(&56u16.to_le_bytes());
    h[56..58].copy_from_slice(&2u16.to_le_bytes());
    for (flags, offset, size) in [(5u32, 0u64, text), (6, text, data)] {
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&1u32.to_le_bytes());
        ph[4..8].copy_from_slice(&flags.to_le_bytes());
        ph[8..16].copy_from_slice(&offset.to_le_bytes());
        ph[32..40].copy_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&ph);
    }
    h
}

#[test]
fn in_an_elf_only_the_writable_segment_is_searched() {
    // A well-formed header in the code segment (a literal, as a program
    // that reads build information carries), the real one opening the data.
    let decoy = binary(16, "go1.2.3", "mod\texample.com/decoy\tv9.9.9\t\n");
    let real = binary(16, "go1.19.8", MODINFO);
    let mut file = elf_with_segments(8192, 4096);
    file.resize(4096, 0x90);
    file.extend_from_slice(&decoy[16..]);
    file.resize(8192, 0x90);
    file.extend_from_slice(&real[16..]);
    for chunk in [1, 100, 4096, 65536] {
        let a = run(&file, chunk).unwrap();
        assert_eq!(
            a.packages.first().map(|p| p.version.as_str()),
            Some("1.19.8"),
            "{chunk}"
        );
        assert!(a.packages.iter().all(|p| p.name != "example.com/decoy"));
    }
    // Without program headers every byte is searched: the decoy comes first.
    let mut plain = file.clone();
    plain[32..40].copy_from_slice(&0u64.to_le_bytes());
    plain[56..58].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(run(&plain, 4096).unwrap().packages[0].version, "1.2.3");
}
