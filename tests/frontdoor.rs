//! The agent as the node's front door (`--frontdoor-listen`), against real
//! processes: a manager, and `auth-enabled` influxd servers with a shared
//! secret, each behind its `cflux-agent`. Clients talk only to the front
//! doors, as they would talk to InfluxDB.
//!
//! - One password for the whole cluster: a user created on one node logs in
//!   on the others (whose influxd holds a random local password for it);
//!   `SET PASSWORD` on one node moves the password everywhere and the old one
//!   stops working everywhere; privileges granted on one node are enforced on
//!   another; `DROP USER` locks the user out everywhere.
//! - Every credential form (basic, `u`/`p` in the query string and in a form
//!   body, `Token user:password`, the client's own JWT) works, and wrong
//!   ones get influxd's own 401 answers; `chunked=true` answers stream;
//!   writes land.
//! - The front door over TLS.
//!
//! Conditions are awaited with deadlines ([`eventually`]), never fixed sleeps.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::agent::start_nodes_with;
use support::influxd::{eventually, AgentOptions, InfluxApi, InfluxdOptions};
use support::process::free_ports;
use support::{self_signed_cert, Manager};

const SECRET: &str = "frontdoor-test-shared-secret";
const CLUSTER: &str = "frontdoor";
const ADMIN_PW: &str = "admin-pw";
/// Propagation is usually well under a second; this leaves room for a
/// loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// An influxd with its agent, the agent's front door open.
struct Node {
    /// `http(s)://127.0.0.1:PORT` of the front door.
    door: String,
    node: support::influxd::Node,
}

impl Node {
    /// InfluxDB's API through the front door.
    fn api(&self) -> InfluxApi {
        InfluxApi::new(&self.door)
    }
}

struct Cluster {
    // Field order is drop order: the nodes go before their manager.
    nodes: Vec<Node>,
    _manager: Manager,
}

impl Cluster {
    /// A manager and `n` auth-enabled influxd servers with their agents;
    /// `tls` is a certificate and key for the front doors.
    async fn start(n: usize, tls: Option<(&str, &str)>) -> Cluster {
        let manager = Manager::start().await;
        let ports = free_ports(n);
        let nodes = start_nodes_with(n, &InfluxdOptions::auth(SECRET), |i| {
            let mut options = AgentOptions::new(&manager.url(), CLUSTER);
            options.args = vec![
                "--frontdoor-listen".into(),
                format!("127.0.0.1:{}", ports[i]),
            ];
            if let Some((cert, key)) = tls {
                options.args.extend([
                    "--frontdoor-tls-cert".into(),
                    cert.into(),
                    "--frontdoor-tls-key".into(),
                    key.into(),
                ]);
            }
            options
        })
        .await;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let nodes = nodes
            .into_iter()
            .zip(ports)
            .map(|(node, port)| Node {
                door: format!("{scheme}://127.0.0.1:{port}"),
                node,
            })
            .collect();
        Cluster {
            nodes,
            _manager: manager,
        }
    }

    /// Creates the first admin through node 0's front door (no credentials
    /// needed while there is none) and waits until it logs in everywhere.
    async fn bootstrap_admin(&self) {
        let (status, body) = self.nodes[0]
            .api()
            .raw_query(
                &format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES"),
                None,
            )
            .await;
        assert_eq!(
            status, 200,
            "the first admin through the front door: {body}"
        );
        for n in &self.nodes {
            eventually(DEADLINE, &format!("admin logs in on {}", n.door), || {
                logs_in(n, "admin", ADMIN_PW)
            })
            .await;
        }
    }
}

/// `SHOW DATABASES` as `user` (`u`/`p`) through the front door.
async fn show_databases_as(node: &Node, user: &str, password: &str) -> (u16, Value) {
    node.api()
        .login(user, password)
        .raw_query("SHOW DATABASES", None)
        .await
}

/// `Ok` when `SHOW DATABASES` with `u`/`p` succeeds through the front door.
async fn logs_in(node: &Node, user: &str, password: &str) -> Result<(), String> {
    let (status, body) = show_databases_as(node, user, password).await;
    if status == 200 && body.get("results").is_some() && body.get("error").is_none() {
        Ok(())
    } else {
        Err(format!("{user} on {}: HTTP {status} {body}", node.door))
    }
}

/// `Ok` when the front door refuses `user` with `password` as influxd does.
async fn is_refused(node: &Node, user: &str, password: &str) -> Result<(), String> {
    let (status, body) = show_databases_as(node, user, password).await;
    if status == 401 && body["error"] == "authorization failed" {
        Ok(())
    } else {
        Err(format!("{user} on {}: HTTP {status} {body}", node.door))
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client")
}

/// Status and JSON body of a request.
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.expect("the front door answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_password_works_on_every_node_and_only_where_it_should() {
    let c = Cluster::start(3, None).await;
    c.bootstrap_admin().await;
    let (a, b, cc) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let admin = |n: &Node| n.api().login("admin", ADMIN_PW);

    // A user created on A logs in on B and C with the same password...
    admin(a).exec("CREATE DATABASE metrics").await;
    admin(a)
        .exec("CREATE USER bob WITH PASSWORD 'first-pw'")
        .await;
    for n in &c.nodes {
        eventually(DEADLINE, &format!("bob logs in on {}", n.door), || {
            logs_in(n, "bob", "first-pw")
        })
        .await;
    }
    // ...thanks to the front door: B's influxd itself holds a random
    // password for bob (InfluxQL cannot copy a hash).
    let (status, _) = b
        .node
        .influxd
        .api()
        .login("bob", "first-pw")
        .raw_query("SHOW DATABASES", None)
        .await;
    assert_eq!(
        status, 401,
        "B's influxd, asked directly, does not know bob's password"
    );
    for n in &c.nodes {
        is_refused(n, "bob", "not-his-pw").await.unwrap();
    }

    // Privileges granted on B are enforced on A.
    let bob_on_a = a.api().login("bob", "first-pw");
    let select = "SELECT * FROM cpu";
    let err = bob_on_a
        .try_query_db(select, Some("metrics"))
        .await
        .expect_err("bob has no privileges yet");
    assert!(err.contains("not authorized"), "{err}");
    admin(b).exec("GRANT READ ON metrics TO bob").await;
    eventually(DEADLINE, "bob reads metrics on A", || async {
        bob_on_a
            .try_query_db(select, Some("metrics"))
            .await
            .map(|_| ())
    })
    .await;
    // READ is not WRITE: A refuses bob's write, influxd enforcing it.
    let (status, _, body) = send(
        http()
            .post(format!("{}/write?db=metrics", a.door))
            .basic_auth("bob", Some("first-pw"))
            .body("cpu v=1"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bob may not write: {body}");

    // SET PASSWORD on C: the old password is refused on A and B (where it
    // is cached as valid) within the propagation time, the new one works.
    admin(cc).exec("SET PASSWORD FOR bob = 'second-pw'").await;
    for n in &c.nodes {
        eventually(
            DEADLINE,
            &format!("bob's new password on {}", n.door),
            || async {
                is_refused(n, "bob", "first-pw").await?;
                logs_in(n, "bob", "second-pw").await
            },
        )
        .await;
    }
    bob_on_a
        .login("bob", "second-pw")
        .try_query_db(select, Some("metrics"))
        .await
        .expect("bob still reads metrics on A with his new password");

    // DROP USER on A locks bob out of B and C.
    admin(a).exec("DROP USER bob").await;
    for n in &c.nodes {
        eventually(DEADLINE, &format!("bob locked out of {}", n.door), || {
            is_refused(n, "bob", "second-pw")
        })
        .await;
    }
    // Unknown to the catalog, the user is refused by influxd itself, in its words.
    let (status, _, body) = send(
        http()
            .post(format!("{}/query", b.door))
            .basic_auth("bob", Some("second-pw"))
            .form(&[("q", "SHOW DATABASES")]),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "authorization failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_form_works_writes_land_and_chunked_answers_stream() {
    let c = Cluster::start(2, None).await;
    c.bootstrap_admin().await;
    let admin = c.nodes[0].api().login("admin", ADMIN_PW);
    admin.exec("CREATE DATABASE lines").await;
    admin
        .exec("CREATE USER carol WITH PASSWORD 'carol pw:+&=%'")
        .await;
    admin.exec("GRANT ALL ON lines TO carol").await;
    // Created on node 0, used on node 1: only the front door knows the password there.
    let door = &c.nodes[1];
    let pw = "carol pw:+&=%";
    eventually(DEADLINE, "carol logs in on node 1", || {
        logs_in(door, "carol", pw)
    })
    .await;
    let query = format!("{}/query", door.door);
    let show = [("q", "SHOW DATABASES")];
    let http = http();

    let forms: Vec<(&str, reqwest::RequestBuilder, reqwest::RequestBuilder)> = vec![
        (
            "basic",
            http.post(&query).basic_auth("carol", Some(pw)).form(&show),
            http.post(&query)
                .basic_auth("carol", Some("wrong"))
                .form(&show),
        ),
        (
            "u/p query parameters",
            http.post(&query)
                .query(&[("u", "carol"), ("p", pw)])
                .form(&show),
            http.post(&query)
                .query(&[("u", "carol"), ("p", "wrong")])
                .form(&show),
        ),
        (
            "u/p query parameters on a GET",
            http.get(&query)
                .query(&[("u", "carol"), ("p", pw), ("q", "SHOW DATABASES")]),
            http.get(&query)
                .query(&[("u", "carol"), ("p", "wrong"), ("q", "SHOW DATABASES")]),
        ),
        (
            "u/p in the form body",
            http.post(&query)
                .form(&[("u", "carol"), ("q", "SHOW DATABASES"), ("p", pw)]),
            http.post(&query)
                .form(&[("u", "carol"), ("q", "SHOW DATABASES"), ("p", "wrong")]),
        ),
        (
            "Token user:password",
            http.post(&query)
                .header("authorization", format!("Token carol:{pw}"))
                .form(&show),
            http.post(&query)
                .header("authorization", "Token carol:wrong")
                .form(&show),
        ),
    ];
    for (what, good, bad) in forms {
        let (status, _, body) = send(good).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        let names = body["results"][0]["series"][0]["values"].to_string();
        assert!(
            names.contains("lines"),
            "{what}: carol sees her database: {body}"
        );
        let (status, headers, body) = send(bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}, wrong password");
        assert_eq!(body["error"], "authorization failed", "{what}");
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"InfluxDB\""),
            "{what}"
        );
    }

    // The client's own JWT passes through untouched; influxd checks it.
    let jwt = cflux::agent::influxql::sign_jwt(SECRET, "carol", Duration::from_secs(60));
    let (status, _, body) = send(http.post(&query).bearer_auth(jwt).form(&show)).await;
    assert_eq!(status, StatusCode::OK, "own JWT: {body}");
    let forged =
        cflux::agent::influxql::sign_jwt("not-the-secret", "carol", Duration::from_secs(60));
    let (status, _, body) = send(http.post(&query).bearer_auth(forged).form(&show)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "signature is invalid");

    // No credentials: influxd's own answers.
    let (status, _, body) = send(http.post(&query).form(&show)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unable to parse authentication credentials");
    let (status, headers, _) = send(http.get(format!("{}/ping", door.door))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers.contains_key("x-influxdb-version"), "{headers:?}");

    // Line protocol through the front door lands: basic credentials and u/p.
    let batch = |from: u64| -> String {
        (from..from + 5)
            .map(|i| format!("m,host=h{} v={i} {}\n", i % 2, 1_700_000_000 + i))
            .collect()
    };
    let write = format!("{}/write", door.door);
    let (status, _, body) = send(
        http.post(&write)
            .query(&[("db", "lines"), ("precision", "s")])
            .basic_auth("carol", Some(pw))
            .body(batch(0)),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "write with basic: {body}");
    let (status, _, body) = send(
        http.post(&write)
            .query(&[
                ("db", "lines"),
                ("precision", "s"),
                ("u", "carol"),
                ("p", pw),
            ])
            // What curl --data-binary sends: the body must not be read as a form.
            .header("content-type", "application/x-www-form-urlencoded")
            .body(batch(5)),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "write with u/p: {body}");
    let direct = door.node.influxd.api().jwt(SECRET, "admin");
    let through = door.api().login("carol", pw);
    for api in [&through, &direct] {
        let count = api.select_number("lines", "SELECT count(v) FROM m").await;
        assert_eq!(count, Some(10.0), "{}: the points landed", api.base());
    }

    // chunked=true streams: one JSON document per chunk of two points,
    // arriving as separate HTTP chunks, with no Content-Length.
    let mut resp = http
        .get(&query)
        .basic_auth("carol", Some(pw))
        .query(&[
            ("db", "lines"),
            ("chunked", "true"),
            ("chunk_size", "2"),
            ("q", "SELECT v FROM m"),
        ])
        .send()
        .await
        .expect("a chunked query");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.content_length().is_none(),
        "a streamed answer has no length"
    );
    let mut pieces = 0;
    let mut text = Vec::new();
    while let Some(piece) = resp.chunk().await.expect("a chunk") {
        if !piece.is_empty() {
            pieces += 1;
            text.extend_from_slice(&piece);
        }
    }
    let documents: Vec<Value> = String::from_utf8(text)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(documents.len(), 5, "{documents:?}");
    let points: usize = documents
        .iter()
        .map(|d| {
            d["results"][0]["series"][0]["values"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(points, 10);
    assert!(pieces >= 2, "the answer arrived in {pieces} piece(s)");

    // The agent counted what it did; no request reached influxd unanswered.
    let metrics = door.node.agent.metrics().await;
    assert!(
        metrics.contains("cflux_frontdoor_requests_total{auth=\"cached\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cflux_frontdoor_requests_total{auth=\"refused\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cflux_frontdoor_upstream_errors_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_speaks_tls() {
    let certs = tempfile::tempdir().expect("a temp dir");
    let (cert, key, cert_pem) = self_signed_cert(certs.path());
    let c = Cluster::start(
        1,
        Some((cert.to_str().expect("UTF-8"), key.to_str().expect("UTF-8"))),
    )
    .await;
    let door = &c.nodes[0];
    assert!(door.door.starts_with("https://"));
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("a certificate"),
        )
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTPS client");
    let (status, _, body) = send(trusting.post(format!("{}/query", door.door)).form(&[(
        "q",
        format!("CREATE USER admin WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES").as_str(),
    )]))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(DEADLINE, "admin over HTTPS", || async {
        let (status, _, body) = send(
            trusting
                .post(format!("{}/query", door.door))
                .basic_auth("admin", Some(ADMIN_PW))
                .form(&[("q", "SHOW USERS")]),
        )
        .await;
        if status == StatusCode::OK && body["results"][0]["series"].is_array() {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {body}"))
        }
    })
    .await;
    // Plain HTTP on the TLS port gets nowhere.
    let plain = door.door.replacen("https://", "http://", 1);
    let r = http().get(format!("{plain}/ping")).send().await;
    assert!(
        r.map_or(true, |r| !r.status().is_success()),
        "plain HTTP must not be served on the TLS port"
    );
}
