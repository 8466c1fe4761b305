//! The node's sync task: the one owner of the catalog state. It watches the
//! cluster's catalog (gRPC `WatchMeta` or the legacy long poll) and the
//! node's local changes, and reconciles them: newer remote catalogs are
//! applied at once, local changes are pushed with compare-and-swap, and a
//! conflict is resolved by the three-way merge ([`crate::influx::merge`])
//! against the last synced base, applied locally and pushed again. One task
//! means no two reconciliations ever interleave.
//!
//! The task is a struct with one method per event (a remote snapshot, a
//! local change, the resync tick, the end of the watch), so each can be
//! driven on its own against a scripted manager.

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::call::{CallError, SnapshotStream};
use crate::client::manager::Pushed;
use crate::client::meta::{MetaClient, MetaError, MetaIdentity};
use crate::client::node::Client;
use crate::client::state::SyncedBase;
use crate::influx::catalog::{Catalog, CatalogError};
use crate::influx::merge::merge;
use crate::names::sync_error_line;
use crate::proto;
use crate::telemetry::with_causes;

/// Conflict rounds before a push gives up until the next event.
const MAX_ROUNDS: usize = 16;

/// Why one reconciliation step failed (it is retried later).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the cluster catalog cannot be read")]
    Decode(#[from] CatalogError),
    #[error("the synced base on disk")]
    State(#[from] std::io::Error),
    #[error("still conflicting after {0} rounds")]
    Contended(usize),
}

/// The synced base as the sync task holds it: decoded once, not per event.
#[derive(Debug, Default)]
struct Synced {
    version: u64,
    /// `None`: no base yet (first join, replaced local metadata, or a
    /// manager that lost its state): the next reconciliation joins.
    catalog: Option<Catalog>,
    /// The history `version` belongs to; empty when unknown.
    history_id: String,
    /// The local metadata's identity when the base was agreed.
    identity: Option<MetaIdentity>,
}

/// What the sync task reacts to.
#[derive(Debug)]
enum Event {
    /// The watch sent a snapshot.
    Snapshot(proto::MetaSnapshot),
    /// The watch ended, cleanly or with an error.
    WatchEnded(Option<CallError>),
    /// The metadata owner reported a possible local change.
    LocalChange,
    /// Nothing happened for a resync interval.
    ResyncTick,
    /// The wait after a failed attempt to open the watch is over.
    ReopenDue,
    /// The wait after a failed apply is over.
    ApplyDue,
    /// Someone asked for the node's metadata to be pushed now.
    PushAsked,
    Shutdown,
}

/// The cluster-wide part of a catalog as `meta.Data` bytes: what travels.
fn encode(catalog: &Catalog) -> Bytes {
    Bytes::from(catalog.to_meta_bytes())
}

fn decode(bytes: &[u8]) -> Result<Catalog, SyncError> {
    if bytes.is_empty() {
        return Ok(Catalog::default());
    }
    Ok(Catalog::from_meta_bytes(bytes)?)
}

/// A cluster catalog that could not be applied, and when to try again.
#[derive(Debug)]
struct Unapplied {
    snapshot: proto::MetaSnapshot,
    due: tokio::time::Instant,
}

/// The sync task of one [`Client`].
pub(crate) struct SyncTask<'a, M> {
    client: &'a Client<M>,
    base: Synced,
    changes: watch::Receiver<u64>,
    /// Push requests ([`crate::client::push_now`]).
    push_requests: watch::Receiver<u64>,
    watch: Option<SnapshotStream>,
    /// Waits between failed attempts to open the watch.
    reopen: Backoff,
    /// How long to wait before the next attempt, after a failed one.
    reopen_wait: Duration,
    /// A cluster catalog that could not be applied (influxd down, a refused
    /// statement): tried again after a growing wait, not at every local
    /// change — a failed apply changes `meta.db` itself.
    unapplied: Option<Unapplied>,
    /// Waits between failed applies of the same catalog.
    apply_retry: Backoff,
    /// Whether the node's metadata was found to describe its server (checked
    /// once after start, before anything is pushed or applied).
    verified: bool,
    /// Why the last step failed, as heartbeats report it; `None` when it
    /// succeeded.
    last_error: Option<String>,
}

impl<'a, M: MetaClient> SyncTask<'a, M> {
    /// Runs the task until `shutdown` is cancelled.
    pub(crate) async fn run(client: &'a Client<M>, shutdown: CancellationToken) {
        let mut task = SyncTask::new(client).await;
        task.on_start().await;
        loop {
            if task.watch.is_none() {
                task.open_watch().await;
            }
            task.report_sync();
            match task.next_event(&shutdown).await {
                Event::Shutdown => return,
                event => task.handle(event).await,
            }
        }
    }

    async fn new(client: &'a Client<M>) -> Self {
        let base = load_base(client).await;
        client.metrics.set_version(base.version);
        SyncTask {
            client,
            base,
            changes: client.meta.changes(),
            push_requests: client.push_now.requests(),
            watch: None,
            reopen: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            reopen_wait: Duration::ZERO,
            unapplied: None,
            apply_retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            verified: false,
            last_error: None,
        }
    }

    /// The node is in sync while the watch is open, the last step succeeded
    /// and nothing waits to be applied: then the manager or the metadata
    /// owner tells it of any change. The next heartbeat carries the base's
    /// version and the last step's error.
    fn report_sync(&self) {
        self.client.metrics.set_in_sync(
            self.watch.is_some() && self.last_error.is_none() && self.unapplied.is_none(),
        );
        self.client.report_sync_state(proto::SyncState {
            applied_version: self.base.version,
            applied_history_id: self.base.history_id.clone(),
            sync_error: self.last_error.clone().unwrap_or_default(),
            // The agent's own reports, added by each heartbeat.
            catch_up: String::new(),
            queued_statements: 0,
        });
    }

    /// Local changes made while the node was down are pushed first.
    async fn on_start(&mut self) {
        let r = self.reconcile().await;
        self.step("push", r);
    }

    async fn open_watch(&mut self) {
        let cluster = &self.client.settings.cluster;
        match self
            .client
            .manager
            .watch_meta(cluster, self.base.version)
            .await
        {
            Ok(s) => {
                self.watch = Some(s);
                self.reopen.reset();
            }
            Err(e) => {
                self.client.metrics.failure("watch");
                self.reopen_wait = self.reopen.next_wait();
                tracing::warn!(error = &e as &dyn std::error::Error, wait = ?self.reopen_wait, "cannot watch the cluster catalog");
            }
        }
    }

    /// Waits for the next event. The resync tick comes after a resync
    /// interval without any other event.
    async fn next_event(&mut self, shutdown: &CancellationToken) -> Event {
        let reopen_wait = self.reopen_wait;
        let watch = &mut self.watch;
        let watched = async move {
            match watch.as_mut() {
                Some(s) => match s.next().await {
                    Some(Ok(snapshot)) => Event::Snapshot(snapshot),
                    Some(Err(e)) => Event::WatchEnded(Some(e)),
                    None => Event::WatchEnded(None),
                },
                None => {
                    tokio::time::sleep(reopen_wait).await;
                    Event::ReopenDue
                }
            }
        };
        let apply_due = self.unapplied.as_ref().map(|u| u.due);
        let retry = async move {
            match apply_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            event = watched => event,
            () = retry => Event::ApplyDue,
            changed = self.changes.changed() => {
                if changed.is_err() {
                    tracing::warn!("the metadata owner stopped reporting changes");
                    self.changes = self.client.meta.changes();
                }
                Event::LocalChange
            }
            Ok(()) = self.push_requests.changed() => Event::PushAsked,
            _ = tokio::time::sleep(self.client.settings.resync_interval) => Event::ResyncTick,
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Snapshot(s) => self.on_snapshot(s).await,
            Event::WatchEnded(e) => self.on_watch_end(e),
            Event::LocalChange => self.on_local_change().await,
            Event::ResyncTick => self.on_resync_tick().await,
            Event::ApplyDue => self.on_apply_due().await,
            Event::PushAsked => self.on_push_asked().await,
            // The loop opens the watch again before the next event.
            Event::ReopenDue | Event::Shutdown => {}
        }
    }

    /// A snapshot from the watch; a burst of them coalesces, so only the
    /// newest one ready is applied.
    async fn on_snapshot(&mut self, mut snapshot: proto::MetaSnapshot) {
        if let Some(s) = self.watch.as_mut() {
            while let Some(Some(item)) = s.next().now_or_never() {
                match item {
                    Ok(newer) => snapshot = newer,
                    Err(e) => {
                        self.on_watch_end(Some(e));
                        break;
                    }
                }
            }
        }
        // A newer catalog replaces one still waiting to be applied.
        self.unapplied = None;
        self.apply_retry.reset();
        let r = self.on_remote(snapshot).await;
        self.step("pull", r);
    }

    fn on_watch_end(&mut self, error: Option<CallError>) {
        match error {
            Some(e) => tracing::info!(
                error = &e as &dyn std::error::Error,
                "watch ended; reopening"
            ),
            None => tracing::info!("watch ended; reopening"),
        }
        self.watch = None;
    }

    /// A local change is pushed; while a cluster catalog waits to be applied
    /// it is left to that retry (which pushes what is left afterwards), since
    /// the failed apply's own writes to the metadata wake this too.
    async fn on_local_change(&mut self) {
        if self.unapplied.is_some() {
            tracing::debug!("local change while an apply waits; the retry handles it");
            return;
        }
        let r = self.reconcile().await;
        self.step("push", r);
    }

    /// A push on request: the answer is the version that holds the node's
    /// metadata as it is now, unless the push failed or a cluster catalog
    /// still waits to be applied here.
    async fn on_push_asked(&mut self) {
        let ticket = *self.push_requests.borrow_and_update();
        self.on_local_change().await;
        let answer = match (&self.last_error, &self.unapplied) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(_)) => Err("a cluster catalog waits to be applied here".to_owned()),
            (None, None) => Ok(self.base.version),
        };
        self.client.push_now.answer(ticket, answer);
    }

    async fn on_resync_tick(&mut self) {
        self.on_local_change().await;
    }

    async fn on_apply_due(&mut self) {
        if let Some(u) = self.unapplied.take() {
            let r = self.on_remote(u.snapshot).await;
            self.step("pull", r);
        }
    }

    fn step(&mut self, what: &'static str, result: Result<(), SyncError>) {
        self.last_error = result
            .as_ref()
            .err()
            .map(|e| sync_error_line(&format!("{what}: {}", with_causes(e))));
        if let Err(e) = result {
            self.client.metrics.failure(what);
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "{what} failed; will try again"
            );
        }
    }

    async fn save(
        &mut self,
        version: u64,
        catalog: &Catalog,
        history_id: String,
    ) -> Result<(), SyncError> {
        let identity = self.client.meta.identity();
        self.client
            .state
            .set_base(&SyncedBase {
                version,
                catalog: Some(encode(catalog)),
                history_id: history_id.clone(),
                identity,
            })
            .await?;
        self.base = Synced {
            version,
            catalog: Some(catalog.clone()),
            history_id,
            identity,
        };
        self.client.metrics.set_version(version);
        Ok(())
    }

    /// Forgets the base: the next reconciliation joins as a new node would
    /// (the cluster's definitions win, local-only entities are added,
    /// nothing is dropped because of it).
    fn rejoin(&mut self) {
        self.base = Synced::default();
    }

    /// Whether `s` belongs to another history than the base (both known).
    fn history_changed(&self, s: &proto::MetaSnapshot) -> bool {
        let changed = !s.history_id.is_empty()
            && !self.base.history_id.is_empty()
            && s.history_id != self.base.history_id;
        if changed {
            self.client.metrics.history_changed();
            tracing::warn!(
                base_history = %self.base.history_id,
                cluster_history = %s.history_id,
                "the cluster catalog's history changed (a manager lost its state); rejoining: nothing is dropped because of it"
            );
        }
        changed
    }

    /// The node's catalog as it is now. Metadata replaced under the base
    /// (another `ClusterID`, an `Index` gone back) makes the node rejoin,
    /// and before anything is pushed or applied the owner checks that the
    /// metadata describes its server.
    async fn read_local(&mut self) -> Result<Catalog, SyncError> {
        let read = self.client.meta.catalog().await;
        self.client.health.meta_read(
            read.as_ref()
                .map(drop)
                .map_err(|e| e as &dyn std::error::Error),
        );
        let local = read?;
        if !self.verified {
            let verified = self.client.meta.verify().await;
            if let Err(e) = &verified {
                self.client.health.meta_read(Err(e));
                tracing::error!(
                    error = e as &dyn std::error::Error,
                    "refusing to push or apply anything"
                );
            }
            verified?;
            self.verified = true;
        }
        self.client.observe(&local);
        let (Some(now), Some(then)) = (self.client.meta.identity(), self.base.identity) else {
            return Ok(local);
        };
        let reason = if now.cluster_id != then.cluster_id {
            Some("cluster_id")
        } else if now.index < then.index {
            Some("index")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.client.metrics.metadata_replaced(reason);
            tracing::warn!(
                reason,
                synced_cluster_id = then.cluster_id,
                cluster_id = now.cluster_id,
                synced_index = then.index,
                index = now.index,
                "the local metadata was replaced since the last sync (a fresh or reinstalled server, or an older meta.db); rejoining: the cluster's definitions win, nothing is dropped because of it"
            );
            self.rejoin();
        }
        Ok(local)
    }

    /// Applies `target` (unless the node holds it already); a failure leaves
    /// `snapshot` to be applied again after a growing wait.
    async fn apply(
        &mut self,
        local: &Catalog,
        target: &Catalog,
        snapshot: &proto::MetaSnapshot,
    ) -> Result<(), SyncError> {
        // Holding the target already is no work, unless the last apply
        // failed: then the owner still counts that failure, and an apply of
        // nothing left to do is what ends it.
        if target == local && !self.client.health.apply_failing() {
            return Ok(());
        }
        let applied = self.client.meta.apply(target).await;
        self.client.health.applied(
            applied
                .as_ref()
                .map(drop)
                .map_err(|e| e as &dyn std::error::Error),
        );
        if applied.is_err() {
            let wait = self.apply_retry.next_wait();
            self.unapplied = Some(Unapplied {
                snapshot: snapshot.clone(),
                due: tokio::time::Instant::now() + wait,
            });
            tracing::info!(?wait, "the cluster catalog is applied again after a wait");
        } else {
            self.apply_retry.reset();
            self.client.metrics.pulled();
            tracing::info!(version = snapshot.version, "applied the cluster catalog");
        }
        Ok(applied?)
    }

    /// Applies a cluster catalog, then pushes what of the local one the
    /// cluster does not have yet.
    async fn on_remote(&mut self, s: proto::MetaSnapshot) -> Result<(), SyncError> {
        if self.history_changed(&s) {
            self.rejoin();
        }
        let s = if self.base.catalog.is_none() {
            s
        } else if s.version == self.base.version {
            if self.base.history_id.is_empty() && !s.history_id.is_empty() {
                // The first snapshot that names the history this node's
                // base belongs to.
                let catalog = self.base.catalog.clone().unwrap_or_default();
                self.save(s.version, &catalog, s.history_id).await?;
            }
            return Ok(());
        } else if s.version < self.base.version {
            // Either a snapshot overtaken by this node's own accepted push, or
            // a manager that lost its state: only the manager's current
            // version tells them apart.
            let current = self
                .client
                .manager
                .get_meta(&self.client.settings.cluster)
                .await?;
            if self.history_changed(&current) {
                self.rejoin();
            } else if current.version >= self.base.version {
                return Ok(());
            } else {
                // Re-seed it from this node, merging as on a first join with
                // whatever it holds now.
                tracing::warn!(
                    node_version = self.base.version,
                    manager_version = current.version,
                    "manager is behind this node; re-seeding it"
                );
                self.rejoin();
            }
            current
        } else {
            s
        };
        let remote = decode(&s.data)?;
        let local = self.read_local().await?;
        let target = if self.base.catalog.as_ref() == Some(&local) {
            remote.clone()
        } else {
            self.merge(&local, &remote)
        };
        self.apply(&local, &target, &s).await?;
        self.save(s.version, &remote, s.history_id).await?;
        self.reconcile().await
    }

    /// The three-way merge against the base (a first join without one),
    /// its warnings logged.
    fn merge(&self, local: &Catalog, remote: &Catalog) -> Catalog {
        let m = merge(self.base.catalog.as_ref(), local, remote);
        for w in &m.warnings {
            tracing::warn!("merge: {w}");
        }
        m.merged
    }

    /// Takes `s`, the cluster's catalog, as the base after merging the local
    /// one into it (against the base, or as a first join without one).
    async fn merge_in(&mut self, local: &Catalog, s: proto::MetaSnapshot) -> Result<(), SyncError> {
        let remote = decode(&s.data)?;
        let merged = self.merge(local, &remote);
        self.apply(local, &merged, &s).await?;
        self.save(s.version, &remote, s.history_id).await
    }

    /// Pushes local changes until the manager accepts them or nothing is left.
    /// Without a base, the cluster's catalog is fetched and merged first, so
    /// a push never lands over a cluster catalog the node has not seen.
    async fn reconcile(&mut self) -> Result<(), SyncError> {
        for _ in 0..MAX_ROUNDS {
            let local = self.read_local().await?;
            if self.base.catalog.is_none() {
                let current = self
                    .client
                    .manager
                    .get_meta(&self.client.settings.cluster)
                    .await?;
                tracing::info!(version = current.version, "joining the cluster catalog");
                self.merge_in(&local, current).await?;
                continue;
            }
            if self.base.catalog.as_ref() == Some(&local) {
                return Ok(());
            }
            let pushed = self
                .client
                .manager
                .push_meta(proto::PushMetaRequest {
                    cluster: self.client.settings.cluster.clone(),
                    expected_version: self.base.version,
                    data: encode(&local),
                    node_id: self.client.node_id().unwrap_or_default(),
                    expected_history_id: self.base.history_id.clone(),
                })
                .await?;
            match pushed {
                Pushed::Accepted(v) => {
                    self.client.metrics.pushed(true);
                    tracing::info!(version = v, "pushed local catalog changes");
                    let history = self.base.history_id.clone();
                    return self.save(v, &local, history).await;
                }
                Pushed::Conflict(s) => {
                    self.client.metrics.pushed(false);
                    tracing::info!(
                        expected = self.base.version,
                        current = s.version,
                        "push conflicted; merging"
                    );
                    // A manager behind the base lost its state or the
                    // cluster was deleted: re-seed it, never take its
                    // (emptier) catalog as the cluster's changes.
                    if self.history_changed(&s) || s.version < self.base.version {
                        self.rejoin();
                    }
                    self.merge_in(&local, s).await?;
                }
            }
        }
        Err(SyncError::Contended(MAX_ROUNDS))
    }
}

/// The base kept on disk; an unreadable one is a first join.
async fn load_base<M>(client: &Client<M>) -> Synced {
    let stored = match client.state.base().await {
        Ok(b) => b
            .catalog
            .as_deref()
            .map(decode)
            .transpose()
            .map(|catalog| Synced {
                version: b.version,
                catalog,
                history_id: b.history_id,
                identity: b.identity,
            }),
        Err(e) => Err(e.into()),
    };
    stored.unwrap_or_else(|e| {
        tracing::error!(
            error = &e as &dyn std::error::Error,
            "cannot read the synced base; joining as a new node"
        );
        Synced::default()
    })
}

#[cfg(test)]
mod tests {
    //! The sync task against a scripted manager (compare-and-swap as a real
    //! one does, plus whatever a test scripts: another node's pushes landing
    //! first, failures, a burst on the watch) and in-memory metadata.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use async_trait::async_trait;
    use futures::future::BoxFuture;
    use tower::util::BoxCloneSyncService;

    use super::*;
    use crate::client::call::{Call, Reply};
    use crate::client::manager::ManagerClient;
    use crate::client::meta::InMemoryMeta;
    use crate::client::node::NodeSettings;
    use crate::client::state::StateDir;
    use crate::influx::catalog::Database;

    const CLUSTER: &str = "test";

    fn catalog(databases: &[&str]) -> Catalog {
        let mut c = Catalog::default();
        for name in databases {
            c.databases
                .insert((*name).into(), Database::new(*name, "autogen"));
        }
        c
    }

    fn snapshot(version: u64, c: &Catalog) -> proto::MetaSnapshot {
        proto::MetaSnapshot {
            cluster: CLUSTER.into(),
            version,
            data: encode(c),
            ..Default::default()
        }
    }

    /// What the scripted manager answered to a push.
    #[derive(Debug, PartialEq, Eq)]
    enum PushAnswer {
        Accepted(u64),
        Conflict(u64),
    }

    #[derive(Default)]
    struct Script {
        version: u64,
        data: Bytes,
        /// The catalog's history; empty as from a manager that keeps none.
        history_id: String,
        /// The `expected_history_id` of every push.
        pushed_histories: Vec<String>,
        /// Another node's catalogs, one committed just before each coming
        /// push is handled.
        interference: VecDeque<Catalog>,
        /// Snapshots the next watch sends at once (it then stays open).
        watch: Vec<proto::MetaSnapshot>,
        /// Calls (by name) that fail as if the manager were down, once each.
        failures: Vec<&'static str>,
        calls: Vec<&'static str>,
        pushes: Vec<PushAnswer>,
    }

    /// A manager with compare-and-swap semantics, driven by a [`Script`].
    #[derive(Clone, Default)]
    struct ScriptedManager(Arc<Mutex<Script>>);

    impl ScriptedManager {
        fn at(version: u64, c: &Catalog) -> Self {
            let m = ScriptedManager::default();
            m.script(|s| {
                s.version = version;
                s.data = encode(c);
            });
            m
        }

        fn script<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
            f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }

        fn current(&self) -> (u64, Catalog) {
            self.script(|s| (s.version, decode(&s.data).unwrap()))
        }

        fn answer(&self, call: Call) -> Result<Reply, CallError> {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            s.calls.push(call.name());
            if let Some(i) = s.failures.iter().position(|f| *f == call.name()) {
                s.failures.remove(i);
                return Err(CallError::transient("scripted failure"));
            }
            let current = |s: &Script| proto::MetaSnapshot {
                cluster: CLUSTER.into(),
                version: s.version,
                data: s.data.clone(),
                history_id: s.history_id.clone(),
            };
            Ok(match call {
                Call::GetMeta(_) => Reply::Snapshot(current(&s)),
                Call::PushMeta(r) => {
                    if let Some(theirs) = s.interference.pop_front() {
                        s.version += 1;
                        s.data = encode(&theirs);
                    }
                    use proto::push_meta_response::Result as R;
                    s.pushed_histories.push(r.expected_history_id.clone());
                    let same_history =
                        r.expected_history_id.is_empty() || r.expected_history_id == s.history_id;
                    let result = if same_history && r.expected_version == s.version {
                        s.version += 1;
                        s.data = r.data;
                        let answer = PushAnswer::Accepted(s.version);
                        s.pushes.push(answer);
                        R::AcceptedVersion(s.version)
                    } else {
                        let answer = PushAnswer::Conflict(s.version);
                        s.pushes.push(answer);
                        R::Conflict(current(&s))
                    };
                    Reply::Pushed(proto::PushMetaResponse {
                        result: Some(result),
                    })
                }
                Call::WatchMeta(_) => {
                    let ready =
                        futures::stream::iter(std::mem::take(&mut s.watch).into_iter().map(Ok));
                    Reply::Watch(Box::pin(ready.chain(futures::stream::pending())))
                }
                other => return Err(CallError::refused(format!("not scripted: {other:?}"))),
            })
        }
    }

    impl tower::Service<Call> for ScriptedManager {
        type Response = Reply;
        type Error = CallError;
        type Future = BoxFuture<'static, Result<Reply, CallError>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, call: Call) -> Self::Future {
            let answer = self.answer(call);
            Box::pin(async move { answer })
        }
    }

    /// In-memory metadata that records what was applied to it and can be
    /// told to fail the next applies.
    #[derive(Default)]
    struct RecordingMeta {
        inner: InMemoryMeta,
        applied: Mutex<Vec<Catalog>>,
        failing_applies: Mutex<usize>,
    }

    impl RecordingMeta {
        fn holding(c: Catalog) -> Arc<Self> {
            Arc::new(RecordingMeta {
                inner: InMemoryMeta::new(c),
                ..RecordingMeta::default()
            })
        }

        fn applied(&self) -> Vec<Catalog> {
            self.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }
    }

    #[async_trait]
    impl MetaClient for RecordingMeta {
        async fn catalog(&self) -> Result<Catalog, MetaError> {
            self.inner.catalog().await
        }

        async fn apply(&self, target: &Catalog) -> Result<(), MetaError> {
            {
                let mut failing = self
                    .failing_applies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if *failing > 0 {
                    *failing -= 1;
                    return Err(MetaError::Unavailable("scripted failure".into()));
                }
            }
            self.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(target.clone());
            self.inner.apply(target).await
        }

        fn changes(&self) -> watch::Receiver<u64> {
            self.inner.changes()
        }

        fn identity(&self) -> Option<MetaIdentity> {
            self.inner.identity()
        }
    }

    /// A node whose synced base on disk is `base` (at `version`).
    struct Fixture {
        client: Client<RecordingMeta>,
        _dir: tempfile::TempDir,
    }

    async fn node(
        manager: &ScriptedManager,
        meta: Arc<RecordingMeta>,
        version: u64,
        base: Option<&Catalog>,
    ) -> Fixture {
        let base = SyncedBase {
            version,
            catalog: base.map(encode),
            ..SyncedBase::default()
        };
        node_at(manager, meta, &base).await
    }

    /// A node whose synced base on disk is `base`, history and identity too.
    async fn node_at(
        manager: &ScriptedManager,
        meta: Arc<RecordingMeta>,
        base: &SyncedBase,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        StateDir::open(dir.path())
            .unwrap()
            .set_base(base)
            .await
            .unwrap();
        let settings = NodeSettings {
            cluster: CLUSTER.into(),
            hostname: "scripted".into(),
            ips: Vec::new(),
            http_addr: String::new(),
            version: "test".into(),
            state_dir: dir.path().to_owned(),
            resync_interval: Duration::from_secs(3600),
        };
        let manager = ManagerClient::from_service(BoxCloneSyncService::new(manager.clone()));
        Fixture {
            client: Client::with_manager(settings, manager, meta).unwrap(),
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_manager_that_lost_its_state_is_reseeded_from_the_node() {
        let survivor = catalog(&["survivor"]);
        let manager = ScriptedManager::at(0, &Catalog::default());
        let meta = RecordingMeta::holding(survivor.clone());
        let f = node(&manager, meta.clone(), 5, Some(&survivor)).await;
        let mut task = SyncTask::new(&f.client).await;

        // What a fresh manager's watch sends at once to a node at version 5.
        task.on_snapshot(snapshot(0, &Catalog::default())).await;

        assert_eq!(manager.current(), (1, survivor.clone()));
        assert_eq!(manager.script(|s| s.pushes.len()), 1);
        assert_eq!(task.base.version, 1);
        assert_eq!(task.base.catalog.as_ref(), Some(&survivor));
        assert!(meta.applied().is_empty(), "nothing to apply locally");
        // The base on disk moved too, so a restart does not re-seed again.
        assert_eq!(f.client.state.base().await.unwrap().version, 1);
    }

    #[tokio::test]
    async fn a_snapshot_older_than_the_base_is_dropped_while_the_manager_is_ahead() {
        // The node pushed version 5; another node then made version 6. The
        // watch still delivers version 4: overtaken, not a lost manager.
        let mine = catalog(&["a"]);
        let manager = ScriptedManager::at(6, &catalog(&["a", "b"]));
        let meta = RecordingMeta::holding(mine.clone());
        let f = node(&manager, meta.clone(), 5, Some(&mine)).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_snapshot(snapshot(4, &catalog(&["old"]))).await;

        assert_eq!(manager.script(|s| s.calls.clone()), ["GetMeta"]);
        assert!(meta.applied().is_empty(), "{:?}", meta.applied());
        assert_eq!(task.base.version, 5);
        assert_eq!(task.base.catalog.as_ref(), Some(&mine));
        assert_eq!(manager.current().0, 6);
    }

    #[tokio::test]
    async fn conflicting_pushes_merge_three_ways_until_one_is_accepted() {
        let base = catalog(&["old", "shared"]);
        let manager = ScriptedManager::at(1, &base);
        // Before each of the node's first two pushes lands, another node's
        // does: it drops `old` and adds `theirs`, then adds `late`.
        manager.script(|s| {
            s.interference = VecDeque::from([
                catalog(&["shared", "theirs"]),
                catalog(&["shared", "theirs", "late"]),
            ])
        });
        let meta = RecordingMeta::holding(base.clone());
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;
        meta.inner.update(|c| {
            c.databases
                .insert("mine".into(), Database::new("mine", "autogen"));
        });

        task.on_local_change().await;

        assert_eq!(
            manager.script(|s| std::mem::take(&mut s.pushes)),
            [
                PushAnswer::Conflict(2),
                PushAnswer::Conflict(3),
                PushAnswer::Accepted(4)
            ]
        );
        // A two-way union would have kept `old`: the merge is against the base.
        let merged = catalog(&["late", "mine", "shared", "theirs"]);
        assert_eq!(manager.current(), (4, merged.clone()));
        assert_eq!(meta.inner.snapshot(), merged);
        assert_eq!(
            meta.applied(),
            [catalog(&["mine", "shared", "theirs"]), merged.clone()]
        );
        assert_eq!(task.base.version, 4);
        assert_eq!(f.client.metrics.pushes(false), 2);
    }

    #[tokio::test]
    async fn a_push_that_keeps_conflicting_gives_up_and_is_tried_again_at_the_resync() {
        let base = catalog(&["shared"]);
        let manager = ScriptedManager::at(1, &base);
        manager.script(|s| {
            s.interference = (0..MAX_ROUNDS)
                .map(|i| catalog(&["shared", &format!("theirs{i}")]))
                .collect()
        });
        let meta = RecordingMeta::holding(base.clone());
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;
        meta.inner.update(|c| {
            c.databases
                .insert("mine".into(), Database::new("mine", "autogen"));
        });

        task.on_local_change().await;
        let pushes = manager.script(|s| std::mem::take(&mut s.pushes));
        assert_eq!(pushes.len(), MAX_ROUNDS);
        assert!(pushes.iter().all(|p| matches!(p, PushAnswer::Conflict(_))));
        assert!(f
            .client
            .metrics
            .render()
            .contains(r#"cflux_node_failures_total{step="push"} 1"#));

        task.on_resync_tick().await;
        let version = 1 + MAX_ROUNDS as u64 + 1;
        assert_eq!(
            manager.script(|s| std::mem::take(&mut s.pushes)),
            [PushAnswer::Accepted(version)]
        );
        let (_, stored) = manager.current();
        assert!(stored.databases.contains_key("mine"));
        assert!(stored
            .databases
            .contains_key(&format!("theirs{}", MAX_ROUNDS - 1)));
    }

    #[tokio::test]
    async fn a_burst_of_watched_versions_coalesces_to_the_newest() {
        let base = catalog(&["a"]);
        let newest = catalog(&["a", "b", "c", "d"]);
        let manager = ScriptedManager::at(4, &newest);
        manager.script(|s| {
            s.watch = vec![
                snapshot(2, &catalog(&["a", "b"])),
                snapshot(3, &catalog(&["a", "b", "c"])),
                snapshot(4, &newest),
            ]
        });
        let meta = RecordingMeta::holding(base.clone());
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;
        task.open_watch().await;
        let shutdown = CancellationToken::new();

        let event = task.next_event(&shutdown).await;
        assert!(
            matches!(&event, Event::Snapshot(s) if s.version == 2),
            "{event:?}"
        );
        task.handle(event).await;

        assert_eq!(meta.applied(), [newest], "only the newest is applied");
        assert_eq!(task.base.version, 4);
        assert!(task.watch.is_some(), "the watch stays open");
        assert!(manager.script(|s| s.pushes.is_empty()));
    }

    #[tokio::test]
    async fn a_failed_apply_ends_when_the_cluster_catalog_becomes_what_the_node_holds() {
        let base = catalog(&["a"]);
        let refused = catalog(&["a", "refused"]);
        let manager = ScriptedManager::at(2, &refused);
        let meta = RecordingMeta::holding(base.clone());
        *meta.failing_applies.lock().unwrap() = 1;
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_snapshot(snapshot(2, &refused)).await;
        assert!(!f.client.health.problems().is_empty());
        // The refused part is taken out of the cluster's catalog: the node
        // holds it whole, and is healthy again.
        task.on_snapshot(snapshot(3, &base)).await;
        assert!(
            f.client.health.problems().is_empty(),
            "{:?}",
            f.client.health.problems()
        );
        assert_eq!(task.base.version, 3);
        assert!(task.unapplied.is_none());
    }

    #[tokio::test]
    async fn a_catalog_that_could_not_be_applied_is_applied_again_after_a_growing_wait_not_at_each_local_change(
    ) {
        let base = catalog(&["a"]);
        let remote = catalog(&["a", "b"]);
        let manager = ScriptedManager::at(2, &remote);
        let meta = RecordingMeta::holding(base.clone());
        *meta.failing_applies.lock().unwrap() = 2;
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_snapshot(snapshot(2, &remote)).await;
        assert_eq!(meta.inner.snapshot(), base);
        assert_eq!(task.base.version, 1, "the base moves only once applied");
        let first_wait = task.unapplied.as_ref().unwrap().due - tokio::time::Instant::now();
        assert!(!f.client.health.problems().is_empty());

        // The failed apply's own writes wake the local-change watcher (here:
        // a change of the metadata); that is no reason to try at once.
        meta.inner.update(|_| ());
        task.on_local_change().await;
        task.on_resync_tick().await;
        assert!(
            manager.script(|s| s.calls.is_empty()),
            "{:?}",
            manager.script(|s| s.calls.clone())
        );
        assert!(meta.applied().is_empty());

        task.on_apply_due().await;
        let second_wait = task.unapplied.as_ref().unwrap().due - tokio::time::Instant::now();
        assert!(
            second_wait > first_wait,
            "{first_wait:?} then {second_wait:?}"
        );
        task.on_apply_due().await;
        assert_eq!(meta.inner.snapshot(), remote);
        assert_eq!(task.base.version, 2);
        assert!(task.unapplied.is_none());
        assert!(f.client.health.problems().is_empty());
        assert_eq!(
            task.apply_retry.peek(),
            Duration::from_secs(1),
            "reset after a success"
        );
    }

    #[tokio::test]
    async fn heartbeats_carry_the_applied_version_and_the_last_error_until_it_is_over() {
        let base = catalog(&["a"]);
        let remote = catalog(&["a", "b"]);
        let manager = ScriptedManager::at(2, &remote);
        let meta = RecordingMeta::holding(base.clone());
        *meta.failing_applies.lock().unwrap() = 1;
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;
        assert_eq!(
            *f.client.sync_state().borrow(),
            None,
            "nothing before the task reports"
        );
        let reported = || f.client.sync_state().borrow().clone().expect("reported");

        task.on_snapshot(snapshot(2, &remote)).await;
        task.report_sync();
        let failing = reported();
        assert_eq!(
            failing.applied_version, 1,
            "the version applied, not the one seen"
        );
        assert!(
            failing.sync_error.starts_with("pull: ")
                && failing.sync_error.contains("scripted failure"),
            "{failing:?}"
        );

        task.on_apply_due().await;
        task.report_sync();
        let recovered = reported();
        assert_eq!(recovered.applied_version, 2);
        assert_eq!(recovered.sync_error, "", "{recovered:?}");
    }

    #[tokio::test]
    async fn a_watch_that_cannot_be_opened_is_tried_again_after_a_growing_wait() {
        let manager = ScriptedManager::at(0, &Catalog::default());
        manager.script(|s| s.failures = vec!["WatchMeta", "WatchMeta"]);
        let meta = RecordingMeta::holding(Catalog::default());
        let f = node(&manager, meta, 0, None).await;
        let mut task = SyncTask::new(&f.client).await;

        task.open_watch().await;
        assert!(task.watch.is_none());
        assert_eq!(task.reopen_wait, Duration::from_millis(200));
        task.open_watch().await;
        assert_eq!(task.reopen_wait, Duration::from_millis(400));
        task.open_watch().await;
        assert!(task.watch.is_some());
        assert_eq!(
            task.reopen.peek(),
            Duration::from_millis(200),
            "reset after a success"
        );

        task.on_watch_end(None);
        assert!(task.watch.is_none(), "an ended watch is reopened");
    }

    fn identity(cluster_id: u64, index: u64) -> Option<MetaIdentity> {
        Some(MetaIdentity { cluster_id, index })
    }

    /// A node synced at version 3 on `base`, its metadata identified as
    /// cluster 7 at index 100 when it synced.
    async fn identified_node(
        manager: &ScriptedManager,
        meta: Arc<RecordingMeta>,
        base: &Catalog,
        history_id: &str,
    ) -> Fixture {
        let base = SyncedBase {
            version: 3,
            catalog: Some(encode(base)),
            history_id: history_id.into(),
            identity: identity(7, 100),
        };
        node_at(manager, meta, &base).await
    }

    #[tokio::test]
    async fn replaced_local_metadata_rejoins_instead_of_pushing_its_drops() {
        for (replaced, reason) in [(identity(8, 1), "cluster_id"), (identity(7, 40), "index")] {
            let cluster = catalog(&["a", "b"]);
            let manager = ScriptedManager::at(3, &cluster);
            // A fresh server's (or an old copy's) metadata: `b` is missing,
            // `fresh` was made there.
            let meta = RecordingMeta::holding(catalog(&["a", "fresh"]));
            meta.inner.set_identity(replaced);
            let f = identified_node(&manager, meta.clone(), &cluster, "").await;
            let mut task = SyncTask::new(&f.client).await;

            task.on_local_change().await;

            let union = catalog(&["a", "b", "fresh"]);
            assert_eq!(manager.current(), (4, union.clone()), "{reason}");
            assert_eq!(meta.inner.snapshot(), union, "{reason}");
            assert_eq!(manager.script(|s| s.calls.clone()), ["GetMeta", "PushMeta"]);
            assert!(f.client.metrics.render().contains(&format!(
                r#"cflux_node_metadata_replaced_total{{reason="{reason}"}} 1"#
            )));
            // The new identity is the base's now: no second rejoin.
            assert_eq!(task.base.identity, replaced);
            assert_eq!(f.client.state.base().await.unwrap().identity, replaced);
        }
    }

    #[tokio::test]
    async fn a_real_local_drop_on_the_same_metadata_still_propagates() {
        let cluster = catalog(&["a", "b"]);
        let manager = ScriptedManager::at(3, &cluster);
        let meta = RecordingMeta::holding(catalog(&["a"]));
        meta.inner.set_identity(identity(7, 101));
        let f = identified_node(&manager, meta.clone(), &cluster, "").await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_local_change().await;

        assert_eq!(manager.current(), (4, catalog(&["a"])));
        assert_eq!(manager.script(|s| s.calls.clone()), ["PushMeta"]);
        assert_eq!(task.base.identity, identity(7, 101));
    }

    #[tokio::test]
    async fn a_node_without_a_base_merges_the_cluster_catalog_before_it_pushes() {
        let cluster = catalog(&["theirs"]);
        let manager = ScriptedManager::at(3, &cluster);
        let meta = RecordingMeta::holding(catalog(&["mine"]));
        let f = node(&manager, meta.clone(), 0, None).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_start().await;

        let both = catalog(&["mine", "theirs"]);
        assert_eq!(manager.script(|s| s.calls.clone()), ["GetMeta", "PushMeta"]);
        assert_eq!(
            manager.script(|s| std::mem::take(&mut s.pushes)),
            [PushAnswer::Accepted(4)]
        );
        assert_eq!(manager.current(), (4, both.clone()));
        assert_eq!(meta.inner.snapshot(), both);
    }

    #[tokio::test]
    async fn a_new_history_on_the_watch_merges_as_a_first_join() {
        // The manager lost its state while this node was down; another node
        // re-seeded it and added two databases, and the version numbers met
        // again: version 4 of the new history is not this node's version 4.
        let mine = catalog(&["shared", "old"]);
        let theirs = catalog(&["shared", "new1", "new2"]);
        let manager = ScriptedManager::at(4, &theirs);
        manager.script(|s| s.history_id = "h-2".into());
        let meta = RecordingMeta::holding(catalog(&["shared", "old", "local"]));
        let base = SyncedBase {
            version: 3,
            catalog: Some(encode(&mine)),
            history_id: "h-1".into(),
            identity: None,
        };
        let f = node_at(&manager, meta.clone(), &base).await;
        let mut task = SyncTask::new(&f.client).await;

        let mut s = snapshot(4, &theirs);
        s.history_id = "h-2".into();
        task.on_snapshot(s).await;

        let all = catalog(&["local", "new1", "new2", "old", "shared"]);
        assert_eq!(meta.inner.snapshot(), all, "nothing dropped on this node");
        assert_eq!(manager.current(), (5, all), "nor in the cluster");
        assert_eq!(manager.script(|s| s.pushed_histories.clone()), ["h-2"]);
        assert_eq!(task.base.history_id, "h-2");
        assert!(f
            .client
            .metrics
            .render()
            .contains("cflux_node_history_changes_total 1"));
    }

    #[tokio::test]
    async fn a_push_under_an_old_history_conflicts_and_merges_as_a_first_join() {
        // The same, noticed by the node's first push after its restart: the
        // manager conflicts on the history, whatever the versions.
        let mine = catalog(&["shared"]);
        let theirs = catalog(&["shared", "new1", "new2"]);
        let manager = ScriptedManager::at(3, &theirs);
        manager.script(|s| s.history_id = "h-2".into());
        let meta = RecordingMeta::holding(catalog(&["shared", "local"]));
        let base = SyncedBase {
            version: 3,
            catalog: Some(encode(&mine)),
            history_id: "h-1".into(),
            identity: None,
        };
        let f = node_at(&manager, meta.clone(), &base).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_start().await;

        let all = catalog(&["local", "new1", "new2", "shared"]);
        assert_eq!(
            manager.script(|s| s.pushed_histories.clone()),
            ["h-1", "h-2"]
        );
        assert_eq!(manager.current(), (4, all.clone()));
        assert_eq!(meta.inner.snapshot(), all);
    }

    #[tokio::test]
    async fn an_empty_history_is_unknown_and_versions_decide_as_before() {
        let base = catalog(&["a"]);
        let remote = catalog(&["b"]);
        let manager = ScriptedManager::at(2, &remote);
        let meta = RecordingMeta::holding(base.clone());
        let stored = SyncedBase {
            version: 1,
            catalog: Some(encode(&base)),
            history_id: "h-1".into(),
            identity: None,
        };
        let f = node_at(&manager, meta.clone(), &stored).await;
        let mut task = SyncTask::new(&f.client).await;

        // A manager without histories: a three-way merge, so `a`, dropped
        // remotely and unchanged here, is dropped.
        task.on_snapshot(snapshot(2, &remote)).await;
        assert_eq!(meta.inner.snapshot(), remote);
        assert!(f
            .client
            .metrics
            .render()
            .contains("cflux_node_history_changes_total 0"));
    }

    #[tokio::test]
    async fn metadata_that_does_not_describe_its_server_pushes_nothing() {
        struct Foreign(InMemoryMeta);
        #[async_trait]
        impl MetaClient for Foreign {
            async fn catalog(&self) -> Result<Catalog, MetaError> {
                self.0.catalog().await
            }
            async fn apply(&self, target: &Catalog) -> Result<(), MetaError> {
                self.0.apply(target).await
            }
            fn changes(&self) -> watch::Receiver<u64> {
                self.0.changes()
            }
            async fn verify(&self) -> Result<(), MetaError> {
                Err(MetaError::Mismatch("another server's meta.db".into()))
            }
        }
        let manager = ScriptedManager::at(1, &catalog(&["a", "b"]));
        let dir = tempfile::tempdir().unwrap();
        let settings = NodeSettings {
            cluster: CLUSTER.into(),
            hostname: "scripted".into(),
            ips: Vec::new(),
            http_addr: String::new(),
            version: "test".into(),
            state_dir: dir.path().to_owned(),
            resync_interval: Duration::from_secs(3600),
        };
        let client = Client::with_manager(
            settings,
            ManagerClient::from_service(BoxCloneSyncService::new(manager.clone())),
            Arc::new(Foreign(InMemoryMeta::new(catalog(&[])))),
        )
        .unwrap();
        let mut task = SyncTask::new(&client).await;

        task.on_start().await;
        task.on_snapshot(snapshot(1, &catalog(&["a", "b"]))).await;

        assert!(manager.script(|s| s.calls.is_empty()));
        assert_eq!(manager.current(), (1, catalog(&["a", "b"])));
        assert!(
            client.meta().0.snapshot().databases.is_empty(),
            "nothing applied either"
        );
        let problems = client.health.problems();
        assert!(
            problems.iter().any(|p| p.contains("another server")),
            "{problems:?}"
        );
    }
}
