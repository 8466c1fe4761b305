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
use crate::client::meta::{MetaClient, MetaError};
use crate::client::node::Client;
use crate::client::state::SyncedBase;
use crate::influx::catalog::{Catalog, CatalogError};
use crate::influx::merge::merge;
use crate::proto;

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
#[derive(Debug)]
struct Synced {
    version: u64,
    /// `None`: no base yet (first join, or a manager that lost its state).
    catalog: Option<Catalog>,
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

/// The sync task of one [`Client`].
pub(crate) struct SyncTask<'a, M> {
    client: &'a Client<M>,
    base: Synced,
    changes: watch::Receiver<u64>,
    watch: Option<SnapshotStream>,
    /// Waits between failed attempts to open the watch.
    reopen: Backoff,
    /// How long to wait before the next attempt, after a failed one.
    reopen_wait: Duration,
    /// A cluster catalog that could not be applied (influxd down, say): tried
    /// again at each resync tick, since the watch may send nothing new for a
    /// long time.
    unapplied: Option<proto::MetaSnapshot>,
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
            watch: None,
            reopen: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            reopen_wait: Duration::ZERO,
            unapplied: None,
        }
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
        tokio::select! {
            _ = shutdown.cancelled() => Event::Shutdown,
            event = watched => event,
            changed = self.changes.changed() => {
                if changed.is_err() {
                    tracing::warn!("the metadata owner stopped reporting changes");
                    self.changes = self.client.meta.changes();
                }
                Event::LocalChange
            }
            _ = tokio::time::sleep(self.client.settings.resync_interval) => Event::ResyncTick,
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Snapshot(s) => self.on_snapshot(s).await,
            Event::WatchEnded(e) => self.on_watch_end(e),
            Event::LocalChange => self.on_local_change().await,
            Event::ResyncTick => self.on_resync_tick().await,
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
        let r = self.on_remote(snapshot.clone()).await;
        self.unapplied = r.is_err().then_some(snapshot);
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

    async fn on_local_change(&mut self) {
        let r = self.reconcile().await;
        self.step("push", r);
    }

    async fn on_resync_tick(&mut self) {
        match self.unapplied.take() {
            Some(snapshot) => {
                let r = self.on_remote(snapshot.clone()).await;
                self.unapplied = r.is_err().then_some(snapshot);
                self.step("pull", r);
            }
            None => self.on_local_change().await,
        }
    }

    fn step(&self, what: &'static str, result: Result<(), SyncError>) {
        if let Err(e) = result {
            self.client.metrics.failure(what);
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "{what} failed; will try again"
            );
        }
    }

    async fn save(&mut self, version: u64, catalog: &Catalog) -> Result<(), SyncError> {
        self.client
            .state
            .set_base(&SyncedBase {
                version,
                catalog: Some(encode(catalog)),
            })
            .await?;
        self.base = Synced {
            version,
            catalog: Some(catalog.clone()),
        };
        self.client.metrics.set_version(version);
        self.client.metrics.synced();
        Ok(())
    }

    /// Applies a cluster catalog, then pushes what of the local one the
    /// cluster does not have yet.
    async fn on_remote(&mut self, s: proto::MetaSnapshot) -> Result<(), SyncError> {
        if s.version == self.base.version {
            return Ok(());
        }
        let s = if s.version < self.base.version {
            // Either a snapshot overtaken by this node's own accepted push, or
            // a manager that lost its state: only the manager's current
            // version tells them apart.
            let current = self
                .client
                .manager
                .get_meta(&self.client.settings.cluster)
                .await?;
            if current.version >= self.base.version {
                return Ok(());
            }
            // Re-seed it from this node, merging as on a first join with
            // whatever it holds now.
            tracing::warn!(
                node_version = self.base.version,
                manager_version = current.version,
                "manager is behind this node; re-seeding it"
            );
            self.base = Synced {
                version: current.version,
                catalog: None,
            };
            current
        } else {
            s
        };
        let remote = decode(&s.data)?;
        let local = self.client.meta.catalog().await?;
        self.client.observe(&local);
        let target = if self.base.catalog.as_ref() == Some(&local) {
            remote.clone()
        } else {
            self.merge(&local, &remote)
        };
        if target != local {
            self.client.meta.apply(&target).await?;
            self.client.metrics.pulled();
            tracing::info!(version = s.version, "applied the cluster catalog");
        }
        self.save(s.version, &remote).await?;
        self.reconcile().await
    }

    /// The three-way merge against the base, its warnings logged.
    fn merge(&self, local: &Catalog, remote: &Catalog) -> Catalog {
        let m = merge(self.base.catalog.as_ref(), local, remote);
        for w in &m.warnings {
            tracing::warn!("merge: {w}");
        }
        m.merged
    }

    /// Pushes local changes until the manager accepts them or nothing is left.
    async fn reconcile(&mut self) -> Result<(), SyncError> {
        for _ in 0..MAX_ROUNDS {
            let local = self.client.meta.catalog().await?;
            self.client.observe(&local);
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
                    expected_history_id: String::new(),
                })
                .await?;
            match pushed {
                Pushed::Accepted(v) => {
                    self.client.metrics.pushed(true);
                    tracing::info!(version = v, "pushed local catalog changes");
                    return self.save(v, &local).await;
                }
                Pushed::Conflict(s) => {
                    self.client.metrics.pushed(false);
                    tracing::info!(
                        expected = self.base.version,
                        current = s.version,
                        "push conflicted; merging"
                    );
                    let remote = decode(&s.data)?;
                    let merged = self.merge(&local, &remote);
                    if merged != local {
                        self.client.meta.apply(&merged).await?;
                        self.client.metrics.pulled();
                    }
                    self.save(s.version, &remote).await?;
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
            }),
        Err(e) => Err(e.into()),
    };
    stored.unwrap_or_else(|e| {
        tracing::error!(
            error = &e as &dyn std::error::Error,
            "cannot read the synced base; joining as a new node"
        );
        Synced {
            version: 0,
            catalog: None,
        }
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
                ..Default::default()
            };
            Ok(match call {
                Call::GetMeta(_) => Reply::Snapshot(current(&s)),
                Call::PushMeta(r) => {
                    if let Some(theirs) = s.interference.pop_front() {
                        s.version += 1;
                        s.data = encode(&theirs);
                    }
                    use proto::push_meta_response::Result as R;
                    let result = if r.expected_version == s.version {
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
        let dir = tempfile::tempdir().unwrap();
        StateDir::open(dir.path())
            .unwrap()
            .set_base(&SyncedBase {
                version,
                catalog: base.map(encode),
            })
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
    async fn a_catalog_that_could_not_be_applied_is_applied_at_the_resync() {
        let base = catalog(&["a"]);
        let remote = catalog(&["a", "b"]);
        let manager = ScriptedManager::at(2, &remote);
        let meta = RecordingMeta::holding(base.clone());
        *meta.failing_applies.lock().unwrap() = 1;
        let f = node(&manager, meta.clone(), 1, Some(&base)).await;
        let mut task = SyncTask::new(&f.client).await;

        task.on_snapshot(snapshot(2, &remote)).await;
        assert_eq!(meta.inner.snapshot(), base);
        assert_eq!(task.base.version, 1, "the base moves only once applied");

        task.on_resync_tick().await;
        assert_eq!(meta.inner.snapshot(), remote);
        assert_eq!(task.base.version, 2);
        assert!(task.unapplied.is_none());
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
}
