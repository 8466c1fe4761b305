//! The front door's Prometheus metrics and the layer that counts every
//! request by how it was authenticated (an [`Auth`] the authentication layer
//! leaves in the response's extensions) and every answer influxd could not
//! give ([`UpstreamUnreachable`], left by the proxy).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::telemetry::register;

/// How a request was authenticated, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
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
    /// Not a user of the catalog (or no shared secret): influxd checked.
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

/// Marks a response the proxy gave because influxd could not be reached.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamUnreachable;

pub struct FrontDoorMetrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_errors: IntCounter,
}

impl Default for FrontDoorMetrics {
    fn default() -> Self {
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

impl FrontDoorMetrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        crate::telemetry::render(&self.registry)
    }
}

/// The counting layer (`axum::middleware::from_fn_with_state`).
pub async fn count(
    State(metrics): State<Arc<FrontDoorMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(auth) = response.extensions().get::<Auth>() {
        metrics.requests.with_label_values(&[auth.label()]).inc();
    }
    if response.extensions().get::<UpstreamUnreachable>().is_some() {
        metrics.upstream_errors.inc();
    }
    response
}
