//! The three-way merge a node runs when the cluster's catalog moved on without
//! it: the remote catalog, with this node's changes since the last synced base
//! re-applied on top.
//!
//! The merge works per entity, never per catalog, so two nodes changing
//! different things both win. The entities and what each one compares:
//!
//! | entity | identity | compared |
//! |---|---|---|
//! | database | name | its default policy name |
//! | retention policy | database, name | duration, shard duration, replication, write limits |
//! | subscription | database, policy, name | mode, destinations |
//! | continuous query | database, name | query text |
//! | user | name | hash, admin flag |
//! | privilege | user, database | the privilege |
//!
//! A privilege is its own entity, a child of both its user and its database,
//! so a `GRANT` here and a `GRANT` on another database elsewhere both survive.
//!
//! With a base, per entity (absence is a value, so a drop is a change too):
//!
//! - unchanged here (local == base): the remote one, whatever happened there;
//! - changed only here (remote == base): the local one;
//! - changed on both sides: the local one — the local change is re-applied on
//!   top — with a warning when the two differ. This covers deletions: dropped
//!   here and modified remotely stays dropped; modified here and dropped
//!   remotely comes back as modified here.
//!
//! Without a base (a node's first join): the remote one where the cluster has
//! one (a warning when the node's differs), the local one where only the node
//! has it.
//!
//! Finally every child needs its parent in the result: a policy, subscription,
//! query or privilege whose database (policy, user) is gone is dropped with a
//! warning — typically a local change on a database dropped remotely.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{
    Catalog, ContinuousQuery, Database, Privilege, RetentionPolicy, Subscription, User,
};

/// The result of [`merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The merged catalog.
    pub merged: Catalog,
    /// What an operator should hear about: changes on both sides where the
    /// local one won, and entities dropped because their parent is gone.
    pub warnings: Vec<String>,
}

/// Merges `local` into `remote` against `base`, the catalog both last agreed
/// on (`None` on a node's first join). See the module documentation.
pub fn merge(base: Option<&Catalog>, local: &Catalog, remote: &Catalog) -> MergeOutcome {
    let local_entities = entities(local);
    let remote_entities = entities(remote);
    let base_entities = base.map(entities);
    let mut keys: BTreeSet<&Key> = local_entities
        .keys()
        .chain(remote_entities.keys())
        .collect();
    if let Some(b) = &base_entities {
        keys.extend(b.keys());
    }
    let mut warnings = Vec::new();
    let mut chosen = BTreeMap::new();
    for key in keys {
        let l = local_entities.get(key);
        let r = remote_entities.get(key);
        let value = match &base_entities {
            None => {
                if let (Some(l), Some(r)) = (l, r) {
                    if l != r {
                        warnings.push(format!(
                            "{} differs from the cluster's on first join; taking the cluster's",
                            describe(key)
                        ));
                    }
                }
                r.or(l)
            }
            Some(b) => {
                let b = b.get(key);
                if l == b {
                    r
                } else if r == b {
                    l
                } else {
                    if l != r {
                        warnings.push(format!(
                            "{} was {} here and {} in the cluster; keeping this node's change",
                            describe(key),
                            verb(b, l),
                            verb(b, r)
                        ));
                    }
                    l
                }
            }
        };
        if let Some(value) = value {
            chosen.insert(key.clone(), value.clone());
        }
    }
    let merged = rebuild(chosen, &mut warnings);
    MergeOutcome { merged, warnings }
}

/// What happened to an entity between `before` and `after`.
fn verb(before: Option<&Entity>, after: Option<&Entity>) -> &'static str {
    match (before, after) {
        (None, _) => "created",
        (Some(_), None) => "dropped",
        (Some(_), Some(_)) => "changed",
    }
}

/// An entity's identity. The variant order puts parents before children.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Database(String),
    Policy(String, String),
    Subscription(String, String, String),
    Query(String, String),
    User(String),
    Privilege(String, String),
}

/// An entity's own settings, without its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entity {
    /// The database's name and default policy.
    Database(Database),
    /// Without subscriptions.
    Policy(RetentionPolicy),
    Subscription(Subscription),
    Query(ContinuousQuery),
    /// Without privileges.
    User(User),
    Privilege(Privilege),
}

/// A catalog as a flat map of entities.
pub(crate) fn entities(catalog: &Catalog) -> BTreeMap<Key, Entity> {
    let mut out = BTreeMap::new();
    for (db_name, db) in &catalog.databases {
        let shell = Database {
            retention_policies: BTreeMap::new(),
            continuous_queries: BTreeMap::new(),
            ..db.clone()
        };
        out.insert(Key::Database(db_name.clone()), Entity::Database(shell));
        for (rp_name, rp) in &db.retention_policies {
            let shell = RetentionPolicy {
                subscriptions: BTreeMap::new(),
                ..rp.clone()
            };
            out.insert(
                Key::Policy(db_name.clone(), rp_name.clone()),
                Entity::Policy(shell),
            );
            for (sub_name, sub) in &rp.subscriptions {
                out.insert(
                    Key::Subscription(db_name.clone(), rp_name.clone(), sub_name.clone()),
                    Entity::Subscription(sub.clone()),
                );
            }
        }
        for (cq_name, cq) in &db.continuous_queries {
            out.insert(
                Key::Query(db_name.clone(), cq_name.clone()),
                Entity::Query(cq.clone()),
            );
        }
    }
    for (user_name, user) in &catalog.users {
        let shell = User {
            privileges: BTreeMap::new(),
            ..user.clone()
        };
        out.insert(Key::User(user_name.clone()), Entity::User(shell));
        for (db_name, privilege) in &user.privileges {
            out.insert(
                Key::Privilege(user_name.clone(), db_name.clone()),
                Entity::Privilege(*privilege),
            );
        }
    }
    out
}

/// A catalog from entities; a child whose parent is missing is dropped with a
/// warning.
pub(crate) fn rebuild(entities: BTreeMap<Key, Entity>, warnings: &mut Vec<String>) -> Catalog {
    let mut catalog = Catalog::default();
    // Keys sort parents first, so every parent is in place before its children.
    for (key, entity) in entities {
        let placed = match (&key, entity) {
            (Key::Database(db), Entity::Database(shell)) => {
                catalog.databases.insert(db.clone(), shell);
                true
            }
            (Key::Policy(db, rp), Entity::Policy(shell)) => catalog
                .databases
                .get_mut(db)
                .map(|d| d.retention_policies.insert(rp.clone(), shell))
                .is_some(),
            (Key::Subscription(db, rp, sub), Entity::Subscription(s)) => catalog
                .databases
                .get_mut(db)
                .and_then(|d| d.retention_policies.get_mut(rp))
                .map(|p| p.subscriptions.insert(sub.clone(), s))
                .is_some(),
            (Key::Query(db, cq), Entity::Query(q)) => catalog
                .databases
                .get_mut(db)
                .map(|d| d.continuous_queries.insert(cq.clone(), q))
                .is_some(),
            (Key::User(user), Entity::User(shell)) => {
                catalog.users.insert(user.clone(), shell);
                true
            }
            (Key::Privilege(user, db), Entity::Privilege(p)) => {
                catalog.databases.contains_key(db)
                    && catalog
                        .users
                        .get_mut(user)
                        .map(|u| u.privileges.insert(db.clone(), p))
                        .is_some()
            }
            // Keys and entities are built in pairs; a mismatch cannot occur.
            _ => true,
        };
        if !placed {
            warnings.push(format!(
                "{} dropped: {} no longer exists",
                describe(&key),
                describe_parent(&key)
            ));
        }
    }
    catalog
}

fn describe(key: &Key) -> String {
    match key {
        Key::Database(db) => format!("database {db:?}"),
        Key::Policy(db, rp) => format!("retention policy {rp:?} on database {db:?}"),
        Key::Subscription(db, rp, s) => {
            format!("subscription {s:?} on retention policy {db:?}.{rp:?}")
        }
        Key::Query(db, cq) => format!("continuous query {cq:?} on database {db:?}"),
        Key::User(u) => format!("user {u:?}"),
        Key::Privilege(u, db) => format!("privilege of user {u:?} on database {db:?}"),
    }
}

fn describe_parent(key: &Key) -> String {
    match key {
        Key::Database(_) | Key::User(_) => "its parent".to_owned(),
        Key::Policy(db, _) | Key::Query(db, _) => format!("database {db:?}"),
        Key::Subscription(db, rp, _) => format!("retention policy {db:?}.{rp:?}"),
        Key::Privilege(u, db) => format!("user {u:?} or database {db:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::tests::sample;
    use crate::influx::testgen;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const HOUR: i64 = 3_600_000_000_000;

    fn rp_mut<'a>(c: &'a mut Catalog, db: &str, rp: &str) -> &'a mut RetentionPolicy {
        c.databases
            .get_mut(db)
            .unwrap()
            .retention_policies
            .get_mut(rp)
            .unwrap()
    }

    #[test]
    fn flatten_and_rebuild_round_trip() {
        let c = sample();
        let mut warnings = Vec::new();
        assert_eq!(rebuild(entities(&c), &mut warnings), c);
        assert!(warnings.is_empty());
    }

    #[test]
    fn unchanged_locally_takes_remote() {
        let base = sample();
        let mut remote = base.clone();
        rp_mut(&mut remote, "telegraf", "autogen").duration_ns = 48 * HOUR;
        remote.users.remove("root");
        let out = merge(Some(&base), &base, &remote);
        assert_eq!(out.merged, remote);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn changed_only_locally_keeps_local() {
        let base = sample();
        let mut local = base.clone();
        local.databases.remove("wéird 'db' 日本");
        local
            .users
            .get_mut("alice")
            .unwrap()
            .privileges
            .remove("wéird 'db' 日本");
        local.users.get_mut("alice").unwrap().admin = true;
        let out = merge(Some(&base), &local, &base);
        assert_eq!(out.merged, local);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn changes_to_different_entities_both_survive() {
        let base = sample();
        let mut local = base.clone();
        rp_mut(&mut local, "telegraf", "autogen").replica_n = 3;
        local
            .users
            .get_mut("alice")
            .unwrap()
            .privileges
            .insert("telegraf".into(), Privilege::All);
        let mut remote = base.clone();
        rp_mut(&mut remote, "telegraf", "one \"week\"").duration_ns = 336 * HOUR;
        remote.users.get_mut("alice").unwrap().hash = "$2a$10$new".into();
        remote
            .users
            .get_mut("alice")
            .unwrap()
            .privileges
            .insert("wéird 'db' 日本".into(), Privilege::Write);
        let out = merge(Some(&base), &local, &remote);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let m = &out.merged;
        assert_eq!(
            m.databases["telegraf"].retention_policies["autogen"].replica_n,
            3
        );
        assert_eq!(
            m.databases["telegraf"].retention_policies["one \"week\""].duration_ns,
            336 * HOUR
        );
        let alice = &m.users["alice"];
        assert_eq!(alice.hash, "$2a$10$new");
        assert_eq!(alice.privileges["telegraf"], Privilege::All);
        assert_eq!(alice.privileges["wéird 'db' 日本"], Privilege::Write);
    }

    #[test]
    fn changed_on_both_sides_local_wins_with_a_warning() {
        let base = sample();
        let mut local = base.clone();
        rp_mut(&mut local, "telegraf", "autogen").duration_ns = 24 * HOUR;
        let mut remote = base.clone();
        rp_mut(&mut remote, "telegraf", "autogen").duration_ns = 48 * HOUR;
        let out = merge(Some(&base), &local, &remote);
        assert_eq!(out.merged, local);
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].contains("keeping this node's change"));

        // The same change on both sides is no conflict.
        let out = merge(Some(&base), &local, &local);
        assert_eq!(out.merged, local);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn deleted_locally_and_modified_remotely_stays_deleted() {
        let base = sample();
        let mut local = base.clone();
        local
            .databases
            .get_mut("telegraf")
            .unwrap()
            .retention_policies
            .remove("one \"week\"");
        let mut remote = base.clone();
        rp_mut(&mut remote, "telegraf", "one \"week\"").replica_n = 5;
        let out = merge(Some(&base), &local, &remote);
        assert!(!out.merged.databases["telegraf"]
            .retention_policies
            .contains_key("one \"week\""));
        assert!(out.warnings[0].contains("dropped here and changed in the cluster"));

        // Deleted locally and unchanged remotely: deleted.
        let out = merge(Some(&base), &local, &base);
        assert_eq!(out.merged, local);
    }

    #[test]
    fn modified_locally_and_deleted_remotely_comes_back() {
        let base = sample();
        let mut local = base.clone();
        rp_mut(&mut local, "telegraf", "one \"week\"").replica_n = 5;
        let mut remote = base.clone();
        remote
            .databases
            .get_mut("telegraf")
            .unwrap()
            .retention_policies
            .remove("one \"week\"");
        let out = merge(Some(&base), &local, &remote);
        assert_eq!(
            out.merged.databases["telegraf"].retention_policies["one \"week\""].replica_n,
            5
        );
        assert_eq!(out.warnings.len(), 1);
    }

    #[test]
    fn child_of_a_database_dropped_remotely_is_dropped_with_a_warning() {
        let base = sample();
        let mut local = base.clone();
        let db = local.databases.get_mut("telegraf").unwrap();
        db.retention_policies
            .insert("new".into(), RetentionPolicy::new("new", HOUR, HOUR, 1));
        rp_mut(&mut local, "telegraf", "autogen")
            .subscriptions
            .get_mut("kapacitor")
            .unwrap()
            .mode = "ALL".into();
        let mut remote = base.clone();
        remote.databases.remove("telegraf");
        for u in remote.users.values_mut() {
            u.privileges.remove("telegraf");
        }
        let out = merge(Some(&base), &local, &remote);
        assert_eq!(out.merged, remote);
        assert!(out
            .warnings
            .iter()
            .any(|w| w.contains("retention policy \"new\"") && w.contains("no longer exists")));
        assert!(out
            .warnings
            .iter()
            .any(|w| w.contains("subscription \"kapacitor\"") && w.contains("no longer exists")));

        // A privilege granted here on it goes too.
        let mut local = base.clone();
        local
            .users
            .get_mut("root")
            .unwrap()
            .privileges
            .insert("telegraf".into(), Privilege::Read);
        let out = merge(Some(&base), &local, &remote);
        assert_eq!(out.merged, remote);
        assert!(out
            .warnings
            .iter()
            .any(|w| w.contains("privilege of user \"root\"")));
    }

    #[test]
    fn first_join_takes_the_cluster_and_adds_local_only_entities() {
        let remote = sample();
        let mut local = Catalog::default();
        let mut db = Database::new("telegraf", "autogen");
        db.retention_policies
            .insert("autogen".into(), RetentionPolicy::new("autogen", 0, 0, 1));
        db.retention_policies
            .insert("mine".into(), RetentionPolicy::new("mine", HOUR, HOUR, 1));
        local.databases.insert("telegraf".into(), db);
        local
            .databases
            .insert("local".into(), Database::new("local", ""));
        local
            .users
            .insert("root".into(), User::new("root", "other", true));
        local
            .users
            .insert("carol".into(), User::new("carol", "c", false));

        let out = merge(None, &local, &remote);
        let m = &out.merged;
        assert_eq!(
            m.databases["telegraf"].retention_policies["autogen"],
            remote.databases["telegraf"].retention_policies["autogen"]
        );
        assert!(m.databases["telegraf"]
            .retention_policies
            .contains_key("mine"));
        assert!(m.databases.contains_key("local"));
        assert_eq!(m.users["root"].hash, remote.users["root"].hash);
        assert!(m.users.contains_key("carol"));
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);

        assert_eq!(merge(None, &remote, &remote).merged, remote);
        assert_eq!(merge(None, &Catalog::default(), &remote).merged, remote);
        assert_eq!(merge(None, &remote, &Catalog::default()).merged, remote);
    }

    #[test]
    fn properties_hold_for_random_catalogs() {
        let mut rng = StdRng::seed_from_u64(0x3E46E);
        for _ in 0..500 {
            let base = testgen::catalog(&mut rng, true);
            let local = testgen::variant(&mut rng, &base);
            let remote = testgen::variant(&mut rng, &base);

            assert_eq!(merge(Some(&base), &base, &remote).merged, remote);
            assert_eq!(merge(Some(&base), &local, &base).merged, local);
            assert_eq!(merge(Some(&base), &local, &local).merged, local);
            assert_eq!(merge(None, &local, &local).merged, local);

            let out = merge(Some(&base), &local, &remote);
            let m = &out.merged;
            // Idempotent: merging the result again changes nothing.
            assert_eq!(&merge(Some(&base), m, &remote).merged, m);
            assert_eq!(&merge(Some(&remote), m, &remote).merged, m);
            assert_eq!(&merge(Some(&base), m, m).merged, m);
            // A consistent catalog: rebuilding it drops nothing.
            let mut warnings = Vec::new();
            assert_eq!(&rebuild(entities(m), &mut warnings), m);
            assert!(warnings.is_empty());
            // Every entity comes from one side.
            let (le, re) = (entities(&local), entities(&remote));
            for (k, v) in entities(m) {
                assert!(le.get(&k) == Some(&v) || re.get(&k) == Some(&v));
            }
        }
    }
}
