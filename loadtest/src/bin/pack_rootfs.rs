//! Packs a root filesystem directory into an OCI image layout with one gzip
//! layer, so a real distribution tree (e.g. from `debootstrap`) can be
//! scanned as an image by Strata and by peer tools in the same form.
//!
//! Usage: `pack_rootfs ROOTFS OUTDIR [TAG]` (TAG defaults to `latest`).
//!
//! This builds benchmark input; it reads the user's directory and writes an
//! archive. (The rule that no tar entry touches the disk is about layers
//! Strata scans: it never unpacks them.)

use std::error::Error;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// Hashes and counts what passes through to the inner writer.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        bytes: 0,
    }
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> io::Result<String> {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(blobs.join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rootfs, out) = match args.as_slice() {
        [r, o] | [r, o, _] => (Path::new(r), Path::new(o)),
        _ => return Err("usage: pack_rootfs ROOTFS OUTDIR [TAG]".into()),
    };
    let tag = args.get(2).map(String::as_str).unwrap_or("latest");
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;

    // The layer: tar → (diff_id hash) → gzip → (digest hash) → file.
    let tmp = blobs.join("layer.tmp");
    let file = hashing(BufWriter::new(File::create(&tmp)?));
    let gz = GzEncoder::new(file, Compression::new(6));
    let mut tar = tar::Builder::new(hashing(gz));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", rootfs)?;
    let diff = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex::encode(diff.hasher.finalize()));
    let mut file = diff.inner.finish()?;
    file.flush()?;
    let layer_digest = format!("sha256:{}", hex::encode(file.hasher.finalize()));
    let layer_size = file.bytes;
    std::fs::rename(&tmp, blobs.join(layer_digest.trim_start_matches("sha256:")))?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = write_blob(&blobs, &config_bytes)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(&blobs, &manifest_bytes)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
            "platform": { "architecture": "amd64", "os": "linux" },
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    println!(
        "{} ({layer_size} bytes gzip layer, manifest {manifest_digest})",
        out.display()
    );
    Ok(())
}
