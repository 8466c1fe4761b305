//! A manager and three real InfluxDB 1.x servers (Debian's `influxd`), each
//! with its `cflux-agent`, driven only through InfluxDB's own `/query` and
//! `/write` APIs (and once through Debian's `influx` CLI): every metadata
//! change made on one server shows up on the others.
//!
//! Each test runs its own cluster on free ports. Conditions are awaited with
//! deadlines ([`eventually`]), never fixed sleeps; a negative check ("these
//! points did not travel") is made only after a later change has been seen
//! everywhere, so the sync had its chance.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cflux::influx::catalog::Catalog;
use futures::future::join_all;
use support::influxd::{
    eventually, ident, same, start_nodes, AgentOptions, InfluxApi, InfluxdOptions, Node, PolicyRow,
};
use support::Manager;

/// Propagation is usually well under a second; this leaves room for a
/// loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: &str = "agents";
/// Names that need quoting.
const ODD_DB: &str = "odd db-name.x \"q\" ü";
const ODD_USER: &str = "o'brien \"x\" ü";

/// A manager and its nodes.
///
/// influxd's monitor creates `_internal` at its first 10-second tick, so it
/// may appear on the nodes at any point of a test: checks leave it out.
struct Cluster {
    // Field order is drop order: the nodes go before their manager.
    nodes: Vec<Node>,
    manager: Manager,
}

impl Cluster {
    /// A manager with `manager_args`, three influxd and their agents; returns
    /// once every agent registered and every node synced the same catalog.
    async fn start(manager_args: &[&str], influxd: InfluxdOptions, legacy: bool) -> Cluster {
        let manager = Manager::start_with(manager_args).await;
        let mut agent = AgentOptions::new(&manager.url(), CLUSTER);
        if legacy {
            agent = agent.legacy();
        }
        let nodes = start_nodes(3, &influxd, &agent).await;
        let c = Cluster { manager, nodes };
        c.wait_joined().await;
        c
    }

    /// Every agent registered, and every agent synced the manager's version.
    async fn wait_joined(&self) {
        for n in &self.nodes {
            n.agent.wait_registered(DEADLINE).await;
        }
        self.wait_same_version().await;
    }

    /// Every agent reports the manager's current catalog version.
    async fn wait_same_version(&self) {
        eventually(
            DEADLINE,
            "every agent synced the manager's version",
            || async {
                // Version 0 is a real state: empty servers have nothing to
                // share (`_internal` stays node-local), so "synced" means
                // healthy at the manager's version, whatever it is.
                let current = self.catalog_version().await;
                for n in &self.nodes {
                    let health = n.agent.health().await;
                    let status = health.as_ref().and_then(|h| h["status"].as_str());
                    same(&format!("{} health", n.name), &Some("ok"), &status)?;
                    let v = health.as_ref().and_then(|h| h["catalog_version"].as_u64());
                    same(&n.name, &Some(current), &v)?;
                }
                Ok(())
            },
        )
        .await;
    }

    async fn catalog_version(&self) -> u64 {
        self.get_meta().await.version
    }

    async fn get_meta(&self) -> cflux::proto::MetaSnapshot {
        support::get_meta(&mut self.manager.grpc_client().await, CLUSTER).await
    }

    /// The manager's catalog, decoded.
    async fn catalog(&self) -> Catalog {
        let s = self.get_meta().await;
        Catalog::from_meta_bytes(&s.data).expect("the manager holds valid meta.Data")
    }

    /// `ListNodes` for the cluster: node ID → alive.
    async fn list_nodes(&self) -> std::collections::BTreeMap<String, bool> {
        support::list_nodes(&mut self.manager.grpc_client().await, CLUSTER)
            .await
            .into_iter()
            .map(|n| (n.node_id, n.alive))
            .collect()
    }

    fn apis(&self) -> Vec<InfluxApi> {
        self.nodes.iter().map(Node::api).collect()
    }
}

/// Waits until `check` passes on every one of `apis` (named node0, node1, …).
async fn on_every<F, Fut>(apis: &[InfluxApi], what: &str, check: F)
where
    F: Fn(InfluxApi) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let check = &check;
    eventually(DEADLINE, what, move || async move {
        for (i, api) in apis.iter().enumerate() {
            check(api.clone())
                .await
                .map_err(|e| format!("node{i}: {e}"))?;
        }
        Ok(())
    })
    .await;
}

/// Waits until every node has all of `present` and none of `absent`.
async fn wait_databases(apis: &[InfluxApi], present: &[&str], absent: &[&str]) {
    let what = format!("databases {present:?} on every node, {absent:?} on none");
    on_every(apis, &what, |api| async move {
        let dbs = api.databases().await;
        let missing: Vec<&&str> = present.iter().filter(|d| !dbs.contains(**d)).collect();
        let extra: Vec<&&str> = absent.iter().filter(|d| dbs.contains(**d)).collect();
        if missing.is_empty() && extra.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}, still there {extra:?}"))
        }
    })
    .await;
}

fn rp(name: &str, duration: &str, shard: &str, default: bool) -> PolicyRow {
    PolicyRow {
        name: name.into(),
        duration: duration.into(),
        shard_group_duration: shard.into(),
        replica_n: 1,
        default,
    }
}

/// Waits until `SHOW RETENTION POLICIES ON db` is `expected` on every node.
async fn wait_policies(apis: &[InfluxApi], db: &str, expected: &[PolicyRow]) {
    let expected: Vec<PolicyRow> = {
        let mut v = expected.to_vec();
        v.sort();
        v
    };
    let expected = &expected;
    on_every(
        apis,
        &format!("retention policies on {db}"),
        |api| async move {
            let rows = api.retention_policies(db).await?;
            same("SHOW RETENTION POLICIES", expected, &rows)
        },
    )
    .await;
}

/// A manager and three plain influxd with their agents, and the nodes' APIs.
async fn three_nodes() -> (Cluster, Vec<InfluxApi>) {
    let c = Cluster::start(&[], InfluxdOptions::default(), false).await;
    let apis = c.apis();
    (c, apis)
}

/// Databases made and dropped on one node (a different one each time),
/// odd names included, show up on the others, and in the manager's catalog.
#[tokio::test]
async fn databases_made_on_one_node_reach_every_node() {
    let (c, apis) = three_nodes().await;
    let (a, b, cc) = (&apis[0], &apis[1], &apis[2]);

    a.exec("CREATE DATABASE db1").await;
    cc.exec("CREATE DATABASE db2").await;
    wait_databases(&apis, &["db1", "db2"], &[]).await;
    wait_policies(&apis, "db1", &[rp("autogen", "0s", "168h0m0s", true)]).await;

    // A name that needs quoting, with its own default policy.
    let odd_db = ident(ODD_DB);
    cc.exec(&format!(
        "CREATE DATABASE {odd_db} WITH DURATION 30d NAME \"odd rp\""
    ))
    .await;
    wait_databases(&apis, &[ODD_DB], &[]).await;
    wait_policies(&apis, ODD_DB, &[rp("odd rp", "720h0m0s", "24h0m0s", true)]).await;
    b.exec(&format!("DROP DATABASE {odd_db}")).await;
    wait_databases(&apis, &[], &[ODD_DB]).await;

    cc.exec("DROP DATABASE db1").await;
    wait_databases(&apis, &["db2"], &["db1"]).await;

    // The manager's catalog is what the nodes show.
    c.wait_same_version().await;
    let catalog = c.catalog().await;
    assert_eq!(
        catalog
            .databases
            .keys()
            .filter(|d| *d != "_internal")
            .cloned()
            .collect::<BTreeSet<_>>(),
        ["db2".to_owned()].into_iter().collect(),
    );
}

/// Retention policies created, altered, dropped and made default on one
/// node show up on the others.
#[tokio::test]
async fn retention_policies_made_on_one_node_reach_every_node() {
    let (_c, apis) = three_nodes().await;
    let (a, b, cc) = (&apis[0], &apis[1], &apis[2]);
    a.exec("CREATE DATABASE db1").await;
    wait_databases(&apis, &["db1"], &[]).await;

    b.exec("CREATE RETENTION POLICY rp1 ON db1 DURATION 2d REPLICATION 1 SHARD DURATION 1h")
        .await;
    wait_policies(
        &apis,
        "db1",
        &[
            rp("autogen", "0s", "168h0m0s", true),
            rp("rp1", "48h0m0s", "1h0m0s", false),
        ],
    )
    .await;

    cc.exec("ALTER RETENTION POLICY rp1 ON db1 DURATION 3d SHARD DURATION 2h DEFAULT")
        .await;
    wait_policies(
        &apis,
        "db1",
        &[
            rp("autogen", "0s", "168h0m0s", false),
            rp("rp1", "72h0m0s", "2h0m0s", true),
        ],
    )
    .await;

    // Dropping the default policy leaves the database without one (influxd
    // keeps the dropped name as its default); a new default is then set.
    a.exec("DROP RETENTION POLICY rp1 ON db1").await;
    wait_policies(&apis, "db1", &[rp("autogen", "0s", "168h0m0s", false)]).await;
    b.exec("ALTER RETENTION POLICY autogen ON db1 DEFAULT")
        .await;
    wait_policies(&apis, "db1", &[rp("autogen", "0s", "168h0m0s", true)]).await;
}

/// A continuous query made on one node shows up, with the same text, on
/// the others, and goes when it is dropped on another.
#[tokio::test]
async fn continuous_queries_made_on_one_node_reach_every_node() {
    let (_c, apis) = three_nodes().await;
    let (a, b) = (&apis[0], &apis[1]);
    a.exec("CREATE DATABASE db1").await;
    wait_databases(&apis, &["db1"], &[]).await;
    b.exec("CREATE RETENTION POLICY rp1 ON db1 DURATION 2d REPLICATION 1 SHARD DURATION 1h")
        .await;
    // The query writes into rp1: it must have reached the node first.
    wait_policies(
        &apis,
        "db1",
        &[
            rp("autogen", "0s", "168h0m0s", true),
            rp("rp1", "48h0m0s", "1h0m0s", false),
        ],
    )
    .await;

    a.exec(
        "CREATE CONTINUOUS QUERY cq1 ON db1 BEGIN SELECT mean(value) INTO db1.rp1.cpu_mean \
         FROM db1.autogen.cpu GROUP BY time(1h) END",
    )
    .await;
    let cqs = a.continuous_queries().await;
    let key = ("db1".to_owned(), "cq1".to_owned());
    assert!(
        cqs.contains_key(&key),
        "cq1 on the node it was made on: {cqs:?}"
    );
    let cqs = &cqs;
    on_every(&apis, "cq1 everywhere, same text", |api| async move {
        same(
            "SHOW CONTINUOUS QUERIES",
            cqs,
            &api.continuous_queries().await,
        )
    })
    .await;

    b.exec("DROP CONTINUOUS QUERY cq1 ON db1").await;
    on_every(&apis, "cq1 gone", |api| async move {
        let cqs = api.continuous_queries().await;
        same("continuous queries", &0, &cqs.len())
    })
    .await;
}

/// A subscription made on one node shows up on the others, and goes when it
/// is dropped on another.
#[tokio::test]
async fn subscriptions_made_on_one_node_reach_every_node() {
    let (_c, apis) = three_nodes().await;
    let (a, b, cc) = (&apis[0], &apis[1], &apis[2]);
    a.exec("CREATE DATABASE db1").await;
    wait_databases(&apis, &["db1"], &[]).await;

    b.exec("CREATE SUBSCRIPTION sub1 ON db1.autogen DESTINATIONS ANY 'http://127.0.0.1:9', 'udp://127.0.0.1:9'")
        .await;
    on_every(&apis, "sub1 everywhere", |api| async move {
        let subs = api.subscriptions().await;
        let expected = [(
            ("db1".to_owned(), "autogen".to_owned(), "sub1".to_owned()),
            (
                "ANY".to_owned(),
                vec![
                    "http://127.0.0.1:9".to_owned(),
                    "udp://127.0.0.1:9".to_owned(),
                ],
            ),
        )]
        .into_iter()
        .collect();
        same("SHOW SUBSCRIPTIONS", &expected, &subs)
    })
    .await;

    cc.exec("DROP SUBSCRIPTION sub1 ON db1.autogen").await;
    on_every(&apis, "sub1 gone", |api| async move {
        let subs = api.subscriptions().await;
        same("subscriptions", &0, &subs.len())
    })
    .await;
}

/// Users, admin flags and privileges changed on one node (a different one
/// each time), odd names and a password change included, show up on the
/// others, and in the manager's catalog; no agent spun meanwhile.
#[tokio::test]
async fn users_and_privileges_made_on_one_node_reach_every_node() {
    let (c, apis) = three_nodes().await;
    let (a, b, cc) = (&apis[0], &apis[1], &apis[2]);
    a.exec("CREATE DATABASE db1").await;
    cc.exec("CREATE DATABASE db2").await;
    wait_databases(&apis, &["db1", "db2"], &[]).await;

    cc.exec("CREATE USER alice WITH PASSWORD 'alice-pw'").await;
    cc.exec("CREATE USER root WITH PASSWORD 'root-pw' WITH ALL PRIVILEGES")
        .await;
    on_every(&apis, "alice and root everywhere", |api| async move {
        let expected = [("alice".to_owned(), false), ("root".to_owned(), true)]
            .into_iter()
            .collect();
        same("SHOW USERS", &expected, &api.users().await)
    })
    .await;

    // Waits until every node grants alice exactly `privilege` on `db`.
    let alice_only = |what: &'static str, db: &'static str, privilege: &'static str| {
        on_every(&apis, what, move |api| async move {
            let expected = [(db.to_owned(), privilege.to_owned())]
                .into_iter()
                .collect();
            same(
                "SHOW GRANTS FOR alice",
                &expected,
                &api.grants("alice").await?,
            )
        })
    };
    a.exec("GRANT WRITE ON db1 TO alice").await;
    alice_only("alice may write db1", "db1", "WRITE").await;

    b.exec("REVOKE WRITE ON db1 FROM alice").await;
    b.exec("GRANT READ ON db2 TO alice").await;
    alice_only("alice may only read db2", "db2", "READ").await;

    cc.exec("GRANT ALL PRIVILEGES TO alice").await;
    on_every(&apis, "alice is an admin", |api| async move {
        same(
            "alice admin",
            &Some(true),
            &api.users().await.get("alice").copied(),
        )
    })
    .await;
    a.exec("REVOKE ALL PRIVILEGES FROM alice").await;
    on_every(&apis, "alice is no admin", |api| async move {
        same(
            "alice admin",
            &Some(false),
            &api.users().await.get("alice").copied(),
        )
    })
    .await;

    // Names that need quoting, a password change.
    let odd_db = ident(ODD_DB);
    let odd_user = ident(ODD_USER);
    cc.exec(&format!(
        "CREATE DATABASE {odd_db} WITH DURATION 30d NAME \"odd rp\""
    ))
    .await;
    cc.exec(&format!(
        "CREATE USER {odd_user} WITH PASSWORD 'it\\'s \\\\ secret'"
    ))
    .await;
    cc.exec(&format!("GRANT ALL ON {odd_db} TO {odd_user}"))
        .await;
    wait_databases(&apis, &[ODD_DB], &[]).await;
    on_every(&apis, "the oddly named user everywhere", |api| async move {
        let expected = [(ODD_DB.to_owned(), "ALL PRIVILEGES".to_owned())]
            .into_iter()
            .collect();
        same("grants", &expected, &api.grants(ODD_USER).await?)
    })
    .await;
    a.exec(&format!("SET PASSWORD FOR {odd_user} = 'another'"))
        .await;
    b.exec(&format!("DROP DATABASE {odd_db}")).await;
    wait_databases(&apis, &[], &[ODD_DB]).await;
    a.exec(&format!("DROP USER {odd_user}")).await;

    b.exec("DROP USER alice").await;
    on_every(&apis, "alice gone, root left", |api| async move {
        let expected = [("root".to_owned(), true)].into_iter().collect();
        same("SHOW USERS", &expected, &api.users().await)
    })
    .await;

    // The manager's catalog is what the nodes show.
    c.wait_same_version().await;
    let catalog = c.catalog().await;
    assert_eq!(
        catalog.users.keys().cloned().collect::<Vec<_>>(),
        vec!["root".to_owned()]
    );

    // No agent spun meanwhile (reading meta.db must not count as a change
    // of it): each used a small share of one CPU over its life.
    for n in &c.nodes {
        let usage = n.agent.usage().expect("the agent is running");
        let share = usage.cpu_seconds / n.agent.uptime().as_secs_f64();
        eprintln!(
            "{}: agent CPU {:.2}s over {:?} ({share:.3}), RSS {} KiB",
            n.name,
            usage.cpu_seconds,
            n.agent.uptime(),
            usage.rss_bytes / 1024
        );
        assert!(
            share < 0.25,
            "{}: the agent used {:.2}s of CPU in {:?}",
            n.name,
            usage.cpu_seconds,
            n.agent.uptime()
        );
    }
}

/// `DROP DATABASE` on one node deletes the database's files on every node;
/// points written to one node stay there.
#[tokio::test]
async fn drop_database_deletes_data_everywhere_and_points_stay_local() {
    let c = Cluster::start(&[], InfluxdOptions::default(), false).await;
    let apis = c.apis();

    apis[0].exec("CREATE DATABASE metrics").await;
    wait_databases(&apis, &["metrics"], &[]).await;

    // Node i gets i+1 points of `cpu`; only node0 gets `only_on_node0`.
    for (i, api) in apis.iter().enumerate() {
        let lines: Vec<String> = (0..=i)
            .map(|k| {
                format!(
                    "cpu,host=node{i} value={k} {}",
                    1_600_000_000_000_000_000u64 + k as u64
                )
            })
            .collect();
        api.write("metrics", &lines.join("\n")).await;
    }
    apis[0]
        .write("metrics", "only_on_node0 value=1 1600000000000000000")
        .await;
    for n in &c.nodes {
        assert!(
            n.data_dir_of("metrics").is_dir(),
            "{}: no data directory for metrics after a write",
            n.name
        );
    }

    // A later change seen everywhere: the sync had its chance to carry points.
    apis[2].exec("CREATE DATABASE marker").await;
    wait_databases(&apis, &["metrics", "marker"], &[]).await;
    for api in &apis {
        api.write("marker", "kept value=1 1600000000000000000")
            .await;
    }
    for (i, api) in apis.iter().enumerate() {
        let count = api
            .select_number("metrics", "SELECT count(value) FROM cpu")
            .await;
        assert_eq!(count, Some((i + 1) as f64), "node{i}: its own points only");
        let only = api
            .select_number("metrics", "SELECT count(value) FROM only_on_node0")
            .await;
        let expected = if i == 0 { Some(1.0) } else { None };
        assert_eq!(only, expected, "node{i}: only_on_node0");
    }

    apis[1].exec("DROP DATABASE metrics").await;
    wait_databases(&apis, &["marker"], &["metrics"]).await;
    let nodes = &c.nodes;
    eventually(DEADLINE, "metrics' files gone on every node", || async {
        for n in nodes {
            for dir in [
                n.data_dir_of("metrics"),
                n.influxd.wal_dir().join("metrics"),
            ] {
                if dir.exists() {
                    return Err(format!("{}: {} still exists", n.name, dir.display()));
                }
            }
        }
        Ok(())
    })
    .await;
    // The other database's files and points are untouched.
    for (n, api) in c.nodes.iter().zip(&apis) {
        assert!(
            n.data_dir_of("marker").is_dir(),
            "{}: marker's files",
            n.name
        );
        let kept = api
            .select_number("marker", "SELECT count(value) FROM kept")
            .await;
        assert_eq!(kept, Some(1.0), "{}: marker's points", n.name);
    }
}

/// 30 databases created at once on each of the three nodes (90 in all, all
/// different): every node ends up with all 90.
#[tokio::test]
async fn ninety_databases_created_concurrently_reach_every_node() {
    let c = Cluster::start(&[], InfluxdOptions::default(), false).await;
    let apis = c.apis();
    let names: Vec<Vec<String>> = (0..3)
        .map(|n| (0..30).map(|i| format!("n{n}_db{i:02}")).collect())
        .collect();
    join_all(apis.iter().zip(&names).map(|(api, names)| {
        join_all(
            names
                .iter()
                .map(move |db| async move { api.exec(&format!("CREATE DATABASE {db}")).await }),
        )
    }))
    .await;

    let all: BTreeSet<String> = names.iter().flatten().cloned().collect();
    let all = &all;
    on_every(&apis, "all 90 databases on every node", |api| async move {
        let dbs = api.databases().await;
        let missing: Vec<&String> = all.difference(&dbs).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            ))
        }
    })
    .await;
    c.wait_same_version().await;
    let catalog = c.catalog().await;
    let mut in_manager: BTreeSet<String> = catalog.databases.keys().cloned().collect();
    in_manager.remove("_internal");
    assert!(
        all.is_subset(&in_manager),
        "the manager's catalog lacks {:?}",
        all.difference(&in_manager).collect::<Vec<_>>()
    );
    assert_eq!(&in_manager, all, "the manager's catalog");
    for (i, api) in apis.iter().enumerate() {
        let mut dbs = api.databases().await;
        dbs.remove("_internal");
        assert_eq!(&dbs, all, "node{i}");
    }
    // Not even for a moment: no agent dropped a database a user had just
    // created on its node while it applied the others' (a DROP deletes data).
    for n in &c.nodes {
        let log = n.agent.log();
        let drops: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("DROP DATABASE"))
            .collect();
        assert!(drops.is_empty(), "{}: {drops:#?}", n.name);
    }
}

/// Outages: a dead manager does not stop the nodes, and what they did
/// meanwhile reaches the others once it is back; an agent or influxd
/// restarted while changes happen elsewhere comes back as the same node and
/// catches up; a dead agent's node is listed dead after the TTL.
#[tokio::test]
async fn outages_of_manager_agent_and_influxd_heal() {
    // No `_internal` creation at the monitor's first tick here: it is a
    // cluster change that would wake a node which missed one, and this test
    // checks that a node catches up without such help.
    let quiet = InfluxdOptions {
        env: vec![("INFLUXDB_MONITOR_STORE_ENABLED".into(), "false".into())],
        ..InfluxdOptions::default()
    };
    let mut c = Cluster::start(
        &["--node-ttl", "3s", "--heartbeat-interval", "1s"],
        quiet,
        false,
    )
    .await;
    let apis = c.apis();
    let mut ids = Vec::new();
    for n in &c.nodes {
        ids.push(n.agent.node_id().await.expect("registered"));
    }
    let listed = c.list_nodes().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.values().all(|alive| *alive), "{listed:?}");

    // 1. The manager dies; nodes keep working, each on its own.
    c.manager.kill();
    apis[0].exec("CREATE DATABASE during_outage_0").await;
    apis[1].exec("CREATE DATABASE during_outage_1").await;
    apis[1]
        .exec("CREATE RETENTION POLICY week ON during_outage_1 DURATION 7d REPLICATION 1")
        .await;
    assert!(apis[0].databases().await.contains("during_outage_0"));
    // Both agents tried to push, used up their retries, counted the failure
    // and keep serving.
    for n in &c.nodes[..2] {
        eventually(
            DEADLINE,
            &format!("{}: a failed push counted", n.name),
            || async {
                let text = n.agent.metrics().await;
                let failed = support::metric(&text, r#"cflux_node_failures_total{step="push"}"#);
                if failed.unwrap_or(0.0) >= 1.0 {
                    Ok(())
                } else {
                    Err(format!("failed pushes: {failed:?}"))
                }
            },
        )
        .await;
        assert!(n.agent.health().await.is_some(), "{}: /health", n.name);
    }
    // Back on the same store and port: both changes reach every node.
    c.manager.start_again_on_same_port().await;
    wait_databases(&apis, &["during_outage_0", "during_outage_1"], &[]).await;
    wait_policies(
        &apis,
        "during_outage_1",
        &[
            rp("autogen", "0s", "168h0m0s", true),
            rp("week", "168h0m0s", "24h0m0s", false),
        ],
    )
    .await;
    c.wait_same_version().await;

    // 2. node2's agent dies: listed dead after the TTL, the others alive.
    c.nodes[2].agent.kill();
    let dead = ids[2].clone();
    {
        let c = &c;
        let dead = &dead;
        eventually(
            DEADLINE,
            "node2 listed dead, the others alive",
            || async move {
                let listed = c.list_nodes().await;
                for (id, alive) in &listed {
                    if alive != &(id != dead) {
                        return Err(format!("{listed:?}"));
                    }
                }
                same("listed nodes", &3, &listed.len())
            },
        )
        .await;
    }
    // Changes elsewhere, and on node2's own influxd, while its agent is down.
    apis[0].exec("CREATE DATABASE while_agent_down").await;
    apis[2]
        .exec("CREATE DATABASE made_on_node2_without_agent")
        .await;
    wait_databases(&apis[..2], &["while_agent_down"], &[]).await;
    // Back: the same node, alive again, caught up both ways.
    c.nodes[2].agent.start_again().await;
    let id = c.nodes[2].agent.wait_registered(DEADLINE).await;
    assert_eq!(id, ids[2], "a restarted agent keeps its node ID");
    wait_databases(
        &apis,
        &["while_agent_down", "made_on_node2_without_agent"],
        &[],
    )
    .await;
    {
        let c = &c;
        let ids = &ids;
        eventually(DEADLINE, "three nodes, all alive", || async move {
            let listed = c.list_nodes().await;
            let expected = ids.iter().map(|id| (id.clone(), true)).collect();
            same("ListNodes", &expected, &listed)
        })
        .await;
    }

    // 3. node1's influxd dies while changes happen elsewhere, then comes back.
    c.nodes[1].influxd.kill();
    apis[0].exec("CREATE DATABASE while_influxd_down").await;
    apis[2].exec("DROP DATABASE during_outage_0").await;
    let others = [apis[0].clone(), apis[2].clone()];
    wait_databases(&others, &["while_influxd_down"], &["during_outage_0"]).await;
    c.nodes[1].influxd.start_again().await;
    wait_databases(&apis, &["while_influxd_down"], &["during_outage_0"]).await;
    // Its agent kept its node ID, and node1 still pushes its own changes.
    assert_eq!(c.nodes[1].agent.node_id().await.as_deref(), Some(&*ids[1]));
    apis[1].exec("CREATE DATABASE after_influxd_restart").await;
    wait_databases(&apis, &["after_influxd_restart"], &[]).await;
    c.wait_same_version().await;
    assert_eq!(c.list_nodes().await.len(), 3, "never more than three nodes");
}

/// The same sync with the agents on the legacy HTTP protocol, against the
/// manager's legacy layer — including an agent restarted on it.
#[tokio::test]
async fn legacy_http_agents_keep_the_cluster_in_sync() {
    let mut c = Cluster::start(&[], InfluxdOptions::default(), true).await;
    let apis = c.apis();
    // They really speak the legacy protocol: three held long polls, no watch.
    {
        let metrics_url = c.manager.http_url("/metrics");
        let metrics_url = &metrics_url;
        eventually(
            DEADLINE,
            "three long polls held, no WatchMeta stream",
            || async move {
                let text = support::http()
                    .get(metrics_url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                let polls = support::metric(&text, "cflux_long_polls");
                let streams = support::metric(&text, "cflux_watch_streams");
                same(
                    "long polls, watch streams",
                    &(Some(3.0), Some(0.0)),
                    &(polls, streams),
                )
            },
        )
        .await;
    }

    apis[0].exec("CREATE DATABASE legacy_db").await;
    wait_databases(&apis, &["legacy_db"], &[]).await;

    apis[1]
        .exec("CREATE RETENTION POLICY month ON legacy_db DURATION 30d REPLICATION 1 DEFAULT")
        .await;
    wait_policies(
        &apis,
        "legacy_db",
        &[
            rp("autogen", "0s", "168h0m0s", false),
            rp("month", "720h0m0s", "24h0m0s", true),
        ],
    )
    .await;

    apis[2].exec("DROP DATABASE legacy_db").await;
    wait_databases(&apis, &[], &["legacy_db"]).await;

    // The manager's legacy layer lists the three nodes, alive.
    let nodes: serde_json::Value = support::http()
        .get(c.manager.http_url(&format!("/nodes/{CLUSTER}")))
        .send()
        .await
        .expect("GET /nodes/{cluster}")
        .json()
        .await
        .expect("a JSON node list");
    let nodes = nodes.as_array().expect("a node list");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["alive"] == true), "{nodes:?}");

    // A restarted legacy agent comes back as the same node, and a change on
    // its node still travels (its first long poll has nothing to return).
    let id = c.nodes[1].agent.node_id().await.expect("registered");
    let status = c.nodes[1].agent.stop(Duration::from_secs(10)).await;
    assert!(status.success(), "agent exited with {status} on SIGTERM");
    c.nodes[1].agent.start_again().await;
    assert_eq!(c.nodes[1].agent.wait_registered(DEADLINE).await, id);
    apis[1].exec("CREATE DATABASE after_legacy_restart").await;
    wait_databases(&apis, &["after_legacy_restart"], &[]).await;
    c.wait_same_version().await;
}

/// Runs Debian's `influx` CLI against the server on 127.0.0.1:`port`.
async fn influx_cli(port: u16, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("influx");
    cmd.args(["-host", "127.0.0.1", "-port", &port.to_string()])
        .args(args)
        .env_remove("INFLUX_USERNAME")
        .env_remove("INFLUX_PASSWORD");
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the CLI task")
        .unwrap_or_else(|e| panic!("cannot run influx: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A user's own client (Debian's `influx` CLI, which nobody here wrote)
/// changes one node; the same CLI sees the change on another.
#[tokio::test]
async fn influx_cli_changes_reach_other_nodes() {
    let c = Cluster::start(&[], InfluxdOptions::default(), false).await;
    let port = |i: usize| c.nodes[i].influxd.http_addr.port();

    influx_cli(port(0), &["-execute", "CREATE DATABASE from_cli"]).await;
    influx_cli(
        port(0),
        &[
            "-execute",
            "CREATE RETENTION POLICY two_weeks ON from_cli DURATION 14d REPLICATION 1 DEFAULT",
        ],
    )
    .await;
    influx_cli(
        port(0),
        &["-execute", "CREATE USER carol WITH PASSWORD 'carol-pw'"],
    )
    .await;

    for i in [1, 2] {
        let p = port(i);
        eventually(
            DEADLINE,
            &format!("node{i} shows from_cli via the CLI"),
            || async move {
                let dbs = influx_cli(p, &["-format", "csv", "-execute", "SHOW DATABASES"]).await;
                let rps = influx_cli(
                    p,
                    &[
                        "-format",
                        "csv",
                        "-execute",
                        "SHOW RETENTION POLICIES ON from_cli",
                    ],
                )
                .await;
                let users = influx_cli(p, &["-format", "csv", "-execute", "SHOW USERS"]).await;
                let ok = dbs.lines().any(|l| l == "databases,from_cli")
                    && rps
                        .lines()
                        .any(|l| l.starts_with("two_weeks,336h0m0s,") && l.ends_with(",true"))
                    && users.lines().any(|l| l == "carol,false");
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "SHOW DATABASES:\n{dbs}SHOW RETENTION POLICIES:\n{rps}SHOW USERS:\n{users}"
                    ))
                }
            },
        )
        .await;
    }

    // A point inserted through the CLI stays on its node.
    influx_cli(
        port(1),
        &[
            "-database",
            "from_cli",
            "-execute",
            "INSERT temperature,room=a value=21.5",
        ],
    )
    .await;
    influx_cli(port(1), &["-execute", "CREATE DATABASE cli_marker"]).await;
    wait_databases(&c.apis(), &["cli_marker"], &[]).await;
    for i in 0..3 {
        let out = influx_cli(
            port(i),
            &[
                "-database",
                "from_cli",
                "-format",
                "csv",
                "-execute",
                "SELECT count(value) FROM temperature",
            ],
        )
        .await;
        let counted = out.lines().find(|l| l.starts_with("temperature,"));
        if i == 1 {
            assert!(
                counted.is_some_and(|l| l.ends_with(",1")),
                "node1: the point it was given:\n{out}"
            );
        } else {
            assert_eq!(counted, None, "node{i}: a point written to node1:\n{out}");
        }
    }
    influx_cli(port(2), &["-execute", "DROP DATABASE from_cli"]).await;
    wait_databases(&c.apis(), &["cli_marker"], &["from_cli"]).await;
}

/// `auth-enabled` servers with a shared secret, agents acting through JWTs:
/// the first admin, databases and users made on one node reach the others.
#[tokio::test]
async fn auth_enabled_servers_stay_in_sync() {
    const SECRET: &str = "cluster-test-shared-secret";
    let c = Cluster::start(&[], InfluxdOptions::auth(SECRET), false).await;
    let apis = c.apis();

    // Auth is really on: nothing but the first admin without credentials.
    let (status, _) = apis[1].raw_query("SHOW DATABASES", None).await;
    assert!(
        status == 401 || status == 403,
        "an auth-enabled server refuses anonymous queries: HTTP {status}"
    );
    apis[0]
        .exec("CREATE USER admin WITH PASSWORD 'x' WITH ALL PRIVILEGES")
        .await;

    // The admin made on node0 exists on node1 and node2 (where its password
    // is not 'x': InfluxQL cannot copy a hash; a JWT names the user instead).
    let admin: Vec<InfluxApi> = vec![
        apis[0].login("admin", "x"),
        apis[1].jwt(SECRET, "admin"),
        apis[2].jwt(SECRET, "admin"),
    ];
    on_every(&admin, "admin everywhere", |api| async move {
        let (status, body) = api.raw_query("SHOW USERS", None).await;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let users = api.users().await;
        same("SHOW USERS", &Some(true), &users.get("admin").copied())
    })
    .await;

    admin[0].exec("CREATE DATABASE secure").await;
    admin[0]
        .exec("CREATE USER bob WITH PASSWORD 'bob-pw'")
        .await;
    admin[0].exec("GRANT READ ON secure TO bob").await;
    wait_databases(&admin, &["secure"], &[]).await;
    on_every(&admin, "bob everywhere, reading secure", |api| async move {
        let users = api.users().await;
        same("bob admin", &Some(false), &users.get("bob").copied())?;
        let expected = [("secure".to_owned(), "READ".to_owned())]
            .into_iter()
            .collect();
        same("SHOW GRANTS FOR bob", &expected, &api.grants("bob").await?)
    })
    .await;

    // And the other way: a change made on node1 reaches node0.
    admin[1].exec("CREATE DATABASE from_node1").await;
    admin[1].exec("DROP USER bob").await;
    wait_databases(&admin, &["secure", "from_node1"], &[]).await;
    on_every(&admin, "bob gone everywhere", |api| async move {
        let users = api.users().await;
        same("bob", &None, &users.get("bob").copied())
    })
    .await;
    c.wait_same_version().await;
}
