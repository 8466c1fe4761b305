//! The `clusterflux.v1.Clusterflux` gRPC service: a translation of
//! [`ControlPlane`] calls to protobuf messages and status codes.

use std::sync::Arc;
use std::time::Instant;

use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tower::{Layer, Service};

use crate::http_serve::PeerAddr;
#[cfg(doc)]
use crate::manager::encoded;
use crate::manager::metrics::Metrics;
use crate::manager::plane::{
    self, CatalogPush, ControlPlane, Deletion, ListedNode, PlaneError, Registration,
};
use crate::manager::roster::Listing;
use crate::manager::store::{CasOutcome, HistoryEntry, Snapshot, SyncReport};
use crate::proto::{self, clusterflux_server::Clusterflux, push_meta_response};
use crate::telemetry::with_causes;

/// The gRPC face of the control plane.
pub struct GrpcService {
    plane: Arc<ControlPlane>,
}

impl GrpcService {
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        GrpcService { plane }
    }
}

/// A handler's plane result as a gRPC answer.
async fn answer<T>(
    fut: impl std::future::Future<Output = Result<T, PlaneError>>,
) -> Result<Response<T>, Status> {
    fut.await.map(Response::new).map_err(Status::from)
}

/// The methods of the service, the only values of the `method` label (an
/// unknown path must not grow the metric without bound).
const METHODS: [&str; 13] = [
    "Register",
    "Heartbeat",
    "Deregister",
    "ListNodes",
    "WatchNodes",
    "ListClusters",
    "GetMeta",
    "WatchMeta",
    "PushMeta",
    "ListHistory",
    "GetVersion",
    "RestoreVersion",
    "DeleteCluster",
];

/// Counts every call of the wrapped gRPC service in
/// `cflux_requests_total{layer="grpc"}` and its latency (until the answer's
/// headers) in `cflux_request_duration_seconds`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: NamedService> NamedService for GrpcMetrics<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + NamedService,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|m| METHODS.iter().copied().find(|known| *known == m));
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(method) = method {
                // A refused call is answered trailers-only, its status in the
                // headers; an answered one carries OK in its trailers.
                let code = response
                    .headers()
                    .get("grpc-status")
                    .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()));
                metrics.observe("grpc", method, &format!("{code:?}"), start.elapsed());
            }
            Ok(response)
        })
    }
}

/// Keeps the open node-watch gauge right however a stream ends.
struct NodeWatchGauge(Arc<ControlPlane>);

impl Drop for NodeWatchGauge {
    fn drop(&mut self) {
        self.0.metrics.node_watch_streams.dec();
    }
}

impl From<PlaneError> for Status {
    fn from(e: PlaneError) -> Self {
        match e {
            PlaneError::InvalidArgument(m) => Status::invalid_argument(m),
            PlaneError::NotFound(m) => Status::not_found(m),
            PlaneError::Store(e) if e.is_unavailable() => Status::unavailable(with_causes(&e)),
            PlaneError::Store(e) => Status::internal(with_causes(&e)),
        }
    }
}

fn node_message(n: ListedNode) -> proto::Node {
    let r = n.status.record;
    proto::Node {
        node_id: r.node_id,
        cluster: r.cluster,
        hostname: r.hostname,
        ips: r.ips,
        bind_address: r.bind_address,
        http_addr: r.http_addr,
        version: r.version,
        alive: n.status.alive,
        registered_at_ms: r.registered_at_ms,
        last_heartbeat_ms: r.last_heartbeat_ms,
        sync: r.sync.map(|s| proto::SyncState {
            applied_version: s.applied_version,
            applied_history_id: s.applied_history_id,
            sync_error: s.sync_error,
            catch_up: s.catch_up,
            queued_statements: s.queued_statements,
        }),
        lag: n.lag,
    }
}

/// A snapshot as its protobuf message.
pub(crate) fn snapshot_message(s: &Snapshot) -> proto::MetaSnapshot {
    proto::MetaSnapshot {
        cluster: s.cluster.clone(),
        version: s.version,
        data: s.data.clone(),
        history_id: s.history_id.clone(),
    }
}

fn push_answer(outcome: CasOutcome) -> proto::PushMetaResponse {
    proto::PushMetaResponse {
        result: Some(match outcome {
            CasOutcome::Accepted(v) => push_meta_response::Result::AcceptedVersion(v),
            CasOutcome::Conflict(s) => push_meta_response::Result::Conflict(snapshot_message(&s)),
        }),
    }
}

fn change_message(e: HistoryEntry) -> proto::CatalogChange {
    proto::CatalogChange {
        version: e.version,
        history_id: e.history_id,
        changed_at_ms: e.note.changed_at_ms,
        node_id: e.note.node_id,
        hostname: e.note.hostname,
        layer: e.note.layer,
        summary: e.note.summary,
        size_bytes: e.size_bytes,
        restored_from: e.note.restored_from,
    }
}

#[tonic::async_trait]
impl Clusterflux for GrpcService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map(|p| p.0.ip().to_string());
        let r = request.into_inner();
        answer(async {
            let node = self
                .plane
                .register(Registration {
                    cluster: r.cluster,
                    node_id: r.node_id,
                    hostname: r.hostname,
                    ips: r.ips,
                    http_addr: r.http_addr,
                    version: r.version,
                    bind_address: peer.unwrap_or_default(),
                })
                .await?;
            Ok(proto::RegisterResponse {
                node_id: node.node_id,
                bind_address: node.bind_address,
                heartbeat_interval_ms: self.plane.limits.heartbeat_interval.as_millis() as u64,
                ttl_ms: self.plane.limits.node_ttl.as_millis() as u64,
            })
        })
        .await
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            let sync = r.sync.map(|s| SyncReport {
                applied_version: s.applied_version,
                applied_history_id: s.applied_history_id,
                sync_error: s.sync_error,
                catch_up: s.catch_up,
                queued_statements: s.queued_statements,
            });
            self.plane.heartbeat(&r.cluster, &r.node_id, sync).await?;
            Ok(proto::HeartbeatResponse {})
        })
        .await
    }

    async fn deregister(
        &self,
        request: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            self.plane.deregister(&r.cluster, &r.node_id).await?;
            Ok(proto::DeregisterResponse {})
        })
        .await
    }

    async fn list_nodes(
        &self,
        request: Request<proto::ListNodesRequest>,
    ) -> Result<Response<proto::ListNodesResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            let nodes = self.plane.list_nodes_with_lag(&r.cluster).await?;
            Ok(proto::ListNodesResponse {
                nodes: nodes.into_iter().map(node_message).collect(),
            })
        })
        .await
    }

    type WatchNodesStream =
        futures::stream::BoxStream<'static, Result<proto::WatchNodesResponse, Status>>;

    async fn watch_nodes(
        &self,
        request: Request<proto::WatchNodesRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        use futures::StreamExt;
        let r = request.into_inner();
        let (first, sub) = self.plane.watch_nodes(&r.cluster).await?;
        self.plane.metrics.node_watch_streams.inc();
        let gauge = NodeWatchGauge(self.plane.clone());
        tracing::debug!(cluster = %r.cluster, "node watch opened");
        let later = futures::stream::unfold((sub, gauge), |(mut sub, gauge)| async move {
            match sub.next().await? {
                Listing::Nodes(nodes) => Some((nodes, (sub, gauge))),
                // Only before the first list, which was sent already.
                Listing::Failed(_) => None,
            }
        });
        let lists = futures::stream::once(async move { first })
            .chain(later)
            .map(|nodes| {
                Ok(proto::WatchNodesResponse {
                    nodes: nodes.iter().cloned().map(node_message).collect(),
                })
            });
        Ok(Response::new(lists.boxed()))
    }

    async fn list_clusters(
        &self,
        _request: Request<proto::ListClustersRequest>,
    ) -> Result<Response<proto::ListClustersResponse>, Status> {
        answer(async {
            let clusters = self.plane.list_clusters().await?;
            Ok(proto::ListClustersResponse {
                clusters: clusters
                    .into_iter()
                    .map(|c| proto::ClusterInfo {
                        name: c.name,
                        version: c.version,
                        nodes: c.nodes,
                        alive_nodes: c.alive_nodes,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_meta(
        &self,
        request: Request<proto::GetMetaRequest>,
    ) -> Result<Response<proto::MetaSnapshot>, Status> {
        let r = request.into_inner();
        answer(async { Ok(snapshot_message(&self.plane.get_meta(&r.cluster).await?)) }).await
    }

    type WatchMetaStream = futures::stream::Empty<Result<proto::MetaSnapshot, Status>>;

    /// Not reached: [`encoded::WatchMeta`] answers `WatchMeta` in front of
    /// this service, sending each snapshot encoded once for every stream.
    async fn watch_meta(
        &self,
        _request: Request<proto::WatchMetaRequest>,
    ) -> Result<Response<Self::WatchMetaStream>, Status> {
        Err(Status::internal(
            "WatchMeta is answered by the shared-frame fan-out",
        ))
    }

    async fn push_meta(
        &self,
        request: Request<proto::PushMetaRequest>,
    ) -> Result<Response<proto::PushMetaResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            let outcome = self
                .plane
                .push(CatalogPush {
                    cluster: r.cluster,
                    expected_version: r.expected_version,
                    expected_history_id: r.expected_history_id,
                    data: r.data,
                    node_id: r.node_id,
                    layer: plane::Layer::Grpc,
                })
                .await?;
            Ok(push_answer(outcome))
        })
        .await
    }

    async fn list_history(
        &self,
        request: Request<proto::ListHistoryRequest>,
    ) -> Result<Response<proto::ListHistoryResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            let entries = self.plane.history(&r.cluster, r.limit as usize).await?;
            Ok(proto::ListHistoryResponse {
                changes: entries.into_iter().map(change_message).collect(),
            })
        })
        .await
    }

    async fn get_version(
        &self,
        request: Request<proto::GetVersionRequest>,
    ) -> Result<Response<proto::MetaSnapshot>, Status> {
        let r = request.into_inner();
        answer(async {
            Ok(snapshot_message(
                &self.plane.version(&r.cluster, r.version).await?,
            ))
        })
        .await
    }

    async fn restore_version(
        &self,
        request: Request<proto::RestoreVersionRequest>,
    ) -> Result<Response<proto::PushMetaResponse>, Status> {
        let r = request.into_inner();
        answer(async {
            let outcome = self
                .plane
                .restore(&r.cluster, r.version, r.expected_version)
                .await?;
            Ok(push_answer(outcome))
        })
        .await
    }

    async fn delete_cluster(
        &self,
        request: Request<proto::DeleteClusterRequest>,
    ) -> Result<Response<proto::DeleteClusterResponse>, Status> {
        let r = request.into_inner();
        match self.plane.delete_cluster(&r.cluster).await? {
            Deletion::Removed(removed) => Ok(Response::new(proto::DeleteClusterResponse {
                removed_nodes: removed.nodes,
                removed_versions: removed.versions,
                version: removed.version,
            })),
            Deletion::Refused { alive } => {
                let names: Vec<String> = alive
                    .iter()
                    .map(|n| format!("{} ({})", n.node_id, n.hostname))
                    .collect();
                Err(Status::failed_precondition(format!(
                    "cluster {:?} has {} alive node(s): {}; stop their agents and wait for their TTL to run out",
                    r.cluster,
                    alive.len(),
                    names.join(", ")
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::store::StoreError;

    #[test]
    fn a_store_failure_reaches_the_caller_with_its_cause_and_retry_code() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let e = PlaneError::from(StoreError::unavailable("etcd get").caused_by(refused));
        let status = Status::from(e);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "store unavailable: etcd get: refused here"
        );

        let corrupt = StoreError::internal("corrupt node record")
            .caused_by(serde_json::from_slice::<u8>(b"x").unwrap_err());
        let status = Status::from(PlaneError::from(corrupt));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status
                .message()
                .starts_with("store error: corrupt node record: expected value"),
            "{}",
            status.message()
        );
    }
}
