//! Several real `cflux-manager` processes sharing one real three-member etcd
//! cluster (`--etcd-endpoints` with every member): watches, long polls, nodes
//! and compare-and-swap across managers, a lost member (the leader), a 5 MiB
//! catalog, a lost cluster (fast UNAVAILABLE / 503, NOT_SERVING health, and
//! recovery) and SIGTERM with watches open.
//!
//! Needs the `etcd` binary (`/usr/bin/etcd`, or `$ETCD_BIN`). Every test runs
//! its own etcd cluster on its own free ports.

mod support;

#[path = "support/etcd.rs"]
mod etcd_support;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{
    push_meta_response, GetMetaRequest, ListClustersRequest, ListNodesRequest, MetaSnapshot,
    WatchMetaRequest,
};
use etcd_support::{noise, EtcdCluster};
use reqwest::StatusCode;
use serde_json::Value;
use support::{
    deregister, get_json, get_meta, heartbeat, hold_long_poll, http, meta, metric, push,
    push_request, register, registration, scrape, sigterm_ends_cleanly, version_of, wait_until,
    watch, within, Manager,
};
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;

/// Deadline of a condition that needs no failover.
const DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of recovering from a lost member or a restarted cluster (leader
/// election, client reconnection, the change feed's back-off).
const RECOVERY: Duration = Duration::from_secs(25);
/// Every call must answer within this, even with etcd gone.
const CALL_BOUND: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

type Client = ClusterfluxClient<Channel>;

/// A manager on `etcd` (every member's client URL), with `extra` flags,
/// once it serves. (It listens before it has connected to etcd and registered
/// itself there; health answers SERVING only after.)
async fn etcd_manager(etcd: &EtcdCluster, extra: &[&str]) -> Manager {
    let endpoints = etcd.endpoints().join(",");
    let mut args = vec!["--etcd-endpoints", endpoints.as_str()];
    args.extend_from_slice(extra);
    let m = Manager::start_with(&args).await;
    wait_health(&m, ServingStatus::Serving, DEADLINE).await;
    m
}

/// A gRPC client that takes catalogs up to the manager's 16 MiB default.
async fn client(m: &Manager) -> Client {
    ClusterfluxClient::new(m.channel().await)
        .max_decoding_message_size(32 * MIB)
        .max_encoding_message_size(32 * MIB)
}

/// The next snapshot of a watch stream, within `deadline`.
async fn next(
    stream: &mut Streaming<MetaSnapshot>,
    deadline: Duration,
    what: &str,
) -> MetaSnapshot {
    within(deadline, what, stream.message())
        .await
        .unwrap_or_else(|e| panic!("{what}: the watch failed: {e}"))
        .unwrap_or_else(|| panic!("{what}: the watch ended"))
}

/// Reads a watch until it reports `version` (earlier versions may come
/// first, coalesced or not).
async fn until_version(
    stream: &mut Streaming<MetaSnapshot>,
    version: u64,
    deadline: Duration,
    what: &str,
) -> MetaSnapshot {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let s = next(stream, left, what).await;
        assert!(
            s.version <= version,
            "{what}: got v{} past v{version}",
            s.version
        );
        if s.version == version {
            return s;
        }
    }
}

/// The managers `GET /nodes` lists, sorted.
async fn listed_managers(m: &Manager) -> Vec<String> {
    let all = get_json(m, "/nodes").await;
    let mut out: Vec<String> = all["cflux"]
        .as_array()
        .expect("a cflux list")
        .iter()
        .map(|v| v.as_str().expect("a manager address").to_owned())
        .collect();
    out.sort();
    out
}

/// Waits until both health services of `m` report `want`.
async fn wait_health(m: &Manager, want: ServingStatus, deadline: Duration) {
    support::wait_health(&m.channel().await, m.addr, want, deadline).await;
}

/// Asserts two catalogs are byte-identical without printing megabytes.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!("{what}: first difference at byte {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_share_watches_nodes_and_versions() {
    let etcd = EtcdCluster::start(3).await;
    let a = etcd_manager(&etcd, &[]).await;
    let b = etcd_manager(&etcd, &[]).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let c = "shared";

    // Each manager lists both.
    let mut both = vec![a.addr.to_string(), b.addr.to_string()];
    both.sort();
    assert_eq!(listed_managers(&a).await, both);
    assert_eq!(listed_managers(&b).await, both);

    // A watch held by A wakes on a push through B.
    let mut on_a = watch(&mut ca, c, 0).await;
    assert_eq!(
        push(&mut cb, c, 0, &meta(b"v1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    let s = next(&mut on_a, DEADLINE, "A's watch to see B's push").await;
    assert_eq!(
        (s.cluster.as_str(), s.version, s.data.as_ref()),
        (c, 1, &meta(b"v1")[..])
    );

    // A legacy long poll held by A wakes on a legacy push through B.
    let poll = {
        let url = a.http_url(&format!("/clusters/{c}/versions/1"));
        tokio::spawn(async move {
            let r = http().get(url).send().await.expect("long poll");
            let version = version_of(&r);
            (
                r.status(),
                version,
                r.bytes().await.expect("long poll body"),
            )
        })
    };
    wait_until(DEADLINE, "the long poll on A to be held", || async {
        metric(&scrape(&a).await, "cflux_long_polls") == Some(1.0)
    })
    .await;
    let r = http()
        .post(b.http_url(&format!("/clusters/{c}/versions/1")))
        .body(meta(b"v2"))
        .send()
        .await
        .expect("legacy push through B");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(2)));
    let (status, version, body) = within(DEADLINE, "the long poll on A to be answered", poll)
        .await
        .expect("poll task");
    assert_eq!(
        (status, version, body.as_ref()),
        (StatusCode::OK, Some(2), &meta(b"v2")[..])
    );
    let s = next(&mut on_a, DEADLINE, "A's watch to see B's legacy push").await;
    assert_eq!((s.version, s.data.as_ref()), (2, &meta(b"v2")[..]));

    // Nodes registered through A (both transports) are listed by B.
    let grpc_id = ca
        .register(registration(c, "", "grpc-node"))
        .await
        .expect("register through A")
        .into_inner()
        .node_id;
    let legacy: Value = http()
        .post(a.http_url(&format!("/nodes/{c}")))
        .body(r#"{"ip": "10.0.0.2,", "hostname": "legacy-node"}"#)
        .send()
        .await
        .expect("legacy register through A")
        .json()
        .await
        .expect("registration JSON");
    let legacy_id = legacy["id"].as_str().expect("an id").to_owned();
    let nodes = cb
        .list_nodes(ListNodesRequest { cluster: c.into() })
        .await
        .expect("ListNodes through B")
        .into_inner()
        .nodes;
    let mut seen: Vec<_> = nodes
        .iter()
        .map(|n| (n.hostname.as_str(), n.node_id.as_str(), n.alive))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("grpc-node", grpc_id.as_str(), true),
            ("legacy-node", legacy_id.as_str(), true)
        ]
    );
    let legacy_list = get_json(&b, &format!("/nodes/{c}")).await;
    let mut ids: Vec<&str> = legacy_list
        .as_array()
        .expect("a node list")
        .iter()
        .map(|n| n["id"].as_str().expect("an id"))
        .collect();
    ids.sort();
    let mut want = vec![grpc_id.as_str(), legacy_id.as_str()];
    want.sort();
    assert_eq!(ids, want);

    // B heartbeats and deregisters nodes A registered; A sees it.
    heartbeat(&mut cb, c, &grpc_id)
        .await
        .expect("heartbeat through B");
    let r = http()
        .put(b.http_url(&format!("/nodes/{c}/{legacy_id}")))
        .send()
        .await
        .expect("legacy heartbeat through B");
    assert_eq!(r.status(), StatusCode::OK);
    deregister(&mut cb, c, &grpc_id)
        .await
        .expect("deregister through B");
    let nodes = ca
        .list_nodes(ListNodesRequest { cluster: c.into() })
        .await
        .expect("ListNodes through A")
        .into_inner()
        .nodes;
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec![legacy_id.as_str()]);
    let clusters = ca
        .list_clusters(ListClustersRequest {})
        .await
        .expect("ListClusters through A")
        .into_inner()
        .clusters;
    let summary: Vec<_> = clusters
        .iter()
        .map(|s| (s.name.as_str(), s.version, s.nodes, s.alive_nodes))
        .collect();
    assert_eq!(summary, vec![(c, 2, 1, 1)]);

    // Compare-and-swap across managers: both know v2, A pushes first, so
    // B's push expecting v2 is stale and gets A's catalog back.
    assert_eq!(
        push(&mut ca, c, 2, &meta(b"from-a")).await,
        push_meta_response::Result::AcceptedVersion(3)
    );
    match push(&mut cb, c, 2, &meta(b"from-b")).await {
        push_meta_response::Result::Conflict(s) => {
            assert_eq!((s.version, s.data.as_ref()), (3, &meta(b"from-a")[..]))
        }
        other => panic!("a stale push through B should conflict, got {other:?}"),
    }
    let r = http()
        .post(b.http_url(&format!("/clusters/{c}/versions/2")))
        .body(meta(b"legacy-from-b"))
        .send()
        .await
        .expect("stale legacy push through B");
    assert_eq!(
        (r.status(), version_of(&r)),
        (StatusCode::CONFLICT, Some(3))
    );
    assert_eq!(
        r.bytes().await.expect("conflict body").as_ref(),
        &meta(b"from-a")
    );
    let s = get_meta(&mut cb, c).await;
    assert_eq!((s.version, s.data.as_ref()), (3, &meta(b"from-a")[..]));
    let s = next(&mut on_a, DEADLINE, "A's watch to see A's push").await;
    assert_eq!((s.version, s.data.as_ref()), (3, &meta(b"from-a")[..]));

    // With the current version, B's push goes through; A's watch sees it.
    assert_eq!(
        push(&mut cb, c, 3, &meta(b"from-b")).await,
        push_meta_response::Result::AcceptedVersion(4)
    );
    let s = next(&mut on_a, DEADLINE, "A's watch to see B's second push").await;
    assert_eq!((s.version, s.data.as_ref()), (4, &meta(b"from-b")[..]));
    let s = next(
        &mut watch(&mut cb, c, 0).await,
        DEADLINE,
        "a new watch on B",
    )
    .await;
    assert_eq!((s.version, s.data.as_ref()), (4, &meta(b"from-b")[..]));

    // Racing pushes on v4 through both managers at once: exactly one wins,
    // every other one conflicts with the winner's catalog.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let mut cl = if i % 2 == 0 { ca.clone() } else { cb.clone() };
            tokio::spawn(async move {
                let data = format!("racer-{i}");
                let catalog = meta(data.as_bytes());
                let pushed = push(&mut cl, c, 4, &catalog).await;
                (data, catalog, pushed)
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in racers {
        results.push(r.await.expect("racer task"));
    }
    let winners: Vec<(&String, &Vec<u8>)> = results
        .iter()
        .filter(|(_, _, r)| *r == push_meta_response::Result::AcceptedVersion(5))
        .map(|(d, catalog, _)| (d, catalog))
        .collect();
    assert_eq!(winners.len(), 1, "one winner among {results:?}");
    for (data, _, r) in &results {
        match r {
            push_meta_response::Result::AcceptedVersion(5) => {}
            push_meta_response::Result::Conflict(s) => assert_eq!(
                (s.version, s.data.as_ref()),
                (5, &winners[0].1[..]),
                "{data} lost to {}",
                winners[0].0
            ),
            other => panic!("{data}: {other:?}"),
        }
    }
    let s = next(&mut on_a, DEADLINE, "A's watch to see the race's winner").await;
    assert_eq!((s.version, s.data.as_ref()), (5, &winners[0].1[..]));
}

/// One round of a node's life and a push, spread over two managers: `x`
/// registers the node again and pushes, `y` heartbeats it (both transports),
/// reads the version to push on and lists the node. Returns the version
/// accepted. A failed round may still have pushed, so each round reads the
/// current version afresh.
async fn round(
    x: &mut Client,
    y: &mut Client,
    y_manager: &Manager,
    cluster: &str,
    node: &str,
) -> Result<u64, String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |s: tonic::Status| format!("{what}: {} {}", s.code(), s.message())
    };
    x.register(registration(cluster, node, "node-1"))
        .await
        .map_err(e("register"))?;
    heartbeat(y, cluster, node).await.map_err(e("heartbeat"))?;
    let r = http()
        .put(y_manager.http_url(&format!("/nodes/{cluster}/{node}")))
        .send()
        .await
        .map_err(|err| format!("legacy heartbeat: {err}"))?;
    if r.status() != StatusCode::OK {
        return Err(format!("legacy heartbeat: {}", r.status()));
    }
    let current = y
        .get_meta(GetMetaRequest {
            cluster: cluster.into(),
        })
        .await
        .map_err(e("get meta"))?
        .into_inner()
        .version;
    let data = meta(format!("v{}", current + 1).as_bytes());
    let pushed = x
        .push_meta(push_request(cluster, current, &data))
        .await
        .map_err(e("push"))?
        .into_inner()
        .result;
    let version = match pushed {
        Some(push_meta_response::Result::AcceptedVersion(v)) if v == current + 1 => v,
        other => return Err(format!("push on v{current}: {other:?}")),
    };
    let nodes = y
        .list_nodes(ListNodesRequest {
            cluster: cluster.into(),
        })
        .await
        .map_err(e("list nodes"))?
        .into_inner()
        .nodes;
    if !nodes.iter().any(|n| n.node_id == node && n.alive) {
        return Err(format!("node {node} not listed alive: {nodes:?}"));
    }
    Ok(version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_keeps_both_managers_serving() {
    const STEADY_ROUNDS: usize = 10;
    let mut etcd = EtcdCluster::start(3).await;
    let a = etcd_manager(&etcd, &[]).await;
    let b = etcd_manager(&etcd, &[]).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let c = "ha";
    let node = register(&mut ca, registration(c, "", "node-1")).await;
    assert_eq!(
        push(&mut ca, c, 0, &meta(b"v1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    // Watches held across the loss, on both managers.
    let mut on_a = watch(&mut ca, c, 1).await;
    let mut on_b = watch(&mut cb, c, 1).await;

    let leader = etcd.leader().await.expect("a leader");
    etcd.kill(leader);
    assert!(!etcd.members[leader].is_running());

    // Calls may fail while the survivors elect a leader, but not for long.
    let lost = Instant::now();
    let mut version = loop {
        let attempt = within(
            CALL_BOUND,
            "a round of calls (each must answer, success or not)",
            round(&mut ca, &mut cb, &b, c, &node),
        )
        .await;
        match attempt {
            Ok(v) => break v,
            Err(e) => assert!(
                lost.elapsed() < RECOVERY,
                "no full round within {RECOVERY:?} of losing member {leader}; last: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = lost.elapsed();
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let s = until_version(stream, version, RECOVERY, &format!("{name}'s held watch")).await;
        assert_eq!(s.data.as_ref(), &meta(format!("v{version}").as_bytes())[..]);
    }

    // Then steady success, alternating the managers' roles; the watch on the
    // manager that did not push sees every version through etcd.
    for i in 0..STEADY_ROUNDS {
        let (x, y, y_manager) = if i % 2 == 0 {
            (&mut ca, &mut cb, &b)
        } else {
            (&mut cb, &mut ca, &a)
        };
        let v = within(
            CALL_BOUND,
            "a steady round",
            round(x, y, y_manager, c, &node),
        )
        .await
        .unwrap_or_else(|e| panic!("round {i} after recovery failed: {e}"));
        assert_eq!(v, version + 1, "round {i}");
        version = v;
        for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
            let s = next(stream, DEADLINE, &format!("{name}'s watch in round {i}")).await;
            assert_eq!(
                (s.version, s.data.as_ref()),
                (version, &meta(format!("v{version}").as_bytes())[..]),
                "{name}'s watch in round {i}"
            );
        }
    }
    // New watches work too, and both managers report healthy.
    for cl in [&mut ca, &mut cb] {
        let s = next(&mut watch(cl, c, 0).await, DEADLINE, "a new watch").await;
        assert_eq!(s.version, version);
    }
    wait_health(&a, ServingStatus::Serving, DEADLINE).await;
    wait_health(&b, ServingStatus::Serving, DEADLINE).await;

    // A manager started while the member is still down (its endpoint still
    // given) serves as well, and its pushes reach the others' watches.
    let late = etcd_manager(&etcd, &[]).await;
    let mut cl = client(&late).await;
    let mut all = vec![
        a.addr.to_string(),
        b.addr.to_string(),
        late.addr.to_string(),
    ];
    all.sort();
    assert_eq!(listed_managers(&late).await, all);
    let v = within(CALL_BOUND, "a round through the late manager", async {
        round(&mut cl, &mut ca, &a, c, &node).await
    })
    .await
    .unwrap_or_else(|e| panic!("a round through the late manager failed: {e}"));
    assert_eq!(v, version + 1);
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let s = next(stream, DEADLINE, &format!("{name}'s watch, late push")).await;
        assert_eq!(
            (s.version, s.data.as_ref()),
            (v, &meta(format!("v{v}").as_bytes())[..])
        );
    }
    eprintln!("killed leader m{leader}; the first full round succeeded after {recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mib_catalog_pushed_through_one_manager_reads_back_identical_through_another() {
    let etcd = EtcdCluster::start(3).await;
    let a = etcd_manager(&etcd, &["--max-message-size", "16MiB"]).await;
    let b = etcd_manager(&etcd, &[]).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let c = "big";
    // Valid meta.Data carrying 5 MiB in an unknown field (kept byte for byte).
    let first = meta(&noise(5 * MIB, 1));
    let second = meta(&noise(5 * MIB + 12_345, 2));

    let mut on_b = watch(&mut cb, c, 0).await;
    let pushed = within(
        RECOVERY,
        "a 5 MiB push",
        ca.push_meta(push_request(c, 0, &first)),
    )
    .await
    .expect("PushMeta of 5 MiB")
    .into_inner()
    .result;
    assert_eq!(pushed, Some(push_meta_response::Result::AcceptedVersion(1)));

    let s = get_meta(&mut cb, c).await;
    assert_eq!(s.version, 1);
    assert_same_bytes(&s.data, &first, "GetMeta through B");
    let s = next(&mut on_b, DEADLINE, "B's watch to see the 5 MiB push").await;
    assert_eq!(s.version, 1);
    assert_same_bytes(&s.data, &first, "B's watch");
    let r = http()
        .get(b.http_url(&format!("/clusters/{c}/versions/0")))
        .send()
        .await
        .expect("legacy read through B");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(1)));
    assert_same_bytes(
        &r.bytes().await.expect("body"),
        &first,
        "legacy read through B",
    );

    // And back: a legacy 5 MiB push through B, read through A.
    let mut on_a = watch(&mut ca, c, 1).await;
    let r = http()
        .post(b.http_url(&format!("/clusters/{c}/versions/1")))
        .body(second.clone())
        .send()
        .await
        .expect("legacy 5 MiB push through B");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(2)));
    let s = get_meta(&mut ca, c).await;
    assert_eq!(s.version, 2);
    assert_same_bytes(&s.data, &second, "GetMeta through A");
    let s = next(&mut on_a, DEADLINE, "A's watch to see B's 5 MiB push").await;
    assert_eq!(s.version, 2);
    assert_same_bytes(&s.data, &second, "A's watch");
}

type Check = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
) -> Result<(), String> {
    match result {
        Err(s) if s.code() == Code::Unavailable => Ok(()),
        other => Err(format!("{what}: expected UNAVAILABLE, got {other:?}")),
    }
}

async fn expect_503(what: &str, request: reqwest::RequestBuilder) -> Result<(), String> {
    match request.send().await {
        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => Ok(()),
        Ok(r) => Err(format!("{what}: expected 503, got {}", r.status())),
        Err(e) => Err(format!("{what}: expected 503, got {e}")),
    }
}

/// Every gRPC and legacy call of `m`, each expected to fail as unavailable.
fn unavailable_checks(m: &Manager, c: &Client, cluster: &str, node: &str) -> Vec<(String, Check)> {
    let mut checks: Vec<(String, Check)> = Vec::new();
    let mut add = |name: &str, check: Check| checks.push((format!("{} {name}", m.addr), check));
    let (cl, n) = (cluster.to_owned(), node.to_owned());
    {
        let (mut c, cl) = (c.clone(), cl.clone());
        add(
            "Register",
            Box::pin(async move {
                expect_unavailable("Register", c.register(registration(&cl, "", "late")).await)
            }),
        );
    }
    {
        let (mut c, cl, n) = (c.clone(), cl.clone(), n.clone());
        add(
            "Heartbeat",
            // Answered from memory until etcd has not confirmed the
            // manager's liveness lease for a few seconds.
            Box::pin(async move {
                loop {
                    match heartbeat(&mut c, &cl, &n).await {
                        Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
                        r => return expect_unavailable("Heartbeat", r),
                    }
                }
            }),
        );
    }
    {
        let (mut c, cl, n) = (c.clone(), cl.clone(), n.clone());
        add(
            "Deregister",
            Box::pin(async move {
                let r = deregister(&mut c, &cl, &n).await;
                expect_unavailable("Deregister", r)
            }),
        );
    }
    {
        let mut c = c.clone();
        add(
            "ListNodes",
            Box::pin(async move {
                expect_unavailable("ListNodes", c.list_nodes(ListNodesRequest::default()).await)
            }),
        );
    }
    {
        let mut c = c.clone();
        add(
            "ListClusters",
            Box::pin(async move {
                expect_unavailable(
                    "ListClusters",
                    c.list_clusters(ListClustersRequest {}).await,
                )
            }),
        );
    }
    {
        let (mut c, cl) = (c.clone(), cl.clone());
        add(
            "GetMeta",
            Box::pin(async move {
                expect_unavailable("GetMeta", c.get_meta(GetMetaRequest { cluster: cl }).await)
            }),
        );
    }
    {
        let (mut c, cl) = (c.clone(), cl.clone());
        add(
            "WatchMeta",
            Box::pin(async move {
                let r = c
                    .watch_meta(WatchMetaRequest {
                        cluster: cl,
                        version: 0,
                    })
                    .await;
                expect_unavailable("WatchMeta", r.map(|_| ()))
            }),
        );
    }
    {
        let (mut c, cl) = (c.clone(), cl.clone());
        add(
            "PushMeta",
            Box::pin(async move {
                expect_unavailable(
                    "PushMeta",
                    c.push_meta(push_request(&cl, 1, &meta(b"dark"))).await,
                )
            }),
        );
    }
    let legacy = [
        (
            "POST /nodes/{c}",
            http()
                .post(m.http_url(&format!("/nodes/{cl}")))
                .body(r#"{"ip": "10.0.0.9,", "hostname": "late"}"#),
        ),
        (
            "DELETE /nodes/{c}/{id}",
            http().delete(m.http_url(&format!("/nodes/{cl}/{n}"))),
        ),
        ("GET /nodes", http().get(m.http_url("/nodes"))),
        (
            "GET /nodes/{c}",
            http().get(m.http_url(&format!("/nodes/{cl}"))),
        ),
        (
            "GET /clusters/{c}/versions/{v}",
            http().get(m.http_url(&format!("/clusters/{cl}/versions/0"))),
        ),
        (
            "POST /clusters/{c}/versions/{v}",
            http()
                .post(m.http_url(&format!("/clusters/{cl}/versions/1")))
                .body(meta(b"dark")),
        ),
    ];
    for (name, request) in legacy {
        add(
            name,
            Box::pin(async move { expect_503(name, request).await }),
        );
    }
    // The legacy heartbeat, like the gRPC one, until the lease goes stale.
    let name = "PUT /nodes/{c}/{id}";
    let request = http().put(m.http_url(&format!("/nodes/{cl}/{n}")));
    add(
        name,
        Box::pin(async move {
            loop {
                let Some(attempt) = request.try_clone() else {
                    return Err(format!("{name}: cannot repeat the request"));
                };
                match attempt.send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    _ => return expect_503(name, request).await,
                }
            }
        }),
    );
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_all_of_etcd_fails_calls_fast_and_turns_health_not_serving_until_it_returns() {
    let mut etcd = EtcdCluster::start(3).await;
    let a = etcd_manager(&etcd, &[]).await;
    let b = etcd_manager(&etcd, &[]).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let c = "dark";
    let node = register(&mut ca, registration(c, "", "node-1")).await;
    assert_eq!(
        push(&mut ca, c, 0, &meta(b"v1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    // A watch on B held through the outage.
    let mut on_b = watch(&mut cb, c, 1).await;

    etcd.kill_all();
    let killed = Instant::now();

    // Every call of both managers answers UNAVAILABLE (legacy: 503), in time.
    let mut tasks = Vec::new();
    for (m, cl) in [(&a, &ca), (&b, &cb)] {
        for (name, check) in unavailable_checks(m, cl, c, &node) {
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let outcome = tokio::time::timeout(CALL_BOUND, check).await;
                (name, started.elapsed(), outcome)
            }));
        }
    }
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (name, took, outcome) = task.await.expect("check task");
        slowest = slowest.max(took);
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name}: no answer within {CALL_BOUND:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "with etcd gone:\n{}",
        failures.join("\n")
    );

    // Health turns NOT_SERVING (the process itself keeps answering).
    for m in [&a, &b] {
        wait_health(m, ServingStatus::NotServing, DEADLINE).await;
    }
    let not_serving = killed.elapsed();
    // The held watch was not ended by the outage.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), on_b.message())
            .await
            .is_err(),
        "the held watch should wait through the outage"
    );

    // etcd back on the same data: health SERVING, state intact, and the
    // held watch sees a push through the other manager.
    for i in 0..etcd.members.len() {
        etcd.restart(i).expect("restart an etcd member");
    }
    let restarted = Instant::now();
    etcd.wait_healthy(RECOVERY)
        .await
        .expect("etcd healthy again");
    for m in [&a, &b] {
        wait_health(m, ServingStatus::Serving, RECOVERY).await;
    }
    let serving = restarted.elapsed();
    let s = get_meta(&mut cb, c).await;
    assert_eq!((s.version, s.data.as_ref()), (1, &meta(b"v1")[..]));
    let nodes = cb
        .list_nodes(ListNodesRequest { cluster: c.into() })
        .await
        .expect("ListNodes after the outage")
        .into_inner()
        .nodes;
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, vec![node.as_str()]);
    heartbeat(&mut ca, c, &node)
        .await
        .expect("heartbeat after the outage");
    assert_eq!(
        push(&mut ca, c, 1, &meta(b"v2")).await,
        push_meta_response::Result::AcceptedVersion(2)
    );
    let s = next(
        &mut on_b,
        RECOVERY,
        "B's held watch to see A's push after the outage",
    )
    .await;
    assert_eq!((s.version, s.data.as_ref()), (2, &meta(b"v2")[..]));
    eprintln!(
        "calls answered within {slowest:?}; NOT_SERVING after {not_serving:?}; \
         SERVING {serving:?} after etcd restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_watches_open_exits_zero_promptly() {
    // A long grace, so a prompt exit proves nothing waited for it to run out.
    let mut etcd = EtcdCluster::start(3).await;
    let mut a = etcd_manager(&etcd, &["--shutdown-grace", "60s"]).await;
    let mut b = etcd_manager(&etcd, &["--shutdown-grace", "60s"]).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let c = "term";
    assert_eq!(
        push(&mut cb, c, 0, &meta(b"v1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    let mut behind = watch(&mut ca, c, 0).await;
    assert_eq!(
        next(&mut behind, DEADLINE, "the first snapshot")
            .await
            .version,
        1
    );
    let mut current = watch(&mut ca, c, 1).await;
    let poll = hold_long_poll(&a, c, 1, 2.0).await;

    let took = sigterm_ends_cleanly(
        &mut a,
        vec![("behind", &mut behind), ("current", &mut current)],
        poll,
        Duration::from_secs(10),
    )
    .await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // A left the manager list at once (its lease revoked, not run out).
    assert_eq!(listed_managers(&b).await, vec![b.addr.to_string()]);

    // With etcd gone too, SIGTERM still ends a manager promptly and cleanly.
    let mut on_b = watch(&mut cb, c, 1).await;
    etcd.kill_all();
    wait_health(&b, ServingStatus::NotServing, DEADLINE).await;
    let stopping = Instant::now();
    b.sigterm();
    match within(DEADLINE, "B's watch to end", on_b.message()).await {
        Ok(None) => {}
        other => panic!("B's watch should end cleanly, got {other:?}"),
    }
    let exit = b.wait_exit(Duration::from_secs(15)).await;
    let took_dark = stopping.elapsed();
    assert!(exit.success(), "exit status {exit} with etcd gone");
    assert!(
        took_dark < Duration::from_secs(10),
        "shutdown with etcd gone took {took_dark:?}"
    );
    eprintln!("SIGTERM exits: {took:?}; with etcd gone: {took_dark:?}");
}
