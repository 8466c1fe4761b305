//! InfluxDB 1.x's own HTTP integration suite is the judge of the front
//! door: through a replicating front door it must pass exactly where it
//! passes against a bare influxd, test by test, and the nodes must hold the
//! same data.
//!
//! The suite (the `tests/` package of influxdata/influxdb, Go) is not in this
//! repository: `scripts/influxdb-suite-build.sh` downloads it from Debian's
//! source package of the installed influxdb and compiles it into
//! `target/influxdb-suite/` (once; reused after), and
//! `scripts/influxdb-suite.sh` runs it, one process per top-level test. A
//! machine without go or the packaged sources fails here: `scripts/setup.sh`
//! installs them. Three runs, each on fresh servers with auth off (the suite
//! sends no credentials):
//!
//! 1. a bare influxd: the reference pass list;
//! 2. three influxd, each behind an agent with `--replicate`, everything
//!    through node 1's front door;
//! 3. the same with `--default-consistency all`, in load-balancer mode:
//!    writes through node 1's front door, every other request through node
//!    2's (`scripts/split-proxy.py`).
//!
//! Runs 2 and 3 must give run 1's outcome for every test. After every test
//! of runs 2 and 3 (before the next one drops every database), every node
//! must come to hold what node 1 holds, read from each influxd directly:
//! the databases, their retention policies, the count of every field of
//! every measurement, and the points themselves while a policy holds at most
//! 10,000 points (`_internal`, node-local, aside). The pass lists are printed
//! side by side and written to `target/influxdb-suite/side-by-side.txt`,
//! with how long each run took.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::influxd::{ident, strings, InfluxApi, Influxd, InfluxdOptions, PolicyRow, Series};
use support::replicated::{start_doors, Node};
use support::wait::poll;
use support::{eventually, metric, Manager};

/// How long the nodes may take to agree after a test: replicating the
/// 500,000 points of `ShowSeriesCardinalityEstimation` to two peers has
/// taken 23 s on a loaded 2-core machine.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a fresh cluster may take until every node knows its peers.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
/// What a bare influxd 1.6.7 passes is about 118 of 134 tests
/// (docs/influxdb-suite.md); fewer means the suite or the server is broken,
/// and comparing with it would prove nothing.
const BARE_PASSES_AT_LEAST: usize = 100;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/influxdb-suite`: the suite's sources, binary, logs and results.
fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("influxdb-suite")
}

/// Builds the suite (or finds it built) and returns the binary.
fn build_suite() -> (PathBuf, Duration) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("scripts/influxdb-suite-build.sh"))
        .arg(suite_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/influxdb-suite-build.sh");
    assert!(
        out.status.success(),
        "building InfluxDB's suite failed ({}); scripts/setup.sh installs what it needs:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(bin.is_file(), "the build printed no binary: {stdout}");
    (bin, started.elapsed())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    fn parse(word: &str) -> Option<Outcome> {
        match word {
            "PASS" => Some(Outcome::Pass),
            "FAIL" => Some(Outcome::Fail),
            "SKIP" => Some(Outcome::Skip),
            _ => None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One test of a run.
struct Test {
    name: String,
    outcome: Outcome,
    /// Its process, `TestMain` included.
    took: Duration,
    /// The wait for the nodes to agree after it (zero when not checked).
    check: Duration,
}

/// One run of the suite.
struct Run {
    name: &'static str,
    /// Every test, in the suite's order.
    tests: Vec<Test>,
    /// The first test after which the nodes did not come to agree.
    divergence: Option<String>,
    took: Duration,
}

impl Run {
    fn count(&self, o: Outcome) -> usize {
        self.tests.iter().filter(|t| t.outcome == o).count()
    }

    fn totals(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip)
        )
    }

    /// The totals, the time, the slowest tests and checks, and whether the
    /// nodes agreed.
    fn summary(&self) -> String {
        let slowest = |of: fn(&Test) -> Duration| {
            let mut by: Vec<&Test> = self.tests.iter().collect();
            by.sort_by_key(|t| std::cmp::Reverse(of(t)));
            let top: Vec<String> = (by.iter().take(3))
                .map(|t| format!("{} {:.1?}", t.name, of(t)))
                .collect();
            top.join(", ")
        };
        let mut out = format!("{} in {:.0?}", self.totals(), self.took);
        let _ = write!(out, "; slowest tests: {}", slowest(|t| t.took));
        let checking: Duration = self.tests.iter().map(|t| t.check).sum();
        if checking > Duration::ZERO {
            let _ = write!(
                out,
                "; {checking:.0?} waiting for the nodes to agree (longest after {})",
                slowest(|t| t.check)
            );
            match &self.divergence {
                None => out.push_str(", which they did after every test"),
                Some(d) => {
                    let _ = write!(out, "; they did not {d}");
                }
            }
        }
        out
    }

    fn outcome(&self, test: &str) -> Option<Outcome> {
        self.tests
            .iter()
            .find_map(|t| (t.name == test).then_some(t.outcome))
    }
}

/// Runs the suite at `url` (writes) and `read_url` (the rest, when given)
/// through `scripts/influxdb-suite.sh`, its logs in `target/influxdb-suite/
/// logs/<name>`. With `nodes`, after every test waits until every node
/// holds what the first holds; after the first test where they do not
/// within [`CONVERGE_DEADLINE`], the rest runs unchecked.
async fn run_suite(
    name: &'static str,
    suite: &Path,
    url: &str,
    read_url: Option<&str>,
    nodes: &[Node],
) -> Run {
    let logs = suite_dir().join("logs").join(name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).expect("the log directory");
    let runner_log = std::fs::File::create(logs.join("runner.log")).expect("runner.log");
    let mut command = Command::new("bash");
    command
        .arg(repo().join("scripts/influxdb-suite.sh"))
        .arg("-l")
        .arg(&logs)
        .arg("-s")
        .arg(suite)
        .arg(url)
        .args(read_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(runner_log);
    let started = Instant::now();
    let mut child = command.spawn().expect("run scripts/influxdb-suite.sh");
    let mut stdin = child.stdin.take().expect("the runner's stdin");
    let stdout = child.stdout.take().expect("the runner's stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = Run {
        name,
        tests: Vec::new(),
        divergence: None,
        took: Duration::ZERO,
    };
    let mut summary = None;
    let mut test_started = Instant::now();
    while let Some(line) = lines.recv().await {
        let result = line
            .split_once(' ')
            .and_then(|(word, test)| Some((Outcome::parse(word)?, test.to_owned())));
        let Some((outcome, test)) = result else {
            summary = Some(line);
            continue;
        };
        let took = test_started.elapsed();
        let mut check = Duration::ZERO;
        if !nodes.is_empty() && run.divergence.is_none() {
            let checking = Instant::now();
            if let Err(difference) = poll(CONVERGE_DEADLINE, || agree(nodes)).await {
                eprintln!("{name}: after {test} the nodes still differ: {difference}");
                run.divergence = Some(format!("after {test}: {difference}"));
            }
            check = checking.elapsed();
        }
        run.tests.push(Test {
            name: test,
            outcome,
            took,
            check,
        });
        // The next test may start (the runner ignores what the line says).
        // (An error means the runner is gone: its summary is missing then.)
        let _ = writeln!(stdin);
        test_started = Instant::now();
    }
    drop(stdin);
    let status = child.wait().expect("the runner exits");
    reader.join().expect("the reader thread");
    run.took = started.elapsed();
    let summary = summary.unwrap_or_else(|| {
        panic!(
            "{name}: the runner ended ({status}) without its summary; see {}",
            logs.join("runner.log").display()
        )
    });
    assert_eq!(summary, run.totals(), "{name}: the runner's own count");
    assert!(
        !run.tests.is_empty(),
        "{name}: no test ran; see {}",
        logs.display()
    );
    eprintln!("{name}: {}", run.summary());
    run
}

/// What one influxd holds of a database: its retention policies, and for
/// every (policy, measurement) the row of `SELECT count(*)` and, while the
/// policy holds at most [`POINTS_COMPARED`] points, the points themselves:
/// the sorted rows of `SELECT *`.
#[derive(Debug, PartialEq)]
struct Holdings {
    policies: Vec<PolicyRow>,
    measurements: BTreeMap<(String, String), Measurement>,
}

#[derive(Debug, PartialEq)]
struct Measurement {
    counts: Series,
    points: Option<Series>,
}

/// A policy with more points than this is compared by its counts only: one
/// test writes 500,000 points, another 100,000 measurements, and reading
/// them whole from three nodes at every poll would take minutes.
const POINTS_COMPARED: u64 = 10_000;

/// Every database but `_internal` of one influxd, asked directly: per
/// policy one `SELECT count(*)` and at most one `SELECT *`.
async fn holdings(api: &InfluxApi) -> Result<BTreeMap<String, Holdings>, String> {
    let databases = strings(&api.try_query("SHOW DATABASES").await?, "name");
    let mut out = BTreeMap::new();
    for db in databases.into_iter().filter(|d| d != "_internal") {
        let policies = api.retention_policies(&db).await?;
        let mut measurements = BTreeMap::new();
        for rp in &policies {
            let from = format!("{}.{}./.*/", ident(&db), ident(&rp.name));
            let q = format!("SELECT count(*) FROM {from}");
            let counts = api.try_query_db(&q, Some(&db)).await?;
            // A measurement's points: its largest count of one field.
            let total: u64 = (counts.iter())
                .map(|s| s.values.iter().flatten().filter_map(Value::as_u64).max())
                .map(Option::unwrap_or_default)
                .sum();
            let mut points = BTreeMap::new();
            if total <= POINTS_COMPARED {
                let q = format!("SELECT * FROM {from}");
                for mut s in api.try_query_db(&q, Some(&db)).await? {
                    s.values
                        .sort_by_key(|r| Value::Array(r.clone()).to_string());
                    points.insert(s.name.clone().unwrap_or_default(), s);
                }
            }
            for counts in counts {
                let name = counts.name.clone().unwrap_or_default();
                let points = points.remove(&name);
                let key = (rp.name.clone(), name);
                measurements.insert(key, Measurement { counts, points });
            }
        }
        out.insert(
            db,
            Holdings {
                policies,
                measurements,
            },
        );
    }
    Ok(out)
}

/// `Ok` when every node's influxd holds what the first node's holds;
/// otherwise what differs.
async fn agree(nodes: &[Node]) -> Result<(), String> {
    for (i, n) in nodes.iter().enumerate() {
        let ping = support::http()
            .get(format!("{}/ping", n.node.influxd.url()))
            .send()
            .await;
        if !ping.is_ok_and(|r| r.status().as_u16() == 204) {
            return Err(format!(
                "node {}'s influxd does not answer{}",
                i + 1,
                crash_report(&n.node.influxd.log())
            ));
        }
    }
    let first = holdings(&nodes[0].node.influxd.api()).await?;
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let other = holdings(&n.node.influxd.api()).await?;
        if other != first {
            return Err(difference(&first, &other, i + 1));
        }
    }
    Ok(())
}

/// The start of a Go panic or fatal error in an influxd log, if any: what
/// happened and the frames of the goroutine that did it.
fn crash_report(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|l| l.starts_with("panic:") || l.starts_with("fatal error:"))
    else {
        return String::new();
    };
    format!(
        ": it crashed:\n{}",
        lines[start..lines.len().min(start + 40)].join("\n")
    )
}

/// `count_f=N, …` of a measurement.
fn counts(m: &Measurement) -> String {
    let row = m
        .counts
        .values
        .first()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let pairs: Vec<String> = (m.counts.columns.iter().zip(row))
        .skip(1) // time
        .map(|(c, v)| format!("{c}={v}"))
        .collect();
    pairs.join(", ")
}

/// A short account of how node `n`'s holdings `b` differ from node 1's `a`.
fn difference(a: &BTreeMap<String, Holdings>, b: &BTreeMap<String, Holdings>, n: usize) -> String {
    let dbs = |m: &BTreeMap<String, Holdings>| m.keys().cloned().collect::<BTreeSet<_>>();
    if dbs(a) != dbs(b) {
        return format!("databases {:?} on node 1, {:?} on node {n}", dbs(a), dbs(b));
    }
    let mut out = String::new();
    for (db, ha) in a {
        let hb = &b[db];
        if ha.policies != hb.policies {
            let _ = write!(
                out,
                "{db}: policies {:?} on node 1, {:?} on node {n}; ",
                ha.policies, hb.policies
            );
        }
        let keys: BTreeSet<_> = ha
            .measurements
            .keys()
            .chain(hb.measurements.keys())
            .collect();
        for key in keys {
            let (ma, mb) = (ha.measurements.get(key), hb.measurements.get(key));
            if ma == mb {
                continue;
            }
            let show = |m: Option<&Measurement>| match m {
                None => "nothing".to_owned(),
                Some(m) => {
                    let points = m.points.as_ref().map_or(0, |p| p.values.len());
                    format!("{} ({points} rows)", counts(m))
                }
            };
            let (rp, name) = key;
            let _ = match (ma, mb) {
                (Some(x), Some(y)) if x.counts == y.counts => write!(
                    out,
                    "{db}.{rp}.{name}: the same counts {}, other points; ",
                    counts(x)
                ),
                _ => write!(
                    out,
                    "{db}.{rp}.{name}: counts {} on node 1, {} on node {n}; ",
                    show(ma),
                    show(mb)
                ),
            };
        }
    }
    out
}

/// A fresh manager and three replicating nodes, auth off, every agent with
/// `flags`; returns when every node knows its two peers.
async fn cluster(name: &str, dir: &Path, flags: &[&str]) -> (Manager, Vec<Node>) {
    let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
    let secret = dir.join(format!("{name}.secret"));
    std::fs::write(&secret, "members-only-credential\n").expect("write the secret");
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let nodes = start_doors(
        3,
        &manager,
        name,
        InfluxdOptions::default(),
        &secret,
        |_| flags.clone(),
    )
    .await;
    for n in &nodes {
        eventually(
            SETUP_DEADLINE,
            &format!("{} knows its peers", n.door),
            || async {
                match metric(&n.node.agent.metrics().await, "cflux_replication_peers") {
                    Some(2.0) => Ok(()),
                    other => Err(format!("peers {other:?}")),
                }
            },
        )
        .await;
    }
    (manager, nodes)
}

/// The outcome of every test (`all`) or of those whose outcome differs
/// between the runs, one line each, and each run's summary.
fn side_by_side(runs: &[&Run], all: bool) -> String {
    let mut out = format!("{:<60}", "test");
    for r in runs {
        let _ = write!(out, " {:>14}", r.name);
    }
    out.push('\n');
    let mut tests: Vec<&str> = Vec::new();
    for t in runs.iter().flat_map(|r| &r.tests) {
        if !tests.contains(&t.name.as_str()) {
            tests.push(&t.name);
        }
    }
    for test in tests {
        let words: Vec<&str> = runs
            .iter()
            .map(|r| r.outcome(test).map_or("-", Outcome::word))
            .collect();
        if all || words.iter().any(|w| *w != words[0]) {
            let _ = write!(out, "{test:<60}");
            for w in words {
                let _ = write!(out, " {w:>14}");
            }
            out.push('\n');
        }
    }
    for r in runs {
        let _ = writeln!(out, "{}: {}", r.name, r.summary());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_through_replicating_front_doors_where_it_passes_on_influxd() {
    let (suite, built) = build_suite();
    eprintln!(
        "the suite built (or found built) in {built:.0?}: {}",
        suite.display()
    );
    let dir = tempfile::tempdir().expect("a temp dir");

    let bare = {
        let influxd = Influxd::start(&dir.path().join("bare"), &InfluxdOptions::default()).await;
        run_suite("bare", &suite, &influxd.url(), None, &[]).await
    };
    assert!(
        bare.count(Outcome::Pass) >= BARE_PASSES_AT_LEAST,
        "a bare influxd passes only {}: the suite or the server is broken; see {}",
        bare.totals(),
        suite_dir().join("logs/bare").display()
    );

    let at_node_1 = {
        let (_manager, nodes) = cluster("node1", dir.path(), &[]).await;
        run_suite("node1", &suite, &nodes[0].door, None, &nodes).await
    };
    let balanced = {
        let flags = ["--default-consistency", "all"];
        let (_manager, nodes) = cluster("balanced", dir.path(), &flags).await;
        let (write, read) = (&nodes[0].door, &nodes[1].door);
        run_suite("balanced", &suite, write, Some(read), &nodes).await
    };

    let runs = [&bare, &at_node_1, &balanced];
    let report = format!(
        "InfluxDB's suite, built in {built:.0?}\n{}",
        side_by_side(&runs, true)
    );
    std::fs::write(suite_dir().join("side-by-side.txt"), &report).expect("side-by-side.txt");
    let mut failures = Vec::new();
    for run in [&at_node_1, &balanced] {
        let differ = (run.tests.iter())
            .filter(|t| bare.outcome(&t.name) != Some(t.outcome))
            .count();
        let missing = (bare.tests.iter())
            .filter(|t| run.outcome(&t.name).is_none())
            .count();
        if differ + missing > 0 {
            failures.push(format!(
                "{}: {differ} tests differ from the bare influxd, {missing} missing",
                run.name
            ));
        }
        if let Some(d) = &run.divergence {
            failures.push(format!("{}: the nodes differ {d}", run.name));
        }
    }
    eprintln!("{}", side_by_side(&runs, false));
    assert!(
        failures.is_empty(),
        "{}\n\n{}\n(all tests: {}; logs: {})",
        failures.join("\n"),
        side_by_side(&runs, false),
        suite_dir().join("side-by-side.txt").display(),
        suite_dir().join("logs").display()
    );
}
