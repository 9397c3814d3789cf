//! Hostile images, each scanned by a `strata scan` process of its own
//! (and a batch of them through a real cluster beside a good image): every
//! one ends with a clear error naming the layer and the limit (or, where
//! the content is allowed, a result), never a hang, and the process's own
//! peak resident set (the kernel's `ru_maxrss`) stays bounded. The bombs
//! inflate to a gigabyte; they are streamed into their compressors here,
//! never held whole.

use std::path::Path;
use std::time::Duration;

use strata_harness::fixtures::{
    self, DEBIAN_ZLIB_STATUS as STATUS, build_db, debian_layer, run_measured, serial,
};
use strata_harness::{Compression, Image, Layer};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// Bound on one scan of a hostile image.
const SCAN_LIMIT: Duration = Duration::from_secs(180);

/// Peak resident set allowed to a `strata scan` of one hostile image. An
/// ordinary scan of a small image peaks near 30 MiB (debug build); the
/// bound leaves room for the analysers' own caps (a captured file is at
/// most 128 MiB) but not for holding a bomb, a million entries or a
/// 100 MiB manifest.
const RSS_BOUND: u64 = 256 << 20;

const GIB: u64 = 1 << 30;

/// A dpkg status with the base's package and one more, to tell it apart.
const LINKED_STATUS: &str = "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\n\nPackage: linked-pkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n";

/// A layer holding one file of `size` zero bytes.
fn zeros(compression: Compression, size: u64) -> Layer {
    Layer::streamed(compression, |tar| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        tar.append_data(&mut h, "srv/zeros", std::io::Read::take(std::io::repeat(0), size))
    })
    .unwrap()
}

/// A layer of `n` empty files.
fn entries(n: u64) -> Layer {
    Layer::streamed(Compression::Gzip, |tar| {
        for i in 0..n {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(0);
            tar.append_data(&mut h, format!("e/{i}"), std::io::empty())?;
        }
        Ok(())
    })
    .unwrap()
}

/// A layer whose one file has a path of `len` bytes (a GNU long name).
fn long_path(len: usize) -> Layer {
    let path = "d/".repeat(len / 2) + "f";
    Layer::streamed(Compression::Gzip, |tar| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        tar.append_data(&mut h, &path, &b"x"[..])
    })
    .unwrap()
}

/// A dpkg status database of about `size` bytes (one real package, then
/// padding packages).
fn big_status(size: u64) -> Layer {
    Layer::streamed(Compression::Gzip, |tar| {
        let mut total = STATUS.len() as u64;
        let mut n = 0;
        while total < size {
            total += stanza(n).len() as u64;
            n += 1;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(total);
        let body = std::io::Read::chain(
            STATUS.as_bytes(),
            Stanzas {
                next: 0,
                n,
                buf: Vec::new(),
                at: 0,
            },
        );
        tar.append_data(&mut h, "var/lib/dpkg/status", body)
    })
    .unwrap()
}

fn stanza(i: u64) -> String {
    format!("Package: pad{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-{i}\n\n")
}

/// The padding stanzas of [`big_status`], generated as they are read.
struct Stanzas {
    next: u64,
    n: u64,
    buf: Vec<u8>,
    at: usize,
}

impl std::io::Read for Stanzas {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.next == self.n {
                return Ok(0);
            }
            self.buf = stanza(self.next).into_bytes();
            self.at = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `strata scan` of the OCI layout at `dir` (tag `t`), measured.
fn scan(db: &Path, dir: &Path, extra: &[&str]) -> fixtures::Measured {
    let mut command = fixtures::strata_command(STRATA);
    command
        .args(["--log", "warn", "scan", "--db"])
        .arg(db)
        .arg(format!("oci-dir:{}:t", dir.display()))
        .args(["-f", "json"])
        .args(extra);
    run_measured(command, SCAN_LIMIT)
}

/// Writes `image` as an OCI layout in a fresh directory under `root`.
fn layout(root: &Path, name: &str, image: &Image) -> std::path::PathBuf {
    let dir = root.join(name);
    image.write_oci_layout(&dir, "t").unwrap();
    dir
}

#[track_caller]
fn assert_failed(name: &str, m: &fixtures::Measured, layer: &str, needles: &[&str]) {
    assert!(!m.timed_out, "{name}: still running after {SCAN_LIMIT:?}");
    assert_eq!(m.code, Some(2), "{name}: exit code\n{}", m.stderr);
    let last = m.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("strata: "),
        "{name}: one error line last: {}",
        m.stderr
    );
    assert!(last.contains(layer), "{name}: names the layer {layer}: {last}");
    for needle in needles {
        assert!(last.contains(needle), "{name}: says {needle:?}: {last}");
    }
    assert!(!last.contains('\u{1b}'), "{name}: escaped: {last:?}");
    assert!(
        m.peak_rss_bytes < RSS_BOUND,
        "{name}: peak RSS {} MiB over {} MiB",
        m.peak_rss_bytes >> 20,
        RSS_BOUND >> 20
    );
    assert!(m.peak_rss_bytes > 0, "{name}: the peak was measured");
    eprintln!("{name}: peak RSS {} MiB", m.peak_rss_bytes >> 20);
}

#[test]
fn hostile_layers_fail_with_the_layer_and_the_limit_in_bounded_memory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let base = debian_layer("12", STATUS);
    let on_base = |layer: Layer| Image::builder().layer(base.clone()).layer(layer).build().unwrap();

    // Bombs: 1 GiB of zeros in about a megabyte, under a 256 MiB cap.
    let cap = ["--max-layer-bytes", "268435456"];
    for (name, compression) in [("gzip bomb", Compression::Gzip), ("zstd bomb", Compression::Zstd)] {
        let bomb = zeros(compression, GIB);
        assert!(bomb.size() < 8 << 20, "{name}: {} bytes", bomb.size());
        let digest = bomb.digest.clone();
        let m = scan(&db, &layout(dir.path(), name, &on_base(bomb)), &cap);
        assert_failed(
            name,
            &m,
            &digest,
            &["limit max_uncompressed_bytes = 268435456 exceeded"],
        );
    }

    // A million empty entries, under a cap of 100,000.
    let many = entries(1_000_000);
    let digest = many.digest.clone();
    let m = scan(
        &db,
        &layout(dir.path(), "entries", &on_base(many)),
        &["--max-entries", "100000"],
    );
    assert_failed(
        "a million entries",
        &m,
        &digest,
        &["limit max_entries = 100000 exceeded"],
    );

    // A 64 KiB path.
    let long = long_path(64 * 1024);
    let digest = long.digest.clone();
    let m = scan(&db, &layout(dir.path(), "long-path", &on_base(long)), &[]);
    assert_failed(
        "a 64 KiB path",
        &m,
        &digest,
        &["limit max_path_len = 4096 exceeded"],
    );

    // `..` out of the root.
    let escape = Layer::builder()
        .raw_file("../../etc/passwd", "root:x:0:0::/root:/bin/sh\n")
        .build(Compression::Gzip)
        .unwrap();
    let digest = escape.digest.clone();
    let m = scan(&db, &layout(dir.path(), "traversal", &on_base(escape)), &[]);
    assert_failed("traversal", &m, &digest, &["escapes the root"]);

    // A 500 MiB package database: over the 128 MiB per-file cap. Not read,
    // and not skipped either (a scan reporting no packages would be wrong):
    // the layer fails, naming the file and the cap.
    let huge = big_status(500 << 20);
    let digest = huge.digest.clone();
    let image = Image::builder().layer(huge).build().unwrap();
    let m = scan(&db, &layout(dir.path(), "big-db", &image), &[]);
    assert_failed(
        "a 500 MiB package database",
        &m,
        &digest,
        &[
            "limit max_file_bytes = 134217728 exceeded",
            "/var/lib/dpkg/status is 524288",
        ],
    );

    // A layer whose descriptor understates its size.
    let lying = Layer::builder()
        .file("srv/a", "a".repeat(4096))
        .build(Compression::Gzip)
        .unwrap();
    let real = lying.size();
    let image = on_base(lying.clone());
    let descriptor_size = format!("\"size\":{real}");
    let understated = String::from_utf8(image.manifest.clone())
        .unwrap()
        .replace(&descriptor_size, "\"size\":100");
    assert_ne!(
        understated.as_bytes(),
        image.manifest.as_slice(),
        "the size was replaced"
    );
    let dir_lying = dir.path().join("lying");
    write_layout_with_manifest(&dir_lying, &image, understated.as_bytes());
    let m = scan(&db, &dir_lying, &[]);
    assert_failed("a size that lies", &m, &lying.digest, &[]);

    // A manifest of 100 MiB.
    let mut big = String::with_capacity(100 << 20);
    big.push_str("{\"schemaVersion\":2,\"annotations\":{\"pad\":\"");
    big.extend(std::iter::repeat_n('a', 100 << 20));
    big.push_str("\"}}");
    let dir_big = dir.path().join("big-manifest");
    write_layout_with_manifest(&dir_big, &image, big.as_bytes());
    drop(big);
    let m = scan(&db, &dir_big, &[]);
    assert!(!m.timed_out && m.code == Some(2), "a 100 MiB manifest: {m:?}");
    let last = m.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("manifest"), "names the manifest: {last}");
    assert!(
        m.peak_rss_bytes < RSS_BOUND,
        "a 100 MiB manifest: {} MiB",
        m.peak_rss_bytes >> 20
    );
}

#[test]
fn allowed_hostile_content_is_read_in_bounded_memory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let base = debian_layer("12", STATUS);

    // A package database hard-linked to an earlier name no analyser reads
    // (`status-old` stored first, `status` as the link): the layer is read
    // again keeping that file, and the link's packages are found.
    let linked = Layer::builder()
        .file("var/lib/dpkg/status-old", LINKED_STATUS)
        .hardlink("var/lib/dpkg/status", "var/lib/dpkg/status-old")
        .build(Compression::Gzip)
        .unwrap();
    let image = Image::builder()
        .layer(base.clone())
        .layer(linked)
        .build()
        .unwrap();
    let m = scan(&db, &layout(dir.path(), "hardlink", &image), &[]);
    assert_eq!(m.code, Some(0), "a hard-linked database: {}", m.stderr);
    assert!(
        m.stdout.contains("linked-pkg"),
        "the link's packages: {}",
        m.stdout
    );

    // Symbolic and hard links that loop (hard links to themselves and to
    // each other, wanted paths among them), and an absolute path: a result,
    // quickly.
    let loops = Layer::builder()
        .symlink("srv/a", "b")
        .symlink("srv/b", "a")
        .symlink("srv/self", "self")
        .symlink("etc/os-release", "../etc/os-release")
        .hardlink("srv/h", "srv/h")
        .hardlink("var/lib/dpkg/status.d/x", "var/lib/dpkg/status.d/y")
        .hardlink("var/lib/dpkg/status.d/y", "var/lib/dpkg/status.d/x")
        .raw_file("/srv/absolute", "x")
        .build(Compression::Gzip)
        .unwrap();
    let image = Image::builder().layer(base.clone()).layer(loops).build().unwrap();
    let m = scan(&db, &layout(dir.path(), "loops", &image), &[]);
    assert_eq!(m.code, Some(0), "links that loop: {}", m.stderr);
    let report: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    assert!(
        report.to_string().contains("zlib1g"),
        "the base's packages are still found: {}",
        m.stdout
    );
    assert!(
        m.peak_rss_bytes < RSS_BOUND,
        "loops: {} MiB",
        m.peak_rss_bytes >> 20
    );
}

/// An OCI layout of `image`'s blobs with `manifest` (any bytes) as the
/// manifest `index.json` names.
fn write_layout_with_manifest(dir: &Path, image: &Image, manifest: &[u8]) {
    use sha2::Digest as _;
    image.write_oci_layout(dir, "t").unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(manifest)));
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "t"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn hostile_images_in_a_cluster_fail_alone_and_the_worker_stays_bounded() {
    use strata_proto::v1::{self, scan_service_client::ScanServiceClient};
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let db = build_db(STRATA, dir.path());
        let registry = strata_harness::Registry::start().unwrap();
        let base = debian_layer("12", STATUS);
        let on_base = |layer: Layer| Image::builder().layer(base.clone()).layer(layer).build().unwrap();
        let bomb = zeros(Compression::Gzip, GIB);
        let escape = Layer::builder()
            .raw_file("../../etc/passwd", "root:x:0:0::/root:/bin/sh\n")
            .build(Compression::Gzip)
            .unwrap();
        let many = entries(300_000);
        // The good image's database is a hard link to an earlier name
        // (read again by the worker, keeping it).
        let good = Layer::builder()
            .file("var/lib/dpkg/status-old", LINKED_STATUS)
            .hardlink("var/lib/dpkg/status", "var/lib/dpkg/status-old")
            .build(Compression::Gzip)
            .unwrap();
        let cases = [
            (
                "bomb",
                bomb.digest.clone(),
                "limit max_uncompressed_bytes = 268435456 exceeded",
                on_base(bomb),
            ),
            (
                "escape",
                escape.digest.clone(),
                "escapes the root",
                on_base(escape),
            ),
            (
                "many",
                many.digest.clone(),
                "limit max_entries = 100000 exceeded",
                on_base(many),
            ),
        ];
        for (name, _, _, image) in &cases {
            image.push(&registry, "hostile/app", name).await.unwrap();
        }
        on_base(good)
            .push(&registry, "hostile/app", "good")
            .await
            .unwrap();
        let cluster = strata_harness::Cluster::builder(STRATA)
            .workers(1)
            .db(&db)
            .insecure_registry(registry.host())
            .worker_args([
                "--max-layer-bytes",
                "268435456",
                "--max-entries",
                "100000",
                "--concurrency",
                "4",
            ])
            .start()
            .unwrap();
        let channel = fixtures::coordinator_channel(&cluster, Duration::from_secs(30)).await;
        let mut client = ScanServiceClient::new(channel);
        let mut ids = Vec::new();
        for tag in ["bomb", "escape", "many", "good"] {
            let mut stream = client
                .submit_image(v1::SubmitImageRequest {
                    reference: format!("{}/hostile/app:{tag}", registry.host()),
                    insecure_registry: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().expect("a first event");
            ids.push(first.scan_id);
        }
        let worker = cluster.worker_pid(0).expect("the worker runs");
        let limit = Duration::from_secs(180);
        for ((name, digest, needle, _), id) in cases.iter().zip(&ids) {
            let done = fixtures::wait_done(&cluster, id, limit, Duration::from_secs(30)).await;
            // A report with the layer's error (the base's packages still in it).
            assert_eq!(done.status, v1::ScanStatus::Complete as i32, "{name}: {done:?}");
            assert_eq!(done.layers_failed, 1, "{name}: {done:?}");
            assert!(
                done.error.contains(digest.as_str()),
                "{name}: names the layer: {}",
                done.error
            );
            assert!(
                done.error.contains(needle),
                "{name}: says {needle:?}: {}",
                done.error
            );
        }
        let done = fixtures::wait_done(&cluster, &ids[3], limit, Duration::from_secs(30)).await;
        assert_eq!(
            done.status,
            v1::ScanStatus::Complete as i32,
            "the good image: {done:?}"
        );
        assert_eq!(done.layers_failed, 0, "{done:?}");
        let report = client
            .get_report(v1::GetReportRequest {
                selector: Some(v1::get_report_request::Selector::ScanId(ids[3].clone())),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            report.packages.iter().any(|p| p.name == "linked-pkg"),
            "the hard-linked database's packages: {:?}",
            report.packages
        );
        let peak = strata_loadtest::memory::peak_rss_kib_of(worker) * 1024;
        eprintln!("worker peak RSS after the hostile images: {} MiB", peak >> 20);
        assert!(peak > 0, "the worker's peak was read");
        assert!(peak < RSS_BOUND, "worker peak RSS {} MiB", peak >> 20);
    });
}

/// How the hostile registry serves the layer blob.
#[derive(Clone, Copy)]
enum Blob {
    /// The layer's bytes, then zeros without end (chunked, no length).
    Endless,
    /// Half the layer's bytes (of the right length), then nothing, the
    /// connection held open.
    Stalled,
}

/// A registry that serves `image`'s manifest and config honestly, and its
/// layer blob as `blob` says. Runs on `rt`; returns its `host:port`.
fn hostile_registry(rt: &tokio::runtime::Runtime, image: &Image, blob: Blob) -> String {
    use tokio::io::AsyncWriteExt as _;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let image = image.clone();
    rt.spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let image = image.clone();
            tokio::spawn(async move {
                let Some(head) = fixtures::read_request_head(&mut conn).await else {
                    return;
                };
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let answer = |status: &str, kind: &str, extra: String, body: &[u8]| {
                    let mut a = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    if method != "HEAD" {
                        a.extend_from_slice(body);
                    }
                    a
                };
                let reply = if path == "/v2/" {
                    answer("200 OK", "application/json", String::new(), b"{}")
                } else if path.contains("/manifests/") {
                    let digest = format!("docker-content-digest: {}\r\n", image.manifest_digest);
                    answer("200 OK", image.manifest_media_type(), digest, &image.manifest)
                } else if path.ends_with(&image.config_digest) {
                    answer("200 OK", "application/octet-stream", String::new(), &image.config)
                } else if path.contains("/blobs/") && matches!(blob, Blob::Stalled) {
                    let bytes = &image.layers[0].blob;
                    let start = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                        bytes.len()
                    );
                    let _ = conn.write_all(start.as_bytes()).await;
                    let _ = conn.write_all(&bytes[..bytes.len() / 2]).await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                } else if path.contains("/blobs/") {
                    // The layer: its bytes, then zeros without end.
                    let start = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                    if conn.write_all(start.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut chunk = image.layers[0].blob.clone();
                    loop {
                        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        if conn.write_all(&framed).await.is_err() {
                            return;
                        }
                        chunk = vec![0u8; 64 * 1024];
                    }
                } else {
                    answer("404 Not Found", "application/json", String::new(), b"{}")
                };
                let _ = conn.write_all(&reply).await;
            });
        }
    });
    host
}

/// `strata scan` of an image whose registry serves its layer as `blob`
/// says: the measured run, the layer's digest and how long it took.
fn scan_from_hostile_registry(blob: Blob) -> (fixtures::Measured, String, Duration) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(STRATA, dir.path());
    let layer = debian_layer("12", STATUS);
    let digest = layer.digest.clone();
    let image = Image::builder().layer(layer).build().unwrap();
    let host = hostile_registry(&rt, &image, blob);
    let mut command = fixtures::strata_command(STRATA);
    command
        .args(["--log", "warn", "scan", "--db"])
        .arg(&db)
        .arg(format!("{host}/hostile/app:1"))
        .args(["--insecure-registry", &host, "-f", "json"]);
    let started = std::time::Instant::now();
    let m = run_measured(command, SCAN_LIMIT);
    (m, digest, started.elapsed())
}

#[test]
fn a_registry_streaming_a_blob_forever_is_cut_at_the_descriptor() {
    let _serial = serial();
    let (m, digest, _) = scan_from_hostile_registry(Blob::Endless);
    assert_failed(
        "a blob streamed forever",
        &m,
        &digest,
        &["blob is longer than its descriptor's"],
    );
}

/// A registry that stops sending in the middle of a blob: the read times
/// out (the registry client's 120 s read timeout), the scan fails naming
/// the layer, nothing hangs. Slow by nature: one read timeout.
#[test]
fn a_registry_stalling_mid_blob_times_out() {
    let _serial = serial();
    let (m, digest, took) = scan_from_hostile_registry(Blob::Stalled);
    eprintln!("stalled blob: {:?} after {took:?}: {}", m.code, m.stderr);
    assert_failed("a blob stalled midway", &m, &digest, &["timed out"]);
    assert!(took < Duration::from_secs(170), "bounded by the read timeout");
}
