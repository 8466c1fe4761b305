//! Compiles the protobuf contracts with protox (pure Rust), so building needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/clusterflux/v1/clusterflux.proto",
        // InfluxDB 1.x's `meta.Data` (proto2, messages only): generated as `meta.rs`.
        "proto/influxdb/meta.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection serves our contract only, not InfluxDB's storage format.
    let mut contract = fds.clone();
    contract.file.retain(|f| {
        !f.name
            .as_deref()
            .unwrap_or_default()
            .starts_with("influxdb/")
    });
    std::fs::write(
        out.join("clusterflux_descriptor.bin"),
        prost::Message::encode_to_vec(&contract),
    )?;
    tonic_prost_build::configure()
        .bytes(".clusterflux.v1.MetaSnapshot.data")
        .bytes(".clusterflux.v1.PushMetaRequest.data")
        .compile_fds(fds)?;
    Ok(())
}
