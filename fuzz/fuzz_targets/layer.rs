//! The layer walk: decompression (sniffed, or named by the media type), the
//! tar reader with its caps, path normalisation, whiteouts, capture, and
//! every analyser on what it captures or streams.
//! First byte: 0 = the rest as a blob as-is (compression sniffed);
//! 1 = the rest is tar, gzip-compressed here; 2 = tar, zstd-compressed
//! here; 3 = plain tar named by its media type. Compressing here lets the
//! fuzzer mutate tar structure instead of a checksummed stream.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = pick(data, 4) else { return };
    match mode {
        0 => {
            fuzzing::layer(rest, None);
        }
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if gz.write_all(rest).is_ok()
                && let Ok(blob) = gz.finish()
            {
                fuzzing::layer(&blob, Some("application/vnd.oci.image.layer.v1.tar+gzip"));
            }
        }
        2 => {
            if let Ok(blob) = zstd::encode_all(rest, 1) {
                fuzzing::layer(&blob, Some("application/vnd.oci.image.layer.v1.tar+zstd"));
            }
        }
        _ => {
            fuzzing::layer(rest, Some("application/vnd.oci.image.layer.v1.tar"));
        }
    }
});
