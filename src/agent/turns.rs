//! Catalog applies and replicated deletions take turns on the local influxd.
//!
//! influxd 1.6 can crash (SIGSEGV in `DeleteSeriesRangeWithPredicate`) when
//! a `DELETE` and a `DROP DATABASE` of the same database run at the same
//! moment. One server's clients rarely do that; a replicating node does it
//! by itself, since its catalog sync and its peers' queued statements
//! reach its influxd independently (seen within 0.4 ms of each other in
//! InfluxDB's own suite through the front doors). So the sync task's
//! apply of a cluster catalog and each statement a peer sends hold the
//! same turn; writes never wait for it.

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The turn; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Turns(Arc<Mutex<()>>);

impl Turns {
    /// Waits for the turn; it is given back when the guard drops.
    pub async fn take(&self) -> OwnedMutexGuard<()> {
        self.0.clone().lock_owned().await
    }
}
