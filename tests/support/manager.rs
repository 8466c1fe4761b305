//! A real `cflux-manager` process for integration tests and benchmarks.
//!
//! [`Manager::start`] runs the release binary on a free 127.0.0.1 port with
//! its data in a temporary directory, waits (with a deadline) until it
//! accepts connections, and kills it when dropped. The manager's stderr goes
//! to a file in that directory and is printed when a test panics, so a
//! failure shows what the manager said.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cflux::proto::clusterflux_client::ClusterfluxClient;
use tonic::transport::Channel;

use super::process::{clean_env, free_port, listens_on, port_is_free};

/// How long a manager may take to start serving.
const START_DEADLINE: Duration = Duration::from_secs(10);
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

impl Manager {
    /// The manager binary built with this test or benchmark.
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_cflux-manager")
    }

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
    /// Runs `cfluxctl` against this manager, stdin closed, with nothing of
    /// the caller's environment that would change its answer.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        self.ctl_in(None, args)
    }

    /// [`Self::ctl`] with `CLUSTER` set to `cluster` (unset for `None`).
    pub fn ctl_in(&self, cluster: Option<&str>, args: &[&str]) -> std::process::Output {
        self.ctl_command(cluster, args)
            .output()
            .expect("run cfluxctl")
    }

    /// The `cfluxctl` command [`Self::ctl_in`] runs, to spawn it instead.
    pub fn ctl_command(&self, cluster: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cfluxctl"));
        command
            .args(args)
            .env("CFLUX_ENDPOINT", self.url())
            .env_remove("CFLUX_TOKEN")
            .env_remove("CFLUX_TOKEN_FILE")
            .env_remove("CFLUX_CA")
            .env_remove("CLUSTER")
            .env_remove("INFLUX_USERNAME")
            .env_remove("INFLUX_PASSWORD")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        if let Some(c) = cluster {
            command.env("CLUSTER", c);
        }
        command
    }

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
        let mut command = Command::new(Manager::bin());
        // Keep the caller's environment from configuring the manager.
        clean_env(&mut command);
        let child = command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", Manager::bin()))?;
        self.child = Some(child);
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if listens_on(self.pid(), self.addr.port()) {
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
        if port_is_free(port) && self.try_spawn().await.is_ok() {
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
            if port_is_free(port) {
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
