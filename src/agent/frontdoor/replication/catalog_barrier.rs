//! A catalog change is in effect at every alive node before its answer.
//!
//! Metadata sync carries `CREATE`, `DROP`, `ALTER`, `GRANT`, `REVOKE` and
//! `SET PASSWORD` to the other nodes, a moment after the node that took
//! them. A client spread over several front doors (a load balancer) that
//! creates a database at one and writes to it at the next would find it
//! missing there. So the answer to a query with a catalog change waits:
//!
//! 1. the node's metadata is pushed at once ([`PushNow`]), which gives the
//!    cluster catalog version that holds the change;
//! 2. every peer listed alive is asked (signed, [`PEER_CATALOG_PATH`]) which
//!    version it has applied, until each has that version or a newer one.
//!
//! The wait is bounded by `--catalog-wait` (10 s by default). A peer that
//! cannot take the change now is not waited for: one whose last sync step
//! failed (its influxd down, say), one on another catalog history, one
//! that cannot be reached or does not know the question (an older agent).
//! Past the bound, or when the change cannot be pushed now (the manager out
//! of reach), the answer goes out anyway: influxd carried the change out
//! here, and sync takes it to the others later. Each answer is counted by
//! how its wait ended (`cflux_catalog_barrier_total`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Replication;
use crate::client::push_now::PushNow;
use crate::proto;

/// Where a front door tells a peer which catalog version it has applied.
pub const PEER_CATALOG_PATH: &str = "/cflux/v1/peer-catalog";
/// How often a peer is asked again while it has not applied the version.
const POLL: Duration = Duration::from_millis(20);

/// The node's catalog sync, as the barrier sees it.
#[derive(Clone, Debug)]
pub struct CatalogSync {
    /// Pushes the node's metadata on request.
    pub push_now: Arc<PushNow>,
    /// What the sync task last reported (the applied version, the history,
    /// the last step's error).
    pub state: watch::Receiver<Option<proto::SyncState>>,
}

/// A node's answer on [`PEER_CATALOG_PATH`].
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AppliedCatalog {
    /// The cluster catalog version the node has applied.
    pub version: u64,
    /// The history that version belongs to.
    pub history_id: String,
    /// Why the node's last sync step failed; empty when it succeeded.
    #[serde(default)]
    pub sync_error: String,
}

impl AppliedCatalog {
    /// Whether versions of `history` compare with this one's (either
    /// unknown counts as the same).
    pub(super) fn same_history(&self, history: &str) -> bool {
        history.is_empty() || self.history_id.is_empty() || self.history_id == history
    }

    pub(super) fn of(state: Option<&proto::SyncState>) -> AppliedCatalog {
        state.map_or_else(
            || AppliedCatalog {
                sync_error: "not synced yet".to_owned(),
                ..AppliedCatalog::default()
            },
            |s| AppliedCatalog {
                version: s.applied_version,
                history_id: s.applied_history_id.clone(),
                sync_error: s.sync_error.clone(),
            },
        )
    }
}

/// How waiting for one peer ended.
#[derive(Debug, PartialEq, Eq)]
enum Peer {
    Applied,
    /// Not waited for, and why.
    Skipped(String),
    TimedOut,
}

impl Replication {
    /// Waits until every alive peer has applied the node's catalog as it is
    /// now (see the module's text); never fails, only logs and counts.
    pub(super) async fn catalog_barrier(&self) {
        let Some(sync) = &self.catalog_sync else {
            return;
        };
        if self.catalog_wait.is_zero() {
            return;
        }
        let started = Instant::now();
        let deadline = started + self.catalog_wait;
        let elapsed = || started.elapsed().as_secs_f64();
        let version = match tokio::time::timeout_at(deadline, sync.push_now.push()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(reason = %e, "a catalog change is answered before the other nodes have it: it could not be pushed now; sync takes it to them later");
                self.metrics.barrier("unpushed", elapsed());
                return;
            }
            Err(_) => {
                tracing::warn!(wait = ?self.catalog_wait, "a catalog change is answered before the other nodes have it: it was not pushed within --catalog-wait");
                self.metrics.barrier("unpushed", elapsed());
                return;
            }
        };
        let history = sync
            .state
            .borrow()
            .as_ref()
            .map(|s| s.applied_history_id.clone())
            .unwrap_or_default();
        let peers: Vec<(String, String)> = {
            let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
            let addresses = self.addresses.read().unwrap_or_else(|e| e.into_inner());
            alive
                .iter()
                .filter_map(|p| Some((p.clone(), addresses.get(p)?.clone())))
                .collect()
        };
        let history = history.as_str();
        let waits = peers.iter().map(|(id, address)| async move {
            let outcome = self.applied_at(address, version, history, deadline).await;
            (id, outcome)
        });
        let mut timed_out = Vec::new();
        for (peer, outcome) in futures::future::join_all(waits).await {
            match outcome {
                Peer::Applied => {}
                Peer::Skipped(why) => {
                    tracing::info!(%peer, version, reason = %why, "not waiting for a peer to apply a catalog change")
                }
                Peer::TimedOut => timed_out.push(peer.clone()),
            }
        }
        if timed_out.is_empty() {
            tracing::debug!(
                version,
                peers = peers.len(),
                seconds = elapsed(),
                "every alive node applied the catalog change"
            );
            self.metrics.barrier("applied", elapsed());
        } else {
            tracing::warn!(version, peers = ?timed_out, wait = ?self.catalog_wait, "a catalog change is answered before these peers applied it (--catalog-wait passed)");
            self.metrics.barrier("timeout", elapsed());
        }
    }

    /// Asks the peer at `address` until it has applied `version` of
    /// `history`, or cannot, or `deadline` passes.
    async fn applied_at(
        &self,
        address: &str,
        version: u64,
        history: &str,
        deadline: Instant,
    ) -> Peer {
        loop {
            // A peer that takes the question but does not answer (paused)
            // holds the answer no longer than the wait.
            let answer = match tokio::time::timeout_at(deadline, self.peer_catalog(address)).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return Peer::Skipped(e),
                Err(_) => return Peer::TimedOut,
            };
            if !answer.same_history(history) {
                return Peer::Skipped(format!("on another history ({})", answer.history_id));
            }
            if answer.version >= version {
                return Peer::Applied;
            }
            if !answer.sync_error.is_empty() {
                return Peer::Skipped(answer.sync_error);
            }
            if Instant::now() + POLL >= deadline {
                return Peer::TimedOut;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn peer_catalog(&self, address: &str) -> Result<AppliedCatalog, String> {
        let response = self
            .signed_post(address, PEER_CATALOG_PATH, bytes::Bytes::new())
            .await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "it answered {status} {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))
    }
}

/// The receiving end of [`PEER_CATALOG_PATH`]: members only.
pub async fn peer_catalog(
    State(replication): State<Arc<Replication>>,
    request: Request,
) -> Response {
    if let Err(refused) = replication.signed_question(request).await {
        return refused;
    }
    let state = replication
        .catalog_sync
        .as_ref()
        .map(|s| s.state.borrow().clone());
    match state {
        Some(state) => axum::Json(AppliedCatalog::of(state.as_ref())).into_response(),
        None => replication
            .identity
            .error(StatusCode::NOT_FOUND, "this node does not sync a catalog"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_not_synced_yet_says_so() {
        assert_eq!(AppliedCatalog::of(None).sync_error, "not synced yet");
        let s = proto::SyncState {
            applied_version: 7,
            applied_history_id: "h".into(),
            ..Default::default()
        };
        let a = AppliedCatalog::of(Some(&s));
        assert_eq!(
            (a.version, a.history_id.as_str(), a.sync_error.as_str()),
            (7, "h", "")
        );
    }
}
