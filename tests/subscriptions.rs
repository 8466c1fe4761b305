//! Subscriptions fire once in a replicating cluster, against real processes:
//! a manager and three `auth-enabled` influxd servers (their subscriber
//! service off, as `--replicate` needs) behind agents with `--replicate`,
//! and subscribers played by this test (an HTTP server and a UDP socket on
//! 127.0.0.1, counting every line they receive).
//!
//! - `ALL` with an HTTP and a UDP destination: every point written at any
//!   of the three front doors reaches each destination exactly once (not
//!   once per node), the valid part of a partial write included.
//! - `ANY` with two HTTP destinations, on another policy: each point
//!   reaches exactly one of them; nothing of it reaches the `ALL` ones.
//! - `SHOW SUBSCRIPTIONS` through a front door lists them as created.
//!
//! Conditions are awaited with deadlines, never fixed sleeps.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use reqwest::StatusCode;
use support::influxd::{eventually, InfluxApi};
use support::metric;
use support::replicated::*;

const ADMIN: (&str, &str) = ("admin", ADMIN_PW);
const N: u64 = 100;

/// What a subscriber received: each line's count, by the line without its
/// timestamp (HTTP keeps the write's precision, UDP carries nanoseconds),
/// and the query strings of the HTTP requests.
#[derive(Clone, Default)]
struct Received {
    lines: Arc<Mutex<BTreeMap<String, u64>>>,
    queries: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl Received {
    fn add(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        let mut lines = self.lines.lock().unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let key = line.rsplit_once(' ').map_or(line, |(k, _)| k);
            *lines.entry(key.to_owned()).or_default() += 1;
        }
    }

    /// The lines of `measurement` received, with their counts.
    fn of(&self, measurement: &str) -> BTreeMap<String, u64> {
        let prefix = format!("{measurement},");
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.starts_with(&prefix))
            .map(|(l, n)| (l.clone(), *n))
            .collect()
    }

    /// Lines received of `measurement`, duplicates counted.
    fn total(&self, measurement: &str) -> u64 {
        self.of(measurement).values().sum()
    }
}

/// An HTTP subscriber on 127.0.0.1 (`POST /write`): its URL and what it got.
async fn http_subscriber() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route(
            "/write",
            axum::routing::post(
                |State(r): State<Received>,
                 Query(q): Query<BTreeMap<String, String>>,
                 body: axum::body::Bytes| async move {
                    r.queries.lock().unwrap().push(q);
                    r.add(&body);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the subscriber");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// A UDP subscriber on 127.0.0.1: its URL and what it got.
async fn udp_subscriber() -> (String, Received) {
    let received = Received::default();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a UDP port");
    let url = format!("udp://{}", socket.local_addr().expect("its address"));
    let r = received.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            r.add(&buf[..n]);
        }
    });
    (url, received)
}

/// `q` through `door` as the admin, which must succeed.
async fn run(door: &str, q: &str) {
    let (status, answer) = InfluxApi::new(door)
        .login(ADMIN.0, ADMIN.1)
        .raw_query(q, Some(DB))
        .await;
    assert_eq!(status, 200, "{q}: {answer}");
    assert!(answer["results"][0].get("error").is_none(), "{q}: {answer}");
}

/// Until each front door forwards to `subscribers`: a probe point written
/// at it (again until one arrives) reaches one of them. A front door learns
/// a new subscription from its node's catalog a moment after influxd holds
/// it; writes before that are not forwarded (as with influxd's own service).
async fn wait_forwarding(c: &Cluster, query: &str, subscribers: &[&Received]) {
    for (i, n) in c.nodes.iter().enumerate() {
        let mut attempt = 0u64;
        eventually(DEADLINE, &format!("{} forwards a probe", n.door), || {
            attempt += 1;
            let line = format!("probe,door={i},attempt={attempt} v=1 {attempt}\n");
            async move {
                let (status, answer) = write(&n.door, WRITER, query, line).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
                // Forwarding is asynchronous: a moment for this probe.
                let until = Instant::now() + Duration::from_millis(500);
                while Instant::now() < until {
                    if subscribers.iter().any(|s| {
                        s.of("probe")
                            .keys()
                            .any(|l| l.contains(&format!("door={i},")))
                    }) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err("no probe arrived".to_owned())
            }
        })
        .await;
    }
}

/// Waits until the lines of `measurement` every subscriber holds stop
/// changing for `quiet`, within a deadline. This is not a sleep standing in
/// for an assertion: it runs after every node's influxd already holds all
/// the points (replication finished), so a copy forwarded again by a
/// replica — by influxd's own subscriber service or by the replication
/// path — would have been sent by then and lands within milliseconds on
/// 127.0.0.1; the quiet period only lets such a late duplicate show.
async fn wait_quiet(subscribers: &[&Received], measurement: &str, quiet: Duration) {
    let mut last = Vec::new();
    let mut since = Instant::now();
    eventually(DEADLINE, "the subscribers stop receiving", || {
        let now: Vec<u64> = subscribers.iter().map(|s| s.total(measurement)).collect();
        if now != last {
            last = now.clone();
            since = Instant::now();
        }
        let settled = since.elapsed() >= quiet;
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if settled {
                Ok(())
            } else {
                Err(format!("still changing: {now:?}"))
            }
        }
    })
    .await;
}

/// `N` distinct points of `measurement` for front door `door`.
fn points(measurement: &str, door: usize) -> String {
    (0..N)
        .map(|k| format!("{measurement},door={door},k={k} v={k} {}\n", 1000 + k))
        .collect()
}

async fn wait_stored(c: &Cluster, measurement: &str, rp: &str, want: u64) {
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("{want} points of {rp}.{measurement} on {}", n.door),
            || async {
                let have = n
                    .node
                    .influxd
                    .api()
                    .jwt(SECRET, "admin")
                    .select_number(DB, &format!("SELECT count(v) FROM {rp}.{measurement}"))
                    .await
                    .map_or(0, |v| v as u64);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_fire_once_from_the_front_door_that_took_the_write() {
    let c = Cluster::start(3, |_| Vec::new()).await;
    let (http_url, http) = http_subscriber().await;
    let (udp_url, udp) = udp_subscriber().await;
    let (any_a_url, any_a) = http_subscriber().await;
    let (any_b_url, any_b) = http_subscriber().await;
    let door = c.nodes[0].door.clone();
    run(
        &door,
        &format!(
            "CREATE SUBSCRIPTION everyone ON {DB}.autogen DESTINATIONS ALL '{http_url}', '{udp_url}'"
        ),
    )
    .await;
    run(
        &door,
        &format!("CREATE RETENTION POLICY other ON {DB} DURATION INF REPLICATION 1"),
    )
    .await;
    run(
        &c.nodes[1].door,
        &format!(
            "CREATE SUBSCRIPTION one ON {DB}.other DESTINATIONS ANY '{any_a_url}', '{any_b_url}'"
        ),
    )
    .await;

    // Every node's influxd holds both, as created.
    let want: BTreeMap<(String, String, String), (String, Vec<String>)> = [
        (
            (DB.to_owned(), "autogen".to_owned(), "everyone".to_owned()),
            ("ALL".to_owned(), vec![http_url.clone(), udp_url.clone()]),
        ),
        (
            (DB.to_owned(), "other".to_owned(), "one".to_owned()),
            ("ANY".to_owned(), vec![any_a_url.clone(), any_b_url.clone()]),
        ),
    ]
    .into_iter()
    .collect();
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("the subscriptions on {}", n.door),
            || async {
                let have = n
                    .node
                    .influxd
                    .api()
                    .jwt(SECRET, "admin")
                    .subscriptions()
                    .await;
                if have == want {
                    Ok(())
                } else {
                    Err(format!("{have:?}"))
                }
            },
        )
        .await;
    }
    // SHOW SUBSCRIPTIONS through a front door answers as influxd does.
    for n in &c.nodes {
        let shown = n.api().login(ADMIN.0, ADMIN.1).subscriptions().await;
        assert_eq!(shown, want, "SHOW SUBSCRIPTIONS through {}", n.door);
    }

    // ALL, the default policy (no `rp`): each front door forwards.
    wait_forwarding(&c, "", &[&http, &udp]).await;
    for (i, n) in c.nodes.iter().enumerate() {
        let (status, answer) = write(&n.door, WRITER, "", points("fan", i)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    }
    // A partial write: its valid points are forwarded, the broken line not.
    let (status, answer) = write(
        &c.nodes[2].door,
        WRITER,
        "",
        "fan,door=partial,k=0 v=0 1000\nfan broken\nfan,door=partial,k=1 v=1 1001\n".into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.contains("partial write"), "{answer}");
    let total = 3 * N + 2;
    wait_stored(&c, "fan", "autogen", total).await;
    for s in [&http, &udp] {
        eventually(DEADLINE, "every point at the ALL subscribers", || async {
            let have = s.total("fan");
            if have >= total {
                Ok(())
            } else {
                Err(format!("{have} lines"))
            }
        })
        .await;
    }
    wait_quiet(&[&http, &udp], "fan", Duration::from_secs(2)).await;
    for (name, s) in [("HTTP", &http), ("UDP", &udp)] {
        let lines = s.of("fan");
        let twice: Vec<_> = lines.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            twice.is_empty(),
            "{name}: lines not received once: {twice:?}"
        );
        assert_eq!(lines.len() as u64, total, "{name}: every point once");
        for i in 0..3 {
            for k in [0, N - 1] {
                let line = format!("fan,door={i},k={k} v={k}");
                assert!(lines.contains_key(&line), "{name}: {line}");
            }
        }
        assert!(!lines.keys().any(|l| l.contains("broken")), "{name}");
        eprintln!(
            "{name} subscriber: {} lines of `fan`, {} distinct, probes {:?}",
            s.total("fan"),
            lines.len(),
            s.of("probe").values().collect::<Vec<_>>()
        );
        assert!(
            s.of("probe").values().all(|n| *n == 1),
            "{name}: probes once"
        );
    }
    // HTTP keeps the write's database, policy (the default, named) and precision.
    let queries = http.queries.lock().unwrap().clone();
    assert!(!queries.is_empty());
    for q in &queries {
        assert_eq!(q.get("db").map(String::as_str), Some(DB), "{q:?}");
        assert_eq!(q.get("rp").map(String::as_str), Some("autogen"), "{q:?}");
        assert_eq!(q.get("precision").map(String::as_str), Some("s"), "{q:?}");
    }
    // Each front door sent its own writes, N + its probes per destination.
    let mut sent = 0.0;
    for n in &c.nodes {
        let text = n.metrics().await;
        let series = format!(
            "cflux_subscription_points_total{{destination=\"{http_url}\",result=\"sent\"}}"
        );
        sent += metric(&text, &series).unwrap_or(0.0);
        assert_eq!(
            metric(&text, "cflux_influxd_subscriber_active"),
            Some(0.0),
            "{}",
            n.door
        );
    }
    assert_eq!(sent as u64, http.total("fan") + http.total("probe"));

    // ANY on `other`: each point at exactly one of its destinations.
    wait_forwarding(&c, "&rp=other", &[&any_a, &any_b]).await;
    // Two writes per front door: round-robin sends them to different ones.
    for (i, n) in c.nodes.iter().enumerate() {
        let lines = points("pick", i);
        let lines: Vec<&str> = lines.lines().collect();
        for half in lines.chunks(lines.len() / 2) {
            let (status, answer) = write(&n.door, WRITER, "&rp=other", half.join("\n")).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        }
    }
    wait_stored(&c, "pick", "other", 3 * N).await;
    eventually(DEADLINE, "every point at an ANY subscriber", || async {
        let have = any_a.total("pick") + any_b.total("pick");
        if have >= 3 * N {
            Ok(())
        } else {
            Err(format!("{have} lines"))
        }
    })
    .await;
    wait_quiet(
        &[&any_a, &any_b, &http, &udp],
        "pick",
        Duration::from_secs(2),
    )
    .await;
    let (a, b) = (any_a.of("pick"), any_b.of("pick"));
    let both: Vec<_> = a.keys().filter(|l| b.contains_key(*l)).collect();
    assert!(both.is_empty(), "lines at both ANY destinations: {both:?}");
    assert!(a.values().chain(b.values()).all(|n| *n == 1));
    assert_eq!((a.len() + b.len()) as u64, 3 * N);
    // Round-robin: each front door's two writes went to different ones.
    assert_eq!(a.len() as u64, 3 * N / 2, "{} and {}", a.len(), b.len());
    eprintln!("ANY subscribers: {} and {} lines", a.len(), b.len());
    // The ALL subscription is on autogen only.
    assert_eq!(http.total("pick") + udp.total("pick"), 0);
    for q in any_a.queries.lock().unwrap().iter() {
        assert_eq!(q.get("rp").map(String::as_str), Some("other"), "{q:?}");
    }
}
