//! `cflux::Client`: makes a node of whatever [`MetaClient`] it wraps.
//!
//! Two loops run until shutdown:
//! - membership: register (reusing the node ID kept on disk), then heartbeat
//!   at the interval the manager hands out, each heartbeat carrying the sync
//!   state the sync task last reported; `NOT_FOUND` registers again.
//! - sync: one task owns the catalog state ([`crate::client::sync`]).
//!
//! Every manager call goes through the retry layer; a call that still fails
//! is logged and counted, and the loop carries on — the node keeps serving,
//! and the base on disk plus the node's own durable metadata mean no local
//! change is forgotten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::client::call::CallError;
use crate::client::health::NodeHealth;
use crate::client::manager::{ManagerClient, ManagerSettings};
use crate::client::meta::MetaClient;
use crate::client::metrics::NodeMetrics;
use crate::client::push_now::PushNow;
use crate::client::state::StateDir;
use crate::client::sync::SyncTask;
use crate::influx::catalog::Catalog;
use crate::proto;

/// The heartbeat interval until the manager hands one out.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// What the node says about itself, and where it keeps its state.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub cluster: String,
    pub hostname: String,
    pub ips: Vec<String>,
    /// The node's InfluxDB HTTP address as others should reach it.
    pub http_addr: String,
    /// Software versions reported at registration.
    pub version: String,
    pub state_dir: std::path::PathBuf,
    /// How often the local catalog is compared with the base even without a
    /// change notification (a safety net).
    pub resync_interval: Duration,
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("state directory")]
    State(#[from] std::io::Error),
    #[error("manager settings")]
    Manager(#[from] CallError),
}

/// A node of a Clusterflux cluster, wrapping its metadata owner `M`.
pub struct Client<M> {
    pub(crate) meta: Arc<M>,
    pub(crate) manager: ManagerClient,
    pub(crate) settings: NodeSettings,
    pub(crate) state: StateDir,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) health: NodeHealth,
    observed: watch::Sender<Option<Arc<Catalog>>>,
    /// What the sync task last reported (`None` before it started), read by
    /// every heartbeat.
    sync_state: watch::Sender<Option<proto::SyncState>>,
    /// Why the node needs catch-up (empty: it does not), as the agent last
    /// found it; every heartbeat carries it in its sync state.
    catch_up: std::sync::Mutex<String>,
    /// Read from the state directory once (when the client starts running),
    /// then kept here.
    node_id: watch::Sender<Option<String>>,
    /// The heartbeat interval the manager last handed out, in ms.
    heartbeat_ms: AtomicU64,
    /// Pushes on request, served by the sync task.
    pub(crate) push_now: Arc<PushNow>,
    /// Counts the statements that change points queued for other nodes,
    /// when a heartbeat is sent (set by the agent with `--replicate`).
    queued_statements: std::sync::OnceLock<QueuedStatements>,
}

/// Counts the statements a node has queued for others.
type QueuedStatements = Box<dyn Fn() -> u64 + Send + Sync>;

impl<M: MetaClient> Client<M> {
    pub fn new(
        settings: NodeSettings,
        manager: &ManagerSettings,
        meta: Arc<M>,
    ) -> Result<Self, ClientError> {
        Self::with_manager(settings, ManagerClient::new(manager)?, meta)
    }

    /// A client whose calls go to `manager`, however it was built.
    pub fn with_manager(
        settings: NodeSettings,
        manager: ManagerClient,
        meta: Arc<M>,
    ) -> Result<Self, ClientError> {
        Ok(Client {
            meta,
            manager,
            state: StateDir::open(&settings.state_dir)?,
            settings,
            metrics: Arc::new(NodeMetrics::new()),
            health: NodeHealth::new(),
            observed: watch::channel(None).0,
            sync_state: watch::channel(None).0,
            catch_up: std::sync::Mutex::default(),
            node_id: watch::channel(None).0,
            heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64),
            push_now: Arc::default(),
            queued_statements: std::sync::OnceLock::new(),
        })
    }

    /// The node's catalog as the sync task last read it from the metadata
    /// owner (`None` before the first read, which is the sync task's first
    /// step). It moves when the node's own metadata changes — a local change
    /// or an applied cluster catalog — and never shows half an apply, since
    /// the sync task does not read while it applies. The agent's front door
    /// checks passwords against its users.
    pub fn observed_catalog(&self) -> watch::Receiver<Option<Arc<Catalog>>> {
        self.observed.subscribe()
    }

    pub(crate) fn observe(&self, local: &Catalog) {
        self.observed.send_if_modified(|seen| {
            if seen.as_deref() == Some(local) {
                return false;
            }
            *seen = Some(Arc::new(local.clone()));
            true
        });
    }

    /// What the node reports about its sync with each heartbeat: the
    /// version and history it applied, and why its last step failed.
    pub fn sync_state(&self) -> watch::Receiver<Option<proto::SyncState>> {
        self.sync_state.subscribe()
    }

    /// Why the node needs catch-up, for the next heartbeats (empty: it
    /// does not), as one line of at most 512 bytes.
    pub fn report_catch_up(&self, reason: &str) {
        *self.catch_up.lock().unwrap_or_else(|e| e.into_inner()) =
            crate::names::sync_error_line(reason);
    }

    /// How the heartbeats count the statements that change points the node
    /// has queued for other nodes (`cfluxctl status` shows nodes that may
    /// differ by a deletion on its way); set once, later calls are ignored.
    pub fn count_queued_statements_with(&self, count: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.queued_statements.set(Box::new(count));
    }

    /// Where the node's metadata is pushed on request (see [`PushNow`]).
    pub fn push_now(&self) -> Arc<PushNow> {
        self.push_now.clone()
    }

    pub(crate) fn report_sync_state(&self, state: proto::SyncState) {
        self.sync_state.send_if_modified(|last| {
            if last.as_ref() == Some(&state) {
                return false;
            }
            *last = Some(state);
            true
        });
    }

    /// The wrapped metadata owner: every operation of the node's own goes to it.
    pub fn meta(&self) -> &Arc<M> {
        &self.meta
    }

    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    /// What keeps the node from serving its cluster, for `/health`.
    pub fn health(&self) -> &NodeHealth {
        &self.health
    }

    pub fn cluster(&self) -> &str {
        &self.settings.cluster
    }

    /// The node's ID, once it has registered (kept across restarts).
    pub fn node_id(&self) -> Option<String> {
        self.node_id.borrow().clone()
    }

    /// The nodes of this node's cluster, as the manager lists them.
    pub async fn cluster_nodes(&self) -> Result<Vec<proto::Node>, CallError> {
        self.manager.list_nodes(&self.settings.cluster).await
    }

    /// The nodes of this node's cluster, followed: the current list first,
    /// then the whole list again whenever its membership changes
    /// (`WatchNodes`). [`CallError::Unsupported`] from a manager that does
    /// not offer it (an older version, the legacy protocol).
    pub async fn watch_cluster_nodes(
        &self,
    ) -> Result<crate::client::call::NodeListStream, CallError> {
        self.manager.watch_nodes(&self.settings.cluster).await
    }

    /// The heartbeat interval the manager handed out (5 s until it has).
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// Runs membership and sync until `shutdown` is cancelled, in a span
    /// that carries the cluster and, once known, the node ID.
    #[tracing::instrument(name = "node", skip_all, fields(cluster = %self.settings.cluster, node = tracing::field::Empty))]
    pub async fn run(&self, shutdown: CancellationToken) {
        if self.node_id().is_none() {
            // An unreadable ID file is a node registering anew, not a node
            // that cannot start.
            let stored = self.state.node_id().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the node ID; registering as a new node");
                None
            });
            self.node_id.send_replace(stored);
        }
        let span = tracing::Span::current();
        if let Some(id) = self.node_id() {
            span.record("node", id.as_str());
        }
        tokio::join!(
            self.membership(shutdown.clone(), &span)
                .instrument(tracing::info_span!("membership")),
            SyncTask::run(self, shutdown).instrument(tracing::info_span!("sync")),
        );
    }

    /// Registration and heartbeats; `node_span` learns the node ID.
    async fn membership(&self, shutdown: CancellationToken, node_span: &tracing::Span) {
        let mut interval = DEFAULT_HEARTBEAT;
        // A failed call is tried again sooner than the next heartbeat would
        // be, but never later.
        let mut failed = membership_backoff(interval);
        let mut node_id: Option<String> = None;
        loop {
            let step = match &node_id {
                None => self.register().await.map(|(id, every)| {
                    node_span.record("node", id.as_str());
                    tracing::info!("registered");
                    interval = every;
                    self.heartbeat_ms
                        .store(every.as_millis() as u64, Ordering::Relaxed);
                    failed = membership_backoff(every);
                    node_id = Some(id);
                }),
                Some(id) => {
                    let catch_up = self
                        .catch_up
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    let sync = self.sync_state.borrow().clone().map(|s| proto::SyncState {
                        catch_up,
                        queued_statements: self.queued_statements.get().map_or(0, |count| count()),
                        ..s
                    });
                    match self
                        .manager
                        .heartbeat(&self.settings.cluster, id, sync)
                        .await
                    {
                        Err(CallError::NotFound { .. }) => {
                            tracing::warn!("manager does not know this node; registering again");
                            node_id = None;
                            continue;
                        }
                        other => other,
                    }
                }
            };
            let wait = match step {
                Ok(()) => {
                    failed.reset();
                    self.health.manager_answered(interval);
                    interval
                }
                Err(e) => {
                    self.metrics.failure("heartbeat");
                    let wait = failed.next_wait();
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        ?wait,
                        "membership call failed; trying again"
                    );
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn register(&self) -> Result<(String, Duration), CallError> {
        let known = self.node_id();
        let s = &self.settings;
        let answer = self
            .manager
            .register(proto::RegisterRequest {
                cluster: s.cluster.clone(),
                node_id: known.clone().unwrap_or_default(),
                hostname: s.hostname.clone(),
                ips: s.ips.clone(),
                http_addr: s.http_addr.clone(),
                version: s.version.clone(),
            })
            .await?;
        if known.as_deref() != Some(answer.node_id.as_str()) {
            if let Err(e) = self.state.set_node_id(&answer.node_id).await {
                tracing::error!(error = %e, "cannot save the node ID; a restart will register a new node");
            }
            self.node_id.send_replace(Some(answer.node_id.clone()));
        }
        let every = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
        Ok((answer.node_id, every))
    }
}

/// Waits after failed membership calls: from a second (or the interval, if
/// shorter) doubling up to the heartbeat interval.
fn membership_backoff(interval: Duration) -> Backoff {
    Backoff::new(Duration::from_secs(1).min(interval), interval)
}
