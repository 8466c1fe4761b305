//! `WatchNodes`: one follower per watched node list, however many streams
//! watch it.
//!
//! A follower lists its cluster's nodes (or every cluster's, for "") from
//! the store, and again whenever the hub signals a change
//! ([`Hub::nodes_changed`]) and when the next alive node's TTL runs out; it
//! announces a list only when its membership differs from the last one
//! announced ([`membership`]), so heartbeats alone announce nothing. Every
//! stream of that list sends what the follower announces, the latest one
//! first: a burst of changes may reach a slow stream coalesced, never out of
//! order, since one task lists and announces in turn.
//!
//! Who signals: the control plane, for the registrations, deregistrations,
//! deleted clusters and revivals it handles itself; the etcd store, for
//! what etcd's watch of the liveness keys shows (nodes registered, dead or
//! alive again through any manager). A death on the embedded store is a
//! time: the follower wakes when the earliest alive node's TTL runs out.
//! As a safety net for what nothing signals (a dead node deregistered
//! through another manager), a follower lists again at least once per TTL.
//!
//! A follower ends when its last stream has gone, or at shutdown (every
//! stream then ends too).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::manager::hub::Hub;
use crate::manager::plane::{ControlPlane, ListedNode};
use crate::manager::store::NodeRecord;
use crate::telemetry::with_causes;

/// What a follower announces: the latest node list, or why the first one
/// could not be read (later failures keep the last list announced).
#[derive(Clone, Debug)]
pub enum Listing {
    Nodes(Arc<NodeList>),
    /// No list yet: the store failed (the message says why).
    Failed(String),
}

type Slot = Option<Listing>;

/// One announced node list, with its dead nodes at hand: every heartbeat
/// asks whether its node is among them ([`Roster::listed_dead`]).
#[derive(Debug)]
pub struct NodeList {
    nodes: Vec<ListedNode>,
    /// (cluster, node ID) of every node listed dead.
    dead: HashSet<(String, String)>,
}

impl NodeList {
    fn new(nodes: Vec<ListedNode>) -> Self {
        let dead = nodes
            .iter()
            .filter(|n| !n.status.alive)
            .map(|n| {
                (
                    n.status.record.cluster.clone(),
                    n.status.record.node_id.clone(),
                )
            })
            .collect();
        NodeList { nodes, dead }
    }
}

impl std::ops::Deref for NodeList {
    type Target = [ListedNode];

    fn deref(&self) -> &[ListedNode] {
        &self.nodes
    }
}

/// Wait this much past a TTL's end before listing, so the node is dead by then.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);

/// The node lists followed, by cluster ("" for every cluster).
#[derive(Default)]
pub struct Roster {
    lists: Mutex<HashMap<String, watch::Sender<Slot>>>,
    closed: CancellationToken,
}

impl Roster {
    pub fn new() -> Self {
        Roster::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Slot>>> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of `cluster`'s lists (empty until its follower's first
    /// listing); the follower starts with the first receiver.
    pub fn subscribe(&self, plane: &Arc<ControlPlane>, hub: &Hub, cluster: &str) -> Subscription {
        let mut lists = self.lock();
        if let Some(tx) = lists.get(cluster) {
            return Subscription {
                rx: tx.subscribe(),
                started: false,
            };
        }
        let (tx, rx) = watch::channel(None);
        lists.insert(cluster.to_owned(), tx.clone());
        // Taken before the first listing, so no change is lost between them.
        let signal = hub.node_signal(cluster);
        tokio::spawn(follow(plane.clone(), cluster.to_owned(), tx, signal));
        Subscription { rx, started: false }
    }

    /// Whether a followed list shows the node dead (a heartbeat from it is
    /// then a change to signal).
    pub fn listed_dead(&self, cluster: &str, node_id: &str) -> bool {
        let lists = self.lock();
        let key = (cluster.to_owned(), node_id.to_owned());
        [cluster, ""].iter().any(|list| {
            lists.get(*list).is_some_and(|tx| match &*tx.borrow() {
                Some(Listing::Nodes(nodes)) => nodes.dead.contains(&key),
                _ => false,
            })
        })
    }

    /// Ends every follower and, with them, every stream (shutdown).
    pub fn close_all(&self) {
        self.closed.cancel();
        self.lock().clear();
    }

    /// Removes a follower's list and signal if nobody receives the list any
    /// more (or at shutdown); `false` when a stream came meanwhile (the
    /// follower goes on). Under the lock [`Self::subscribe`] takes, so a
    /// new follower of the same cluster never shares the old one's signal.
    fn retire(
        &self,
        hub: &Hub,
        cluster: &str,
        tx: &watch::Sender<Slot>,
        signal: &Arc<Notify>,
    ) -> bool {
        let mut lists = self.lock();
        if tx.receiver_count() > 0 && !self.closed.is_cancelled() {
            return false;
        }
        if lists.get(cluster).is_some_and(|t| t.same_channel(tx)) {
            lists.remove(cluster);
        }
        hub.forget_node_signal(cluster, signal);
        true
    }
}

/// One stream's view of a followed list.
pub struct Subscription {
    rx: watch::Receiver<Slot>,
    /// Whether the list current at subscription was looked at.
    started: bool,
}

impl Subscription {
    /// The latest list not handed out yet (the current one first), waiting
    /// for one if needed; `None` once the follower ended (shutdown). A
    /// failure comes only before the first list.
    pub async fn next(&mut self) -> Option<Listing> {
        if !std::mem::replace(&mut self.started, true) {
            if let Some(listing) = self.rx.borrow_and_update().clone() {
                return Some(listing);
            }
        }
        loop {
            self.rx.changed().await.ok()?;
            if let Some(listing) = self.rx.borrow_and_update().clone() {
                return Some(listing);
            }
        }
    }
}

/// What [`Roster`] streams compare: every field of every node but its
/// heartbeat time and sync report (and lag), which change all the time.
pub fn membership(nodes: &[ListedNode]) -> Vec<(NodeRecord, bool)> {
    nodes
        .iter()
        .map(|n| {
            let record = NodeRecord {
                last_heartbeat_ms: 0,
                sync: None,
                ..n.status.record.clone()
            };
            (record, n.status.alive)
        })
        .collect()
}

/// How long until the first alive node's TTL runs out, as far as the
/// listing tells (heartbeat times in the past for a node alive through
/// another manager on etcd tell nothing: its death is signalled).
fn next_expiry(nodes: &[ListedNode], now_ms: u64, ttl: Duration) -> Option<Duration> {
    let ttl_ms = ttl.as_millis() as u64;
    nodes
        .iter()
        .filter(|n| n.status.alive)
        .map(|n| n.status.record.last_heartbeat_ms.saturating_add(ttl_ms))
        .filter(|end| *end > now_ms)
        .min()
        .map(|end| Duration::from_millis(end - now_ms) + EXPIRY_MARGIN)
}

/// Lists `cluster` now, after every signal, when a TTL runs out and at
/// least once per TTL, announcing every change of membership, until
/// nobody watches or shutdown.
async fn follow(
    plane: Arc<ControlPlane>,
    cluster: String,
    tx: watch::Sender<Slot>,
    signal: Arc<Notify>,
) {
    let roster = plane.roster();
    let ttl = plane.limits.node_ttl;
    let resync = ttl.max(Duration::from_secs(1));
    let mut failures = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last: Option<Vec<(NodeRecord, bool)>> = None;
    tracing::debug!(%cluster, "following the node list");
    loop {
        let wait = match plane.list_nodes_with_lag(&cluster).await {
            Ok(nodes) => {
                failures.reset();
                let wake = next_expiry(&nodes, now_ms(), ttl).map_or(resync, |w| w.min(resync));
                let now = membership(&nodes);
                if last.as_ref() != Some(&now) {
                    tx.send_replace(Some(Listing::Nodes(Arc::new(NodeList::new(nodes)))));
                    last = Some(now);
                }
                wake
            }
            Err(e) => {
                let wait = failures.next_wait();
                tracing::warn!(%cluster, error = %with_causes(&e), ?wait, "cannot list the nodes for WatchNodes; trying again");
                if last.is_none() {
                    tx.send_replace(Some(Listing::Failed(with_causes(&e))));
                }
                wait
            }
        };
        tokio::select! {
            _ = roster.closed.cancelled() => {}
            _ = tx.closed() => {}
            _ = signal.notified() => continue,
            _ = tokio::time::sleep(wait) => continue,
        }
        if roster.retire(plane.hub(), &cluster, &tx, &signal) {
            break;
        }
    }
    tracing::debug!(%cluster, "no longer following the node list");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::store::NodeStatus;

    fn listed(id: &str, alive: bool, last_heartbeat_ms: u64) -> ListedNode {
        ListedNode {
            status: NodeStatus {
                record: NodeRecord {
                    node_id: id.into(),
                    cluster: "c".into(),
                    hostname: format!("host-{id}"),
                    last_heartbeat_ms,
                    ..NodeRecord::default()
                },
                alive,
            },
            lag: None,
        }
    }

    #[test]
    fn heartbeats_and_lag_are_no_change_of_membership() {
        let before = vec![listed("a", true, 1_000), listed("b", false, 500)];
        let mut after = vec![listed("a", true, 6_000), listed("b", false, 500)];
        after[0].lag = Some(3);
        assert_eq!(membership(&before), membership(&after));
        after[1].status.alive = true;
        assert_ne!(membership(&before), membership(&after));
        let mut moved = before.clone();
        moved[0].status.record.http_addr = "10.0.0.2:8086".into();
        assert_ne!(membership(&before), membership(&moved));
    }

    #[test]
    fn the_next_expiry_is_the_earliest_alive_nodes_ttl_end_still_ahead() {
        let ttl = Duration::from_secs(15);
        let nodes = [
            listed("a", true, 10_000),
            listed("b", true, 4_000),
            // Dead already, or alive with an old record (etcd): no deadline.
            listed("c", false, 1_000),
            listed("d", true, 0),
        ];
        assert_eq!(
            next_expiry(&nodes, 16_000, ttl),
            Some(Duration::from_millis(3_000) + EXPIRY_MARGIN)
        );
        assert_eq!(next_expiry(&nodes, 30_000, ttl), None);
        assert_eq!(next_expiry(&[], 0, ttl), None);
    }
}
