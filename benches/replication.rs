//! `cargo bench --bench replication`: what replicated writes (`--replicate`)
//! cost, against real processes — a manager, `auth-enabled` influxd servers
//! each behind a replicating `cflux-agent` (two, then a third joining), and
//! one more influxd on its own as the baseline — measured in the same run.
//!
//! - **Write throughput**: batches of 5,000 points, one writer and four
//!   concurrent writers, alternating batch by batch between the replicating
//!   front door of node A (written to A's influxd, queued durably and sent
//!   to the peers) and the lone influxd; the ratio is the replicated rate
//!   over the lone one. On two nodes, then on three.
//! - **Replication lag A→B at full load**: from A's
//!   `cflux_replication_latency_seconds` histogram (queueing to B's write)
//!   over the two-node throughput phase, p50 and p99 as bucket upper bounds.
//! - **Replication lag A→B at moderate load**: one writer, batches of 100,
//!   1,000 and 5,000 points at a fixed rate well below saturation; each
//!   batch's lag runs from A's 204 to the whole batch being visible in B's
//!   influxd, asked directly every millisecond (so a figure includes up to
//!   one query's round trip).
//! - **Hinted-handoff drain**: C's influxd stopped for 60 s
//!   (`CFLUX_REPLICATION_OUTAGE_SECS`) while one writer keeps writing at A,
//!   then started again; the rate at which A's queue for C drains, against
//!   the lone influxd's write rate with four writers, measured right after.
//!
//! `CFLUX_REPLICATION_PHASES=lag` (a comma-separated list of `throughput`,
//! `lag`, `three`, `outage`) runs some phases only; `three` and `outage`
//! start the third node. Figures are printed as markdown tables; nothing
//! about timings is asserted (every process shares the machine's CPUs).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use common::percentile;
use support::agent::{start_nodes_with, Node};
use support::influxd::{strings, AgentOptions, InfluxApi, Influxd, InfluxdOptions};
use support::process::free_ports;
use support::{metric, Manager};

const SECRET: &str = "replication-bench-shared-secret";
const ADMIN_PW: &str = "bench-admin-pw";
const CLUSTER: &str = "bench";
const DB: &str = "bench";
const BATCH: usize = 5_000;
/// Measured batches per path, per writer.
const ROUNDS: usize = 12;
const WRITERS: usize = 4;
/// Moderate load: (points per batch, one batch every, batches).
const MODERATE: [(usize, Duration, usize); 3] = [
    (100, Duration::from_millis(100), 100),
    (1_000, Duration::from_millis(100), 100),
    (5_000, Duration::from_millis(250), 60),
];
const OUTAGE: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(120);

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

/// The phases to run: all, or those `CFLUX_REPLICATION_PHASES` names.
fn phase(name: &str) -> bool {
    std::env::var("CFLUX_REPLICATION_PHASES")
        .map_or(true, |phases| phases.split(',').any(|p| p.trim() == name))
}

/// The replicating nodes and the lone influxd, and how to reach them.
struct Bench {
    manager: Manager,
    nodes: Vec<Node>,
    lone: Influxd,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// A's front door.
    door: String,
    /// The next batch number: every batch written is distinct.
    next: usize,
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("# cflux-agent replication benchmark\n");
    println!(
        "machine: {} CPUs (nproc), load average {} at start; every node and the lone influxd share them\n",
        common::cpus(),
        common::load_average()
    );
    let mut b = Bench::start().await?;
    let b_id = b.nodes[1].agent.node_id().await.context("B's node ID")?;
    if phase("throughput") {
        println!("## Write throughput: batches of {BATCH} points\n");
        throughput_header();
        b.throughput_rows(2).await?;
        let text = b.nodes[0].agent.metrics().await;
        println!("\n## Replication lag A→B at full load (bucket upper bounds)\n");
        println!(
            "over the two-node throughput phase: p50 ≤ {}, p99 ≤ {}\n",
            lag_quantile(&text, &b_id, 0.5),
            lag_quantile(&text, &b_id, 0.99)
        );
    }

    if phase("lag") {
        println!("## Replication lag A→B at moderate load (2 nodes)\n");
        println!("From A's 204 to the whole batch visible in B's influxd (asked every 1 ms); one writer. Beside it, the same batch written straight to the lone influxd right after: what one influxd write of it takes.\n");
        println!("| points per batch | one batch every | points/s | batches | lag p50 | lag p99 | lag max | lone write p50 | lone write p99 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let on_b = b.nodes[1].influxd.api().jwt(SECRET, "admin");
        for (run, (size, period, batches)) in MODERATE.into_iter().enumerate() {
            let (lags, lone) = b.moderate_lag(&on_b, run, size, period, batches).await?;
            println!(
                "| {size} | {} ms | {:.0} | {} | {} | {} | {} | {} | {} |",
                period.as_millis(),
                size as f64 / period.as_secs_f64(),
                lags.len(),
                common::ms(percentile(&lags, 0.5), 1),
                common::ms(percentile(&lags, 0.99), 1),
                common::ms(lags.iter().max().copied(), 1),
                common::ms(percentile(&lone, 0.5), 1),
                common::ms(percentile(&lone, 0.99), 1),
            );
        }
        println!();
    }

    if phase("three") || phase("outage") {
        b.add_third().await?;
    }
    if phase("three") {
        println!("## Write throughput on three nodes\n");
        throughput_header();
        b.throughput_rows(3).await?;
        println!();
    }

    if phase("outage") {
        let outage = std::env::var("CFLUX_REPLICATION_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(OUTAGE, Duration::from_secs);
        b.outage(outage).await?;
    }
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
    drop(b);
    Ok(())
}

impl Bench {
    /// Two replicating nodes and the lone influxd, with the admin and the
    /// database on both sides.
    async fn start() -> anyhow::Result<Bench> {
        let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
        let dir = tempfile::Builder::new()
            .prefix("cflux-replication-bench-")
            .tempdir()?;
        std::fs::write(dir.path().join("replication.secret"), "bench-members-only")?;
        let (nodes, doors) = start_replicating(&manager, dir.path(), 2).await;
        let lone = Influxd::start(&dir.path().join("lone"), &InfluxdOptions::auth(SECRET)).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()?;
        let door = doors[0].clone();
        for base in [door.as_str(), &lone.url()] {
            query(
                &http,
                base,
                &format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
                false,
            )
            .await?;
            query(&http, base, &format!("CREATE DATABASE {DB}"), true).await?;
        }
        let b = Bench {
            manager,
            nodes,
            lone,
            dir,
            http,
            door,
            next: 0,
        };
        b.wait_formed().await?;
        Ok(b)
    }

    /// Every node holds the database and A knows all its peers.
    async fn wait_formed(&self) -> anyhow::Result<()> {
        let peers = (self.nodes.len() - 1) as f64;
        support::wait::poll(DEADLINE, || async {
            let known = metric(
                &self.nodes[0].agent.metrics().await,
                "cflux_replication_peers",
            );
            for n in &self.nodes {
                // A joining node's influxd has no admin until its agent
                // creates the cluster's: refused until then.
                let dbs = n
                    .influxd
                    .api()
                    .jwt(SECRET, "admin")
                    .try_query("SHOW DATABASES")
                    .await
                    .map(|s| strings(&s, "name"))?;
                if !dbs.contains(DB) {
                    return Err(format!("{}'s databases {dbs:?}", n.name));
                }
            }
            if known == Some(peers) {
                Ok(())
            } else {
                Err(format!("A knows {known:?} peers"))
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("the cluster did not form: {e}"))
    }

    /// A third replicating node joins the cluster.
    async fn add_third(&mut self) -> anyhow::Result<()> {
        if self.nodes.len() < 3 {
            let (mut third, _) = start_replicating(&self.manager, self.dir.path(), 1).await;
            third[0].name = "node2".into();
            self.nodes.extend(third);
        }
        self.wait_formed().await
    }

    /// One writer and `WRITERS` writers: a row for each path.
    async fn throughput_rows(&mut self, nodes: usize) -> anyhow::Result<()> {
        for writers in [1, WRITERS] {
            let (replicated, lone) = throughput(
                &self.http,
                &self.door,
                &self.lone.url(),
                writers,
                &mut self.next,
            )
            .await?;
            println!(
                "| {writers} | replicating front door ({nodes} nodes) | {} | {:.0} | {} | {:.2} |",
                replicated.batches,
                replicated.rate,
                common::ms(replicated.p50, 1),
                replicated.rate / lone.rate
            );
            println!(
                "| {writers} | lone influxd | {} | {:.0} | {} | |",
                lone.batches,
                lone.rate,
                common::ms(lone.p50, 1)
            );
        }
        Ok(())
    }

    /// `batches` batches of `size` points, one every `period`, each tagged
    /// `run`/its number: how long after A's 204 each was whole in B's
    /// influxd, and how long writing it to the lone influxd took.
    async fn moderate_lag(
        &self,
        on_b: &InfluxApi,
        run: usize,
        size: usize,
        period: Duration,
        batches: usize,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let mut lags = Vec::with_capacity(batches);
        let mut lone = Vec::with_capacity(batches);
        let mut tick = tokio::time::interval(period);
        for i in 0..batches {
            tick.tick().await;
            let body = tagged_batch(run, i, size);
            write(&self.http, &self.door, &body).await?;
            let acked = Instant::now();
            let count = format!("SELECT count(value) FROM lag WHERE run='{run}' AND b='{i}'");
            loop {
                if on_b.select_number(DB, &count).await == Some(size as f64) {
                    lags.push(acked.elapsed());
                    break;
                }
                if acked.elapsed() > DEADLINE {
                    bail!("batch {i} of {size} points never reached B");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let t = Instant::now();
            write(&self.http, &self.lone.url(), &body).await?;
            lone.push(t.elapsed());
        }
        Ok((lags, lone))
    }

    /// C's influxd down for `outage` while one writer writes at A; then the
    /// rate at which A's queue for C drains once C is back.
    async fn outage(&mut self, outage: Duration) -> anyhow::Result<()> {
        let c_id = self.nodes[2].agent.node_id().await.context("C's node ID")?;
        println!(
            "## Hinted-handoff drain: C's influxd down for {} s, one writer at A meanwhile\n",
            outage.as_secs()
        );
        self.nodes[2].influxd.kill();
        let down = Instant::now();
        let mut written = 0;
        while down.elapsed() < outage {
            write(&self.http, &self.door, &batch(self.next)).await?;
            self.next += 1;
            written += BATCH;
        }
        let rate_during = written as f64 / down.elapsed().as_secs_f64();
        let queued = |text: &str| {
            metric(
                text,
                &format!("cflux_handoff_queue_points{{peer=\"{c_id}\"}}"),
            )
        };
        let backlog = queued(&self.nodes[0].agent.metrics().await).unwrap_or(0.0);
        self.nodes[2].influxd.start_again().await;
        let back = Instant::now();
        support::wait::poll(DEADLINE * 5, || async {
            match queued(&self.nodes[0].agent.metrics().await) {
                Some(0.0) => Ok(()),
                other => Err(format!("{other:?} points queued")),
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("the queue did not drain: {e}"))?;
        let drained_in = back.elapsed().as_secs_f64();
        let drain = backlog / drained_in;
        let (_, lone) = throughput(
            &self.http,
            &self.door,
            &self.lone.url(),
            WRITERS,
            &mut self.next,
        )
        .await?;
        println!("| outage | written at A meanwhile | queued for C | drained in | drain rate | ÷ lone influxd ({WRITERS} writers) |");
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {:.1} s | {written} points ({rate_during:.0}/s) | {backlog:.0} points | {drained_in:.1} s | {drain:.0} points/s | {:.2} |\n",
            (back - down).as_secs_f64(),
            drain / lone.rate
        );
        Ok(())
    }
}

/// `n` replicating nodes of the bench's cluster, and their front doors.
async fn start_replicating(
    manager: &Manager,
    dir: &std::path::Path,
    n: usize,
) -> (Vec<Node>, Vec<String>) {
    let secret = dir.join("replication.secret");
    let ports = free_ports(n);
    let nodes = start_nodes_with(n, &InfluxdOptions::auth(SECRET), |i| {
        let mut o = AgentOptions::new(&manager.url(), CLUSTER);
        o.args = vec![
            "--frontdoor-listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--replicate".into(),
            "--replication-secret-file".into(),
            secret.display().to_string(),
        ];
        o.log_filter = "warn".into();
        o
    })
    .await;
    let doors = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    (nodes, doors)
}

fn throughput_header() {
    println!("| writers | path | batches | points/s | batch p50 | replicated ÷ lone |");
    println!("|---:|---|---:|---:|---:|---:|");
}

/// Each writer's batch times: through the replicating door, to the lone influxd.
type Times = (Vec<Duration>, Vec<Duration>);

struct Rate {
    batches: usize,
    rate: f64,
    p50: Option<Duration>,
}

/// `writers` concurrent writers, each alternating replicated and lone
/// batches `ROUNDS` times.
async fn throughput(
    http: &reqwest::Client,
    door: &str,
    lone: &str,
    writers: usize,
    next: &mut usize,
) -> anyhow::Result<(Rate, Rate)> {
    let first = *next;
    *next += writers * ROUNDS * 2;
    let runs = futures::future::try_join_all((0..writers).map(|w| async move {
        let mut times: Times = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let b = first + (w * ROUNDS + r) * 2;
            let t = Instant::now();
            write(http, door, &batch(b)).await?;
            times.0.push(t.elapsed());
            let t = Instant::now();
            write(http, lone, &batch(b + 1)).await?;
            times.1.push(t.elapsed());
        }
        anyhow::Ok(times)
    }))
    .await?;
    let rate = |pick: fn(&Times) -> &Vec<Duration>| {
        let all: Vec<Duration> = runs.iter().flat_map(|r| pick(r).clone()).collect();
        // Writers run in parallel: each path's rate is its points over the
        // time its writers spent on it, shared.
        let busy: f64 = all.iter().map(Duration::as_secs_f64).sum::<f64>() / writers as f64;
        Rate {
            batches: all.len(),
            rate: (all.len() * BATCH) as f64 / busy,
            p50: percentile(&all, 0.5),
        }
    };
    Ok((rate(|r| &r.0), rate(|r| &r.1)))
}

/// Batch `b`: 5,000 distinct points.
fn batch(b: usize) -> Bytes {
    let base_ns: u64 = 1_700_000_000_000_000_000;
    let mut s = String::with_capacity(BATCH * 80);
    for j in 0..BATCH {
        let i = (b * BATCH + j) as u64;
        s.push_str(&format!(
            "cpu,host=h{},region=r{} value={}.5,count={}i {}\n",
            j % 100,
            j % 5,
            i % 1000,
            i,
            base_ns + i * 1_000
        ));
    }
    Bytes::from(s)
}

/// Batch `b` of run `run` for the lag phase: `size` points of measurement
/// `lag` tagged with both, so B can be asked for exactly this batch.
fn tagged_batch(run: usize, b: usize, size: usize) -> Bytes {
    let base_ns: u64 = 1_700_000_000_000_000_000;
    let mut s = String::with_capacity(size * 60);
    for j in 0..size {
        s.push_str(&format!(
            "lag,run={run},b={b},host=h{} value={j} {}\n",
            j % 100,
            base_ns + j as u64 * 1_000
        ));
    }
    Bytes::from(s)
}

async fn write(http: &reqwest::Client, base: &str, body: &Bytes) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/write?db={DB}"))
        .basic_auth("admin", Some(ADMIN_PW))
        .body(body.clone())
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::NO_CONTENT {
        bail!("write to {base}: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

async fn query(http: &reqwest::Client, base: &str, q: &str, admin: bool) -> anyhow::Result<()> {
    let mut req = http.post(format!("{base}/query")).form(&[("q", q)]);
    if admin {
        req = req.basic_auth("admin", Some(ADMIN_PW));
    }
    let r = req.send().await?;
    if !r.status().is_success() {
        bail!("{q} on {base}: {}", r.text().await?);
    }
    Ok(())
}

/// The upper bound of the bucket holding the `q` quantile of A's latency
/// histogram for `peer`.
fn lag_quantile(text: &str, peer: &str, q: f64) -> String {
    let prefix = format!("cflux_replication_latency_seconds_bucket{{peer=\"{peer}\",le=\"");
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    let Some(total) = buckets.last().map(|b| b.1).filter(|t| *t > 0.0) else {
        return "–".into();
    };
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map_or("–".into(), |(le, _)| match le.parse::<f64>() {
            Ok(s) => format!("{:.1} ms", s * 1e3),
            Err(_) => le.clone(),
        })
}
