//! A replicating cluster for the tests of replicated writes and of the
//! cluster's InfluxDB semantics: a manager (1 s heartbeats) and `auth-enabled`
//! influxd servers, each behind a `cflux-agent` with `--replicate`; the
//! first admin, a database and a writer and a reader set up through the
//! first front door. Clients talk to the front doors; what each node
//! stores is read from its influxd directly.

use std::time::Duration;

use reqwest::StatusCode;

use super::agent::start_nodes_with;
use super::influxd::{eventually, AgentOptions, InfluxApi, InfluxdOptions};
use super::process::free_ports;
use super::{metric, Manager};

pub const SECRET: &str = "replication-test-shared-secret";
pub const CLUSTER: &str = "replicated";
pub const ADMIN_PW: &str = "admin-pw";
pub const DB: &str = "metrics";
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Node {
    pub door: String,
    pub node: super::agent::Node,
}

impl Node {
    pub fn api(&self) -> InfluxApi {
        InfluxApi::new(&self.door)
    }

    /// Points of `measurement` stored in this node's influxd (asked directly).
    pub async fn count(&self, measurement: &str) -> u64 {
        self.count_in(DB, measurement).await
    }

    /// Points of `measurement` in `db` (0 when the database is missing).
    pub async fn count_in(&self, db: &str, measurement: &str) -> u64 {
        self.node
            .influxd
            .api()
            .jwt(SECRET, "admin")
            .select_number(db, &format!("SELECT count(v) FROM {measurement}"))
            .await
            .map_or(0, |n| n as u64)
    }

    pub async fn databases(&self) -> std::collections::BTreeSet<String> {
        self.node
            .influxd
            .api()
            .jwt(SECRET, "admin")
            .databases()
            .await
    }

    pub async fn metrics(&self) -> String {
        self.node.agent.metrics().await
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub manager: Manager,
    _secret_dir: tempfile::TempDir,
}

/// `n` influxd servers, each behind an agent with a front door and
/// `--replicate` in `cluster`; `extra(i)` adds flags to node `i`'s agent.
/// Waits until every agent answers, nothing more.
pub async fn start_doors(
    n: usize,
    manager: &Manager,
    cluster: &str,
    mut influxd: InfluxdOptions,
    secret: &std::path::Path,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Node> {
    let ports = free_ports(n);
    // As with `--replicate` in production: the front door fires the
    // subscriptions, influxd's own subscriber service is off.
    influxd
        .env
        .push(("INFLUXDB_SUBSCRIBER_ENABLED".into(), "false".into()));
    let nodes = start_nodes_with(n, &influxd, |i| {
        let mut options = AgentOptions::new(&manager.url(), cluster);
        options.args = vec![
            "--frontdoor-listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--replicate".into(),
            "--replication-secret-file".into(),
            secret.display().to_string(),
        ];
        options.args.extend(extra(i));
        options
    })
    .await;
    nodes
        .into_iter()
        .zip(ports)
        .map(|(node, port)| Node {
            door: format!("http://127.0.0.1:{port}"),
            node,
        })
        .collect()
}

impl Cluster {
    /// A manager (1 s heartbeats) and `n` replicating nodes; `extra(i)` adds
    /// flags to node `i`'s agent.
    pub async fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
        Cluster::start_on(manager, n, extra).await
    }

    /// [`Cluster::start`] on a manager started as the caller wants it.
    pub async fn start_on(
        manager: Manager,
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let secret_dir = tempfile::tempdir().expect("a temp dir");
        let secret = secret_dir.path().join("replication.secret");
        std::fs::write(&secret, "members-only-credential\n").expect("write the secret");
        let influxd = InfluxdOptions::auth(SECRET);
        let nodes = start_doors(n, &manager, CLUSTER, influxd, &secret, extra).await;
        let c = Cluster {
            nodes,
            manager,
            _secret_dir: secret_dir,
        };
        c.bootstrap().await;
        c
    }

    /// The members' credential file (`--replication-secret-file`).
    pub fn secret_file(&self) -> std::path::PathBuf {
        self._secret_dir.path().join("replication.secret")
    }

    /// Starts `n` more replicating nodes in the cluster (nothing awaited
    /// but their agents answering).
    pub async fn add(&mut self, n: usize, extra: impl Fn(usize) -> Vec<String>) {
        let influxd = InfluxdOptions::auth(SECRET);
        let secret = self.secret_file();
        let nodes = start_doors(n, &self.manager, CLUSTER, influxd, &secret, extra).await;
        self.nodes.extend(nodes);
    }

    /// The first admin, the database and the users, known on every node,
    /// and every node knowing its peers.
    pub async fn bootstrap(&self) {
        let a = &self.nodes[0];
        let (status, body) = a
            .api()
            .raw_query(
                &format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
                None,
            )
            .await;
        assert_eq!(status, 200, "the first admin: {body}");
        let admin = a.api().login("admin", ADMIN_PW);
        admin.exec(&format!("CREATE DATABASE {DB}")).await;
        admin.exec("CREATE USER writer WITH PASSWORD 'w-pw'").await;
        admin.exec(&format!("GRANT WRITE ON {DB} TO writer")).await;
        admin.exec("CREATE USER reader WITH PASSWORD 'r-pw'").await;
        admin.exec(&format!("GRANT READ ON {DB} TO reader")).await;
        let peers = self.nodes.len() - 1;
        for n in &self.nodes {
            eventually(DEADLINE, &format!("{} is set up", n.door), || async {
                let dbs = n.node.influxd.api().jwt(SECRET, "admin").databases().await;
                let grants = n
                    .node
                    .influxd
                    .api()
                    .jwt(SECRET, "admin")
                    .grants("reader")
                    .await?;
                let known = metric(&n.metrics().await, "cflux_replication_peers");
                if dbs.contains(DB) && grants.contains_key(DB) && known == Some(peers as f64) {
                    Ok(())
                } else {
                    Err(format!(
                        "databases {dbs:?}, reader {grants:?}, peers {known:?}"
                    ))
                }
            })
            .await;
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// `count` points of `measurement` from timestamp `from` (seconds), tagged
/// with `batch`.
pub fn lines(measurement: &str, batch: u64, from: u64, count: u64) -> String {
    (from..from + count)
        .map(|t| format!("{measurement},batch={batch} v={t} {t}\n"))
        .collect()
}

/// A write through `door` as `user`: the status and the body.
pub async fn write(
    door: &str,
    user: (&str, &str),
    query: &str,
    body: String,
) -> (StatusCode, String) {
    write_to(door, user, DB, query, body).await
}

/// A write to `db` through `door` as `user`.
pub async fn write_to(
    door: &str,
    user: (&str, &str),
    db: &str,
    query: &str,
    body: String,
) -> (StatusCode, String) {
    let r = http()
        .post(format!("{door}/write?db={db}&precision=s{query}"))
        .basic_auth(user.0, Some(user.1))
        .body(body)
        .send()
        .await
        .expect("the front door answers");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

pub const WRITER: (&str, &str) = ("writer", "w-pw");

pub async fn wait_counts(nodes: &[&Node], measurement: &str, want: u64) {
    for n in nodes {
        eventually(
            DEADLINE,
            &format!("{want} points of {measurement} on {}", n.door),
            || async {
                let have = n.count(measurement).await;
                if have == want {
                    Ok(())
                } else {
                    Err(format!("{have} points"))
                }
            },
        )
        .await;
    }
}
