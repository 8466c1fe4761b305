//! Node liveness on etcd without a write per heartbeat.
//!
//! A node is alive while its `alive/{hexcluster}/{node_id}` key exists. Each
//! manager holds one *liveness lease* of the node TTL, refreshed by
//! keep-alives (which etcd's leader answers without a raft write or a new
//! revision), and binds to it the keys of the nodes that heartbeat through it:
//!
//! - The first heartbeat of a node here (or the first after another manager
//!   bound its key, or after it was deleted) binds the key to this lease, in
//!   a transaction that also checks the node is registered and reads its
//!   record. Binds arriving together share one transaction, so a burst (a
//!   manager died and its nodes all come over) costs tens of writes, not
//!   thousands.
//! - Every later heartbeat is remembered in memory only; its record is
//!   rewritten only when what the node reports about its sync changed.
//! - A sweeper deletes the keys of nodes silent here for a TTL, each only if
//!   still bound to this lease (a node that moved on is left to its new
//!   manager).
//! - A watch over `alive/` tells this manager when a key it bound was bound
//!   elsewhere or deleted, so the next heartbeat binds it again.
//!
//! A manager that dies takes its lease along: its nodes' keys vanish one TTL
//! after its last keep-alive unless the nodes heartbeat through another
//! manager first, which binds them to that one's lease. Heartbeat times are
//! known exactly by the manager a node heartbeats through; listings from
//! another manager show the time its record was last written (see
//! `docs/decisions.md`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{parse_node, to_json, Inner, HEARTBEAT_RETRIES};
use crate::manager::store::{NodeRecord, StoreError, StoreResult, SyncReport};

/// Binds (or sweeps) written in one transaction at most; etcd refuses
/// transactions of more than 128 operations by default.
const BATCH: usize = 64;
/// Binds waiting for their transaction at most; a heartbeat beyond that
/// waits for room.
const BIND_QUEUE: usize = 4096;
/// How often the liveness lease is refreshed (more often for TTLs under
/// 3 s: every third of the TTL).
const LEASE_REFRESH: Duration = Duration::from_secs(1);
/// Heartbeats are answered from memory only while etcd confirmed the lease
/// this recently; after that they fail like every call that needs etcd.
const LEASE_CONFIRMED_WITHIN: Duration = Duration::from_secs(3);

/// What this manager knows of one node that heartbeats through it.
struct Beat {
    /// The node's last heartbeat here, wall clock and monotonic.
    last_ms: u64,
    at: Instant,
    /// The lease the node's `alive/` key is bound to as far as this manager
    /// knows (0: unbound or gone), and the revision that told it so.
    bound_lease: i64,
    bound_revision: i64,
    /// The node's record as last read or written here, and its mod revision.
    record: NodeRecord,
    record_revision: i64,
}

/// One node's key to bind, and who waits for the outcome.
struct Bind {
    alive_key: Vec<u8>,
    node_key: Vec<u8>,
    done: oneshot::Sender<StoreResult<Option<Bound>>>,
}

/// A key bound to `lease` at `revision`, with the node's record as read in
/// the same transaction.
struct Bound {
    lease: i64,
    revision: i64,
    record: NodeRecord,
    record_revision: i64,
}

/// The liveness state a manager keeps in memory (see the module doc).
pub(super) struct Liveness {
    /// This manager's liveness lease; 0 while it has none.
    lease: AtomicI64,
    /// When etcd last confirmed the lease alive.
    confirmed: Mutex<Instant>,
    /// Nodes heartbeating through this manager, by `alive/` key.
    beats: Mutex<HashMap<Vec<u8>, Beat>>,
    binds: mpsc::Sender<Bind>,
}

/// The receiving end of [`Liveness`]'s binds, for [`Inner::bind_loop`].
pub(super) struct BindQueue(mpsc::Receiver<Bind>);

impl Liveness {
    pub(super) fn new() -> (Liveness, BindQueue) {
        let (tx, rx) = mpsc::channel(BIND_QUEUE);
        let liveness = Liveness {
            lease: AtomicI64::new(0),
            confirmed: Mutex::new(Instant::now()),
            beats: Mutex::new(HashMap::new()),
            binds: tx,
        };
        (liveness, BindQueue(rx))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Beat>> {
        self.beats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self) -> StoreResult<i64> {
        match self.lease.load(Ordering::SeqCst) {
            0 => Err(StoreError::unavailable(
                "no liveness lease from etcd yet (etcd unreachable?)",
            )),
            lease => Ok(lease),
        }
    }

    fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// The lease, if etcd confirmed it within [`LEASE_CONFIRMED_WITHIN`].
    pub(super) fn confirmed_lease(&self) -> StoreResult<i64> {
        let lease = self.lease()?;
        let since = self
            .confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if since > LEASE_CONFIRMED_WITHIN {
            return Err(StoreError::unavailable(format!(
                "etcd has not confirmed this manager's liveness lease for {since:.1?} (etcd unreachable?)"
            )));
        }
        Ok(lease)
    }

    /// The last heartbeat this manager had from the node of `alive_key`.
    pub(super) fn last_heartbeat_ms(&self, alive_key: &[u8]) -> Option<u64> {
        self.lock().get(alive_key).map(|b| b.last_ms)
    }

    /// Forgets nodes this manager deleted, so their next heartbeat finds
    /// them unknown at once rather than when the watch tells.
    pub(super) fn forget(&self, alive_keys: &[Vec<u8>]) {
        let mut beats = self.lock();
        for key in alive_keys {
            beats.remove(key);
        }
    }

    /// Forgets every node whose `alive/` key starts with `prefix`.
    pub(super) fn forget_prefix(&self, prefix: &[u8]) {
        self.lock().retain(|key, _| !key.starts_with(prefix));
    }

    /// Learns that `alive_key` was bound to `lease` (0: deleted) at
    /// `revision`, unless something newer is known already.
    fn learn(
        &self,
        beats: &mut HashMap<Vec<u8>, Beat>,
        alive_key: &[u8],
        lease: i64,
        revision: i64,
    ) {
        if let Some(beat) = beats.get_mut(alive_key) {
            if revision > beat.bound_revision {
                beat.bound_lease = lease;
                beat.bound_revision = revision;
            }
        }
    }

    /// Records a node bound here (by a registration or a bind).
    fn bound(&self, alive_key: Vec<u8>, now_ms: u64, bound: Bound) {
        let mut beats = self.lock();
        let beat = beats.entry(alive_key).or_insert_with(|| Beat {
            last_ms: now_ms,
            at: Instant::now(),
            bound_lease: 0,
            bound_revision: 0,
            record: NodeRecord::default(),
            record_revision: 0,
        });
        beat.last_ms = now_ms;
        beat.at = Instant::now();
        if bound.revision > beat.bound_revision {
            beat.bound_lease = bound.lease;
            beat.bound_revision = bound.revision;
        }
        if bound.record_revision >= beat.record_revision {
            beat.record = bound.record;
            beat.record_revision = bound.record_revision;
        }
    }
}

/// What a heartbeat needs after looking at memory.
enum Touched {
    /// Remembered; nothing to write.
    Done,
    /// The key is not bound to this manager's lease (as far as it knows).
    Unbound,
    /// The node reports a new sync state: its record must be written.
    SyncChanged(Box<NodeRecord>, i64),
}

impl Inner {
    /// A heartbeat: memory only, unless the key must be bound here or the
    /// node's sync report changed (see the module doc).
    pub(super) async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        now_ms: u64,
        sync: Option<SyncReport>,
    ) -> StoreResult<bool> {
        let alive_key = self.alive_key(cluster, node_id);
        let lease = self.liveness.confirmed_lease()?;
        let touched = {
            let mut beats = self.liveness.lock();
            match beats.get_mut(&alive_key) {
                Some(beat) if beat.bound_lease == lease => {
                    beat.last_ms = now_ms;
                    beat.at = Instant::now();
                    if beat.record.sync == sync {
                        Touched::Done
                    } else {
                        Touched::SyncChanged(Box::new(beat.record.clone()), beat.record_revision)
                    }
                }
                _ => Touched::Unbound,
            }
        };
        let (record, revision) = match touched {
            Touched::Done => return Ok(true),
            Touched::SyncChanged(record, revision) => (*record, revision),
            Touched::Unbound => {
                let Some(bound) = self.bind(alive_key.clone(), cluster, node_id).await? else {
                    return Ok(false);
                };
                let (record, revision) = (bound.record.clone(), bound.record_revision);
                self.liveness.bound(alive_key.clone(), now_ms, bound);
                if record.sync == sync {
                    return Ok(true);
                }
                (record, revision)
            }
        };
        self.write_sync(alive_key, record, revision, now_ms, sync)
            .await
    }

    /// Queues `alive_key` for the next bind transaction and waits for it.
    /// `None`: the node is not registered.
    async fn bind(
        &self,
        alive_key: Vec<u8>,
        cluster: &str,
        node_id: &str,
    ) -> StoreResult<Option<Bound>> {
        let (done, outcome) = oneshot::channel();
        let request = Bind {
            alive_key,
            node_key: self.node_key(cluster, node_id),
            done,
        };
        let closed = || StoreError::unavailable("etcd store closed");
        self.liveness
            .binds
            .send(request)
            .await
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    /// Rewrites a node's record with its new sync report, as long as the
    /// record is the one known (a node deleted or re-registered meanwhile is
    /// neither resurrected nor overwritten).
    async fn write_sync(
        &self,
        alive_key: Vec<u8>,
        mut record: NodeRecord,
        mut revision: i64,
        now_ms: u64,
        sync: Option<SyncReport>,
    ) -> StoreResult<bool> {
        let node_key = self.node_key(&record.cluster, &record.node_id);
        for _ in 0..HEARTBEAT_RETRIES {
            record.last_heartbeat_ms = now_ms;
            record.sync.clone_from(&sync);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    node_key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::put(node_key.clone(), to_json(&record)?, None)])
                .or_else([TxnOp::get(node_key.clone(), None)]);
            let resp = self.txn("write sync report", txn).await?;
            let txn_revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            if resp.succeeded() {
                let mut beats = self.liveness.lock();
                if let Some(beat) = beats.get_mut(&alive_key) {
                    beat.record = record;
                    beat.record_revision = txn_revision;
                }
                return Ok(true);
            }
            // Someone else wrote the record: start again from theirs.
            let current = resp.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            let Some(kv) = current else {
                self.liveness.forget(&[alive_key]);
                return Ok(false);
            };
            record = parse_node(&kv)?;
            revision = kv.mod_revision();
        }
        Err(StoreError::unavailable(format!(
            "heartbeat of {:?}/{:?}: the record kept changing",
            record.cluster, record.node_id
        )))
    }

    /// A registration: the record and its `alive/` key bound to this
    /// manager's lease, in one transaction.
    pub(super) async fn put_node(&self, node: NodeRecord) -> StoreResult<()> {
        let lease = self.liveness.lease()?;
        let alive_key = self.alive_key(&node.cluster, &node.node_id);
        let txn = Txn::new().and_then([
            TxnOp::put(
                self.node_key(&node.cluster, &node.node_id),
                to_json(&node)?,
                None,
            ),
            TxnOp::put(
                alive_key.clone(),
                self.advertise.as_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        ]);
        let resp = self.txn("put node", txn).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let now_ms = node.last_heartbeat_ms;
        self.liveness.bound(
            alive_key,
            now_ms,
            Bound {
                lease,
                revision,
                record: node,
                record_revision: revision,
            },
        );
        Ok(())
    }

    /// Writes queued binds, up to [`BATCH`] per transaction, until the store
    /// closes. One node's bind is a nested transaction: bind the key and read
    /// the record if the node is registered.
    pub(super) async fn bind_loop(self: Arc<Self>, queue: BindQueue) {
        let mut queue = queue.0;
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => return,
                b = queue.recv() => match b { Some(b) => b, None => return },
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(b) => batch.push(b),
                    Err(_) => break,
                }
            }
            let outcomes = self.bind_batch(&batch).await;
            match outcomes {
                Ok(outcomes) => {
                    for (bind, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = bind.done.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    // Every waiter gets the same failure, of the same kind.
                    let unavailable = e.is_unavailable();
                    let cause = Arc::new(e);
                    for bind in batch {
                        let what = "bind the node's liveness key";
                        let err = if unavailable {
                            StoreError::unavailable(what)
                        } else {
                            StoreError::internal(what)
                        };
                        let _ = bind.done.send(Err(err.caused_by(cause.clone())));
                    }
                }
            }
        }
    }

    async fn bind_batch(&self, batch: &[Bind]) -> StoreResult<Vec<Option<Bound>>> {
        let lease = self.liveness.lease()?;
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|b| {
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::version(b.node_key.clone(), CompareOp::Greater, 0)])
                        .and_then([
                            TxnOp::put(
                                b.alive_key.clone(),
                                self.advertise.as_bytes(),
                                Some(PutOptions::new().with_lease(lease)),
                            ),
                            TxnOp::get(b.node_key.clone(), None),
                        ]),
                )
            })
            .collect();
        let resp = self.txn("bind nodes", Txn::new().and_then(ops)).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let mut out = Vec::with_capacity(batch.len());
        for op in resp.op_responses() {
            let TxnOpResponse::Txn(nested) = op else {
                return Err(StoreError::internal("bind nodes: unexpected answer"));
            };
            if !nested.succeeded() {
                out.push(None);
                continue;
            }
            let kv = nested.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            let kv = kv.ok_or_else(|| StoreError::internal("bind nodes: record not read"))?;
            out.push(Some(Bound {
                lease,
                revision,
                record: parse_node(&kv)?,
                record_revision: kv.mod_revision(),
            }));
        }
        if out.len() != batch.len() {
            return Err(StoreError::internal("bind nodes: answers missing"));
        }
        Ok(out)
    }

    /// Every sweep period, deletes the keys of nodes silent here for a TTL
    /// that are still bound to this manager's lease.
    pub(super) async fn sweep_loop(self: Arc<Self>) {
        let ttl = Duration::from_secs(self.node_ttl_secs as u64);
        let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let lease = self.liveness.lease.load(Ordering::SeqCst);
            let silent: Vec<Vec<u8>> = {
                let mut beats = self.liveness.lock();
                // Nodes bound elsewhere are their new manager's business.
                beats.retain(|_, b| b.at.elapsed() <= ttl || b.bound_lease == lease);
                beats
                    .iter()
                    .filter(|(_, b)| b.at.elapsed() > ttl)
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            for chunk in silent.chunks(BATCH) {
                match self.sweep(chunk, lease).await {
                    Ok(()) => {
                        let mut beats = self.liveness.lock();
                        for key in chunk {
                            // A heartbeat that came in meanwhile binds again.
                            match beats.get_mut(key) {
                                Some(b) if b.at.elapsed() > ttl => {
                                    beats.remove(key);
                                }
                                Some(b) => b.bound_lease = 0,
                                None => {}
                            }
                        }
                    }
                    Err(e) => {
                        // Kept in memory: the next sweep tries again.
                        tracing::warn!(error = %crate::telemetry::with_causes(&e), "cannot mark silent nodes dead");
                        break;
                    }
                }
            }
        }
    }

    async fn sweep(&self, keys: &[Vec<u8>], lease: i64) -> StoreResult<()> {
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|key| {
                TxnOp::txn(
                    Txn::new()
                        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                        .and_then([TxnOp::delete(key.clone(), None)]),
                )
            })
            .collect();
        self.txn("mark silent nodes dead", Txn::new().and_then(ops))
            .await?;
        tracing::debug!(nodes = keys.len(), "silent nodes marked dead");
        Ok(())
    }

    /// Keeps this manager's liveness lease alive, granting a new one when it
    /// expired (the nodes bound to the old one bind again with their next
    /// heartbeat), until the store closes.
    pub(super) async fn liveness_lease_loop(self: Arc<Self>) {
        let period = LEASE_REFRESH.min(Duration::from_millis(self.node_ttl_secs as u64 * 1000 / 3));
        self.lease_loop(
            "liveness lease",
            &self.liveness.lease,
            period,
            || self.grant_liveness_lease(),
            || self.liveness.confirm(),
        )
        .await
    }

    pub(super) async fn grant_liveness_lease(&self) -> StoreResult<()> {
        let lease = self
            .grant("grant liveness lease", self.node_ttl_secs)
            .await?;
        self.liveness.lease.store(lease, Ordering::SeqCst);
        self.liveness.confirm();
        Ok(())
    }

    /// Follows `alive/` so this manager learns when a key it bound was bound
    /// elsewhere or deleted; reads everything again after a break.
    pub(super) async fn alive_watch_loop(self: Arc<Self>) {
        self.watch_rounds("liveness watch", || self.alive_watch_once())
            .await
    }

    async fn alive_watch_once(&self) -> StoreError {
        let prefix = self.key("alive/");
        let (keys, revision) = match self.range_all("read live nodes", &prefix, 0, true).await {
            Ok(read) => read,
            Err(f) => return f.into_store("read live nodes"),
        };
        {
            let present: HashMap<&[u8], (i64, i64)> = keys
                .iter()
                .map(|kv| (kv.key(), (kv.lease(), kv.mod_revision())))
                .collect();
            let mut beats = self.liveness.lock();
            let known: HashSet<Vec<u8>> = beats.keys().cloned().collect();
            for key in known {
                match present.get(key.as_slice()) {
                    Some(&(lease, rev)) => self.liveness.learn(&mut beats, &key, lease, rev),
                    None => self.liveness.learn(&mut beats, &key, 0, revision),
                }
            }
        }
        // What changed while nobody watched was read: the node lists
        // followed for WatchNodes are listed again.
        self.feed.nodes_changed(None);
        let (_watcher, mut stream) = match self.open_watch(prefix, revision + 1).await {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        loop {
            let resp = match super::next_watch_response(&mut stream).await {
                Ok(resp) => resp,
                Err(e) => return e,
            };
            let mut changed = HashSet::new();
            {
                let mut beats = self.liveness.lock();
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let lease = match event.event_type() {
                        EventType::Delete => 0,
                        EventType::Put => kv.lease(),
                    };
                    self.liveness
                        .learn(&mut beats, kv.key(), lease, kv.mod_revision());
                    changed.insert(self.cluster_of_alive_key(kv.key()));
                }
            }
            // A node registered, died or came alive again, through any
            // manager (a key bound anew to another lease, too: listed
            // again, and nothing announced when nothing changed).
            for cluster in changed {
                match cluster {
                    Some(c) => self.feed.nodes_changed(Some(&c)),
                    None => self.feed.nodes_changed(None),
                }
            }
        }
    }
}
