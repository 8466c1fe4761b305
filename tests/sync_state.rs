//! Sync state travels with the heartbeat: real agents beside real influxd
//! servers report the catalog version they applied and why their last sync
//! step failed; `ListNodes`, `cfluxctl nodes` and `cfluxctl status` show it,
//! a node whose influxd is down is marked failing and behind, and recovers;
//! a dead one makes `status` fail too.
//! Nodes that report nothing (the legacy protocol) are unknown, never
//! behind, and the legacy `GET /nodes` keeps its shape.

mod support;

use std::process::Output;
use std::time::Duration;

use cflux::proto::{HeartbeatRequest, Node as ListedNode, SyncState};
use support::influxd::{eventually, same, start_nodes, AgentOptions, InfluxdOptions};
use support::Manager;

/// Propagation is usually well under a second; this leaves room for a
/// loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: &str = "synced";

async fn list_nodes(manager: &Manager) -> Vec<ListedNode> {
    support::list_nodes(&mut manager.grpc_client().await, CLUSTER).await
}

fn ctl(manager: &Manager, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cfluxctl"))
        .args(args)
        .env("CFLUX_ENDPOINT", manager.url())
        .env_remove("CFLUX_TOKEN")
        .env_remove("CFLUX_TOKEN_FILE")
        .env_remove("CLUSTER")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cfluxctl")
}

/// Each listed node's (applied version, lag, sync error), by hostname order.
fn sync_of(nodes: &[ListedNode]) -> Vec<Option<(u64, Option<u64>, String)>> {
    nodes
        .iter()
        .map(|n| {
            n.sync
                .as_ref()
                .map(|s| (s.applied_version, n.lag, s.sync_error.clone()))
        })
        .collect()
}

/// Every node reports the cluster's current version and history, no error.
async fn wait_all_in_sync(manager: &Manager, count: usize) {
    eventually(
        DEADLINE,
        "every node reports the cluster's version",
        || async {
            let current = support::get_meta(&mut manager.grpc_client().await, CLUSTER).await;
            let nodes = list_nodes(manager).await;
            let expected = vec![Some((current.version, Some(0), String::new())); count];
            same("sync states", &expected, &sync_of(&nodes))?;
            for n in &nodes {
                let history = n.sync.as_ref().map(|s| s.applied_history_id.as_str());
                same(&n.hostname, &Some(current.history_id.as_str()), &history)?;
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_node_whose_apply_fails_is_shown_failing_and_behind_until_it_recovers() {
    let manager = Manager::start_with(&["--heartbeat-interval", "300ms", "--node-ttl", "3s"]).await;
    let mut nodes = start_nodes(
        2,
        &InfluxdOptions::default(),
        &AgentOptions::new(&manager.url(), CLUSTER),
    )
    .await;
    for n in &nodes {
        n.agent.wait_registered(DEADLINE).await;
    }
    let (api0, api1) = (nodes[0].api(), nodes[1].api());
    api0.exec("CREATE DATABASE first").await;
    wait_all_in_sync(&manager, 2).await;
    let ok = ctl(&manager, &["status", CLUSTER]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    // node1's influxd goes down: its agent cannot apply the next change.
    let failing_id = nodes[1].agent.node_id().await.expect("registered");
    nodes[1].influxd.kill();
    api0.exec("CREATE DATABASE while_down").await;
    let version = eventually(DEADLINE, "node1 reports the failed apply", || async {
        let listed = list_nodes(&manager).await;
        let n = listed
            .iter()
            .find(|n| n.node_id == failing_id)
            .ok_or("node1 not listed")?;
        let s = n.sync.as_ref().ok_or("node1 reports nothing")?;
        if s.sync_error.is_empty() || n.lag != Some(1) {
            return Err(format!("{n:?}"));
        }
        Ok(s.applied_version)
    })
    .await;

    let json: serde_json::Value =
        serde_json::from_slice(&ctl(&manager, &["-o", "json", "nodes"]).stdout).expect("JSON");
    let listed = json
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node_id"] == failing_id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed["sync"], "failing", "{json}");
    assert_eq!(listed["applied_version"], version, "{json}");
    assert_eq!(listed["lag"], 1, "{json}");
    assert!(
        listed["sync_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("pull: ")),
        "{json}"
    );

    let status = ctl(&manager, &["status"]);
    assert_eq!(status.status.code(), Some(3), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&failing_id) && text.contains("failing: pull: "),
        "{text}"
    );

    // Back up: the agent applies the catalog again and reports it.
    nodes[1].influxd.start_again().await;
    wait_all_in_sync(&manager, 2).await;
    assert!(api1.databases().await.contains("while_down"));
    let recovered = ctl(&manager, &["status"]);
    assert_eq!(recovered.status.code(), Some(0), "{recovered:?}");

    // A dead node needs attention too, whatever it reported last.
    nodes[1].agent.kill();
    let dead = eventually(DEADLINE, "node1 listed dead", || async {
        let status = ctl(&manager, &["-o", "json", "status"]);
        let doc: serde_json::Value =
            serde_json::from_slice(&status.stdout).map_err(|e| format!("{e}: {status:?}"))?;
        same(
            "dead nodes",
            &serde_json::json!(1),
            &doc["clusters"][0]["dead"],
        )?;
        Ok(status)
    })
    .await;
    assert_eq!(dead.status.code(), Some(3), "{dead:?}");
}

#[tokio::test]
async fn nodes_that_report_nothing_are_unknown_and_legacy_listings_keep_their_shape() {
    let manager = Manager::start().await;
    let http = support::http();
    let registered: serde_json::Value = http
        .post(manager.http_url(&format!("/nodes/{CLUSTER}")))
        .body(r#"{"ip": "10.0.0.9,", "hostname": "legacy-node"}"#)
        .send()
        .await
        .expect("legacy registration")
        .json()
        .await
        .expect("JSON");
    let id = registered["id"].as_str().expect("an id").to_owned();
    let beat = http
        .put(manager.http_url(&format!("/nodes/{CLUSTER}/{id}")))
        .send()
        .await
        .expect("legacy heartbeat");
    assert_eq!(beat.status(), 200);

    let listed = list_nodes(&manager).await;
    assert_eq!(
        (listed[0].sync.as_ref(), listed[0].lag),
        (None, None),
        "{listed:?}"
    );
    let status = ctl(&manager, &["-o", "json", "status"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "unknown is no alarm: {status:?}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(doc["clusters"][0]["unknown"], 1, "{doc}");

    // A gRPC node reporting: the legacy listing still has exactly its fields.
    let mut grpc = manager.grpc_client().await;
    let grpc_id =
        support::register(&mut grpc, support::registration(CLUSTER, "", "grpc-node")).await;
    grpc.heartbeat(HeartbeatRequest {
        cluster: CLUSTER.into(),
        node_id: grpc_id.clone(),
        sync: Some(SyncState {
            applied_version: 0,
            applied_history_id: String::new(),
            sync_error: "pull: influxd is down".into(),
            ..SyncState::default()
        }),
    })
    .await
    .expect("heartbeat");
    let legacy = support::get_json(&manager, &format!("/nodes/{CLUSTER}")).await;
    for node in legacy.as_array().expect("an array") {
        let mut keys: Vec<&str> = node
            .as_object()
            .expect("an object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["alive", "bind-address", "hostname", "id", "ip"],
            "{legacy}"
        );
    }

    // The reason is bounded: beyond 512 bytes the heartbeat is refused,
    // naming the limit, not the content.
    let refused = grpc
        .heartbeat(HeartbeatRequest {
            cluster: CLUSTER.into(),
            node_id: grpc_id,
            sync: Some(SyncState {
                sync_error: "e".repeat(513),
                catch_up: String::new(),
                ..SyncState::default()
            }),
        })
        .await
        .expect_err("an oversized reason");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("sync_error is 513 bytes long; the limit is 512")
            && !refused.message().contains("eee"),
        "{refused:?}"
    );
}
