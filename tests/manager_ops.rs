//! Running a manager: restarts keep state, SIGTERM shuts down gracefully,
//! bearer tokens, TLS, `/metrics`, gRPC health and reflection — all against a
//! real `cflux-manager` process.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{
    push_meta_response, ListClustersRequest, ListNodesRequest, WatchMetaRequest, WatchNodesRequest,
};
use reqwest::StatusCode;
use serde_json::Value;
use support::{
    get_meta, health, heartbeat, hold_long_poll, http, list_clusters, list_nodes, meta, metric,
    push, push_request, register, registration, scrape, self_signed_cert, sigterm_ends_cleanly,
    wait_health, wait_until, watch, with_token, within, Manager,
};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until the manager behind `channel` reports SERVING on both services.
async fn wait_serving(channel: &Channel, addr: SocketAddr) {
    wait_health(channel, addr, ServingStatus::Serving, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_nodes_and_catalogs() {
    let mut m = Manager::start().await;
    let mut c = m.grpc_client().await;
    let grpc_node = register(&mut c, registration("prod", "", "grpc-node")).await;
    let legacy: Value = http()
        .post(m.http_url("/nodes/prod"))
        .body(r#"{"ip": "10.0.0.2,", "hostname": "legacy-node"}"#)
        .send()
        .await
        .expect("legacy register")
        .json()
        .await
        .expect("registration JSON");
    let legacy_node = legacy["id"].as_str().expect("an id").to_owned();
    for (v, data) in [(0, &meta(b"v1")[..]), (1, &meta(b"v2"))] {
        assert_eq!(
            push(&mut c, "prod", v, data).await,
            push_meta_response::Result::AcceptedVersion(v + 1)
        );
    }
    assert_eq!(
        push(&mut c, "other", 0, &meta(b"o1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    let before = list_nodes(&mut c, "").await;
    assert_eq!(before.len(), 2);

    for crash in [false, true] {
        if crash {
            m.crash_and_restart().await;
        } else {
            m.restart().await;
        }
        let mut c = m.grpc_client().await;
        let after = list_nodes(&mut c, "").await;
        assert_eq!(after.len(), 2, "crash={crash}: {after:?}");
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.node_id, b.node_id);
            assert_eq!(a.cluster, b.cluster);
            assert_eq!(a.hostname, b.hostname);
            assert_eq!(a.ips, b.ips);
            assert_eq!(a.bind_address, b.bind_address);
            assert_eq!(a.http_addr, b.http_addr);
            assert_eq!(a.version, b.version);
            assert_eq!(a.registered_at_ms, b.registered_at_ms);
            assert!(a.alive, "a known node gets a TTL of grace after a restart");
        }
        let s = get_meta(&mut c, "prod").await;
        assert_eq!(
            (s.version, s.data.as_ref()),
            (2, &meta(b"v2")[..]),
            "crash={crash}"
        );
        let clusters = list_clusters(&mut c).await;
        let summary: Vec<_> = clusters
            .iter()
            .map(|c| (c.name.as_str(), c.version, c.nodes))
            .collect();
        assert_eq!(summary, vec![("other", 1, 0), ("prod", 2, 2)]);
    }

    // The nodes carry on as they were: heartbeats, re-registration, pushes.
    let mut c = m.grpc_client().await;
    for id in [&grpc_node, &legacy_node] {
        heartbeat(&mut c, "prod", id)
            .await
            .expect("heartbeat of a node registered before the restart");
    }
    let again = c
        .register(registration("prod", &grpc_node, "grpc-node"))
        .await
        .expect("re-register")
        .into_inner();
    assert_eq!(again.node_id, grpc_node);
    let nodes = list_nodes(&mut c, "").await;
    assert_eq!(nodes.len(), 2);
    let b = before
        .iter()
        .find(|n| n.node_id == grpc_node)
        .expect("node");
    let a = nodes.iter().find(|n| n.node_id == grpc_node).expect("node");
    assert_eq!(a.registered_at_ms, b.registered_at_ms);
    match push(&mut c, "prod", 1, &meta(b"stale")).await {
        push_meta_response::Result::Conflict(s) => assert_eq!(s.version, 2),
        other => panic!("a stale push after a restart must conflict: {other:?}"),
    }
    assert_eq!(
        push(&mut c, "prod", 2, &meta(b"v3")).await,
        push_meta_response::Result::AcceptedVersion(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_and_long_polls_cleanly_and_exits_zero() {
    // A long grace, so a clean exit proves nothing waited for it to run out.
    let mut m = Manager::start_with(&["--shutdown-grace", "60s"]).await;
    let mut c = m.grpc_client().await;
    assert_eq!(
        push(&mut c, "prod", 0, &meta(b"v1")).await,
        push_meta_response::Result::AcceptedVersion(1)
    );
    // One watcher that got its snapshot, one still waiting for a change.
    let mut behind = watch(&mut c, "prod", 0).await;
    let first = within(DEADLINE, "the first snapshot", behind.message())
        .await
        .expect("watch")
        .expect("a snapshot");
    assert_eq!(first.version, 1);
    let mut current = watch(&mut m.grpc_client().await, "prod", 1).await;
    let poll = hold_long_poll(&m, "prod", 1, 2.0).await;

    let took = sigterm_ends_cleanly(
        &mut m,
        vec![("behind", &mut behind), ("current", &mut current)],
        poll,
        Duration::from_secs(15),
    )
    .await;
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_call_but_health_reflection_and_metrics() {
    const TOKEN: &str = "s3cret-token";
    let m = Manager::start_with(&["--token", TOKEN]).await;
    let channel = m.channel().await;
    let mut c = ClusterfluxClient::new(channel.clone());

    // Without a token, and with a wrong one: UNAUTHENTICATED, nothing done.
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-token-but-longer"),
        Some(""),
    ] {
        let req = |msg| match token {
            None => tonic::Request::new(msg),
            Some(t) => with_token(msg, t),
        };
        let err = c
            .register(req(registration("prod", "", "h")))
            .await
            .expect_err("register without the token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        assert!(err.message().contains("bearer token"), "{err:?}");
        let err = c
            .push_meta(match token {
                None => tonic::Request::new(push_request("prod", 0, &meta(b"x"))),
                Some(t) => with_token(push_request("prod", 0, &meta(b"x")), t),
            })
            .await
            .expect_err("push without the token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        let err = c
            .watch_meta(match token {
                None => tonic::Request::new(WatchMetaRequest {
                    cluster: "prod".into(),
                    version: 0,
                }),
                Some(t) => with_token(
                    WatchMetaRequest {
                        cluster: "prod".into(),
                        version: 0,
                    },
                    t,
                ),
            })
            .await
            .expect_err("watch without the token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        let nodes = WatchNodesRequest::default();
        let err = c
            .watch_nodes(match token {
                None => tonic::Request::new(nodes),
                Some(t) => with_token(nodes, t),
            })
            .await
            .expect_err("node watch without the token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    let err = c
        .list_nodes(ListNodesRequest::default())
        .await
        .expect_err("list without the token");
    assert_eq!(err.code(), Code::Unauthenticated);

    // With it, everything works, and the refused calls left nothing behind.
    let nodes = c
        .list_nodes(with_token(ListNodesRequest::default(), TOKEN))
        .await
        .expect("ListNodes with the token")
        .into_inner()
        .nodes;
    assert!(nodes.is_empty());
    let mut watching = c
        .watch_nodes(with_token(WatchNodesRequest::default(), TOKEN))
        .await
        .expect("WatchNodes with the token")
        .into_inner();
    let first = within(DEADLINE, "the first node list", watching.message())
        .await
        .expect("the node watch")
        .expect("a first list");
    assert!(first.nodes.is_empty());
    c.register(with_token(registration("prod", "", "h"), TOKEN))
        .await
        .expect("register with the token");
    let accepted = c
        .push_meta(with_token(push_request("prod", 0, &meta(b"x")), TOKEN))
        .await
        .expect("push with the token")
        .into_inner()
        .result;
    assert_eq!(
        accepted,
        Some(push_meta_response::Result::AcceptedVersion(1))
    );

    // The legacy layer: 401 without or with a wrong token.
    let client = http();
    for (method, path) in [
        ("GET", "/nodes"),
        ("GET", "/nodes/prod"),
        ("POST", "/nodes/prod"),
        ("GET", "/clusters/prod/versions/0"),
        ("POST", "/clusters/prod/versions/1"),
    ] {
        let method: reqwest::Method = method.parse().expect("a method");
        // The right token without the "Bearer" scheme is refused too.
        for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
            let mut r = client
                .request(method.clone(), m.http_url(path))
                .body(r#"{"hostname": "h"}"#);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.expect("legacy call");
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
        }
    }
    let r = client
        .get(m.http_url("/nodes/prod"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET with the token");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>()
            .await
            .expect("JSON")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let r = client
        .get(m.http_url("/clusters/prod/versions/0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("poll with the token");
    assert_eq!(r.status(), StatusCode::OK);

    // Probes and scrapers need no secret.
    wait_serving(&channel, m.addr).await;
    assert!(reflected_services(channel.clone())
        .await
        .contains(&"clusterflux.v1.Clusterflux".to_owned()));
    assert!(scrape(&m).await.contains("cflux_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("token");
    std::fs::write(&path, "  from-a-file\n").expect("write the token file");
    let m = Manager::start_with(&["--token-file", path.to_str().expect("a UTF-8 path")]).await;
    let mut c = m.grpc_client().await;
    let err = c
        .list_clusters(ListClustersRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_clusters(with_token(ListClustersRequest {}, "  from-a-file"))
        .await
        .expect_err("the untrimmed token");
    assert_eq!(err.code(), Code::Unauthenticated);
    c.list_clusters(with_token(ListClustersRequest {}, "from-a-file"))
        .await
        .expect("the file's token");
    let r = http()
        .get(m.http_url("/nodes"))
        .bearer_auth("from-a-file")
        .send()
        .await
        .expect("GET /nodes");
    assert_eq!(r.status(), StatusCode::OK);
}

/// A gRPC channel over TLS that trusts only `cert_pem`.
async fn tls_channel(addr: SocketAddr, cert_pem: &str) -> Channel {
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a root certificate");
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").expect("a server name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("a TLS gRPC connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_the_legacy_protocol() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key, cert_pem) = self_signed_cert(certs.path());
    let m = Manager::start_with(&[
        "--tls-cert",
        cert.to_str().expect("a UTF-8 path"),
        "--tls-key",
        key.to_str().expect("a UTF-8 path"),
    ])
    .await;
    assert!(m.url().starts_with("https://"));

    // gRPC over TLS.
    let channel = tls_channel(m.addr, &cert_pem).await;
    wait_serving(&channel, m.addr).await;
    let mut c = ClusterfluxClient::new(channel);
    let reg = c
        .register(registration("prod", "", "tls-node"))
        .await
        .expect("register over TLS")
        .into_inner();
    assert_eq!(reg.bind_address, "127.0.0.1");

    // The legacy protocol over HTTPS, trusting the test certificate.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("a certificate"),
        )
        .timeout(DEADLINE)
        .build()
        .expect("an HTTPS client");
    for url in [
        m.http_url("/nodes/prod"),
        format!("https://localhost:{}/nodes/prod", m.addr.port()),
    ] {
        let r = trusting.get(&url).send().await.expect("GET over HTTPS");
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let nodes: Value = r.json().await.expect("JSON");
        assert_eq!(nodes[0]["id"], reg.node_id.as_str());
    }

    // A client that does not trust the certificate, or speaks plain HTTP, gets nowhere.
    let untrusting = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("an HTTPS client");
    assert!(untrusting.get(m.http_url("/nodes")).send().await.is_err());
    let plain = format!("http://{}/nodes", m.addr);
    assert!(http().get(plain).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_watches_and_nodes() {
    let m = Manager::start_with(&["--node-ttl", "2s", "--heartbeat-interval", "200ms"]).await;
    let mut c = m.grpc_client().await;
    let id = register(&mut c, registration("prod", "", "h1")).await;
    register(&mut c, registration("prod", "", "h2")).await;
    let _ = heartbeat(&mut c, "prod", "nobody")
        .await
        .expect_err("unknown node");
    push(&mut c, "prod", 0, &meta(b"v1")).await;
    push(&mut c, "prod", 0, &meta(b"stale")).await;
    let r = http()
        .post(m.http_url("/nodes/prod"))
        .body(r#"{"hostname": "legacy"}"#)
        .send()
        .await
        .expect("legacy register");
    assert_eq!(r.status(), StatusCode::OK);
    let _ = http()
        .put(m.http_url("/nodes/prod/nobody"))
        .send()
        .await
        .expect("legacy heartbeat");
    let stream = watch(&mut c, "prod", 1).await;

    let text = scrape(&m).await;
    for (series, value) in [
        (
            r#"cflux_requests_total{layer="grpc",method="Register",status="Ok"}"#,
            2.0,
        ),
        (
            r#"cflux_requests_total{layer="grpc",method="Heartbeat",status="NotFound"}"#,
            1.0,
        ),
        (
            r#"cflux_requests_total{layer="grpc",method="PushMeta",status="Ok"}"#,
            2.0,
        ),
        (
            r#"cflux_requests_total{layer="legacy",method="POST /nodes/{cluster}",status="200"}"#,
            1.0,
        ),
        (
            r#"cflux_requests_total{layer="legacy",method="PUT /nodes/{cluster}/{id}",status="404"}"#,
            1.0,
        ),
        ("cflux_push_conflicts_total", 1.0),
        ("cflux_watch_streams", 1.0),
        (r#"cflux_nodes{cluster="prod"}"#, 3.0),
        (r#"cflux_nodes_alive{cluster="prod"}"#, 3.0),
    ] {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        text.contains("cflux_request_duration_seconds_bucket{layer=\"grpc\",method=\"Register\""),
        "latency histogram missing:\n{text}"
    );

    // The watch gauge follows streams closing; the alive gauge follows TTLs.
    drop(stream);
    wait_until(DEADLINE, "cflux_watch_streams back to 0", || async {
        metric(&scrape(&m).await, "cflux_watch_streams") == Some(0.0)
    })
    .await;
    let mut beat = c.clone();
    wait_until(DEADLINE, "two nodes dead, one alive", || {
        let mut beat = beat.clone();
        let id = id.clone();
        let m = &m;
        async move {
            heartbeat(&mut beat, "prod", &id).await.expect("heartbeat");
            let text = scrape(m).await;
            metric(&text, r#"cflux_nodes_alive{cluster="prod"}"#) == Some(1.0)
                && metric(&text, r#"cflux_nodes{cluster="prod"}"#) == Some(3.0)
        }
    })
    .await;
    heartbeat(&mut beat, "prod", &id).await.expect("heartbeat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving() {
    let m = Manager::start().await;
    let channel = m.channel().await;
    wait_serving(&channel, m.addr).await;
    let err = health(channel, "no.such.Service")
        .await
        .expect_err("an unknown service");
    assert_eq!(err.code(), Code::NotFound);
}

/// One gRPC server reflection (v1) request and its one answer.
async fn reflect(channel: Channel, request: MessageRequest) -> Option<MessageResponse> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    responses
        .message()
        .await
        .expect("a reflection answer")
        .expect("one answer")
        .message_response
}

/// The services a manager lists through gRPC server reflection (v1).
async fn reflected_services(channel: Channel) -> Vec<String> {
    match reflect(channel, MessageRequest::ListServices(String::new())).await {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_contract() {
    let m = Manager::start().await;
    let channel = m.channel().await;
    // What `grpcurl -plaintext HOST:PORT list` prints.
    let services = reflected_services(channel.clone()).await;
    for expected in ["clusterflux.v1.Clusterflux", "grpc.health.v1.Health"] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} not in {services:?}"
        );
    }

    // What `grpcurl describe clusterflux.v1.Clusterflux` needs: the file.
    let symbol = MessageRequest::FileContainingSymbol("clusterflux.v1.Clusterflux".into());
    let response = reflect(channel, symbol).await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = response else {
        panic!("expected a file descriptor, got {response:?}");
    };
    let bytes: Vec<u8> = files.file_descriptor_proto.concat();
    let text = String::from_utf8_lossy(&bytes);
    for name in [
        "clusterflux/v1/clusterflux.proto",
        "Register",
        "WatchMeta",
        "PushMeta",
        "MetaSnapshot",
    ] {
        assert!(text.contains(name), "{name} missing from the descriptor");
    }
}
