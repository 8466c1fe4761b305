//! `cfluxctl` against a real manager: listings, the catalog in words and in
//! JSON, deregistration (refused for a live node without `--force`), clear
//! failures for an unknown node or cluster, backup and restore, the sync
//! state of nodes in `nodes` and `status` (with its exit code), and deleting
//! a cluster (refused while a node is alive), on the embedded store and etcd.

mod support;

use std::process::Output;
use std::time::Duration;

use cflux::influx::catalog::{Catalog, Database, RetentionPolicy, User};
use cflux::proto::{
    DeleteClusterRequest, GetMetaRequest, HeartbeatRequest, ListHistoryRequest, PushMetaRequest,
    RegisterRequest, SyncState, WatchMetaRequest,
};
use support::agent::{start_nodes, AgentOptions};
use support::etcd::EtcdCluster;
use support::influxd::InfluxdOptions;
use support::{eventually, wait_until, Manager};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON document a successful `-o json` command printed.
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {o:?}"))
}

/// A cluster `prod` with one node (`influx-a`) and a catalog of one
/// database and one admin user at version 1; returns the node's ID.
async fn prod_cluster(manager: &Manager) -> String {
    let mut grpc = manager.grpc_client().await;
    let node = grpc
        .register(RegisterRequest {
            cluster: "prod".into(),
            hostname: "influx-a".into(),
            http_addr: "10.0.0.1:8086".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let mut catalog = Catalog::default();
    let mut db = Database::new("metrics", "week");
    db.retention_policies.insert(
        "week".into(),
        RetentionPolicy::new("week", 7 * 24 * 3_600_000_000_000, 3_600_000_000_000, 1),
    );
    catalog.databases.insert("metrics".into(), db);
    catalog
        .users
        .insert("ops".into(), User::new("ops", "$2a$10$secret-hash", true));
    grpc.push_meta(PushMetaRequest {
        cluster: "prod".into(),
        expected_version: 0,
        data: catalog.to_meta_bytes().into(),
        node_id: node.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    node
}

#[tokio::test]
async fn cfluxctl_lists_shows_and_deregisters() {
    let manager = Manager::start().await;
    let node = prod_cluster(&manager).await;

    let nodes = manager.ctl(&["nodes", "--cluster", "prod"]);
    assert!(nodes.status.success(), "{nodes:?}");
    let text = stdout(&nodes);
    assert!(
        text.contains(&node) && text.contains("influx-a") && text.contains("alive"),
        "{text}"
    );

    let clusters = stdout(&manager.ctl(&["clusters"]));
    let row = clusters
        .lines()
        .find(|l| l.starts_with("prod"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["prod", "1", "1", "1"],
        "{clusters}"
    );

    let shown = stdout(&manager.ctl(&["catalog", "--cluster", "prod"]));
    assert!(shown.contains("cluster prod version 1"), "{shown}");
    assert!(
        shown.contains("database metrics (default policy week)"),
        "{shown}"
    );
    assert!(shown.contains("policy week duration 1w"), "{shown}");
    assert!(shown.contains("user ops (admin)"), "{shown}");
    assert!(
        !shown.contains("secret-hash"),
        "hashes must never be printed: {shown}"
    );

    let unknown = manager.ctl(&["deregister", "--cluster", "prod", "no-such-node"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not registered"),
        "{unknown:?}"
    );

    // The node is alive: its agent would register it again at once.
    let alive = manager.ctl(&["deregister", "--cluster", "prod", &node]);
    assert!(!alive.status.success(), "{alive:?}");
    assert!(
        stderr(&alive).contains("is alive") && stderr(&alive).contains("--force"),
        "{alive:?}"
    );
    assert!(stdout(&manager.ctl(&["nodes"])).contains(&node));

    let gone = manager.ctl(&["deregister", "--cluster", "prod", "--force", &node]);
    assert!(gone.status.success(), "{gone:?}");
    assert!(stdout(&gone).contains("removed"), "{gone:?}");
    assert!(!stdout(&manager.ctl(&["nodes"])).contains(&node));
}

/// `prod`'s node `influx-a` heartbeats, reporting `sync` (nothing: `None`).
async fn report(manager: &Manager, node: &str, sync: Option<SyncState>) {
    manager
        .grpc_client()
        .await
        .heartbeat(HeartbeatRequest {
            cluster: "prod".into(),
            node_id: node.into(),
            sync,
        })
        .await
        .expect("heartbeat");
}

fn sync_state(applied_version: u64, history_id: &str, sync_error: &str) -> SyncState {
    SyncState {
        applied_version,
        applied_history_id: history_id.into(),
        sync_error: sync_error.into(),
        ..SyncState::default()
    }
}

#[tokio::test]
async fn nodes_and_status_show_who_is_behind_or_failing() {
    let manager = Manager::start().await;
    let node = prod_cluster(&manager).await;
    let history = support::get_meta(&mut manager.grpc_client().await, "prod")
        .await
        .history_id;
    let status = |args: &[&str]| {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        manager.ctl(&all)
    };

    // Registered, nothing reported yet: unknown, which is no alarm.
    let unknown = json(&manager.ctl(&["-o", "json", "nodes"]));
    assert_eq!(unknown[0]["sync"], "unknown", "{unknown}");
    assert_eq!(unknown[0]["lag"], serde_json::Value::Null, "{unknown}");
    assert_eq!(status(&[]).status.code(), Some(0));

    report(&manager, &node, Some(sync_state(1, &history, ""))).await;
    let in_sync = json(&manager.ctl(&["-o", "json", "nodes", "--cluster", "prod"]));
    assert_eq!(in_sync[0]["sync"], "in_sync", "{in_sync}");
    assert_eq!(in_sync[0]["applied_version"], 1, "{in_sync}");
    assert_eq!(in_sync[0]["lag"], 0, "{in_sync}");
    let ok = status(&[]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let text = stdout(&ok);
    let row = text
        .lines()
        .find(|l| l.starts_with("prod"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().take(7).collect::<Vec<_>>(),
        ["prod", "1", "1", "1", "0", "0", "0"],
        "{text}"
    );
    assert!(
        row.contains("v1") && row.contains("influx-a") && row.contains("initial catalog"),
        "the last change, who and what: {text}"
    );
    assert!(text.contains("every node is alive and in sync"), "{text}");

    // A failing apply: behind by one version, with the reason.
    let mut grpc = manager.grpc_client().await;
    grpc.push_meta(PushMetaRequest {
        cluster: "prod".into(),
        expected_version: 1,
        data: Catalog::default().to_meta_bytes().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let refused = "pull: influxd refused CREATE CONTINUOUS QUERY cq1";
    report(&manager, &node, Some(sync_state(1, &history, refused))).await;
    let table = stdout(&manager.ctl(&["nodes"]));
    let row = table
        .lines()
        .find(|l| l.contains(&node))
        .unwrap_or_default();
    assert!(
        row.contains(" 1 ") && row.contains("failing") && row.contains(refused),
        "applied version, lag, mark and reason: {table}"
    );
    let failing = status(&["prod"]);
    assert_eq!(failing.status.code(), Some(3), "{failing:?}");
    assert!(
        stdout(&failing).contains(&format!("failing: {refused}")),
        "{failing:?}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&status(&["-o", "json"]).stdout).unwrap();
    assert_eq!(doc["in_sync"], false, "{doc}");
    assert_eq!(doc["clusters"][0]["failing"], 1, "{doc}");
    assert_eq!(doc["clusters"][0]["last_change"]["version"], 2, "{doc}");

    // Behind without an error, then on another history: behind either way.
    report(&manager, &node, Some(sync_state(1, &history, ""))).await;
    let behind = status(&[]);
    assert_eq!(behind.status.code(), Some(3), "{behind:?}");
    assert!(stdout(&behind).contains("behind by 1"), "{behind:?}");
    report(&manager, &node, Some(sync_state(7, "an-old-history", ""))).await;
    let elsewhere = json(&manager.ctl(&["-o", "json", "nodes"]));
    assert_eq!(elsewhere[0]["sync"], "behind", "{elsewhere}");
    assert_eq!(elsewhere[0]["lag"], serde_json::Value::Null, "{elsewhere}");
    assert_eq!(status(&[]).status.code(), Some(3));

    // In sync, but a deletion it took is not on every node yet.
    let deleting = SyncState {
        queued_statements: 2,
        ..sync_state(2, &history, "")
    };
    report(&manager, &node, Some(deleting)).await;
    let differ = status(&[]);
    assert_eq!(differ.status.code(), Some(3), "{differ:?}");
    assert!(
        stdout(&differ).contains("2 statement(s) that change points"),
        "{differ:?}"
    );

    // Caught up.
    report(&manager, &node, Some(sync_state(2, &history, ""))).await;
    assert_eq!(status(&[]).status.code(), Some(0));

    let nope = status(&["nope"]);
    assert_eq!(nope.status.code(), Some(1), "{nope:?}");
    assert!(stderr(&nope).contains("does not exist"), "{nope:?}");
}

#[tokio::test]
async fn every_command_names_the_clusters_that_exist() {
    let manager = Manager::start().await;
    let fresh = manager.ctl(&["catalog", "--cluster", "prod"]);
    assert_eq!(fresh.status.code(), Some(1), "{fresh:?}");
    assert!(
        stderr(&fresh).contains(r#"cluster "prod" does not exist; no clusters yet"#),
        "{fresh:?}"
    );
    assert!(stdout(&fresh).is_empty(), "{fresh:?}");

    prod_cluster(&manager).await;
    for args in [
        &["catalog", "--cluster", "nope"][..],
        &["nodes", "--cluster", "nope"],
        &["watch", "--cluster", "nope"],
        &["backup", "--cluster", "nope", "/nonexistent/backup.json"],
        &["deregister", "--cluster", "nope", "some-node"],
        &["-o", "json", "catalog", "--cluster", "nope"],
        &["delete-cluster", "nope", "--yes"],
    ] {
        let out = manager.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            stderr(&out).contains(r#"cluster "nope" does not exist; clusters: prod"#),
            "{args:?}: {out:?}"
        );
    }

    // CLUSTER chooses the cluster, as for the agent.
    let from_env = manager.ctl_in(Some("prod"), &["catalog"]);
    assert!(
        stdout(&from_env).contains("cluster prod version 1"),
        "{from_env:?}"
    );
    let unknown_env = manager.ctl_in(Some("nope"), &["catalog"]);
    assert!(
        stderr(&unknown_env).contains("does not exist"),
        "{unknown_env:?}"
    );
}

#[tokio::test]
async fn json_output_for_scripts() {
    let manager = Manager::start().await;
    let node = prod_cluster(&manager).await;

    let clusters = json(&manager.ctl(&["-o", "json", "clusters"]));
    assert_eq!(
        clusters,
        serde_json::json!([{"name": "prod", "version": 1, "nodes": 1, "alive_nodes": 1}])
    );

    let nodes = json(&manager.ctl(&["--output", "json", "nodes"]));
    assert_eq!(nodes[0]["node_id"], node.as_str(), "{nodes}");
    assert_eq!(nodes[0]["hostname"], "influx-a", "{nodes}");
    assert_eq!(nodes[0]["alive"], true, "{nodes}");

    let out = manager.ctl(&["-o", "json", "catalog", "--cluster", "prod"]);
    assert!(
        !stdout(&out).contains("secret-hash"),
        "hashes are never printed: {out:?}"
    );
    let catalog = json(&out);
    assert_eq!(catalog["version"], 1, "{catalog}");
    assert_eq!(
        catalog["catalog"]["databases"]["metrics"]["default_retention_policy"], "week",
        "{catalog}"
    );
    assert_eq!(
        catalog["catalog"]["users"]["ops"]["admin"], true,
        "{catalog}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prod.json");
    let saved = json(&manager.ctl(&[
        "-o",
        "json",
        "backup",
        "--cluster",
        "prod",
        file.to_str().unwrap(),
    ]));
    assert_eq!(saved["version"], 1, "{saved}");

    let removed = json(&manager.ctl(&[
        "-o",
        "json",
        "deregister",
        "--cluster",
        "prod",
        "--force",
        &node,
    ]));
    assert_eq!(removed["node_id"], node.as_str(), "{removed}");
    assert_eq!(removed["was_alive"], true, "{removed}");

    let failed = manager.ctl(&["-o", "json", "catalog", "--cluster", "nope"]);
    assert!(
        !failed.status.success() && stdout(&failed).is_empty(),
        "{failed:?}"
    );
}

#[tokio::test]
async fn backup_restores_onto_a_fresh_manager_and_over_a_changed_cluster() {
    let manager = Manager::start().await;
    prod_cluster(&manager).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prod.json");
    let path = file.to_str().unwrap();
    let backed_up = manager.ctl(&["backup", "--cluster", "prod", path]);
    assert!(backed_up.status.success(), "{backed_up:?}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["format"], "cflux-backup/1", "{written}");
    assert_eq!(written["cluster"], "prod", "{written}");
    assert_eq!(written["version"], 1, "{written}");
    assert!(
        written["taken_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{written}"
    );
    let original = support::get_meta(&mut manager.grpc_client().await, "prod").await;

    // The file is kept, not overwritten, unless asked.
    let again = manager.ctl(&["backup", "--cluster", "prod", path]);
    assert!(
        !again.status.success() && stderr(&again).contains("--overwrite"),
        "{again:?}"
    );

    // Onto a fresh manager: the same bytes, as version 1.
    let fresh = Manager::start().await;
    let restored = json(&fresh.ctl(&["-o", "json", "restore", path]));
    assert_eq!(restored["cluster"], "prod", "{restored}");
    assert_eq!(restored["version"], 1, "{restored}");
    let copy = support::get_meta(&mut fresh.grpc_client().await, "prod").await;
    assert_eq!((copy.version, &copy.data), (1, &original.data));

    // Over a cluster that changed since: a new version holding the backup,
    // after a confirmation that a script gives with --yes.
    let mut grpc = manager.grpc_client().await;
    let mut changed = Catalog::from_meta_bytes(&original.data).unwrap();
    changed
        .databases
        .insert("scratch".into(), Database::new("scratch", ""));
    support::push(&mut grpc, "prod", 1, &changed.to_meta_bytes()).await;
    let unconfirmed = manager.ctl(&["restore", path]);
    assert!(!unconfirmed.status.success(), "{unconfirmed:?}");
    assert!(
        stderr(&unconfirmed).contains("--yes") && stderr(&unconfirmed).contains("scratch"),
        "the question names what the restore drops: {unconfirmed:?}"
    );
    assert_eq!(support::get_meta(&mut grpc, "prod").await.version, 2);
    let over = json(&manager.ctl(&["-o", "json", "restore", "--yes", path]));
    assert_eq!(over["version"], 3, "{over}");
    assert_eq!(
        over["databases_dropped"],
        serde_json::json!(["scratch"]),
        "{over}"
    );
    let now = support::get_meta(&mut grpc, "prod").await;
    assert_eq!((now.version, &now.data), (3, &original.data));

    // Another cluster only when asked for; never a file that is not a backup.
    let elsewhere = fresh.ctl(&["restore", "--cluster", "staging", path]);
    assert!(
        stderr(&elsewhere).contains("--other-cluster"),
        "{elsewhere:?}"
    );
    let renamed = fresh.ctl(&["restore", "--cluster", "staging", "--other-cluster", path]);
    assert!(renamed.status.success(), "{renamed:?}");
    assert_eq!(
        support::get_meta(&mut fresh.grpc_client().await, "staging")
            .await
            .version,
        1
    );
    let mut broken = written.clone();
    broken["catalog_base64"] = "bm90IG1ldGEuRGF0YQ==".into();
    for (name, text) in [
        ("garbage.json", "not json".to_owned()),
        ("broken.json", broken.to_string()),
    ] {
        let bad = dir.path().join(name);
        std::fs::write(&bad, text).unwrap();
        let refused = fresh.ctl(&["restore", "--yes", bad.to_str().unwrap()]);
        assert!(!refused.status.success(), "{name}: {refused:?}");
    }
    assert_eq!(
        support::get_meta(&mut fresh.grpc_client().await, "prod")
            .await
            .version,
        1
    );
}

/// How long a node stays alive in the deletion tests: short, so its TTL
/// runs out soon (etcd's minimum lease, 2 s).
const SHORT_TTL: &str = "2s";

/// `delete-cluster` is refused while a node is alive (naming it), asks for
/// the name without `--yes` (and refuses without a terminal), then removes
/// the catalog, the history and the dead node; a watch of it ends; the
/// name starts afresh; the RPC answers FAILED_PRECONDITION and NOT_FOUND.
async fn deleting_a_cluster(manager: Manager) {
    let node = prod_cluster(&manager).await;
    let mut grpc = manager.grpc_client().await;
    let delete = |cluster: &str| DeleteClusterRequest {
        cluster: cluster.into(),
    };

    let alive = manager.ctl(&["delete-cluster", "prod", "--yes"]);
    assert_eq!(alive.status.code(), Some(1), "{alive:?}");
    assert!(
        stderr(&alive).contains("alive") && stderr(&alive).contains(&node),
        "{alive:?}"
    );
    let refused = grpc.delete_cluster(delete("prod")).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains(&node), "{refused:?}");
    assert!(stdout(&manager.ctl(&["clusters"])).contains("prod"));

    wait_until(
        std::time::Duration::from_secs(20),
        "the node listed dead",
        || {
            let out = manager.ctl(&["-o", "json", "clusters"]);
            async move { json(&out)[0]["alive_nodes"] == 0 }
        },
    )
    .await;
    let mut watch = grpc
        .watch_meta(WatchMetaRequest {
            cluster: "prod".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().version, 1);

    // No terminal and no --yes: nothing happens.
    let unconfirmed = manager.ctl(&["delete-cluster", "prod"]);
    assert_eq!(unconfirmed.status.code(), Some(1), "{unconfirmed:?}");
    assert!(stderr(&unconfirmed).contains("--yes"), "{unconfirmed:?}");
    assert!(stdout(&manager.ctl(&["clusters"])).contains("prod"));

    let deleted = json(&manager.ctl(&["-o", "json", "delete-cluster", "prod", "--yes"]));
    assert_eq!(
        deleted,
        serde_json::json!({"cluster": "prod", "version": 1, "removed_nodes": 1, "removed_versions": 1})
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), watch.message())
        .await
        .expect("the watch ends");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    assert_eq!(
        json(&manager.ctl(&["-o", "json", "clusters"])),
        serde_json::json!([])
    );
    let meta = grpc
        .get_meta(GetMetaRequest {
            cluster: "prod".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((meta.version, meta.data.len()), (0, 0));
    let history = grpc
        .list_history(ListHistoryRequest {
            cluster: "prod".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.changes.is_empty(), "{history:?}");
    let again = manager.ctl(&["delete-cluster", "prod", "--yes"]);
    assert!(
        stderr(&again).contains(r#"cluster "prod" does not exist; no clusters yet"#),
        "{again:?}"
    );
    let unknown = grpc.delete_cluster(delete("prod")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // The name starts afresh.
    prod_cluster(&manager).await;
    let row = json(&manager.ctl(&["-o", "json", "clusters"]));
    assert_eq!(row[0]["version"], 1, "{row}");
}

#[tokio::test]
async fn delete_cluster_on_the_embedded_store() {
    deleting_a_cluster(
        Manager::start_with(&["--node-ttl", SHORT_TTL, "--heartbeat-interval", "500ms"]).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_cluster_on_etcd() {
    let etcd = EtcdCluster::start(1).await;
    let endpoints = etcd.endpoints().join(",");
    let manager = Manager::start_with(&[
        "--etcd-endpoints",
        &endpoints,
        "--node-ttl",
        SHORT_TTL,
        "--heartbeat-interval",
        "500ms",
    ])
    .await;
    deleting_a_cluster(manager).await;
}

/// The cluster's catalog as the manager holds it: version, history, catalog.
async fn manager_catalog(manager: &Manager, cluster: &str) -> (u64, String, Catalog) {
    let mut grpc = manager.grpc_client().await;
    let s = support::get_meta(&mut grpc, cluster).await;
    let catalog = if s.data.is_empty() {
        Catalog::default()
    } else {
        Catalog::from_meta_bytes(&s.data).expect("a valid catalog")
    };
    (s.version, s.history_id, catalog)
}

/// A node whose cluster was deleted while it was down — with a local
/// change made meanwhile, so the first thing it does is a push that
/// conflicts with the empty cluster — keeps every database and user and
/// re-seeds the cluster from its own catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_a_deleted_cluster_comes_back_and_reseeds_it() {
    let manager =
        Manager::start_with(&["--node-ttl", SHORT_TTL, "--heartbeat-interval", "500ms"]).await;
    let mut nodes = start_nodes(
        1,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), "prod"),
    )
    .await;
    let node = &mut nodes[0];
    node.agent.wait_registered(Duration::from_secs(20)).await;
    node.api().exec("CREATE DATABASE db1").await;
    node.api()
        .exec("CREATE USER ops WITH PASSWORD 'secret' WITH ALL PRIVILEGES")
        .await;
    let old_history = eventually(DEADLINE, "db1 and ops pushed", || async {
        let (_, history, c) = manager_catalog(&manager, "prod").await;
        if c.databases.contains_key("db1") && c.users.contains_key("ops") {
            Ok(history)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;

    node.agent.stop(DEADLINE).await;
    node.api().exec("CREATE DATABASE db2").await;
    wait_until(DEADLINE, "the node listed dead", || {
        let out = manager.ctl(&["-o", "json", "clusters"]);
        async move { json(&out)[0]["alive_nodes"] == 0 }
    })
    .await;
    let deleted = manager.ctl(&["delete-cluster", "prod", "--yes"]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(manager_catalog(&manager, "prod").await.0, 0);

    node.agent.start_again().await;
    let (version, history) = eventually(DEADLINE, "the cluster re-seeded", || async {
        let (version, history, c) = manager_catalog(&manager, "prod").await;
        let names: Vec<&String> = c.databases.keys().collect();
        if names == ["db1", "db2"] && c.users.contains_key("ops") {
            Ok((version, history))
        } else {
            Err(format!("v{version}: {names:?}, users {:?}", c.users.keys()))
        }
    })
    .await;
    assert!(version >= 1);
    assert!(!history.is_empty() && history != old_history);
    let databases = node.api().databases().await;
    assert!(
        databases.contains("db1") && databases.contains("db2"),
        "{databases:?}"
    );
    assert!(node.api().users().await.contains_key("ops"));
}

/// How long a node may take to push, die, or come back.
const DEADLINE: Duration = Duration::from_secs(30);
