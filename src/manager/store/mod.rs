//! Where the manager keeps its state: nodes, liveness and catalogs.
//!
//! One trait, two implementations: [`embedded`] (a redb file, for a single
//! manager with nothing to install) and [`etcd`] (several stateless managers
//! sharing a real etcd cluster). The manager never holds state of its own
//! beyond what a store hands it, so any manager on one etcd serves the same
//! cluster view. A store never announces changes itself: the control plane
//! publishes what it wrote, and the etcd store's change feed publishes what
//! other managers wrote, both through a [`CatalogFeed`].

pub mod embedded;
pub mod etcd;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A registered node as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub cluster: String,
    pub hostname: String,
    pub ips: Vec<String>,
    pub bind_address: String,
    pub http_addr: String,
    pub version: String,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms: u64,
}

/// A node with its liveness, as listings report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub record: NodeRecord,
    /// False once the TTL ran out without a heartbeat.
    pub alive: bool,
}

/// One version of a cluster's catalog. Version 0 with empty data: never written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub cluster: String,
    pub version: u64,
    pub data: Bytes,
}

impl Snapshot {
    /// The snapshot of a catalog that was never written.
    pub fn empty(cluster: &str) -> Self {
        Snapshot {
            cluster: cluster.to_owned(),
            version: 0,
            data: Bytes::new(),
        }
    }
}

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Stored as this version.
    Accepted(u64),
    /// The expected version was not current; this is the current snapshot.
    Conflict(Snapshot),
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (or did not answer in time): worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that cannot be true: a bug or corruption.
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The manager's state, behind one interface.
///
/// Liveness: a node is alive while its last registration or heartbeat is
/// younger than the TTL the store was opened with.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or replaces a node and marks it alive.
    async fn put_node(&self, node: NodeRecord) -> StoreResult<()>;
    /// One node, if known.
    async fn get_node(&self, cluster: &str, node_id: &str) -> StoreResult<Option<NodeRecord>>;
    /// Refreshes a node's liveness at `now_ms`; `false` if the node is unknown.
    async fn heartbeat(&self, cluster: &str, node_id: &str, now_ms: u64) -> StoreResult<bool>;
    /// Removes a node; `false` if it was unknown.
    async fn delete_node(&self, cluster: &str, node_id: &str) -> StoreResult<bool>;
    /// The nodes of one cluster (or all, with `None`), dead ones included.
    async fn list_nodes(&self, cluster: Option<&str>) -> StoreResult<Vec<NodeStatus>>;
    /// A cluster's current catalog.
    async fn get_meta(&self, cluster: &str) -> StoreResult<Snapshot>;
    /// Stores `data` as `expected + 1` if `expected` is the current version.
    async fn cas_meta(&self, cluster: &str, expected: u64, data: Bytes) -> StoreResult<CasOutcome>;
    /// Every cluster with a written catalog, with its version.
    async fn list_catalogs(&self) -> StoreResult<Vec<(String, u64)>>;
    /// The managers sharing this store (their advertised addresses).
    async fn list_managers(&self) -> StoreResult<Vec<String>>;
    /// Answers quickly whether the store is reachable.
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and releases the store at shutdown.
    async fn close(&self);
}

/// Where catalog snapshots are announced to those waiting on them (the
/// manager's hub). The control plane publishes its own writes; a store shared
/// with other managers publishes theirs.
pub trait CatalogFeed: Send + Sync + 'static {
    /// Announces a snapshot; older or equal versions than one already
    /// announced are ignored.
    fn publish(&self, snapshot: Snapshot);
    /// The clusters someone is waiting on (re-read after a feed interruption).
    fn watched_clusters(&self) -> Vec<String>;
}

/// Settings every store needs.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a node stays alive without a heartbeat.
    pub node_ttl: Duration,
    /// This manager's advertised address, listed among the managers.
    pub advertise: String,
}
