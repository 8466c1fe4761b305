//! `cargo bench --bench frontdoor`: what the agent's front door costs, against
//! real processes — a manager, an `auth-enabled` influxd (Debian's 1.6.7
//! here) with a shared secret, and its `cflux-agent` with
//! `--frontdoor-listen` — measured in the same run through the front door
//! and straight to influxd, so the ratios compare like with like.
//!
//! - **Writes**: line-protocol batches of 5,000 points (`POST /write`,
//!   basic credentials), one writer and four concurrent writers; the two
//!   paths alternate batch by batch.
//! - **Query latency**: `SHOW DATABASES` (nearly all overhead), 1,000 rows
//!   of points (a larger answer to pass on) and a `count()` over everything
//!   written (mostly influxd's work), alternating paths per query.
//! - **Authentication with a warm cache**: end to end, `/ping` through the
//!   front door with and without credentials (the difference is the check,
//!   the JWT and the rewritten header); in process, one cold bcrypt check
//!   (cost 10, as influxd hashes) against the warm-cache check and the JWT
//!   signature.
//!
//! Both paths authenticate as the same admin with basic credentials: straight
//! to influxd, influxd checks the password (with its own cache); through the
//! front door, the agent checks it and influxd checks a JWT. It prints
//! figures as markdown tables and asserts nothing about timings, which
//! depend on the machine (the header says how many CPUs there are: influxd,
//! the agent and this client share them). Each phase stops after its count
//! or a time cap; a run takes well under two minutes.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use cflux::agent::frontdoor::authenticator::Authenticator;
use cflux::agent::frontdoor::credentials::{self, Secret};
use cflux::influx::catalog::{Catalog, User};
use common::{percentile, us};
use support::influxd::{self, free_port, Agent, AgentOptions, Influxd, InfluxdOptions};
use support::Manager;

const SECRET: &str = "frontdoor-bench-shared-secret";
const ADMIN_PW: &str = "bench-admin-pw";
const DB: &str = "bench";
/// Points per write batch.
const BATCH: usize = 5_000;
/// Measured batches per path, per writer.
const WRITE_ROUNDS: usize = 24;
/// Warm-up batches per path before measuring.
const WARMUP_BATCHES: usize = 2;
/// Concurrent writers in the second write phase.
const WRITERS: usize = 4;
/// Queries per path: (statement, count).
const QUERIES: [(&str, usize); 3] = [
    ("SHOW DATABASES", 400),
    ("SELECT * FROM cpu LIMIT 1000", 100),
    ("SELECT count(value) FROM cpu", 20),
];
/// `/ping` requests per variant.
const PINGS: usize = 600;
/// In-process iterations.
const IN_PROCESS: usize = 200_000;
/// The most one phase may take; it stops early (and says so) past it.
const PHASE_CAP: Duration = Duration::from_secs(20);

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

/// One path to influxd.
#[derive(Clone)]
struct Path {
    name: &'static str,
    base: String,
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    header();
    let manager = Manager::start().await;
    let dir = tempfile::Builder::new()
        .prefix("cflux-frontdoor-bench-")
        .tempdir()?;
    let influxd = Influxd::start(&dir.path().join("influxd"), &InfluxdOptions::auth(SECRET)).await;
    let port = free_port();
    let mut options = AgentOptions::new(&manager.url(), "bench");
    options.args = vec!["--frontdoor-listen".into(), format!("127.0.0.1:{port}")];
    options.log_filter = "warn".into();
    let agent = Agent::start(&influxd, &dir.path().join("agent"), &options).await;
    let direct = Path {
        name: "straight to influxd",
        base: influxd.url(),
    };
    let door = Path {
        name: "through the front door",
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build()?;
    setup(&http, &door, &agent).await?;
    println!(
        "influxd `{}` on {} (auth-enabled, shared secret); agent `{}` front door on 127.0.0.1:{port}; client: reqwest (HTTP/1.1, keep-alive); basic credentials on both paths\n",
        influxd::influxd_bin(),
        influxd.http_addr,
        influxd::agent_bin()
    );

    println!("## Writes: batches of {BATCH} points\n");
    println!("| writers | path | batches | points/s | batch p50 | batch p99 | front door ÷ straight | note |");
    println!("|---:|---|---:|---:|---:|---:|---:|---|");
    writes(&http, &direct, &door, 1).await?;
    writes(&http, &direct, &door, WRITERS).await?;

    println!("\n## Query latency\n");
    println!("| query | path | queries | p50 | p90 | p99 | front door ÷ straight (p50) | note |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for (q, n) in QUERIES {
        queries(&http, &direct, &door, q, n).await?;
    }

    println!("\n## Authentication cost, warm cache\n");
    auth_end_to_end(&http, &door).await?;
    auth_in_process().await;

    drop(agent);
    drop(influxd);
    drop(manager);
    println!("\ntotal run time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn header() {
    let (cpus, load) = (common::cpus(), common::load_average());
    println!("# cflux-agent front door benchmark\n");
    println!(
        "machine: {cpus} CPUs (nproc), load average {load} at start; influxd, the agent and this client share the CPUs (on a small shared machine expect noise between runs)\n"
    );
}

/// The first admin (through the front door, as a new cluster makes it), the
/// database, and a warm credentials cache.
async fn setup(http: &reqwest::Client, door: &Path, agent: &Agent) -> anyhow::Result<()> {
    let r = http
        .post(format!("{}/query", door.base))
        .form(&[(
            "q",
            format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
        )])
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("cannot create the admin: {}", r.text().await?);
    }
    let vouched = support::wait::poll(Duration::from_secs(20), || async {
        let r = http
            .post(format!("{}/query", door.base))
            .basic_auth("admin", Some(ADMIN_PW))
            .form(&[("q", format!("CREATE DATABASE {DB}"))])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let metrics = agent.metrics().await;
        if ok && metrics.contains("cflux_frontdoor_requests_total{auth=\"cached\"}") {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    vouched.map_err(|metrics| {
        anyhow::anyhow!("the front door did not come to vouch for the admin:\n{metrics}")
    })
}

/// `n` batches of line protocol, every point distinct.
fn batches(first: usize, n: usize) -> Vec<Bytes> {
    let base_ns: u64 = 1_700_000_000_000_000_000;
    (first..first + n)
        .map(|b| {
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
        })
        .collect()
}

async fn write(http: &reqwest::Client, path: &Path, body: Bytes) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = http
        .post(format!("{}/write", path.base))
        .query(&[("db", DB)])
        .basic_auth("admin", Some(ADMIN_PW))
        .body(body)
        .send()
        .await
        .with_context(|| format!("write {}", path.name))?;
    let status = r.status();
    let text = r.text().await?;
    if status.as_u16() != 204 {
        bail!("write {}: HTTP {status}: {text}", path.name);
    }
    Ok(t.elapsed())
}

/// Each of `writers` writers alternates paths batch by batch.
async fn writes(
    http: &reqwest::Client,
    direct: &Path,
    door: &Path,
    writers: usize,
) -> anyhow::Result<()> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let per_writer = 2 * (WARMUP_BATCHES + WRITE_ROUNDS);
    let first = NEXT.fetch_add(writers * per_writer, std::sync::atomic::Ordering::Relaxed);
    let bodies: Vec<Vec<Bytes>> = (0..writers)
        .map(|w| batches(first + w * per_writer, per_writer))
        .collect();
    let cap = Instant::now() + PHASE_CAP;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for bodies in bodies {
        let (http, direct, door) = (http.clone(), direct.clone(), door.clone());
        tasks.spawn(async move {
            let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            for (k, body) in bodies.into_iter().enumerate() {
                let which = k % 2;
                let path = if which == 0 { &direct } else { &door };
                let d = write(&http, path, body).await?;
                if k >= 2 * WARMUP_BATCHES {
                    times[which].push(d);
                }
                if Instant::now() > cap {
                    break;
                }
            }
            anyhow::Ok(times)
        });
    }
    let mut all: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    while let Some(r) = tasks.join_next().await {
        let [a, b] = r??;
        all[0].extend(a);
        all[1].extend(b);
    }
    let capped = started.elapsed() >= PHASE_CAP;
    // With writers running side by side, a path's throughput is its points
    // over the time its own batches took, spread over the writers.
    let rate = |t: &[Duration]| {
        let busy: f64 = t.iter().map(Duration::as_secs_f64).sum();
        (t.len() * BATCH) as f64 / (busy / writers as f64)
    };
    let (direct_rate, door_rate) = (rate(&all[0]), rate(&all[1]));
    for (i, path) in [direct, door].into_iter().enumerate() {
        let ratio = if i == 1 {
            format!("{:.2}", door_rate / direct_rate)
        } else {
            String::new()
        };
        println!(
            "| {writers} | {} | {} | {:.0} | {} | {} | {ratio} | {} |",
            path.name,
            all[i].len(),
            rate(&all[i]),
            ms(percentile(&all[i], 0.5)),
            ms(percentile(&all[i], 0.99)),
            cap_note(capped)
        );
    }
    Ok(())
}

async fn query(http: &reqwest::Client, path: &Path, q: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = http
        .post(format!("{}/query", path.base))
        .basic_auth("admin", Some(ADMIN_PW))
        .form(&[("db", DB), ("q", q)])
        .send()
        .await
        .with_context(|| format!("query {}", path.name))?;
    let status = r.status();
    let body = r.bytes().await?;
    if !status.is_success() || body.starts_with(b"{\"error\"") {
        bail!(
            "query {}: HTTP {status}: {}",
            path.name,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(t.elapsed())
}

async fn queries(
    http: &reqwest::Client,
    direct: &Path,
    door: &Path,
    q: &str,
    n: usize,
) -> anyhow::Result<()> {
    for path in [direct, door] {
        for _ in 0..5 {
            query(http, path, q).await?;
        }
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let started = Instant::now();
    for _ in 0..n {
        times[0].push(query(http, direct, q).await?);
        times[1].push(query(http, door, q).await?);
        if started.elapsed() > PHASE_CAP {
            break;
        }
    }
    let capped = started.elapsed() > PHASE_CAP;
    let p50 = |t: &[Duration]| percentile(t, 0.5).unwrap_or_default().as_secs_f64();
    for (i, path) in [direct, door].into_iter().enumerate() {
        let ratio = if i == 1 {
            format!("{:.2}", p50(&times[1]) / p50(&times[0]))
        } else {
            String::new()
        };
        println!(
            "| `{q}` | {} | {} | {} | {} | {} | {ratio} | {} |",
            path.name,
            times[i].len(),
            ms(percentile(&times[i], 0.5)),
            ms(percentile(&times[i], 0.9)),
            ms(percentile(&times[i], 0.99)),
            cap_note(capped)
        );
    }
    Ok(())
}

/// `/ping` through the front door, with and without credentials.
async fn auth_end_to_end(http: &reqwest::Client, door: &Path) -> anyhow::Result<()> {
    let ping = |with: bool| {
        let mut r = http.get(format!("{}/ping", door.base));
        if with {
            r = r.basic_auth("admin", Some(ADMIN_PW));
        }
        async move {
            let t = Instant::now();
            let resp = r.send().await?;
            if resp.status().as_u16() != 204 {
                bail!("ping: HTTP {}", resp.status());
            }
            anyhow::Ok(t.elapsed())
        }
    };
    for _ in 0..20 {
        ping(false).await?;
        ping(true).await?;
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let started = Instant::now();
    for _ in 0..PINGS {
        times[0].push(ping(false).await?);
        times[1].push(ping(true).await?);
        if started.elapsed() > PHASE_CAP {
            break;
        }
    }
    println!(
        "End to end, `GET /ping` through the front door ({} each, alternating):\n",
        times[0].len()
    );
    println!("| credentials | p50 | p90 | p99 |");
    println!("|---|---:|---:|---:|");
    for (i, what) in ["none (passed through)", "basic, cached verdict → JWT"]
        .into_iter()
        .enumerate()
    {
        println!(
            "| {what} | {} | {} | {} |",
            us(percentile(&times[i], 0.5)),
            us(percentile(&times[i], 0.9)),
            us(percentile(&times[i], 0.99))
        );
    }
    let d = percentile(&times[1], 0.5).unwrap_or_default().as_secs_f64()
        - percentile(&times[0], 0.5).unwrap_or_default().as_secs_f64();
    println!(
        "\nadded by authentication (p50 difference): {:.1} µs per request\n",
        d * 1e6
    );
    Ok(())
}

/// The pieces of a check, in this process.
async fn auth_in_process() {
    let hash = bcrypt::hash("pw", 10).expect("bcrypt");
    let mut catalog = Catalog::default();
    for i in 0..1000 {
        let name = format!("user{i}");
        catalog.users.insert(
            name.clone(),
            User {
                name,
                hash: hash.clone(),
                ..User::default()
            },
        );
    }
    let (_tx, rx) = tokio::sync::watch::channel(Some(Arc::new(catalog)));
    let auth = Authenticator::new(rx);
    let password = Secret::new("pw");
    let t = Instant::now();
    let cold = auth.check("user7", &password).await;
    let cold_time = t.elapsed();
    assert!(!cold.cached);
    let t = Instant::now();
    for _ in 0..IN_PROCESS {
        let c = auth.check("user7", &password).await;
        std::hint::black_box(c);
    }
    let warm = t.elapsed() / IN_PROCESS as u32;
    let t = Instant::now();
    for _ in 0..IN_PROCESS {
        std::hint::black_box(cflux::agent::influxql::sign_jwt(
            SECRET,
            "user7",
            Duration::from_secs(60),
        ));
    }
    let jwt = t.elapsed() / IN_PROCESS as u32;
    let header = reqwest::header::HeaderValue::from_static("Basic dXNlcjc6cHc=");
    let t = Instant::now();
    for _ in 0..IN_PROCESS {
        std::hint::black_box(credentials::from_authorization(std::hint::black_box(
            &header,
        )));
    }
    let parse = t.elapsed() / IN_PROCESS as u32;
    println!("In process (catalog of 1,000 users, bcrypt cost 10):\n");
    println!("| step | time per request |");
    println!("|---|---:|");
    println!(
        "| first check of a password (bcrypt, cold cache) | {:.1} ms |",
        cold_time.as_secs_f64() * 1e3
    );
    println!(
        "| check with a warm cache | {:.2} µs |",
        warm.as_secs_f64() * 1e6
    );
    println!(
        "| JWT for influxd (HS256) | {:.2} µs |",
        jwt.as_secs_f64() * 1e6
    );
    println!(
        "| reading `Authorization: Basic` | {:.2} µs |",
        parse.as_secs_f64() * 1e6
    );
    println!(
        "\nwarm-cache authentication in all: {:.2} µs per request, {:.0}× cheaper than a bcrypt check",
        (warm + jwt + parse).as_secs_f64() * 1e6,
        cold_time.as_secs_f64() / (warm + jwt + parse).as_secs_f64()
    );
}

/// The note of a phase that stopped at [`PHASE_CAP`].
fn cap_note(capped: bool) -> &'static str {
    if capped {
        "stopped at the time cap"
    } else {
        ""
    }
}

fn ms(d: Option<Duration>) -> String {
    common::ms(d, 2)
}
