//! Compiles `proto/tally/v1/*.proto` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`, and generates Rust types with prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let sheet_proto = proto_root.join("tally/v1/sheet.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed={}", sheet_proto.display());

    let descriptors = protox::compile([&sheet_proto], [&proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
