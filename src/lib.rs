//! Clusterflux: clustering for InfluxDB OSS 1.x.
//!
//! - [`proto`]: the generated gRPC contract (`clusterflux.v1`).
//! - [`manager`]: the control plane — gRPC service, legacy HTTP layer, stores.
//! - [`client`]: the node side — `cflux::Client`, transports, the retry layer.
//! - [`agent`]: `cflux-agent` — influxd as a node, and its front door.
//! - [`influx`]: InfluxDB 1.x metadata — the catalog, `meta.db` bytes, the
//!   three-way merge and the diff to InfluxQL.
//! - [`ctl`]: `cfluxctl`, the operator's command line.
//! - [`names`], [`clock`], [`legacy_protocol`]: the naming rules, the time
//!   base and the legacy protocol's JSON shapes both sides of the contract share.
//! - [`http_serve`], [`telemetry`], [`signals`], [`config_file`],
//!   [`backoff`]: serving, logs and metrics, shutdown, the TOML file, waiting
//!   before a retry — shared by the binaries.

pub mod agent;
pub mod backoff;
pub mod client;
pub mod clock;
pub mod config_file;
pub mod ctl;
pub mod http_serve;
pub mod influx;
pub mod legacy_protocol;
pub mod manager;
pub mod names;
pub mod signals;
pub mod telemetry;

pub mod proto {
    //! The `clusterflux.v1` contract, generated from `proto/clusterflux/v1/clusterflux.proto`.
    tonic::include_proto!("clusterflux.v1");

    /// The encoded file descriptor set, served through gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/clusterflux_descriptor.bin"));
}
