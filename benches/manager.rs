//! `make bench` (`cargo bench --bench manager`): what the manager costs, measured
//! against a real `cflux-manager` process.
//!
//! The benchmark starts the manager binary built with it (embedded store in a
//! temporary directory, plain HTTP/2 on a free loopback port, `RUST_LOG=warn`),
//! drives it with the generated tonic client and kills it at the end. It
//! prints figures and ratios as markdown tables; it asserts nothing about
//! timings, which depend on the machine (the header says how many CPUs there
//! are: the manager and this client share them).
//!
//! - **Push → wake latency** over `WatchMeta`, with 1, 100 and 1,000 open
//!   streams (at most 100 per HTTP/2 connection, below the server's 200
//!   concurrent streams): one `PushMeta` at a time, timed from sending the
//!   push to the first and to the last watcher having received that version;
//!   every watcher gets the version before the next push.
//! - **The same over the legacy long poll** (`GET /clusters/{c}/versions/{v}`,
//!   one HTTP/1.1 connection per waiter), with 1 and 100 waiters. The pusher is
//!   the same gRPC `PushMeta`, so only the waiting side differs. Each round
//!   starts once the manager's `cflux_long_polls` gauge shows every poll held.
//! - **Throughput**: accepted compare-and-swap pushes per second and
//!   heartbeats per second through gRPC, each beside the same operation done
//!   straight against an in-process [`EmbeddedStore`] (fresh directory, same
//!   catalog size, same concurrency) in the same run. The ratio is what the
//!   manager (gRPC, HTTP/2, the control plane, a second process) costs.
//!
//! Every catalog is 4 KiB. Each phase stops after its count or a time cap, so
//! a run takes about half a minute and stays well under three minutes.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use cflux::clock::now_ms;
use cflux::manager::store::embedded::EmbeddedStore;
use cflux::manager::store::{NodeRecord, Store, StoreOptions};
use cflux::proto;
use cflux::proto::clusterflux_client::ClusterfluxClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use common::{percentile, push};
use support::Manager;

type Client = ClusterfluxClient<Channel>;

/// The size of every catalog pushed.
const CATALOG_BYTES: usize = 4 * 1024;
/// Watch streams per HTTP/2 connection (hyper's server allows 200).
const STREAMS_PER_CONNECTION: usize = 100;
/// Watch fan-out: (open streams, pushes).
const WATCH_CASES: [(usize, usize); 3] = [(1, 200), (100, 100), (1000, 50)];
/// Legacy long polls: (held polls, pushes).
const LEGACY_CASES: [(usize, usize); 2] = [(1, 100), (100, 50)];
/// Concurrent clients in the throughput phases.
const CONCURRENCY: [usize; 2] = [1, 4];
/// How long each throughput measurement runs.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);
/// The most a latency phase may take; it stops early (and says so) past it.
const PHASE_CAP: Duration = Duration::from_secs(25);
/// The most one push may take to reach every waiter before the phase fails.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// The most opening the watchers of a phase may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    header();
    let manager = Manager::start().await;
    println!("manager: `{}` pid {} on {}, embedded store in a temp dir; client: tonic (HTTP/2) and reqwest (HTTP/1.1)\n",
        Manager::bin(), manager.pid(), manager.addr);

    println!("## Push → wake latency\n");
    println!("Time from sending `PushMeta` until the first / the last waiter has the new version (4 KiB catalog), one push at a time. `ack` is the push's own round trip.\n");
    println!("| waiters over | open | pushes | first woken p50 | first p99 | last woken p50 | last p99 | push ack p50 | note |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (n, pushes) in WATCH_CASES {
        let result = watch_latency(manager.addr, n, pushes).await;
        print_latency("gRPC WatchMeta", n, result);
    }
    for (n, pushes) in LEGACY_CASES {
        let result = legacy_latency(manager.addr, n, pushes).await;
        print_latency("legacy long poll", n, result);
    }

    println!("\n## Throughput: manager vs the store underneath\n");
    println!(
        "Each figure runs {:?}; concurrent clients work on separate clusters / nodes. `manager ÷ store` is the fraction of the store's rate the manager delivers; `added per op` is concurrency/manager − concurrency/store (negative when the store run happened to be the slower one: noise, mostly fsync).\n",
        THROUGHPUT_WINDOW
    );
    println!("| operation | clients | via manager (gRPC) | straight on EmbeddedStore | manager ÷ store | added per op |");
    println!("|---|---:|---:|---:|---:|---:|");
    let store_dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(
        &store_dir.path().join("store"),
        StoreOptions {
            node_ttl: Duration::from_secs(15),
            advertise: "bench".into(),
            history: Default::default(),
            etcd_compaction_interval: Duration::ZERO,
        },
    )
    .await
    .context("cannot open the embedded store")?;
    for c in CONCURRENCY {
        let via = grpc_pushes(manager.addr, c).await;
        let direct = common::store_pushes(
            store.clone(),
            THROUGHPUT_WINDOW,
            &format!("bench-rate-{c}"),
            c,
            catalog(),
        )
        .await;
        print_rate("accepted CAS pushes/s", c, via, direct);
    }
    for c in CONCURRENCY {
        let via = grpc_heartbeats(manager.addr, c).await;
        let direct = store_heartbeats(store.clone(), c).await;
        print_rate("heartbeats/s", c, via, direct);
    }
    drop(manager);
    println!(
        "\nTotal run time: {:.1} s. Figures only: nothing here is asserted.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn header() {
    let (cpus, load) = (common::cpus(), common::load_average());
    println!("# cflux-manager benchmark\n");
    println!(
        "machine: {cpus} CPUs (nproc), load average {load} at start; the manager process and this client share the CPUs (on a small shared machine expect noise between runs)"
    );
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

/// A valid `meta.Data` (the manager refuses anything else) of about
/// `CATALOG_BYTES`.
fn catalog() -> Bytes {
    let tag: Vec<u8> = (0..CATALOG_BYTES).map(|i| i as u8).collect();
    Bytes::from(support::meta(&tag))
}

// ---------------------------------------------------------------------------
// Push → wake latency.

#[derive(Default)]
struct Latency {
    first: Vec<Duration>,
    last: Vec<Duration>,
    ack: Vec<Duration>,
    note: String,
}

impl Latency {
    /// Whether `phase_end` has passed; notes the time cap when it has.
    fn past(&mut self, phase_end: Instant) -> bool {
        let past = Instant::now() > phase_end;
        if past {
            self.note = format!("time cap {PHASE_CAP:?} reached");
        }
        past
    }
}

/// Opens `n` WatchMeta streams on one cluster and times `pushes` pushes.
async fn watch_latency(addr: SocketAddr, n: usize, pushes: usize) -> anyhow::Result<Latency> {
    let cluster = format!("bench-watch-{n}");
    let data = catalog();
    let mut pusher = Client::new(connect(addr).await?);
    let mut version = push(&mut pusher, &cluster, 0, data.clone()).await?;

    let mut channels = Vec::new();
    for _ in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        channels.push(connect(addr).await?);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut watchers = JoinSet::new();
    for i in 0..n {
        let mut client = Client::new(channels[i / STREAMS_PER_CONNECTION].clone());
        let (tx, cluster) = (tx.clone(), cluster.clone());
        watchers.spawn(async move {
            // Version 0: the current catalog comes at once, which proves the watch is live.
            let mut stream = client
                .watch_meta(proto::WatchMetaRequest {
                    cluster,
                    version: 0,
                })
                .await?
                .into_inner();
            while let Some(snapshot) = stream.message().await? {
                if tx.send((snapshot.version, Instant::now())).is_err() {
                    break;
                }
            }
            Ok::<_, tonic::Status>(())
        });
    }
    drop(tx);
    let result = async {
        wait_for_all(&mut rx, version, n, SETUP_TIMEOUT)
            .await
            .context("opening the watch streams")?;
        let mut out = Latency::default();
        let phase_end = Instant::now() + PHASE_CAP;
        for _ in 0..pushes {
            if out.past(phase_end) {
                break;
            }
            let sent = Instant::now();
            version = push(&mut pusher, &cluster, version, data.clone()).await?;
            out.ack.push(sent.elapsed());
            let (first, last) = wait_for_all(&mut rx, version, n, ROUND_TIMEOUT)
                .await
                .with_context(|| format!("waiting for version {version}"))?;
            out.first.push(first.saturating_duration_since(sent));
            out.last.push(last.saturating_duration_since(sent));
        }
        Ok(out)
    }
    .await;
    watchers.abort_all();
    while watchers.join_next().await.is_some() {}
    result
}

/// Waits until `n` watchers report `version`; returns the first and last arrival.
async fn wait_for_all(
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    version: u64,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut seen, mut first, mut last) = (0, None::<Instant>, None::<Instant>);
    while seen < n {
        let (v, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| {
                anyhow!("only {seen} of {n} watchers had version {version} after {timeout:?}")
            })?
            .ok_or_else(|| anyhow!("watch streams ended ({seen} of {n} had version {version})"))?;
        if v == version {
            seen += 1;
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    Ok((first.expect("n > 0"), last.expect("n > 0")))
}

/// Holds `n` legacy long polls per round and times `pushes` pushes.
async fn legacy_latency(addr: SocketAddr, n: usize, pushes: usize) -> anyhow::Result<Latency> {
    let cluster = format!("bench-legacy-{n}");
    let data = catalog();
    let mut pusher = Client::new(connect(addr).await?);
    let mut version = push(&mut pusher, &cluster, 0, data.clone()).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(n + 1)
        .timeout(ROUND_TIMEOUT)
        .tcp_nodelay(true)
        .build()?;
    let mut out = Latency::default();
    let phase_end = Instant::now() + PHASE_CAP;
    for _ in 0..pushes {
        if out.past(phase_end) {
            break;
        }
        let url = format!("http://{addr}/clusters/{cluster}/versions/{version}");
        let mut polls = JoinSet::new();
        for _ in 0..n {
            let (http, url) = (http.clone(), url.clone());
            polls.spawn(async move {
                let response = http.get(&url).send().await?;
                let status = response.status();
                let got = response
                    .headers()
                    .get("Version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = response.bytes().await?;
                let at = Instant::now();
                if status != reqwest::StatusCode::OK || body.len() != catalog().len() {
                    bail!("long poll answered {status} with {} bytes", body.len());
                }
                Ok((got, at))
            });
        }
        wait_for_polls(&http, addr, n)
            .await
            .context("holding the long polls")?;
        let sent = Instant::now();
        version = push(&mut pusher, &cluster, version, data.clone()).await?;
        out.ack.push(sent.elapsed());
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        while let Some(joined) = polls.join_next().await {
            let (got, at) = joined??;
            if got != Some(version) {
                bail!("a long poll woke with version {got:?}, not {version}");
            }
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        out.first
            .push(first.expect("n > 0").saturating_duration_since(sent));
        out.last
            .push(last.expect("n > 0").saturating_duration_since(sent));
    }
    Ok(out)
}

/// Waits until the manager's `cflux_long_polls` gauge shows `n` held polls.
async fn wait_for_polls(http: &reqwest::Client, addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let url = format!("http://{addr}/metrics");
    loop {
        let text = http.get(&url).send().await?.text().await?;
        let held = text
            .lines()
            .find_map(|l| l.strip_prefix("cflux_long_polls "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize;
        if held >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {held} of {n} long polls held after {ROUND_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ms(d: Option<Duration>) -> String {
    common::ms(d, 2)
}

fn print_latency(over: &str, n: usize, result: anyhow::Result<Latency>) {
    match result {
        Ok(l) => println!(
            "| {over} | {n} | {} | {} | {} | {} | {} | {} | {} |",
            l.last.len(),
            ms(percentile(&l.first, 0.50)),
            ms(percentile(&l.first, 0.99)),
            ms(percentile(&l.last, 0.50)),
            ms(percentile(&l.last, 0.99)),
            ms(percentile(&l.ack, 0.50)),
            l.note
        ),
        Err(e) => println!("| {over} | {n} | 0 | – | – | – | – | – | failed: {e:#} |"),
    }
}

// ---------------------------------------------------------------------------
// Throughput.

async fn grpc_pushes(addr: SocketAddr, clients: usize) -> anyhow::Result<f64> {
    let mut states = Vec::new();
    for i in 0..clients {
        let client = Client::new(connect(addr).await?);
        states.push((client, format!("bench-rate-{clients}-{i}"), 0));
    }
    let data = catalog();
    common::rate(
        THROUGHPUT_WINDOW,
        states,
        move |(mut client, cluster, version)| {
            let data = data.clone();
            async move {
                let version = push(&mut client, &cluster, version, data).await?;
                Ok((client, cluster, version))
            }
        },
    )
    .await
}

async fn grpc_heartbeats(addr: SocketAddr, clients: usize) -> anyhow::Result<f64> {
    let cluster = format!("bench-heartbeat-{clients}");
    let mut nodes = Vec::new();
    for i in 0..clients {
        let mut client = Client::new(connect(addr).await?);
        let node_id = client
            .register(proto::RegisterRequest {
                cluster: cluster.clone(),
                hostname: format!("bench-{i}"),
                ..Default::default()
            })
            .await?
            .into_inner()
            .node_id;
        nodes.push((client, node_id));
    }
    common::rate(THROUGHPUT_WINDOW, nodes, move |(mut client, node_id)| {
        let cluster = cluster.clone();
        async move {
            client
                .heartbeat(proto::HeartbeatRequest {
                    cluster,
                    node_id: node_id.clone(),
                    sync: None,
                })
                .await?;
            Ok((client, node_id))
        }
    })
    .await
}

async fn store_heartbeats(store: Arc<EmbeddedStore>, clients: usize) -> anyhow::Result<f64> {
    let cluster = format!("bench-heartbeat-{clients}");
    for i in 0..clients {
        store
            .put_node(NodeRecord {
                node_id: format!("node-{i}"),
                cluster: cluster.clone(),
                hostname: format!("bench-{i}"),
                registered_at_ms: now_ms(),
                last_heartbeat_ms: now_ms(),
                ..Default::default()
            })
            .await?;
    }
    let nodes = (0..clients).map(|i| format!("node-{i}")).collect();
    common::rate(THROUGHPUT_WINDOW, nodes, move |node_id| {
        let (store, cluster) = (store.clone(), cluster.clone());
        async move {
            if !store.heartbeat(&cluster, &node_id, now_ms(), None).await? {
                bail!("the store does not know {node_id}");
            }
            Ok(node_id)
        }
    })
    .await
}

fn print_rate(op: &str, clients: usize, via: anyhow::Result<f64>, direct: anyhow::Result<f64>) {
    let show = |r: &anyhow::Result<f64>| match r {
        Ok(v) => format!("{v:.0} /s"),
        Err(e) => format!("failed: {e:#}"),
    };
    let (ratio, added) = match (&via, &direct) {
        (Ok(v), Ok(d)) if *v > 0.0 && *d > 0.0 => (
            format!("{:.2}", v / d),
            format!("{:.0} µs", (clients as f64 / v - clients as f64 / d) * 1e6),
        ),
        _ => ("–".into(), "–".into()),
    };
    println!(
        "| {op} | {clients} | {} | {} | {ratio} | {added} |",
        show(&via),
        show(&direct)
    );
}
