//! `cfluxctl catch-up` against real processes: a manager and replicating
//! nodes (`auth-enabled` influxd behind each agent's front door), a node
//! joining a cluster that already holds points.
//!
//! - A third node joins a two-node cluster holding 100,000 points in two
//!   databases and two retention policies; `verify` says it differs (exit
//!   3); it is caught up while writes continue at the other nodes (new
//!   points, and points it already holds written again), and ends with
//!   exactly the same counts per measurement and bucket (`verify` exit 0,
//!   every count as written: nothing lost, nothing twice).
//! - A catch-up killed mid-copy resumes from its checkpoint, copying what
//!   was left and not what was copied, and the counts match.
//! - A node joining a cluster that holds points says it needs catch-up
//!   (its `/metrics`, `/health`, `cfluxctl status`, its row in the web
//!   console, in a real browser) until it is caught up;
//!   with `--auto-catch-up` it catches up by itself.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::agent::start_nodes_with;
use support::browser::Browser;
use support::influxd::{eventually, AgentOptions, InfluxApi, InfluxdOptions, Node};
use support::process::free_ports;
use support::{metric, Manager};

const SECRET: &str = "catch-up-test-shared-secret";
const CLUSTER: &str = "catching-up";
const ADMIN_PW: &str = "admin-pw";
const DEADLINE: Duration = Duration::from_secs(30);
/// 2023-11-14T00:00:00Z.
const T0: i64 = 1_699_920_000_000_000_000;
const MINUTE: i64 = 60_000_000_000;

/// A node with its front door.
struct Member {
    door: String,
    node: Node,
}

impl Member {
    /// The front door as the admin.
    fn admin(&self) -> InfluxApi {
        InfluxApi::new(&self.door).login("admin", ADMIN_PW)
    }

    async fn node_id(&self) -> String {
        self.node.agent.wait_registered(DEADLINE).await
    }
}

/// A manager and replicating nodes sharing one replication secret.
struct Cluster {
    members: Vec<Member>,
    manager: Manager,
    secret: PathBuf,
    dir: tempfile::TempDir,
    /// More flags for every agent.
    extra: Vec<String>,
}

impl Cluster {
    /// A cluster of `n` nodes with an admin and the databases `databases`
    /// (and policy `week` on the first).
    async fn start(n: usize, databases: &[&str]) -> Cluster {
        Cluster::start_with(n, databases, &[]).await
    }

    /// [`Cluster::start`] with more flags for every agent.
    async fn start_with(n: usize, databases: &[&str], extra: &[&str]) -> Cluster {
        let manager = Manager::start_with(&["--heartbeat-interval", "300ms"]).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let secret = dir.path().join("replication.secret");
        std::fs::write(&secret, "members-only-credential\n").expect("write the secret");
        let mut cluster = Cluster {
            members: Vec::new(),
            manager,
            secret,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cluster.add(n).await;
        let a = &cluster.members[0];
        let (status, body) = InfluxApi::new(&a.door)
            .raw_query(
                &format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
                None,
            )
            .await;
        assert_eq!(status, 200, "the first admin: {body}");
        for db in databases {
            a.admin().exec(&format!("CREATE DATABASE {db}")).await;
        }
        a.admin()
            .exec(&format!(
                r#"CREATE RETENTION POLICY "week" ON "{}" DURATION 7d REPLICATION 1"#,
                databases[0]
            ))
            .await;
        cluster.wait_ready(databases).await;
        cluster
    }

    /// Starts `n` more nodes.
    async fn add(&mut self, n: usize) {
        let ports = free_ports(n);
        let secret = self.secret.display().to_string();
        let url = self.manager.url();
        let extra = self.extra.clone();
        let nodes = start_nodes_with(n, &InfluxdOptions::auth(SECRET), |i| {
            let mut options = AgentOptions::new(&url, CLUSTER);
            options.args = vec![
                "--frontdoor-listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--replicate".into(),
                "--replication-secret-file".into(),
                secret.clone(),
            ];
            options.args.extend(extra.iter().cloned());
            options
        })
        .await;
        for (node, port) in nodes.into_iter().zip(ports) {
            self.members.push(Member {
                door: format!("http://127.0.0.1:{port}"),
                node,
            });
        }
    }

    /// Every node holds the catalog and replicates to every other.
    async fn wait_ready(&self, databases: &[&str]) {
        let peers = (self.members.len() - 1) as f64;
        for m in &self.members {
            eventually(DEADLINE, &format!("{} is set up", m.door), || async {
                let direct = m.node.influxd.api().jwt(SECRET, "admin");
                let dbs = direct.databases().await;
                let week = direct
                    .retention_policies(databases[0])
                    .await
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.name == "week");
                let known = metric(&m.node.agent.metrics().await, "cflux_replication_peers");
                if databases.iter().all(|d| dbs.contains(*d)) && week && known == Some(peers) {
                    Ok(())
                } else {
                    Err(format!("databases {dbs:?}, week {week}, peers {known:?}"))
                }
            })
            .await;
        }
    }

    /// Where catch-up keeps its checkpoints.
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("ctl-state")
    }

    /// `cfluxctl ARGS` as the admin, with the replication secret.
    fn ctl_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.manager.ctl_command(Some(CLUSTER), args);
        command
            .env("INFLUX_USERNAME", "admin")
            .env("INFLUX_PASSWORD", ADMIN_PW)
            .env("CFLUX_REPLICATION_SECRET_FILE", &self.secret)
            .env("CFLUX_CATCH_UP_STATE_DIR", self.state_dir());
        command
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().expect("run cfluxctl")
    }

    /// `verify -o json`: its exit code and report.
    fn verify(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.ctl(&["-o", "json", "verify"]);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {out:?}"));
        (out.status.code(), json)
    }

    /// Waits until `verify` finds every alive node equal, and returns the
    /// field values each holds.
    async fn wait_same(&self, what: &str) -> Vec<u64> {
        eventually(DEADLINE, what, || async {
            let (code, report) = self.verify();
            if code != Some(0) {
                return Err(format!("exit {code:?}: {report}"));
            }
            let values = report["values"].as_object().cloned().unwrap_or_default();
            Ok(values.values().filter_map(|v| v.as_u64()).collect())
        })
        .await
    }
}

/// `n` points of `measurement` from `start`, `step` apart, with the fields
/// `fields(i)` gives, over ten hosts.
fn points(
    measurement: &str,
    start: i64,
    step: i64,
    n: i64,
    fields: impl Fn(i64) -> String,
) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{measurement},host=h{} {} {}",
                i % 10,
                fields(i),
                start + i * step
            )
        })
        .collect()
}

/// Writes `lines` through `api` in batches.
async fn write_all(api: &InfluxApi, db: &str, rp: &str, lines: &[String]) {
    for batch in lines.chunks(5_000) {
        api.write_rp(db, rp, &(batch.join("\n") + "\n")).await;
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

fn cpu(i: i64) -> String {
    format!("user={}.5,idle={i}i", i % 100)
}

/// Waits for a spawned `cfluxctl` to exit, and returns its output.
async fn wait_exit(mut child: Child, deadline: Duration) -> Output {
    let until = Instant::now() + deadline;
    while child.try_wait().expect("cfluxctl status").is_none() {
        if Instant::now() >= until {
            let _ = child.kill();
            panic!("cfluxctl did not finish within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.wait_with_output().expect("cfluxctl output")
}

fn read_checkpoint(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_caught_up_while_writes_continue_and_ends_equal() {
    let mut cluster = Cluster::start(2, &["metrics", "logs"]).await;
    let a = cluster.members[0].admin();
    let week_start = now_ns() - 3 * 86_400_000_000_000;
    // 100,000 points, 200,000 field values.
    let autogen_cpu = points("cpu", T0, MINUTE, 40_000, cpu);
    write_all(&a, "metrics", "", &autogen_cpu).await;
    write_all(
        &a,
        "metrics",
        "",
        &points("mem", T0, MINUTE, 20_000, |i| format!("free={i}i")),
    )
    .await;
    write_all(
        &a,
        "metrics",
        "week",
        &points("cpu", week_start, 10_000_000_000, 20_000, cpu),
    )
    .await;
    write_all(
        &a,
        "logs",
        "",
        &points("lines", T0, MINUTE / 2, 20_000, |i| {
            format!(r#"msg="line \"{i}\", ok",ok={},n={i}i"#, i % 2 == 0)
        }),
    )
    .await;
    let values = cluster
        .wait_same("the two nodes hold the same points")
        .await;
    assert_eq!(values, vec![200_000, 200_000]);

    cluster.add(1).await;
    cluster.wait_ready(&["metrics", "logs"]).await;
    let c_id = cluster.members[2].node_id().await;
    let (code, report) = cluster.verify();
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(
        report["differences"].as_array().map(Vec::len),
        Some(4),
        "{report}"
    );

    // Writes go on at A and B while C is copied: new points among the old
    // ones, and old points written again.
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let doors = [cluster.members[0].admin(), cluster.members[1].admin()];
        let (stop, live) = (stop.clone(), live.clone());
        let again = autogen_cpu.clone();
        async move {
            let mut round = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let new = points("cpu", T0 + round * 100 * MINUTE + 1, MINUTE, 100, |i| {
                    format!("user=0.5,idle={i}i")
                })
                .into_iter()
                .map(|l| l.replacen("host=h", "host=live", 1));
                let old = again
                    .iter()
                    .skip((round as usize * 50) % 39_950)
                    .take(50)
                    .cloned();
                let body: Vec<String> = new.chain(old).collect();
                doors[round as usize % 2]
                    .write("metrics", &(body.join("\n") + "\n"))
                    .await;
                live.fetch_add(100, Ordering::Relaxed);
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let child = cluster
        .ctl_command(&["catch-up", &c_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cfluxctl catch-up");
    let out = wait_exit(child, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // Every point the plan counted, and the live ones that fell in its
    // windows meanwhile.
    let copied: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(copied >= 100_000, "{stdout}");
    assert!(stderr.contains("copying from"), "the plan's line: {stderr}");
    // A progress line comes once a second: a copy that took two seconds or
    // more printed one.
    let took: f64 = stdout
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no duration in the summary: {stdout}"));
    if took >= 2.0 {
        assert!(stderr.contains("points/s"), "progress lines: {stderr}");
    }
    assert!(
        !cluster
            .state_dir()
            .join("catch-up")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "a finished catch-up leaves no checkpoint"
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer");
    let live = live.load(Ordering::Relaxed);
    assert!(live > 0, "writes went on during the copy");

    // Exactly what was written, on every node: nothing lost, nothing twice.
    let values = cluster
        .wait_same("the three nodes hold the same points")
        .await;
    let expected = 200_000 + 2 * live;
    assert_eq!(values, vec![expected; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_catch_up_resumes_from_its_checkpoint() {
    let mut cluster = Cluster::start(1, &["metrics"]).await;
    // 30,000 points a minute apart: 500 windows of an hour.
    write_all(
        &cluster.members[0].admin(),
        "metrics",
        "",
        &points("cpu", T0, MINUTE, 30_000, cpu),
    )
    .await;
    cluster.add(1).await;
    cluster.wait_ready(&["metrics"]).await;
    let b_id = cluster.members[1].node_id().await;
    let (code, report) = cluster.verify();
    assert_eq!(code, Some(3), "{report}");

    let args = ["-o", "json", "catch-up", &b_id, "--window", "1h"];
    let mut child = cluster
        .ctl_command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cfluxctl catch-up");
    let checkpoint = cluster
        .state_dir()
        .join("catch-up")
        .join(format!("{CLUSTER}-{b_id}.json"));
    // Killed (SIGKILL) once ten windows are copied.
    let through = || {
        read_checkpoint(&checkpoint)
            .and_then(|c| c["copied"][0]["through_ns"].as_i64())
            .unwrap_or(i64::MIN)
    };
    let until = Instant::now() + DEADLINE;
    while through() <= T0 + 10 * 60 * MINUTE {
        assert!(
            child.try_wait().expect("cfluxctl status").is_none(),
            "catch-up finished before it could be interrupted"
        );
        assert!(
            Instant::now() < until,
            "the checkpoint did not pass ten windows"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill cfluxctl");
    let status = child.wait().expect("reap cfluxctl");
    assert_eq!(status.code(), None, "killed mid-copy, not finished");
    let through_at_kill = through();
    assert!(through_at_kill < T0 + 500 * 60 * MINUTE, "it was mid-copy");

    let out = cluster.ctl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("resuming from the checkpoint"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    let resumed = summary["values_resumed"].as_u64().expect("values_resumed");
    let written = summary["values_written"].as_u64().expect("values_written");
    // What the first run checkpointed is not copied again: at most the
    // window it was in (60 points, 120 values) is.
    let copied_windows = (through_at_kill - T0) / (60 * MINUTE);
    assert!(copied_windows >= 10);
    assert!(resumed >= 10 * 120, "{summary}");
    assert_eq!(resumed + written, 60_000, "{summary}");
    assert!(
        !checkpoint.exists(),
        "a finished catch-up removes its checkpoint"
    );

    let values = cluster.wait_same("both nodes hold the same points").await;
    assert_eq!(values, vec![60_000, 60_000]);
}

/// The node's `cflux_node_needs_catch_up`.
async fn needs_catch_up(node: &Node) -> Option<f64> {
    metric(&node.agent.metrics().await, "cflux_node_needs_catch_up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_needs_catch_up_until_it_is_caught_up() {
    let mut cluster =
        Cluster::start_with(1, &["metrics"], &["--catch-up-check-interval", "300ms"]).await;
    let a = &cluster.members[0];
    write_all(
        &a.admin(),
        "metrics",
        "",
        &points("cpu", T0, MINUTE, 5_000, cpu),
    )
    .await;
    eventually(DEADLINE, "a lone node needs no catch-up", || async {
        match needs_catch_up(&cluster.members[0].node).await {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    cluster.add(1).await;
    cluster.wait_ready(&["metrics"]).await;
    let b_id = cluster.members[1].node_id().await;
    let b = &cluster.members[1].node;
    eventually(DEADLINE, "the new node says it needs catch-up", || async {
        let health = b.agent.health().await.unwrap_or_default();
        let reason = health["needs_catch_up"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match needs_catch_up(b).await {
            Some(1.0) if reason.contains("10000 field values fewer") => Ok(()),
            other => Err(format!("{other:?}, /health {health}")),
        }
    })
    .await;
    assert_eq!(needs_catch_up(&cluster.members[0].node).await, Some(0.0));
    let status = eventually(DEADLINE, "status names it", || async {
        let out = cluster.ctl(&["-o", "json", "status"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let named = json
            .to_string()
            .contains("needs catch-up: holds 10000 field values fewer");
        if out.status.code() == Some(3) && named {
            Ok(json)
        } else {
            Err(format!("exit {:?}: {json}", out.status.code()))
        }
    })
    .await;
    assert!(status.to_string().contains(&b_id), "{status}");
    // So does its row in the web console, and only its row.
    let a_id = cluster.members[0].node_id().await;
    let mut browser = Browser::start();
    browser.open(&cluster.manager.http_url("/"));
    browser
        .wait_for(
            DEADLINE,
            "the new node's row naming its catch-up",
            &format!(
                "return document.querySelector('{} .sync-error')?.textContent.includes('needs catch-up: holds 10000 field values fewer') === true",
                console_row(&b_id)
            ),
        )
        .await;
    assert_eq!(
        browser.eval(&format!(
            "return document.querySelector('{} .sync-error')?.dataset.catchUp",
            console_row(&a_id)
        )),
        serde_json::json!("")
    );

    let out = cluster.ctl(&["catch-up", &b_id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    eventually(DEADLINE, "caught up, it says so", || async {
        let status = cluster.ctl(&["status"]).status.code();
        match (needs_catch_up(b).await, status) {
            (Some(0.0), Some(0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    browser
        .wait_for(
            DEADLINE,
            "the new node's row without catch-up",
            &format!(
                "return document.querySelector('{} .sync-error')?.dataset.catchUp === ''",
                console_row(&b_id)
            ),
        )
        .await;
}

/// The web console's row of a node (CSS).
fn console_row(node_id: &str) -> String {
    format!("#nodes tbody tr[data-node-id=\"{node_id}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_catch_up_a_joining_node_fills_itself() {
    let mut cluster = Cluster::start_with(
        1,
        &["metrics"],
        &["--catch-up-check-interval", "300ms", "--auto-catch-up"],
    )
    .await;
    write_all(
        &cluster.members[0].admin(),
        "metrics",
        "",
        &points("cpu", T0, MINUTE, 5_000, cpu),
    )
    .await;
    cluster.add(1).await;
    cluster.wait_ready(&["metrics"]).await;
    let values = cluster.wait_same("the new node filled itself").await;
    assert_eq!(values, vec![10_000, 10_000]);
    let b = &cluster.members[1].node;
    eventually(DEADLINE, "it no longer needs catch-up", || async {
        let text = b.agent.metrics().await;
        match (
            metric(&text, "cflux_node_needs_catch_up"),
            metric(&text, "cflux_node_catch_ups_total"),
        ) {
            (Some(0.0), Some(n)) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
