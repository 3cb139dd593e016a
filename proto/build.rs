//! Compiles `qala/v1/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates the tonic code and the descriptor set used by reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["qala/v1/qala.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("qala_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // File content as `Bytes`: decoding slices the receive buffer instead of
    // copying each chunk out of it, and a chunk is forwarded (coordinator to
    // worker) and held for replay without another copy.
    tonic_prost_build::configure()
        .bytes(".qala.v1.ScanRequest.chunk")
        .bytes(".qala.v1.WorkerScanRequest.chunk")
        .compile_fds(fds)?;
    Ok(())
}
