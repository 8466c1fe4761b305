//! A real `cflux-manager` process for integration tests.
//!
//! [`Manager::start`] runs the release binary on a free 127.0.0.1 port with
//! its data in a temporary directory, waits (with a deadline) until it
//! accepts connections, and kills it when dropped. The manager's stderr goes
//! to a file in that directory and is printed when a test panics, so a
//! failure shows what the manager said.
//!
//! Tests wait for conditions with [`wait_until`] and a deadline, never with
//! fixed sleeps.

#![allow(dead_code)]

pub mod influxd;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// How long a manager may take to start serving.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long one gRPC call of the helpers below may take.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The services `grpc.health.v1` reports on: the server and the API.
pub const HEALTH_SERVICES: [&str; 2] = ["", "clusterflux.v1.Clusterflux"];
/// Fresh ports are tried this many times (another process may take a port
/// between our probe and the manager's bind).
const START_ATTEMPTS: usize = 5;

/// A running manager; killed when dropped.
pub struct Manager {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Holds the store (`data/`) and the manager's log (`manager.log`).
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    /// "http" or "https" (with `--tls-cert`).
    scheme: &'static str,
}

fn manager_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cflux-manager")
}

fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    probe.local_addr().expect("probe port address").port()
}

impl Manager {
    /// A manager on the embedded store with default settings.
    pub async fn start() -> Manager {
        Manager::start_with(&[]).await
    }

    /// A manager with extra flags (e.g. `["--node-ttl", "1s"]`).
    pub async fn start_with(args: &[&str]) -> Manager {
        let dir = tempfile::Builder::new()
            .prefix("cflux-manager-")
            .tempdir()
            .expect("create a temp dir");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let scheme = if args.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        let mut m = Manager {
            child: None,
            addr: "127.0.0.1:0".parse().expect("an address"),
            dir,
            args,
            scheme,
        };
        m.spawn_and_wait().await;
        m
    }

    /// The manager's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("manager.log")
    }

    /// The embedded store's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process (on a fresh port, retrying when the port was taken)
    /// and waits until it accepts connections.
    async fn spawn_and_wait(&mut self) {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            self.addr = SocketAddr::from(([127, 0, 0, 1], port));
            match self.try_spawn().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("cflux-manager did not start: {last}");
    }

    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(manager_bin())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.args)
            .env("RUST_LOG", "warn")
            // Keep the caller's environment from configuring the manager.
            .env_remove("CFLUX_MANAGER_CONFIG")
            .env_remove("CFLUX_MANAGER_TOKEN")
            .env_remove("CFLUX_MANAGER_ETCD_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", manager_bin()))?;
        self.child = Some(child);
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= until {
                self.kill();
                return Err(format!(
                    "not listening on {} within {START_DEADLINE:?}; log:\n{}",
                    self.addr,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process ID of the running manager.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("manager is running").id()
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL of a legacy route or `/metrics`, e.g. `http_url("/nodes")`.
    pub fn http_url(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// A gRPC client over a fresh connection.
    pub async fn grpc_client(&self) -> ClusterfluxClient<Channel> {
        ClusterfluxClient::new(self.channel().await)
    }

    /// A plaintext gRPC channel to this manager (usable by any generated client).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}\n{}", self.addr, self.log()))
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits for the process to exit, at most `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "manager still running {deadline:?} after being told to stop; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the manager gracefully and starts it again on the same store and
    /// flags (the port may change; take clients afresh).
    pub async fn restart(&mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "manager exited with {status} on SIGTERM");
        self.start_again().await;
    }

    /// Kills the manager (SIGKILL, as a crash would) and starts it again on
    /// the same store and flags.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    async fn start_again(&mut self) {
        let port = self.addr.port();
        // The same port when it is free, so the manager keeps its address.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && self.try_spawn().await.is_ok() {
            return;
        }
        self.spawn_and_wait().await;
    }

    /// After [`Manager::kill`]: starts the manager again on the same store,
    /// flags and port, so nodes configured with its address find it again.
    pub async fn start_again_on_same_port(&mut self) {
        assert!(self.child.is_none(), "the manager is still running");
        let port = self.addr.port();
        let until = Instant::now() + START_DEADLINE;
        let mut last = String::from("the port stayed taken");
        loop {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                match self.try_spawn().await {
                    Ok(()) => return,
                    Err(e) => last = e,
                }
            }
            assert!(
                Instant::now() < until,
                "cflux-manager did not start again on port {port}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- cflux-manager log ({}) ---\n{}--- end of log ---",
                self.addr,
                self.log()
            );
        }
    }
}

/// Polls `check` every 20ms until it returns true; panics with `what` when
/// `deadline` passes first.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `fut` with a deadline, panicking with `what` when it passes.
pub async fn within<T>(deadline: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {deadline:?}: {what}"),
    }
}

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
