//! From one catalog to another in InfluxQL, the only way to change a running
//! influxd's metadata.
//!
//! [`diff`] lists the statements in an order influxd accepts:
//!
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
use std::fmt;

use rand::Rng;

use super::catalog::{
    Catalog, ContinuousQuery, Database, Privilege, RetentionPolicy, Subscription, User,
};

const NS_PER_MICRO: i64 = 1_000;
const NS_PER_MILLI: i64 = 1_000_000;
const NS_PER_SECOND: i64 = 1_000_000_000;
const NS_PER_MINUTE: i64 = 60 * NS_PER_SECOND;
const NS_PER_HOUR: i64 = 60 * NS_PER_MINUTE;
const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;
const NS_PER_WEEK: i64 = 7 * NS_PER_DAY;

/// The policy influxd creates with a plain `CREATE DATABASE` (default config).
pub const AUTOGEN: &str = "autogen";

/// One step from a catalog towards another: what changes, and the InfluxQL
/// that does it.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    /// The change, in the catalog's terms.
    pub change: Change,
    /// The InfluxQL to run; `None` for a note InfluxQL cannot carry out.
    /// It may hold a password: log [`Statement::redacted`] instead.
    pub influxql: Option<String>,
}

/// What a [`Statement`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `DROP CONTINUOUS QUERY "name" ON "database"`.
    DropContinuousQuery {
        /// The database.
        database: String,
        /// The query's name.
        name: String,
    },
    /// `DROP SUBSCRIPTION "name" ON "database"."retention_policy"`.
    DropSubscription {
        /// The database.
        database: String,
        /// The policy.
        retention_policy: String,
        /// The subscription's name.
        name: String,
    },
    /// `CREATE DATABASE "name"`, with `WITH … NAME` when `policy` is set: the
    /// policy is created as the default instead of `autogen`.
    CreateDatabase {
        /// The database's name.
        name: String,
        /// The default policy to create with it (no subscriptions, no limits).
        policy: Option<RetentionPolicy>,
    },
    /// `CREATE RETENTION POLICY … [DEFAULT]`.
    CreateRetentionPolicy {
        /// The database.
        database: String,
        /// The policy (its subscriptions are separate statements).
        policy: RetentionPolicy,
        /// Whether it becomes the database's default.
        default: bool,
    },
    /// `ALTER RETENTION POLICY … [DEFAULT]`.
    AlterRetentionPolicy {
        /// The database.
        database: String,
        /// The policy's name.
        name: String,
        /// The settings that change.
        update: PolicyUpdate,
        /// Whether it becomes the database's default.
        default: bool,
    },
    /// `DROP RETENTION POLICY "name" ON "database"` (deletes its data).
    DropRetentionPolicy {
        /// The database.
        database: String,
        /// The policy's name.
        name: String,
    },
    /// `DROP DATABASE "name"` (deletes its data).
    DropDatabase {
        /// The database's name.
        name: String,
    },
    /// `CREATE SUBSCRIPTION … DESTINATIONS ALL|ANY '…'`.
    CreateSubscription {
        /// The database.
        database: String,
        /// The policy.
        retention_policy: String,
        /// The subscription.
        subscription: Subscription,
    },
    /// The query's own `CREATE CONTINUOUS QUERY` statement.
    CreateContinuousQuery {
        /// The database.
        database: String,
        /// The query.
        query: ContinuousQuery,
    },
    /// `DROP USER "name"`.
    DropUser {
        /// The user's name.
        name: String,
    },
    /// `CREATE USER "name" WITH PASSWORD '…' [WITH ALL PRIVILEGES]`. The
    /// catalog's hash cannot be set through InfluxQL: the user gets a random
    /// password instead.
    CreateUser {
        /// The user's name.
        name: String,
        /// The random password.
        password: Password,
        /// Whether the user is an admin.
        admin: bool,
    },
    /// `GRANT ALL PRIVILEGES TO "user"` or `REVOKE ALL PRIVILEGES FROM "user"`.
    SetAdmin {
        /// The user.
        user: String,
        /// The new admin flag.
        admin: bool,
    },
    /// `GRANT READ|WRITE|ALL ON "database" TO "user"`, or for
    /// [`Privilege::None`] `REVOKE ALL ON "database" FROM "user"`.
    SetPrivilege {
        /// The user.
        user: String,
        /// The database.
        database: String,
        /// The privilege the user ends up with.
        privilege: Privilege,
    },
    /// A note, no InfluxQL: the user's password hash differs and InfluxQL
    /// cannot set a hash.
    PasswordHashChanged {
        /// The user.
        user: String,
    },
}

/// The settings an `ALTER RETENTION POLICY` changes; `None` leaves one alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    /// New duration (ns, 0 = `INF`).
    pub duration_ns: Option<i64>,
    /// New shard group duration (ns).
    pub shard_group_duration_ns: Option<i64>,
    /// New replication factor.
    pub replica_n: Option<u32>,
    /// New future write limit (ns, 0 = none; InfluxDB 1.11+).
    pub future_write_limit: Option<i64>,
    /// New past write limit (ns, 0 = none; InfluxDB 1.11+).
    pub past_write_limit: Option<i64>,
}

impl PolicyUpdate {
    fn is_empty(&self) -> bool {
        *self == PolicyUpdate::default()
    }
}

/// The entity a statement touches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A database.
    Database {
        /// Its name.
        database: String,
    },
    /// A retention policy.
    RetentionPolicy {
        /// Its database.
        database: String,
        /// Its name.
        retention_policy: String,
    },
    /// A subscription.
    Subscription {
        /// Its database.
        database: String,
        /// Its policy.
        retention_policy: String,
        /// Its name.
        subscription: String,
    },
    /// A continuous query.
    ContinuousQuery {
        /// Its database.
        database: String,
        /// Its name.
        continuous_query: String,
    },
    /// A user.
    User {
        /// The user's name.
        user: String,
    },
    /// A user's privilege on a database.
    Privilege {
        /// The user's name.
        user: String,
        /// The database.
        database: String,
    },
}

/// A random password, printed as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// 32 random alphanumerics from the thread's CSPRNG.
    pub fn random() -> Password {
        let password = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Password(password)
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Statement {
    /// A statement for `change`, with its InfluxQL.
    pub fn new(change: Change) -> Statement {
        let influxql = render(&change, false);
        Statement { change, influxql }
    }

    /// Whether there is InfluxQL to run (notes have none).
    pub fn is_executable(&self) -> bool {
        self.influxql.is_some()
    }

    /// The InfluxQL with any password replaced by `***`, for logs.
    pub fn redacted(&self) -> Option<String> {
        render(&self.change, true)
    }

    /// The user whose password hash this statement leaves different from the
    /// catalog's: a created user (random password) or a changed hash.
    pub fn unapplied_hash(&self) -> Option<&str> {
        match &self.change {
            Change::CreateUser { name, .. } => Some(name),
            Change::PasswordHashChanged { user } => Some(user),
            _ => None,
        }
    }

    /// The entity the statement touches.
    pub fn target(&self) -> Target {
        self.change.target()
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Statement")
            .field("change", &self.change)
            .field("influxql", &self.redacted())
            .finish()
    }
}

impl Change {
    /// The entity the change touches.
    pub fn target(&self) -> Target {
        let database = |d: &String| Target::Database {
            database: d.clone(),
        };
        let policy = |d: &String, p: &String| Target::RetentionPolicy {
            database: d.clone(),
            retention_policy: p.clone(),
        };
        let subscription = |d: &String, p: &String, s: &String| Target::Subscription {
            database: d.clone(),
            retention_policy: p.clone(),
            subscription: s.clone(),
        };
        let query = |d: &String, q: &String| Target::ContinuousQuery {
            database: d.clone(),
            continuous_query: q.clone(),
        };
        let user = |u: &String| Target::User { user: u.clone() };
        match self {
            Change::DropContinuousQuery { database: d, name } => query(d, name),
            Change::CreateContinuousQuery {
                database: d,
                query: q,
            } => query(d, &q.name),
            Change::DropSubscription {
                database: d,
                retention_policy: p,
                name,
            } => subscription(d, p, name),
            Change::CreateSubscription {
                database: d,
                retention_policy: p,
                subscription: s,
            } => subscription(d, p, &s.name),
            Change::CreateDatabase { name, .. } | Change::DropDatabase { name } => database(name),
            Change::CreateRetentionPolicy {
                database: d,
                policy: p,
                ..
            } => policy(d, &p.name),
            Change::AlterRetentionPolicy {
                database: d, name, ..
            }
            | Change::DropRetentionPolicy { database: d, name } => policy(d, name),
            Change::DropUser { name } | Change::CreateUser { name, .. } => user(name),
            Change::SetAdmin { user: u, .. } | Change::PasswordHashChanged { user: u } => user(u),
            Change::SetPrivilege {
                user, database: d, ..
            } => Target::Privilege {
                user: user.clone(),
                database: d.clone(),
            },
        }
    }
}

/// The statements that turn `from` into `to`, in an order influxd accepts
/// (see the module documentation).
pub fn diff(from: &Catalog, to: &Catalog) -> Vec<Statement> {
    let mut plan = Plan::default();
    for name in from.databases.keys() {
        if !to.databases.contains_key(name) {
            plan.drop_databases
                .push(Change::DropDatabase { name: name.clone() });
        }
    }
    for (name, target) in &to.databases {
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
                self.create_users.push(Change::CreateUser {
                    name: name.to_owned(),
                    password: Password::random(),
                    admin: target.admin,
                });
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
        .filter(|(db, p)| **p != Privilege::None && catalog.databases.contains_key(*db))
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
fn normalized(name: &str, rp: &RetentionPolicy, with_limits: bool) -> RetentionPolicy {
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

/// An InfluxQL identifier: double-quoted, with `\`, `"` and newlines escaped.
pub fn quote_ident(name: &str) -> String {
    quote(name, '"')
}

/// An InfluxQL string literal: single-quoted, with `\`, `'` and newlines escaped.
pub fn quote_string(value: &str) -> String {
    quote(value, '\'')
}

fn quote(s: &str, mark: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(mark);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == mark => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(mark);
    out
}

/// An InfluxQL duration literal in the largest unit that divides it exactly
/// (`2w`, `36h`, `1500ms`, `7ns`); 0 and below are `0s`.
pub fn format_duration(ns: i64) -> String {
    if ns <= 0 {
        return "0s".to_owned();
    }
    const UNITS: [(i64, &str); 8] = [
        (NS_PER_WEEK, "w"),
        (NS_PER_DAY, "d"),
        (NS_PER_HOUR, "h"),
        (NS_PER_MINUTE, "m"),
        (NS_PER_SECOND, "s"),
        (NS_PER_MILLI, "ms"),
        (NS_PER_MICRO, "u"),
        (1, "ns"),
    ];
    let (size, unit) = UNITS
        .iter()
        .copied()
        .find(|(size, _)| ns % size == 0)
        .unwrap_or((1, "ns"));
    format!("{}{unit}", ns / size)
}

/// A retention duration: `INF` for 0.
fn retention(ns: i64) -> String {
    if ns <= 0 {
        "INF".to_owned()
    } else {
        format_duration(ns)
    }
}

fn render(change: &Change, redact: bool) -> Option<String> {
    let q = quote_ident;
    let sql = match change {
        Change::DropContinuousQuery { database, name } => {
            format!("DROP CONTINUOUS QUERY {} ON {}", q(name), q(database))
        }
        Change::DropSubscription {
            database,
            retention_policy,
            name,
        } => format!(
            "DROP SUBSCRIPTION {} ON {}.{}",
            q(name),
            q(database),
            q(retention_policy)
        ),
        Change::CreateDatabase { name, policy: None } => format!("CREATE DATABASE {}", q(name)),
        Change::CreateDatabase {
            name,
            policy: Some(rp),
        } => format!(
            "CREATE DATABASE {} WITH DURATION {} REPLICATION {} SHARD DURATION {} NAME {}",
            q(name),
            retention(rp.duration_ns),
            rp.replica_n,
            format_duration(rp.shard_group_duration_ns),
            q(&rp.name)
        ),
        Change::CreateRetentionPolicy {
            database,
            policy: rp,
            default,
        } => {
            let mut sql = format!(
                "CREATE RETENTION POLICY {} ON {} DURATION {} REPLICATION {} SHARD DURATION {}",
                q(&rp.name),
                q(database),
                retention(rp.duration_ns),
                rp.replica_n,
                format_duration(rp.shard_group_duration_ns)
            );
            if *default {
                sql.push_str(" DEFAULT");
            }
            // 1.11+ syntax, after DEFAULT; only when set, so 1.6 parses the rest.
            if rp.future_write_limit > 0 {
                sql.push_str(&format!(
                    " FUTURE LIMIT {}",
                    format_duration(rp.future_write_limit)
                ));
            }
            if rp.past_write_limit > 0 {
                sql.push_str(&format!(
                    " PAST LIMIT {}",
                    format_duration(rp.past_write_limit)
                ));
            }
            sql
        }
        Change::AlterRetentionPolicy {
            database,
            name,
            update,
            default,
        } => {
            let mut sql = format!("ALTER RETENTION POLICY {} ON {}", q(name), q(database));
            if let Some(d) = update.duration_ns {
                sql.push_str(&format!(" DURATION {}", retention(d)));
            }
            if let Some(n) = update.replica_n {
                sql.push_str(&format!(" REPLICATION {n}"));
            }
            if let Some(d) = update.shard_group_duration_ns {
                sql.push_str(&format!(" SHARD DURATION {}", format_duration(d)));
            }
            if let Some(d) = update.future_write_limit {
                sql.push_str(&format!(" FUTURE LIMIT {}", format_duration(d)));
            }
            if let Some(d) = update.past_write_limit {
                sql.push_str(&format!(" PAST LIMIT {}", format_duration(d)));
            }
            if *default {
                sql.push_str(" DEFAULT");
            }
            sql
        }
        Change::DropRetentionPolicy { database, name } => {
            format!("DROP RETENTION POLICY {} ON {}", q(name), q(database))
        }
        Change::DropDatabase { name } => format!("DROP DATABASE {}", q(name)),
        Change::CreateSubscription {
            database,
            retention_policy,
            subscription,
        } => {
            let destinations: Vec<String> = subscription
                .destinations
                .iter()
                .map(|d| quote_string(d))
                .collect();
            format!(
                "CREATE SUBSCRIPTION {} ON {}.{} DESTINATIONS {} {}",
                q(&subscription.name),
                q(database),
                q(retention_policy),
                subscription.mode.to_ascii_uppercase(),
                destinations.join(", ")
            )
        }
        Change::CreateContinuousQuery { database, query } => {
            create_continuous_query(database, query)
        }
        Change::DropUser { name } => format!("DROP USER {}", q(name)),
        Change::CreateUser {
            name,
            password,
            admin,
        } => {
            let password = if redact {
                "'***'".to_owned()
            } else {
                quote_string(password.expose())
            };
            let mut sql = format!("CREATE USER {} WITH PASSWORD {password}", q(name));
            if *admin {
                sql.push_str(" WITH ALL PRIVILEGES");
            }
            sql
        }
        Change::SetAdmin { user, admin: true } => format!("GRANT ALL PRIVILEGES TO {}", q(user)),
        Change::SetAdmin { user, admin: false } => {
            format!("REVOKE ALL PRIVILEGES FROM {}", q(user))
        }
        Change::SetPrivilege {
            user,
            database,
            privilege,
        } => match privilege {
            Privilege::None => format!("REVOKE ALL ON {} FROM {}", q(database), q(user)),
            Privilege::Read => format!("GRANT READ ON {} TO {}", q(database), q(user)),
            Privilege::Write => format!("GRANT WRITE ON {} TO {}", q(database), q(user)),
            Privilege::All => format!("GRANT ALL ON {} TO {}", q(database), q(user)),
        },
        Change::PasswordHashChanged { .. } => return None,
    };
    Some(sql)
}

/// influxd stores a continuous query as its whole `CREATE CONTINUOUS QUERY`
/// statement, which is sent back as is; a bare `SELECT` is wrapped (influxd
/// then stores its own formatting of the wrapped statement).
fn create_continuous_query(database: &str, query: &ContinuousQuery) -> String {
    const PREFIX: &str = "CREATE CONTINUOUS QUERY";
    let text = query.query.trim();
    let starts_with_create = text
        .get(..PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX));
    if starts_with_create {
        text.to_owned()
    } else {
        format!(
            "{PREFIX} {} ON {} BEGIN {text} END",
            quote_ident(&query.name),
            quote_ident(database)
        )
    }
}

/// influxd refusing a statement, in [`simulate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Applies a statement's effect to `catalog` the way influxd 1.x with its
/// default configuration would (`retention-autocreate = true`): `autogen`
/// with a plain `CREATE DATABASE`, shard durations normalised, a dropped
/// default policy's name kept, privileges dropped with their database, a
/// created user's hash unknown. For tests and fakes of the node side.
///
/// It is stricter than influxd where influxd forgives (dropping what does not
/// exist, or touching a child of a missing parent, is [`Rejected`]), so an
/// ordering mistake in a statement list shows up.
pub fn simulate(catalog: &mut Catalog, statement: &Statement) -> Result<(), Rejected> {
    let reject = |msg: String| Err(Rejected(msg));
    match &statement.change {
        Change::DropContinuousQuery { database, name } => {
            let db = database_mut(catalog, database)?;
            if db.continuous_queries.remove(name).is_none() {
                return reject(format!("continuous query not found: {name}"));
            }
        }
        Change::DropSubscription {
            database,
            retention_policy,
            name,
        } => {
            let rp = policy_mut(catalog, database, retention_policy)?;
            if rp.subscriptions.remove(name).is_none() {
                return reject("subscription not found".to_owned());
            }
        }
        Change::CreateDatabase { name, policy } => {
            if catalog.databases.contains_key(name) {
                return Ok(());
            }
            let rp = match policy {
                Some(rp) => rp.clone(),
                None => RetentionPolicy::new(AUTOGEN, 0, NS_PER_WEEK, 1),
            };
            let rp = validated(&rp)?;
            let mut db = Database::new(name.clone(), rp.name.clone());
            db.retention_policies.insert(rp.name.clone(), rp);
            catalog.databases.insert(name.clone(), db);
        }
        Change::CreateRetentionPolicy {
            database,
            policy,
            default,
        } => {
            let rp = validated(policy)?;
            let db = database_mut(catalog, database)?;
            if let Some(existing) = db.retention_policies.get(&rp.name) {
                let same = existing.duration_ns == rp.duration_ns
                    && existing.shard_group_duration_ns == rp.shard_group_duration_ns
                    && existing.replica_n == rp.replica_n;
                if !same || (*default && db.default_retention_policy != rp.name) {
                    return reject("retention policy conflicts with an existing policy".into());
                }
                return Ok(());
            }
            if *default {
                db.default_retention_policy = rp.name.clone();
            }
            db.retention_policies.insert(rp.name.clone(), rp);
        }
        Change::AlterRetentionPolicy {
            database,
            name,
            update,
            default,
        } => {
            let db = database_mut(catalog, database)?;
            let Some(rp) = db.retention_policies.get_mut(name) else {
                return reject(format!("retention policy not found: {name}"));
            };
            if let Some(d) = update.duration_ns {
                if d != 0 && d < NS_PER_HOUR {
                    return reject("retention policy duration must be at least 1h0m0s".into());
                }
            }
            let duration = update.duration_ns.unwrap_or(rp.duration_ns);
            let shard = update
                .shard_group_duration_ns
                .unwrap_or(rp.shard_group_duration_ns);
            if duration != 0 && duration < shard {
                return reject(
                    "retention policy duration must be greater than the shard duration".into(),
                );
            }
            rp.duration_ns = duration;
            if let Some(s) = update.shard_group_duration_ns {
                rp.shard_group_duration_ns = effective_shard_group_duration(duration, s);
            }
            if let Some(n) = update.replica_n {
                rp.replica_n = n;
            }
            if let Some(v) = update.future_write_limit {
                rp.future_write_limit = v;
            }
            if let Some(v) = update.past_write_limit {
                rp.past_write_limit = v;
            }
            if *default {
                db.default_retention_policy = name.clone();
            }
        }
        Change::DropRetentionPolicy { database, name } => {
            let db = database_mut(catalog, database)?;
            if db.retention_policies.remove(name).is_none() {
                return reject(format!("retention policy not found: {name}"));
            }
        }
        Change::DropDatabase { name } => {
            if catalog.databases.remove(name).is_none() {
                return reject(format!("database not found: {name}"));
            }
            for user in catalog.users.values_mut() {
                user.privileges.remove(name);
            }
        }
        Change::CreateSubscription {
            database,
            retention_policy,
            subscription,
        } => {
            let rp = policy_mut(catalog, database, retention_policy)?;
            if rp.subscriptions.contains_key(&subscription.name) {
                return reject("subscription already exists".into());
            }
            let stored = Subscription {
                mode: subscription.mode.to_ascii_uppercase(),
                ..subscription.clone()
            };
            rp.subscriptions.insert(subscription.name.clone(), stored);
        }
        Change::CreateContinuousQuery { database, query } => {
            let text = create_continuous_query(database, query);
            let db = database_mut(catalog, database)?;
            match db.continuous_queries.get(&query.name) {
                Some(existing) if existing.query != text => {
                    return reject("continuous query already exists".into());
                }
                _ => {}
            }
            db.continuous_queries.insert(
                query.name.clone(),
                ContinuousQuery {
                    name: query.name.clone(),
                    query: text,
                },
            );
        }
        Change::DropUser { name } => {
            if catalog.users.remove(name).is_none() {
                return reject("user not found".into());
            }
        }
        Change::CreateUser { name, admin, .. } => {
            if catalog.users.contains_key(name) {
                return reject("user already exists".into());
            }
            let user = User::new(name.clone(), "(random password)", *admin);
            catalog.users.insert(name.clone(), user);
        }
        Change::SetAdmin { user, admin } => user_mut(catalog, user)?.admin = *admin,
        Change::SetPrivilege {
            user,
            database,
            privilege,
        } => {
            if !catalog.databases.contains_key(database) {
                return reject(format!("database not found: {database}"));
            }
            user_mut(catalog, user)?
                .privileges
                .insert(database.clone(), *privilege);
        }
        Change::PasswordHashChanged { .. } => {}
    }
    Ok(())
}

fn validated(rp: &RetentionPolicy) -> Result<RetentionPolicy, Rejected> {
    if rp.duration_ns != 0 && rp.duration_ns < NS_PER_HOUR {
        return Err(Rejected(
            "retention policy duration must be at least 1h0m0s".into(),
        ));
    }
    let rp = normalized(&rp.name, rp, true);
    if rp.duration_ns != 0 && rp.duration_ns < rp.shard_group_duration_ns {
        return Err(Rejected(
            "retention policy duration must be greater than the shard duration".into(),
        ));
    }
    Ok(rp)
}

fn database_mut<'a>(catalog: &'a mut Catalog, name: &str) -> Result<&'a mut Database, Rejected> {
    catalog
        .databases
        .get_mut(name)
        .ok_or_else(|| Rejected(format!("database not found: {name}")))
}

fn policy_mut<'a>(
    catalog: &'a mut Catalog,
    database: &str,
    name: &str,
) -> Result<&'a mut RetentionPolicy, Rejected> {
    database_mut(catalog, database)?
        .retention_policies
        .get_mut(name)
        .ok_or_else(|| Rejected(format!("retention policy not found: {database}.{name}")))
}

fn user_mut<'a>(catalog: &'a mut Catalog, name: &str) -> Result<&'a mut User, Rejected> {
    catalog
        .users
        .get_mut(name)
        .ok_or_else(|| Rejected("user not found".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::tests::sample;
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
    fn quoting_of_weird_names() {
        assert_eq!(quote_ident("plain"), r#""plain""#);
        assert_eq!(quote_ident(r#"we"ird"#), r#""we\"ird""#);
        assert_eq!(quote_ident(r"back\slash"), r#""back\\slash""#);
        assert_eq!(quote_ident("with space"), r#""with space""#);
        assert_eq!(quote_ident("it's"), r#""it's""#);
        assert_eq!(quote_ident("日本 ü"), "\"日本 ü\"");
        assert_eq!(quote_ident("a\nb"), r#""a\nb""#);
        assert_eq!(quote_string("it's"), r"'it\'s'");
        assert_eq!(quote_string(r#"a"b\c"#), r#"'a"b\\c'"#);

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
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(2 * NS_PER_WEEK), "2w");
        assert_eq!(format_duration(NS_PER_WEEK + NS_PER_DAY), "8d");
        assert_eq!(format_duration(36 * HOUR), "36h");
        assert_eq!(format_duration(90 * NS_PER_MINUTE), "90m");
        assert_eq!(format_duration(1500 * NS_PER_MILLI), "1500ms");
        assert_eq!(format_duration(10 * NS_PER_MICRO), "10u");
        assert_eq!(format_duration(1_000_000_007), "1000000007ns");
        assert_eq!(retention(0), "INF");
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
        assert!(text
            .contains(&"CREATE USER \"root\" WITH PASSWORD '***' WITH ALL PRIVILEGES".to_owned()));
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
