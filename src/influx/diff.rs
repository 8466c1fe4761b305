//! From one catalog to another in InfluxQL, the only way to change a running
//! influxd's metadata.
//!
//! [`diff`] lists the statements in an order influxd accepts:
//!
//! 0. `CREATE USER … WITH ALL PRIVILEGES` for new admins: an auth-enabled
//!    server without an admin accepts nothing else, and a user depends on
//!    nothing;
//! 1. `DROP CONTINUOUS QUERY`, then `DROP SUBSCRIPTION` — removed ones, and
//!    changed ones (InfluxQL cannot alter either, so a change is a drop and a
//!    create) — before any policy or database goes;
//! 2. `CREATE DATABASE`, `CREATE RETENTION POLICY`, `ALTER RETENTION POLICY`;
//! 3. `DROP RETENTION POLICY`, `DROP DATABASE` (after the default moved away);
//! 4. `CREATE SUBSCRIPTION`, `CREATE CONTINUOUS QUERY` (their policies exist);
//! 5. `DROP USER`, `CREATE USER`, then `GRANT`/`REVOKE ALL PRIVILEGES` for the
//!    admin flag, then `GRANT`/`REVOKE ... ON` (users and databases exist);
//! 6. notes that InfluxQL cannot carry out (a changed password hash).
//!
//! `_internal` ([`is_node_local_database`]) is no part of either side: it is
//! never created, dropped or granted on.
//!
//! Children of a dropped parent are not dropped one by one: `DROP DATABASE`
//! takes its policies, subscriptions, queries and the privileges on it along
//! (influxd removes those privileges itself), `DROP RETENTION POLICY` its
//! subscriptions.
//!
//! **Default retention policy.** `CREATE DATABASE "db"` on a stock influxd
//! (`retention-autocreate = true`) also creates `autogen` and makes it the
//! default, which would leave a policy the target may not have. A new database
//! is therefore created with its target default policy in one statement,
//! `CREATE DATABASE "db" WITH DURATION … REPLICATION … SHARD DURATION … NAME
//! "rp"`, which creates that policy instead of `autogen`; its other policies
//! follow as plain `CREATE RETENTION POLICY`. On an existing database, a new
//! default is `CREATE RETENTION POLICY … DEFAULT` or `ALTER RETENTION POLICY
//! … DEFAULT`. influxd keeps the default's *name* when that policy is dropped,
//! so a target default naming no policy is reproduced the same way it arises:
//! the name is made the default (created `WITH … NAME` or `… DEFAULT` if need
//! be) and then dropped. An empty target default cannot be set through
//! InfluxQL: a new database is then created plainly (a server with
//! `retention-autocreate = false` converges exactly; one with it on gains
//! `autogen`, which the next diff drops), and an existing one keeps its default.
//!
//! **Durations** are written in the largest unit that divides them exactly
//! (`7d`, `1h`, `90m`, `1500ms`, `10u`), `INF` for a retention of 0; a
//! sub-microsecond remainder uses `ns`, which influxd 1.6's parser accepts.
//! A shard duration of 0 means "influxd chooses"; statements always carry the
//! value influxd would choose (or its 1 h floor), so what the server stores is
//! what the diff compared against.
//!
//! **Users.** InfluxQL takes plain passwords, never hashes. A new user is
//! created with a random password nobody knows (the agent's front door, or
//! JWT, logs them in with the cluster's hash); an existing user whose hash
//! differs gets a [`Change::PasswordHashChanged`] note and no InfluxQL. A
//! privilege of [`Privilege::None`] and no privilege at all are the same to
//! the diff: `GRANT` sets a privilege outright (`GRANT READ` after `WRITE`
//! leaves `READ`), `REVOKE ALL ON` leaves `None` behind.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{
    is_node_local_database, Catalog, ContinuousQuery, Database, Privilege, RetentionPolicy,
    Subscription, User,
};
use super::change::{Change, Password, PolicyUpdate, Statement};
use super::influxql::{NS_PER_DAY, NS_PER_HOUR, NS_PER_WEEK};

/// The policy influxd creates with a plain `CREATE DATABASE` (default config).
pub const AUTOGEN: &str = "autogen";

/// The statements that turn `from` into `to`, in an order influxd accepts
/// (see the module documentation).
pub fn diff(from: &Catalog, to: &Catalog) -> Vec<Statement> {
    let mut plan = Plan::default();
    for name in from.databases.keys() {
        if !to.databases.contains_key(name) && !is_node_local_database(name) {
            plan.drop_databases
                .push(Change::DropDatabase { name: name.clone() });
        }
    }
    for (name, target) in &to.databases {
        if is_node_local_database(name) {
            continue;
        }
        match from.databases.get(name) {
            None => plan.new_database(name, target),
            Some(current) => plan.existing_database(name, current, target),
        }
    }
    for name in from.users.keys() {
        if !to.users.contains_key(name) {
            plan.drop_users
                .push(Change::DropUser { name: name.clone() });
        }
    }
    for (name, target) in &to.users {
        plan.user(name, from.users.get(name), from, target, to);
    }
    plan.into_statements()
}

/// The changes of a diff, by phase.
#[derive(Default)]
struct Plan {
    create_admins: Vec<Change>,
    drop_queries: Vec<Change>,
    drop_subscriptions: Vec<Change>,
    create_databases: Vec<Change>,
    create_policies: Vec<Change>,
    alter_policies: Vec<Change>,
    drop_policies: Vec<Change>,
    drop_databases: Vec<Change>,
    create_subscriptions: Vec<Change>,
    create_queries: Vec<Change>,
    drop_users: Vec<Change>,
    create_users: Vec<Change>,
    admin: Vec<Change>,
    privileges: Vec<Change>,
    notes: Vec<Change>,
}

impl Plan {
    fn into_statements(self) -> Vec<Statement> {
        [
            self.create_admins,
            self.drop_queries,
            self.drop_subscriptions,
            self.create_databases,
            self.create_policies,
            self.alter_policies,
            self.drop_policies,
            self.drop_databases,
            self.create_subscriptions,
            self.create_queries,
            self.drop_users,
            self.create_users,
            self.admin,
            self.privileges,
            self.notes,
        ]
        .into_iter()
        .flatten()
        .map(Statement::new)
        .collect()
    }

    fn new_database(&mut self, name: &str, target: &Database) {
        let default = &target.default_retention_policy;
        let mut created_with = None;
        if let Some(rp) = target.retention_policies.get(default) {
            self.create_databases.push(Change::CreateDatabase {
                name: name.to_owned(),
                policy: Some(normalized(default, rp, false)),
            });
            // CREATE DATABASE takes no write limits.
            let limits = PolicyUpdate {
                future_write_limit: Some(rp.future_write_limit).filter(|v| *v > 0),
                past_write_limit: Some(rp.past_write_limit).filter(|v| *v > 0),
                ..Default::default()
            };
            if !limits.is_empty() {
                self.alter_policies.push(Change::AlterRetentionPolicy {
                    database: name.to_owned(),
                    name: default.clone(),
                    update: limits,
                    default: false,
                });
            }
            created_with = Some(default);
        } else if default.is_empty() {
            self.create_databases.push(Change::CreateDatabase {
                name: name.to_owned(),
                policy: None,
            });
        } else {
            // A default naming no policy: create it as the default, then drop it.
            self.create_databases.push(Change::CreateDatabase {
                name: name.to_owned(),
                policy: Some(placeholder(default)),
            });
            self.drop_policies.push(Change::DropRetentionPolicy {
                database: name.to_owned(),
                name: default.clone(),
            });
        }
        for (rp_name, rp) in &target.retention_policies {
            if created_with != Some(rp_name) {
                self.create_policies.push(Change::CreateRetentionPolicy {
                    database: name.to_owned(),
                    policy: normalized(rp_name, rp, true),
                    default: false,
                });
            }
            self.subscriptions(name, rp_name, None, rp);
        }
        self.queries(name, None, target);
    }

    fn existing_database(&mut self, name: &str, current: &Database, target: &Database) {
        let default = &target.default_retention_policy;
        // InfluxQL cannot unset a default: an empty target default is left alone.
        let default_changes = !default.is_empty() && *default != current.default_retention_policy;
        for (rp_name, rp) in &target.retention_policies {
            let make_default = default_changes && rp_name == default;
            match current.retention_policies.get(rp_name) {
                None => self.create_policies.push(Change::CreateRetentionPolicy {
                    database: name.to_owned(),
                    policy: normalized(rp_name, rp, true),
                    default: make_default,
                }),
                Some(existing) => {
                    let update = policy_update(existing, rp);
                    if make_default || !update.is_empty() {
                        self.alter_policies.push(Change::AlterRetentionPolicy {
                            database: name.to_owned(),
                            name: rp_name.clone(),
                            update,
                            default: make_default,
                        });
                    }
                }
            }
            self.subscriptions(name, rp_name, current.retention_policies.get(rp_name), rp);
        }
        if default_changes && !target.retention_policies.contains_key(default) {
            // A default naming no policy: make the name the default, then drop it.
            if current.retention_policies.contains_key(default) {
                self.alter_policies.push(Change::AlterRetentionPolicy {
                    database: name.to_owned(),
                    name: default.clone(),
                    update: PolicyUpdate::default(),
                    default: true,
                });
            } else {
                self.create_policies.push(Change::CreateRetentionPolicy {
                    database: name.to_owned(),
                    policy: placeholder(default),
                    default: true,
                });
                self.drop_policies.push(Change::DropRetentionPolicy {
                    database: name.to_owned(),
                    name: default.clone(),
                });
            }
        }
        for rp_name in current.retention_policies.keys() {
            if !target.retention_policies.contains_key(rp_name) {
                self.drop_policies.push(Change::DropRetentionPolicy {
                    database: name.to_owned(),
                    name: rp_name.clone(),
                });
            }
        }
        self.queries(name, Some(current), target);
    }

    fn subscriptions(
        &mut self,
        database: &str,
        policy: &str,
        current: Option<&RetentionPolicy>,
        target: &RetentionPolicy,
    ) {
        let empty = BTreeMap::new();
        let current = current.map_or(&empty, |rp| &rp.subscriptions);
        for (name, sub) in current {
            if target
                .subscriptions
                .get(name)
                .is_none_or(|t| !same_subscription(sub, t))
            {
                self.drop_subscriptions.push(Change::DropSubscription {
                    database: database.to_owned(),
                    retention_policy: policy.to_owned(),
                    name: name.clone(),
                });
            }
        }
        for (name, sub) in &target.subscriptions {
            if current.get(name).is_none_or(|c| !same_subscription(c, sub)) {
                self.create_subscriptions.push(Change::CreateSubscription {
                    database: database.to_owned(),
                    retention_policy: policy.to_owned(),
                    subscription: Subscription {
                        name: name.clone(),
                        ..sub.clone()
                    },
                });
            }
        }
    }

    fn queries(&mut self, database: &str, current: Option<&Database>, target: &Database) {
        let empty = BTreeMap::new();
        let current = current.map_or(&empty, |db| &db.continuous_queries);
        for (name, cq) in current {
            if target
                .continuous_queries
                .get(name)
                .is_none_or(|t| t.query != cq.query)
            {
                self.drop_queries.push(Change::DropContinuousQuery {
                    database: database.to_owned(),
                    name: name.clone(),
                });
            }
        }
        for (name, cq) in &target.continuous_queries {
            if current.get(name).is_none_or(|c| c.query != cq.query) {
                self.create_queries.push(Change::CreateContinuousQuery {
                    database: database.to_owned(),
                    query: ContinuousQuery {
                        name: name.clone(),
                        query: cq.query.clone(),
                    },
                });
            }
        }
    }

    fn user(
        &mut self,
        name: &str,
        current: Option<&User>,
        from: &Catalog,
        target: &User,
        to: &Catalog,
    ) {
        let wanted = privileges(target, to);
        let had = match current {
            None => {
                let created = Change::CreateUser {
                    name: name.to_owned(),
                    password: Password::random(),
                    admin: target.admin,
                };
                if target.admin {
                    self.create_admins.push(created);
                } else {
                    self.create_users.push(created);
                }
                BTreeMap::new()
            }
            Some(current) => {
                if current.admin != target.admin {
                    self.admin.push(Change::SetAdmin {
                        user: name.to_owned(),
                        admin: target.admin,
                    });
                }
                if current.hash != target.hash {
                    self.notes.push(Change::PasswordHashChanged {
                        user: name.to_owned(),
                    });
                }
                // Privileges on databases being dropped go with them.
                let mut had = privileges(current, from);
                had.retain(|db, _| to.databases.contains_key(db));
                had
            }
        };
        let databases: BTreeSet<&String> = had.keys().chain(wanted.keys()).collect();
        for db in databases {
            let privilege = wanted.get(db).copied().unwrap_or(Privilege::None);
            if had.get(db).copied().unwrap_or(Privilege::None) != privilege {
                self.privileges.push(Change::SetPrivilege {
                    user: name.to_owned(),
                    database: db.clone(),
                    privilege,
                });
            }
        }
    }
}

/// A user's effective privileges: not `None`, on databases that exist.
fn privileges(user: &User, catalog: &Catalog) -> BTreeMap<String, Privilege> {
    user.privileges
        .iter()
        .filter(|(db, p)| {
            **p != Privilege::None
                && catalog.databases.contains_key(*db)
                && !is_node_local_database(db)
        })
        .map(|(db, p)| (db.clone(), *p))
        .collect()
}

fn same_subscription(a: &Subscription, b: &Subscription) -> bool {
    a.mode.eq_ignore_ascii_case(&b.mode) && a.destinations == b.destinations
}

/// The shard group duration influxd picks for a retention duration.
fn default_shard_group_duration(duration_ns: i64) -> i64 {
    if duration_ns <= 0 || duration_ns >= 180 * NS_PER_DAY {
        NS_PER_WEEK
    } else if duration_ns >= 2 * NS_PER_DAY {
        NS_PER_DAY
    } else {
        NS_PER_HOUR
    }
}

/// The shard group duration influxd stores for a requested one: 0 picks from
/// the retention duration, anything under an hour becomes an hour.
pub fn effective_shard_group_duration(duration_ns: i64, shard_group_duration_ns: i64) -> i64 {
    if shard_group_duration_ns <= 0 {
        default_shard_group_duration(duration_ns)
    } else if shard_group_duration_ns < NS_PER_HOUR {
        default_shard_group_duration(NS_PER_HOUR)
    } else {
        shard_group_duration_ns
    }
}

/// A policy as influxd would store it: no negative durations, an explicit
/// shard group duration, a replication factor of at least 1, no subscriptions.
pub(crate) fn normalized(name: &str, rp: &RetentionPolicy, with_limits: bool) -> RetentionPolicy {
    let duration_ns = rp.duration_ns.max(0);
    RetentionPolicy {
        name: name.to_owned(),
        duration_ns,
        shard_group_duration_ns: effective_shard_group_duration(
            duration_ns,
            rp.shard_group_duration_ns,
        ),
        replica_n: rp.replica_n.max(1),
        subscriptions: BTreeMap::new(),
        future_write_limit: if with_limits {
            rp.future_write_limit.max(0)
        } else {
            0
        },
        past_write_limit: if with_limits {
            rp.past_write_limit.max(0)
        } else {
            0
        },
    }
}

/// The short-lived policy that carries a default name no policy has.
fn placeholder(name: &str) -> RetentionPolicy {
    normalized(name, &RetentionPolicy::new(name, 0, 0, 1), false)
}

fn policy_update(current: &RetentionPolicy, target: &RetentionPolicy) -> PolicyUpdate {
    let c = normalized(&current.name, current, true);
    let t = normalized(&target.name, target, true);
    let mut update = PolicyUpdate::default();
    // Both travel together: influxd checks the new duration against the shard
    // duration, and a shrinking retention needs a shrinking shard duration.
    if c.duration_ns != t.duration_ns || c.shard_group_duration_ns != t.shard_group_duration_ns {
        update.duration_ns = Some(t.duration_ns);
        update.shard_group_duration_ns = Some(t.shard_group_duration_ns);
    }
    if c.replica_n != t.replica_n {
        update.replica_n = Some(t.replica_n);
    }
    if c.future_write_limit != t.future_write_limit {
        update.future_write_limit = Some(t.future_write_limit);
    }
    if c.past_write_limit != t.past_write_limit {
        update.past_write_limit = Some(t.past_write_limit);
    }
    update
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::tests::sample;
    use crate::influx::catalog::INTERNAL_DATABASE;
    use crate::influx::change::Target;
    use crate::influx::influxql::NS_PER_MINUTE;
    use crate::influx::simulate::simulate;
    use crate::influx::testgen;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const HOUR: i64 = NS_PER_HOUR;

    fn sql(statements: &[Statement]) -> Vec<String> {
        statements.iter().filter_map(|s| s.redacted()).collect()
    }

    /// Runs `statements` through the model of influxd; panics on a rejection.
    fn apply(from: &Catalog, statements: &[Statement]) -> Catalog {
        let mut c = from.clone();
        for s in statements {
            if let Err(e) = simulate(&mut c, s) {
                panic!(
                    "{:?} rejected: {e}\nall: {:#?}",
                    s.redacted(),
                    sql(statements)
                );
            }
        }
        c
    }

    fn assert_converges(from: &Catalog, to: &Catalog) {
        let statements = diff(from, to);
        let after = apply(from, &statements);
        let again = diff(&after, to);
        assert!(
            again.iter().all(|s| !s.is_executable()),
            "not converged after {:#?}\nstill: {:#?}",
            sql(&statements),
            sql(&again)
        );
        // Only users the diff created or whose hash differed keep a different hash.
        for s in &again {
            let user = s.unapplied_hash().unwrap();
            assert!(statements.iter().any(|t| t.unapplied_hash() == Some(user)));
        }
        // And a second diff against itself is empty.
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn no_change_no_statements() {
        let c = sample();
        assert!(diff(&c, &c).is_empty());
        assert!(diff(&Catalog::default(), &Catalog::default()).is_empty());
    }

    #[test]
    fn weird_names_are_quoted_in_statements() {
        let mut to = Catalog::default();
        to.databases.insert(
            "we\"ird 'db'".into(),
            Database::new("we\"ird 'db'", "r \"x\""),
        );
        to.databases
            .get_mut("we\"ird 'db'")
            .unwrap()
            .retention_policies
            .insert("r \"x\"".into(), RetentionPolicy::new("r \"x\"", 0, 0, 1));
        let mut u = User::new("o'hara \"x\"", "h", false);
        u.privileges.insert("we\"ird 'db'".into(), Privilege::Read);
        to.users.insert("o'hara \"x\"".into(), u);
        let statements = diff(&Catalog::default(), &to);
        assert_eq!(
            sql(&statements),
            [
                r#"CREATE DATABASE "we\"ird 'db'" WITH DURATION INF REPLICATION 1 SHARD DURATION 1w NAME "r \"x\"""#,
                r#"CREATE USER "o'hara \"x\"" WITH PASSWORD '***'"#,
                r#"GRANT READ ON "we\"ird 'db'" TO "o'hara \"x\"""#,
            ]
        );
    }

    #[test]
    fn shard_group_durations_as_influxd_chooses_them() {
        assert_eq!(effective_shard_group_duration(0, 0), NS_PER_WEEK);
        assert_eq!(effective_shard_group_duration(HOUR, 0), HOUR);
        assert_eq!(
            effective_shard_group_duration(2 * NS_PER_DAY, 0),
            NS_PER_DAY
        );
        assert_eq!(
            effective_shard_group_duration(180 * NS_PER_DAY, 0),
            NS_PER_WEEK
        );
        assert_eq!(effective_shard_group_duration(0, NS_PER_MINUTE), HOUR);
        assert_eq!(effective_shard_group_duration(0, 3 * HOUR), 3 * HOUR);
    }

    #[test]
    fn new_database_is_created_with_its_default_policy() {
        let to = sample();
        let statements = diff(&Catalog::default(), &to);
        let text = sql(&statements);
        assert_eq!(
            text[0],
            "CREATE USER \"root\" WITH PASSWORD '***' WITH ALL PRIVILEGES"
        );
        assert_eq!(
            text[1],
            r#"CREATE DATABASE "telegraf" WITH DURATION INF REPLICATION 1 SHARD DURATION 1w NAME "autogen""#
        );
        assert!(text.contains(
            &r#"CREATE RETENTION POLICY "one \"week\"" ON "telegraf" DURATION 1w REPLICATION 2 SHARD DURATION 1d FUTURE LIMIT 1h"#
                .to_owned()
        ));
        assert!(text.contains(
            &r#"CREATE SUBSCRIPTION "kapacitor" ON "telegraf"."autogen" DESTINATIONS ANY 'udp://k1:9092', 'udp://k2:9092'"#
                .to_owned()
        ));
        // No autogen appears where the target has none.
        let after = apply(&Catalog::default(), &statements);
        assert!(!after.databases["wéird 'db' 日本"]
            .retention_policies
            .contains_key(AUTOGEN));
        assert_converges(&Catalog::default(), &to);
    }

    #[test]
    fn plain_create_database_gains_autogen_and_the_next_diff_drops_it() {
        let mut to = Catalog::default();
        to.databases.insert("db".into(), Database::new("db", ""));
        let statements = diff(&Catalog::default(), &to);
        assert_eq!(sql(&statements), [r#"CREATE DATABASE "db""#]);
        let after = apply(&Catalog::default(), &statements);
        assert_eq!(
            sql(&diff(&after, &to)),
            [r#"DROP RETENTION POLICY "autogen" ON "db""#]
        );
    }

    #[test]
    fn dangling_default_is_reproduced() {
        let mut to = Catalog::default();
        let mut db = Database::new("db", "gone");
        db.retention_policies
            .insert("r".into(), RetentionPolicy::new("r", 0, 0, 1));
        to.databases.insert("db".into(), db);
        let statements = diff(&Catalog::default(), &to);
        assert_eq!(
            sql(&statements),
            [
                r#"CREATE DATABASE "db" WITH DURATION INF REPLICATION 1 SHARD DURATION 1w NAME "gone""#,
                r#"CREATE RETENTION POLICY "r" ON "db" DURATION INF REPLICATION 1 SHARD DURATION 1w"#,
                r#"DROP RETENTION POLICY "gone" ON "db""#,
            ]
        );
        assert_eq!(
            apply(&Catalog::default(), &statements).databases["db"].default_retention_policy,
            "gone"
        );
        assert_converges(&Catalog::default(), &to);

        // On an existing database whose default is another policy.
        let mut from = to.clone();
        from.databases
            .get_mut("db")
            .unwrap()
            .default_retention_policy = "r".into();
        assert_eq!(
            sql(&diff(&from, &to)),
            [
                r#"CREATE RETENTION POLICY "gone" ON "db" DURATION INF REPLICATION 1 SHARD DURATION 1w DEFAULT"#,
                r#"DROP RETENTION POLICY "gone" ON "db""#,
            ]
        );
        assert_converges(&from, &to);
    }

    #[test]
    fn default_policy_moves_before_the_old_one_is_dropped() {
        let mut from = Catalog::default();
        let mut db = Database::new("db", "old");
        db.retention_policies
            .insert("old".into(), RetentionPolicy::new("old", 0, NS_PER_WEEK, 1));
        db.retention_policies.insert(
            "keep".into(),
            RetentionPolicy::new("keep", 0, NS_PER_WEEK, 1),
        );
        from.databases.insert("db".into(), db);
        let mut to = from.clone();
        let db = to.databases.get_mut("db").unwrap();
        db.retention_policies.remove("old");
        db.default_retention_policy = "keep".into();
        assert_eq!(
            sql(&diff(&from, &to)),
            [
                r#"ALTER RETENTION POLICY "keep" ON "db" DEFAULT"#,
                r#"DROP RETENTION POLICY "old" ON "db""#,
            ]
        );
        assert_converges(&from, &to);
    }

    #[test]
    fn alter_carries_duration_and_shard_duration_together() {
        let mut from = Catalog::default();
        let mut db = Database::new("db", "r");
        db.retention_policies
            .insert("r".into(), RetentionPolicy::new("r", 0, NS_PER_WEEK, 1));
        from.databases.insert("db".into(), db);
        let mut to = from.clone();
        let rp = to
            .databases
            .get_mut("db")
            .unwrap()
            .retention_policies
            .get_mut("r")
            .unwrap();
        rp.duration_ns = 24 * HOUR;
        rp.shard_group_duration_ns = 0;
        rp.replica_n = 3;
        assert_eq!(
            sql(&diff(&from, &to)),
            [r#"ALTER RETENTION POLICY "r" ON "db" DURATION 1d REPLICATION 3 SHARD DURATION 1h"#]
        );
        assert_converges(&from, &to);
        // A shard duration of 0 in the target equals the one influxd chose.
        let mut chose = to.clone();
        chose
            .databases
            .get_mut("db")
            .unwrap()
            .retention_policies
            .get_mut("r")
            .unwrap()
            .shard_group_duration_ns = HOUR;
        assert!(diff(&chose, &to).is_empty());
    }

    #[test]
    fn changed_query_and_subscription_are_dropped_and_created() {
        let from = sample();
        let mut to = from.clone();
        let db = to.databases.get_mut("telegraf").unwrap();
        db.continuous_queries.get_mut("cq").unwrap().query =
            "CREATE CONTINUOUS QUERY cq ON telegraf BEGIN SELECT max(v) INTO m2 FROM m GROUP BY time(1h) END".into();
        db.retention_policies
            .get_mut("autogen")
            .unwrap()
            .subscriptions
            .get_mut("kapacitor")
            .unwrap()
            .mode = "ALL".into();
        let text = sql(&diff(&from, &to));
        assert_eq!(
            text,
            [
                r#"DROP CONTINUOUS QUERY "cq" ON "telegraf""#,
                r#"DROP SUBSCRIPTION "kapacitor" ON "telegraf"."autogen""#,
                r#"CREATE SUBSCRIPTION "kapacitor" ON "telegraf"."autogen" DESTINATIONS ALL 'udp://k1:9092', 'udp://k2:9092'"#,
                "CREATE CONTINUOUS QUERY cq ON telegraf BEGIN SELECT max(v) INTO m2 FROM m GROUP BY time(1h) END",
            ]
        );
        assert_converges(&from, &to);
    }

    #[test]
    fn dropping_a_database_takes_its_children_along() {
        let from = sample();
        let mut to = from.clone();
        to.databases.remove("telegraf");
        to.users
            .get_mut("alice")
            .unwrap()
            .privileges
            .remove("telegraf");
        assert_eq!(sql(&diff(&from, &to)), [r#"DROP DATABASE "telegraf""#]);
        assert_converges(&from, &to);
    }

    #[test]
    fn users_and_privileges() {
        let from = sample();
        let mut to = from.clone();
        let alice = to.users.get_mut("alice").unwrap();
        alice.admin = true;
        alice.hash = "$2a$10$new".into();
        alice.privileges.insert("telegraf".into(), Privilege::Write);
        let root = to.users.get_mut("root").unwrap();
        root.admin = false;
        root.privileges
            .insert("wéird 'db' 日本".into(), Privilege::All);
        let statements = diff(&from, &to);
        assert_eq!(
            sql(&statements),
            [
                r#"GRANT ALL PRIVILEGES TO "alice""#,
                r#"REVOKE ALL PRIVILEGES FROM "root""#,
                r#"GRANT WRITE ON "telegraf" TO "alice""#,
                r#"GRANT ALL ON "wéird 'db' 日本" TO "root""#,
            ]
        );
        let notes: Vec<&Change> = statements
            .iter()
            .filter(|s| !s.is_executable())
            .map(|s| &s.change)
            .collect();
        assert_eq!(
            notes,
            [&Change::PasswordHashChanged {
                user: "alice".into()
            }]
        );
        assert_converges(&from, &to);

        // Revoking, and None equals absent.
        let mut revoked = from.clone();
        revoked
            .users
            .get_mut("alice")
            .unwrap()
            .privileges
            .remove("telegraf");
        assert_eq!(
            sql(&diff(&from, &revoked)),
            [r#"REVOKE ALL ON "telegraf" FROM "alice""#]
        );
        let mut none = from.clone();
        none.users
            .get_mut("alice")
            .unwrap()
            .privileges
            .insert("telegraf".into(), Privilege::None);
        assert!(diff(&revoked, &none).is_empty());

        // Dropping users; hash-only changes are notes.
        let mut hashed = from.clone();
        hashed.users.get_mut("root").unwrap().hash = "other".into();
        hashed.users.remove("alice");
        let statements = diff(&from, &hashed);
        assert_eq!(sql(&statements), [r#"DROP USER "alice""#]);
        assert_eq!(
            statements[1].change,
            Change::PasswordHashChanged {
                user: "root".into()
            }
        );
        assert_eq!(statements[1].influxql, None);
    }

    #[test]
    fn new_admins_come_before_anything_else() {
        let mut from = Catalog::default();
        from.users
            .insert("plain".into(), User::new("plain", "h", false));
        let mut to = sample();
        to.users
            .insert("plain".into(), User::new("plain", "h", false));
        to.users.insert("zed".into(), User::new("zed", "h", true));
        let statements = diff(&from, &to);
        let admins: Vec<bool> = statements
            .iter()
            .map(|s| matches!(s.change, Change::CreateUser { admin: true, .. }))
            .collect();
        // The two new admins (root, zed) first, nothing else before them.
        assert_eq!(
            admins.iter().take_while(|a| **a).count(),
            2,
            "{:#?}",
            sql(&statements)
        );
        assert_eq!(admins.iter().filter(|a| **a).count(), 2);
        assert_converges(&from, &to);
    }

    #[test]
    fn internal_is_never_created_dropped_or_granted_on() {
        let internal = || Database::new(INTERNAL_DATABASE, "monitor");
        let mut from = sample();
        from.databases.insert(INTERNAL_DATABASE.into(), internal());
        let mut to = sample();
        to.users
            .get_mut("alice")
            .unwrap()
            .privileges
            .insert(INTERNAL_DATABASE.into(), Privilege::All);
        // The node's own _internal stays, whatever the cluster says.
        assert!(diff(&from, &to).is_empty(), "{:#?}", sql(&diff(&from, &to)));
        // A cluster catalog carrying one (an old node's) creates nothing.
        let mut remote = sample();
        remote
            .databases
            .insert(INTERNAL_DATABASE.into(), internal());
        assert!(diff(&sample(), &remote).is_empty());
    }

    #[test]
    fn passwords_are_random_and_redacted() {
        let mut to = Catalog::default();
        to.users.insert("u".into(), User::new("u", "h", false));
        let a = diff(&Catalog::default(), &to);
        let b = diff(&Catalog::default(), &to);
        let (Change::CreateUser { password: pa, .. }, Change::CreateUser { password: pb, .. }) =
            (&a[0].change, &b[0].change)
        else {
            panic!("expected CREATE USER");
        };
        assert_ne!(pa, pb);
        assert_eq!(pa.expose().len(), 32);
        let text = a[0].influxql.as_deref().unwrap();
        assert!(text.contains(pa.expose()));
        assert!(!format!("{:?}", a[0]).contains(pa.expose()));
        assert_eq!(a[0].unapplied_hash(), Some("u"));
    }

    #[test]
    fn targets() {
        let statements = diff(&Catalog::default(), &sample());
        let targets: BTreeSet<Target> = statements.iter().map(|s| s.target()).collect();
        assert!(targets.contains(&Target::Subscription {
            database: "telegraf".into(),
            retention_policy: "autogen".into(),
            subscription: "kapacitor".into(),
        }));
        assert!(targets.contains(&Target::Privilege {
            user: "alice".into(),
            database: "telegraf".into(),
        }));
    }

    /// Position of the first statement matching `pred`.
    fn position(statements: &[Statement], pred: impl Fn(&Change) -> bool) -> Option<usize> {
        statements.iter().position(|s| pred(&s.change))
    }

    #[test]
    fn random_catalogs_converge_in_dependency_order() {
        let mut rng = StdRng::seed_from_u64(0xC1F1);
        let mut seen = BTreeMap::<&str, usize>::new();
        for _ in 0..400 {
            let from = testgen::catalog(&mut rng, false);
            let to = testgen::catalog(&mut rng, false);
            assert_converges(&from, &to);
            let statements = diff(&from, &to);
            for s in &statements {
                let kind = s.redacted().map_or("note", |q| {
                    let words: Vec<&str> = q.split(' ').take(2).collect();
                    if words[0] == "CREATE" || words[0] == "DROP" || words[0] == "ALTER" {
                        [
                            "CREATE DATABASE",
                            "CREATE RETENTION",
                            "CREATE SUBSCRIPTION",
                            "CREATE CONTINUOUS",
                            "CREATE USER",
                            "DROP DATABASE",
                            "DROP RETENTION",
                            "DROP SUBSCRIPTION",
                            "DROP CONTINUOUS",
                            "DROP USER",
                            "ALTER RETENTION",
                        ]
                        .into_iter()
                        .find(|k| q.starts_with(k))
                        .unwrap_or("other")
                    } else {
                        [
                            "GRANT ALL PRIVILEGES",
                            "REVOKE ALL PRIVILEGES",
                            "GRANT",
                            "REVOKE",
                        ]
                        .into_iter()
                        .find(|k| q.starts_with(k))
                        .unwrap_or("other")
                    }
                });
                *seen.entry(kind).or_default() += 1;
            }
            // Every drop of a query or subscription precedes every drop of a
            // policy or database; creates of parents precede children.
            let last_child_drop = statements.iter().rposition(|s| {
                matches!(
                    s.change,
                    Change::DropContinuousQuery { .. } | Change::DropSubscription { .. }
                )
            });
            let first_parent_drop = position(&statements, |c| {
                matches!(
                    c,
                    Change::DropRetentionPolicy { .. } | Change::DropDatabase { .. }
                )
            });
            if let (Some(a), Some(b)) = (last_child_drop, first_parent_drop) {
                assert!(a < b);
            }
            for (i, s) in statements.iter().enumerate() {
                match &s.change {
                    Change::CreateRetentionPolicy { database, .. }
                    | Change::CreateContinuousQuery { database, .. }
                    | Change::CreateSubscription { database, .. } => {
                        if let Some(j) = position(
                            &statements,
                            |c| matches!(c, Change::CreateDatabase { name, .. } if name == database),
                        ) {
                            assert!(j < i);
                        }
                    }
                    Change::SetPrivilege { user, .. } => {
                        if let Some(j) = position(
                            &statements,
                            |c| matches!(c, Change::CreateUser { name, .. } if name == user),
                        ) {
                            assert!(j < i);
                        }
                    }
                    _ => {}
                }
            }
        }
        // The generator reaches every kind of statement.
        assert_eq!(seen.len(), 16, "{seen:?}");
    }
}
