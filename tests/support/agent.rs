//! `cflux-agent` processes beside real influxd servers, for integration
//! tests and benchmarks.
//!
//! - [`Agent::start`] runs the `cflux-agent` binary built with the test beside
//!   one [`Influxd`], and waits until its `/health` answers.
//! - [`Node`] is one of each in one temporary directory; [`start_nodes`]
//!   starts several, in parallel.
//!
//! An agent is killed when dropped; when the thread is panicking (or
//! `CFLUX_TEST_LOGS=1`), the tail of its log is printed first.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::influxd::{
    http_client, InfluxApi, Influxd, InfluxdOptions, LOG_TAIL_LINES, START_ATTEMPTS,
};
use super::process::{
    clean_env, exited, free_port, kill_child, listens_on, log_tail, port_is_free, process_usage,
    show_logs, ProcessUsage,
};
use super::wait::poll;

/// How long an agent may take to answer `/health`.
const AGENT_START_DEADLINE: Duration = Duration::from_secs(15);

/// The `cflux-agent` binary built with this test or benchmark.
pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cflux-agent")
}

/// How to run an agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `--cflux-endpoint`: one manager URL or a comma-separated list.
    pub endpoint: String,
    /// `--cluster`.
    pub cluster: String,
    /// `--cflux-transport` (`grpc`, `http`, `auto`); the agent's default when `None`.
    pub transport: Option<String>,
    /// `--shared-secret`; by default the influxd's own secret, if any.
    pub shared_secret: Option<String>,
    /// `--meta-dir`; by default the influxd's own (another server's, to
    /// test a misconfiguration).
    pub meta_dir: Option<PathBuf>,
    /// More flags.
    pub args: Vec<String>,
    /// `RUST_LOG` of the agent.
    pub log_filter: String,
}

impl AgentOptions {
    pub fn new(endpoint: &str, cluster: &str) -> Self {
        AgentOptions {
            endpoint: endpoint.to_owned(),
            cluster: cluster.to_owned(),
            transport: None,
            shared_secret: None,
            meta_dir: None,
            args: Vec::new(),
            log_filter: "info".to_owned(),
        }
    }

    /// The legacy HTTP protocol (`--cflux-transport http`).
    pub fn legacy(mut self) -> Self {
        self.transport = Some("http".to_owned());
        self
    }
}

/// A running `cflux-agent`; killed when dropped.
pub struct Agent {
    child: Option<Child>,
    /// Where it serves `/health` and `/metrics`.
    pub listen: SocketAddr,
    /// Its state directory (node ID, synced base).
    pub state_dir: PathBuf,
    log_path: PathBuf,
    /// Every flag but `--listen`.
    args: Vec<String>,
    log_filter: String,
    http: reqwest::Client,
    /// When the running process was started.
    started: Instant,
}

impl Agent {
    /// Starts an agent beside `influxd`, its state in `state_dir` and its log
    /// beside it, and waits until `/health` answers (not until it registered:
    /// see [`Agent::wait_registered`]).
    pub async fn start(influxd: &Influxd, state_dir: &Path, options: &AgentOptions) -> Agent {
        let mut args: Vec<String> = vec![
            "--cflux-endpoint".into(),
            options.endpoint.clone(),
            "--cluster".into(),
            options.cluster.clone(),
            "--influxdb-url".into(),
            influxd.url(),
            "--meta-dir".into(),
            options
                .meta_dir
                .clone()
                .unwrap_or_else(|| influxd.meta_dir())
                .display()
                .to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        if let Some(t) = &options.transport {
            args.extend(["--cflux-transport".into(), t.clone()]);
        }
        if let Some(s) = options.shared_secret.as_deref().or(influxd.shared_secret()) {
            args.extend(["--shared-secret".into(), s.to_owned()]);
        }
        args.extend(options.args.iter().cloned());
        let log_path = state_dir
            .parent()
            .unwrap_or(state_dir)
            .join(format!("agent-{}.log", influxd.http_addr.port()));
        let mut agent = Agent {
            child: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.to_owned(),
            log_path,
            args,
            log_filter: options.log_filter.clone(),
            http: http_client(),
            started: Instant::now(),
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            agent.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match agent.spawn_and_wait().await {
                Ok(()) => return agent,
                Err(e) => last = e,
            }
        }
        panic!("cflux-agent did not start: {last}");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.state_dir).map_err(|e| format!("state dir: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("agent log file: {e}"))?;
        let mut cmd = Command::new(agent_bin());
        clean_env(&mut cmd);
        let child = cmd
            .args(&self.args)
            .arg("--listen")
            .arg(self.listen.to_string())
            .env("RUST_LOG", &self.log_filter)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("agent log: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", agent_bin()))?;
        self.child = Some(child);
        self.started = Instant::now();
        let until = Instant::now() + AGENT_START_DEADLINE;
        loop {
            if let Some(status) = exited(&mut self.child) {
                self.child = None;
                return Err(format!(
                    "cflux-agent exited with {status}; log:\n{}",
                    log_tail(&self.log_path, 30)
                ));
            }
            if listens_on(self.pid(), self.listen.port()) && self.health().await.is_some() {
                return Ok(());
            }
            if Instant::now() >= until {
                kill_child(&mut self.child);
                return Err(format!(
                    "no /health on {} within {AGENT_START_DEADLINE:?}; log:\n{}",
                    self.listen,
                    log_tail(&self.log_path, 30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The `/health` answer (200 or 503); `None` when the agent does not answer.
    pub async fn health(&self) -> Option<Value> {
        self.health_status().await.map(|(_, body)| body)
    }

    /// `/health`'s status code and body; `None` when the agent does not answer.
    pub async fn health_status(&self) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}/health", self.url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.json().await.ok()?))
    }

    /// Waits until `/health` answers `code`, and returns that answer's body.
    pub async fn wait_health(&self, deadline: Duration, code: u16, what: &str) -> Value {
        super::wait::eventually(deadline, what, || async move {
            match self.health_status().await {
                Some((c, body)) if c == code => Ok(body),
                Some((c, body)) => Err(format!("{c} {body}")),
                None => Err("no answer".to_owned()),
            }
        })
        .await
    }

    /// The node ID it reports (once registered).
    pub async fn node_id(&self) -> Option<String> {
        self.health().await?["node_id"].as_str().map(str::to_owned)
    }

    /// The cluster catalog version it last synced.
    pub async fn catalog_version(&self) -> Option<u64> {
        self.health().await?["catalog_version"].as_u64()
    }

    /// Its Prometheus metrics.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url()))
            .send()
            .await
            .expect("agent /metrics")
            .text()
            .await
            .expect("agent /metrics body")
    }

    /// Waits until the agent has a node ID, and returns it.
    pub async fn wait_registered(&self, deadline: Duration) -> String {
        let registered = poll(deadline, || async {
            self.node_id()
                .await
                .ok_or_else(|| "no node ID yet".to_owned())
        })
        .await;
        registered.unwrap_or_else(|_| {
            panic!(
                "cflux-agent on {} did not register within {deadline:?}; log:\n{}",
                self.listen,
                log_tail(&self.log_path, 40)
            )
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && exited(&mut self.child).is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    /// Its CPU time and memory so far (`None` when it is not running).
    pub fn usage(&self) -> Option<ProcessUsage> {
        process_usage(self.child.as_ref()?.id())
    }

    /// How long the running process has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Kills the agent (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits (at most `deadline`) for the agent to exit.
    pub async fn stop(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let until = Instant::now() + deadline;
        loop {
            if let Some(s) = exited(&mut self.child) {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < until,
                "cflux-agent still running {deadline:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the agent again with the same flags and state directory (on the
    /// same listen port when it is free).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the agent is still running");
        if port_is_free(self.listen.port()) && self.spawn_and_wait().await.is_ok() {
            return;
        }
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
            match self.spawn_and_wait().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("cflux-agent did not start again: {last}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if show_logs() {
            eprintln!(
                "--- cflux-agent log ({}) ---\n{}--- end of cflux-agent log ---",
                self.log_path.display(),
                log_tail(&self.log_path, LOG_TAIL_LINES)
            );
        }
    }
}

/// An influxd with its agent, in one temporary directory (`influxd/`,
/// `agent/`, the agent's log).
pub struct Node {
    pub name: String,
    // Field order is drop order: the agent dies first, the directory last.
    pub agent: Agent,
    pub influxd: Influxd,
    pub dir: tempfile::TempDir,
}

impl Node {
    /// InfluxDB's HTTP API on this node, without credentials.
    pub fn api(&self) -> InfluxApi {
        self.influxd.api()
    }

    /// `$D/data/<db>`: the database's data directory.
    pub fn data_dir_of(&self, database: &str) -> PathBuf {
        self.influxd.data_dir().join(database)
    }
}

/// Starts `n` influxd servers in parallel, then an agent beside each (in
/// parallel too), named `node0`, `node1`, …. Waits until every agent
/// answers `/health`, not until it registered or synced.
pub async fn start_nodes(n: usize, influxd: &InfluxdOptions, agent: &AgentOptions) -> Vec<Node> {
    start_nodes_with(n, influxd, |_| agent.clone()).await
}

/// [`start_nodes`] with options of its own for each node's agent.
pub async fn start_nodes_with(
    n: usize,
    influxd: &InfluxdOptions,
    agent: impl Fn(usize) -> AgentOptions,
) -> Vec<Node> {
    let dirs: Vec<tempfile::TempDir> = (0..n)
        .map(|i| {
            tempfile::Builder::new()
                .prefix(&format!("cflux-node{i}-"))
                .tempdir()
                .expect("create a temp dir")
        })
        .collect();
    let influxd_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("influxd")).collect();
    let servers = Influxd::start_many(&influxd_dirs, influxd).await;
    let options: Vec<AgentOptions> = (0..n).map(agent).collect();
    let state_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("agent")).collect();
    let agents = futures::future::join_all(
        servers
            .iter()
            .zip(&state_dirs)
            .zip(&options)
            .map(|((s, d), o)| Agent::start(s, d, o)),
    )
    .await;
    agents
        .into_iter()
        .zip(servers)
        .zip(dirs)
        .enumerate()
        .map(|(i, ((agent, influxd), dir))| Node {
            name: format!("node{i}"),
            agent,
            influxd,
            dir,
        })
        .collect()
}
