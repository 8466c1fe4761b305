//! `make bench` (`cargo bench --bench scale`): the figures of the scale issue
//! — 10,000 nodes and 10,000 watchers — measured with this benchmark's own
//! load generator against real `cflux-manager` processes (the binary built
//! with it, `RUST_LOG=warn`) and, for the HA phases, a real 3-member etcd
//! (`tests/support/etcd.rs`, data on tmpfs). Everything listens on 127.0.0.1.
//!
//! The generator shares the machine's CPUs with the manager and etcd, so
//! every phase reports the CPU each process used over its window (cores =
//! CPU seconds ÷ wall seconds, from `/proc/<pid>/stat`, the generator's own
//! from `/proc/self/stat`) and the resident memory (`VmRSS`): a generator
//! near a whole core per CPU is saturated, and its latencies are its own.
//!
//! - **(a) Heartbeats, one manager, embedded store**: 10,000 nodes register
//!   (64 at a time) and each heartbeats every 5 s on its own slot of the
//!   interval (2,000/s), over 32 gRPC connections; the latency of each call
//!   over a 60 s window after one interval of warm-up, the failed calls
//!   (timed out after 5 s, or answered with an error; a failed call is tried
//!   once on the other manager where there is one, and both count), and
//!   every node ever listed dead (`ListNodes` every 2.5 s; TTL 15 s).
//! - **(b) The same on two managers sharing a 3-member etcd**, half of the
//!   nodes on each; etcd's database size (the status API of every member)
//!   growth per minute over the window and the live leases at its end. Then
//!   etcd's leader is killed (SIGKILL) under load and restarted, and then
//!   one manager is killed (SIGKILL) under load: its nodes fail over to the
//!   other (a failed call is tried again there at once, as `cflux::Client`
//!   does), and the figure is how long until every node has heartbeaten
//!   successfully after the kill, with the nodes listed dead meanwhile.
//! - **(c) Push → last of 10,000 watchers**: 10,000 `WatchMeta` streams of
//!   one cluster, one HTTP/2 connection each (what 10,000 agents make), and
//!   again 100 streams on each of 100 connections (the layout the issue's
//!   first figure came from), read by this generator's own minimal HTTP/2
//!   client (`scale/raw_watch.rs`: one task per connection, hyper's
//!   client's flow-control windows), lighter than hyper's client (in two
//!   quiet runs the generator used 0.69 cores over the pushes where it had
//!   used 0.88), so the CPU left to the manager is closer to what it would
//!   have with its watchers on other machines.
//!   Then pushes
//!   one at a time, each timed from sending `PushMeta` to the last watcher
//!   having the new version; the manager's RSS with every stream open and
//!   its CPU per push.
//!   Beside it, in the same run, the **bare TCP floor**: this binary
//!   re-executed as a plain writer process (blocking writes in a loop, one
//!   thread per CPU; no runtime, no HTTP/2, no gRPC) sends a frame of the
//!   same size to 10,000 plain TCP connections, which the generator reads
//!   and times the same way: the least any server on this machine could
//!   take for the same fan-out.
//! - **(d) Accepted pushes/s through the manager vs the store alone**, 1 and
//!   4 clients, on the embedded store and on etcd: the same compare-and-swap
//!   loop through gRPC and straight on an in-process store (a fresh
//!   directory; on etcd, the same etcd under its own key prefix) in the same
//!   run, alternating in pairs of short windows; the figure is the median of
//!   the pairs' ratios. Beside it, each process's CPU per accepted push over
//!   all windows of a side (metered once the clients are connected): the
//!   manager's beside the store's own (the generator's on the store-alone
//!   side), and the generator's per gRPC call, so a heavy client is seen
//!   for what it is.
//!
//! Every phase is bounded in time; the whole run takes about six minutes.
//! `CFLUX_SCALE_PHASES=c,d` runs only some phases; `CFLUX_SCALE_WINDOW=15m`
//! lengthens the heartbeat window of (a) and (b) into a soak. The open files this
//! needs (10,000 connections in the generator, as many in the manager) come
//! from raising the soft limit to the hard one; a hard limit too low fails at
//! once, naming it. It prints markdown tables and asserts nothing.

mod common;
#[path = "scale/raw_watch.rs"]
mod raw_watch;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use cflux::manager::hub::Hub;
use cflux::manager::store::embedded::EmbeddedStore;
use cflux::manager::store::etcd::EtcdStore;
use cflux::manager::store::{Store, StoreOptions};
use cflux::proto;
use cflux::proto::clusterflux_client::ClusterfluxClient;
use prost::Message;
use std::io::{BufRead, Write};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use common::{mib, percentile, push};
use support::etcd::EtcdCluster;
use support::process::process_usage;
use support::Manager;

type Client = ClusterfluxClient<Channel>;

/// Nodes in the heartbeat phases.
const NODES: usize = 10_000;
/// Their heartbeat interval, and the manager's TTL.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
const NODE_TTL: &str = "15s";
const NODE_TTL_DURATION: Duration = Duration::from_secs(15);
/// gRPC connections the heartbeat generator spreads its nodes over, per manager.
const HEARTBEAT_CONNECTIONS: usize = 32;
/// Registrations in flight at once.
const REGISTRATIONS_IN_FLIGHT: usize = 64;
/// The most registering every node may take.
const REGISTRATION_CAP: Duration = Duration::from_secs(90);
/// The measured heartbeat window (after one interval of warm-up).
const HEARTBEAT_WINDOW: Duration = Duration::from_secs(60);
/// Overrides [`HEARTBEAT_WINDOW`] (a duration such as `15m`), for a soak.
const WINDOW_ENV: &str = "CFLUX_SCALE_WINDOW";
/// The most one heartbeat may take before it counts as timed out.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the nodes are listed to find any listed dead.
const LISTING_INTERVAL: Duration = Duration::from_millis(2500);
/// The most the kill phase waits for every node to heartbeat again.
const FAILOVER_CAP: Duration = Duration::from_secs(30);
/// Watchers of the fan-out phase, one connection each.
const WATCHERS: usize = 10_000;
/// Connections opened at once while setting them up.
const CONNECTS_IN_FLIGHT: usize = 100;
/// The cluster every fan-out watcher watches.
const FANOUT_CLUSTER: &str = "scale-fanout";
/// The fan-out's layouts: watch streams per HTTP/2 connection. One each is
/// what 10,000 agents make; 100 each is how the issue first measured it.
const STREAMS_PER_CONNECTION: [usize; 2] = [1, 100];
/// Pushes timed in the fan-out phase.
const FANOUT_PUSHES: usize = 100;
/// The most opening every watch may take.
const WATCH_SETUP_CAP: Duration = Duration::from_secs(120);
/// Set (to "FRAME_BYTES,CONNECTIONS") when this binary runs as the floor's
/// writer process.
const FLOOR_WRITER_ENV: &str = "CFLUX_SCALE_FLOOR_WRITER";
/// The most one push (manager or floor) may take to reach every watcher.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// The size of every catalog pushed.
const CATALOG_BYTES: usize = 4 * 1024;
/// Concurrent pushers in the throughput phase, and how long each runs.
const PUSH_CLIENTS: [usize; 2] = [1, 4];
const PUSH_WINDOW: Duration = Duration::from_secs(2);
/// Pairs of (via manager, store alone) windows per client count.
const PUSH_PAIRS: usize = 7;

fn main() -> anyhow::Result<()> {
    match std::env::var(FLOOR_WRITER_ENV) {
        Ok(spec) => floor_writer(&spec),
        Err(_) => common::run(bench()),
    }
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    let files = raise_open_files_limit()?;
    let phases = std::env::var("CFLUX_SCALE_PHASES").unwrap_or_else(|_| "a,b,c,d".into());
    let runs = |p: &str| phases.split(',').any(|x| x.trim() == p);
    println!("# Scale benchmark\n");
    println!(
        "machine: {} CPUs (nproc), load average {} at start; open files limit {files}; the generator (this process, pid {}), the managers and etcd share the CPUs. `cores` = CPU seconds ÷ wall seconds over the phase's window.\n",
        common::cpus(),
        common::load_average(),
        std::process::id()
    );
    let mut summary = Vec::new();
    if runs("a") {
        summary.extend(report("a", heartbeats_embedded().await));
    }
    if runs("b") {
        summary.extend(report("b", heartbeats_etcd().await));
    }
    if runs("c") {
        summary.extend(report("c", fanout().await));
    }
    if runs("d") {
        summary.extend(report("d", pushes().await));
    }
    println!("## Summary\n");
    println!("| figure | goal | measured | met |");
    println!("|---|---|---|---|");
    for f in summary {
        println!(
            "| {} | {} | {} | {} |",
            f.name,
            f.goal,
            f.measured,
            if f.met { "✓" } else { "✗" }
        );
    }
    println!(
        "\nTotal run time: {:.0} s. Figures only: nothing here is asserted.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One line of the summary table.
struct Figure {
    name: String,
    goal: &'static str,
    measured: String,
    met: bool,
}

fn report(phase: &str, result: anyhow::Result<Vec<Figure>>) -> Vec<Figure> {
    result.unwrap_or_else(|e| {
        println!("phase ({phase}) failed: {e:#}\n");
        Vec::new()
    })
}

/// Raises the soft limit of open files to the hard one; the limit now.
fn raise_open_files_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    // Each side of every watcher connection, plus the manager's own files.
    let needed = (WATCHERS + 1_000) as u64;
    if limit.rlim_cur < needed {
        bail!(
            "the open files limit is {} (hard); this benchmark needs {needed}: raise it (`ulimit -Hn`, /etc/security/limits.conf)",
            limit.rlim_cur
        );
    }
    Ok(limit.rlim_cur)
}

// ---------------------------------------------------------------------------
// CPU and memory of the processes in a phase.

/// CPU time of some processes from a start, for their cores over a window.
struct Meter {
    start: Instant,
    processes: Vec<(String, u32, f64)>,
}

impl Meter {
    /// Starts measuring the generator and `others` (name, pid).
    fn start(others: &[(String, u32)]) -> Meter {
        let mut processes = vec![("generator".to_owned(), std::process::id())];
        processes.extend(others.iter().cloned());
        Meter {
            start: Instant::now(),
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let cpu = process_usage(pid).map_or(0.0, |u| u.cpu_seconds);
                    (name, pid, cpu)
                })
                .collect(),
        }
    }

    /// Each process's cores and RSS since the start, as one table cell.
    fn usage(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64();
        self.processes
            .iter()
            .map(|(name, pid, cpu)| match process_usage(*pid) {
                Some(u) => format!(
                    "{name} {:.2} cores, {}",
                    (u.cpu_seconds - cpu) / wall,
                    mib(u.rss_bytes / 1024)
                ),
                None => format!("{name} gone"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// CPU seconds of process `name` since the start.
    fn cpu_seconds(&self, name: &str) -> Option<f64> {
        let (_, pid, cpu) = self.processes.iter().find(|(n, _, _)| n == name)?;
        Some(process_usage(*pid)?.cpu_seconds - cpu)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

fn client(channel: Channel) -> Client {
    // A listing of 10,000 nodes is a few MiB.
    Client::new(channel).max_decoding_message_size(64 << 20)
}

fn ms(d: Option<Duration>) -> String {
    common::ms(d, 1)
}

// ---------------------------------------------------------------------------
// (a), (b): heartbeats.

/// The nodes the generator plays, over one or more managers.
struct Fleet {
    cluster: String,
    /// Per manager, the connections its nodes use.
    managers: Vec<Vec<Client>>,
    node_ids: Vec<String>,
    /// The manager each node talks to now.
    current: Vec<AtomicUsize>,
    /// When each node last heartbeat successfully (ms since `epoch`).
    last_ok_ms: Vec<AtomicU64>,
    epoch: Instant,
    /// (sent at, latency) of every successful heartbeat.
    latencies: Mutex<Vec<(Instant, Duration)>>,
    /// Failed heartbeat calls: when, and whether the call timed out
    /// (rather than being answered with an error).
    failures: Mutex<Vec<(Instant, bool)>>,
}

impl Fleet {
    /// Registers `NODES` nodes, node `i` on manager `i % managers`.
    async fn register(cluster: &str, addrs: &[SocketAddr]) -> anyhow::Result<(Arc<Fleet>, f64)> {
        let mut managers = Vec::new();
        for addr in addrs {
            let mut pool = Vec::new();
            for _ in 0..HEARTBEAT_CONNECTIONS {
                pool.push(client(connect(*addr).await?));
            }
            managers.push(pool);
        }
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(REGISTRATIONS_IN_FLIGHT));
        let mut set = JoinSet::new();
        for i in 0..NODES {
            let mut c = managers[i % addrs.len()][i % HEARTBEAT_CONNECTIONS].clone();
            let (gate, cluster) = (gate.clone(), cluster.to_owned());
            set.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let id = tokio::time::timeout(
                    CALL_TIMEOUT * 2,
                    c.register(proto::RegisterRequest {
                        cluster,
                        hostname: format!("scale-{i}"),
                        ips: vec![format!("127.1.{}.{}", i / 256 % 256, i % 256)],
                        version: "bench".into(),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|_| anyhow!("registration {i} timed out"))??
                .into_inner()
                .node_id;
                anyhow::Ok((i, id))
            });
        }
        let mut node_ids = vec![String::new(); NODES];
        let deadline = tokio::time::Instant::now() + REGISTRATION_CAP;
        while let Some(joined) = tokio::time::timeout_at(deadline, set.join_next())
            .await
            .map_err(|_| anyhow!("registering {NODES} nodes took over {REGISTRATION_CAP:?}"))?
        {
            let (i, id) = joined??;
            node_ids[i] = id;
        }
        let per_second = NODES as f64 / started.elapsed().as_secs_f64();
        let epoch = Instant::now();
        let fleet = Fleet {
            cluster: cluster.to_owned(),
            current: (0..NODES)
                .map(|i| AtomicUsize::new(i % addrs.len()))
                .collect(),
            last_ok_ms: (0..NODES).map(|_| AtomicU64::new(0)).collect(),
            managers,
            node_ids,
            epoch,
            latencies: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        };
        Ok((Arc::new(fleet), per_second))
    }

    /// Heartbeats every node on its own slot of the interval until aborted.
    fn run(self: &Arc<Self>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..NODES {
            let fleet = self.clone();
            let offset = HEARTBEAT_INTERVAL.mul_f64(i as f64 / NODES as f64);
            set.spawn(async move {
                let mut due = start + offset;
                loop {
                    tokio::time::sleep_until(due).await;
                    fleet.heartbeat(i).await;
                    due += HEARTBEAT_INTERVAL;
                }
            });
        }
        set
    }

    /// One heartbeat of node `i`; a failed call is tried again at once on
    /// the next manager, as `cflux::Client` fails over.
    async fn heartbeat(&self, i: usize) {
        for _ in 0..self.managers.len() {
            let m = self.current[i].load(Ordering::Relaxed);
            let mut c = self.managers[m][i % HEARTBEAT_CONNECTIONS].clone();
            let sent = Instant::now();
            let call = c.heartbeat(proto::HeartbeatRequest {
                cluster: self.cluster.clone(),
                node_id: self.node_ids[i].clone(),
                sync: None,
            });
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => {
                    self.latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((sent, sent.elapsed()));
                    self.last_ok_ms[i]
                        .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    return;
                }
                answer => {
                    self.failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((sent, answer.is_err()));
                    self.current[i].store((m + 1) % self.managers.len(), Ordering::Relaxed);
                }
            }
        }
    }

    /// Latencies of the heartbeats sent in `[from, to)`, their failed calls
    /// and how many of those timed out.
    fn window(&self, from: Instant, to: Instant) -> (Vec<Duration>, usize, usize) {
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, d)| *d)
            .collect();
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let failed: Vec<bool> = failures
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, timed_out)| *timed_out)
            .collect();
        let timed_out = failed.iter().filter(|t| **t).count();
        (latencies, failed.len(), timed_out)
    }

    /// Lists the nodes every `LISTING_INTERVAL` for `window` through the
    /// first manager that answers; the nodes ever listed dead, and the
    /// listings that failed.
    async fn listed_dead(&self, window: Duration) -> (HashSet<String>, usize) {
        let until = Instant::now() + window;
        let (mut dead, mut failed) = (HashSet::new(), 0);
        while Instant::now() < until {
            let mut listed = false;
            for pool in &self.managers {
                let mut c = pool[0].clone();
                let call = c.list_nodes(proto::ListNodesRequest {
                    cluster: self.cluster.clone(),
                });
                if let Ok(Ok(answer)) = tokio::time::timeout(CALL_TIMEOUT, call).await {
                    for n in answer.into_inner().nodes {
                        if !n.alive {
                            dead.insert(n.node_id);
                        }
                    }
                    listed = true;
                    break;
                }
            }
            failed += usize::from(!listed);
            tokio::time::sleep(
                LISTING_INTERVAL.min(until.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        (dead, failed)
    }
}

/// What the fleet went through after a process was killed under load.
struct AfterKill {
    /// Until every node had heartbeaten successfully after the kill.
    recovered: Option<Duration>,
    /// Nodes listed dead in the [`FAILOVER_CAP`] after the kill.
    dead: usize,
    /// Heartbeat calls that failed meanwhile (each failover counts).
    failed_calls: usize,
}

impl AfterKill {
    fn describe(&self) -> String {
        format!(
            "every node heartbeat again after {}; {} listed dead in the {FAILOVER_CAP:?} after the kill; {} failed calls meanwhile",
            self.recovered.map_or(format!("more than {FAILOVER_CAP:?}"), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
            self.dead,
            self.failed_calls
        )
    }

    fn met(&self) -> bool {
        self.recovered.is_some_and(|d| d < NODE_TTL_DURATION) && self.dead == 0
    }
}

impl Fleet {
    /// Runs `kill` under load, then watches the listings for
    /// [`FAILOVER_CAP`] while waiting for every node to heartbeat again.
    async fn after_kill(&self, kill: impl FnOnce()) -> AfterKill {
        let killed_at = self.epoch.elapsed().as_millis() as u64;
        let started = Instant::now();
        kill();
        let listing = self.listed_dead(FAILOVER_CAP);
        let recovered = async {
            loop {
                if self
                    .last_ok_ms
                    .iter()
                    .all(|t| t.load(Ordering::Relaxed) > killed_at)
                {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (recovered, (dead, _)) =
            tokio::join!(tokio::time::timeout(FAILOVER_CAP, recovered), listing);
        let (_, failed_calls, _) = self.window(started, Instant::now());
        AfterKill {
            recovered: recovered.ok(),
            dead: dead.len(),
            failed_calls,
        }
    }
}

/// The heartbeat figures of one window, printed as a table row.
struct HeartbeatWindow {
    p50: Option<Duration>,
    p99: Option<Duration>,
    per_second: f64,
    failures: usize,
    timeouts: usize,
    dead: usize,
    failed_listings: usize,
}

/// The heartbeat phases' window: [`WINDOW_ENV`] or [`HEARTBEAT_WINDOW`].
fn heartbeat_window() -> anyhow::Result<Duration> {
    match std::env::var(WINDOW_ENV) {
        Ok(w) => humantime::parse_duration(&w).with_context(|| format!("{WINDOW_ENV}={w}")),
        Err(_) => Ok(HEARTBEAT_WINDOW),
    }
}

/// Runs a warm-up interval, then measures the fleet for the window.
async fn measure_heartbeats(fleet: &Arc<Fleet>, window: Duration) -> HeartbeatWindow {
    tokio::time::sleep(HEARTBEAT_INTERVAL).await;
    let from = Instant::now();
    let (dead, failed_listings) = fleet.listed_dead(window).await;
    let to = Instant::now();
    let (latencies, failures, timeouts) = fleet.window(from, to);
    HeartbeatWindow {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        per_second: latencies.len() as f64 / to.duration_since(from).as_secs_f64(),
        failures,
        timeouts,
        dead: dead.len(),
        failed_listings,
    }
}

fn heartbeat_table_header() {
    println!("| store | nodes | registered/s | heartbeats/s | p50 | p99 | failed calls (timed out) | listed dead | failed listings | CPU and RSS over the window |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

async fn heartbeats_embedded() -> anyhow::Result<Vec<Figure>> {
    println!("## (a) Heartbeats, one manager, embedded store\n");
    println!("{NODES} nodes, each every {HEARTBEAT_INTERVAL:?} on its own slot ({} per second), TTL {NODE_TTL}, over {HEARTBEAT_CONNECTIONS} connections; a {:?} window after one interval of warm-up.\n", NODES as u64 / HEARTBEAT_INTERVAL.as_secs(), heartbeat_window()?);
    let manager = Manager::start_with(&["--node-ttl", NODE_TTL]).await;
    let (fleet, registered) = Fleet::register("scale-heartbeats", &[manager.addr]).await?;
    let load = fleet.run();
    let meter = Meter::start(&[("manager".into(), manager.pid())]);
    let w = measure_heartbeats(&fleet, heartbeat_window()?).await;
    let usage = meter.usage();
    drop(load);
    heartbeat_table_header();
    print_heartbeats("embedded", registered, &w, &usage);
    println!();
    Ok(vec![Figure {
        name: format!("(a) heartbeats, one manager, embedded store: {NODES} nodes at 5 s"),
        goal: "p99 < 20 ms, none falsely dead",
        measured: format!(
            "p99 {}, {} listed dead, {} failed ({usage})",
            ms(w.p99),
            w.dead,
            w.failures
        ),
        met: w.p99.is_some_and(|p| p < Duration::from_millis(20)) && w.dead == 0 && w.failures == 0,
    }])
}

fn print_heartbeats(store: &str, registered: f64, w: &HeartbeatWindow, usage: &str) {
    println!(
        "| {store} | {NODES} | {registered:.0} | {:.0} | {} | {} | {} ({}) | {} | {} | {usage} |",
        w.per_second,
        ms(w.p50),
        ms(w.p99),
        w.failures,
        w.timeouts,
        w.dead,
        w.failed_listings
    );
}

/// etcd's database size (the largest member's) and its live leases.
async fn etcd_state(etcd: &EtcdCluster) -> anyhow::Result<(i64, usize)> {
    let mut size = 0;
    for endpoint in etcd.endpoints() {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        size = size.max(c.status().await?.db_size());
    }
    let mut c = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    let leases = c.leases().await?.leases().len();
    Ok((size, leases))
}

fn etcd_processes(etcd: &EtcdCluster) -> Vec<(String, u32)> {
    etcd.members
        .iter()
        .filter_map(|m| Some((format!("etcd {}", m.name), m.pid()?)))
        .collect()
}

async fn heartbeats_etcd() -> anyhow::Result<Vec<Figure>> {
    println!("## (b) Heartbeats, two managers on a 3-member etcd\n");
    println!("As (a), half of the nodes on each manager. etcd's database size is the largest member's (status API); leases are etcd's live leases at the end of the window.\n");
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints().join(",");
    let args = ["--node-ttl", NODE_TTL, "--etcd-endpoints", &endpoints];
    let mut managers = [
        Manager::start_with(&args).await,
        Manager::start_with(&args).await,
    ];
    let addrs: Vec<SocketAddr> = managers.iter().map(|m| m.addr).collect();
    let (fleet, registered) = Fleet::register("scale-heartbeats", &addrs).await?;
    let load = fleet.run();
    let mut processes: Vec<(String, u32)> = managers
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("manager {}", i + 1), m.pid()))
        .collect();
    processes.extend(etcd_processes(&etcd));
    let (size_before, _) = etcd_state(&etcd).await?;
    let meter = Meter::start(&processes);
    let window_start = Instant::now();
    let w = measure_heartbeats(&fleet, heartbeat_window()?).await;
    let (size_after, leases) = etcd_state(&etcd).await?;
    let minutes = window_start.elapsed().as_secs_f64() / 60.0;
    let growth = (size_after - size_before) as f64 / minutes / (1 << 20) as f64;
    let usage = meter.usage();
    heartbeat_table_header();
    print_heartbeats("etcd", registered, &w, &usage);
    println!("\netcd database: {:.1} MiB → {:.1} MiB over the window ({growth:+.1} MiB/min); {leases} live leases for {NODES} nodes.\n",
        size_before as f64 / (1 << 20) as f64, size_after as f64 / (1 << 20) as f64);

    // Kill etcd's leader under load, then bring it back.
    let leader = etcd.leader().await.context("etcd has no leader")?;
    let member_kill = fleet.after_kill(|| etcd.kill(leader)).await;
    println!(
        "etcd's leader ({}) killed under load: {}.\n",
        etcd.members[leader].name,
        member_kill.describe()
    );
    etcd.restart(leader).map_err(|e| anyhow!("{e}"))?;
    etcd.wait_healthy(Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!("{e}"))?;

    // Kill one manager under load; its nodes move to the other.
    let manager_kill = fleet.after_kill(|| managers[0].kill()).await;
    drop(load);
    println!(
        "Manager 1 killed under load: {}.\n",
        manager_kill.describe()
    );
    Ok(vec![
        Figure {
            name: format!("(b) heartbeats, two managers on a 3-member etcd: {NODES} nodes at 5 s"),
            goal: "p99 < 20 ms, none falsely dead",
            measured: format!(
                "p99 {}, {} listed dead, {} failed calls ({} timed out), {} failed listings ({usage})",
                ms(w.p99),
                w.dead,
                w.failures,
                w.timeouts,
                w.failed_listings
            ),
            met: w.p99.is_some_and(|p| p < Duration::from_millis(20))
                && w.dead == 0
                && w.failures == 0,
        },
        Figure {
            name: "(b) etcd database growth under steady heartbeats".into(),
            goal: "flat",
            measured: format!("{growth:+.1} MiB/min, {leases} live leases"),
            met: growth < 0.5,
        },
        Figure {
            name: "(b) etcd's leader killed mid-load".into(),
            goal: "every node alive again within one TTL",
            measured: member_kill.describe(),
            met: member_kill.met(),
        },
        Figure {
            name: "(b) one manager killed mid-load".into(),
            goal: "every node alive again within one TTL",
            measured: manager_kill.describe(),
            met: manager_kill.met(),
        },
    ])
}

// ---------------------------------------------------------------------------
// (c): watch fan-out.

/// A gRPC message frame: no compression, the length, the message.
fn grpc_frame(message: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.encoded_len());
    buf.put_u8(0);
    buf.put_u32(message.encoded_len() as u32);
    message
        .encode(&mut buf)
        .expect("a BytesMut grows as needed");
    buf.freeze()
}

/// Waits until `n` watchers report `version`; the last arrival.
async fn last_arrival(
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    version: u64,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut seen, mut last) = (0, None::<Instant>);
    while seen < n {
        let (v, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| {
                anyhow!("only {seen} of {n} watchers had version {version} after {timeout:?}")
            })?
            .ok_or_else(|| anyhow!("watch streams ended ({seen} of {n} had version {version})"))?;
        if v == version {
            seen += 1;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    last.ok_or_else(|| anyhow!("no watchers"))
}

/// A valid `meta.Data` (the manager refuses anything else) of about
/// `CATALOG_BYTES`, different for each `round`.
fn catalog(round: usize) -> Bytes {
    let tag: Vec<u8> = (0..CATALOG_BYTES).map(|i| (i + round) as u8).collect();
    Bytes::from(support::meta(&tag))
}

async fn fanout() -> anyhow::Result<Vec<Figure>> {
    println!("## (c) Push → last of {WATCHERS} watchers\n");
    println!("| server | watchers | connections | opened in | pushes | last woken p50 | p99 | max | server CPU per push | manager RSS idle / all open / end | CPU and RSS over the pushes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    let mut figures = Vec::new();
    let mut one_each_p99 = None;
    for per_connection in STREAMS_PER_CONNECTION {
        let fan = manager_fanout(per_connection).await?;
        let p99 = percentile(&fan.last, 0.99);
        let layout = if per_connection == 1 {
            one_each_p99 = p99;
            "one connection each".to_owned()
        } else {
            format!("{per_connection} streams per connection")
        };
        figures.push(Figure {
            name: format!("(c) push → last of {WATCHERS} watchers, one manager, {layout}"),
            goal: "p99 < 100 ms",
            measured: format!(
                "p99 {}, manager CPU {} per push ({})",
                ms(p99),
                fan.cpu_per_push,
                fan.usage
            ),
            met: p99.is_some_and(|p| p < Duration::from_millis(100)),
        });
        if per_connection == 1 {
            figures.push(Figure {
                name: format!("(c) manager RSS with {WATCHERS} watch streams, {layout}"),
                goal: "< 300 MB",
                measured: format!("{:.0} MB", fan.rss_bytes as f64 / 1e6),
                met: fan.rss_bytes < 300_000_000,
            });
        }
    }

    // The floor runs after every watcher is closed: the generator's open
    // files hold one side of each phase's connections, not both.
    let floor_frame = grpc_frame(&proto::MetaSnapshot {
        cluster: FANOUT_CLUSTER.to_owned(),
        version: FANOUT_PUSHES as u64,
        data: catalog(1),
        history_id: "0".repeat(36),
    })
    .len();
    match bare_tcp_floor(floor_frame).await {
        Ok((last, cpu_per_push)) => {
            let p99 = percentile(&last, 0.99);
            println!(
                "| bare TCP floor | {WATCHERS} | {WATCHERS} | – | {} | {} | {} | {} | {cpu_per_push} | – | – |\n",
                last.len(),
                ms(percentile(&last, 0.5)),
                ms(p99),
                ms(percentile(&last, 1.0)),
            );
            let ratio = one_each_p99.zip(p99).map_or("–".into(), |(m, f)| {
                format!("{:.1}", m.as_secs_f64() / f.as_secs_f64())
            });
            figures.push(Figure {
                name: format!("(c) bare TCP floor: the same frame to {WATCHERS} plain connections, same run"),
                goal: "(baseline)",
                measured: format!(
                    "p99 {}, writer CPU {cpu_per_push} per push; manager (one connection each) ÷ floor {ratio}",
                    ms(p99)
                ),
                met: true,
            });
        }
        Err(e) => println!("\nthe bare TCP floor failed: {e:#}\n"),
    }
    Ok(figures)
}

/// What one layout of the fan-out measured.
struct Fanout {
    last: Vec<Duration>,
    cpu_per_push: String,
    usage: String,
    /// The manager's highest RSS with every stream open.
    rss_bytes: u64,
}

/// [`WATCHERS`] streams, `per_connection` on each HTTP/2 connection, on a
/// fresh manager, then [`FANOUT_PUSHES`] pushes; prints the table row.
async fn manager_fanout(per_connection: usize) -> anyhow::Result<Fanout> {
    let manager = Manager::start().await;
    let mut pusher = client(connect(manager.addr).await?);
    let mut version = push(&mut pusher, FANOUT_CLUSTER, 0, catalog(0)).await?;
    let rss_idle = process_usage(manager.pid()).map_or(0, |u| u.rss_bytes);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut watchers = JoinSet::new();
    let opening = Instant::now();
    let connections = WATCHERS / per_connection;
    for _ in 0..connections {
        let (tx, gate, addr) = (tx.clone(), gate.clone(), manager.addr);
        watchers.spawn(async move {
            // Held until this connection's streams are open.
            let permit = gate.acquire_owned().await?;
            raw_watch::watch_connection(addr, FANOUT_CLUSTER, per_connection, tx, permit).await
        });
    }
    drop(tx);
    let result = async {
        last_arrival(&mut rx, version, WATCHERS, WATCH_SETUP_CAP)
            .await
            .context("opening the watch streams")?;
        let opened = opening.elapsed();
        let rss_open = process_usage(manager.pid()).map_or(0, |u| u.rss_bytes);
        let meter = Meter::start(&[("manager".into(), manager.pid())]);
        let mut last = Vec::new();
        for round in 1..=FANOUT_PUSHES {
            let sent = Instant::now();
            version = push(&mut pusher, FANOUT_CLUSTER, version, catalog(round)).await?;
            let at = last_arrival(&mut rx, version, WATCHERS, ROUND_TIMEOUT)
                .await
                .with_context(|| format!("waiting for version {version}"))?;
            last.push(at.saturating_duration_since(sent));
        }
        let cpu_per_push = cpu_per_push(&meter, "manager");
        let rss_end = process_usage(manager.pid()).map_or(0, |u| u.rss_bytes);
        let usage = meter.usage();
        println!(
            "| manager (gRPC) | {WATCHERS} | {connections} | {:.1} s | {} | {} | {} | {} | {cpu_per_push} | {} / {} / {} | {usage} |",
            opened.as_secs_f64(),
            last.len(),
            ms(percentile(&last, 0.5)),
            ms(percentile(&last, 0.99)),
            ms(percentile(&last, 1.0)),
            mib(rss_idle / 1024),
            mib(rss_open / 1024),
            mib(rss_end / 1024)
        );
        anyhow::Ok(Fanout {
            last,
            cpu_per_push,
            usage,
            rss_bytes: rss_open.max(rss_end),
        })
    }
    .await;
    watchers.abort_all();
    while watchers.join_next().await.is_some() {}
    result
}

/// CPU milliseconds of process `name` per fan-out push since `meter` started.
fn cpu_per_push(meter: &Meter, name: &str) -> String {
    meter.cpu_seconds(name).map_or("–".into(), |s| {
        format!("{:.0} ms", s * 1e3 / FANOUT_PUSHES as f64)
    })
}

/// The same fan-out with no HTTP/2 and no gRPC: the floor's writer process
/// (this binary, [`floor_writer`]) sends frames of `frame_bytes` to
/// [`WATCHERS`] plain TCP connections. The last arrival of each push and
/// the writer's CPU per push.
async fn bare_tcp_floor(frame_bytes: usize) -> anyhow::Result<(Vec<Duration>, String)> {
    let mut writer = FloorWriter(
        std::process::Command::new(std::env::current_exe()?)
            .env(FLOOR_WRITER_ENV, format!("{frame_bytes},{WATCHERS}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the floor's writer")?,
    );
    let pid = writer.0.id();
    let stdout = writer
        .0
        .stdout
        .take()
        .context("the floor's writer has no stdout")?;
    let mut addr = String::new();
    // One short line, written at once: blocking the runtime for it is fine.
    std::io::BufReader::new(stdout).read_line(&mut addr)?;
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .with_context(|| format!("the floor's writer said {addr:?}, not its address"))?;
    let mut control = writer
        .0
        .stdin
        .take()
        .context("the floor's writer has no stdin")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    for _ in 0..WATCHERS {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tx = tx.clone();
        readers.spawn(async move {
            let mut frame = vec![0; frame_bytes];
            while tcp.read_exact(&mut frame).await.is_ok() {
                let round = frame[..8].try_into().map_or(0, u64::from_be_bytes);
                if tx.send((round, Instant::now())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // A few bytes into a pipe nobody else writes: it does not block.
    let mut send = |round: usize| writeln!(control, "{round}");
    // Round 0 is the warm-up (the writer reads it once it has accepted
    // every connection).
    send(0)?;
    last_arrival(&mut rx, 0, WATCHERS, WATCH_SETUP_CAP)
        .await
        .context("the floor's warm-up round")?;
    let meter = Meter::start(&[("writer".into(), pid)]);
    let mut last = Vec::new();
    for round in 1..=FANOUT_PUSHES {
        let sent = Instant::now();
        send(round)?;
        let at = last_arrival(&mut rx, round as u64, WATCHERS, ROUND_TIMEOUT)
            .await
            .with_context(|| format!("the floor's round {round}"))?;
        last.push(at.saturating_duration_since(sent));
    }
    let per_push = cpu_per_push(&meter, "writer");
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    Ok((last, per_push))
}

/// The floor's writer process, killed when dropped.
struct FloorWriter(std::process::Child);

impl Drop for FloorWriter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor's writer process, for `spec` "FRAME_BYTES,CONNECTIONS": prints
/// the address it listens on, accepts that many connections, then for each
/// round number read from stdin writes one frame of `FRAME_BYTES` (the
/// round number first) to every connection, until stdin closes. The writes
/// are all it does: blocking writes in a loop on one thread per CPU, each
/// over its share of the connections; no runtime, no tasks, no wake-ups.
fn floor_writer(spec: &str) -> anyhow::Result<()> {
    let (frame_bytes, connections) = spec
        .split_once(',')
        .and_then(|(f, c)| Some((f.parse::<usize>().ok()?, c.parse::<usize>().ok()?)))
        .with_context(|| format!("{FLOOR_WRITER_ENV}={spec:?} is not FRAME_BYTES,CONNECTIONS"))?;
    if frame_bytes < 8 {
        bail!("a floor frame needs at least 8 bytes, not {frame_bytes}");
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    let mut sockets = Vec::with_capacity(connections);
    while sockets.len() < connections {
        let (tcp, _) = listener.accept()?;
        tcp.set_nodelay(true)?;
        sockets.push(tcp);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = connections.div_ceil(threads).max(1);
    for line in std::io::stdin().lines() {
        let round: u64 = line?.trim().parse().context("a round number")?;
        let mut frame = vec![0; frame_bytes];
        frame[..8].copy_from_slice(&round.to_be_bytes());
        std::thread::scope(|scope| {
            for part in sockets.chunks_mut(share) {
                let frame = &frame;
                scope.spawn(move || {
                    for tcp in part {
                        // A reader gone is the generator stopping.
                        let _ = tcp.write_all(frame);
                    }
                });
            }
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// (d): push throughput.

fn store_options() -> StoreOptions {
    StoreOptions {
        node_ttl: NODE_TTL_DURATION,
        advertise: "bench".into(),
        history: Default::default(),
        etcd_compaction_interval: Duration::ZERO,
    }
}

/// `clients` gRPC clients of `addr`, one connection each.
async fn push_clients(addr: SocketAddr, clients: usize) -> anyhow::Result<Vec<Client>> {
    let mut out = Vec::new();
    for _ in 0..clients {
        out.push(client(connect(addr).await?));
    }
    Ok(out)
}

/// Accepted pushes/s of `clients`, each to its own cluster `{prefix}-{i}`.
async fn manager_pushes(clients: Vec<Client>, prefix: &str) -> anyhow::Result<f64> {
    let states = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, format!("{prefix}-{i}"), 0))
        .collect();
    let data = catalog(0);
    common::rate(PUSH_WINDOW, states, move |(mut c, cluster, version)| {
        let data = data.clone();
        async move {
            let version = push(&mut c, &cluster, version, data).await?;
            Ok((c, cluster, version))
        }
    })
    .await
}

/// One side's CPU over all its windows: seconds per process (the
/// generator first), and the pushes they were spent on.
#[derive(Default)]
struct PushCpu {
    seconds: Vec<(String, f64)>,
    pushes: f64,
}

impl PushCpu {
    /// Adds one window of `rate` pushes/s, metered from its start.
    fn add(&mut self, meter: &Meter, rate: f64) {
        self.pushes += rate * meter.start.elapsed().as_secs_f64();
        for (name, _, _) in &meter.processes {
            let cpu = meter.cpu_seconds(name).unwrap_or(0.0);
            match self.seconds.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += cpu,
                None => self.seconds.push((name.clone(), cpu)),
            }
        }
    }

    /// CPU per push of each process, as one table cell.
    fn cell(&self) -> String {
        self.seconds
            .iter()
            .map(|(name, cpu)| format!("{name} {:.0} µs", cpu / self.pushes.max(1.0) * 1e6))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Pushes/s through `manager` and straight on `store`, per client count:
/// table rows and the lowest ratio. The two sides alternate in
/// [`PUSH_PAIRS`] pairs of windows, the first side of each pair swapped
/// every time, and the ratio is the median of the pairs' ratios: a machine
/// getting busier or quieter weighs on both sides of a pair alike.
async fn compare_pushes(
    name: &str,
    manager: &Manager,
    store: Arc<dyn Store>,
    others: &[(String, u32)],
) -> anyhow::Result<Option<f64>> {
    let mut lowest = None::<f64>;
    let mut with_manager = vec![("manager".to_owned(), manager.pid())];
    with_manager.extend(others.iter().cloned());
    for clients in PUSH_CLIENTS {
        let (mut via_sum, mut direct_sum, mut ratios) = (0.0, 0.0, Vec::new());
        let (mut via_cpu, mut direct_cpu) = (PushCpu::default(), PushCpu::default());
        for pair in 0..PUSH_PAIRS {
            let (mut via, mut direct) = (0.0, 0.0);
            for side in 0..2 {
                let prefix = format!("scale-rate-{name}-{pair}-{side}-{clients}");
                if (pair + side) % 2 == 0 {
                    let connected = push_clients(manager.addr, clients).await?;
                    let meter = Meter::start(&with_manager);
                    via = manager_pushes(connected, &prefix).await?;
                    via_cpu.add(&meter, via);
                } else {
                    let meter = Meter::start(others);
                    direct = common::store_pushes(
                        store.clone(),
                        PUSH_WINDOW,
                        &prefix,
                        clients,
                        catalog(0),
                    )
                    .await?;
                    direct_cpu.add(&meter, direct);
                }
            }
            via_sum += via;
            direct_sum += direct;
            ratios.push(via / direct);
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        lowest = Some(lowest.map_or(median, |l| l.min(median)));
        let pairs = PUSH_PAIRS as f64;
        println!(
            "| {name} | {clients} | {:.0} /s | {:.0} /s | {median:.2} ({:.2}–{:.2}) | {} | {} |",
            via_sum / pairs,
            direct_sum / pairs,
            ratios[0],
            ratios[ratios.len() - 1],
            via_cpu.cell(),
            direct_cpu.cell()
        );
    }
    Ok(lowest)
}

async fn pushes() -> anyhow::Result<Vec<Figure>> {
    println!("## (d) Accepted pushes/s through the manager vs the store alone\n");
    println!("The sides alternate in {PUSH_PAIRS} pairs of {PUSH_WINDOW:?} windows, which side goes first swapped every pair; rates are the means, the ratio is the median of the pairs' ratios (lowest–highest in brackets), CPU is per accepted push over all windows of each side. Every client pushes a 4 KiB catalog to its own cluster, one compare-and-swap after another. The store alone runs in the generator's process.\n");
    println!("| store | clients | via manager (gRPC) | store alone | manager ÷ store, median (range) | CPU per push via manager | CPU per push store alone |");
    println!("|---|---:|---:|---:|---:|---|---|");
    let mut figures = Vec::new();

    let manager = Manager::start().await;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store"), store_options())
        .await
        .context("cannot open the embedded store")?;
    let embedded = compare_pushes("embedded", &manager, store, &[]).await?;
    drop(manager);

    let etcd = EtcdCluster::start(3).await;
    let manager = Manager::start_with(&["--etcd-endpoints", &etcd.endpoints().join(",")]).await;
    let store: Arc<dyn Store> = EtcdStore::connect_with_prefix(
        &etcd.endpoints(),
        "scale-bench-direct/",
        store_options(),
        Hub::new(),
    )
    .await
    .context("cannot connect the etcd store")?;
    let on_etcd = compare_pushes("etcd", &manager, store, &etcd_processes(&etcd)).await?;
    println!();
    for (name, ratio) in [("embedded", embedded), ("etcd", on_etcd)] {
        figures.push(Figure {
            name: format!("(d) accepted pushes/s through the manager vs the store alone, {name}"),
            goal: "≥ 0.7",
            measured: ratio.map_or("–".into(), |r| {
                format!("{r:.2} (median of {PUSH_PAIRS} pairs; the lower of 1 and 4 clients)")
            }),
            met: ratio.is_some_and(|r| r >= 0.7),
        });
    }
    Ok(figures)
}
