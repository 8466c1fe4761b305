//! `cargo bench --bench propagation`: how fast a metadata change made on one
//! node reaches another, and what the agent costs, measured end to end with
//! real processes.
//!
//! The benchmark starts one `cflux-manager` (the binary built with it,
//! embedded store in a temporary directory, `RUST_LOG=warn`) and, per mode,
//! two nodes — a real `influxd` (`$INFLUXD_BIN` or `/usr/bin/influxd`) with a
//! `cflux-agent` beside it (the binary built with it, its default `info` log
//! to a file) — through `tests/support/influxd.rs`. The gRPC nodes run first
//! on one cluster and are killed before the legacy nodes (`--cflux-transport
//! http`) start on another cluster of the same manager, so the two modes
//! never compete for the CPUs. influxd's `_internal` monitor store is off, so
//! the only changes are the benchmark's own.
//!
//! - **Propagation latency**: one change at a time, `CREATE DATABASE` on node
//!   A; the clock starts when A's answer arrives and stops when an answer of
//!   `SHOW DATABASES` on node B lists the database (B is polled about every
//!   millisecond, each change capped at 5 s). This spans A's agent noticing
//!   `meta.db` change, its push to the manager, the manager waking B's agent
//!   and B's agent applying the change through influxd's HTTP API.
//! - **Agent CPU and memory** from `/proc/<pid>/stat` (utime + stime, in
//!   clock ticks) and `/proc/<pid>/status` (`VmRSS`): at rest (a 5 s idle
//!   window), over the sequential changes above, and during a storm (300
//!   `CREATE DATABASE` on A from 4 concurrent clients, measured until every
//!   database is listed on B, with RSS sampled every 20 ms for the peak).
//!
//! It prints markdown tables and asserts nothing: timings depend on the
//! machine, and this client, influxd, the agents and the manager share its
//! CPUs (the header says how many). Every phase has a time cap, so a run
//! takes about half a minute and stays under three; every process is killed at
//! the end (and on a panic).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use common::{load_average, mib, percentile};
use support::influxd::{self, start_nodes, AgentOptions, InfluxdOptions, Node};
use support::Manager;
use tokio::task::JoinSet;

/// Changes timed one at a time, per mode.
const CHANGES: usize = 200;
/// The most one change may take to show up on B before it counts as a timeout.
const CHANGE_CAP: Duration = Duration::from_secs(5);
/// The most the sequential phase may take; it stops early (and says so) past it.
const LATENCY_PHASE_CAP: Duration = Duration::from_secs(40);
/// Pause between two `SHOW DATABASES` on B while waiting for one change.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Idle time before the rest window (the warm-up change settles).
const SETTLE: Duration = Duration::from_secs(1);
/// The idle window over which the agents' rest usage is measured.
const REST_WINDOW: Duration = Duration::from_secs(5);
/// Databases created in the storm, per mode.
const STORM_CHANGES: usize = 300;
/// Concurrent clients creating them on A.
const STORM_CLIENTS: usize = 4;
/// The most the storm may take until B lists every database.
const STORM_CAP: Duration = Duration::from_secs(25);
/// How often B is checked during the storm and RSS is sampled.
const STORM_SAMPLE: Duration = Duration::from_millis(20);
/// How long startup steps (registration, the warm-up change) may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

fn main() -> anyhow::Result<()> {
    common::run(bench())
}

async fn bench() -> anyhow::Result<()> {
    let started = Instant::now();
    let ticks = clock_ticks();
    header(ticks);
    let manager = Manager::start().await;
    println!(
        "manager: `{}` pid {} on {}, embedded store in a temp dir; agents: `{}`; influxd: `{}`\n",
        Manager::bin(),
        manager.pid(),
        manager.addr,
        influxd::agent_bin(),
        influxd::influxd_bin()
    );
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(STORM_CLIENTS + 2)
        .timeout(Duration::from_secs(15))
        .build()?;

    let mut results = Vec::new();
    for mode in [Mode::Grpc, Mode::Legacy] {
        eprintln!("propagation bench: {} mode…", mode.label());
        let result = run_mode(&http, &manager, mode, ticks).await;
        if let Err(e) = &result {
            eprintln!("propagation bench: {} mode failed: {e:#}", mode.label());
        }
        results.push((mode, result));
    }
    drop(manager);

    print_latency(&results);
    print_usage(&results, ticks);
    print_storm(&results);
    let load = load_average();
    println!(
        "\nLoad average at the end: {load}. Total run time: {:.1} s. Figures only: nothing here is asserted.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn header(ticks: u64) {
    let cpus = common::cpus();
    let version = Command::new(influxd::influxd_bin())
        .arg("version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("# Propagation benchmark\n");
    println!(
        "machine: {cpus} CPUs (nproc), load average {} at start, {ticks} clock ticks/s; {version}. \
         The manager, both influxd, both agents and this client share the CPUs: on a small shared machine expect noise between runs.\n",
        load_average()
    );
}

/// `getconf CLK_TCK`: the unit of utime and stime in `/proc/<pid>/stat`.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------
// One mode: two nodes, warm-up, rest, sequential changes, storm.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Grpc,
    Legacy,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Grpc => "gRPC",
            Mode::Legacy => "legacy HTTP",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Mode::Grpc => "grpc",
            Mode::Legacy => "legacy",
        }
    }
}

/// CPU and memory of one process over a window.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// Percent of one CPU.
    cpu_percent: f64,
    /// CPU time used in the window, seconds.
    cpu_seconds: f64,
    /// RSS at the end of the window, KiB.
    rss_end_kib: u64,
    /// Largest RSS sampled during the window, KiB (the end value when not sampled).
    rss_peak_kib: u64,
}

#[derive(Default)]
struct Latency {
    /// CREATE answered on A → listed on B.
    propagation: Vec<Duration>,
    /// The CREATE's own round trip on A.
    ack: Vec<Duration>,
    timeouts: usize,
    note: String,
}

#[derive(Default)]
struct Storm {
    /// CREATE DATABASE answered without an error.
    answered: usize,
    errors: usize,
    /// Storm start → last CREATE answered on A.
    answered_in: Duration,
    /// Storm start → every database listed on B (`None`: not within the cap).
    converged_in: Option<Duration>,
    /// Storm databases B listed at the end.
    seen_on_b: usize,
    /// The measured window (until convergence or the cap).
    window: Duration,
}

struct ModeResult {
    setup: Duration,
    /// Warm-up change: A answered → listed on B (includes first-sync effects).
    warmup: Duration,
    latency: Latency,
    rest: [Usage; 2],
    sequential: [Usage; 2],
    storm_usage: [Usage; 2],
    storm: Storm,
}

async fn run_mode(
    http: &reqwest::Client,
    manager: &Manager,
    mode: Mode,
    ticks: u64,
) -> anyhow::Result<ModeResult> {
    let setup_started = Instant::now();
    let influxd_options = InfluxdOptions {
        shared_secret: None,
        env: vec![("INFLUXDB_MONITOR_STORE_ENABLED".into(), "false".into())],
    };
    let mut agent_options =
        AgentOptions::new(&manager.url(), &format!("propagation-{}", mode.tag()));
    if mode == Mode::Legacy {
        agent_options = agent_options.legacy();
    }
    // Dropped (every process killed) when this function returns.
    let nodes: Vec<Node> = start_nodes(2, &influxd_options, &agent_options).await;
    for node in &nodes {
        node.agent.wait_registered(SETUP_DEADLINE).await;
    }
    let (a, b) = (nodes[0].influxd.url(), nodes[1].influxd.url());
    let pids = [nodes[0].agent.pid(), nodes[1].agent.pid()];
    let setup = setup_started.elapsed();

    // Warm-up: the whole path works before anything is measured.
    influxql(http, &a, "CREATE DATABASE warmup").await?;
    let warm_started = Instant::now();
    wait_listed(http, &b, "warmup", SETUP_DEADLINE)
        .await?
        .ok_or_else(|| anyhow!("the warm-up database did not reach B within {SETUP_DEADLINE:?}"))?;
    let warmup = warm_started.elapsed();

    tokio::time::sleep(SETTLE).await;
    let meter = CpuMeter::start(&pids, ticks)?;
    tokio::time::sleep(REST_WINDOW).await;
    let rest = meter.finish()?;

    let meter = CpuMeter::start(&pids, ticks)?;
    let latency = sequential_changes(http, &a, &b, mode).await?;
    let sequential = meter.finish()?;

    let (storm, storm_usage) = storm(http, &a, &b, mode, &pids, ticks).await?;
    for (node, pid) in nodes.iter().zip(pids) {
        if !proc_alive(pid) {
            bail!(
                "the agent of {} (pid {pid}) died; its log: {}",
                node.name,
                node.agent.log_path().display()
            );
        }
    }
    Ok(ModeResult {
        setup,
        warmup,
        latency,
        rest,
        sequential,
        storm_usage,
        storm,
    })
}

/// `CHANGES` databases, one at a time: CREATE on A, then poll B until listed.
async fn sequential_changes(
    http: &reqwest::Client,
    a: &str,
    b: &str,
    mode: Mode,
) -> anyhow::Result<Latency> {
    let mut out = Latency::default();
    let phase_end = Instant::now() + LATENCY_PHASE_CAP;
    for i in 0..CHANGES {
        if Instant::now() > phase_end {
            out.note = format!("time cap {LATENCY_PHASE_CAP:?} reached");
            break;
        }
        let name = format!("seq_{}_{i:04}", mode.tag());
        let sent = Instant::now();
        influxql(http, a, &format!("CREATE DATABASE {name}")).await?;
        let answered = Instant::now();
        out.ack.push(answered - sent);
        match wait_listed(http, b, &name, CHANGE_CAP).await? {
            Some(seen) => out
                .propagation
                .push(seen.saturating_duration_since(answered)),
            None => out.timeouts += 1,
        }
    }
    Ok(out)
}

/// Polls `SHOW DATABASES` on `base` until it lists `name`: when that answer
/// arrived, or `None` after `cap`.
async fn wait_listed(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    cap: Duration,
) -> anyhow::Result<Option<Instant>> {
    let needle = format!("[\"{name}\"]");
    let started = Instant::now();
    loop {
        let body = influxql(http, base, "SHOW DATABASES").await?;
        let at = Instant::now();
        if body.contains(&needle) {
            return Ok(Some(at));
        }
        if at.duration_since(started) > cap {
            return Ok(None);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `STORM_CHANGES` CREATE DATABASE on A from `STORM_CLIENTS` clients at
/// once; the agents' usage until B lists them all (or `STORM_CAP`).
async fn storm(
    http: &reqwest::Client,
    a: &str,
    b: &str,
    mode: Mode,
    pids: &[u32; 2],
    ticks: u64,
) -> anyhow::Result<(Storm, [Usage; 2])> {
    let prefix = format!("storm_{}_", mode.tag());
    let sampler = RssSampler::start(*pids);
    let meter = CpuMeter::start(pids, ticks)?;
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for k in 0..STORM_CLIENTS {
        let (http, a) = (http.clone(), a.to_owned());
        let names: Vec<String> = (k..STORM_CHANGES)
            .step_by(STORM_CLIENTS)
            .map(|i| format!("{prefix}{i:04}"))
            .collect();
        clients.spawn(async move {
            let (mut answered, mut errors) = (0, 0);
            for name in names {
                match influxql(&http, &a, &format!("CREATE DATABASE {name}")).await {
                    Ok(_) => answered += 1,
                    Err(_) => errors += 1,
                }
            }
            (answered, errors, Instant::now())
        });
    }
    let mut out = Storm::default();
    loop {
        let body = influxql(http, b, "SHOW DATABASES").await?;
        out.seen_on_b = body.matches(prefix.as_str()).count();
        let elapsed = started.elapsed();
        if out.seen_on_b >= STORM_CHANGES {
            out.converged_in = Some(elapsed);
            break;
        }
        if elapsed > STORM_CAP {
            break;
        }
        tokio::time::sleep(STORM_SAMPLE).await;
    }
    out.window = started.elapsed();
    let mut usage = meter.finish()?;
    let peaks = sampler.stop().await;
    for (u, peak) in usage.iter_mut().zip(peaks) {
        u.rss_peak_kib = u.rss_peak_kib.max(peak);
    }
    while let Some(joined) = clients.join_next().await {
        let (answered, errors, done) = joined?;
        out.answered += answered;
        out.errors += errors;
        out.answered_in = out.answered_in.max(done.saturating_duration_since(started));
    }
    Ok((out, usage))
}

/// `POST /query` of `q`: the answer's body; an error when influxd reports one.
async fn influxql(http: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/query"))
        .form(&[("q", q)])
        .send()
        .await
        .with_context(|| format!("{base}: {q}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() || body.contains("\"error\"") {
        bail!("{base}: {q} answered {status}: {body}");
    }
    Ok(body)
}

// ---------------------------------------------------------------------------
// /proc.

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: too few fields"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/stat field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// `VmRSS` of `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("/proc/{pid}/status: no VmRSS"))
}

fn proc_alive(pid: u32) -> bool {
    // A killed child stays a zombie (state Z) until reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
        })
        == Some(false)
}

/// CPU time of two processes from `start` to `finish`.
struct CpuMeter {
    pids: [u32; 2],
    ticks: u64,
    at: Instant,
    before: [u64; 2],
}

impl CpuMeter {
    fn start(pids: &[u32; 2], ticks: u64) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            pids: *pids,
            ticks,
            at: Instant::now(),
            before: [cpu_ticks(pids[0])?, cpu_ticks(pids[1])?],
        })
    }

    fn finish(self) -> anyhow::Result<[Usage; 2]> {
        let wall = self.at.elapsed().as_secs_f64();
        let mut out = [Usage::default(); 2];
        for (i, u) in out.iter_mut().enumerate() {
            let used = cpu_ticks(self.pids[i])?.saturating_sub(self.before[i]);
            let rss = rss_kib(self.pids[i])?;
            let seconds = used as f64 / self.ticks as f64;
            *u = Usage {
                cpu_percent: seconds / wall * 100.0,
                cpu_seconds: seconds,
                rss_end_kib: rss,
                rss_peak_kib: rss,
            };
        }
        Ok(out)
    }
}

/// Samples the RSS of two processes every `STORM_SAMPLE` until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<[u64; 2]>,
}

impl RssSampler {
    fn start(pids: [u32; 2]) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = [0u64; 2];
            while !flag.load(Ordering::Relaxed) {
                for (p, pid) in peak.iter_mut().zip(pids) {
                    *p = (*p).max(rss_kib(pid).unwrap_or(0));
                }
                tokio::time::sleep(STORM_SAMPLE).await;
            }
            peak
        });
        RssSampler { stop, task }
    }

    async fn stop(self) -> [u64; 2] {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or([0, 0])
    }
}

// ---------------------------------------------------------------------------
// Output.

fn ms(d: Option<Duration>) -> String {
    common::ms(d, 1)
}

type Results = [(Mode, anyhow::Result<ModeResult>)];

/// One row: a label and one cell per mode (or `failed` for a failed mode).
fn row(results: &Results, label: &str, cell: impl Fn(&ModeResult) -> String) {
    let cells: Vec<String> = results
        .iter()
        .map(|(_, r)| r.as_ref().map_or_else(|_| "failed".into(), &cell))
        .collect();
    println!("| {label} | {} |", cells.join(" | "));
}

fn mode_header(results: &Results) {
    let labels: Vec<&str> = results.iter().map(|(m, _)| m.label()).collect();
    println!("| | {} |", labels.join(" | "));
    println!("|---|{}", "---:|".repeat(results.len()));
}

fn print_latency(results: &Results) {
    println!("## Propagation latency\n");
    println!(
        "`CREATE DATABASE` on node A, one at a time; from A's answer to the first `SHOW DATABASES` answer on node B that lists it. B is polled every ~{} ms, so figures include up to a poll of granularity; a change not on B within {:?} counts as a timeout.\n",
        POLL_INTERVAL.as_millis(),
        CHANGE_CAP
    );
    mode_header(results);
    row(results, "changes timed", |r| {
        r.latency.propagation.len().to_string()
    });
    row(results, "timeouts", |r| r.latency.timeouts.to_string());
    for (label, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
        row(results, &format!("**{label}**"), |r| {
            ms(percentile(&r.latency.propagation, p))
        });
    }
    row(results, "CREATE answered on A, p50", |r| {
        ms(percentile(&r.latency.ack, 0.50))
    });
    row(results, "CREATE answered on A, p99", |r| {
        ms(percentile(&r.latency.ack, 0.99))
    });
    row(results, "warm-up change (first after start)", |r| {
        ms(Some(r.warmup))
    });
    row(results, "two nodes up and registered", |r| {
        format!("{:.1} s", r.setup.as_secs_f64())
    });
    row(results, "note", |r| r.latency.note.clone());
    for (mode, r) in results {
        if let Err(e) = r {
            println!("\n{} failed: {e:#}", mode.label());
        }
    }
}

fn print_usage(results: &Results, ticks: u64) {
    println!("\n## Agent CPU and memory\n");
    println!(
        "CPU is utime + stime from `/proc/<pid>/stat` over the window, in percent of one CPU (100 % = one core busy; counted in clock ticks, so the {:?} rest window resolves {:.1} %); CPU time is the same ticks in milliseconds (per change for the sequential phase; the storm windows differ in length between modes, so compare CPU time there). RSS is `VmRSS` from `/proc/<pid>/status`. Rest: a {:?} idle window after the warm-up. Sequential: the {} one-at-a-time changes above. Storm: {} `CREATE DATABASE` on A from {} concurrent clients, until B lists them all (RSS sampled every {} ms for the peak). A is the node written to, B the one that follows.\n",
        REST_WINDOW,
        100.0 / ticks as f64 / REST_WINDOW.as_secs_f64(),
        REST_WINDOW,
        CHANGES,
        STORM_CHANGES,
        STORM_CLIENTS,
        STORM_SAMPLE.as_millis()
    );
    let mut labels = Vec::new();
    for (mode, _) in results {
        labels.push(format!("{} agent A", mode.label()));
        labels.push(format!("{} agent B", mode.label()));
    }
    println!("| | {} |", labels.join(" | "));
    println!("|---|{}", "---:|".repeat(labels.len()));
    let usage_row =
        |label: &str, pick: &dyn Fn(&ModeResult) -> [Usage; 2], show: &dyn Fn(&Usage) -> String| {
            let mut cells = Vec::new();
            for (_, r) in results {
                match r {
                    Ok(r) => cells.extend(pick(r).iter().map(show)),
                    Err(_) => cells.extend(["failed".to_owned(), "failed".to_owned()]),
                }
            }
            println!("| {label} | {} |", cells.join(" | "));
        };
    let cpu = |u: &Usage| format!("{:.1} %", u.cpu_percent);
    usage_row("CPU at rest", &|r| r.rest, &cpu);
    usage_row("RSS at rest", &|r| r.rest, &|u| mib(u.rss_end_kib));
    usage_row("CPU, sequential changes", &|r| r.sequential, &cpu);
    usage_row("CPU time per sequential change", &|r| r.sequential, &|u| {
        format!("{:.2} ms", u.cpu_seconds * 1e3 / CHANGES as f64)
    });
    usage_row("RSS after sequential changes", &|r| r.sequential, &|u| {
        mib(u.rss_end_kib)
    });
    usage_row("**CPU during the storm**", &|r| r.storm_usage, &cpu);
    usage_row("CPU time over the storm", &|r| r.storm_usage, &|u| {
        format!("{:.0} ms", u.cpu_seconds * 1e3)
    });
    usage_row("**peak RSS during the storm**", &|r| r.storm_usage, &|u| {
        mib(u.rss_peak_kib)
    });
    usage_row("RSS after the storm", &|r| r.storm_usage, &|u| {
        mib(u.rss_end_kib)
    });
}

fn print_storm(results: &Results) {
    println!("\n## The storm\n");
    mode_header(results);
    row(results, "CREATE DATABASE answered on A", |r| {
        format!("{} of {STORM_CHANGES}", r.storm.answered)
    });
    row(results, "errors on A", |r| r.storm.errors.to_string());
    row(results, "all answered on A after", |r| {
        ms(Some(r.storm.answered_in))
    });
    row(results, "creates/s on A", |r| {
        format!(
            "{:.0} /s",
            r.storm.answered as f64 / r.storm.answered_in.as_secs_f64().max(1e-9)
        )
    });
    row(results, "all listed on B after", |r| {
        match r.storm.converged_in {
            Some(d) => ms(Some(d)),
            None => format!("not within {STORM_CAP:?}"),
        }
    });
    row(results, "listed on B at the end", |r| {
        format!("{} of {STORM_CHANGES}", r.storm.seen_on_b)
    });
    row(results, "measured window", |r| ms(Some(r.storm.window)));
}
