//! The one-line summary of a catalog change kept in the history, e.g.
//! `databases +db2 ~db1; users -bob`: per kind of entity, what was added
//! (`+`), changed (`~`) and removed (`-`). Names are capped in length and
//! number, so a summary stays short whatever was pushed.

use std::collections::BTreeMap;

use crate::influx::catalog::Catalog;

/// Longest name shown, in characters.
const NAME_CHARS: usize = 40;
/// Most names shown per kind; the rest are counted.
const NAMES_PER_KIND: usize = 8;

/// What changed from `from` to `to`; "no change" when nothing did.
pub fn summarize(from: &Catalog, to: &Catalog) -> String {
    let mut kinds = Vec::new();
    let (old, new) = (entities(from), entities(to));
    // Both sides list the same kinds in the same order.
    for ((kind, new_entities), (_, old_entities)) in new.iter().zip(&old) {
        let mut marks = Vec::new();
        for (name, value) in new_entities {
            match old_entities.get(name) {
                None => marks.push(format!("+{}", cap(name))),
                Some(before) if before != value => marks.push(format!("~{}", cap(name))),
                Some(_) => {}
            }
        }
        for name in old_entities.keys() {
            if !new_entities.contains_key(name) {
                marks.push(format!("-{}", cap(name)));
            }
        }
        if !marks.is_empty() {
            let more = marks.len().saturating_sub(NAMES_PER_KIND);
            marks.truncate(NAMES_PER_KIND);
            if more > 0 {
                marks.push(format!("and {more} more"));
            }
            kinds.push(format!("{kind} {}", marks.join(" ")));
        }
    }
    if kinds.is_empty() {
        "no change".to_owned()
    } else {
        kinds.join("; ")
    }
}

/// Kind → name → the entity's own definition (children excluded), in the
/// order summaries list them.
type Entities = BTreeMap<&'static str, BTreeMap<String, String>>;

fn entities(c: &Catalog) -> Vec<(&'static str, BTreeMap<String, String>)> {
    let mut map: Entities = BTreeMap::new();
    let mut put = |kind: &'static str, name: String, definition: String| {
        map.entry(kind).or_default().insert(name, definition);
    };
    for (db_name, db) in &c.databases {
        put(
            "databases",
            db_name.clone(),
            db.default_retention_policy.clone(),
        );
        for (rp_name, rp) in &db.retention_policies {
            let policy = format!("{db_name}.{rp_name}");
            put(
                "policies",
                policy.clone(),
                format!(
                    "{} {} {} {} {}",
                    rp.duration_ns,
                    rp.shard_group_duration_ns,
                    rp.replica_n,
                    rp.future_write_limit,
                    rp.past_write_limit
                ),
            );
            for (sub_name, sub) in &rp.subscriptions {
                put(
                    "subscriptions",
                    format!("{policy}.{sub_name}"),
                    format!("{} {:?}", sub.mode, sub.destinations),
                );
            }
        }
        for (cq_name, cq) in &db.continuous_queries {
            put("queries", format!("{db_name}.{cq_name}"), cq.query.clone());
        }
    }
    for (name, user) in &c.users {
        put(
            "users",
            name.clone(),
            format!("{} {} {:?}", user.hash, user.admin, user.privileges),
        );
    }
    // Every kind present on either side: a fixed order of kinds.
    ["databases", "policies", "queries", "subscriptions", "users"]
        .into_iter()
        .map(|kind| (kind, map.remove(kind).unwrap_or_default()))
        .collect()
}

fn cap(name: &str) -> String {
    if name.chars().count() <= NAME_CHARS {
        name.to_owned()
    } else {
        let mut short: String = name.chars().take(NAME_CHARS).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::{Database, RetentionPolicy, User};

    fn catalog(dbs: &[&str], users: &[(&str, bool)]) -> Catalog {
        let mut c = Catalog::default();
        for db in dbs {
            let mut d = Database::new(*db, "autogen");
            d.retention_policies
                .insert("autogen".into(), RetentionPolicy::new("autogen", 0, 0, 1));
            c.databases.insert((*db).into(), d);
        }
        for (user, admin) in users {
            c.users
                .insert((*user).into(), User::new(*user, "$2a$10$h", *admin));
        }
        c
    }

    #[test]
    fn adds_changes_and_removals_per_kind() {
        let from = catalog(&["db1", "old"], &[("bob", false), ("amy", false)]);
        let mut to = catalog(&["db1", "db2"], &[("amy", true)]);
        to.databases
            .get_mut("db1")
            .unwrap()
            .default_retention_policy = "week".into();
        assert_eq!(
            summarize(&from, &to),
            "databases ~db1 +db2 -old; policies +db2.autogen -old.autogen; users ~amy -bob"
        );
        assert_eq!(summarize(&to, &to), "no change");
        assert_eq!(
            summarize(&Catalog::default(), &catalog(&[], &[("u", false)])),
            "users +u"
        );
    }

    #[test]
    fn long_names_and_many_names_are_capped() {
        let long = "x".repeat(10_000);
        let s = summarize(
            &Catalog::default(),
            &catalog(&[], &[(long.as_str(), false)]),
        );
        assert!(s.len() < 100, "{s}");
        let many: Vec<String> = (0..50).map(|i| format!("u{i:02}")).collect();
        let users: Vec<(&str, bool)> = many.iter().map(|u| (u.as_str(), false)).collect();
        let s = summarize(&Catalog::default(), &catalog(&[], &users));
        assert!(s.ends_with("and 42 more"), "{s}");
    }
}
