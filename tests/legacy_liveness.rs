//! A node on the legacy protocol heartbeats at the pace its manager's TTL
//! needs (read from the registration answer's `expirationDate`), so a
//! manager with a short `--node-ttl` never lists it dead.

mod support;

use std::time::{Duration, Instant};

use support::agent::{start_nodes, AgentOptions};
use support::influxd::InfluxdOptions;
use support::{list_nodes, wait_until, Manager};

#[tokio::test]
async fn a_legacy_node_stays_alive_under_a_short_ttl() {
    // The gRPC answer's heartbeat interval does not reach a legacy node.
    let manager = Manager::start_with(&["--node-ttl", "3s", "--heartbeat-interval", "1s"]).await;
    let options = AgentOptions::new(&manager.url(), "short-ttl").legacy();
    let nodes = start_nodes(1, &InfluxdOptions::default(), &options).await;
    let node_id = nodes[0]
        .agent
        .wait_registered(Duration::from_secs(20))
        .await;
    let mut grpc = manager.grpc_client().await;
    wait_until(Duration::from_secs(10), "the node listed alive", || {
        let mut grpc = grpc.clone();
        async move {
            list_nodes(&mut grpc, "short-ttl")
                .await
                .iter()
                .any(|n| n.alive)
        }
    })
    .await;

    // Four TTLs: at the original 5 s pace it would be listed dead in each.
    let watched = Instant::now();
    let mut looks = 0;
    while watched.elapsed() < Duration::from_secs(12) {
        let listed = list_nodes(&mut grpc, "short-ttl").await;
        let node = listed.iter().find(|n| n.node_id == node_id);
        assert!(
            node.is_some_and(|n| n.alive),
            "listed dead {:?} after it was alive: {listed:?}\n{}",
            watched.elapsed(),
            nodes[0].agent.log()
        );
        looks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(looks > 20, "looked only {looks} times");
}
