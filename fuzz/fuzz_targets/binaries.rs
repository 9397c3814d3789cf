//! Executables streamed past the binary analysers: the ELF program-header
//! reader, Go build information (golang) and `cargo auditable` data.
//! First byte: low bit = golang / cargo-auditable, the rest = the chunk
//! size the file is fed in (the walk's chunks vary; a sink must not care).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::{cargo_auditable::CargoAuditable, golang::GoBinaries};
use strata_worker::fuzzing::{elf_segments, stream_file};

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 256) else {
        return;
    };
    let chunk = 1 + (which >> 1) * 61;
    elf_segments(rest);
    if which & 1 == 0 {
        stream_file(&GoBinaries, "/usr/local/bin/app", 0o755, rest, chunk);
    } else {
        stream_file(&CargoAuditable, "/usr/local/bin/app", 0o755, rest, chunk);
    }
});
