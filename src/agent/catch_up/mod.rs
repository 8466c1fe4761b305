//! Catch-up: a node that joined a cluster holding data, or whose peers'
//! hinted-handoff queues dropped writes for it, is filled from a healthy
//! peer while both keep serving. The same code runs in `cfluxctl catch-up`
//! and in the agent's `--auto-catch-up`.
//!
//! Points travel as a chunked export through the peer's front door
//! (`SELECT * … GROUP BY *`, [`line_protocol`]) written to the node
//! without being replicated again ([`Writer::Signed`] goes to the node's
//! replication endpoint, which writes to its own influxd only). InfluxDB
//! keeps one point per series and timestamp, so a copy that overlaps live
//! replication stores nothing twice. [`copy`] plans per database, policy,
//! measurement and time window from the peer's counts ([`counts`], shared
//! with `cfluxctl verify`) and keeps a checkpoint per window, so an
//! interrupted copy resumes where it stopped.

pub mod auto;
pub mod copy;
pub mod counts;
pub mod line_protocol;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use prost::Message;

use crate::agent::frontdoor::replication::{
    self, Batch, Hint, QueryCall, Queues, Receipt, PEER_QUEUES_PATH, QUERY_PATH, REPLICATE_PATH,
};
use crate::agent::influxql::{send_within, write_path, Chunks, Influxd, InfluxdError};
use crate::clock::now_ms;

/// Points per chunk of an export, and per whole read.
pub const CHUNK_POINTS: usize = 10_000;
/// How long one signed request may take to be answered.
const SIGNED_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's `http_addr` as a URL (it may be given with its scheme).
pub fn base_url(http_addr: &str) -> String {
    if http_addr.contains("://") {
        http_addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{http_addr}")
    }
}

/// A node's front door spoken to with the members' credential
/// (`--replication-secret-file`), acting as `user` there.
#[derive(Clone)]
pub struct SignedNode {
    base: String,
    secret: Vec<u8>,
    user: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl SignedNode {
    pub fn new(http_addr: &str, secret: Vec<u8>, user: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        SignedNode {
            base: base_url(http_addr),
            secret,
            user,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, InfluxdError> {
        let ts = now_ms();
        let signature = hex::encode(replication::sign(&self.secret, ts, &body));
        let url = format!("{}{path}", self.base);
        let request = hyper::Request::post(&url)
            .header(replication::TIMESTAMP_HEADER, ts.to_string())
            .header(replication::SIGNATURE_HEADER, signature)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|source| InfluxdError::Request { url, source })?;
        send_within(&self.http, &self.base, SIGNED_TIMEOUT, request).await
    }

    /// Statements that change points still queued on the node, for any peer.
    pub async fn queued_statements(&self) -> Result<u64, InfluxdError> {
        Ok(self.queues().await?.statements())
    }

    /// The node's queues, as its front door shows them to a peer.
    pub async fn queues(&self) -> Result<Queues, InfluxdError> {
        let response = self.post(PEER_QUEUES_PATH, Bytes::new()).await?;
        let (status, body) = self.answer(response).await?;
        let refused = |status, answer| InfluxdError::Status {
            base: self.base.clone(),
            status,
            answer,
        };
        if !status.is_success() {
            return Err(refused(
                status,
                String::from_utf8_lossy(&body).trim().to_owned(),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            refused(
                http::StatusCode::BAD_GATEWAY,
                format!("unreadable queues: {e}"),
            )
        })
    }

    /// A signed request's answer, read within [`SIGNED_TIMEOUT`].
    async fn answer(
        &self,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<(http::StatusCode, Bytes), InfluxdError> {
        let status = response.status();
        let body = tokio::time::timeout(SIGNED_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| InfluxdError::Timeout {
                base: self.base.clone(),
            })?
            .map_err(|source| InfluxdError::Body {
                base: self.base.clone(),
                source,
            })?
            .to_bytes();
        Ok((status, body))
    }

    async fn read_chunked(&self, statement: &str) -> Result<Chunks, InfluxdError> {
        let form = format!("q={}", utf8_percent_encode(statement, NON_ALPHANUMERIC));
        let call = QueryCall {
            method: "POST".to_owned(),
            path_and_query: format!("/query?epoch=ns&chunked=true&chunk_size={CHUNK_POINTS}"),
            content_type: Some("application/x-www-form-urlencoded".to_owned()),
            user: self.user.clone(),
            body: Bytes::from(form),
        };
        let response = self
            .post(QUERY_PATH, Bytes::from(call.encode_to_vec()))
            .await?;
        Chunks::from_response(response, &self.base, statement).await
    }

    async fn write(&self, database: &str, policy: &str, lines: Bytes) -> Result<(), InfluxdError> {
        let batch = Batch {
            hints: vec![Hint {
                path_and_query: write_path(database, policy),
                user: self.user.clone(),
                content_encoding: None,
                body: lines,
                queued_at_ms: now_ms(),
            }],
            // A copy, not a write of this node's: the age rule decides.
            origin: None,
        };
        let response = self
            .post(REPLICATE_PATH, Bytes::from(batch.encode_to_vec()))
            .await?;
        let (status, body) = self.answer(response).await?;
        let answer = String::from_utf8_lossy(&body).trim().to_owned();
        let refused = |status, answer| InfluxdError::Status {
            base: self.base.clone(),
            status,
            answer,
        };
        if !status.is_success() {
            return Err(refused(status, answer));
        }
        let receipt: Receipt = serde_json::from_slice(&body).map_err(|e| {
            refused(
                http::StatusCode::BAD_GATEWAY,
                format!("unreadable receipt: {e}"),
            )
        })?;
        match receipt.outcomes.first() {
            Some(true) => Ok(()),
            Some(false) => Err(refused(
                http::StatusCode::BAD_REQUEST,
                "the node's influxd refused the points".to_owned(),
            )),
            None => Err(refused(
                http::StatusCode::SERVICE_UNAVAILABLE,
                receipt.error.unwrap_or(answer),
            )),
        }
    }
}

/// Where points and counts are read.
#[derive(Clone)]
pub enum Reader {
    /// An influxd or a front door, with the credentials it was given.
    Influxd(Influxd),
    /// A peer's front door through the members' query endpoint.
    Signed(SignedNode),
}

impl Reader {
    /// A statement's answer, chunk by chunk.
    pub async fn read_chunked(&self, statement: &str) -> Result<Chunks, InfluxdError> {
        match self {
            Reader::Influxd(i) => i.read_chunked(statement, CHUNK_POINTS).await,
            Reader::Signed(s) => s.read_chunked(statement).await,
        }
    }

    /// Every series of a statement's answer, its chunks put together.
    pub async fn series(&self, statement: &str) -> Result<Vec<serde_json::Value>, InfluxdError> {
        let mut chunks = self.read_chunked(statement).await?;
        let mut out = Vec::new();
        while let Some(mut chunk) = chunks.next().await? {
            if let Some(series) = chunk["results"][0]["series"].as_array_mut() {
                out.append(series);
            }
        }
        Ok(out)
    }
}

/// Where copied points are written.
#[derive(Clone)]
pub enum Writer {
    /// An influxd (the agent's own) or a front door that does not
    /// replicate, as `admin` in shared-secret mode.
    Influxd {
        influxd: Influxd,
        admin: Option<String>,
    },
    /// A node's replication endpoint: written to its influxd only.
    Signed(SignedNode),
}

impl Writer {
    pub async fn write(
        &self,
        database: &str,
        policy: &str,
        lines: Bytes,
    ) -> Result<(), InfluxdError> {
        match self {
            Writer::Influxd { influxd, admin } => {
                influxd
                    .write_points(database, policy, lines, admin.as_deref())
                    .await
            }
            Writer::Signed(s) => s.write(database, policy, lines).await,
        }
    }
}
