//! `cargo bench --bench catch_up`: how fast a joining node is filled,
//! against the straight write rate of one influxd, in the same run, with
//! real processes — a manager, `auth-enabled` influxd servers behind
//! replicating `cflux-agent`s, and a lone influxd for the alternative.
//!
//! - **Straight write**: 200,000 points written to node A's influxd
//!   directly, batches of 5,000, one writer.
//! - **`cfluxctl catch-up`**: node B joins and is filled from A (chunked
//!   export through A's front door, written through B's replication
//!   endpoint to B's influxd only).
//! - **Portable backup and restore** (the alternative weighed in
//!   docs/decisions.md): `influxd backup -portable` of A over its RPC
//!   address, `influxd restore -portable -newdb` into the lone influxd,
//!   then `SELECT * INTO` from the restored copy, step by step.
//!
//! Figures are printed as a markdown table; nothing about timings is
//! asserted (every process shares the machine's CPUs).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use support::agent::start_nodes_with;
use support::influxd::{AgentOptions, Influxd, InfluxdOptions, Node};
use support::process::free_ports;
use support::{metric, Manager};

const SECRET: &str = "catch-up-bench-shared-secret";
const ADMIN_PW: &str = "bench-admin-pw";
const DB: &str = "bench";
const POINTS: usize = 200_000;
const BATCH: usize = 5_000;
const DEADLINE: Duration = Duration::from_secs(60);
/// 2023-11-14T00:00:00Z.
const T0: i64 = 1_699_920_000_000_000_000;

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

/// Agent options of a replicating node with its front door on `port`.
fn replicating(manager: &Manager, secret: &std::path::Path, port: u16) -> AgentOptions {
    let mut o = AgentOptions::new(&manager.url(), "bench");
    o.args = vec![
        "--frontdoor-listen".into(),
        format!("127.0.0.1:{port}"),
        "--replicate".into(),
        "--replication-secret-file".into(),
        secret.display().to_string(),
    ];
    o.log_filter = "warn".into();
    o
}

async fn bench() -> anyhow::Result<()> {
    println!("# cflux catch-up benchmark\n");
    println!(
        "machine: {} CPUs (nproc), load average {} at start; every process shares them\n",
        common::cpus(),
        common::load_average()
    );
    let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
    let dir = tempfile::Builder::new()
        .prefix("cflux-catch-up-bench-")
        .tempdir()?;
    let secret = dir.path().join("replication.secret");
    std::fs::write(&secret, "bench-members-only")?;
    let ports = free_ports(2);
    let a = start_nodes_with(1, &InfluxdOptions::auth(SECRET), |_| {
        replicating(&manager, &secret, ports[0])
    })
    .await
    .remove(0);
    let door_a = format!("http://127.0.0.1:{}", ports[0]);
    let (status, body) = support::influxd::InfluxApi::new(&door_a)
        .raw_query(
            &format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
            None,
        )
        .await;
    if status != 200 {
        bail!("the first admin: {status} {body}");
    }
    let direct_a = a.influxd.api().jwt(SECRET, "admin");
    direct_a.exec(&format!("CREATE DATABASE {DB}")).await;

    let lines: Vec<String> = (0..POINTS as i64)
        .map(|i| {
            format!(
                "cpu,host=h{} user={}.5,idle={i}i {}",
                i % 10,
                i % 100,
                T0 + i * 1_000_000_000
            )
        })
        .collect();
    let started = Instant::now();
    for batch in lines.chunks(BATCH) {
        direct_a.write(DB, &(batch.join("\n") + "\n")).await;
    }
    let straight = started.elapsed().as_secs_f64();

    let b = start_nodes_with(1, &InfluxdOptions::auth(SECRET), |_| {
        replicating(&manager, &secret, ports[1])
    })
    .await
    .remove(0);
    let b_id = b.agent.wait_registered(DEADLINE).await;
    wait_formed(&a, &b).await?;
    let started = Instant::now();
    let out = manager
        .ctl_command(Some("bench"), &["-o", "json", "catch-up", &b_id])
        .env("INFLUX_USERNAME", "admin")
        .env("INFLUX_PASSWORD", ADMIN_PW)
        .env("CFLUX_REPLICATION_SECRET_FILE", &secret)
        .env("CFLUX_CATCH_UP_STATE_DIR", dir.path().join("ctl"))
        .output()?;
    let catch_up = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "catch-up failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let copied = summary["points_written"]
        .as_u64()
        .context("points_written")?;

    let lone = Influxd::start(&dir.path().join("lone"), &InfluxdOptions::default()).await;
    let backup_dir = dir.path().join("backup");
    let (backup, mut restore) = (
        timed(
            Command::new(support::influxd::influxd_bin())
                .args(["backup", "-portable", "-host"])
                .arg(a.influxd.rpc_addr.to_string())
                .args(["-database", DB])
                .arg(&backup_dir),
        )?,
        timed(
            Command::new(support::influxd::influxd_bin())
                .args(["restore", "-portable", "-host"])
                .arg(lone.rpc_addr.to_string())
                .args(["-db", DB, "-newdb", "restored"])
                .arg(&backup_dir),
        )?,
    );
    let api = lone.api();
    // A restore returns before influxd serves the restored shards: until
    // then a SELECT INTO copies nothing.
    let started = Instant::now();
    support::wait::poll(DEADLINE, || async {
        match api
            .select_number("restored", "SELECT count(idle) FROM cpu")
            .await
        {
            Some(n) if n as usize == POINTS => Ok(()),
            other => Err(format!("{other:?} points restored")),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the restore did not show: {e}"))?;
    restore += started.elapsed().as_secs_f64();
    api.exec(&format!("CREATE DATABASE {DB}")).await;
    let started = Instant::now();
    api.exec(&format!(
        r#"SELECT * INTO "{DB}"."autogen".:MEASUREMENT FROM "restored"."autogen"./.*/ GROUP BY *"#
    ))
    .await;
    let select_into = started.elapsed().as_secs_f64();
    let restored = api
        .select_number(DB, "SELECT count(idle) FROM cpu")
        .await
        .unwrap_or(0.0);
    let backup_restore = backup + restore + select_into;

    let rate = |points: f64, secs: f64| points / secs.max(1e-9);
    let straight_rate = rate(POINTS as f64, straight);
    println!("| path | points | seconds | points/s | ÷ straight write |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| straight write to one influxd (batches of {BATCH}) | {POINTS} | {straight:.2} | {:.0} | 1.00 |",
        straight_rate
    );
    println!(
        "| `cfluxctl catch-up` (chunked export → replication endpoint) | {copied} | {catch_up:.2} | {:.0} | {:.2} |",
        rate(copied as f64, catch_up),
        rate(copied as f64, catch_up) / straight_rate
    );
    println!(
        "| backup -portable {backup:.2} s + restore -newdb {restore:.2} s + SELECT INTO {select_into:.2} s | {restored:.0} | {backup_restore:.2} | {:.0} | {:.2} |",
        rate(restored, backup_restore),
        rate(restored, backup_restore) / straight_rate
    );
    drop(b);
    Ok(())
}

/// A and B replicate to each other and B holds the catalog.
async fn wait_formed(a: &Node, b: &Node) -> anyhow::Result<()> {
    support::wait::poll(DEADLINE, || async {
        let peers_a = metric(&a.agent.metrics().await, "cflux_replication_peers");
        let peers_b = metric(&b.agent.metrics().await, "cflux_replication_peers");
        let dbs = b.influxd.api().jwt(SECRET, "admin").databases().await;
        if peers_a == Some(1.0) && peers_b == Some(1.0) && dbs.contains(DB) {
            Ok(())
        } else {
            Err(format!(
                "peers {peers_a:?}/{peers_b:?}, B's databases {dbs:?}"
            ))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the cluster did not form: {e}"))
}

/// Runs `command`, and how long it took.
fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = command.output()?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}
