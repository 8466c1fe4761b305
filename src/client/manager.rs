//! `ManagerClient`: every call a node makes to its managers, through one tower
//! stack — the retry layer ([`crate::client::retry`]) around a failover
//! service that sends each attempt to the current manager and moves on to the
//! next one of the list when that manager is unreachable. The client holds
//! that stack as a boxed service of calls, so a test can put a scripted
//! manager in its place.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::client::call::{expect_reply, Call, CallError, NodeListStream, Reply, SnapshotStream};
use crate::client::grpc::GrpcTransport;
use crate::client::legacy::LegacyTransport;
use crate::client::retry::{RetryPolicy, RetrySettings};
use crate::client::tls;
use crate::proto;

/// Which protocol to speak to managers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// gRPC (`clusterflux.v1`), the default.
    Grpc,
    /// The original Clusterflux HTTP protocol, for legacy managers.
    Http,
    /// gRPC, falling back to the legacy protocol for a manager that does not speak it.
    Auto,
}

const UNDECIDED: u8 = 0;
const GRPC: u8 = 1;
const LEGACY: u8 = 2;

/// One manager and the protocol it speaks.
struct Endpoint {
    url: String,
    grpc: GrpcTransport,
    legacy: LegacyTransport,
    /// `UNDECIDED` only in auto mode, until the manager has answered.
    mode: AtomicU8,
}

impl Endpoint {
    async fn call(&self, call: Call) -> Result<Reply, CallError> {
        match self.mode.load(Ordering::Relaxed) {
            GRPC => self.grpc.call(call).await,
            LEGACY => self.legacy.call(call).await,
            _ => match self.grpc.call(call.clone()).await {
                Err(e) if e.is_transient() && self.legacy.speaks_legacy().await => {
                    tracing::info!(url = %self.url, "manager does not speak gRPC; using the legacy protocol");
                    self.mode.store(LEGACY, Ordering::Relaxed);
                    self.legacy.call(call).await
                }
                Err(e) => Err(e),
                Ok(reply) => {
                    self.mode.store(GRPC, Ordering::Relaxed);
                    Ok(reply)
                }
            },
        }
    }
}

/// Sends each call to the current manager; an unreachable manager makes the
/// next one current, so the retry layer's next attempt goes there.
#[derive(Clone)]
pub struct Failover {
    endpoints: Arc<[Endpoint]>,
    current: Arc<AtomicUsize>,
}

impl Service<Call> for Failover {
    type Response = Reply;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, CallError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let i = this.current.load(Ordering::Relaxed) % this.endpoints.len();
            let result = this.endpoints[i].call(call).await;
            if let Err(e) = &result {
                if e.is_transient() && this.endpoints.len() > 1 {
                    let next = (i + 1) % this.endpoints.len();
                    if this
                        .current
                        .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        tracing::warn!(from = %this.endpoints[i].url, to = %this.endpoints[next].url, error = e as &dyn std::error::Error, "failing over");
                    }
                }
            }
            result
        })
    }
}

/// How to reach the managers.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// Manager URLs (`http://host:port`, or `https://` for TLS), tried in order.
    pub endpoints: Vec<String>,
    pub transport: TransportKind,
    pub token: Option<String>,
    /// PEM file of the CA(s) `https://` managers are verified with, instead
    /// of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Per-call timeout (the original's was 5 s).
    pub timeout: Duration,
    pub retry: RetrySettings,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    Accepted(u64),
    Conflict(proto::MetaSnapshot),
}

/// Whatever answers a node's calls: the retry-around-failover stack, or a
/// test's scripted manager. `Sync`, so a client can be shared between tasks.
pub type ManagerService = BoxCloneSyncService<Call, Reply, CallError>;

/// The node's handle on its managers.
#[derive(Clone)]
pub struct ManagerClient {
    svc: ManagerService,
}

impl ManagerClient {
    pub fn new(s: &ManagerSettings) -> Result<Self, CallError> {
        if s.endpoints.is_empty() {
            return Err(CallError::refused("no manager endpoint configured"));
        }
        let mode = match s.transport {
            TransportKind::Grpc => GRPC,
            TransportKind::Http => LEGACY,
            TransportKind::Auto => UNDECIDED,
        };
        // The system's roots are loaded only when some manager needs them.
        let tls = if s.ca_file.is_some() || s.endpoints.iter().any(|e| e.starts_with("https://")) {
            tls::client_config(s.ca_file.as_deref())
        } else {
            tls::trust_nothing()
        }
        .map_err(|e| CallError::refused("cannot set up TLS to the managers").caused_by(e))?;
        let endpoints = s
            .endpoints
            .iter()
            .map(|url| {
                Ok(Endpoint {
                    url: url.clone(),
                    grpc: GrpcTransport::new(url, s.token.as_deref(), s.timeout, &tls)?,
                    legacy: LegacyTransport::new(url, s.token.as_deref(), s.timeout, &tls)?,
                    mode: AtomicU8::new(mode),
                })
            })
            .collect::<Result<Vec<_>, CallError>>()?;
        let failover = Failover {
            endpoints: endpoints.into(),
            current: Arc::new(AtomicUsize::new(0)),
        };
        Ok(Self::from_service(BoxCloneSyncService::new(
            RetryPolicy::layer(&s.retry).layer(failover),
        )))
    }

    /// A client whose calls `svc` answers.
    pub fn from_service(svc: ManagerService) -> Self {
        ManagerClient { svc }
    }

    async fn call(&self, call: Call) -> Result<Reply, CallError> {
        self.svc.clone().oneshot(call).await
    }

    pub async fn register(
        &self,
        r: proto::RegisterRequest,
    ) -> Result<proto::RegisterResponse, CallError> {
        expect_reply!(self.call(Call::Register(r)).await?, Registered)
    }

    /// Proves the node alive and reports its sync state (`None`: not known yet).
    pub async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        sync: Option<proto::SyncState>,
    ) -> Result<(), CallError> {
        let r = proto::HeartbeatRequest {
            cluster: cluster.into(),
            node_id: node_id.into(),
            sync,
        };
        self.call(Call::Heartbeat(r)).await.map(drop)
    }

    pub async fn deregister(&self, cluster: &str, node_id: &str) -> Result<(), CallError> {
        let r = proto::DeregisterRequest {
            cluster: cluster.into(),
            node_id: node_id.into(),
        };
        self.call(Call::Deregister(r)).await.map(drop)
    }

    pub async fn list_nodes(&self, cluster: &str) -> Result<Vec<proto::Node>, CallError> {
        let r = proto::ListNodesRequest {
            cluster: cluster.into(),
        };
        Ok(expect_reply!(self.call(Call::ListNodes(r)).await?, Nodes)?.nodes)
    }

    pub async fn list_clusters(&self) -> Result<Vec<proto::ClusterInfo>, CallError> {
        let r = proto::ListClustersRequest {};
        Ok(expect_reply!(self.call(Call::ListClusters(r)).await?, Clusters)?.clusters)
    }

    pub async fn get_meta(&self, cluster: &str) -> Result<proto::MetaSnapshot, CallError> {
        let r = proto::GetMetaRequest {
            cluster: cluster.into(),
        };
        expect_reply!(self.call(Call::GetMeta(r)).await?, Snapshot)
    }

    /// Compare-and-swap of the cluster's catalog.
    pub async fn push_meta(&self, r: proto::PushMetaRequest) -> Result<Pushed, CallError> {
        pushed(expect_reply!(self.call(Call::PushMeta(r)).await?, Pushed)?)
    }

    /// The kept versions of a cluster's catalog, newest first.
    pub async fn list_history(
        &self,
        cluster: &str,
        limit: u32,
    ) -> Result<Vec<proto::CatalogChange>, CallError> {
        let r = proto::ListHistoryRequest {
            cluster: cluster.into(),
            limit,
        };
        Ok(expect_reply!(self.call(Call::ListHistory(r)).await?, History)?.changes)
    }

    /// One kept version of a cluster's catalog.
    pub async fn get_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<proto::MetaSnapshot, CallError> {
        let r = proto::GetVersionRequest {
            cluster: cluster.into(),
            version,
        };
        expect_reply!(self.call(Call::GetVersion(r)).await?, Snapshot)
    }

    /// Publishes kept `version` again, if `expected_version` is current.
    pub async fn restore_version(
        &self,
        cluster: &str,
        version: u64,
        expected_version: u64,
    ) -> Result<Pushed, CallError> {
        let r = proto::RestoreVersionRequest {
            cluster: cluster.into(),
            version,
            expected_version,
        };
        pushed(expect_reply!(
            self.call(Call::RestoreVersion(r)).await?,
            Pushed
        )?)
    }

    /// Removes a cluster whose nodes are all dead, with its catalog and
    /// history; refused (naming them) while any node is alive.
    pub async fn delete_cluster(
        &self,
        cluster: &str,
    ) -> Result<proto::DeleteClusterResponse, CallError> {
        let r = proto::DeleteClusterRequest {
            cluster: cluster.into(),
        };
        expect_reply!(self.call(Call::DeleteCluster(r)).await?, Deleted)
    }

    /// Opens a watch on the nodes of `cluster` (every cluster when empty):
    /// the current list first, then the whole list again whenever its
    /// membership changes. Opening goes through the retry layer like every
    /// call; [`CallError::Unsupported`] from a manager that does not offer
    /// it (an older version, the legacy protocol): list instead.
    pub async fn watch_nodes(&self, cluster: &str) -> Result<NodeListStream, CallError> {
        let r = proto::WatchNodesRequest {
            cluster: cluster.into(),
        };
        expect_reply!(self.call(Call::WatchNodes(r)).await?, NodeWatch)
    }

    /// Opens a watch on the cluster's catalog from `version`.
    pub async fn watch_meta(
        &self,
        cluster: &str,
        version: u64,
    ) -> Result<SnapshotStream, CallError> {
        let r = proto::WatchMetaRequest {
            cluster: cluster.into(),
            version,
        };
        expect_reply!(self.call(Call::WatchMeta(r)).await?, Watch)
    }
}

/// A push's (or restore's) answer as a [`Pushed`].
fn pushed(reply: proto::PushMetaResponse) -> Result<Pushed, CallError> {
    use proto::push_meta_response::Result as R;
    match reply.result {
        Some(R::AcceptedVersion(v)) => Ok(Pushed::Accepted(v)),
        Some(R::Conflict(s)) => Ok(Pushed::Conflict(s)),
        None => Err(CallError::protocol("a push answered with no result")),
    }
}
