//! Pieces the benchmarks share: the runtime, a real `cflux-manager` process,
//! the machine's figures for the header, percentiles and how figures are
//! written.
//!
//! Each benchmark includes it with `mod common;` (cargo does not take
//! subdirectories of `benches/` for benchmark targets); not every benchmark
//! uses every piece.

#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The most the manager may take to start serving.
const MANAGER_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `bench` on a multi-threaded tokio runtime.
pub fn run(bench: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench)
}

// ---------------------------------------------------------------------------
// The manager process.

/// A running `cflux-manager` (the binary built with the benchmark, embedded
/// store in a temporary directory, plain HTTP/2 on a free loopback port,
/// `RUST_LOG=warn`), killed when dropped.
pub struct Manager {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Manager {
    /// Starts the manager and waits until it answers `/metrics`.
    pub async fn start() -> anyhow::Result<Manager> {
        let dir = tempfile::tempdir()?;
        let addr = StdListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(Manager::bin());
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("manager"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // Settings from the caller's environment (a token, etcd) would change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CFLUX_MANAGER_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().context("cannot start cflux-manager")?;
        let mut manager = Manager {
            child,
            addr,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + MANAGER_DEADLINE;
        loop {
            if let Some(status) = manager.child.try_wait()? {
                bail!("cflux-manager exited before serving: {status}");
            }
            let ready = http
                .get(format!("http://{addr}/metrics"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(manager);
            }
            if Instant::now() > deadline {
                bail!("cflux-manager did not serve on {addr} within {MANAGER_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The manager binary built with the benchmark.
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_cflux-manager")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The machine.

/// CPUs available to this process (`nproc`); 0 when unknown.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------
// Figures.

/// The `p` quantile (0 to 1, nearest rank) of `samples`; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds with `decimals` decimals, `–` for no figure.
pub fn ms(d: Option<Duration>, decimals: usize) -> String {
    d.map_or("–".into(), |d| {
        format!("{:.*} ms", decimals, d.as_secs_f64() * 1e3)
    })
}

/// Whole microseconds, `–` for no figure.
pub fn us(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
