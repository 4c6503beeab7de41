//! Compiles `proto/tally/v1/service.proto` and `township.proto` with protox (no system protoc) and generates the
//! tonic services. The messages it imports from `sheet.proto` and `county.proto` are not
//! generated again: they map to `tally_proto::pb`, so a `SignedSheet` from a request is the
//! same type the envelope code takes. The full descriptor set (with imports) is written for
//! gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let service = proto_root.join("tally/v1/service.proto");
    let township = proto_root.join("tally/v1/township.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in [
        "sheet.proto",
        "county.proto",
        "service.proto",
        "township.proto",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join("tally/v1").join(file).display()
        );
    }

    let mut full = protox::compile([&service, &township], [&proto_root])?;
    std::fs::write(
        out_dir.join("tally_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&full),
    )?;

    // Generate code for the service files only; every message of the files they import is
    // tally-proto's.
    let ours = |name: &str| name == "tally/v1/service.proto" || name == "tally/v1/township.proto";
    let mut builder = tonic_prost_build::configure();
    for file in &full.file {
        if ours(file.name()) {
            continue;
        }
        for message in &file.message_type {
            let name = message.name();
            builder = builder.extern_path(
                format!(".{}.{name}", file.package()),
                format!("::tally_proto::pb::{name}"),
            );
        }
        for enumeration in &file.enum_type {
            let name = enumeration.name();
            builder = builder.extern_path(
                format!(".{}.{name}", file.package()),
                format!("::tally_proto::pb::{name}"),
            );
        }
    }
    full.file.retain(|f| ours(f.name()));
    builder.compile_fds(full)?;
    Ok(())
}
