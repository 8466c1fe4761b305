//! `cflux::Client`: makes a node of whatever [`MetaClient`] it wraps.
//!
//! Two loops run until shutdown:
//! - membership: register (reusing the node ID kept on disk), then heartbeat
//!   at the interval the manager hands out; `NOT_FOUND` registers again.
//! - sync: one task owns the catalog state. It watches the cluster's catalog
//!   (gRPC `WatchMeta` or the legacy long poll) and the node's local changes,
//!   and reconciles them: newer remote catalogs are applied at once, local
//!   changes are pushed with compare-and-swap, and a conflict is resolved by
//!   the three-way merge ([`crate::influx::merge`]) against the last synced
//!   base, applied locally and pushed again. One task means no two
//!   reconciliations ever interleave.
//!
//! Every manager call goes through the retry layer; a call that still fails
//! is logged and counted, and the loop carries on — the node keeps serving,
//! and the base on disk plus the node's own durable metadata mean no local
//! change is forgotten.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::call::{CallError, SnapshotStream};
use crate::client::manager::{ManagerClient, ManagerSettings, Pushed};
use crate::client::meta::{MetaClient, MetaError};
use crate::client::metrics::NodeMetrics;
use crate::client::state::{StateDir, SyncedBase};
use crate::influx::catalog::Catalog;
use crate::influx::merge::merge;
use crate::proto;

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
    #[error("state directory: {0}")]
    State(#[from] std::io::Error),
    #[error("manager settings: {0}")]
    Manager(#[from] CallError),
}

/// Why one reconciliation step failed (it is retried later).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("catalog is not valid meta.Data: {0}")]
    Decode(String),
    #[error("saving the synced base: {0}")]
    State(#[from] std::io::Error),
    #[error("still conflicting after {0} rounds")]
    Contended(usize),
}

/// A node of a Clusterflux cluster, wrapping its metadata owner `M`.
pub struct Client<M> {
    meta: Arc<M>,
    manager: ManagerClient,
    settings: NodeSettings,
    state: StateDir,
    metrics: Arc<NodeMetrics>,
    observed: watch::Sender<Option<Arc<Catalog>>>,
    /// Read from the state directory once, then kept here.
    node_id: std::sync::Mutex<Option<String>>,
}

/// Conflict rounds before a push gives up until the next event.
const MAX_ROUNDS: usize = 16;

/// The cluster-wide part of a catalog as `meta.Data` bytes: what travels.
fn encode(catalog: &Catalog) -> Bytes {
    Bytes::from(catalog.to_meta_bytes())
}

/// The synced base as the sync task holds it: decoded once, not per event.
struct Synced {
    version: u64,
    /// `None`: no base yet (first join, or a manager that lost its state).
    catalog: Option<Catalog>,
}

fn decode(bytes: &[u8]) -> Result<Catalog, SyncError> {
    if bytes.is_empty() {
        return Ok(Catalog::default());
    }
    Catalog::from_meta_bytes(bytes).map_err(|e| SyncError::Decode(e.to_string()))
}

impl<M: MetaClient> Client<M> {
    pub fn new(
        settings: NodeSettings,
        manager: &ManagerSettings,
        meta: Arc<M>,
    ) -> Result<Self, ClientError> {
        let state = StateDir::open(&settings.state_dir)?;
        // An unreadable ID file is a node registering anew, not a node that
        // cannot start.
        let node_id = state.node_id().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the node ID; registering as a new node");
            None
        });
        Ok(Client {
            meta,
            manager: ManagerClient::new(manager)?,
            state,
            settings,
            metrics: Arc::new(NodeMetrics::new()),
            observed: watch::channel(None).0,
            node_id: std::sync::Mutex::new(node_id),
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

    fn observe(&self, local: &Catalog) {
        self.observed.send_if_modified(|seen| {
            if seen.as_deref() == Some(local) {
                return false;
            }
            *seen = Some(Arc::new(local.clone()));
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

    /// The node's ID, once it has registered (kept across restarts).
    pub fn node_id(&self) -> Option<String> {
        self.node_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs membership and sync until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        tokio::join!(self.membership(shutdown.clone()), self.sync(shutdown));
    }

    /// Registration and heartbeats.
    async fn membership(&self, shutdown: CancellationToken) {
        let mut interval = Duration::from_secs(5);
        let mut node_id: Option<String> = None;
        loop {
            let step = match &node_id {
                None => self.register().await.map(|(id, every)| {
                    interval = every;
                    node_id = Some(id);
                }),
                Some(id) => match self.manager.heartbeat(&self.settings.cluster, id).await {
                    Err(CallError::NotFound(_)) => {
                        tracing::warn!(node = %id, "manager does not know this node; registering again");
                        node_id = None;
                        continue;
                    }
                    other => other,
                },
            };
            if let Err(e) = step {
                self.metrics.failure("heartbeat");
                tracing::warn!(error = %e, "membership call failed; trying again at the next interval");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
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
            if let Err(e) = self.state.set_node_id(&answer.node_id) {
                tracing::error!(error = %e, "cannot save the node ID; a restart will register a new node");
            }
            *self.node_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer.node_id.clone());
        }
        tracing::info!(cluster = %s.cluster, node = %answer.node_id, "registered");
        let every = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
        Ok((answer.node_id, every))
    }

    /// The sync loop: watch, local changes, periodic resync.
    async fn sync(&self, shutdown: CancellationToken) {
        let mut base = self.load_base();
        self.metrics.set_version(base.version);
        let mut changes = self.meta.changes();
        let mut stream: Option<SnapshotStream> = None;
        let mut retry_wait = Duration::from_millis(200);
        // A cluster catalog that could not be applied (influxd down, say):
        // tried again at each resync, since the watch may send nothing new
        // for a long time.
        let mut unapplied: Option<proto::MetaSnapshot> = None;
        // Local changes made while the node was down are pushed first.
        self.step("push", self.reconcile(&mut base).await);
        loop {
            if stream.is_none() {
                match self
                    .manager
                    .watch_meta(&self.settings.cluster, base.version)
                    .await
                {
                    Ok(s) => {
                        stream = Some(s);
                        retry_wait = Duration::from_millis(200);
                    }
                    Err(e) => {
                        self.metrics.failure("watch");
                        tracing::warn!(error = %e, wait = ?retry_wait, "cannot watch the cluster catalog");
                    }
                }
            }
            let next = async {
                match stream.as_mut() {
                    Some(s) => s.next().await,
                    None => {
                        tokio::time::sleep(retry_wait).await;
                        None
                    }
                }
            };
            let mut arrived = None;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                item = next => match item {
                    Some(Ok(snapshot)) => arrived = Some(snapshot),
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "watch ended; reopening");
                        stream = None;
                    }
                    None => {
                        if stream.take().is_none() {
                            retry_wait = (retry_wait * 2).min(Duration::from_secs(5));
                        }
                    }
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        tracing::warn!("the metadata owner stopped reporting changes");
                        changes = self.meta.changes();
                    }
                    let r = self.reconcile(&mut base).await;
                    self.step("push", r);
                }
                _ = tokio::time::sleep(self.settings.resync_interval) => {
                    if let Some(snapshot) = unapplied.take() {
                        let r = self.on_remote(&mut base, snapshot.clone()).await;
                        unapplied = r.is_err().then_some(snapshot);
                        self.step("pull", r);
                    } else {
                        let r = self.reconcile(&mut base).await;
                        self.step("push", r);
                    }
                }
            }
            if let Some(mut snapshot) = arrived {
                // A burst of versions coalesces: only the newest is applied.
                let mut broken = false;
                if let Some(s) = stream.as_mut() {
                    while let Some(Some(item)) = s.next().now_or_never() {
                        match item {
                            Ok(newer) => snapshot = newer,
                            Err(e) => {
                                tracing::info!(error = %e, "watch ended; reopening");
                                broken = true;
                                break;
                            }
                        }
                    }
                }
                if broken {
                    stream = None;
                }
                let r = self.on_remote(&mut base, snapshot.clone()).await;
                unapplied = r.is_err().then_some(snapshot);
                self.step("pull", r);
            }
        }
    }

    fn step(&self, what: &'static str, result: Result<(), SyncError>) {
        if let Err(e) = result {
            self.metrics.failure(what);
            tracing::warn!(error = %e, "{what} failed; will try again");
        }
    }

    /// The base kept on disk; an unreadable one is a first join.
    fn load_base(&self) -> Synced {
        let stored = self.state.base().map_err(SyncError::from).and_then(|b| {
            Ok(Synced {
                version: b.version,
                catalog: b.catalog.as_deref().map(decode).transpose()?,
            })
        });
        stored.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the synced base; joining as a new node");
            Synced {
                version: 0,
                catalog: None,
            }
        })
    }

    fn save(&self, base: &mut Synced, version: u64, catalog: &Catalog) -> Result<(), SyncError> {
        self.state.set_base(&SyncedBase {
            version,
            catalog: Some(encode(catalog)),
        })?;
        *base = Synced {
            version,
            catalog: Some(catalog.clone()),
        };
        self.metrics.set_version(version);
        self.metrics.synced();
        Ok(())
    }

    /// A snapshot from the watch.
    async fn on_remote(&self, base: &mut Synced, s: proto::MetaSnapshot) -> Result<(), SyncError> {
        if s.version == base.version {
            return Ok(());
        }
        let s = if s.version < base.version {
            // Either a snapshot overtaken by this node's own accepted push, or
            // a manager that lost its state: only the manager's current
            // version tells them apart.
            let current = self.manager.get_meta(&self.settings.cluster).await?;
            if current.version >= base.version {
                return Ok(());
            }
            // Re-seed it from this node, merging as on a first join with
            // whatever it holds now.
            tracing::warn!(
                node_version = base.version,
                manager_version = current.version,
                "manager is behind this node; re-seeding it"
            );
            *base = Synced {
                version: current.version,
                catalog: None,
            };
            current
        } else {
            s
        };
        let remote = decode(&s.data)?;
        let local = self.meta.catalog().await?;
        self.observe(&local);
        let target = if base.catalog.as_ref() == Some(&local) {
            remote.clone()
        } else {
            self.merge(base, &local, &remote)
        };
        if target != local {
            self.meta.apply(&target).await?;
            self.metrics.pulled();
            tracing::info!(version = s.version, "applied the cluster catalog");
        }
        self.save(base, s.version, &remote)?;
        // Whatever of the local catalog the cluster does not have yet.
        self.reconcile(base).await
    }

    /// The three-way merge against the base, its warnings logged.
    fn merge(&self, base: &Synced, local: &Catalog, remote: &Catalog) -> Catalog {
        let m = merge(base.catalog.as_ref(), local, remote);
        for w in &m.warnings {
            tracing::warn!(cluster = %self.settings.cluster, "merge: {w}");
        }
        m.merged
    }

    /// Pushes local changes until the manager accepts them or nothing is left.
    async fn reconcile(&self, base: &mut Synced) -> Result<(), SyncError> {
        for _ in 0..MAX_ROUNDS {
            let local = self.meta.catalog().await?;
            self.observe(&local);
            if base.catalog.as_ref() == Some(&local) {
                return Ok(());
            }
            let pushed = self
                .manager
                .push_meta(proto::PushMetaRequest {
                    cluster: self.settings.cluster.clone(),
                    expected_version: base.version,
                    data: encode(&local),
                    node_id: self.node_id().unwrap_or_default(),
                })
                .await?;
            match pushed {
                Pushed::Accepted(v) => {
                    self.metrics.pushed(true);
                    tracing::info!(version = v, "pushed local catalog changes");
                    return self.save(base, v, &local);
                }
                Pushed::Conflict(s) => {
                    self.metrics.pushed(false);
                    tracing::info!(
                        expected = base.version,
                        current = s.version,
                        "push conflicted; merging"
                    );
                    let remote = decode(&s.data)?;
                    let merged = self.merge(base, &local, &remote);
                    if merged != local {
                        self.meta.apply(&merged).await?;
                        self.metrics.pulled();
                    }
                    self.save(base, s.version, &remote)?;
                }
            }
        }
        Err(SyncError::Contended(MAX_ROUNDS))
    }
}
