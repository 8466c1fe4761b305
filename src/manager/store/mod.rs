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
    /// What the node reported with its last heartbeat; `None`: nothing (an
    /// older node, the legacy protocol). Records written before nodes
    /// reported it decode as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncReport>,
}

/// What a node reports about its catalog sync with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The catalog version the node has applied; 0 before its first sync.
    pub applied_version: u64,
    /// The history that version belongs to; empty when the node knows none.
    pub applied_history_id: String,
    /// Why the node's last sync step failed; empty while its steps succeed.
    pub sync_error: String,
    /// Why the node needs catch-up; empty when it does not (or does not
    /// check). Reports written before it existed decode as empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catch_up: String,
    /// Statements that change points the node has queued for others and
    /// not delivered yet. Reports written before it existed decode as 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub queued_statements: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SyncReport {
    /// How many versions the node is behind `current`, the cluster's
    /// catalog: known when the node applied a version of the same history,
    /// or knows no history (versions alone decide, as the node itself
    /// does). `None` for a version of another history: the node will rejoin.
    pub fn lag(&self, current: &Snapshot) -> Option<u64> {
        let same_history =
            self.applied_history_id.is_empty() || self.applied_history_id == current.history_id;
        same_history.then(|| current.version.saturating_sub(self.applied_version))
    }
}

/// A node with its liveness, as listings report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub record: NodeRecord,
    /// False once the TTL ran out without a heartbeat.
    pub alive: bool,
}

/// One version of a cluster's catalog. Version 0 with empty data and no
/// history: never written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub cluster: String,
    pub version: u64,
    pub data: Bytes,
    /// The identity of the cluster's history (see [`Store::cas_meta`]); a
    /// version names one catalog only together with it.
    pub history_id: String,
}

impl Snapshot {
    /// The snapshot of a catalog that was never written.
    pub fn empty(cluster: &str) -> Self {
        Snapshot {
            cluster: cluster.to_owned(),
            version: 0,
            data: Bytes::new(),
            history_id: String::new(),
        }
    }
}

/// Who made a catalog change and what it changed, as the control plane
/// describes it to the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNote {
    pub changed_at_ms: u64,
    /// The pushing node; empty when not given.
    pub node_id: String,
    /// The pushing node's host name, when it is a registered node.
    pub hostname: String,
    /// "grpc", "legacy" or "restore".
    pub layer: String,
    /// One line: what changed against the previous version.
    pub summary: String,
    /// For a restore: the version whose catalog was published again; else 0.
    pub restored_from: u64,
}

/// One kept version of a cluster's catalog, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub history_id: String,
    pub size_bytes: u64,
    pub note: ChangeNote,
}

/// How much history a store keeps per cluster: at most `max_versions`
/// versions and `max_bytes` of catalog bytes, oldest pruned first; the
/// current version is always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    pub max_versions: usize,
    pub max_bytes: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_versions: 100,
            max_bytes: 64 << 20,
        }
    }
}

impl HistoryLimits {
    /// The versions of `kept` (newest first, with their sizes) beyond the
    /// limits, once a version of `new_size` bytes is added in front of them.
    pub fn pruned(&self, new_size: u64, kept: &[(u64, u64)]) -> Vec<u64> {
        let mut count = 1usize;
        let mut bytes = new_size;
        let mut out = Vec::new();
        for &(version, size) in kept {
            count += 1;
            bytes = bytes.saturating_add(size);
            if count > self.max_versions || bytes > self.max_bytes {
                out.push(version);
            }
        }
        out
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

/// What went with a deleted cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovedCluster {
    /// Node records removed (all of them dead).
    pub nodes: u32,
    /// Kept catalog versions removed.
    pub versions: u32,
    /// The catalog version the cluster had (0: never written).
    pub version: u64,
}

/// What [`Store::delete_cluster`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterRemoval {
    Removed(RemovedCluster),
    /// Nothing was removed: these nodes are alive.
    Alive(Vec<NodeRecord>),
    /// The cluster has neither nodes nor a catalog.
    Unknown,
}

/// What made a store call fail, kept as the error's source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a store call failed: what was being done, and the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (or did not answer in time): worth retrying.
    #[error("store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The store answered with something that cannot be true: a bug or corruption.
    #[error("store error: {what}")]
    Internal {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    pub fn internal(what: impl Into<String>) -> Self {
        StoreError::Internal {
            what: what.into(),
            cause: None,
        }
    }

    /// The same error, with `cause` as its source.
    pub fn caused_by(self, cause: impl Into<Cause>) -> Self {
        let cause = Some(cause.into());
        match self {
            StoreError::Unavailable { what, .. } => StoreError::Unavailable { what, cause },
            StoreError::Internal { what, .. } => StoreError::Internal { what, cause },
        }
    }

    /// Worth retrying.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
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
    /// Refreshes a node's liveness at `now_ms` and keeps what it reported
    /// about its sync (`None`: nothing); `false` if the node is unknown.
    async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        now_ms: u64,
        sync: Option<SyncReport>,
    ) -> StoreResult<bool>;
    /// Removes a node; `false` if it was unknown.
    async fn delete_node(&self, cluster: &str, node_id: &str) -> StoreResult<bool>;
    /// The nodes of one cluster (or all, with `None`), dead ones included.
    async fn list_nodes(&self, cluster: Option<&str>) -> StoreResult<Vec<NodeStatus>>;
    /// A cluster's current catalog.
    async fn get_meta(&self, cluster: &str) -> StoreResult<Snapshot>;
    /// Stores `data` as `expected + 1` if `expected` is the current version
    /// and `expected_history` is empty or the cluster's history ID, and adds
    /// it to the history with `note`, pruning beyond the store's
    /// [`HistoryLimits`] in the same write. The first write of a cluster
    /// creates its history ID (a random UUID): a store that lost its state
    /// starts a new history, so old version numbers never name new catalogs.
    async fn cas_meta(
        &self,
        cluster: &str,
        expected: u64,
        expected_history: &str,
        data: Bytes,
        note: ChangeNote,
    ) -> StoreResult<CasOutcome>;
    /// The kept versions of a cluster's catalog, newest first.
    async fn history(&self, cluster: &str) -> StoreResult<Vec<HistoryEntry>>;
    /// One kept version with its bytes; `None` when it is not kept.
    async fn version(
        &self,
        cluster: &str,
        version: u64,
    ) -> StoreResult<Option<(HistoryEntry, Bytes)>>;
    /// Removes a cluster whose nodes are all dead, in one write: its node
    /// records, its catalog, its history and its history ID. A node
    /// registering meanwhile either shows as alive (and nothing is removed)
    /// or registers into the cluster afresh after it.
    async fn delete_cluster(&self, cluster: &str) -> StoreResult<ClusterRemoval>;
    /// Every cluster with a written catalog, with its version.
    async fn list_catalogs(&self) -> StoreResult<Vec<(String, u64)>>;
    /// The managers sharing this store (their advertised addresses).
    async fn list_managers(&self) -> StoreResult<Vec<String>>;
    /// Answers quickly whether the store can serve every call right now
    /// (reachable, and for etcd, this manager's liveness lease confirmed, so
    /// a heartbeat would be recorded).
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and releases the store at shutdown.
    async fn close(&self);
}

/// Where catalog snapshots are announced to those waiting on them (the
/// manager's hub), and node changes signalled. The control plane publishes
/// its own writes; a store shared with other managers publishes theirs.
pub trait CatalogFeed: Send + Sync + 'static {
    /// Announces a snapshot; older or equal versions than one already
    /// announced are ignored.
    fn publish(&self, snapshot: Snapshot);
    /// The clusters someone is waiting on (re-read after a feed interruption).
    fn watched_clusters(&self) -> Vec<String>;
    /// Announces that a cluster's catalog is gone (the cluster was deleted):
    /// those waiting on it are told so, and nothing announced before counts.
    fn removed(&self, cluster: &str);
    /// Signals that the nodes of `cluster` (`None`: of any cluster) may have
    /// changed through another manager, or turned dead or alive.
    fn nodes_changed(&self, _cluster: Option<&str>) {}
}

/// Settings every store needs.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a node stays alive without a heartbeat.
    pub node_ttl: Duration,
    /// This manager's advertised address, listed among the managers.
    pub advertise: String,
    /// How much catalog history to keep.
    pub history: HistoryLimits,
    /// How often the etcd store compacts etcd's revisions (zero: never);
    /// the embedded store has nothing to compact.
    pub etcd_compaction_interval: Duration,
}

/// How often an etcd store compacts etcd's revisions unless told otherwise.
pub const DEFAULT_ETCD_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// A new history ID: a random UUID.
pub fn new_history_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether a push based on `expected_history` may replace `current`: an
/// empty expectation checks versions only (the legacy layer, original nodes).
pub fn same_history(expected_history: &str, current: &Snapshot) -> bool {
    expected_history.is_empty() || expected_history == current.history_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_nodes_reported_their_sync_decodes_as_unknown() {
        let old = r#"{"node_id":"n1","cluster":"prod","hostname":"h","ips":[],"bind_address":"","http_addr":"","version":"","registered_at_ms":1,"last_heartbeat_ms":2}"#;
        let record: NodeRecord = serde_json::from_str(old).expect("decodes");
        assert_eq!(record.sync, None);
        assert_eq!(record.last_heartbeat_ms, 2);
    }

    #[test]
    fn lag_counts_versions_of_the_same_history_only() {
        let current = Snapshot {
            version: 7,
            history_id: "h1".into(),
            ..Snapshot::empty("prod")
        };
        let report = |version: u64, history: &str| SyncReport {
            applied_version: version,
            applied_history_id: history.into(),
            ..SyncReport::default()
        };
        assert_eq!(report(7, "h1").lag(&current), Some(0));
        assert_eq!(report(4, "h1").lag(&current), Some(3));
        // Nothing applied yet, or no history known: versions decide.
        assert_eq!(report(0, "").lag(&current), Some(7));
        assert_eq!(report(9, "").lag(&current), Some(0));
        assert_eq!(report(7, "h0").lag(&current), None);
        assert_eq!(report(0, "").lag(&Snapshot::empty("new")), Some(0));
    }
}
