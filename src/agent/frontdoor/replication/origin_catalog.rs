//! A peer's "not found" is final only once its catalog has caught up with
//! the origin's.
//!
//! A replicated write to a database (or as a user, with a privilege) the
//! receiving influxd does not have is either early — the catalog change
//! that creates it has not reached this node yet — or final — the
//! database is gone. Time alone cannot tell them apart: with the manager
//! out of reach, a database created at the origin reaches nobody for as
//! long as the outage lasts, and refusing its acknowledged writes for good
//! after a fixed wait would lose them.
//!
//! So every delivery says which catalog the origin had ([`OriginCatalog`]):
//! the version it has applied and, on a retry, the version its sync task
//! pushed right before it ([`crate::client::push_now`]), which holds every
//! catalog change the origin made before it queued the write. The receiver
//! refuses a 404, 401 or 403 for good only when the origin's catalog was
//! pushed and its own applied catalog is that version or a newer one of
//! the same history, with its last sync step successful. Until then the
//! answer is "not yet" and the queue waits, in order. A delivery from an
//! agent that says nothing of its catalog (an older version) keeps the
//! rule of `--hh-missing-database-wait`: final that long after queueing.

use std::time::Duration;

use http::StatusCode;

use super::catalog_barrier::AppliedCatalog;
use super::Replication;
use crate::clock::now_ms;

/// How long a delivery waits for the origin's push before it goes without.
const PUSH_WAIT: Duration = Duration::from_secs(5);

/// The origin's catalog, as a delivery carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OriginCatalog {
    /// The cluster catalog version the origin has applied, or pushed.
    #[prost(uint64, tag = "1")]
    pub version: u64,
    #[prost(string, tag = "2")]
    pub history_id: String,
    /// Whether `version` was pushed right before this delivery (so it holds
    /// every change the origin made before it queued the writes).
    #[prost(bool, tag = "3")]
    pub pushed: bool,
}

impl Replication {
    /// What this node says of its catalog with a delivery: with `push` (a
    /// retry after a refusal or a failure), pushed first.
    pub(super) async fn origin_catalog(&self, push: bool) -> Option<OriginCatalog> {
        let sync = self.catalog_sync.as_ref()?;
        let pushed = if push {
            match tokio::time::timeout(PUSH_WAIT, sync.push_now.push()).await {
                Ok(Ok(version)) => Some(version),
                Ok(Err(_)) | Err(_) => None,
            }
        } else {
            None
        };
        let state = sync.state.borrow();
        let state = state.as_ref();
        Some(OriginCatalog {
            version: pushed.unwrap_or_else(|| state.map_or(0, |s| s.applied_version)),
            history_id: state.map_or_else(String::new, |s| s.applied_history_id.clone()),
            pushed: pushed.is_some(),
        })
    }

    /// Whether influxd's answer `status` (not 2xx) to a peer's write queued
    /// at `queued_at_ms` refuses it for good, so the peer drops it: a client
    /// error, except one this node's catalog may not have caught up with
    /// yet — a database not found (404), a user or privilege not there yet
    /// (401, 403: the origin's influxd took the write, so the writer had the
    /// privilege there). 5xx: not now.
    pub(super) fn refused_for_good(
        &self,
        status: StatusCode,
        queued_at_ms: u64,
        origin: Option<&OriginCatalog>,
    ) -> bool {
        match (origin, &self.catalog_sync) {
            (Some(origin), Some(sync)) if waits_for_catalog(status) => {
                caught_up(sync.state.borrow().as_ref(), origin)
            }
            _ => {
                let age = Duration::from_millis(now_ms().saturating_sub(queued_at_ms));
                refused_by_age(status, age, self.missing_database_wait)
            }
        }
    }
}

/// Whether a refusal may be this node's catalog lagging.
fn waits_for_catalog(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    )
}

/// The rule without the origin's catalog: a refusal that may be this
/// node's catalog lagging is final `missing_database_wait` after the write
/// was queued; any other client error at once.
fn refused_by_age(status: StatusCode, age: Duration, missing_database_wait: Duration) -> bool {
    if waits_for_catalog(status) {
        age >= missing_database_wait
    } else {
        status.is_client_error()
    }
}

/// Whether this node's catalog (`state`, as its sync task reported it) has
/// caught up with the origin's pushed one, its last sync step successful.
fn caught_up(state: Option<&crate::proto::SyncState>, origin: &OriginCatalog) -> bool {
    let here = AppliedCatalog::of(state);
    origin.pushed
        && here.sync_error.is_empty()
        && here.same_history(&origin.history_id)
        && here.version >= origin.version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SyncState;

    #[test]
    fn without_the_origins_catalog_age_decides() {
        let wait = Duration::from_secs(60);
        let young = Duration::from_secs(59);
        let old = Duration::from_secs(60);
        // A missing database, user or privilege: not yet while the
        // catalog may catch up.
        for s in [
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
        ] {
            assert!(!refused_by_age(s, young, wait), "{s}");
            assert!(refused_by_age(s, old, wait), "{s}");
        }
        // The client's own errors at once, whatever the age.
        for s in [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE] {
            assert!(refused_by_age(s, Duration::ZERO, wait), "{s}");
        }
        // influxd's own trouble never drops anything.
        for s in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(!refused_by_age(s, old * 1000, wait), "{s}");
        }
    }

    #[test]
    fn final_only_once_caught_up_with_a_pushed_catalog() {
        let here = |version: u64, error: &str| SyncState {
            applied_version: version,
            applied_history_id: "h1".into(),
            sync_error: error.into(),
            ..SyncState::default()
        };
        let origin = |version: u64, pushed: bool| OriginCatalog {
            version,
            history_id: "h1".into(),
            pushed,
        };
        assert!(caught_up(Some(&here(7, "")), &origin(7, true)));
        assert!(caught_up(Some(&here(9, "")), &origin(7, true)));
        // Behind the origin: the database may still come.
        assert!(!caught_up(Some(&here(6, "")), &origin(7, true)));
        // The origin could not push (the manager out of reach): its change
        // may be in no version yet.
        assert!(!caught_up(Some(&here(9, "")), &origin(7, false)));
        // This node's last sync step failed: its influxd may lack what its
        // catalog holds.
        assert!(!caught_up(
            Some(&here(9, "pull: refused")),
            &origin(7, true)
        ));
        assert!(!caught_up(None, &origin(0, true)));
        // Another history: versions do not compare.
        let mut other = origin(3, true);
        other.history_id = "h2".into();
        assert!(!caught_up(Some(&here(9, "")), &other));
    }
}
