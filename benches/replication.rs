//! `cargo bench --bench replication`: what replicated writes (`--replicate`)
//! cost, against real processes — a manager, two `auth-enabled` influxd
//! servers each behind a replicating `cflux-agent`, and a third influxd on
//! its own as the baseline — measured in the same run.
//!
//! - **Write throughput**: batches of 5,000 points, one writer and four
//!   concurrent writers, alternating batch by batch between the replicating
//!   front door of node A (written to A's influxd, queued durably and sent
//!   to B) and the lone influxd; the ratio is the replicated rate over the
//!   lone one.
//! - **Replication lag A→B**: from A's `cflux_replication_latency_seconds`
//!   histogram (queueing to B's write), p50 and p99 as bucket upper bounds.
//! - **Hinted-handoff drain**: B's influxd stopped while A takes writes,
//!   then started again; the rate at which A's queue for B drains, against
//!   the lone influxd's write rate.
//!
//! Figures are printed as markdown tables; nothing about timings is
//! asserted (every process shares the machine's CPUs).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use common::percentile;
use support::agent::start_nodes_with;
use support::influxd::{AgentOptions, Influxd, InfluxdOptions};
use support::process::free_ports;
use support::{metric, Manager};

const SECRET: &str = "replication-bench-shared-secret";
const ADMIN_PW: &str = "bench-admin-pw";
const DB: &str = "bench";
const BATCH: usize = 5_000;
/// Measured batches per path, per writer.
const ROUNDS: usize = 12;
/// Batches written while B's influxd is down.
const OUTAGE_BATCHES: usize = 20;
const WRITERS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("# cflux-agent replication benchmark\n");
    println!(
        "machine: {} CPUs (nproc), load average {} at start; two nodes and the lone influxd share them\n",
        common::cpus(),
        common::load_average()
    );
    let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
    let dir = tempfile::Builder::new()
        .prefix("cflux-replication-bench-")
        .tempdir()?;
    let secret = dir.path().join("replication.secret");
    std::fs::write(&secret, "bench-members-only")?;
    let ports = free_ports(2);
    let mut nodes = start_nodes_with(2, &InfluxdOptions::auth(SECRET), |i| {
        let mut o = AgentOptions::new(&manager.url(), "bench");
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
    let lone = Influxd::start(&dir.path().join("lone"), &InfluxdOptions::auth(SECRET)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()?;
    let door = format!("http://127.0.0.1:{}", ports[0]);
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
    let b_id = nodes[1].agent.node_id().await.context("B's node ID")?;
    support::wait::poll(DEADLINE, || async {
        let peers = metric(&nodes[0].agent.metrics().await, "cflux_replication_peers");
        let dbs = nodes[1]
            .influxd
            .api()
            .jwt(SECRET, "admin")
            .databases()
            .await;
        if peers == Some(1.0) && dbs.contains(DB) {
            Ok(())
        } else {
            Err(format!("peers {peers:?}, B's databases {dbs:?}"))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the cluster did not form: {e}"))?;

    println!("## Write throughput: batches of {BATCH} points\n");
    println!("| writers | path | batches | points/s | batch p50 | replicated ÷ lone |");
    println!("|---:|---|---:|---:|---:|---:|");
    let mut next = 0;
    let mut lone_rate = 0.0;
    for writers in [1, WRITERS] {
        let (replicated, lone_r) =
            throughput(&http, &door, &lone.url(), writers, &mut next).await?;
        println!(
            "| {writers} | replicating front door (2 nodes) | {} | {:.0} | {} | {:.2} |",
            replicated.batches,
            replicated.rate,
            common::ms(replicated.p50, 1),
            replicated.rate / lone_r.rate
        );
        println!(
            "| {writers} | lone influxd | {} | {:.0} | {} | |",
            lone_r.batches,
            lone_r.rate,
            common::ms(lone_r.p50, 1)
        );
        lone_rate = lone_r.rate;
    }

    let text = nodes[0].agent.metrics().await;
    println!("\n## Replication lag A→B (bucket upper bounds)\n");
    println!(
        "p50 ≤ {}, p99 ≤ {}\n",
        lag_quantile(&text, &b_id, 0.5),
        lag_quantile(&text, &b_id, 0.99)
    );

    println!("## Hinted-handoff drain\n");
    nodes[1].influxd.kill();
    let outage = Instant::now();
    for _ in 0..OUTAGE_BATCHES {
        write(&http, &door, &batch(next)).await?;
        next += 1;
    }
    let queued = |text: &str| {
        metric(
            text,
            &format!("cflux_handoff_queue_points{{peer=\"{b_id}\"}}"),
        )
    };
    let backlog = queued(&nodes[0].agent.metrics().await).unwrap_or(0.0);
    nodes[1].influxd.start_again().await;
    let back = Instant::now();
    support::wait::poll(DEADLINE, || async {
        match queued(&nodes[0].agent.metrics().await) {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?} points queued")),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the queue did not drain: {e}"))?;
    let drain = backlog / back.elapsed().as_secs_f64();
    println!(
        "outage {:.1} s, {backlog:.0} points queued; drained at {drain:.0} points/s once B was back ({:.2} × the lone influxd's rate with {WRITERS} writers)\n",
        (back - outage).as_secs_f64(),
        drain / lone_rate
    );
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
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
