//! A dropped database or retention policy takes its queued writes with it.
//!
//! `DROP DATABASE` and `DROP RETENTION POLICY` reach the peers through the
//! catalog, not through the queues, so a write accepted before the drop and
//! still queued for a lagging peer would arrive after it: either it waits
//! there for a database that never comes back (holding up every write
//! behind it), or, once the database is created again, it reappears. So
//! every write and statement queued for the dropped database (or policy)
//! is removed from every queue of this node:
//!
//! - at the front door that takes the drop, as soon as its influxd has
//!   carried it out and before the client hears the answer (a write
//!   accepted after that is accepted after the drop, as on one server);
//! - on every node, when its catalog loses the database or policy (a drop
//!   taken elsewhere, or a rollback): what the node accepted before it
//!   learned of the drop is dropped there too, as its own influxd drops it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use prost::Message;

use super::data_statements::failures;
use super::{path_of, Hint, Replication};
use crate::agent::frontdoor::statements::Statement;
use crate::influx::catalog::Catalog;

use crate::telemetry::with_causes;

/// A database, or one of its policies, that is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Dropped {
    pub database: String,
    /// The policy, and whether it was the database's default (writes that
    /// name no policy went to it).
    pub policy: Option<(String, bool)>,
}

impl Dropped {
    /// Whether a queued hint writes into (or runs in) what was dropped.
    fn covers(&self, hint: &Hint) -> bool {
        let Some((database, policy)) = target(hint) else {
            return false;
        };
        if database != self.database {
            return false;
        }
        match (&self.policy, policy) {
            (None, _) => true,
            (Some((dropped, _)), Some(p)) => *dropped == p,
            (Some((_, was_default)), None) => *was_default,
        }
    }
}

impl Replication {
    /// A query with `DROP DATABASE` or `DROP RETENTION POLICY`: run here;
    /// then what was queued for each drop influxd carried out goes.
    pub(super) async fn drop_statements(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        statements: &[Statement],
        next: Next,
    ) -> Response {
        // Whether a dropped policy was the default: asked before it goes.
        let drops: Vec<(usize, Dropped)> = {
            let catalog = self.catalog.borrow();
            statements
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let (database, policy) = s.dropped()?;
                    let policy = policy.map(|p| {
                        let default = catalog
                            .as_ref()
                            .and_then(|c| c.databases.get(&database))
                            .is_some_and(|d| d.default_retention_policy == p);
                        (p, default)
                    });
                    Some((i, Dropped { database, policy }))
                })
                .collect()
        };
        let local = next.run(Request::from_parts(parts, Body::from(body))).await;
        if !local.status().is_success() {
            return local;
        }
        let (local, failed) = failures(local, statements.len()).await;
        let done = drops
            .into_iter()
            .filter(|(i, _)| !failed.contains(i))
            .map(|(_, d)| d)
            .collect();
        self.purge(done).await;
        local
    }

    /// Removes what was queued for `dropped` from every queue, counted and
    /// logged.
    pub(super) async fn purge(&self, dropped: Vec<Dropped>) {
        if dropped.is_empty() {
            return;
        }
        let handoff = self.handoff.clone();
        let what = dropped.clone();
        let purged = tokio::task::spawn_blocking(move || {
            handoff
                .purge(|bytes| Hint::decode(bytes).is_ok_and(|h| what.iter().any(|d| d.covers(&h))))
        })
        .await;
        match purged {
            Ok(Ok(removed)) => {
                for r in removed {
                    self.metrics.dropped(&r.peer, "dropped_database", r.points);
                    tracing::info!(peer = %r.peer, writes = r.entries, points = r.points, ?dropped, "removed the queued writes to a dropped database or policy");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %with_causes(&e), ?dropped, "cannot remove the queued writes to a dropped database or policy")
            }
            Err(_) => {}
        }
    }

    /// Follows the node's catalog until shutdown, purging the queues of
    /// every database or policy it loses.
    pub(super) async fn follow_drops(self: Arc<Self>) {
        let mut catalog = self.catalog.clone();
        let mut before = catalog.borrow_and_update().clone();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                changed = catalog.changed() => if changed.is_err() { return },
            }
            let after = catalog.borrow_and_update().clone();
            if let (Some(b), Some(a)) = (&before, &after) {
                self.purge(dropped(b, a)).await;
            }
            if after.is_some() {
                before = after;
            }
        }
    }
}

/// What `before` holds and `after` does not.
pub(super) fn dropped(before: &Catalog, after: &Catalog) -> Vec<Dropped> {
    let mut gone = Vec::new();
    for (name, db) in &before.databases {
        let Some(now) = after.databases.get(name) else {
            gone.push(Dropped {
                database: name.clone(),
                policy: None,
            });
            continue;
        };
        for rp in db.retention_policies.keys() {
            if !now.retention_policies.contains_key(rp) {
                gone.push(Dropped {
                    database: name.clone(),
                    policy: Some((rp.clone(), *rp == db.default_retention_policy)),
                });
            }
        }
    }
    gone
}

/// The database and policy a queued hint writes into: `db` and `rp` of
/// `/write`, `/api/v1/prom/write` and a statement, `bucket` (`db/rp`) of
/// `/api/v2/write`.
fn target(hint: &Hint) -> Option<(String, Option<String>)> {
    let query = hint.path_and_query.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    };
    if path_of(hint) == "/api/v2/write" {
        let bucket = param("bucket")?;
        return Some(match bucket.split_once('/') {
            Some((db, rp)) if !rp.is_empty() => (db.to_owned(), Some(rp.to_owned())),
            Some((db, _)) => (db.to_owned(), None),
            None => (bucket, None),
        });
    }
    Some((param("db")?, param("rp").filter(|rp| !rp.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(path_and_query: &str) -> Hint {
        Hint {
            path_and_query: path_and_query.to_owned(),
            ..Hint::default()
        }
    }

    #[test]
    fn a_drop_covers_the_writes_into_what_it_dropped_and_nothing_else() {
        let db = Dropped {
            database: "res_z".into(),
            policy: None,
        };
        assert!(db.covers(&hint("/write?db=res_z&precision=s")));
        assert!(db.covers(&hint("/write?rp=r&db=res_z")));
        assert!(db.covers(&hint("/api/v2/write?bucket=res_z/r&org=")));
        assert!(db.covers(&hint("/api/v1/prom/write?db=res_z")));
        assert!(db.covers(&hint("/query?db=res_z")));
        assert!(!db.covers(&hint("/write?db=res_zz")));
        assert!(!db.covers(&hint("/query")));
        let default = Dropped {
            database: "m".into(),
            policy: Some(("autogen".into(), true)),
        };
        assert!(default.covers(&hint("/write?db=m")));
        assert!(default.covers(&hint("/write?db=m&rp=autogen")));
        assert!(!default.covers(&hint("/write?db=m&rp=week")));
        let other = Dropped {
            database: "m".into(),
            policy: Some(("week".into(), false)),
        };
        assert!(!other.covers(&hint("/write?db=m")));
        assert!(other.covers(&hint("/api/v2/write?bucket=m%2Fweek")));
    }
}
