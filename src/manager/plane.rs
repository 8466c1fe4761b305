//! The control plane's semantics, shared by the gRPC service and the legacy
//! HTTP layer: registration, heartbeats, listings, catalog reads, watches,
//! compare-and-swap pushes and the catalog's history. Both transports are
//! thin translations of this. A pushed catalog is kept only when it is a
//! valid `meta.Data` ([`validate_meta_data`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::now_ms;
use crate::influx::catalog::Catalog;
use crate::influx::{meta_pb, validate_meta_data};
use crate::manager::hub::{Hub, Subscription};
use crate::manager::metrics::Metrics;
use crate::manager::roster::{self, Listing, Roster};
use crate::manager::store::{
    CasOutcome, ChangeNote, ClusterRemoval, HistoryEntry, NodeRecord, NodeStatus, RemovedCluster,
    Snapshot, Store, StoreError, StoreResult, SyncReport,
};
use crate::manager::summary::summarize;
use crate::telemetry::with_causes;

/// Why a control-plane call was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The store failed; [`StoreError::is_unavailable`] says whether a retry may help.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type PlaneResult<T> = Result<T, PlaneError>;

/// What a node tells about itself when it registers.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub cluster: String,
    pub node_id: String,
    pub hostname: String,
    pub ips: Vec<String>,
    pub http_addr: String,
    pub version: String,
    /// The peer address the request came from.
    pub bind_address: String,
}

/// Which face of the manager accepted a catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Grpc,
    Legacy,
    /// `RestoreVersion`: a past version published again.
    Restore,
}

impl Layer {
    /// The name the history records.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Grpc => "grpc",
            Layer::Legacy => "legacy",
            Layer::Restore => "restore",
        }
    }
}

/// A compare-and-swap of a cluster's catalog, as either layer hands it in.
#[derive(Clone, Debug)]
pub struct CatalogPush {
    pub cluster: String,
    pub expected_version: u64,
    /// Empty: versions only (the legacy layer, original nodes).
    pub expected_history_id: String,
    pub data: Bytes,
    /// The pushing node; may be empty.
    pub node_id: String,
    pub layer: Layer,
}

/// A node with how many versions its applied catalog is behind its
/// cluster's current one (`None`: unknown — it reported nothing, or a
/// version of another history), as `ListNodes` and the console show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedNode {
    pub status: NodeStatus,
    pub lag: Option<u64>,
}

/// Where a catalog [`ControlPlane::publish_version`] publishes comes from,
/// for its change note.
enum Origin {
    /// Pushed through a layer, as validation decoded it (the summary reads
    /// it, so the pushed bytes are decoded once).
    Pushed(meta_pb::Data),
    /// A kept version, by number, published again (`RestoreVersion`).
    Restored(u64),
}

/// A cluster's summary for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSummary {
    pub name: String,
    pub version: u64,
    pub nodes: u32,
    pub alive_nodes: u32,
}

/// What [`ControlPlane::delete_cluster`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    Removed(RemovedCluster),
    /// Nothing was removed: these nodes are alive.
    Refused {
        alive: Vec<NodeRecord>,
    },
}

/// Timing and size limits of the control plane.
#[derive(Clone, Debug)]
pub struct Limits {
    pub node_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// The largest catalog accepted, in bytes.
    pub max_catalog_bytes: usize,
    /// How long one store call may take before it counts as unavailable.
    pub store_timeout: Duration,
}

/// The control plane over one store.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    /// The node lists `WatchNodes` streams follow.
    roster: Roster,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
}

impl From<crate::names::NameError> for PlaneError {
    fn from(e: crate::names::NameError) -> Self {
        PlaneError::InvalidArgument(e.to_string())
    }
}

/// Checks a cluster name (see [`crate::names`]).
pub fn validate_cluster(name: &str) -> PlaneResult<()> {
    Ok(crate::names::validate_cluster(name)?)
}

/// Checks a node ID handed in by a client (see [`crate::names`]).
pub fn validate_node_id(id: &str) -> PlaneResult<()> {
    Ok(crate::names::validate_node_id(id)?)
}

impl ControlPlane {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        ControlPlane {
            store,
            hub,
            roster: Roster::new(),
            limits,
            metrics,
        }
    }

    /// Where catalog changes are fanned out and node changes signalled.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The node lists followed for `WatchNodes`.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Runs one store call within the store timeout, counting failures.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = StoreResult<T>>,
    ) -> PlaneResult<T> {
        let result = match tokio::time::timeout(self.limits.store_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::unavailable(format!(
                "no answer within {:?}",
                self.limits.store_timeout
            ))),
        };
        result.map_err(|e| {
            self.metrics.store_error(&e);
            tracing::warn!(error = %crate::telemetry::with_causes(&e), "store call failed");
            PlaneError::from(e)
        })
    }

    /// Registers a node: a new ID when none is given, the same node again when
    /// the ID is known, and a recreated node when the ID is unknown (a manager
    /// that lost its state heals).
    #[tracing::instrument(skip_all, fields(cluster = %reg.cluster, node = %reg.node_id))]
    pub async fn register(&self, mut reg: Registration) -> PlaneResult<NodeRecord> {
        validate_cluster(&reg.cluster)?;
        crate::names::validate_registration(crate::names::RegistrationFields {
            hostname: &reg.hostname,
            ips: &reg.ips,
            http_addr: &reg.http_addr,
            version: &reg.version,
        })?;
        if reg.node_id.is_empty() {
            reg.node_id = uuid::Uuid::new_v4().to_string();
        } else {
            validate_node_id(&reg.node_id)?;
        }
        let now = now_ms();
        let known = self
            .call(self.store.get_node(&reg.cluster, &reg.node_id))
            .await?;
        let record = NodeRecord {
            node_id: reg.node_id,
            cluster: reg.cluster,
            hostname: reg.hostname,
            ips: reg.ips,
            bind_address: reg.bind_address,
            http_addr: reg.http_addr,
            version: reg.version,
            registered_at_ms: known.as_ref().map_or(now, |k| k.registered_at_ms),
            last_heartbeat_ms: now,
            // Reported again with the next heartbeat.
            sync: None,
        };
        self.call(self.store.put_node(record.clone())).await?;
        self.hub.nodes_changed(Some(&record.cluster));
        tracing::info!(
            cluster = %record.cluster,
            node = %record.node_id,
            hostname = %record.hostname,
            again = known.is_some(),
            "node registered"
        );
        Ok(record)
    }

    /// Refreshes a node's TTL and keeps what it reports about its sync
    /// (`None`: nothing, as from older nodes and the legacy protocol).
    #[tracing::instrument(skip_all, fields(%cluster, node = %node_id))]
    pub async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        sync: Option<SyncReport>,
    ) -> PlaneResult<()> {
        validate_cluster(cluster)?;
        validate_node_id(node_id)?;
        if let Some(s) = &sync {
            crate::names::validate_sync_report(&s.applied_history_id, &s.sync_error)?;
            crate::names::validate_catch_up(&s.catch_up)?;
        }
        if self
            .call(self.store.heartbeat(cluster, node_id, now_ms(), sync))
            .await?
        {
            if self.roster.listed_dead(cluster, node_id) {
                // Alive again: a change of membership for its watchers.
                self.hub.nodes_changed(Some(cluster));
            }
            Ok(())
        } else {
            Err(unknown_node(cluster, node_id))
        }
    }

    /// Removes a node.
    #[tracing::instrument(skip_all, fields(%cluster, node = %node_id))]
    pub async fn deregister(&self, cluster: &str, node_id: &str) -> PlaneResult<()> {
        validate_cluster(cluster)?;
        validate_node_id(node_id)?;
        if self.call(self.store.delete_node(cluster, node_id)).await? {
            self.hub.nodes_changed(Some(cluster));
            tracing::info!(%cluster, node = %node_id, "node deregistered");
            Ok(())
        } else {
            Err(unknown_node(cluster, node_id))
        }
    }

    /// The nodes of one cluster, or of all clusters when `cluster` is empty.
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn list_nodes(&self, cluster: &str) -> PlaneResult<Vec<NodeStatus>> {
        let filter = if cluster.is_empty() {
            None
        } else {
            validate_cluster(cluster)?;
            Some(cluster)
        };
        let mut nodes = self.call(self.store.list_nodes(filter)).await?;
        nodes.sort_by(|a, b| {
            (&a.record.cluster, &a.record.node_id).cmp(&(&b.record.cluster, &b.record.node_id))
        });
        Ok(nodes)
    }

    /// [`Self::list_nodes`], each node with its lag behind its cluster's
    /// catalog. A watched cluster's catalog is the hub's latest (no store
    /// read); only clusters with a reporting node are looked up.
    pub async fn list_nodes_with_lag(&self, cluster: &str) -> PlaneResult<Vec<ListedNode>> {
        let nodes = self.list_nodes(cluster).await?;
        let mut current = HashMap::<String, Snapshot>::new();
        let mut out = Vec::with_capacity(nodes.len());
        for status in nodes {
            let lag = match &status.record.sync {
                None => None,
                Some(report) => {
                    let name = &status.record.cluster;
                    if !current.contains_key(name) {
                        let s = match self.hub.latest(name) {
                            Some(s) => s,
                            None => self.call(self.store.get_meta(name)).await?,
                        };
                        current.insert(name.clone(), s);
                    }
                    current.get(name).and_then(|s| report.lag(s))
                }
            };
            out.push(ListedNode { status, lag });
        }
        Ok(out)
    }

    /// Every cluster that has nodes or a catalog.
    pub async fn list_clusters(&self) -> PlaneResult<Vec<ClusterSummary>> {
        let nodes = self.call(self.store.list_nodes(None)).await?;
        let catalogs = self.call(self.store.list_catalogs()).await?;
        let mut out = std::collections::BTreeMap::<String, ClusterSummary>::new();
        for (name, version) in catalogs {
            out.entry(name.clone())
                .or_insert_with(|| summary(&name))
                .version = version;
        }
        for n in nodes {
            let s = out
                .entry(n.record.cluster.clone())
                .or_insert_with(|| summary(&n.record.cluster));
            s.nodes += 1;
            s.alive_nodes += u32::from(n.alive);
        }
        Ok(out.into_values().collect())
    }

    /// A cluster's current catalog.
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn get_meta(&self, cluster: &str) -> PlaneResult<Snapshot> {
        validate_cluster(cluster)?;
        self.call(self.store.get_meta(cluster)).await
    }

    /// Subscribes to a cluster's catalog. The subscription yields the current
    /// snapshot (if its version differs from what the caller knows) and then
    /// every change.
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn watch(&self, cluster: &str) -> PlaneResult<Subscription> {
        validate_cluster(cluster)?;
        let sub = self.hub.subscribe(cluster);
        let current = self.call(self.store.get_meta(cluster)).await?;
        self.hub.publish(current);
        Ok(sub)
    }

    /// Follows the nodes of `cluster` (every cluster when empty): the
    /// current list, within the store timeout, and a subscription to every
    /// later change of membership (see [`crate::manager::roster`]).
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn watch_nodes(
        self: &Arc<Self>,
        cluster: &str,
    ) -> PlaneResult<(Arc<roster::NodeList>, roster::Subscription)> {
        if !cluster.is_empty() {
            validate_cluster(cluster)?;
        }
        let mut sub = self.roster.subscribe(self, &self.hub, cluster);
        let bound = self.limits.store_timeout + Duration::from_secs(1);
        match tokio::time::timeout(bound, sub.next()).await {
            Ok(Some(Listing::Nodes(nodes))) => Ok((nodes, sub)),
            Ok(Some(Listing::Failed(why))) => Err(StoreError::unavailable(why).into()),
            Ok(None) => Err(StoreError::unavailable("the manager is shutting down").into()),
            Err(_) => Err(StoreError::unavailable(format!(
                "the nodes were not listed within {bound:?}"
            ))
            .into()),
        }
    }

    /// Compare-and-swap of a cluster's catalog: refused unless the data is a
    /// valid `meta.Data`; a conflict when the version or the history differs.
    #[tracing::instrument(skip_all, fields(cluster = %push.cluster, node = %push.node_id, expected = push.expected_version))]
    pub async fn push(&self, push: CatalogPush) -> PlaneResult<CasOutcome> {
        validate_cluster(&push.cluster)?;
        if push.data.len() > self.limits.max_catalog_bytes {
            return Err(PlaneError::InvalidArgument(format!(
                "catalog is {} bytes; the limit is {} (--max-message-size)",
                push.data.len(),
                self.limits.max_catalog_bytes
            )));
        }
        let decoded = validate_meta_data(&push.data)
            .map_err(|e| PlaneError::InvalidArgument(with_causes(&e)))?;
        self.publish_version(push, Origin::Pushed(decoded)).await
    }

    /// The compare-and-swap of a valid catalog: the summary is computed
    /// against the current snapshot, which the swap then requires. The hub
    /// knows the latest snapshot of a watched cluster and the last one this
    /// manager accepted; the store is read only when that one is not the
    /// version the push expects (the swap refuses a stale one, so the
    /// summary is exact either way).
    async fn publish_version(&self, push: CatalogPush, origin: Origin) -> PlaneResult<CasOutcome> {
        let cluster = push.cluster.as_str();
        let announced = self.hub.last_known(cluster).filter(|s| {
            s.version == push.expected_version
                && !s.history_id.is_empty()
                && (push.expected_history_id.is_empty() || push.expected_history_id == s.history_id)
        });
        let current = match announced {
            Some(s) => s,
            None => self.call(self.store.get_meta(cluster)).await?,
        };
        let history_differs =
            !push.expected_history_id.is_empty() && push.expected_history_id != current.history_id;
        if current.version != push.expected_version || history_differs {
            return Ok(self.conflicted(&push, current));
        }
        let hostname = if push.node_id.is_empty() {
            String::new()
        } else {
            self.call(self.store.get_node(cluster, &push.node_id))
                .await?
                .map(|n| n.hostname)
                .unwrap_or_default()
        };
        let (summary, restored_from) = match origin {
            Origin::Restored(version) => (format!("restored version {version}"), version),
            Origin::Pushed(_) if current.version == 0 => ("initial catalog".to_owned(), 0),
            Origin::Pushed(decoded) => (describe_change(&current.data, &decoded), 0),
        };
        let note = ChangeNote {
            changed_at_ms: now_ms(),
            node_id: push.node_id.clone(),
            hostname,
            layer: push.layer.as_str().to_owned(),
            summary,
            restored_from,
        };
        // The swap requires the history just read, so the summary is exact.
        let outcome = self
            .call(self.store.cas_meta(
                cluster,
                push.expected_version,
                &current.history_id,
                push.data.clone(),
                note,
            ))
            .await?;
        match outcome {
            CasOutcome::Accepted(v) => {
                let history_id = if current.history_id.is_empty() {
                    // A first write created the history: ask for its ID.
                    self.call(self.store.get_meta(cluster)).await?.history_id
                } else {
                    current.history_id
                };
                // This manager's watchers need not wait for a store's feed,
                // and its next push needs no read.
                self.hub.accepted(Snapshot {
                    cluster: cluster.to_owned(),
                    version: v,
                    data: push.data,
                    history_id,
                });
                tracing::info!(%cluster, node = %push.node_id, version = v, layer = push.layer.as_str(), "catalog accepted");
                Ok(CasOutcome::Accepted(v))
            }
            CasOutcome::Conflict(now) => Ok(self.conflicted(&push, now)),
        }
    }

    fn conflicted(&self, push: &CatalogPush, current: Snapshot) -> CasOutcome {
        self.metrics.conflicts.inc();
        tracing::info!(
            cluster = %push.cluster,
            node = %push.node_id,
            expected = push.expected_version,
            current = current.version,
            "catalog push conflicted"
        );
        CasOutcome::Conflict(current)
    }

    /// The kept versions of a cluster's catalog, newest first; at most
    /// `limit` of them (0: all).
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn history(&self, cluster: &str, limit: usize) -> PlaneResult<Vec<HistoryEntry>> {
        validate_cluster(cluster)?;
        let mut entries = self.call(self.store.history(cluster)).await?;
        if limit > 0 {
            entries.truncate(limit);
        }
        Ok(entries)
    }

    /// One kept version of a cluster's catalog.
    #[tracing::instrument(skip_all, fields(%cluster, version))]
    pub async fn version(&self, cluster: &str, version: u64) -> PlaneResult<Snapshot> {
        validate_cluster(cluster)?;
        let (entry, data) = self
            .call(self.store.version(cluster, version))
            .await?
            .ok_or_else(|| not_kept(cluster, version))?;
        Ok(Snapshot {
            cluster: cluster.to_owned(),
            version: entry.version,
            data,
            history_id: entry.history_id,
        })
    }

    /// Publishes kept version `version` again as a new version, if
    /// `expected_version` is still current (a conflict otherwise).
    #[tracing::instrument(skip_all, fields(%cluster, version, expected_version))]
    pub async fn restore(
        &self,
        cluster: &str,
        version: u64,
        expected_version: u64,
    ) -> PlaneResult<CasOutcome> {
        validate_cluster(cluster)?;
        let current = self.call(self.store.get_meta(cluster)).await?;
        if current.version == 0 {
            return Err(PlaneError::NotFound(format!(
                "cluster {cluster:?} has no catalog"
            )));
        }
        let past = self.version(cluster, version).await?;
        let outcome = self
            .publish_version(
                CatalogPush {
                    cluster: cluster.to_owned(),
                    expected_version,
                    expected_history_id: past.history_id,
                    data: past.data,
                    node_id: String::new(),
                    layer: Layer::Restore,
                },
                Origin::Restored(version),
            )
            .await?;
        if let CasOutcome::Accepted(v) = outcome {
            tracing::info!(%cluster, restored = version, version = v, "catalog version restored");
        }
        Ok(outcome)
    }

    /// Removes a cluster whose nodes are all dead: its catalog, history and
    /// node records; refused while any node is alive. A cluster without
    /// nodes or catalog is `NotFound`, naming those that exist. The
    /// cluster's watches end, so their holders watch again and find it as it
    /// is now (never written).
    #[tracing::instrument(skip_all, fields(%cluster))]
    pub async fn delete_cluster(&self, cluster: &str) -> PlaneResult<Deletion> {
        validate_cluster(cluster)?;
        match self.call(self.store.delete_cluster(cluster)).await? {
            ClusterRemoval::Removed(removed) => {
                self.hub.removed(cluster);
                self.hub.nodes_changed(Some(cluster));
                tracing::info!(%cluster, nodes = removed.nodes, versions = removed.versions, version = removed.version, "cluster deleted");
                Ok(Deletion::Removed(removed))
            }
            ClusterRemoval::Alive(alive) => {
                tracing::info!(%cluster, alive = alive.len(), "cluster not deleted: nodes are alive");
                Ok(Deletion::Refused { alive })
            }
            ClusterRemoval::Unknown => {
                let names: Vec<String> = self
                    .list_clusters()
                    .await?
                    .into_iter()
                    .map(|c| c.name)
                    .collect();
                let known = if names.is_empty() {
                    "no clusters yet".to_owned()
                } else {
                    format!("clusters: {}", names.join(", "))
                };
                Err(PlaneError::NotFound(format!(
                    "cluster {cluster:?} does not exist; {known}"
                )))
            }
        }
    }

    /// The managers sharing this plane's store.
    pub async fn managers(&self) -> PlaneResult<Vec<String>> {
        self.call(self.store.list_managers()).await
    }

    /// Whether the store answers right now.
    pub async fn ready(&self) -> bool {
        self.call(self.store.ping()).await.is_ok()
    }

    /// Refreshes the node gauges (called when metrics are scraped).
    pub async fn refresh_gauges(&self) {
        if let Ok(nodes) = self.call(self.store.list_nodes(None)).await {
            self.metrics.set_node_gauges(&nodes);
        }
    }

    /// Ends every watch stream and long poll (shutdown).
    pub fn end_watches(&self) {
        self.hub.close_all();
        self.roster.close_all();
    }

    /// Releases the store (after the last request).
    pub async fn close(&self) {
        self.store.close().await;
    }
}

fn summary(name: &str) -> ClusterSummary {
    ClusterSummary {
        name: name.to_owned(),
        version: 0,
        nodes: 0,
        alive_nodes: 0,
    }
}

/// The summary of a change from the `old` bytes to `new`, the pushed catalog
/// as validation decoded it; catalogs kept before validation existed may not
/// decode.
fn describe_change(old: &[u8], new: &meta_pb::Data) -> String {
    match (Catalog::from_meta_bytes(old), Catalog::from_meta(new)) {
        (Ok(from), Ok(to)) => summarize(&from, &to),
        _ => "catalog replaced".to_owned(),
    }
}

fn not_kept(cluster: &str, version: u64) -> PlaneError {
    PlaneError::NotFound(format!(
        "version {version} of cluster {cluster:?} is not kept (pruned, or never written)"
    ))
}

fn unknown_node(cluster: &str, node_id: &str) -> PlaneError {
    PlaneError::NotFound(format!(
        "node {node_id:?} is not registered in cluster {cluster:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_checked() {
        assert!(validate_cluster("prod-eu").is_ok());
        assert!(validate_cluster("ünïcode/with slash").is_ok());
        assert!(validate_cluster("").is_err());
        assert!(validate_cluster(&"x".repeat(128)).is_ok());
        assert!(validate_cluster(&"x".repeat(129)).is_err());
        assert!(validate_cluster("a\nb").is_err());
        assert!(validate_cluster("a\u{7f}b").is_err());
    }
}
