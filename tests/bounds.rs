//! Bounded input and bounded connections: registration fields over their
//! limits are refused on both layers without echoing the input, listings keep
//! working for every client, and a connection that never delivers its
//! request headers is closed after the header timeout.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cflux::names::{MAX_HOSTNAME_BYTES, MAX_IPS};
use reqwest::StatusCode;
use support::{list_nodes, registration, Manager};
use tonic::Code;

/// Longest error message a refusal may carry: never the input itself.
const SHORT: usize = 200;

#[tokio::test]
async fn oversized_registration_fields_are_refused_and_listings_keep_working() {
    let m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let ok = support::register(&mut c, registration("prod", "", "influx-1")).await;

    let huge = "x".repeat(10 << 20);
    let cases = [
        ("hostname", {
            let mut r = registration("prod", "", "h");
            r.hostname = huge.clone();
            r
        }),
        ("hostname", {
            let mut r = registration("prod", "", "h");
            r.hostname = "h".repeat(MAX_HOSTNAME_BYTES + 1);
            r
        }),
        ("ips", {
            let mut r = registration("prod", "", "h");
            r.ips = vec!["10.0.0.1".into(); MAX_IPS + 1];
            r
        }),
        ("IP address", {
            let mut r = registration("prod", "", "h");
            r.ips = vec!["1".repeat(4096)];
            r
        }),
        ("http_addr", {
            let mut r = registration("prod", "", "h");
            r.http_addr = "a".repeat(10_000);
            r
        }),
        ("version", {
            let mut r = registration("prod", "", "h");
            r.version = "v".repeat(10_000);
            r
        }),
        ("node_id", registration("prod", &"n".repeat(10_000), "h")),
    ];
    for (what, request) in cases {
        let err = c.register(request).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(what), "{what}: {}", err.message());
        assert!(err.message().len() < SHORT, "{what}: message echoes input");
    }

    // A heartbeat or deregistration naming a 10 KB node ID is refused the
    // same way, not answered NOT_FOUND with the ID in the message.
    let long_id = "n".repeat(10_000);
    for err in [
        c.heartbeat(cflux::proto::HeartbeatRequest {
            cluster: "prod".into(),
            node_id: long_id.clone(),
            sync: None,
        })
        .await
        .expect_err("heartbeat"),
        c.deregister(cflux::proto::DeregisterRequest {
            cluster: "prod".into(),
            node_id: long_id.clone(),
        })
        .await
        .expect_err("deregister"),
    ] {
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().len() < SHORT, "message echoes input");
    }

    // The legacy layer refuses with 400 and a short body.
    let http = support::http();
    let body = serde_json::json!({"ip": "10.0.0.2,", "hostname": "h".repeat(100_000)});
    let r = http
        .post(m.http_url("/nodes/prod"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.unwrap();
    assert!(text.contains("hostname") && text.len() < SHORT, "{text}");

    // Only the valid node is listed, and the listing fits any client.
    let nodes = list_nodes(&mut c, "").await;
    assert_eq!(
        nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
        [ok.as_str()]
    );
    let listed = http.get(m.http_url("/nodes")).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert!(listed.text().await.unwrap().len() < 4096);
}

/// Reads until the server closes the connection; how long that took.
fn time_until_closed(mut stream: std::net::TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(deadline)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            // A 408 or similar before the close is fine: keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn connections_without_headers_are_closed_after_the_header_timeout() {
    let m = Manager::start().await;
    let timeout = cflux::http_serve::HEADER_READ_TIMEOUT;
    let deadline = timeout + Duration::from_secs(10);

    // Half a request's headers, then nothing (slowloris).
    let mut partial = std::net::TcpStream::connect(m.addr).unwrap();
    partial
        .write_all(b"GET /nodes HTTP/1.1\r\nHost: manager\r\nX-Slow: ")
        .unwrap();
    // Nothing at all.
    let silent = std::net::TcpStream::connect(m.addr).unwrap();

    let closed = tokio::task::spawn_blocking(move || {
        let a = std::thread::spawn(move || time_until_closed(partial, deadline));
        let b = time_until_closed(silent, deadline);
        (a.join().unwrap(), b)
    })
    .await
    .unwrap();
    for (what, took) in [("partial headers", closed.0), ("silent", closed.1)] {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {deadline:?}"));
        assert!(
            took >= timeout - Duration::from_secs(1),
            "{what}: closed after {took:?}, before the timeout"
        );
    }

    // The manager still serves everyone else.
    let r = support::http()
        .get(m.http_url("/nodes"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
