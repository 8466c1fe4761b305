//! Joining: the moment from which every write acknowledged anywhere in the
//! cluster reaches this node through the queues.
//!
//! A front door queues a write for the members it knows when it takes the
//! write; a node that just registered is known to its peers only once their
//! node watch told them ([`super::membership`]), milliseconds later. Writes
//! acknowledged at a peer before that are not queued for the new node.
//! So a node has *joined* once every peer the manager lists alive answers
//! (at its signed [`PEER_QUEUES_PATH`](super::PEER_QUEUES_PATH)) that it
//! queues new writes for it; from then on nothing acknowledged at an alive
//! front door skips it, and what was acknowledged before (the cluster's
//! data, and the writes of those milliseconds) comes through catch-up,
//! which waits for the join ([`crate::agent::catch_up::auto`], and
//! `cfluxctl catch-up` checks the same). Until it has joined the node says
//! so: `/health` answers 503 with the reason, `cflux_replication_joined`
//! is 0.
//!
//! A peer that does not know the endpoint (an agent older than it) cannot
//! tell: it is taken at its word that it lists the node, with a warning.
//! A peer that is down is not waited for once the manager lists it dead;
//! when it comes back, its node watch tells it the members before it has
//! been listed alive for long (see `docs/decisions.md`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Replication;
use crate::agent::catch_up::SignedNode;
use crate::agent::influxql::InfluxdError;
use crate::backoff::Backoff;
use crate::clock::now_ms;

/// How long one peer may take to show its queues.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the node has joined, and if not, why.
pub struct JoinState {
    /// When the node joined (ms since the epoch); `None` until then.
    joined: watch::Sender<Option<u64>>,
    /// Why it has not joined yet.
    waiting: Mutex<String>,
}

impl Default for JoinState {
    fn default() -> Self {
        JoinState {
            joined: watch::Sender::new(None),
            waiting: Mutex::new("the manager has not listed the cluster's nodes yet".to_owned()),
        }
    }
}

impl JoinState {
    fn wait_because(&self, why: String) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// What one peer says about a node: whether it queues new writes for it.
pub enum PeerAnswer {
    Lists,
    DoesNotList,
    /// An agent without the endpoint: it cannot tell.
    Older,
    Failed(String),
}

impl PeerAnswer {
    /// Asks the peer at `addr` (signed with the members' `secret`) whether
    /// it queues new writes for `node_id`.
    pub async fn of(addr: &str, secret: &[u8], node_id: &str) -> PeerAnswer {
        let node = SignedNode::new(addr, secret.to_vec(), None);
        match tokio::time::timeout(ASK_TIMEOUT, node.queues()).await {
            Err(_) => PeerAnswer::Failed(format!("no answer within {ASK_TIMEOUT:?}")),
            Ok(Ok(q)) if q.queues_for(node_id) => PeerAnswer::Lists,
            Ok(Ok(_)) => PeerAnswer::DoesNotList,
            Ok(Err(InfluxdError::Status { status, .. }))
                if status == http::StatusCode::NOT_FOUND =>
            {
                PeerAnswer::Older
            }
            Ok(Err(e)) => PeerAnswer::Failed(crate::telemetry::with_causes(&e)),
        }
    }

    /// Why `peer` keeps the node from having joined; `None` when it does
    /// not (it lists the node, or cannot tell).
    pub fn missing(&self, peer: &str) -> Option<String> {
        match self {
            PeerAnswer::Lists | PeerAnswer::Older => None,
            PeerAnswer::DoesNotList => Some(format!("{peer} does not queue writes for it yet")),
            PeerAnswer::Failed(why) => Some(format!("{peer} cannot be asked: {why}")),
        }
    }
}

impl Replication {
    /// Why the node has not joined its cluster's replication yet; `None`
    /// once it has (see the module doc).
    pub fn joining(&self) -> Option<String> {
        if self.join.joined.borrow().is_some() {
            return None;
        }
        Some(
            self.join
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// When the node joined (ms since the epoch), once it has.
    pub fn joined_at_ms(&self) -> Option<u64> {
        *self.join.joined.borrow()
    }

    /// Waits until the node has joined; `false` at shutdown first.
    pub async fn wait_joined(&self) -> bool {
        let mut joined = self.join.joined.subscribe();
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            j = joined.wait_for(Option::is_some) => j.is_ok(),
        }
    }

    /// Asks every alive peer until all of them list this node, then marks
    /// it joined; returns then, or at shutdown.
    pub(super) async fn join(self: Arc<Self>) {
        let started = Instant::now();
        let mut again = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut older_told = std::collections::BTreeSet::new();
        loop {
            match self.join_step(&mut older_told).await {
                Ok(peers) => {
                    self.join.joined.send_replace(Some(now_ms()));
                    self.metrics.set_joined(true);
                    tracing::info!(
                        peers,
                        took = ?started.elapsed(),
                        "joined: every alive peer's front door queues new writes for this node; what was acknowledged before comes through catch-up"
                    );
                    return;
                }
                Err(why) => {
                    tracing::debug!(reason = %why, "not joined yet");
                    self.join.wait_because(why);
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(again.next_wait()) => {}
            }
        }
    }

    /// One round: how many alive peers list this node, or why not all do.
    async fn join_step(
        &self,
        older_told: &mut std::collections::BTreeSet<String>,
    ) -> Result<usize, String> {
        let own = self
            .own_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .ok_or("the manager has not listed the cluster's nodes yet")?;
        let peers: Vec<(String, String)> = {
            let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
            let members = self.members.read().unwrap_or_else(|e| e.into_inner());
            members
                .iter()
                .filter(|(id, _)| alive.contains(*id))
                .map(|(id, addr)| (id.clone(), addr.clone()))
                .collect()
        };
        let answers = futures::future::join_all(
            peers
                .iter()
                .map(|(_, addr)| PeerAnswer::of(addr, &self.secret, &own)),
        )
        .await;
        let mut missing = Vec::new();
        for ((peer, _), answer) in peers.iter().zip(answers) {
            if matches!(answer, PeerAnswer::Older) && older_told.insert(peer.clone()) {
                tracing::warn!(%peer, "the peer's agent cannot say whether it replicates to this node (an older version): taken as joined");
            }
            missing.extend(answer.missing(peer));
        }
        if missing.is_empty() {
            Ok(peers.len())
        } else {
            Err(format!(
                "{} of {} alive peers: {}",
                missing.len(),
                peers.len(),
                missing.join("; ")
            ))
        }
    }
}
