//! `cfluxctl verify` against real influxd servers: two nodes of one cluster
//! (catalog synced by their agents) holding points in two databases and two
//! retention policies; a difference made on purpose is reported where it is
//! (database, policy, measurement, bucket) with exit code 3, and none once
//! the missing points are written.

mod support;

use std::time::Duration;

use support::influxd::{eventually, start_nodes, AgentOptions, InfluxdOptions};
use support::Manager;

const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: &str = "verified";
const DAY_NS: i64 = 86_400_000_000_000;
/// 2023-11-14T00:00:00Z, a bucket boundary.
const T0: i64 = 1_699_920_000_000_000_000;

/// `n` points of `measurement` with two fields, one minute apart from `start`.
fn points(measurement: &str, start: i64, n: i64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{measurement},host=h{} user={i},idle={} {}\n",
                i % 3,
                i * 2,
                start + i * 60_000_000_000
            )
        })
        .collect()
}

fn verify(manager: &Manager) -> (Option<i32>, serde_json::Value) {
    let out = manager.ctl_in(Some(CLUSTER), &["-o", "json", "verify"]);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {out:?}"));
    (out.status.code(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_difference_where_it_is_and_none_once_it_is_filled() {
    let manager = Manager::start_with(&["--heartbeat-interval", "300ms"]).await;
    let nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    for n in &nodes {
        n.agent.wait_registered(DEADLINE).await;
    }
    let (a, b) = (nodes[0].api(), nodes[1].api());
    a.exec("CREATE DATABASE metrics").await;
    a.exec("CREATE DATABASE logs").await;
    a.exec(r#"CREATE RETENTION POLICY "week" ON "metrics" DURATION 7d REPLICATION 1"#)
        .await;
    eventually(DEADLINE, "the catalog reaches node 1", || async {
        let policies = b.retention_policies("metrics").await?;
        if b.databases().await.contains("logs") && policies.iter().any(|p| p.name == "week") {
            Ok(())
        } else {
            Err(format!("{policies:?}"))
        }
    })
    .await;

    // Both nodes: the same points, the "week" policy with recent ones.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for api in [&a, &b] {
        api.write("metrics", &points("cpu", T0, 3_000)).await;
        api.write("logs", &points("lines", T0, 500)).await;
        api.write_rp("metrics", "week", &points("cpu", now_ns - DAY_NS, 100))
            .await;
    }
    let (code, same) = verify(&manager);
    assert_eq!(code, Some(0), "{same}");
    assert_eq!(same["same"], true);
    assert_eq!(same["measurements"], 3);
    // Two fields per point: 3,600 points, 7,200 values on each node.
    let ids: Vec<String> = same["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert_eq!(same["values"][id], 7_200, "{same}");
    }

    // Seven points only on node 0, on the third day of "cpu" in autogen.
    let extra = points("cpu", T0 + 3 * DAY_NS, 7);
    a.write("metrics", &extra).await;
    let (code, differ) = verify(&manager);
    assert_eq!(code, Some(3), "{differ}");
    assert_eq!(differ["same"], false);
    let differences = differ["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 1, "{differ}");
    let d = &differences[0];
    assert_eq!(
        (&d["database"], &d["policy"], &d["measurement"]),
        (&"metrics".into(), &"autogen".into(), &"cpu".into())
    );
    assert_eq!(d["buckets_differing"], 1);
    assert_eq!(d["first_differing_bucket"], "2023-11-17T00:00:00Z");
    let counts: Vec<u64> = ids
        .iter()
        .map(|id| d["values"][id].as_u64().unwrap())
        .collect();
    let a_id = nodes[0].agent.node_id().await.expect("registered");
    let a_index = ids
        .iter()
        .position(|id| *id == a_id)
        .expect("node 0 listed");
    assert_eq!(counts[a_index], 6_014);
    assert_eq!(counts[1 - a_index], 6_000);

    // The table says the same to people.
    let table = manager.ctl_in(Some(CLUSTER), &["verify"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("1 of 3 measurements differ"), "{text}");

    // Filled in: the same again.
    b.write("metrics", &extra).await;
    let (code, same) = verify(&manager);
    assert_eq!(code, Some(0), "{same}");
}
