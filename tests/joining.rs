//! Joining a running cluster: a manager and three `auth-enabled` influxd
//! servers (a shared secret, databases, policies, continuous queries,
//! subscriptions and users, an admin among them), and a fourth server that
//! joins fresh — or wiped and restarted, as a reinstall — with no manual step.
//! Also: a statement influxd refuses leaves every other entity applied, and
//! no node's `_internal` ever reaches the cluster's catalog.

mod support;

use std::time::Duration;

use cflux::influx::catalog::{Catalog, ContinuousQuery, Database, User, INTERNAL_DATABASE};
use prost::Message;
use support::influxd::{
    eventually, free_port, same, start_nodes, Agent, AgentOptions, InfluxApi, Influxd,
    InfluxdOptions, Node,
};
use support::{push_request, Manager};

const SECRET: &str = "joining-test-shared-secret";
const CLUSTER: &str = "joining";
const ADMIN_PW: &str = "admin-pw";
const ALICE_PW: &str = "alice-pw";
/// Propagation is usually well under a second; this leaves room for a
/// loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// A manager and three auth-enabled nodes holding a catalog with users.
struct Cluster {
    nodes: Vec<Node>,
    manager: Manager,
}

impl Cluster {
    async fn start() -> Cluster {
        let manager = Manager::start().await;
        let nodes = start_nodes(
            3,
            &InfluxdOptions::auth(SECRET),
            &AgentOptions::new(&manager.url(), CLUSTER),
        )
        .await;
        let cluster = Cluster { nodes, manager };
        // No admin yet: influxd accepts this one statement without credentials.
        cluster.nodes[0]
            .api()
            .exec(&format!(
                "CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"
            ))
            .await;
        let admin = cluster.nodes[0].api().jwt(SECRET, "admin");
        for q in [
            "CREATE DATABASE db1".to_owned(),
            "CREATE RETENTION POLICY week ON db1 DURATION 7d REPLICATION 1".to_owned(),
            "CREATE DATABASE db2 WITH DURATION 30d NAME month".to_owned(),
            "CREATE CONTINUOUS QUERY cq1 ON db1 BEGIN SELECT mean(v) INTO m_1h FROM m GROUP BY time(1h) END".to_owned(),
            "CREATE SUBSCRIPTION sub1 ON db1.autogen DESTINATIONS ALL 'udp://127.0.0.1:9999'".to_owned(),
            format!("CREATE USER alice WITH PASSWORD '{ALICE_PW}'"),
            "GRANT READ ON db1 TO alice".to_owned(),
            "GRANT ALL ON db2 TO alice".to_owned(),
        ] {
            admin.exec(&q).await;
        }
        let wanted = cluster.wanted_shape();
        eventually(DEADLINE, "the catalog reaches the manager", || async {
            same("manager", &wanted, &shape(&cluster.catalog().await))
        })
        .await;
        cluster
    }

    /// What the manager's catalog must hold after `start`.
    fn wanted_shape(&self) -> Shape {
        Shape {
            databases: vec!["db1".into(), "db2".into()],
            policies: vec!["db1.autogen".into(), "db1.week".into(), "db2.month".into()],
            queries: vec!["db1.cq1".into()],
            subscriptions: vec!["db1.autogen.sub1".into()],
            users: vec![
                ("admin".into(), true, vec![]),
                (
                    "alice".into(),
                    false,
                    vec!["db1:Read".into(), "db2:All".into()],
                ),
            ],
        }
    }

    /// The manager's catalog, decoded.
    async fn catalog(&self) -> Catalog {
        let s = self.snapshot().await;
        if s.data.is_empty() {
            return Catalog::default();
        }
        Catalog::from_meta_bytes(&s.data).expect("the manager holds valid meta.Data")
    }

    async fn snapshot(&self) -> cflux::proto::MetaSnapshot {
        support::get_meta(&mut self.manager.grpc_client().await, CLUSTER).await
    }
}

/// A catalog's entities by name, passwords aside.
#[derive(Debug, PartialEq)]
struct Shape {
    databases: Vec<String>,
    policies: Vec<String>,
    queries: Vec<String>,
    subscriptions: Vec<String>,
    users: Vec<(String, bool, Vec<String>)>,
}

fn shape(c: &Catalog) -> Shape {
    let dbs = || c.databases.values();
    Shape {
        databases: c.databases.keys().cloned().collect(),
        policies: dbs()
            .flat_map(|d| {
                d.retention_policies
                    .keys()
                    .map(move |p| format!("{}.{p}", d.name))
            })
            .collect(),
        queries: dbs()
            .flat_map(|d| {
                d.continuous_queries
                    .keys()
                    .map(move |q| format!("{}.{q}", d.name))
            })
            .collect(),
        subscriptions: dbs()
            .flat_map(|d| {
                d.retention_policies.values().flat_map(move |p| {
                    p.subscriptions
                        .keys()
                        .map(move |s| format!("{}.{}.{s}", d.name, p.name))
                })
            })
            .collect(),
        users: c
            .users
            .values()
            .map(|u| {
                let privileges = u
                    .privileges
                    .iter()
                    .map(|(db, p)| format!("{db}:{p:?}"))
                    .collect();
                (u.name.clone(), u.admin, privileges)
            })
            .collect(),
    }
}

/// A fourth server joining the cluster, its agent the front door.
struct Joiner {
    door: String,
    agent: Agent,
    influxd: Influxd,
    _dir: tempfile::TempDir,
}

impl Joiner {
    async fn start(manager: &Manager) -> Joiner {
        let dir = tempfile::Builder::new()
            .prefix("cflux-joiner-")
            .tempdir()
            .expect("a temp dir");
        let influxd =
            Influxd::start(&dir.path().join("influxd"), &InfluxdOptions::auth(SECRET)).await;
        let port = free_port();
        let mut options = AgentOptions::new(&manager.url(), CLUSTER);
        options.args = vec!["--frontdoor-listen".into(), format!("127.0.0.1:{port}")];
        let agent = Agent::start(&influxd, &dir.path().join("agent"), &options).await;
        Joiner {
            door: format!("http://127.0.0.1:{port}"),
            agent,
            influxd,
            _dir: dir,
        }
    }

    /// The server's own catalog, read from its `meta.db` as the agent does.
    fn local_catalog(&self) -> Result<Catalog, String> {
        let bytes =
            std::fs::read(self.influxd.meta_dir().join("meta.db")).map_err(|e| e.to_string())?;
        Catalog::from_meta_bytes(&bytes).map_err(|e| e.to_string())
    }

    /// `Ok` once the server holds `wanted` and both users log in through
    /// its front door with their cluster passwords.
    async fn has_joined(&self, wanted: &Shape) -> Result<(), String> {
        same("joined server", wanted, &shape(&self.local_catalog()?))?;
        for (user, pw) in [("admin", ADMIN_PW), ("alice", ALICE_PW)] {
            let (status, body) = InfluxApi::new(&self.door)
                .login(user, pw)
                .raw_query("SHOW DATABASES", None)
                .await;
            if status != 200
                || body.get("error").is_some()
                || body["results"][0].get("error").is_some()
            {
                return Err(format!(
                    "{user} through the front door: HTTP {status} {body}"
                ));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_auth_enabled_server_joins_with_the_whole_catalog() {
    let cluster = Cluster::start().await;
    let joiner = Joiner::start(&cluster.manager).await;
    let wanted = cluster.wanted_shape();
    eventually(DEADLINE, "the fresh server holds the whole catalog", || {
        joiner.has_joined(&wanted)
    })
    .await;
    // A wrong password is still refused.
    let (status, _) = InfluxApi::new(&joiner.door)
        .login("alice", "wrong")
        .raw_query("SHOW DATABASES", None)
        .await;
    assert_eq!(status, 401);
    // Its monitor creates its own _internal (within its 10 s store
    // interval), which never reaches the cluster's catalog.
    let meta_db = joiner.influxd.meta_dir().join("meta.db");
    eventually(DEADLINE, "the server's own _internal exists", || async {
        let bytes = std::fs::read(&meta_db).map_err(|e| e.to_string())?;
        let own =
            cflux::influx::meta_pb::Data::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        if own.databases.iter().any(|d| d.name == INTERNAL_DATABASE) {
            Ok(())
        } else {
            Err("no _internal yet".into())
        }
    })
    .await;
    let catalog = cluster.catalog().await;
    assert!(!catalog.databases.contains_key(INTERNAL_DATABASE));

    // A reinstall: the server's meta and data directories wiped, influxd
    // and its agent started again on empty directories.
    let Joiner {
        door,
        mut agent,
        mut influxd,
        _dir,
    } = joiner;
    agent.stop(DEADLINE).await;
    influxd.kill();
    for dir in [
        influxd.meta_dir(),
        influxd.data_dir(),
        influxd.wal_dir(),
        agent.state_dir.clone(),
    ] {
        std::fs::remove_dir_all(&dir).expect("wipe a directory");
    }
    influxd.start_again().await;
    agent.start_again().await;
    let joiner = Joiner {
        door,
        agent,
        influxd,
        _dir,
    };
    eventually(
        DEADLINE,
        "the reinstalled server holds the whole catalog",
        || joiner.has_joined(&wanted),
    )
    .await;
    same(
        "manager after the reinstall",
        &wanted,
        &shape(&cluster.catalog().await),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_statement_leaves_everything_else_applied() {
    let cluster = Cluster::start().await;
    // A catalog whose new continuous query influxd cannot parse, beside a
    // new database and a new user that do not depend on it.
    let snapshot = cluster.snapshot().await;
    let mut catalog = Catalog::from_meta_bytes(&snapshot.data).unwrap();
    let db1 = catalog.databases.get_mut("db1").unwrap();
    db1.continuous_queries.insert(
        "broken".into(),
        ContinuousQuery {
            name: "broken".into(),
            query: "CREATE CONTINUOUS QUERY broken ON db1 BEGIN SELECT FROM WHERE END".into(),
        },
    );
    catalog
        .databases
        .insert("db3".into(), Database::new("db3", ""));
    catalog.users.insert(
        "carol".into(),
        User::new("carol", "$2a$10$notarealhash", false),
    );
    let pushed = cluster
        .manager
        .grpc_client()
        .await
        .push_meta(push_request(
            CLUSTER,
            snapshot.version,
            &catalog.to_meta_bytes(),
        ))
        .await
        .expect("PushMeta")
        .into_inner();
    assert!(
        matches!(
            pushed.result,
            Some(cflux::proto::push_meta_response::Result::AcceptedVersion(_))
        ),
        "{pushed:?}"
    );
    for node in &cluster.nodes {
        let api = node.api().jwt(SECRET, "admin");
        eventually(
            DEADLINE,
            &format!("{} applies the rest", node.name),
            || async {
                let dbs = api.databases().await;
                let users = api.users().await;
                if dbs.contains("db3") && users.contains_key("carol") {
                    Ok(())
                } else {
                    Err(format!("databases {dbs:?}, users {users:?}"))
                }
            },
        )
        .await;
        eventually(
            DEADLINE,
            &format!("{} reports the refusal", node.name),
            || async {
                let health = node.agent.health().await.unwrap_or_default();
                let error = health["last_apply_error"]["statement"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let metrics = node.agent.metrics().await;
                let counted = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("cflux_node_apply_errors_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                if error.contains("broken") && counted >= 1.0 {
                    Ok(())
                } else {
                    Err(format!("health {health}, apply errors {counted}"))
                }
            },
        )
        .await;
        let failing = node
            .agent
            .wait_health(DEADLINE, 503, "a failed apply makes the node unhealthy")
            .await;
        assert_eq!(failing["influxdb"], "up", "{failing}");
        assert!(
            failing["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("the last apply of the cluster catalog failed"),
            "{failing}"
        );
    }
    // The refused query stays in the cluster's catalog (nothing was dropped),
    // and the nodes' own _internal never got there.
    let after = cluster.catalog().await;
    assert!(after.databases["db1"]
        .continuous_queries
        .contains_key("broken"));
    assert!(after.databases["db1"]
        .continuous_queries
        .contains_key("cq1"));
    assert!(!after.databases.contains_key(INTERNAL_DATABASE));

    // Once the refused query is taken out of the catalog, every apply
    // succeeds whole and the nodes are healthy again.
    let snapshot = cluster.snapshot().await;
    let mut fixed = Catalog::from_meta_bytes(&snapshot.data).unwrap();
    fixed
        .databases
        .get_mut("db1")
        .unwrap()
        .continuous_queries
        .remove("broken");
    cluster
        .manager
        .grpc_client()
        .await
        .push_meta(push_request(
            CLUSTER,
            snapshot.version,
            &fixed.to_meta_bytes(),
        ))
        .await
        .expect("PushMeta");
    for node in &cluster.nodes {
        node.agent
            .wait_health(DEADLINE, 200, "healthy once the apply succeeds")
            .await;
    }
}
