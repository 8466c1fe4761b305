//! The node's own metadata owner, the counterpart of InfluxDB's `meta.Client`.
//!
//! `cflux::Client` wraps one: it reads the node's catalog from it, applies the
//! cluster's catalog through it, and learns of local changes from it. The
//! agent's implementation drives a real influxd (`crate::influx::server`);
//! [`InMemoryMeta`] serves tests and Rust programs that want cluster-synced
//! metadata of their own.

use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::influx::catalog::Catalog;

/// The cause of a [`MetaError`], whatever the owner's own error type is.
pub type MetaCause = Box<dyn std::error::Error + Send + Sync>;

/// Why the node's metadata could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The owner cannot be reached or read right now (influxd down, `meta.db`
    /// unreadable): try again later.
    #[error("metadata owner unavailable")]
    Unavailable(#[source] MetaCause),
    /// The owner refused or failed the operation.
    #[error("metadata operation failed")]
    Failed(#[source] MetaCause),
    /// The metadata read does not describe the owner it is applied through
    /// (`--meta-dir` of one server, `--influxdb-url` of another): nothing
    /// may be pushed from it.
    #[error("the metadata read does not describe the server it belongs to")]
    Mismatch(#[source] MetaCause),
}

/// Who the metadata belongs to, as far as its owner can tell: InfluxDB's
/// `ClusterID` (random, set once when a server's metadata is created) and
/// `Index` (raised on every metadata change). A different `cluster_id`, or an
/// `index` lower than one seen before, means the metadata was replaced (a
/// fresh or reinstalled server, a restored old copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaIdentity {
    pub cluster_id: u64,
    pub index: u64,
}

/// The node's metadata owner.
#[async_trait]
pub trait MetaClient: Send + Sync + 'static {
    /// The node's cluster-wide catalog as it is now.
    async fn catalog(&self) -> Result<Catalog, MetaError>;
    /// Makes the node's cluster-wide catalog equal to `target`, leaving
    /// node-local metadata (shards) alone. Must not count as a local change.
    async fn apply(&self, target: &Catalog) -> Result<(), MetaError>;
    /// A counter that moves whenever the local catalog may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
    /// The identity of the metadata the last [`MetaClient::catalog`] read,
    /// or the last whole [`MetaClient::apply`] left (what the caller records
    /// with its base); `None` when the owner keeps none.
    fn identity(&self) -> Option<MetaIdentity> {
        None
    }
    /// Checks that the metadata read describes the server it belongs to
    /// (run before the first push after start); [`MetaError::Mismatch`] when
    /// it does not.
    async fn verify(&self) -> Result<(), MetaError> {
        Ok(())
    }
}

/// Metadata held in memory.
pub struct InMemoryMeta {
    catalog: Mutex<Catalog>,
    identity: Mutex<Option<MetaIdentity>>,
    changes: watch::Sender<u64>,
}

impl InMemoryMeta {
    pub fn new(catalog: Catalog) -> Self {
        InMemoryMeta {
            catalog: Mutex::new(catalog),
            identity: Mutex::new(None),
            changes: watch::channel(0).0,
        }
    }

    /// Sets the identity reported from now on (a test's replaced metadata).
    pub fn set_identity(&self, identity: Option<MetaIdentity>) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = identity;
    }

    /// A local change: runs `f` on the catalog and tells the client.
    pub fn update<T>(&self, f: impl FnOnce(&mut Catalog) -> T) -> T {
        let out = f(&mut self.lock());
        self.changes.send_modify(|n| *n += 1);
        out
    }

    /// A copy of the catalog as it is now.
    pub fn snapshot(&self) -> Catalog {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for InMemoryMeta {
    fn default() -> Self {
        Self::new(Catalog::default())
    }
}

#[async_trait]
impl MetaClient for InMemoryMeta {
    async fn catalog(&self) -> Result<Catalog, MetaError> {
        Ok(self.snapshot())
    }

    async fn apply(&self, target: &Catalog) -> Result<(), MetaError> {
        *self.lock() = target.clone();
        Ok(())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn identity(&self) -> Option<MetaIdentity> {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }
}
