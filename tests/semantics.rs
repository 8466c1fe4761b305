//! The replicated cluster keeps InfluxDB's meaning, against real processes:
//! a manager and three `auth-enabled` influxd servers behind their agents
//! with `--replicate`; clients talk only to the front doors, and what each
//! node stores is read from its influxd directly.
//!
//! - `DELETE`, `DROP SERIES` and `DROP MEASUREMENT`, each at a different
//!   front door, remove the same points on every node and nothing else;
//!   `SELECT … INTO` stores its result on every node; a Prometheus remote
//!   write reaches every node; `DROP SHARD` is refused.
//! - A deletion taken while a node's influxd is down, with writes before
//!   and after it, reaches that node in order once it is back, across a
//!   SIGKILL of the agent that took it.
//! - `--auto-catch-up` never copies back what a deletion removed while the
//!   deletion is still queued for a node, and `cfluxctl verify` finds the
//!   nodes equal once it arrived.
//! - A write accepted before a `DROP DATABASE` never reappears after it on a
//!   node that lagged (its influxd down), even once the database is
//!   created again, and does not hold up the writes behind it.
//! - A catalog change answered at one front door is in effect at every
//!   node when the client has its answer (a node whose influxd is down is
//!   not waited for, a paused one no longer than `--catalog-wait`).
//! - A database created while the manager is out of reach keeps the writes
//!   made to it: the peers wait for it past `--hh-missing-database-wait`
//!   and never refuse them for good.
//! - The valid points of a partial write with `consistency=all` are on
//!   every node when the client has influxd's 400.
//! - A continuous query gives the same output on every node (each computes
//!   over its own copy).
//! - Points written without a timestamp are the same points on every node.
//! - Writes from the first moment the agents run are on every node.
//!
//! Conditions are awaited with deadlines, never fixed sleeps.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::influxd::{eventually, InfluxApi, InfluxdOptions};
use support::replicated::*;
use support::{metric, Manager};

const ADMIN: (&str, &str) = ("admin", ADMIN_PW);

/// A statement through `door` as the admin: the status and the answer.
async fn statement(door: &str, q: &str) -> (u16, Value) {
    InfluxApi::new(door)
        .login(ADMIN.0, ADMIN.1)
        .raw_query(q, Some(DB))
        .await
}

/// `q` through `door`, which must succeed.
async fn run(door: &str, q: &str) {
    let (status, answer) = statement(door, q).await;
    assert_eq!(status, 200, "{q}: {answer}");
    assert!(
        answer["results"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r.get("error").is_none())),
        "{q}: {answer}"
    );
}

/// The points of every node's `measurement` matching `condition`, counted
/// on each influxd, must become `want` everywhere.
async fn wait_everywhere(c: &Cluster, measurement: &str, condition: &str, want: u64) {
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("{want} points of {measurement} {condition} on {}", n.door),
            || async {
                let have = count_where(n, measurement, condition).await;
                if have == want {
                    Ok(())
                } else {
                    Err(format!("{have} points"))
                }
            },
        )
        .await;
    }
}

async fn count_where(n: &Node, measurement: &str, condition: &str) -> u64 {
    n.node
        .influxd
        .api()
        .jwt(SECRET, "admin")
        .select_number(
            DB,
            &format!("SELECT count(v) FROM {measurement} {condition}"),
        )
        .await
        .map_or(0, |v| v as u64)
}

/// Every node's points of `measurement`, as `(tags and time)` rows read
/// from its influxd.
async fn rows(n: &Node, measurement: &str) -> BTreeSet<String> {
    let series = n
        .node
        .influxd
        .api()
        .jwt(SECRET, "admin")
        .try_query_db(&format!("SELECT * FROM {measurement}"), Some(DB))
        .await
        .unwrap_or_default();
    series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .map(|row| Value::Array(row.clone()).to_string())
        })
        .collect()
}

fn tagged(measurement: &str, tag: &str, from: u64, count: u64) -> String {
    (from..from + count)
        .map(|t| format!("{measurement},host={tag} v={t} {t}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_statements_at_any_front_door_apply_on_every_node_and_nothing_else() {
    let c = Cluster::start(3, |_| Vec::new()).await;
    let [a, b, cc] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let mut body = String::new();
    for host in ["h1", "h2", "h3"] {
        body += &tagged("cpu", host, 1, 100);
        body += &tagged("mem", host, 1, 100);
        body += &tagged("src", host, 0, 100);
    }
    body += &tagged("disk", "h1", 1, 100);
    let (status, answer) = write(&a.door, WRITER, "", body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    for (m, n) in [("cpu", 300), ("mem", 300), ("src", 300), ("disk", 100)] {
        wait_everywhere(&c, m, "", n).await;
    }

    // DELETE at B: h1's cpu points, on every node, and nothing else.
    run(&b.door, "DELETE FROM cpu WHERE host = 'h1'").await;
    wait_everywhere(&c, "cpu", "WHERE host = 'h1'", 0).await;
    // DROP SERIES at C: h2's cpu series.
    run(&cc.door, "DROP SERIES FROM cpu WHERE host = 'h2'").await;
    wait_everywhere(&c, "cpu", "WHERE host = 'h2'", 0).await;
    // DROP MEASUREMENT at A, in one query with a read.
    run(&a.door, "SELECT count(v) FROM disk; DROP MEASUREMENT mem").await;
    wait_everywhere(&c, "mem", "", 0).await;
    for n in &c.nodes {
        assert_eq!(
            count_where(n, "cpu", "WHERE host = 'h3'").await,
            100,
            "{}",
            n.door
        );
        assert_eq!(count_where(n, "disk", "").await, 100, "{}", n.door);
        assert_eq!(count_where(n, "src", "").await, 300, "{}", n.door);
    }

    // A write after a delete survives it everywhere; one before does not.
    let (status, answer) = write(&a.door, WRITER, "", tagged("cpu", "h1", 200, 10)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    wait_everywhere(&c, "cpu", "WHERE host = 'h1'", 10).await;

    // SELECT … INTO at B: the rolled-up points are on every node.
    run(
        &b.door,
        &format!(
            "SELECT max(v) INTO {DB}.autogen.rollup FROM src \
             WHERE time >= 0 AND time < 100s GROUP BY time(10s), *"
        ),
    )
    .await;
    for n in &c.nodes {
        eventually(DEADLINE, &format!("the rollup on {}", n.door), || async {
            let have = n
                .node
                .influxd
                .api()
                .jwt(SECRET, "admin")
                .select_number(DB, "SELECT count(max) FROM rollup")
                .await;
            if have == Some(30.0) {
                Ok(())
            } else {
                Err(format!("{have:?} rolled-up points"))
            }
        })
        .await;
    }
    let rollup = rows(a, "rollup").await;
    assert_eq!(rollup.len(), 30);
    for n in [b, cc] {
        assert_eq!(
            rows(n, "rollup").await,
            rollup,
            "the same rollup on {}",
            n.door
        );
    }

    // DROP SHARD: refused, with the reason, and nothing dropped anywhere.
    let (status, answer) = statement(&cc.door, "DROP SHARD 1").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("DROP SHARD is refused"),
        "{answer}"
    );
    for n in &c.nodes {
        assert_eq!(count_where(n, "src", "").await, 300, "{}", n.door);
    }

    // A statement that fails here is not sent on.
    let (status, answer) = statement(&a.door, "DELETE FROM cpu WHERE nonsense =~ ").await;
    assert_eq!(status, 400, "{answer}");
    for n in &c.nodes {
        assert_eq!(count_where(n, "cpu", "").await, 110, "{}", n.door);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_a_node_that_was_down_in_order_with_the_writes_around_it() {
    let mut c = Cluster::start(3, |_| Vec::new()).await;
    c.nodes[2].node.influxd.kill();
    let door = c.nodes[0].door.clone();
    // Before the delete: gone everywhere once it arrives. After: kept.
    let (status, answer) = write(&door, WRITER, "", tagged("cpu", "before", 1, 50)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    run(&door, "DELETE FROM cpu WHERE time < now()").await;
    let (status, answer) = write(&door, WRITER, "", tagged("cpu", "after", 100, 50)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (status, answer) = write(&door, WRITER, "", tagged("other", "kept", 1, 20)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    // The cluster does not call itself in sync meanwhile.
    eventually(DEADLINE, "status tells the queued deletion", || async {
        let out = c.manager.ctl_in(Some(CLUSTER), &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(3) && text.contains("1 statement(s) that change points") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;

    // The agent that took them dies before C is back: its queue holds them.
    c.nodes[0].node.agent.kill();
    c.nodes[0].node.agent.start_again().await;
    c.nodes[2].node.influxd.start_again().await;
    wait_everywhere(&c, "cpu", "WHERE host = 'after'", 50).await;
    wait_everywhere(&c, "other", "", 20).await;
    for n in &c.nodes {
        assert_eq!(
            count_where(n, "cpu", "WHERE host = 'before'").await,
            0,
            "{}",
            n.door
        );
        assert_eq!(count_where(n, "cpu", "").await, 50, "{}", n.door);
    }
}

/// Sends `signal` (`STOP`, `CONT`) to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_catch_up_never_copies_back_what_a_queued_deletion_removed() {
    let mut c = Cluster::start(3, |_| {
        ["--auto-catch-up", "--catch-up-check-interval", "300ms"]
            .map(String::from)
            .to_vec()
    })
    .await;
    let (status, answer) = write(&c.nodes[0].door, WRITER, "", tagged("gone", "a", 1, 20)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (status, answer) = write(&c.nodes[0].door, WRITER, "", tagged("kept", "a", 1, 20)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    wait_everywhere(&c, "gone", "", 20).await;
    wait_everywhere(&c, "kept", "", 20).await;
    // (Copies so far were of writes on their way: the points are in 1970,
    // long settled.)
    let mut copies = Vec::new();
    for n in &c.nodes {
        copies.push(metric(&n.metrics().await, "cflux_node_catch_ups_total"));
    }
    // A (the oldest node, every check's peer) misses the deletion B takes:
    // its influxd is down, and B is paused while the deletion is queued.
    c.nodes[0].node.influxd.kill();
    run(&c.nodes[1].door, "DELETE FROM gone").await;
    let a_id = c.nodes[0].node.agent.node_id().await.expect("A registered");
    let queued_for_a = format!("cflux_handoff_queue_writes{{peer=\"{a_id}\"}}");
    eventually(DEADLINE, "the deletion queued at B for A", || async {
        let queued = metric(&c.nodes[1].metrics().await, &queued_for_a);
        let here = c.nodes[1].count("gone").await;
        if queued >= Some(1.0) && here == 0 {
            Ok(())
        } else {
            Err(format!("queued {queued:?}, {here} left at B"))
        }
    })
    .await;
    let b = c.nodes[1].node.agent.pid();
    signal(b, "STOP");
    c.nodes[0].node.influxd.start_again().await;
    // C holds fewer points than A now, which is what the check looks for;
    // it must wait (B cannot say what it has queued: each ask times out
    // after 10 s) for two checks.
    let c_node = &c.nodes[2];
    let waits = || {
        c_node
            .node
            .agent
            .log()
            .matches("the catch-up check waits")
            .count()
    };
    let before = waits();
    eventually(DEADLINE * 2, "C's checks wait", || async {
        if waits() >= before + 2 {
            Ok(())
        } else {
            Err(format!("{} waits", waits() - before))
        }
    })
    .await;
    assert_eq!(
        c_node.count("gone").await,
        0,
        "C copied deleted points back"
    );
    signal(b, "CONT");
    // The deletion reaches A; then every node is equal, and stays so.
    wait_everywhere(&c, "gone", "", 0).await;
    wait_everywhere(&c, "kept", "", 20).await;
    let out = c
        .manager
        .ctl_command(Some(CLUSTER), &["-o", "json", "verify"])
        .env("INFLUX_USERNAME", ADMIN.0)
        .env("INFLUX_PASSWORD", ADMIN.1)
        .output()
        .expect("run cfluxctl verify");
    assert_eq!(out.status.code(), Some(0), "verify: {out:?}");
    for (n, before) in c.nodes.iter().zip(copies) {
        assert_eq!(
            n.count("gone").await,
            0,
            "deleted points back on {}",
            n.door
        );
        assert_eq!(
            metric(&n.metrics().await, "cflux_node_catch_ups_total"),
            before,
            "{} copied after the deletion",
            n.door
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_before_a_drop_never_reappears_after_it() {
    let mut c = Cluster::start(3, |_| Vec::new()).await;
    // B and C lag: their influxd is down, so neither the catalog nor the
    // queues reach them, and every delivery to them fails at once (a
    // delivery already in flight to a paused agent is the case the queues
    // cannot take back: see docs/decisions.md).
    c.nodes[1].node.influxd.kill();
    c.nodes[2].node.influxd.kill();
    let a = &c.nodes[0];
    run(&a.door, "CREATE DATABASE res_z").await;
    let (status, answer) = write_to(&a.door, ADMIN, "res_z", "", "old v=1 1\n".into()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (status, answer) = write(&a.door, WRITER, "", tagged("kept", "a", 1, 10)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    run(&a.door, "DROP DATABASE res_z").await;
    run(&a.door, "CREATE DATABASE res_z").await;
    let (status, answer) = write_to(&a.door, ADMIN, "res_z", "", "marker v=1 2\n".into()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    c.nodes[1].node.influxd.start_again().await;
    c.nodes[2].node.influxd.start_again().await;

    // The marker comes after `old` in every queue: once it is everywhere,
    // `old` was delivered or removed, and nothing waited for
    // --hh-missing-database-wait (60 s).
    for n in &c.nodes {
        eventually(DEADLINE, &format!("the marker on {}", n.door), || async {
            match n.count_in("res_z", "marker").await {
                1 => Ok(()),
                have => Err(format!("{have} markers")),
            }
        })
        .await;
    }
    wait_everywhere(&c, "kept", "", 10).await;
    for n in &c.nodes {
        assert_eq!(
            n.count_in("res_z", "old").await,
            0,
            "old reappeared on {}",
            n.door
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_holds_a_catalog_change_no_longer_than_catalog_wait() {
    let c = Cluster::start(3, |_| vec!["--catalog-wait".into(), "2s".into()]).await;
    // C takes the question and never answers: the wait is the bound, not
    // the peer request's own 15 s timeout.
    let paused = c.nodes[2].node.agent.pid();
    signal(paused, "STOP");
    let started = std::time::Instant::now();
    run(&c.nodes[0].door, "CREATE DATABASE while_c_is_paused").await;
    let took = started.elapsed();
    signal(paused, "CONT");
    assert!(
        took < Duration::from_secs(10),
        "answered after {took:?} with --catalog-wait 2s"
    );
    assert!(c.nodes[1].databases().await.contains("while_c_is_paused"));
    let timeouts = metric(
        &c.nodes[0].metrics().await,
        "cflux_catalog_barrier_total{outcome=\"timeout\"}",
    );
    assert_eq!(timeouts, Some(1.0), "the answer went out past the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_change_is_in_effect_at_every_node_once_answered() {
    // A wait long enough that a test run never sees it pass by itself.
    let mut c = Cluster::start(3, |_| vec!["--catalog-wait".into(), "5m".into()]).await;
    // Each step at another front door, as a load balancer spreads one
    // client; every check reads each influxd right after the answer.
    for round in 0..6 {
        let at = &c.nodes[round % 3];
        let next = &c.nodes[(round + 1) % 3];
        let db = format!("barrier_{round}");
        run(&at.door, &format!("CREATE DATABASE {db}")).await;
        for n in &c.nodes {
            assert!(
                n.databases().await.contains(&db),
                "{db}, answered at {}, is missing on {}",
                at.door,
                n.door
            );
        }
        let (status, answer) = write_to(&next.door, ADMIN, &db, "", "m v=1 1\n".into()).await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "a write at the next door: {answer}"
        );
        run(&next.door, &format!("DROP DATABASE {db}")).await;
        for n in &c.nodes {
            assert!(
                !n.databases().await.contains(&db),
                "{db}, dropped at {}, is still on {}",
                next.door,
                n.door
            );
        }
    }
    run(&c.nodes[0].door, "CREATE USER carol WITH PASSWORD 'c-pw'").await;
    run(&c.nodes[1].door, &format!("GRANT READ ON {DB} TO carol")).await;
    let (status, answer) = InfluxApi::new(&c.nodes[2].door)
        .login("carol", "c-pw")
        .raw_query("SELECT count(v) FROM nothing_yet", Some(DB))
        .await;
    assert_eq!(status, 200, "carol at the third door at once: {answer}");
    let applied = |text: &str| metric(text, "cflux_catalog_barrier_total{outcome=\"applied\"}");
    assert!(
        applied(&c.nodes[0].metrics().await) >= Some(3.0),
        "the first door's answers waited for every node"
    );

    // A node whose influxd is down cannot apply anything: the answer does
    // not wait for it (5 minutes), and the others have the change.
    c.nodes[2].node.influxd.kill();
    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        run(&c.nodes[0].door, "CREATE DATABASE while_c_is_down"),
    )
    .await;
    assert!(
        answered.is_ok(),
        "the answer waited for a node that cannot apply it"
    );
    assert!(c.nodes[1].databases().await.contains("while_c_is_down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_created_while_the_manager_is_out_of_reach_keeps_its_writes() {
    let mut c = Cluster::start(3, |_| {
        ["--hh-missing-database-wait", "1s", "--catalog-wait", "2s"]
            .map(String::from)
            .to_vec()
    })
    .await;
    c.manager.kill();
    let a = &c.nodes[0];
    run(&a.door, "CREATE DATABASE cut_off").await;
    let (status, answer) = write_to(&a.door, ADMIN, "cut_off", "", "early v=1 1\n".into()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (status, answer) = write(&a.door, WRITER, "", tagged("behind", "a", 1, 10)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    // The peers lack the database for longer than --hh-missing-database-wait.
    eventually(DEADLINE, "a write queued for 3 s at A", || async {
        let oldest = a
            .metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("cflux_handoff_oldest_age_seconds{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        if oldest >= 3.0 {
            Ok(())
        } else {
            Err(format!("oldest {oldest} s"))
        }
    })
    .await;
    c.manager.start_again_on_same_port().await;
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("the early write on {}", n.door),
            || async {
                match n.count_in("cut_off", "early").await {
                    1 => Ok(()),
                    have => Err(format!("{have} points")),
                }
            },
        )
        .await;
    }
    wait_everywhere(&c, "behind", "", 10).await;
    let metrics = a.metrics().await;
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cflux_replication_dropped_points_total{"))
        .collect();
    assert!(refused.is_empty(), "writes dropped for a peer: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_reaches_its_consistency_before_its_answer() {
    let c = Cluster::start(3, |_| Vec::new()).await;
    let (status, answer) = write(
        &c.nodes[0].door,
        WRITER,
        "&consistency=all",
        "part,k=0 v=1 1\npart broken\npart,k=1 v=2 2\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("partial write"), "{answer}");
    // A field type conflict is a partial write too.
    let (status, answer) = write(
        &c.nodes[1].door,
        WRITER,
        "&consistency=all",
        "part,k=2 v=3 3\npart,k=3 v=\"text\" 4\npart,k=4 v=5 5\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("field type conflict"), "{answer}");
    // Read at once, straight from every influxd: no waiting.
    for n in &c.nodes {
        assert_eq!(n.count("part").await, 4, "the valid points on {}", n.door);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_query_gives_the_same_output_on_every_node() {
    let c = Cluster::start(3, |_| Vec::new()).await;
    run(
        &c.nodes[1].door,
        &format!(
            "CREATE CONTINUOUS QUERY per10s ON {DB} RESAMPLE EVERY 1s FOR 2m BEGIN \
             SELECT count(v) AS n INTO {DB}.autogen.cq_out FROM cq_in GROUP BY time(10s) END"
        ),
    )
    .await;
    // Four full 10 s buckets of 10 points each, ending 10 s ago, written at
    // another front door.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let first = (now - 50) / 10 * 10;
    let lines: String = (0..40)
        .map(|i| format!("cq_in v={i} {}\n", first + i))
        .collect();
    let (status, answer) = write(&c.nodes[0].door, WRITER, "&consistency=all", lines).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let want: BTreeSet<String> = (0..4)
        .map(|b| {
            let t = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(first + b * 10),
            );
            format!("[\"{t}\",10]")
        })
        .collect();
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("the CQ's output on {}", n.door),
            || async {
                let have: BTreeSet<String> = rows(n, "cq_out").await;
                if have == want {
                    Ok(())
                } else {
                    Err(format!("{have:?}"))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_without_a_timestamp_are_the_same_point_on_every_node() {
    let c = Cluster::start(3, |_| Vec::new()).await;
    let body: String = (0..2000)
        .map(|i| format!("stamped,i={i} v={i}\n"))
        .collect();
    let (status, answer) = write(&c.nodes[1].door, WRITER, "", body).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    // Seconds precision (`write` asks for it): one instant, in seconds.
    wait_everywhere(&c, "stamped", "", 2000).await;
    let stored = rows(&c.nodes[1], "stamped").await;
    assert_eq!(stored.len(), 2000);
    for n in &c.nodes {
        assert_eq!(rows(n, "stamped").await, stored, "{}", n.door);
    }
    // Nanoseconds, gzip: stamped once too.
    let lines: String = (0..500).map(|i| format!("gz,i={i} v={i}\n")).collect();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gzip, lines.as_bytes()).expect("gzip");
    let r = reqwest::Client::new()
        .post(format!("{}/write?db={DB}", c.nodes[2].door))
        .basic_auth(WRITER.0, Some(WRITER.1))
        .header("content-encoding", "gzip")
        .body(gzip.finish().expect("gzip"))
        .send()
        .await
        .expect("the front door answers");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_everywhere(&c, "gz", "", 500).await;
    let stored = rows(&c.nodes[2], "gz").await;
    for n in &c.nodes {
        assert_eq!(rows(n, "gz").await, stored, "{}", n.door);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_the_first_moment_are_on_every_node() {
    let manager = Manager::start_with(&["--heartbeat-interval", "1s"]).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let secret = dir.path().join("replication.secret");
    std::fs::write(&secret, "members-only-credential\n").expect("write the secret");
    // Three nodes, auth off, replicating; nothing waited for.
    let nodes = start_doors(
        3,
        &manager,
        "open",
        InfluxdOptions::default(),
        &secret,
        |_| Vec::new(),
    )
    .await;
    let door = nodes[0].door.clone();
    let api = InfluxApi::new(&door);
    // As soon as the front door answers: the database, then batches, each
    // sent again until it is acknowledged.
    eventually(DEADLINE, "the database is created", || async {
        match api.try_query("CREATE DATABASE early").await {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    let http = reqwest::Client::new();
    let (mut acknowledged, mut refused) = (0u64, 0u64);
    for batch in 0..20u64 {
        let body = tagged("early", &format!("b{batch}"), batch * 10, 10);
        loop {
            let r = http
                .post(format!("{door}/write?db=early&precision=s"))
                .body(body.clone())
                .send()
                .await
                .expect("the front door answers");
            if r.status() == StatusCode::NO_CONTENT {
                acknowledged += 10;
                break;
            }
            assert_eq!(
                r.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "only 'members not known yet' may refuse: {}",
                r.text().await.unwrap_or_default()
            );
            refused += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(acknowledged, 200);
    eprintln!("writes refused while the members were unknown: {refused}");
    for n in &nodes {
        eventually(DEADLINE, &format!("200 points on {}", n.door), || async {
            let have = n
                .node
                .influxd
                .api()
                .select_number("early", "SELECT count(v) FROM early")
                .await
                .map_or(0, |v| v as u64);
            if have == acknowledged {
                Ok(())
            } else {
                Err(format!("{have} points"))
            }
        })
        .await;
    }
}
