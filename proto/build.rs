//! Generates the wire types and gRPC stubs from `proto/strata/v1/*.proto`.
//!
//! `protox` parses the .proto files in pure Rust, so no system `protoc` is
//! needed. The encoded descriptor set is written next to the generated code
//! for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "strata/v1/types.proto",
    "strata/v1/scan.proto",
    "strata/v1/fleet.proto",
    "strata/v1/admin.proto",
    "strata/v1/jobs.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("strata_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
