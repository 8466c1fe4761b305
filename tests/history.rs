//! The manager guards and remembers the catalog, against real managers (and
//! a real etcd): invalid catalogs are refused on both layers and change
//! nothing; the history lists versions with node names and summaries across
//! restarts, on the embedded store and on etcd; `cfluxctl history`, `diff`
//! and `rollback` show and restore it; a wiped manager starts a new history,
//! and a push based on the old one conflicts.

mod support;

use std::process::Output;

use cflux::influx::catalog::{Catalog, Database, RetentionPolicy, User};
use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{
    push_meta_response, CatalogChange, GetMetaRequest, GetVersionRequest, ListHistoryRequest,
    PushMetaRequest, RestoreVersionRequest,
};
use reqwest::StatusCode;
use support::etcd::EtcdCluster;
use support::{http, register, registration, Manager};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

type Client = ClusterfluxClient<Channel>;

const HOUR: i64 = 3_600_000_000_000;
/// How long an etcd manager may take to serve.
const SERVING: std::time::Duration = std::time::Duration::from_secs(20);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON document a successful `-o json` command printed.
fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {o:?}"))
}

/// A catalog with the databases and users named.
fn catalog(databases: &[&str], users: &[&str]) -> Catalog {
    let mut c = Catalog::default();
    for name in databases {
        let mut db = Database::new(*name, "autogen");
        db.retention_policies.insert(
            "autogen".into(),
            RetentionPolicy::new("autogen", 0, 168 * HOUR, 1),
        );
        c.databases.insert((*name).into(), db);
    }
    for name in users {
        c.users.insert(
            (*name).into(),
            User::new(*name, "$2a$10$secret-hash", false),
        );
    }
    c
}

async fn push(
    c: &mut Client,
    expected: u64,
    expected_history_id: &str,
    data: Vec<u8>,
    node_id: &str,
) -> Result<push_meta_response::Result, tonic::Status> {
    c.push_meta(PushMetaRequest {
        cluster: "prod".into(),
        expected_version: expected,
        data: data.into(),
        node_id: node_id.into(),
        expected_history_id: expected_history_id.into(),
    })
    .await
    .map(|r| r.into_inner().result.expect("a result"))
}

async fn history(c: &mut Client) -> Vec<CatalogChange> {
    c.list_history(ListHistoryRequest {
        cluster: "prod".into(),
        limit: 0,
    })
    .await
    .expect("ListHistory")
    .into_inner()
    .changes
}

async fn current(c: &mut Client) -> cflux::proto::MetaSnapshot {
    c.get_meta(GetMetaRequest {
        cluster: "prod".into(),
    })
    .await
    .expect("GetMeta")
    .into_inner()
}

/// Bytes that are not a valid `meta.Data`, and what each is.
fn invalid_catalogs() -> Vec<(&'static str, Vec<u8>)> {
    let valid = catalog(&["db"], &["u"]).to_meta_bytes();
    let mut without_max_shard_id = Catalog::default().to_meta_bytes();
    // The last record is MaxShardID (field 9): key and a one-byte 0.
    without_max_shard_id.truncate(without_max_shard_id.len() - 2);
    let mut user_without_hash = Catalog::default().to_meta_bytes();
    // Users (field 6) holding only a name.
    user_without_hash.extend_from_slice(&[0x32, 0x03, 0x0a, 0x01, b'u']);
    vec![
        ("garbage", b"not a catalog at all".to_vec()),
        ("truncated", valid[..valid.len() - 3].to_vec()),
        ("zero bytes", Vec::new()),
        ("without MaxShardID", without_max_shard_id),
        ("a user without a hash", user_without_hash),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_catalogs_are_refused_on_both_layers_and_change_nothing() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let good = catalog(&["db"], &["u"]).to_meta_bytes();
    assert_eq!(
        push(&mut c, 0, "", good.clone(), "").await.unwrap(),
        push_meta_response::Result::AcceptedVersion(1)
    );
    for (what, bytes) in invalid_catalogs() {
        let status = push(&mut c, 1, "", bytes.clone(), "")
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(status.message().contains("catalog"), "{what}: {status:?}");

        let r = http()
            .post(m.http_url("/clusters/prod/versions/1"))
            .body(bytes)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{what} over legacy");
        let body: serde_json::Value = r.json().await.expect("a JSON error");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("catalog"),
            "{what}: {body}"
        );
    }
    let s = current(&mut c).await;
    assert_eq!((s.version, s.data.to_vec()), (1, good));
    assert_eq!(
        history(&mut c).await.len(),
        1,
        "no refused push in the history"
    );
    // The error names the missing field and where it sits.
    let status = push(&mut c, 1, "", invalid_catalogs()[4].1.clone(), "")
        .await
        .unwrap_err();
    assert!(
        status.message().contains("hash") && status.message().contains("Data.users[0]"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_and_cfluxctl_shows_diffs_and_rolls_back() {
    let mut m = Manager::start_with(&["--history", "10"]).await;
    let mut c = m.grpc_client().await;
    let node = register(&mut c, registration("prod", "", "influx-a")).await;
    let v1 = catalog(&["db1"], &["bob"]);
    push(&mut c, 0, "", v1.to_meta_bytes(), &node)
        .await
        .unwrap();
    // An original node over the legacy layer: db2 created, bob dropped.
    let r = http()
        .post(m.http_url("/clusters/prod/versions/1"))
        .body(catalog(&["db1", "db2"], &[]).to_meta_bytes())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::OK);

    let check = |changes: &[CatalogChange]| {
        let rows: Vec<_> = changes
            .iter()
            .map(|e| {
                (
                    e.version,
                    e.layer.as_str(),
                    e.hostname.as_str(),
                    e.summary.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    2,
                    "legacy",
                    "",
                    "databases +db2; policies +db2.autogen; users -bob"
                ),
                (1, "grpc", "influx-a", "initial catalog"),
            ]
        );
        assert_eq!(changes[1].node_id, node);
        assert!(changes
            .iter()
            .all(|e| e.size_bytes > 0 && e.changed_at_ms > 0));
    };
    let before = history(&mut c).await;
    check(&before);
    let history_id = current(&mut c).await.history_id;
    assert!(before.iter().all(|e| e.history_id == history_id));

    m.restart().await;
    let mut c = m.grpc_client().await;
    assert_eq!(
        history(&mut c).await,
        before,
        "the history survives a restart"
    );
    assert_eq!(current(&mut c).await.history_id, history_id);

    let listed = m.ctl(&["history", "prod"]);
    assert!(listed.status.success(), "{listed:?}");
    let text = stdout(&listed);
    assert!(text.contains(&history_id), "{text}");
    assert!(
        text.contains("influx-a") && text.contains("initial catalog"),
        "{text}"
    );
    assert!(text.contains("users -bob"), "{text}");

    let diff = m.ctl(&["diff", "prod", "1", "2"]);
    assert!(diff.status.success(), "{diff:?}");
    let text = stdout(&diff);
    assert!(text.contains("CREATE DATABASE \"db2\""), "{text}");
    assert!(text.contains("DROP USER \"bob\";"), "{text}");
    let back = stdout(&m.ctl(&["diff", "prod", "2", "1"]));
    assert!(
        back.contains("CREATE USER \"bob\" WITH PASSWORD '***'"),
        "{back}"
    );
    assert!(!back.contains("secret-hash"), "{back}");

    // Without a terminal and without --yes, nothing happens.
    let refused = m.ctl(&["rollback", "prod", "1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--yes"),
        "{refused:?}"
    );
    assert_eq!(current(&mut c).await.version, 2);

    // The same for scripts: one JSON document each.
    let listed = json(&m.ctl(&["-o", "json", "history", "prod", "--limit", "1"]));
    assert_eq!(listed["history_id"], history_id.as_str(), "{listed}");
    let versions = listed["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "{listed}");
    assert_eq!(versions[0]["version"], 2, "{listed}");
    assert_eq!(versions[0]["layer"], "legacy", "{listed}");
    let diff = json(&m.ctl(&["-o", "json", "diff", "prod", "1", "2"]));
    assert_eq!(
        (diff["from"].clone(), diff["to"].clone()),
        (1.into(), 2.into())
    );
    let statements: Vec<&str> = diff["statements"]
        .as_array()
        .expect("statements")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(statements.contains(&"DROP USER \"bob\";"), "{diff}");
    for args in [
        &["history", "nope"][..],
        &["diff", "nope", "1", "2"],
        &["rollback", "nope", "1", "--yes"],
        &["-o", "json", "history", "nope"],
    ] {
        let out = m.ctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(r#"cluster "nope" does not exist; clusters: prod"#),
            "{args:?}: {out:?}"
        );
    }

    let rolled = json(&m.ctl(&["-o", "json", "rollback", "prod", "1", "--yes"]));
    assert_eq!(
        (
            rolled["restored_version"].clone(),
            rolled["previous_version"].clone(),
            rolled["version"].clone()
        ),
        (1.into(), 2.into(), 3.into()),
        "{rolled}"
    );
    let s = current(&mut c).await;
    assert_eq!(s.version, 3);
    let restored = Catalog::from_meta_bytes(&s.data).unwrap();
    assert_eq!(restored, v1, "bob and db1 as they were, db2 gone");
    let newest = &history(&mut c).await[0];
    assert_eq!(
        (newest.version, newest.layer.as_str(), newest.restored_from),
        (3, "restore", 1)
    );
    assert_eq!(newest.summary, "restored version 1");

    // RestoreVersion is a compare-and-swap, of kept versions, of a cluster.
    let restore = |version, expected_version, cluster: &str| RestoreVersionRequest {
        cluster: cluster.into(),
        version,
        expected_version,
    };
    let stale = c.restore_version(restore(2, 2, "prod")).await.unwrap();
    match stale.into_inner().result {
        Some(push_meta_response::Result::Conflict(s)) => assert_eq!(s.version, 3),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let missing = c.restore_version(restore(99, 3, "prod")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let nowhere = c
        .restore_version(restore(1, 0, "nowhere"))
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), tonic::Code::NotFound, "{nowhere:?}");
    let gone = c
        .get_version(GetVersionRequest {
            cluster: "prod".into(),
            version: 42,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_manager_starts_a_new_history_and_stale_pushes_conflict() {
    let mut m = Manager::start().await;
    let mut c = m.grpc_client().await;
    push(&mut c, 0, "", catalog(&["db1"], &[]).to_meta_bytes(), "")
        .await
        .unwrap();
    let old = current(&mut c).await.history_id;
    assert!(!old.is_empty());
    // A push based on another history conflicts, even at the right version.
    match push(
        &mut c,
        1,
        "some-other-history",
        catalog(&[], &[]).to_meta_bytes(),
        "",
    )
    .await
    .unwrap()
    {
        push_meta_response::Result::Conflict(s) => {
            assert_eq!((s.version, s.history_id.as_str()), (1, old.as_str()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    m.kill();
    std::fs::remove_dir_all(m.data_dir()).expect("wipe the data dir");
    m.start_again_on_same_port().await;
    let mut c = m.grpc_client().await;
    // Another node seeds the wiped manager first.
    push(&mut c, 0, "", catalog(&["db2"], &[]).to_meta_bytes(), "")
        .await
        .unwrap();
    let new = current(&mut c).await.history_id;
    assert!(!new.is_empty() && new != old, "{old} then {new}");
    // A node that knew version 1 of the old history must not push over it.
    match push(&mut c, 1, &old, catalog(&["db1"], &[]).to_meta_bytes(), "")
        .await
        .unwrap()
    {
        push_meta_response::Result::Conflict(s) => {
            assert_eq!((s.version, s.history_id), (1, new.clone()));
            let kept = Catalog::from_meta_bytes(&s.data).unwrap();
            assert!(kept.databases.contains_key("db2"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Conflicts carry the history too, as GetMeta does; the right one is accepted.
    assert_eq!(
        push(
            &mut c,
            1,
            &new,
            catalog(&["db1", "db2"], &[]).to_meta_bytes(),
            ""
        )
        .await
        .unwrap(),
        push_meta_response::Result::AcceptedVersion(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_etcd_is_shared_by_managers_and_survives_restarts() {
    let etcd = EtcdCluster::start(1).await;
    let endpoints = etcd.endpoints().join(",");
    let args = ["--etcd-endpoints", endpoints.as_str()];
    let mut a = Manager::start_with(&args).await;
    let b = Manager::start_with(&args).await;
    for m in [&a, &b] {
        support::wait_health(&m.channel().await, m.addr, ServingStatus::Serving, SERVING).await;
    }
    let mut ca = a.grpc_client().await;
    let mut cb = b.grpc_client().await;
    let node = register(&mut ca, registration("prod", "", "influx-etcd")).await;
    push(
        &mut ca,
        0,
        "",
        catalog(&["db1"], &[]).to_meta_bytes(),
        &node,
    )
    .await
    .unwrap();
    push(
        &mut cb,
        1,
        "",
        catalog(&["db1"], &["amy"]).to_meta_bytes(),
        "",
    )
    .await
    .unwrap();
    let through_b = history(&mut cb).await;
    let rows: Vec<_> = through_b
        .iter()
        .map(|e| (e.version, e.hostname.as_str(), e.summary.as_str()))
        .collect();
    assert_eq!(
        rows,
        [(2, "", "users +amy"), (1, "influx-etcd", "initial catalog")]
    );
    a.restart().await;
    let mut ca = a.grpc_client().await;
    assert_eq!(history(&mut ca).await, through_b);
    let v1 = ca
        .get_version(GetVersionRequest {
            cluster: "prod".into(),
            version: 1,
        })
        .await
        .expect("GetVersion")
        .into_inner();
    assert_eq!(
        Catalog::from_meta_bytes(&v1.data).unwrap(),
        catalog(&["db1"], &[])
    );
    assert_eq!(v1.history_id, through_b[0].history_id);
}
