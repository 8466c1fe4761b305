//! InfluxDB 1.x metadata, as the node side of Clusterflux sees it. Pure: no I/O.
//!
//! What travels between nodes and the manager is InfluxDB's own `meta.Data`
//! (the bytes of `meta.db`), but only part of it is the cluster's business:
//!
//! - [`catalog`]: the cluster-wide part — databases and their default policy,
//!   retention policies, subscriptions, continuous queries, users with their
//!   hashes, admin flags and privileges — as plain Rust values
//!   ([`Catalog::from_meta_bytes`]), and the way back ([`apply_to_meta`]),
//!   which writes a catalog into a node's own `meta.Data` while keeping its
//!   node-local parts (shard groups, shards, counters, nodes, Raft index and
//!   term) and every field a newer InfluxDB may have added.
//! - [`merge`]: the three-way merge a node runs when its push loses a race:
//!   the remote catalog with the node's own changes since the last synced base
//!   re-applied on top, per entity, with warnings for what cannot be kept.
//! - [`diff`]: the plan — the [`change`]s that turn a running server's catalog
//!   into another one, in an order the server accepts, since InfluxQL is the
//!   only way to change a running server's metadata; [`influxql`] renders
//!   them (and quotes names and durations for the agent and `cfluxctl`).
//!
//! - [`validate`]: what a valid `meta.Data` is ([`validate_meta_data`]), the
//!   check every pushed catalog passes before the manager keeps it.
//!
//! A node's sync step is then: `merge(base, local, remote)` → `diff(local,
//! merged)` → run the statements → read `meta.db` back as the new local
//! catalog. A test-only model of influxd (`simulate`) applies statements to
//! a catalog, so the whole loop can be tested without a server.
//!
//! [`meta_pb`] holds the prost types generated from `proto/influxdb/meta.proto`.
//! prost drops unknown fields, so they are used for reading only; writing goes
//! through the field-level splice of the private `wire` module.

pub mod catalog;
pub mod change;
pub mod diff;
pub mod influxql;
pub mod merge;
#[cfg(test)]
mod simulate;
#[cfg(test)]
mod testgen;
pub mod validate;
mod wire;

pub use catalog::{
    apply_to_meta, Catalog, CatalogError, ContinuousQuery, Database, Privilege, RetentionPolicy,
    Subscription, User,
};
pub use change::{Change, Statement, Target};
pub use diff::diff;
pub use merge::{merge, MergeOutcome};
pub use validate::{validate_meta_data, InvalidMeta};
pub use wire::WireError;

pub mod meta_pb {
    //! InfluxDB 1.x's `meta.Data` (proto2), generated from
    //! `proto/influxdb/meta.proto`. Decoding with these types drops unknown
    //! fields: write through [`super::apply_to_meta`] instead of encoding them.
    include!(concat!(env!("OUT_DIR"), "/meta.rs"));
}
