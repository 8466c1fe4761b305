//! The bottom of the front door's stack: sends a request, as the layers
//! above left it, to influxd and streams influxd's answer back (bodies are
//! never buffered). When influxd cannot be reached the answer is a 502 of
//! the front door's own, marked for the metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header;
use http::{Uri, Version};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::agent::frontdoor::answer::{InfluxdIdentity, Refusal};
use crate::agent::frontdoor::metrics::UpstreamUnreachable;
use crate::telemetry::with_causes;

/// influxd's HTTP API, behind the front door.
pub struct Upstream {
    /// `http://host:port`, without a trailing slash.
    base: String,
    http: Client<HttpConnector, Body>,
    identity: Arc<InfluxdIdentity>,
}

impl Upstream {
    pub fn new(base: &str, identity: Arc<InfluxdIdentity>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream {
            base: base.trim_end_matches('/').to_owned(),
            http,
            identity,
        }
    }

    /// Asks influxd's `/ping` once, so the front door's own answers carry
    /// influxd's version headers from the start.
    pub async fn learn_identity(&self) {
        let Ok(ping) = Request::get(format!("{}/ping", self.base)).body(Body::empty()) else {
            return;
        };
        if let Ok(r) = self.http.request(ping).await {
            self.identity.remember(r.headers());
        }
    }

    /// influxd's answer to `request`, or the front door's when there is none.
    pub async fn send(&self, request: Request) -> Response {
        match self.try_send(request).await {
            Ok(response) => response,
            Err(refusal) => {
                let mut response = self.identity.answer(&refusal);
                if matches!(refusal, Refusal::Unreachable(_)) {
                    tracing::warn!(upstream = %self.base, error = %with_causes(&refusal), "influxd cannot be reached");
                    response.extensions_mut().insert(UpstreamUnreachable);
                }
                response
            }
        }
    }

    async fn try_send(&self, request: Request) -> Result<Response, Refusal> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = match parts.uri.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}", parts.uri.path()),
            _ => parts.uri.path().to_owned(),
        };
        parts.uri = Uri::try_from(format!("{}{path_and_query}", self.base))
            .map_err(|e| Refusal::InvalidUri(e.into()))?;
        parts.version = Version::HTTP_11;
        // hyper names influxd's address; the client's is in X-Forwarded-Host.
        parts.headers.remove(header::HOST);
        // Answered by this server; influxd gets the whole body at once.
        parts.headers.remove(header::EXPECT);
        let response = self
            .http
            .request(Request::from_parts(parts, body))
            .await
            .map_err(Refusal::Unreachable)?;
        self.identity.remember(response.headers());
        Ok(response.map(Body::new))
    }
}
