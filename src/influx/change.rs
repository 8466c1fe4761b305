//! The vocabulary of a diff: a [`Statement`] is one [`Change`] to a catalog
//! and the InfluxQL that carries it out ([`crate::influx::influxql`] renders
//! it); [`Target`] names the entity a change touches.

use std::fmt;

use rand::Rng;

use super::catalog::{ContinuousQuery, Privilege, RetentionPolicy, Subscription};
use super::influxql::render;

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
    pub(crate) fn is_empty(&self) -> bool {
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

impl Target {
    /// Whether this entity needs `other` to exist: it is `other`, or lives
    /// inside it (a privilege needs its user and its database).
    pub fn depends_on(&self, other: &Target) -> bool {
        if self == other {
            return true;
        }
        match other {
            Target::Database { database } => self.database() == Some(database.as_str()),
            Target::RetentionPolicy {
                database,
                retention_policy,
            } => matches!(self, Target::Subscription { database: d, retention_policy: p, .. }
                if d == database && p == retention_policy),
            Target::User { user } => matches!(self, Target::Privilege { user: u, .. } if u == user),
            _ => false,
        }
    }

    /// The database the entity lives in (a user lives in none).
    fn database(&self) -> Option<&str> {
        match self {
            Target::Database { database }
            | Target::RetentionPolicy { database, .. }
            | Target::Subscription { database, .. }
            | Target::ContinuousQuery { database, .. }
            | Target::Privilege { database, .. } => Some(database),
            Target::User { .. } => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_follow_the_catalog_tree() {
        let db = Target::Database {
            database: "db".into(),
        };
        let rp = Target::RetentionPolicy {
            database: "db".into(),
            retention_policy: "rp".into(),
        };
        let sub = Target::Subscription {
            database: "db".into(),
            retention_policy: "rp".into(),
            subscription: "s".into(),
        };
        let cq = Target::ContinuousQuery {
            database: "db".into(),
            continuous_query: "cq".into(),
        };
        let user = Target::User { user: "u".into() };
        let grant = Target::Privilege {
            user: "u".into(),
            database: "db".into(),
        };
        for child in [&db, &rp, &sub, &cq, &grant] {
            assert!(child.depends_on(&db), "{child:?}");
        }
        assert!(sub.depends_on(&rp));
        assert!(grant.depends_on(&user));
        assert!(!user.depends_on(&db));
        assert!(!cq.depends_on(&rp));
        assert!(!db.depends_on(&cq));
        let other = Target::Database {
            database: "other".into(),
        };
        assert!(!cq.depends_on(&other));
    }
}
