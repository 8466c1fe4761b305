//! The legacy HTTP protocol of the original (2016) Clusterflux manager, on the
//! same port as gRPC and over the same [`ControlPlane`], so original Go nodes
//! keep working and share state with gRPC nodes.
//!
//! Versions travel as decimal strings in the `Version` header; catalogs as raw
//! `meta.Data` bytes in bodies. Errors answer with a JSON `{"error": "..."}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use tokio_util::sync::CancellationToken;

use crate::http_serve::PeerAddr;
use crate::legacy_protocol as wire;
use crate::manager::plane::{CatalogPush, ControlPlane, Layer, PlaneError, Registration};
use crate::manager::store::{CasOutcome, NodeStatus};
use crate::telemetry::with_causes;

/// Settings of the legacy layer.
#[derive(Clone, Debug)]
pub struct LegacyOptions {
    /// How long a long poll is held before it is answered with `timeout_status`.
    pub poll_timeout: Duration,
    /// 504 (the original) or 204 (the seed's planned change).
    pub timeout_status: StatusCode,
}

#[derive(Clone)]
struct Legacy {
    plane: Arc<ControlPlane>,
    opts: LegacyOptions,
    shutdown: CancellationToken,
}

/// The legacy routes, ready to be merged beside the gRPC routes.
pub fn router(
    plane: Arc<ControlPlane>,
    opts: LegacyOptions,
    shutdown: CancellationToken,
) -> Router {
    let body_limit = plane.limits.max_catalog_bytes + 1;
    let state = Legacy {
        plane,
        opts,
        shutdown,
    };
    Router::new()
        .route("/nodes", get(list_all_nodes))
        .route("/nodes/{cluster}", post(register).get(list_cluster_nodes))
        .route("/nodes/{cluster}/{id}", put(heartbeat).delete(deregister))
        .route(
            "/clusters/{cluster}/versions/{version}",
            get(long_poll).post(push),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Records each legacy call by route and status.
async fn observe(State(s): State<Legacy>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = format!("{} {route}", request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    s.plane.metrics.observe(
        "legacy",
        &method,
        response.status().as_str(),
        start.elapsed(),
    );
    response
}

/// An error answer of the legacy layer.
struct LegacyError(StatusCode, String);

impl From<PlaneError> for LegacyError {
    fn from(e: PlaneError) -> Self {
        LegacyError(http_status(&e), with_causes(&e))
    }
}

/// The HTTP status that answers a control-plane error.
pub(crate) fn http_status(e: &PlaneError) -> StatusCode {
    match e {
        PlaneError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        PlaneError::NotFound(_) => StatusCode::NOT_FOUND,
        PlaneError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
        PlaneError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for LegacyError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type LegacyResult<T> = Result<T, LegacyError>;

fn bad_request(msg: impl Into<String>) -> LegacyError {
    LegacyError(StatusCode::BAD_REQUEST, msg.into())
}

fn parse_version(v: &str) -> LegacyResult<u64> {
    v.parse()
        .map_err(|_| bad_request(format!("version {v:?} is not a non-negative integer")))
}

fn version_header(v: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Version", HeaderValue::from(v));
    h
}

fn legacy_node(n: NodeStatus) -> wire::Node {
    wire::Node {
        ip: wire::join_ips(&n.record.ips),
        id: n.record.node_id,
        hostname: n.record.hostname,
        bind_address: n.record.bind_address,
        alive: n.alive,
    }
}

async fn register(
    State(s): State<Legacy>,
    Path(cluster): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    body: Bytes,
) -> LegacyResult<Json<wire::Registered>> {
    // The original nodes send JSON without always saying so: read it whatever
    // the Content-Type.
    let body: wire::Registration = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("malformed registration JSON: {e}")))?;
    let ips = wire::split_ips(&body.ip);
    let node = s
        .plane
        .register(Registration {
            cluster,
            node_id: body.id,
            hostname: body.hostname,
            ips,
            bind_address: peer.map(|p| p.0 .0.ip().to_string()).unwrap_or_default(),
            ..Registration::default()
        })
        .await?;
    let expires = std::time::SystemTime::now() + s.plane.limits.node_ttl;
    Ok(Json(wire::Registered {
        status: "ok".into(),
        message: format!("node {} registered", node.node_id),
        id: node.node_id,
        expiration_date: humantime::format_rfc3339_seconds(expires).to_string(),
        metadata: wire::RegisteredMetadata {
            ip: wire::join_ips(&node.ips),
            hostname: node.hostname,
        },
    }))
}

async fn heartbeat(
    State(s): State<Legacy>,
    Path((cluster, id)): Path<(String, String)>,
) -> LegacyResult<StatusCode> {
    // The legacy protocol carries no sync state: the node is listed as unknown.
    s.plane.heartbeat(&cluster, &id, None).await?;
    Ok(StatusCode::OK)
}

async fn deregister(
    State(s): State<Legacy>,
    Path((cluster, id)): Path<(String, String)>,
) -> LegacyResult<StatusCode> {
    s.plane.deregister(&cluster, &id).await?;
    Ok(StatusCode::OK)
}

async fn list_all_nodes(State(s): State<Legacy>) -> LegacyResult<Json<wire::AllNodes>> {
    let influx = s.plane.list_nodes("").await?;
    Ok(Json(wire::AllNodes {
        cflux: s.plane.managers().await?,
        influx: influx.into_iter().map(legacy_node).collect(),
    }))
}

async fn list_cluster_nodes(
    State(s): State<Legacy>,
    Path(cluster): Path<String>,
) -> LegacyResult<Json<Vec<wire::Node>>> {
    let nodes = s.plane.list_nodes(&cluster).await?;
    Ok(Json(nodes.into_iter().map(legacy_node).collect()))
}

/// Keeps the long-poll gauge right however the request ends.
struct PollGauge(Arc<ControlPlane>);

impl Drop for PollGauge {
    fn drop(&mut self) {
        self.0.metrics.long_polls.dec();
    }
}

async fn long_poll(
    State(s): State<Legacy>,
    Path((cluster, version)): Path<(String, String)>,
) -> LegacyResult<Response> {
    let known = parse_version(&version)?;
    let mut sub = s.plane.watch(&cluster).await?;
    s.plane.metrics.long_polls.inc();
    let _gauge = PollGauge(s.plane.clone());
    tokio::select! {
        snapshot = sub.next_different(known) => match snapshot {
            Some(snapshot) => Ok((
                StatusCode::OK,
                version_header(snapshot.version),
                snapshot.data.clone(),
            )
                .into_response()),
            None => Ok(s.opts.timeout_status.into_response()),
        },
        _ = tokio::time::sleep(s.opts.poll_timeout) => Ok(s.opts.timeout_status.into_response()),
        _ = s.shutdown.cancelled() => Ok(s.opts.timeout_status.into_response()),
    }
}

async fn push(
    State(s): State<Legacy>,
    Path((cluster, version)): Path<(String, String)>,
    body: Bytes,
) -> LegacyResult<Response> {
    let expected = parse_version(&version)?;
    let push = CatalogPush {
        cluster,
        expected_version: expected,
        expected_history_id: String::new(),
        data: body,
        node_id: String::new(),
        layer: Layer::Legacy,
    };
    Ok(match s.plane.push(push).await? {
        CasOutcome::Accepted(v) => (StatusCode::OK, version_header(v)).into_response(),
        CasOutcome::Conflict(current) => (
            StatusCode::CONFLICT,
            version_header(current.version),
            current.data,
        )
            .into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_non_negative_integers() {
        assert_eq!(parse_version("12").ok(), Some(12));
        assert!(parse_version("x1").is_err());
        assert!(parse_version("-1").is_err());
    }
}
