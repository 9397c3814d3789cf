//! Java archives streamed past the java analyser: the push-based zip
//! reader, inflating `pom.properties` and manifests, nested archives to the
//! nesting cap. First byte: the chunk size the file is fed in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_fuzz::pick;
use strata_worker::analyzers::java::JavaArchives;
use strata_worker::fuzzing::stream_file;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = pick(data, 256) else {
        return;
    };
    let chunk = 1 + which * 67;
    stream_file(&JavaArchives, "/app/lib/app.war", 0o644, rest, chunk);
});
