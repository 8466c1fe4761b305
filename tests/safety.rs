//! Nothing one misconfigured node does may destroy the cluster's data: real
//! influxd servers, real agents, a real manager. A fresh meta directory
//! under an old state directory rejoins and receives the catalog; a
//! zero-byte `meta.db` drops nothing; an older `meta.db` restored under a
//! synced agent drops nothing; the meta directory of one server and the URL
//! of another push nothing; a manager wiped while a node is down loses
//! neither side's work; a rollback brings back what a DROP removed. In
//! each, `/health` turns 503 for the failure and back.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cflux::influx::catalog::Catalog;
use support::influxd::{
    eventually, start_nodes, Agent, AgentOptions, InfluxApi, Influxd, InfluxdOptions,
};
use support::Manager;

const CLUSTER: &str = "safety";
const DEADLINE: Duration = Duration::from_secs(30);

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Waits until every server in `apis` lists exactly `databases`.
async fn wait_databases(apis: &[&InfluxApi], databases: &[&str], what: &str) {
    let expected = names(databases);
    for api in apis {
        eventually(DEADLINE, &format!("{what} on {}", api.base()), || async {
            let dbs = api.databases().await;
            (dbs == expected).then_some(()).ok_or(format!("{dbs:?}"))
        })
        .await;
    }
}

/// A server's databases but its node-local `_internal` (which influxd
/// creates some time after it starts).
async fn own_databases(api: &InfluxApi) -> BTreeSet<String> {
    let mut dbs = api.databases().await;
    dbs.remove("_internal");
    dbs
}

/// The cluster's catalog as the manager holds it.
async fn cluster_catalog(manager: &Manager) -> (u64, Catalog) {
    let snapshot = support::get_meta(&mut manager.grpc_client().await, CLUSTER).await;
    let catalog = Catalog::from_meta_bytes(&snapshot.data).expect("a readable catalog");
    (snapshot.version, catalog)
}

fn database_names(c: &Catalog) -> BTreeSet<String> {
    c.databases.keys().cloned().collect()
}

#[tokio::test]
async fn a_fresh_meta_dir_under_an_old_state_dir_and_a_zero_byte_meta_db_drop_nothing() {
    let manager = Manager::start().await;
    let mut nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let a = nodes[0].api();
    a.exec("CREATE DATABASE db1").await;
    a.exec("CREATE DATABASE db2").await;
    a.exec("CREATE USER alice WITH PASSWORD 'pw'").await;
    a.write("db1", "m v=1 1\nm v=2 2\nm v=3 3").await;
    let both = names(&["_internal", "db1", "db2"]);
    for n in &nodes {
        let api = n.api();
        eventually(DEADLINE, &format!("{} synced", n.name), || async {
            let dbs = api.databases().await;
            (dbs == both).then_some(()).ok_or(format!("{dbs:?}"))
        })
        .await;
    }
    let healthy = nodes[1]
        .agent
        .wait_health(DEADLINE, 200, "node1 healthy")
        .await;
    assert_eq!(healthy["status"], "ok", "{healthy}");
    assert_eq!(healthy["cluster"], CLUSTER, "{healthy}");

    // A zero-byte meta.db under node1's synced agent: influxd itself would
    // refuse the file; the agent must not read it as an empty catalog.
    let meta_db = nodes[1].influxd.meta_dir().join("meta.db");
    let saved = std::fs::read(&meta_db).expect("read meta.db");
    std::fs::write(&meta_db, b"").expect("truncate meta.db");
    let failing = nodes[1]
        .agent
        .wait_health(DEADLINE, 503, "node1 failing on an empty meta.db")
        .await;
    assert!(
        failing["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("empty"),
        "{failing}"
    );
    std::fs::write(&meta_db, &saved).expect("restore meta.db");
    nodes[1]
        .agent
        .wait_health(DEADLINE, 200, "node1 healthy again")
        .await;
    assert_eq!(a.databases().await, both, "nothing dropped on node0");

    // node1 reinstalled: a fresh influxd (another meta directory, a fresh
    // ClusterID) under node1's old agent state.
    nodes[1].agent.stop(DEADLINE).await;
    let fresh_dir = tempfile::tempdir().expect("temp dir");
    let fresh = Influxd::start(fresh_dir.path(), &InfluxdOptions::default()).await;
    let rejoined = Agent::start(
        &fresh,
        &nodes[1].agent.state_dir,
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let api = fresh.api();
    eventually(
        DEADLINE,
        "the fresh server receives the catalog",
        || async {
            let dbs = api.databases().await;
            let users = api.users().await;
            (dbs == both && users.contains_key("alice"))
                .then_some(())
                .ok_or(format!("{dbs:?} {users:?}"))
        },
    )
    .await;
    eventually(DEADLINE, "the rejoin is counted", || async {
        let m = rejoined.metrics().await;
        m.contains(r#"cflux_node_metadata_replaced_total{reason="cluster_id"} 1"#)
            .then_some(())
            .ok_or(m)
    })
    .await;
    rejoined
        .wait_health(DEADLINE, 200, "the rejoined node is healthy")
        .await;
    // Nothing was dropped anywhere: node0 keeps its databases, user and points.
    assert_eq!(a.databases().await, both);
    assert!(a.users().await.contains_key("alice"));
    assert_eq!(
        a.select_number("db1", "SELECT count(v) FROM m").await,
        Some(3.0)
    );
}

#[tokio::test]
async fn a_manager_wiped_while_a_node_is_down_loses_neither_side_s_work() {
    let mut manager =
        Manager::start_with(&["--node-ttl", "3s", "--heartbeat-interval", "1s"]).await;
    let mut nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    a.exec("CREATE DATABASE shared").await;
    a.write("shared", "m v=1 1\nm v=2 2").await;
    wait_databases(&[&a, &b], &["_internal", "shared"], "shared synced").await;

    // node1 goes down and changes something of its own meanwhile.
    nodes[1].agent.stop(DEADLINE).await;
    b.exec("CREATE DATABASE from_node1").await;
    // The manager loses its whole state.
    manager.kill();
    std::fs::remove_dir_all(manager.data_dir()).expect("wipe the manager's data");
    let silent = nodes[0]
        .agent
        .wait_health(DEADLINE, 503, "node0 notices that no manager answers")
        .await;
    assert!(
        silent["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no manager has answered"),
        "{silent}"
    );
    manager.start_again_on_same_port().await;
    nodes[0]
        .agent
        .wait_health(DEADLINE, 200, "node0 healthy with the wiped manager")
        .await;
    // node0 re-seeds the new history, then creates two databases.
    a.exec("CREATE DATABASE after_wipe1").await;
    a.exec("CREATE DATABASE after_wipe2").await;
    eventually(DEADLINE, "the new history holds node0's work", || async {
        let (_, c) = cluster_catalog(&manager).await;
        let dbs = database_names(&c);
        (dbs == names(&["shared", "after_wipe1", "after_wipe2"]))
            .then_some(())
            .ok_or(format!("{dbs:?}"))
    })
    .await;

    // node1 returns with a base from the lost history and a change of its own.
    nodes[1].agent.start_again().await;
    let everything = [
        "_internal",
        "shared",
        "after_wipe1",
        "after_wipe2",
        "from_node1",
    ];
    wait_databases(&[&a, &b], &everything, "both nodes' work everywhere").await;
    let (_, c) = cluster_catalog(&manager).await;
    assert_eq!(database_names(&c), names(&everything[1..]));
    assert_eq!(
        a.select_number("shared", "SELECT count(v) FROM m").await,
        Some(2.0),
        "node0's points are kept"
    );
    for n in &nodes {
        n.agent
            .wait_health(DEADLINE, 200, "healthy in the end")
            .await;
    }
}

#[tokio::test]
async fn an_older_meta_db_restored_under_a_synced_agent_drops_nothing() {
    let manager = Manager::start().await;
    let mut nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    a.exec("CREATE DATABASE db1").await;
    a.exec("CREATE USER bob WITH PASSWORD 'pw'").await;
    wait_databases(&[&a, &b], &["_internal", "db1"], "db1 synced").await;
    eventually(DEADLINE, "bob on node1", || async {
        let users = b.users().await;
        users
            .contains_key("bob")
            .then_some(())
            .ok_or(format!("{users:?}"))
    })
    .await;
    let meta_db = nodes[1].influxd.meta_dir().join("meta.db");
    let older = std::fs::read(&meta_db).expect("copy node1's meta.db");

    // One more change, applied on node1 right over the state it was copied
    // in: the copy is exactly one apply old.
    a.exec("CREATE DATABASE db2").await;
    a.write("db2", "m v=1 1\nm v=2 2\nm v=3 3").await;
    wait_databases(&[&a, &b], &["_internal", "db1", "db2"], "db2 synced").await;

    // node1's influxd stops; its meta.db is restored from the older copy.
    nodes[1].influxd.kill();
    let down = nodes[1]
        .agent
        .wait_health(DEADLINE, 503, "node1 reports influxd down")
        .await;
    assert_eq!(down["influxdb"], "down", "{down}");
    assert!(
        down["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("is down"),
        "{down}"
    );
    std::fs::write(&meta_db, &older).expect("restore the older meta.db");
    nodes[1].influxd.start_again().await;

    // node1 rejoins: it gets db2 back; nobody loses it.
    let back = support::wait::poll(DEADLINE, || async {
        let dbs = b.databases().await;
        let m = nodes[1].agent.metrics().await;
        (dbs == names(&["_internal", "db1", "db2"])
            && m.contains(r#"cflux_node_metadata_replaced_total{reason="index"} 1"#))
        .then_some(())
        .ok_or(format!("{dbs:?}"))
    })
    .await;
    if let Err(last) = back {
        panic!(
            "db2 not back on node1, or the rejoin not counted: {last}\nagent log:\n{}",
            nodes[1].agent.log()
        );
    }
    nodes[1]
        .agent
        .wait_health(DEADLINE, 200, "node1 healthy again")
        .await;
    assert_eq!(a.databases().await, names(&["_internal", "db1", "db2"]));
    assert!(a.users().await.contains_key("bob"));
    assert!(b.users().await.contains_key("bob"));
    assert_eq!(
        a.select_number("db2", "SELECT count(v) FROM m").await,
        Some(3.0),
        "node0 keeps db2's points"
    );
    let (_, c) = cluster_catalog(&manager).await;
    assert_eq!(database_names(&c), names(&["db1", "db2"]));
    assert!(c.users.contains_key("bob"));
}

#[tokio::test]
async fn the_meta_dir_of_one_server_and_the_url_of_another_push_nothing() {
    let manager = Manager::start().await;
    let nodes = start_nodes(
        1,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let a = nodes[0].api();
    a.exec("CREATE DATABASE kept").await;
    a.exec("CREATE USER alice WITH PASSWORD 'pw'").await;
    eventually(DEADLINE, "the cluster holds kept", || async {
        let (_, c) = cluster_catalog(&manager).await;
        (database_names(&c) == names(&["kept"]) && c.users.contains_key("alice"))
            .then_some(())
            .ok_or(format!("{:?}", database_names(&c)))
    })
    .await;
    let (version, _) = cluster_catalog(&manager).await;

    // Two other servers, each with a database of its own; an agent reads
    // the first's meta directory and talks to the second.
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let x = Influxd::start(dirs[0].path(), &InfluxdOptions::default()).await;
    let y = Influxd::start(dirs[1].path(), &InfluxdOptions::default()).await;
    x.api().exec("CREATE DATABASE only_x").await;
    y.api().exec("CREATE DATABASE only_y").await;
    let options = AgentOptions {
        meta_dir: Some(x.meta_dir()),
        ..AgentOptions::new(&manager.url(), CLUSTER)
    };
    let state = tempfile::tempdir().unwrap();
    let crossed = Agent::start(&y, &state.path().join("agent"), &options).await;
    let refused = crossed
        .wait_health(DEADLINE, 503, "the crossed agent refuses")
        .await;
    let reason = refused["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&x.meta_dir().display().to_string()) && reason.contains(&y.url()),
        "the reason names the meta dir and the URL: {refused}"
    );
    assert!(
        crossed.log().contains("refusing to push or apply anything"),
        "{}",
        crossed.log()
    );
    // Nothing reached the cluster, nothing was applied to either server.
    let (after, c) = cluster_catalog(&manager).await;
    assert_eq!((after, database_names(&c)), (version, names(&["kept"])));
    assert_eq!(own_databases(&a).await, names(&["kept"]));
    assert!(a.users().await.contains_key("alice"));
    assert_eq!(own_databases(&y.api()).await, names(&["only_y"]));
    assert_eq!(own_databases(&x.api()).await, names(&["only_x"]));
}

#[tokio::test]
async fn a_rollback_brings_back_a_dropped_user_and_database_on_every_node() {
    let manager = Manager::start().await;
    let nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    let (a, b) = (nodes[0].api(), nodes[1].api());
    a.exec("CREATE DATABASE keep").await;
    a.exec("CREATE DATABASE gone").await;
    a.exec("CREATE RETENTION POLICY week ON gone DURATION 7d REPLICATION 1")
        .await;
    a.exec("CREATE USER carol WITH PASSWORD 'pw'").await;
    a.exec("GRANT READ ON gone TO carol").await;
    let grants = |api: InfluxApi| async move {
        let users = api.users().await;
        let grants = api.grants("carol").await.unwrap_or_default();
        let policies = api.retention_policies("gone").await.unwrap_or_default();
        let week = policies.iter().any(|p| p.name == "week");
        (users.contains_key("carol")
            && grants.get("gone").map(String::as_str) == Some("READ")
            && week)
            .then_some(())
            .ok_or(format!(
                "users {users:?}, grants {grants:?}, policies {policies:?}"
            ))
    };
    wait_databases(&[&a, &b], &["_internal", "gone", "keep"], "synced").await;
    for api in [&a, &b] {
        eventually(DEADLINE, "carol and her grant everywhere", || {
            grants(api.clone())
        })
        .await;
    }
    let (before, _) = cluster_catalog(&manager).await;

    b.exec("DROP DATABASE gone").await;
    b.exec("DROP USER carol").await;
    wait_databases(&[&a, &b], &["_internal", "keep"], "gone dropped everywhere").await;

    let out = manager.ctl(&["rollback", CLUSTER, &before.to_string(), "--yes"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("CREATE DATABASE"), "{shown}");
    wait_databases(
        &[&a, &b],
        &["_internal", "gone", "keep"],
        "gone back everywhere",
    )
    .await;
    for api in [&a, &b] {
        eventually(DEADLINE, "carol and her grant back everywhere", || {
            grants(api.clone())
        })
        .await;
    }
    // The history names the rollback as a restore of that version.
    let history = manager.ctl(&["history", CLUSTER]);
    let shown = String::from_utf8_lossy(&history.stdout);
    let newest = shown
        .lines()
        .nth(2)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert!(newest.contains(&"restore"), "{shown}");
}
