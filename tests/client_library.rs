//! `cflux::Client` as a library, over the in-memory `MetaClient`, against a
//! real manager process: changes travel both ways, concurrent changes merge
//! (a push that conflicts included), a dead first manager fails over, and a
//! manager that lost its state is re-seeded from the nodes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cflux::client::manager::{ManagerSettings, TransportKind};
use cflux::client::metrics::NodeMetrics;
use cflux::client::retry::RetrySettings;
use cflux::client::{Client, InMemoryMeta, NodeSettings};
use cflux::influx::catalog::{Database, User};
use support::{wait_until, Manager};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// A node with in-memory metadata, running until dropped.
struct Node {
    meta: Arc<InMemoryMeta>,
    metrics: Arc<NodeMetrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

/// What a stopped node keeps: its metadata and its state directory.
struct Stopped {
    meta: Arc<InMemoryMeta>,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(endpoints: Vec<String>, cluster: &str, transport: TransportKind) -> Node {
        let stopped = Stopped {
            meta: Arc::new(InMemoryMeta::default()),
            dir: tempfile::tempdir().unwrap(),
        };
        Node::restart(stopped, endpoints, cluster, transport)
    }

    /// Starts a stopped node again, with what it kept.
    fn restart(
        stopped: Stopped,
        endpoints: Vec<String>,
        cluster: &str,
        transport: TransportKind,
    ) -> Node {
        let Stopped { meta, dir } = stopped;
        let client = Client::new(
            NodeSettings {
                cluster: cluster.into(),
                hostname: "in-memory".into(),
                ips: vec!["127.0.0.1".into()],
                http_addr: String::new(),
                version: "test".into(),
                state_dir: dir.path().to_owned(),
                resync_interval: Duration::from_millis(500),
            },
            &ManagerSettings {
                endpoints,
                transport,
                token: None,
                ca_file: None,
                timeout: Duration::from_secs(2),
                retry: RetrySettings {
                    min: Duration::from_millis(20),
                    max: Duration::from_millis(200),
                    ..RetrySettings::default()
                },
            },
            meta.clone(),
        )
        .unwrap();
        let metrics = client.metrics().clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { client.run(token).await });
        Node {
            meta,
            metrics,
            stop,
            task,
            dir,
        }
    }

    fn create_database(&self, name: &str) {
        self.meta.update(|c| {
            c.databases
                .insert(name.into(), Database::new(name, "autogen"));
        });
    }

    fn has_database(&self, name: &str) -> bool {
        self.meta.snapshot().databases.contains_key(name)
    }

    async fn stop(self) -> Stopped {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the client stops on shutdown")
            .unwrap();
        Stopped {
            meta: self.meta,
            dir: self.dir,
        }
    }
}

async fn wait_for_database(nodes: &[&Node], name: &str) {
    wait_until(
        DEADLINE,
        &format!("database {name} on every node"),
        || async { nodes.iter().all(|n| n.has_database(name)) },
    )
    .await;
}

#[tokio::test]
async fn changes_travel_both_ways_and_concurrent_changes_merge() {
    for transport in [TransportKind::Grpc, TransportKind::Http] {
        let manager = Manager::start().await;
        let cluster = format!("lib-{transport:?}");
        let a = Node::start(vec![manager.url()], &cluster, transport);
        let b = Node::start(vec![manager.url()], &cluster, transport);

        a.create_database("from_a");
        wait_for_database(&[&a, &b], "from_a").await;
        b.create_database("from_b");
        wait_for_database(&[&a, &b], "from_b").await;

        // Changes on both nodes at once: the conflict is merged, nothing lost.
        for i in 0..10 {
            a.create_database(&format!("a{i}"));
            b.create_database(&format!("b{i}"));
        }
        for i in 0..10 {
            wait_for_database(&[&a, &b], &format!("a{i}")).await;
            wait_for_database(&[&a, &b], &format!("b{i}")).await;
        }

        // A conflict for certain: b changes while it is stopped and a pushes
        // a change meanwhile, so b's push on its return is against an old
        // version. The merge keeps both changes.
        let stopped = b.stop().await;
        stopped.meta.update(|c| {
            c.databases.insert(
                "made_offline".into(),
                Database::new("made_offline", "autogen"),
            );
        });
        let a_version = a.metrics.version();
        a.create_database("while_b_was_away");
        wait_until(DEADLINE, "a's push is accepted", || async {
            a.metrics.version() > a_version
        })
        .await;
        let b = Node::restart(stopped, vec![manager.url()], &cluster, transport);
        wait_for_database(&[&a, &b], "made_offline").await;
        wait_for_database(&[&b], "while_b_was_away").await;
        assert!(
            b.metrics.pushes(false) >= 1,
            "b's first push after its return must have conflicted"
        );
        b.meta.update(|c| {
            c.databases.remove("from_a");
            c.users
                .insert("ops".into(), User::new("ops", "$2a$10$h", true));
        });
        wait_until(DEADLINE, "drop and user reach node a", || async {
            let s = a.meta.snapshot();
            !s.databases.contains_key("from_a") && s.users.contains_key("ops")
        })
        .await;
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn a_dead_first_manager_fails_over_to_the_next() {
    let manager = Manager::start().await;
    let dead = format!("http://127.0.0.1:{}", support_free_port());
    let a = Node::start(
        vec![dead.clone(), manager.url()],
        "failover",
        TransportKind::Grpc,
    );
    let b = Node::start(vec![manager.url()], "failover", TransportKind::Grpc);
    a.create_database("through_the_second_manager");
    wait_for_database(&[&a, &b], "through_the_second_manager").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_manager_that_lost_its_state_is_reseeded_by_the_nodes() {
    let mut manager = Manager::start().await;
    let a = Node::start(vec![manager.url()], "reseed", TransportKind::Grpc);
    a.create_database("survivor");
    let mut grpc = manager.grpc_client().await;
    wait_until(DEADLINE, "the catalog reaches the manager", || {
        let mut grpc = grpc.clone();
        async move {
            let s = grpc
                .get_meta(cflux::proto::GetMetaRequest {
                    cluster: "reseed".into(),
                })
                .await;
            s.is_ok_and(|s| s.into_inner().version > 0)
        }
    })
    .await;

    manager.kill();
    std::fs::remove_dir_all(manager.data_dir()).unwrap();
    manager.start_again_on_same_port().await;
    grpc = manager.grpc_client().await;

    wait_until(DEADLINE, "the node re-seeds the fresh manager", || {
        let mut grpc = grpc.clone();
        async move {
            let Ok(s) = grpc
                .get_meta(cflux::proto::GetMetaRequest {
                    cluster: "reseed".into(),
                })
                .await
            else {
                return false;
            };
            let data = s.into_inner().data;
            !data.is_empty()
                && cflux::influx::catalog::Catalog::from_meta_bytes(&data)
                    .is_ok_and(|c| c.databases.contains_key("survivor"))
        }
    })
    .await;
    // A node joining afterwards gets the re-seeded catalog.
    let b = Node::start(vec![manager.url()], "reseed", TransportKind::Grpc);
    wait_for_database(&[&b], "survivor").await;
    a.stop().await;
    b.stop().await;
}

fn support_free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}
