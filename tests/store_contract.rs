//! The [`Store`] contract: one suite of behaviours, written once and run
//! against the embedded store (a redb file in a temporary directory) and the
//! etcd store (a real three-member etcd cluster): nodes, liveness,
//! compare-and-swap, watches (of catalogs and of nodes), large catalogs,
//! restarts and deleting a cluster.
//!
//! Watches are a property of a store together with the control plane that
//! publishes its own writes: they are checked through [`ControlPlane`]s over
//! the store. "Another manager" is a second connection to the same etcd (with
//! its own hub); the embedded store has a single manager, so there it is the
//! same store.
//!
//! The etcd half needs the `etcd` binary (`/usr/bin/etcd`, or `$ETCD_BIN`).
//! Behaviour only one store has (a lost leader, chunk bookkeeping,
//! compaction) is tested in `tests/etcd_store.rs`.

#[path = "support/catalog.rs"]
mod catalog_support;
#[path = "support/etcd.rs"]
mod etcd_support;
#[path = "support/wait.rs"]
mod wait_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cflux::clock::now_ms;
use cflux::manager::hub::{Announced, Hub, Subscription};
use cflux::manager::metrics::Metrics;
use cflux::manager::plane::{
    CatalogPush, ControlPlane, Deletion, Layer, Limits, ListedNode, Registration,
};
use cflux::manager::roster;
use cflux::manager::store::embedded::EmbeddedStore;
use cflux::manager::store::etcd::EtcdStore;
use cflux::manager::store::{
    CasOutcome, ChangeNote, ClusterRemoval, HistoryLimits, NodeRecord, RemovedCluster, Snapshot,
    Store, StoreOptions, SyncReport, DEFAULT_ETCD_COMPACTION_INTERVAL,
};
use etcd_support::EtcdCluster;
use tempfile::TempDir;
use wait_support::eventually;

/// etcd's minimum lease: the shortest TTL both stores honour.
const NODE_TTL: Duration = Duration::from_secs(2);
/// Deadline of a change reaching a watcher (the etcd feed may be reconnecting).
const DEADLINE: Duration = Duration::from_secs(15);

/// Where a store's state lives, so it can be opened again.
enum Backend {
    Embedded(TempDir),
    Etcd(EtcdCluster),
}

/// A store under test, with the hub its manager would publish to.
struct Subject {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    backend: Backend,
}

fn options(advertise: &str) -> StoreOptions {
    StoreOptions {
        node_ttl: NODE_TTL,
        advertise: advertise.to_owned(),
        history: HISTORY,
        etcd_compaction_interval: DEFAULT_ETCD_COMPACTION_INTERVAL,
    }
}

/// The history every store under test keeps: small, so pruning shows.
const HISTORY: HistoryLimits = HistoryLimits {
    max_versions: 5,
    max_bytes: 12 * 1024 * 1024,
};

async fn open(backend: &Backend, advertise: &str, hub: Arc<Hub>) -> Arc<dyn Store> {
    match backend {
        Backend::Embedded(dir) => EmbeddedStore::open(dir.path(), options(advertise))
            .await
            .expect("open the embedded store"),
        Backend::Etcd(etcd) => EtcdStore::connect(&etcd.endpoints(), options(advertise), hub)
            .await
            .expect("connect to etcd"),
    }
}

impl Subject {
    async fn embedded() -> Subject {
        Subject::on(Backend::Embedded(
            tempfile::tempdir().expect("temporary directory"),
        ))
        .await
    }

    async fn etcd() -> Subject {
        Subject::on(Backend::Etcd(EtcdCluster::start(3).await)).await
    }

    async fn on(backend: Backend) -> Subject {
        let hub = Hub::new();
        let store = open(&backend, "m1:7070", hub.clone()).await;
        Subject {
            store,
            hub,
            backend,
        }
    }

    /// The same state as another manager sees it: a second etcd connection
    /// with its own hub; the embedded store itself (it has one manager).
    async fn peer(&self) -> (Arc<dyn Store>, Arc<Hub>) {
        match &self.backend {
            Backend::Embedded(_) => (self.store.clone(), self.hub.clone()),
            Backend::Etcd(_) => {
                let hub = Hub::new();
                (open(&self.backend, "m2:7070", hub.clone()).await, hub)
            }
        }
    }

    /// Closes the store and opens it again, as a restarted manager does.
    async fn reopen(self) -> Subject {
        let Subject { store, backend, .. } = self;
        store.close().await;
        // The embedded file opens once at a time: the old handle must be gone.
        assert_eq!(Arc::strong_count(&store), 1, "the store is still in use");
        drop(store);
        Subject::on(backend).await
    }
}

impl Subject {
    /// The store's state lost: a fresh data directory, or every key of the
    /// store deleted from etcd.
    async fn wiped(self) -> Subject {
        let Subject { store, backend, .. } = self;
        store.close().await;
        drop(store);
        match backend {
            Backend::Embedded(_) => Subject::embedded().await,
            Backend::Etcd(etcd) => {
                let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
                    .await
                    .expect("connect to etcd");
                client
                    .delete(
                        cflux::manager::store::etcd::DEFAULT_PREFIX,
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    )
                    .await
                    .expect("wipe etcd");
                Subject::on(Backend::Etcd(etcd)).await
            }
        }
    }
}

fn plane(store: Arc<dyn Store>, hub: Arc<Hub>) -> ControlPlane {
    let limits = Limits {
        node_ttl: NODE_TTL,
        heartbeat_interval: Duration::from_millis(500),
        max_catalog_bytes: 64 * 1024 * 1024,
        store_timeout: Duration::from_secs(10),
    };
    ControlPlane::new(store, hub, limits, Arc::new(Metrics::new()))
}

fn node(cluster: &str, id: &str) -> NodeRecord {
    let now = now_ms();
    NodeRecord {
        node_id: id.to_owned(),
        cluster: cluster.to_owned(),
        hostname: format!("host-{id}"),
        ips: vec!["10.0.0.1".into(), "fe80::1".into()],
        bind_address: "10.0.0.1".into(),
        http_addr: "10.0.0.1:8086".into(),
        version: "1.8.10".into(),
        registered_at_ms: now,
        last_heartbeat_ms: now,
        sync: None,
    }
}

/// [`catalog_support::meta`] as a catalog.
fn meta(tag: &[u8]) -> Bytes {
    catalog_support::meta(tag).into()
}

/// A gRPC push of `data` through a control plane.
fn catalog_push(cluster: &str, expected: u64, data: Bytes, node: &str) -> CatalogPush {
    CatalogPush {
        cluster: cluster.to_owned(),
        expected_version: expected,
        expected_history_id: String::new(),
        data,
        node_id: node.to_owned(),
        layer: Layer::Grpc,
    }
}

fn noise(len: usize, seed: u64) -> Bytes {
    etcd_support::noise(len, seed).into()
}

fn accepted(outcome: CasOutcome) -> u64 {
    match outcome {
        CasOutcome::Accepted(v) => v,
        CasOutcome::Conflict(s) => panic!("unexpected conflict, current v{}", s.version),
    }
}

fn conflict(outcome: CasOutcome) -> Snapshot {
    match outcome {
        CasOutcome::Conflict(s) => s,
        CasOutcome::Accepted(v) => panic!("unexpectedly accepted as v{v}"),
    }
}

/// Waits until the subscription shows `version` or a later one.
async fn wait_for(sub: &mut Subscription, version: u64, what: &str) -> Arc<Announced> {
    tokio::time::timeout(DEADLINE, async {
        let mut known = u64::MAX;
        loop {
            let s = sub.next_different(known).await.expect("hub open");
            if s.version >= version {
                return s;
            }
            known = s.version;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
}

// ---------------------------------------------------------------------------
// The behaviours

/// Nodes are stored, listed per cluster, replaced and deleted; names with
/// `/` and non-ASCII characters survive.
async fn nodes(s: Subject) {
    let store = &s.store;
    let (ca, cb) = ("prod/eu é", "prod");
    assert_eq!(store.get_node(ca, "n1").await.unwrap(), None);
    let (a1, a2, b1) = (node(ca, "n1"), node(ca, "n/2"), node(cb, "n1"));
    for n in [&a1, &a2, &b1] {
        store.put_node(n.clone()).await.unwrap();
    }
    assert_eq!(store.get_node(ca, "n1").await.unwrap(), Some(a1.clone()));
    assert_eq!(store.get_node(ca, "n/2").await.unwrap(), Some(a2.clone()));
    assert_eq!(store.get_node(cb, "n/2").await.unwrap(), None);

    let mut listed = store.list_nodes(Some(ca)).await.unwrap();
    listed.sort_by(|x, y| x.record.node_id.cmp(&y.record.node_id));
    let records: Vec<_> = listed.iter().map(|n| n.record.clone()).collect();
    assert_eq!(records, [a2.clone(), a1.clone()]);
    assert!(listed.iter().all(|n| n.alive));
    assert_eq!(store.list_nodes(None).await.unwrap().len(), 3);
    assert_eq!(store.list_nodes(Some(cb)).await.unwrap().len(), 1);
    assert!(store.list_nodes(Some("prod/")).await.unwrap().is_empty());

    // Registering again replaces the record.
    let mut renamed = b1.clone();
    renamed.hostname = "renamed".into();
    store.put_node(renamed.clone()).await.unwrap();
    assert_eq!(store.get_node(cb, "n1").await.unwrap(), Some(renamed));
    assert_eq!(store.list_nodes(None).await.unwrap().len(), 3);

    assert!(store.delete_node(ca, "n1").await.unwrap());
    assert!(!store.delete_node(ca, "n1").await.unwrap());
    assert_eq!(store.get_node(ca, "n1").await.unwrap(), None);
    let ids: Vec<_> = store
        .list_nodes(Some(ca))
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.record.node_id)
        .collect();
    assert_eq!(ids, ["n/2"]);
    store.close().await;
}

/// A node is alive until its TTL runs out without a heartbeat, stays listed
/// when dead, comes alive with a heartbeat; unknown nodes are not created.
async fn liveness(s: Subject) {
    let store = s.store.clone();
    let c = "live";
    let started = Instant::now();
    store.put_node(node(c, "beating")).await.unwrap();
    store.put_node(node(c, "silent")).await.unwrap();
    assert!(store
        .list_nodes(Some(c))
        .await
        .unwrap()
        .iter()
        .all(|n| n.alive));

    assert!(!store.heartbeat(c, "ghost", now_ms(), None).await.unwrap());
    assert_eq!(store.get_node(c, "ghost").await.unwrap(), None);
    assert!(!store
        .heartbeat("nowhere", "beating", now_ms(), None)
        .await
        .unwrap());

    let dead = eventually(DEADLINE, "the silent node listed dead", || {
        let store = store.clone();
        async move {
            assert!(store.heartbeat(c, "beating", now_ms(), None).await.unwrap());
            let nodes = store.list_nodes(Some(c)).await.unwrap();
            let alive: Vec<_> = nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.record.node_id.as_str())
                .collect();
            if alive == ["beating"] {
                Ok(nodes)
            } else {
                Err(format!("alive: {alive:?}"))
            }
        }
    })
    .await;
    assert!(
        started.elapsed() >= NODE_TTL.mul_f64(0.75),
        "died before its TTL ({:?})",
        started.elapsed()
    );
    assert_eq!(dead.len(), 2, "a dead node stays listed");
    assert!(dead
        .iter()
        .any(|n| !n.alive && n.record.hostname == "host-silent"));

    let beat = now_ms();
    assert!(store.heartbeat(c, "silent", beat, None).await.unwrap());
    let revived = store.get_node(c, "silent").await.unwrap().unwrap();
    assert_eq!(revived.last_heartbeat_ms, beat);
    assert!(store
        .list_nodes(Some(c))
        .await
        .unwrap()
        .iter()
        .all(|n| n.alive));

    assert!(store.delete_node(c, "silent").await.unwrap());
    assert!(!store.heartbeat(c, "silent", now_ms(), None).await.unwrap());
    assert_eq!(store.get_node(c, "silent").await.unwrap(), None);
    store.close().await;
}

/// Compare-and-swap: only the current version is accepted (as version + 1),
/// a conflict hands back the current snapshot, and of two racing writers
/// exactly one wins.
async fn compare_and_swap(s: Subject) {
    let store = &s.store;
    let c = "a/b";
    assert_eq!(store.get_meta(c).await.unwrap(), Snapshot::empty(c));
    assert!(store.list_catalogs().await.unwrap().is_empty());
    assert_eq!(
        conflict(
            store
                .cas_meta(c, 1, "", Bytes::from("x"), ChangeNote::default())
                .await
                .unwrap()
        ),
        Snapshot::empty(c)
    );

    assert_eq!(
        accepted(
            store
                .cas_meta(c, 0, "", "one".into(), ChangeNote::default())
                .await
                .unwrap()
        ),
        1
    );
    let current = conflict(
        store
            .cas_meta(c, 0, "", "late".into(), ChangeNote::default())
            .await
            .unwrap(),
    );
    assert_eq!((current.version, current.data), (1, Bytes::from("one")));
    let current = conflict(
        store
            .cas_meta(c, 2, "", "ahead".into(), ChangeNote::default())
            .await
            .unwrap(),
    );
    assert_eq!(current.version, 1);
    assert_eq!(
        accepted(
            store
                .cas_meta(c, 1, "", "two".into(), ChangeNote::default())
                .await
                .unwrap()
        ),
        2
    );
    let snap = store.get_meta(c).await.unwrap();
    assert_eq!(
        (snap.cluster.as_str(), snap.version, snap.data),
        (c, 2, Bytes::from("two"))
    );
    // Empty data is a version like any other.
    assert_eq!(
        accepted(
            store
                .cas_meta(c, 2, "", Bytes::new(), ChangeNote::default())
                .await
                .unwrap()
        ),
        3
    );
    let snap = store.get_meta(c).await.unwrap();
    assert_eq!((snap.version, snap.data.len()), (3, 0));

    let (other, _) = s.peer().await;
    for round in 0..5u64 {
        let expected = 3 + round;
        let (a, b) = tokio::join!(
            store.cas_meta(
                c,
                expected,
                "",
                Bytes::from(format!("a{round}")),
                ChangeNote::default()
            ),
            other.cas_meta(
                c,
                expected,
                "",
                Bytes::from(format!("b{round}")),
                ChangeNote::default()
            ),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, CasOutcome::Accepted(v) if *v == expected + 1))
            .count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        let current = store.get_meta(c).await.unwrap();
        for o in &outcomes {
            if let CasOutcome::Conflict(snap) = o {
                assert_eq!(snap, &current, "a conflict reports the current snapshot");
            }
        }
    }
    assert_eq!(other.get_meta(c).await.unwrap().version, 8);

    assert_eq!(
        accepted(
            other
                .cas_meta("other", 0, "", "x".into(), ChangeNote::default())
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        store.list_catalogs().await.unwrap(),
        [(c.to_owned(), 8), ("other".to_owned(), 1)]
    );
    other.close().await;
    store.close().await;
}

/// A push through this manager or another wakes this manager's watchers;
/// subscribing before reading leaves no gap for a change to fall into.
async fn watches(s: Subject) {
    let here = plane(s.store.clone(), s.hub.clone());
    let (peer_store, peer_hub) = s.peer().await;
    let there = Arc::new(plane(peer_store.clone(), peer_hub));
    let c = "watched/é";

    let mut sub = here.watch(c).await.unwrap();
    assert_eq!(
        wait_for(&mut sub, 0, "the current snapshot").await.version,
        0
    );
    accepted(
        here.push(catalog_push(c, 0, meta(b"v1"), "n1"))
            .await
            .unwrap(),
    );
    let seen = wait_for(&mut sub, 1, "a push through this manager").await;
    assert_eq!((seen.version, seen.data.clone()), (1, meta(b"v1")));
    accepted(
        there
            .push(catalog_push(c, 1, meta(b"v2"), "n2"))
            .await
            .unwrap(),
    );
    let seen = wait_for(&mut sub, 2, "a push through another manager").await;
    assert_eq!((seen.version, seen.data.clone()), (2, meta(b"v2")));

    // Another cluster's change does not wake this subscription.
    accepted(
        there
            .push(catalog_push("unwatched", 0, meta(b"x"), "n2"))
            .await
            .unwrap(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next_different(2))
            .await
            .is_err(),
        "woken by another cluster"
    );

    // A change between subscribing and reading is in the read or published.
    let mut late = s.hub.subscribe(c);
    accepted(
        there
            .push(catalog_push(c, 2, meta(b"v3"), "n2"))
            .await
            .unwrap(),
    );
    s.hub.publish(s.store.get_meta(c).await.unwrap());
    let seen = wait_for(&mut late, 3, "a change made before the read").await;
    assert_eq!(seen.data, meta(b"v3"));

    // Watches opened while another manager keeps pushing all reach the last
    // version.
    let pushes = 20u64;
    let writer = {
        let there = there.clone();
        tokio::spawn(async move {
            for v in 3..3 + pushes {
                accepted(
                    there
                        .push(catalog_push(
                            c,
                            v,
                            meta(format!("v{}", v + 1).as_bytes()),
                            "n2",
                        ))
                        .await
                        .unwrap(),
                );
            }
        })
    };
    let mut watchers = Vec::new();
    while !writer.is_finished() {
        watchers.push(here.watch(c).await.unwrap());
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    watchers.push(here.watch(c).await.unwrap());
    for (i, mut w) in watchers.into_iter().enumerate() {
        let seen = wait_for(&mut w, 3 + pushes, &format!("watcher {i}")).await;
        assert_eq!(seen.version, 3 + pushes);
    }
    drop((sub, late, there));
    peer_store.close().await;
    s.store.close().await;
}

/// Catalogs of several MiB round-trip byte for byte, through reads, conflicts
/// and watches.
async fn large_catalogs(s: Subject) {
    let (other, other_hub) = s.peer().await;
    let here = plane(s.store.clone(), s.hub.clone());
    let there = plane(other.clone(), other_hub);
    let c = "big";
    let mut sub = here.watch(c).await.unwrap();

    let first = noise(5 * 1024 * 1024, 1);
    assert_eq!(
        accepted(
            s.store
                .cas_meta(c, 0, "", first.clone(), ChangeNote::default())
                .await
                .unwrap()
        ),
        1
    );
    let got = other.get_meta(c).await.unwrap();
    assert_eq!(got.version, 1);
    assert!(got.data == first, "a 5 MiB catalog read back differently");

    let second = meta(&noise(5 * 1024 * 1024 + 7, 2));
    assert_eq!(
        accepted(
            there
                .push(catalog_push(c, 1, second.clone(), "n"))
                .await
                .unwrap()
        ),
        2
    );
    let got = s.store.get_meta(c).await.unwrap();
    assert!(got.version == 2 && got.data == second);
    let seen = wait_for(&mut sub, 2, "a large catalog watched").await;
    assert!(seen.data == second, "a watched large catalog differs");

    let lost = conflict(
        s.store
            .cas_meta(c, 1, "", noise(3 * 1024 * 1024, 3), ChangeNote::default())
            .await
            .unwrap(),
    );
    assert_eq!(lost.version, 2);
    assert!(lost.data == second, "a large conflict snapshot differs");
    drop((sub, there));
    other.close().await;
    s.store.close().await;
}

/// Nodes and catalogs survive closing and reopening the store.
async fn restart(s: Subject) {
    let c = "kept";
    let n = node(c, "n1");
    s.store.put_node(n.clone()).await.unwrap();
    s.store.put_node(node("other", "n2")).await.unwrap();
    accepted(
        s.store
            .cas_meta(c, 0, "", "v1".into(), ChangeNote::default())
            .await
            .unwrap(),
    );
    accepted(
        s.store
            .cas_meta(
                c,
                1,
                "",
                noise(2 * 1024 * 1024 + 3, 5),
                ChangeNote::default(),
            )
            .await
            .unwrap(),
    );
    let before = s.store.get_meta(c).await.unwrap();

    let s = s.reopen().await;
    let store = &s.store;
    // The embedded store grants one TTL of grace from the restart on, so
    // the last heartbeat may have moved forward.
    let kept = store.get_node(c, "n1").await.unwrap().expect("node kept");
    assert!(kept.last_heartbeat_ms >= n.last_heartbeat_ms);
    assert_eq!(
        NodeRecord {
            last_heartbeat_ms: n.last_heartbeat_ms,
            ..kept
        },
        n
    );
    assert_eq!(store.list_nodes(None).await.unwrap().len(), 2);
    assert!(store.heartbeat(c, "n1", now_ms(), None).await.unwrap());
    assert_eq!(store.get_meta(c).await.unwrap(), before);
    assert_eq!(store.list_catalogs().await.unwrap(), [(c.to_owned(), 2)]);
    assert_eq!(
        conflict(
            store
                .cas_meta(c, 1, "", "stale".into(), ChangeNote::default())
                .await
                .unwrap()
        ),
        before
    );
    assert_eq!(
        accepted(
            store
                .cas_meta(c, 2, "", "v3".into(), ChangeNote::default())
                .await
                .unwrap()
        ),
        3
    );
    store.close().await;
}

fn note(i: u64) -> ChangeNote {
    ChangeNote {
        changed_at_ms: i,
        node_id: format!("n{i}"),
        hostname: format!("host-{i}"),
        layer: "grpc".into(),
        summary: format!("change {i}"),
        restored_from: 0,
    }
}

/// Every accepted version is kept with its note and bytes, newest first,
/// pruned by count and by size (the current version always stays); the
/// first write creates the history ID, every snapshot carries it, and a CAS
/// expecting another history conflicts whatever the versions.
async fn history(s: Subject) {
    let store = &s.store;
    let c = "kept/é";
    assert!(store.history(c).await.unwrap().is_empty());
    assert_eq!(store.version(c, 1).await.unwrap(), None);
    // Expecting a history of a cluster never written: a conflict.
    assert_eq!(
        conflict(
            store
                .cas_meta(c, 0, "gone", meta(b"0"), note(0))
                .await
                .unwrap()
        ),
        Snapshot::empty(c)
    );
    accepted(store.cas_meta(c, 0, "", meta(b"1"), note(1)).await.unwrap());
    let id = store.get_meta(c).await.unwrap().history_id;
    assert!(!id.is_empty(), "the first write creates the history ID");
    let current = conflict(
        store
            .cas_meta(c, 1, "another history", meta(b"x"), note(9))
            .await
            .unwrap(),
    );
    assert_eq!(
        (current.version, current.history_id.as_str()),
        (1, id.as_str())
    );
    for v in 1..7u64 {
        // With and without the history: both are the current one's.
        let expected_history = if v % 2 == 0 { id.as_str() } else { "" };
        let data = meta(format!("{}", v + 1).as_bytes());
        accepted(
            store
                .cas_meta(c, v, expected_history, data, note(v + 1))
                .await
                .unwrap(),
        );
    }
    let kept = store.history(c).await.unwrap();
    let versions: Vec<u64> = kept.iter().map(|e| e.version).collect();
    assert_eq!(versions, [7, 6, 5, 4, 3], "pruned to {HISTORY:?}");
    assert!(kept.iter().all(|e| e.history_id == id));
    assert_eq!(kept[0].note, note(7));
    assert_eq!(kept[0].size_bytes, meta(b"7").len() as u64);
    let (entry, data) = store.version(c, 5).await.unwrap().expect("v5 kept");
    assert_eq!((entry.version, entry.note, data), (5, note(5), meta(b"5")));
    assert_eq!(store.version(c, 2).await.unwrap(), None, "v2 pruned");
    assert_eq!(store.get_meta(c).await.unwrap().history_id, id);

    // By size: 5 MiB versions fill the 12 MiB budget; older ones go first.
    for (v, seed) in [(7u64, 1u64), (8, 2), (9, 3)] {
        let data = meta(&noise(5 * 1024 * 1024, seed));
        accepted(store.cas_meta(c, v, "", data, note(v + 1)).await.unwrap());
    }
    let versions: Vec<u64> = store
        .history(c)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [10, 9]);
    // A version alone above the budget is kept: it is the current one.
    let huge = meta(&noise(13 * 1024 * 1024, 4));
    accepted(
        store
            .cas_meta(c, 10, "", huge.clone(), note(11))
            .await
            .unwrap(),
    );
    let kept = store.history(c).await.unwrap();
    assert_eq!(kept.iter().map(|e| e.version).collect::<Vec<_>>(), [11]);
    assert!(store.version(c, 11).await.unwrap().expect("v11").1 == huge);

    // Restarting keeps the history and its ID.
    let s = s.reopen().await;
    assert_eq!(s.store.history(c).await.unwrap(), kept);
    assert_eq!(s.store.get_meta(c).await.unwrap().history_id, id);
    s.store.close().await;
}

/// A wiped store (a new data dir, an emptied etcd) starts a new history.
async fn wiped_state_starts_a_new_history(s: Subject) {
    let c = "wiped";
    accepted(
        s.store
            .cas_meta(c, 0, "", meta(b"1"), note(1))
            .await
            .unwrap(),
    );
    let old = s.store.get_meta(c).await.unwrap().history_id;
    let s = s.wiped().await;
    assert_eq!(s.store.get_meta(c).await.unwrap(), Snapshot::empty(c));
    assert!(conflict(
        s.store
            .cas_meta(c, 0, &old, meta(b"1"), note(1))
            .await
            .unwrap()
    )
    .history_id
    .is_empty());
    accepted(
        s.store
            .cas_meta(c, 0, "", meta(b"other"), note(1))
            .await
            .unwrap(),
    );
    let new = s.store.get_meta(c).await.unwrap().history_id;
    assert!(!new.is_empty() && new != old, "{old} then {new}");
    s.store.close().await;
}

/// A heartbeat keeps what the node reported about its sync (and one that
/// reports nothing forgets it); listings through the plane add the lag
/// behind the cluster's catalog, unknown for another history.
async fn sync_reports(s: Subject) {
    let c = "sync";
    let store = &s.store;
    store.put_node(node(c, "n1")).await.unwrap();
    store.put_node(node(c, "silent")).await.unwrap();
    for v in 0..3 {
        accepted(
            store
                .cas_meta(c, v, "", meta(&[v as u8]), ChangeNote::default())
                .await
                .unwrap(),
        );
    }
    let history_id = store.get_meta(c).await.unwrap().history_id;
    let behind = SyncReport {
        applied_version: 2,
        applied_history_id: history_id.clone(),
        sync_error: "pull: influxd refused a statement".into(),
        catch_up: String::new(),
        // Kept as reported, like the rest.
        queued_statements: 3,
    };
    assert!(store
        .heartbeat(c, "n1", now_ms(), Some(behind.clone()))
        .await
        .unwrap());
    let kept = store.get_node(c, "n1").await.unwrap().unwrap();
    assert_eq!(kept.sync.as_ref(), Some(&behind));

    let plane = plane(s.store.clone(), s.hub.clone());
    let lags = |listed: Vec<cflux::manager::plane::ListedNode>| {
        listed
            .into_iter()
            .map(|n| (n.status.record.node_id, n.status.record.sync, n.lag))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lags(plane.list_nodes_with_lag(c).await.unwrap()),
        [
            ("n1".to_owned(), Some(behind), Some(1)),
            ("silent".to_owned(), None, None),
        ]
    );

    let elsewhere = SyncReport {
        applied_version: 9,
        applied_history_id: "another-history".into(),
        ..SyncReport::default()
    };
    assert!(store
        .heartbeat(c, "n1", now_ms(), Some(elsewhere))
        .await
        .unwrap());
    assert_eq!(plane.list_nodes_with_lag(c).await.unwrap()[0].lag, None);

    // A heartbeat that reports nothing (the legacy protocol) forgets it.
    assert!(store.heartbeat(c, "n1", now_ms(), None).await.unwrap());
    assert_eq!(store.get_node(c, "n1").await.unwrap().unwrap().sync, None);
    s.store.close().await;
}

/// The keys etcd holds for `cluster` (any kind: nodes, liveness, head,
/// history, chunks); `None` for the embedded store.
async fn etcd_keys_of(s: &Subject, cluster: &str) -> Option<Vec<String>> {
    let Backend::Etcd(etcd) = &s.backend else {
        return None;
    };
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect to etcd");
    let all = client
        .get(
            cflux::manager::store::etcd::DEFAULT_PREFIX,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list etcd keys");
    let scope = format!("/{}/", hex::encode(cluster));
    let scope_end = format!("/{}", hex::encode(cluster));
    Some(
        all.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .filter(|k| k.contains(&scope) || k.ends_with(&scope_end))
            .collect(),
    )
}

/// A cluster is deleted only while none of its nodes is alive, and then
/// whole: its nodes, catalog (chunks included), history and history ID;
/// watchers on every manager see their watch end, and the name starts
/// afresh. Other clusters are untouched.
async fn delete_cluster(s: Subject) {
    let (c, other) = ("gone/é", "stays");
    assert_eq!(
        s.store.delete_cluster(c).await.unwrap(),
        ClusterRemoval::Unknown
    );
    s.store.put_node(node(c, "n1")).await.unwrap();
    s.store.put_node(node(other, "n1")).await.unwrap();
    accepted(
        s.store
            .cas_meta(c, 0, "", meta(b"1"), note(1))
            .await
            .unwrap(),
    );
    // Bigger than one etcd chunk, so several chunk keys must go.
    let big = meta(&noise(3 * 1024 * 1024, 9));
    accepted(s.store.cas_meta(c, 1, "", big, note(2)).await.unwrap());
    accepted(
        s.store
            .cas_meta(other, 0, "", meta(b"x"), note(1))
            .await
            .unwrap(),
    );
    let old_history = s.store.get_meta(c).await.unwrap().history_id;

    // Alive: refused, naming the node, and nothing goes.
    match s.store.delete_cluster(c).await.unwrap() {
        ClusterRemoval::Alive(alive) => {
            let ids: Vec<_> = alive.iter().map(|n| n.node_id.as_str()).collect();
            assert_eq!(ids, ["n1"]);
        }
        other => panic!("deleted with a node alive: {other:?}"),
    }
    assert_eq!(s.store.get_meta(c).await.unwrap().version, 2);
    assert_eq!(s.store.history(c).await.unwrap().len(), 2);
    assert_eq!(s.store.list_nodes(Some(c)).await.unwrap().len(), 1);

    let store = s.store.clone();
    eventually(DEADLINE, "the node listed dead", || {
        let store = store.clone();
        async move {
            match store.list_nodes(Some(c)).await {
                Ok(n) if n.iter().all(|n| !n.alive) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;

    // A watcher on another manager (the same one, embedded) sees its
    // watch end when the cluster goes through this one.
    let (peer_store, peer_hub) = s.peer().await;
    let there = plane(peer_store.clone(), peer_hub);
    let mut watching = there.watch(c).await.unwrap();
    assert_eq!(wait_for(&mut watching, 2, "the catalog").await.version, 2);
    let here = plane(s.store.clone(), s.hub.clone());
    assert_eq!(
        here.delete_cluster(c).await.unwrap(),
        Deletion::Removed(RemovedCluster {
            nodes: 1,
            versions: 2,
            version: 2
        })
    );
    let ended = tokio::time::timeout(DEADLINE, watching.next_different(2)).await;
    assert!(
        matches!(ended, Ok(None)),
        "the watch did not end: {:?}",
        ended.map(|s| s.map(|s| s.version))
    );

    assert_eq!(s.store.get_meta(c).await.unwrap(), Snapshot::empty(c));
    assert!(s.store.history(c).await.unwrap().is_empty());
    assert_eq!(s.store.version(c, 1).await.unwrap(), None);
    assert!(s.store.list_nodes(Some(c)).await.unwrap().is_empty());
    assert_eq!(s.store.get_node(c, "n1").await.unwrap(), None);
    let catalogs = s.store.list_catalogs().await.unwrap();
    assert_eq!(catalogs, [(other.to_owned(), 1)]);
    assert_eq!(s.store.list_nodes(Some(other)).await.unwrap().len(), 1);
    if let Some(left) = etcd_keys_of(&s, c).await {
        assert!(left.is_empty(), "keys left behind: {left:?}");
    }
    assert_eq!(
        s.store.delete_cluster(c).await.unwrap(),
        ClusterRemoval::Unknown
    );

    // The name starts afresh: version 1 of a new history, for a watch too.
    let mut again = there.watch(c).await.unwrap();
    assert_eq!(
        wait_for(&mut again, 0, "the empty catalog").await.version,
        0
    );
    accepted(
        s.store
            .cas_meta(c, 0, "", meta(b"new"), note(1))
            .await
            .unwrap(),
    );
    let new = s.store.get_meta(c).await.unwrap();
    assert_eq!(new.version, 1);
    assert!(!new.history_id.is_empty() && new.history_id != old_history);
    drop((watching, again, there));
    peer_store.close().await;
    s.store.close().await;
}

/// A registration of `id` in `cluster`, as a layer hands it in.
fn registration(cluster: &str, id: &str) -> Registration {
    Registration {
        cluster: cluster.to_owned(),
        node_id: id.to_owned(),
        hostname: format!("host-{id}"),
        http_addr: format!("{id}.example:8086"),
        ..Registration::default()
    }
}

/// The nodes of a list, as `id:alive|dead`, in order.
fn shown(nodes: &[ListedNode]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| {
            let state = if n.status.alive { "alive" } else { "dead" };
            format!("{}:{state}", n.status.record.node_id)
        })
        .collect()
}

/// The next list a node watch sends, within [`DEADLINE`].
async fn next_list(sub: &mut roster::Subscription, what: &str) -> Vec<String> {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(roster::Listing::Nodes(nodes))) => shown(&nodes),
        Ok(Some(roster::Listing::Failed(why))) => panic!("{what}: the listing failed: {why}"),
        Ok(None) => panic!("{what}: the watch ended"),
        Err(_) => panic!("{what}: nothing within {DEADLINE:?}"),
    }
}

/// Reads a node watch until it sends `want` (earlier lists may come first,
/// but only lists of earlier states).
async fn until_list(sub: &mut roster::Subscription, want: &[&str], what: &str) {
    loop {
        let got = next_list(sub, what).await;
        if got == want {
            return;
        }
    }
}

/// `WatchNodes` through control planes over the store: the current list at
/// once; a registration, a death, a revival and a deregistration each sent
/// as they happen, whichever manager they went through; heartbeats alone
/// send nothing; the watch of every cluster sees every cluster; shutdown
/// ends the streams.
async fn node_watches(s: Subject) {
    let here = Arc::new(plane(s.store.clone(), s.hub.clone()));
    let (peer_store, peer_hub) = s.peer().await;
    // The embedded store has one manager: "another" is the same one.
    let there = if Arc::ptr_eq(&peer_hub, &s.hub) {
        here.clone()
    } else {
        Arc::new(plane(peer_store.clone(), peer_hub))
    };
    let c = "watched/é";
    here.register(registration(c, "a")).await.unwrap();
    let (first, mut watch) = here.watch_nodes(c).await.unwrap();
    assert_eq!(shown(&first), ["a:alive"]);
    let (first, mut every) = here.watch_nodes("").await.unwrap();
    assert_eq!(shown(&first), ["a:alive"]);
    assert_eq!(
        here.watch_nodes("bad\ncluster")
            .await
            .err()
            .map(|e| e.to_string()),
        here.list_nodes("bad\ncluster")
            .await
            .err()
            .map(|e| e.to_string()),
        "refused as ListNodes refuses it"
    );

    // Registered through the other manager: sent at once, to both watches.
    there.register(registration(c, "b")).await.unwrap();
    until_list(&mut watch, &["a:alive", "b:alive"], "a registration").await;
    until_list(
        &mut every,
        &["a:alive", "b:alive"],
        "a registration, every cluster",
    )
    .await;
    here.register(registration("other", "x")).await.unwrap();
    until_list(
        &mut every,
        &["x:alive", "a:alive", "b:alive"],
        "another cluster",
    )
    .await;

    // a keeps beating, b falls silent: the next list is b's death, however
    // many heartbeats came before it.
    let beating = tokio::spawn({
        let here = here.clone();
        async move {
            loop {
                here.heartbeat(c, "a", None).await.unwrap();
                tokio::time::sleep(NODE_TTL / 8).await;
            }
        }
    });
    assert_eq!(
        next_list(&mut watch, "a death").await,
        ["a:alive", "b:dead"]
    );
    // A heartbeat through the other manager revives it, told at once.
    there.heartbeat(c, "b", None).await.unwrap();
    assert_eq!(
        next_list(&mut watch, "a revival").await,
        ["a:alive", "b:alive"]
    );
    there.deregister(c, "b").await.unwrap();
    assert_eq!(next_list(&mut watch, "a deregistration").await, ["a:alive"]);
    beating.abort();

    // Shutdown ends every stream.
    here.end_watches();
    for sub in [&mut watch, &mut every] {
        let end =
            tokio::time::timeout(DEADLINE, async { while sub.next().await.is_some() {} }).await;
        assert!(end.is_ok(), "the watch ended at shutdown");
    }
    there.end_watches();
    peer_store.close().await;
    s.store.close().await;
}

/// One test per behaviour and store.
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::Subject::embedded().await).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::Subject::etcd().await).await
                }
            )*
        }
    };
}

contract!(
    nodes,
    liveness,
    compare_and_swap,
    watches,
    node_watches,
    large_catalogs,
    restart,
    history,
    wiped_state_starts_a_new_history,
    sync_reports,
    delete_cluster
);
