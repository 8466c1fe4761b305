//! The statements of a `/query` that change points rather than the catalog:
//! `DELETE`, `DROP SERIES`, `DROP MEASUREMENT` and `SELECT … INTO`. Metadata
//! sync never carries them (they leave `meta.db` alone), so with
//! `--replicate` the front door runs them on its influxd and queues them for
//! every peer, in order with the writes ([`super::replication`]). It also
//! tells the statements that change the catalog, whose answer waits until
//! every node has applied them (the catalog barrier).
//!
//! This module only reads the text, as InfluxQL's scanner would: it splits
//! a query into statements (a `;` inside a string, a quoted identifier, a
//! regular expression or a comment splits nothing), says which kind each
//! is, and pins `now()` to one instant, so that `DELETE … WHERE time <
//! now() - 1h` removes the same points on every node whenever each node
//! runs it.

/// What a statement does to points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Delete,
    DropSeries,
    DropMeasurement,
    /// Shard IDs are each node's own: refused through a replicating front door.
    DropShard,
    SelectInto,
    /// Catalog changes that delete points: metadata sync carries them, and
    /// the writes queued for the database or policy go with it.
    DropDatabase,
    DropRetentionPolicy,
    /// Any other catalog change (`CREATE`, `ALTER`, `GRANT`, `REVOKE`,
    /// `SET PASSWORD`, `DROP USER`, `DROP CONTINUOUS QUERY`, `DROP
    /// SUBSCRIPTION`), which metadata sync carries.
    Catalog,
    /// Reads.
    Other,
}

impl Kind {
    /// Whether every node must run it.
    pub fn is_replicated(self) -> bool {
        matches!(
            self,
            Kind::Delete | Kind::DropSeries | Kind::DropMeasurement | Kind::SelectInto
        )
    }

    /// Whether it changes the catalog (and so `meta.db`).
    pub fn changes_catalog(self) -> bool {
        matches!(
            self,
            Kind::Catalog | Kind::DropDatabase | Kind::DropRetentionPolicy
        )
    }
}

/// One statement of a query: its text (without the `;` and the blanks and
/// comments around it) and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub text: String,
    pub kind: Kind,
}

/// The statements of `query`, in order; empty ones (`;;`) are skipped, as
/// influxd's parser skips them.
pub fn split(query: &str) -> Vec<Statement> {
    let tokens = lex(query);
    tokens
        .split(|t| t.token == Token::Semicolon)
        .filter(|s| !s.is_empty())
        .map(|s| Statement {
            text: query[s[0].start..s[s.len() - 1].end].to_owned(),
            kind: kind(query, s),
        })
        .collect()
}

impl Statement {
    /// The database and (for `DROP RETENTION POLICY`) the policy a drop
    /// names; `None` for any other statement, or a drop that cannot be read.
    pub fn dropped(&self) -> Option<(String, Option<String>)> {
        let tokens = lex(&self.text);
        let name = |i: usize| {
            tokens
                .get(i)
                .and_then(|t| unquote(&self.text[t.start..t.end], t.token))
        };
        match self.kind {
            Kind::DropDatabase => Some((name(2)?, None)),
            Kind::DropRetentionPolicy => Some((name(5)?, Some(name(3)?))),
            _ => None,
        }
    }
}

/// An identifier's name: a word as it is, a double-quoted one unescaped.
fn unquote(text: &str, token: Token) -> Option<String> {
    match token {
        Token::Word => Some(text.to_owned()),
        Token::Quoted if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') => {
            let mut out = String::new();
            let mut chars = text[1..text.len() - 1].chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            Some(out)
        }
        _ => None,
    }
}

/// `statement` with every `now()` replaced by the instant `now_ns` (ns since
/// the epoch) as an RFC 3339 time literal, which InfluxQL takes wherever a
/// time is compared, with arithmetic (`'…Z' - 1h`) as with `now()`.
pub fn pin_now(statement: &str, now_ns: i64) -> String {
    let tokens = lex(statement);
    let literal = format!("'{}'", rfc3339_nanos(now_ns));
    let mut out = String::with_capacity(statement.len());
    let mut copied = 0;
    for w in tokens.windows(3) {
        let is_now = matches!(w[0].token, Token::Word)
            && statement[w[0].start..w[0].end].eq_ignore_ascii_case("now")
            && w[1].token == Token::Punct(b'(')
            && w[2].token == Token::Punct(b')');
        if is_now && w[0].start >= copied {
            out.push_str(&statement[copied..w[0].start]);
            out.push_str(&literal);
            copied = w[2].end;
        }
    }
    out.push_str(&statement[copied..]);
    out
}

fn rfc3339_nanos(ns: i64) -> String {
    let t = if ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.unsigned_abs())
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs())
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

fn kind(query: &str, tokens: &[Lexed]) -> Kind {
    let word = |i: usize| {
        tokens
            .get(i)
            .filter(|t| t.token == Token::Word)
            .map(|t| query[t.start..t.end].to_ascii_uppercase())
    };
    match word(0).as_deref() {
        Some("DELETE") => Kind::Delete,
        Some("DROP") => match word(1).as_deref() {
            Some("SERIES") => Kind::DropSeries,
            Some("MEASUREMENT") => Kind::DropMeasurement,
            Some("SHARD") => Kind::DropShard,
            Some("DATABASE") => Kind::DropDatabase,
            Some("RETENTION") if word(2).as_deref() == Some("POLICY") => Kind::DropRetentionPolicy,
            Some("USER" | "CONTINUOUS" | "SUBSCRIPTION") => Kind::Catalog,
            _ => Kind::Other,
        },
        Some("CREATE" | "ALTER" | "GRANT" | "REVOKE" | "SET") => Kind::Catalog,
        Some("SELECT") if (1..tokens.len()).any(|i| word(i).as_deref() == Some("INTO")) => {
            Kind::SelectInto
        }
        _ => Kind::Other,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// A keyword or an unquoted identifier.
    Word,
    /// A number or a duration literal.
    Number,
    /// A string, a quoted identifier or a regular expression.
    Quoted,
    /// `=~` or `!~`, after which a `/` opens a regular expression.
    RegexOperator,
    Semicolon,
    Punct(u8),
}

#[derive(Clone, Copy, Debug)]
struct Lexed {
    start: usize,
    end: usize,
    token: Token,
}

/// InfluxQL's tokens, enough to split and classify: blanks and comments
/// (`-- …`, `/* … */`) are dropped.
fn lex(q: &str) -> Vec<Lexed> {
    let b = q.as_bytes();
    let mut out: Vec<Lexed> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        let token = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if b[i..].starts_with(b"--") {
            i = find_from(b, i, b"\n").map_or(b.len(), |n| n + 1);
            continue;
        } else if b[i..].starts_with(b"/*") {
            i = find_from(b, i + 2, b"*/").map_or(b.len(), |n| n + 2);
            continue;
        } else if c == b'\'' || c == b'"' || (c == b'/' && opens_regex(q, out.last())) {
            i = quoted_end(b, i);
            Token::Quoted
        } else if c == b';' {
            i += 1;
            Token::Semicolon
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            Token::Word
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            Token::Number
        } else if (c == b'=' || c == b'!') && b.get(i + 1) == Some(&b'~') {
            i += 2;
            Token::RegexOperator
        } else {
            i += 1;
            Token::Punct(c)
        };
        out.push(Lexed {
            start,
            end: i,
            token,
        });
    }
    out
}

/// Whether a `/` after `previous` starts a regular expression rather than
/// dividing: after `=~`/`!~`, and where a measurement or field list starts
/// (`FROM /cpu.*/`, `SELECT /v/`, `, /m/`, `(/v/)`).
fn opens_regex(q: &str, previous: Option<&Lexed>) -> bool {
    let Some(p) = previous else {
        return false;
    };
    match p.token {
        Token::RegexOperator | Token::Punct(b',') | Token::Punct(b'(') => true,
        Token::Word => {
            let w = &q[p.start..p.end];
            w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("SELECT")
        }
        _ => false,
    }
}

/// The end of the string, identifier or regex opened at `start` (after its
/// closing mark; `\` escapes the next byte); the end of `b` when unclosed.
fn quoted_end(b: &[u8], start: usize) -> usize {
    let mark = b[start];
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            c if c == mark => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn find_from(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(q: &str) -> Vec<(String, Kind)> {
        split(q).into_iter().map(|s| (s.text, s.kind)).collect()
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes_regexes_and_comments() {
        let q = "DELETE FROM cpu WHERE host = 'a;b' ; SELECT * FROM \"x;y\"; \
                 DROP SERIES FROM /c;pu/ WHERE t =~ /;/ -- trailing; comment\n;\
                 /* a ; comment */ drop measurement mem;;";
        assert_eq!(
            kinds(q),
            vec![
                ("DELETE FROM cpu WHERE host = 'a;b'".into(), Kind::Delete),
                ("SELECT * FROM \"x;y\"".into(), Kind::Other),
                (
                    "DROP SERIES FROM /c;pu/ WHERE t =~ /;/".into(),
                    Kind::DropSeries
                ),
                ("drop measurement mem".into(), Kind::DropMeasurement),
            ]
        );
    }

    #[test]
    fn kinds_of_statements() {
        let k = |q: &str| split(q)[0].kind;
        assert_eq!(
            k("SELECT max(v) INTO db.autogen.r FROM src GROUP BY time(10s), *"),
            Kind::SelectInto
        );
        assert_eq!(k("select mean(v) into \"r\" from /.*/"), Kind::SelectInto);
        assert_eq!(k("SELECT \"into\" FROM cpu"), Kind::Other);
        assert_eq!(k("SELECT v / 2 FROM cpu WHERE a = 'INTO'"), Kind::Other);
        assert_eq!(k("DROP SHARD 3"), Kind::DropShard);
        assert_eq!(k("DROP DATABASE x"), Kind::DropDatabase);
        assert_eq!(k("drop retention policy r on x"), Kind::DropRetentionPolicy);
        assert_eq!(k("DROP USER x"), Kind::Catalog);
        assert_eq!(k("drop continuous query c on x"), Kind::Catalog);
        assert_eq!(k("CREATE DATABASE x"), Kind::Catalog);
        assert_eq!(k("alter retention policy r on x default"), Kind::Catalog);
        assert_eq!(k("GRANT ALL TO bob"), Kind::Catalog);
        assert_eq!(k("SET PASSWORD FOR bob = 'x'"), Kind::Catalog);
        assert_eq!(k("SHOW MEASUREMENTS"), Kind::Other);
        assert_eq!(k("SHOW DATABASES"), Kind::Other);
        let changes = |q: &str| split(q)[0].kind.changes_catalog();
        assert!(changes("DROP DATABASE x") && changes("revoke all from bob"));
        assert!(!changes("DROP SERIES FROM cpu") && !changes("SELECT * FROM cpu"));
        assert!(split("  ;  -- nothing\n").is_empty());
    }

    #[test]
    fn drops_name_their_database_and_policy() {
        let dropped = |q: &str| split(q)[0].dropped();
        assert_eq!(dropped("DROP DATABASE res_z"), Some(("res_z".into(), None)));
        assert_eq!(
            dropped(r#"DROP DATABASE "we\"ird db""#),
            Some((r#"we"ird db"#.into(), None))
        );
        assert_eq!(
            dropped(r#"DROP RETENTION POLICY "1 week" ON metrics"#),
            Some(("metrics".into(), Some("1 week".into())))
        );
        assert_eq!(dropped("DROP DATABASE"), None);
        assert_eq!(dropped("DELETE FROM cpu"), None);
    }

    #[test]
    fn now_is_pinned_outside_strings_only() {
        let pinned = pin_now(
            "DELETE FROM cpu WHERE time < now() - 1h AND x = 'now()' AND NOW ( ) > 0",
            1_500_000_000_123_456_789,
        );
        assert_eq!(
            pinned,
            "DELETE FROM cpu WHERE time < '2017-07-14T02:40:00.123456789Z' - 1h \
             AND x = 'now()' AND '2017-07-14T02:40:00.123456789Z' > 0"
        );
        assert_eq!(pin_now("DROP MEASUREMENT cpu", 0), "DROP MEASUREMENT cpu");
    }
}
