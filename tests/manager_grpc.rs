//! The `clusterflux.v1.Clusterflux` gRPC contract against a real
//! `cflux-manager` process on the embedded store: every RPC, its semantics
//! (DESIGN.md, "gRPC contract") and its error paths.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{
    push_meta_response, GetMetaRequest, ListNodesRequest, MetaSnapshot, PushMetaRequest,
    RegisterRequest, WatchMetaRequest, WatchNodesRequest, WatchNodesResponse,
};
use support::{
    deregister, get_meta, heartbeat, list_clusters, list_nodes, meta, push_request, register,
    scrape, wait_until, watch, within, Manager,
};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const DEADLINE: Duration = Duration::from_secs(10);

/// [`support::registration`] with an IPv6 address and a longer version.
fn registration(cluster: &str, node_id: &str, hostname: &str) -> RegisterRequest {
    RegisterRequest {
        ips: vec!["10.0.0.1".into(), "fe80::1".into()],
        version: "influxdb=1.8.10 cflux=test".into(),
        ..support::registration(cluster, node_id, hostname)
    }
}

async fn push(
    client: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    expected: u64,
    data: &[u8],
) -> Result<push_meta_response::Result, tonic::Status> {
    let response = client
        .push_meta(PushMetaRequest {
            node_id: "test".into(),
            ..push_request(cluster, expected, data)
        })
        .await?
        .into_inner();
    Ok(response
        .result
        .expect("a push answers accepted or conflict"))
}

async fn accepted(
    client: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    expected: u64,
    data: &[u8],
) -> u64 {
    match push(client, cluster, expected, data).await.expect("push") {
        push_meta_response::Result::AcceptedVersion(v) => v,
        push_meta_response::Result::Conflict(s) => {
            panic!("push on {expected} conflicted with version {}", s.version)
        }
    }
}

async fn next(stream: &mut Streaming<MetaSnapshot>) -> MetaSnapshot {
    within(DEADLINE, "the next snapshot on a watch", stream.message())
        .await
        .expect("the watch stream failed")
        .expect("the watch stream ended")
}

/// Asserts a watch sends nothing for a short window.
async fn assert_quiet(stream: &mut Streaming<MetaSnapshot>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("the watch should stay quiet, got {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_new_known_and_unknown_ids() {
    let m = Manager::start_with(&["--node-ttl", "7s", "--heartbeat-interval", "1500ms"]).await;
    let mut c = m.grpc_client().await;

    // Empty ID: a new unique ID, the peer address, the manager's timings.
    let first = c
        .register(registration("prod", "", "influx-1"))
        .await
        .expect("register")
        .into_inner();
    assert!(!first.node_id.is_empty());
    assert_eq!(first.bind_address, "127.0.0.1");
    assert_eq!(first.heartbeat_interval_ms, 1500);
    assert_eq!(first.ttl_ms, 7000);
    let second = c
        .register(registration("prod", "", "influx-2"))
        .await
        .expect("register")
        .into_inner();
    assert_ne!(
        first.node_id, second.node_id,
        "every new node gets its own ID"
    );

    let nodes = list_nodes(&mut c, "prod").await;
    assert_eq!(nodes.len(), 2);
    let n1 = nodes
        .iter()
        .find(|n| n.node_id == first.node_id)
        .expect("first node listed")
        .clone();
    assert_eq!(n1.cluster, "prod");
    assert_eq!(n1.hostname, "influx-1");
    assert_eq!(n1.ips, vec!["10.0.0.1", "fe80::1"]);
    assert_eq!(n1.bind_address, "127.0.0.1");
    assert_eq!(n1.http_addr, "10.0.0.1:8086");
    assert_eq!(n1.version, "influxdb=1.8.10 cflux=test");
    assert!(n1.alive);
    assert!(n1.registered_at_ms > 0);
    assert!(n1.last_heartbeat_ms >= n1.registered_at_ms);

    // Known ID: the same node again, registration time kept, details updated.
    wait_until(DEADLINE, "the clock to move on", || async {
        cflux::clock::now_ms() > n1.registered_at_ms + 5
    })
    .await;
    let mut again = registration("prod", &first.node_id, "influx-1-renamed");
    again.ips = vec!["10.0.0.9".into()];
    let again = c.register(again).await.expect("re-register").into_inner();
    assert_eq!(again.node_id, first.node_id);
    let nodes = list_nodes(&mut c, "prod").await;
    assert_eq!(nodes.len(), 2, "a known ID must not add a node");
    let n1b = nodes
        .iter()
        .find(|n| n.node_id == first.node_id)
        .expect("first node still listed");
    assert_eq!(n1b.registered_at_ms, n1.registered_at_ms);
    assert!(n1b.last_heartbeat_ms > n1.last_heartbeat_ms);
    assert_eq!(n1b.hostname, "influx-1-renamed");
    assert_eq!(n1b.ips, vec!["10.0.0.9"]);

    // Unknown ID: accepted and recreated under that ID (a manager that lost
    // its state heals).
    let healed = c
        .register(registration("prod", "node-from-before", "influx-3"))
        .await
        .expect("register with an unknown ID")
        .into_inner();
    assert_eq!(healed.node_id, "node-from-before");
    let nodes = list_nodes(&mut c, "prod").await;
    assert_eq!(nodes.len(), 3);
    assert!(nodes
        .iter()
        .any(|n| n.node_id == "node-from-before" && n.hostname == "influx-3" && n.alive));
    // The same ID in another cluster is another node.
    c.register(registration("staging", "node-from-before", "influx-3"))
        .await
        .expect("register in another cluster");
    assert_eq!(list_nodes(&mut c, "prod").await.len(), 3);
    assert_eq!(list_nodes(&mut c, "staging").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_and_deregister_of_unknown_nodes_are_not_found() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let id = register(&mut c, registration("prod", "", "influx-1")).await;

    heartbeat(&mut c, "prod", &id)
        .await
        .expect("heartbeat of a known node");

    let err = heartbeat(&mut c, "prod", "nobody")
        .await
        .expect_err("heartbeat of an unknown node");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nobody"), "{err:?}");
    // The right ID in the wrong cluster is unknown too.
    let err = heartbeat(&mut c, "other", &id)
        .await
        .expect_err("heartbeat in the wrong cluster");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let err = deregister(&mut c, "prod", "nobody")
        .await
        .expect_err("deregister of an unknown node");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(list_nodes(&mut c, "").await.len(), 1, "nothing changed");

    deregister(&mut c, "prod", &id).await.expect("deregister");
    assert!(list_nodes(&mut c, "prod").await.is_empty());
    let err = deregister(&mut c, "prod", &id)
        .await
        .expect_err("deregister twice");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = heartbeat(&mut c, "prod", &id)
        .await
        .expect_err("heartbeat after deregistration");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_cover_one_cluster_or_all() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    assert!(list_nodes(&mut c, "").await.is_empty());
    assert!(list_clusters(&mut c).await.is_empty());

    for (cluster, host) in [("a", "a1"), ("a", "a2"), ("b", "b1")] {
        c.register(registration(cluster, "", host))
            .await
            .expect("register");
    }
    // A cluster with a catalog and no nodes is a cluster too.
    accepted(&mut c, "c", 0, &meta(b"one")).await;
    accepted(&mut c, "c", 1, &meta(b"two")).await;
    accepted(&mut c, "a", 0, &meta(b"a-one")).await;

    let all = list_nodes(&mut c, "").await;
    let mut hosts: Vec<_> = all
        .iter()
        .map(|n| (n.cluster.as_str(), n.hostname.as_str()))
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec![("a", "a1"), ("a", "a2"), ("b", "b1")]);
    let a = list_nodes(&mut c, "a").await;
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|n| n.cluster == "a"));
    assert!(list_nodes(&mut c, "nobody-here").await.is_empty());

    let clusters = list_clusters(&mut c).await;
    let summary: Vec<_> = clusters
        .iter()
        .map(|c| (c.name.as_str(), c.version, c.nodes, c.alive_nodes))
        .collect();
    assert_eq!(
        summary,
        vec![("a", 1, 2, 2), ("b", 0, 1, 1), ("c", 2, 0, 0)],
        "{clusters:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_meta_of_a_cluster_never_written_is_version_zero() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let s = get_meta(&mut c, "fresh").await;
    assert_eq!(s.cluster, "fresh");
    assert_eq!(s.version, 0);
    assert!(s.data.is_empty());
    // Reading does not create the cluster.
    assert!(list_clusters(&mut c).await.is_empty());

    accepted(&mut c, "fresh", 0, &meta(b"catalog-1")).await;
    let s = get_meta(&mut c, "fresh").await;
    assert_eq!((s.version, s.data.as_ref()), (1, &meta(b"catalog-1")[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_a_compare_and_swap() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;

    assert_eq!(accepted(&mut c, "prod", 0, &meta(b"v1")).await, 1);

    // A stale expected version: nothing changes and the current snapshot comes back.
    for stale in [0, 2, 99] {
        match push(&mut c, "prod", stale, &meta(b"lost"))
            .await
            .expect("push")
        {
            push_meta_response::Result::Conflict(s) => {
                assert_eq!(s.cluster, "prod");
                assert_eq!(s.version, 1);
                assert_eq!(s.data.as_ref(), &meta(b"v1"));
            }
            other => panic!("push on {stale} must conflict, got {other:?}"),
        }
    }
    let s = get_meta(&mut c, "prod").await;
    assert_eq!((s.version, s.data.as_ref()), (1, &meta(b"v1")[..]));

    assert_eq!(accepted(&mut c, "prod", 1, &meta(b"v2")).await, 2);
    // Zero bytes are no meta.Data: refused, nothing changes.
    let refused = push(&mut c, "prod", 2, b"").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let s = get_meta(&mut c, "prod").await;
    assert_eq!((s.version, s.data.as_ref()), (2, &meta(b"v2")[..]));
    // Clusters are independent.
    assert_eq!(get_meta(&mut c, "other").await.version, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_the_current_snapshot_at_once_when_versions_differ() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    accepted(&mut c, "prod", 0, &meta(b"v1")).await;
    accepted(&mut c, "prod", 1, &meta(b"v2")).await;

    // Behind: the current snapshot at once (not every version in between).
    let mut behind = watch(&mut c, "prod", 0).await;
    let s = next(&mut behind).await;
    assert_eq!(
        (s.cluster.as_str(), s.version, s.data.as_ref()),
        ("prod", 2, &meta(b"v2")[..])
    );
    assert_quiet(&mut behind).await;

    // Ahead (the manager lost its state): the manager's snapshot at once, so
    // the node can re-seed it.
    let mut ahead = watch(&mut c, "prod", 7).await;
    assert_eq!(next(&mut ahead).await.version, 2);
    let mut fresh = watch(&mut c, "never-written", 3).await;
    let s = next(&mut fresh).await;
    assert_eq!((s.version, s.data.is_empty()), (0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_waits_while_current_then_streams_every_change_to_every_watcher() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    accepted(&mut c, "prod", 0, &meta(b"v1")).await;

    let mut watchers = Vec::new();
    for _ in 0..3 {
        // Each watcher on its own connection, as separate nodes would be.
        let mut wc = m.grpc_client().await;
        watchers.push(watch(&mut wc, "prod", 1).await);
    }
    // A never-written cluster watched at version 0 is current too.
    let mut empty = watch(&mut c, "empty", 0).await;
    for w in &mut watchers {
        assert_quiet(w).await;
    }
    assert_quiet(&mut empty).await;

    for version in 2..=4u64 {
        let data = format!("v{version}");
        assert_eq!(
            accepted(&mut c, "prod", version - 1, &meta(data.as_bytes())).await,
            version
        );
        for w in &mut watchers {
            let s = next(w).await;
            assert_eq!(
                (s.version, s.data.as_ref()),
                (version, &meta(data.as_bytes())[..])
            );
        }
    }
    // A push to another cluster wakes nobody here; a push to "empty" does.
    accepted(&mut c, "other", 0, &meta(b"x")).await;
    for w in &mut watchers {
        assert_quiet(w).await;
    }
    accepted(&mut c, "empty", 0, &meta(b"first")).await;
    let s = next(&mut empty).await;
    assert_eq!((s.cluster.as_str(), s.version), ("empty", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_and_changes_nothing() {
    let m = Manager::start_with(&["--max-message-size", "1KiB"]).await;
    let mut c = m.grpc_client().await;
    let long = "x".repeat(129);
    let bad_names = [
        "",
        long.as_str(),
        "a\nb",
        "tab\there",
        "bell\u{7}",
        "del\u{7f}",
    ];

    for name in bad_names {
        let expect_invalid = |what: &str, r: Result<(), tonic::Status>| {
            let err = r.expect_err(&format!("{what} with cluster {name:?} must fail"));
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{what} {name:?}: {err:?}"
            );
            assert!(
                err.message().contains("cluster name"),
                "{what} {name:?}: unclear message {:?}",
                err.message()
            );
        };
        expect_invalid(
            "Register",
            c.register(registration(name, "", "h")).await.map(drop),
        );
        expect_invalid("Heartbeat", heartbeat(&mut c, name, "n").await);
        expect_invalid("Deregister", deregister(&mut c, name, "n").await);
        expect_invalid(
            "GetMeta",
            c.get_meta(GetMetaRequest {
                cluster: name.into(),
            })
            .await
            .map(drop),
        );
        expect_invalid(
            "WatchMeta",
            c.watch_meta(WatchMetaRequest {
                cluster: name.into(),
                version: 0,
            })
            .await
            .map(drop),
        );
        expect_invalid(
            "PushMeta",
            push(&mut c, name, 0, &meta(b"data")).await.map(drop),
        );
        if !name.is_empty() {
            // Empty means "every cluster" for ListNodes.
            expect_invalid(
                "ListNodes",
                c.list_nodes(ListNodesRequest {
                    cluster: name.into(),
                })
                .await
                .map(drop),
            );
        }
    }

    for hostname in ["", "   "] {
        let err = c
            .register(registration("prod", "", hostname))
            .await
            .expect_err("a registration without hostname");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("hostname"), "{err:?}");
    }
    let err = c
        .register(registration("prod", "a/b", "h"))
        .await
        .expect_err("a node ID with '/'");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Over --max-message-size: refused with the limit named.
    let err = push(&mut c, "prod", 0, &[7u8; 1025])
        .await
        .expect_err("a catalog over the limit");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("1024"), "{err:?}");
    // Far over it, beyond the gRPC message limit too, tonic's decoder refuses
    // it before the manager sees it: OUT_OF_RANGE (RESOURCE_EXHAUSTED in other
    // gRPC stacks), still with the limit named.
    let err = push(&mut c, "prod", 0, &vec![7u8; 512 * 1024])
        .await
        .expect_err("a catalog far over the limit");
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
        ),
        "{err:?}"
    );
    assert!(err.message().contains("limit"), "{err:?}");

    // Nothing of the above left a trace.
    assert!(list_nodes(&mut c, "").await.is_empty());
    assert!(list_clusters(&mut c).await.is_empty());
    assert_eq!(get_meta(&mut c, "prod").await.version, 0);

    // The boundaries themselves are accepted.
    let max_name = "n".repeat(128);
    c.register(registration(&max_name, "", "h"))
        .await
        .expect("a 128-byte cluster name");
    c.register(registration("ünïcode · cluster/1", "", "h"))
        .await
        .expect("a UTF-8 cluster name");
    // Exactly at the limit: 1008 tagged bytes make a 1024-byte meta.Data.
    assert_eq!(accepted(&mut c, "prod", 0, &meta(&[7u8; 1008])).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_swap_writers_lose_no_update() {
    const WRITERS: usize = 20;
    const PUSHES: usize = 10;
    let m = Manager::start().await;

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = m.grpc_client().await;
        tasks.push(tokio::spawn(async move {
            // (accepted version, the data that version holds)
            let mut mine = Vec::new();
            let mut conflicts = 0usize;
            let mut base = get_meta(&mut c, "race").await.version;
            while mine.len() < PUSHES {
                let data = format!("writer {w} push {} on {base}", mine.len());
                match push(&mut c, "race", base, &meta(data.as_bytes()))
                    .await
                    .expect("push")
                {
                    push_meta_response::Result::AcceptedVersion(v) => {
                        assert_eq!(v, base + 1, "accepted as expected_version + 1");
                        mine.push((v, data));
                        base = v;
                    }
                    push_meta_response::Result::Conflict(current) => {
                        assert_ne!(current.version, base, "a conflict on the current version");
                        conflicts += 1;
                        // Alternate the two ways a node learns the current
                        // version: the conflict's snapshot and a fresh read.
                        base = if conflicts.is_multiple_of(2) {
                            current.version
                        } else {
                            get_meta(&mut c, "race").await.version
                        };
                    }
                }
            }
            (mine, conflicts)
        }));
    }
    let mut all = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (mine, n) = within(Duration::from_secs(60), "the writers", t)
            .await
            .expect("a writer panicked");
        all.extend(mine);
        conflicts += n;
    }

    let total = WRITERS * PUSHES;
    assert_eq!(all.len(), total);
    let versions: HashSet<u64> = all.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions.len(), total, "two pushes accepted as one version");
    assert_eq!(versions, (1..=total as u64).collect::<HashSet<_>>());
    let mut c = m.grpc_client().await;
    let last = get_meta(&mut c, "race").await;
    assert_eq!(last.version, total as u64, "an accepted update was lost");
    let (_, expected) = all
        .iter()
        .find(|(v, _)| *v == total as u64)
        .expect("someone pushed the last version");
    assert_eq!(last.data.as_ref(), &meta(expected.as_bytes())[..]);
    assert!(conflicts > 0, "20 writers should have raced at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_marks_a_node_dead_and_a_heartbeat_revives_it() {
    let m = Manager::start_with(&["--node-ttl", "1s", "--heartbeat-interval", "200ms"]).await;
    let mut c = m.grpc_client().await;
    let id = register(&mut c, registration("prod", "", "influx-1")).await;
    let keeper = register(&mut c, registration("prod", "", "influx-2")).await;
    assert!(list_nodes(&mut c, "prod").await.iter().all(|n| n.alive));

    // influx-2 keeps heartbeating; influx-1 goes silent.
    let stop = tokio_util::sync::CancellationToken::new();
    let beating = {
        let mut c = m.grpc_client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                heartbeat(&mut c, "prod", &keeper).await.expect("heartbeat");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    };

    let mut lc = c.clone();
    wait_until(DEADLINE, "influx-1 listed dead after its TTL", || {
        let mut c = lc.clone();
        let id = id.clone();
        async move {
            list_nodes(&mut c, "prod")
                .await
                .iter()
                .any(|n| n.node_id == id && !n.alive)
        }
    })
    .await;
    // Dead, but still listed; the heartbeating node stays alive.
    let nodes = list_nodes(&mut lc, "prod").await;
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        assert_eq!(n.alive, n.hostname == "influx-2", "{n:?}");
    }
    let info = list_clusters(&mut c).await;
    assert_eq!((info[0].nodes, info[0].alive_nodes), (2, 1), "{info:?}");

    // A heartbeat revives it at once.
    heartbeat(&mut c, "prod", &id)
        .await
        .expect("heartbeat of a dead node");
    let nodes = list_nodes(&mut c, "prod").await;
    assert!(nodes.iter().all(|n| n.alive), "{nodes:?}");
    stop.cancel();
    beating.await.expect("heartbeat task");
}

/// The next node list of a node watch, as `hostname:alive|dead`.
async fn next_nodes(stream: &mut Streaming<WatchNodesResponse>) -> Vec<String> {
    let list = within(DEADLINE, "the next list on a node watch", stream.message())
        .await
        .expect("the node watch failed")
        .expect("the node watch ended");
    list.nodes
        .iter()
        .map(|n| format!("{}:{}", n.hostname, if n.alive { "alive" } else { "dead" }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_nodes_sends_the_list_at_once_then_every_change_of_membership() {
    let m = Manager::start_with(&["--node-ttl", "1s", "--heartbeat-interval", "200ms"]).await;
    let mut c = m.grpc_client().await;
    let a = register(&mut c, registration("prod", "", "influx-1")).await;
    let watch = |cluster: &str| WatchNodesRequest {
        cluster: cluster.into(),
    };
    let mut prod = c
        .watch_nodes(watch("prod"))
        .await
        .expect("WatchNodes")
        .into_inner();
    assert_eq!(next_nodes(&mut prod).await, ["influx-1:alive"]);
    let mut every = c
        .watch_nodes(watch(""))
        .await
        .expect("WatchNodes")
        .into_inner();
    assert_eq!(next_nodes(&mut every).await, ["influx-1:alive"]);
    let err = c
        .watch_nodes(watch("bad\ncluster"))
        .await
        .expect_err("a bad cluster name");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let metrics = scrape(&m).await;
    assert!(metrics.contains("cflux_node_watch_streams 2"), "{metrics}");

    // A registration is sent at once, as is a node of another cluster to
    // the watch of every cluster.
    let b = register(&mut c, registration("prod", "", "influx-2")).await;
    let mut both = next_nodes(&mut prod).await;
    both.sort();
    assert_eq!(both, ["influx-1:alive", "influx-2:alive"]);
    register(&mut c, registration("staging", "", "influx-3")).await;
    let mut all = Vec::new();
    while all.len() < 3 {
        all = next_nodes(&mut every).await;
    }
    all.sort();
    assert_eq!(all, ["influx-1:alive", "influx-2:alive", "influx-3:alive"]);

    // influx-1 keeps beating, influx-2 falls silent: its death is the next
    // list, its heartbeat brings it back, its deregistration removes it.
    let beating = tokio::spawn({
        let mut c = c.clone();
        async move {
            loop {
                heartbeat(&mut c, "prod", &a).await.expect("heartbeat");
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    });
    let mut dead = next_nodes(&mut prod).await;
    dead.sort();
    assert_eq!(dead, ["influx-1:alive", "influx-2:dead"]);
    heartbeat(&mut c, "prod", &b).await.expect("heartbeat");
    let mut back = next_nodes(&mut prod).await;
    back.sort();
    assert_eq!(back, ["influx-1:alive", "influx-2:alive"]);
    deregister(&mut c, "prod", &b).await.expect("deregister");
    assert_eq!(next_nodes(&mut prod).await, ["influx-1:alive"]);
    beating.abort();

    drop((prod, every));
    wait_until(DEADLINE, "the node watch gauge back to 0", || async {
        scrape(&m).await.contains("cflux_node_watch_streams 0")
    })
    .await;
}
