//! Each alive node's hinted-handoff queues, asked at its front door
//! ([`QUEUES_PATH`]; with auth on, as an admin user): shown by `cfluxctl
//! queues`, and read by `cfluxctl verify`, whose nodes may differ by the
//! deletions still queued.

use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::agent::catch_up::base_url;
use crate::agent::config::InfluxAuth;
use crate::agent::frontdoor::replication::{Queues, QUEUES_PATH};
use crate::proto::Node;

/// How long one node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Every node's queues (or why it could not be asked), in order.
pub async fn ask_all(nodes: &[Node], auth: &InfluxAuth) -> Vec<anyhow::Result<Queues>> {
    let authorization = match auth {
        InfluxAuth::Basic { username, password } => Some(format!(
            "Basic {}",
            STANDARD.encode(format!("{username}:{password}"))
        )),
        _ => None,
    };
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    futures::future::join_all(
        nodes
            .iter()
            .map(|n| ask(&http, &n.http_addr, authorization.as_deref())),
    )
    .await
}

/// One node's queues, from its front door.
async fn ask(
    http: &Client<HttpConnector, Full<Bytes>>,
    http_addr: &str,
    authorization: Option<&str>,
) -> anyhow::Result<Queues> {
    let base = base_url(http_addr);
    let mut request = hyper::Request::get(format!("{base}{QUEUES_PATH}"));
    if let Some(a) = authorization {
        request = request.header(http::header::AUTHORIZATION, a);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("{base} is not a URL"))?;
    let response = tokio::time::timeout(TIMEOUT, http.request(request))
        .await
        .with_context(|| format!("{base} did not answer within {TIMEOUT:?}"))?
        .with_context(|| format!("cannot reach {base}"))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .with_context(|| format!("{base} did not answer within {TIMEOUT:?}"))?
        .with_context(|| format!("reading {base}'s answer"))?
        .to_bytes();
    match status {
        s if s.is_success() => serde_json::from_slice(&body)
            .with_context(|| format!("{base} answered something that is not its queues")),
        http::StatusCode::NOT_FOUND => bail!("not replicating (no --replicate, or no front door)"),
        s => bail!("{s}: {}", String::from_utf8_lossy(&body).trim()),
    }
}
