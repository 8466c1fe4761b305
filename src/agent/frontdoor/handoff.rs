//! Durable hinted handoff: one on-disk queue per peer of the writes that
//! peer has not taken yet, in one redb file under the agent's state
//! directory (`handoff.redb`).
//!
//! A write is appended for every peer it is owed to in one transaction,
//! committed with an fsync before the client hears 204; many concurrent
//! writes share one commit ([`Committer`], group commit). Entries are keyed
//! by `(peer, seq)`, so each peer's queue reads back in the order it was
//! written, and a delivered prefix is removed in one range delete. A removal
//! lost in a crash only means a peer is sent a write again, which InfluxDB
//! stores once (same series and timestamp), so removals skip the fsync.
//!
//! Each queue is bounded by `--hh-max-size` bytes (a write that does not fit
//! is not queued for that peer) and `--hh-max-age` (older entries are
//! expired); both drops are reported to the caller, which counts and logs
//! them. An entry the owner's `kept` test holds for (a statement that
//! deletes points: dropping it would bring the points back) is never
//! dropped for a limit, and is counted apart ([`QueueStats::kept`]).
//! [`Handoff::purge`] removes the entries the caller names from every queue
//! (writes to a database that was dropped).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

/// `(peer, seq)` → `(points, queued_at_ms, the encoded hint)`.
const HINTS: TableDefinition<(&str, u64), (u64, u64, &[u8])> = TableDefinition::new("hints");
/// Peer node ID → its front-door address, as last learned from the manager.
const PEERS: TableDefinition<&str, &str> = TableDefinition::new("peers");
/// `"next_seq"` → the sequence number the next write gets.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_SEQ: &str = "next_seq";
/// How many appends one commit takes at most.
const GROUP_COMMIT_MAX: usize = 256;

/// Why the queue cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot create the hinted-handoff directory {0}")]
    Directory(String, #[source] std::io::Error),
    #[error("hinted-handoff store")]
    Store(#[source] Box<redb::Error>),
    #[error("the hinted-handoff writer stopped")]
    Stopped,
}

/// `.store()?`: a redb failure as a [`HandoffError`], its cause kept.
trait OrStore<T> {
    fn store(self) -> Result<T, HandoffError>;
}

impl<T, E: Into<redb::Error>> OrStore<T> for Result<T, E> {
    fn store(self) -> Result<T, HandoffError> {
        self.map_err(|e| HandoffError::Store(Box::new(e.into())))
    }
}

/// How large and how old each peer's queue may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// One peer's queue, as the metrics show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub entries: u64,
    pub bytes: u64,
    pub points: u64,
    /// When the oldest entry was queued (`None` when empty).
    pub oldest_ms: Option<u64>,
    /// Entries never dropped for a limit (see the module).
    pub kept: u64,
}

/// A write to queue for some peers.
#[derive(Clone, Debug, Default)]
pub struct Append {
    pub hint: Vec<u8>,
    pub points: u64,
    pub queued_at_ms: u64,
    pub peers: Vec<String>,
}

/// What became of an [`Append`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The peers it is queued for.
    pub queued: Vec<String>,
    /// The peers whose queue it did not fit in (`--hh-max-size`).
    pub full: Vec<String>,
}

/// Entries removed from one peer's queue (for their age, or purged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    pub peer: String,
    pub entries: u64,
    pub points: u64,
}

/// One queued write, read back for delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub seq: u64,
    pub points: u64,
    pub queued_at_ms: u64,
    pub hint: Vec<u8>,
}

/// The per-peer queues of one agent.
pub struct Handoff {
    db: Database,
    limits: Limits,
    /// Which hints are never dropped for a limit.
    kept: fn(&[u8]) -> bool,
    stats: Mutex<BTreeMap<String, QueueStats>>,
}

impl Handoff {
    /// Opens (or creates) `dir/handoff.redb` and counts what each queue
    /// holds; `kept` tells the hints that are never dropped for a limit.
    pub fn open(
        dir: &Path,
        limits: Limits,
        kept: fn(&[u8]) -> bool,
    ) -> Result<Handoff, HandoffError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HandoffError::Directory(dir.display().to_string(), e))?;
        let db = Database::create(dir.join("handoff.redb")).store()?;
        let txn = db.begin_write().store()?;
        txn.open_table(PEERS).store()?;
        txn.open_table(COUNTERS).store()?;
        let mut stats: BTreeMap<String, QueueStats> = BTreeMap::new();
        {
            let hints = txn.open_table(HINTS).store()?;
            for row in hints.iter().store()? {
                let (key, value) = row.store()?;
                let (peer, _) = key.value();
                let (points, queued_at, hint) = value.value();
                let s = stats.entry(peer.to_owned()).or_default();
                s.entries += 1;
                s.bytes += hint.len() as u64;
                s.points += points;
                s.kept += u64::from(kept(hint));
                s.oldest_ms = Some(s.oldest_ms.map_or(queued_at, |o| o.min(queued_at)));
            }
        }
        txn.commit().store()?;
        Ok(Handoff {
            db,
            limits,
            kept,
            stats: Mutex::new(stats),
        })
    }

    /// Queues each write for its peers, all in one durable commit;
    /// `assigned(i, seq)` learns each write's sequence number before the
    /// commit makes it visible to readers.
    pub fn append(
        &self,
        appends: &[Append],
        mut assigned: impl FnMut(usize, u64),
    ) -> Result<Vec<Appended>, HandoffError> {
        // Held across the commit, so a concurrent removal's figures are not
        // overwritten by this write's older copy.
        let mut shown = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let txn = self.db.begin_write().store()?;
        let mut stats = shown.clone();
        let mut results = Vec::with_capacity(appends.len());
        {
            let mut counters = txn.open_table(COUNTERS).store()?;
            let mut next = counters.get(NEXT_SEQ).store()?.map_or(0, |v| v.value());
            let mut hints = txn.open_table(HINTS).store()?;
            for (i, a) in appends.iter().enumerate() {
                assigned(i, next);
                let kept = (self.kept)(&a.hint);
                let mut appended = Appended {
                    seq: next,
                    ..Appended::default()
                };
                for peer in &a.peers {
                    let s = stats.entry(peer.clone()).or_default();
                    if !kept && s.bytes + a.hint.len() as u64 > self.limits.max_bytes {
                        appended.full.push(peer.clone());
                        continue;
                    }
                    hints
                        .insert(
                            (peer.as_str(), next),
                            (a.points, a.queued_at_ms, &a.hint[..]),
                        )
                        .store()?;
                    s.entries += 1;
                    s.bytes += a.hint.len() as u64;
                    s.points += a.points;
                    s.kept += u64::from(kept);
                    s.oldest_ms.get_or_insert(a.queued_at_ms);
                    appended.queued.push(peer.clone());
                }
                next += 1;
                results.push(appended);
            }
            counters.insert(NEXT_SEQ, next).store()?;
        }
        txn.commit().store()?;
        *shown = stats;
        Ok(results)
    }

    /// The oldest entries of `peer`'s queue: at most `max_entries`, and no
    /// more than `max_bytes` of hints unless the first alone is larger.
    pub fn peek(
        &self,
        peer: &str,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Queued>, HandoffError> {
        let txn = self.db.begin_read().store()?;
        let hints = txn.open_table(HINTS).store()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in hints.range((peer, 0)..=(peer, u64::MAX)).store()? {
            let (key, value) = row.store()?;
            let (points, queued_at_ms, hint) = value.value();
            if out.len() == max_entries || (!out.is_empty() && bytes + hint.len() > max_bytes) {
                break;
            }
            bytes += hint.len();
            out.push(Queued {
                seq: key.value().1,
                points,
                queued_at_ms,
                hint: hint.to_vec(),
            });
        }
        Ok(out)
    }

    /// Removes `peer`'s entries up to and including `seq` (delivered, or
    /// refused by the peer for good).
    pub fn remove_through(&self, peer: &str, seq: u64) -> Result<(), HandoffError> {
        self.remove(peer, seq, |_, _, _| true).map(|_| ())
    }

    /// Drops the entries queued before `now_ms - max_age`, except kept ones.
    pub fn expire(&self, now_ms: u64) -> Result<Vec<Removed>, HandoffError> {
        let max_age = u64::try_from(self.limits.max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(max_age);
        let old: Vec<String> = self
            .stats()
            .into_iter()
            .filter(|(_, s)| s.oldest_ms.is_some_and(|o| o < cutoff))
            .map(|(p, _)| p)
            .collect();
        let mut expired = Vec::new();
        for peer in old {
            let (entries, points) = self.remove(&peer, u64::MAX, |queued_at, _, hint| {
                queued_at < cutoff && !(self.kept)(hint)
            })?;
            if entries > 0 {
                expired.push(Removed {
                    peer,
                    entries,
                    points,
                });
            }
        }
        Ok(expired)
    }

    /// Removes from every queue the entries whose hint `drop` holds for.
    pub fn purge(&self, drop: impl Fn(&[u8]) -> bool) -> Result<Vec<Removed>, HandoffError> {
        let mut purged = Vec::new();
        for peer in self.stats().into_keys() {
            let (entries, points) = self.remove(&peer, u64::MAX, |_, _, hint| drop(hint))?;
            if entries > 0 {
                purged.push(Removed {
                    peer,
                    entries,
                    points,
                });
            }
        }
        Ok(purged)
    }

    /// Removes `peer`'s entries up to `seq` for which `drop(queued_at_ms,
    /// points, hint)` holds; returns how many entries and points went.
    fn remove(
        &self,
        peer: &str,
        seq: u64,
        mut drop: impl FnMut(u64, u64, &[u8]) -> bool,
    ) -> Result<(u64, u64), HandoffError> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut txn = self.db.begin_write().store()?;
        // A removal lost in a crash is a write delivered twice, stored once.
        txn.set_durability(Durability::None).store()?;
        let (mut entries, mut points, mut bytes, mut kept) = (0, 0, 0, 0);
        let mut oldest = None;
        {
            let mut hints = txn.open_table(HINTS).store()?;
            hints
                .retain_in((peer, 0)..=(peer, seq), |_, (p, queued_at, hint)| {
                    if drop(queued_at, p, hint) {
                        entries += 1;
                        points += p;
                        bytes += hint.len() as u64;
                        kept += u64::from((self.kept)(hint));
                        false
                    } else {
                        true
                    }
                })
                .store()?;
            let first = hints.range((peer, 0)..=(peer, u64::MAX)).store()?.next();
            if let Some(first) = first {
                oldest = Some(first.store()?.1.value().1);
            }
        }
        txn.commit().store()?;
        if let Some(s) = stats.get_mut(peer) {
            s.entries = s.entries.saturating_sub(entries);
            s.points = s.points.saturating_sub(points);
            s.bytes = s.bytes.saturating_sub(bytes);
            s.kept = s.kept.saturating_sub(kept);
            s.oldest_ms = oldest;
        }
        Ok((entries, points))
    }

    /// Every peer's queue (peers with nothing queued included once known).
    pub fn stats(&self) -> BTreeMap<String, QueueStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers the peers' addresses, so a restart queues for them before
    /// the manager answers.
    pub fn remember_peers(&self, peers: &BTreeMap<String, String>) -> Result<(), HandoffError> {
        let txn = self.db.begin_write().store()?;
        {
            let mut table = txn.open_table(PEERS).store()?;
            table.retain(|id, _| peers.contains_key(id)).store()?;
            for (id, addr) in peers {
                table.insert(id.as_str(), addr.as_str()).store()?;
            }
        }
        txn.commit().store()?;
        Ok(())
    }

    /// The peers last remembered, node ID → front-door address.
    pub fn known_peers(&self) -> Result<BTreeMap<String, String>, HandoffError> {
        let txn = self.db.begin_read().store()?;
        let table = txn.open_table(PEERS).store()?;
        let mut peers = BTreeMap::new();
        for row in table.iter().store()? {
            let (id, addr) = row.store()?;
            peers.insert(id.value().to_owned(), addr.value().to_owned());
        }
        Ok(peers)
    }
}

type Reply = oneshot::Sender<Result<Appended, Arc<HandoffError>>>;

/// Group commit: appends from concurrent requests wait together for one
/// durable commit. Each carries a `T` that `assigned` is given with the
/// write's sequence number before the commit.
pub struct Committer<T> {
    tx: mpsc::Sender<(Append, T, Reply)>,
}

impl<T> Clone for Committer<T> {
    fn clone(&self) -> Self {
        Committer {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Committer<T> {
    /// Starts the commit loop over `handoff`; it ends when every
    /// `Committer` is dropped.
    pub fn start(
        handoff: Arc<Handoff>,
        assigned: impl Fn(u64, &T) + Send + Sync + 'static,
    ) -> Committer<T> {
        let assigned = Arc::new(assigned);
        let (tx, mut rx) = mpsc::channel::<(Append, T, Reply)>(GROUP_COMMIT_MAX * 4);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                while group.len() < GROUP_COMMIT_MAX {
                    match rx.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let handoff = handoff.clone();
                let assigned = assigned.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let (appends, rest): (Vec<Append>, Vec<(T, Reply)>) =
                        group.into_iter().map(|(a, t, r)| (a, (t, r))).unzip();
                    let result = handoff.append(&appends, |i, seq| assigned(seq, &rest[i].0));
                    (result, rest)
                })
                .await;
                let Ok((result, rest)) = done else {
                    // The replies went with the task: their senders see it.
                    continue;
                };
                match result {
                    Ok(results) => {
                        for ((_, reply), r) in rest.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for (_, reply) in rest {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Committer { tx }
    }

    /// Queues `append` durably (returns once it is on disk).
    pub async fn append(&self, append: Append, tag: T) -> Result<Appended, Arc<HandoffError>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((append, tag, reply))
            .await
            .map_err(|_| Arc::new(HandoffError::Stopped))?;
        answer.await.map_err(|_| Arc::new(HandoffError::Stopped))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64) -> Limits {
        Limits {
            max_bytes,
            max_age: Duration::from_secs(60),
        }
    }

    fn append(hint: &str, at: u64, peers: &[&str]) -> Append {
        Append {
            hint: hint.as_bytes().to_vec(),
            points: 1,
            queued_at_ms: at,
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// The tests' kept hints.
    fn deletion(hint: &[u8]) -> bool {
        hint == b"DEL"
    }

    fn hints(q: &[Queued]) -> Vec<String> {
        q.iter()
            .map(|e| String::from_utf8_lossy(&e.hint).into_owned())
            .collect()
    }

    #[test]
    fn queues_in_order_per_peer_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handoff::open(dir.path(), limits(1 << 20), deletion).unwrap();
        let done = h
            .append(
                &[append("a", 1, &["p1", "p2"]), append("b", 2, &["p1"])],
                |_, _| {},
            )
            .unwrap();
        assert_eq!(done[0].seq + 1, done[1].seq);
        assert_eq!(done[0].queued, vec!["p1", "p2"]);
        h.append(&[append("c", 3, &["p1", "p2"])], |_, _| {})
            .unwrap();
        assert_eq!(hints(&h.peek("p1", 10, 1 << 20).unwrap()), ["a", "b", "c"]);
        assert_eq!(hints(&h.peek("p2", 10, 1 << 20).unwrap()), ["a", "c"]);
        // Bounded by entries, and by bytes past the first.
        assert_eq!(hints(&h.peek("p1", 2, 1 << 20).unwrap()), ["a", "b"]);
        assert_eq!(hints(&h.peek("p1", 10, 1).unwrap()), ["a"]);

        let first = h.peek("p1", 1, 1).unwrap()[0].seq;
        h.remove_through("p1", first).unwrap();
        assert_eq!(hints(&h.peek("p1", 10, 1 << 20).unwrap()), ["b", "c"]);
        let s = h.stats()["p1"];
        assert_eq!(
            (s.entries, s.bytes, s.points, s.oldest_ms),
            (2, 2, 2, Some(2))
        );
        drop(h);

        let h = Handoff::open(dir.path(), limits(1 << 20), deletion).unwrap();
        assert_eq!(hints(&h.peek("p1", 10, 1 << 20).unwrap()), ["b", "c"]);
        assert_eq!(h.stats()["p2"].entries, 2);
        // Sequence numbers keep growing after a reopen.
        let later = h.append(&[append("d", 4, &["p2"])], |_, _| {}).unwrap();
        assert!(later[0].seq > first + 2);
    }

    #[test]
    fn a_full_queue_takes_nothing_more_and_old_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handoff::open(dir.path(), limits(5), deletion).unwrap();
        let done = h
            .append(
                &[
                    append("abc", 1_000, &["p1"]),
                    append("def", 2_000, &["p1", "p2"]),
                ],
                |_, _| {},
            )
            .unwrap();
        assert_eq!(done[1].queued, vec!["p2"]);
        assert_eq!(done[1].full, vec!["p1"]);
        assert_eq!(hints(&h.peek("p1", 10, 100).unwrap()), ["abc"]);

        // A kept entry is queued past the limit, and never expires.
        let kept = append("DEL", 1_500, &["p1"]);
        assert_eq!(h.append(&[kept], |_, _| {}).unwrap()[0].queued, ["p1"]);
        assert_eq!(h.stats()["p1"].kept, 1);

        // Max age 60 s: at 61.5 s the entry of 1 s is too old, that of 2 s not.
        let expired = h.expire(61_500).unwrap();
        assert_eq!(
            expired,
            vec![Removed {
                peer: "p1".into(),
                entries: 1,
                points: 1
            }]
        );
        assert_eq!(hints(&h.peek("p1", 10, 100).unwrap()), ["DEL"]);
        assert_eq!(h.stats()["p2"].entries, 1);
        assert!(h.expire(61_500).unwrap().is_empty());
        assert_eq!(hints(&h.peek("p1", 10, 100).unwrap()), ["DEL"]);
        let p1 = h.peek("p1", 1, 100).unwrap()[0].seq;
        h.remove_through("p1", p1).unwrap();
        assert_eq!(h.stats()["p1"], QueueStats::default());
    }

    #[test]
    fn a_purge_removes_what_it_names_from_every_queue_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handoff::open(dir.path(), limits(1 << 20), deletion).unwrap();
        h.append(
            &[
                append("x1", 1, &["p1", "p2"]),
                append("y1", 2, &["p1", "p2"]),
                append("x2", 3, &["p2"]),
                append("y2", 4, &["p1"]),
            ],
            |_, _| {},
        )
        .unwrap();
        let purged = h.purge(|hint| hint.starts_with(b"x")).unwrap();
        assert_eq!(
            purged,
            vec![
                Removed {
                    peer: "p1".into(),
                    entries: 1,
                    points: 1
                },
                Removed {
                    peer: "p2".into(),
                    entries: 2,
                    points: 2
                }
            ]
        );
        assert_eq!(hints(&h.peek("p1", 10, 100).unwrap()), ["y1", "y2"]);
        assert_eq!(hints(&h.peek("p2", 10, 100).unwrap()), ["y1"]);
        assert_eq!(h.stats()["p2"].entries, 1);
    }

    #[test]
    fn peers_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handoff::open(dir.path(), limits(5), deletion).unwrap();
        let peers: BTreeMap<String, String> =
            [("n1".to_owned(), "10.0.0.1:8086".to_owned())].into();
        h.remember_peers(&peers).unwrap();
        drop(h);
        let h = Handoff::open(dir.path(), limits(5), deletion).unwrap();
        assert_eq!(h.known_peers().unwrap(), peers);
        h.remember_peers(&BTreeMap::new()).unwrap();
        assert!(h.known_peers().unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_appends_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(Handoff::open(dir.path(), limits(1 << 20), deletion).unwrap());
        let assigned = Arc::new(Mutex::new(BTreeMap::new()));
        let c = Committer::start(h.clone(), {
            let assigned = assigned.clone();
            move |seq, tag: &u64| {
                assigned.lock().unwrap().insert(*tag, seq);
            }
        });
        let all = futures::future::join_all(
            (0..50).map(|i| c.append(append(&format!("w{i}"), i, &["p1"]), i)),
        )
        .await;
        let mut seqs: Vec<u64> = all.into_iter().map(|r| r.unwrap().seq).collect();
        // Each write's tag learned its own sequence number.
        let assigned = assigned.lock().unwrap().clone();
        assert_eq!(assigned.len(), 50);
        for (i, seq) in &assigned {
            assert_eq!(
                h.peek("p1", 50, 1 << 20)
                    .unwrap()
                    .iter()
                    .find(|q| q.seq == *seq)
                    .map(|q| q.hint.clone()),
                Some(format!("w{i}").into_bytes())
            );
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 50);
        assert_eq!(h.stats()["p1"].entries, 50);
    }
}
