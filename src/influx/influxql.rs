//! InfluxQL text: quoting of identifiers and strings, duration literals, and
//! the statement each [`Change`] renders to. Shared by the diff, the agent
//! (which runs the statements) and `cfluxctl` (which prints durations).

use super::catalog::{ContinuousQuery, Privilege};
use super::change::Change;

pub(crate) const NS_PER_MICRO: i64 = 1_000;
pub(crate) const NS_PER_MILLI: i64 = 1_000_000;
pub(crate) const NS_PER_SECOND: i64 = 1_000_000_000;
pub(crate) const NS_PER_MINUTE: i64 = 60 * NS_PER_SECOND;
pub(crate) const NS_PER_HOUR: i64 = 60 * NS_PER_MINUTE;
pub(crate) const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;
pub(crate) const NS_PER_WEEK: i64 = 7 * NS_PER_DAY;

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
pub(crate) fn retention(ns: i64) -> String {
    if ns <= 0 {
        "INF".to_owned()
    } else {
        format_duration(ns)
    }
}

/// The InfluxQL for `change` (`None` for a note), passwords as `***` when
/// `redact`.
pub(crate) fn render(change: &Change, redact: bool) -> Option<String> {
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
pub(crate) fn create_continuous_query(database: &str, query: &ContinuousQuery) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn durations() {
        const HOUR: i64 = NS_PER_HOUR;
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(2 * NS_PER_WEEK), "2w");
        assert_eq!(format_duration(NS_PER_WEEK + NS_PER_DAY), "8d");
        assert_eq!(format_duration(36 * HOUR), "36h");
        assert_eq!(format_duration(90 * NS_PER_MINUTE), "90m");
        assert_eq!(format_duration(1500 * NS_PER_MILLI), "1500ms");
        assert_eq!(format_duration(10 * NS_PER_MICRO), "10u");
        assert_eq!(format_duration(1_000_000_007), "1000000007ns");
        assert_eq!(retention(0), "INF");
    }
}
