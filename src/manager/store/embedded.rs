//! The embedded store: one redb file under `--data-dir`, for a single manager.
//!
//! Nodes and catalogs are written in durable redb transactions. Liveness is
//! kept in memory: a heartbeat is not worth an fsync, and after a restart
//! every known node gets one TTL of grace before it is listed dead, as the
//! manager cannot know what happened while it was down. What a heartbeat
//! reports about the node's sync is kept beside it, in memory too: the next
//! heartbeat after a restart reports it again.
//!
//! A catalog's history (its kept versions with their bytes and change notes)
//! and its history ID are written in the same transaction as the version.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::clock::now_ms;
use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    new_history_id, same_history, CasOutcome, Cause, ChangeNote, ClusterRemoval, HistoryEntry,
    NodeRecord, NodeStatus, RemovedCluster, Snapshot, Store, StoreError, StoreOptions, StoreResult,
    SyncReport,
};

/// (cluster, node id) → JSON node record.
const NODES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("nodes");
/// cluster → (version, catalog bytes).
const CATALOGS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("catalogs");
/// cluster → history ID.
const HISTORY_IDS: TableDefinition<&str, &str> = TableDefinition::new("history_ids");
/// (cluster, version) → JSON [`HistoryEntry`].
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
/// (cluster, version) → that version's catalog bytes.
const HISTORY_DATA: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history_data");

type NodeKey = (String, String);

/// A node's last heartbeat, as kept in memory.
struct Beat {
    at_ms: u64,
    sync: Option<SyncReport>,
}

/// A redb-backed [`Store`].
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Last heartbeat per node, in memory (see the module doc).
    heartbeats: Mutex<HashMap<NodeKey, Beat>>,
    opts: StoreOptions,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/cflux.redb`, off the async workers (opening
    /// reads the file and commits with an fsync).
    pub async fn open(dir: &Path, opts: StoreOptions) -> StoreResult<Arc<Self>> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, opts))
            .await
            .map_err(|e| StoreError::internal("store task failed").caused_by(e))?
    }

    fn open_blocking(dir: &Path, opts: StoreOptions) -> StoreResult<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::internal(format!("cannot create {}", dir.display())).caused_by(e)
        })?;
        let db = Database::create(dir.join("cflux.redb")).map_err(redb_failed)?;
        let txn = db.begin_write().map_err(redb_failed)?;
        txn.open_table(NODES).map_err(redb_failed)?;
        txn.open_table(HISTORY).map_err(redb_failed)?;
        txn.open_table(HISTORY_DATA).map_err(redb_failed)?;
        {
            // Catalogs written before history IDs existed get one now.
            let catalogs = txn.open_table(CATALOGS).map_err(redb_failed)?;
            let mut ids = txn.open_table(HISTORY_IDS).map_err(redb_failed)?;
            let mut missing = Vec::new();
            for entry in catalogs.iter().map_err(redb_failed)? {
                let (cluster, _) = entry.map_err(redb_failed)?;
                if ids.get(cluster.value()).map_err(redb_failed)?.is_none() {
                    missing.push(cluster.value().to_owned());
                }
            }
            for cluster in missing {
                ids.insert(cluster.as_str(), new_history_id().as_str())
                    .map_err(redb_failed)?;
            }
        }
        txn.commit().map_err(redb_failed)?;

        let restart = now_ms();
        let mut heartbeats = HashMap::new();
        for node in read_nodes(&db, None)? {
            let at_ms = node.last_heartbeat_ms.max(restart);
            heartbeats.insert((node.cluster, node.node_id), Beat { at_ms, sync: None });
        }
        Ok(Arc::new(EmbeddedStore {
            db: Arc::new(db),
            heartbeats: Mutex::new(heartbeats),
            opts,
        }))
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::internal("store task failed").caused_by(e))?
    }

    fn beats(&self) -> std::sync::MutexGuard<'_, HashMap<NodeKey, Beat>> {
        self.heartbeats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self, mut record: NodeRecord, now: u64) -> NodeStatus {
        let key = (record.cluster.clone(), record.node_id.clone());
        if let Some(beat) = self.beats().get(&key) {
            record.last_heartbeat_ms = record.last_heartbeat_ms.max(beat.at_ms);
            record.sync.clone_from(&beat.sync);
        }
        let ttl = self.opts.node_ttl.as_millis() as u64;
        let alive = now.saturating_sub(record.last_heartbeat_ms) < ttl;
        NodeStatus { record, alive }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn put_node(&self, node: NodeRecord) -> StoreResult<()> {
        let key = (node.cluster.clone(), node.node_id.clone());
        let beat = Beat {
            at_ms: node.last_heartbeat_ms,
            sync: node.sync.clone(),
        };
        let value = serde_json::to_vec(&node).map_err(redb_failed)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_failed)?;
            txn.open_table(NODES)
                .map_err(redb_failed)?
                .insert(
                    (node.cluster.as_str(), node.node_id.as_str()),
                    value.as_slice(),
                )
                .map_err(redb_failed)?;
            txn.commit().map_err(redb_failed)
        })
        .await?;
        self.beats().insert(key, beat);
        Ok(())
    }

    async fn get_node(&self, cluster: &str, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        let (c, id) = (cluster.to_owned(), node_id.to_owned());
        let record = self
            .blocking(move |db| {
                let txn = db.begin_read().map_err(redb_failed)?;
                let table = txn.open_table(NODES).map_err(redb_failed)?;
                let value = table.get((c.as_str(), id.as_str())).map_err(redb_failed)?;
                value.map(|v| decode_node(v.value())).transpose()
            })
            .await?;
        Ok(record.map(|r| self.status(r, now_ms()).record))
    }

    async fn heartbeat(
        &self,
        cluster: &str,
        node_id: &str,
        now: u64,
        sync: Option<SyncReport>,
    ) -> StoreResult<bool> {
        if self.get_node(cluster, node_id).await?.is_none() {
            return Ok(false);
        }
        let mut beats = self.beats();
        let beat = beats
            .entry((cluster.to_owned(), node_id.to_owned()))
            .or_insert(Beat {
                at_ms: now,
                sync: None,
            });
        beat.at_ms = beat.at_ms.max(now);
        beat.sync = sync;
        Ok(true)
    }

    async fn delete_node(&self, cluster: &str, node_id: &str) -> StoreResult<bool> {
        let (c, id) = (cluster.to_owned(), node_id.to_owned());
        let existed = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(redb_failed)?;
                let existed = txn
                    .open_table(NODES)
                    .map_err(redb_failed)?
                    .remove((c.as_str(), id.as_str()))
                    .map_err(redb_failed)?
                    .is_some();
                txn.commit().map_err(redb_failed)?;
                Ok(existed)
            })
            .await?;
        self.beats()
            .remove(&(cluster.to_owned(), node_id.to_owned()));
        Ok(existed)
    }

    async fn list_nodes(&self, cluster: Option<&str>) -> StoreResult<Vec<NodeStatus>> {
        let cluster = cluster.map(str::to_owned);
        let records = self
            .blocking(move |db| read_nodes(db, cluster.as_deref()))
            .await?;
        let now = now_ms();
        Ok(records.into_iter().map(|r| self.status(r, now)).collect())
    }

    async fn get_meta(&self, cluster: &str) -> StoreResult<Snapshot> {
        let c = cluster.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_failed)?;
            let table = txn.open_table(CATALOGS).map_err(redb_failed)?;
            let ids = txn.open_table(HISTORY_IDS).map_err(redb_failed)?;
            read_snapshot(&table, &ids, &c)
        })
        .await
    }

    async fn cas_meta(
        &self,
        cluster: &str,
        expected: u64,
        expected_history: &str,
        data: Bytes,
        note: ChangeNote,
    ) -> StoreResult<CasOutcome> {
        let c = cluster.to_owned();
        let expected_history = expected_history.to_owned();
        let limits = self.opts.history;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_failed)?;
            let outcome = {
                let mut table = txn.open_table(CATALOGS).map_err(redb_failed)?;
                let mut ids = txn.open_table(HISTORY_IDS).map_err(redb_failed)?;
                let current = read_snapshot(&table, &ids, &c)?;
                if current.version != expected || !same_history(&expected_history, &current) {
                    CasOutcome::Conflict(current)
                } else {
                    let version = expected
                        .checked_add(1)
                        .ok_or_else(|| StoreError::internal("catalog version overflow"))?;
                    let history_id = if current.history_id.is_empty() {
                        let id = new_history_id();
                        ids.insert(c.as_str(), id.as_str()).map_err(redb_failed)?;
                        id
                    } else {
                        current.history_id
                    };
                    table
                        .insert(c.as_str(), (version, data.as_ref()))
                        .map_err(redb_failed)?;
                    let entry = HistoryEntry {
                        version,
                        history_id,
                        size_bytes: data.len() as u64,
                        note,
                    };
                    let mut history = txn.open_table(HISTORY).map_err(redb_failed)?;
                    let mut history_data = txn.open_table(HISTORY_DATA).map_err(redb_failed)?;
                    let mut kept = Vec::new();
                    for row in history
                        .range((c.as_str(), 0)..(c.as_str(), version))
                        .map_err(redb_failed)?
                        .rev()
                    {
                        let (_, value) = row.map_err(redb_failed)?;
                        let old = decode_entry(value.value())?;
                        kept.push((old.version, old.size_bytes));
                    }
                    for old in limits.pruned(entry.size_bytes, &kept) {
                        history.remove((c.as_str(), old)).map_err(redb_failed)?;
                        history_data
                            .remove((c.as_str(), old))
                            .map_err(redb_failed)?;
                    }
                    let json = serde_json::to_vec(&entry).map_err(redb_failed)?;
                    history
                        .insert((c.as_str(), version), json.as_slice())
                        .map_err(redb_failed)?;
                    history_data
                        .insert((c.as_str(), version), data.as_ref())
                        .map_err(redb_failed)?;
                    CasOutcome::Accepted(version)
                }
            };
            match outcome {
                CasOutcome::Accepted(_) => txn.commit().map_err(redb_failed)?,
                CasOutcome::Conflict(_) => txn.abort().map_err(redb_failed)?,
            }
            Ok(outcome)
        })
        .await
    }

    async fn history(&self, cluster: &str) -> StoreResult<Vec<HistoryEntry>> {
        let c = cluster.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_failed)?;
            let history = txn.open_table(HISTORY).map_err(redb_failed)?;
            let mut out = Vec::new();
            for row in history
                .range((c.as_str(), 0)..=(c.as_str(), u64::MAX))
                .map_err(redb_failed)?
                .rev()
            {
                let (_, value) = row.map_err(redb_failed)?;
                out.push(decode_entry(value.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn version(
        &self,
        cluster: &str,
        version: u64,
    ) -> StoreResult<Option<(HistoryEntry, Bytes)>> {
        let c = cluster.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_failed)?;
            let history = txn.open_table(HISTORY).map_err(redb_failed)?;
            let history_data = txn.open_table(HISTORY_DATA).map_err(redb_failed)?;
            let Some(entry) = history.get((c.as_str(), version)).map_err(redb_failed)? else {
                return Ok(None);
            };
            let entry = decode_entry(entry.value())?;
            let data = history_data
                .get((c.as_str(), version))
                .map_err(redb_failed)?
                .ok_or_else(|| {
                    StoreError::internal(format!("the bytes of {c:?} v{version} are missing"))
                })?;
            Ok(Some((entry, Bytes::copy_from_slice(data.value()))))
        })
        .await
    }

    async fn delete_cluster(&self, cluster: &str) -> StoreResult<ClusterRemoval> {
        let c = cluster.to_owned();
        // Liveness is in memory; a node registering meanwhile is alive by
        // its record's own heartbeat time, read in the write transaction.
        let beats: HashMap<String, u64> = self
            .beats()
            .iter()
            .filter(|((bc, _), _)| *bc == c)
            .map(|((_, id), beat)| (id.clone(), beat.at_ms))
            .collect();
        let ttl = self.opts.node_ttl.as_millis() as u64;
        let removal = self
            .blocking(move |db| {
                let now = now_ms();
                let txn = db.begin_write().map_err(redb_failed)?;
                let removal = {
                    let mut nodes = txn.open_table(NODES).map_err(redb_failed)?;
                    let mut records = Vec::new();
                    for entry in nodes.range((c.as_str(), "")..).map_err(redb_failed)? {
                        let (key, value) = entry.map_err(redb_failed)?;
                        if key.value().0 != c {
                            break;
                        }
                        records.push(decode_node(value.value())?);
                    }
                    let alive: Vec<NodeRecord> = records
                        .iter()
                        .filter(|r| {
                            let beat = beats.get(&r.node_id).copied().unwrap_or(0);
                            now.saturating_sub(r.last_heartbeat_ms.max(beat)) < ttl
                        })
                        .cloned()
                        .collect();
                    let mut catalogs = txn.open_table(CATALOGS).map_err(redb_failed)?;
                    let version = catalogs
                        .get(c.as_str())
                        .map_err(redb_failed)?
                        .map(|v| v.value().0);
                    if !alive.is_empty() {
                        ClusterRemoval::Alive(alive)
                    } else if records.is_empty() && version.is_none() {
                        ClusterRemoval::Unknown
                    } else {
                        for r in &records {
                            nodes
                                .remove((c.as_str(), r.node_id.as_str()))
                                .map_err(redb_failed)?;
                        }
                        catalogs.remove(c.as_str()).map_err(redb_failed)?;
                        txn.open_table(HISTORY_IDS)
                            .map_err(redb_failed)?
                            .remove(c.as_str())
                            .map_err(redb_failed)?;
                        let versions = (c.as_str(), 0)..=(c.as_str(), u64::MAX);
                        let mut history = txn.open_table(HISTORY).map_err(redb_failed)?;
                        let kept = history
                            .range(versions.clone())
                            .map_err(redb_failed)?
                            .count();
                        history
                            .retain_in(versions.clone(), |_, _| false)
                            .map_err(redb_failed)?;
                        txn.open_table(HISTORY_DATA)
                            .map_err(redb_failed)?
                            .retain_in(versions, |_, _| false)
                            .map_err(redb_failed)?;
                        ClusterRemoval::Removed(RemovedCluster {
                            nodes: u32::try_from(records.len()).unwrap_or(u32::MAX),
                            versions: u32::try_from(kept).unwrap_or(u32::MAX),
                            version: version.unwrap_or(0),
                        })
                    }
                };
                match removal {
                    ClusterRemoval::Removed(_) => txn.commit().map_err(redb_failed)?,
                    _ => txn.abort().map_err(redb_failed)?,
                }
                Ok(removal)
            })
            .await?;
        if matches!(removal, ClusterRemoval::Removed(_)) {
            self.beats().retain(|(bc, _), _| bc != cluster);
        }
        Ok(removal)
    }

    async fn list_catalogs(&self) -> StoreResult<Vec<(String, u64)>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(redb_failed)?;
            let table = txn.open_table(CATALOGS).map_err(redb_failed)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(redb_failed)? {
                let (k, v) = entry.map_err(redb_failed)?;
                out.push((k.value().to_owned(), v.value().0));
            }
            Ok(out)
        })
        .await
    }

    async fn list_managers(&self) -> StoreResult<Vec<String>> {
        Ok(vec![self.opts.advertise.clone()])
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn close(&self) {
        // redb commits are durable when they return; dropping the last handle
        // closes the file. Nothing is buffered here.
    }
}

fn read_nodes(db: &Database, cluster: Option<&str>) -> StoreResult<Vec<NodeRecord>> {
    let txn = db.begin_read().map_err(redb_failed)?;
    let table = txn.open_table(NODES).map_err(redb_failed)?;
    let mut out = Vec::new();
    let iter = match cluster {
        // Tuple keys sort by cluster first: ("c", "") is the start of cluster c.
        Some(c) => table.range((c, "")..).map_err(redb_failed)?,
        None => table.iter().map_err(redb_failed)?,
    };
    for entry in iter {
        let (key, value) = entry.map_err(redb_failed)?;
        if cluster.is_some_and(|c| key.value().0 != c) {
            break;
        }
        out.push(decode_node(value.value())?);
    }
    Ok(out)
}

fn read_snapshot(
    table: &impl ReadableTable<&'static str, (u64, &'static [u8])>,
    ids: &impl ReadableTable<&'static str, &'static str>,
    cluster: &str,
) -> StoreResult<Snapshot> {
    Ok(match table.get(cluster).map_err(redb_failed)? {
        Some(v) => {
            let (version, data) = v.value();
            let history_id = ids
                .get(cluster)
                .map_err(redb_failed)?
                .map(|id| id.value().to_owned())
                .unwrap_or_default();
            Snapshot {
                cluster: cluster.to_owned(),
                version,
                data: Bytes::copy_from_slice(data),
                history_id,
            }
        }
        None => Snapshot::empty(cluster),
    })
}

fn decode_entry(bytes: &[u8]) -> StoreResult<HistoryEntry> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::internal("corrupt history entry").caused_by(e))
}

fn decode_node(bytes: &[u8]) -> StoreResult<NodeRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::internal("corrupt node record").caused_by(e))
}

/// A failure of redb itself (or of encoding a record for it).
fn redb_failed(e: impl Into<Cause>) -> StoreError {
    StoreError::internal("the embedded store failed").caused_by(e)
}
