//! Fan-out of catalog changes to everyone waiting on them, and the signals
//! that a cluster's nodes may have changed.
//!
//! Watch streams and legacy long polls subscribe to a cluster; the hub is the
//! manager's [`CatalogFeed`]: the control plane publishes its accepted
//! compare-and-swaps, the etcd store's change feed what other managers wrote. Each cluster has one `tokio::sync::watch`
//! channel, so a burst of changes coalesces to the latest for a slow reader,
//! and the bytes travel once however many watchers there are: each announced
//! snapshot is encoded as a `WatchMeta` message once, by the first stream
//! that sends it, and every other stream sends that same buffer.
//!
//! Subscribe first, then read the store and publish what was read: a change
//! made between the two is then either in the read or published to the
//! subscription, never lost.
//!
//! Node changes travel as signals only ([`Hub::nodes_changed`]): whoever
//! follows a cluster's node list ([`crate::manager::roster`]) takes its
//! signal first, then lists the store, and lists again after every signal;
//! the same order makes a change either listed or signalled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use crate::manager::encoded;
use crate::manager::store::{CatalogFeed, Snapshot};

type Slot = Option<Arc<Announced>>;

/// A snapshot as the hub hands it out, with its `WatchMeta` message encoded
/// at most once for all the streams that send it.
#[derive(Debug)]
pub struct Announced {
    snapshot: Snapshot,
    grpc_frame: OnceLock<Bytes>,
}

impl Announced {
    fn new(snapshot: Snapshot) -> Self {
        Announced {
            snapshot,
            grpc_frame: OnceLock::new(),
        }
    }

    /// The snapshot as one gRPC message frame (see [`encoded::grpc_frame`]),
    /// shared: cloning it copies no bytes.
    pub fn grpc_frame(&self) -> Bytes {
        self.grpc_frame
            .get_or_init(|| encoded::grpc_frame(&self.snapshot))
            .clone()
    }
}

impl std::ops::Deref for Announced {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// Per-cluster channels of the latest known snapshot.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, watch::Sender<Slot>>>,
    /// Per followed node list (a cluster, or "" for every cluster), the
    /// signal that it may have changed.
    node_signals: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A subscription to one cluster's snapshots.
pub struct Subscription {
    rx: watch::Receiver<Slot>,
    /// The history of the last snapshot handed out: one of another history
    /// is news even at the same version.
    seen_history: Option<String>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Hub::default())
    }

    /// Subscribes to a cluster. The subscription starts empty until the
    /// caller publishes the store's current snapshot (see the module doc).
    pub fn subscribe(&self, cluster: &str) -> Subscription {
        let mut channels = self.lock();
        let rx = match channels.get(cluster) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                channels.insert(cluster.to_owned(), tx);
                rx
            }
        };
        Subscription {
            rx,
            seen_history: None,
        }
    }

    /// Announces a snapshot to a watched cluster. Older or equal versions
    /// than the one already announced are ignored, so publishing is
    /// idempotent and order-free within one history; a snapshot of another
    /// history (a store that lost its state counts versions from 1 again)
    /// replaces whatever was there.
    pub fn publish(&self, snapshot: Snapshot) {
        let mut channels = self.lock();
        let Some(tx) = channels.get(&snapshot.cluster) else {
            return;
        };
        if forgettable(tx) {
            channels.remove(&snapshot.cluster);
            return;
        }
        announce(tx, snapshot);
    }

    /// Announces a catalog this manager's own compare-and-swap accepted, and
    /// keeps it while nobody watches the cluster too, so the next push to it
    /// needs no store read ([`Self::last_known`]). At most one catalog per
    /// written cluster is kept, until the cluster is deleted.
    pub fn accepted(&self, snapshot: Snapshot) {
        let mut channels = self.lock();
        let tx = channels
            .entry(snapshot.cluster.clone())
            .or_insert_with(|| watch::channel(None).0);
        announce(tx, snapshot);
    }

    /// The latest snapshot announced for a watched cluster (the etcd
    /// store's feed keeps it current). It may be behind the store; a
    /// compare-and-swap against it is still exact.
    pub fn latest(&self, cluster: &str) -> Option<Snapshot> {
        let channels = self.lock();
        let tx = channels.get(cluster).filter(|tx| tx.receiver_count() > 0)?;
        let slot = tx.borrow();
        slot.as_ref().map(|a| a.snapshot.clone())
    }

    /// The latest snapshot this manager knows of a cluster, watched or not.
    /// Unwatched, nothing keeps it current when other managers write: only
    /// a compare-and-swap, which checks it, may rely on it.
    pub fn last_known(&self, cluster: &str) -> Option<Snapshot> {
        let channels = self.lock();
        let slot = channels.get(cluster)?.borrow();
        slot.as_ref().map(|a| a.snapshot.clone())
    }

    /// The clusters someone is subscribed to.
    pub fn watched_clusters(&self) -> Vec<String> {
        let mut channels = self.lock();
        channels.retain(|_, tx| !forgettable(tx));
        channels
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(cluster, _)| cluster.clone())
            .collect()
    }

    /// Forgets a deleted cluster: its subscriptions end, so their holders
    /// watch again and find the cluster as the store has it now (a
    /// snapshot read before the deletion can no longer be announced to them).
    pub fn removed(&self, cluster: &str) {
        self.lock().remove(cluster);
    }

    /// Wakes every subscriber with "closed", for shutdown.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// The signal that the nodes of `cluster` ("": of any cluster) may have
    /// changed, for the one task that follows that node list. Signals sent
    /// before this call are not kept: take it before listing.
    pub fn node_signal(&self, cluster: &str) -> Arc<Notify> {
        self.signals()
            .entry(cluster.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Stops signalling a node list nobody follows any more.
    pub fn forget_node_signal(&self, cluster: &str, signal: &Arc<Notify>) {
        let mut signals = self.signals();
        if signals.get(cluster).is_some_and(|s| Arc::ptr_eq(s, signal)) {
            signals.remove(cluster);
        }
    }

    /// Signals that the nodes of `cluster` (`None`: of any cluster) may have
    /// changed: registered, deregistered, listed dead or alive again. The
    /// follower of that cluster and the follower of every cluster wake (one
    /// wake-up is kept for a follower that is busy listing).
    pub fn nodes_changed(&self, cluster: Option<&str>) {
        let signals = self.signals();
        match cluster {
            Some(c) => {
                for key in [c, ""] {
                    if let Some(s) = signals.get(key) {
                        s.notify_one();
                    }
                }
            }
            None => signals.values().for_each(|s| s.notify_one()),
        }
    }

    fn signals(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.node_signals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Slot>>> {
        // A panic while holding this lock leaves the map consistent (every
        // operation is a single insert/remove/send), so poisoning is ignored.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a channel is worth nothing: nobody watches it and it holds no
/// written catalog.
fn forgettable(tx: &watch::Sender<Slot>) -> bool {
    tx.receiver_count() == 0 && tx.borrow().as_ref().is_none_or(|s| s.version == 0)
}

/// Puts `snapshot` in the channel unless it is older (see [`Hub::publish`]).
fn announce(tx: &watch::Sender<Slot>, snapshot: Snapshot) {
    let version = snapshot.version;
    let history = snapshot.history_id.clone();
    let newer = |slot: &Slot| {
        slot.as_ref().is_none_or(|s| {
            s.version < version
                || (!history.is_empty() && !s.history_id.is_empty() && s.history_id != history)
        })
    };
    if newer(&tx.borrow()) {
        let snapshot = Arc::new(Announced::new(snapshot));
        tx.send_if_modified(|slot| {
            if newer(slot) {
                *slot = Some(snapshot);
                true
            } else {
                false
            }
        });
    }
}

impl CatalogFeed for Hub {
    fn publish(&self, snapshot: Snapshot) {
        Hub::publish(self, snapshot)
    }

    fn watched_clusters(&self) -> Vec<String> {
        Hub::watched_clusters(self)
    }

    fn removed(&self, cluster: &str) {
        Hub::removed(self, cluster)
    }

    fn nodes_changed(&self, cluster: Option<&str>) {
        Hub::nodes_changed(self, cluster)
    }
}

impl Subscription {
    /// The latest snapshot whose version differs from `known` (or whose
    /// history differs from the last one handed out), waiting for one if
    /// needed. `None` once the hub is closed (shutdown).
    pub async fn next_different(&mut self, known: u64) -> Option<Arc<Announced>> {
        loop {
            {
                let slot = self.rx.borrow_and_update();
                if let Some(s) = slot.as_ref() {
                    let other_history = self
                        .seen_history
                        .as_ref()
                        .is_some_and(|h| *h != s.history_id);
                    if s.version != known || other_history {
                        self.seen_history = Some(s.history_id.clone());
                        return Some(s.clone());
                    }
                }
            }
            self.rx.changed().await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn snap(v: u64) -> Snapshot {
        snap_of("h", v)
    }

    fn snap_of(history: &str, v: u64) -> Snapshot {
        Snapshot {
            cluster: "c".into(),
            version: v,
            data: Bytes::from(vec![v as u8]),
            history_id: history.into(),
        }
    }

    /// [`Subscription::next_different`], failing instead of waiting forever.
    async fn next(sub: &mut Subscription, known: u64) -> Arc<Announced> {
        tokio::time::timeout(std::time::Duration::from_secs(5), sub.next_different(known))
            .await
            .expect("a snapshot within 5 s")
            .expect("hub open")
    }

    #[tokio::test]
    async fn a_new_history_replaces_a_higher_version_of_the_old_one() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.publish(snap_of("old", 7));
        assert_eq!(next(&mut sub, 0).await.version, 7);
        // The store lost its state: its new history starts again at 1 ...
        hub.publish(snap_of("new", 1));
        let s = next(&mut sub, 7).await;
        assert_eq!((s.history_id.as_str(), s.version), ("new", 1));
        // ... and reaching the old version number is still news.
        hub.publish(snap_of("new", 7));
        let s = next(&mut sub, 1).await;
        assert_eq!(s.version, 7);
        hub.publish(snap_of("older", 7));
        let s = next(&mut sub, 7).await;
        assert_eq!((s.history_id.as_str(), s.version), ("older", 7));
    }

    #[tokio::test]
    async fn older_publish_is_ignored_and_latest_wins() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.publish(snap(2));
        hub.publish(snap(1));
        hub.publish(snap(3));
        assert_eq!(sub.next_different(0).await.unwrap().version, 3);
    }

    #[tokio::test]
    async fn same_version_waits_for_a_change() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.publish(snap(1));
        let waiter = tokio::spawn(async move { sub.next_different(1).await.map(|s| s.version) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        hub.publish(snap(2));
        assert_eq!(waiter.await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn close_ends_subscriptions() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.close_all();
        assert!(sub.next_different(0).await.is_none());
    }

    #[tokio::test]
    async fn a_removed_cluster_ends_its_subscriptions_and_forgets_its_catalog() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.publish(snap(3));
        assert_eq!(next(&mut sub, 0).await.version, 3);
        hub.removed("c");
        assert!(sub.next_different(3).await.is_none());
        assert!(hub.latest("c").is_none());
        // A watch opened afterwards starts from what the store holds now.
        let mut again = hub.subscribe("c");
        hub.publish(Snapshot::empty("c"));
        assert_eq!(next(&mut again, 3).await.version, 0);
    }

    #[test]
    fn publish_without_subscribers_keeps_nothing() {
        let hub = Hub::new();
        drop(hub.subscribe("c"));
        hub.publish(snap(1));
        assert!(hub.watched_clusters().is_empty());
        assert!(hub.last_known("c").is_none());
    }

    #[test]
    fn an_accepted_catalog_is_kept_unwatched_for_the_next_push_only() {
        let hub = Hub::new();
        hub.accepted(snap(4));
        assert_eq!(hub.last_known("c").map(|s| s.version), Some(4));
        // Not a watched cluster: listings must not take it as current.
        assert!(hub.latest("c").is_none());
        assert!(hub.watched_clusters().is_empty());
        assert_eq!(hub.last_known("c").map(|s| s.version), Some(4));
        // A watch of it starts from there and sees what follows.
        let sub = hub.subscribe("c");
        assert_eq!(hub.latest("c").map(|s| s.version), Some(4));
        assert_eq!(hub.watched_clusters(), vec!["c".to_owned()]);
        drop(sub);
        hub.accepted(snap(3));
        assert_eq!(hub.last_known("c").map(|s| s.version), Some(4));
        hub.removed("c");
        assert!(hub.last_known("c").is_none());
    }

    #[tokio::test]
    async fn a_node_change_wakes_its_cluster_and_every_cluster_followers() {
        let hub = Hub::new();
        let (prod, all, other) = (
            hub.node_signal("prod"),
            hub.node_signal(""),
            hub.node_signal("other"),
        );
        hub.nodes_changed(Some("prod"));
        use futures::FutureExt;
        let woken = |s: &Arc<Notify>| s.notified().now_or_never().is_some();
        assert!(woken(&prod) && woken(&all));
        assert!(!woken(&other));
        hub.nodes_changed(None);
        assert!(woken(&prod) && woken(&all) && woken(&other));
        // A forgotten signal wakes nothing; a new follower gets a new one.
        hub.forget_node_signal("prod", &prod);
        hub.nodes_changed(Some("prod"));
        assert!(!woken(&prod));
        assert!(!Arc::ptr_eq(&hub.node_signal("prod"), &prod));
    }

    #[test]
    fn the_frame_is_encoded_once_and_shared() {
        let hub = Hub::new();
        let mut sub = hub.subscribe("c");
        hub.publish(snap(1));
        let first = sub.rx.borrow_and_update().clone().expect("announced");
        let again = hub.subscribe("c").rx.borrow().clone().expect("announced");
        let (a, b) = (first.grpc_frame(), again.grpc_frame());
        assert_eq!(a.as_ptr(), b.as_ptr(), "one buffer for every stream");
        assert_eq!(a, encoded::grpc_frame(&snap(1)));
    }
}
