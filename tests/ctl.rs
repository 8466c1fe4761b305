//! `cfluxctl` against a real manager: listings, the catalog in words,
//! deregistration, and a clear failure for an unknown node.

mod support;

use std::process::Output;

use cflux::influx::catalog::{Catalog, Database, RetentionPolicy, User};
use cflux::proto::{PushMetaRequest, RegisterRequest};
use support::Manager;

fn ctl(manager: &Manager, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cfluxctl"))
        .args(args)
        .env("CFLUX_ENDPOINT", manager.url())
        .env_remove("CFLUX_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run cfluxctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn cfluxctl_lists_shows_and_deregisters() {
    let manager = Manager::start().await;
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

    let nodes = ctl(&manager, &["nodes", "--cluster", "prod"]);
    assert!(nodes.status.success(), "{nodes:?}");
    let text = stdout(&nodes);
    assert!(
        text.contains(&node) && text.contains("influx-a") && text.contains("alive"),
        "{text}"
    );

    let clusters = stdout(&ctl(&manager, &["clusters"]));
    let row = clusters
        .lines()
        .find(|l| l.starts_with("prod"))
        .unwrap_or_default();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["prod", "1", "1", "1"],
        "{clusters}"
    );

    let shown = stdout(&ctl(&manager, &["catalog", "--cluster", "prod"]));
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

    let unknown = ctl(
        &manager,
        &["deregister", "--cluster", "prod", "no-such-node"],
    );
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not registered"),
        "{unknown:?}"
    );

    let gone = ctl(&manager, &["deregister", "--cluster", "prod", &node]);
    assert!(gone.status.success(), "{gone:?}");
    assert!(!stdout(&ctl(&manager, &["nodes"])).contains(&node));
}
