//! Real etcd clusters for tests: `EtcdCluster::start(3).await` runs three
//! members of `/usr/bin/etcd` (or `$ETCD_BIN`) on free 127.0.0.1 ports with
//! data in a temporary directory, waits until every member reports healthy,
//! and kills them all when dropped.
//!
//! Reachable as `support::etcd`, and self-contained on purpose (it
//! includes only [`process`]): include it on its own with
//! `#[path = "support/etcd.rs"] mod etcd_support;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and report healthy.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Fresh ports are tried this many times (another process may grab a port
/// between our probe and etcd's bind).
const START_ATTEMPTS: usize = 3;

// Also `support::process` when this file is `support::etcd`: included on
// its own, it brings its own copy.
#[allow(clippy::duplicate_mod)]
#[path = "process.rs"]
mod process;

use process::free_ports;

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// The member's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running etcd cluster; every member dies with it.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".to_owned())
}

fn temp_root() -> tempfile::TempDir {
    // tmpfs makes etcd's fsyncs free; fall back to the default temp dir.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("cflux-etcd-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("cflux-etcd-")
        .tempdir()
        .expect("create a temp dir")
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until all members are healthy.
    pub async fn start(n: usize) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(n).await {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd cluster did not start: {last}");
    }

    async fn try_start(n: usize) -> Result<EtcdCluster, String> {
        let dir = temp_root();
        let ports = free_ports(2 * n);
        let id = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let token = format!("cflux-test-{}-{id}", std::process::id());
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_healthy(START_DEADLINE).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let m = &mut self.members[i];
        let log = std::fs::File::create(&m.log).map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", etcd_bin()))?;
        m.child = Some(child);
        Ok(())
    }

    /// The client URLs of every member (dead ones included).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Kills one member (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }

    /// Restarts a killed member with its data.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.members[i].kill();
        self.spawn(i, "existing")
    }

    /// Waits until every running member answers `/health` with a leader.
    pub async fn wait_healthy(&mut self, deadline: Duration) -> Result<(), String> {
        let until = Instant::now() + deadline;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| e.to_string())?;
        loop {
            let mut unhealthy = Vec::new();
            for m in &mut self.members {
                if m.child.is_none() {
                    continue;
                }
                if !m.is_running() {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    return Err(format!("{} exited; log:\n{log}", m.name));
                }
                let ok = match http.get(format!("{}/health", m.client_url)).send().await {
                    Ok(resp) => resp
                        .text()
                        .await
                        .map(|t| t.contains("\"health\":\"true\""))
                        .unwrap_or(false),
                    Err(_) => false,
                };
                if !ok {
                    unhealthy.push(m.name.clone());
                }
            }
            if unhealthy.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!("not healthy within {deadline:?}: {unhealthy:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member currently leading, asking each running one.
    pub async fn leader(&mut self) -> Option<usize> {
        let running: Vec<(usize, String)> = self
            .members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| m.is_running().then(|| (i, m.client_url.clone())))
            .collect();
        // (member index, member id, the leader it knows of)
        let mut seen = Vec::new();
        for (i, url) in running {
            let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([url.as_str()], None),
            )
            .await
            else {
                continue;
            };
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), client.status()).await
            {
                if let Some(header) = status.header() {
                    seen.push((i, header.member_id(), status.leader()));
                }
            }
        }
        let leader = seen.iter().map(|s| s.2).find(|l| *l != 0)?;
        seen.iter().find(|s| s.1 == leader).map(|s| s.0)
    }

    /// The temporary directory holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Pseudo-random bytes (so a misplaced chunk cannot go unnoticed).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
