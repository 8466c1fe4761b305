//! Write consistency, as InfluxDB Enterprise's `/write?consistency=` takes
//! it: when a replicated write is answered 204, and the error a write that
//! fell short gets. A [`Tally`] counts, per write, which peers wrote it and
//! which could not (yet); the delivery tasks fill it in, the request waits
//! on it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// `consistency=any|one|quorum|all` (default `one`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Written by a node, or durably queued for one.
    Any,
    /// Written by one node (a queue alone does not count).
    #[default]
    One,
    /// Written by a majority of the cluster's nodes.
    Quorum,
    /// Written by every node.
    All,
}

/// A `consistency` value InfluxDB Enterprise does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid consistency {0:?}: use any, one, quorum or all")]
pub struct InvalidConsistency(pub String);

impl Consistency {
    /// The `consistency` parameter of a query string (absent: `default`).
    pub fn from_query(
        query: Option<&str>,
        default: Consistency,
    ) -> Result<Consistency, InvalidConsistency> {
        let value = query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == "consistency").then_some(v)
            })
        });
        value.map_or(Ok(default), Consistency::parse)
    }

    /// `any`, `one`, `quorum` or `all`, in any case.
    pub fn parse(value: &str) -> Result<Consistency, InvalidConsistency> {
        match value.to_ascii_lowercase().as_str() {
            "any" => Ok(Consistency::Any),
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            _ => Err(InvalidConsistency(value.to_owned())),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Consistency::Any => "any",
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }

    /// How many of `nodes` nodes must have written a write.
    pub fn required(self, nodes: usize) -> usize {
        match self {
            Consistency::Any => 0,
            Consistency::One => 1,
            Consistency::Quorum => nodes / 2 + 1,
            Consistency::All => nodes,
        }
    }
}

/// What the peers a write was queued for did with it so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub written: BTreeSet<String>,
    /// Refused it, or could not be reached for it (it stays queued).
    pub missed: BTreeSet<String>,
}

/// One write's outcomes, shared by the request and the delivery tasks.
pub type Tally = watch::Sender<Outcomes>;

/// How a write came out, for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Reached,
    /// Some node wrote it, fewer than the consistency asks.
    PartialWrite,
    /// No node wrote it in time.
    Timeout,
    /// No node wrote it, and every node answered.
    WriteFailed,
}

impl Verdict {
    /// The error InfluxDB Enterprise answers with (HTTP 500).
    pub fn error(self) -> Option<&'static str> {
        match self {
            Verdict::Reached => None,
            Verdict::PartialWrite => Some("partial write"),
            Verdict::Timeout => Some("timeout"),
            Verdict::WriteFailed => Some("write failed"),
        }
    }
}

/// Waits (at most `timeout`) until `tally` shows the write reached
/// `consistency` on a cluster of `nodes`, given whether this node wrote it
/// and the peers it was queued for, or until every such peer answered.
pub async fn settle(
    tally: &Tally,
    consistency: Consistency,
    nodes: usize,
    written_here: bool,
    queued: &BTreeSet<String>,
    timeout: Duration,
) -> Verdict {
    let need = consistency.required(nodes);
    let here = usize::from(written_here);
    if consistency == Consistency::Any && (written_here || !queued.is_empty()) || here >= need {
        return Verdict::Reached;
    }
    let mut rx = tally.subscribe();
    let settled = tokio::time::timeout(
        timeout,
        rx.wait_for(|o| {
            here + o.written.len() >= need
                || queued
                    .iter()
                    .all(|p| o.written.contains(p) || o.missed.contains(p))
        }),
    )
    .await;
    let written = here + tally.borrow().written.len();
    match settled {
        _ if written >= need => Verdict::Reached,
        _ if written > 0 => Verdict::PartialWrite,
        Ok(_) => Verdict::WriteFailed,
        Err(_) => Verdict::Timeout,
    }
}

/// The tallies of writes whose requests still wait, by sequence number.
#[derive(Default)]
pub struct Pending {
    tallies: Mutex<HashMap<u64, Tally>>,
}

impl Pending {
    pub fn register(&self, seq: u64, tally: Tally) {
        self.lock().insert(seq, tally);
    }

    pub fn forget(&self, seq: u64) {
        self.lock().remove(&seq);
    }

    /// `peer` wrote (`true`) or missed the write `seq`; nothing when no
    /// request waits for it.
    pub fn record(&self, seq: u64, peer: &str, written: bool) {
        let Some(tally) = self.lock().get(&seq).cloned() else {
            return;
        };
        tally.send_if_modified(|o| {
            if written {
                o.missed.remove(peer);
                o.written.insert(peer.to_owned())
            } else if o.written.contains(peer) {
                false
            } else {
                o.missed.insert(peer.to_owned())
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tally>> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_required_counts() {
        assert_eq!(
            Consistency::from_query(None, Consistency::One),
            Ok(Consistency::One)
        );
        assert_eq!(
            Consistency::from_query(Some("db=x"), Consistency::All),
            Ok(Consistency::All),
            "the agent's default when the client names none"
        );
        assert_eq!(
            Consistency::from_query(Some("db=x&consistency=ALL"), Consistency::One),
            Ok(Consistency::All)
        );
        assert_eq!(
            Consistency::from_query(Some("consistency=quorum&db=x"), Consistency::All),
            Ok(Consistency::Quorum)
        );
        assert!(Consistency::from_query(Some("consistency=most"), Consistency::One).is_err());
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(2), 2);
        assert_eq!(Consistency::All.required(3), 3);
        assert_eq!(Consistency::Any.required(3), 0);
    }

    fn peers(p: &[&str]) -> BTreeSet<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_write_settles_as_its_peers_answer() {
        let long = Duration::from_secs(30);
        let queued = peers(&["b", "c"]);
        let pending = Pending::default();

        // one: the local write is enough, nothing is awaited.
        let tally = Tally::new(Outcomes::default());
        let v = settle(&tally, Consistency::One, 3, true, &queued, long).await;
        assert_eq!(v, Verdict::Reached);

        // all: b writes, c cannot be reached: a partial write, at once.
        let tally = Tally::new(Outcomes::default());
        pending.register(1, tally.clone());
        let waiting = settle(&tally, Consistency::All, 3, true, &queued, long);
        let answers = async {
            pending.record(1, "b", true);
            pending.record(1, "c", false);
        };
        let (v, ()) = tokio::join!(waiting, answers);
        assert_eq!(v, Verdict::PartialWrite);

        // quorum: b alone is enough; a later miss of c changes nothing.
        let tally = Tally::new(Outcomes::default());
        pending.register(2, tally.clone());
        pending.record(2, "b", true);
        let v = settle(&tally, Consistency::Quorum, 3, true, &queued, long).await;
        assert_eq!(v, Verdict::Reached);

        // one without the local write: nobody answers in time.
        let tally = Tally::new(Outcomes::default());
        let v = settle(
            &tally,
            Consistency::One,
            3,
            false,
            &queued,
            Duration::from_millis(20),
        )
        .await;
        assert_eq!(v, Verdict::Timeout);
        // any: queued is enough.
        let v = settle(&tally, Consistency::Any, 3, false, &queued, long).await;
        assert_eq!(v, Verdict::Reached);

        // A write nobody waits for any more is not recorded.
        pending.forget(1);
        pending.record(1, "c", true);
        assert!(pending.lock().is_empty() || !pending.lock().contains_key(&1));
    }
}
