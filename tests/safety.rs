//! Nothing one misconfigured node does may destroy the cluster's data: real
//! influxd servers, real agents, a real manager. A fresh meta directory
//! under an old state directory rejoins and receives the catalog; a
//! zero-byte `meta.db` drops nothing; `/health` turns 503 and back.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::influxd::{eventually, start_nodes, Agent, AgentOptions, Influxd, InfluxdOptions};
use support::Manager;

const CLUSTER: &str = "safety";
const DEADLINE: Duration = Duration::from_secs(30);

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `/health`'s status code and body.
async fn health(agent: &Agent) -> (u16, serde_json::Value) {
    let r = support::http()
        .get(format!("{}/health", agent.url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or_default()),
        Err(e) => (0, serde_json::json!({ "error": e.to_string() })),
    }
}

async fn wait_health(agent: &Agent, code: u16, what: &str) -> serde_json::Value {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let seen = &last;
    eventually(DEADLINE, what, move || async move {
        let (c, body) = health(agent).await;
        let shown = format!("{c} {body}");
        *seen.lock().unwrap() = body;
        if c == code {
            Ok(())
        } else {
            Err(shown)
        }
    })
    .await;
    last.into_inner().unwrap()
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
    let healthy = wait_health(&nodes[1].agent, 200, "node1 healthy").await;
    assert_eq!(healthy["status"], "ok", "{healthy}");
    assert_eq!(healthy["cluster"], CLUSTER, "{healthy}");

    // A zero-byte meta.db under node1's synced agent: influxd itself would
    // refuse the file; the agent must not read it as an empty catalog.
    let meta_db = nodes[1].influxd.meta_dir().join("meta.db");
    let saved = std::fs::read(&meta_db).expect("read meta.db");
    std::fs::write(&meta_db, b"").expect("truncate meta.db");
    let failing = wait_health(&nodes[1].agent, 503, "node1 failing on an empty meta.db").await;
    assert!(
        failing["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("empty"),
        "{failing}"
    );
    std::fs::write(&meta_db, &saved).expect("restore meta.db");
    wait_health(&nodes[1].agent, 200, "node1 healthy again").await;
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
    wait_health(&rejoined, 200, "the rejoined node is healthy").await;
    // Nothing was dropped anywhere: node0 keeps its databases, user and points.
    assert_eq!(a.databases().await, both);
    assert!(a.users().await.contains_key("alice"));
    assert_eq!(
        a.select_number("db1", "SELECT count(v) FROM m").await,
        Some(3.0)
    );
}
