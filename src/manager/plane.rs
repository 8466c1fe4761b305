//! The control plane's semantics, shared by the gRPC service and the legacy
//! HTTP layer: registration, heartbeats, listings, catalog reads, watches and
//! compare-and-swap pushes. Both transports are thin translations of this.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::now_ms;
use crate::manager::hub::{Hub, Subscription};
use crate::manager::metrics::Metrics;
use crate::manager::store::{
    CasOutcome, NodeRecord, NodeStatus, Snapshot, Store, StoreError, StoreResult,
};

/// Why a control-plane call was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for PlaneError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                PlaneError::Unavailable(format!("store unavailable: {m}"))
            }
            StoreError::Internal(m) => PlaneError::Internal(format!("store error: {m}")),
        }
    }
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

/// A cluster's summary for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSummary {
    pub name: String,
    pub version: u64,
    pub nodes: u32,
    pub alive_nodes: u32,
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
            limits,
            metrics,
        }
    }

    /// Runs one store call within the store timeout, counting failures.
    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = StoreResult<T>>,
    ) -> PlaneResult<T> {
        let result = match tokio::time::timeout(self.limits.store_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {:?}",
                self.limits.store_timeout
            ))),
        };
        result.map_err(|e| {
            self.metrics.store_error(&e);
            tracing::warn!(error = %e, "store call failed");
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
        };
        self.call(self.store.put_node(record.clone())).await?;
        tracing::info!(
            cluster = %record.cluster,
            node = %record.node_id,
            hostname = %record.hostname,
            again = known.is_some(),
            "node registered"
        );
        Ok(record)
    }

    /// Refreshes a node's TTL.
    #[tracing::instrument(skip_all, fields(%cluster, node = %node_id))]
    pub async fn heartbeat(&self, cluster: &str, node_id: &str) -> PlaneResult<()> {
        validate_cluster(cluster)?;
        validate_node_id(node_id)?;
        if self
            .call(self.store.heartbeat(cluster, node_id, now_ms()))
            .await?
        {
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

    /// Compare-and-swap of a cluster's catalog.
    #[tracing::instrument(skip_all, fields(%cluster, node = %node_id, expected))]
    pub async fn push(
        &self,
        cluster: &str,
        expected: u64,
        data: Bytes,
        node_id: &str,
    ) -> PlaneResult<CasOutcome> {
        validate_cluster(cluster)?;
        if data.len() > self.limits.max_catalog_bytes {
            return Err(PlaneError::InvalidArgument(format!(
                "catalog is {} bytes; the limit is {} (--max-message-size)",
                data.len(),
                self.limits.max_catalog_bytes
            )));
        }
        let outcome = self
            .call(self.store.cas_meta(cluster, expected, data.clone()))
            .await?;
        match &outcome {
            CasOutcome::Accepted(v) => {
                // This manager's watchers need not wait for a store's feed.
                self.hub.publish(Snapshot {
                    cluster: cluster.to_owned(),
                    version: *v,
                    data,
                });
                tracing::info!(%cluster, node = %node_id, version = v, "catalog accepted")
            }
            CasOutcome::Conflict(current) => {
                self.metrics.conflicts.inc();
                tracing::info!(
                    %cluster,
                    node = %node_id,
                    expected,
                    current = current.version,
                    "catalog push conflicted"
                )
            }
        }
        Ok(outcome)
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
