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
//! string), and hashes never leave the catalog.

pub mod authenticator;
pub mod credentials;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::agent::frontdoor::authenticator::{Authenticator, Verdict};
use crate::agent::frontdoor::credentials::{Presented, Source};
use crate::agent::influxql::sign_jwt;
use crate::http_serve::PeerAddr;
use crate::influx::catalog::Catalog;
use crate::telemetry::register;

/// How long the JWT handed to influxd is valid: it is used at once, for
/// one request.
pub const JWT_LIFETIME: Duration = Duration::from_secs(60);
/// The largest `POST /query` form body read to find `u`/`p` in it.
pub const MAX_FORM_BYTES: usize = 32 << 20;
/// How long in-flight requests may run on after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The realm influxd names in its challenges (its default).
const REALM: &str = "Basic realm=\"InfluxDB\"";

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

/// How a request was authenticated, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    /// No credentials the front door reads.
    None,
    /// The client's own token.
    Bearer,
    /// Password checked with bcrypt.
    Verified,
    /// Password matched a cached verdict.
    Cached,
    /// Wrong password: answered 401.
    Refused,
    /// Not a user of the catalog: influxd checked.
    Passed,
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Bearer => "bearer",
            Auth::Verified => "verified",
            Auth::Cached => "cached",
            Auth::Refused => "refused",
            Auth::Passed => "passed",
        }
    }
}

struct FrontDoorMetrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_errors: IntCounter,
}

impl FrontDoorMetrics {
    fn new() -> Self {
        let r = Registry::new();
        FrontDoorMetrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_frontdoor_requests_total",
                        "Requests through the front door, by how they were authenticated (none, bearer, verified, cached, refused, passed).",
                    ),
                    &["auth"],
                ),
            ),
            upstream_errors: register(
                &r,
                IntCounter::new(
                    "cflux_frontdoor_upstream_errors_total",
                    "Requests answered 502 because influxd could not be reached.",
                ),
            ),
            registry: r,
        }
    }
}

/// The front door of one node.
pub struct FrontDoor {
    upstream: String,
    secret: Option<String>,
    scheme: &'static str,
    http: Client<HttpConnector, Body>,
    auth: Authenticator,
    metrics: FrontDoorMetrics,
    /// influxd's `X-Influxdb-Build` and `-Version`, as last seen, for the
    /// front door's own answers.
    influxd_headers: RwLock<Vec<(HeaderName, HeaderValue)>>,
}

impl FrontDoor {
    /// A front door checking passwords against `catalog` (the node's catalog
    /// in the cluster's terms, see `Client::observed_catalog`).
    pub fn new(
        settings: FrontDoorSettings,
        catalog: watch::Receiver<Option<Arc<Catalog>>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        FrontDoor {
            upstream: settings.upstream.trim_end_matches('/').to_owned(),
            secret: settings.shared_secret.filter(|s| !s.is_empty()),
            scheme: if settings.tls { "https" } else { "http" },
            http,
            auth: Authenticator::new(catalog),
            metrics: FrontDoorMetrics::new(),
            influxd_headers: RwLock::new(Vec::new()),
        }
    }

    /// The password checker (for benchmarks and diagnostics).
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The front door's Prometheus metrics, in the text format.
    pub fn render_metrics(&self) -> String {
        crate::telemetry::render(&self.metrics.registry)
    }

    /// Serves on `listener` (HTTP/1.1 and HTTP/2, TLS when `tls` is given)
    /// until `shutdown`; in-flight requests get a short grace period.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        // influxd's version headers, for the front door's own answers.
        tokio::spawn({
            let door = self.clone();
            async move {
                let Ok(ping) = Request::get(format!("{}/ping", door.upstream)).body(Body::empty())
                else {
                    return;
                };
                if let Ok(r) = door.http.request(ping).await {
                    door.remember_influxd_headers(r.headers());
                }
            }
        });
        let app = axum::Router::new().fallback(handle).with_state(self);
        crate::http_serve::serve(listener, app, tls, shutdown, SHUTDOWN_GRACE).await;
    }

    /// Authenticates one request and forwards it to influxd.
    pub async fn forward(&self, request: Request) -> Response {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        let (mut parts, mut body) = request.into_parts();
        let mut query = parts.uri.query().map(str::to_owned);
        let mut presented = match query.as_deref().and_then(credentials::from_params) {
            Some((username, password)) => Presented::Password {
                username,
                password,
                source: Source::Query,
            },
            None => parts
                .headers
                .get(header::AUTHORIZATION)
                .map_or(Presented::Nothing, credentials::from_authorization),
        };
        if presented == Presented::Nothing && is_query_form(&parts) {
            let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return self.error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read a request body");
                    return self.error(StatusCode::BAD_REQUEST, "cannot read the request body");
                }
            };
            body = match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|form| Some((credentials::from_params(form)?, form)))
            {
                Some(((username, password), form)) => {
                    presented = Presented::Password {
                        username,
                        password,
                        source: Source::Form,
                    };
                    let stripped = credentials::strip_params(form);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(stripped.len()));
                    Body::from(stripped)
                }
                None => Body::from(bytes),
            };
        }
        let auth = match presented {
            Presented::Nothing => Auth::None,
            Presented::Bearer => Auth::Bearer,
            Presented::Password {
                username,
                password,
                source,
            } => {
                let checked = match &self.secret {
                    Some(_) => Some(self.auth.check(&username, &password).await),
                    None => None,
                };
                let (auth, authorization) = match checked {
                    Some(c) if c.verdict == Verdict::Valid => {
                        let secret = self.secret.as_deref().unwrap_or_default();
                        let jwt = sign_jwt(secret, &username, JWT_LIFETIME);
                        let mut v = HeaderValue::from_str(&format!("Bearer {jwt}"))
                            .expect("a JWT is a valid header value");
                        v.set_sensitive(true);
                        (
                            if c.cached {
                                Auth::Cached
                            } else {
                                Auth::Verified
                            },
                            v,
                        )
                    }
                    Some(c) if c.verdict == Verdict::Invalid => {
                        self.count(Auth::Refused);
                        tracing::info!(user = %username, ?source, peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()), "authentication failed");
                        return self.error(StatusCode::UNAUTHORIZED, "authorization failed");
                    }
                    _ => (
                        Auth::Passed,
                        credentials::basic_header(&username, &password),
                    ),
                };
                parts.headers.insert(header::AUTHORIZATION, authorization);
                query = query.map(|q| credentials::strip_params(&q));
                auth
            }
        };
        self.count(auth);
        let path_and_query = match query.as_deref() {
            Some(q) if !q.is_empty() => format!("{}?{q}", parts.uri.path()),
            _ => parts.uri.path().to_owned(),
        };
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        parts.uri = match Uri::try_from(format!("{}{path_and_query}", self.upstream)) {
            Ok(u) => u,
            Err(_) => return self.error(StatusCode::BAD_REQUEST, "invalid request URI"),
        };
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        // hyper names influxd's address; the client's is kept for the record.
        parts.headers.remove(header::HOST);
        // Answered by this server; influxd gets the whole body at once.
        parts.headers.remove(header::EXPECT);
        if let Some(host) = original_host {
            parts.headers.insert("x-forwarded-host", host);
        }
        if let Some(peer) = peer {
            let forwarded = match parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(earlier) => format!("{earlier}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                parts.headers.insert("x-forwarded-for", v);
            }
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static(self.scheme));
        let upstream = Request::from_parts(parts, body);
        match self.http.request(upstream).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                self.remember_influxd_headers(&parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                self.metrics.upstream_errors.inc();
                tracing::warn!(upstream = %self.upstream, error = %e, "influxd cannot be reached");
                self.error(StatusCode::BAD_GATEWAY, "influxd cannot be reached")
            }
        }
    }

    fn count(&self, auth: Auth) {
        self.metrics
            .requests
            .with_label_values(&[auth.label()])
            .inc();
    }

    fn remember_influxd_headers(&self, headers: &HeaderMap) {
        const NAMES: [&str; 2] = ["x-influxdb-build", "x-influxdb-version"];
        let seen: Vec<(HeaderName, HeaderValue)> = NAMES
            .iter()
            .filter_map(|n| Some((HeaderName::from_static(n), headers.get(*n)?.clone())))
            .collect();
        if seen.is_empty() {
            return;
        }
        let known = self
            .influxd_headers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if *known == seen {
            return;
        }
        drop(known);
        *self
            .influxd_headers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// An answer of the front door's own, shaped as influxd shapes its
    /// errors: `{"error":"…"}`, a request ID, influxd's version headers and,
    /// for a 401, the `WWW-Authenticate` challenge.
    fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = format!("{}\n", serde_json::json!({ "error": message }));
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("request-id", v.clone());
            h.insert("x-request-id", v);
        }
        for (name, value) in self
            .influxd_headers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.insert(name.clone(), value.clone());
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        } else if let Ok(v) = HeaderValue::from_str(message) {
            h.insert("x-influxdb-error", v);
        }
        response
    }
}

async fn handle(State(door): State<Arc<FrontDoor>>, request: Request) -> Response {
    door.forward(request).await
}

/// `POST /query` with a form body, which may carry `u` and `p`.
fn is_query_form(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::POST
        && parts.uri.path() == "/query"
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            })
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// §7.6.1), and whatever `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
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
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type", "authorization"]);
    }

    #[test]
    fn private_upstreams() {
        assert!(is_private_upstream("http://127.0.0.1:8086"));
        assert!(is_private_upstream("http://localhost:8086"));
        assert!(is_private_upstream("http://[::1]:8086"));
        assert!(!is_private_upstream("http://10.0.0.5:8086"));
        assert!(!is_private_upstream("http://influx.example:8086"));
    }

    #[test]
    fn query_forms() {
        let parts = |method: &str, path: &str, ct: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, ct)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let form = "application/x-www-form-urlencoded";
        assert!(is_query_form(&parts("POST", "/query", form)));
        assert!(is_query_form(&parts(
            "POST",
            "/query?db=x",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        )));
        // curl sends line protocol as a "form": /write bodies are never read.
        assert!(!is_query_form(&parts("POST", "/write", form)));
        assert!(!is_query_form(&parts("GET", "/query", form)));
        assert!(!is_query_form(&parts(
            "POST",
            "/query",
            "multipart/form-data"
        )));
    }
}
