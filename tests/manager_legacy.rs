//! The legacy HTTP protocol of the original Clusterflux manager (DESIGN.md,
//! "Legacy HTTP protocol") against a real `cflux-manager`: every call, its
//! error answers, the long poll's timeouts, and the state it shares with gRPC.

mod support;

use std::time::{Duration, Instant};

use cflux::proto::{push_meta_response, RegisterRequest};
use reqwest::StatusCode;
use serde_json::Value;
use support::register as register_grpc;
use support::{
    get_json, http, list_clusters, list_nodes, meta, metric, push, scrape, version_of, wait_until,
    watch, within, Manager,
};

const DEADLINE: Duration = Duration::from_secs(10);

async fn register(m: &Manager, cluster: &str, body: Value) -> reqwest::Response {
    http()
        .post(m.http_url(&format!("/nodes/{cluster}")))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /nodes/{cluster}")
}

async fn long_polls(m: &Manager) -> f64 {
    metric(&scrape(m).await, "cflux_long_polls").unwrap_or(0.0)
}

/// A legacy heartbeat (`PUT`) and then delete (`DELETE`) of the node at
/// `url`, both answered 200.
async fn heartbeat_then_delete(url: &str) {
    for (request, what) in [(http().put(url), "PUT"), (http().delete(url), "DELETE")] {
        let r = request.send().await.expect(what);
        assert_eq!(r.status(), StatusCode::OK, "{what} {url}");
    }
}

/// Asserts the answer is an error of `status` with a JSON `{"error": "..."}` body.
async fn assert_error(r: reqwest::Response, status: StatusCode, what: &str) {
    assert_eq!(r.status(), status, "{what}");
    let body: Value = r.json().await.expect("a JSON error body");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "{what}: no error message in {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_heartbeat_list_and_delete() {
    let m = Manager::start_with(&["--node-ttl", "20s", "--heartbeat-interval", "2s"]).await;
    let before = std::time::SystemTime::now();
    let r = register(
        &m,
        "prod",
        serde_json::json!({"ip": "10.0.0.1,10.0.0.2,", "hostname": "influx-1"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.expect("registration JSON");
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert!(!id.is_empty());
    assert_eq!(answer["status"], "ok", "{answer}");
    assert!(answer["message"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(answer["metadata"]["ip"], "10.0.0.1,10.0.0.2,");
    assert_eq!(answer["metadata"]["hostname"], "influx-1");
    let expires = humantime::parse_rfc3339(answer["expirationDate"].as_str().expect("a date"))
        .expect("an RFC 3339 expiration date");
    let ttl = expires
        .duration_since(before)
        .expect("expiry in the future");
    assert!(
        ttl > Duration::from_secs(18) && ttl < Duration::from_secs(25),
        "expiry {ttl:?} should be about the 20s TTL away"
    );

    // GET /nodes/{cluster}: the original's node shape, exactly.
    let nodes = get_json(&m, "/nodes/prod").await;
    assert_eq!(
        nodes,
        serde_json::json!([{
            "id": id,
            "ip": "10.0.0.1,10.0.0.2,",
            "hostname": "influx-1",
            "bind-address": "127.0.0.1",
            "alive": true,
        }])
    );
    register(
        &m,
        "staging",
        serde_json::json!({"ip": "10.0.1.1,", "hostname": "influx-9"}),
    )
    .await;
    // GET /nodes: the managers and every node of every cluster.
    let all = get_json(&m, "/nodes").await;
    assert_eq!(all["cflux"], serde_json::json!([m.addr.to_string()]));
    let influx = all["influx"].as_array().expect("an influx list");
    assert_eq!(influx.len(), 2, "{all}");
    for n in influx {
        let mut keys: Vec<_> = n.as_object().expect("a node object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["alive", "bind-address", "hostname", "id", "ip"]);
    }
    assert!(influx.iter().any(|n| n["hostname"] == "influx-9"));
    assert!(get_json(&m, "/nodes/nobody").await == serde_json::json!([]));

    // PUT refreshes the TTL; DELETE removes; both 404 once unknown.
    let url = m.http_url(&format!("/nodes/prod/{id}"));
    heartbeat_then_delete(&url).await;
    assert_eq!(get_json(&m, "/nodes/prod").await, serde_json::json!([]));
    let unknown = m.http_url("/nodes/prod/never-was");
    for (request, what) in [
        (http().put(&url), "heartbeat of a deleted node"),
        (http().delete(&url), "delete of a deleted node"),
        (http().put(&unknown), "heartbeat of an unknown node"),
        (http().delete(&unknown), "delete of an unknown node"),
    ] {
        let r = request.send().await.expect(what);
        assert_error(r, StatusCode::NOT_FOUND, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_grpc_share_nodes() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let legacy_id = register(
        &m,
        "prod",
        serde_json::json!({"ip": "10.0.0.1,10.0.0.2,", "hostname": "old-node"}),
    )
    .await
    .json::<Value>()
    .await
    .expect("registration JSON")["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let grpc_id = register_grpc(
        &mut c,
        RegisterRequest {
            cluster: "prod".into(),
            hostname: "new-node".into(),
            ips: vec!["10.0.0.3".into()],
            ..Default::default()
        },
    )
    .await;

    // The legacy node through gRPC, its IP list split.
    let nodes = list_nodes(&mut c, "prod").await;
    let old = nodes
        .iter()
        .find(|n| n.node_id == legacy_id)
        .expect("the legacy node listed over gRPC");
    assert_eq!(old.hostname, "old-node");
    assert_eq!(old.ips, vec!["10.0.0.1", "10.0.0.2"]);
    assert_eq!(old.bind_address, "127.0.0.1");
    assert!(old.alive);

    // The gRPC node through the legacy layer, its IPs comma-terminated.
    let listed = get_json(&m, "/nodes/prod").await;
    let new = listed
        .as_array()
        .expect("a node list")
        .iter()
        .find(|n| n["id"] == grpc_id.as_str())
        .expect("the gRPC node listed over HTTP")
        .clone();
    assert_eq!(new["ip"], "10.0.0.3,");
    assert_eq!(new["hostname"], "new-node");

    // A legacy heartbeat and delete act on gRPC-registered nodes.
    heartbeat_then_delete(&m.http_url(&format!("/nodes/prod/{grpc_id}"))).await;
    let nodes = list_nodes(&mut c, "").await;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].node_id, legacy_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_poll_versions() {
    let m = Manager::start().await;
    let push = |version: &str, body: Vec<u8>| {
        http()
            .post(m.http_url(&format!("/clusters/prod/versions/{version}")))
            .body(body)
            .send()
    };

    let r = push("0", meta(b"catalog-1")).await.expect("POST");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(version_of(&r), Some(1));

    // A stale version: 409 with the current bytes and version; nothing changes.
    let r = push("0", meta(b"lost")).await.expect("POST");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(version_of(&r), Some(1));
    assert_eq!(r.bytes().await.expect("body").as_ref(), &meta(b"catalog-1"));
    let r = push("5", meta(b"lost")).await.expect("POST");
    assert_eq!(r.status(), StatusCode::CONFLICT);

    let r = push("1", meta(b"catalog-2")).await.expect("POST");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(2)));

    // A poll on any other version answers at once with the current catalog.
    for asked in ["0", "1", "9"] {
        let r = within(
            DEADLINE,
            "a poll on an old version",
            http()
                .get(m.http_url(&format!("/clusters/prod/versions/{asked}")))
                .send(),
        )
        .await
        .expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "asked {asked}");
        assert_eq!(version_of(&r), Some(2));
        assert_eq!(r.bytes().await.expect("body").as_ref(), &meta(b"catalog-2"));
    }

    // The same catalog over gRPC.
    let mut c = m.grpc_client().await;
    let s = c
        .get_meta(cflux::proto::GetMetaRequest {
            cluster: "prod".into(),
        })
        .await
        .expect("GetMeta")
        .into_inner();
    assert_eq!((s.version, s.data.as_ref()), (2, &meta(b"catalog-2")[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_push_wakes_a_legacy_long_poll() {
    let m = Manager::start().await;
    let url = m.http_url("/clusters/prod/versions/0");
    let poll = tokio::spawn(async move {
        let start = Instant::now();
        let r = http().get(url).send().await.expect("long poll");
        let version = version_of(&r);
        let status = r.status();
        (status, version, r.bytes().await.expect("body"), start)
    });
    wait_until(DEADLINE, "the long poll to be held", || async {
        long_polls(&m).await == 1.0
    })
    .await;
    assert!(!poll.is_finished(), "a poll on the current version is held");

    let mut c = m.grpc_client().await;
    assert_eq!(
        push(&mut c, "prod", 0, &meta(b"from-grpc")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    let (status, version, body, _) = within(DEADLINE, "the long poll to wake", poll)
        .await
        .expect("poll task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Some(1));
    assert_eq!(body.as_ref(), &meta(b"from-grpc"));
    wait_until(DEADLINE, "the long-poll gauge to drop", || async {
        long_polls(&m).await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_push_wakes_a_grpc_watcher() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let mut stream = watch(&mut c, "prod", 0).await;
    // Current: nothing to send yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "the watch should stay quiet until a push"
    );

    let r = http()
        .post(m.http_url("/clusters/prod/versions/0"))
        .body(meta(b"from-legacy"))
        .send()
        .await
        .expect("POST");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(1)));
    let s = within(DEADLINE, "the watcher to wake", stream.message())
        .await
        .expect("watch stream")
        .expect("a snapshot");
    assert_eq!(
        (s.cluster.as_str(), s.version, s.data.as_ref()),
        ("prod", 1, &meta(b"from-legacy")[..])
    );
}

/// Starts a manager with `args` (a 1 s poll window), polls the current
/// version of a fresh cluster and asserts the answer is `status`, after the
/// window.
async fn assert_poll_times_out(args: &[&str], status: StatusCode) {
    let m = Manager::start_with(args).await;
    let start = Instant::now();
    let r = within(
        DEADLINE,
        "the long poll to time out",
        http().get(m.http_url("/clusters/quiet/versions/0")).send(),
    )
    .await
    .expect("long poll");
    let elapsed = start.elapsed();
    assert_eq!(r.status(), status);
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}, before the 1s window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_504_after_the_poll_window() {
    assert_poll_times_out(
        &["--legacy-poll-timeout", "1s"],
        StatusCode::GATEWAY_TIMEOUT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_204_when_told_to() {
    assert_poll_times_out(
        &[
            "--legacy-poll-timeout",
            "1s",
            "--legacy-timeout-status",
            "204",
        ],
        StatusCode::NO_CONTENT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let m = Manager::start_with(&["--max-message-size", "1KiB"]).await;
    let client = http();

    // Registration: malformed JSON, a missing hostname, bad cluster names.
    for body in ["{not json", "[1,2]", "{\"ip\": 5, \"hostname\": \"h\"}", ""] {
        let r = client
            .post(m.http_url("/nodes/prod"))
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_error(r, StatusCode::BAD_REQUEST, &format!("body {body:?}")).await;
    }
    let r = register(&m, "prod", serde_json::json!({"ip": "10.0.0.1,"})).await;
    assert_error(r, StatusCode::BAD_REQUEST, "no hostname").await;
    let long = "x".repeat(129);
    for cluster in [long.as_str(), "a%0Ab", "bell%07"] {
        let r = register(&m, cluster, serde_json::json!({"hostname": "h"})).await;
        assert_error(r, StatusCode::BAD_REQUEST, &format!("cluster {cluster:?}")).await;
        let r = client
            .post(m.http_url(&format!("/clusters/{cluster}/versions/0")))
            .body(meta(b"x"))
            .send()
            .await
            .expect("POST");
        assert_error(r, StatusCode::BAD_REQUEST, &format!("push to {cluster:?}")).await;
        let r = client
            .get(m.http_url(&format!("/clusters/{cluster}/versions/0")))
            .send()
            .await
            .expect("GET");
        assert_error(r, StatusCode::BAD_REQUEST, &format!("poll on {cluster:?}")).await;
    }

    // Versions must be non-negative integers.
    for version in ["abc", "-1", "1.5", "18446744073709551616"] {
        let url = m.http_url(&format!("/clusters/prod/versions/{version}"));
        let r = client.get(&url).send().await.expect("GET");
        assert_error(r, StatusCode::BAD_REQUEST, &format!("poll on {version:?}")).await;
        let r = client
            .post(&url)
            .body(meta(b"x"))
            .send()
            .await
            .expect("POST");
        assert_error(r, StatusCode::BAD_REQUEST, &format!("push on {version:?}")).await;
    }

    // Unknown routes (`/` is the web console).
    for path in [
        "/nope",
        "/clusters/prod",
        "/nodes/prod/id/extra",
        "/v2/nodes",
    ] {
        let r = client.get(m.http_url(path)).send().await.expect("GET");
        assert_error(r, StatusCode::NOT_FOUND, &format!("GET {path}")).await;
    }

    // A catalog over --max-message-size.
    let r = client
        .post(m.http_url("/clusters/prod/versions/0"))
        .body(vec![1u8; 1025])
        .send()
        .await
        .expect("POST");
    assert_error(
        r,
        StatusCode::BAD_REQUEST,
        "a catalog 1 byte over the limit",
    )
    .await;
    let r = client
        .post(m.http_url("/clusters/prod/versions/0"))
        .body(vec![1u8; 64 * 1024])
        .send()
        .await
        .expect("POST");
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "a catalog far over the limit"
    );

    // None of it left a trace.
    assert_eq!(
        get_json(&m, "/nodes").await["influx"],
        serde_json::json!([])
    );
    let mut c = m.grpc_client().await;
    let clusters = list_clusters(&mut c).await;
    assert!(clusters.is_empty(), "{clusters:?}");

    // The limit itself is accepted: 1008 tagged bytes make a 1024-byte meta.Data.
    let r = client
        .post(m.http_url("/clusters/prod/versions/0"))
        .body(meta(&[1u8; 1008]))
        .send()
        .await
        .expect("POST");
    assert_eq!((r.status(), version_of(&r)), (StatusCode::OK, Some(1)));
}
