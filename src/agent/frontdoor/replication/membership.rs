//! Who new writes are queued for: the cluster's members as the manager
//! tells them.
//!
//! The front door follows the manager's `WatchNodes` stream: the node list
//! at once, then again whenever a node registers, is deregistered, or is
//! listed dead or alive again, so a node that just registered is a member
//! here milliseconds later rather than at the next heartbeat. A stream that
//! ends is opened again (through the client's retry layer), with backoff.
//!
//! A manager that does not offer `WatchNodes` (an older version answers
//! `UNIMPLEMENTED`; the legacy protocol has no such call) is listed every
//! heartbeat interval instead, as before the watch existed; that is logged
//! once, and the watch is tried again every [`WATCH_RETRY`].
//!
//! A failed delivery still asks the manager: while a watch is open it
//! checks the watch against a listing, and a difference (the stream went
//! quiet without breaking) opens the watch again; while listing, it lists
//! at once.
//!
//! At the start, writes wait for the manager's first list even when the
//! queues remember the members of the last run: a node that joined while
//! this one was down is not among them, and a write acknowledged for the
//! remembered members alone would skip it. Only when no manager has listed
//! the members within [`REMEMBERED_GRACE`] are the remembered ones used
//! (a manager outage must not stop the writes).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Members, Replication};
use crate::backoff::Backoff;
use crate::client::call::{CallError, NodeListStream};
use crate::client::{Client, MetaClient};
use crate::proto;

/// How often a front door listing the nodes (the manager offered no watch)
/// tries the watch again: the manager may have been upgraded.
pub const WATCH_RETRY: Duration = Duration::from_secs(600);
/// A burst of failed deliveries asks the manager once, this long after the first.
const REFRESH_DEBOUNCE: Duration = Duration::from_millis(200);
/// A watch that stayed open this long starts its reopening backoff over.
const STABLE_WATCH: Duration = Duration::from_secs(10);
/// How long writes wait for the manager's first list before the members
/// remembered from the last run are used (less than the wait a write
/// accepts, so they are not refused meanwhile).
pub const REMEMBERED_GRACE: Duration = Duration::from_secs(5);

/// Where the members come from: the node's manager client.
pub trait MemberSource: Send + Sync {
    /// This node's ID, once registered.
    fn node_id(&self) -> Option<String>;
    /// A watch of the cluster's nodes (`WatchNodes`).
    fn watch(&self) -> BoxFuture<'_, Result<NodeListStream, CallError>>;
    /// The cluster's nodes, listed once (`ListNodes`).
    fn list(&self) -> BoxFuture<'_, Result<Vec<proto::Node>, CallError>>;
    /// How often to list without a watch: the heartbeat interval.
    fn interval(&self) -> Duration;
}

impl<M: MetaClient> MemberSource for Client<M> {
    fn node_id(&self) -> Option<String> {
        Client::node_id(self)
    }

    fn watch(&self) -> BoxFuture<'_, Result<NodeListStream, CallError>> {
        Box::pin(self.watch_cluster_nodes())
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<proto::Node>, CallError>> {
        Box::pin(self.cluster_nodes())
    }

    fn interval(&self) -> Duration {
        self.heartbeat_interval()
    }
}

/// Where a membership came from, for the metrics and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// The manager's `WatchNodes` stream.
    Watch,
    /// A `ListNodes` answer (a manager without `WatchNodes`).
    List,
}

impl Learned {
    pub fn label(self) -> &'static str {
        match self {
            Learned::Watch => "watch",
            Learned::List => "list",
        }
    }
}

impl Members {
    /// The other nodes of `nodes` with a front door, as seen by node `own`.
    pub fn from_nodes(own: String, nodes: Vec<proto::Node>) -> Members {
        let others: Vec<_> = nodes
            .into_iter()
            .filter(|n| n.node_id != own && !n.http_addr.is_empty())
            .collect();
        Members {
            alive: others
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.node_id.clone())
                .collect(),
            peers: others
                .into_iter()
                .map(|n| (n.node_id, n.http_addr))
                .collect(),
            node_id: own,
        }
    }
}

impl Replication {
    /// Keeps the membership current from `source` until shutdown (see the
    /// module doc).
    /// Joining starts with it ([`super::joining`]).
    pub async fn follow(self: Arc<Self>, source: &impl MemberSource) {
        tokio::spawn(self.clone().join());
        let this = self.clone();
        follow_members(
            source,
            &self.refresh,
            &self.shutdown,
            |on| this.metrics.set_membership_watch(on),
            |members, learned| {
                let this = self.clone();
                async move { this.set_members(members, learned).await }
            },
        )
        .await
    }
}

impl Replication {
    /// Uses the `n` members remembered from the last run if no manager has
    /// listed the members within [`REMEMBERED_GRACE`] of the start.
    pub(super) async fn remembered_unless_listed(self: Arc<Self>, n: usize) {
        let mut known = self.members_known.subscribe();
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = known.wait_for(|k| *k) => {}
            _ = tokio::time::sleep(REMEMBERED_GRACE) => {
                tracing::warn!(peers = n, grace = ?REMEMBERED_GRACE, "no manager has listed the members yet: queuing writes for the peers remembered from the last run (a node that joined meanwhile gets what is acknowledged until then only through catch-up)");
                self.members_known.send_replace(true);
            }
        }
    }
}

/// Why a watch was left.
enum Left {
    Shutdown,
    /// Broken or ended by the manager: open it again after a backoff.
    Broken(Option<CallError>),
    /// A listing disagreed with it: open it again at once.
    Stale,
}

/// Follows `source` until `shutdown`, handing every membership to `apply`
/// (with where it came from); `watching` is told whether a watch is open.
pub async fn follow_members<S, F, Fut>(
    source: &S,
    refresh: &Notify,
    shutdown: &CancellationToken,
    watching: impl Fn(bool),
    mut apply: F,
) where
    S: MemberSource,
    F: FnMut(Members, Learned) -> Fut,
    Fut: Future<Output = ()>,
{
    // Since when the manager offered no watch; `None` while it does.
    let mut listing_since: Option<Instant> = None;
    let mut told = false;
    let mut reopen =
        Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).with_jitter(0.3);
    loop {
        let Some(own) = source.node_id() else {
            // Not registered yet.
            let wait = source.interval().min(Duration::from_millis(200));
            if sleep_or_shutdown(wait, shutdown).await {
                return;
            }
            continue;
        };
        if listing_since.is_none_or(|since| since.elapsed() >= WATCH_RETRY) {
            match source.watch().await {
                Ok(stream) => {
                    if listing_since.take().is_some() {
                        tracing::info!("the manager offers WatchNodes now: following it instead of listing the nodes");
                    }
                    watching(true);
                    let opened = Instant::now();
                    let left = follow_stream(source, stream, refresh, shutdown, &mut apply).await;
                    watching(false);
                    if opened.elapsed() >= STABLE_WATCH {
                        reopen.reset();
                    }
                    let wait = match left {
                        Left::Shutdown => return,
                        Left::Stale => Duration::ZERO,
                        Left::Broken(e) => {
                            let wait = reopen.next_wait();
                            match e {
                                Some(e) => tracing::info!(
                                    error = &e as &dyn std::error::Error,
                                    ?wait,
                                    "the node watch ended; opening it again"
                                ),
                                None => tracing::info!(
                                    ?wait,
                                    "the manager ended the node watch; opening it again"
                                ),
                            }
                            wait
                        }
                    };
                    if sleep_or_shutdown(wait, shutdown).await {
                        return;
                    }
                    continue;
                }
                Err(e) if e.is_unsupported() => {
                    if !std::mem::replace(&mut told, true) {
                        tracing::info!(error = &e as &dyn std::error::Error, interval = ?source.interval(), "the manager does not offer WatchNodes (an older version, or the legacy protocol): listing the nodes every heartbeat interval instead");
                    }
                    listing_since = Some(Instant::now());
                }
                Err(e) => {
                    // The retry layer gave up: list meanwhile, if that works.
                    let wait = reopen.next_wait();
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        ?wait,
                        "cannot watch the cluster's nodes; trying again"
                    );
                    if let Ok(nodes) = source.list().await {
                        apply(Members::from_nodes(own, nodes), Learned::List).await;
                    }
                    if sleep_or_shutdown(wait, shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Listing: every heartbeat interval, and after a failed delivery.
        let wait = match source.list().await {
            Ok(nodes) => {
                apply(Members::from_nodes(own, nodes), Learned::List).await;
                source.interval()
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "cannot list the cluster's nodes for replication"
                );
                source.interval().min(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = refresh.notified() => {
                if sleep_or_shutdown(REFRESH_DEBOUNCE, shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Applies every list `stream` brings until it breaks, a listing after a
/// failed delivery disagrees with it, or shutdown.
async fn follow_stream<S, F, Fut>(
    source: &S,
    mut stream: NodeListStream,
    refresh: &Notify,
    shutdown: &CancellationToken,
    apply: &mut F,
) -> Left
where
    S: MemberSource,
    F: FnMut(Members, Learned) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last: Option<Members> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Left::Shutdown,
            item = stream.next() => match item {
                Some(Ok(list)) => {
                    let Some(own) = source.node_id() else { continue };
                    let members = Members::from_nodes(own, list.nodes);
                    last = Some(members.clone());
                    apply(members, Learned::Watch).await;
                }
                Some(Err(e)) => return Left::Broken(Some(e)),
                None => return Left::Broken(None),
            },
            _ = refresh.notified() => {
                if sleep_or_shutdown(REFRESH_DEBOUNCE, shutdown).await {
                    return Left::Shutdown;
                }
                let (Some(own), Some(seen)) = (source.node_id(), last.as_ref()) else { continue };
                // A manager that cannot be reached now says nothing new.
                if let Ok(nodes) = source.list().await {
                    let listed = Members::from_nodes(own, nodes);
                    if listed != *seen {
                        tracing::warn!(watched = ?seen.peers, listed = ?listed.peers, "a delivery failed and the manager lists the nodes otherwise than the node watch last told: opening the watch again");
                        return Left::Stale;
                    }
                }
            }
        }
    }
}

/// Sleeps `wait`; `true` when shutdown came first.
async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    fn node(id: &str, addr: &str, alive: bool) -> proto::Node {
        proto::Node {
            node_id: id.into(),
            http_addr: addr.into(),
            alive,
            ..Default::default()
        }
    }

    #[test]
    fn members_are_the_other_nodes_with_a_front_door() {
        let m = Members::from_nodes(
            "a".into(),
            vec![
                node("a", "h:1", true),
                node("b", "h:2", true),
                node("c", "h:3", false),
                node("d", "", true),
            ],
        );
        assert_eq!(m.node_id, "a");
        assert_eq!(
            m.peers.into_iter().collect::<Vec<_>>(),
            [("b".into(), "h:2".into()), ("c".into(), "h:3".into())]
        );
        assert_eq!(m.alive.into_iter().collect::<Vec<_>>(), ["b"]);
    }

    /// A scripted manager: watches get the lists sent on `lists` (or are
    /// refused as unsupported), listings answer `listed`.
    struct Scripted {
        watch: bool,
        lists: Mutex<Option<mpsc::UnboundedReceiver<Result<proto::WatchNodesResponse, CallError>>>>,
        listed: Mutex<Vec<proto::Node>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl MemberSource for Scripted {
        fn node_id(&self) -> Option<String> {
            Some("a".into())
        }

        fn watch(&self) -> BoxFuture<'_, Result<NodeListStream, CallError>> {
            self.calls.lock().unwrap().push("watch");
            Box::pin(async move {
                if !self.watch {
                    return Err(CallError::unsupported("Unimplemented"));
                }
                // A watch opened again stays quiet.
                let Some(rx) = self.lists.lock().unwrap().take() else {
                    return Ok(Box::pin(futures::stream::pending()) as NodeListStream);
                };
                Ok(
                    Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                        as NodeListStream,
                )
            })
        }

        fn list(&self) -> BoxFuture<'_, Result<Vec<proto::Node>, CallError>> {
            self.calls.lock().unwrap().push("list");
            let nodes = self.listed.lock().unwrap().clone();
            Box::pin(async move { Ok(nodes) })
        }

        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    fn scripted(
        watch: bool,
    ) -> (
        Arc<Scripted>,
        mpsc::UnboundedSender<Result<proto::WatchNodesResponse, CallError>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Arc::new(Scripted {
            watch,
            lists: Mutex::new(Some(rx)),
            listed: Mutex::new(vec![node("b", "h:2", true)]),
            calls: Mutex::new(Vec::new()),
        });
        (s, tx)
    }

    /// Runs the follower; what it applies comes out of the receiver.
    async fn run(
        source: Arc<Scripted>,
        refresh: Arc<Notify>,
    ) -> (
        mpsc::UnboundedReceiver<(Members, Learned)>,
        CancellationToken,
    ) {
        let (applied_tx, applied) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            follow_members(
                &*source,
                &refresh,
                &stop,
                |_| {},
                |m, how| {
                    let _ = applied_tx.send((m, how));
                    async {}
                },
            )
            .await
        });
        (applied, shutdown)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<(Members, Learned)>) -> (Members, Learned) {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a membership within 5 s")
            .expect("the follower runs")
    }

    #[tokio::test]
    async fn every_list_of_the_watch_is_applied_as_it_comes() {
        let (source, lists) = scripted(true);
        let (mut applied, shutdown) = run(source.clone(), Arc::new(Notify::new())).await;
        lists
            .send(Ok(proto::WatchNodesResponse {
                nodes: vec![node("a", "h:1", true), node("b", "h:2", true)],
            }))
            .unwrap();
        let (m, how) = next(&mut applied).await;
        assert_eq!((m.peers.len(), how), (1, Learned::Watch));
        lists
            .send(Ok(proto::WatchNodesResponse {
                nodes: vec![node("b", "h:2", true), node("d", "h:4", true)],
            }))
            .unwrap();
        let (m, how) = next(&mut applied).await;
        assert_eq!((m.peers.len(), how), (2, Learned::Watch));
        // No listing was needed.
        assert_eq!(*source.calls.lock().unwrap(), ["watch"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_manager_without_the_watch_is_listed_instead() {
        let (source, _lists) = scripted(false);
        let (mut applied, shutdown) = run(source.clone(), Arc::new(Notify::new())).await;
        let (m, how) = next(&mut applied).await;
        assert_eq!((m.peers.len(), how), (1, Learned::List));
        assert_eq!(*source.calls.lock().unwrap(), ["watch", "list"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_failed_delivery_reopens_a_watch_the_listing_contradicts() {
        let (source, lists) = scripted(true);
        let refresh = Arc::new(Notify::new());
        let (mut applied, shutdown) = run(source.clone(), refresh.clone()).await;
        lists
            .send(Ok(proto::WatchNodesResponse {
                nodes: vec![node("b", "h:2", true)],
            }))
            .unwrap();
        next(&mut applied).await;
        // The listing agrees: the watch stays.
        refresh.notify_one();
        tokio::time::timeout(Duration::from_secs(5), async {
            while source.calls.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("a listing after the failed delivery");
        // The listing disagrees (b moved): the watch is opened again.
        source.listed.lock().unwrap()[0].http_addr = "h:9".into();
        refresh.notify_one();
        tokio::time::timeout(Duration::from_secs(5), async {
            while source.calls.lock().unwrap().len() < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watch opened again");
        assert_eq!(
            *source.calls.lock().unwrap(),
            ["watch", "list", "list", "watch"]
        );
        shutdown.cancel();
    }
}
