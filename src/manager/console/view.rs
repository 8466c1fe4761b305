//! What the console shows, as the JSON its page renders: node listings (with
//! each node's sync state), a cluster's catalog in words and its history.
//! Password hashes never enter these views.

use serde::Serialize;

use crate::influx::catalog::{Catalog, Privilege};
use crate::influx::influxql::format_duration;
use crate::manager::plane::{ClusterSummary, ListedNode};
use crate::manager::store::{HistoryEntry, Snapshot};

/// Every cluster and every node, as one listing for all consoles.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Listing {
    pub clusters: Vec<ClusterView>,
    pub nodes: Vec<NodeView>,
    /// Why the store could not be listed, when it could not.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub version: u64,
    pub nodes: u32,
    pub alive_nodes: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    pub cluster: String,
    pub node_id: String,
    pub hostname: String,
    pub alive: bool,
    pub ips: Vec<String>,
    pub bind_address: String,
    pub http_addr: String,
    pub version: String,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms: u64,
    /// The catalog version the node applied; `None` when it reports nothing.
    pub applied_version: Option<u64>,
    /// Versions behind its cluster's; `None` when unknown (nothing
    /// reported, or another history).
    pub lag: Option<u64>,
    /// Why its last sync step failed; `None` while they succeed.
    pub sync_error: Option<String>,
    /// Why it needs catch-up; `None` when it does not.
    pub catch_up: Option<String>,
}

/// A listing stamped with the manager's clock, so a page can tell how long
/// ago a heartbeat was whatever the browser's clock says.
#[derive(Serialize)]
pub struct StampedListing<'a> {
    pub now_ms: u64,
    #[serde(flatten)]
    pub listing: &'a Listing,
}

impl Listing {
    pub fn new(clusters: Vec<ClusterSummary>, nodes: Vec<ListedNode>) -> Listing {
        Listing {
            clusters: clusters
                .into_iter()
                .map(|c| ClusterView {
                    name: c.name,
                    version: c.version,
                    nodes: c.nodes,
                    alive_nodes: c.alive_nodes,
                })
                .collect(),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let r = n.status.record;
                    NodeView {
                        alive: n.status.alive,
                        cluster: r.cluster,
                        node_id: r.node_id,
                        hostname: r.hostname,
                        ips: r.ips,
                        bind_address: r.bind_address,
                        http_addr: r.http_addr,
                        version: r.version,
                        registered_at_ms: r.registered_at_ms,
                        last_heartbeat_ms: r.last_heartbeat_ms,
                        applied_version: r.sync.as_ref().map(|s| s.applied_version),
                        lag: n.lag,
                        catch_up: r
                            .sync
                            .as_ref()
                            .map(|s| s.catch_up.clone())
                            .filter(|c| !c.is_empty()),
                        sync_error: r.sync.map(|s| s.sync_error).filter(|e| !e.is_empty()),
                    }
                })
                .collect(),
            error: None,
        }
    }

    pub fn failed(error: String) -> Listing {
        Listing {
            error: Some(error),
            ..Listing::default()
        }
    }
}

/// The kept versions of a cluster's catalog, newest first.
#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub cluster: String,
    pub changes: Vec<ChangeView>,
    /// Why the history could not be read, when it could not.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub version: u64,
    pub changed_at_ms: u64,
    pub node_id: String,
    pub hostname: String,
    pub layer: String,
    pub summary: String,
}

impl HistoryView {
    pub fn new(cluster: &str, entries: Vec<HistoryEntry>) -> HistoryView {
        HistoryView {
            cluster: cluster.to_owned(),
            changes: entries
                .into_iter()
                .map(|e| ChangeView {
                    version: e.version,
                    changed_at_ms: e.note.changed_at_ms,
                    node_id: e.note.node_id,
                    hostname: e.note.hostname,
                    layer: e.note.layer,
                    summary: e.note.summary,
                })
                .collect(),
            error: None,
        }
    }

    pub fn failed(cluster: &str, error: String) -> HistoryView {
        HistoryView {
            cluster: cluster.to_owned(),
            changes: Vec::new(),
            error: Some(error),
        }
    }
}

/// One version of a cluster's catalog, without hashes.
#[derive(Debug, Serialize)]
pub struct CatalogView {
    pub cluster: String,
    pub version: u64,
    pub databases: Vec<DatabaseView>,
    pub users: Vec<UserView>,
    /// Why the stored bytes could not be read as a catalog, when they could not.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseView {
    pub name: String,
    pub default_retention_policy: String,
    pub retention_policies: Vec<PolicyView>,
    pub continuous_queries: Vec<ContinuousQueryView>,
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub name: String,
    pub duration: String,
    pub shard_group_duration: String,
    pub replica_n: u32,
    pub subscriptions: Vec<SubscriptionView>,
}

#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    pub name: String,
    pub mode: String,
    pub destinations: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ContinuousQueryView {
    pub name: String,
    pub query: String,
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    pub admin: bool,
    pub grants: Vec<GrantView>,
}

#[derive(Debug, Serialize)]
pub struct GrantView {
    pub database: String,
    pub privilege: Privilege,
}

impl CatalogView {
    pub fn new(snapshot: &Snapshot) -> CatalogView {
        let mut view = CatalogView {
            cluster: snapshot.cluster.clone(),
            version: snapshot.version,
            databases: Vec::new(),
            users: Vec::new(),
            error: None,
        };
        if snapshot.data.is_empty() {
            return view;
        }
        match Catalog::from_meta_bytes(&snapshot.data) {
            Ok(catalog) => {
                view.databases = catalog.databases.into_values().map(database).collect();
                view.users = catalog
                    .users
                    .into_values()
                    .map(|u| UserView {
                        name: u.name,
                        admin: u.admin,
                        grants: u
                            .privileges
                            .into_iter()
                            .map(|(database, privilege)| GrantView {
                                database,
                                privilege,
                            })
                            .collect(),
                    })
                    .collect();
            }
            Err(e) => {
                view.error = Some(format!(
                    "the catalog cannot be read: {}",
                    crate::telemetry::with_causes(&e)
                ))
            }
        }
        view
    }
}

fn database(db: crate::influx::catalog::Database) -> DatabaseView {
    DatabaseView {
        name: db.name,
        default_retention_policy: db.default_retention_policy,
        retention_policies: db
            .retention_policies
            .into_values()
            .map(|rp| PolicyView {
                name: rp.name,
                duration: format_duration(rp.duration_ns),
                shard_group_duration: format_duration(rp.shard_group_duration_ns),
                replica_n: rp.replica_n,
                subscriptions: rp
                    .subscriptions
                    .into_values()
                    .map(|s| SubscriptionView {
                        name: s.name,
                        mode: s.mode,
                        destinations: s.destinations,
                    })
                    .collect(),
            })
            .collect(),
        continuous_queries: db
            .continuous_queries
            .into_values()
            .map(|cq| ContinuousQueryView {
                name: cq.name,
                query: cq.query,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::{Database, User};

    fn snapshot(catalog: &Catalog) -> Snapshot {
        Snapshot {
            cluster: "prod".into(),
            version: 7,
            data: catalog.to_meta_bytes().into(),
            history_id: String::new(),
        }
    }

    #[test]
    fn a_catalog_is_shown_without_password_hashes() {
        let mut catalog = Catalog::default();
        catalog
            .databases
            .insert("metrics".into(), Database::new("metrics", "autogen"));
        let mut alice = User::new("alice", "$2a$10$secrethashsecrethash", false);
        alice.privileges.insert("metrics".into(), Privilege::Read);
        catalog.users.insert("alice".into(), alice);
        catalog
            .users
            .insert("root".into(), User::new("root", "$2a$10$roothash", true));

        let view = CatalogView::new(&snapshot(&catalog));
        let json = serde_json::to_string(&view).expect("serializable");

        assert!(!json.contains("hash"), "{json}");
        assert_eq!(view.version, 7);
        assert_eq!(view.databases[0].name, "metrics");
        assert_eq!(view.users.len(), 2);
        assert!(json.contains(r#""grants":[{"database":"metrics","privilege":"read"}]"#));
        assert!(json.contains(r#""name":"root","admin":true"#), "{json}");
    }

    #[test]
    fn nodes_show_their_sync_state_and_unknown_when_they_report_none() {
        use crate::manager::store::{NodeRecord, NodeStatus, SyncReport};
        let node = |id: &str, sync: Option<SyncReport>, lag: Option<u64>| ListedNode {
            status: NodeStatus {
                record: NodeRecord {
                    node_id: id.into(),
                    cluster: "prod".into(),
                    sync,
                    ..NodeRecord::default()
                },
                alive: true,
            },
            lag,
        };
        let failing = SyncReport {
            applied_version: 3,
            applied_history_id: "h".into(),
            sync_error: "pull: influxd is down".into(),
            ..SyncReport::default()
        };
        let synced = SyncReport {
            sync_error: String::new(),
            ..failing.clone()
        };
        let listing = Listing::new(
            Vec::new(),
            vec![
                node("a", Some(failing), Some(1)),
                node("b", Some(synced), Some(0)),
                node("c", None, None),
            ],
        );
        let json = serde_json::to_value(&listing).expect("serializable");
        let sync = |i: usize| {
            let n = &json["nodes"][i];
            (
                n["applied_version"].clone(),
                n["lag"].clone(),
                n["sync_error"].clone(),
            )
        };
        use serde_json::json;
        assert_eq!(
            sync(0),
            (json!(3), json!(1), json!("pull: influxd is down"))
        );
        assert_eq!(sync(1), (json!(3), json!(0), json!(null)));
        assert_eq!(sync(2), (json!(null), json!(null), json!(null)));
    }

    #[test]
    fn a_cluster_without_catalog_shows_an_empty_one() {
        let view = CatalogView::new(&Snapshot {
            cluster: "new".into(),
            version: 0,
            data: Default::default(),
            history_id: String::new(),
        });
        assert!(view.databases.is_empty() && view.users.is_empty() && view.error.is_none());
    }

    #[test]
    fn unreadable_bytes_are_reported_not_hidden() {
        let view = CatalogView::new(&Snapshot {
            cluster: "bad".into(),
            version: 3,
            data: vec![0xff, 0xff, 0xff].into(),
            history_id: String::new(),
        });
        assert!(view.error.is_some());
        assert_eq!(view.version, 3);
    }
}
