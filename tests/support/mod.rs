//! Test support, by concern: the processes the integration tests (and the
//! benchmarks, which include this module with `#[path]`) start, and how
//! they wait.
//!
//! - [`manager`]: a real `cflux-manager` ([`Manager`]);
//! - [`influxd`]: real influxd servers and InfluxDB's HTTP API;
//! - [`agent`]: `cflux-agent` beside an influxd, and nodes of both;
//! - [`browser`]: a headless Chromium for the web console;
//! - [`etcd`]: real etcd clusters;
//! - [`process`]: free ports, clean environments, logs, CPU and memory;
//! - [`replicated`]: a replicating cluster of front doors ([`replicated::Cluster`]);
//! - [`catalog`]: valid `meta.Data` bytes that differ ([`meta`]);
//! - [`wait`]: waiting for a condition with a deadline ([`wait_until`],
//!   [`eventually`]), never a fixed sleep;
//! - here: gRPC and HTTP calls the manager tests share.

#![allow(dead_code)]

pub mod agent;
pub mod browser;
// Also included on its own, as `catalog_support`, by the store contract.
#[allow(clippy::duplicate_mod)]
pub mod catalog;
// Also included on its own, as `etcd_support`, by the etcd tests.
#[allow(clippy::duplicate_mod)]
pub mod etcd;
pub mod influxd;
pub mod manager;
pub mod process;
pub mod replicated;
pub mod wait;

#[allow(unused_imports)]
pub use catalog::meta;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{
    push_meta_response, ClusterInfo, DeregisterRequest, GetMetaRequest, HeartbeatRequest,
    ListClustersRequest, ListNodesRequest, MetaSnapshot, Node, PushMetaRequest, RegisterRequest,
    WatchMetaRequest,
};
use tonic::transport::Channel;
use tonic::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

// Where the tests have always found them; not every test uses every one.
#[allow(unused_imports)]
pub use {
    manager::Manager,
    wait::{eventually, wait_until, within},
};

/// How long one gRPC call of the helpers below may take.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The services `grpc.health.v1` reports on: the server and the API.
pub const HEALTH_SERVICES: [&str; 2] = ["", "clusterflux.v1.Clusterflux"];

/// A request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a valid header"),
    );
    request
}

/// A plain HTTP client with a per-request timeout (long polls take longer:
/// set their own).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// The value of a Prometheus sample line, e.g.
/// `metric(&text, r#"cflux_watch_streams"#)`; `None` when absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// `cert.pem` and `key.pem` into `dir`. Returns (cert path, key path, cert PEM).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
    let cert_pem = certified.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &cert_pem).expect("write cert.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key.pem");
    (cert, key, cert_pem)
}

// ---------------------------------------------------------------------------
// gRPC and `/metrics` helpers shared by the manager tests.

/// A registration from 10.0.0.1 with influxd on port 8086.
pub fn registration(cluster: &str, node_id: &str, hostname: &str) -> RegisterRequest {
    RegisterRequest {
        cluster: cluster.into(),
        node_id: node_id.into(),
        hostname: hostname.into(),
        ips: vec!["10.0.0.1".into()],
        http_addr: "10.0.0.1:8086".into(),
        version: "influxdb=1.8.10".into(),
    }
}

/// Registers and returns the node ID the manager answered with.
pub async fn register(c: &mut ClusterfluxClient<Channel>, request: RegisterRequest) -> String {
    c.register(request)
        .await
        .expect("register")
        .into_inner()
        .node_id
}

/// The nodes of `cluster` (`""`: of every cluster).
pub async fn list_nodes(c: &mut ClusterfluxClient<Channel>, cluster: &str) -> Vec<Node> {
    c.list_nodes(ListNodesRequest {
        cluster: cluster.into(),
    })
    .await
    .expect("ListNodes")
    .into_inner()
    .nodes
}

/// Every cluster the manager knows.
pub async fn list_clusters(c: &mut ClusterfluxClient<Channel>) -> Vec<ClusterInfo> {
    c.list_clusters(ListClustersRequest {})
        .await
        .expect("ListClusters")
        .into_inner()
        .clusters
}

/// A heartbeat of `node_id` in `cluster`.
pub async fn heartbeat(
    c: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    node_id: &str,
) -> Result<(), tonic::Status> {
    c.heartbeat(HeartbeatRequest {
        cluster: cluster.into(),
        node_id: node_id.into(),
        sync: None,
    })
    .await
    .map(drop)
}

/// Deregisters `node_id` from `cluster`.
pub async fn deregister(
    c: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    node_id: &str,
) -> Result<(), tonic::Status> {
    c.deregister(DeregisterRequest {
        cluster: cluster.into(),
        node_id: node_id.into(),
    })
    .await
    .map(drop)
}

/// A compare-and-swap push of `data` over `expected`, from no node.
pub fn push_request(cluster: &str, expected: u64, data: &[u8]) -> PushMetaRequest {
    PushMetaRequest {
        cluster: cluster.into(),
        expected_version: expected,
        data: data.to_vec().into(),
        node_id: String::new(),
        expected_history_id: String::new(),
    }
}

/// [`push_request`], sent; panics when the call fails or takes too long.
pub async fn push(
    c: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    expected: u64,
    data: &[u8],
) -> push_meta_response::Result {
    within(
        CALL_DEADLINE,
        "PushMeta",
        c.push_meta(push_request(cluster, expected, data)),
    )
    .await
    .expect("PushMeta")
    .into_inner()
    .result
    .expect("a push result")
}

/// The current snapshot of `cluster`.
pub async fn get_meta(c: &mut ClusterfluxClient<Channel>, cluster: &str) -> MetaSnapshot {
    within(
        CALL_DEADLINE,
        "GetMeta",
        c.get_meta(GetMetaRequest {
            cluster: cluster.into(),
        }),
    )
    .await
    .expect("GetMeta")
    .into_inner()
}

/// A `WatchMeta` stream on `cluster` from `version`.
pub async fn watch(
    c: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    version: u64,
) -> Streaming<MetaSnapshot> {
    within(
        CALL_DEADLINE,
        "WatchMeta",
        c.watch_meta(WatchMetaRequest {
            cluster: cluster.into(),
            version,
        }),
    )
    .await
    .expect("WatchMeta")
    .into_inner()
}

/// The `Version` header of a legacy answer.
pub fn version_of(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("Version")?.to_str().ok()?.parse().ok()
}

/// `GET path` of a legacy route, which must answer 200 with JSON.
pub async fn get_json(m: &Manager, path: &str) -> serde_json::Value {
    let r = http().get(m.http_url(path)).send().await.expect("GET");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "GET {path}");
    r.json().await.expect("a JSON answer")
}

/// `GET /metrics`, which must answer 200.
pub async fn scrape(m: &Manager) -> String {
    let r = http()
        .get(m.http_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "GET /metrics");
    r.text().await.expect("metrics text")
}

/// What `grpc.health.v1` says of `service` (a call over 3 s is an error).
pub async fn health(channel: Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: service.into(),
    });
    let status = tokio::time::timeout(Duration::from_secs(3), check)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("health check"))??
        .into_inner()
        .status;
    Ok(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
}

/// Waits until both [`HEALTH_SERVICES`] report `want` over `channel` (to
/// the manager on `addr`).
pub async fn wait_health(
    channel: &Channel,
    addr: SocketAddr,
    want: ServingStatus,
    deadline: Duration,
) {
    for service in HEALTH_SERVICES {
        wait_until(
            deadline,
            &format!("health of {service:?} on {addr} to be {want:?}"),
            || {
                let channel = channel.clone();
                async move { health(channel, service).await.ok() == Some(want) }
            },
        )
        .await;
    }
}

/// Holds a legacy long poll on `cluster` at `version` (the current version,
/// so it waits) and waits until `m` counts it and `watches` open watch
/// streams. The task ends with the poll's answer.
pub async fn hold_long_poll(
    m: &Manager,
    cluster: &str,
    version: u64,
    watches: f64,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::StatusCode>> {
    let url = m.http_url(&format!("/clusters/{cluster}/versions/{version}"));
    let poll = tokio::spawn(async move { http().get(url).send().await.map(|r| r.status()) });
    let what = format!("the watches and the long poll on {} to be open", m.addr);
    wait_until(CALL_DEADLINE, &what, || async {
        let text = scrape(m).await;
        metric(&text, "cflux_long_polls") == Some(1.0)
            && metric(&text, "cflux_watch_streams") == Some(watches)
    })
    .await;
    poll
}

/// SIGTERM to `m` with `watches` and the long poll `poll` (of
/// [`hold_long_poll`]) open: every watch ends cleanly, the poll is answered
/// 504 and the process exits zero within `exit_deadline`. Returns the time
/// from the signal to the exit.
pub async fn sigterm_ends_cleanly(
    m: &mut Manager,
    watches: Vec<(&str, &mut Streaming<MetaSnapshot>)>,
    poll: tokio::task::JoinHandle<reqwest::Result<reqwest::StatusCode>>,
    exit_deadline: Duration,
) -> Duration {
    let stopping = Instant::now();
    m.sigterm();
    for (name, stream) in watches {
        match within(CALL_DEADLINE, "the watch to end", stream.message()).await {
            Ok(None) => {}
            other => panic!("the {name} watch should end cleanly, got {other:?}"),
        }
    }
    let status = within(CALL_DEADLINE, "the long poll to be answered", poll)
        .await
        .expect("poll task")
        .expect("the held long poll gets an answer, not a dropped connection");
    assert_eq!(status, reqwest::StatusCode::GATEWAY_TIMEOUT);
    let exit = m.wait_exit(exit_deadline).await;
    let took = stopping.elapsed();
    assert!(exit.success(), "exit status {exit}");
    took
}
