//! A model of what influxd 1.x does with each statement, so the diff and the
//! node's sync loop can be tested without a server. Test-only.

use super::catalog::{Catalog, ContinuousQuery, Database, RetentionPolicy, Subscription, User};
use super::change::{Change, Statement};
use super::diff::{effective_shard_group_duration, normalized, AUTOGEN};
use super::influxql::{create_continuous_query, NS_PER_HOUR, NS_PER_WEEK};

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
