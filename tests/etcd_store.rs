//! What only the etcd store does, against real etcd clusters (three members
//! each): chunked catalogs' bookkeeping, the manager list, compaction, a lost
//! leader, an unreachable cluster. What every store does is in
//! `tests/store_contract.rs`.
//!
//! Needs the `etcd` binary (`/usr/bin/etcd`, or `$ETCD_BIN`).

#[path = "support/etcd.rs"]
mod etcd_support;
#[path = "support/wait.rs"]
mod wait_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cflux::manager::hub::{Announced, Hub, Subscription};
use cflux::manager::store::etcd::{EtcdStore, CHUNK_SIZE, DEFAULT_PREFIX};
use cflux::manager::store::{
    CasOutcome, ChangeNote, HistoryLimits, NodeRecord, Snapshot, Store, StoreError, StoreOptions,
    SyncReport, DEFAULT_ETCD_COMPACTION_INTERVAL,
};
use etcd_support::EtcdCluster;
use wait_support::eventually;

const NODE_TTL: Duration = Duration::from_secs(2);

fn options(advertise: &str) -> StoreOptions {
    StoreOptions {
        node_ttl: NODE_TTL,
        advertise: advertise.to_owned(),
        // Only the current version: a replaced version's blob has no use.
        history: HistoryLimits {
            max_versions: 1,
            max_bytes: u64::MAX,
        },
        etcd_compaction_interval: DEFAULT_ETCD_COMPACTION_INTERVAL,
    }
}

async fn connect(endpoints: &[String], advertise: &str) -> Arc<EtcdStore> {
    connect_feeding(endpoints, advertise, Hub::new()).await
}

/// A store whose change feed announces to `hub`.
async fn connect_feeding(endpoints: &[String], advertise: &str, hub: Arc<Hub>) -> Arc<EtcdStore> {
    EtcdStore::connect(endpoints, options(advertise), hub)
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
        sync: None,
    }
}

/// [`etcd_support::noise`] as a catalog.
fn noise(len: usize, seed: u64) -> Bytes {
    etcd_support::noise(len, seed).into()
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
async fn wait_for(sub: &mut Subscription, version: u64, what: &str) -> Arc<Announced> {
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
async fn replaced_and_losing_blobs_are_deleted() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let store = connect(&endpoints, "m1:7070").await;
    let other = connect(&endpoints, "m2:7070").await;
    let c = "big";

    accepted(
        store
            .cas_meta(c, 0, "", noise(5 * CHUNK_SIZE, 1), ChangeNote::default())
            .await
            .unwrap(),
    );
    assert_eq!(blob_keys(&endpoints, c).await.len(), 5);
    // Not a multiple of the chunk size; the old blob is deleted.
    accepted(
        other
            .cas_meta(
                c,
                1,
                "",
                noise(5 * CHUNK_SIZE + 7, 2),
                ChangeNote::default(),
            )
            .await
            .unwrap(),
    );
    assert_eq!(blob_keys(&endpoints, c).await.len(), 6);
    // A loser's chunks are removed.
    conflict(
        store
            .cas_meta(c, 1, "", noise(3 * CHUNK_SIZE, 3), ChangeNote::default())
            .await
            .unwrap(),
    );
    assert_eq!(blob_keys(&endpoints, c).await.len(), 6);

    // Racing writers: only the winner's blob remains.
    for round in 0..3u64 {
        let expected = 2 + round;
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
        a.unwrap();
        b.unwrap();
        assert_eq!(blob_keys(&endpoints, c).await.len(), 1, "round {round}");
    }

    // Kept versions keep their blobs; a pruned one's is deleted.
    let keeping = EtcdStore::connect(
        &endpoints,
        StoreOptions {
            history: HistoryLimits {
                max_versions: 2,
                max_bytes: u64::MAX,
            },
            ..options("m3:7070")
        },
        Hub::new(),
    )
    .await
    .expect("connect to etcd");
    for (i, chunks) in [(5u64, 2usize), (6, 3), (7, 4)] {
        let data = noise(chunks * CHUNK_SIZE - 1, i);
        accepted(
            keeping
                .cas_meta(c, i, "", data, ChangeNote::default())
                .await
                .unwrap(),
        );
    }
    assert_eq!(blob_keys(&endpoints, c).await.len(), 3 + 4);
    let (_, kept) = keeping.version(c, 7).await.unwrap().expect("v7 kept");
    assert_eq!(kept, noise(3 * CHUNK_SIZE - 1, 6));
    assert!(keeping.version(c, 6).await.unwrap().is_none(), "v6 pruned");
    keeping.close().await;
    store.close().await;
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_are_listed_until_they_close() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let first = connect(&endpoints, "m1:7070").await;
    let second = connect(&endpoints, "m2:7070").await;
    assert_eq!(
        second.list_managers().await.unwrap(),
        ["m1:7070".to_owned(), "m2:7070".to_owned()]
    );
    first.close().await;
    assert!(matches!(
        first.ping().await,
        Err(StoreError::Unavailable { .. })
    ));
    assert_eq!(
        second.list_managers().await.unwrap(),
        ["m2:7070".to_owned()]
    );
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_feed_work_after_compaction() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let writer = connect(&endpoints, "m1:7070").await;
    let hub = Hub::new();
    let watcher = connect_feeding(&endpoints, "m2:7070", hub.clone()).await;
    let c = "compacted";
    let mut sub = hub.subscribe(c);
    hub.publish(watcher.get_meta(c).await.unwrap());

    for v in 0..5u64 {
        accepted(
            writer
                .cas_meta(
                    c,
                    v,
                    "",
                    Bytes::from(format!("v{}", v + 1)),
                    ChangeNote::default(),
                )
                .await
                .unwrap(),
        );
    }
    let (mut raw, revision) = raw_client_at(&endpoints).await;
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
    accepted(
        writer
            .cas_meta(c, 5, "", Bytes::from("v6"), ChangeNote::default())
            .await
            .unwrap(),
    );
    let seen = wait_for(&mut sub, 6, "v6 published").await;
    assert_eq!((seen.version, seen.data.clone()), (6, Bytes::from("v6")));
    writer.close().await;
    watcher.close().await;
}

/// A plain etcd client, and etcd's revision now.
async fn raw_client_at(endpoints: &[String]) -> (etcd_client::Client, i64) {
    let mut raw = etcd_client::Client::connect(endpoints, None)
        .await
        .expect("connect to etcd");
    let revision = raw
        .get("x", None)
        .await
        .expect("read etcd's revision")
        .header()
        .expect("a response header")
        .revision();
    (raw, revision)
}

/// The store compacts etcd's history by itself, to a revision one interval
/// old, and goes on serving reads, writes and its change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_compacts_etcd_s_history_by_itself_and_keeps_serving() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let hub = Hub::new();
    let store = EtcdStore::connect(
        &endpoints,
        StoreOptions {
            etcd_compaction_interval: Duration::from_millis(500),
            ..options("m1:7070")
        },
        hub.clone(),
    )
    .await
    .expect("connect to etcd");
    let c = "compacting";
    let mut sub = hub.subscribe(c);
    hub.publish(store.get_meta(c).await.unwrap());
    let (raw, first) = raw_client_at(&endpoints).await;
    store.put_node(node(c, "n1")).await.unwrap();
    let mut version = 0;
    let deadline = Duration::from_secs(20);
    // Heartbeats and pushes leave revisions behind until the store compacts
    // past the first one.
    let compacted = wait_support::poll(deadline, || {
        let (store, mut raw) = (store.clone(), raw.clone());
        version += 1;
        let v = version;
        async move {
            store
                .heartbeat(c, "n1", cflux::clock::now_ms(), None)
                .await
                .unwrap();
            accepted(
                store
                    .cas_meta(
                        c,
                        v - 1,
                        "",
                        Bytes::from(format!("v{v}")),
                        ChangeNote::default(),
                    )
                    .await
                    .unwrap(),
            );
            match raw
                .get(
                    "x",
                    Some(etcd_client::GetOptions::new().with_revision(first)),
                )
                .await
            {
                Err(e) if e.to_string().contains("compacted") => Ok(()),
                other => Err(format!("revision {first} still readable: {other:?}")),
            }
        }
    })
    .await;
    assert!(compacted.is_ok(), "never compacted: {compacted:?}");
    // The store goes on: reads, writes and the change feed.
    let latest = store.get_meta(c).await.unwrap();
    let next = latest.version + 1;
    accepted(
        store
            .cas_meta(
                c,
                latest.version,
                "",
                Bytes::from("after"),
                ChangeNote::default(),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        wait_for(&mut sub, next, "published after compaction")
            .await
            .data,
        Bytes::from("after")
    );
    assert!(store
        .heartbeat(c, "n1", cflux::clock::now_ms(), None)
        .await
        .unwrap());
    assert_eq!(store.list_nodes(Some(c)).await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_when_a_member_dies() {
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let hub = Hub::new();
    let store = connect_feeding(&endpoints, "m1:7070", hub.clone()).await;
    let c = "ha";
    let mut sub = hub.subscribe(c);
    hub.publish(store.get_meta(c).await.unwrap());
    store.put_node(node(c, "n1")).await.unwrap();
    assert_eq!(
        accepted(
            store
                .cas_meta(c, 0, "", Bytes::from("v1"), ChangeNote::default())
                .await
                .unwrap()
        ),
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
    eventually(Duration::from_secs(20), "store serving again", || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    })
    .await;
    let mut version = 1;
    for i in 0..20u64 {
        store.ping().await.unwrap();
        store.put_node(node(c, &format!("n{i}"))).await.unwrap();
        assert!(store.heartbeat(c, "n1", 2_000 + i, None).await.unwrap());
        assert!(store.get_node(c, "n1").await.unwrap().is_some());
        let listed = store.list_nodes(Some(c)).await.unwrap();
        assert!(listed.iter().any(|s| s.record.node_id == "n1" && s.alive));
        version = accepted(
            store
                .cas_meta(
                    c,
                    version,
                    "",
                    Bytes::from(format!("v{}", version + 1)),
                    ChangeNote::default(),
                )
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
                .cas_meta(c, version, "", Bytes::from("remote"), ChangeNote::default())
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
    let result = EtcdStore::connect(&endpoints, options("m1:7070"), Hub::new()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
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
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        store.get_node("c", "n1").await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(matches!(
        store
            .cas_meta("c", 0, "", Bytes::from("x"), ChangeNote::default())
            .await,
        Err(StoreError::Unavailable { .. })
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

/// Registers `ids` in `cluster` through `store`, each with its first
/// heartbeat reporting `sync`.
async fn register_all(store: &EtcdStore, cluster: &str, ids: &[String], sync: &SyncReport) {
    for id in ids {
        store.put_node(node(cluster, id)).await.unwrap();
        assert!(store
            .heartbeat(cluster, id, 2_000, Some(sync.clone()))
            .await
            .unwrap());
    }
}

fn synced(version: u64) -> SyncReport {
    SyncReport {
        applied_version: version,
        applied_history_id: "h".into(),
        ..SyncReport::default()
    }
}

/// Whether each of `ids` is listed alive, in order.
async fn alive(store: &EtcdStore, cluster: &str, ids: &[&str]) -> Vec<bool> {
    let listed = store.list_nodes(Some(cluster)).await.unwrap();
    ids.iter()
        .map(|id| listed.iter().any(|n| n.record.node_id == *id && n.alive))
        .collect()
}

/// Heartbeats that report nothing new cost etcd nothing: no revision, no
/// lease (two leases per manager, however many nodes and beats); a new sync
/// state is one write, and listings show the newest heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_heartbeats_write_nothing_to_etcd() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let store = connect(&endpoints, "m1:7070").await;
    let c = "steady";
    let ids: Vec<String> = (0..50).map(|i| format!("n{i:02}")).collect();
    register_all(&store, c, &ids, &synced(1)).await;

    let (mut raw, before) = raw_client_at(&endpoints).await;
    for round in 0..5u64 {
        for id in &ids {
            let now = 10_000 + round;
            assert!(store.heartbeat(c, id, now, Some(synced(1))).await.unwrap());
        }
    }
    let (_, after) = raw_client_at(&endpoints).await;
    assert_eq!(after, before, "250 steady heartbeats wrote to etcd");
    let leases = raw.leases().await.expect("list leases").leases().len();
    assert_eq!(leases, 2, "leases live for one manager and 50 nodes");

    let listed = store.list_nodes(Some(c)).await.unwrap();
    assert_eq!(listed.len(), 50);
    assert!(listed
        .iter()
        .all(|n| n.alive && n.record.last_heartbeat_ms == 10_004));

    // A node that applied a new version: its record is written, once.
    assert!(store
        .heartbeat(c, "n07", 20_000, Some(synced(2)))
        .await
        .unwrap());
    assert!(store
        .heartbeat(c, "n07", 20_001, Some(synced(2)))
        .await
        .unwrap());
    let (_, later) = raw_client_at(&endpoints).await;
    assert_eq!(later, after + 1, "a new sync state is one write");
    let record = store.get_node(c, "n07").await.unwrap().expect("n07");
    assert_eq!(record.sync, Some(synced(2)));
    store.close().await;
}

/// A node that moves to another manager (and back) stays alive while the
/// first keeps running; a node that falls silent dies within about a TTL;
/// a node deleted through one manager is unknown to the other's next
/// heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stay_alive_across_managers_and_die_when_silent() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let m1 = connect(&endpoints, "m1:7070").await;
    let m2 = connect(&endpoints, "m2:7070").await;
    let c = "moving";
    let ids: Vec<String> = ["mover", "silent", "doomed"].map(String::from).to_vec();
    register_all(&m1, c, &ids, &synced(1)).await;

    // "mover" heartbeats through m2, then through m1 again, then m2, for
    // three TTLs; "silent" stops.
    let silent_since = Instant::now();
    let mut silent_dead_after = None;
    let mut managers = [&m2, &m1, &m2].into_iter().cycle();
    let mut manager = managers.next().unwrap();
    let mut switched = Instant::now();
    while silent_since.elapsed() < NODE_TTL * 3 {
        if switched.elapsed() >= NODE_TTL {
            manager = managers.next().unwrap();
            switched = Instant::now();
        }
        assert!(manager
            .heartbeat(c, "mover", 3_000, Some(synced(1)))
            .await
            .unwrap());
        assert!(manager
            .heartbeat(c, "doomed", 3_000, Some(synced(1)))
            .await
            .unwrap());
        let [mover, silent, doomed] = alive(&m1, c, &["mover", "silent", "doomed"]).await[..]
        else {
            unreachable!()
        };
        assert!(mover && doomed, "a heartbeating node was listed dead");
        if !silent && silent_dead_after.is_none() {
            silent_dead_after = Some(silent_since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead_after = silent_dead_after.expect("the silent node was never listed dead");
    assert!(
        dead_after >= NODE_TTL - Duration::from_millis(200) && dead_after <= NODE_TTL * 2,
        "the silent node died after {dead_after:?}, TTL {NODE_TTL:?}"
    );

    // "doomed" heartbeats through m2; m1 deletes it.
    assert!(m2
        .heartbeat(c, "doomed", 4_000, Some(synced(1)))
        .await
        .unwrap());
    assert!(m1.delete_node(c, "doomed").await.unwrap());
    eventually(
        Duration::from_secs(5),
        "m2 forgets the deleted node",
        || {
            let m2 = m2.clone();
            async move {
                match m2.heartbeat(c, "doomed", 5_000, Some(synced(1))).await {
                    Ok(false) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(m1.get_node(c, "doomed").await.unwrap().is_none());
    assert_eq!(alive(&m2, c, &["mover"]).await, [true]);
    m1.close().await;
    m2.close().await;
}

/// A manager that goes away loses no node: its nodes heartbeat through the
/// other and are listed alive at every moment, before and after its lease
/// ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_that_goes_away_loses_no_node() {
    let etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    let m1 = connect(&endpoints, "m1:7070").await;
    let m2 = connect(&endpoints, "m2:7070").await;
    let c = "failover";
    let ids: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
    register_all(&m1, c, &ids, &synced(1)).await;
    // Gone without a word: its tasks stop, its lease runs out by itself.
    drop(m1);

    let since = Instant::now();
    while since.elapsed() < NODE_TTL * 3 {
        let beats = ids
            .iter()
            .map(|id| m2.heartbeat(c, id, 6_000, Some(synced(1))));
        for known in futures::future::join_all(beats).await {
            assert!(known.unwrap(), "m2 did not know a node of m1");
        }
        let listed = m2.list_nodes(Some(c)).await.unwrap();
        let dead: Vec<&str> = listed
            .iter()
            .filter(|n| !n.alive)
            .map(|n| n.record.node_id.as_str())
            .collect();
        assert!(
            dead.is_empty(),
            "nodes listed dead after failover: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    m2.close().await;
}
