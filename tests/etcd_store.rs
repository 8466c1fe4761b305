//! The etcd store against real etcd clusters (three members each).
//!
//! Needs the `etcd` binary (`/usr/bin/etcd`, or `$ETCD_BIN`).

#[path = "support/etcd.rs"]
mod etcd_support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cflux::manager::hub::{Hub, Subscription};
use cflux::manager::store::etcd::{EtcdStore, CHUNK_SIZE, DEFAULT_PREFIX};
use cflux::manager::store::{CasOutcome, NodeRecord, Snapshot, Store, StoreError, StoreOptions};
use etcd_support::EtcdCluster;

const NODE_TTL: Duration = Duration::from_secs(2);

fn options(advertise: &str) -> StoreOptions {
    StoreOptions {
        node_ttl: NODE_TTL,
        advertise: advertise.to_owned(),
        hub: Hub::new(),
    }
}

async fn connect(endpoints: &[String], advertise: &str) -> Arc<EtcdStore> {
    EtcdStore::connect(endpoints, options(advertise))
        .await
        .expect("connect to etcd")
}

fn node(cluster: &str, id: &str) -> NodeRecord {
    NodeRecord {
        node_id: id.to_owned(),
        cluster: cluster.to_owned(),
        hostname: format!("host-{id}"),
        ips: vec!["10.0.0.1".into(), "fe80::1".into()],
        bind_address: "10.0.0.1:8088".into(),
        http_addr: "10.0.0.1:8086".into(),
        version: "1.8.10".into(),
        registered_at_ms: 1_000,
        last_heartbeat_ms: 1_000,
    }
}

/// [`etcd_support::noise`] as a catalog.
fn noise(len: usize, seed: u64) -> Bytes {
    etcd_support::noise(len, seed).into()
}

/// Polls `check` until it yields `Some`, failing the test after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keys under the store's `blobs/` prefix for one cluster, read directly.
async fn blob_keys(endpoints: &[String], cluster: &str) -> Vec<String> {
    let mut client = etcd_client::Client::connect(endpoints, None)
        .await
        .expect("raw etcd client");
    let prefix = format!("{DEFAULT_PREFIX}blobs/{}/", hex::encode(cluster));
    let resp = client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list blob keys");
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Waits until the subscription shows `version` (or a later one).
async fn wait_for(sub: &mut Subscription, version: u64, what: &str) -> Arc<Snapshot> {
    let deadline = Duration::from_secs(15);
    tokio::time::timeout(deadline, async {
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
    .unwrap_or_else(|_| panic!("{what}: not within {deadline:?}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_heartbeat_expire_and_delete() {
    let etcd = EtcdCluster::start(3).await;
    let store = connect(&etcd.endpoints(), "m1:7070").await;
    // Names with '/' and non-ASCII must survive the key encoding.
    let (ca, cb) = ("prod/eu é", "prod");

    assert_eq!(store.get_node(ca, "n1").await.unwrap(), None);
    store.put_node(node(ca, "n1")).await.unwrap();
    store.put_node(node(ca, "n/2")).await.unwrap();
    store.put_node(node(cb, "n1")).await.unwrap();
    assert_eq!(
        store.get_node(ca, "n1").await.unwrap(),
        Some(node(ca, "n1"))
    );
    assert_eq!(
        store.get_node(ca, "n/2").await.unwrap(),
        Some(node(ca, "n/2"))
    );
    assert_eq!(store.get_node(cb, "n/2").await.unwrap(), None);

    let listed = store.list_nodes(Some(ca)).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|s| s.record.node_id.as_str()).collect();
    assert_eq!(ids, ["n/2", "n1"]);
    assert!(listed.iter().all(|s| s.alive && s.record.cluster == ca));
    let all = store.list_nodes(None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(store.list_nodes(Some(cb)).await.unwrap().len(), 1);
    assert!(store.list_nodes(Some("prod/")).await.unwrap().is_empty());

    // Heartbeats update the record; unknown nodes are not created.
    assert!(store.heartbeat(ca, "n1", 5_000).await.unwrap());
    assert_eq!(
        store
            .get_node(ca, "n1")
            .await
            .unwrap()
            .unwrap()
            .last_heartbeat_ms,
        5_000
    );
    assert!(!store.heartbeat(ca, "ghost", 5_000).await.unwrap());
    assert_eq!(store.get_node(ca, "ghost").await.unwrap(), None);

    // n1 keeps heartbeating; the others lapse after the TTL.
    let started = Instant::now();
    let mut beat = 6_000;
    let dead = eventually(
        "unheartbeaten nodes marked dead",
        Duration::from_secs(20),
        || {
            beat += 1;
            let store = store.clone();
            let now = beat;
            async move {
                assert!(store.heartbeat(ca, "n1", now).await.unwrap());
                let all = store.list_nodes(None).await.unwrap();
                let alive: Vec<_> = all
                    .iter()
                    .filter(|s| s.alive)
                    .map(|s| (s.record.cluster.clone(), s.record.node_id.clone()))
                    .collect();
                (alive == [(ca.to_owned(), "n1".to_owned())]).then_some(all)
            }
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "nodes died before their TTL ({:?})",
        started.elapsed()
    );
    // Dead nodes stay listed, with their records.
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().any(|s| !s.alive && s.record == node(cb, "n1")));

    // A heartbeat revives a dead node.
    assert!(store.heartbeat(cb, "n1", 9_000).await.unwrap());
    let revived = store.list_nodes(Some(cb)).await.unwrap();
    assert!(revived[0].alive);
    assert_eq!(revived[0].record.last_heartbeat_ms, 9_000);

    // Re-registering replaces the record.
    let mut changed = node(cb, "n1");
    changed.hostname = "renamed".into();
    store.put_node(changed.clone()).await.unwrap();
    assert_eq!(store.get_node(cb, "n1").await.unwrap(), Some(changed));

    // Deletion.
    assert!(store.delete_node(ca, "n1").await.unwrap());
    assert!(!store.delete_node(ca, "n1").await.unwrap());
    assert_eq!(store.get_node(ca, "n1").await.unwrap(), None);
    assert!(!store.heartbeat(ca, "n1", 10_000).await.unwrap());
    assert_eq!(store.get_node(ca, "n1").await.unwrap(), None);
    let ids: Vec<_> = store
        .list_nodes(Some(ca))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.record.node_id)
        .collect();
    assert_eq!(ids, ["n/2"]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_compare_and_swap() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let store = connect(&endpoints, "m1:7070").await;
    let c = "a/b";

    assert_eq!(store.get_meta(c).await.unwrap(), Snapshot::empty(c));
    assert!(store.list_catalogs().await.unwrap().is_empty());
    // Nothing written yet: only version 0 is current.
    assert_eq!(
        conflict(store.cas_meta(c, 1, Bytes::from("x")).await.unwrap()),
        Snapshot::empty(c)
    );

    assert_eq!(
        accepted(store.cas_meta(c, 0, Bytes::from("one")).await.unwrap()),
        1
    );
    let current = conflict(store.cas_meta(c, 0, Bytes::from("late")).await.unwrap());
    assert_eq!((current.version, current.data), (1, Bytes::from("one")));
    let current = conflict(store.cas_meta(c, 2, Bytes::from("ahead")).await.unwrap());
    assert_eq!(current.version, 1);
    assert_eq!(
        accepted(store.cas_meta(c, 1, Bytes::from("two")).await.unwrap()),
        2
    );
    let snap = store.get_meta(c).await.unwrap();
    assert_eq!(
        (snap.cluster.as_str(), snap.version, snap.data),
        (c, 2, Bytes::from("two"))
    );

    // Empty data is a version like any other.
    assert_eq!(
        accepted(store.cas_meta(c, 2, Bytes::new()).await.unwrap()),
        3
    );
    assert_eq!(store.get_meta(c).await.unwrap().version, 3);
    assert!(store.get_meta(c).await.unwrap().data.is_empty());
    assert_eq!(
        accepted(store.cas_meta(c, 3, Bytes::from("four")).await.unwrap()),
        4
    );

    // Racing writers through two managers: exactly one wins each round.
    let other = connect(&endpoints, "m2:7070").await;
    for round in 0..5u64 {
        let expected = 4 + round;
        let (a, b) = tokio::join!(
            store.cas_meta(c, expected, Bytes::from(format!("a{round}"))),
            other.cas_meta(c, expected, Bytes::from(format!("b{round}"))),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, CasOutcome::Accepted(v) if *v == expected + 1))
            .count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        let current = store.get_meta(c).await.unwrap();
        for o in &outcomes {
            if let CasOutcome::Conflict(s) = o {
                assert_eq!(s, &current, "a conflict reports the current snapshot");
            }
        }
    }
    assert_eq!(store.get_meta(c).await.unwrap().version, 9);

    assert_eq!(
        accepted(store.cas_meta("other", 0, Bytes::from("x")).await.unwrap()),
        1
    );
    assert_eq!(
        other.list_catalogs().await.unwrap(),
        [(c.to_owned(), 9), ("other".to_owned(), 1)]
    );

    // Replaced and losing blobs are gone: only the current chunk remains.
    assert_eq!(blob_keys(&endpoints, c).await.len(), 1);
    store.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_catalog_round_trip() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let store = connect(&endpoints, "m1:7070").await;
    let reader = connect(&endpoints, "m2:7070").await;
    let c = "big";

    let first = noise(5 * 1024 * 1024, 1);
    assert_eq!(
        accepted(store.cas_meta(c, 0, first.clone()).await.unwrap()),
        1
    );
    let got = reader.get_meta(c).await.unwrap();
    assert_eq!(got.version, 1);
    assert!(got.data == first, "5 MiB catalog read back differently");
    assert_eq!(blob_keys(&endpoints, c).await.len(), 5);

    // Not a multiple of the chunk size; the old blob is deleted.
    let second = noise(5 * 1024 * 1024 + 7, 2);
    assert_eq!(
        accepted(reader.cas_meta(c, 1, second.clone()).await.unwrap()),
        2
    );
    let got = store.get_meta(c).await.unwrap();
    assert_eq!(got.version, 2);
    assert!(got.data == second);
    assert_eq!(blob_keys(&endpoints, c).await.len(), 6);

    // A conflict hands back the whole large current snapshot, and the
    // loser's chunks are removed.
    let lost = conflict(
        store
            .cas_meta(c, 1, noise(3 * CHUNK_SIZE, 3))
            .await
            .unwrap(),
    );
    assert_eq!(lost.version, 2);
    assert!(lost.data == second);
    assert_eq!(blob_keys(&endpoints, c).await.len(), 6);
    store.close().await;
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_hub_of_another_manager() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let writer = connect(&endpoints, "m1:7070").await;
    let hub = Hub::new();
    let watcher = EtcdStore::connect(
        &endpoints,
        StoreOptions {
            hub: hub.clone(),
            ..options("m2:7070")
        },
    )
    .await
    .unwrap();
    let c = "watched/é";

    // As the manager does: subscribe, read, publish the read.
    let mut sub = hub.subscribe(c);
    hub.publish(watcher.get_meta(c).await.unwrap());
    let seen = sub.next_different(u64::MAX).await.unwrap();
    assert_eq!(seen.version, 0);

    assert_eq!(
        accepted(writer.cas_meta(c, 0, Bytes::from("v1")).await.unwrap()),
        1
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), sub.next_different(0))
        .await
        .expect("change reached the other manager")
        .unwrap();
    assert_eq!((seen.version, seen.data.clone()), (1, Bytes::from("v1")));

    // Large catalogs travel the same way.
    let big = noise(3 * CHUNK_SIZE + 1, 4);
    assert_eq!(
        accepted(writer.cas_meta(c, 1, big.clone()).await.unwrap()),
        2
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), sub.next_different(1))
        .await
        .expect("large change reached the other manager")
        .unwrap();
    assert_eq!(seen.version, 2);
    assert!(seen.data == big);

    // Other clusters' changes do not wake this subscription.
    assert_eq!(
        accepted(
            writer
                .cas_meta("unwatched", 0, Bytes::from("x"))
                .await
                .unwrap()
        ),
        1
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next_different(2))
            .await
            .is_err()
    );

    // Both managers are listed; a closed one leaves the list.
    assert_eq!(
        watcher.list_managers().await.unwrap(),
        ["m1:7070".to_owned(), "m2:7070".to_owned()]
    );
    writer.close().await;
    assert!(matches!(
        writer.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(
        watcher.list_managers().await.unwrap(),
        ["m2:7070".to_owned()]
    );
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_feed_work_after_compaction() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let writer = connect(&endpoints, "m1:7070").await;
    let hub = Hub::new();
    let watcher = EtcdStore::connect(
        &endpoints,
        StoreOptions {
            hub: hub.clone(),
            ..options("m2:7070")
        },
    )
    .await
    .unwrap();
    let c = "compacted";
    let mut sub = hub.subscribe(c);
    hub.publish(watcher.get_meta(c).await.unwrap());

    for v in 0..5u64 {
        accepted(
            writer
                .cas_meta(c, v, Bytes::from(format!("v{}", v + 1)))
                .await
                .unwrap(),
        );
    }
    let mut raw = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();
    let revision = raw
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(
        revision,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();

    // Reads after the compaction see the latest version.
    let snap = watcher.get_meta(c).await.unwrap();
    assert_eq!((snap.version, snap.data), (5, Bytes::from("v5")));
    assert_eq!(
        wait_for(&mut sub, 5, "v5 published").await.data,
        Bytes::from("v5")
    );
    // And later changes keep flowing.
    accepted(writer.cas_meta(c, 5, Bytes::from("v6")).await.unwrap());
    let seen = wait_for(&mut sub, 6, "v6 published").await;
    assert_eq!((seen.version, seen.data.clone()), (6, Bytes::from("v6")));
    writer.close().await;
    watcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_when_a_member_dies() {
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let hub = Hub::new();
    let store = EtcdStore::connect(
        &endpoints,
        StoreOptions {
            hub: hub.clone(),
            ..options("m1:7070")
        },
    )
    .await
    .unwrap();
    let c = "ha";
    let mut sub = hub.subscribe(c);
    hub.publish(store.get_meta(c).await.unwrap());
    store.put_node(node(c, "n1")).await.unwrap();
    assert_eq!(
        accepted(store.cas_meta(c, 0, Bytes::from("v1")).await.unwrap()),
        1
    );

    // Kill the leader: the hardest member to lose.
    let leader = etcd.leader().await.expect("a leader");
    etcd.kill(leader);
    let survivors: Vec<String> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e.clone())
        .collect();

    // Once the others have elected a new leader, every call works.
    eventually("store serving again", Duration::from_secs(20), || {
        let store = store.clone();
        async move { store.ping().await.ok() }
    })
    .await;
    let mut version = 1;
    for i in 0..20u64 {
        store.ping().await.unwrap();
        store.put_node(node(c, &format!("n{i}"))).await.unwrap();
        assert!(store.heartbeat(c, "n1", 2_000 + i).await.unwrap());
        assert!(store.get_node(c, "n1").await.unwrap().is_some());
        let listed = store.list_nodes(Some(c)).await.unwrap();
        assert!(listed.iter().any(|s| s.record.node_id == "n1" && s.alive));
        version = accepted(
            store
                .cas_meta(c, version, Bytes::from(format!("v{}", version + 1)))
                .await
                .unwrap(),
        );
        assert_eq!(store.get_meta(c).await.unwrap().version, version);
        assert!(store
            .list_managers()
            .await
            .unwrap()
            .contains(&"m1:7070".to_owned()));
    }

    // Changes from a manager connected to the survivors only still reach
    // this manager's subscribers (its watch moves off the dead member).
    let other = connect(&survivors, "m2:7070").await;
    assert_eq!(
        accepted(
            other
                .cas_meta(c, version, Bytes::from("remote"))
                .await
                .unwrap()
        ),
        version + 1
    );
    let seen = wait_for(&mut sub, version + 1, "remote change published").await;
    assert_eq!(
        (seen.version, seen.data.clone()),
        (version + 1, Bytes::from("remote"))
    );
    other.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_fails_fast() {
    // Nothing listens on these ports.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let started = Instant::now();
    let result = EtcdStore::connect(&endpoints, options("m1:7070")).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "connect to nothing"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // A store whose whole cluster dies answers Unavailable, in time.
    let mut etcd = EtcdCluster::start(3).await;
    let store = connect(&etcd.endpoints(), "m1:7070").await;
    store.put_node(node("c", "n1")).await.unwrap();
    etcd.kill_all();
    let started = Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get_node("c", "n1").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.cas_meta("c", 0, Bytes::from("x")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    store.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "close took {:?}",
        started.elapsed()
    );
}
