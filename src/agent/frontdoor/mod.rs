//! The node's front door: the agent listens where clients expect InfluxDB
//! (`--frontdoor-listen`, e.g. `:8086`) and forwards every request of the
//! HTTP API to its influxd on a private address (`--influxdb-url`), as a
//! transparent reverse proxy. Request and response bodies are streamed, never
//! buffered (a `/query?chunked=true` answer reaches the client chunk by
//! chunk), headers are kept except the hop-by-hop ones, and `X-Forwarded-For`,
//! `-Proto` and `-Host` say where the request came from.
//!
//! What it adds is one password per user for the whole cluster. InfluxQL
//! cannot set a password hash, so a user created or re-passworded on another
//! node has a random local password on this one; the front door checks the
//! password against the hash the cluster holds instead (see
//! [`authenticator`]), and hands influxd a short-lived JWT for the user
//! (HS256 over influxd's `shared-secret`, which only the agent holds).
//! influxd keeps enforcing the user's privileges itself.
//!
//! Per request, credentials are looked for where influxd looks (see
//! [`credentials`]), plus `Authorization: Token user:password` and `u`/`p`
//! in a `POST /query` form body, which influxd 1.6 does not read:
//!
//! - a user of the catalog with the right password: the client's
//!   credentials are removed (`u`/`p` from the query string and the form
//!   body, the `Authorization` header) and the request goes on with
//!   `Authorization: Bearer <jwt>`;
//! - a user of the catalog with a wrong password: `401
//!   {"error":"authorization failed"}`, as influxd answers it;
//! - a user the catalog does not hold (yet): influxd decides, with the
//!   credentials moved into a `Basic` header it reads (a user created on
//!   this node a moment ago, or the first admin of a new cluster);
//! - the client's own `Bearer` token, or no credentials at all: untouched,
//!   for influxd to accept or refuse in its own words (with `auth-enabled`
//!   it refuses what needs a user, and serves `/ping`).
//!
//! Without a shared secret the front door cannot vouch for anyone: it is a
//! plain proxy and influxd checks every password itself.
//!
//! Credentials are never logged (the log names the user, never the query
//! string; `Authorization` is a sensitive header), and hashes never leave
//! the catalog.
//!
//! Each concern is one tower layer around the proxy, outermost first:
//! request tracing, the metrics ([`metrics`]), authentication
//! ([`authentication`]), with `--replicate` replicated writes and read
//! failover ([`replication`], its queues in [`handoff`], its answers in
//! [`consistency`], subscriptions fired once in [`subscriptions`]),
//! hop-by-hop headers and `X-Forwarded-*`
//! ([`forwarding`]), and influxd itself ([`proxy`]); the front door's own
//! answers are shaped in [`answer`].

pub mod answer;
pub mod authentication;
pub mod authenticator;
pub mod consistency;
pub mod credentials;
pub mod forwarding;
pub mod handoff;
pub mod line_protocol;
pub mod metrics;
pub mod proxy;
pub mod replication;
pub mod statements;
pub mod subscriptions;
pub mod timestamps;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use http::header;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::util::{MapRequestLayer, MapResponseLayer};
use tower::ServiceBuilder;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::agent::frontdoor::answer::InfluxdIdentity;
use crate::agent::frontdoor::authentication::Authentication;
use crate::agent::frontdoor::authenticator::Authenticator;
use crate::agent::frontdoor::metrics::FrontDoorMetrics;
use crate::agent::frontdoor::proxy::Upstream;
use crate::agent::frontdoor::replication::{
    Replication, ReplicationError, ReplicationSettings, PEER_CATALOG_PATH, PEER_QUEUES_PATH,
    QUERY_PATH, REPLICATE_PATH,
};
use crate::influx::catalog::Catalog;

/// How long in-flight requests may run on after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the front door needs to know.
#[derive(Clone, Debug)]
pub struct FrontDoorSettings {
    /// influxd's HTTP API, `http://host:port`.
    pub upstream: String,
    /// influxd's `shared-secret`; without it influxd checks every password.
    pub shared_secret: Option<String>,
    /// Whether clients reach the front door over TLS.
    pub tls: bool,
}

/// The front door of one node.
pub struct FrontDoor {
    /// How clients come in, for `X-Forwarded-Proto`.
    scheme: &'static str,
    upstream: Arc<Upstream>,
    identity: Arc<InfluxdIdentity>,
    shared_secret: Option<String>,
    authentication: Arc<Authentication>,
    metrics: Arc<FrontDoorMetrics>,
    /// The node's catalog, as the authentication sees it.
    catalog: watch::Receiver<Option<Arc<Catalog>>>,
    replication: Option<Arc<Replication>>,
}

impl FrontDoor {
    /// A front door checking passwords against `catalog` (the node's catalog
    /// in the cluster's terms, see `Client::observed_catalog`).
    pub fn new(
        settings: FrontDoorSettings,
        catalog: watch::Receiver<Option<Arc<Catalog>>>,
    ) -> Self {
        let identity = Arc::new(InfluxdIdentity::default());
        FrontDoor {
            scheme: if settings.tls { "https" } else { "http" },
            upstream: Arc::new(Upstream::new(&settings.upstream, identity.clone())),
            shared_secret: settings.shared_secret.clone(),
            authentication: Arc::new(Authentication::new(
                settings.shared_secret,
                Authenticator::new(catalog.clone()),
                identity.clone(),
            )),
            identity,
            metrics: Arc::new(FrontDoorMetrics::default()),
            catalog,
            replication: None,
        }
    }

    /// Turns on replicated writes (see [`replication`]): opens the queues
    /// and starts delivering what they hold.
    pub async fn start_replication(
        &mut self,
        settings: ReplicationSettings,
        shutdown: CancellationToken,
    ) -> Result<Arc<Replication>, ReplicationError> {
        let replication = Replication::start(
            settings,
            self.shared_secret.clone(),
            self.upstream.clone(),
            self.identity.clone(),
            self.catalog.clone(),
            shutdown,
        )
        .await?;
        self.replication = Some(replication.clone());
        Ok(replication)
    }

    /// The front door's Prometheus metrics, in the text format.
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render();
        if let Some(r) = &self.replication {
            text.push_str(&r.render_metrics());
        }
        text
    }

    /// The whole front door as one service: the layers around the proxy.
    pub fn router(&self) -> axum::Router {
        let upstream = self.upstream.clone();
        let proxy = tower::service_fn(move |request: Request| {
            let upstream = upstream.clone();
            async move { Ok::<_, std::convert::Infallible>(upstream.send(request).await) }
        });
        let stack = ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
            ]))
            .layer(
                // The path only: a query string may hold `u` and `p`.
                TraceLayer::new_for_http()
                    .make_span_with(|r: &Request| {
                        tracing::debug_span!("frontdoor", method = %r.method(), path = r.uri().path())
                    })
                    .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                metrics::count,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.authentication.clone(),
                authentication::authenticate,
            ))
            .option_layer(self.replication.clone().map(|r| {
                axum::middleware::from_fn_with_state(r, replication::replicate)
            }))
            .layer(MapRequestLayer::new(forwarding::strip_request))
            .layer(MapResponseLayer::new(forwarding::strip_response))
            .layer(MapRequestLayer::new(forwarding::add_forwarded(self.scheme)))
            .service(proxy);
        let router = axum::Router::new().fallback_service(stack);
        match &self.replication {
            // Peers' writes, signed: no user credentials to check here.
            Some(r) => router
                .route(
                    REPLICATE_PATH,
                    axum::routing::post(replication::receive).with_state(r.clone()),
                )
                .route(
                    QUERY_PATH,
                    axum::routing::post(replication::answer_query).with_state(r.clone()),
                )
                .route(
                    PEER_QUEUES_PATH,
                    axum::routing::post(replication::peer_queues).with_state(r.clone()),
                )
                .route(
                    PEER_CATALOG_PATH,
                    axum::routing::post(replication::peer_catalog).with_state(r.clone()),
                ),
            None => router,
        }
    }

    /// Serves on `listener` (HTTP/1.1 and HTTP/2, TLS when `tls` is given)
    /// until `shutdown`; in-flight requests get a short grace period.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn({
            let upstream = self.upstream.clone();
            async move { upstream.learn_identity().await }
        });
        crate::http_serve::serve(listener, self.router(), tls, shutdown, SHUTDOWN_GRACE).await;
    }
}

/// Whether `--influxdb-url` points at this host only (so clients cannot go
/// around the front door).
pub fn is_private_upstream(url: &str) -> bool {
    let authority = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_upstreams() {
        assert!(is_private_upstream("http://127.0.0.1:8086"));
        assert!(is_private_upstream("http://localhost:8086"));
        assert!(is_private_upstream("http://[::1]:8086"));
        assert!(!is_private_upstream("http://10.0.0.5:8086"));
        assert!(!is_private_upstream("http://influx.example:8086"));
    }
}
