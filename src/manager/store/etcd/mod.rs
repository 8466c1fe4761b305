//! The HA store: nodes, liveness and catalogs in a real etcd cluster.
//!
//! Several managers connect to one etcd and serve the same state; none keeps
//! anything of its own. Every key lives under a prefix (`/cflux/v1/` by
//! default). Cluster names may hold any UTF-8 (`/` included), so they appear
//! in keys hex-encoded, which also keeps etcd's byte order equal to the
//! names' order:
//!
//! | key                                   | value                                   |
//! |---------------------------------------|-----------------------------------------|
//! | `nodes/{hexcluster}/{node_id}`        | JSON [`NodeRecord`]                     |
//! | `alive/{hexcluster}/{node_id}`        | the binding manager, on its liveness lease |
//! | `meta/{hexcluster}`                   | JSON head `{version, blob, chunks, len, history_id}`|
//! | `blobs/{hexcluster}/{blob}/{i:08}`    | one chunk (≤ 1 MiB) of a catalog        |
//! | `history/{hexcluster}/{version:020}`  | JSON kept version: its entry and blob   |
//! | `managers/{advertise}`                | empty, bound to this manager's lease    |
//!
//! *Liveness* ([`liveness`]): a node is alive while its `alive/` key exists,
//! bound to the liveness lease of the manager it heartbeats through. A
//! heartbeat costs etcd nothing unless the node just came to this manager or
//! reports a new sync state; the lease is kept alive by keep-alives, and a
//! sweeper deletes the keys of nodes that fell silent.
//!
//! *Catalogs* may exceed etcd's request limit (1.5 MiB by default), so a new
//! version is first written as chunks under a fresh blob id, then published by
//! one transaction that compares the head's `mod_revision` (or its absence for
//! version 0), replaces it, adds the version's history entry (which refers
//! to the same blob) and deletes the entries pruned beyond the history
//! limits. The winner then deletes the blobs of the pruned entries; a loser
//! deletes its own. Readers fetch the head and then every chunk *at the head's
//! read revision*, so they never mix two versions; should that revision be
//! compacted meanwhile, they start over.
//!
//! *Change feed.* A background task reads the catalogs someone is subscribed
//! to (see [`CatalogFeed::watched_clusters`]), publishes them, then watches `meta/`
//! from the read's revision + 1 and publishes every new head it sees (a
//! deleted head: the cluster was deleted, its watchers are told). When
//! the watch breaks (a member died, the history was compacted) it reads again
//! and watches again, backing off while etcd stays unreachable. The
//! liveness watch (below) signals node changes the same way: every `alive/`
//! key put or deleted, by any manager or by a lease running out, tells the
//! feed that its cluster's nodes may have changed (for `WatchNodes`).
//!
//! *Compaction.* Writes (pushes, registrations, binds) leave a revision behind each, and
//! etcd keeps every one until someone compacts: its database would grow to
//! its quota and then refuse every write. Every `--etcd-compaction-interval`
//! (default 5 min, as Kubernetes' API server does) each manager compacts
//! etcd to the revision it saw one interval earlier, so readers and watches
//! always have one interval of history (a read that still falls behind
//! starts over, as above). Revisions are etcd-wide: the compaction covers
//! every prefix on that etcd. Two managers compacting to the same revision is
//! harmless; the second is told it was done already.
//!
//! Every etcd call runs under a deadline: an unreachable etcd surfaces as
//! [`StoreError::Unavailable`] within seconds, never as a hang.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, GetResponse,
    KeyValue, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

mod liveness;
use liveness::Liveness;

use super::{
    new_history_id, CasOutcome, CatalogFeed, ChangeNote, ClusterRemoval, HistoryEntry,
    HistoryLimits, NodeRecord, NodeStatus, RemovedCluster, Snapshot, Store, StoreError,
    StoreOptions, StoreResult, SyncReport,
};

/// The key prefix every store shares unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/cflux/v1/";

/// Largest catalog chunk written in one request (etcd refuses requests over
/// 1.5 MiB by default).
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// Deadline of one store operation against etcd (retries included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of establishing a TCP connection to one member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of [`Store::ping`].
const PING_TIMEOUT: Duration = Duration::from_millis(1500);
/// Lease of this manager's `managers/` key, refreshed every third of it.
const MANAGER_TTL_SECS: i64 = 10;
const MANAGER_REFRESH: Duration = Duration::from_secs(3);
/// Range reads fetch at most this many keys per request.
const PAGE_SIZE: i64 = 500;
/// Whole-read restarts after a compaction before giving up.
const COMPACTION_RETRIES: usize = 8;
/// Optimistic retries of a heartbeat racing other writers of the record.
const HEARTBEAT_RETRIES: usize = 8;
/// Optimistic retries of a cluster deletion racing pushes to its catalog.
const DELETE_RETRIES: usize = 8;
/// Catalog chunks written concurrently.
const CHUNK_WRITERS: usize = 4;
/// Back-off between retries of one request.
const RETRY_MIN_BACKOFF: Duration = Duration::from_millis(20);
const RETRY_MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Back-off of the background tasks while etcd stays unreachable.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A watch that stayed up this long resets the back-off.
const HEALTHY_WATCH: Duration = Duration::from_secs(10);
/// Decoding limit of range responses (pages of node records).
const MAX_DECODE: usize = 64 * 1024 * 1024;

/// The current version of a catalog, stored at `meta/{hexcluster}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    version: u64,
    /// The blob id whose chunks hold the data.
    blob: String,
    chunks: u32,
    len: u64,
    /// Empty in heads written before history IDs existed.
    #[serde(default)]
    history_id: String,
}

/// A kept version, stored at `history/{hexcluster}/{version:020}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredEntry {
    entry: HistoryEntry,
    /// The blob holding the version's bytes (shared with the head while it
    /// is current).
    blob: String,
    chunks: u32,
}

impl StoredEntry {
    fn head(&self) -> Head {
        Head {
            version: self.entry.version,
            blob: self.blob.clone(),
            chunks: self.chunks,
            len: self.entry.size_bytes,
            history_id: self.entry.history_id.clone(),
        }
    }
}

/// A failed etcd call: either the history we asked for is gone (restart the
/// read) or a plain store error.
#[derive(Debug)]
enum Fail {
    Compacted,
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    fn into_store(self, what: &str) -> StoreError {
        match self {
            Fail::Compacted => {
                StoreError::unavailable(format!("etcd {what}: the revision read was compacted"))
            }
            Fail::Store(e) => e,
        }
    }
}

/// Classifies an etcd client error.
fn classify(what: &str, e: etcd_client::Error) -> Fail {
    use tonic::Code;
    let failed = match &e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::OutOfRange => return Fail::Compacted,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
            | Code::Unimplemented => StoreError::internal(format!("etcd {what}")),
            _ => StoreError::unavailable(format!("etcd {what}")),
        },
        etcd_client::Error::InvalidArgs(_) => StoreError::internal(format!("etcd {what}")),
        _ => StoreError::unavailable(format!("etcd {what}")),
    };
    Fail::Store(failed.caused_by(e))
}

/// Runs one etcd request under `deadline`, retrying transient failures (a
/// request routed to a member that just died fails fast; another member
/// answers the retry). Every request issued this way is safe to repeat.
async fn call_within<T, F, Fut>(what: &str, deadline: Duration, mut op: F) -> Result<T, Fail>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let attempts = async {
        let mut backoff = Backoff::new(RETRY_MIN_BACKOFF, RETRY_MAX_BACKOFF);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => match classify(what, e) {
                    Fail::Store(e) if e.is_unavailable() => {
                        tracing::debug!(error = %crate::telemetry::with_causes(&e), "retrying");
                        backoff.wait().await;
                    }
                    other => return Err(other),
                },
            }
        }
    };
    match tokio::time::timeout(deadline, attempts).await {
        Ok(r) => r,
        Err(_) => Err(Fail::Store(StoreError::unavailable(format!(
            "etcd {what}: no answer within {deadline:?}"
        )))),
    }
}

async fn call<T, F, Fut>(what: &str, op: F) -> Result<T, Fail>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    call_within(what, REQUEST_TIMEOUT, op).await
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: everything from the prefix on.
    vec![0]
}

fn read_revision(resp: &GetResponse) -> StoreResult<i64> {
    resp.header()
        .map(|h| h.revision())
        .filter(|r| *r > 0)
        .ok_or_else(|| StoreError::internal("etcd answered without a revision"))
}

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    client: Client,
    kv: KvClient,
    prefix: String,
    node_ttl_secs: i64,
    advertise: String,
    /// Where catalogs other managers wrote are announced.
    feed: Arc<dyn CatalogFeed>,
    cancel: CancellationToken,
    /// The lease of this manager's `managers/` key (0: none).
    manager_lease: AtomicI64,
    history: HistoryLimits,
    /// How often to compact etcd's revisions; zero: never.
    compaction_interval: Duration,
    liveness: Liveness,
}

impl EtcdStore {
    /// Connects to an etcd cluster (give every member: the client fails over
    /// between them), registers this manager and starts the change feed,
    /// which announces to `feed` every catalog written through any manager.
    ///
    /// Fails with [`StoreError::Unavailable`] within seconds when etcd cannot
    /// be reached.
    pub async fn connect(
        endpoints: &[String],
        opts: StoreOptions,
        feed: Arc<dyn CatalogFeed>,
    ) -> StoreResult<Arc<EtcdStore>> {
        Self::connect_with_prefix(endpoints, DEFAULT_PREFIX, opts, feed).await
    }

    /// [`EtcdStore::connect`] with a key prefix other than [`DEFAULT_PREFIX`]
    /// (several independent deployments sharing one etcd).
    pub async fn connect_with_prefix(
        endpoints: &[String],
        prefix: &str,
        opts: StoreOptions,
        feed: Arc<dyn CatalogFeed>,
    ) -> StoreResult<Arc<EtcdStore>> {
        if endpoints.is_empty() {
            return Err(StoreError::internal("no etcd endpoints given"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // etcd refuses pings more often than every 5 s, and any ping on a
            // connection without streams (keep_alive_while_idle stays off).
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_tcp_keepalive(Duration::from_secs(30))
            // A member cut off from the quorum fails requests (and cancels
            // watches) instead of serving stale data silently.
            .with_require_leader(true);
        let client =
            match tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(options)))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(classify("connect", e).into_store("connect")),
                Err(_) => {
                    return Err(StoreError::unavailable(format!(
                        "etcd connect: no answer within {REQUEST_TIMEOUT:?}"
                    )))
                }
            };
        let kv = client.kv_client().max_decoding_message_size(MAX_DECODE);
        let node_ttl_secs = (opts.node_ttl.as_millis().div_ceil(1000) as i64).max(1);
        let (liveness, binds) = Liveness::new();
        let inner = Arc::new(Inner {
            client,
            kv,
            prefix,
            node_ttl_secs,
            advertise: opts.advertise,
            feed,
            cancel: CancellationToken::new(),
            manager_lease: AtomicI64::new(0),
            history: opts.history,
            compaction_interval: opts.etcd_compaction_interval,
            liveness,
        });
        // Proves etcd reachable (and writable) before anything runs.
        inner.register_manager().await?;
        inner.grant_liveness_lease().await?;

        let mut tasks = vec![
            tokio::spawn(inner.clone().feed_loop()),
            tokio::spawn(inner.clone().manager_loop()),
            tokio::spawn(inner.clone().liveness_lease_loop()),
            tokio::spawn(inner.clone().alive_watch_loop()),
            tokio::spawn(inner.clone().sweep_loop()),
            tokio::spawn(inner.clone().bind_loop(binds)),
        ];
        if !inner.compaction_interval.is_zero() {
            tasks.push(tokio::spawn(inner.clone().compaction_loop()));
        }
        Ok(Arc::new(EtcdStore {
            inner,
            tasks: Mutex::new(tasks),
        }))
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // The background tasks hold only `Inner`: stop them with the store.
        self.inner.cancel.cancel();
    }
}

// ---------------------------------------------------------------------------
// Keys

impl Inner {
    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{}", self.prefix, rest).into_bytes()
    }

    fn node_key(&self, cluster: &str, node_id: &str) -> Vec<u8> {
        self.key(&format!("nodes/{}/{}", hex::encode(cluster), node_id))
    }

    fn alive_key(&self, cluster: &str, node_id: &str) -> Vec<u8> {
        self.key(&format!("alive/{}/{}", hex::encode(cluster), node_id))
    }

    fn meta_prefix(&self) -> Vec<u8> {
        self.key("meta/")
    }

    fn meta_key(&self, cluster: &str) -> Vec<u8> {
        self.key(&format!("meta/{}", hex::encode(cluster)))
    }

    fn blob_prefix(&self, cluster: &str, blob: &str) -> Vec<u8> {
        self.key(&format!("blobs/{}/{}/", hex::encode(cluster), blob))
    }

    fn chunk_key(&self, cluster: &str, blob: &str, index: u32) -> Vec<u8> {
        let mut key = self.blob_prefix(cluster, blob);
        key.extend_from_slice(format!("{index:08}").as_bytes());
        key
    }

    fn history_prefix(&self, cluster: &str) -> Vec<u8> {
        self.key(&format!("history/{}/", hex::encode(cluster)))
    }

    fn history_key(&self, cluster: &str, version: u64) -> Vec<u8> {
        let mut key = self.history_prefix(cluster);
        key.extend_from_slice(format!("{version:020}").as_bytes());
        key
    }

    fn manager_prefix(&self) -> Vec<u8> {
        self.key("managers/")
    }

    /// The cluster of a `meta/{hexcluster}` key.
    fn cluster_of_meta_key(&self, key: &[u8]) -> StoreResult<String> {
        let prefix = self.meta_prefix();
        let hexname = key
            .strip_prefix(prefix.as_slice())
            .ok_or_else(|| StoreError::internal("catalog head outside the meta/ prefix"))?;
        let raw = hex::decode(hexname).map_err(|e| {
            StoreError::internal("catalog head key is not hex-encoded").caused_by(e)
        })?;
        String::from_utf8(raw)
            .map_err(|e| StoreError::internal("cluster name is not UTF-8").caused_by(e))
    }

    /// The cluster of an `alive/{hexcluster}/{node_id}` key; `None` for a
    /// key that is not one.
    fn cluster_of_alive_key(&self, key: &[u8]) -> Option<String> {
        let alive = self.key("alive/");
        let rest = key.strip_prefix(alive.as_slice())?;
        let hexname = &rest[..rest.iter().position(|b| *b == b'/')?];
        String::from_utf8(hex::decode(hexname).ok()?).ok()
    }

    fn closed(&self) -> StoreResult<()> {
        if self.cancel.is_cancelled() {
            Err(StoreError::unavailable("etcd store closed"))
        } else {
            Ok(())
        }
    }
}

fn parse_head(kv: &KeyValue) -> StoreResult<Head> {
    serde_json::from_slice(kv.value())
        .map_err(|e| StoreError::internal("malformed catalog head").caused_by(e))
}

fn parse_entry(kv: &KeyValue) -> StoreResult<StoredEntry> {
    serde_json::from_slice(kv.value())
        .map_err(|e| StoreError::internal("malformed history entry").caused_by(e))
}

fn parse_node(kv: &KeyValue) -> StoreResult<NodeRecord> {
    serde_json::from_slice(kv.value())
        .map_err(|e| StoreError::internal("malformed node record").caused_by(e))
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::internal("cannot encode").caused_by(e))
}

// ---------------------------------------------------------------------------
// Reads and writes

impl Inner {
    async fn get(
        &self,
        what: &str,
        key: Vec<u8>,
        opts: Option<GetOptions>,
    ) -> Result<GetResponse, Fail> {
        call(what, || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            let opts = opts.clone();
            async move { kv.get(key, opts).await }
        })
        .await
    }

    async fn txn(&self, what: &str, txn: Txn) -> StoreResult<etcd_client::TxnResponse> {
        call(what, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|f| f.into_store(what))
    }

    async fn grant(&self, what: &str, ttl: i64) -> StoreResult<i64> {
        let resp = call(what, || {
            let mut client = self.client.clone();
            async move { client.lease_grant(ttl, None).await }
        })
        .await
        .map_err(|f| f.into_store(what))?;
        if resp.id() == 0 {
            return Err(StoreError::internal(format!(
                "etcd {what}: no lease granted: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    /// Every key under `prefix`, paging through a range too big for one
    /// response, all at one revision (`revision` or, with 0, the current one).
    /// Returns the keys and that revision.
    async fn range_all(
        &self,
        what: &str,
        prefix: &[u8],
        revision: i64,
        keys_only: bool,
    ) -> Result<(Vec<KeyValue>, i64), Fail> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut revision = revision;
        let mut out = Vec::new();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            if keys_only {
                opts = opts.with_keys_only();
            }
            let mut resp = self.get(what, start.clone(), Some(opts)).await?;
            if revision == 0 {
                revision = read_revision(&resp)?;
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            out.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((out, revision))
    }

    /// The current head of a catalog with its `mod_revision`, and the read's revision.
    async fn read_head(&self, cluster: &str) -> Result<(Option<(Head, i64)>, i64), Fail> {
        let resp = self
            .get("read catalog head", self.meta_key(cluster), None)
            .await?;
        let revision = read_revision(&resp)?;
        match resp.kvs().first() {
            None => Ok((None, revision)),
            Some(kv) => Ok((Some((parse_head(kv)?, kv.mod_revision())), revision)),
        }
    }

    /// The chunks of `head` as they were at `revision`.
    async fn read_blob(&self, cluster: &str, head: &Head, revision: i64) -> Result<Bytes, Fail> {
        let len =
            usize::try_from(head.len).map_err(|_| StoreError::internal("catalog too large"))?;
        let mut data = BytesMut::with_capacity(len.min(1 << 30));
        // One key per request: a page of several chunks could exceed the
        // client's decoding limit.
        for index in 0..head.chunks {
            let key = self.chunk_key(cluster, &head.blob, index);
            let opts = GetOptions::new().with_revision(revision);
            let resp = self.get("read catalog chunk", key, Some(opts)).await?;
            let kv = resp.kvs().first().ok_or_else(|| {
                StoreError::internal(format!(
                    "catalog of {cluster:?} v{}: chunk {index} of blob {} is missing",
                    head.version, head.blob
                ))
            })?;
            data.extend_from_slice(kv.value());
        }
        if data.len() as u64 != head.len {
            return Err(StoreError::internal(format!(
                "catalog of {cluster:?} v{}: {} bytes read, {} expected",
                head.version,
                data.len(),
                head.len
            ))
            .into());
        }
        Ok(data.freeze())
    }

    /// A consistent snapshot of a catalog (retried across compactions).
    async fn read_snapshot(&self, cluster: &str) -> StoreResult<Snapshot> {
        for _ in 0..COMPACTION_RETRIES {
            let (head, revision) = self
                .read_head(cluster)
                .await
                .map_err(|f| f.into_store("read catalog head"))?;
            let Some((head, _)) = head else {
                return Ok(Snapshot::empty(cluster));
            };
            match self.read_blob(cluster, &head, revision).await {
                Ok(data) => {
                    return Ok(Snapshot {
                        cluster: cluster.to_owned(),
                        version: head.version,
                        data,
                        history_id: head.history_id,
                    })
                }
                Err(Fail::Compacted) => continue,
                Err(Fail::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::unavailable(format!(
            "catalog of {cluster:?}: compacted under every read attempt"
        )))
    }

    /// Deletes a blob's chunks, logging failures (what is left is garbage,
    /// never referenced).
    async fn delete_blob(&self, cluster: &str, blob: &str) {
        let prefix = self.blob_prefix(cluster, blob);
        let result = call("delete catalog blob", || {
            let mut kv = self.kv.clone();
            let prefix = prefix.clone();
            async move {
                kv.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await;
        if let Err(f) = result {
            tracing::warn!(
                cluster,
                blob,
                "leaving an unreferenced catalog blob behind: {}",
                f.into_store("delete catalog blob")
            );
        }
    }

    async fn write_blob(&self, cluster: &str, blob: &str, data: &Bytes) -> StoreResult<u32> {
        let chunks: Vec<(u32, Bytes)> = data
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, c)| (i as u32, data.slice_ref(c)))
            .collect();
        let count =
            u32::try_from(chunks.len()).map_err(|_| StoreError::internal("catalog too large"))?;
        futures::stream::iter(chunks)
            .map(|(index, chunk)| {
                let key = self.chunk_key(cluster, blob, index);
                async move {
                    call("write catalog chunk", || {
                        let mut kv = self.kv.clone();
                        let key = key.clone();
                        let value = chunk.to_vec();
                        async move { kv.put(key, value, None).await }
                    })
                    .await
                    .map_err(|f| f.into_store("write catalog chunk"))
                }
            })
            .buffer_unordered(CHUNK_WRITERS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(count)
    }

    /// The kept versions of a catalog, newest first.
    async fn read_history(&self, cluster: &str) -> StoreResult<Vec<StoredEntry>> {
        let (kvs, _) = self
            .range_all("read history", &self.history_prefix(cluster), 0, false)
            .await
            .map_err(|f| f.into_store("read history"))?;
        let mut out = kvs
            .iter()
            .map(parse_entry)
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn read_version(
        &self,
        cluster: &str,
        version: u64,
    ) -> StoreResult<Option<(HistoryEntry, Bytes)>> {
        for _ in 0..COMPACTION_RETRIES {
            let resp = self
                .get(
                    "read history entry",
                    self.history_key(cluster, version),
                    None,
                )
                .await
                .map_err(|f| f.into_store("read history entry"))?;
            let revision = read_revision(&resp)?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(None);
            };
            let stored = parse_entry(kv)?;
            match self.read_blob(cluster, &stored.head(), revision).await {
                Ok(data) => return Ok(Some((stored.entry, data))),
                Err(Fail::Compacted) => continue,
                Err(Fail::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::unavailable(format!(
            "version {version} of {cluster:?}: compacted under every read attempt"
        )))
    }

    async fn cas_meta(
        &self,
        cluster: &str,
        expected: u64,
        expected_history: &str,
        data: Bytes,
        note: ChangeNote,
    ) -> StoreResult<CasOutcome> {
        let (current, _) = self
            .read_head(cluster)
            .await
            .map_err(|f| f.into_store("read catalog head"))?;
        let current_version = current.as_ref().map_or(0, |(h, _)| h.version);
        let current_history = current.as_ref().map_or("", |(h, _)| h.history_id.as_str());
        if current_version != expected
            || (!expected_history.is_empty() && expected_history != current_history)
        {
            return Ok(CasOutcome::Conflict(self.read_snapshot(cluster).await?));
        }
        let version = expected
            .checked_add(1)
            .ok_or_else(|| StoreError::internal("catalog version overflow"))?;
        let history_id = if current_history.is_empty() {
            new_history_id()
        } else {
            current_history.to_owned()
        };
        // Read after the head: a write in between moves the head, so the
        // swap below would fail; one that already shows in the history is a
        // lost race, answered without writing a blob.
        let kept = self.read_history(cluster).await?;
        if kept.iter().any(|k| k.entry.version >= version) {
            return Ok(CasOutcome::Conflict(self.read_snapshot(cluster).await?));
        }
        let sizes: Vec<(u64, u64)> = kept
            .iter()
            .map(|k| (k.entry.version, k.entry.size_bytes))
            .collect();
        let pruned = self.history.pruned(data.len() as u64, &sizes);

        let blob = uuid::Uuid::new_v4().simple().to_string();
        let chunks = match self.write_blob(cluster, &blob, &data).await {
            Ok(n) => n,
            Err(e) => {
                self.delete_blob(cluster, &blob).await;
                return Err(e);
            }
        };
        let head = Head {
            version,
            blob: blob.clone(),
            chunks,
            len: data.len() as u64,
            history_id: history_id.clone(),
        };
        let stored = StoredEntry {
            entry: HistoryEntry {
                version,
                history_id,
                size_bytes: data.len() as u64,
                note,
            },
            blob: blob.clone(),
            chunks,
        };
        let meta_key = self.meta_key(cluster);
        let compare = match &current {
            Some((_, mod_revision)) => {
                Compare::mod_revision(meta_key.clone(), CompareOp::Equal, *mod_revision)
            }
            None => Compare::create_revision(meta_key.clone(), CompareOp::Equal, 0),
        };
        let mut ops = vec![
            TxnOp::put(meta_key, to_json(&head)?, None),
            TxnOp::put(self.history_key(cluster, version), to_json(&stored)?, None),
        ];
        ops.extend(
            pruned
                .iter()
                .map(|v| TxnOp::delete(self.history_key(cluster, *v), None)),
        );
        let txn = Txn::new().when([compare]).and_then(ops);
        let compared = current.as_ref().map(|(_, r)| *r);
        let old = current.map(|(h, _)| h);
        let swapped = Swapped {
            old: old.as_ref(),
            kept: &kept,
            pruned: &pruned,
        };
        let succeeded = match self.txn("swap catalog head", txn).await {
            Ok(resp) => resp.succeeded(),
            Err(e) => {
                // The outcome is unknown (the request may still be applied):
                // look at the head before touching either blob.
                return match self.read_head(cluster).await {
                    Ok((Some((now, _)), _)) if now.blob == blob => {
                        self.after_swap(cluster, swapped).await;
                        Ok(CasOutcome::Accepted(version))
                    }
                    Ok((now, _)) if now.as_ref().map(|(_, r)| *r) != compared => {
                        // The head moved on without us: our swap can never apply.
                        self.delete_blob(cluster, &blob).await;
                        Err(e)
                    }
                    _ => Err(e),
                };
            }
        };
        if succeeded {
            self.after_swap(cluster, swapped).await;
            return Ok(CasOutcome::Accepted(version));
        }
        // Someone else swapped first — or a retried request of ours did, its
        // answer lost on the way back.
        match self.read_head(cluster).await {
            Ok((Some((now, _)), _)) if now.blob == blob => {
                self.after_swap(cluster, swapped).await;
                Ok(CasOutcome::Accepted(version))
            }
            Ok(_) => {
                // The head moved past the revision we compared: our blob can
                // never become current.
                self.delete_blob(cluster, &blob).await;
                Ok(CasOutcome::Conflict(self.read_snapshot(cluster).await?))
            }
            Err(f) => Err(f.into_store("read catalog head")),
        }
    }

    /// Deletes the blobs no kept version refers to any more: the pruned
    /// versions', and the replaced head's when it predates the history.
    async fn after_swap(&self, cluster: &str, swapped: Swapped<'_>) {
        for k in swapped.kept {
            if swapped.pruned.contains(&k.entry.version) {
                self.delete_blob(cluster, &k.blob).await;
            }
        }
        if let Some(old) = swapped.old {
            if !swapped.kept.iter().any(|k| k.blob == old.blob) {
                self.delete_blob(cluster, &old.blob).await;
            }
        }
    }
}

/// What a successful swap left unreferenced (see [`Inner::after_swap`]).
#[derive(Clone, Copy)]
struct Swapped<'a> {
    old: Option<&'a Head>,
    kept: &'a [StoredEntry],
    pruned: &'a [u64],
}

// ---------------------------------------------------------------------------
// Nodes

impl Inner {
    async fn get_node(&self, cluster: &str, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        let resp = self
            .get("get node", self.node_key(cluster, node_id), None)
            .await
            .map_err(|f| f.into_store("get node"))?;
        let record = resp.kvs().first().map(parse_node).transpose()?;
        Ok(record.map(|r| self.with_local_heartbeat(r)))
    }

    /// `record` with the last heartbeat this manager had from its node, when
    /// newer than the one written in it (see [`liveness`]).
    fn with_local_heartbeat(&self, mut record: NodeRecord) -> NodeRecord {
        let alive_key = self.alive_key(&record.cluster, &record.node_id);
        if let Some(last) = self.liveness.last_heartbeat_ms(&alive_key) {
            record.last_heartbeat_ms = record.last_heartbeat_ms.max(last);
        }
        record
    }

    async fn delete_node(&self, cluster: &str, node_id: &str) -> StoreResult<bool> {
        let node_key = self.node_key(cluster, node_id);
        let txn = Txn::new()
            .when([Compare::version(node_key.clone(), CompareOp::Greater, 0)])
            .and_then([
                TxnOp::delete(node_key, None),
                TxnOp::delete(self.alive_key(cluster, node_id), None),
            ]);
        let deleted = self.txn("delete node", txn).await?.succeeded();
        self.liveness.forget(&[self.alive_key(cluster, node_id)]);
        Ok(deleted)
    }

    async fn list_nodes(&self, cluster: Option<&str>) -> StoreResult<Vec<NodeStatus>> {
        let scope = match cluster {
            Some(c) => format!("{}/", hex::encode(c)),
            None => String::new(),
        };
        let nodes_prefix = self.key(&format!("nodes/{scope}"));
        let alive_prefix = self.key(&format!("alive/{scope}"));
        let nodes_root = self.key("nodes/");
        let alive_root = self.key("alive/");
        for _ in 0..COMPACTION_RETRIES {
            let (nodes, revision) = self
                .range_all("list nodes", &nodes_prefix, 0, false)
                .await
                .map_err(|f| f.into_store("list nodes"))?;
            let alive = match self
                .range_all("list live nodes", &alive_prefix, revision, true)
                .await
            {
                Ok((alive, _)) => alive,
                Err(Fail::Compacted) => continue,
                Err(Fail::Store(e)) => return Err(e),
            };
            let alive: HashSet<&[u8]> = alive
                .iter()
                .filter_map(|kv| kv.key().strip_prefix(alive_root.as_slice()))
                .collect();
            let mut out = Vec::with_capacity(nodes.len());
            for kv in &nodes {
                let record = self.with_local_heartbeat(parse_node(kv)?);
                let suffix = kv
                    .key()
                    .strip_prefix(nodes_root.as_slice())
                    .ok_or_else(|| StoreError::internal("node key outside the nodes/ prefix"))?;
                out.push(NodeStatus {
                    alive: alive.contains(suffix),
                    record,
                });
            }
            out.sort_by(|a, b| {
                (&a.record.cluster, &a.record.node_id).cmp(&(&b.record.cluster, &b.record.node_id))
            });
            return Ok(out);
        }
        Err(StoreError::unavailable(
            "list nodes: compacted under every read attempt",
        ))
    }

    /// One transaction deletes the cluster's records, head and history,
    /// guarded by "no `alive/` key in the cluster" and "the head is the one
    /// read", so neither a node registering nor a push is half-deleted;
    /// the blobs of the versions read go afterwards (a blob being written
    /// for a push meanwhile is not among them, and stays its push's).
    async fn delete_cluster(&self, cluster: &str) -> StoreResult<ClusterRemoval> {
        let scope = hex::encode(cluster);
        let nodes_prefix = self.key(&format!("nodes/{scope}/"));
        let alive_prefix = self.key(&format!("alive/{scope}/"));
        let prefix = || Some(DeleteOptions::new().with_prefix());
        for _ in 0..DELETE_RETRIES {
            let nodes = self.list_nodes(Some(cluster)).await?;
            let alive: Vec<NodeRecord> = nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.record.clone())
                .collect();
            if !alive.is_empty() {
                return Ok(ClusterRemoval::Alive(alive));
            }
            let (head, _) = self
                .read_head(cluster)
                .await
                .map_err(|f| f.into_store("read catalog head"))?;
            if nodes.is_empty() && head.is_none() {
                return Ok(ClusterRemoval::Unknown);
            }
            let kept = self.read_history(cluster).await?;
            let meta_key = self.meta_key(cluster);
            let head_unchanged = match &head {
                Some((_, mod_revision)) => {
                    Compare::mod_revision(meta_key.clone(), CompareOp::Equal, *mod_revision)
                }
                None => Compare::create_revision(meta_key.clone(), CompareOp::Equal, 0),
            };
            // Over a range, a compare holds when every key does; over no key
            // at all it compares a missing key's version, 0.
            let none_alive = Compare::version(alive_prefix.clone(), CompareOp::Equal, 0)
                .with_range(prefix_end(&alive_prefix));
            let txn = Txn::new().when([head_unchanged, none_alive]).and_then([
                TxnOp::delete(nodes_prefix.clone(), prefix()),
                TxnOp::delete(self.history_prefix(cluster), prefix()),
                TxnOp::delete(meta_key, None),
            ]);
            let resp = self.txn("delete cluster", txn).await?;
            if !resp.succeeded() {
                continue;
            }
            let deleted: Vec<i64> = resp
                .op_responses()
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Delete(d) => d.deleted(),
                    _ => 0,
                })
                .collect();
            let count =
                |i: usize| u32::try_from(deleted.get(i).copied().unwrap_or(0)).unwrap_or(u32::MAX);
            let head = head.map(|(h, _)| h);
            let mut blobs: Vec<&str> = kept.iter().map(|k| k.blob.as_str()).collect();
            blobs.extend(head.as_ref().map(|h| h.blob.as_str()));
            blobs.sort_unstable();
            blobs.dedup();
            self.liveness.forget_prefix(&alive_prefix);
            for blob in blobs {
                self.delete_blob(cluster, blob).await;
            }
            return Ok(ClusterRemoval::Removed(RemovedCluster {
                nodes: count(0),
                versions: count(1),
                version: head.map_or(0, |h| h.version),
            }));
        }
        Err(StoreError::unavailable(format!(
            "delete of cluster {cluster:?}: its catalog kept changing"
        )))
    }

    async fn list_catalogs(&self) -> StoreResult<Vec<(String, u64)>> {
        let (heads, _) = self
            .range_all("list catalogs", &self.meta_prefix(), 0, false)
            .await
            .map_err(|f| f.into_store("list catalogs"))?;
        let mut out = heads
            .iter()
            .map(|kv| Ok((self.cluster_of_meta_key(kv.key())?, parse_head(kv)?.version)))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }

    async fn list_managers(&self) -> StoreResult<Vec<String>> {
        let prefix = self.manager_prefix();
        let (keys, _) = self
            .range_all("list managers", &prefix, 0, true)
            .await
            .map_err(|f| f.into_store("list managers"))?;
        let mut out = keys
            .iter()
            .filter_map(|kv| kv.key().strip_prefix(prefix.as_slice()))
            .map(|k| {
                String::from_utf8(k.to_vec())
                    .map_err(|e| StoreError::internal("manager address is not UTF-8").caused_by(e))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn ping(&self) -> StoreResult<()> {
        let key = self.key("ping");
        // A linearizable read: answered only with a quorum behind it.
        call_within("ping", PING_TIMEOUT, || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map(|_| ())
        .map_err(|f| f.into_store("ping"))
    }
}

// ---------------------------------------------------------------------------
// This manager's registration

enum KeepAliveEnd {
    /// The lease is gone: register anew.
    Expired,
    /// The stream broke: keep the lease, open another stream.
    Broken(StoreError),
}

impl Inner {
    /// Grants a lease and puts `managers/{advertise}` on it.
    async fn register_manager(&self) -> StoreResult<i64> {
        let lease = self.grant("grant manager lease", MANAGER_TTL_SECS).await?;
        let key = self.key(&format!("managers/{}", self.advertise));
        call("register manager", || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            async move {
                kv.put(key, Vec::new(), Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await
        .map_err(|f| f.into_store("register manager"))?;
        self.manager_lease.store(lease, Ordering::SeqCst);
        Ok(lease)
    }

    /// Every compaction interval, compacts etcd to the revision seen at the
    /// previous tick (see the module doc), until the store closes.
    async fn compaction_loop(self: Arc<Self>) {
        let mut seen: Option<i64> = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.compaction_interval) => {}
            }
            if let Some(revision) = seen {
                self.compact(revision).await;
            }
            match self.current_revision().await {
                Ok(now) => seen = Some(now),
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::with_causes(&e), "cannot read etcd's revision; compacting at the next interval");
                    seen = None;
                }
            }
        }
    }

    async fn current_revision(&self) -> StoreResult<i64> {
        let key = self.key("managers/");
        let resp = call("read the revision", || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map_err(|f| f.into_store("read the revision"))?;
        read_revision(&resp)
    }

    /// Compacts etcd's history up to `revision`; failures are logged (the
    /// next interval tries again).
    async fn compact(&self, revision: i64) {
        let compacted = call("compact", || {
            let mut client = self.client.clone();
            async move { client.compact(revision, None).await }
        })
        .await;
        match compacted {
            Ok(_) => tracing::info!(revision, "compacted etcd's history"),
            // Another manager compacted to this revision (or past it) first.
            Err(Fail::Compacted) => {
                tracing::debug!(revision, "etcd's history was compacted already")
            }
            Err(Fail::Store(e)) => {
                tracing::warn!(revision, error = %crate::telemetry::with_causes(&e), "cannot compact etcd's history")
            }
        }
    }

    /// Keeps this manager's lease alive (re-registering after it expired)
    /// until the store closes.
    async fn manager_loop(self: Arc<Self>) {
        self.lease_loop(
            "manager lease",
            &self.manager_lease,
            MANAGER_REFRESH,
            || async { self.register_manager().await.map(|_| ()) },
            || {},
        )
        .await
    }

    /// Keeps the lease in `slot` alive every `period` (calling `refreshed`
    /// after each answer that kept it), `acquire`s a new one when there is
    /// none or it expired, and backs off while etcd stays unreachable, until
    /// the store closes.
    async fn lease_loop<A, Fut>(
        &self,
        what: &str,
        slot: &AtomicI64,
        period: Duration,
        acquire: A,
        refreshed: impl Fn(),
    ) where
        A: Fn() -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let lease = slot.load(Ordering::SeqCst);
            let outcome = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = async {
                    if lease == 0 {
                        acquire().await
                    } else {
                        match self.keep_alive(lease, period, &refreshed).await {
                            KeepAliveEnd::Expired => {
                                tracing::warn!("{what} expired; acquiring a new one");
                                slot.store(0, Ordering::SeqCst);
                                Ok(())
                            }
                            KeepAliveEnd::Broken(e) => Err(e),
                        }
                    }
                } => r,
            };
            match outcome {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::with_causes(&e), "{what} keep-alive failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = backoff.wait() => {}
                    }
                }
            }
        }
    }

    /// Refreshes `lease` every `period`, calling `refreshed` after each
    /// answer that kept it; returns when it expired or the stream broke.
    async fn keep_alive(&self, lease: i64, period: Duration, refreshed: impl Fn()) -> KeepAliveEnd {
        let opened = call("keep lease alive", || {
            let mut client = self.client.clone();
            async move { client.lease_keep_alive(lease).await }
        })
        .await;
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(f) => return KeepAliveEnd::Broken(f.into_store("keep lease alive")),
        };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return KeepAliveEnd::Broken(
                    classify("lease keep-alive", e).into_store("lease keep-alive"),
                );
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => refreshed(),
                Ok(Ok(Some(_))) => return KeepAliveEnd::Expired,
                Ok(Ok(None)) => {
                    return KeepAliveEnd::Broken(StoreError::unavailable(
                        "lease keep-alive stream ended",
                    ))
                }
                Ok(Err(e)) => {
                    return KeepAliveEnd::Broken(
                        classify("lease keep-alive", e).into_store("lease keep-alive"),
                    )
                }
                Err(_) => {
                    return KeepAliveEnd::Broken(StoreError::unavailable(
                        "lease keep-alive: no answer in time",
                    ))
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The change feed

/// The next answer of a watch `stream`, or why the watch ended: the stream
/// closed or failed, its history was compacted, or etcd cancelled it.
async fn next_watch_response(
    stream: &mut etcd_client::WatchStream,
) -> Result<etcd_client::WatchResponse, StoreError> {
    let resp = match stream.message().await {
        Ok(Some(resp)) => resp,
        Ok(None) => return Err(StoreError::unavailable("watch stream ended")),
        Err(e) => return Err(classify("watch", e).into_store("watch")),
    };
    if resp.compact_revision() != 0 {
        return Err(StoreError::unavailable(format!(
            "watch history compacted up to revision {}",
            resp.compact_revision()
        )));
    }
    if resp.canceled() {
        return Err(StoreError::unavailable(format!(
            "watch cancelled: {}",
            resp.cancel_reason()
        )));
    }
    Ok(resp)
}

impl Inner {
    /// Watches every key under `prefix` from `revision` on. The stream ends
    /// with the watcher it returns with.
    async fn open_watch(
        &self,
        prefix: Vec<u8>,
        revision: i64,
    ) -> StoreResult<(etcd_client::Watcher, etcd_client::WatchStream)> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        let mut client = self.client.clone();
        // Spawned: the client asserts on the server's first answer, and a
        // panic must end this round, not the feed.
        let created = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio::spawn(async move { client.watch(prefix, Some(options)).await }),
        )
        .await;
        match created {
            Ok(Ok(Ok(pair))) => Ok(pair),
            Ok(Ok(Err(e))) => Err(classify("watch", e).into_store("watch")),
            Ok(Err(join)) => Err(StoreError::unavailable("etcd watch").caused_by(join)),
            Err(_) => Err(StoreError::unavailable("etcd watch: no answer in time")),
        }
    }

    /// Reads, publishes and watches until the store closes.
    async fn feed_loop(self: Arc<Self>) {
        self.watch_rounds("catalog watch", || self.feed_once())
            .await
    }

    /// Runs read-then-watch `round`s until the store closes, backing off
    /// between them while etcd stays unreachable; `what` names the watch in
    /// logs.
    async fn watch_rounds<F, Fut>(&self, what: &str, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreError>,
    {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let started = Instant::now();
            let ended = tokio::select! {
                _ = self.cancel.cancelled() => return,
                e = round() => e,
            };
            if started.elapsed() >= HEALTHY_WATCH {
                backoff.reset();
            }
            let wait = backoff.next_wait();
            tracing::debug!("{what} interrupted: {ended}; reading again in {wait:?}");
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One read-then-watch round; returns why the watch ended.
    async fn feed_once(&self) -> StoreError {
        // A revision before every read below: whatever changes after it, the
        // watch delivers; whatever came before, the reads saw.
        let revision = match self
            .get(
                "read revision",
                self.meta_prefix(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(&self.meta_prefix()))
                        .with_count_only(),
                ),
            )
            .await
        {
            Ok(resp) => match read_revision(&resp) {
                Ok(r) => r,
                Err(e) => return e,
            },
            Err(f) => return f.into_store("read revision"),
        };
        for cluster in self.feed.watched_clusters() {
            match self.read_snapshot(&cluster).await {
                Ok(snapshot) => self.feed.publish(snapshot),
                Err(e) => return e,
            }
        }

        // Deletions too: a head is deleted only with its cluster.
        let (_watcher, mut stream) = match self.open_watch(self.meta_prefix(), revision + 1).await {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        loop {
            let resp = match next_watch_response(&mut stream).await {
                Ok(resp) => resp,
                Err(e) => return e,
            };
            // The newest head of each cluster in this batch.
            let mut latest: HashMap<String, (Head, i64)> = HashMap::new();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() == EventType::Delete {
                    // A deleted cluster: its watchers hear of it before
                    // any head written after the deletion in this batch.
                    match self.cluster_of_meta_key(kv.key()) {
                        Ok(cluster) => {
                            latest.remove(&cluster);
                            self.feed.removed(&cluster);
                        }
                        Err(e) => tracing::warn!("ignoring a catalog deletion: {e}"),
                    }
                    continue;
                }
                let parsed = self
                    .cluster_of_meta_key(kv.key())
                    .and_then(|c| Ok((c, parse_head(kv)?)));
                match parsed {
                    Ok((cluster, head)) => {
                        latest.insert(cluster, (head, kv.mod_revision()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::telemetry::with_causes(&e), "ignoring a catalog head")
                    }
                }
            }
            if latest.is_empty() {
                continue;
            }
            let watched: HashSet<String> = self.feed.watched_clusters().into_iter().collect();
            for (cluster, (head, revision)) in latest {
                if !watched.contains(&cluster) {
                    continue;
                }
                let snapshot = match self.read_blob(&cluster, &head, revision).await {
                    Ok(data) => Snapshot {
                        cluster,
                        version: head.version,
                        data,
                        history_id: head.history_id,
                    },
                    // Too old to read: the current version will do.
                    Err(Fail::Compacted) => match self.read_snapshot(&cluster).await {
                        Ok(s) => s,
                        Err(e) => return e,
                    },
                    Err(Fail::Store(e)) => return e,
                };
                self.feed.publish(snapshot);
            }
        }
    }
}

// ---------------------------------------------------------------------------

#[async_trait]
impl Store for EtcdStore {
    async fn put_node(&self, node: NodeRecord) -> StoreResult<()> {
        self.inner.closed()?;
        self.inner.put_node(node).await
    }

    async fn get_node(&self, cluster: &str, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        self.inner.closed()?;
        self.inner.get_node(cluster, node_id).await
    }

    async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        now_ms: u64,
        sync: Option<SyncReport>,
    ) -> StoreResult<bool> {
        self.inner.closed()?;
        self.inner.heartbeat(cluster, node_id, now_ms, sync).await
    }

    async fn delete_node(&self, cluster: &str, node_id: &str) -> StoreResult<bool> {
        self.inner.closed()?;
        self.inner.delete_node(cluster, node_id).await
    }

    async fn list_nodes(&self, cluster: Option<&str>) -> StoreResult<Vec<NodeStatus>> {
        self.inner.closed()?;
        self.inner.list_nodes(cluster).await
    }

    async fn get_meta(&self, cluster: &str) -> StoreResult<Snapshot> {
        self.inner.closed()?;
        self.inner.read_snapshot(cluster).await
    }

    async fn cas_meta(
        &self,
        cluster: &str,
        expected: u64,
        expected_history: &str,
        data: Bytes,
        note: ChangeNote,
    ) -> StoreResult<CasOutcome> {
        self.inner.closed()?;
        self.inner
            .cas_meta(cluster, expected, expected_history, data, note)
            .await
    }

    async fn history(&self, cluster: &str) -> StoreResult<Vec<HistoryEntry>> {
        self.inner.closed()?;
        Ok(self
            .inner
            .read_history(cluster)
            .await?
            .into_iter()
            .map(|k| k.entry)
            .collect())
    }

    async fn version(
        &self,
        cluster: &str,
        version: u64,
    ) -> StoreResult<Option<(HistoryEntry, Bytes)>> {
        self.inner.closed()?;
        self.inner.read_version(cluster, version).await
    }

    async fn delete_cluster(&self, cluster: &str) -> StoreResult<ClusterRemoval> {
        self.inner.closed()?;
        self.inner.delete_cluster(cluster).await
    }

    async fn list_catalogs(&self) -> StoreResult<Vec<(String, u64)>> {
        self.inner.closed()?;
        self.inner.list_catalogs().await
    }

    async fn list_managers(&self) -> StoreResult<Vec<String>> {
        self.inner.closed()?;
        self.inner.list_managers().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.closed()?;
        self.inner.ping().await?;
        // etcd answering is not enough: until the liveness lease is kept
        // alive again (the lease loop may still be backing off), heartbeats
        // would be refused.
        self.inner.liveness.confirmed_lease().map(|_| ())
    }

    async fn close(&self) {
        self.inner.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> = {
            let mut guard = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            guard.drain(..).collect()
        };
        for task in tasks {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, task).await;
        }
        // Leave the manager list now rather than when the lease runs out.
        let lease = self.inner.manager_lease.swap(0, Ordering::SeqCst);
        if lease != 0 {
            let mut client = self.inner.client.clone();
            let _ = tokio::time::timeout(PING_TIMEOUT, client.lease_revoke(lease)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/cflux/v1/meta/"), b"/cflux/v1/meta0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn hex_keeps_the_order_of_names() {
        let mut names = vec!["b", "a/b", "a", "ab", "é", "a b", ""];
        let mut keys: Vec<String> = names
            .iter()
            .map(|n| format!("{}/", hex::encode(n)))
            .collect();
        names.sort();
        keys.sort();
        let decoded: Vec<String> = keys
            .iter()
            .map(|k| String::from_utf8(hex::decode(&k[..k.len() - 1]).unwrap()).unwrap())
            .collect();
        assert_eq!(decoded, names);
    }
}
