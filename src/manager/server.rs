//! One listening port for everything: gRPC (with health and reflection), the
//! legacy HTTP protocol, `/metrics` and the web console, as one application served by
//! [`crate::http_serve::serve`]. Health follows the store.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;
use tower::Layer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::manager::console;
use crate::manager::encoded::WatchMeta;
use crate::manager::grpc::{GrpcMetricsLayer, GrpcService};
use crate::manager::legacy::{self, LegacyOptions};
use crate::manager::plane::ControlPlane;
use crate::proto::clusterflux_server::ClusterfluxServer;

/// What the HTTP front needs besides the control plane.
#[derive(Clone)]
pub struct ServeOptions {
    pub legacy: LegacyOptions,
    /// Bearer token every RPC and legacy call must carry, if set.
    pub token: Option<String>,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
}

const SERVICE_NAME: &str = "clusterflux.v1.Clusterflux";

/// Builds the whole HTTP application.
pub fn app(
    plane: Arc<ControlPlane>,
    opts: &ServeOptions,
    health: HealthServer<impl Health>,
    shutdown: CancellationToken,
) -> Result<Router, tonic_reflection::server::Error> {
    // Health is described too, so `grpcurl HOST:PORT grpc.health.v1.Health/Check`
    // works with no proto files at hand.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // Room for a catalog of the full limit plus the request's other fields.
    let grpc_limit = opts.max_message_bytes + 64 * 1024;
    let clusterflux = GrpcMetricsLayer::new(plane.metrics.clone()).layer(WatchMeta::new(
        plane.clone(),
        grpc_limit,
        ClusterfluxServer::new(GrpcService::new(plane.clone()))
            .max_decoding_message_size(grpc_limit)
            .max_encoding_message_size(grpc_limit),
    ));

    let app = tonic::service::Routes::new(clusterflux)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .into_axum_router()
        .merge(legacy::router(
            plane.clone(),
            opts.legacy.clone(),
            shutdown.clone(),
        ))
        .merge(console::data_router(plane.clone(), shutdown))
        .route("/metrics", get(metrics).with_state(plane))
        .layer(middleware::from_fn_with_state(
            opts.token.clone().map(Arc::new),
            authorize,
        ))
        // After the token check: the console's page holds no data.
        .merge(console::page_router())
        .fallback(not_found)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        // Outermost, so no trace or log ever shows the token.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]));
    Ok(app)
}

/// Paths that need no token, so probes and scrapers need no secret.
const OPEN_PATHS: [&str; 3] = ["/grpc.health.v1.", "/grpc.reflection.", "/metrics"];

/// Refuses calls without the configured bearer token, except on [`OPEN_PATHS`].
async fn authorize(
    State(token): State<Option<Arc<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let Some(token) = token.filter(|_| !OPEN_PATHS.iter().any(|p| path.starts_with(p))) else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let msg = if given.is_some() {
        "invalid bearer token"
    } else {
        "missing bearer token: send 'authorization: Bearer <token>'"
    };
    if is_grpc(&request) {
        tonic::Status::unauthenticated(msg).into_http()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": msg })),
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn not_found(request: Request) -> Response {
    if is_grpc(&request) {
        return tonic::Status::unimplemented(format!("unknown method {}", request.uri().path()))
            .into_http();
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": format!("no route for {} {}", request.method(), request.uri().path()) })),
    )
        .into_response()
}

async fn metrics(State(plane): State<Arc<ControlPlane>>) -> Response {
    plane.refresh_gauges().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        plane.metrics.render(),
    )
        .into_response()
}

/// Keeps gRPC health in step with the store: NOT_SERVING while it cannot be
/// reached. Runs until shutdown.
pub async fn track_health(
    plane: Arc<ControlPlane>,
    reporter: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let status = if plane.ready().await {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            tracing::info!(?status, "health changed");
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            last = Some(status);
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                reporter.set_service_status("", ServingStatus::NotServing).await;
                reporter.set_service_status(SERVICE_NAME, ServingStatus::NotServing).await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
