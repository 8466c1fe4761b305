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

/// Why the node's metadata could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The owner cannot be reached right now (influxd down): try again later.
    #[error("metadata owner unavailable: {0}")]
    Unavailable(String),
    /// The owner refused or failed the operation.
    #[error("metadata operation failed: {0}")]
    Failed(String),
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
}

/// Metadata held in memory.
pub struct InMemoryMeta {
    catalog: Mutex<Catalog>,
    changes: watch::Sender<u64>,
}

impl InMemoryMeta {
    pub fn new(catalog: Catalog) -> Self {
        InMemoryMeta {
            catalog: Mutex::new(catalog),
            changes: watch::channel(0).0,
        }
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
}
