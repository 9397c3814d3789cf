//! Thin entry points for the fuzz targets in `fuzz/` (cargo-fuzz), so the
//! parsers can stay private. Not an API: nothing in the product calls these.
//! Each takes raw outside input and returns nothing but whether it was read;
//! the fuzzer looks only for panics, hangs and runaway memory.

use std::io::Cursor;
use std::path::Path;

use strata_proto::Digest;

use crate::analyzers::{self, Analysis, Analyzer, EntryHead, HEAD_BYTES, LayerFile};
use crate::layer::{self, Limits};
use crate::source::{Platform, SourceError, docker_archive, docker_config, manifest};

/// Caps small enough that one fuzz input cannot use the fuzzer's memory
/// budget, large enough for every parser to be reached.
pub fn limits() -> Limits {
    Limits {
        max_uncompressed_bytes: 64 << 20,
        max_file_bytes: 8 << 20,
        max_captured_bytes: 16 << 20,
        max_entries: 100_000,
        max_path_len: 4096,
        max_nesting_depth: 3,
    }
}

/// One layer blob through the whole walk (decompression sniffed from the
/// magic bytes unless `media_type` says) with every analyser.
pub fn layer(blob: &[u8], media_type: Option<&str>) -> bool {
    // Any well-formed digest: a mismatch is only reported after the walk.
    let digest: Digest = match format!("sha256:{}", "0".repeat(64)).parse() {
        Ok(d) => d,
        Err(_) => return false,
    };
    layer::analyze_layer(
        Cursor::new(blob),
        &digest,
        media_type,
        &analyzers::all(),
        &limits(),
    )
    .is_ok()
}

/// One file handed whole to `analyzer` as if the walk had captured it at `path`.
pub fn analyze_file(analyzer: &dyn Analyzer, path: &str, data: &[u8]) -> Option<Analysis> {
    analyzer.analyze(&[LayerFile { path, data }]).ok()
}

/// One file streamed through `analyzer`'s sink (when its head interests it),
/// in chunks of `chunk` bytes, as the walk feeds it.
pub fn stream_file(
    analyzer: &dyn Analyzer,
    path: &str,
    mode: u32,
    data: &[u8],
    chunk: usize,
) -> Option<Analysis> {
    let limits = limits();
    let head = EntryHead {
        path,
        mode,
        size: data.len() as u64,
        head: &data[..data.len().min(HEAD_BYTES)],
        limits: &limits,
    };
    let mut sink = analyzer.open(&head)?;
    for piece in data.chunks(chunk.max(1)) {
        if !sink.write(piece) {
            break;
        }
    }
    Some(sink.finish(true))
}

/// The ELF program-header reader the binary analysers share.
pub fn elf_segments(head: &[u8]) -> bool {
    analyzers::elf::segments(head).is_some()
}

/// An rpm header blob, as the sqlite and BerkeleyDB backends hand them on.
pub fn rpm_header(blob: &[u8]) -> bool {
    analyzers::rpm::header::parse(blob).is_ok()
}

/// A manifest or index, then every check a resolve applies to it.
pub fn manifest(bytes: &[u8]) -> Result<(), SourceError> {
    match manifest::parse_document(bytes, "fuzz")? {
        manifest::Document::Index { manifests } => {
            let wanted = Platform::parse("linux/arm64/v8")?;
            let _ = manifest::choose_entry(&manifests, None);
            let (desc, _) = manifest::choose_entry(&manifests, Some(&wanted))?;
            manifest::to_layer_desc(desc, "fuzz")?;
        }
        manifest::Document::Image { config, layers } => {
            manifest::image_parts(&config, &layers, "fuzz")?;
        }
    }
    Ok(())
}

/// An image config blob.
pub fn image_config(bytes: &[u8]) -> Result<(), SourceError> {
    let desc = crate::source::LayerDesc {
        digest: manifest::sha256_digest(bytes),
        media_type: manifest::OCI_CONFIG.into(),
        size: bytes.len() as u64,
    };
    let config = manifest::parse_config(desc, bytes.to_vec().into(), "fuzz")?;
    manifest::config_platform(&config, Some(&Platform::linux_amd64()))?;
    Ok(())
}

/// A Docker `config.json`, looked up for `registry`.
pub fn docker_config(bytes: &[u8], registry: &str) -> bool {
    docker_config::parse_and_find(bytes, registry).is_ok()
}

/// A `docker save` tarball at `path`: indexed, its `manifest.json` read and
/// the image (`tag`, when given) resolved.
pub fn docker_archive(path: &Path, tag: Option<String>) -> Result<(), SourceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| SourceError::io("fuzz runtime", e))?;
    runtime.block_on(async {
        let source = docker_archive::DockerArchiveSource::open(path.to_owned(), tag).await?;
        crate::source::ImageSource::resolve(&source, None).await?;
        Ok(())
    })
}
