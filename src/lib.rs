//! Clusterflux: clustering for InfluxDB OSS 1.x.
//!
//! - [`proto`]: the generated gRPC contract (`clusterflux.v1`).
//! - [`manager`]: the control plane — gRPC service, legacy HTTP layer, stores.
//! - [`influx`]: the node side's view of InfluxDB 1.x metadata — the catalog,
//!   `meta.db` bytes, the three-way merge and the diff to InfluxQL.

pub mod agent;
pub mod client;
pub mod ctl;
pub mod influx;
pub mod manager;
pub mod signals;
pub mod telemetry;

pub mod proto {
    //! The `clusterflux.v1` contract, generated from `proto/clusterflux/v1/clusterflux.proto`.
    tonic::include_proto!("clusterflux.v1");

    /// The encoded file descriptor set, served through gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/clusterflux_descriptor.bin"));
}
