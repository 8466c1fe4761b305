//! Random, consistent catalogs for property tests, drawn from small pools of
//! names (some needing quoting) so that catalogs overlap a lot.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::catalog::{
    Catalog, ContinuousQuery, Database, Privilege, RetentionPolicy, Subscription, User,
};
use super::merge::{entities, rebuild};

const HOUR: i64 = 3_600_000_000_000;
const DAY: i64 = 24 * HOUR;

const DATABASES: [&str; 3] = ["telegraf", "we\"ird db", "日本"];
const POLICIES: [&str; 4] = ["autogen", "r1", "r \"2\"", "gone"];
const DURATIONS: [i64; 5] = [0, HOUR, 2 * DAY, 30 * DAY, 200 * DAY];
const SHARD_DURATIONS: [i64; 4] = [0, HOUR, DAY, 7 * DAY];
const SUBSCRIPTIONS: [&str; 2] = ["s1", "s 2"];
const DESTINATIONS: [&str; 3] = ["udp://a:1", "http://b:2", "udp://c'3:4"];
const QUERIES: [&str; 2] = ["cq1", "cq 2"];
const USERS: [&str; 3] = ["alice", "bob", "o'hara"];
const HASHES: [&str; 2] = ["$2a$10$one", "$2a$10$two"];
const PRIVILEGES: [Privilege; 4] = [
    Privilege::None,
    Privilege::Read,
    Privilege::Write,
    Privilege::All,
];

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    // The pools are never empty.
    *items.choose(rng).unwrap_or(&items[0])
}

/// A random catalog in which every child has its parent and every policy is
/// one influxd accepts. Defaults may name a missing policy ("gone" is never
/// created); `empty_defaults` also allows an empty default.
pub(crate) fn catalog(rng: &mut StdRng, empty_defaults: bool) -> Catalog {
    let mut c = Catalog::default();
    for db_name in DATABASES {
        if !rng.random_bool(0.7) {
            continue;
        }
        let mut default = pick(rng, &POLICIES).to_owned();
        if empty_defaults && rng.random_bool(0.1) {
            default.clear();
        }
        let mut db = Database::new(db_name, default);
        for rp_name in &POLICIES[..3] {
            if !rng.random_bool(0.6) {
                continue;
            }
            let duration = pick(rng, &DURATIONS);
            let mut shard = pick(rng, &SHARD_DURATIONS);
            if duration != 0 && shard > duration {
                shard = 0;
            }
            let mut rp = RetentionPolicy::new(*rp_name, duration, shard, rng.random_range(1..=2));
            if rng.random_bool(0.2) {
                rp.future_write_limit = HOUR;
            }
            for sub_name in SUBSCRIPTIONS {
                if rng.random_bool(0.3) {
                    let n = rng.random_range(1..=2);
                    rp.subscriptions.insert(
                        sub_name.to_owned(),
                        Subscription {
                            name: sub_name.to_owned(),
                            mode: pick(rng, &["ANY", "ALL"]).to_owned(),
                            destinations: DESTINATIONS[..n].iter().map(|d| d.to_string()).collect(),
                        },
                    );
                }
            }
            db.retention_policies.insert(rp_name.to_string(), rp);
        }
        for cq_name in QUERIES {
            if rng.random_bool(0.3) {
                let every = pick(rng, &["1h", "2h"]);
                db.continuous_queries.insert(
                    cq_name.to_owned(),
                    ContinuousQuery {
                        name: cq_name.to_owned(),
                        query: format!(
                            "CREATE CONTINUOUS QUERY \"{cq_name}\" ON db BEGIN SELECT mean(v) INTO m2 FROM m GROUP BY time({every}) END"
                        ),
                    },
                );
            }
        }
        c.databases.insert(db_name.to_owned(), db);
    }
    for user_name in USERS {
        if !rng.random_bool(0.7) {
            continue;
        }
        let mut user = User::new(user_name, pick(rng, &HASHES), rng.random_bool(0.3));
        let dbs: Vec<String> = c.databases.keys().cloned().collect();
        for db in dbs {
            if rng.random_bool(0.5) {
                user.privileges.insert(db, pick(rng, &PRIVILEGES));
            }
        }
        c.users.insert(user_name.to_owned(), user);
    }
    c
}

/// `base` with random entities kept, replaced by another random catalog's,
/// or dropped; orphans removed so the result is consistent.
pub(crate) fn variant(rng: &mut StdRng, base: &Catalog) -> Catalog {
    let other = entities(&catalog(rng, true));
    let mut mixed = entities(base);
    mixed.retain(|_, _| rng.random_bool(0.85));
    for (key, entity) in other {
        if rng.random_bool(0.25) {
            mixed.insert(key, entity);
        }
    }
    rebuild(mixed, &mut Vec::new())
}
