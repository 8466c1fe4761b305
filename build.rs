//! Compiles the protobuf contracts with protox (pure Rust), so building needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/clusterflux/v1/clusterflux.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("clusterflux_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".clusterflux.v1.MetaSnapshot.data")
        .bytes(".clusterflux.v1.PushMetaRequest.data")
        .compile_fds(fds)?;
    Ok(())
}
