//! The credentials a client presents to InfluxDB's HTTP API, found where
//! influxd looks for them, plus the two places influxd 1.6 does not read but
//! later versions and common clients use:
//!
//! 1. `u` and `p` in the query string (both non-empty), as influxd checks first;
//! 2. the `Authorization` header: `Bearer <jwt>` (the client's own token),
//!    `Basic <base64(user:password)>`, and `Token user:password` (InfluxDB
//!    1.8+ and the 2.x compatibility API);
//! 3. `u` and `p` in a `POST /query` form body.
//!
//! Parsing never fails a request: what cannot be read is left for influxd
//! to answer. Passwords are kept in a [`Secret`] that never prints.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderValue;
use percent_encoding::percent_decode;

/// A password: bytes, as the client sent them. `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a user name and password were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `u` and `p` query parameters.
    Query,
    /// `Authorization: Basic`.
    Basic,
    /// `Authorization: Token user:password`.
    Token,
    /// `u` and `p` in a form body.
    Form,
}

/// What a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    /// Nothing the front door reads (no credentials, or a header influxd
    /// will refuse with its own message).
    Nothing,
    /// `Authorization: Bearer …`: the client's own token, for influxd to check.
    Bearer,
    /// A user name and a password.
    Password {
        username: String,
        password: Secret,
        source: Source,
    },
}

/// One `name=value` pair of a query string or form body, split but not
/// decoded.
fn pairs(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space.
fn decode(s: &str) -> Vec<u8> {
    let plus_free = s.replace('+', " ");
    percent_decode(plus_free.as_bytes()).collect()
}

fn is_credential_name(raw: &str) -> bool {
    matches!(decode(raw).as_slice(), b"u" | b"p")
}

/// `u` and `p` from a query string or form body, the first of each (as Go's
/// `url.Values.Get`), when both are non-empty.
pub fn from_params(s: &str) -> Option<(String, Secret)> {
    let mut u: Option<Vec<u8>> = None;
    let mut p: Option<Vec<u8>> = None;
    for (name, value) in pairs(s) {
        match decode(name).as_slice() {
            b"u" if u.is_none() => u = Some(decode(value)),
            b"p" if p.is_none() => p = Some(decode(value)),
            _ => {}
        }
    }
    match (u, p) {
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => {
            Some((String::from_utf8_lossy(&u).into_owned(), Secret(p)))
        }
        _ => None,
    }
}

/// The query string or form body without its `u` and `p` parameters; every
/// other parameter is kept byte for byte, in order.
pub fn strip_params(s: &str) -> String {
    s.split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !is_credential_name(p.split_once('=').map_or(*p, |(n, _)| n)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What an `Authorization` header carries.
pub fn from_authorization(value: &HeaderValue) -> Presented {
    let Ok(s) = std::str::from_utf8(value.as_bytes()) else {
        return Presented::Nothing;
    };
    // influxd: exactly two space-separated words, the first "Bearer".
    if let Some(("Bearer", token)) = s.split_once(' ') {
        if !token.contains(' ') {
            return Presented::Bearer;
        }
    }
    if let Some(encoded) = strip_prefix_ignore_case(s, "Basic ") {
        let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
            return Presented::Nothing;
        };
        return match split_user_password(&decoded) {
            Some((username, password)) => Presented::Password {
                username,
                password,
                source: Source::Basic,
            },
            None => Presented::Nothing,
        };
    }
    if let Some(pair) = strip_prefix_ignore_case(s, "Token ") {
        return match split_user_password(pair.trim().as_bytes()) {
            Some((username, password)) => Presented::Password {
                username,
                password,
                source: Source::Token,
            },
            None => Presented::Nothing,
        };
    }
    Presented::Nothing
}

/// The `username` claim of a `Bearer` JWT, read without checking its
/// signature: only for a request influxd then accepted (it checks it).
pub fn bearer_username(value: &HeaderValue) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = value.to_str().ok()?.strip_prefix("Bearer ")?;
    let claims = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    claims.get("username")?.as_str().map(str::to_owned)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `user:password`, split at the first colon.
fn split_user_password(b: &[u8]) -> Option<(String, Secret)> {
    let colon = b.iter().position(|&c| c == b':')?;
    let (user, password) = (&b[..colon], &b[colon + 1..]);
    Some((
        String::from_utf8_lossy(user).into_owned(),
        Secret(password.to_vec()),
    ))
}

/// `Authorization: Basic` for `username` and `password`.
pub fn basic_header(username: &str, password: &Secret) -> HeaderValue {
    let mut raw = Vec::with_capacity(username.len() + 1 + password.0.len());
    raw.extend_from_slice(username.as_bytes());
    raw.push(b':');
    raw.extend_from_slice(&password.0);
    let mut v = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(raw)))
        .expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(username: &str, password: &str, source: Source) -> Presented {
        Presented::Password {
            username: username.into(),
            password: Secret::new(password),
            source,
        }
    }

    #[test]
    fn query_parameters_need_both_and_take_the_first() {
        assert_eq!(
            from_params("db=x&u=bob&p=s%3Dcr+t&p=other"),
            Some(("bob".into(), Secret::new("s=cr t")))
        );
        assert_eq!(from_params("u=bob"), None);
        assert_eq!(from_params("u=bob&p="), None);
        assert_eq!(from_params("u=&p=x"), None);
        assert_eq!(from_params(""), None);
        assert_eq!(
            from_params("%75=b%C3%B6b&%70=x"),
            Some(("böb".into(), Secret::new("x")))
        );
    }

    #[test]
    fn stripping_keeps_everything_else_verbatim() {
        assert_eq!(
            strip_params("q=SELECT+%2A+FROM+%22m%22&u=bob&db=x&p=pw&pretty"),
            "q=SELECT+%2A+FROM+%22m%22&db=x&pretty"
        );
        assert_eq!(strip_params("u=bob&p=pw"), "");
        assert_eq!(strip_params("%75=bob&up=1&%70"), "up=1");
        assert_eq!(strip_params("db=x&p=1"), "db=x");
    }

    #[test]
    fn authorization_headers() {
        let h = |s: &str| from_authorization(&HeaderValue::from_str(s).unwrap());
        assert_eq!(h("Bearer a.b.c"), Presented::Bearer);
        assert_eq!(
            h(&format!("Basic {}", STANDARD.encode("bob:pa:ss"))),
            password("bob", "pa:ss", Source::Basic)
        );
        assert_eq!(
            h(&format!("basic {}", STANDARD.encode(":x"))),
            password("", "x", Source::Basic)
        );
        assert_eq!(h("Token bob:pw"), password("bob", "pw", Source::Token));
        // Left for influxd to refuse in its own words.
        assert_eq!(h("Basic !!!"), Presented::Nothing);
        assert_eq!(
            h(&format!("Basic {}", STANDARD.encode("nocolon"))),
            Presented::Nothing
        );
        assert_eq!(h("Token abcdef"), Presented::Nothing);
        assert_eq!(h("Negotiate xyz"), Presented::Nothing);
        assert_eq!(h("Bearer a b"), Presented::Nothing);
    }

    #[test]
    fn secrets_do_not_print() {
        let p = password("bob", "hunter2", Source::Query);
        assert!(!format!("{p:?}").contains("hunter2"));
        let b = basic_header("bob", &Secret::new("hunter2"));
        assert!(b.is_sensitive());
        assert_eq!(
            from_authorization(&b),
            password("bob", "hunter2", Source::Basic)
        );
    }
}
